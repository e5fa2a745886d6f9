//! SPDY/3.1 flow control, with no I/O: the one core that both ends of a session keep
//! (the node's [`Session`](super::Session) and the client's
//! [`ClientSession`](super::ClientSession)).
//!
//! [`Windows`] holds the session's windows both ways and whether the peer keeps windows at
//! all ([`FlowControl`]); each stream's own windows and halves are a [`StreamFlow`] that the
//! session keeps with the rest of the stream. The session hands the stream to the method
//! for each event (a DATA frame received, data consumed, data sent, WINDOW_UPDATE or
//! SETTINGS received) and acts on what comes back: the frames to send are queued on the
//! session's queue, the resets and session errors are the session's to carry out.
//!
//! The rules:
//!
//! - each stream, and the session, starts with [`DEFAULT_WINDOW`] both ways; our receive
//!   windows may be larger ([`Windows::new`]): the session's is opened with a
//!   WINDOW_UPDATE for stream 0, the streams' with SETTINGS_INITIAL_WINDOW_SIZE, both
//!   queued when the session starts. Data the peer sent before it saw that SETTINGS it
//!   counted against 64 KiB; we count every stream's data against the larger size from
//!   the start, which is safe as we only ever enlarge;
//! - received data is counted against our windows, which consumed data reopens with a
//!   WINDOW_UPDATE once half a window is owed (for a stream: half of its size; for the
//!   session: half of its size, at most 32 KiB); a window never grows past its size,
//!   whatever is reported consumed;
//! - data we send is counted against the peer's windows, which its WINDOW_UPDATE reopens
//!   and its SETTINGS_INITIAL_WINDOW_SIZE moves for every stream;
//! - a peer that sends WINDOW_UPDATE or SETTINGS keeps windows (ours do not count: the
//!   overruns are always measured against the sizes we advertised); one that overruns a window
//!   before either keeps none (its data is taken, as the kubelet takes kubectl's, and its
//!   windows are no longer enforced); one that keeps windows and overruns one breaks the
//!   rules: `FLOW_CONTROL_ERROR` for a stream, a session error for the session window.

use std::collections::VecDeque;

use bytes::Bytes;

use super::frame::{Frame, Setting, rst_status, setting_id};

/// The window each stream, and the session, starts with (SPDY/3.1).
pub const DEFAULT_WINDOW: u32 = 64 * 1024;

/// The largest window SPDY/3.1 allows, 2^31 - 1.
pub(super) const MAX_WINDOW: i64 = 0x7FFF_FFFF;

/// Whether the peer keeps SPDY/3.1 flow control (see [`Session`](super::Session)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowControl {
    /// Nothing seen yet either way: windows are kept both ways.
    Unknown,
    /// The peer sent WINDOW_UPDATE or SETTINGS: windows are kept both ways.
    Kept,
    /// The peer overran a window, or the caller said so: none are enforced.
    Ignored,
}

/// Why [`Session::send_data`](super::Session::send_data) refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendError {
    /// No such open stream, or our half of it is closed.
    NotOpen,
    /// More than the client's windows allow now
    /// ([`Session::send_window`](super::Session::send_window)).
    Window {
        /// What may be sent now.
        available: usize,
    },
}

/// A frame that breaks the flow-control rules, for the session to act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Breach {
    /// Reset the stream (RST_STREAM with this status); the session goes on.
    Stream(u32),
    /// End the session (GOAWAY): the peer overran the session window, or sent a bad
    /// session WINDOW_UPDATE or SETTINGS.
    Session(&'static str),
}

/// The SETTINGS frame that advertises `size` as every stream's initial receive window.
pub(super) fn initial_window_settings(size: u32) -> Frame {
    Frame::Settings {
        clear: false,
        entries: vec![Setting {
            flags: 0,
            id: setting_id::INITIAL_WINDOW_SIZE,
            value: size,
        }],
    }
}

/// How much of `n` consumed bytes a window of `window` with `unacked` bytes already owed
/// may get back without growing past `size`.
fn owed(size: u32, window: i64, unacked: u32, n: u32) -> u32 {
    let room = i64::from(size) - window - i64::from(unacked);
    n.min(room.clamp(0, i64::from(u32::MAX)) as u32)
}

/// One stream's windows both ways, and its halves.
#[derive(Debug)]
pub(super) struct StreamFlow {
    /// What we may still send.
    send_window: i64,
    /// What the peer may still send.
    recv_window: i64,
    /// Consumed and not yet given back with WINDOW_UPDATE.
    unacked: u32,
    /// The peer's half is closed: nothing more to receive.
    pub(super) remote_closed: bool,
    /// Our half is closed: nothing more to send.
    pub(super) local_closed: bool,
}

/// The session's windows both ways, and what is known of the peer's flow control.
#[derive(Debug)]
pub(super) struct Windows {
    /// What we may still send on the session.
    send: i64,
    /// What the peer may still send on the session.
    recv: i64,
    /// Consumed and not yet given back with a session WINDOW_UPDATE.
    unacked: u32,
    /// The session receive window we advertise (at least [`DEFAULT_WINDOW`]).
    size: u32,
    /// The receive window each stream has, which we advertise with
    /// SETTINGS_INITIAL_WINDOW_SIZE (at least [`DEFAULT_WINDOW`]).
    stream_size: u32,
    /// The send window each new stream starts with (the peer's SETTINGS).
    initial_send: i64,
    flow: FlowControl,
}

// ===== impl Windows =====

impl Windows {
    /// The windows of a new session whose receive window is `size` bytes and each of whose
    /// streams' receive windows is `stream_size` bytes (both clamped to [`DEFAULT_WINDOW`]
    /// ..= 2^31 - 1). Past [`DEFAULT_WINDOW`], the frames that open them are queued on
    /// `frames`: a SETTINGS with SETTINGS_INITIAL_WINDOW_SIZE for the streams
    /// ([`initial_window_settings`]), then the WINDOW_UPDATE for stream 0.
    pub(super) fn new(size: u32, stream_size: u32, frames: &mut VecDeque<Frame>) -> Self {
        let size = size.clamp(DEFAULT_WINDOW, MAX_WINDOW as u32);
        let stream_size = stream_size.clamp(DEFAULT_WINDOW, MAX_WINDOW as u32);
        if stream_size > DEFAULT_WINDOW {
            frames.push_back(initial_window_settings(stream_size));
        }
        if size > DEFAULT_WINDOW {
            frames.push_back(Frame::WindowUpdate {
                stream_id: 0,
                delta: size - DEFAULT_WINDOW,
            });
        }
        Self {
            send: i64::from(DEFAULT_WINDOW),
            recv: i64::from(size),
            unacked: 0,
            size,
            stream_size,
            initial_send: i64::from(DEFAULT_WINDOW),
            flow: FlowControl::Unknown,
        }
    }

    /// The receive window each stream has (see [`Windows::new`]).
    pub(super) fn stream_size(&self) -> u32 {
        self.stream_size
    }

    /// Whether the peer keeps flow control, as far as is known.
    pub(super) fn flow_control(&self) -> FlowControl {
        self.flow
    }

    /// The peer keeps no windows (unless it has shown it does): from now on its windows
    /// are not enforced and overruns are taken.
    pub(super) fn assume_no_windows(&mut self) {
        if self.flow == FlowControl::Unknown {
            self.flow = FlowControl::Ignored;
        }
    }

    /// The windows of a new stream, with its halves as given.
    pub(super) fn stream(&self, remote_closed: bool, local_closed: bool) -> StreamFlow {
        StreamFlow {
            send_window: self.initial_send,
            recv_window: i64::from(self.stream_size),
            unacked: 0,
            remote_closed,
            local_closed,
        }
    }

    /// Counts a DATA frame of `len` bytes on `stream` (`None`: no such open stream).
    /// `Ok`: hand the data on. A [`Breach::Stream`] refuses it (its bytes are back in the
    /// session window): no such stream, its remote half closed, or its window overrun by a
    /// peer that keeps windows. The session window overrun by such a peer is a
    /// [`Breach::Session`] that says `overran` (the session's words for it).
    pub(super) fn data(
        &mut self,
        len: usize,
        stream: Option<&mut StreamFlow>,
        frames: &mut VecDeque<Frame>,
        overran: &'static str,
    ) -> Result<(), Breach> {
        self.recv -= len as i64;
        if self.recv < 0 && !self.overrun_taken() {
            return Err(Breach::Session(overran));
        }
        let status = match stream {
            None => rst_status::INVALID_STREAM,
            Some(s) if s.remote_closed => rst_status::STREAM_ALREADY_CLOSED,
            Some(s) => {
                s.recv_window -= len as i64;
                if s.recv_window >= 0 || self.overrun_taken() {
                    return Ok(());
                }
                rst_status::FLOW_CONTROL_ERROR
            }
        };
        self.give_back(len as u32, frames);
        Err(Breach::Stream(status))
    }

    /// Counts `n` bytes received on `stream` as consumed: the windows reopen, with a
    /// WINDOW_UPDATE queued once half a window is owed (none for a stream whose remote
    /// half is closed).
    pub(super) fn consumed(
        &mut self,
        stream_id: u32,
        stream: Option<&mut StreamFlow>,
        n: usize,
        frames: &mut VecDeque<Frame>,
    ) {
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        self.give_back(n, frames);
        if let Some(s) = stream {
            s.unacked += owed(self.stream_size, s.recv_window, s.unacked, n);
            if s.unacked >= self.stream_size / 2 && !s.remote_closed {
                s.recv_window += i64::from(s.unacked);
                frames.push_back(Frame::WindowUpdate {
                    stream_id,
                    delta: s.unacked,
                });
                s.unacked = 0;
            }
        }
    }

    /// Gives `n` bytes back to the session receive window.
    fn give_back(&mut self, n: u32, frames: &mut VecDeque<Frame>) {
        self.unacked += owed(self.size, self.recv, self.unacked, n);
        if self.unacked >= (self.size / 2).min(DEFAULT_WINDOW / 2) {
            self.recv += i64::from(self.unacked);
            frames.push_back(Frame::WindowUpdate {
                stream_id: 0,
                delta: self.unacked,
            });
            self.unacked = 0;
        }
    }

    /// How many bytes may be sent on `stream` now (the smaller of its window and the
    /// session's), or `None` if our half is closed. With a peer that keeps no windows
    /// ([`FlowControl::Ignored`]) this is 2^31 - 1.
    pub(super) fn send_window(&self, stream: &StreamFlow) -> Option<usize> {
        if stream.local_closed {
            return None;
        }
        if self.flow == FlowControl::Ignored {
            return Some(MAX_WINDOW as usize);
        }
        Some(stream.send_window.min(self.send).max(0) as usize)
    }

    /// Queues a DATA frame on `stream` (`fin`: our last), counted against the peer's
    /// windows. `Ok(true)`: the stream is now closed both ways, to be forgotten.
    pub(super) fn send(
        &mut self,
        stream_id: u32,
        stream: Option<&mut StreamFlow>,
        data: Bytes,
        fin: bool,
        frames: &mut VecDeque<Frame>,
    ) -> Result<bool, SendError> {
        let s = stream.ok_or(SendError::NotOpen)?;
        let available = self.send_window(s).ok_or(SendError::NotOpen)?;
        if data.len() > available {
            return Err(SendError::Window { available });
        }
        s.send_window -= data.len() as i64;
        self.send -= data.len() as i64;
        frames.push_back(Frame::Data {
            stream_id,
            fin,
            data,
        });
        if fin {
            s.local_closed = true;
        }
        Ok(fin && s.remote_closed)
    }

    /// A WINDOW_UPDATE from the peer: for the session if `stream_id` is 0, else for
    /// `stream` (`None`: not open, nothing to do). A zero delta, or one that takes a
    /// window past 2^31 - 1, is a breach.
    pub(super) fn window_update(
        &mut self,
        stream_id: u32,
        delta: u32,
        stream: Option<&mut StreamFlow>,
    ) -> Result<(), Breach> {
        self.windows_kept();
        let (window, breach) = match (stream_id, stream) {
            (0, _) => (&mut self.send, Breach::Session("bad session WINDOW_UPDATE")),
            (_, Some(s)) => (
                &mut s.send_window,
                Breach::Stream(rst_status::FLOW_CONTROL_ERROR),
            ),
            (_, None) => return Ok(()),
        };
        let w = *window + i64::from(delta);
        if delta == 0 || w > MAX_WINDOW {
            return Err(breach);
        }
        *window = w;
        Ok(())
    }

    /// SETTINGS from the peer: SETTINGS_INITIAL_WINDOW_SIZE moves the send window of every
    /// stream (`streams`, all those open) by its change. A value past 2^31 - 1 is a
    /// session breach (the entries before it are applied).
    pub(super) fn settings<'a>(
        &mut self,
        entries: &[Setting],
        streams: impl Iterator<Item = &'a mut StreamFlow>,
    ) -> Result<(), Breach> {
        self.windows_kept();
        let mut delta = 0;
        let mut result = Ok(());
        for e in entries {
            if e.id == setting_id::INITIAL_WINDOW_SIZE {
                if i64::from(e.value) > MAX_WINDOW {
                    result = Err(Breach::Session(
                        "SETTINGS_INITIAL_WINDOW_SIZE over 2^31 - 1",
                    ));
                    break;
                }
                delta += i64::from(e.value) - self.initial_send;
                self.initial_send = i64::from(e.value);
            }
        }
        if delta != 0 {
            for s in streams {
                s.send_window += delta;
            }
        }
        result
    }

    fn windows_kept(&mut self) {
        if self.flow == FlowControl::Unknown {
            self.flow = FlowControl::Kept;
        }
    }

    /// Whether an overrun is taken: the peer has shown no windows, or shows so now.
    fn overrun_taken(&mut self) -> bool {
        self.assume_no_windows();
        self.flow == FlowControl::Ignored
    }
}

#[cfg(test)]
#[path = "flow_tests.rs"]
mod tests;
