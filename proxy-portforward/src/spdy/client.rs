//! The client's side of a SPDY/3.1 port-forward session (what kubectl speaks to a node), as
//! a state machine with no I/O: the mirror of [`Session`](super::Session).
//!
//! [`ClientSession::open`] queues kubectl's pair of streams for one forwarded connection,
//! as client-go's `tools/portforward` does: the error stream first (closed at once from our
//! side, as we never write on it), then the data stream, both with the headers
//! `streamtype`, `port` and `requestid` (a counter from 0). Feed every frame the node sends
//! to [`ClientSession::receive`]; send what [`ClientSession::poll_frame`] gives; act on
//! [`ClientSession::poll_event`].
//!
//! Flow control: the session sends SETTINGS first, so a node that keeps windows knows we
//! keep ours; received data is counted against our windows, reopened with WINDOW_UPDATE as
//! the caller reports it consumed ([`ClientSession::consumed`]). Data we send goes through
//! [`ClientSession::send_data`], within the node's windows. A node that keeps none (Go's
//! spdystream, the kubelet's) never gives window back: when the caller is stalled on a
//! window it calls [`ClientSession::probe_windows`], which sends a PING; if the node
//! answers it with no WINDOW_UPDATE or SETTINGS seen so far, its windows are not enforced
//! from then on ([`FlowControl::Ignored`]). Such a node also sends past our windows: an
//! overrun before any WINDOW_UPDATE or SETTINGS from it is taken (and says it keeps none),
//! as the kubelet takes kubectl's; bounding what it sends is then the caller's (stop
//! reading the connection). A node that has shown it keeps windows and overruns one gets
//! the stream reset (`FLOW_CONTROL_ERROR`), or the session ended for the session window.
//!
//! ```
//! use proxy_portforward::spdy::{ClientSession, Frame};
//!
//! let mut session = ClientSession::new();
//! let opened = session.open(8080).expect("no GOAWAY yet");
//! assert_eq!((opened.error_stream, opened.data_stream), (1, 3));
//! // SETTINGS, the error stream's SYN_STREAM and FIN, the data stream's SYN_STREAM.
//! let frames: Vec<Frame> = std::iter::from_fn(|| session.poll_frame()).collect();
//! assert_eq!(frames.len(), 4);
//! ```

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;

use super::flow::{Breach, MAX_WINDOW, StreamFlow, Windows, initial_window_settings};
use super::frame::{Frame, goaway_status, rst_status};
use super::headers::Headers;
use super::session::{DEFAULT_WINDOW, FlowControl, SendError, SessionError};

/// The two streams of one forwarded connection ([`ClientSession::open`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Opened {
    /// The `requestid` both streams carry.
    pub request_id: u64,
    /// The error stream: the node writes its error text there, if any.
    pub error_stream: u32,
    /// The data stream: the connection's bytes, both ways.
    pub data_stream: u32,
}

/// What the session reports to the caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientEvent {
    /// Bytes the node sent on a stream (`fin`: and nothing more will come).
    Data {
        /// The stream.
        stream_id: u32,
        /// The bytes (to report through [`ClientSession::consumed`] once read).
        data: Bytes,
        /// The node's half of the stream is closed.
        fin: bool,
    },
    /// The node reset a stream.
    Reset {
        /// The stream.
        stream_id: u32,
        /// Its status ([`rst_status`]).
        status: u32,
    },
    /// The node answered one of our PINGs.
    Pong {
        /// The PING's id.
        id: u32,
    },
    /// The node takes no new stream; streams above `last_good_stream_id` were not acted on
    /// (they are reset by the session).
    GoAway {
        /// The last stream the node acted on.
        last_good_stream_id: u32,
    },
}

/// The client's side of one SPDY/3.1 port-forward session (see the module docs).
#[derive(Debug)]
pub struct ClientSession {
    streams: HashMap<u32, StreamFlow>,
    next_stream: u32,
    next_request: u64,
    next_ping: u32,
    windows: Windows,
    probe: Option<u32>,
    goaway: bool,
    frames: VecDeque<Frame>,
    events: VecDeque<ClientEvent>,
}

impl Default for ClientSession {
    fn default() -> Self {
        Self::new()
    }
}

// ===== impl ClientSession =====

impl ClientSession {
    /// A new session with 64 KiB windows; a SETTINGS frame (our initial window) is queued
    /// first, which tells the node we keep windows.
    pub fn new() -> Self {
        Self::with_session_window(DEFAULT_WINDOW)
    }

    /// A new session whose session receive window is `window` bytes (at least
    /// [`DEFAULT_WINDOW`], at most 2^31 - 1), opened with a WINDOW_UPDATE after the
    /// SETTINGS. Streams keep 64 KiB windows each, so one stream not read does not stall
    /// the others while the session window lasts.
    pub fn with_session_window(window: u32) -> Self {
        Self::with_windows(window, DEFAULT_WINDOW)
    }

    /// A new session whose session receive window is `window` bytes and each of whose
    /// streams' receive windows is `stream_window` bytes (each at least
    /// [`DEFAULT_WINDOW`], at most 2^31 - 1). The SETTINGS queued first advertises the
    /// stream window (SETTINGS_INITIAL_WINDOW_SIZE, 64 KiB or more), then a WINDOW_UPDATE
    /// for stream 0 opens the session window past 64 KiB. With a session window several
    /// times the stream window, one stream not read does not stall the others.
    pub fn with_windows(window: u32, stream_window: u32) -> Self {
        let mut frames = VecDeque::new();
        let windows = Windows::new(window, stream_window, &mut frames);
        if windows.stream_size() == DEFAULT_WINDOW {
            // Sent even at the default: it tells the node we keep windows.
            frames.push_front(initial_window_settings(DEFAULT_WINDOW));
        }
        ClientSession {
            streams: HashMap::new(),
            next_stream: 1,
            next_request: 0,
            next_ping: 1,
            windows,
            probe: None,
            goaway: false,
            frames,
            events: VecDeque::new(),
        }
    }

    /// Whether the node keeps flow control, as far as the session knows.
    pub fn server_flow_control(&self) -> FlowControl {
        self.windows.flow_control()
    }

    /// Whether the node has sent GOAWAY (no stream can be opened).
    pub fn is_going_away(&self) -> bool {
        self.goaway
    }

    /// The next frame to send.
    pub fn poll_frame(&mut self) -> Option<Frame> {
        self.frames.pop_front()
    }

    /// Whether frames are queued for [`poll_frame`](Self::poll_frame): a caller with a
    /// writer to wake need not wake it otherwise.
    pub fn has_frames(&self) -> bool {
        !self.frames.is_empty()
    }

    /// The next event for the caller.
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    /// Queues kubectl's two streams for a connection to the pod's `port`: the error
    /// stream's SYN_STREAM and FIN, then the data stream's SYN_STREAM. `None` once the
    /// node has sent GOAWAY or the stream ids are used up.
    pub fn open(&mut self, port: u16) -> Option<Opened> {
        self.open_streams(port, false)
    }

    /// Queues the two streams of a UDP "connection" to the pod's `port`, as
    /// [`open`](Self::open) with `protocol: udp` on both ([`crate::udp`]). Only for a
    /// session whose upgrade selected UDP: any other server would connect TCP.
    pub fn open_udp(&mut self, port: u16) -> Option<Opened> {
        self.open_streams(port, true)
    }

    fn open_streams(&mut self, port: u16, udp: bool) -> Option<Opened> {
        let error_stream = self.next_stream;
        let data_stream = error_stream.checked_add(2)?;
        if self.goaway || data_stream > MAX_WINDOW as u32 {
            return None;
        }
        self.next_stream = data_stream + 2;
        let request_id = self.next_request;
        self.next_request += 1;
        for (id, kind) in [(error_stream, "error"), (data_stream, "data")] {
            let mut headers = Headers::new()
                .with("streamtype", kind)
                .with("port", port.to_string())
                .with("requestid", request_id.to_string());
            if udp {
                headers = headers.with(crate::udp::PROTOCOL_HEADER, crate::udp::UDP);
            }
            self.frames.push_back(Frame::syn_stream(id, headers));
            self.streams.insert(id, self.windows.stream(false, false));
            if kind == "error" {
                // Nothing of ours goes on the error stream.
                let _ = self.send_data(id, Bytes::new(), true);
            }
        }
        Some(Opened {
            request_id,
            error_stream,
            data_stream,
        })
    }

    /// Queues a PING of ours (odd id) and returns its id.
    pub fn ping(&mut self) -> u32 {
        let id = self.next_ping;
        self.next_ping = self.next_ping.wrapping_add(2) | 1;
        self.frames.push_back(Frame::Ping { id });
        id
    }

    /// Called while a write waits for window: while the node has not shown whether it
    /// keeps windows, sends a PING (once) whose answer, with still no WINDOW_UPDATE or
    /// SETTINGS seen, means it keeps none.
    pub fn probe_windows(&mut self) {
        if self.windows.flow_control() == FlowControl::Unknown && self.probe.is_none() {
            self.probe = Some(self.ping());
        }
    }

    /// Handles one frame from the node. On an error a GOAWAY is queued: send what
    /// [`poll_frame`](Self::poll_frame) gives and close the connection.
    pub fn receive(&mut self, frame: Frame) -> Result<(), SessionError> {
        match frame {
            Frame::SynStream { stream_id, .. } => {
                // Port-forward nodes open no streams.
                self.frames.push_back(Frame::RstStream {
                    stream_id,
                    status: rst_status::REFUSED_STREAM,
                });
            }
            Frame::SynReply { .. } | Frame::Unknown { .. } => {}
            Frame::Headers { stream_id, fin, .. } => {
                if fin {
                    self.remote_fin(stream_id);
                    self.events.push_back(ClientEvent::Data {
                        stream_id,
                        data: Bytes::new(),
                        fin,
                    });
                }
            }
            Frame::RstStream { stream_id, status } => {
                if self.streams.remove(&stream_id).is_some() {
                    self.events
                        .push_back(ClientEvent::Reset { stream_id, status });
                }
            }
            Frame::Settings { entries, .. } => {
                if let Err(breach) = self.windows.settings(&entries, self.streams.values_mut()) {
                    self.breach(0, breach)?;
                }
            }
            // An even id is the node's: echo it. An odd one answers ours.
            Frame::Ping { id } if id % 2 == 0 => self.frames.push_back(Frame::Ping { id }),
            Frame::Ping { id } => {
                if self.probe == Some(id) {
                    self.probe = None;
                    self.windows.assume_no_windows();
                }
                self.events.push_back(ClientEvent::Pong { id });
            }
            Frame::GoAway {
                last_good_stream_id,
                ..
            } => {
                self.goaway = true;
                let unanswered: Vec<u32> = self
                    .streams
                    .keys()
                    .copied()
                    .filter(|&id| id > last_good_stream_id)
                    .collect();
                for stream_id in unanswered {
                    self.streams.remove(&stream_id);
                    self.events.push_back(ClientEvent::Reset {
                        stream_id,
                        status: rst_status::REFUSED_STREAM,
                    });
                }
                self.events.push_back(ClientEvent::GoAway {
                    last_good_stream_id,
                });
            }
            Frame::WindowUpdate { stream_id, delta } => {
                let stream = self.streams.get_mut(&stream_id);
                if let Err(breach) = self.windows.window_update(stream_id, delta, stream) {
                    self.breach(stream_id, breach)?;
                }
            }
            Frame::Data {
                stream_id,
                fin,
                data,
            } => self.data(stream_id, fin, data)?,
        }
        Ok(())
    }

    fn data(&mut self, stream_id: u32, fin: bool, data: Bytes) -> Result<(), SessionError> {
        let stream = self.streams.get_mut(&stream_id);
        let overran = "node overran the session window";
        if let Err(breach) = self
            .windows
            .data(data.len(), stream, &mut self.frames, overran)
        {
            return self.breach(stream_id, breach);
        }
        if !data.is_empty() || fin {
            self.events.push_back(ClientEvent::Data {
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

    /// Acts on a breach of the flow-control rules: resets the stream (reported as a
    /// [`ClientEvent::Reset`] if it was open), or fails the session.
    fn breach(&mut self, stream_id: u32, breach: Breach) -> Result<(), SessionError> {
        match breach {
            Breach::Stream(status) => {
                self.frames
                    .push_back(Frame::RstStream { stream_id, status });
                if self.streams.remove(&stream_id).is_some() {
                    self.events
                        .push_back(ClientEvent::Reset { stream_id, status });
                }
                Ok(())
            }
            Breach::Session(why) => Err(self.fail(why)),
        }
    }

    /// Reports `n` bytes of a stream's received data as consumed (read), which reopens
    /// the windows: a WINDOW_UPDATE goes out once half a window is owed.
    pub fn consumed(&mut self, stream_id: u32, n: usize) {
        let stream = self.streams.get_mut(&stream_id);
        self.windows
            .consumed(stream_id, stream, n, &mut self.frames);
    }

    /// How many bytes may be sent on `stream_id` now, or `None` if it is not open for
    /// sending. With a node that keeps no windows ([`FlowControl::Ignored`]) this is
    /// 2^31 - 1.
    pub fn send_window(&self, stream_id: u32) -> Option<usize> {
        self.windows.send_window(self.streams.get(&stream_id)?)
    }

    /// Queues a data frame on `stream_id` (`fin`: our last), counted against the node's
    /// windows.
    pub fn send_data(&mut self, stream_id: u32, data: Bytes, fin: bool) -> Result<(), SendError> {
        let stream = self.streams.get_mut(&stream_id);
        if self
            .windows
            .send(stream_id, stream, data, fin, &mut self.frames)?
        {
            self.streams.remove(&stream_id);
        }
        Ok(())
    }

    /// Whether `stream_id` is still open either way.
    pub fn is_open(&self, stream_id: u32) -> bool {
        self.streams.contains_key(&stream_id)
    }

    /// Resets a stream if open: queues RST_STREAM with `status` and forgets it.
    pub fn reset(&mut self, stream_id: u32, status: u32) {
        if self.streams.remove(&stream_id).is_some() {
            self.frames
                .push_back(Frame::RstStream { stream_id, status });
        }
    }

    fn fail(&mut self, why: &'static str) -> SessionError {
        self.frames.push_back(Frame::GoAway {
            last_good_stream_id: 0,
            status: goaway_status::PROTOCOL_ERROR,
        });
        SessionError(why)
    }

    fn remote_fin(&mut self, stream_id: u32) {
        if let Some(s) = self.streams.get_mut(&stream_id) {
            s.remote_closed = true;
            if s.local_closed {
                self.streams.remove(&stream_id);
            }
        }
    }
}

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;
