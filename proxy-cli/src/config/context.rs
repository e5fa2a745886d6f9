//! Errors that name the file, the line and the key: byte spans turned into line
//! numbers, and the toml crate's messages in the file's terms.

use std::ops::Range;

use super::ConfigError;
use super::table::Table;

/// The text being checked, to turn byte spans into line numbers.
pub(super) struct Context<'a> {
    /// The file's text.
    pub(super) text: &'a str,
    /// The file's name, as errors give it.
    pub(super) file: &'a str,
}

impl Context<'_> {
    fn line(&self, offset: usize) -> usize {
        let offset = offset.min(self.text.len());
        self.text[..offset].matches('\n').count() + 1
    }

    /// `FILE:LINE: KEY: MESSAGE`, at the line where `span` starts.
    pub(super) fn error(&self, span: Range<usize>, key: &str, message: &str) -> ConfigError {
        ConfigError {
            message: format!("{}:{}: {key}: {message}", self.file, self.line(span.start)),
        }
    }

    /// An error about `key`, at the line of the first of `tables` that sets it (a
    /// forward's own table, then [defaults]); at the first table's start otherwise.
    pub(super) fn key_error(&self, tables: &[&Table<'_>], key: &str, message: &str) -> ConfigError {
        for table in tables {
            if let Some(entry) = table.get(key) {
                return self.error(entry.span.clone(), &table.key(key), message);
            }
        }
        let (at, name) = tables
            .first()
            .map_or((0, key.to_owned()), |t| (t.start(), t.key(key)));
        self.error(at..at, &name, message)
    }

    /// A TOML or schema error from the toml crate, with the key read off its line, and in
    /// words a user knows rather than the deserializer's types.
    pub(super) fn toml_error(&self, e: &toml::de::Error) -> ConfigError {
        let Some(span) = e.span() else {
            return ConfigError {
                message: format!("{}: {}", self.file, e.message().trim_end()),
            };
        };
        let line = self.line(span.start);
        let text = self.text.lines().nth(line - 1).unwrap_or("");
        let value = text.split_once('=').map_or("", |(_, v)| v.trim());
        let message = plain_message(e.message().trim_end(), value);
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
}

/// The toml crate's message for a value of the wrong shape, in the file's terms: what the
/// key takes and the `value` written.
fn plain_message(message: &str, value: &str) -> String {
    let takes = |what: &str| format!("`{value}` is not {what}");
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
