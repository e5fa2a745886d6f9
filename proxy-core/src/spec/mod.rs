//! [`ForwardSpec`]: every setting of a forward in one place, the one model behind the
//! command line, the config file, the C API and the builders.
//!
//! Each field is one setting, named as its key in [`KEYS`]: the TOML key, the `--flag`
//! (with `-` for `_`) and the key of the C API's `proxy_config_set`. [`ForwardSpec::set`]
//! parses a key's text value with the one parser of its type ([`value`](crate::value)),
//! [`ForwardSpec::default`] holds the only defaults, and [`ForwardSpec::validate`] holds
//! every rule between settings; its [`BuildError`] names the key at fault.
//! [`reference_markdown`] writes the settings reference, `docs/settings.md`, from [`KEYS`].
//!
//! # Examples
//!
//! ```
//! use std::time::Duration;
//! use proxy_core::{ForwardSpec, Transport};
//!
//! let mut spec = ForwardSpec::default();
//! spec.set("protocol", "tcp,udp")?;
//! spec.set("listen", "127.0.0.1:0")?;
//! spec.set("target", "kube-dns.kube-system:53")?;
//! spec.set("idle_timeout", "1s")?; // TCP connections and UDP sessions
//! spec.set("max_connections", "1000")?;
//! assert_eq!(spec.protocol, Transport::Both);
//! assert_eq!(spec.udp_idle_timeout, Some(Duration::from_secs(1)));
//! spec.validate()?;
//!
//! let e = spec.set("idle_timeout", "5x").unwrap_err();
//! assert_eq!(e.to_string(), "idle_timeout: `5x` is not a duration: unknown unit `x`; use h, m, s or ms, e.g. 500ms, 1.5s, 30s, 1h30m; a bare number means seconds");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod keys;
mod lookup;
mod reference;
mod route;
mod sni_route;
mod start;
mod table;
mod values;

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use keys::{Applies, Key, SetError};
pub use lookup::find;
pub use reference::reference_markdown;
pub use route::{ROUTE_KEYS, Route, RouteHost, SNI_ROUTE_KEYS};
pub use sni_route::SniRoute;
pub use start::{Inherited, Running, StartError, address_in_use, ipv6_unavailable};
pub use table::KEYS;

use crate::BuildError;
use crate::balance::{Balance, Ejection, HealthCheck};
use crate::cidr::{Access, Cidr};
use crate::limit::{Limits, Rate};
use crate::listen::ListenOptions;
use crate::proxy_protocol::{AcceptProxy, ProxyProtocol};
use crate::resolve::{CachePolicy, HickoryResolver, Resolve, ResolverKind, SystemResolver};
use crate::target::{Host, Target};
use crate::tcp::RelayMode;
use crate::timeout::{Timeouts, at_most_max};

/// The transport protocols a forward serves: the `protocol` key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Transport {
    /// TCP connections.
    #[default]
    Tcp,
    /// UDP datagrams, one session per client address.
    Udp,
    /// TCP and UDP on the same addresses and port.
    Both,
    /// HTTP/1.1 requests, routed by host and path (the `proxy-http` crate serves these).
    Http,
}

impl Transport {
    /// Whether TCP is served.
    pub fn tcp(self) -> bool {
        matches!(self, Transport::Tcp | Transport::Both)
    }

    /// Whether UDP is served.
    pub fn udp(self) -> bool {
        matches!(self, Transport::Udp | Transport::Both)
    }

    /// `tcp`, `udp`, `tcp,udp` or `http`.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Udp => "udp",
            Transport::Both => "tcp,udp",
            Transport::Http => "http",
        }
    }
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a forward listens: the `listen` key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Listen {
    /// Every address on this port: one dual-stack `[::]:port` socket, or `0.0.0.0:port`
    /// on a host without IPv6 ([`ForwardSpec::start`] falls back by itself).
    Any(u16),
    /// Exactly these addresses.
    Addrs(Vec<SocketAddr>),
}

impl Default for Listen {
    /// No address: a spec must say where it listens.
    fn default() -> Self {
        Listen::Addrs(Vec::new())
    }
}

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

impl Listen {
    /// The addresses a reload of a forwarder running on `running` binds instead of
    /// [`addrs`](Listen::addrs): the IPv4 fallback, when this listens on every address
    /// and the running forwarder fell back to it (the host has no IPv6); else `None`.
    ///
    /// ```
    /// use proxy_core::Listen;
    ///
    /// let v4 = ["0.0.0.0:53".parse()?];
    /// assert_eq!(Listen::Any(53).reload_fallback(&v4), Some(v4.to_vec()));
    /// assert_eq!(Listen::Any(53).reload_fallback(&["[::]:53".parse()?]), None);
    /// assert_eq!(Listen::Addrs(v4.to_vec()).reload_fallback(&v4), None);
    /// assert_eq!(Listen::Any(53).reload_fallback(&[]), None);
    /// # Ok::<(), std::net::AddrParseError>(())
    /// ```
    pub fn reload_fallback(&self, running: &[SocketAddr]) -> Option<Vec<SocketAddr>> {
        let fell_back =
            !running.is_empty() && (running.iter()).all(|a| a.is_ipv4() && a.ip().is_unspecified());
        self.ipv4_fallback().filter(|_| fell_back)
    }
}

impl std::fmt::Display for Listen {
    /// As the `listen` key takes it: `53`, or `127.0.0.1:53,[::1]:53`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Listen::Any(port) => write!(f, "{port}"),
            Listen::Addrs(addrs) => {
                for (i, a) in addrs.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{a}")?;
                }
                Ok(())
            }
        }
    }
}

/// Every setting of one forward, TCP, UDP or both; see the [module docs](self).
///
/// Each field is the key of the same name in [`KEYS`]. Settings that apply to one
/// transport only are ignored by the other.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ForwardSpec {
    /// `protocol`: TCP, UDP or both. Default TCP.
    pub protocol: Transport,
    /// `listen`: where to listen. Default: nowhere (a spec must set it).
    pub listen: Listen,
    /// `target`: where to forward to. Default: none (a spec must set it).
    pub target: Option<Target>,

    /// `resolver`: which resolver looks a host-name target up. Default system.
    pub resolver: ResolverKind,
    /// `name_servers`: the DNS servers hickory asks; empty: those of `/etc/resolv.conf`.
    pub name_servers: Vec<SocketAddr>,
    /// `dns_refresh`: look the target up at this interval, whatever the TTL says.
    /// Default `None`: follow the TTL.
    pub dns_refresh: Option<Duration>,
    /// `dns_fallback_ttl`: how long an answer without a TTL is used. Default 30 s.
    pub dns_fallback_ttl: Duration,
    /// `dns_min_ttl`: the shortest time an answer is used. Default 1 s.
    pub dns_min_ttl: Duration,
    /// `dns_max_ttl`: the longest time an answer is used. Default 300 s.
    pub dns_max_ttl: Duration,

    /// `connect_timeout`: one TCP connect attempt. Default 5 s.
    pub connect_timeout: Duration,
    /// `connect_total_timeout`: all connect attempts of one connection. Default 15 s.
    pub connect_total_timeout: Duration,
    /// `idle_timeout`: a TCP connection idle this long is closed. Default `None`.
    pub idle_timeout: Option<Duration>,
    /// `half_close_timeout`: after one direction's FIN, the other's inactivity limit.
    /// Default 60 s.
    pub half_close_timeout: Option<Duration>,
    /// `max_lifetime`: a TCP connection this old is closed. Default `None`.
    pub max_lifetime: Option<Duration>,
    /// `udp_idle_timeout`: a UDP session idle this long ends. Default 30 s.
    pub udp_idle_timeout: Option<Duration>,

    /// `reuse_port`: SO_REUSEPORT on the listeners. Default off.
    pub reuse_port: bool,
    /// `dual_stack`: a `[::]` listener takes IPv4 too. Default on.
    pub dual_stack: bool,
    /// `backlog`: the TCP listen backlog. Default 1024.
    pub backlog: u32,

    /// `balance`: how an upstream address is picked. Default round robin.
    pub balance: Balance,
    /// `affinity_timeout`: with `balance = client-ip`, how long a client's affinity
    /// lasts; `None`: the one `balance` carries (3 h for `client-ip`).
    pub affinity_timeout: Option<Duration>,
    /// `eject_after`: failures in a row that eject an address; `None`: no ejection.
    pub eject_after: Option<u32>,
    /// `eject_for`: how long an ejected address is skipped. Default 10 s.
    pub eject_for: Duration,
    /// `health_check_interval`: active TCP health checks every this long; `None`: off.
    pub health_check_interval: Option<Duration>,
    /// `health_check_timeout`: how long one check may take. Default 1 s.
    pub health_check_timeout: Duration,
    /// `health_check_rise`: passed checks in a row that bring an address back. Default 2.
    pub health_check_rise: u32,
    /// `health_check_fall`: failed checks in a row that mark an address down. Default 3.
    pub health_check_fall: u32,

    /// `allow`: serve only clients in these ranges; empty: everyone.
    pub allow: Vec<Cidr>,
    /// `deny`: never serve clients in these ranges.
    pub deny: Vec<Cidr>,
    /// `max_connections`: TCP connections (or UDP sessions) open at once.
    pub max_connections: Option<usize>,
    /// `max_per_source`: TCP connections (or UDP sessions) open at once per client IP.
    pub max_per_source: Option<usize>,
    /// `accept_rate`: new connections (or sessions) admitted per second, on average.
    pub accept_rate: Option<u32>,
    /// `accept_burst`: how many `accept_rate` admits at once; `None`: the rate.
    pub accept_burst: Option<u32>,

    /// `proxy_protocol`: the PROXY protocol header sent upstream. Default none.
    pub proxy_protocol: Option<ProxyProtocol>,
    /// `accept_proxy_from`: peers whose TCP connections start with a PROXY header.
    pub accept_proxy_from: Vec<Cidr>,
    /// `proxy_header_timeout`: how long a trusted peer has to send its header. Default 5 s.
    pub proxy_header_timeout: Duration,

    /// `sni`: a TCP forward's routes by the server name of each connection's TLS
    /// ClientHello; `target` serves the rest.
    pub sni: Vec<SniRoute>,
    /// `sni_timeout`: how long a client has to send its ClientHello. Default 5 s.
    pub sni_timeout: Duration,

    /// `tls_cert`: the PEM certificate chain TLS is terminated with. Default none.
    pub tls_cert: Option<PathBuf>,
    /// `tls_key`: the PEM private key of `tls_cert`. Default none.
    pub tls_key: Option<PathBuf>,
    /// `tls_dir`: a directory of certificates chosen by server name. Default none.
    pub tls_dir: Option<PathBuf>,
    /// `tls_client_ca`: the CAs client certificates must chain to. Default none (no
    /// client certificates asked for).
    pub tls_client_ca: Option<PathBuf>,
    /// `tls_handshake_timeout`: how long a client has for its TLS handshake. Default 10 s.
    pub tls_handshake_timeout: Duration,

    /// `upstream_tls`: connect to the upstream over TLS. Default off.
    pub upstream_tls: bool,
    /// `upstream_ca`: the CAs the upstream's certificate must chain to; none: the
    /// system's.
    pub upstream_ca: Option<PathBuf>,
    /// `upstream_server_name`: the name sent as SNI and verified; none: the target's.
    pub upstream_server_name: Option<String>,
    /// `upstream_insecure`: do not verify the upstream's certificate. Default off.
    pub upstream_insecure: bool,

    /// `relay`: how TCP bytes are relayed. Default auto (splice on Linux).
    pub relay: RelayMode,
    /// `pipe_size`: the size of each splice pipe. Default 256 KiB.
    pub pipe_size: usize,
    /// `buffer_size`: the size of each copy buffer. Default 64 KiB.
    pub buffer_size: usize,

    /// `max_sessions`: UDP sessions per listen address. Default 16,384.
    pub max_sessions: usize,
    /// `batch_size`: UDP datagrams per system call, 1 to 64. Default 32.
    pub batch_size: usize,
    /// `socket_buffer`: UDP socket buffers; `None`: the system's. Default 4 MiB.
    pub socket_buffer: Option<usize>,

    /// `route`: an HTTP forward's routes by host and path; `target` is the route `/`.
    pub routes: Vec<Route>,
    /// `sticky_cookie`: the cookie that keeps an HTTP client on one upstream address.
    pub sticky_cookie: Option<String>,
    /// `request_timeout`: how long an upstream has to start its response. Default 60 s.
    pub request_timeout: Option<Duration>,
    /// `header_timeout`: how long a client has to send a request head. Default 30 s.
    pub header_timeout: Option<Duration>,
    /// `max_request_body`: the largest HTTP request body passed on. Default no limit.
    pub max_request_body: Option<usize>,
    /// `max_header_size`: the largest HTTP request head read. Default 64 KiB.
    pub max_header_size: usize,
    /// `retries`: more tries of an idempotent request whose connection failed. Default 1.
    pub retries: u32,

    /// `service_proxy`: serve the API server's service proxy URL
    /// (`/api/v1/namespaces/NS/services/NAME[:PORT]/proxy/PATH`) from cluster DNS. Default
    /// off.
    pub service_proxy: bool,
    /// `cluster_domain`: the cluster's DNS domain. Default `cluster.local`.
    pub cluster_domain: String,
    /// `accept_hosts`: the service proxy's accepted `Host`s, comma-separated regular
    /// expressions. Default kubectl proxy's, [`DEFAULT_ACCEPT_HOSTS`].
    pub accept_hosts: String,
    /// `accept_paths`: the service proxy's accepted paths. Default [`DEFAULT_ACCEPT_PATHS`].
    pub accept_paths: String,
    /// `reject_paths`: the service proxy's refused paths. Default [`DEFAULT_REJECT_PATHS`].
    pub reject_paths: String,
    /// `reject_methods`: the service proxy's refused methods. Default
    /// [`DEFAULT_REJECT_METHODS`].
    pub reject_methods: String,
    /// `rewrite_html`: rewrite links in HTML answers into the service proxy's prefix.
    /// Default off.
    pub rewrite_html: bool,
}

/// kubectl proxy's default `--accept-hosts`: the loopback names.
pub const DEFAULT_ACCEPT_HOSTS: &str = r"^localhost$,^127\.0\.0\.1$,^\[::1\]$";
/// kubectl proxy's default `--accept-paths`: every path.
pub const DEFAULT_ACCEPT_PATHS: &str = "^.*";
/// kubectl proxy's default `--reject-paths`: `exec` and `attach` into pods.
pub const DEFAULT_REJECT_PATHS: &str = "^/api/.*/pods/.*/exec,^/api/.*/pods/.*/attach";
/// kubectl proxy's default `--reject-methods`: none (only the empty method, which no
/// request has).
pub const DEFAULT_REJECT_METHODS: &str = "^$";

impl Default for ForwardSpec {
    fn default() -> Self {
        let timeouts = Timeouts::default();
        let cache = CachePolicy::default();
        let listen = ListenOptions::default();
        let check = HealthCheck::default();
        ForwardSpec {
            protocol: Transport::Tcp,
            listen: Listen::default(),
            target: None,
            resolver: ResolverKind::System,
            name_servers: Vec::new(),
            dns_refresh: cache.refresh,
            dns_fallback_ttl: cache.fallback_ttl,
            dns_min_ttl: cache.min_ttl,
            dns_max_ttl: cache.max_ttl,
            connect_timeout: timeouts.connect,
            connect_total_timeout: timeouts.connect_total,
            idle_timeout: timeouts.idle,
            half_close_timeout: timeouts.half_close,
            max_lifetime: timeouts.max_lifetime,
            udp_idle_timeout: timeouts.udp_session_idle,
            reuse_port: listen.reuse_port,
            dual_stack: listen.dual_stack,
            backlog: listen.backlog,
            balance: Balance::default(),
            affinity_timeout: None,
            eject_after: None,
            eject_for: Ejection::default().backoff,
            health_check_interval: None,
            health_check_timeout: check.timeout,
            health_check_rise: check.rise,
            health_check_fall: check.fall,
            allow: Vec::new(),
            deny: Vec::new(),
            max_connections: None,
            max_per_source: None,
            accept_rate: None,
            accept_burst: None,
            proxy_protocol: None,
            accept_proxy_from: Vec::new(),
            proxy_header_timeout: AcceptProxy::new([]).timeout,
            sni: Vec::new(),
            sni_timeout: Duration::from_secs(5),
            tls_cert: None,
            tls_key: None,
            tls_dir: None,
            tls_client_ca: None,
            tls_handshake_timeout: Duration::from_secs(10),
            upstream_tls: false,
            upstream_ca: None,
            upstream_server_name: None,
            upstream_insecure: false,
            relay: RelayMode::Auto,
            pipe_size: 1 << 18,
            buffer_size: 1 << 16,
            max_sessions: 16_384,
            batch_size: 32,
            socket_buffer: Some(4 << 20),
            routes: Vec::new(),
            sticky_cookie: None,
            request_timeout: Some(Duration::from_secs(60)),
            header_timeout: Some(Duration::from_secs(30)),
            max_request_body: None,
            max_header_size: 64 << 10,
            retries: 1,
            service_proxy: false,
            cluster_domain: "cluster.local".to_owned(),
            accept_hosts: DEFAULT_ACCEPT_HOSTS.to_owned(),
            accept_paths: DEFAULT_ACCEPT_PATHS.to_owned(),
            reject_paths: DEFAULT_REJECT_PATHS.to_owned(),
            reject_methods: DEFAULT_REJECT_METHODS.to_owned(),
            rewrite_html: false,
        }
    }
}

/// The most datagrams per UDP system call.
const MAX_BATCH: usize = crate::sys::udp::MAX_BATCH;

impl ForwardSpec {
    /// A TCP spec from `listen` to `target`, every other setting at its default.
    pub fn new(protocol: Transport, listen: Listen, target: Target) -> Self {
        ForwardSpec {
            protocol,
            listen,
            target: Some(target),
            ..ForwardSpec::default()
        }
    }

    /// Checks every rule between settings, for the transports of `protocol`.
    ///
    /// # Errors
    ///
    /// The first [`BuildError`]; [`BuildError::key`] names the key at fault.
    pub fn validate(&self) -> Result<(), BuildError> {
        let http_served =
            self.protocol == Transport::Http && (!self.routes.is_empty() || self.service_proxy);
        let sni_served = self.protocol == Transport::Tcp && !self.sni.is_empty();
        if self.target.is_none() && !http_served && !sni_served {
            return Err(BuildError::Missing("target"));
        }
        check_listen(&self.listen.addrs())?;
        self.timeouts().validate()?;
        self.durations_at_most_max()?;
        if self.backlog == 0 {
            return Err(BuildError::Backlog);
        }
        if self.affinity_timeout.is_some() && !matches!(self.balance, Balance::ClientIp { .. }) {
            return Err(BuildError::Requires {
                key: "affinity_timeout",
                requires: "balance = client-ip",
            });
        }
        if let Balance::ClientIp { timeout } = self.balance()
            && timeout.is_zero()
        {
            return Err(BuildError::AffinityTimeout);
        }
        if self.eject_after == Some(0) || (self.eject_after.is_some() && self.eject_for.is_zero()) {
            return Err(BuildError::Ejection);
        }
        if self.health_check_interval.is_some() {
            let c = self.health_check().unwrap_or_default();
            if c.interval.is_zero() || c.timeout.is_zero() || c.rise == 0 || c.fall == 0 {
                return Err(BuildError::HealthCheck);
            }
        }
        if let Some(name) = self.limits().zero() {
            return Err(BuildError::ZeroLimit(name));
        }
        if self.protocol == Transport::Http {
            self.validate_http()?;
        }
        if self.accept_burst.is_some() && self.accept_rate.is_none() {
            return Err(BuildError::Requires {
                key: "accept_burst",
                requires: "accept_rate",
            });
        }
        if self.protocol.tcp() || self.protocol == Transport::Http {
            self.validate_tls()?;
        }
        if self.protocol.tcp() {
            self.validate_sni()?;
            if !(4096..=1 << 30).contains(&self.pipe_size) {
                return Err(BuildError::PipeSize(self.pipe_size));
            }
            if !(1024..=16 << 20).contains(&self.buffer_size) {
                return Err(BuildError::BufferSize(self.buffer_size));
            }
        }
        if self.protocol.udp() {
            if self.proxy_protocol == Some(ProxyProtocol::V1) {
                return Err(BuildError::ProxyProtocolV1Udp);
            }
            if self.max_sessions == 0 {
                return Err(BuildError::MaxSessions);
            }
            if !(1..=MAX_BATCH).contains(&self.batch_size) {
                return Err(BuildError::BatchSize(self.batch_size));
            }
        }
        Ok(())
    }

    /// The rules of an HTTP forward: sizes in range, and each route's own settings.
    fn validate_http(&self) -> Result<(), BuildError> {
        if !(1 << 10..=1 << 20).contains(&self.max_header_size) {
            return Err(BuildError::Invalid {
                key: "max_header_size",
                why: format!(
                    "{} is outside 1K to 1M",
                    crate::value::show_size(self.max_header_size)
                ),
            });
        }
        if self.max_request_body == Some(0) {
            return Err(BuildError::ZeroLimit("max_request_body"));
        }
        if let Some(d) = self.request_timeout {
            at_most_max("request_timeout", d)?;
        }
        if let Some(d) = self.header_timeout {
            at_most_max("header_timeout", d)?;
        }
        let routes = self.http_routes();
        let mut seen = std::collections::HashSet::new();
        for route in &routes {
            if !seen.insert((&route.host, &route.path)) {
                return Err(BuildError::Invalid {
                    key: "route",
                    why: format!("`{route}`: a second route for the same host and path"),
                });
            }
            let mut spec = route
                .spec(self)
                .map_err(|why| BuildError::Invalid { key: "route", why })?;
            // The route's upstream side, checked as the TCP settings it is.
            spec.routes.clear();
            spec.protocol = Transport::Tcp;
            if !spec.upstream_tls {
                // A route that turns TLS off leaves the forward's upstream_* keys unused
                // (they were checked with the forward); its own must still have TLS.
                let own = |key: &str| route.options.iter().any(|(k, _)| k == key);
                if !own("upstream_ca") {
                    spec.upstream_ca = None;
                }
                if !own("upstream_server_name") {
                    spec.upstream_server_name = None;
                }
                if !own("upstream_insecure") {
                    spec.upstream_insecure = false;
                }
            }
            spec.validate().map_err(|e| BuildError::Invalid {
                key: "route",
                why: format!("`{route}`: {e}"),
            })?;
        }
        Ok(())
    }

    /// The SNI routes of a TCP forward: one per name, each a valid TCP forward's upstream.
    fn validate_sni(&self) -> Result<(), BuildError> {
        let mut seen = std::collections::HashSet::new();
        for route in &self.sni {
            if !seen.insert(&route.host) {
                return Err(BuildError::Invalid {
                    key: "sni",
                    why: format!("`{route}`: a second route for the same name"),
                });
            }
            let mut spec = route
                .spec(self)
                .map_err(|why| BuildError::Invalid { key: "sni", why })?;
            spec.protocol = Transport::Tcp;
            spec.validate().map_err(|e| BuildError::Invalid {
                key: "sni",
                why: format!("`{route}`: {e}"),
            })?;
        }
        if !self.sni.is_empty() {
            at_most_max("sni_timeout", self.sni_timeout)?;
        }
        Ok(())
    }

    /// The rules of TLS termination: a certificate comes with its key, client CAs need
    /// something to terminate with, and routing by SNI passes TLS through instead.
    fn validate_tls(&self) -> Result<(), BuildError> {
        let terminating = self.tls_cert.is_some() || self.tls_dir.is_some();
        if self.tls_cert.is_some() && self.tls_key.is_none() {
            return Err(BuildError::Requires {
                key: "tls_cert",
                requires: "tls_key",
            });
        }
        if self.tls_key.is_some() && self.tls_cert.is_none() {
            return Err(BuildError::Requires {
                key: "tls_key",
                requires: "tls_cert",
            });
        }
        if self.tls_client_ca.is_some() && !terminating {
            return Err(BuildError::Requires {
                key: "tls_client_ca",
                requires: "tls_cert or tls_dir",
            });
        }
        if terminating && !self.sni.is_empty() {
            return Err(BuildError::Invalid {
                key: "sni",
                why: "SNI routes pass TLS through to the upstreams, tls_cert and tls_dir \
                      terminate it: a forward does one or the other"
                    .to_owned(),
            });
        }
        at_most_max("tls_handshake_timeout", self.tls_handshake_timeout)?;
        for (key, set) in [
            ("upstream_ca", self.upstream_ca.is_some()),
            ("upstream_server_name", self.upstream_server_name.is_some()),
            ("upstream_insecure", self.upstream_insecure),
        ] {
            // A service proxy's `https:NAME:PORT` URLs say which Services are reached
            // over TLS: these keys apply to them without upstream_tls.
            if set && !self.upstream_tls && !self.service_proxy {
                return Err(BuildError::Requires {
                    key,
                    requires: "upstream_tls",
                });
            }
        }
        if self.upstream_insecure && self.upstream_ca.is_some() {
            return Err(BuildError::Invalid {
                key: "upstream_insecure",
                why: "upstream_ca says whom to trust, upstream_insecure trusts anyone: set one"
                    .to_owned(),
            });
        }
        if self.upstream_tls && !self.sni.is_empty() {
            return Err(BuildError::Invalid {
                key: "sni",
                why: "SNI routes pass the client's TLS through; upstream_tls would wrap it in \
                      TLS again"
                    .to_owned(),
            });
        }
        Ok(())
    }

    /// An HTTP forward's routes: `route`, and `target` as the route `/=TARGET` when set.
    pub fn http_routes(&self) -> Vec<Route> {
        let default = (self.target.clone()).map(|t| Route::new(RouteHost::Any, "/", t));
        self.routes.iter().cloned().chain(default).collect()
    }

    /// Refuses any duration longer than [`MAX_DURATION`](crate::MAX_DURATION) (the
    /// timers check their own), naming the key: deadlines are counted from them.
    fn durations_at_most_max(&self) -> Result<(), BuildError> {
        if let Balance::ClientIp { timeout } = self.balance() {
            at_most_max("affinity_timeout", timeout)?;
        }
        at_most_max("eject_for", self.eject_for)?;
        at_most_max("health_check_interval", self.health_check_interval)?;
        at_most_max("health_check_timeout", self.health_check_timeout)?;
        at_most_max("proxy_header_timeout", self.proxy_header_timeout)?;
        at_most_max("dns_refresh", self.dns_refresh)?;
        at_most_max("dns_fallback_ttl", self.dns_fallback_ttl)?;
        at_most_max("dns_min_ttl", self.dns_min_ttl)?;
        at_most_max("dns_max_ttl", self.dns_max_ttl)
    }

    /// The timers.
    pub fn timeouts(&self) -> Timeouts {
        Timeouts {
            connect: self.connect_timeout,
            connect_total: self.connect_total_timeout,
            idle: self.idle_timeout,
            half_close: self.half_close_timeout,
            max_lifetime: self.max_lifetime,
            udp_session_idle: self.udp_idle_timeout,
        }
    }

    /// Sets every timer from `t`.
    pub fn set_timeouts(&mut self, t: Timeouts) {
        self.connect_timeout = t.connect;
        self.connect_total_timeout = t.connect_total;
        self.idle_timeout = t.idle;
        self.half_close_timeout = t.half_close;
        self.max_lifetime = t.max_lifetime;
        self.udp_idle_timeout = t.udp_session_idle;
    }

    /// How long resolved answers are used.
    pub fn cache(&self) -> CachePolicy {
        CachePolicy {
            refresh: self.dns_refresh,
            fallback_ttl: self.dns_fallback_ttl,
            min_ttl: self.dns_min_ttl,
            max_ttl: self.dns_max_ttl,
        }
    }

    /// Sets the `dns_*` keys from `c`.
    pub fn set_cache(&mut self, c: CachePolicy) {
        self.dns_refresh = c.refresh;
        self.dns_fallback_ttl = c.fallback_ttl;
        self.dns_min_ttl = c.min_ttl;
        self.dns_max_ttl = c.max_ttl;
    }

    /// The balancing policy, with `affinity_timeout` applied.
    pub fn balance(&self) -> Balance {
        match (self.balance, self.affinity_timeout) {
            (Balance::ClientIp { .. }, Some(timeout)) => Balance::ClientIp { timeout },
            (b, _) => b,
        }
    }

    /// Passive ejection, if on.
    pub fn ejection(&self) -> Option<Ejection> {
        self.eject_after.map(|n| Ejection::new(n, self.eject_for))
    }

    /// Sets `eject_after` and `eject_for` from `e` (`None` turns ejection off).
    pub fn set_ejection(&mut self, e: Option<Ejection>) {
        self.eject_after = e.map(|e| e.failures);
        if let Some(e) = e {
            self.eject_for = e.backoff;
        }
    }

    /// Active health checks, if on.
    pub fn health_check(&self) -> Option<HealthCheck> {
        self.health_check_interval.map(|interval| {
            HealthCheck::every(interval).with(
                self.health_check_timeout,
                self.health_check_rise,
                self.health_check_fall,
            )
        })
    }

    /// Sets the `health_check_*` keys from `c` (`None` turns checks off).
    pub fn set_health_check(&mut self, c: Option<HealthCheck>) {
        self.health_check_interval = c.map(|c| c.interval);
        if let Some(c) = c {
            self.health_check_timeout = c.timeout;
            self.health_check_rise = c.rise;
            self.health_check_fall = c.fall;
        }
    }

    /// Which clients are served.
    pub fn access(&self) -> Access {
        Access::new(self.allow.iter().copied(), self.deny.iter().copied())
    }

    /// The limits on new connections (or sessions).
    pub fn limits(&self) -> Limits {
        Limits {
            max_connections: self.max_connections,
            max_per_source: self.max_per_source,
            accept_rate: self
                .accept_rate
                .map(|n| Rate::per_second(n).burst(self.accept_burst.unwrap_or(n))),
        }
    }

    /// Sets the limit keys from `l`.
    pub fn set_limits(&mut self, l: Limits) {
        self.max_connections = l.max_connections;
        self.max_per_source = l.max_per_source;
        self.accept_rate = l.accept_rate.map(|r| r.per_second);
        self.accept_burst = l.accept_rate.map(|r| r.burst);
    }

    /// Reading PROXY headers from trusted peers, if on.
    pub fn accept_proxy(&self) -> Option<AcceptProxy> {
        (!self.accept_proxy_from.is_empty()).then(|| {
            AcceptProxy::new(self.accept_proxy_from.iter().copied())
                .timeout(self.proxy_header_timeout)
        })
    }

    /// Sets `accept_proxy_from` and `proxy_header_timeout` from `a` (`None`: off).
    pub fn set_accept_proxy(&mut self, a: Option<AcceptProxy>) {
        self.accept_proxy_from = a.as_ref().map(|a| a.trusted.clone()).unwrap_or_default();
        if let Some(a) = a {
            self.proxy_header_timeout = a.timeout;
        }
    }

    pub(crate) fn listen_options(&self) -> ListenOptions {
        ListenOptions {
            reuse_port: self.reuse_port,
            dual_stack: self.dual_stack,
            backlog: self.backlog,
        }
    }

    /// The resolver this spec's targets need (its `target` and its SNI routes'): hickory
    /// for an SRV target whatever `resolver` says (the C library has no SRV lookup), asking `name_servers` when set;
    /// the system resolver for IP targets (so no DNS configuration is read for them).
    ///
    /// # Errors
    ///
    /// hickory cannot read the system's DNS configuration.
    pub fn make_resolver(&self) -> std::io::Result<Arc<dyn Resolve>> {
        let sni_targets = self.sni.iter().map(|route| &route.target);
        let hickory = (self.target.iter().chain(sni_targets)).any(|target| {
            let kind = match (self.resolver, target.host()) {
                // Name servers are hickory's: asking them means hickory.
                (_, Host::Name(_)) if !self.name_servers.is_empty() => ResolverKind::Hickory,
                (kind, _) => kind.for_target(target),
            };
            kind == ResolverKind::Hickory
        });
        if !hickory {
            return Ok(Arc::new(SystemResolver::new()));
        }
        let hickory = if self.name_servers.is_empty() {
            HickoryResolver::from_system_conf()
        } else {
            HickoryResolver::with_name_servers(&self.name_servers)
        };
        Ok(Arc::new(hickory?))
    }
}

/// Refuses no listen address, or one given twice.
pub(crate) fn check_listen(listen: &[SocketAddr]) -> Result<(), BuildError> {
    if listen.is_empty() {
        return Err(BuildError::NoListenAddress);
    }
    for (i, a) in listen.iter().enumerate() {
        if a.port() != 0 && listen[..i].contains(a) {
            return Err(BuildError::DuplicateListenAddress(*a));
        }
    }
    Ok(())
}
