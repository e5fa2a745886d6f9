//! [`SniRoute`]: one rule of a TCP forward's `sni` key, `NAME=TARGET[;KEY=VALUE...]`, as
//! plain data. The TCP forwarder matches the server name of each connection's TLS
//! ClientHello against these rules.

use std::fmt;
use std::str::FromStr;

use super::ForwardSpec;
use super::route::{
    RouteHost, SNI_ROUTE_KEYS, route_host, show_options, spec_with, target_and_options,
};
use crate::Target;

/// One rule of a TCP forward routing TLS connections by server name (SNI) without
/// decrypting them: a connection whose ClientHello names `host` goes to `target`, with
/// the route's own `options` over the forward's settings. An exact name wins over a
/// wildcard; a connection no rule matches (or that names no server) goes to the
/// forward's `target`, or is reset when it has none.
///
/// Written `NAME=TARGET[;KEY=VALUE...]`: NAME is a host name, or `*.` and a domain for any
/// name of one more label in it; TARGET is a [`Target`], port 443 unless given; KEY is one
/// of [`SNI_ROUTE_KEYS`].
///
/// # Examples
///
/// ```
/// use proxy_core::spec::{RouteHost, SniRoute};
///
/// let route: SniRoute = "*.Apps.example=router.ingress;proxy_protocol=v2".parse()?;
/// assert_eq!(route.host, RouteHost::Wildcard("apps.example".into()));
/// assert_eq!(route.target.to_string(), "router.ingress:443");
/// assert_eq!(route.to_string(), "*.apps.example=router.ingress:443;proxy_protocol=v2");
///
/// let e = "/api=web:443".parse::<SniRoute>().unwrap_err();
/// assert!(e.starts_with("`/api=web:443`: `/api` is not a host name"), "{e}");
/// # Ok::<(), String>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SniRoute {
    /// The server names served: [`RouteHost::Exact`] or [`RouteHost::Wildcard`].
    pub host: RouteHost,
    /// Where the connections go.
    pub target: Target,
    /// The route's own settings, keys of [`SNI_ROUTE_KEYS`], in the order given.
    pub options: Vec<(String, String)>,
}

// ===== impl SniRoute =====

impl SniRoute {
    /// The settings of this route's upstream: `base` with the route's target and its
    /// options over it, and no SNI routes of its own.
    ///
    /// # Errors
    ///
    /// An option that `base` does not take; options are checked when a route is parsed,
    /// so only a rule between settings can fail here.
    pub fn spec(&self, base: &ForwardSpec) -> Result<ForwardSpec, String> {
        let mut spec = spec_with(base, &self.target, &self.options)?;
        spec.sni.clear();
        Ok(spec)
    }
}

impl FromStr for SniRoute {
    type Err = String;

    fn from_str(text: &str) -> Result<SniRoute, String> {
        let bad = |why: &str| format!("`{text}`: {why}");
        let (name, rest) = text.split_once('=').ok_or_else(|| {
            bad("an SNI route is NAME=TARGET, e.g. db.example=db:5432 or *.example=web:443")
        })?;
        let host = match route_host(name.trim()) {
            Ok(RouteHost::Any) => Err(bad("no NAME before =")),
            Ok(host) => Ok(host),
            Err(why) => Err(bad(&why)),
        }?;
        let (target, options) =
            target_and_options(rest, 443, SNI_ROUTE_KEYS).map_err(|why| bad(&why))?;
        Ok(SniRoute {
            host,
            target,
            options,
        })
    }
}

impl fmt::Display for SniRoute {
    /// As [`FromStr`] reads it, port and all: `db.example=db:5432;balance=random`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.host, self.target)?;
        show_options(f, &self.options)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sni_routes_read_back_as_written_with_the_port() {
        for (text, shown) in [
            ("a.example=web", "a.example=web:443"),
            ("A.Example=10.0.0.1:8443", "a.example=10.0.0.1:8443"),
            ("*.b.example=[::1]:9443", "*.b.example=[::1]:9443"),
            (
                "db=srv:_pg._tcp.db;balance=least-connections",
                "db=srv:_pg._tcp.db;balance=least-connections",
            ),
            (
                " c.example = c:1;proxy_protocol=v1",
                "c.example=c:1;proxy_protocol=v1",
            ),
        ] {
            let route: SniRoute = text.parse().unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(route.to_string(), shown);
            assert_eq!(shown.parse::<SniRoute>().unwrap(), route);
        }
    }

    #[test]
    fn bad_sni_routes_name_the_bad_part() {
        for (text, says) in [
            ("web:443", "is NAME=TARGET"),
            ("=web:443", "no NAME before ="),
            ("a.example=", "no TARGET"),
            ("a.example=web:https", "web:https"),
            ("bad name=web", "`bad name` is not a host name"),
            ("10.0.0.1=web", "not a host name"),
            ("a.example/x=web", "`a.example/x` is not a host name"),
            (
                "a.example=web;sticky_cookie=S",
                "`sticky_cookie` is not a setting a route takes",
            ),
            ("a.example=web;balance", "`balance` is not KEY=VALUE"),
            ("a.example=web;proxy_protocol=v3", "`proxy_protocol=v3`"),
        ] {
            let e = text.parse::<SniRoute>().unwrap_err();
            assert!(e.starts_with(&format!("`{text}`: ")), "{e}");
            assert!(e.contains(says), "{text}: {e}");
        }
    }

    #[test]
    fn an_sni_routes_spec_is_the_base_with_its_target_and_options() {
        let mut base = ForwardSpec::default();
        base.set("connect_timeout", "2s").unwrap();
        base.set("sni", "a.example=a:1,b.example=b:2").unwrap();
        let route: SniRoute = "a.example=a:1;proxy_protocol=v2".parse().unwrap();
        let spec = route.spec(&base).unwrap();
        assert_eq!(spec.target.unwrap().to_string(), "a:1");
        assert_eq!(spec.proxy_protocol, Some(crate::ProxyProtocol::V2));
        assert_eq!(spec.connect_timeout, base.connect_timeout);
        assert!(spec.sni.is_empty());
    }

    #[test]
    fn sni_route_keys_are_keys() {
        for key in SNI_ROUTE_KEYS {
            assert!(super::super::find(key).is_some(), "{key}");
        }
    }
}
