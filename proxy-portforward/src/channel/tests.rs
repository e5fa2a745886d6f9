use super::*;

const V4: Protocol = Protocol::V4Binary;
const B64: Protocol = Protocol::V4Base64;
const V5: Protocol = Protocol::V5Binary;

fn data(channel: u8, payload: &[u8]) -> Message {
    Message::Data {
        channel,
        payload: payload.to_vec(),
    }
}

#[test]
fn negotiation_follows_the_clients_order() {
    let k = KUBELET_PROTOCOLS;
    assert_eq!(negotiate([], k), Ok(Protocol::Unnamed));
    assert_eq!(negotiate([""], k), Ok(Protocol::Unnamed));
    assert_eq!(negotiate([" , "], k), Ok(Protocol::Unnamed));
    assert_eq!(negotiate(["v4.channel.k8s.io"], k), Ok(V4));
    assert_eq!(
        negotiate(["v4.base64.channel.k8s.io, v4.channel.k8s.io"], k),
        Ok(B64)
    );
    assert_eq!(
        negotiate(["v4.channel.k8s.io,v4.base64.channel.k8s.io"], k),
        Ok(V4)
    );
    assert_eq!(negotiate(["x", "v4.base64.channel.k8s.io"], k), Ok(B64));
    // The Python client's header: v5 first. The kubelet's port-forward has no v5.
    assert_eq!(
        negotiate(["v5.channel.k8s.io,v4.channel.k8s.io"], k),
        Ok(V4)
    );
    assert_eq!(
        negotiate(["v5.channel.k8s.io,v4.channel.k8s.io"], ALL_PROTOCOLS),
        Ok(V5)
    );
    // Exact names only.
    assert!(negotiate(["V4.channel.k8s.io"], k).is_err());
    // No protocol offered, and the server wants one.
    assert!(negotiate([], &[V4]).is_err());
}

#[test]
fn negotiation_refusal_wording() {
    let e = negotiate(
        ["channel.k8s.io, base64.channel.k8s.io", "v5.channel.k8s.io"],
        KUBELET_PROTOCOLS,
    )
    .unwrap_err();
    assert_eq!(
        e.offered,
        [
            "channel.k8s.io",
            "base64.channel.k8s.io",
            "v5.channel.k8s.io"
        ]
    );
    assert_eq!(
        e.to_string(),
        "requested protocol(s) are not supported: [channel.k8s.io base64.channel.k8s.io v5.channel.k8s.io]; \
         supports [ v4.channel.k8s.io v4.base64.channel.k8s.io]"
    );
    assert_eq!(NegotiateError::HTTP_STATUS, 403);
    assert_eq!(
        negotiate(["channel.k8s.io"], ALL_PROTOCOLS),
        Ok(Protocol::V1Binary)
    );
    assert_eq!(
        negotiate(["base64.channel.k8s.io"], ALL_PROTOCOLS),
        Ok(Protocol::V1Base64)
    );
}

#[test]
fn protocol_names() {
    for &p in ALL_PROTOCOLS {
        match p.name() {
            Some(name) => assert_eq!(Protocol::from_name(name), Some(p)),
            None => assert_eq!(p, Protocol::Unnamed),
        }
    }
    assert_eq!(Protocol::from_name(""), None);
    assert!(
        B64.is_text()
            && Protocol::V1Base64.is_text()
            && !V4.is_text()
            && !Protocol::Unnamed.is_text()
    );
    assert!(V5.supports_close() && !V4.supports_close());
}

#[test]
fn binary_framing_byte_exact() {
    let c = Codec::new(V4);
    assert_eq!(
        c.encode(&data(0, b"foo\n")).unwrap(),
        [0, b'f', b'o', b'o', b'\n']
    );
    assert_eq!(c.encode(&data(3, b"")).unwrap(), [3]);
    assert_eq!(c.encode(&data(255, b"x")).unwrap(), [255, b'x']);
    assert_eq!(c.decode(&[1, 10]).unwrap(), data(1, b"\n"));
    assert_eq!(c.decode(&[255, 0]).unwrap(), data(255, &[0]));
    assert_eq!(c.decode(&[]), Err(FrameError::Empty));
    assert_eq!(
        c.encode(&Message::Close { channel: 0 }),
        Err(FrameError::CloseUnsupported(V4))
    );
    assert_eq!(
        c.encode(&Message::Close { channel: 0 })
            .unwrap_err()
            .to_string(),
        "protocol \"v4.channel.k8s.io\" has no close signal (only v5.channel.k8s.io)"
    );
}

#[test]
fn base64_framing_byte_exact() {
    let c = Codec::new(B64);
    assert_eq!(c.encode(&data(0, b"foo\n")).unwrap(), b"0Zm9vCg==");
    assert_eq!(c.encode(&data(1, b"\n")).unwrap(), b"1Cg==");
    assert_eq!(c.encode(&data(2, b"")).unwrap(), b"2");
    assert_eq!(c.encode(&data(10, b"a")).unwrap(), b":YQ==");
    assert_eq!(c.encode(&data(79, b"")).unwrap(), b"\x7f");
    assert_eq!(
        c.encode(&data(80, b"")),
        Err(FrameError::ChannelNotEncodable {
            channel: 80,
            protocol: B64
        })
    );
    assert_eq!(c.decode(b"0Zm9vCg==").unwrap(), data(0, b"foo\n"));
    assert_eq!(c.decode(b"3").unwrap(), data(3, b""));
    assert_eq!(c.decode(b"/Zg=="), Err(FrameError::BadChannelChar(b'/')));
    assert_eq!(c.decode(&[0x80]), Err(FrameError::BadChannelChar(0x80)));
    let bad = c.decode(b"0Zg=").unwrap_err();
    assert_eq!(
        bad.to_string(),
        "bad base64 in a message on channel 0: length 3 is not a multiple of 4"
    );
    assert!(!bad.is_fatal());
    assert_eq!(
        c.decode(b"1Zm9v\r\n").unwrap_err().to_string(),
        "bad base64 in a message on channel 1: length 6 is not a multiple of 4"
    );
    assert_eq!(
        c.decode(b"1Zm-v").unwrap_err().to_string(),
        "bad base64 in a message on channel 1: byte 0x2d at offset 2"
    );
    assert_eq!(
        c.decode(b"0Zh==").unwrap_err().to_string(),
        "bad base64 in a message on channel 0: non-zero bits before the padding"
    );
    // Base64 protocols have no close signal: '\u{ff}' is no channel character.
    assert_eq!(c.decode(&[255, b'0']), Err(FrameError::BadChannelChar(255)));
}

#[test]
fn v5_close_signal() {
    let c = Codec::new(V5);
    assert_eq!(c.encode(&Message::Close { channel: 2 }).unwrap(), [255, 2]);
    assert_eq!(c.decode(&[255, 2]).unwrap(), Message::Close { channel: 2 });
    assert_eq!(c.decode(&[255]), Err(FrameError::CloseLength(1)));
    assert_eq!(c.decode(&[255, 1, 2]), Err(FrameError::CloseLength(3)));
    assert!(FrameError::CloseLength(1).is_fatal());
    assert_eq!(
        FrameError::CloseLength(3).to_string(),
        "close signal must be 2 bytes (255 and the channel to close), got 3 byte(s)"
    );
    assert_eq!(
        c.encode(&data(255, b"")),
        Err(FrameError::ChannelNotEncodable {
            channel: 255,
            protocol: V5
        })
    );
    assert_eq!(c.decode(&[0, 1]).unwrap(), data(0, &[1]));

    let mux = Mux::new(vec![80], V5).unwrap();
    assert_eq!(
        mux.receive(&[255, 0]),
        Ok(Event::Close {
            port: 0,
            stream: Stream::Data
        })
    );
    assert_eq!(
        mux.receive(&[255, 1]),
        Ok(Event::Close {
            port: 0,
            stream: Stream::Error
        })
    );
    let e = mux.receive(&[255, 2]).unwrap_err();
    assert_eq!(
        e,
        FrameError::CloseUnknownChannel {
            channel: 2,
            ports: 1
        }
    );
    assert!(e.is_fatal());
    assert_eq!(
        e.to_string(),
        "close signal for channel 2, but the request has 1 port(s)"
    );
    assert_eq!(mux.close(0, Stream::Data).unwrap(), [255, 0]);
    assert_eq!(mux.close(0, Stream::Error).unwrap(), [255, 1]);
    assert_eq!(
        mux.close(1, Stream::Data),
        Err(FrameError::NoSuchPort { port: 1, ports: 1 })
    );
    // v4: [255, 0] is data on channel 255, dropped, not fatal.
    let v4 = Mux::new(vec![80], V4).unwrap();
    let e = v4.receive(&[255, 0]).unwrap_err();
    assert_eq!(
        e,
        FrameError::UnknownChannel {
            channel: 255,
            ports: 1
        }
    );
    assert!(!e.is_fatal());
    assert_eq!(
        v4.close(0, Stream::Data),
        Err(FrameError::CloseUnsupported(V4))
    );
}

#[test]
fn initial_messages_byte_exact() {
    let mux = Mux::new(vec![80, 443], V4).unwrap();
    assert_eq!(
        mux.initial_messages(),
        [
            vec![0, 80, 0],
            vec![1, 80, 0],
            vec![2, 0xbb, 0x01],
            vec![3, 0xbb, 0x01]
        ]
    );
    let mux = Mux::new(vec![80, 443], B64).unwrap();
    let first: Vec<&[u8]> = vec![b"0UAA=", b"1UAA=", b"2uwE=", b"3uwE="];
    assert_eq!(mux.initial_messages(), first);
    assert_eq!(
        Mux::new(vec![65535], Protocol::Unnamed)
            .unwrap()
            .initial_messages(),
        [[0, 255, 255], [1, 255, 255]]
    );
}

#[test]
fn channels_of_ports() {
    let mux = Mux::new(vec![80, 443, 8080], V4).unwrap();
    assert_eq!(mux.channel(0), Some((0, Stream::Data)));
    assert_eq!(mux.channel(1), Some((0, Stream::Error)));
    assert_eq!(mux.channel(4), Some((2, Stream::Data)));
    assert_eq!(mux.channel(5), Some((2, Stream::Error)));
    assert_eq!(mux.channel(6), None);
    assert_eq!(channel_of(2, Stream::Error), 5);
    assert_eq!(mux.ports(), [80, 443, 8080]);
}

#[test]
fn server_receive() {
    let mux = Mux::new(vec![80, 443], V4).unwrap();
    assert_eq!(
        mux.receive(&[2, 1, 2]),
        Ok(Event::Data {
            port: 1,
            payload: vec![1, 2]
        })
    );
    assert_eq!(
        mux.receive(&[0]),
        Ok(Event::Data {
            port: 0,
            payload: vec![]
        })
    );
    assert_eq!(mux.receive(&[]), Err(FrameError::Empty));
    assert_eq!(
        mux.receive(&[]).unwrap_err().to_string(),
        "empty message: no channel byte"
    );
    let e = mux.receive(&[4, 0]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "message on channel 4, but the 2 port(s) of the request use channels 0-3"
    );
    assert_eq!(
        mux.receive(&[3, 0]),
        Err(FrameError::ClientOnErrorChannel { channel: 3 })
    );
    assert_eq!(
        Mux::new(vec![], V4)
            .unwrap()
            .receive(&[0])
            .unwrap_err()
            .to_string(),
        "message on channel 0, but there are no ports"
    );

    let b = Mux::new(vec![80, 443], B64).unwrap();
    assert_eq!(
        b.receive(b"2aGk="),
        Ok(Event::Data {
            port: 1,
            payload: b"hi".to_vec()
        })
    );
    assert_eq!(
        b.receive(b"4aGk="),
        Err(FrameError::UnknownChannel {
            channel: 4,
            ports: 2
        })
    );
    assert!(matches!(
        b.receive(b"0aGk"),
        Err(FrameError::BadBase64 { channel: 0, .. })
    ));
}

#[test]
fn server_sends() {
    let mux = Mux::new(vec![80, 443], V4).unwrap();
    assert_eq!(mux.data(1, b"ok").unwrap(), [2, b'o', b'k']);
    assert_eq!(mux.error(0, "e").unwrap(), [1, b'e']);
    assert_eq!(
        mux.data(2, b""),
        Err(FrameError::NoSuchPort { port: 2, ports: 2 })
    );
    assert_eq!(
        mux.data(2, b"").unwrap_err().to_string(),
        "no port at index 2: the request has 2 port(s)"
    );
    let b = Mux::new(vec![80, 443], B64).unwrap();
    assert_eq!(b.data(1, b"ok").unwrap(), b"2b2s=");
    assert_eq!(
        kubelet_error_message(80, "web", "1234", "connection refused"),
        "error forwarding port 80 to pod web, uid 1234: connection refused"
    );
}

#[test]
fn too_many_ports() {
    assert!(Mux::new(vec![1; 127], V4).is_ok());
    assert_eq!(
        Mux::new(vec![1; 128], V5),
        Err(FrameError::TooManyPorts {
            ports: 128,
            max: 127
        })
    );
    assert!(Mux::new(vec![1; 40], B64).is_ok());
    let e = Mux::new(vec![1; 41], B64).unwrap_err();
    assert_eq!(
        e.to_string(),
        "41 ports, but the protocol carries at most 40"
    );
    // The last channels of the largest requests are writable.
    let m = Mux::new(vec![7; 40], B64).unwrap();
    assert_eq!(m.error(39, "").unwrap(), b"\x7f");
    let m = Mux::new(vec![7; 127], V5).unwrap();
    assert_eq!(m.error(126, "").unwrap(), [253]);
}

/// The Python client's `portforward(..., ports="80,443")`: its query, its header, its
/// messages (`bytes((ix * 2,)) + data`) and what it checks in ours (3-byte first frames,
/// `data[1] + data[2] * 256` equal to the port).
#[test]
fn python_client_ports_80_443() {
    let ports = parse_query("ports=80%2C443").unwrap();
    assert_eq!(ports, [80, 443]);
    let protocol = negotiate(["v5.channel.k8s.io,v4.channel.k8s.io"], KUBELET_PROTOCOLS).unwrap();
    let mux = Mux::new(ports, protocol).unwrap();
    for (i, m) in mux.initial_messages().iter().enumerate() {
        assert_eq!(m.len(), 3);
        assert_eq!(usize::from(m[0]), i);
        assert_eq!(u16::from(m[1]) + u16::from(m[2]) * 256, [80, 443][i / 2]);
    }
    // b"\x02" + b"GET / HTTP/1.1\r\n\r\n": to port 443.
    let mut sent = vec![2u8];
    sent.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
    assert_eq!(
        mux.receive(&sent),
        Ok(Event::Data {
            port: 1,
            payload: b"GET / HTTP/1.1\r\n\r\n".to_vec()
        })
    );
    assert_eq!(
        mux.receive(b"\x00x"),
        Ok(Event::Data {
            port: 0,
            payload: b"x".to_vec()
        })
    );
}

#[test]
fn client_side() {
    let mut c = ClientMux::new(vec![80, 443], V5).unwrap();
    assert_eq!(
        c.receive(&[0, 80, 0]),
        Ok(ClientEvent::Ready {
            port: 0,
            stream: Stream::Data
        })
    );
    assert_eq!(
        c.receive(&[1, 80]),
        Err(FrameError::PortPrefixLength { channel: 1, len: 1 })
    );
    assert_eq!(
        c.receive(&[1, 80]).unwrap_err().to_string(),
        "first message on channel 1 must be the port (2 bytes), got 1 byte(s)"
    );
    let e = c.receive(&[2, 80, 0]).unwrap_err();
    assert_eq!(
        e,
        FrameError::PortPrefixMismatch {
            channel: 2,
            expected: 443,
            got: 80
        }
    );
    assert_eq!(
        e.to_string(),
        "first message on channel 2 names port 80, but the channel is port 443's"
    );
    assert_eq!(
        c.receive(&[1, 80, 0]),
        Ok(ClientEvent::Ready {
            port: 0,
            stream: Stream::Error
        })
    );
    assert_eq!(
        c.receive(&[0, 80, 0]),
        Ok(ClientEvent::Data {
            port: 0,
            payload: vec![80, 0]
        })
    );
    assert_eq!(
        c.receive(&[1, b'b', 0xff]),
        Ok(ClientEvent::Error {
            port: 0,
            message: "b\u{fffd}".into()
        })
    );
    assert_eq!(
        c.receive(&[255, 0]),
        Ok(ClientEvent::Closed {
            port: 0,
            stream: Stream::Data
        })
    );
    assert_eq!(
        c.receive(&[0, 1]),
        Err(FrameError::AfterClose { channel: 0 })
    );
    assert_eq!(
        c.receive(&[6, 1]),
        Err(FrameError::UnknownChannel {
            channel: 6,
            ports: 2
        })
    );
    assert_eq!(c.data(1, b"z").unwrap(), [2, b'z']);
    assert_eq!(c.close(1).unwrap(), [255, 2]);
}

#[test]
fn decoded_messages_encode_back() {
    let samples: [&[u8]; 8] = [
        b"0",
        b"0Zm9v",
        b"1Cg==",
        b"\x7fYQ==",
        &[0],
        &[255, 3],
        &[255, 3, 4],
        &[9, 9, 9],
    ];
    for &p in ALL_PROTOCOLS {
        let c = Codec::new(p);
        for s in samples {
            if let Ok(m) = c.decode(s) {
                assert_eq!(c.encode(&m).unwrap(), s, "{p:?} {s:?}");
            }
        }
    }
}
