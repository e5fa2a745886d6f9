//! [`serve_channels`]: the channel protocol's driver, one WebSocket carrying every port of
//! the request, as the kubelet serves it.

use std::io;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use super::{MAX_DATA_PER_MESSAGE, io_error};
use crate::channel::{self, Event, FrameError, Mux, Protocol, Stream};
use crate::forward::{Observe, PodForward, StreamEnd, StreamInfo, Wire};

/// Messages from the pods waiting for the WebSocket, all ports together. With the one a
/// port may be encoding, this bounds what a slow client makes the server hold.
const OUT_QUEUE: usize = 16;
/// Messages from the client waiting for a port's pod connection: like the kubelet's pipe,
/// next to none, so a slow pod stops the reading of the WebSocket.
const UP_QUEUE: usize = 1;
/// Messages sent to the client between two flushes, at most.
const FLUSH_EVERY: usize = 16;
/// How long the end of a session waits for the client's part: its answer to our Close,
/// the last bytes to be taken.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

type Sink<S> = SplitSink<WebSocketStream<S>, Message>;
type Source<S> = SplitStream<WebSocketStream<S>>;

/// Serves the WebSocket channel protocol on `ws`, whose handshake answered `protocol` to a
/// request for `ports` (from [`channel::parse_query`]), forwarding each port to the pod of
/// `forward`, as the kubelet does:
///
/// - [`Observe::session_started`] (`Wire::WebSocket`), then, before anything else, each
///   port's prefix on its two channels ([`Mux::initial_messages`]);
/// - every port is dialed at once, each a stream of its own for [`Observe`]
///   (`request_id` is the port's index in `ports`), and told [`Observe::stream_ended`]
///   once, whatever happens;
/// - the client's data on channel `2i` goes to port `i`'s connection, the pod's bytes come
///   back on `2i`, at most [`MAX_DATA_PER_MESSAGE`] per message (text messages for the
///   base64 protocols);
/// - a failed dial, or an error on the pod's connection, sends
///   [`channel::kubelet_error_message`] on channel `2i+1` and ends that port only;
/// - the pod's end of stream ends the port with v4 (which has no half-close; the kubelet's
///   runtimes stop at the first direction done, and closing a channel sends nothing),
///   while v5 sends the close signal `[255, 2i]` and goes on until the client closes its
///   side too; the client's `[255, 2i]` shuts the pod connection's write half down;
/// - once every port is done, the WebSocket is closed with code 1000;
/// - when the client closes the WebSocket, what it sent before still goes to the pods
///   (for a few seconds at most), then every pod connection is closed; when the WebSocket
///   fails, at once. Data after a port is done, or on an error channel, is dropped (as
///   the kubelet drops it).
///
/// Offer v5 (negotiate with [`channel::ALL_PROTOCOLS`]) only to clients that know its
/// close signal: the Python client offers `v5.channel.k8s.io` first but its port-forward
/// takes channel 255 for a protocol error. [`channel::KUBELET_PROTOCOLS`] answers it v4.
///
/// Backpressure: one WebSocket carries every port, and its reading stops while a pod
/// takes the client's data slowly (as the kubelet's does); what comes from the pods waits
/// in a queue of a few messages for the whole connection, and a port's reading of its pod
/// stops while it is full. Pings are answered as long as the WebSocket is read.
///
/// # Errors
///
/// `InvalidInput` when `protocol` cannot carry that many ports (checked before anything
/// is sent: refuse such a request before the upgrade); the WebSocket's failure (an I/O
/// error, a protocol violation, a bad close signal, `InvalidData`). A client closing the
/// WebSocket, and ports that fail, are no error.
pub async fn serve_channels<S>(
    ws: WebSocketStream<S>,
    ports: Vec<u16>,
    protocol: Protocol,
    forward: PodForward,
) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mux = Mux::new(ports, protocol)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    forward.observer.session_started(Wire::WebSocket);
    let _session = SessionGuard(&*forward.observer);
    let session = Session {
        mux,
        forward: &forward,
        uid: forward.pod.uid(),
        end: Mutex::new(None),
    };

    let (mut sink, mut source) = ws.split();
    for m in session.mux.initial_messages() {
        sink.feed(session.message(m)).await.map_err(io_error)?;
    }
    sink.flush().await.map_err(io_error)?;

    let n = session.mux.ports().len();
    let (out_tx, out_rx) = mpsc::channel(OUT_QUEUE);
    let mut up = Vec::with_capacity(n);
    let mut ports = FuturesUnordered::new();
    for index in 0..n {
        let (tx, rx) = mpsc::channel(UP_QUEUE);
        up.push(tx);
        ports.push(session.port(index, rx, out_tx.clone()));
    }
    drop(out_tx);

    let end = tokio::select! {
        end = read_client(&session, &mut source, &up) => end,
        end = drive(&session, &mut sink, &mut ports, out_rx) => end,
    };
    // The ports still running are cut: say why, then close their connections.
    *session.end.lock().unwrap_or_else(|e| e.into_inner()) = Some(end.cut_reason());
    drop(ports);
    drop(up);

    let result = match end {
        End::AllDone => {
            // Close, then wait for the client's Close (reading on, so pings are answered).
            let close = close_message(CloseCode::Normal, "");
            let _ = tokio::time::timeout(CLOSE_WAIT, async {
                sink.send(close).await.map_err(io_error)?;
                while let Some(m) = source.next().await {
                    if matches!(m.map_err(io_error)?, Message::Close(_)) {
                        break;
                    }
                }
                io::Result::Ok(())
            })
            .await;
            Ok(())
        }
        End::ClientClosed => {
            // Send tungstenite's answer to the client's Close. A data message the writer
            // had handed over can no longer go (an error, which drops it); then the
            // answer can.
            let _ = tokio::time::timeout(CLOSE_WAIT, async {
                if sink.flush().await.is_err() {
                    let _ = sink.flush().await;
                }
            })
            .await;
            Ok(())
        }
        End::Protocol(e) => {
            let reason = e.to_string();
            let _ = tokio::time::timeout(
                CLOSE_WAIT,
                sink.send(close_message(CloseCode::Protocol, &reason)),
            )
            .await;
            Err(io::Error::new(io::ErrorKind::InvalidData, reason))
        }
        End::Failed(e) => Err(e),
    };
    if let Ok(mut ws) = sink.reunite(source) {
        let _ = tokio::time::timeout(CLOSE_WAIT, ws.get_mut().shutdown()).await;
    }
    result
}

/// Tells the observer the session ended, however it did (even when the future is
/// dropped).
struct SessionGuard<'a>(&'a dyn Observe);

impl Drop for SessionGuard<'_> {
    fn drop(&mut self) {
        self.0.session_ended(Wire::WebSocket);
    }
}

/// How a session ended.
enum End {
    /// Every port is done and its messages sent.
    AllDone,
    /// The client closed the WebSocket.
    ClientClosed,
    /// A bad close signal from the client.
    Protocol(FrameError),
    /// The WebSocket failed.
    Failed(io::Error),
}

impl End {
    /// What a port cut by this end reports to the observer.
    fn cut_reason(&self) -> Option<String> {
        match self {
            End::AllDone | End::ClientClosed => None,
            End::Protocol(e) => Some(format!("session closed: {e}")),
            End::Failed(e) => Some(format!("session closed: {e}")),
        }
    }
}

/// What the reader passes to a port.
enum Up {
    /// The client's bytes.
    Data(Vec<u8>),
    /// v5: the client sends no more.
    Close,
    /// Answer once everything before is written to the pod.
    Drain(oneshot::Sender<()>),
}

/// What every port of one session shares.
struct Session<'a> {
    mux: Mux,
    forward: &'a PodForward,
    uid: String,
    /// Why the ports still running are cut, once the session ended.
    end: Mutex<Option<Option<String>>>,
}

impl Session<'_> {
    /// A WebSocket message with this payload: text for the base64 protocols.
    fn message(&self, payload: Vec<u8>) -> Message {
        if self.mux.protocol().is_text() {
            // Base64 and an ASCII channel character: always UTF-8.
            match Utf8Bytes::try_from(payload) {
                Ok(text) => Message::Text(text),
                Err(e) => unreachable!("base64 payloads are ASCII: {e}"),
            }
        } else {
            Message::Binary(Bytes::from(payload))
        }
    }

    /// Port `index`, from the dial to its end: `up` brings the client's messages,
    /// `out` takes the encoded payloads to send.
    async fn port(&self, index: usize, mut up: mpsc::Receiver<Up>, out: mpsc::Sender<Vec<u8>>) {
        let port = self.mux.ports()[index];
        let pod = &self.forward.pod;
        let stream = PortGuard::start(self, index, port);
        let conn = match self.forward.dialer.dial(pod, port).await {
            Ok(conn) => conn,
            Err(e) => {
                let reason = e.to_string();
                self.send_error(&out, index, port, &reason).await;
                stream.finish(Some(reason));
                return;
            }
        };
        let result = relay(self, index, &stream, conn, &mut up, &out).await;
        match result {
            Ok(()) => stream.finish(None),
            Err(e) => {
                let reason = e.to_string();
                self.send_error(&out, index, port, &reason).await;
                stream.finish(Some(reason));
            }
        }
    }

    /// Sends the kubelet's error text for port `index`.
    async fn send_error(&self, out: &mpsc::Sender<Vec<u8>>, index: usize, port: u16, reason: &str) {
        let text = channel::kubelet_error_message(port, &self.forward.pod.name, &self.uid, reason);
        let message = self
            .mux
            .error(index, &text)
            .expect("the port's index is the Mux's");
        // A closed queue: the session is ending, and the client will not read it.
        let _ = out.send(message).await;
    }
}

/// Copies port `index`'s bytes both ways until the port is done: the pod's end of stream
/// (v4), both sides closed (v5), or an error.
async fn relay(
    session: &Session<'_>,
    index: usize,
    stream: &PortGuard<'_>,
    conn: tokio::net::TcpStream,
    up: &mut mpsc::Receiver<Up>,
    out: &mpsc::Sender<Vec<u8>>,
) -> io::Result<()> {
    let (mut from_pod, mut to_pod) = conn.into_split();
    let up_closed = AtomicBool::new(false);
    let up_closed_now = Notify::new();
    // Never done but for an error: after the client's close signal it still answers
    // drain requests.
    let uplink = async {
        while let Some(m) = up.recv().await {
            match m {
                Up::Data(data) => {
                    to_pod.write_all(&data).await?;
                    stream.to_pod.fetch_add(data.len() as u64, Relaxed);
                }
                Up::Close => {
                    to_pod.shutdown().await?;
                    up_closed.store(true, Relaxed);
                    up_closed_now.notify_one();
                }
                Up::Drain(done) => {
                    let _ = done.send(());
                }
            }
        }
        // The reader is gone: the session is ending and this port with it.
        std::future::pending::<io::Result<()>>().await
    };
    let downlink = async {
        let mut buf = vec![0; MAX_DATA_PER_MESSAGE];
        loop {
            let n = from_pod.read(&mut buf).await?;
            let message = if n == 0 {
                if !session.mux.protocol().supports_close() {
                    return io::Result::Ok(());
                }
                session.mux.close(index, Stream::Data)
            } else {
                session.mux.data(index, &buf[..n])
            };
            let message = message.expect("the port's index is the Mux's");
            if out.send(message).await.is_err() {
                // The writer is gone: the session is ending and this port with it.
                std::future::pending::<()>().await;
            }
            if n == 0 {
                return Ok(());
            }
            stream.from_pod.fetch_add(n as u64, Relaxed);
        }
    };
    tokio::pin!(uplink, downlink);
    let mut down_done = false;
    loop {
        tokio::select! {
            r = &mut uplink => break r,
            r = &mut downlink, if !down_done => match r {
                // v4: no way to tell the client, so the port is done (as the kubelet's).
                Ok(()) if !session.mux.protocol().supports_close() => break Ok(()),
                Ok(()) => down_done = true,
                Err(e) => break Err(e),
            },
            () = up_closed_now.notified(), if down_done => {}
        }
        if down_done && up_closed.load(Relaxed) {
            break Ok(());
        }
    }
}

/// One port's stream, for [`Observe`]: `stream_ended` exactly once, when finished or,
/// if cut, when dropped.
struct PortGuard<'a> {
    session: &'a Session<'a>,
    info: StreamInfo,
    started: Instant,
    to_pod: AtomicU64,
    from_pod: AtomicU64,
    finished: bool,
}

impl<'a> PortGuard<'a> {
    fn start(session: &'a Session<'a>, index: usize, port: u16) -> Self {
        let info = session
            .forward
            .stream_info(Wire::WebSocket, port, index.to_string());
        session.forward.observer.stream_started(&info);
        PortGuard {
            session,
            info,
            started: Instant::now(),
            to_pod: AtomicU64::new(0),
            from_pod: AtomicU64::new(0),
            finished: false,
        }
    }

    fn finish(mut self, error: Option<String>) {
        self.report(error);
    }

    fn report(&mut self, error: Option<String>) {
        self.finished = true;
        let end = StreamEnd {
            bytes_to_pod: self.to_pod.load(Relaxed),
            bytes_from_pod: self.from_pod.load(Relaxed),
            duration: self.started.elapsed(),
            error,
        };
        self.session.forward.observer.stream_ended(&self.info, &end);
    }
}

impl Drop for PortGuard<'_> {
    fn drop(&mut self) {
        if !self.finished {
            let cut = self.session.end.lock().unwrap_or_else(|e| e.into_inner());
            let error = match &*cut {
                Some(reason) => reason.clone(),
                None => Some("session cancelled".to_owned()),
            };
            drop(cut);
            self.report(error);
        }
    }
}

/// Reads the client's messages and hands each port its data, until the client closes the
/// WebSocket or it fails.
async fn read_client<S>(
    session: &Session<'_>,
    source: &mut Source<S>,
    up: &[mpsc::Sender<Up>],
) -> End
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut closed = vec![false; up.len()];
    loop {
        let payload = match source.next().await {
            Some(Ok(Message::Binary(b))) => b,
            Some(Ok(Message::Text(t))) => Bytes::from(t),
            Some(Ok(Message::Close(_))) | None => {
                // What the client sent before its Close still reaches the pods (in time).
                let drained = futures_util::future::join_all(up.iter().map(|tx| async move {
                    let (done, written) = oneshot::channel();
                    if tx.send(Up::Drain(done)).await.is_ok() {
                        let _ = written.await;
                    }
                }));
                let _ = tokio::time::timeout(CLOSE_WAIT, drained).await;
                return End::ClientClosed;
            }
            // Pings are answered by tungstenite, pongs need nothing.
            Some(Ok(_)) => continue,
            Some(Err(e)) => return End::Failed(io_error(e)),
        };
        match session.mux.receive(&payload) {
            Ok(Event::Data { port, payload }) => {
                if closed[port] {
                    tracing::debug!(port, "client data after it closed the channel: dropped");
                } else if !payload.is_empty() {
                    // A port that is done drops what comes (as the kubelet does).
                    let _ = up[port].send(Up::Data(payload)).await;
                }
            }
            Ok(Event::Close {
                port,
                stream: Stream::Data,
            }) => {
                if !std::mem::replace(&mut closed[port], true) {
                    let _ = up[port].send(Up::Close).await;
                }
            }
            // The error channel is the server's to write: nothing to close.
            Ok(Event::Close {
                stream: Stream::Error,
                ..
            }) => {}
            Err(e) if e.is_fatal() => return End::Protocol(e),
            Err(e) => tracing::debug!("client message dropped: {e}"),
        }
    }
}

/// Sends the ports' messages to the client while the ports run; ends when every port is
/// done and its messages are sent, or when the WebSocket fails.
async fn drive<S, P>(
    session: &Session<'_>,
    sink: &mut Sink<S>,
    ports: &mut FuturesUnordered<P>,
    mut out: mpsc::Receiver<Vec<u8>>,
) -> End
where
    S: AsyncRead + AsyncWrite + Unpin,
    P: Future<Output = ()>,
{
    let writer = async {
        // Ends when every port has dropped its sender: all done.
        while let Some(first) = out.recv().await {
            let mut next = Some(first);
            let mut sent = 0;
            while let Some(payload) = next {
                sink.feed(session.message(payload)).await?;
                sent += 1;
                next = if sent < FLUSH_EVERY {
                    out.try_recv().ok()
                } else {
                    None
                };
            }
            sink.flush().await?;
        }
        Ok(())
    };
    tokio::pin!(writer);
    let mut ports_done = false;
    loop {
        tokio::select! {
            r = &mut writer => return match r {
                Ok(()) => End::AllDone,
                Err(e) => End::Failed(io_error(e)),
            },
            next = ports.next(), if !ports_done => ports_done = next.is_none(),
        }
    }
}

fn close_message(code: CloseCode, reason: &str) -> Message {
    // A close frame's reason fits in 123 bytes (RFC 6455); cut at a character.
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    Message::Close(Some(CloseFrame {
        code,
        reason: reason[..end].into(),
    }))
}
