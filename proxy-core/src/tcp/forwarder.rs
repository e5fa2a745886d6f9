//! The TCP forwarder: builder, listeners, accept loop, one task per connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::peek::peek_until;
use super::relay::{Activity, Close, ConnBytes, RelayMode, RelayShared, relay};
use super::route::{Hello, RouteConfig, Way, Ways, route_configs, server_name};
use super::socket::reset_on_close;
use super::stream_relay::relay_streams;
use crate::forward::{self, Common, Generation, Protocol};
use crate::handle::{Base, Control, Current, ForwarderHandle, Refresher};
use crate::limit::{Admission, Permit, Refused};
use crate::listen;
use crate::proxy_protocol::{self, AcceptProxy, ProxyProtocol};
use crate::stats::Stats;
use crate::tls::{ClientTls, ServerTls, TlsInfo};
use crate::{BuildError, Error, Target};

/// Forwards TCP connections from one or more listen addresses to an upstream [`Target`].
///
/// Build one with [`TcpForwarder::builder`], then [`start`](TcpForwarder::start) it inside a
/// tokio runtime as often as you like; each start binds its own listeners and returns a
/// [`ForwarderHandle`].
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use proxy_core::TcpForwarder;
///
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let forwarder = TcpForwarder::builder(["127.0.0.1:8080".parse()?], "example.com:80".parse()?)
///     .idle_timeout(Duration::from_secs(600))
///     .build()?;
/// let handle = forwarder.start()?;
/// println!("listening on {:?}", handle.local_addrs());
/// tokio::signal::ctrl_c().await?;
/// handle.shutdown(Duration::from_secs(10)).await;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct TcpForwarder {
    config: Arc<Config>,
}

/// Settings for a [`TcpForwarder`]; every setter documents its default.
#[derive(Clone)]
#[must_use]
pub struct Builder {
    spec: crate::ForwardSpec,
    resolver: Option<Arc<dyn crate::resolve::Resolve>>,
}

#[derive(Clone, Debug)]
pub(super) struct Config {
    pub(super) common: Common,
    relay: RelayMode,
    pipe_size: usize,
    buffer_size: usize,
    proxy_protocol: Option<ProxyProtocol>,
    accept_proxy: Option<AcceptProxy>,
    /// The SNI routes; none: every connection goes to the target, unread.
    routes: Vec<RouteConfig>,
    sni_timeout: Duration,
    /// TLS termination; none: the client's bytes are relayed as they come.
    tls: Option<ServerTls>,
    /// TLS to the upstream; none: plain TCP.
    upstream_tls: Option<ClientTls>,
    /// With `relay = sockmap`: the map connections join, shared by all generations.
    #[cfg(target_os = "linux")]
    sockmap: Option<Arc<crate::sys::sockmap::SockMap>>,
}

// ===== impl TcpForwarder =====

impl TcpForwarder {
    /// Starts building a forwarder from `listen` addresses to `target`.
    ///
    /// Port 0 binds a port chosen by the kernel; read it from
    /// [`ForwarderHandle::local_addrs`]. `[::]` is one dual-stack socket that also accepts
    /// IPv4 (see [`Builder::dual_stack`]).
    pub fn builder(listen: impl IntoIterator<Item = SocketAddr>, target: Target) -> Builder {
        let listen = crate::spec::Listen::Addrs(listen.into_iter().collect());
        Builder {
            spec: crate::ForwardSpec::new(crate::Transport::Tcp, listen, target),
            resolver: None,
        }
    }

    crate::forward::common_accessors!();

    /// Binds every listen address and starts accepting and forwarding connections on the
    /// current tokio runtime.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Bind`](crate::ErrorKind::Bind) naming the address when one cannot be bound (in use, not
    /// available, not permitted); nothing stays bound then.
    ///
    /// # Panics
    ///
    /// When called outside a tokio runtime.
    pub fn start(&self) -> Result<ForwarderHandle, Error> {
        forward::start(self)
    }

    /// Starts accepting and forwarding connections on listeners bound elsewhere, such as
    /// the sockets systemd passes ([`systemd::listen_fds`](crate::systemd::listen_fds)),
    /// instead of binding the configured listen addresses. Each listener is made
    /// non-blocking; its local address stands for the configured one in
    /// [`ForwarderHandle::local_addrs`], the logs and the stats. The listen-socket
    /// options (backlog, SO_REUSEPORT, dual stack) are the listeners' own.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Bind`](crate::ErrorKind::Bind) when `listeners` is empty or one of
    /// them cannot be set up (not a listening socket, ...); nothing is started then.
    ///
    /// # Panics
    ///
    /// When called outside a tokio runtime.
    pub fn start_from(
        &self,
        listeners: impl IntoIterator<Item = std::net::TcpListener>,
    ) -> Result<ForwarderHandle, Error> {
        forward::start_from(self, listeners)
    }
}

impl Protocol for TcpForwarder {
    const NAME: &'static str = "tcp";
    const GIVEN: &'static str = "listener";
    type Std = std::net::TcpListener;
    type Socket = TcpListener;
    type Shared = Shared;

    fn common(&self) -> &Common {
        &self.config.common
    }

    fn bind_one(&self, addr: SocketAddr) -> std::io::Result<TcpListener> {
        listen::tcp(addr, &self.config.common.listen_options)
    }

    fn given_addr(listener: &std::net::TcpListener) -> std::io::Result<SocketAddr> {
        listener.local_addr()
    }

    fn adopt(
        &self,
        listener: std::net::TcpListener,
        _addr: SocketAddr,
    ) -> std::io::Result<TcpListener> {
        listener.set_nonblocking(true)?;
        TcpListener::from_std(listener)
    }

    fn local_addr(listener: &TcpListener) -> std::io::Result<SocketAddr> {
        listener.local_addr()
    }

    /// These settings, the target's and each SNI route's upstream with their refresher,
    /// relay pools.
    fn generation(&self, base: &Base, _previous: Option<&Shared>) -> Arc<Shared> {
        let config = &self.config;
        let (ways, refresher) =
            Ways::new(&config.common, config.proxy_protocol, &config.routes, base);
        Arc::new(Shared {
            config: config.clone(),
            relay: RelayShared {
                #[cfg(target_os = "linux")]
                sockmap: config.sockmap.clone(),
                ..RelayShared::new(
                    config.relay,
                    config.pipe_size,
                    config.buffer_size,
                    base.stats.clone(),
                )
            },
            stats: base.stats.clone(),
            refresher,
            ways,
            closing: base.closing.clone(),
            connections: base.tasks.clone(),
            admission: base.admission.clone(),
        })
    }

    fn control(current: Arc<Current<Shared>>) -> Control {
        Control::Tcp(current)
    }

    fn spawn_loop(
        listener: TcpListener,
        current: Arc<Current<Shared>>,
        stop: CancellationToken,
    ) -> JoinHandle<()> {
        tokio::spawn(accept_loop(listener, current, stop))
    }
}

// ===== impl Builder =====

impl Builder {
    crate::forward::common_setters!();

    /// The idle timeout: no traffic in either direction for this long closes a connection.
    /// `None` disables it. Default `None`.
    pub fn idle_timeout(mut self, idle: impl Into<Option<Duration>>) -> Self {
        self.spec.idle_timeout = idle.into();
        self
    }

    /// The timeout of one connect attempt. Default 5 s.
    pub fn connect_timeout(mut self, connect: Duration) -> Self {
        self.spec.connect_timeout = connect;
        self
    }

    /// The listen backlog. Default 1024 (the kernel caps it at `net.core.somaxconn`).
    pub fn backlog(mut self, backlog: u32) -> Self {
        self.spec.backlog = backlog;
        self
    }

    /// Sends a PROXY protocol header to the upstream ahead of each connection's bytes,
    /// carrying the client's address and the address it connected to, so the upstream
    /// logs and filters by the real client. The upstream must expect it (HAProxy
    /// `accept-proxy`, nginx `proxy_protocol`). Default `None`.
    pub fn proxy_protocol(mut self, version: impl Into<Option<ProxyProtocol>>) -> Self {
        self.spec.proxy_protocol = version.into();
        self
    }

    /// Reads PROXY protocol headers on the listeners from trusted peers; see
    /// [`AcceptProxy`]. Default `None`: every connection's bytes are relayed as they are.
    pub fn accept_proxy(mut self, accept: impl Into<Option<AcceptProxy>>) -> Self {
        self.spec.set_accept_proxy(accept.into());
        self
    }

    /// Routes TLS connections by the server name their ClientHello asks for (SNI),
    /// without decrypting them: the ClientHello is peeked, not consumed, and the chosen
    /// upstream gets every byte as the client sent it. A name no route serves, a hello
    /// that names none, and bytes that are not TLS go to the builder's target. Default:
    /// none, every connection goes to the target unread. The `sni` key.
    ///
    /// # Examples
    ///
    /// ```
    /// use proxy_core::TcpForwarder;
    ///
    /// let forwarder = TcpForwarder::builder(["127.0.0.1:0".parse()?], "web:443".parse()?)
    ///     .sni(["db.example=db:5432".parse()?, "*.apps.example=router:8443".parse()?])
    ///     .build()?;
    /// assert_eq!(forwarder.target().unwrap().to_string(), "web:443");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// A forward with SNI routes and no target (from a [`ForwardSpec`](crate::ForwardSpec)
    /// without one) resets the connections no route serves.
    pub fn sni(mut self, routes: impl IntoIterator<Item = crate::spec::SniRoute>) -> Self {
        self.spec.sni = routes.into_iter().collect();
        self
    }

    /// How long a client has to send its whole ClientHello when there are SNI routes;
    /// one that has not is closed. Default 5 s. The `sni_timeout` key.
    pub fn sni_timeout(mut self, timeout: Duration) -> Self {
        self.spec.sni_timeout = timeout;
        self
    }

    /// How bytes are relayed. Default [`RelayMode::Auto`] (splice on Linux).
    pub fn relay(mut self, mode: RelayMode) -> Self {
        self.spec.relay = mode;
        self
    }

    /// The size of each splice pipe, 4 KiB to 1 GiB. Default 256 KiB, which on loopback
    /// moves a single stream 10-15 % faster than 64 KiB, with less CPU. Sizes above
    /// `/proc/sys/fs/pipe-max-size`, or past `fs.pipe-user-pages-soft` in all, need
    /// `CAP_SYS_RESOURCE`; without it the kernel's default size (64 KiB) is used.
    pub fn pipe_size(mut self, bytes: usize) -> Self {
        self.spec.pipe_size = bytes;
        self
    }

    /// The size of each copy buffer, 1 KiB to 16 MiB. Default 64 KiB.
    pub fn buffer_size(mut self, bytes: usize) -> Self {
        self.spec.buffer_size = bytes;
        self
    }

    /// Checks the settings.
    ///
    /// # Errors
    ///
    /// A [`BuildError`] naming the first bad setting.
    pub fn build(self) -> Result<TcpForwarder, BuildError> {
        let (spec, common) = self.checked()?;
        let routes = route_configs(&spec, &common.resolver)?;
        let tls = ServerTls::from_spec(&spec, &[])?;
        let upstream_tls = ClientTls::from_spec(&spec, &[])?;
        let sockmap = in_kernel(&spec, tls.is_some() || upstream_tls.is_some())?;
        Ok(TcpForwarder {
            config: Arc::new(Config {
                common,
                relay: spec.relay,
                pipe_size: spec.pipe_size,
                buffer_size: spec.buffer_size,
                proxy_protocol: spec.proxy_protocol,
                accept_proxy: spec.accept_proxy(),
                routes,
                sni_timeout: spec.sni_timeout,
                tls,
                upstream_tls,
                #[cfg(target_os = "linux")]
                sockmap,
            }),
        })
    }
}

/// The socket map of `relay = sockmap`, made now so that a kernel that refuses it is a
/// settings error at start, not a surprise at the first connection.
#[cfg(target_os = "linux")]
fn in_kernel(
    spec: &crate::spec::ForwardSpec,
    tls: bool,
) -> Result<Option<Arc<crate::sys::sockmap::SockMap>>, BuildError> {
    if spec.relay != RelayMode::Sockmap {
        return Ok(None);
    }
    if tls {
        return Err(sockmap_refused(
            "it relays inside the kernel, which cannot terminate or originate TLS",
        ));
    }
    match crate::sys::sockmap::SockMap::new() {
        Ok(map) => Ok(Some(Arc::new(map))),
        Err(e) => Err(sockmap_refused(&format!(
            "the kernel refused a BPF socket map ({e}); it needs Linux 5.10 or later, \
             and CAP_BPF with CAP_NET_ADMIN (or root)"
        ))),
    }
}

#[cfg(not(target_os = "linux"))]
fn in_kernel(spec: &crate::spec::ForwardSpec, _tls: bool) -> Result<(), BuildError> {
    if spec.relay == RelayMode::Sockmap {
        return Err(sockmap_refused("BPF socket maps are Linux's"));
    }
    Ok(())
}

fn sockmap_refused(why: &str) -> BuildError {
    BuildError::Invalid {
        key: "relay",
        why: format!("relay = sockmap cannot be used: {why}"),
    }
}

impl std::fmt::Debug for Builder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.spec.fmt(f)
    }
}

/// What a running forwarder's tasks share: one generation of settings (replaced by a
/// reload) and the parts that outlive generations.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(super) config: Arc<Config>,
    pub(super) relay: RelayShared,
    pub(super) stats: Arc<Stats>,
    refresher: Arc<Refresher>,
    ways: Ways,
    pub(super) closing: CancellationToken,
    pub(super) connections: TaskTracker,
    admission: Arc<Admission>,
}

impl Generation for Shared {
    fn common(&self) -> &Common {
        &self.config.common
    }

    fn refresher(&self) -> Arc<Refresher> {
        self.refresher.clone()
    }

    /// The target, then the SNI routes: `web:443, by SNI a.example=a:443`; without a
    /// target, `by SNI a.example=a:443 (others reset)`.
    fn destination(&self) -> String {
        let config = &self.config;
        let routes = (config.routes.iter())
            .map(|r| r.name())
            .collect::<Vec<_>>()
            .join(", ");
        match (&config.common.target, routes.is_empty()) {
            (Some(target), true) => target.to_string(),
            (Some(target), false) => format!("{target}, by SNI {routes}"),
            (None, _) => format!("by SNI {routes} (others reset)"),
        }
    }
}

/// Accepts until `accepting` is cancelled. Errors never end it: per-connection errors are
/// skipped, others (EMFILE, ENFILE, ENOBUFS) back off from 10 ms up to 1 s and retry.
async fn accept_loop(
    listener: TcpListener,
    current: Arc<Current<Shared>>,
    accepting: CancellationToken,
) {
    const FIRST_BACKOFF: Duration = Duration::from_millis(10);
    /// At most one warning per this period, however often accept fails.
    const WARN_EVERY: Duration = Duration::from_secs(5);
    let mut backoff = FIRST_BACKOFF;
    let mut failing = false;
    let mut warned = false;
    let mut last_warning: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            () = accepting.cancelled() => return,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, peer)) => {
                if failing && warned {
                    tracing::info!(listener = ?listener.local_addr().ok(), "accepting again");
                }
                failing = false;
                backoff = FIRST_BACKOFF;
                let shared = current.get();
                // A trusted PROXY peer is checked by the client its header names.
                let proxied =
                    (shared.config.accept_proxy.as_ref()).is_some_and(|a| a.trusts(peer.ip()));
                if !proxied && !shared.config.common.access.permits(peer.ip()) {
                    deny(&stream, peer, &shared.stats);
                    continue;
                }
                let source = (!proxied).then_some(peer.ip());
                let permit = match shared.admission.admit(&shared.config.common.limits, source) {
                    Ok(permit) => permit,
                    Err(limit) => {
                        refuse(&stream, peer, limit, &shared);
                        continue;
                    }
                };
                shared
                    .connections
                    .spawn(serve(stream, peer, shared.clone(), permit));
            }
            Err(e) if is_connection_error(&e) => {
                tracing::debug!(error = %e, "accept: connection failed before it was accepted");
            }
            Err(e) => {
                Stats::inc(&current.get().stats.accept_errors);
                if !failing {
                    failing = true;
                    warned = last_warning.is_none_or(|t| t.elapsed() >= WARN_EVERY);
                    if warned {
                        last_warning = Some(Instant::now());
                        tracing::warn!(error = %e, "accept failed; backing off and retrying");
                    }
                }
                tracing::debug!(error = %e, retry_in = ?backoff, "accept failed");
                tokio::select! {
                    () = accepting.cancelled() => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// Refuses a client the access lists do not permit: the close sends a reset.
fn deny(stream: &TcpStream, peer: SocketAddr, stats: &Stats) {
    Stats::inc(&stats.denied);
    tracing::debug!(client = %peer, "denied by the access lists");
    reset_on_close(stream);
}

/// Refuses a client past a `limit`: the close sends a reset.
fn refuse(stream: &TcpStream, peer: SocketAddr, limit: Refused, shared: &Shared) {
    shared.admission.refused(limit, 1, &shared.stats, peer.ip());
    reset_on_close(stream);
}

/// Errors of one half-open connection, which say nothing about the listener.
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | Interrupted | PermissionDenied
    )
}

/// Writes the PROXY protocol header for `client` (from `peer`) to the upstream, with
/// what its TLS handshake agreed on when the proxy terminated it.
async fn send_proxy_header(
    version: ProxyProtocol,
    client: &TcpStream,
    (peer, local): (SocketAddr, Option<SocketAddr>),
    tls: Option<&TlsInfo>,
    upstream: &mut TcpStream,
) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    let local = match local {
        Some(local) => local,
        None => client.local_addr()?,
    };
    upstream
        .write_all(&version.tcp_header(peer, local, tls))
        .await
}

/// A client connection: as accepted, or with TLS terminated.
enum Client {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl Client {
    fn socket(&self) -> &TcpStream {
        match self {
            Client::Plain(stream) => stream,
            Client::Tls(stream) => stream.get_ref().0,
        }
    }
}

/// An upstream connection: plain, or with TLS on it.
enum Upstream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

/// Puts TLS on the upstream connection when the forward originates it, within the
/// connect timeout; `None` (counted, logged, and reported to the balancer as the
/// address's failure) when the handshake failed.
async fn originate(
    upstream: TcpStream,
    addr: SocketAddr,
    way: &Way,
    peer: SocketAddr,
    shared: &Shared,
) -> Option<Upstream> {
    let Some(tls) = &shared.config.upstream_tls else {
        return Some(Upstream::Plain(upstream));
    };
    let limit = shared.config.common.timeouts.connect;
    let handshake = tokio::time::timeout(limit, tls.connect(upstream, way.target.host()));
    let done = tokio::select! {
        () = shared.closing.cancelled() => return None,
        r = Box::pin(handshake) => r,
    };
    let error = match done {
        Ok(Ok(stream)) => return Some(Upstream::Tls(Box::new(stream))),
        Ok(Err(e)) => e.to_string(),
        Err(_) => format!("no TLS handshake within {limit:?}"),
    };
    Stats::inc(&shared.stats.upstream_unavailable);
    way.balancer.record(&shared.stats, addr, false);
    tracing::warn!(
        client = %peer,
        upstream = %addr,
        target = %way.target,
        error,
        "upstream TLS handshake failed; closing the client connection"
    );
    None
}

/// Completes `client`'s TLS handshake when the forward terminates TLS; `None` (counted
/// and logged) when it failed.
async fn terminate(client: TcpStream, peer: SocketAddr, shared: &Shared) -> Option<Client> {
    let Some(tls) = &shared.config.tls else {
        return Some(Client::Plain(client));
    };
    let accepted = tokio::select! {
        () = shared.closing.cancelled() => return None,
        r = Box::pin(tls.accept(client)) => r,
    };
    match accepted {
        Ok(stream) => Some(Client::Tls(Box::new(stream))),
        Err(e) => {
            Stats::inc(&shared.stats.tls_handshakes_failed);
            tracing::debug!(client = %peer, error = %e, "TLS handshake failed");
            None
        }
    }
}

/// Reads the PROXY header a trusted peer's connection starts with, within `timeout`,
/// consuming exactly its bytes. Bytes that end (the peer's FIN) before they make a whole
/// header are rejected at once: see [`peek_until`].
async fn read_proxy_header(
    stream: &mut TcpStream,
    timeout: Duration,
) -> std::io::Result<proxy_protocol::Header> {
    use std::io::{Error, ErrorKind};
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; proxy_protocol::MAX_HEADER];
    let read = async {
        let header = peek_until(stream, &mut buf, |bytes| {
            proxy_protocol::parse(bytes).map_err(|e| Error::new(ErrorKind::InvalidData, e))
        })
        .await?;
        // The peek showed the header's bytes waiting: this takes them and nothing more.
        stream.read_exact(&mut buf[..header.len]).await?;
        Ok(header)
    };
    tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| Error::new(ErrorKind::TimedOut, "no complete PROXY header in time"))?
}

/// Counts a connection as open for as long as it lives.
struct OpenGuard<'a>(&'a Stats);

impl<'a> OpenGuard<'a> {
    fn new(stats: &'a Stats) -> Self {
        Stats::inc(&stats.connections_total);
        Stats::inc(&stats.connections_open);
        OpenGuard(stats)
    }
}

impl Drop for OpenGuard<'_> {
    fn drop(&mut self) {
        self.0
            .connections_open
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Relays one accepted connection; `permit` holds its place under the limits.
async fn serve(mut client: TcpStream, peer: SocketAddr, shared: Arc<Shared>, mut permit: Permit) {
    let _open = OpenGuard::new(&shared.stats);
    let started = Instant::now();
    if let Err(e) = client.set_nodelay(true) {
        tracing::debug!(error = %e, "TCP_NODELAY failed");
    }
    // A trusted peer's header names the real client, and the address it connected to.
    let (mut peer, mut local) = (peer, None);
    if let Some(accept) = &shared.config.accept_proxy
        && accept.trusts(peer.ip())
    {
        match Box::pin(read_proxy_header(&mut client, accept.timeout)).await {
            Ok(header) => {
                tracing::trace!(peer = %peer, ?header, "PROXY header");
                peer = header.source.unwrap_or(peer);
                local = header.destination;
                // The real client answers to the access lists too.
                if !shared.config.common.access.permits(peer.ip()) {
                    deny(&client, peer, &shared.stats);
                    return;
                }
                if let Err(limit) = permit.source(&shared.config.common.limits, peer.ip()) {
                    refuse(&client, peer, limit, &shared);
                    return;
                }
            }
            Err(e) => {
                Stats::inc(&shared.stats.proxy_headers_rejected);
                tracing::debug!(peer = %peer, error = %e, "closing a trusted peer's connection without a valid PROXY header");
                return;
            }
        }
    }
    let Some(client) = terminate(client, peer, &shared).await else {
        return;
    };
    let tls = match &client {
        Client::Tls(stream) => Some(TlsInfo::of(stream)),
        Client::Plain(_) => None,
    };
    let (way, name) = match pick_way(client.socket(), peer, &shared).await {
        Some(picked) => picked,
        None => return,
    };
    let dial = way.dial(&shared.stats);
    let connected = tokio::select! {
        () = shared.closing.cancelled() => return,
        // Boxed, so the connection's task does not keep room for it while relaying.
        r = Box::pin(dial.connect(peer.ip())) => r,
    };
    let (mut upstream, upstream_addr) = match connected {
        Ok(c) => c,
        Err(e) => {
            Stats::inc(&shared.stats.upstream_unavailable);
            tracing::warn!(
                client = %peer,
                target = %way.target,
                error = %e,
                cause = ?std::error::Error::source(&e).map(ToString::to_string),
                "no upstream reachable; closing the client connection"
            );
            return;
        }
    };
    tracing::debug!(client = %peer, upstream = %upstream_addr, "connected");
    if let Some(version) = way.proxy_protocol
        && let Err(e) = send_proxy_header(
            version,
            client.socket(),
            (peer, local),
            tls.as_ref(),
            &mut upstream,
        )
        .await
    {
        Stats::inc(&shared.stats.upstream_unavailable);
        tracing::debug!(client = %peer, upstream = %upstream_addr, error = %e, "sending the PROXY header failed");
        return;
    }
    let Some(upstream) = originate(upstream, upstream_addr, way, peer, &shared).await else {
        return;
    };
    let _counted = way.balancer.open(upstream_addr);
    let bytes = ConnBytes::default();
    let (relay_shared, closing) = (&shared.relay, &shared.closing);
    let timeouts = &shared.config.common.timeouts;
    let close = match (client, upstream) {
        (Client::Plain(client), Upstream::Plain(upstream)) => {
            let activity = Activity::new();
            let relaying = |activity| {
                relay(
                    &client,
                    &upstream,
                    relay_shared,
                    timeouts,
                    closing,
                    &bytes,
                    activity,
                )
            };
            match relaying(&activity).await {
                #[cfg(target_os = "linux")]
                Close::Join => {
                    use std::os::fd::AsFd;
                    let map = relay_shared.sockmap.as_deref();
                    let join = |map| super::sockmap::join(map, client.as_fd(), upstream.as_fd());
                    match map.map(join) {
                        Some(Ok(joined)) => {
                            // Out of the reactor: the relayed segments wake nothing.
                            let pair = client
                                .into_std()
                                .and_then(|c| Ok((c, upstream.into_std()?)));
                            match pair {
                                Ok((client, upstream)) => {
                                    Box::pin(super::sockmap::relay_joined(
                                        joined,
                                        (&client, &upstream),
                                        relay_shared,
                                        timeouts,
                                        closing,
                                        &bytes,
                                        &activity,
                                    ))
                                    .await
                                }
                                Err(error) => Close::Reset(super::relay::HalfError {
                                    side: crate::Side::Downstream,
                                    error,
                                }),
                            }
                        }
                        refused => {
                            if let Some(Err(e)) = refused {
                                tracing::debug!(client = %peer, error = %e, "the socket map refused the connection; relaying in user space");
                            }
                            Stats::inc(&shared.stats.sockmap_fallbacks);
                            activity.never_join();
                            relaying(&activity).await
                        }
                    }
                }
                close => close,
            }
        }
        (Client::Tls(client), Upstream::Plain(upstream)) => {
            Box::pin(relay_streams(
                *client,
                upstream,
                relay_shared,
                timeouts,
                closing,
                &bytes,
            ))
            .await
        }
        (Client::Plain(client), Upstream::Tls(upstream)) => {
            Box::pin(relay_streams(
                client,
                *upstream,
                relay_shared,
                timeouts,
                closing,
                &bytes,
            ))
            .await
        }
        (Client::Tls(client), Upstream::Tls(upstream)) => {
            Box::pin(relay_streams(
                *client,
                *upstream,
                relay_shared,
                timeouts,
                closing,
                &bytes,
            ))
            .await
        }
    };
    log_access(
        &close,
        peer,
        name,
        tls.as_ref(),
        upstream_addr,
        &bytes,
        started,
    );
}

/// The connection's access log line.
fn log_access(
    close: &Close,
    peer: SocketAddr,
    name: Option<String>,
    tls: Option<&TlsInfo>,
    upstream_addr: SocketAddr,
    bytes: &ConnBytes,
    started: Instant,
) {
    if let Close::Reset(e) = close {
        tracing::debug!(client = %peer, side = ?e.side, error = %e.error, "connection reset");
    }
    tracing::info!(
        target: "proxy_core::access",
        protocol = "tcp",
        client = %peer,
        sni = name.as_deref().or(tls.and_then(|t| t.server_name.as_deref())),
        tls = tls.map(|t| t.version),
        client_cn = tls.and_then(|t| t.client_cn.as_deref()),
        upstream = %upstream_addr,
        bytes_up = bytes.up.load(Relaxed),
        bytes_down = bytes.down.load(Relaxed),
        duration_ms = started.elapsed().as_millis() as u64,
        close = close.reason(),
        "connection"
    );
}

/// The way `client`'s connection goes, with the server name it asked for: the target,
/// or with SNI routes the one its ClientHello's name picks (peeked, within the
/// `sni_timeout`). `None` when it goes nowhere: it did not send a whole ClientHello in
/// time (closed), or no route serves it and there is no target (reset).
async fn pick_way<'a>(
    client: &TcpStream,
    peer: SocketAddr,
    shared: &'a Shared,
) -> Option<(&'a Way, Option<String>)> {
    let ways = &shared.ways;
    if !ways.by_name() {
        return ways.default().map(|way| (way, None));
    }
    let read = tokio::select! {
        () = shared.closing.cancelled() => return None,
        r = Box::pin(server_name(client, shared.config.sni_timeout)) => r,
    };
    let name = match read {
        Ok(Hello::Tls(name)) => name,
        Ok(Hello::Other(why)) => {
            tracing::debug!(client = %peer, %why, "no server name to route by");
            None
        }
        Err(e) => {
            Stats::inc(&shared.stats.sni_hello_failed);
            tracing::debug!(client = %peer, error = %e, "closing a connection without a whole ClientHello");
            return None;
        }
    };
    match ways.pick(name.as_deref()) {
        Some(way) => Some((way, name)),
        None => {
            Stats::inc(&shared.stats.sni_no_route);
            tracing::debug!(client = %peer, sni = name.as_deref(), "no SNI route and no target; resetting");
            reset_on_close(client);
            None
        }
    }
}
