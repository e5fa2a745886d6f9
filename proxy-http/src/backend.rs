//! [`Backend`]: where one route's requests go. It picks an upstream address (the core's
//! balancing, or the sticky cookie's address), reuses an idle connection to it or
//! connects (with the core's failover, then TLS with `upstream_tls`), sends the request,
//! waits for the response head within `request_timeout`, and tries again on another
//! connection when a connection failed before the request could be answered.

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use proxy_core::tls::ClientTls;
use proxy_core::{BuildError, ForwardSpec, Upstream, UpstreamOpen};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::body::{self, Body};
use crate::error::ProxyError;
use crate::pool::{Conn, Pool, Stream, Wire};

/// What TLS to upstreams offers by ALPN: the proxy speaks HTTP/1.1 to them.
pub(crate) const UPSTREAM_ALPN: &[&str] = &["http/1.1"];

/// A connection to an upstream, as a [`Connector`] makes it.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// The future of [`Connector::connect`].
pub type Connecting<'a> = Pin<Box<dyn Future<Output = io::Result<Box<dyn Io>>> + Send + 'a>>;

/// Opens connections to one upstream of your own (an API server over TLS, say), for a
/// route that does not go to a [`Target`](proxy_core::Target).
pub trait Connector: Send + Sync + 'static {
    /// Opens a new connection.
    fn connect(&self) -> Connecting<'_>;

    /// What the upstream is called in logs.
    fn name(&self) -> String;
}

/// How a backend reaches its upstream.
enum Dial {
    /// A target's addresses, through the core.
    Upstream(Upstream),
    /// One upstream reached through a connector.
    Custom(Arc<dyn Connector>),
}

/// How many new connections in a row may close before a request could be written on
/// them, before the request fails with 502.
const MAX_FRESH_UNSENT: u32 = 3;

/// The pool key of a [`Dial::Custom`] upstream, which has one endpoint.
const CUSTOM: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);

/// One route's upstream: how it is reached, its idle connections, and its settings.
pub(crate) struct Backend {
    dial: Dial,
    /// TLS on every new connection to a target (`upstream_tls`, or a service proxy's
    /// `https:` Service), built once: pooled connections keep theirs.
    tls: Option<ClientTls>,
    pool: Arc<Pool<Conn>>,
    /// Idle connections of the proxy's own HTTP/1.1 path.
    wires: Pool<Wire>,
    /// How long a request waits for the response head.
    pub(crate) request_timeout: Option<Duration>,
    /// How many times an idempotent request is sent again on a closed connection.
    pub(crate) retries: u32,
    /// The sticky cookie's name, when on.
    pub(crate) sticky_cookie: Option<String>,
    /// The largest request body passed on.
    pub(crate) max_request_body: Option<u64>,
}

/// A response head from an upstream, with what the rest of the exchange needs.
pub(crate) struct Sent {
    /// The response; its body streams from the upstream connection.
    pub(crate) response: Response<Incoming>,
    /// The upstream address that answered (`0.0.0.0:0` for a connector's upstream).
    pub(crate) addr: SocketAddr,
    /// The connection, driven by the response body, and kept for the next request once
    /// the exchange has ended.
    pub(crate) conn: Conn,
    /// The request counted open on the address, until dropped.
    pub(crate) open: Option<UpstreamOpen>,
    /// The sticky cookie's value for `addr`, when the client did not send it.
    pub(crate) set_cookie: Option<String>,
}

impl Backend {
    /// The backend of a route whose settings are `spec` (its target set), with TLS to
    /// the target when `upstream_tls` is on (its CA file read now; `upstream_insecure`
    /// warns now). Its own path's idle connections are kept per worker thread, of
    /// `workers`.
    pub(crate) fn new(spec: &ForwardSpec, workers: usize) -> io::Result<Backend> {
        let tls = ClientTls::from_spec(spec, UPSTREAM_ALPN).map_err(|e| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("{}: {e}", e.key()))
        })?;
        Backend::with_tls(spec, workers, tls)
    }

    /// The backend of `spec`'s target with `tls` on its connections, whatever
    /// `spec`'s own TLS keys say.
    pub(crate) fn with_tls(
        spec: &ForwardSpec,
        workers: usize,
        tls: Option<ClientTls>,
    ) -> io::Result<Backend> {
        let resolver = spec.make_resolver()?;
        let upstream = Upstream::new(spec, resolver).map_err(io::Error::other)?;
        let mut backend = Backend::with_dial(Dial::Upstream(upstream), spec, workers);
        backend.tls = tls;
        Ok(backend)
    }

    /// A backend reaching its upstream through `connector`, with `spec`'s HTTP settings.
    pub(crate) fn custom(connector: Arc<dyn Connector>, spec: &ForwardSpec) -> Backend {
        Backend::with_dial(Dial::Custom(connector), spec, 1)
    }

    /// Idle connections of the own path are kept per worker thread, of `workers`.
    fn with_dial(dial: Dial, spec: &ForwardSpec, workers: usize) -> Backend {
        Backend {
            dial,
            tls: None,
            pool: Arc::default(),
            wires: Pool::new(workers),
            request_timeout: spec.request_timeout,
            retries: spec.retries,
            sticky_cookie: spec.sticky_cookie.clone(),
            max_request_body: spec.max_request_body.map(|n| n as u64),
        }
    }

    /// The upstream, as logs name it.
    pub(crate) fn name(&self) -> String {
        match &self.dial {
            Dial::Upstream(u) => u.target().to_string(),
            Dial::Custom(c) => c.name(),
        }
    }

    /// The core upstream, for its stats.
    pub(crate) fn upstream(&self) -> Option<&Upstream> {
        match &self.dial {
            Dial::Upstream(u) => Some(u),
            Dial::Custom(_) => None,
        }
    }

    /// The idle connections, to give a connection back to once its exchange has ended.
    pub(crate) fn pool(&self) -> &Arc<Pool<Conn>> {
        &self.pool
    }

    /// The addresses to try for a request from `client`, best first: the balancer's
    /// order, with the address the sticky cookie's value `sticky` names first.
    async fn order(
        &self,
        client: IpAddr,
        sticky: Option<&str>,
    ) -> Result<Vec<SocketAddr>, ProxyError> {
        let mut order = match &self.dial {
            Dial::Upstream(u) => u.order(Some(client)).await?,
            Dial::Custom(_) => vec![CUSTOM],
        };
        if order.is_empty() {
            return Err(ProxyError::NoEndpoints("no addresses".to_owned()));
        }
        if self.sticky_cookie.is_some()
            && let Some(i) = sticky.and_then(|v| order.iter().position(|a| cookie_value(*a) == v))
        {
            order[..=i].rotate_right(1);
        }
        Ok(order)
    }

    /// The sticky cookie's value to set for `addr`, when the client's (`sticky`) does not
    /// name it: none yet, an address gone, or one that failed over.
    pub(crate) fn set_cookie(&self, addr: SocketAddr, sticky: Option<&str>) -> Option<String> {
        (self.sticky_cookie.as_ref())
            .map(|_| cookie_value(addr))
            .filter(|v| sticky != Some(v.as_str()))
    }

    /// A connection for one request of the proxy's own HTTP/1.1 path, from `client`
    /// with the sticky cookie's value `sticky`: an idle one to the first address of the
    /// order, or a new one (the first of the order that accepts). Says whether it was
    /// reused (a request on it may meet a close the upstream sent meanwhile). `worker`
    /// is the thread asking: connections are its own.
    pub(crate) async fn wire(
        &self,
        worker: usize,
        client: IpAddr,
        sticky: Option<&str>,
    ) -> Result<(Wire, bool), ProxyError> {
        let Dial::Upstream(u) = &self.dial else {
            return Err(ProxyError::Connect(
                "not a target the core dials".to_owned(),
            ));
        };
        let order = self.order(client, sticky).await?;
        if let Some(wire) = self.wires.take(worker, order[0]) {
            return Ok((wire, true));
        }
        let (stream, addr) = u.connect(order.clone(), Some(client)).await?;
        if addr != order[0]
            && let Some(wire) = self.wires.take(worker, addr)
        {
            // The pick failed over to an address with an idle connection.
            return Ok((wire, true));
        }
        let _ = stream.set_nodelay(true);
        let stream = self.originate(u, stream, addr).await?;
        Ok((Wire::new(stream, addr, worker), false))
    }

    /// A new connection for a request to send again after `failed` closed: never a
    /// pooled one (they may all have been closed alike).
    pub(crate) async fn fresh_wire(
        &self,
        worker: usize,
        client: IpAddr,
        failed: SocketAddr,
    ) -> Result<Wire, ProxyError> {
        let Dial::Upstream(u) = &self.dial else {
            return Err(ProxyError::Connect(
                "not a target the core dials".to_owned(),
            ));
        };
        let (stream, addr) = u.connect(vec![failed], Some(client)).await?;
        let _ = stream.set_nodelay(true);
        let stream = self.originate(u, stream, addr).await?;
        Ok(Wire::new(stream, addr, worker))
    }

    /// Puts TLS on `stream`, a new connection to `addr` of `u`, when the backend
    /// originates it, within the `connect` timeout. A failed handshake is logged with
    /// why (an expired certificate, one for another name, one no trusted CA issued),
    /// counted against the address, and answered 502 (504 when it timed out).
    async fn originate(
        &self,
        u: &Upstream,
        stream: TcpStream,
        addr: SocketAddr,
    ) -> Result<Stream, ProxyError> {
        let Some(tls) = &self.tls else {
            return Ok(Stream::Plain(stream));
        };
        let limit = u.timeouts().connect;
        let handshake = tokio::time::timeout(limit, tls.connect(stream, u.target().host()));
        let (error, timed_out) = match handshake.await {
            Ok(Ok(stream)) => return Ok(Stream::Tls(Box::new(stream))),
            Ok(Err(e)) => (e.to_string(), false),
            Err(_) => (format!("no TLS handshake within {limit:?}"), true),
        };
        u.report(addr, false);
        tracing::warn!(
            upstream = %addr,
            target = %u.target(),
            server_name = tls.server_name(),
            error,
            "upstream TLS handshake failed"
        );
        let why = format!("TLS handshake with {addr}: {error}");
        Err(match timed_out {
            true => ProxyError::ConnectTimeout(why),
            false => ProxyError::Connect(why),
        })
    }

    /// The idle connections of the proxy's own HTTP/1.1 path.
    pub(crate) fn wires(&self) -> &Pool<Wire> {
        &self.wires
    }

    /// Sends `request` from `client` upstream and waits for the response head. `sticky`
    /// is the sticky cookie's value the client sent, if any.
    pub(crate) async fn send(
        &self,
        request: Request<Body>,
        client: IpAddr,
        sticky: Option<&str>,
    ) -> Result<Sent, ProxyError> {
        let order = self.order(client, sticky).await?;
        let mut request = Some(request);
        let mut retries = self.retries;
        let mut fresh_unsent = 0;
        loop {
            let Some(req) = request.take() else {
                return Err(ProxyError::Upstream(
                    "the request could not be sent".to_owned(),
                ));
            };
            let (mut conn, addr, reused) = self.connection(&order, client).await?;
            // A kept-alive connection may have been closed by the upstream just now: a
            // bodiless idempotent request on one can be sent again; keep what it takes.
            let again = (reused
                && retries > 0
                && is_idempotent(req.method())
                && http_body::Body::is_end_stream(req.body()))
            .then(|| {
                (
                    req.method().clone(),
                    req.uri().clone(),
                    req.version(),
                    req.headers().clone(),
                )
            });
            let open = self.upstream().map(|u| u.open(addr));
            let sent = conn.sender().try_send_request(req);
            let sent = conn.alongside(sent);
            let result = match self.request_timeout {
                Some(limit) => match tokio::time::timeout(limit, sent).await {
                    Ok(r) => r,
                    Err(_) => return Err(ProxyError::Timeout),
                },
                None => sent.await,
            };
            match result {
                Ok(response) => {
                    // The address's success was counted when it connected.
                    return Ok(Sent {
                        response,
                        addr,
                        conn,
                        open,
                        set_cookie: self.set_cookie(addr, sticky),
                    });
                }
                Err(mut e) => {
                    let unsent = e.take_message();
                    let error = e.into_error();
                    if let Some(body_err) = body_error(&error) {
                        return Err(body_err);
                    }
                    tracing::debug!(upstream = %addr, reused, error = %error, "upstream request failed");
                    if let Some(unsent) = unsent
                        && (reused || fresh_unsent < MAX_FRESH_UNSENT)
                    {
                        // Never written: safe to send anywhere. Idle connections the
                        // upstream closed are passed over freely; new ones that close
                        // before taking a request, only a few times.
                        fresh_unsent += u32::from(!reused);
                        request = Some(unsent);
                        continue;
                    }
                    let closed_early =
                        error.is_incomplete_message() || error.is_canceled() || error.is_closed();
                    if !(reused && closed_early)
                        && let Some(u) = self.upstream()
                    {
                        u.report(addr, false);
                    }
                    match (&again, retries) {
                        (Some((method, uri, version, headers)), 1..) if closed_early => {
                            retries -= 1;
                            let mut req = Request::new(body::empty());
                            *req.method_mut() = method.clone();
                            *req.uri_mut() = uri.clone();
                            *req.version_mut() = *version;
                            *req.headers_mut() = headers.clone();
                            request = Some(req);
                        }
                        _ => return Err(ProxyError::Upstream(error.to_string())),
                    }
                }
            }
        }
    }

    /// A connection for one request: an idle one to the first address of `order`, or a
    /// new one (the first of `order` that accepts). Says whether it was reused.
    async fn connection(
        &self,
        order: &[SocketAddr],
        client: IpAddr,
    ) -> Result<(Conn, SocketAddr, bool), ProxyError> {
        while let Some(mut conn) = self.pool.take(0, order[0]) {
            // An idle connection is ready once its last response has been read; one the
            // server closed meanwhile fails here and the next is tried. One that says it
            // is ready is used at once: were it closed meanwhile, the request comes back
            // unsent and goes on another.
            if conn.is_ready() || conn.ready().await.is_ok() {
                return Ok((conn, order[0], true));
            }
        }
        let (io, addr): (Box<dyn Io>, SocketAddr) = match &self.dial {
            Dial::Upstream(u) => {
                let (stream, addr) = u.connect(order.to_vec(), Some(client)).await?;
                if let Some(mut conn) = (addr != order[0])
                    .then(|| self.pool.take(0, addr))
                    .flatten()
                    && conn.ready().await.is_ok()
                {
                    // The pick failed over to an address with an idle connection.
                    return Ok((conn, addr, true));
                }
                match self.originate(u, stream, addr).await? {
                    Stream::Plain(stream) => (Box::new(stream), addr),
                    Stream::Tls(stream) => (stream, addr),
                }
            }
            Dial::Custom(c) => {
                let io = c
                    .connect()
                    .await
                    .map_err(|e| ProxyError::Connect(format!("{}: {e}", c.name())))?;
                (io, CUSTOM)
            }
        };
        let (sender, connection) = hyper::client::conn::http1::Builder::new()
            .handshake(TokioIo::new(io))
            .await
            .map_err(|e| ProxyError::Connect(e.to_string()))?;
        // No task of its own: each request using it drives it.
        Ok((
            Conn::new(sender, connection.with_upgrades(), addr),
            addr,
            false,
        ))
    }
}

/// Reads the upstream CA files `spec` names for its HTTP upstreams (each route's with
/// `upstream_tls`, and a service proxy's for its `https:` Services), so that a bad one
/// is an error when the settings are checked, not first when the forward starts. Builds
/// no TLS configuration to keep (nor warns of `upstream_insecure`: that comes with the
/// backends, at each start).
///
/// # Errors
///
/// A CA file cannot be used: [`BuildError::Invalid`] naming `upstream_ca`, or `route`
/// with the route when the route set it.
pub(crate) fn check_upstream_ca(spec: &ForwardSpec) -> Result<(), BuildError> {
    let read = |spec: &ForwardSpec| {
        let mut checked = spec.clone();
        checked.upstream_tls = true;
        checked.upstream_insecure = false;
        checked.upstream_server_name = None;
        ClientTls::from_spec(&checked, &[]).map(drop)
    };
    let mut seen = std::collections::HashSet::new();
    if spec.service_proxy && spec.upstream_ca.is_some() {
        read(spec)?;
        seen.insert(spec.upstream_ca.clone());
    }
    for route in spec.http_routes() {
        let Ok(route_spec) = route.spec(spec) else {
            continue; // validate() said why
        };
        if !route_spec.upstream_tls
            || route_spec.upstream_ca.is_none()
            || !seen.insert(route_spec.upstream_ca.clone())
        {
            continue;
        }
        read(&route_spec).map_err(|e| {
            match route.options.iter().any(|(k, _)| k == "upstream_ca") {
                true => BuildError::Invalid {
                    key: "route",
                    why: format!("`{route}`: upstream_ca: {e}"),
                },
                false => e,
            }
        })?;
    }
    Ok(())
}

/// The request body's own error (too large, or the client went away), if that is what
/// failed the exchange.
fn body_error(error: &hyper::Error) -> Option<ProxyError> {
    let mut source = std::error::Error::source(error);
    while let Some(e) = source {
        if let Some(too_large) = e.downcast_ref::<crate::body::TooLarge>() {
            return Some(ProxyError::TooLarge(too_large.limit));
        }
        source = e.source();
    }
    error
        .is_body_write_aborted()
        .then(|| ProxyError::Upstream("the client's request body failed".to_owned()))
}

/// Methods a request may be sent twice with (RFC 9110 §9.2.2).
fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

/// The sticky cookie's value for `addr`: a hash, so the cookie does not tell the client
/// the upstream's address.
pub(crate) fn cookie_value(addr: SocketAddr) -> String {
    // FNV-1a of the address's text: the same across restarts and replicas of the proxy,
    // so a client keeps its address when another replica serves it.
    let hash = (addr.to_string().bytes()).fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{hash:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_values_are_stable_and_differ_by_address() {
        let a: SocketAddr = "10.0.0.1:80".parse().unwrap();
        let b: SocketAddr = "10.0.0.2:80".parse().unwrap();
        assert_eq!(cookie_value(a), cookie_value(a));
        assert_ne!(cookie_value(a), cookie_value(b));
        assert_eq!(cookie_value(a).len(), 16);
    }
}
