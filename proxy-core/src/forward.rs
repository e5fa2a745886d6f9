//! What TCP and UDP forwarders share: listen addresses, the target and how it is
//! resolved, timeouts and listener options.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::balance::{Balance, Balancer, Ejection, HealthCheck, spawn_health_checks};
use crate::handle::ForwarderHandle;
use crate::listen::ListenOptions;
use crate::resolve::{CachePolicy, Resolve, ResolveCache};
use crate::spec::ForwardSpec;
use crate::stats::Stats;
use crate::{Error, ErrorKind, Side, Target, TcpForwarder, Timeouts, UdpForwarder};

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
    /// The settings of a validated `spec`, resolving through `resolver`.
    pub(crate) fn from_spec(spec: &ForwardSpec, resolver: Arc<dyn Resolve>) -> Self {
        Common {
            listen: spec.listen.addrs(),
            target: (spec.target.clone()).expect("a validated spec has a target"),
            resolver,
            cache: spec.cache(),
            timeouts: spec.timeouts(),
            listen_options: spec.listen_options(),
            balance: spec.balance(),
            ejection: spec.ejection(),
            health_check: spec.health_check(),
            access: spec.access(),
            limits: spec.limits(),
        }
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

/// The builder setters both builders have (each holds a [`ForwardSpec`] in `self.spec`
/// and the resolver, if given, in `self.resolver`).
macro_rules! common_setters {
    () => {
        /// Starts from every setting of `spec` (its protocol aside), resolving through
        /// `resolver`.
        pub fn from_spec(
            spec: crate::ForwardSpec,
            resolver: std::sync::Arc<dyn crate::resolve::Resolve>,
        ) -> Self {
            Builder {
                spec,
                resolver: Some(resolver),
            }
        }

        /// The resolver for host-name targets. Default: as the spec's `resolver` and
        /// `name_servers` keys say ([`ForwardSpec::make_resolver`](crate::ForwardSpec::make_resolver)):
        /// the C library's, or hickory for `srv:` targets.
        pub fn resolver(mut self, resolver: impl crate::resolve::Resolve) -> Self {
            self.resolver = Some(std::sync::Arc::new(resolver));
            self
        }

        /// A resolver shared with other forwarders.
        pub fn shared_resolver(
            mut self,
            resolver: std::sync::Arc<dyn crate::resolve::Resolve>,
        ) -> Self {
            self.resolver = Some(resolver);
            self
        }

        /// How long resolved answers are used (the `dns_*` keys). Default:
        /// [`CachePolicy::default`](crate::resolve::CachePolicy::default). New connections
        /// and sessions use the current answer.
        pub fn cache(mut self, policy: crate::resolve::CachePolicy) -> Self {
            self.spec.set_cache(policy);
            self
        }

        /// All timeouts at once. Default: [`Timeouts::default`](crate::Timeouts::default).
        pub fn timeouts(mut self, timeouts: crate::Timeouts) -> Self {
            self.spec.set_timeouts(timeouts);
            self
        }

        /// Sets `SO_REUSEPORT` on the listening sockets, so several processes or
        /// forwarders can share a port and the kernel balances among them. Default off.
        pub fn reuse_port(mut self, on: bool) -> Self {
            self.spec.reuse_port = on;
            self
        }

        /// How the upstream address of each new connection or session is picked among the
        /// target's addresses. Default [`Balance::RoundRobin`](crate::Balance::RoundRobin).
        pub fn balance(mut self, balance: crate::Balance) -> Self {
            self.spec.balance = balance;
            self.spec.affinity_timeout = None;
            self
        }

        /// Passive ejection of addresses that fail again and again; `None` (the default)
        /// keeps trying every address. See [`Ejection`](crate::Ejection).
        pub fn ejection(mut self, ejection: impl Into<Option<crate::Ejection>>) -> Self {
            self.spec.set_ejection(ejection.into());
            self
        }

        /// Active TCP health checks of the target's addresses; `None` (the default) checks
        /// nothing. See [`HealthCheck`](crate::HealthCheck).
        pub fn health_check(mut self, check: impl Into<Option<crate::HealthCheck>>) -> Self {
            self.spec.set_health_check(check.into());
            self
        }

        /// Which clients are served; see [`Access`](crate::Access). Default: everyone.
        pub fn access(mut self, access: crate::Access) -> Self {
            self.spec.allow = access.allow;
            self.spec.deny = access.deny;
            self
        }

        /// Limits on new connections (or sessions): how many at once, per client IP, and
        /// how fast; see [`Limits`](crate::Limits). Default: none.
        pub fn limits(mut self, limits: crate::Limits) -> Self {
            self.spec.set_limits(limits);
            self
        }

        /// Whether a `[::]` listener is dual-stack (also takes IPv4). Default on; turn it
        /// off to bind `0.0.0.0` and `[::]` side by side.
        pub fn dual_stack(mut self, on: bool) -> Self {
            self.spec.dual_stack = on;
            self
        }

        /// Sets the setting `key` from its text, as [`ForwardSpec::set`](crate::ForwardSpec::set).
        ///
        /// # Errors
        ///
        /// A [`SetError`](crate::spec::SetError) naming the key and the value.
        pub fn set(mut self, key: &str, value: &str) -> Result<Self, crate::spec::SetError> {
            self.spec.set(key, value)?;
            Ok(self)
        }

        /// The settings so far.
        pub fn spec(&self) -> &crate::ForwardSpec {
            &self.spec
        }

        /// Validates the settings and sets up the resolver.
        fn checked(
            self,
        ) -> Result<(crate::ForwardSpec, crate::forward::Common), crate::BuildError> {
            self.spec.validate()?;
            let resolver = match self.resolver {
                Some(r) => r,
                None => self
                    .spec
                    .make_resolver()
                    .map_err(|e| crate::BuildError::Resolver(e.to_string()))?,
            };
            let common = crate::forward::Common::from_spec(&self.spec, resolver);
            Ok((self.spec, common))
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
            crate::spec::check_listen(&config.common.listen)?;
            Ok(Self {
                config: std::sync::Arc::new(config),
            })
        }
    };
}

pub(crate) use common_accessors;
