//! UDP sessions: one per client address, each with its own connected upstream socket.
//! This module owns a session's state and its task ([`run`]: connect, flush what
//! queued, relay replies, linger); the table that holds a listener's sessions is
//! [`table`](super::table)'s, the forward-wide bounds [`budgets`](super::budgets)', and
//! sending datagrams [`send`](super::send)'s.

use std::convert::Infallible;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::mpsc::UnboundedSender;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::budgets::Budgets;
use super::forwarder::{Config, Shared};
use super::send::{Direction, Sent, send_all};
use crate::stats::Stats;
use crate::sys::udp::{self as io_udp, MAX_BATCH, RecvBatch};
use crate::timeout::after;
use crate::{Error, ErrorKind, Side};

/// Datagrams queued for a session whose upstream socket is not connected yet.
const MAX_PENDING: usize = 64;

/// How long an ended session's upstream socket stays open, discarding what still comes:
/// meanwhile the kernel cannot give its port to a new session to the same upstream, which
/// would get the late replies meant for this session's client. Longer than DNS clients
/// wait for an answer (5 s by default) and than most round trips to a slow upstream.
const LINGER: Duration = Duration::from_secs(10);

/// ICMP refusals in a row (no reply between) after which a session whose upstream has
/// somewhere to move on to ends, so the client's next datagram starts a fresh session:
/// one is a hiccup, several mean the upstream is gone.
const REFUSALS_TO_MOVE_ON: u32 = 3;

/// Once the forwarder stops accepting, a session ends after this long without traffic
/// (or its own idle timeout, if shorter): in-flight replies still reach their clients.
const DRAIN_IDLE: Duration = Duration::from_secs(1);

/// Who a session serves: the client's address, and on a wildcard listener the local
/// address the client sent to (replies leave from it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct SessionKey {
    pub(super) client: SocketAddr,
    pub(super) local_ip: Option<IpAddr>,
}

/// One client's session; shared by the listener (client to upstream) and the session's
/// task (upstream to client).
#[derive(Debug)]
pub(super) struct Session {
    id: u64,
    key: SessionKey,
    /// The PROXY protocol header sent ahead of each datagram to the upstream, if any.
    header: Option<Box<[u8]>>,
    /// Set by the session's task once the datagrams queued meanwhile are sent.
    upstream: OnceLock<(Arc<UdpSocket>, SocketAddr)>,
    pending: Mutex<Pending>,
    base: Instant,
    last_ms: AtomicU64,
    /// Cancelled when the session ends, is evicted, or the forwarder closes.
    done: CancellationToken,
    /// Why it was ended from outside its task: an [`Ending`], 0 for none.
    ending: AtomicU8,
    /// ICMP errors since the upstream last answered.
    refusals: AtomicU32,
    /// The upstream has answered this session.
    answered: AtomicBool,
    up: Counts,
    down: Counts,
}

/// Datagrams and bytes one session relayed in one direction.
#[derive(Debug, Default)]
struct Counts {
    datagrams: AtomicU64,
    bytes: AtomicU64,
}

impl Counts {
    fn add(&self, sent: Sent) {
        self.datagrams.fetch_add(sent.datagrams, Relaxed);
        self.bytes.fetch_add(sent.bytes, Relaxed);
    }
}

impl Session {
    pub(super) fn new(
        id: u64,
        key: SessionKey,
        header: Option<Box<[u8]>>,
        closing: &CancellationToken,
    ) -> Self {
        Session {
            id,
            key,
            header,
            upstream: OnceLock::new(),
            pending: Mutex::new(Pending::default()),
            base: Instant::now(),
            last_ms: AtomicU64::new(0),
            done: closing.child_token(),
            ending: AtomicU8::new(0),
            refusals: AtomicU32::new(0),
            answered: AtomicBool::new(false),
            up: Counts::default(),
            down: Counts::default(),
        }
    }

    /// Tells this session from a later one of the same key.
    pub(super) fn id(&self) -> u64 {
        self.id
    }

    fn touch(&self) {
        let ms = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Relaxed);
    }

    fn last_active(&self) -> Instant {
        after(self.base, Duration::from_millis(self.last_ms.load(Relaxed)))
    }

    pub(super) fn is_done(&self) -> bool {
        self.done.is_cancelled()
    }

    /// Ends the session (evicted): its task stops and its upstream socket closes.
    pub(super) fn evict(&self) {
        self.end(Ending::Evicted);
    }

    /// Ends the session from outside its task, for `why` (the first reason given wins).
    pub(super) fn end(&self, why: Ending) {
        let _ = self.ending.compare_exchange(0, why as u8, Relaxed, Relaxed);
        self.done.cancel();
    }

    /// Why the session was ended from outside its task, if it was.
    fn ending(&self) -> Option<Ending> {
        Ending::from_u8(self.ending.load(Relaxed))
    }

    /// Accounts datagrams sent to `addr` in one direction, and the upstream's health: an
    /// ICMP error marks it failing until it answers again, and several in a row end the
    /// session if there is somewhere else to go (see [`Self::refused`]).
    fn sent(&self, sent: Sent, dir: Direction, addr: SocketAddr, shared: &Shared) {
        match dir {
            Direction::Up => self.up.add(sent),
            Direction::Down => self.down.add(sent),
        }
        if sent.refused {
            shared.balancer.record(&shared.stats, addr, false);
            self.refused(addr, shared);
        } else if dir == Direction::Down {
            // Read first: most replies come with no refusal to clear.
            if self.refusals.load(Relaxed) > 0 && self.refusals.swap(0, Relaxed) > 0 {
                shared.balancer.record(&shared.stats, addr, true);
            } else if !self.answered.swap(true, Relaxed) {
                // The session's first reply: the address is alive.
                shared.balancer.report(addr, true);
            }
        }
    }

    /// Counts an ICMP refusal from `addr`. After [`REFUSALS_TO_MOVE_ON`] in a row the
    /// session ends if a new one would go elsewhere: a reload replaced its generation
    /// (the target may have changed), or the target's current answer has another
    /// address (or no longer has this one). A client that keeps sending is then not
    /// held on a dead upstream until it goes quiet; its next datagram starts a session
    /// with the current target and answer. With nowhere else to go, the session stays.
    fn refused(&self, addr: SocketAddr, shared: &Shared) {
        let refusals = self.refusals.fetch_add(1, Relaxed).saturating_add(1);
        if refusals >= REFUSALS_TO_MOVE_ON && shared.elsewhere_than(addr) {
            tracing::debug!(client = %self.key.client, upstream = %addr, refusals, "UDP upstream refuses; moving on");
            self.end(Ending::Refused);
        }
    }

    /// Sends client datagrams to the upstream, each behind the PROXY header if there is
    /// one (the bytes counted are the client's).
    fn send_up(&self, up: &UdpSocket, datagrams: &[&[u8]], shared: &Shared) -> Sent {
        let Some(header) = &self.header else {
            return send_all(up, datagrams, None, None, Direction::Up, shared);
        };
        let framed: Vec<Vec<u8>> = datagrams.iter().map(|d| [header, *d].concat()).collect();
        let framed: Vec<&[u8]> = framed.iter().map(Vec::as_slice).collect();
        let mut sent = send_all(up, &framed, None, None, Direction::Up, shared);
        let overhead = (header.len() as u64) * sent.datagrams;
        sent.bytes -= overhead;
        Stats::sub(&shared.stats.bytes_to_upstream, overhead);
        sent
    }

    /// Relays datagrams from the client: straight to the upstream socket once the session
    /// task has handed it over (see [`flush_pending`](Self::flush_pending)), else queued
    /// (up to [`MAX_PENDING`], within the forward's
    /// [`QUEUE_BUDGET`](super::budgets::QUEUE_BUDGET)) for that task, behind what is
    /// queued already.
    pub(super) fn forward(&self, datagrams: &[&[u8]], shared: &Shared) {
        let stats = &shared.stats;
        self.touch();
        let send = |(up, addr): &(Arc<UdpSocket>, SocketAddr)| {
            let sent = self.send_up(up, datagrams, shared);
            self.sent(sent, Direction::Up, *addr, shared);
        };
        if let Some(up) = self.upstream.get() {
            return send(up);
        }
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        // Set under this lock, and only once the queue is empty: nothing queued is left
        // for these to overtake.
        if let Some(up) = self.upstream.get() {
            drop(pending);
            return send(up);
        }
        for d in datagrams {
            let room = !pending.closed && pending.datagrams.len() < MAX_PENDING;
            if room && shared.budgets.queue(d.len()) {
                pending.datagrams.push(d.to_vec());
                pending.bytes += d.len();
            } else {
                Stats::inc(&stats.udp_dropped);
            }
        }
    }

    /// Sends what queued while the session connected, then hands the upstream socket to
    /// the listener, which sends straight to it from then on. The queue is emptied in
    /// rounds while the listener may add to it, and the socket is handed over under the
    /// queue's lock once a round finds it empty: a datagram never overtakes one queued
    /// before it. Returns `false` when the session ended first (its queue is dropped).
    async fn flush_pending(&self, up: &Arc<UdpSocket>, addr: SocketAddr, shared: &Shared) -> bool {
        loop {
            if self.is_done() {
                let lost = self.discard_pending(shared);
                Stats::add(&shared.stats.udp_dropped, lost as u64);
                return false;
            }
            let queued = {
                let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
                if pending.datagrams.is_empty() {
                    let _ = self.upstream.set((up.clone(), addr));
                    return true;
                }
                shared.budgets.unqueue(std::mem::take(&mut pending.bytes));
                std::mem::take(&mut pending.datagrams)
            };
            let queued: Vec<&[u8]> = queued.iter().map(Vec::as_slice).collect();
            let sent = self.send_up(up, &queued, shared);
            self.sent(sent, Direction::Up, addr, shared);
            // The listener may keep the queue busy: let other tasks run between rounds.
            tokio::task::coop::consume_budget().await;
        }
    }

    /// Empties the queue for good (the session will not connect): later datagrams are
    /// dropped, not queued. Returns how many were queued.
    fn discard_pending(&self, shared: &Shared) -> usize {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.closed = true;
        shared.budgets.unqueue(std::mem::take(&mut pending.bytes));
        std::mem::take(&mut pending.datagrams).len()
    }
}

/// Why a session was ended from outside its task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum Ending {
    /// The session table was full and it was the least recently used.
    Evicted = 1,
    /// A reload removed its listen address.
    Removed = 2,
    /// Its upstream refused repeatedly and a new session would go elsewhere.
    Refused = 3,
}

impl Ending {
    fn from_u8(n: u8) -> Option<Ending> {
        match n {
            1 => Some(Ending::Evicted),
            2 => Some(Ending::Removed),
            3 => Some(Ending::Refused),
            _ => None,
        }
    }

    /// How the access log names it.
    fn label(self) -> &'static str {
        match self {
            Ending::Evicted => "evicted",
            Ending::Removed => "listener removed",
            Ending::Refused => "upstream refused",
        }
    }
}

/// Client datagrams waiting for a session's upstream socket.
#[derive(Debug, Default)]
struct Pending {
    datagrams: Vec<Vec<u8>>,
    /// Their bytes, held against the forward's
    /// [`QUEUE_BUDGET`](super::budgets::QUEUE_BUDGET).
    bytes: usize,
    /// The session will not connect: nothing more is queued.
    closed: bool,
}

/// A session's life: connect its upstream socket, flush what queued meanwhile, relay
/// replies until idle, evicted or closed; then tell the listener, and leave the upstream
/// socket to [`linger`]. `permit` holds the session's place under the limits until then.
pub(super) async fn run(
    session: Arc<Session>,
    listener: Arc<UdpSocket>,
    shared: Arc<Shared>,
    ended: UnboundedSender<(SessionKey, u64)>,
    permit: crate::limit::Permit,
) {
    let stats = &shared.stats;
    let started = Instant::now();
    let connected = tokio::select! {
        () = session.done.cancelled() => None,
        r = connect(&shared, session.key.client.ip()) => Some(r),
    };
    let mut used = None;
    match connected {
        Some(Ok((up, upstream_addr))) => {
            let _counted = shared.balancer.open(upstream_addr);
            let up = Arc::new(up);
            used = Some(up.clone());
            session.flush_pending(&up, upstream_addr, &shared).await;
            tracing::debug!(client = %session.key.client, upstream = %upstream_addr, "UDP session started");
            let mut why = relay_replies(&session, &up, upstream_addr, &listener, &shared).await;
            if why == "ended" {
                why = session.ending().map_or("shutdown", Ending::label);
            }
            tracing::info!(
                target: "proxy_core::access",
                protocol = "udp",
                client = %session.key.client,
                upstream = %upstream_addr,
                datagrams_up = session.up.datagrams.load(Relaxed),
                datagrams_down = session.down.datagrams.load(Relaxed),
                bytes_up = session.up.bytes.load(Relaxed),
                bytes_down = session.down.bytes.load(Relaxed),
                duration_ms = started.elapsed().as_millis() as u64,
                close = why,
                "session"
            );
        }
        Some(Err(e)) => {
            let lost = session.discard_pending(&shared);
            Stats::add(&stats.udp_dropped, lost as u64);
            Stats::inc(&stats.upstream_unavailable);
            tracing::warn!(
                client = %session.key.client,
                target = %shared.config.target,
                error = %e,
                cause = ?std::error::Error::source(&e).map(ToString::to_string),
                "no upstream reachable; dropping the session's datagrams"
            );
        }
        None => {
            let lost = session.discard_pending(&shared);
            Stats::add(&stats.udp_dropped, lost as u64);
        }
    }
    session.done.cancel();
    stats.udp_sessions_open.fetch_sub(1, Relaxed);
    drop(permit);
    let _ = ended.send((session.key, session.id));
    if let Some(up) = used {
        let (budgets, stats) = (shared.budgets.clone(), shared.stats.clone());
        let accepting = shared.accepting.clone();
        shared.sessions.spawn(linger(up, budgets, stats, accepting));
    }
}

/// Keeps an ended session's upstream socket open for [`LINGER`], reading and discarding
/// (as dropped) what still arrives, so its port cannot go to a new session while a late
/// reply to this one can still come: a reply never reaches a client it was not sent for.
/// Ends early once the forwarder stops accepting (no new session can take the port then),
/// and does not linger at all beyond
/// [`MAX_LINGERING`](super::budgets::MAX_LINGERING) sockets per forward.
async fn linger(
    up: Arc<UdpSocket>,
    budgets: Arc<Budgets>,
    stats: Arc<Stats>,
    accepting: CancellationToken,
) {
    if !budgets.linger() {
        tracing::debug!("too many ended UDP sessions lingering; closing an upstream socket now");
        return;
    }
    let until = Instant::now() + LINGER;
    let mut sink = [0u8; 1];
    loop {
        tokio::select! {
            biased;
            () = accepting.cancelled() => break,
            () = tokio::time::sleep_until(until) => break,
            ready = up.readable() => {
                if ready.is_err() || !discard_waiting(&up, &mut sink, &stats) {
                    break;
                }
                tokio::task::coop::consume_budget().await;
            }
        }
    }
    budgets.unlinger();
}

/// Reads and drops up to 64 datagrams waiting on `up` (each cut to `sink`), counting them
/// as dropped; `false` when the socket failed.
fn discard_waiting(up: &UdpSocket, sink: &mut [u8], stats: &Stats) -> bool {
    for _ in 0..64 {
        match up.try_recv(sink) {
            Ok(_) => Stats::inc(&stats.udp_dropped),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
            Err(e) => {
                tracing::debug!(error = %e, "lingering UDP socket failed");
                return false;
            }
        }
    }
    true
}

/// Resolves the target (within the connect budget) and connects a UDP socket to the next
/// address in round-robin order.
async fn connect(shared: &Shared, client: IpAddr) -> Result<(UdpSocket, SocketAddr), Error> {
    let deadline = after(Instant::now(), shared.config.common.timeouts.connect_total);
    let addrs = shared.cache.addrs_by(deadline).await?;
    let Some(order) = shared.balancer.order(&addrs, Some(client)) else {
        Stats::inc(&shared.stats.all_ejected);
        return Err(Error::new(ErrorKind::Unavailable, Side::Upstream));
    };
    let mut last_error = None;
    // A UDP connect only sets the peer; it fails for local reasons (no route, no address
    // of that family), so going on to the next address helps in exactly those cases. The
    // upstream's health shows later: in its replies, or ICMP errors.
    for addr in order {
        match upstream_socket(addr, &shared.config) {
            Ok(socket) => {
                shared.stats.endpoint(addr, true);
                shared.balancer.stick(client, addr);
                return Ok((socket, addr));
            }
            Err(e) => {
                shared.stats.endpoint(addr, false);
                last_error = Some(Error::connect(e).with_context(addr.to_string()));
            }
        }
    }
    shared.cache.nudge();
    Err(last_error.unwrap_or_else(|| Error::new(ErrorKind::Resolve, Side::Upstream)))
}

fn upstream_socket(addr: SocketAddr, config: &Config) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_nonblocking(true)?;
    config.size_buffers(&socket);
    socket.connect(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

/// Relays the upstream's replies to the client, from the address the client sent to,
/// until the session is idle, ended, or closed. Returns why it stopped.
async fn relay_replies(
    session: &Session,
    up: &UdpSocket,
    upstream_addr: SocketAddr,
    listener: &UdpSocket,
    shared: &Shared,
) -> &'static str {
    let idle = shared.config.common.timeouts.udp_session_idle;
    let batch_size = shared.config.batch_size;
    let limit = |draining| match (idle, draining) {
        (Some(d), false) => Some(d),
        (Some(d), true) => Some(d.min(DRAIN_IDLE)),
        (None, true) => Some(DRAIN_IDLE),
        (None, false) => None,
    };
    let mut draining = false;
    // Made once, not per datagram: traffic only moves the session's timestamp, and the
    // timer looks at it when it fires (and goes on if the session was busy meanwhile).
    let done = session.done.cancelled();
    let accepting = shared.accepting.cancelled();
    let timer = tokio::time::sleep_until(after(
        session.last_active(),
        limit(false).unwrap_or_default(),
    ));
    tokio::pin!(done, accepting, timer);
    loop {
        tokio::select! {
            // An ended session relays nothing more: what still comes is its socket's to
            // discard while it lingers.
            biased;
            () = &mut done => return "ended",
            () = &mut accepting, if !draining => {
                draining = true;
                if let Some(d) = limit(true) {
                    timer.as_mut().reset(after(session.last_active(), d));
                }
            }
            () = &mut timer, if limit(draining).is_some() => {
                let due = after(session.last_active(), limit(draining).unwrap_or_default());
                if due <= Instant::now() {
                    return "idle";
                }
                timer.as_mut().reset(due);
            }
            ready = up.readable() => {
                if let Err(e) = ready {
                    tracing::debug!(error = %e, "UDP session socket failed");
                    return "error";
                }
                let mut batch = shared
                    .batches
                    .take(|| Ok::<_, Infallible>(RecvBatch::new(batch_size)))
                    .unwrap_or_else(|never| match never {});
                relay_burst(session, up, upstream_addr, listener, &mut batch, shared);
                shared.batches.put(batch);
                tokio::task::coop::consume_budget().await;
            }
        }
    }
}

/// Moves every reply waiting on `up` to the client.
fn relay_burst(
    session: &Session,
    up: &UdpSocket,
    upstream_addr: SocketAddr,
    listener: &UdpSocket,
    batch: &mut RecvBatch,
    shared: &Shared,
) {
    let stats = &shared.stats;
    // Bounded, so one busy session cannot hold the worker thread.
    for _ in 0..64 {
        let (n, drained) = match io_udp::recv(up, batch, shared.config.batch_size) {
            Ok(r) => (r.count, r.drained),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                Stats::inc(&stats.udp_upstream_refused);
                let refused = Sent {
                    refused: true,
                    ..Sent::default()
                };
                session.sent(refused, Direction::Up, upstream_addr, shared);
                continue;
            }
            Err(e) => {
                tracing::debug!(error = %e, "UDP receive from upstream failed");
                return;
            }
        };
        session.touch();
        let mut datagrams: [&[u8]; MAX_BATCH] = [&[]; MAX_BATCH];
        let mut count = 0;
        for i in 0..n {
            let (data, meta) = batch.get(i);
            if meta.truncated {
                Stats::inc(&stats.udp_truncated);
            } else {
                datagrams[count] = data;
                count += 1;
            }
        }
        let sent = send_all(
            listener,
            &datagrams[..count],
            Some(session.key.client),
            session.key.local_ip,
            Direction::Down,
            shared,
        );
        session.sent(sent, Direction::Down, upstream_addr, shared);
        if drained {
            return;
        }
    }
}
