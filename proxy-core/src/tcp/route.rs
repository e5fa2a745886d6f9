//! Where a TCP forward's connections go: its `target` and its SNI routes (the `sni` key),
//! each an upstream of its own ([`Way`]: addresses kept fresh, a balancer, connect
//! settings). With SNI routes, a connection's way is picked by the server name its TLS
//! ClientHello asks for ([`Ways::pick`]), read by [`server_name`] from peeked bytes, so
//! the upstream gets every byte as the client sent it.

use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;

use super::peek::peek_until;
use crate::balance::Balancer;
use crate::dial::Dial;
use crate::forward::Common;
use crate::handle::{Base, Refresher};
use crate::proxy_protocol::ProxyProtocol;
use crate::resolve::{Resolve, ResolveCache};
use crate::sni::{HelloError, MAX_HELLO};
use crate::spec::{ForwardSpec, RouteHost};
use crate::stats::Stats;
use crate::{BuildError, Target, Timeouts};

/// One SNI route's settings, as built: the names it serves, and its upstream's settings
/// (the forward's, with the route's target and options over them).
#[derive(Clone, Debug)]
pub(super) struct RouteConfig {
    /// The route as written, port and all.
    name: String,
    host: RouteHost,
    common: Common,
    proxy_protocol: Option<ProxyProtocol>,
}

impl RouteConfig {
    /// The route as written: `a.example=a:443;balance=random`.
    pub(super) fn name(&self) -> &str {
        &self.name
    }
}

/// The SNI routes of a validated `spec`, each resolving through `resolver`.
pub(super) fn route_configs(
    spec: &ForwardSpec,
    resolver: &Arc<dyn Resolve>,
) -> Result<Vec<RouteConfig>, BuildError> {
    (spec.sni.iter())
        .map(|route| {
            let spec = (route.spec(spec)).map_err(|why| BuildError::Invalid { key: "sni", why })?;
            Ok(RouteConfig {
                name: route.to_string(),
                host: route.host.clone(),
                common: Common::from_spec(&spec, resolver.clone()),
                proxy_protocol: spec.proxy_protocol,
            })
        })
        .collect()
}

/// One upstream of a generation: a target's addresses, its balancer, how it is connected
/// to, and whether it is sent a PROXY header.
#[derive(Debug)]
pub(super) struct Way {
    pub(super) target: Target,
    cache: Arc<ResolveCache>,
    pub(super) balancer: Arc<Balancer>,
    timeouts: Timeouts,
    pub(super) proxy_protocol: Option<ProxyProtocol>,
}

impl Way {
    /// What connecting to this way's target uses.
    pub(super) fn dial<'a>(&'a self, stats: &'a Stats) -> Dial<'a> {
        Dial {
            cache: &self.cache,
            balancer: &self.balancer,
            stats,
            timeouts: &self.timeouts,
        }
    }
}

/// A generation's ways: the SNI routes, by exact name and by wildcard domain, and the
/// forward's target for every other connection.
#[derive(Debug)]
pub(super) struct Ways {
    default: Option<Way>,
    routes: Vec<Way>,
    exact: HashMap<String, usize>,
    wildcard: HashMap<String, usize>,
}

impl Ways {
    /// The ways of the forward `common` with `routes`, and the refresher keeping their
    /// DNS answers fresh (health checks stop with it too).
    pub(super) fn new(
        common: &Common,
        proxy_protocol: Option<ProxyProtocol>,
        routes: &[RouteConfig],
        base: &Base,
    ) -> (Ways, Arc<Refresher>) {
        let default = (common.target.as_ref()).map(|target| (common, target, proxy_protocol));
        let routed = routes.iter().filter_map(|r| {
            let target = r.common.target.as_ref()?;
            Some((&r.common, target, r.proxy_protocol))
        });
        let all: Vec<_> = default.into_iter().chain(routed).collect();
        let caches: Vec<_> = (all.iter())
            .map(|(common, target, _)| common.resolve_cache(target, &base.stats))
            .collect();
        let refresher = Arc::new(Refresher::spawn(&caches, &base.closing));
        let mut ways = (all.into_iter().zip(caches)).map(|((common, target, proxy), cache)| Way {
            target: target.clone(),
            balancer: common.balancer(&cache, &base.stats, refresher.token()),
            cache,
            timeouts: common.timeouts,
            proxy_protocol: proxy,
        });
        let default = common.target.is_some().then(|| ways.next()).flatten();
        let routes_ways: Vec<Way> = ways.collect();
        let (mut exact, mut wildcard) = (HashMap::new(), HashMap::new());
        for (i, route) in routes.iter().enumerate() {
            match &route.host {
                RouteHost::Exact(name) => exact.insert(name.clone(), i),
                RouteHost::Wildcard(domain) => wildcard.insert(domain.clone(), i),
                RouteHost::Any => None,
            };
        }
        let ways = Ways {
            default,
            routes: routes_ways,
            exact,
            wildcard,
        };
        (ways, refresher)
    }

    /// Whether connections are routed by server name: there are SNI routes.
    pub(super) fn by_name(&self) -> bool {
        !self.routes.is_empty()
    }

    /// The forward's own target, for connections no route serves.
    pub(super) fn default(&self) -> Option<&Way> {
        self.default.as_ref()
    }

    /// The way for a connection asking for server `name` (lower case, as
    /// [`server_name`](crate::sni::server_name) gives it): the route of that exact name,
    /// else the wildcard route of its domain (one label less), else the default.
    pub(super) fn pick(&self, name: Option<&str>) -> Option<&Way> {
        let exact = || name.and_then(|n| self.exact.get(n));
        let wildcard = || {
            (name.and_then(|n| n.split_once('.'))).and_then(|(_, domain)| self.wildcard.get(domain))
        };
        match exact().or_else(wildcard) {
            Some(&i) => self.routes.get(i),
            None => self.default(),
        }
    }
}

/// What a client's first bytes said about the server it wants.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Hello {
    /// A ClientHello naming this server, or none (`None`: a client connecting by address).
    Tls(Option<String>),
    /// Bytes that are not a ClientHello this proxy reads: another protocol, or a broken or
    /// oversized hello.
    Other(HelloError),
}

/// The most bytes peeked for a ClientHello: [`MAX_HELLO`] of handshake, with room for the
/// headers of the records it may be split over.
const MAX_PEEK: usize = MAX_HELLO + 1024;

/// Reads what the ClientHello at the start of `stream` asks for, within `timeout`,
/// consuming nothing.
///
/// # Errors
///
/// `TimedOut` when no whole ClientHello came in time, `UnexpectedEof` when the client
/// closed (or sent more than [`MAX_PEEK`] bytes) before it was whole, or the socket's.
pub(super) async fn server_name(stream: &TcpStream, timeout: Duration) -> io::Result<Hello> {
    let mut buf = vec![0u8; MAX_PEEK];
    let read = peek_until(stream, &mut buf, |bytes| {
        Ok(match crate::sni::server_name(bytes) {
            Ok(name) => Some(Hello::Tls(name)),
            Err(HelloError::Incomplete) => None,
            Err(e) => Some(Hello::Other(e)),
        })
    });
    tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no complete ClientHello in time"))?
}
