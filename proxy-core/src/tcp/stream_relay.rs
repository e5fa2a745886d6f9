//! Relaying a connection whose bytes must pass through user space as a stream: a TLS
//! connection, decrypted on one side, which the kernel cannot splice. The timers,
//! half-close and resets of [`relay`](super::relay::relay), over any [`Endpoint`].
//!
//! Each direction reads into a pooled buffer and writes it all out; a peer's end (a TLS
//! `close_notify` or a FIN) becomes a shutdown of the other side's writing (a
//! `close_notify` then a FIN on TLS), and a failure resets both TCP connections.

use std::io;
use std::sync::atomic::AtomicU64;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::relay::{Activity, Close, ConnBytes, HalfError, RelayShared, Timers};
use crate::stats::Stats;
use crate::{Side, TimeoutKind, Timeouts};

/// A byte stream over one TCP connection: the connection itself, or TLS over it.
pub(crate) trait Endpoint: AsyncRead + AsyncWrite + Unpin + Send {
    /// The TCP connection underneath, to reset it.
    fn socket(&self) -> &TcpStream;
}

impl Endpoint for TcpStream {
    fn socket(&self) -> &TcpStream {
        self
    }
}

impl Endpoint for tokio_rustls::server::TlsStream<TcpStream> {
    fn socket(&self) -> &TcpStream {
        self.get_ref().0
    }
}

impl Endpoint for tokio_rustls::client::TlsStream<TcpStream> {
    fn socket(&self) -> &TcpStream {
        self.get_ref().0
    }
}

/// One direction: reads `from` to its end, writing everything to `to`, then shuts `to`'s
/// writing down.
async fn pump<R, W>(
    mut from: ReadHalf<R>,
    mut to: WriteHalf<W>,
    sides: (Side, Side),
    counters: (&AtomicU64, &AtomicU64),
    shared: &RelayShared,
    activity: &Activity,
) -> Result<(), HalfError>
where
    R: AsyncRead,
    W: AsyncWrite,
{
    let (from_side, to_side) = sides;
    let read_error = |error| HalfError {
        side: from_side,
        error,
    };
    let write_error = |error| HalfError {
        side: to_side,
        error,
    };
    let size = shared.buffer_size;
    let mut buf = shared
        .buffers
        .take(|| Ok::<_, io::Error>(vec![0u8; size].into_boxed_slice()))
        .map_err(read_error)?;
    let result = async {
        loop {
            let n = from.read(&mut buf).await.map_err(read_error)?;
            if n == 0 {
                return to.shutdown().await.map_err(write_error);
            }
            activity.hold(true);
            let written = to.write_all(&buf[..n]).await;
            activity.hold(false);
            written.map_err(write_error)?;
            // TLS holds written bytes in a record until flushed.
            to.flush().await.map_err(write_error)?;
            Stats::add(counters.0, n as u64);
            Stats::add(counters.1, n as u64);
            activity.touch();
        }
    }
    .await;
    shared.buffers.put(buf);
    result
}

/// Relays between `client` and `upstream` until both directions end, a timer fires, a
/// peer fails, or `closing` is cancelled; as [`relay`](super::relay::relay), but through
/// user-space streams.
pub(crate) async fn relay_streams<A: Endpoint, B: Endpoint>(
    client: A,
    upstream: B,
    shared: &RelayShared,
    timeouts: &Timeouts,
    closing: &CancellationToken,
    conn: &ConnBytes,
) -> Close {
    let activity = Activity::new();
    // Kept to reset the connections: the halves own the streams.
    let (client_socket, upstream_socket) = (dup(client.socket()), dup(upstream.socket()));
    let (client_read, client_write) = tokio::io::split(client);
    let (upstream_read, upstream_write) = tokio::io::split(upstream);
    let stats = &shared.stats;
    let up = pump(
        client_read,
        upstream_write,
        (Side::Downstream, Side::Upstream),
        (&stats.bytes_to_upstream, &conn.up),
        shared,
        &activity,
    );
    let down = pump(
        upstream_read,
        client_write,
        (Side::Upstream, Side::Downstream),
        (&stats.bytes_to_downstream, &conn.down),
        shared,
        &activity,
    );
    tokio::pin!(up, down);
    let reset_both = || {
        for socket in [&client_socket, &upstream_socket].into_iter().flatten() {
            // The close of the last descriptor sends the RST.
            if let Err(e) = socket.set_linger(Some(std::time::Duration::ZERO)) {
                tracing::trace!(error = %e, "SO_LINGER 0 failed");
            }
        }
    };

    let mut timers = Timers::new(timeouts, &activity);
    let mut deadline = timers.next();
    let timer = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now));
    tokio::pin!(timer);
    let (mut up_done, mut down_done) = (false, false);
    loop {
        tokio::select! {
            r = &mut up, if !up_done => {
                up_done = true;
                if let Err(e) = r {
                    reset_both();
                    return Close::Reset(e);
                }
            }
            r = &mut down, if !down_done => {
                down_done = true;
                if let Err(e) = r {
                    reset_both();
                    return Close::Reset(e);
                }
            }
            () = &mut timer, if deadline.is_some() => {
                if let Some(kind) = timers.fired(Instant::now()) {
                    if !(kind == TimeoutKind::Idle && activity.holding() == 0) {
                        reset_both();
                    }
                    return Close::Timeout(kind);
                }
            }
            () = closing.cancelled() => {
                reset_both();
                return Close::Shutdown;
            }
        }
        if up_done && down_done {
            return Close::Done;
        }
        timers.half_closed();
        deadline = timers.next();
        if let Some(t) = deadline {
            timer.as_mut().reset(t);
        }
    }
}

/// A second handle on `stream`'s socket, to reset it after the stream is split; `None`
/// when the descriptor cannot be duplicated (the connection then closes with a FIN).
fn dup(stream: &TcpStream) -> Option<socket2::Socket> {
    socket2::SockRef::from(stream).try_clone().ok()
}
