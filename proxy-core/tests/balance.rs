//! Balancing across several real backends on loopback (127.0.0.1, .2, .3 on one port,
//! the target name answered by a `StaticResolver`): a backend killed while connections go
//! on is ejected and no client sees a failure, least connections fills the emptiest
//! backend, client-IP affinity keeps each client on its backend (TCP and UDP), and with
//! every address ejected new connections fail at once.
#![cfg(target_os = "linux")]

mod support;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use proxy_core::resolve::StaticResolver;
use proxy_core::{Balance, Ejection, ForwarderHandle, TcpForwarder, UdpForwarder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

use proxy_testkit::client::{read_all, send_and_receive};
use proxy_testkit::data::{assert_bytes, payload};
use proxy_testkit::echo::Server;
use proxy_testkit::udp::UdpServer;
use proxy_testkit::wait::within;
use support::proxy_addr;

const LIMIT: Duration = Duration::from_secs(30);

fn loopback(i: u8) -> IpAddr {
    Ipv4Addr::new(127, 0, 0, i).into()
}

/// `n` listeners on 127.0.0.1 ..= 127.0.0.n, all on one kernel-chosen port.
async fn same_port(n: u8) -> Vec<TcpListener> {
    'retry: for _ in 0..20 {
        let first = TcpListener::bind((loopback(1), 0)).await.unwrap();
        let port = first.local_addr().unwrap().port();
        let mut all = vec![first];
        for i in 2..=n {
            match TcpListener::bind((loopback(i), port)).await {
                Ok(l) => all.push(l),
                Err(_) => continue 'retry,
            }
        }
        return all;
    }
    panic!("no port free on 127.0.0.1..={n} in 20 tries");
}

/// A server that answers each connection with its index byte, then closes.
fn identify(listener: TcpListener, index: u8) -> Server {
    Server::spawn(listener, move |mut s: TcpStream| async move {
        let _ = s.write_all(&[index]).await;
    })
}

/// A forwarder to `backend:PORT`, which resolves to 127.0.0.1 ..= 127.0.0.n.
fn tcp_forwarder(
    port: u16,
    n: u8,
    balance: Balance,
    ejection: Option<Ejection>,
) -> ForwarderHandle {
    let resolver = StaticResolver::new((1..=n).map(loopback));
    TcpForwarder::builder(
        ["127.0.0.1:0".parse().unwrap()],
        format!("backend:{port}").parse().unwrap(),
    )
    .resolver(resolver)
    .balance(balance)
    .ejection(ejection)
    .build()
    .unwrap()
    .start()
    .unwrap()
}

/// Which backend (its index byte) served one connection from `source`.
async fn served_by(proxy: SocketAddr, source: IpAddr) -> u8 {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(source, 0)).unwrap();
    let mut stream = socket.connect(proxy).await.unwrap();
    let (got, end) = within(LIMIT, "the backend's index", read_all(&mut stream)).await;
    end.unwrap();
    assert_eq!(got.len(), 1, "one index byte, got {got:?}");
    got[0]
}

/// A backend killed while connections go on: the connections after it are served by the
/// others without a single failure; after 3 refusals in a row its address is ejected, so
/// no later connection even tries it within the back-off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_backend_is_ejected_and_no_client_sees_a_failure() {
    let listeners = same_port(3).await;
    let port = listeners[0].local_addr().unwrap().port();
    let mut servers: Vec<Option<Server>> = listeners
        .into_iter()
        .map(|l| Some(proxy_testkit::echo::echo(l)))
        .collect();
    let handle = tcp_forwarder(
        port,
        3,
        Balance::RoundRobin,
        Some(Ejection::new(3, Duration::from_secs(60))),
    );
    let proxy = proxy_addr(&handle);
    for i in 0..60u64 {
        if i == 15 {
            servers[1] = None; // kill 127.0.0.2
        }
        let sent = payload(i, 2_000);
        let mut client = TcpStream::connect(proxy).await.unwrap();
        let got = within(LIMIT, "echo", send_and_receive(&mut client, &sent)).await;
        assert_bytes(&format!("connection {i}"), &got, &sent);
    }
    let s = handle.stats();
    assert_eq!(
        s.connect_failures.refused, 3,
        "tried 3 times, then skipped: {s:#?}"
    );
    assert_eq!(s.ejections, 1, "{s:#?}");
    assert_eq!(s.upstream_unavailable, 0, "{s:#?}");
    let dead = SocketAddr::new(loopback(2), port);
    let endpoint = handle
        .endpoints()
        .into_iter()
        .find(|e| e.addr == dead)
        .unwrap();
    assert_eq!((endpoint.ejections, endpoint.consecutive_failures), (1, 3));
    let served: usize = servers.iter().flatten().map(Server::accepted).sum();
    assert_eq!(served + 5, 60, "the dead backend served 5 before it died");
}

/// With every address ejected, a new connection is closed at once, without a connect
/// attempt, and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_address_ejected_connections_fail_fast() {
    let listeners = same_port(2).await;
    let port = listeners[0].local_addr().unwrap().port();
    drop(listeners); // both refuse
    let handle = tcp_forwarder(
        port,
        2,
        Balance::RoundRobin,
        Some(Ejection::new(1, Duration::from_secs(60))),
    );
    let proxy = proxy_addr(&handle);
    // The first connection tries both and ejects both.
    let mut first = TcpStream::connect(proxy).await.unwrap();
    within(LIMIT, "close", read_all(&mut first))
        .await
        .1
        .unwrap();
    assert_eq!(handle.stats().connect_failures.refused, 2);
    for _ in 0..3 {
        let mut client = TcpStream::connect(proxy).await.unwrap();
        let (got, end) = within(LIMIT, "a prompt close", read_all(&mut client)).await;
        assert!(got.is_empty() && end.is_ok(), "{got:?} {end:?}");
    }
    let s = handle.stats();
    assert_eq!(s.connect_failures.refused, 2, "no further attempts: {s:#?}");
    assert_eq!((s.all_ejected, s.upstream_unavailable), (3, 4), "{s:#?}");
    assert_eq!(s.ejections, 2);
}

/// A server that answers each connection with its index byte and keeps it open until
/// the client closes.
fn identify_and_hold(listener: TcpListener, index: u8) -> Server {
    Server::spawn(listener, move |mut s: TcpStream| async move {
        let _ = s.write_all(&[index]).await;
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest).await;
    })
}

/// Opens a connection and reads which backend holds it.
async fn held_by(proxy: SocketAddr) -> (TcpStream, u8) {
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    let mut index = [0];
    within(LIMIT, "the backend's index", stream.read_exact(&mut index))
        .await
        .unwrap();
    (stream, index[0])
}

/// Least connections: with one connection open on each backend, closing the one on the
/// second backend sends the next connection there (round robin would go on to the first).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_connections_fills_the_emptiest_backend() {
    let listeners = same_port(3).await;
    let port = listeners[0].local_addr().unwrap().port();
    let _servers: Vec<Server> = listeners
        .into_iter()
        .zip(0u8..)
        .map(|(l, i)| identify_and_hold(l, i))
        .collect();
    let handle = tcp_forwarder(port, 3, Balance::LeastConnections, None);
    let proxy = proxy_addr(&handle);
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(held_by(proxy).await);
    }
    let mut on: Vec<u8> = open.iter().map(|(_, i)| *i).collect();
    on.sort_unstable();
    assert_eq!(on, [0, 1, 2], "one on each backend");
    open.retain(|(_, i)| *i != 1);
    proxy_testkit::wait::eventually("the proxy to see the close", LIMIT, || {
        handle.stats().connections_open == 2
    })
    .await;
    for expected in [1, 0] {
        let (stream, index) = held_by(proxy).await;
        // After the emptied backend is full again, all have one: round robin decides.
        if expected == 1 {
            assert_eq!(index, 1, "the emptied backend gets the next connection");
        }
        open.push((stream, index));
    }
}

/// Client-IP affinity: six clients (source addresses 127.0.0.10 ..= .15), ten connections
/// each; every client stays on the backend of its first connection, and the clients are
/// spread over all three backends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_ip_affinity_keeps_each_client_on_its_backend() {
    let listeners = same_port(3).await;
    let port = listeners[0].local_addr().unwrap().port();
    let _servers: Vec<Server> = listeners
        .into_iter()
        .zip(0u8..)
        .map(|(l, i)| identify(l, i))
        .collect();
    let handle = tcp_forwarder(port, 3, Balance::client_ip(), None);
    let proxy = proxy_addr(&handle);
    let mut home: HashMap<IpAddr, u8> = HashMap::new();
    for round in 0..10 {
        for c in 10..16 {
            let client = loopback(c);
            let backend = served_by(proxy, client).await;
            let first = *home.entry(client).or_insert(backend);
            assert_eq!(backend, first, "client {client} moved in round {round}");
        }
    }
    let mut used: Vec<u8> = home.values().copied().collect();
    used.sort_unstable();
    used.dedup();
    assert_eq!(
        used,
        [0, 1, 2],
        "clients spread over every backend: {home:?}"
    );
}

/// UDP sessions follow client-IP affinity too: one client IP with four sockets (four
/// sessions) lands on one backend, every datagram echoed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_sessions_of_one_client_ip_share_a_backend() {
    let (a, b) = loop {
        let a = UdpServer::echo_on("127.0.0.1:0".parse().unwrap());
        let port = a.addr().port();
        if let Ok(sock) = proxy_testkit::udp::bind(SocketAddr::new(loopback(2), port)) {
            break (a, UdpServer::echo(sock));
        }
    };
    let port = a.addr().port();
    let handle = UdpForwarder::builder(
        ["127.0.0.1:0".parse().unwrap()],
        format!("backend:{port}").parse().unwrap(),
    )
    .resolver(StaticResolver::new([loopback(1), loopback(2)]))
    .balance(Balance::client_ip())
    .build()
    .unwrap()
    .start()
    .unwrap();
    let proxy = proxy_addr(&handle);
    for (client_ip, sockets) in [(loopback(20), 4), (loopback(21), 4)] {
        let before = (a.count(), b.count());
        for k in 0..sockets {
            let mut client = proxy_testkit::udp::Client::bind(SocketAddr::new(client_ip, 0));
            client.round_trip(proxy, &payload(k, 100)).await;
        }
        let got = (a.count() - before.0, b.count() - before.1);
        assert!(
            got == (4, 0) || got == (0, 4),
            "client {client_ip}: datagrams per backend {got:?}"
        );
    }
    assert_eq!(handle.stats().udp.sessions_total, 8);
}

/// A listener on `addr` that never answers a SYN: its backlog is filled by connections
/// nobody accepts, so the kernel drops further SYNs, as a host that is down would.
fn unresponsive(addr: SocketAddr) -> (socket2::Socket, Vec<std::net::TcpStream>) {
    let listener =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    listener.bind(&addr.into()).unwrap();
    listener.listen(0).unwrap();
    let mut held = Vec::new();
    for _ in 0..8 {
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(s) => held.push(s),
            Err(_) => return (listener, held),
        }
    }
    panic!("the backlog of {addr} never filled");
}

/// Happy Eyeballs: the first address does not answer; after 250 ms the next is tried
/// alongside it and wins, long before the 10 s connect timeout. The abandoned attempt is
/// no failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unresponsive_first_address_costs_one_attempt_delay() {
    let good = TcpListener::bind((loopback(1), 0)).await.unwrap();
    let port = good.local_addr().unwrap().port();
    let _echo = proxy_testkit::echo::echo(good);
    let _down = unresponsive(SocketAddr::new(loopback(2), port));
    let handle = TcpForwarder::builder(
        ["127.0.0.1:0".parse().unwrap()],
        format!("backend:{port}").parse().unwrap(),
    )
    .resolver(StaticResolver::new([loopback(2), loopback(1)]))
    .timeouts(support::timeouts(|t| {
        t.connect = Duration::from_secs(10);
        t.connect_total = Duration::from_secs(20);
    }))
    .build()
    .unwrap()
    .start()
    .unwrap();
    let proxy = proxy_addr(&handle);
    for i in 0..2u64 {
        let started = std::time::Instant::now();
        let sent = payload(i, 1000);
        let mut client = TcpStream::connect(proxy).await.unwrap();
        let got = within(LIMIT, "echo", send_and_receive(&mut client, &sent)).await;
        assert_bytes("echo", &got, &sent);
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(3),
            "connection {i} took {took:?}"
        );
    }
    let s = handle.stats();
    assert_eq!(s.connect_failures.total(), 0, "{s:#?}");
}

/// Active health checks: a backend that stops listening is marked down after `fall`
/// failed checks and no connection tries it (no connect failures at all); once it
/// listens again, `rise` passed checks bring it back into the rotation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_take_a_dead_backend_out_and_bring_it_back() {
    use proxy_core::HealthCheck;
    let listeners = same_port(2).await;
    let port = listeners[0].local_addr().unwrap().port();
    let mut servers: Vec<Option<Server>> = listeners
        .into_iter()
        .map(|l| Some(proxy_testkit::echo::echo(l)))
        .collect();
    let handle = TcpForwarder::builder(
        ["127.0.0.1:0".parse().unwrap()],
        format!("backend:{port}").parse().unwrap(),
    )
    .resolver(StaticResolver::new([loopback(1), loopback(2)]))
    .health_check(HealthCheck::every(Duration::from_millis(50)).with(
        Duration::from_millis(500),
        2,
        2,
    ))
    .build()
    .unwrap()
    .start()
    .unwrap();
    let proxy = proxy_addr(&handle);
    let second = SocketAddr::new(loopback(2), port);
    let down = |handle: &ForwarderHandle| {
        handle
            .endpoints()
            .iter()
            .any(|e| e.addr == second && e.checked_down)
    };
    let round_trips = |n: u64| async move {
        for i in 0..n {
            let sent = payload(i, 500);
            let mut client = TcpStream::connect(proxy).await.unwrap();
            let got = within(LIMIT, "echo", send_and_receive(&mut client, &sent)).await;
            assert_bytes("echo", &got, &sent);
        }
    };
    // The backend on 127.0.0.2 dies; health checks notice.
    servers[1] = None;
    proxy_testkit::wait::eventually("127.0.0.2 marked down", LIMIT, || down(&handle)).await;
    let connects = |handle: &ForwarderHandle, addr: SocketAddr| {
        handle
            .endpoints()
            .iter()
            .find(|e| e.addr == addr)
            .map_or(0, |e| e.connects)
    };
    let first = SocketAddr::new(loopback(1), port);
    round_trips(10).await;
    assert_eq!(
        handle.stats().connect_failures.total(),
        0,
        "the dead address was skipped"
    );
    assert_eq!(
        (connects(&handle, first), connects(&handle, second)),
        (10, 0)
    );
    // It comes back; two passed checks later it takes connections again.
    let revived = TcpListener::bind(second).await.unwrap();
    servers[1] = Some(proxy_testkit::echo::echo(revived));
    proxy_testkit::wait::eventually("127.0.0.2 up again", LIMIT, || !down(&handle)).await;
    round_trips(10).await;
    assert_eq!(connects(&handle, second), 5, "back in the rotation");
    assert_eq!(handle.stats().connect_failures.total(), 0);
}
