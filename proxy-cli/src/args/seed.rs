//! The proxy-to-service grammar, `proxy PROTO PORT TARGET [IDLE_TIMEOUT_SECONDS]`, with
//! `--listen` and `--drain`, turned into one [`ForwardSpec`] with the settings flags.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use clap::Args;
use proxy_core::value::show_duration;
use proxy_core::{BuildError, ForwardSpec, Host, Listen, Target, Transport};

use super::keys::{BOTH, KeyFlags, TCP, Transports, UDP};
use super::{UsageError, parse_duration};

/// `proxy tcp PORT TARGET [IDLE_TIMEOUT_SECONDS]` and its flags.
pub type TcpArgs = SeedArgs<TCP>;
/// `proxy udp PORT TARGET [IDLE_TIMEOUT_SECONDS]` and its flags.
pub type UdpArgs = SeedArgs<UDP>;
/// `proxy tcp,udp PORT TARGET [IDLE_TIMEOUT_SECONDS]` and its flags.
pub type TcpUdpArgs = SeedArgs<BOTH>;

/// A forwarding subcommand in the seed's grammar, for the transports `T`.
#[derive(Debug, Args)]
pub struct SeedArgs<const T: Transports> {
    /// The port to listen on; 0 lets the kernel choose a free port (the "Forwarding from"
    /// log line shows it).
    #[arg(value_name = "PORT", value_parser = parse_listen_port)]
    pub port: u16,

    /// Where to forward to: `HOST[:PORT]`, `IPv4[:PORT]`, `[IPv6][:PORT]`, or `srv:NAME`
    /// (its SRV records give hosts, ports and weights; looked up with hickory). Without a
    /// port, PORT is used (`kube-dns.default` on port 53 means `kube-dns.default:53`).
    /// With --sni routes, the connections no route serves go here (reset without it).
    #[arg(value_name = "TARGET", value_parser = parse_target, required = T != TCP)]
    pub target: Option<TargetArg>,

    /// Close a connection or end a UDP session after this long without traffic in either
    /// direction (seconds, or a duration such as 500ms or 10m); the same as
    /// --idle-timeout.
    #[arg(
        value_name = "IDLE_TIMEOUT_SECONDS",
        value_parser = parse_duration,
        allow_negative_numbers = true,
        conflicts_with = "idle_timeout"
    )]
    pub idle_timeout_seconds: Option<Duration>,

    /// Listen only on ADDR: an IP address (`127.0.0.1`, `::1`, `[::1]`) on PORT, or a
    /// socket address (`127.0.0.1:9000`, `[::1]:9000`). Repeat it for several addresses.
    /// Default: every address (`[::]:PORT`, or `0.0.0.0:PORT` without IPv6).
    #[arg(long, value_name = "ADDR", value_parser = parse_listen, help_heading = "Forwarding options")]
    pub listen: Vec<ListenArg>,

    /// On SIGINT or SIGTERM, stop accepting and let open connections (and UDP sessions)
    /// finish for this long before closing them. A second signal closes them at once.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "10s", allow_hyphen_values = true, help_heading = "Forwarding options")]
    pub drain: Duration,

    /// The settings flags, one per key.
    #[command(flatten)]
    pub keys: KeyFlags<T>,
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

impl<const T: Transports> SeedArgs<T> {
    /// The transports served.
    pub fn protocol(&self) -> Transport {
        match T {
            TCP => Transport::Tcp,
            UDP => Transport::Udp,
            _ => Transport::Both,
        }
    }

    /// The arguments as one checked [`ForwardSpec`].
    ///
    /// # Errors
    ///
    /// A [`UsageError`] naming the tokens: no TARGET (without --sni routes), TARGET
    /// without a port when PORT is 0, or a setting the library rejects (named by its
    /// flag).
    pub fn spec(&self) -> Result<ForwardSpec, UsageError> {
        let target = match &self.target {
            None if self.keys.has("sni") => None,
            None => {
                let or_sni = if T & TCP != 0 {
                    ", or --sni routes"
                } else {
                    ""
                };
                return Err(UsageError(format!(
                    "no TARGET: give where to forward to (HOST[:PORT], IP:PORT or \
                     srv:NAME){or_sni}"
                )));
            }
            Some(TargetArg::Full(t)) => Some(t.clone()),
            Some(TargetArg::HostOnly(host)) if self.port == 0 => {
                let shown = match host {
                    Host::Ip(IpAddr::V6(ip)) => format!("[{ip}]"),
                    other => other.to_string(),
                };
                return Err(UsageError(format!(
                    "TARGET '{shown}' has no port and PORT is 0, so there is no upstream port; \
                     write TARGET as '{shown}:PORT'"
                )));
            }
            Some(TargetArg::HostOnly(host)) => Some(Target::new(host.clone(), self.port)),
        };
        let mut spec = ForwardSpec::default();
        spec.protocol = self.protocol();
        spec.listen = listen_of(self.port, &self.listen);
        spec.target = target;
        self.keys.apply(&mut spec)?;
        if let Some(idle) = self.idle_timeout_seconds {
            spec.set("idle_timeout", &show_duration(idle))
                .map_err(|e| UsageError(format!("IDLE_TIMEOUT_SECONDS: {}", e.message())))?;
        }
        spec.validate().map_err(invalid)?;
        Ok(spec)
    }
}

/// Where PORT and the `--listen` values say to listen: every address on PORT when there
/// are none.
pub(super) fn listen_of(port: u16, listen: &[ListenArg]) -> Listen {
    if listen.is_empty() {
        return Listen::Any(port);
    }
    Listen::Addrs(
        (listen.iter())
            .map(|l| match *l {
                ListenArg::Ip(ip) => SocketAddr::new(ip, port),
                ListenArg::Socket(addr) => addr,
            })
            .collect(),
    )
}

/// A setting the library rejects, as a usage error naming its flag.
pub fn invalid(e: BuildError) -> UsageError {
    UsageError(format!(
        "invalid settings: {e} (--{})",
        e.key().replace('_', "-")
    ))
}

/// Parses PORT: 0 to 65535, where 0 asks the kernel for a free port.
pub(super) fn parse_listen_port(s: &str) -> Result<u16, String> {
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
pub(super) fn parse_listen(s: &str) -> Result<ListenArg, String> {
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
