//! [`Key`], one setting of [`KEYS`](super::KEYS), the one table of settings. Each key is
//! a [`ForwardSpec`] field with one name (the TOML key, the `--flag` with `-` for `_`, the
//! C key), one text parser and one printer, so every front end reads a value the same
//! way. This module owns the key type and its errors ([`Key::set`], [`SetError`]); the
//! table is [`table`](super::table)'s, finding a key by name and
//! [`ForwardSpec::set`] [`lookup`](super::lookup)'s, the parsers and printers
//! [`values`](super::values)'.

use std::fmt;

use super::{ForwardSpec, Transport};

/// Which transports a key is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applies {
    /// TCP and UDP.
    Both,
    /// TCP only; UDP ignores it.
    Tcp,
    /// UDP only; TCP ignores it.
    Udp,
    /// HTTP forwards only.
    Http,
}

impl Applies {
    /// Whether a forward of `protocol` uses the key.
    pub fn to(self, protocol: Transport) -> bool {
        match self {
            Applies::Both => true,
            Applies::Tcp => protocol.tcp(),
            Applies::Udp => protocol.udp(),
            Applies::Http => false,
        }
    }
}

/// One setting of [`KEYS`](super::KEYS).
pub struct Key {
    /// The key: `idle_timeout` in TOML and C, `--idle-timeout` on the command line.
    pub name: &'static str,
    /// What the value looks like (`DURATION`, `N`, `CIDR,...`), for help texts.
    pub value: &'static str,
    /// Which transports use it.
    pub applies: Applies,
    /// Whether HTTP forwards (`protocol = http`) use it.
    pub http: bool,
    /// What it does, one or a few sentences.
    pub help: &'static str,
    /// A valid value other than the default, for examples and tests.
    pub example: &'static str,
    /// Parses the (trimmed) text into the field; `Err` is the message after the key.
    pub(super) set: fn(&mut ForwardSpec, &str) -> Result<(), String>,
    /// Prints the field as `set` reads it.
    pub(super) get: fn(&ForwardSpec) -> String,
}

impl Key {
    /// Whether a forward of `protocol` uses the key.
    pub fn applies_to(&self, protocol: Transport) -> bool {
        match protocol {
            Transport::Http => self.http,
            protocol => self.applies.to(protocol),
        }
    }

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
    pub(super) key: String,
    pub(super) message: String,
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::spec::{KEYS, Listen};

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
