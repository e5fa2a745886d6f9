//! Counters per route: requests by status class, a latency histogram, bytes both ways.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// The upper bounds of the latency histogram's buckets, in seconds (Prometheus'
/// defaults, which cover a millisecond to ten seconds).
pub const LATENCY_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// One route's live counters.
#[derive(Debug, Default)]
pub(crate) struct RouteStats {
    by_class: [AtomicU64; 5],
    latency: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    latency_sum_us: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
}

/// A copy of one route's counters.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct RouteSnapshot {
    /// The route, as written (`shop.example/api=api:8080`); `-` for requests no route
    /// served.
    pub route: String,
    /// Requests answered, by status class: `[1xx, 2xx, 3xx, 4xx, 5xx]`.
    pub by_class: [u64; 5],
    /// Requests whose response head came within each bucket's bound
    /// ([`LATENCY_BUCKETS`]), cumulative as Prometheus has them; the last is all of them.
    pub latency_buckets: [u64; LATENCY_BUCKETS.len() + 1],
    /// The sum of those latencies.
    pub latency_sum: Duration,
    /// Request body bytes sent upstream.
    pub bytes_in: u64,
    /// Response body bytes sent to clients.
    pub bytes_out: u64,
}

impl RouteStats {
    /// Counts a request answered with `status` after `latency` (to the response head).
    pub(crate) fn answered(&self, status: u16, latency: Duration) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.by_class[class].fetch_add(1, Relaxed);
        let secs = latency.as_secs_f64();
        let bucket = LATENCY_BUCKETS
            .iter()
            .position(|&bound| secs <= bound)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.latency[bucket].fetch_add(1, Relaxed);
        self.latency_sum_us
            .fetch_add(latency.as_micros() as u64, Relaxed);
    }

    /// Counts body bytes: `request` sent upstream, `response` sent to the client.
    pub(crate) fn bytes(&self, request: u64, response: u64) {
        self.bytes_in.fetch_add(request, Relaxed);
        self.bytes_out.fetch_add(response, Relaxed);
    }

    /// A copy, for `route`.
    pub(crate) fn snapshot(&self, route: String) -> RouteSnapshot {
        let mut latency_buckets = [0; LATENCY_BUCKETS.len() + 1];
        let mut total = 0;
        for (out, n) in latency_buckets.iter_mut().zip(&self.latency) {
            total += n.load(Relaxed);
            *out = total;
        }
        RouteSnapshot {
            route,
            by_class: std::array::from_fn(|i| self.by_class[i].load(Relaxed)),
            latency_buckets,
            latency_sum: Duration::from_micros(self.latency_sum_us.load(Relaxed)),
            bytes_in: self.bytes_in.load(Relaxed),
            bytes_out: self.bytes_out.load(Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_and_buckets_are_counted_cumulatively() {
        let s = RouteStats::default();
        s.answered(200, Duration::from_millis(3));
        s.answered(204, Duration::from_millis(30));
        s.answered(502, Duration::from_secs(20));
        s.answered(101, Duration::ZERO);
        let snap = s.snapshot("/=web:80".into());
        assert_eq!(snap.by_class, [1, 2, 0, 0, 1]);
        assert_eq!(snap.latency_buckets[0], 2, "3 ms and 0 ms are under 5 ms");
        assert_eq!(snap.latency_buckets[3], 3, "30 ms is under 50 ms");
        assert_eq!(snap.latency_buckets[LATENCY_BUCKETS.len() - 1], 3);
        assert_eq!(snap.latency_buckets[LATENCY_BUCKETS.len()], 4);
        assert_eq!(snap.latency_sum, Duration::from_millis(20_033));
    }
}
