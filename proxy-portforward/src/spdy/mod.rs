//! SPDY/3.1 framing, with no I/O: the protocol `kubectl port-forward` speaks to a node.
//!
//! kubectl POSTs `/api/v1/namespaces/NS/pods/NAME/portforward` with `Upgrade: SPDY/3.1`
//! and `X-Stream-Protocol-Version: portforward.k8s.io`; after the `101 Switching
//! Protocols` both sides exchange SPDY frames. For each forwarded connection kubectl opens
//! two streams (SYN_STREAM) whose headers are `streamtype: error` or `streamtype: data`,
//! `port: N` and `requestid: K` (SPDY/3 header names are lower case on the wire: Go's
//! `streamType` and `requestID` arrive so).
//!
//! The layout (draft-mbelshe-httpbis-spdy-00, the SPDY/3.1 draft):
//!
//! ```text
//! control frame: |1| version (15) | type (16) | flags (8) | length (24) | payload
//! data frame:    |0| stream id (31)           | flags (8) | length (24) | payload
//! ```
//!
//! SYN_STREAM, SYN_REPLY and HEADERS carry a header block: a 32-bit count, then each
//! name and value as a 32-bit length and bytes, compressed with zlib primed with the
//! SPDY/3 dictionary. Each direction has one zlib context for the whole session (each
//! block ends with a SYNC_FLUSH), so an [`Encoder`] (holding a [`HeaderCompressor`]) and a
//! [`Decoder`] (holding a [`HeaderDecompressor`]) live as long as the connection, and
//! every frame goes through them in order.
//!
//! [`Session`] is the node's side of a session above the codec: streams, their pairing
//! into forwarded connections, PING and flow control, still with no I/O.
//!
//! Bounds: [`Decoder`] refuses a frame whose payload is over [`DEFAULT_MAX_PAYLOAD`]
//! (1 MiB; [`Decoder::with_max_payload`] changes it, up to the field's 16 MiB - 1), and a
//! header block that decompresses to more than [`MAX_HEADER_BLOCK`] (64 KiB). Only
//! version 3 is spoken.
//!
//! ```
//! use bytes::BytesMut;
//! use proxy_portforward::spdy::{Decoder, Encoder, Frame, Headers};
//!
//! // kubectl's side: open the data stream of request 0 to port 8080.
//! let mut encoder = Encoder::new();
//! let mut wire = BytesMut::new();
//! let headers = Headers::new()
//!     .with("streamtype", "data")
//!     .with("port", "8080")
//!     .with("requestid", "0");
//! let syn = Frame::syn_stream(3, headers);
//! encoder.encode(&syn, &mut wire)?;
//!
//! // The node's side: bytes arrive in pieces; `decode_buf` waits for a whole frame.
//! let mut decoder = Decoder::new();
//! let mut input = BytesMut::new();
//! input.extend_from_slice(&wire[..5]);
//! assert_eq!(decoder.decode_buf(&mut input)?, None);
//! input.extend_from_slice(&wire[5..]);
//! let frame = decoder.decode_buf(&mut input)?.expect("a whole frame");
//! assert_eq!(frame, syn);
//! if let Frame::SynStream { headers, .. } = &frame {
//!     assert_eq!(headers.get_str("port"), Some("8080"));
//! }
//! assert!(input.is_empty());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod client;
mod error;
mod flow;
mod frame;
mod headers;
pub mod session;
#[cfg(test)]
mod session_tests;
#[cfg(test)]
mod tests;

pub use client::{ClientEvent, ClientSession, Opened};
pub use error::{DecodeError, EncodeError};
pub use frame::{
    DEFAULT_MAX_PAYLOAD, Decoder, Encoder, Frame, MAX_WIRE_PAYLOAD, Setting, VERSION, frame_type,
    goaway_status, rst_status, setting_id,
};
pub use headers::{HeaderCompressor, HeaderDecompressor, Headers, MAX_HEADER_BLOCK};
pub use session::{FlowControl, Session};
