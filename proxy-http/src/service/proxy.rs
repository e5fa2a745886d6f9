//! [`ServiceProxy`]: what answers the service proxy URL, in one of three ways: from
//! cluster DNS (`service_proxy = true`), through the API server ([`ApiServer`], what
//! `kubectl proxy` does), or from endpoints the caller knows ([`ServiceEndpoints`], the
//! API server's side, as `proxy port-forward-server` serves it).

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body::{Body as HttpBody, Frame};
use proxy_core::tls::ClientTls;
use proxy_core::{BuildError, ForwardSpec, Picker, Target};

use super::{
    Filter, HtmlRewriter, PortRef, Scheme, ServiceUrl, forbidden, is_rewritable_html,
    needs_slash_redirect, redirect_to_slash, rewrite_location,
};
use crate::backend::{Backend, Connecting, Connector, Io, UPSTREAM_ALPN};
use crate::body::{self, Body, BoxError, Ended};
use crate::error::ProxyError;
use crate::exchange::{ClientBody, Exchange, Forward, host_of};
use crate::headers;
use crate::stats::RouteStats;

/// The most Services (distinct name, namespace and port) with a backend kept at once;
/// the least recently used one goes first.
pub const MAX_SERVICE_BACKENDS: usize = 1024;

/// The API server that every request goes to, with `kubectl proxy`'s credentials: how to
/// connect to it, the headers to set on each request (`Authorization`, `Host`), and the
/// path of its URL, if any, put before every request's path.
///
/// # Examples
///
/// ```no_run
/// use std::sync::Arc;
/// use http::{HeaderValue, header};
/// use proxy_core::ForwardSpec;
/// use proxy_http::service::ApiServer;
/// use proxy_http::{Connecting, Connector, HttpForwarder, Io};
///
/// /// A plain-TCP API server (`kubectl proxy` talks TLS to a real one).
/// struct Plain(std::net::SocketAddr);
///
/// impl Connector for Plain {
///     fn connect(&self) -> Connecting<'_> {
///         Box::pin(async move {
///             let s = tokio::net::TcpStream::connect(self.0).await?;
///             Ok(Box::new(s) as Box<dyn Io>)
///         })
///     }
///     fn name(&self) -> String {
///         self.0.to_string()
///     }
/// }
///
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let mut spec = ForwardSpec::default();
/// spec.set("protocol", "http")?;
/// spec.set("listen", "127.0.0.1:8001")?;
/// spec.set("service_proxy", "true")?;
/// let mut api = ApiServer::new(Arc::new(Plain("10.0.0.1:6443".parse()?)));
/// api.header(header::AUTHORIZATION, HeaderValue::from_static("Bearer TOKEN"))
///     .path_prefix("/k8s/clusters/c1");
/// let mut forwarder = HttpForwarder::new(spec)?;
/// forwarder.api_server(api);
/// let handle = forwarder.start()?;
/// # drop(handle);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct ApiServer {
    connector: Arc<dyn Connector>,
    headers: HeaderMap,
    path_prefix: String,
}

/// Where the node side's Services are: for a service proxy URL, connectors to the
/// Service's endpoints (one per pod) with the URL's port.
pub trait ServiceEndpoints: Send + Sync + 'static {
    /// The endpoints of the Service `url` names, at its port; asked on each new upstream
    /// connection, so they may change.
    ///
    /// # Errors
    ///
    /// The Service or its port does not exist ([`EndpointsError::NotFound`], 404), or it
    /// has no endpoint to reach ([`EndpointsError::Unavailable`], 503).
    fn endpoints(&self, url: &ServiceUrl) -> Result<Vec<Arc<dyn Connector>>, EndpointsError>;
}

/// Why a Service's endpoints cannot be had; the message is the answer's body.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EndpointsError {
    /// No such Service (or port): 404 Not Found.
    NotFound(String),
    /// No endpoint to send to: 503 Service Unavailable.
    Unavailable(String),
}

/// Answers the service proxy URL (and, through an [`ApiServer`], every request): the
/// filter, the `301` to `.../proxy/`, forwarding with `X-Forwarded-Uri`, and rewriting
/// `Location`, `Content-Location` and, with `rewrite_html`, HTML links into the prefix.
/// An [`HttpForwarder`](crate::HttpForwarder) with `service_proxy = true` makes one; a
/// server of your own calls [`handle`](ServiceProxy::handle).
pub struct ServiceProxy {
    filter: Option<Filter>,
    spec: ForwardSpec,
    mode: Mode,
    backends: Mutex<Backends>,
    /// TLS to `https:` Services, from `upstream_ca`, `upstream_insecure` and
    /// `upstream_server_name`: built at the start when one is set (a bad CA file fails
    /// it, `upstream_insecure` warns at it), else at the first `https:` request (the
    /// system's CAs are read only when needed; without them, such requests get 502).
    tls: OnceLock<Result<ClientTls, String>>,
    pub(crate) stats: Arc<RouteStats>,
}

/// How the service proxy reaches what it serves.
enum Mode {
    /// Each Service through cluster DNS.
    Dns,
    /// Every request to the API server.
    Api {
        backend: Arc<Backend>,
        headers: HeaderMap,
        path_prefix: String,
    },
    /// Each Service through the caller's endpoints.
    Endpoints(Arc<dyn ServiceEndpoints>),
}

/// A Service and port, and how it is spoken to: namespace, name, port, scheme.
type ServiceKey = (String, String, Option<PortRef>, Scheme);

/// The Services' backends, least recently used first out.
#[derive(Default)]
struct Backends {
    map: HashMap<ServiceKey, (Arc<Backend>, u64)>,
    tick: u64,
}

// ===== impl ApiServer =====

impl ApiServer {
    /// The API server `connector` connects to, with no header and no path prefix.
    pub fn new(connector: Arc<dyn Connector>) -> ApiServer {
        ApiServer {
            connector,
            headers: HeaderMap::new(),
            path_prefix: String::new(),
        }
    }

    /// Sets `name` to `value` on every request (replacing what the client sent), after the
    /// forwarded headers: `Authorization` for credentials, `Host` for the server's name.
    pub fn header(&mut self, name: HeaderName, value: HeaderValue) -> &mut Self {
        self.headers.insert(name, value);
        self
    }

    /// Puts `prefix` (the path of the server's URL, `/k8s/clusters/c1`) before every
    /// request's path. Default none.
    pub fn path_prefix(&mut self, prefix: &str) -> &mut Self {
        self.path_prefix = prefix.trim_end_matches('/').to_owned();
        self
    }
}

impl fmt::Debug for ApiServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiServer")
            .field("server", &self.connector.name())
            .field("path_prefix", &self.path_prefix)
            .finish_non_exhaustive()
    }
}

// ===== impl ServiceProxy =====

impl ServiceProxy {
    /// The service proxy of an HTTP forward with `service_proxy = true`: Services through
    /// cluster DNS, behind the forward's filter.
    ///
    /// `https:NAME:PORT` Services are reached over TLS: their certificates are verified
    /// against `upstream_ca` (else the system's CAs) and the name `NAME.NAMESPACE.svc`
    /// (else `upstream_server_name`), or not at all with `upstream_insecure` (which
    /// warns now). A CA file is read now.
    ///
    /// # Errors
    ///
    /// A filter pattern does not compile, or the CA file cannot be used:
    /// [`BuildError::Invalid`] names its key.
    pub fn dns(spec: &ForwardSpec) -> Result<ServiceProxy, BuildError> {
        let proxy = ServiceProxy::with_mode(Some(filter(spec)?), spec, Mode::Dns);
        if spec.upstream_ca.is_some()
            || spec.upstream_insecure
            || spec.upstream_server_name.is_some()
        {
            let tls = service_tls(spec)?;
            let _ = proxy.tls.set(Ok(tls));
        }
        Ok(proxy)
    }

    /// Checks what [`dns`](ServiceProxy::dns) would build from `spec` (the filter's
    /// patterns; the CA file is checked with the routes'), keeping nothing and logging
    /// nothing.
    pub(crate) fn check(spec: &ForwardSpec) -> Result<(), BuildError> {
        filter(spec).map(drop)
    }

    /// Every request to the API server, behind the forward's filter: `kubectl proxy`. Of
    /// the forwarded headers only `X-Forwarded-For` is added, as kubectl proxy's Go
    /// `ReverseProxy` does; the API server adds the others for the Service.
    ///
    /// # Errors
    ///
    /// A filter pattern does not compile: [`BuildError::Invalid`] names its key.
    pub fn api_server(spec: &ForwardSpec, api: ApiServer) -> Result<ServiceProxy, BuildError> {
        let mode = Mode::Api {
            backend: Arc::new(Backend::custom(api.connector, spec)),
            headers: api.headers,
            path_prefix: api.path_prefix,
        };
        Ok(ServiceProxy::with_mode(Some(filter(spec)?), spec, mode))
    }

    /// Services through `endpoints`, with no filter (the API server has none): the API
    /// server's side of the service proxy. `spec` gives the HTTP settings
    /// (`request_timeout`, `retries`, `max_request_body`, `rewrite_html`).
    pub fn endpoints(spec: &ForwardSpec, endpoints: Arc<dyn ServiceEndpoints>) -> ServiceProxy {
        ServiceProxy::with_mode(None, spec, Mode::Endpoints(endpoints))
    }

    fn with_mode(filter: Option<Filter>, spec: &ForwardSpec, mode: Mode) -> ServiceProxy {
        ServiceProxy {
            filter,
            spec: spec.clone(),
            mode,
            backends: Mutex::default(),
            tls: OnceLock::new(),
            stats: Arc::default(),
        }
    }

    /// Whether every request is this proxy's (through the API server).
    pub(crate) fn takes_everything(&self) -> bool {
        matches!(self.mode, Mode::Api { .. })
    }

    /// The settings it was made with.
    pub(crate) fn spec(&self) -> &ForwardSpec {
        &self.spec
    }

    /// Answers one request from `client`, who reached the proxy over `proto` (`http` or
    /// `https`).
    pub async fn handle<B>(
        &self,
        request: Request<B>,
        client: SocketAddr,
        proto: &'static str,
    ) -> Response<Body>
    where
        B: HttpBody<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let mut exchange = Exchange::new(&request, client);
        exchange.route = "service-proxy".into();
        let path = request.uri().path();
        let query = request.uri().query();
        if request.method() != Method::CONNECT
            && let Some(clean) = clean_path(path)
        {
            // What kubectl's Go mux does before its filter sees the path.
            let location = match query {
                Some(q) if !q.is_empty() => format!("{clean}?{q}"),
                _ => clean,
            };
            let mut response = Response::new(body::empty());
            *response.status_mut() = StatusCode::MOVED_PERMANENTLY;
            if let Ok(v) = HeaderValue::from_str(&location) {
                response.headers_mut().insert(header::LOCATION, v);
            }
            return self.answer(&exchange, response);
        }
        if let Some(filter) = &self.filter
            && !filter.accepts(request.method(), path, host_of(&request))
        {
            tracing::debug!(client = %client, path, "refused by the filter");
            return self.answer(
                &exchange,
                forbidden::<http_body_util::Full<Bytes>>().map(body::boxed),
            );
        }
        match &self.mode {
            Mode::Api {
                backend,
                headers,
                path_prefix,
            } => {
                let pq = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
                let uri = match format!("{path_prefix}{pq}").parse::<Uri>() {
                    Ok(uri) => uri,
                    Err(_) => return self.text(&exchange, StatusCode::BAD_REQUEST, "bad path"),
                };
                Forward {
                    backend,
                    stats: &self.stats,
                    uri,
                    proto,
                    forwarded_uri: false,
                    forwarded_for_only: true,
                    set_headers: Some(headers),
                }
                .run(request, exchange)
                .await
            }
            Mode::Dns | Mode::Endpoints(_) => self.service(request, exchange, proto).await,
        }
    }

    /// Answers a request for a service proxy URL.
    async fn service(
        &self,
        request: Request<impl ClientBody>,
        exchange: Exchange,
        proto: &'static str,
    ) -> Response<Body> {
        let path = request.uri().path();
        let query = request.uri().query();
        let url = match ServiceUrl::parse(path) {
            Ok(Some(url)) => url,
            Ok(None) => {
                return self.text(
                    &exchange,
                    StatusCode::NOT_FOUND,
                    "only service proxy URLs are served here: \
                     /api/v1/namespaces/NAMESPACE/services/NAME[:PORT]/proxy/PATH",
                );
            }
            Err(e) => return self.text(&exchange, StatusCode::BAD_REQUEST, &e.to_string()),
        };
        if url.scheme == Scheme::Https && matches!(self.mode, Mode::Endpoints(_)) {
            // 502: the request is valid (the API server would serve it), but this side
            // does not speak TLS to the endpoints it is given.
            return self.text(
                &exchange,
                StatusCode::BAD_GATEWAY,
                "https: Services are not served through endpoints (TLS to them is for \
                 proxy service-proxy, from cluster DNS); use http: or no scheme",
            );
        }
        let upgrade = headers::upgrade(request.headers()).is_some();
        if !upgrade && needs_slash_redirect(request.method(), &url) {
            return self.answer(
                &exchange,
                redirect_to_slash::<http_body_util::Full<Bytes>>(path, query).map(body::boxed),
            );
        }
        let cluster_domain = &self.spec.cluster_domain;
        let default_port = match url.scheme {
            Scheme::Https => 443,
            Scheme::Http => 80,
        };
        let authority = match &url.port {
            Some(PortRef::Number(port)) if *port != default_port => {
                format!("{}:{port}", url.host(cluster_domain))
            }
            _ => url.host(cluster_domain),
        };
        let backend = match self.backend(&url) {
            Ok(backend) => backend,
            Err(e) => return self.refusal(&exchange, e),
        };
        let Ok(uri) = url.upstream_path_and_query(query).parse::<Uri>() else {
            return self.text(&exchange, StatusCode::BAD_REQUEST, "bad path");
        };
        let mut set = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_str(&authority) {
            set.insert(header::HOST, v);
        }
        let response = Forward {
            backend: &backend,
            stats: &self.stats,
            uri,
            proto,
            forwarded_uri: true,
            forwarded_for_only: false,
            set_headers: Some(&set),
        }
        .run(request, exchange)
        .await;
        self.rewrite(response, &url.prefix, &authority)
    }

    /// The backend of `url`'s Service and port, made on first use.
    fn backend(&self, url: &ServiceUrl) -> Result<Arc<Backend>, Refusal> {
        if let Mode::Endpoints(source) = &self.mode {
            // Asked now for the status; the backend asks again at each connect.
            match source.endpoints(url) {
                Ok(list) if list.is_empty() => {
                    return Err(Refusal::Unavailable(format!(
                        "no endpoints available for service \"{}\"",
                        url.name
                    )));
                }
                Ok(_) => {}
                Err(EndpointsError::NotFound(why)) => return Err(Refusal::NotFound(why)),
                Err(EndpointsError::Unavailable(why)) => return Err(Refusal::Unavailable(why)),
            }
        }
        let key = (
            url.namespace.clone(),
            url.name.clone(),
            url.port.clone(),
            url.scheme,
        );
        let mut backends = self.backends.lock().unwrap_or_else(|e| e.into_inner());
        backends.tick += 1;
        let tick = backends.tick;
        if let Some((backend, used)) = backends.map.get_mut(&key) {
            *used = tick;
            return Ok(backend.clone());
        }
        let backend = match &self.mode {
            Mode::Dns => {
                let domain = &self.spec.cluster_domain;
                let target = match (&url.port, url.srv_name(domain)) {
                    (_, Some(srv)) => format!("srv:{srv}"),
                    (Some(PortRef::Number(port)), None) => format!("{}:{port}", url.host(domain)),
                    _ => format!("{}:80", url.host(domain)),
                };
                let mut spec = self.spec.clone();
                spec.routes.clear();
                spec.target = Some(
                    target
                        .parse::<Target>()
                        .map_err(|e| Refusal::BadRequest(e.to_string()))?,
                );
                // The URL's scheme says whether the Service is spoken to over TLS.
                let tls = match url.scheme {
                    Scheme::Https => Some(self.tls_for(url).map_err(Refusal::BadGateway)?),
                    Scheme::Http => None,
                };
                Backend::with_tls(&spec, 1, tls).map_err(|e| Refusal::Unavailable(e.to_string()))?
            }
            Mode::Endpoints(source) => Backend::custom(
                Arc::new(Balanced {
                    source: source.clone(),
                    url: url.clone(),
                    picker: Picker::new(self.spec.balance(), self.spec.ejection()),
                }),
                &self.spec,
            ),
            Mode::Api { backend, .. } => return Ok(backend.clone()),
        };
        if backends.map.len() >= MAX_SERVICE_BACKENDS
            && let Some(oldest) = (backends.map.iter())
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone())
        {
            backends.map.remove(&oldest);
        }
        let backend = Arc::new(backend);
        backends.map.insert(key, (backend.clone(), tick));
        Ok(backend)
    }

    /// Moves the upstream's `Location`, `Content-Location` and (with `rewrite_html`) HTML
    /// links into `prefix`.
    fn rewrite(
        &self,
        mut response: Response<Body>,
        prefix: &str,
        authority: &str,
    ) -> Response<Body> {
        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            return response;
        }
        for name in [header::LOCATION, header::CONTENT_LOCATION] {
            let moved = (response.headers().get(&name))
                .and_then(|v| v.to_str().ok())
                .and_then(|v| rewrite_location(v, prefix, authority))
                .and_then(|v| HeaderValue::from_str(&v).ok());
            if let Some(v) = moved {
                response.headers_mut().insert(name, v);
            }
        }
        if self.spec.rewrite_html && is_rewritable_html(response.headers()) {
            response.headers_mut().remove(header::CONTENT_LENGTH);
            response = response.map(|inner| {
                body::boxed(Rewritten {
                    inner,
                    rewriter: HtmlRewriter::new(prefix, authority),
                    done: false,
                })
            });
        }
        response
    }

    /// Answers with `response`, counted and logged.
    fn answer(&self, exchange: &Exchange, response: Response<Body>) -> Response<Body> {
        self.stats
            .answered(response.status().as_u16(), exchange.start.elapsed());
        exchange.end(
            &self.stats,
            response.status(),
            (0, 0),
            &"-",
            Ended::Complete,
        );
        response
    }

    /// Answers with `status` and the line `text`.
    fn text(&self, exchange: &Exchange, status: StatusCode, text: &str) -> Response<Body> {
        let mut response = Response::new(body::full(format!("{text}\n")));
        *response.status_mut() = status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        self.answer(exchange, response)
    }

    fn refusal(&self, exchange: &Exchange, refusal: Refusal) -> Response<Body> {
        match refusal {
            Refusal::NotFound(why) => self.text(exchange, StatusCode::NOT_FOUND, &why),
            Refusal::Unavailable(why) => self.text(exchange, StatusCode::SERVICE_UNAVAILABLE, &why),
            Refusal::BadRequest(why) => self.text(exchange, StatusCode::BAD_REQUEST, &why),
            Refusal::BadGateway(why) => self.text(exchange, StatusCode::BAD_GATEWAY, &why),
        }
    }

    /// TLS to the `https:` Service `url` names: the forward's, sending and verifying
    /// `NAME.NAMESPACE.svc` unless `upstream_server_name` is set.
    ///
    /// `NAME.NAMESPACE.svc` rather than `NAME.NAMESPACE.svc.CLUSTER_DOMAIN` (what is
    /// connected to): it is the name the API server itself verifies a Service's
    /// certificate against (admission webhooks, aggregated APIs), so it is the one
    /// certificates issued for in-cluster Services carry (the cluster CA's, cert-manager's),
    /// and it holds whatever the cluster domain is, which certificate issuers often do not
    /// know. The longer name is usually a SAN as well, but not always.
    fn tls_for(&self, url: &ServiceUrl) -> Result<ClientTls, String> {
        let tls = self.tls.get_or_init(|| {
            service_tls(&self.spec).map_err(|e| {
                let why = format!("TLS to https: Services cannot be set up: {e}");
                tracing::warn!(error = %e, "TLS to https: Services cannot be set up");
                why
            })
        });
        let tls = tls.as_ref().map_err(Clone::clone)?;
        if self.spec.upstream_server_name.is_some() {
            return Ok(tls.clone());
        }
        (tls.with_server_name(&format!("{}.{}.svc", url.name, url.namespace)))
            .map_err(|e| e.to_string())
    }

    /// Requests no route serves, when this proxy does not take them: its 404, after the
    /// filter.
    pub(crate) fn not_found<B>(&self, request: &Request<B>, client: SocketAddr) -> Response<Body> {
        let exchange = Exchange::new(request, client);
        if let Some(filter) = &self.filter
            && !filter.accepts(request.method(), request.uri().path(), host_of(request))
        {
            return self.answer(
                &exchange,
                forbidden::<http_body_util::Full<Bytes>>().map(body::boxed),
            );
        }
        exchange.refuse(&self.stats, &ProxyError::NoRoute)
    }
}

impl fmt::Debug for ServiceProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mode = match self.mode {
            Mode::Dns => "dns",
            Mode::Api { .. } => "api-server",
            Mode::Endpoints(_) => "endpoints",
        };
        f.debug_struct("ServiceProxy")
            .field("mode", &mode)
            .finish_non_exhaustive()
    }
}

/// Why a service request is answered by the proxy.
enum Refusal {
    NotFound(String),
    Unavailable(String),
    BadRequest(String),
    /// The Service cannot be spoken to as asked (no TLS to set up): 502.
    BadGateway(String),
}

/// TLS to a service proxy's `https:` Services, from `spec`'s `upstream_*` keys (whatever
/// `upstream_tls` says: the URL asks for TLS), offering HTTP/1.1.
fn service_tls(spec: &ForwardSpec) -> Result<ClientTls, BuildError> {
    let mut spec = spec.clone();
    spec.upstream_tls = true;
    let tls = ClientTls::from_spec(&spec, UPSTREAM_ALPN)?;
    Ok(tls.expect("upstream_tls is on"))
}

/// The filter of `spec`'s four keys; a pattern that does not compile names its key.
fn filter(spec: &ForwardSpec) -> Result<Filter, BuildError> {
    Filter::new(
        &spec.accept_hosts,
        &spec.accept_paths,
        &spec.reject_paths,
        &spec.reject_methods,
    )
    .map_err(|e| BuildError::Invalid {
        key: e.list(),
        why: e.to_string(),
    })
}

/// The path Go's `ServeMux` redirects to (`.` and `..` segments resolved, doubled `/`
/// removed, a trailing `/` kept), when it differs from `path`.
fn clean_path(path: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    let mut clean = format!("/{}", parts.join("/"));
    if path.ends_with('/') && clean != "/" {
        clean.push('/');
    }
    (clean != path).then_some(clean)
}

/// Connects to one of a Service's endpoints, picked by the core's balancing (the spec's
/// `balance` and ejection), failing over to the next.
struct Balanced {
    source: Arc<dyn ServiceEndpoints>,
    url: ServiceUrl,
    /// Endpoints by name.
    picker: Picker<String>,
}

impl Connector for Balanced {
    fn connect(&self) -> Connecting<'_> {
        Box::pin(async move {
            let not_found = |why: String| std::io::Error::new(std::io::ErrorKind::NotFound, why);
            let list =
                (self.source.endpoints(&self.url)).map_err(|e| not_found(format!("{e:?}")))?;
            let names: Vec<String> = list.iter().map(|e| e.name()).collect();
            self.picker.retain(&names);
            let order = (self.picker.order(&names, None))
                .ok_or_else(|| not_found("every endpoint is ejected".to_owned()))?;
            let mut last = None;
            for name in order {
                let Some(endpoint) = list.iter().find(|e| e.name() == name) else {
                    continue;
                };
                match endpoint.connect().await {
                    Ok(io) => {
                        self.picker.report(&name, true);
                        return Ok::<Box<dyn Io>, _>(io);
                    }
                    Err(e) => {
                        self.picker.report(&name, false);
                        tracing::debug!(endpoint = %name, error = %e, "endpoint failed; trying the next");
                        last = Some(e);
                    }
                }
            }
            Err(last.unwrap_or_else(|| not_found("no endpoints".to_owned())))
        })
    }

    fn name(&self) -> String {
        format!("service {}/{}", self.url.namespace, self.url.name)
    }
}

/// A response body with its HTML links moved by an [`HtmlRewriter`].
struct Rewritten {
    inner: Body,
    rewriter: HtmlRewriter,
    done: bool,
}

impl HttpBody for Rewritten {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            match std::task::ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        let out = this.rewriter.push(&data);
                        if !out.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(out))));
                        }
                    }
                    Err(frame) => return Poll::Ready(Some(Ok(frame))),
                },
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => {
                    this.done = true;
                    let rest = this.rewriter.finish();
                    if !rest.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(rest))));
                    }
                }
            }
        }
    }
}

impl fmt::Display for EndpointsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EndpointsError::NotFound(why) | EndpointsError::Unavailable(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for EndpointsError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_cleaned_as_go_does() {
        assert_eq!(clean_path("/api/v1/"), None);
        assert_eq!(clean_path("/a/./b"), Some("/a/b".to_owned()));
        assert_eq!(clean_path("/a/b/../c/"), Some("/a/c/".to_owned()));
        assert_eq!(clean_path("/a//b"), Some("/a/b".to_owned()));
        assert_eq!(clean_path("/.."), Some("/".to_owned()));
        assert_eq!(clean_path("/"), None);
    }
}
