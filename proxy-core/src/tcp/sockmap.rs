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

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsFd, BorrowedFd};

use tokio::io::unix::AsyncFd;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::relay::{
    Activity, Close, ConnBytes, FLUSH_STALL, HalfError, RelayShared, Timers, delivered,
};
use super::socket::{reset, shutdown_write};
use crate::stats::Stats;
use crate::sys::sockmap::{Cookie, Ends, SockMap, TcpCounts, hold, unread};
use crate::{Side, TimeoutKind, Timeouts};

/// How often a joined connection's bytes are added to the counters while it lasts.
const COUNT_EVERY: Duration = Duration::from_secs(5);

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
    /// Bytes `from` had received, and user space read, before joining.
    read_before: u64,
    /// Bytes written into `to` before joining.
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
    /// Bytes relayed so far: those `from` received since joining, by `from`'s `counts`.
    fn relayed_by(&self, counts: &TcpCounts) -> u64 {
        let fin = u64::from(self.fin.load(Relaxed) && !counts.fin);
        counts.received.saturating_sub(self.read_before + fin)
    }

    fn relayed(&self) -> io::Result<u64> {
        Ok(self.relayed_by(&TcpCounts::of(self.from)?))
    }

    /// Adds what moved since the last call to the counters, by `from`'s `counts`.
    fn count_by(&self, counts: &TcpCounts) {
        let n = self.relayed_by(counts);
        let before = self.counted.fetch_max(n, Relaxed);
        let moved = n.saturating_sub(before);
        Stats::add(self.bytes, moved);
        Stats::add(self.in_kernel, moved);
        Stats::add(self.conn_bytes, moved);
    }

    fn count(&self) {
        if let Ok(counts) = TcpCounts::of(self.from) {
            self.count_by(&counts);
        }
    }

    /// Whether everything `from` received has been written into `to`.
    fn passed_on(&self) -> io::Result<bool> {
        let written = TcpCounts::of(self.to)?
            .written
            .saturating_sub(self.written_before);
        Ok(written >= self.relayed()?)
    }

    /// `from` reported an end: `Ok(true)` for its FIN, `Ok(false)` for nothing after
    /// all, or its error.
    fn ended(&self, fin: bool) -> Result<bool, HalfError> {
        match self.from.take_error().map_err(|e| self.failed(e))? {
            // The verdict hands the peer's FIN on as an empty segment; sent after the
            // proxy's own FIN on this socket it fails with EPIPE, reported here. Peers
            // report with resets, never EPIPE.
            Some(e) if e.raw_os_error() == Some(libc::EPIPE) => {}
            Some(error) => return Err(self.failed(error)),
            None => {}
        }
        if fin {
            self.fin.store(true, Relaxed);
        }
        Ok(fin)
    }

    /// After `from`'s FIN: moves what the verdict left on `from` (bytes that arrived
    /// with the FIN while the pair was joining), then waits until every byte `from`
    /// received is in `to`'s send queue, so the FIN forwarded next follows them.
    async fn finish(&self, activity: &Activity) -> Result<(), HalfError> {
        let mut buf = [0u8; 16 << 10];
        loop {
            match (&mut &*self.from).read(&mut buf) {
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
            let relayed = self.relayed().map_err(|e| self.failed(e))?;
            let written = TcpCounts::of(self.to).map_err(|e| self.failed(e))?.written;
            if written.saturating_sub(self.written_before) >= relayed {
                return Ok(());
            }
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

    /// Writes leftovers to the non-blocking `to`; rare, so it polls when the socket is
    /// full.
    async fn write_all(&self, mut bytes: &[u8]) -> Result<(), HalfError> {
        while !bytes.is_empty() {
            match (&mut &*self.to).write(bytes) {
                Ok(n) => bytes = &bytes[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err(e) => {
                    return Err(HalfError {
                        side: self.to_side,
                        error: e,
                    });
                }
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
}

/// Waits until a socket of the pair reports an end: `(fin, error)` for each.
async fn next_end(ends: &AsyncFd<Ends>) -> io::Result<[(bool, bool); 2]> {
    loop {
        let mut ready = ends.readable().await?;
        if let Ok(result) = ready.try_io(|ends| ends.get_ref().take()) {
            return result;
        }
    }
}

/// Puts `client` and `upstream` in `map`. `Err` leaves both as they were, for the relay
/// in user space (the map is full, or the kernel refused).
pub(super) fn join<'a>(
    map: &'a SockMap,
    client: BorrowedFd<'_>,
    upstream: BorrowedFd<'_>,
) -> io::Result<Joined<'a>> {
    let cookies = [Cookie::of(client)?, Cookie::of(upstream)?];
    // Nothing reads either socket now and only the peers write, so what user space read
    // before (received less unread) holds still between the two calls unless a segment
    // arrives meanwhile: then look again.
    // (Only user space writes to either before joining, and it does not now.)
    let read_and_written = |s: BorrowedFd<'_>| -> io::Result<(u64, u64)> {
        loop {
            let unread_then = unread(s)?;
            let counts = TcpCounts::of(s)?;
            if unread(s)? == unread_then {
                return Ok((counts.received.saturating_sub(unread_then), counts.written));
            }
        }
    };
    let (client_read, client_written) = read_and_written(client)?;
    let (upstream_read, upstream_written) = read_and_written(upstream)?;
    let before = [client_read, upstream_written, upstream_read, client_written];
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
/// space. The sockets have left the runtime's reactor: the segments the kernel relays
/// wake nothing, and only their ends are watched (see [`Ends`]).
pub(super) async fn relay_joined(
    joined: Joined<'_>,
    (client, upstream): (&TcpStream, &TcpStream),
    shared: &RelayShared,
    timeouts: &Timeouts,
    closing: &CancellationToken,
    conn: &ConnBytes,
    activity: &Activity,
) -> Close {
    let [client_read, upstream_written, upstream_read, client_written] = joined.before;
    let stats = &shared.stats;
    let direction =
        |from, to, (from_side, to_side), read_before, written_before, bytes, conn_bytes| {
            Direction {
                from,
                to,
                from_side,
                to_side,
                read_before,
                written_before,
                fin: AtomicBool::new(false),
                counted: AtomicU64::new(0),
                bytes,
                in_kernel: &stats.bytes_in_kernel,
                conn_bytes,
            }
        };
    let up = direction(
        client,
        upstream,
        (Side::Downstream, Side::Upstream),
        client_read,
        upstream_written,
        &stats.bytes_to_upstream,
        &conn.up,
    );
    let down = direction(
        upstream,
        client,
        (Side::Upstream, Side::Downstream),
        upstream_read,
        client_written,
        &stats.bytes_to_downstream,
        &conn.down,
    );
    let ends = match Ends::new([client.as_fd(), upstream.as_fd()]).and_then(Ends::watched) {
        Ok(ends) => ends,
        Err(error) => {
            reset(client, upstream);
            return Close::Reset(HalfError {
                side: Side::Downstream,
                error,
            });
        }
    };
    let mut timers = Timers::new(timeouts, activity);
    let lifetime_end = timers.lifetime_end;
    let timer = tokio::time::sleep_until(Instant::now());
    tokio::pin!(timer);
    // The counters are brought up to date at least this often.
    let mut count_at = Instant::now() + COUNT_EVERY;
    timer
        .as_mut()
        .reset(timers.next().map_or(count_at, |t| t.min(count_at)));
    let mut done = [false, false];
    let close = 'relay: loop {
        tokio::select! {
            r = next_end(&ends) => {
                let reported = match r {
                    Ok(reported) => reported,
                    Err(error) => break Err(HalfError { side: Side::Downstream, error }),
                };
                for (i, d) in [&up, &down].into_iter().enumerate() {
                    let (fin, error) = reported[i];
                    if done[i] || !(fin || error) {
                        continue;
                    }
                    let finished = match d.ended(fin) {
                        Ok(true) => d.finish(activity).await,
                        Ok(false) => continue,
                        Err(e) => Err(e),
                    };
                    if let Err(e) = finished {
                        break 'relay Err(e);
                    }
                    shutdown_write(d.to);
                    done[i] = true;
                    let _ = ends.get_ref().fin_seen(d.from.as_fd(), i);
                }
            }
            () = &mut timer => {
                // The sockets know when data last arrived; the timers go by that.
                for d in [&up, &down] {
                    if let Ok(counts) = TcpCounts::of(d.from) {
                        if let Some(at) = Instant::now().checked_sub(counts.idle) {
                            activity.saw(at);
                        }
                        d.count_by(&counts);
                    }
                }
                count_at = Instant::now() + COUNT_EVERY;
                if let Some(kind) = timers.fired(Instant::now()) {
                    let in_flight = [&up, &down].iter().any(|d| !d.passed_on().unwrap_or(false))
                        || crate::sys::unacknowledged(client).unwrap_or(0) > 0
                        || crate::sys::unacknowledged(upstream).unwrap_or(0) > 0;
                    if kind != TimeoutKind::Idle || in_flight || done[0] != done[1] {
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
        if done == [true, true] {
            break Ok(Close::Done);
        }
        if done.contains(&true) {
            timers.half_closed();
        }
        timer
            .as_mut()
            .reset(timers.next().map_or(count_at, |t| t.min(count_at)));
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
