//! Helpers for `tests/dns.rs`: a real dnsmasq child process, TCP servers that say who they
//! are, unique temp files, and child processes that are killed when a test fails.
//!
//! Nothing here mocks DNS: every answer comes from dnsmasq over UDP/TCP on loopback.

use std::fs::{self, File};
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// How long one client exchange through the forwarder may take.
pub(crate) const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(5);

/// `127.0.0.last`.
pub(crate) fn lo(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

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
            "dnsmasq is not installed, and the DNS tests need a real DNS server: install the \
             `dnsmasq-base` package (Debian/Ubuntu: `apt-get install -y dnsmasq-base`) \
             before running `cargo test -p proxy-core --test dns`"
        )
    })
}

/// Runs a command to completion; panics with its output when it fails.
pub(crate) fn run(program: &str, args: &[&str]) {
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

/// A child process that is killed (SIGKILL) and reaped when dropped, so a failing test
/// leaves nothing running.
#[derive(Debug)]
pub(crate) struct KillOnDrop(Option<Child>);

impl KillOnDrop {
    /// Spawns `cmd`; the child also gets SIGKILL if this thread dies without dropping us.
    pub(crate) fn spawn(cmd: &mut Command) -> io::Result<Self> {
        // SAFETY: the closure runs in the forked child before exec and only makes the
        // `prctl(PR_SET_PDEATHSIG)` system call, which is async-signal-safe; it does not
        // allocate or take locks.
        unsafe {
            cmd.pre_exec(|| {
                rustix::process::set_parent_process_death_signal(Some(
                    rustix::process::Signal::KILL,
                ))
                .map_err(io::Error::from)
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
        rustix::process::kill_process(
            rustix::process::Pid::from_child(child),
            rustix::process::Signal::HUP,
        )
        .expect("SIGHUP");
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

/// A file under `std::env::temp_dir()` with a name no other test or run uses; removed on drop.
#[derive(Debug)]
pub(crate) struct TempPath(PathBuf);

impl TempPath {
    pub(crate) fn new(what: &str) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let name = format!(
            "proxy-core-dns-{}-{}-{nanos}-{what}",
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

/// A dnsmasq serving the names of an extra hosts file, on 127.0.0.1 only.
///
/// Names in `local_domains` that are not in the file get NXDOMAIN; the file is read again
/// on SIGHUP ([`Dnsmasq::set_hosts`]). Answers carry a TTL of 1 s (`--local-ttl=1`).
/// dnsmasq logs every query to a temp file, printed when a test panics.
#[derive(Debug)]
pub(crate) struct Dnsmasq {
    child: KillOnDrop,
    addr: SocketAddr,
    hosts: TempPath,
    log: TempPath,
}

impl Dnsmasq {
    /// Starts dnsmasq on a free port chosen by the kernel, retrying with another port when
    /// the chosen one was taken in the meantime.
    pub(crate) fn start(hosts: &str, local_domains: &[&str]) -> Self {
        let mut errors = Vec::new();
        for _ in 0..5 {
            let port = free_udp_port();
            match Self::start_on(port, hosts, local_domains) {
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
    pub(crate) fn start_on(port: u16, hosts: &str, local_domains: &[&str]) -> Result<Self, String> {
        let program = dnsmasq_program();
        let hosts_file = TempPath::with_contents("hosts", hosts);
        let log = TempPath::new("dnsmasq.log");
        let log_file = File::create(log.path()).map_err(|e| format!("log file: {e}"))?;
        let log_err = log_file.try_clone().map_err(|e| format!("log file: {e}"))?;
        let mut cmd = Command::new(&program);
        cmd.args(dnsmasq_args(port, hosts_file.path(), local_domains))
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(log_err);
        let child = KillOnDrop::spawn(&mut cmd)
            .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
        let mut dns = Dnsmasq {
            child,
            addr: SocketAddr::new(lo(1), port),
            hosts: hosts_file,
            log,
        };
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

    /// Replaces the hosts file and sends SIGHUP, which makes dnsmasq clear its cache and
    /// read the file again.
    pub(crate) fn set_hosts(&self, hosts: &str) {
        self.hosts.write(hosts);
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

/// The dnsmasq command line (without the program).
pub(crate) fn dnsmasq_args(port: u16, hosts: &Path, local_domains: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "--keep-in-foreground",
        "--conf-file=/dev/null",
        "--no-resolv",
        "--no-hosts",
        "--no-poll",
        "--listen-address=127.0.0.1",
        "--bind-interfaces",
        "--local-ttl=1",
        "--user=root",
        "--pid-file=",
        "--log-facility=-",
        "--log-queries",
    ]
    .map(String::from)
    .into();
    args.push(format!("--port={port}"));
    args.push(format!("--addn-hosts={}", hosts.display()));
    args.extend(local_domains.iter().map(|d| format!("--local=/{d}/")));
    args
}

/// A UDP port that was free a moment ago.
fn free_udp_port() -> u16 {
    UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|s| s.local_addr())
        .expect("binding 127.0.0.1:0")
        .port()
}

/// Whether a DNS server at `server` answers an A query for `name` (with any rcode) within
/// 100 ms. A hand-built query, independent of the resolvers under test.
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

// ===== identity servers =====

/// TCP servers, one per address, that greet each connection with their own IP address on
/// one line and then echo what they receive, so a client knows which one it reached.
#[derive(Debug)]
pub(crate) struct IdentityServers {
    port: u16,
    tasks: Vec<JoinHandle<()>>,
}

impl IdentityServers {
    /// Servers on every one of `ips`, all on the same port chosen by the kernel.
    pub(crate) async fn start(ips: &[IpAddr]) -> Self {
        let mut last_error = None;
        for _ in 0..10 {
            match bind_same_port(ips).await {
                Ok(listeners) => {
                    let port = listeners[0].local_addr().expect("local_addr").port();
                    let tasks = listeners
                        .into_iter()
                        .map(|l| tokio::spawn(serve(l)))
                        .collect();
                    return IdentityServers { port, tasks };
                }
                Err(e) => last_error = Some(e),
            }
        }
        panic!("cannot bind {ips:?} on one port: {last_error:?}");
    }

    /// The port all servers listen on.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for IdentityServers {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn bind_same_port(ips: &[IpAddr]) -> io::Result<Vec<TcpListener>> {
    let first = TcpListener::bind(SocketAddr::new(ips[0], 0)).await?;
    let port = first.local_addr()?.port();
    let mut listeners = vec![first];
    for ip in &ips[1..] {
        listeners.push(TcpListener::bind(SocketAddr::new(*ip, port)).await?);
    }
    Ok(listeners)
}

async fn serve(listener: TcpListener) {
    let me = listener.local_addr().expect("local_addr").ip();
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            if stream
                .write_all(format!("{me}\n").as_bytes())
                .await
                .is_err()
            {
                return;
            }
            let (mut r, mut w) = stream.split();
            let _ = tokio::io::copy(&mut r, &mut w).await;
            let _ = w.shutdown().await;
        });
    }
}

/// Connects through `proxy`, reads the greeting of the server it reached, checks that a
/// payload comes back intact, and returns the server's identity (its IP address).
pub(crate) async fn ask(proxy: SocketAddr) -> io::Result<String> {
    tokio::time::timeout(EXCHANGE_TIMEOUT, async {
        let mut stream = TcpStream::connect(proxy).await?;
        let (r, mut w) = stream.split();
        let mut r = BufReader::new(r);
        let mut greeting = String::new();
        r.read_line(&mut greeting).await?;
        if !greeting.ends_with('\n') {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("connection closed before a greeting (got {greeting:?})"),
            ));
        }
        let payload = b"ping through the proxy\n";
        w.write_all(payload).await?;
        w.shutdown().await?;
        let mut echoed = Vec::new();
        r.read_to_end(&mut echoed).await?;
        if echoed != payload {
            return Err(io::Error::other(format!(
                "payload came back as {:?}",
                String::from_utf8_lossy(&echoed)
            )));
        }
        Ok(greeting.trim_end().to_owned())
    })
    .await
    .unwrap_or_else(|_| {
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "exchange timed out",
        ))
    })
}

/// Connects through `proxy` and expects the proxy to close the connection cleanly (a FIN,
/// read as end of file) without sending anything.
pub(crate) async fn expect_clean_close(proxy: SocketAddr) {
    let mut stream = TcpStream::connect(proxy)
        .await
        .unwrap_or_else(|e| panic!("connecting to the forwarder at {proxy}: {e}"));
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(EXCHANGE_TIMEOUT, stream.read(&mut buf))
        .await
        .unwrap_or_else(|_| {
            panic!("the forwarder kept the connection open for {EXCHANGE_TIMEOUT:?}")
        });
    match read {
        Ok(0) => {}
        Ok(n) => panic!(
            "expected EOF, got {n} bytes: {:?}",
            String::from_utf8_lossy(&buf[..n])
        ),
        Err(e) => panic!("expected a clean close (EOF), got an error: {e}"),
    }
}
