//! The C stats structs: `proxy_stats`, a forwarder's counters summed over its TCP and UDP
//! parts, `proxy_endpoint_stats`, one upstream address's, and `proxy_route_stats`, one
//! HTTP route's; and how each is filled from proxy-core's [`StatsSnapshot`] and
//! [`EndpointStats`] and proxy-http's [`RouteSnapshot`]. The functions that copy them out
//! are [`forwarder`](crate::forwarder)'s.

use proxy_core::{EndpointStats, StatsSnapshot};
use proxy_http::RouteSnapshot;

use crate::handle::U64Fields;

/// A snapshot of a forwarder's counters, summed over its TCP and UDP parts. Counters
/// count from the start and carry on across reloads. An HTTP forwarder counts by route
/// instead (`proxy_forwarder_route`); its `proxy_stats` stay 0.
///
/// Fields are only ever added at the end, so pass `sizeof(proxy_stats)` to
/// `proxy_forwarder_stats`: a program built against an older header gets the fields it
/// knows.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct proxy_stats {
    /// TCP connections open now.
    pub connections_open: u64,
    /// TCP connections accepted since the start.
    pub connections_total: u64,
    /// Bytes relayed from clients to the upstream (TCP and UDP payload).
    pub bytes_to_upstream: u64,
    /// Bytes relayed from the upstream to clients (TCP and UDP payload).
    pub bytes_to_downstream: u64,
    /// Of the TCP bytes relayed, those moved by `splice(2)` without a copy.
    pub bytes_spliced: u64,
    /// TCP relay directions that fell back from splice to copying.
    pub splice_fallbacks: u64,
    /// Connect attempts the upstream refused.
    pub connect_refused: u64,
    /// Connect attempts that found no route to the upstream.
    pub connect_unreachable: u64,
    /// Connect attempts that timed out.
    pub connect_timeout: u64,
    /// Connect attempts that failed otherwise.
    pub connect_other: u64,
    /// TCP connections closed because no upstream address could be reached or resolved.
    pub upstream_unavailable: u64,
    /// Successful lookups of the upstream name.
    pub resolve_refreshes: u64,
    /// Failed lookups of the upstream name (the last good answer was kept).
    pub resolve_failures: u64,
    /// Errors from `accept(2)`, such as running out of file descriptors.
    pub accept_errors: u64,
    /// UDP sessions open now.
    pub udp_sessions_open: u64,
    /// UDP sessions created since the start.
    pub udp_sessions_total: u64,
    /// UDP sessions ended early because the session table was full.
    pub udp_sessions_evicted: u64,
    /// Datagrams relayed from clients to the upstream.
    pub udp_datagrams_to_upstream: u64,
    /// Datagrams relayed from the upstream to clients.
    pub udp_datagrams_to_downstream: u64,
    /// Datagrams dropped (a full send buffer, no upstream reachable, too many queued for a
    /// new session).
    pub udp_dropped: u64,
    /// Datagrams that arrived truncated; dropped.
    pub udp_truncated: u64,
    /// ICMP port-unreachable reports from the upstream.
    pub udp_upstream_refused: u64,
    /// TCP connections reset and UDP datagrams dropped by `PROXY_LIMIT_MAX_CONNECTIONS`.
    pub limited_connections: u64,
    /// TCP connections reset and UDP datagrams dropped by `PROXY_LIMIT_MAX_PER_SOURCE`.
    pub limited_per_source: u64,
    /// TCP connections reset and UDP datagrams dropped by `PROXY_LIMIT_ACCEPT_RATE`.
    pub limited_rate: u64,
    /// Times an upstream address was ejected (skipped for a while) after failing again and
    /// again. Ejection is off unless configured.
    pub ejections: u64,
    /// TCP connections and UDP sessions refused at once because every upstream address
    /// was ejected (also counted in `upstream_unavailable`).
    pub all_ejected: u64,
    /// TCP connections from trusted peers closed for a missing, malformed or late PROXY
    /// protocol header (accepting PROXY headers is off unless configured).
    pub proxy_headers_rejected: u64,
    /// TCP connections reset and UDP datagrams dropped because the access rules do not
    /// permit their client (every client is permitted unless configured).
    pub denied: u64,
    /// TCP connections reset because no SNI route served the server name they asked for
    /// and the forward has no target for the rest (SNI routes are off unless configured).
    pub sni_no_route: u64,
    /// TCP connections of a forward with SNI routes closed because the client did not
    /// send a whole ClientHello within `sni_timeout`, or closed first.
    pub sni_hello_failed: u64,
    /// TCP connections of a forward terminating TLS closed because their handshake failed,
    /// timed out, or the client left first (TLS termination is off unless configured).
    pub tls_handshakes_failed: u64,
    /// Of the TCP bytes relayed, those moved inside the kernel by the socket map of
    /// `relay = sockmap`.
    pub bytes_in_kernel: u64,
    /// TCP connections of a `relay = sockmap` forward relayed in user space instead: the
    /// socket map was full, or a peer had closed first.
    pub sockmap_fallbacks: u64,
}

// SAFETY: `proxy_stats` is `#[repr(C)]` and every field is a `u64`.
unsafe impl U64Fields for proxy_stats {}

/// How one upstream address has fared, summed over the forwarder's TCP and UDP parts:
/// what `proxy_forwarder_endpoint` copies out. Every address of the target's current DNS
/// answer that has been tried has one, and so has one that left the answer, until it has
/// been missing from a few answers in a row with nothing open on it.
///
/// Fields are only ever added at the end, as in `proxy_stats`: pass
/// `sizeof(proxy_endpoint_stats)`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct proxy_endpoint_stats {
    /// Successful connects (TCP) and sessions set up (UDP).
    pub connects: u64,
    /// Failed connects (TCP) and ICMP port-unreachable reports (UDP).
    pub failures: u64,
    /// Failures since the last success (the larger of TCP's and UDP's).
    pub consecutive_failures: u64,
    /// Times the address was ejected for failing (ejection is off unless configured).
    pub ejections: u64,
    /// 1 while health checks mark the address down, else 0 (health checks are off unless
    /// configured).
    pub checked_down: u64,
}

// SAFETY: `proxy_endpoint_stats` is `#[repr(C)]` and every field is a `u64`.
unsafe impl U64Fields for proxy_endpoint_stats {}

impl From<&EndpointStats> for proxy_endpoint_stats {
    fn from(e: &EndpointStats) -> Self {
        proxy_endpoint_stats {
            connects: e.connects,
            failures: e.failures,
            consecutive_failures: e.consecutive_failures,
            ejections: e.ejections,
            checked_down: e.checked_down.into(),
        }
    }
}

/// The number of latency buckets in `proxy_route_stats`.
pub const PROXY_LATENCY_BUCKETS: usize = 12;

const _: () = assert!(PROXY_LATENCY_BUCKETS == proxy_http::LATENCY_BUCKETS.len() + 1);

/// The counters of one route of an HTTP forwarder (`protocol = http`), or of the requests
/// no route served: what `proxy_forwarder_route` copies out. They count from the start and
/// carry on across reloads that keep the route as it was written; a route that a reload
/// adds or changes starts from 0.
///
/// Fields are only ever added at the end, as in `proxy_stats`: pass
/// `sizeof(proxy_route_stats)`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct proxy_route_stats {
    /// Requests answered with a 1xx status (101 for an upgrade, such as WebSocket).
    pub requests_1xx: u64,
    /// Requests answered with a 2xx status.
    pub requests_2xx: u64,
    /// Requests answered with a 3xx status.
    pub requests_3xx: u64,
    /// Requests answered with a 4xx status, also the proxy's own (404 when no route
    /// serves the host and path, 413 for a body over `max_request_body`, 431).
    pub requests_4xx: u64,
    /// Requests answered with a 5xx status, also the proxy's own (502 when the upstream
    /// cannot be reached or fails, 503 with no upstream address, 504 after
    /// `request_timeout`).
    pub requests_5xx: u64,
    /// Request body bytes sent upstream.
    pub bytes_in: u64,
    /// Response body bytes sent to clients.
    pub bytes_out: u64,
    /// The sum of the requests' latencies (until the response head), in microseconds.
    pub latency_sum_us: u64,
    /// Requests whose response head came within each bucket's bound, cumulative (as
    /// Prometheus' histograms): 5, 10, 25, 50, 100, 250 and 500 ms, 1, 2.5, 5 and 10 s,
    /// and the last bucket is every request.
    pub latency_buckets: [u64; PROXY_LATENCY_BUCKETS],
}

// SAFETY: `proxy_route_stats` is `#[repr(C)]` and every field is a `u64` or an array of
// them, so it is consecutive `u64`s.
unsafe impl U64Fields for proxy_route_stats {}

impl From<&RouteSnapshot> for proxy_route_stats {
    fn from(r: &RouteSnapshot) -> Self {
        let [
            requests_1xx,
            requests_2xx,
            requests_3xx,
            requests_4xx,
            requests_5xx,
        ] = r.by_class;
        proxy_route_stats {
            requests_1xx,
            requests_2xx,
            requests_3xx,
            requests_4xx,
            requests_5xx,
            bytes_in: r.bytes_in,
            bytes_out: r.bytes_out,
            latency_sum_us: u64::try_from(r.latency_sum.as_micros()).unwrap_or(u64::MAX),
            latency_buckets: r.latency_buckets,
        }
    }
}

impl proxy_stats {
    /// Adds `s` to these counters.
    pub(crate) fn add(&mut self, s: &StatsSnapshot) {
        let c = &s.connect_failures;
        let u = &s.udp;
        let pairs = [
            (&mut self.connections_open, s.connections_open),
            (&mut self.connections_total, s.connections_total),
            (&mut self.bytes_to_upstream, s.bytes_to_upstream),
            (&mut self.bytes_to_downstream, s.bytes_to_downstream),
            (&mut self.bytes_spliced, s.bytes_spliced),
            (&mut self.splice_fallbacks, s.splice_fallbacks),
            (&mut self.connect_refused, c.refused),
            (&mut self.connect_unreachable, c.unreachable),
            (&mut self.connect_timeout, c.timeout),
            (&mut self.connect_other, c.other),
            (&mut self.upstream_unavailable, s.upstream_unavailable),
            (&mut self.resolve_refreshes, s.resolve_refreshes),
            (&mut self.resolve_failures, s.resolve_failures),
            (&mut self.accept_errors, s.accept_errors),
            (&mut self.udp_sessions_open, u.sessions_open),
            (&mut self.udp_sessions_total, u.sessions_total),
            (&mut self.udp_sessions_evicted, u.sessions_evicted),
            (&mut self.udp_datagrams_to_upstream, u.datagrams_to_upstream),
            (
                &mut self.udp_datagrams_to_downstream,
                u.datagrams_to_downstream,
            ),
            (&mut self.udp_dropped, u.dropped),
            (&mut self.udp_truncated, u.truncated),
            (&mut self.udp_upstream_refused, u.upstream_refused),
            (&mut self.limited_connections, s.limited.connections),
            (&mut self.limited_per_source, s.limited.per_source),
            (&mut self.limited_rate, s.limited.rate),
            (&mut self.ejections, s.ejections),
            (&mut self.all_ejected, s.all_ejected),
            (&mut self.proxy_headers_rejected, s.proxy_headers_rejected),
            (&mut self.denied, s.denied),
            (&mut self.sni_no_route, s.sni_no_route),
            (&mut self.sni_hello_failed, s.sni_hello_failed),
            (&mut self.tls_handshakes_failed, s.tls_handshakes_failed),
            (&mut self.bytes_in_kernel, s.bytes_in_kernel),
            (&mut self.sockmap_fallbacks, s.sockmap_fallbacks),
        ];
        for (field, value) in pairs {
            *field = field.saturating_add(value);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The `proxy_stats` field of each nested struct's counters is the nested field's name
    /// with this prefix: `connect_failures.refused` is `connect_refused`.
    const PREFIXES: &[(&str, &str)] = &[
        ("connect_failures", "connect_"),
        ("limited", "limited_"),
        ("udp", "udp_"),
    ];

    /// Counters of `StatsSnapshot` deliberately left out of `proxy_stats`, each with the
    /// reason. None: C sees every counter Rust has. (Per-address stats,
    /// `ForwarderHandle::endpoints`, are a list outside the snapshot: `proxy_endpoint_stats`,
    /// checked by the next test.)
    const NOT_IN_C: &[&str] = &[];

    /// The fields of `debug`, a `{:#?}` of a struct whose fields are plain values or
    /// nested structs of them, as paths (`["connect_failures", "refused"]`) with values.
    pub(crate) fn field_paths(debug: &str) -> Vec<(Vec<String>, String)> {
        let mut path: Vec<String> = Vec::new();
        let mut fields = Vec::new();
        for line in debug.lines().skip(1) {
            let line = line.trim().trim_end_matches(',');
            if line == "}" {
                path.pop();
                continue;
            }
            let (name, value) = line
                .split_once(": ")
                .unwrap_or_else(|| panic!("not `name: value`: {line}"));
            if value.ends_with('{') {
                path.push(name.to_owned());
            } else {
                let field = path.iter().cloned().chain([name.to_owned()]).collect();
                fields.push((field, value.to_owned()));
            }
        }
        fields
    }

    /// The `uint64_t` fields of `struct NAME` in the checked-in header.
    pub(crate) fn header_fields(name: &str) -> Vec<String> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/include/proxy.h");
        let header = std::fs::read_to_string(path).unwrap();
        let open = format!("typedef struct {name} {{");
        let start = header
            .find(&open)
            .unwrap_or_else(|| panic!("no {name} in proxy.h"));
        let end = start + header[start..].find(&format!("}} {name};")).unwrap();
        header[start..end]
            .lines()
            .filter_map(|l| l.trim().strip_prefix("uint64_t "))
            .map(|f| f.trim_end_matches(';').to_owned())
            .collect()
    }

    /// The `proxy_stats` name of a counter at `path`.
    fn c_name(path: &[String]) -> String {
        match path {
            [name] => name.clone(),
            [outer, name] => {
                let Some((_, prefix)) = PREFIXES.iter().find(|(o, _)| o == outer) else {
                    panic!(
                        "`{outer}` is a new nested struct of StatsSnapshot: add its prefix to PREFIXES"
                    );
                };
                format!("{prefix}{name}")
            }
            _ => panic!("counters nested deeper than one struct: {path:?}"),
        }
    }

    /// `proxy_route_stats` has every counter of proxy-http's `RouteSnapshot` (the route
    /// itself `proxy_forwarder_route` gives as a string), and its latency buckets are the
    /// ones its docs list.
    #[test]
    fn proxy_route_stats_has_every_counter_of_the_rust_route_snapshot() {
        let debug = format!("{:#?}", RouteSnapshot::default());
        let rust: Vec<&str> = (debug.lines())
            .filter(|l| l.starts_with("    ") && !l.starts_with("     "))
            .filter_map(|l| l.trim().split_once(':').map(|(name, _)| name))
            .collect();
        assert_eq!(
            rust,
            [
                "route",
                "by_class",
                "latency_buckets",
                "latency_sum",
                "bytes_in",
                "bytes_out"
            ],
            "RouteSnapshot changed: add its new counters at the end of proxy_route_stats"
        );
        assert_eq!(
            proxy_http::LATENCY_BUCKETS,
            [
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0
            ],
            "the bounds listed in proxy_route_stats.latency_buckets' docs"
        );
        let mut r = RouteSnapshot::default();
        r.by_class = [1, 2, 3, 4, 5];
        r.bytes_in = 6;
        r.bytes_out = 7;
        r.latency_sum = std::time::Duration::from_millis(8);
        r.latency_buckets[11] = 9;
        let c = proxy_route_stats::from(&r);
        assert_eq!(
            (
                c.requests_1xx,
                c.requests_2xx,
                c.requests_3xx,
                c.requests_4xx
            ),
            (1, 2, 3, 4)
        );
        assert_eq!((c.requests_5xx, c.bytes_in, c.bytes_out), (5, 6, 7));
        assert_eq!((c.latency_sum_us, c.latency_buckets[11]), (8000, 9));
        assert_eq!(
            std::mem::size_of::<proxy_route_stats>(),
            (8 + PROXY_LATENCY_BUCKETS) * 8
        );
    }

    /// Fails when `StatsSnapshot` has a counter that `proxy_stats` (as the header declares
    /// it) lacks, or the header declares one that no Rust counter fills.
    #[test]
    fn proxy_stats_has_every_counter_of_the_rust_stats() {
        let fields = field_paths(&format!("{:#?}", StatsSnapshot::default()));
        for (path, value) in &fields {
            assert!(
                value.parse::<u64>().is_ok(),
                "{path:?} is not a counter: {value}"
            );
        }
        let rust: Vec<String> = fields.iter().map(|(p, _)| c_name(p)).collect();
        assert!(
            rust.len() >= 29,
            "the Debug walk found too few counters: {rust:?}"
        );
        let c = header_fields("proxy_stats");
        let missing: Vec<&String> = (rust.iter())
            .filter(|f| !c.contains(f) && !NOT_IN_C.contains(&f.as_str()))
            .collect();
        assert!(
            missing.is_empty(),
            "StatsSnapshot counters missing from proxy_stats in include/proxy.h: {missing:?} \
             (add them at the end of proxy_stats and in proxy_stats::add, then run \
             proxy-ffi/gen-header.sh)"
        );
        let unknown: Vec<&String> = c.iter().filter(|f| !rust.contains(f)).collect();
        assert!(
            unknown.is_empty(),
            "proxy_stats fields with no Rust counter: {unknown:?}"
        );
        assert_eq!(c.len(), std::mem::size_of::<proxy_stats>() / 8);
    }
}
