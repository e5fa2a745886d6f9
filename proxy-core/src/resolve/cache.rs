//! The answer cache in front of a resolver: TTL, background refresh, last good answer.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Resolve, SrvRecord};
use crate::stats::Stats;
use crate::timeout::after;
use crate::{Error, ErrorKind, Host, Side, Target, TimeoutKind};

/// How many copies each record of one priority gets, in proportion to its weight: at
/// most 100 in all, at least 1 for a weighted record. Weight 0 records get a copy only when
/// every record's weight is 0 (RFC 2782 gives them a very small chance otherwise).
fn weight_shares(weights: &[u16]) -> Vec<usize> {
    let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
    if total == 0 {
        return vec![1; weights.len()];
    }
    let gcd = weights.iter().filter(|&&w| w > 0).fold(0u64, |g, &w| {
        let (mut a, mut b) = (g, u64::from(w));
        while b != 0 {
            (a, b) = (b, a % b);
        }
        a
    });
    let scale = (total / gcd).max(1);
    weights
        .iter()
        .map(|&w| {
            let units = u64::from(w) / gcd;
            match units {
                0 => 0,
                _ if scale <= 100 => units as usize,
                _ => ((units * 100).div_ceil(scale)).max(1) as usize,
            }
        })
        .collect()
}

/// `[a, a, a, b]` becomes `[a, b, a, a]`: copies spread out, order of first sight kept.
fn interleave_copies(addrs: Vec<SocketAddr>) -> Vec<SocketAddr> {
    let mut groups: Vec<(SocketAddr, usize)> = Vec::new();
    for a in addrs {
        match groups.iter_mut().find(|(g, _)| *g == a) {
            Some((_, n)) => *n += 1,
            None => groups.push((a, 1)),
        }
    }
    let mut out = Vec::new();
    while groups.iter().any(|(_, n)| *n > 0) {
        for (a, n) in &mut groups {
            if *n > 0 {
                out.push(*a);
                *n -= 1;
            }
        }
    }
    out
}

/// How long resolved answers are used before they are refreshed.
///
/// ```
/// use std::time::Duration;
/// use proxy_core::{TcpForwarder, resolve::CachePolicy};
///
/// let mut policy = CachePolicy::default();
/// policy.refresh = Some(Duration::from_secs(10)); // ignore TTLs, refresh every 10 s
/// let forwarder = TcpForwarder::builder(["127.0.0.1:0".parse()?], "db.internal:5432".parse()?)
///     .cache(policy)
///     .build()?;
/// assert_eq!(forwarder.target().unwrap().to_string(), "db.internal:5432");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CachePolicy {
    /// Refresh at this interval whatever the TTL says. Default `None`: follow the TTL.
    pub refresh: Option<Duration>,
    /// How long an answer is used when the resolver gives no TTL (the system resolver and
    /// the static resolver give none). Default 30 s.
    pub fallback_ttl: Duration,
    /// The shortest time an answer is used, and the shortest interval between two
    /// lookups; a TTL of 0 is raised to this. Also the first retry delay after a failed
    /// refresh, doubling up to `fallback_ttl`. Default 1 s.
    pub min_ttl: Duration,
    /// The longest time an answer is used before it is looked up again. Default 300 s.
    pub max_ttl: Duration,
}

impl Default for CachePolicy {
    fn default() -> Self {
        CachePolicy {
            refresh: None,
            fallback_ttl: Duration::from_secs(30),
            min_ttl: Duration::from_secs(1),
            max_ttl: Duration::from_secs(300),
        }
    }
}

impl CachePolicy {
    fn next_refresh(&self, valid_until: Option<std::time::Instant>) -> Duration {
        let ttl = match (self.refresh, valid_until) {
            (Some(every), _) => every,
            (None, Some(until)) => until.saturating_duration_since(std::time::Instant::now()),
            (None, None) => self.fallback_ttl,
        };
        ttl.clamp(self.min_ttl, self.max_ttl.max(self.min_ttl))
    }
}

/// The current addresses of one target, kept fresh by [`ResolveCache::run`].
pub(crate) struct ResolveCache {
    target: Target,
    resolver: Arc<dyn Resolve>,
    policy: CachePolicy,
    current: RwLock<Option<Arc<[SocketAddr]>>>,
    /// The lookup in flight, if any. Everyone who needs an answer (connections before
    /// the first one, the refresher) waits for this one, so a name has at most one
    /// lookup in flight however many wait, give up or time out.
    lookup: Mutex<Option<InFlight>>,
    wake: Notify,
    stats: Arc<Stats>,
}

/// A lookup's outcome as its waiters see it: when to refresh, or why it failed.
type Outcome = Result<Duration, Arc<io::Error>>;

/// One lookup running in a task of its own, which outlives the waiters that give up on
/// it (a blocking `getaddrinfo` cannot be cancelled anyway: starting another per waiter
/// is what piled threads up) but not the cache.
struct InFlight {
    outcome: watch::Receiver<Option<Outcome>>,
    task: AbortHandle,
}

impl Drop for ResolveCache {
    fn drop(&mut self) {
        if let Some(lookup) = lock(&self.lookup).take() {
            lookup.task.abort();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl std::fmt::Debug for ResolveCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResolveCache")
            .field("target", &self.target)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl ResolveCache {
    pub(crate) fn new(
        target: Target,
        resolver: Arc<dyn Resolve>,
        policy: CachePolicy,
        stats: Arc<Stats>,
    ) -> Self {
        let current = target
            .host()
            .ip()
            .map(|ip| Arc::from([SocketAddr::new(ip, target.port())]));
        ResolveCache {
            target,
            resolver,
            policy,
            current: RwLock::new(current),
            lookup: Mutex::new(None),
            wake: Notify::new(),
            stats,
        }
    }

    fn name(&self) -> Option<&str> {
        match self.target.host() {
            Host::Name(name) | Host::Srv(name) => Some(name),
            Host::Ip(_) => None,
        }
    }

    pub(crate) fn cached(&self) -> Option<Arc<[SocketAddr]>> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The addresses to connect to: the cached answer, or the lookup in flight's when
    /// there is none yet.
    pub(crate) async fn addrs(self: &Arc<Self>) -> Result<Arc<[SocketAddr]>, Error> {
        if let Some(addrs) = self.cached() {
            return Ok(addrs);
        }
        self.refreshed().await.map_err(|e| {
            Error::new(ErrorKind::Resolve, Side::Upstream)
                .with_context(self.target.to_string())
                .with_source(io::Error::new(e.kind(), e))
        })?;
        self.cached()
            .ok_or_else(|| Error::new(ErrorKind::Resolve, Side::Upstream))
    }

    /// [`addrs`](Self::addrs), giving up at `deadline` with a connect-budget timeout.
    pub(crate) async fn addrs_by(
        self: &Arc<Self>,
        deadline: Instant,
    ) -> Result<Arc<[SocketAddr]>, Error> {
        tokio::time::timeout_at(deadline, self.addrs())
            .await
            .map_err(|_elapsed| {
                Error::new(
                    ErrorKind::Timeout(TimeoutKind::ConnectTotal),
                    Side::Upstream,
                )
                .with_context(format!("resolving {}", self.target))
            })?
    }

    /// Asks for an early refresh, e.g. after every address failed to connect. Refreshes
    /// stay at least [`CachePolicy::min_ttl`] apart.
    pub(crate) fn nudge(&self) {
        if self.name().is_some() {
            self.wake.notify_one();
        }
    }

    /// Waits for the lookup in flight, starting one if there is none; on success its
    /// answer has replaced the cached one. Returns when to refresh.
    async fn refreshed(self: &Arc<Self>) -> Outcome {
        let mut outcome = self.lookup();
        let abandoned = || Err(Arc::new(io::Error::other("the lookup was abandoned")));
        match outcome.wait_for(Option::is_some).await {
            Ok(done) => done.clone().unwrap_or_else(abandoned),
            Err(_) => abandoned(),
        }
    }

    /// The lookup in flight, started now if there is none.
    fn lookup(self: &Arc<Self>) -> watch::Receiver<Option<Outcome>> {
        let mut slot = lock(&self.lookup);
        if let Some(lookup) = slot.as_ref() {
            return lookup.outcome.clone();
        }
        let (tx, rx) = watch::channel(None);
        // The task holds no strong reference: dropping the cache aborts it.
        let cache: Weak<Self> = Arc::downgrade(self);
        let (resolver, target) = (self.resolver.clone(), self.target.clone());
        let task = tokio::spawn(async move {
            let answer = look_up(&*resolver, &target).await;
            let Some(cache) = cache.upgrade() else {
                return;
            };
            let outcome = cache.apply(answer).map_err(Arc::new);
            // Cleared first, so a waiter who sees this outcome and asks again gets a new
            // lookup rather than this finished one.
            lock(&cache.lookup).take();
            let _ = tx.send(Some(outcome));
        });
        *slot = Some(InFlight {
            outcome: rx.clone(),
            task: task.abort_handle(),
        });
        rx
    }

    /// Keeps a lookup's answer (replacing the cached one) and counts it; returns when to
    /// refresh.
    fn apply(&self, answer: io::Result<Answer>) -> io::Result<Duration> {
        match answer {
            Ok((addrs, valid_until)) => {
                let addrs: Arc<[SocketAddr]> = addrs.into();
                let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
                if current.as_deref() != Some(&*addrs) {
                    tracing::info!(target = %self.target, addrs = ?addrs, "resolved");
                }
                *current = Some(addrs.clone());
                drop(current);
                Stats::inc(&self.stats.resolve_refreshes);
                self.stats.answered(&addrs);
                Ok(self.policy.next_refresh(valid_until))
            }
            Err(e) => {
                Stats::inc(&self.stats.resolve_failures);
                Err(e)
            }
        }
    }

    /// Keeps the answer fresh until `cancel` fires. Returns at once for IP literals.
    pub(crate) async fn run(self: Arc<Self>, cancel: CancellationToken) {
        if self.name().is_none() {
            return;
        }
        let min = self.policy.min_ttl;
        let mut next = Instant::now();
        let mut last: Option<Instant> = None;
        let mut backoff = min;
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep_until(next) => {}
                () = self.wake.notified() => {
                    if let Some(earliest) = last.map(|t| after(t, min)).filter(|t| *t > Instant::now()) {
                        next = next.min(earliest);
                        continue;
                    }
                }
            }
            let now = Instant::now();
            last = Some(now);
            let refreshed = tokio::select! {
                () = cancel.cancelled() => return,
                r = self.refreshed() => r,
            };
            match refreshed {
                Ok(delay) => {
                    // `delay` runs from the end of the lookup (a TTL ends at a point in
                    // time); counting it from the start would refresh early by the lookup's
                    // duration, while a caching resolver still holds the old answer.
                    next = after(Instant::now(), delay);
                    backoff = min;
                }
                Err(e) => {
                    let kept = self.cached().is_some();
                    tracing::warn!(
                        target = %self.target,
                        error = %e,
                        retry_in = ?backoff,
                        "DNS refresh failed{}",
                        if kept { "; keeping the last good answer" } else { "" }
                    );
                    // From the end of the failed lookup too: one that timed out must not
                    // be followed by the next at once.
                    next = after(Instant::now(), backoff);
                    backoff = backoff
                        .saturating_mul(2)
                        .min(self.policy.fallback_ttl.max(min));
                }
            }
        }
    }
}

/// What one lookup finds: the addresses, and when they expire.
type Answer = (Vec<SocketAddr>, Option<std::time::Instant>);

/// One lookup of `target`'s name with `resolver`; an empty answer is an error.
async fn look_up(resolver: &dyn Resolve, target: &Target) -> io::Result<Answer> {
    let name = match target.host() {
        Host::Name(name) | Host::Srv(name) => name.as_str(),
        Host::Ip(_) => "",
    };
    let (addrs, valid_until) = match target.host() {
        Host::Srv(_) => resolve_srv(resolver, name).await?,
        _ => {
            let r = resolver.resolve(name).await?;
            let port = target.port();
            let addrs = r.addrs().iter().map(|ip| SocketAddr::new(*ip, port));
            (addrs.collect(), r.valid_until())
        }
    };
    if addrs.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{name}: no addresses"),
        ));
    }
    Ok((addrs, valid_until))
}

/// The addresses of an SRV name: the records of the lowest priority whose hosts
/// resolve, each host's addresses with the record's port, repeated in proportion to
/// the record's weight (so round robin and random choices honour it). Expires with
/// the earliest of the SRV and address answers.
async fn resolve_srv(resolver: &dyn Resolve, name: &str) -> io::Result<Answer> {
    let srv = resolver.resolve_srv(name).await?;
    let mut valid_until = srv.valid_until;
    let mut priorities: Vec<u16> = srv.records.iter().map(|r| r.priority).collect();
    priorities.sort_unstable();
    priorities.dedup();
    let mut last_error = None;
    for priority in priorities {
        let records: Vec<&SrvRecord> = srv
            .records
            .iter()
            .filter(|r| r.priority == priority)
            .collect();
        let shares = weight_shares(&records.iter().map(|r| r.weight).collect::<Vec<_>>());
        let mut addrs = Vec::new();
        for (record, share) in records.iter().zip(shares) {
            match resolver.resolve(&record.host).await {
                Ok(r) => {
                    valid_until = match (valid_until, r.valid_until()) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                    for ip in r.addrs() {
                        let addr = SocketAddr::new(*ip, record.port);
                        addrs.extend(std::iter::repeat_n(addr, share));
                    }
                }
                Err(e) => last_error = Some(e),
            }
        }
        if !addrs.is_empty() {
            // Spread each record's copies out, so round robin alternates.
            return Ok((interleave_copies(addrs), valid_until));
        }
    }
    Err(last_error.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{name}: no SRV records"),
        )
    }))
}

#[cfg(test)]
mod tests;
