//! The plans the config file and its supervisor still use (until they read specs).
#![allow(missing_docs)]

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use clap::ValueEnum;
use proxy_core::resolve::{CachePolicy, Resolve};
use proxy_core::{
    AcceptProxy, Access, Balance, Ejection, HealthCheck, Limits, ProxyProtocol, RelayMode, Target,
    TcpForwarder, TcpForwarderBuilder, Timeouts, UdpForwarder, UdpForwarderBuilder,
};

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
