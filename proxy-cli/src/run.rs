//! Running a parsed command line: logging, the forwarder, signals, exit codes.

use std::io::{self, IsTerminal};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use proxy_core::resolve::{HickoryResolver, Resolve, SystemResolver};
use proxy_core::{ErrorKind, ForwarderHandle, Host, TcpForwarder};
use tracing_subscriber::EnvFilter;

use crate::args::{Cli, Command, ResolverArg, TcpArgs, TcpPlan, UsageError};

/// Sends `tracing` output to stderr at `cli`'s `--log-level`, or as `RUST_LOG` says when
/// it is set and not empty. No ANSI colours unless stderr is a terminal.
pub fn init_logging(cli: &Cli) {
    let from_env = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .map(|v| EnvFilter::try_new(&v).map_err(|e| (v, e)));
    let filter = match from_env {
        Some(Ok(filter)) => filter,
        Some(Err((value, e))) => {
            eprintln!(
                "warning: ignoring RUST_LOG='{value}' ({e}); using --log-level {}",
                cli.log_filter()
            );
            EnvFilter::new(cli.log_filter())
        }
        None => EnvFilter::new(cli.log_filter()),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .with_ansi(io::stderr().is_terminal())
        .init();
}

/// Runs the command until it is done or a signal stops it.
///
/// # Errors
///
/// Whatever stopped the command; [`exit_code`] says which exit code it means.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Tcp(args) => tcp(&args).await,
    }
}

/// The exit code for an error from [`run`]: 2 for a [`UsageError`] (bad arguments, or
/// settings that `build()` rejects), 1 otherwise.
pub fn exit_code(error: &anyhow::Error) -> ExitCode {
    if error.downcast_ref::<UsageError>().is_some() {
        ExitCode::from(2)
    } else {
        ExitCode::FAILURE
    }
}

async fn tcp(args: &TcpArgs) -> anyhow::Result<()> {
    let plan = args.plan()?;
    // Installed before the listeners log "Forwarding from", so a signal sent after that
    // line always drains rather than killing the process.
    let signals = Signals::new().context("cannot install the signal handlers")?;
    let resolver = resolver(&plan)?;
    let forwarder = build(&plan, plan.listen.addrs(), resolver.clone())?;
    let handle = match forwarder.start() {
        Ok(handle) => handle,
        Err(e) => match plan.listen.ipv4_fallback() {
            Some(v4) if ipv6_unavailable(&e) => {
                tracing::warn!(
                    error = %e,
                    cause = %source_of(&e),
                    "IPv6 is not available; listening on IPv4 only"
                );
                build(&plan, v4, resolver)?.start()?
            }
            _ => return Err(e.into()),
        },
    };
    serve_until_signal(handle, signals, plan.drain).await
}

fn resolver(plan: &TcpPlan) -> anyhow::Result<Arc<dyn Resolve>> {
    // IP literal targets never ask the resolver: do not fail on a missing resolv.conf.
    if matches!(plan.target.host(), Host::Name(_)) && plan.resolver == ResolverArg::Hickory {
        let hickory = HickoryResolver::from_system_conf()
            .context("--resolver hickory: cannot read the system DNS configuration")?;
        Ok(Arc::new(hickory))
    } else {
        Ok(Arc::new(SystemResolver::new()))
    }
}

fn build(
    plan: &TcpPlan,
    listen: Vec<std::net::SocketAddr>,
    resolver: Arc<dyn Resolve>,
) -> Result<TcpForwarder, UsageError> {
    plan.builder(listen, resolver)
        .build()
        .map_err(|e| UsageError(format!("invalid settings: {e}")))
}

/// Whether binding failed because this host has no IPv6 (the kernel has it disabled or
/// has no IPv6 address to bind).
fn ipv6_unavailable(e: &proxy_core::Error) -> bool {
    let Some(io) = std::error::Error::source(e).and_then(|s| s.downcast_ref::<io::Error>()) else {
        return false;
    };
    e.kind() == ErrorKind::Bind
        && (io.kind() == io::ErrorKind::AddrNotAvailable
            // EAFNOSUPPORT, which `std` does not map to an `io::ErrorKind`.
            || io.raw_os_error() == Some(libc::EAFNOSUPPORT))
}

fn source_of(e: &dyn std::error::Error) -> String {
    e.source().map(ToString::to_string).unwrap_or_default()
}

/// Waits for SIGINT or SIGTERM, then drains: stops accepting, lets open connections finish
/// for up to `drain`, and returns. A second signal during the drain closes them at once.
async fn serve_until_signal(
    handle: ForwarderHandle,
    mut signals: Signals,
    drain: std::time::Duration,
) -> anyhow::Result<()> {
    let name = signals.recv().await;
    tracing::info!(
        signal = name,
        open = handle.stats().connections_open,
        "shutting down: no longer accepting; draining open connections for up to {drain:?}"
    );
    tokio::select! {
        drained = handle.shutdown(drain) => {
            if drained {
                tracing::info!("all connections finished; exiting");
            } else {
                tracing::info!("drain time over; remaining connections were closed; exiting");
            }
            Ok(())
        }
        name = signals.recv() => {
            // Dropping the shutdown future drops the handle, which closes everything.
            anyhow::bail!("received {name} while draining; closed the open connections")
        }
    }
}

/// SIGINT and SIGTERM.
struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Signals {
                term: signal(SignalKind::terminate())?,
                int: signal(SignalKind::interrupt())?,
            })
        }
        #[cfg(not(unix))]
        {
            Ok(Signals {})
        }
    }

    /// The name of the next signal received.
    async fn recv(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.term.recv() => "SIGTERM",
                _ = self.int.recv() => "SIGINT",
            }
        }
        #[cfg(not(unix))]
        {
            // Without a handler, Ctrl-C ends the process; waiting forever is the fallback.
            match tokio::signal::ctrl_c().await {
                Ok(()) => "Ctrl-C",
                Err(_) => std::future::pending().await,
            }
        }
    }
}
