//! Forwarding local connections to the pods of a target: the engine of `proxy forward
//! TYPE/NAME`, for Rust programs that need the same.
//!
//! A [`PodForwarder`] resolves `pod/`, `svc/`, `deploy/` (any [`Kind`](crate::Kind)),
//! follows its ready pods through the API (a watch), and opens forwarded connections to
//! them through the API server's `pods/portforward` subresource:
//!
//! - each new connection goes to a ready pod chosen by a [`Balance`] policy (the core's),
//!   and to the next one when a pod cannot be reached; a rollout or a replaced pod is
//!   followed, not the end of the forward;
//! - one SPDY session per pod carries its connections, PINGed to stay up, and opened
//!   again when it drops; a connection that arrives while no pod is ready, or while a
//!   session is being opened again, waits (up to [`PodForwarderBuilder::wait`]);
//! - a connection that fails fails alone: the forward and its other connections go on.
//!
//! [`PodForwarder::connect`] opens one connection; [`PodForwarder::serve`] forwards a
//! local listener.
//!
//! # Examples
//!
//! ```no_run
//! use proxy_kube::Client;
//! use proxy_kube::forward::PodForwarder;
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let client = Client::builder().namespace("shop").build().await?;
//! let forwarder = PodForwarder::builder(client, "svc/web".parse()?).build().await?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let serving = forwarder.serve(listener, "http");
//! println!("Forwarding from {} -> {}", serving.local_addr(), forwarder.remote_port("http")?);
//! tokio::signal::ctrl_c().await?;
//! serving.shutdown(std::time::Duration::from_secs(10)).await;
//! # Ok(())
//! # }
//! ```

mod protocol;
mod serve;

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;

use proxy_core::{Balance, Ejection, Opened, Picker};
use proxy_portforward::channel::Protocol as Channels;
use proxy_portforward::client::{
    ChannelStream, DatagramStream, SpdySession, UDP_NOT_NEGOTIATED, UpgradeError,
    upgrade_spdy_with, upgrade_websocket,
};
use proxy_portforward::udp;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::endpoint::ApiEndpoint;
use crate::error::{Error, ErrorKind};
use crate::podset::{PodSet, PodWatch};
use crate::resolve::{Resolved, check_running, pod_name};
use crate::{Client, Target};
use protocol::CHANNEL_PROTOCOLS;
pub use protocol::{PodStream, Protocol};
pub use serve::{Accepted, Serving};

/// kubectl's `--pod-running-timeout` default: how long to wait for a running pod.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(60);

/// The WebSocket subprotocol of SPDY tunnelled over WebSocket.
const TUNNEL_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";
/// kubectl's SPDY offer.
const SPDY_OFFER: [&str; 1] = ["portforward.k8s.io"];

/// The first pause before trying the pods again after all failed; it doubles up to
/// [`MAX_RETRY`].
const MIN_RETRY: Duration = Duration::from_millis(100);
const MAX_RETRY: Duration = Duration::from_secs(2);

/// The least time opening a connection is given, when the builder's wait is shorter.
const MIN_OPEN: Duration = Duration::from_secs(1);

/// Builds a [`PodForwarder`].
#[derive(Debug)]
pub struct PodForwarderBuilder {
    client: Client,
    target: Target,
    protocol: Protocol,
    balance: Balance,
    ejection: Option<Ejection>,
    wait: Duration,
    keepalive: Option<Duration>,
    udp: bool,
}

/// Forwards connections to the ready pods of one target; cheap to clone. See the
/// [module](self).
#[derive(Clone, Debug)]
pub struct PodForwarder {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    resolved: Resolved,
    endpoint: ApiEndpoint,
    /// The API path of the pods' `portforward` subresource up to the pod name, under the
    /// server URL's own path.
    pods_path: String,
    /// The `Host` header: the server URL's authority.
    host: String,
    pods: watch::Receiver<PodSet>,
    _watch: PodWatch,
    picker: Picker<Arc<str>>,
    protocol: Protocol,
    /// With [`Protocol::Auto`], the protocol that worked.
    chosen: Mutex<Option<Protocol>>,
    sessions: Mutex<HashMap<Arc<str>, SessionSlot>>,
    wait: Duration,
    keepalive: Option<Duration>,
    udp: bool,
}

/// The session of one pod, locked while it is being opened.
type SessionSlot = Arc<tokio::sync::Mutex<Option<PodSession>>>;

/// A SPDY session to one pod, with the pod's uid: a pod replaced under the same name gets
/// a session of its own.
#[derive(Debug)]
struct PodSession {
    uid: String,
    session: SpdySession,
}

/// One forwarded connection: the stream ([`PodStream`] for TCP, [`DatagramStream`] for
/// UDP), and the pod it went to.
#[derive(Debug)]
pub struct Connected<S = PodStream> {
    /// The connection to the pod's port.
    pub stream: S,
    /// The pod's name.
    pub pod: Arc<str>,
    /// The pod's port it reaches (the remote port translated for this pod).
    pub port: u16,
    /// Counts the connection as open on the pod for the balancing until dropped.
    _open: Opened<Arc<str>>,
}

// ===== impl PodForwarderBuilder =====

impl PodForwarderBuilder {
    /// The protocol to speak to the API server. Default [`Protocol::Auto`].
    pub fn protocol(mut self, protocol: Protocol) -> Self {
        self.protocol = protocol;
        self
    }

    /// How new connections are spread over the ready pods. Default round robin.
    pub fn balance(mut self, balance: Balance) -> Self {
        self.balance = balance;
        self
    }

    /// Skips a pod that failed this many connections in a row, for a while. Default
    /// none: a failed pod is tried again by the next connection.
    pub fn ejection(mut self, ejection: impl Into<Option<Ejection>>) -> Self {
        self.ejection = ejection.into();
        self
    }

    /// How long [`build`](Self::build) waits for a running pod, and a connection for a
    /// ready pod and a session to it ([`DEFAULT_WAIT`], kubectl's
    /// `--pod-running-timeout`).
    pub fn wait(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self
    }

    /// Offers UDP on the SPDY sessions (an extension only `proxy port-forward-server`
    /// accepts; API servers answer with TCP only, which [`PodForwarder::check_udp`] then
    /// reports). Default off: the upgrade offers exactly what kubectl offers.
    pub fn udp(mut self, udp: bool) -> Self {
        self.udp = udp;
        self
    }

    /// How often an idle SPDY session is PINGed; `None` never. Default 30 s.
    pub fn keepalive(mut self, interval: impl Into<Option<Duration>>) -> Self {
        self.keepalive = interval.into();
        self
    }

    /// Resolves the target, starts following its pods and waits (up to
    /// [`wait`](Self::wait)) for one to be ready.
    ///
    /// # Errors
    ///
    /// kubectl's errors: the object does not exist (`Error from server (NotFound): ...`),
    /// it selects no pod, or its pod is not running when the wait ends (`unable to
    /// forward port because pod is not running. Current status=Pending`); the API
    /// server cannot be reached or refuses the credentials.
    pub async fn build(self) -> Result<PodForwarder, Error> {
        let resolved = self.client.resolve(&self.target).await?;
        let endpoint = self.client.api_endpoint().await?;
        let watch = self.client.watch_pods(&resolved);
        let mut pods = watch.subscribe();
        let deadline = Instant::now() + self.wait;
        // The first list, then until a pod is ready or the wait ends.
        let ready = loop {
            let set = pods.borrow_and_update().clone();
            if !set.ready_names().is_empty() {
                break true;
            }
            match tokio::time::timeout_at(deadline, pods.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => break false,
            }
        };
        if !ready {
            let set = pods.borrow().clone();
            // kubectl's errors, about the pod it would have picked.
            match set.pods().next().or(resolved.pods.first()) {
                None => {
                    resolved.first_pod()?;
                }
                Some(pod) => check_running(pod)?,
            }
            return Err(Error::new(
                ErrorKind::NotRunning,
                format!(
                    "no pod of {} became ready within {:?}",
                    resolved.target, self.wait
                ),
            ));
        }
        let base = endpoint.url.path().trim_end_matches('/');
        let pods_path = format!("{base}/api/v1/namespaces/{}/pods", resolved.namespace);
        let host =
            (endpoint.url.authority()).map_or_else(|| "localhost".to_owned(), ToString::to_string);
        Ok(PodForwarder {
            inner: Arc::new(Inner {
                resolved,
                endpoint,
                pods_path,
                host,
                pods,
                _watch: watch,
                picker: Picker::new(self.balance, self.ejection),
                protocol: self.protocol,
                chosen: Mutex::new(None),
                sessions: Mutex::new(HashMap::new()),
                wait: self.wait,
                keepalive: self.keepalive,
                udp: self.udp,
            }),
        })
    }
}

// ===== impl PodForwarder =====

impl PodForwarder {
    /// A builder for `target`, with the namespace and credentials of `client`.
    pub fn builder(client: Client, target: Target) -> PodForwarderBuilder {
        PodForwarderBuilder {
            client,
            target,
            protocol: Protocol::Auto,
            balance: Balance::RoundRobin,
            ejection: None,
            wait: DEFAULT_WAIT,
            keepalive: Some(proxy_portforward::client::DEFAULT_KEEPALIVE),
            udp: false,
        }
    }

    /// The target as resolved when the forwarder was built.
    pub fn resolved(&self) -> &Resolved {
        &self.inner.resolved
    }

    /// The pods as last seen.
    pub fn pods(&self) -> PodSet {
        self.inner.pods.borrow().clone()
    }

    /// The protocol in use: with [`Protocol::Auto`], the one that worked, once a
    /// connection has been made.
    pub fn protocol(&self) -> Protocol {
        self.inner.chosen().unwrap_or(self.inner.protocol)
    }

    /// The pod port `remote` (a number or a port name, as in `8080:http`) means on the
    /// first ready pod, as kubectl prints it (`Forwarding from 127.0.0.1:8080 -> 8080`).
    ///
    /// # Errors
    ///
    /// kubectl's port errors ([`Resolved::remote_port`]), or no ready pod.
    pub fn remote_port(&self, remote: &str) -> Result<u16, Error> {
        let set = self.pods();
        let ready = set.ready();
        let pod = ready.first().copied().or(set.pods().next());
        match pod {
            Some(pod) => self.inner.resolved.remote_port(pod, remote),
            None => self
                .inner
                .resolved
                .first_pod()
                .and_then(|pod| self.inner.resolved.remote_port(pod, remote)),
        }
    }

    /// Opens a connection to `remote` (a port number or name, translated for each pod) on
    /// a ready pod: the balancing policy's pick, else the next. Waits, up to the builder's
    /// [`wait`](PodForwarderBuilder::wait), while no pod is ready or none can be
    /// reached, trying again as the pods change; an API server that does not answer is
    /// given up on when the wait ends (or after a second, when the wait is shorter).
    ///
    /// The pod's answer comes later: when it refuses the port, reads of the stream fail
    /// with the node's text.
    ///
    /// # Errors
    ///
    /// The last failure when the wait ends: no ready pod, the port does not exist on any,
    /// or the API server refused or could not be reached.
    pub async fn connect(&self, remote: &str, client: Option<IpAddr>) -> io::Result<Connected> {
        self.pick(remote, client, Transport::Tcp)
            .await
            .map(|c| c.map(Stream::into_tcp))
    }

    /// As [`connect`](Self::connect), a UDP "connection": datagrams to `remote` on a
    /// ready pod, through the UDP extension of `proxy port-forward-server` (the builder's
    /// [`udp`](PodForwarderBuilder::udp) must be on).
    ///
    /// # Errors
    ///
    /// As [`connect`](Self::connect); the server does not carry UDP.
    pub async fn connect_udp(
        &self,
        remote: &str,
        client: Option<IpAddr>,
    ) -> io::Result<Connected<DatagramStream>> {
        self.pick(remote, client, Transport::Udp)
            .await
            .map(|c| c.map(Stream::into_udp))
    }

    /// Checks that the API server carries UDP for this forward: opens (or reuses) the
    /// session of a ready pod and reads what the upgrade answered.
    ///
    /// # Errors
    ///
    /// `Unsupported` with a message saying that only `proxy port-forward-server` carries
    /// UDP, or the failure to reach any pod.
    pub async fn check_udp(&self) -> io::Result<()> {
        let inner = &self.inner;
        if !inner.udp || inner.protocol == Protocol::WebSocket {
            return Err(udp_unsupported());
        }
        let set = self.pods();
        let pod = (set.ready().first().copied())
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "no ready pod"))?;
        // Bounded, as a connection is (see `pick`).
        let limit = Instant::now() + inner.wait.max(MIN_OPEN);
        let mut last = None;
        for protocol in inner.spdy_candidates() {
            let session = tokio::time::timeout_at(limit, inner.spdy_session(pod, protocol, false));
            let Ok(session) = session.await else {
                return Err(no_answer(pod_name(pod)));
            };
            match session {
                Ok(session) if session.supports_udp() => return Ok(()),
                Ok(_) => return Err(udp_unsupported()),
                Err(Open::Refused(e) | Open::Failed(e)) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(udp_unsupported))
    }

    /// Opens a connection of `transport` on a ready pod: the policy's pick, else the next;
    /// waits for pods and retries until the builder's wait ends.
    async fn pick(
        &self,
        remote: &str,
        client: Option<IpAddr>,
        transport: Transport,
    ) -> io::Result<Connected<Stream>> {
        let inner = &self.inner;
        let started = Instant::now();
        let deadline = started + inner.wait;
        // Opening a connection is bounded too: an API server (or a proxy before it) that
        // accepts and never answers the upgrade held `connect` for ever, past the wait,
        // and with it, through the pod's session slot, every other connection to the pod.
        let open_limit = deadline.max(started + MIN_OPEN);
        let mut pods = inner.pods.clone();
        let mut retry = MIN_RETRY;
        let mut last: Option<io::Error> = None;
        loop {
            let set = pods.borrow_and_update().clone();
            let ready: Vec<Arc<str>> = set.ready_names().into_iter().map(Arc::from).collect();
            inner.forget_gone(&set, &ready);
            let mut port_errors = 0;
            for name in inner.picker.order(&ready, client).unwrap_or_default() {
                let Some(pod) = set.get(&name) else { continue };
                let port = match inner.resolved.remote_port(pod, remote) {
                    Ok(port) => port,
                    Err(e) => {
                        port_errors += 1;
                        last = Some(io::Error::new(io::ErrorKind::InvalidInput, e.to_string()));
                        continue;
                    }
                };
                let attempt = async {
                    match transport {
                        Transport::Tcp => inner.open(pod, port).await.map(Stream::Tcp),
                        Transport::Udp => inner.open_udp(pod, port).await.map(Stream::Udp),
                    }
                };
                let opened = (tokio::time::timeout_at(open_limit, attempt).await)
                    .unwrap_or_else(|_| Err(no_answer(&name)));
                match opened {
                    Ok(stream) => {
                        inner.picker.report(&name, true);
                        if let Some(ip) = client {
                            inner.picker.stick(ip, name.clone());
                        }
                        let open = inner.picker.open(name.clone());
                        return Ok(Connected {
                            stream,
                            pod: name,
                            port,
                            _open: open,
                        });
                    }
                    // No pod can do better: the server does not carry UDP.
                    Err(e) if e.kind() == io::ErrorKind::Unsupported => return Err(e),
                    Err(e) => {
                        tracing::debug!(pod = %name, error = %e, "cannot open a forwarded connection");
                        inner.picker.report(&name, false);
                        last = Some(e);
                    }
                }
            }
            // No ready pod has the port (a name the service or the pods do not have):
            // waiting will not change that, as kubectl does not wait either.
            if port_errors > 0 && port_errors == ready.len() {
                return Err(last.unwrap_or_else(|| io::ErrorKind::InvalidInput.into()));
            }
            if ready.is_empty() && last.is_none() {
                last = Some(io::Error::new(
                    io::ErrorKind::NotConnected,
                    format!("no ready pod for {}", inner.resolved.target),
                ));
            }
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            // Another try when the pods change, or after a pause.
            let pause = (now + retry).min(deadline);
            retry = (retry * 2).min(MAX_RETRY);
            tokio::select! {
                changed = pods.changed() => if changed.is_err() {
                    tokio::time::sleep_until(pause).await;
                },
                () = tokio::time::sleep_until(pause) => {}
            }
        }
        let why = last.unwrap_or_else(|| io::Error::from(io::ErrorKind::TimedOut));
        Err(io::Error::new(
            why.kind(),
            format!("{why} (waited {:?})", inner.wait),
        ))
    }
}

// ===== impl Inner =====

impl Inner {
    fn chosen(&self) -> Option<Protocol> {
        *self.chosen.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Drops what is kept of pods no longer in `set`: balancing state of pods not ready,
    /// sessions of pods gone (their open connections go on).
    fn forget_gone(&self, set: &PodSet, ready: &[Arc<str>]) {
        self.picker.retain(ready);
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions.retain(|name, _| set.get(name).is_some());
    }

    fn headers(&self) -> Vec<(&str, &str)> {
        let mut headers = vec![("host", self.host.as_str())];
        if let Some(auth) = &self.endpoint.authorization {
            headers.push(("authorization", auth.as_str()));
        }
        headers
    }

    /// A forwarded connection to `port` of `pod`, with the protocol that worked before,
    /// else each candidate in turn.
    async fn open(&self, pod: &Pod, port: u16) -> io::Result<PodStream> {
        let candidates: Vec<Protocol> = match self.chosen() {
            Some(chosen) => vec![chosen],
            None => self.protocol.candidates().to_vec(),
        };
        let mut last = None;
        for (i, protocol) in candidates.iter().copied().enumerate() {
            let result = match protocol {
                Protocol::WebSocket => self.open_channel(pod, port).await,
                _ => self.open_spdy(pod, port, protocol).await,
            };
            match result {
                Ok(stream) => {
                    if self.protocol == Protocol::Auto && self.chosen().is_none() {
                        tracing::debug!(%protocol, "port-forward protocol chosen");
                        *self.chosen.lock().unwrap_or_else(|e| e.into_inner()) = Some(protocol);
                    }
                    return Ok(stream);
                }
                // A refused upgrade may be this protocol's: the next one may work.
                Err(Open::Refused(e)) if i + 1 < candidates.len() => {
                    tracing::debug!(%protocol, error = %e, "upgrade refused; trying the next protocol");
                    last = Some(e);
                }
                Err(Open::Refused(e) | Open::Failed(e)) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("no port-forward protocol to try")))
    }

    /// A stream of the pod's SPDY session, opened now if there is none or it ended.
    async fn open_spdy(&self, pod: &Pod, port: u16, protocol: Protocol) -> Result<PodStream, Open> {
        let session = self.spdy_session(pod, protocol, false).await?;
        match session.open(port).await {
            Ok(stream) => Ok(PodStream::spdy(stream)),
            // It ended, or took no more streams (GOAWAY), between the check and the open:
            // once more, on a new one.
            Err(_) => {
                let session = self.spdy_session(pod, protocol, true).await?;
                let stream = session.open(port).await.map_err(Open::Failed)?;
                Ok(PodStream::spdy(stream))
            }
        }
    }

    /// A UDP stream of the pod's SPDY session.
    async fn open_udp(&self, pod: &Pod, port: u16) -> io::Result<DatagramStream> {
        let mut last = None;
        for protocol in self.spdy_candidates() {
            match self.spdy_session(pod, protocol, false).await {
                Ok(session) => return session.open_udp(port).await,
                Err(Open::Refused(e) | Open::Failed(e)) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(udp_unsupported))
    }

    /// The SPDY forms to try: the one that worked, else the builder's.
    fn spdy_candidates(&self) -> Vec<Protocol> {
        match self.chosen() {
            Some(Protocol::WebSocket) | None => (self.protocol.candidates().iter().copied())
                .filter(|p| *p != Protocol::WebSocket)
                .collect(),
            Some(chosen) => vec![chosen],
        }
    }

    /// The pod's SPDY session: the one kept, while it lives and the pod is the same
    /// (same uid) and `fresh` is not asked for, else a new one.
    async fn spdy_session(
        &self,
        pod: &Pod,
        protocol: Protocol,
        fresh: bool,
    ) -> Result<SpdySession, Open> {
        let name: Arc<str> = Arc::from(pod_name(pod));
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let slot = {
            let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
            sessions.entry(name.clone()).or_default().clone()
        };
        let mut slot = slot.lock().await;
        if let Some(current) = slot.as_ref()
            && current.uid == uid
            && !current.session.is_closed()
            && !fresh
        {
            return Ok(current.session.clone());
        }
        let session = self.session(&name, protocol).await?;
        *slot = Some(PodSession {
            uid,
            session: session.clone(),
        });
        Ok(session)
    }

    /// A new SPDY session to `pod`, over a WebSocket or not.
    async fn session(&self, pod: &str, protocol: Protocol) -> Result<SpdySession, Open> {
        let io = self.endpoint.connect().await.map_err(Open::Failed)?;
        let path = format!("{}/{pod}/portforward", self.pods_path);
        let headers = self.headers();
        let builder = SpdySession::builder().keepalive(self.keepalive);
        // The UDP extension is offered only when asked for: otherwise the upgrade is
        // exactly kubectl's.
        if protocol == Protocol::Spdy {
            let offer: &[&str] = if self.udp {
                &udp::SPDY_OFFER
            } else {
                &SPDY_OFFER
            };
            let (upgraded, selected) = upgrade_spdy_with(io, &path, offer, &headers)
                .await
                .map_err(Open::from)?;
            return Ok(builder.protocol(&selected).start(upgraded));
        }
        let offer: &[&str] = if self.udp {
            &udp::TUNNEL_OFFER
        } else {
            &[TUNNEL_PROTOCOL]
        };
        let (ws, selected) = upgrade_websocket(io, &path, offer, &headers)
            .await
            .map_err(Open::from)?;
        Ok(builder.protocol(&selected).tunnel(ws))
    }

    /// A WebSocket of its own for one connection, in the channel protocol.
    async fn open_channel(&self, pod: &Pod, port: u16) -> Result<PodStream, Open> {
        let io = self.endpoint.connect().await.map_err(Open::Failed)?;
        let path = format!(
            "{}/{}/portforward?ports={port}",
            self.pods_path,
            pod_name(pod)
        );
        let offered: Vec<&str> = CHANNEL_PROTOCOLS.iter().filter_map(|p| p.name()).collect();
        let (ws, chosen) = upgrade_websocket(io, &path, &offered, &self.headers())
            .await
            .map_err(Open::from)?;
        let chosen = Channels::from_name(&chosen).unwrap_or(Channels::Unnamed);
        let stream = ChannelStream::connect(ws, chosen, port)
            .await
            .map_err(Open::Failed)?;
        Ok(PodStream::channel(stream, chosen))
    }
}

/// Why a connection could not be opened with one protocol.
enum Open {
    /// The server answered the upgrade with another status than 101, or a bad 101.
    Refused(io::Error),
    /// Anything else: the server could not be reached, the session failed.
    Failed(io::Error),
}

impl From<UpgradeError> for Open {
    fn from(e: UpgradeError) -> Self {
        match e {
            UpgradeError::Io(e) => Open::Failed(e),
            UpgradeError::Refused { status, .. } => {
                let kind = match status.as_u16() {
                    401 | 403 => io::ErrorKind::PermissionDenied,
                    404 => io::ErrorKind::NotFound,
                    _ => io::ErrorKind::ConnectionRefused,
                };
                Open::Refused(io::Error::new(kind, e.to_string()))
            }
            other => Open::Refused(io::Error::new(
                io::ErrorKind::InvalidData,
                other.to_string(),
            )),
        }
    }
}

/// What a connection carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Transport {
    Tcp,
    Udp,
}

/// A connection of either transport.
#[derive(Debug)]
enum Stream {
    Tcp(PodStream),
    Udp(DatagramStream),
}

impl Stream {
    fn into_tcp(self) -> PodStream {
        match self {
            Stream::Tcp(s) => s,
            Stream::Udp(_) => unreachable!("a TCP connection was asked for"),
        }
    }

    fn into_udp(self) -> DatagramStream {
        match self {
            Stream::Udp(s) => s,
            Stream::Tcp(_) => unreachable!("a UDP connection was asked for"),
        }
    }
}

impl<S> Connected<S> {
    fn map<T>(self, f: impl FnOnce(S) -> T) -> Connected<T> {
        Connected {
            stream: f(self.stream),
            pod: self.pod,
            port: self.port,
            _open: self._open,
        }
    }
}

/// The error of a connection to `pod` given up because the API server did not answer.
fn no_answer(pod: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!("no answer from the API server opening a port-forward session to pod {pod}"),
    )
}

/// The error of UDP against a server that does not carry it.
fn udp_unsupported() -> io::Error {
    io::Error::new(io::ErrorKind::Unsupported, UDP_NOT_NEGOTIATED)
}
