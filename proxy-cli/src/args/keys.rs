//! The settings flags: one `--flag` per key of [`proxy_core::spec::KEYS`], made from the
//! table at run time, so a key added to the library is a flag of every subcommand whose
//! transports use it, with the library's parser, help and default.

use std::net::Ipv4Addr;

use clap::{Arg, ArgAction, ArgMatches, Command, FromArgMatches};
use proxy_core::spec::{Applies, KEYS, Key};
use proxy_core::{BuildError, ForwardSpec, Host, Listen, Target, Transport};

use super::UsageError;

/// The transports of a subcommand, for [`KeyFlags`]: which keys it has flags for.
pub type Transports = u8;
/// `proxy tcp`: keys for TCP and for both.
pub const TCP: Transports = 1;
/// `proxy udp`: keys for UDP and for both.
pub const UDP: Transports = 2;
/// `proxy tcp,udp` and `proxy forward`: every key for TCP or UDP.
pub const BOTH: Transports = TCP | UDP;
/// `proxy http`: the keys HTTP forwards use.
pub const HTTP: Transports = 4;

/// Keys the command line takes in its own grammar (PROTO, PORT, TARGET, `--listen`).
const GRAMMAR_KEYS: [&str; 3] = ["protocol", "listen", "target"];

/// The settings flags given, for a subcommand serving `T`'s transports.
#[derive(Clone, Debug, Default)]
pub struct KeyFlags<const T: Transports> {
    /// Each key given, with its value (repeated flags joined with `,`), in [`KEYS`] order.
    pub given: Vec<(&'static str, String)>,
}

/// The keys a subcommand serving `transports` has flags for.
pub fn keys_for(transports: Transports) -> impl Iterator<Item = &'static Key> {
    KEYS.iter().filter(move |k| {
        !GRAMMAR_KEYS.contains(&k.name)
            && match (transports, k.applies) {
                (HTTP, _) => k.http,
                (_, Applies::Both) => true,
                (_, Applies::Tcp) => transports & TCP != 0,
                (_, Applies::Udp) => transports & UDP != 0,
                (_, Applies::Http) => false,
            }
    })
}

impl<const T: Transports> KeyFlags<T> {
    /// Sets every key given in `spec`, in [`KEYS`] order.
    ///
    /// # Errors
    ///
    /// A [`UsageError`] naming the flag; the values were checked one by one when parsed,
    /// so this is only a key that another one given conflicts with.
    pub fn apply(&self, spec: &mut ForwardSpec) -> Result<(), UsageError> {
        for (key, value) in &self.given {
            spec.set(key, value)
                .map_err(|e| UsageError(format!("--{}: {}", key.replace('_', "-"), e.message())))?;
        }
        Ok(())
    }

    /// Whether `key` was given.
    pub fn has(&self, key: &str) -> bool {
        self.given.iter().any(|(k, _)| *k == key)
    }
}

impl<const T: Transports> FromArgMatches for KeyFlags<T> {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let mut flags = KeyFlags::default();
        flags.update_from_arg_matches(matches)?;
        Ok(flags)
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        for key in keys_for(T) {
            if let Ok(Some(values)) = matches.try_get_many::<String>(key.name) {
                let value = values.map(String::as_str).collect::<Vec<_>>().join(",");
                self.given.retain(|(k, _)| *k != key.name);
                self.given.push((key.name, value));
            }
        }
        Ok(())
    }
}

impl<const T: Transports> clap::Args for KeyFlags<T> {
    fn augment_args(cmd: Command) -> Command {
        keys_for(T).fold(cmd, |cmd, key| cmd.arg(flag(key, T)))
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}

/// The flag of `key` for a subcommand serving `transports`: `--idle-timeout <DURATION>`,
/// checked by the key's own parser.
fn flag(key: &'static Key, transports: Transports) -> Arg {
    let default = key.default_value();
    let help = if default.is_empty() || key.help.contains("default") {
        key.help.to_owned()
    } else {
        format!("{} [default: {default}]", key.help)
    };
    let heading = match (transports, key.applies) {
        (HTTP, Applies::Http) => "HTTP options",
        (HTTP, _) => "Forwarding options",
        (_, Applies::Both) => "Forwarding options",
        (_, Applies::Tcp) => "TCP options",
        (_, Applies::Udp) => "UDP options",
        (_, Applies::Http) => "HTTP options",
    };
    let arg = Arg::new(key.name)
        .long(key.name.replace('_', "-"))
        .value_name(key.value)
        .help(help)
        .help_heading(heading)
        .allow_hyphen_values(true)
        .value_parser(move |text: &str| check(key, transports, text));
    if key.value == "BOOL" {
        // `--reuse-port` alone means true; a value needs `=`: `--dual-stack=false`.
        arg.num_args(0..=1)
            .require_equals(true)
            .default_missing_value("true")
    } else if key.value.ends_with(",...") {
        // Repeatable, and each value may be a comma-separated list.
        arg.action(ArgAction::Append)
    } else {
        arg.action(ArgAction::Set)
    }
}

/// `text` when `key` takes it, alone, for a subcommand serving `transports`; else why
/// not (clap names the flag and the value). Rules between keys are checked once all are
/// read ([`SeedArgs::spec`](super::SeedArgs::spec)).
fn check(key: &Key, transports: Transports, text: &str) -> Result<String, String> {
    let protocol = match transports {
        TCP => Transport::Tcp,
        UDP => Transport::Udp,
        HTTP => Transport::Http,
        _ => Transport::Both,
    };
    let target = Target::new(Host::Ip(Ipv4Addr::LOCALHOST.into()), 1);
    let mut scratch = ForwardSpec::new(protocol, Listen::Any(0), target);
    if protocol == Transport::Http {
        // An HTTP target is the route `/`: a `--route /=...` of the user's would clash
        // with it.
        scratch.target = None;
    }
    key.set(&mut scratch, text)
        .map_err(|e| e.message().to_owned())?;
    match scratch.validate() {
        Err(e) if e.key() == key.name && !matches!(e, BuildError::Requires { .. }) => {
            Err(e.to_string())
        }
        _ => Ok(text.to_owned()),
    }
}
