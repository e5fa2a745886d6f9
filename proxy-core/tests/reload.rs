//! `ForwarderHandle::reload`: new settings apply to new connections and sessions, listen
//! addresses are added and removed, and nothing established is dropped.

use std::time::Duration;

use proxy_core::{ErrorKind, TcpForwarder, UdpForwarder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use proxy_testkit::client::{connect, round_trip};
use proxy_testkit::data::{assert_bytes, payload, tagged};
use proxy_testkit::echo::echo_server;
use proxy_testkit::net::v4_any_port;
use proxy_testkit::udp::{Client, UdpServer, assert_port_free};
use proxy_testkit::wait::within;

const LIMIT: Duration = Duration::from_secs(30);

fn tcp(listen: &[std::net::SocketAddr], target: std::net::SocketAddr) -> TcpForwarder {
    TcpForwarder::builder(listen.iter().copied(), target.into())
        .build()
        .expect("valid settings")
}

/// A long transfer keeps going, byte-exact, through reloads that change the target, add a
/// listen address and then remove the one it came in on; new connections follow the new
/// settings at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_reload_keeps_established_connections() {
    let (old, new) = (echo_server().await, echo_server().await);
    let mut handle = tcp(&[v4_any_port()], old.addr()).start().unwrap();
    let first = handle.local_addrs()[0];

    // A long transfer through the old settings, written in pieces between reloads.
    let data = payload(1, 8 << 20);
    let mut long = connect(first).await;
    let (mut r, mut w) = long.split();
    let mut echoed = vec![0; data.len()];
    let transfer = async {
        let read = r.read_exact(&mut echoed);
        let write = async {
            for chunk in data.chunks(1 << 20) {
                w.write_all(chunk).await.unwrap();
                tokio::task::yield_now().await;
            }
        };
        let (read, ()) = tokio::join!(read, write);
        read.unwrap();
    };
    let reloads = async {
        // The bound address (kept), a second address (new), a new target.
        handle
            .reload(tcp(&[first, v4_any_port()], new.addr()))
            .await
            .expect("reload with a new target and a second address");
        let addrs = handle.local_addrs().to_vec();
        assert_eq!(addrs.len(), 2);
        assert_eq!(addrs[0], first, "the kept listener keeps its socket");
        let mut c = connect(addrs[1]).await;
        round_trip(&mut c, b"on the new address").await;
        let mut c = connect(first).await;
        round_trip(&mut c, b"on the kept address").await;
        assert_eq!(new.accepted(), 2, "new connections use the new target");
        // Remove the address the long transfer came in on.
        handle
            .reload(tcp(&[addrs[1]], new.addr()))
            .await
            .expect("reload removing an address");
        assert_eq!(handle.local_addrs(), &addrs[1..]);
        let refused = tokio::net::TcpStream::connect(first).await;
        assert!(refused.is_err(), "the removed address no longer accepts");
    };
    within(LIMIT, "transfer and reloads", async {
        tokio::join!(transfer, reloads);
    })
    .await;
    assert_bytes("long transfer", &echoed, &data);
    assert_eq!(
        old.accepted(),
        1,
        "only the long transfer used the old target"
    );
    drop(long);
    let stats = handle.stats();
    assert_eq!(
        stats.connections_total, 3,
        "counters carry on across reloads"
    );
    let reader = handle.stats_reader();
    assert!(handle.shutdown(Duration::from_secs(5)).await);
    let last = reader.stats();
    assert_eq!((last.connections_total, last.connections_open), (3, 0));
}

/// A reload that cannot bind a new address, or changes the protocol, changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_reload_changes_nothing() {
    let (old, other) = (echo_server().await, echo_server().await);
    let mut handle = tcp(&[v4_any_port()], old.addr()).start().unwrap();
    let addr = handle.local_addrs()[0];
    let busy = std::net::TcpListener::bind(v4_any_port()).unwrap();
    let busy_addr = busy.local_addr().unwrap();

    let e = handle
        .reload(tcp(&[addr, busy_addr], other.addr()))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Bind);
    assert!(e.to_string().contains(&busy_addr.to_string()), "{e}");
    let udp = UdpForwarder::builder([addr], other.addr().into())
        .build()
        .unwrap();
    let e = handle.reload(udp).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Reload);

    assert_eq!(handle.local_addrs(), &[addr]);
    let mut c = connect(addr).await;
    round_trip(&mut c, b"still the old settings").await;
    assert_eq!((old.accepted(), other.accepted()), (1, 0));
    drop(c);
    assert!(handle.shutdown(Duration::from_secs(5)).await);
}

/// A UDP session keeps its upstream through a reload that changes the target; new
/// sessions go to the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_reload_keeps_sessions() {
    let old = UdpServer::echo_on(v4_any_port());
    let new = UdpServer::echo_on(v4_any_port());
    let udp = |target: std::net::SocketAddr| {
        UdpForwarder::builder([v4_any_port()], target.into())
            .build()
            .unwrap()
    };
    let mut handle = udp(old.addr()).start().unwrap();
    let proxy = handle.local_addrs()[0];
    let mut before = Client::v4();
    within(
        LIMIT,
        "first session",
        before.round_trip(proxy, &tagged(1, 0, 100)),
    )
    .await;

    // The same listen address as configured (port 0), a new target.
    handle
        .reload(udp(new.addr()))
        .await
        .expect("reload with a new target");
    assert_eq!(handle.local_addrs(), &[proxy], "the socket is kept");

    within(
        LIMIT,
        "old session",
        before.round_trip(proxy, &tagged(1, 1, 100)),
    )
    .await;
    let mut after = Client::v4();
    within(
        LIMIT,
        "new session",
        after.round_trip(proxy, &tagged(2, 0, 100)),
    )
    .await;
    assert_eq!(
        old.sources().len(),
        1,
        "the old session stayed on the old target"
    );
    assert_eq!(
        new.sources().len(),
        1,
        "the new session went to the new target"
    );
    assert_eq!(handle.stats().udp.sessions_total, 2);
    handle.shutdown(Duration::from_secs(5)).await;
}

/// A reload that moves the UDP listen address ends the sessions that came in on the old
/// one and closes its socket before it returns: the old port is free at once, and moving
/// back to it works. Clients of the new address are served throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_reload_moving_the_listen_address_frees_the_old_port() {
    let echo = UdpServer::echo_on(v4_any_port());
    let udp = |listen: std::net::SocketAddr| {
        UdpForwarder::builder([listen], echo.addr().into())
            .build()
            .unwrap()
    };
    let mut handle = udp(v4_any_port()).start().unwrap();
    let first = handle.local_addrs()[0];
    let mut old = Client::v4();
    within(LIMIT, "a session on the first address", async {
        old.round_trip(first, &tagged(1, 0, 100)).await;
    })
    .await;

    // A port of its own: `127.0.0.1:0` would name the listener configured as that.
    let free = std::net::UdpSocket::bind(v4_any_port())
        .and_then(|s| s.local_addr())
        .unwrap();
    handle
        .reload(udp(free))
        .await
        .expect("reload to a new address");
    let second = handle.local_addrs()[0];
    assert_ne!(second, first);
    assert_port_free(first, "the old listen address after the reload");
    let s = handle.stats();
    assert_eq!(
        s.udp.sessions_open, 0,
        "the old address's session ended: {s:#?}"
    );
    let mut new = Client::v4();
    within(LIMIT, "a session on the new address", async {
        new.round_trip(second, &tagged(2, 0, 100)).await;
    })
    .await;

    handle
        .reload(udp(first))
        .await
        .expect("moving back to the old address");
    assert_eq!(handle.local_addrs(), &[first]);
    assert_port_free(second, "the second address after moving back");
    within(LIMIT, "the first address serves again", async {
        old.round_trip(first, &tagged(1, 1, 100)).await;
    })
    .await;
    let s = handle.stats();
    assert_eq!(
        (s.udp.sessions_total, s.udp.sessions_open),
        (3, 1),
        "{s:#?}"
    );
    assert!(handle.shutdown(Duration::from_secs(5)).await);
}
