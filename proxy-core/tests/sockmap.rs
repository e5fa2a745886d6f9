//! `relay = sockmap` against real sockets on loopback: a connection that keeps trading
//! small messages moves into the kernel (its bytes counted from the sockets' own
//! counters), in order even with messages in flight as it moves; short and bulk ones stay
//! in user space; joined, half-close, resets and the idle timeout behave as in user
//! space (tcp.rs, faults.rs and timeouts.rs also run their relay tests in this mode, on
//! connections too short to join). Needs root (or CAP_BPF with CAP_NET_ADMIN), as the
//! mode does.

#![cfg(target_os = "linux")]

mod support;

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use proxy_core::{ForwardSpec, ForwarderHandle, RelayMode, Timeouts};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio::time::Instant;

use proxy_testkit::client::{
    End, connect, read_all, round_trip, send_and_receive, set_reset_on_close, wait_end,
};
use proxy_testkit::data::{assert_bytes, payload};
use proxy_testkit::echo::{Server, echo_server, listener};
use proxy_testkit::tls::self_signed;
use proxy_testkit::wait::{join_all, settled_stats, within};
use support::{forwarder, proxy_addr, timeouts};

const LIMIT: Duration = Duration::from_secs(30);

fn in_kernel(target: SocketAddr) -> ForwarderHandle {
    forwarder(target, RelayMode::Sockmap, Timeouts::default())
}

/// Ten round trips through `client` and `up`, the two ends of one relayed connection:
/// more small messages than the relay moves in user space, so the pair joins the map.
async fn chat(client: &mut TcpStream, up: &mut TcpStream) {
    for i in 0..10u8 {
        let mut buf = [0; 3];
        client.write_all(&[i, 1, 2]).await.unwrap();
        within(LIMIT, "request", up.read_exact(&mut buf))
            .await
            .unwrap();
        assert_eq!(buf, [i, 1, 2]);
        up.write_all(&[i, 3, 4]).await.unwrap();
        within(LIMIT, "reply", client.read_exact(&mut buf))
            .await
            .unwrap();
        assert_eq!(buf, [i, 3, 4]);
    }
}

/// A client and the upstream's end of its connection, joined after a chat.
async fn joined(handle: &ForwarderHandle, upstream: &TcpListener) -> (TcpStream, TcpStream) {
    let mut client = connect(proxy_addr(handle)).await;
    let (mut up, _) = within(LIMIT, "accept", upstream.accept()).await.unwrap();
    chat(&mut client, &mut up).await;
    (client, up)
}

/// After a chat, echoes of 1 B to 8 MiB go through the kernel, none spliced, and the
/// counters (from `TCP_INFO`) stay exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chatty_connection_moves_into_the_kernel_and_is_counted_exactly() {
    let echo: Server = echo_server().await;
    let handle = in_kernel(echo.addr());
    let sizes = [1usize, 1000, 64 << 10, 1 << 20, 8 << 20];
    let mut total = 0u64;
    for (i, size) in sizes.into_iter().enumerate() {
        let mut client = connect(proxy_addr(&handle)).await;
        for _ in 0..10 {
            round_trip(&mut client, b"ping").await;
        }
        let sent = payload(i as u64, size);
        let got = within(LIMIT, "echo", send_and_receive(&mut client, &sent)).await;
        assert_bytes(&format!("echo of {size} B"), &got, &sent);
        total += 40 + size as u64;
    }
    let s = settled_stats(&handle, |s| {
        s.connections_open == 0 && s.bytes_to_downstream >= total
    })
    .await;
    assert_eq!(s.bytes_to_upstream, total);
    assert_eq!(s.bytes_to_downstream, total);
    let bulk: u64 = sizes.iter().map(|&n| n as u64).sum();
    assert!(
        s.bytes_in_kernel >= 2 * bulk && s.bytes_in_kernel <= 2 * total,
        "{} bytes in the kernel of {}",
        s.bytes_in_kernel,
        2 * total
    );
    assert_eq!(s.bytes_spliced, 0);
    assert_eq!(s.sockmap_fallbacks, 0);
    assert!(handle.shutdown(Duration::from_secs(5)).await);
}

/// Messages pipelined while the pair joins (the relay stops between two of them, with
/// more on the way both ways) arrive in order: 40 connections of 2,000 numbers each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_in_flight_while_the_pair_joins_keep_their_order() {
    let echo = echo_server().await;
    let handle = in_kernel(echo.addr());
    let mut clients = JoinSet::new();
    for _ in 0..40 {
        let proxy = proxy_addr(&handle);
        clients.spawn(async move {
            let (mut reader, mut writer) = connect(proxy).await.into_split();
            let writing = tokio::spawn(async move {
                for i in 0..2000u32 {
                    writer.write_all(&i.to_be_bytes()).await.unwrap();
                    if i % 8 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
                writer
            });
            for i in 0..2000u32 {
                let mut m = [0; 4];
                within(LIMIT, "echo", reader.read_exact(&mut m))
                    .await
                    .unwrap();
                assert_eq!(u32::from_be_bytes(m), i, "echoed in order");
            }
            drop(writing.await.unwrap());
        });
    }
    within(LIMIT, "40 pipelines", join_all(clients)).await;
    let s = settled_stats(&handle, |s| s.connections_open == 0).await;
    assert_eq!(s.bytes_to_upstream, 40 * 8000);
    assert_eq!(s.bytes_to_downstream, 40 * 8000);
    assert!(s.bytes_in_kernel > 0, "no connection joined the map");
}

/// One request and one reply, or a transfer bigger than a buffer, stay in user space:
/// joining would cost them more than it saves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_and_bulk_connections_stay_in_user_space() {
    let echo = echo_server().await;
    let handle = in_kernel(echo.addr());
    for i in 0..10u64 {
        let mut client = connect(proxy_addr(&handle)).await;
        let sent = payload(i, if i % 2 == 0 { 10 } else { 4 << 20 });
        let got = within(LIMIT, "echo", send_and_receive(&mut client, &sent)).await;
        assert_bytes("echo", &got, &sent);
    }
    let s = settled_stats(&handle, |s| s.connections_open == 0).await;
    assert_eq!(s.bytes_in_kernel, 0);
    assert_eq!(s.sockmap_fallbacks, 0);
    assert!(s.bytes_spliced > 0);
}

/// Joined, the client sends a request and its FIN; the upstream reads it to EOF and still
/// sends a 2 MiB reply, which arrives whole before the client's EOF. Then the other way
/// round: the upstream's greeting and FIN first, the client's 1 MiB after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_in_the_kernel_keeps_the_other_direction_open() {
    let upstream = listener().await;
    let handle = in_kernel(upstream.local_addr().unwrap());
    for client_first in [true, false] {
        let (mut client, mut up) = joined(&handle, &upstream).await;
        let (first, second) = (payload(7, 300 << 10), payload(8, 2 << 20));
        let (mut closing, mut other) = if client_first {
            (client, up)
        } else {
            (up, client)
        };
        closing.write_all(&first).await.unwrap();
        closing.shutdown().await.unwrap();
        let (got, end) = within(LIMIT, "first to EOF", read_all(&mut other)).await;
        end.expect("a FIN after the bytes");
        assert_bytes("before the FIN", &got, &first);
        other.write_all(&second).await.unwrap();
        other.shutdown().await.unwrap();
        let (got, end) = within(LIMIT, "second to EOF", read_all(&mut closing)).await;
        end.expect("a FIN after the bytes");
        assert_bytes("after the other's FIN", &got, &second);
        (client, up) = if client_first {
            (closing, other)
        } else {
            (other, closing)
        };
        drop((client, up));
    }
    let s = settled_stats(&handle, |s| s.connections_open == 0).await;
    let each = 60 + (300 << 10) + (2 << 20);
    assert_eq!(s.bytes_to_upstream + s.bytes_to_downstream, 2 * each);
    assert!(s.bytes_in_kernel >= 2 * ((300 << 10) + (2 << 20)));
    assert_eq!(s.sockmap_fallbacks, 0);
}

/// Joined, a reset from either side reaches the other as a reset, after the bytes sent
/// before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_in_the_kernel_reaches_the_other_side() {
    let upstream = listener().await;
    let handle = in_kernel(upstream.local_addr().unwrap());
    for client_resets in [true, false] {
        let (client, up) = joined(&handle, &upstream).await;
        let (mut resetting, mut other) = if client_resets {
            (client, up)
        } else {
            (up, client)
        };
        let last = payload(9, 100 << 10);
        resetting.write_all(&last).await.unwrap();
        let mut got = vec![0; last.len()];
        within(LIMIT, "the last bytes", other.read_exact(&mut got))
            .await
            .unwrap();
        assert_bytes("before the reset", &got, &last);
        set_reset_on_close(&resetting);
        drop(resetting);
        let mut buf = [0; 64];
        let read = within(LIMIT, "read after the reset", other.read(&mut buf)).await;
        assert_eq!(
            read.map_err(|e| e.kind()),
            Err(io::ErrorKind::ConnectionReset),
            "client resets: {client_resets}"
        );
    }
    settled_stats(&handle, |s| s.connections_open == 0).await;
}

/// Joined and then silent, a connection is closed with a FIN once the idle timeout has
/// passed since its last byte (as the socket's own `TCP_INFO` says).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_idle_timeout_closes_a_joined_connection() {
    const IDLE: Duration = Duration::from_millis(600);
    let upstream = listener().await;
    let t = timeouts(|t| t.idle = Some(IDLE));
    let handle = forwarder(upstream.local_addr().unwrap(), RelayMode::Sockmap, t);
    let (mut client, mut up) = joined(&handle, &upstream).await;
    // Traffic after joining keeps it open past the timeout.
    for _ in 0..4 {
        tokio::time::sleep(IDLE / 3).await;
        chat(&mut client, &mut up).await;
    }
    let last = Instant::now();
    assert_eq!(wait_end(&mut client, IDLE * 3).await, End::Eof);
    let elapsed = last.elapsed();
    assert!(
        elapsed + Duration::from_millis(100) >= IDLE,
        "closed after {elapsed:?}"
    );
    assert_eq!(wait_end(&mut up, LIMIT).await, End::Eof);
    let s = settled_stats(&handle, |s| s.connections_open == 0).await;
    assert!(s.bytes_in_kernel > 0);
}

/// The kernel cannot terminate TLS: the two settings together are refused, naming
/// `relay`.
#[test]
fn sockmap_with_tls_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path(), "example.test");
    let mut spec = ForwardSpec::default();
    for (key, value) in [
        ("listen", "127.0.0.1:0"),
        ("target", "127.0.0.1:9"),
        ("relay", "sockmap"),
        ("tls_cert", cert.to_str().unwrap()),
        ("tls_key", key.to_str().unwrap()),
    ] {
        spec.set(key, value).unwrap();
    }
    let e = spec
        .tcp_forwarder(spec.make_resolver().unwrap())
        .unwrap_err();
    assert_eq!(e.key(), "relay", "{e}");
    assert!(
        e.to_string().contains("cannot terminate or originate TLS"),
        "{e}"
    );
}
