//! The PROXY protocol (HAProxy's, versions 1 and 2): a header ahead of a connection's
//! bytes that carries the real client and destination addresses. A forwarder sends one to
//! its upstream ([`ProxyProtocol`]) and reads one from trusted peers
//! ([`AcceptProxy`]); [`parse`] reads one from bytes.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Which PROXY protocol header a forwarder sends to the upstream.
///
/// # Examples
///
/// ```
/// use proxy_core::{ProxyProtocol, TcpForwarder};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let forwarder = TcpForwarder::builder(["127.0.0.1:0".parse()?], "web.default:80".parse()?)
///     .proxy_protocol(ProxyProtocol::V2)
///     .build()?;
/// # let _ = forwarder;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProxyProtocol {
    /// The text header, `PROXY TCP4 <client> <destination> <ports>\r\n` (TCP only).
    V1,
    /// The binary header (TCP, and UDP with one header ahead of each datagram).
    V2,
}

/// Reading PROXY protocol headers (version 1 or 2) on a TCP listener, from peers in the
/// trusted ranges only: load balancers in front of this proxy that pass the real client
/// on. A trusted peer's connection must start with a header within `timeout`, else it is
/// closed and counted (`proxy_headers_rejected`); the header's client address then stands
/// for the peer's in logs, balancing and the header sent upstream. Connections from other
/// peers are relayed as they are.
///
/// # Examples
///
/// ```
/// use proxy_core::{AcceptProxy, TcpForwarder};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let forwarder = TcpForwarder::builder(["[::]:8080".parse()?], "web.default:80".parse()?)
///     .accept_proxy(AcceptProxy::new(["10.0.0.0/8".parse()?]))
///     .build()?;
/// # let _ = forwarder;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct AcceptProxy {
    /// The peers whose connections carry a header.
    pub trusted: Vec<crate::Cidr>,
    /// How long a trusted peer has to send its whole header. Default 5 s.
    pub timeout: std::time::Duration,
}

impl AcceptProxy {
    /// Headers from peers in `trusted`, within 5 s.
    pub fn new(trusted: impl IntoIterator<Item = crate::Cidr>) -> Self {
        AcceptProxy {
            trusted: trusted.into_iter().collect(),
            timeout: std::time::Duration::from_secs(5),
        }
    }

    /// The same with another header timeout.
    pub fn timeout(mut self, timeout: std::time::Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Whether a connection from `ip` must start with a header.
    pub(crate) fn trusts(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|c| c.contains(ip))
    }
}

/// The 12 bytes every version 2 header starts with.
pub(crate) const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// The transport a version 2 header names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Transport {
    Stream,
    Datagram,
}

/// Both addresses in one family: IPv4-mapped IPv6 addresses (from a dual-stack
/// listener) become IPv4; `None` if the families still differ.
fn same_family(src: SocketAddr, dst: SocketAddr) -> Option<(SocketAddr, SocketAddr)> {
    let canonical = |a: SocketAddr| SocketAddr::new(a.ip().to_canonical(), a.port());
    let (src, dst) = (canonical(src), canonical(dst));
    (src.is_ipv4() == dst.is_ipv4()).then_some((src, dst))
}

/// The version 1 header for a TCP connection from `src` to `dst`.
pub(crate) fn v1(src: SocketAddr, dst: SocketAddr) -> String {
    match same_family(src, dst) {
        Some((s, d)) => {
            let family = if s.is_ipv4() { "TCP4" } else { "TCP6" };
            format!(
                "PROXY {family} {} {} {} {}\r\n",
                s.ip(),
                d.ip(),
                s.port(),
                d.port()
            )
        }
        None => "PROXY UNKNOWN\r\n".to_owned(),
    }
}

/// The version 2 header for a connection (or a datagram) from `src` to `dst`.
pub(crate) fn v2(src: SocketAddr, dst: SocketAddr, transport: Transport) -> Vec<u8> {
    let mut header = Vec::with_capacity(16 + 36);
    header.extend_from_slice(&V2_SIGNATURE);
    // Version 2, command PROXY.
    header.push(0x21);
    let Some((src, dst)) = same_family(src, dst) else {
        // AF_UNSPEC: the receiver uses the connection's own addresses.
        header.extend_from_slice(&[0x00, 0, 0]);
        return header;
    };
    let family = if src.is_ipv4() { 0x10 } else { 0x20 };
    let protocol = match transport {
        Transport::Stream => 0x01,
        Transport::Datagram => 0x02,
    };
    header.push(family | protocol);
    let len: u16 = if src.is_ipv4() { 12 } else { 36 };
    header.extend_from_slice(&len.to_be_bytes());
    for ip in [src.ip(), dst.ip()] {
        match ip {
            IpAddr::V4(ip) => header.extend_from_slice(&ip.octets()),
            IpAddr::V6(ip) => header.extend_from_slice(&ip.octets()),
        }
    }
    header.extend_from_slice(&src.port().to_be_bytes());
    header.extend_from_slice(&dst.port().to_be_bytes());
    header
}

impl ProxyProtocol {
    /// The header for a TCP connection from `src` to `dst`; version 2 carries what its
    /// TLS handshake agreed on, when the proxy terminated TLS.
    pub(crate) fn tcp_header(
        self,
        src: SocketAddr,
        dst: SocketAddr,
        tls: Option<&crate::tls::TlsInfo>,
    ) -> Vec<u8> {
        match (self, tls) {
            (ProxyProtocol::V1, _) => v1(src, dst).into_bytes(),
            (ProxyProtocol::V2, None) => v2(src, dst, Transport::Stream),
            (ProxyProtocol::V2, Some(tls)) => with_tls(v2(src, dst, Transport::Stream), tls),
        }
    }
}

/// `header` (version 2) with TLVs for what a terminated TLS connection agreed on:
/// `PP2_TYPE_ALPN`, `PP2_TYPE_AUTHORITY` (the server name), and `PP2_TYPE_SSL` with the
/// version, the cipher and the client certificate's common name, as HAProxy sends them.
fn with_tls(mut header: Vec<u8>, tls: &crate::tls::TlsInfo) -> Vec<u8> {
    fn tlv(out: &mut Vec<u8>, kind: u8, value: &[u8]) {
        let len = u16::try_from(value.len()).unwrap_or(u16::MAX);
        out.push(kind);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&value[..usize::from(len)]);
    }
    const PP2_TYPE_ALPN: u8 = 0x01;
    const PP2_TYPE_AUTHORITY: u8 = 0x02;
    const PP2_TYPE_SSL: u8 = 0x20;
    const PP2_SUBTYPE_SSL_VERSION: u8 = 0x21;
    const PP2_SUBTYPE_SSL_CN: u8 = 0x22;
    const PP2_SUBTYPE_SSL_CIPHER: u8 = 0x23;
    const PP2_CLIENT_SSL: u8 = 0x01;
    const PP2_CLIENT_CERT_CONN: u8 = 0x02;
    let mut tlvs = Vec::with_capacity(128);
    if let Some(alpn) = &tls.alpn {
        tlv(&mut tlvs, PP2_TYPE_ALPN, alpn.as_bytes());
    }
    if let Some(name) = &tls.server_name {
        tlv(&mut tlvs, PP2_TYPE_AUTHORITY, name.as_bytes());
    }
    let mut ssl = Vec::with_capacity(64);
    let client = PP2_CLIENT_SSL
        | if tls.client_cert {
            PP2_CLIENT_CERT_CONN
        } else {
            0
        };
    ssl.push(client);
    // verify: 0, the client's certificate (if any) was verified.
    ssl.extend_from_slice(&0u32.to_be_bytes());
    tlv(&mut ssl, PP2_SUBTYPE_SSL_VERSION, tls.version.as_bytes());
    if let Some(cn) = &tls.client_cn {
        tlv(&mut ssl, PP2_SUBTYPE_SSL_CN, cn.as_bytes());
    }
    tlv(&mut ssl, PP2_SUBTYPE_SSL_CIPHER, tls.cipher.as_bytes());
    tlv(&mut tlvs, PP2_TYPE_SSL, &ssl);
    let len = u16::from_be_bytes([header[14], header[15]]) as usize + tlvs.len();
    let len = u16::try_from(len).unwrap_or(u16::MAX);
    header[14..16].copy_from_slice(&len.to_be_bytes());
    header.extend_from_slice(&tlvs);
    header
}

/// The most bytes a received header may take: version 1 allows 107; version 2 headers
/// (16 bytes and their addresses and TLVs) are accepted up to this size.
pub const MAX_HEADER: usize = 4096;

/// The longest version 1 header, `\r\n` included.
const MAX_V1: usize = 107;

/// A PROXY protocol header read from the start of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Header {
    /// Its length in bytes: the connection's own bytes start after it.
    pub len: usize,
    /// The client's address, when the header carries one (not for `UNKNOWN`, `LOCAL`
    /// or UNIX-socket headers).
    pub source: Option<SocketAddr>,
    /// The address the client connected to, likewise.
    pub destination: Option<SocketAddr>,
}

/// Bytes that are not a valid PROXY protocol header; the message says what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderError(&'static str);

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed PROXY protocol header: {}", self.0)
    }
}

impl std::error::Error for HeaderError {}

/// Reads a version 1 or 2 header from the start of `buf`: `Ok(None)` while `buf` is a
/// valid beginning that needs more bytes, an error as soon as it cannot be one.
///
/// # Errors
///
/// [`HeaderError`] for bytes that are no PROXY header, or a malformed or oversized one.
///
/// # Examples
///
/// ```
/// use proxy_core::proxy_protocol::parse;
///
/// let h = parse(b"PROXY TCP4 192.0.2.1 10.0.0.1 51000 80\r\nGET /").unwrap().unwrap();
/// assert_eq!(h.len, 40);
/// assert_eq!(h.source, Some("192.0.2.1:51000".parse().unwrap()));
/// assert_eq!(parse(b"PROXY TCP4 192.0.2.1").unwrap(), None);
/// assert!(parse(b"GET / HTTP/1.1\r\n").is_err());
/// ```
pub fn parse(buf: &[u8]) -> Result<Option<Header>, HeaderError> {
    const V1: &[u8] = b"PROXY ";
    let prefix = |sig: &[u8]| buf[..buf.len().min(sig.len())] == sig[..buf.len().min(sig.len())];
    if prefix(&V2_SIGNATURE) {
        if buf.len() < 16 {
            return Ok(None);
        }
        return parse_v2(buf);
    }
    if prefix(V1) {
        let window = &buf[..buf.len().min(MAX_V1)];
        // The line ends at its first CR or LF, which must be a CRLF: a bare CR or LF is an
        // error as soon as it is seen, whatever follows (UNKNOWN's ignored rest included),
        // so the answer does not depend on how the bytes were split into reads.
        return match window.iter().position(|&b| b == b'\r' || b == b'\n') {
            Some(end) if window[end..].starts_with(b"\r\n") => {
                parse_v1(&buf[..end]).map(|(source, destination)| {
                    Some(Header {
                        len: end + 2,
                        source,
                        destination,
                    })
                })
            }
            Some(end) if window[end] == b'\n' || end + 1 < window.len() => {
                Err(HeaderError("version 1 line not ended by CRLF"))
            }
            _ if buf.len() >= MAX_V1 => Err(HeaderError("version 1 line longer than 107 bytes")),
            // No CR or LF yet, or a CR that may be followed by its LF.
            _ => Ok(None),
        };
    }
    Err(HeaderError("no PROXY protocol signature"))
}

/// Source and destination of a version 1 line (without its CRLF).
type Addrs = (Option<SocketAddr>, Option<SocketAddr>);

fn parse_v1(line: &[u8]) -> Result<Addrs, HeaderError> {
    let line = std::str::from_utf8(line).map_err(|_| HeaderError("version 1 line is not text"))?;
    let mut fields = line.split(' ');
    fields.next(); // "PROXY"
    let family = fields.next().ok_or(HeaderError("no protocol family"))?;
    if family == "UNKNOWN" {
        return Ok((None, None));
    }
    let v4 = match family {
        "TCP4" => true,
        "TCP6" => false,
        _ => return Err(HeaderError("protocol family is not TCP4, TCP6 or UNKNOWN")),
    };
    let ip = |f: Option<&str>| -> Result<IpAddr, HeaderError> {
        let f = f.ok_or(HeaderError("missing address"))?;
        if v4 {
            f.parse::<Ipv4Addr>().map(IpAddr::V4)
        } else {
            f.parse::<Ipv6Addr>().map(IpAddr::V6)
        }
        .map_err(|_| HeaderError("address does not match the family"))
    };
    let port = |f: Option<&str>| -> Result<u16, HeaderError> {
        let f = f.ok_or(HeaderError("missing port"))?;
        let plain = !f.is_empty() && f.len() <= 5 && f.bytes().all(|b| b.is_ascii_digit());
        let leading_zero = f.len() > 1 && f.starts_with('0');
        f.parse()
            .ok()
            .filter(|_| plain && !leading_zero)
            .ok_or(HeaderError("port is not 0 to 65535"))
    };
    let (src, dst) = (ip(fields.next())?, ip(fields.next())?);
    let (sport, dport) = (port(fields.next())?, port(fields.next())?);
    if fields.next().is_some() {
        return Err(HeaderError("extra fields"));
    }
    Ok((
        Some(SocketAddr::new(src, sport)),
        Some(SocketAddr::new(dst, dport)),
    ))
}

fn parse_v2(buf: &[u8]) -> Result<Option<Header>, HeaderError> {
    let version = buf[12] >> 4;
    let command = buf[12] & 0x0f;
    if version != 2 {
        return Err(HeaderError("version 2 signature with another version"));
    }
    if command > 1 {
        return Err(HeaderError("command is neither LOCAL nor PROXY"));
    }
    let family = buf[13] >> 4;
    let transport = buf[13] & 0x0f;
    if family > 3 || transport > 2 {
        return Err(HeaderError("unknown address family or transport"));
    }
    let len = 16 + usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if len > MAX_HEADER {
        return Err(HeaderError("version 2 header longer than accepted"));
    }
    let need = match family {
        1 => 12,
        2 => 36,
        3 => 216,
        _ => 0,
    };
    if len - 16 < need {
        return Err(HeaderError("address block shorter than its family needs"));
    }
    if buf.len() < len {
        return Ok(None);
    }
    let body = &buf[16..len];
    let (source, destination) = match (command, family) {
        (1, 1) => {
            let ip =
                |i: usize| IpAddr::from(<[u8; 4]>::try_from(&body[i..i + 4]).unwrap_or_default());
            let port = |i: usize| u16::from_be_bytes([body[i], body[i + 1]]);
            (
                Some(SocketAddr::new(ip(0), port(8))),
                Some(SocketAddr::new(ip(4), port(10))),
            )
        }
        (1, 2) => {
            let ip =
                |i: usize| IpAddr::from(<[u8; 16]>::try_from(&body[i..i + 16]).unwrap_or_default());
            let port = |i: usize| u16::from_be_bytes([body[i], body[i + 1]]);
            (
                Some(SocketAddr::new(ip(0), port(32))),
                Some(SocketAddr::new(ip(16), port(34))),
            )
        }
        _ => (None, None),
    };
    Ok(Some(Header {
        len,
        source,
        destination,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn v1_headers() {
        assert_eq!(
            v1(addr("192.0.2.1:51000"), addr("10.0.0.1:80")),
            "PROXY TCP4 192.0.2.1 10.0.0.1 51000 80\r\n"
        );
        assert_eq!(
            v1(addr("[2001:db8::1]:51000"), addr("[::1]:443")),
            "PROXY TCP6 2001:db8::1 ::1 51000 443\r\n"
        );
        // A dual-stack listener reports IPv4 clients as mapped addresses.
        assert_eq!(
            v1(addr("[::ffff:192.0.2.1]:5"), addr("[::ffff:10.0.0.1]:80")),
            "PROXY TCP4 192.0.2.1 10.0.0.1 5 80\r\n"
        );
        assert_eq!(
            v1(addr("192.0.2.1:5"), addr("[2001:db8::2]:80")),
            "PROXY UNKNOWN\r\n"
        );
        // The longest header fits the specification's 107 bytes.
        let longest = v1(
            addr("[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535"),
            addr("[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535"),
        );
        assert!(longest.len() <= 107, "{}", longest.len());
    }

    #[test]
    fn v2_headers() {
        let h = v2(
            addr("192.0.2.1:51000"),
            addr("10.0.0.1:80"),
            Transport::Stream,
        );
        let mut want = V2_SIGNATURE.to_vec();
        want.extend_from_slice(&[0x21, 0x11, 0, 12, 192, 0, 2, 1, 10, 0, 0, 1]);
        want.extend_from_slice(&51000u16.to_be_bytes());
        want.extend_from_slice(&80u16.to_be_bytes());
        assert_eq!(h, want);

        let h = v2(
            addr("[2001:db8::1]:1"),
            addr("[::1]:2"),
            Transport::Datagram,
        );
        assert_eq!(&h[12..16], &[0x21, 0x22, 0, 36]);
        assert_eq!(h.len(), 16 + 36);
        assert_eq!(
            &h[16..32],
            &"2001:db8::1"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets()
        );
        assert_eq!(&h[48..52], &[0, 1, 0, 2]);

        let h = v2(
            addr("192.0.2.1:5"),
            addr("[2001:db8::2]:80"),
            Transport::Stream,
        );
        assert_eq!(&h[12..], &[0x21, 0x00, 0, 0]);
    }
}

#[cfg(test)]
mod parse_tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn what_we_send_we_read_back() {
        for (src, dst) in [
            ("192.0.2.1:51000", "10.0.0.1:80"),
            ("[2001:db8::1]:1", "[::1]:65535"),
        ] {
            let (src, dst) = (addr(src), addr(dst));
            for bytes in [
                v1(src, dst).into_bytes(),
                v2(src, dst, Transport::Stream),
                v2(src, dst, Transport::Datagram),
            ] {
                let mut with_data = bytes.clone();
                with_data.extend_from_slice(b"payload");
                let h = parse(&with_data).unwrap().unwrap();
                assert_eq!(
                    (h.len, h.source, h.destination),
                    (bytes.len(), Some(src), Some(dst))
                );
                // Every shorter prefix is a valid beginning.
                for cut in 0..bytes.len() {
                    assert_eq!(parse(&bytes[..cut]), Ok(None), "{cut} of {bytes:?}");
                }
            }
        }
        let unknown = v1(addr("192.0.2.1:5"), addr("[::1]:5"));
        let h = parse(unknown.as_bytes()).unwrap().unwrap();
        assert_eq!((h.source, h.destination), (None, None));
    }

    #[test]
    fn version_2_local_and_tlvs() {
        // LOCAL, no addresses.
        let mut local = V2_SIGNATURE.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0, 0]);
        let h = parse(&local).unwrap().unwrap();
        assert_eq!((h.len, h.source), (16, None));
        // PROXY over IPv4 with 7 bytes of TLVs after the addresses.
        let mut tlv = v2(addr("1.2.3.4:5"), addr("6.7.8.9:10"), Transport::Stream);
        tlv[15] = 12 + 7;
        tlv.extend_from_slice(&[0x04, 0, 4, b'n', b'o', b'o', b'p']);
        let h = parse(&tlv).unwrap().unwrap();
        assert_eq!((h.len, h.source), (16 + 19, Some(addr("1.2.3.4:5"))));
    }

    #[test]
    fn malformed_headers_are_rejected() {
        let mut bad_version = v2(addr("1.2.3.4:5"), addr("6.7.8.9:10"), Transport::Stream);
        bad_version[12] = 0x11;
        let mut bad_command = bad_version.clone();
        bad_command[12] = 0x23;
        let mut short_block = V2_SIGNATURE.to_vec();
        short_block.extend_from_slice(&[0x21, 0x11, 0, 4, 1, 2, 3, 4]);
        let mut huge = V2_SIGNATURE.to_vec();
        huge.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        let mut family = V2_SIGNATURE.to_vec();
        family.extend_from_slice(&[0x21, 0x41, 0, 12]);
        let cases: [&[u8]; 16] = [
            b"GET / HTTP/1.1\r\n",
            b"\x16\x03\x01",
            b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
            b"PROXY TCP4 ::1 ::1 1 2\r\n",
            b"PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n",
            b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
            &bad_version,
            &bad_command,
            &short_block,
            &huge,
            &family,
        ];
        for case in cases {
            assert!(parse(case).is_err(), "{:?}", String::from_utf8_lossy(case));
        }
        let long = [b"PROXY UNKNOWN ".as_slice(), &[b'x'; 120]].concat();
        assert!(parse(&long).is_err());
    }

    /// Found by the `proxy_header` fuzz target: a bare LF or CR before the CRLF was taken
    /// as part of an UNKNOWN line, although the same bytes without the CRLF were already an
    /// error.
    #[test]
    fn a_bare_cr_or_lf_ends_a_version_1_line_with_an_error() {
        for case in [
            b"PROXY UNKNOWN T\n\0\r\nQUICP6\r\n".as_slice(),
            b"PROXY UNKNOWN\n\r\n",
            b"PROXY UNKNOWN \rx\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r\n",
        ] {
            let err = Err(HeaderError("version 1 line not ended by CRLF"));
            assert_eq!(parse(case), err, "{:?}", String::from_utf8_lossy(case));
            let end = case.iter().position(|&b| b == b'\r' || b == b'\n').unwrap();
            // Before the CRLF arrives it is the same error, from the bare CR or LF on.
            assert_eq!(parse(&case[..end + 2]), err);
            assert_eq!(parse(&case[..end]), Ok(None));
        }
        // What UNKNOWN's rest may hold up to the CRLF is still ignored.
        let h = parse(b"PROXY UNKNOWN ffff::1 ::1 1 2\r\n")
            .unwrap()
            .unwrap();
        assert_eq!((h.len, h.source), (31, None));
    }
}
