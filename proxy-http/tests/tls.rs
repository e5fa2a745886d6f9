//! [`HttpForwarder`] terminating TLS (`tls_cert`, `tls_key`), in process, with real
//! clients (curl, `openssl s_client`) and the testkit's upstream: both serving paths
//! (routes; the hyper one a service proxy forward takes) tell upstreams the client came
//! over https, a reload gives new connections the certificate the files hold then while
//! an open one goes on, and failed handshakes are counted without hurting the listener.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use proxy_core::ForwardSpec;
use proxy_http::{HttpForwarder, HttpHandle};
use proxy_testkit::http::{Backend, Response, Seen, blocking, raw_exchange_end};
use proxy_testkit::process::{TempPath, require_program, run_limited};
use proxy_testkit::tls::{Ca, openssl, presented_name};
use proxy_testkit::wait::{PROMPT, eventually, within};

/// A certificate and key as files the test owns (rewritten to change them).
struct Files {
    cert: TempPath,
    key: TempPath,
}

impl Files {
    fn of(issued: &proxy_testkit::tls::Issued) -> Files {
        let files = Files {
            cert: TempPath::new("cert.pem"),
            key: TempPath::new("key.pem"),
        };
        files.hold(issued);
        files
    }

    /// Rewrites the files with `issued`'s certificate and key.
    fn hold(&self, issued: &proxy_testkit::tls::Issued) {
        let read = |p: &Path| std::fs::read_to_string(p).unwrap();
        self.cert.write(&read(&issued.cert));
        self.key.write(&read(&issued.key));
    }
}

/// An HTTP forward on loopback with `routes`, terminating TLS with `files`.
fn spec(routes: &str, files: &Files) -> ForwardSpec {
    let mut spec = ForwardSpec::default();
    spec.set("protocol", "http").unwrap();
    spec.set("listen", "127.0.0.1:0").unwrap();
    spec.set("route", routes).unwrap();
    spec.set("tls_cert", files.cert.path().to_str().unwrap())
        .unwrap();
    spec.set("tls_key", files.key.path().to_str().unwrap())
        .unwrap();
    spec
}

/// Runs curl over https to `shop.example` (resolved to `addr`, trusting `ca`) for each
/// of `paths`, on one connection when it can; each response's body and how many
/// connections curl opened for it. Fails the test when curl fails.
async fn curl_https(addr: SocketAddr, ca: &Path, paths: &[&str]) -> Vec<(String, u32)> {
    let curl = require_program("curl", &["/usr/bin/curl"], "curl", "a real HTTPS client");
    let mut cmd = Command::new(curl);
    cmd.args(["-sS", "--noproxy", "*", "--max-time", "30", "--cacert"])
        .arg(ca)
        .arg("--resolve")
        .arg(format!("shop.example:{}:127.0.0.1", addr.port()))
        .args(["--write-out", "\n%{num_connects}\n"]);
    for path in paths {
        cmd.arg(format!("https://shop.example:{}{path}", addr.port()));
    }
    let (status, out, err) = blocking(move || run_limited(&mut cmd, PROMPT * 4)).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "curl {paths:?}: {status:?}\n{out}\n{err}"
    );
    // Each body is followed by a line with its count of new connections.
    let mut lines: Vec<&str> = out.lines().collect();
    let mut each = Vec::new();
    while let Some(count) = lines.pop() {
        let body = lines.pop().unwrap_or_else(|| panic!("curl output: {out}"));
        each.push((body.to_owned(), count.trim().parse().unwrap()));
    }
    each.reverse();
    assert_eq!(each.len(), paths.len(), "{out}");
    each
}

#[track_caller]
fn seen(body: &str) -> Seen {
    Seen::parse(body.as_bytes()).unwrap()
}

/// `Forwarded: proto=https` and `X-Forwarded-Proto: https` reached the upstream.
#[track_caller]
fn assert_https(seen: &Seen) {
    assert_eq!(seen.header("x-forwarded-proto"), Some("https"), "{seen:?}");
    let host = seen.header("x-forwarded-host").unwrap_or_default();
    assert!(host.starts_with("shop.example"), "{seen:?}");
    let forwarded = seen
        .header("forwarded")
        .unwrap_or_else(|| panic!("{seen:?}"));
    assert!(forwarded.ends_with(";proto=https"), "{forwarded}");
    assert!(forwarded.starts_with("for=127.0.0.1;"), "{forwarded}");
}

#[tokio::test]
async fn both_serving_paths_tell_upstreams_the_client_came_over_https() {
    let ca = Ca::new("test-ca");
    let files = Files::of(&ca.server(&["shop.example"]));
    let backend = Backend::start("web");
    let routed = spec(&format!("/={}", backend.addr()), &files);
    // A service proxy forward serves its other paths by the routes, through hyper.
    let mut service = routed.clone();
    service.set("service_proxy", "true").unwrap();
    for spec in [routed, service] {
        let handle = HttpForwarder::new(spec).unwrap().start().unwrap();
        let addr = handle.local_addrs()[0];
        let got = curl_https(addr, &ca.cert, &["/one", "/two"]).await;
        let (first, second) = (seen(&got[0].0), seen(&got[1].0));
        assert_eq!((first.uri.as_str(), second.uri.as_str()), ("/one", "/two"));
        assert_https(&first);
        assert_https(&second);
        // Kept alive: curl opened one connection for both.
        assert_eq!((got[0].1, got[1].1), (1, 0), "{got:?}");
        assert_eq!(handle.tls_handshakes_failed(), 0);
        assert!(handle.shutdown(Duration::from_secs(5)).await);
    }
}

/// An `openssl s_client` session to `addr` asking for `shop.example`: HTTP/1.1 requests
/// written to it, responses read back, all on one TLS connection.
struct Session {
    child: Child,
    stdin: ChildStdin,
    out: mpsc::Receiver<Vec<u8>>,
}

impl Session {
    fn open(addr: SocketAddr, ca: &Path) -> Session {
        let mut child = Command::new(openssl())
            .args(["s_client", "-quiet", "-verify_return_error"])
            .args(["-connect", &addr.to_string(), "-servername", "shop.example"])
            .arg("-CAfile")
            .arg(ca)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start openssl s_client");
        let stdin = child.stdin.take().unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let (tx, out) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = vec![0; 16 << 10];
            while let Ok(n @ 1..) = stdout.read(&mut buf) {
                if tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        Session { child, stdin, out }
    }

    /// `GET PATH` with `Host: shop.example`, and its response (on the blocking pool).
    async fn get(mut self, path: &'static str) -> (Session, Response) {
        blocking(move || {
            let response = self.get_now(path);
            (self, response)
        })
        .await
    }

    fn get_now(&mut self, path: &str) -> Response {
        let request = format!("GET {path} HTTP/1.1\r\nHost: shop.example\r\n\r\n");
        self.stdin.write_all(request.as_bytes()).unwrap();
        self.stdin.flush().unwrap();
        let deadline = Instant::now() + PROMPT;
        let mut got = Vec::new();
        loop {
            if let Ok(response) = Response::parse(&got) {
                return response;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.out.recv_timeout(left) {
                Ok(bytes) => got.extend_from_slice(&bytes),
                Err(e) => panic!("GET {path}: {e}: {:?}", String::from_utf8_lossy(&got)),
            }
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn a_reload_gives_new_connections_the_new_certificate_and_open_ones_go_on() {
    let ca = Ca::new("test-ca");
    let files = Files::of(&ca.server(&["shop.example"]));
    let backend = Backend::start("web");
    let spec = spec(&format!("/={}", backend.addr()), &files);
    let handle = HttpForwarder::new(spec.clone()).unwrap().start().unwrap();
    let addr = handle.local_addrs()[0];
    let presented = move || blocking(move || presented_name(addr, Some("shop.example")));
    assert_eq!(presented().await.unwrap(), "shop.example");

    let (session, first) = Session::open(addr, &ca.cert).get("/before").await;
    assert_eq!(first.status, 200);
    assert_https(&first.seen());

    // Renewed: another certificate (its CN says which) for the same name, same files.
    files.hold(&ca.server(&["renewed.example", "shop.example"]));
    handle.reload(&spec).unwrap();
    assert_eq!(presented().await.unwrap(), "renewed.example");
    let (session, after) = session.get("/after").await;
    assert_eq!(after.status, 200, "the open connection goes on");
    assert_eq!(
        after.seen().connection,
        first.seen().connection,
        "one upstream connection, kept alive: {:?}",
        after.seen()
    );
    drop(session);

    // Files that are no certificate: the reload is refused, the last one stays.
    files.cert.write("not a certificate\n");
    let e = handle.reload(&spec).unwrap_err();
    let named = files.cert.path().display().to_string();
    assert!(e.to_string().contains(&named), "{e}");
    assert_eq!(presented().await.unwrap(), "renewed.example");
    assert!(handle.shutdown(Duration::from_secs(5)).await);
}

/// Waits until `handle` has counted `n` failed handshakes.
async fn failed_handshakes(handle: &HttpHandle, n: u64) {
    eventually("the failed handshakes counted", PROMPT, || {
        handle.tls_handshakes_failed() == n
    })
    .await;
}

#[tokio::test]
async fn failed_handshakes_are_counted_and_close_only_their_connection() {
    let ca = Ca::new("test-ca");
    let files = Files::of(&ca.server(&["shop.example"]));
    let backend = Backend::start("web");
    let mut spec = spec(&format!("/={}", backend.addr()), &files);
    spec.set("tls_handshake_timeout", "300ms").unwrap();
    let handle = HttpForwarder::new(spec).unwrap().start().unwrap();
    let addr = handle.local_addrs()[0];

    // Plain HTTP to the TLS port: no HTTP answer, the connection closed at once.
    let (got, end) = blocking(move || {
        raw_exchange_end(
            addr,
            b"GET / HTTP/1.1\r\nHost: shop.example\r\n\r\n",
            PROMPT,
        )
    })
    .await;
    assert!(end.is_some(), "closed, not left hanging");
    assert!(!got.starts_with(b"HTTP/"), "{got:?}");
    failed_handshakes(&handle, 1).await;
    assert_eq!(backend.requests(), 0);

    // A client that says nothing: closed at the handshake timeout.
    let started = Instant::now();
    let (got, end) = blocking(move || raw_exchange_end(addr, b"", PROMPT)).await;
    assert!(end.is_some() && got.is_empty(), "{end:?} {got:?}");
    assert!(started.elapsed() >= Duration::from_millis(250));
    failed_handshakes(&handle, 2).await;

    // The listener serves on.
    let got = within(PROMPT * 4, "curl", curl_https(addr, &ca.cert, &["/ok"])).await;
    assert_https(&seen(&got[0].0));
    assert_eq!(handle.tls_handshakes_failed(), 2);
    assert!(handle.shutdown(Duration::from_secs(5)).await);
}
