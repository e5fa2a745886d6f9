//! The WebSocket side of the node on real loopback sockets: `serve_channels` with a
//! tungstenite client speaking the channel protocol through `ClientMux`, pods that are
//! echo and recording servers (and a refused port), and `WebSocketBytes` carrying a byte
//! stream both ways.

mod support;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use proxy_portforward::channel::{self, ClientEvent, ClientMux, Protocol, Stream};
use proxy_portforward::dial::TargetDialer;
use proxy_portforward::forward::{self, PodForward, StreamEnd, WebSocketBytes, Wire};
use proxy_portforward::objects::Pod;
use proxy_testkit::data::{assert_bytes, payload};
use proxy_testkit::echo::{self, Recorded, Server};
use proxy_testkit::wait::{PROMPT, eventually, within};
use support::recording::{Heard, Recording};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

type Ws = WebSocketStream<TcpStream>;

// ===== a recording observer =====

trait SessionEnds {
    async fn session_ends(&self, ports: usize) -> Vec<StreamEnd>;
}

impl SessionEnds for Recording {
    /// Waits for the session's end, then checks each stream started and ended once, and
    /// returns the ends by request id (the port's index).
    async fn session_ends(&self, ports: usize) -> Vec<StreamEnd> {
        eventually("the session ends", PROMPT, || {
            self.heard().contains(&Heard::SessionEnded(Wire::WebSocket))
        })
        .await;
        let seen = self.heard();
        assert_eq!(seen[0], Heard::SessionStarted(Wire::WebSocket));
        assert_eq!(seen.last(), Some(&Heard::SessionEnded(Wire::WebSocket)));
        let mut ends = vec![None; ports];
        for (i, end) in ends.iter_mut().enumerate() {
            let id = i.to_string();
            let started = seen
                .iter()
                .filter(|s| matches!(s, Heard::StreamStarted(info) if info.request_id == id))
                .count();
            assert_eq!(started, 1, "stream {i} started once: {seen:?}");
            let mut ended = seen.iter().filter_map(|s| match s {
                Heard::StreamEnded(info, end) if info.request_id == id => Some((info, end)),
                _ => None,
            });
            let (info, e) = ended.next().expect("the stream ended");
            assert!(ended.next().is_none(), "stream {i} ended once: {seen:?}");
            assert_eq!(info.wire, Wire::WebSocket);
            assert_eq!(info.pod, "web");
            *end = Some(e.clone());
        }
        ends.into_iter().map(Option::unwrap).collect()
    }
}

// ===== the server and the client =====

fn pod() -> Arc<Pod> {
    Arc::new("web=127.0.0.1".parse().unwrap())
}

/// Reads an HTTP request head, one byte at a time (the client sends nothing more before
/// the answer).
async fn read_head(tcp: &mut TcpStream) -> String {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(tcp.read_u8().await.expect("read the request"));
    }
    String::from_utf8(head).unwrap()
}

fn header<'a>(head: &'a str, name: &str) -> impl Iterator<Item = &'a str> {
    let name = name.to_ascii_lowercase();
    head.lines().filter_map(move |line| {
        let (n, v) = line.split_once(':')?;
        (n.trim().to_ascii_lowercase() == name).then_some(v.trim())
    })
}

/// The node's side of one connection, as the HTTP server will do it: the handshake with
/// `accept_key` and `negotiate`, then `serve_channels`.
async fn serve_one(
    listener: TcpListener,
    supported: &'static [Protocol],
    observer: Arc<Recording>,
) -> io::Result<()> {
    let (mut tcp, client) = listener.accept().await?;
    let head = read_head(&mut tcp).await;
    let target = head.split(' ').nth(1).unwrap();
    let query = target.split_once('?').map_or("", |(_, q)| q);
    let ports = channel::parse_query(query).unwrap();
    let protocol = channel::negotiate(header(&head, "sec-websocket-protocol"), supported).unwrap();
    let key = header(&head, "sec-websocket-key").next().unwrap();
    let mut answer = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n",
        forward::accept_key(key)
    );
    if let Some(name) = protocol.name() {
        answer += &format!("Sec-WebSocket-Protocol: {name}\r\n");
    }
    answer += "\r\n";
    tcp.write_all(answer.as_bytes()).await?;
    let ws = forward::server_stream(tcp).await;
    let forward = PodForward {
        pod: pod(),
        dialer: Arc::new(TargetDialer::new(PROMPT)),
        observer,
        client: Some(client),
        udp: None,
    };
    forward::serve_channels(ws, ports, protocol, forward).await
}

struct Session {
    ws: Ws,
    protocol: Protocol,
    mux: ClientMux,
    ports: Vec<u16>,
    server: JoinHandle<io::Result<()>>,
    observer: Arc<Recording>,
}

/// Opens a port-forward WebSocket for `ports`, offering `protocol` (the server supports
/// `ALL_PROTOCOLS`), and checks the port prefixes come first, in order.
async fn open(ports: &[u16], protocol: Protocol) -> Session {
    let listener = echo::listener().await;
    let addr = listener.local_addr().unwrap();
    let observer = Arc::new(Recording::default());
    let server = tokio::spawn(serve_one(
        listener,
        channel::ALL_PROTOCOLS,
        observer.clone(),
    ));
    let query: Vec<String> = ports.iter().map(|p| format!("ports={p}")).collect();
    let url = format!(
        "ws://{addr}/api/v1/namespaces/default/pods/web/portforward?{}",
        query.join("&")
    );
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static(protocol.name().unwrap()),
    );
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (ws, _) = tokio_tungstenite::client_async(request, tcp)
        .await
        .expect("handshake");
    let mut session = Session {
        ws,
        protocol,
        mux: ClientMux::new(ports.to_vec(), protocol).unwrap(),
        ports: ports.to_vec(),
        server,
        observer,
    };
    for i in 0..ports.len() {
        for stream in [Stream::Data, Stream::Error] {
            let m = session.next_message().await.expect("a port prefix");
            assert_eq!(m.is_text(), protocol.is_text(), "{m:?}");
            assert_eq!(
                session.mux.receive(&m.into_data()).unwrap(),
                ClientEvent::Ready { port: i, stream }
            );
        }
    }
    session
}

impl Session {
    async fn next_message(&mut self) -> Option<Message> {
        loop {
            match within(PROMPT, "a message", self.ws.next()).await? {
                Ok(Message::Ping(_) | Message::Pong(_)) => {}
                Ok(m) => return Some(m),
                Err(e) => panic!("client read: {e}"),
            }
        }
    }

    /// The next event, or the close frame's code.
    async fn next_event(&mut self) -> Result<ClientEvent, Option<CloseCode>> {
        match self.next_message().await {
            Some(Message::Close(frame)) => {
                // Reading on sends the answer to the server's Close.
                while let Some(Ok(_)) = within(PROMPT, "the end", self.ws.next()).await {}
                Err(frame.map(|f| f.code))
            }
            Some(m) => Ok(self.mux.receive(&m.into_data()).unwrap()),
            None => Err(None),
        }
    }

    async fn send(&mut self, port: usize, data: &[u8]) {
        let m = message(self.protocol, self.mux.data(port, data).unwrap());
        self.ws.send(m).await.expect("client send");
    }

    /// Sends `data` to every port in chunks while reading what comes back, until each port
    /// got `data.len()` bytes back; returns them by port.
    async fn echo_all(&mut self, data: &[u8]) -> Vec<Vec<u8>> {
        let n = self.ports.len();
        let (mut tx, mut rx) = (&mut self.ws).split();
        let mux = &mut self.mux;
        let sender = mux.clone();
        let protocol = self.protocol;
        let write = async {
            for chunk in data.chunks(20_000) {
                for port in 0..n {
                    let m = message(protocol, sender.data(port, chunk).unwrap());
                    tx.send(m).await.expect("client send");
                }
            }
            // A ping in the middle: answered while the data flows.
            tx.send(Message::Ping(b"hi".to_vec().into())).await.unwrap();
        };
        let read = async {
            let mut got = vec![Vec::new(); n];
            let mut pong = false;
            while got.iter().any(|g| g.len() < data.len()) || !pong {
                match rx
                    .next()
                    .await
                    .expect("more messages")
                    .expect("client read")
                {
                    Message::Pong(p) => {
                        assert_eq!(&p[..], b"hi");
                        pong = true;
                    }
                    m => match mux.receive(&m.into_data()).unwrap() {
                        ClientEvent::Data { port, payload } => got[port].extend(payload),
                        e => panic!("unexpected {e:?}"),
                    },
                }
            }
            got
        };
        let ((), got) = within(PROMPT, "the echo", async { tokio::join!(write, read) }).await;
        got
    }

    async fn close(&mut self) {
        self.ws.close(None).await.expect("client close");
        // The server's answer, then the end.
        while let Some(m) = self.next_message().await {
            assert!(matches!(m, Message::Close(_)), "{m:?}");
        }
    }

    async fn server_result(self) -> io::Result<()> {
        within(PROMPT, "serve_channels returns", self.server)
            .await
            .unwrap()
    }
}

/// The WebSocket message carrying a channel payload: text for the base64 protocols.
fn message(protocol: Protocol, payload: Vec<u8>) -> Message {
    if protocol.is_text() {
        Message::text(String::from_utf8(payload).unwrap())
    } else {
        Message::binary(payload)
    }
}

// ===== the channel protocol =====

#[tokio::test]
async fn v4_binary_echoes_8_mib_byte_exact_and_the_observer_counts_it() {
    let pod = echo::echo_server().await;
    let mut s = open(&[pod.addr().port()], Protocol::V4Binary).await;
    let data = payload(1, 8 << 20);
    let got = s.echo_all(&data).await;
    assert_bytes("port 0", &got[0], &data);
    s.close().await;
    let observer = s.observer.clone();
    s.server_result().await.unwrap();
    let ends = observer.session_ends(1).await;
    assert_eq!(ends[0].bytes_to_pod, 8 << 20);
    assert_eq!(ends[0].bytes_from_pod, 8 << 20);
    assert_eq!(ends[0].error, None);
    eventually("the pod connection closes", PROMPT, || pod.active() == 0).await;
}

#[tokio::test]
async fn v4_base64_uses_text_messages_and_echoes_1_mib() {
    let pod = echo::echo_server().await;
    let mut s = open(&[pod.addr().port()], Protocol::V4Base64).await;
    let data = payload(2, 1 << 20);
    let got = s.echo_all(&data).await;
    assert_bytes("port 0", &got[0], &data);
    // Every message from the server is text.
    s.send(0, b"one more").await;
    let m = s.next_message().await.unwrap();
    assert!(m.is_text(), "{m:?}");
    assert_eq!(
        s.mux.receive(&m.into_data()).unwrap(),
        ClientEvent::Data {
            port: 0,
            payload: b"one more".to_vec()
        }
    );
    s.close().await;
    s.server_result().await.unwrap();
}

#[tokio::test]
async fn two_ports_share_one_websocket() {
    let (a, b) = (echo::echo_server().await, echo::echo_server().await);
    let mut s = open(&[a.addr().port(), b.addr().port()], Protocol::V4Binary).await;
    let data = payload(3, 1 << 20);
    let got = s.echo_all(&data).await;
    assert_bytes("port 0", &got[0], &data);
    assert_bytes("port 1", &got[1], &data);
    s.close().await;
    let observer = s.observer.clone();
    s.server_result().await.unwrap();
    for end in observer.session_ends(2).await {
        assert_eq!((end.bytes_to_pod, end.bytes_from_pod), (1 << 20, 1 << 20));
    }
}

#[tokio::test]
async fn a_refused_port_gets_the_kubelet_error_and_the_other_port_works() {
    let refusing = proxy_testkit::net::RefusingPort::bind();
    let refused = refusing.addr();
    let reason = TcpStream::connect(refused).await.unwrap_err().to_string();
    let pod_echo = echo::echo_server().await;
    let mut s = open(
        &[refused.port(), pod_echo.addr().port()],
        Protocol::V4Binary,
    )
    .await;
    let expected = channel::kubelet_error_message(refused.port(), "web", &pod().uid(), &reason);
    assert_eq!(
        s.next_event().await,
        Ok(ClientEvent::Error {
            port: 0,
            message: expected.clone()
        })
    );
    assert!(expected.starts_with(&format!(
        "error forwarding port {} to pod web, uid ",
        refused.port()
    )));
    // Data for the failed port goes nowhere; the other port works.
    s.send(0, b"dropped").await;
    s.send(1, b"still here").await;
    assert_eq!(
        s.next_event().await,
        Ok(ClientEvent::Data {
            port: 1,
            payload: b"still here".to_vec()
        })
    );
    s.close().await;
    let observer = s.observer.clone();
    s.server_result().await.unwrap();
    let ends = observer.session_ends(2).await;
    assert_eq!(ends[0].error.as_deref(), Some(reason.as_str()));
    assert_eq!(ends[0].bytes_to_pod, 0);
    assert_eq!(ends[1].error, None);
    assert_eq!(ends[1].bytes_to_pod, 10);
}

/// A pod that greets, half-closes, then reads everything the client sends and reports it.
async fn greeting_recorder() -> (Server, mpsc::UnboundedReceiver<Recorded>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let server = Server::spawn(echo::listener().await, move |mut stream| {
        let tx = tx.clone();
        async move {
            stream.write_all(b"hello").await.unwrap();
            stream.shutdown().await.unwrap();
            let (data, end) = proxy_testkit::client::read_all(&mut stream).await;
            let _ = tx.send(Recorded {
                data,
                end: end.map_err(|e| e.kind()),
            });
        }
    });
    (server, rx)
}

#[tokio::test]
async fn v5_half_closes_both_ways_then_the_websocket_closes_with_1000() {
    let (pod, mut recorded) = greeting_recorder().await;
    let mut s = open(&[pod.addr().port()], Protocol::V5Binary).await;
    // The pod's side: its bytes, then its FIN as the close signal.
    assert_eq!(
        s.next_event().await,
        Ok(ClientEvent::Data {
            port: 0,
            payload: b"hello".to_vec()
        })
    );
    assert_eq!(
        s.next_event().await,
        Ok(ClientEvent::Closed {
            port: 0,
            stream: Stream::Data
        })
    );
    // The client's side still goes to the pod, then its close signal is the pod's EOF.
    s.send(0, b"after your FIN").await;
    let close = s.mux.close(0).unwrap();
    s.ws.send(Message::binary(close)).await.unwrap();
    let r = within(PROMPT, "the pod's record", recorded.recv())
        .await
        .unwrap();
    assert_eq!(r.data, b"after your FIN");
    assert_eq!(r.end, Ok(()));
    // Every port done: the server closes with 1000.
    assert_eq!(s.next_event().await, Err(Some(CloseCode::Normal)));
    let observer = s.observer.clone();
    s.server_result().await.unwrap();
    let ends = observer.session_ends(1).await;
    assert_eq!((ends[0].bytes_to_pod, ends[0].bytes_from_pod), (14, 5));
    assert_eq!(ends[0].error, None);
}

#[tokio::test]
async fn v5_echo_ends_by_the_client_s_close_signal() {
    let pod = echo::echo_server().await;
    let mut s = open(&[pod.addr().port()], Protocol::V5Binary).await;
    let data = payload(4, 1 << 20);
    let got = s.echo_all(&data).await;
    assert_bytes("port 0", &got[0], &data);
    let close = s.mux.close(0).unwrap();
    s.ws.send(Message::binary(close)).await.unwrap();
    // The echo's FIN follows ours.
    assert_eq!(
        s.next_event().await,
        Ok(ClientEvent::Closed {
            port: 0,
            stream: Stream::Data
        })
    );
    assert_eq!(s.next_event().await, Err(Some(CloseCode::Normal)));
    s.server_result().await.unwrap();
}

#[tokio::test]
async fn v4_pod_end_ends_the_port_and_the_websocket_closes_with_1000() {
    let (pod, _recorded) = greeting_recorder().await;
    let mut s = open(&[pod.addr().port()], Protocol::V4Binary).await;
    assert_eq!(
        s.next_event().await,
        Ok(ClientEvent::Data {
            port: 0,
            payload: b"hello".to_vec()
        })
    );
    // v4 has no close signal: the port is done, and with it the WebSocket.
    assert_eq!(s.next_event().await, Err(Some(CloseCode::Normal)));
    s.server_result().await.unwrap();
    eventually("the pod connection closes", PROMPT, || pod.active() == 0).await;
}

#[tokio::test]
async fn a_client_close_closes_the_pod_connections() {
    let (pod, mut recorded) = echo::recorder(echo::listener().await);
    let mut s = open(&[pod.addr().port()], Protocol::V5Binary).await;
    s.send(0, b"partial").await;
    s.close().await;
    let r = within(PROMPT, "the pod's record", recorded.recv())
        .await
        .unwrap();
    assert_eq!(r.data, b"partial");
    assert_eq!(r.end, Ok(()));
    let observer = s.observer.clone();
    s.server_result().await.unwrap();
    assert_eq!(observer.session_ends(1).await[0].error, None);
}

#[tokio::test]
async fn a_client_that_vanishes_gets_its_pod_connections_closed() {
    let (pod, mut recorded) = echo::recorder(echo::listener().await);
    let mut s = open(&[pod.addr().port()], Protocol::V4Binary).await;
    s.send(0, b"bye").await;
    eventually("the pod accepts", PROMPT, || pod.accepted() == 1).await;
    // No close frame: the TCP connection just ends.
    let observer = s.observer.clone();
    let server = s.server;
    drop(s.ws);
    let r = within(PROMPT, "the pod's record", recorded.recv())
        .await
        .unwrap();
    assert_eq!(r.data, b"bye");
    let result = within(PROMPT, "serve_channels returns", server)
        .await
        .unwrap();
    assert!(result.is_err(), "{result:?}");
    let end = &observer.session_ends(1).await[0];
    assert!(
        end.error
            .as_deref()
            .unwrap()
            .starts_with("session closed: "),
        "{end:?}"
    );
}

#[tokio::test]
async fn a_bad_close_signal_ends_the_session_with_1002() {
    let pod = echo::echo_server().await;
    let mut s = open(&[pod.addr().port()], Protocol::V5Binary).await;
    s.ws.send(Message::binary(vec![255])).await.unwrap();
    assert_eq!(s.next_event().await, Err(Some(CloseCode::Protocol)));
    let e = s.server_result().await.unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidData);
}

#[tokio::test]
async fn too_many_ports_for_base64_is_invalid_input() {
    let listener = echo::listener().await;
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let ws = forward::server_stream(tcp).await;
        let forward = PodForward {
            pod: pod(),
            dialer: Arc::new(TargetDialer::new(PROMPT)),
            observer: Arc::new(Recording::default()),
            client: None,
            udp: None,
        };
        forward::serve_channels(ws, vec![80; 41], Protocol::V4Base64, forward).await
    });
    let _tcp = TcpStream::connect(addr).await.unwrap();
    let e = within(PROMPT, "the refusal", server)
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
}

// ===== WebSocketBytes =====

/// A client and a server WebSocket on one loopback connection, each a byte stream.
async fn bytes_pair() -> (Ws, Ws) {
    let listener = echo::listener().await;
    let addr: SocketAddr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        let head = read_head(&mut tcp).await;
        let key = header(&head, "sec-websocket-key").next().unwrap();
        let answer = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {}\r\nSec-WebSocket-Protocol: SPDY/3.1+portforward.k8s.io\r\n\r\n",
            forward::accept_key(key)
        );
        tcp.write_all(answer.as_bytes()).await.unwrap();
        forward::server_stream(tcp).await
    });
    let mut request = format!("ws://{addr}/api/v1/namespaces/default/pods/web/portforward")
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static("SPDY/3.1+portforward.k8s.io"),
    );
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (client, _) = tokio_tungstenite::client_async(request, tcp).await.unwrap();
    (client, server.await.unwrap())
}

/// What `serve_spdy` takes of its connection.
fn spdy_io<IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static>(
    io: IO,
) -> IO {
    io
}

#[tokio::test]
async fn websocket_bytes_echo_8_mib_both_ways_byte_exact() {
    let (client, server) = bytes_pair().await;
    let echo = tokio::spawn(async move {
        let (mut r, mut w) = tokio::io::split(spdy_io(WebSocketBytes::new(server)));
        let n = tokio::io::copy(&mut r, &mut w).await.unwrap();
        w.shutdown().await.unwrap();
        n
    });
    let data = payload(5, 8 << 20);
    let (mut r, mut w) = tokio::io::split(WebSocketBytes::new(client));
    let write = async {
        // Odd sizes: messages need not line up with reads.
        for chunk in data.chunks(12_345) {
            w.write_all(chunk).await.unwrap();
        }
        w.shutdown().await.unwrap();
    };
    let read = async {
        let mut got = Vec::new();
        r.read_to_end(&mut got).await.unwrap();
        got
    };
    let ((), got) = within(PROMPT, "the echo", async { tokio::join!(write, read) }).await;
    assert_bytes("echo", &got, &data);
    assert_eq!(echo.await.unwrap(), 8 << 20);
}

#[tokio::test]
async fn websocket_bytes_close_frame_is_eof_and_what_was_sent_before_still_arrives() {
    let (client, server) = bytes_pair().await;
    let mut server = WebSocketBytes::new(server);
    let mut client = WebSocketBytes::new(client);
    server.write_all(b"early").await.unwrap();
    client.write_all(b"request").await.unwrap();
    client.shutdown().await.unwrap();
    assert!(client.write_all(b"more").await.is_err());
    let mut got = Vec::new();
    server.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"request");
    // The peer's Close was answered: no more writing.
    let e = server.write_all(b"late").await.unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::BrokenPipe);
    let mut got = Vec::new();
    within(PROMPT, "the client's EOF", client.read_to_end(&mut got))
        .await
        .unwrap();
    assert_eq!(got, b"early");
}

#[tokio::test]
async fn websocket_bytes_answers_pings_between_messages() {
    let (mut client, server) = bytes_pair().await;
    let mut server = WebSocketBytes::new(server);
    for m in [
        Message::Ping(b"1".to_vec().into()),
        Message::binary(b"ab".to_vec()),
        Message::Ping(b"2".to_vec().into()),
        Message::binary(Vec::new()),
        Message::Pong(b"unasked".to_vec().into()),
        Message::binary(b"cd".to_vec()),
    ] {
        client.send(m).await.unwrap();
    }
    let mut got = [0; 4];
    server.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"abcd");
    server.write_all(b"ok").await.unwrap();
    let mut seen = Vec::new();
    while seen.last() != Some(&Message::binary(b"ok".to_vec())) {
        seen.push(client.next().await.unwrap().unwrap());
    }
    assert_eq!(
        seen,
        [
            Message::Pong(b"1".to_vec().into()),
            Message::Pong(b"2".to_vec().into()),
            Message::binary(b"ok".to_vec()),
        ]
    );
}

#[tokio::test]
async fn websocket_bytes_text_and_abnormal_close_are_errors() {
    let (mut client, server) = bytes_pair().await;
    let mut server = WebSocketBytes::new(server);
    client.send(Message::text("not bytes")).await.unwrap();
    let mut buf = [0; 16];
    let e = server.read(&mut buf).await.unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    client
        .send(Message::Close(Some(CloseFrame {
            code: CloseCode::Away,
            reason: "bye".into(),
        })))
        .await
        .unwrap();
    let e = server.read(&mut buf).await.unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::ConnectionAborted);
    assert!(e.to_string().contains("1001"), "{e}");
    assert_eq!(server.read(&mut buf).await.unwrap(), 0);
}

#[tokio::test]
async fn a_pod_reset_sends_the_kubelet_error_with_the_reason() {
    let reset = Server::spawn(echo::listener().await, |mut stream| async move {
        let mut buf = [0; 4];
        stream.read_exact(&mut buf).await.unwrap();
        proxy_testkit::client::set_reset_on_close(&stream);
    });
    let mut s = open(&[reset.addr().port()], Protocol::V4Binary).await;
    s.send(0, b"ping").await;
    let prefix = format!(
        "error forwarding port {} to pod web, uid {}: ",
        reset.addr().port(),
        pod().uid()
    );
    match s.next_event().await {
        Ok(ClientEvent::Error { port: 0, message }) => {
            assert!(message.starts_with(&prefix), "{message}");
        }
        e => panic!("expected the port's error, got {e:?}"),
    }
    assert_eq!(s.next_event().await, Err(Some(CloseCode::Normal)));
    let observer = s.observer.clone();
    s.server_result().await.unwrap();
    let end = &observer.session_ends(1).await[0];
    assert_eq!(end.bytes_to_pod, 4);
    assert!(end.error.is_some(), "{end:?}");
}

#[tokio::test]
async fn a_client_that_does_not_read_stops_the_pod_s_writes() {
    // More than the socket buffers on both sides and the server's queue can hold.
    const SIZE: usize = 48 << 20;
    let data = Arc::new(payload(6, SIZE));
    let (wrote_tx, mut wrote) = mpsc::unbounded_channel();
    let pod = Server::spawn(echo::listener().await, {
        let data = data.clone();
        move |mut stream| {
            let (data, wrote_tx) = (data.clone(), wrote_tx.clone());
            async move {
                stream.write_all(&data).await.unwrap();
                stream.shutdown().await.unwrap();
                let _ = wrote_tx.send(());
            }
        }
    });
    let mut s = open(&[pod.addr().port()], Protocol::V4Binary).await;
    let early = tokio::time::timeout(Duration::from_secs(1), wrote.recv()).await;
    assert!(early.is_err(), "the pod wrote 48 MiB that nobody read");
    // Reading lets it finish; not a byte lost.
    let mut got = Vec::with_capacity(SIZE);
    loop {
        match s.next_event().await {
            Ok(ClientEvent::Data { port: 0, payload }) => got.extend(payload),
            Err(code) => {
                assert_eq!(code, Some(CloseCode::Normal));
                break;
            }
            Ok(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_bytes("the pod's bytes", &got, &data);
    within(PROMPT, "the pod's report", wrote.recv())
        .await
        .unwrap();
    s.server_result().await.unwrap();
}

#[tokio::test]
async fn websocket_bytes_a_connection_ended_without_close_is_unexpected_eof() {
    let (client, server) = bytes_pair().await;
    let mut server = WebSocketBytes::new(server);
    let mut client = WebSocketBytes::new(client);
    client.write_all(b"last words").await.unwrap();
    drop(client);
    let mut got = [0; 10];
    server.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"last words");
    let e = server.read(&mut [0; 16]).await.unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "{e}");
}

// ===== through hyper =====

/// What the HTTP server does with a port-forward request: answers 101 with `accept_key`
/// and the negotiated protocol, then serves the upgraded connection.
async fn upgrade(
    mut req: hyper::Request<hyper::body::Incoming>,
    observer: Arc<Recording>,
) -> Result<hyper::Response<http_body_util::Empty<bytes::Bytes>>, std::convert::Infallible> {
    let ports = channel::parse_query(req.uri().query().unwrap_or("")).unwrap();
    let offered = req.headers().get_all("sec-websocket-protocol");
    let protocol = channel::negotiate(
        offered.iter().map(|v| v.to_str().unwrap()),
        channel::KUBELET_PROTOCOLS,
    )
    .unwrap();
    let key = req.headers()["sec-websocket-key"].to_str().unwrap();
    let mut answer = hyper::Response::builder()
        .status(101)
        .header("upgrade", "websocket")
        .header("connection", "Upgrade")
        .header("sec-websocket-accept", forward::accept_key(key));
    if let Some(name) = protocol.name() {
        answer = answer.header("sec-websocket-protocol", name);
    }
    tokio::spawn(async move {
        let upgraded = hyper::upgrade::on(&mut req).await.unwrap();
        let ws = forward::server_stream(hyper_util::rt::TokioIo::new(upgraded)).await;
        let forward = PodForward {
            pod: pod(),
            dialer: Arc::new(TargetDialer::new(PROMPT)),
            observer,
            client: None,
            udp: None,
        };
        forward::serve_channels(ws, ports, protocol, forward)
            .await
            .unwrap();
    });
    Ok(answer.body(http_body_util::Empty::new()).unwrap())
}

#[tokio::test]
async fn serves_a_hyper_upgrade() {
    let pod_echo = echo::echo_server().await;
    let listener = echo::listener().await;
    let addr = listener.local_addr().unwrap();
    let observer = Arc::new(Recording::default());
    let http = tokio::spawn({
        let observer = observer.clone();
        async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let service = hyper::service::service_fn(move |req| upgrade(req, observer.clone()));
            hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                .with_upgrades()
                .await
                .unwrap();
        }
    });
    let url = format!(
        "ws://{addr}/api/v1/namespaces/default/pods/web/portforward?ports={}",
        pod_echo.addr().port()
    );
    let mut request = url.into_client_request().unwrap();
    // As the Python client offers: v5 first; the kubelet's protocols answer v4.
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static("v5.channel.k8s.io,v4.channel.k8s.io"),
    );
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut ws, answer) = tokio_tungstenite::client_async(request, tcp).await.unwrap();
    assert_eq!(
        answer.headers()["sec-websocket-protocol"],
        "v4.channel.k8s.io"
    );
    let ports = vec![pod_echo.addr().port()];
    let mut mux = ClientMux::new(ports, Protocol::V4Binary).unwrap();
    for _ in 0..2 {
        let m = ws.next().await.unwrap().unwrap();
        assert!(matches!(
            mux.receive(&m.into_data()),
            Ok(ClientEvent::Ready { .. })
        ));
    }
    ws.send(Message::binary(mux.data(0, b"via hyper").unwrap()))
        .await
        .unwrap();
    let m = within(PROMPT, "the echo", ws.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        mux.receive(&m.into_data()).unwrap(),
        ClientEvent::Data {
            port: 0,
            payload: b"via hyper".to_vec()
        }
    );
    ws.close(None).await.unwrap();
    while let Some(Ok(_)) = within(PROMPT, "the end", ws.next()).await {}
    assert_eq!(observer.session_ends(1).await[0].bytes_to_pod, 9);
    within(PROMPT, "the HTTP connection ends", http)
        .await
        .unwrap();
}
