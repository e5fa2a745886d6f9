//! The UDP forwarder: builder, listening sockets, and the loop that hands datagrams to
//! sessions.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use socket2::Type;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::budgets::Budgets;
use super::session::{self, Ending, SessionKey};
use super::table::Table;
use crate::balance::Balancer;
use crate::forward::{self, Common, Generation, Protocol};
use crate::handle::{Base, Control, Current, ForwarderHandle, Refresher};
use crate::listen;
use crate::pool::Pool;
use crate::proxy_protocol::{self, ProxyProtocol, Transport};
use crate::resolve::ResolveCache;
use crate::stats::Stats;
use crate::sys::udp::{self as io_udp, MAX_BATCH, RecvBatch};
use crate::{BuildError, Error, Target};

/// Forwards UDP datagrams from one or more listen addresses to an upstream [`Target`].
///
/// Each client address gets a session with its own connected upstream socket, so the
/// upstream's replies are told apart and datagrams from strangers are dropped by the
/// kernel. A session ends after [`Timeouts::udp_session_idle`](crate::Timeouts::udp_session_idle) without a datagram in
/// either direction (30 s by default), or when the session table is full and it is the
/// least recently used. Replies leave from the address the client sent to, also on a
/// wildcard listener of a host with several addresses. Datagrams of any size up to
/// 65,507 bytes (IPv4) pass intact; on Linux they move in batches (`recvmmsg`/`sendmmsg`).
///
/// An ended session's upstream socket stays open for 10 s (or until shutdown), discarding
/// late replies, so the kernel cannot give its port to a new session meanwhile: a reply
/// never reaches a client it was not sent for.
///
/// While new sessions wait for their upstream socket (the target's name resolving), a
/// forward queues at most 4 MiB of their clients' datagrams, all sessions together, and
/// at most 64 datagrams per session; the rest are dropped and counted in
/// [`UdpStats::dropped`](crate::UdpStats::dropped).
///
/// # Examples
///
/// A DNS proxy, as `proxy udp 53 kube-dns.default 1`:
///
/// ```no_run
/// use std::time::Duration;
/// use proxy_core::UdpForwarder;
///
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let forwarder = UdpForwarder::builder(["[::]:53".parse()?], "kube-dns.default:53".parse()?)
///     .session_idle_timeout(Duration::from_secs(1))
///     .build()?;
/// let handle = forwarder.start()?;
/// tokio::signal::ctrl_c().await?;
/// handle.shutdown(Duration::from_secs(5)).await;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct UdpForwarder {
    config: Arc<Config>,
}

/// Settings for a [`UdpForwarder`]; every setter documents its default.
#[derive(Clone)]
#[must_use]
pub struct Builder {
    spec: crate::ForwardSpec,
    resolver: Option<Arc<dyn crate::resolve::Resolve>>,
}

#[derive(Clone, Debug)]
pub(super) struct Config {
    pub(super) common: Common,
    /// Where datagrams go (a UDP forward always has a target).
    pub(super) target: crate::Target,
    max_sessions: usize,
    pub(super) batch_size: usize,
    pub(super) socket_buffer: Option<usize>,
    pub(super) proxy_protocol: Option<ProxyProtocol>,
}

impl Config {
    /// Sizes a socket's buffers as configured; a refusal is logged, never fatal.
    pub(super) fn size_buffers(&self, socket: &socket2::Socket) {
        if let Some(bytes) = self.socket_buffer
            && let Err(e) = io_udp::set_buffers(socket, bytes)
        {
            tracing::debug!(error = %e, bytes, "could not size the UDP socket buffers");
        }
    }
}

/// What a running UDP forwarder's tasks share: one generation of settings (replaced by a
/// reload) and the parts that outlive generations.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(super) config: Arc<Config>,
    pub(super) stats: Arc<Stats>,
    pub(super) cache: Arc<ResolveCache>,
    refresher: Arc<Refresher>,
    pub(super) balancer: Arc<Balancer>,
    /// Receive batches for the sessions' reply paths, taken only while replies flow.
    pub(super) batches: Pool<RecvBatch>,
    pub(super) accepting: CancellationToken,
    pub(super) closing: CancellationToken,
    pub(super) sessions: TaskTracker,
    /// Whether sends may use UDP segmentation offload; cleared when the kernel refuses it.
    pub(super) segmentation: AtomicBool,
    admission: Arc<crate::limit::Admission>,
    /// The forward's bounds, shared by every generation.
    pub(super) budgets: Arc<Budgets>,
}

impl Generation for Shared {
    fn common(&self) -> &Common {
        &self.config.common
    }

    fn refresher(&self) -> Arc<Refresher> {
        self.refresher.clone()
    }
}

impl Shared {
    /// Whether a new session would go somewhere other than `upstream`: a reload retired
    /// this generation, or the target's current answer has another address.
    pub(super) fn elsewhere_than(&self, upstream: SocketAddr) -> bool {
        self.refresher.is_stopped()
            || self
                .cache
                .cached()
                .is_some_and(|addrs| addrs.iter().any(|a| *a != upstream))
    }
}

// ===== impl UdpForwarder =====

impl UdpForwarder {
    /// Starts building a forwarder from `listen` addresses to `target`.
    ///
    /// Port 0 binds a port chosen by the kernel; read it from
    /// [`ForwarderHandle::local_addrs`]. `[::]` is one dual-stack socket that also
    /// receives IPv4 (see [`Builder::dual_stack`]).
    pub fn builder(listen: impl IntoIterator<Item = SocketAddr>, target: Target) -> Builder {
        let listen = crate::spec::Listen::Addrs(listen.into_iter().collect());
        Builder {
            spec: crate::ForwardSpec::new(crate::Transport::Udp, listen, target),
            resolver: None,
        }
    }

    crate::forward::common_accessors!();

    /// Binds every listen address and starts forwarding on the current tokio runtime.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Bind`](crate::ErrorKind::Bind) naming the address when one cannot be bound; nothing stays
    /// bound then.
    ///
    /// # Panics
    ///
    /// When called outside a tokio runtime.
    pub fn start(&self) -> Result<ForwarderHandle, Error> {
        forward::start(self)
    }

    /// Starts forwarding on sockets bound elsewhere, such as the sockets systemd passes
    /// ([`systemd::listen_fds`](crate::systemd::listen_fds)), instead of binding the
    /// configured listen addresses. Each socket is made non-blocking, and a wildcard one
    /// (`0.0.0.0`, `[::]`) gets packet info so replies leave from the address the client
    /// sent to; its local address stands for the configured one in
    /// [`ForwarderHandle::local_addrs`], the logs and the stats.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Bind`](crate::ErrorKind::Bind) when `sockets` is empty or one of them
    /// cannot be set up (not bound, ...); nothing is started then.
    ///
    /// # Panics
    ///
    /// When called outside a tokio runtime.
    pub fn start_from(
        &self,
        sockets: impl IntoIterator<Item = std::net::UdpSocket>,
    ) -> Result<ForwarderHandle, Error> {
        forward::start_from(self, sockets)
    }

    /// Readies a non-blocking `socket` bound to `addr`: packet info on a wildcard
    /// address, the configured buffer sizes.
    fn ready(&self, socket: socket2::Socket, addr: SocketAddr) -> std::io::Result<Socket> {
        let wildcard = addr.ip().is_unspecified();
        if wildcard {
            io_udp::enable_dst_info(&socket, addr.is_ipv6())?;
        }
        self.config.size_buffers(&socket);
        let socket = UdpSocket::from_std(socket.into())?;
        Ok((Arc::new(socket), wildcard))
    }
}

impl Protocol for UdpForwarder {
    const NAME: &'static str = "udp";
    const GIVEN: &'static str = "socket";
    type Std = std::net::UdpSocket;
    type Socket = Socket;
    type Shared = Shared;

    fn common(&self) -> &Common {
        &self.config.common
    }

    /// Binds `addr`, with packet info on a wildcard address.
    fn bind_one(&self, addr: SocketAddr) -> std::io::Result<Socket> {
        let socket = listen::bind(addr, Type::DGRAM, &self.config.common.listen_options)?;
        self.ready(socket, addr)
    }

    fn given_addr(socket: &std::net::UdpSocket) -> std::io::Result<SocketAddr> {
        socket.local_addr()
    }

    fn adopt(&self, socket: std::net::UdpSocket, addr: SocketAddr) -> std::io::Result<Socket> {
        let socket = socket2::Socket::from(socket);
        socket.set_nonblocking(true)?;
        self.ready(socket, addr)
    }

    fn local_addr((socket, _): &Socket) -> std::io::Result<SocketAddr> {
        socket.local_addr()
    }

    /// These settings and a resolve cache with its refresher; after a reload, within the
    /// same per-forward bounds as `previous`.
    fn generation(&self, base: &Base, previous: Option<&Shared>) -> Arc<Shared> {
        let cache = (self.config.common).resolve_cache(&self.config.target, &base.stats);
        let (refresher, balancer) = self.config.common.background(&cache, base);
        Arc::new(Shared {
            config: self.config.clone(),
            stats: base.stats.clone(),
            refresher,
            cache,
            balancer,
            batches: Pool::new(4),
            accepting: base.accepting.clone(),
            closing: base.closing.clone(),
            sessions: base.tasks.clone(),
            segmentation: AtomicBool::new(io_udp::SEGMENTATION),
            admission: base.admission.clone(),
            budgets: previous.map_or_else(Arc::default, |p| p.budgets.clone()),
        })
    }

    fn control(current: Arc<Current<Shared>>) -> Control {
        Control::Udp(current)
    }

    fn spawn_loop(
        (socket, wildcard): Socket,
        current: Arc<Current<Shared>>,
        stop: CancellationToken,
    ) -> JoinHandle<()> {
        tokio::spawn(listen_loop(socket, wildcard, current, stop))
    }
}

/// A bound listening socket, and whether it is a wildcard one (replies then need the
/// client's destination address as their source).
type Socket = (Arc<UdpSocket>, bool);

// ===== impl Builder =====

impl Builder {
    crate::forward::common_setters!();

    /// A session ends after this long without a datagram in either direction; `None`
    /// keeps sessions until the table is full. Default 30 s.
    pub fn session_idle_timeout(mut self, idle: impl Into<Option<Duration>>) -> Self {
        self.spec.udp_idle_timeout = idle.into();
        self
    }

    /// The most sessions each listening socket keeps; a new client beyond it evicts the
    /// least recently used session. Default 16,384.
    pub fn max_sessions(mut self, max: usize) -> Self {
        self.spec.max_sessions = max;
        self
    }

    /// Datagrams moved per system call on Linux (`recvmmsg`/`sendmmsg`), 1 to 64.
    /// Default 32.
    pub fn batch_size(mut self, datagrams: usize) -> Self {
        self.spec.batch_size = datagrams;
        self
    }

    /// The receive and send buffer of each listening socket and each session's upstream
    /// socket, in bytes; `None` keeps the system's default. Large buffers carry a sender's
    /// bursts while the proxy is busy, instead of dropping them. Set past the system's
    /// limits (`net.core.rmem_max`, `wmem_max`) with CAP_NET_ADMIN, else capped at them.
    /// Default 4 MiB.
    pub fn socket_buffer(mut self, bytes: impl Into<Option<usize>>) -> Self {
        self.spec.socket_buffer = bytes.into();
        self
    }

    /// Sends a PROXY protocol version 2 header (UDP over IPv4 or IPv6) ahead of each
    /// datagram to the upstream, carrying the client's address and the address it sent
    /// to; replies pass as they are. Version 1 has no UDP form. Default `None`.
    pub fn proxy_protocol(mut self, version: impl Into<Option<ProxyProtocol>>) -> Self {
        self.spec.proxy_protocol = version.into();
        self
    }

    /// Checks the settings.
    ///
    /// # Errors
    ///
    /// A [`BuildError`] naming the first bad setting.
    pub fn build(self) -> Result<UdpForwarder, BuildError> {
        let (spec, common) = self.checked()?;
        let target = (common.target.clone()).ok_or(BuildError::Missing("target"))?;
        Ok(UdpForwarder {
            config: Arc::new(Config {
                common,
                target,
                max_sessions: spec.max_sessions,
                batch_size: spec.batch_size,
                socket_buffer: spec.socket_buffer,
                proxy_protocol: spec.proxy_protocol,
            }),
        })
    }
}

impl std::fmt::Debug for Builder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.spec.fmt(f)
    }
}

/// Receives client datagrams in batches and hands them to their sessions, creating
/// sessions for new clients. Ends when the forwarder stops accepting (its sessions drain
/// on their own, keeping the socket to reply), or when `stop` alone fires: a reload
/// removed this address, so its sessions end, and the loop returns once they are gone
/// and the socket with them (the port can be bound again, by a reload moving back).
async fn listen_loop(
    socket: Arc<UdpSocket>,
    wildcard: bool,
    current: Arc<Current<Shared>>,
    stop: CancellationToken,
) {
    let mut shared = current.get();
    let mut batch_size = shared.config.batch_size;
    let mut batch = RecvBatch::new(batch_size);
    let max = |shared: &Shared| {
        NonZeroUsize::new(shared.config.max_sessions).unwrap_or(NonZeroUsize::MIN)
    };
    let mut table = Table::new(max(&shared));
    let local = socket.local_addr().ok();
    let (ended_tx, mut ended_rx) = mpsc::unbounded_channel::<(SessionKey, u64)>();
    // This listener's sessions (also tracked with the forwarder's).
    let own = TaskTracker::new();
    let stopped = stop.cancelled();
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            () = &mut stopped => {
                if !shared.accepting.is_cancelled() {
                    table.end_all(Ending::Removed);
                    own.close();
                    own.wait().await;
                }
                return;
            }
            // Forget ended sessions promptly: their entries hold the upstream sockets.
            Some((key, id)) = ended_rx.recv() => {
                table.ended(&key, id);
                continue;
            }
            ready = socket.readable() => {
                if let Err(e) = ready {
                    tracing::warn!(error = %e, "UDP listener failed");
                    return;
                }
            }
        }
        // A reload may have changed the settings: new sessions take the new ones.
        let latest = current.get();
        if !Arc::ptr_eq(&latest, &shared) {
            shared = latest;
            table.resize(max(&shared));
            if shared.config.batch_size != batch_size {
                batch_size = shared.config.batch_size;
                batch = RecvBatch::new(batch_size);
            }
        }
        let stats = &shared.stats;
        loop {
            while let Ok((key, id)) = ended_rx.try_recv() {
                table.ended(&key, id);
            }
            let (n, drained) = match io_udp::recv(&socket, &mut batch, batch_size) {
                Ok(r) => (r.count, r.drained),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    // A pending error is reported once; should one persist, the readiness
                    // that stays set must not spin this loop without yielding.
                    tracing::debug!(error = %e, "UDP receive failed");
                    tokio::task::coop::consume_budget().await;
                    break;
                }
            };
            let mut i = 0;
            while i < n {
                let (_, meta) = batch.get(i);
                let client = match meta.from {
                    Some(client) if !meta.truncated => client,
                    _ => {
                        let counter = if meta.truncated {
                            &stats.udp_truncated
                        } else {
                            &stats.udp_dropped
                        };
                        Stats::inc(counter);
                        i += 1;
                        continue;
                    }
                };
                if !shared.config.common.access.permits(client.ip()) {
                    Stats::inc(&stats.denied);
                    i += 1;
                    continue;
                }
                let key = SessionKey {
                    client,
                    local_ip: if wildcard { meta.dst_ip } else { None },
                };
                // Consecutive datagrams of one client go out in one call.
                let mut group: [&[u8]; MAX_BATCH] = [&[]; MAX_BATCH];
                let mut len = 0;
                while i < n {
                    let (data, meta) = batch.get(i);
                    let same = meta.from == Some(key.client)
                        && !meta.truncated
                        && (!wildcard || meta.dst_ip == key.local_ip);
                    if !same {
                        break;
                    }
                    group[len] = data;
                    len += 1;
                    i += 1;
                }
                let session = match table.get(&key) {
                    Some(session) => session,
                    None => {
                        let limits = &shared.config.common.limits;
                        let permit = match shared.admission.admit(limits, Some(client.ip())) {
                            Ok(permit) => permit,
                            Err(limit) => {
                                let n = len as u64;
                                shared.admission.refused(limit, n, stats, client.ip());
                                continue;
                            }
                        };
                        // The PROXY header names the address the client sent to.
                        let header = shared.config.proxy_protocol.zip(local).map(|(_, local)| {
                            let ip = key.local_ip.unwrap_or(local.ip());
                            let dst = SocketAddr::new(ip, local.port());
                            proxy_protocol::v2(key.client, dst, Transport::Datagram).into()
                        });
                        let (session, evicted) = table.insert(key, header, &shared.closing);
                        if let Some(evicted) = evicted {
                            evicted.evict();
                            Stats::inc(&stats.udp_sessions_evicted);
                        }
                        Stats::inc(&stats.udp_sessions_total);
                        Stats::inc(&stats.udp_sessions_open);
                        shared.sessions.spawn(own.track_future(session::run(
                            session.clone(),
                            socket.clone(),
                            shared.clone(),
                            ended_tx.clone(),
                            permit,
                        )));
                        session
                    }
                };
                session.forward(&group[..len], &shared);
            }
            if drained {
                break;
            }
            tokio::task::coop::consume_budget().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An upstream echo, a forwarder in front, and datagrams of 0, 3 and 65,507 bytes.
    #[tokio::test]
    async fn relays_datagrams_of_every_size_both_ways() {
        let echo = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let target: Target = echo.local_addr().unwrap().into();
        tokio::spawn(async move {
            let mut buf = vec![0; 1 << 16];
            loop {
                let (n, from) = echo.recv_from(&mut buf).await.unwrap();
                echo.send_to(&buf[..n], from).await.unwrap();
            }
        });
        let handle = UdpForwarder::builder(["127.0.0.1:0".parse().unwrap()], target)
            .build()
            .unwrap()
            .start()
            .unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client.connect(handle.local_addrs()[0]).await.unwrap();
        let big: Vec<u8> = (0..65_507u32).map(|i| (i % 251) as u8).collect();
        let mut buf = vec![0; 1 << 16];
        for data in [&b""[..], b"abc", &big] {
            client.send(data).await.unwrap();
            let n = tokio::time::timeout(Duration::from_secs(5), client.recv(&mut buf))
                .await
                .unwrap_or_else(|_| panic!("no echo of {} B: {:?}", data.len(), handle.stats()))
                .unwrap();
            assert_eq!(&buf[..n], data);
        }
        let stats = handle.stats();
        assert_eq!(stats.udp.sessions_total, 1);
        assert_eq!(stats.udp.datagrams_to_upstream, 3);
        assert_eq!(stats.udp.datagrams_to_downstream, 3);
        assert_eq!(stats.bytes_to_upstream, 65_510);
        assert!(handle.shutdown(Duration::from_secs(2)).await);
    }
}
