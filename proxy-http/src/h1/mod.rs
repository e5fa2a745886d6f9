//! HTTP/1.1 on the wire (RFC 9112), for the proxy's own request path: message heads
//! parsed in place (no header map: names and values stay ranges of the bytes read) and
//! written back with the proxy's edits, and chunked bodies framed without being decoded,
//! so a body passes through as the bytes it arrived as.
//!
//! Every parser here takes untrusted bytes: none panics, each bounds what it reads, and
//! each refuses what would let two readers of the same bytes disagree on where a message
//! ends (request smuggling).

pub mod chunked;
pub mod head;
