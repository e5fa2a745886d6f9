//! The `proxy` process under test: started with arguments, its stderr and stdout read
//! line by line on threads of their own, waited on with deadlines, killed on drop.

use std::io::{self, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

pub(crate) const PROXY: &str = env!("CARGO_BIN_EXE_proxy");

/// How long anything that should happen promptly may take before the test fails.
pub(crate) use proxy_testkit::wait::PROMPT;

/// Everything a child wrote to one stream, line by line, and whether the stream ended.
#[derive(Default)]
pub(crate) struct Output {
    pub(crate) lines: Vec<String>,
    pub(crate) closed: bool,
}

pub(crate) type SharedOutput = Arc<(Mutex<Output>, Condvar)>;

/// A running `proxy`; killed on drop, printing its stderr when the test is failing.
pub(crate) struct Proxy {
    child: Child,
    stderr: SharedOutput,
    stdout: SharedOutput,
    status: Option<ExitStatus>,
}

impl Proxy {
    /// Starts `proxy ARGS` with `RUST_LOG` unset, so `--log-level` decides.
    pub(crate) fn start(args: &[&str]) -> Proxy {
        let mut cmd = Command::new(PROXY);
        cmd.args(args).env_remove("RUST_LOG");
        Proxy::spawn(cmd)
    }

    pub(crate) fn spawn(mut cmd: Command) -> Proxy {
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

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// How many tokio worker threads the proxy runs, by their name.
    pub(crate) fn worker_threads(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/task", self.pid()))
            .expect("list the proxy's threads")
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .filter(|comm| comm.trim() == "tokio-rt-worker")
            .count()
    }

    /// The worker threads once there are `want` (polled within [`PROMPT`]: a new thread
    /// takes its name a moment after it starts), or as many as there are then.
    pub(crate) fn settled_worker_threads(&self, want: usize) -> usize {
        let deadline = std::time::Instant::now() + PROMPT;
        loop {
            let n = self.worker_threads();
            if n == want || std::time::Instant::now() >= deadline {
                return n;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// All of stderr so far.
    pub(crate) fn stderr(&self) -> String {
        self.stderr.0.lock().unwrap().lines.join("\n")
    }

    /// All of stdout so far.
    pub(crate) fn stdout(&self) -> String {
        self.stdout.0.lock().unwrap().lines.join("\n")
    }

    /// Waits up to `timeout` until `check` finds what it wants in the stderr lines so far;
    /// `None` when it did not in time or stderr closed first.
    pub(crate) fn wait_stderr<T>(
        &self,
        timeout: Duration,
        check: impl Fn(&[String]) -> Option<T>,
    ) -> Option<T> {
        wait_lines(&self.stderr, timeout, check)
    }

    /// The first stderr line matching `pred`, waiting up to `timeout`.
    pub(crate) fn find_line(
        &self,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Option<String> {
        self.wait_stderr(timeout, |lines| lines.iter().find(|l| pred(l)).cloned())
    }

    /// Like [`find_line`](Proxy::find_line), failing the test when the line does not come
    /// within [`PROMPT`].
    pub(crate) fn expect_line(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        self.find_line(PROMPT, pred)
            .unwrap_or_else(|| panic!("no stderr line {what} within {PROMPT:?}"))
    }

    /// The listen addresses of the first `n` "Forwarding from ADDR -> TARGET" lines that
    /// are not UDP's; `None` when they do not come (the proxy exited, or took too long).
    pub(crate) fn try_listen_addrs(&self, n: usize, target: &str) -> Option<Vec<SocketAddr>> {
        self.wait_stderr(PROMPT, |lines| {
            let addrs: Vec<SocketAddr> = lines
                .iter()
                .filter_map(|l| forwarding_line(l, target))
                .filter(|(proto, _)| *proto != Some(Proto::Udp))
                .map(|(_, addr)| addr)
                .collect();
            (addrs.len() >= n).then_some(addrs)
        })
    }

    /// The one listen address, from the "Forwarding from ADDR -> TARGET" line.
    pub(crate) fn listen_addr(&self, target: &str) -> SocketAddr {
        self.try_listen_addrs(1, target)
            .unwrap_or_else(|| panic!("no 'Forwarding from ... -> {target}' line"))[0]
    }

    /// Waits for the process to exit, failing the test after `timeout`.
    pub(crate) fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
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
    pub(crate) fn running(&mut self) -> bool {
        self.status.is_none() && self.child.try_wait().expect("try_wait").is_none()
    }

    /// Sends a signal (`TERM`, `INT`) with kill(1).
    pub(crate) fn signal(&self, sig: &str) {
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
pub(crate) fn collect(stream: impl Read + Send + 'static) -> SharedOutput {
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

/// Waits up to `timeout` until `check` finds what it wants in the lines of `out` so far;
/// `None` when it did not in time or the stream closed first.
fn wait_lines<T>(
    out: &SharedOutput,
    timeout: Duration,
    check: impl Fn(&[String]) -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + timeout;
    let (lock, cond) = &**out;
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

pub(crate) fn wait_closed(out: &SharedOutput, timeout: Duration) {
    let (lock, cond) = &**out;
    let guard = lock.lock().unwrap();
    let (guard, _) = cond
        .wait_timeout_while(guard, timeout, |o| !o.closed)
        .unwrap();
    let closed = guard.closed;
    // Not while holding the lock: a poisoned lock would make `Proxy`'s drop panic too.
    drop(guard);
    assert!(closed, "output did not close within {timeout:?}");
}

/// Runs `proxy ARGS` to completion (at most [`PROMPT`]): its exit code, stdout, stderr.
pub(crate) fn run(args: &[&str]) -> (i32, String, String) {
    let mut p = Proxy::start(args);
    let status = p.wait_exit(PROMPT);
    (status.code().expect("exit code"), p.stdout(), p.stderr())
}

/// The protocol of a "Forwarding from" line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Proto {
    /// Logged by the TCP forwarder.
    Tcp,
    /// Logged by the UDP forwarder.
    Udp,
}

/// Parses a "Forwarding from ADDR -> TARGET" line for `target`: the listen address and,
/// when the line tells, the protocol. The message may be followed by tracing fields
/// (`protocol="udp"`); the protocol comes from such a field, from the address part
/// (`udp 127.0.0.1:53`), or else from the logging module (`proxy_core::udp::...`).
pub(crate) fn forwarding_line(line: &str, target: &str) -> Option<(Option<Proto>, SocketAddr)> {
    const FROM: &str = "Forwarding from ";
    let at = line.find(FROM)?;
    let message = &line[at + FROM.len()..];
    let arrow = format!(" -> {target}");
    let end = message.find(&arrow)?;
    let (rest, fields) = (&message[..end], &message[end + arrow.len()..]);
    // The target must end there: `-> 127.0.0.1:53` is not `-> 127.0.0.1:5353`.
    if !(fields.is_empty() || fields.starts_with(' ')) {
        return None;
    }
    // `127.0.0.1:53`, `udp 127.0.0.1:53`, `(udp) 127.0.0.1:53,`, `udp://127.0.0.1:53`,
    // `127.0.0.1:53/udp`.
    let addr = rest.split_whitespace().find_map(|t| {
        let t = t.rsplit("://").next().unwrap_or(t);
        let t = t.split('/').next().unwrap_or(t);
        t.trim_matches(|c: char| matches!(c, '(' | ')' | ','))
            .parse::<SocketAddr>()
            .ok()
    })?;
    let named = |text: &str| {
        let text = text.to_ascii_lowercase();
        if text.contains("udp") {
            Some(Proto::Udp)
        } else if text.contains("tcp") {
            Some(Proto::Tcp)
        } else {
            None
        }
    };
    let module = line[..at]
        .rsplit(' ')
        .find(|w| w.contains("::"))
        .unwrap_or("");
    let proto = named(fields)
        .or_else(|| named(rest))
        .or_else(|| named(module));
    Some((proto, addr))
}

impl Proxy {
    /// The listen addresses of the first `n` "Forwarding from" lines of protocol `proto`
    /// for `target`; `None` when they do not come within [`PROMPT`].
    pub(crate) fn try_proto_listen_addrs(
        &self,
        proto: Proto,
        n: usize,
        target: &str,
    ) -> Option<Vec<SocketAddr>> {
        self.wait_stderr(PROMPT, |lines| {
            let addrs: Vec<SocketAddr> = lines
                .iter()
                .filter_map(|l| forwarding_line(l, target))
                .filter(|(p, _)| *p == Some(proto))
                .map(|(_, addr)| addr)
                .collect();
            (addrs.len() >= n).then_some(addrs)
        })
    }

    /// The one listen address of protocol `proto`.
    pub(crate) fn proto_listen_addr(&self, proto: Proto, target: &str) -> SocketAddr {
        self.try_proto_listen_addrs(proto, 1, target)
            .unwrap_or_else(|| panic!("no {proto:?} 'Forwarding from ... -> {target}' line"))[0]
    }

    /// How many stderr lines so far satisfy `pred`.
    pub(crate) fn count_lines(&self, pred: impl Fn(&str) -> bool) -> usize {
        self.stderr
            .0
            .lock()
            .unwrap()
            .lines
            .iter()
            .filter(|l| pred(l))
            .count()
    }
}

impl Proxy {
    /// Waits up to `timeout` until `check` finds what it wants in the stdout lines so far;
    /// `None` when it did not in time or stdout closed first.
    pub(crate) fn wait_stdout<T>(
        &self,
        timeout: Duration,
        check: impl Fn(&[String]) -> Option<T>,
    ) -> Option<T> {
        wait_lines(&self.stdout, timeout, check)
    }

    /// The first `n` stdout lines, waiting up to [`PROMPT`] for them; fails the test when
    /// they do not come.
    pub(crate) fn stdout_lines(&self, n: usize) -> Vec<String> {
        self.wait_stdout(PROMPT, |lines| {
            (lines.len() >= n).then(|| lines[..n].to_vec())
        })
        .unwrap_or_else(|| {
            panic!(
                "no {n} stdout lines within {PROMPT:?}; stdout so far:\n{}",
                self.stdout()
            )
        })
    }
}
