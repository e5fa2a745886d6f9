//! End-to-end tests of the `proxy` binary: real processes, real sockets, loopback only.
//!
//! Rules: ports come from the kernel (the proxy is started with PORT 0 or a port the test
//! just bound, and its "Forwarding from" log line says where it listens); nothing waits by
//! sleeping, only on log lines, connections and exits, each with a deadline; every child is
//! killed when its guard drops, so a failing test leaves no process behind.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const PROXY: &str = env!("CARGO_BIN_EXE_proxy");

/// How long anything that should happen promptly may take before the test fails.
const PROMPT: Duration = Duration::from_secs(10);

// ===== the proxy process =====

/// Everything a child wrote to one stream, line by line, and whether the stream ended.
#[derive(Default)]
struct Output {
    lines: Vec<String>,
    closed: bool,
}

type SharedOutput = Arc<(Mutex<Output>, Condvar)>;

/// A running `proxy`; killed on drop, printing its stderr when the test is failing.
struct Proxy {
    child: Child,
    stderr: SharedOutput,
    stdout: SharedOutput,
    status: Option<ExitStatus>,
}

impl Proxy {
    /// Starts `proxy ARGS` with `RUST_LOG` unset, so `--log-level` decides.
    fn start(args: &[&str]) -> Proxy {
        let mut cmd = Command::new(PROXY);
        cmd.args(args).env_remove("RUST_LOG");
        Proxy::spawn(cmd)
    }

    fn spawn(mut cmd: Command) -> Proxy {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn proxy");
        let stderr = collect(child.stderr.take().unwrap());
        let stdout = collect(child.stdout.take().unwrap());
        Proxy {
            child,
            stderr,
            stdout,
            status: None,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// All of stderr so far.
    fn stderr(&self) -> String {
        self.stderr.0.lock().unwrap().lines.join("\n")
    }

    /// All of stdout so far.
    fn stdout(&self) -> String {
        self.stdout.0.lock().unwrap().lines.join("\n")
    }

    /// Waits up to `timeout` until `check` finds what it wants in the stderr lines so far;
    /// `None` when it did not in time or stderr closed first.
    fn wait_stderr<T>(
        &self,
        timeout: Duration,
        check: impl Fn(&[String]) -> Option<T>,
    ) -> Option<T> {
        let deadline = Instant::now() + timeout;
        let (lock, cond) = &*self.stderr;
        let mut out = lock.lock().unwrap();
        loop {
            if let Some(found) = check(&out.lines) {
                return Some(found);
            }
            let now = Instant::now();
            if out.closed || now >= deadline {
                return None;
            }
            out = cond.wait_timeout(out, deadline - now).unwrap().0;
        }
    }

    /// The first stderr line matching `pred`, waiting up to `timeout`.
    fn find_line(&self, timeout: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
        self.wait_stderr(timeout, |lines| lines.iter().find(|l| pred(l)).cloned())
    }

    /// Like [`find_line`](Proxy::find_line), failing the test when the line does not come
    /// within [`PROMPT`].
    fn expect_line(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        self.find_line(PROMPT, pred)
            .unwrap_or_else(|| panic!("no stderr line {what} within {PROMPT:?}"))
    }

    /// The listen addresses of the first `n` "Forwarding from ADDR -> TARGET" lines;
    /// `None` when they do not come (the proxy exited, or took too long).
    fn try_listen_addrs(&self, n: usize, target: &str) -> Option<Vec<SocketAddr>> {
        let suffix = format!(" -> {target}");
        self.wait_stderr(PROMPT, |lines| {
            let addrs: Vec<SocketAddr> = lines
                .iter()
                .filter_map(|l| {
                    let at = l.find("Forwarding from ")? + "Forwarding from ".len();
                    l[at..].strip_suffix(&suffix)?.parse().ok()
                })
                .collect();
            (addrs.len() >= n).then_some(addrs)
        })
    }

    /// The one listen address, from the "Forwarding from ADDR -> TARGET" line.
    fn listen_addr(&self, target: &str) -> SocketAddr {
        self.try_listen_addrs(1, target)
            .unwrap_or_else(|| panic!("no 'Forwarding from ... -> {target}' line"))[0]
    }

    /// Waits for the process to exit, failing the test after `timeout`.
    fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        if let Some(status) = self.status {
            return status;
        }
        let deadline = Instant::now() + timeout;
        // Bounded poll: at most timeout / 10 ms rounds.
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                self.status = Some(status);
                // Let the reader threads see the end of the pipes.
                wait_closed(&self.stderr, PROMPT);
                wait_closed(&self.stdout, PROMPT);
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "proxy did not exit within {timeout:?}"
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Whether the process is still running.
    fn running(&mut self) -> bool {
        self.status.is_none() && self.child.try_wait().expect("try_wait").is_none()
    }

    /// Sends a signal (`TERM`, `INT`) with kill(1).
    fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{sig} failed");
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if thread::panicking() {
            eprintln!("---- proxy stderr ----\n{}\n----", self.stderr());
        }
    }
}

/// Reads `stream` line by line into a shared buffer on a thread of its own; the thread
/// ends when the stream does.
fn collect(stream: impl Read + Send + 'static) -> SharedOutput {
    let shared: SharedOutput = Arc::default();
    let out = shared.clone();
    thread::spawn(move || {
        let mut reader = io::BufReader::new(stream);
        loop {
            let mut line = String::new();
            let done = !matches!(io::BufRead::read_line(&mut reader, &mut line), Ok(n) if n > 0);
            let (lock, cond) = &*out;
            let mut o = lock.lock().unwrap();
            if done {
                o.closed = true;
            } else {
                o.lines.push(line.trim_end_matches('\n').to_owned());
            }
            cond.notify_all();
            if done {
                return;
            }
        }
    });
    shared
}

fn wait_closed(out: &SharedOutput, timeout: Duration) {
    let (lock, cond) = &**out;
    let guard = lock.lock().unwrap();
    let (guard, _) = cond
        .wait_timeout_while(guard, timeout, |o| !o.closed)
        .unwrap();
    assert!(guard.closed, "output did not close within {timeout:?}");
}

/// Runs `proxy ARGS` to completion (at most [`PROMPT`]): its exit code, stdout, stderr.
fn run(args: &[&str]) -> (i32, String, String) {
    let mut p = Proxy::start(args);
    let status = p.wait_exit(PROMPT);
    (status.code().expect("exit code"), p.stdout(), p.stderr())
}

// ===== the upstream =====

/// A threaded echo server: every connection gets back what it sends, and a FIN for a FIN.
/// Stops accepting on drop.
struct Echo {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl Echo {
    fn start(ip: &str) -> Echo {
        let listener = TcpListener::bind((ip, 0)).expect("bind echo server");
        Echo::serve(listener)
    }

    fn serve(listener: TcpListener) -> Echo {
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        thread::spawn(move || {
            // Ends when `Echo` drops: it sets `stop` and connects once to wake `accept`.
            for conn in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                thread::spawn(move || echo(conn));
            }
        });
        Echo { addr, stop }
    }

    fn port(&self) -> u16 {
        self.addr.port()
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
    }
}

/// Echoes until EOF or an error; then sends a FIN. A connection left open by a killed
/// proxy ends when the kernel closes the proxy's socket.
fn echo(mut conn: TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if conn.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = conn.shutdown(Shutdown::Write);
}

// ===== clients =====

/// A client connection with deadlines on every operation.
fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, PROMPT).expect("connect to proxy");
    s.set_read_timeout(Some(PROMPT)).unwrap();
    s.set_write_timeout(Some(PROMPT)).unwrap();
    s
}

/// Deterministic, non-repeating-looking bytes, different for each `seed`.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Sends `data`, then a FIN, while reading everything back until EOF; returns what came
/// back. Writing runs on a second thread so neither side's buffers can deadlock.
fn echo_through(stream: TcpStream, data: &[u8]) -> Vec<u8> {
    try_echo_through(stream, data).expect("echo through the proxy")
}

/// [`echo_through`] that returns I/O errors instead of failing the test.
fn try_echo_through(stream: TcpStream, data: &[u8]) -> io::Result<Vec<u8>> {
    let mut writer = stream.try_clone()?;
    let data = data.to_vec();
    let sending = thread::spawn(move || -> io::Result<()> {
        writer.write_all(&data)?;
        writer.shutdown(Shutdown::Write)
    });
    let mut back = Vec::new();
    let read = (&stream).read_to_end(&mut back);
    // A reset stops the writer too; report the reader's error first.
    read?;
    sending.join().unwrap()?;
    Ok(back)
}

/// One request and its echo on an open connection.
fn ping(stream: &mut TcpStream, msg: &[u8]) {
    stream.write_all(msg).expect("write");
    let mut back = vec![0; msg.len()];
    stream.read_exact(&mut back).expect("read echo");
    assert_eq!(back, msg);
}

/// Reads until EOF or an error (a reset), failing on data or when nothing happens within
/// `timeout`; returns when the connection ended.
fn expect_closed(stream: &mut TcpStream, timeout: Duration) -> Instant {
    stream.set_read_timeout(Some(timeout)).unwrap();
    let mut buf = [0u8; 64];
    match stream.read(&mut buf) {
        Ok(0) => {}
        Ok(n) => panic!("expected the connection to close, got {n} bytes"),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            panic!("connection still open after {timeout:?}")
        }
        Err(_) => {} // reset
    }
    Instant::now()
}

// ===== tests =====

#[test]
fn relays_bytes_exactly_both_ways() {
    let echo = Echo::start("127.0.0.1");
    let target = echo.addr.to_string();
    let proxy = Proxy::start(&[
        "tcp",
        "0",
        &target,
        "--listen",
        "127.0.0.1",
        "--log-level",
        "debug",
    ]);
    let addr = proxy.listen_addr(&target);
    assert!(addr.ip().is_loopback() && addr.port() != 0, "{addr}");
    // The message is exactly kubectl's, after tracing's timestamp, level and target.
    let want = format!("Forwarding from {addr} -> {target}");
    let line = proxy.expect_line("Forwarding from", |l| l.ends_with(&want));
    assert!(line.contains(" INFO "), "{line}");
    assert!(!line.contains('\x1b'), "ANSI colours on a pipe: {line:?}");

    // Several connections at once, large enough to need many reads, each checked byte
    // for byte after a FIN in each direction.
    let clients: Vec<_> = (0..4u64)
        .map(|i| {
            thread::spawn(move || {
                let data = pattern(512 * 1024 + i as usize * 7919, i);
                let back = echo_through(connect(addr), &data);
                assert!(back == data, "connection {i}: {} bytes back", back.len());
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    // And some small ones in a row, one byte and empty included.
    for (i, len) in [1usize, 0, 3, 1500].into_iter().enumerate() {
        let data = pattern(len, 100 + i as u64);
        assert_eq!(echo_through(connect(addr), &data), data);
    }
    // Connection lines are logged at debug.
    proxy.expect_line("'connected' at DEBUG", |l| {
        l.contains(" DEBUG ") && l.contains("connected") && l.contains("client=127.0.0.1:")
    });
    proxy.expect_line("'connection closed' at DEBUG", |l| {
        l.contains(" DEBUG ") && l.contains("connection closed")
    });
}

#[test]
fn listens_on_several_addresses_including_ipv6_loopback() {
    if TcpListener::bind("[::1]:0").is_err() {
        eprintln!("skipped: no IPv6 loopback");
        return;
    }
    let echo = Echo::start("127.0.0.1");
    let target = echo.addr.to_string();
    let proxy = Proxy::start(&[
        "tcp",
        "0",
        &target,
        "--listen",
        "[::1]",
        "--listen",
        "127.0.0.1:0",
    ]);
    let addrs = proxy.try_listen_addrs(2, &target).expect("two listeners");
    assert!(
        addrs.iter().any(|a| a.ip().to_string() == "::1"),
        "{addrs:?}"
    );
    assert!(
        addrs.iter().any(|a| a.ip().to_string() == "127.0.0.1"),
        "{addrs:?}"
    );
    for (i, addr) in addrs.into_iter().enumerate() {
        let data = pattern(70_000, i as u64);
        assert_eq!(echo_through(connect(addr), &data), data, "via {addr}");
    }
}

/// `proxy tcp P 127.0.0.2`: the seed's form, TARGET without a port uses PORT.
#[test]
fn target_without_port_uses_listen_port() {
    // The echo server's port, chosen by the kernel on 127.0.0.2, may be taken on
    // 127.0.0.1; then try another, a bounded number of times.
    for attempt in 0..5 {
        let echo = Echo::start("127.0.0.2");
        let port = echo.port().to_string();
        let mut proxy = Proxy::start(&["tcp", &port, "127.0.0.2", "--listen", "127.0.0.1"]);
        let target = format!("127.0.0.2:{port}");
        let Some(addrs) = proxy.try_listen_addrs(1, &target) else {
            let status = proxy.wait_exit(PROMPT);
            assert_eq!(status.code(), Some(1), "attempt {attempt}");
            assert!(proxy.stderr().contains("in use"), "{}", proxy.stderr());
            continue;
        };
        assert_eq!(addrs[0], format!("127.0.0.1:{port}").parse().unwrap());
        let conn = connect(addrs[0]);
        // Reaching the echo server on 127.0.0.2:P is the only way to get this back.
        let data = pattern(100_000, 3);
        assert_eq!(echo_through(conn, &data), data);
        return;
    }
    panic!("no free port on 127.0.0.1 matching one on 127.0.0.2 in 5 attempts");
}

/// `localhost` without a port, resolved by the system resolver (/etc/hosts).
#[test]
fn localhost_target_resolves_through_system_resolver() {
    for attempt in 0..5 {
        let echo = Echo::start("127.0.0.1");
        let port = echo.port().to_string();
        let mut proxy = Proxy::start(&[
            "tcp",
            &port,
            "localhost",
            "--listen",
            "127.0.0.2",
            "--resolver",
            "system",
        ]);
        let target = format!("localhost:{port}");
        let Some(addrs) = proxy.try_listen_addrs(1, &target) else {
            let status = proxy.wait_exit(PROMPT);
            assert_eq!(status.code(), Some(1), "attempt {attempt}");
            continue;
        };
        let data = pattern(100_000, 7);
        assert_eq!(echo_through(connect(addrs[0]), &data), data);
        return;
    }
    panic!("no free port on 127.0.0.2 matching one on 127.0.0.1 in 5 attempts");
}

#[test]
fn positional_idle_timeout_closes_idle_connections() {
    let echo = Echo::start("127.0.0.1");
    let target = echo.addr.to_string();
    for (arg, min, max) in [
        ("1", Duration::from_millis(900), Duration::from_secs(4)),
        ("500ms", Duration::from_millis(400), Duration::from_secs(3)),
    ] {
        let proxy = Proxy::start(&["tcp", "0", &target, arg, "--listen", "127.0.0.1"]);
        let addr = proxy.listen_addr(&target);
        let mut conn = connect(addr);
        ping(&mut conn, b"before idling");
        let idle_since = Instant::now();
        let closed = expect_closed(&mut conn, max + Duration::from_secs(2));
        let idle = closed - idle_since;
        assert!(
            (min..=max).contains(&idle),
            "idle timeout {arg}: closed after {idle:?}"
        );
    }
}

#[test]
fn bad_arguments_exit_2_naming_the_token() {
    let cases: [(&[&str], &[&str]); 7] = [
        (&["tcp", "abc", "x"], &["'abc'", "<PORT>"]),
        (
            &["tcp", "80", "web:http"],
            &["'web:http'", "<TARGET>", "`http` is not a port"],
        ),
        (
            &["tcp", "80", "web", "5x"],
            &["invalid value '5x' for '[IDLE_TIMEOUT_SECONDS]'", "`x`"],
        ),
        (
            &["tcp", "80", "web", "--connect-timeout", "-1"],
            &["'-1'", "--connect-timeout", "negative"],
        ),
        (&["nosuch"], &["'nosuch'"]),
        (&["tcp", "0", "web"], &["'web'", "PORT is 0"]),
        (
            &["tcp", "80", "web", "--pipe-size", "1K"],
            &["pipe size 1024"],
        ),
    ];
    for (args, wants) in cases {
        let (code, stdout, stderr) = run(args);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        for want in wants {
            assert!(stderr.contains(want), "{args:?}: {stderr:?} lacks {want:?}");
        }
        assert!(stderr.starts_with("error: "), "{args:?}: {stderr:?}");
        assert!(stdout.is_empty(), "{args:?}: {stdout:?}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

#[test]
fn port_in_use_exits_1_naming_the_address() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let (code, _, stderr) = run(&[
        "tcp",
        &addr.port().to_string(),
        "127.0.0.1:9",
        "--listen",
        "127.0.0.1",
    ]);
    assert_eq!(code, 1, "{stderr}");
    let want = format!("error: failed to bind listen address ({addr}): Address already in use");
    assert!(stderr.contains(&want), "{stderr:?} lacks {want:?}");
}

#[test]
fn sigterm_drains_open_connections_then_exits_0() {
    let echo = Echo::start("127.0.0.1");
    let target = echo.addr.to_string();
    let mut proxy = Proxy::start(&[
        "tcp",
        "0",
        &target,
        "--listen",
        "127.0.0.1",
        "--drain",
        "20s",
    ]);
    let addr = proxy.listen_addr(&target);
    let mut open = connect(addr);
    ping(&mut open, b"established");

    proxy.signal("TERM");
    proxy.expect_line("'shutting down'", |l| {
        l.contains("shutting down") && l.contains("SIGTERM") && l.contains("open=1")
    });
    // The listener closes: connects are refused (bounded poll; a connect that still got in
    // before the listener closed is simply dropped).
    let deadline = Instant::now() + PROMPT;
    loop {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => break,
            other => {
                assert!(Instant::now() < deadline, "still accepting: {other:?}");
                thread::sleep(Duration::from_millis(20));
            }
        }
    }
    // The open connection still works within the drain time, and keeps the proxy alive.
    ping(&mut open, b"request during drain");
    assert!(proxy.running(), "exited with a connection still open");
    let closed = Instant::now();
    drop(open);
    let status = proxy.wait_exit(PROMPT);
    assert_eq!(status.code(), Some(0), "{}", proxy.stderr());
    // It exited because the connection finished, not because the 20 s drain ran out.
    assert!(
        closed.elapsed() < Duration::from_secs(8),
        "{:?}",
        closed.elapsed()
    );
    assert!(proxy.stderr().contains("all connections finished"));
}

#[test]
fn drain_time_bounds_shutdown_and_sigint_works() {
    let echo = Echo::start("127.0.0.1");
    let target = echo.addr.to_string();
    let mut proxy = Proxy::start(&[
        "tcp",
        "0",
        &target,
        "--listen",
        "127.0.0.1",
        "--drain",
        "500ms",
    ]);
    let addr = proxy.listen_addr(&target);
    let mut open = connect(addr);
    ping(&mut open, b"never finishes");
    let signalled = Instant::now();
    proxy.signal("INT");
    // The idle client is cut off when the drain time is over, and the proxy exits 0.
    let closed = expect_closed(&mut open, PROMPT);
    assert!(
        closed - signalled >= Duration::from_millis(400),
        "{:?}",
        closed - signalled
    );
    let status = proxy.wait_exit(PROMPT);
    assert_eq!(status.code(), Some(0), "{}", proxy.stderr());
    assert!(proxy.stderr().contains("SIGINT"), "{}", proxy.stderr());
    assert!(
        proxy.stderr().contains("drain time over"),
        "{}",
        proxy.stderr()
    );
}

#[test]
fn rust_log_overrides_log_level() {
    let echo = Echo::start("127.0.0.1");
    let target = echo.addr.to_string();
    let mut cmd = Command::new(PROXY);
    cmd.args([
        "tcp",
        "0",
        &target,
        "--listen",
        "127.0.0.1",
        "--log-level",
        "error",
    ])
    .env("RUST_LOG", "debug");
    let mut proxy = Proxy::spawn(cmd);
    // INFO and DEBUG lines although --log-level says error.
    let addr = proxy.listen_addr(&target);
    let mut conn = connect(addr);
    ping(&mut conn, b"x");
    proxy.expect_line("'connected' at DEBUG", |l| {
        l.contains(" DEBUG ") && l.contains("connected")
    });
    drop(conn);
    proxy.signal("TERM");
    assert_eq!(proxy.wait_exit(PROMPT).code(), Some(0));
}

#[test]
fn help_documents_the_command() {
    let (code, stdout, _) = run(&["--help"]);
    assert_eq!(code, 0);
    for want in [
        "proxy-to-service",
        "tcp",
        "PORT TARGET [IDLE_TIMEOUT_SECONDS]",
        "--log-level",
        "SIGTERM",
        "Exit codes",
    ] {
        assert!(
            stdout.contains(want),
            "proxy --help lacks {want:?}:\n{stdout}"
        );
    }
    let (code, stdout, _) = run(&["tcp", "--help"]);
    assert_eq!(code, 0);
    for want in [
        "proxy-to-service",
        "<PORT>",
        "<TARGET>",
        "[IDLE_TIMEOUT_SECONDS]",
        "0 or absent means no idle timeout",
        "--listen",
        "--connect-timeout",
        "--connect-total-timeout",
        "--idle-timeout",
        "--half-close-timeout",
        "--max-lifetime",
        "--resolver",
        "hickory",
        "--dns-refresh",
        "--reuse-port",
        "--backlog",
        "--pipe-size",
        "--relay",
        "--log-level",
        "--drain",
        "500ms, 30s, 5m, 1h",
        "proxy tcp 53 kube-dns.default",
    ] {
        assert!(
            stdout.contains(want),
            "proxy tcp --help lacks {want:?}:\n{stdout}"
        );
    }
    let (code, stdout, _) = run(&["--version"]);
    assert_eq!(code, 0);
    assert!(stdout.starts_with("proxy "), "{stdout}");
}

/// The CPU time (user + system) of process `pid` so far, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/PID/stat");
    // Fields after the command name, which is in parentheses and may contain spaces:
    // state is field 3, utime 14 and stime 15.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields[11].parse().unwrap();
    let stime: u64 = fields[12].parse().unwrap();
    utime + stime
}

fn clock_ticks_per_second() -> u64 {
    let out = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .expect("run getconf");
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .expect("CLK_TCK")
}

/// One request on a connection that may not be served: `true` when the echo came back
/// within `timeout`.
fn served(stream: &mut TcpStream, msg: &[u8], timeout: Duration) -> bool {
    stream.set_read_timeout(Some(timeout)).unwrap();
    let mut back = vec![0; msg.len()];
    stream.write_all(msg).is_ok() && stream.read_exact(&mut back).is_ok() && back == msg
}

/// Out of file descriptors (EMFILE), the proxy warns, backs off instead of spinning, and
/// serves again once descriptors are free.
#[cfg(target_os = "linux")]
#[test]
fn out_of_file_descriptors_backs_off_and_recovers() {
    let echo = Echo::start("127.0.0.1");
    let target = echo.addr.to_string();
    // prlimit sets the limit on itself and execs the proxy, which keeps the pid.
    let mut cmd = Command::new("prlimit");
    cmd.args([
        "--nofile=64:64",
        PROXY,
        "tcp",
        "0",
        &target,
        "--listen",
        "127.0.0.1",
    ])
    .env_remove("RUST_LOG");
    let proxy = Proxy::spawn(cmd);
    let addr = proxy.listen_addr(&target);
    let pid = proxy.pid();
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
    assert_eq!(comm.trim(), "proxy");

    // Open connections, each checked with a request, until one is not served; then open
    // more without waiting, so several queue while the proxy is at its limit and accept(2)
    // itself fails. Bounded: 200 connections, 60 s.
    let accept_failed = |l: &str| l.contains(" WARN ") && l.contains("accept failed");
    let started = Instant::now();
    let mut clients = Vec::new();
    let mut at_limit = false;
    for attempt in 0..200u32 {
        assert!(started.elapsed() < Duration::from_secs(60), "took too long");
        let Ok(mut conn) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
            at_limit = true;
            continue;
        };
        if !at_limit {
            let msg = format!("request {attempt}");
            at_limit = !served(&mut conn, msg.as_bytes(), Duration::from_millis(500));
        } else if attempt % 4 == 0
            && proxy
                .find_line(Duration::from_millis(300), accept_failed)
                .is_some()
        {
            clients.push(conn);
            break;
        }
        clients.push(conn);
    }
    let warn = proxy.expect_line("warning that accept failed", accept_failed);
    assert!(warn.contains("Too many open files"), "{warn}");
    let served_before = clients.len();

    // Stuck at the limit, it must not spin: under a quarter of one core over ~1 s.
    let hz = clock_ticks_per_second();
    let before = cpu_ticks(pid);
    let window = Instant::now();
    thread::sleep(Duration::from_secs(1)); // a measuring window, not a synchronisation
    let used = cpu_ticks(pid) - before;
    let share = used as f64 / hz as f64 / window.elapsed().as_secs_f64();
    assert!(
        share < 0.25,
        "busy at the fd limit: {used} ticks ({share:.2} of a core)"
    );

    // Freed descriptors: a new connection is relayed byte for byte again. A connection
    // may still meet the limit while the old ones wind down, so try a bounded few.
    drop(clients);
    let data = pattern(200_000, 42);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut tries = 0;
    loop {
        tries += 1;
        let conn = connect(addr);
        match try_echo_through(conn, &data) {
            Ok(back) if back == data => break,
            Ok(back) if !back.is_empty() => {
                panic!(
                    "corrupted relay: {} bytes back of {}",
                    back.len(),
                    data.len()
                )
            }
            other => assert!(
                tries < 20 && Instant::now() < deadline,
                "not served again after {tries} tries: {other:?}"
            ),
        }
    }
    proxy.expect_line("'accepting again'", |l| l.contains("accepting again"));
    eprintln!("limit reached after {served_before} connections; recovered in {tries} tries");
}
