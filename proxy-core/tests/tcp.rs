//! `TcpForwarder` against real sockets on loopback: byte-exact relaying in both relay
//! modes, half-close, resets, failover and round robin, an unreachable upstream,
//! backpressure, graceful shutdown, dual stack, and build errors.
//!
//! Every relay test checks content, not only lengths. Ports are chosen by the kernel.

mod support;

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use proxy_core::resolve::StaticResolver;
use proxy_core::{
    AcceptProxy, Balance, BuildError, Ejection, HealthCheck, MAX_DURATION, RelayMode, Target,
    TcpForwarder, Timeouts, UdpForwarder,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio::time::Instant;

use proxy_testkit::client::{
    End, connect, read_all, round_trip, send_and_receive, set_reset_on_close, wait_end,
};
use proxy_testkit::data::{Rng, assert_bytes, payload};
use proxy_testkit::echo::{Server, echo, echo_server, listener, listener_v6, recorder};
use proxy_testkit::net::{RefusingPort, v4_any_port};
use proxy_testkit::wait::{join_all, settled_stats, within};
use support::{MODES, forwarder, proxy_addr};

/// The most any single step of a test may take on a loaded machine.
const LIMIT: Duration = Duration::from_secs(30);

fn splices(mode: RelayMode) -> bool {
    mode == RelayMode::Auto && cfg!(target_os = "linux")
}

// ===== byte-exact relaying =====

/// 64 concurrent echo sessions of 0 B to 4 MiB through one forwarder, each checked byte
/// for byte, then the counters.
async fn relays_many_connections_exactly(mode: RelayMode) {
    let echo = echo_server().await;
    let handle = forwarder(echo.addr(), mode, Timeouts::default());
    let proxy = proxy_addr(&handle);

    // Edge sizes around the 64 KiB buffer (and the kernel's default pipe), every eighth connection large, the
    // rest up to 256 KiB.
    let mut rng = Rng::new(1);
    let sizes: Vec<usize> = (0..64usize)
        .map(|i| match i {
            0 => 0,
            1 => 1,
            2 => (64 << 10) - 1,
            3 => 64 << 10,
            4 => (64 << 10) + 1,
            5 => 4 << 20,
            _ if i % 8 == 0 => rng.below(4 << 20),
            _ => rng.below(256 << 10),
        })
        .collect();
    let total: u64 = sizes.iter().map(|&n| n as u64).sum();

    let mut clients = JoinSet::new();
    for (i, &size) in sizes.iter().enumerate() {
        clients.spawn(async move {
            let sent = payload(100 + i as u64, size);
            let mut stream = connect(proxy).await;
            let got = send_and_receive(&mut stream, &sent).await;
            assert_bytes(&format!("connection {i} ({size} B)"), &got, &sent);
        });
    }
    within(LIMIT, "64 echo sessions", join_all(clients)).await;

    let s = settled_stats(&handle, |s| {
        s.connections_open == 0 && s.bytes_to_upstream >= total && s.bytes_to_downstream >= total
    })
    .await;
    assert_eq!(s.connections_total, 64);
    assert_eq!(s.bytes_to_upstream, total);
    assert_eq!(s.bytes_to_downstream, total);
    // Each burst starts as a copy; the 4 MiB transfers are mostly spliced.
    if splices(mode) {
        assert!(
            s.bytes_spliced > total && s.bytes_spliced < 2 * total,
            "{} of {} bytes spliced",
            s.bytes_spliced,
            2 * total
        );
    } else if mode == RelayMode::Copy {
        assert_eq!(s.bytes_spliced, 0, "bytes_spliced in {mode:?} mode");
    }
    assert_eq!(s.splice_fallbacks, 0);
    assert_eq!(s.connect_failures.total(), 0);
    assert_eq!(s.upstream_unavailable, 0);
    assert_eq!(echo.accepted(), 64);
    assert!(handle.shutdown(Duration::from_secs(5)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relays_many_connections_exactly_auto() {
    relays_many_connections_exactly(RelayMode::Auto).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relays_many_connections_exactly_copy() {
    relays_many_connections_exactly(RelayMode::Copy).await;
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relays_many_connections_exactly_sockmap() {
    relays_many_connections_exactly(RelayMode::Sockmap).await;
}

/// Request/response messages are copied (a read and a write each way, where splice would
/// take three calls); a transfer that fills the copy buffer goes on with splice.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_messages_are_copied_and_bulk_is_spliced() {
    let echo = echo_server().await;
    let handle = forwarder(echo.addr(), RelayMode::Auto, Timeouts::default());
    let mut client = connect(proxy_addr(&handle)).await;
    for i in 0..200 {
        within(
            LIMIT,
            "small round trip",
            round_trip(&mut client, &payload(i, 1000)),
        )
        .await;
    }
    let s = handle.stats();
    assert_eq!(
        (s.bytes_to_upstream, s.bytes_to_downstream),
        (200_000, 200_000)
    );
    assert_eq!(s.bytes_spliced, 0, "small messages were spliced");

    let bulk = payload(7, 8 << 20);
    within(LIMIT, "bulk round trip", round_trip(&mut client, &bulk)).await;
    let s = handle.stats();
    let moved = 2 * bulk.len() as u64;
    assert!(
        s.bytes_spliced > moved / 2,
        "only {} of {moved} bulk bytes spliced",
        s.bytes_spliced
    );
    drop(client);
    assert!(handle.shutdown(Duration::from_secs(5)).await);
}

// ===== half-close =====

/// The client sends a request and its FIN; the upstream sees exactly the request then
/// EOF, and still sends a long reply that the client receives in full before the EOF.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_half_close_keeps_the_reply_direction_open() {
    for &mode in MODES {
        let upstream = listener().await;
        let handle = forwarder(upstream.local_addr().unwrap(), mode, Timeouts::default());
        let request = payload(2, 300 << 10);
        let reply = payload(3, 2 << 20);

        let server = tokio::spawn({
            let (request, reply) = (request.clone(), reply.clone());
            async move {
                let (mut s, _) = upstream.accept().await.expect("accept");
                let (got, end) = read_all(&mut s).await;
                end.expect("the request ends with a FIN");
                assert_bytes("request before the upstream's EOF", &got, &request);
                s.write_all(&reply)
                    .await
                    .expect("reply after the client's FIN");
                s.shutdown().await.expect("upstream FIN");
            }
        });

        let mut client = connect(proxy_addr(&handle)).await;
        client.write_all(&request).await.expect("write the request");
        client.shutdown().await.expect("client FIN");
        let (got, end) = within(LIMIT, "reading the reply", read_all(&mut client)).await;
        end.expect("the reply ends with a FIN");
        assert_bytes(&format!("reply ({mode:?})"), &got, &reply);
        within(LIMIT, "upstream", server)
            .await
            .expect("upstream task");

        let s = settled_stats(&handle, |s| s.connections_open == 0).await;
        assert_eq!(s.bytes_to_upstream, request.len() as u64);
        assert_eq!(s.bytes_to_downstream, reply.len() as u64);
    }
}

/// The upstream sends a greeting and its FIN first; the client reads it to EOF, then keeps
/// sending, and the upstream receives every byte before the client's FIN.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_half_close_keeps_the_request_direction_open() {
    for &mode in MODES {
        let upstream = listener().await;
        let handle = forwarder(upstream.local_addr().unwrap(), mode, Timeouts::default());
        let greeting = payload(4, 200 << 10);
        let request = payload(5, 1 << 20);

        let server = tokio::spawn({
            let (greeting, request) = (greeting.clone(), request.clone());
            async move {
                let (mut s, _) = upstream.accept().await.expect("accept");
                s.write_all(&greeting).await.expect("greeting");
                s.shutdown().await.expect("upstream FIN");
                let (got, end) = read_all(&mut s).await;
                end.expect("the request ends with a FIN");
                assert_bytes("request after the upstream's FIN", &got, &request);
            }
        });

        let mut client = connect(proxy_addr(&handle)).await;
        let (got, end) = within(LIMIT, "reading the greeting", read_all(&mut client)).await;
        end.expect("the greeting ends with a FIN");
        assert_bytes(&format!("greeting ({mode:?})"), &got, &greeting);
        // The upstream has closed its side; this side still carries a megabyte.
        for chunk in request.chunks(100 << 10) {
            client.write_all(chunk).await.expect("write after the EOF");
        }
        client.shutdown().await.expect("client FIN");
        within(LIMIT, "upstream", server)
            .await
            .expect("upstream task");
        assert_eq!(wait_end(&mut client, LIMIT).await, End::Eof);

        let s = settled_stats(&handle, |s| s.connections_open == 0).await;
        assert_eq!(s.bytes_to_upstream, request.len() as u64);
        assert_eq!(s.bytes_to_downstream, greeting.len() as u64);
    }
}

// ===== resets =====

/// A reset from either side reaches the other side as a reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_reaches_the_other_side() {
    for &mode in MODES {
        for client_resets in [true, false] {
            let (handle, client, up) = established(mode).await;
            let (resetting, mut other) = if client_resets {
                (client, up)
            } else {
                (up, client)
            };
            set_reset_on_close(&resetting);
            drop(resetting);
            let mut buf = [0; 64];
            let read = within(LIMIT, "read after the reset", other.read(&mut buf)).await;
            assert_eq!(
                read.map_err(|e| e.kind()),
                Err(io::ErrorKind::ConnectionReset),
                "{mode:?}, client resets: {client_resets}"
            );
            settled_stats(&handle, |s| s.connections_open == 0).await;
        }
    }
}

/// A client that half-closes and then resets is no longer read by the proxy; the reset
/// still reaches the silent upstream at once, not when the half-close timeout fires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_after_half_close_reaches_the_peer() {
    for &mode in MODES {
        for client_resets in [true, false] {
            let (handle, client, up) = established(mode).await;
            // The side that resets first sends its FIN; the proxy forwards it.
            let (mut resetting, mut silent) = if client_resets {
                (client, up)
            } else {
                (up, client)
            };
            resetting.shutdown().await.unwrap();
            let mut buf = [0; 64];
            let eof = within(LIMIT, "FIN forwarded", silent.read(&mut buf)).await;
            assert_eq!(eof.unwrap(), 0, "{mode:?}");

            set_reset_on_close(&resetting);
            drop(resetting);
            // The silent side has read the FIN, so its reads return 0 even after a reset;
            // the reset shows as the socket's pending error (SO_ERROR), which is checked
            // without writing, so nothing provokes it. Far below the 60 s half-close timeout.
            let mut error = None;
            proxy_testkit::wait::eventually("reset forwarded", Duration::from_secs(5), || {
                error = silent.take_error().unwrap();
                error.is_some()
            })
            .await;
            let kind = error.unwrap().kind();
            assert!(
                matches!(
                    kind,
                    io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
                ),
                "{mode:?}, client resets: {client_resets}: {kind:?}"
            );
            settled_stats(&handle, |s| s.connections_open == 0).await;
        }
    }
}

/// One request and reply, so both legs are established and relaying.
/// A forwarder in `mode` and one connection through it, as (handle, client, upstream),
/// after a ping and a pong.
async fn established(
    mode: RelayMode,
) -> (
    proxy_core::ForwarderHandle,
    tokio::net::TcpStream,
    tokio::net::TcpStream,
) {
    let upstream = listener().await;
    let handle = forwarder(upstream.local_addr().unwrap(), mode, Timeouts::default());
    let mut client = connect(proxy_addr(&handle)).await;
    let (mut up, _) = within(LIMIT, "accept", upstream.accept()).await.unwrap();
    exchange(&mut client, &mut up).await;
    (handle, client, up)
}

async fn exchange(client: &mut tokio::net::TcpStream, up: &mut tokio::net::TcpStream) {
    client.write_all(b"ping").await.unwrap();
    let mut buf = [0; 4];
    up.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping");
    up.write_all(b"pong").await.unwrap();
    client.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"pong");
}

// ===== failover and round robin =====

/// Linux routes all of 127.0.0.0/8 to the loopback interface, so a second loopback
/// address can hold (or refuse) the same port as 127.0.0.1.
#[cfg(target_os = "linux")]
const OTHER_LOOPBACK: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

/// A name target whose resolver answers [a refusing address, a live echo server]: every
/// connection succeeds, and the refused attempts are counted.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_skips_a_refusing_address() {
    let echo = echo_server().await;
    let port = echo.addr().port();
    // The kernel gave the echo server this port on 127.0.0.1; nothing listens on it at
    // 127.0.0.2, so connects there are refused.
    let target: Target = format!("backend:{port}").parse().unwrap();
    let resolver = StaticResolver::new([OTHER_LOOPBACK.into(), Ipv4Addr::LOCALHOST.into()]);
    let handle = TcpForwarder::builder([v4_any_port()], target)
        .resolver(resolver)
        .build()
        .unwrap()
        .start()
        .unwrap();
    let proxy = proxy_addr(&handle);

    for i in 0..8 {
        let sent = payload(10 + i, 20_000);
        let mut client = connect(proxy).await;
        let got = within(LIMIT, "echo session", send_and_receive(&mut client, &sent)).await;
        assert_bytes(&format!("connection {i}"), &got, &sent);
    }
    let s = settled_stats(&handle, |s| {
        s.connections_open == 0 && s.connect_failures.refused >= 4
    })
    .await;
    assert_eq!(s.connections_total, 8);
    // Round robin starts every other connection at the refusing address.
    assert_eq!(s.connect_failures.refused, 4);
    assert_eq!(s.connect_failures.total(), 4);
    assert_eq!(s.upstream_unavailable, 0);
    assert_eq!(echo.accepted(), 8);
    // Per-endpoint health: the refusing address failed every time, the other never.
    let endpoints = handle.endpoints();
    let refusing = SocketAddr::from((OTHER_LOOPBACK, port));
    let live = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    assert_eq!(endpoints.len(), 2, "{endpoints:?}");
    let e = endpoints.iter().find(|e| e.addr == refusing).unwrap();
    assert_eq!((e.connects, e.failures, e.consecutive_failures), (0, 4, 4));
    assert!(!e.healthy());
    let e = endpoints.iter().find(|e| e.addr == live).unwrap();
    assert_eq!((e.connects, e.failures), (8, 0));
    assert!(e.healthy());
}

/// Two live upstreams behind one name get connections alternately.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_alternates_between_upstreams() {
    let (a, b) = same_port_pair().await;
    let port = a.local_addr().unwrap().port();
    let (a, b) = (echo(a), echo(b));
    let target: Target = format!("backend:{port}").parse().unwrap();
    let resolver = StaticResolver::new([Ipv4Addr::LOCALHOST.into(), OTHER_LOOPBACK.into()]);
    let handle = TcpForwarder::builder([v4_any_port()], target)
        .resolver(resolver)
        .build()
        .unwrap()
        .start()
        .unwrap();
    let proxy = proxy_addr(&handle);

    let mut served = Vec::new();
    for i in 0..8 {
        let before = (a.accepted(), b.accepted());
        let sent = payload(20 + i, 5_000);
        let mut client = connect(proxy).await;
        let got = within(LIMIT, "echo session", send_and_receive(&mut client, &sent)).await;
        assert_bytes(&format!("connection {i}"), &got, &sent);
        served.push(match (a.accepted() - before.0, b.accepted() - before.1) {
            (1, 0) => 'a',
            (0, 1) => 'b',
            other => panic!("connection {i}: accepts went up by {other:?}"),
        });
    }
    assert!(
        served.windows(2).all(|w| w[0] != w[1]),
        "not alternating: {served:?}"
    );
    assert_eq!((a.accepted(), b.accepted()), (4, 4));
    let s = settled_stats(&handle, |s| s.connections_open == 0).await;
    assert_eq!(s.connect_failures.total(), 0);
}

/// Listeners on 127.0.0.1:P and 127.0.0.2:P for a kernel-chosen P.
#[cfg(target_os = "linux")]
async fn same_port_pair() -> (TcpListener, TcpListener) {
    for _ in 0..20 {
        let a = listener().await;
        let port = a.local_addr().unwrap().port();
        if let Ok(b) = TcpListener::bind((OTHER_LOOPBACK, port)).await {
            return (a, b);
        }
    }
    panic!("no port free on both 127.0.0.1 and 127.0.0.2 in 20 tries");
}

// ===== upstream down =====

/// With every upstream address refusing, the client gets a clean close at once (not a
/// hang, not a reset); the listener keeps serving and works once the upstream is up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unavailable_upstream_closes_cleanly_and_listener_recovers() {
    let refusing = RefusingPort::bind();
    let target = refusing.addr();
    let handle = forwarder(target, RelayMode::Auto, Timeouts::default());
    let proxy = proxy_addr(&handle);
    for _ in 0..3 {
        let mut client = connect(proxy).await;
        let (got, end) = within(Duration::from_secs(5), "clean close", read_all(&mut client)).await;
        end.expect("a clean EOF, not a reset");
        assert!(got.is_empty());
    }
    let s = settled_stats(&handle, |s| {
        s.connections_open == 0 && s.upstream_unavailable == 3
    })
    .await;
    assert_eq!(s.connect_failures.refused, 3);

    // The upstream comes up on its port; the same listener now forwards to it.
    drop(refusing);
    let upstream = TcpListener::bind(target)
        .await
        .expect("bind the upstream's port again");
    let _echo = echo(upstream);
    let sent = payload(30, 100_000);
    let mut client = connect(proxy).await;
    let got = within(LIMIT, "echo session", send_and_receive(&mut client, &sent)).await;
    assert_bytes("after the upstream came up", &got, &sent);
    let s = settled_stats(&handle, |s| s.connections_open == 0).await;
    assert_eq!(s.connections_total, 4);
    assert_eq!(s.upstream_unavailable, 3);
}

// ===== backpressure =====

/// The upstream reads nothing while the client writes as fast as it can for 2 s: the
/// client soon cannot write more (kernel buffers only; the proxy does not buffer without
/// bound). Then the upstream drains and receives every byte in order.
async fn slow_reader_gets_backpressure(mode: RelayMode) {
    let (server, mut recorded) = recorder_paused().await;
    let handle = forwarder(server.addr, mode, Timeouts::default());
    let mut client = connect(proxy_addr(&handle)).await;
    // A fixed, small send buffer on our side keeps the proxy's receive buffer from
    // autotuning towards tcp_rmem's maximum (32 MiB on some hosts) in the first burst.
    socket2::SockRef::from(&client)
        .set_send_buffer_size(256 << 10)
        .expect("SO_SNDBUF");

    let mut rng = Rng::new(6);
    let mut sent: Vec<u8> = Vec::with_capacity(8 << 20);
    let mut chunk = vec![0; 64 << 10];
    rng.fill(&mut chunk);
    let mut offset = 0;
    let deadline = Instant::now() + Duration::from_secs(2);
    for _ in 0..1_000_000 {
        if Instant::now() >= deadline || sent.len() > 64 << 20 {
            break;
        }
        if tokio::time::timeout_at(deadline, client.writable())
            .await
            .is_err()
        {
            break;
        }
        match client.try_write(&chunk[offset..]) {
            Ok(n) => {
                sent.extend_from_slice(&chunk[offset..offset + n]);
                offset += n;
                if offset == chunk.len() {
                    rng.fill(&mut chunk);
                    offset = 0;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("write: {e}"),
        }
    }
    let held = sent.len();
    assert!(
        held < 32 << 20,
        "{mode:?}: the client wrote {held} bytes to a peer that reads nothing"
    );
    assert!(held > 64 << 10, "{mode:?}: only {held} bytes written");

    // Let the upstream read, then end the stream.
    server.release();
    client.shutdown().await.expect("client FIN");
    let rec = within(LIMIT, "upstream drains", recorded.recv())
        .await
        .expect("a recorded connection");
    rec.end.expect("the stream ends with a FIN");
    assert_bytes(&format!("drained ({mode:?})"), &rec.data, &sent);
    let s = settled_stats(&handle, |s| s.connections_open == 0).await;
    assert_eq!(s.bytes_to_upstream, held as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_reader_gets_backpressure_auto() {
    slow_reader_gets_backpressure(RelayMode::Auto).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_reader_gets_backpressure_copy() {
    slow_reader_gets_backpressure(RelayMode::Copy).await;
}

/// A recording upstream that reads nothing until released.
struct PausedRecorder {
    addr: SocketAddr,
    go: tokio::sync::watch::Sender<bool>,
    _server: Server,
}

impl PausedRecorder {
    fn release(&self) {
        self.go.send_replace(true);
    }
}

async fn recorder_paused() -> (
    PausedRecorder,
    tokio::sync::mpsc::UnboundedReceiver<proxy_testkit::echo::Recorded>,
) {
    let (go, wait) = tokio::sync::watch::channel(false);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let server = Server::spawn(listener().await, move |mut stream| {
        let (mut wait, tx) = (wait.clone(), tx.clone());
        async move {
            let _ = wait.wait_for(|go| *go).await;
            let (data, end) = read_all(&mut stream).await;
            let _ = tx.send(proxy_testkit::echo::Recorded {
                data,
                end: end.map_err(|e| e.kind()),
            });
        }
    });
    let addr = server.addr();
    (
        PausedRecorder {
            addr,
            go,
            _server: server,
        },
        rx,
    )
}

// ===== graceful shutdown =====

/// A connection open at shutdown finishes its request and reply within the grace period;
/// shutdown then returns true and the port is free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_an_open_connection_finish() {
    let echo = echo_server().await;
    let handle = forwarder(echo.addr(), RelayMode::Auto, Timeouts::default());
    let proxy = proxy_addr(&handle);
    let mut client = connect(proxy).await;
    round_trip(&mut client, b"accepted and relaying").await;

    let shutdown = handle.shutdown(Duration::from_secs(20));
    tokio::pin!(shutdown);
    // Start it: it stops accepting and waits for the open connection.
    tokio::select! {
        biased;
        _ = &mut shutdown => panic!("shutdown returned with a connection open"),
        () = std::future::ready(()) => {}
    }
    let request = payload(40, 500_000);
    let reply = within(LIMIT, "request", send_and_receive(&mut client, &request)).await;
    assert_bytes("reply during shutdown", &reply, &request);
    assert!(within(LIMIT, "shutdown", shutdown).await);

    assert_refused(proxy).await;
    std::net::TcpListener::bind(proxy).expect("the port is free after shutdown");
}

/// A connection still open when the grace period ends is reset; shutdown returns false.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_resets_connections_past_the_grace_period() {
    let upstream = listener().await;
    let (up, mut recorded) = recorder(upstream);
    let handle = forwarder(up.addr(), RelayMode::Auto, Timeouts::default());
    let proxy = proxy_addr(&handle);
    let mut client = connect(proxy).await;
    client.write_all(b"never finished").await.unwrap();
    // Accepted, connected and relaying before the shutdown starts.
    settled_stats(&handle, |s| s.bytes_to_upstream == 14).await;

    let grace = Duration::from_millis(300);
    let started = Instant::now();
    assert!(!within(LIMIT, "shutdown", handle.shutdown(grace)).await);
    assert!(started.elapsed() >= grace);
    assert_eq!(wait_end(&mut client, LIMIT).await, End::Reset);
    let rec = within(LIMIT, "upstream", recorded.recv()).await.unwrap();
    assert_bytes("upstream before the reset", &rec.data, b"never finished");
    assert_eq!(rec.end, Err(io::ErrorKind::ConnectionReset));

    assert_refused(proxy).await;
    std::net::TcpListener::bind(proxy).expect("the port is free after shutdown");
}

async fn assert_refused(addr: SocketAddr) {
    let e = tokio::net::TcpStream::connect(addr)
        .await
        .expect_err("nothing listens after shutdown");
    assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
}

/// Starting and stopping a forwarder 50 times leaves no descriptor behind. Other tests in
/// this binary open sockets concurrently, so the count runs in a child process of its own.
#[cfg(target_os = "linux")]
#[test]
fn start_stop_50_times_without_fd_leak() {
    proxy_testkit::process::in_own_process(
        "start_stop_50_times_without_fd_leak",
        "PROXY_CORE_TEST_FD_LEAK_CHILD",
        start_stop_50_times,
    );
}

#[cfg(target_os = "linux")]
async fn start_stop_50_times() {
    let echo = echo_server().await;
    let before = proxy_testkit::process::open_fds();
    for i in 0..50 {
        let handle = forwarder(echo.addr(), RelayMode::Auto, Timeouts::default());
        let proxy = proxy_addr(&handle);
        let mut client = connect(proxy).await;
        let sent = payload(50 + i, 100_000);
        if i % 10 == 9 {
            // Still open at shutdown: reset after a short grace period.
            round_trip(&mut client, &sent).await;
            let stop = handle.shutdown(Duration::from_millis(20));
            assert!(!within(LIMIT, "shutdown", stop).await);
            assert_eq!(wait_end(&mut client, LIMIT).await, End::Reset);
        } else {
            let got = within(LIMIT, "echo session", send_and_receive(&mut client, &sent)).await;
            assert_bytes(&format!("cycle {i}"), &got, &sent);
            let stop = handle.shutdown(Duration::from_secs(5));
            assert!(within(LIMIT, "shutdown", stop).await);
        }
        drop(client);
        std::net::TcpListener::bind(proxy).expect("the port is free after shutdown");
    }
    proxy_testkit::wait::eventually("echo connections closed", LIMIT, || echo.active() == 0).await;
    let after = proxy_testkit::process::open_fds();
    assert!(
        after <= before + 2,
        "{before} descriptors open before 50 start/stop cycles, {after} after"
    );
}

// ===== dual stack =====

/// A `[::]:0` listener accepts over IPv4 and IPv6, and an IPv6 upstream works. Skipped
/// when the host has no IPv6.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dual_stack_listener_and_ipv6_upstream() {
    let Some(upstream) = listener_v6().await else {
        eprintln!("no IPv6 on this host; skipped");
        return;
    };
    let echo = echo(upstream);
    let forwarder = TcpForwarder::builder(["[::]:0".parse().unwrap()], echo.addr().into())
        .build()
        .unwrap();
    let handle = forwarder.start().expect("bind [::]:0");
    let listen = proxy_addr(&handle);
    assert!(listen.is_ipv6() && listen.port() != 0, "{listen}");

    let clients = [
        IpAddr::from(Ipv4Addr::LOCALHOST),
        Ipv6Addr::LOCALHOST.into(),
    ];
    for (i, ip) in clients.into_iter().enumerate() {
        let sent = payload(60 + i as u64, 200_000);
        let mut client = connect(SocketAddr::new(ip, listen.port())).await;
        let got = within(LIMIT, "echo session", send_and_receive(&mut client, &sent)).await;
        assert_bytes(&format!("client on {ip}"), &got, &sent);
    }
    let s = settled_stats(&handle, |s| s.connections_open == 0).await;
    assert_eq!(s.connections_total, 2);
    assert_eq!(echo.accepted(), 2);
}

// ===== build errors =====

#[test]
fn build_rejects_bad_settings() {
    let target: Target = "127.0.0.1:9".parse().unwrap();
    let builder = || TcpForwarder::builder([v4_any_port()], target.clone());
    let err = |b: proxy_core::TcpForwarderBuilder| b.build().unwrap_err();

    let none: [SocketAddr; 0] = [];
    assert_eq!(
        err(TcpForwarder::builder(none, target.clone())),
        BuildError::NoListenAddress
    );
    let twice: SocketAddr = "127.0.0.1:8080".parse().unwrap();
    assert_eq!(
        err(TcpForwarder::builder([twice, twice], target.clone())),
        BuildError::DuplicateListenAddress(twice)
    );
    // Port 0 twice is two listeners on two kernel-chosen ports, not a duplicate.
    assert!(
        TcpForwarder::builder([v4_any_port(), v4_any_port()], target.clone())
            .build()
            .is_ok()
    );

    let zero = Duration::ZERO;
    assert_eq!(
        err(builder().idle_timeout(zero)),
        BuildError::ZeroTimeout("idle")
    );
    assert_eq!(
        err(builder().connect_timeout(zero)),
        BuildError::ZeroTimeout("connect")
    );
    type ZeroIt = fn(&mut Timeouts);
    let fields: [(&str, ZeroIt); 5] = [
        ("connect", |t| t.connect = Duration::ZERO),
        ("connect_total", |t| t.connect_total = Duration::ZERO),
        ("idle", |t| t.idle = Some(Duration::ZERO)),
        ("half_close", |t| t.half_close = Some(Duration::ZERO)),
        ("max_lifetime", |t| t.max_lifetime = Some(Duration::ZERO)),
    ];
    for (name, zero_it) in fields {
        let e = err(builder().timeouts(support::timeouts(zero_it)));
        assert_eq!(e, BuildError::ZeroTimeout(name));
        assert!(e.to_string().contains(name), "{e}");
    }
    let inverted = support::timeouts(|t| t.connect = t.connect_total * 2);
    assert_eq!(
        err(builder().timeouts(inverted)),
        BuildError::ConnectTimeoutExceedsTotal
    );
    // Disabled timers are not zero.
    let disabled = support::timeouts(|t| t.half_close = None);
    assert!(
        builder()
            .timeouts(disabled)
            .idle_timeout(None)
            .build()
            .is_ok()
    );

    for bad in [0, 4095, (1 << 30) + 1] {
        let e = err(builder().pipe_size(bad));
        assert_eq!(e, BuildError::PipeSize(bad));
        assert!(e.to_string().contains(&bad.to_string()), "{e}");
    }
    for good in [4096, 1 << 30] {
        assert!(
            builder().pipe_size(good).build().is_ok(),
            "pipe size {good}"
        );
    }
    for bad in [1023, (16 << 20) + 1] {
        assert_eq!(err(builder().buffer_size(bad)), BuildError::BufferSize(bad));
    }
    assert_eq!(err(builder().backlog(0)), BuildError::Backlog);
}

/// A duration past [`MAX_DURATION`] (10 years) is refused by `build()`, naming the setting:
/// it used to be accepted, and then every connection panicked computing its deadline
/// (`Instant + Duration` overflows). Exactly the maximum is fine.
#[test]
fn durations_past_the_maximum_are_refused_naming_the_setting() {
    let target: Target = "127.0.0.1:9".parse().unwrap();
    let builder = || TcpForwarder::builder([v4_any_port()], target.clone());
    let over = MAX_DURATION + Duration::from_millis(1);
    type SetIt = fn(&mut Timeouts, Duration);
    let fields: [(&str, SetIt); 6] = [
        ("connect", |t, d| t.connect = d),
        ("connect_total", |t, d| t.connect_total = d),
        ("idle", |t, d| t.idle = Some(d)),
        ("half_close", |t, d| t.half_close = Some(d)),
        ("max_lifetime", |t, d| t.max_lifetime = Some(d)),
        ("udp_session_idle", |t, d| t.udp_session_idle = Some(d)),
    ];
    let refused = |result: Result<(), BuildError>, name: &'static str| {
        let e = result.expect_err(name);
        assert_eq!(e, BuildError::TooLong(name));
        let message = e.to_string();
        assert!(
            message.contains(name) && message.contains("10 years"),
            "{message}"
        );
    };
    for (name, set_it) in fields {
        for d in [over, Duration::MAX] {
            let t = support::timeouts(|t| set_it(t, d));
            refused(builder().timeouts(t).build().map(drop), name);
        }
    }
    let huge = Duration::MAX;
    refused(
        UdpForwarder::builder([v4_any_port()], target.clone())
            .timeouts(support::timeouts(|t| t.udp_session_idle = Some(huge)))
            .build()
            .map(drop),
        "udp_session_idle",
    );
    refused(
        builder()
            .balance(Balance::ClientIp { timeout: huge })
            .build()
            .map(drop),
        "affinity_timeout",
    );
    refused(
        builder().ejection(Ejection::new(3, huge)).build().map(drop),
        "eject_for",
    );
    refused(
        builder()
            .health_check(HealthCheck::every(huge))
            .build()
            .map(drop),
        "health_check_interval",
    );
    refused(
        builder()
            .health_check(HealthCheck::default().with(huge, 1, 1))
            .build()
            .map(drop),
        "health_check_timeout",
    );
    let accept = AcceptProxy::new(["127.0.0.1/32".parse().unwrap()]).timeout(huge);
    refused(
        builder().accept_proxy(accept).build().map(drop),
        "proxy_header_timeout",
    );
    type SetCache = fn(&mut proxy_core::resolve::CachePolicy);
    let cache: [(&str, SetCache); 4] = [
        ("dns_refresh", |p| p.refresh = Some(Duration::MAX)),
        ("dns_fallback_ttl", |p| p.fallback_ttl = Duration::MAX),
        ("dns_min_ttl", |p| p.min_ttl = Duration::MAX),
        ("dns_max_ttl", |p| p.max_ttl = Duration::MAX),
    ];
    for (name, set_it) in cache {
        let mut policy = proxy_core::resolve::CachePolicy::default();
        set_it(&mut policy);
        refused(builder().cache(policy).build().map(drop), name);
    }

    // Exactly the maximum everywhere builds.
    let t = support::timeouts(|t| {
        t.connect = MAX_DURATION;
        t.connect_total = MAX_DURATION;
        t.idle = Some(MAX_DURATION);
        t.half_close = Some(MAX_DURATION);
        t.max_lifetime = Some(MAX_DURATION);
        t.udp_session_idle = Some(MAX_DURATION);
    });
    let accept = AcceptProxy::new(["127.0.0.1/32".parse().unwrap()]).timeout(MAX_DURATION);
    builder()
        .timeouts(t)
        .balance(Balance::ClientIp {
            timeout: MAX_DURATION,
        })
        .ejection(Ejection::new(3, MAX_DURATION))
        .accept_proxy(accept)
        .build()
        .expect("10 years is allowed");
}

/// At the maximum, the timers work and nothing overflows: a connection with a 10-year
/// idle timeout, lifetime, half-close and connect budget relays both ways and closes
/// cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_with_10_year_timers_relays_and_closes() {
    let upstream = echo_server().await;
    let t = support::timeouts(|t| {
        t.connect_total = MAX_DURATION;
        t.idle = Some(MAX_DURATION);
        t.half_close = Some(MAX_DURATION);
        t.max_lifetime = Some(MAX_DURATION);
    });
    let handle = support::forwarder(upstream.addr(), RelayMode::Auto, t);
    let mut client = connect(proxy_addr(&handle)).await;
    let data = payload(11, 100_000);
    let back = proxy_testkit::client::send_and_receive(&mut client, &data).await;
    assert_bytes("through 10-year timers", &back, &data);
    proxy_testkit::wait::settled_stats(&handle, |s| s.connections_open == 0).await;
}
