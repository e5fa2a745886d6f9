//! `UdpForwarder` against real sockets on loopback: byte-exact datagrams of every size
//! with and without batching, many clients at once, the idle timeout in either direction,
//! eviction at the session cap, IPv6 and dual stack, replies from the address the client
//! sent to (IP_PKTINFO), ICMP port unreachable, round robin, graceful shutdown, and build
//! errors.
//!
//! Every echo is checked byte for byte and by its source address. Ports are chosen by the
//! kernel. Datagrams are sent with flow control and bounded resends (see
//! [`proxy_testkit::udp::Client::exchange`]), so a datagram lost on a loaded machine costs
//! time, not a failure; counters are checked exactly only when nothing was resent.

mod support;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use proxy_core::resolve::StaticResolver;
use proxy_core::{BuildError, ForwarderHandle, StatsSnapshot, Target, Timeouts, UdpForwarder};
use tokio::task::JoinSet;
use tokio::time::Instant;

use proxy_testkit::data::{Rng, assert_bytes, payload, tag_of, tagged};
use proxy_testkit::net::{has_ipv6, v4_any_port, v6_any_port};
use proxy_testkit::udp::{Client, MAX_V4, MAX_V6, UdpServer, assert_port_free, bind};
use proxy_testkit::wait::{eventually, join_all, settled_stats, within};
use support::proxy_addr;

/// The most any single step of a test may take on a loaded machine.
const LIMIT: Duration = Duration::from_secs(30);

/// The session idle timeout of the expiry tests, and how often traffic keeps it alive.
const IDLE: Duration = Duration::from_millis(500);
const KEEPALIVE: Duration = Duration::from_millis(150);

/// Starts a forwarder from `listen` to `target` with default settings.
fn forwarder(listen: SocketAddr, target: impl Into<Target>) -> ForwarderHandle {
    UdpForwarder::builder([listen], target.into())
        .build()
        .expect("valid settings")
        .start()
        .expect("start the forwarder")
}

// ===== byte-exact datagrams =====

/// Datagrams of 0 B to 65,507 B (edge sizes, then a seeded spread) come back byte for
/// byte, and the counters add up.
async fn echoes_every_size_exactly(batch: usize) {
    let echo = UdpServer::echo_on(v4_any_port());
    let handle = UdpForwarder::builder([v4_any_port()], echo.addr().into())
        .batch_size(batch)
        .build()
        .expect("valid settings")
        .start()
        .expect("start the forwarder");
    let proxy = proxy_addr(&handle);

    let mut rng = Rng::new(batch as u64);
    let mut sizes = vec![0, 1, 1400, 1500, 9000, MAX_V4, 0, MAX_V4 - 1];
    sizes.extend((0..56).map(|i| match i % 4 {
        0 => rng.below(MAX_V4 + 1),
        1 => rng.below(9001),
        _ => rng.below(1501),
    }));
    let payloads: Vec<Vec<u8>> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| payload(1000 * batch as u64 + i as u64, n))
        .collect();
    let n = payloads.len() as u64;
    let bytes: u64 = sizes.iter().map(|&s| s as u64).sum();

    let mut client = Client::v4();
    within(
        LIMIT,
        "echo of every size",
        client.exchange(proxy, &payloads),
    )
    .await;

    let s = settled_stats(&handle, |s| {
        s.udp.datagrams_to_downstream >= n && s.bytes_to_downstream >= bytes
    })
    .await;
    assert_eq!(s.udp.sessions_total, 1, "{s:#?}");
    assert_eq!(s.udp.sessions_open, 1, "{s:#?}");
    assert_eq!(s.udp.truncated, 0, "{s:#?}");
    if client.resent == 0 {
        assert_eq!(s.udp.datagrams_to_upstream, n, "{s:#?}");
        assert_eq!(s.udp.datagrams_to_downstream, n, "{s:#?}");
        assert_eq!(s.bytes_to_upstream, bytes, "{s:#?}");
        assert_eq!(s.bytes_to_downstream, bytes, "{s:#?}");
        assert_eq!(s.udp.dropped, 0, "{s:#?}");
        assert_eq!(echo.count() as u64, n);
    } else {
        // Lost datagrams were sent again: at least every datagram, at most every send.
        eprintln!(
            "batch {batch}: {} of {} sends were resends",
            client.resent, client.sent
        );
        let sent = client.sent as u64;
        assert!((n..=sent).contains(&s.udp.datagrams_to_upstream), "{s:#?}");
        assert!(
            (n..=sent).contains(&s.udp.datagrams_to_downstream),
            "{s:#?}"
        );
        assert!(s.bytes_to_upstream >= bytes, "{s:#?}");
    }
    assert_eq!(echo.sources().len(), 1, "one session, one upstream socket");
    within(LIMIT, "shutdown", handle.shutdown(Duration::from_secs(1))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echoes_every_size_exactly_batched() {
    echoes_every_size_exactly(32).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echoes_every_size_exactly_one_at_a_time() {
    echoes_every_size_exactly(1).await;
}

/// Bursts of equal-sized datagrams, each ending with a shorter one: the forwarder moves
/// such runs as one segmented send each way, and every datagram still arrives on its own,
/// byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bursts_of_equal_datagrams_keep_their_boundaries() {
    let echo = UdpServer::echo_on(v4_any_port());
    let handle = forwarder(v4_any_port(), echo.addr());
    let proxy = proxy_addr(&handle);
    let mut payloads = Vec::new();
    for (burst, size) in [64usize, 1000, 1400, 8000].into_iter().enumerate() {
        for i in 0..40u64 {
            payloads.push(payload(burst as u64 * 100 + i, size));
        }
        payloads.push(payload(burst as u64 * 100 + 99, size / 2));
    }
    let mut client = Client::v4().window(41);
    within(LIMIT, "bursts", client.exchange(proxy, &payloads)).await;
    let s = handle.stats();
    assert_eq!(s.udp.truncated, 0, "{s:#?}");
    if client.resent == 0 {
        assert_eq!(echo.count(), payloads.len());
        assert_eq!(s.udp.dropped, 0, "{s:#?}");
    }
    within(LIMIT, "shutdown", handle.shutdown(Duration::from_secs(1))).await;
}

// ===== many clients =====

/// 50 clients at once, each sending tagged datagrams: every client gets exactly its own
/// echoes back, and the upstream sees 50 distinct sources, each carrying one client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_clients_each_get_only_their_own_replies() {
    const CLIENTS: u32 = 50;
    const EACH: u32 = 10;
    let echo = UdpServer::echo_on(v4_any_port());
    let handle = forwarder(v4_any_port(), echo.addr());
    let proxy = proxy_addr(&handle);

    let mut clients = JoinSet::new();
    for c in 0..CLIENTS {
        clients.spawn(async move {
            let mut rng = Rng::new(u64::from(c));
            let payloads: Vec<Vec<u8>> = (0..EACH)
                .map(|seq| tagged(c, seq, 8 + rng.below(1200)))
                .collect();
            // One datagram in flight per client, 50 clients: within the proxy's buffers.
            let mut client = Client::v4().window(1);
            client.exchange(proxy, &payloads).await;
        });
    }
    within(LIMIT, "50 clients", join_all(clients)).await;

    // Each upstream source carried the datagrams of exactly one client.
    let mut owner = std::collections::HashMap::new();
    for seen in echo.seen() {
        let (c, _) = tag_of(&seen.head).expect("a tagged datagram");
        let first = *owner.entry(seen.from).or_insert(c);
        assert_eq!(
            first, c,
            "upstream source {} carried clients {first} and {c}",
            seen.from
        );
    }
    assert_eq!(owner.len(), CLIENTS as usize, "distinct upstream sources");
    let mut served: Vec<u32> = owner.into_values().collect();
    served.sort_unstable();
    assert_eq!(served, (0..CLIENTS).collect::<Vec<_>>());

    let n = u64::from(CLIENTS * EACH);
    let s = settled_stats(&handle, |s| s.udp.datagrams_to_downstream >= n).await;
    assert_eq!(s.udp.sessions_total, u64::from(CLIENTS), "{s:#?}");
    assert_eq!(s.udp.sessions_open, u64::from(CLIENTS), "{s:#?}");
    assert_eq!(s.udp.sessions_evicted, 0, "{s:#?}");
    assert!(s.udp.datagrams_to_upstream >= n, "{s:#?}");
}

// ===== idle timeout =====

/// A forwarder with the short idle timeout of these tests.
fn forwarder_idle(target: SocketAddr) -> ForwarderHandle {
    UdpForwarder::builder([v4_any_port()], target.into())
        .session_idle_timeout(IDLE)
        .build()
        .expect("valid settings")
        .start()
        .expect("start the forwarder")
}

/// A client that sends every 150 ms keeps its session for three idle timeouts: the
/// upstream sees one source port throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_traffic_keeps_the_session() {
    let echo = UdpServer::echo_on(v4_any_port());
    let handle = forwarder_idle(echo.addr());
    let proxy = proxy_addr(&handle);
    let mut client = Client::v4();

    let started = Instant::now();
    let mut ticks = tokio::time::interval(KEEPALIVE);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for seq in 0..11 {
        ticks.tick().await;
        within(
            LIMIT,
            "keepalive",
            client.round_trip(proxy, &tagged(0, seq, 100)),
        )
        .await;
    }
    assert!(started.elapsed() >= IDLE * 3);
    assert_eq!(echo.sources().len(), 1, "the session was replaced");
    let s = handle.stats();
    assert_eq!(s.udp.sessions_total, 1, "{s:#?}");
    assert_eq!(s.udp.sessions_open, 1, "{s:#?}");
}

/// A session that only the upstream talks on (every 150 ms, three idle timeouts long)
/// survives; then silence ends it after the idle timeout, its upstream socket lingers
/// (discarding a late reply), and the next datagram opens a new session with a new
/// upstream source port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_traffic_keeps_the_session_and_silence_ends_it() {
    let up = bind(v4_any_port()).expect("bind the upstream");
    let handle = forwarder_idle(up.local_addr().unwrap());
    let proxy = proxy_addr(&handle);
    let mut client = Client::v4();
    let mut buf = vec![0; 2048];

    client.send_to(proxy, b"hello").await;
    let (n, session) = within(LIMIT, "the first datagram", up.recv_from(&mut buf))
        .await
        .unwrap();
    assert_eq!(&buf[..n], b"hello");

    // Only the upstream sends now.
    for i in 0..11u32 {
        tokio::time::sleep(KEEPALIVE).await;
        let ping = tagged(1, i, 32);
        up.send_to(&ping, session).await.unwrap();
        let (got, from) = client.recv_from(Duration::from_secs(2)).await;
        assert_eq!(from, proxy, "source of ping {i}");
        assert_bytes(&format!("ping {i}"), &got, &ping);
    }
    // The client speaks again after 1.6 s of its own silence: same session.
    let quiet = Instant::now();
    client.send_to(proxy, b"still here").await;
    let (n, from) = within(LIMIT, "after the pings", up.recv_from(&mut buf))
        .await
        .unwrap();
    assert_eq!(&buf[..n], b"still here");
    assert_eq!(
        from, session,
        "upstream-only traffic did not keep the session"
    );
    let s = handle.stats();
    assert_eq!(
        (s.udp.sessions_total, s.udp.sessions_open),
        (1, 1),
        "{s:#?}"
    );

    // Silence both ways ends it, not before the idle timeout.
    eventually(
        "the silent session ends",
        IDLE + Duration::from_secs(5),
        || handle.stats().udp.sessions_open == 0,
    )
    .await;
    let after = quiet.elapsed();
    assert!(
        after >= IDLE - Duration::from_millis(50),
        "the session ended {after:?} after the last datagram"
    );
    // Its upstream socket lingers, so no new session can take the port while a late
    // reply can still arrive; what arrives reaches no one.
    assert!(
        std::net::UdpSocket::bind(session).is_err(),
        "the expired session's upstream port {session} is free already"
    );
    up.send_to(b"too late", session).await.unwrap();

    // The next datagram opens a new session.
    client.send_to(proxy, b"again").await;
    let (n, from) = within(LIMIT, "a new session", up.recv_from(&mut buf))
        .await
        .unwrap();
    assert_eq!(&buf[..n], b"again");
    assert_ne!(from, session, "a new session gets a new upstream socket");
    up.send_to(b"reply", from).await.unwrap();
    let (got, src) = client.recv_from(Duration::from_secs(5)).await;
    assert_eq!((got.as_slice(), src), (&b"reply"[..], proxy));
    let s = handle.stats();
    assert_eq!(
        (s.udp.sessions_total, s.udp.sessions_open),
        (2, 1),
        "{s:#?}"
    );
    let s = settled_stats(&handle, |s| s.udp.dropped >= 1).await;
    assert_eq!(s.udp.dropped, 1, "the late reply was discarded: {s:#?}");
}

// ===== eviction =====

/// With room for 4 sessions, 6 clients evict the least recently used; the most recent
/// keeps its session, and an evicted client that sends again gets a new one that works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_recently_used_session_is_evicted_at_the_cap() {
    let echo = UdpServer::echo_on(v4_any_port());
    let handle = UdpForwarder::builder([v4_any_port()], echo.addr().into())
        .max_sessions(4)
        .build()
        .expect("valid settings")
        .start()
        .expect("start the forwarder");
    let proxy = proxy_addr(&handle);

    let mut clients: Vec<Client> = (0..6).map(|_| Client::v4()).collect();
    for (c, client) in (0..).zip(clients.iter_mut()) {
        within(LIMIT, "echo", client.round_trip(proxy, &tagged(c, 0, 64))).await;
    }
    let s = settled_stats(&handle, |s| s.udp.sessions_evicted >= 2).await;
    assert!(s.udp.sessions_open <= 4, "{s:#?}");
    assert_eq!(s.udp.sessions_total, 6, "{s:#?}");

    // The most recent client is still in the table: same upstream socket.
    within(
        LIMIT,
        "echo",
        clients[5].round_trip(proxy, &tagged(5, 1, 64)),
    )
    .await;
    assert_eq!(echo.source_of(5, 1), echo.source_of(5, 0), "client 5 kept");

    // The least recent was evicted; it gets a new session, which works.
    within(
        LIMIT,
        "echo",
        clients[0].round_trip(proxy, &tagged(0, 1, 64)),
    )
    .await;
    let (old, new) = (echo.source_of(0, 0).unwrap(), echo.source_of(0, 1).unwrap());
    assert_ne!(
        old, new,
        "client 0 was evicted, so it has a new upstream socket"
    );
    within(
        LIMIT,
        "echo",
        clients[0].round_trip(proxy, &tagged(0, 2, 64)),
    )
    .await;
    assert_eq!(echo.source_of(0, 2), Some(new));

    let s = settled_stats(&handle, |s| s.udp.sessions_evicted >= 3).await;
    assert!(s.udp.sessions_open <= 4, "{s:#?}");
    assert_eq!(s.udp.sessions_total, 7, "{s:#?}");
}

// ===== IPv6 and local addresses =====

/// `[::1]` to an upstream on `[::1]`, byte for byte up to 65,507 B. A 65,527 B datagram
/// (the IPv6 maximum) either passes intact or is counted, never truncated silently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_echo_is_exact() {
    if !has_ipv6() {
        eprintln!("no IPv6 on this host; skipped");
        return;
    }
    let echo = UdpServer::echo_on(v6_any_port());
    let handle = forwarder(v6_any_port(), echo.addr());
    let proxy = proxy_addr(&handle);
    assert!(proxy.is_ipv6(), "{proxy}");

    let mut rng = Rng::new(6);
    let mut sizes = vec![0, 1, 1232, 1500, 9000, MAX_V4];
    sizes.extend((0..10).map(|_| rng.below(MAX_V4 + 1)));
    let payloads: Vec<Vec<u8>> = (0..)
        .zip(&sizes)
        .map(|(i, &n)| payload(600 + i, n))
        .collect();
    let mut client = Client::v6();
    within(LIMIT, "IPv6 echo", client.exchange(proxy, &payloads)).await;
    assert!(echo.sources().iter().all(SocketAddr::is_ipv6));

    let big = payload(699, MAX_V6);
    let counted = |h: &ForwarderHandle| {
        let s = h.stats().udp;
        s.truncated + s.dropped
    };
    let before = counted(&handle);
    let mut outcome = None;
    for _ in 0..3 {
        client.send_to(proxy, &big).await;
        if let Some((got, from)) = client.try_recv_from(Duration::from_secs(1)).await {
            assert_eq!(from, proxy);
            assert_bytes("a 65,527 B IPv6 datagram", &got, &big);
            outcome = Some("passed intact");
            break;
        }
        if counted(&handle) > before {
            outcome = Some("counted as truncated or dropped");
            break;
        }
    }
    let outcome =
        outcome.expect("a 65,527 B datagram neither came back nor was counted as truncated");
    eprintln!("65,527 B over IPv6: {outcome}");
}

/// A dual-stack `[::]:0` listener serves clients on 127.0.0.1 and ::1, each answered from
/// the address it sent to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dual_stack_listener_serves_ipv4_and_ipv6() {
    if !has_ipv6() {
        eprintln!("no IPv6 on this host; skipped");
        return;
    }
    let echo = UdpServer::echo_on(v4_any_port());
    let handle = UdpForwarder::builder(["[::]:0".parse().unwrap()], echo.addr().into())
        .dual_stack(true)
        .build()
        .expect("valid settings")
        .start()
        .expect("bind [::]:0");
    let port = proxy_addr(&handle).port();

    let cases = [
        (Client::v4(), IpAddr::from(Ipv4Addr::LOCALHOST)),
        (Client::v6(), Ipv6Addr::LOCALHOST.into()),
    ];
    for (i, (mut client, ip)) in (0..).zip(cases) {
        let payloads: Vec<Vec<u8>> = [0, 1, 1400, 9000, MAX_V4]
            .into_iter()
            .zip(0..)
            .map(|(n, j)| payload(700 + 10 * i + j, n))
            .collect();
        let to = SocketAddr::new(ip, port);
        within(LIMIT, "echo", client.exchange(to, &payloads)).await;
    }
    let s = settled_stats(&handle, |s| s.udp.sessions_total == 2).await;
    assert_eq!(s.udp.sessions_open, 2, "{s:#?}");
}

/// Linux routes all of 127.0.0.0/8 to the loopback interface, so a wildcard listener
/// also receives datagrams sent to 127.0.0.2.
#[cfg(target_os = "linux")]
const OTHER_LOOPBACK: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

/// On a wildcard listener (`0.0.0.0:0`, and `[::]:0` when there is IPv6), the reply
/// comes from the address the client sent to: 127.0.0.2:P, not 127.0.0.1:P (IP_PKTINFO).
/// One client sending to both addresses has two sessions.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_come_from_the_address_the_client_sent_to() {
    let echo = UdpServer::echo_on(v4_any_port());
    let mut listens = vec![SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))];
    if has_ipv6() {
        listens.push("[::]:0".parse().unwrap());
    }
    for (i, listen) in (0..).zip(listens) {
        let handle = forwarder(listen, echo.addr());
        let port = proxy_addr(&handle).port();
        let mut client = Client::v4();
        for (j, ip) in (0..).zip([OTHER_LOOPBACK, Ipv4Addr::LOCALHOST, OTHER_LOOPBACK]) {
            let to = SocketAddr::from((ip, port));
            let data = payload(800 + 10 * i + j, 1000);
            // `round_trip` checks the reply's source is `to`.
            within(LIMIT, &format!("echo via {to} on {listen}"), async {
                client.round_trip(to, &data).await;
            })
            .await;
        }
        let mut sessions = 2;
        if listen.is_ipv6() {
            let mut v6 = Client::v6();
            let to = SocketAddr::from((Ipv6Addr::LOCALHOST, port));
            within(LIMIT, "echo via ::1", v6.round_trip(to, b"v6")).await;
            sessions += 1;
        }
        let s = settled_stats(&handle, |s| s.udp.sessions_total >= sessions).await;
        assert_eq!(s.udp.sessions_total, sessions, "on {listen}: {s:#?}");
    }
}

// ===== ICMP port unreachable =====

/// With the upstream port closed, datagrams provoke ICMP port unreachable, counted as
/// `upstream_refused`; when an echo server binds that port, the same session works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_upstream_is_counted_and_the_session_recovers() {
    let target = {
        let s = std::net::UdpSocket::bind(v4_any_port()).expect("bind 127.0.0.1:0");
        s.local_addr().unwrap()
    };
    let handle = forwarder(v4_any_port(), target);
    let proxy = proxy_addr(&handle);
    let mut client = Client::v4();

    let deadline = Instant::now() + Duration::from_secs(10);
    for i in 0..500 {
        if handle.stats().udp.upstream_refused > 0 || Instant::now() >= deadline {
            break;
        }
        client.send_to(proxy, &tagged(0, i, 40)).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let s = handle.stats();
    assert!(s.udp.upstream_refused > 0, "{s:#?}");
    assert_eq!(s.udp.sessions_total, 1, "{s:#?}");
    let endpoints = handle.endpoints();
    assert_eq!(endpoints.len(), 1, "{endpoints:?}");
    assert_eq!(endpoints[0].addr, target);
    assert!(!endpoints[0].healthy(), "{endpoints:?}");
    // Nothing came back to the client.
    assert!(client.try_recv_from(Duration::ZERO).await.is_none());

    // The upstream comes up on its port; the same session reaches it.
    let echo = UdpServer::echo_on(target);
    let payloads: Vec<Vec<u8>> = (0..8).map(|seq| tagged(1, seq, 500)).collect();
    within(LIMIT, "echo after the upstream came up", async {
        client.exchange(proxy, &payloads).await;
    })
    .await;
    assert_eq!(echo.sources().len(), 1);
    let s = handle.stats();
    assert_eq!(s.udp.sessions_total, 1, "the session was replaced: {s:#?}");
    assert_eq!(s.udp.sessions_open, 1, "{s:#?}");
    // A reply after the ICMP errors marks the endpoint healthy again. An error the kernel
    // queued for the socket before the upstream came up is read after the replies queued
    // with it (a socket's pending error comes once its queue is empty), so it can mark one
    // more failure behind the first reply: the next reply clears it.
    let mut endpoints = handle.endpoints();
    for seq in 0..20 {
        if endpoints[0].healthy() {
            break;
        }
        within(LIMIT, "another echo", async {
            client.exchange(proxy, &[tagged(2, seq, 100)]).await;
        })
        .await;
        endpoints = handle.endpoints();
    }
    assert!(endpoints[0].healthy(), "{endpoints:?}");
    assert!(
        endpoints[0].failures > 0 && endpoints[0].connects >= 2,
        "{endpoints:?}"
    );
}

// ===== round robin =====

/// Two echo servers behind one name get new sessions alternately.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_alternates_new_sessions() {
    let (a, b) = same_port_pair();
    let port = a.addr().port();
    let target: Target = format!("backend:{port}").parse().unwrap();
    let resolver = StaticResolver::new([Ipv4Addr::LOCALHOST.into(), OTHER_LOOPBACK.into()]);
    let handle = UdpForwarder::builder([v4_any_port()], target)
        .resolver(resolver)
        .build()
        .expect("valid settings")
        .start()
        .expect("start the forwarder");
    let proxy = proxy_addr(&handle);

    let mut served = Vec::new();
    for i in 0..8 {
        let before = (a.count(), b.count());
        let mut client = Client::v4();
        within(LIMIT, "echo", client.round_trip(proxy, &tagged(i, 0, 200))).await;
        // A resend may have reached the same server twice, never both.
        served.push(match (a.count() > before.0, b.count() > before.1) {
            (true, false) => 'a',
            (false, true) => 'b',
            other => panic!("session {i}: served by (a, b) = {other:?}"),
        });
    }
    assert!(
        served.windows(2).all(|w| w[0] != w[1]),
        "not alternating: {served:?}"
    );
    assert_eq!((a.sources().len(), b.sources().len()), (4, 4));
    let s = handle.stats();
    assert_eq!(s.udp.sessions_total, 8, "{s:#?}");
}

/// Echo servers on 127.0.0.1:P and 127.0.0.2:P for a kernel-chosen P.
#[cfg(target_os = "linux")]
fn same_port_pair() -> (UdpServer, UdpServer) {
    for _ in 0..20 {
        let a = bind(v4_any_port()).expect("bind 127.0.0.1:0");
        let port = a.local_addr().unwrap().port();
        if let Ok(b) = bind((OTHER_LOOPBACK, port).into()) {
            return (UdpServer::echo(a), UdpServer::echo(b));
        }
    }
    panic!("no port free on both 127.0.0.1 and 127.0.0.2 in 20 tries");
}

// ===== graceful shutdown =====

/// Shutdown returns promptly with sessions open, and afterwards the listen port and every
/// session's upstream port are free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_sessions_and_frees_the_port() {
    let echo = UdpServer::echo_on(v4_any_port());
    let handle = forwarder(v4_any_port(), echo.addr());
    let proxy = proxy_addr(&handle);
    let mut clients: Vec<Client> = (0..3).map(|_| Client::v4()).collect();
    for (c, client) in (0..).zip(clients.iter_mut()) {
        within(LIMIT, "echo", client.round_trip(proxy, &tagged(c, 0, 300))).await;
    }
    let s = settled_stats(&handle, |s| s.udp.sessions_open == 3).await;
    assert_eq!(s.udp.sessions_total, 3);
    let sessions = echo.sources();
    assert_eq!(sessions.len(), 3);

    let grace = Duration::from_millis(300);
    let started = Instant::now();
    let drained = within(LIMIT, "shutdown", handle.shutdown(grace)).await;
    let took = started.elapsed();
    eprintln!("shutdown returned {drained} after {took:?}");
    assert!(
        took < grace + Duration::from_secs(5),
        "shutdown took {took:?}"
    );

    assert_port_free(proxy, "the listen port after shutdown");
    for s in sessions {
        assert_port_free(s, "a session's upstream port after shutdown");
    }
    // Nothing answers the clients any more.
    clients[0].send_to(proxy, b"anyone?").await;
    assert!(
        clients[0]
            .try_recv_from(Duration::from_millis(200))
            .await
            .is_none()
    );
}

/// Starting and stopping a forwarder 30 times, with sessions open at each stop, leaves no
/// descriptor behind. Other tests in this binary open sockets concurrently, so the count
/// runs in a child process of its own.
#[cfg(target_os = "linux")]
#[test]
fn start_stop_30_times_without_fd_leak() {
    proxy_testkit::process::in_own_process(
        "start_stop_30_times_without_fd_leak",
        "PROXY_CORE_TEST_UDP_FD_LEAK_CHILD",
        start_stop_30_times,
    );
}

#[cfg(target_os = "linux")]
async fn start_stop_30_times() {
    let echo = UdpServer::echo_on(v4_any_port());
    let before = proxy_testkit::process::open_fds();
    for i in 0..30u32 {
        let handle = UdpForwarder::builder([v4_any_port()], echo.addr().into())
            .batch_size(if i % 2 == 0 { 32 } else { 1 })
            .build()
            .expect("valid settings")
            .start()
            .expect("start the forwarder");
        let proxy = proxy_addr(&handle);
        for c in 0..2 {
            let mut client = Client::v4();
            let data = tagged(c, i, 2000);
            within(LIMIT, "echo", client.round_trip(proxy, &data)).await;
        }
        within(
            LIMIT,
            "shutdown",
            handle.shutdown(Duration::from_millis(20)),
        )
        .await;
        assert_port_free(proxy, "the listen port after shutdown");
    }
    let after = proxy_testkit::process::open_fds();
    assert!(
        after <= before + 2,
        "{before} descriptors open before 30 start/stop cycles, {after} after"
    );
}

// ===== binding =====

/// A UDP port held by one forwarder cannot be bound by another (SO_REUSEADDR would let
/// two UDP sockets share it silently); with `reuse_port` on both, sharing is asked for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_port_is_a_bind_error_unless_reuse_port() {
    let target: Target = "127.0.0.1:9".parse().unwrap();
    let first = forwarder(v4_any_port(), target.clone());
    let busy = proxy_addr(&first);
    let second = UdpForwarder::builder([busy], target.clone())
        .build()
        .expect("valid settings")
        .start();
    match second {
        Err(e) => assert_eq!(e.kind(), proxy_core::ErrorKind::Bind, "{e:?}"),
        Ok(h) => panic!(
            "a second forwarder bound the busy port {:?}",
            h.local_addrs()
        ),
    }

    let shared = |listen: SocketAddr| {
        UdpForwarder::builder([listen], target.clone())
            .reuse_port(true)
            .build()
            .expect("valid settings")
            .start()
    };
    let a = shared(v4_any_port()).expect("start with reuse_port");
    let port = proxy_addr(&a);
    let b = shared(port).expect("a second forwarder with reuse_port shares the port");
    assert_eq!(proxy_addr(&b), port);
}

// ===== late replies and port reuse =====

/// What the clients of [`run_clients`] got back.
#[derive(Debug, Default)]
struct Tally {
    /// Replies that came back to the client that sent them.
    own: usize,
    /// `(received by, sent by, through the proxy)` for each reply that reached another
    /// client: through the proxy (a newer session had the port), or straight from the
    /// upstream (a client socket had the port).
    wrong: Vec<(u32, u32, bool)>,
}

/// [`run_clients`] through `handle`, one client every 3 ms, within the test's limit; prints
/// and returns the tally with the forwarder's stats after.
async fn clients_through(
    handle: &ForwarderHandle,
    clients: u32,
    each: u32,
    listen: Duration,
) -> (Tally, StatsSnapshot) {
    let proxy = proxy_addr(handle);
    let every = Duration::from_millis(3);
    let run = run_clients(proxy, clients, every, each, listen);
    let tally = within(LIMIT, "the clients", run).await;
    let s = handle.stats();
    eprintln!(
        "{} of {clients} clients got another client's reply; {} own replies; {:?}",
        tally.wrong.len(),
        tally.own,
        s.udp
    );
    (tally, s)
}

/// Starts `clients` clients, one every `every` (so sessions start and end all the time,
/// not in waves), each on a fresh port: each sends `each` tagged datagrams to `proxy`,
/// then listens for `listen`, and reports whose tag every reply carries.
async fn run_clients(
    proxy: SocketAddr,
    clients: u32,
    every: Duration,
    each: u32,
    listen: Duration,
) -> Tally {
    let tally = std::sync::Arc::new(std::sync::Mutex::new(Tally::default()));
    let mut set = JoinSet::new();
    let mut ticks = tokio::time::interval(every);
    for c in 0..clients {
        ticks.tick().await;
        let tally = tally.clone();
        set.spawn(async move {
            let mut client = Client::v4();
            for seq in 0..each {
                client.send_to(proxy, &tagged(c, seq, 64)).await;
            }
            let until = Instant::now() + listen;
            while let Some(left) = until.checked_duration_since(Instant::now()) {
                let Some((got, source)) = client.try_recv_from(left).await else {
                    break;
                };
                let (from, _) = tag_of(&got).expect("a tagged reply");
                let mut t = tally.lock().unwrap();
                if from == c && source == proxy {
                    t.own += 1;
                } else {
                    t.wrong.push((c, from, source == proxy));
                }
            }
        });
    }
    join_all(set).await;
    std::mem::take(&mut *tally.lock().unwrap())
}

/// A session ends on its idle timeout (1 s) while its upstream takes 1.5 s to answer: the
/// late reply must not reach the client of a newer session that got the same upstream
/// port from the kernel. 2,000 clients, one every 3 ms, one datagram each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_replies_after_the_idle_timeout_reach_no_other_client() {
    let slow = UdpServer::echo_after(
        bind(v4_any_port()).expect("bind the upstream"),
        Duration::from_millis(1500),
    );
    let handle = UdpForwarder::builder([v4_any_port()], slow.addr().into())
        .session_idle_timeout(Duration::from_secs(1))
        .build()
        .expect("valid settings")
        .start()
        .expect("start the forwarder");
    let clients = 2_000;
    let (tally, _) = clients_through(&handle, clients, 1, Duration::from_millis(1800)).await;
    eprintln!("{} upstream sources", slow.sources().len());
    assert!(
        slow.count() >= clients as usize * 9 / 10,
        "the upstream saw only {} datagrams",
        slow.count()
    );
    assert!(
        tally.wrong.is_empty(),
        "(got by, sent by, through the proxy): {:?}",
        tally.wrong
    );
}

/// With room for 32 sessions and a new client every 3 ms, sessions are evicted while their
/// replies (300 ms late) are in flight: every reply still reaches only the client that
/// sent it. 2,000 clients, three datagrams each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_in_flight_at_eviction_reach_no_other_client() {
    let echo = UdpServer::echo_after(
        bind(v4_any_port()).expect("bind the upstream"),
        Duration::from_millis(300),
    );
    let handle = UdpForwarder::builder([v4_any_port()], echo.addr().into())
        .max_sessions(32)
        .build()
        .expect("valid settings")
        .start()
        .expect("start the forwarder");
    let clients = 2_000;
    let (tally, s) = clients_through(&handle, clients, 3, Duration::from_millis(400)).await;
    assert!(s.udp.sessions_evicted > 1_000, "{s:#?}");
    assert!(tally.own > 0, "no client got its own reply: {s:#?}");
    assert!(
        tally.wrong.is_empty(),
        "(got by, sent by, through the proxy): {:?}",
        tally.wrong
    );
}

// ===== session start =====

/// An echo upstream reached through the name `backend`, which resolves only once the
/// returned resolver is opened: meanwhile new sessions queue their datagrams.
#[cfg(target_os = "linux")]
fn behind_a_gated_name() -> (UdpServer, support::GatedResolver, ForwarderHandle) {
    let echo = UdpServer::echo_on(v4_any_port());
    let resolver = support::GatedResolver::new(Ipv4Addr::LOCALHOST.into());
    let target: Target = format!("backend:{}", echo.addr().port()).parse().unwrap();
    let handle = UdpForwarder::builder([v4_any_port()], target)
        .resolver(resolver.clone())
        .build()
        .expect("valid settings")
        .start()
        .expect("start the forwarder");
    (echo, resolver, handle)
}

/// Clients whose first datagrams queue while the target's name resolves, and who keep
/// sending while the session connects: the upstream sees every client's datagrams in the
/// order sent (some may be lost, none overtaken). 12 rounds of 10 clients, each with 60
/// datagrams of about 6 KB queued (sizes differ, so they go out one by one).
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datagrams_queued_at_session_start_keep_their_order() {
    const ROUNDS: u32 = 12;
    const CLIENTS: u32 = 10;
    const QUEUED: u32 = 60;
    const AFTER: u32 = 100;
    let size = |seq: u32| 6000 + (seq % 7) as usize * 100;
    let mut reordered = Vec::new();
    for round in 0..ROUNDS {
        let (echo, resolver, handle) = behind_a_gated_name();
        let proxy = proxy_addr(&handle);
        let mut clients: Vec<Client> = (0..CLIENTS).map(|_| Client::v4()).collect();
        for (c, client) in (0..).zip(clients.iter_mut()) {
            for seq in 0..QUEUED {
                client.send_to(proxy, &tagged(c, seq, size(seq))).await;
            }
            eventually("the proxy read the queued datagrams", LIMIT, || {
                support::rx_queue(proxy) == Some(0)
            })
            .await;
        }
        // The sessions connect while their clients go on sending.
        resolver.open();
        for seq in QUEUED..QUEUED + AFTER {
            for (c, client) in (0..).zip(clients.iter_mut()) {
                client.send_to(proxy, &tagged(c, seq, 100)).await;
            }
            tokio::task::yield_now().await;
        }
        // Done once the proxy sent on or dropped every datagram it received, and the
        // upstream got what it sent, or (some were lost on the way) nothing came for 100 ms.
        let sent = u64::from(CLIENTS * (QUEUED + AFTER));
        eventually("the proxy handled every datagram", LIMIT, || {
            let s = handle.stats().udp;
            let lost = support::kernel_drops(proxy).unwrap_or(0);
            s.datagrams_to_upstream + s.dropped + lost >= sent
        })
        .await;
        let (mut seen, mut moved) = (0, Instant::now());
        eventually("the upstream has every datagram sent", LIMIT, || {
            let now = echo.count();
            if now != seen {
                (seen, moved) = (now, Instant::now());
            }
            now as u64 >= handle.stats().udp.datagrams_to_upstream
                || moved.elapsed() > Duration::from_millis(100)
        })
        .await;
        let mut last = std::collections::HashMap::new();
        for seen in echo.seen() {
            let (c, seq) = tag_of(&seen.head).expect("a tagged datagram");
            if let Some(prev) = last.insert(c, seq)
                && prev >= seq
            {
                reordered.push((round, c, prev, seq));
            }
        }
        assert!(
            last.len() >= CLIENTS as usize / 2,
            "only {} clients reached the upstream",
            last.len()
        );
        handle.shutdown(Duration::from_millis(100)).await;
    }
    eprintln!(
        "{} of {} session starts reordered: {reordered:?}",
        reordered.len(),
        ROUNDS * CLIENTS
    );
    assert!(
        reordered.is_empty(),
        "(round, client, seq, then seq): {reordered:?}"
    );
}

/// While the target's name has no answer yet, 40 clients send 64 datagrams of 65,000 B
/// each (166 MB): the proxy queues at most its per-forward budget for the sessions and
/// counts the rest as dropped. Once the name resolves, what was queued reaches the
/// upstream intact and in order, and every client's session works.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datagrams_queued_before_the_first_answer_are_bounded() {
    const CLIENTS: u32 = 40;
    const EACH: u32 = 64;
    const SIZE: usize = 65_000;
    /// The most the proxy may hold for sessions waiting for their upstream (documented).
    const BUDGET: u64 = 4 << 20;
    let (echo, resolver, handle) = behind_a_gated_name();
    let proxy = proxy_addr(&handle);
    let mut clients: Vec<Client> = (0..CLIENTS).map(|_| Client::v4()).collect();
    for seq in 0..EACH {
        for (c, client) in (0..).zip(clients.iter_mut()) {
            client.send_to(proxy, &tagged(c, seq, SIZE)).await;
        }
        // At most 40 datagrams (2.6 MB) wait in the listener's 4 MiB buffer at a time.
        eventually("the proxy read the datagrams", LIMIT, || {
            support::rx_queue(proxy) == Some(0)
        })
        .await;
    }
    let sent = u64::from(CLIENTS * EACH);
    resolver.open();
    let s = settled_stats(&handle, |s| {
        s.udp.datagrams_to_upstream + s.udp.dropped >= sent
    })
    .await;
    eprintln!(
        "{} B of {} B queued before the first answer reached the upstream ({} datagrams), \
         {} dropped",
        s.bytes_to_upstream,
        sent * SIZE as u64,
        s.udp.datagrams_to_upstream,
        s.udp.dropped
    );
    assert!(s.bytes_to_upstream <= BUDGET, "{s:#?}");
    assert!(s.udp.datagrams_to_upstream > 0, "{s:#?}");
    assert_eq!(s.udp.datagrams_to_upstream + s.udp.dropped, sent, "{s:#?}");
    // What came through is intact and in order, client by client.
    let mut last = std::collections::HashMap::new();
    for seen in echo.seen() {
        assert_eq!(seen.len, SIZE);
        let (c, seq) = tag_of(&seen.head).expect("a tagged datagram");
        if let Some(prev) = last.insert(c, seq) {
            assert!(prev < seq, "client {c}: {seq} after {prev}");
        }
    }
    // The sessions work now.
    for (c, client) in (0..).zip(clients.iter_mut()) {
        let probe = tagged(c, 1000, 100);
        client.send_to(proxy, &probe).await;
        // Echoes of this client's queued datagrams may still be on their way, before it.
        loop {
            let (got, _) = client.recv_from(LIMIT).await;
            if got == probe {
                break;
            }
            let late = tag_of(&got).is_some_and(|(from, seq)| from == c && seq < EACH);
            assert!(got.len() == SIZE && late, "client {c}: {:?}", tag_of(&got));
        }
    }
}

// ===== failover =====

/// Sends tagged datagrams from `client` every 20 ms until one is echoed back (or `limit`
/// passes); returns how many were sent, and the echo.
async fn send_until_echoed(
    client: &mut Client,
    proxy: SocketAddr,
    tag: u32,
    limit: Duration,
) -> (u32, Option<Vec<u8>>) {
    let until = Instant::now() + limit;
    let mut sent = Vec::new();
    for seq in 0.. {
        if Instant::now() >= until {
            return (seq, None);
        }
        let data = tagged(tag, seq, 100);
        client.send_to(proxy, &data).await;
        sent.push(data);
        if let Some((got, from)) = client.try_recv_from(Duration::from_millis(20)).await {
            assert_eq!(from, proxy);
            assert!(sent.contains(&got), "an echo of none of the datagrams sent");
            return (seq + 1, Some(got));
        }
    }
    unreachable!()
}

/// Closes the upstream `old`, so datagrams to its port draw ICMP refusals, once the port
/// is free.
async fn refuse_from_now_on(old: UdpServer) {
    let addr = old.addr();
    drop(old);
    eventually("the old upstream's port is closed", LIMIT, || {
        std::net::UdpSocket::bind(addr).is_ok()
    })
    .await;
}

/// Sends from `client` until an echo comes back, for 3 s at most: its session moved on
/// from a refusing upstream. Returns the forwarder's stats after.
async fn moves_on(
    client: &mut Client,
    proxy: SocketAddr,
    handle: &ForwarderHandle,
) -> StatsSnapshot {
    let (sent, echo) = send_until_echoed(client, proxy, 1, Duration::from_secs(3)).await;
    let s = handle.stats();
    eprintln!(
        "echoed after {sent} datagrams: {}; {:?}",
        echo.is_some(),
        s.udp
    );
    assert!(
        echo.is_some(),
        "no echo in 3 s ({sent} datagrams sent): {s:#?}"
    );
    s
}

/// A client on a fixed port that never goes quiet: after a reload moves the target and
/// the old upstream goes away (ICMP port unreachable), its session moves on within a
/// few refused datagrams, and its datagrams reach the new upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_session_moves_on_when_a_reload_retires_its_refusing_upstream() {
    let old = UdpServer::echo_on(v4_any_port());
    let new = UdpServer::echo_on(v4_any_port());
    let old_addr = old.addr();
    let udp = |listen: SocketAddr, target: SocketAddr| {
        UdpForwarder::builder([listen], target.into())
            .build()
            .expect("valid settings")
    };
    let mut handle = udp(v4_any_port(), old_addr).start().unwrap();
    let proxy = proxy_addr(&handle);
    let mut client = Client::v4();
    within(
        LIMIT,
        "echo",
        client.round_trip(proxy, &tagged(1, 1000, 100)),
    )
    .await;

    handle.reload(udp(proxy, new.addr())).await.expect("reload");
    refuse_from_now_on(old).await;
    let s = moves_on(&mut client, proxy, &handle).await;
    assert!(new.count() > 0, "the new upstream saw nothing");
    assert_eq!(s.udp.sessions_total, 2, "{s:#?}");
}

/// The same when DNS moves the name from 127.0.0.1 to 127.0.0.2 and the old address
/// refuses: the session whose upstream left the answer moves on.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_session_moves_on_when_dns_drops_its_refusing_upstream() {
    let (a, b) = same_port_pair();
    let a_addr = a.addr();
    let resolver = support::SwitchResolver::new([Ipv4Addr::LOCALHOST.into()]);
    let mut policy = proxy_core::resolve::CachePolicy::default();
    policy.refresh = Some(Duration::from_millis(50));
    policy.min_ttl = Duration::from_millis(20);
    let target: Target = format!("backend:{}", a_addr.port()).parse().unwrap();
    let handle = UdpForwarder::builder([v4_any_port()], target)
        .resolver(resolver.clone())
        .cache(policy)
        .build()
        .expect("valid settings")
        .start()
        .expect("start the forwarder");
    let proxy = proxy_addr(&handle);
    let mut client = Client::v4();
    within(
        LIMIT,
        "echo",
        client.round_trip(proxy, &tagged(1, 1000, 100)),
    )
    .await;
    assert_eq!(a.count(), 1);

    resolver.set([OTHER_LOOPBACK.into()]);
    refuse_from_now_on(a).await;
    let refreshed = handle.stats().resolve_refreshes;
    eventually("the cache has the new answer", LIMIT, || {
        handle.stats().resolve_refreshes >= refreshed + 2
    })
    .await;
    moves_on(&mut client, proxy, &handle).await;
    assert!(b.count() > 0, "the new upstream saw nothing");
}

// ===== build errors =====

#[test]
fn build_rejects_bad_settings() {
    let target: Target = "127.0.0.1:9".parse().unwrap();
    let builder = || UdpForwarder::builder([v4_any_port()], target.clone());

    let e = builder().max_sessions(0).build().unwrap_err();
    assert_eq!(e, BuildError::MaxSessions);
    assert!(e.to_string().contains("session"), "{e}");
    for bad in [0, 65] {
        let e = builder().batch_size(bad).build().unwrap_err();
        assert_eq!(e, BuildError::BatchSize(bad));
        assert!(e.to_string().contains(&format!("batch size {bad}")), "{e}");
    }
    let e = builder()
        .session_idle_timeout(Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!(e, BuildError::ZeroTimeout("udp_session_idle"));
    let none: [SocketAddr; 0] = [];
    assert_eq!(
        UdpForwarder::builder(none, target.clone())
            .build()
            .unwrap_err(),
        BuildError::NoListenAddress
    );

    // The smallest valid values, and a disabled idle timeout.
    assert!(builder().max_sessions(1).batch_size(1).build().is_ok());
    assert!(builder().batch_size(64).build().is_ok());
    assert!(builder().session_idle_timeout(None).build().is_ok());
    let mut t = Timeouts::default();
    assert_eq!(t.udp_session_idle, Some(Duration::from_secs(30)), "default");
    t.udp_session_idle = Some(Duration::from_secs(5));
    assert!(builder().timeouts(t).build().is_ok());
}
