//! The URL grammar of the API server's service proxy:
//! `/api/v1/namespaces/NS/services/[SCHEME:]NAME[:PORT]/proxy[/PATH]`.
//!
//! The `[SCHEME:]NAME[:PORT]` segment follows Kubernetes' `SplitSchemeNamePort`
//! (`k8s.io/apimachinery/pkg/util/net`): one part is a name, two are `NAME:PORT`, three are
//! `SCHEME:NAME:PORT`, and anything else is refused. On top of that we validate what the API
//! server would only find out later (a name that no Service can have, a port no Service can
//! declare), so that a typo is a 400 naming the bad token rather than a lookup that fails.

use std::fmt;

/// Everything before the namespace.
const NAMESPACES: &str = "/api/v1/namespaces/";

/// How the proxy talks to the service's endpoints: the `SCHEME` of `SCHEME:NAME:PORT`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// Plain HTTP; also what an empty or missing scheme means.
    #[default]
    Http,
    /// HTTP over TLS.
    Https,
}

/// The `PORT` of `NAME:PORT`: a number, or the name of one of the Service's ports.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PortRef {
    /// A port number, 1 to 65535.
    Number(u16),
    /// A port name (an `IANA_SVC_NAME`: lowercase letters, digits and `-`, at most 15
    /// characters, at least one letter).
    Name(String),
}

/// A parsed service proxy URL path.
///
/// # Examples
///
/// ```
/// use proxy_http::service::{PortRef, Scheme, ServiceUrl};
///
/// let url = ServiceUrl::parse("/api/v1/namespaces/default/services/https:web:admin/proxy/a%20b")?
///     .expect("a service proxy path");
/// assert_eq!(url.namespace, "default");
/// assert_eq!(url.scheme, Scheme::Https);
/// assert_eq!(url.name, "web");
/// assert_eq!(url.port, Some(PortRef::Name("admin".into())));
/// assert_eq!(url.path, "/a%20b");
/// assert_eq!(url.prefix, "/api/v1/namespaces/default/services/https:web:admin/proxy");
/// assert_eq!(url.upstream_path_and_query(Some("x=1")), "/a%20b?x=1");
/// assert_eq!(url.host("cluster.local"), "web.default.svc.cluster.local");
/// assert_eq!(
///     url.srv_name("cluster.local").as_deref(),
///     Some("_admin._tcp.web.default.svc.cluster.local")
/// );
///
/// assert!(ServiceUrl::parse("/api/v1/pods")?.is_none());
/// assert!(ServiceUrl::parse("/api/v1/namespaces/default/services/ftp:web:80/proxy").is_err());
/// # Ok::<(), proxy_http::service::UrlError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ServiceUrl {
    /// The namespace (`NS`), percent-decoded.
    pub namespace: String,
    /// The scheme to reach the endpoints with; [`Scheme::Http`] when none was given.
    pub scheme: Scheme,
    /// The Service's name (`NAME`), percent-decoded.
    pub name: String,
    /// The port, if one was given (`NAME:` and `NAME` give none).
    pub port: Option<PortRef>,
    /// What follows `/proxy`: empty, or starting with `/`; percent-encoding is kept as
    /// received.
    pub path: String,
    /// Everything up to and including `/proxy`, exactly as received: what the proxy's
    /// answers are rewritten into.
    pub prefix: String,
}

/// A path that is a service proxy path but a malformed one; the message names the bad
/// token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UrlError(String);

// ===== impl Scheme =====

impl Scheme {
    /// `"http"` or `"https"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// ===== impl PortRef =====

impl fmt::Display for PortRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortRef::Number(n) => write!(f, "{n}"),
            PortRef::Name(name) => f.write_str(name),
        }
    }
}

// ===== impl ServiceUrl =====

impl ServiceUrl {
    /// Parses a request's URI path (without the query string).
    ///
    /// `Ok(None)` when the path is not a service proxy path at all (`/api/v1/pods`,
    /// `/healthz`, or a Service itself: `/api/v1/namespaces/NS/services/NAME`).
    ///
    /// # Errors
    ///
    /// When the path has the shape `/api/v1/namespaces/NS/services/ID/proxy[/...]` but `NS`
    /// is not a DNS-1123 label, or `ID` is not `[SCHEME:]NAME[:PORT]` with a scheme of
    /// `http` or `https`, a DNS-1035 label as `NAME`, and a port number (1 to 65535) or
    /// port name as `PORT`.
    pub fn parse(path: &str) -> Result<Option<ServiceUrl>, UrlError> {
        let Some(rest) = path.strip_prefix(NAMESPACES) else {
            return Ok(None);
        };
        let mut segments = rest.splitn(4, '/');
        let (Some(ns_raw), Some("services"), Some(id_raw), Some(tail)) = (
            segments.next(),
            segments.next(),
            segments.next(),
            segments.next(),
        ) else {
            return Ok(None);
        };
        let (verb, path_rest) = match tail.find('/') {
            Some(i) => tail.split_at(i),
            None => (tail, ""),
        };
        if verb != "proxy" {
            return Ok(None);
        }
        let prefix = &path[..path.len() - path_rest.len()];

        let namespace = decode_segment("namespace", ns_raw)?;
        if !is_dns1123_label(&namespace) {
            return Err(UrlError(format!(
                "namespace `{namespace}` is not a DNS-1123 label (at most 63 lowercase \
                 letters, digits and '-', starting and ending with a letter or digit)"
            )));
        }
        let id = decode_segment("service", id_raw)?;
        let (scheme, name, port) = split_scheme_name_port(&id)?;
        Ok(Some(ServiceUrl {
            namespace,
            scheme,
            name,
            port,
            path: path_rest.to_owned(),
            prefix: prefix.to_owned(),
        }))
    }

    /// The path and query to send upstream: [`path`](Self::path), `/` when it is empty,
    /// then `?query` when `query` is neither `None` nor empty.
    pub fn upstream_path_and_query(&self, query: Option<&str>) -> String {
        let path = if self.path.is_empty() {
            "/"
        } else {
            &self.path
        };
        match query {
            Some(q) if !q.is_empty() => format!("{path}?{q}"),
            _ => path.to_owned(),
        }
    }

    /// The Service's DNS name: `NAME.NS.svc.CLUSTER_DOMAIN` (`cluster_domain` is used as
    /// given, e.g. `cluster.local`).
    pub fn host(&self, cluster_domain: &str) -> String {
        format!("{}.{}.svc.{cluster_domain}", self.name, self.namespace)
    }

    /// For a named port, the SRV record that gives its number:
    /// `_PORTNAME._tcp.NAME.NS.svc.CLUSTER_DOMAIN`. `None` for a numbered or missing port.
    pub fn srv_name(&self, cluster_domain: &str) -> Option<String> {
        match &self.port {
            Some(PortRef::Name(port)) => {
                Some(format!("_{port}._tcp.{}", self.host(cluster_domain)))
            }
            _ => None,
        }
    }
}

/// Kubernetes' `SplitSchemeNamePort`, plus the validation of each part.
fn split_scheme_name_port(id: &str) -> Result<(Scheme, String, Option<PortRef>), UrlError> {
    let parts: Vec<&str> = id.split(':').collect();
    let (scheme, name, port) = match parts[..] {
        [name] => ("", name, ""),
        [name, port] => ("", name, port),
        [scheme, name, port] => (scheme, name, port),
        _ => {
            return Err(UrlError(format!(
                "service `{id}` has {} ':'-separated parts; want NAME, NAME:PORT or \
                 SCHEME:NAME:PORT",
                parts.len()
            )));
        }
    };
    let scheme = match scheme {
        "" | "http" => Scheme::Http,
        "https" => Scheme::Https,
        other => {
            return Err(UrlError(format!(
                "scheme `{other}` in service `{id}` is neither http nor https"
            )));
        }
    };
    if name.is_empty() {
        return Err(UrlError(format!("service `{id}` has an empty name")));
    }
    if !is_dns1035_label(name) {
        return Err(UrlError(format!(
            "service name `{name}` is not a DNS-1035 label (at most 63 lowercase letters, \
             digits and '-', starting with a letter and ending with a letter or digit)"
        )));
    }
    let port = if port.is_empty() {
        None
    } else if port.bytes().all(|b| b.is_ascii_digit()) {
        match port.parse::<u16>() {
            Ok(n) if n != 0 => Some(PortRef::Number(n)),
            _ => {
                return Err(UrlError(format!(
                    "port `{port}` of service `{id}` is not between 1 and 65535"
                )));
            }
        }
    } else if is_port_name(port) {
        Some(PortRef::Name(port.to_owned()))
    } else {
        return Err(UrlError(format!(
            "port `{port}` of service `{id}` is neither a number nor a port name (at most 15 \
             lowercase letters, digits and single '-', with at least one letter)"
        )));
    };
    Ok((scheme, name.to_owned(), port))
}

/// Percent-decodes one path segment, as the API server sees it (Go's `URL.Path`).
fn decode_segment(what: &str, raw: &str) -> Result<String, UrlError> {
    if !raw.contains('%') {
        return Ok(raw.to_owned());
    }
    percent_decode(raw)
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or_else(|| UrlError(format!("{what} `{raw}` has a bad percent-encoding")))
}

/// Decodes `%XX` escapes; `None` when one is malformed.
pub(crate) fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hi = (hex[0] as char).to_digit(16)?;
            let lo = (hex[1] as char).to_digit(16)?;
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

/// A DNS-1123 label, as namespaces are: `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63.
fn is_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// A DNS-1035 label, as Service names are: a DNS-1123 label that starts with a letter.
fn is_dns1035_label(s: &str) -> bool {
    is_dns1123_label(s) && s.as_bytes()[0].is_ascii_lowercase()
}

/// An `IANA_SVC_NAME` (RFC 6335), as Kubernetes validates port names: at most 15
/// characters of `[a-z0-9-]`, at least one letter, no `-` at either end and no `--`.
fn is_port_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 15
        && b.iter()
            .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        && b.iter().any(|c| c.is_ascii_lowercase())
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
        && !s.contains("--")
}

// ===== impl UrlError =====

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UrlError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(path: &str) -> ServiceUrl {
        ServiceUrl::parse(path)
            .unwrap_or_else(|e| panic!("{path}: {e}"))
            .unwrap_or_else(|| panic!("{path}: not a service proxy path"))
    }

    fn error(path: &str) -> String {
        match ServiceUrl::parse(path) {
            Err(e) => e.to_string(),
            Ok(v) => panic!("{path}: parsed as {v:?}"),
        }
    }

    const BASE: &str = "/api/v1/namespaces/default/services/";

    #[test]
    fn name_alone() {
        let u = parse("/api/v1/namespaces/default/services/web/proxy/index.html");
        assert_eq!(u.namespace, "default");
        assert_eq!(u.scheme, Scheme::Http);
        assert_eq!(u.name, "web");
        assert_eq!(u.port, None);
        assert_eq!(u.path, "/index.html");
        assert_eq!(u.prefix, "/api/v1/namespaces/default/services/web/proxy");
    }

    #[test]
    fn name_and_port() {
        let u = parse("/api/v1/namespaces/kube-system/services/web:80/proxy/");
        assert_eq!(u.namespace, "kube-system");
        assert_eq!(u.port, Some(PortRef::Number(80)));
        assert_eq!(u.path, "/");
        let u = parse("/api/v1/namespaces/ns/services/web:http-alt/proxy");
        assert_eq!(u.port, Some(PortRef::Name("http-alt".into())));
        // `NAME:` is the name with no port, as in SplitSchemeNamePort.
        let u = parse("/api/v1/namespaces/ns/services/web:/proxy");
        assert_eq!(u.port, None);
        assert_eq!(u.name, "web");
    }

    #[test]
    fn scheme_name_port() {
        let u = parse("/api/v1/namespaces/ns/services/https:web:443/proxy/x");
        assert_eq!(u.scheme, Scheme::Https);
        assert_eq!(u.port, Some(PortRef::Number(443)));
        let u = parse("/api/v1/namespaces/ns/services/http:web:/proxy/x");
        assert_eq!(u.scheme, Scheme::Http);
        assert_eq!(u.port, None);
        // An empty scheme is allowed and means http.
        let u = parse("/api/v1/namespaces/ns/services/:web:8080/proxy");
        assert_eq!(u.scheme, Scheme::Http);
        assert_eq!(u.port, Some(PortRef::Number(8080)));
        // `https:web` is NAME:PORT (two parts), so `https` would be the name and `web`
        // the port: accepted, as the API server does.
        let u = parse("/api/v1/namespaces/ns/services/https:web/proxy");
        assert_eq!(u.name, "https");
        assert_eq!(u.port, Some(PortRef::Name("web".into())));
    }

    #[test]
    fn empty_path_and_prefix_as_received() {
        let u = parse("/api/v1/namespaces/default/services/web:80/proxy");
        assert_eq!(u.path, "");
        assert_eq!(u.prefix, "/api/v1/namespaces/default/services/web:80/proxy");
        assert_eq!(u.upstream_path_and_query(None), "/");
        assert_eq!(u.upstream_path_and_query(Some("")), "/");
        assert_eq!(u.upstream_path_and_query(Some("a=1&b")), "/?a=1&b");
        // Percent-encoding in the id is decoded for parsing but the prefix keeps it.
        let u = parse("/api/v1/namespaces/default/services/web%3A80/proxy/a%2Fb//c");
        assert_eq!(u.port, Some(PortRef::Number(80)));
        assert_eq!(
            u.prefix,
            "/api/v1/namespaces/default/services/web%3A80/proxy"
        );
        assert_eq!(u.path, "/a%2Fb//c");
        assert_eq!(u.upstream_path_and_query(Some("q")), "/a%2Fb//c?q");
    }

    #[test]
    fn not_service_proxy_paths() {
        for path in [
            "",
            "/",
            "/healthz",
            "/api/v1/pods",
            "/api/v1/namespaces",
            "/api/v1/namespaces/",
            "/api/v1/namespaces/default",
            "/api/v1/namespaces/default/services",
            "/api/v1/namespaces/default/services/web",
            "/api/v1/namespaces/default/services/web/",
            "/api/v1/namespaces/default/services/web/status",
            "/api/v1/namespaces/default/services/web/proxyx",
            "/api/v1/namespaces/default/pods/web/proxy",
            "/api/v1/namespaces/default/pods/web/exec",
            "/apis/v1/namespaces/default/services/web/proxy",
            "/api/v2/namespaces/default/services/web/proxy",
            "api/v1/namespaces/default/services/web/proxy",
        ] {
            assert_eq!(ServiceUrl::parse(path), Ok(None), "{path}");
        }
    }

    #[test]
    fn errors_name_the_bad_token() {
        let e = error(&format!("{BASE}web:x:y:z/proxy"));
        assert!(e.contains("`web:x:y:z`") && e.contains("4"), "{e}");
        let e = error(&format!("{BASE}ftp:web:80/proxy/"));
        assert!(e.contains("`ftp`"), "{e}");
        let e = error(&format!("{BASE}HTTP:web:80/proxy/"));
        assert!(e.contains("`HTTP`"), "{e}");
        let e = error(&format!("{BASE}web:99999/proxy"));
        assert!(e.contains("`99999`"), "{e}");
        let e = error(&format!("{BASE}web:0/proxy"));
        assert!(e.contains("`0`"), "{e}");
        let e = error(&format!("{BASE}web:123456789012345678901234567890/proxy"));
        assert!(e.contains("`123456789012345678901234567890`"), "{e}");
        let e = error(&format!("{BASE}:80/proxy"));
        assert!(e.contains("empty name") && e.contains("`:80`"), "{e}");
        let e = error(&format!("{BASE}/proxy"));
        assert!(e.contains("empty name"), "{e}");
        let e = error(&format!("{BASE}http::80/proxy"));
        assert!(e.contains("empty name"), "{e}");
        let e = error("/api/v1/namespaces/Default/services/web/proxy");
        assert!(e.contains("namespace `Default`"), "{e}");
        let e = error("/api/v1/namespaces//services/web/proxy");
        assert!(e.contains("namespace ``"), "{e}");
        let e = error("/api/v1/namespaces/a_b/services/web/proxy/x");
        assert!(e.contains("`a_b`"), "{e}");
        let e = error(&format!("{BASE}Web/proxy"));
        assert!(e.contains("`Web`"), "{e}");
        let e = error(&format!("{BASE}web:Http/proxy"));
        assert!(e.contains("`Http`"), "{e}");
        let e = error(&format!("{BASE}web%zz/proxy"));
        assert!(e.contains("`web%zz`"), "{e}");
        let e = error(&format!("{BASE}web%ff/proxy"));
        assert!(e.contains("`web%ff`"), "{e}");
    }

    #[test]
    fn service_names_are_dns1035_labels() {
        for good in [
            "a",
            "web",
            "web-1",
            "a23456789012345678901234567890123456789012345678901234567890123",
        ] {
            assert_eq!(parse(&format!("{BASE}{good}/proxy")).name, good);
        }
        for bad in [
            "1web",
            "-web",
            "web-",
            "we.b",
            "wéb",
            "a234567890123456789012345678901234567890123456789012345678901234",
        ] {
            assert!(
                ServiceUrl::parse(&format!("{BASE}{bad}/proxy")).is_err(),
                "{bad}"
            );
        }
        // Namespaces may start with a digit (DNS-1123), names may not (DNS-1035).
        assert_eq!(
            parse("/api/v1/namespaces/1ns/services/web/proxy").namespace,
            "1ns"
        );
    }

    #[test]
    fn port_names_are_iana_svc_names() {
        for good in ["http", "h2c", "a-b", "a1", "x23456789012345", "8080a"] {
            assert_eq!(
                parse(&format!("{BASE}web:{good}/proxy")).port,
                Some(PortRef::Name(good.into())),
                "{good}"
            );
        }
        for bad in [
            "-http",
            "http-",
            "a--b",
            "x234567890123456",
            "HTTP",
            "ht_tp",
            "+80",
            "-1",
            "8 0",
        ] {
            assert!(
                ServiceUrl::parse(&format!("{BASE}web:{bad}/proxy")).is_err(),
                "{bad}"
            );
        }
        assert_eq!(
            parse(&format!("{BASE}web:65535/proxy")).port,
            Some(PortRef::Number(65535))
        );
        assert_eq!(
            parse(&format!("{BASE}web:1/proxy")).port,
            Some(PortRef::Number(1))
        );
        assert_eq!(
            parse(&format!("{BASE}web:0080/proxy")).port,
            Some(PortRef::Number(80))
        );
    }

    #[test]
    fn dns_names() {
        let u = parse("/api/v1/namespaces/prod/services/web:http/proxy");
        assert_eq!(u.host("cluster.local"), "web.prod.svc.cluster.local");
        assert_eq!(
            u.srv_name("example.org").as_deref(),
            Some("_http._tcp.web.prod.svc.example.org")
        );
        let u = parse("/api/v1/namespaces/prod/services/web:80/proxy");
        assert_eq!(u.srv_name("cluster.local"), None);
        let u = parse("/api/v1/namespaces/prod/services/web/proxy");
        assert_eq!(u.srv_name("cluster.local"), None);
        assert_eq!(PortRef::Number(8).to_string(), "8");
        assert_eq!(Scheme::Https.to_string(), "https");
    }

    /// A small deterministic generator (xorshift), so the test needs no new dependency.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn never_panics() {
        const PIECES: &[&str] = &[
            "/",
            "/api/v1/namespaces/",
            "default",
            "services",
            "/services/",
            "proxy",
            "/proxy",
            ":",
            "::",
            "http",
            "https",
            "web",
            "80",
            "99999",
            "%",
            "%3A",
            "%2",
            "%zz",
            "%ff",
            "é",
            "日本",
            "\u{0}",
            "-",
            "a",
            "",
            "?",
            "#",
            " ",
            "..",
            "//",
        ];
        let seeds = [
            "/api/v1/namespaces/default/services/https:web:443/proxy/a%20b?x",
            "/api/v1/namespaces/n/services/web:http/proxy",
            "/api/v1/namespaces/日本/services/wéb:8é/proxy/é",
        ];
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..3000 {
            let s: String = (0..rng.below(12))
                .map(|_| PIECES[rng.below(PIECES.len())])
                .collect();
            let _ = ServiceUrl::parse(&s);
            let _ = ServiceUrl::parse(&format!("/api/v1/namespaces/{s}"));
            let _ = ServiceUrl::parse(&format!("{BASE}{s}/proxy{s}"));
        }
        // Every prefix, and every seed with one piece spliced in at every char boundary.
        for seed in seeds {
            for (i, _) in seed.char_indices() {
                let _ = ServiceUrl::parse(&seed[..i]);
                let _ = ServiceUrl::parse(&seed[i..]);
                let piece = PIECES[rng.below(PIECES.len())];
                let spliced = format!("{}{piece}{}", &seed[..i], &seed[i..]);
                if let Ok(Some(u)) = ServiceUrl::parse(&spliced) {
                    // What parses keeps its invariants.
                    assert!(spliced.starts_with(&u.prefix));
                    assert_eq!(format!("{}{}", u.prefix, u.path), spliced);
                    assert!(u.path.is_empty() || u.path.starts_with('/'));
                    let _ = u.upstream_path_and_query(Some(piece));
                }
            }
        }
    }
}
