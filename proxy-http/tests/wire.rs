//! The proxy's own HTTP/1.1 path (routed forwards) on the wire, in process, on loopback:
//! the bytes clients and upstreams send that curl and the usual servers do not, and what
//! the proxy must make of them: pipelined requests, framings that would let the proxy and
//! the upstream disagree on where a request ends (refused), chunked bodies both ways, HTTP/1.0,
//! HEAD, absolute-form targets, and upstreams that frame their answers oddly or not at all.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use proxy_core::ForwardSpec;
use proxy_http::{HttpForwarder, HttpHandle};
use proxy_testkit::client::End;
use proxy_testkit::http::{Backend, Response, blocking, raw_exchange_end};
use proxy_testkit::wait::PROMPT;

fn start(routes: &str) -> HttpHandle {
    let mut spec = ForwardSpec::default();
    spec.set("protocol", "http").unwrap();
    spec.set("listen", "127.0.0.1:0").unwrap();
    spec.set("route", routes).unwrap();
    HttpForwarder::new(spec).unwrap().start().unwrap()
}

/// Sends `request` as it is; what came back, and how the connection ended.
async fn exchange(addr: SocketAddr, request: &[u8]) -> (Vec<u8>, Option<End>) {
    let request = request.to_vec();
    blocking(move || raw_exchange_end(addr, &request, Duration::from_secs(5))).await
}

/// An upstream that reads one request head and answers each with `answer`, as it is.
fn scripted_upstream(answer: &'static [u8]) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            std::thread::spawn(move || {
                stream.set_read_timeout(Some(PROMPT)).unwrap();
                let mut head = Vec::new();
                let mut byte = [0; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match stream.read(&mut byte) {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                let _ = stream.write_all(answer);
                // Closing is part of some answers (no length): the thread ends here.
            });
        }
    });
    addr
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_on_one_connection() {
    let backend = Backend::start("b");
    let proxy = start(&format!("/={}", backend.addr()));
    let request = b"GET /first HTTP/1.1\r\nHost: a\r\n\r\n\
                    GET /second HTTP/1.1\r\nHost: a\r\n\r\n\
                    GET /third HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    let (raw, end) = exchange(proxy.local_addrs()[0], request).await;
    assert_eq!(end, Some(End::Eof), "closed after the third, as it asked");
    let responses = Response::parse_many(&raw).unwrap();
    let uris: Vec<String> = responses.iter().map(|r| r.seen().uri).collect();
    assert_eq!(uris, ["/first", "/second", "/third"]);
    assert_eq!(
        backend.connections(),
        1,
        "one upstream connection, kept alive"
    );
}

#[tokio::test]
async fn framings_that_could_smuggle_a_request_are_refused_before_the_upstream() {
    let backend = Backend::start("b");
    let proxy = start(&format!("/={}", backend.addr()));
    let cases: [(&[u8], u16); 5] = [
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            400,
        ),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
            400,
        ),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +4\r\n\r\nabcd", 400),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\nxx",
            501,
        ),
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    ];
    for (request, status) in cases {
        let (raw, end) = exchange(proxy.local_addrs()[0], request).await;
        let response = Response::parse(&raw).unwrap();
        let shown = String::from_utf8_lossy(request);
        assert_eq!(response.status, status, "{shown}: {}", response.text());
        assert_eq!(
            end,
            Some(End::Eof),
            "{shown}: the connection is closed after"
        );
    }
    assert_eq!(backend.requests(), 0, "the upstream saw none of them");
}

#[tokio::test]
async fn a_chunked_request_body_with_extensions_and_trailers_goes_through_whole() {
    let backend = Backend::start("b");
    let proxy = start(&format!("/={}", backend.addr()));
    let request = b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\
                    Connection: close\r\n\r\n\
                    5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nx-trailer: t\r\n\r\n";
    let (raw, _) = exchange(proxy.local_addrs()[0], request).await;
    let response = Response::parse(&raw).unwrap();
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.text(), "hello, world");
}

#[tokio::test]
async fn http_1_0_clients_get_one_answer_and_the_connection_closed() {
    let backend = Backend::start("b");
    let proxy = start(&format!("/={}", backend.addr()));
    let (raw, end) = exchange(proxy.local_addrs()[0], b"GET /old HTTP/1.0\r\n\r\n").await;
    let response = Response::parse(&raw).unwrap();
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.seen().uri, "/old");
    assert_eq!(end, Some(End::Eof));
}

#[tokio::test]
async fn head_answers_keep_their_length_and_the_connection_goes_on() {
    let backend = Backend::start("b");
    let proxy = start(&format!("/={}", backend.addr()));
    let request = b"HEAD /bytes/1000 HTTP/1.1\r\nHost: a\r\n\r\n\
                    GET /after HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    let (raw, _) = exchange(proxy.local_addrs()[0], request).await;
    let text = String::from_utf8_lossy(&raw);
    let (head, rest) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        head.to_ascii_lowercase().contains("content-length: 1000"),
        "{head}"
    );
    let after = Response::parse(rest.as_bytes()).unwrap();
    assert_eq!(
        after.seen().uri,
        "/after",
        "no body after the HEAD answer: {rest}"
    );
}

#[tokio::test]
async fn an_absolute_form_target_is_routed_and_sent_by_its_authority() {
    let shop = Backend::start("shop");
    let other = Backend::start("other");
    let proxy = start(&format!("shop.example/={},/={}", shop.addr(), other.addr()));
    let request = b"GET http://shop.example/cart?x=1 HTTP/1.1\r\nHost: elsewhere\r\n\
                    Connection: close\r\n\r\n";
    let (raw, _) = exchange(proxy.local_addrs()[0], request).await;
    let seen = Response::parse(&raw).unwrap().seen();
    assert_eq!(seen.backend, "shop");
    assert_eq!(seen.uri, "/cart?x=1");
    assert_eq!(seen.header("host"), Some("shop.example"));
}

#[tokio::test]
async fn upstream_answers_framed_by_chunks_or_by_closing_pass_through() {
    let chunked = scripted_upstream(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n",
    );
    let closing =
        scripted_upstream(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nto the end");
    let proxy = start(&format!("/chunked={chunked},/closing={closing}"));
    let addr = proxy.local_addrs()[0];

    let (raw, _) = exchange(
        addr,
        b"GET /chunked HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    let response = Response::parse(&raw).unwrap();
    assert_eq!(response.header("transfer-encoding"), Some("chunked"));
    assert_eq!(response.text(), "abcdefg");

    // Kept alive by the client, but a body that ends with the upstream's close can only
    // end the client's connection too.
    let (raw, end) = exchange(addr, b"GET /closing HTTP/1.1\r\nHost: a\r\n\r\n").await;
    let response = Response::parse(&raw).unwrap();
    assert_eq!(response.text(), "to the end");
    assert_eq!(response.header("connection"), Some("close"));
    assert_eq!(end, Some(End::Eof));
}

#[tokio::test]
async fn an_upstream_that_answers_garbage_gets_502_and_the_next_request_is_served() {
    let garbage = scripted_upstream(b"SSH-2.0-OpenSSH_9.2\r\n\r\n");
    let backend = Backend::start("b");
    let proxy = start(&format!("/garbage={garbage},/={}", backend.addr()));
    let request = b"GET /garbage HTTP/1.1\r\nHost: a\r\n\r\nGET /next HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    let (raw, _) = exchange(proxy.local_addrs()[0], request).await;
    let responses = Response::parse_many(&raw).unwrap();
    assert_eq!(responses[0].status, 502, "{}", responses[0].text());
    assert_eq!(responses[1].seen().uri, "/next");
}

#[tokio::test]
async fn a_drain_closes_idle_kept_alive_connections_at_once() {
    let backend = Backend::start("b");
    let proxy = start(&format!("/={}", backend.addr()));
    let addr = proxy.local_addrs()[0];
    // Two requests kept alive, then the connection idles: the drain must reach it there.
    let client = blocking(move || {
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(PROMPT)).unwrap();
        for path in ["/one", "/two"] {
            let request = format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n");
            stream.write_all(request.as_bytes()).unwrap();
            let mut got = Vec::new();
            let mut buf = [0; 4096];
            while Response::parse(&got).is_err() {
                let n = stream.read(&mut buf).unwrap();
                assert!(n > 0, "closed before the answer to {path}");
                got.extend_from_slice(&buf[..n]);
            }
        }
        stream
    })
    .await;
    let started = std::time::Instant::now();
    assert!(proxy.shutdown(Duration::from_secs(10)).await, "in time");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the idle connection held the drain for {:?}",
        started.elapsed()
    );
    let end = blocking(move || {
        let mut client = client;
        let mut buf = [0; 16];
        client.read(&mut buf).map(|n| n == 0).unwrap_or(true)
    })
    .await;
    assert!(end, "the client saw its connection end");
}

#[tokio::test]
async fn a_client_stays_connected_across_an_http_1_0_upstream_that_closes() {
    let old = scripted_upstream(b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nold");
    let proxy = start(&format!("/={old}"));
    let request = b"GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    let (raw, end) = exchange(proxy.local_addrs()[0], request).await;
    let responses = Response::parse_many(&raw).unwrap();
    assert_eq!(responses.len(), 2, "{}", String::from_utf8_lossy(&raw));
    assert_eq!(responses[0].text(), "old");
    assert_eq!(responses[0].header("connection"), None, "kept alive");
    assert_eq!(responses[1].text(), "old");
    assert_eq!(end, Some(End::Eof));
}
