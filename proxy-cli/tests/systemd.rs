//! Socket activation and readiness notification, with the sockets passed the way systemd
//! passes them: `systemd-socket-activate` (from Debian's `systemd` package) binds, waits
//! for the first connection or datagram, then execs `proxy` with `LISTEN_PID`,
//! `LISTEN_FDS` and the sockets as descriptors 3, 4, ... The tests fail where
//! `systemd-socket-activate` is not installed; scripts/test.sh installs it.
#![cfg(target_os = "linux")]

mod support;

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::Command;

use proxy_testkit::blocking::{Echo, UdpEcho, connect, echo_through, udp_client, udp_echo};
use proxy_testkit::data::payload;
use support::proxy::{PROMPT, PROXY, Proto, Proxy};

const ACTIVATE: &str = "systemd-socket-activate";

/// Whether `systemd-socket-activate` can run here; fails the test when it cannot, so a
/// machine without it cannot pass for one that tested socket activation.
fn have_activate() -> bool {
    let found = Command::new(ACTIVATE)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "{ACTIVATE} is not installed: install Debian's `systemd` package (scripts/test.sh does it)"
    );
    found
}

/// A TCP listener and a UDP socket on the same port of 127.0.0.1, chosen by the kernel.
fn same_port_pair() -> (TcpListener, UdpSocket) {
    for _ in 0..20 {
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        if let Ok(udp) = UdpSocket::bind(("127.0.0.1", port)) {
            return (tcp, udp);
        }
    }
    panic!("no port free for both TCP and UDP");
}

/// A port that was free a moment ago on 127.0.0.1, for TCP and for UDP, for
/// systemd-socket-activate to bind.
fn free_port() -> u16 {
    same_port_pair().0.local_addr().unwrap().port()
}

/// A datagram socket standing in for systemd's notification socket, at a fresh path.
struct NotifySocket {
    dir: PathBuf,
    path: PathBuf,
    socket: UnixDatagram,
}

impl NotifySocket {
    fn new(test: &str) -> NotifySocket {
        let dir = std::env::temp_dir().join(format!("proxy-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket.set_read_timeout(Some(PROMPT)).unwrap();
        NotifySocket { dir, path, socket }
    }

    /// `-E NOTIFY_SOCKET=PATH`.
    fn env(&self) -> String {
        format!("NOTIFY_SOCKET={}", self.path.display())
    }

    /// The next notification; fails the test when none comes within [`PROMPT`].
    fn recv(&self) -> String {
        let mut buf = [0u8; 4096];
        let n = self
            .socket
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("no notification within {PROMPT:?}: {e}"));
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `systemd-socket-activate ACTIVATE_ARGS -- proxy PROXY_ARGS --log-level debug`, once it
/// listens on every one of `listening` (`127.0.0.1:PORT` each).
fn activate(activate_args: &[&str], proxy_args: &[&str], listening: usize) -> Proxy {
    let mut cmd = Command::new(ACTIVATE);
    cmd.args(activate_args)
        .arg("--")
        .arg(PROXY)
        .args(proxy_args)
        .args(["--log-level", "debug"]);
    let proxy = Proxy::spawn(cmd);
    proxy
        .wait_stderr(PROMPT, |lines| {
            let n = lines
                .iter()
                .filter(|l| l.starts_with("Listening on"))
                .count();
            (n >= listening).then_some(())
        })
        .unwrap_or_else(|| panic!("{ACTIVATE} did not listen:\n{}", proxy.stderr()));
    proxy
}

/// Waits for READY=1, with a status line containing `want_status`, and for the log line
/// saying a passed socket was taken.
fn expect_ready(proxy: &Proxy, notify: &NotifySocket, want_status: &str) {
    let ready = notify.recv();
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready:?}");
    assert!(
        ready
            .lines()
            .any(|l| l.starts_with("STATUS=") && l.contains(want_status)),
        "{ready:?} lacks {want_status:?}"
    );
    proxy.expect_line("'listening on a socket passed by systemd'", |l| {
        l.contains("listening on a socket passed by systemd")
    });
}

/// SIGTERM: STOPPING=1, then a clean exit.
fn expect_stopping(mut proxy: Proxy, notify: &NotifySocket) {
    proxy.signal("TERM");
    let stopping = notify.recv();
    assert!(stopping.lines().any(|l| l == "STOPPING=1"), "{stopping:?}");
    let status = proxy.wait_exit(PROMPT);
    assert!(status.success(), "{status:?}\n{}", proxy.stderr());
}

#[test]
fn tcp_listener_from_systemd() {
    if !have_activate() {
        return;
    }
    let echo = Echo::start("127.0.0.1");
    let target = echo.addr.to_string();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let notify = NotifySocket::new("tcp-activation");
    let env = notify.env();
    // PORT 0 and no --listen: the socket systemd passed is the only listener.
    let proxy = activate(&["-l", &listen, "-E", &env], &["tcp", "0", &target], 1);
    // The first connection wakes systemd-socket-activate, which execs proxy; it waits in
    // the passed socket's backlog until proxy accepts it.
    let data = payload(1, 256 * 1024);
    let addr: SocketAddr = listen.parse().unwrap();
    assert_eq!(echo_through(connect(addr), &data), data);
    expect_ready(&proxy, &notify, &format!("tcp:{port}"));
    assert_eq!(proxy.proto_listen_addr(Proto::Tcp, &target), addr);
    // And later connections.
    let data = payload(2, 4096);
    assert_eq!(echo_through(connect(addr), &data), data);
    expect_stopping(proxy, &notify);
}

#[test]
fn udp_socket_from_systemd() {
    if !have_activate() {
        return;
    }
    let echo = UdpEcho::start("127.0.0.1");
    let target = echo.addr.to_string();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let notify = NotifySocket::new("udp-activation");
    let env = notify.env();
    let proxy = activate(
        &["--datagram", "-l", &listen, "-E", &env],
        &["udp", "0", &target, "5"],
        1,
    );
    // The first datagram wakes systemd-socket-activate and stays queued for proxy.
    let client = udp_client(listen.parse().unwrap());
    let first = payload(3, 1200);
    assert_eq!(udp_echo(&client, &first), first);
    expect_ready(&proxy, &notify, &format!("udp:{port}"));
    let big = payload(4, 60_000);
    assert_eq!(udp_echo(&client, &big), big);
    expect_stopping(proxy, &notify);
}

/// `proxy tcp,udp` with a stream and a datagram socket: one systemd-socket-activate per
/// socket kind, the outer passing its socket through the inner, as a `.socket` unit with
/// `ListenStream=` and `ListenDatagram=` would pass both.
#[test]
fn tcp_and_udp_sockets_from_systemd() {
    if !have_activate() {
        return;
    }
    // One upstream address for both protocols.
    let (tcp_upstream, udp_upstream) = same_port_pair();
    let echo = Echo::serve(tcp_upstream);
    let _udp_echo = UdpEcho::serve(udp_upstream);
    let target = echo.addr.to_string();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let notify = NotifySocket::new("tcp-udp-activation");
    let env = notify.env();
    let mut cmd = Command::new(ACTIVATE);
    cmd.args([
        "-l",
        &listen,
        "--",
        ACTIVATE,
        "--datagram",
        "-l",
        &listen,
        "-E",
        &env,
    ])
    .arg("--")
    .arg(PROXY)
    .args(["tcp,udp", "0", &target, "--log-level", "debug"]);
    let proxy = Proxy::spawn(cmd);
    let addr: SocketAddr = listen.parse().unwrap();
    proxy
        .wait_stderr(PROMPT, |l| {
            l.iter()
                .any(|l| l.starts_with("Listening on"))
                .then_some(())
        })
        .expect("outer listens");
    // Wakes the outer one; the connection waits in the backlog.
    let conn = connect(addr);
    proxy
        .wait_stderr(PROMPT, |l| {
            (l.iter().filter(|l| l.starts_with("Listening on")).count() >= 2).then_some(())
        })
        .expect("inner listens");
    // Wakes the inner one, which execs proxy with both sockets.
    let client = udp_client(addr);
    client.send(b"wake").unwrap();
    let data = payload(5, 64 * 1024);
    assert_eq!(echo_through(conn, &data), data);
    expect_ready(&proxy, &notify, &format!("tcp:{port}"));
    let ready_lines = proxy.stderr();
    assert!(
        ready_lines.contains(&format!("udp {listen}")),
        "{ready_lines}"
    );
    // The queued "wake" datagram was forwarded too; its echo comes first.
    let mut buf = [0u8; 16];
    let n = client.recv(&mut buf).expect("echo of the first datagram");
    assert_eq!(&buf[..n], b"wake");
    let d = payload(6, 1000);
    assert_eq!(udp_echo(&client, &d), d);
    expect_stopping(proxy, &notify);
}

#[test]
fn socket_of_the_wrong_protocol_is_refused() {
    if !have_activate() {
        return;
    }
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut proxy = activate(
        &["--datagram", "-l", &listen],
        &["tcp", "0", "127.0.0.1:9"],
        1,
    );
    let client = udp_client(listen.parse().unwrap());
    client.send(b"wake").unwrap();
    let status = proxy.wait_exit(PROMPT);
    let stderr = proxy.stderr();
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("systemd passed a udp {listen} socket"))
            && stderr.contains("`proxy tcp` cannot forward"),
        "{stderr}"
    );
}

#[test]
fn not_activated_without_listen_pid_of_its_own() {
    // LISTEN_FDS for another process: proxy binds PORT as usual and leaves fd 3 alone.
    let echo = Echo::start("127.0.0.1");
    let target = echo.addr.to_string();
    let mut cmd = Command::new(PROXY);
    cmd.args(["tcp", "0", &target, "--listen", "127.0.0.1"])
        .env("LISTEN_PID", "1")
        .env("LISTEN_FDS", "1")
        .env_remove("RUST_LOG")
        .env_remove("NOTIFY_SOCKET");
    let proxy = Proxy::spawn(cmd);
    let addr = proxy.listen_addr(&target);
    let data = payload(7, 1000);
    assert_eq!(echo_through(connect(addr), &data), data);
    assert!(!proxy.stderr().contains("passed by systemd"));
}

/// `LISTEN_FDS=3` when one socket was passed: descriptors 4 and 5 are not systemd's.
/// The count is refused, naming the first descriptor that is not open, and the proxy
/// exits 1 without taking descriptors of its own. (Taken once the runtime was up, they
/// were its epoll and wake-up descriptors: closing them made it panic with "failed to
/// wake I/O driver: Bad file descriptor".)
#[test]
fn an_overstated_listen_fds_takes_no_descriptor_of_the_process() {
    if !have_activate() {
        return;
    }
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    for (command, args) in [
        ("tcp", &["tcp", "0", "127.0.0.1:9"][..]),
        ("udp", &["udp", "0", "127.0.0.1:9"][..]),
        ("tcp,udp", &["tcp,udp", "0", "127.0.0.1:9"][..]),
    ] {
        let mut proxy = activate(&["-l", &listen, "-E", "LISTEN_FDS=3"], args, 1);
        // Wake systemd-socket-activate, which then execs proxy.
        let _client = connect(listen.parse().unwrap());
        let status = proxy.wait_exit(PROMPT);
        let stderr = proxy.stderr();
        assert_eq!(status.code(), Some(1), "{command}: {stderr}");
        assert!(
            stderr.contains("cannot take the sockets passed by systemd")
                && stderr.contains("LISTEN_FDS: descriptor 4 is not open"),
            "{command}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{command}: {stderr}");
    }
}
