//! The `proxy run --config FILE` file: TOML with global settings, defaults for every
//! forward, and any number of forwards.
//!
//! ```toml
//! admin = "127.0.0.1:9090"      # optional: /metrics, /healthz, /readyz
//! log_format = "text"           # or "json"
//! threads = 2                   # optional: worker threads, read at start [default: one per CPU]
//!
//! [defaults]                    # optional: every forward starts from these
//! connect_timeout = "2s"
//! idle_timeout = "10m"
//! drain = "10s"                 # global only: how long connections may finish on shutdown
//!
//! [[forward]]
//! name = "dns"                  # optional; unique; default "PROTOCOL LISTEN"
//! protocol = "tcp,udp"          # tcp, udp, or tcp,udp
//! listen = 53                   # a port (all addresses), "IP:PORT", or a list of them
//! target = "kube-dns.kube-system:53"
//! udp_idle_timeout = "1s"       # any default can be set per forward
//! ```
//!
//! Durations are strings such as `"500ms"`, `"1.5s"`, `"1h30m"`, or integers (seconds),
//! at most 10 years, and sizes bytes or strings such as `"8M"`, read by the same parsers
//! as the flags (`proxy_core::value`); `0` turns the idle, half-close, lifetime and UDP
//! idle timers off. `idle_timeout` applies to TCP connections and UDP sessions, as
//! `--idle-timeout` does; `udp_idle_timeout` sets UDP's alone. Errors name the file, the
//! line and the key.

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use clap::ValueEnum;
use proxy_core::resolve::CachePolicy;
use proxy_core::{
    AcceptProxy, Access, Balance, Cidr, Ejection, HealthCheck, Limits, ProxyProtocol, Rate,
    RelayMode, Target, Timeouts,
};
use serde::Deserialize;
use toml::Spanned;

use crate::args::{
    BalanceArg, Common, Listen, LogFormat, ProxyProtocolArg, RelayArg, ResolverArg, TcpPlan,
    UdpPlan, parse_admin, parse_duration, parse_size,
};

/// A checked configuration file.
#[derive(Clone, Debug)]
pub struct ConfigFile {
    /// The admin address, if any.
    pub admin: Option<SocketAddr>,
    /// The log format, if the file sets one.
    pub log_format: Option<LogFormat>,
    /// Worker threads, if the file sets them (read at start, not on reload).
    pub threads: Option<u16>,
    /// How long connections may finish on shutdown, and removed forwards on reload.
    pub drain: Duration,
    /// The forwards, in file order.
    pub forwards: Vec<ForwardPlan>,
}

/// One `[[forward]]`: a name and a plan per protocol it serves.
#[derive(Clone, Debug)]
pub struct ForwardPlan {
    /// The unique name, used in logs, metrics and to match forwards on reload.
    pub name: String,
    /// The TCP side, when the protocol includes TCP.
    pub tcp: Option<TcpPlan>,
    /// The UDP side, when the protocol includes UDP.
    pub udp: Option<UdpPlan>,
}

impl ForwardPlan {
    /// Checks every setting as the library will when the forward starts (builds without
    /// binding or resolving anything).
    fn check(&self) -> Result<(), proxy_core::BuildError> {
        // Building resolves nothing: any resolver will do.
        let resolver: std::sync::Arc<dyn proxy_core::resolve::Resolve> =
            std::sync::Arc::new(proxy_core::resolve::SystemResolver::new());
        if let Some(tcp) = &self.tcp {
            tcp.builder(tcp.common.listen.addrs(), resolver.clone())
                .build()?;
        }
        if let Some(udp) = &self.udp {
            udp.builder(udp.common.listen.addrs(), resolver).build()?;
        }
        Ok(())
    }
}

/// A configuration file that cannot be used; the message names the file, line and key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Reads and checks the configuration file at `path`.
///
/// # Errors
///
/// A [`ConfigError`] naming the file, line and key of the first problem.
pub fn load(path: &Path) -> Result<ConfigFile, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        message: format!("{}: cannot read: {e}", path.display()),
    })?;
    parse(&text, &path.display().to_string())
}

/// Checks the configuration `text`, naming it `file` in errors.
///
/// # Errors
///
/// A [`ConfigError`] naming the file, line and key of the first problem.
pub fn parse(text: &str, file: &str) -> Result<ConfigFile, ConfigError> {
    let cx = Context { text, file };
    let raw: RawFile = toml::from_str(text).map_err(|e| cx.toml_error(&e))?;
    let defaults_span = raw.defaults.as_ref().map(Spanned::span);
    let defaults = raw.defaults.map(Spanned::into_inner).unwrap_or_default();
    for (key, value) in [
        ("name", defaults.name.as_ref().map(Spanned::span)),
        ("protocol", defaults.protocol.as_ref().map(Spanned::span)),
        ("listen", defaults.listen.as_ref().map(Spanned::span)),
        ("target", defaults.target.as_ref().map(Spanned::span)),
    ] {
        if let Some(span) = value {
            return Err(cx.error(
                span,
                &format!("defaults.{key}"),
                "belongs in a [[forward]], not in [defaults]",
            ));
        }
    }
    let admin = raw
        .admin
        .map(|a| parse_admin(a.get_ref()).map_err(|e| cx.error(a.span(), "admin", &e)))
        .transpose()?;
    let log_format = raw
        .log_format
        .map(|f| match f.get_ref().as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(cx.error(
                f.span(),
                "log_format",
                &format!("`{other}` is not a log format; use \"text\" or \"json\""),
            )),
        })
        .transpose()?;
    let threads = raw
        .threads
        .map(|t| match u16::try_from(*t.get_ref()) {
            Ok(n @ 1..=1024) => Ok(n),
            _ => Err(cx.error(t.span(), "threads", "must be 1 to 1024")),
        })
        .transpose()?;
    let drain = match &defaults.drain {
        Some(d) => cx.duration(d, "defaults.drain")?,
        None => Duration::from_secs(10),
    };

    // Check [defaults] on its own too, so a bad default is an error with no forwards.
    cx.settings(&defaults, &RawEntry::default(), &0)?;
    let mut names = HashSet::new();
    let mut forwards = Vec::with_capacity(raw.forward.len());
    for (i, entry) in raw.forward.iter().enumerate() {
        let at = |key: &str| format!("forward[{i}].{key}");
        let whole = entry.span();
        let entry = entry.get_ref();
        if entry.drain.is_some() {
            let span = entry
                .drain
                .as_ref()
                .map(Spanned::span)
                .unwrap_or(whole.clone());
            return Err(cx.error(span, &at("drain"), "is global: set it in [defaults]"));
        }
        let protocol = entry
            .protocol
            .as_ref()
            .ok_or_else(|| cx.error(whole.clone(), &at("protocol"), "is missing"))?;
        let (tcp, udp) = match protocol.get_ref().as_str() {
            "tcp" => (true, false),
            "udp" => (false, true),
            "tcp,udp" | "udp,tcp" | "tcp+udp" => (true, true),
            other => {
                return Err(cx.error(
                    protocol.span(),
                    &at("protocol"),
                    &format!("`{other}` is not a protocol; use \"tcp\", \"udp\" or \"tcp,udp\""),
                ));
            }
        };
        let listen_raw = entry
            .listen
            .as_ref()
            .ok_or_else(|| cx.error(whole.clone(), &at("listen"), "is missing"))?;
        let listen = cx.listen(listen_raw, &at("listen"))?;
        let target_raw = entry
            .target
            .as_ref()
            .ok_or_else(|| cx.error(whole.clone(), &at("target"), "is missing"))?;
        let target: Target =
            target_raw
                .get_ref()
                .parse()
                .map_err(|e: proxy_core::TargetError| {
                    cx.error(target_raw.span(), &at("target"), &e.to_string())
                })?;
        let name = match &entry.name {
            Some(n) if n.get_ref().is_empty() => {
                return Err(cx.error(n.span(), &at("name"), "is empty"));
            }
            Some(n) => n.get_ref().clone(),
            None => format!("{} {}", protocol.get_ref(), listen_name(&listen)),
        };
        if !names.insert(name.clone()) {
            let span = entry.name.as_ref().map_or(whole.clone(), Spanned::span);
            return Err(cx.error(span, &at("name"), &format!("`{name}` is used twice")));
        }
        let settings = cx.settings(&defaults, entry, &i)?;
        let forward = ForwardPlan {
            name,
            tcp: tcp.then(|| settings.tcp_plan(listen.clone(), target.clone(), drain)),
            udp: udp.then(|| settings.udp_plan(listen.clone(), target.clone(), drain)),
        };
        // The library's checks, named where the file sets the key at fault.
        if let Err(e) = forward.check() {
            let tables = [
                (at(""), Some(whole.clone())),
                ("defaults.".into(), defaults_span.clone()),
            ];
            return Err(cx.key_error(&tables, e.key(), &e.to_string()));
        }
        forwards.push(forward);
    }
    Ok(ConfigFile {
        admin,
        log_format,
        threads,
        drain,
        forwards,
    })
}

/// The toml crate's message for a value of the wrong shape, in the file's terms: what the
/// key takes and the `value` written.
fn plain_message(message: &str, value: &str) -> String {
    let takes = |what: &str| format!("`{value}` is not {what}");
    if let Some(kind) = message.strip_prefix("data did not match any variant of untagged enum ") {
        return match kind {
            "RawListen" => {
                takes("a listen address: use a port (0-65535), \"IP:PORT\", or a list of them")
            }
            "RawDuration" => {
                takes("a duration: use seconds, or text such as \"1.5s\" or \"1h30m\"")
            }
            "RawSize" => takes("a size: use bytes, or text such as \"8M\""),
            _ => message.to_owned(),
        };
    }
    let expected = message
        .split_once(", expected ")
        .filter(|(found, _)| {
            found.starts_with("invalid type: ") || found.starts_with("invalid value: ")
        })
        .map(|(_, expected)| expected);
    match expected {
        Some("i64") => takes("a whole number"),
        Some("u64" | "u32" | "u16" | "usize") => takes("a whole number of 0 or more"),
        Some("a boolean") => takes("true or false"),
        Some("a string") => takes("text (write it in quotes)"),
        Some("a sequence") => takes("a list (write it in [ ])"),
        _ => message.to_owned(),
    }
}

/// One line per forward of `config`, for `--check`: its name, protocols, where it
/// listens and where it forwards to.
pub fn summary(config: &ConfigFile) -> Vec<String> {
    config
        .forwards
        .iter()
        .map(|f| {
            let common = f
                .tcp
                .as_ref()
                .map(|t| &t.common)
                .or(f.udp.as_ref().map(|u| &u.common));
            let protocols = match (&f.tcp, &f.udp) {
                (Some(_), Some(_)) => "tcp,udp",
                (Some(_), None) => "tcp",
                _ => "udp",
            };
            match common {
                Some(c) => format!(
                    "forward `{}`: {protocols} {} -> {}",
                    f.name,
                    listen_name(&c.listen),
                    c.target
                ),
                None => format!("forward `{}`: nothing to forward", f.name),
            }
        })
        .collect()
}

fn listen_name(listen: &Listen) -> String {
    match listen {
        Listen::Any(port) => port.to_string(),
        Listen::Addrs(addrs) => addrs
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(","),
    }
}

/// The file as written: every key optional, so [defaults] and [[forward]] share it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    admin: Option<Spanned<String>>,
    log_format: Option<Spanned<String>>,
    threads: Option<Spanned<i64>>,
    defaults: Option<Spanned<RawEntry>>,
    #[serde(default)]
    forward: Vec<Spanned<RawEntry>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    name: Option<Spanned<String>>,
    protocol: Option<Spanned<String>>,
    listen: Option<Spanned<RawListen>>,
    target: Option<Spanned<String>>,
    connect_timeout: Option<Spanned<RawDuration>>,
    connect_total_timeout: Option<Spanned<RawDuration>>,
    idle_timeout: Option<Spanned<RawDuration>>,
    half_close_timeout: Option<Spanned<RawDuration>>,
    max_lifetime: Option<Spanned<RawDuration>>,
    udp_idle_timeout: Option<Spanned<RawDuration>>,
    dns_refresh: Option<Spanned<RawDuration>>,
    drain: Option<Spanned<RawDuration>>,
    resolver: Option<Spanned<String>>,
    relay: Option<Spanned<String>>,
    reuse_port: Option<bool>,
    backlog: Option<u32>,
    pipe_size: Option<Spanned<RawSize>>,
    max_sessions: Option<usize>,
    batch_size: Option<usize>,
    socket_buffer: Option<Spanned<RawSize>>,
    balance: Option<Spanned<String>>,
    affinity_timeout: Option<Spanned<RawDuration>>,
    eject_after: Option<u32>,
    eject_for: Option<Spanned<RawDuration>>,
    proxy_protocol: Option<Spanned<String>>,
    accept_proxy_from: Option<Vec<Spanned<String>>>,
    proxy_header_timeout: Option<Spanned<RawDuration>>,
    health_check_interval: Option<Spanned<RawDuration>>,
    health_check_timeout: Option<Spanned<RawDuration>>,
    health_check_rise: Option<Spanned<u32>>,
    health_check_fall: Option<Spanned<u32>>,
    allow: Option<Vec<Spanned<String>>>,
    deny: Option<Vec<Spanned<String>>>,
    max_connections: Option<usize>,
    max_per_source: Option<usize>,
    accept_rate: Option<u32>,
    accept_burst: Option<Spanned<u32>>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawDuration {
    Seconds(u64),
    Text(String),
}

/// A size: bytes, or text with a suffix (`"8M"`), as on the command line.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawSize {
    Bytes(u64),
    Text(String),
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawListen {
    Port(u16),
    One(String),
    Many(Vec<String>),
}

/// A forward's settings after applying its own keys over [defaults].
struct Settings {
    timeouts: Timeouts,
    cache: CachePolicy,
    resolver: ResolverArg,
    relay: RelayMode,
    reuse_port: bool,
    backlog: Option<u32>,
    pipe_size: Option<usize>,
    max_sessions: Option<usize>,
    batch_size: Option<usize>,
    socket_buffer: Option<usize>,
    balance: Balance,
    ejection: Option<Ejection>,
    proxy_protocol: Option<ProxyProtocol>,
    accept_proxy: Option<AcceptProxy>,
    health_check: Option<HealthCheck>,
    access: Access,
    limits: Limits,
}

impl Settings {
    fn common(&self, listen: Listen, target: Target, drain: Duration) -> Common {
        Common {
            listen,
            target,
            timeouts: self.timeouts,
            cache: self.cache,
            resolver: self.resolver,
            reuse_port: self.reuse_port,
            balance: self.balance,
            ejection: self.ejection,
            health_check: self.health_check,
            access: self.access.clone(),
            limits: self.limits,
            proxy_protocol: self.proxy_protocol,
            drain,
        }
    }

    fn tcp_plan(&self, listen: Listen, target: Target, drain: Duration) -> TcpPlan {
        TcpPlan {
            common: self.common(listen, target, drain),
            accept_proxy: self.accept_proxy.clone(),
            backlog: self.backlog,
            pipe_size: self.pipe_size,
            relay: self.relay,
        }
    }

    fn udp_plan(&self, listen: Listen, target: Target, drain: Duration) -> UdpPlan {
        UdpPlan {
            common: self.common(listen, target, drain),
            max_sessions: self.max_sessions,
            batch_size: self.batch_size,
            socket_buffer: self.socket_buffer,
        }
    }
}

/// The text being checked, to turn byte spans into line numbers.
struct Context<'a> {
    text: &'a str,
    file: &'a str,
}

impl Context<'_> {
    fn line(&self, offset: usize) -> usize {
        let offset = offset.min(self.text.len());
        self.text[..offset].matches('\n').count() + 1
    }

    /// Reads `value` as one of `T`'s names, as the command line takes them (aliases too);
    /// the error names the value and lists the names, with `also`, words the caller
    /// accepts itself.
    fn choice<T: ValueEnum>(
        &self,
        value: &Spanned<String>,
        key: &str,
        what: &str,
        also: &[&str],
    ) -> Result<T, ConfigError> {
        T::from_str(value.get_ref(), false).map_err(|_| {
            let names: Vec<String> = T::value_variants()
                .iter()
                .filter_map(ValueEnum::to_possible_value)
                .map(|p| p.get_name().to_owned())
                .chain(also.iter().map(|a| (*a).to_owned()))
                .map(|name| format!("\"{name}\""))
                .collect();
            let list = match names.split_last() {
                Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
                _ => names.concat(),
            };
            let message = format!("`{}` is not {what}; use {list}", value.get_ref());
            self.error(value.span(), key, &message)
        })
    }

    fn error(&self, span: Range<usize>, key: &str, message: &str) -> ConfigError {
        ConfigError {
            message: format!("{}:{}: {key}: {message}", self.file, self.line(span.start)),
        }
    }

    /// The text of the table whose header is at `header`: up to the next header.
    fn table(&self, header: &Range<usize>) -> Range<usize> {
        let body = header.end.min(self.text.len());
        let end = self.text[body..]
            .split_inclusive('\n')
            .scan(body, |at, line| {
                let start = *at;
                *at += line.len();
                Some((start, line))
            })
            .find(|(_, line)| line.trim_start().starts_with('['))
            .map_or(self.text.len(), |(start, _)| start);
        header.start..end
    }

    /// An error about `key`, at the line of the first of `tables` (each a prefix for the
    /// key, and the span of the table's header) that sets it; at the first table's header
    /// otherwise.
    fn key_error(
        &self,
        tables: &[(String, Option<Range<usize>>)],
        key: &str,
        message: &str,
    ) -> ConfigError {
        for (prefix, header) in tables {
            let Some(header) = header else { continue };
            let span = self.table(header);
            let Some(table) = self.text.get(span.clone()) else {
                continue;
            };
            let mut offset = span.start;
            for line in table.split_inclusive('\n') {
                if line.split_once('=').is_some_and(|(k, _)| k.trim() == key) {
                    return self.error(offset..offset, &format!("{prefix}{key}"), message);
                }
                offset += line.len();
            }
        }
        let (prefix, span) = &tables[0];
        let start = span.as_ref().map_or(0, |s| s.start);
        self.error(start..start, &format!("{prefix}{key}"), message)
    }

    /// A TOML or schema error from the toml crate, with the key read off its line, and in
    /// words a user knows rather than the deserializer's types.
    fn toml_error(&self, e: &toml::de::Error) -> ConfigError {
        let Some(span) = e.span() else {
            return ConfigError {
                message: format!("{}: {}", self.file, e.message().trim_end()),
            };
        };
        let line = self.line(span.start);
        let text = self.text.lines().nth(line - 1).unwrap_or("");
        let value = text.split_once('=').map_or("", |(_, v)| v.trim());
        let message = plain_message(e.message().trim_end(), value);
        let message = message.as_str();
        let key = text
            .split_once('=')
            .map(|(k, _)| k.trim())
            .filter(|k| !k.is_empty() && !k.starts_with('['));
        let message = match key {
            Some(key) => format!("{}:{line}: {key}: {message}", self.file),
            None => format!("{}:{line}: {message}", self.file),
        };
        ConfigError { message }
    }

    fn duration(&self, d: &Spanned<RawDuration>, key: &str) -> Result<Duration, ConfigError> {
        match d.get_ref() {
            // The one duration parser, for its checks (the maximum) and its messages.
            RawDuration::Seconds(s) => parse_duration(&s.to_string()),
            RawDuration::Text(t) => parse_duration(t),
        }
        .map_err(|e| self.error(d.span(), key, &e))
    }

    fn size(&self, v: &Spanned<RawSize>, key: &str) -> Result<usize, ConfigError> {
        match v.get_ref() {
            // The one size parser, for its checks and its messages.
            RawSize::Bytes(n) => parse_size(&n.to_string()),
            RawSize::Text(t) => parse_size(t),
        }
        .map_err(|e| self.error(v.span(), key, &e))
    }

    fn listen(&self, l: &Spanned<RawListen>, key: &str) -> Result<Listen, ConfigError> {
        let addr = |s: &str| -> Result<SocketAddr, ConfigError> {
            s.parse().map_err(|_| {
                self.error(
                    l.span(),
                    key,
                    &format!("`{s}` is not an address; write IP:PORT, [IPv6]:PORT, or a port"),
                )
            })
        };
        match l.get_ref() {
            RawListen::Port(port) => Ok(Listen::Any(*port)),
            RawListen::One(s) => Ok(Listen::Addrs(vec![addr(s)?])),
            RawListen::Many(items) if items.is_empty() => {
                Err(self.error(l.span(), key, "is an empty list"))
            }
            RawListen::Many(items) => Ok(Listen::Addrs(
                items.iter().map(|s| addr(s)).collect::<Result<_, _>>()?,
            )),
        }
    }

    /// A forward's settings: [defaults], then its own keys.
    fn settings(
        &self,
        defaults: &RawEntry,
        entry: &RawEntry,
        index: &usize,
    ) -> Result<Settings, ConfigError> {
        let mut t = Timeouts::default();
        let mut cache = CachePolicy::default();
        let mut s = Settings {
            timeouts: t,
            cache,
            resolver: ResolverArg::System,
            relay: RelayMode::Auto,
            reuse_port: false,
            backlog: None,
            pipe_size: None,
            max_sessions: None,
            batch_size: None,
            socket_buffer: None,
            balance: Balance::RoundRobin,
            ejection: None,
            proxy_protocol: None,
            accept_proxy: None,
            health_check: None,
            access: Access::default(),
            limits: Limits::default(),
        };
        let mut total_set = false;
        let mut burst: Option<(u32, Range<usize>, String)> = None;
        let mut balance = BalanceArg::RoundRobin;
        let mut affinity: Option<Duration> = None;
        let mut eject_after: Option<u32> = None;
        let mut eject_for: Option<Duration> = None;
        let mut trusted: Vec<Cidr> = Vec::new();
        let mut check_interval: Option<Duration> = None;
        let mut check = HealthCheck::default();
        let mut header_timeout: Option<(Duration, Range<usize>, String)> = None;
        for (section, e) in [
            ("defaults".to_owned(), defaults),
            (format!("forward[{index}]"), entry),
        ] {
            let key = |k: &str| format!("{section}.{k}");
            let nonzero = |d: &Spanned<RawDuration>, k: &str| -> Result<Duration, ConfigError> {
                let v = self.duration(d, &key(k))?;
                if v.is_zero() {
                    return Err(self.error(d.span(), &key(k), "must be greater than 0"));
                }
                Ok(v)
            };
            let optional =
                |d: &Spanned<RawDuration>, k: &str| -> Result<Option<Duration>, ConfigError> {
                    let v = self.duration(d, &key(k))?;
                    Ok((!v.is_zero()).then_some(v))
                };
            if let Some(d) = &e.connect_timeout {
                t.connect = nonzero(d, "connect_timeout")?;
            }
            if let Some(d) = &e.connect_total_timeout {
                t.connect_total = nonzero(d, "connect_total_timeout")?;
                total_set = true;
            }
            // As `--idle-timeout`: TCP connections and UDP sessions alike; the more
            // specific `udp_idle_timeout` of the same section wins for UDP.
            if let Some(d) = &e.idle_timeout {
                t.idle = optional(d, "idle_timeout")?;
                t.udp_session_idle = t.idle;
            }
            if let Some(d) = &e.half_close_timeout {
                t.half_close = optional(d, "half_close_timeout")?;
            }
            if let Some(d) = &e.max_lifetime {
                t.max_lifetime = optional(d, "max_lifetime")?;
            }
            if let Some(d) = &e.udp_idle_timeout {
                t.udp_session_idle = optional(d, "udp_idle_timeout")?;
            }
            if let Some(d) = &e.dns_refresh {
                cache.refresh = Some(nonzero(d, "dns_refresh")?);
            }
            if let Some(r) = &e.resolver {
                s.resolver = self.choice(r, &key("resolver"), "a resolver", &[])?;
            }
            if let Some(r) = &e.relay {
                s.relay = self
                    .choice::<RelayArg>(r, &key("relay"), "a relay mode", &[])?
                    .into();
            }
            if let Some(b) = &e.balance {
                balance = self.choice(b, &key("balance"), "a balancing policy", &[])?;
            }
            if let Some(d) = &e.affinity_timeout {
                let v = nonzero(d, "affinity_timeout")?;
                // Set here, it must go with client-ip here; inherited, it is ignored by
                // a forward that balances otherwise.
                if balance != BalanceArg::ClientIp {
                    return Err(self.error(
                        d.span(),
                        &key("affinity_timeout"),
                        "needs balance = \"client-ip\"",
                    ));
                }
                affinity = Some(v);
            }
            if let Some(v) = &e.proxy_protocol {
                s.proxy_protocol = match v.get_ref().as_str() {
                    "off" => None,
                    _ => Some(
                        self.choice::<ProxyProtocolArg>(
                            v,
                            &key("proxy_protocol"),
                            "a PROXY protocol version",
                            &["off"],
                        )?
                        .into(),
                    ),
                };
            }
            let cidrs = |list: &[Spanned<String>], name: &str| {
                list.iter()
                    .map(|c| {
                        c.get_ref()
                            .parse::<Cidr>()
                            .map_err(|err| self.error(c.span(), &key(name), &err.to_string()))
                    })
                    .collect::<Result<Vec<_>, _>>()
            };
            if let Some(list) = &e.accept_proxy_from {
                trusted = cidrs(list, "accept_proxy_from")?;
            }
            if let Some(list) = &e.allow {
                s.access.allow = cidrs(list, "allow")?;
            }
            if let Some(list) = &e.deny {
                s.access.deny = cidrs(list, "deny")?;
            }
            if let Some(d) = &e.proxy_header_timeout {
                header_timeout = Some((
                    nonzero(d, "proxy_header_timeout")?,
                    d.span(),
                    key("proxy_header_timeout"),
                ));
            }
            if let Some(d) = &e.health_check_interval {
                let v = self.duration(d, &key("health_check_interval"))?;
                check_interval = (!v.is_zero()).then_some(v);
            }
            if let Some(d) = &e.health_check_timeout {
                check.timeout = nonzero(d, "health_check_timeout")?;
            }
            for (value, name, field) in [
                (&e.health_check_rise, "health_check_rise", &mut check.rise),
                (&e.health_check_fall, "health_check_fall", &mut check.fall),
            ] {
                if let Some(n) = value {
                    if *n.get_ref() == 0 {
                        return Err(self.error(n.span(), &key(name), "must be at least 1"));
                    }
                    *field = *n.get_ref();
                }
            }
            if let Some(n) = e.eject_after {
                eject_after = (n > 0).then_some(n);
            }
            if let Some(d) = &e.eject_for {
                eject_for = Some(nonzero(d, "eject_for")?);
            }
            s.reuse_port = e.reuse_port.unwrap_or(s.reuse_port);
            s.backlog = e.backlog.or(s.backlog);
            if let Some(v) = &e.pipe_size {
                s.pipe_size = Some(self.size(v, &key("pipe_size"))?);
            }
            s.max_sessions = e.max_sessions.or(s.max_sessions);
            s.batch_size = e.batch_size.or(s.batch_size);
            if let Some(v) = &e.socket_buffer {
                s.socket_buffer = Some(self.size(v, &key("socket_buffer"))?);
            }
            // 0 lifts a limit [defaults] set.
            let limit = |n: usize| (n > 0).then_some(n);
            if let Some(n) = e.max_connections {
                s.limits.max_connections = limit(n);
            }
            if let Some(n) = e.max_per_source {
                s.limits.max_per_source = limit(n);
            }
            if let Some(n) = e.accept_rate {
                s.limits.accept_rate = (n > 0).then(|| Rate::per_second(n));
            }
            if let Some(n) = &e.accept_burst {
                if *n.get_ref() == 0 {
                    return Err(self.error(n.span(), &key("accept_burst"), "must be at least 1"));
                }
                burst = Some((*n.get_ref(), n.span(), key("accept_burst")));
            }
        }
        match (&mut s.limits.accept_rate, burst) {
            (Some(rate), Some((n, _, _))) => *rate = rate.burst(n),
            // Inherited from [defaults], it waits for a forward with a rate.
            (None, Some((_, span, key))) if key.starts_with("forward") => {
                return Err(self.error(span, &key, "needs accept_rate"));
            }
            _ => {}
        }
        s.balance = balance.policy(affinity);
        s.health_check = check_interval
            .map(|i| HealthCheck::every(i).with(check.timeout, check.rise, check.fall));
        if trusted.is_empty() {
            // Inherited from [defaults], it waits for a forward that reads headers.
            if let Some((_, span, key)) = header_timeout
                && key.starts_with("forward")
            {
                return Err(self.error(span, &key, "needs accept_proxy_from"));
            }
        } else {
            let accept = AcceptProxy::new(trusted);
            s.accept_proxy = Some(match header_timeout {
                Some((t, _, _)) => accept.timeout(t),
                None => accept,
            });
        }
        s.ejection =
            eject_after.map(|n| Ejection::new(n, eject_for.unwrap_or(Ejection::default().backoff)));
        // As on the command line: a longer attempt timeout raises an unset total budget.
        if !total_set && t.connect > t.connect_total {
            t.connect_total = t.connect;
        }
        s.timeouts = t;
        s.cache = cache;
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        match parse(text, "proxy.toml") {
            Ok(c) => panic!("{text:?} parsed: {c:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn parses_forwards_with_defaults_and_overrides() {
        let c = parse(
            r#"
admin = "127.0.0.1:9090"
log_format = "json"

[defaults]
connect_timeout = "2s"
idle_timeout = 600
drain = "3s"

[[forward]]
name = "dns"
protocol = "tcp,udp"
listen = 53
target = "kube-dns.kube-system:53"
udp_idle_timeout = "1s"

[[forward]]
protocol = "tcp"
listen = ["127.0.0.1:8080", "[::1]:8080"]
target = "web.default:80"
idle_timeout = 0
"#,
            "proxy.toml",
        )
        .unwrap();
        assert_eq!(c.admin, Some("127.0.0.1:9090".parse().unwrap()));
        assert!(matches!(c.log_format, Some(LogFormat::Json)));
        assert_eq!(c.drain, Duration::from_secs(3));
        assert_eq!(c.forwards.len(), 2);
        let dns = &c.forwards[0];
        assert_eq!(dns.name, "dns");
        let tcp = dns.tcp.as_ref().unwrap();
        let udp = dns.udp.as_ref().unwrap();
        assert!(matches!(tcp.common.listen, Listen::Any(53)));
        assert_eq!(tcp.common.timeouts.connect, Duration::from_secs(2));
        assert_eq!(tcp.common.timeouts.idle, Some(Duration::from_secs(600)));
        assert_eq!(
            udp.common.timeouts.udp_session_idle,
            Some(Duration::from_secs(1))
        );
        let web = &c.forwards[1];
        assert_eq!(web.name, "tcp 127.0.0.1:8080,[::1]:8080");
        assert!(web.udp.is_none());
        assert_eq!(
            web.tcp.as_ref().unwrap().common.timeouts.idle,
            None,
            "0 turns it off"
        );
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let cases = [
            (
                "[[forward]]\nprotocol = \"tcp\"\nlisten = 80\ntarget = \"web\"\n",
                "proxy.toml:4: forward[0].target: invalid target `web`",
            ),
            (
                "[[forward]]\nprotocol = \"sctp\"\n",
                "proxy.toml:2: forward[0].protocol: `sctp` is not a protocol",
            ),
            (
                "[[forward]]\nprotocol = \"tcp\"\ntarget = \"a:1\"\n",
                "forward[0].listen: is missing",
            ),
            (
                "[defaults]\nidle_timeout = \"5x\"\n",
                "proxy.toml:2: defaults.idle_timeout: `5x` is not a duration: unknown unit `x`",
            ),
            (
                "[defaults]\ntagret = 1\n",
                "proxy.toml:2: tagret: unknown field `tagret`",
            ),
            (
                "[defaults]\nbacklog = \"many\"\n",
                "proxy.toml:2: backlog: `\"many\"` is not a whole number of 0 or more",
            ),
            (
                "[[forward]]\nprotocol = \"tcp\"\nlisten = \"localhost\"\ntarget = \"a:1\"\n",
                "proxy.toml:3: forward[0].listen: `localhost` is not an address",
            ),
            ("admin = \"nope\"\n", "proxy.toml:1: admin:"),
            ("threads = 0\n", "proxy.toml:1: threads: must be 1 to 1024"),
            (
                "[[forward]]\nprotocol = \"tcp\"\nlisten = 80\ntarget = \"a:1\"\naccept_proxy_from = [\"10.0.0.0/33\"]\n",
                "proxy.toml:5: forward[0].accept_proxy_from: invalid CIDR `10.0.0.0/33`",
            ),
            (
                "[[forward]]\nprotocol = \"tcp\"\nlisten = 80\ntarget = \"a:1\"\nproxy_header_timeout = \"1s\"\n",
                "proxy.toml:5: forward[0].proxy_header_timeout: needs accept_proxy_from",
            ),
            (
                "[defaults]\nhealth_check_rise = 0\n",
                "proxy.toml:2: defaults.health_check_rise: must be at least 1",
            ),
            (
                "[defaults]\nproxy_protocol = \"v3\"\n",
                "proxy.toml:2: defaults.proxy_protocol: `v3` is not a PROXY protocol version; \
                 use \"v1\", \"v2\" or \"off\"",
            ),
            (
                "[defaults]\nresolver = \"bind\"\nrelay = \"auto\"\n",
                "proxy.toml:2: defaults.resolver: `bind` is not a resolver; use \"system\" or \"hickory\"",
            ),
            (
                "[defaults]\nrelay = \"Copy\"\n",
                "proxy.toml:2: defaults.relay: `Copy` is not a relay mode; use \"auto\" or \"copy\"",
            ),
            (
                "[defaults]\nbalance = \"fastest\"\n",
                "proxy.toml:2: defaults.balance: `fastest` is not a balancing policy",
            ),
            (
                "[defaults]\naffinity_timeout = \"1h\"\n[[forward]]\nprotocol = \"tcp\"\nlisten = 80\ntarget = \"a:1\"\n",
                "proxy.toml:2: defaults.affinity_timeout: needs balance = \"client-ip\"",
            ),
            (
                "[defaults]\ntarget = \"a:1\"\n",
                "proxy.toml:2: defaults.target: belongs in a [[forward]]",
            ),
            (
                "[[forward]]\nname = \"a\"\nprotocol = \"tcp\"\nlisten = 1\ntarget = \"a:1\"\n[[forward]]\nname = \"a\"\nprotocol = \"udp\"\nlisten = 1\ntarget = \"a:1\"\n",
                "proxy.toml:7: forward[1].name: `a` is used twice",
            ),
            (
                "[defaults]\nconnect_timeout = 0\n",
                "proxy.toml:2: defaults.connect_timeout: must be greater than 0",
            ),
            ("[[forward]\n", "proxy.toml:1:"),
            // The library's checks, at the line of the key at fault.
            (
                "[[forward]]\nname = \"a\"\nprotocol = \"udp\"\nlisten = 53\ntarget = \"a:53\"\nmax_sessions = 0\n",
                "proxy.toml:6: forward[0].max_sessions: the UDP session limit must be at least 1",
            ),
            (
                "[defaults]\nbatch_size = 100\n[[forward]]\nname = \"a\"\nprotocol = \"udp\"\nlisten = 53\ntarget = \"a:53\"\n",
                "proxy.toml:2: defaults.batch_size: UDP batch size 100 is outside 1..=64",
            ),
            (
                "[[forward]]\nname = \"a\"\nprotocol = \"tcp\"\nlisten = 53\ntarget = \"a:53\"\npipe_size = \"1K\"\n",
                "proxy.toml:6: forward[0].pipe_size: pipe size 1024 is outside",
            ),
            // Values of the wrong shape, in the file's terms.
            (
                "[[forward]]\nname = \"a\"\nprotocol = \"udp\"\nlisten = 70000\ntarget = \"a:53\"\n",
                "proxy.toml:4: listen: `70000` is not a listen address: use a port (0-65535)",
            ),
            (
                "threads = \"2\"\n",
                "proxy.toml:1: threads: `\"2\"` is not a whole number",
            ),
            (
                "[defaults]\nmax_connections = -1\n",
                "proxy.toml:2: max_connections: `-1` is not a whole number of 0 or more",
            ),
            (
                "[defaults]\nidle_timeout = true\n",
                "proxy.toml:2: idle_timeout: `true` is not a duration",
            ),
        ];
        for (text, want) in cases {
            let got = err(text);
            assert!(got.contains(want), "{text:?}:\n{got}\nlacks {want:?}");
        }
    }

    #[test]
    fn balance_and_ejection_keys() {
        let text = "[defaults]\nbalance = \"client-ip\"\naffinity_timeout = \"10m\"\neject_after = 2\n\
            health_check_interval = \"3s\"\nhealth_check_fall = 4\n\
            [[forward]]\nname = \"a\"\nprotocol = \"tcp,udp\"\nlisten = 80\ntarget = \"a:1\"\neject_for = \"30s\"\n\
            [[forward]]\nname = \"b\"\nprotocol = \"tcp\"\nlisten = 81\ntarget = \"b:1\"\nbalance = \"least-connections\"\neject_after = 0\nproxy_protocol = \"v1\"\n\
            accept_proxy_from = [\"10.0.0.0/8\", \"::1\"]\nproxy_header_timeout = \"2s\"\ndeny = [\"192.0.2.0/24\", \"::ffff:198.51.100.7\"]\n";
        let c = parse(text, "proxy.toml").unwrap();
        let a = &c.forwards[0];
        for (balance, ejection) in [
            (
                a.tcp.as_ref().unwrap().common.balance,
                a.tcp.as_ref().unwrap().common.ejection,
            ),
            (
                a.udp.as_ref().unwrap().common.balance,
                a.udp.as_ref().unwrap().common.ejection,
            ),
        ] {
            assert_eq!(
                balance,
                Balance::ClientIp {
                    timeout: Duration::from_secs(600)
                }
            );
            assert_eq!(ejection, Some(Ejection::new(2, Duration::from_secs(30))));
        }
        let b = c.forwards[1].tcp.as_ref().unwrap();
        assert_eq!(b.common.proxy_protocol, Some(ProxyProtocol::V1));
        let accept = b.accept_proxy.as_ref().expect("accept_proxy_from");
        assert_eq!(
            accept.trusted,
            [
                "10.0.0.0/8".parse::<Cidr>().unwrap(),
                "::1".parse().unwrap()
            ]
        );
        assert_eq!(accept.timeout, Duration::from_secs(2));
        assert_eq!(a.tcp.as_ref().unwrap().accept_proxy, None);
        let want = HealthCheck::every(Duration::from_secs(3)).with(Duration::from_secs(1), 2, 4);
        assert_eq!(a.udp.as_ref().unwrap().common.health_check, Some(want));
        assert_eq!(b.common.health_check, Some(want), "from [defaults]");
        assert_eq!(
            b.common.access.deny,
            [
                "192.0.2.0/24".parse::<Cidr>().unwrap(),
                "198.51.100.7/32".parse().unwrap()
            ],
            "an IPv4-mapped address is its IPv4 address"
        );
        assert!(a.tcp.as_ref().unwrap().common.access.deny.is_empty());
        assert_eq!(a.udp.as_ref().unwrap().common.proxy_protocol, None);
        assert_eq!(b.common.balance, Balance::LeastConnections);
        assert_eq!(
            b.common.ejection, None,
            "eject_after = 0 turns the default off"
        );
    }

    #[test]
    fn limit_keys() {
        let text = "[defaults]\nmax_per_source = 10\naccept_rate = 100\n\
            [[forward]]\nname = \"a\"\nprotocol = \"tcp,udp\"\nlisten = 80\ntarget = \"a:1\"\n\
            max_connections = 500\naccept_burst = 300\n\
            [[forward]]\nname = \"b\"\nprotocol = \"tcp\"\nlisten = 81\ntarget = \"b:1\"\n\
            max_per_source = 0\naccept_rate = 0\n";
        let c = parse(text, "proxy.toml").unwrap();
        let a = &c.forwards[0];
        let mut want = Limits::default();
        want.max_connections = Some(500);
        want.max_per_source = Some(10);
        want.accept_rate = Some(Rate::per_second(100).burst(300));
        assert_eq!(a.tcp.as_ref().unwrap().common.limits, want);
        assert_eq!(
            a.udp.as_ref().unwrap().common.limits,
            want,
            "max_connections counts UDP sessions, as on the command line and in C"
        );
        let b = c.forwards[1].tcp.as_ref().unwrap();
        assert_eq!(
            b.common.limits,
            Limits::default(),
            "0 lifts the defaults' limits"
        );
        let e = err(
            "[[forward]]\nprotocol = \"tcp\"\nlisten = 80\ntarget = \"a:1\"\naccept_burst = 5\n",
        );
        assert_eq!(
            e,
            "proxy.toml:5: forward[0].accept_burst: needs accept_rate"
        );
        let e = err("[defaults]\naccept_rate = 5\naccept_burst = 0\n");
        assert_eq!(e, "proxy.toml:3: defaults.accept_burst: must be at least 1");
        let e = err("[defaults]\nmax_connections = -1\n");
        assert!(e.starts_with("proxy.toml:2"), "{e}");
    }

    #[test]
    fn the_example_config_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/proxy.toml");
        let c = load(&path).unwrap();
        assert!(!c.forwards.is_empty());
        let dns = c.forwards.iter().find(|f| f.name == "dns").expect("dns");
        assert_eq!(dns.udp.as_ref().unwrap().socket_buffer, Some(8 << 20));
    }

    /// Sizes and durations read as on the command line: one parser each, whatever the
    /// front end (`socket_buffer = "8M"` used to fail here while `--socket-buffer 8M`
    /// worked).
    #[test]
    fn sizes_and_durations_read_as_the_flags_do() {
        let c = parse(
            "[[forward]]\nname = \"dns\"\nprotocol = \"tcp,udp\"\nlisten = 53\ntarget = \"a:53\"\n\
             socket_buffer = \"8M\"\npipe_size = \"1M\"\nidle_timeout = \"1h30m\"\n\
             connect_timeout = \"1.5s\"\n",
            "proxy.toml",
        )
        .unwrap();
        let f = &c.forwards[0];
        let (tcp, udp) = (f.tcp.as_ref().unwrap(), f.udp.as_ref().unwrap());
        assert_eq!(
            udp.socket_buffer,
            Some(crate::args::parse_size("8M").unwrap())
        );
        assert_eq!(tcp.pipe_size, Some(1 << 20));
        assert_eq!(tcp.common.timeouts.idle, Some(Duration::from_secs(5400)));
        assert_eq!(tcp.common.timeouts.connect, Duration::from_millis(1500));
        // Plain numbers still mean bytes and seconds.
        let c = parse(
            "[defaults]\nsocket_buffer = 65536\nidle_timeout = 90\n[[forward]]\nname = \"a\"\n\
             protocol = \"udp\"\nlisten = 1\ntarget = \"a:1\"\n",
            "proxy.toml",
        )
        .unwrap();
        let udp = c.forwards[0].udp.as_ref().unwrap();
        assert_eq!(udp.socket_buffer, Some(65_536));
        assert_eq!(
            udp.common.timeouts.udp_session_idle,
            Some(Duration::from_secs(90)),
            "idle_timeout is UDP's too, as --idle-timeout is"
        );
        // A forward's own key wins over [defaults], whichever of the two it is.
        let c = parse(
            "[defaults]\nudp_idle_timeout = 1\n[[forward]]\nname = \"a\"\nprotocol = \"udp\"\n\
             listen = 1\ntarget = \"a:1\"\nidle_timeout = \"10m\"\n",
            "proxy.toml",
        )
        .unwrap();
        let udp = c.forwards[0].udp.as_ref().unwrap();
        assert_eq!(
            udp.common.timeouts.udp_session_idle,
            Some(Duration::from_secs(600))
        );
        let e = err("[defaults]\nsocket_buffer = \"8T\"\n");
        assert!(
            e.starts_with("proxy.toml:2: defaults.socket_buffer: `8T` is not a size"),
            "{e}"
        );
        let e = err("[defaults]\npipe_size = \"lots\"\n");
        assert!(
            e.starts_with("proxy.toml:2: defaults.pipe_size: `lots`"),
            "{e}"
        );
    }
}
