//! The node's side of a SPDY/3.1 port-forward session, as a state machine with no I/O.
//!
//! Feed it every frame the client sends ([`Session::receive`]); take the frames it wants
//! sent ([`Session::poll_frame`]) and the events for the port-forward layer
//! ([`Session::poll_event`]). It:
//!
//! - accepts client streams (odd ids, each above the last) and answers each SYN_STREAM with
//!   a SYN_REPLY, as the kubelet does;
//! - pairs kubectl's two streams of a forwarded connection by `requestid` (a client that
//!   sends none gets the kubelet's fallback: an error stream's request is its own stream id,
//!   a data stream's its id minus 2), and reports [`Event::Request`] once both are open;
//! - answers PING;
//! - keeps SPDY/3.1 flow control: the session window and each stream's, both ways
//!   (64 KiB to start; the client's SETTINGS_INITIAL_WINDOW_SIZE changes the stream windows
//!   we send into). Received data is counted against our windows, which reopen with
//!   WINDOW_UPDATE as the caller reports the data consumed ([`Session::consumed`]); data we
//!   send goes through [`Session::send_data`], which refuses what the client's windows do
//!   not allow.
//!
//! Timers (the kubelet drops a request whose second stream does not come within 30 s) are
//! the caller's: [`Session::pending_requests`] lists the half-open ones.
//!
//! Clients that keep no windows: Go's spdystream, which kubectl and the kubelet use, never
//! sends WINDOW_UPDATE or SETTINGS and ignores ours, so it neither waits for window nor
//! gives any back. The session tells the two kinds apart ([`FlowControl`]): a client that
//! sends WINDOW_UPDATE or SETTINGS keeps windows; one that overruns a window before either
//! keeps none (its data is taken, as the kubelet takes it), and so does one the caller
//! declares so ([`Session::assume_no_client_windows`], after a PING answered with no
//! WINDOW_UPDATE while our data waited for one). With such a client the windows we send
//! into are not enforced, and bounding what it sends is the caller's (stop reading).

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;

use super::frame::{Frame, goaway_status, rst_status, setting_id};
use super::headers::Headers;

/// The window each stream, and the session, starts with (SPDY/3.1).
pub const DEFAULT_WINDOW: u32 = 64 * 1024;

const MAX_WINDOW: i64 = 0x7FFF_FFFF;

/// What a stream carries, from its `streamtype` header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamKind {
    /// `streamtype: data`: the forwarded connection's bytes, both ways.
    Data,
    /// `streamtype: error`: the node writes an error message there, if any.
    Error,
}

/// How much of `n` consumed bytes a window of `window` with `unacked` bytes already owed
/// may get back without growing past `size`.
fn owed(size: u32, window: i64, unacked: u32, n: u32) -> u32 {
    let room = i64::from(size) - window - i64::from(unacked);
    n.min(room.clamp(0, i64::from(u32::MAX)) as u32)
}

/// Whether the client keeps SPDY/3.1 flow control (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowControl {
    /// Nothing seen yet either way: windows are kept both ways.
    Unknown,
    /// The client sent WINDOW_UPDATE or SETTINGS: windows are kept both ways.
    Kept,
    /// The client overran a window, or the caller said so: none are enforced.
    Ignored,
}

/// What the session reports to the port-forward layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Both streams of a forwarded connection are open: connect to `port`.
    Request {
        /// The client's request id.
        request_id: String,
        /// The pod's port.
        port: u16,
        /// The data stream.
        data_stream: u32,
        /// The error stream.
        error_stream: u32,
    },
    /// Bytes the client sent on a stream (`fin`: and nothing more will come).
    Data {
        /// The stream.
        stream_id: u32,
        /// The bytes (to report through [`Session::consumed`] once written on).
        data: Bytes,
        /// The client's half of the stream is closed.
        fin: bool,
    },
    /// The client reset a stream.
    Reset {
        /// The stream.
        stream_id: u32,
        /// Its status ([`rst_status`]).
        status: u32,
    },
    /// The client will open no more streams.
    GoAway {
        /// The last stream it acted on.
        last_good_stream_id: u32,
    },
}

/// A session error: the session has queued a GOAWAY; send it and close.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionError(pub &'static str);

impl std::fmt::Display for SessionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SPDY session error: {}", self.0)
    }
}

impl std::error::Error for SessionError {}

/// Why [`Session::send_data`] refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendError {
    /// No such open stream, or our half of it is closed.
    NotOpen,
    /// More than the client's windows allow now ([`Session::send_window`]).
    Window {
        /// What may be sent now.
        available: usize,
    },
}

#[derive(Debug)]
struct Stream {
    kind: StreamKind,
    request_id: String,
    /// What we may still send.
    send_window: i64,
    /// What the client may still send.
    recv_window: i64,
    /// Consumed and not yet given back with WINDOW_UPDATE.
    unacked: u32,
    remote_closed: bool,
    local_closed: bool,
}

#[derive(Debug, Default)]
struct Pending {
    port: u16,
    data: Option<u32>,
    error: Option<u32>,
}

/// The node's side of one SPDY/3.1 session (see the module docs).
#[derive(Debug)]
pub struct Session {
    streams: HashMap<u32, Stream>,
    pending: HashMap<String, Pending>,
    last_client_stream: u32,
    next_ping: u32,
    session_send_window: i64,
    session_recv_window: i64,
    session_unacked: u32,
    /// The session receive window we advertise (at least [`DEFAULT_WINDOW`]).
    session_window: u32,
    initial_send_window: i64,
    flow: FlowControl,
    frames: VecDeque<Frame>,
    events: VecDeque<Event>,
    goaway_sent: bool,
}

impl Default for Session {
    fn default() -> Self {
        Self::new()
    }
}

impl Session {
    /// A new session: no streams, 64 KiB windows.
    pub fn new() -> Self {
        Self {
            streams: HashMap::new(),
            pending: HashMap::new(),
            last_client_stream: 0,
            next_ping: 2,
            session_send_window: i64::from(DEFAULT_WINDOW),
            session_recv_window: i64::from(DEFAULT_WINDOW),
            session_unacked: 0,
            session_window: DEFAULT_WINDOW,
            initial_send_window: i64::from(DEFAULT_WINDOW),
            flow: FlowControl::Unknown,
            frames: VecDeque::new(),
            events: VecDeque::new(),
            goaway_sent: false,
        }
    }

    /// A new session whose session receive window is `window` bytes (at least
    /// [`DEFAULT_WINDOW`], at most 2^31 - 1): a WINDOW_UPDATE for stream 0 is queued
    /// that opens it. Streams keep 64 KiB windows each, so with a session window several
    /// times that, one stream whose data is not consumed does not stall the others.
    pub fn with_session_window(window: u32) -> Self {
        let mut s = Self::new();
        let window = window.clamp(DEFAULT_WINDOW, MAX_WINDOW as u32);
        if window > DEFAULT_WINDOW {
            s.session_window = window;
            s.session_recv_window = i64::from(window);
            s.frames.push_back(Frame::WindowUpdate {
                stream_id: 0,
                delta: window - DEFAULT_WINDOW,
            });
        }
        s
    }

    /// Whether the client keeps flow control, as far as the session knows.
    pub fn client_flow_control(&self) -> FlowControl {
        self.flow
    }

    /// Declares that the client keeps no windows (unless it has shown it does): from now
    /// on the windows we send into are not enforced and overruns are taken.
    pub fn assume_no_client_windows(&mut self) {
        if self.flow == FlowControl::Unknown {
            self.flow = FlowControl::Ignored;
        }
    }

    /// The next frame to send.
    pub fn poll_frame(&mut self) -> Option<Frame> {
        self.frames.pop_front()
    }

    /// The next event for the port-forward layer.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The request ids with one stream open and the other not yet.
    pub fn pending_requests(&self) -> impl Iterator<Item = &str> {
        self.pending.keys().map(String::as_str)
    }

    /// The kind of an open stream.
    pub fn stream_kind(&self, stream_id: u32) -> Option<StreamKind> {
        self.streams.get(&stream_id).map(|s| s.kind)
    }

    /// Queues a PING of ours (even id) and returns its id.
    pub fn ping(&mut self) -> u32 {
        let id = self.next_ping;
        self.next_ping = self.next_ping.wrapping_add(2).max(2);
        self.frames.push_back(Frame::Ping { id });
        id
    }

    /// Handles one frame from the client. On an error a GOAWAY is queued: send what
    /// [`poll_frame`](Self::poll_frame) gives and close the connection.
    pub fn receive(&mut self, frame: Frame) -> Result<(), SessionError> {
        match frame {
            Frame::SynStream {
                stream_id,
                fin,
                unidirectional,
                headers,
                ..
            } => {
                self.syn_stream(stream_id, fin, unidirectional, &headers)?;
            }
            Frame::SynReply { .. } => return Err(self.fail("SYN_REPLY from the client")),
            Frame::Headers { stream_id, fin, .. } => {
                if fin {
                    self.remote_fin(stream_id);
                }
            }
            Frame::RstStream { stream_id, status } => {
                if self.streams.contains_key(&stream_id) {
                    self.remove(stream_id);
                    self.events.push_back(Event::Reset { stream_id, status });
                }
            }
            Frame::Settings { entries, .. } => {
                self.windows_kept();
                for e in entries {
                    if e.id == setting_id::INITIAL_WINDOW_SIZE {
                        if i64::from(e.value) > MAX_WINDOW {
                            return Err(self.fail("SETTINGS_INITIAL_WINDOW_SIZE over 2^31 - 1"));
                        }
                        let delta = i64::from(e.value) - self.initial_send_window;
                        self.initial_send_window = i64::from(e.value);
                        for s in self.streams.values_mut() {
                            s.send_window += delta;
                        }
                    }
                }
            }
            // An odd id is the client's: echo it. An even one answers ours.
            Frame::Ping { id } if id % 2 == 1 => self.frames.push_back(Frame::Ping { id }),
            Frame::Ping { .. } => {}
            Frame::GoAway {
                last_good_stream_id,
                ..
            } => {
                self.events.push_back(Event::GoAway {
                    last_good_stream_id,
                });
            }
            Frame::WindowUpdate {
                stream_id: 0,
                delta,
            } => {
                self.windows_kept();
                let w = self.session_send_window + i64::from(delta);
                if delta == 0 || w > MAX_WINDOW {
                    return Err(self.fail("bad session WINDOW_UPDATE"));
                }
                self.session_send_window = w;
            }
            Frame::WindowUpdate { stream_id, delta } => {
                self.windows_kept();
                if let Some(s) = self.streams.get_mut(&stream_id) {
                    let w = s.send_window + i64::from(delta);
                    if delta == 0 || w > MAX_WINDOW {
                        self.reset(stream_id, rst_status::FLOW_CONTROL_ERROR);
                    } else {
                        s.send_window = w;
                    }
                }
            }
            Frame::Data {
                stream_id,
                fin,
                data,
            } => self.data(stream_id, fin, data)?,
            Frame::Unknown { .. } => {}
        }
        Ok(())
    }

    fn syn_stream(
        &mut self,
        id: u32,
        fin: bool,
        unidirectional: bool,
        headers: &Headers,
    ) -> Result<(), SessionError> {
        if id & 1 == 0 || id <= self.last_client_stream {
            return Err(self.fail("client stream id not odd and increasing"));
        }
        self.last_client_stream = id;
        if self.goaway_sent {
            self.frames.push_back(Frame::RstStream {
                stream_id: id,
                status: rst_status::REFUSED_STREAM,
            });
            return Ok(());
        }
        let kind = match headers.get_str("streamtype") {
            Some("data") => StreamKind::Data,
            Some("error") => StreamKind::Error,
            _ => {
                self.frames.push_back(Frame::RstStream {
                    stream_id: id,
                    status: rst_status::PROTOCOL_ERROR,
                });
                return Ok(());
            }
        };
        let port = headers
            .get_str("port")
            .and_then(|p| p.parse::<u16>().ok())
            .filter(|&p| p != 0);
        let request_id = match headers.get_str("requestid") {
            Some(r) if !r.is_empty() => r.to_owned(),
            _ if kind == StreamKind::Data => id.saturating_sub(2).to_string(),
            _ => id.to_string(),
        };
        let Some(port) = port else {
            self.frames.push_back(Frame::RstStream {
                stream_id: id,
                status: rst_status::PROTOCOL_ERROR,
            });
            return Ok(());
        };
        let pending = self.pending.entry(request_id.clone()).or_default();
        let slot = match kind {
            StreamKind::Data => &mut pending.data,
            StreamKind::Error => &mut pending.error,
        };
        if slot.is_some() || (pending.port != 0 && pending.port != port) {
            // A second stream of the same kind for one request, or another port.
            self.frames.push_back(Frame::RstStream {
                stream_id: id,
                status: rst_status::PROTOCOL_ERROR,
            });
            return Ok(());
        }
        *slot = Some(id);
        pending.port = port;
        self.streams.insert(
            id,
            Stream {
                kind,
                request_id: request_id.clone(),
                send_window: self.initial_send_window,
                recv_window: i64::from(DEFAULT_WINDOW),
                unacked: 0,
                remote_closed: fin,
                // The client may not receive on it: nothing of ours to close.
                local_closed: unidirectional,
            },
        );
        self.frames.push_back(Frame::SynReply {
            stream_id: id,
            fin: false,
            headers: Headers::new(),
        });
        if let Some(Pending {
            port,
            data: Some(data_stream),
            error: Some(error_stream),
        }) = self.pending.get(&request_id)
        {
            let event = Event::Request {
                request_id: request_id.clone(),
                port: *port,
                data_stream: *data_stream,
                error_stream: *error_stream,
            };
            self.pending.remove(&request_id);
            self.events.push_back(event);
        }
        Ok(())
    }

    fn data(&mut self, stream_id: u32, fin: bool, data: Bytes) -> Result<(), SessionError> {
        let len = data.len() as i64;
        self.session_recv_window -= len;
        if self.session_recv_window < 0 && !self.overrun_taken() {
            return Err(self.fail("client overran the session window"));
        }
        let Some(s) = self.streams.get_mut(&stream_id) else {
            // Still counted against the session window; give it back at once.
            self.give_back_session(data.len() as u32);
            self.frames.push_back(Frame::RstStream {
                stream_id,
                status: rst_status::INVALID_STREAM,
            });
            return Ok(());
        };
        if s.remote_closed {
            self.give_back_session(data.len() as u32);
            self.reset(stream_id, rst_status::STREAM_ALREADY_CLOSED);
            return Ok(());
        }
        s.recv_window -= len;
        if s.recv_window < 0 && !self.overrun_taken() {
            self.give_back_session(data.len() as u32);
            self.reset(stream_id, rst_status::FLOW_CONTROL_ERROR);
            return Ok(());
        }
        if !data.is_empty() || fin {
            self.events.push_back(Event::Data {
                stream_id,
                data,
                fin,
            });
        }
        if fin {
            self.remote_fin(stream_id);
        }
        Ok(())
    }

    /// Reports `n` bytes of a stream's received data as consumed (written on), which
    /// reopens the windows: a WINDOW_UPDATE goes out once half a window is owed.
    /// More than was received is not given back: a stream's window never grows past
    /// 64 KiB, the session's past its size ([`Session::with_session_window`]).
    pub fn consumed(&mut self, stream_id: u32, n: usize) {
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        self.give_back_session(n);
        if let Some(s) = self.streams.get_mut(&stream_id) {
            s.unacked += owed(DEFAULT_WINDOW, s.recv_window, s.unacked, n);
            if s.unacked >= DEFAULT_WINDOW / 2 && !s.remote_closed {
                s.recv_window += i64::from(s.unacked);
                self.frames.push_back(Frame::WindowUpdate {
                    stream_id,
                    delta: s.unacked,
                });
                s.unacked = 0;
            }
        }
    }

    fn give_back_session(&mut self, n: u32) {
        self.session_unacked += owed(
            self.session_window,
            self.session_recv_window,
            self.session_unacked,
            n,
        );
        if self.session_unacked >= (self.session_window / 2).min(DEFAULT_WINDOW / 2) {
            self.session_recv_window += i64::from(self.session_unacked);
            self.frames.push_back(Frame::WindowUpdate {
                stream_id: 0,
                delta: self.session_unacked,
            });
            self.session_unacked = 0;
        }
    }

    /// How many bytes may be sent on `stream_id` now (the smaller of its window and the
    /// session's), or `None` if it is not open for sending.
    /// With a client that keeps no windows ([`FlowControl::Ignored`]) this is 2^31 - 1.
    pub fn send_window(&self, stream_id: u32) -> Option<usize> {
        let s = self.streams.get(&stream_id).filter(|s| !s.local_closed)?;
        if self.flow == FlowControl::Ignored {
            return Some(MAX_WINDOW as usize);
        }
        Some(s.send_window.min(self.session_send_window).max(0) as usize)
    }

    /// Queues a data frame on `stream_id` (`fin`: our last), counting it against the
    /// client's windows.
    pub fn send_data(&mut self, stream_id: u32, data: Bytes, fin: bool) -> Result<(), SendError> {
        let available = self.send_window(stream_id).ok_or(SendError::NotOpen)?;
        if data.len() > available {
            return Err(SendError::Window { available });
        }
        let s = self.streams.get_mut(&stream_id).ok_or(SendError::NotOpen)?;
        s.send_window -= data.len() as i64;
        self.session_send_window -= data.len() as i64;
        self.frames.push_back(Frame::Data {
            stream_id,
            fin,
            data,
        });
        if fin {
            s.local_closed = true;
            if s.remote_closed {
                self.remove(stream_id);
            }
        }
        Ok(())
    }

    /// Resets a stream: queues RST_STREAM with `status` and forgets it.
    pub fn reset(&mut self, stream_id: u32, status: u32) {
        self.remove(stream_id);
        self.frames
            .push_back(Frame::RstStream { stream_id, status });
    }

    /// Queues GOAWAY (status OK): no new stream will be accepted.
    pub fn go_away(&mut self) {
        self.go_away_with(goaway_status::OK);
    }

    fn go_away_with(&mut self, status: u32) {
        if !self.goaway_sent {
            self.goaway_sent = true;
            self.frames.push_back(Frame::GoAway {
                last_good_stream_id: self.last_client_stream,
                status,
            });
        }
    }

    fn windows_kept(&mut self) {
        if self.flow == FlowControl::Unknown {
            self.flow = FlowControl::Kept;
        }
    }

    /// Whether an overrun is taken: the client has shown no windows, or now shows so.
    fn overrun_taken(&mut self) -> bool {
        if self.flow == FlowControl::Unknown {
            self.flow = FlowControl::Ignored;
        }
        self.flow == FlowControl::Ignored
    }

    fn fail(&mut self, why: &'static str) -> SessionError {
        self.go_away_with(goaway_status::PROTOCOL_ERROR);
        SessionError(why)
    }

    fn remote_fin(&mut self, stream_id: u32) {
        if let Some(s) = self.streams.get_mut(&stream_id) {
            s.remote_closed = true;
            if s.local_closed {
                self.remove(stream_id);
            }
        }
    }

    fn remove(&mut self, stream_id: u32) {
        if let Some(s) = self.streams.remove(&stream_id)
            && let Some(p) = self.pending.get_mut(&s.request_id)
        {
            match s.kind {
                StreamKind::Data if p.data == Some(stream_id) => p.data = None,
                StreamKind::Error if p.error == Some(stream_id) => p.error = None,
                _ => {}
            }
            if p.data.is_none() && p.error.is_none() {
                self.pending.remove(&s.request_id);
            }
        }
    }
}
