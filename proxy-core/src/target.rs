//! Upstream targets: a host name or an IP literal, plus a port.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

/// Where a forwarder sends its traffic: `host:port`, `1.2.3.4:port` or `[::1]:port`.
///
/// Host names are resolved through the forwarder's resolver; IP literals skip it.
///
/// # Examples
///
/// ```
/// use proxy_core::{Host, Target};
///
/// let t: Target = "kube-dns.default:53".parse()?;
/// assert_eq!(t.port(), 53);
/// assert_eq!(t.host(), &Host::Name("kube-dns.default".into()));
///
/// // The seed's `proxy tcp 53 kube-dns.default`: the port defaults to the listen port.
/// let t = Target::parse_with_default_port("kube-dns.default", 53)?;
/// assert_eq!(t.to_string(), "kube-dns.default:53");
///
/// let t: Target = "[::1]:8080".parse()?;
/// assert!(t.host().ip().is_some());
/// # Ok::<(), proxy_core::TargetError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Target {
    host: Host,
    port: u16,
}

/// The host part of a [`Target`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Host {
    /// A DNS name, resolved by the forwarder's resolver.
    Name(String),
    /// An IP address, used as it is.
    Ip(IpAddr),
    /// An SRV record name (`srv:_http._tcp.web.default`): its records give the hosts,
    /// ports, priorities and weights; the target's own port is unused (0).
    Srv(String),
}

/// A target string could not be parsed; the message names the bad part.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetError {
    input: String,
    reason: String,
}

// ===== impl Target =====

impl Target {
    /// A target from a host and a port.
    pub fn new(host: Host, port: u16) -> Self {
        Target { host, port }
    }

    /// Parses `host:port`, or a bare `host` whose port is `default_port`.
    ///
    /// # Errors
    ///
    /// A [`TargetError`] naming the bad token: an empty host, a bad port, an invalid name.
    pub fn parse_with_default_port(s: &str, default_port: u16) -> Result<Self, TargetError> {
        Self::parse_inner(s, Some(default_port))
    }

    fn parse_inner(s: &str, default_port: Option<u16>) -> Result<Self, TargetError> {
        let err = |reason: String| TargetError {
            input: s.to_owned(),
            reason,
        };
        if s.is_empty() {
            return Err(err("empty target".into()));
        }
        // `srv:NAME` is an SRV target, but `srv:PORT` is the host `srv` and a port, which
        // is also how such a target prints: no SRV name is digits only.
        if let Some(name) = s.strip_prefix("srv:")
            && (name.is_empty() || !name.bytes().all(|b| b.is_ascii_digit()))
        {
            if name.contains(':') {
                return Err(err(
                    "an SRV target takes no port: its records give the ports".into(),
                ));
            }
            validate_name(name).map_err(err)?;
            return Ok(Target::new(Host::Srv(name.to_owned()), 0));
        }
        if let Ok(addr) = s.parse::<SocketAddr>() {
            return Ok(Target::new(Host::Ip(addr.ip()), addr.port()));
        }
        // A bare IPv6 literal (`::1`) or a bracketed one without a port (`[::1]`).
        let unbracketed = s
            .strip_prefix('[')
            .and_then(|r| r.strip_suffix(']'))
            .unwrap_or(s);
        if let Ok(ip) = unbracketed.parse::<IpAddr>() {
            return match default_port {
                Some(port) => Ok(Target::new(Host::Ip(ip), port)),
                None => Err(err(format!("missing port; write `[{unbracketed}]:PORT`"))),
            };
        }
        if let Some(bracketed) = s.strip_prefix('[') {
            let Some((host, rest)) = bracketed.split_once(']') else {
                return Err(err("missing `]` after IPv6 address".into()));
            };
            let ip = host
                .parse::<IpAddr>()
                .map_err(|_| err(format!("`{host}` is not an IPv6 address")))?;
            let port = rest
                .strip_prefix(':')
                .ok_or_else(|| err(format!("expected `:PORT` after `[{host}]`, found `{rest}`")))?;
            return Ok(Target::new(Host::Ip(ip), parse_port(port).map_err(err)?));
        }
        let (host, port) = match s.rsplit_once(':') {
            Some((host, port)) => (host, parse_port(port).map_err(err)?),
            None => match default_port {
                Some(port) => (s, port),
                None => return Err(err(format!("missing port after `{s}`"))),
            },
        };
        if host.contains(':') {
            return Err(err(format!(
                "`{host}` is not a host name; write IPv6 addresses as `[{host}]:PORT`"
            )));
        }
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(Target::new(Host::Ip(ip), port));
        }
        validate_name(host).map_err(err)?;
        Ok(Target::new(Host::Name(host.to_owned()), port))
    }

    /// The host.
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl FromStr for Target {
    type Err = TargetError;

    /// Parses `host:port`, `a.b.c.d:port` or `[v6]:port`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse_inner(s, None)
    }
}

impl From<SocketAddr> for Target {
    fn from(addr: SocketAddr) -> Self {
        Target::new(Host::Ip(addr.ip()), addr.port())
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]:{}", self.port),
            Host::Ip(ip) => write!(f, "{ip}:{}", self.port),
            Host::Name(name) => write!(f, "{name}:{}", self.port),
            Host::Srv(name) => write!(f, "srv:{name}"),
        }
    }
}

// ===== impl Host =====

impl Host {
    /// The IP address, when the host is an IP literal.
    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            Host::Ip(ip) => Some(*ip),
            Host::Name(_) | Host::Srv(_) => None,
        }
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Ip(ip) => ip.fmt(f),
            Host::Name(name) => f.write_str(name),
            Host::Srv(name) => write!(f, "srv:{name}"),
        }
    }
}

// ===== impl TargetError =====

impl fmt::Display for TargetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid target `{}`: {}", self.input, self.reason)
    }
}

impl std::error::Error for TargetError {}

fn parse_port(s: &str) -> Result<u16, String> {
    match s.parse::<u16>() {
        Ok(0) => Err("port 0 is not a valid upstream port".into()),
        Ok(port) if !s.starts_with('+') => Ok(port),
        _ => Err(format!("`{s}` is not a port (1-65535)")),
    }
}

/// Checks a DNS name: labels of 1 to 63 letters, digits, `-` or `_`, at most 253 bytes,
/// an optional final dot.
fn validate_name(name: &str) -> Result<(), String> {
    let bare = name.strip_suffix('.').unwrap_or(name);
    if bare.is_empty() {
        return Err("empty host name".into());
    }
    if bare.len() > 253 {
        return Err(format!(
            "host name is {} bytes long; the limit is 253",
            bare.len()
        ));
    }
    for label in bare.split('.') {
        if label.is_empty() {
            return Err(format!("empty label in host name `{name}`"));
        }
        if label.len() > 63 {
            return Err(format!("label `{label}` is longer than 63 bytes"));
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        {
            return Err(format!("invalid character `{c}` in host name `{name}`"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!("label `{label}` starts or ends with `-`"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn srv_targets() {
        let t: Target = "srv:_dns._udp.kube-dns.kube-system.svc.cluster.local"
            .parse()
            .unwrap();
        assert_eq!(
            t.host(),
            &Host::Srv("_dns._udp.kube-dns.kube-system.svc.cluster.local".into())
        );
        assert_eq!(
            t.to_string(),
            "srv:_dns._udp.kube-dns.kube-system.svc.cluster.local"
        );
        assert_eq!(t.host().ip(), None);
        // The listen-port default does not apply: the records give the ports.
        let t = Target::parse_with_default_port("srv:_http._tcp.web", 53).unwrap();
        assert_eq!(t.to_string(), "srv:_http._tcp.web");
        for bad in ["srv:", "srv:_http._tcp.web:80", "srv:bad name"] {
            let e = bad.parse::<Target>().unwrap_err();
            assert!(e.to_string().contains(bad), "{e}");
        }
    }

    /// Found by the `target` fuzz target: the host `srv` with port 53 printed as `srv:53`,
    /// which parsed back as the SRV name `53`.
    #[test]
    fn a_host_named_srv_takes_a_port() {
        let t = Target::parse_with_default_port("srv", 53).unwrap();
        assert_eq!(t.to_string(), "srv:53");
        let again: Target = "srv:53".parse().unwrap();
        assert_eq!(
            (again.host(), again.port()),
            (&Host::Name("srv".into()), 53)
        );
        assert_eq!(again, t);
        assert!(
            "srv:0"
                .parse::<Target>()
                .unwrap_err()
                .to_string()
                .contains("port 0")
        );
        let srv: Target = "srv:_53._udp.dns".parse().unwrap();
        assert_eq!(srv.host(), &Host::Srv("_53._udp.dns".into()));
    }

    #[test]
    fn parses_names_and_literals() {
        let t: Target = "web.default:80".parse().unwrap();
        assert_eq!(t.host(), &Host::Name("web.default".into()));
        assert_eq!(t.port(), 80);
        let t: Target = "10.0.0.1:53".parse().unwrap();
        assert_eq!(t.host().ip(), Some("10.0.0.1".parse().unwrap()));
        let t: Target = "[fd00::1]:53".parse().unwrap();
        assert_eq!(t.to_string(), "[fd00::1]:53");
        let t = Target::parse_with_default_port("::1", 5000).unwrap();
        assert_eq!(t.to_string(), "[::1]:5000");
        let t = Target::parse_with_default_port("[::1]", 5000).unwrap();
        assert_eq!(t.port(), 5000);
        let t = Target::parse_with_default_port("kube-dns.default.", 53).unwrap();
        assert_eq!(t.host(), &Host::Name("kube-dns.default.".into()));
        let t = Target::parse_with_default_port("db:5432", 53).unwrap();
        assert_eq!(t.port(), 5432);
    }

    #[test]
    fn errors_name_the_bad_token() {
        let cases = [
            ("web", "missing port after `web`"),
            ("web:http", "`http` is not a port"),
            ("web:0", "port 0"),
            ("web:70000", "`70000` is not a port"),
            ("web:+80", "`+80` is not a port"),
            ("we b:80", "invalid character ` `"),
            ("a..b:80", "empty label"),
            ("-a:80", "label `-a`"),
            ("fe80::1:80", "write `[fe80::1:80]:PORT`"),
            ("web:80:90", "write IPv6 addresses as"),
            ("[::1", "missing `]`"),
            ("[nope]:80", "`nope` is not an IPv6 address"),
            ("[::1]80", "expected `:PORT`"),
            ("", "empty target"),
            (":80", "empty host name"),
        ];
        for (input, want) in cases {
            let e = input.parse::<Target>().unwrap_err().to_string();
            assert!(e.contains(want), "{input:?}: {e:?} lacks {want:?}");
        }
        let long = format!("{}:1", "a".repeat(64));
        assert!(
            long.parse::<Target>()
                .unwrap_err()
                .to_string()
                .contains("63")
        );
    }
}
