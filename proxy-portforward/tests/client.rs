//! The client side (`client`) against the crate's own `server::Server` on loopback TCP,
//! in all three protocols, forwarding to the test kit's echo servers.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use proxy_portforward::channel::{ALL_PROTOCOLS, Protocol};
use proxy_portforward::client::{
    ChannelStream, SpdySession, UpgradeError, upgrade_spdy, upgrade_websocket,
};
use proxy_portforward::objects::{Cluster, Pod};
use proxy_portforward::server::{Listening, Server};
use proxy_testkit::data::{assert_bytes, payload};
use proxy_testkit::echo::{self, echo_server, listener};
use proxy_testkit::net::RefusingPort;
use proxy_testkit::wait::{eventually, within};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

const LIMIT: Duration = Duration::from_secs(30);
const PATH: &str = "/api/v1/namespaces/default/pods/web/portforward";
const TUNNEL: &str = "SPDY/3.1+portforward.k8s.io";

trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

#[derive(Clone, Copy, Debug)]
enum Wire {
    Spdy,
    Tunnel,
    Channels,
}

fn cluster() -> Cluster {
    let mut cluster = Cluster::default();
    cluster
        .add_pod("web=127.0.0.1".parse::<Pod>().unwrap())
        .unwrap();
    cluster
}

/// A server for pod `web` (channel protocols with v5, for half-close), listening.
async fn node() -> Listening {
    Server::builder(cluster())
        .channel_protocols(ALL_PROTOCOLS)
        .build()
        .bind("127.0.0.1:0".parse().unwrap(), None)
        .await
        .unwrap()
}

async fn spdy_session(addr: SocketAddr, wire: Wire) -> SpdySession {
    let tcp = TcpStream::connect(addr).await.unwrap();
    match wire {
        Wire::Spdy => SpdySession::new(upgrade_spdy(tcp, PATH, &[]).await.unwrap()),
        Wire::Tunnel => {
            let (ws, protocol) = upgrade_websocket(tcp, PATH, &[TUNNEL], &[]).await.unwrap();
            assert_eq!(protocol, TUNNEL);
            SpdySession::tunnel(ws)
        }
        Wire::Channels => unreachable!("no session"),
    }
}

async fn channel_stream(addr: SocketAddr, port: u16, offer: &str) -> io::Result<Box<dyn Io>> {
    let tcp = TcpStream::connect(addr).await?;
    let path = format!("{PATH}?ports={port}");
    let (ws, protocol) = upgrade_websocket(tcp, &path, &[offer], &[]).await?;
    let protocol = Protocol::from_name(&protocol).unwrap();
    Ok(Box::new(ChannelStream::connect(ws, protocol, port).await?))
}

/// One forwarded connection to `port` (a new session for SPDY and the tunnel).
async fn forwarded(addr: SocketAddr, wire: Wire, port: u16) -> (Box<dyn Io>, Option<SpdySession>) {
    match wire {
        Wire::Channels => {
            let s = channel_stream(addr, port, "v5.channel.k8s.io").await;
            (s.unwrap(), None)
        }
        _ => {
            let session = spdy_session(addr, wire).await;
            (Box::new(session.open(port).await.unwrap()), Some(session))
        }
    }
}

/// Sends `data` while reading it back, then shuts down.
async fn echo_through(stream: Box<dyn Io>, data: &[u8]) {
    let (mut rd, mut wr) = tokio::io::split(stream);
    let sending = {
        let data = data.to_vec();
        tokio::spawn(async move {
            wr.write_all(&data).await.unwrap();
            wr
        })
    };
    let mut back = vec![0; data.len()];
    rd.read_exact(&mut back).await.unwrap();
    let mut wr = sending.await.unwrap();
    assert_bytes("echoed", &back, data);
    wr.shutdown().await.unwrap();
}

async fn eight_mib(wire: Wire) {
    let pod = echo_server().await;
    let node = node().await;
    let (stream, _session) = forwarded(node.local_addr(), wire, pod.addr().port()).await;
    within(
        LIMIT,
        "8 MiB echoed",
        echo_through(stream, &payload(7, 8 << 20)),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_mib_echoed_byte_exact_over_spdy() {
    eight_mib(Wire::Spdy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_mib_echoed_byte_exact_over_the_tunnel() {
    eight_mib(Wire::Tunnel).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_mib_echoed_byte_exact_over_channels() {
    eight_mib(Wire::Channels).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_streams_on_one_spdy_session() {
    let pod = echo_server().await;
    let node = node().await;
    let session = spdy_session(node.local_addr(), Wire::Spdy).await;
    let mut set = JoinSet::new();
    for i in 0..50 {
        let stream = session.open(pod.addr().port()).await.unwrap();
        let data = payload(i, 200_000);
        set.spawn(async move { echo_through(Box::new(stream), &data).await });
    }
    within(LIMIT, "50 streams", async {
        while let Some(r) = set.join_next().await {
            r.unwrap();
        }
    })
    .await;
}

async fn client_half_close(wire: Wire) {
    let pod = echo_server().await;
    let node = node().await;
    let (mut stream, _session) = forwarded(node.local_addr(), wire, pod.addr().port()).await;
    stream.write_all(b"hello, pod").await.unwrap();
    stream.shutdown().await.unwrap();
    let mut back = Vec::new();
    within(LIMIT, "the reply", stream.read_to_end(&mut back))
        .await
        .unwrap();
    assert_eq!(back, b"hello, pod");
}

#[tokio::test]
async fn after_the_clients_shutdown_the_reply_still_arrives_over_spdy() {
    client_half_close(Wire::Spdy).await;
}

#[tokio::test]
async fn after_the_clients_shutdown_the_reply_still_arrives_over_the_tunnel() {
    client_half_close(Wire::Tunnel).await;
}

#[tokio::test]
async fn after_the_clients_shutdown_the_reply_still_arrives_over_channels_v5() {
    client_half_close(Wire::Channels).await;
}

async fn pod_closes_first(wire: Wire) {
    let pod = echo::Server::spawn(listener().await, |mut s: TcpStream| async move {
        let _ = s.write_all(b"bye").await;
        let _ = s.shutdown().await;
        // Keep reading what the client sends after our FIN.
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink).await;
    });
    let node = node().await;
    let (mut stream, _session) = forwarded(node.local_addr(), wire, pod.addr().port()).await;
    let mut got = Vec::new();
    within(LIMIT, "the pod's FIN", stream.read_to_end(&mut got))
        .await
        .unwrap();
    assert_eq!(got, b"bye");
    stream.write_all(b"still here").await.unwrap();
    stream.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_pod_closing_first_is_an_eof_and_writing_goes_on_over_spdy() {
    pod_closes_first(Wire::Spdy).await;
}

#[tokio::test]
async fn the_pod_closing_first_is_an_eof_and_writing_goes_on_over_channels_v5() {
    pod_closes_first(Wire::Channels).await;
}

#[tokio::test]
async fn a_refused_port_fails_that_stream_only_with_the_kubelets_text() {
    let pod = echo_server().await;
    let refusing = RefusingPort::bind();
    let node = node().await;
    for wire in [Wire::Spdy, Wire::Tunnel] {
        let session = spdy_session(node.local_addr(), wire).await;
        let mut good = session.open(pod.addr().port()).await.unwrap();
        let mut bad = session.open(refusing.port()).await.unwrap();
        let mut buf = [0; 16];
        let err = within(LIMIT, "the error", bad.read(&mut buf))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::Other, "{wire:?}: {err}");
        let text = err.to_string();
        assert!(
            text.contains("error forwarding port") && text.contains("Connection refused"),
            "{wire:?}: {text}"
        );
        assert!(text.contains(&refusing.port().to_string()), "{text}");
        assert_eq!(bad.error().await.unwrap().as_deref(), Some(text.as_str()));
        drop(bad);
        good.write_all(b"still fine").await.unwrap();
        let mut back = [0; 10];
        within(LIMIT, "the echo", good.read_exact(&mut back))
            .await
            .unwrap();
        assert_eq!(&back, b"still fine");
        assert!(!session.is_closed());
    }
    let err = channel_stream(node.local_addr(), refusing.port(), "v4.channel.k8s.io").await;
    let mut stream = match err {
        Ok(stream) => stream,
        Err(e) => panic!("the prefixes come before the error: {e}"),
    };
    let err = stream.read(&mut [0; 16]).await.unwrap_err();
    assert!(err.to_string().contains("error forwarding port"), "{err}");
}

#[tokio::test]
async fn an_unknown_pod_is_a_404_with_the_status_message() {
    let node = node().await;
    let path = "/api/v1/namespaces/default/pods/nope/portforward";
    let tcp = TcpStream::connect(node.local_addr()).await.unwrap();
    let err = upgrade_spdy(tcp, path, &[]).await.unwrap_err();
    match &err {
        UpgradeError::Refused { status, message } => {
            assert_eq!(status.as_u16(), 404);
            assert_eq!(message, r#"pods "nope" not found"#);
        }
        e => panic!("{e}"),
    }
    let tcp = TcpStream::connect(node.local_addr()).await.unwrap();
    let err = upgrade_websocket(tcp, &format!("{path}?ports=80"), &[TUNNEL], &[])
        .await
        .unwrap_err();
    assert_eq!(err.status().map(|s| s.as_u16()), Some(404));
    assert_eq!(io::Error::from(err).kind(), io::ErrorKind::NotFound);
}

#[tokio::test]
async fn a_missing_token_is_a_401_and_the_right_one_upgrades() {
    let pod = echo_server().await;
    let node = Server::builder(cluster())
        .token("s3cret")
        .build()
        .bind("127.0.0.1:0".parse().unwrap(), None)
        .await
        .unwrap();
    let tcp = TcpStream::connect(node.local_addr()).await.unwrap();
    let err = upgrade_spdy(tcp, PATH, &[]).await.unwrap_err();
    assert_eq!(err.status().map(|s| s.as_u16()), Some(401), "{err}");
    let tcp = TcpStream::connect(node.local_addr()).await.unwrap();
    let auth = [("authorization", "Bearer s3cret")];
    let session = SpdySession::new(upgrade_spdy(tcp, PATH, &auth).await.unwrap());
    let stream = session.open(pod.addr().port()).await.unwrap();
    within(LIMIT, "echo", echo_through(Box::new(stream), b"authorized")).await;
}

/// A TCP relay to `upstream` that can be cut: from then on it forwards nothing, both
/// ways, and closes nothing (a dead path, as a lost node or a cut cable).
async fn cuttable_relay(upstream: SocketAddr) -> (SocketAddr, Arc<AtomicBool>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let cut = Arc::new(AtomicBool::new(false));
    let flag = cut.clone();
    tokio::spawn(async move {
        let (down, _) = l.accept().await.unwrap();
        let up = TcpStream::connect(upstream).await.unwrap();
        let (dr, dw) = down.into_split();
        let (ur, uw) = up.into_split();
        let a = tokio::spawn(relay(dr, uw, flag.clone()));
        let b = tokio::spawn(relay(ur, dw, flag));
        let _ = tokio::join!(a, b);
    });
    (addr, cut)
}

async fn relay(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    cut: Arc<AtomicBool>,
) {
    let mut buf = vec![0; 64 << 10];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return std::future::pending().await,
            Ok(n) => n,
        };
        if !cut.load(Ordering::SeqCst) && to.write_all(&buf[..n]).await.is_err() {
            return std::future::pending().await;
        }
    }
}

#[tokio::test]
async fn a_dead_connection_is_found_by_the_keepalive_and_closed_resolves() {
    let pod = echo_server().await;
    let node = node().await;
    let (addr, cut) = cuttable_relay(node.local_addr()).await;
    let tcp = TcpStream::connect(addr).await.unwrap();
    let session = SpdySession::builder()
        .keepalive(Duration::from_millis(100))
        .keepalive_timeout(Duration::from_millis(300))
        .start(upgrade_spdy(tcp, PATH, &[]).await.unwrap());
    let mut stream = session.open(pod.addr().port()).await.unwrap();
    stream.write_all(b"ping").await.unwrap();
    let mut back = [0; 4];
    stream.read_exact(&mut back).await.unwrap();
    // A few answered PINGs: the session stays up.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!session.is_closed());
    cut.store(true, Ordering::SeqCst);
    let why = within(LIMIT, "closed()", session.closed()).await;
    assert_eq!(why.kind(), io::ErrorKind::TimedOut, "{why}");
    let err = stream.read(&mut back).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    assert!(session.open(pod.addr().port()).await.is_err());
    assert_eq!(stream.port(), pod.addr().port());
}

/// A node as the kubelet's spdystream behaves: no SETTINGS, no WINDOW_UPDATE, our windows
/// ignored. It answers PINGs and SYN_STREAMs and echoes every data stream, sending as fast
/// as it reads.
async fn windowless_echo_node(tcp: TcpStream) {
    use bytes::BytesMut;
    use proxy_portforward::spdy::{Decoder, Encoder, Frame, Headers};
    let (mut rd, mut wr) = tcp.into_split();
    let (mut decoder, mut encoder) = (Decoder::new(), Encoder::new());
    let mut input = BytesMut::new();
    while rd.read_buf(&mut input).await.unwrap_or(0) > 0 {
        let mut out = BytesMut::new();
        while let Some(frame) = decoder.decode_buf(&mut input).unwrap() {
            let answer = match frame {
                Frame::SynStream { stream_id, .. } => Frame::SynReply {
                    stream_id,
                    fin: false,
                    headers: Headers::new(),
                },
                Frame::Ping { id } => Frame::Ping { id },
                Frame::Data {
                    stream_id,
                    fin,
                    data,
                } if stream_id % 4 == 3 => Frame::Data {
                    stream_id,
                    fin,
                    data,
                },
                _ => continue,
            };
            encoder.encode(&answer, &mut out).unwrap();
        }
        if wr.write_all(&out).await.is_err() {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_keeps_no_windows_is_served_both_ways() {
    let l = listener().await;
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let (tcp, _) = l.accept().await.unwrap();
        windowless_echo_node(tcp).await;
    });
    // A small session window, so that the session's own bound is reached too.
    let session = SpdySession::builder()
        .session_window(256 << 10)
        .start(TcpStream::connect(addr).await.unwrap());
    let a = session.open(80).await.unwrap();
    let b = session.open(80).await.unwrap();
    let (da, db) = (payload(3, 4 << 20), payload(4, 1 << 20));
    within(LIMIT, "echoed", async {
        tokio::join!(
            echo_through(Box::new(a), &da),
            echo_through(Box::new(b), &db)
        )
    })
    .await;
    assert!(!session.is_closed());
}

#[tokio::test]
async fn shutdown_is_a_fin_and_dropping_a_stream_ends_the_pods_connection() {
    let (pod, mut heard) = echo::recorder(listener().await);
    let node = node().await;
    let session = spdy_session(node.local_addr(), Wire::Spdy).await;
    let mut finished = session.open(pod.addr().port()).await.unwrap();
    finished.write_all(b"all of it").await.unwrap();
    finished.shutdown().await.unwrap();
    let got = within(LIMIT, "the pod's record", heard.recv())
        .await
        .unwrap();
    assert_eq!((got.data.as_slice(), got.end), (&b"all of it"[..], Ok(())));
    let echo = echo_server().await;
    let mut dropped = session.open(echo.addr().port()).await.unwrap();
    dropped.write_all(b"part").await.unwrap();
    let mut back = [0; 4];
    within(LIMIT, "the echo", dropped.read_exact(&mut back))
        .await
        .unwrap();
    assert_eq!(echo.active(), 1);
    drop(dropped);
    eventually("the pod's connection ended", LIMIT, || echo.active() == 0).await;
    // The session goes on.
    let mut again = session.open(pod.addr().port()).await.unwrap();
    again.write_all(b"again").await.unwrap();
    again.shutdown().await.unwrap();
    let got = within(LIMIT, "the pod's record", heard.recv())
        .await
        .unwrap();
    assert_eq!(got.data, b"again");
}

#[tokio::test]
async fn base64_channels_echo() {
    let pod = echo_server().await;
    let node = node().await;
    let stream = channel_stream(
        node.local_addr(),
        pod.addr().port(),
        "v4.base64.channel.k8s.io",
    )
    .await
    .unwrap();
    within(LIMIT, "echo", echo_through(stream, &payload(9, 300_000))).await;
}

#[tokio::test]
async fn a_101_with_a_wrong_accept_key_is_a_handshake_error() {
    let l = listener().await;
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut tcp, _) = l.accept().await.unwrap();
        let mut request = vec![0; 4096];
        let _ = tcp.read(&mut request).await;
        let answer = "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n\
                      Upgrade: websocket\r\nSec-WebSocket-Accept: bm90IHRoZSBrZXk=\r\n\
                      Sec-WebSocket-Protocol: v4.channel.k8s.io\r\n\r\n";
        tcp.write_all(answer.as_bytes()).await.unwrap();
        let _ = tcp.read(&mut request).await;
    });
    let tcp = TcpStream::connect(addr).await.unwrap();
    let err = upgrade_websocket(tcp, "/x?ports=80", &["v4.channel.k8s.io"], &[])
        .await
        .unwrap_err();
    assert!(matches!(err, UpgradeError::Handshake(_)), "{err}");
}

#[tokio::test]
async fn the_pod_closing_first_is_an_eof_and_writing_goes_on_over_the_tunnel() {
    pod_closes_first(Wire::Tunnel).await;
}

#[tokio::test]
async fn a_node_that_closes_the_connection_ends_the_session_and_its_open_streams() {
    let l = listener().await;
    let addr = l.local_addr().unwrap();
    let (close, closed) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let (tcp, _) = l.accept().await.unwrap();
        let _ = closed.await;
        drop(tcp);
    });
    let session = SpdySession::new(TcpStream::connect(addr).await.unwrap());
    let mut stream = session.open(80).await.unwrap();
    close.send(()).unwrap();
    let why = within(LIMIT, "closed()", session.closed()).await;
    assert_eq!(why.kind(), io::ErrorKind::UnexpectedEof, "{why}");
    let err = stream.read(&mut [0; 4]).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    assert!(stream.write_all(b"x").await.is_err());
    assert!(stream.error().await.is_err());
}
