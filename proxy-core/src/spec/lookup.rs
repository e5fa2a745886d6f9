//! Finding a key of [`KEYS`] by name, and [`ForwardSpec::set`]: what turns a front end's
//! key and text into a setting.

use super::ForwardSpec;
use super::keys::{Key, SetError};
use super::table::KEYS;

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
