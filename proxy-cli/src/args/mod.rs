//! Command-line arguments: the clap types, the value parsers, and the conversion into
//! `proxy_core` settings.
//!
//! Parsing happens in two steps. Clap's value parsers check every token on its own and
//! name it when it is bad (`invalid value '5x' for '[IDLE_TIMEOUT_SECONDS]': ...`); then
//! [`TcpArgs::plan`], [`UdpArgs::plan`] and [`TcpUdpArgs::plan`] check the tokens together
//! (a TARGET without a port needs a non-zero PORT) and produce a [`TcpPlan`], a [`UdpPlan`]
//! or both, from which [`TcpPlan::builder`] and [`UdpPlan::builder`] make the forwarder
//! builders. Both steps fail with exit code 2.

pub mod forward;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use proxy_core::resolve::{CachePolicy, Resolve};
use proxy_core::{
    AcceptProxy, Access, Balance, Cidr, Ejection, HealthCheck, Host, Limits, ProxyProtocol, Rate,
    RelayMode, Target, TcpForwarder, TcpForwarderBuilder, Timeouts, UdpForwarder,
    UdpForwarderBuilder,
};

const ABOUT: &str = "TCP/UDP forwarding proxy: a drop-in for Kubernetes' proxy-to-service";

const LONG_ABOUT: &str = "\
TCP/UDP forwarding proxy: a drop-in for Kubernetes' proxy-to-service.

`proxy PROTO PORT TARGET [IDLE_TIMEOUT_SECONDS]`, with PROTO `tcp`, `udp` or `tcp,udp`,
takes the arguments of the old proxy-to-service:v2 image (PROTO PORT SERVICE
[IDLE_TIMEOUT_SECONDS]), so a Pod spec that ran `proxy-to-service udp 53 kube-dns.default 1`
runs `proxy udp 53 kube-dns.default 1`; `proxy tcp,udp 53 kube-dns.default 1` serves both
protocols from one process.

Logs go to stderr; set the level with --log-level or RUST_LOG. SIGINT and SIGTERM stop
accepting, let open connections and UDP sessions finish for the --drain time, and exit 0.

Under systemd socket activation (LISTEN_PID and LISTEN_FDS set for this process), `tcp`,
`udp` and `tcp,udp` forward from the sockets systemd passed instead of binding PORT and
--listen. With NOTIFY_SOCKET set (Type=notify), the proxy sends READY=1 once it listens
and STOPPING=1 when it starts draining. See deploy/systemd/.

Exit codes: 0 after a clean shutdown, 1 when the proxy cannot run (a listen address
cannot be bound, ...), 2 for bad arguments.";

const TCP_LONG_ABOUT: &str = "\
Forward TCP connections from PORT to TARGET.

Compatible with the arguments of Kubernetes' proxy-to-service:v2 image: PORT, then
the service, then an optional idle timeout in seconds. Without --listen, the proxy
listens on all addresses: one dual-stack [::]:PORT socket, or 0.0.0.0:PORT where
IPv6 is not available.

Every duration takes a unit: 500ms, 30s, 5m, 1h; a bare number means seconds; at most
10 years (87600h).";

const TCP_EXAMPLES: &str = "\
Examples:
  proxy tcp 53 kube-dns.default          forward port 53 to kube-dns.default:53
  proxy tcp 8080 web.default:80 600      close connections idle for 600 s
  proxy tcp 0 db:5432 --listen 127.0.0.1 a free port on 127.0.0.1 (logged at start)
  proxy tcp 8080 [::1]:80 --listen ::1 --listen 127.0.0.1:9090";

const UDP_LONG_ABOUT: &str = "\
Forward UDP datagrams from PORT to TARGET.

Compatible with the arguments of Kubernetes' proxy-to-service:v2 image: PORT, then
the service, then an optional idle timeout in seconds. Each client address gets a
session with its own upstream socket, so replies go back to the client that asked.
A session ends after IDLE_TIMEOUT_SECONDS without a datagram in either direction
(default 30 s; 0 means never, and sessions end only when --max-sessions evicts the
least recently used one). Datagrams of up to 65,507 bytes pass intact. On SIGINT or
SIGTERM, client datagrams are no longer read; replies already on their way still reach
their clients until a session has been quiet for 1 s, for up to the --drain time.

Without --listen, the proxy listens on all addresses: one dual-stack [::]:PORT socket,
or 0.0.0.0:PORT where IPv6 is not available.

Every duration takes a unit: 500ms, 30s, 5m, 1h; a bare number means seconds; at most
10 years (87600h).";

const UDP_EXAMPLES: &str = "\
Examples:
  proxy udp 53 kube-dns.default 1        forward port 53 to kube-dns.default:53; sessions end after 1 s idle
  proxy udp 53 kube-dns.default          the same with the default 30 s session idle timeout
  proxy udp 0 127.0.0.1:5353 --listen 127.0.0.1 --max-sessions 1000";

const TCP_UDP_LONG_ABOUT: &str = "\
Forward TCP connections and UDP datagrams from PORT to TARGET, from one process.

`proxy tcp,udp 53 kube-dns.default 1` does what `proxy tcp 53 kube-dns.default 1` and
`proxy udp 53 kube-dns.default 1` do side by side: a DNS proxy for both transports.
`udp,tcp` is the same. The idle timeout applies to TCP connections and UDP sessions;
when absent, TCP connections have none and UDP sessions end after 30 s. The TCP options
apply to TCP only, the UDP options to UDP only.

Both protocols listen on the same addresses and port. With PORT 0, TCP binds first on a
port chosen by the kernel and UDP then binds that same port; if the UDP port is taken,
both try another port (up to 10 times).

Every duration takes a unit: 500ms, 30s, 5m, 1h; a bare number means seconds; at most
10 years (87600h).";

const TCP_UDP_EXAMPLES: &str = "\
Examples:
  proxy tcp,udp 53 kube-dns.default 1    DNS on port 53, TCP and UDP; 1 s idle timeout
  proxy tcp,udp 53 kube-dns.default      no TCP idle timeout; UDP sessions end after 30 s idle
  proxy tcp,udp 0 127.0.0.1:53 --listen 127.0.0.1   a free port for both (logged at start)";

/// The largest `--batch-size`: what `UdpForwarderBuilder::batch_size` accepts.
const MAX_BATCH_SIZE: i64 = 64;

/// `--idle-timeout` as `proxy udp` describes it.
const UDP_IDLE_FLAG_HELP: &str = "End a UDP session after this long without a datagram in \
either direction; the same as IDLE_TIMEOUT_SECONDS. 0 means no idle timeout. [default: 30s]";

/// `--idle-timeout` as `proxy tcp,udp` describes it.
const TCP_UDP_IDLE_FLAG_HELP: &str = "Close a TCP connection or end a UDP session after this \
long without traffic in either direction; the same as IDLE_TIMEOUT_SECONDS. 0 means no idle \
timeout. [default: none for TCP, 30s for UDP]";

/// `proxy --version`: the crate version and the git revision it was built from.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("PROXY_GIT_REVISION"),
    ")"
);

/// The `proxy` command line.
#[derive(Debug, Parser)]
#[command(name = "proxy", version = VERSION, about = ABOUT, long_about = LONG_ABOUT)]
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

    /// How log lines look: `text`, or `json` (one JSON object per line: timestamp,
    /// level, target, fields).
    #[arg(
        long,
        global = true,
        value_enum,
        value_name = "FORMAT",
        default_value_t = LogFormat::Text
    )]
    pub log_format: LogFormat,

    /// Serve /metrics (Prometheus), /healthz and /readyz over HTTP on ADDR, an IP:PORT
    /// such as `127.0.0.1:9090` or `[::]:9090` (port 0: chosen by the kernel, logged at
    /// start). Off by default.
    #[arg(long, global = true, value_name = "ADDR", value_parser = parse_admin)]
    pub admin: Option<SocketAddr>,

    /// Worker threads that move bytes, 1 to 1024; 1 runs everything on one thread, which
    /// saves the hand-offs between threads (a few per cent of request/response latency on a
    /// small machine). `run` also reads `threads` from its file. [default: one per CPU]
    #[arg(long, global = true, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub threads: Option<u16>,

    /// Check the arguments (and, for `run`, the configuration file) and exit: 0 when they
    /// are valid, 2 with a message naming the problem otherwise. Binds nothing, resolves
    /// nothing: for CI and Kubernetes manifests.
    #[arg(long, global = true)]
    pub check: bool,

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

    /// Forward UDP: `proxy udp PORT TARGET [IDLE_TIMEOUT_SECONDS]` (proxy-to-service args).
    #[command(
        long_about = UDP_LONG_ABOUT,
        after_help = UDP_EXAMPLES,
        mut_arg("idle_timeout", |a| a.help(UDP_IDLE_FLAG_HELP))
    )]
    Udp(UdpArgs),

    /// Forward TCP and UDP on the same port: `proxy tcp,udp PORT TARGET
    /// [IDLE_TIMEOUT_SECONDS]`.
    #[command(
        name = "tcp,udp",
        visible_alias = "udp,tcp",
        long_about = TCP_UDP_LONG_ABOUT,
        after_help = TCP_UDP_EXAMPLES,
        mut_arg("idle_timeout", |a| a.help(TCP_UDP_IDLE_FLAG_HELP))
    )]
    TcpUdp(TcpUdpArgs),

    /// Forward local ports to a host, like `kubectl port-forward`: `proxy forward TARGET
    /// SPEC... [-- CMD ARGS...]`.
    #[command(
        long_about = forward::LONG_ABOUT,
        after_help = forward::EXAMPLES,
        mut_arg("idle_timeout", |a| a.help(forward::IDLE_FLAG_HELP)),
        mut_arg("listen", |a| a.hide(true))
    )]
    Forward(forward::ForwardArgs),

    /// Run the forwards of a configuration file; SIGHUP applies its changes:
    /// `proxy run --config FILE`.
    #[command(long_about = RUN_LONG_ABOUT)]
    Run(RunArgs),
}

const RUN_LONG_ABOUT: &str = "\
Run every forward of a TOML configuration file (see examples/proxy.toml): global settings \
(admin address, log format), [defaults] for every forward, and any number of [[forward]] \
tables (name, protocol tcp|udp|tcp,udp, listen, target, and per-forward timeouts).

On SIGHUP the file is read again and applied: new forwards start, removed ones drain, \
changed ones take their new settings; established connections are never dropped (UDP \
sessions on a listen address that is removed end, as they reply from it). A file \
with an error is rejected with a logged error (naming the file, line and key) and the running \
configuration stays. --admin and --log-format on the command line win over the file; both \
apply at start only. SIGINT and SIGTERM drain every forward for the file's drain time.";

/// `proxy run --config FILE`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The TOML configuration file.
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: std::path::PathBuf,
}

/// `proxy tcp PORT TARGET [IDLE_TIMEOUT_SECONDS]` and its flags.
#[derive(Debug, Args)]
pub struct TcpArgs {
    /// The port to listen on; 0 lets the kernel choose a free port (the "Forwarding from"
    /// log line shows it).
    #[arg(value_name = "PORT", value_parser = parse_listen_port)]
    pub port: u16,

    /// Where to forward to: `HOST[:PORT]`, `IPv4[:PORT]`, `[IPv6][:PORT]`, or `srv:NAME`
    /// (its SRV records give hosts, ports and weights; looked up with hickory). Without a
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

/// `proxy udp PORT TARGET [IDLE_TIMEOUT_SECONDS]` and its flags.
#[derive(Debug, Args)]
pub struct UdpArgs {
    /// The port to listen on; 0 lets the kernel choose a free port (the "Forwarding from"
    /// log line shows it).
    #[arg(value_name = "PORT", value_parser = parse_listen_port)]
    pub port: u16,

    /// Where to forward to: `HOST[:PORT]`, `IPv4[:PORT]`, `[IPv6][:PORT]`, or `srv:NAME`
    /// (its SRV records give hosts, ports and weights; looked up with hickory). Without a
    /// port, PORT is used (`kube-dns.default` on port 53 means `kube-dns.default:53`).
    #[arg(value_name = "TARGET", value_parser = parse_target)]
    pub target: TargetArg,

    /// End a session after this long without a datagram in either direction (seconds, or
    /// a duration such as 500ms or 10m). Absent means 30 s; 0 means no idle timeout
    /// (sessions then end only when --max-sessions evicts them).
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

    /// UDP-only flags.
    #[command(flatten)]
    pub udp: UdpFlags,
}

/// `proxy tcp,udp PORT TARGET [IDLE_TIMEOUT_SECONDS]` and its flags.
#[derive(Debug, Args)]
pub struct TcpUdpArgs {
    /// The port to listen on, for TCP and UDP; 0 lets the kernel choose a port free for
    /// both (the "Forwarding from" log lines show it).
    #[arg(value_name = "PORT", value_parser = parse_listen_port)]
    pub port: u16,

    /// Where to forward to: `HOST[:PORT]`, `IPv4[:PORT]`, `[IPv6][:PORT]`, or `srv:NAME`
    /// (its SRV records give hosts, ports and weights; looked up with hickory). Without a
    /// port, PORT is used (`kube-dns.default` on port 53 means `kube-dns.default:53`).
    #[arg(value_name = "TARGET", value_parser = parse_target)]
    pub target: TargetArg,

    /// Close a TCP connection or end a UDP session after this long without traffic in
    /// either direction (seconds, or a duration such as 500ms or 10m). 0 means no idle
    /// timeout; absent means none for TCP and 30 s for UDP.
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

    /// UDP-only flags.
    #[command(flatten)]
    pub udp: UdpFlags,
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

    /// Serve only clients in CIDR (repeatable; a CIDR such as `10.0.0.0/8`, or one
    /// address); others are reset (TCP) or their datagrams dropped (UDP), and counted.
    /// Default: every client.
    #[arg(long, value_name = "CIDR", value_parser = parse_cidr)]
    pub allow: Vec<Cidr>,

    /// Never serve clients in CIDR (repeatable), whatever `--allow` says.
    #[arg(long, value_name = "CIDR", value_parser = parse_cidr)]
    pub deny: Vec<Cidr>,

    /// The most TCP connections (or UDP sessions) open at once, across the listen
    /// addresses; past it, new ones are reset (datagrams dropped) and counted, and open
    /// ones are untouched. Off by default.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: Option<u32>,

    /// The most TCP connections (or UDP sessions) open at once from one client IP; past
    /// it, its new connections are reset (datagrams dropped) and counted. Off by default.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_per_source: Option<u32>,

    /// The most new TCP connections (or UDP sessions) admitted per second, on average;
    /// past it, newcomers are reset (datagrams dropped) and counted. Off by default.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub accept_rate: Option<u32>,

    /// How many `--accept-rate` admits at once after a quiet spell. [default: the rate,
    /// one second's worth]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..), requires = "accept_rate")]
    pub accept_burst: Option<u32>,

    /// How each new connection (or UDP session) picks one of TARGET's addresses; the
    /// others follow for failover.
    #[arg(long, value_enum, value_name = "POLICY", default_value_t = BalanceArg::RoundRobin)]
    pub balance: BalanceArg,

    /// With `--balance client-ip`: how long a client keeps its address after its last
    /// connection. [default: 3h, as kube-proxy]
    #[arg(long, value_name = "DURATION", value_parser = parse_nonzero_duration, allow_hyphen_values = true)]
    pub affinity_timeout: Option<Duration>,

    /// Skip an address after N failed connects in a row (for UDP, ICMP port-unreachable
    /// reports) for `--eject-for`, then try it again; with every address skipped, new
    /// connections fail at once. Off by default.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub eject_after: Option<u32>,

    /// How long `--eject-after` skips an address. [default: 10s]
    #[arg(long, value_name = "DURATION", value_parser = parse_nonzero_duration, allow_hyphen_values = true, requires = "eject_after")]
    pub eject_for: Option<Duration>,

    /// Send a PROXY protocol header (`v1` text or `v2` binary) to the upstream ahead of
    /// each connection, carrying the real client address; UDP takes `v2`, one header per
    /// datagram. The upstream must expect it. Off by default.
    #[arg(long, value_enum, value_name = "VERSION")]
    pub proxy_protocol: Option<ProxyProtocolArg>,

    /// Check every address of TARGET with a TCP connect at this interval; an address
    /// failing `--health-check-fall` checks in a row is skipped until it passes
    /// `--health-check-rise`. UDP forwards check the same port over TCP. Off by default.
    #[arg(long, value_name = "DURATION", value_parser = parse_nonzero_duration, allow_hyphen_values = true)]
    pub health_check_interval: Option<Duration>,

    /// How long one health check may take. [default: 1s]
    #[arg(long, value_name = "DURATION", value_parser = parse_nonzero_duration, allow_hyphen_values = true, requires = "health_check_interval")]
    pub health_check_timeout: Option<Duration>,

    /// Passed checks in a row that bring a down address back. [default: 2]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..), requires = "health_check_interval")]
    pub health_check_rise: Option<u32>,

    /// Failed checks in a row that mark an address down. [default: 3]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..), requires = "health_check_interval")]
    pub health_check_fall: Option<u32>,

    /// On SIGINT or SIGTERM, stop accepting and let open connections (and UDP sessions)
    /// finish for this long before closing them. A second signal closes them at once.
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

    /// Once one direction has ended (a FIN was forwarded), close the connection when the
    /// other has been idle (no byte moved) this long; a reply still streaming is never
    /// cut. 0 disables it. [default: 60s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, allow_hyphen_values = true)]
    pub half_close_timeout: Option<Duration>,

    /// Close every connection at this age, busy or not. 0 (the default) disables it.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, allow_hyphen_values = true)]
    pub max_lifetime: Option<Duration>,

    /// The listen backlog (the kernel caps it at net.core.somaxconn). [default: 1024]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub backlog: Option<u32>,

    /// The size of each splice pipe: bytes, or with a K, M or G suffix (binary), from 4K
    /// to 1G. [default: 256K]
    #[arg(long, value_name = "BYTES", value_parser = parse_size)]
    pub pipe_size: Option<usize>,

    /// How bytes are relayed: `auto` uses splice(2) on Linux (no copy to user space),
    /// `copy` always copies through user-space buffers.
    #[arg(long, value_enum, value_name = "MODE", default_value_t = RelayArg::Auto)]
    pub relay: RelayArg,

    /// Read a PROXY protocol header (v1 or v2) at the start of connections from these
    /// peers (a CIDR such as `10.0.0.0/8`, or one address; repeatable): load balancers in
    /// front of this proxy. Their header's client address is used for the connection. A
    /// connection from them without a valid header is closed. Off by default.
    #[arg(long, value_name = "CIDR", value_parser = parse_cidr)]
    pub accept_proxy_from: Vec<Cidr>,

    /// How long a `--accept-proxy-from` peer has to send its header. [default: 5s]
    #[arg(long, value_name = "DURATION", value_parser = parse_nonzero_duration, allow_hyphen_values = true, requires = "accept_proxy_from")]
    pub proxy_header_timeout: Option<Duration>,
}

/// Flags of `proxy udp` only.
#[derive(Debug, Args)]
#[command(next_help_heading = "UDP options")]
pub struct UdpFlags {
    /// The most sessions (client addresses) per listen address; a new client beyond it
    /// evicts the least recently used session. [default: 16384]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_sessions: Option<u32>,

    /// Datagrams read or sent per system call (recvmmsg/sendmmsg on Linux), 1 to 64;
    /// 1 means one datagram per call. [default: 32]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=MAX_BATCH_SIZE))]
    pub batch_size: Option<u16>,

    /// The receive and send buffer of each UDP socket: bytes, or with a K, M or G suffix;
    /// 0 keeps the system's default. Past net.core.rmem_max with CAP_NET_ADMIN, else
    /// capped at it. [default: 4M]
    #[arg(long, value_name = "BYTES", value_parser = parse_size)]
    pub socket_buffer: Option<usize>,
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
    /// Also every connection and UDP session.
    Debug,
    /// Everything.
    Trace,
}

/// `--log-format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (as before).
    Text,
    /// One JSON object per line.
    Json,
}

/// Parses `--admin ADDR`: an IP and a port, `127.0.0.1:9090` or `[::1]:9090`.
///
/// # Errors
///
/// A message naming `s` when it is not one.
pub fn parse_admin(s: &str) -> Result<SocketAddr, String> {
    s.parse().map_err(|_| {
        format!("`{s}` is not an IP:PORT address (such as 127.0.0.1:9090 or [::]:9090)")
    })
}

/// `--resolver`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ResolverArg {
    /// The C library's getaddrinfo.
    System,
    /// hickory-resolver configured from /etc/resolv.conf, TTL-aware.
    Hickory,
}

/// `--balance`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BalanceArg {
    /// Each connection starts at the next address (as kube-proxy).
    #[value(alias = "rr")]
    RoundRobin,
    /// The address with the fewest open connections.
    #[value(alias = "least-conn")]
    LeastConnections,
    /// The less loaded of two random addresses.
    #[value(alias = "p2c")]
    TwoChoices,
    /// The same client IP to the same address (kube-proxy's sessionAffinity: ClientIP).
    ClientIp,
}

impl BalanceArg {
    /// The library's policy, with `timeout` for client-IP affinity (else its default).
    pub fn policy(self, timeout: Option<Duration>) -> Balance {
        match self {
            BalanceArg::RoundRobin => Balance::RoundRobin,
            BalanceArg::LeastConnections => Balance::LeastConnections,
            BalanceArg::TwoChoices => Balance::PowerOfTwoChoices,
            BalanceArg::ClientIp => Balance::ClientIp {
                timeout: timeout.unwrap_or(Balance::DEFAULT_AFFINITY_TIMEOUT),
            },
        }
    }
}

impl From<RelayArg> for RelayMode {
    fn from(r: RelayArg) -> RelayMode {
        match r {
            RelayArg::Auto => RelayMode::Auto,
            RelayArg::Copy => RelayMode::Copy,
        }
    }
}

/// `--proxy-protocol`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ProxyProtocolArg {
    /// The text header (TCP only).
    V1,
    /// The binary header.
    V2,
}

impl From<ProxyProtocolArg> for ProxyProtocol {
    fn from(v: ProxyProtocolArg) -> ProxyProtocol {
        match v {
            ProxyProtocolArg::V1 => ProxyProtocol::V1,
            ProxyProtocolArg::V2 => ProxyProtocol::V2,
        }
    }
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

/// Where a forwarding subcommand listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Listen {
    /// Every address on this port: `[::]:port`, dual-stack, or `0.0.0.0:port` when IPv6 is
    /// not available.
    Any(u16),
    /// Exactly these addresses.
    Addrs(Vec<SocketAddr>),
}

/// The settings TCP and UDP forwards take alike, from [`CommonArgs`] (or a config file's
/// keys): one copy in each plan.
#[derive(Clone, Debug)]
pub struct Common {
    /// Where to listen.
    pub listen: Listen,
    /// Where to forward to.
    pub target: Target,
    /// The timers (TCP reads the connection timers, UDP [`Timeouts::udp_session_idle`]).
    pub timeouts: Timeouts,
    /// How long resolved answers are used.
    pub cache: CachePolicy,
    /// Which resolver looks up a host-name target.
    pub resolver: ResolverArg,
    /// Whether the listening sockets set SO_REUSEPORT.
    pub reuse_port: bool,
    /// How an upstream address is picked.
    pub balance: Balance,
    /// Passive ejection of failing addresses, if on.
    pub ejection: Option<Ejection>,
    /// Active health checks, if on.
    pub health_check: Option<HealthCheck>,
    /// Which clients are served.
    pub access: Access,
    /// How many connections (or sessions), per client IP and how fast.
    pub limits: Limits,
    /// The PROXY protocol header sent upstream (for UDP, ahead of each datagram), if any.
    pub proxy_protocol: Option<ProxyProtocol>,
    /// How long open connections (or sessions) may finish after SIGINT or SIGTERM.
    pub drain: Duration,
}

/// The checked settings of `proxy tcp`.
#[derive(Clone, Debug)]
pub struct TcpPlan {
    /// What TCP and UDP share.
    pub common: Common,
    /// Which peers' PROXY headers are read, if any.
    pub accept_proxy: Option<AcceptProxy>,
    /// The listen backlog, when not the default.
    pub backlog: Option<u32>,
    /// The splice pipe size, when not the default.
    pub pipe_size: Option<usize>,
    /// How bytes are relayed.
    pub relay: RelayMode,
}

/// The checked settings of `proxy udp`.
#[derive(Clone, Debug)]
pub struct UdpPlan {
    /// What TCP and UDP share.
    pub common: Common,
    /// The session table's size per listen address, when not the default.
    pub max_sessions: Option<usize>,
    /// Datagrams per system call, when not the default.
    pub batch_size: Option<usize>,
    /// Socket buffer bytes, when not the default (0: the system's).
    pub socket_buffer: Option<usize>,
}

/// The checked settings of `proxy tcp,udp`: one plan per protocol, with the same listen
/// addresses, target, resolver and drain time.
#[derive(Clone, Debug)]
pub struct TcpUdpPlan {
    /// The TCP side.
    pub tcp: TcpPlan,
    /// The UDP side.
    pub udp: UdpPlan,
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

// ===== impl TcpArgs, UdpArgs, TcpUdpArgs =====

impl TcpArgs {
    /// Checks the arguments together and converts them into a [`TcpPlan`].
    ///
    /// # Errors
    ///
    /// A [`UsageError`] when TARGET has no port and PORT is 0.
    pub fn plan(&self) -> Result<TcpPlan, UsageError> {
        let base = Common::new(self.port, &self.target, &self.common)?;
        let mut timeouts = tcp_timeouts(&self.tcp);
        timeouts.idle = self
            .idle_timeout_seconds
            .or(self.common.idle_timeout)
            .filter(|d| !d.is_zero());
        Ok(tcp_plan(base, timeouts, &self.tcp))
    }
}

impl UdpArgs {
    /// Checks the arguments together and converts them into a [`UdpPlan`].
    ///
    /// # Errors
    ///
    /// A [`UsageError`] when TARGET has no port and PORT is 0.
    pub fn plan(&self) -> Result<UdpPlan, UsageError> {
        let base = Common::new(self.port, &self.target, &self.common)?;
        let mut timeouts = Timeouts::default();
        timeouts.udp_session_idle =
            udp_session_idle(self.idle_timeout_seconds.or(self.common.idle_timeout));
        Ok(udp_plan(base, timeouts, &self.udp))
    }
}

impl TcpUdpArgs {
    /// Checks the arguments together and converts them into a [`TcpUdpPlan`].
    ///
    /// # Errors
    ///
    /// A [`UsageError`] when TARGET has no port and PORT is 0.
    pub fn plan(&self) -> Result<TcpUdpPlan, UsageError> {
        let base = Common::new(self.port, &self.target, &self.common)?;
        let idle = self.idle_timeout_seconds.or(self.common.idle_timeout);
        // One set of timers for both: TCP reads `idle` and the connect timers, UDP reads
        // `udp_session_idle`.
        let mut timeouts = tcp_timeouts(&self.tcp);
        timeouts.idle = idle.filter(|d| !d.is_zero());
        timeouts.udp_session_idle = udp_session_idle(idle);
        Ok(TcpUdpPlan {
            tcp: tcp_plan(base.clone(), timeouts, &self.tcp),
            udp: udp_plan(base, timeouts, &self.udp),
        })
    }
}

/// `proxy forward`'s settings for `host`: the flags applied as `proxy tcp,udp` applies
/// them. Each port mapping then sets its own target port and listen addresses.
pub(crate) fn forward_settings(
    host: &Host,
    common: &CommonArgs,
    tcp: &TcpFlags,
    udp: &UdpFlags,
) -> Result<TcpUdpPlan, UsageError> {
    let base = Common::new(0, &TargetArg::Full(Target::new(host.clone(), 0)), common)?;
    let mut timeouts = tcp_timeouts(tcp);
    timeouts.idle = common.idle_timeout.filter(|d| !d.is_zero());
    timeouts.udp_session_idle = udp_session_idle(common.idle_timeout);
    Ok(TcpUdpPlan {
        tcp: tcp_plan(base.clone(), timeouts, tcp),
        udp: udp_plan(base, timeouts, udp),
    })
}

impl Common {
    /// What `common` says, for PORT and TARGET; the timers are the defaults.
    fn new(port: u16, target: &TargetArg, common: &CommonArgs) -> Result<Common, UsageError> {
        let target = match target {
            TargetArg::Full(t) => t.clone(),
            TargetArg::HostOnly(host) if port == 0 => {
                let shown = match host {
                    Host::Ip(IpAddr::V6(ip)) => format!("[{ip}]"),
                    other => other.to_string(),
                };
                return Err(UsageError(format!(
                    "TARGET '{shown}' has no port and PORT is 0, so there is no upstream port; \
                     write TARGET as '{shown}:PORT'"
                )));
            }
            TargetArg::HostOnly(host) => Target::new(host.clone(), port),
        };

        let listen = if common.listen.is_empty() {
            Listen::Any(port)
        } else {
            Listen::Addrs(
                common
                    .listen
                    .iter()
                    .map(|l| match *l {
                        ListenArg::Ip(ip) => SocketAddr::new(ip, port),
                        ListenArg::Socket(addr) => addr,
                    })
                    .collect(),
            )
        };

        let mut cache = CachePolicy::default();
        cache.refresh = common.dns_refresh;

        if common.affinity_timeout.is_some() && common.balance != BalanceArg::ClientIp {
            return Err(UsageError(
                "--affinity-timeout needs --balance client-ip".to_string(),
            ));
        }
        let ejection = common
            .eject_after
            .map(|n| Ejection::new(n, common.eject_for.unwrap_or(Ejection::default().backoff)));

        Ok(Common {
            listen,
            target,
            timeouts: Timeouts::default(),
            cache,
            resolver: common.resolver,
            reuse_port: common.reuse_port,
            balance: common.balance.policy(common.affinity_timeout),
            ejection,
            health_check: common.health_check_interval.map(|interval| {
                let d = HealthCheck::default();
                HealthCheck::every(interval).with(
                    common.health_check_timeout.unwrap_or(d.timeout),
                    common.health_check_rise.unwrap_or(d.rise),
                    common.health_check_fall.unwrap_or(d.fall),
                )
            }),
            access: Access::new(common.allow.iter().copied(), common.deny.iter().copied()),
            limits: common_limits(common),
            proxy_protocol: common.proxy_protocol.map(ProxyProtocol::from),
            drain: common.drain,
        })
    }
}

/// The limits every protocol takes: connections (UDP: sessions) open at once, in all
/// and per client IP, and the accept rate.
fn common_limits(common: &CommonArgs) -> Limits {
    let mut limits = Limits::default();
    limits.max_connections = common.max_connections.map(|n| n as usize);
    limits.max_per_source = common.max_per_source.map(|n| n as usize);
    limits.accept_rate = common
        .accept_rate
        .map(|n| Rate::per_second(n).burst(common.accept_burst.unwrap_or(n)));
    limits
}

/// The default timeouts with the TCP flags applied (all but the idle timeout).
fn tcp_timeouts(t: &TcpFlags) -> Timeouts {
    let mut timeouts = Timeouts::default();
    if let Some(connect) = t.connect_timeout {
        timeouts.connect = connect;
        // A longer attempt than the default budget raises the budget, unless the budget
        // was given too (then `build()` reports the conflict).
        timeouts.connect_total = timeouts.connect_total.max(connect);
    }
    if let Some(total) = t.connect_total_timeout {
        timeouts.connect_total = total;
    }
    if let Some(half_close) = t.half_close_timeout {
        timeouts.half_close = Some(half_close).filter(|d| !d.is_zero());
    }
    timeouts.max_lifetime = t.max_lifetime.filter(|d| !d.is_zero());
    timeouts
}

/// The UDP session idle timeout for an idle argument: absent means the library's default
/// (30 s), zero means none.
fn udp_session_idle(idle: Option<Duration>) -> Option<Duration> {
    match idle {
        None => Timeouts::default().udp_session_idle,
        Some(d) if d.is_zero() => None,
        Some(d) => Some(d),
    }
}

fn tcp_plan(mut common: Common, timeouts: Timeouts, t: &TcpFlags) -> TcpPlan {
    common.timeouts = timeouts;
    TcpPlan {
        common,
        accept_proxy: (!t.accept_proxy_from.is_empty()).then(|| {
            let accept = AcceptProxy::new(t.accept_proxy_from.iter().copied());
            match t.proxy_header_timeout {
                Some(d) => accept.timeout(d),
                None => accept,
            }
        }),
        backlog: t.backlog,
        pipe_size: t.pipe_size,
        relay: t.relay.into(),
    }
}

fn udp_plan(mut common: Common, timeouts: Timeouts, u: &UdpFlags) -> UdpPlan {
    common.timeouts = timeouts;
    UdpPlan {
        common,
        max_sessions: u.max_sessions.map(|n| n as usize),
        batch_size: u.batch_size.map(usize::from),
        socket_buffer: u.socket_buffer,
    }
}

// ===== impl TcpPlan, UdpPlan =====

/// `$builder` with the [`Common`] settings `$c` applied and resolving through `$resolver`
/// (both builders have these setters).
macro_rules! with_common {
    ($builder:expr, $c:expr, $resolver:expr) => {
        $builder
            .shared_resolver($resolver)
            .cache($c.cache)
            .timeouts($c.timeouts)
            .reuse_port($c.reuse_port)
            .balance($c.balance)
            .ejection($c.ejection)
            .health_check($c.health_check)
            .access($c.access.clone())
            .limits($c.limits)
            .proxy_protocol($c.proxy_protocol)
    };
}

impl TcpPlan {
    /// A forwarder builder for these settings, listening on `listen` and resolving through
    /// `resolver`. Call `build()` on it to validate the settings.
    pub fn builder(
        &self,
        listen: Vec<SocketAddr>,
        resolver: Arc<dyn Resolve>,
    ) -> TcpForwarderBuilder {
        let c = &self.common;
        let mut b = with_common!(TcpForwarder::builder(listen, c.target.clone()), c, resolver)
            .accept_proxy(self.accept_proxy.clone())
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

impl UdpPlan {
    /// A forwarder builder for these settings, listening on `listen` and resolving through
    /// `resolver`. Call `build()` on it to validate the settings.
    pub fn builder(
        &self,
        listen: Vec<SocketAddr>,
        resolver: Arc<dyn Resolve>,
    ) -> UdpForwarderBuilder {
        let c = &self.common;
        let mut b = with_common!(UdpForwarder::builder(listen, c.target.clone()), c, resolver);
        if let Some(max) = self.max_sessions {
            b = b.max_sessions(max);
        }
        if let Some(batch) = self.batch_size {
            b = b.batch_size(batch);
        }
        if let Some(bytes) = self.socket_buffer {
            b = b.socket_buffer((bytes > 0).then_some(bytes));
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

/// Parses a duration with the one parser every front end uses,
/// [`proxy_core::value::duration`]: numbers with `h`, `m`, `s` or `ms` (`500ms`, `1.5s`,
/// `1h30m`), or a bare number of seconds (`600`).
///
/// # Errors
///
/// A message naming the bad token: an empty value, a negative number, a missing number,
/// an unknown unit, a part finer than a millisecond, or a duration longer than
/// [`MAX_DURATION`](proxy_core::MAX_DURATION) (10 years; timers and deadlines are counted from every duration, and
/// 0 is how a timer is turned off).
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
/// assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
/// assert!(parse_duration("5x").unwrap_err().contains("`x`"));
/// ```
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    proxy_core::value::duration(s).map_err(|e| e.to_string())
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

fn parse_cidr(s: &str) -> Result<Cidr, String> {
    s.parse().map_err(|e: proxy_core::CidrError| e.to_string())
}

/// Parses a byte count with an optional binary `K`, `M` or `G` suffix
/// ([`proxy_core::value::size`], as in the config file).
pub fn parse_size(s: &str) -> Result<usize, String> {
    proxy_core::value::size(s).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use proxy_core::MAX_DURATION;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("proxy").chain(args.iter().copied()))
    }

    fn tcp(args: &[&str]) -> TcpArgs {
        let mut all = vec!["tcp"];
        all.extend_from_slice(args);
        match parse(&all).unwrap().command {
            Command::Tcp(t) => t,
            other => panic!("{other:?}"),
        }
    }

    fn udp(args: &[&str]) -> UdpArgs {
        let mut all = vec!["udp"];
        all.extend_from_slice(args);
        match parse(&all).unwrap().command {
            Command::Udp(u) => u,
            other => panic!("{other:?}"),
        }
    }

    fn tcp_udp(args: &[&str]) -> TcpUdpArgs {
        let mut all = vec!["tcp,udp"];
        all.extend_from_slice(args);
        match parse(&all).unwrap().command {
            Command::TcpUdp(b) => b,
            other => panic!("{other:?}"),
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
            ("315360000", MAX_DURATION),
            ("315360000s", MAX_DURATION),
            ("315360000000ms", MAX_DURATION),
            ("5256000m", MAX_DURATION),
            ("87600h", MAX_DURATION),
            ("1.5s", Duration::from_millis(1500)),
            ("1h30m", Duration::from_secs(5400)),
        ];
        for (input, want) in ok {
            assert_eq!(parse_duration(input), Ok(want), "{input:?}");
        }
        let bad = [
            ("", "empty duration"),
            ("-1", "`-1` is negative"),
            ("-5s", "`-5s` is negative"),
            ("5x", "`5x` is not a duration: unknown unit `x`"),
            ("10 s", "`10 s` is not a duration: unknown unit ` s`"),
            (
                "1.5ms",
                "`1.5ms` is not a duration: `1.5` is finer than a millisecond",
            ),
            ("5S", "unknown unit `S`"),
            ("s", "`s` is not a duration: `s` has no number before it"),
            ("+5", "`+5` is not a duration"),
            ("abc", "`abc` is not a duration"),
            (
                "18446744073709551616",
                "`18446744073709551616` is longer than the maximum of 10 years (315360000s)",
            ),
            (
                "18446744073709551615",
                "`18446744073709551615` is longer than the maximum",
            ),
            ("18446744073709551615s", "`18446744073709551615s` is longer"),
            (
                "18446744073709551615ms",
                "`18446744073709551615ms` is longer",
            ),
            ("9999999999999999999h", "`9999999999999999999h` is longer"),
            ("307445734561825861m", "`307445734561825861m` is longer"),
            ("315360001", "`315360001` is longer"),
            ("315360000001ms", "`315360000001ms` is longer"),
            ("5256001m", "`5256001m` is longer"),
            ("87601h", "`87601h` is longer"),
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
        assert_eq!(plan.common.target.to_string(), "kube-dns.default:53");
        assert_eq!(plan.common.listen, Listen::Any(53));
        assert_eq!(plan.common.listen.addrs(), vec!["[::]:53".parse().unwrap()]);
        assert_eq!(
            plan.common.listen.ipv4_fallback(),
            Some(vec!["0.0.0.0:53".parse().unwrap()])
        );
        assert_eq!(plan.common.timeouts, Timeouts::default());
        assert_eq!(plan.common.drain, Duration::from_secs(10));

        let plan = tcp(&["5000", "::1"]).plan().unwrap();
        assert_eq!(plan.common.target.to_string(), "[::1]:5000");
        let plan = tcp(&["5000", "[::1]"]).plan().unwrap();
        assert_eq!(plan.common.target.to_string(), "[::1]:5000");
    }

    #[test]
    fn positional_idle_timeout() {
        let plan = tcp(&["8080", "web.default:80", "600"]).plan().unwrap();
        assert_eq!(plan.common.target.to_string(), "web.default:80");
        assert_eq!(plan.common.timeouts.idle, Some(Duration::from_secs(600)));
        let plan = tcp(&["8080", "web", "500ms"]).plan().unwrap();
        assert_eq!(plan.common.timeouts.idle, Some(Duration::from_millis(500)));
        let plan = tcp(&["8080", "web", "0"]).plan().unwrap();
        assert_eq!(plan.common.timeouts.idle, None);
        let plan = tcp(&["8080", "web", "--idle-timeout", "5m"])
            .plan()
            .unwrap();
        assert_eq!(plan.common.timeouts.idle, Some(Duration::from_secs(300)));
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
            plan.common.listen,
            Listen::Addrs(vec![
                "127.0.0.1:0".parse().unwrap(),
                "[::1]:9000".parse().unwrap()
            ])
        );
        assert_eq!(plan.common.listen.ipv4_fallback(), None);
        assert_eq!(plan.common.timeouts.connect, Duration::from_secs(2));
        assert_eq!(plan.common.timeouts.connect_total, Duration::from_secs(60));
        assert_eq!(plan.common.timeouts.half_close, None);
        assert_eq!(
            plan.common.timeouts.max_lifetime,
            Some(Duration::from_secs(3600))
        );
        assert_eq!(plan.common.cache.refresh, Some(Duration::from_secs(10)));
        assert!(plan.common.reuse_port);
        assert_eq!(plan.backlog, Some(16));
        assert_eq!(plan.pipe_size, Some(1 << 20));
        assert_eq!(plan.relay, RelayMode::Copy);
        assert_eq!(plan.common.drain, Duration::ZERO);
        assert_eq!(plan.common.resolver, ResolverArg::Hickory);
    }

    #[test]
    fn long_connect_timeout_raises_the_default_budget() {
        let plan = tcp(&["80", "web", "--connect-timeout", "30s"])
            .plan()
            .unwrap();
        assert_eq!(plan.common.timeouts.connect_total, Duration::from_secs(30));
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
            .builder(plan.common.listen.addrs(), resolver)
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

    #[test]
    fn balance_and_ejection_reach_the_plans() {
        let plan = tcp(&[
            "80",
            "web",
            "--balance",
            "least-conn",
            "--eject-after",
            "2",
            "--eject-for",
            "5s",
        ])
        .plan()
        .unwrap();
        assert_eq!(plan.common.balance, Balance::LeastConnections);
        assert_eq!(
            plan.common.ejection,
            Some(Ejection::new(2, Duration::from_secs(5)))
        );
        let plan = udp(&[
            "53",
            "dns",
            "--balance",
            "client-ip",
            "--affinity-timeout",
            "10m",
        ])
        .plan()
        .unwrap();
        assert_eq!(
            plan.common.balance,
            Balance::ClientIp {
                timeout: Duration::from_secs(600)
            }
        );
        assert_eq!(plan.common.ejection, None);
        let plan = udp(&["53", "dns", "--balance", "client-ip", "--eject-after", "1"])
            .plan()
            .unwrap();
        assert_eq!(plan.common.balance, Balance::client_ip());
        assert_eq!(
            plan.common.ejection,
            Some(Ejection::new(1, Duration::from_secs(10)))
        );
        let plan = tcp(&["80", "web", "--proxy-protocol", "v1"])
            .plan()
            .unwrap();
        assert_eq!(plan.common.proxy_protocol, Some(ProxyProtocol::V1));
        assert_eq!(plan.accept_proxy, None);
        assert_eq!(plan.common.health_check, None);
        assert_eq!(plan.common.access, Access::default());
        let plan = udp(&[
            "53",
            "dns",
            "--allow",
            "10.0.0.0/8",
            "--deny",
            "10.9.0.0/16",
        ])
        .plan()
        .unwrap();
        assert_eq!(
            plan.common.access,
            Access::new([cidr("10.0.0.0/8")], [cidr("10.9.0.0/16")])
        );
        let e = parse(&["tcp", "80", "web", "--deny", "nope"]).unwrap_err();
        assert!(e.to_string().contains("'nope'"), "{e}");
        // The form a dual-stack listener logs IPv4 clients in means IPv4.
        let plan = tcp(&[
            "80",
            "web",
            "--deny",
            "::ffff:127.0.0.1",
            "--allow",
            "::ffff:0:0/96",
        ])
        .plan()
        .unwrap();
        assert_eq!(
            plan.common.access,
            Access::new([cidr("0.0.0.0/0")], [cidr("127.0.0.1")])
        );
        let plan = tcp(&["80", "web", "--accept-proxy-from", "::ffff:10.0.0.0/104"])
            .plan()
            .unwrap();
        assert_eq!(plan.accept_proxy.unwrap().trusted, [cidr("10.0.0.0/8")]);
        let plan = udp(&[
            "53",
            "dns",
            "--health-check-interval",
            "2s",
            "--health-check-fall",
            "5",
        ])
        .plan()
        .unwrap();
        let want = HealthCheck::every(Duration::from_secs(2)).with(Duration::from_secs(1), 2, 5);
        assert_eq!(plan.common.health_check, Some(want));
        let e = parse(&["tcp", "80", "web", "--health-check-rise", "2"]).unwrap_err();
        assert!(e.to_string().contains("--health-check-interval"), "{e}");
        let plan = tcp(&[
            "80",
            "web",
            "--accept-proxy-from",
            "10.0.0.0/8",
            "--accept-proxy-from",
            "::1",
            "--proxy-header-timeout",
            "2s",
        ])
        .plan()
        .unwrap();
        let accept = plan.accept_proxy.unwrap();
        assert_eq!(accept.trusted.len(), 2);
        assert_eq!(accept.timeout, Duration::from_secs(2));
        let e = parse(&["tcp", "80", "web", "--accept-proxy-from", "10.0.0.0/40"]).unwrap_err();
        assert!(e.to_string().contains("'10.0.0.0/40'"), "{e}");
        let plan = udp(&["53", "dns", "--proxy-protocol", "v2"])
            .plan()
            .unwrap();
        assert_eq!(plan.common.proxy_protocol, Some(ProxyProtocol::V2));
        assert_eq!(
            tcp(&["80", "web"]).plan().unwrap().common.proxy_protocol,
            None
        );
        let plan = tcp(&["80", "web", "--balance", "p2c"]).plan().unwrap();
        assert_eq!(plan.common.balance, Balance::PowerOfTwoChoices);
        assert_eq!(
            tcp(&["80", "web"]).plan().unwrap().common.balance,
            Balance::RoundRobin
        );
        // The affinity timeout belongs to client-ip.
        let e = tcp(&["80", "web", "--affinity-timeout", "1m"])
            .plan()
            .unwrap_err();
        assert!(
            e.0.contains("--affinity-timeout needs --balance client-ip"),
            "{}",
            e.0
        );
        for (args, bad) in [
            (&["tcp", "80", "web", "--balance", "fastest"][..], "fastest"),
            (&["tcp", "80", "web", "--eject-after", "0"][..], "0"),
            (
                &["tcp", "80", "web", "--eject-after", "2", "--eject-for", "0"][..],
                "0",
            ),
        ] {
            let e = parse(args).unwrap_err();
            assert!(e.to_string().contains(&format!("'{bad}'")), "{args:?}: {e}");
        }
        let e = parse(&["tcp", "80", "web", "--eject-for", "5s"]).unwrap_err();
        assert!(e.to_string().contains("--eject-after"), "{e}");
    }

    fn cidr(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn srv_targets_take_no_port() {
        let plan = tcp(&["8080", "srv:_http._tcp.web.default"]).plan().unwrap();
        assert_eq!(plan.common.target.to_string(), "srv:_http._tcp.web.default");
        let e = parse(&["tcp", "8080", "srv:_http._tcp.web:80"]).unwrap_err();
        assert!(e.to_string().contains("an SRV target takes no port"), "{e}");
    }

    #[test]
    fn threads_is_global_and_bounded() {
        assert_eq!(parse(&["tcp", "80", "web"]).unwrap().threads, None);
        let cli = parse(&["--threads", "1", "udp", "53", "dns"]).unwrap();
        assert_eq!(cli.threads, Some(1));
        let cli = parse(&["tcp", "80", "web", "--threads", "4"]).unwrap();
        assert_eq!(cli.threads, Some(4));
        for bad in ["0", "1025", "many"] {
            let e = parse(&["--threads", bad, "tcp", "80", "web"]).unwrap_err();
            assert!(e.to_string().contains(&format!("'{bad}'")), "{e}");
            assert_eq!(e.exit_code(), 2);
        }
    }

    #[test]
    fn admin_and_log_format_are_global() {
        let cli = parse(&["udp", "53", "dns", "--admin", "127.0.0.1:0"]).unwrap();
        assert_eq!(cli.admin, Some("127.0.0.1:0".parse().unwrap()));
        assert_eq!(cli.log_format, LogFormat::Text);
        let cli = parse(&[
            "--admin",
            "[::1]:9090",
            "--log-format",
            "json",
            "tcp",
            "80",
            "web",
        ])
        .unwrap();
        assert_eq!(cli.admin, Some("[::1]:9090".parse().unwrap()));
        assert_eq!(cli.log_format, LogFormat::Json);
        let cli = parse(&["tcp,udp", "53", "dns"]).unwrap();
        assert_eq!(cli.admin, None);
        for bad in ["9090", "localhost:9090", "127.0.0.1"] {
            let e = parse(&["tcp", "80", "web", "--admin", bad]).unwrap_err();
            assert!(e.to_string().contains(&format!("'{bad}'")), "{e}");
            assert_eq!(e.exit_code(), 2);
        }
        let e = parse(&["tcp", "80", "web", "--log-format", "xml"]).unwrap_err();
        assert!(e.to_string().contains("'xml'"), "{e}");
    }

    #[test]
    fn udp_seed_form() {
        let plan = udp(&["53", "kube-dns.default", "1"]).plan().unwrap();
        assert_eq!(plan.common.target.to_string(), "kube-dns.default:53");
        assert_eq!(plan.common.listen, Listen::Any(53));
        assert_eq!(
            plan.common.timeouts.udp_session_idle,
            Some(Duration::from_secs(1))
        );
        assert_eq!(plan.max_sessions, None);
        assert_eq!(plan.batch_size, None);
        assert_eq!(plan.common.drain, Duration::from_secs(10));
    }

    #[test]
    fn udp_idle_timeout_default_zero_and_flag() {
        let default = Timeouts::default().udp_session_idle;
        assert_eq!(
            default,
            Some(Duration::from_secs(30)),
            "documented in --help"
        );
        let plan = udp(&["53", "dns"]).plan().unwrap();
        assert_eq!(plan.common.timeouts.udp_session_idle, default);
        let plan = udp(&["53", "dns", "0"]).plan().unwrap();
        assert_eq!(plan.common.timeouts.udp_session_idle, None);
        let plan = udp(&["53", "dns", "500ms"]).plan().unwrap();
        assert_eq!(
            plan.common.timeouts.udp_session_idle,
            Some(Duration::from_millis(500))
        );
        let plan = udp(&["53", "dns", "--idle-timeout", "2m"]).plan().unwrap();
        assert_eq!(
            plan.common.timeouts.udp_session_idle,
            Some(Duration::from_secs(120))
        );
        let e = parse(&["udp", "53", "dns", "5", "--idle-timeout", "5m"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::ArgumentConflict);
    }

    #[test]
    fn udp_flags_reach_the_builder() {
        let plan = udp(&[
            "0",
            "127.0.0.1:53",
            "--listen",
            "127.0.0.1",
            "--max-sessions",
            "100",
            "--batch-size",
            "1",
            "--socket-buffer",
            "1M",
            "--reuse-port",
            "--dns-refresh",
            "5s",
            "--drain",
            "1s",
        ])
        .plan()
        .unwrap();
        assert_eq!(plan.socket_buffer, Some(1 << 20));
        assert_eq!(
            plan.common.listen,
            Listen::Addrs(vec!["127.0.0.1:0".parse().unwrap()])
        );
        assert_eq!(plan.max_sessions, Some(100));
        assert_eq!(plan.batch_size, Some(1));
        assert!(plan.common.reuse_port);
        assert_eq!(plan.common.cache.refresh, Some(Duration::from_secs(5)));
        assert_eq!(plan.common.drain, Duration::from_secs(1));
        let resolver: Arc<dyn Resolve> = Arc::new(proxy_core::resolve::SystemResolver::new());
        plan.builder(plan.common.listen.addrs(), resolver)
            .build()
            .unwrap();
        // The largest --batch-size is the largest the library takes.
        let plan = udp(&["53", "dns", "--batch-size", "64"]).plan().unwrap();
        assert_eq!(plan.batch_size, Some(64));
        let resolver: Arc<dyn Resolve> = Arc::new(proxy_core::resolve::SystemResolver::new());
        plan.builder(plan.common.listen.addrs(), resolver.clone())
            .build()
            .unwrap();
        let mut over = plan.clone();
        over.batch_size = Some(MAX_BATCH_SIZE as usize + 1);
        assert!(
            over.builder(over.common.listen.addrs(), resolver)
                .build()
                .is_err()
        );
    }

    #[test]
    fn udp_bad_tokens_are_named() {
        let cases: [&[&str]; 7] = [
            &["udp", "53", "web", "5x"],
            &["udp", "53", "web", "--socket-buffer", "4X"],
            &["udp", "53", "web", "--batch-size", "0"],
            &["udp", "53", "web", "--batch-size", "65"],
            &["udp", "53", "web", "--max-sessions", "0"],
            &["udp", "53", "web", "--max-sessions", "many"],
            &["tcp,udp", "53", "web", "--batch-size", "1024"],
        ];
        for args in cases {
            let e = parse(args).unwrap_err();
            let bad = args.last().unwrap();
            assert!(e.to_string().contains(&format!("'{bad}'")), "{args:?}: {e}");
            assert_eq!(e.exit_code(), 2);
        }
        // TCP-only flags are not UDP flags.
        let e = parse(&["udp", "53", "web", "--pipe-size", "1M"]).unwrap_err();
        assert!(e.to_string().contains("--pipe-size"), "{e}");
        let e = udp(&["0", "web"]).plan().unwrap_err();
        assert!(e.0.contains("TARGET 'web' has no port"), "{e}");
    }

    #[test]
    fn limit_flags() {
        let plan = tcp_udp(&[
            "53",
            "dns",
            "--max-connections",
            "1000",
            "--max-per-source",
            "20",
            "--accept-rate",
            "50",
        ])
        .plan()
        .unwrap();
        let mut want = Limits::default();
        want.max_connections = Some(1000);
        want.max_per_source = Some(20);
        want.accept_rate = Some(Rate::per_second(50));
        assert_eq!(plan.tcp.common.limits, want);
        assert_eq!(
            plan.udp.common.limits, want,
            "--max-connections counts UDP sessions, as in the library and the C API"
        );
        let plan = udp(&["53", "dns", "--accept-rate", "5", "--accept-burst", "100"])
            .plan()
            .unwrap();
        assert_eq!(
            plan.common.limits.accept_rate,
            Some(Rate::per_second(5).burst(100))
        );
        assert_eq!(
            tcp(&["80", "web"]).plan().unwrap().common.limits,
            Limits::default()
        );
        for (args, bad) in [
            (&["tcp", "80", "web", "--max-connections", "0"][..], "0"),
            (&["udp", "53", "dns", "--max-per-source", "-1"][..], "-1"),
            (&["tcp", "80", "web", "--accept-rate", "lots"][..], "lots"),
        ] {
            let e = parse(args).unwrap_err();
            assert!(e.to_string().contains(&format!("'{bad}'")), "{args:?}: {e}");
        }
        let plan = udp(&["53", "dns", "--max-connections", "5"])
            .plan()
            .unwrap();
        assert_eq!(
            plan.common.limits.max_connections,
            Some(5),
            "UDP sessions too"
        );
        let e = parse(&["tcp", "80", "web", "--accept-burst", "5"]).unwrap_err();
        assert!(e.to_string().contains("--accept-rate"), "{e}");
    }

    #[test]
    fn tcp_udp_is_one_subcommand_in_either_order() {
        for proto in ["tcp,udp", "udp,tcp"] {
            let cli = parse(&[proto, "53", "kube-dns.default", "1"]).unwrap();
            let Command::TcpUdp(args) = cli.command else {
                panic!("{proto}: {:?}", cli.command)
            };
            let plan = args.plan().unwrap();
            for target in [&plan.tcp.common.target, &plan.udp.common.target] {
                assert_eq!(target.to_string(), "kube-dns.default:53");
            }
            assert_eq!(plan.tcp.common.listen, Listen::Any(53));
            assert_eq!(plan.udp.common.listen, Listen::Any(53));
            assert_eq!(plan.tcp.common.timeouts.idle, Some(Duration::from_secs(1)));
            assert_eq!(
                plan.udp.common.timeouts.udp_session_idle,
                Some(Duration::from_secs(1))
            );
        }
        for bad in ["tcp,", "udp,udp", "tcp;udp", "sctp"] {
            let e = parse(&[bad, "53", "web"]).unwrap_err();
            assert_eq!(e.kind(), clap::error::ErrorKind::InvalidSubcommand, "{bad}");
            assert!(e.to_string().contains(&format!("'{bad}'")), "{e}");
        }
    }

    #[test]
    fn tcp_udp_idle_timeout_and_flags() {
        // Absent: TCP has none, UDP the library default.
        let plan = tcp_udp(&["53", "dns"]).plan().unwrap();
        assert_eq!(plan.tcp.common.timeouts.idle, None);
        assert_eq!(
            plan.udp.common.timeouts.udp_session_idle,
            Timeouts::default().udp_session_idle
        );
        // Zero: neither has one.
        let plan = tcp_udp(&["53", "dns", "--idle-timeout", "0"])
            .plan()
            .unwrap();
        assert_eq!(plan.tcp.common.timeouts.idle, None);
        assert_eq!(plan.udp.common.timeouts.udp_session_idle, None);
        // TCP flags go to TCP, UDP flags to UDP, shared ones to both.
        let plan = tcp_udp(&[
            "0",
            "127.0.0.1:53",
            "--listen",
            "127.0.0.1",
            "--connect-timeout",
            "2s",
            "--pipe-size",
            "1M",
            "--max-sessions",
            "7",
            "--batch-size",
            "8",
            "--reuse-port",
            "--drain",
            "3s",
        ])
        .plan()
        .unwrap();
        assert_eq!(plan.tcp.common.timeouts.connect, Duration::from_secs(2));
        assert_eq!(plan.tcp.pipe_size, Some(1 << 20));
        assert_eq!(plan.udp.max_sessions, Some(7));
        assert_eq!(plan.udp.batch_size, Some(8));
        assert!(plan.tcp.common.reuse_port && plan.udp.common.reuse_port);
        assert_eq!(plan.tcp.common.listen, plan.udp.common.listen);
        assert_eq!(plan.tcp.common.drain, Duration::from_secs(3));
        assert_eq!(plan.udp.common.drain, Duration::from_secs(3));
        let e = parse(&["tcp,udp", "abc", "web"]).unwrap_err().to_string();
        assert!(e.contains("'abc'") && e.contains("<PORT>"), "{e}");
    }

    #[test]
    fn tcp_does_not_take_udp_flags() {
        let e = parse(&["tcp", "53", "web", "--max-sessions", "5"]).unwrap_err();
        assert!(e.to_string().contains("--max-sessions"), "{e}");
    }
}
