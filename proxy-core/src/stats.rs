//! Live counters of a forwarder and their snapshot.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Counters shared by a forwarder's tasks; read through [`Stats::snapshot`].
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub(crate) connections_open: AtomicU64,
    pub(crate) connections_total: AtomicU64,
    pub(crate) bytes_to_upstream: AtomicU64,
    pub(crate) bytes_to_downstream: AtomicU64,
    pub(crate) bytes_spliced: AtomicU64,
    pub(crate) splice_fallbacks: AtomicU64,
    pub(crate) connect_refused: AtomicU64,
    pub(crate) connect_unreachable: AtomicU64,
    pub(crate) connect_timeout: AtomicU64,
    pub(crate) connect_other: AtomicU64,
    pub(crate) upstream_unavailable: AtomicU64,
    pub(crate) ejections: AtomicU64,
    pub(crate) all_ejected: AtomicU64,
    pub(crate) proxy_headers_rejected: AtomicU64,
    pub(crate) denied: AtomicU64,
    pub(crate) limited_connections: AtomicU64,
    pub(crate) limited_per_source: AtomicU64,
    pub(crate) limited_rate: AtomicU64,
    pub(crate) resolve_refreshes: AtomicU64,
    pub(crate) resolve_failures: AtomicU64,
    pub(crate) accept_errors: AtomicU64,
    pub(crate) sni_no_route: AtomicU64,
    pub(crate) sni_hello_failed: AtomicU64,
    pub(crate) tls_handshakes_failed: AtomicU64,
    pub(crate) bytes_in_kernel: AtomicU64,
    pub(crate) sockmap_fallbacks: AtomicU64,
    pub(crate) udp_sessions_open: AtomicU64,
    pub(crate) udp_sessions_total: AtomicU64,
    pub(crate) udp_sessions_evicted: AtomicU64,
    pub(crate) udp_datagrams_to_upstream: AtomicU64,
    pub(crate) udp_datagrams_to_downstream: AtomicU64,
    pub(crate) udp_dropped: AtomicU64,
    pub(crate) udp_truncated: AtomicU64,
    pub(crate) udp_upstream_refused: AtomicU64,
    /// By address; foldhash, as these keys are the target's addresses, not a client's.
    endpoints: Mutex<foldhash::HashMap<SocketAddr, Tracked>>,
}

/// Answers in a row an address must be missing from, with nothing open on it, before its
/// [`EndpointStats`] are dropped: a while for a last scrape to see its final values, and
/// not a flap of a rotating answer. With a 30 s TTL that is a minute and a half.
const PRUNE_AFTER_ANSWERS: u32 = 3;

/// The most addresses with stats kept: past it, the one longest out of the answer with
/// nothing open on it makes room. Bounds memory and series whatever the DNS answers.
const MAX_ENDPOINTS: usize = 1024;

/// An address's stats and what decides when they are dropped.
#[derive(Debug)]
struct Tracked {
    stats: EndpointStats,
    /// Connections or sessions open on it now.
    open: u64,
    /// Successful lookups in a row whose answer did not have it.
    missing: u32,
}

/// A point-in-time copy of a forwarder's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StatsSnapshot {
    /// Client connections open now.
    pub connections_open: u64,
    /// Client connections accepted since the start.
    pub connections_total: u64,
    /// Bytes relayed from clients to the upstream.
    pub bytes_to_upstream: u64,
    /// Bytes relayed from the upstream to clients.
    pub bytes_to_downstream: u64,
    /// Of all relayed bytes, those moved by `splice(2)` without a copy to user space.
    pub bytes_spliced: u64,
    /// Relay directions that fell back from splice to copying (splice unsupported).
    pub splice_fallbacks: u64,
    /// Failed connect attempts to upstream addresses, by kind.
    pub connect_failures: ConnectFailures,
    /// Client connections closed because no upstream address could be reached or resolved.
    pub upstream_unavailable: u64,
    /// Times an upstream address was ejected for failing (see [`Ejection`](crate::Ejection)).
    pub ejections: u64,
    /// Connections and sessions refused at once because every address was ejected (also
    /// counted in `upstream_unavailable`).
    pub all_ejected: u64,
    /// Connections from trusted peers closed for a missing, malformed or late PROXY
    /// header (see [`AcceptProxy`](crate::AcceptProxy)).
    pub proxy_headers_rejected: u64,
    /// TCP connections reset and UDP datagrams dropped because [`Access`](crate::Access)
    /// does not permit their client.
    pub denied: u64,
    /// TCP connections reset and UDP datagrams dropped by the [`Limits`](crate::Limits),
    /// by limit.
    pub limited: Limited,
    /// Successful DNS lookups of the upstream name.
    pub resolve_refreshes: u64,
    /// Failed DNS lookups of the upstream name (the last good answer was kept).
    pub resolve_failures: u64,
    /// Errors from `accept(2)`, such as running out of file descriptors.
    pub accept_errors: u64,
    /// TCP connections reset because no SNI route served the server name they asked for
    /// and the forward has no target for the rest.
    pub sni_no_route: u64,
    /// TCP connections of a forward with SNI routes closed because the client did not
    /// send a whole ClientHello within the `sni_timeout`, or closed first.
    pub sni_hello_failed: u64,
    /// TCP connections of a forward terminating TLS closed because their handshake
    /// failed, timed out, or the client left first.
    pub tls_handshakes_failed: u64,
    /// Of all relayed bytes, those moved inside the kernel by the socket map of
    /// [`RelayMode::Sockmap`](crate::RelayMode::Sockmap).
    pub bytes_in_kernel: u64,
    /// TCP connections of a [`RelayMode::Sockmap`](crate::RelayMode::Sockmap) forward
    /// that the socket map did not take (it was full, or a peer had closed first),
    /// relayed in user space instead.
    pub sockmap_fallbacks: u64,
    /// UDP sessions and datagrams; all zero for a TCP forwarder.
    pub udp: UdpStats,
}

/// The UDP side of a [`StatsSnapshot`]. Relayed payload bytes are counted in
/// [`StatsSnapshot::bytes_to_upstream`] and [`StatsSnapshot::bytes_to_downstream`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct UdpStats {
    /// Sessions (client address to upstream socket) open now.
    pub sessions_open: u64,
    /// Sessions created since the start.
    pub sessions_total: u64,
    /// Sessions ended early because the session table was full (least recently used).
    pub sessions_evicted: u64,
    /// Datagrams relayed from clients to the upstream.
    pub datagrams_to_upstream: u64,
    /// Datagrams relayed from the upstream to clients.
    pub datagrams_to_downstream: u64,
    /// Datagrams dropped: a socket's send buffer was full, a session could not reach any
    /// upstream address, too many arrived before a new session was ready, or a reply
    /// came after its session ended (it is discarded, never passed to another client).
    pub dropped: u64,
    /// Datagrams that arrived cut short (larger than any UDP payload); dropped, not relayed.
    pub truncated: u64,
    /// ICMP port-unreachable reports from the upstream (ECONNREFUSED on a session's
    /// socket); the session stays and works again once the upstream is back, unless
    /// after three in a row a new session would go elsewhere (a reload changed the
    /// target, or DNS answers another address): then it ends, and the client's next
    /// datagram starts one.
    pub upstream_refused: u64,
}

/// Newcomers refused by the [`Limits`](crate::Limits): TCP connections (reset at once)
/// and UDP datagrams (dropped) that would have started a session.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limited {
    /// Refused by [`Limits::max_connections`](crate::Limits::max_connections).
    pub connections: u64,
    /// Refused by [`Limits::max_per_source`](crate::Limits::max_per_source).
    pub per_source: u64,
    /// Refused by [`Limits::accept_rate`](crate::Limits::accept_rate).
    pub rate: u64,
}

/// Failed connect attempts by kind; one client connection may make several attempts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectFailures {
    /// The upstream answered the SYN with a RST.
    pub refused: u64,
    /// No route to the upstream host or network.
    pub unreachable: u64,
    /// The attempt took longer than the connect timeout.
    pub timeout: u64,
    /// Any other error.
    pub other: u64,
}

/// How one upstream address has fared: every address of the target's current DNS answer
/// that has been tried has one, and so has an address that left the answer, until it has
/// been missing from a few answers in a row with no connection or session open on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct EndpointStats {
    /// The upstream address.
    pub addr: SocketAddr,
    /// Successful connects (TCP) or sessions set up (UDP).
    pub connects: u64,
    /// Failed connects (TCP) or ICMP port-unreachable reports (UDP).
    pub failures: u64,
    /// Failures since the last success.
    pub consecutive_failures: u64,
    /// Times this address was ejected for failing.
    pub ejections: u64,
    /// Whether health checks mark it down now (see [`HealthCheck`](crate::HealthCheck)).
    pub checked_down: bool,
}

impl EndpointStats {
    fn new(addr: SocketAddr) -> Self {
        EndpointStats {
            addr,
            connects: 0,
            failures: 0,
            consecutive_failures: 0,
            ejections: 0,
            checked_down: false,
        }
    }

    /// Whether the last attempt succeeded (or none failed yet).
    pub fn healthy(&self) -> bool {
        self.consecutive_failures == 0
    }
}

/// The stats of `addr`, added when new. At [`MAX_ENDPOINTS`] the address longest missing
/// from the answer with nothing open on it makes room; `None` when none can (every one
/// has connections open), and `addr` goes uncounted.
fn tracked(
    endpoints: &mut foldhash::HashMap<SocketAddr, Tracked>,
    addr: SocketAddr,
) -> Option<&mut Tracked> {
    // The length first: the lookup is only needed when the table is full.
    if endpoints.len() >= MAX_ENDPOINTS && !endpoints.contains_key(&addr) {
        let evict = endpoints
            .iter()
            .filter(|(_, e)| e.open == 0)
            .max_by_key(|(_, e)| e.missing)
            .map(|(a, _)| *a)?;
        endpoints.remove(&evict);
    }
    Some(endpoints.entry(addr).or_insert_with(|| Tracked {
        stats: EndpointStats::new(addr),
        open: 0,
        missing: 0,
    }))
}

impl ConnectFailures {
    /// All failed attempts.
    pub fn total(&self) -> u64 {
        self.refused + self.unreachable + self.timeout + self.other
    }
}

impl Stats {
    pub(crate) fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    pub(crate) fn sub(counter: &AtomicU64, n: u64) {
        counter.fetch_sub(n, Relaxed);
    }

    fn endpoints_lock(&self) -> std::sync::MutexGuard<'_, foldhash::HashMap<SocketAddr, Tracked>> {
        self.endpoints.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records the outcome of an attempt to reach `addr`.
    pub(crate) fn endpoint(&self, addr: SocketAddr, ok: bool) {
        let mut endpoints = self.endpoints_lock();
        let Some(e) = tracked(&mut endpoints, addr) else {
            return;
        };
        if ok {
            e.stats.connects += 1;
            e.stats.consecutive_failures = 0;
        } else {
            e.stats.failures += 1;
            e.stats.consecutive_failures += 1;
        }
    }

    /// Counts an ejection of `addr`.
    pub(crate) fn ejected(&self, addr: SocketAddr) {
        Stats::inc(&self.ejections);
        let mut endpoints = self.endpoints_lock();
        if let Some(e) = endpoints.get_mut(&addr) {
            e.stats.ejections += 1;
        }
    }

    /// Records a health-check verdict on `addr`.
    pub(crate) fn health(&self, addr: SocketAddr, up: bool) {
        let mut endpoints = self.endpoints_lock();
        if let Some(e) = tracked(&mut endpoints, addr) {
            e.stats.checked_down = !up;
        }
    }

    /// A connection or session to `addr` opened (`true`) or closed: its stats are kept
    /// while any is open.
    pub(crate) fn endpoint_open(&self, addr: SocketAddr, opened: bool) {
        let mut endpoints = self.endpoints_lock();
        if opened {
            if let Some(e) = tracked(&mut endpoints, addr) {
                e.open += 1;
            }
        } else if let Some(e) = endpoints.get_mut(&addr) {
            e.open = e.open.saturating_sub(1);
        }
    }

    /// A successful lookup answered `addrs`: the stats of addresses missing from
    /// [`PRUNE_AFTER_ANSWERS`] answers in a row, with nothing open on them, are dropped,
    /// so a rotating answer does not grow the table (and the metrics) for ever.
    pub(crate) fn answered(&self, addrs: &[SocketAddr]) {
        let mut endpoints = self.endpoints_lock();
        for (addr, e) in endpoints.iter_mut() {
            e.missing = if addrs.contains(addr) {
                0
            } else {
                e.missing.saturating_add(1)
            };
        }
        endpoints.retain(|_, e| e.open > 0 || e.missing < PRUNE_AFTER_ANSWERS);
    }

    /// Every endpoint kept, ordered by address.
    pub(crate) fn endpoints(&self) -> Vec<EndpointStats> {
        let endpoints = self.endpoints_lock();
        let mut all: Vec<EndpointStats> = endpoints.values().map(|e| e.stats).collect();
        all.sort_by_key(|e| e.addr);
        all
    }

    pub(crate) fn snapshot(&self) -> StatsSnapshot {
        let get = |c: &AtomicU64| c.load(Relaxed);
        StatsSnapshot {
            connections_open: get(&self.connections_open),
            connections_total: get(&self.connections_total),
            bytes_to_upstream: get(&self.bytes_to_upstream),
            bytes_to_downstream: get(&self.bytes_to_downstream),
            bytes_spliced: get(&self.bytes_spliced),
            splice_fallbacks: get(&self.splice_fallbacks),
            connect_failures: ConnectFailures {
                refused: get(&self.connect_refused),
                unreachable: get(&self.connect_unreachable),
                timeout: get(&self.connect_timeout),
                other: get(&self.connect_other),
            },
            upstream_unavailable: get(&self.upstream_unavailable),
            ejections: get(&self.ejections),
            all_ejected: get(&self.all_ejected),
            proxy_headers_rejected: get(&self.proxy_headers_rejected),
            denied: get(&self.denied),
            limited: Limited {
                connections: get(&self.limited_connections),
                per_source: get(&self.limited_per_source),
                rate: get(&self.limited_rate),
            },
            resolve_refreshes: get(&self.resolve_refreshes),
            resolve_failures: get(&self.resolve_failures),
            accept_errors: get(&self.accept_errors),
            sni_no_route: get(&self.sni_no_route),
            sni_hello_failed: get(&self.sni_hello_failed),
            tls_handshakes_failed: get(&self.tls_handshakes_failed),
            bytes_in_kernel: get(&self.bytes_in_kernel),
            sockmap_fallbacks: get(&self.sockmap_fallbacks),
            udp: UdpStats {
                sessions_open: get(&self.udp_sessions_open),
                sessions_total: get(&self.udp_sessions_total),
                sessions_evicted: get(&self.udp_sessions_evicted),
                datagrams_to_upstream: get(&self.udp_datagrams_to_upstream),
                datagrams_to_downstream: get(&self.udp_datagrams_to_downstream),
                dropped: get(&self.udp_dropped),
                truncated: get(&self.udp_truncated),
                upstream_refused: get(&self.udp_upstream_refused),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(n: u32) -> SocketAddr {
        SocketAddr::from((std::net::Ipv4Addr::from(0x0a00_0000 + n), 80))
    }

    /// Addresses gone from the answer are dropped after a few answers, unless something is
    /// open on them; the table never holds more than its bound.
    #[test]
    fn endpoints_are_pruned_and_bounded() {
        let stats = Stats::default();
        stats.endpoint(addr(1), true);
        stats.endpoint(addr(2), true);
        stats.endpoint_open(addr(2), true);
        for _ in 0..PRUNE_AFTER_ANSWERS - 1 {
            stats.answered(&[addr(3)]);
        }
        assert_eq!(stats.endpoints().len(), 2);
        stats.answered(&[addr(3)]);
        let kept: Vec<SocketAddr> = stats.endpoints().iter().map(|e| e.addr).collect();
        assert_eq!(kept, [addr(2)], "open connections keep an address");
        stats.endpoint_open(addr(2), false);
        stats.answered(&[addr(3)]);
        assert!(stats.endpoints().is_empty());

        for n in 0..MAX_ENDPOINTS as u32 + 100 {
            stats.endpoint(addr(n), false);
        }
        assert_eq!(stats.endpoints().len(), MAX_ENDPOINTS);
        assert!(
            stats
                .endpoints()
                .iter()
                .any(|e| e.addr == addr(MAX_ENDPOINTS as u32 + 99))
        );
    }
}
