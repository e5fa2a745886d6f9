//! Command-line arguments: the clap types, the value parsers, and the conversion into
//! `proxy_core` settings.
//!
//! Parsing happens in two steps. Clap's value parsers check every token on its own and
//! name it when it is bad (`invalid value '5x' for '[IDLE_TIMEOUT_SECONDS]': ...`); then
//! [`TcpArgs::plan`] checks the tokens together (a TARGET without a port needs a non-zero
//! PORT) and produces a [`TcpPlan`], from which [`TcpPlan::builder`] makes a
//! [`TcpForwarderBuilder`]. Both steps fail with exit code 2.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use proxy_core::resolve::{CachePolicy, Resolve};
use proxy_core::{Host, RelayMode, Target, TcpForwarder, TcpForwarderBuilder, Timeouts};

const ABOUT: &str = "TCP forwarding proxy: a drop-in for Kubernetes' proxy-to-service";

const LONG_ABOUT: &str = "\
TCP forwarding proxy: a drop-in for Kubernetes' proxy-to-service.

`proxy tcp PORT TARGET [IDLE_TIMEOUT_SECONDS]` takes the arguments of the old
proxy-to-service:v2 image (PROTO PORT SERVICE [IDLE_TIMEOUT_SECONDS]), so a Pod spec
that ran `proxy-to-service tcp 53 kube-dns.default` runs `proxy tcp 53 kube-dns.default`.

Logs go to stderr; set the level with --log-level or RUST_LOG. SIGINT and SIGTERM stop
accepting, let open connections finish for the --drain time, and exit 0.

Exit codes: 0 after a clean shutdown, 1 when the proxy cannot run (a listen address
cannot be bound, ...), 2 for bad arguments.";

const TCP_LONG_ABOUT: &str = "\
Forward TCP connections from PORT to TARGET.

Compatible with the arguments of Kubernetes' proxy-to-service:v2 image: PORT, then
the service, then an optional idle timeout in seconds. Without --listen, the proxy
listens on all addresses: one dual-stack [::]:PORT socket, or 0.0.0.0:PORT where
IPv6 is not available.

Every duration takes a unit: 500ms, 30s, 5m, 1h; a bare number means seconds.";

const TCP_EXAMPLES: &str = "\
Examples:
  proxy tcp 53 kube-dns.default          forward port 53 to kube-dns.default:53
  proxy tcp 8080 web.default:80 600      close connections idle for 600 s
  proxy tcp 0 db:5432 --listen 127.0.0.1 a free port on 127.0.0.1 (logged at start)
  proxy tcp 8080 [::1]:80 --listen ::1 --listen 127.0.0.1:9090";

/// The `proxy` command line.
#[derive(Debug, Parser)]
#[command(name = "proxy", version, about = ABOUT, long_about = LONG_ABOUT)]
pub struct Cli {
    /// The log level; RUST_LOG overrides it when set.
    #[arg(
        long,
        global = true,
        value_enum,
        value_name = "LEVEL",
        default_value_t = LogLevel::Info
    )]
    pub log_level: LogLevel,

    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Forward TCP: `proxy tcp PORT TARGET [IDLE_TIMEOUT_SECONDS]` (proxy-to-service args).
    #[command(long_about = TCP_LONG_ABOUT, after_help = TCP_EXAMPLES)]
    Tcp(TcpArgs),
}

/// `proxy tcp PORT TARGET [IDLE_TIMEOUT_SECONDS]` and its flags.
#[derive(Debug, Args)]
pub struct TcpArgs {
    /// The port to listen on; 0 lets the kernel choose a free port (the "Forwarding from"
    /// log line shows it).
    #[arg(value_name = "PORT", value_parser = parse_listen_port)]
    pub port: u16,

    /// Where to forward to: `HOST[:PORT]`, `IPv4[:PORT]` or `[IPv6][:PORT]`. Without a
    /// port, PORT is used (`kube-dns.default` on port 53 means `kube-dns.default:53`).
    #[arg(value_name = "TARGET", value_parser = parse_target)]
    pub target: TargetArg,

    /// Close a connection after this long without traffic in either direction (seconds,
    /// or a duration such as 500ms or 10m). 0 or absent means no idle timeout.
    #[arg(
        value_name = "IDLE_TIMEOUT_SECONDS",
        value_parser = parse_duration,
        allow_negative_numbers = true,
        conflicts_with = "idle_timeout"
    )]
    pub idle_timeout_seconds: Option<Duration>,

    /// Flags shared with other forwarding subcommands.
    #[command(flatten)]
    pub common: CommonArgs,

    /// TCP-only flags.
    #[command(flatten)]
    pub tcp: TcpFlags,
}

/// Flags every forwarding subcommand takes (flattened into each with `#[command(flatten)]`).
#[derive(Debug, Args)]
#[command(next_help_heading = "Forwarding options")]
pub struct CommonArgs {
    /// Listen only on ADDR: an IP address (`127.0.0.1`, `::1`, `[::1]`) on PORT, or a
    /// socket address (`127.0.0.1:9000`, `[::1]:9000`). Repeat it for several addresses.
    /// Default: every address (`[::]:PORT`, or `0.0.0.0:PORT` without IPv6).
    #[arg(long, value_name = "ADDR", value_parser = parse_listen)]
    pub listen: Vec<ListenArg>,

    /// Close a connection after this long without traffic in either direction; the same
    /// as IDLE_TIMEOUT_SECONDS. 0 means no idle timeout (the default).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, allow_hyphen_values = true)]
    pub idle_timeout: Option<Duration>,

    /// How to resolve a TARGET host name: `system` uses the C library (/etc/hosts,
    /// resolv.conf search and ndots, as a Pod's libc does); `hickory` asks the name
    /// servers of /etc/resolv.conf itself and follows record TTLs.
    #[arg(long, value_enum, value_name = "RESOLVER", default_value_t = ResolverArg::System)]
    pub resolver: ResolverArg,

    /// Look TARGET up again at this interval, whatever the TTL says. Default: follow the
    /// TTL (the system resolver gives none; its answers are kept 30 s).
    #[arg(long, value_name = "DURATION", value_parser = parse_nonzero_duration, allow_hyphen_values = true)]
    pub dns_refresh: Option<Duration>,

    /// Set SO_REUSEPORT on the listeners, so several processes can share the port.
    #[arg(long)]
    pub reuse_port: bool,

    /// On SIGINT or SIGTERM, stop accepting and let open connections finish for this
    /// long before closing them. A second signal closes them at once.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "10s", allow_hyphen_values = true)]
    pub drain: Duration,
}

/// Flags of `proxy tcp` only.
#[derive(Debug, Args)]
#[command(next_help_heading = "TCP options")]
pub struct TcpFlags {
    /// Give up one connect attempt to one upstream address after this long. [default: 5s]
    #[arg(long, value_name = "DURATION", value_parser = parse_nonzero_duration, allow_hyphen_values = true)]
    pub connect_timeout: Option<Duration>,

    /// Give up connecting (all attempts, across the resolved addresses) after this long.
    /// [default: 15s, or --connect-timeout when that is longer]
    #[arg(long, value_name = "DURATION", value_parser = parse_nonzero_duration, allow_hyphen_values = true)]
    pub connect_total_timeout: Option<Duration>,

    /// Once one direction has ended (a FIN was forwarded), close the connection if the
    /// other has not ended after this long. 0 disables it. [default: 60s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, allow_hyphen_values = true)]
    pub half_close_timeout: Option<Duration>,

    /// Close every connection at this age, busy or not. 0 (the default) disables it.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, allow_hyphen_values = true)]
    pub max_lifetime: Option<Duration>,

    /// The listen backlog (the kernel caps it at net.core.somaxconn). [default: 1024]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub backlog: Option<u32>,

    /// The size of each splice pipe: bytes, or with a K, M or G suffix (binary), from 4K
    /// to 1G. [default: 64K]
    #[arg(long, value_name = "BYTES", value_parser = parse_size)]
    pub pipe_size: Option<usize>,

    /// How bytes are relayed: `auto` uses splice(2) on Linux (no copy to user space),
    /// `copy` always copies through user-space buffers.
    #[arg(long, value_enum, value_name = "MODE", default_value_t = RelayArg::Auto)]
    pub relay: RelayArg,
}

/// `--log-level`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogLevel {
    /// Only errors.
    Error,
    /// Errors and warnings (accept failures, unreachable upstreams).
    Warn,
    /// Also the listen addresses and shutdown progress.
    Info,
    /// Also every connection.
    Debug,
    /// Everything.
    Trace,
}

/// `--resolver`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ResolverArg {
    /// The C library's getaddrinfo.
    System,
    /// hickory-resolver configured from /etc/resolv.conf, TTL-aware.
    Hickory,
}

/// `--relay`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RelayArg {
    /// splice(2) on Linux, copying elsewhere.
    Auto,
    /// Always copy.
    Copy,
}

/// A parsed TARGET: complete, or a host that takes its port from PORT.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetArg {
    /// `host:port`, `a.b.c.d:port` or `[v6]:port`.
    Full(Target),
    /// A host without a port (`kube-dns.default`, `10.0.0.1`, `::1`, `[::1]`).
    HostOnly(Host),
}

/// A parsed `--listen` value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListenArg {
    /// An IP address, listening on PORT.
    Ip(IpAddr),
    /// A full socket address; its port overrides PORT.
    Socket(SocketAddr),
}

/// Where `proxy tcp` listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Listen {
    /// Every address on this port: `[::]:port`, dual-stack, or `0.0.0.0:port` when IPv6 is
    /// not available.
    Any(u16),
    /// Exactly these addresses.
    Addrs(Vec<SocketAddr>),
}

/// The checked settings of `proxy tcp`.
#[derive(Clone, Debug)]
pub struct TcpPlan {
    /// Where to listen.
    pub listen: Listen,
    /// Where to forward to.
    pub target: Target,
    /// The connection timers.
    pub timeouts: Timeouts,
    /// How long resolved answers are used.
    pub cache: CachePolicy,
    /// Which resolver looks up a host-name target.
    pub resolver: ResolverArg,
    /// Whether the listeners set SO_REUSEPORT.
    pub reuse_port: bool,
    /// The listen backlog, when not the default.
    pub backlog: Option<u32>,
    /// The splice pipe size, when not the default.
    pub pipe_size: Option<usize>,
    /// How bytes are relayed.
    pub relay: RelayMode,
    /// How long open connections may finish after SIGINT or SIGTERM.
    pub drain: Duration,
}

/// Arguments that are wrong together; the message names the tokens. Exit code 2.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageError(pub String);

// ===== impl Cli =====

impl Cli {
    /// The `tracing` filter directive for `--log-level`.
    pub fn log_filter(&self) -> &'static str {
        match self.log_level {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

// ===== impl TcpArgs =====

impl TcpArgs {
    /// Checks the arguments together and converts them into a [`TcpPlan`].
    ///
    /// # Errors
    ///
    /// A [`UsageError`] when TARGET has no port and PORT is 0.
    pub fn plan(&self) -> Result<TcpPlan, UsageError> {
        let target = match &self.target {
            TargetArg::Full(t) => t.clone(),
            TargetArg::HostOnly(host) if self.port == 0 => {
                let shown = match host {
                    Host::Ip(IpAddr::V6(ip)) => format!("[{ip}]"),
                    other => other.to_string(),
                };
                return Err(UsageError(format!(
                    "TARGET '{shown}' has no port and PORT is 0, so there is no upstream port; \
                     write TARGET as '{shown}:PORT'"
                )));
            }
            TargetArg::HostOnly(host) => Target::new(host.clone(), self.port),
        };

        let listen = if self.common.listen.is_empty() {
            Listen::Any(self.port)
        } else {
            Listen::Addrs(
                self.common
                    .listen
                    .iter()
                    .map(|l| match *l {
                        ListenArg::Ip(ip) => SocketAddr::new(ip, self.port),
                        ListenArg::Socket(addr) => addr,
                    })
                    .collect(),
            )
        };

        let mut timeouts = Timeouts::default();
        let t = &self.tcp;
        if let Some(connect) = t.connect_timeout {
            timeouts.connect = connect;
            // A longer attempt than the default budget raises the budget, unless the budget
            // was given too (then `build()` reports the conflict).
            timeouts.connect_total = timeouts.connect_total.max(connect);
        }
        if let Some(total) = t.connect_total_timeout {
            timeouts.connect_total = total;
        }
        let idle = self.idle_timeout_seconds.or(self.common.idle_timeout);
        timeouts.idle = idle.filter(|d| !d.is_zero());
        if let Some(half_close) = t.half_close_timeout {
            timeouts.half_close = Some(half_close).filter(|d| !d.is_zero());
        }
        timeouts.max_lifetime = t.max_lifetime.filter(|d| !d.is_zero());

        let mut cache = CachePolicy::default();
        cache.refresh = self.common.dns_refresh;

        Ok(TcpPlan {
            listen,
            target,
            timeouts,
            cache,
            resolver: self.common.resolver,
            reuse_port: self.common.reuse_port,
            backlog: t.backlog,
            pipe_size: t.pipe_size,
            relay: match t.relay {
                RelayArg::Auto => RelayMode::Auto,
                RelayArg::Copy => RelayMode::Copy,
            },
            drain: self.common.drain,
        })
    }
}

// ===== impl TcpPlan =====

impl TcpPlan {
    /// A forwarder builder for these settings, listening on `listen` and resolving through
    /// `resolver`. Call `build()` on it to validate the settings.
    pub fn builder(
        &self,
        listen: Vec<SocketAddr>,
        resolver: Arc<dyn Resolve>,
    ) -> TcpForwarderBuilder {
        let mut b = TcpForwarder::builder(listen, self.target.clone())
            .shared_resolver(resolver)
            .cache(self.cache)
            .timeouts(self.timeouts)
            .reuse_port(self.reuse_port)
            .relay(self.relay);
        if let Some(backlog) = self.backlog {
            b = b.backlog(backlog);
        }
        if let Some(pipe_size) = self.pipe_size {
            b = b.pipe_size(pipe_size);
        }
        b
    }
}

// ===== impl Listen =====

impl Listen {
    /// The addresses to bind first.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        match self {
            Listen::Any(port) => vec![SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), *port)],
            Listen::Addrs(addrs) => addrs.clone(),
        }
    }

    /// The IPv4 addresses to bind instead when binding [`addrs`](Listen::addrs) failed
    /// because IPv6 is not available; `None` when there is no such fallback.
    pub fn ipv4_fallback(&self) -> Option<Vec<SocketAddr>> {
        match self {
            Listen::Any(port) => Some(vec![SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), *port)]),
            Listen::Addrs(_) => None,
        }
    }
}

// ===== impl UsageError =====

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

// ===== value parsers =====

/// Parses a duration: a whole number followed by `ms`, `s`, `m` or `h`, or a bare number
/// of seconds (`500ms`, `30s`, `5m`, `1h`, `600`).
///
/// # Errors
///
/// A message naming the bad token: an empty value, a negative number, a missing number,
/// an unknown unit, or a value too large for a [`Duration`].
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use proxy_cli::args::parse_duration;
///
/// assert_eq!(parse_duration("600"), Ok(Duration::from_secs(600)));
/// assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
/// assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
/// assert!(parse_duration("5x").unwrap_err().contains("`x`"));
/// ```
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    const UNITS: &str = "use ms, s, m or h, e.g. 500ms, 30s, 5m, 1h; a bare number means seconds";
    if s.is_empty() {
        return Err(format!("empty duration; {UNITS}"));
    }
    if s.starts_with('-') {
        return Err(format!("`{s}` is negative; durations must be 0 or more"));
    }
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    if number.is_empty() {
        return Err(format!("`{s}` does not start with a number; {UNITS}"));
    }
    let too_large = || format!("`{s}` is too large for a duration");
    let n: u64 = number.parse().map_err(|_| too_large())?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "" | "s" => Ok(Duration::from_secs(n)),
        "m" => n
            .checked_mul(60)
            .map(Duration::from_secs)
            .ok_or_else(too_large),
        "h" => n
            .checked_mul(3600)
            .map(Duration::from_secs)
            .ok_or_else(too_large),
        _ => Err(format!("unknown unit `{unit}` in `{s}`; {UNITS}")),
    }
}

/// [`parse_duration`], rejecting zero.
fn parse_nonzero_duration(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d.is_zero() {
        return Err(format!(
            "`{s}` is zero; this duration must be greater than 0"
        ));
    }
    Ok(d)
}

/// Parses PORT: 0 to 65535, where 0 asks the kernel for a free port.
fn parse_listen_port(s: &str) -> Result<u16, String> {
    match s.parse::<u16>() {
        Ok(port) if !s.starts_with('+') => Ok(port),
        _ => Err(format!(
            "`{s}` is not a port number (0-65535; 0 picks a free port)"
        )),
    }
}

/// Parses TARGET, with or without a port.
fn parse_target(s: &str) -> Result<TargetArg, String> {
    if let Ok(t) = s.parse::<Target>() {
        return Ok(TargetArg::Full(t));
    }
    // The port is a placeholder: only whether `s` parses without one matters here.
    Target::parse_with_default_port(s, 1)
        .map(|t| TargetArg::HostOnly(t.host().clone()))
        .map_err(|e| e.to_string())
}

/// Parses a `--listen` value.
fn parse_listen(s: &str) -> Result<ListenArg, String> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(ListenArg::Socket(addr));
    }
    let bare = s
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .unwrap_or(s);
    bare.parse::<IpAddr>().map(ListenArg::Ip).map_err(|_| {
        format!(
            "`{s}` is not an IP address (127.0.0.1, ::1, [::1]) or a socket address \
             (127.0.0.1:9000, [::1]:9000)"
        )
    })
}

/// Parses a byte count with an optional binary `K`, `M` or `G` suffix.
fn parse_size(s: &str) -> Result<usize, String> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    let bad = || format!("`{s}` is not a size; write bytes, or a number with K, M or G");
    if number.is_empty() {
        return Err(bad());
    }
    let shift = match suffix {
        "" => 0,
        "K" | "k" | "KiB" => 10,
        "M" | "m" | "MiB" => 20,
        "G" | "g" | "GiB" => 30,
        _ => return Err(bad()),
    };
    let n: usize = number.parse().map_err(|_| format!("`{s}` is too large"))?;
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("`{s}` is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("proxy").chain(args.iter().copied()))
    }

    fn tcp(args: &[&str]) -> TcpArgs {
        let mut all = vec!["tcp"];
        all.extend_from_slice(args);
        match parse(&all).unwrap().command {
            Command::Tcp(t) => t,
        }
    }

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations() {
        let ok = [
            ("0", Duration::ZERO),
            ("600", Duration::from_secs(600)),
            ("30s", Duration::from_secs(30)),
            ("500ms", Duration::from_millis(500)),
            ("0ms", Duration::ZERO),
            ("5m", Duration::from_secs(300)),
            ("1h", Duration::from_secs(3600)),
            ("007", Duration::from_secs(7)),
            ("18446744073709551615", Duration::from_secs(u64::MAX)),
        ];
        for (input, want) in ok {
            assert_eq!(parse_duration(input), Ok(want), "{input:?}");
        }
        let bad = [
            ("", "empty duration"),
            ("-1", "`-1` is negative"),
            ("-5s", "`-5s` is negative"),
            ("5x", "unknown unit `x` in `5x`"),
            ("10 s", "unknown unit ` s` in `10 s`"),
            ("1.5s", "unknown unit `.5s` in `1.5s`"),
            ("5S", "unknown unit `S`"),
            ("s", "`s` does not start with a number"),
            ("+5", "`+5` does not start with a number"),
            ("abc", "`abc` does not start with a number"),
            (
                "18446744073709551616",
                "`18446744073709551616` is too large",
            ),
            (
                "9999999999999999999h",
                "`9999999999999999999h` is too large",
            ),
            ("307445734561825861m", "`307445734561825861m` is too large"),
        ];
        for (input, want) in bad {
            let e = parse_duration(input).unwrap_err();
            assert!(e.contains(want), "{input:?}: {e:?} lacks {want:?}");
        }
        assert!(
            parse_nonzero_duration("0s")
                .unwrap_err()
                .contains("`0s` is zero")
        );
        assert_eq!(parse_nonzero_duration("1"), Ok(Duration::from_secs(1)));
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("65536"), Ok(65536));
        assert_eq!(parse_size("64K"), Ok(65536));
        assert_eq!(parse_size("1M"), Ok(1 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        for bad in ["", "K", "1T", "-1", "1.5M"] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
        assert!(
            parse_size("99999999999999999999")
                .unwrap_err()
                .contains("too large")
        );
    }

    #[test]
    fn listen_values() {
        let v4: IpAddr = "127.0.0.1".parse().unwrap();
        let v6: IpAddr = "::1".parse().unwrap();
        assert_eq!(parse_listen("127.0.0.1"), Ok(ListenArg::Ip(v4)));
        assert_eq!(parse_listen("::1"), Ok(ListenArg::Ip(v6)));
        assert_eq!(parse_listen("[::1]"), Ok(ListenArg::Ip(v6)));
        assert_eq!(
            parse_listen("[::1]:9000"),
            Ok(ListenArg::Socket("[::1]:9000".parse().unwrap()))
        );
        assert_eq!(
            parse_listen("127.0.0.1:9000"),
            Ok(ListenArg::Socket("127.0.0.1:9000".parse().unwrap()))
        );
        for bad in ["", "localhost", "127.0.0.1:x", "[::1", "1.2.3"] {
            let e = parse_listen(bad).unwrap_err();
            assert!(e.contains(&format!("`{bad}`")), "{bad:?}: {e}");
        }
    }

    #[test]
    fn ports() {
        assert_eq!(parse_listen_port("0"), Ok(0));
        assert_eq!(parse_listen_port("65535"), Ok(65535));
        for bad in ["abc", "-1", "+80", "65536", ""] {
            let e = parse_listen_port(bad).unwrap_err();
            assert!(e.contains(&format!("`{bad}`")), "{bad:?}: {e}");
        }
    }

    #[test]
    fn seed_form_uses_port_for_target() {
        let plan = tcp(&["53", "kube-dns.default"]).plan().unwrap();
        assert_eq!(plan.target.to_string(), "kube-dns.default:53");
        assert_eq!(plan.listen, Listen::Any(53));
        assert_eq!(plan.listen.addrs(), vec!["[::]:53".parse().unwrap()]);
        assert_eq!(
            plan.listen.ipv4_fallback(),
            Some(vec!["0.0.0.0:53".parse().unwrap()])
        );
        assert_eq!(plan.timeouts, Timeouts::default());
        assert_eq!(plan.drain, Duration::from_secs(10));

        let plan = tcp(&["5000", "::1"]).plan().unwrap();
        assert_eq!(plan.target.to_string(), "[::1]:5000");
        let plan = tcp(&["5000", "[::1]"]).plan().unwrap();
        assert_eq!(plan.target.to_string(), "[::1]:5000");
    }

    #[test]
    fn positional_idle_timeout() {
        let plan = tcp(&["8080", "web.default:80", "600"]).plan().unwrap();
        assert_eq!(plan.target.to_string(), "web.default:80");
        assert_eq!(plan.timeouts.idle, Some(Duration::from_secs(600)));
        let plan = tcp(&["8080", "web", "500ms"]).plan().unwrap();
        assert_eq!(plan.timeouts.idle, Some(Duration::from_millis(500)));
        let plan = tcp(&["8080", "web", "0"]).plan().unwrap();
        assert_eq!(plan.timeouts.idle, None);
        let plan = tcp(&["8080", "web", "--idle-timeout", "5m"])
            .plan()
            .unwrap();
        assert_eq!(plan.timeouts.idle, Some(Duration::from_secs(300)));
        let e = parse(&["tcp", "8080", "web", "5", "--idle-timeout", "5m"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::ArgumentConflict);
    }

    #[test]
    fn flags_reach_the_plan() {
        let plan = tcp(&[
            "0",
            "127.0.0.1:80",
            "--listen",
            "127.0.0.1",
            "--listen",
            "[::1]:9000",
            "--connect-timeout",
            "2s",
            "--connect-total-timeout",
            "1m",
            "--half-close-timeout",
            "0",
            "--max-lifetime",
            "1h",
            "--dns-refresh",
            "10s",
            "--reuse-port",
            "--backlog",
            "16",
            "--pipe-size",
            "1M",
            "--relay",
            "copy",
            "--drain",
            "0",
            "--resolver",
            "hickory",
        ])
        .plan()
        .unwrap();
        assert_eq!(
            plan.listen,
            Listen::Addrs(vec![
                "127.0.0.1:0".parse().unwrap(),
                "[::1]:9000".parse().unwrap()
            ])
        );
        assert_eq!(plan.listen.ipv4_fallback(), None);
        assert_eq!(plan.timeouts.connect, Duration::from_secs(2));
        assert_eq!(plan.timeouts.connect_total, Duration::from_secs(60));
        assert_eq!(plan.timeouts.half_close, None);
        assert_eq!(plan.timeouts.max_lifetime, Some(Duration::from_secs(3600)));
        assert_eq!(plan.cache.refresh, Some(Duration::from_secs(10)));
        assert!(plan.reuse_port);
        assert_eq!(plan.backlog, Some(16));
        assert_eq!(plan.pipe_size, Some(1 << 20));
        assert_eq!(plan.relay, RelayMode::Copy);
        assert_eq!(plan.drain, Duration::ZERO);
        assert_eq!(plan.resolver, ResolverArg::Hickory);
    }

    #[test]
    fn long_connect_timeout_raises_the_default_budget() {
        let plan = tcp(&["80", "web", "--connect-timeout", "30s"])
            .plan()
            .unwrap();
        assert_eq!(plan.timeouts.connect_total, Duration::from_secs(30));
        let plan = tcp(&[
            "80",
            "web",
            "--connect-timeout",
            "30s",
            "--connect-total-timeout",
            "10s",
        ])
        .plan()
        .unwrap();
        let resolver: Arc<dyn Resolve> = Arc::new(proxy_core::resolve::SystemResolver::new());
        let e = plan
            .builder(plan.listen.addrs(), resolver)
            .build()
            .unwrap_err();
        assert_eq!(e, proxy_core::BuildError::ConnectTimeoutExceedsTotal);
    }

    #[test]
    fn portless_target_needs_a_port() {
        let e = tcp(&["0", "web"]).plan().unwrap_err();
        assert!(e.0.contains("TARGET 'web' has no port"), "{e}");
        let e = tcp(&["0", "::1"]).plan().unwrap_err();
        assert!(e.0.contains("'[::1]:PORT'"), "{e}");
        assert!(tcp(&["0", "web:80"]).plan().is_ok());
    }

    #[test]
    fn bad_tokens_are_named() {
        let cases: [&[&str]; 8] = [
            &["tcp", "abc", "x"],
            &["tcp", "80", "web:http"],
            &["tcp", "80", "web", "5x"],
            &["tcp", "80", "web", "-1"],
            &["tcp", "80", "web", "--connect-timeout", "-1"],
            &["tcp", "80", "web", "--listen", "nowhere"],
            &["tcp", "80", "web", "--pipe-size", "12T"],
            &["tcp", "80", "web", "--drain", "soon"],
        ];
        for args in cases {
            let e = parse(args).unwrap_err();
            let bad = args.last().unwrap();
            let bad = if *bad == "x" { "abc" } else { bad };
            let msg = e.to_string();
            assert!(msg.contains(&format!("'{bad}'")), "{args:?}: {msg}");
            assert_eq!(e.exit_code(), 2);
        }
        let e = parse(&["tcp", "80", "web", "5x"]).unwrap_err().to_string();
        assert!(
            e.contains("invalid value '5x' for '[IDLE_TIMEOUT_SECONDS]'"),
            "{e}"
        );
    }

    #[test]
    fn log_level_is_global() {
        let cli = parse(&["tcp", "80", "web", "--log-level", "debug"]).unwrap();
        assert_eq!(cli.log_filter(), "debug");
        let cli = parse(&["--log-level", "warn", "tcp", "80", "web"]).unwrap();
        assert_eq!(cli.log_filter(), "warn");
        let cli = parse(&["tcp", "80", "web"]).unwrap();
        assert_eq!(cli.log_filter(), "info");
    }
}
