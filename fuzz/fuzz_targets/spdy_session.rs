//! Fuzzes the node's SPDY/3.1 session: whatever frames the client sends (decoded from the
//! input through one header context), the session never panics, every frame it queues
//! encodes, what it may send never exceeds 2^31 - 1, and it reports data only on streams it
//! opened. The port-forward layer is modelled as consuming each data event at once.
#![no_main]

use std::collections::HashSet;

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use proxy_portforward::spdy::session::Event;
use proxy_portforward::spdy::{Decoder, Encoder, Frame, Session};

fuzz_target!(|data: &[u8]| {
    let mut dec = Decoder::new().with_max_payload(128 * 1024);
    let mut session = Session::new();
    let mut enc = Encoder::new();
    let mut opened = HashSet::new();
    let mut rest = data;
    while let Ok(Some((frame, used))) = dec.decode(rest) {
        rest = &rest[used..];
        if let Frame::SynStream { stream_id, .. } = &frame {
            opened.insert(*stream_id);
        }
        let failed = session.receive(frame).is_err();
        while let Some(event) = session.poll_event() {
            if let Event::Data {
                stream_id, data, ..
            } = event
            {
                assert!(opened.contains(&stream_id), "data on unopened {stream_id}");
                session.consumed(stream_id, data.len());
            }
        }
        for id in &opened {
            if let Some(w) = session.send_window(*id) {
                assert!(w <= 0x7FFF_FFFF);
            }
        }
        let mut wire = BytesMut::new();
        while let Some(out) = session.poll_frame() {
            enc.encode(&out, &mut wire)
                .unwrap_or_else(|e| panic!("{out:?} does not encode: {e}"));
        }
        if failed {
            return;
        }
    }
});
