//! The value types of [`KEYS`](super::KEYS): each one's text parser (`Err` is the message
//! after the key's name) and printer, and the name tables of the settings that take one
//! of a few words. They know nothing of keys; [`table`](super::table) pairs them with
//! the fields.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::{Listen, Transport};
use crate::balance::Balance;
use crate::cidr::Cidr;
use crate::proxy_protocol::ProxyProtocol;
use crate::resolve::ResolverKind;
use crate::tcp::RelayMode;
use crate::value::{self, show_duration};

pub(super) fn duration(text: &str) -> Result<Duration, String> {
    value::duration(text).map_err(|e| e.to_string())
}

/// A timer that 0 turns off.
pub(super) fn timer(text: &str) -> Result<Option<Duration>, String> {
    Ok(Some(duration(text)?).filter(|d| !d.is_zero()))
}

/// A duration that must be above 0.
pub(super) fn positive(text: &str) -> Result<Duration, String> {
    match duration(text)? {
        d if d.is_zero() => Err(format!("`{text}` is zero; it must be longer than 0")),
        d => Ok(d),
    }
}

/// A setting that is off when empty, and otherwise a duration above 0.
pub(super) fn optional(text: &str) -> Result<Option<Duration>, String> {
    if text.is_empty() {
        return Ok(None);
    }
    positive(text).map(Some)
}

pub(super) fn show_timer(d: Option<Duration>) -> String {
    d.map_or_else(|| "0".to_owned(), show_duration)
}

pub(super) fn show_optional(d: Option<Duration>) -> String {
    d.map(show_duration).unwrap_or_default()
}

pub(super) fn count<T: std::str::FromStr>(text: &str) -> Result<T, String> {
    text.parse()
        .map_err(|_| format!("`{text}` is not a whole number of 0 or more"))
}

/// A count of 1 or more.
pub(super) fn at_least_one<T: std::str::FromStr + PartialEq + From<u8>>(
    text: &str,
) -> Result<T, String> {
    match count(text)? {
        n if n == T::from(0) => Err(format!("`{text}` is zero; it must be at least 1")),
        n => Ok(n),
    }
}

/// A count that is off when empty.
pub(super) fn optional_count<T: std::str::FromStr>(text: &str) -> Result<Option<T>, String> {
    if text.is_empty() {
        return Ok(None);
    }
    count(text).map(Some)
}

pub(super) fn show_optional_count<T: ToString>(n: Option<T>) -> String {
    n.map(|n| n.to_string()).unwrap_or_default()
}

pub(super) fn size(text: &str) -> Result<usize, String> {
    value::size(text).map_err(|e| e.to_string())
}

/// A size, or empty for none.
pub(super) fn optional_size(text: &str) -> Result<Option<usize>, String> {
    match text {
        "" => Ok(None),
        text => size(text).map(Some),
    }
}

/// A cookie name (an RFC 6265 token), or empty for none.
pub(super) fn cookie_name(text: &str) -> Result<Option<String>, String> {
    if text.is_empty() {
        return Ok(None);
    }
    let token = |b: u8| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b);
    match text.bytes().all(token) {
        true => Ok(Some(text.to_owned())),
        false => Err(format!(
            "`{text}` is not a cookie name: letters, digits and !#$%&'*+-.^_`|~ only"
        )),
    }
}

/// A file or directory path, or empty for none. Whether it exists is checked when the
/// forward is built, where the error can say what the file should hold.
pub(super) fn path(text: &str) -> Result<Option<PathBuf>, String> {
    if text.chars().any(char::is_control) {
        return Err(format!(
            "`{text}` is not a path: it holds a control character"
        ));
    }
    Ok((!text.is_empty()).then(|| PathBuf::from(text)))
}

pub(super) fn show_path(path: &Option<PathBuf>) -> String {
    path.as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

/// A name to verify a certificate against: a DNS name or an IP address; empty for none.
pub(super) fn server_name(text: &str) -> Result<Option<String>, String> {
    if text.is_empty() {
        return Ok(None);
    }
    if text.parse::<std::net::IpAddr>().is_ok() {
        return Ok(Some(text.to_owned()));
    }
    domain(text)
        .map(|name| Some(name.to_ascii_lowercase()))
        .map_err(|_| format!("`{text}` is not a DNS name or an IP address"))
}

pub(super) fn boolean(text: &str) -> Result<bool, String> {
    match text {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!("`{text}` is not true or false")),
    }
}

/// A comma-separated list (empty for none) of `parse`d items.
pub(super) fn list<T>(
    text: &str,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Vec<T>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(parse)
        .collect()
}

pub(super) fn show_list<T: fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

pub(super) fn cidrs(text: &str) -> Result<Vec<Cidr>, String> {
    list(text, |c| {
        c.parse().map_err(|e: crate::CidrError| e.to_string())
    })
}

/// One of `choices` (name, value), by name.
pub(super) fn choice<T: Copy>(text: &str, choices: &[(&str, T)]) -> Result<T, String> {
    choices
        .iter()
        .find(|(name, _)| *name == text)
        .map(|(_, v)| *v)
        .ok_or_else(|| {
            // An empty name (off) is not one to write.
            let names: Vec<&str> = choices
                .iter()
                .map(|(n, _)| *n)
                .filter(|n| !n.is_empty())
                .collect();
            format!("`{text}` is not one of {}", names.join(", "))
        })
}

/// `text`'s name among `choices`.
pub(super) fn choice_name<T: PartialEq>(v: &T, choices: &[(&'static str, T)]) -> String {
    choices
        .iter()
        .find(|(_, c)| c == v)
        .map(|(n, _)| (*n).to_owned())
        .unwrap_or_default()
}

pub(super) const PROTOCOLS: &[(&str, Transport)] = &[
    ("tcp", Transport::Tcp),
    ("udp", Transport::Udp),
    ("tcp,udp", Transport::Both),
    ("udp,tcp", Transport::Both),
    ("http", Transport::Http),
];

pub(super) const RESOLVERS: &[(&str, ResolverKind)] = &[
    ("system", ResolverKind::System),
    ("hickory", ResolverKind::Hickory),
];

/// `balance` names; the affinity timeout is `affinity_timeout`'s.
pub(super) const BALANCES: &[(&str, Balance)] = &[
    ("round-robin", Balance::RoundRobin),
    ("least-connections", Balance::LeastConnections),
    ("two-choices", Balance::PowerOfTwoChoices),
    (
        "client-ip",
        Balance::ClientIp {
            timeout: Balance::DEFAULT_AFFINITY_TIMEOUT,
        },
    ),
    ("rr", Balance::RoundRobin),
    ("least-conn", Balance::LeastConnections),
    ("p2c", Balance::PowerOfTwoChoices),
];

pub(super) const PROXY_PROTOCOLS: &[(&str, Option<ProxyProtocol>)] = &[
    ("v1", Some(ProxyProtocol::V1)),
    ("v2", Some(ProxyProtocol::V2)),
    ("", None),
];

pub(super) const RELAYS: &[(&str, RelayMode)] = &[
    ("auto", RelayMode::Auto),
    ("copy", RelayMode::Copy),
    ("sockmap", RelayMode::Sockmap),
];

pub(super) fn listen(text: &str) -> Result<Listen, String> {
    if let Ok(port) = text.parse::<u16>() {
        return Ok(Listen::Any(port));
    }
    list(text, |a| {
        a.parse::<SocketAddr>().map_err(|_| {
            format!(
                "`{a}` is not a listen address: use a port (0-65535), or IP:PORT \
                 (127.0.0.1:53, [::1]:53), several separated by commas"
            )
        })
    })
    .map(Listen::Addrs)
}

pub(super) fn name_server(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    let bare = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(text);
    bare.parse::<std::net::IpAddr>()
        .map(|ip| SocketAddr::new(ip, 53))
        .map_err(|_| format!("`{text}` is not a name server: use IP or IP:PORT"))
}

/// A comma-separated list of regular expressions, checked lightly: no control characters,
/// brackets and parentheses balanced, no lone `\` at the end. The HTTP layer compiles
/// them when the forwarder is built and names a pattern that does not compile.
pub(super) fn patterns(text: &str) -> Result<String, String> {
    for pattern in text.split(',') {
        if let Some(c) = pattern.chars().find(|c| c.is_control()) {
            return Err(format!("`{pattern}` holds the control character {c:?}"));
        }
        let (mut depth, mut class, mut escaped) = (0_i32, false, false);
        for c in pattern.chars() {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '[' if !class => class = true,
                ']' if class => class = false,
                '(' if !class => depth += 1,
                ')' if !class => depth -= 1,
                _ => {}
            }
            if depth < 0 {
                return Err(format!("`{pattern}` closes a group it did not open"));
            }
        }
        if escaped || class || depth != 0 {
            return Err(format!(
                "`{pattern}` is not a regular expression: an unclosed group, class or escape"
            ));
        }
    }
    Ok(text.to_owned())
}

/// A DNS domain: dot-separated labels of letters, digits and `-` (not first or last), at
/// most 63 bytes each and 253 in all; a trailing dot is dropped.
pub(super) fn domain(text: &str) -> Result<String, String> {
    let name = text.strip_suffix('.').unwrap_or(text);
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
        return Err(format!(
            "`{text}` is not a DNS domain (labels of letters, digits and -, such as cluster.local)"
        ));
    }
    Ok(name.to_ascii_lowercase())
}
