//! `proxy forward`: kubectl port-forward's command line.
//!
//! `proxy forward [--address ADDR[,ADDR...]] TARGET SPEC... [-- CMD ARGS...]` forwards
//! local ports to TARGET's ports: a host's directly, or a `TYPE/NAME` object's pods through
//! the Kubernetes API (`kube`, with [`proxy_kube::forward::PodForwarder`]). This module has the grammar of SPEC ([`parse_spec`]),
//! TARGET ([`parse_target`]) and `--address` ([`parse_address`]), the checks across them
//! ([`ForwardArgs::plan`]), and the running ([`run`]): binding every port on every address
//! (a kernel-chosen port is the same on all of them), the kubectl lines on stdout, the
//! `--ports-file`, the command run while forwarding, signals and draining.
//!
//! # Examples
//!
//! ```
//! use proxy_cli::forward::{Protocol, parse_spec};
//!
//! let spec = parse_spec("8000-8002:9000-9002/udp")?;
//! assert_eq!(spec.protocol(), Protocol::Udp);
//! let pairs: Vec<(u16, u16)> = spec.mappings().map(|m| (m.local, m.remote)).collect();
//! assert_eq!(pairs, [(8000, 9000), (8001, 9001), (8002, 9002)]);
//!
//! // `:5000` and `0:5000`: a local port chosen by the kernel (0) to remote port 5000.
//! assert_eq!(parse_spec(":5000")?.mappings().next().unwrap().local, 0);
//! assert!(parse_spec("8080:0").unwrap_err().contains("remote port 0"));
//! # Ok::<(), String>(())
//! ```

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use proxy_core::resolve::Resolve;
use proxy_core::{ForwarderHandle, Target};

pub use crate::args::forward::{
    AddressArg, BindAddr, EXAMPLES, ForwardArgs, ForwardPlan, ForwardTarget, IDLE_FLAG_HELP,
    KubeFlags, LONG_ABOUT, Mapping, PortSpec, parse_address, parse_forward_target, parse_spec,
    parse_target,
};
/// The transport of a SPEC: TCP, the default, or UDP (`/udp`).
pub use crate::registry::Protocol;
use crate::registry::{Forwards, Registered};
use crate::shutdown::{self, Signals};
use bind::Binder;
pub use command::{CommandExit, command_exit_code};
use command::{exit_code_of, pass_on};
use lookups::SharedLookups;
pub use ports::forwarding_line;
use ports::{ports_env, ports_json, print_lines, remove_file, write_atomically};

/// One bound socket, and what serves it (a core forwarder, or a pod forward's listener).
struct Bound<H = ForwarderHandle> {
    /// The index of its SPEC.
    spec: usize,
    /// The index of its mapping among all mappings of all SPECs.
    slot: usize,
    mapping: Mapping,
    addr: SocketAddr,
    handle: H,
}

/// Runs `proxy forward` until a signal stops it or CMD exits.
///
/// # Errors
///
/// A [`UsageError`](crate::args::UsageError) for bad arguments; a bind or I/O error; a [`CommandExit`] when CMD
/// exited with another status than 0 ([`command_exit_code`] maps it to the exit code).
pub async fn run(args: &ForwardArgs, forwards: &Forwards) -> anyhow::Result<()> {
    if let ForwardTarget::Kube(target) = &args.target {
        return kube::run(args, target, forwards).await;
    }
    let plan = args.plan()?;
    // Installed before anything is bound, so a signal after the first line drains.
    let mut signals = Signals::new().context("cannot install the signal handlers")?;
    // One resolver, and one lookup at a time, for every mapping (the plan's settings are
    // checked already).
    let resolver = plan
        .settings
        .make_resolver()
        .context("--resolver hickory: cannot read the system DNS configuration")?;
    let resolver: Arc<dyn Resolve> = Arc::new(SharedLookups::new(resolver));
    if let Some(file) = &plan.ports_file {
        // A file left from an earlier run must not be read as this run's.
        remove_file(file).with_context(|| format!("--ports-file {}", file.display()))?;
    }

    let mappings = numbered(&plan.specs);
    let mut start =
        |m: Mapping, listen: SocketAddr| bind::start_forwarder(&plan, &resolver, m, listen);
    let mut binder = Binder::new(plan.addresses.clone(), &mut start);
    let bound = binder.bind_all(&plan.specs, &mappings);
    for handle in binder.into_passed_over() {
        handle.shutdown(Duration::ZERO).await;
    }
    let bound = bound?;

    let announce = Announce::new(&plan, &plan.host.to_string(), &plan.specs, &bound);
    // Named by protocol and bound address (`tcp:127.0.0.1:8888`): the sockets of one
    // mapping share the port.
    let handles: Vec<Registered> = bound
        .into_iter()
        .map(|b| {
            let name = format!("{}:{}", b.mapping.protocol, b.addr);
            let target = Target::new(plan.host.clone(), b.mapping.remote);
            forwards.register(name, b.mapping.protocol, target, b.handle)
        })
        .collect();
    let result = announce
        .run(Forwarders { handles }, forwards, &mut signals)
        .await;
    announce.remove_ports_file();
    result
}

/// Every mapping of `specs` with the index of its SPEC, in order.
fn numbered(specs: &[PortSpec]) -> Vec<(usize, Mapping)> {
    (specs.iter().enumerate())
        .flat_map(|(i, spec)| spec.mappings().map(move |m| (i, m)))
        .collect()
}

/// What forwards, as the end of `proxy forward` sees it: something to drain.
trait Running {
    /// Stops accepting and lets open connections finish for up to `drain`; another
    /// signal meanwhile closes them at once.
    async fn drain(self, drain: Duration, signals: &mut Signals) -> anyhow::Result<()>;
}

/// The core's forwarders, registered for `--admin`.
struct Forwarders {
    handles: Vec<Registered>,
}

impl Running for Forwarders {
    async fn drain(self, drain: Duration, signals: &mut Signals) -> anyhow::Result<()> {
        drain_all(self.handles, drain, signals).await
    }
}

/// What `proxy forward` tells once every port is bound, and what it does then.
struct Announce<'a> {
    ports_file: Option<&'a std::path::Path>,
    json: Option<String>,
    lines: Vec<String>,
    first_port: Option<String>,
    all_ports: String,
    command: &'a [std::ffi::OsString],
    drain: Duration,
}

impl<'a> Announce<'a> {
    fn new<H>(plan: &'a ForwardPlan, target: &str, specs: &[PortSpec], bound: &[Bound<H>]) -> Self {
        Announce {
            ports_file: plan.ports_file.as_deref(),
            json: plan
                .ports_file
                .as_ref()
                .map(|_| ports_json(target, specs, bound)),
            lines: (bound.iter())
                .map(|b| forwarding_line(b.addr, b.mapping))
                .collect(),
            first_port: bound.first().map(|b| b.addr.port().to_string()),
            all_ports: ports_env(bound),
            command: &plan.command,
            drain: plan.drain,
        }
    }

    /// Removes the ports file, at the end.
    fn remove_ports_file(&self) {
        if let Some(file) = self.ports_file
            && let Err(e) = remove_file(file)
        {
            tracing::warn!(file = %file.display(), error = %e, "cannot remove the ports file");
        }
    }

    /// Writes the ports file, prints the lines, then forwards until a signal, or until
    /// CMD exits when there is one; then drains `running`.
    async fn run(
        &self,
        running: impl Running,
        forwards: &Forwards,
        signals: &mut Signals,
    ) -> anyhow::Result<()> {
        let drain = self.drain;
        // Ready (`/readyz`) before the ports file and the lines tell anyone to connect.
        forwards.set_ready();
        if let (Some(file), Some(json)) = (self.ports_file, &self.json) {
            write_atomically(file, json)
                .with_context(|| format!("cannot write --ports-file {}", file.display()))?;
        }
        print_lines(&self.lines).context("cannot write to stdout")?;

        let Some((program, args)) = self.command.split_first() else {
            let name = signals.recv().await;
            tracing::info!(signal = name, "shutting down");
            forwards.set_draining();
            return running.drain(drain, signals).await;
        };
        // A signal that came while binding stops proxy before CMD starts.
        tokio::select! {
            biased;
            name = signals.recv() => {
                tracing::info!(signal = name, "shutting down before starting the command");
                forwards.set_draining();
                return running.drain(drain, signals).await;
            }
            () = std::future::ready(()) => {}
        }
        let mut child = tokio::process::Command::new(program);
        child
            .args(args)
            .env(
                "PROXY_FORWARD_PORT",
                self.first_port.clone().unwrap_or_default(),
            )
            .env("PROXY_FORWARD_PORTS", &self.all_ports)
            .kill_on_drop(true);
        let shown = program.to_string_lossy().into_owned();
        let mut child = match child.spawn() {
            Ok(child) => child,
            Err(e) => {
                // What a shell exits with: 127 not found, 126 found but not executable.
                let code = if e.kind() == io::ErrorKind::NotFound {
                    127
                } else {
                    126
                };
                tracing::error!(command = %shown, "cannot run `{shown}`: {e}");
                forwards.set_draining();
                running.drain(Duration::ZERO, signals).await?;
                return Err(CommandExit { code }.into());
            }
        };
        let pid = child.id();
        tracing::info!(command = %shown, pid, "started the command; forwarding until it exits");
        let status = loop {
            tokio::select! {
                status = child.wait() => break status.context("cannot wait for the command")?,
                name = signals.recv() => pass_on(name, pid, &shown),
            }
        };
        let code = exit_code_of(status);
        tracing::info!(command = %shown, code, "the command exited ({status})");
        forwards.set_draining();
        running.drain(drain, signals).await?;
        if code == 0 {
            Ok(())
        } else {
            Err(CommandExit { code }.into())
        }
    }
}

/// Stops accepting on every forwarder and lets open connections and sessions finish for
/// up to `drain`; another signal meanwhile closes them at once.
async fn drain_all(
    handles: Vec<Registered>,
    drain: Duration,
    signals: &mut Signals,
) -> anyhow::Result<()> {
    let (open, sessions) = shutdown::open_counts(&handles);
    tracing::info!(
        open,
        sessions,
        "no longer accepting; draining open connections and UDP sessions for up to {drain:?}"
    );
    shutdown::finish_drain(
        shutdown::shut_down_all(handles, drain),
        signals,
        "connections and sessions",
        "connections",
    )
    .await
}

mod bind;
mod command;
mod kube;
mod lookups;
mod ports;
#[cfg(test)]
mod tests;
