//! A port-forward server that unmodified `kubectl port-forward` and the client libraries
//! talk to as if it were the API server: it answers discovery, the pods, services and
//! deployments of a [`Cluster`], and `pods/NAME/portforward` in all three protocols
//! (SPDY/3.1, WebSocket channels, SPDY over WebSocket), forwarding each stream to the pod
//! through a [`Dial`].
//!
//! [`Server`] serves one connection ([`Server::serve_connection`], for an embedder with
//! its own listener) or a listener ([`Server::bind`]), over TLS when given a certificate.
//! A bearer token, when set, is required on every request (`401` with a `Status` body
//! otherwise). [`Server::set_cluster`] swaps the objects while it runs: sessions open
//! stay, new streams go where the new objects say (a pod removed gets none), and pod
//! watches (`GET .../pods?watch=true`) are sent the differences as watch events.
//!
//! It also serves UDP through port-forward, an extension only it speaks ([`crate::udp`]):
//! selected at the upgrade when a client offers it ([`ServerBuilder::udp`] turns it off,
//! and the server then answers as the kubelet does).
//!
//! # Examples
//!
//! ```no_run
//! use proxy_portforward::objects::{Cluster, Pod};
//! use proxy_portforward::server::Server;
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut cluster = Cluster::default();
//! cluster.add_pod("web=127.0.0.1".parse::<Pod>()?)?;
//! let server = Server::builder(cluster).build();
//! let listening = server.bind("127.0.0.1:8001".parse()?, None).await?;
//! println!("Starting to serve on {}", listening.local_addr());
//! // kubectl --server http://127.0.0.1:8001 port-forward pod/web 8080:80
//! # Ok(())
//! # }
//! ```

mod api;
mod idle;
mod pod_watch;
mod route;
mod service;
mod tls;
mod upgrade;

pub use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
pub use tls::{TlsError, tls_config};
pub use tokio_rustls::rustls::ServerConfig;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper::Request;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::channel::{self, Protocol};
use crate::dial::{Dial, Dialing, DialingUdp, TargetDialer};
use crate::forward::{Observe, PodForward, Stats, StatsSnapshot, UdpForward};
use crate::objects::{Cluster, Pod};

/// How long the built-in dialer waits for a pod's port to accept.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The body of every response: whole, or a stream of watch events.
type Body = BoxBody<Bytes, Infallible>;

/// Builds a [`Server`].
pub struct ServerBuilder {
    cluster: Cluster,
    dialer: Arc<dyn Dial>,
    observer: Option<Arc<dyn Observe>>,
    token: Option<String>,
    protocols: Vec<Protocol>,
    idle_timeout: Option<Duration>,
    udp: Option<UdpForward>,
}

impl ServerBuilder {
    /// Ends a port-forward connection from which nothing has been read (no data, no
    /// PING) for `idle`, as the kubelet's `--streaming-connection-idle-timeout` (4 h by
    /// default there). Default `None`: never.
    pub fn idle_timeout(mut self, idle: impl Into<Option<Duration>>) -> Self {
        self.idle_timeout = idle.into();
        self
    }

    /// Streams reach pods through `dialer` instead of the built-in [`TargetDialer`].
    pub fn dialer(mut self, dialer: Arc<dyn Dial>) -> Self {
        self.dialer = dialer;
        self
    }

    /// Every request needs `Authorization: Bearer TOKEN`.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Also tell `observer` about each session and stream (the built-in [`Stats`] are
    /// always kept).
    pub fn observer(mut self, observer: Arc<dyn Observe>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// The WebSocket channel protocols offered, in the server's order of preference
    /// (default [`channel::KUBELET_PROTOCOLS`], as the kubelet; [`channel::ALL_PROTOCOLS`]
    /// adds `v5.channel.k8s.io`, with half-close).
    pub fn channel_protocols(mut self, protocols: &[Protocol]) -> Self {
        self.protocols = protocols.to_vec();
        self
    }

    /// Whether UDP through port-forward ([`crate::udp`]) is served: selected at the
    /// upgrade when the client offers it (default `true`). With `false` the server
    /// answers `portforward.k8s.io` as the kubelet does, and refuses UDP streams.
    pub fn udp(mut self, serve: bool) -> Self {
        self.udp = serve.then(|| self.udp.unwrap_or_default());
        self
    }

    /// How long a UDP stream may go with no datagram either way before it ends (default
    /// [`DEFAULT_UDP_IDLE_TIMEOUT`](crate::forward::DEFAULT_UDP_IDLE_TIMEOUT), 60 s).
    /// Serves UDP if [`udp`](Self::udp) turned it off.
    pub fn udp_idle_timeout(mut self, idle: Duration) -> Self {
        self.udp = Some(UdpForward { idle_timeout: idle });
        self
    }

    /// The server.
    pub fn build(self) -> Server {
        Server {
            shared: Arc::new_cyclic(|weak| Shared {
                services: service::service_proxy(weak.clone()),
                cluster: watch::Sender::new(Versioned {
                    version: 1,
                    cluster: Arc::new(self.cluster),
                }),
                dialer: self.dialer,
                stats: Arc::new(Stats::new()),
                extra: self.observer,
                token: self.token,
                protocols: self.protocols,
                idle_timeout: self.idle_timeout,
                udp: self.udp,
            }),
        }
    }
}

/// The port-forward server (see the module docs). Cheap to clone: clones share
/// everything.
#[derive(Clone)]
pub struct Server {
    shared: Arc<Shared>,
}

struct Shared {
    /// The objects served now; watches of pods subscribe to it.
    cluster: watch::Sender<Versioned>,
    dialer: Arc<dyn Dial>,
    stats: Arc<Stats>,
    extra: Option<Arc<dyn Observe>>,
    token: Option<String>,
    protocols: Vec<Protocol>,
    idle_timeout: Option<Duration>,
    /// UDP streams, when served.
    udp: Option<UdpForward>,
    /// The services `proxy` subresource.
    services: proxy_http::service::ServiceProxy,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("token", &self.shared.token.as_ref().map(|_| "<set>"))
            .field("protocols", &self.shared.protocols)
            .field("udp", &self.shared.udp)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// A builder serving `cluster`'s objects.
    pub fn builder(cluster: Cluster) -> ServerBuilder {
        ServerBuilder {
            cluster,
            dialer: Arc::new(TargetDialer::new(DEFAULT_CONNECT_TIMEOUT)),
            observer: None,
            token: None,
            protocols: channel::KUBELET_PROTOCOLS.to_vec(),
            idle_timeout: None,
            udp: Some(UdpForward::default()),
        }
    }

    /// Serves `cluster` from now on: sessions open stay, their new streams go where the
    /// new objects say.
    /// Pod watches (`?watch=true`) send the differences as `ADDED`, `MODIFIED` and
    /// `DELETED` events, at a `resourceVersion` one higher than the last.
    pub fn set_cluster(&self, cluster: Cluster) {
        self.shared.cluster.send_modify(|served| {
            served.version += 1;
            served.cluster = Arc::new(cluster);
        });
    }

    /// The objects served now.
    pub fn cluster(&self) -> Arc<Cluster> {
        self.shared.cluster()
    }

    /// Sessions, streams and bytes so far, by protocol.
    pub fn stats(&self) -> StatsSnapshot {
        self.shared.stats.snapshot()
    }

    /// Serves HTTP/1.1 on one accepted connection (plain, or TLS already accepted) until
    /// it closes; upgraded port-forward sessions run on tasks of their own and outlive it.
    pub async fn serve_connection<IO>(&self, io: IO, client: Option<SocketAddr>)
    where
        IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        self.serve(io, client, false).await;
    }

    /// [`serve_connection`](Self::serve_connection); `tls`: the client spoke TLS (for
    /// the service proxy's `X-Forwarded-Proto`).
    async fn serve<IO>(&self, io: IO, client: Option<SocketAddr>, tls: bool)
    where
        IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let shared = self.shared.clone();
        let proto = if tls { "https" } else { "http" };
        let service = service_fn(move |request: Request<Incoming>| {
            let shared = shared.clone();
            async move {
                if service::is_service_proxy(request.uri().path()) && shared.authorized(&request) {
                    let from = client.unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
                    let response = shared.services.handle(request, from, proto).await;
                    return Ok::<_, Infallible>(response);
                }
                let response = shared.respond(request, client);
                Ok::<_, Infallible>(response.map(proxy_http::body::boxed))
            }
        });
        let served = http1::Builder::new()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(Duration::from_secs(30))
            .serve_connection(TokioIo::new(io), service)
            .with_upgrades()
            .await;
        if let Err(error) = served {
            tracing::debug!(client = ?client, %error, "HTTP connection ended with an error");
        }
    }

    /// Listens on `addr` and serves every connection, over TLS when `tls` is given, until
    /// the returned [`Listening`] is dropped or shut down.
    ///
    /// # Errors
    ///
    /// The address cannot be bound.
    pub async fn bind(
        &self,
        addr: SocketAddr,
        tls: Option<Arc<ServerConfig>>,
    ) -> io::Result<Listening> {
        let listener = TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        let server = self.clone();
        let acceptor = tls.map(TlsAcceptor::from);
        let task = tokio::spawn(accept_loop(listener, server, acceptor));
        Ok(Listening { local_addr, task })
    }
}

/// The objects served, and their version: 1 at the start, one more at each
/// [`Server::set_cluster`] (the `resourceVersion` of pod lists and watch events).
#[derive(Clone, Debug)]
struct Versioned {
    version: u64,
    cluster: Arc<Cluster>,
}

/// A listening server; dropping it stops accepting (sessions open go on).
#[derive(Debug)]
pub struct Listening {
    local_addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Listening {
    /// The address bound (the port the kernel chose for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

impl Drop for Listening {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, server: Server, tls: Option<TlsAcceptor>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of descriptors and the like: pause rather than spin.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let server = server.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => server.serve_connection(stream, Some(peer)).await,
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream));
                    match handshake.await {
                        Ok(Ok(stream)) => server.serve(stream, Some(peer), true).await,
                        Ok(Err(error)) => {
                            tracing::debug!(client = %peer, %error, "TLS handshake failed");
                        }
                        Err(_) => tracing::debug!(client = %peer, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
}

impl Shared {
    fn cluster(&self) -> Arc<Cluster> {
        self.cluster.borrow().cluster.clone()
    }

    /// What a stream of a session to `pod` is forwarded with: the current objects are
    /// asked at each dial, so a pod removed or changed by [`Server::set_cluster`] is seen.
    /// `udp`: the session negotiated UDP streams.
    fn pod_forward(
        self: &Arc<Self>,
        pod: &Pod,
        client: Option<SocketAddr>,
        udp: bool,
    ) -> PodForward {
        let observer: Arc<dyn Observe> = match &self.extra {
            None => self.stats.clone(),
            Some(extra) => Arc::new(Both(self.stats.clone(), extra.clone())),
        };
        PodForward {
            pod: Arc::new(pod.clone()),
            dialer: Arc::new(CurrentPod(self.clone())),
            observer,
            client,
            udp: if udp { self.udp } else { None },
        }
    }
}

/// Dials through the objects served now.
struct CurrentPod(Arc<Shared>);

impl Dial for CurrentPod {
    fn dial(&self, pod: &Pod, port: u16) -> Dialing {
        let cluster = self.0.cluster();
        match cluster.pod(&pod.namespace, &pod.name) {
            Some(now) if now.running => self.0.dialer.dial(now, port),
            Some(_) => Box::pin(async { Err(io::Error::other("pod is not running")) }),
            None => Box::pin(async { Err(io::Error::other("pod not found")) }),
        }
    }

    fn dial_udp(&self, pod: &Pod, port: u16) -> DialingUdp {
        let cluster = self.0.cluster();
        match cluster.pod(&pod.namespace, &pod.name) {
            Some(now) if now.running => self.0.dialer.dial_udp(now, port),
            Some(_) => Box::pin(async { Err(io::Error::other("pod is not running")) }),
            None => Box::pin(async { Err(io::Error::other("pod not found")) }),
        }
    }
}

/// Two observers told the same things.
struct Both(Arc<Stats>, Arc<dyn Observe>);

impl Observe for Both {
    fn session_started(&self, wire: crate::forward::Wire) {
        self.0.session_started(wire);
        self.1.session_started(wire);
    }

    fn session_ended(&self, wire: crate::forward::Wire) {
        self.0.session_ended(wire);
        self.1.session_ended(wire);
    }

    fn stream_started(&self, stream: &crate::forward::StreamInfo) {
        self.0.stream_started(stream);
        self.1.stream_started(stream);
    }

    fn stream_ended(&self, stream: &crate::forward::StreamInfo, end: &crate::forward::StreamEnd) {
        self.0.stream_ended(stream, end);
        self.1.stream_ended(stream, end);
    }
}
