//! What TCP and UDP forwarders share: listen addresses, the target and how it is
//! resolved, timeouts and listener options, and how they start: [`Protocol`] is what
//! differs, [`start`], [`start_from`], [`bind`] and [`spawn_listener`] the rest.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::balance::{Balance, Balancer, Ejection, HealthCheck, spawn_health_checks};
use crate::handle::{Base, Control, Current, ForwarderHandle, ListenerTask, Refresher};
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

    /// The upstream target; `None` for a TCP forward that routes only by SNI.
    pub fn target(&self) -> Option<&Target> {
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
    /// Where connections go; `None` only for a TCP forward with SNI routes and no default.
    pub(crate) target: Option<Target>,
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
            target: spec.target.clone(),
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
        let refresher = Arc::new(crate::handle::Refresher::spawn([cache], &base.closing));
        let balancer = self.balancer(cache, &base.stats, refresher.token());
        (refresher, balancer)
    }

    /// The balancer over `cache`'s addresses, with its health checks until `stop`.
    pub(crate) fn balancer(
        &self,
        cache: &Arc<ResolveCache>,
        stats: &Arc<Stats>,
        stop: CancellationToken,
    ) -> Arc<Balancer> {
        let balancer = Arc::new(Balancer::new(self.balance, self.ejection).counting(stats.clone()));
        if let Some(check) = self.health_check {
            spawn_health_checks(check, cache.clone(), balancer.clone(), stats.clone(), stop);
        }
        balancer
    }

    /// A cache of `target`'s addresses, fed by the configured resolver.
    pub(crate) fn resolve_cache(&self, target: &Target, stats: &Arc<Stats>) -> Arc<ResolveCache> {
        Arc::new(ResolveCache::new(
            target.clone(),
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

/// What a TCP and a UDP forwarder do differently to start and reload: how a listening
/// socket is bound or taken over, what one generation of settings holds, and the loop
/// that serves a socket.
pub(crate) trait Protocol {
    /// `tcp` or `udp`, for the logs.
    const NAME: &'static str;
    /// What [`start_from`] calls the sockets it is given: `listener` or `socket`.
    const GIVEN: &'static str;
    /// A listening socket bound elsewhere, as the standard library has it.
    type Std;
    /// A bound listening socket, ready to serve.
    type Socket;
    /// What a generation's connections or sessions share; a reload replaces it.
    type Shared: Generation;

    /// The settings both protocols have.
    fn common(&self) -> &Common;

    /// Binds `addr` with this forwarder's listener options.
    fn bind_one(&self, addr: SocketAddr) -> std::io::Result<Self::Socket>;

    /// The local address of a socket given to [`start_from`].
    fn given_addr(socket: &Self::Std) -> std::io::Result<SocketAddr>;

    /// Makes a socket given to [`start_from`], bound to `addr`, ready to serve.
    fn adopt(&self, socket: Self::Std, addr: SocketAddr) -> std::io::Result<Self::Socket>;

    /// The address `socket` is bound to.
    fn local_addr(socket: &Self::Socket) -> std::io::Result<SocketAddr>;

    /// The state new connections or sessions use: these settings, a resolve cache with
    /// its refresher; on a reload, `previous` is the generation it replaces.
    fn generation(&self, base: &Base, previous: Option<&Self::Shared>) -> Arc<Self::Shared>;

    /// The handle's side of this protocol.
    fn control(current: Arc<Current<Self::Shared>>) -> Control;

    /// Runs the loop serving `socket` until `stop`.
    fn spawn_loop(
        socket: Self::Socket,
        current: Arc<Current<Self::Shared>>,
        stop: CancellationToken,
    ) -> JoinHandle<()>;
}

/// What [`Protocol::Shared`] tells of itself.
pub(crate) trait Generation {
    /// The settings both protocols have.
    fn common(&self) -> &Common;

    /// The task keeping this generation's DNS answer fresh.
    fn refresher(&self) -> Arc<Refresher>;

    /// Where connections or sessions go, for the "Forwarding from" line.
    fn destination(&self) -> String {
        (self.common().target.as_ref()).map_or_else(String::new, ToString::to_string)
    }
}

/// Binds every listen address of `forwarder` and starts serving them.
pub(crate) fn start<P: Protocol>(forwarder: &P) -> Result<ForwarderHandle, Error> {
    let bound = bind(forwarder, &forwarder.common().listen)?;
    run(forwarder, bound)
}

/// Starts serving `given` sockets, bound elsewhere, instead of the listen addresses.
pub(crate) fn start_from<P: Protocol>(
    forwarder: &P,
    given: impl IntoIterator<Item = P::Std>,
) -> Result<ForwarderHandle, Error> {
    let bound = given
        .into_iter()
        .map(|socket| {
            let addr = P::given_addr(&socket).map_err(|e| {
                Error::new(ErrorKind::Bind, Side::Internal)
                    .with_context(format!("a given {}", P::GIVEN))
                    .with_source(e)
            })?;
            let socket = forwarder
                .adopt(socket, addr)
                .map_err(|e| bind_error(addr, e))?;
            Ok((addr, socket))
        })
        .collect::<Result<Vec<_>, Error>>()?;
    if bound.is_empty() {
        return Err(Error::new(ErrorKind::Bind, Side::Internal)
            .with_context(format!("no {}s given", P::GIVEN)));
    }
    run(forwarder, bound)
}

/// Starts the listener loops on `bound` sockets (each with the address it stands for).
fn run<P: Protocol>(
    forwarder: &P,
    bound: Vec<(SocketAddr, P::Socket)>,
) -> Result<ForwarderHandle, Error> {
    let base = Base::new();
    let current = Current::new(forwarder.generation(&base, None));
    let mut handle = ForwarderHandle::new(base.clone(), P::control(current.clone()));
    for (configured, socket) in bound {
        let stop = base.accepting.child_token();
        handle.push_listener(spawn_listener::<P>(
            current.clone(),
            socket,
            configured,
            stop,
        )?);
    }
    Ok(handle)
}

/// Binds `addrs` with `forwarder`'s listener options, all or none.
pub(crate) fn bind<P: Protocol>(
    forwarder: &P,
    addrs: &[SocketAddr],
) -> Result<Vec<(SocketAddr, P::Socket)>, Error> {
    addrs
        .iter()
        .map(|addr| {
            let socket = forwarder
                .bind_one(*addr)
                .map_err(|e| bind_error(*addr, e))?;
            Ok((*addr, socket))
        })
        .collect()
}

/// Starts serving `socket` until `stop`; each connection or session uses the generation
/// current when it starts.
pub(crate) fn spawn_listener<P: Protocol>(
    current: Arc<Current<P::Shared>>,
    socket: P::Socket,
    configured: SocketAddr,
    stop: CancellationToken,
) -> Result<ListenerTask, Error> {
    let bound = P::local_addr(&socket).map_err(|e| bind_error(configured, e))?;
    tracing::info!(
        protocol = P::NAME,
        "Forwarding from {bound} -> {}",
        current.get().destination()
    );
    let task = P::spawn_loop(socket, current, stop.clone());
    Ok(ListenerTask {
        configured,
        bound,
        stop,
        task,
    })
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
        /// The upstream target; `None` for a TCP forward that routes only by SNI (see
        /// the `sni` key).
        pub fn target(&self) -> Option<&crate::Target> {
            self.config.common.target.as_ref()
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A TCP echo server's address.
    async fn echo() -> Target {
        let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = upstream.local_addr().unwrap().into();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = upstream.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        target
    }

    #[tokio::test]
    async fn start_from_serves_the_given_sockets_and_names_what_is_missing() {
        let target = echo().await;
        let listen = ["127.0.0.1:0".parse().unwrap()];
        let tcp = TcpForwarder::builder(listen, target.clone())
            .build()
            .unwrap();
        let udp = UdpForwarder::builder(listen, target).build().unwrap();
        for (e, what) in [
            (tcp.start_from([]).unwrap_err(), "no listeners given"),
            (udp.start_from([]).unwrap_err(), "no sockets given"),
        ] {
            assert_eq!(e.kind(), ErrorKind::Bind);
            assert!(e.to_string().contains(what), "{e}");
        }

        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let handle = tcp.start_from([listener]).unwrap();
        assert_eq!(handle.local_addrs(), [addr]);
        let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
        client.write_all(b"ping").await.unwrap();
        let mut buf = [0; 4];
        client.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
        drop(client);
        handle.shutdown(Duration::from_secs(1)).await;

        // A wildcard socket gets packet info.
        let socket = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        let addr = socket.local_addr().unwrap();
        let handle = udp.start_from([socket]).unwrap();
        assert_eq!(handle.local_addrs(), [addr]);
        handle.shutdown(Duration::from_secs(1)).await;
    }
}
