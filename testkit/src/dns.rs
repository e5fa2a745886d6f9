//! A real DNS server for integration tests: dnsmasq on 127.0.0.1, on a port chosen by the
//! kernel (or a given one), its query log printed when a test fails.
//!
//! Nothing here mocks DNS: every answer comes from dnsmasq over UDP or TCP on loopback.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::process::{KillOnDrop, TempPath, require_program};

/// The dnsmasq binary; fails the test (never skips it) when dnsmasq is not installed.
pub fn dnsmasq_program() -> PathBuf {
    require_program(
        "dnsmasq",
        &["/usr/sbin/dnsmasq", "/sbin/dnsmasq"],
        "dnsmasq-base",
        "a real DNS server",
    )
}

/// A dnsmasq serving the names of an extra hosts file, `hosts`; names in `local_domains`
/// that are not in the file get NXDOMAIN. The file is read again on SIGHUP
/// ([`Dnsmasq::set_hosts`]). Answers carry a TTL of 1 s (`--local-ttl=1`).
pub fn hosts_config(hosts: &str, local_domains: &[&str]) -> DnsmasqConfig {
    DnsmasqConfig {
        hosts: Some(hosts.to_owned()),
        local_domains: local_domains.iter().map(|d| (*d).to_owned()).collect(),
        args: vec!["--local-ttl=1".to_owned()],
    }
}

// ===== dnsmasq =====

/// What a [`Dnsmasq`] serves, beyond the options every one gets (127.0.0.1 only, no
/// resolv.conf, no /etc/hosts, nothing forwarded anywhere, every query logged).
#[derive(Debug, Clone, Default)]
pub struct DnsmasqConfig {
    /// The contents of an extra hosts file (`--addn-hosts`), which dnsmasq reads again on
    /// SIGHUP ([`Dnsmasq::set_hosts`]).
    pub hosts: Option<String>,
    /// Domains answered from local data only (`--local=/DOMAIN/`): their names that are not
    /// served get NXDOMAIN.
    pub local_domains: Vec<String>,
    /// Further dnsmasq options, e.g. `--local-ttl=1`, `--host-record=web.test,192.0.2.10`,
    /// `--txt-record=...` or `--edns-packet-max=4096`.
    pub args: Vec<String>,
}

/// A dnsmasq on 127.0.0.1 (UDP and TCP) serving what a [`DnsmasqConfig`] says. It logs
/// every query to a temp file, printed when a test panics.
#[derive(Debug)]
pub struct Dnsmasq {
    child: KillOnDrop,
    addr: SocketAddr,
    hosts: Option<TempPath>,
    log: TempPath,
}

impl Dnsmasq {
    /// Starts dnsmasq on a free port chosen by the kernel, retrying with another port when
    /// the chosen one was taken in the meantime (for UDP or TCP).
    pub fn start(config: &DnsmasqConfig) -> Self {
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
    pub fn start_on(port: u16, config: &DnsmasqConfig) -> Result<Self, String> {
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
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Replaces the hosts file ([`DnsmasqConfig::hosts`]) and sends SIGHUP, which makes
    /// dnsmasq clear its cache and read the file again.
    pub fn set_hosts(&self, hosts: &str) {
        self.hosts
            .as_ref()
            .expect("dnsmasq was started without a hosts file")
            .write(hosts);
        self.child.hangup();
    }

    /// Stops dnsmasq for good (SIGKILL, reaped): the port answers nothing any more.
    pub fn kill(&mut self) {
        self.child.kill();
    }

    /// What dnsmasq logged so far (start-up messages and every query).
    pub fn log(&self) -> String {
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
