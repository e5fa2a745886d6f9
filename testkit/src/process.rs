//! Programs and processes around a test: finding programs (failing with the package to
//! install, never skipping), child processes that are killed when a test fails, commands
//! run to completion, unique temp files, and a test of this binary run again in a process
//! of its own.

use std::fmt::Write as _;
use std::fs;
use std::future::Future;
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

// ===== programs =====

/// Finds `name` on `PATH` or at one of `extra` paths (sbin is often not on a user's PATH).
pub fn find_program(name: &str, extra: &[&str]) -> Option<PathBuf> {
    let on_path: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join(name)).collect())
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain(extra.iter().map(PathBuf::from))
        .find(|p| p.is_file())
}

/// Finds `name` like [`find_program`]; fails the test (never skips it) when it is not
/// installed, naming the Debian/Ubuntu `package` to install and what the test needs it as
/// (`what`, e.g. "a real DNS server").
pub fn require_program(name: &str, extra: &[&str], package: &str, what: &str) -> PathBuf {
    find_program(name, extra).unwrap_or_else(|| {
        panic!(
            "{name} is not installed, and this test needs {what}: install the `{package}` \
             package (Debian/Ubuntu: `apt-get install -y {package}`; scripts/test.sh does it)"
        )
    })
}

/// Runs a command to completion; panics with its output when it fails.
pub fn run(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run `{program} {}`: {e}", args.join(" ")));
    assert!(
        out.status.success(),
        "`{program} {}` failed ({}): {}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
}

/// Runs `cmd` (its stdin null, its stdout and stderr piped) for at most `limit`: exit
/// status (`None` when it was killed at the limit), stdout, stderr.
pub fn run_limited(cmd: &mut Command, limit: Duration) -> (Option<ExitStatus>, String, String) {
    let what = format!("{:?}", cmd.get_program());
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = KillOnDrop::spawn(cmd).unwrap_or_else(|e| panic!("run {what}: {e}"));
    let (out, err) = child.take_output();
    let status = child.wait_timeout(limit);
    out.wait_closed(crate::wait::PROMPT);
    err.wait_closed(crate::wait::PROMPT);
    (status, out.text(), err.text())
}

// ===== Python venvs =====

/// The Python of a venv under the target dir (`target/DIR`, see
/// [`kube::target_dir`](crate::kube::target_dir)) where `import` runs, made once with
/// `python3 -m venv` and `pip install REQUIREMENTS` (pinned, e.g. `websockets==15.0.1`), and
/// reused for as long as `import` (Python code, e.g. `import websockets`) runs in it.
///
/// # Errors
///
/// The commands run and their output when the venv cannot be made (no `python3`; on
/// Debian/Ubuntu, no `python3-venv` package) or pip cannot install (PyPI out of reach: pip
/// gives up after about a minute). Callers that can do without print `skipping: ERROR`.
pub fn python_venv(dir: &str, requirements: &[&str], import: &str) -> Result<PathBuf, String> {
    static MADE: Mutex<Vec<(String, Result<PathBuf, String>)>> = Mutex::new(Vec::new());
    let mut made = MADE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, result)) = made.iter().find(|(d, _)| d == dir) {
        return result.clone();
    }
    let result = make_venv(dir, requirements, import);
    made.push((dir.to_owned(), result.clone()));
    result
}

fn make_venv(dir: &str, requirements: &[&str], import: &str) -> Result<PathBuf, String> {
    let venv = crate::kube::target_dir().join(dir);
    let python = venv.join("bin").join("python");
    let imports = |python: &Path| {
        Command::new(python)
            .args(["-c", import])
            .stdin(Stdio::null())
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if imports(&python) {
        return Ok(python);
    }
    let python3 = find_program("python3", &["/usr/bin/python3"])
        .ok_or("python3 is not installed (Debian/Ubuntu: python3 and python3-venv)")?;
    let mut log = String::new();
    let mut step = |program: &Path, args: &[&str], limit: Duration| {
        let (status, out, err) = run_limited(Command::new(program).args(args), limit);
        let _ = writeln!(
            log,
            "$ {} {}\n{out}{err}",
            program.display(),
            args.join(" ")
        );
        if status.is_some_and(|s| s.success()) {
            Ok(())
        } else {
            Err(format!(
                "making the venv {} failed ({}); `python3 -m venv` needs the python3-venv \
                 package on Debian/Ubuntu, and pip needs PyPI:\n{log}",
                venv.display(),
                status.map_or("killed at its time limit".to_owned(), |s| s.to_string()),
            ))
        }
    };
    let v = venv.to_string_lossy().into_owned();
    step(
        &python3,
        &["-m", "venv", "--clear", &v],
        Duration::from_secs(120),
    )?;
    let mut pip = vec![
        "-m",
        "pip",
        "install",
        "--disable-pip-version-check",
        "--no-input",
        "-q",
        "--timeout",
        "15",
        "--retries",
        "2",
    ];
    pip.extend_from_slice(requirements);
    step(&python, &pip, Duration::from_secs(300))?;
    if imports(&python) {
        Ok(python)
    } else {
        Err(format!(
            "pip installed {}, yet `{import}` fails:\n{log}",
            requirements.join(" ")
        ))
    }
}

// ===== child processes =====

/// A child process that is killed (SIGKILL) and reaped when dropped, so a failing test
/// leaves nothing running.
#[derive(Debug)]
pub struct KillOnDrop(Option<Child>);

impl KillOnDrop {
    /// Spawns `cmd`; on Linux the child also gets SIGKILL if this thread dies without
    /// dropping us.
    ///
    /// # Errors
    ///
    /// When the command cannot be spawned.
    pub fn spawn(cmd: &mut Command) -> io::Result<Self> {
        // SAFETY: the closure runs in the forked child before exec and only makes the
        // `prctl(PR_SET_PDEATHSIG)` system call, which is async-signal-safe; it does not
        // allocate or take locks.
        unsafe {
            cmd.pre_exec(|| {
                #[cfg(target_os = "linux")]
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd.spawn().map(|c| KillOnDrop(Some(c)))
    }

    /// The exit status, if the child has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.0.as_mut()?.try_wait().ok().flatten()
    }

    /// Waits at most `limit` for the child to exit; kills it when it does not.
    pub fn wait_timeout(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        None
    }

    /// The child's process id.
    pub fn id(&self) -> u32 {
        self.0.as_ref().expect("child already killed").id()
    }

    /// The child's stdout and stderr (both must be piped), read line by line.
    pub fn take_output(&mut self) -> (Lines, Lines) {
        let child = self.0.as_mut().expect("child already killed");
        let out = Lines::read(child.stdout.take().expect("stdout is not piped"));
        let err = Lines::read(child.stderr.take().expect("stderr is not piped"));
        (out, err)
    }

    /// Sends SIGHUP.
    pub fn hangup(&self) {
        let child = self.0.as_ref().expect("child already killed");
        #[cfg(target_os = "linux")]
        {
            let pid = libc::pid_t::try_from(child.id()).expect("pid out of range");
            // SAFETY: kill(2) takes plain integers and touches no memory of ours; `pid` is
            // our own child, not reaped yet, so it names no other process.
            if unsafe { libc::kill(pid, libc::SIGHUP) } != 0 {
                panic!("SIGHUP: {}", io::Error::last_os_error());
            }
        }
        #[cfg(not(target_os = "linux"))]
        {
            let status = Command::new("kill")
                .args(["-s", "HUP", &child.id().to_string()])
                .stdin(Stdio::null())
                .status()
                .expect("running kill");
            assert!(status.success(), "SIGHUP: kill failed ({status})");
        }
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        self.kill();
    }
}

// ===== output, line by line =====

/// What a child writes to one stream, read line by line on a thread of its own, to wait on
/// with a deadline (a line that says the child is ready, an error it prints) and to show
/// when a test fails.
#[derive(Clone, Debug, Default)]
pub struct Lines(Arc<(Mutex<LinesState>, Condvar)>);

/// A child's stdout and stderr so far, labelled with what it is, for failure messages.
pub fn labelled_output(what: &str, stdout: &Lines, stderr: &Lines) -> String {
    format!(
        "---- {what} stdout ----\n{}\n---- stderr ----\n{}\n----",
        stdout.text(),
        stderr.text()
    )
}

#[derive(Debug, Default)]
struct LinesState {
    lines: Vec<String>,
    closed: bool,
}

impl Lines {
    /// Starts reading `stream`; the thread ends when the stream does.
    pub fn read(stream: impl Read + Send + 'static) -> Lines {
        let lines = Lines::default();
        let shared = lines.clone();
        thread::spawn(move || {
            let mut reader = BufReader::new(stream);
            loop {
                let mut line = String::new();
                let done = !matches!(reader.read_line(&mut line), Ok(n) if n > 0);
                let (lock, cond) = &*shared.0;
                let mut state = lock.lock().unwrap();
                if done {
                    state.closed = true;
                } else {
                    let line = line.trim_end_matches('\n').trim_end_matches('\r');
                    state.lines.push(line.to_owned());
                }
                cond.notify_all();
                if done {
                    return;
                }
            }
        });
        lines
    }

    /// All lines so far, joined with newlines.
    pub fn text(&self) -> String {
        self.0.0.lock().unwrap().lines.join("\n")
    }

    /// Whether the stream has ended.
    pub fn closed(&self) -> bool {
        self.0.0.lock().unwrap().closed
    }

    /// Waits up to `timeout` until `check` finds what it wants in the lines so far; `None`
    /// when it did not in time, or the stream ended first.
    pub fn wait<T>(&self, timeout: Duration, check: impl Fn(&[String]) -> Option<T>) -> Option<T> {
        let deadline = Instant::now() + timeout;
        let (lock, cond) = &*self.0;
        let mut state = lock.lock().unwrap();
        loop {
            if let Some(found) = check(&state.lines) {
                return Some(found);
            }
            let now = Instant::now();
            if state.closed || now >= deadline {
                return None;
            }
            state = cond.wait_timeout(state, deadline - now).unwrap().0;
        }
    }

    /// The first line containing `needle`, waiting up to `timeout`.
    pub fn find(&self, timeout: Duration, needle: &str) -> Option<String> {
        self.wait(timeout, |lines| {
            lines.iter().find(|l| l.contains(needle)).cloned()
        })
    }

    /// Waits up to `timeout` for the stream to end; whether it did.
    pub fn wait_closed(&self, timeout: Duration) -> bool {
        let (lock, cond) = &*self.0;
        let state = lock.lock().unwrap();
        let (state, _) = cond
            .wait_timeout_while(state, timeout, |s| !s.closed)
            .unwrap();
        state.closed
    }
}

// ===== temp files =====

/// A file under `std::env::temp_dir()` with a name no other test or run uses; removed on
/// drop.
#[derive(Debug)]
pub struct TempPath(PathBuf);

impl TempPath {
    /// A fresh path whose name ends with `what`; nothing is created yet.
    pub fn new(what: &str) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        // The test binary, e.g. `proxy-testkit-dns-0123abcd-…` or `proxy-testkit-cli-…`.
        let exe = std::env::current_exe()
            .ok()
            .and_then(|p| Some(p.file_name()?.to_string_lossy().into_owned()))
            .unwrap_or_default();
        let name = format!(
            "{}-{exe}-{}-{}-{nanos}-{what}",
            env!("CARGO_PKG_NAME"),
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
        );
        TempPath(std::env::temp_dir().join(name))
    }

    /// A fresh path like [`new`](TempPath::new), written with `contents`.
    pub fn with_contents(what: &str, contents: &str) -> Self {
        let p = Self::new(what);
        p.write(contents);
        p
    }

    /// The path.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Replaces the file's contents; panics when it cannot.
    pub fn write(&self, contents: &str) {
        fs::write(&self.0, contents)
            .unwrap_or_else(|e| panic!("writing {}: {e}", self.0.display()));
    }

    /// The file's contents (invalid UTF-8 replaced), or nothing when it cannot be read.
    pub fn read(&self) -> String {
        fs::read(&self.0)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

// ===== this test binary, again =====

/// The number of open file descriptors of this process.
#[cfg(target_os = "linux")]
pub fn open_fds() -> usize {
    fs::read_dir("/proc/self/fd")
        .expect("read /proc/self/fd")
        .count()
}

/// Runs one test of this binary in a child process with `env` set; returns whether it
/// passed and its output. Kills it after `limit`.
pub fn run_self(test: &str, env: &str, limit: Duration) -> (bool, String, String) {
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
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() >= deadline {
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
pub fn in_own_process<F: Future<Output = ()>>(test: &str, env: &str, body: impl FnOnce() -> F) {
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
