//! The `proxy_http_*` families of HTTP forwards (`proxy http`): requests by status class,
//! a latency histogram and body bytes, per route.

use std::fmt::Write;

use proxy_http::{LATENCY_BUCKETS, RouteSnapshot};

use super::{Counter, Kind, escape, header};

/// What `/metrics` shows of one HTTP forward: its name (`http:8080`) and its routes.
#[derive(Clone, Debug, PartialEq)]
pub struct HttpMetrics {
    /// The `forward` label.
    pub name: String,
    /// Each route's counters; the route `-` counts requests no route served.
    pub routes: Vec<RouteSnapshot>,
    /// Client connections closed because their TLS handshake failed.
    pub tls_handshakes_failed: u64,
}

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Appends the HTTP families to `out`.
pub(crate) fn render(out: &mut String, forwards: &[HttpMetrics]) {
    if forwards.is_empty() {
        return;
    }
    let each = |out: &mut String, f: &dyn Fn(&mut String, &str, &RouteSnapshot)| {
        for forward in forwards {
            for route in &forward.routes {
                let mut labels = String::from("forward=\"");
                escape(&mut labels, &forward.name);
                labels.push_str("\",route=\"");
                escape(&mut labels, &route.route);
                labels.push('"');
                f(out, &labels, route);
            }
        }
    };
    header(
        out,
        "proxy_http_requests_total",
        Counter,
        "HTTP requests answered, by route and status class (code: 1xx to 5xx).",
    );
    each(out, &|out, labels, r| {
        for (class, n) in CLASSES.iter().zip(r.by_class) {
            let _ = writeln!(
                out,
                "proxy_http_requests_total{{{labels},code=\"{class}\"}} {n}"
            );
        }
    });
    let name = "proxy_http_request_duration_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} Time from a request's arrival to its response head, by route."
    );
    let _ = writeln!(out, "# TYPE {name} histogram");
    each(out, &|out, labels, r| {
        for (bound, n) in LATENCY_BUCKETS.iter().zip(r.latency_buckets) {
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {n}");
        }
        let count = r.latency_buckets[LATENCY_BUCKETS.len()];
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "{name}_sum{{{labels}}} {}",
            r.latency_sum.as_secs_f64()
        );
        let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
    });
    type Value = fn(&RouteSnapshot) -> u64;
    let bytes: [(&str, Kind, &str, Value); 2] = [
        (
            "proxy_http_request_bytes_total",
            Counter,
            "Request body bytes sent upstream, by route.",
            |r| r.bytes_in,
        ),
        (
            "proxy_http_response_bytes_total",
            Counter,
            "Response body bytes sent to clients, by route.",
            |r| r.bytes_out,
        ),
    ];
    for (name, kind, help, value) in bytes {
        header(out, name, kind, help);
        each(out, &|out, labels, r| {
            let _ = writeln!(out, "{name}{{{labels}}} {}", value(r));
        });
    }
    let name = "proxy_http_tls_handshakes_failed_total";
    header(
        out,
        name,
        Counter,
        "Client connections closed because their TLS handshake (--tls-cert, --tls-dir) failed, timed out, or the client left first.",
    );
    for forward in forwards {
        let mut labels = String::from("forward=\"");
        escape(&mut labels, &forward.name);
        labels.push('"');
        let _ = writeln!(out, "{name}{{{labels}}} {}", forward.tls_handshakes_failed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_by_class_and_a_cumulative_histogram_per_route() {
        let mut route = RouteSnapshot::default();
        route.route = "shop.example/=shop:80".into();
        route.by_class = [0, 5, 0, 1, 2];
        route.latency_buckets = [1, 2, 3, 4, 5, 6, 7, 8, 8, 8, 8, 8];
        route.latency_sum = std::time::Duration::from_millis(1500);
        route.bytes_out = 42;
        let mut out = String::new();
        render(
            &mut out,
            &[HttpMetrics {
                name: "http:8080".into(),
                routes: vec![route],
                tls_handshakes_failed: 3,
            }],
        );
        assert!(
            out.contains("proxy_http_tls_handshakes_failed_total{forward=\"http:8080\"} 3\n"),
            "{out}"
        );
        let labels = "forward=\"http:8080\",route=\"shop.example/=shop:80\"";
        assert!(
            out.contains(&format!(
                "proxy_http_requests_total{{{labels},code=\"2xx\"}} 5\n"
            )),
            "{out}"
        );
        assert!(out.contains(&format!(
            "proxy_http_requests_total{{{labels},code=\"5xx\"}} 2\n"
        )));
        assert!(out.contains("# TYPE proxy_http_request_duration_seconds histogram\n"));
        assert!(out.contains(&format!(
            "proxy_http_request_duration_seconds_bucket{{{labels},le=\"0.005\"}} 1\n"
        )));
        assert!(out.contains(&format!(
            "proxy_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} 8\n"
        )));
        assert!(out.contains(&format!(
            "proxy_http_request_duration_seconds_sum{{{labels}}} 1.5\n"
        )));
        assert!(out.contains(&format!("proxy_http_response_bytes_total{{{labels}}} 42\n")));
    }
}
