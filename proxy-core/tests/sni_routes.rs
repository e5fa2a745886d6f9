//! A TCP forward routing TLS connections by server name (the `sni` key), without
//! decrypting: real `openssl s_client`s reach the `openssl s_server` their name picks
//! (each presents a certificate of its own name, so the client tells which it reached);
//! upstreams get every byte as the client sent it, hellos split over many writes
//! included; no name, no match and not-TLS go to the target, or are reset without one; a
//! client that never finishes its hello is closed at `sni_timeout`; PROXY headers are
//! read from trusted peers before the hello and sent to a route that asks for them; a
//! reload changes the routes for new connections.

use std::io::Read;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use proxy_core::spec::SniRoute;
use proxy_core::{ForwardSpec, ForwarderHandle, StatsSnapshot, TcpForwarder};
use proxy_testkit::echo::{Recorded, recorder};
use proxy_testkit::http::blocking;
use proxy_testkit::process::KillOnDrop;
use proxy_testkit::tls::{OpensslServer, openssl, presented_name};
use proxy_testkit::wait::{PROMPT, eventually, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::UnboundedReceiver;

/// A TCP forward on a loopback port with these settings (`listen` is set here).
fn start(settings: &[(&str, &str)]) -> ForwarderHandle {
    let mut spec = ForwardSpec::default();
    spec.set("listen", "127.0.0.1:0").unwrap();
    for (key, value) in settings {
        spec.set(key, value).unwrap_or_else(|e| panic!("{e}"));
    }
    spec.tcp_forwarder(spec.make_resolver().unwrap())
        .unwrap_or_else(|e| panic!("{e}"))
        .start()
        .unwrap()
}

fn stats(handle: &ForwarderHandle) -> StatsSnapshot {
    handle.stats_reader().stats()
}

/// The ClientHello a real `openssl s_client -servername NAME` sends, caught by a
/// listener that answers nothing.
fn openssl_hello(name: &str) -> Vec<u8> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let _client = KillOnDrop::spawn(
        Command::new(openssl())
            .args([
                "s_client",
                "-connect",
                &addr.to_string(),
                "-servername",
                name,
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
    .unwrap();
    let (mut stream, _) = listener.accept().unwrap();
    stream.set_read_timeout(Some(PROMPT)).unwrap();
    let mut hello = Vec::new();
    let mut buf = [0; 4096];
    while proxy_core::sni::server_name(&hello) == Err(proxy_core::sni::HelloError::Incomplete) {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "s_client closed after {} bytes", hello.len());
        hello.extend_from_slice(&buf[..n]);
    }
    assert_eq!(
        proxy_core::sni::server_name(&hello),
        Ok(Some(name.to_ascii_lowercase()))
    );
    hello
}

/// A recording upstream: what each connection sent, to its end.
async fn recording() -> (
    SocketAddr,
    proxy_testkit::echo::Server,
    UnboundedReceiver<Recorded>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (server, seen) = recorder(listener);
    (addr, server, seen)
}

/// Writes `pieces` one by one with a pause between, then half-closes.
async fn send_in_pieces(proxy: SocketAddr, pieces: &[&[u8]]) -> TcpStream {
    let mut client = TcpStream::connect(proxy).await.unwrap();
    for piece in pieces {
        client.write_all(piece).await.unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    client.shutdown().await.unwrap();
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_clients_reach_the_server_their_name_picks() {
    let servers =
        blocking(|| ["a.example", "x.b.example", "default.example"].map(OpensslServer::start))
            .await;
    let [a, b, default] = &servers;
    let routes = format!("a.example={},*.b.example={}", a.addr, b.addr);
    let handle = start(&[("target", &default.addr.to_string()), ("sni", &routes)]);
    let proxy = handle.local_addrs()[0];
    let cases = [
        (Some("a.example"), "a.example"),
        (Some("A.Example"), "a.example"),
        (Some("x.b.example"), "x.b.example"),
        (Some("other.b.example"), "x.b.example"),
        // A wildcard is one label: neither the domain itself nor two labels more.
        (Some("b.example"), "default.example"),
        (Some("y.x.b.example"), "default.example"),
        (Some("unknown.example"), "default.example"),
        (None, "default.example"),
    ];
    for (asked, reached) in cases {
        let got = blocking(move || presented_name(proxy, asked)).await;
        assert_eq!(got.as_deref(), Ok(reached), "asking for {asked:?}");
    }
    let s = stats(&handle);
    assert_eq!(
        (s.connections_total, s.sni_no_route, s.sni_hello_failed),
        (8, 0, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstreams_get_every_byte_as_sent_hellos_in_pieces_and_other_protocols_too() {
    let hello = blocking(|| openssl_hello("Shop.Example")).await;
    let (shop, _shop_server, mut shop_seen) = recording().await;
    let (default, _default_server, mut default_seen) = recording().await;
    let handle = start(&[
        ("target", &default.to_string()),
        ("sni", &format!("shop.example={shop}")),
    ]);
    let proxy = handle.local_addrs()[0];

    // The hello in pieces (its record header cut in two), then application bytes.
    let after = b"bytes after the hello".as_slice();
    let _c = send_in_pieces(proxy, &[&hello[..3], &hello[3..40], &hello[40..], after]).await;
    let seen = within(PROMPT, "the route's upstream", shop_seen.recv())
        .await
        .unwrap();
    assert_eq!(seen.data, [hello.as_slice(), after].concat());
    assert_eq!(seen.end, Ok(()));

    // Not TLS: passed whole to the target, as it came.
    let text = b"GET / HTTP/1.1\r\nHost: shop.example\r\n\r\n".as_slice();
    let _c = send_in_pieces(proxy, &[text]).await;
    let seen = within(PROMPT, "the default", default_seen.recv())
        .await
        .unwrap();
    assert_eq!(seen.data, text);
    assert!(
        shop_seen.try_recv().is_err(),
        "the route got a plain-text client"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_target_what_no_route_serves_is_reset() {
    let hello = blocking(|| openssl_hello("other.example")).await;
    let (shop, _shop_server, mut shop_seen) = recording().await;
    let mut spec = ForwardSpec::default();
    spec.set("listen", "127.0.0.1:0").unwrap();
    spec.set("sni", &format!("shop.example={shop}")).unwrap();
    let forwarder = spec.tcp_forwarder(spec.make_resolver().unwrap()).unwrap();
    assert_eq!(forwarder.target(), None);
    let handle = forwarder.start().unwrap();
    let proxy = handle.local_addrs()[0];
    for first in [hello.as_slice(), b"not tls at all\r\n".as_slice()] {
        let mut client = TcpStream::connect(proxy).await.unwrap();
        client.write_all(first).await.unwrap();
        let mut buf = [0; 16];
        let read = within(PROMPT, "the reset", client.read(&mut buf)).await;
        assert_eq!(
            read.map_err(|e| e.kind()),
            Err(std::io::ErrorKind::ConnectionReset)
        );
    }
    assert_eq!(stats(&handle).sni_no_route, 2);
    assert!(shop_seen.try_recv().is_err());
}

/// Whether a read says the proxy closed the connection: a FIN, or a reset when the
/// client's bytes were still unread (the kernel's way of closing such a socket).
fn ended(read: &std::io::Result<usize>) -> bool {
    match read {
        Ok(n) => *n == 0,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_finishes_its_hello_is_closed_at_the_sni_timeout() {
    let hello = blocking(|| openssl_hello("shop.example")).await;
    let (shop, _shop_server, mut shop_seen) = recording().await;
    let handle = start(&[
        ("target", &shop.to_string()),
        ("sni", &format!("shop.example={shop}")),
        ("sni_timeout", "300ms"),
    ]);
    let proxy = handle.local_addrs()[0];
    for sent in [&[][..], &hello[..hello.len() - 1]] {
        let started = Instant::now();
        let mut client = TcpStream::connect(proxy).await.unwrap();
        client.write_all(sent).await.unwrap();
        let mut buf = [0; 16];
        let read = within(PROMPT, "the close", client.read(&mut buf)).await;
        assert!(ended(&read), "{read:?}");
        assert!(started.elapsed() >= Duration::from_millis(300));
    }
    // Half a hello and the client's FIN: closed at once, not at the timeout.
    let started = Instant::now();
    let mut client = send_in_pieces(proxy, &[&hello[..10]]).await;
    let mut buf = [0; 16];
    let read = within(PROMPT, "the close", client.read(&mut buf)).await;
    assert!(ended(&read), "{read:?}");
    assert!(started.elapsed() < Duration::from_millis(290));

    eventually("three failed hellos counted", PROMPT, || {
        stats(&handle).sni_hello_failed == 3
    })
    .await;
    assert!(shop_seen.try_recv().is_err(), "an upstream was connected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_headers_are_read_before_the_hello_and_sent_to_a_route_that_wants_them() {
    let hello = blocking(|| openssl_hello("shop.example")).await;
    let (shop, _shop_server, mut shop_seen) = recording().await;
    let handle = start(&[
        ("sni", &format!("shop.example={shop};proxy_protocol=v2")),
        ("accept_proxy_from", "127.0.0.1"),
    ]);
    let proxy = handle.local_addrs()[0];
    let header = b"PROXY TCP4 192.0.2.7 198.51.100.1 40000 443\r\n".as_slice();
    let _c = send_in_pieces(proxy, &[header, &hello]).await;
    let seen = within(PROMPT, "the route's upstream", shop_seen.recv())
        .await
        .unwrap();
    let got = proxy_core::proxy_protocol::parse(&seen.data)
        .unwrap()
        .expect("a whole PROXY header");
    assert_eq!(got.source, Some("192.0.2.7:40000".parse().unwrap()));
    assert_eq!(got.destination, Some("198.51.100.1:443".parse().unwrap()));
    assert!(
        seen.data.starts_with(b"\r\n\r\n\0\r\nQUIT\n"),
        "not version 2"
    );
    assert_eq!(&seen.data[got.len..], hello.as_slice());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_changes_the_routes_for_new_connections() {
    let hello = blocking(|| openssl_hello("shop.example")).await;
    let (first, _first_server, mut first_seen) = recording().await;
    let (second, _second_server, mut second_seen) = recording().await;
    let route = |to: SocketAddr| format!("shop.example={to}");
    let mut handle = start(&[("sni", &route(first))]);
    let proxy = handle.local_addrs()[0];
    let _c = send_in_pieces(proxy, &[&hello]).await;
    let seen = within(PROMPT, "the first upstream", first_seen.recv())
        .await
        .unwrap();
    assert_eq!(seen.data, hello);

    let mut spec = ForwardSpec::default();
    spec.set("listen", &proxy.to_string()).unwrap();
    spec.sni = vec![route(second).parse::<SniRoute>().unwrap()];
    let forwarder: TcpForwarder = spec.tcp_forwarder(spec.make_resolver().unwrap()).unwrap();
    handle.reload(forwarder).await.unwrap();
    let _c = send_in_pieces(proxy, &[&hello]).await;
    let seen = within(PROMPT, "the second upstream", second_seen.recv())
        .await
        .unwrap();
    assert_eq!(seen.data, hello);
    assert!(first_seen.try_recv().is_err());
}
