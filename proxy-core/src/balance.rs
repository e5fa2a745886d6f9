//! Choosing an upstream address for each new connection or UDP session: the balancing
//! policy, client-IP affinity, and passive ejection of addresses that keep failing.
//! [`Picker`] offers the same choice to other crates, for endpoints named by keys of their
//! own.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// How a forwarder picks the upstream address of each new connection (TCP) or session
/// (UDP) among the target's resolved addresses. Whatever the pick, a connection that
/// cannot connect goes on to the other addresses.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use proxy_core::{Balance, TcpForwarder};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let forwarder = TcpForwarder::builder(["127.0.0.1:0".parse()?], "web.default:80".parse()?)
///     .balance(Balance::ClientIp { timeout: Duration::from_secs(600) })
///     .build()?;
/// # let _ = forwarder;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Balance {
    /// Each new connection starts at the next address, as kube-proxy does. The default.
    #[default]
    RoundRobin,
    /// The address with the fewest open connections (or sessions) of this forwarder; ties
    /// go round robin.
    LeastConnections,
    /// Two addresses at random, and of those the one with fewer open connections: nearly
    /// as even as least connections, without looking at every address.
    PowerOfTwoChoices,
    /// A client IP keeps going to the address it last connected to, while it comes back
    /// within `timeout` of its last connection and the address is healthy (kube-proxy's
    /// `sessionAffinity: ClientIP`); new clients go round robin.
    ClientIp {
        /// How long a client's affinity lasts after its last connection.
        timeout: Duration,
    },
}

impl Balance {
    /// kube-proxy's default affinity timeout, 10,800 s (3 hours).
    pub const DEFAULT_AFFINITY_TIMEOUT: Duration = Duration::from_secs(10_800);

    /// Client-IP affinity with kube-proxy's default timeout.
    pub fn client_ip() -> Self {
        Balance::ClientIp {
            timeout: Self::DEFAULT_AFFINITY_TIMEOUT,
        }
    }
}

/// Passive ejection: an address that fails `failures` connects in a row (for UDP, ICMP
/// port-unreachable reports) is skipped for `backoff`, then tried again; one more failure
/// ejects it again. When every address is ejected, new connections fail at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Ejection {
    /// Failures in a row that eject an address, at least 1.
    pub failures: u32,
    /// How long an ejected address is skipped.
    pub backoff: Duration,
}

impl Ejection {
    /// Ejects after `failures` failures in a row, for `backoff`.
    pub fn new(failures: u32, backoff: Duration) -> Self {
        Ejection { failures, backoff }
    }
}

impl Default for Ejection {
    /// 3 failures in a row, 10 s.
    fn default() -> Self {
        Ejection::new(3, Duration::from_secs(10))
    }
}

/// Active TCP health checks: every `interval`, each of the target's addresses gets a TCP
/// connect (closed at once) that must succeed within `timeout`. An address that fails
/// `fall` checks in a row is marked down and skipped, like an ejected one, until it passes
/// `rise` in a row. A UDP forwarder checks the same port over TCP (DNS servers answer on
/// both). Off by default.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct HealthCheck {
    /// Time between rounds of checks.
    pub interval: Duration,
    /// How long one check may take.
    pub timeout: Duration,
    /// Passed checks in a row that bring a down address back.
    pub rise: u32,
    /// Failed checks in a row that mark an address down.
    pub fall: u32,
}

impl HealthCheck {
    /// Checks every `interval`, with the default timeout (1 s), rise (2) and fall (3).
    pub fn every(interval: Duration) -> Self {
        HealthCheck {
            interval,
            ..HealthCheck::default()
        }
    }

    /// The same with another timeout, rise and fall.
    pub fn with(mut self, timeout: Duration, rise: u32, fall: u32) -> Self {
        self.timeout = timeout;
        self.rise = rise;
        self.fall = fall;
        self
    }
}

impl Default for HealthCheck {
    /// Every 5 s, 1 s timeout, rise 2, fall 3 (HAProxy's defaults, with a shorter timeout).
    fn default() -> Self {
        HealthCheck {
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(1),
            rise: 2,
            fall: 3,
        }
    }
}

/// Affinity entries are purged of expired ones when the table has grown by this many
/// since the last purge.
const PURGE_EVERY: usize = 1024;

/// One generation's choice of endpoints: the policy, and what it knows of each endpoint.
///
/// Generic over the key that names an endpoint: the core's forwarders key it by upstream
/// [`SocketAddr`]; [`Picker`] offers it to other crates for keys of their own (pod names,
/// say). The stats and health-check parts are for socket addresses only.
#[derive(Debug)]
pub(crate) struct Balancer<K = SocketAddr> {
    policy: Balance,
    ejection: Option<Ejection>,
    /// Told of each connection or session open on an address, so an address's stats are
    /// kept while one is. Only ever set for socket addresses ([`Balancer::counting`]).
    stats: Option<Arc<crate::stats::Stats>>,
    next: AtomicUsize,
    rng: AtomicU64,
    state: Mutex<State<K>>,
}

#[derive(Debug)]
struct State<K> {
    /// By endpoint; foldhash, as these keys are the target's addresses, not a client's.
    endpoints: foldhash::HashMap<K, Endpoint>,
    /// By client address: SipHash, as clients choose these keys.
    affinity: HashMap<IpAddr, (K, Instant)>,
    added_since_purge: usize,
}

// Not derived: that would ask for `K: Default`, which `SocketAddr` is not.
impl<K> Default for State<K> {
    fn default() -> Self {
        State {
            endpoints: foldhash::HashMap::default(),
            affinity: HashMap::new(),
            added_since_purge: 0,
        }
    }
}

#[derive(Debug, Default)]
struct Endpoint {
    /// Connections or sessions open on it now.
    open: u64,
    failures_in_row: u32,
    ejected_until: Option<Instant>,
    /// Health checks: marked down, and the current streak (passes above 0, failures below).
    down: bool,
    streak: i64,
}

// ===== impl Balancer =====

impl<K: Eq + Hash + Clone> Balancer<K> {
    pub(crate) fn new(policy: Balance, ejection: Option<Ejection>) -> Self {
        // Any varying seed will do: the choices only need to spread, not to be secret.
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        Balancer {
            policy,
            ejection,
            stats: None,
            next: AtomicUsize::new(0),
            rng: AtomicU64::new(seed),
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State<K>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A random number (SplitMix64 over a shared counter).
    fn random(&self) -> u64 {
        let mut z = self
            .rng
            .fetch_add(0x9e37_79b9_7f4a_7c15, Relaxed)
            .wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// The endpoints to try for one new connection from `client`, best first: the
    /// policy's pick, then the others in round-robin order. Ejected endpoints are left
    /// out; `None` when every endpoint is ejected.
    pub(crate) fn order(&self, keys: &[K], client: Option<IpAddr>) -> Option<Vec<K>> {
        let now = Instant::now();
        let state = self.state();
        let healthy: Vec<&K> = keys
            .iter()
            .filter(|k| {
                state
                    .endpoints
                    .get(k)
                    .is_none_or(|e| !e.down && e.ejected_until.is_none_or(|until| until <= now))
            })
            .collect();
        if healthy.is_empty() {
            return keys.is_empty().then(Vec::new);
        }
        let n = healthy.len();
        let start = self.next.fetch_add(1, Relaxed) % n;
        let mut order: Vec<K> = (0..n).map(|i| healthy[(start + i) % n].clone()).collect();
        let open = |k: &K| state.endpoints.get(k).map_or(0, |e| e.open);
        let first = match self.policy {
            Balance::RoundRobin => 0,
            Balance::LeastConnections => (0..n).min_by_key(|&i| open(&order[i])).unwrap_or(0),
            Balance::PowerOfTwoChoices if n >= 2 => {
                let a = (self.random() % n as u64) as usize;
                let b = (a + 1 + (self.random() % (n as u64 - 1)) as usize) % n;
                if open(&order[b]) < open(&order[a]) {
                    b
                } else {
                    a
                }
            }
            Balance::PowerOfTwoChoices => 0,
            Balance::ClientIp { timeout } => client
                .and_then(|ip| state.affinity.get(&ip))
                .filter(|(_, last)| now.saturating_duration_since(*last) < timeout)
                .and_then(|(key, _)| order.iter().position(|k| k == key))
                .unwrap_or(0),
        };
        order[..=first].rotate_right(1);
        dedup(&mut order);
        Some(order)
    }

    /// Records how an attempt to reach `key` went: a success clears its failures, a
    /// failure counts toward ejection. Returns whether this failure ejected the endpoint.
    pub(crate) fn report(&self, key: K, ok: bool) -> bool {
        let now = Instant::now();
        let mut state = self.state();
        let endpoint = state.endpoints.entry(key).or_default();
        if ok {
            endpoint.failures_in_row = 0;
            endpoint.ejected_until = None;
            return false;
        }
        endpoint.failures_in_row = endpoint.failures_in_row.saturating_add(1);
        match self.ejection {
            Some(e) if endpoint.failures_in_row >= e.failures.max(1) => {
                let newly = endpoint.ejected_until.is_none_or(|until| until <= now);
                endpoint.ejected_until = Some(crate::timeout::after(now, e.backoff));
                newly
            }
            _ => false,
        }
    }

    /// With client-IP affinity, binds `client` to `key`, where its connection went.
    pub(crate) fn stick(&self, client: IpAddr, key: K) {
        let Balance::ClientIp { timeout } = self.policy else {
            return;
        };
        let now = Instant::now();
        let mut state = self.state();
        if state.affinity.insert(client, (key, now)).is_none() {
            state.added_since_purge += 1;
        }
        if state.added_since_purge >= PURGE_EVERY {
            state.added_since_purge = 0;
            state
                .affinity
                .retain(|_, (_, last)| now.saturating_duration_since(*last) < timeout);
        }
    }

    /// Drops what is known of every endpoint not in `keep`, and the client affinities
    /// that point at one (expired affinities go too). An endpoint that still has
    /// connections [`acquire`](Self::acquire)d keeps only their count, so releasing them
    /// stays balanced; a later call drops it once they are gone.
    pub(crate) fn retain(&self, keep: &[K]) {
        let keep: HashSet<&K> = keep.iter().collect();
        let now = Instant::now();
        let mut state = self.state();
        state.endpoints.retain(|k, e| {
            if keep.contains(k) {
                return true;
            }
            *e = Endpoint {
                open: e.open,
                ..Endpoint::default()
            };
            e.open > 0
        });
        let timeout = match self.policy {
            Balance::ClientIp { timeout } => timeout,
            _ => Duration::MAX,
        };
        state.affinity.retain(|_, (k, last)| {
            keep.contains(k) && now.saturating_duration_since(*last) < timeout
        });
        state.added_since_purge = 0;
    }

    /// Counts one more connection or session open on `key`; least connections and two
    /// random choices weigh these. Each call is paired with one [`release`](Self::release).
    fn acquire(&self, key: K) {
        self.state().endpoints.entry(key).or_default().open += 1;
    }

    /// Counts one connection or session fewer open on `key`.
    fn release(&self, key: &K) {
        if let Some(e) = self.state().endpoints.get_mut(key) {
            e.open = e.open.saturating_sub(1);
        }
    }

    /// Whether `key` is ejected now.
    #[cfg(test)]
    pub(crate) fn is_ejected(&self, key: &K) -> bool {
        let now = Instant::now();
        self.state()
            .endpoints
            .get(key)
            .and_then(|e| e.ejected_until)
            .is_some_and(|until| until > now)
    }
}

impl Balancer<SocketAddr> {
    /// The same, telling `stats` of the connections and sessions [`open`](Self::open) on
    /// each address.
    pub(crate) fn counting(mut self, stats: Arc<crate::stats::Stats>) -> Self {
        self.stats = Some(stats);
        self
    }

    /// [`report`](Self::report)s the outcome to the balancer and to `stats`, and logs
    /// an ejection.
    pub(crate) fn record(&self, stats: &crate::stats::Stats, addr: SocketAddr, ok: bool) {
        stats.endpoint(addr, ok);
        if self.report(addr, ok) {
            stats.ejected(addr);
            if let Some(e) = self.ejection {
                tracing::warn!(
                    upstream = %addr,
                    failures = e.failures,
                    skipped_for = ?e.backoff,
                    "upstream address ejected after failing in a row"
                );
            }
        }
    }

    /// Records a health check of `addr`; returns its new state (`true`: up) when the
    /// check changed it.
    pub(crate) fn checked(&self, addr: SocketAddr, ok: bool, check: &HealthCheck) -> Option<bool> {
        let mut state = self.state();
        let e = state.endpoints.entry(addr).or_default();
        e.streak = match (ok, e.streak) {
            (true, s) if s > 0 => s + 1,
            (true, _) => 1,
            (false, s) if s < 0 => s - 1,
            (false, _) => -1,
        };
        if !e.down && e.streak <= -i64::from(check.fall.max(1)) {
            e.down = true;
            return Some(false);
        }
        if e.down && e.streak >= i64::from(check.rise.max(1)) {
            e.down = false;
            return Some(true);
        }
        None
    }

    /// Counts a connection or session open on `addr` until the guard drops; least
    /// connections and two random choices weigh these.
    pub(crate) fn open(&self, addr: SocketAddr) -> Open<'_> {
        self.acquire_counted(addr);
        Open {
            balancer: self,
            addr,
        }
    }

    /// Counts a connection or session open on `addr`, in the stats too.
    pub(crate) fn acquire_counted(&self, addr: SocketAddr) {
        self.acquire(addr);
        if let Some(stats) = &self.stats {
            stats.endpoint_open(addr, true);
        }
    }

    /// Counts one connection or session fewer open on `addr`, in the stats too.
    pub(crate) fn release_counted(&self, addr: SocketAddr) {
        self.release(&addr);
        if let Some(stats) = &self.stats {
            stats.endpoint_open(addr, false);
        }
    }
}

/// Keeps the first of each key: weighted answers repeat addresses, and each is tried
/// once. Short lists (the common case) are checked pairwise, without a set.
fn dedup<K: Eq + Hash + Clone>(order: &mut Vec<K>) {
    if order.len() <= 16 {
        let mut i = 1;
        while i < order.len() {
            if order[..i].contains(&order[i]) {
                order.remove(i);
            } else {
                i += 1;
            }
        }
    } else {
        let mut seen = HashSet::with_capacity(order.len());
        order.retain(|k| seen.insert(k.clone()));
    }
}

/// Runs health checks of the addresses `cache` holds until `stop`, marking them down and
/// up in `balancer`.
pub(crate) fn spawn_health_checks(
    check: HealthCheck,
    cache: Arc<crate::resolve::ResolveCache>,
    balancer: Arc<Balancer>,
    stats: Arc<crate::stats::Stats>,
    stop: tokio_util::sync::CancellationToken,
) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(check.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let Some(addrs) = cache.cached() else {
                continue;
            };
            let mut checks = tokio::task::JoinSet::new();
            let mut distinct = addrs.to_vec();
            distinct.sort_unstable();
            distinct.dedup();
            for addr in distinct {
                checks.spawn(async move {
                    let connect = tokio::net::TcpStream::connect(addr);
                    (
                        addr,
                        matches!(
                            tokio::time::timeout(check.timeout, connect).await,
                            Ok(Ok(_))
                        ),
                    )
                });
            }
            while let Some(Ok((addr, ok))) = checks.join_next().await {
                match balancer.checked(addr, ok, &check) {
                    Some(false) => {
                        stats.health(addr, false);
                        tracing::warn!(upstream = %addr, fall = check.fall, "upstream address down: health checks failed");
                    }
                    Some(true) => {
                        stats.health(addr, true);
                        tracing::info!(upstream = %addr, rise = check.rise, "upstream address up again: health checks passed");
                    }
                    None => {}
                }
            }
        }
    });
}

/// A connection or session counted as open on an address.
#[derive(Debug)]
pub(crate) struct Open<'a> {
    balancer: &'a Balancer,
    addr: SocketAddr,
}

impl Drop for Open<'_> {
    fn drop(&mut self) {
        self.balancer.release_counted(self.addr);
    }
}

// ===== impl Picker =====

/// The core's balancing, for endpoints of your own: picks which of a set of endpoints
/// each new connection goes to, with the same [`Balance`] policies, client-IP affinity
/// and passive [`Ejection`] the forwarders use for upstream addresses.
///
/// An endpoint is named by any key `K` (a pod's name, say); the set of endpoints is passed
/// to every [`order`](Self::order), so it may change between calls. A `Picker` is cheap to
/// clone, and its clones share one state.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use proxy_core::{Balance, Ejection, Picker};
///
/// let picker: Picker<Arc<str>> = Picker::new(Balance::LeastConnections, Some(Ejection::default()));
/// let pods: Vec<Arc<str>> = vec!["web-0".into(), "web-1".into()];
///
/// // The pick first, then the others to fall back on.
/// let order = picker.order(&pods, None).expect("no pod is ejected");
/// let pod = order[0].clone();
/// // The connection succeeded: count it open while it lasts.
/// picker.report(&pod, true);
/// let opened = picker.open(pod.clone());
/// // web-0 has a connection open, so the next one goes to web-1.
/// assert_ne!(picker.order(&pods, None).unwrap()[0], pod);
/// drop(opened);
///
/// // web-1 went away: forget it.
/// picker.retain(&pods[..1]);
/// ```
#[derive(Debug)]
pub struct Picker<K> {
    balancer: Arc<Balancer<K>>,
}

impl<K> Clone for Picker<K> {
    fn clone(&self) -> Self {
        Picker {
            balancer: Arc::clone(&self.balancer),
        }
    }
}

impl<K: Eq + Hash + Clone> Picker<K> {
    /// A picker choosing by `policy`, ejecting endpoints that keep failing by `ejection`
    /// (`None`: never).
    pub fn new(policy: Balance, ejection: Option<Ejection>) -> Self {
        Picker {
            balancer: Arc::new(Balancer::new(policy, ejection)),
        }
    }

    /// The endpoints among `keys` to try for one new connection from `client`, best
    /// first: the policy's pick, then the others in round-robin order to fall back on.
    /// Ejected endpoints are left out, and a key given twice is tried once.
    ///
    /// Returns `None` when every endpoint is ejected, and an empty list when `keys` is
    /// empty. `client` matters only to [`Balance::ClientIp`].
    pub fn order(&self, keys: &[K], client: Option<IpAddr>) -> Option<Vec<K>> {
        self.balancer.order(keys, client)
    }

    /// Records how an attempt to connect to `key` went. A failure counts toward its
    /// ejection; a success clears the count and ends an ejection at once.
    ///
    /// Returns `true` when this failure ejected `key` (it was not ejected before), so the
    /// caller can log it once; always `false` without [`Ejection`].
    pub fn report(&self, key: &K, ok: bool) -> bool {
        self.balancer.report(key.clone(), ok)
    }

    /// With [`Balance::ClientIp`], sends `client`'s next connections to `key` (where its
    /// connection went) while it comes back within the timeout and `key` is not ejected.
    /// Does nothing with other policies.
    pub fn stick(&self, client: IpAddr, key: K) {
        self.balancer.stick(client, key);
    }

    /// Counts a connection open on `key` until the returned guard drops, for
    /// [`Balance::LeastConnections`] and [`Balance::PowerOfTwoChoices`] to weigh.
    pub fn open(&self, key: K) -> Opened<K> {
        self.balancer.acquire(key.clone());
        Opened {
            balancer: Arc::clone(&self.balancer),
            key,
        }
    }

    /// Forgets every endpoint not in `keys`: its failures, ejection and the client
    /// affinities pointing at it (expired affinities go too). Call it when the set of
    /// endpoints changes, so state does not pile up as endpoints come and go; one that
    /// comes back later starts afresh.
    ///
    /// An endpoint with [`Opened`] guards alive keeps only their count until they drop;
    /// the next call after that forgets it too.
    pub fn retain(&self, keys: &[K]) {
        self.balancer.retain(keys);
    }
}

/// A connection counted as open on an endpoint of a [`Picker`], until dropped. Made by
/// [`Picker::open`]; it holds the picker's shared state, so it may outlive the picker.
#[derive(Debug)]
#[must_use = "the connection counts as open only while the guard lives"]
pub struct Opened<K: Eq + Hash + Clone> {
    balancer: Arc<Balancer<K>>,
    key: K,
}

impl<K: Eq + Hash + Clone> Opened<K> {
    /// The endpoint the connection is open on.
    pub fn key(&self) -> &K {
        &self.key
    }
}

impl<K: Eq + Hash + Clone> Drop for Opened<K> {
    fn drop(&mut self) {
        self.balancer.release(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dedup_keeps_the_first_of_each_key_short_or_long() {
        let mut short = vec![3, 1, 3, 2, 1];
        dedup(&mut short);
        assert_eq!(short, [3, 1, 2]);
        // Past 16 keys a set does the work; the order kept is the same.
        let mut long: Vec<u32> = (0..40).map(|i| i % 20).collect();
        dedup(&mut long);
        assert_eq!(long, (0..20).collect::<Vec<_>>());
    }

    fn addrs(n: u16) -> Vec<SocketAddr> {
        (1..=n)
            .map(|i| SocketAddr::from(([127, 0, 0, 1], 9000 + i)))
            .collect()
    }

    fn first(b: &Balancer, addrs: &[SocketAddr], client: Option<IpAddr>) -> SocketAddr {
        b.order(addrs, client).expect("a healthy address")[0]
    }

    #[test]
    fn round_robin_rotates_and_keeps_every_address_for_failover() {
        let b = Balancer::new(Balance::RoundRobin, None);
        let a = addrs(3);
        assert_eq!(b.order(&a, None).unwrap(), [a[0], a[1], a[2]]);
        assert_eq!(b.order(&a, None).unwrap(), [a[1], a[2], a[0]]);
        assert_eq!(b.order(&a, None).unwrap(), [a[2], a[0], a[1]]);
        assert_eq!(b.order(&[], None).unwrap(), []);
    }

    #[test]
    fn least_connections_picks_the_least_loaded() {
        let b = Balancer::new(Balance::LeastConnections, None);
        let a = addrs(3);
        let _x = [b.open(a[0]), b.open(a[0]), b.open(a[1])];
        for _ in 0..5 {
            assert_eq!(first(&b, &a, None), a[2]);
        }
        let more = [b.open(a[2]), b.open(a[2])];
        assert_eq!(first(&b, &a, None), a[1]);
        drop(more);
        assert_eq!(first(&b, &a, None), a[2]);
        // Every address still follows for failover.
        let mut all = b.order(&a, None).unwrap();
        all.sort();
        assert_eq!(all, a);
    }

    #[test]
    fn two_choices_never_pick_the_most_loaded_of_three() {
        let b = Balancer::new(Balance::PowerOfTwoChoices, None);
        let a = addrs(3);
        let _busy: Vec<_> = (0..10).map(|_| b.open(a[1])).collect();
        let _one = b.open(a[0]);
        let mut picked = HashMap::new();
        for _ in 0..3000 {
            *picked.entry(first(&b, &a, None)).or_insert(0) += 1;
        }
        assert_eq!(picked.get(&a[1]), None, "{picked:?}");
        // a[2] (0 open) wins every pair it is in: 2 of 3 pairs.
        assert!(picked[&a[2]] > 1800, "{picked:?}");
        assert!(picked[&a[0]] > 600, "{picked:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn client_ip_affinity_sticks_follows_success_and_expires() {
        let timeout = Duration::from_secs(100);
        let b = Balancer::new(Balance::ClientIp { timeout }, None);
        let a = addrs(3);
        let c1: IpAddr = "10.0.0.1".parse().unwrap();
        let c2: IpAddr = "10.0.0.2".parse().unwrap();
        let p1 = first(&b, &a, Some(c1));
        b.stick(c1, p1);
        let p2 = first(&b, &a, Some(c2));
        b.stick(c2, p2);
        for _ in 0..10 {
            assert_eq!(first(&b, &a, Some(c1)), p1);
            b.stick(c1, p1);
            assert_eq!(first(&b, &a, Some(c2)), p2);
        }
        // A failover to another address moves the affinity there.
        let other = a.iter().copied().find(|x| *x != p1).unwrap();
        b.stick(c1, other);
        assert_eq!(first(&b, &a, Some(c1)), other);
        // Kept alive by use; gone after the timeout without any.
        tokio::time::advance(Duration::from_secs(99)).await;
        assert_eq!(first(&b, &a, Some(c1)), other);
        b.stick(c1, other);
        tokio::time::advance(Duration::from_secs(99)).await;
        assert_eq!(first(&b, &a, Some(c1)), other, "refreshed by the last use");
        tokio::time::advance(Duration::from_secs(2)).await;
        let after: Vec<_> = (0..3).map(|_| first(&b, &a, Some(c1))).collect();
        assert!(
            after.iter().any(|x| *x != other),
            "expired: round robin again"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn failing_addresses_are_ejected_then_retried() {
        let b = Balancer::new(
            Balance::RoundRobin,
            Some(Ejection::new(2, Duration::from_secs(5))),
        );
        let a = addrs(2);
        assert!(!b.report(a[0], false));
        assert!(b.report(a[0], false), "the second failure in a row ejects");
        assert!(b.is_ejected(&a[0]));
        for _ in 0..4 {
            assert_eq!(b.order(&a, None).unwrap(), [a[1]]);
        }
        // Both ejected: nothing to try.
        b.report(a[1], false);
        b.report(a[1], false);
        assert_eq!(b.order(&a, None), None);
        // After the back-off both are tried again; one success clears the count.
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(b.order(&a, None).unwrap().len(), 2);
        b.report(a[0], true);
        assert!(!b.report(a[0], false), "the count restarted");
        // One more failure of a retried address ejects it again.
        assert!(b.report(a[1], false));
        assert_eq!(b.order(&a, None).unwrap(), [a[0]]);
    }

    #[test]
    fn without_ejection_failures_only_count() {
        let b = Balancer::new(Balance::RoundRobin, None);
        let a = addrs(1);
        for _ in 0..10 {
            assert!(!b.report(a[0], false));
        }
        assert_eq!(b.order(&a, None).unwrap(), a);
    }

    fn pods(n: usize) -> Vec<Arc<str>> {
        (0..n).map(|i| Arc::from(format!("web-{i}"))).collect()
    }

    fn pick(p: &Picker<Arc<str>>, keys: &[Arc<str>], client: Option<IpAddr>) -> Arc<str> {
        p.order(keys, client).expect("a healthy pod")[0].clone()
    }

    #[test]
    fn picker_is_shareable_and_its_guard_owned() {
        fn shareable<T: Clone + Send + Sync + 'static>() {}
        fn owned<T: Send + Sync + 'static>() {}
        shareable::<Picker<Arc<str>>>();
        owned::<Opened<Arc<str>>>();
    }

    #[test]
    fn picker_round_robin_spreads_over_keys() {
        let p = Picker::new(Balance::RoundRobin, None);
        let k = pods(3);
        let mut picked: HashMap<Arc<str>, usize> = HashMap::new();
        for _ in 0..300 {
            let order = p.order(&k, None).unwrap();
            let mut all = order.clone();
            all.sort();
            assert_eq!(all, k, "every key follows for failover");
            *picked.entry(order[0].clone()).or_default() += 1;
        }
        assert!(k.iter().all(|key| picked[key] == 100), "{picked:?}");
        // A clone shares the rotation.
        let q = p.clone();
        let a = pick(&p, &k, None);
        let b = pick(&q, &k, None);
        assert_ne!(a, b);
        assert_eq!(p.order(&[], None).unwrap(), Vec::<Arc<str>>::new());
    }

    #[test]
    fn picker_least_connections_prefers_fewer_opened() {
        let p = Picker::new(Balance::LeastConnections, None);
        let k = pods(3);
        let busy = [p.open(k[0].clone()), p.open(k[0].clone())];
        let one = p.open(k[1].clone());
        assert_eq!(one.key(), &k[1]);
        for _ in 0..5 {
            assert_eq!(pick(&p, &k, None), k[2]);
        }
        let more: Vec<_> = (0..3).map(|_| p.open(k[2].clone())).collect();
        assert_eq!(pick(&p, &k, None), k[1]);
        drop(busy);
        assert_eq!(pick(&p, &k, None), k[0]);
        // The guards own the state: they may outlive every picker.
        let two = p.open(k[0].clone());
        drop(p);
        drop((one, more, two));
    }

    #[test]
    fn picker_two_choices_avoid_the_busiest() {
        let p = Picker::new(Balance::PowerOfTwoChoices, None);
        let k = pods(3);
        let _busy: Vec<_> = (0..10).map(|_| p.open(k[1].clone())).collect();
        for _ in 0..300 {
            assert_ne!(pick(&p, &k, None), k[1]);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn picker_ejects_after_failures_and_recovers() {
        let p = Picker::new(
            Balance::RoundRobin,
            Some(Ejection::new(3, Duration::from_secs(10))),
        );
        let k = pods(2);
        assert!(!p.report(&k[0], false));
        assert!(!p.report(&k[0], false));
        assert!(p.report(&k[0], false), "the third failure in a row ejects");
        assert!(!p.report(&k[0], false), "already ejected: reported once");
        for _ in 0..4 {
            assert_eq!(p.order(&k, None).unwrap(), [k[1].clone()]);
        }
        for _ in 0..3 {
            p.report(&k[1], false);
        }
        assert_eq!(p.order(&k, None), None, "every pod ejected");
        // Back after the back-off.
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(p.order(&k, None).unwrap().len(), 2);
        // A success ends an ejection at once and restarts the count.
        assert!(
            p.report(&k[0], false),
            "one failure of a retried pod ejects it"
        );
        assert_eq!(p.order(&k, None).unwrap(), [k[1].clone()]);
        assert!(!p.report(&k[0], true));
        assert_eq!(p.order(&k, None).unwrap().len(), 2);
        assert!(!p.report(&k[0], false), "the count restarted");
    }

    #[tokio::test(start_paused = true)]
    async fn picker_client_ip_affinity_sticks() {
        let p = Picker::new(
            Balance::ClientIp {
                timeout: Duration::from_secs(60),
            },
            Some(Ejection::new(1, Duration::from_secs(10))),
        );
        let k = pods(3);
        let c1: IpAddr = "10.0.0.1".parse().unwrap();
        let c2: IpAddr = "10.0.0.2".parse().unwrap();
        p.stick(c1, k[2].clone());
        p.stick(c2, k[0].clone());
        for _ in 0..10 {
            assert_eq!(pick(&p, &k, Some(c1)), k[2]);
            assert_eq!(pick(&p, &k, Some(c2)), k[0]);
        }
        // An ejected pod is skipped; the client comes back once it is healthy again.
        p.report(&k[2], false);
        assert_ne!(pick(&p, &k, Some(c1)), k[2]);
        p.report(&k[2], true);
        assert_eq!(pick(&p, &k, Some(c1)), k[2]);
        // Expires without use.
        tokio::time::advance(Duration::from_secs(60)).await;
        let after: Vec<_> = (0..3).map(|_| pick(&p, &k, Some(c1))).collect();
        assert!(
            after.iter().any(|x| *x != k[2]),
            "expired: round robin again"
        );

        // Other policies do not stick.
        let rr = Picker::new(Balance::RoundRobin, None);
        rr.stick(c1, k[0].clone());
        assert!(rr.balancer.state().affinity.is_empty());
    }

    #[test]
    fn picker_retain_forgets_removed_keys() {
        let p = Picker::new(
            Balance::client_ip(),
            Some(Ejection::new(1, Duration::from_secs(3600))),
        );
        let k = pods(3);
        let c1: IpAddr = "10.0.0.1".parse().unwrap();
        let c2: IpAddr = "10.0.0.2".parse().unwrap();
        p.report(&k[0], false);
        p.report(&k[1], false);
        p.stick(c1, k[0].clone());
        p.stick(c2, k[2].clone());
        let opened = p.open(k[1].clone());
        assert!(p.balancer.is_ejected(&k[0]));

        // k[0] and k[1] go away.
        p.retain(&k[2..]);
        {
            let state = p.balancer.state();
            assert!(!state.endpoints.contains_key(&k[0]));
            assert_eq!(state.endpoints[&k[1]].open, 1, "its open count is kept");
            assert!(state.affinity.contains_key(&c2));
            assert!(
                !state.affinity.contains_key(&c1),
                "pointed at a removed pod"
            );
        }
        assert!(
            !p.balancer.is_ejected(&k[1]),
            "the rest of its state is gone"
        );
        // A key that comes back starts afresh.
        assert_eq!(p.order(&k[..1], Some(c1)).unwrap(), [k[0].clone()]);

        drop(opened);
        p.retain(&k[2..]);
        let state = p.balancer.state();
        assert_eq!(state.endpoints.len(), 0, "{:?}", state.endpoints);
        assert_eq!(state.affinity.len(), 1);
    }
}
