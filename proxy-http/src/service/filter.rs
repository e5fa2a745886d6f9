//! kubectl proxy's request filter: which hosts, paths and methods are let through
//! (`--accept-hosts`, `--accept-paths`, `--reject-paths`, `--reject-methods`).
//!
//! It follows `FilterServer` in kubectl's `pkg/proxy/proxy_server.go`: each flag is a
//! comma-separated list of regular expressions (split on every `,`, nothing trimmed), each
//! matched anywhere in its subject unless anchored. A request is accepted when its path
//! matches none of the reject paths, its method none of the reject methods, its path some
//! accept path, and its host some accept host. Go's RE2 syntax and the `regex` crate's agree
//! on everything kubectl's defaults and the usual flags use.
//!
//! Two differences, both on purpose:
//!
//! - **IPv6 hosts keep their brackets.** kubectl strips the port with Go's
//!   `net.SplitHostPort`, which also strips the brackets: `[::1]:8001` becomes `::1`, which
//!   its own default `^\[::1\]$` never matches, so IPv6 clients are refused
//!   (kubernetes#77496). We strip only the port: `[::1]:8001` and `[::1]` are both `[::1]`.
//! - **A path with a malformed `%` escape is refused.** kubectl matches the decoded path
//!   (Go's `URL.Path`); Go's server answers 400 before the filter runs when the path does
//!   not decode. We decode the path too (so `/api/v1/.../pods/p/%65xec` is still `exec`),
//!   and refuse what does not decode.

use std::borrow::Cow;
use std::fmt;

use bytes::Bytes;
use http::{Method, Response, StatusCode};
use regex::Regex;

use super::url::percent_decode;

pub use proxy_core::spec::{
    DEFAULT_ACCEPT_HOSTS, DEFAULT_ACCEPT_PATHS, DEFAULT_REJECT_METHODS, DEFAULT_REJECT_PATHS,
};

/// Which requests kubectl proxy lets through.
///
/// An empty list is one empty pattern, which matches everything, as in kubectl: an empty
/// `reject_methods` refuses every request.
///
/// Two differences from kubectl, both on purpose: IPv6 hosts keep their brackets
/// (`[::1]:8001` is `[::1]`, which kubectl's own default `^\[::1\]$` accepts, where kubectl
/// turns it into `::1` and refuses it: kubernetes#77496), and a path with a malformed `%`
/// escape is refused (the path is percent-decoded before matching, as kubectl matches Go's
/// decoded `URL.Path`, so `/api/v1/namespaces/d/pods/p/%65xec` is still `exec`).
///
/// # Examples
///
/// ```
/// use http::Method;
/// use proxy_http::service::Filter;
///
/// let filter = Filter::default();
/// let path = "/api/v1/namespaces/default/services/web/proxy/";
/// assert!(filter.accepts(&Method::GET, path, Some("localhost:8001")));
/// assert!(filter.accepts(&Method::GET, path, Some("[::1]:8001")));
/// assert!(!filter.accepts(&Method::GET, path, Some("example.com")));
/// assert!(!filter.accepts(&Method::POST, "/api/v1/namespaces/d/pods/p/exec", Some("localhost")));
/// ```
#[derive(Clone, Debug)]
pub struct Filter {
    accept_hosts: Vec<Regex>,
    accept_paths: Vec<Regex>,
    reject_paths: Vec<Regex>,
    reject_methods: Vec<Regex>,
}

/// One pattern of a filter list is not a regular expression; the message names the list
/// and the pattern, and [`source`](std::error::Error::source) is the regex error.
#[derive(Clone, Debug)]
pub struct FilterError {
    list: &'static str,
    pattern: String,
    source: regex::Error,
}

// ===== impl Filter =====

impl Filter {
    /// A filter from kubectl's four flags, each a comma-separated list of regular
    /// expressions.
    ///
    /// # Errors
    ///
    /// When a pattern does not compile; the error names its list and the pattern.
    pub fn new(
        accept_hosts: &str,
        accept_paths: &str,
        reject_paths: &str,
        reject_methods: &str,
    ) -> Result<Filter, FilterError> {
        Ok(Filter {
            accept_hosts: compile("accept_hosts", accept_hosts)?,
            accept_paths: compile("accept_paths", accept_paths)?,
            reject_paths: compile("reject_paths", reject_paths)?,
            reject_methods: compile("reject_methods", reject_methods)?,
        })
    }

    /// Whether a request is let through. `path` is the request's URI path as received
    /// (percent-encoded; it is decoded before matching), `host` its `Host` header (or the
    /// URI's authority); a missing host is the empty string, as in Go.
    ///
    /// Dot segments are not removed: kubectl's Go mux answers a path holding `.` or `..`
    /// segments with a redirect to its cleaned form before the filter sees it, so a caller
    /// that forwards such paths to the API server should refuse or clean them first.
    pub fn accepts(&self, method: &Method, path: &str, host: Option<&str>) -> bool {
        let Some(path) = decode_path(path) else {
            return false;
        };
        let host = strip_port(host.unwrap_or(""));
        !matches_any(&self.reject_paths, &path)
            && !matches_any(&self.reject_methods, method.as_str())
            && matches_any(&self.accept_paths, &path)
            && matches_any(&self.accept_hosts, host)
    }
}

impl Default for Filter {
    /// kubectl proxy's defaults: loopback hosts only, every path but `exec` and `attach`
    /// into pods, every method.
    fn default() -> Self {
        Filter::new(
            DEFAULT_ACCEPT_HOSTS,
            DEFAULT_ACCEPT_PATHS,
            DEFAULT_REJECT_PATHS,
            DEFAULT_REJECT_METHODS,
        )
        .expect("kubectl's default filter compiles")
    }
}

/// kubectl's answer to a refused request: `403 Forbidden` with the body `Forbidden\n`,
/// `Content-Type: text/plain; charset=utf-8` and `X-Content-Type-Options: nosniff` (what
/// Go's `http.Error(w, "Forbidden", 403)` writes).
pub fn forbidden<B: From<Bytes>>() -> Response<B> {
    let mut response = Response::new(B::from(Bytes::from_static(b"Forbidden\n")));
    *response.status_mut() = StatusCode::FORBIDDEN;
    let headers = response.headers_mut();
    crate::headers::plain_text(headers);
    response
}

fn compile(list: &'static str, patterns: &str) -> Result<Vec<Regex>, FilterError> {
    patterns
        .split(',')
        .map(|pattern| {
            Regex::new(pattern).map_err(|source| FilterError {
                list,
                pattern: pattern.to_owned(),
                source,
            })
        })
        .collect()
}

fn matches_any(regexes: &[Regex], subject: &str) -> bool {
    regexes.iter().any(|re| re.is_match(subject))
}

/// The path as Go's `URL.Path` has it: percent-decoded (invalid UTF-8 replaced). `None`
/// when an escape is malformed.
fn decode_path(path: &str) -> Option<Cow<'_, str>> {
    if !path.contains('%') {
        return Some(Cow::Borrowed(path));
    }
    let bytes = percent_decode(path)?;
    Some(Cow::Owned(String::from_utf8_lossy(&bytes).into_owned()))
}

/// The host of a `Host` header without its port. Like Go's `net.SplitHostPort`, except
/// that IPv6 literals keep their brackets; like kubectl, what does not split (no port, or
/// a bare IPv6 address with many colons) is used whole.
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return match host.find(']') {
            Some(end) if end + 1 == host.len() || host.as_bytes()[end + 1] == b':' => &host[..=end],
            _ => host,
        };
    }
    match host.split_once(':') {
        Some((name, port)) if !port.contains(':') => name,
        _ => host,
    }
}

// ===== impl FilterError =====

impl FilterError {
    /// The list the bad pattern is in: `accept_hosts`, `accept_paths`, `reject_paths` or
    /// `reject_methods`.
    pub fn list(&self) -> &'static str {
        self.list
    }

    /// The pattern that does not compile.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }
}

impl fmt::Display for FilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: `{}` is not a regular expression",
            self.list, self.pattern
        )
    }
}

impl std::error::Error for FilterError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    const SVC: &str = "/api/v1/namespaces/default/services/web/proxy/";

    #[test]
    fn defaults_are_kubectls_byte_for_byte() {
        assert_eq!(
            DEFAULT_ACCEPT_HOSTS,
            "^localhost$,^127\\.0\\.0\\.1$,^\\[::1\\]$"
        );
        assert_eq!(DEFAULT_ACCEPT_PATHS, "^.*");
        assert_eq!(
            DEFAULT_REJECT_PATHS,
            "^/api/.*/pods/.*/exec,^/api/.*/pods/.*/attach"
        );
        assert_eq!(DEFAULT_REJECT_METHODS, "^$");
    }

    #[test]
    fn default_hosts() {
        let f = Filter::default();
        for host in [
            "localhost",
            "localhost:8001",
            "127.0.0.1",
            "127.0.0.1:8001",
            "[::1]",
            "[::1]:8001",
            "localhost:",
        ] {
            assert!(f.accepts(&Method::GET, SVC, Some(host)), "{host}");
        }
        for host in [
            "example.com",
            "example.com:8001",
            "localhost.example.com",
            "127.0.0.2",
            "127.0.0.1.nip.io",
            "::1",
            "[::2]:8001",
            "[::1]x",
            "LOCALHOST",
            "",
        ] {
            assert!(!f.accepts(&Method::GET, SVC, Some(host)), "{host}");
        }
        assert!(!f.accepts(&Method::GET, SVC, None));
    }

    #[test]
    fn strip_port_keeps_ipv6_brackets() {
        assert_eq!(strip_port("localhost:8001"), "localhost");
        assert_eq!(strip_port("localhost"), "localhost");
        assert_eq!(strip_port("[::1]:8001"), "[::1]");
        assert_eq!(strip_port("[::1]"), "[::1]");
        assert_eq!(strip_port("[::1]junk"), "[::1]junk");
        assert_eq!(strip_port("[::1"), "[::1");
        assert_eq!(strip_port("::1"), "::1");
        assert_eq!(strip_port("a:b:c"), "a:b:c");
        assert_eq!(strip_port(""), "");
    }

    #[test]
    fn default_paths_refuse_exec_and_attach() {
        let f = Filter::default();
        let host = Some("localhost");
        for path in [
            "/api/v1/namespaces/default/pods/p/exec",
            "/api/v1/namespaces/default/pods/p/exec/x",
            "/api/v1/namespaces/default/pods/p/attach",
            "/api/v1/namespaces/default/pods/p/%65xec",
            "/api/v1/namespaces/default/pods/p/%61ttach?x",
            "/api/v1/namespaces/default/pods/p%2Fexec",
            "/api/v1/namespaces/default/pods/p//exec",
        ] {
            assert!(!f.accepts(&Method::GET, path, host), "{path}");
            assert!(!f.accepts(&Method::POST, path, host), "{path}");
        }
        for path in [
            SVC,
            "/api/v1/namespaces/default/pods/p/log",
            "/api/v1/namespaces/default/pods/p/portforward",
            "/apis/apps/v1/deployments",
            "/",
            "",
        ] {
            assert!(f.accepts(&Method::GET, path, host), "{path}");
        }
        assert!(!f.accepts(&Method::GET, "/api/v1/%zz", host));
    }

    #[test]
    fn default_methods_accept_all() {
        let f = Filter::default();
        for m in [
            Method::GET,
            Method::POST,
            Method::DELETE,
            Method::PATCH,
            Method::OPTIONS,
        ] {
            assert!(f.accepts(&m, SVC, Some("127.0.0.1:1")), "{m}");
        }
    }

    #[test]
    fn custom_lists() {
        let f = Filter::new(
            r"^.*\.example\.com$",
            "^/api/,^/healthz$",
            "/secrets",
            "^POST$,^DELETE$",
        )
        .unwrap();
        let host = Some("a.example.com:443");
        assert!(f.accepts(&Method::GET, "/api/v1/pods", host));
        assert!(f.accepts(&Method::GET, "/healthz", host));
        assert!(!f.accepts(&Method::GET, "/healthz/x", host));
        assert!(!f.accepts(&Method::GET, "/apis/x", host));
        // Unanchored patterns match anywhere, as Go's MatchString.
        assert!(!f.accepts(&Method::GET, "/api/v1/namespaces/x/secrets", host));
        assert!(!f.accepts(&Method::POST, "/api/v1/pods", host));
        assert!(!f.accepts(&Method::DELETE, "/api/v1/pods", host));
        assert!(f.accepts(&Method::PUT, "/api/v1/pods", host));
        assert!(!f.accepts(&Method::GET, "/api/v1/pods", Some("example.com")));
    }

    #[test]
    fn reject_wins_over_accept() {
        let f = Filter::new("^h$", "^/a", "^/a/b", "^$").unwrap();
        assert!(f.accepts(&Method::GET, "/a/c", Some("h")));
        assert!(!f.accepts(&Method::GET, "/a/b", Some("h")));
    }

    #[test]
    fn empty_list_matches_everything() {
        // As kubectl: "" splits into one empty pattern, which matches any string.
        let f = Filter::new("", "", "^$", "").unwrap();
        assert!(!f.accepts(&Method::GET, "/x", Some("anything")));
        let f = Filter::new("", "", "^$", "^$").unwrap();
        assert!(f.accepts(&Method::GET, "/x", Some("anything")));
        assert!(f.accepts(&Method::GET, "/x", None));
    }

    #[test]
    fn errors_name_list_and_pattern() {
        let e = Filter::new("^(x", "^.*", "^$", "^$").unwrap_err();
        assert_eq!(e.list(), "accept_hosts");
        assert_eq!(e.pattern(), "^(x");
        assert_eq!(
            e.to_string(),
            "accept_hosts: `^(x` is not a regular expression"
        );
        assert!(e.source().is_some());
        let e = Filter::new("^h$", "^/ok,[", "^$", "^$").unwrap_err();
        assert_eq!(
            e.to_string(),
            "accept_paths: `[` is not a regular expression"
        );
        let e = Filter::new("^h$", "^/", "a{2,1}", "^$").unwrap_err();
        assert_eq!(e.list(), "reject_paths");
        let e = Filter::new("^h$", "^/", "^$", "^$,)").unwrap_err();
        assert_eq!(e.list(), "reject_methods");
        assert_eq!(e.pattern(), ")");
    }

    #[test]
    fn forbidden_is_gos_http_error() {
        let r: Response<Bytes> = forbidden();
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert_eq!(r.body().as_ref(), b"Forbidden\n");
        assert_eq!(
            r.headers()[http::header::CONTENT_TYPE],
            "text/plain; charset=utf-8"
        );
        assert_eq!(r.headers()[http::header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(r.headers().len(), 2);
    }
}
