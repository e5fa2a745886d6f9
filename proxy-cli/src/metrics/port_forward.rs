//! The `proxy_portforward_*` families of `proxy port-forward-server`: sessions, streams,
//! stream errors and bytes, by wire protocol (`spdy`, `spdy-websocket`, `websocket`).

use std::fmt::Write;

use proxy_portforward::forward::{StatsSnapshot, Wire, WireStats};

use super::{Counter, Gauge, Kind, header};

type Value = fn(&WireStats) -> u64;

const FAMILIES: &[(&str, Kind, &str, Value)] = &[
    (
        "proxy_portforward_sessions_open",
        Gauge,
        "Port-forward sessions (upgraded connections) open now.",
        |s| s.sessions_open,
    ),
    (
        "proxy_portforward_sessions_total",
        Counter,
        "Port-forward sessions started.",
        |s| s.sessions_total,
    ),
    (
        "proxy_portforward_streams_open",
        Gauge,
        "Forwarded connections to pods open now.",
        |s| s.streams_open,
    ),
    (
        "proxy_portforward_streams_total",
        Counter,
        "Forwarded connections to pods started.",
        |s| s.streams_total,
    ),
    (
        "proxy_portforward_udp_streams_open",
        Gauge,
        "Of the forwarded connections open now, those carrying UDP (the extension).",
        |s| s.udp_streams_open,
    ),
    (
        "proxy_portforward_udp_streams_total",
        Counter,
        "Of the forwarded connections started, those carrying UDP (the extension).",
        |s| s.udp_streams_total,
    ),
    (
        "proxy_portforward_stream_errors_total",
        Counter,
        "Forwarded connections that ended with an error (the pod's port refused, a reset).",
        |s| s.stream_errors,
    ),
    (
        "proxy_portforward_bytes_to_pod_total",
        Counter,
        "Bytes clients sent that were written to pods.",
        |s| s.bytes_to_pod,
    ),
    (
        "proxy_portforward_bytes_from_pod_total",
        Counter,
        "Bytes pods sent that were passed to clients.",
        |s| s.bytes_from_pod,
    ),
];

/// Appends the port-forward families to `out`, one series per wire protocol.
pub(crate) fn render(out: &mut String, stats: &StatsSnapshot) {
    for &(name, kind, help, value) in FAMILIES {
        header(out, name, kind, help);
        for wire in Wire::ALL {
            let _ = writeln!(
                out,
                "{name}{{protocol=\"{wire}\"}} {}",
                value(stats.wire(wire))
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_series_per_protocol() {
        let mut stats = StatsSnapshot::default();
        stats.0[2].streams_total = 4;
        stats.0[0].udp_streams_total = 2;
        let mut out = String::new();
        render(&mut out, &stats);
        assert!(out.contains("# TYPE proxy_portforward_streams_total counter\n"));
        assert!(out.contains("proxy_portforward_streams_total{protocol=\"websocket\"} 4\n"));
        assert!(out.contains("proxy_portforward_streams_total{protocol=\"spdy\"} 0\n"));
        assert!(out.contains("proxy_portforward_udp_streams_total{protocol=\"spdy\"} 2\n"));
        assert_eq!(out.matches("proxy_portforward_sessions_open{").count(), 3);
    }
}
