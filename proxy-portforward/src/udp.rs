//! UDP through port-forward: an extension of this crate's own, which only its server
//! ([`server::Server`](crate::server::Server), `proxy port-forward-server`) speaks.
//! Kubernetes port-forward carries TCP alone (kubernetes#47862): an API server or a
//! kubelet given a UDP request would connect TCP to the port. So UDP is negotiated at the
//! upgrade, and a client sends none on a session that did not negotiate it.
//!
//! The wire, all of it:
//!
//! - **Negotiation, SPDY/3.1**: the client offers [`SPDY_PROTOCOL`]
//!   (`udp.portforward.proxy-rs.dev`) before `portforward.k8s.io`, each as its own
//!   `X-Stream-Protocol-Version` header line ([`SPDY_OFFER`]; Go's servers read the
//!   values as a list and do not split commas). Our server answers
//!   `X-Stream-Protocol-Version: udp.portforward.proxy-rs.dev` when it serves UDP; the
//!   kubelet (and the API server, which passes the upgrade on to it) selects
//!   `portforward.k8s.io`, the one it knows.
//! - **Negotiation, SPDY over WebSocket**: the same with `Sec-WebSocket-Protocol`:
//!   [`TUNNEL_PROTOCOL`] (`SPDY/3.1+udp.portforward.proxy-rs.dev`) offered before
//!   `SPDY/3.1+portforward.k8s.io` ([`TUNNEL_OFFER`]); a WebSocket server answers one
//!   value, and API servers answer the second.
//! - **Streams**: on a session that negotiated UDP, one forwarded UDP "connection" is
//!   kubectl's pair of streams (`streamtype: error` and `streamtype: data`, same `port` and
//!   `requestid`), both SYN_STREAMs also carrying `protocol: udp` ([`PROTOCOL_HEADER`],
//!   [`UDP`]). Streams without it are TCP, as always. Our server refuses (error text, no
//!   dial) a `protocol` it does not know, one the two streams disagree on, and `udp` on a
//!   session that did not negotiate it.
//! - **Framing**: on the data stream, both ways, each datagram is a 2-byte big-endian
//!   length and then that many bytes ([`encode`], [`Decoder`]); a datagram may be empty,
//!   and is at most [`MAX_DATAGRAM`] (65,535) bytes; frames may span SPDY data frames.
//! - **Ending**: the node ends the stream (FIN on the data stream, error stream closed)
//!   after an idle time with no datagram either way (60 s by default); an error (an ICMP
//!   port unreachable reported on a send or receive) goes on the error stream in the
//!   kubelet's words, `error forwarding port 53 to pod web, uid ...: ...`. The client ends
//!   it by resetting the data stream.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// The `X-Stream-Protocol-Version` value of SPDY port-forward with UDP streams.
pub const SPDY_PROTOCOL: &str = "udp.portforward.proxy-rs.dev";
/// The `Sec-WebSocket-Protocol` value of SPDY over WebSocket with UDP streams.
pub const TUNNEL_PROTOCOL: &str = "SPDY/3.1+udp.portforward.proxy-rs.dev";
/// What a client offers on a SPDY upgrade, in order: UDP, then plain port-forward.
pub const SPDY_OFFER: [&str; 2] = [SPDY_PROTOCOL, "portforward.k8s.io"];
/// What a client offers on a tunnel's WebSocket upgrade, in order.
pub const TUNNEL_OFFER: [&str; 2] = [TUNNEL_PROTOCOL, "SPDY/3.1+portforward.k8s.io"];
/// The SYN_STREAM header naming a stream's transport.
pub const PROTOCOL_HEADER: &str = "protocol";
/// Its value for UDP.
pub const UDP: &str = "udp";
/// The largest datagram the framing carries (IPv4 itself carries 65,507 bytes at most).
pub const MAX_DATAGRAM: usize = u16::MAX as usize;
/// Bytes of the length before each datagram.
pub const LENGTH_PREFIX: usize = 2;

/// Whether `selected`, the protocol a server answered (`X-Stream-Protocol-Version`, or the
/// tunnel's `Sec-WebSocket-Protocol`), allows UDP streams.
pub fn negotiated(selected: &str) -> bool {
    let selected = selected.trim();
    selected == SPDY_PROTOCOL || selected == TUNNEL_PROTOCOL
}

/// A datagram too long for the framing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TooLong(pub usize);

impl std::fmt::Display for TooLong {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "a datagram of {} bytes is over the {MAX_DATAGRAM} UDP port-forward carries",
            self.0
        )
    }
}

impl std::error::Error for TooLong {}

/// Appends `datagram`, framed, to `out`.
///
/// # Errors
///
/// It is longer than [`MAX_DATAGRAM`].
pub fn encode(datagram: &[u8], out: &mut BytesMut) -> Result<(), TooLong> {
    let len = u16::try_from(datagram.len()).map_err(|_| TooLong(datagram.len()))?;
    out.reserve(LENGTH_PREFIX + datagram.len());
    out.put_u16(len);
    out.put_slice(datagram);
    Ok(())
}

/// Takes whole datagrams out of the bytes of a data stream, as they come in pieces.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: BytesMut,
}

impl Decoder {
    /// A decoder with nothing buffered.
    pub fn new() -> Self {
        Decoder::default()
    }

    /// Adds bytes received.
    pub fn extend(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    fn length(&self) -> Option<usize> {
        (self.buf.len() >= LENGTH_PREFIX)
            .then(|| usize::from(u16::from_be_bytes([self.buf[0], self.buf[1]])))
    }

    /// The next whole datagram, if all of it has come.
    pub fn next_datagram(&mut self) -> Option<Bytes> {
        let len = self.length()?;
        if self.buf.len() < LENGTH_PREFIX + len {
            return None;
        }
        self.buf.advance(LENGTH_PREFIX);
        Some(self.buf.split_to(len).freeze())
    }

    /// How many more bytes the datagram being received needs (its length's first).
    pub fn wanted(&self) -> usize {
        match self.length() {
            None => LENGTH_PREFIX - self.buf.len(),
            Some(len) => (LENGTH_PREFIX + len).saturating_sub(self.buf.len()),
        }
    }

    /// Bytes of a datagram not yet whole.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_in_pieces() {
        let mut wire = BytesMut::new();
        let datagrams: Vec<Vec<u8>> = vec![vec![], vec![7], vec![1; 1400], vec![9; MAX_DATAGRAM]];
        for d in &datagrams {
            encode(d, &mut wire).unwrap();
        }
        assert_eq!(&wire[..5], &[0, 0, 0, 1, 7]);
        let mut decoder = Decoder::new();
        let mut got = Vec::new();
        for piece in wire.chunks(1000) {
            assert!(decoder.wanted() > 0);
            decoder.extend(piece);
            while let Some(d) = decoder.next_datagram() {
                got.push(d.to_vec());
            }
        }
        assert_eq!(got, datagrams);
        assert_eq!(decoder.pending(), 0);
        assert_eq!(decoder.wanted(), LENGTH_PREFIX);
    }

    #[test]
    fn too_long_is_refused() {
        let mut wire = BytesMut::new();
        let e = encode(&vec![0; MAX_DATAGRAM + 1], &mut wire).unwrap_err();
        assert_eq!(e, TooLong(65536));
        assert!(wire.is_empty());
    }

    #[test]
    fn only_our_tokens_negotiate_udp() {
        assert!(negotiated("udp.portforward.proxy-rs.dev"));
        assert!(negotiated(" SPDY/3.1+udp.portforward.proxy-rs.dev"));
        assert!(!negotiated("portforward.k8s.io"));
        assert!(!negotiated("SPDY/3.1+portforward.k8s.io"));
        assert!(!negotiated(""));
    }
}
