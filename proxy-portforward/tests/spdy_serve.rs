//! `serve_spdy` over real loopback TCP, driven by a client built on the crate's own codec,
//! forwarding to the test kit's echo and recording servers.

mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use proxy_portforward::channel::kubelet_error_message;
use proxy_portforward::dial::TargetDialer;
use proxy_portforward::forward::{PodForward, Wire, serve_spdy};
use proxy_portforward::objects::Pod;
use proxy_portforward::spdy::Frame;
use proxy_testkit::data::{assert_bytes, payload};
use proxy_testkit::echo::{self, Server, echo_server, listener, recorder};
use proxy_testkit::net::RefusingPort;
use proxy_testkit::wait::{eventually, within};
use support::recording::{Heard, Recording};
use support::spdy_client::{Client, Incoming, LIMIT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// What the observer heard, in order.
/// A node serving one session on loopback TCP, for pod `web` on 127.0.0.1.
struct Node {
    pod: Arc<Pod>,
    observer: Arc<Recording>,
    served: JoinHandle<std::io::Result<()>>,
}

async fn node(keeps_windows: bool) -> (Node, Client) {
    let pod: Arc<Pod> = Arc::new("web=127.0.0.1".parse().unwrap());
    let observer = Arc::new(Recording::default());
    let l = listener().await;
    let addr = l.local_addr().unwrap();
    let forward = PodForward {
        pod: pod.clone(),
        dialer: Arc::new(TargetDialer::new(Duration::from_secs(5))),
        observer: observer.clone(),
        client: None,
        udp: None,
    };
    let served = tokio::spawn(async move {
        let (conn, _) = l.accept().await?;
        // As Go's net package (the kubelet's and kubectl's) sets it on every connection.
        conn.set_nodelay(true)?;
        serve_spdy(conn, forward, Wire::Spdy).await
    });
    let conn = TcpStream::connect(addr).await.unwrap();
    conn.set_nodelay(true).unwrap();
    let client = Client::new(conn, keeps_windows).await;
    let node = Node {
        pod,
        observer,
        served,
    };
    (node, client)
}

/// Sends `data` and reads everything back at once (the echo answers as it reads).
async fn echo_through(client: &Client, pair: &mut support::spdy_client::Pair, data: &[u8]) {
    let sending = {
        let (client, id, data) = (client.clone(), pair.data_id, data.to_vec());
        tokio::spawn(async move { client.send(id, &data, true).await })
    };
    let (back, end) = pair.data.read_to_end().await;
    sending.await.unwrap();
    assert_eq!(end, Ok(()));
    assert_bytes("echoed", &back, data);
    let (message, end) = pair.error.read_to_end().await;
    assert_eq!((message, end), (vec![], Ok(())));
}

#[tokio::test]
async fn eight_mib_both_ways_within_the_windows() {
    let pod = echo_server().await;
    let (node, client) = node(true).await;
    let mut pair = client.open(pod.addr().port()).await;
    let data = payload(1, 8 << 20);
    within(
        LIMIT,
        "8 MiB echoed",
        echo_through(&client, &mut pair, &data),
    )
    .await;
    assert_eq!(client.violations(), Vec::<String>::new());
    eventually("the stream ended", LIMIT, || {
        node.observer.ended().len() == 1
    })
    .await;
    let (info, end) = &node.observer.ended()[0];
    assert_eq!(
        (info.port, info.request_id.as_str()),
        (pod.addr().port(), "0")
    );
    assert_eq!(info.wire, Wire::Spdy);
    assert_eq!((end.bytes_to_pod, end.bytes_from_pod), (8 << 20, 8 << 20));
    assert_eq!(end.error, None);
}

#[tokio::test]
async fn a_client_keeping_no_windows_as_kubectl_is_served() {
    // Go's spdystream: no SETTINGS, no WINDOW_UPDATE, sends past the windows.
    let pod = echo_server().await;
    let (_node, client) = node(false).await;
    let mut pair = client.open(pod.addr().port()).await;
    let data = payload(2, 4 << 20);
    within(
        LIMIT,
        "4 MiB echoed",
        echo_through(&client, &mut pair, &data),
    )
    .await;
}

#[tokio::test]
async fn fifty_concurrent_requests_on_one_session() {
    let pod = echo_server().await;
    let (node, client) = node(true).await;
    let mut set = tokio::task::JoinSet::new();
    for i in 0..50u64 {
        let mut pair = client.open(pod.addr().port()).await;
        let client = client.clone();
        set.spawn(async move {
            let data = payload(i, 100_000 + i as usize * 1000);
            echo_through(&client, &mut pair, &data).await;
        });
    }
    within(LIMIT, "50 echoes", async {
        while let Some(r) = set.join_next().await {
            r.unwrap();
        }
    })
    .await;
    eventually("50 streams ended", LIMIT, || {
        node.observer.ended().len() == 50
    })
    .await;
    assert!(node.observer.ended().iter().all(|(_, e)| e.error.is_none()));
    assert_eq!(client.violations(), Vec::<String>::new());
}

#[tokio::test]
async fn the_pod_answers_after_the_client_s_fin() {
    // The pod reads to the client's FIN, then answers, then closes.
    let pod = Server::spawn(listener().await, |mut s: TcpStream| async move {
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        let answer = format!("got {} bytes", got.len());
        s.write_all(answer.as_bytes()).await.unwrap();
    });
    let (_node, client) = node(true).await;
    let mut pair = client.open(pod.addr().port()).await;
    client.send(pair.data_id, &payload(3, 300_000), true).await;
    let (back, end) = within(LIMIT, "the answer", pair.data.read_to_end()).await;
    assert_eq!(
        (String::from_utf8(back).unwrap(), end),
        ("got 300000 bytes".into(), Ok(()))
    );
    let (message, end) = pair.error.read_to_end().await;
    assert_eq!((message, end), (vec![], Ok(())));
}

#[tokio::test]
async fn the_client_sends_after_the_pod_s_fin() {
    // The pod greets and half-closes, then records what the client sends.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let pod = Server::spawn(listener().await, move |mut s: TcpStream| {
        let tx = tx.clone();
        async move {
            s.write_all(b"hello").await.unwrap();
            s.shutdown().await.unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).await.unwrap();
            tx.send(got).unwrap();
        }
    });
    let (_node, client) = node(true).await;
    let mut pair = client.open(pod.addr().port()).await;
    let (greeting, end) = within(LIMIT, "the greeting", pair.data.read_to_end()).await;
    assert_eq!((greeting.as_slice(), end), (&b"hello"[..], Ok(())));
    let data = payload(4, 200_000);
    client.send(pair.data_id, &data, true).await;
    let got = within(LIMIT, "the pod's record", rx.recv()).await.unwrap();
    assert_bytes("sent after the pod's FIN", &got, &data);
    let (message, end) = within(LIMIT, "the error stream", pair.error.read_to_end()).await;
    assert_eq!((message, end), (vec![], Ok(())));
}

#[tokio::test]
async fn a_refused_port_gets_the_kubelet_s_message_and_the_session_goes_on() {
    let refusing = RefusingPort::bind();
    let refused = refusing.addr();
    let reason = std::net::TcpStream::connect(refused)
        .unwrap_err()
        .to_string();
    let pod = echo_server().await;
    let (node, client) = node(true).await;
    let mut pair = client.open(refused.port()).await;
    let (message, end) = within(LIMIT, "the error", pair.error.read_to_end()).await;
    let want = kubelet_error_message(refused.port(), "web", &node.pod.uid(), &reason);
    assert_eq!((String::from_utf8(message).unwrap(), end), (want, Ok(())));
    let (data, end) = within(LIMIT, "the data stream", pair.data.read_to_end()).await;
    assert_eq!((data, end), (vec![], Ok(())));

    let mut pair = client.open(pod.addr().port()).await;
    within(
        LIMIT,
        "an echo after",
        echo_through(&client, &mut pair, b"still here"),
    )
    .await;
    eventually("both ended", LIMIT, || node.observer.ended().len() == 2).await;
    let ended = node.observer.ended();
    let refused_end = ended
        .iter()
        .find(|(i, _)| i.port == refused.port())
        .unwrap();
    assert_eq!(refused_end.1.error.as_deref(), Some(reason.as_str()));
    assert_eq!(
        (refused_end.1.bytes_to_pod, refused_end.1.bytes_from_pod),
        (0, 0)
    );
}

#[tokio::test]
async fn pings_are_echoed() {
    let (_node, client) = node(true).await;
    let pod = echo_server().await;
    let pair = client.open(pod.addr().port()).await;
    assert!(pair.error_id < pair.data_id);
    for id in [1, 3, 5] {
        client.write(Frame::Ping { id }).await;
        assert_eq!(client.next_notable().await, Some(Frame::Ping { id }));
    }
}

#[tokio::test]
async fn the_session_s_end_closes_the_pod_s_sockets() {
    let (pod, mut recorded) = recorder(listener().await);
    let (node, client) = node(true).await;
    let pair = client.open(pod.addr().port()).await;
    client.send(pair.data_id, b"partial", false).await;
    eventually("the pod connected", LIMIT, || pod.active() == 1).await;
    // The connection closes with the client's last handle.
    client.abort();
    drop((pair, client));
    let record = within(LIMIT, "the pod's socket closed", recorded.recv())
        .await
        .unwrap();
    assert_eq!(record.data, b"partial");
    let served = within(LIMIT, "serve_spdy returned", node.served)
        .await
        .unwrap();
    assert!(served.is_ok(), "{served:?}");
    let heard = node.observer.heard();
    assert_eq!(heard.first(), Some(&Heard::SessionStarted(Wire::Spdy)));
    assert_eq!(heard.last(), Some(&Heard::SessionEnded(Wire::Spdy)));
    let (_, end) = &node.observer.ended()[0];
    assert_eq!(end.error.as_deref(), Some("session closed"));
    assert_eq!(end.bytes_to_pod, 7);
}

#[tokio::test]
async fn a_client_reset_closes_the_pod_s_socket() {
    let pod = echo_server().await;
    let (node, client) = node(true).await;
    let mut pair = client.open(pod.addr().port()).await;
    client.send(pair.data_id, b"ping", false).await;
    assert_eq!(
        pair.data.next().await,
        Some(Incoming::Data(Bytes::from_static(b"ping")))
    );
    client.reset(pair.data_id).await;
    eventually("the pod's socket closed", LIMIT, || pod.active() == 0).await;
    // The error stream is closed, so kubectl's wait for it ends.
    let (message, end) = within(LIMIT, "the error stream", pair.error.read_to_end()).await;
    assert_eq!((message, end), (vec![], Ok(())));
    eventually("the stream ended", LIMIT, || {
        node.observer.ended().len() == 1
    })
    .await;
    let (_, end) = &node.observer.ended()[0];
    assert_eq!(end.error.as_deref(), Some("reset by the client"));
    assert_eq!((end.bytes_to_pod, end.bytes_from_pod), (4, 4));
}

#[tokio::test]
async fn goaway_ends_the_session() {
    let pod = echo_server().await;
    let (node, client) = node(true).await;
    let _pair = client.open(pod.addr().port()).await;
    eventually("the pod connected", LIMIT, || pod.active() == 1).await;
    client
        .write(Frame::GoAway {
            last_good_stream_id: 0,
            status: 0,
        })
        .await;
    let served = within(LIMIT, "serve_spdy returned", node.served)
        .await
        .unwrap();
    assert!(served.is_ok(), "{served:?}");
    eventually("the pod's socket closed", LIMIT, || pod.active() == 0).await;
}

#[tokio::test]
async fn a_slow_pod_does_not_stall_the_other_streams() {
    // A pod that never reads: its stream's window closes (once the socket buffers, a
    // few MiB, are full), the others go on.
    let (stuck_tx, _stuck_rx) = tokio::sync::mpsc::unbounded_channel::<TcpStream>();
    let stuck = Server::spawn(listener().await, move |s| {
        let tx = stuck_tx.clone();
        async move {
            let _ = tx.send(s);
        }
    });
    let pod = echo_server().await;
    let (_node, client) = node(true).await;
    let slow = client.open(stuck.addr().port()).await;
    let filling = {
        let client = client.clone();
        let id = slow.data_id;
        tokio::spawn(async move { client.send(id, &vec![5; 32 << 20], false).await })
    };
    for i in 0..5 {
        let mut pair = client.open(pod.addr().port()).await;
        let data = payload(10 + i, 1 << 20);
        within(
            LIMIT,
            "an echo beside a stuck stream",
            echo_through(&client, &mut pair, &data),
        )
        .await;
    }
    assert!(
        !filling.is_finished(),
        "the stuck stream's window never closed"
    );
    filling.abort();
}

#[tokio::test]
async fn serve_spdy_over_an_in_memory_pipe() {
    let pod = echo::echo_server().await;
    let pod_ref: Arc<Pod> = Arc::new("web=127.0.0.1".parse().unwrap());
    let (a, b) = tokio::io::duplex(64 * 1024);
    let forward = PodForward {
        pod: pod_ref,
        dialer: Arc::new(TargetDialer::new(Duration::from_secs(5))),
        observer: Arc::new(Recording::default()),
        client: None,
        udp: None,
    };
    let served = tokio::spawn(serve_spdy(a, forward, Wire::SpdyOverWebSocket));
    let client = Client::new(b, true).await;
    let mut pair = client.open(pod.addr().port()).await;
    within(
        LIMIT,
        "an echo",
        echo_through(&client, &mut pair, &payload(6, 1 << 20)),
    )
    .await;
    drop(pair);
    client.abort();
    drop(client);
    within(LIMIT, "serve_spdy returned", served)
        .await
        .unwrap()
        .unwrap();
}

/// A node on an in-memory pipe (no sockets, so a paused clock can run ahead).
fn node_in_memory() -> (JoinHandle<std::io::Result<()>>, tokio::io::DuplexStream) {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let forward = PodForward {
        pod: Arc::new("web=127.0.0.1".parse().unwrap()),
        dialer: Arc::new(TargetDialer::new(Duration::from_secs(5))),
        observer: Arc::new(Recording::default()),
        client: None,
        udp: None,
    };
    (tokio::spawn(serve_spdy(a, forward, Wire::Spdy)), b)
}

#[tokio::test(start_paused = true)]
async fn a_request_whose_second_stream_is_late_is_dropped() {
    let (_served, io) = node_in_memory();
    let client = Client::new(io, true).await;
    // kubectl's error stream alone: after 30 s the kubelet's text, and it is closed.
    let mut error = client.open_stream(1, "error", 80, 7).await;
    client
        .write(Frame::Data {
            stream_id: 1,
            fin: true,
            data: Bytes::new(),
        })
        .await;
    let started = tokio::time::Instant::now();
    let (message, end) = error.read_to_end().await;
    assert_eq!(
        (String::from_utf8(message).unwrap(), end),
        ("(request=7) timed out waiting for streams".into(), Ok(()))
    );
    assert!(started.elapsed() >= Duration::from_secs(30));
    // A data stream alone is reset.
    let mut data = client.open_stream(3, "data", 80, 8).await;
    assert_eq!(data.next().await, Some(Incoming::Reset(5)));
}

/// A pod that resets its connection mid-stream: the data stream is reset, as TCP resets a
/// connection, and the error stream closes with no text (the kubelet writes its error text
/// there, which makes kubectl end every forward of the session).
#[tokio::test]
async fn a_pod_reset_mid_stream_resets_only_that_stream() {
    // The pod reads a little and then aborts its connection.
    let pod = Server::spawn(listener().await, |mut s: TcpStream| async move {
        let mut buf = [0; 4];
        s.read_exact(&mut buf).await.unwrap();
        proxy_testkit::client::set_reset_on_close(&s);
    });
    let (node, client) = node(true).await;
    let mut pair = client.open(pod.addr().port()).await;
    client.send(pair.data_id, b"abcd", false).await;
    let (_, end) = within(LIMIT, "the data stream reset", pair.data.read_to_end()).await;
    assert_eq!(end, Err(6), "INTERNAL_ERROR");
    let (message, end) = within(LIMIT, "the error stream", pair.error.read_to_end()).await;
    assert_eq!((message, end), (vec![], Ok(())));
    eventually("the stream ended", LIMIT, || {
        node.observer.ended().len() == 1
    })
    .await;
    let (_, end) = &node.observer.ended()[0];
    let error = end.error.as_deref().unwrap_or_default();
    assert!(error.starts_with("pod closed: "), "{error:?}");
}

/// A pod that answers and then closes for good while the client still sends (iperf3's
/// server at the end of a test): that stream is reset without error text, and the session
/// serves the next request.
#[tokio::test]
async fn a_pod_gone_while_the_client_sends_resets_the_stream_and_the_session_goes_on() {
    let pod = Server::spawn(listener().await, |mut s: TcpStream| async move {
        s.write_all(b"done").await.unwrap();
        proxy_testkit::client::set_reset_on_close(&s);
    });
    let (node, client) = node(true).await;
    let mut pair = client.open(pod.addr().port()).await;
    let (greeting, end) = within(LIMIT, "the pod's answer", pair.data.read_to_end()).await;
    assert_eq!((greeting.as_slice(), end), (&b"done"[..], Err(6)));
    // Keep sending until the pod's reset shows.
    let chunk = payload(9, 64 * 1024);
    for _ in 0..64 {
        if !node.observer.ended().is_empty() {
            break;
        }
        client.send(pair.data_id, &chunk, false).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (message, end) = within(LIMIT, "the error stream", pair.error.read_to_end()).await;
    assert_eq!((message, end), (vec![], Ok(())));
    eventually("the stream ended", LIMIT, || {
        node.observer.ended().len() == 1
    })
    .await;
    let (_, end) = &node.observer.ended()[0];
    let error = end.error.as_deref().unwrap_or_default();
    assert!(error.starts_with("pod closed: "), "{error:?}");

    let echo = echo_server().await;
    let mut next = client.open(echo.addr().port()).await;
    client.send(next.data_id, b"again", true).await;
    let (back, end) = within(LIMIT, "the next echo", next.data.read_to_end()).await;
    assert_eq!((back.as_slice(), end), (&b"again"[..], Ok(())));
}

#[tokio::test]
async fn a_protocol_error_gets_a_goaway_and_ends_the_session() {
    let pod = echo_server().await;
    let (node, client) = node(true).await;
    let _pair = client.open(pod.addr().port()).await;
    eventually("the pod connected", LIMIT, || pod.active() == 1).await;
    client
        .write(Frame::SynReply {
            stream_id: 1,
            fin: false,
            headers: proxy_portforward::spdy::Headers::new(),
        })
        .await;
    let goaway = within(LIMIT, "a GOAWAY", client.next_notable()).await;
    assert_eq!(
        goaway,
        Some(Frame::GoAway {
            last_good_stream_id: 3,
            status: 1
        })
    );
    let served = within(LIMIT, "serve_spdy returned", node.served)
        .await
        .unwrap();
    assert_eq!(served.unwrap_err().kind(), std::io::ErrorKind::InvalidData);
    eventually("the pod's socket closed", LIMIT, || pod.active() == 0).await;
}

#[tokio::test]
async fn dropping_serve_spdy_still_ends_every_stream() {
    let pod = echo_server().await;
    let (node, client) = node(true).await;
    let mut pair = client.open(pod.addr().port()).await;
    client.send(pair.data_id, b"hi", false).await;
    assert_eq!(
        pair.data.next().await,
        Some(Incoming::Data(Bytes::from_static(b"hi")))
    );
    node.served.abort();
    eventually("the pod's socket closed", LIMIT, || pod.active() == 0).await;
    eventually("the observer told", LIMIT, || {
        node.observer
            .heard()
            .contains(&Heard::SessionEnded(Wire::Spdy))
            && node.observer.ended().len() == 1
    })
    .await;
    assert_eq!(
        node.observer.ended()[0].1.error.as_deref(),
        Some("session closed")
    );
}
