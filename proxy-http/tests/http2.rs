//! [`HttpForwarder`] serving HTTP/2 to clients that choose it by ALPN over TLS, in
//! process, with curl as the client and the testkit's HTTP/1.1 upstream: what upstreams
//! receive, several requests multiplexed on one connection, large bodies both ways,
//! routing by `:authority`, the proxy's own answers (the same as over HTTP/1.1), a client
//! that offers only HTTP/1.1, and a drain that lets open streams finish.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use proxy_core::ForwardSpec;
use proxy_http::{HttpForwarder, HttpHandle};
use proxy_testkit::data::{assert_bytes, payload};
use proxy_testkit::http::{Backend, Seen, blocking, pattern};
use proxy_testkit::process::{TempPath, require_program, run_limited};
use proxy_testkit::tls::{Ca, Issued, openssl};
use proxy_testkit::wait::{PROMPT, eventually};

/// A forwarder on loopback terminating TLS with a certificate for `names`, and the CA
/// that issued it.
struct Tls {
    handle: HttpHandle,
    addr: SocketAddr,
    ca: Ca,
    _issued: Issued,
}

impl Tls {
    /// Starts one with `routes` and the further settings `extra`.
    fn start(routes: &str, names: &[&str], extra: &[(&str, &str)]) -> Tls {
        let ca = Ca::new("test-ca");
        let issued = ca.server(names);
        let mut spec = ForwardSpec::default();
        spec.set("protocol", "http").unwrap();
        spec.set("listen", "127.0.0.1:0").unwrap();
        spec.set("route", routes).unwrap();
        spec.set("tls_cert", issued.cert.to_str().unwrap()).unwrap();
        spec.set("tls_key", issued.key.to_str().unwrap()).unwrap();
        for (key, value) in extra {
            spec.set(key, value).unwrap();
        }
        let handle = HttpForwarder::new(spec).unwrap().start().unwrap();
        let addr = handle.local_addrs()[0];
        Tls {
            handle,
            addr,
            ca,
            _issued: issued,
        }
    }

    /// `https://NAME:PORT{path}`.
    fn url(&self, name: &str, path: &str) -> String {
        format!("https://{name}:{}{path}", self.addr.port())
    }

    /// Runs curl with `args`, every name of `names` resolved to the forwarder and the CA
    /// trusted; its stdout. Fails the test when curl fails.
    async fn curl(&self, names: &[&str], args: &[&str]) -> String {
        let curl = require_program("curl", &["/usr/bin/curl"], "curl", "a real HTTP/2 client");
        let mut cmd = Command::new(curl);
        cmd.args(["-sS", "--noproxy", "*", "--max-time", "60", "--cacert"])
            .arg(&self.ca.cert);
        for name in names {
            cmd.arg("--resolve")
                .arg(format!("{name}:{}:127.0.0.1", self.addr.port()));
        }
        cmd.args(args);
        let shown = format!("{args:?}");
        let (status, out, err) = blocking(move || run_limited(&mut cmd, PROMPT * 7)).await;
        assert!(
            status.is_some_and(|s| s.success()),
            "curl {shown}: {status:?}\n{out}\n{err}"
        );
        out
    }

    /// `GET url` over `version` (`--http2`, `--http1.1`) with `extra` arguments: the
    /// status, the body, and the HTTP version curl spoke (`2`, `1.1`).
    async fn get(&self, version: &str, url: &str, extra: &[&str]) -> (u16, String, String) {
        let name = url
            .strip_prefix("https://")
            .and_then(|u| u.split(':').next())
            .unwrap();
        let mut args = vec![version, "--write-out", "\n%{http_code} %{http_version}"];
        args.extend_from_slice(extra);
        args.push(url);
        let out = self.curl(&[name], &args).await;
        let (body, last) = out.rsplit_once('\n').unwrap();
        let (code, got_version) = last.split_once(' ').unwrap();
        (
            code.parse().unwrap(),
            body.to_owned(),
            got_version.to_owned(),
        )
    }
}

#[track_caller]
fn seen(body: &str) -> Seen {
    Seen::parse(body.as_bytes()).unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test]
async fn curl_speaks_http2_and_the_upstream_gets_host_path_query_and_https() {
    let backend = Backend::start("web");
    let tls = Tls::start(&format!("/={}", backend.addr()), &["shop.example"], &[]);
    let host = format!("shop.example:{}", tls.addr.port());
    let url = tls.url("shop.example", "/a/b?x=1&y=%20z");
    // Cookie crumbs as HTTP/2 may carry them: one field for the HTTP/1.1 upstream.
    let cookies = ["-H", "Cookie: a=1", "-H", "Cookie: b=2"];
    let (status, body, version) = tls.get("--http2", &url, &cookies).await;
    assert_eq!((status, version.as_str()), (200, "2"), "{body}");
    let got = seen(&body);
    assert_eq!(got.uri, "/a/b?x=1&y=%20z");
    assert_eq!(got.version, "HTTP/1.1", "the upstream side stays HTTP/1.1");
    assert_eq!(got.header("host"), Some(host.as_str()), "{got:?}");
    assert_eq!(got.header("x-forwarded-proto"), Some("https"));
    assert_eq!(got.header("x-forwarded-host"), Some(host.as_str()));
    assert_eq!(
        got.header("forwarded"),
        Some(format!("for=127.0.0.1;host=\"{host}\";proto=https").as_str())
    );
    assert_eq!(got.headers_named("cookie"), ["a=1; b=2"], "{got:?}");

    // A client that offers HTTP/1.1 alone gets it, on the proxy's own path.
    let (status, body, version) = tls.get("--http1.1", &url, &[]).await;
    assert_eq!((status, version.as_str()), (200, "1.1"), "{body}");
    assert_eq!(seen(&body).uri, "/a/b?x=1&y=%20z");

    let route = (tls.handle.routes().into_iter())
        .find(|r| r.route != "-")
        .unwrap();
    assert_eq!(route.by_class[1], 2, "{route:?}");
    assert_eq!(tls.handle.tls_handshakes_failed(), 0);
    assert!(tls.handle.shutdown(Duration::from_secs(5)).await);
}

#[tokio::test]
async fn requests_multiplexed_on_one_connection_are_each_answered() {
    let backend = Backend::start("web");
    let tls = Tls::start(&format!("/={}", backend.addr()), &["shop.example"], &[]);
    let n = 12;
    let files: Vec<TempPath> = (0..n)
        .map(|i| TempPath::new(&format!("{i}.json")))
        .collect();
    let mut args = vec![
        "--http2".to_owned(),
        "-Z".to_owned(),
        "--write-out".to_owned(),
        "%{num_connects} %{http_version} %{http_code}\n".to_owned(),
    ];
    for (i, file) in files.iter().enumerate() {
        args.push(tls.url("shop.example", &format!("/slow/700?i={i}")));
        args.push("-o".to_owned());
        args.push(file.path().display().to_string());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let started = Instant::now();
    let out = tls.curl(&["shop.example"], &args).await;
    let took = started.elapsed();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), n, "{out}");
    let connects: u32 = (lines.iter())
        .map(|l| {
            let mut fields = l.split(' ');
            let connects = fields.next().unwrap().parse::<u32>().unwrap();
            assert_eq!(
                (fields.next(), fields.next()),
                (Some("2"), Some("200")),
                "{l}"
            );
            connects
        })
        .sum();
    assert_eq!(connects, 1, "one connection for all: {out}");
    let mut connections = Vec::new();
    for (i, file) in files.iter().enumerate() {
        let got = seen(&file.read());
        assert_eq!(got.uri, format!("/slow/700?i={i}"));
        connections.push(got.connection);
    }
    // At once, each on an upstream connection of its own: not one after another.
    assert!(took < Duration::from_millis(700 * 4), "{took:?}");
    connections.sort_unstable();
    connections.dedup();
    assert!(connections.len() > 1, "{connections:?}");
    assert!(tls.handle.shutdown(Duration::from_secs(5)).await);
}

#[tokio::test]
async fn large_bodies_stream_through_intact_both_ways() {
    let backend = Backend::start("web");
    let tls = Tls::start(&format!("/={}", backend.addr()), &["shop.example"], &[]);
    let (sent, echoed, fetched) = (
        TempPath::new("sent"),
        TempPath::new("echoed"),
        TempPath::new("fetched"),
    );
    let (sent, echoed, fetched) = (sent.path(), echoed.path(), fetched.path());
    let len = 8 << 20;
    let data = payload(7, len);
    std::fs::write(sent, &data).unwrap();
    let at = |p: &Path| p.display().to_string();
    let upload = format!("@{}", at(sent));
    let out = tls
        .curl(
            &["shop.example"],
            &[
                "--http2",
                "--write-out",
                "%{http_version} %{http_code}",
                "--data-binary",
                &upload,
                "-H",
                "Content-Type: application/octet-stream",
                "-o",
                &at(echoed),
                &tls.url("shop.example", "/echo"),
            ],
        )
        .await;
    assert_eq!(out, "2 200");
    assert_bytes("the echoed body", &std::fs::read(echoed).unwrap(), &data);

    let out = tls
        .curl(
            &["shop.example"],
            &[
                "--http2",
                "--write-out",
                "%{http_version} %{http_code}",
                "-o",
                &at(fetched),
                &tls.url("shop.example", &format!("/bytes/{len}")),
            ],
        )
        .await;
    assert_eq!(out, "2 200");
    assert_bytes(
        "the fetched body",
        &std::fs::read(fetched).unwrap(),
        &pattern(len),
    );
    assert!(tls.handle.shutdown(Duration::from_secs(5)).await);
}

#[tokio::test]
async fn the_authority_picks_the_route_by_host_and_longest_path() {
    let [shop, api, v2] = ["shop", "api", "v2"].map(Backend::start);
    let routes = format!(
        "api.example/={},api.example/v2={},/={}",
        api.addr(),
        v2.addr(),
        shop.addr()
    );
    let tls = Tls::start(&routes, &["shop.example", "api.example"], &[]);
    for (name, path, backend) in [
        ("api.example", "/v2/items?q=1", "v2"),
        ("api.example", "/v1/items", "api"),
        ("api.example", "/v2x", "api"),
        ("shop.example", "/v2/items", "shop"),
    ] {
        let (status, body, version) = tls.get("--http2", &tls.url(name, path), &[]).await;
        assert_eq!(
            (status, version.as_str()),
            (200, "2"),
            "{name}{path}: {body}"
        );
        let got = seen(&body);
        assert_eq!((got.backend.as_str(), got.uri.as_str()), (backend, path));
        let host = format!("{name}:{}", tls.addr.port());
        assert_eq!(got.header("host"), Some(host.as_str()));
    }
    assert!(tls.handle.shutdown(Duration::from_secs(5)).await);
}

#[tokio::test]
async fn the_proxys_own_answers_are_those_of_http11() {
    let backend = Backend::start("web");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_addr = closed.local_addr().unwrap();
    drop(closed);
    let routes = format!(
        "shop.example/={},shop.example/down={closed_addr}",
        backend.addr()
    );
    let tls = Tls::start(
        &routes,
        &["shop.example", "other.example"],
        &[("max_request_body", "1000"), ("max_header_size", "4096")],
    );
    let big_header = format!("X-Big: {}", "b".repeat(5000));
    let post = "a".repeat(2000);
    let cases: [(&str, &str, Vec<&str>, u16, &str); 4] = [
        (
            "other.example",
            "/",
            vec![],
            404,
            "no route for this host and path",
        ),
        (
            "shop.example",
            "/down",
            vec![],
            502,
            "the upstream could not be reached",
        ),
        (
            "shop.example",
            "/upload",
            vec!["--data-binary", &post],
            413,
            "the request body is larger than 1000 bytes",
        ),
        (
            "shop.example",
            "/",
            vec!["-H", &big_header],
            431,
            "the request head is too large",
        ),
    ];
    for (name, path, extra, status, why) in cases {
        let url = tls.url(name, path);
        let h2 = tls.get("--http2", &url, &extra).await;
        let h1 = tls.get("--http1.1", &url, &extra).await;
        assert_eq!((h2.0, h2.2.as_str()), (status, "2"), "{url}: {}", h2.1);
        assert_eq!((h1.0, h1.2.as_str()), (status, "1.1"), "{url}: {}", h1.1);
        assert_eq!(h2.1, h1.1, "{url}: the same reason");
        assert!(h2.1.ends_with(&format!(": {why}\n")), "{url}: {:?}", h2.1);
    }
    // Every one answered by the proxy: the upstream saw none.
    assert_eq!(backend.requests(), 0);
    assert!(tls.handle.shutdown(Duration::from_secs(5)).await);
}

#[tokio::test]
async fn uploads_answered_before_their_end_still_get_the_answer() {
    // The proxy answers 413 (by Content-Length) and 404 without reading the body; the
    // stream must still end so that the client takes the answer (curl 7.88 drops it when
    // the stream is reset while it still sends).
    let backend = Backend::start("web");
    let routes = format!("shop.example/={}", backend.addr());
    let tls = Tls::start(
        &routes,
        &["shop.example", "other.example"],
        &[("max_request_body", "1000")],
    );
    let post = "p".repeat(20_000);
    for (name, status) in [("shop.example", "413"), ("other.example", "404")] {
        let mut args = vec![
            "--http2",
            "--data-binary",
            &post,
            "--write-out",
            "%{num_connects} %{http_version} %{http_code}\n",
        ];
        let url = tls.url(name, "/upload");
        for _ in 0..25 {
            args.extend_from_slice(&["-o", "/dev/null", &url]);
        }
        let out = tls.curl(&[name], &args).await;
        let want = format!("2 {status}");
        let connects: u32 = (out.lines())
            .map(|l| {
                let (n, rest) = l.split_once(' ').unwrap();
                assert_eq!(rest, want, "{out}");
                n.parse::<u32>().unwrap()
            })
            .sum();
        assert_eq!((out.lines().count(), connects), (25, 1), "{out}");
    }
    assert_eq!(backend.requests(), 0);
    assert!(tls.handle.shutdown(Duration::from_secs(5)).await);
}

/// Opens a TLS connection to `addr` asking for `h2` by ALPN (`openssl s_client`), writes
/// `bytes` on it and keeps it open; how long until the forwarder closed it (at most
/// `PROMPT`).
async fn closed_after(addr: SocketAddr, ca: &Path, bytes: &'static [u8]) -> Duration {
    let mut child = Command::new(openssl())
        .args([
            "s_client",
            "-quiet",
            "-alpn",
            "h2",
            "-servername",
            "shop.example",
        ])
        .args(["-connect", &addr.to_string(), "-CAfile"])
        .arg(ca)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start openssl s_client");
    blocking(move || {
        let started = Instant::now();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(bytes).unwrap();
        stdin.flush().unwrap();
        while started.elapsed() < PROMPT {
            if child.try_wait().unwrap().is_some() {
                return started.elapsed();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("the connection was not closed within {PROMPT:?}");
    })
    .await
}

/// HTTP/2's connection preface and an empty SETTINGS frame: a client that asks nothing.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0";

#[tokio::test]
async fn connections_that_ask_nothing_are_closed_at_the_header_or_idle_timeout() {
    let backend = Backend::start("web");
    let routes = format!("/={}", backend.addr());
    let tls = Tls::start(&routes, &["shop.example"], &[("header_timeout", "400ms")]);
    // Nothing after the TLS handshake, or HTTP/2's preface alone: closed at the header
    // timeout, no request having come.
    for bytes in [&b""[..], PREFACE] {
        let took = closed_after(tls.addr, &tls.ca.cert, bytes).await;
        assert!(took >= Duration::from_millis(300), "{took:?}");
    }
    assert!(tls.handle.shutdown(Duration::from_secs(5)).await);

    // Idle: the GOAWAY's PING unanswered, closed after a second idle timeout.
    let tls = Tls::start(&routes, &["shop.example"], &[("idle_timeout", "400ms")]);
    let took = closed_after(tls.addr, &tls.ca.cert, PREFACE).await;
    assert!(took >= Duration::from_millis(700), "{took:?}");
    // A client that answers is served as long as it asks.
    let (status, _, version) = tls
        .get("--http2", &tls.url("shop.example", "/slow/200"), &[])
        .await;
    assert_eq!((status, version.as_str()), (200, "2"));
    assert!(tls.handle.shutdown(Duration::from_secs(5)).await);
}

#[tokio::test]
async fn a_drain_lets_open_streams_finish_and_refuses_new_connections() {
    let backend = Backend::start("web");
    let tls = Tls::start(&format!("/={}", backend.addr()), &["shop.example"], &[]);
    let mut args = vec![
        "--http2".to_owned(),
        "-Z".to_owned(),
        "--write-out".to_owned(),
        "%{http_version} %{http_code}\n".to_owned(),
    ];
    for i in 0..3 {
        args.push(tls.url("shop.example", &format!("/slow/1500?i={i}")));
        args.push("-o".to_owned());
        args.push("/dev/null".to_owned());
    }
    let tls = std::sync::Arc::new(tls);
    let client = {
        let tls = tls.clone();
        tokio::spawn(async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            tls.curl(&["shop.example"], &args).await
        })
    };
    eventually("the three requests upstream", PROMPT, || {
        backend.requests() == 3
    })
    .await;
    let started = Instant::now();
    assert!(
        tls.handle.shutdown(Duration::from_secs(20)).await,
        "every stream finished within the grace"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    let out = client.await.unwrap();
    assert_eq!(out.trim_end(), "2 200\n2 200\n2 200");
    let refused = tokio::net::TcpStream::connect(tls.addr).await;
    assert!(refused.is_err(), "still accepting: {refused:?}");
}
