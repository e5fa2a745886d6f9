//! The `ports` query parameters of a port-forward request, read as the kubelet reads them.

use std::fmt;

use crate::status::Status;

/// The query parameter naming the pod's ports (`api.PortHeader`).
pub const PORTS_PARAMETER: &str = "ports";

/// Why the `ports` of a request are not usable. `Display` is the kubelet's wording, which it
/// sends with HTTP 400 Bad Request ([`PortsError::status`] is the same as a `Status` body).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortsError {
    /// No `ports` parameter at all.
    Missing,
    /// A `ports` parameter with an empty value (`ports=`).
    Empty,
    /// A port in the value (a comma-separated list) is not a number from 0 to 65535.
    Unparsable {
        /// The whole parameter value.
        value: String,
        /// The piece of it between commas that is wrong.
        port: String,
        /// Whether it is a number too large (else not a number).
        out_of_range: bool,
    },
    /// A port is 0.
    Zero {
        /// The whole parameter value.
        value: String,
    },
}

impl PortsError {
    /// The HTTP status the kubelet answers with: 400.
    pub const HTTP_STATUS: u16 = 400;

    /// The error as a `Status` body (code 400, reason `BadRequest`).
    pub fn status(&self) -> Status {
        Status::bad_request(self.to_string())
    }
}

impl fmt::Display for PortsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortsError::Missing => write!(f, "query parameter \"{PORTS_PARAMETER}\" is required"),
            PortsError::Empty => write!(f, "query parameter \"{PORTS_PARAMETER}\" cannot be empty"),
            PortsError::Unparsable {
                value,
                port,
                out_of_range,
            } => write!(
                f,
                "unable to parse {} as a port: strconv.ParseUint: parsing {}: {}",
                go_quote(value),
                go_quote(port),
                if *out_of_range {
                    "value out of range"
                } else {
                    "invalid syntax"
                }
            ),
            PortsError::Zero { value } => write!(f, "port {} must be > 0", go_quote(value)),
        }
    }
}

impl std::error::Error for PortsError {}

/// Quotes like Go's `%q`: `"` and `\` escaped, control characters as `\n`, `\t`, `\xNN`...
fn go_quote(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        match c {
            '"' => q.push_str("\\\""),
            '\\' => q.push_str("\\\\"),
            '\n' => q.push_str("\\n"),
            '\r' => q.push_str("\\r"),
            '\t' => q.push_str("\\t"),
            '\x07' => q.push_str("\\a"),
            '\x08' => q.push_str("\\b"),
            '\x0c' => q.push_str("\\f"),
            '\x0b' => q.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\x7f' => q.push_str(&format!("\\x{:02x}", c as u32)),
            c if c.is_control() => q.push_str(&format!("\\u{:04x}", c as u32)),
            c => q.push(c),
        }
    }
    q.push('"');
    q
}

/// Go's `strconv.ParseUint(p, 10, 16)`: digits only, the first problem met wins.
fn parse_u16(p: &str) -> Result<u16, bool> {
    if p.is_empty() {
        return Err(false);
    }
    let mut n: u32 = 0;
    for b in p.bytes() {
        if !b.is_ascii_digit() {
            return Err(false);
        }
        n = n * 10 + u32::from(b - b'0');
        if n > u32::from(u16::MAX) {
            return Err(true);
        }
    }
    Ok(n as u16)
}

/// Reads the values of every `ports` parameter, in order, as the kubelet does
/// (`NewV4Options`): at least one, none empty, each a comma-separated list of ports 1-65535.
/// The same port may come twice (the kubelet allows it; each gets its own channels).
pub fn parse_port_values<'a>(
    values: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<u16>, PortsError> {
    let mut ports = Vec::new();
    let mut any = false;
    for value in values {
        any = true;
        if value.is_empty() {
            return Err(PortsError::Empty);
        }
        for p in value.split(',') {
            let port = parse_u16(p).map_err(|out_of_range| PortsError::Unparsable {
                value: value.to_owned(),
                port: p.to_owned(),
                out_of_range,
            })?;
            if port == 0 {
                return Err(PortsError::Zero {
                    value: value.to_owned(),
                });
            }
            ports.push(port);
        }
    }
    if !any {
        return Err(PortsError::Missing);
    }
    Ok(ports)
}

/// Reads the ports from a raw query string (what follows `?`, without it), decoding it as
/// Go's `url.ParseQuery` does: pairs split on `&`, `+` is a space, `%XX` escapes; a pair
/// with a bad escape or a `;` is skipped, as the kubelet's `req.URL.Query()` skips it.
pub fn parse_query(query: &str) -> Result<Vec<u16>, PortsError> {
    let values = crate::query::values(query, PORTS_PARAMETER);
    parse_port_values(values.iter().map(String::as_str))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_and_repeats() {
        assert_eq!(parse_query("ports=80&ports=443"), Ok(vec![80, 443]));
        assert_eq!(parse_query("ports=80,443"), Ok(vec![80, 443]));
        // What the Python client sends for ports="80,443" (urlencode escapes the comma).
        assert_eq!(parse_query("ports=80%2C443"), Ok(vec![80, 443]));
        assert_eq!(
            parse_query("x=1&ports=080&ports=65535,1"),
            Ok(vec![80, 65535, 1])
        );
        assert_eq!(parse_query("ports=80&ports=80"), Ok(vec![80, 80]));
        // A pair with a bad escape or a semicolon is skipped, not an error.
        assert_eq!(
            parse_query("ports=%ff").unwrap_err().to_string(),
            "unable to parse \"\u{fffd}\" as a port: strconv.ParseUint: parsing \"\u{fffd}\": invalid syntax"
        );
        assert_eq!(parse_query("ports=%zz&ports=1;x&ports=2"), Ok(vec![2]));
    }

    #[test]
    fn the_kubelets_errors() {
        let cases = [
            ("", r#"query parameter "ports" is required"#),
            ("port=80", r#"query parameter "ports" is required"#),
            ("ports=%GG", r#"query parameter "ports" is required"#),
            (
                "ports=80&ports=",
                r#"query parameter "ports" cannot be empty"#,
            ),
            ("ports", r#"query parameter "ports" cannot be empty"#),
            (
                "ports=http",
                r#"unable to parse "http" as a port: strconv.ParseUint: parsing "http": invalid syntax"#,
            ),
            (
                "ports=80,",
                r#"unable to parse "80," as a port: strconv.ParseUint: parsing "": invalid syntax"#,
            ),
            (
                "ports=80,70000",
                r#"unable to parse "80,70000" as a port: strconv.ParseUint: parsing "70000": value out of range"#,
            ),
            (
                "ports=99999x",
                r#"unable to parse "99999x" as a port: strconv.ParseUint: parsing "99999x": value out of range"#,
            ),
            (
                "ports=9x9999",
                r#"unable to parse "9x9999" as a port: strconv.ParseUint: parsing "9x9999": invalid syntax"#,
            ),
            (
                "ports=+80",
                r#"unable to parse " 80" as a port: strconv.ParseUint: parsing " 80": invalid syntax"#,
            ),
            (
                "ports=-1",
                r#"unable to parse "-1" as a port: strconv.ParseUint: parsing "-1": invalid syntax"#,
            ),
            (
                "ports=%0A%22",
                r#"unable to parse "\n\"" as a port: strconv.ParseUint: parsing "\n\"": invalid syntax"#,
            ),
            ("ports=80,0", r#"port "80,0" must be > 0"#),
            ("ports=00", r#"port "00" must be > 0"#),
        ];
        for (query, message) in cases {
            assert_eq!(
                parse_query(query).unwrap_err().to_string(),
                message,
                "{query}"
            );
        }
    }

    #[test]
    fn status_body() {
        assert_eq!(
            parse_query("").unwrap_err().status().to_json(),
            r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"query parameter \"ports\" is required","reason":"BadRequest","code":400}"#
        );
    }

    #[test]
    fn quoting() {
        assert_eq!(go_quote("a\x01\x7fé\\"), r#""a\x01\x7fé\\""#);
    }
}
