//! Access lists: clients outside `allow`, or inside `deny`, are reset at once (TCP) or
//! their datagrams dropped (UDP), counted, and never reach the upstream; the others are
//! served as usual.
#![cfg(target_os = "linux")]

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use proxy_core::{Access, Cidr, ForwarderHandle, TcpForwarder, UdpForwarder};
use tokio::io::AsyncReadExt;
use tokio::net::TcpSocket;

use proxy_testkit::client::send_and_receive;
use proxy_testkit::data::{assert_bytes, payload};
use proxy_testkit::echo::echo_server;
use proxy_testkit::wait::within;
use support::proxy_addr;

const LIMIT: Duration = Duration::from_secs(30);

fn cidr(s: &str) -> Cidr {
    s.parse().unwrap()
}

fn loopback(last: u8) -> IpAddr {
    Ipv4Addr::new(127, 0, 0, last).into()
}

fn tcp(upstream: SocketAddr, access: Access) -> ForwarderHandle {
    TcpForwarder::builder(["127.0.0.1:0".parse().unwrap()], upstream.into())
        .access(access)
        .build()
        .unwrap()
        .start()
        .unwrap()
}

/// Connects from `source`; returns whether the echo came back.
async fn served_from(proxy: SocketAddr, source: IpAddr) -> bool {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(source, 0)).unwrap();
    let Ok(mut stream) = socket.connect(proxy).await else {
        return false;
    };
    let sent = payload(1, 100);
    let mut got = Vec::new();
    let _ = tokio::io::AsyncWriteExt::write_all(&mut stream, &sent).await;
    let _ = within(LIMIT, "an answer or the reset", async {
        let mut buf = [0u8; 256];
        while got.len() < sent.len() {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    got == sent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_clients_outside_the_lists_are_reset_and_counted() {
    let echo = echo_server().await;
    // Only 127.0.0.1 may connect.
    let handle = tcp(echo.addr(), Access::new([cidr("127.0.0.1/32")], []));
    let proxy = proxy_addr(&handle);
    assert!(!served_from(proxy, loopback(5)).await);
    assert!(served_from(proxy, loopback(1)).await);
    assert_eq!(
        echo.accepted(),
        1,
        "the denied client never reached the upstream"
    );
    assert_eq!(handle.stats().denied, 1);
    // Everyone on loopback but 127.0.0.1.
    let handle = tcp(
        echo.addr(),
        Access::new([cidr("127.0.0.0/8")], [cidr("127.0.0.1")]),
    );
    let proxy = proxy_addr(&handle);
    assert!(!served_from(proxy, loopback(1)).await);
    assert!(served_from(proxy, loopback(6)).await);
    assert_eq!(handle.stats().denied, 1);
    // A long transfer from a permitted client is untouched.
    let mut client = {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::new(loopback(7), 0)).unwrap();
        socket.connect(proxy).await.unwrap()
    };
    let sent = payload(9, 1 << 20);
    let got = within(LIMIT, "echo", send_and_receive(&mut client, &sent)).await;
    assert_bytes("echo", &got, &sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_datagrams_from_outside_the_lists_are_dropped_and_counted() {
    let echo = proxy_testkit::udp::UdpServer::echo_on("127.0.0.1:0".parse().unwrap());
    let handle = UdpForwarder::builder(["127.0.0.1:0".parse().unwrap()], echo.addr().into())
        .access(Access::new([], [cidr("127.0.0.5")]))
        .build()
        .unwrap()
        .start()
        .unwrap();
    let proxy = proxy_addr(&handle);
    let denied = std::net::UdpSocket::bind((loopback(5), 0)).unwrap();
    denied
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    for _ in 0..3 {
        denied.send_to(b"let me in", proxy).unwrap();
    }
    let mut buf = [0u8; 64];
    assert!(
        denied.recv(&mut buf).is_err(),
        "no reply to a denied client"
    );
    let mut permitted = proxy_testkit::udp::Client::bind(SocketAddr::new(loopback(6), 0));
    permitted.round_trip(proxy, b"hello").await;
    let s = handle.stats();
    assert_eq!(s.denied, 3, "{s:#?}");
    assert_eq!(s.udp.sessions_total, 1, "no session for the denied client");
    assert_eq!(echo.count(), 1);
}

/// A dual-stack listener sees IPv4 clients as `::ffff:a.b.c.d`, the form its logs print:
/// lists written that way, or as the whole mapped range, mean the IPv4 clients, on TCP
/// and UDP alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv4_mapped_ranges_mean_their_ipv4_clients_on_a_dual_stack_listener() {
    let echo = echo_server().await;
    let dual = |access: Access| {
        TcpForwarder::builder(["[::]:0".parse().unwrap()], echo.addr().into())
            .access(access)
            .build()
            .unwrap()
            .start()
            .unwrap()
    };
    let on_loopback =
        |handle: &ForwarderHandle| SocketAddr::new(loopback(1), handle.local_addrs()[0].port());
    // (the deny list, whether 127.0.0.2 is served)
    for (deny, other_served) in [
        ("::ffff:127.0.0.1", true),
        ("::ffff:127.0.0.0/104", false),
        ("::ffff:0:0/96", false),
    ] {
        let handle = dual(Access::new([], [cidr(deny)]));
        let proxy = on_loopback(&handle);
        assert!(
            !served_from(proxy, loopback(1)).await,
            "--deny {deny} lets 127.0.0.1 in"
        );
        assert_eq!(
            served_from(proxy, loopback(2)).await,
            other_served,
            "{deny}"
        );
        assert_eq!(
            handle.stats().denied,
            if other_served { 1 } else { 2 },
            "{deny}"
        );
    }
    let handle = dual(Access::new([cidr("::ffff:127.0.0.1")], []));
    assert!(served_from(on_loopback(&handle), loopback(1)).await);
    assert!(!served_from(on_loopback(&handle), loopback(2)).await);
    assert_eq!(handle.stats().denied, 1);
    // `::/0` is every IPv6 client, not the IPv4 ones.
    let handle = dual(Access::new([], [cidr("::/0")]));
    assert!(served_from(on_loopback(&handle), loopback(1)).await);

    let udp_echo = proxy_testkit::udp::UdpServer::echo_on("127.0.0.1:0".parse().unwrap());
    let handle = UdpForwarder::builder(["[::]:0".parse().unwrap()], udp_echo.addr().into())
        .access(Access::new([], [cidr("::ffff:127.0.0.5")]))
        .build()
        .unwrap()
        .start()
        .unwrap();
    let proxy = on_loopback(&handle);
    let denied = std::net::UdpSocket::bind((loopback(5), 0)).unwrap();
    denied.send_to(b"let me in", proxy).unwrap();
    let mut permitted = proxy_testkit::udp::Client::bind(SocketAddr::new(loopback(6), 0));
    permitted.round_trip(proxy, b"hello").await;
    let s = handle.stats();
    assert_eq!(s.denied, 1, "{s:#?}");
    assert_eq!(s.udp.sessions_total, 1);
}
