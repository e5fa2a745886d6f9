//! Helpers shared by the TCP integration tests: upstream servers, seeded payloads, a
//! forwarder on a kernel-chosen port, and bounded waits.
//!
//! Nothing here sleeps to synchronise: waits either await an event or poll a condition
//! with a deadline ([`eventually`]).

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use proxy_core::{ForwarderHandle, RelayMode, StatsSnapshot, Target, TcpForwarder, Timeouts};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

/// Both relay modes, for tests that run once per mode.
pub(crate) const MODES: [RelayMode; 2] = [RelayMode::Auto, RelayMode::Copy];

/// `127.0.0.1:0`: loopback, a port chosen by the kernel.
pub(crate) fn v4_any_port() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, 0))
}

/// `[::1]:0`: loopback, a port chosen by the kernel.
pub(crate) fn v6_any_port() -> SocketAddr {
    SocketAddr::from((Ipv6Addr::LOCALHOST, 0))
}

/// A listener on `127.0.0.1` and a kernel-chosen port.
pub(crate) async fn listener() -> TcpListener {
    TcpListener::bind(v4_any_port())
        .await
        .expect("bind 127.0.0.1:0")
}

/// A listener on `[::1]` and a kernel-chosen port, or `None` when the host has no IPv6.
pub(crate) async fn listener_v6() -> Option<TcpListener> {
    TcpListener::bind(v6_any_port()).await.ok()
}

/// A loopback port on which nothing listens: bound by the kernel, then released. Connects
/// to it are refused (until someone else binds it, which tests that need the port again do
/// right away).
pub(crate) fn refusing_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind(v4_any_port()).expect("bind 127.0.0.1:0");
    l.local_addr().expect("local_addr")
}

// ===== forwarders =====

/// Timeouts with the defaults, changed by `f`.
pub(crate) fn timeouts(f: impl FnOnce(&mut Timeouts)) -> Timeouts {
    let mut t = Timeouts::default();
    f(&mut t);
    t
}

/// Starts a forwarder from `127.0.0.1:0` to `target` on the current runtime.
pub(crate) fn forwarder(
    target: impl Into<Target>,
    mode: RelayMode,
    timeouts: Timeouts,
) -> ForwarderHandle {
    TcpForwarder::builder([v4_any_port()], target.into())
        .relay(mode)
        .timeouts(timeouts)
        .build()
        .expect("valid settings")
        .start()
        .expect("start the forwarder")
}

/// The forwarder's first bound address.
pub(crate) fn proxy_addr(handle: &ForwarderHandle) -> SocketAddr {
    handle.local_addrs()[0]
}

/// Waits until the forwarder's stats satisfy `ready` (counters settle a moment after the
/// peers see the bytes), then returns them. Panics with the last snapshot after 10 s.
pub(crate) async fn settled_stats(
    handle: &ForwarderHandle,
    ready: impl Fn(&StatsSnapshot) -> bool,
) -> StatsSnapshot {
    settled_stats_within(handle, Duration::from_secs(10), ready).await
}

/// [`settled_stats`] with its own bound: panics with the last snapshot after `limit`.
pub(crate) async fn settled_stats_within(
    handle: &ForwarderHandle,
    limit: Duration,
    ready: impl Fn(&StatsSnapshot) -> bool,
) -> StatsSnapshot {
    let deadline = Instant::now() + limit;
    for _ in 0..1_000_000 {
        let s = handle.stats();
        if ready(&s) {
            return s;
        }
        if Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    panic!(
        "stats did not settle within {limit:?}: {:#?}",
        handle.stats()
    );
}

// ===== waiting =====

/// Runs `fut`, panicking with `what` if it takes longer than `limit`.
pub(crate) async fn within<T>(limit: Duration, what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, fut).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: not done within {limit:?}"),
    }
}

/// Polls `cond` until it holds, for at most `limit` (and at most 10,000 polls).
pub(crate) async fn eventually(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    for _ in 0..10_000 {
        if cond() {
            return;
        }
        if Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert!(cond(), "{what}: not true within {limit:?}");
}

/// Awaits every task of `set`, re-raising the first panic with its own message.
pub(crate) async fn join_all(mut set: JoinSet<()>) {
    while let Some(r) = set.join_next().await {
        if let Err(e) = r {
            if e.is_panic() {
                std::panic::resume_unwind(e.into_panic());
            }
            panic!("task failed: {e}");
        }
    }
}

// ===== payloads =====

/// xorshift64*: a tiny deterministic generator, so every run sends the same bytes.
#[derive(Clone, Debug)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        // The state must not be zero; mix the seed so nearby seeds give unrelated streams.
        Rng((seed ^ 0x9E37_79B9_7F4A_7C15).max(1))
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n`; `n` must not be zero.
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub(crate) fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let word = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
    }
}

/// `len` pseudo-random bytes from `seed`.
pub(crate) fn payload(seed: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0; len];
    Rng::new(seed).fill(&mut v);
    v
}

/// Asserts two byte strings are equal, reporting lengths and the first differing offset
/// instead of dumping megabytes.
#[track_caller]
pub(crate) fn assert_bytes(what: &str, got: &[u8], want: &[u8]) {
    if got == want {
        return;
    }
    let first = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    panic!(
        "{what}: got {} bytes, want {}; first difference at offset {first}",
        got.len(),
        want.len()
    );
}

// ===== client side =====

/// Connects to `addr`.
pub(crate) async fn connect(addr: SocketAddr) -> TcpStream {
    TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"))
}

/// Reads until EOF or an error; returns what was read and how it ended.
pub(crate) async fn read_all(r: &mut (impl AsyncRead + Unpin)) -> (Vec<u8>, io::Result<()>) {
    let mut data = Vec::new();
    let mut buf = vec![0; 64 << 10];
    loop {
        match r.read(&mut buf).await {
            Ok(0) => return (data, Ok(())),
            Ok(n) => data.extend_from_slice(&buf[..n]),
            Err(e) => return (data, Err(e)),
        }
    }
}

/// Writes `data` then a FIN while reading everything the peer sends until its FIN;
/// returns what was read. Both halves run at once, so any size works against an echo.
pub(crate) async fn send_and_receive(stream: &mut TcpStream, data: &[u8]) -> Vec<u8> {
    let (mut r, mut w) = stream.split();
    let write = async {
        w.write_all(data).await?;
        w.shutdown().await
    };
    let (wrote, (got, end)) = tokio::join!(write, read_all(&mut r));
    wrote.expect("write to the proxy");
    end.expect("read from the proxy");
    got
}

/// Sends `data` and reads back as many bytes, checking they are the same (an echo).
pub(crate) async fn round_trip(stream: &mut TcpStream, data: &[u8]) {
    let (mut r, mut w) = stream.split();
    let mut got = vec![0; data.len()];
    let (wrote, read) = tokio::join!(w.write_all(data), r.read_exact(&mut got));
    wrote.expect("write to the proxy");
    read.expect("read the echo");
    assert_bytes("echo", &got, data);
}

/// How a read that should end the connection ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum End {
    /// A FIN: `read` returned 0.
    Eof,
    /// A RST.
    Reset,
}

/// Reads until the connection ends, discarding data, and says how it ended; panics on
/// another error or after `limit`.
pub(crate) async fn wait_end(stream: &mut TcpStream, limit: Duration) -> End {
    within(limit, "waiting for the connection to end", async {
        let mut buf = vec![0; 64 << 10];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) => return End::Eof,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return End::Reset,
                Err(e) => panic!("read: unexpected error {e}"),
            }
        }
    })
    .await
}

/// Makes the coming drop of `stream` send a RST.
pub(crate) fn set_reset_on_close(stream: &TcpStream) {
    socket2::SockRef::from(stream)
        .set_linger(Some(Duration::ZERO))
        .expect("SO_LINGER 0");
}

// ===== upstream servers =====

/// A test server: accepts on a loopback listener and runs a handler per connection. The
/// server and every connection stop when it is dropped.
#[derive(Debug)]
pub(crate) struct Server {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    active: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Server {
    /// Serves `listener`, running `handler` on each accepted connection.
    pub(crate) fn spawn<F, Fut>(listener: TcpListener, handler: F) -> Server
    where
        F: Fn(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let addr = listener.local_addr().expect("local_addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let active = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn({
            let accepted = accepted.clone();
            let active = active.clone();
            async move {
                // Dropped (aborting every connection) when the server task is aborted.
                let mut conns = JoinSet::new();
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        // A connection that failed before it was accepted.
                        tokio::task::yield_now().await;
                        continue;
                    };
                    accepted.fetch_add(1, SeqCst);
                    active.fetch_add(1, SeqCst);
                    let guard = ActiveGuard(active.clone());
                    let conn = handler(stream);
                    conns.spawn(async move {
                        let _guard = guard;
                        conn.await;
                    });
                    while conns.try_join_next().is_some() {}
                }
            }
        });
        Server {
            addr,
            accepted,
            active,
            task,
        }
    }

    /// The address it listens on.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted so far.
    pub(crate) fn accepted(&self) -> usize {
        self.accepted.load(SeqCst)
    }

    /// Connections whose handler has not finished (and whose socket is still open).
    pub(crate) fn active(&self) -> usize {
        self.active.load(SeqCst)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct ActiveGuard(Arc<AtomicUsize>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, SeqCst);
    }
}

/// An echo server on `listener`: writes back everything it reads, then a FIN after the
/// client's FIN.
pub(crate) fn echo(listener: TcpListener) -> Server {
    Server::spawn(listener, echo_connection)
}

/// An echo server on `127.0.0.1` and a kernel-chosen port.
pub(crate) async fn echo_server() -> Server {
    echo(listener().await)
}

async fn echo_connection(mut stream: TcpStream) {
    let mut buf = vec![0; 64 << 10];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) => {
                let _ = stream.shutdown().await;
                return;
            }
            Ok(n) => {
                if stream.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
            Err(_) => return,
        }
    }
}

/// What a recording server read on one connection.
#[derive(Debug)]
pub(crate) struct Recorded {
    /// Every byte, in order.
    pub(crate) data: Vec<u8>,
    /// How reading ended: `Ok` at a FIN, else the error's kind.
    pub(crate) end: Result<(), io::ErrorKind>,
}

/// A server that reads each connection to its end without writing, then reports what it
/// read on the returned channel and closes.
pub(crate) fn recorder(listener: TcpListener) -> (Server, mpsc::UnboundedReceiver<Recorded>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let server = Server::spawn(listener, move |mut stream| {
        let tx = tx.clone();
        async move {
            let (data, end) = read_all(&mut stream).await;
            let _ = tx.send(Recorded {
                data,
                end: end.map_err(|e| e.kind()),
            });
        }
    });
    (server, rx)
}

/// The number of open file descriptors of this process.
#[cfg(target_os = "linux")]
pub(crate) fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("read /proc/self/fd")
        .count()
}

/// Runs one test of this binary in a child process with `env` set; returns whether it
/// passed and its output. Kills it after `limit`.
#[cfg(target_os = "linux")]
pub(crate) fn run_self(test: &str, env: &str, limit: Duration) -> (bool, String, String) {
    use std::io::Read;
    use std::process::{Command, Stdio};

    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--test-threads=1", "--nocapture"])
        .env(env, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the test binary");
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let deadline = std::time::Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (out, err) = (out.join().unwrap(), err.join().unwrap());
    match status {
        Some(status) => (status.success(), out, err),
        None => (false, out, format!("killed after {limit:?}\n{err}")),
    }
}

/// Runs the test `test` of this binary in a child process of its own, where `body` runs on
/// a fresh runtime; for counts (such as open descriptors) that other tests running at the
/// same time would disturb. `env` marks the child. Fails when the child fails or takes
/// more than 60 s.
#[cfg(target_os = "linux")]
pub(crate) fn in_own_process<F: Future<Output = ()>>(
    test: &str,
    env: &str,
    body: impl FnOnce() -> F,
) {
    if std::env::var_os(env).is_some() {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
            .block_on(body());
        return;
    }
    let (ok, stdout, stderr) = run_self(test, env, Duration::from_secs(60));
    assert!(
        ok && stdout.contains("1 passed"),
        "child failed:\n{stdout}\n{stderr}"
    );
}
