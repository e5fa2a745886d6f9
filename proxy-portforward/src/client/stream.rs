//! [`ForwardedStream`]: one forwarded connection of a [`SpdySession`](super::SpdySession).

use std::fmt;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::spdy::{Guard, Shared, Slot, dead_error};
use crate::spdy::Opened;

/// One forwarded connection to a pod's port, over a SPDY session: kubectl's data stream
/// (read and written as bytes) and error stream (the node's error text, if any).
///
/// - Reads return the pod's bytes, then EOF when the pod closed its side. When the node
///   wrote error text (it could not reach the port, say), reads fail with an error of
///   kind `Other` carrying it, once the bytes before it are read; [`error`](Self::error)
///   gives the text too. A reset of the stream is `ConnectionReset`; the end of the
///   session is the session's error.
/// - Writes go out within the node's flow-control windows, and wait for them.
/// - [`AsyncWrite::poll_shutdown`] sends FIN on the data stream (the pod sees EOF);
///   reading goes on.
/// - Dropping it resets what is still open (RST_STREAM, `CANCEL`). Other streams of the
///   session are not affected by anything that happens to this one.
pub struct ForwardedStream {
    shared: Arc<Shared>,
    _guard: Arc<Guard>,
    opened: Opened,
    port: u16,
}

impl fmt::Debug for ForwardedStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ForwardedStream")
            .field("port", &self.port)
            .field("request_id", &self.opened.request_id)
            .field("data_stream", &self.opened.data_stream)
            .finish_non_exhaustive()
    }
}

fn error_text(slot: &Slot) -> Option<String> {
    (slot.error_done && !slot.error_text.is_empty())
        .then(|| String::from_utf8_lossy(&slot.error_text).into_owned())
}

fn reset_error(status: u32) -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionReset,
        format!("the node reset the stream (status {status})"),
    )
}

// ===== impl ForwardedStream =====

impl ForwardedStream {
    pub(super) fn new(shared: Arc<Shared>, guard: Arc<Guard>, opened: Opened, port: u16) -> Self {
        ForwardedStream {
            shared,
            _guard: guard,
            opened,
            port,
        }
    }

    /// The pod's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The `requestid` of its streams.
    pub fn request_id(&self) -> u64 {
        self.opened.request_id
    }

    /// Waits for the node to close the error stream, and returns its text: `None` when
    /// it wrote none (the connection went well, or is still going on while the error
    /// stream stays open).
    ///
    /// # Errors
    ///
    /// The session ended before the error stream closed.
    pub async fn error(&self) -> io::Result<Option<String>> {
        poll_fn(|cx| {
            let mut core = self.shared.lock();
            let dead = core.dead.clone();
            let Some(slot) = core.slots.get_mut(&self.opened.data_stream) else {
                return Poll::Ready(Ok(None));
            };
            if slot.error_done {
                return Poll::Ready(Ok(error_text(slot)));
            }
            if let Some(dead) = dead {
                return Poll::Ready(Err(dead_error(&dead)));
            }
            slot.error_waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }
}

impl ForwardedStream {
    /// [`AsyncRead::poll_read`] through a shared reference (for [`super::DatagramStream`]).
    pub(super) fn poll_read_shared(
        &self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let id = self.opened.data_stream;
        let mut core = self.shared.lock();
        let dead = core.dead.clone();
        let Some(slot) = core.slots.get_mut(&id) else {
            return Poll::Ready(Err(io::ErrorKind::NotConnected.into()));
        };
        if let Some(front) = slot.recv.front_mut() {
            let n = front.len().min(buf.remaining());
            buf.put_slice(&front[..n]);
            front.advance(n);
            if front.is_empty() {
                slot.recv.pop_front();
            }
            core.session.consumed(id, n);
            // A WINDOW_UPDATE goes out once half a window is owed; until then there is
            // nothing for the writer (waking it for nothing costs a thread wake-up a read).
            let window_update = core.session.has_frames();
            let was_full = core.buffered >= core.buffer_limit;
            core.buffered -= n;
            let drained = was_full && core.buffered < core.buffer_limit;
            drop(core);
            if drained {
                self.shared.drained.notify_one();
            }
            if window_update {
                self.shared.wake_writer();
            }
            return Poll::Ready(Ok(()));
        }
        if let Some(text) = error_text(slot) {
            return Poll::Ready(Err(io::Error::other(text)));
        }
        if slot.fin {
            return Poll::Ready(Ok(()));
        }
        if let Some(status) = slot.reset {
            return Poll::Ready(Err(reset_error(status)));
        }
        if let Some(dead) = dead {
            return Poll::Ready(Err(dead_error(&dead)));
        }
        slot.read_waker = Some(cx.waker().clone());
        Poll::Pending
    }

    /// [`AsyncWrite::poll_write`] through a shared reference.
    pub(super) fn poll_write_shared(
        &self,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let id = self.opened.data_stream;
        let mut core = self.shared.lock();
        if let Some(dead) = &core.dead {
            return Poll::Ready(Err(dead_error(dead)));
        }
        let queued = core.queued;
        let Some(slot) = core.slots.get_mut(&id) else {
            return Poll::Ready(Err(io::ErrorKind::NotConnected.into()));
        };
        if let Some(status) = slot.reset {
            return Poll::Ready(Err(reset_error(status)));
        }
        if let Some(text) = error_text(slot) {
            return Poll::Ready(Err(io::Error::other(text)));
        }
        if slot.shutdown {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the stream is shut down for writing",
            )));
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if queued >= super::spdy::OUT_HIGH {
            core.out_wakers.push(cx.waker().clone());
            return Poll::Pending;
        }
        let Some(available) = core.session.send_window(id) else {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        };
        if available == 0 {
            if let Some(slot) = core.slots.get_mut(&id) {
                slot.write_waker = Some(cx.waker().clone());
            }
            core.session.probe_windows();
            drop(core);
            self.shared.wake_writer();
            return Poll::Pending;
        }
        let n = buf.len().min(available).min(super::spdy::MAX_DATA_FRAME);
        if core
            .session
            .send_data(id, Bytes::copy_from_slice(&buf[..n]), false)
            .is_err()
        {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        core.queued += n;
        drop(core);
        self.shared.wake_writer();
        Poll::Ready(Ok(n))
    }
}

impl AsyncRead for ForwardedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.poll_read_shared(cx, buf)
    }
}

impl AsyncWrite for ForwardedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_shared(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let id = self.opened.data_stream;
        let mut core = self.shared.lock();
        if let Some(dead) = &core.dead {
            return Poll::Ready(Err(dead_error(dead)));
        }
        let Some(slot) = core.slots.get_mut(&id) else {
            return Poll::Ready(Err(io::ErrorKind::NotConnected.into()));
        };
        if slot.shutdown {
            return Poll::Ready(Ok(()));
        }
        if let Some(status) = slot.reset {
            return Poll::Ready(Err(reset_error(status)));
        }
        slot.shutdown = true;
        // Refused only if the stream is gone, which a reset above reports.
        let _ = core.session.send_data(id, Bytes::new(), true);
        drop(core);
        self.shared.wake_writer();
        Poll::Ready(Ok(()))
    }
}

impl Drop for ForwardedStream {
    fn drop(&mut self) {
        self.shared.lock().forget(self.opened.data_stream);
        self.shared.drained.notify_one();
        self.shared.wake_writer();
    }
}
