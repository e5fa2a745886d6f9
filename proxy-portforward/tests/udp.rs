//! UDP through port-forward (the crate's own extension, `proxy_portforward::udp`): the
//! client against the crate's `server::Server` on loopback, raw SPDY and SPDY over
//! WebSocket, forwarding to the test kit's UDP echo server.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use proxy_portforward::client::{
    self, DatagramStream, SpdySession, UDP_NOT_NEGOTIATED, upgrade_spdy, upgrade_spdy_with,
    upgrade_websocket,
};
use proxy_portforward::forward::Wire;
use proxy_portforward::objects::{Cluster, Pod};
use proxy_portforward::server::{Listening, Server};
use proxy_portforward::spdy::{ClientEvent, ClientSession, Decoder, Encoder};
use proxy_portforward::udp;
use proxy_testkit::data::{assert_bytes, payload, tag_of, tagged};
use proxy_testkit::udp::UdpServer;
use proxy_testkit::wait::{eventually, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

const LIMIT: Duration = Duration::from_secs(30);
const PATH: &str = "/api/v1/namespaces/default/pods/web/portforward";

#[derive(Clone, Copy, Debug)]
enum Over {
    Spdy,
    Tunnel,
}

fn cluster() -> Cluster {
    let mut cluster = Cluster::default();
    cluster
        .add_pod("web=127.0.0.1".parse::<Pod>().unwrap())
        .unwrap();
    cluster
}

async fn node(server: &Server) -> Listening {
    server
        .bind("127.0.0.1:0".parse().unwrap(), None)
        .await
        .unwrap()
}

fn echo() -> UdpServer {
    UdpServer::echo_on("127.0.0.1:0".parse().unwrap())
}

/// A session that offered UDP, and what the server selected.
async fn session(addr: SocketAddr, wire: Over) -> (SpdySession, String) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    match wire {
        Over::Spdy => {
            let (io, selected) = upgrade_spdy_with(tcp, PATH, &udp::SPDY_OFFER, &[])
                .await
                .unwrap();
            let session = SpdySession::builder().protocol(&selected).start(io);
            (session, selected)
        }
        Over::Tunnel => {
            let (ws, selected) = upgrade_websocket(tcp, PATH, &udp::TUNNEL_OFFER, &[])
                .await
                .unwrap();
            let session = SpdySession::builder().protocol(&selected).tunnel(ws);
            (session, selected)
        }
    }
}

async fn round_trip(stream: &DatagramStream, datagram: &[u8]) {
    stream.send(datagram).await.unwrap();
    let back = stream.recv().await.unwrap().expect("an echo, not the end");
    assert_bytes("echoed datagram", &back, datagram);
}

async fn datagrams_round_trip(wire: Over) {
    let pod = echo();
    let server = Server::builder(cluster()).build();
    let listening = node(&server).await;
    let (session, selected) = session(listening.local_addr(), wire).await;
    let want = match wire {
        Over::Spdy => udp::SPDY_PROTOCOL,
        Over::Tunnel => udp::TUNNEL_PROTOCOL,
    };
    assert_eq!(selected, want);
    assert!(session.supports_udp());
    let stream = session.open_udp(pod.addr().port()).await.unwrap();
    within(LIMIT, "datagrams echoed", async {
        // Every size that matters, one at a time: empty, one byte, a typical MTU's
        // worth, past a SPDY data frame (32 KiB), and the most IPv4 carries.
        for (i, len) in [0, 1, 2, 100, 1400, 9000, 32 << 10, 40_000, 65_507, 0, 3]
            .into_iter()
            .enumerate()
        {
            round_trip(&stream, &payload(i as u64, len)).await;
        }
        // Many, a few in flight at once, various sizes: whole, in order.
        let mut sizes = proxy_testkit::data::Rng::new(5);
        for round in 0..60u32 {
            let batch: Vec<Vec<u8>> = (0..8u32)
                .map(|k| tagged(round, k, 8 + sizes.below(2000)))
                .collect();
            for d in &batch {
                stream.send(d).await.unwrap();
            }
            for d in &batch {
                let back = stream.recv().await.unwrap().unwrap();
                assert_eq!(tag_of(&back), tag_of(d), "datagrams in order");
                assert_bytes("echoed datagram", &back, d);
            }
        }
    })
    .await;
    // Too long for the framing: refused here, nothing sent.
    let e = stream
        .send(&vec![0; udp::MAX_DATAGRAM + 1])
        .await
        .unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    round_trip(&stream, b"still fine").await;
    let wire = match wire {
        Over::Spdy => Wire::Spdy,
        Over::Tunnel => Wire::SpdyOverWebSocket,
    };
    let stats = *server.stats().wire(wire);
    assert_eq!((stats.udp_streams_open, stats.udp_streams_total), (1, 1));
    assert_eq!(stats.streams_total, 1);
    drop(stream);
    eventually("the UDP stream ended", LIMIT, || {
        server.stats().wire(wire).udp_streams_open == 0
    })
    .await;
    let stats = *server.stats().wire(wire);
    assert_eq!(stats.stream_errors, 0, "ended by the client: no error");
    assert!(stats.bytes_to_pod > 150_000, "{stats:?}");
    // One socket for the stream.
    assert_eq!(pod.sources().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datagrams_round_trip_over_spdy() {
    datagrams_round_trip(Over::Spdy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datagrams_round_trip_over_the_tunnel() {
    datagrams_round_trip(Over::Tunnel).await;
}

/// A server that does not serve UDP answers as the kubelet and the API servers do, and the
/// client knows before sending anything: `open_udp` fails at once. TCP goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_udp_is_known_and_open_udp_fails_at_once() {
    let server = Server::builder(cluster()).udp(false).build();
    let listening = node(&server).await;
    let tcp_pod = proxy_testkit::echo::echo_server().await;
    for wire in [Over::Spdy, Over::Tunnel] {
        let (session, selected) = session(listening.local_addr(), wire).await;
        let want = match wire {
            Over::Spdy => "portforward.k8s.io",
            Over::Tunnel => "SPDY/3.1+portforward.k8s.io",
        };
        assert_eq!(selected, want);
        assert!(!session.supports_udp());
        let e = session.open_udp(53).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::Unsupported);
        assert_eq!(
            e.to_string(),
            "the server does not support UDP port-forward (only proxy port-forward-server \
             does; Kubernetes API servers carry TCP only)"
        );
        assert_eq!(e.to_string(), UDP_NOT_NEGOTIATED);
        // TCP as ever.
        let mut stream = session.open(tcp_pod.addr().port()).await.unwrap();
        within(LIMIT, "TCP echoed", async {
            stream.write_all(b"tcp").await.unwrap();
            let mut back = [0; 3];
            stream.read_exact(&mut back).await.unwrap();
            assert_eq!(&back, b"tcp");
        })
        .await;
    }
    // kubectl's offer alone, to a server that serves UDP: a session without it.
    let udp_server = Server::builder(cluster()).build();
    let listening = node(&udp_server).await;
    let tcp = TcpStream::connect(listening.local_addr()).await.unwrap();
    let (io, selected) = upgrade_spdy_with(tcp, PATH, &["portforward.k8s.io"], &[])
        .await
        .unwrap();
    assert_eq!(selected, "portforward.k8s.io");
    let session = SpdySession::builder().protocol(&selected).start(io);
    assert!(!session.supports_udp());
    // And a session started with no protocol named never sends UDP.
    let tcp = TcpStream::connect(listening.local_addr()).await.unwrap();
    let session = SpdySession::new(upgrade_spdy(tcp, PATH, &[]).await.unwrap());
    assert!(!session.supports_udp());
    assert!(session.open_udp(53).await.is_err());
}

/// A client that sends `protocol: udp` on a session that did not negotiate it gets error
/// text, and the server dials nothing: never TCP for a UDP request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_streams_not_negotiated_are_refused_with_text_and_nothing_is_dialed() {
    let server = Server::builder(cluster()).build();
    let listening = node(&server).await;
    // A TCP port that would take a connection, if one were made.
    let tcp_port = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = tcp_port.local_addr().unwrap().port();
    let tcp = TcpStream::connect(listening.local_addr()).await.unwrap();
    // kubectl's offer: no UDP.
    let mut io = upgrade_spdy(tcp, PATH, &[]).await.unwrap();
    let mut session = ClientSession::new();
    let opened = session.open_udp(port).unwrap();
    let (mut encoder, mut decoder) = (Encoder::new(), Decoder::new());
    let mut out = BytesMut::new();
    while let Some(frame) = session.poll_frame() {
        encoder.encode(&frame, &mut out).unwrap();
    }
    io.write_all(&out).await.unwrap();
    let text = within(LIMIT, "the error text", async {
        let mut input = BytesMut::new();
        let mut text = Vec::new();
        loop {
            assert!(io.read_buf(&mut input).await.unwrap() > 0, "EOF");
            while let Some(frame) = decoder.decode_buf(&mut input).unwrap() {
                session.receive(frame).unwrap();
            }
            while let Some(event) = session.poll_event() {
                if let ClientEvent::Data {
                    stream_id,
                    data,
                    fin,
                } = event
                    && stream_id == opened.error_stream
                {
                    text.extend_from_slice(&data);
                    if fin {
                        return String::from_utf8(text).unwrap();
                    }
                }
            }
        }
    })
    .await;
    let uid = Pod::uid(&"web=127.0.0.1".parse::<Pod>().unwrap());
    assert_eq!(
        text,
        format!(
            "error forwarding port {port} to pod web, uid {uid}: UDP port-forward was not \
             negotiated on this session"
        )
    );
    let accepted = tokio::time::timeout(Duration::from_millis(200), tcp_port.accept()).await;
    assert!(accepted.is_err(), "no TCP connection for a UDP request");
    let stats = *server.stats().wire(Wire::Spdy);
    assert_eq!((stats.udp_streams_total, stats.stream_errors), (1, 1));
}

/// Nothing listens on the pod's UDP port: the ICMP error comes back as the kubelet's text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_with_nothing_listening_gets_the_kubelet_error() {
    let port = {
        let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        s.local_addr().unwrap().port()
    };
    let server = Server::builder(cluster()).build();
    let listening = node(&server).await;
    let (session, _) = session(listening.local_addr(), Over::Spdy).await;
    let stream = session.open_udp(port).await.unwrap();
    let e = within(LIMIT, "the error", async {
        // The first datagram gets the ICMP error; the next send or read reports it.
        loop {
            if let Err(e) = stream.send(b"anyone?").await {
                break e;
            }
            match tokio::time::timeout(Duration::from_millis(100), stream.recv()).await {
                Ok(Err(e)) => break e,
                Ok(Ok(got)) => panic!("no echo expected: {got:?}"),
                Err(_) => {}
            }
        }
    })
    .await;
    let text = e.to_string();
    assert!(
        text.starts_with(&format!("error forwarding port {port} to pod web, uid ")),
        "{text}"
    );
    assert!(
        text.contains(&format!(": udp 127.0.0.1:{port}: ")),
        "{text}"
    );
    assert!(text.contains("refused"), "{text}");
    assert_eq!(
        stream.error().await.unwrap().as_deref(),
        Some(text.as_str())
    );
    eventually("the stream counted as failed", LIMIT, || {
        server.stats().wire(Wire::Spdy).stream_errors == 1
    })
    .await;
}

/// A stream with no datagram either way for the idle timeout ends: `recv` gives `None`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_stream_ends() {
    let pod = echo();
    let idle = Duration::from_millis(300);
    let server = Server::builder(cluster()).udp_idle_timeout(idle).build();
    let listening = node(&server).await;
    for wire in [Over::Spdy, Over::Tunnel] {
        let (session, _) = session(listening.local_addr(), wire).await;
        let stream = session.open_udp(pod.addr().port()).await.unwrap();
        round_trip(&stream, b"ping").await;
        let started = tokio::time::Instant::now();
        let end = within(LIMIT, "the idle end", stream.recv()).await.unwrap();
        assert_eq!(end, None);
        assert!(started.elapsed() >= idle - Duration::from_millis(50));
        assert_eq!(stream.error().await.unwrap(), None);
        // The session goes on: a new stream works.
        let again = session.open_udp(pod.addr().port()).await.unwrap();
        round_trip(&again, b"pong").await;
        // Ended by the client (a reset), before the session.
        drop(again);
        eventually("every UDP stream ended", LIMIT, || {
            let s = server.stats();
            s.wire(Wire::Spdy).udp_streams_open + s.wire(Wire::SpdyOverWebSocket).udp_streams_open
                == 0
        })
        .await;
    }
    let s = server.stats();
    assert_eq!(s.wire(Wire::Spdy).udp_streams_total, 2);
    assert_eq!(s.wire(Wire::Spdy).stream_errors, 0);
}

/// `serve_udp` keeps one stream per local client: each gets its own answers only, and
/// the pod sees one source per client. An idle client's stream ends, and its next
/// datagram opens another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_udp_keeps_local_clients_apart() {
    let pod = echo();
    let server = Server::builder(cluster()).build();
    let listening = node(&server).await;
    let (session, _) = session(listening.local_addr(), Over::Spdy).await;
    let local = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let local_addr = local.local_addr().unwrap();
    let pod_port = pod.addr().port();
    let idle = Duration::from_millis(400);
    let serving = tokio::spawn(client::udp::serve_udp(
        local,
        move |_client| {
            let session = session.clone();
            Box::pin(async move { session.open_udp(pod_port).await }) as _
        },
        idle,
    ));
    let a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let b = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    within(LIMIT, "both clients answered", async {
        for seq in 0..20 {
            tokio::join!(
                exchange(&a, local_addr, 1, seq),
                exchange(&b, local_addr, 2, seq)
            );
        }
    })
    .await;
    assert_eq!(pod.sources().len(), 2, "one pod-side socket per client");
    assert_eq!(server.stats().wire(Wire::Spdy).udp_streams_open, 2);
    // Idle: both streams end.
    eventually("idle streams ended", LIMIT, || {
        server.stats().wire(Wire::Spdy).udp_streams_open == 0
    })
    .await;
    within(
        LIMIT,
        "a new stream after idle",
        exchange(&a, local_addr, 1, 100),
    )
    .await;
    assert_eq!(server.stats().wire(Wire::Spdy).udp_streams_total, 3);
    assert_eq!(pod.sources().len(), 3);
    serving.abort();
}

/// Sends a datagram tagged `me`, `seq` to `to` until its echo comes back; answers meant
/// for another client fail the test.
async fn exchange(sock: &UdpSocket, to: SocketAddr, me: u32, seq: u32) {
    let d = tagged(me, seq, 64 + seq as usize * 7);
    let mut buf = vec![0; 70_000];
    // A datagram may wait for its stream to open: resend until answered.
    loop {
        sock.send_to(&d, to).await.unwrap();
        match tokio::time::timeout(Duration::from_millis(200), sock.recv_from(&mut buf)).await {
            Ok(Ok((n, from))) => {
                assert_eq!(from, to);
                let (who, s) = tag_of(&buf[..n]).unwrap();
                assert_eq!(who, me, "an answer for the other client");
                if s == seq {
                    assert_bytes("echoed", &buf[..n], &d);
                    return;
                }
            }
            Ok(Err(e)) => panic!("{e}"),
            Err(_) => {}
        }
    }
}

/// A pod that sends far more than the client reads: datagrams are dropped (the memory
/// held for the stream is bounded), those that arrive are whole and in order, and the
/// stream goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_from_the_pod_is_dropped_not_buffered() {
    const FLOOD: u32 = 3000;
    let pod = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let pod_port = pod.local_addr().unwrap().port();
    let flooding = tokio::spawn(async move {
        let mut buf = vec![0; 2048];
        loop {
            let (n, from) = pod.recv_from(&mut buf).await.unwrap();
            if &buf[..n] == b"flood" {
                for seq in 0..FLOOD {
                    let _ = pod.send_to(&tagged(7, seq, 1400), from).await;
                }
            } else {
                pod.send_to(&buf[..n], from).await.unwrap();
            }
        }
    });
    let server = Server::builder(cluster()).build();
    let listening = node(&server).await;
    let (session, _) = session(listening.local_addr(), Over::Spdy).await;
    let stream = session.open_udp(pod_port).await.unwrap();
    stream.send(b"flood").await.unwrap();
    // Not read while the pod sends.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut got = 0u32;
    let mut last = None;
    while let Ok(received) = tokio::time::timeout(Duration::from_millis(300), stream.recv()).await {
        let d = received.unwrap().unwrap();
        let (who, seq) = tag_of(&d).unwrap();
        assert_eq!(who, 7);
        assert_bytes("flooded datagram", &d, &tagged(7, seq, 1400));
        assert!(last < Some(seq), "in order");
        last = Some(seq);
        got += 1;
    }
    assert!(
        got > 0 && got < FLOOD,
        "some arrive, the rest are dropped: {got}"
    );
    round_trip(&stream, b"still here").await;
    flooding.abort();
}
