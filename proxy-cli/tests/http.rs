//! `proxy http` with the real binary, real clients (curl, raw sockets, the Python
//! `websockets` client) and real upstreams (testkit's hyper backend, Python's
//! `http.server`, nginx, a dnsmasq-served name with two addresses): Ingress-style routing
//! by host and path, what upstreams see, keep-alive and pooling, balancing and the sticky
//! cookie, the failure statuses, retries, the access log and `/metrics`, TLS termination
//! (curl, `openssl s_client` and `wss:` over it), TLS origination (nginx and
//! `openssl s_server` upstreams), `proxy run --config` reloads, the drain, and `--check`.

mod support;

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use proxy_testkit::data::payload;
use proxy_testkit::dns::{Dnsmasq, hosts_config};
use proxy_testkit::http::{
    Backend, Response, Seen, http_get, nginx_backend, nginx_tls_backend, python_backend,
    raw_exchange, websocket_client, websocket_echo, websocket_opened,
};
use proxy_testkit::process::{TempPath, require_program, run_limited};
use proxy_testkit::tls::OpensslServer;
use support::http::{admin_addr, get};
use support::proxy::{PROMPT, Proxy, run};

// ===== helpers =====

/// A running `proxy http 0 ARGS --listen 127.0.0.1` and the address it serves on.
struct Http {
    proxy: Proxy,
    addr: SocketAddr,
}

impl Http {
    /// Starts `proxy http 0 ARGS --listen 127.0.0.1` (ARGS may start with TARGET) and
    /// waits for its `Forwarding from` line.
    fn start(args: &[&str]) -> Http {
        let mut all = vec!["http", "0"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--listen", "127.0.0.1"]);
        let proxy = Proxy::start(&all);
        let addr = forwarding_addr(&proxy);
        Http { proxy, addr }
    }

    /// `GET PATH` with `Host: HOST` on a connection of its own.
    fn get(&self, host: &str, path: &str) -> Response {
        http_get(self.addr, host, path)
    }

    /// The upstream's [`Seen`] of `GET PATH` with `Host: HOST`, which must be answered 200.
    #[track_caller]
    fn seen(&self, host: &str, path: &str) -> Seen {
        let response = self.get(host, path);
        assert_eq!(response.status, 200, "{host}{path}: {}", response.text());
        response.seen()
    }

    /// `http://127.0.0.1:PORT{path}`.
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

/// The listen address of the first `Forwarding from ADDR` line (text or JSON logs).
fn forwarding_addr(proxy: &Proxy) -> SocketAddr {
    let line = proxy.expect_line("'Forwarding from'", |l| l.contains("Forwarding from "));
    let after = line.split("Forwarding from ").nth(1).unwrap();
    let addr = after.split([' ', '"', ',']).next().unwrap();
    addr.parse()
        .unwrap_or_else(|e| panic!("{addr:?} in {line:?}: {e}"))
}

/// Runs curl with ARGS (no proxy from the environment, errors shown, at most 60 s);
/// its stdout and stderr. Fails the test when curl fails.
#[track_caller]
fn curl(args: &[&str]) -> (String, String) {
    let program = require_program("curl", &["/usr/bin/curl"], "curl", "a real HTTP client");
    let mut cmd = Command::new(program);
    cmd.args(["-sS", "--noproxy", "*", "--max-time", "60"])
        .args(args);
    let (status, out, err) = run_limited(&mut cmd, Duration::from_secs(70));
    assert!(
        status.is_some_and(|s| s.success()),
        "curl {args:?}: {status:?}\nstdout:\n{out}\nstderr:\n{err}"
    );
    (out, err)
}

/// The status curl got for ARGS (`--write-out '%{http_code}'`, the body thrown away).
#[track_caller]
fn curl_status(args: &[&str]) -> u16 {
    let mut all = vec!["-o", "/dev/null", "--write-out", "%{http_code}"];
    all.extend_from_slice(args);
    let (out, err) = curl(&all);
    out.trim()
        .parse()
        .unwrap_or_else(|_| panic!("no status from curl {args:?}: {out:?} {err}"))
}

/// Writes `request` as it is and parses the one response that comes back.
#[track_caller]
fn raw(addr: SocketAddr, request: &[u8]) -> Response {
    let got = raw_exchange(addr, request, PROMPT);
    Response::parse(&got).unwrap_or_else(|e| {
        panic!(
            "{:?}: {e}\n{:?}",
            String::from_utf8_lossy(request),
            String::from_utf8_lossy(&got)
        )
    })
}

/// An address nothing listens on (bound a moment ago, then closed).
fn closed_port() -> SocketAddr {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    l.local_addr().unwrap()
}

/// Polls `cond` every 10 ms for at most `limit`; fails the test with `what` after it.
#[track_caller]
fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        thread::sleep(Duration::from_millis(10));
    }
}

/// A kilobyte field of a `/proc/PID/status` line, such as `VmHWM`.
fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = (status.lines())
        .find(|l| l.starts_with(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// The `name=value` of cookie `name` among `Set-Cookie` headers.
fn set_cookie<'a>(response: &'a Response, name: &str) -> Option<&'a str> {
    (response.headers_named("set-cookie").into_iter()).find(|c| c.starts_with(&format!("{name}=")))
}

// ===== routing =====

#[test]
fn routes_by_exact_host_wildcard_default_and_longest_path_by_whole_segments() {
    let [default, api, shop, cart, wild] =
        ["default", "api", "shop", "cart", "wild"].map(Backend::start);
    let route = |spec: &str, b: &Backend| format!("{spec}={}", b.addr());
    let http = Http::start(&[
        &default.addr().to_string(), // TARGET: the default route
        "--route",
        &route("/api", &api),
        "--route",
        &route("shop.example/", &shop),
        "--route",
        &route("shop.example/cart", &cart),
        "--route",
        &route("*.apps.example/", &wild),
    ]);
    let cases = [
        // (Host, path, backend)
        ("other.example", "/", "default"),
        ("other.example", "/api", "api"),
        ("other.example", "/api/", "api"),
        ("other.example", "/api/v1/items?x=1&y=%20z", "api"),
        ("other.example", "/apis", "default"),
        ("other.example", "/apiv1", "default"),
        ("shop.example", "/", "shop"),
        ("shop.example", "/cart", "cart"),
        ("shop.example", "/cart/42?q=1", "cart"),
        ("shop.example", "/carts", "shop"),
        // The most specific host first, then its longest path: shop.example's `/`
        // serves /api/v1 rather than any host's /api.
        ("shop.example", "/api/v1", "shop"),
        ("cart.example", "/cart", "default"),
        // Ports, case and a trailing dot do not change the host.
        ("shop.example:8080", "/cart", "cart"),
        ("SHOP.Example", "/cart", "cart"),
        ("shop.example.", "/", "shop"),
        ("a.apps.example", "/x", "wild"),
        ("a.apps.example:80", "/x", "wild"),
        // A wildcard is one label.
        ("a.b.apps.example", "/x", "default"),
        ("apps.example", "/x", "default"),
        ("127.0.0.1", "/", "default"),
        ("[::1]:8080", "/api", "api"),
    ];
    for (host, path, want) in cases {
        let seen = http.seen(host, path);
        assert_eq!(seen.backend, want, "{host}{path}");
        assert_eq!(
            seen.uri, path,
            "{host}{path}: the path and query go as sent"
        );
        assert_eq!(seen.method, "GET");
        assert_eq!(seen.header("host"), Some(host), "{host}{path}");
    }

    // An absolute-form target's host wins over the Host header (RFC 9112 §3.2.2), and
    // the upstream gets the origin form.
    let response = raw(
        http.addr,
        b"GET http://shop.example:8080/cart/7?a=b HTTP/1.1\r\nHost: other.example\r\n\
          Connection: close\r\n\r\n",
    );
    let seen = response.seen();
    assert_eq!(seen.backend, "cart");
    assert_eq!(seen.uri, "/cart/7?a=b");
    assert_eq!(seen.header("host"), Some("shop.example:8080"));
    assert_eq!(seen.header("x-forwarded-host"), Some("shop.example:8080"));

    // Without a default route, what no route serves is 404, from the proxy.
    let only_cart = Http::start(&["--route", &route("shop.example/cart", &cart)]);
    for (host, path) in [
        ("shop.example", "/"),
        ("shop.example", "/carts"),
        ("other.example", "/cart"),
    ] {
        let response = only_cart.get(host, path);
        assert_eq!(response.status, 404, "{host}{path}: {}", response.text());
        assert!(response.text().contains("no route"), "{}", response.text());
    }
    assert_eq!(only_cart.seen("shop.example", "/cart/1").backend, "cart");
}

// ===== real clients =====

#[test]
fn curl_methods_chunked_bodies_expect_continue_and_keep_alive() {
    let backend = Backend::start("web");
    // One worker thread: one pool of upstream connections, counted at the end.
    let http = Http::start(&[&backend.addr().to_string(), "--threads", "1"]);
    let url = http.url("/m?x=1");
    for method in ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"] {
        let (out, _) = curl(&["-X", method, "-H", "Host: m.example", &url]);
        let seen = Seen::parse(out.as_bytes()).unwrap();
        assert_eq!(seen.method, method);
        assert_eq!(seen.uri, "/m?x=1");
    }
    let (head, _) = curl(&["-I", &url]);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("application/json"), "{head}");

    // A chunked request body, echoed byte for byte.
    let dir = tempfile::tempdir().unwrap();
    let body = payload(7, 300_001);
    let file = dir.path().join("body");
    std::fs::write(&file, &body).unwrap();
    let data = format!("@{}", file.display());
    let out = dir.path().join("out");
    let (_, err) = curl(&[
        "-v",
        "-H",
        "Transfer-Encoding: chunked",
        "--data-binary",
        &data,
        "-o",
        out.to_str().unwrap(),
        &http.url("/echo"),
    ]);
    assert!(err.contains("> Transfer-Encoding: chunked"), "{err}");
    proxy_testkit::data::assert_bytes("chunked echo", &std::fs::read(&out).unwrap(), &body);

    // Expect: 100-continue: the proxy says 100 Continue (curl would otherwise wait 30 s,
    // past --max-time).
    let small = dir.path().join("small");
    std::fs::write(&small, payload(8, 4096)).unwrap();
    let (out, err) = curl(&[
        "-v",
        "-H",
        "Expect: 100-continue",
        "--expect100-timeout",
        "120",
        "--data-binary",
        &format!("@{}", small.display()),
        &http.url("/upload"),
    ]);
    assert!(err.contains("HTTP/1.1 100 Continue"), "{err}");
    let seen = Seen::parse(out.as_bytes()).unwrap();
    assert_eq!((seen.method.as_str(), seen.body_bytes), ("POST", 4096));

    // Several URLs in one curl: one client connection, kept alive.
    let urls = [http.url("/a"), http.url("/b"), http.url("/c")];
    let (out, _) = curl(&[
        "-o",
        "/dev/null",
        "-o",
        "/dev/null",
        "-o",
        "/dev/null",
        "--write-out",
        "%{num_connects} ",
        &urls[0],
        &urls[1],
        &urls[2],
    ]);
    let connects: Vec<u32> = out.split_whitespace().map(|n| n.parse().unwrap()).collect();
    assert_eq!(connects, [1, 0, 0], "curl's connections per URL");
    assert_eq!(backend.requests(), 12);
    // Every answer, HEAD's empty one too, gave its upstream connection back.
    assert_eq!(backend.connections(), 1, "upstream connections");
    let head = http
        .proxy
        .expect_line("HEAD's access line", |l| l.contains("method=HEAD"));
    assert!(head.contains("complete=true"), "{head}");
}

#[test]
fn a_64_mib_body_is_echoed_byte_exact_without_being_buffered() {
    let backend = Backend::start("echo");
    let http = Http::start(&[&backend.addr().to_string()]);
    let dir = tempfile::tempdir().unwrap();
    let body = payload(64, 64 << 20);
    let (input, output) = (dir.path().join("in"), dir.path().join("out"));
    std::fs::write(&input, &body).unwrap();
    let pid = http.proxy.pid();
    // One small request first, so what is counted is the body, not the first request.
    assert_eq!(http.seen("echo", "/").backend, "echo");
    let before = proc_status_kib(pid, "VmHWM");
    curl(&[
        "-H",
        "Content-Type: application/octet-stream",
        "--data-binary",
        &format!("@{}", input.display()),
        "-o",
        output.to_str().unwrap(),
        &http.url("/echo"),
    ]);
    let after = proc_status_kib(pid, "VmHWM");
    let got = std::fs::read(&output).unwrap();
    proxy_testkit::data::assert_bytes("64 MiB echo", &got, &body);
    // Buffering the body would take 64 MiB at least; streaming takes a few buffers.
    assert!(
        after < before + 32 * 1024,
        "the proxy's peak RSS went from {before} KiB to {after} KiB"
    );
}

#[test]
fn python_and_nginx_upstreams_get_forwarded_headers_and_no_hop_by_hop_ones() {
    let (python, py_addr) = python_backend("py");
    let nginx = nginx_backend("ngx");
    let http = Http::start(&[
        "--route",
        &format!("/py={py_addr}"),
        "--route",
        &format!("/ngx={}", nginx.addr()),
    ]);
    for (prefix, name) in [("/py", "py"), ("/ngx", "ngx")] {
        let path = format!("{prefix}/items?q=1&r=%20s");
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: shop.example:8080\r\n\
             Connection: close, X-Private\r\nX-Private: secret\r\nKeep-Alive: timeout=5\r\n\
             Proxy-Authorization: Basic eDp5\r\nTE: gzip\r\nX-Forwarded-For: 203.0.113.7\r\n\
             User-Agent: hop-test\r\nX-Kept: yes\r\n\r\n"
        );
        let response = raw(http.addr, request.as_bytes());
        assert_eq!(response.status, 200, "{name}: {}", response.text());
        let seen = response.seen();
        assert_eq!(seen.backend, name);
        assert_eq!(seen.uri, path, "{name}");
        assert_eq!(seen.header("host"), Some("shop.example:8080"), "{name}");
        assert_eq!(
            seen.header("x-forwarded-for"),
            Some("203.0.113.7, 127.0.0.1"),
            "{name}"
        );
        assert_eq!(seen.header("x-forwarded-host"), Some("shop.example:8080"));
        assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
        assert_eq!(
            seen.header("forwarded"),
            Some("for=127.0.0.1;host=\"shop.example:8080\";proto=http"),
            "{name}"
        );
        assert_eq!(seen.header("user-agent"), Some("hop-test"));
        let connection = seen.header("connection").unwrap_or_default();
        assert!(
            !connection.to_ascii_lowercase().contains("x-private"),
            "{name}: Connection {connection:?}"
        );
        if name == "py" {
            // Python reports every header it got.
            assert_eq!(seen.header("x-kept"), Some("yes"));
            for gone in ["x-private", "keep-alive", "proxy-authorization", "te"] {
                assert_eq!(
                    seen.header(gone),
                    None,
                    "{gone} reached the upstream: {seen:?}"
                );
            }
        }
    }
    drop(python);
}

#[test]
fn websocket_echo_through_the_proxy() {
    let server = match websocket_echo() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("skipping: {e}");
            return;
        }
    };
    let backend = Backend::start("plain");
    let http = Http::start(&[
        &backend.addr().to_string(),
        "--route",
        &format!("ws.example/chat={}", server.addr()),
    ]);
    let out = websocket_client(
        "ws://ws.example/chat/room1",
        Some(http.addr),
        40,
        Duration::from_secs(60),
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", server.output()));
    assert!(out.contains("ok: 40 messages echoed"), "{out}");
    assert_eq!(
        websocket_opened(&server),
        [("/chat/room1".to_owned(), "ws.example".to_owned())]
    );
    // The access log line of the upgrade comes when the relay ends.
    assert_eq!(http.seen("other", "/").backend, "plain");
}

// ===== balancing, stickiness, pooling =====

/// Two backends on one port of 127.0.0.2 and 127.0.0.3, the two A records of `web.test`
/// in a dnsmasq, and the proxy's flags to resolve it there.
fn two_address_name() -> (Vec<Backend>, Dnsmasq, String) {
    let backends = Backend::start_same_port(&[
        ("two", [127, 0, 0, 2].into()),
        ("three", [127, 0, 0, 3].into()),
    ]);
    let dns = Dnsmasq::start(&hosts_config(
        "127.0.0.2 web.test\n127.0.0.3 web.test\n",
        &["test"],
    ));
    let target = format!("web.test:{}", backends[0].addr().port());
    (backends, dns, target)
}

#[test]
fn round_robin_spreads_requests_over_a_names_two_addresses() {
    let (backends, dns, target) = two_address_name();
    let http = Http::start(&[
        &target,
        "--resolver",
        "hickory",
        "--name-servers",
        &dns.addr().to_string(),
        "--balance",
        "round-robin",
    ]);
    let mut by_backend = std::collections::BTreeMap::new();
    for i in 0..12 {
        let seen = http.seen("web.test", &format!("/rr/{i}"));
        *by_backend.entry(seen.backend).or_insert(0) += 1;
    }
    assert_eq!(by_backend.len(), 2, "{by_backend:?}");
    assert!(by_backend.values().all(|&n| n >= 4), "{by_backend:?}");
    assert_eq!(backends[0].requests() + backends[1].requests(), 12);
}

#[test]
fn sticky_cookie_keeps_a_client_on_one_backend_and_moves_it_when_that_stops() {
    let (mut backends, dns, target) = two_address_name();
    let http = Http::start(&[
        &target,
        "--resolver",
        "hickory",
        "--name-servers",
        &dns.addr().to_string(),
        "--sticky-cookie",
        "SRV",
    ]);
    // The first answer sets our cookie beside the upstream's own.
    let first = http.get("web.test", "/cookie");
    assert_eq!(first.status, 200, "{}", first.text());
    let home = first.seen().backend;
    assert_eq!(
        set_cookie(&first, "backend"),
        Some(format!("backend={home}; Path=/").as_str()),
        "{:?}",
        first.headers
    );
    let ours = set_cookie(&first, "SRV")
        .expect("the sticky cookie")
        .to_owned();
    assert!(ours.ends_with("; Path=/; HttpOnly"), "{ours}");
    let cookie = ours.split(';').next().unwrap().to_owned();

    let with_cookie = |cookie: &str| {
        let request = format!(
            "GET /s HTTP/1.1\r\nHost: web.test\r\nCookie: a=1; {cookie}\r\nConnection: close\r\n\r\n"
        );
        raw(http.addr, request.as_bytes())
    };
    for _ in 0..6 {
        let response = with_cookie(&cookie);
        assert_eq!(response.seen().backend, home, "round-robin would alternate");
        assert_eq!(set_cookie(&response, "SRV"), None, "the cookie stands");
    }

    // Its backend stops: the client is served by the other one, and told so.
    let i = backends.iter().position(|b| b.name() == home).unwrap();
    drop(backends.remove(i));
    let other = backends[0].name().to_owned();
    let moved = with_cookie(&cookie);
    assert_eq!(moved.status, 200, "{}", moved.text());
    assert_eq!(moved.seen().backend, other);
    let new = set_cookie(&moved, "SRV").expect("a new sticky cookie for the new backend");
    let new_cookie = new.split(';').next().unwrap().to_owned();
    assert_ne!(new_cookie, cookie);
    for _ in 0..3 {
        let response = with_cookie(&new_cookie);
        assert_eq!(response.seen().backend, other);
        assert_eq!(set_cookie(&response, "SRV"), None);
    }
}

#[test]
fn sequential_requests_share_pooled_upstream_connections() {
    let backend = Backend::start("pooled");
    let http = Http::start(&[&backend.addr().to_string()]);
    let mut connections = std::collections::BTreeSet::new();
    for i in 0..30 {
        // Each on a client connection of its own (Connection: close); answers without a
        // body (204, 304, HEAD's) among them give their connection back too.
        connections.insert(http.seen("pool", &format!("/{i}")).connection);
        match i % 3 {
            0 => assert_eq!(http.get("pool", "/status/204").status, 204),
            1 => assert_eq!(http.get("pool", "/status/304").status, 304),
            _ => {
                let head = b"HEAD /h HTTP/1.1\r\nHost: pool\r\nConnection: close\r\n\r\n";
                let got = raw_exchange(http.addr, head, PROMPT);
                assert!(got.starts_with(b"HTTP/1.1 200 "), "{got:?}");
            }
        }
    }
    assert_eq!(backend.requests(), 60);
    assert!(
        backend.connections() <= 3,
        "{} upstream connections for 60 requests ({connections:?})",
        backend.connections()
    );
}

// ===== failures =====

#[test]
fn upstream_failures_get_502_503_504_and_the_next_request_is_served() {
    let backend = Backend::start("ok");
    let dns = Dnsmasq::start(&hosts_config("", &["test"]));
    let b = backend.addr();
    let http = Http::start(&[
        &b.to_string(),
        "--route",
        &format!("/refused={}", closed_port()),
        "--route",
        &format!("/never={b}"),
        "--route",
        // A route's own request_timeout wins over the flag's.
        &format!("patient.example/never={b};request_timeout=2s"),
        "--route",
        &format!("/reset={b}"),
        "--route",
        "/nx=nx.test:80",
        "--resolver",
        "hickory",
        "--name-servers",
        &dns.addr().to_string(),
        "--request-timeout",
        "1s",
    ]);
    let cases = [
        ("fail.example", "/refused", 502, "could not be reached"),
        ("fail.example", "/never", 504, "did not answer in time"),
        ("patient.example", "/never", 504, "did not answer in time"),
        ("fail.example", "/reset", 502, "failed to answer"),
        ("fail.example", "/nx/x", 503, "no endpoints"),
    ];
    for (host, path, status, text) in cases {
        let started = Instant::now();
        let response = http.get(host, path);
        assert_eq!(response.status, status, "{path}: {}", response.text());
        assert!(
            response.text().contains(text),
            "{path}: {}",
            response.text()
        );
        assert!(
            !response.text().contains("127.0.0.1"),
            "no upstream address to clients"
        );
        let waited = started.elapsed();
        match (host, path) {
            ("fail.example", "/never") => assert!(waited >= Duration::from_millis(900)),
            ("patient.example", _) => assert!(waited >= Duration::from_millis(1900)),
            _ => {}
        }
        assert_eq!(
            http.seen("fail.example", "/after").backend,
            "ok",
            "after {path}"
        );
    }
    let warned = http
        .proxy
        .find_line(PROMPT, |l| l.contains("upstream failed"));
    assert!(warned.is_some(), "{}", http.proxy.stderr());
}

#[test]
fn client_errors_get_413_431_400_and_the_next_request_is_served() {
    let backend = Backend::start("ok");
    let http = Http::start(&[
        "--route",
        &format!("app.example/={}", backend.addr()),
        "--max-request-body",
        "1K",
        "--max-header-size",
        "1K",
    ]);
    let ok = || assert_eq!(http.seen("app.example", "/ok").backend, "ok");
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, len| {
        let path = dir.path().join(name);
        std::fs::write(&path, payload(len as u64, len)).unwrap();
        format!("@{}", path.display())
    };
    let (fits, over) = (file("fits", 1024), file("over", 4000));
    let url = http.url("/upload");
    let host = ["-H", "Host: app.example"];

    assert_eq!(
        curl_status(&[&host[..], &["--data-binary", &fits, &url]].concat()),
        200
    );
    // Over the limit by its Content-Length, and as a chunked body streams.
    assert_eq!(
        curl_status(&[&host[..], &["--data-binary", &over, &url]].concat()),
        413
    );
    ok();
    let chunked = [
        "-H",
        "Transfer-Encoding: chunked",
        "--data-binary",
        &over,
        &url,
    ];
    assert_eq!(curl_status(&[&host[..], &chunked].concat()), 413);
    ok();
    let fits_chunked = [
        "-H",
        "Transfer-Encoding: chunked",
        "--data-binary",
        &fits,
        &url,
    ];
    assert_eq!(curl_status(&[&host[..], &fits_chunked].concat()), 200);

    // A head over --max-header-size.
    let big = format!(
        "GET / HTTP/1.1\r\nHost: app.example\r\nX-Big: {}\r\n\r\n",
        "b".repeat(2000)
    );
    assert_eq!(raw(http.addr, big.as_bytes()).status, 431);
    ok();
    // Malformed requests.
    for bad in [
        &b"NOT HTTP AT ALL\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: app.example\r\nBad Header\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: app.example\r\nX: \x01\x02\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: app.example\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        // One Host, no more, no less (RFC 9112 §3.2): two could route by one and reach
        // the upstream as the other.
        b"GET / HTTP/1.1\r\nHost: app.example\r\nHost: other.example\r\nConnection: close\r\n\r\n",
        b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n",
    ] {
        let response = raw(http.addr, bad);
        assert_eq!(response.status, 400, "{:?}", String::from_utf8_lossy(bad));
        ok();
    }
    assert_eq!(
        backend.requests(),
        11,
        "none of the bad requests reached the upstream, only the good ones"
    );
}

#[test]
fn slow_clients_are_cut_off_at_the_header_timeout_while_others_are_served() {
    let backend = Backend::start("ok");
    let http = Http::start(&[&backend.addr().to_string(), "--header-timeout", "1s"]);
    let addr = http.addr;
    // Three slowloris clients: a request head a few bytes every 200 ms, never finished.
    let slow: Vec<_> = (0..3)
        .map(|i| {
            thread::spawn(move || {
                let started = Instant::now();
                let mut s = TcpStream::connect(addr).unwrap();
                s.set_read_timeout(Some(Duration::from_millis(200)))
                    .unwrap();
                s.write_all(b"GET /slow HTTP/1.1\r\nHost: slow\r\n")
                    .unwrap();
                let mut got = Vec::new();
                for n in 0..100 {
                    if s.write_all(format!("X-{i}-{n}: y\r\n").as_bytes()).is_err() {
                        return (started.elapsed(), got);
                    }
                    let mut buf = [0; 1024];
                    match s.read(&mut buf) {
                        Ok(0) => return (started.elapsed(), got),
                        Ok(k) => got.extend_from_slice(&buf[..k]),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(e) if e.kind() == io::ErrorKind::TimedOut => {}
                        Err(_) => return (started.elapsed(), got),
                    }
                }
                panic!("a slow client was still connected after 100 rounds (20 s)");
            })
        })
        .collect();
    for i in 0..5 {
        assert_eq!(http.seen("fast", &format!("/{i}")).backend, "ok");
    }
    for t in slow {
        let (lasted, got) = t.join().unwrap();
        assert!(
            lasted >= Duration::from_millis(900) && lasted < Duration::from_secs(8),
            "a slow client lasted {lasted:?}"
        );
        assert!(
            !String::from_utf8_lossy(&got).contains(" 200 "),
            "{:?}",
            String::from_utf8_lossy(&got)
        );
    }
    assert_eq!(
        backend.requests(),
        5,
        "slow heads never reached the upstream"
    );
    assert_eq!(http.seen("fast", "/after").backend, "ok");
}

// ===== retries =====

/// A keep-alive upstream that answers the first request of each connection and closes
/// the connection, unanswered, when a second request comes on it: the race with a
/// server's keep-alive timeout. Counts its connections.
fn closes_on_second_request() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let n = counted.fetch_add(1, Ordering::SeqCst) + 1;
            thread::spawn(move || {
                conn.set_read_timeout(Some(PROMPT)).unwrap();
                if read_head(&mut conn).is_none() {
                    return;
                }
                let body = format!("conn {n}");
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                if conn.write_all(answer.as_bytes()).is_err() {
                    return;
                }
                // The next request's head, then a close without an answer.
                let _ = read_head(&mut conn);
            });
        }
    });
    (addr, connections)
}

/// Reads up to the end of a request head; `None` at EOF first.
fn read_head(conn: &mut TcpStream) -> Option<Vec<u8>> {
    let mut head = Vec::new();
    let mut byte = [0];
    while !head.ends_with(b"\r\n\r\n") {
        match conn.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
    }
    Some(head)
}

#[test]
fn an_idempotent_request_on_a_pooled_connection_the_upstream_closed_is_retried() {
    let (upstream, connections) = closes_on_second_request();
    // One worker thread: one pool of upstream connections, so the counts below are exact.
    let http = Http::start(&[&upstream.to_string(), "--threads", "1"]);
    let first = http.get("retry", "/1");
    assert_eq!((first.status, first.text().as_str()), (200, "conn 1"));
    // Sent on the pooled connection, which the upstream closes: tried again on a new one.
    let second = http.get("retry", "/2");
    assert_eq!((second.status, second.text().as_str()), (200, "conn 2"));
    assert_eq!(connections.load(Ordering::SeqCst), 2);
    // A POST is not sent twice.
    let post = raw(
        http.addr,
        b"POST /3 HTTP/1.1\r\nHost: retry\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi",
    );
    assert_eq!(post.status, 502, "{}", post.text());
    assert_eq!(http.get("retry", "/4").text(), "conn 3");

    // --retries 0: the closed connection's GET fails.
    let (upstream, _) = closes_on_second_request();
    let no_retries = Http::start(&[&upstream.to_string(), "--retries", "0", "--threads", "1"]);
    assert_eq!(no_retries.get("retry", "/1").status, 200);
    assert_eq!(no_retries.get("retry", "/2").status, 502);
    assert_eq!(no_retries.get("retry", "/3").status, 200);
}

#[test]
fn a_backend_restarted_between_requests_is_reconnected_without_an_error() {
    let backend = Backend::start("before");
    let addr = backend.addr();
    let http = Http::start(&[&addr.to_string(), "--threads", "1"]);
    assert_eq!(http.seen("r", "/1").backend, "before");
    drop(backend);
    let backend = Backend::start_on("after", addr).unwrap();
    for i in 2..5 {
        assert_eq!(http.seen("r", &format!("/{i}")).backend, "after");
    }
    assert_eq!(backend.connections(), 1);
}

/// The proxy's threads whose name starts with `prefix`: name and voluntary context
/// switches so far (each a wait for something to do: a worker that serves wakes often).
fn threads_named(pid: u32, prefix: &str) -> Vec<(String, u64)> {
    let mut threads: Vec<(String, u64)> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("list the proxy's threads")
        .filter_map(|t| {
            let dir = t.ok()?.path();
            let name = std::fs::read_to_string(dir.join("comm")).ok()?;
            let status = std::fs::read_to_string(dir.join("status")).ok()?;
            let switches = status
                .lines()
                .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))?
                .trim()
                .parse()
                .ok()?;
            Some((name.trim().to_owned(), switches))
        })
        .filter(|(name, _)| name.starts_with(prefix))
        .collect();
    threads.sort();
    threads
}

#[test]
fn worker_threads_each_accept_their_share_and_keep_their_upstream_connections() {
    let backend = Backend::start("w");
    let http = Http::start(&[&backend.addr().to_string(), "--threads", "2"]);
    // A new thread names itself once it runs: wait for both names.
    let pid = http.proxy.pid();
    wait_until("both workers named", Duration::from_secs(10), || {
        threads_named(pid, "proxy-worker-").len() == 2
    });
    let before = threads_named(pid, "proxy-worker-");
    let names: Vec<&str> = before.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["proxy-worker-0", "proxy-worker-1"]);

    // 16 clients at once, each with 20 pipelined requests on one kept-alive connection.
    const CLIENTS: usize = 16;
    const REQUESTS: usize = 20;
    std::thread::scope(|s| {
        for c in 0..CLIENTS {
            let addr = http.addr;
            s.spawn(move || {
                let mut requests = String::new();
                for r in 0..REQUESTS {
                    let close = if r + 1 == REQUESTS {
                        "Connection: close\r\n"
                    } else {
                        ""
                    };
                    requests.push_str(&format!("GET /{c}/{r} HTTP/1.1\r\nHost: w\r\n{close}\r\n"));
                }
                let raw = raw_exchange(addr, requests.as_bytes(), PROMPT);
                let answers = Response::parse_many(&raw).unwrap();
                let paths: Vec<String> = answers.iter().map(|a| a.seen().uri).collect();
                let want: Vec<String> = (0..REQUESTS).map(|r| format!("/{c}/{r}")).collect();
                assert_eq!(paths, want, "client {c}");
            });
        }
    });
    assert_eq!(backend.requests(), (CLIENTS * REQUESTS) as u64);
    // The kernel spread the clients over both workers' sockets, and each served its own.
    let after = threads_named(http.proxy.pid(), "proxy-worker-");
    for ((name, was), (_, is)) in before.iter().zip(&after) {
        assert!(
            is - was >= 10,
            "{name} woke {} times: it served no client",
            is - was
        );
    }
    // No more upstream connections than requests in flight at once, and those are kept:
    // new clients, one request each, reuse them whichever worker they land on.
    let opened = backend.connections();
    assert!(opened <= CLIENTS as u64, "{opened} upstream connections");
    for i in 0..20 {
        assert_eq!(http.seen("w", &format!("/again/{i}")).backend, "w");
    }
    assert_eq!(backend.connections(), opened, "a new upstream connection");

    // The port is not shared with another process, although the workers' sockets share it.
    let port = http.addr.port().to_string();
    let target = backend.addr().to_string();
    let args = [
        "http",
        &port,
        &target,
        "--listen",
        "127.0.0.1",
        "--threads",
        "2",
    ];
    let (code, _, err) = run(&args);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!("cannot listen on {}", http.addr)),
        "{err}"
    );
}

// ===== access log and metrics =====

#[test]
fn one_access_log_line_per_request_and_per_route_metrics() {
    let [api, web] = ["api", "web"].map(Backend::start);
    let api_route = format!("/api={}", api.addr());
    let http = Http::start(&[
        &web.addr().to_string(),
        "--route",
        &api_route,
        "--log-format",
        "json",
        "--admin",
        "127.0.0.1:0",
    ]);
    for i in 0..3 {
        assert_eq!(
            http.seen("shop.example", &format!("/api/{i}")).backend,
            "api"
        );
    }
    assert_eq!(http.get("shop.example", "/status/503").status, 503);
    let post = raw(
        http.addr,
        b"POST /echo HTTP/1.1\r\nHost: shop.example\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
    );
    assert_eq!((post.status, post.text().as_str()), (200, "hello"));

    let lines = http
        .proxy
        .wait_stderr(PROMPT, |lines| {
            let access: Vec<serde_json::Value> = (lines.iter())
                .filter(|l| l.contains("proxy_http::access"))
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            (access.len() >= 5).then_some(access)
        })
        .unwrap_or_else(|| panic!("no 5 access lines:\n{}", http.proxy.stderr()));
    assert_eq!(lines.len(), 5, "one line per request");
    let field = |line: &serde_json::Value, key: &str| {
        line.get(key)
            .or_else(|| line.get("fields").and_then(|f| f.get(key)))
            .cloned()
            .unwrap_or_else(|| panic!("no {key} in {line}"))
    };
    let first = &lines[0];
    assert_eq!(field(first, "method"), "GET");
    assert_eq!(field(first, "host"), "shop.example");
    assert_eq!(field(first, "path"), "/api/0");
    assert_eq!(field(first, "status"), 200);
    assert_eq!(field(first, "route"), api_route.as_str());
    assert_eq!(field(first, "upstream"), api.addr().to_string().as_str());
    assert_eq!(field(first, "complete"), true);
    assert_eq!(field(first, "bytes_in"), 0);
    assert!(field(first, "bytes_out").as_u64().unwrap() > 50, "{first}");
    // Milliseconds to the microsecond: `7.299`, not `7.2992609999999996`.
    let duration = field(first, "duration_ms");
    assert!(duration.as_f64().unwrap() >= 0.0, "{first}");
    let decimals = duration.to_string().split('.').nth(1).map_or(0, str::len);
    assert!(decimals <= 3, "{first}");
    assert!(
        (field(first, "client").as_str().unwrap()).starts_with("127.0.0.1:"),
        "{first}"
    );
    assert_eq!(field(&lines[3], "status"), 503);
    assert_eq!(
        field(&lines[3], "route"),
        format!("/={}", web.addr()).as_str()
    );
    let echo = &lines[4];
    assert_eq!(field(echo, "method"), "POST");
    assert_eq!(
        (field(echo, "bytes_in"), field(echo, "bytes_out")),
        (5.into(), 5.into())
    );
    assert_eq!(field(echo, "route"), format!("/={}", web.addr()).as_str());

    let metrics = get(admin_addr(&http.proxy), "/metrics");
    assert_eq!(metrics.status, 200);
    let labels = format!(
        "forward=\"http:{}\",route=\"{api_route}\"",
        http.addr.port()
    );
    let has = |line: String| {
        assert!(
            metrics.body.lines().any(|l| l == line),
            "no `{line}` in:\n{}",
            metrics.body
        );
    };
    has(format!(
        "proxy_http_requests_total{{{labels},code=\"2xx\"}} 3"
    ));
    has(format!(
        "proxy_http_requests_total{{{labels},code=\"5xx\"}} 0"
    ));
    has(format!(
        "proxy_http_requests_total{{{labels},code=\"4xx\"}} 0"
    ));
    has(format!(
        "proxy_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} 3"
    ));
    has(format!(
        "proxy_http_request_duration_seconds_count{{{labels}}} 3"
    ));
    let web_labels = format!(
        "forward=\"http:{}\",route=\"/={}\"",
        http.addr.port(),
        web.addr()
    );
    has(format!(
        "proxy_http_requests_total{{{web_labels},code=\"2xx\"}} 1"
    ));
    has(format!(
        "proxy_http_requests_total{{{web_labels},code=\"5xx\"}} 1"
    ));
    has(format!("proxy_http_request_bytes_total{{{web_labels}}} 5"));
    let out = 5 + "web: status 503\n".len();
    has(format!(
        "proxy_http_response_bytes_total{{{web_labels}}} {out}"
    ));
}

// ===== TLS termination =====

/// curl over https to `NAME:PORT` (resolved to the proxy, trusting `ca`) for each of
/// `paths`, with `extra` arguments; each upstream's [`Seen`] and how many connections curl
/// opened for it (0: the one before was kept alive). Fails the test when curl fails.
#[track_caller]
fn curl_https(
    http: &Http,
    name: &str,
    ca: &std::path::Path,
    paths: &[&str],
    extra: &[&str],
) -> Vec<(Seen, u32)> {
    let port = http.addr.port();
    let resolve = format!("{name}:{port}:127.0.0.1");
    let mut args = vec!["--cacert", ca.to_str().unwrap(), "--resolve", &resolve];
    args.extend_from_slice(&["--write-out", "\n%{num_connects}\n"]);
    args.extend_from_slice(extra);
    let urls: Vec<String> = (paths.iter())
        .map(|p| format!("https://{name}:{port}{p}"))
        .collect();
    args.extend(urls.iter().map(String::as_str));
    let (out, err) = curl(&args);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2 * paths.len(), "{out}\n{err}");
    (lines.chunks(2))
        .map(|pair| {
            let seen = Seen::parse(pair[0].as_bytes()).unwrap();
            (seen, pair[1].trim().parse().unwrap())
        })
        .collect()
}

/// The upstream heard the client came over https, for `host`.
#[track_caller]
fn assert_forwarded_https(seen: &Seen, host: &str) {
    assert_eq!(seen.header("x-forwarded-proto"), Some("https"), "{seen:?}");
    let forwarded = seen.header("forwarded").unwrap_or_default();
    assert_eq!(
        forwarded,
        format!("for=127.0.0.1;host=\"{host}\";proto=https"),
        "{seen:?}"
    );
}

/// The JSON access-log lines so far, once there are `n`.
fn access_lines(proxy: &Proxy, n: usize) -> Vec<serde_json::Value> {
    proxy
        .wait_stderr(PROMPT, |lines| {
            let access: Vec<serde_json::Value> = (lines.iter())
                .filter(|l| l.contains("proxy_http::access"))
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            (access.len() >= n).then_some(access)
        })
        .unwrap_or_else(|| panic!("no {n} access lines:\n{}", proxy.stderr()))
}

/// A field of a JSON log line (at the top or under `fields`); null when absent.
fn json_field<'a>(line: &'a serde_json::Value, key: &str) -> &'a serde_json::Value {
    (line.get(key))
        .or_else(|| line.get("fields").and_then(|f| f.get(key)))
        .unwrap_or(&serde_json::Value::Null)
}

#[test]
fn curl_over_https_keeps_alive_and_upstreams_hear_https_and_the_log_says_tls() {
    let ca = proxy_testkit::tls::Ca::new("test-ca");
    let server = ca.server(&["shop.example"]);
    let backend = Backend::start("web");
    let http = Http::start(&[
        &backend.addr().to_string(),
        "--tls-cert",
        server.cert.to_str().unwrap(),
        "--tls-key",
        server.key.to_str().unwrap(),
        "--log-format",
        "json",
    ]);
    let got = curl_https(&http, "shop.example", &ca.cert, &["/a?x=1", "/b"], &[]);
    let host = format!("shop.example:{}", http.addr.port());
    for (seen, _) in &got {
        assert_forwarded_https(seen, &host);
        assert_eq!(seen.header("x-forwarded-host"), Some(host.as_str()));
    }
    assert_eq!(
        (got[0].0.uri.as_str(), got[1].0.uri.as_str()),
        ("/a?x=1", "/b")
    );
    assert_eq!(
        (got[0].1, got[1].1),
        (1, 0),
        "one TLS connection, kept alive"
    );

    // Plain HTTP to the TLS port: no answer, the connection closed; the next is served.
    let (bytes, end) = proxy_testkit::http::raw_exchange_end(
        http.addr,
        b"GET / HTTP/1.1\r\nHost: shop.example\r\n\r\n",
        PROMPT,
    );
    assert!(end.is_some(), "closed, not left open");
    assert!(!bytes.starts_with(b"HTTP/"), "{bytes:?}");
    let got = curl_https(
        &http,
        "shop.example",
        &ca.cert,
        &["/c"],
        &["--tlsv1.2", "--tls-max", "1.2"],
    );
    assert_forwarded_https(&got[0].0, &host);
    assert_eq!(backend.requests(), 3);

    let lines = access_lines(&http.proxy, 3);
    assert_eq!(
        lines.len(),
        3,
        "one line per request, none for the plain one"
    );
    for (line, version) in lines.iter().zip(["TLSv1.3", "TLSv1.3", "TLSv1.2"]) {
        assert_eq!(json_field(line, "tls"), version, "{line}");
        assert_eq!(json_field(line, "sni"), "shop.example", "{line}");
        assert_eq!(
            json_field(line, "client_cn"),
            &serde_json::Value::Null,
            "{line}"
        );
        assert_eq!(json_field(line, "status"), 200, "{line}");
    }
}

#[test]
fn a_tls_dir_serves_each_name_its_certificate_and_routes_by_host_as_ever() {
    let ca = proxy_testkit::tls::Ca::new("test-ca");
    let dir = tempfile::tempdir().unwrap();
    for (file, names) in [
        ("shop.pem", &["shop.example"][..]),
        ("api.pem", &["api.example", "*.api.example"][..]),
    ] {
        std::fs::copy(ca.server(names).combined, dir.path().join(file)).unwrap();
    }
    let [shop, api] = ["shop", "api"].map(Backend::start);
    let api_route = format!("api.example/={}", api.addr());
    let http = Http::start(&[
        &shop.addr().to_string(),
        "--route",
        &api_route,
        "--tls-dir",
        dir.path().to_str().unwrap(),
    ]);
    let presented = |name| proxy_testkit::tls::presented_name(http.addr, name).unwrap();
    assert_eq!(presented(Some("shop.example")), "shop.example");
    assert_eq!(presented(Some("api.example")), "api.example");
    assert_eq!(presented(Some("v2.api.example")), "api.example");
    // No name, or one no certificate has: the directory's first (by file name).
    assert_eq!(presented(None), "api.example");
    assert_eq!(presented(Some("other.example")), "api.example");

    // curl checks each certificate against the name it asked for.
    let got = curl_https(&http, "shop.example", &ca.cert, &["/"], &[]);
    assert_eq!(got[0].0.backend, "shop");
    let got = curl_https(&http, "api.example", &ca.cert, &["/v1"], &[]);
    assert_eq!(
        (got[0].0.backend.as_str(), got[0].0.uri.as_str()),
        ("api", "/v1")
    );
    assert_forwarded_https(&got[0].0, &format!("api.example:{}", http.addr.port()));
}

#[test]
fn a_tls_client_ca_requires_client_certificates_and_logs_their_names() {
    let ca = proxy_testkit::tls::Ca::new("test-ca");
    let server = ca.server(&["shop.example"]);
    let alice = ca.client("alice");
    let stranger = proxy_testkit::tls::Ca::new("other-ca").client("mallory");
    let backend = Backend::start("web");
    let http = Http::start(&[
        &backend.addr().to_string(),
        "--tls-cert",
        server.cert.to_str().unwrap(),
        "--tls-key",
        server.key.to_str().unwrap(),
        "--tls-client-ca",
        ca.cert.to_str().unwrap(),
        "--log-format",
        "json",
    ]);
    let with = |issued: &proxy_testkit::tls::Issued| {
        [
            "--cert".to_owned(),
            issued.cert.display().to_string(),
            "--key".to_owned(),
            issued.key.display().to_string(),
        ]
    };
    let alice_args = with(&alice);
    let alice_args: Vec<&str> = alice_args.iter().map(String::as_str).collect();
    let got = curl_https(&http, "shop.example", &ca.cert, &["/me"], &alice_args);
    assert_eq!(got[0].0.uri, "/me");
    assert_forwarded_https(&got[0].0, &format!("shop.example:{}", http.addr.port()));

    // Without a certificate, or with one another CA signed: no request gets through.
    let program = require_program("curl", &["/usr/bin/curl"], "curl", "a real HTTP client");
    let url = format!("https://shop.example:{}/refused", http.addr.port());
    let resolve = format!("shop.example:{}:127.0.0.1", http.addr.port());
    let stranger_args = with(&stranger);
    for extra in [&[][..], &stranger_args[..]] {
        let mut cmd = Command::new(&program);
        cmd.args(["-sS", "--noproxy", "*", "--max-time", "30", "--cacert"])
            .arg(&ca.cert)
            .args(["--resolve", &resolve])
            .args(extra)
            .arg(&url);
        let (status, out, err) = run_limited(&mut cmd, Duration::from_secs(40));
        assert!(
            status.is_some_and(|s| !s.success() && s.code() != Some(28)),
            "curl {extra:?}: {status:?} (not refused, or timed out)\n{out}\n{err}"
        );
    }
    assert_eq!(backend.requests(), 1);

    let lines = access_lines(&http.proxy, 1);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(json_field(&lines[0], "client_cn"), "alice", "{}", lines[0]);
    assert_eq!(json_field(&lines[0], "sni"), "shop.example", "{}", lines[0]);
    // The listener serves on.
    let got = curl_https(&http, "shop.example", &ca.cert, &["/again"], &alice_args);
    assert_eq!(got[0].0.uri, "/again");
}

#[test]
fn websocket_echo_over_tls() {
    let server = match websocket_echo() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("skipping: {e}");
            return;
        }
    };
    let ca = proxy_testkit::tls::Ca::new("test-ca");
    let cert = ca.server(&["ws.example"]);
    let http = Http::start(&[
        &server.addr().to_string(),
        "--tls-cert",
        cert.cert.to_str().unwrap(),
        "--tls-key",
        cert.key.to_str().unwrap(),
    ]);
    // The testkit's client, trusting the CA through OpenSSL's SSL_CERT_FILE: `wss:` asks
    // for the URL's host by SNI and checks the certificate against it.
    let python = proxy_testkit::http::websockets_python().unwrap();
    let mut cmd = Command::new(python);
    cmd.args(["-c", proxy_testkit::http::WEBSOCKET_CLIENT_SCRIPT])
        .args(["wss://ws.example/chat/tls", "40", &http.addr.to_string()])
        .env("SSL_CERT_FILE", &ca.cert);
    for var in [
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
    ] {
        cmd.env_remove(var);
    }
    let (status, out, err) = run_limited(&mut cmd, Duration::from_secs(60));
    assert!(
        status.is_some_and(|s| s.success()) && out.contains("ok: 40 messages echoed"),
        "{status:?}\n{out}{err}\n{}",
        server.output()
    );
    assert_eq!(
        websocket_opened(&server),
        [("/chat/tls".to_owned(), "ws.example".to_owned())]
    );
}

// ===== TLS origination =====

/// `--route '/PATH=ADDR;upstream_tls=true;upstream_ca=CA;upstream_server_name=NAME'`.
fn tls_route(path: &str, addr: SocketAddr, ca: &std::path::Path, name: &str) -> String {
    format!(
        "{path}={addr};upstream_tls=true;upstream_ca={};upstream_server_name={name}",
        ca.display()
    )
}

/// curl GETs `urls` on one connection; each answer's [`Seen`].
#[track_caller]
fn curl_seen(urls: &[String]) -> Vec<Seen> {
    let mut args = vec!["--write-out", "\n%{http_code}\n"];
    args.extend(urls.iter().map(String::as_str));
    let (out, err) = curl(&args);
    let mut seen = Vec::new();
    let mut body = String::new();
    for line in out.lines() {
        match line.parse::<u16>() {
            Ok(200) => seen.push(Seen::parse(body.as_bytes()).unwrap()),
            Ok(status) => panic!("{status}: {body}\n{err}"),
            Err(_) => body.push_str(&format!("{line}\n")),
        }
        if line.parse::<u16>().is_ok() {
            body.clear();
        }
    }
    assert_eq!(seen.len(), urls.len(), "{out}\n{err}");
    seen
}

#[test]
fn upstream_tls_routes_keep_their_tls_connections_alive_and_send_the_clients_host() {
    let ca = proxy_testkit::tls::Ca::new("upstream-ca");
    let issued = ca.server(&["upstream.example"]);
    // nginx closes connections idle for 1 s: the proxy must not reuse those.
    let nginx = nginx_tls_backend("tls-upstream", &issued.cert, &issued.key, "1s");
    let plain = Backend::start("plain");
    // One worker thread: every client connection takes from one pool.
    let http = Http::start(&[
        "--route",
        &tls_route("/", nginx.addr(), &ca.cert, "upstream.example"),
        "--route",
        &format!("/plain={}", plain.addr()),
        "--threads",
        "1",
    ]);
    let seen = curl_seen(&[http.url("/a?x=1"), http.url("/b")]);
    let host = http.addr.to_string();
    for (seen, uri) in seen.iter().zip(["/a?x=1", "/b"]) {
        assert_eq!(seen.backend, "tls-upstream");
        assert_eq!(seen.uri, uri);
        assert_eq!(
            seen.header("host"),
            Some(host.as_str()),
            "the client's Host"
        );
        assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
        assert_eq!(seen.header("x-tls-server-name"), Some("upstream.example"));
        assert_eq!(seen.header("x-tls-protocol"), Some("TLSv1.3"));
        assert_eq!(seen.header("x-tls-alpn"), Some("http/1.1"));
    }
    assert_eq!(
        seen[0].connection, seen[1].connection,
        "two requests, one upstream TLS connection"
    );
    // On client connections of their own, the pooled TLS connection serves on.
    let again = http.seen("any.example", "/c");
    assert_eq!(again.connection, seen[0].connection);
    assert_eq!(http.seen("any.example", "/plain").backend, "plain");

    // nginx closed the idle connection: a POST (never sent twice) goes on a new one.
    thread::sleep(Duration::from_millis(2500));
    let (out, err) = curl(&["--data-binary", "hello", &http.url("/after-idle")]);
    let after = Seen::parse(out.as_bytes()).unwrap_or_else(|e| panic!("{e}\n{err}"));
    assert_eq!((after.method.as_str(), after.body_bytes), ("POST", 5));
    assert_ne!(after.connection, seen[0].connection, "a new connection");
    let got = curl_seen(&[http.url("/d"), http.url("/e")]);
    assert_eq!(got[0].connection, got[1].connection);

    // The forward's own flags, for TARGET.
    let wide = Http::start(&[
        &nginx.addr().to_string(),
        "--upstream-tls",
        "--upstream-ca",
        ca.cert.to_str().unwrap(),
        "--upstream-server-name",
        "upstream.example",
    ]);
    let seen = wide.seen("wide.example", "/wide");
    assert_eq!(seen.header("host"), Some("wide.example"));
    assert_eq!(seen.header("x-tls-server-name"), Some("upstream.example"));
    let log = http.proxy.stderr();
    assert!(!log.contains("handshake failed"), "{log}");
}

#[test]
fn upstream_certificates_that_do_not_verify_get_502_and_a_log_line_saying_why() {
    let ca = proxy_testkit::tls::Ca::new("upstream-ca");
    let old = ca.expired_server("upstream.example");
    let expired = OpensslServer::with_cert(&old.cert, &old.key);
    let other_name = ca.server(&["other.example"]);
    let wrong_name = OpensslServer::with_cert(&other_name.cert, &other_name.key);
    let stranger_ca = proxy_testkit::tls::Ca::new("stranger-ca");
    let stranger = stranger_ca.server(&["upstream.example"]);
    let untrusted = OpensslServer::with_cert(&stranger.cert, &stranger.key);
    let good = ca.server(&["upstream.example"]);
    let good = OpensslServer::with_cert(&good.cert, &good.key);
    let http = Http::start(&[
        "--route",
        &tls_route("/expired", expired.addr, &ca.cert, "upstream.example"),
        "--route",
        &tls_route("/wrong-name", wrong_name.addr, &ca.cert, "upstream.example"),
        "--route",
        &tls_route("/untrusted", untrusted.addr, &ca.cert, "upstream.example"),
        "--route",
        &tls_route("/good", good.addr, &ca.cert, "upstream.example"),
    ]);
    for (path, addr, says) in [
        (
            "/expired",
            expired.addr,
            "the upstream's certificate has expired",
        ),
        ("/wrong-name", wrong_name.addr, "not valid for name"),
        ("/untrusted", untrusted.addr, "not issued by a trusted CA"),
    ] {
        let response = http.get("any.example", path);
        assert_eq!(response.status, 502, "{path}: {}", response.text());
        let line = http.proxy.expect_line(says, |l| {
            l.contains("upstream TLS handshake failed") && l.contains(&addr.to_string())
        });
        assert!(line.contains(says), "{path}: {line}");
    }
    // s_server -www answers with its session's report: the handshake went through.
    let response = http.get("any.example", "/good");
    assert_eq!(response.status, 200, "{}", response.text());
    assert!(response.text().contains("TLSv1.3"), "{}", response.text());
}

#[test]
fn a_ca_file_that_cannot_be_read_stops_the_start_naming_it() {
    let route = "/=127.0.0.1:9;upstream_tls=true;upstream_ca=/nonexistent/ca.pem";
    let (code, _, stderr) = run(&["http", "0", "--listen", "127.0.0.1", "--route", route]);
    assert_eq!(code, 2, "{stderr}");
    for want in ["/nonexistent/ca.pem", "upstream_ca", "--route"] {
        assert!(stderr.contains(want), "no {want:?} in {stderr}");
    }
    let (code, _, stderr) = run(&[
        "http",
        "0",
        "127.0.0.1:9",
        "--listen",
        "127.0.0.1",
        "--upstream-tls",
        "--upstream-ca",
        "/nonexistent/ca.pem",
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--upstream-ca"), "{stderr}");
    // Without upstream_tls, a route's CA is a mistake said so.
    let route = "/=api.internal:443;upstream_ca=/etc/ca.pem";
    let (code, _, stderr) = run(&["--check", "http", "8080", "--route", route]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("upstream_tls"), "{stderr}");
}

// ===== HTTP/2 over TLS =====

/// curl `--http2` to the TLS forward `http` for `name` (resolved to it, trusting `ca`),
/// with `args` before the URLs.
#[track_caller]
fn curl_h2(http: &Http, name: &str, ca: &std::path::Path, args: &[&str]) -> String {
    let resolve = format!("{name}:{}:127.0.0.1", http.addr.port());
    let mut all = vec!["--cacert", ca.to_str().unwrap(), "--resolve", &resolve];
    all.extend_from_slice(args);
    curl(&all).0
}

#[test]
fn http2_multiplexes_routes_by_authority_and_logs_each_request() {
    let ca = proxy_testkit::tls::Ca::new("test-ca");
    let server = ca.server(&["shop.example", "api.example"]);
    let [shop, api] = ["shop", "api"].map(Backend::start);
    let api_route = format!("api.example/={}", api.addr());
    let http = Http::start(&[
        &shop.addr().to_string(),
        "--route",
        &api_route,
        "--tls-cert",
        server.cert.to_str().unwrap(),
        "--tls-key",
        server.key.to_str().unwrap(),
        "--log-format",
        "json",
    ]);
    let port = http.addr.port();
    // Four slow requests at once, on one connection.
    let files: Vec<TempPath> = (0..4)
        .map(|i| TempPath::new(&format!("{i}.json")))
        .collect();
    let mut args = vec![
        "--http2".to_owned(),
        "-Z".to_owned(),
        "--write-out".to_owned(),
        "%{num_connects} %{http_version} %{http_code}\n".to_owned(),
    ];
    for (i, file) in files.iter().enumerate() {
        args.push(format!("https://shop.example:{port}/slow/800?i={i}"));
        args.extend(["-o".to_owned(), file.path().display().to_string()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let started = Instant::now();
    let out = curl_h2(&http, "shop.example", &ca.cert, &args);
    let took = started.elapsed();
    let mut connects = 0;
    for line in out.lines() {
        let (n, rest) = line.split_once(' ').unwrap();
        assert_eq!(rest, "2 200", "{out}");
        connects += n.parse::<u32>().unwrap();
    }
    assert_eq!((out.lines().count(), connects), (4, 1), "{out}");
    assert!(
        took < Duration::from_millis(3 * 800),
        "one after another: {took:?}"
    );
    let host = format!("shop.example:{port}");
    for (i, file) in files.iter().enumerate() {
        let seen = Seen::parse(file.read().as_bytes()).unwrap();
        assert_eq!(seen.backend, "shop");
        assert_eq!(seen.uri, format!("/slow/800?i={i}"));
        assert_eq!(seen.header("host"), Some(host.as_str()));
        assert_forwarded_https(&seen, &host);
    }

    // `:authority` picks the route.
    let out = curl_h2(
        &http,
        "api.example",
        &ca.cert,
        &["--http2", &format!("https://api.example:{port}/v1?q=2")],
    );
    let seen = Seen::parse(out.as_bytes()).unwrap();
    assert_eq!(
        (seen.backend.as_str(), seen.uri.as_str()),
        ("api", "/v1?q=2")
    );
    assert_forwarded_https(&seen, &format!("api.example:{port}"));

    // A client that offers HTTP/1.1 alone gets it.
    let out = curl_h2(
        &http,
        "shop.example",
        &ca.cert,
        &[
            "--http1.1",
            "-o",
            "/dev/null",
            "--write-out",
            "%{http_version} %{http_code}",
            &format!("https://shop.example:{port}/one"),
        ],
    );
    assert_eq!(out, "1.1 200");

    let lines = access_lines(&http.proxy, 6);
    assert_eq!(lines.len(), 6, "one line per request: {lines:?}");
    for line in &lines {
        assert_eq!(json_field(line, "status"), 200, "{line}");
        assert_eq!(json_field(line, "tls"), "TLSv1.3", "{line}");
        assert_eq!(json_field(line, "complete"), true, "{line}");
    }
    let api_lines: Vec<_> = (lines.iter())
        .filter(|l| json_field(l, "sni") == "api.example")
        .collect();
    assert_eq!(api_lines.len(), 1, "{lines:?}");
    assert_eq!(json_field(api_lines[0], "path"), "/v1");
    assert_eq!(
        json_field(api_lines[0], "route"),
        &serde_json::Value::String(api_route.clone())
    );
}

#[test]
fn a_large_http2_upload_is_echoed_byte_exact_without_being_buffered() {
    let ca = proxy_testkit::tls::Ca::new("test-ca");
    let server = ca.server(&["shop.example"]);
    let backend = Backend::start("echo");
    let http = Http::start(&[
        &backend.addr().to_string(),
        "--tls-cert",
        server.cert.to_str().unwrap(),
        "--tls-key",
        server.key.to_str().unwrap(),
    ]);
    let body = payload(32, 48 << 20);
    let (input, output) = (TempPath::new("in"), TempPath::new("out"));
    std::fs::write(input.path(), &body).unwrap();
    let pid = http.proxy.pid();
    let url = |path: &str| format!("https://shop.example:{}{path}", http.addr.port());
    // One small request first, so what is counted is the body, not the first request.
    let out = curl_h2(&http, "shop.example", &ca.cert, &["--http2", &url("/")]);
    assert_eq!(Seen::parse(out.as_bytes()).unwrap().backend, "echo");
    let before = proc_status_kib(pid, "VmHWM");
    let upload = format!("@{}", input.path().display());
    let out = curl_h2(
        &http,
        "shop.example",
        &ca.cert,
        &[
            "--http2",
            "--write-out",
            "%{http_version} %{http_code}",
            "-H",
            "Content-Type: application/octet-stream",
            "--data-binary",
            &upload,
            "-o",
            output.path().to_str().unwrap(),
            &url("/echo"),
        ],
    );
    assert_eq!(out, "2 200");
    let after = proc_status_kib(pid, "VmHWM");
    let got = std::fs::read(output.path()).unwrap();
    proxy_testkit::data::assert_bytes("48 MiB echo over HTTP/2", &got, &body);
    // Buffering the body would take 48 MiB at least; streaming takes the flow-control
    // windows and a few buffers.
    assert!(
        after < before + 24 * 1024,
        "the proxy's peak RSS went from {before} KiB to {after} KiB"
    );
}

// ===== proxy run --config =====

fn http_forward(routes: &[String]) -> String {
    let routes: Vec<String> = routes.iter().map(|r| format!("\"{r}\"")).collect();
    format!(
        "[defaults]\ndrain = \"2s\"\n\n[[forward]]\nname = \"web\"\nprotocol = \"http\"\n\
         listen = \"127.0.0.1:0\"\nroute = [{}]\n",
        routes.join(", ")
    )
}

/// Sends SIGHUP and waits for the reload's outcome line, the `n`th.
fn reload(proxy: &Proxy, n: usize) {
    proxy.signal("HUP");
    wait_until("a reload line", PROMPT, || {
        proxy.count_lines(|l| l.contains("reloaded") || l.contains("reload rejected")) >= n
    });
}

#[test]
fn run_config_serves_http_routes_and_sighup_changes_them_in_place() {
    let [a, shop, c] = ["a", "shop", "c"].map(Backend::start);
    let file = TempPath::new("http-run.toml");
    file.write(&http_forward(&[
        format!("/a={}", a.addr()),
        format!("shop.example/={}", shop.addr()),
    ]));
    // One worker thread: one pool of upstream connections, counted below.
    let config = file.path().to_str().unwrap();
    let proxy = Proxy::start(&["run", "--config", config, "--threads", "1"]);
    let addr = forwarding_addr(&proxy);
    let seen = |host, path| {
        let response = http_get(addr, host, path);
        (
            response.status,
            (response.status == 200).then(|| response.seen().backend),
        )
    };
    assert_eq!(seen("any", "/a/1"), (200, Some("a".to_owned())));
    assert_eq!(seen("shop.example", "/x"), (200, Some("shop".to_owned())));
    assert_eq!(seen("any", "/c"), (404, None));

    // /a goes, /c comes; the shop route is unchanged.
    file.write(&http_forward(&[
        format!("/c={}", c.addr()),
        format!("shop.example/={}", shop.addr()),
    ]));
    reload(&proxy, 1);
    assert!(proxy.stderr().contains("reloaded"), "{}", proxy.stderr());
    assert_eq!(seen("any", "/a/1"), (404, None));
    assert_eq!(seen("any", "/c/1"), (200, Some("c".to_owned())));
    assert_eq!(seen("shop.example", "/x"), (200, Some("shop".to_owned())));
    assert_eq!(
        shop.connections(),
        1,
        "the unchanged route kept its upstream connection"
    );
    assert_eq!(
        proxy.count_lines(|l| l.contains("Forwarding from ")),
        1,
        "changed in place, not restarted"
    );

    // A bad file is rejected and the routes stay.
    file.write(&http_forward(&["shop.example=web".to_owned()]));
    reload(&proxy, 2);
    let rejected = proxy.expect_line("a rejected reload", |l| l.contains("reload rejected"));
    assert!(rejected.contains("shop.example=web"), "{rejected}");
    assert_eq!(seen("any", "/c/2"), (200, Some("c".to_owned())));
    assert_eq!(seen("shop.example", "/y"), (200, Some("shop".to_owned())));
}

// ===== drain =====

#[test]
fn sigterm_lets_a_slow_request_finish_refuses_new_connections_and_exits_0() {
    let backend = Backend::start("slow");
    let mut http = Http::start(&[&backend.addr().to_string(), "--drain", "20s"]);
    let addr = http.addr;
    // A kept-alive client connection, idle after its answer.
    let mut idle = TcpStream::connect(addr).unwrap();
    idle.set_read_timeout(Some(PROMPT)).unwrap();
    idle.write_all(b"GET /idle HTTP/1.1\r\nHost: drain\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0; 4096];
    for _ in 0..100 {
        if Response::parse(&got).is_ok() {
            break;
        }
        let n = idle.read(&mut buf).unwrap();
        assert!(n > 0, "the idle connection closed before its answer");
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(Response::parse(&got).unwrap().status, 200);

    let slow = thread::spawn(move || http_get(addr, "drain", "/slow/2000"));
    wait_until("the slow request upstream", PROMPT, || {
        backend.requests() >= 2
    });
    http.proxy.signal("TERM");
    wait_until("new connections refused", PROMPT, || {
        TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err()
    });
    // The idle connection is closed at once, not held for the drain time.
    match idle.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
        other => panic!("the idle connection: {other:?}"),
    }
    let response = slow.join().unwrap();
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.seen().uri, "/slow/2000");
    // Well before the 20 s drain: nothing else was in flight.
    let status = http.proxy.wait_exit(PROMPT);
    assert_eq!(status.code(), Some(0), "{}", http.proxy.stderr());
}

// ===== --check =====

#[test]
fn check_accepts_good_http_command_lines_and_names_what_is_wrong_in_bad_ones() {
    let good: [&[&str]; 3] = [
        &["--check", "http", "8080", "web.default"],
        &[
            "--check",
            "http",
            "8080",
            "--route",
            "shop.example/=shop:80",
            "--route",
            "*.apps.example/api=api:8080;balance=least-connections;request_timeout=5s",
            "--sticky-cookie",
            "SRV",
            "--max-request-body",
            "8M",
        ],
        &[
            "--check",
            "http",
            "80",
            "web",
            "--header-timeout",
            "10s",
            "--retries",
            "3",
        ],
    ];
    for args in good {
        let (code, stdout, stderr) = run(args);
        assert_eq!(code, 0, "{args:?}: {stderr}");
        assert!(
            stdout.contains("ok: the arguments are valid"),
            "{args:?}: {stdout}"
        );
    }
    let bad: [(&[&str], &[&str]); 6] = [
        (
            &["--check", "http", "8080", "--route", "shop.example=web"],
            &["shop.example=web", "needs a path"],
        ),
        (&["--check", "http", "8080"], &["nowhere to send requests"]),
        (
            &["--check", "http", "8080", "--route", "/api=api;bogus=1"],
            &["bogus"],
        ),
        (
            &[
                "--check",
                "http",
                "8080",
                "web",
                "--max-request-body",
                "lots",
            ],
            &["--max-request-body", "lots"],
        ),
        (
            &["--check", "http", "8080", "web", "--sticky-cookie", "a b"],
            &["--sticky-cookie"],
        ),
        (
            &["--check", "http", "8080", "web", "--max-header-size", "10"],
            &["--max-header-size"],
        ),
    ];
    for (args, wants) in bad {
        let (code, _, stderr) = run(args);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        for want in wants {
            assert!(stderr.contains(want), "{args:?}: no {want:?} in {stderr}");
        }
    }
}
