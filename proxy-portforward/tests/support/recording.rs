//! An [`Observe`] that records what it hears, in order.

use std::sync::Mutex;

use proxy_portforward::forward::{Observe, StreamEnd, StreamInfo, Wire};

/// One thing an observer heard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Heard {
    SessionStarted(Wire),
    SessionEnded(Wire),
    StreamStarted(StreamInfo),
    StreamEnded(StreamInfo, StreamEnd),
}

/// Records every call.
#[derive(Default)]
pub(crate) struct Recording(Mutex<Vec<Heard>>);

impl Observe for Recording {
    fn session_started(&self, wire: Wire) {
        self.push(Heard::SessionStarted(wire));
    }
    fn session_ended(&self, wire: Wire) {
        self.push(Heard::SessionEnded(wire));
    }
    fn stream_started(&self, stream: &StreamInfo) {
        self.push(Heard::StreamStarted(stream.clone()));
    }
    fn stream_ended(&self, stream: &StreamInfo, end: &StreamEnd) {
        self.push(Heard::StreamEnded(stream.clone(), end.clone()));
    }
}

impl Recording {
    fn push(&self, heard: Heard) {
        self.0.lock().unwrap().push(heard);
    }

    /// Everything heard so far.
    pub(crate) fn heard(&self) -> Vec<Heard> {
        self.0.lock().unwrap().clone()
    }

    /// The streams that ended, in order.
    #[allow(dead_code)] // Not every test file asks.
    pub(crate) fn ended(&self) -> Vec<(StreamInfo, StreamEnd)> {
        (self.heard().into_iter())
            .filter_map(|h| match h {
                Heard::StreamEnded(i, e) => Some((i, e)),
                _ => None,
            })
            .collect()
    }
}
