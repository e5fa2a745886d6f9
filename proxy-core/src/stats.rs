//! Live counters of a forwarder and their snapshot.

use std::collections::HashMap;
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
    pub(crate) udp_sessions_open: AtomicU64,
    pub(crate) udp_sessions_total: AtomicU64,
    pub(crate) udp_sessions_evicted: AtomicU64,
    pub(crate) udp_datagrams_to_upstream: AtomicU64,
    pub(crate) udp_datagrams_to_downstream: AtomicU64,
    pub(crate) udp_dropped: AtomicU64,
    pub(crate) udp_truncated: AtomicU64,
    pub(crate) udp_upstream_refused: AtomicU64,
    endpoints: Mutex<HashMap<SocketAddr, EndpointStats>>,
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

/// How one upstream address has fared: every address the target resolved to since the
/// forwarder started has one.
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

    /// Records the outcome of an attempt to reach `addr`.
    pub(crate) fn endpoint(&self, addr: SocketAddr, ok: bool) {
        let mut endpoints = self.endpoints.lock().unwrap_or_else(|e| e.into_inner());
        let e = endpoints
            .entry(addr)
            .or_insert_with(|| EndpointStats::new(addr));
        if ok {
            e.connects += 1;
            e.consecutive_failures = 0;
        } else {
            e.failures += 1;
            e.consecutive_failures += 1;
        }
    }

    /// Counts an ejection of `addr`.
    pub(crate) fn ejected(&self, addr: SocketAddr) {
        Stats::inc(&self.ejections);
        let mut endpoints = self.endpoints.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = endpoints.get_mut(&addr) {
            e.ejections += 1;
        }
    }

    /// Records a health-check verdict on `addr`.
    pub(crate) fn health(&self, addr: SocketAddr, up: bool) {
        let mut endpoints = self.endpoints.lock().unwrap_or_else(|e| e.into_inner());
        let e = endpoints
            .entry(addr)
            .or_insert_with(|| EndpointStats::new(addr));
        e.checked_down = !up;
    }

    /// Every endpoint seen, ordered by address.
    pub(crate) fn endpoints(&self) -> Vec<EndpointStats> {
        let endpoints = self.endpoints.lock().unwrap_or_else(|e| e.into_inner());
        let mut all: Vec<EndpointStats> = endpoints.values().copied().collect();
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
