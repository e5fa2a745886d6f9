//! Running a parsed command line: logging, the forwarder, signals, exit codes.

use std::io::{self, IsTerminal};
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use proxy_core::resolve::{HickoryResolver, Resolve, ResolverKind, SystemResolver};
use proxy_core::{ErrorKind, ForwarderHandle, Target};
use tokio::task::JoinSet;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::writer::BoxMakeWriter;

use crate::admin::Admin;
use crate::args::{
    Cli, Command, Listen, LogFormat, ResolverArg, TcpArgs, TcpPlan, TcpUdpArgs, UdpArgs, UdpPlan,
    UsageError,
};
use crate::config::{self, ConfigFile};
use crate::logging::{self, LogFlush};
use crate::registry::{Forwards, Protocol, Registered, listen_name};
use crate::supervise::Supervisor;
use crate::systemd::{self, Wants};

/// How many ports `proxy tcp,udp 0 ...` tries before giving up when the UDP side of the
/// port TCP got from the kernel is taken.
const SAME_PORT_TRIES: u32 = 10;

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
        (Command::Tcp(args), _) => tcp(&args, &forwards, &mut inherited).await,
        (Command::Udp(args), _) => udp(&args, &forwards, &mut inherited).await,
        (Command::TcpUdp(args), _) => tcp_udp(&args, &forwards, &mut inherited).await,
        (Command::Forward(args), _) => crate::forward::run(&args, &forwards).await,
        (Command::Run(args), Some(config)) => run_config(&args.config, &config, &forwards).await,
        (Command::Run(_), None) => unreachable!("the file was loaded above"),
    }
}

/// `--check`: builds (without starting) every forwarder the command would start, so the
/// library validates every setting; binds and resolves nothing.
fn check(command: &Command, config: Option<&ConfigFile>) -> anyhow::Result<()> {
    // Building a forwarder never resolves; a placeholder resolver will do.
    let resolver = || -> Arc<dyn Resolve> { Arc::new(SystemResolver::new()) };
    match (command, config) {
        (Command::Tcp(args), _) => {
            let plan = args.plan()?;
            build_tcp(&plan, plan.common.listen.addrs(), resolver())?;
        }
        (Command::Udp(args), _) => {
            let plan = args.plan()?;
            build_udp(&plan, plan.common.listen.addrs(), resolver())?;
        }
        (Command::TcpUdp(args), _) => {
            let plan = args.plan()?;
            build_tcp(&plan.tcp, plan.tcp.common.listen.addrs(), resolver())?;
            build_udp(&plan.udp, plan.udp.common.listen.addrs(), resolver())?;
        }
        (Command::Forward(args), _) => {
            args.plan()?;
        }
        (Command::Run(_), Some(config)) => {
            crate::supervise::build_all(config)?;
        }
        (Command::Run(_), None) => unreachable!("the file was loaded before"),
    }
    println!("ok: the arguments are valid");
    Ok(())
}

/// `proxy run --config FILE`: runs the file's forwards, applies the file again on SIGHUP,
/// drains everything on SIGINT or SIGTERM.
async fn run_config(path: &Path, config: &ConfigFile, forwards: &Forwards) -> anyhow::Result<()> {
    let mut signals = Signals::new().context("cannot install the signal handlers")?;
    let mut hangups = Hangups::new().context("cannot install the SIGHUP handler")?;
    let mut supervisor = Supervisor::start(path, config, forwards)?;
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
struct Hangups {
    #[cfg(unix)]
    hup: tokio::signal::unix::Signal,
}

impl Hangups {
    fn new() -> io::Result<Self> {
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

    async fn recv(&mut self) {
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

async fn tcp(
    args: &TcpArgs,
    forwards: &Forwards,
    inherited: &mut systemd::Inherited,
) -> anyhow::Result<()> {
    let plan = args.plan()?;
    // Installed before the listeners log "Forwarding from", so a signal sent after that
    // line always drains rather than killing the process.
    let signals = Signals::new().context("cannot install the signal handlers")?;
    let resolver = resolver(&plan.common.target, plan.common.resolver)?;
    let handle = match inherited.sockets(Wants::TCP)? {
        Some(sockets) => {
            build_tcp(&plan, plan.common.listen.addrs(), resolver)?.start_from(sockets.tcp)?
        }
        None => start_tcp(&plan, resolver)?,
    };
    let tcp = register(forwards, Protocol::Tcp, &plan.common.target, handle);
    serve_until_signal(forwards, vec![tcp], signals, plan.common.drain).await
}

async fn udp(
    args: &UdpArgs,
    forwards: &Forwards,
    inherited: &mut systemd::Inherited,
) -> anyhow::Result<()> {
    let plan = args.plan()?;
    let signals = Signals::new().context("cannot install the signal handlers")?;
    let resolver = resolver(&plan.common.target, plan.common.resolver)?;
    let handle = match inherited.sockets(Wants::UDP)? {
        Some(sockets) => {
            build_udp(&plan, plan.common.listen.addrs(), resolver)?.start_from(sockets.udp)?
        }
        None => start_with_ipv4_fallback(&plan.common.listen, |listen| {
            Ok(build_udp(&plan, listen, resolver.clone())?.start())
        })?,
    };
    let udp = register(forwards, Protocol::Udp, &plan.common.target, handle);
    serve_until_signal(forwards, vec![udp], signals, plan.common.drain).await
}

/// `proxy tcp,udp`: TCP binds first; UDP then binds the addresses TCP got, so both serve
/// the same port also when the kernel chose it. When that UDP port is taken and the port
/// was the kernel's choice, TCP binds again on another port, a bounded number of times.
/// The TCP forwarders whose port UDP could not have stay bound until the search is over,
/// so the kernel cannot hand the same port out again.
async fn tcp_udp(
    args: &TcpUdpArgs,
    forwards: &Forwards,
    inherited: &mut systemd::Inherited,
) -> anyhow::Result<()> {
    let plan = args.plan()?;
    let signals = Signals::new().context("cannot install the signal handlers")?;
    let resolver = resolver(&plan.tcp.common.target, plan.tcp.common.resolver)?;
    // Reject bad UDP settings (exit code 2) before binding anything.
    build_udp(&plan.udp, plan.udp.common.listen.addrs(), resolver.clone())?;
    if let Some(sockets) = inherited.sockets(Wants::TCP_UDP)? {
        let tcp = build_tcp(&plan.tcp, plan.tcp.common.listen.addrs(), resolver.clone())?
            .start_from(sockets.tcp)
            .context("TCP")?;
        let udp = build_udp(&plan.udp, plan.udp.common.listen.addrs(), resolver)?
            .start_from(sockets.udp)
            .context("UDP")?;
        let tcp = register(forwards, Protocol::Tcp, &plan.tcp.common.target, tcp);
        let udp = register(forwards, Protocol::Udp, &plan.udp.common.target, udp);
        return serve_until_signal(forwards, vec![tcp, udp], signals, plan.tcp.common.drain).await;
    }
    let kernel_port = plan.tcp.common.listen.addrs().iter().any(|a| a.port() == 0);
    let mut passed_over = Vec::new();
    let started = async {
        for attempt in 1..=SAME_PORT_TRIES {
            let tcp = start_tcp(&plan.tcp, resolver.clone()).context("TCP")?;
            let listen = tcp.local_addrs().to_vec();
            match build_udp(&plan.udp, listen.clone(), resolver.clone())?.start() {
                Ok(udp) => return Ok((tcp, udp)),
                Err(e) if kernel_port && address_in_use(&e) && attempt < SAME_PORT_TRIES => {
                    tracing::warn!(
                        error = %e,
                        cause = %source_of(&e),
                        "UDP cannot bind the port TCP got ({}); trying another port \
                         (attempt {} of {SAME_PORT_TRIES})",
                        show_addrs(&listen),
                        attempt + 1,
                    );
                    passed_over.push(tcp);
                }
                Err(e) => {
                    passed_over.push(tcp);
                    return Err(anyhow::Error::from(e).context("UDP"));
                }
            }
        }
        unreachable!("the last attempt returns")
    }
    .await;
    // Nothing was forwarded on the ports passed over that is worth waiting for.
    for tcp in passed_over {
        tcp.shutdown(Duration::ZERO).await;
    }
    let (tcp, udp) = started?;
    let tcp = register(forwards, Protocol::Tcp, &plan.tcp.common.target, tcp);
    let udp = register(forwards, Protocol::Udp, &plan.udp.common.target, udp);
    serve_until_signal(forwards, vec![tcp, udp], signals, plan.tcp.common.drain).await
}

/// Lists a started forwarder in `forwards` as `tcp:PORT` or `udp:PORT`.
fn register(
    forwards: &Forwards,
    protocol: Protocol,
    target: &Target,
    handle: ForwarderHandle,
) -> Registered {
    let name = listen_name(protocol, handle.local_addrs());
    forwards.register(name, protocol, target, handle)
}

fn start_tcp(plan: &TcpPlan, resolver: Arc<dyn Resolve>) -> anyhow::Result<ForwarderHandle> {
    start_with_ipv4_fallback(&plan.common.listen, |listen| {
        Ok(build_tcp(plan, listen, resolver.clone())?.start())
    })
}

/// Starts a forwarder on `listen`'s addresses with `start`; when that fails because this
/// host has no IPv6 and `listen` has an IPv4 fallback, starts it there instead.
///
/// `start` fails with a [`UsageError`] when the settings are bad, and returns the result
/// of starting (binding) otherwise.
fn start_with_ipv4_fallback(
    listen: &Listen,
    start: impl Fn(Vec<SocketAddr>) -> Result<Result<ForwarderHandle, proxy_core::Error>, UsageError>,
) -> anyhow::Result<ForwarderHandle> {
    match start(listen.addrs())? {
        Ok(handle) => Ok(handle),
        Err(e) => match listen.ipv4_fallback() {
            Some(v4) if ipv6_unavailable(&e) => {
                tracing::warn!(
                    error = %e,
                    cause = %source_of(&e),
                    "IPv6 is not available; listening on IPv4 only"
                );
                Ok(start(v4)??)
            }
            _ => Err(e.into()),
        },
    }
}

pub(crate) fn resolver(target: &Target, which: ResolverArg) -> anyhow::Result<Arc<dyn Resolve>> {
    let chosen = match which {
        ResolverArg::System => ResolverKind::System,
        ResolverArg::Hickory => ResolverKind::Hickory,
    };
    // IP literal targets never ask the resolver: do not fail on a missing resolv.conf.
    // SRV targets need hickory: the C library has no SRV lookup.
    match chosen.for_target(target) {
        ResolverKind::Hickory => {
            if chosen != ResolverKind::Hickory {
                tracing::debug!(target = %target, "an SRV target: resolving with hickory");
            }
            let hickory = HickoryResolver::from_system_conf()
                .context("--resolver hickory: cannot read the system DNS configuration")?;
            Ok(Arc::new(hickory))
        }
        _ => Ok(Arc::new(SystemResolver::new())),
    }
}

pub(crate) fn build_tcp(
    plan: &TcpPlan,
    listen: Vec<SocketAddr>,
    resolver: Arc<dyn Resolve>,
) -> Result<proxy_core::TcpForwarder, UsageError> {
    plan.builder(listen, resolver)
        .build()
        .map_err(|e| UsageError(format!("invalid settings: {e}")))
}

pub(crate) fn build_udp(
    plan: &UdpPlan,
    listen: Vec<SocketAddr>,
    resolver: Arc<dyn Resolve>,
) -> Result<proxy_core::UdpForwarder, UsageError> {
    plan.builder(listen, resolver)
        .build()
        .map_err(|e| UsageError(format!("invalid settings: {e}")))
}

fn show_addrs(addrs: &[SocketAddr]) -> String {
    addrs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The I/O error under a forwarder error.
fn io_source(e: &proxy_core::Error) -> Option<&io::Error> {
    std::error::Error::source(e).and_then(|s| s.downcast_ref::<io::Error>())
}

/// Whether binding failed because the address is taken.
pub(crate) fn address_in_use(e: &proxy_core::Error) -> bool {
    e.kind() == ErrorKind::Bind
        && io_source(e).is_some_and(|io| io.kind() == io::ErrorKind::AddrInUse)
}

/// Whether binding failed because this host has no IPv6 (the kernel has it disabled or
/// has no IPv6 address to bind).
pub(crate) fn ipv6_unavailable(e: &proxy_core::Error) -> bool {
    let Some(io) = io_source(e) else {
        return false;
    };
    e.kind() == ErrorKind::Bind
        && (io.kind() == io::ErrorKind::AddrNotAvailable
            // EAFNOSUPPORT, which `std` does not map to an `io::ErrorKind`.
            || io.raw_os_error() == Some(libc::EAFNOSUPPORT))
}

pub(crate) fn source_of(e: &dyn std::error::Error) -> String {
    e.source().map(ToString::to_string).unwrap_or_default()
}

/// Marks `forwards` ready (every forwarder in `running` is bound), waits for SIGINT or
/// SIGTERM, marks it draining, then drains every forwarder at the same time: they stop
/// accepting (TCP) or starting new sessions (UDP), let open connections and sessions
/// finish for up to `drain`, and return. A second signal during the drain closes them at
/// once.
async fn serve_until_signal(
    forwards: &Forwards,
    running: Vec<Registered>,
    mut signals: Signals,
    drain: Duration,
) -> anyhow::Result<()> {
    forwards.set_ready();
    systemd::notify_ready(&running);
    let name = signals.recv().await;
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

/// The open TCP connections and UDP sessions of every forward in `running`.
pub(crate) fn open_counts(running: &[Registered]) -> (u64, u64) {
    running.iter().fold((0, 0), |(open, sessions), r| {
        let stats = r.handle().stats();
        (
            open + stats.connections_open,
            sessions + stats.udp.sessions_open,
        )
    })
}

/// Shuts every forward in `running` down at the same time: each stops accepting (TCP) or
/// starting new sessions (UDP) and lets open connections and sessions finish for up to
/// `drain`. The future says whether all of them finished in time.
///
/// Each shutdown starts at once, in a task of its own, so they drain concurrently.
/// Dropping the future (when a second signal comes) aborts the tasks, which drops the
/// handles and closes everything.
pub(crate) fn shut_down_all(
    running: Vec<Registered>,
    drain: Duration,
) -> impl Future<Output = bool> {
    let mut shutdowns = JoinSet::new();
    for forward in running {
        shutdowns.spawn(forward.shutdown(drain));
    }
    async move {
        let mut all = true;
        while let Some(drained) = shutdowns.join_next().await {
            // A shutdown task that panicked has closed what it had.
            all &= drained.unwrap_or(false);
        }
        all
    }
}

/// Waits for a drain that has begun: `drained` says whether everything finished within
/// the drain time, and the log says so (`all {finished} finished`, or `remaining {closed}
/// were closed`). Another signal meanwhile drops `drained`, which closes what is still
/// open, and fails naming the signal.
pub(crate) async fn finish_drain(
    drained: impl Future<Output = bool>,
    signals: &mut Signals,
    finished: &str,
    closed: &str,
) -> anyhow::Result<()> {
    tokio::select! {
        drained = drained => {
            if drained {
                tracing::info!("all {finished} finished; exiting");
            } else {
                tracing::info!("drain time over; remaining {closed} were closed; exiting");
            }
            Ok(())
        }
        name = signals.recv() => {
            anyhow::bail!("received {name} while draining; closed the open {closed}")
        }
    }
}

/// SIGINT and SIGTERM.
pub(crate) struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl Signals {
    pub(crate) fn new() -> io::Result<Self> {
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
    pub(crate) async fn recv(&mut self) -> &'static str {
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
