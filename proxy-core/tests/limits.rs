//! Limits: past the most connections, the most per client IP or the accept rate, a new
//! TCP connection is reset at once (a UDP session's datagrams dropped) and counted; the
//! connections already open are untouched, and a reload keeps the counts.
#![cfg(target_os = "linux")]

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use proxy_core::{AcceptProxy, Limits, Rate, TcpForwarder, UdpForwarder};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};

use proxy_testkit::client::{End, round_trip, wait_end};
use proxy_testkit::echo::echo_server;
use proxy_testkit::wait::{settled_stats, within};
use support::proxy_addr;

const LIMIT: Duration = Duration::from_secs(30);

fn loopback(last: u8) -> IpAddr {
    Ipv4Addr::new(127, 0, 0, last).into()
}

fn limits(f: impl FnOnce(&mut Limits)) -> Limits {
    let mut l = Limits::default();
    f(&mut l);
    l
}

fn tcp(upstream: SocketAddr, limits: Limits) -> TcpForwarder {
    TcpForwarder::builder(["127.0.0.1:0".parse().unwrap()], upstream.into())
        .limits(limits)
        .build()
        .unwrap()
}

/// Connects from `source`. On loopback a reset sent right after the accept can beat the
/// connect's completion, so a refused connection may fail here already.
async fn try_connect_from(proxy: SocketAddr, source: IpAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(source, 0)).unwrap();
    within(LIMIT, "connect", socket.connect(proxy)).await
}

async fn connect_from(proxy: SocketAddr, source: IpAddr) -> TcpStream {
    try_connect_from(proxy, source)
        .await
        .expect("the listener accepts")
}

/// A connection that echoes: it was admitted, and it still works.
async fn served(stream: &mut TcpStream) {
    within(LIMIT, "echo", round_trip(stream, b"still served")).await;
}

/// A connection from `source` that the proxy resets at once, without a byte.
async fn refused_from(proxy: SocketAddr, source: IpAddr) {
    let mut stream = match try_connect_from(proxy, source).await {
        Ok(stream) => stream,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return,
        Err(e) => panic!("connect: {e}"),
    };
    // The write may land before the reset does, and then the read reports it; or after,
    // and then the write does (and the read would only see the end of the stream).
    match stream.write_all(b"hello?").await {
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        _ => assert_eq!(wait_end(&mut stream, LIMIT).await, End::Reset),
    }
}

/// With three connections open, a fourth is reset and counted, the three still work, and
/// once one closes a new one is admitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_connection_limit_new_connections_are_reset() {
    let echo = echo_server().await;
    let handle = tcp(echo.addr(), limits(|l| l.max_connections = Some(3)))
        .start()
        .unwrap();
    let proxy = proxy_addr(&handle);
    let mut open = Vec::new();
    for i in 0..3 {
        let mut s = connect_from(proxy, loopback(10 + i)).await;
        served(&mut s).await;
        open.push(s);
    }
    refused_from(proxy, loopback(20)).await;
    refused_from(proxy, loopback(21)).await;
    for s in &mut open {
        served(s).await;
    }
    let s = handle.stats();
    assert_eq!(s.limited.connections, 2, "{s:#?}");
    assert_eq!((s.limited.per_source, s.limited.rate), (0, 0));
    assert_eq!(
        echo.accepted(),
        3,
        "refused clients never reach the upstream"
    );
    drop(open.pop());
    settled_stats(&handle, |s| s.connections_open == 2).await;
    let mut again = connect_from(proxy, loopback(22)).await;
    served(&mut again).await;
    assert_eq!(handle.stats().limited.connections, 2);
}

/// Two connections from one client IP fill its share; its third is reset while other
/// clients are served, and its place comes back when one of its connections closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_per_source_limit_that_client_is_reset() {
    let echo = echo_server().await;
    let handle = tcp(echo.addr(), limits(|l| l.max_per_source = Some(2)))
        .start()
        .unwrap();
    let proxy = proxy_addr(&handle);
    let mut a1 = connect_from(proxy, loopback(30)).await;
    let mut a2 = connect_from(proxy, loopback(30)).await;
    served(&mut a1).await;
    served(&mut a2).await;
    refused_from(proxy, loopback(30)).await;
    let mut b = connect_from(proxy, loopback(31)).await;
    served(&mut b).await;
    assert_eq!(handle.stats().limited.per_source, 1);
    drop(a1);
    settled_stats(&handle, |s| s.connections_open == 2).await;
    let mut a3 = connect_from(proxy, loopback(30)).await;
    served(&mut a3).await;
    served(&mut a2).await;
    assert_eq!(handle.stats().limited.per_source, 1);
}

/// A burst of 3 and 1 a second: of 12 connections made at once, the burst and what the
/// elapsed time earned are served; the rest are reset and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_accept_rate_new_connections_are_reset() {
    const TRIES: u64 = 12;
    let echo = echo_server().await;
    let rate = Rate::per_second(1).burst(3);
    let handle = tcp(echo.addr(), limits(|l| l.accept_rate = Some(rate)))
        .start()
        .unwrap();
    let proxy = proxy_addr(&handle);
    let started = std::time::Instant::now();
    let mut admitted = Vec::new();
    for _ in 0..TRIES {
        if let Ok(mut s) = try_connect_from(proxy, loopback(1)).await {
            let _ = s.write_all(b"x").await;
            admitted.push(s);
        }
    }
    let elapsed = started.elapsed();
    settled_stats(&handle, |s| s.connections_total + s.limited.rate == TRIES).await;
    let s = handle.stats();
    let earned = elapsed.as_secs() + 1;
    assert!(
        (3..=3 + earned).contains(&s.connections_total),
        "{} served in {elapsed:?}: {s:#?}",
        s.connections_total
    );
    assert_eq!(s.limited.rate, TRIES - s.connections_total);
    // After a quiet second, one more is admitted.
    drop(admitted);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut late = connect_from(proxy, loopback(1)).await;
    served(&mut late).await;
}

/// The counts outlive a reload: the client's two open connections still count against a
/// new generation's limit, and raising the limit admits a third.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_the_counts_and_applies_new_limits() {
    let echo = echo_server().await;
    let two = limits(|l| l.max_per_source = Some(2));
    let mut handle = tcp(echo.addr(), two).start().unwrap();
    let proxy = proxy_addr(&handle);
    let mut held = [
        connect_from(proxy, loopback(40)).await,
        connect_from(proxy, loopback(40)).await,
    ];
    for s in &mut held {
        served(s).await;
    }
    let same_listener = TcpForwarder::builder([proxy], echo.addr().into())
        .limits(two)
        .idle_timeout(Duration::from_secs(600))
        .build()
        .unwrap();
    handle.reload(same_listener).await.unwrap();
    refused_from(proxy, loopback(40)).await;
    let three = TcpForwarder::builder([proxy], echo.addr().into())
        .limits(limits(|l| l.max_per_source = Some(3)))
        .build()
        .unwrap();
    handle.reload(three).await.unwrap();
    let mut third = connect_from(proxy, loopback(40)).await;
    served(&mut third).await;
    refused_from(proxy, loopback(40)).await;
    for s in &mut held {
        served(s).await;
    }
    assert_eq!(handle.stats().limited.per_source, 2);
}

/// Behind a trusted PROXY peer, the client its header names is the source that counts,
/// not the peer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_proxy_peer_the_header_client_counts() {
    let echo = echo_server().await;
    let handle = TcpForwarder::builder(["127.0.0.1:0".parse().unwrap()], echo.addr().into())
        .limits(limits(|l| l.max_per_source = Some(1)))
        .accept_proxy(AcceptProxy::new(["127.0.0.50".parse().unwrap()]))
        .build()
        .unwrap()
        .start()
        .unwrap();
    let proxy = proxy_addr(&handle);
    let header = |client: &str| {
        let client: SocketAddr = client.parse().unwrap();
        let (ip, port) = (client.ip(), client.port());
        format!("PROXY TCP4 {ip} {} {port} {}\r\n", proxy.ip(), proxy.port()).into_bytes()
    };
    let mut first = connect_from(proxy, loopback(50)).await;
    first.write_all(&header("203.0.113.7:1000")).await.unwrap();
    served(&mut first).await;
    let mut second = connect_from(proxy, loopback(50)).await;
    // Refused once its header is read: the client's second connection is reset.
    second.write_all(&header("203.0.113.7:1001")).await.unwrap();
    assert_eq!(wait_end(&mut second, LIMIT).await, End::Reset);
    let mut other = connect_from(proxy, loopback(50)).await;
    other.write_all(&header("203.0.113.8:1000")).await.unwrap();
    served(&mut other).await;
    assert_eq!(handle.stats().limited.per_source, 1);
    assert_eq!(echo.accepted(), 2);
}

/// UDP: one session per client IP. A second client port of the same IP gets no session
/// (its datagrams are dropped and counted) until the first session idles out; other
/// clients are served throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_sessions_past_the_per_source_limit_are_dropped() {
    let echo = proxy_testkit::udp::UdpServer::echo_on("127.0.0.1:0".parse().unwrap());
    let idle = Duration::from_millis(500);
    let handle = UdpForwarder::builder(["127.0.0.1:0".parse().unwrap()], echo.addr().into())
        .limits(limits(|l| l.max_per_source = Some(1)))
        .session_idle_timeout(idle)
        .build()
        .unwrap()
        .start()
        .unwrap();
    let proxy = proxy_addr(&handle);
    let mut first = proxy_testkit::udp::Client::bind(SocketAddr::new(loopback(60), 0));
    first.round_trip(proxy, b"first").await;
    let second = std::net::UdpSocket::bind((loopback(60), 0)).unwrap();
    second
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    for _ in 0..3 {
        second.send_to(b"second", proxy).unwrap();
    }
    let mut buf = [0u8; 64];
    assert!(second.recv(&mut buf).is_err(), "no session for the second");
    let mut other = proxy_testkit::udp::Client::bind(SocketAddr::new(loopback(61), 0));
    other.round_trip(proxy, b"other").await;
    let s = handle.stats();
    assert_eq!(s.limited.per_source, 3, "{s:#?}");
    assert_eq!(s.udp.sessions_total, 2);
    // Once the first session ends, the second client gets its own.
    settled_stats(&handle, |s| s.udp.sessions_open == 0).await;
    second
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    second.send_to(b"second", proxy).unwrap();
    let n = second.recv(&mut buf).expect("a reply once admitted");
    assert_eq!(&buf[..n], b"second");
    assert_eq!(handle.stats().limited.per_source, 3);
}

#[test]
fn zero_limits_are_refused_by_name() {
    let target: proxy_core::Target = "127.0.0.1:9".parse().unwrap();
    let listen = ["127.0.0.1:0".parse().unwrap()];
    let cases = [
        (limits(|l| l.max_connections = Some(0)), "max_connections"),
        (limits(|l| l.max_per_source = Some(0)), "max_per_source"),
        (
            limits(|l| l.accept_rate = Some(Rate::per_second(0))),
            "accept_rate",
        ),
    ];
    for (l, name) in cases {
        let tcp = TcpForwarder::builder(listen, target.clone())
            .limits(l)
            .build();
        assert!(tcp.unwrap_err().to_string().contains(name), "tcp {name}");
        let udp = UdpForwarder::builder(listen, target.clone())
            .limits(l)
            .build();
        assert!(udp.unwrap_err().to_string().contains(name), "udp {name}");
    }
}
