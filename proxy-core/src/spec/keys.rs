//! [`KEYS`]: the one table of settings. Each key is a [`ForwardSpec`] field with one name
//! (the TOML key, the `--flag` with `-` for `_`, the C key), one text parser and one
//! printer, so every front end reads a value the same way.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use super::{ForwardSpec, Listen, Transport};
use crate::balance::Balance;
use crate::cidr::Cidr;
use crate::proxy_protocol::ProxyProtocol;
use crate::resolve::ResolverKind;
use crate::tcp::RelayMode;
use crate::value::{self, show_duration, show_size};

/// Which transports a key is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applies {
    /// TCP and UDP.
    Both,
    /// TCP only; UDP ignores it.
    Tcp,
    /// UDP only; TCP ignores it.
    Udp,
}

impl Applies {
    /// Whether a forward of `protocol` uses the key.
    pub fn to(self, protocol: Transport) -> bool {
        match self {
            Applies::Both => true,
            Applies::Tcp => protocol.tcp(),
            Applies::Udp => protocol.udp(),
        }
    }
}

/// One setting of [`KEYS`].
pub struct Key {
    /// The key: `idle_timeout` in TOML and C, `--idle-timeout` on the command line.
    pub name: &'static str,
    /// What the value looks like (`DURATION`, `N`, `CIDR,...`), for help texts.
    pub value: &'static str,
    /// Which transports use it.
    pub applies: Applies,
    /// What it does, one or a few sentences.
    pub help: &'static str,
    /// A valid value other than the default, for examples and tests.
    pub example: &'static str,
    set: fn(&mut ForwardSpec, &str) -> Result<(), String>,
    get: fn(&ForwardSpec) -> String,
}

impl Key {
    /// The flag on the command line: `--idle-timeout`.
    pub fn flag(&self) -> String {
        format!("--{}", self.name.replace('_', "-"))
    }

    /// Parses `text` into `spec`'s field.
    ///
    /// # Errors
    ///
    /// A [`SetError`] naming the key and the value; `spec` is unchanged then.
    pub fn set(&self, spec: &mut ForwardSpec, text: &str) -> Result<(), SetError> {
        let mut changed = spec.clone();
        (self.set)(&mut changed, text.trim()).map_err(|message| SetError {
            key: self.name.to_owned(),
            message,
        })?;
        *spec = changed;
        Ok(())
    }

    /// The value `spec` has, as [`set`](Key::set) reads it (empty when unset).
    pub fn get(&self, spec: &ForwardSpec) -> String {
        (self.get)(spec)
    }

    /// The default value, as [`set`](Key::set) reads it (empty when unset).
    pub fn default_value(&self) -> String {
        self.get(&ForwardSpec::default())
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// A key that does not exist, or a value its key does not take.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetError {
    key: String,
    message: String,
}

impl SetError {
    /// The key, as given.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// What is wrong with the value, without the key.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for SetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

impl std::error::Error for SetError {}

impl ForwardSpec {
    /// Sets the setting `key` (a name of [`KEYS`]) from its text form.
    ///
    /// Keys are independent of each other, but for two that set what another also sets:
    /// `idle_timeout` sets the TCP idle timeout and `udp_idle_timeout`, and
    /// `connect_timeout` raises `connect_total_timeout` to at least itself. Front ends
    /// that read many keys at once apply them in the order of [`KEYS`].
    ///
    /// # Errors
    ///
    /// A [`SetError`] naming the key, and the value it does not take; the spec is
    /// unchanged then.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), SetError> {
        match find(key) {
            Some(k) => k.set(self, value),
            None => Err(SetError {
                key: key.to_owned(),
                message: unknown_key(key),
            }),
        }
    }
}

/// The key named `name`.
pub fn find(name: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.name == name)
}

/// "is not a setting", with the closest key's name when one is close.
fn unknown_key(name: &str) -> String {
    let close = KEYS
        .iter()
        .map(|k| (distance(name, k.name), k.name))
        .min()
        .filter(|(d, _)| *d <= 3);
    match close {
        Some((_, k)) => format!("is not a setting; did you mean `{k}`?"),
        None => "is not a setting".to_owned(),
    }
}

/// Levenshtein distance of two keys.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

// ===== the value types =====

fn duration(text: &str) -> Result<Duration, String> {
    value::duration(text).map_err(|e| e.to_string())
}

/// A timer that 0 turns off.
fn timer(text: &str) -> Result<Option<Duration>, String> {
    Ok(Some(duration(text)?).filter(|d| !d.is_zero()))
}

/// A duration that must be above 0.
fn positive(text: &str) -> Result<Duration, String> {
    match duration(text)? {
        d if d.is_zero() => Err(format!("`{text}` is zero; it must be longer than 0")),
        d => Ok(d),
    }
}

/// A setting that is off when empty, and otherwise a duration above 0.
fn optional(text: &str) -> Result<Option<Duration>, String> {
    if text.is_empty() {
        return Ok(None);
    }
    positive(text).map(Some)
}

fn show_timer(d: Option<Duration>) -> String {
    d.map_or_else(|| "0".to_owned(), show_duration)
}

fn show_optional(d: Option<Duration>) -> String {
    d.map(show_duration).unwrap_or_default()
}

fn count<T: std::str::FromStr>(text: &str) -> Result<T, String> {
    text.parse()
        .map_err(|_| format!("`{text}` is not a whole number of 0 or more"))
}

/// A count of 1 or more.
fn at_least_one<T: std::str::FromStr + PartialEq + From<u8>>(text: &str) -> Result<T, String> {
    match count(text)? {
        n if n == T::from(0) => Err(format!("`{text}` is zero; it must be at least 1")),
        n => Ok(n),
    }
}

/// A count that is off when empty.
fn optional_count<T: std::str::FromStr>(text: &str) -> Result<Option<T>, String> {
    if text.is_empty() {
        return Ok(None);
    }
    count(text).map(Some)
}

fn show_optional_count<T: ToString>(n: Option<T>) -> String {
    n.map(|n| n.to_string()).unwrap_or_default()
}

fn size(text: &str) -> Result<usize, String> {
    value::size(text).map_err(|e| e.to_string())
}

fn boolean(text: &str) -> Result<bool, String> {
    match text {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!("`{text}` is not true or false")),
    }
}

/// A comma-separated list (empty for none) of `parse`d items.
fn list<T>(text: &str, parse: impl Fn(&str) -> Result<T, String>) -> Result<Vec<T>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(parse)
        .collect()
}

fn show_list<T: fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

fn cidrs(text: &str) -> Result<Vec<Cidr>, String> {
    list(text, |c| {
        c.parse().map_err(|e: crate::CidrError| e.to_string())
    })
}

/// One of `choices` (name, value), by name.
fn choice<T: Copy>(text: &str, choices: &[(&str, T)]) -> Result<T, String> {
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
fn choice_name<T: PartialEq>(v: &T, choices: &[(&'static str, T)]) -> String {
    choices
        .iter()
        .find(|(_, c)| c == v)
        .map(|(n, _)| (*n).to_owned())
        .unwrap_or_default()
}

const PROTOCOLS: &[(&str, Transport)] = &[
    ("tcp", Transport::Tcp),
    ("udp", Transport::Udp),
    ("tcp,udp", Transport::Both),
    ("udp,tcp", Transport::Both),
];

const RESOLVERS: &[(&str, ResolverKind)] = &[
    ("system", ResolverKind::System),
    ("hickory", ResolverKind::Hickory),
];

/// `balance` names; the affinity timeout is `affinity_timeout`'s.
const BALANCES: &[(&str, Balance)] = &[
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

const PROXY_PROTOCOLS: &[(&str, Option<ProxyProtocol>)] = &[
    ("v1", Some(ProxyProtocol::V1)),
    ("v2", Some(ProxyProtocol::V2)),
    ("", None),
];

const RELAYS: &[(&str, RelayMode)] = &[("auto", RelayMode::Auto), ("copy", RelayMode::Copy)];

fn listen(text: &str) -> Result<Listen, String> {
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

fn name_server(text: &str) -> Result<SocketAddr, String> {
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

/// Every setting of a forward, in the order front ends apply them.
pub static KEYS: &[Key] = &[
    Key {
        name: "protocol",
        value: "tcp|udp|tcp,udp",
        applies: Applies::Both,
        help: "The transports served: TCP connections, UDP datagrams, or both on the same \
               addresses and port.",
        example: "tcp,udp",
        set: |s, v| choice(v, PROTOCOLS).map(|x| s.protocol = x),
        get: |s| s.protocol.as_str().to_owned(),
    },
    Key {
        name: "listen",
        value: "PORT|IP:PORT,...",
        applies: Applies::Both,
        help: "Where to listen: a port on every address (one dual-stack [::] socket, or \
               0.0.0.0 without IPv6), or IP:PORT addresses. Port 0 takes a free port.",
        example: "127.0.0.1:8080",
        set: |s, v| listen(v).map(|x| s.listen = x),
        get: |s| s.listen.to_string(),
    },
    Key {
        name: "target",
        value: "HOST:PORT|srv:NAME",
        applies: Applies::Both,
        help: "Where to forward to: a host name, an IPv4 or [IPv6] address with a port, or \
               srv:NAME, whose SRV records give hosts, ports and weights.",
        example: "web.default:80",
        set: |s, v| {
            s.target = match v {
                "" => None,
                v => Some(v.parse().map_err(|e: crate::TargetError| e.to_string())?),
            };
            Ok(())
        },
        get: |s| {
            s.target
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default()
        },
    },
    Key {
        name: "resolver",
        value: "system|hickory",
        applies: Applies::Both,
        help: "How a host-name target is resolved: system uses the C library (/etc/hosts, \
               resolv.conf search and ndots), hickory asks the name servers itself and \
               follows record TTLs. srv: targets always use hickory.",
        example: "hickory",
        set: |s, v| choice(v, RESOLVERS).map(|x| s.resolver = x),
        get: |s| choice_name(&s.resolver, RESOLVERS),
    },
    Key {
        name: "name_servers",
        value: "IP[:PORT],...",
        applies: Applies::Both,
        help: "The DNS servers to ask (port 53 unless given), with hickory; empty: those \
               of /etc/resolv.conf.",
        example: "10.96.0.10:53,[fd00::10]:53",
        set: |s, v| list(v, name_server).map(|x| s.name_servers = x),
        get: |s| show_list(&s.name_servers),
    },
    Key {
        name: "dns_refresh",
        value: "DURATION",
        applies: Applies::Both,
        help: "Look the target up again at this interval, whatever the TTL says; empty: \
               follow the TTL (the system resolver gives none: dns_fallback_ttl).",
        example: "10s",
        set: |s, v| optional(v).map(|x| s.dns_refresh = x),
        get: |s| show_optional(s.dns_refresh),
    },
    Key {
        name: "dns_fallback_ttl",
        value: "DURATION",
        applies: Applies::Both,
        help: "How long an answer without a TTL is used.",
        example: "1m",
        set: |s, v| duration(v).map(|x| s.dns_fallback_ttl = x),
        get: |s| show_duration(s.dns_fallback_ttl),
    },
    Key {
        name: "dns_min_ttl",
        value: "DURATION",
        applies: Applies::Both,
        help: "The shortest time an answer is used (a TTL of 0 is raised to it), and the \
               first retry delay after a failed lookup.",
        example: "5s",
        set: |s, v| duration(v).map(|x| s.dns_min_ttl = x),
        get: |s| show_duration(s.dns_min_ttl),
    },
    Key {
        name: "dns_max_ttl",
        value: "DURATION",
        applies: Applies::Both,
        help: "The longest time an answer is used before it is looked up again.",
        example: "1m",
        set: |s, v| duration(v).map(|x| s.dns_max_ttl = x),
        get: |s| show_duration(s.dns_max_ttl),
    },
    Key {
        name: "connect_timeout",
        value: "DURATION",
        applies: Applies::Tcp,
        help: "Give up one connect attempt to one upstream address after this long; also \
               raises connect_total_timeout to at least this.",
        example: "2s",
        set: |s, v| {
            s.connect_timeout = positive(v)?;
            s.connect_total_timeout = s.connect_total_timeout.max(s.connect_timeout);
            Ok(())
        },
        get: |s| show_duration(s.connect_timeout),
    },
    Key {
        name: "connect_total_timeout",
        value: "DURATION",
        applies: Applies::Tcp,
        help: "Give up connecting (all attempts, across the target's addresses) after this \
               long.",
        example: "30s",
        set: |s, v| positive(v).map(|x| s.connect_total_timeout = x),
        get: |s| show_duration(s.connect_total_timeout),
    },
    Key {
        name: "idle_timeout",
        value: "DURATION",
        applies: Applies::Both,
        help: "Close a TCP connection, or end a UDP session, after this long without \
               traffic in either direction; 0 turns it off. Sets udp_idle_timeout too \
               (default: none for TCP, 30s for UDP).",
        example: "10m",
        set: |s, v| {
            s.idle_timeout = timer(v)?;
            s.udp_idle_timeout = s.idle_timeout;
            Ok(())
        },
        get: |s| show_timer(s.idle_timeout),
    },
    Key {
        name: "udp_idle_timeout",
        value: "DURATION",
        applies: Applies::Udp,
        help: "End a UDP session after this long without a datagram in either direction; \
               0 keeps sessions until max_sessions evicts the least recently used.",
        example: "1s",
        set: |s, v| timer(v).map(|x| s.udp_idle_timeout = x),
        get: |s| show_timer(s.udp_idle_timeout),
    },
    Key {
        name: "half_close_timeout",
        value: "DURATION",
        applies: Applies::Tcp,
        help: "Once one direction has ended (a FIN was forwarded), close the connection \
               when the other has moved no byte for this long; 0 turns it off.",
        example: "5m",
        set: |s, v| timer(v).map(|x| s.half_close_timeout = x),
        get: |s| show_timer(s.half_close_timeout),
    },
    Key {
        name: "max_lifetime",
        value: "DURATION",
        applies: Applies::Tcp,
        help: "Close every connection at this age, busy or not; 0 turns it off.",
        example: "1h",
        set: |s, v| timer(v).map(|x| s.max_lifetime = x),
        get: |s| show_timer(s.max_lifetime),
    },
    Key {
        name: "reuse_port",
        value: "BOOL",
        applies: Applies::Both,
        help: "Set SO_REUSEPORT on the listeners, so several processes can share the port.",
        example: "true",
        set: |s, v| boolean(v).map(|x| s.reuse_port = x),
        get: |s| s.reuse_port.to_string(),
    },
    Key {
        name: "dual_stack",
        value: "BOOL",
        applies: Applies::Both,
        help: "Whether a [::] listener takes IPv4 too; false binds IPv6 only, so 0.0.0.0 \
               can be bound beside it.",
        example: "false",
        set: |s, v| boolean(v).map(|x| s.dual_stack = x),
        get: |s| s.dual_stack.to_string(),
    },
    Key {
        name: "backlog",
        value: "N",
        applies: Applies::Tcp,
        help: "The listen backlog (the kernel caps it at net.core.somaxconn).",
        example: "4096",
        set: |s, v| count(v).map(|x| s.backlog = x),
        get: |s| s.backlog.to_string(),
    },
    Key {
        name: "balance",
        value: "POLICY",
        applies: Applies::Both,
        help: "How each new connection (or UDP session) picks one of the target's \
               addresses: round-robin (as kube-proxy), least-connections, two-choices (the \
               less loaded of two random ones), client-ip (sessionAffinity: ClientIP).",
        example: "least-connections",
        set: |s, v| choice(v, BALANCES).map(|x| s.balance = x),
        get: |s| {
            let kind = match s.balance {
                Balance::ClientIp { .. } => Balance::client_ip(),
                b => b,
            };
            choice_name(&kind, BALANCES)
        },
    },
    Key {
        name: "affinity_timeout",
        value: "DURATION",
        applies: Applies::Both,
        help: "With balance = client-ip, how long a client keeps its address after its \
               last connection; empty: 3h, as kube-proxy.",
        example: "10m",
        set: |s, v| optional(v).map(|x| s.affinity_timeout = x),
        get: |s| show_optional(s.affinity_timeout),
    },
    Key {
        name: "eject_after",
        value: "N",
        applies: Applies::Both,
        help: "Skip an address after N failed connects in a row (UDP: ICMP \
               port-unreachable reports) for eject_for, then try it again; empty: off.",
        example: "3",
        set: |s, v| optional_count(v).map(|x| s.eject_after = x),
        get: |s| show_optional_count(s.eject_after),
    },
    Key {
        name: "eject_for",
        value: "DURATION",
        applies: Applies::Both,
        help: "How long eject_after skips an address.",
        example: "30s",
        set: |s, v| positive(v).map(|x| s.eject_for = x),
        get: |s| show_duration(s.eject_for),
    },
    Key {
        name: "health_check_interval",
        value: "DURATION",
        applies: Applies::Both,
        help: "Check every address of the target with a TCP connect at this interval (UDP \
               forwards check the same port over TCP); empty: off.",
        example: "5s",
        set: |s, v| optional(v).map(|x| s.health_check_interval = x),
        get: |s| show_optional(s.health_check_interval),
    },
    Key {
        name: "health_check_timeout",
        value: "DURATION",
        applies: Applies::Both,
        help: "How long one health check may take.",
        example: "500ms",
        set: |s, v| positive(v).map(|x| s.health_check_timeout = x),
        get: |s| show_duration(s.health_check_timeout),
    },
    Key {
        name: "health_check_rise",
        value: "N",
        applies: Applies::Both,
        help: "Passed checks in a row that bring a down address back.",
        example: "1",
        set: |s, v| at_least_one(v).map(|x| s.health_check_rise = x),
        get: |s| s.health_check_rise.to_string(),
    },
    Key {
        name: "health_check_fall",
        value: "N",
        applies: Applies::Both,
        help: "Failed checks in a row that mark an address down.",
        example: "2",
        set: |s, v| at_least_one(v).map(|x| s.health_check_fall = x),
        get: |s| s.health_check_fall.to_string(),
    },
    Key {
        name: "allow",
        value: "CIDR,...",
        applies: Applies::Both,
        help: "Serve only clients in these ranges (10.0.0.0/8, or one address); others \
               are reset (TCP) or their datagrams dropped (UDP), and counted. Empty: \
               every client.",
        example: "10.0.0.0/8,192.168.0.0/16",
        set: |s, v| cidrs(v).map(|x| s.allow = x),
        get: |s| show_list(&s.allow),
    },
    Key {
        name: "deny",
        value: "CIDR,...",
        applies: Applies::Both,
        help: "Never serve clients in these ranges, whatever allow says.",
        example: "10.1.0.0/16",
        set: |s, v| cidrs(v).map(|x| s.deny = x),
        get: |s| show_list(&s.deny),
    },
    Key {
        name: "max_connections",
        value: "N",
        applies: Applies::Both,
        help: "The most TCP connections (or UDP sessions) open at once, across the listen \
               addresses; past it new ones are refused and counted. Empty: no limit.",
        example: "1000",
        set: |s, v| optional_count(v).map(|x| s.max_connections = x),
        get: |s| show_optional_count(s.max_connections),
    },
    Key {
        name: "max_per_source",
        value: "N",
        applies: Applies::Both,
        help: "The most TCP connections (or UDP sessions) open at once from one client IP. \
               Empty: no limit.",
        example: "10",
        set: |s, v| optional_count(v).map(|x| s.max_per_source = x),
        get: |s| show_optional_count(s.max_per_source),
    },
    Key {
        name: "accept_rate",
        value: "N",
        applies: Applies::Both,
        help: "The most new TCP connections (or UDP sessions) admitted per second, on \
               average. Empty: no limit.",
        example: "100",
        set: |s, v| optional_count(v).map(|x| s.accept_rate = x),
        get: |s| show_optional_count(s.accept_rate),
    },
    Key {
        name: "accept_burst",
        value: "N",
        applies: Applies::Both,
        help: "How many accept_rate admits at once after a quiet spell; empty: the rate \
               (one second's worth).",
        example: "20",
        set: |s, v| optional_count(v).map(|x| s.accept_burst = x),
        get: |s| show_optional_count(s.accept_burst),
    },
    Key {
        name: "proxy_protocol",
        value: "v1|v2",
        applies: Applies::Both,
        help: "Send a PROXY protocol header (v1 text or v2 binary) to the upstream ahead of \
               each connection, carrying the client's address; UDP takes v2, one header \
               per datagram. Empty: none.",
        example: "v2",
        set: |s, v| choice(v, PROXY_PROTOCOLS).map(|x| s.proxy_protocol = x),
        get: |s| choice_name(&s.proxy_protocol, PROXY_PROTOCOLS),
    },
    Key {
        name: "accept_proxy_from",
        value: "CIDR,...",
        applies: Applies::Tcp,
        help: "Read a PROXY protocol header (v1 or v2) at the start of connections from \
               these peers (load balancers in front of this proxy); its client address \
               stands for the connection's. Their connections without one are closed.",
        example: "10.0.0.0/8",
        set: |s, v| cidrs(v).map(|x| s.accept_proxy_from = x),
        get: |s| show_list(&s.accept_proxy_from),
    },
    Key {
        name: "proxy_header_timeout",
        value: "DURATION",
        applies: Applies::Tcp,
        help: "How long an accept_proxy_from peer has to send its header.",
        example: "1s",
        set: |s, v| positive(v).map(|x| s.proxy_header_timeout = x),
        get: |s| show_duration(s.proxy_header_timeout),
    },
    Key {
        name: "relay",
        value: "auto|copy",
        applies: Applies::Tcp,
        help: "How bytes are relayed: auto uses splice(2) on Linux (no copy to user \
               space), copy always copies through user-space buffers.",
        example: "copy",
        set: |s, v| choice(v, RELAYS).map(|x| s.relay = x),
        get: |s| choice_name(&s.relay, RELAYS),
    },
    Key {
        name: "pipe_size",
        value: "SIZE",
        applies: Applies::Tcp,
        help: "The size of each splice pipe, 4K to 1G.",
        example: "1M",
        set: |s, v| size(v).map(|x| s.pipe_size = x),
        get: |s| show_size(s.pipe_size),
    },
    Key {
        name: "buffer_size",
        value: "SIZE",
        applies: Applies::Tcp,
        help: "The size of each copy buffer (relay = copy, or where splice cannot be \
               used), 1K to 16M.",
        example: "128K",
        set: |s, v| size(v).map(|x| s.buffer_size = x),
        get: |s| show_size(s.buffer_size),
    },
    Key {
        name: "max_sessions",
        value: "N",
        applies: Applies::Udp,
        help: "The most UDP sessions (client addresses) per listen address; a new client \
               beyond it evicts the least recently used session.",
        example: "1000",
        set: |s, v| count(v).map(|x| s.max_sessions = x),
        get: |s| s.max_sessions.to_string(),
    },
    Key {
        name: "batch_size",
        value: "N",
        applies: Applies::Udp,
        help: "UDP datagrams read or sent per system call (recvmmsg/sendmmsg), 1 to 64.",
        example: "8",
        set: |s, v| count(v).map(|x| s.batch_size = x),
        get: |s| s.batch_size.to_string(),
    },
    Key {
        name: "socket_buffer",
        value: "SIZE",
        applies: Applies::Udp,
        help: "The receive and send buffer of each UDP socket; 0 keeps the system's \
               default. Past net.core.rmem_max with CAP_NET_ADMIN, else capped at it.",
        example: "8M",
        set: |s, v| size(v).map(|n| s.socket_buffer = Some(n).filter(|n| *n > 0)),
        get: |s| show_size(s.socket_buffer.unwrap_or(0)),
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_is_a_field_once_and_takes_its_example() {
        let mut seen = std::collections::HashSet::new();
        for key in KEYS {
            assert!(seen.insert(key.name), "{} twice", key.name);
            let mut spec = ForwardSpec::default();
            key.set(&mut spec, key.example)
                .unwrap_or_else(|e| panic!("{e}"));
            assert_ne!(
                spec,
                ForwardSpec::default(),
                "{} = {} changes nothing",
                key.name,
                key.example
            );
            assert_eq!(key.get(&spec), key.example, "{} reads back", key.name);
        }
    }

    #[test]
    fn every_default_reads_back_as_itself() {
        for key in KEYS {
            let mut spec = ForwardSpec::default();
            key.set(&mut spec, &key.default_value())
                .unwrap_or_else(|e| panic!("{e}"));
            if key.name == "idle_timeout" {
                // It sets UDP's too, whose default differs.
                spec.udp_idle_timeout = ForwardSpec::default().udp_idle_timeout;
            }
            assert_eq!(spec, ForwardSpec::default(), "{}", key.name);
        }
    }

    #[test]
    fn bad_values_name_the_key_and_the_value_and_change_nothing() {
        let mut spec = ForwardSpec::default();
        let e = spec.set("connect_timeout", "0").unwrap_err();
        assert_eq!(e.key(), "connect_timeout");
        assert!(e.to_string().contains("`0`"), "{e}");
        let e = spec.set("balance", "random").unwrap_err();
        assert_eq!(
            e.to_string(),
            "balance: `random` is not one of round-robin, least-connections, two-choices, \
             client-ip, rr, least-conn, p2c"
        );
        let e = spec.set("allow", "10.0.0.0/8,nope").unwrap_err();
        assert!(e.to_string().starts_with("allow: "), "{e}");
        assert!(e.to_string().contains("nope"), "{e}");
        let e = spec.set("idle_timout", "1s").unwrap_err();
        assert_eq!(
            e.to_string(),
            "idle_timout: is not a setting; did you mean `idle_timeout`?"
        );
        assert_eq!(spec, ForwardSpec::default());
    }

    #[test]
    fn idle_timeout_sets_both_transports_and_udp_idle_timeout_then_udp_alone() {
        let mut spec = ForwardSpec::default();
        spec.set("udp_idle_timeout", "1s").unwrap();
        spec.set("idle_timeout", "10m").unwrap();
        assert_eq!(spec.idle_timeout, Some(Duration::from_secs(600)));
        assert_eq!(spec.udp_idle_timeout, Some(Duration::from_secs(600)));
        spec.set("udp_idle_timeout", "1s").unwrap();
        assert_eq!(spec.udp_idle_timeout, Some(Duration::from_secs(1)));
        spec.set("idle_timeout", "0").unwrap();
        assert_eq!((spec.idle_timeout, spec.udp_idle_timeout), (None, None));
    }

    #[test]
    fn a_long_connect_attempt_raises_the_budget() {
        let mut spec = ForwardSpec::default();
        spec.set("connect_timeout", "20s").unwrap();
        assert_eq!(spec.connect_total_timeout, Duration::from_secs(20));
        spec.set("connect_total_timeout", "10s").unwrap();
        spec.set("target", "127.0.0.1:1").unwrap();
        spec.set("listen", "0").unwrap();
        assert_eq!(spec.validate().unwrap_err().key(), "connect_timeout");
    }

    #[test]
    fn listen_takes_a_port_or_addresses() {
        let mut spec = ForwardSpec::default();
        spec.set("listen", "53").unwrap();
        assert_eq!(spec.listen, Listen::Any(53));
        spec.set("listen", "127.0.0.1:53, [::1]:53").unwrap();
        assert_eq!(
            spec.listen,
            Listen::Addrs(vec![
                "127.0.0.1:53".parse().unwrap(),
                "[::1]:53".parse().unwrap()
            ])
        );
        assert!(
            spec.set("listen", "70000")
                .unwrap_err()
                .to_string()
                .contains("`70000`")
        );
    }
}
