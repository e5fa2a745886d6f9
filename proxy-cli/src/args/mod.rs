//! Command-line arguments: the clap types and the value parsers.
//!
//! Parsing happens in two steps. Clap's value parsers check every token on its own and
//! name it when it is bad (`invalid value '5x' for '[IDLE_TIMEOUT_SECONDS]': ...`); the
//! settings flags are made from the library's key table ([`keys`]), each with the key's
//! own parser. Then [`SeedArgs::spec`] and [`ForwardArgs::plan`](forward::ForwardArgs::plan)
//! check the tokens together (a TARGET without a port needs a non-zero PORT) and make one
//! [`ForwardSpec`](proxy_core::ForwardSpec), which the library validates. Both steps fail
//! with exit code 2.

pub mod forward;
mod help;
pub mod http;
pub mod keys;
pub mod port_forward_server;
mod seed;
pub mod service_proxy;

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use help::*;
pub use seed::{ListenArg, SeedArgs, TargetArg, TcpArgs, TcpUdpArgs, UdpArgs, invalid};

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
    /// small machine). HTTP forwards are served by as many threads of their own, each
    /// accepting its share of the connections and keeping them. `run` also reads `threads`
    /// from its file. [default: one per CPU]
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
    #[command(
        long_about = TCP_LONG_ABOUT,
        after_help = TCP_EXAMPLES,
        mut_arg("idle_timeout", |a| a.help(TCP_IDLE_FLAG_HELP)),
        mut_arg("idle_timeout_seconds", |a| a.help(TCP_IDLE_HELP))
    )]
    Tcp(TcpArgs),

    /// Forward UDP: `proxy udp PORT TARGET [IDLE_TIMEOUT_SECONDS]` (proxy-to-service args).
    #[command(
        long_about = UDP_LONG_ABOUT,
        after_help = UDP_EXAMPLES,
        mut_arg("idle_timeout", |a| a.help(UDP_IDLE_FLAG_HELP)),
        mut_arg("idle_timeout_seconds", |a| a.help(UDP_IDLE_HELP))
    )]
    Udp(UdpArgs),

    /// Forward TCP and UDP on the same port: `proxy tcp,udp PORT TARGET
    /// [IDLE_TIMEOUT_SECONDS]`.
    #[command(
        name = "tcp,udp",
        visible_alias = "udp,tcp",
        long_about = TCP_UDP_LONG_ABOUT,
        after_help = TCP_UDP_EXAMPLES,
        mut_arg("idle_timeout", |a| a.help(TCP_UDP_IDLE_FLAG_HELP)),
        mut_arg("idle_timeout_seconds", |a| a.help(TCP_UDP_IDLE_HELP))
    )]
    TcpUdp(TcpUdpArgs),

    /// Serve HTTP and route requests by host and path to upstreams, as an Ingress
    /// controller does: `proxy http PORT [TARGET] [--route HOST/PATH=TARGET]...`.
    #[command(long_about = http::LONG_ABOUT, after_help = http::EXAMPLES)]
    Http(http::HttpArgs),

    /// Forward local ports to a pod, service or workload (`pod/web`, `svc/web`), or to a
    /// host, like `kubectl port-forward`: `proxy forward TARGET SPEC... [-- CMD ARGS...]`.
    #[command(
        long_about = forward::LONG_ABOUT,
        after_help = forward::EXAMPLES,
        mut_arg("idle_timeout", |a| a.help(forward::IDLE_FLAG_HELP))
    )]
    Forward(forward::ForwardArgs),

    /// Serve port-forward to pods for unmodified kubectl and client libraries:
    /// `proxy port-forward-server --pod NAME=TARGET...`.
    #[command(
        name = "port-forward-server",
        long_about = port_forward_server::LONG_ABOUT,
        after_help = port_forward_server::EXAMPLES
    )]
    PortForwardServer(port_forward_server::PortForwardServerArgs),

    /// Serve the API server's service proxy URL, like `kubectl proxy`: from cluster DNS,
    /// or through the API server with `--kubeconfig`: `proxy service-proxy [--port 8001]`.
    #[command(
        name = "service-proxy",
        long_about = service_proxy::LONG_ABOUT,
        after_help = service_proxy::EXAMPLES
    )]
    ServiceProxy(service_proxy::ServiceProxyArgs),

    /// Run the forwards of a configuration file; SIGHUP applies its changes:
    /// `proxy run --config FILE`.
    #[command(long_about = RUN_LONG_ABOUT)]
    Run(RunArgs),
}

/// `proxy run --config FILE`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The TOML configuration file.
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: std::path::PathBuf,
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

// ===== impl Cli =====

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

#[cfg(test)]
mod tests;
