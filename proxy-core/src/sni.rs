//! The server name a TLS client asks for (SNI, RFC 6066 §3), read from the first bytes
//! of a connection without decrypting anything: the ClientHello's `server_name`
//! extension, for routing a connection by name while its bytes pass through untouched.
//!
//! [`server_name`] works on bytes peeked from the socket: it says when it needs more
//! ([`HelloError::Incomplete`]), and reads at most [`MAX_HELLO`] bytes of handshake. A
//! ClientHello split over several TLS records is put back together.

use std::fmt;

/// The most handshake bytes read for a ClientHello (a post-quantum key share makes one
/// about 1.8 KiB; the largest record is 16 KiB).
pub const MAX_HELLO: usize = 16 << 10;

/// The TLS record type of handshake messages.
const HANDSHAKE: u8 = 22;
/// The handshake type of a ClientHello.
const CLIENT_HELLO: u8 = 1;
/// The extension type of `server_name`.
const SERVER_NAME: u16 = 0;
/// The name type of a host name in `server_name`.
const HOST_NAME: u8 = 0;

/// Why no server name came out of the bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HelloError {
    /// The bytes so far are a ClientHello's beginning: peek again with more.
    Incomplete,
    /// Not a TLS handshake record: another protocol, or TLS that does not start with a
    /// ClientHello.
    NotTls,
    /// A ClientHello, broken: what is wrong.
    Malformed(&'static str),
    /// A ClientHello larger than [`MAX_HELLO`].
    TooLarge,
}

impl fmt::Display for HelloError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HelloError::Incomplete => f.write_str("the ClientHello is not complete yet"),
            HelloError::NotTls => f.write_str("not a TLS ClientHello"),
            HelloError::Malformed(why) => write!(f, "malformed ClientHello: {why}"),
            HelloError::TooLarge => write!(f, "ClientHello larger than {MAX_HELLO} bytes"),
        }
    }
}

impl std::error::Error for HelloError {}

/// The host name the ClientHello at the start of `bytes` asks for, in lower case: `None`
/// when it names none (a client connecting by address). The bytes are TLS records as
/// they came from the client.
///
/// # Errors
///
/// [`HelloError::Incomplete`] until the whole ClientHello is there; the others when no
/// name can come of these bytes.
///
/// # Examples
///
/// ```
/// use proxy_core::sni::{HelloError, server_name};
///
/// // Plain HTTP is not TLS.
/// assert_eq!(server_name(b"GET / HTTP/1.1\r\n"), Err(HelloError::NotTls));
/// // A handshake record's first bytes: more are needed.
/// assert_eq!(server_name(&[22, 3, 1, 0, 200, 1]), Err(HelloError::Incomplete));
/// ```
pub fn server_name(bytes: &[u8]) -> Result<Option<String>, HelloError> {
    let hello = handshake(bytes)?;
    let mut r = Reader(&hello);
    if r.u8()? != CLIENT_HELLO {
        return Err(HelloError::NotTls);
    }
    let len = r.u24()?;
    let mut body = Reader(r.take(len)?);
    body.take(2)?; // legacy_version
    body.take(32)?; // random
    let session = usize::from(body.u8()?);
    if session > 32 {
        return Err(HelloError::Malformed("session id longer than 32 bytes"));
    }
    body.take(session)?;
    let suites = usize::from(body.u16()?);
    if suites < 2 || suites % 2 != 0 {
        return Err(HelloError::Malformed("cipher suites"));
    }
    body.take(suites)?;
    let compressions = usize::from(body.u8()?);
    if compressions == 0 {
        return Err(HelloError::Malformed("no compression method"));
    }
    body.take(compressions)?;
    if body.0.is_empty() {
        return Ok(None); // no extensions at all
    }
    let extensions = usize::from(body.u16()?);
    let mut extensions = Reader(body.take(extensions)?);
    while !extensions.0.is_empty() {
        let kind = extensions.u16()?;
        let len = usize::from(extensions.u16()?);
        let data = extensions.take(len)?;
        if kind == SERVER_NAME {
            return host_name(data).map(Some);
        }
    }
    Ok(None)
}

/// The handshake bytes of the records at the start of `bytes`, up to the end of the
/// first handshake message (a ClientHello may span records).
fn handshake(bytes: &[u8]) -> Result<Vec<u8>, HelloError> {
    let mut out = Vec::new();
    let mut rest = bytes;
    loop {
        // The message's length, once its header is in.
        if let [_, a, b, c, ..] = out[..] {
            let need = 4 + (usize::from(a) << 16 | usize::from(b) << 8 | usize::from(c));
            if need > MAX_HELLO {
                return Err(HelloError::TooLarge);
            }
            if out.len() >= need {
                out.truncate(need);
                return Ok(out);
            }
        }
        // A record header, or the start of one, that is not a handshake's.
        let not_handshake = rest.first().is_some_and(|&k| k != HANDSHAKE)
            || rest.get(1).is_some_and(|&major| major != 3);
        if not_handshake {
            return Err(if out.is_empty() {
                HelloError::NotTls
            } else {
                HelloError::Malformed("a record other than handshake inside the ClientHello")
            });
        }
        let [_, _, _, hi, lo, ..] = *rest else {
            return Err(HelloError::Incomplete);
        };
        let len = usize::from(u16::from_be_bytes([hi, lo]));
        if len == 0 {
            return Err(HelloError::Malformed("an empty handshake record"));
        }
        if len > MAX_HELLO + 256 {
            return Err(HelloError::Malformed("a record longer than TLS allows"));
        }
        let Some(payload) = rest.get(5..5 + len) else {
            return Err(HelloError::Incomplete);
        };
        out.extend_from_slice(payload);
        rest = &rest[5 + len..];
    }
}

/// The host name of a `server_name` extension's data, in lower case.
fn host_name(data: &[u8]) -> Result<String, HelloError> {
    let mut r = Reader(data);
    let list = usize::from(r.u16()?);
    let mut list = Reader(r.take(list)?);
    while !list.0.is_empty() {
        let kind = list.u8()?;
        let len = usize::from(list.u16()?);
        let name = list.take(len)?;
        if kind != HOST_NAME {
            continue;
        }
        // One trailing dot (a fully qualified name) is dropped; then labels of 1 to 63
        // letters, digits, `-` and `_`.
        let name = name.strip_suffix(b".").unwrap_or(name);
        let valid = (1..=253).contains(&name.len())
            && name.split(|&b| b == b'.').all(|label| {
                (1..=63).contains(&label.len())
                    && (label.iter()).all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            });
        if !valid {
            return Err(HelloError::Malformed("a host name that is not a DNS name"));
        }
        let name = std::str::from_utf8(name).expect("ASCII");
        return Ok(name.to_ascii_lowercase());
    }
    Err(HelloError::Malformed("server_name without a host name"))
}

/// Reads big-endian fields off the front of a slice; running out is a malformed hello
/// (the whole message is there by then).
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], HelloError> {
        if n > self.0.len() {
            return Err(HelloError::Malformed("a length past the end"));
        }
        let (taken, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(taken)
    }

    fn u8(&mut self) -> Result<u8, HelloError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, HelloError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u24(&mut self) -> Result<usize, HelloError> {
        let b = self.take(3)?;
        Ok(usize::from(b[0]) << 16 | usize::from(b[1]) << 8 | usize::from(b[2]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ClientHello naming `name` (if any), with `extra` extensions before SNI, as
    /// record bytes, the handshake split into records of at most `record` bytes.
    fn hello(name: Option<&str>, extra: &[(u16, &[u8])], record: usize) -> Vec<u8> {
        let mut exts = Vec::new();
        for (kind, data) in extra {
            exts.extend_from_slice(&kind.to_be_bytes());
            exts.extend_from_slice(&(data.len() as u16).to_be_bytes());
            exts.extend_from_slice(data);
        }
        if let Some(name) = name {
            let mut entry = vec![HOST_NAME];
            entry.extend_from_slice(&(name.len() as u16).to_be_bytes());
            entry.extend_from_slice(name.as_bytes());
            let mut data = (entry.len() as u16).to_be_bytes().to_vec();
            data.extend_from_slice(&entry);
            exts.extend_from_slice(&SERVER_NAME.to_be_bytes());
            exts.extend_from_slice(&(data.len() as u16).to_be_bytes());
            exts.extend_from_slice(&data);
        }
        let mut body = vec![3, 3];
        body.extend_from_slice(&[7; 32]);
        body.push(32);
        body.extend_from_slice(&[9; 32]);
        body.extend_from_slice(&[0, 4, 0x13, 0x01, 0x13, 0x02]);
        body.extend_from_slice(&[1, 0]);
        body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
        body.extend_from_slice(&exts);
        let mut message = vec![CLIENT_HELLO];
        message.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        message.extend_from_slice(&body);
        let mut out = Vec::new();
        for chunk in message.chunks(record) {
            out.extend_from_slice(&[HANDSHAKE, 3, 1]);
            out.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
            out.extend_from_slice(chunk);
        }
        out
    }

    #[test]
    fn the_name_comes_out_lower_case_after_other_extensions() {
        let bytes = hello(Some("API.Example.COM."), &[(10, &[0, 2, 0, 29])], 16 << 10);
        assert_eq!(server_name(&bytes), Ok(Some("api.example.com".to_owned())));
        assert_eq!(
            server_name(&hello(None, &[(10, &[0, 2, 0, 29])], 1 << 14)),
            Ok(None)
        );
    }

    #[test]
    fn every_prefix_is_incomplete_and_bytes_after_the_hello_are_ignored() {
        let mut bytes = hello(Some("a.example"), &[], 1 << 14);
        for end in 0..bytes.len() {
            assert_eq!(
                server_name(&bytes[..end]),
                Err(HelloError::Incomplete),
                "{end}"
            );
        }
        bytes.extend_from_slice(&[23, 3, 3, 0, 1, 0]);
        assert_eq!(server_name(&bytes), Ok(Some("a.example".to_owned())));
    }

    #[test]
    fn a_hello_split_over_records_is_put_together() {
        for record in [1, 7, 50] {
            let bytes = hello(Some("split.example"), &[(43, &[2, 3, 4])], record);
            assert_eq!(
                server_name(&bytes),
                Ok(Some("split.example".to_owned())),
                "{record}"
            );
        }
    }

    #[test]
    fn other_protocols_and_broken_hellos_are_told_apart() {
        assert_eq!(
            server_name(b"SSH-2.0-OpenSSH_9.2\r\n"),
            Err(HelloError::NotTls)
        );
        assert_eq!(server_name(&[22, 2, 0]), Err(HelloError::NotTls));
        // A handshake that is not a ClientHello (a ServerHello).
        let mut server = hello(Some("x"), &[], 1 << 14);
        server[5] = 2;
        assert_eq!(server_name(&server), Err(HelloError::NotTls));
        // Names that are no DNS names, and a message past the size limit.
        for bad in ["a b", ".", "a..b", ".a", "a.b..", ""] {
            let bad = hello(Some(bad), &[], 1 << 14);
            assert!(matches!(server_name(&bad), Err(HelloError::Malformed(_))));
        }
        let mut huge = vec![HANDSHAKE, 3, 1, 0, 4, CLIENT_HELLO];
        huge.extend_from_slice(&((MAX_HELLO as u32).to_be_bytes()[1..]));
        assert_eq!(server_name(&huge), Err(HelloError::TooLarge));
    }
}
