use bytes::{Bytes, BytesMut};
use flate2::{Compress, Compression, FlushCompress};

use super::headers::{DICTIONARY, adler32};
use super::*;

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// Frames written by Go's spdystream framer (the one kubectl uses), in this order through
/// one framer: kubectl's error and data streams of request 0 to port 8080, then more.
const GO_SYN_ERROR: &str = "800300010000003e0000000100000000000078f9e3c6a7c202253a703a2b294a4dcc851625aca9a0808614cb45e01c60616061c0c0c0c0590489c64c50f2663400000000ffff";
const GO_SYN_DATA: &str = "800300010000001a00000003000000000000826a26ac0ad57850499508000000ffff";

fn control(kind: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![0x80, 3];
    v.extend_from_slice(&kind.to_be_bytes());
    v.push(flags);
    v.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    v.extend_from_slice(payload);
    v
}

fn encode(enc: &mut Encoder, frame: &Frame) -> Vec<u8> {
    let mut out = BytesMut::new();
    enc.encode(frame, &mut out).unwrap();
    out.to_vec()
}

fn decode_one(dec: &mut Decoder, bytes: &[u8]) -> Result<Frame, DecodeError> {
    let (frame, used) = dec.decode(bytes)?.expect("a whole frame");
    assert_eq!(used, bytes.len());
    Ok(frame)
}

fn decode_err(bytes: &[u8]) -> DecodeError {
    Decoder::new().decode(bytes).unwrap_err()
}

fn kubectl_headers(kind: &str) -> Headers {
    Headers::new()
        .with("streamtype", kind)
        .with("port", "8080")
        .with("requestid", "0")
}

fn syn(stream_id: u32, headers: Headers) -> Frame {
    Frame::syn_stream(stream_id, headers)
}

fn all_frames() -> Vec<Frame> {
    vec![
        syn(1, kubectl_headers("error")),
        Frame::SynStream {
            stream_id: 0x7FFF_FFFF,
            associated_to: 1,
            priority: 7,
            slot: 3,
            fin: true,
            unidirectional: true,
            headers: Headers::new(),
        },
        Frame::SynReply {
            stream_id: 1,
            fin: false,
            headers: Headers::new()
                .with(":status", "200")
                .with("multi", &b"a\0b"[..]),
        },
        Frame::SynReply {
            stream_id: 3,
            fin: true,
            headers: Headers::new(),
        },
        Frame::RstStream {
            stream_id: 5,
            status: rst_status::CANCEL,
        },
        Frame::Settings {
            clear: false,
            entries: vec![],
        },
        Frame::Settings {
            clear: true,
            entries: vec![
                Setting {
                    flags: 0,
                    id: setting_id::INITIAL_WINDOW_SIZE,
                    value: 65536,
                },
                Setting {
                    flags: 1,
                    id: 0xFF_FFFF,
                    value: u32::MAX,
                },
            ],
        },
        Frame::Ping { id: 0 },
        Frame::Ping { id: u32::MAX },
        Frame::GoAway {
            last_good_stream_id: 7,
            status: goaway_status::PROTOCOL_ERROR,
        },
        Frame::Headers {
            stream_id: 9,
            fin: true,
            headers: Headers::new().with("x", ""),
        },
        Frame::WindowUpdate {
            stream_id: 0,
            delta: 0x7FFF_FFFF,
        },
        Frame::WindowUpdate {
            stream_id: 3,
            delta: 1,
        },
        Frame::Data {
            stream_id: 3,
            fin: false,
            data: Bytes::from_static(b"hello"),
        },
        Frame::Data {
            stream_id: 0x7FFF_FFFF,
            fin: true,
            data: Bytes::new(),
        },
        Frame::Unknown {
            frame_type: 10,
            flags: 0xFF,
            payload: Bytes::from_static(b"cred"),
        },
        syn(11, kubectl_headers("data")),
    ]
}

#[test]
fn dictionary_is_spdy3s() {
    assert_eq!(DICTIONARY.len(), 1423);
    // The dictionary id zlib writes after FDICT: Go's frames carry the same.
    assert_eq!(adler32(&DICTIONARY), 0xe3c6_a7c2);
    assert_eq!(
        &hex(GO_SYN_ERROR)[18..24],
        &[0x78, 0xf9, 0xe3, 0xc6, 0xa7, 0xc2]
    );
    assert_eq!(adler32(b"Wikipedia"), 0x11e6_0398);
}

#[test]
fn decodes_kubectls_syn_streams_from_go() {
    let mut dec = Decoder::new();
    for (bytes, id, kind) in [(GO_SYN_ERROR, 1, "error"), (GO_SYN_DATA, 3, "data")] {
        let Frame::SynStream {
            stream_id,
            associated_to,
            priority,
            slot,
            fin,
            unidirectional,
            headers,
        } = decode_one(&mut dec, &hex(bytes)).unwrap()
        else {
            panic!("not a SYN_STREAM")
        };
        assert_eq!(
            (
                stream_id,
                associated_to,
                priority,
                slot,
                fin,
                unidirectional
            ),
            (id, 0, 0, 0, false, false)
        );
        assert_eq!(headers.len(), 3);
        assert_eq!(headers.get_str("streamtype"), Some(kind));
        assert_eq!(headers.get_str("port"), Some("8080"));
        assert_eq!(headers.get_str("requestid"), Some("0"));
    }
    // The second block was compressed against the first's context.
    assert!(matches!(
        Decoder::new().decode(&hex(GO_SYN_DATA)),
        Err(DecodeError::BadCompression(_))
    ));
}

#[test]
fn byte_exact_vectors() {
    let cases: [(Frame, &str); 6] = [
        // PING: 0x8003 0x0006, flags 0, length 4, id.
        (Frame::Ping { id: 1 }, "800300060000000400000001"),
        // RST_STREAM: stream 5, status CANCEL (5).
        (
            Frame::RstStream {
                stream_id: 5,
                status: 5,
            },
            "80030003000000080000000500000005",
        ),
        // SETTINGS: 2 entries, (flags 0, INITIAL_WINDOW_SIZE, 65536), (PERSIST_VALUE, MAX_CONCURRENT_STREAMS, 100).
        (
            Frame::Settings {
                clear: false,
                entries: vec![
                    Setting {
                        flags: 0,
                        id: 7,
                        value: 65536,
                    },
                    Setting {
                        flags: 1,
                        id: 4,
                        value: 100,
                    },
                ],
            },
            "80030004000000140000000200000007000100000100000400000064",
        ),
        // Data: stream 3, FLAG_FIN, "hello".
        (
            Frame::Data {
                stream_id: 3,
                fin: true,
                data: Bytes::from_static(b"hello"),
            },
            "000000030100000568656c6c6f",
        ),
        (
            Frame::GoAway {
                last_good_stream_id: 7,
                status: 0,
            },
            "80030007000000080000000700000000",
        ),
        (
            Frame::WindowUpdate {
                stream_id: 0,
                delta: 4096,
            },
            "80030009000000080000000000001000",
        ),
    ];
    // Each of these was also written by Go's spdystream framer, byte for byte.
    for (frame, bytes) in cases {
        assert_eq!(encode(&mut Encoder::new(), &frame), hex(bytes), "{frame:?}");
        assert_eq!(decode_one(&mut Decoder::new(), &hex(bytes)).unwrap(), frame);
    }
    // SETTINGS with FLAG_SETTINGS_CLEAR_SETTINGS and no entries.
    let clear = Frame::Settings {
        clear: true,
        entries: vec![],
    };
    assert_eq!(
        encode(&mut Encoder::new(), &clear),
        hex("800300040100000400000000")
    );
}

#[test]
fn every_frame_type_round_trips_through_one_context() {
    let frames = all_frames();
    let mut enc = Encoder::new();
    let wire: Vec<Vec<u8>> = frames.iter().map(|f| encode(&mut enc, f)).collect();
    let mut dec = Decoder::new();
    for (frame, bytes) in frames.iter().zip(&wire) {
        assert_eq!(&decode_one(&mut dec, bytes).unwrap(), frame);
    }
}

#[test]
fn header_blocks_share_the_context() {
    let mut enc = Encoder::new();
    let first = encode(&mut enc, &syn(1, kubectl_headers("error")));
    let second = encode(&mut enc, &syn(3, kubectl_headers("data")));
    let third = encode(
        &mut enc,
        &Frame::SynReply {
            stream_id: 1,
            fin: false,
            headers: kubectl_headers("error"),
        },
    );
    // Repeats compress to back-references into the earlier blocks.
    assert!(
        second.len() < first.len(),
        "{} !< {}",
        second.len(),
        first.len()
    );
    let mut dec = Decoder::new();
    for bytes in [&first, &second, &third] {
        decode_one(&mut dec, bytes).unwrap();
    }
    // A fresh context cannot read the later blocks, nor a context that skipped a block.
    assert!(Decoder::new().decode(&second).is_err());
    let mut skipped = Decoder::new();
    decode_one(&mut skipped, &first).unwrap();
    assert!(skipped.decode(&third).is_err());
    // Go's decoder context reads ours the same way: our blocks are plain zlib with FDICT.
    let (cmf, flg) = (first[18], first[19]);
    assert_eq!(cmf, 0x78, "deflate, 32 KiB window");
    assert_ne!(flg & 0x20, 0, "FDICT");
    assert_eq!((u16::from(cmf) << 8 | u16::from(flg)) % 31, 0);
    assert_eq!(&first[20..24], &0xe3c6_a7c2u32.to_be_bytes());
}

#[test]
fn incremental_decoding_byte_by_byte() {
    let mut enc = Encoder::new();
    let mut wire = Vec::new();
    for f in all_frames() {
        wire.extend(encode(&mut enc, &f));
    }
    let mut whole = Vec::new();
    let mut dec = Decoder::new();
    let mut at = 0;
    while at < wire.len() {
        let (f, used) = dec.decode(&wire[at..]).unwrap().unwrap();
        whole.push(f);
        at += used;
    }
    let mut dec = Decoder::new();
    let mut buf = BytesMut::new();
    let mut pieces = Vec::new();
    for &b in &wire {
        buf.extend_from_slice(&[b]);
        while let Some(f) = dec.decode_buf(&mut buf).unwrap() {
            pieces.push(f);
        }
    }
    assert!(buf.is_empty());
    assert_eq!(pieces, whole);
    assert_eq!(pieces, all_frames());
}

#[test]
fn short_input_needs_more() {
    let mut dec = Decoder::new();
    assert_eq!(dec.decode(&[]).unwrap(), None);
    assert_eq!(dec.decode(&hex("8003000600000004")).unwrap(), None);
    assert_eq!(dec.decode(&hex("80030006000000040000")).unwrap(), None);
    // A bad version is seen as soon as the 8-byte header is there.
    assert_eq!(
        dec.decode(&hex("8002000600000004")),
        Err(DecodeError::UnsupportedVersion(2))
    );
}

#[test]
fn version_and_bound_errors() {
    assert_eq!(
        decode_err(&hex("800200060000000400000001")),
        DecodeError::UnsupportedVersion(2)
    );
    assert_eq!(
        decode_err(&hex("ffff00060000000400000001")),
        DecodeError::UnsupportedVersion(0x7FFF)
    );
    // Over the default bound: refused from the header alone.
    let big = DEFAULT_MAX_PAYLOAD + 1;
    let mut head = vec![0, 0, 0, 1];
    head.extend_from_slice(&(big as u32).to_be_bytes());
    assert_eq!(
        decode_err(&head),
        DecodeError::FrameTooLarge {
            len: big,
            max: DEFAULT_MAX_PAYLOAD
        }
    );
    let mut small = Decoder::new().with_max_payload(4);
    assert_eq!(small.max_payload(), 4);
    assert!(
        small
            .decode(&hex("000000010000000401020304"))
            .unwrap()
            .is_some()
    );
    assert_eq!(
        small.decode(&hex("00000001000000050102030405")),
        Err(DecodeError::FrameTooLarge { len: 5, max: 4 })
    );
    assert_eq!(
        Decoder::new().with_max_payload(usize::MAX).max_payload(),
        MAX_WIRE_PAYLOAD
    );
}

#[test]
fn length_errors() {
    use frame_type as t;
    for (kind, name, good) in [
        (t::RST_STREAM, "RST_STREAM", 8),
        (t::PING, "PING", 4),
        (t::GOAWAY, "GOAWAY", 8),
        (t::WINDOW_UPDATE, "WINDOW_UPDATE", 8),
    ] {
        for len in [0, good - 1, good + 1] {
            let mut p = vec![0; len];
            if len > 3 {
                p[3] = 1;
            }
            assert_eq!(
                decode_err(&control(kind, 0, &p)),
                DecodeError::BadLength { frame: name, len },
                "{name} {len}"
            );
        }
    }
    let settings = |p: &[u8]| decode_err(&control(t::SETTINGS, 0, p));
    assert_eq!(
        settings(&[0, 0, 0]),
        DecodeError::BadLength {
            frame: "SETTINGS",
            len: 3
        }
    );
    assert_eq!(
        settings(&hex("00000001")),
        DecodeError::BadLength {
            frame: "SETTINGS",
            len: 4
        }
    );
    assert_eq!(
        settings(&hex("000000000000000700010000")),
        DecodeError::BadLength {
            frame: "SETTINGS",
            len: 12
        }
    );
    assert_eq!(
        settings(&hex("0000000100000007000100")),
        DecodeError::BadLength {
            frame: "SETTINGS",
            len: 11
        }
    );
    assert_eq!(
        settings(&hex("ffffffff")),
        DecodeError::BadLength {
            frame: "SETTINGS",
            len: 4
        }
    );
    assert_eq!(
        decode_err(&control(t::SYN_STREAM, 0, &[0; 9])),
        DecodeError::BadLength {
            frame: "SYN_STREAM",
            len: 9
        }
    );
    assert_eq!(
        decode_err(&control(t::SYN_REPLY, 0, &[0; 3])),
        DecodeError::BadLength {
            frame: "SYN_REPLY",
            len: 3
        }
    );
    assert_eq!(
        decode_err(&control(t::HEADERS, 0, &[])),
        DecodeError::BadLength {
            frame: "HEADERS",
            len: 0
        }
    );
}

/// A header-carrying frame of `kind` for stream 1 whose block is `block` compressed
/// (serialised by hand, so it may be malformed) with a fresh context.
fn with_block(kind: u16, stream: u32, block: &[u8]) -> Vec<u8> {
    let mut p = stream.to_be_bytes().to_vec();
    if kind == frame_type::SYN_STREAM {
        p.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    }
    HeaderCompressor::new().compress_raw(block, &mut p).unwrap();
    control(kind, 0, &p)
}

#[test]
fn zero_stream_errors() {
    use frame_type as t;
    let empty = hex("00000000");
    assert_eq!(
        decode_err(&with_block(t::SYN_STREAM, 0, &empty)),
        DecodeError::ZeroStreamId {
            frame: "SYN_STREAM"
        }
    );
    assert_eq!(
        decode_err(&with_block(t::SYN_REPLY, 0, &empty)),
        DecodeError::ZeroStreamId { frame: "SYN_REPLY" }
    );
    assert_eq!(
        decode_err(&with_block(t::HEADERS, 0x8000_0000, &empty)),
        DecodeError::ZeroStreamId { frame: "HEADERS" }
    );
    assert_eq!(
        decode_err(&control(t::RST_STREAM, 0, &hex("0000000000000001"))),
        DecodeError::ZeroStreamId {
            frame: "RST_STREAM"
        }
    );
    assert_eq!(
        decode_err(&hex("0000000000000000")),
        DecodeError::ZeroStreamId { frame: "data" }
    );
    assert_eq!(
        decode_err(&hex("800000000000000161")),
        DecodeError::UnsupportedVersion(0)
    );
    // The reserved bit is dropped: stream 0x80000001 is stream 1.
    let f = decode_one(
        &mut Decoder::new(),
        &control(t::RST_STREAM, 0, &hex("8000000100000001")),
    )
    .unwrap();
    assert_eq!(
        f,
        Frame::RstStream {
            stream_id: 1,
            status: 1
        }
    );
}

#[test]
fn header_block_errors() {
    use frame_type as t;
    let err = |block: &[u8]| decode_err(&with_block(t::SYN_REPLY, 1, block));
    assert_eq!(err(&[]), DecodeError::TruncatedHeaderBlock);
    assert_eq!(err(&hex("000000")), DecodeError::TruncatedHeaderBlock);
    assert_eq!(err(&hex("00000001")), DecodeError::TruncatedHeaderBlock);
    assert_eq!(
        err(&hex("0000000100000005616263")),
        DecodeError::TruncatedHeaderBlock
    );
    assert_eq!(
        err(&hex("00000001000000016100000002")),
        DecodeError::TruncatedHeaderBlock
    );
    assert_eq!(err(&hex("0000000000")), DecodeError::TrailingHeaderBytes);
    assert_eq!(
        err(&hex("000000010000000161000000006200")),
        DecodeError::TrailingHeaderBytes
    );
    assert_eq!(
        err(&hex("0000000100000001410000000000")),
        DecodeError::BadHeaderName
    );
    assert_eq!(
        err(&hex("00000001000000000000000000")),
        DecodeError::BadHeaderName
    );
    assert_eq!(
        err(&hex("0000000100000001200000000000")),
        DecodeError::BadHeaderName
    );
    assert_eq!(
        err(&hex("0000000100000001ff0000000000")),
        DecodeError::BadHeaderName
    );
    assert_eq!(
        err(&hex("00000002000000016100000000000000016100000000")),
        DecodeError::DuplicateHeader("a".into())
    );
    // A count far beyond the bytes that follow is truncation, not a huge allocation.
    assert_eq!(err(&hex("ffffffff")), DecodeError::TruncatedHeaderBlock);

    // Decompressing to more than the bound.
    let mut bomb = hex("000000010000000161");
    bomb.extend_from_slice(&(MAX_HEADER_BLOCK as u32).to_be_bytes());
    bomb.resize(bomb.len() + MAX_HEADER_BLOCK, b'x');
    assert_eq!(
        err(&bomb),
        DecodeError::HeaderBlockTooLarge {
            max: MAX_HEADER_BLOCK
        }
    );
    // Exactly the bound is fine.
    let mut full = hex("000000010000000161");
    let room = MAX_HEADER_BLOCK - full.len() - 4;
    full.extend_from_slice(&(room as u32).to_be_bytes());
    full.resize(MAX_HEADER_BLOCK, b'x');
    let Frame::SynReply { headers, .. } =
        decode_one(&mut Decoder::new(), &with_block(t::SYN_REPLY, 1, &full)).unwrap()
    else {
        panic!()
    };
    assert_eq!(headers.get("a").map(<[u8]>::len), Some(room));
}

#[test]
fn compression_errors() {
    use frame_type as t;
    let frame = |block: &[u8]| {
        let mut p = hex("00000001");
        p.extend_from_slice(block);
        control(t::HEADERS, 0, &p)
    };
    let bad = |bytes: &[u8]| matches!(decode_err(bytes), DecodeError::BadCompression(_));
    // Not zlib at all; a zlib header with a bad check; empty (no zlib header).
    assert!(bad(&frame(b"not zlib")));
    assert!(bad(&frame(&hex("78f9e3c6a7c3"))));
    assert_eq!(decode_err(&frame(&[])), DecodeError::TruncatedHeaderBlock);
    // Another dictionary.
    let mut z = Compress::new(Compression::default(), true);
    z.set_dictionary(b"some other dictionary").unwrap();
    let mut other = Vec::with_capacity(256);
    z.compress_vec(&hex("00000000"), &mut other, FlushCompress::Sync)
        .unwrap();
    assert!(
        matches!(decode_err(&frame(&other)), DecodeError::BadCompression(e) if e.contains("dictionary"))
    );
    // No dictionary at all is still zlib: taken, as Go's reader takes it.
    let mut z = Compress::new(Compression::default(), true);
    let mut plain = Vec::with_capacity(256);
    z.compress_vec(&hex("00000000"), &mut plain, FlushCompress::Sync)
        .unwrap();
    assert!(Decoder::new().decode(&frame(&plain)).unwrap().is_some());
    // A stream the peer finished: no later block could follow.
    let mut z = Compress::new(Compression::default(), true);
    z.set_dictionary(&DICTIONARY).unwrap();
    let mut ended = Vec::with_capacity(256);
    z.compress_vec(&hex("00000000"), &mut ended, FlushCompress::Finish)
        .unwrap();
    assert!(
        matches!(decode_err(&frame(&ended)), DecodeError::BadCompression(e) if e.contains("ended"))
    );
}

#[test]
fn encode_errors() {
    let mut enc = Encoder::new();
    let mut out = BytesMut::new();
    let mut err = |f: Frame| enc.encode(&f, &mut out).unwrap_err();
    assert_eq!(err(syn(0, Headers::new())), EncodeError::ZeroStreamId);
    assert_eq!(
        err(syn(0x8000_0000, Headers::new())),
        EncodeError::Over31Bits(0x8000_0000)
    );
    assert_eq!(
        err(Frame::SynStream {
            stream_id: 1,
            associated_to: u32::MAX,
            priority: 0,
            slot: 0,
            fin: false,
            unidirectional: false,
            headers: Headers::new()
        }),
        EncodeError::Over31Bits(u32::MAX)
    );
    assert_eq!(
        err(Frame::SynStream {
            stream_id: 1,
            associated_to: 0,
            priority: 8,
            slot: 0,
            fin: false,
            unidirectional: false,
            headers: Headers::new()
        }),
        EncodeError::BadPriority(8)
    );
    assert_eq!(
        err(Frame::SynReply {
            stream_id: 0,
            fin: false,
            headers: Headers::new()
        }),
        EncodeError::ZeroStreamId
    );
    assert_eq!(
        err(Frame::Headers {
            stream_id: 1,
            fin: false,
            headers: Headers::new().with("Port", "1")
        }),
        EncodeError::BadHeaderName
    );
    assert_eq!(
        err(Frame::Headers {
            stream_id: 1,
            fin: false,
            headers: Headers::new().with("", "1")
        }),
        EncodeError::BadHeaderName
    );
    assert_eq!(
        err(Frame::Headers {
            stream_id: 1,
            fin: false,
            headers: Headers::new().with("a", "1").with("a", "2")
        }),
        EncodeError::DuplicateHeader("a".into())
    );
    assert_eq!(
        err(Frame::RstStream {
            stream_id: 0,
            status: 1
        }),
        EncodeError::ZeroStreamId
    );
    assert_eq!(
        err(Frame::Settings {
            clear: false,
            entries: vec![Setting {
                flags: 0,
                id: 0x100_0000,
                value: 0
            }]
        }),
        EncodeError::BadSettingId(0x100_0000)
    );
    assert_eq!(
        err(Frame::GoAway {
            last_good_stream_id: u32::MAX,
            status: 0
        }),
        EncodeError::Over31Bits(u32::MAX)
    );
    assert_eq!(
        err(Frame::WindowUpdate {
            stream_id: 0,
            delta: 0x8000_0000
        }),
        EncodeError::Over31Bits(0x8000_0000)
    );
    assert_eq!(
        err(Frame::Data {
            stream_id: 0,
            fin: false,
            data: Bytes::new()
        }),
        EncodeError::ZeroStreamId
    );
    let huge = Bytes::from(vec![0; MAX_WIRE_PAYLOAD + 1]);
    assert_eq!(
        err(Frame::Data {
            stream_id: 1,
            fin: false,
            data: huge.clone()
        }),
        EncodeError::PayloadTooLarge(MAX_WIRE_PAYLOAD + 1)
    );
    assert_eq!(
        err(Frame::Unknown {
            frame_type: 10,
            flags: 0,
            payload: huge
        }),
        EncodeError::PayloadTooLarge(MAX_WIRE_PAYLOAD + 1)
    );
    assert!(out.is_empty(), "nothing is written on an error");
}

#[test]
fn errors_display() {
    let decode = [
        DecodeError::UnsupportedVersion(2),
        DecodeError::FrameTooLarge { len: 2, max: 1 },
        DecodeError::BadLength {
            frame: "PING",
            len: 3,
        },
        DecodeError::ZeroStreamId { frame: "data" },
        DecodeError::HeaderBlockTooLarge { max: 1 },
        DecodeError::BadCompression("x".into()),
        DecodeError::TruncatedHeaderBlock,
        DecodeError::TrailingHeaderBytes,
        DecodeError::BadHeaderName,
        DecodeError::DuplicateHeader("a".into()),
    ];
    for e in decode {
        assert!(!e.to_string().is_empty());
    }
    let encode = [
        EncodeError::Over31Bits(1),
        EncodeError::ZeroStreamId,
        EncodeError::BadPriority(8),
        EncodeError::BadSettingId(1),
        EncodeError::PayloadTooLarge(1),
        EncodeError::BadHeaderName,
        EncodeError::DuplicateHeader("a".into()),
        EncodeError::HeaderTooLong,
        EncodeError::Compression("x".into()),
    ];
    for e in encode {
        assert!(!e.to_string().is_empty());
    }
}

#[test]
fn headers_accessors() {
    let h: Headers = [("a", &b"x\0y"[..]), ("b", &b"\xff"[..])]
        .into_iter()
        .collect();
    assert_eq!(h.get("a"), Some(&b"x\0y"[..]));
    assert_eq!(h.values("a").collect::<Vec<_>>(), [&b"x"[..], &b"y"[..]]);
    assert_eq!(h.values("c").count(), 0);
    assert_eq!(h.get_str("b"), None);
    assert_eq!(h.get("A"), None);
    assert_eq!(h.iter().map(|(n, _)| n).collect::<Vec<_>>(), ["a", "b"]);
    assert_eq!(h.len(), 2);
    assert!(!h.is_empty() && Headers::new().is_empty());
    let mut dec = HeaderDecompressor::new();
    let mut block = Vec::new();
    HeaderCompressor::new().compress(&h, &mut block).unwrap();
    assert_eq!(dec.decompress(&block).unwrap(), h);
    assert!(format!("{dec:?}{:?}", HeaderCompressor::default()).contains("Header"));
}

#[test]
fn decode_buf_shares_large_data_payloads_and_copies_small_ones() {
    let mut enc = Encoder::new();
    let big = Frame::Data {
        stream_id: 3,
        fin: true,
        data: Bytes::from(vec![9; 20_000]),
    };
    let small = Frame::Data {
        stream_id: 5,
        fin: false,
        data: Bytes::from_static(b"tiny"),
    };
    let mut wire = BytesMut::new();
    wire.extend_from_slice(&encode(&mut enc, &small));
    wire.extend_from_slice(&encode(&mut enc, &big));
    wire.extend_from_slice(&encode(&mut enc, &small));
    let within = |wire: &BytesMut| {
        let range = wire.as_ptr_range();
        move |f: &Option<Frame>| match f {
            Some(Frame::Data { data, .. }) => range.contains(&data.as_ptr()),
            _ => panic!("not a data frame: {f:?}"),
        }
    };
    let shared = within(&wire);
    let mut dec = Decoder::new();
    let (a, b, c) = (
        dec.decode_buf(&mut wire).unwrap(),
        dec.decode_buf(&mut wire).unwrap(),
        dec.decode_buf(&mut wire).unwrap(),
    );
    assert_eq!((shared(&a), shared(&b), shared(&c)), (false, true, false));
    assert_eq!((a, b, c), (Some(small.clone()), Some(big), Some(small)));
    assert!(wire.is_empty());
}
