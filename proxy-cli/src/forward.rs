//! `proxy forward`: kubectl port-forward's command line, without Kubernetes.
//!
//! `proxy forward [--address ADDR[,ADDR...]] TARGET SPEC... [-- CMD ARGS...]` forwards
//! local ports to TARGET's ports. This module has the grammar of SPEC ([`parse_spec`]),
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

use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt::{self, Write as _};
use std::io::{self, Write as _};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{ExitCode, ExitStatus};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use proxy_core::resolve::{Resolution, Resolve, Resolving};
use proxy_core::spec::{address_in_use, ipv6_unavailable};
use proxy_core::{ForwarderHandle, Listen, Target, Transport};
use tokio::sync::watch;

pub use crate::args::forward::{
    AddressArg, BindAddr, EXAMPLES, ForwardArgs, ForwardPlan, IDLE_FLAG_HELP, LONG_ABOUT, Mapping,
    PortSpec, parse_address, parse_spec, parse_target,
};
use crate::args::{UsageError, invalid};
/// The transport of a SPEC: TCP, the default, or UDP (`/udp`).
pub use crate::registry::Protocol;
use crate::registry::{Forwards, Registered};
use crate::shutdown::{self, Signals};

/// How many kernel-chosen ports one SPEC tries before giving up, when the port the first
/// address got is taken on another address.
const SAME_PORT_TRIES: u32 = 10;

/// How long a name lookup's answer is shared with the other forwarders of the same name.
const SHARED_ANSWER: Duration = Duration::from_secs(1);

/// `proxy forward -- CMD` ended with CMD's status; proxy exits with [`code`](Self::code).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommandExit {
    /// The exit code: CMD's, 128+N when signal N ended it.
    pub code: u8,
}

// ===== running =====

/// One bound socket.
struct Bound {
    /// The index of its SPEC.
    spec: usize,
    /// The index of its mapping among all mappings of all SPECs.
    slot: usize,
    mapping: Mapping,
    addr: SocketAddr,
    handle: ForwarderHandle,
}

/// Runs `proxy forward` until a signal stops it or CMD exits.
///
/// # Errors
///
/// A [`UsageError`] for bad arguments; a bind or I/O error; a [`CommandExit`] when CMD
/// exited with another status than 0 ([`command_exit_code`] maps it to the exit code).
pub async fn run(args: &ForwardArgs, forwards: &Forwards) -> anyhow::Result<()> {
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

    let mut binder = Binder {
        plan: &plan,
        resolver,
        addrs: plan.addresses.clone(),
        passed_over: Vec::new(),
    };
    let bound = binder.bind_all();
    for handle in std::mem::take(&mut binder.passed_over) {
        handle.shutdown(Duration::ZERO).await;
    }
    let bound = bound?;

    let result = forward(&plan, bound, forwards, &mut signals).await;
    if let Some(file) = &plan.ports_file
        && let Err(e) = remove_file(file)
    {
        tracing::warn!(file = %file.display(), error = %e, "cannot remove the ports file");
    }
    result
}

/// Writes the ports file, prints the lines, lists the forwards for --admin, then forwards
/// until a signal, or until CMD exits when there is one.
async fn forward(
    plan: &ForwardPlan,
    bound: Vec<Bound>,
    forwards: &Forwards,
    signals: &mut Signals,
) -> anyhow::Result<()> {
    let json = plan.ports_file.as_ref().map(|_| ports_json(plan, &bound));
    let lines: Vec<String> = bound
        .iter()
        .map(|b| forwarding_line(b.addr, b.mapping))
        .collect();
    let drain = plan.drain;
    let first_port = bound.first().map(|b| b.addr.port().to_string());
    let all_ports = ports_env(&bound);
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
    // Ready (`/readyz`) before the ports file and the lines tell anyone to connect.
    forwards.set_ready();
    if let (Some(file), Some(json)) = (&plan.ports_file, json) {
        write_atomically(file, &json)
            .with_context(|| format!("cannot write --ports-file {}", file.display()))?;
    }
    print_lines(&lines).context("cannot write to stdout")?;

    let Some((program, args)) = plan.command.split_first() else {
        let name = signals.recv().await;
        tracing::info!(signal = name, "shutting down");
        return drain_all(forwards, handles, drain, signals).await;
    };
    // A signal that came while binding stops proxy before CMD starts.
    tokio::select! {
        biased;
        name = signals.recv() => {
            tracing::info!(signal = name, "shutting down before starting the command");
            return drain_all(forwards, handles, drain, signals).await;
        }
        () = std::future::ready(()) => {}
    }
    let mut child = tokio::process::Command::new(program);
    child
        .args(args)
        .env("PROXY_FORWARD_PORT", first_port.unwrap_or_default())
        .env("PROXY_FORWARD_PORTS", all_ports)
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
            drain_all(forwards, handles, Duration::ZERO, signals).await?;
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
    drain_all(forwards, handles, drain, signals).await?;
    if code == 0 {
        Ok(())
    } else {
        Err(CommandExit { code }.into())
    }
}

/// Passes a signal proxy received on to CMD: SIGTERM always, SIGINT unless the terminal
/// sent it to the whole foreground process group, CMD included.
fn pass_on(name: &str, pid: Option<u32>, command: &str) {
    #[cfg(unix)]
    {
        use rustix::process::{Pid, Signal, kill_process};
        let signal = match name {
            "SIGTERM" => Signal::TERM,
            "SIGINT" if from_terminal() => {
                tracing::info!(
                    signal = name,
                    "the terminal sent it to `{command}` too; forwarding until it exits"
                );
                return;
            }
            "SIGINT" => Signal::INT,
            _ => return,
        };
        let Some(pid) = pid.and_then(|p| Pid::from_raw(p.cast_signed())) else {
            return;
        };
        match kill_process(pid, signal) {
            Ok(()) => tracing::info!(
                signal = name,
                "passed the signal on to `{command}`; forwarding until it exits"
            ),
            // The command has just exited: its status comes next.
            Err(e) => tracing::debug!(signal = name, error = %e, "cannot signal the command"),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = pid;
        tracing::info!(signal = name, "forwarding until `{command}` exits");
    }
}

/// Whether proxy's terminal has proxy's process group in the foreground: a SIGINT then
/// came from Ctrl-C, which the terminal sends to the command as well.
#[cfg(unix)]
fn from_terminal() -> bool {
    use std::os::fd::AsFd;
    let ours = rustix::process::getpgrp();
    let foreground = |fd: std::os::fd::BorrowedFd<'_>| {
        rustix::termios::tcgetpgrp(fd).is_ok_and(|group| group == ours)
    };
    foreground(io::stdin().as_fd()) || foreground(io::stdout().as_fd()) || {
        foreground(io::stderr().as_fd())
    }
}

/// The exit code for CMD's status: its code, or 128+N when signal N ended it.
fn exit_code_of(status: ExitStatus) -> u8 {
    if let Some(code) = status.code() {
        return u8::try_from(code & 0xff).unwrap_or(1);
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            return u8::try_from((128 + signal) & 0xff).unwrap_or(1);
        }
    }
    1
}

/// The exit code for an error from [`run`] that carries CMD's status; `None` for other
/// errors. Such an error is no failure of proxy's: print nothing and exit with the code.
pub fn command_exit_code(error: &anyhow::Error) -> Option<ExitCode> {
    error
        .downcast_ref::<CommandExit>()
        .map(|exit| ExitCode::from(exit.code))
}

impl fmt::Display for CommandExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the command exited with code {}", self.code)
    }
}

impl std::error::Error for CommandExit {}

/// Stops accepting on every forwarder and lets open connections and sessions finish for
/// up to `drain`; another signal meanwhile closes them at once.
async fn drain_all(
    forwards: &Forwards,
    handles: Vec<Registered>,
    drain: Duration,
    signals: &mut Signals,
) -> anyhow::Result<()> {
    forwards.set_draining();
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

/// Binds every mapping of a plan on every address.
struct Binder<'a> {
    plan: &'a ForwardPlan,
    resolver: Arc<dyn Resolve>,
    /// The addresses still in use: an optional one is dropped when its family is missing.
    addrs: Vec<BindAddr>,
    /// Forwarders on kernel-chosen ports that another address could not have; kept bound
    /// until binding is over, so the kernel does not hand out the same port again.
    passed_over: Vec<ForwarderHandle>,
}

impl Binder<'_> {
    /// Every mapping on every address, in SPEC order, then mapping order, then address
    /// order. On an error, nothing stays bound.
    fn bind_all(&mut self) -> anyhow::Result<Vec<Bound>> {
        let mut bound = Vec::new();
        let plan = self.plan;
        let mut slot = 0;
        for (index, spec) in plan.specs.iter().enumerate() {
            for mapping in spec.mappings() {
                let handles = self
                    .bind(mapping)
                    .with_context(|| format!("SPEC '{}'", spec.token()))?;
                bound.extend(handles.into_iter().map(|(addr, handle)| Bound {
                    spec: index,
                    slot,
                    mapping,
                    addr,
                    handle,
                }));
                slot += 1;
            }
        }
        Ok(bound)
    }

    /// One mapping on every address, on the same port.
    fn bind(&mut self, m: Mapping) -> anyhow::Result<Vec<(SocketAddr, ForwarderHandle)>> {
        for attempt in 1..=SAME_PORT_TRIES {
            let mut out: Vec<(SocketAddr, ForwarderHandle)> = Vec::new();
            let mut port = m.local;
            let mut i = 0;
            let mut retry = false;
            while i < self.addrs.len() {
                let addr = self.addrs[i];
                match self.start(m, SocketAddr::new(addr.ip, port))? {
                    Ok(handle) => {
                        let local = handle.local_addrs()[0];
                        port = local.port();
                        out.push((local, handle));
                        i += 1;
                    }
                    Err(e) if addr.optional && ipv6_unavailable(&e) => {
                        tracing::debug!(
                            error = %e,
                            cause = %source_of(&e),
                            "{} is not available on this host; not listening on it",
                            addr.ip
                        );
                        self.addrs.remove(i);
                    }
                    Err(e)
                        if m.local == 0
                            && !out.is_empty()
                            && address_in_use(&e)
                            && attempt < SAME_PORT_TRIES =>
                    {
                        tracing::warn!(
                            error = %e,
                            cause = %source_of(&e),
                            "the port {port} the kernel chose on {} is taken on {}; trying \
                             another port (attempt {} of {SAME_PORT_TRIES})",
                            out[0].0.ip(),
                            addr.ip,
                            attempt + 1,
                        );
                        self.passed_over.extend(out.drain(..).map(|(_, h)| h));
                        retry = true;
                        break;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            if retry {
                continue;
            }
            if out.is_empty() {
                anyhow::bail!(
                    "cannot listen on localhost: neither 127.0.0.1 nor ::1 is available on \
                     this host; give --address"
                );
            }
            return Ok(out);
        }
        unreachable!("the last attempt returns")
    }

    /// Starts one forwarder for `m` on `listen`; the outer error is a settings error.
    fn start(
        &self,
        m: Mapping,
        listen: SocketAddr,
    ) -> Result<Result<ForwarderHandle, proxy_core::Error>, UsageError> {
        let mut spec = self.plan.settings.clone();
        spec.target = Some(Target::new(self.plan.host.clone(), m.remote));
        spec.listen = Listen::Addrs(vec![listen]);
        let resolver = self.resolver.clone();
        Ok(match m.protocol {
            Protocol::Tcp => {
                spec.protocol = Transport::Tcp;
                spec.tcp_forwarder(resolver).map_err(invalid)?.start()
            }
            Protocol::Udp => {
                spec.protocol = Transport::Udp;
                spec.udp_forwarder(resolver).map_err(invalid)?.start()
            }
        })
    }
}

/// The cause under `e`, for the logs.
fn source_of(e: &dyn std::error::Error) -> String {
    e.source().map(ToString::to_string).unwrap_or_default()
}

/// The kubectl lines on stdout, flushed.
fn print_lines(lines: &[String]) -> io::Result<()> {
    let mut out = io::stdout().lock();
    for line in lines {
        writeln!(out, "{line}")?;
    }
    out.flush()
}

/// `Forwarding from 127.0.0.1:8888 -> 5000`, as kubectl prints it; `-> 53/udp` for UDP.
///
/// # Examples
///
/// ```
/// use proxy_cli::forward::{Mapping, Protocol, forwarding_line};
///
/// let m = Mapping { protocol: Protocol::Tcp, local: 0, remote: 5000 };
/// assert_eq!(
///     forwarding_line("[::1]:8888".parse()?, m),
///     "Forwarding from [::1]:8888 -> 5000"
/// );
/// let m = Mapping { protocol: Protocol::Udp, local: 5353, remote: 53 };
/// assert_eq!(
///     forwarding_line("127.0.0.1:5353".parse()?, m),
///     "Forwarding from 127.0.0.1:5353 -> 53/udp"
/// );
/// # Ok::<(), std::net::AddrParseError>(())
/// ```
pub fn forwarding_line(addr: SocketAddr, m: Mapping) -> String {
    match m.protocol {
        Protocol::Tcp => format!("Forwarding from {addr} -> {}", m.remote),
        Protocol::Udp => format!("Forwarding from {addr} -> {}/udp", m.remote),
    }
}

/// `LOCAL:REMOTE[/udp]` for every mapping, in order, with the bound local port: the
/// value of `PROXY_FORWARD_PORTS`.
fn ports_env(bound: &[Bound]) -> String {
    let mut out = String::new();
    // The sockets of one mapping are adjacent and share the port.
    for (i, b) in bound.iter().enumerate() {
        if i > 0 && bound[i - 1].slot == b.slot {
            continue;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        let _ = write!(out, "{}:{}", b.addr.port(), b.mapping.remote);
        if b.mapping.protocol == Protocol::Udp {
            out.push_str("/udp");
        }
    }
    out
}

/// The `--ports-file` content: one object per bound socket, in stdout's order.
fn ports_json(plan: &ForwardPlan, bound: &[Bound]) -> String {
    let mut s = String::from("{\n  \"version\": 1,\n  \"target\": ");
    push_json_string(&mut s, &plan.host.to_string());
    s.push_str(",\n  \"forwards\": [");
    for (i, b) in bound.iter().enumerate() {
        s.push_str(if i == 0 { "\n    " } else { ",\n    " });
        let _ = write!(
            s,
            "{{\"protocol\": \"{}\", \"address\": \"{}\", \"local_port\": {}, \
             \"remote_port\": {}, \"spec\": ",
            b.mapping.protocol,
            b.addr.ip(),
            b.addr.port(),
            b.mapping.remote,
        );
        push_json_string(&mut s, plan.specs[b.spec].token());
        s.push('}');
    }
    s.push_str(if bound.is_empty() {
        "]\n}\n"
    } else {
        "\n  ]\n}\n"
    });
    s
}

/// Appends `value` as a JSON string.
fn push_json_string(s: &mut String, value: &str) {
    s.push('"');
    for c in value.chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            '\n' => s.push_str("\\n"),
            '\r' => s.push_str("\\r"),
            '\t' => s.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(s, "\\u{:04x}", u32::from(c));
            }
            c => s.push(c),
        }
    }
    s.push('"');
}

/// Writes `content` to a temporary file beside `path`, then renames it to `path`, so a
/// reader sees the whole file or none.
///
/// The temporary file has a random name and is created with `O_CREAT | O_EXCL`, which
/// never follows a symlink: a name anyone could guess (such as one made of the process
/// id) would let whoever can write to the directory plant a link there and have proxy
/// overwrite the link's target.
fn write_atomically(path: &Path, content: &str) -> io::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a file name"))?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut prefix = OsString::from(".");
    prefix.push(name);
    prefix.push(".");
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix).suffix(".tmp");
    // Readable by others, as a file created with `File::create` is (the umask applies).
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
    // Removed on drop when anything below fails.
    let mut tmp = builder.tempfile_in(dir)?;
    tmp.write_all(content.as_bytes())?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Removes `path`; a missing file is fine.
fn remove_file(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

// ===== SharedLookups =====

/// A resolver in front of another that shares each answer among the forwarders of one
/// `proxy forward`: every mapping has a forwarder with a cache of its own, all for the same
/// name, so a range of ports would otherwise look the name up once per port and address,
/// at start and at every refresh. Concurrent lookups of a name wait for one, and an
/// answer is reused for [`SHARED_ANSWER`].
struct SharedLookups {
    inner: Arc<dyn Resolve>,
    names: Arc<Mutex<HashMap<String, Lookup>>>,
}

type Answer = Result<Resolution, (io::ErrorKind, String)>;

#[derive(Clone)]
enum Lookup {
    Running(watch::Receiver<Option<Answer>>),
    Done(Instant, Answer),
}

impl SharedLookups {
    fn new(inner: Arc<dyn Resolve>) -> Self {
        SharedLookups {
            inner,
            names: Arc::default(),
        }
    }
}

impl Resolve for SharedLookups {
    fn resolve(&self, name: &str) -> Resolving {
        let mut names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        let mut waiting = match names.get(name) {
            Some(Lookup::Done(at, answer)) if at.elapsed() < SHARED_ANSWER => {
                let answer = answer.clone();
                return Box::pin(async move { answer.map_err(|(k, m)| io::Error::new(k, m)) });
            }
            Some(Lookup::Running(rx)) => rx.clone(),
            _ => {
                let (tx, rx) = watch::channel(None);
                names.insert(name.to_owned(), Lookup::Running(rx.clone()));
                // In a task of its own, so the lookup finishes for the others when the
                // forwarder that started it stops waiting.
                let lookup = self.inner.resolve(name);
                let (all, key) = (self.names.clone(), name.to_owned());
                tokio::spawn(async move {
                    let answer = lookup.await.map_err(|e| (e.kind(), e.to_string()));
                    all.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(key, Lookup::Done(Instant::now(), answer.clone()));
                    let _ = tx.send(Some(answer));
                });
                rx
            }
        };
        drop(names);
        Box::pin(async move {
            let answer = waiting
                .wait_for(Option::is_some)
                .await
                .map_err(|_| io::Error::other("the shared lookup ended without an answer"))?
                .clone();
            answer
                .unwrap_or_else(|| Err((io::ErrorKind::Other, "no answer".into())))
                .map_err(|(k, m)| io::Error::new(k, m))
        })
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv6Addr};

    use proxy_core::Host;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use clap::Parser;

    use super::*;
    use crate::args::{Cli, Command};

    fn parse(args: &[&str]) -> Result<ForwardArgs, clap::Error> {
        let all = ["proxy", "forward"].into_iter().chain(args.iter().copied());
        match Cli::try_parse_from(all)?.command {
            Command::Forward(f) => Ok(f),
            other => panic!("{other:?}"),
        }
    }

    fn pairs(spec: &str) -> Vec<(u16, u16)> {
        parse_spec(spec)
            .unwrap()
            .mappings()
            .map(|m| (m.local, m.remote))
            .collect()
    }

    #[test]
    fn spec_grammar() {
        assert_eq!(pairs("8080:80"), [(8080, 80)]);
        assert_eq!(pairs("5000"), [(5000, 5000)]);
        assert_eq!(pairs(":5000"), [(0, 5000)]);
        assert_eq!(pairs("0:5000"), [(0, 5000)]);
        assert_eq!(pairs("65535:1"), [(65535, 1)]);
        assert_eq!(
            pairs("8000-8002:9000-9002"),
            [(8000, 9000), (8001, 9001), (8002, 9002)]
        );
        assert_eq!(pairs("8000-8001"), [(8000, 8000), (8001, 8001)]);
        assert_eq!(pairs(":9000-9001"), [(0, 9000), (0, 9001)]);
        assert_eq!(pairs("7-7:9"), [(7, 9)]);
        assert_eq!(pairs("65534-65535"), [(65534, 65534), (65535, 65535)]);
        assert_eq!(pairs("080:0080"), [(80, 80)]);
        assert_eq!(parse_spec("53").unwrap().protocol(), Protocol::Tcp);
        assert_eq!(parse_spec("53/tcp").unwrap().protocol(), Protocol::Tcp);
        let udp = parse_spec("5353:53/udp").unwrap();
        assert_eq!(udp.protocol(), Protocol::Udp);
        assert_eq!(udp.token(), "5353:53/udp");
        assert_eq!(pairs("5353:53/udp"), [(5353, 53)]);
    }

    #[test]
    fn bad_specs_say_why() {
        let bad = [
            ("", "no port"),
            ("/udp", "no port"),
            ("0", "remote port 0"),
            ("8080:0", "remote port 0"),
            (":0", "remote port 0"),
            ("0-5", "a range starting at 0"),
            ("1-5:0-4", "a range starting at 0"),
            ("0-4:1-5", "a local range cannot start at 0"),
            ("10-5", "`10-5` is a reversed range"),
            ("10-5:1-6", "`10-5` is a reversed range"),
            ("1-3:10-5", "`10-5` is a reversed range"),
            ("1-3:4", "the local side has 3 ports and the remote side 1"),
            ("1:4-6", "the local side has 1 port and the remote side 3"),
            ("65536", "`65536` is larger than 65535"),
            ("80:99999", "`99999` is larger than 65535"),
            ("http", "`http` is not a port number"),
            ("+80", "`+80` is not a port number"),
            ("-80", "a port is missing"),
            ("80-", "a port is missing"),
            ("80:", "a port is missing"),
            ("1:2:3", "`2:3` is not a port number"),
            ("1-2-3", "`2-3` is not a port number"),
            (" 80", "` 80` is not a port number"),
            ("80/sctp", "unknown protocol `sctp`"),
            ("80/UDP", "unknown protocol `UDP`"),
            ("80/udp/tcp", "`80/udp` is not a port number"),
        ];
        for (spec, want) in bad {
            let e = parse_spec(spec).unwrap_err();
            assert!(e.contains(want), "{spec:?}: {e:?} lacks {want:?}");
        }
    }

    #[test]
    fn targets_and_addresses() {
        assert_eq!(
            parse_target("db.internal"),
            Ok(Host::Name("db.internal".into()))
        );
        let v6 = Host::Ip("::1".parse().unwrap());
        assert_eq!(parse_target("::1"), Ok(v6.clone()));
        assert_eq!(parse_target("[::1]"), Ok(v6));
        assert_eq!(
            parse_target("10.0.0.5"),
            Ok(Host::Ip("10.0.0.5".parse().unwrap()))
        );
        for (bad, want) in [
            ("db:5432", "`db:5432` has a port (5432)"),
            ("[::1]:80", "`[::1]:80` has a port (80)"),
            ("", "empty"),
            ("bad_name!", "bad_name!"),
        ] {
            let e = parse_target(bad).unwrap_err();
            assert!(e.contains(want), "{bad:?}: {e}");
        }
        assert_eq!(parse_address("localhost"), Ok(AddressArg::Localhost));
        assert_eq!(parse_address("LocalHost"), Ok(AddressArg::Localhost));
        let v6: IpAddr = "::1".parse().unwrap();
        assert_eq!(parse_address("[::1]"), Ok(AddressArg::Ip(v6)));
        assert_eq!(parse_address("::1"), Ok(AddressArg::Ip(v6)));
        for bad in ["", "example.com", "127.0.0.1:80", "[::1"] {
            assert!(parse_address(bad).is_err(), "{bad:?}");
        }
        assert!(parse_address("").unwrap_err().contains("an empty address"));
    }

    #[test]
    fn addresses_default_dedupe_and_keep_order() {
        let v4 = BindAddr {
            ip: std::net::Ipv4Addr::LOCALHOST.into(),
            optional: true,
        };
        let v6 = BindAddr {
            ip: Ipv6Addr::LOCALHOST.into(),
            optional: true,
        };
        let plan = |args: &[&str]| parse(args).unwrap().plan().unwrap();
        assert_eq!(plan(&["db", "80"]).addresses, [v4, v6]);
        // Comma-separated and repeated; a duplicate counts once; an IP named on its own
        // must be bound even when `localhost` names it too.
        let p = plan(&[
            "db",
            "80",
            "--address",
            "10.0.0.1,localhost",
            "--address",
            "::1,10.0.0.1",
        ]);
        assert_eq!(
            p.addresses,
            [
                BindAddr {
                    ip: "10.0.0.1".parse().unwrap(),
                    optional: false
                },
                v4,
                BindAddr {
                    optional: false,
                    ..v6
                },
            ]
        );
        assert_eq!(plan(&["db", "80", "--address", "[::]"]).addresses.len(), 1);
    }

    #[test]
    fn plan_reads_the_command_line() {
        let args = parse(&[
            "db.internal",
            "8080:80",
            ":5000",
            "53/udp",
            "--ports-file",
            "p.json",
            "--idle-timeout",
            "5m",
            "--connect-timeout",
            "2s",
            "--max-sessions",
            "9",
            "--drain",
            "1s",
            "--resolver",
            "hickory",
            "--",
            "sh",
            "-c",
            "exit 3",
        ])
        .unwrap();
        let plan = args.plan().unwrap();
        assert_eq!(plan.host, Host::Name("db.internal".into()));
        assert_eq!(plan.specs.len(), 3);
        assert_eq!(plan.ports_file.as_deref(), Some(Path::new("p.json")));
        assert_eq!(plan.command, ["sh", "-c", "exit 3"]);
        let s = &plan.settings;
        assert_eq!(s.idle_timeout, Some(Duration::from_secs(300)));
        assert_eq!(s.connect_timeout, Duration::from_secs(2));
        assert_eq!(s.udp_idle_timeout, Some(Duration::from_secs(300)));
        assert_eq!(s.max_sessions, 9);
        assert_eq!(plan.drain, Duration::from_secs(1));
        assert_eq!(s.resolver, proxy_core::resolve::ResolverKind::Hickory);
        // Defaults: no TCP idle timeout, UDP sessions end after 30 s.
        let plan = parse(&["db", "80"]).unwrap().plan().unwrap();
        assert_eq!(plan.settings.idle_timeout, None);
        assert_eq!(
            plan.settings.udp_idle_timeout,
            Some(Duration::from_secs(30))
        );
        assert!(plan.command.is_empty() && plan.ports_file.is_none());
        // SPEC is required; `--` alone takes no SPEC.
        assert!(parse(&["db"]).is_err());
        assert!(parse(&["db", "--", "80"]).is_err());
    }

    #[test]
    fn local_ports_are_checked_per_protocol() {
        let plan = |args: &[&str]| parse(args).unwrap().plan();
        assert!(plan(&["db", "53", "53/udp", ":80", ":80", "0:80/udp"]).is_ok());
        let e = plan(&["db", "8080:80", "8080:81"]).unwrap_err().0;
        assert!(
            e.contains("local port 8080/tcp is used by both '8080:80' and '8080:81'"),
            "{e}"
        );
        let e = plan(&["db", "5000-5002", "5002:80"]).unwrap_err().0;
        assert!(
            e.contains("5002/tcp") && e.contains("'5000-5002' and '5002:80'"),
            "{e}"
        );
        let e = plan(&["db", "53/udp", "53:54/udp"]).unwrap_err().0;
        assert!(e.contains("53/udp"), "{e}");
        let e = plan(&["db", "53", "53"]).unwrap_err().0;
        assert!(e.contains("used twice in '53'"), "{e}");
        let e = plan(&["db", "53", "--listen", "[::1]:53"]).unwrap_err().0;
        assert!(
            e.contains("`--listen [::1]:53`") && e.contains("--address"),
            "{e}"
        );
    }

    #[test]
    fn json_strings_are_escaped() {
        let mut s = String::new();
        push_json_string(&mut s, "a\"b\\c\nd\u{1}é");
        assert_eq!(s, r#""a\"b\\c\nd\u0001é""#);
        let back: String = serde_json::from_str(&s).unwrap();
        assert_eq!(back, "a\"b\\c\nd\u{1}é");
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temporary() {
        let dir = std::env::temp_dir().join(format!("proxy-forward-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("ports.json");
        write_atomically(&file, "one").unwrap();
        write_atomically(&file, "two").unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "two");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        remove_file(&file).unwrap();
        remove_file(&file).unwrap(); // a missing file is fine
        std::fs::remove_dir(&dir).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn exit_codes_of_statuses() {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(exit_code_of(ExitStatus::from_raw(7 << 8)), 7);
        assert_eq!(exit_code_of(ExitStatus::from_raw(0)), 0);
        assert_eq!(exit_code_of(ExitStatus::from_raw(9)), 137); // SIGKILL
        assert_eq!(exit_code_of(ExitStatus::from_raw(15)), 143); // SIGTERM
        let e = anyhow::Error::from(CommandExit { code: 7 });
        assert_eq!(command_exit_code(&e), Some(ExitCode::from(7)));
        assert_eq!(command_exit_code(&anyhow::anyhow!("other")), None);
    }

    /// Counts lookups and answers after `gate` opens.
    struct Counting {
        lookups: Arc<AtomicUsize>,
        gate: watch::Receiver<bool>,
    }

    impl Resolve for Counting {
        fn resolve(&self, name: &str) -> Resolving {
            self.lookups.fetch_add(1, Ordering::SeqCst);
            let mut gate = self.gate.clone();
            let fail = name == "fails";
            Box::pin(async move {
                let _ = gate.wait_for(|open| *open).await;
                if fail {
                    return Err(io::Error::new(io::ErrorKind::NotFound, "no such name"));
                }
                Ok(Resolution::new(vec![IpAddr::from([10, 0, 0, 1])], None))
            })
        }
    }

    #[tokio::test]
    async fn shared_lookups_ask_once_per_name() {
        let lookups = Arc::new(AtomicUsize::new(0));
        let (open, gate) = watch::channel(false);
        let shared = SharedLookups::new(Arc::new(Counting {
            lookups: lookups.clone(),
            gate,
        }));
        // Ten at once: one lookup, ten answers.
        let waiting: Vec<_> = (0..10).map(|_| shared.resolve("db")).collect();
        let other = shared.resolve("fails");
        open.send(true).unwrap();
        for answer in futures_join(waiting).await {
            assert_eq!(answer.unwrap().addrs(), [IpAddr::from([10, 0, 0, 1])]);
        }
        let e = other.await.unwrap_err();
        assert_eq!(
            (e.kind(), e.to_string()),
            (io::ErrorKind::NotFound, "no such name".into())
        );
        assert_eq!(lookups.load(Ordering::SeqCst), 2);
        // Just after: the same answer, no new lookup.
        assert!(shared.resolve("db").await.is_ok());
        assert_eq!(lookups.load(Ordering::SeqCst), 2);
    }

    async fn futures_join(all: Vec<Resolving>) -> Vec<io::Result<Resolution>> {
        let mut out = Vec::new();
        for f in all {
            out.push(f.await);
        }
        out
    }
}
