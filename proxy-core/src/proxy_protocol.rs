//! The PROXY protocol (HAProxy's, versions 1 and 2): a header sent to the upstream ahead
//! of a connection's bytes, so the upstream sees the real client and destination
//! addresses instead of the proxy's.

use std::net::{IpAddr, SocketAddr};

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
    /// The header for a TCP connection from `src` to `dst`.
    pub(crate) fn tcp_header(self, src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
        match self {
            ProxyProtocol::V1 => v1(src, dst).into_bytes(),
            ProxyProtocol::V2 => v2(src, dst, Transport::Stream),
        }
    }
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
