//! Faults against real sockets on loopback: nothing lost. Every byte that an endpoint
//! acknowledged is delivered, or the connection is reset: a connection is never silently
//! cut, and one failing peer never stops the forwarder from serving others.
//!
//! - an upstream that accepts and never reads: the client is held back by kernel buffers
//!   (the relay holds at most one pipe or buffer), memory stays flat, and the idle timeout
//!   still ends the connection, with a reset since bytes are in flight;
//! - a peer that resets mid-transfer: the other peer gets every byte the proxy had
//!   acknowledged from it, then a reset, as over a direct connection;
//! - an upstream that never answers a SYN: the connect timeout closes the client, counted,
//!   while the listener and other forwarders go on;
//! - DNS servers that never answer, or answer garbage, over UDP and TCP: clients are closed
//!   within the connect budget, failures are counted, nothing panics, and the forwarder
//!   serves once DNS is good again (a real dnsmasq);
//! - 200 slowloris clients: closed by the idle timeout while a normal client is served, and
//!   every descriptor is returned;
//! - UDP upstreams that are gone (ICMP port unreachable) or never reply: sessions end on
//!   the idle timeout while the listener serves others byte for byte.
//!
//! Byte counts of kernel queues come from `/proc/net/tcp`, memory from `/proc/self/status`;
//! tests that measure the process run in a child process of their own
//! ([`proxy_testkit::process::in_own_process`]). Needs Linux and dnsmasq (`dnsmasq-base`).
#![cfg(target_os = "linux")]

mod support;

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use proxy_core::resolve::HickoryResolver;
use proxy_core::{ForwarderHandle, RelayMode, TcpForwarder, Timeouts, UdpForwarder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinSet;
use tokio::time::Instant;

use proxy_testkit::client::{
    End, connect, read_all, send_and_receive, set_reset_on_close, wait_end,
};
use proxy_testkit::data::{assert_bytes, payload};
use proxy_testkit::echo::{echo_server, listener};
use proxy_testkit::net::v4_any_port;
use proxy_testkit::process::{in_own_process, open_fds};
use proxy_testkit::wait::{eventually, join_all, settled_stats, settled_stats_within, within};
use support::{MODES, proxy_addr, timeouts};

/// How late a timer may act on a loaded machine before a test calls it broken.
const MARGIN: Duration = Duration::from_secs(3);
/// The most any other single step may take.
const LIMIT: Duration = Duration::from_secs(30);
/// How much earlier than its deadline a timer may seem to fire, measured from the test's
/// side (the relay keeps its activity clock in whole milliseconds).
const EARLY: Duration = Duration::from_millis(50);

/// The relay's pipe and buffer sizes, set explicitly where a bound depends on them (they
/// are also the defaults).
const PIPE_SIZE: usize = 256 << 10;
const BUFFER_SIZE: usize = 64 << 10;

// ===== measuring the kernel and the process =====

/// The send and receive queues (bytes not yet acknowledged by the peer or not yet sent;
/// bytes received and not yet read) of the established IPv4 TCP socket `local` ->
/// `remote`, from `/proc/net/tcp`.
fn tcp_queues(local: SocketAddr, remote: SocketAddr) -> Option<TcpQueues> {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("read /proc/net/tcp");
    // `0100007F:1F90`: the address as the kernel's native-endian u32, the port big-endian.
    let parse = |field: &str| -> Option<SocketAddr> {
        let (ip, port) = field.split_once(':')?;
        let ip = u32::from_str_radix(ip, 16).ok()?;
        let port = u16::from_str_radix(port, 16).ok()?;
        Some(SocketAddr::from((Ipv4Addr::from(ip.to_ne_bytes()), port)))
    };
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 5 || parse(fields[1])? != local || parse(fields[2])? != remote {
            return None;
        }
        let (tx, rx) = fields[4].split_once(':')?;
        Some(TcpQueues {
            send: u64::from_str_radix(tx, 16).ok()?,
            recv: u64::from_str_radix(rx, 16).ok()?,
        })
    })
}

#[derive(Clone, Copy, Debug)]
struct TcpQueues {
    send: u64,
    recv: u64,
}

/// Waits until the kernel of `stream` has had every byte written to it acknowledged by
/// the peer (its send queue is empty).
async fn acknowledged(stream: &TcpStream) {
    let (local, remote) = (stream.local_addr().unwrap(), stream.peer_addr().unwrap());
    eventually("the peer acknowledges every byte", LIMIT, || {
        tcp_queues(local, remote).is_some_and(|q| q.send == 0)
    })
    .await;
}

/// The resident memory of this process, in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS in /proc/self/status");
    kib << 10
}

/// The largest buffer the kernel gives one TCP socket for sending and for receiving
/// (the third field of `net.ipv4.tcp_wmem` and `tcp_rmem`).
fn tcp_buffer_max() -> (u64, u64) {
    let max = |name: &str| -> u64 {
        let text = std::fs::read_to_string(format!("/proc/sys/net/ipv4/{name}"))
            .unwrap_or_else(|e| panic!("read {name}: {e}"));
        text.split_whitespace()
            .nth(2)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name}: {text:?}"))
    };
    (max("tcp_wmem"), max("tcp_rmem"))
}

/// A TCP forwarder from `127.0.0.1:0` to `target` with the pipe and buffer sizes above.
fn tcp_forwarder(target: SocketAddr, mode: RelayMode, timeouts: Timeouts) -> ForwarderHandle {
    TcpForwarder::builder([v4_any_port()], target.into())
        .relay(mode)
        .pipe_size(PIPE_SIZE)
        .buffer_size(BUFFER_SIZE)
        .timeouts(timeouts)
        .build()
        .expect("valid settings")
        .start()
        .expect("start the forwarder")
}

// ===== an upstream that never reads =====

/// The client's stream: 64 KiB chunks from consecutive seeds, so any prefix can be
/// checked without keeping what was sent.
const CHUNK: usize = 64 << 10;
const STREAM_SEED: u64 = 1_000;

fn stream_chunk(k: u64) -> Vec<u8> {
    payload(STREAM_SEED + k, CHUNK)
}

/// Asserts that `got` is the first `got.len()` bytes of the client's stream.
#[track_caller]
fn assert_stream_prefix(what: &str, got: &[u8]) {
    let chunks = got.len().div_ceil(CHUNK) as u64;
    let want: Vec<u8> = (0..chunks).flat_map(stream_chunk).collect();
    assert_bytes(what, got, &want[..got.len()]);
}

/// Idle timeout of the never-reads test: longer than the fill (about a second, most of it
/// the [`BLOCKED`] wait), so that the relay's state can be measured before the timer fires.
const FILL_IDLE: Duration = Duration::from_secs(4);
/// A write that waits this long for room means the client is held back.
const BLOCKED: Duration = Duration::from_secs(1);
/// The client stops here if nothing held it back.
const MAX_WRITE: u64 = 256 << 20;
/// How much the process's resident memory may grow while the client fills the path.
const MAX_RSS_GROWTH: u64 = 16 << 20;

/// [`upstream_that_never_reads`] with splice ([`RelayMode::Auto`]), in a process of its
/// own (it measures the process's memory).
#[test]
fn upstream_that_never_reads_holds_the_client_back_auto() {
    in_own_process(
        "upstream_that_never_reads_holds_the_client_back_auto",
        "PROXY_FAULTS_NEVER_READS_AUTO",
        || upstream_that_never_reads(RelayMode::Auto),
    );
}

/// [`upstream_that_never_reads`] with copying ([`RelayMode::Copy`]), in a process of its
/// own (it measures the process's memory).
#[test]
fn upstream_that_never_reads_holds_the_client_back_copy() {
    in_own_process(
        "upstream_that_never_reads_holds_the_client_back_copy",
        "PROXY_FAULTS_NEVER_READS_COPY",
        || upstream_that_never_reads(RelayMode::Copy),
    );
}

/// The upstream accepts and never reads; the client writes as fast as it can, up to
/// 256 MiB, until a write has waited 1 s for room. Proves:
///
/// - the client is held back: what it wrote is what the four kernel queues on the path
///   hold (client send, proxy receive, proxy send, upstream receive, read from
///   `/proc/net/tcp`) plus at most one relay pipe or buffer (the relay reads a burst only
///   when it can write it on, and holds one pipe or buffer per direction; memory
///   does not grow with the client's bytes), and it stays within the kernel's own
///   buffer limits;
/// - the process's resident memory grows by less than 16 MiB;
/// - the idle timeout still fires, as a reset on both sides, since bytes were in flight: the
///   upstream reads an exact prefix of the stream and then the reset, never a clean EOF.
async fn upstream_that_never_reads(mode: RelayMode) {
    let upstream = listener().await;
    let upstream_addr = upstream.local_addr().unwrap();
    let handle = tcp_forwarder(upstream_addr, mode, timeouts(|t| t.idle = Some(FILL_IDLE)));
    let proxy = proxy_addr(&handle);
    let mut client = connect(proxy).await;
    let client_addr = client.local_addr().unwrap();
    let (mut up, proxy_up) = within(LIMIT, "accept", upstream.accept()).await.unwrap();

    let mut chunk = stream_chunk(0);
    let rss_before = rss();
    let started = Instant::now();
    let (mut written, mut k, mut offset) = (0u64, 0u64, 0usize);
    let mut held_back = false;
    for _ in 0..10_000_000 {
        if written >= MAX_WRITE || started.elapsed() > LIMIT {
            break;
        }
        if tokio::time::timeout(BLOCKED, client.writable())
            .await
            .is_err()
        {
            held_back = true;
            break;
        }
        match client.try_write(&chunk[offset..]) {
            Ok(n) => {
                written += n as u64;
                offset += n;
                if offset == CHUNK {
                    k += 1;
                    chunk = stream_chunk(k);
                    offset = 0;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => panic!(
                "{mode:?}: the connection failed after {written} bytes, {:?} into the fill: {e}",
                started.elapsed()
            ),
        }
    }
    let blocked_at = Instant::now();
    let rss_after = rss();
    let queue = |local, remote, what| {
        tcp_queues(local, remote).unwrap_or_else(|| panic!("{what} ({local} -> {remote})"))
    };
    let client_q = queue(client_addr, proxy, "client socket");
    let proxy_client_q = queue(proxy, client_addr, "proxy's client socket");
    let proxy_up_q = queue(proxy_up, upstream_addr, "proxy's upstream socket");
    let up_q = queue(upstream_addr, proxy_up, "upstream socket");
    let stats = handle.stats();
    let in_kernel = client_q.send + proxy_client_q.recv + proxy_up_q.send + up_q.recv;
    let in_relay = written as i64 - in_kernel as i64;
    let growth = rss_after.saturating_sub(rss_before);
    println!(
        "{mode:?}: the client wrote {written} bytes in {:?} before a write blocked for \
         {BLOCKED:?}; kernel queues: client send {}, proxy receive {}, proxy send {}, \
         upstream receive {}; in the relay {in_relay}; relayed {}; RSS {rss_before} -> \
         {rss_after} (+{growth})",
        blocked_at - started - BLOCKED,
        client_q.send,
        proxy_client_q.recv,
        proxy_up_q.send,
        up_q.recv,
        stats.bytes_to_upstream,
    );
    assert!(
        held_back,
        "{mode:?}: the client wrote {written} bytes without being held back"
    );
    assert!(
        (0..=PIPE_SIZE.max(BUFFER_SIZE) as i64).contains(&in_relay),
        "{mode:?}: the relay holds {in_relay} bytes (written {written}, in kernel queues {in_kernel})"
    );
    let (wmem_max, rmem_max) = tcp_buffer_max();
    let bound = 2 * wmem_max + 2 * rmem_max + PIPE_SIZE as u64;
    assert!(
        written <= bound,
        "{mode:?}: wrote {written} bytes, more than the kernel's buffers hold ({bound})"
    );
    assert_eq!(
        stats.bytes_to_upstream,
        proxy_up_q.send + up_q.recv,
        "{mode:?}: relayed bytes are in the upstream's kernel queues"
    );
    assert!(
        growth < MAX_RSS_GROWTH,
        "{mode:?}: resident memory grew by {growth} bytes while the client wrote {written}"
    );

    // The idle timer counts from the last byte relayed, during the fill.
    assert_eq!(
        wait_end(&mut client, FILL_IDLE + MARGIN).await,
        End::Reset,
        "{mode:?}: bytes were in flight, so the idle timeout resets"
    );
    let closed = started.elapsed();
    println!(
        "{mode:?}: reset {closed:?} after the fill began, {:?} after the client was held back",
        blocked_at.elapsed()
    );
    assert!(
        closed + EARLY >= FILL_IDLE,
        "{mode:?}: reset after {closed:?}"
    );
    let (got, end) = within(LIMIT, "the upstream reads", read_all(&mut up)).await;
    assert_eq!(
        end.map_err(|e| e.kind()),
        Err(io::ErrorKind::ConnectionReset),
        "{mode:?}: the upstream sees the reset after {} bytes",
        got.len()
    );
    assert_stream_prefix(&format!("{mode:?}: what the upstream got"), &got);
    let s = settled_stats(&handle, |s| s.connections_open == 0).await;
    assert!(got.len() as u64 <= s.bytes_to_upstream);
    assert_eq!(s.connections_total, 1);
}

// ===== resets mid-transfer =====

/// Which peer resets in [`reset_mid_transfer`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Resetting {
    Upstream,
    Client,
}

/// A peer resets mid-transfer, in both relay modes and from either side, and the other
/// peer gets everything that peer sent, then a reset, never a clean EOF:
///
/// - the upstream reads 64 KiB of a 1 MiB request (the rest still in flight), sends a
///   48 KiB reply, waits until the proxy has acknowledged it, then resets;
/// - the client sends a 48 KiB request while a 1 MiB reply comes in, reads part of the
///   reply, waits until the proxy has acknowledged its request, then resets.
///
/// The other peer reads only: its reads report the reset (Linux reports ECONNRESET once,
/// to the first call after it, so nothing else may touch the socket).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_mid_transfer_reaches_the_other_peer_as_a_reset() {
    for &mode in MODES {
        for resetting in [Resetting::Upstream, Resetting::Client] {
            for round in 0..3 {
                let (got, sent, delivered, end) =
                    reset_mid_transfer(mode, resetting, 48 << 10, false).await;
                let what = format!("{mode:?}, {resetting:?} resets, round {round}");
                assert_eq!(end, End::Reset, "{what}: after {} bytes", got.len());
                assert_eq!(delivered, sent.len() as u64, "{what}: relayed");
                assert_bytes(&format!("{what}: all before the reset"), &got, &sent);
            }
        }
    }
}

/// Every byte a peer had acknowledged by the proxy before it resets reaches the other peer
/// before the reset, as over a direct TCP connection (whose kernel keeps acknowledged bytes
/// readable after a reset). Here the other peer reads only after the reset: 1 MiB was
/// acknowledged and relayed, most of it still in the proxy's send queue to the reader,
/// which the relay lets drain before it resets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_acknowledged_before_a_reset_are_all_delivered() {
    let mut failures = Vec::new();
    for &mode in MODES {
        for resetting in [Resetting::Upstream, Resetting::Client] {
            let (got, sent, delivered, end) =
                reset_mid_transfer(mode, resetting, 1 << 20, true).await;
            if got != sent || end != End::Reset {
                failures.push(format!(
                    "{mode:?}, {resetting:?} resets: {} of {} acknowledged bytes arrived \
                     ({delivered} relayed), then {end:?}",
                    got.len(),
                    sent.len()
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// Runs one reset: the resetting peer sends `len` bytes, waits until its kernel has them
/// acknowledged by the proxy, and resets. The other peer reads at once, or with
/// `read_late` only once the proxy has relayed every byte. Returns what the other peer
/// read, what was sent, how many bytes the proxy relayed that way, and how it ended.
async fn reset_mid_transfer(
    mode: RelayMode,
    resetting: Resetting,
    len: usize,
    read_late: bool,
) -> (Vec<u8>, Vec<u8>, u64, End) {
    let upstream = listener().await;
    let handle = tcp_forwarder(upstream.local_addr().unwrap(), mode, Timeouts::default());
    let mut client = connect(proxy_addr(&handle)).await;
    let (mut up, _) = within(LIMIT, "accept", upstream.accept()).await.unwrap();
    let sent = payload(40 + len as u64, len);
    // The other direction: 1 MiB, of which only 64 KiB are read, so it is mid-transfer too.
    let other = payload(41, 1 << 20);
    // Written while the receiver reads its first 64 KiB (the kernel buffers on the way take
    // the rest), so the writer is done before the reset.
    let mut first = vec![0; 64 << 10];
    let (mut resetter, mut reader) = match resetting {
        Resetting::Upstream => {
            let (wrote, read) = within(LIMIT, "the request", async {
                tokio::join!(client.write_all(&other), up.read_exact(&mut first))
            })
            .await;
            wrote.expect("write the request");
            read.expect("read part of the request");
            (up, client)
        }
        Resetting::Client => {
            let (wrote, read) = within(LIMIT, "the reply", async {
                tokio::join!(up.write_all(&other), client.read_exact(&mut first))
            })
            .await;
            wrote.expect("write the reply");
            read.expect("read part of the reply");
            (client, up)
        }
    };
    assert_bytes("the first 64 KiB", &first, &other[..first.len()]);
    let relayed = |s: &proxy_core::StatsSnapshot| match resetting {
        Resetting::Upstream => s.bytes_to_downstream,
        Resetting::Client => s.bytes_to_upstream,
    };
    let before = relayed(&handle.stats());
    within(LIMIT, "send", resetter.write_all(&sent))
        .await
        .unwrap();
    acknowledged(&resetter).await;
    if read_late {
        settled_stats(&handle, |s| relayed(s) == before + len as u64).await;
    }
    set_reset_on_close(&resetter);
    drop(resetter);

    let mut got = Vec::new();
    let mut buf = vec![0; 64 << 10];
    let end = within(LIMIT, "the reset reaches the other peer", async {
        for _ in 0..1_000_000 {
            match reader.read(&mut buf).await {
                Ok(0) => return End::Eof,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return End::Reset,
                Err(e) => panic!("read: unexpected error {e}"),
            }
        }
        panic!("more than a million reads");
    })
    .await;
    let s = settled_stats(&handle, |s| s.connections_open == 0).await;
    (got, sent, relayed(&s) - before, end)
}

/// How long the relay waits for a peer that makes no progress taking the bytes it is
/// owed before it resets anyway (`FLUSH_STALL` in the relay).
const FLUSH_STALL: Duration = Duration::from_secs(5);

/// The upstream sends 4 MiB and resets while the client reads nothing: the relay gives up
/// delivering once nothing has moved for its stall limit, so the connection ends within
/// that bound instead of waiting on the client forever; the client then reads a prefix
/// and the reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_reads_is_reset_once_delivery_stalls() {
    // Both relay modes at once: the reset must be seen while the bytes wait in a pipe
    // (splice) or a buffer (copy) for the client to read.
    let (auto, copy) = tokio::join!(
        reset_while_the_client_never_reads(RelayMode::Auto),
        reset_while_the_client_never_reads(RelayMode::Copy),
    );
    for (mode, took) in [("auto", auto), ("copy", copy)] {
        println!("{mode}: the stalled connection ended {took:?} after the upstream's reset");
    }
}

/// The upstream writes until every buffer is full and resets; the client never reads.
/// Returns how long after the reset the connection ended.
async fn reset_while_the_client_never_reads(mode: RelayMode) -> Duration {
    let upstream = listener().await;
    let handle = tcp_forwarder(upstream.local_addr().unwrap(), mode, Timeouts::default());
    let mut client = connect(proxy_addr(&handle)).await;
    let (mut up, _) = within(LIMIT, "accept", upstream.accept()).await.unwrap();
    let reply = payload(77, 4 << 20);
    // The client does not read: the write stops when every buffer on the way is full.
    let _ = tokio::time::timeout(Duration::from_secs(1), up.write_all(&reply)).await;
    set_reset_on_close(&up);
    drop(up);
    let reset_at = tokio::time::Instant::now();
    settled_stats_within(&handle, FLUSH_STALL + MARGIN, |s| s.connections_open == 0).await;
    let took = reset_at.elapsed();
    assert!(
        took + EARLY >= FLUSH_STALL,
        "{mode:?}: gave up after {took:?}"
    );
    let (got, end) = within(LIMIT, "the client reads", read_all(&mut client)).await;
    assert_eq!(
        end.map_err(|e| e.kind()),
        Err(io::ErrorKind::ConnectionReset)
    );
    assert_bytes("a prefix", &got, &reply[..got.len()]);
    assert!(
        got.len() < reply.len(),
        "{mode:?}: the rest was never taken"
    );
    took
}

// ===== an upstream that never answers a SYN =====

/// A listener on 127.0.0.1 that never answers a SYN: its backlog is filled by a connection
/// nobody accepts, so the kernel drops further SYNs, as a host that is down would (as in
/// `tests/balance.rs`). Returns its address; keep the rest alive.
fn unresponsive() -> (SocketAddr, socket2::Socket, Vec<std::net::TcpStream>) {
    let listener =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    listener.bind(&v4_any_port().into()).unwrap();
    listener.listen(0).unwrap();
    let addr = listener.local_addr().unwrap().as_socket().unwrap();
    let mut held = Vec::new();
    for _ in 0..8 {
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(s) => held.push(s),
            Err(_) => return (addr, listener, held),
        }
    }
    panic!("the backlog of {addr} never filled");
}

/// The connect timeout of the SYN blackhole test.
const SYN_TIMEOUT: Duration = Duration::from_millis(500);

/// The only upstream address never answers a SYN. Ten clients at once (half of them send a
/// request first) are each closed once their 500 ms connect attempt times out: all
/// together, not one after another, so the listener is never stuck. A client that sent
/// nothing gets a clean EOF (the forwarder just closes the connection); one whose request
/// was acknowledged but can never be delivered gets a reset. Every attempt is counted as a
/// connect timeout. Meanwhile another forwarder in the process serves byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syn_blackhole_times_out_each_client_and_the_listener_goes_on() {
    const CLIENTS: u32 = 10;
    let (target, _blackhole, _held) = unresponsive();
    let handle = tcp_forwarder(
        target,
        RelayMode::Auto,
        timeouts(|t| t.connect = SYN_TIMEOUT),
    );
    let proxy = proxy_addr(&handle);
    let echo = echo_server().await;
    let healthy = tcp_forwarder(echo.addr(), RelayMode::Auto, Timeouts::default());

    let mut clients = JoinSet::new();
    for i in 0..CLIENTS {
        clients.spawn(async move {
            let mut client = connect(proxy).await;
            let connected = Instant::now();
            let sends = i % 2 == 1;
            if sends {
                client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
            }
            let end = wait_end(&mut client, SYN_TIMEOUT + MARGIN).await;
            let took = connected.elapsed();
            let want = if sends { End::Reset } else { End::Eof };
            assert_eq!(end, want, "client {i} (sent a request: {sends})");
            assert!(
                took + EARLY >= SYN_TIMEOUT,
                "client {i} closed after {took:?}"
            );
            took
        });
    }
    // The other forwarder serves while those connects are pending.
    let started = Instant::now();
    let sent = payload(50, 256 << 10);
    let mut other = connect(proxy_addr(&healthy)).await;
    let got = within(LIMIT, "echo", send_and_receive(&mut other, &sent)).await;
    assert_bytes("through the healthy forwarder", &got, &sent);
    let served = started.elapsed();
    assert!(served < Duration::from_secs(2), "served in {served:?}");

    let mut slowest = Duration::ZERO;
    while let Some(took) = clients.join_next().await {
        slowest = slowest.max(took.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic())));
    }
    println!(
        "blackholed clients closed within {slowest:?}; the other forwarder served in {served:?}"
    );
    assert!(
        slowest < SYN_TIMEOUT * CLIENTS,
        "closed one after another: the last after {slowest:?}"
    );
    let s = settled_stats(&handle, |s| {
        s.connections_open == 0 && s.upstream_unavailable == u64::from(CLIENTS)
    })
    .await;
    assert_eq!(s.connect_failures.timeout, u64::from(CLIENTS), "{s:#?}");
    assert_eq!(s.connect_failures.total(), u64::from(CLIENTS), "{s:#?}");
    assert_eq!(s.connections_total, u64::from(CLIENTS), "{s:#?}");
    assert_eq!(
        (s.bytes_to_upstream, s.bytes_to_downstream),
        (0, 0),
        "{s:#?}"
    );
}

// ===== DNS that never answers, or answers garbage =====

/// How a fake DNS server misbehaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BadDns {
    /// Reads every query, answers none.
    Silent,
    /// Answers every query with 1 to 512 random bytes (never with the query's ID).
    Garbage,
    /// Answers with the query itself as a response, but under another ID.
    WrongId,
    /// Answers with the first 5 bytes of a response: cut short.
    Truncated,
    /// Answers over UDP with the truncation bit set (try TCP); over TCP with the query's
    /// ID and random bytes, keeping the connection open.
    TcpGarbage,
    /// Answers over UDP with the truncation bit set; over TCP reads the query and closes
    /// the connection.
    TcpHangUp,
}

impl BadDns {
    const ALL: [BadDns; 6] = [
        BadDns::Silent,
        BadDns::Garbage,
        BadDns::WrongId,
        BadDns::Truncated,
        BadDns::TcpGarbage,
        BadDns::TcpHangUp,
    ];

    /// Whether hickory gives up at once: a UDP reply with the query's ID that cannot be
    /// parsed, or a TCP connection closed on the query. Otherwise it waits for its own
    /// timeouts (5 s, 3 tries), dropping every message it cannot match to its query.
    fn fails_fast(self) -> bool {
        matches!(self, BadDns::Truncated | BadDns::TcpHangUp)
    }

    /// The UDP answer to `query`, if any.
    fn answer(self, query: &[u8], rng: &mut proxy_testkit::data::Rng) -> Option<Vec<u8>> {
        if query.len() < 12 {
            return None;
        }
        let response = |flags: u8| {
            let mut r = query.to_vec();
            r[2] |= flags;
            r
        };
        match self {
            BadDns::Silent => None,
            BadDns::Garbage => {
                let mut r = vec![0; 1 + rng.below(512)];
                rng.fill(&mut r);
                if r.len() >= 2 {
                    r[0] = query[0] ^ 0x5a;
                }
                Some(r)
            }
            BadDns::WrongId => {
                let mut r = response(0x80);
                r[0] ^= 0xff;
                Some(r)
            }
            BadDns::Truncated => Some(response(0x80)[..5].to_vec()),
            BadDns::TcpGarbage | BadDns::TcpHangUp => Some(response(0x82)),
        }
    }
}

/// A fake DNS server on 127.0.0.1. It holds the port for TCP too, so that a real DNS
/// server can take over both later: listening for [`BadDns::TcpGarbage`] and
/// [`BadDns::TcpHangUp`], else bound only (a TCP connect is refused).
struct FakeDns {
    addr: SocketAddr,
    /// Queries received, over UDP and TCP.
    queries: Arc<AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    _tcp_port: Option<socket2::Socket>,
}

impl FakeDns {
    async fn start(kind: BadDns) -> FakeDns {
        for _ in 0..10 {
            let udp = UdpSocket::bind(v4_any_port()).await.unwrap();
            let addr = udp.local_addr().unwrap();
            let tcp =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            // Inherited by accepted connections, which may outlive the server briefly; the
            // real server sets it too, so it can bind past them.
            tcp.set_reuse_address(true).unwrap();
            if tcp.bind(&addr.into()).is_err() {
                continue;
            }
            let queries = Arc::new(AtomicUsize::new(0));
            let mut tasks = vec![tokio::spawn(serve_bad_udp(udp, kind, queries.clone()))];
            let tcp_port = match kind {
                BadDns::TcpGarbage | BadDns::TcpHangUp => {
                    tcp.listen(128).unwrap();
                    tcp.set_nonblocking(true).unwrap();
                    let listener = TcpListener::from_std(tcp.into()).unwrap();
                    tasks.push(tokio::spawn(serve_bad_tcp(listener, kind, queries.clone())));
                    None
                }
                _ => Some(tcp),
            };
            return FakeDns {
                addr,
                queries,
                tasks,
                _tcp_port: tcp_port,
            };
        }
        panic!("no port free for both UDP and TCP in 10 tries");
    }

    /// Stops serving; the port is free (UDP and TCP) once this returns.
    async fn stop(self) {
        for task in self.tasks {
            task.abort();
            let _ = task.await;
        }
    }
}

async fn serve_bad_udp(socket: UdpSocket, kind: BadDns, queries: Arc<AtomicUsize>) {
    let mut rng = proxy_testkit::data::Rng::new(60);
    let mut buf = vec![0; 4096];
    loop {
        let Ok((n, from)) = socket.recv_from(&mut buf).await else {
            // An ICMP error for an earlier answer; the next read goes on.
            tokio::time::sleep(Duration::from_millis(1)).await;
            continue;
        };
        queries.fetch_add(1, SeqCst);
        if let Some(answer) = kind.answer(&buf[..n], &mut rng) {
            let _ = socket.send_to(&answer, from).await;
        }
    }
}

async fn serve_bad_tcp(listener: TcpListener, kind: BadDns, queries: Arc<AtomicUsize>) {
    // Dropped with the task, closing every connection.
    let mut conns = JoinSet::new();
    let mut rng = proxy_testkit::data::Rng::new(61);
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(1)).await;
            continue;
        };
        // Framed (a 2-byte length), the query's ID, then random bytes.
        let mut answer = vec![0; 4 + rng.below(300)];
        rng.fill(&mut answer[4..]);
        let len = u16::try_from(answer.len() - 2).unwrap();
        answer[..2].copy_from_slice(&len.to_be_bytes());
        let queries = queries.clone();
        conns.spawn(async move {
            let mut query = [0; 4];
            if stream.read_exact(&mut query).await.is_err() {
                return;
            }
            queries.fetch_add(1, SeqCst);
            if kind == BadDns::TcpHangUp {
                return;
            }
            answer[2..4].copy_from_slice(&query[2..4]);
            let _ = stream.write_all(&answer).await;
            let _ = tokio::time::timeout(LIMIT, read_all(&mut stream)).await;
        });
        while conns.try_join_next().is_some() {}
    }
}

/// The connect budget (lookup included) of the DNS test.
const DNS_BUDGET: Duration = Duration::from_secs(1);
/// When hickory gives up on a server that never answers: 3 tries of 5 s.
const HICKORY_GIVES_UP: Duration = Duration::from_secs(15);
/// How long after a good DNS server took over a connection must be served.
const RECOVERY_LIMIT: Duration = Duration::from_secs(10);

/// Starts dnsmasq on `127.0.0.1:port`, serving `web.test` as 127.0.0.1. Tries a few times
/// in 2 s: connections of the server that held the port may hold it for a moment.
async fn dnsmasq_on(port: u16) -> Result<proxy_testkit::dns::Dnsmasq, String> {
    let mut errors = Vec::new();
    for _ in 0..10 {
        // Blocking (it polls until dnsmasq answers): off the runtime's worker threads.
        let started = tokio::task::spawn_blocking(move || {
            let config = proxy_testkit::dns::hosts_config("127.0.0.1 web.test\n", &["test"]);
            proxy_testkit::dns::Dnsmasq::start_on(port, &config)
        })
        .await
        .unwrap();
        match started {
            Ok(dns) => {
                if !errors.is_empty() {
                    eprintln!(
                        "dnsmasq on port {port} after {} failures:\n{}",
                        errors.len(),
                        errors.join("\n")
                    );
                }
                return Ok(dns);
            }
            Err(e) => errors.push(e),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(errors.join("\n"))
}

/// One echo exchange through `proxy` on a new connection: what came back, or `None` when
/// the proxy closed the connection without relaying anything.
async fn echo_once(proxy: SocketAddr, sent: &[u8]) -> Option<Vec<u8>> {
    within(LIMIT, "an echo exchange", async {
        let mut client = connect(proxy).await;
        let (mut r, mut w) = client.split();
        let write = async {
            w.write_all(sent).await?;
            w.shutdown().await
        };
        let (wrote, (got, end)) = tokio::join!(write, read_all(&mut r));
        (wrote.is_ok() && end.is_ok() && !got.is_empty()).then_some(got)
    })
    .await
}

/// [`bad_dns`]: six ways a DNS server fails, each closing clients within the connect
/// budget, counted, with no panic; each forwarder serves once dnsmasq takes over. In a
/// process of its own (it counts panics with a process-wide hook).
#[test]
fn bad_dns_closes_clients_within_the_budget_and_the_forwarder_recovers() {
    in_own_process(
        "bad_dns_closes_clients_within_the_budget_and_the_forwarder_recovers",
        "PROXY_FAULTS_BAD_DNS",
        bad_dns,
    );
}

/// Six forwarders to `web.test`, each resolving through a DNS server that misbehaves one
/// way ([`BadDns`]), side by side. For each:
///
/// - two clients in turn are closed cleanly within the connect budget (1 s, which bounds
///   the lookup), and at once when the answer is malformed;
/// - each is counted as `upstream_unavailable`, with no connect attempt; the DNS failures
///   are counted as `resolve_failures`: at once for malformed answers, and for silence or
///   garbage when hickory gives up (after 15 s: the connection's own lookups are cut short
///   by the budget and not counted);
/// - once a real DNS server (dnsmasq) takes over the port, a connection through the same
///   forwarder reaches the upstream byte for byte within 10 s. Usually the first: hickory
///   may join its lookup to the background refresh's, still waiting on the old server,
///   and a connection closed that way (counted, like every other) is followed by another;
/// - the two closed clients (and any such) are all the `upstream_unavailable` there is;
/// - nothing panics (a panic hook counts panics in this process).
async fn bad_dns() {
    let panics = Arc::new(AtomicUsize::new(0));
    let default_hook = std::panic::take_hook();
    std::panic::set_hook({
        let panics = panics.clone();
        Box::new(move |info| {
            panics.fetch_add(1, SeqCst);
            default_hook(info);
        })
    });
    proxy_testkit::dns::dnsmasq_program(); // fails with an install hint before anything else
    let mut scenarios = JoinSet::new();
    for kind in BadDns::ALL {
        scenarios.spawn(bad_dns_scenario(kind));
    }
    join_all(scenarios).await;
    assert_eq!(panics.load(SeqCst), 0, "panics in the process");
}

async fn bad_dns_scenario(kind: BadDns) {
    let fake = FakeDns::start(kind).await;
    let echo = echo_server().await;
    let started = Instant::now();
    let handle = TcpForwarder::builder(
        [v4_any_port()],
        format!("web.test:{}", echo.addr().port()).parse().unwrap(),
    )
    .resolver(HickoryResolver::with_name_servers(&[fake.addr]).unwrap())
    .timeouts(timeouts(|t| {
        t.connect = Duration::from_millis(500);
        t.connect_total = DNS_BUDGET;
    }))
    .build()
    .expect("valid settings")
    .start()
    .expect("start the forwarder");
    let proxy = proxy_addr(&handle);

    let mut closes = Vec::new();
    for i in 0..2 {
        let mut client = connect(proxy).await;
        let connected = Instant::now();
        let end = wait_end(&mut client, DNS_BUDGET + MARGIN).await;
        let took = connected.elapsed();
        assert_eq!(end, End::Eof, "{kind:?}: client {i}: a clean close");
        if !kind.fails_fast() {
            assert!(
                took + EARLY >= DNS_BUDGET,
                "{kind:?}: closed after {took:?}"
            );
        }
        closes.push(took);
    }
    let s = settled_stats(&handle, |s| {
        s.connections_open == 0 && s.upstream_unavailable == 2
    })
    .await;
    assert_eq!(s.connect_failures.total(), 0, "{kind:?}: {s:#?}");
    assert_eq!(s.resolve_refreshes, 0, "{kind:?}: {s:#?}");
    assert_eq!(s.connections_total, 2, "{kind:?}: {s:#?}");
    assert!(fake.queries.load(SeqCst) > 0, "{kind:?}: never asked");
    let (limit, least) = if kind.fails_fast() {
        (MARGIN, 2)
    } else {
        (HICKORY_GIVES_UP + MARGIN, 1)
    };
    eventually(
        &format!("{kind:?}: resolve failures counted"),
        limit.saturating_sub(started.elapsed()),
        || handle.stats().resolve_failures >= least,
    )
    .await;
    let counted = started.elapsed();

    // A real DNS server takes over the port: the same forwarder serves again.
    let port = fake.addr.port();
    fake.stop().await;
    let dns = dnsmasq_on(port)
        .await
        .unwrap_or_else(|e| panic!("{kind:?}: dnsmasq cannot take over port {port}: {e}"));
    let recovered = Instant::now();
    let sent = payload(70, 100_000);
    let mut refused = 0;
    for attempt in 0..100 {
        if let Some(got) = echo_once(proxy, &sent).await {
            assert_bytes(&format!("{kind:?}: after recovery"), &got, &sent);
            break;
        }
        refused += 1;
        assert!(
            recovered.elapsed() < RECOVERY_LIMIT && attempt < 99,
            "{kind:?}: no connection served {RECOVERY_LIMIT:?} after dnsmasq took over"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let served = recovered.elapsed();
    let s = settled_stats(&handle, |s| s.connections_open == 0).await;
    assert!(s.resolve_refreshes >= 1, "{kind:?}: {s:#?}");
    assert_eq!(s.upstream_unavailable, 2 + refused, "{kind:?}: {s:#?}");
    assert_eq!(s.connections_total, 3 + refused, "{kind:?}: {s:#?}");
    println!(
        "{kind:?}: clients closed after {closes:?}; {} resolve failures counted by {counted:?}; \
         served {served:?} after dnsmasq took over ({refused} connections closed before)",
        s.resolve_failures,
    );
    drop(dns);
}

// ===== slowloris =====

/// [`slowloris`]: 240 slow clients are closed by the idle timeout while a normal client
/// is served, and every descriptor is returned. In a process of its own (it counts the
/// process's descriptors).
#[test]
fn slowloris_clients_are_closed_by_the_idle_timeout() {
    in_own_process(
        "slowloris_clients_are_closed_by_the_idle_timeout",
        "PROXY_FAULTS_SLOWLORIS",
        slowloris,
    );
}

/// 200 clients connect and send nothing; 40 more send one byte every 300 ms, five times.
/// With a 1 s idle timeout:
///
/// - each silent client is closed cleanly (a FIN: nothing in flight) within idle + margin
///   of connecting, each dripping one within idle + margin of its last byte, after every
///   byte came back through the echo upstream; no earlier than the idle timeout;
/// - meanwhile a normal client is served byte for byte, three times, each within 2 s;
/// - afterwards no connection is open, the byte counters are exact, and once the
///   forwarder is shut down the process holds exactly the descriptors it held before.
async fn slowloris() {
    const SILENT: usize = 200;
    const DRIPPING: usize = 40;
    const DRIPS: u8 = 5;
    const DRIP_EVERY: Duration = Duration::from_millis(300);
    const IDLE: Duration = Duration::from_secs(1);
    const NORMAL: usize = 3;
    const NORMAL_LEN: usize = 256 << 10;

    let fds_before = open_fds();
    let echo = echo_server().await;
    let handle = tcp_forwarder(
        echo.addr(),
        RelayMode::Auto,
        timeouts(|t| t.idle = Some(IDLE)),
    );
    let proxy = proxy_addr(&handle);

    let mut slow = JoinSet::new();
    for i in 0..SILENT {
        slow.spawn(async move {
            let mut client = connect(proxy).await;
            let connected = Instant::now();
            let end = wait_end(&mut client, IDLE + MARGIN).await;
            let took = connected.elapsed();
            assert_eq!(end, End::Eof, "silent client {i}");
            assert!(
                took + EARLY >= IDLE,
                "silent client {i} closed after {took:?}"
            );
        });
    }
    for i in 0..DRIPPING {
        slow.spawn(async move {
            let mut client = connect(proxy).await;
            let connected = Instant::now();
            let mut last = connected;
            for b in 0..DRIPS {
                tokio::time::sleep(DRIP_EVERY).await;
                client
                    .write_all(&[b])
                    .await
                    .expect("the drips keep it open");
                last = Instant::now();
            }
            let (got, end) = within(IDLE + MARGIN, "idle close", read_all(&mut client)).await;
            let quiet = last.elapsed();
            end.unwrap_or_else(|e| panic!("dripping client {i}: {e}"));
            assert_eq!(got, (0..DRIPS).collect::<Vec<u8>>(), "dripping client {i}");
            assert!(
                quiet + EARLY >= IDLE,
                "dripping client {i} closed {quiet:?} after its last byte"
            );
            assert!(
                connected.elapsed() > IDLE,
                "the drips kept it past one idle period"
            );
        });
    }
    eventually("every slow client is connected", LIMIT, || {
        handle.stats().connections_total == (SILENT + DRIPPING) as u64
    })
    .await;
    let fds_peak = open_fds();

    for n in 0..NORMAL {
        assert!(
            handle.stats().connections_open > SILENT as u64 / 2,
            "the slow clients are still there"
        );
        let started = Instant::now();
        let sent = payload(80 + n as u64, NORMAL_LEN);
        let mut client = connect(proxy).await;
        let got = within(
            LIMIT,
            "a normal client",
            send_and_receive(&mut client, &sent),
        )
        .await;
        let took = started.elapsed();
        assert_bytes(&format!("normal client {n}"), &got, &sent);
        assert!(
            took < Duration::from_secs(2),
            "normal client {n} took {took:?}"
        );
        println!("normal client {n} served in {took:?}");
    }
    join_all(slow).await;

    let s = settled_stats(&handle, |s| s.connections_open == 0).await;
    let total = (SILENT + DRIPPING + NORMAL) as u64;
    let bytes = (DRIPPING * usize::from(DRIPS) + NORMAL * NORMAL_LEN) as u64;
    assert_eq!(s.connections_total, total, "{s:#?}");
    assert_eq!(
        (s.bytes_to_upstream, s.bytes_to_downstream),
        (bytes, bytes),
        "{s:#?}"
    );
    assert_eq!(s.upstream_unavailable, 0, "{s:#?}");
    assert!(handle.shutdown(Duration::from_secs(1)).await);
    drop(echo);
    eventually(
        "every descriptor is returned",
        Duration::from_secs(5),
        || open_fds() == fds_before,
    )
    .await;
    println!(
        "descriptors: {fds_before} before, {fds_peak} with the slow clients, {fds_before} after"
    );
}

// ===== UDP upstreams that are gone or never reply =====

/// The session idle timeout of the UDP test.
const UDP_IDLE: Duration = Duration::from_secs(1);

fn udp_forwarder(target: SocketAddr) -> ForwarderHandle {
    UdpForwarder::builder([v4_any_port()], target.into())
        .session_idle_timeout(UDP_IDLE)
        .build()
        .expect("valid settings")
        .start()
        .expect("start the forwarder")
}

/// UDP sessions whose upstream is gone (its port answers with ICMP port unreachable) or
/// never replies end on the idle timeout, counted back to 0, while the listener serves
/// other clients byte for byte. Two forwarders side by side.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_sessions_to_dead_or_silent_upstreams_end_on_the_idle_timeout() {
    tokio::join!(udp_upstream_gone(), udp_upstream_silent());
}

/// Two clients send three datagrams each to an upstream port nobody holds: the ICMP
/// errors are counted, nothing comes back, and both sessions end within the idle timeout
/// (+ margin) of the last datagram, not before.
async fn udp_upstream_gone() {
    let target = {
        let s = std::net::UdpSocket::bind(v4_any_port()).expect("bind 127.0.0.1:0");
        s.local_addr().unwrap()
    };
    let handle = udp_forwarder(target);
    let proxy = proxy_addr(&handle);
    let mut clients = [
        proxy_testkit::udp::Client::v4(),
        proxy_testkit::udp::Client::v4(),
    ];
    let mut last = Instant::now();
    for seq in 0..3 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        for (c, client) in (0u32..).zip(clients.iter_mut()) {
            client
                .send_to(proxy, &proxy_testkit::data::tagged(c, seq, 100))
                .await;
        }
        last = Instant::now();
    }
    eventually("ICMP port unreachable is counted", MARGIN, || {
        handle.stats().udp.upstream_refused > 0
    })
    .await;
    eventually("the sessions end", UDP_IDLE + MARGIN, || {
        handle.stats().udp.sessions_open == 0
    })
    .await;
    let ended = last.elapsed();
    assert!(
        ended + EARLY >= UDP_IDLE,
        "the sessions ended after {ended:?}"
    );
    for client in &clients {
        assert!(client.try_recv_from(Duration::ZERO).await.is_none());
    }
    let s = handle.stats();
    println!(
        "gone upstream: sessions ended {ended:?} after the last datagram; {:?}",
        s.udp
    );
    assert_eq!(s.udp.sessions_total, 2, "{s:#?}");
    assert_eq!(s.udp.sessions_evicted, 0, "{s:#?}");
    assert_eq!(s.udp.datagrams_to_downstream, 0, "{s:#?}");
    assert_eq!(s.upstream_unavailable, 0, "{s:#?}");
}

/// The client tag whose datagrams the upstream swallows.
const SWALLOWED: u32 = 7;

/// One upstream echoes every datagram except those of one client, which it reads and
/// never answers. That client's session ends within the idle timeout (+ margin) of its
/// last datagram, while another client on the same listener goes on exchanging datagrams
/// every 200 ms, byte for byte, on one session throughout; then that one ends too.
async fn udp_upstream_silent() {
    let up = proxy_testkit::udp::bind(v4_any_port()).expect("bind the upstream");
    let up_addr = up.local_addr().unwrap();
    let swallowed = Arc::new(AtomicUsize::new(0));
    let sources = Arc::new(std::sync::Mutex::new(Vec::new()));
    let server = tokio::spawn({
        let (swallowed, sources) = (swallowed.clone(), sources.clone());
        async move {
            let mut buf = vec![0; 65_536];
            loop {
                let Ok((n, from)) = up.recv_from(&mut buf).await else {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    continue;
                };
                match proxy_testkit::data::tag_of(&buf[..n]) {
                    Some((SWALLOWED, _)) => {
                        swallowed.fetch_add(1, SeqCst);
                    }
                    _ => {
                        sources.lock().unwrap().push(from);
                        let _ = up.send_to(&buf[..n], from).await;
                    }
                }
            }
        }
    });
    let handle = udp_forwarder(up_addr);
    let proxy = proxy_addr(&handle);

    let mut silent = proxy_testkit::udp::Client::v4();
    let mut last = Instant::now();
    for seq in 0..5 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        silent
            .send_to(proxy, &proxy_testkit::data::tagged(SWALLOWED, seq, 200))
            .await;
        last = Instant::now();
    }
    let talker = tokio::spawn(async move {
        let mut client = proxy_testkit::udp::Client::v4();
        for seq in 0..12 {
            let datagram = proxy_testkit::data::tagged(2, seq, 1000);
            within(LIMIT, "an exchange", client.exchange(proxy, &[datagram])).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        client
    });
    eventually("the other client has a session", LIMIT, || {
        handle.stats().udp.sessions_total == 2
    })
    .await;
    eventually("the silent session ends", UDP_IDLE + MARGIN, || {
        handle.stats().udp.sessions_open == 1
    })
    .await;
    let ended = last.elapsed();
    assert!(
        ended + EARLY >= UDP_IDLE,
        "the silent session ended after {ended:?}"
    );
    assert!(silent.try_recv_from(Duration::ZERO).await.is_none());
    let talker = talker.await.expect("the other client");
    eventually("every session ends", UDP_IDLE + MARGIN, || {
        handle.stats().udp.sessions_open == 0
    })
    .await;
    server.abort();
    let s = handle.stats();
    println!(
        "silent upstream: its session ended {ended:?} after the last datagram; {:?}",
        s.udp
    );
    assert_eq!(
        swallowed.load(SeqCst),
        5,
        "the upstream read every datagram"
    );
    let sources = sources.lock().unwrap().clone();
    assert!(
        sources.windows(2).all(|w| w[0] == w[1]),
        "the other client's session was replaced: {sources:?}"
    );
    assert_eq!(s.udp.sessions_total, 2, "{s:#?}");
    if talker.resent == 0 {
        assert_eq!(s.udp.datagrams_to_upstream, 5 + 12, "{s:#?}");
        assert_eq!(s.udp.datagrams_to_downstream, 12, "{s:#?}");
    }
}
