//! The answer cache in front of a resolver: TTL, background refresh, last good answer.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::Notify;
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
/// assert_eq!(forwarder.target().to_string(), "db.internal:5432");
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
    /// Serialises lookups made on the connection path before the first answer.
    first: tokio::sync::Mutex<()>,
    wake: Notify,
    stats: Arc<Stats>,
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
            first: tokio::sync::Mutex::new(()),
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

    /// The addresses to connect to: the cached answer, or a lookup when there is none yet.
    pub(crate) async fn addrs(&self) -> Result<Arc<[SocketAddr]>, Error> {
        if let Some(addrs) = self.cached() {
            return Ok(addrs);
        }
        let _first = self.first.lock().await;
        if let Some(addrs) = self.cached() {
            return Ok(addrs);
        }
        self.refresh().await.map_err(|e| {
            Error::new(ErrorKind::Resolve, Side::Upstream)
                .with_context(self.target.to_string())
                .with_source(e)
        })?;
        self.cached()
            .ok_or_else(|| Error::new(ErrorKind::Resolve, Side::Upstream))
    }

    /// [`addrs`](Self::addrs), giving up at `deadline` with a connect-budget timeout.
    pub(crate) async fn addrs_by(&self, deadline: Instant) -> Result<Arc<[SocketAddr]>, Error> {
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

    /// One lookup; on success the answer replaces the cached one. Returns when to refresh.
    async fn refresh(&self) -> std::io::Result<Duration> {
        let name = self.name().unwrap_or_default();
        let result = match self.target.host() {
            Host::Srv(_) => self.resolve_srv(name).await,
            _ => self.resolver.resolve(name).await.map(|r| {
                let port = self.target.port();
                let addrs = r.addrs().iter().map(|ip| SocketAddr::new(*ip, port));
                (addrs.collect(), r.valid_until())
            }),
        }
        .and_then(|(addrs, valid_until): (Vec<SocketAddr>, _)| {
            if addrs.is_empty() {
                Err(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("{name}: no addresses"),
                ))
            } else {
                Ok((addrs, valid_until))
            }
        });
        match result {
            Ok((addrs, valid_until)) => {
                let addrs: Arc<[SocketAddr]> = addrs.into();
                let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
                if current.as_deref() != Some(&*addrs) {
                    tracing::info!(target = %self.target, addrs = ?addrs, "resolved");
                }
                *current = Some(addrs);
                drop(current);
                Stats::inc(&self.stats.resolve_refreshes);
                Ok(self.policy.next_refresh(valid_until))
            }
            Err(e) => {
                Stats::inc(&self.stats.resolve_failures);
                Err(e)
            }
        }
    }

    /// The addresses of an SRV name: the records of the lowest priority whose hosts
    /// resolve, each host's addresses with the record's port, repeated in proportion to
    /// the record's weight (so round robin and random choices honour it). Expires with
    /// the earliest of the SRV and address answers.
    async fn resolve_srv(
        &self,
        name: &str,
    ) -> std::io::Result<(Vec<SocketAddr>, Option<std::time::Instant>)> {
        let srv = self.resolver.resolve_srv(name).await?;
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
                match self.resolver.resolve(&record.host).await {
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
                r = self.refresh() => r,
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

#[cfg(test)]
mod tests {
    #[test]
    fn srv_weights_become_shares() {
        assert_eq!(weight_shares(&[1, 3]), [1, 3]);
        assert_eq!(weight_shares(&[10, 30]), [1, 3], "reduced by their divisor");
        assert_eq!(weight_shares(&[0, 0]), [1, 1], "all zero: equal");
        assert_eq!(weight_shares(&[0, 5]), [0, 1], "zero among weighted: none");
        let big = weight_shares(&[1, 65535]);
        assert!(big.iter().sum::<usize>() <= 101 && big[0] == 1, "{big:?}");
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        let copies = vec![
            a("1.1.1.1:1"),
            a("1.1.1.1:1"),
            a("1.1.1.1:1"),
            a("2.2.2.2:2"),
        ];
        assert_eq!(
            interleave_copies(copies),
            [
                a("1.1.1.1:1"),
                a("2.2.2.2:2"),
                a("1.1.1.1:1"),
                a("1.1.1.1:1")
            ]
        );
    }

    use super::*;
    use crate::resolve::{Resolution, Resolving};
    use std::net::IpAddr;
    use std::sync::Mutex;

    /// Answers from a script; an empty script entry is a failure.
    struct Scripted(Mutex<Vec<Option<IpAddr>>>);

    impl Resolve for Scripted {
        fn resolve(&self, _name: &str) -> Resolving {
            let mut script = self.0.lock().unwrap();
            let next = if script.len() > 1 {
                script.remove(0)
            } else {
                script[0]
            };
            Box::pin(async move {
                next.map(|ip| Resolution::new(vec![ip], None))
                    .ok_or_else(|| std::io::Error::other("scripted failure"))
            })
        }
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn ttl_is_clamped() {
        let p = CachePolicy::default();
        let now = std::time::Instant::now();
        assert_eq!(p.next_refresh(None), Duration::from_secs(30));
        assert_eq!(p.next_refresh(Some(now)), Duration::from_secs(1));
        let far = now + Duration::from_secs(86_400);
        assert_eq!(p.next_refresh(Some(far)), Duration::from_secs(300));
        let mut fixed = p;
        fixed.refresh = Some(Duration::from_secs(7));
        assert_eq!(fixed.next_refresh(Some(far)), Duration::from_secs(7));
    }

    #[tokio::test(start_paused = true)]
    async fn refreshes_and_keeps_last_good_answer() {
        let script = Scripted(Mutex::new(vec![Some(ip(1)), Some(ip(2)), None]));
        let stats = Arc::new(Stats::default());
        let cache = Arc::new(ResolveCache::new(
            Target::new(Host::Name("svc".into()), 80),
            Arc::new(script),
            CachePolicy::default(),
            stats.clone(),
        ));
        let first = cache.addrs().await.unwrap();
        assert_eq!(&*first, &[SocketAddr::new(ip(1), 80)]);

        let cancel = CancellationToken::new();
        let task = tokio::spawn(cache.clone().run(cancel.clone()));
        // The refresher's first lookup answers 10.0.0.2, then every lookup fails.
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(
            &*cache.addrs().await.unwrap(),
            &[SocketAddr::new(ip(2), 80)]
        );
        tokio::time::sleep(Duration::from_secs(120)).await;
        assert_eq!(
            &*cache.addrs().await.unwrap(),
            &[SocketAddr::new(ip(2), 80)]
        );
        assert!(stats.snapshot().resolve_failures >= 2);
        assert_eq!(stats.snapshot().resolve_refreshes, 2);
        cancel.cancel();
        task.await.unwrap();
    }

    /// Fails every lookup after `takes`, recording when each one started.
    struct SlowFailure {
        takes: Duration,
        started: Arc<Mutex<Vec<tokio::time::Instant>>>,
    }

    impl Resolve for SlowFailure {
        fn resolve(&self, _name: &str) -> Resolving {
            self.started
                .lock()
                .unwrap()
                .push(tokio::time::Instant::now());
            let takes = self.takes;
            Box::pin(async move {
                tokio::time::sleep(takes).await;
                Err(std::io::Error::other("timed out"))
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_waits_from_the_end_of_the_failed_lookup() {
        let started = Arc::new(Mutex::new(Vec::new()));
        let resolver = SlowFailure {
            takes: Duration::from_secs(15),
            started: started.clone(),
        };
        let cache = Arc::new(ResolveCache::new(
            Target::new(Host::Name("svc".into()), 80),
            Arc::new(resolver),
            CachePolicy::default(),
            Arc::new(Stats::default()),
        ));
        let cancel = CancellationToken::new();
        let task = tokio::spawn(cache.run(cancel.clone()));
        tokio::time::sleep(Duration::from_secs(60)).await;
        cancel.cancel();
        task.await.unwrap();
        let started = started.lock().unwrap();
        // Lookups of 15 s, then waits of 1 s, 2 s, 4 s: starts at 0, 16, 33 and 52 s.
        let gaps: Vec<u64> = started
            .windows(2)
            .map(|w| (w[1] - w[0]).as_secs())
            .collect();
        assert_eq!(gaps, [16, 17, 19], "{started:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn first_lookup_failure_is_a_resolve_error() {
        let cache = ResolveCache::new(
            Target::new(Host::Name("svc".into()), 80),
            Arc::new(Scripted(Mutex::new(vec![None]))),
            CachePolicy::default(),
            Arc::new(Stats::default()),
        );
        let e = cache.addrs().await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Resolve);
        assert_eq!(e.side(), Side::Upstream);
    }

    #[tokio::test]
    async fn ip_literals_skip_the_resolver() {
        let cache = ResolveCache::new(
            "127.0.0.1:9".parse().unwrap(),
            Arc::new(Scripted(Mutex::new(vec![None]))),
            CachePolicy::default(),
            Arc::new(Stats::default()),
        );
        assert_eq!(
            &*cache.addrs().await.unwrap(),
            &["127.0.0.1:9".parse().unwrap()]
        );
    }
}
