//! [`SpdySession`]: a SPDY/3.1 port-forward session of ours over an upgraded connection,
//! driven by a task; each forwarded connection is a [`ForwardedStream`].

use std::collections::{HashMap, VecDeque};
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use super::stream::ForwardedStream;
use super::udp::DatagramStream;
use crate::spdy::{ClientEvent, ClientSession, Decoder, Encoder, Frame};

/// How often a session PINGs the node by default.
pub const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(30);
/// How long a PING may go unanswered by default before the session is declared dead.
pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(15);
/// The session receive window by default: the node's data waiting to be read, over all
/// streams (each stream has [`DEFAULT_STREAM_WINDOW`] of it at most).
pub const DEFAULT_SESSION_WINDOW: u32 = 4 << 20;
/// Each stream's receive window by default (advertised to the node with
/// SETTINGS_INITIAL_WINDOW_SIZE): 1 MiB, so a node that keeps windows has enough of one
/// stream's data in flight for bulk downloads.
pub const DEFAULT_STREAM_WINDOW: u32 = 1 << 20;
/// Bytes of our data queued for the connection above which writes wait.
pub(super) const OUT_HIGH: usize = 1 << 20;
/// The most bytes put in one data frame.
pub(super) const MAX_DATA_FRAME: usize = 32 << 10;
/// Why [`SpdySession::open_udp`] fails on a session that did not negotiate UDP.
pub const UDP_NOT_NEGOTIATED: &str = "the server does not support UDP port-forward (only proxy \
     port-forward-server does; Kubernetes API servers carry TCP only)";
/// The most error text kept per stream.
const MAX_ERROR_TEXT: usize = 64 << 10;

/// Builds a [`SpdySession`].
#[derive(Clone, Debug)]
pub struct SpdySessionBuilder {
    keepalive: Option<Duration>,
    keepalive_timeout: Duration,
    session_window: u32,
    stream_window: u32,
    udp: bool,
}

/// The client's side of one SPDY/3.1 port-forward session (see the [module
/// docs](super)). Cheap to clone: clones share the session, which ends when the node
/// ends it, the keepalive fails, or every clone and every stream is dropped.
///
/// Memory: the node's data waiting to be read is bounded by the session window (see
/// [`SpdySessionBuilder::session_window`]); a node that keeps no windows (the kubelet's
/// spdystream) is held to it by not reading the connection until streams are read, so a
/// stream left unread then holds up the others, as in kubectl.
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
///
/// use proxy_portforward::client::{SpdySession, upgrade_spdy};
///
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let tcp = tokio::net::TcpStream::connect("127.0.0.1:8001").await?;
/// let path = "/api/v1/namespaces/default/pods/web/portforward";
/// let session = SpdySession::builder()
///     .keepalive(Duration::from_secs(5))
///     .start(upgrade_spdy(tcp, path, &[("host", "127.0.0.1:8001")]).await?);
/// let stream = session.open(80).await?;
/// # drop(stream);
/// let why = session.closed().await;
/// eprintln!("{why}");
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct SpdySession {
    shared: Arc<Shared>,
    guard: Arc<Guard>,
}

/// Aborts the driver once the last handle (session or stream) is gone.
#[derive(Debug)]
pub(super) struct Guard(JoinHandle<()>);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Why a session ended, shared by everything that reports it.
pub(super) type Dead = (io::ErrorKind, Arc<str>);

pub(super) fn dead_error(dead: &Dead) -> io::Error {
    io::Error::new(dead.0, format!("port-forward session ended: {}", dead.1))
}

#[derive(Debug)]
pub(super) struct Shared {
    core: Mutex<Core>,
    /// Frames are queued: the writer has work.
    write: Notify,
    /// A PING of ours was answered.
    pong: Notify,
    /// Buffered data went below the limit: the reader may go on.
    pub(super) drained: Notify,
    closed: watch::Sender<Option<Dead>>,
    /// The upgrade selected UDP streams.
    udp: bool,
}

/// One forwarded connection's state, kept by its data stream's id.
#[derive(Debug, Default)]
pub(super) struct Slot {
    pub(super) error_stream: u32,
    pub(super) recv: VecDeque<Bytes>,
    pub(super) fin: bool,
    pub(super) reset: Option<u32>,
    pub(super) error_text: Vec<u8>,
    pub(super) error_done: bool,
    pub(super) shutdown: bool,
    pub(super) read_waker: Option<Waker>,
    pub(super) write_waker: Option<Waker>,
    pub(super) error_waker: Option<Waker>,
}

#[derive(Debug)]
pub(super) struct Core {
    pub(super) session: ClientSession,
    pub(super) slots: HashMap<u32, Slot>,
    /// Error stream id -> data stream id.
    error_of: HashMap<u32, u32>,
    pub(super) dead: Option<Dead>,
    /// Our data queued and not yet written.
    pub(super) queued: usize,
    pub(super) out_wakers: Vec<Waker>,
    last_pong: Option<u32>,
    /// The node's data received and not yet read, over all streams.
    pub(super) buffered: usize,
    /// Above this, the connection is not read until streams are (a node that keeps no
    /// windows is bounded so).
    pub(super) buffer_limit: usize,
    /// The reader waits for `buffered` to go down.
    read_paused: bool,
}

// ===== impl SpdySessionBuilder =====

impl SpdySessionBuilder {
    /// PING the node this often (default [`DEFAULT_KEEPALIVE`]; `None`: never).
    pub fn keepalive(mut self, interval: impl Into<Option<Duration>>) -> Self {
        self.keepalive = interval.into();
        self
    }

    /// How long a PING may go unanswered before the session is dead (default
    /// [`DEFAULT_KEEPALIVE_TIMEOUT`]).
    pub fn keepalive_timeout(mut self, timeout: Duration) -> Self {
        self.keepalive_timeout = timeout;
        self
    }

    /// The session receive window (default [`DEFAULT_SESSION_WINDOW`]; at least 64 KiB).
    pub fn session_window(mut self, window: u32) -> Self {
        self.session_window = window;
        self
    }

    /// Each stream's receive window (default [`DEFAULT_STREAM_WINDOW`]; at least 64 KiB,
    /// at most 2^31 - 1), advertised to the node with SETTINGS_INITIAL_WINDOW_SIZE. What
    /// the node may send on one stream before it is read; all streams together are still
    /// bounded by the [session window](Self::session_window), so a stream window larger
    /// than that gains nothing.
    pub fn stream_window(mut self, window: u32) -> Self {
        self.stream_window = window;
        self
    }

    /// The protocol the upgrade selected: what [`upgrade_spdy_with`](super::upgrade_spdy_with)
    /// returns, or the tunnel's WebSocket subprotocol from
    /// [`upgrade_websocket`](super::upgrade_websocket). UDP streams
    /// ([`SpdySession::open_udp`]) are allowed only when it is one of this crate's UDP
    /// protocols ([`crate::udp`]); by default none is, as with any Kubernetes server.
    pub fn protocol(mut self, selected: &str) -> Self {
        self.udp = crate::udp::negotiated(selected);
        self
    }

    /// Starts the session on `io`, an upgraded connection (SPDY/3.1, or
    /// [`WebSocketBytes`](crate::forward::WebSocketBytes) for the tunnel), on a task of
    /// its own (so within a Tokio runtime).
    pub fn start<IO>(self, io: IO) -> SpdySession
    where
        IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let (closed, _) = watch::channel(None);
        let shared = Arc::new(Shared {
            core: Mutex::new(Core {
                session: ClientSession::with_windows(self.session_window, self.stream_window),
                slots: HashMap::new(),
                error_of: HashMap::new(),
                dead: None,
                queued: 0,
                out_wakers: Vec::new(),
                last_pong: None,
                buffered: 0,
                buffer_limit: self
                    .session_window
                    .max(crate::spdy::session::DEFAULT_WINDOW)
                    as usize,
                read_paused: false,
            }),
            write: Notify::new(),
            pong: Notify::new(),
            drained: Notify::new(),
            closed,
            udp: self.udp,
        });
        shared.write.notify_one();
        let task = tokio::spawn(drive(io, shared.clone(), self));
        SpdySession {
            shared,
            guard: Arc::new(Guard(task)),
        }
    }
}

// ===== impl SpdySession =====

impl SpdySession {
    /// A builder with the defaults.
    pub fn builder() -> SpdySessionBuilder {
        SpdySessionBuilder {
            keepalive: Some(DEFAULT_KEEPALIVE),
            keepalive_timeout: DEFAULT_KEEPALIVE_TIMEOUT,
            session_window: DEFAULT_SESSION_WINDOW,
            stream_window: DEFAULT_STREAM_WINDOW,
            udp: false,
        }
    }

    /// Starts a session on `io` with the defaults ([`SpdySessionBuilder::start`]).
    pub fn new<IO>(io: IO) -> SpdySession
    where
        IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        Self::builder().start(io)
    }

    /// Opens a forwarded connection to the pod's `port`: kubectl's error and data
    /// streams. The node dials the port once both arrive; a failure to reach it comes back
    /// on the stream (its reads fail with the node's text, [`ForwardedStream::error`]).
    ///
    /// # Errors
    ///
    /// The session has ended, or the node has sent GOAWAY.
    pub async fn open(&self, port: u16) -> io::Result<ForwardedStream> {
        self.open_with(port, false)
    }

    /// Whether the upgrade selected UDP streams ([`SpdySessionBuilder::protocol`]): only
    /// this crate's server does, never a Kubernetes API server or kubelet.
    pub fn supports_udp(&self) -> bool {
        self.shared.udp
    }

    /// Opens a UDP "connection" to the pod's `port` ([`crate::udp`]): datagrams both ways
    /// through a [`DatagramStream`]. The node connects a UDP socket to the port; an error
    /// (nothing listening, reported by ICMP) comes back on the stream.
    ///
    /// # Errors
    ///
    /// At once, with kind `Unsupported` and [`UDP_NOT_NEGOTIATED`], when the session did
    /// not negotiate UDP (nothing is sent: another server would connect TCP); the session
    /// has ended, or the node has sent GOAWAY.
    pub async fn open_udp(&self, port: u16) -> io::Result<DatagramStream> {
        if !self.shared.udp {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                UDP_NOT_NEGOTIATED,
            ));
        }
        let stream = self.open_with(port, true)?;
        Ok(DatagramStream::new(stream))
    }

    fn open_with(&self, port: u16, udp: bool) -> io::Result<ForwardedStream> {
        let mut core = self.shared.lock();
        if let Some(dead) = &core.dead {
            return Err(dead_error(dead));
        }
        let opened = if udp {
            core.session.open_udp(port)
        } else {
            core.session.open(port)
        };
        let Some(opened) = opened else {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                "the node takes no new streams (GOAWAY)",
            ));
        };
        core.slots.insert(
            opened.data_stream,
            Slot {
                error_stream: opened.error_stream,
                ..Slot::default()
            },
        );
        core.error_of
            .insert(opened.error_stream, opened.data_stream);
        drop(core);
        self.shared.write.notify_one();
        Ok(ForwardedStream::new(
            self.shared.clone(),
            self.guard.clone(),
            opened,
            port,
        ))
    }

    /// Waits for the session to end, and says why (an EOF from the node, its GOAWAY and
    /// close, an I/O error, or `TimedOut` when a keepalive PING went unanswered).
    pub async fn closed(&self) -> io::Error {
        let mut rx = self.shared.closed.subscribe();
        match rx.wait_for(Option::is_some).await {
            Ok(dead) => dead_error(dead.as_ref().expect("waited for Some")),
            Err(_) => io::Error::other("port-forward session ended"),
        }
    }

    /// Whether the session has ended.
    pub fn is_closed(&self) -> bool {
        self.shared.lock().dead.is_some()
    }
}

// ===== impl Shared =====

impl Shared {
    pub(super) fn lock(&self) -> MutexGuard<'_, Core> {
        self.core.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn wake_writer(&self) {
        self.write.notify_one();
    }

    fn die(&self, kind: io::ErrorKind, why: impl Into<Arc<str>>) {
        let mut core = self.lock();
        if core.dead.is_some() {
            return;
        }
        let dead: Dead = (kind, why.into());
        core.dead = Some(dead.clone());
        for slot in core.slots.values_mut() {
            slot.wake_all();
        }
        for w in core.out_wakers.drain(..) {
            w.wake();
        }
        drop(core);
        self.closed.send_replace(Some(dead));
        self.pong.notify_waiters();
    }
}

// ===== impl Slot =====

impl Slot {
    pub(super) fn wake_all(&mut self) {
        for w in [
            self.read_waker.take(),
            self.write_waker.take(),
            self.error_waker.take(),
        ]
        .into_iter()
        .flatten()
        {
            w.wake();
        }
    }
}

// ===== impl Core =====

impl Core {
    /// Forgets a forwarded connection (its stream dropped), resetting what is still open.
    pub(super) fn forget(&mut self, data_stream: u32) {
        if let Some(slot) = self.slots.remove(&data_stream) {
            self.error_of.remove(&slot.error_stream);
            let unread: usize = slot.recv.iter().map(Bytes::len).sum();
            self.buffered -= unread;
            self.session.consumed(data_stream, unread);
            let cancel = crate::spdy::rst_status::CANCEL;
            self.session.reset(data_stream, cancel);
            self.session.reset(slot.error_stream, cancel);
        }
    }

    fn dispatch(&mut self, event: ClientEvent) {
        match event {
            ClientEvent::Data {
                stream_id,
                data,
                fin,
            } => {
                if let Some(slot) = self.slots.get_mut(&stream_id) {
                    if !data.is_empty() {
                        self.buffered += data.len();
                        slot.recv.push_back(data);
                    }
                    slot.fin |= fin;
                    slot.wake_all();
                } else if let Some(slot) = self
                    .error_of
                    .get(&stream_id)
                    .and_then(|d| self.slots.get_mut(d))
                {
                    let room = MAX_ERROR_TEXT.saturating_sub(slot.error_text.len());
                    slot.error_text
                        .extend_from_slice(&data[..data.len().min(room)]);
                    slot.error_done |= fin;
                    slot.wake_all();
                    self.session.consumed(stream_id, data.len());
                } else {
                    // A connection already dropped: give the window back.
                    self.session.consumed(stream_id, data.len());
                }
            }
            ClientEvent::Reset { stream_id, status } => {
                if let Some(slot) = self.slots.get_mut(&stream_id) {
                    slot.reset = Some(status);
                    slot.wake_all();
                } else if let Some(slot) = self
                    .error_of
                    .get(&stream_id)
                    .and_then(|d| self.slots.get_mut(d))
                {
                    slot.error_done = true;
                    slot.wake_all();
                }
            }
            ClientEvent::Pong { id } => self.last_pong = self.last_pong.max(Some(id)),
            ClientEvent::GoAway { .. } => {}
        }
    }
}

async fn drive<IO>(io: IO, shared: Arc<Shared>, config: SpdySessionBuilder)
where
    IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (rd, wr) = tokio::io::split(io);
    let (kind, why): (io::ErrorKind, String) = tokio::select! {
        e = read_frames(rd, &shared) => (e.kind(), e.to_string()),
        e = write_frames(wr, &shared) => (e.kind(), e.to_string()),
        e = keepalive(&shared, &config) => (e.kind(), e.to_string()),
    };
    tracing::debug!(%why, "port-forward session ended");
    shared.die(kind, why);
}

async fn read_frames<R: AsyncRead + Unpin>(mut rd: R, shared: &Shared) -> io::Error {
    let mut decoder = Decoder::new();
    let mut buf = BytesMut::with_capacity(64 << 10);
    loop {
        match rd.read_buf(&mut buf).await {
            Ok(0) => {
                return io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the node closed the connection",
                );
            }
            Ok(_) => {}
            Err(e) => return e,
        }
        match receive(shared, &mut decoder, &mut buf) {
            // Only frames to send (PING answers, resets) need the writer: most of what is
            // received (data, WINDOW_UPDATE) queues none, and a wake-up for nothing costs
            // the writer a thread wake-up per frame read.
            Ok(true) => shared.wake_writer(),
            Ok(false) => {}
            Err(e) => {
                // Send the GOAWAY queued, if the writer can, before the session ends.
                shared.wake_writer();
                tokio::task::yield_now().await;
                return e;
            }
        }
        // Bounded memory with a node that ignores our windows: wait for streams to be read.
        loop {
            let drained = shared.drained.notified();
            {
                let mut core = shared.lock();
                core.read_paused = core.buffered >= core.buffer_limit;
                if !core.read_paused {
                    break;
                }
            }
            drained.await;
        }
    }
}

/// Handles the whole frames in `buf`; says whether frames are queued to send.
fn receive(shared: &Shared, decoder: &mut Decoder, buf: &mut BytesMut) -> io::Result<bool> {
    let mut core = shared.lock();
    loop {
        let frame = match decoder.decode_buf(buf) {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string())),
        };
        if let Err(e) = core.session.receive(frame) {
            return Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string()));
        }
        while let Some(event) = core.session.poll_event() {
            let pong = matches!(event, ClientEvent::Pong { .. });
            core.dispatch(event);
            if pong {
                shared.pong.notify_waiters();
            }
        }
    }
    // Windows may have opened: let waiting writers look again.
    for slot in core.slots.values_mut() {
        if let Some(w) = slot.write_waker.take() {
            w.wake();
        }
    }
    Ok(core.session.has_frames())
}

async fn write_frames<W: AsyncWrite + Unpin>(mut wr: W, shared: &Shared) -> io::Error {
    let mut encoder = Encoder::new();
    let mut buf = BytesMut::new();
    loop {
        shared.write.notified().await;
        loop {
            let mut wakers = Vec::new();
            {
                let mut core = shared.lock();
                while let Some(frame) = core.session.poll_frame() {
                    if let Frame::Data { data, .. } = &frame {
                        core.queued = core.queued.saturating_sub(data.len());
                    }
                    if let Err(e) = encoder.encode(&frame, &mut buf) {
                        return io::Error::new(io::ErrorKind::InvalidData, e.to_string());
                    }
                    if buf.len() >= 256 << 10 {
                        break;
                    }
                }
                if buf.is_empty() {
                    break;
                }
                if core.queued < OUT_HIGH {
                    wakers = std::mem::take(&mut core.out_wakers);
                }
            }
            wakers.into_iter().for_each(Waker::wake);
            if let Err(e) = wr.write_all(&buf).await {
                return e;
            }
            if let Err(e) = wr.flush().await {
                return e;
            }
            buf.clear();
        }
    }
}

async fn keepalive(shared: &Shared, config: &SpdySessionBuilder) -> io::Error {
    let Some(interval) = config.keepalive else {
        return std::future::pending().await;
    };
    loop {
        tokio::time::sleep(interval).await;
        let id = shared.lock().session.ping();
        shared.wake_writer();
        let mut deadline = tokio::time::Instant::now() + config.keepalive_timeout;
        loop {
            let answered = shared.pong.notified();
            if shared.lock().last_pong >= Some(id) {
                break;
            }
            tokio::select! {
                () = answered => {}
                () = tokio::time::sleep_until(deadline) => {
                    if shared.lock().read_paused {
                        // The answer waits behind data no one reads yet: not a dead node.
                        deadline = tokio::time::Instant::now() + config.keepalive_timeout;
                        continue;
                    }
                    return io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("no answer to a PING in {:?}", config.keepalive_timeout),
                    );
                }
            }
        }
    }
}
