//! A real DNS server for the end-to-end tests: dnsmasq on 127.0.0.1, on a port chosen by
//! the kernel, serving records given on its command line; and `dig`, the client.
//!
//! Adapted from proxy-core's `tests/dns_support` (tests cannot share code across crates).
//! Nothing here mocks DNS: every answer comes from dnsmasq over UDP or TCP on loopback.

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

/// The dnsmasq binary; fails the test (never skips it) when dnsmasq is not installed.
pub(crate) fn dnsmasq_program() -> PathBuf {
    find_program("dnsmasq", &["/usr/sbin/dnsmasq", "/sbin/dnsmasq"]).unwrap_or_else(|| {
        panic!(
            "dnsmasq is not installed, and this test needs a real DNS server: install the \
             `dnsmasq-base` package (Debian/Ubuntu: `apt-get install -y dnsmasq-base`; \
             scripts/test.sh does it)"
        )
    })
}

/// The dig binary; fails the test (never skips it) when dig is not installed.
pub(crate) fn dig_program() -> PathBuf {
    find_program("dig", &["/usr/bin/dig"]).unwrap_or_else(|| {
        panic!(
            "dig is not installed, and this test needs a real DNS client: install the \
             `dnsutils` package (Debian/Ubuntu: `apt-get install -y dnsutils`; \
             scripts/test.sh does it)"
        )
    })
}

/// A child process that is killed (SIGKILL) and reaped when dropped, so a failing test
/// leaves nothing running.
#[derive(Debug)]
pub(crate) struct KillOnDrop(Option<Child>);

impl KillOnDrop {
    /// Spawns `cmd`; the child also gets SIGKILL if the test process dies first.
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
        let name = format!(
            "proxy-cli-test-{}-{}-{nanos}-{what}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
        );
        TempPath(std::env::temp_dir().join(name))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
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

/// A dnsmasq on 127.0.0.1 (UDP and TCP) serving only the records of `records` (dnsmasq
/// options such as `--host-record=web.test,192.0.2.10` or `--txt-record=...`); every
/// other name under `.test` gets NXDOMAIN and nothing is forwarded anywhere. It logs every
/// query to a temp file, printed when a test panics.
#[derive(Debug)]
pub(crate) struct Dnsmasq {
    child: KillOnDrop,
    addr: SocketAddr,
    log: TempPath,
}

impl Dnsmasq {
    /// Starts dnsmasq on a free port chosen by the kernel, retrying with another port when
    /// the chosen one was taken in the meantime (for UDP or TCP).
    pub(crate) fn start(records: &[String]) -> Self {
        let mut errors = Vec::new();
        for _ in 0..5 {
            let port = free_udp_port();
            match Self::start_on(port, records) {
                Ok(d) => return d,
                Err(e) => errors.push(e),
            }
        }
        panic!(
            "dnsmasq did not start after 5 ports:\n{}",
            errors.join("\n")
        );
    }

    /// Starts dnsmasq on `127.0.0.1:port` and waits until it answers.
    pub(crate) fn start_on(port: u16, records: &[String]) -> Result<Self, String> {
        let program = dnsmasq_program();
        let log = TempPath::new("dnsmasq.log");
        let log_file = File::create(log.path()).map_err(|e| format!("log file: {e}"))?;
        let log_err = log_file.try_clone().map_err(|e| format!("log file: {e}"))?;
        let mut cmd = Command::new(&program);
        cmd.args([
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
            "--local=/test/",
            // Answers up to 4 KiB over UDP when the client's EDNS buffer allows it.
            "--edns-packet-max=4096",
        ])
        .arg(format!("--port={port}"))
        .args(records)
        .stdin(Stdio::null())
        .stdout(log_file)
        .stderr(log_err);
        let child = KillOnDrop::spawn(&mut cmd)
            .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
        let mut dns = Dnsmasq {
            child,
            addr: SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port),
            log,
        };
        // Bounded poll: at most 5 s of 100 ms probes.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(status) = dns.child.try_wait() {
                return Err(format!(
                    "dnsmasq on port {port} exited at start ({status}):\n{}",
                    dns.log()
                ));
            }
            if dns_answers(dns.addr, "ready.probe.test") {
                return Ok(dns);
            }
            if Instant::now() > deadline {
                dns.child.kill();
                return Err(format!(
                    "dnsmasq on port {port} did not answer within 5 s:\n{}",
                    dns.log()
                ));
            }
            // Refused probes return at once: poll at a modest rate.
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Where dnsmasq listens (UDP and TCP).
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
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

/// A UDP port on 127.0.0.1 that was free a moment ago.
fn free_udp_port() -> u16 {
    UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|s| s.local_addr())
        .expect("binding 127.0.0.1:0")
        .port()
}

/// Whether a DNS server at `server` answers an A query for `name` (with any rcode) within
/// 100 ms. A hand-built query, independent of dig and of the proxy.
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

// ===== dig =====

/// What `dig` printed for one query, and the parts the tests compare.
#[derive(Debug)]
pub(crate) struct DigAnswer {
    /// dig's whole output.
    pub(crate) output: String,
}

impl DigAnswer {
    /// The header flags (`qr aa rd ra`, with `tc` when the answer was truncated).
    pub(crate) fn flags(&self) -> Vec<String> {
        self.output
            .lines()
            .find_map(|l| l.strip_prefix(";; flags: "))
            .and_then(|l| l.split(';').next())
            .map(|f| f.split_whitespace().map(String::from).collect())
            .unwrap_or_default()
    }

    /// The status (`NOERROR`, `NXDOMAIN`, ...).
    pub(crate) fn status(&self) -> Option<String> {
        let line = self.output.lines().find(|l| l.contains("status: "))?;
        let at = line.find("status: ")? + "status: ".len();
        Some(line[at..].split(',').next()?.trim().to_owned())
    }

    /// The size of the received message, from `;; MSG SIZE  rcvd: N`.
    pub(crate) fn msg_size(&self) -> Option<usize> {
        self.output
            .lines()
            .find_map(|l| l.strip_prefix(";; MSG SIZE  rcvd: "))
            .and_then(|n| n.trim().parse().ok())
    }

    /// The answer section's records, sorted (dnsmasq may order them differently).
    pub(crate) fn answers(&self) -> Vec<String> {
        let mut records: Vec<String> = self
            .output
            .lines()
            .skip_while(|l| !l.starts_with(";; ANSWER SECTION:"))
            .skip(1)
            .take_while(|l| !l.trim().is_empty())
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        records.sort();
        records
    }
}

/// Runs `dig @SERVER -p PORT ARGS` with one try of at most 5 s, so a lost datagram fails
/// the test instead of hiding behind a retry. Fails the test when dig does not succeed.
pub(crate) fn dig(server: SocketAddr, args: &[&str]) -> DigAnswer {
    let program = dig_program();
    let mut cmd = Command::new(&program);
    cmd.arg(format!("@{}", server.ip()))
        .arg("-p")
        .arg(server.port().to_string())
        .args(["+tries=1", "+time=5"])
        .args(args)
        .stdin(Stdio::null());
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
    let output = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "`dig @{server} {}` failed ({}):\n{output}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    DigAnswer { output }
}
