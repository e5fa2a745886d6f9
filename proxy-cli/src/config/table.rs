//! A `[defaults]` or `[[forward]]` table read through the key table: every key (but a
//! forward's `name` and the global `drain`) is a [`KEYS`] key, its TOML value becomes the
//! key's text form, and [`Key::set`](proxy_core::spec::Key::set) reads it, so the file
//! takes what the flags and the C API take, with the same messages.

use std::collections::BTreeMap;
use std::ops::Range;

use proxy_core::spec::{Applies, KEYS, find};
use proxy_core::{BuildError, ForwardSpec, Listen};
use toml::{Spanned, Value};

use super::ConfigError;
use super::context::Context;

/// A table as the toml crate reads it: each key and value with where it is written.
pub(super) type RawTable = BTreeMap<Spanned<String>, Spanned<Value>>;

/// One key of a table as written.
pub(super) struct Entry<'a> {
    /// The key.
    pub(super) name: &'a str,
    /// Where the key is written.
    pub(super) span: Range<usize>,
    /// Its value.
    pub(super) value: &'a Value,
}

/// A table's keys in file order, with the prefix errors give them (`defaults.`,
/// `forward[2].`).
pub(super) struct Table<'a> {
    prefix: String,
    span: Option<Range<usize>>,
    entries: Vec<Entry<'a>>,
}

impl<'a> Table<'a> {
    /// The keys of `raw` (none when the file has no such table), named `PREFIX.KEY`.
    pub(super) fn new(prefix: &str, raw: Option<&'a Spanned<RawTable>>) -> Self {
        let mut entries: Vec<Entry<'a>> = raw
            .map(|t| t.get_ref().iter())
            .into_iter()
            .flatten()
            .map(|(k, v)| Entry {
                name: k.get_ref().as_str(),
                span: k.span(),
                value: v.get_ref(),
            })
            .collect();
        entries.sort_by_key(|e| e.span.start);
        Table {
            prefix: prefix.to_owned(),
            span: raw.map(Spanned::span),
            entries,
        }
    }

    /// `key` as errors name it: `forward[0].listen`.
    pub(super) fn key(&self, key: &str) -> String {
        format!("{}.{key}", self.prefix)
    }

    /// Where the table starts (0 when the file has none).
    pub(super) fn start(&self) -> usize {
        self.span.as_ref().map_or(0, |s| s.start)
    }

    /// The entry of `key`, if the table sets it.
    pub(super) fn get(&self, key: &str) -> Option<&Entry<'a>> {
        self.entries.iter().find(|e| e.name == key)
    }

    /// Whether the table sets `key`.
    pub(super) fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// The first key, in file order, that is neither a setting nor one of `also`, with the
    /// setting it is closest to.
    pub(super) fn unknown_keys(&self, cx: &Context<'_>, also: &[&str]) -> Result<(), ConfigError> {
        for entry in &self.entries {
            if find(entry.name).is_some() || also.contains(&entry.name) {
                continue;
            }
            let message = match ForwardSpec::default().set(entry.name, "") {
                Err(e) => e.message().to_owned(),
                Ok(()) => "is not a setting".to_owned(),
            };
            return Err(cx.error(entry.span.clone(), &self.key(entry.name), &message));
        }
        Ok(())
    }

    /// The text of `entry`'s value, or an error naming it.
    pub(super) fn text(&self, cx: &Context<'_>, entry: &Entry<'_>) -> Result<String, ConfigError> {
        text(entry.value).map_err(|m| cx.error(entry.span.clone(), &self.key(entry.name), &m))
    }

    /// Sets every key of the table on `spec`, in the order of [`KEYS`].
    pub(super) fn apply(
        &self,
        cx: &Context<'_>,
        spec: &mut ForwardSpec,
    ) -> Result<(), ConfigError> {
        for key in KEYS {
            let Some(entry) = self.get(key.name) else {
                continue;
            };
            let value = compatible(key.name, self.text(cx, entry)?);
            key.set(spec, &value)
                .map_err(|e| cx.error(entry.span.clone(), &self.key(key.name), e.message()))?;
        }
        Ok(())
    }
}

/// A value as text, as the key's parser takes it: text as is, numbers in decimal,
/// booleans as `true` or `false`, and a list of them joined with commas.
fn text(value: &Value) -> Result<String, String> {
    match value {
        Value::Array(items) => items
            .iter()
            .map(scalar)
            .collect::<Result<Vec<_>, _>>()
            .map(|items| items.join(",")),
        other => scalar(other),
    }
}

fn scalar(value: &Value) -> Result<String, String> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Integer(n) => Ok(n.to_string()),
        Value::Float(x) => Ok(x.to_string()),
        Value::Boolean(b) => Ok(b.to_string()),
        _ => Err(
            "takes text, a number, true or false, or a list of them; not a list of \
                  lists, a table or a date"
                .to_owned(),
        ),
    }
}

/// Keys the file has always turned off with 0; the keys themselves take empty text.
const OFF_AT_ZERO: &[&str] = &[
    "eject_after",
    "health_check_interval",
    "max_connections",
    "max_per_source",
    "accept_rate",
];

/// `value` in the key's own words, where the file has always taken other ones: 0 for off
/// ([`OFF_AT_ZERO`]), `proxy_protocol = "off"` and `protocol = "tcp+udp"`.
fn compatible(key: &str, value: String) -> String {
    match (key, value.as_str()) {
        (k, "0") if OFF_AT_ZERO.contains(&k) => String::new(),
        ("proxy_protocol", "off") => String::new(),
        ("protocol", "tcp+udp") => "tcp,udp".to_owned(),
        _ => value,
    }
}

/// The file's rules besides the library's: `proxy_header_timeout` set (where `set` says)
/// needs `accept_proxy_from`.
fn file_rules(spec: &ForwardSpec, set: impl Fn(&str) -> bool) -> Result<(), BuildError> {
    spec.validate()?;
    if set("proxy_header_timeout") && spec.accept_proxy_from.is_empty() {
        return Err(BuildError::Requires {
            key: "proxy_header_timeout",
            requires: "accept_proxy_from",
        });
    }
    Ok(())
}

/// Checks a forward's settings `spec` ([defaults], then `forward`'s own keys) as the
/// library will when it starts, naming the key at fault where the file sets it.
///
/// A key that needs another (`affinity_timeout` needs `balance = client-ip`,
/// `accept_burst` needs `accept_rate`, `proxy_header_timeout` needs `accept_proxy_from`)
/// and comes from [defaults] waits for forwards that have what it needs: it is dropped from
/// the others. Set in the forward itself, it is an error there.
pub(super) fn check_forward(
    cx: &Context<'_>,
    spec: &mut ForwardSpec,
    forward: &Table<'_>,
    defaults: &Table<'_>,
) -> Result<(), ConfigError> {
    let mut dropped: Vec<&'static str> = Vec::new();
    loop {
        let set = |k: &str| forward.has(k) || (defaults.has(k) && !dropped.contains(&k));
        let Err(e) = file_rules(spec, set) else {
            return Ok(());
        };
        let key = e.key();
        let inherited = !forward.has(key) && defaults.has(key) && !dropped.contains(&key);
        match (&e, find(key)) {
            (BuildError::Requires { .. }, Some(k)) if inherited => {
                k.set(spec, &k.default_value())
                    .map_err(|e| cx.key_error(&[defaults], key, e.message()))?;
                dropped.push(key);
            }
            _ => return Err(cx.key_error(&[forward, defaults], key, &e.to_string())),
        }
    }
}

/// Checks [defaults] on its own, so a bad default is an error also with no forward: the
/// rules of the keys of both protocols (those of one protocol wait for the forwards of
/// that protocol).
pub(super) fn check_defaults(
    cx: &Context<'_>,
    spec: &ForwardSpec,
    defaults: &Table<'_>,
) -> Result<(), ConfigError> {
    let mut alone = spec.clone();
    alone.listen = Listen::Any(0);
    alone.target = "127.0.0.1:1".parse().ok();
    match file_rules(&alone, |k| defaults.has(k)) {
        Err(e) if find(e.key()).is_some_and(|k| k.applies == Applies::Both) => {
            Err(cx.key_error(&[defaults], e.key(), &e.to_string()))
        }
        _ => Ok(()),
    }
}
