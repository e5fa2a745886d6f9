//! [`Route`]: one rule of an HTTP forward's `route` key, `[HOST]/PATH=TARGET[;KEY=VALUE...]`,
//! as plain data. The HTTP layer (the `proxy-http` crate) matches requests against it.

use std::fmt;
use std::str::FromStr;

use super::ForwardSpec;
use crate::Target;

/// The keys of a route's upstream that HTTP and SNI routes both take: how long its DNS
/// answers are used, how it is balanced over, connected to and checked.
const UPSTREAM_KEYS: [&str; 14] = [
    "dns_refresh",
    "dns_fallback_ttl",
    "dns_min_ttl",
    "dns_max_ttl",
    "connect_timeout",
    "connect_total_timeout",
    "balance",
    "affinity_timeout",
    "eject_after",
    "eject_for",
    "health_check_interval",
    "health_check_timeout",
    "health_check_rise",
    "health_check_fall",
];

/// The keys a route may set for itself (`/api=api:8080;balance=least-connections`):
/// how its upstream is resolved, balanced, connected to (over TLS or not) and waited for.
/// Their values take no commas, which separate routes.
pub const ROUTE_KEYS: &[&str] = &joined::<15, 8, 23>(
    joined::<1, 14, 15>(["resolver"], UPSTREAM_KEYS),
    [
        "sticky_cookie",
        "request_timeout",
        "max_request_body",
        "retries",
        // TLS origination: an SNI route passes the client's TLS through, so it has none.
        "upstream_tls",
        "upstream_ca",
        "upstream_server_name",
        "upstream_insecure",
    ],
);

/// The keys an SNI route may set for itself (`db.example=db:5432;balance=least-connections`):
/// how long its upstream's answers are used, how it is balanced over and connected to, and
/// whether it is sent a PROXY protocol header. Their values take no commas, which separate
/// routes. Every route resolves through the forward's resolver (hickory when any target
/// is `srv:`).
pub const SNI_ROUTE_KEYS: &[&str] = &joined::<14, 1, 15>(UPSTREAM_KEYS, ["proxy_protocol"]);

/// `a` then `b`, as one array of `N = A + B` keys.
const fn joined<const A: usize, const B: usize, const N: usize>(
    a: [&'static str; A],
    b: [&'static str; B],
) -> [&'static str; N] {
    assert!(A + B == N, "N must be A + B");
    let mut out = [""; N];
    let mut i = 0;
    while i < N {
        out[i] = if i < A { a[i] } else { b[i - A] };
        i += 1;
    }
    out
}

/// Which request hosts a route serves.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum RouteHost {
    /// Any host (the route was written without one: `/api=api:80`).
    Any,
    /// This host exactly, lowercase, without a port: `shop.example`.
    Exact(String),
    /// Any host of one more label in this domain: `*.example` is `a.example`, not
    /// `a.b.example` nor `example` (as Kubernetes Ingress wildcards match). The domain is
    /// kept without the `*.`.
    Wildcard(String),
}

impl fmt::Display for RouteHost {
    /// As a route writes it: nothing for any host, the name, or `*.` and the domain.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RouteHost::Any => Ok(()),
            RouteHost::Exact(host) => f.write_str(host),
            RouteHost::Wildcard(domain) => write!(f, "*.{domain}"),
        }
    }
}

/// One rule of an HTTP forward: requests for `host` whose path starts with `path` (by
/// whole segments: `/api` serves `/api`, `/api/` and `/api/v1`, not `/apis`) go to
/// `target`, with the route's own `options` over the forward's settings. Of the routes
/// that match a request, the one with the most specific host, then the longest path,
/// serves it.
///
/// Written `[HOST]/PATH=TARGET[;KEY=VALUE...]`: HOST is a name, `*.` and a domain, or
/// nothing for any host; TARGET is a [`Target`], port 80 unless given; KEY is one of
/// [`ROUTE_KEYS`].
///
/// # Examples
///
/// ```
/// use proxy_core::spec::{Route, RouteHost};
///
/// let route: Route = "shop.example/cart=cart.shop;balance=least-connections".parse()?;
/// assert_eq!(route.host, RouteHost::Exact("shop.example".into()));
/// assert_eq!(route.path, "/cart");
/// assert_eq!(route.target.to_string(), "cart.shop:80");
/// assert_eq!(route.options, [("balance".to_owned(), "least-connections".to_owned())]);
/// assert_eq!(route.to_string(), "shop.example/cart=cart.shop:80;balance=least-connections");
///
/// let e = "shop.example=web:80".parse::<Route>().unwrap_err();
/// assert_eq!(e, "`shop.example=web:80`: HOST/PATH needs a path starting with /, e.g. shop.example/=web:80");
/// # Ok::<(), String>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Route {
    /// The hosts served.
    pub host: RouteHost,
    /// The path prefix, starting with `/`; `/` is every path.
    pub path: String,
    /// Where requests go.
    pub target: Target,
    /// The route's own settings, keys of [`ROUTE_KEYS`], in the order given.
    pub options: Vec<(String, String)>,
}

// ===== impl Route =====

impl Route {
    /// A route for `host` and `path` to `target` with no options of its own.
    pub fn new(host: RouteHost, path: impl Into<String>, target: Target) -> Route {
        Route {
            host,
            path: path.into(),
            target,
            options: Vec::new(),
        }
    }

    /// Whether the route serves every host and path: the default route.
    pub fn is_default(&self) -> bool {
        self.host == RouteHost::Any && self.path == "/"
    }

    /// The settings of this route's upstream: `base` with the route's target and its
    /// options over it.
    ///
    /// # Errors
    ///
    /// An option that `base` does not take ("`balance=x`: ..."); options are checked
    /// when a route is parsed, so only a rule between settings can fail here.
    pub fn spec(&self, base: &ForwardSpec) -> Result<ForwardSpec, String> {
        spec_with(base, &self.target, &self.options)
    }
}

impl FromStr for Route {
    type Err = String;

    fn from_str(text: &str) -> Result<Route, String> {
        let bad = |why: &str| format!("`{text}`: {why}");
        let (matching, rest) = text
            .split_once('=')
            .ok_or_else(|| bad("a route is [HOST]/PATH=TARGET, e.g. shop.example/=web:80"))?;
        let Some(slash) = matching.find('/') else {
            return Err(bad(&format!(
                "HOST/PATH needs a path starting with /, e.g. {matching}/={rest}"
            )));
        };
        let (host, path) = matching.split_at(slash);
        let host = route_host(host).map_err(|why| bad(&why))?;
        if path.contains(['?', '#', ' ']) {
            return Err(bad(&format!("`{path}` is not a path prefix")));
        }
        let (target, options) =
            target_and_options(rest, 80, ROUTE_KEYS).map_err(|why| bad(&why))?;
        Ok(Route {
            host,
            path: path.to_owned(),
            target,
            options,
        })
    }
}

impl fmt::Display for Route {
    /// As [`FromStr`] reads it, port and all: `shop.example/cart=cart.shop:80;retries=2`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}={}", self.host, self.path, self.target)?;
        show_options(f, &self.options)
    }
}

/// `base` with `target` and the `options` over it.
pub(super) fn spec_with(
    base: &ForwardSpec,
    target: &Target,
    options: &[(String, String)],
) -> Result<ForwardSpec, String> {
    let mut spec = base.clone();
    spec.target = Some(target.clone());
    for (key, value) in options {
        spec.set(key, value)
            .map_err(|e| format!("`{key}={value}`: {}", e.message()))?;
    }
    Ok(spec)
}

/// What follows a route's `=`: `TARGET[;KEY=VALUE...]`, the target's port `port` unless
/// given, each KEY one of `keys` with a value its parser takes.
pub(super) fn target_and_options(
    text: &str,
    port: u16,
    keys: &[&str],
) -> Result<(Target, Vec<(String, String)>), String> {
    let mut parts = text.split(';');
    let target = parts.next().unwrap_or_default().trim();
    if target.is_empty() {
        return Err("no TARGET after =".to_owned());
    }
    let target = Target::parse_with_default_port(target, port).map_err(|e| e.to_string())?;
    let mut options = Vec::new();
    let mut scratch = ForwardSpec::default();
    for option in parts {
        let (key, value) = option
            .split_once('=')
            .map(|(k, v)| (k.trim(), v.trim()))
            .ok_or_else(|| format!("`{option}` is not KEY=VALUE"))?;
        if !keys.contains(&key) {
            return Err(format!(
                "`{key}` is not a setting a route takes; those are {}",
                keys.join(", ")
            ));
        }
        scratch
            .set(key, value)
            .map_err(|e| format!("`{key}={value}`: {}", e.message()))?;
        options.push((key.to_owned(), value.to_owned()));
    }
    Ok((target, options))
}

/// Writes `;KEY=VALUE` for each of `options`.
pub(super) fn show_options(
    f: &mut fmt::Formatter<'_>,
    options: &[(String, String)],
) -> fmt::Result {
    for (key, value) in options {
        write!(f, ";{key}={value}")?;
    }
    Ok(())
}

/// A route's HOST: empty, a host name (lowercased), or `*.` and a domain.
pub(super) fn route_host(host: &str) -> Result<RouteHost, String> {
    if host.is_empty() {
        return Ok(RouteHost::Any);
    }
    let lower = host.to_ascii_lowercase();
    let (name, wildcard) = match lower.strip_prefix("*.") {
        Some(domain) => (domain, true),
        None => (lower.as_str(), false),
    };
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    let ip = name.parse::<std::net::IpAddr>().is_ok();
    if ip || name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
        return Err(format!(
            "`{host}` is not a host name (or *. and a domain) to route by; IP hosts and \
             ports are not routed by"
        ));
    }
    Ok(match wildcard {
        true => RouteHost::Wildcard(name.to_owned()),
        false => RouteHost::Exact(name.to_owned()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_read_back_as_written_with_the_port() {
        for (text, shown) in [
            ("/=web", "/=web:80"),
            ("Shop.Example/=web:8080", "shop.example/=web:8080"),
            ("*.example/static=static:80", "*.example/static=static:80"),
            ("/api=srv:_http._tcp.api", "/api=srv:_http._tcp.api"),
            (
                "/a=[::1]:81;retries=0;sticky_cookie=S",
                "/a=[::1]:81;retries=0;sticky_cookie=S",
            ),
        ] {
            let route: Route = text.parse().unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(route.to_string(), shown);
            assert_eq!(shown.parse::<Route>().unwrap(), route);
        }
        let default: Route = "/=web".parse().unwrap();
        assert!(default.is_default());
        assert!(!"x.example/=web".parse::<Route>().unwrap().is_default());
        assert!(!"/a=web".parse::<Route>().unwrap().is_default());
    }

    #[test]
    fn bad_routes_name_the_bad_part() {
        for (text, says) in [
            ("web:80", "is [HOST]/PATH=TARGET"),
            ("shop.example=web", "needs a path starting with /"),
            ("/=", "no TARGET"),
            ("/=web:http", "web:http"),
            ("bad host/=web", "`bad host` is not a host name"),
            ("10.0.0.1/=web", "not a host name"),
            ("*./=web", "not a host name"),
            ("/a?b=web", "`/a?b` is not a path prefix"),
            ("/=web;listen=80", "`listen` is not a setting a route takes"),
            ("/=web;balance", "`balance` is not KEY=VALUE"),
            (
                "/=web;balance=random",
                "`balance=random`: `random` is not one of",
            ),
        ] {
            let e = text.parse::<Route>().unwrap_err();
            assert!(e.starts_with(&format!("`{text}`: ")), "{e}");
            assert!(e.contains(says), "{text}: {e}");
        }
    }

    #[test]
    fn a_routes_spec_is_the_base_with_its_target_and_options() {
        let mut base = ForwardSpec::default();
        base.set("balance", "round-robin").unwrap();
        base.set("connect_timeout", "2s").unwrap();
        let route: Route = "/api=api:8080;balance=least-connections".parse().unwrap();
        let spec = route.spec(&base).unwrap();
        assert_eq!(spec.target.unwrap().to_string(), "api:8080");
        assert_eq!(spec.balance, crate::Balance::LeastConnections);
        assert_eq!(spec.connect_timeout, base.connect_timeout);
    }

    #[test]
    fn an_http_route_may_originate_tls_and_an_sni_route_may_not() {
        let route: Route = "/api=api.internal:443;upstream_tls=true;upstream_ca=/etc/ca.pem;\
                            upstream_server_name=api.example"
            .parse()
            .unwrap();
        let spec = route.spec(&ForwardSpec::default()).unwrap();
        assert!(spec.upstream_tls);
        assert_eq!(spec.upstream_ca.as_deref(), Some("/etc/ca.pem".as_ref()));
        assert_eq!(spec.upstream_server_name.as_deref(), Some("api.example"));
        assert!("/=web:443;upstream_insecure=true".parse::<Route>().is_ok());
        for key in [
            "upstream_tls",
            "upstream_ca",
            "upstream_server_name",
            "upstream_insecure",
        ] {
            assert!(!SNI_ROUTE_KEYS.contains(&key), "{key}");
        }
    }

    #[test]
    fn route_tls_keys_are_checked_with_the_route() {
        let http = |routes: &str, forward: &[(&str, &str)]| {
            let mut spec = ForwardSpec::default();
            spec.set("protocol", "http").unwrap();
            spec.set("listen", "127.0.0.1:8080").unwrap();
            for (key, value) in forward {
                spec.set(key, value).unwrap();
            }
            spec.set("route", routes).unwrap();
            spec.validate()
        };
        http("/=web:443;upstream_ca=/ca.pem;upstream_tls=true", &[]).unwrap();
        let e = http("/=web:443;upstream_ca=/ca.pem", &[]).unwrap_err();
        assert!(e.to_string().contains("upstream_ca"), "{e}");
        // A route turning the forward's TLS off does not use its CA.
        let forward = [("upstream_tls", "true"), ("upstream_ca", "/ca.pem")];
        http("/=web:443,/plain=plain:80;upstream_tls=false", &forward).unwrap();
        // A service proxy's https: Services take them without upstream_tls.
        let mut spec = ForwardSpec::default();
        spec.set("protocol", "http").unwrap();
        spec.set("listen", "127.0.0.1:8001").unwrap();
        spec.set("service_proxy", "true").unwrap();
        spec.set("upstream_ca", "/ca.pem").unwrap();
        spec.validate().unwrap();
        spec.set("service_proxy", "false").unwrap();
        spec.set("target", "web:80").unwrap();
        assert_eq!(spec.validate().unwrap_err().key(), "upstream_ca");
    }

    #[test]
    fn route_keys_are_keys() {
        for key in ROUTE_KEYS {
            assert!(super::super::find(key).is_some(), "{key}");
        }
    }
}
