//! Fuzzes the WebSocket channel protocol of port-forward (`proxy_portforward::channel`):
//! the first byte picks the subprotocol and the number of ports, the rest is one message's
//! payload. A message that decodes encodes back to the same bytes, what the server's `Mux`
//! makes of it is what its own encoders would write, any payload sent on a channel decodes
//! back to itself, and the `ports` query and `Sec-WebSocket-Protocol` readers never panic
//! and keep their promises on the same bytes as text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proxy_portforward::channel::{
    self, ALL_PROTOCOLS, Codec, Event, FrameError, KUBELET_PROTOCOLS, Message, Mux,
};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, message)) = data.split_first() else {
        return;
    };
    let protocol = ALL_PROTOCOLS[usize::from(selector) % ALL_PROTOCOLS.len()];
    let ports: Vec<u16> = (1..=u16::from(selector >> 4)).map(|i| i * 1000).collect();
    let codec = Codec::new(protocol);

    // Decoding: what decodes re-encodes to the same bytes.
    match codec.decode(message) {
        Ok(m) => assert_eq!(codec.encode(&m).unwrap(), message, "{protocol:?} {m:?}"),
        Err(e) => assert!(!e.to_string().is_empty()),
    }

    // The server's view of the same message.
    let mux = Mux::new(ports.clone(), protocol).unwrap();
    match mux.receive(message) {
        Ok(Event::Data { port, payload }) => assert_eq!(mux.data(port, &payload).unwrap(), message),
        Ok(Event::Close { port, stream }) => {
            assert!(protocol.supports_close());
            assert_eq!(mux.close(port, stream).unwrap(), message);
        }
        Err(e @ (FrameError::CloseLength(_) | FrameError::CloseUnknownChannel { .. })) => {
            assert!(e.is_fatal() && protocol.supports_close());
        }
        Err(e) => assert!(!e.is_fatal(), "{e}"),
    }

    // Encoding: the bytes as a payload on each channel come back as they went.
    for channel in [0, 1, 9, 79, 254] {
        let sent = Message::Data {
            channel,
            payload: message.to_vec(),
        };
        if let Ok(bytes) = codec.encode(&sent) {
            assert_eq!(codec.decode(&bytes).unwrap(), sent, "{protocol:?}");
        }
    }

    // The same bytes as a request's query and as a Sec-WebSocket-Protocol header.
    if let Ok(text) = std::str::from_utf8(message) {
        match channel::parse_query(text) {
            Ok(ports) => assert!(!ports.is_empty() && !ports.contains(&0)),
            Err(e) => assert!(e.status().to_json().contains("\"code\":400")),
        }
        for supported in [KUBELET_PROTOCOLS, ALL_PROTOCOLS] {
            match channel::negotiate([text], supported) {
                Ok(p) => {
                    assert!(supported.contains(&p));
                    if let Some(name) = p.name() {
                        assert!(
                            text.split(',').any(|o| o.trim() == name),
                            "{text:?} -> {name}"
                        );
                    }
                }
                Err(e) => assert!(
                    e.to_string()
                        .starts_with("requested protocol(s) are not supported")
                ),
            }
        }
    }
});
