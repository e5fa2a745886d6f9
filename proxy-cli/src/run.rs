//! Running a parsed command line: logging, the forwarder, signals, exit codes.

use std::io::{self, IsTerminal};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use proxy_core::spec::{Inherited, StartError};
use proxy_core::{ForwardSpec, ForwarderHandle, Transport};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::writer::BoxMakeWriter;

use crate::admin::Admin;
use crate::args::{Cli, Command, LogFormat, UsageError};
use crate::config::{self, ConfigFile};
use crate::logging::{self, LogFlush};
use crate::registry::{Forwards, Protocol, Registered, listen_name};
use crate::shutdown::{Signals, finish_drain, open_counts, shut_down_all};
use crate::supervise::Supervisor;
use crate::systemd::{self, Wants};

/// Raises the soft limit on open files to the hard limit, as nginx's
/// `worker_rlimit_nofile` and Go's runtime do: every relayed TCP connection holds two
/// descriptors, and a default soft limit of 1,024 would cap a forward at about 500
/// connections. `proxy forward` leaves the limit alone, since the command it runs would
/// inherit it.
pub fn raise_open_files_limit(cli: &Cli) {
    #[cfg(unix)]
    {
        use rustix::process::{Resource, getrlimit, setrlimit};
        if let Command::Forward(_) = cli.command {
            return;
        }
        let limit = getrlimit(Resource::Nofile);
        if limit.current.is_none() || limit.current == limit.maximum {
            return;
        }
        let raised = rustix::process::Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => {
                tracing::debug!(from = ?limit.current, to = ?limit.maximum, "raised the open files limit")
            }
            Err(e) => tracing::debug!(error = %e, "could not raise the open files limit"),
        }
    }
    #[cfg(not(unix))]
    let _ = cli;
}

/// Sends `tracing` output to stderr at `cli`'s `--log-level`, or as `RUST_LOG` says when
/// it is set and not empty, in the `--log-format`: text (no ANSI colours unless stderr is
/// a terminal) or one JSON object per line.
///
/// Lines go through a bounded queue to a thread that writes them ([`crate::logging`]), so
/// logging never blocks forwarding; keep the returned [`LogFlush`] until the last line is
/// logged (it writes out the queue when dropped).
pub fn init_logging(cli: &Cli) -> Option<LogFlush> {
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
    let (writer, flush) = match logging::stderr_writer() {
        Ok((queued, flush)) => (BoxMakeWriter::new(queued), Some(flush)),
        Err(e) => {
            eprintln!("warning: cannot start the log writer thread ({e}); logging directly");
            (BoxMakeWriter::new(io::stderr), None)
        }
    };
    let logger = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match cli.log_format {
        LogFormat::Text => logger.with_ansi(io::stderr().is_terminal()).init(),
        LogFormat::Json => logger.with_ansi(false).json().init(),
    }
    flush
}

/// Runs the command until it is done or a signal stops it; `inherited` holds the sockets
/// systemd passed, taken at the start of `main`.
///
/// # Errors
///
/// Whatever stopped the command; [`exit_code`] says which exit code it means.
pub async fn run(cli: Cli, mut inherited: systemd::Inherited) -> anyhow::Result<()> {
    // The running forwards, for --admin; the server lives until `run` returns.
    let forwards = Forwards::new();
    let workers = crate::http::HttpWorkers::new(cli.threads);
    let config = match &cli.command {
        Command::Run(args) => {
            Some(config::load(&args.config).map_err(|e| UsageError(e.to_string()))?)
        }
        _ => None,
    };
    if cli.check {
        return check(&cli.command, config.as_ref());
    }
    let admin = cli.admin.or(config.as_ref().and_then(|c| c.admin));
    let _admin = match admin {
        Some(addr) => Some(Admin::start(addr, forwards.clone()).await?),
        None => None,
    };
    match (cli.command, config) {
        (Command::Tcp(args), _) => seed(&args.spec()?, args.drain, &forwards, &mut inherited).await,
        (Command::Udp(args), _) => seed(&args.spec()?, args.drain, &forwards, &mut inherited).await,
        (Command::TcpUdp(args), _) => {
            seed(&args.spec()?, args.drain, &forwards, &mut inherited).await
        }
        (Command::Http(args), _) => crate::http::run(&args, &forwards, &workers).await,
        (Command::ServiceProxy(args), _) => {
            crate::service_proxy::run(&args, &forwards, &workers).await
        }
        (Command::Forward(args), _) => crate::forward::run(&args, &forwards).await,
        (Command::PortForwardServer(args), _) => {
            crate::port_forward_server::run(&args, &forwards).await
        }
        (Command::Run(args), Some(config)) => {
            run_config(&args.config, &config, &forwards, &workers).await
        }
        (Command::Run(_), None) => unreachable!("the file was loaded above"),
    }
}

/// `--check`: builds (without starting) every forwarder the command would start, so the
/// library validates every setting; binds and resolves nothing.
fn check(command: &Command, config: Option<&ConfigFile>) -> anyhow::Result<()> {
    match (command, config) {
        (Command::Tcp(args), _) => drop(args.spec()?),
        (Command::Udp(args), _) => drop(args.spec()?),
        (Command::TcpUdp(args), _) => drop(args.spec()?),
        (Command::Http(args), _) => drop(args.spec()?),
        (Command::ServiceProxy(args), _) => drop(args.spec()?),
        (Command::Forward(args), _) => drop(args.plan()?),
        (Command::PortForwardServer(args), _) => crate::port_forward_server::check(args)?,
        (Command::Run(_), Some(config)) => {
            crate::supervise::build_all(config)?;
            for line in config::summary(config) {
                println!("{line}");
            }
        }
        (Command::Run(_), None) => unreachable!("the file was loaded before"),
    }
    println!("ok: the arguments are valid");
    Ok(())
}

/// `proxy run --config FILE`: runs the file's forwards, applies the file again on SIGHUP,
/// drains everything on SIGINT or SIGTERM.
async fn run_config(
    path: &Path,
    config: &ConfigFile,
    forwards: &Forwards,
    workers: &crate::http::HttpWorkers,
) -> anyhow::Result<()> {
    let mut signals = Signals::new().context("cannot install the signal handlers")?;
    let mut hangups = Hangups::new().context("cannot install the SIGHUP handler")?;
    let mut supervisor = Supervisor::start(path, config, forwards, workers)?;
    forwards.set_ready();
    systemd::notify_ready_status(&format!("Running {}", path.display()));
    let name = loop {
        tokio::select! {
            () = hangups.recv() => match supervisor.reload().await {
                Ok(()) => tracing::info!(config = %path.display(), "reloaded"),
                Err(e) => tracing::error!(
                    config = %path.display(),
                    "reload rejected: {e:#}; the running configuration stays"
                ),
            },
            name = signals.recv() => break name,
        }
    };
    forwards.set_draining();
    let drain = supervisor.drain();
    systemd::notify_stopping(drain);
    tracing::info!(
        signal = name,
        "shutting down: draining every forward for up to {drain:?}"
    );
    finish_drain(
        supervisor.shutdown(),
        &mut signals,
        "connections and sessions",
        "connections",
    )
    .await
}

/// SIGHUP, the request to reload the configuration file.
pub(crate) struct Hangups {
    #[cfg(unix)]
    hup: tokio::signal::unix::Signal,
}

impl Hangups {
    pub(crate) fn new() -> io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Hangups {
                hup: signal(SignalKind::hangup())?,
            })
        }
        #[cfg(not(unix))]
        {
            Ok(Hangups {})
        }
    }

    pub(crate) async fn recv(&mut self) {
        #[cfg(unix)]
        {
            if self.hup.recv().await.is_none() {
                std::future::pending::<()>().await;
            }
        }
        #[cfg(not(unix))]
        {
            std::future::pending::<()>().await;
        }
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

/// Advice on an error the user fixes outside proxy: a listen address it may not bind,
/// which for a port below 1024 means a missing CAP_NET_BIND_SERVICE.
pub fn hint(error: &anyhow::Error) -> Option<&'static str> {
    let core = error
        .chain()
        .find_map(|e| e.downcast_ref::<proxy_core::Error>())?;
    let io = std::error::Error::source(core)?.downcast_ref::<std::io::Error>()?;
    (core.kind() == proxy_core::ErrorKind::Bind
        && io.kind() == std::io::ErrorKind::PermissionDenied)
        .then_some(
            "ports below 1024 need root or CAP_NET_BIND_SERVICE; see \"Running as non-root \
             on port 53\" in the README",
        )
}

/// `proxy tcp`, `proxy udp` and `proxy tcp,udp`: one spec, started on the sockets
/// systemd passed or on its own (TCP and UDP on one port, the IPv4 fallback: the
/// library's [`ForwardSpec::start`]), served until a signal.
async fn seed(
    spec: &ForwardSpec,
    drain: Duration,
    forwards: &Forwards,
    inherited: &mut systemd::Inherited,
) -> anyhow::Result<()> {
    // Installed before the listeners log "Forwarding from", so a signal sent after that
    // line always drains rather than killing the process.
    let signals = Signals::new().context("cannot install the signal handlers")?;
    let wants = Wants {
        tcp: spec.protocol.tcp(),
        udp: spec.protocol.udp(),
    };
    let started = match inherited.sockets(wants)? {
        Some(sockets) => spec.start_from(Inherited {
            tcp: sockets.tcp,
            udp: sockets.udp,
        }),
        None => spec.start(),
    }
    .map_err(|e| start_error(e, spec.protocol))?;
    // The metrics' `target` label; a forward routing only by SNI has none.
    let target = (spec.target.as_ref()).map_or_else(String::new, ToString::to_string);
    let mut running = Vec::new();
    if let Some(tcp) = started.tcp {
        running.push(register(forwards, Protocol::Tcp, &target, tcp));
    }
    if let Some(udp) = started.udp {
        running.push(register(forwards, Protocol::Udp, &target, udp));
    }
    serve_until_signal(forwards, running, signals, drain, spec).await
}

/// Builds the TCP forwarders of `spec` again, reading its TLS files anew, and makes them
/// current for new connections; open connections go on. A failure (a file missing or
/// broken) keeps the running certificates.
async fn reload_tls(spec: &ForwardSpec, running: &mut [Registered]) {
    for forward in running.iter_mut().filter(|r| r.protocol() == Protocol::Tcp) {
        let mut spec = spec.clone();
        spec.protocol = Transport::Tcp;
        spec.listen = proxy_core::Listen::Addrs(forward.handle().local_addrs().to_vec());
        let built = (spec.make_resolver().map_err(anyhow::Error::from))
            .and_then(|resolver| Ok(spec.tcp_forwarder(resolver).map_err(crate::args::invalid)?));
        let reloaded = match built {
            Ok(forwarder) => {
                (forward.handle_mut().reload(forwarder).await).map_err(anyhow::Error::from)
            }
            Err(e) => Err(e),
        };
        match reloaded {
            Ok(()) => tracing::info!(
                forward = forward.name(),
                "reloaded: TLS certificates read again"
            ),
            Err(e) => tracing::error!(
                forward = forward.name(),
                "reload rejected: {e:#}; the running certificates stay"
            ),
        }
    }
}

/// A start error as the CLI reports it: bad settings are usage errors (exit code 2); a
/// forward of both transports says which one failed (`TCP: failed to bind ...`).
pub(crate) fn start_error(e: StartError, protocol: Transport) -> anyhow::Error {
    match e {
        StartError::Invalid(e) => crate::args::invalid(e).into(),
        StartError::Start { transport, error } if protocol == Transport::Both => {
            anyhow::Error::from(error).context(transport.as_str().to_uppercase())
        }
        StartError::Start { error, .. } => error.into(),
        other => other.into(),
    }
}

/// Lists a started forwarder in `forwards` as `tcp:PORT` or `udp:PORT`.
fn register(
    forwards: &Forwards,
    protocol: Protocol,
    target: &str,
    handle: ForwarderHandle,
) -> Registered {
    let name = listen_name(protocol, handle.local_addrs());
    forwards.register(name, protocol, target, handle)
}

/// Marks `forwards` ready (every forwarder in `running` is bound), waits for SIGINT or
/// SIGTERM, marks it draining, then drains every forwarder at the same time: they stop
/// accepting (TCP) or starting new sessions (UDP), let open connections and sessions
/// finish for up to `drain`, and return. A second signal during the drain closes them at
/// once. When `spec` terminates TLS, SIGHUP reads its certificate files again.
async fn serve_until_signal(
    forwards: &Forwards,
    mut running: Vec<Registered>,
    mut signals: Signals,
    drain: Duration,
    spec: &ForwardSpec,
) -> anyhow::Result<()> {
    forwards.set_ready();
    systemd::notify_ready(&running);
    let terminating = spec.tls_cert.is_some() || spec.tls_dir.is_some();
    let mut hangups = match terminating {
        true => Some(Hangups::new().context("cannot install the SIGHUP handler")?),
        false => None,
    };
    let name = loop {
        let Some(hangups) = hangups.as_mut() else {
            break signals.recv().await;
        };
        tokio::select! {
            () = hangups.recv() => reload_tls(spec, &mut running).await,
            name = signals.recv() => break name,
        }
    };
    forwards.set_draining();
    systemd::notify_stopping(drain);
    let has = |p| running.iter().any(|r| r.protocol() == p);
    let what = match (has(Protocol::Tcp), has(Protocol::Udp)) {
        (true, true) => "connections and UDP sessions",
        (false, true) => "sessions",
        _ => "connections",
    };
    let (open, sessions) = open_counts(&running);
    if has(Protocol::Udp) {
        tracing::info!(
            signal = name,
            open,
            sessions,
            "shutting down: no longer accepting; draining open {what} for up to {drain:?}"
        );
    } else {
        tracing::info!(
            signal = name,
            open,
            "shutting down: no longer accepting; draining open {what} for up to {drain:?}"
        );
    }
    finish_drain(shut_down_all(running, drain), &mut signals, what, what).await
}
