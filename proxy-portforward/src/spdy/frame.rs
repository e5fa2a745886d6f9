//! Frames, and the decoder and encoder that carry a session's header contexts.

use bytes::{BufMut, Bytes, BytesMut};

use super::error::{DecodeError, EncodeError};
use super::headers::{HeaderCompressor, HeaderDecompressor, Headers};

/// The only SPDY version spoken.
pub const VERSION: u16 = 3;

/// The largest payload the 24-bit length field can announce (16 MiB - 1).
pub const MAX_WIRE_PAYLOAD: usize = 0xFF_FFFF;

/// The decoder's default bound on a frame's payload: 1 MiB. Go's spdystream, which kubectl
/// uses, writes one data frame per `Write`, and port-forward copies with 32 KiB buffers.
pub const DEFAULT_MAX_PAYLOAD: usize = 1 << 20;

/// Control frame type numbers.
pub mod frame_type {
    /// SYN_STREAM.
    pub const SYN_STREAM: u16 = 1;
    /// SYN_REPLY.
    pub const SYN_REPLY: u16 = 2;
    /// RST_STREAM.
    pub const RST_STREAM: u16 = 3;
    /// SETTINGS.
    pub const SETTINGS: u16 = 4;
    /// PING.
    pub const PING: u16 = 6;
    /// GOAWAY.
    pub const GOAWAY: u16 = 7;
    /// HEADERS.
    pub const HEADERS: u16 = 8;
    /// WINDOW_UPDATE.
    pub const WINDOW_UPDATE: u16 = 9;
}

/// RST_STREAM status codes.
pub mod rst_status {
    /// PROTOCOL_ERROR.
    pub const PROTOCOL_ERROR: u32 = 1;
    /// INVALID_STREAM.
    pub const INVALID_STREAM: u32 = 2;
    /// REFUSED_STREAM.
    pub const REFUSED_STREAM: u32 = 3;
    /// UNSUPPORTED_VERSION.
    pub const UNSUPPORTED_VERSION: u32 = 4;
    /// CANCEL.
    pub const CANCEL: u32 = 5;
    /// INTERNAL_ERROR.
    pub const INTERNAL_ERROR: u32 = 6;
    /// FLOW_CONTROL_ERROR.
    pub const FLOW_CONTROL_ERROR: u32 = 7;
    /// STREAM_IN_USE.
    pub const STREAM_IN_USE: u32 = 8;
    /// STREAM_ALREADY_CLOSED.
    pub const STREAM_ALREADY_CLOSED: u32 = 9;
    /// FRAME_TOO_LARGE.
    pub const FRAME_TOO_LARGE: u32 = 11;
}

/// GOAWAY status codes.
pub mod goaway_status {
    /// OK: a normal end.
    pub const OK: u32 = 0;
    /// PROTOCOL_ERROR.
    pub const PROTOCOL_ERROR: u32 = 1;
    /// INTERNAL_ERROR.
    pub const INTERNAL_ERROR: u32 = 2;
}

/// SETTINGS ids.
pub mod setting_id {
    /// SETTINGS_MAX_CONCURRENT_STREAMS.
    pub const MAX_CONCURRENT_STREAMS: u32 = 4;
    /// SETTINGS_INITIAL_WINDOW_SIZE.
    pub const INITIAL_WINDOW_SIZE: u32 = 7;
}

/// The smallest data payload [`Decoder::decode_buf`] shares rather than copies.
const ZERO_COPY_MIN: usize = 16 * 1024;

const FLAG_FIN: u8 = 0x01;
const FLAG_UNIDIRECTIONAL: u8 = 0x02;
const FLAG_CLEAR_SETTINGS: u8 = 0x01;
const MASK_31: u32 = 0x7FFF_FFFF;

/// One SPDY/3.1 frame. Flags the spec does not define for a type are dropped on decoding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// SYN_STREAM: opens a stream.
    SynStream {
        /// The new stream (31 bits, not 0; odd from the client).
        stream_id: u32,
        /// The stream it is associated with (server push), else 0.
        associated_to: u32,
        /// Priority, 0 (highest) to 7.
        priority: u8,
        /// The credential slot (0 when unused, as spdystream sends).
        slot: u8,
        /// FLAG_FIN: the sender sends nothing more on it.
        fin: bool,
        /// FLAG_UNIDIRECTIONAL: the receiver may not send on it.
        unidirectional: bool,
        /// The stream's headers.
        headers: Headers,
    },
    /// SYN_REPLY: accepts a stream.
    SynReply {
        /// The stream.
        stream_id: u32,
        /// FLAG_FIN.
        fin: bool,
        /// The reply's headers.
        headers: Headers,
    },
    /// RST_STREAM: ends a stream abnormally.
    RstStream {
        /// The stream.
        stream_id: u32,
        /// Why ([`rst_status`]).
        status: u32,
    },
    /// SETTINGS.
    Settings {
        /// FLAG_SETTINGS_CLEAR_SETTINGS.
        clear: bool,
        /// The entries in order.
        entries: Vec<Setting>,
    },
    /// PING: the receiver echoes it.
    Ping {
        /// Its id (odd from the client, even from the server).
        id: u32,
    },
    /// GOAWAY: the sender takes no new stream.
    GoAway {
        /// The last stream the sender acted on.
        last_good_stream_id: u32,
        /// Why ([`goaway_status`]).
        status: u32,
    },
    /// HEADERS: more headers on an open stream.
    Headers {
        /// The stream.
        stream_id: u32,
        /// FLAG_FIN.
        fin: bool,
        /// The headers.
        headers: Headers,
    },
    /// WINDOW_UPDATE: the receiver of a stream's (or, for stream 0, the session's) data
    /// frees window.
    WindowUpdate {
        /// The stream, or 0 for the session (SPDY/3.1).
        stream_id: u32,
        /// Bytes added to the window (31 bits).
        delta: u32,
    },
    /// A data frame.
    Data {
        /// The stream (not 0).
        stream_id: u32,
        /// FLAG_FIN: the last data the sender sends on the stream.
        fin: bool,
        /// The payload.
        data: Bytes,
    },
    /// A version-3 control frame of a type not above (such as SPDY/3's CREDENTIAL), which
    /// the spec says to ignore.
    Unknown {
        /// Its type.
        frame_type: u16,
        /// Its flags.
        flags: u8,
        /// Its payload as it came.
        payload: Bytes,
    },
}

/// One SETTINGS entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Setting {
    /// FLAG_SETTINGS_PERSIST_VALUE (1), FLAG_SETTINGS_PERSISTED (2).
    pub flags: u8,
    /// The id (24 bits; [`setting_id`]).
    pub id: u32,
    /// The value.
    pub value: u32,
}

/// Decodes frames from the bytes a peer sends, with that direction's header context.
#[derive(Debug)]
pub struct Decoder {
    headers: HeaderDecompressor,
    max_payload: usize,
}

impl Frame {
    /// A SYN_STREAM opening `stream_id` with `headers`, as port-forward clients open their
    /// streams: bidirectional, not the last frame, no associated stream, priority 0.
    pub fn syn_stream(stream_id: u32, headers: Headers) -> Frame {
        Frame::SynStream {
            stream_id,
            associated_to: 0,
            priority: 0,
            slot: 0,
            fin: false,
            unidirectional: false,
            headers,
        }
    }
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

impl Decoder {
    /// A decoder with a fresh header context and [`DEFAULT_MAX_PAYLOAD`].
    pub fn new() -> Self {
        Self {
            headers: HeaderDecompressor::new(),
            max_payload: DEFAULT_MAX_PAYLOAD,
        }
    }

    /// Sets the bound on a frame's payload (at most [`MAX_WIRE_PAYLOAD`], which is what the
    /// length field can hold anyway).
    #[must_use]
    pub fn with_max_payload(mut self, max: usize) -> Self {
        self.max_payload = max.min(MAX_WIRE_PAYLOAD);
        self
    }

    /// The bound on a frame's payload.
    pub fn max_payload(&self) -> usize {
        self.max_payload
    }

    /// Decodes the frame at the start of `buf`: `Ok(None)` when `buf` does not hold a whole
    /// frame yet (nothing is consumed and the header context is untouched), else the frame
    /// and how many bytes it took. A frame's length is checked against the bound as soon as
    /// its 8-byte header is there.
    pub fn decode(&mut self, buf: &[u8]) -> Result<Option<(Frame, usize)>, DecodeError> {
        let Some(head) = buf.get(..8) else {
            return Ok(None);
        };
        let word0 = be32(head);
        let word1 = be32(&head[4..]);
        let flags = (word1 >> 24) as u8;
        let len = (word1 & 0xFF_FFFF) as usize;
        let control = word0 & 0x8000_0000 != 0;
        if control {
            let version = ((word0 >> 16) & 0x7FFF) as u16;
            if version != VERSION {
                return Err(DecodeError::UnsupportedVersion(version));
            }
        }
        if len > self.max_payload {
            return Err(DecodeError::FrameTooLarge {
                len,
                max: self.max_payload,
            });
        }
        let Some(payload) = buf.get(8..8 + len) else {
            return Ok(None);
        };
        let frame = if control {
            self.control((word0 & 0xFFFF) as u16, flags, payload)?
        } else {
            let stream_id = word0 & MASK_31;
            if stream_id == 0 {
                return Err(DecodeError::ZeroStreamId { frame: "data" });
            }
            Frame::Data {
                stream_id,
                fin: flags & FLAG_FIN != 0,
                data: Bytes::copy_from_slice(payload),
            }
        };
        Ok(Some((frame, 8 + len)))
    }

    /// [`decode`](Self::decode) from the front of `buf`, advancing it past the frame.
    /// The payload of a whole data frame of 16 KiB or more is split off `buf`, not
    /// copied (smaller ones are copied, so that none holds on to a much larger buffer).
    pub fn decode_buf(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, DecodeError> {
        if let Some(head) = buf.get(..8)
            && head[0] & 0x80 == 0
        {
            let len = (be32(&head[4..]) & 0xFF_FFFF) as usize;
            let (stream_id, flags) = (be32(head) & MASK_31, head[4]);
            // Anything else (too long, stream 0, not all there) is `decode`'s to report.
            if (ZERO_COPY_MIN..=self.max_payload).contains(&len)
                && buf.len() >= 8 + len
                && stream_id != 0
            {
                let data = buf.split_to(8 + len).freeze().slice(8..);
                return Ok(Some(Frame::Data {
                    stream_id,
                    fin: flags & FLAG_FIN != 0,
                    data,
                }));
            }
        }
        let Some((frame, used)) = self.decode(buf)? else {
            return Ok(None);
        };
        let _ = buf.split_to(used);
        Ok(Some(frame))
    }

    fn control(&mut self, kind: u16, flags: u8, p: &[u8]) -> Result<Frame, DecodeError> {
        use frame_type as t;
        let fin = flags & FLAG_FIN != 0;
        let exact = |frame: &'static str, want: usize| {
            if p.len() == want {
                Ok(())
            } else {
                Err(DecodeError::BadLength {
                    frame,
                    len: p.len(),
                })
            }
        };
        let nonzero = |frame: &'static str, id: u32| {
            if id == 0 {
                Err(DecodeError::ZeroStreamId { frame })
            } else {
                Ok(id)
            }
        };
        Ok(match kind {
            t::SYN_STREAM => {
                if p.len() < 10 {
                    return Err(DecodeError::BadLength {
                        frame: "SYN_STREAM",
                        len: p.len(),
                    });
                }
                // Decompress before any other check, so the context stays in step.
                let headers = self.headers.decompress(&p[10..])?;
                Frame::SynStream {
                    stream_id: nonzero("SYN_STREAM", be32(p) & MASK_31)?,
                    associated_to: be32(&p[4..]) & MASK_31,
                    priority: p[8] >> 5,
                    slot: p[9],
                    fin,
                    unidirectional: flags & FLAG_UNIDIRECTIONAL != 0,
                    headers,
                }
            }
            t::SYN_REPLY | t::HEADERS => {
                let name = if kind == t::SYN_REPLY {
                    "SYN_REPLY"
                } else {
                    "HEADERS"
                };
                if p.len() < 4 {
                    return Err(DecodeError::BadLength {
                        frame: name,
                        len: p.len(),
                    });
                }
                let headers = self.headers.decompress(&p[4..])?;
                let stream_id = nonzero(name, be32(p) & MASK_31)?;
                if kind == t::SYN_REPLY {
                    Frame::SynReply {
                        stream_id,
                        fin,
                        headers,
                    }
                } else {
                    Frame::Headers {
                        stream_id,
                        fin,
                        headers,
                    }
                }
            }
            t::RST_STREAM => {
                exact("RST_STREAM", 8)?;
                Frame::RstStream {
                    stream_id: nonzero("RST_STREAM", be32(p) & MASK_31)?,
                    status: be32(&p[4..]),
                }
            }
            t::SETTINGS => {
                let count = p.get(..4).map(be32);
                if count.is_none_or(|n| (p.len() - 4) as u64 != 8 * u64::from(n)) {
                    return Err(DecodeError::BadLength {
                        frame: "SETTINGS",
                        len: p.len(),
                    });
                }
                let entries = p[4..]
                    .chunks_exact(8)
                    .map(|e| Setting {
                        flags: e[0],
                        id: be32(e) & 0xFF_FFFF,
                        value: be32(&e[4..]),
                    })
                    .collect();
                Frame::Settings {
                    clear: flags & FLAG_CLEAR_SETTINGS != 0,
                    entries,
                }
            }
            t::PING => {
                exact("PING", 4)?;
                Frame::Ping { id: be32(p) }
            }
            t::GOAWAY => {
                exact("GOAWAY", 8)?;
                Frame::GoAway {
                    last_good_stream_id: be32(p) & MASK_31,
                    status: be32(&p[4..]),
                }
            }
            t::WINDOW_UPDATE => {
                exact("WINDOW_UPDATE", 8)?;
                Frame::WindowUpdate {
                    stream_id: be32(p) & MASK_31,
                    delta: be32(&p[4..]) & MASK_31,
                }
            }
            frame_type => Frame::Unknown {
                frame_type,
                flags,
                payload: Bytes::copy_from_slice(p),
            },
        })
    }
}

/// Encodes frames to send, with this direction's header context.
#[derive(Debug, Default)]
pub struct Encoder {
    headers: HeaderCompressor,
}

impl Encoder {
    /// An encoder with a fresh header context.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends `frame` to `dst`. On an error nothing is appended; if the error came from a
    /// header block, the header context may have moved on and the session must end.
    pub fn encode(&mut self, frame: &Frame, dst: &mut BytesMut) -> Result<(), EncodeError> {
        use frame_type as t;
        let id31 = |v: u32| {
            if v > MASK_31 {
                Err(EncodeError::Over31Bits(v))
            } else {
                Ok(v)
            }
        };
        let stream = |v: u32| {
            if v == 0 {
                Err(EncodeError::ZeroStreamId)
            } else {
                id31(v)
            }
        };
        let mut p = Vec::new();
        let (kind, flags) = match frame {
            Frame::SynStream {
                stream_id,
                associated_to,
                priority,
                slot,
                fin,
                unidirectional,
                headers,
            } => {
                if *priority > 7 {
                    return Err(EncodeError::BadPriority(*priority));
                }
                p.extend_from_slice(&stream(*stream_id)?.to_be_bytes());
                p.extend_from_slice(&id31(*associated_to)?.to_be_bytes());
                p.extend_from_slice(&[priority << 5, *slot]);
                self.headers.compress(headers, &mut p)?;
                (
                    t::SYN_STREAM,
                    fin_flag(*fin)
                        | if *unidirectional {
                            FLAG_UNIDIRECTIONAL
                        } else {
                            0
                        },
                )
            }
            Frame::SynReply {
                stream_id,
                fin,
                headers,
            }
            | Frame::Headers {
                stream_id,
                fin,
                headers,
            } => {
                p.extend_from_slice(&stream(*stream_id)?.to_be_bytes());
                self.headers.compress(headers, &mut p)?;
                let kind = if matches!(frame, Frame::SynReply { .. }) {
                    t::SYN_REPLY
                } else {
                    t::HEADERS
                };
                (kind, fin_flag(*fin))
            }
            Frame::RstStream { stream_id, status } => {
                p.extend_from_slice(&stream(*stream_id)?.to_be_bytes());
                p.extend_from_slice(&status.to_be_bytes());
                (t::RST_STREAM, 0)
            }
            Frame::Settings { clear, entries } => {
                let count = u32::try_from(entries.len())
                    .map_err(|_| EncodeError::PayloadTooLarge(usize::MAX))?;
                p.extend_from_slice(&count.to_be_bytes());
                for e in entries {
                    if e.id > 0xFF_FFFF {
                        return Err(EncodeError::BadSettingId(e.id));
                    }
                    p.extend_from_slice(&((u32::from(e.flags) << 24) | e.id).to_be_bytes());
                    p.extend_from_slice(&e.value.to_be_bytes());
                }
                (t::SETTINGS, if *clear { FLAG_CLEAR_SETTINGS } else { 0 })
            }
            Frame::Ping { id } => {
                p.extend_from_slice(&id.to_be_bytes());
                (t::PING, 0)
            }
            Frame::GoAway {
                last_good_stream_id,
                status,
            } => {
                p.extend_from_slice(&id31(*last_good_stream_id)?.to_be_bytes());
                p.extend_from_slice(&status.to_be_bytes());
                (t::GOAWAY, 0)
            }
            Frame::WindowUpdate { stream_id, delta } => {
                p.extend_from_slice(&id31(*stream_id)?.to_be_bytes());
                p.extend_from_slice(&id31(*delta)?.to_be_bytes());
                (t::WINDOW_UPDATE, 0)
            }
            Frame::Unknown {
                frame_type,
                flags,
                payload,
            } => {
                p.extend_from_slice(payload);
                (*frame_type, *flags)
            }
            Frame::Data {
                stream_id,
                fin,
                data,
            } => {
                let len = check_len(data.len())?;
                let stream_id = stream(*stream_id)?;
                dst.reserve(8 + data.len());
                dst.put_u32(stream_id);
                dst.put_u32((u32::from(fin_flag(*fin)) << 24) | len);
                dst.put_slice(data);
                return Ok(());
            }
        };
        let len = check_len(p.len())?;
        dst.reserve(8 + p.len());
        dst.put_u16(0x8000 | VERSION);
        dst.put_u16(kind);
        dst.put_u32((u32::from(flags) << 24) | len);
        dst.put_slice(&p);
        Ok(())
    }
}

fn fin_flag(fin: bool) -> u8 {
    if fin { FLAG_FIN } else { 0 }
}

fn check_len(len: usize) -> Result<u32, EncodeError> {
    if len > MAX_WIRE_PAYLOAD {
        Err(EncodeError::PayloadTooLarge(len))
    } else {
        Ok(len as u32)
    }
}
