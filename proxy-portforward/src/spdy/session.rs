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
//!   (64 KiB to start, or the sizes given to [`Session::with_windows`] for ours, the
//!   streams' advertised with SETTINGS_INITIAL_WINDOW_SIZE; the client's
//!   SETTINGS_INITIAL_WINDOW_SIZE changes the stream windows we send into). Received data
//!   is counted against our windows, which reopen with WINDOW_UPDATE as the caller reports
//!   the data consumed ([`Session::consumed`]); data we send goes through
//!   [`Session::send_data`], which refuses what the client's windows do not allow.
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

use super::flow::{Breach, StreamFlow, Windows};
pub use super::flow::{DEFAULT_WINDOW, FlowControl, SendError};
use super::frame::{Frame, goaway_status, rst_status};
use super::headers::Headers;

/// What a stream carries, from its `streamtype` header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamKind {
    /// `streamtype: data`: the forwarded connection's bytes, both ways.
    Data,
    /// `streamtype: error`: the node writes an error message there, if any.
    Error,
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

#[derive(Debug)]
struct Stream {
    kind: StreamKind,
    request_id: String,
    flow: StreamFlow,
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
    windows: Windows,
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
        Self::with_session_window(DEFAULT_WINDOW)
    }

    /// A new session whose session receive window is `window` bytes (at least
    /// [`DEFAULT_WINDOW`], at most 2^31 - 1): a WINDOW_UPDATE for stream 0 is queued
    /// that opens it. Streams keep 64 KiB windows each, so with a session window several
    /// times that, one stream whose data is not consumed does not stall the others.
    pub fn with_session_window(window: u32) -> Self {
        Self::with_windows(window, DEFAULT_WINDOW)
    }

    /// A new session whose session receive window is `window` bytes and each of whose
    /// streams' receive windows is `stream_window` bytes (each at least
    /// [`DEFAULT_WINDOW`], at most 2^31 - 1). Past [`DEFAULT_WINDOW`], a SETTINGS with
    /// SETTINGS_INITIAL_WINDOW_SIZE is queued for the streams, then a WINDOW_UPDATE for
    /// stream 0 for the session. With a session window several times the stream window,
    /// one stream whose data is not consumed does not stall the others.
    pub fn with_windows(window: u32, stream_window: u32) -> Self {
        let mut frames = VecDeque::new();
        let windows = Windows::new(window, stream_window, &mut frames);
        Self {
            streams: HashMap::new(),
            pending: HashMap::new(),
            last_client_stream: 0,
            next_ping: 2,
            windows,
            frames,
            events: VecDeque::new(),
            goaway_sent: false,
        }
    }

    /// Whether the client keeps flow control, as far as the session knows.
    pub fn client_flow_control(&self) -> FlowControl {
        self.windows.flow_control()
    }

    /// Declares that the client keeps no windows (unless it has shown it does): from now
    /// on the windows we send into are not enforced and overruns are taken.
    pub fn assume_no_client_windows(&mut self) {
        self.windows.assume_no_windows();
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
                let streams = self.streams.values_mut().map(|s| &mut s.flow);
                if let Err(breach) = self.windows.settings(&entries, streams) {
                    self.breach(0, breach)?;
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
            Frame::WindowUpdate { stream_id, delta } => {
                let stream = self.streams.get_mut(&stream_id).map(|s| &mut s.flow);
                if let Err(breach) = self.windows.window_update(stream_id, delta, stream) {
                    self.breach(stream_id, breach)?;
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
                // Unidirectional: the client may not receive on it, nothing of ours to close.
                flow: self.windows.stream(fin, unidirectional),
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
        let stream = self.streams.get_mut(&stream_id).map(|s| &mut s.flow);
        let overran = "client overran the session window";
        if let Err(breach) = self
            .windows
            .data(data.len(), stream, &mut self.frames, overran)
        {
            return self.breach(stream_id, breach);
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

    /// Acts on a breach of the flow-control rules: resets the stream, or fails the session.
    fn breach(&mut self, stream_id: u32, breach: Breach) -> Result<(), SessionError> {
        match breach {
            Breach::Stream(status) => {
                self.reset(stream_id, status);
                Ok(())
            }
            Breach::Session(why) => Err(self.fail(why)),
        }
    }

    /// Reports `n` bytes of a stream's received data as consumed (written on), which
    /// reopens the windows: a WINDOW_UPDATE goes out once half a window is owed.
    /// More than was received is not given back: a stream's window never grows past its
    /// size, the session's past its size ([`Session::with_windows`]).
    pub fn consumed(&mut self, stream_id: u32, n: usize) {
        let stream = self.streams.get_mut(&stream_id).map(|s| &mut s.flow);
        self.windows
            .consumed(stream_id, stream, n, &mut self.frames);
    }

    /// How many bytes may be sent on `stream_id` now (the smaller of its window and the
    /// session's), or `None` if it is not open for sending.
    /// With a client that keeps no windows ([`FlowControl::Ignored`]) this is 2^31 - 1.
    pub fn send_window(&self, stream_id: u32) -> Option<usize> {
        let s = self.streams.get(&stream_id)?;
        self.windows.send_window(&s.flow)
    }

    /// Queues a data frame on `stream_id` (`fin`: our last), counting it against the
    /// client's windows.
    pub fn send_data(&mut self, stream_id: u32, data: Bytes, fin: bool) -> Result<(), SendError> {
        let stream = self.streams.get_mut(&stream_id).map(|s| &mut s.flow);
        if self
            .windows
            .send(stream_id, stream, data, fin, &mut self.frames)?
        {
            self.remove(stream_id);
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

    fn fail(&mut self, why: &'static str) -> SessionError {
        self.go_away_with(goaway_status::PROTOCOL_ERROR);
        SessionError(why)
    }

    fn remote_fin(&mut self, stream_id: u32) {
        if let Some(s) = self.streams.get_mut(&stream_id) {
            s.flow.remote_closed = true;
            if s.flow.local_closed {
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
