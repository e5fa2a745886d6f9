//! [`Upstream`]: one target's addresses kept fresh, balanced over and connected to, as a
//! TCP forwarder does for each connection, for layers built on the core (the HTTP layer's
//! routes connect through one each).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use tokio::net::TcpStream;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::balance::{Balancer, spawn_health_checks};
use crate::dial::Dial;
use crate::handle::{Refresher, StatsReader};
use crate::resolve::{Resolve, ResolveCache};
use crate::stats::Stats;
use crate::{BuildError, Error, ForwardSpec, Target, Timeouts};

/// One target's addresses, looked up and kept fresh as its TTLs say, balanced over with
/// the spec's policy, ejection and health checks, and connected to with its timeouts and
/// failover: a [`TcpForwarder`](crate::TcpForwarder)'s upstream side, without listeners.
///
/// Cheap to clone; clones share one state. The background work (DNS refreshes, health
/// checks) stops when the last clone is dropped.
///
/// # Examples
///
/// ```
/// use proxy_core::{ForwardSpec, Upstream};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// let mut spec = ForwardSpec::default();
/// spec.set("target", &listener.local_addr()?.to_string())?;
/// spec.set("balance", "least-connections")?;
/// let upstream = Upstream::new(&spec, spec.make_resolver()?)?;
///
/// // The addresses to try, the balancer's pick first; then the first that accepts.
/// let order = upstream.order(None).await?;
/// let (stream, addr) = upstream.connect(order, None).await?;
/// assert_eq!(addr, listener.local_addr()?);
/// // Count the connection open while it serves, for least connections.
/// let _open = upstream.open(addr);
/// # drop(stream);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Upstream {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    target: Target,
    timeouts: Timeouts,
    cache: Arc<ResolveCache>,
    balancer: Arc<Balancer>,
    stats: Arc<Stats>,
    _refresher: Refresher,
    _stop: DropGuard,
}

/// A connection counted as open on an upstream address, for least connections and the
/// stats, until dropped. Made by [`Upstream::open`].
#[derive(Debug)]
#[must_use = "the connection counts as open only while the guard lives"]
pub struct UpstreamOpen {
    balancer: Arc<Balancer>,
    addr: SocketAddr,
}

// ===== impl Upstream =====

impl Upstream {
    /// The upstream of `spec`'s target, with its DNS, balancing, health-check and connect
    /// settings, resolving through `resolver` (see
    /// [`ForwardSpec::make_resolver`]). Listen, relay and limit settings are not used.
    ///
    /// # Errors
    ///
    /// [`BuildError::Missing`] when `spec` has no target.
    ///
    /// # Panics
    ///
    /// When called outside a tokio runtime (the DNS refresher is a task).
    pub fn new(spec: &ForwardSpec, resolver: Arc<dyn Resolve>) -> Result<Upstream, BuildError> {
        let target = spec.target.clone().ok_or(BuildError::Missing("target"))?;
        let stats = Arc::new(Stats::default());
        let stop = CancellationToken::new();
        let cache = Arc::new(ResolveCache::new(
            target.clone(),
            resolver,
            spec.cache(),
            stats.clone(),
        ));
        let refresher = Refresher::spawn([&cache], &stop);
        let balancer =
            Arc::new(Balancer::new(spec.balance(), spec.ejection()).counting(stats.clone()));
        if let Some(check) = spec.health_check() {
            spawn_health_checks(
                check,
                cache.clone(),
                balancer.clone(),
                stats.clone(),
                stop.child_token(),
            );
        }
        Ok(Upstream {
            inner: Arc::new(Inner {
                target,
                timeouts: spec.timeouts(),
                cache,
                balancer,
                stats,
                _refresher: refresher,
                _stop: stop.drop_guard(),
            }),
        })
    }

    /// The target.
    pub fn target(&self) -> &Target {
        &self.inner.target
    }

    /// The timers: `connect` bounds each attempt, `connect_total` a lookup and all
    /// attempts together.
    pub fn timeouts(&self) -> &Timeouts {
        &self.inner.timeouts
    }

    fn dial(&self) -> Dial<'_> {
        Dial {
            cache: &self.inner.cache,
            balancer: &self.inner.balancer,
            stats: &self.inner.stats,
            timeouts: &self.inner.timeouts,
        }
    }

    /// The addresses to try for one new connection from `client`, best first: the
    /// policy's pick, then the others to fall back on; ejected and unhealthy ones are
    /// left out. Looks the target up when no answer is cached yet, within the
    /// `connect_total` budget.
    ///
    /// # Errors
    ///
    /// The lookup failed or ran out of time, or every address is ejected
    /// ([`ErrorKind::Unavailable`](crate::ErrorKind::Unavailable)).
    pub async fn order(&self, client: Option<IpAddr>) -> Result<Vec<SocketAddr>, Error> {
        let dial = self.dial();
        dial.order(client, dial.deadline()).await
    }

    /// Connects to the first address of `order` that accepts, Happy Eyeballs style: an
    /// attempt that has not finished in 250 ms gets the next address raced beside it, a
    /// failure starts the next at once. Each attempt has the `connect` timeout, all of
    /// them the `connect_total` budget. Each outcome counts toward the address's
    /// ejection; a success sticks `client` to it (client-IP affinity).
    ///
    /// # Errors
    ///
    /// The last attempt's error, or a budget timeout; an empty `order` is a resolve error.
    pub async fn connect(
        &self,
        order: Vec<SocketAddr>,
        client: Option<IpAddr>,
    ) -> Result<(TcpStream, SocketAddr), Error> {
        let dial = self.dial();
        dial.race(order, client, dial.deadline()).await
    }

    /// Counts a connection open on `addr` until the guard drops: least connections and
    /// two random choices weigh it, and the endpoint stats show it.
    pub fn open(&self, addr: SocketAddr) -> UpstreamOpen {
        self.inner.balancer.acquire_counted(addr);
        UpstreamOpen {
            balancer: self.inner.balancer.clone(),
            addr,
        }
    }

    /// Records how a use of `addr` went, beyond connecting (an HTTP upstream that reset
    /// a request, say): a failure counts toward its ejection, a success clears the count.
    pub fn report(&self, addr: SocketAddr, ok: bool) {
        self.inner.balancer.record(&self.inner.stats, addr, ok);
    }

    /// The addresses of the current answer, if there is one yet.
    pub fn addrs(&self) -> Option<Arc<[SocketAddr]>> {
        self.inner.cache.cached()
    }

    /// Reads this upstream's counters: connect failures, ejections, per-address stats.
    pub fn stats_reader(&self) -> StatsReader {
        StatsReader(self.inner.stats.clone())
    }
}

// ===== impl UpstreamOpen =====

impl UpstreamOpen {
    /// The address the connection is open on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for UpstreamOpen {
    fn drop(&mut self) {
        self.balancer.release_counted(self.addr);
    }
}
