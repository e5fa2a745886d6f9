//! [`HttpForwarder`] and its [`HttpHandle`]: listeners, admission, TLS termination (the
//! `tls_*` keys), one connection task per client (HTTP/1.1 with keep-alive and upgrades,
//! or HTTP/2 over TLS), reload and graceful drain.

use std::convert::Infallible;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use proxy_core::tls::{ServerTls, TlsInfo};
use proxy_core::{Admitted, BuildError, ForwardSpec, Gate, Listen, Transport, Workers};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::body::Body;
use crate::connection;
use crate::error::ProxyError;
use crate::exchange::{ClientBody, ClientTls, Exchange, Forward, host_of};
use crate::idle::{LastActive, Watched};
use crate::router::Router;
use crate::service::{ApiServer, ServiceProxy, ServiceUrl};
use crate::stats::{RouteSnapshot, RouteStats};

/// An HTTP reverse proxy with the routes of one [`ForwardSpec`] (`protocol = http`):
/// requests go by host and longest path prefix to each route's target.
///
/// # Examples
///
/// ```no_run
/// use proxy_core::ForwardSpec;
/// use proxy_http::HttpForwarder;
///
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let mut spec = ForwardSpec::default();
/// spec.set("protocol", "http")?;
/// spec.set("listen", "127.0.0.1:8080")?;
/// spec.set("route", "shop.example/=web.shop:80,/api=api.shop:8080;balance=least-connections")?;
/// spec.set("sticky_cookie", "SERVERID")?;
/// let handle = HttpForwarder::new(spec)?.start()?;
/// println!("listening on {:?}", handle.local_addrs());
/// tokio::signal::ctrl_c().await?;
/// handle.shutdown(std::time::Duration::from_secs(10)).await;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct HttpForwarder {
    spec: ForwardSpec,
    /// TLS termination (`tls_cert`, `tls_dir`), its files read when it was made.
    tls: Option<ServerTls>,
    api: Option<ApiServer>,
    workers: Option<Workers>,
}

/// A running [`HttpForwarder`]: its addresses, routes and counters; reload and shut it
/// down through it. Cheap to clone; clones are the same forwarder.
#[derive(Clone, Debug)]
pub struct HttpHandle {
    shared: Arc<Shared>,
    local_addrs: Arc<[SocketAddr]>,
    api: Option<ApiServer>,
    /// The threads serving it, kept running while the handle lives.
    workers: Option<Workers>,
}

/// What the listeners and connections share.
pub(crate) struct Shared {
    current: RwLock<Arc<Generation>>,
    pub(crate) unrouted: Arc<RouteStats>,
    /// Cancelled to stop accepting.
    accepting: CancellationToken,
    /// Tells open connections to finish the request in flight and close.
    pub(crate) draining: Stop,
    /// Cancelled to close the connections still open after the drain.
    pub(crate) closing: Stop,
    connections: TaskTracker,
    listeners: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// Client connections closed because their TLS handshake failed or timed out.
    tls_handshakes_failed: AtomicU64,
}

/// A signal to every connection (drain, close): a flag read without a lock, and the
/// token connections wait on.
#[derive(Default)]
pub(crate) struct Stop {
    flag: AtomicBool,
    pub(crate) token: CancellationToken,
}

impl Stop {
    /// Gives the signal: the flag first, so a connection the token wakes sees it.
    fn stop(&self) {
        self.flag.store(true, Ordering::Release);
        self.token.cancel();
    }

    /// Whether the signal was given.
    pub(crate) fn is_given(&self) -> bool {
        self.flag.load(Ordering::Acquire)
    }
}

/// The protocols offered by ALPN to clients over TLS, preferred first. Plain-text
/// connections are HTTP/1.1 only (no h2c).
const ALPN: &[&str] = &["h2", "http/1.1"];

/// One generation of settings: replaced whole by a reload.
pub(crate) struct Generation {
    pub(crate) spec: ForwardSpec,
    pub(crate) router: Router,
    gate: Gate,
    /// With `service_proxy`, or an API server: the service proxy.
    pub(crate) service: Option<Arc<ServiceProxy>>,
    /// TLS termination for the connections accepted while this generation is current.
    tls: Option<ServerTls>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

// ===== impl HttpForwarder =====

impl HttpForwarder {
    /// A forwarder with `spec`'s settings. With `tls_cert` or `tls_dir` it terminates TLS
    /// (offering HTTP/2 and HTTP/1.1 by ALPN); the certificate and key files are read now.
    ///
    /// # Errors
    ///
    /// The spec is invalid, not an HTTP forward (`protocol` must be `http`), or a TLS
    /// file cannot be used (the message names the file, [`BuildError::key`] its key).
    pub fn new(spec: ForwardSpec) -> Result<HttpForwarder, BuildError> {
        if spec.protocol != Transport::Http {
            return Err(BuildError::Invalid {
                key: "protocol",
                why: format!("an HTTP forward needs protocol http, not {}", spec.protocol),
            });
        }
        spec.validate()?;
        if spec.service_proxy {
            // The filter's patterns compile, or the key naming the bad one is the error.
            ServiceProxy::check(&spec)?;
        }
        crate::backend::check_upstream_ca(&spec)?;
        let tls = ServerTls::from_spec(&spec, ALPN)?;
        Ok(HttpForwarder {
            spec,
            tls,
            api: None,
            workers: None,
        })
    }

    /// Serves on `workers`' threads instead of the current runtime: every worker accepts
    /// on each listen address (on Linux through a socket of its own in an SO_REUSEPORT
    /// group; elsewhere, and on sockets given to `start_from`, all share the one socket),
    /// and a connection stays on the thread that accepted it, with the upstream
    /// connections that thread opened (as nginx's workers do). Name lookups, health
    /// checks and the rest still run on the runtime `start` is called on.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use proxy_core::{ForwardSpec, Workers};
    /// use proxy_http::HttpForwarder;
    ///
    /// # #[tokio::main]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let mut spec = ForwardSpec::default();
    /// spec.set("protocol", "http")?;
    /// spec.set("listen", "127.0.0.1:8080")?;
    /// spec.set("route", "/=web.shop:80")?;
    /// let cores = std::thread::available_parallelism()?;
    /// let handle = HttpForwarder::new(spec)?
    ///     .workers(Workers::new(cores)?)
    ///     .start()?;
    /// tokio::signal::ctrl_c().await?;
    /// handle.shutdown(std::time::Duration::from_secs(10)).await;
    /// # Ok(())
    /// # }
    /// ```
    pub fn workers(&mut self, workers: Workers) -> &mut Self {
        self.workers = Some(workers);
        self
    }

    /// Sends every request to `api`, the API server, as `kubectl proxy` does, behind the
    /// filter (`accept_hosts`, `accept_paths`, `reject_paths`, `reject_methods`), instead
    /// of answering service proxy URLs from cluster DNS; routes are not used then.
    pub fn api_server(&mut self, api: ApiServer) -> &mut Self {
        self.api = Some(api);
        self
    }

    /// The settings.
    pub fn spec(&self) -> &ForwardSpec {
        &self.spec
    }

    /// Binds the listen addresses and starts serving on the current tokio runtime. A
    /// bare port listens on `[::]`, or on `0.0.0.0` where the host has no IPv6.
    ///
    /// # Errors
    ///
    /// An address cannot be bound (the error names it), or a route's resolver cannot be
    /// set up; nothing stays bound then.
    ///
    /// # Panics
    ///
    /// When called outside a tokio runtime.
    pub fn start(&self) -> io::Result<HttpHandle> {
        let copies = match &self.workers {
            Some(workers) if cfg!(target_os = "linux") => workers.len(),
            _ => 1,
        };
        self.start_on(bind(&self.spec, copies)?)
    }

    /// Starts serving on listeners bound elsewhere (systemd's sockets, say).
    ///
    /// # Errors
    ///
    /// A listener cannot be set up, or a route's resolver cannot be.
    ///
    /// # Panics
    ///
    /// When called outside a tokio runtime.
    pub fn start_from(
        &self,
        listeners: impl IntoIterator<Item = std::net::TcpListener>,
    ) -> io::Result<HttpHandle> {
        let groups = listeners
            .into_iter()
            .map(|l| l.set_nonblocking(true).map(|()| vec![l]))
            .collect::<io::Result<Vec<_>>>()?;
        self.start_on(groups)
    }

    /// Serves on `groups`: the sockets of each listen address, one per worker or one
    /// that the workers share.
    fn start_on(&self, groups: Vec<Vec<std::net::TcpListener>>) -> io::Result<HttpHandle> {
        let generation = Generation::new(
            &self.spec,
            self.api.as_ref(),
            None,
            self.workers.as_ref(),
            self.tls.clone(),
        )?;
        let shared = Arc::new(Shared {
            current: RwLock::new(Arc::new(generation)),
            unrouted: Arc::default(),
            accepting: CancellationToken::new(),
            draining: Stop::default(),
            closing: Stop::default(),
            connections: TaskTracker::new(),
            listeners: std::sync::Mutex::default(),
            tls_handshakes_failed: AtomicU64::new(0),
        });
        // Every socket is registered (with the reactor of the runtime that will accept
        // on it) before any accepts: an error leaves nothing running.
        let mut local_addrs = Vec::new();
        let mut accepting = Vec::new();
        for mut group in groups {
            let addr = group[0].local_addr()?;
            local_addrs.push(addr);
            let Some(workers) = &self.workers else {
                accepting.push((None, TcpListener::from_std(group.swap_remove(0))?, 0));
                continue;
            };
            // Each worker accepts on its socket of the group, or on its own descriptor
            // of the one socket (then whichever is free first accepts).
            for (worker, runtime) in workers.handles().iter().enumerate().rev() {
                let listener = match group.len() {
                    1 if worker > 0 => group[0].try_clone()?,
                    _ => group.pop().expect("a socket per worker"),
                };
                let _worker = runtime.enter();
                accepting.push((Some(runtime), TcpListener::from_std(listener)?, worker));
            }
        }
        for addr in &local_addrs {
            tracing::info!(protocol = "http", "Forwarding from {addr}");
        }
        let tasks = accepting
            .into_iter()
            .map(|(runtime, listener, worker)| {
                let accept = accept_loop(listener, shared.clone(), worker);
                match runtime {
                    Some(runtime) => runtime.spawn(accept),
                    None => tokio::spawn(accept),
                }
            })
            .collect();
        *shared.listeners.lock().unwrap_or_else(|e| e.into_inner()) = tasks;
        Ok(HttpHandle {
            shared,
            local_addrs: local_addrs.into(),
            api: self.api.clone(),
            workers: self.workers.clone(),
        })
    }
}

/// Binds `spec`'s listen addresses, all or none, `copies` sockets each.
fn bind(spec: &ForwardSpec, copies: usize) -> io::Result<Vec<Vec<std::net::TcpListener>>> {
    let bind_all = |addrs: &[SocketAddr]| {
        addrs
            .iter()
            .map(|&a| {
                bind_group(spec, a, copies)
                    .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {a}: {e}")))
            })
            .collect::<io::Result<Vec<_>>>()
    };
    match (bind_all(&spec.listen.addrs()), &spec.listen) {
        (Err(e), Listen::Any(port)) if e.kind() != io::ErrorKind::AddrInUse => {
            tracing::warn!(error = %e, "IPv6 is not available; listening on IPv4 only");
            bind_all(&[SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), *port)])
        }
        (bound, _) => bound,
    }
}

/// `copies` sockets listening on `addr`: more than one form an SO_REUSEPORT group, over
/// which the kernel spreads new connections (by their addresses' hash), one socket per
/// worker so that no two workers wake for one connection.
fn bind_group(
    spec: &ForwardSpec,
    addr: SocketAddr,
    copies: usize,
) -> io::Result<Vec<std::net::TcpListener>> {
    if copies == 1 {
        return Ok(vec![spec.tcp_listener(addr)?.into_std()?]);
    }
    if addr.port() != 0 && !spec.reuse_port {
        // The port must be free: SO_REUSEPORT alone would silently share one that another
        // process of this user holds with SO_REUSEPORT too.
        drop(spec.tcp_listener(addr)?);
    }
    let mut group = spec.clone();
    group.reuse_port = true;
    let first = group.tcp_listener(addr)?.into_std()?;
    let addr = first.local_addr()?;
    let mut sockets = vec![first];
    for _ in 1..copies {
        sockets.push(group.tcp_listener(addr)?.into_std()?);
    }
    Ok(sockets)
}

// ===== impl Generation =====

impl Generation {
    fn new(
        spec: &ForwardSpec,
        api: Option<&ApiServer>,
        previous: Option<&Generation>,
        workers: Option<&Workers>,
        tls: Option<ServerTls>,
    ) -> io::Result<Generation> {
        let workers = workers.map_or(1, Workers::len);
        let kept = previous
            .and_then(|p| p.service.clone())
            .filter(|s| s.spec() == spec);
        let service = match (api, kept) {
            (_, Some(kept)) => Some(kept),
            (Some(api), None) => Some(Arc::new(
                ServiceProxy::api_server(spec, api.clone()).map_err(io::Error::other)?,
            )),
            (None, None) if spec.service_proxy => {
                Some(Arc::new(ServiceProxy::dns(spec).map_err(io::Error::other)?))
            }
            (None, None) => None,
        };
        let router = match api {
            Some(_) => Router::new(&ForwardSpec::default(), None, workers)?,
            None => Router::new(spec, previous.map(|p| &p.router), workers)?,
        };
        Ok(Generation {
            spec: spec.clone(),
            router,
            gate: Gate::new(spec),
            service,
            tls,
        })
    }
}

// ===== impl Shared =====

impl Shared {
    pub(crate) fn current(&self) -> Arc<Generation> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Answers one request from `client` (over TLS when the request carries a
    /// [`ClientTls`]), of HTTP/1.1 or HTTP/2.
    pub(crate) async fn handle(
        &self,
        mut request: Request<impl ClientBody>,
        client: SocketAddr,
    ) -> Response<Body> {
        let proto = ClientTls::proto(&request);
        // An absolute-form target's host is the request's, whatever `Host` says (RFC 9112
        // §3.2.2): for the route, the log and the upstream alike.
        if let Some(authority) = request.uri().authority()
            && let Some(host) = authority.as_str().rsplit('@').next()
            && let Ok(host) = http::HeaderValue::from_str(host)
        {
            request.headers_mut().insert(http::header::HOST, host);
        }
        let hosts = request.headers().get_all(http::header::HOST).iter().count();
        if hosts > 1 || (hosts == 0 && request.version() == http::Version::HTTP_11) {
            // Else the route would follow one Host and the upstream maybe another.
            let why = ProxyError::BadRequest("an HTTP/1.1 request needs one Host header");
            return Exchange::new(&request, client).refuse(&self.unrouted, &why);
        }
        let generation = self.current();
        if let Some(service) = &generation.service
            && (service.takes_everything()
                || !matches!(ServiceUrl::parse(request.uri().path()), Ok(None)))
        {
            return service.handle(request, client, proto).await;
        }
        let mut exchange = Exchange::new(&request, client);
        let Some(route) = generation
            .router
            .route(host_of(&request), request.uri().path())
        else {
            if let Some(service) = &generation.service {
                return service.not_found(&request, client);
            }
            return exchange.refuse(&self.unrouted, &ProxyError::NoRoute);
        };
        exchange.route = route.name.clone();
        let uri = match request.uri().path_and_query() {
            Some(pq) => http::Uri::from(pq.clone()),
            None => http::Uri::from_static("/"),
        };
        Forward {
            backend: &route.backend,
            stats: &route.stats,
            uri,
            proto,
            forwarded_uri: false,
            forwarded_for_only: false,
            set_headers: None,
        }
        .run(request, exchange)
        .await
    }
}

/// Accepts on `worker` (0 without workers) until `accepting` is cancelled; errors never
/// end it (they back off).
async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, worker: usize) {
    let mut backoff = Duration::from_millis(10);
    loop {
        let accepted = tokio::select! {
            () = shared.accepting.cancelled() => return,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(a) => {
                backoff = Duration::from_millis(10);
                a
            }
            Err(e) if is_per_connection(&e) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed; backing off");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let generation = shared.current();
        let permit = match generation.gate.admit(peer.ip()) {
            Ok(permit) => permit,
            Err(refusal) => {
                tracing::debug!(client = %peer, "{refusal}");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        if let Some(tls) = &generation.tls {
            // The handshake runs on the connection's task, not here.
            let serving = serve_tls(tls.clone(), stream, peer, shared.clone(), permit, worker);
            shared.connections.spawn(serving);
            continue;
        }
        if generation.service.is_none() {
            // Routes only: the proxy's own HTTP/1.1 path.
            shared.connections.spawn(connection::serve(
                stream,
                peer,
                shared.clone(),
                permit,
                worker,
                None,
            ));
            continue;
        }
        let serving = serve_hyper(stream, peer, &shared, &generation.spec, permit, None);
        shared.connections.spawn(serving);
    }
}

/// Completes the TLS handshake of the client connection `stream` (within the
/// `tls_handshake_timeout`, given up when the forwarder drains), then serves it as a
/// plain connection is served. A failed handshake is counted and closes the connection.
async fn serve_tls(
    tls: ServerTls,
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    permit: Admitted,
    worker: usize,
) {
    let accepted = tokio::select! {
        () = shared.draining.token.cancelled() => return,
        // Boxed: the task does not keep room for the handshake while it serves.
        r = Box::pin(tls.accept(stream)) => r,
    };
    let stream = match accepted {
        Ok(stream) => stream,
        Err(e) => {
            shared.tls_handshakes_failed.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(client = %peer, error = %e, "TLS handshake failed");
            return;
        }
    };
    let info = TlsInfo::of(&stream);
    tracing::trace!(client = %peer, ?info, "TLS handshake done");
    if info.alpn.as_deref() == Some("h2") {
        let tls = ClientTls(Arc::new(info));
        crate::http2::serve(stream, peer, shared, permit, tls).await;
        return;
    }
    // Settings as they are now: a reload during the handshake applies.
    let generation = shared.current();
    if generation.service.is_none() {
        drop(generation);
        connection::serve(stream, peer, shared, permit, worker, Some(info)).await;
        return;
    }
    let serving = serve_hyper(
        stream,
        peer,
        &shared,
        &generation.spec,
        permit,
        Some(ClientTls(Arc::new(info))),
    );
    drop(generation);
    serving.await;
}

/// Serves the client connection `stream` with hyper (the service proxy's path): made
/// now with `spec`'s settings, the returned future drives it until it closes, idles
/// out, or the forwarder drains. With TLS, every request carries `tls`.
fn serve_hyper<S>(
    stream: S,
    peer: SocketAddr,
    shared: &Arc<Shared>,
    spec: &ForwardSpec,
    permit: Admitted,
    tls: Option<ClientTls>,
) -> impl Future<Output = ()> + Send + 'static
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(spec.header_timeout)
        .max_header_size(spec.max_header_size)
        .max_buf_size((spec.max_header_size + (8 << 10)).max(400 << 10))
        .keep_alive(true);
    let shared2 = shared.clone();
    let service = service_fn(move |mut request: Request<Incoming>| {
        let shared = shared2.clone();
        if let Some(tls) = &tls {
            request.extensions_mut().insert(tls.clone());
        }
        async move { Ok::<_, Infallible>(shared.handle(request, peer).await) }
    });
    let last = LastActive::new();
    let idle_timeout = spec.idle_timeout;
    let connection = builder
        .serve_connection(TokioIo::new(Watched::new(stream, last.clone())), service)
        .with_upgrades();
    let (draining, closing) = (shared.draining.token.clone(), shared.closing.token.clone());
    async move {
        let mut connection = std::pin::pin!(connection);
        let idle = async {
            match idle_timeout {
                Some(limit) => last.idle_for(limit).await,
                None => std::future::pending().await,
            }
        };
        let ended = tokio::select! {
            r = connection.as_mut() => Some(r),
            () = draining.cancelled() => None,
            // Idle between requests, or a request whose bytes stopped moving.
            () = idle => None,
        };
        let ended = match ended {
            Some(r) => Some(r),
            None => {
                // Finish the request in flight, then close.
                connection.as_mut().graceful_shutdown();
                tokio::select! {
                    r = connection => Some(r),
                    () = closing.cancelled() => None,
                }
            }
        };
        if let Some(Err(e)) = ended {
            tracing::debug!(client = %peer, error = %e, "client connection ended");
        }
        drop(permit);
    }
}

/// Errors of one connection that was being accepted, not of the listener.
fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

// ===== impl HttpHandle =====

impl HttpHandle {
    /// The addresses listened on (with the ports the kernel chose for port 0).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// Every route's counters, and last those of requests no route served (route `-`).
    pub fn routes(&self) -> Vec<RouteSnapshot> {
        let current = self.shared.current();
        let mut all = current.router.snapshots();
        if let Some(service) = &current.service {
            all.push(service.stats.snapshot("service-proxy".to_owned()));
        }
        all.push(self.shared.unrouted.snapshot("-".to_owned()));
        all
    }

    /// How each route's upstream addresses have fared, by route.
    pub fn endpoints(&self) -> Vec<(String, Vec<proxy_core::EndpointStats>)> {
        let generation = self.shared.current();
        (generation.router.entries())
            .filter_map(|e| {
                let upstream = e.backend.upstream()?;
                Some((e.name.to_string(), upstream.stats_reader().endpoints()))
            })
            .collect()
    }

    /// Client connections closed because their TLS handshake failed: an error or alert,
    /// a client that was not speaking TLS, that left, or ran past the
    /// `tls_handshake_timeout`.
    pub fn tls_handshakes_failed(&self) -> u64 {
        self.shared.tls_handshakes_failed.load(Ordering::Relaxed)
    }

    /// Applies new settings in place: routes, limits, timeouts and TLS (its files read
    /// again); new requests use them, requests in flight finish as they began. Routes
    /// whose settings did not change keep their upstream connections and balancing
    /// state. Connections accepted from now on get the TLS certificates the files hold
    /// now; open ones keep theirs.
    ///
    /// # Errors
    ///
    /// The settings are invalid, a TLS file cannot be used, they change the listen
    /// addresses (which needs a restart), or a new route's resolver cannot be set up;
    /// nothing changes then.
    pub fn reload(&self, spec: &ForwardSpec) -> io::Result<()> {
        // Checked whole, the TLS files read again.
        let checked = HttpForwarder::new(spec.clone()).map_err(io::Error::other)?;
        let current = self.shared.current();
        if current.spec.listen != spec.listen {
            return Err(io::Error::other(format!(
                "listen changed from {} to {}; restart to listen elsewhere",
                current.spec.listen, spec.listen
            )));
        }
        let next = Generation::new(
            spec,
            self.api.as_ref(),
            Some(&current),
            self.workers.as_ref(),
            checked.tls,
        )?;
        *self
            .shared
            .current
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Arc::new(next);
        Ok(())
    }

    /// Stops accepting, lets open connections finish the request in flight for up to
    /// `grace`, then closes them. Returns whether all finished in time.
    pub async fn shutdown(&self, grace: Duration) -> bool {
        self.shared.accepting.cancel();
        let listeners = std::mem::take(
            &mut *self
                .shared
                .listeners
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        for task in listeners {
            let _ = task.await;
        }
        self.shared.draining.stop();
        self.shared.connections.close();
        let finished = tokio::time::timeout(grace, self.shared.connections.wait())
            .await
            .is_ok();
        if !finished {
            tracing::warn!("connections still open after the drain; closing them");
            self.shared.closing.stop();
        }
        self.shared.connections.wait().await;
        finished
    }
}
