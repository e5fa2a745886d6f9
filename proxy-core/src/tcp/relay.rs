//! Relaying one connection: two directions, one idle timer, half-close, resets.

use std::io;
use std::os::fd::AsFd;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::task::coop::consume_budget;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::socket::{peer_error, reset, shutdown_write};
use super::splice::Spliced;
use crate::pool::Pool;
use crate::stats::Stats;
use crate::sys::{Pipe, SPLICE};
use crate::timeout::after;
use crate::{Side, TimeoutKind, Timeouts};

/// How relayed bytes move between the two sockets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum RelayMode {
    /// `splice(2)` through pooled pipes on Linux (no copy to user space), falling back to
    /// copying where the kernel cannot splice; copying elsewhere. The default.
    #[default]
    Auto,
    /// Always copy through pooled user-space buffers.
    Copy,
    /// As `Auto`, and on Linux a connection that keeps trading small messages (16 in
    /// user space) moves into the kernel: both sockets join a BPF socket map whose
    /// verdict program hands each received segment to the peer's send path, so the
    /// bytes no longer wake user space. Short connections and bulk transfers stay in
    /// user space. Needs CAP_BPF and CAP_NET_ADMIN; not with TLS.
    Sockmap,
}

/// Per-forwarder relay resources: pools of pipes and buffers, shared by its connections.
#[derive(Debug)]
pub(crate) struct RelayShared {
    pub(crate) splice: bool,
    pub(crate) pipe_size: usize,
    pub(crate) buffer_size: usize,
    /// Bytes a burst copies before it hands over to splice.
    pub(crate) splice_after: usize,
    pub(crate) pipes: Pool<Pipe>,
    pub(crate) buffers: Pool<Box<[u8]>>,
    pub(crate) stats: Arc<Stats>,
    /// The socket map chatty connections join with [`RelayMode::Sockmap`].
    #[cfg(target_os = "linux")]
    pub(crate) sockmap: Option<Arc<crate::sys::sockmap::SockMap>>,
}

/// Idle pipes and buffers kept per forwarder for reuse.
const MAX_IDLE_POOLED: usize = 128;

/// A burst is copied until one read fills this many bytes; only then is the rest spliced.
/// Splicing a small message costs three system calls (into the pipe, out of it, and a
/// third to find the socket empty) where a copy costs two, so request/response traffic
/// is copied and bulk transfers are spliced.
const SPLICE_AFTER: usize = 16 << 10;

impl RelayShared {
    pub(crate) fn new(
        mode: RelayMode,
        pipe_size: usize,
        buffer_size: usize,
        stats: Arc<Stats>,
    ) -> Self {
        RelayShared {
            splice: SPLICE && mode != RelayMode::Copy,
            pipe_size,
            buffer_size,
            splice_after: SPLICE_AFTER,
            pipes: Pool::new(MAX_IDLE_POOLED),
            buffers: Pool::new(MAX_IDLE_POOLED),
            stats,
            #[cfg(target_os = "linux")]
            sockmap: None,
        }
    }

    /// Whether chatty connections join a socket map.
    fn joins(&self) -> bool {
        #[cfg(target_os = "linux")]
        return self.sockmap.is_some();
        #[cfg(not(target_os = "linux"))]
        return false;
    }
}

/// Small messages a connection relays in user space before it joins the socket map of
/// [`RelayMode::Sockmap`]: short connections (one request, one reply) would pay more to
/// join and leave than the kernel saves them, and bulk transfers go faster spliced.
const JOIN_AFTER: u32 = 16;

/// Marks a connection that will not join the socket map: it moved bulk, or a direction
/// ended, or the map refused it.
const NEVER_JOIN: u32 = u32::MAX;

/// When the connection last moved a byte, and whether a direction holds unsent bytes.
#[derive(Debug)]
pub(crate) struct Activity {
    base: Instant,
    last_ms: AtomicU64,
    holding: AtomicU32,
    /// Small messages relayed in user space, or [`NEVER_JOIN`].
    messages: AtomicU32,
}

impl Activity {
    pub(crate) fn new() -> Self {
        Activity {
            base: Instant::now(),
            last_ms: AtomicU64::new(0),
            holding: AtomicU32::new(0),
            messages: AtomicU32::new(0),
        }
    }

    /// A burst moved a message smaller than a buffer.
    fn message(&self) {
        let _ = self
            .messages
            .fetch_update(Relaxed, Relaxed, |n| (n < NEVER_JOIN - 1).then(|| n + 1));
    }

    /// This connection stays in user space.
    pub(crate) fn never_join(&self) {
        self.messages.store(NEVER_JOIN, Relaxed);
    }

    /// Whether the connection has been chatty long enough to join the socket map.
    fn chatty(&self) -> bool {
        (JOIN_AFTER..NEVER_JOIN).contains(&self.messages.load(Relaxed))
    }

    pub(super) fn touch(&self) {
        let ms = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Relaxed);
    }

    /// Notes activity seen at `at` (no earlier than what was noted before).
    pub(super) fn saw(&self, at: Instant) {
        let ms = u64::try_from(at.saturating_duration_since(self.base).as_millis());
        self.last_ms.fetch_max(ms.unwrap_or(u64::MAX), Relaxed);
    }

    pub(super) fn last(&self) -> Instant {
        after(self.base, Duration::from_millis(self.last_ms.load(Relaxed)))
    }

    /// How many directions hold bytes they could not write yet.
    pub(super) fn holding(&self) -> u32 {
        self.holding.load(Relaxed)
    }

    /// Marks that a direction holds bytes it could not write yet (a slow receiver).
    pub(super) fn hold(&self, holding: bool) {
        if holding {
            self.holding.fetch_add(1, Relaxed);
        } else {
            self.holding.fetch_sub(1, Relaxed);
        }
    }
}

/// One direction of a connection.
pub(super) struct Half<'a> {
    pub(super) from: &'a TcpStream,
    pub(super) to: &'a TcpStream,
    pub(super) from_side: Side,
    pub(super) to_side: Side,
    pub(super) bytes: &'a AtomicU64,
    /// This connection's bytes in this direction.
    pub(super) conn_bytes: &'a AtomicU64,
    pub(super) shared: &'a RelayShared,
    pub(super) activity: &'a Activity,
    /// Whether the direction waits for bytes, holding none: it may stop there.
    waiting: AtomicBool,
}

/// How a direction stopped without an error.
#[derive(Debug)]
enum Stop {
    /// The source's FIN was forwarded.
    Eof,
    /// The connection is to join the socket map; the direction holds no bytes.
    Join,
}

/// A direction failed; `side` is the peer whose socket gave the error.
#[derive(Debug)]
pub(crate) struct HalfError {
    pub(crate) side: Side,
    pub(crate) error: io::Error,
}

/// How a burst of transfers ended.
pub(super) enum Burst {
    /// The source has nothing more to read right now.
    Drained,
    /// The source sent its FIN and everything before it was written.
    Eof,
    /// A read filled the buffer: a bulk transfer, for splice to go on with.
    More,
}

impl Half<'_> {
    pub(super) fn read_error(&self, error: io::Error) -> HalfError {
        HalfError {
            side: self.from_side,
            error,
        }
    }

    pub(super) fn write_error(&self, error: io::Error) -> HalfError {
        HalfError {
            side: self.to_side,
            error,
        }
    }

    fn moved(&self, n: usize, spliced: bool) {
        let n = n as u64;
        Stats::add(self.bytes, n);
        Stats::add(self.conn_bytes, n);
        if spliced {
            Stats::add(&self.shared.stats.bytes_spliced, n);
        }
        self.activity.touch();
    }

    /// Writes `n` bytes to the destination with `write(left)`, which returns how many of
    /// the `left` bytes it wrote; waits while the destination is not writable.
    pub(super) async fn write_with(
        &self,
        mut n: usize,
        spliced: bool,
        mut write: impl FnMut(usize) -> io::Result<usize>,
    ) -> Result<(), HalfError> {
        let mut holding = false;
        let mut source_failed = None;
        let result = loop {
            if n == 0 {
                break Ok(());
            }
            match write(n) {
                Ok(m) => {
                    self.moved(m, spliced);
                    n -= m;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if !holding {
                        holding = true;
                        self.activity.hold(true);
                    }
                    if let Err(e) = self.wait_writable(&mut source_failed).await {
                        break Err(e);
                    }
                    // `writable()` takes no coop budget: should a write keep saying
                    // `WouldBlock` while the readiness stays set, yield all the same.
                    consume_budget().await;
                }
                Err(e) => break Err(self.write_error(e)),
            }
        };
        if holding {
            self.activity.hold(false);
        }
        result
    }

    /// Waits until the destination takes bytes again, watching the source meanwhile: this
    /// direction reads it only between writes, so a reset of the source's peer would go
    /// unseen for as long as the destination's peer does not read. Once the source has an
    /// error pending (noted in `failed_at`), the wait is bounded: when no byte has moved
    /// for [`FLUSH_STALL`] since the later of the failure and the last byte, the direction
    /// gives up with the source's error. The error is not taken before then, so reading on
    /// still returns the bytes the failed peer sent first, then its error.
    async fn wait_writable(&self, failed_at: &mut Option<Instant>) -> Result<(), HalfError> {
        loop {
            let Some(at) = *failed_at else {
                tokio::select! {
                    r = self.to.writable() => return r.map_err(|e| self.write_error(e)),
                    // An ERROR readiness on a TCP socket is its pending error (no error
                    // queue is used here): the peer reset, or the connection timed out.
                    r = self.from.ready(Interest::ERROR) => match r {
                        Ok(_) => *failed_at = Some(Instant::now()),
                        Err(e) => return Err(self.read_error(e)),
                    },
                }
                continue;
            };
            let end = after(at.max(self.activity.last()), FLUSH_STALL);
            if end <= Instant::now() {
                let error = match self.from.take_error() {
                    Ok(Some(e)) | Err(e) => e,
                    Ok(None) => io::ErrorKind::ConnectionReset.into(),
                };
                tracing::debug!(error = %error, "peer failed and the other stalled; resetting");
                return Err(self.read_error(error));
            }
            tokio::select! {
                r = self.to.writable() => return r.map_err(|e| self.write_error(e)),
                () = tokio::time::sleep_until(end) => {}
            }
        }
    }

    /// Relays until the source's FIN has been forwarded in order, or an error. Each burst
    /// of bytes starts as a copy; one that fills a buffer goes on with splice, where the
    /// kernel can.
    async fn run(&self) -> Result<Stop, HalfError> {
        let mut splice = self.shared.splice;
        loop {
            if self.shared.joins() && self.activity.chatty() {
                return Ok(Stop::Join);
            }
            // `poll_read_ready` keeps the waker in the socket's own slot (this task is
            // the socket's only reader), so waiting takes no room in the task.
            self.waiting.store(true, Relaxed);
            let ready = std::future::poll_fn(|cx| self.from.poll_read_ready(cx)).await;
            self.waiting.store(false, Relaxed);
            ready.map_err(|e| self.read_error(e))?;
            // Bursts are boxed: an idle connection's task then holds only what waiting
            // needs, not the larger state of a transfer in progress.
            match Box::pin(self.copy_burst(splice)).await? {
                Burst::Eof => return Ok(Stop::Eof),
                Burst::Drained => self.activity.message(),
                Burst::More => {
                    // Bulk goes faster spliced than through the socket map.
                    self.activity.never_join();
                    match Box::pin(self.splice_burst()).await? {
                        Spliced::Done(Burst::Eof) => return Ok(Stop::Eof),
                        Spliced::Done(_) => {}
                        // Bytes may be waiting still: the readiness was not cleared, so
                        // the next burst copies them at once.
                        Spliced::Unsupported => {
                            Stats::inc(&self.shared.stats.splice_fallbacks);
                            splice = false;
                        }
                    }
                }
            }
        }
    }
}

/// The timers of one relayed connection: its lifetime, the idle timeout, and once one
/// direction has ended, the half-close timeout, which counts how long the other has been
/// idle since. Traffic only touches `activity`'s timestamp; the deadlines are worked out
/// when the one timer fires or a direction ends.
pub(super) struct Timers<'a> {
    timeouts: &'a Timeouts,
    activity: &'a Activity,
    pub(super) lifetime_end: Option<Instant>,
    /// When the first direction ended.
    half_closed_at: Option<Instant>,
}

impl<'a> Timers<'a> {
    pub(super) fn new(timeouts: &'a Timeouts, activity: &'a Activity) -> Self {
        Timers {
            timeouts,
            activity,
            lifetime_end: timeouts.max_lifetime.map(|d| after(activity.base, d)),
            half_closed_at: None,
        }
    }

    /// Whether a direction has ended.
    pub(super) fn is_half_closed(&self) -> bool {
        self.half_closed_at.is_some()
    }

    /// A direction has ended: the half-close timer starts (once).
    pub(super) fn half_closed(&mut self) {
        self.half_closed_at.get_or_insert_with(Instant::now);
    }

    fn idle_end(&self) -> Option<Instant> {
        (self.timeouts.idle).map(|d| after(self.activity.last(), d))
    }

    fn half_close_end(&self) -> Option<Instant> {
        let d = self.timeouts.half_close?;
        Some(after(self.half_closed_at?.max(self.activity.last()), d))
    }

    /// The next deadline, if any timer is set.
    pub(super) fn next(&self) -> Option<Instant> {
        [self.idle_end(), self.half_close_end(), self.lifetime_end]
            .into_iter()
            .flatten()
            .min()
    }

    /// Which timer has run out at `now`, if one has.
    pub(super) fn fired(&self, now: Instant) -> Option<TimeoutKind> {
        let past = |t: Option<Instant>| t.is_some_and(|t| t <= now);
        if past(self.lifetime_end) {
            Some(TimeoutKind::MaxLifetime)
        } else if past(self.half_close_end()) {
            Some(TimeoutKind::HalfClose)
        } else if past(self.idle_end()) {
            Some(TimeoutKind::Idle)
        } else {
            None
        }
    }
}

/// How a relayed connection ended.
#[derive(Debug)]
pub(crate) enum Close {
    /// Both directions ended with a FIN.
    Done,
    /// A timer fired; the connection was closed (reset if bytes were still in flight).
    Timeout(TimeoutKind),
    /// A peer reset the connection or failed; the other peer was reset too, once it had
    /// taken what the failed peer sent before (or made no progress for 5 s).
    Reset(HalfError),
    /// The forwarder shut down past its grace period; both peers were reset.
    Shutdown,
    /// Not an end: both directions stopped between messages, holding no bytes, for the
    /// connection to join the socket map ([`RelayMode::Sockmap`]).
    Join,
}

/// Bytes one connection relayed, each way.
#[derive(Debug, Default)]
pub(crate) struct ConnBytes {
    pub(crate) up: AtomicU64,
    pub(crate) down: AtomicU64,
}

impl Close {
    /// A short reason for the access log.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            Close::Done => "closed",
            Close::Timeout(TimeoutKind::Idle) => "idle timeout",
            Close::Timeout(TimeoutKind::HalfClose) => "half-close timeout",
            Close::Timeout(TimeoutKind::MaxLifetime) => "max lifetime",
            Close::Timeout(_) => "timeout",
            Close::Reset(HalfError {
                side: Side::Downstream,
                ..
            }) => "client reset",
            Close::Reset(HalfError {
                side: Side::Upstream,
                ..
            }) => "upstream reset",
            Close::Reset(_) => "reset",
            Close::Shutdown => "shutdown",
            Close::Join => "joined the socket map",
        }
    }
}

/// Relays between `client` and `upstream` until both directions end, a timer fires, a peer
/// fails, or `closing` is cancelled. Each FIN is forwarded as a FIN and each failure as a
/// RST, behind the bytes the failed peer sent before it.
pub(crate) async fn relay(
    client: &TcpStream,
    upstream: &TcpStream,
    shared: &RelayShared,
    timeouts: &Timeouts,
    closing: &CancellationToken,
    conn: &ConnBytes,
    activity: &Activity,
) -> Close {
    let half = |from, to, from_side, to_side, bytes, conn_bytes| Half {
        from,
        to,
        from_side,
        to_side,
        bytes,
        conn_bytes,
        shared,
        activity,
        waiting: AtomicBool::new(false),
    };
    let stats = &shared.stats;
    let up = half(
        client,
        upstream,
        Side::Downstream,
        Side::Upstream,
        &stats.bytes_to_upstream,
        &conn.up,
    );
    let down = half(
        upstream,
        client,
        Side::Upstream,
        Side::Downstream,
        &stats.bytes_to_downstream,
        &conn.down,
    );
    let (up_half, down_half) = (up, down);
    let up = up_half.run();
    let down = down_half.run();
    tokio::pin!(up, down);

    let mut timers = Timers::new(timeouts, activity);
    let lifetime_end = timers.lifetime_end;
    let mut deadline = timers.next();
    let timer = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now));
    tokio::pin!(timer);
    let (mut up_done, mut down_done) = (false, false);
    // A direction that stopped to join the socket map.
    let (mut up_parked, mut down_parked) = (false, false);
    let mut watch = Watch::default();

    let failed = loop {
        tokio::select! {
            r = &mut up, if !up_done && !up_parked => match r {
                Ok(Stop::Eof) => {
                    up_done = true;
                    shutdown_write(upstream);
                }
                Ok(Stop::Join) => up_parked = true,
                Err(e) => {
                    up_done = true;
                    break e;
                }
            },
            r = &mut down, if !down_done && !down_parked => match r {
                Ok(Stop::Eof) => {
                    down_done = true;
                    shutdown_write(client);
                }
                Ok(Stop::Join) => down_parked = true,
                Err(e) => {
                    down_done = true;
                    break e;
                }
            },
            // A half-closed peer is no longer read, so watch it for a reset instead.
            error = &mut watch, if watch.is_set() => break error,
            () = &mut timer, if deadline.is_some() => {
                if let Some(kind) = timers.fired(Instant::now()) {
                    // Bytes still in flight (or a direction still open past its peer's FIN)
                    // would be cut silently by a FIN: reset instead, so both peers know.
                    let clean = kind == TimeoutKind::Idle && activity.holding.load(Relaxed) == 0;
                    if !clean {
                        reset(client, upstream);
                    }
                    return Close::Timeout(kind);
                }
            }
            () = closing.cancelled() => {
                reset(client, upstream);
                return Close::Shutdown;
            }
        }
        if up_done && down_done {
            return Close::Done;
        }
        if up_parked || down_parked {
            // Both stopped, or one stopped and the other waits holding nothing: join.
            let up_idle = up_parked || up_half.waiting.load(Relaxed);
            let down_idle = down_parked || down_half.waiting.load(Relaxed);
            if !up_done && !down_done && up_idle && down_idle {
                return Close::Join;
            }
            if up_done || down_done {
                // A direction ended first: the connection stays here.
                activity.never_join();
                if up_parked {
                    up.set(up_half.run());
                    up_parked = false;
                }
                if down_parked {
                    down.set(down_half.run());
                    down_parked = false;
                }
            }
        }
        if !timers.is_half_closed() && (up_done || down_done) {
            timers.half_closed();
            let (stream, side) = if up_done {
                (client, Side::Downstream)
            } else {
                (upstream, Side::Upstream)
            };
            watch.set(stream, side);
        }
        deadline = timers.next();
        if let Some(t) = deadline {
            timer.as_mut().reset(t);
        }
    };

    // A peer failed. What it sent before, and the proxy acknowledged, is still owed to
    // the other peer, as a direct connection would deliver it before the reset: the
    // direction from the failed peer goes on until it meets the error (or its FIN), and
    // the other peer's socket is given time to deliver its send queue. Then both reset.
    // A direction stopped to join goes on instead.
    activity.never_join();
    if up_parked {
        up.set(up_half.run());
    }
    if down_parked {
        down.set(down_half.run());
    }
    let (rest, rest_done, owed_to) = match failed.side {
        Side::Downstream => (up.as_mut(), up_done, upstream),
        _ => (down.as_mut(), down_done, client),
    };
    let rest = (!rest_done).then_some(rest);
    if let Some(end) = lifetime_end {
        timer.as_mut().reset(end);
    }
    // Boxed: only a failing connection needs room for it.
    let owed = Box::pin(deliver_owed(rest, owed_to, activity));
    tokio::select! {
        () = owed => {}
        () = closing.cancelled() => {}
        () = &mut timer, if lifetime_end.is_some() => {}
    }
    reset(client, upstream);
    Close::Reset(failed)
}

/// Lets `rest`, the direction from the failed peer, run on to its end (unless nothing moves
/// for [`FLUSH_STALL`]), then waits until `owed_to` has delivered its send queue.
async fn deliver_owed<F: Future>(
    rest: Option<Pin<&mut F>>,
    owed_to: &TcpStream,
    activity: &Activity,
) {
    if let Some(rest) = rest {
        tokio::select! {
            _ = rest => {}
            () = stalled(activity) => return,
        }
    }
    delivered(owed_to, activity).await;
}

/// How long delivering a failed peer's last bytes to the other peer may go without
/// progress before the other peer is reset anyway.
pub(super) const FLUSH_STALL: Duration = Duration::from_secs(5);

/// Resolves once no byte has moved for [`FLUSH_STALL`].
async fn stalled(activity: &Activity) {
    loop {
        let end = after(activity.last(), FLUSH_STALL);
        if end <= Instant::now() {
            return;
        }
        tokio::time::sleep_until(end).await;
    }
}

/// Resolves once the peer of `stream` has acknowledged every byte written to it, or when
/// nothing has moved for [`FLUSH_STALL`]: neither a byte written (`activity`) nor one
/// acknowledged. Polled: no readiness event says "acknowledged".
pub(super) async fn delivered(stream: &impl AsFd, activity: &Activity) {
    const FIRST_PAUSE: Duration = Duration::from_millis(1);
    let mut pause = FIRST_PAUSE;
    let mut last = None;
    let mut progress = activity.last();
    loop {
        let Ok(left) = crate::sys::unacknowledged(stream) else {
            return;
        };
        if left == 0 {
            return;
        }
        let now = Instant::now();
        if last.is_some_and(|last| left < last) {
            (progress, pause) = (now, FIRST_PAUSE);
        }
        last = Some(left);
        if now.saturating_duration_since(progress) >= FLUSH_STALL {
            tracing::debug!(
                unacknowledged = left,
                "peer stalled; resetting with bytes undelivered"
            );
            return;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// Watches a half-closed peer for a reset. Boxed, and only once a direction has ended:
/// an open connection's task keeps no room for it.
#[derive(Default)]
struct Watch<'a>(Option<Pin<Box<dyn Future<Output = HalfError> + Send + 'a>>>);

impl<'a> Watch<'a> {
    fn set(&mut self, stream: &'a TcpStream, side: Side) {
        self.0 = Some(Box::pin(async move {
            let error = peer_error(stream).await;
            HalfError { side, error }
        }));
    }

    fn is_set(&self) -> bool {
        self.0.is_some()
    }
}

impl Future for Watch<'_> {
    type Output = HalfError;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<HalfError> {
        match &mut self.0 {
            Some(f) => f.as_mut().poll(cx),
            None => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every connection's task holds the relay's future while the connection lives, idle or
    /// not; rarely needed state (a transfer in progress, the delivery before a reset) is
    /// boxed so that this stays small. A bound that fails when something big joins it.
    #[tokio::test]
    async fn the_relay_future_stays_small() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (b, _) = listener.accept().await.unwrap();
        let shared = RelayShared::new(RelayMode::Auto, 1 << 16, 1 << 16, Arc::default());
        let (timeouts, closing, conn) = (
            Timeouts::default(),
            CancellationToken::new(),
            ConnBytes::default(),
        );
        let activity = Activity::new();
        let relaying = relay(&a, &b, &shared, &timeouts, &closing, &conn, &activity);
        let size = std::mem::size_of_val(&relaying);
        assert!(size <= 768, "the relay future is {size} bytes");
    }
}
