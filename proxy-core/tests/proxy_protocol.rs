//! PROXY protocol headers sent to the upstream, read by real consumers: nginx with
//! `listen ... proxy_protocol` answers with the client and destination addresses it parsed
//! (versions 1 and 2); for UDP (version 2), a plain UDP server checks each datagram's
//! header byte for byte and that the client's bytes follow intact.
//!
//! Accepting headers: a trusted peer's header (either version, whole or in pieces) names
//! the client that nginx then sees; a malformed or late one closes the connection; an
//! untrusted peer's bytes pass as they are.
//!
//! nginx comes from `scripts/test.sh` (Debian's nginx-light).
#![cfg(target_os = "linux")]

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use proxy_core::{AcceptProxy, BuildError, ProxyProtocol, TcpForwarder, UdpForwarder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use proxy_testkit::wait::within;
use support::proxy_addr;

const LIMIT: Duration = Duration::from_secs(30);
const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n";
/// The client's source address: not the proxy's own, so a header that named the proxy
/// would show.
const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 5);

/// nginx in the foreground, serving one `proxy_protocol` listener that answers every
/// request with the addresses the PROXY header carried. One process (`master_process
/// off`): killing a master would leave its worker running, listening, for ever.
struct Nginx {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Nginx {
    fn start() -> Nginx {
        let nginx = ["/usr/sbin/nginx", "/usr/bin/nginx"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect("nginx is not installed: run scripts/test.sh, which installs it");
        for _ in 0..10 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let dir =
                std::env::temp_dir().join(format!("proxy-nginx-{}-{port}", std::process::id()));
            std::fs::create_dir_all(dir.join("logs")).unwrap();
            let conf = format!(
                "daemon off;\nmaster_process off;\npid {dir}/nginx.pid;\nerror_log {dir}/logs/error.log;\n\
                 events {{ worker_connections 64; }}\n\
                 http {{\n  access_log off;\n  client_body_temp_path {dir};\n  proxy_temp_path {dir};\n\
                   fastcgi_temp_path {dir};\n  uwsgi_temp_path {dir};\n  scgi_temp_path {dir};\n\
                   server {{\n    listen 127.0.0.1:{port} proxy_protocol;\n\
                     location / {{ return 200 \"$proxy_protocol_addr $proxy_protocol_port $proxy_protocol_server_addr $proxy_protocol_server_port\\n\"; }}\n  }}\n}}\n",
                dir = dir.display()
            );
            std::fs::write(dir.join("nginx.conf"), conf).unwrap();
            let child = Command::new(nginx)
                .arg("-p")
                .arg(&dir)
                .arg("-c")
                .arg(dir.join("nginx.conf"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start nginx");
            let mut n = Nginx { child, port, dir };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = n.child.try_wait() {
                    break; // the port was taken meanwhile: try another
                }
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return n;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = n.child.kill();
        }
        panic!("nginx did not start in 10 tries");
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One HTTP request through the proxy from 127.0.0.5; returns the client's port and
/// nginx's answer body.
async fn request(proxy: SocketAddr) -> (u16, String) {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(IpAddr::V4(CLIENT_IP), 0))
        .unwrap();
    let mut stream = socket.connect(proxy).await.unwrap();
    let port = stream.local_addr().unwrap().port();
    stream.write_all(REQUEST).await.unwrap();
    let mut response = String::new();
    within(
        LIMIT,
        "nginx's answer",
        stream.read_to_string(&mut response),
    )
    .await
    .unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let body = response
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or("")
        .trim()
        .to_owned();
    (port, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_reads_the_real_client_from_versions_1_and_2() {
    let nginx = Nginx::start();
    for version in [ProxyProtocol::V1, ProxyProtocol::V2] {
        let handle = TcpForwarder::builder(["127.0.0.1:0".parse().unwrap()], nginx.addr().into())
            .proxy_protocol(version)
            .build()
            .unwrap()
            .start()
            .unwrap();
        let proxy = proxy_addr(&handle);
        for _ in 0..3 {
            let (client_port, body) = request(proxy).await;
            assert_eq!(
                body,
                format!("{CLIENT_IP} {client_port} 127.0.0.1 {}", proxy.port()),
                "{version:?}"
            );
        }
        // The header is not the client's: it is not counted as relayed bytes.
        let s = handle.stats();
        assert_eq!(
            s.bytes_to_upstream,
            3 * REQUEST.len() as u64,
            "{version:?}: {s:#?}"
        );
        handle.shutdown(Duration::from_secs(5)).await;
    }
}

/// UDP: every datagram reaches the upstream behind a version 2 header (UDP over IPv4)
/// naming the client and the address it sent to; the replies come back without one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_datagrams_carry_a_version_2_header() {
    let upstream = proxy_testkit::udp::UdpServer::echo_on("127.0.0.1:0".parse().unwrap());
    let handle = UdpForwarder::builder(["127.0.0.1:0".parse().unwrap()], upstream.addr().into())
        .proxy_protocol(ProxyProtocol::V2)
        .build()
        .unwrap()
        .start()
        .unwrap();
    let proxy = proxy_addr(&handle);
    let client = std::net::UdpSocket::bind((CLIENT_IP, 0)).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let from = client.local_addr().unwrap();
    let mut want_header = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    want_header.extend_from_slice(&[0x21, 0x12, 0, 12]);
    want_header.extend_from_slice(&CLIENT_IP.octets());
    want_header.extend_from_slice(&[127, 0, 0, 1]);
    want_header.extend_from_slice(&from.port().to_be_bytes());
    want_header.extend_from_slice(&proxy.port().to_be_bytes());
    let mut buf = [0u8; 2048];
    for (i, size) in [0usize, 1, 100, 1400].into_iter().enumerate() {
        let data = proxy_testkit::data::payload(i as u64, size);
        // The echo returns header and data: the reply shows what the upstream received.
        let echoed = (0..5)
            .find_map(|_| {
                client.send_to(&data, proxy).unwrap();
                client.recv(&mut buf).ok()
            })
            .expect("an echo");
        let got = &buf[..echoed];
        assert_eq!(&got[..want_header.len()], &want_header[..], "datagram {i}");
        assert_eq!(&got[want_header.len()..], &data[..], "datagram {i}");
    }
    let s = handle.stats();
    assert_eq!(s.bytes_to_upstream, 1501, "the client's bytes only: {s:#?}");
}

#[test]
fn version_1_is_refused_for_udp() {
    let e = UdpForwarder::builder(
        ["127.0.0.1:0".parse().unwrap()],
        "127.0.0.1:53".parse().unwrap(),
    )
    .proxy_protocol(ProxyProtocol::V1)
    .build()
    .unwrap_err();
    assert_eq!(e, BuildError::ProxyProtocolV1Udp);
}

/// A forwarder to nginx that sends version 2 and reads headers from 127.0.0.1 only.
fn accepting(nginx: &Nginx, timeout: Duration) -> proxy_core::ForwarderHandle {
    TcpForwarder::builder(["127.0.0.1:0".parse().unwrap()], nginx.addr().into())
        .proxy_protocol(ProxyProtocol::V2)
        .accept_proxy(AcceptProxy::new(["127.0.0.1/32".parse().unwrap()]).timeout(timeout))
        .build()
        .unwrap()
        .start()
        .unwrap()
}

/// Sends `pieces` from 127.0.0.1 (a trusted peer), 20 ms apart, then the request; returns
/// what came back.
async fn through(proxy: SocketAddr, pieces: &[&[u8]]) -> String {
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    for piece in pieces {
        stream.write_all(piece).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stream.write_all(REQUEST).await.unwrap();
    let mut response = String::new();
    within(LIMIT, "an answer", stream.read_to_string(&mut response))
        .await
        .unwrap();
    response
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_peers_header_names_the_client_nginx_sees() {
    let nginx = Nginx::start();
    let handle = accepting(&nginx, Duration::from_secs(5));
    let proxy = proxy_addr(&handle);
    let v1 = format!("PROXY TCP4 203.0.113.7 198.51.100.1 4242 {}\r\n", 443);
    let mut v2 = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    v2.extend_from_slice(&[0x21, 0x21, 0, 36]);
    v2.extend_from_slice(
        &"2001:db8::7"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    v2.extend_from_slice(
        &"2001:db8::1"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    v2.extend_from_slice(&[0x10, 0x92, 0x01, 0xbb]);
    let cases: [(Vec<&[u8]>, &str); 3] = [
        (vec![v1.as_bytes()], "203.0.113.7 4242 198.51.100.1 443"),
        (vec![&v2], "2001:db8::7 4242 2001:db8::1 443"),
        // In pieces: the signature, the rest of the header.
        (
            vec![&v2[..10], &v2[10..30], &v2[30..]],
            "2001:db8::7 4242 2001:db8::1 443",
        ),
    ];
    for (pieces, want) in cases {
        let response = through(proxy, &pieces).await;
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(
            response.ends_with(&format!("{want}\n")),
            "{want}: {response}"
        );
    }
    let s = handle.stats();
    assert_eq!(s.proxy_headers_rejected, 0);
    // The headers' bytes are not relayed; the requests are.
    assert_eq!(s.bytes_to_upstream, 3 * REQUEST.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_or_late_headers_close_the_connection_and_untrusted_peers_pass() {
    let nginx = Nginx::start();
    let handle = accepting(&nginx, Duration::from_millis(300));
    let proxy = proxy_addr(&handle);
    // Malformed, or no header at all from a trusted peer: closed without an answer.
    for bad in [
        &b"PROXY TCP4 1.2.3.4 nope 1 2\r\n"[..],
        b"GET / HTTP/1.1\r\n",
    ] {
        let mut stream = TcpStream::connect(proxy).await.unwrap();
        stream.write_all(bad).await.unwrap();
        let mut got = Vec::new();
        let _ = within(LIMIT, "the close", stream.read_to_end(&mut got)).await;
        assert!(got.is_empty(), "{:?}", String::from_utf8_lossy(&got));
    }
    // Slowloris: half a header, then nothing; closed after the 300 ms timeout.
    let started = Instant::now();
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    stream.write_all(b"PROXY TCP4 1.2").await.unwrap();
    let mut got = Vec::new();
    let _ = within(LIMIT, "the close", stream.read_to_end(&mut got)).await;
    assert!(got.is_empty());
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    assert_eq!(handle.stats().proxy_headers_rejected, 3);
    assert_eq!(handle.stats().connect_failures.total(), 0);
    assert_eq!(handle.stats().bytes_to_upstream, 0, "nothing reached nginx");
    // An untrusted peer (127.0.0.5) sends no header; nginx sees it as the client.
    let (client_port, body) = request(proxy).await;
    assert_eq!(
        body,
        format!("{CLIENT_IP} {client_port} 127.0.0.1 {}", proxy.port())
    );
}

/// A forwarder that reads headers from 127.0.0.1, running alone on a current-thread
/// runtime in a thread of its own: one worker, which a connection that never yields would
/// take whole. Dropping it stops the runtime, without waiting for a thread that may spin.
struct OneWorker {
    addr: SocketAddr,
    stats: proxy_core::StatsReader,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl OneWorker {
    fn start(target: SocketAddr, header_timeout: Duration) -> OneWorker {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let handle = TcpForwarder::builder(["127.0.0.1:0".parse().unwrap()], target.into())
                    .accept_proxy(
                        AcceptProxy::new(["127.0.0.1/32".parse().unwrap()]).timeout(header_timeout),
                    )
                    .build()
                    .unwrap()
                    .start()
                    .unwrap();
                ready_tx
                    .send((proxy_addr(&handle), handle.stats_reader()))
                    .unwrap();
                let _ = stopped.await;
                handle.shutdown(Duration::ZERO).await;
            });
        });
        let (addr, stats) = ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the forwarder started");
        OneWorker {
            addr,
            stats,
            stop: Some(stop),
        }
    }
}

impl Drop for OneWorker {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A trusted peer that sends part of a header (or a port scanner's bare CRLFs) and then
/// its FIN can never complete it: the connection is rejected at once, well within the
/// header timeout, and counted. Meanwhile the forwarder's only worker stays free: a peer
/// with a whole header is served. (It used to spin on the FIN's lasting readiness,
/// taking the worker for good.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incomplete_header_then_fin_is_rejected_and_the_worker_stays_free() {
    let upstream = proxy_testkit::echo::echo_server().await;
    let header_timeout = Duration::from_secs(3);
    let forwarder = OneWorker::start(upstream.addr(), header_timeout);
    let started = Instant::now();
    let v2_part = b"\r\n\r\n\0\r\nQUIT\n\x21\x11";
    let mut rejected = Vec::new();
    for part in [&b"PROXY TCP4 1.2.3.4"[..], b"\r\n\r\n", v2_part] {
        let mut stream = TcpStream::connect(forwarder.addr).await.unwrap();
        stream.write_all(part).await.unwrap();
        stream.shutdown().await.unwrap();
        rejected.push(stream);
    }
    let mut good = TcpStream::connect(forwarder.addr).await.unwrap();
    good.write_all(b"PROXY TCP4 203.0.113.7 198.51.100.1 4242 443\r\nhello")
        .await
        .unwrap();
    let mut back = [0u8; 5];
    within(
        Duration::from_secs(2),
        "the echo through the only worker",
        good.read_exact(&mut back),
    )
    .await
    .unwrap();
    assert_eq!(&back, b"hello");
    for (i, mut stream) in rejected.into_iter().enumerate() {
        let mut got = Vec::new();
        let _ = within(
            Duration::from_secs(2),
            "the close of a peer with half a header",
            stream.read_to_end(&mut got),
        )
        .await;
        assert!(got.is_empty(), "{i}: {got:?}");
    }
    let waited = started.elapsed();
    assert!(waited < header_timeout, "rejected after {waited:?}");
    proxy_testkit::wait::eventually("3 headers rejected", Duration::from_secs(2), || {
        forwarder.stats.stats().proxy_headers_rejected == 3
    })
    .await;
    let s = forwarder.stats.stats();
    assert_eq!(s.bytes_to_upstream, 5, "only the good peer's bytes: {s:#?}");
}
