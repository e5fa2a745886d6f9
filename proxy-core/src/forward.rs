//! What TCP and UDP forwarders share: listen addresses, the target and how it is
//! resolved, timeouts and listener options.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::balance::{Balance, Balancer, Ejection, HealthCheck, spawn_health_checks};
use crate::handle::ForwarderHandle;
use crate::listen::ListenOptions;
use crate::resolve::{CachePolicy, Resolve, ResolveCache, SystemResolver};
use crate::stats::Stats;
use crate::{BuildError, Error, ErrorKind, Side, Target, TcpForwarder, Timeouts, UdpForwarder};

/// A TCP or a UDP forwarder, for code that handles both, such as
/// [`ForwarderHandle::reload`].
#[derive(Clone, Debug)]
pub enum Forwarder {
    /// A [`TcpForwarder`].
    Tcp(TcpForwarder),
    /// A [`UdpForwarder`].
    Udp(UdpForwarder),
}

impl Forwarder {
    /// Starts it; see [`TcpForwarder::start`] and [`UdpForwarder::start`].
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Bind`](crate::ErrorKind::Bind) naming the address that cannot be bound.
    pub fn start(&self) -> Result<ForwarderHandle, Error> {
        match self {
            Forwarder::Tcp(f) => f.start(),
            Forwarder::Udp(f) => f.start(),
        }
    }

    /// The listen addresses, as configured.
    pub fn listen_addrs(&self) -> &[SocketAddr] {
        match self {
            Forwarder::Tcp(f) => f.listen_addrs(),
            Forwarder::Udp(f) => f.listen_addrs(),
        }
    }

    /// The upstream target.
    pub fn target(&self) -> &Target {
        match self {
            Forwarder::Tcp(f) => f.target(),
            Forwarder::Udp(f) => f.target(),
        }
    }
}

impl From<TcpForwarder> for Forwarder {
    fn from(f: TcpForwarder) -> Self {
        Forwarder::Tcp(f)
    }
}

impl From<UdpForwarder> for Forwarder {
    fn from(f: UdpForwarder) -> Self {
        Forwarder::Udp(f)
    }
}

/// The settings every forwarder has.
#[derive(Clone)]
pub(crate) struct Common {
    pub(crate) listen: Vec<SocketAddr>,
    pub(crate) target: Target,
    pub(crate) resolver: Arc<dyn Resolve>,
    pub(crate) cache: CachePolicy,
    pub(crate) timeouts: Timeouts,
    pub(crate) listen_options: ListenOptions,
    pub(crate) balance: Balance,
    pub(crate) ejection: Option<Ejection>,
    pub(crate) health_check: Option<HealthCheck>,
    pub(crate) access: crate::Access,
    pub(crate) limits: crate::Limits,
}

impl Common {
    /// The defaults: the system resolver, default cache policy, timeouts and options.
    pub(crate) fn new(listen: impl IntoIterator<Item = SocketAddr>, target: Target) -> Self {
        Common {
            listen: listen.into_iter().collect(),
            target,
            resolver: Arc::new(SystemResolver::new()),
            cache: CachePolicy::default(),
            timeouts: Timeouts::default(),
            listen_options: ListenOptions::default(),
            balance: Balance::default(),
            ejection: None,
            health_check: None,
            access: crate::Access::default(),
            limits: crate::Limits::default(),
        }
    }

    pub(crate) fn validate(&self) -> Result<(), BuildError> {
        if self.listen.is_empty() {
            return Err(BuildError::NoListenAddress);
        }
        for (i, a) in self.listen.iter().enumerate() {
            if a.port() != 0 && self.listen[..i].contains(a) {
                return Err(BuildError::DuplicateListenAddress(*a));
            }
        }
        self.timeouts.validate()?;
        self.durations_at_most_max()?;
        if self.listen_options.backlog == 0 {
            return Err(BuildError::Backlog);
        }
        if let Balance::ClientIp { timeout } = self.balance
            && timeout.is_zero()
        {
            return Err(BuildError::AffinityTimeout);
        }
        if self
            .ejection
            .is_some_and(|e| e.failures == 0 || e.backoff.is_zero())
        {
            return Err(BuildError::Ejection);
        }
        if let Some(name) = self.limits.zero() {
            return Err(BuildError::ZeroLimit(name));
        }
        Ok(())
    }

    /// Refuses any duration (besides the [`Timeouts`], which check their own) longer than
    /// [`MAX_DURATION`](crate::MAX_DURATION), naming the setting: timers and deadlines are
    /// counted from it.
    fn durations_at_most_max(&self) -> Result<(), BuildError> {
        use crate::timeout::at_most_max;
        if let Balance::ClientIp { timeout } = self.balance {
            at_most_max("affinity_timeout", timeout)?;
        }
        at_most_max("eject_for", self.ejection.map(|e| e.backoff))?;
        at_most_max(
            "health_check_interval",
            self.health_check.map(|c| c.interval),
        )?;
        at_most_max("health_check_timeout", self.health_check.map(|c| c.timeout))?;
        at_most_max("dns_refresh", self.cache.refresh)?;
        at_most_max("fallback_ttl", self.cache.fallback_ttl)?;
        at_most_max("min_ttl", self.cache.min_ttl)?;
        at_most_max("max_ttl", self.cache.max_ttl)
    }

    /// A generation's background work on `cache`: its refresher, and the balancer with
    /// its health checks (which stop with the refresher).
    pub(crate) fn background(
        &self,
        cache: &Arc<ResolveCache>,
        base: &crate::handle::Base,
    ) -> (Arc<crate::handle::Refresher>, Arc<Balancer>) {
        let refresher = Arc::new(crate::handle::Refresher::spawn(cache, &base.closing));
        let balancer =
            Arc::new(Balancer::new(self.balance, self.ejection).counting(base.stats.clone()));
        if let Some(check) = self.health_check {
            spawn_health_checks(
                check,
                cache.clone(),
                balancer.clone(),
                base.stats.clone(),
                refresher.token(),
            );
        }
        (refresher, balancer)
    }

    /// A cache of the target's addresses, fed by the configured resolver.
    pub(crate) fn resolve_cache(&self, stats: &Arc<Stats>) -> Arc<ResolveCache> {
        Arc::new(ResolveCache::new(
            self.target.clone(),
            self.resolver.clone(),
            self.cache,
            stats.clone(),
        ))
    }
}

/// A listen address could not be bound or set up.
pub(crate) fn bind_error(addr: SocketAddr, e: std::io::Error) -> Error {
    Error::new(ErrorKind::Bind, Side::Internal)
        .with_context(addr.to_string())
        .with_source(e)
}

impl std::fmt::Debug for Common {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Common")
            .field("listen", &self.listen)
            .field("target", &self.target)
            .field("cache", &self.cache)
            .field("timeouts", &self.timeouts)
            .field("listen_options", &self.listen_options)
            .field("balance", &self.balance)
            .field("ejection", &self.ejection)
            .field("health_check", &self.health_check)
            .field("access", &self.access)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// The builder setters for [`Common`] settings, shared by the TCP and UDP builders (each
/// holds its settings in `self.config.common`).
macro_rules! common_setters {
    () => {
        /// The resolver for host-name targets. Default:
        /// [`SystemResolver`](crate::resolve::SystemResolver), the C library's.
        pub fn resolver(mut self, resolver: impl crate::resolve::Resolve) -> Self {
            self.config.common.resolver = std::sync::Arc::new(resolver);
            self
        }

        /// A resolver shared with other forwarders.
        pub fn shared_resolver(
            mut self,
            resolver: std::sync::Arc<dyn crate::resolve::Resolve>,
        ) -> Self {
            self.config.common.resolver = resolver;
            self
        }

        /// How long resolved answers are used. Default:
        /// [`CachePolicy::default`](crate::resolve::CachePolicy::default). New connections
        /// and sessions use the current answer.
        pub fn cache(mut self, policy: crate::resolve::CachePolicy) -> Self {
            self.config.common.cache = policy;
            self
        }

        /// All timeouts at once. Default: [`Timeouts::default`](crate::Timeouts::default).
        pub fn timeouts(mut self, timeouts: crate::Timeouts) -> Self {
            self.config.common.timeouts = timeouts;
            self
        }

        /// Sets `SO_REUSEPORT` on the listening sockets, so several processes or
        /// forwarders can share a port and the kernel balances among them. Default off.
        pub fn reuse_port(mut self, on: bool) -> Self {
            self.config.common.listen_options.reuse_port = on;
            self
        }

        /// How the upstream address of each new connection or session is picked among the
        /// target's addresses. Default [`Balance::RoundRobin`](crate::Balance::RoundRobin).
        pub fn balance(mut self, balance: crate::Balance) -> Self {
            self.config.common.balance = balance;
            self
        }

        /// Passive ejection of addresses that fail again and again; `None` (the default)
        /// keeps trying every address. See [`Ejection`](crate::Ejection).
        pub fn ejection(mut self, ejection: impl Into<Option<crate::Ejection>>) -> Self {
            self.config.common.ejection = ejection.into();
            self
        }

        /// Active TCP health checks of the target's addresses; `None` (the default) checks
        /// nothing. See [`HealthCheck`](crate::HealthCheck).
        pub fn health_check(mut self, check: impl Into<Option<crate::HealthCheck>>) -> Self {
            self.config.common.health_check = check.into();
            self
        }

        /// Which clients are served; see [`Access`](crate::Access). Default: everyone.
        pub fn access(mut self, access: crate::Access) -> Self {
            self.config.common.access = access;
            self
        }

        /// Limits on new connections (or sessions): how many at once, per client IP, and
        /// how fast; see [`Limits`](crate::Limits). Default: none.
        pub fn limits(mut self, limits: crate::Limits) -> Self {
            self.config.common.limits = limits;
            self
        }

        /// Whether a `[::]` listener is dual-stack (also takes IPv4). Default on; turn it
        /// off to bind `0.0.0.0` and `[::]` side by side.
        pub fn dual_stack(mut self, on: bool) -> Self {
            self.config.common.listen_options.dual_stack = on;
            self
        }
    };
}

pub(crate) use common_setters;

/// The accessors both forwarders have (each holds `config: Arc<Config>` with the common
/// settings in `config.common`).
macro_rules! common_accessors {
    () => {
        /// The upstream target.
        pub fn target(&self) -> &crate::Target {
            &self.config.common.target
        }

        /// The listen addresses, as configured.
        pub fn listen_addrs(&self) -> &[std::net::SocketAddr] {
            &self.config.common.listen
        }

        /// The timeouts.
        pub fn timeouts(&self) -> &crate::Timeouts {
            &self.config.common.timeouts
        }

        /// The same forwarder listening on other addresses.
        ///
        /// # Errors
        ///
        /// As `build()` does for listen addresses: none, or one given twice.
        pub fn with_listen(
            &self,
            listen: impl IntoIterator<Item = std::net::SocketAddr>,
        ) -> Result<Self, crate::BuildError> {
            let mut config = (*self.config).clone();
            config.common.listen = listen.into_iter().collect();
            config.common.validate()?;
            Ok(Self {
                config: std::sync::Arc::new(config),
            })
        }
    };
}

pub(crate) use common_accessors;
