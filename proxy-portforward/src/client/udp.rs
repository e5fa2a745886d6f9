//! UDP through port-forward on the client's side ([`crate::udp`]): a [`DatagramStream`]
//! per forwarded UDP "connection", and [`serve_udp`], which gives each client of a local
//! UDP socket one of its own.

use std::collections::HashMap;
use std::fmt;
use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Poll, ready};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use futures_util::future::BoxFuture;
use tokio::io::ReadBuf;
use tokio::net::UdpSocket;
use tokio::sync::{Mutex, mpsc};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::stream::ForwardedStream;
use crate::udp::{self, Decoder, MAX_DATAGRAM};

/// Bytes read from the stream at once while a datagram comes in.
const READ_CHUNK: usize = 16 << 10;

/// Datagrams from one local client that wait for its stream (while it opens, or while
/// the node's window is closed); more are dropped.
pub const CLIENT_QUEUE: usize = 32;

/// One forwarded UDP "connection" to a pod's port, over a SPDY session that negotiated UDP
/// ([`SpdySession::open_udp`](super::SpdySession::open_udp)): datagrams, whole and in
/// order, both ways.
///
/// - [`send`](Self::send) and [`recv`](Self::recv) take `&self`: one task may send while
///   another receives (share it in an `Arc`). Both are cancel-safe: a `recv` dropped
///   loses nothing, a `send` dropped after it began still sends its datagram whole, with
///   the next `send`.
/// - [`recv`](Self::recv) gives `None` when the node ended the stream (its idle timeout,
///   or the session closing normally). Error text from the node (nothing listening on the
///   port: `error forwarding port 53 to pod web, uid ...: ...`) fails it with kind
///   `Other`; [`error`](Self::error) gives the text too.
/// - Dropping it ends the stream (RST_STREAM, `CANCEL`), and the node closes its socket.
pub struct DatagramStream {
    stream: ForwardedStream,
    recv: Mutex<Receiving>,
    /// What is left to write of the frame being sent.
    send: Mutex<Bytes>,
}

struct Receiving {
    decoder: Decoder,
    buf: Box<[u8]>,
}

impl fmt::Debug for DatagramStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatagramStream")
            .field("port", &self.stream.port())
            .field("request_id", &self.stream.request_id())
            .finish_non_exhaustive()
    }
}

// ===== impl DatagramStream =====

impl DatagramStream {
    pub(super) fn new(stream: ForwardedStream) -> Self {
        DatagramStream {
            stream,
            recv: Mutex::new(Receiving {
                decoder: Decoder::new(),
                buf: Box::new([]),
            }),
            send: Mutex::new(Bytes::new()),
        }
    }

    /// The pod's port.
    pub fn port(&self) -> u16 {
        self.stream.port()
    }

    /// The `requestid` of its streams.
    pub fn request_id(&self) -> u64 {
        self.stream.request_id()
    }

    /// Sends one datagram (empty, or up to [`MAX_DATAGRAM`] bytes; the pod's socket takes
    /// 65,507 at most over IPv4), waiting for the node's flow-control window if need be.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for a datagram too long; the stream or the session ended (the node's
    /// error text, a reset, the session's error).
    pub async fn send(&self, datagram: &[u8]) -> io::Result<()> {
        let mut frame = BytesMut::new();
        udp::encode(datagram, &mut frame)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let mut rest = self.send.lock().await;
        // A frame a cancelled send left half-written goes first, whole.
        self.write_all(&mut rest).await?;
        *rest = frame.freeze();
        self.write_all(&mut rest).await
    }

    async fn write_all(&self, rest: &mut Bytes) -> io::Result<()> {
        while !rest.is_empty() {
            let n = poll_fn(|cx| self.stream.poll_write_shared(cx, rest)).await?;
            rest.advance(n);
        }
        Ok(())
    }

    /// The next datagram from the pod; `None` once the node has ended the stream.
    ///
    /// # Errors
    ///
    /// The node's error text (kind `Other`), a reset, the session's end, or a stream that
    /// ended inside a datagram (`UnexpectedEof`).
    pub async fn recv(&self) -> io::Result<Option<Bytes>> {
        let mut receiving = self.recv.lock().await;
        let Receiving { decoder, buf } = &mut *receiving;
        if buf.is_empty() {
            *buf = vec![0; READ_CHUNK].into_boxed_slice();
        }
        loop {
            if let Some(datagram) = decoder.next_datagram() {
                return Ok(Some(datagram));
            }
            // No more than the datagram needs: the decoder never holds more than one.
            let want = decoder.wanted().min(buf.len());
            let n = poll_fn(|cx| {
                let mut read = ReadBuf::new(&mut buf[..want]);
                ready!(self.stream.poll_read_shared(cx, &mut read))?;
                Poll::Ready(Ok::<_, io::Error>(read.filled().len()))
            })
            .await?;
            if n == 0 {
                if decoder.pending() > 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the stream ended inside a datagram",
                    ));
                }
                // The node closes the error stream right after the data stream: an error
                // it wrote there is what ended the stream.
                return match self.stream.error().await? {
                    Some(text) => Err(io::Error::other(text)),
                    None => Ok(None),
                };
            }
            decoder.extend(&buf[..n]);
        }
    }

    /// Waits for the node to close the error stream, and returns its text: `None` when
    /// it wrote none (see [`ForwardedStream::error`]).
    ///
    /// # Errors
    ///
    /// The session ended before the error stream closed.
    pub async fn error(&self) -> io::Result<Option<String>> {
        self.stream.error().await
    }
}

/// Relays datagrams between the clients of a local UDP `socket` and streams that `open`
/// gives, one [`DatagramStream`] per client address (opened at its first datagram, for
/// example with [`SpdySession::open_udp`](super::SpdySession::open_udp) on a session of
/// its choice). What a stream receives goes back to its client from `socket`.
///
/// A client's stream ends after `idle` with no datagram either way, when the node ends
/// it, or on an error (logged at debug); its next datagram opens a new one. A stream that
/// fails to open drops what its client sent meanwhile. Each client has at most
/// [`CLIENT_QUEUE`] datagrams waiting for its stream; more are dropped.
///
/// Runs until `socket` fails for good (dropping it ends every stream).
///
/// # Errors
///
/// Receiving from `socket` failed with an error that is not about one datagram.
///
/// # Examples
///
/// ```no_run
/// use std::sync::Arc;
/// use std::time::Duration;
///
/// use proxy_portforward::client::{SpdySession, udp, upgrade_spdy_with};
///
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let tcp = tokio::net::TcpStream::connect("127.0.0.1:8001").await?;
/// let path = "/api/v1/namespaces/default/pods/dns/portforward";
/// let offer = proxy_portforward::udp::SPDY_OFFER;
/// let (io, selected) = upgrade_spdy_with(tcp, path, &offer, &[]).await?;
/// let session = SpdySession::builder().protocol(&selected).start(io);
/// if !session.supports_udp() {
///     return Err("the server carries TCP only".into());
/// }
/// let local = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:5353").await?);
/// let open = move |_client| {
///     let session = session.clone();
///     Box::pin(async move { session.open_udp(53).await }) as _
/// };
/// udp::serve_udp(local, open, Duration::from_secs(60)).await?;
/// # Ok(())
/// # }
/// ```
pub async fn serve_udp<F>(socket: Arc<UdpSocket>, open: F, idle: Duration) -> io::Result<()>
where
    F: Fn(SocketAddr) -> BoxFuture<'static, io::Result<DatagramStream>> + Send + Sync + 'static,
{
    let mut clients: HashMap<SocketAddr, mpsc::Sender<Bytes>> = HashMap::new();
    let mut tasks = JoinSet::new();
    // One more than a datagram can be: a longer one is cut, and then not sent.
    let mut buf = vec![0; MAX_DATAGRAM + 1];
    loop {
        let (n, peer) = match socket.recv_from(&mut buf).await {
            Ok(received) => received,
            Err(e) if about_one_datagram(&e) => {
                tracing::debug!(error = %e, "local UDP socket");
                continue;
            }
            Err(e) => return Err(e),
        };
        while tasks.try_join_next().is_some() {}
        if n > MAX_DATAGRAM {
            continue;
        }
        let datagram = Bytes::copy_from_slice(&buf[..n]);
        let datagram = match clients.get(&peer) {
            None => datagram,
            Some(tx) => match tx.try_send(datagram) {
                Ok(()) => continue,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    tracing::debug!(client = %peer, "datagram dropped: its stream is behind");
                    continue;
                }
                Err(mpsc::error::TrySendError::Closed(datagram)) => datagram,
            },
        };
        // A new stream for this client: forget the ended ones first.
        clients.retain(|_, tx| !tx.is_closed());
        let (tx, rx) = mpsc::channel(CLIENT_QUEUE);
        let _ = tx.try_send(datagram);
        clients.insert(peer, tx);
        tasks.spawn(client(socket.clone(), peer, open(peer), rx, idle));
    }
}

/// An error of `recv_from` that concerns one datagram (or an ICMP error for one sent
/// earlier), after which the socket goes on.
fn about_one_datagram(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::HostUnreachable
            | io::ErrorKind::NetworkUnreachable
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

/// One local client's stream, until it ends.
async fn client(
    socket: Arc<UdpSocket>,
    peer: SocketAddr,
    opening: BoxFuture<'static, io::Result<DatagramStream>>,
    mut rx: mpsc::Receiver<Bytes>,
    idle: Duration,
) {
    let stream = match opening.await {
        Ok(stream) => stream,
        Err(error) => {
            tracing::debug!(client = %peer, %error, "UDP port-forward stream not opened");
            return;
        }
    };
    let mut deadline = Instant::now() + idle;
    loop {
        tokio::select! {
            datagram = rx.recv() => {
                let Some(datagram) = datagram else { return };
                if let Err(error) = stream.send(&datagram).await {
                    tracing::debug!(client = %peer, %error, "UDP port-forward stream ended");
                    return;
                }
                deadline = Instant::now() + idle;
            }
            received = stream.recv() => match received {
                Ok(Some(datagram)) => {
                    if let Err(error) = socket.send_to(&datagram, peer).await {
                        tracing::debug!(client = %peer, %error, "datagram to the local client");
                    }
                    deadline = Instant::now() + idle;
                }
                Ok(None) => return,
                Err(error) => {
                    tracing::debug!(client = %peer, %error, "UDP port-forward stream ended");
                    return;
                }
            },
            () = tokio::time::sleep_until(deadline) => return,
        }
    }
}
