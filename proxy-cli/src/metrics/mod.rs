//! `/metrics`: the stats of every forward in the Prometheus text exposition format 0.0.4.
//!
//! Every series of a forward carries `forward` (its name, such as `tcp:8080`), `protocol`
//! (`tcp` or `udp`) and `target` labels. TCP forwards have the `proxy_connections_*`,
//! splice, connect-failure and accept-error families, UDP forwards the `proxy_udp_*`
//! ones; both have bytes, DNS, upstream-unavailable and per-endpoint families.
//!
//! # Examples
//!
//! ```
//! use proxy_cli::metrics::{ForwardMetrics, render};
//! use proxy_cli::registry::Protocol;
//!
//! let mut stats = proxy_core::StatsSnapshot::default();
//! stats.connections_total = 3;
//! let forward = ForwardMetrics {
//!     name: "tcp:8080".into(),
//!     protocol: Protocol::Tcp,
//!     target: "web.default:80".into(),
//!     stats,
//!     endpoints: Vec::new(),
//!     stopping: false,
//! };
//! let text = render(&[forward], true);
//! assert!(text.contains(
//!     "proxy_connections_total{forward=\"tcp:8080\",protocol=\"tcp\",target=\"web.default:80\"} 3\n"
//! ));
//! ```

use std::fmt::Write;
use std::net::SocketAddr;

use proxy_core::{EndpointStats, StatsSnapshot};

use crate::logging;

mod http;
mod port_forward;
pub use http::HttpMetrics;

use crate::protocol::Protocol;

/// The `Content-Type` of [`render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What `/metrics` shows of one forward.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForwardMetrics {
    /// The `forward` label.
    pub name: String,
    /// The `protocol` label; also which families apply.
    pub protocol: Protocol,
    /// The `target` label.
    pub target: String,
    /// The counters.
    pub stats: StatsSnapshot,
    /// Each upstream address the target resolved to.
    pub endpoints: Vec<Endpoint>,
    /// Whether it is shutting down (its stats are those from when that started).
    pub stopping: bool,
}

/// How one upstream address has fared: a copy of [`EndpointStats`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// The upstream address.
    pub addr: SocketAddr,
    /// Successful connects (TCP) or sessions set up (UDP).
    pub connects: u64,
    /// Failed connects (TCP) or port-unreachable reports (UDP).
    pub failures: u64,
    /// Failures since the last success.
    pub consecutive_failures: u64,
    /// Times it was ejected for failing.
    pub ejections: u64,
    /// Whether health checks mark it down.
    pub checked_down: bool,
    /// Whether the last attempt succeeded, or none has failed yet.
    pub healthy: bool,
}

impl From<&EndpointStats> for Endpoint {
    fn from(e: &EndpointStats) -> Endpoint {
        Endpoint {
            addr: e.addr,
            connects: e.connects,
            failures: e.failures,
            consecutive_failures: e.consecutive_failures,
            ejections: e.ejections,
            checked_down: e.checked_down,
            healthy: e.healthy(),
        }
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
}

/// Which forwards a family has series for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Applies {
    Both,
    Only(Protocol),
}

/// One extra label and its value.
type Label = (&'static str, &'static str);

/// The samples of one family for one forward: an extra label (if any) and the value.
type Samples = fn(&StatsSnapshot) -> Vec<(Option<Label>, u64)>;

/// A metric family: name, type, help, and the samples of one forward (extra labels and
/// value).
struct Family {
    name: &'static str,
    kind: Kind,
    help: &'static str,
    applies: Applies,
    samples: Samples,
}

const fn family(
    name: &'static str,
    kind: Kind,
    applies: Applies,
    help: &'static str,
    samples: Samples,
) -> Family {
    Family {
        name,
        kind,
        help,
        applies,
        samples,
    }
}

use Applies::{Both, Only};
use Kind::{Counter, Gauge};
use Protocol::{Tcp, Udp};

const UP: Label = ("direction", "upstream");
const DOWN: Label = ("direction", "downstream");

/// The per-forward families, in output order.
const FAMILIES: &[Family] = &[
    family(
        "proxy_connections_open",
        Gauge,
        Only(Tcp),
        "Client connections open now.",
        |s| vec![(None, s.connections_open)],
    ),
    family(
        "proxy_connections_total",
        Counter,
        Only(Tcp),
        "Client connections accepted.",
        |s| vec![(None, s.connections_total)],
    ),
    family(
        "proxy_bytes_total",
        Counter,
        Both,
        "Payload bytes relayed, by direction: upstream (client to target) or downstream.",
        |s| {
            vec![
                (Some(UP), s.bytes_to_upstream),
                (Some(DOWN), s.bytes_to_downstream),
            ]
        },
    ),
    family(
        "proxy_bytes_spliced_total",
        Counter,
        Only(Tcp),
        "Of the bytes relayed, those moved by splice(2) without a copy.",
        |s| vec![(None, s.bytes_spliced)],
    ),
    family(
        "proxy_splice_fallbacks_total",
        Counter,
        Only(Tcp),
        "Relay directions that fell back from splice to copying.",
        |s| vec![(None, s.splice_fallbacks)],
    ),
    family(
        "proxy_bytes_in_kernel_total",
        Counter,
        Only(Tcp),
        "Of the bytes relayed, those moved inside the kernel by the socket map (--relay sockmap).",
        |s| vec![(None, s.bytes_in_kernel)],
    ),
    family(
        "proxy_sockmap_fallbacks_total",
        Counter,
        Only(Tcp),
        "Connections of a --relay sockmap forward relayed in user space: the socket map was full, or a peer had closed first.",
        |s| vec![(None, s.sockmap_fallbacks)],
    ),
    family(
        "proxy_connect_failures_total",
        Counter,
        Only(Tcp),
        "Failed connect attempts to upstream addresses, by kind.",
        |s| {
            let f = s.connect_failures;
            vec![
                (Some(("kind", "refused")), f.refused),
                (Some(("kind", "unreachable")), f.unreachable),
                (Some(("kind", "timeout")), f.timeout),
                (Some(("kind", "other")), f.other),
            ]
        },
    ),
    family(
        "proxy_upstream_unavailable_total",
        Counter,
        Both,
        "Connections or sessions given up because no upstream address could be resolved or reached.",
        |s| vec![(None, s.upstream_unavailable)],
    ),
    family(
        "proxy_ejections_total",
        Counter,
        Both,
        "Times an upstream address was ejected after failing in a row (--eject-after).",
        |s| vec![(None, s.ejections)],
    ),
    family(
        "proxy_denied_total",
        Counter,
        Both,
        "TCP connections reset and UDP datagrams dropped because --allow/--deny do not permit the client.",
        |s| vec![(None, s.denied)],
    ),
    family(
        "proxy_limited_total",
        Counter,
        Both,
        "TCP connections reset and UDP datagrams dropped by a limit: connections (--max-connections), per_source (--max-per-source) or rate (--accept-rate).",
        |s| {
            let l = s.limited;
            vec![
                (Some(("limit", "connections")), l.connections),
                (Some(("limit", "per_source")), l.per_source),
                (Some(("limit", "rate")), l.rate),
            ]
        },
    ),
    family(
        "proxy_headers_rejected_total",
        Counter,
        Only(Tcp),
        "Connections from --accept-proxy-from peers closed for a missing, malformed or late PROXY header.",
        |s| vec![(None, s.proxy_headers_rejected)],
    ),
    family(
        "proxy_all_ejected_total",
        Counter,
        Both,
        "Connections or sessions refused at once because every upstream address was ejected.",
        |s| vec![(None, s.all_ejected)],
    ),
    family(
        "proxy_accept_errors_total",
        Counter,
        Only(Tcp),
        "Errors from accept(2), such as running out of file descriptors.",
        |s| vec![(None, s.accept_errors)],
    ),
    family(
        "proxy_sni_no_route_total",
        Counter,
        Only(Tcp),
        "Connections reset because no --sni route served the server name they asked for and the forward has no target.",
        |s| vec![(None, s.sni_no_route)],
    ),
    family(
        "proxy_sni_hello_failed_total",
        Counter,
        Only(Tcp),
        "Connections of a forward with --sni routes closed without a whole ClientHello within --sni-timeout.",
        |s| vec![(None, s.sni_hello_failed)],
    ),
    family(
        "proxy_tls_handshakes_failed_total",
        Counter,
        Only(Tcp),
        "Connections closed because their TLS handshake (--tls-cert, --tls-dir) failed, timed out, or the client left first.",
        |s| vec![(None, s.tls_handshakes_failed)],
    ),
    family(
        "proxy_udp_sessions_open",
        Gauge,
        Only(Udp),
        "UDP sessions open now.",
        |s| vec![(None, s.udp.sessions_open)],
    ),
    family(
        "proxy_udp_sessions_total",
        Counter,
        Only(Udp),
        "UDP sessions created.",
        |s| vec![(None, s.udp.sessions_total)],
    ),
    family(
        "proxy_udp_sessions_evicted_total",
        Counter,
        Only(Udp),
        "UDP sessions ended early because the session table was full.",
        |s| vec![(None, s.udp.sessions_evicted)],
    ),
    family(
        "proxy_udp_datagrams_total",
        Counter,
        Only(Udp),
        "UDP datagrams relayed, by direction: upstream (client to target) or downstream.",
        |s| {
            vec![
                (Some(UP), s.udp.datagrams_to_upstream),
                (Some(DOWN), s.udp.datagrams_to_downstream),
            ]
        },
    ),
    family(
        "proxy_udp_dropped_total",
        Counter,
        Only(Udp),
        "UDP datagrams dropped (send buffer full, no upstream reachable, too many queued).",
        |s| vec![(None, s.udp.dropped)],
    ),
    family(
        "proxy_udp_truncated_total",
        Counter,
        Only(Udp),
        "UDP datagrams that arrived cut short; dropped.",
        |s| vec![(None, s.udp.truncated)],
    ),
    family(
        "proxy_udp_upstream_refused_total",
        Counter,
        Only(Udp),
        "ICMP port-unreachable reports from the upstream.",
        |s| vec![(None, s.udp.upstream_refused)],
    ),
    family(
        "proxy_resolve_refreshes_total",
        Counter,
        Both,
        "Successful DNS lookups of the target name.",
        |s| vec![(None, s.resolve_refreshes)],
    ),
    family(
        "proxy_resolve_failures_total",
        Counter,
        Both,
        "Failed DNS lookups of the target name (the last good answer was kept).",
        |s| vec![(None, s.resolve_failures)],
    ),
];

/// The per-endpoint families: name, type, help, value.
type EndpointFamily = (&'static str, Kind, &'static str, fn(&Endpoint) -> u64);

const ENDPOINT_FAMILIES: &[EndpointFamily] = &[
    (
        "proxy_endpoint_up",
        Gauge,
        "1 when the last attempt to reach the upstream address succeeded (or none failed yet), else 0.",
        |e| u64::from(e.healthy),
    ),
    (
        "proxy_endpoint_connects_total",
        Counter,
        "Successful connects (TCP) or sessions set up (UDP) to the upstream address.",
        |e| e.connects,
    ),
    (
        "proxy_endpoint_failures_total",
        Counter,
        "Failed connects (TCP) or port-unreachable reports (UDP) from the upstream address.",
        |e| e.failures,
    ),
    (
        "proxy_endpoint_consecutive_failures",
        Gauge,
        "Failures of the upstream address since its last success.",
        |e| e.consecutive_failures,
    ),
    (
        "proxy_endpoint_checked_down",
        Gauge,
        "1 while health checks mark the upstream address down.",
        |e| u64::from(e.checked_down),
    ),
    (
        "proxy_endpoint_ejections_total",
        Counter,
        "Times the upstream address was ejected after failing in a row.",
        |e| e.ejections,
    ),
];

/// The exposition of `forwards`, of the process's readiness and of its log lines dropped
/// ([`logging::lines_dropped`], process-wide like the logger).
pub fn render(forwards: &[ForwardMetrics], ready: bool) -> String {
    render_with(forwards, ready, None, &[])
}

/// [`render`], and the families of a port-forward server's `stats`, if any, and of
/// HTTP forwards.
pub fn render_with(
    forwards: &[ForwardMetrics],
    ready: bool,
    port_forward: Option<&proxy_portforward::forward::StatsSnapshot>,
    http: &[HttpMetrics],
) -> String {
    let mut out = String::with_capacity(4096 + forwards.len() * 2048);
    header(
        &mut out,
        "proxy_ready",
        Gauge,
        "1 when every listener is bound and the process is not shutting down, else 0.",
    );
    let _ = writeln!(out, "proxy_ready {}", u64::from(ready));
    header(
        &mut out,
        "proxy_log_lines_dropped_total",
        Counter,
        "Log lines dropped because stderr did not keep up (logging never blocks forwarding).",
    );
    let _ = writeln!(
        out,
        "proxy_log_lines_dropped_total {}",
        logging::lines_dropped()
    );
    header(
        &mut out,
        "proxy_forward_stopping",
        Gauge,
        "1 while the forward is shutting down (its other values are those from when that started), else 0.",
    );
    for f in forwards {
        sample(
            &mut out,
            "proxy_forward_stopping",
            f,
            &[],
            u64::from(f.stopping),
        );
    }
    for family in FAMILIES {
        header(&mut out, family.name, family.kind, family.help);
        for f in forwards {
            if family.applies != Both && family.applies != Only(f.protocol) {
                continue;
            }
            for (label, value) in (family.samples)(&f.stats) {
                sample(&mut out, family.name, f, label.as_slice(), value);
            }
        }
    }
    for &(name, kind, help, value) in ENDPOINT_FAMILIES {
        header(&mut out, name, kind, help);
        for f in forwards {
            for e in &f.endpoints {
                let endpoint = e.addr.to_string();
                let mut line = String::new();
                labels(&mut line, f);
                line.push_str(",endpoint=\"");
                escape(&mut line, &endpoint);
                line.push('"');
                let _ = writeln!(out, "{name}{{{line}}} {}", value(e));
            }
        }
    }
    if let Some(stats) = port_forward {
        port_forward::render(&mut out, stats);
    }
    http::render(&mut out, http);
    out
}

fn header(out: &mut String, name: &str, kind: Kind, help: &str) {
    let kind = match kind {
        Counter => "counter",
        Gauge => "gauge",
    };
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, f: &ForwardMetrics, extra: &[Label], value: u64) {
    out.push_str(name);
    out.push('{');
    labels(out, f);
    for (key, val) in extra {
        let _ = write!(out, ",{key}=\"");
        escape(out, val);
        out.push('"');
    }
    let _ = writeln!(out, "}} {value}");
}

/// `forward="...",protocol="...",target="..."`.
fn labels(out: &mut String, f: &ForwardMetrics) {
    out.push_str("forward=\"");
    escape(out, &f.name);
    out.push_str("\",protocol=\"");
    out.push_str(f.protocol.as_str());
    out.push_str("\",target=\"");
    escape(out, &f.target);
    out.push('"');
}

/// A label value as the text format wants it: `\`, `"` and line feeds escaped.
pub(crate) fn escape(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forward(name: &str, protocol: Protocol) -> ForwardMetrics {
        ForwardMetrics {
            name: name.into(),
            protocol,
            target: "web.default:80".into(),
            stats: StatsSnapshot::default(),
            endpoints: Vec::new(),
            stopping: false,
        }
    }

    /// Every line is a comment or `name{labels} value`, every family has HELP and TYPE
    /// before its samples, and no series appears twice.
    fn check_exposition(text: &str) {
        let mut typed = std::collections::HashSet::new();
        let mut seen = std::collections::HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert!(kind == "counter" || kind == "gauge", "{line}");
                assert!(typed.insert(name.to_owned()), "TYPE twice: {line}");
                continue;
            }
            if line.starts_with("# HELP ") {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').unwrap();
            value.parse::<u64>().unwrap();
            let name = series.split('{').next().unwrap();
            assert!(typed.contains(name), "sample before TYPE: {line}");
            if name.ends_with("_total") {
                assert!(text.contains(&format!("# TYPE {name} counter")));
            }
            assert!(seen.insert(series.to_owned()), "series twice: {line}");
        }
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn families_by_protocol() {
        let mut tcp = forward("tcp:53", Tcp);
        tcp.stats.connections_open = 2;
        tcp.stats.connections_total = 7;
        tcp.stats.bytes_to_upstream = 100;
        tcp.stats.bytes_to_downstream = 200;
        tcp.stats.connect_failures.refused = 4;
        let mut udp = forward("udp:53", Udp);
        udp.stats.udp.sessions_open = 1;
        udp.stats.udp.datagrams_to_upstream = 9;
        udp.stats.bytes_to_upstream = 300;
        udp.endpoints.push(Endpoint {
            addr: "[::1]:53".parse().unwrap(),
            connects: 5,
            failures: 2,
            consecutive_failures: 1,
            ejections: 3,
            checked_down: true,
            healthy: false,
        });
        let text = render(&[tcp, udp], true);
        check_exposition(&text);
        let t = r#"forward="tcp:53",protocol="tcp",target="web.default:80""#;
        let u = r#"forward="udp:53",protocol="udp",target="web.default:80""#;
        for want in [
            "proxy_ready 1".to_owned(),
            format!("proxy_connections_open{{{t}}} 2"),
            format!("proxy_connections_total{{{t}}} 7"),
            format!("proxy_bytes_total{{{t},direction=\"upstream\"}} 100"),
            format!("proxy_bytes_total{{{t},direction=\"downstream\"}} 200"),
            format!("proxy_connect_failures_total{{{t},kind=\"refused\"}} 4"),
            format!("proxy_connect_failures_total{{{t},kind=\"timeout\"}} 0"),
            format!("proxy_bytes_total{{{u},direction=\"upstream\"}} 300"),
            format!("proxy_udp_sessions_open{{{u}}} 1"),
            format!("proxy_udp_datagrams_total{{{u},direction=\"upstream\"}} 9"),
            format!("proxy_resolve_failures_total{{{u}}} 0"),
            format!("proxy_endpoint_up{{{u},endpoint=\"[::1]:53\"}} 0"),
            format!("proxy_endpoint_connects_total{{{u},endpoint=\"[::1]:53\"}} 5"),
            format!("proxy_endpoint_failures_total{{{u},endpoint=\"[::1]:53\"}} 2"),
            format!("proxy_endpoint_consecutive_failures{{{u},endpoint=\"[::1]:53\"}} 1"),
            format!("proxy_endpoint_ejections_total{{{u},endpoint=\"[::1]:53\"}} 3"),
            format!("proxy_endpoint_checked_down{{{u},endpoint=\"[::1]:53\"}} 1"),
            format!("proxy_forward_stopping{{{u}}} 0"),
        ] {
            assert!(
                text.lines().any(|l| l == want),
                "no line {want:?} in\n{text}"
            );
        }
        // TCP families are not shown for UDP forwards, and the other way round.
        assert!(!text.contains(&format!("proxy_connections_open{{{u}}}")));
        assert!(!text.contains(&format!("proxy_udp_sessions_open{{{t}}}")));
    }

    #[test]
    fn no_forwards_still_a_valid_exposition() {
        let text = render(&[], false);
        check_exposition(&text);
        assert!(text.lines().any(|l| l == "proxy_ready 0"));
        assert!(
            text.lines()
                .any(|l| l.starts_with("proxy_log_lines_dropped_total "))
        );
    }

    #[test]
    fn label_values_are_escaped() {
        let mut f = forward("a\"b\\c\nd", Tcp);
        f.target = "x\"y".into();
        let text = render(&[f], true);
        check_exposition(&text);
        assert!(
            text.contains(
                r#"proxy_connections_total{forward="a\"b\\c\nd",protocol="tcp",target="x\"y"} 0"#
            ),
            "{text}"
        );
    }
}
