//! 10,000 concurrent connections through the real `proxy tcp` binary, to a real echo server
//! in a process of its own, loopback only.
//!
//! Descriptors decide how many: each relayed connection costs the proxy two (client side
//! and upstream side), so under the machine's hard `RLIMIT_NOFILE` (the proxy raises its
//! soft limit to the hard one itself) it holds at most about `(hard - its own) / 2`. The
//! test process holds the N client ends, and the echo server, holding the N server ends, is
//! this test binary run again ([`echo_server_child`], started with [`ECHO_CHILD_ENV`] set),
//! so no process needs more than one descriptor per connection beyond the proxy. The test
//! aims at N = min(10,000, (hard - proxy's descriptors at start - [`RESERVE`]) / 2) and says
//! why when that is below 10,000.
//!
//! All N connections are opened by a paced loop (at most [`CONNECTING`] at a time), each
//! checked with one byte-exact echo round trip; once all are open, the proxy's `/metrics`
//! must show N open, and every connection does a second round trip, so all N were alive
//! together. Then the echo server closes all of them (a FIN each, passed on through the
//! proxy: every client must read EOF), and the proxy's descriptors (`/proc/PID/fd`) must
//! return to their count before the load within [`SETTLE`]. Every phase has a deadline.
//!
//! The server closes first on purpose: the side that sends the first FIN keeps the
//! connection in TIME_WAIT for 60 s, and 20,000 of those on ephemeral ports of 127.0.0.1
//! (the clients' ports and the proxy's upstream ports, had the clients closed first) would
//! make later tests that bind a random port fail with EADDRINUSE. Closed by the server,
//! the TIME_WAIT entries are on the echo server's and the proxy's listening ports only.
#![cfg(target_os = "linux")]

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use support::http::{self, admin_addr};
use support::proxy::{PROMPT, PROXY, Proxy};

/// Set in the environment of the echo server's process.
const ECHO_CHILD_ENV: &str = "PROXY_SCALE_ECHO_CHILD";

/// The most connections the test opens.
const WANT: usize = 10_000;

/// Descriptors of the proxy's hard limit kept for anything but relayed connections beyond
/// those it had open at start: admin requests, a connection the proxy is still closing.
const RESERVE: u64 = 48;

/// Connects (and first round trips) in flight at once: well under the proxy's listen
/// backlog (1,024) and the echo server's, so no SYN is dropped and retried after 1 s.
const CONNECTING: usize = 128;

/// How long opening all connections may take, and the second round trip over all of them.
const OPEN_ALL: Duration = Duration::from_secs(40);

/// How long the proxy may take to close everything once the clients have closed.
const SETTLE: Duration = Duration::from_secs(20);

/// The echo server's process: this test binary, running only [`echo_server_child`]. Its
/// stdin is a pipe from the test: a `close` line makes it close every connection; when the
/// pipe closes (the test ended, or died), it exits. Killed on drop.
struct EchoProcess {
    child: Child,
    stdin: ChildStdin,
    addr: SocketAddr,
}

impl EchoProcess {
    fn start() -> EchoProcess {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "echo_server_child",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(ECHO_CHILD_ENV, "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the echo server process");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        // The address line comes first; the rest of stdout is drained so the child never
        // blocks on a full pipe.
        let (tx, rx) = std::sync::mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                // libtest may have written `test echo_server_child ... ` before it.
                if let Some((_, addr)) = line.split_once("echo listening on ") {
                    let _ = tx.send(addr.trim().to_owned());
                }
            }
        });
        let addr = rx
            .recv_timeout(PROMPT)
            .expect("the echo server process did not say where it listens");
        EchoProcess {
            child,
            stdin,
            addr: addr.parse().unwrap(),
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Asks the server to close every connection it has: a FIN on each.
    fn close_all(&mut self) {
        self.stdin
            .write_all(b"close\n")
            .and_then(|()| self.stdin.flush())
            .expect("tell the echo server to close its connections");
    }
}

impl Drop for EchoProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Raises this process's soft limit on open files to its hard limit; returns the limit.
fn raise_open_files_limit() -> u64 {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: limit.maximum,
                maximum: limit.maximum,
            },
        )
        .expect("raise the soft open files limit to the hard limit");
    }
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

/// The echo server's process, when [`ECHO_CHILD_ENV`] is set (otherwise it passes at once):
/// a tokio TCP echo server on 127.0.0.1 with a backlog of 4,096, which prints `echo
/// listening on ADDR` and serves until its stdin closes. A `close` line on stdin makes it
/// send a FIN on every connection, then read each until the client's FIN or reset.
#[test]
fn echo_server_child() {
    if std::env::var_os(ECHO_CHILD_ENV).is_none() {
        return;
    }
    raise_open_files_limit();
    let (close, closing) = tokio::sync::watch::channel(false);
    // The test holds the other end of stdin; its end (EOF or error) ends this process.
    thread::spawn(move || {
        for line in std::io::stdin().lines() {
            match line {
                Ok(line) if line.trim() == "close" => {
                    let _ = close.send(true);
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        std::process::exit(0);
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = socket.listen(4096).unwrap();
        println!("echo listening on {}", listener.local_addr().unwrap());
        std::io::stdout().flush().unwrap();
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                // EMFILE and friends: the test fails on its own; do not spin.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let mut closing = closing.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let told = loop {
                    tokio::select! {
                        read = conn.read(&mut buf) => match read {
                            Ok(0) | Err(_) => break false,
                            Ok(n) => {
                                if conn.write_all(&buf[..n]).await.is_err() {
                                    break false;
                                }
                            }
                        },
                        _ = closing.changed() => break true,
                    }
                };
                let _ = conn.shutdown().await;
                // Told to close: wait for the client's end, so the FIN was this side's first.
                while told && matches!(conn.read(&mut buf).await, Ok(n) if n > 0) {}
            });
        }
    });
}

/// The open descriptors of process `pid`.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("list the proxy's descriptors")
        .count()
}

/// `VmRSS` of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("a VmRSS line")
}

/// The hard limit on open files of process `pid`, from `/proc/PID/limits` (`None`:
/// unlimited).
fn hard_nofile(pid: u32) -> Option<u64> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("a Max open files line");
    line.split_whitespace().nth(4)?.parse().ok()
}

/// The local port range, whose size bounds the connections one client address can open.
fn local_ports() -> u64 {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap();
    let mut ends = range.split_whitespace().map(|p| p.parse::<u64>().unwrap());
    let (low, high) = (ends.next().unwrap(), ends.next().unwrap());
    high - low + 1
}

/// The sum of `proxy_connections_open` over every forward, from `/metrics`.
fn connections_open(admin: SocketAddr) -> u64 {
    let r = http::get(admin, "/metrics");
    assert_eq!(r.status, 200, "{r:?}");
    r.body
        .lines()
        .filter(|l| l.starts_with("proxy_connections_open{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

/// Polls `check` every 50 ms until it holds; `false` when it does not within `limit`.
fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// The message of connection `i` in round `round`: distinct for every connection.
fn message(i: usize, round: u8) -> Vec<u8> {
    format!(
        "round {round} connection {i:05} {:016x}\n",
        i.wrapping_mul(0x9E37_79B9)
    )
    .into_bytes()
}

/// One byte-exact echo round trip on `conn`.
async fn round_trip(conn: &mut TcpStream, i: usize, round: u8) -> Result<(), String> {
    let msg = message(i, round);
    conn.write_all(&msg)
        .await
        .map_err(|e| format!("connection {i}: write: {e}"))?;
    let mut back = vec![0; msg.len()];
    conn.read_exact(&mut back)
        .await
        .map_err(|e| format!("connection {i}: read: {e}"))?;
    if back != msg {
        return Err(format!(
            "connection {i}: sent {:?}, got back {:?}",
            String::from_utf8_lossy(&msg),
            String::from_utf8_lossy(&back)
        ));
    }
    Ok(())
}

/// Opens `n` connections to `addr`, at most [`CONNECTING`] at a time, each checked with a
/// round trip; all of them, or the first error, within [`OPEN_ALL`].
async fn open_all(addr: SocketAddr, n: usize) -> Result<Vec<TcpStream>, String> {
    let permits = Arc::new(Semaphore::new(CONNECTING));
    let mut tasks = JoinSet::new();
    let opening = async {
        for i in 0..n {
            let permit = permits.clone().acquire_owned().await.unwrap();
            tasks.spawn(async move {
                let open = async {
                    let mut conn = TcpStream::connect(addr)
                        .await
                        .map_err(|e| format!("connection {i}: connect: {e}"))?;
                    round_trip(&mut conn, i, 1).await?;
                    Ok::<_, String>(conn)
                };
                let result = tokio::time::timeout(PROMPT, open).await;
                drop(permit);
                (
                    i,
                    result.unwrap_or_else(|_| Err(format!("connection {i}: timed out"))),
                )
            });
        }
        let mut conns: Vec<Option<TcpStream>> = (0..n).map(|_| None).collect();
        while let Some(done) = tasks.join_next().await {
            let (i, conn) = done.expect("a connection task panicked");
            conns[i] = Some(conn?);
        }
        Ok(conns.into_iter().map(Option::unwrap).collect())
    };
    tokio::time::timeout(OPEN_ALL, opening)
        .await
        .unwrap_or_else(|_| Err(format!("{n} connections not open within {OPEN_ALL:?}")))
}

/// Waits until every connection reads EOF (the server's FIN, passed on by the proxy), then
/// closes it; all within [`SETTLE`]. Returns what each connection that got data or an
/// error instead of EOF got.
async fn expect_eof_all(conns: Vec<TcpStream>) -> Result<Vec<String>, String> {
    let n = conns.len();
    let mut tasks = JoinSet::new();
    for (i, mut conn) in conns.into_iter().enumerate() {
        tasks.spawn(async move {
            let mut buf = [0u8; 64];
            match conn.read(&mut buf).await {
                Ok(0) => None,
                Ok(got) => Some(format!("connection {i}: {got} bytes instead of EOF")),
                Err(e) => Some(format!("connection {i}: {e} instead of EOF")),
            }
        });
    }
    let all = async {
        let mut bad = Vec::new();
        while let Some(done) = tasks.join_next().await {
            bad.extend(done.expect("an EOF task panicked"));
        }
        bad
    };
    tokio::time::timeout(SETTLE, all)
        .await
        .map_err(|_| format!("not every one of {n} connections saw EOF within {SETTLE:?}"))
}

/// A second round trip on every connection, [`CONNECTING`] at a time, within [`OPEN_ALL`].
async fn round_trip_all(conns: Vec<TcpStream>) -> Result<Vec<TcpStream>, String> {
    let n = conns.len();
    let permits = Arc::new(Semaphore::new(CONNECTING));
    let mut tasks = JoinSet::new();
    let all = async {
        for (i, mut conn) in conns.into_iter().enumerate() {
            let permit = permits.clone().acquire_owned().await.unwrap();
            tasks.spawn(async move {
                let result = tokio::time::timeout(PROMPT, round_trip(&mut conn, i, 2)).await;
                drop(permit);
                let result = result.unwrap_or_else(|_| Err(format!("connection {i}: timed out")));
                (i, result.map(|()| conn))
            });
        }
        let mut back: Vec<Option<TcpStream>> = (0..n).map(|_| None).collect();
        while let Some(done) = tasks.join_next().await {
            let (i, conn) = done.expect("a round trip task panicked");
            back[i] = Some(conn?);
        }
        Ok(back.into_iter().map(Option::unwrap).collect())
    };
    tokio::time::timeout(OPEN_ALL, all)
        .await
        .unwrap_or_else(|_| Err(format!("round trips on {n} connections not done in time")))
}

#[test]
fn ten_thousand_concurrent_connections() {
    let started = Instant::now();
    let own_limit = raise_open_files_limit();
    let mut echo = EchoProcess::start();
    let target = echo.addr.to_string();

    // Access log lines off (10,000 of them would only fill memory); the startup lines stay.
    let mut cmd = Command::new(PROXY);
    cmd.args([
        "tcp",
        "0",
        &target,
        "--listen",
        "127.0.0.1",
        "--admin",
        "127.0.0.1:0",
    ])
    .env("RUST_LOG", "info,proxy_core::access=warn");
    let proxy = Proxy::spawn(cmd);
    let addr = proxy.listen_addr(&target);
    let admin = admin_addr(&proxy);
    let pid = proxy.pid();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    // One connection first, so whatever the proxy sets up on its first connection is
    // counted in the starting descriptors.
    let warm = rt.block_on(open_all(addr, 1)).unwrap();
    rt.block_on(async move { drop(warm) });
    assert!(
        eventually(PROMPT, || connections_open(admin) == 0),
        "the first connection did not close"
    );
    thread::sleep(Duration::from_millis(200));
    let fds_before = open_fds(pid);
    let rss_before = rss_kib(pid);

    // How many: the proxy's hard limit less what it holds already and a reserve, halved;
    // and what this process and the echo server's can hold, and the local ports.
    let proxy_limit = hard_nofile(pid).unwrap_or(u64::MAX);
    let echo_limit = hard_nofile(echo.pid()).unwrap_or(u64::MAX);
    let by_proxy = proxy_limit.saturating_sub(fds_before as u64 + RESERVE) / 2;
    let by_clients = own_limit.min(echo_limit).saturating_sub(RESERVE + 64);
    let by_ports = local_ports().saturating_sub(1_000);
    let n = (WANT as u64).min(by_proxy).min(by_clients).min(by_ports) as usize;
    if n < WANT {
        let why = if n as u64 == by_proxy {
            format!(
                "the proxy's hard RLIMIT_NOFILE is {proxy_limit}: it holds {fds_before} \
                 descriptors at start, {RESERVE} are kept in reserve, and each connection \
                 takes 2: ({proxy_limit} - {fds_before} - {RESERVE}) / 2 = {by_proxy}"
            )
        } else if n as u64 == by_clients {
            format!(
                "the hard RLIMIT_NOFILE of the test process ({own_limit}) or the echo \
                 server's ({echo_limit}) allows {by_clients}"
            )
        } else {
            format!("the local port range allows {by_ports}")
        };
        eprintln!("scale: {n} connections, not {WANT}: {why}");
    } else {
        eprintln!("scale: {n} connections");
    }
    assert!(n >= 1_000, "too few descriptors for a meaningful test: {n}");

    // All N open, each with one round trip.
    let opening = Instant::now();
    let conns = rt
        .block_on(open_all(addr, n))
        .unwrap_or_else(|e| panic!("opening {n} connections: {e}"));
    let opened_in = opening.elapsed();

    // All N open at once: the proxy says so, and each still echoes.
    let mut open = 0;
    assert!(
        eventually(PROMPT, || {
            open = connections_open(admin);
            open == n as u64
        }),
        "the proxy's /metrics shows {open} connections open, not {n}"
    );
    let fds_peak = open_fds(pid);
    let rss_peak = rss_kib(pid);
    let second = Instant::now();
    let conns = rt
        .block_on(round_trip_all(conns))
        .unwrap_or_else(|e| panic!("with {n} connections open: {e}"));
    let second_in = second.elapsed();
    assert_eq!(connections_open(admin), n as u64);
    assert!(
        fds_peak >= fds_before + 2 * n,
        "{fds_peak} descriptors with {n} connections open, {fds_before} before"
    );

    // The server closes all; each client sees the FIN through the proxy and closes too; the
    // proxy closes both ends of each and is back where it started.
    let closing = Instant::now();
    echo.close_all();
    let bad = rt
        .block_on(expect_eof_all(conns))
        .unwrap_or_else(|e| panic!("closing {n} connections: {e}"));
    assert!(
        bad.is_empty(),
        "{} connections did not end with EOF, e.g. {}",
        bad.len(),
        bad[0]
    );
    let mut fds_after = fds_peak;
    let settled = eventually(SETTLE, || {
        fds_after = open_fds(pid);
        fds_after <= fds_before
    });
    let closed_in = closing.elapsed();
    let open_after = connections_open(admin);
    let rss_after = rss_kib(pid);
    eprintln!(
        "scale: {n} connections opened in {opened_in:.1?}, round trips on all in \
         {second_in:.1?}, closed in {closed_in:.1?}; proxy descriptors {fds_before} before, \
         {fds_peak} with all open, {fds_after} after; proxy RSS {rss_before} KiB before, \
         {rss_peak} KiB with all open ({:.2} KiB per connection), {rss_after} KiB after; \
         {:.1?} in all",
        (rss_peak.saturating_sub(rss_before)) as f64 / n as f64,
        started.elapsed()
    );
    assert!(
        settled,
        "the proxy holds {fds_after} descriptors {SETTLE:?} after the clients closed, \
         {fds_before} before the load"
    );
    assert_eq!(
        open_after, 0,
        "connections still open after the clients closed"
    );
    drop(proxy);
    drop(echo);
}
