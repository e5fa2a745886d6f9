use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use super::*;
use crate::client::End;
use crate::data::assert_bytes;
use crate::net::lo;

/// Reads from `stream` until `done` holds for what was read, within [`PROMPT`].
fn read_until(stream: &mut TcpStream, got: &mut Vec<u8>, done: impl Fn(&[u8]) -> bool) {
    let deadline = Instant::now() + PROMPT;
    let mut buf = [0; 16 << 10];
    while !done(got) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "not done within {PROMPT:?}: {:?}",
            String::from_utf8_lossy(got)
        );
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buf) {
            Ok(0) => panic!("closed early: {:?}", String::from_utf8_lossy(got)),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => panic!("read: {e}: {:?}", String::from_utf8_lossy(got)),
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

// ===== Backend =====

#[test]
fn backend_answers_with_what_it_received() {
    let backend = Backend::start("a");
    let r = http_get(backend.addr(), "example.test", "/some/path?x=1&y=%20");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("content-type"), Some("application/json"));
    let seen = r.seen();
    assert_eq!(seen.backend, "a");
    assert_eq!(seen.method, "GET");
    assert_eq!(seen.uri, "/some/path?x=1&y=%20");
    assert_eq!(seen.version, "HTTP/1.1");
    assert_eq!(seen.header("Host"), Some("example.test"));
    assert_eq!(seen.header("user-agent"), Some("proxy-testkit"));
    assert_eq!(seen.body_bytes, 0);
    assert_eq!(seen.connection, 1);
    assert_eq!(seen.peer.parse::<SocketAddr>().unwrap().ip(), lo(1));
    assert_eq!(
        seen.headers
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>(),
        ["host", "user-agent", "connection"],
        "in the order sent"
    );
    assert_eq!((backend.connections(), backend.requests()), (1, 1));
    assert_eq!(backend.name(), "a");
    assert_eq!(backend.url(), format!("http://{}", backend.addr()));
}

#[test]
fn backend_keeps_connections_alive_and_counts_them() {
    let backend = Backend::start("keep");
    let raw = raw_exchange(
        backend.addr(),
        b"GET /1 HTTP/1.1\r\nHost: h\r\nX-Dup: one\r\nX-Other: x\r\nX-Dup: two\r\n\r\n\
          POST /2 HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello\
          GET /3 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
        PROMPT,
    );
    let all = Response::parse_many(&raw).unwrap();
    let seen: Vec<Seen> = all.iter().map(Response::seen).collect();
    assert_eq!(
        seen.iter().map(|s| s.uri.as_str()).collect::<Vec<_>>(),
        ["/1", "/2", "/3"]
    );
    assert!(seen.iter().all(|s| s.connection == 1), "{seen:?}");
    assert_eq!(seen[0].headers_named("x-dup"), ["one", "two"]);
    assert_eq!((seen[1].method.as_str(), seen[1].body_bytes), ("POST", 5));
    assert_eq!((backend.connections(), backend.requests()), (1, 3));

    let again = http_get(backend.addr(), "h", "/4").seen();
    assert_eq!(again.connection, 2);
    assert_eq!((backend.connections(), backend.requests()), (2, 4));
}

#[test]
fn backend_reads_whole_bodies_of_both_framings() {
    let backend = Backend::start("b");
    let body = vec![b'x'; 300_000];
    let mut request = format!(
        "PUT /up HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(&body);
    let r = Response::parse(&raw_exchange(backend.addr(), &request, PROMPT)).unwrap();
    assert_eq!(r.seen().body_bytes, 300_000);

    let chunked = b"POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\
                    Connection: close\r\n\r\n3\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\n\r\n";
    let r = Response::parse(&raw_exchange(backend.addr(), chunked, PROMPT)).unwrap();
    assert_eq!(r.seen().body_bytes, 19);
}

#[test]
fn backend_status_route() {
    let backend = Backend::start("s");
    let r = http_get(backend.addr(), "h", "/status/503");
    assert_eq!((r.status, r.text().as_str()), (503, "s: status 503\n"));
    let r = http_get(backend.addr(), "h", "/status/204");
    assert_eq!((r.status, r.body.len()), (204, 0));
    assert_eq!(r.header("content-length"), None, "{r:?}");
    assert_eq!(http_get(backend.addr(), "h", "/status/418").status, 418);
    assert_eq!(http_get(backend.addr(), "h", "/status/nope").status, 400);
    assert_eq!(http_get(backend.addr(), "h", "/status/101").status, 400);
}

#[test]
fn backend_slow_route_waits_before_its_headers() {
    let backend = Backend::start("slow");
    let started = Instant::now();
    let r = http_get(backend.addr(), "h", "/slow/300");
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(r.seen().uri, "/slow/300");
    // Nothing at all comes before the delay.
    let (got, end) = raw_exchange_end(
        backend.addr(),
        b"GET /slow/2000 HTTP/1.1\r\nHost: h\r\n\r\n",
        Duration::from_millis(300),
    );
    assert_eq!((got.len(), end), (0, None));
}

#[test]
fn backend_never_answers_until_it_stops() {
    let backend = Backend::start("never");
    let mut stream = TcpStream::connect(backend.addr()).unwrap();
    stream
        .write_all(b"GET /never HTTP/1.1\r\nHost: h\r\n\r\n")
        .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = [0; 64];
    let err = stream.read(&mut buf).expect_err("no answer");
    assert!(is_timeout(&err), "{err}");
    let addr = backend.addr();
    assert_eq!(backend.requests(), 1);
    drop(backend);
    stream.set_read_timeout(Some(PROMPT)).unwrap();
    assert_eq!(
        stream.read(&mut buf).unwrap(),
        0,
        "closed when the backend stops"
    );
    assert!(TcpStream::connect(addr).is_err(), "no longer listening");
}

#[test]
fn backend_reset_route_sends_a_rst() {
    let backend = Backend::start("r");
    let (got, end) = raw_exchange_end(
        backend.addr(),
        b"GET /reset HTTP/1.1\r\nHost: h\r\n\r\n",
        PROMPT,
    );
    assert_eq!((got.len(), end), (0, Some(End::Reset)));
    // The other connections are untouched.
    assert_eq!(http_get(backend.addr(), "h", "/").status, 200);
}

#[test]
fn backend_echo_streams_the_body_back_as_it_arrives() {
    let backend = Backend::start("e");
    let mut stream = TcpStream::connect(backend.addr()).unwrap();
    stream
        .write_all(
            b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Type: application/x-test\r\n\
              Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
        )
        .unwrap();
    let mut got = Vec::new();
    // The first chunk comes back before the request is done.
    read_until(&mut stream, &mut got, |g| contains(g, b"hello"));
    let head = String::from_utf8_lossy(&got).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    assert!(head.contains("content-type: application/x-test"), "{head}");
    stream.write_all(b"6\r\n world\r\n0\r\n\r\n").unwrap();
    read_until(&mut stream, &mut got, |g| g.ends_with(b"0\r\n\r\n"));
    let r = Response::parse(&got).unwrap();
    assert_eq!(r.text(), "hello world");

    // A large body with a Content-Length comes back whole, chunked.
    let body = crate::data::payload(7, 1 << 20);
    let mut request = format!(
        "POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(&body);
    let r = Response::parse(&raw_exchange(backend.addr(), &request, PROMPT)).unwrap();
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    assert_bytes("echo", &r.body, &body);
}

#[test]
fn backend_bytes_route_sends_the_pattern() {
    let backend = Backend::start("bytes");
    let r = http_get(backend.addr(), "h", "/bytes/200003");
    assert_eq!(r.header("content-length"), Some("200003"));
    assert_bytes("/bytes/200003", &r.body, &pattern(200_003));
    assert_eq!(
        pattern(10),
        pattern(100)[..10],
        "a prefix of the same stream"
    );
    assert_eq!(http_get(backend.addr(), "h", "/bytes/0").body.len(), 0);
    assert_eq!(http_get(backend.addr(), "h", "/bytes/x").status, 400);
}

#[test]
fn backend_redirect_and_cookie_routes() {
    let backend = Backend::start("c");
    let r = http_get(backend.addr(), "h", "/redirect?to=%2Fnext%3Fa%3D1");
    assert_eq!((r.status, r.header("location")), (302, Some("/next?a=1")));
    let r = http_get(backend.addr(), "h", "/redirect?x=1&to=http://other.test/");
    assert_eq!(r.header("location"), Some("http://other.test/"));

    let r = http_get(backend.addr(), "h", "/cookie");
    assert_eq!(r.header("set-cookie"), Some("backend=c; Path=/"));
    assert_eq!(r.seen().uri, "/cookie");
}

#[test]
fn backends_share_a_port_on_two_addresses() {
    let backends = Backend::start_same_port(&[("one", lo(1)), ("two", lo(2))]);
    assert_eq!(backends[0].addr().port(), backends[1].addr().port());
    assert_eq!(backends[1].addr().ip(), lo(2));
    for b in &backends {
        assert_eq!(http_get(b.addr(), "h", "/").seen().backend, b.name());
    }
    let taken = Backend::start_on("three", backends[0].addr());
    assert!(taken.is_err(), "the port is taken");
}

#[tokio::test]
async fn backend_serves_an_async_test_through_blocking() {
    let backend = Backend::start("async");
    let addr = backend.addr();
    let r = blocking(move || http_get(addr, "h", "/status/201")).await;
    assert_eq!(r.status, 201);
    // A plain tokio client works as well.
    let mut stream = crate::client::connect(addr).await;
    let got = crate::client::send_and_receive(
        &mut stream,
        b"GET /x HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(Response::parse(&got).unwrap().seen().uri, "/x");
}

// ===== parsing =====

#[test]
fn responses_of_every_framing_parse() {
    let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                4;ext=1\r\nabcd\r\n2\r\nef\r\n0\r\nTrailer: t\r\n\r\n\
                HTTP/1.1 304 Not Modified\r\nETag: x\r\n\r\n\
                HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\nnot\
                HTTP/1.0 200 OK\r\n\r\nto the end";
    let all = Response::parse_many(raw).unwrap();
    assert_eq!(
        all.iter().map(|r| (r.status, r.text())).collect::<Vec<_>>(),
        [
            (200, "abcdef".to_owned()),
            (304, String::new()),
            (404, "not".to_owned()),
            (200, "to the end".to_owned())
        ]
    );
    assert_eq!(all[2].reason, "Not Found");
    assert!(Response::parse(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort").is_err());
    assert!(Response::parse(b"SSH-2.0-x\r\n\r\n").is_err());
    assert!(Response::parse(b"HTTP/1.1 200 OK\r\n").is_err());
}

#[test]
fn seen_parses_lines_and_rejects_other_bodies() {
    let seen = Seen::parse(
        b"backend: n\nmethod: GET\nuri: /a?b\nversion: HTTP/1.1\nconnection: 3\n\
          peer: 127.0.0.1:5000\nbody_bytes: \nheader: host: h:80\nheader: x-forwarded-for: \n",
    )
    .unwrap();
    assert_eq!(seen.header("HOST"), Some("h:80"));
    assert_eq!(seen.header("x-forwarded-for"), None, "empty is absent");
    assert_eq!((seen.connection, seen.body_bytes), (3, 0));
    assert!(Seen::parse(b"ok\n").is_err());
    assert!(Seen::parse(b"{\"backend\": 1}").is_err());
}

#[test]
fn percent_decoding() {
    assert_eq!(percent_decode("%2Fa%3fb=c%"), "/a?b=c%");
    assert_eq!(percent_decode("a%zz+b"), "a%zz+b");
}

// ===== python and nginx =====

#[test]
fn python_backend_answers_the_same_json() {
    let (server, addr) = python_backend("py");
    assert_eq!(server.addr(), addr);
    let raw = raw_exchange(
        addr,
        b"GET /a?b=c HTTP/1.1\r\nHost: h\r\nX-Mixed-Case: v\r\n\r\n\
          POST /b HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n\
          GET /status/204 HTTP/1.1\r\nHost: h\r\n\r\n\
          GET /status/418 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
        PROMPT,
    );
    let all = Response::parse_many(&raw).unwrap();
    assert_eq!(all.len(), 4, "{all:?}");
    let (a, b) = (all[0].seen(), all[1].seen());
    assert_eq!((a.backend.as_str(), a.uri.as_str()), ("py", "/a?b=c"));
    assert_eq!(a.version, "HTTP/1.1");
    assert_eq!(a.headers[1], ("X-Mixed-Case".to_owned(), "v".to_owned()));
    assert_eq!(a.header("x-mixed-case"), Some("v"));
    assert_eq!((b.method.as_str(), b.body_bytes), ("POST", 3));
    assert_eq!(a.connection, b.connection, "kept alive");
    assert_eq!(
        (all[2].status, all[2].header("content-length")),
        (204, None)
    );
    assert_eq!(all[3].status, 418);
}

#[test]
fn nginx_backend_reports_forwarding_headers() {
    let nginx = nginx_backend("ngx");
    let raw = raw_exchange(
        nginx.addr(),
        b"GET /p?q=1 HTTP/1.1\r\nHost: site.test\r\nX-Forwarded-For: 10.0.0.1\r\n\
          X-Forwarded-Host: site.test\r\nX-Forwarded-Proto: https\r\nContent-Length: 2\r\n\r\nhi\
          GET /again HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n",
        PROMPT,
    );
    let all = Response::parse_many(&raw).unwrap();
    let (a, b) = (all[0].seen(), all[1].seen());
    assert_eq!((a.backend.as_str(), a.uri.as_str()), ("ngx", "/p?q=1"));
    assert_eq!(a.header("x-forwarded-for"), Some("10.0.0.1"));
    assert_eq!(a.header("x-forwarded-host"), Some("site.test"));
    assert_eq!(a.header("x-forwarded-proto"), Some("https"));
    assert_eq!(a.header("host"), Some("site.test"));
    assert_eq!(a.body_bytes, 2);
    assert_eq!(b.header("x-forwarded-for"), None);
    assert_eq!(a.connection, b.connection, "kept alive");
    assert_eq!(a.peer.parse::<SocketAddr>().unwrap().ip(), lo(1));
}

// ===== WebSocket =====

#[test]
fn websocket_echo_and_client() {
    let server = match websocket_echo() {
        Ok(server) => server,
        Err(e) => {
            println!("skipping: {e}");
            return;
        }
    };
    let url = format!("ws://{}/direct", server.addr());
    let out = websocket_client(&url, None, 20, PROMPT).unwrap_or_else(|e| panic!("{e}"));
    assert!(out.contains("ok: 20 messages echoed"), "{out}");
    // Connecting elsewhere than the URL's host, which stays the Host.
    let out = websocket_client("ws://echo.test/other", Some(server.addr()), 3, PROMPT)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(out.contains("ok: 3"), "{out}");
    assert!(server.find_stdout(PROMPT, "open /other").is_some());
    assert_eq!(
        websocket_opened(&server),
        [
            ("/direct".to_owned(), server.addr().to_string()),
            ("/other".to_owned(), "echo.test".to_owned())
        ]
    );
    // Against something that is not a WebSocket server, the client fails.
    let backend = Backend::start("plain");
    let err = websocket_client(&format!("ws://{}/", backend.addr()), None, 1, PROMPT)
        .expect_err("not a WebSocket server");
    assert!(err.contains("error"), "{err}");
}
