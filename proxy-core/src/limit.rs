//! Admission limits: how many connections or sessions may be open, from whom, and how
//! fast new ones may come.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::stats::Stats;

/// Limits on new TCP connections and UDP sessions. A newcomer past a limit is refused at
/// once (a TCP connection is reset; the datagrams that would start a UDP session are
/// dropped) and counted in [`StatsSnapshot::limited`](crate::StatsSnapshot::limited);
/// connections and sessions already open are never touched.
///
/// The counts behind them live as long as the forwarder: a
/// [`reload`](crate::ForwarderHandle::reload) that changes the limits applies them to the
/// connections already open.
///
/// # Examples
///
/// ```
/// use proxy_core::{Limits, Rate};
///
/// let mut limits = Limits::default();
/// limits.max_connections = Some(10_000);
/// limits.max_per_source = Some(100);
/// limits.accept_rate = Some(Rate::per_second(500).burst(1_000));
/// # let _ = limits;
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// The most TCP connections (or UDP sessions) open at once, across every listen
    /// address. Default: no limit. A UDP forwarder's table also evicts its least recently
    /// used session past [`max_sessions`](crate::UdpForwarderBuilder::max_sessions).
    pub max_connections: Option<usize>,
    /// The most TCP connections (or UDP sessions) open at once from one client IP
    /// address. Behind a trusted PROXY peer ([`AcceptProxy`](crate::AcceptProxy)), the
    /// client its header names counts. Default: no limit.
    pub max_per_source: Option<usize>,
    /// How fast new TCP connections (or UDP sessions) are admitted. Default: no limit.
    pub accept_rate: Option<Rate>,
}

/// A rate of new connections: `per_second` on average, with up to `burst` at once after a
/// quiet spell (a token bucket).
///
/// # Examples
///
/// ```
/// use proxy_core::Rate;
///
/// let rate = Rate::per_second(100);
/// assert_eq!(rate.burst, 100, "one second's worth by default");
/// assert_eq!(rate.burst(250).burst, 250);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Rate {
    /// New connections per second, on average.
    pub per_second: u32,
    /// The most admitted at once.
    pub burst: u32,
}

impl Rate {
    /// `n` new connections a second, in bursts of up to `n`.
    pub fn per_second(n: u32) -> Rate {
        Rate {
            per_second: n,
            burst: n,
        }
    }

    /// The same rate with bursts of up to `burst`.
    pub fn burst(self, burst: u32) -> Rate {
        Rate { burst, ..self }
    }
}

impl Limits {
    /// The name of the first limit set to zero, which would refuse everyone.
    pub(crate) fn zero(&self) -> Option<&'static str> {
        if self.max_connections == Some(0) {
            Some("max_connections")
        } else if self.max_per_source == Some(0) {
            Some("max_per_source")
        } else if self.accept_rate.is_some_and(|r| r.per_second == 0) {
            Some("accept_rate")
        } else if self.accept_rate.is_some_and(|r| r.burst == 0) {
            Some("accept_burst")
        } else {
            None
        }
    }
}

/// The limit a newcomer was refused by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// [`Limits::max_connections`].
    Connections,
    /// [`Limits::max_per_source`].
    PerSource,
    /// [`Limits::accept_rate`].
    Rate,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Refused::Connections => "the connection limit",
            Refused::PerSource => "the per-source limit",
            Refused::Rate => "the accept rate",
        })
    }
}

/// The counts [`Limits`] are checked against, kept for the life of a forwarder.
#[derive(Debug, Default)]
pub(crate) struct Admission {
    /// Connections (or sessions) open now.
    open: AtomicUsize,
    /// Connections (or sessions) open now, by client IP; an IP with none has no entry.
    sources: Mutex<HashMap<IpAddr, usize>>,
    /// The accept rate's bucket, once a rate is set.
    bucket: Mutex<Option<Bucket>>,
    /// When a refusal was last logged as a warning.
    warned: Mutex<Option<Instant>>,
}

/// A token bucket: `tokens` were left at `at`.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// An admitted connection or session; dropping it gives its place back.
#[derive(Debug)]
pub(crate) struct Permit {
    admission: Arc<Admission>,
    source: Option<IpAddr>,
}

impl Admission {
    /// Admits a newcomer from `source` under `limits`, or names the limit that refuses it.
    /// Without a `source` (not known yet), add it with [`Permit::source`] once known.
    pub(crate) fn admit(
        self: &Arc<Self>,
        limits: &Limits,
        source: Option<IpAddr>,
    ) -> Result<Permit, Refused> {
        // Counted first, so that racing listeners cannot overshoot; a refusal drops the
        // permit, which takes it back.
        let open = self.open.fetch_add(1, Relaxed);
        let mut permit = Permit {
            admission: self.clone(),
            source: None,
        };
        if limits.max_connections.is_some_and(|max| open >= max) {
            return Err(Refused::Connections);
        }
        if let Some(ip) = source {
            permit.source(limits, ip)?;
        }
        // Last: a newcomer refused by another limit takes no token.
        if let Some(rate) = limits.accept_rate {
            self.take_token(rate)?;
        }
        Ok(permit)
    }

    fn take_token(&self, rate: Rate) -> Result<(), Refused> {
        let now = Instant::now();
        let burst = f64::from(rate.burst);
        let mut bucket = lock(&self.bucket);
        let bucket = bucket.get_or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let earned = now.duration_since(bucket.at).as_secs_f64() * f64::from(rate.per_second);
        bucket.tokens = (bucket.tokens + earned).min(burst);
        bucket.at = now;
        if bucket.tokens < 1.0 {
            return Err(Refused::Rate);
        }
        bucket.tokens -= 1.0;
        Ok(())
    }

    /// Counts a refusal by `limit` in `stats`, `n` times (datagrams, for UDP), and warns
    /// at most once per period however often it happens.
    pub(crate) fn refused(&self, limit: Refused, n: u64, stats: &Stats, client: IpAddr) {
        const WARN_EVERY: Duration = Duration::from_secs(10);
        let counter = match limit {
            Refused::Connections => &stats.limited_connections,
            Refused::PerSource => &stats.limited_per_source,
            Refused::Rate => &stats.limited_rate,
        };
        Stats::add(counter, n);
        let now = Instant::now();
        let warn = {
            let mut warned = lock(&self.warned);
            let due = warned.is_none_or(|t| now.duration_since(t) >= WARN_EVERY);
            if due {
                *warned = Some(now);
            }
            due
        };
        if warn {
            tracing::warn!(%client, open = self.open.load(Relaxed), "refused by {limit} (warned at most every 10 s; see the limited counters)");
        } else {
            tracing::debug!(%client, "refused by {limit}");
        }
    }
}

impl Permit {
    /// Counts this connection against its client `ip` too, or refuses it when `ip` is at
    /// its limit.
    pub(crate) fn source(&mut self, limits: &Limits, ip: IpAddr) -> Result<(), Refused> {
        debug_assert!(self.source.is_none(), "one source per permit");
        let ip = ip.to_canonical();
        let mut sources = lock(&self.admission.sources);
        let open = sources.get(&ip).copied().unwrap_or(0);
        if limits.max_per_source.is_some_and(|max| open >= max) {
            return Err(Refused::PerSource);
        }
        sources.insert(ip, open + 1);
        self.source = Some(ip);
        Ok(())
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.admission.open.fetch_sub(1, Relaxed);
        if let Some(ip) = self.source {
            let mut sources = lock(&self.admission.sources);
            if let Some(open) = sources.get_mut(&ip) {
                *open -= 1;
                if *open == 0 {
                    sources.remove(&ip);
                }
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn limits(f: impl FnOnce(&mut Limits)) -> Limits {
        let mut l = Limits::default();
        f(&mut l);
        l
    }

    #[test]
    fn the_connection_limit_counts_every_open_permit() {
        let admission = Arc::new(Admission::default());
        let l = limits(|l| l.max_connections = Some(2));
        let a = admission.admit(&l, Some(ip("10.0.0.1"))).unwrap();
        let _b = admission.admit(&l, Some(ip("10.0.0.2"))).unwrap();
        assert_eq!(
            admission.admit(&l, Some(ip("10.0.0.3"))).unwrap_err(),
            Refused::Connections
        );
        assert_eq!(admission.open.load(Relaxed), 2, "the refusal took nothing");
        drop(a);
        let _c = admission.admit(&l, Some(ip("10.0.0.3"))).unwrap();
        // Lifted (a reload), the limit counts what is open.
        let _d = admission.admit(&Limits::default(), None).unwrap();
        assert_eq!(admission.open.load(Relaxed), 3);
    }

    #[test]
    fn the_per_source_limit_counts_each_client_ip() {
        let admission = Arc::new(Admission::default());
        let l = limits(|l| l.max_per_source = Some(2));
        let a1 = admission.admit(&l, Some(ip("10.0.0.1"))).unwrap();
        let _a2 = admission.admit(&l, Some(ip("::ffff:10.0.0.1"))).unwrap();
        assert_eq!(
            admission.admit(&l, Some(ip("10.0.0.1"))).unwrap_err(),
            Refused::PerSource,
            "mapped IPv4 is the same client"
        );
        let _b = admission.admit(&l, Some(ip("10.0.0.2"))).unwrap();
        drop(a1);
        let _a3 = admission.admit(&l, Some(ip("10.0.0.1"))).unwrap();
        // A source added later (after a PROXY header) answers to the same counts.
        let mut late = admission.admit(&l, None).unwrap();
        assert_eq!(late.source(&l, ip("10.0.0.1")), Err(Refused::PerSource));
        late.source(&l, ip("10.0.0.9")).unwrap();
        drop(late);
        assert_eq!(
            lock(&admission.sources).len(),
            2,
            "gone clients are forgotten"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_accept_rate_is_a_token_bucket() {
        let admission = Arc::new(Admission::default());
        let l = limits(|l| l.accept_rate = Some(Rate::per_second(10).burst(3)));
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(admission.admit(&l, None).unwrap());
        }
        assert_eq!(admission.admit(&l, None).unwrap_err(), Refused::Rate);
        tokio::time::advance(Duration::from_millis(100)).await;
        held.push(admission.admit(&l, None).unwrap());
        assert_eq!(admission.admit(&l, None).unwrap_err(), Refused::Rate);
        // A quiet spell refills up to the burst, no more.
        tokio::time::advance(Duration::from_secs(60)).await;
        for _ in 0..3 {
            held.push(admission.admit(&l, None).unwrap());
        }
        assert_eq!(admission.admit(&l, None).unwrap_err(), Refused::Rate);
        // Refused by another limit, a newcomer takes no token.
        tokio::time::advance(Duration::from_millis(100)).await;
        let capped = limits(|c| {
            c.max_connections = Some(1);
            c.accept_rate = l.accept_rate;
        });
        assert_eq!(
            admission.admit(&capped, None).unwrap_err(),
            Refused::Connections
        );
        held.clear();
        admission.admit(&l, None).unwrap();
    }

    #[test]
    fn zero_limits_are_named() {
        assert_eq!(Limits::default().zero(), None);
        assert_eq!(
            limits(|l| l.max_connections = Some(0)).zero(),
            Some("max_connections")
        );
        assert_eq!(
            limits(|l| l.max_per_source = Some(0)).zero(),
            Some("max_per_source")
        );
        assert_eq!(
            limits(|l| l.accept_rate = Some(Rate::per_second(0))).zero(),
            Some("accept_rate")
        );
        assert_eq!(
            limits(|l| l.accept_rate = Some(Rate::per_second(5).burst(0))).zero(),
            Some("accept_burst")
        );
    }
}
