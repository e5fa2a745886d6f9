//! Fuzzes the SPDY/3.1 decoder, frame after frame through one header context as a session
//! would: never panics; a frame never claims more bytes than it was given; a shorter prefix
//! of a frame is incomplete; and every frame that
//! decodes re-encodes, through an encoder and decoder pair of its own, to a frame that
//! decodes the same.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use proxy_portforward::spdy::{Decoder, Encoder};

fuzz_target!(|data: &[u8]| {
    let mut dec = Decoder::new().with_max_payload(64 * 1024);
    let (mut enc, mut redec) = (Encoder::new(), Decoder::new());
    let mut rest = data;
    loop {
        let result = dec.decode(rest);
        let Ok(Some((frame, used))) = result else {
            if let Ok(None) = result {
                // More bytes would be needed: an 8-byte header is missing, or its payload.
                if rest.len() >= 8 {
                    let len = u32::from_be_bytes([0, rest[5], rest[6], rest[7]]) as usize;
                    assert!(rest.len() < 8 + len);
                }
            }
            return;
        };
        assert!(
            used >= 8 && used <= rest.len(),
            "used {used} of {}",
            rest.len()
        );
        // A strict prefix is incomplete: the header it shares was accepted. Decoding a
        // prefix touches no state, so the check can run after the fact.
        assert_eq!(dec.decode(&rest[..used - 1]), Ok(None));
        assert_eq!(dec.decode(&rest[..8.min(used - 1)]), Ok(None));
        let mut wire = BytesMut::new();
        enc.encode(&frame, &mut wire)
            .expect("a decoded frame encodes");
        match redec.decode(&wire) {
            Ok(Some((again, n))) => {
                assert_eq!(n, wire.len());
                assert_eq!(again, frame);
            }
            other => panic!("re-encoded {frame:?} decodes as {other:?}"),
        }
        rest = &rest[used..];
    }
});
