//! What can go wrong decoding or encoding a frame.

use std::fmt;

/// Why bytes could not be decoded as a SPDY/3.1 frame.
///
/// Every decode error is a session error: the peer broke the framing, or the shared header
/// compression context can no longer be trusted. The caller sends GOAWAY and closes; the
/// [`Decoder`](super::Decoder) must not be used again.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// A control frame of a version other than 3.
    UnsupportedVersion(u16),
    /// A frame whose payload is longer than the decoder's bound.
    FrameTooLarge {
        /// The length the frame announced.
        len: usize,
        /// The decoder's bound ([`Decoder::max_payload`](super::Decoder::max_payload)).
        max: usize,
    },
    /// A control frame whose length does not fit its type (for example a PING that is not
    /// 4 bytes, a SETTINGS whose length is not 4 + 8 × its count).
    BadLength {
        /// The frame type's name.
        frame: &'static str,
        /// The length the frame announced.
        len: usize,
    },
    /// A frame that must name a stream names stream 0.
    ZeroStreamId {
        /// The frame type's name.
        frame: &'static str,
    },
    /// The header block decompresses to more than the bound
    /// ([`MAX_HEADER_BLOCK`](super::MAX_HEADER_BLOCK)).
    HeaderBlockTooLarge {
        /// The bound.
        max: usize,
    },
    /// The compressed header block is not a valid zlib stream with the SPDY/3 dictionary.
    BadCompression(String),
    /// The decompressed header block ends inside a count, a length or a string.
    TruncatedHeaderBlock,
    /// Bytes are left after the last name/value pair of a header block.
    TrailingHeaderBytes,
    /// A header name that is empty, holds upper-case letters or bytes outside `!`..=`~`.
    BadHeaderName,
    /// The same header name twice in one block.
    DuplicateHeader(String),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnsupportedVersion(v) => write!(f, "SPDY version {v} is not supported (only 3)"),
            Self::FrameTooLarge { len, max } => {
                write!(f, "frame payload of {len} bytes is over the bound of {max}")
            }
            Self::BadLength { frame, len } => write!(f, "{frame} frame with a bad length of {len}"),
            Self::ZeroStreamId { frame } => write!(f, "{frame} frame for stream 0"),
            Self::HeaderBlockTooLarge { max } => {
                write!(f, "header block decompresses to more than {max} bytes")
            }
            Self::BadCompression(e) => write!(f, "bad header block compression: {e}"),
            Self::TruncatedHeaderBlock => f.write_str("truncated header block"),
            Self::TrailingHeaderBytes => f.write_str("bytes after the end of the header block"),
            Self::BadHeaderName => {
                f.write_str("bad header name (empty, upper-case or not a token)")
            }
            Self::DuplicateHeader(n) => write!(f, "header {n:?} twice in one block"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Why a frame could not be encoded: a field does not fit its place on the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EncodeError {
    /// A stream id, or a WINDOW_UPDATE delta, over 31 bits.
    Over31Bits(u32),
    /// Stream 0 where a stream is needed (SYN_STREAM, SYN_REPLY, HEADERS, RST_STREAM, data).
    ZeroStreamId,
    /// A SYN_STREAM priority over 7.
    BadPriority(u8),
    /// A SETTINGS id over 24 bits.
    BadSettingId(u32),
    /// A payload (data, compressed headers, settings) over the 24-bit length.
    PayloadTooLarge(usize),
    /// A header name that is empty, holds upper-case letters or bytes outside `!`..=`~`.
    BadHeaderName,
    /// The same header name twice.
    DuplicateHeader(String),
    /// A header name or value longer than a 32-bit length.
    HeaderTooLong,
    /// zlib failed.
    Compression(String),
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Over31Bits(v) => write!(f, "{v} does not fit in 31 bits"),
            Self::ZeroStreamId => f.write_str("stream 0 where a stream is needed"),
            Self::BadPriority(p) => write!(f, "priority {p} is over 7"),
            Self::BadSettingId(id) => write!(f, "setting id {id} does not fit in 24 bits"),
            Self::PayloadTooLarge(n) => write!(f, "payload of {n} bytes does not fit in 24 bits"),
            Self::BadHeaderName => {
                f.write_str("bad header name (empty, upper-case or not a token)")
            }
            Self::DuplicateHeader(n) => write!(f, "header {n:?} twice"),
            Self::HeaderTooLong => f.write_str("header name or value over 4 GiB"),
            Self::Compression(e) => write!(f, "header compression failed: {e}"),
        }
    }
}

impl std::error::Error for EncodeError {}
