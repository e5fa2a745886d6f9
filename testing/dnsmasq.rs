//! A real DNS server for integration tests: dnsmasq on 127.0.0.1, on a port chosen by the
//! kernel (or a given one), with what it needs around it: finding programs (failing with the
//! package to install, never skipping), child processes that are killed when a test fails,
//! and unique temp files.
//!
//! One file for the tests of several crates, which cannot share code through a crate of
//! their own: each includes it with `#[path = "…/testing/dnsmasq.rs"] mod dnsmasq;`. It
//! uses only std, and `libc` on Linux (a dependency of every crate that includes it).
//! Nothing here mocks DNS: every answer comes from dnsmasq over UDP or TCP on loopback.

// Each test crate uses only part of this file.
#![allow(dead_code)]

use std::fs::{self, File};
use std::io;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

// ===== programs =====

/// Finds `name` on `PATH` or at one of `extra` paths (sbin is often not on a user's PATH).
pub(crate) fn find_program(name: &str, extra: &[&str]) -> Option<PathBuf> {
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
pub(crate) fn require_program(name: &str, extra: &[&str], package: &str, what: &str) -> PathBuf {
    find_program(name, extra).unwrap_or_else(|| {
        panic!(
            "{name} is not installed, and this test needs {what}: install the `{package}` \
             package (Debian/Ubuntu: `apt-get install -y {package}`; scripts/test.sh does it)"
        )
    })
}

/// The dnsmasq binary; fails the test (never skips it) when dnsmasq is not installed.
pub(crate) fn dnsmasq_program() -> PathBuf {
    require_program(
        "dnsmasq",
        &["/usr/sbin/dnsmasq", "/sbin/dnsmasq"],
        "dnsmasq-base",
        "a real DNS server",
    )
}

// ===== child processes =====

/// A child process that is killed (SIGKILL) and reaped when dropped, so a failing test
/// leaves nothing running.
#[derive(Debug)]
pub(crate) struct KillOnDrop(Option<Child>);

impl KillOnDrop {
    /// Spawns `cmd`; on Linux the child also gets SIGKILL if this thread dies without
    /// dropping us.
    pub(crate) fn spawn(cmd: &mut Command) -> io::Result<Self> {
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
    pub(crate) fn try_wait(&mut self) -> Option<ExitStatus> {
        self.0.as_mut()?.try_wait().ok().flatten()
    }

    /// Waits at most `limit` for the child to exit; kills it when it does not.
    pub(crate) fn wait_timeout(&mut self, limit: Duration) -> Option<ExitStatus> {
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

    /// Sends SIGHUP.
    pub(crate) fn hangup(&self) {
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
    pub(crate) fn kill(&mut self) {
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

// ===== temp files =====

/// A file under `std::env::temp_dir()` with a name no other test or run uses; removed on
/// drop.
#[derive(Debug)]
pub(crate) struct TempPath(PathBuf);

impl TempPath {
    pub(crate) fn new(what: &str) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        // The package and the test crate, e.g. `proxy-core-dns-…` or `proxy-cli-cli-…`.
        let name = format!(
            "{}-{}-{}-{}-{nanos}-{what}",
            env!("CARGO_PKG_NAME"),
            env!("CARGO_CRATE_NAME"),
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
        );
        TempPath(std::env::temp_dir().join(name))
    }

    pub(crate) fn with_contents(what: &str, contents: &str) -> Self {
        let p = Self::new(what);
        p.write(contents);
        p
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }

    pub(crate) fn write(&self, contents: &str) {
        fs::write(&self.0, contents)
            .unwrap_or_else(|e| panic!("writing {}: {e}", self.0.display()));
    }

    pub(crate) fn read(&self) -> String {
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

// ===== dnsmasq =====

/// What a [`Dnsmasq`] serves, beyond the options every one gets (127.0.0.1 only, no
/// resolv.conf, no /etc/hosts, nothing forwarded anywhere, every query logged).
#[derive(Debug, Clone, Default)]
pub(crate) struct DnsmasqConfig {
    /// The contents of an extra hosts file (`--addn-hosts`), which dnsmasq reads again on
    /// SIGHUP ([`Dnsmasq::set_hosts`]).
    pub(crate) hosts: Option<String>,
    /// Domains answered from local data only (`--local=/DOMAIN/`): their names that are not
    /// served get NXDOMAIN.
    pub(crate) local_domains: Vec<String>,
    /// Further dnsmasq options, e.g. `--local-ttl=1`, `--host-record=web.test,192.0.2.10`,
    /// `--txt-record=...` or `--edns-packet-max=4096`.
    pub(crate) args: Vec<String>,
}

/// A dnsmasq on 127.0.0.1 (UDP and TCP) serving what a [`DnsmasqConfig`] says. It logs
/// every query to a temp file, printed when a test panics.
#[derive(Debug)]
pub(crate) struct Dnsmasq {
    child: KillOnDrop,
    addr: SocketAddr,
    hosts: Option<TempPath>,
    log: TempPath,
}

impl Dnsmasq {
    /// Starts dnsmasq on a free port chosen by the kernel, retrying with another port when
    /// the chosen one was taken in the meantime (for UDP or TCP).
    pub(crate) fn start(config: &DnsmasqConfig) -> Self {
        let mut errors = Vec::new();
        for _ in 0..5 {
            let port = free_udp_port();
            match Self::start_on(port, config) {
                Ok(d) => return d,
                Err(e) => errors.push(e),
            }
        }
        panic!(
            "dnsmasq did not start after 5 ports:\n{}",
            errors.join("\n")
        );
    }

    /// Starts dnsmasq on `127.0.0.1:port` (UDP and TCP) and waits until it answers.
    pub(crate) fn start_on(port: u16, config: &DnsmasqConfig) -> Result<Self, String> {
        let program = dnsmasq_program();
        let hosts = config
            .hosts
            .as_deref()
            .map(|h| TempPath::with_contents("hosts", h));
        let log = TempPath::new("dnsmasq.log");
        let log_file = File::create(log.path()).map_err(|e| format!("log file: {e}"))?;
        let log_err = log_file.try_clone().map_err(|e| format!("log file: {e}"))?;
        let mut cmd = Command::new(&program);
        cmd.args(dnsmasq_args(
            port,
            hosts.as_ref().map(TempPath::path),
            config,
        ))
        .stdin(Stdio::null())
        .stdout(log_file)
        .stderr(log_err);
        let child = KillOnDrop::spawn(&mut cmd)
            .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
        let mut dns = Dnsmasq {
            child,
            addr: SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port),
            hosts,
            log,
        };
        // Bounded poll: at most 5 s; refused probes return at once, so a modest rate.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(status) = dns.child.try_wait() {
                return Err(format!(
                    "dnsmasq on port {port} exited at start ({status}):\n{}",
                    dns.log()
                ));
            }
            if dns_answers(dns.addr, "ready.probe.invalid") {
                return Ok(dns);
            }
            if Instant::now() > deadline {
                dns.child.kill();
                return Err(format!(
                    "dnsmasq on port {port} did not answer within 5 s:\n{}",
                    dns.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Where dnsmasq listens (UDP and TCP).
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Replaces the hosts file ([`DnsmasqConfig::hosts`]) and sends SIGHUP, which makes
    /// dnsmasq clear its cache and read the file again.
    pub(crate) fn set_hosts(&self, hosts: &str) {
        self.hosts
            .as_ref()
            .expect("dnsmasq was started without a hosts file")
            .write(hosts);
        self.child.hangup();
    }

    /// Stops dnsmasq for good (SIGKILL, reaped): the port answers nothing any more.
    pub(crate) fn kill(&mut self) {
        self.child.kill();
    }

    /// What dnsmasq logged so far (start-up messages and every query).
    pub(crate) fn log(&self) -> String {
        self.log.read()
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        self.child.kill();
        if std::thread::panicking() {
            eprintln!("---- dnsmasq log ({}) ----\n{}", self.addr, self.log.read());
        }
    }
}

/// The dnsmasq command line (without the program); `hosts` is the file of
/// [`DnsmasqConfig::hosts`].
fn dnsmasq_args(port: u16, hosts: Option<&Path>, config: &DnsmasqConfig) -> Vec<String> {
    let mut args: Vec<String> = [
        "--keep-in-foreground",
        "--conf-file=/dev/null",
        "--no-resolv",
        "--no-hosts",
        "--no-poll",
        "--listen-address=127.0.0.1",
        "--bind-interfaces",
        "--user=root",
        "--pid-file=",
        "--log-facility=-",
        "--log-queries",
    ]
    .map(String::from)
    .into();
    args.push(format!("--port={port}"));
    args.extend(hosts.map(|h| format!("--addn-hosts={}", h.display())));
    args.extend(
        config
            .local_domains
            .iter()
            .map(|d| format!("--local=/{d}/")),
    );
    args.extend(config.args.iter().cloned());
    args
}

/// A UDP port on 127.0.0.1 that was free a moment ago.
fn free_udp_port() -> u16 {
    UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|s| s.local_addr())
        .expect("binding 127.0.0.1:0")
        .port()
}

/// Whether a DNS server at `server` answers an A query for `name` (with any rcode) within
/// 100 ms. A hand-built query, independent of the code and the clients under test.
fn dns_answers(server: SocketAddr, name: &str) -> bool {
    const ID: [u8; 2] = [0x5e, 0x11];
    let mut query = Vec::with_capacity(32 + name.len());
    query.extend_from_slice(&ID);
    query.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]); // RD; one question
    for label in name.split('.') {
        query.push(u8::try_from(label.len()).expect("label too long"));
        query.extend_from_slice(label.as_bytes());
    }
    query.extend_from_slice(&[0, 0, 1, 0, 1]); // root; type A; class IN
    let Ok(socket) = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)) else {
        return false;
    };
    if socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .is_err()
        || socket.send_to(&query, server).is_err()
    {
        return false;
    }
    let mut buf = [0u8; 512];
    matches!(socket.recv_from(&mut buf), Ok((n, from))
        if from == server && n >= 12 && buf[..2] == ID && buf[2] & 0x80 != 0)
}
