//! The in-kernel relay (`relay = sockmap`): both sockets of a connection join the
//! forwarder's BPF socket map, whose verdict program hands each received segment to the
//! peer's send path inside the kernel. User space only watches for the ends: a FIN is
//! forwarded once every byte before it has been written to the peer (counted from
//! `TCP_INFO`), a reset once the failed peer's last bytes are delivered, and the timers
//! read the sockets' own idea of when data last arrived.
//!
//! Joining is ordered so no byte overtakes another: while the two sockets join, a huge
//! `SO_RCVLOWAT` keeps the kernel from running the verdict on what arrives; lowering it
//! again runs the verdict over everything queued, oldest first.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::relay::{
    Activity, Close, ConnBytes, FLUSH_STALL, HalfError, RelayShared, Timers, delivered,
};
use super::socket::{reset, shutdown_write};
use crate::stats::Stats;
use crate::sys::sockmap::{Cookie, SockMap, TcpCounts, hold, since_data, unread};
use crate::{Side, TimeoutKind, Timeouts};

/// One connection's two sockets in the map; dropping it takes them out.
pub(super) struct Joined<'a> {
    map: &'a SockMap,
    cookies: [Cookie; 2],
    /// Read from the client, written to the upstream, read from the upstream and written
    /// to the client in user space, before joining.
    before: [u64; 4],
}

impl Drop for Joined<'_> {
    fn drop(&mut self) {
        for cookie in self.cookies {
            self.map.forget(cookie);
        }
    }
}

/// One direction: what `from` receives goes to `to`.
struct Direction<'a> {
    from: &'a TcpStream,
    to: &'a TcpStream,
    from_side: Side,
    to_side: Side,
    /// Bytes `from` had received, and user space read, before joining (a PROXY header).
    read_before: u64,
    /// Bytes written into `to` before joining (the PROXY header the proxy sent).
    written_before: u64,
    /// Whether `from`'s FIN has arrived (it counts as a received byte until then: a
    /// socket closed since shows no state that says so).
    fin: AtomicBool,
    /// Bytes of this direction already added to the counters.
    counted: AtomicU64,
    bytes: &'a AtomicU64,
    in_kernel: &'a AtomicU64,
    conn_bytes: &'a AtomicU64,
}

impl Direction<'_> {
    /// Bytes relayed so far: those `from` received since joining.
    fn relayed(&self) -> io::Result<u64> {
        let counts = TcpCounts::of(self.from)?;
        let fin = u64::from(self.fin.load(Relaxed) && !counts.fin);
        Ok(counts.received.saturating_sub(self.read_before + fin))
    }

    /// Adds what moved since the last call to the counters.
    fn count(&self) {
        if let Ok(n) = self.relayed() {
            let before = self.counted.fetch_max(n, Relaxed);
            let moved = n.saturating_sub(before);
            Stats::add(self.bytes, moved);
            Stats::add(self.in_kernel, moved);
            Stats::add(self.conn_bytes, moved);
        }
    }

    /// Whether everything `from` received has been written into `to`.
    fn passed_on(&self) -> io::Result<bool> {
        let written = TcpCounts::of(self.to)?
            .written
            .saturating_sub(self.written_before);
        Ok(written >= self.relayed()?)
    }

    /// Waits for `from`'s FIN or error. `Ok` once the FIN has arrived.
    async fn ended(&self) -> Result<(), HalfError> {
        loop {
            let ready = self
                .from
                .ready(Interest::READABLE)
                .await
                .map_err(|error| self.failed(error))?;
            match self.from.take_error().map_err(|e| self.failed(e))? {
                // The verdict hands the peer's FIN on as an empty segment; sent after the
                // proxy's own FIN on this socket it fails with EPIPE, reported here. Peers
                // report with resets, never EPIPE.
                Some(e) if e.raw_os_error() == Some(libc::EPIPE) => {}
                Some(error) => return Err(self.failed(error)),
                None => {}
            }
            if ready.is_read_closed() {
                self.fin.store(true, Relaxed);
                return Ok(());
            }
            // Data-ready wakes with nothing for user space: the verdict took the bytes.
            // (A reset reads as readable and closed, and its error is taken above.)
            let _ = self.from.try_io(Interest::READABLE, || {
                Err::<(), _>(io::ErrorKind::WouldBlock.into())
            });
            // `ready()` takes no coop budget.
            tokio::task::coop::consume_budget().await;
        }
    }

    /// After `from`'s FIN: moves what the verdict left on `from` (bytes that arrived
    /// with the FIN while the pair was joining), then waits until every byte `from`
    /// received is in `to`'s send queue, so the FIN forwarded next follows them.
    async fn finish(&self, activity: &Activity) -> Result<(), HalfError> {
        let mut buf = [0u8; 16 << 10];
        loop {
            match self.from.try_read(&mut buf) {
                Ok(0) => break,
                Ok(n) => self.write_all(&buf[..n]).await?,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(self.failed(e)),
            }
        }
        let mut pause = Duration::from_micros(200);
        let mut since = Instant::now();
        let mut last = 0;
        loop {
            tracing::trace!(relayed = ?self.relayed().ok(), written = ?TcpCounts::of(self.to).ok(), before = self.written_before, "finishing");
            match self.passed_on() {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) => return Err(self.failed(e)),
            }
            let written = TcpCounts::of(self.to).map_or(0, |c| c.written);
            if written != last {
                (last, since) = (written, Instant::now());
                activity.touch();
            } else if since.elapsed() >= FLUSH_STALL {
                return Err(HalfError {
                    side: self.to_side,
                    error: io::Error::new(io::ErrorKind::TimedOut, "the peer stopped reading"),
                });
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }

    async fn write_all(&self, mut bytes: &[u8]) -> Result<(), HalfError> {
        while !bytes.is_empty() {
            self.to.writable().await.map_err(|e| self.write_failed(e))?;
            match self.to.try_write(bytes) {
                Ok(n) => bytes = &bytes[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(self.write_failed(e)),
            }
        }
        Ok(())
    }

    fn failed(&self, error: io::Error) -> HalfError {
        HalfError {
            side: self.from_side,
            error,
        }
    }

    fn write_failed(&self, error: io::Error) -> HalfError {
        HalfError {
            side: self.to_side,
            error,
        }
    }
}

/// Puts `client` and `upstream` in `map`. `Err` leaves both as they were, for the relay
/// in user space (the map is full, or the kernel refused).
pub(super) fn join<'a>(
    map: &'a SockMap,
    client: &TcpStream,
    upstream: &TcpStream,
) -> io::Result<Joined<'a>> {
    let cookies = [Cookie::of(client)?, Cookie::of(upstream)?];
    // Nothing reads either socket now and only the peers write, so what user space read
    // before (received less unread) holds still between the two calls unless a segment
    // arrives meanwhile: then look again.
    let read_before = |s: &TcpStream| -> io::Result<u64> {
        loop {
            let unread_then = unread(s)?;
            let received = TcpCounts::of(s)?.received;
            if unread(s)? == unread_then {
                return Ok(received.saturating_sub(unread_then));
            }
        }
    };
    let before = [
        read_before(client)?,
        TcpCounts::of(upstream)?.written,
        read_before(upstream)?,
        TcpCounts::of(client)?.written,
    ];
    hold(client, true)?;
    hold(upstream, true)?;
    let joined = Joined {
        map,
        cookies,
        before,
    };
    let result = map
        .redirect(cookies[0], upstream)
        .and_then(|()| map.redirect(cookies[1], client));
    if let Err(e) = result {
        // Out of the map before the mark goes down: what queued stays for user space.
        drop(joined);
        hold(client, false)?;
        hold(upstream, false)?;
        return Err(e);
    }
    // Lowering the mark runs the verdict on what queued meanwhile.
    hold(client, false)?;
    hold(upstream, false)?;
    Ok(joined)
}

/// Relays a joined pair until both directions end, a timer fires, a peer fails, or
/// `closing` is cancelled; the same ends, with the same resets, as the relay in user
/// space.
pub(super) async fn relay_joined(
    joined: Joined<'_>,
    (client, upstream): (&TcpStream, &TcpStream),
    shared: &RelayShared,
    timeouts: &Timeouts,
    closing: &CancellationToken,
    conn: &ConnBytes,
    activity: &Activity,
) -> Close {
    let before = joined.before;
    let stats = &shared.stats;
    let up = Direction {
        from: client,
        to: upstream,
        from_side: Side::Downstream,
        to_side: Side::Upstream,
        read_before: before[0],
        written_before: before[1],
        fin: AtomicBool::new(false),
        counted: AtomicU64::new(0),
        bytes: &stats.bytes_to_upstream,
        in_kernel: &stats.bytes_in_kernel,
        conn_bytes: &conn.up,
    };
    let down = Direction {
        from: upstream,
        to: client,
        from_side: Side::Upstream,
        to_side: Side::Downstream,
        read_before: before[2],
        written_before: before[3],
        fin: AtomicBool::new(false),
        counted: AtomicU64::new(0),
        bytes: &stats.bytes_to_downstream,
        in_kernel: &stats.bytes_in_kernel,
        conn_bytes: &conn.down,
    };
    let mut timers = Timers::new(timeouts, activity);
    let lifetime_end = timers.lifetime_end;
    let timer = tokio::time::sleep_until(Instant::now());
    tokio::pin!(timer);
    let mut deadline = timers.next();
    if let Some(t) = deadline {
        timer.as_mut().reset(t);
    }
    let (mut up_done, mut down_done) = (false, false);
    let close = loop {
        tokio::select! {
            r = up.ended(), if !up_done => {
                if let Err(e) = async { r?; up.finish(activity).await }.await {
                    break Err(e);
                }
                shutdown_write(upstream);
                up_done = true;
            }
            r = down.ended(), if !down_done => {
                if let Err(e) = async { r?; down.finish(activity).await }.await {
                    break Err(e);
                }
                shutdown_write(client);
                down_done = true;
            }
            () = &mut timer, if deadline.is_some() => {
                // The sockets know when data last arrived; the timers go by that.
                for d in [&up, &down] {
                    if let Ok(idle) = since_data(d.from)
                        && let Some(at) = Instant::now().checked_sub(idle)
                    {
                        activity.saw(at);
                    }
                    d.count();
                }
                if let Some(kind) = timers.fired(Instant::now()) {
                    let in_flight = [&up, &down].iter().any(|d| !d.passed_on().unwrap_or(false))
                        || crate::sys::unacknowledged(client).unwrap_or(0) > 0
                        || crate::sys::unacknowledged(upstream).unwrap_or(0) > 0;
                    if kind != TimeoutKind::Idle || in_flight || up_done != down_done {
                        reset(client, upstream);
                    }
                    break Ok(Close::Timeout(kind));
                }
            }
            () = closing.cancelled() => {
                reset(client, upstream);
                break Ok(Close::Shutdown);
            }
        }
        if up_done && down_done {
            break Ok(Close::Done);
        }
        if up_done || down_done {
            timers.half_closed();
        }
        deadline = timers.next();
        if let Some(t) = deadline {
            timer.as_mut().reset(t);
        }
    };
    up.count();
    down.count();
    let failed = match close {
        Ok(close) => {
            drop(joined);
            return close;
        }
        Err(failed) => failed,
    };
    // What the failed peer sent before its error is owed to the other, as a direct
    // connection would deliver it: wait until it is written and acknowledged (or stalls).
    let (from_failed, owed_to) = match failed.side {
        Side::Downstream => (&up, upstream),
        _ => (&down, client),
    };
    let owed = async {
        let deadline = Instant::now() + FLUSH_STALL;
        while !from_failed.passed_on().unwrap_or(true) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        delivered(owed_to, activity).await;
    };
    tokio::select! {
        () = owed => {}
        () = closing.cancelled() => {}
        () = async {
            match lifetime_end {
                Some(end) => tokio::time::sleep_until(end).await,
                None => std::future::pending().await,
            }
        } => {}
    }
    up.count();
    down.count();
    reset(client, upstream);
    drop(joined);
    Close::Reset(failed)
}
