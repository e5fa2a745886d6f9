//! Addresses and network namespaces: loopback addresses on kernel-chosen ports, and a test
//! of the test binary run again, alone, in a network namespace of its own, where it may
//! bring loopback up, shrink the ephemeral port range or turn IPv6 off without touching
//! the host.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
#[cfg(target_os = "linux")]
use std::process::{Command, Stdio};
#[cfg(target_os = "linux")]
use std::thread;
#[cfg(target_os = "linux")]
use std::time::{Duration, Instant};

#[cfg(target_os = "linux")]
use crate::process::{KillOnDrop, TempPath, find_program};

// ===== addresses =====

/// `127.0.0.1:0`: loopback, a port chosen by the kernel.
pub fn v4_any_port() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, 0))
}

/// `[::1]:0`: loopback, a port chosen by the kernel.
pub fn v6_any_port() -> SocketAddr {
    SocketAddr::from((Ipv6Addr::LOCALHOST, 0))
}

/// `127.0.0.last`.
pub fn lo(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

/// Whether the host has IPv6 on loopback.
pub fn has_ipv6() -> bool {
    std::net::UdpSocket::bind(v6_any_port()).is_ok()
}

/// A loopback port that refuses connections for as long as this lives: a TCP socket bound
/// to it that never listens, so no one else can take the port meanwhile (a test's servers
/// and clients binding port 0 at the same time, say).
#[derive(Debug)]
pub struct RefusingPort {
    _socket: socket2::Socket,
    addr: SocketAddr,
}

impl RefusingPort {
    /// Binds a socket on `127.0.0.1`, on a port the kernel chose, without listening.
    pub fn bind() -> RefusingPort {
        use socket2::{Domain, Socket, Type};
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
        socket
            .bind(&v4_any_port().into())
            .expect("bind 127.0.0.1:0");
        let addr = (socket.local_addr().expect("local_addr").as_socket()).expect("an IP address");
        RefusingPort {
            _socket: socket,
            addr,
        }
    }

    /// The address that refuses.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

// ===== network namespaces =====

/// Runs test `child` of this test binary with `unshare --net`, alone, with `env` set in
/// its environment, and fails when it fails, did not run, or took over 60 s. Returns at
/// once when `env` is set already: inside the namespace only the child test runs. Needs
/// root or CAP_SYS_ADMIN, util-linux and iproute2, and fails, never skips, without them.
#[cfg(target_os = "linux")]
pub fn run_in_namespace(env: &str, child: &str) {
    if std::env::var_os(env).is_some() {
        return; // inside the namespace only the child test runs
    }
    let unshare = find_program("unshare", &["/usr/bin/unshare", "/bin/unshare"])
        .expect("`unshare` not found: install util-linux");
    find_program("ip", &["/usr/sbin/ip", "/sbin/ip"]).expect("`ip` not found: install iproute2");
    let probe = Command::new(&unshare)
        .args(["--net", "true"])
        .output()
        .expect("running unshare");
    assert!(
        probe.status.success(),
        "`unshare --net` is not permitted here ({}): {}\nThis test needs root or \
         CAP_SYS_ADMIN (in a container: --privileged or --cap-add SYS_ADMIN).",
        probe.status,
        String::from_utf8_lossy(&probe.stderr).trim(),
    );

    let output = TempPath::new("netns-child.out");
    let out = std::fs::File::create(output.path()).unwrap();
    let err = out.try_clone().unwrap();
    let mut process = KillOnDrop::spawn(
        Command::new(&unshare)
            .args(["--net", "--kill-child", "--"])
            .arg(std::env::current_exe().unwrap())
            .args(["--exact", child, "--nocapture", "--test-threads=1"])
            .env(env, "1")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err),
    )
    .expect("spawning unshare");
    // Bounded poll for the child test, which has deadlines of its own.
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = process.try_wait() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the namespace test took over 60 s:\n{}",
            output.read()
        );
        thread::sleep(Duration::from_millis(20));
    };
    let log = output.read();
    assert!(status.success(), "the namespace test failed:\n{log}");
    assert!(
        log.contains("test result: ok. 1 passed"),
        "the namespace test did not run:\n{log}"
    );
}

/// In the child test: whether this is the run inside the namespace (`env` is set); if so,
/// brings the namespace's loopback up.
#[cfg(target_os = "linux")]
pub fn in_namespace(env: &str) -> bool {
    if std::env::var_os(env).is_none() {
        return false; // runs only in the namespace
    }
    let up = Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()
        .expect("run ip");
    assert!(up.success(), "ip link set lo up: {up}");
    true
}

// ===== named network namespaces =====

/// A network namespace of its own name under `/run/netns` (`ip netns add`), with loopback
/// up; deleted on drop. A port-forward target `netns:/run/netns/NAME` dials into it. Needs
/// root and iproute2: [`NamedNetns::create`] says why it cannot, for the test to skip.
#[cfg(target_os = "linux")]
#[derive(Debug)]
pub struct NamedNetns {
    name: String,
}

#[cfg(target_os = "linux")]
impl NamedNetns {
    /// Creates `NAME` = `prefix` plus this process's id and a counter, and brings its
    /// loopback up.
    ///
    /// # Errors
    ///
    /// Why it cannot (not root, no `ip`, `ip netns add` failed), for the test to print.
    pub fn create(prefix: &str) -> Result<NamedNetns, String> {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        // SAFETY: geteuid(2) takes no arguments, touches no memory and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return Err("not root: `ip netns add` needs root".to_owned());
        }
        let ip = find_program("ip", &["/usr/sbin/ip", "/sbin/ip"])
            .ok_or("`ip` not found: install iproute2")?;
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("{prefix}-{}-{n}", std::process::id());
        let run = |args: &[&str]| -> Result<(), String> {
            let out = Command::new(&ip)
                .args(args)
                .stdin(Stdio::null())
                .output()
                .map_err(|e| format!("cannot run ip: {e}"))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "`ip {}` failed ({}): {}",
                    args.join(" "),
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ))
            }
        };
        run(&["netns", "add", &name])?;
        let netns = NamedNetns { name };
        run(&["-n", &netns.name, "link", "set", "lo", "up"])?;
        Ok(netns)
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its path, `/run/netns/NAME`: what `netns:` targets name.
    pub fn path(&self) -> std::path::PathBuf {
        std::path::Path::new("/run/netns").join(&self.name)
    }

    /// A listener on `addr` inside the namespace, made on a thread that enters it and ends
    /// (a socket stays in the namespace it was made in, wherever it is used from).
    pub fn listen(&self, addr: SocketAddr) -> std::net::TcpListener {
        let path = self.path();
        thread::spawn(move || {
            use std::os::fd::AsFd as _;
            let ns = std::fs::File::open(&path)
                .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
            rustix::thread::move_into_link_name_space(
                ns.as_fd(),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .unwrap_or_else(|e| panic!("enter {}: {e}", path.display()));
            std::net::TcpListener::bind(addr)
                .unwrap_or_else(|e| panic!("bind {addr} in {}: {e}", path.display()))
        })
        .join()
        .expect("the thread that entered the namespace panicked")
    }
}

#[cfg(target_os = "linux")]
impl Drop for NamedNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .stdin(Stdio::null())
            .output();
    }
}
