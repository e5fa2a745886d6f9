//! `proxy forward TYPE/NAME SPEC...`: kubectl port-forward, through the Kubernetes API,
//! with [`proxy_kube::forward::PodForwarder`] doing the work.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use proxy_core::{Balance, Host};
use proxy_kube::forward::{PodForwarder, Protocol as WireProtocol, Serving};
use proxy_kube::{Client, Target};

use super::bind::Binder;
use super::{Announce, ForwardArgs, Mapping, Running, numbered};
use crate::args::UsageError;
use crate::registry::{Forwards, Protocol};
use crate::shutdown::{self, Signals};

/// The settings keys a `TYPE/NAME` forward uses: how connections are spread over pods.
const KUBE_KEYS: [&str; 4] = ["balance", "affinity_timeout", "eject_after", "eject_for"];

/// Runs `proxy forward TYPE/NAME SPEC...` until a signal stops it or CMD exits.
pub(super) async fn run(
    args: &ForwardArgs,
    target: &Target,
    forwards: &Forwards,
) -> anyhow::Result<()> {
    if let Some((key, _)) = (args.keys.given.iter()).find(|(k, _)| !KUBE_KEYS.contains(k)) {
        return Err(UsageError(format!(
            "--{} applies to host targets; a TYPE/NAME target takes only {} (its pods are \
             reached through the API server)",
            key.replace('_', "-"),
            KUBE_KEYS
                .map(|k| format!("--{}", k.replace('_', "-")))
                .join(", ")
        ))
        .into());
    }
    let plan = args.plan_for(Host::Name("localhost".into()))?;
    if let Some(udp) = plan.specs.iter().find(|s| s.protocol() == Protocol::Udp) {
        return Err(UsageError(format!(
            "SPEC '{}': UDP protocol is not supported by Kubernetes port-forward",
            udp.token()
        ))
        .into());
    }
    let mut signals = Signals::new().context("cannot install the signal handlers")?;
    if let Some(file) = &plan.ports_file {
        super::remove_file(file).with_context(|| format!("--ports-file {}", file.display()))?;
    }

    let flags = &args.kube;
    let mut client = Client::builder();
    if let Some(path) = &flags.kubeconfig {
        client = client.kubeconfig(path);
    }
    if let Some(context) = &flags.context {
        client = client.context(context);
    }
    if let Some(namespace) = &flags.namespace {
        client = client.namespace(namespace);
    }
    let client = client.build().await?;
    let mut balance = plan.settings.balance;
    if let (Balance::ClientIp { timeout }, Some(t)) = (&mut balance, plan.settings.affinity_timeout)
    {
        *timeout = t;
    }
    let forwarder = PodForwarder::builder(client, target.clone())
        .protocol(flags.protocol.unwrap_or(WireProtocol::Auto))
        .balance(balance)
        .ejection(plan.settings.ejection())
        .wait(
            flags
                .pod_running_timeout
                .unwrap_or(proxy_kube::forward::DEFAULT_WAIT),
        )
        .build()
        .await?;

    // Each mapping with its remote port as kubectl prints it (translated through the
    // service and the first ready pod), and as each connection asks for it (translated
    // again per pod).
    let mut mappings: Vec<(usize, Mapping)> = Vec::new();
    let mut remotes: Vec<String> = Vec::new();
    for (index, mapping) in numbered(&plan.specs) {
        let spec = &plan.specs[index];
        let remote = match spec.remote_name() {
            Some(name) => name.to_owned(),
            None => mapping.remote.to_string(),
        };
        let port = forwarder.remote_port(&remote)?;
        let local = if spec.local_from_remote() {
            port
        } else {
            mapping.local
        };
        mappings.push((
            index,
            Mapping {
                protocol: mapping.protocol,
                local,
                remote: port,
            },
        ));
        remotes.push(remote);
    }

    let mut start = |_: Mapping, listen: SocketAddr| Ok(bind_tcp(listen));
    let mut binder = Binder::new(plan.addresses.clone(), &mut start);
    let bound = binder.bind_all(&plan.specs, &mappings);
    drop(binder.into_passed_over());
    let bound = bound?;

    let announce = Announce::new(&plan, &target.to_string(), &plan.specs, &bound);
    let mut serving = Vec::with_capacity(bound.len());
    for b in bound {
        let listener = tokio::net::TcpListener::from_std(b.handle)
            .with_context(|| format!("cannot listen on {}", b.addr))?;
        let port = b.addr.port();
        serving.push(
            forwarder.serve_with(listener, remotes[b.slot].clone(), move |_| {
                // kubectl's line, on stdout.
                println!("Handling connection for {port}");
            }),
        );
    }
    let result = announce
        .run(PodForwards { serving }, forwards, &mut signals)
        .await;
    announce.remove_ports_file();
    result
}

/// A listening socket for the forward.
fn bind_tcp(listen: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind(listen)?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// The listeners of a pod forward.
struct PodForwards {
    serving: Vec<Serving>,
}

impl Running for PodForwards {
    async fn drain(self, drain: Duration, signals: &mut Signals) -> anyhow::Result<()> {
        let open: u64 = self.serving.iter().map(Serving::open_connections).sum();
        tracing::info!(
            open,
            "no longer accepting; draining open connections for up to {drain:?}"
        );
        // Each drains in a task of its own, at the same time.
        let mut drains = tokio::task::JoinSet::new();
        for s in self.serving.iter().cloned() {
            drains.spawn(s.shutdown(drain));
        }
        let drained = async move {
            let mut all = true;
            while let Some(done) = drains.join_next().await {
                all &= done.unwrap_or(false);
            }
            all
        };
        let result = shutdown::finish_drain(drained, signals, "connections", "connections").await;
        // After a second signal, what is still open closes now.
        for s in &self.serving {
            s.close_now();
        }
        result
    }
}
