//! `TargetDialer`: a pod's port on a host, and inside a network namespace the test makes
//! (which needs root and iproute2, as the namespace tests of the other crates do).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use proxy_portforward::dial::{Dial, TargetDialer};
use proxy_portforward::objects::{Pod, PodTarget};
use proxy_testkit::net::RefusingPort;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const LIMIT: Duration = Duration::from_secs(5);

/// Accepts one connection on `listener` and echoes it until EOF, on a thread.
fn echo_once(listener: TcpListener) -> std::thread::JoinHandle<SocketAddr> {
    std::thread::spawn(move || {
        let (mut conn, peer) = listener.accept().expect("accept");
        let mut buf = [0u8; 4096];
        loop {
            match conn.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => conn.write_all(&buf[..n]).expect("echo"),
            }
        }
        peer
    })
}

async fn round_trip(stream: &mut tokio::net::TcpStream) {
    stream.write_all(b"hello pod").await.unwrap();
    let mut back = [0u8; 9];
    tokio::time::timeout(LIMIT, stream.read_exact(&mut back))
        .await
        .expect("echo in time")
        .unwrap();
    assert_eq!(&back, b"hello pod");
}

#[tokio::test]
async fn a_host_target_connects_to_the_stream_s_port() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let echo = echo_once(listener);
    let dialer = TargetDialer::new(LIMIT);
    let pod: Pod = "web=127.0.0.1".parse().unwrap();
    let mut stream = dialer.dial(&pod, port).await.expect("dial");
    round_trip(&mut stream).await;
    drop(stream);
    echo.join().unwrap();

    let refusing = RefusingPort::bind();
    let refused = refusing.addr();
    let e = dialer
        .connect(&PodTarget::Host("127.0.0.1".into()), refused.port())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");
    let e = dialer
        .connect(&PodTarget::Host("no-such-host.invalid".into()), 80)
        .await
        .unwrap_err();
    assert!(!e.to_string().is_empty());
}

/// A network namespace made with `ip netns add`, deleted on drop.
struct Netns {
    name: String,
}

impl Netns {
    fn new(tag: &str) -> Netns {
        let name = format!("pf-{tag}-{}", std::process::id());
        ip(&["netns", "add", &name]);
        let ns = Netns { name };
        ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }

    fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// A listener on the namespace's 127.0.0.1, bound from a thread that enters it and
    /// ends (the listener stays in the namespace).
    fn listen(&self) -> TcpListener {
        let path = self.path();
        std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).expect("open the namespace");
            rustix::thread::move_into_link_name_space(
                ns.as_fd(),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .expect("enter the namespace");
            TcpListener::bind("127.0.0.1:0").expect("bind in the namespace")
        })
        .join()
        .unwrap()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new(ip_path())
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn ip_path() -> &'static str {
    if std::path::Path::new("/usr/sbin/ip").exists() {
        "/usr/sbin/ip"
    } else {
        "ip"
    }
}

fn ip(args: &[&str]) {
    let out = Command::new(ip_path())
        .args(args)
        .output()
        .expect("run ip (iproute2; the tests need it, and root)");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn a_netns_target_reaches_the_namespace_s_loopback_without_moving_a_runtime_thread() {
    let ns = Netns::new("dial");
    let listener = ns.listen();
    let port = listener.local_addr().unwrap().port();
    let echo = echo_once(listener);
    let dialer = TargetDialer::new(LIMIT);
    let target = PodTarget::Netns(ns.path());
    let mut stream = dialer
        .connect(&target, port)
        .await
        .expect("dial into the namespace");
    round_trip(&mut stream).await;
    drop(stream);
    assert!(echo.join().unwrap().ip().is_loopback());
    // This thread, the runtime's, is still in the process's namespace.
    let here = std::fs::read_link("/proc/thread-self/ns/net").unwrap();
    assert_eq!(here, std::fs::read_link("/proc/self/ns/net").unwrap());

    // Nothing listens there any more: refused, by the namespace's loopback.
    let e = dialer.connect(&target, port).await.unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");

    // A namespace that does not exist is named in the error.
    let missing = PodTarget::Netns("/run/netns/no-such-namespace".into());
    let e = dialer.connect(&missing, port).await.unwrap_err();
    assert!(
        e.to_string().contains("/run/netns/no-such-namespace"),
        "{e}"
    );
}

/// Echoes one datagram on `socket`, on a thread, and returns its source.
fn echo_datagram(socket: std::net::UdpSocket) -> std::thread::JoinHandle<SocketAddr> {
    std::thread::spawn(move || {
        socket.set_read_timeout(Some(LIMIT)).unwrap();
        let mut buf = [0u8; 2048];
        let (n, from) = socket.recv_from(&mut buf).expect("a datagram");
        socket.send_to(&buf[..n], from).expect("echo");
        from
    })
}

async fn datagram_round_trip(socket: &tokio::net::UdpSocket) {
    socket.send(b"hello pod").await.unwrap();
    let mut back = [0u8; 64];
    let n = tokio::time::timeout(LIMIT, socket.recv(&mut back))
        .await
        .expect("echo in time")
        .unwrap();
    assert_eq!(&back[..n], b"hello pod");
}

#[tokio::test]
async fn a_host_target_connects_a_udp_socket_to_the_stream_s_port() {
    let pod_socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let pod_addr = pod_socket.local_addr().unwrap();
    let echo = echo_datagram(pod_socket);
    let dialer = TargetDialer::new(LIMIT);
    let pod: Pod = "web=127.0.0.1".parse().unwrap();
    let socket = dialer.dial_udp(&pod, pod_addr.port()).await.expect("dial");
    assert_eq!(socket.peer_addr().unwrap(), pod_addr);
    datagram_round_trip(&socket).await;
    assert_eq!(echo.join().unwrap(), socket.local_addr().unwrap());
}

/// A dialer of the embedder's that only says how to reach TCP ports refuses UDP.
#[tokio::test]
async fn a_dialer_reaches_no_udp_port_unless_it_says_so() {
    struct TcpOnly;
    impl Dial for TcpOnly {
        fn dial(&self, _pod: &Pod, _port: u16) -> proxy_portforward::dial::Dialing {
            Box::pin(async { Err(std::io::Error::other("unused")) })
        }
    }
    let pod: Pod = "web=127.0.0.1".parse().unwrap();
    let e = TcpOnly.dial_udp(&pod, 53).await.unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::Unsupported);
    assert_eq!(e.to_string(), "this dialer does not reach UDP ports");
}

#[tokio::test]
async fn a_netns_target_connects_a_udp_socket_inside_the_namespace() {
    let ns = Netns::new("udp");
    let path = ns.path();
    let pod_socket = std::thread::spawn(move || {
        let ns = std::fs::File::open(&path).expect("open the namespace");
        rustix::thread::move_into_link_name_space(
            ns.as_fd(),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .expect("enter the namespace");
        std::net::UdpSocket::bind("127.0.0.1:0").expect("bind in the namespace")
    })
    .join()
    .unwrap();
    let port = pod_socket.local_addr().unwrap().port();
    let echo = echo_datagram(pod_socket);
    let dialer = TargetDialer::new(LIMIT);
    let socket = dialer
        .connect_udp(&PodTarget::Netns(ns.path()), port)
        .await
        .expect("dial into the namespace");
    datagram_round_trip(&socket).await;
    assert!(echo.join().unwrap().ip().is_loopback());
    // This thread, the runtime's, is still in the process's namespace.
    let here = std::fs::read_link("/proc/thread-self/ns/net").unwrap();
    assert_eq!(here, std::fs::read_link("/proc/self/ns/net").unwrap());
}
