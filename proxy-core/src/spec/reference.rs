//! [`reference_markdown`]: the settings reference (`docs/settings.md`), written from
//! [`KEYS`] alone, so it can never say other than the code does.

use std::fmt::Write as _;

use super::ForwardSpec;
use super::keys::{Applies, Key};
use super::table::KEYS;

/// What the reference says of the value forms, ahead of the keys.
const FORMS: &str = "\
## Value forms

Every front end reads a value with the same parser, so a value that works in one works
in all of them:

| form | accepted | examples |
|---|---|---|
| `DURATION` | numbers with units `h`, `m`, `s`, `ms`, largest first and summed; fractions to the millisecond; a bare number is seconds; at most 10 years | `500ms`, `1.5s`, `1h30m`, `90` |
| `SIZE` | bytes, or a number with `K`, `M`, `G` (powers of 1024; also `k`, `KiB`, ...) | `65536`, `64K`, `8M` |
| `N` | a whole number of 0 or more | `1000` |
| `BOOL` | `true` or `false` | `true` |
| `a\\|b`, `POLICY` | one of the names shown, or listed in the key's help | `tcp,udp`, `least-connections` |
| `...,...` | a list: comma-separated in flags and the C API; in TOML an array of strings, or the same comma-separated text | `10.0.0.0/8,192.168.0.0/16` |

An empty value (`\"\"`) unsets the keys whose default is empty; the help of each says
what empty means.

## The order keys apply in

Front ends apply the keys they read in the order of this page (the order of the table
in the code), whatever order they were written in. That matters for two keys that set
another one too:

- `idle_timeout` sets `udp_idle_timeout` as well; `udp_idle_timeout` comes after it, so
  a forward that sets both gets its own UDP value.
- `connect_timeout` raises `connect_total_timeout` to at least itself;
  `connect_total_timeout` comes after it, so a forward that sets both gets its own
  budget (which must not be shorter than `connect_timeout`).

Rules between keys are checked once every key is read: an error names the key at
fault.
";

/// The settings reference in Markdown: an intro on the value forms and on the order keys
/// apply in, a table of every key of [`KEYS`], then a section per key with its flag,
/// value form, transports, default, help and an example TOML line.
///
/// `docs/settings.md` is this text; a test of proxy-core fails when they differ.
pub fn reference_markdown() -> String {
    let required = required_keys();
    let mut out = String::new();
    out.push_str(
        "<!-- Generated from proxy_core::spec::KEYS by proxy_core::spec::reference_markdown();\n     \
         do not edit: run `UPDATE_SETTINGS_DOC=1 cargo test -p proxy-core --test settings_doc`. -->\n\n\
         # Settings\n\n\
         Every setting of a forward, as the command line, the config file and the C API take\n\
         it. Each key has one name: the TOML key (`idle_timeout`), the C key of\n\
         `proxy_config_set` (the same), and the flag (`--idle-timeout`, `-` for `_`).\n\n",
    );
    out.push_str(FORMS);
    out.push_str("\n## Keys\n\n| key | value | transports | default |\n|---|---|---|---|\n");
    for key in KEYS {
        let _ = writeln!(
            out,
            "| [`{}`](#{}) | `{}` | {} | {} |",
            key.name,
            key.name,
            cell(key.value),
            transports(key),
            default_text(key, &required),
        );
    }
    for key in KEYS {
        section(&mut out, key, &required);
    }
    out
}

/// One key's section.
fn section(out: &mut String, key: &Key, required: &[&str]) {
    let _ = write!(
        out,
        "\n### `{name}`\n\n{help}\n\n\
         | | |\n|---|---|\n\
         | flag | `{flag}` |\n\
         | TOML and C key | `{name}` |\n\
         | value | `{form}` |\n\
         | transports | {transports} |\n\
         | default | {default} |\n\n\
         ```toml\n{name} = {example}\n```\n",
        name = key.name,
        help = key.help,
        flag = key.flag(),
        form = cell(key.value),
        transports = transports(key),
        default = default_text(key, required),
        example = toml_value(key, key.example),
    );
}

fn transports(key: &Key) -> &'static str {
    match (key.applies, key.http) {
        (Applies::Both, true) => "TCP, UDP and HTTP",
        (Applies::Both, false) => "TCP and UDP",
        (Applies::Tcp, true) => "TCP and HTTP",
        (Applies::Tcp, false) => "TCP",
        (Applies::Udp, _) => "UDP",
        (Applies::Http, _) => "HTTP",
    }
}

/// `|` escaped for a table cell.
fn cell(text: &str) -> String {
    text.replace('|', "\\|")
}

/// The default as the key reads it, with what the help says an empty value or a 0 that
/// turns it off means.
fn default_text(key: &Key, required: &[&str]) -> String {
    let value = key.default_value();
    if required.contains(&key.name) {
        return "none: required".to_owned();
    }
    if value.is_empty() {
        return match empty_meaning(key.help) {
            Some(meaning) => format!("empty: {meaning}"),
            None => "empty: none".to_owned(),
        };
    }
    if value == "0" && key.help.contains("0 turns it off") {
        return "`0`: off".to_owned();
    }
    format!("`{value}`")
}

/// What the help says after `empty:`, up to the end of its sentence or clause.
fn empty_meaning(help: &str) -> Option<&str> {
    let at = help.to_ascii_lowercase().find("empty: ")? + "empty: ".len();
    let rest = &help[at..];
    let end = [". ", ";"]
        .iter()
        .filter_map(|stop| rest.find(stop))
        .min()
        .unwrap_or_else(|| rest.strip_suffix('.').map_or(rest.len(), str::len));
    Some(&rest[..end])
}

/// The keys a spec must set: those whose empty default [`ForwardSpec::validate`] rejects.
fn required_keys() -> Vec<&'static str> {
    let mut spec = ForwardSpec::default();
    let mut required = Vec::new();
    while let Err(e) = spec.validate() {
        match KEYS.iter().find(|k| k.name == e.key()) {
            Some(k) if k.default_value().is_empty() && !required.contains(&k.name) => {
                required.push(k.name);
                k.set(&mut spec, k.example)
                    .expect("every example is a valid value");
            }
            _ => break,
        }
    }
    required
}

/// `text` as a TOML value for `key`: bare for numbers and booleans, an array of strings
/// for lists, a string otherwise.
fn toml_value(key: &Key, text: &str) -> String {
    let quoted = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
    match key.value {
        "BOOL" | "N" => text.to_owned(),
        form if form.ends_with(",...") => {
            let items: Vec<String> = text.split(',').map(|s| quoted(s.trim())).collect();
            format!("[{}]", items.join(", "))
        }
        _ => quoted(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_meaning_reads_to_the_end_of_the_clause() {
        assert_eq!(empty_meaning("Skip it; empty: off."), Some("off"));
        assert_eq!(
            empty_meaning("Ask them; empty: those of /etc/resolv.conf."),
            Some("those of /etc/resolv.conf")
        );
        assert_eq!(
            empty_meaning("Limit. Empty: no limit. More."),
            Some("no limit")
        );
        assert_eq!(empty_meaning("Nothing said."), None);
    }

    #[test]
    fn target_and_listen_are_required() {
        let mut required = required_keys();
        required.sort_unstable();
        assert_eq!(required, ["listen", "target"]);
    }

    #[test]
    fn examples_are_toml_of_their_form() {
        let find = |name| super::super::find(name).unwrap();
        assert_eq!(toml_value(find("backlog"), "4096"), "4096");
        assert_eq!(toml_value(find("reuse_port"), "true"), "true");
        assert_eq!(toml_value(find("idle_timeout"), "10m"), "\"10m\"");
        assert_eq!(
            toml_value(find("allow"), "10.0.0.0/8, 10.1.0.0/16"),
            "[\"10.0.0.0/8\", \"10.1.0.0/16\"]"
        );
    }
}
