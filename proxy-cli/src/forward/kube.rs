//! `proxy forward TYPE/NAME SPEC...`: kubectl port-forward, through the Kubernetes API,
//! with [`proxy_kube::forward::PodForwarder`] doing the work.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures_util::future::BoxFuture;
use proxy_core::{Balance, Host};
use proxy_kube::forward::{PodForwarder, Protocol as WireProtocol, Serving};
use proxy_kube::{Client, Target};
use proxy_portforward::client::{DatagramStream, udp};

use super::bind::{Binder, Listening};
use super::{Announce, ForwardArgs, Mapping, Running, numbered};
use crate::args::UsageError;
use crate::registry::{Forwards, Protocol};
use crate::shutdown::{self, Signals};

/// The settings keys a `TYPE/NAME` forward uses: how connections are spread over pods.
const KUBE_KEYS: [&str; 5] = [
    "balance",
    "affinity_timeout",
    "eject_after",
    "eject_for",
    "udp_idle_timeout",
];

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
    let udp_spec = plan.specs.iter().find(|s| s.protocol() == Protocol::Udp);
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
    let client = client.build().await.map_err(kube_error)?;
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
        .udp(udp_spec.is_some())
        .build()
        .await
        .map_err(kube_error)?;
    if let Some(spec) = udp_spec {
        // Said now, not at the first datagram: only our own server carries UDP.
        forwarder
            .check_udp()
            .await
            .with_context(|| format!("SPEC '{}'", spec.token()))?;
    }

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
        let port = forwarder.remote_port(&remote).map_err(kube_error)?;
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

    let mut start = |m: Mapping, listen: SocketAddr| Ok(Socket::bind(m.protocol, listen));
    let mut binder = Binder::new(plan.addresses.clone(), &mut start);
    let bound = binder.bind_all(&plan.specs, &mappings);
    drop(binder.into_passed_over());
    let bound = bound?;

    let announce = Announce::new(&plan, &target.to_string(), &plan.specs, &bound);
    let mut running = PodForwards {
        serving: Vec::with_capacity(bound.len()),
        udp: tokio::task::JoinSet::new(),
    };
    let udp_idle = plan
        .settings
        .udp_idle_timeout
        .unwrap_or(Duration::from_secs(30));
    for b in bound {
        let port = b.addr.port();
        let remote = remotes[b.slot].clone();
        match b.handle {
            Socket::Tcp(listener) => {
                let listener = tokio::net::TcpListener::from_std(listener)
                    .with_context(|| format!("cannot listen on {}", b.addr))?;
                running
                    .serving
                    .push(forwarder.serve_with(listener, remote, move |_| {
                        // kubectl's line, on stdout.
                        handling(port);
                    }));
            }
            Socket::Udp(socket) => {
                let socket = tokio::net::UdpSocket::from_std(socket)
                    .with_context(|| format!("cannot listen on {}", b.addr))?;
                let forwarder = forwarder.clone();
                let open = move |peer: SocketAddr| {
                    let (forwarder, remote) = (forwarder.clone(), remote.clone());
                    Box::pin(async move {
                        handling(port);
                        let connected = forwarder.connect_udp(&remote, Some(peer.ip())).await;
                        connected.map(|c| c.stream).inspect_err(|e| {
                            tracing::error!(
                                client = %peer,
                                "an error occurred forwarding {port} -> {remote}/udp: {e}"
                            );
                        })
                    }) as BoxFuture<'static, std::io::Result<DatagramStream>>
                };
                running
                    .udp
                    .spawn(udp::serve_udp(Arc::new(socket), open, udp_idle));
            }
        }
    }
    let result = announce.run(running, forwards, &mut signals).await;
    announce.remove_ports_file();
    result
}

/// kubectl's line for each connection, on stdout; a stdout gone (a closed pipe) is not a
/// reason to stop forwarding.
fn handling(port: u16) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stdout(), "Handling connection for {port}");
}

/// A proxy-kube error as kubectl prints it: its message says everything (its sources are
/// in it already, so they are not printed again).
fn kube_error(e: proxy_kube::Error) -> anyhow::Error {
    anyhow::anyhow!("{e}")
}

/// A bound socket of the forward.
enum Socket {
    Tcp(std::net::TcpListener),
    Udp(std::net::UdpSocket),
}

impl Socket {
    fn bind(protocol: Protocol, listen: SocketAddr) -> std::io::Result<Socket> {
        Ok(match protocol {
            Protocol::Tcp => {
                let listener = std::net::TcpListener::bind(listen)?;
                listener.set_nonblocking(true)?;
                Socket::Tcp(listener)
            }
            Protocol::Udp => {
                let socket = std::net::UdpSocket::bind(listen)?;
                socket.set_nonblocking(true)?;
                Socket::Udp(socket)
            }
        })
    }
}

impl Listening for Socket {
    type Error = std::io::Error;

    fn local_addr(&self) -> SocketAddr {
        let addr = match self {
            Socket::Tcp(s) => s.local_addr(),
            Socket::Udp(s) => s.local_addr(),
        };
        addr.unwrap_or_else(|_| ([0, 0, 0, 0], 0).into())
    }

    fn in_use(e: &Self::Error) -> bool {
        <std::net::TcpListener as Listening>::in_use(e)
    }

    fn family_unavailable(e: &Self::Error) -> bool {
        <std::net::TcpListener as Listening>::family_unavailable(e)
    }
}

/// The listeners of a pod forward: TCP, and the UDP sockets' tasks.
struct PodForwards {
    serving: Vec<Serving>,
    udp: tokio::task::JoinSet<std::io::Result<()>>,
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
        // UDP sessions have no end to wait for.
        let mut udp = self.udp;
        udp.shutdown().await;
        result
    }
}
