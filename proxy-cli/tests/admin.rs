//! End-to-end tests of `--admin ADDR` (`/metrics`, `/healthz`, `/readyz`) and
//! `--log-format`: the real binary, loopback only, ports chosen by the kernel (the proxy is
//! started with `--admin 127.0.0.1:0` and logs `admin listening on ADDR`).
//!
//! Counters are compared once the access log line of the connection or UDP session has
//! been written: the proxy logs it after counting the last byte. The only polling loops
//! (readiness right after binding, and a connection count) are bounded by [`PROMPT`].

mod support;

use std::collections::HashMap;
use std::io::Read;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::thread;
use std::time::{Duration, Instant};

use proxy_testkit::blocking::{self, Echo, UdpEcho, connect, open_connection, ping};
use support::http::{self, Response, admin_addr};
use support::proxy::{PROMPT, Proto, Proxy, run};

// ===== clients =====

/// Sends `len` bytes and a FIN through the proxy to the echo server and reads them all
/// back until EOF.
fn echo_through(addr: SocketAddr, len: usize) {
    let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
    let back = blocking::echo_through(connect(addr), &data);
    assert!(back == data, "{} of {len} bytes came back", back.len());
}

/// Sends `request` as it is and reads the whole response (the server closes), which must
/// be HTTP/1.1 and say `Connection: close`.
fn http_raw(admin: SocketAddr, request: &str) -> Response {
    let r = http::request(admin, request);
    assert_eq!(r.version, "HTTP/1.1", "{r:?}");
    assert_eq!(
        r.headers.get("connection").map(String::as_str),
        Some("close")
    );
    r
}

/// `GET path`, whose body must be as long as its `Content-Length` says.
fn get(admin: SocketAddr, path: &str) -> Response {
    let r = http_raw(admin, &format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n"));
    let length: usize = r.headers["content-length"].parse().unwrap();
    assert_eq!(length, r.body.len(), "{r:?}");
    r
}

/// `proxy PROTO 0 TARGET EXTRA... --listen 127.0.0.1 --admin 127.0.0.1:0`: the proxy and
/// its admin address.
fn start_with_admin(proto: &str, target: &str, extra: &[&str]) -> (Proxy, SocketAddr) {
    let mut args = vec![proto, "0", target];
    args.extend_from_slice(extra);
    args.extend(["--listen", "127.0.0.1", "--admin", "127.0.0.1:0"]);
    let proxy = Proxy::start(&args);
    let admin = admin_addr(&proxy);
    (proxy, admin)
}

/// Waits (bounded) until `/readyz` answers 200. The proxy marks itself ready right after
/// it logs its "Forwarding from" lines, so this takes at most a few rounds.
fn wait_ready(admin: SocketAddr) {
    let deadline = Instant::now() + PROMPT;
    loop {
        let r = get(admin, "/readyz");
        if r.status == 200 {
            assert_eq!(r.body, "ready\n");
            return;
        }
        assert_eq!((r.status, r.body.as_str()), (503, "starting\n"));
        assert!(Instant::now() < deadline, "not ready within {PROMPT:?}");
        thread::sleep(Duration::from_millis(10));
    }
}

// ===== the exposition =====

/// One sample: metric name, labels, value.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: HashMap<String, String>,
    value: u64,
}

/// Parses the text format strictly: every family has `# HELP` and `# TYPE` before its
/// samples, label values are unescaped, no series appears twice.
fn parse_metrics(text: &str) -> Vec<Sample> {
    let mut typed: HashMap<String, String> = HashMap::new();
    let mut helped = Vec::new();
    let mut samples = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            helped.push(rest.split(' ').next().unwrap().to_owned());
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(matches!(kind, "counter" | "gauge"), "{line}");
            assert!(
                helped.iter().any(|h| h == name),
                "TYPE without HELP: {line}"
            );
            assert!(typed.insert(name.into(), kind.into()).is_none(), "{line}");
            continue;
        }
        assert!(!line.starts_with('#') && !line.is_empty(), "{line:?}");
        let (name, rest) = match line.find('{') {
            Some(at) => (&line[..at], &line[at..]),
            None => line.split_at(line.find(' ').unwrap()),
        };
        assert!(typed.contains_key(name), "sample before its TYPE: {line}");
        if name.ends_with("_total") {
            assert_eq!(typed[name], "counter", "{line}");
        }
        let mut labels = HashMap::new();
        let mut rest = rest;
        if let Some(inner) = rest.strip_prefix('{') {
            let mut chars = inner.char_indices();
            let mut key = String::new();
            loop {
                let (_, c) = chars.next().expect("unterminated labels");
                match c {
                    '}' => break,
                    ',' => continue,
                    '=' => {
                        assert_eq!(chars.next().map(|(_, c)| c), Some('"'), "{line}");
                        let mut value = String::new();
                        loop {
                            match chars.next().expect("unterminated value").1 {
                                '\\' => match chars.next().unwrap().1 {
                                    'n' => value.push('\n'),
                                    c @ ('\\' | '"') => value.push(c),
                                    c => panic!("bad escape \\{c} in {line}"),
                                },
                                '"' => break,
                                c => value.push(c),
                            }
                        }
                        labels.insert(std::mem::take(&mut key), value);
                    }
                    c => key.push(c),
                }
            }
            let used = chars.next().map_or(inner.len(), |(i, _)| i);
            rest = &inner[used..];
        }
        let value = rest
            .trim_start()
            .parse()
            .unwrap_or_else(|e| panic!("{line}: {e}"));
        let mut key: Vec<_> = labels.iter().collect();
        key.sort();
        assert!(
            seen.insert(format!("{name}{key:?}")),
            "series twice: {line}"
        );
        samples.push(Sample {
            name: name.into(),
            labels,
            value,
        });
    }
    samples
}

/// The scraped metrics of one process.
struct Metrics(Vec<Sample>);

impl Metrics {
    fn scrape(admin: SocketAddr) -> Metrics {
        let r = get(admin, "/metrics");
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(
            r.headers["content-type"],
            "text/plain; version=0.0.4; charset=utf-8"
        );
        Metrics(parse_metrics(&r.body))
    }

    /// The value of the one sample of `name` whose labels include `labels`.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        let found: Vec<&Sample> = self
            .0
            .iter()
            .filter(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .collect();
        assert_eq!(found.len(), 1, "{name} {labels:?}: {found:?}");
        found[0].value
    }

    fn has(&self, name: &str, forward: &str) -> bool {
        self.0
            .iter()
            .any(|s| s.name == name && s.labels["forward"] == forward)
    }
}

/// `base` and `extra` labels together.
fn plus<'a>(base: &[(&'a str, &'a str)], extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    base.iter().chain(extra).copied().collect()
}

// ===== tests =====

/// `/readyz` turns 200 once the listener is bound; `/healthz` is 200; `/metrics` lists
/// the forward with its labels, and its counters follow relayed bytes and connections.
#[test]
fn tcp_metrics_move_with_traffic() {
    let echo = Echo::start("127.0.0.1");
    let target = echo.addr.to_string();
    let (proxy, admin) = start_with_admin("tcp", &target, &[]);
    let addr = proxy.listen_addr(&target);
    wait_ready(admin);
    let r = get(admin, "/healthz");
    assert_eq!((r.status, r.body.as_str()), (200, "ok\n"));

    let name = format!("tcp:{}", addr.port());
    let fwd = [
        ("forward", name.as_str()),
        ("protocol", "tcp"),
        ("target", target.as_str()),
    ];
    let with = |extra: &[(&'static str, &'static str)]| plus(&fwd, extra);
    let m = Metrics::scrape(admin);
    assert_eq!(m.get("proxy_ready", &[]), 1);
    assert_eq!(m.get("proxy_connections_total", &fwd), 0);
    assert_eq!(m.get("proxy_connections_open", &fwd), 0);
    for kind in ["refused", "unreachable", "timeout", "other"] {
        assert_eq!(
            m.get("proxy_connect_failures_total", &with(&[("kind", kind)])),
            0
        );
    }
    assert!(
        !m.has("proxy_udp_sessions_open", &name),
        "UDP families on TCP"
    );

    // An open connection is counted as open.
    let open = open_connection(addr, b"hello");
    let m = Metrics::scrape(admin);
    assert_eq!(m.get("proxy_connections_open", &fwd), 1);
    assert_eq!(m.get("proxy_connections_total", &fwd), 1);
    drop(open);
    // The access log lines, one per connection, come after its last byte is counted.
    let logged = |n: usize| {
        proxy.wait_stderr(PROMPT, |lines| {
            let access = lines
                .iter()
                .filter(|l| l.contains("proxy_core::access") && l.contains("protocol=\"tcp\""));
            (access.count() >= n).then_some(())
        })
    };
    logged(1).expect("access log line of the first connection");

    // Known byte counts, each way; the counters grow by exactly that.
    let up = |m: &Metrics| m.get("proxy_bytes_total", &with(&[("direction", "upstream")]));
    let down = |m: &Metrics| m.get("proxy_bytes_total", &with(&[("direction", "downstream")]));
    let before = Metrics::scrape(admin);
    assert_eq!((up(&before), down(&before)), (5, 5));
    echo_through(addr, 300_000);
    logged(2).expect("access log line of the second connection");
    let after = Metrics::scrape(admin);
    assert_eq!(up(&after), 300_005);
    assert_eq!(down(&after), 300_005);
    assert_eq!(after.get("proxy_connections_total", &fwd), 2);
    let spliced = after.get("proxy_bytes_spliced_total", &fwd);
    assert!(spliced <= 600_010, "{spliced}");
    // The upstream address is healthy, with two successful connects.
    let endpoint = [("forward", name.as_str()), ("endpoint", target.as_str())];
    assert_eq!(after.get("proxy_endpoint_up", &endpoint), 1);
    assert_eq!(after.get("proxy_endpoint_connects_total", &endpoint), 2);
    assert_eq!(after.get("proxy_endpoint_failures_total", &endpoint), 0);
    // The open gauge goes back to 0 right after the access line (bounded poll).
    let deadline = Instant::now() + PROMPT;
    while Metrics::scrape(admin).get("proxy_connections_open", &fwd) != 0 {
        assert!(
            Instant::now() < deadline,
            "a connection still counted as open"
        );
        thread::sleep(Duration::from_millis(10));
    }
}

/// A refused upstream shows as connect failures of kind `refused`, an unavailable
/// upstream and an endpoint that is down.
#[test]
fn refused_upstream_is_counted_and_marks_the_endpoint_down() {
    // A port nobody listens on: bound and closed again.
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let target = closed.to_string();
    let (proxy, admin) = start_with_admin("tcp", &target, &[]);
    let addr = proxy.listen_addr(&target);
    let mut client = connect(addr);
    let mut buf = [0u8; 1];
    // The proxy closes the client connection when no upstream is reachable.
    let _ = client.read(&mut buf);
    proxy.expect_line("'no upstream reachable'", |l| {
        l.contains("no upstream reachable")
    });
    let name = format!("tcp:{}", addr.port());
    let fwd = [("forward", name.as_str())];
    let m = Metrics::scrape(admin);
    let refused = m.get(
        "proxy_connect_failures_total",
        &[("forward", name.as_str()), ("kind", "refused")],
    );
    assert!(refused >= 1, "{refused}");
    assert_eq!(m.get("proxy_upstream_unavailable_total", &fwd), 1);
    let endpoint = [("forward", name.as_str()), ("endpoint", target.as_str())];
    assert_eq!(m.get("proxy_endpoint_up", &endpoint), 0);
    assert!(m.get("proxy_endpoint_failures_total", &endpoint) >= 1);
    assert!(m.get("proxy_endpoint_consecutive_failures", &endpoint) >= 1);
}

/// `--eject-after 2`: after two refusals the address is ejected, and the connections
/// after that are refused at once without a connect attempt; the metrics say so.
#[test]
fn ejected_upstream_fails_fast_and_is_counted() {
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let target = closed.to_string();
    let (proxy, admin) =
        start_with_admin("tcp", &target, &["--eject-after", "2", "--eject-for", "1h"]);
    let addr = proxy.listen_addr(&target);
    for _ in 0..5 {
        let mut client = connect(addr);
        let mut buf = [0u8; 1];
        let _ = client.read(&mut buf);
    }
    proxy.expect_line("'upstream address ejected'", |l| {
        l.contains(" WARN ") && l.contains("upstream address ejected") && l.contains(&target)
    });
    let name = format!("tcp:{}", addr.port());
    let fwd = [("forward", name.as_str())];
    let deadline = Instant::now() + PROMPT;
    while Metrics::scrape(admin).get("proxy_upstream_unavailable_total", &fwd) < 5 {
        assert!(Instant::now() < deadline, "5 connections given up");
        thread::sleep(Duration::from_millis(20));
    }
    let m = Metrics::scrape(admin);
    let refused = [("forward", name.as_str()), ("kind", "refused")];
    assert_eq!(m.get("proxy_connect_failures_total", &refused), 2);
    assert_eq!(m.get("proxy_ejections_total", &fwd), 1);
    assert_eq!(m.get("proxy_all_ejected_total", &fwd), 3);
    let endpoint = [("forward", name.as_str()), ("endpoint", target.as_str())];
    assert_eq!(m.get("proxy_endpoint_ejections_total", &endpoint), 1);
}

/// `--max-connections 2`: a third connection is reset at once while two are open, logged
/// as a warning and counted by limit; the open ones keep working.
#[test]
fn connections_past_the_limit_are_reset_and_counted() {
    let echo = Echo::start("127.0.0.1");
    let target = format!("127.0.0.1:{}", echo.port());
    let (proxy, admin) = start_with_admin("tcp", &target, &["--max-connections", "2"]);
    let addr = proxy.listen_addr(&target);
    let mut open = [connect(addr), connect(addr)];
    for c in &mut open {
        ping(c, b"hello");
    }
    // The reset may come before the connect returns (its SO_ERROR), or on the read.
    let reset = std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(5))
        .and_then(|mut third| {
            third.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
            third.read(&mut [0u8; 8])
        })
        .expect_err("the third connection is reset");
    assert_eq!(reset.kind(), std::io::ErrorKind::ConnectionReset, "{reset}");
    proxy.expect_line("'refused by the connection limit'", |l| {
        l.contains(" WARN ") && l.contains("refused by the connection limit")
    });
    for c in &mut open {
        ping(c, b"still there");
    }
    let name = format!("tcp:{}", addr.port());
    let m = Metrics::scrape(admin);
    let by = |limit| [("forward", name.as_str()), ("limit", limit)];
    assert_eq!(m.get("proxy_limited_total", &by("connections")), 1);
    assert_eq!(m.get("proxy_limited_total", &by("per_source")), 0);
    assert_eq!(m.get("proxy_limited_total", &by("rate")), 0);
    assert_eq!(echo.accepted(), 2);
}

/// `proxy udp --max-connections 1` counts UDP sessions, as the config file's key and the
/// C API's do (the flag was TCP's alone): a second client is refused while the first's
/// session is open, and counted; the first keeps being served.
#[test]
fn max_connections_counts_udp_sessions_from_the_command_line() {
    let echo = UdpEcho::start("127.0.0.1");
    let target = echo.addr.to_string();
    let (proxy, admin) = start_with_admin("udp", &target, &["--max-connections", "1"]);
    let addr = proxy.proto_listen_addr(Proto::Udp, &target);
    wait_ready(admin);
    let first = blocking::udp_client(addr);
    assert_eq!(blocking::udp_echo(&first, b"one"), b"one");
    let second = blocking::udp_client(addr);
    second.send(b"two").unwrap();
    let name = format!("udp:{}", addr.port());
    let by = [("forward", name.as_str()), ("limit", "connections")];
    let deadline = Instant::now() + PROMPT;
    while Metrics::scrape(admin).get("proxy_limited_total", &by) == 0 {
        assert!(
            Instant::now() < deadline,
            "the second session was not refused"
        );
        thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(blocking::udp_echo(&first, b"still"), b"still");
    let m = Metrics::scrape(admin);
    let fwd = [
        ("forward", name.as_str()),
        ("protocol", "udp"),
        ("target", target.as_str()),
    ];
    assert_eq!(
        m.get("proxy_udp_sessions_total", &fwd),
        1,
        "only the first session"
    );
}

/// `proxy udp`: sessions, datagrams and bytes by direction.
#[test]
fn udp_metrics_move_with_datagrams() {
    let echo = UdpEcho::start("127.0.0.1");
    let target = echo.addr.to_string();
    // Sessions end after 300 ms without traffic; the access line then says it ended.
    let (proxy, admin) = start_with_admin("udp", &target, &["300ms"]);
    let addr = proxy.proto_listen_addr(Proto::Udp, &target);
    wait_ready(admin);
    let name = format!("udp:{}", addr.port());
    let fwd = [
        ("forward", name.as_str()),
        ("protocol", "udp"),
        ("target", target.as_str()),
    ];

    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.connect(addr).unwrap();
    client.set_read_timeout(Some(PROMPT)).unwrap();
    let sizes = [1usize, 0, 1200, 65_507];
    let mut buf = vec![0u8; 65_536];
    for (i, &len) in sizes.iter().enumerate() {
        let data = vec![i as u8; len];
        client.send(&data).unwrap();
        let n = client.recv(&mut buf).expect("echo through the proxy");
        assert_eq!(n, len);
    }
    // The session is open while the client talks.
    let m = Metrics::scrape(admin);
    assert_eq!(m.get("proxy_udp_sessions_open", &fwd), 1);
    assert_eq!(m.get("proxy_udp_sessions_total", &fwd), 1);
    assert!(
        !m.has("proxy_connections_open", &name),
        "TCP families on UDP"
    );

    proxy.expect_line("the session's access log line", |l| {
        l.contains("proxy_core::access") && l.contains("protocol=\"udp\"")
    });
    let total: u64 = sizes.iter().map(|&n| n as u64).sum();
    let m = Metrics::scrape(admin);
    let dir = |name: &str, d: &'static str| m.get(name, &plus(&fwd, &[("direction", d)]));
    assert_eq!(dir("proxy_udp_datagrams_total", "upstream"), 4);
    assert_eq!(dir("proxy_udp_datagrams_total", "downstream"), 4);
    assert_eq!(dir("proxy_bytes_total", "upstream"), total);
    assert_eq!(dir("proxy_bytes_total", "downstream"), total);
    assert_eq!(m.get("proxy_udp_sessions_total", &fwd), 1);
    for zero in [
        "proxy_udp_sessions_evicted_total",
        "proxy_udp_dropped_total",
        "proxy_udp_truncated_total",
        "proxy_udp_upstream_refused_total",
        "proxy_upstream_unavailable_total",
        "proxy_resolve_failures_total",
    ] {
        assert_eq!(m.get(zero, &fwd), 0, "{zero}");
    }
    let endpoint = [("forward", name.as_str()), ("endpoint", target.as_str())];
    assert_eq!(m.get("proxy_endpoint_up", &endpoint), 1);
}

/// `proxy tcp,udp`: one forward per protocol, named after the shared port.
#[test]
fn tcp_udp_lists_both_forwards() {
    let echo = Echo::start("127.0.0.1");
    let target = echo.addr.to_string();
    let (proxy, admin) = start_with_admin("tcp,udp", &target, &[]);
    let port = proxy.proto_listen_addr(Proto::Udp, &target).port();
    wait_ready(admin);
    let m = Metrics::scrape(admin);
    for proto in ["tcp", "udp"] {
        let name = format!("{proto}:{port}");
        let labels = [("forward", name.as_str()), ("protocol", proto)];
        let upstream = plus(&labels, &[("direction", "upstream")]);
        assert_eq!(m.get("proxy_bytes_total", &upstream), 0);
        assert_eq!(m.get("proxy_forward_stopping", &labels), 0);
    }
}

/// After SIGTERM, `/readyz` answers 503 while an open connection drains; `/healthz` and
/// `/metrics` still answer; the proxy exits 0 once the connection ends.
#[test]
fn readyz_turns_503_while_draining() {
    let echo = Echo::start("127.0.0.1");
    let target = echo.addr.to_string();
    let (mut proxy, admin) = start_with_admin("tcp", &target, &["--drain", "30s"]);
    let addr = proxy.listen_addr(&target);
    wait_ready(admin);
    let mut open = open_connection(addr, b"stay");

    proxy.signal("TERM");
    proxy.expect_line("'shutting down'", |l| l.contains("shutting down"));
    let r = get(admin, "/readyz");
    assert_eq!((r.status, r.body.as_str()), (503, "draining\n"));
    assert_eq!(get(admin, "/healthz").status, 200);
    let m = Metrics::scrape(admin);
    assert_eq!(m.get("proxy_ready", &[]), 0);
    let name = format!("tcp:{}", addr.port());
    assert_eq!(
        m.get("proxy_connections_open", &[("forward", name.as_str())]),
        1
    );

    // The connection still works, and ending it ends the process.
    ping(&mut open, b"still here");
    drop(open);
    let status = proxy.wait_exit(PROMPT);
    assert_eq!(status.code(), Some(0), "{}", proxy.stderr());
}

/// Unknown paths are 404, other methods than GET (and HEAD) 405, garbage 400.
#[test]
fn bad_requests() {
    let (_proxy, admin) = start_with_admin("tcp", "127.0.0.1:9", &[]);
    assert_eq!(get(admin, "/").status, 404);
    assert_eq!(get(admin, "/metrics/x").status, 404);
    assert_eq!(get(admin, "/metrics?x=1").status, 200);
    let r = http_raw(
        admin,
        "POST /metrics HTTP/1.1\r\nHost: test\r\nContent-Length: 5\r\n\r\nhello",
    );
    assert_eq!(r.status, 405, "{r:?}");
    assert_eq!(r.headers["allow"], "GET, HEAD");
    let r = http_raw(admin, "DELETE /readyz HTTP/1.1\r\n\r\n");
    assert_eq!(r.status, 405);
    let r = http_raw(admin, "HEAD /healthz HTTP/1.1\r\n\r\n");
    assert_eq!((r.status, r.body.as_str()), (200, ""));
    assert_eq!(r.headers["content-length"], "3");
    assert_eq!(http_raw(admin, "hello\r\n\r\n").status, 400);
    let huge = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(20_000));
    assert_eq!(http_raw(admin, &huge).status, 431);
    // A client that sends nothing does not stop others from being served.
    let _idle = connect(admin);
    assert_eq!(get(admin, "/healthz").status, 200);
}

/// How long `GET /healthz` took, which must answer 200 `ok` within a second.
fn timed_healthz(admin: SocketAddr) -> Duration {
    let started = Instant::now();
    let mut s = connect(admin);
    s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    std::io::Write::write_all(&mut s, b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
    let mut raw = String::new();
    let read = s.read_to_string(&mut raw);
    let took = started.elapsed();
    assert!(read.is_ok(), "/healthz unanswered after {took:?}: {read:?}");
    assert!(
        raw.starts_with("HTTP/1.1 200 ") && raw.ends_with("\r\n\r\nok\n"),
        "{raw:?}"
    );
    took
}

/// The median of five `/healthz` round trips, each of which must answer within a second.
fn median_healthz(admin: SocketAddr) -> Duration {
    let mut took: Vec<Duration> = (0..5).map(|_| timed_healthz(admin)).collect();
    took.sort();
    took[2]
}

/// Connections that connect and send nothing (a port scanner, a stuck client, a pod
/// holding sockets open on purpose) never keep a liveness probe waiting: with 64 of them,
/// and with 564, `/healthz` answers within 100 ms, the oldest idle connections are the
/// ones closed to make room, and `/metrics` still answers in full.
#[test]
fn healthz_answers_promptly_past_many_idle_connections() {
    let (_proxy, admin) = start_with_admin("tcp", "127.0.0.1:9", &[]);
    assert_eq!(get(admin, "/healthz").status, 200);
    let mut idle: Vec<std::net::TcpStream> = (0..64).map(|_| connect(admin)).collect();
    let with_64 = median_healthz(admin);
    idle.extend((0..500).map(|_| connect(admin)));
    let with_564 = median_healthz(admin);
    eprintln!("/healthz took {with_64:?} with 64 idle sockets, {with_564:?} with 564");
    assert!(with_64 < Duration::from_millis(100), "{with_64:?} with 64");
    assert!(
        with_564 < Duration::from_millis(100),
        "{with_564:?} with 564"
    );
    // The oldest idle connection was closed, without an answer (it asked nothing).
    let mut oldest = idle.remove(0);
    oldest
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    let mut buf = [0u8; 64];
    match oldest.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("the oldest idle connection is still open: {other:?}"),
    }
    let m = Metrics::scrape(admin);
    assert_eq!(m.get("proxy_ready", &[]), 1);
}

/// One round trip through the proxy at `addr` that must end within two seconds.
fn quick_round_trip(addr: SocketAddr, n: usize) -> std::io::Result<()> {
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    let msg = format!("hello {n}");
    std::io::Write::write_all(&mut s, msg.as_bytes())?;
    let mut back = vec![0u8; msg.len()];
    s.read_exact(&mut back)?;
    assert_eq!(back, msg.as_bytes());
    Ok(())
}

/// With stderr on a pipe nobody reads (a stuck log collector), forwarding goes on: 1,200
/// connections each logging two lines (`--log-level debug`) all pass, well past the
/// pipe's 64 KiB and the log queue; the lines that did not fit are counted in
/// `proxy_log_lines_dropped_total`. Once stderr is read again, the queued lines come out
/// and the shutdown lines are the last ones.
#[test]
fn unread_stderr_never_stalls_forwarding() {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    let echo = Echo::start("127.0.0.1");
    let target = echo.addr.to_string();
    let mut child = Command::new(support::proxy::PROXY)
        .args([
            "tcp",
            "0",
            &target,
            "--listen",
            "127.0.0.1",
            "--admin",
            "127.0.0.1:0",
        ])
        .args(["--log-level", "debug"])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Killed however the test ends.
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let child = Kill(child);
    let (mut admin, mut addr) = (None, None);
    while admin.is_none() || addr.is_none() {
        let mut line = String::new();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "stderr ended");
        if let Some(at) = line.split("admin listening on ").nth(1) {
            admin = at
                .split([' ', '"'])
                .next()
                .unwrap()
                .parse::<SocketAddr>()
                .ok();
        }
        if let Some((_, a)) = support::proxy::forwarding_line(line.trim_end(), &target) {
            addr = Some(a);
        }
    }
    let (admin, addr) = (admin.unwrap(), addr.unwrap());
    // From here on nobody reads stderr until the end.
    let started = Instant::now();
    for n in 0..1200 {
        if let Err(e) = quick_round_trip(addr, n) {
            panic!(
                "connection {n} failed after {:?} with stderr unread: {e}",
                started.elapsed()
            );
        }
    }
    eprintln!("1,200 connections in {:?}", started.elapsed());
    let dropped = Metrics::scrape(admin).get("proxy_log_lines_dropped_total", &[]);
    eprintln!("{dropped} log lines dropped");
    assert!((1..=2400).contains(&dropped), "{dropped} lines dropped");

    // Read stderr again: the queued lines, then the shutdown's, then the end.
    let lines = thread::spawn(move || stderr.lines().map_while(Result::ok).collect::<Vec<_>>());
    let kill = |sig: &str| {
        let pid = child.0.id().to_string();
        assert!(
            Command::new("kill")
                .args([sig, &pid])
                .status()
                .unwrap()
                .success()
        );
    };
    kill("-TERM");
    let lines = lines.join().unwrap();
    assert!(lines.len() > 300, "{} lines", lines.len());
    let last = lines.last().unwrap();
    assert!(last.contains("exiting"), "{last}");
}

/// When stderr is read, no log line is lost: every connection's access line is there by
/// the time the proxy has exited, and none was counted as dropped.
#[test]
fn read_stderr_loses_no_log_line() {
    let echo = Echo::start("127.0.0.1");
    let target = echo.addr.to_string();
    let (mut proxy, admin) = start_with_admin("tcp", &target, &[]);
    let addr = proxy.listen_addr(&target);
    for n in 0..300 {
        quick_round_trip(addr, n).unwrap();
    }
    let m = Metrics::scrape(admin);
    assert_eq!(m.get("proxy_log_lines_dropped_total", &[]), 0);
    proxy.signal("TERM");
    assert_eq!(proxy.wait_exit(PROMPT).code(), Some(0));
    let access = proxy.count_lines(|l| l.contains("proxy_core::access"));
    assert_eq!(access, 300);
    let stderr = proxy.stderr();
    assert!(
        stderr.lines().last().unwrap().contains("exiting"),
        "{stderr}"
    );
}

/// `--log-format json`: every stderr line is one JSON object with a timestamp, a level,
/// a target and fields, from the first line to the last.
#[test]
fn json_log_lines() {
    let echo = Echo::start("127.0.0.1");
    let target = echo.addr.to_string();
    let (mut proxy, admin) = start_with_admin("tcp", &target, &["--log-format", "json"]);
    let forwarding = proxy.expect_line("'Forwarding from' in JSON", |l| {
        l.contains("Forwarding from")
    });
    let line: serde_json::Value = serde_json::from_str(&forwarding).expect("JSON");
    let message = line["fields"]["message"].as_str().unwrap();
    let addr: SocketAddr = message
        .strip_prefix("Forwarding from ")
        .and_then(|m| m.strip_suffix(&format!(" -> {target}")))
        .unwrap_or_else(|| panic!("{message:?}"))
        .parse()
        .unwrap();
    assert_eq!(line["fields"]["protocol"], "tcp");
    wait_ready(admin);
    echo_through(addr, 1000);
    let access = proxy.expect_line("the access log line in JSON", |l| {
        l.contains("proxy_core::access")
    });
    let access: serde_json::Value = serde_json::from_str(&access).unwrap();
    assert_eq!(access["fields"]["bytes_up"], 1000);
    assert_eq!(access["level"], "INFO");

    proxy.signal("TERM");
    assert_eq!(proxy.wait_exit(PROMPT).code(), Some(0));
    let stderr = proxy.stderr();
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(lines.len() >= 5, "{stderr}");
    for line in lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
        let timestamp = v["timestamp"].as_str().unwrap_or_else(|| panic!("{line}"));
        assert!(timestamp.len() >= 20 && timestamp.contains('T'), "{line}");
        assert!(
            matches!(
                v["level"].as_str(),
                Some("INFO" | "WARN" | "ERROR" | "DEBUG")
            ),
            "{line}"
        );
        assert!(
            v["target"].as_str().is_some_and(|t| !t.is_empty()),
            "{line}"
        );
        assert!(v["fields"]["message"].is_string(), "{line}");
    }
}

/// `--admin` on a busy port: exit 1 naming the address, as text or as a JSON line.
#[test]
fn admin_port_in_use_exits_1() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let args = [
        "tcp",
        "0",
        "127.0.0.1:9",
        "--listen",
        "127.0.0.1",
        "--admin",
        &addr,
    ];
    let (code, _, stderr) = run(&args);
    assert_eq!(code, 1, "{stderr}");
    let want = format!("error: --admin {addr}: cannot listen: Address already in use");
    assert!(stderr.contains(&want), "{stderr:?} lacks {want:?}");
    assert!(!stderr.contains("Forwarding from"), "{stderr}");

    let mut json = args.to_vec();
    json.extend(["--log-format", "json"]);
    let (code, _, stderr) = run(&json);
    assert_eq!(code, 1, "{stderr}");
    let last = stderr.lines().last().unwrap();
    let v: serde_json::Value = serde_json::from_str(last).unwrap();
    assert_eq!(v["level"], "ERROR");
    let message = v["fields"]["message"].as_str().unwrap();
    assert!(message.contains(&format!("--admin {addr}")), "{message}");
}
