//! IP address ranges in CIDR notation (`10.0.0.0/8`, `fd00::/8`, or one address).

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// A range of IP addresses: a network address and a prefix length.
///
/// IPv4 is IPv4 however it is written: an IPv4-mapped IPv6 address (as a dual-stack
/// listener reports IPv4 clients) matches IPv4 ranges, and an IPv4-mapped range
/// (`::ffff:10.0.0.0/104`, `::ffff:0:0/96`) *is* its IPv4 range (`10.0.0.0/8`,
/// `0.0.0.0/0`). IPv6 ranges shorter than `/96` never match IPv4 clients, so `::/0`
/// means every IPv6 client, as in nginx and HAProxy.
///
/// # Examples
///
/// ```
/// use proxy_core::Cidr;
///
/// let lan: Cidr = "10.0.0.0/8".parse().unwrap();
/// assert!(lan.contains("10.1.2.3".parse().unwrap()));
/// assert!(lan.contains("::ffff:10.1.2.3".parse().unwrap()));
/// assert!(!lan.contains("192.168.0.1".parse().unwrap()));
/// let mapped: Cidr = "::ffff:10.0.0.0/104".parse().unwrap();
/// assert_eq!(mapped, lan);
/// assert_eq!(mapped.to_string(), "10.0.0.0/8");
/// let one: Cidr = "::1".parse().unwrap();
/// assert_eq!(one.to_string(), "::1/128");
/// assert!("10.0.0.0/33".parse::<Cidr>().is_err());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

/// A CIDR that does not parse; the message names the bad text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CidrError(String);

impl fmt::Display for CidrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CidrError {}

impl Cidr {
    /// The range of `prefix` leading bits of `addr`; the other bits are cleared. `None` if
    /// the prefix is longer than the address. An IPv4-mapped `addr` with a prefix of 96
    /// or more is the IPv4 range it maps.
    pub fn new(addr: IpAddr, prefix: u8) -> Option<Cidr> {
        let bits = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > bits {
            return None;
        }
        let (addr, prefix) = match addr {
            IpAddr::V6(v6) if prefix >= 96 => match v6.to_ipv4_mapped() {
                Some(v4) => (IpAddr::V4(v4), prefix - 96),
                None => (addr, prefix),
            },
            _ => (addr, prefix),
        };
        Some(Cidr {
            network: mask(addr, prefix),
            prefix,
        })
    }

    /// Whether `ip` lies in the range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.network.is_ipv4() && mask(ip, self.prefix) == self.network
    }
}

fn mask(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let m = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4((u32::from(a) & m).into())
        }
        IpAddr::V6(a) => {
            let m = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6((u128::from(a) & m).into())
        }
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Cidr, CidrError> {
        let bad = |why: &str| CidrError(format!("invalid CIDR `{s}`: {why}"));
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .map_err(|_| bad("not an IP address"))?;
        let bits = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => bits,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|&p| p <= bits)
                .ok_or_else(|| bad(&format!("the prefix must be 0 to {bits}")))?,
        };
        Cidr::new(addr, prefix).ok_or_else(|| bad("bad prefix"))
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// Which clients a forwarder serves: none in `deny`, and, when `allow` is not empty,
/// only those in it. Connections from others are reset at once and UDP datagrams from
/// them dropped, both counted (`denied`); established connections are never touched.
///
/// # Examples
///
/// ```
/// use proxy_core::Access;
///
/// let access = Access::new(["10.0.0.0/8".parse()?], ["10.9.0.0/16".parse()?]);
/// assert!(access.permits("10.1.2.3".parse()?));
/// assert!(!access.permits("10.9.2.3".parse()?));
/// assert!(!access.permits("192.0.2.1".parse()?));
/// assert!(Access::default().permits("192.0.2.1".parse()?));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Access {
    /// When not empty, the only clients served.
    pub allow: Vec<Cidr>,
    /// Clients never served, whatever `allow` says.
    pub deny: Vec<Cidr>,
}

impl Access {
    /// Serves clients in `allow` (everyone, when empty) that are not in `deny`.
    pub fn new(
        allow: impl IntoIterator<Item = Cidr>,
        deny: impl IntoIterator<Item = Cidr>,
    ) -> Self {
        Access {
            allow: allow.into_iter().collect(),
            deny: deny.into_iter().collect(),
        }
    }

    /// Whether a client at `ip` is served.
    pub fn permits(&self, ip: IpAddr) -> bool {
        !self.deny.iter().any(|c| c.contains(ip))
            && (self.allow.is_empty() || self.allow.iter().any(|c| c.contains(ip)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ranges_match_their_addresses() {
        let c: Cidr = "192.168.1.77/24".parse().unwrap();
        assert_eq!(c.to_string(), "192.168.1.0/24");
        assert!(c.contains(ip("192.168.1.1")) && c.contains(ip("192.168.1.255")));
        assert!(!c.contains(ip("192.168.2.1")) && !c.contains(ip("::1")));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("8.8.8.8")) && !all.contains(ip("2001:db8::1")));
        let v6: Cidr = "[fd00::]/8".parse().unwrap();
        assert!(v6.contains(ip("fd12::1")) && !v6.contains(ip("fe80::1")));
        let one: Cidr = "127.0.0.1".parse().unwrap();
        assert!(one.contains(ip("127.0.0.1")) && !one.contains(ip("127.0.0.2")));
        assert!(one.contains(ip("::ffff:127.0.0.1")), "mapped IPv4 matches");
    }

    #[test]
    fn mapped_ranges_are_their_ipv4_ranges() {
        for (text, v4) in [
            ("::ffff:127.0.0.1", "127.0.0.1/32"),
            ("[::ffff:127.0.0.1]", "127.0.0.1/32"),
            ("::ffff:127.0.0.1/128", "127.0.0.1/32"),
            ("::ffff:0:0/96", "0.0.0.0/0"),
            ("::ffff:10.9.8.7/104", "10.0.0.0/8"),
            ("::ffff:192.168.1.0/120", "192.168.1.0/24"),
        ] {
            let c: Cidr = text.parse().unwrap();
            assert_eq!(c, v4.parse().unwrap(), "{text}");
            assert_eq!(c.to_string(), v4, "{text}");
        }
        let one: Cidr = "::ffff:127.0.0.1".parse().unwrap();
        assert!(one.contains(ip("127.0.0.1")) && one.contains(ip("::ffff:127.0.0.1")));
        assert!(!one.contains(ip("127.0.0.2")) && !one.contains(ip("::1")));
        let all_v4: Cidr = "::ffff:0:0/96".parse().unwrap();
        assert!(all_v4.contains(ip("8.8.8.8")) && all_v4.contains(ip("::ffff:1.2.3.4")));
        assert!(!all_v4.contains(ip("2001:db8::1")));
        // Shorter than /96 it is an IPv6 range, which IPv4 clients are not in.
        let v6: Cidr = "::ffff:0:0/95".parse().unwrap();
        assert_eq!(v6.to_string(), "::fffe:0:0/95");
        assert!(!v6.contains(ip("127.0.0.1")));
        let every_v6: Cidr = "::/0".parse().unwrap();
        assert!(every_v6.contains(ip("2001:db8::1")) && !every_v6.contains(ip("127.0.0.1")));
        // Not mapped: IPv4-compatible and NAT64 addresses stay IPv6.
        assert_eq!(
            "::127.0.0.1".parse::<Cidr>().unwrap().to_string(),
            "::7f00:1/128"
        );
        assert_eq!(
            "64:ff9b::7f00:1".parse::<Cidr>().unwrap().to_string(),
            "64:ff9b::7f00:1/128"
        );
    }

    #[test]
    fn bad_text_is_named() {
        for bad in [
            "",
            "10.0.0.0/",
            "10.0.0.0/33",
            "::/129",
            "10.0.0/8",
            "x/8",
            "10.0.0.0/-1",
        ] {
            let e = bad.parse::<Cidr>().unwrap_err();
            assert!(e.to_string().contains(&format!("`{bad}`")), "{e}");
        }
    }
}
