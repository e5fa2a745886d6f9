//! [`serve_spdy`]: the node's side of a SPDY/3.1 port-forward session, with I/O.
//!
//! One task owns the connection, the [`Decoder`], the [`Encoder`] (whose header context
//! makes frame order matter) and the [`Session`]; each forwarded connection has a task of
//! its own ([`stream`]) that dials the pod and copies, and talks to the session's task
//! through channels. What the session's task holds is bounded:
//!
//! - client to pod: a stream's data is reported consumed only once written to the pod, so
//!   its [`STREAM_WINDOW`] closes when the pod is slow and only that stream stops; the
//!   session window is [`SESSION_WINDOW`], so slow streams do not stop the others until
//!   together they hold that much (what is held stays bounded by the session window, however
//!   many streams there are). A client that keeps no windows (Go's spdystream, which kubectl
//!   uses, never sends WINDOW_UPDATE) cannot be slowed per stream: reading from it pauses
//!   while [`SESSION_WINDOW`] bytes wait for pods, as the kubelet's own reader does;
//! - pod to client: each stream has two 32 KiB chunks in hand at most, sent as the
//!   client's windows allow; the frames waiting to be written are bounded by
//!   [`OUT_HIGH`], above which neither the client nor the streams are read from.
//!
//! Whether a client keeps windows is learnt ([`FlowControl`]): a WINDOW_UPDATE or
//! SETTINGS says it does, an overrun says it does not, and when a stream has used up its
//! window before either, a PING is sent: answered with no WINDOW_UPDATE before it, the
//! client is taken to keep none.

mod conn;
mod datagram;
mod stream;

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::poll_fn;
use std::io;
use std::sync::Arc;

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use self::conn::{IoStep, poll_io};
use self::stream::{Cmd, Inbound, Stop, Task};
use super::{Observe, PodForward, Transport, Wire};
use crate::spdy::session::{Event, SendError, StreamKind};
use crate::spdy::{Decoder, Encoder, FlowControl, Frame, Session, goaway_status, rst_status};

/// How long the second stream of a request may take to come, as the kubelet's
/// `streamCreationTimeout`: 30 s.
pub const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);

/// The session receive window advertised to the client, and the most of its data held
/// for pods at once: 4 MiB.
pub const SESSION_WINDOW: u32 = 4 << 20;

/// The receive window of each stream, advertised to the client with
/// SETTINGS_INITIAL_WINDOW_SIZE when the session starts: 1 MiB. Past the 64 KiB default
/// so that a client that keeps windows (ours) has enough of one stream's data in flight
/// for bulk uploads; a quarter of [`SESSION_WINDOW`], so one stream whose pod is slow
/// does not stop the others.
pub const STREAM_WINDOW: u32 = 1 << 20;

/// Frames waiting to be written above this (1 MiB) stop reading from the client and from
/// the streams until they are written.
pub const OUT_HIGH: usize = 1 << 20;

/// The largest data frame sent: 32 KiB.
const MAX_DATA_FRAME: usize = 32 * 1024;

/// Bytes read from the client at once.
const READ_CHUNK: usize = 64 * 1024;

/// Chunks from the pod the session's task holds per stream.
const STREAM_CHUNKS: usize = 2;

/// How long frames still waiting are given to go out once the session ends.
const CLOSE_FLUSH: Duration = Duration::from_secs(5);

/// Serves one SPDY/3.1 port-forward session on `io`, an upgraded connection (after the
/// `101 Switching Protocols`), until the client goes away: each request's pair of streams
/// becomes a connection to the pod's port, as the kubelet does it.
///
/// - Both directions are copied, half-closes included: the client's FIN shuts down the
///   pod socket's write side, the pod's FIN is sent as a FIN on the data stream and the
///   error stream is closed (kubectl before 1.32 waits for that to close its connection).
/// - A port that cannot be reached gets the kubelet's message on the error stream
///   ([`kubelet_error_message`](crate::channel::kubelet_error_message)), and both streams
///   are closed; so does a pod socket that fails mid-stream, whose data stream is reset.
///   A pod that resets its connection (or closes it with bytes unread) is the exception:
///   its data stream is reset with no error text, where the kubelet writes its text and
///   kubectl then ends every forward of the session (kubectl#1169). The session carries
///   on with its other streams.
/// - A request whose second stream does not come within [`STREAM_CREATION_TIMEOUT`] is
///   dropped: `timed out waiting for streams` on its error stream, and its stream reset.
/// - A client's RST_STREAM on a data stream closes the pod connection (with an RST if the
///   pod had more to send); its GOAWAY or EOF ends every stream and the session.
/// - A pair whose SYN_STREAMs carry `protocol: udp` is a UDP stream ([`crate::udp`]) when
///   `forward.udp` is set (the client negotiated it): a connected UDP socket to the port,
///   length-prefixed datagrams both ways, ended after `forward.udp`'s idle timeout.
///   Otherwise, or for a `protocol` not known, the error stream gets the reason and
///   nothing is dialed.
///
/// On TCP, set `TCP_NODELAY` on `io` (Go, and so the kubelet and kubectl, always do):
/// frames are written in batches, but a lone WINDOW_UPDATE or PING answer must not wait.
///
/// `forward.observer` hears of the session (`wire` names its protocol) and of each stream,
/// with its byte counts and error.
///
/// # Errors
///
/// Reading from or writing to `io` failed, or the client broke the protocol (after the
/// GOAWAY saying so is sent); every stream is ended first.
///
/// # Examples
///
/// ```no_run
/// use std::sync::Arc;
/// use std::time::Duration;
/// use proxy_portforward::dial::TargetDialer;
/// use proxy_portforward::forward::{PodForward, Stats, Wire, serve_spdy};
///
/// # #[tokio::main]
/// # async fn main() -> std::io::Result<()> {
/// let forward = PodForward {
///     pod: Arc::new("web=127.0.0.1".parse().expect("a pod")),
///     dialer: Arc::new(TargetDialer::new(Duration::from_secs(5))),
///     observer: Arc::new(Stats::new()),
///     client: None,
///     udp: None,
/// };
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:10250").await?;
/// loop {
///     // Here each connection already speaks SPDY; a server answers the HTTP upgrade
///     // first and passes the upgraded connection on.
///     let (conn, peer) = listener.accept().await?;
///     // Small frames (WINDOW_UPDATE, PING) must not wait for Nagle's algorithm.
///     conn.set_nodelay(true)?;
///     let forward = PodForward { client: Some(peer), ..forward.clone() };
///     tokio::spawn(serve_spdy(conn, forward, Wire::Spdy));
/// }
/// # }
/// ```
pub async fn serve_spdy<IO>(io: IO, forward: PodForward, wire: Wire) -> io::Result<()>
where
    IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    forward.observer.session_started(wire);
    // Told even if this future is dropped before it ends.
    let _ended = SessionEnded(forward.observer.clone(), wire);
    Driver::new(io, forward, wire).run().await
}

/// Tells the observer the session ended, when dropped.
struct SessionEnded(Arc<dyn Observe>, Wire);

impl Drop for SessionEnded {
    fn drop(&mut self) {
        self.0.session_ended(self.1);
    }
}

/// What the session's task knows of one forwarded connection, by its data stream.
struct Relay {
    error_stream: u32,
    inbound: mpsc::UnboundedSender<Inbound>,
    stop: watch::Sender<Stop>,
    /// From the pod, in order, waiting for the client's windows.
    outbox: VecDeque<Cmd>,
    permits: Arc<Semaphore>,
    /// Client bytes handed to the stream's task and not yet reported written.
    held: usize,
}

/// A stream whose request waits for its other stream.
struct HalfOpen {
    deadline: Instant,
    stream_id: u32,
}

struct Driver<IO> {
    io: IO,
    forward: PodForward,
    wire: Wire,
    session: Session,
    decoder: Decoder,
    encoder: Encoder,
    input: BytesMut,
    scratch: Box<[u8]>,
    out: BytesMut,
    unflushed: bool,
    relays: HashMap<u32, Relay>,
    by_error: HashMap<u32, u32>,
    /// Data streams whose outbox is not empty.
    busy: HashSet<u32>,
    held: usize,
    half_open: VecDeque<HalfOpen>,
    waiting: HashMap<u32, String>,
    /// The `protocol` header of open streams not yet paired, for those that have one
    /// (UDP, [`crate::udp`]).
    transports: HashMap<u32, String>,
    probe: Option<u32>,
    last_stream: u32,
    cmds_tx: mpsc::UnboundedSender<Cmd>,
    cmds: mpsc::UnboundedReceiver<Cmd>,
    tasks: JoinSet<()>,
}

// ===== impl Driver =====

impl<IO> Drop for Driver<IO> {
    fn drop(&mut self) {
        // If `serve_spdy` is dropped before it ends, the streams' tasks still end (their
        // stop signals' senders are gone) and tell the observer.
        self.tasks.detach_all();
    }
}

impl<IO: AsyncRead + AsyncWrite + Send + Unpin + 'static> Driver<IO> {
    fn new(io: IO, forward: PodForward, wire: Wire) -> Self {
        let (cmds_tx, cmds) = mpsc::unbounded_channel();
        Driver {
            io,
            forward,
            wire,
            session: Session::with_windows(SESSION_WINDOW, STREAM_WINDOW),
            decoder: Decoder::new(),
            encoder: Encoder::new(),
            input: BytesMut::with_capacity(READ_CHUNK),
            scratch: vec![0; READ_CHUNK].into_boxed_slice(),
            out: BytesMut::with_capacity(READ_CHUNK),
            unflushed: false,
            relays: HashMap::new(),
            by_error: HashMap::new(),
            busy: HashSet::new(),
            held: 0,
            half_open: VecDeque::new(),
            waiting: HashMap::new(),
            transports: HashMap::new(),
            probe: None,
            last_stream: 0,
            cmds_tx,
            cmds,
            tasks: JoinSet::new(),
        }
    }

    async fn run(mut self) -> io::Result<()> {
        let result = self.serve().await;
        // Every stream ends with the session; what is queued goes out if it can.
        for relay in self.relays.values() {
            let _ = relay.stop.send(Stop::Closed);
            relay.permits.close();
        }
        // After an I/O error nothing more can be written; after the client broke the
        // protocol, the GOAWAY saying so goes out.
        let writable = match &result {
            Ok(()) => true,
            Err(e) => e.kind() == io::ErrorKind::InvalidData,
        };
        if writable {
            let _ = self.encode_frames();
            let flush = async {
                self.io.write_all(&self.out).await?;
                self.io.flush().await?;
                self.io.shutdown().await
            };
            let _ = tokio::time::timeout(CLOSE_FLUSH, flush).await;
        }
        while self.tasks.join_next().await.is_some() {}
        result
    }

    /// The session's loop: returns at the client's EOF or GOAWAY (`Ok`), or an error.
    async fn serve(&mut self) -> io::Result<()> {
        loop {
            self.pump()?;
            // A client that keeps windows cannot send past them, and must be heard
            // (RST_STREAM, PING) even while every pod is slow; one that keeps none is
            // slowed down by not reading it.
            let held_ok = self.held < SESSION_WINDOW as usize
                || self.session.client_flow_control() == FlowControl::Kept;
            let reading = self.out.len() < OUT_HIGH && held_ok;
            let deadline = self.half_open.front().map(|h| h.deadline);
            let step = {
                let (io, out, unflushed, input, scratch) = (
                    &mut self.io,
                    &mut self.out,
                    &mut self.unflushed,
                    &mut self.input,
                    &mut self.scratch,
                );
                tokio::select! {
                    r = poll_fn(|cx| poll_io(cx, io, out, unflushed, input, scratch, reading)) => Some(r?),
                    Some(cmd) = self.cmds.recv() => {
                        self.command(cmd);
                        None
                    }
                    () = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                        self.expire();
                        None
                    }
                }
            };
            match step {
                Some(IoStep::Read(0)) => return Ok(()),
                Some(IoStep::Read(_)) => {
                    if !self.decode()? {
                        return Ok(());
                    }
                }
                Some(IoStep::Drained) | None => {}
            }
            // Take what else the streams said, in one batch.
            while let Ok(cmd) = self.cmds.try_recv() {
                self.command(cmd);
            }
        }
    }

    /// Decodes and handles every whole frame read; `false` at the client's GOAWAY.
    fn decode(&mut self) -> io::Result<bool> {
        loop {
            let frame = match self.decoder.decode_buf(&mut self.input) {
                Ok(Some(frame)) => frame,
                Ok(None) => return Ok(true),
                Err(e) => {
                    let _ = self.encoder.encode(
                        &Frame::GoAway {
                            last_good_stream_id: self.last_stream,
                            status: goaway_status::PROTOCOL_ERROR,
                        },
                        &mut self.out,
                    );
                    return Err(io::Error::new(io::ErrorKind::InvalidData, e));
                }
            };
            let syn = match &frame {
                Frame::SynStream {
                    stream_id, headers, ..
                } => {
                    if let Some(p) = headers.get_str(crate::udp::PROTOCOL_HEADER) {
                        self.transports.insert(*stream_id, p.to_owned());
                    }
                    Some((*stream_id, headers.get_str("requestid").map(str::to_owned)))
                }
                Frame::Ping { id } if Some(*id) == self.probe => {
                    // Our data waited for a window through a whole round trip and no
                    // WINDOW_UPDATE came: this client keeps no windows.
                    self.probe = None;
                    self.session.assume_no_client_windows();
                    None
                }
                Frame::GoAway { .. } => {
                    let _ = self.session.receive(frame);
                    return Ok(false);
                }
                _ => None,
            };
            if let Err(e) = self.session.receive(frame) {
                let _ = self.encode_frames();
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
            if let Some((id, _)) = syn
                && self.session.stream_kind(id).is_none()
            {
                // Refused by the session: no pairing will come.
                self.transports.remove(&id);
            }
            if let Some((id, request_id)) = syn
                && let Some(kind) = self.session.stream_kind(id)
            {
                self.last_stream = id;
                let request_id = request_id.filter(|r| !r.is_empty()).unwrap_or_else(|| {
                    match kind {
                        StreamKind::Data => id.saturating_sub(2),
                        StreamKind::Error => id,
                    }
                    .to_string()
                });
                self.waiting.insert(id, request_id);
                self.half_open.push_back(HalfOpen {
                    deadline: Instant::now() + STREAM_CREATION_TIMEOUT,
                    stream_id: id,
                });
            }
            // Events as they come, so data reaches streams in order with their requests.
            self.events();
        }
    }

    /// Handles the session's events, moves what the streams queued into frames as the
    /// windows allow, and encodes every frame the session has queued.
    fn pump(&mut self) -> io::Result<()> {
        self.events();
        self.drain_outboxes();
        self.encode_frames()
    }

    fn events(&mut self) {
        while let Some(event) = self.session.poll_event() {
            match event {
                Event::Request {
                    request_id,
                    port,
                    data_stream,
                    error_stream,
                } => self.start(request_id, port, data_stream, error_stream),
                Event::Data {
                    stream_id,
                    data,
                    fin,
                } => self.data(stream_id, data, fin),
                Event::Reset { stream_id, .. } => {
                    if let Some(relay) = self.relays.get(&stream_id) {
                        let _ = relay.stop.send(Stop::Reset);
                    }
                    self.waiting.remove(&stream_id);
                    self.transports.remove(&stream_id);
                }
                // Handled where it is read: the session ends.
                Event::GoAway { .. } => {}
            }
        }
    }

    fn start(&mut self, request_id: String, port: u16, data_stream: u32, error_stream: u32) {
        self.waiting.remove(&data_stream);
        self.waiting.remove(&error_stream);
        let data_transport = self.transports.remove(&data_stream);
        let error_transport = self.transports.remove(&error_stream);
        let mut info = self.forward.stream_info(self.wire, port, request_id);
        // Never TCP for a stream that asked for something else: UDP when negotiated, or
        // a refusal with text.
        let udp = match (data_transport.as_deref(), error_transport.as_deref()) {
            (None | Some("tcp"), None | Some("tcp")) => None,
            (Some(crate::udp::UDP), Some(crate::udp::UDP)) => {
                info.transport = Transport::Udp;
                Some(self.forward.udp.ok_or_else(|| {
                    "UDP port-forward was not negotiated on this session".to_owned()
                }))
            }
            (d, e) if d == e => Some(Err(format!("unsupported stream protocol {:?}", d))),
            (d, e) => Some(Err(format!(
                "the streams disagree on the protocol: data {:?}, error {:?}",
                d.unwrap_or("tcp"),
                e.unwrap_or("tcp")
            ))),
        };
        self.forward.observer.stream_started(&info);
        let (inbound, inbound_rx) = mpsc::unbounded_channel();
        let (stop, stop_rx) = watch::channel(Stop::No);
        let permits = Arc::new(Semaphore::new(STREAM_CHUNKS));
        self.relays.insert(
            data_stream,
            Relay {
                error_stream,
                inbound,
                stop,
                outbox: VecDeque::new(),
                permits: permits.clone(),
                held: 0,
            },
        );
        self.by_error.insert(error_stream, data_stream);
        let task = Task {
            forward: self.forward.clone(),
            info,
            data_stream,
            inbound: inbound_rx,
            stop: stop_rx,
            cmds: self.cmds_tx.clone(),
            permits,
        };
        match udp {
            None => self.tasks.spawn(stream::run(task)),
            Some(udp) => self.tasks.spawn(datagram::run(task, udp)),
        };
        // Reap the tasks that are done, so the set does not grow with the session.
        while self.tasks.try_join_next().is_some() {}
    }

    fn data(&mut self, stream_id: u32, data: Bytes, fin: bool) {
        let len = data.len();
        let Some(relay) = self.relays.get_mut(&stream_id) else {
            // The error stream (kubectl only closes it), or a stream already done.
            self.session.consumed(stream_id, len);
            return;
        };
        if len > 0 {
            if relay.inbound.send(Inbound::Data(data)).is_err() {
                self.session.consumed(stream_id, len);
            } else {
                relay.held += len;
                self.held += len;
            }
        }
        if fin {
            let _ = relay.inbound.send(Inbound::Fin);
        }
    }

    fn command(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Consumed { stream_id, n } => {
                if let Some(relay) = self.relays.get_mut(&stream_id) {
                    let n = n.min(relay.held);
                    relay.held -= n;
                    self.held -= n;
                }
                self.session.consumed(stream_id, n);
            }
            Cmd::Data { stream_id, .. } | Cmd::Finish { stream_id, .. } => {
                if let Some(relay) = self.relays.get_mut(&stream_id) {
                    relay.outbox.push_back(cmd);
                    self.busy.insert(stream_id);
                }
            }
        }
    }

    /// Sends what the streams queued, as far as windows and [`OUT_HIGH`] allow.
    fn drain_outboxes(&mut self) {
        let busy: Vec<u32> = self.busy.iter().copied().collect();
        for id in busy {
            if self.out.len() >= OUT_HIGH {
                return;
            }
            self.drain_outbox(id);
            if self.relays.get(&id).is_none_or(|r| r.outbox.is_empty()) {
                self.busy.remove(&id);
            }
        }
    }

    fn drain_outbox(&mut self, id: u32) {
        while self.out.len() < OUT_HIGH {
            let Some(relay) = self.relays.get_mut(&id) else {
                return;
            };
            let Some(cmd) = relay.outbox.front_mut() else {
                return;
            };
            match cmd {
                Cmd::Data { data, fin, .. } => {
                    let window = self.session.send_window(id);
                    let n = match window {
                        // Reset (by the client, or by the session for a bad
                        // WINDOW_UPDATE): the pod's bytes have nowhere to go.
                        None => {
                            let _ = relay.stop.send(Stop::Reset);
                            data.len()
                        }
                        Some(0) if !data.is_empty() => {
                            if self.probe.is_none()
                                && self.session.client_flow_control() == FlowControl::Unknown
                            {
                                self.probe = Some(self.session.ping());
                            }
                            return;
                        }
                        Some(w) => data.len().min(w).min(MAX_DATA_FRAME),
                    };
                    let last = n == data.len();
                    let chunk = data.split_to(n);
                    let fin = *fin && last;
                    if last {
                        relay.outbox.pop_front();
                        relay.permits.add_permits(1);
                    }
                    if window.is_some() {
                        match self.session.send_data(id, chunk, fin) {
                            Ok(()) | Err(SendError::NotOpen) => {}
                            Err(SendError::Window { .. }) => {
                                debug_assert!(false, "sent within the window");
                            }
                        }
                    }
                    if fin {
                        // The pod is done sending: close the error stream now, as the
                        // kubelet does once a direction ends. kubectl before 1.32 closes
                        // the local connection only when the error stream ends; the
                        // client's direction still goes on to the pod meanwhile.
                        let error = relay.error_stream;
                        if self.session.send_window(error).is_some() {
                            let _ = self.session.send_data(error, Bytes::new(), true);
                        }
                    }
                }
                Cmd::Finish { message, reset, .. } => {
                    let (message, reset) = (message.take(), *reset);
                    self.finish(id, message, reset);
                    return;
                }
                Cmd::Consumed { .. } => {
                    relay.outbox.pop_front();
                }
            }
        }
    }

    /// Closes a forwarded connection's streams and forgets it.
    fn finish(&mut self, data_stream: u32, message: Option<String>, reset: bool) {
        let Some(relay) = self.relays.remove(&data_stream) else {
            return;
        };
        self.by_error.remove(&relay.error_stream);
        self.busy.remove(&data_stream);
        // What the client sent and the pod never took: its windows reopen.
        self.held -= relay.held;
        self.session.consumed(data_stream, relay.held);
        if reset {
            if self.session.stream_kind(data_stream).is_some() {
                self.session.reset(data_stream, rst_status::INTERNAL_ERROR);
            }
        } else if self.session.send_window(data_stream).is_some() {
            let _ = self.session.send_data(data_stream, Bytes::new(), true);
        }
        let message = message.map(Bytes::from).unwrap_or_default();
        let error = relay.error_stream;
        if let Some(window) = self.session.send_window(error) {
            let message = message.slice(..message.len().min(window));
            let _ = self.session.send_data(error, message, true);
        }
    }

    /// Drops the requests whose second stream is late.
    fn expire(&mut self) {
        let now = Instant::now();
        while let Some(h) = self.half_open.front()
            && h.deadline <= now
        {
            let id = h.stream_id;
            self.half_open.pop_front();
            self.transports.remove(&id);
            let Some(request_id) = self.waiting.remove(&id) else {
                continue;
            };
            match self.session.stream_kind(id) {
                Some(StreamKind::Error) => {
                    let text = format!("(request={request_id}) timed out waiting for streams");
                    let _ = self.session.send_data(id, Bytes::from(text), true);
                    if self.session.stream_kind(id).is_some() {
                        self.session.reset(id, rst_status::CANCEL);
                    }
                }
                Some(StreamKind::Data) => self.session.reset(id, rst_status::CANCEL),
                None => {}
            }
        }
    }

    fn encode_frames(&mut self) -> io::Result<()> {
        while let Some(frame) = self.session.poll_frame() {
            self.encoder
                .encode(&frame, &mut self.out)
                .map_err(io::Error::other)?;
        }
        Ok(())
    }
}
