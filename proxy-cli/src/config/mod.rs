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
//! protocol = "tcp,udp"          # tcp, udp, tcp,udp, or http
//! listen = 53                   # a port (all addresses), "IP:PORT", or a list of them
//! target = "kube-dns.kube-system:53"
//! udp_idle_timeout = "1s"       # any default can be set per forward
//!
//! [[forward]]
//! name = "web"
//! protocol = "http"             # routes requests by host and path
//! listen = 8080
//! route = ["shop.example/=shop:80", "shop.example/api=api:8080;balance=least-connections"]
//! sticky_cookie = "SERVERID"    # target, if set, is the default route /
//! ```
//!
//! Every key of `[defaults]` and of a `[[forward]]` (but a forward's `name`, and `drain`,
//! which is global) is a key of [`proxy_core::spec::KEYS`], read by the one parser of that
//! key, as `--flag` and the C API's keys are: text as is, integers in decimal, `true` or
//! `false`, and lists joined with commas (`allow = ["10.0.0.0/8", "192.168.0.0/16"]` is
//! `--allow 10.0.0.0/8,192.168.0.0/16`). A forward starts from the defaults, then takes
//! its own keys, each table in the order of `KEYS`; so `idle_timeout`, which applies to TCP
//! connections and UDP sessions as `--idle-timeout` does, comes before `udp_idle_timeout`
//! of the same table, and a forward's `idle_timeout` overrides a default
//! `udp_idle_timeout`.
//!
//! Durations are strings such as `"500ms"`, `"1.5s"`, `"1h30m"`, or integers (seconds),
//! at most 10 years, and sizes bytes or strings such as `"8M"`; `0` turns the idle,
//! half-close, lifetime and UDP idle timers off, and lifts `max_connections`,
//! `max_per_source`, `accept_rate`, `eject_after` and `health_check_interval`. Errors name
//! the file, the line and the key.

mod context;
mod table;
#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use proxy_core::{ForwardSpec, Transport};
use serde::Deserialize;
use toml::Spanned;

use crate::args::{LogFormat, parse_admin};
use context::Context;
use table::{RawTable, Table, check_defaults, check_forward};

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

/// One `[[forward]]`: its name and its settings, checked.
#[derive(Clone, Debug)]
pub struct ForwardPlan {
    /// The unique name, used in logs, metrics and to match forwards on reload.
    pub name: String,
    /// Every setting: `[defaults]`, then the forward's own keys.
    pub spec: ForwardSpec,
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

/// The keys a forward must set.
const REQUIRED: [&str; 3] = ["protocol", "listen", "target"];

/// Checks the configuration `text`, naming it `file` in errors.
///
/// # Errors
///
/// A [`ConfigError`] naming the file, line and key of the first problem.
pub fn parse(text: &str, file: &str) -> Result<ConfigFile, ConfigError> {
    let cx = Context { text, file };
    let raw: RawFile = toml::from_str(text).map_err(|e| cx.toml_error(&e))?;
    let defaults = Table::new("defaults", raw.defaults.as_ref());
    for key in ["name"].iter().chain(&REQUIRED) {
        if let Some(entry) = defaults.get(key) {
            return Err(cx.error(
                entry.span.clone(),
                &defaults.key(key),
                "belongs in a [[forward]], not in [defaults]",
            ));
        }
    }
    defaults.unknown_keys(&cx, &["drain"])?;
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
    let drain = match defaults.get("drain") {
        Some(entry) => proxy_core::value::duration(&defaults.text(&cx, entry)?)
            .map_err(|e| cx.error(entry.span.clone(), "defaults.drain", &e.to_string()))?,
        None => Duration::from_secs(10),
    };
    let mut base = ForwardSpec::default();
    defaults.apply(&cx, &mut base)?;
    check_defaults(&cx, &base, &defaults)?;

    let mut names = HashSet::new();
    let mut forwards = Vec::with_capacity(raw.forward.len());
    for (i, entry) in raw.forward.iter().enumerate() {
        let forward = Table::new(&format!("forward[{i}]"), Some(entry));
        if let Some(drain) = forward.get("drain") {
            return Err(cx.error(
                drain.span.clone(),
                &forward.key("drain"),
                "is global: set it in [defaults]",
            ));
        }
        forward.unknown_keys(&cx, &["name"])?;
        let mut spec = base.clone();
        forward.apply(&cx, &mut spec)?;
        // An HTTP forward may have routes, or the service proxy, instead of a target; a
        // TCP forward SNI routes.
        let routed = match spec.protocol {
            proxy_core::Transport::Http => forward.has("route") || spec.service_proxy,
            proxy_core::Transport::Tcp => !spec.sni.is_empty(),
            _ => false,
        };
        if let Some(key) =
            (REQUIRED.iter()).find(|k| !(forward.has(k) || (routed && **k == "target")))
        {
            let at = forward.start();
            return Err(cx.error(at..at, &forward.key(key), "is missing"));
        }
        let name = match forward.get("name") {
            Some(n) => match n.value {
                toml::Value::String(s) if s.is_empty() => {
                    return Err(cx.error(n.span.clone(), &forward.key("name"), "is empty"));
                }
                toml::Value::String(s) => s.clone(),
                _ => {
                    return Err(cx.error(
                        n.span.clone(),
                        &forward.key("name"),
                        "is not text (write it in quotes)",
                    ));
                }
            },
            None => format!("{} {}", spec.protocol, spec.listen),
        };
        if !names.insert(name.clone()) {
            let at = forward
                .get("name")
                .map_or(forward.start(), |n| n.span.start);
            return Err(cx.error(
                at..at,
                &forward.key("name"),
                &format!("`{name}` is used twice"),
            ));
        }
        check_forward(&cx, &mut spec, &forward, &defaults)?;
        forwards.push(ForwardPlan { name, spec });
    }
    Ok(ConfigFile {
        admin,
        log_format,
        threads,
        drain,
        forwards,
    })
}

/// One line per forward of `config`, for `--check`: its name, protocols, where it
/// listens and where it forwards to.
pub fn summary(config: &ConfigFile) -> Vec<String> {
    config
        .forwards
        .iter()
        .map(|f| {
            let target = match f.spec.protocol {
                // An HTTP forward's target is its route `/`, among the others.
                Transport::Http => (f.spec.http_routes().iter())
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
                // A TCP forward's SNI routes, then its target for the rest.
                _ => (f.spec.sni.iter().map(|r| format!("SNI {r}")))
                    .chain(f.spec.target.as_ref().map(ToString::to_string))
                    .collect::<Vec<_>>()
                    .join(", "),
            };
            format!(
                "forward `{}`: {} {} -> {target}",
                f.name, f.spec.protocol, f.spec.listen
            )
        })
        .collect()
}

/// The file as written: the global keys, and the tables of settings.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    admin: Option<Spanned<String>>,
    log_format: Option<Spanned<String>>,
    threads: Option<Spanned<i64>>,
    defaults: Option<Spanned<RawTable>>,
    #[serde(default)]
    forward: Vec<Spanned<RawTable>>,
}
