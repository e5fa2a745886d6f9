//! [`Router`]: an HTTP forward's routes, compiled for lookup by host and path, each with
//! its [`Backend`] and counters. A reload builds a new router and keeps the backends
//! (their pools, balancer state and DNS answers) of routes whose settings did not change.

use std::collections::HashMap;
use std::io;
use std::sync::Arc;

use proxy_core::ForwardSpec;
use proxy_core::spec::{Route, RouteHost};

use crate::backend::Backend;
use crate::stats::{RouteSnapshot, RouteStats};

/// One route, ready to serve.
pub(crate) struct RouteEntry {
    /// The route as written, for logs and metrics.
    pub(crate) name: Arc<str>,
    /// Its settings: the forward's, with the route's target and options.
    spec: ForwardSpec,
    pub(crate) backend: Arc<Backend>,
    pub(crate) stats: Arc<RouteStats>,
}

/// Routes by host: exact hosts, wildcard domains, and any host; each list longest path
/// first.
pub(crate) struct Router {
    routes: Vec<(Route, RouteEntry)>,
    exact: HashMap<String, Vec<usize>>,
    wildcard: HashMap<String, Vec<usize>>,
    any: Vec<usize>,
}

impl Router {
    /// The routes of `spec` (an HTTP forward), reusing from `previous` the backends and
    /// counters of routes whose settings are unchanged. Idle upstream connections are
    /// kept per worker thread, of `workers`.
    pub(crate) fn new(
        spec: &ForwardSpec,
        previous: Option<&Router>,
        workers: usize,
    ) -> io::Result<Router> {
        let mut router = Router {
            routes: Vec::new(),
            exact: HashMap::new(),
            wildcard: HashMap::new(),
            any: Vec::new(),
        };
        for route in spec.http_routes() {
            let mut route_spec = route.spec(spec).map_err(io::Error::other)?;
            route_spec.routes.clear();
            let name: Arc<str> = Arc::from(route.to_string());
            let kept = previous.and_then(|p| {
                (p.routes.iter()).find(|(_, e)| e.spec == route_spec && e.name == name)
            });
            let (backend, stats) = match kept {
                Some((_, e)) => (e.backend.clone(), e.stats.clone()),
                None => {
                    let backend = Backend::new(&route_spec, workers)
                        .map_err(|e| io::Error::new(e.kind(), format!("route `{name}`: {e}")))?;
                    (Arc::new(backend), Arc::default())
                }
            };
            let i = router.routes.len();
            match &route.host {
                RouteHost::Any => router.any.push(i),
                RouteHost::Exact(h) => router.exact.entry(h.clone()).or_default().push(i),
                RouteHost::Wildcard(d) => router.wildcard.entry(d.clone()).or_default().push(i),
            }
            router.routes.push((
                route,
                RouteEntry {
                    name,
                    spec: route_spec,
                    backend,
                    stats,
                },
            ));
        }
        let routes = &router.routes;
        let longest_first = |list: &mut Vec<usize>| {
            list.sort_by_key(|&i| std::cmp::Reverse(routes[i].0.path.len()));
        };
        router.exact.values_mut().for_each(longest_first);
        router.wildcard.values_mut().for_each(longest_first);
        longest_first(&mut router.any);
        Ok(router)
    }

    /// The route for a request to `host` (the `Host` header or the URI's authority) and
    /// `path`: among the routes of the most specific host that has one for `path` (the
    /// exact host, then its wildcard domain, then any host), the longest path.
    pub(crate) fn route(&self, host: Option<&str>, path: &str) -> Option<&RouteEntry> {
        let by_host = !(self.exact.is_empty() && self.wildcard.is_empty());
        let host = host.filter(|_| by_host).map(normalize_host);
        let exact = host.as_deref().and_then(|h| self.exact.get(h));
        let wildcard = host
            .as_deref()
            .and_then(|h| h.split_once('.'))
            .and_then(|(_, domain)| self.wildcard.get(domain));
        [exact, wildcard, Some(&self.any)]
            .into_iter()
            .flatten()
            .flat_map(|list| list.iter())
            .find(|&&i| path_matches(&self.routes[i].0.path, path))
            .map(|&i| &self.routes[i].1)
    }

    /// Every route's counters.
    pub(crate) fn snapshots(&self) -> Vec<RouteSnapshot> {
        (self.routes.iter())
            .map(|(_, e)| e.stats.snapshot(e.name.to_string()))
            .collect()
    }

    /// Every route's backend, with its name.
    pub(crate) fn entries(&self) -> impl Iterator<Item = &RouteEntry> {
        self.routes.iter().map(|(_, e)| e)
    }
}

/// A host as routes name it: no port, lowercase, no trailing dot.
fn normalize_host(host: &str) -> String {
    let no_port = match host.rsplit_once(':') {
        // `[::1]:80` and `[::1]`: an IPv6 literal keeps its brackets.
        _ if host.starts_with('[') => host.find(']').map_or(host, |end| &host[..=end]),
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    };
    no_port.trim_end_matches('.').to_ascii_lowercase()
}

/// Whether `path` is under the prefix `route` by whole segments: `/api` serves `/api`,
/// `/api/` and `/api/v1`, not `/apis`; `/api/` serves `/api/x`, not `/api`.
fn path_matches(route: &str, path: &str) -> bool {
    match path.strip_prefix(route) {
        None => false,
        Some(rest) => route.ends_with('/') || rest.is_empty() || rest.starts_with('/'),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(routes: &str) -> Router {
        let mut spec = ForwardSpec::default();
        spec.set("protocol", "http").unwrap();
        spec.set("route", routes).unwrap();
        Router::new(&spec, None, 1).unwrap()
    }

    fn routed(r: &Router, host: Option<&str>, path: &str) -> Option<String> {
        r.route(host, path).map(|e| e.name.to_string())
    }

    #[tokio::test]
    async fn most_specific_host_then_longest_path() {
        let r = router(
            "/=default:80,/api=api:80,shop.example/=shop:80,shop.example/cart=cart:80,\
             *.example/=wild:80,*.example/static/=static:80",
        );
        let at = |host, path| routed(&r, host, path).unwrap();
        assert_eq!(
            at(Some("shop.example"), "/cart/1"),
            "shop.example/cart=cart:80"
        );
        assert_eq!(
            at(Some("Shop.Example:8080"), "/cart"),
            "shop.example/cart=cart:80"
        );
        assert_eq!(at(Some("shop.example."), "/carts"), "shop.example/=shop:80");
        assert_eq!(
            at(Some("a.example"), "/static/x.css"),
            "*.example/static/=static:80"
        );
        assert_eq!(at(Some("a.example"), "/static"), "*.example/=wild:80");
        assert_eq!(
            at(Some("a.b.example"), "/"),
            "/=default:80",
            "one label only"
        );
        assert_eq!(at(Some("example"), "/api/v1"), "/api=api:80");
        assert_eq!(at(None, "/apis"), "/=default:80");
        assert_eq!(at(Some("[::1]:80"), "/api"), "/api=api:80");
    }

    #[tokio::test]
    async fn a_host_without_a_matching_path_falls_back_to_less_specific_ones() {
        let r = router("shop.example/cart=cart:80,/api=api:80");
        assert_eq!(
            routed(&r, Some("shop.example"), "/api").unwrap(),
            "/api=api:80"
        );
        assert_eq!(routed(&r, Some("shop.example"), "/"), None);
        assert_eq!(routed(&r, None, "/cart"), None);
    }

    #[test]
    fn paths_match_by_whole_segments() {
        assert!(path_matches("/", "/anything"));
        assert!(path_matches("/api", "/api"));
        assert!(path_matches("/api", "/api/"));
        assert!(path_matches("/api", "/api/v1"));
        assert!(!path_matches("/api", "/apis"));
        assert!(path_matches("/api/", "/api/x"));
        assert!(!path_matches("/api/", "/api"));
    }

    #[test]
    fn hosts_lose_their_port_and_case() {
        assert_eq!(normalize_host("Shop.Example:8080"), "shop.example");
        assert_eq!(normalize_host("shop.example."), "shop.example");
        assert_eq!(normalize_host("[::1]:8080"), "[::1]");
        assert_eq!(normalize_host("[::1]"), "[::1]");
    }

    #[tokio::test]
    async fn a_reload_keeps_unchanged_backends() {
        let mut spec = ForwardSpec::default();
        spec.set("protocol", "http").unwrap();
        spec.set("route", "/a=a:80,/b=b:80").unwrap();
        let first = Router::new(&spec, None, 1).unwrap();
        spec.set("route", "/a=a:80,/b=b:81").unwrap();
        let second = Router::new(&spec, Some(&first), 1).unwrap();
        let backend = |r: &Router, path| Arc::as_ptr(&r.route(None, path).unwrap().backend);
        assert_eq!(backend(&first, "/a"), backend(&second, "/a"));
        assert_ne!(backend(&first, "/b"), backend(&second, "/b"));
    }
}
