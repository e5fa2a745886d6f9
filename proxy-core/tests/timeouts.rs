//! The timers of a forwarded connection against real sockets: half-close, idle, maximum
//! lifetime.
//!
//! The timers under test run inside the forwarder on the real clock, so these tests let
//! real time pass; every bound has a generous margin for a loaded two-core machine.

mod support;

use std::io;
use std::time::Duration;

use proxy_core::RelayMode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use proxy_testkit::client::{End, connect, read_all, round_trip, wait_end};
use proxy_testkit::data::{assert_bytes, payload};
use proxy_testkit::echo::{echo_server, listener};
use proxy_testkit::wait::{settled_stats, within};
use support::{MODES, forwarder, proxy_addr, timeouts};

/// How late a timer may act on a loaded machine before a test calls it broken.
const MARGIN: Duration = Duration::from_secs(3);
/// The most any other single step may take.
const LIMIT: Duration = Duration::from_secs(30);

// ===== half-close =====

/// After the client's FIN, the reply direction stays open (bytes still flow) until the
/// half-close timeout, which cuts it with a reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_timeout_cuts_the_reply_direction() {
    let half_close = Duration::from_millis(600);
    let upstream = listener().await;
    let t = timeouts(|t| t.half_close = Some(half_close));
    let handle = forwarder(upstream.local_addr().unwrap(), RelayMode::Auto, t);
    let mut client = connect(proxy_addr(&handle)).await;
    let (mut up, _) = within(LIMIT, "accept", upstream.accept()).await.unwrap();

    client.write_all(b"request").await.unwrap();
    let fin = Instant::now();
    client.shutdown().await.unwrap();
    let (got, end) = within(LIMIT, "upstream read", read_all(&mut up)).await;
    end.expect("the request ends with a FIN");
    assert_bytes("request", &got, b"request");
    // The other direction is still open...
    up.write_all(b"partial").await.unwrap();
    let mut buf = [0; 7];
    client
        .read_exact(&mut buf)
        .await
        .expect("reply after the FIN");
    assert_eq!(&buf, b"partial");
    // ...until the timer cuts it.
    assert_eq!(wait_end(&mut client, half_close + MARGIN).await, End::Reset);
    let elapsed = fin.elapsed();
    assert!(elapsed >= half_close, "cut after {elapsed:?}");
    // The upstream, past its EOF, sees the reset when it writes.
    assert_write_fails(&mut up).await;
    settled_stats(&handle, |s| s.connections_open == 0).await;
}

/// After the upstream's FIN, the request direction stays open (bytes still flow) until the
/// half-close timeout, which cuts it with a reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_timeout_cuts_the_request_direction() {
    let half_close = Duration::from_millis(600);
    let upstream = listener().await;
    let t = timeouts(|t| t.half_close = Some(half_close));
    let handle = forwarder(upstream.local_addr().unwrap(), RelayMode::Auto, t);
    let mut client = connect(proxy_addr(&handle)).await;
    let (mut up, _) = within(LIMIT, "accept", upstream.accept()).await.unwrap();

    up.write_all(b"greeting").await.unwrap();
    let fin = Instant::now();
    up.shutdown().await.unwrap();
    let (got, end) = within(LIMIT, "client read", read_all(&mut client)).await;
    end.expect("the greeting ends with a FIN");
    assert_bytes("greeting", &got, b"greeting");
    // The other direction is still open...
    client.write_all(b"still talking").await.unwrap();
    let mut buf = [0; 13];
    up.read_exact(&mut buf)
        .await
        .expect("request after the FIN");
    assert_eq!(&buf, b"still talking");
    // ...until the timer cuts it.
    let mut rest = [0; 64];
    let read = within(half_close + MARGIN, "the cut", up.read(&mut rest)).await;
    assert_eq!(
        read.map_err(|e| e.kind()),
        Err(io::ErrorKind::ConnectionReset)
    );
    let elapsed = fin.elapsed();
    assert!(elapsed >= half_close, "cut after {elapsed:?}");
    assert_write_fails(&mut client).await;
    settled_stats(&handle, |s| s.connections_open == 0).await;
}

/// After the client's FIN, a reply that keeps streaming (a chunk every 150 ms, 1.5 s in
/// all) outlives a 600 ms half-close timeout: the timer counts inactivity, as HAProxy's
/// `client-fin`, not time since the FIN. Once the reply stops, it cuts the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_timeout_spares_a_reply_still_streaming() {
    streaming_after_a_fin_outlives_the_half_close_timeout(true).await;
}

/// The same after the upstream's FIN, with the client still sending.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_timeout_spares_a_request_still_streaming() {
    streaming_after_a_fin_outlives_the_half_close_timeout(false).await;
}

/// One peer sends its FIN; the other streams [`TICKS`] chunks, one per [`TICK`], for
/// longer than the half-close timeout: every byte arrives; then, idle, the connection is
/// cut with a reset, no sooner than the half-close timeout after the last chunk.
async fn streaming_after_a_fin_outlives_the_half_close_timeout(fin_from_client: bool) {
    let half_close = Duration::from_millis(600);
    let upstream = listener().await;
    let t = timeouts(|t| t.half_close = Some(half_close));
    let handle = forwarder(upstream.local_addr().unwrap(), RelayMode::Auto, t);
    let client = connect(proxy_addr(&handle)).await;
    let (up, _) = within(LIMIT, "accept", upstream.accept()).await.unwrap();
    let (mut finisher, mut streamer) = if fin_from_client {
        (client, up)
    } else {
        (up, client)
    };
    finisher.shutdown().await.unwrap();
    let fin = Instant::now();
    let (nothing, end) = within(LIMIT, "the forwarded FIN", read_all(&mut streamer)).await;
    end.expect("a FIN");
    assert!(nothing.is_empty());

    let seed = if fin_from_client { 90 } else { 100 };
    let chunks: Vec<Vec<u8>> = (0..TICKS).map(|i| payload(seed + i, CHUNK)).collect();
    let want = chunks.concat();
    let send = async {
        for chunk in &chunks {
            tokio::time::sleep(TICK).await;
            if streamer.write_all(chunk).await.is_err() {
                break;
            }
        }
        Instant::now()
    };
    let mut got = Vec::new();
    let receive = async {
        let mut buf = [0u8; 4096];
        while got.len() < want.len() {
            match finisher.read(&mut buf).await {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    };
    let (last_sent, received) =
        within(LIMIT, "the stream", async { tokio::join!(send, receive) }).await;
    assert!(
        received.is_ok(),
        "{} of {} bytes arrived, then {received:?}, {:?} after the FIN",
        got.len(),
        want.len(),
        fin.elapsed()
    );
    assert_bytes("streamed after the FIN", &got, &want);
    assert!(fin.elapsed() >= half_close * 2, "{:?}", fin.elapsed());
    // Idle now: cut, but only the half-close timeout after the last byte.
    assert_eq!(
        wait_end(&mut finisher, half_close + MARGIN).await,
        End::Reset
    );
    let idle = last_sent.elapsed();
    assert!(idle >= half_close, "cut {idle:?} after the last byte");
    settled_stats(&handle, |s| s.connections_open == 0).await;
}

/// Writes to a socket whose peer has reset it until a write fails (the first one may
/// still be buffered before the reset is known).
async fn assert_write_fails(stream: &mut TcpStream) {
    for _ in 0..100 {
        if within(LIMIT, "write", stream.write_all(&[0; 1024]))
            .await
            .is_err()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("100 writes after the reset succeeded");
}

// ===== idle =====

const IDLE: Duration = Duration::from_millis(500);
/// Traffic every 150 ms for 1.5 s: three idle periods, never 500 ms without a byte.
const TICK: Duration = Duration::from_millis(150);
const TICKS: u64 = 10;
const CHUNK: usize = 1000;

/// Client-to-upstream traffic alone keeps a connection open past the idle timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_timeout_spares_traffic_from_the_client() {
    traffic_one_way_keeps_the_connection(true).await;
}

/// Upstream-to-client traffic alone keeps a connection open past the idle timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_timeout_spares_traffic_from_the_upstream() {
    traffic_one_way_keeps_the_connection(false).await;
}

/// Sends a chunk every tick, for twice the idle timeout, in one direction only; every
/// chunk arrives, and afterwards both directions still work.
async fn traffic_one_way_keeps_the_connection(from_client: bool) {
    let upstream = listener().await;
    let t = timeouts(|t| t.idle = Some(IDLE));
    let handle = forwarder(upstream.local_addr().unwrap(), RelayMode::Auto, t);
    let client = connect(proxy_addr(&handle)).await;
    let (up, _) = within(LIMIT, "accept", upstream.accept()).await.unwrap();
    let (mut sender, mut receiver) = if from_client {
        (client, up)
    } else {
        (up, client)
    };

    let seed = if from_client { 70 } else { 80 };
    let chunks: Vec<Vec<u8>> = (0..TICKS).map(|i| payload(seed + i, CHUNK)).collect();
    let started = Instant::now();
    let send = async {
        for chunk in &chunks {
            tokio::time::sleep(TICK).await;
            sender.write_all(chunk).await.expect("still open");
        }
    };
    let mut got = vec![0; chunks.len() * CHUNK];
    let (_, read) = within(LIMIT, "ticks", async {
        tokio::join!(send, receiver.read_exact(&mut got))
    })
    .await;
    read.expect("every chunk arrives");
    assert_bytes("ticks", &got, &chunks.concat());
    assert!(started.elapsed() >= IDLE * 2);
    // Both directions are still open.
    receiver.write_all(b"still here").await.unwrap();
    let mut buf = [0; 10];
    sender.read_exact(&mut buf).await.expect("still open");
    assert_eq!(&buf, b"still here");
    assert_eq!(handle.stats().connections_open, 1);
}

/// A connection with no traffic is closed (with a FIN: nothing was in flight) once the
/// idle timeout has passed since the last byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_timeout_closes_a_silent_connection() {
    let echo = echo_server().await;
    for &mode in MODES {
        let t = timeouts(|t| t.idle = Some(IDLE));
        let handle = forwarder(echo.addr(), mode, t);
        let mut client = connect(proxy_addr(&handle)).await;
        round_trip(&mut client, b"last words").await;
        let last = Instant::now();
        assert_eq!(wait_end(&mut client, IDLE + MARGIN).await, End::Eof);
        let elapsed = last.elapsed();
        // The proxy moved the last byte a moment before the client read it.
        assert!(
            elapsed + Duration::from_millis(100) >= IDLE,
            "{mode:?}: closed {elapsed:?} after the last byte"
        );
        settled_stats(&handle, |s| s.connections_open == 0).await;
    }
}

// ===== max lifetime =====

/// A connection busy with request/reply traffic every 50 ms is still closed when it
/// reaches its maximum lifetime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_lifetime_closes_a_busy_connection() {
    let lifetime = Duration::from_millis(800);
    let echo = echo_server().await;
    let t = timeouts(|t| t.max_lifetime = Some(lifetime));
    let handle = forwarder(echo.addr(), RelayMode::Auto, t);

    let started = Instant::now();
    let mut client = connect(proxy_addr(&handle)).await;
    let mut exchanges = 0;
    for i in 0..1000 {
        assert!(
            started.elapsed() < lifetime + MARGIN,
            "still open after {:?}",
            started.elapsed()
        );
        let sent = payload(90 + i, 4096);
        let mut got = vec![0; sent.len()];
        let exchanged = within(LIMIT, "exchange", async {
            client.write_all(&sent).await?;
            client.read_exact(&mut got).await
        })
        .await;
        if exchanged.is_err() {
            break;
        }
        assert_bytes("echo", &got, &sent);
        exchanges += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elapsed = started.elapsed();
    assert!(elapsed >= lifetime, "closed after {elapsed:?}");
    assert!(exchanges >= 5, "only {exchanges} exchanges: not busy");
    settled_stats(&handle, |s| s.connections_open == 0).await;
}
