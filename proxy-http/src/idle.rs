//! [`Watched`]: a client connection that records when bytes last moved, so a kept-alive
//! connection with nothing to do can be closed after `idle_timeout`. Reads and writes only
//! store a time; the one timer per connection is re-armed when it fires.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// When a connection last moved bytes, in milliseconds since it started.
#[derive(Debug)]
pub(crate) struct LastActive {
    start: Instant,
    at_ms: AtomicU64,
}

impl LastActive {
    pub(crate) fn new() -> Arc<LastActive> {
        Arc::new(LastActive {
            start: Instant::now(),
            at_ms: AtomicU64::new(0),
        })
    }

    fn touch(&self) {
        self.at_ms
            .store(self.start.elapsed().as_millis() as u64, Relaxed);
    }

    /// Waits until the connection has been idle for `limit`.
    pub(crate) async fn idle_for(&self, limit: Duration) {
        loop {
            let last = self.start + Duration::from_millis(self.at_ms.load(Relaxed));
            let due = last + limit;
            if Instant::now() >= due {
                return;
            }
            tokio::time::sleep_until(due).await;
        }
    }
}

pin_project! {
    /// An I/O object that touches its [`LastActive`] on every read and write.
    pub(crate) struct Watched<T> {
        #[pin]
        io: T,
        last: Arc<LastActive>,
    }
}

impl<T> Watched<T> {
    pub(crate) fn new(io: T, last: Arc<LastActive>) -> Self {
        Watched { io, last }
    }
}

impl<T: AsyncRead> AsyncRead for Watched<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let polled = this.io.poll_read(cx, buf);
        if buf.filled().len() > before {
            this.last.touch();
        }
        polled
    }
}

impl<T: AsyncWrite> AsyncWrite for Watched<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let polled = this.io.poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.last.touch();
        }
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let polled = this.io.poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.last.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn idle_for_waits_from_the_last_byte() {
        let last = LastActive::new();
        let (a, mut b) = tokio::io::duplex(64);
        let mut watched = Watched::new(a, last.clone());
        tokio::time::sleep(Duration::from_secs(5)).await;
        b.write_all(b"x").await.unwrap();
        let mut byte = [0; 1];
        watched.read_exact(&mut byte).await.unwrap();
        let started = Instant::now();
        last.idle_for(Duration::from_secs(10)).await;
        assert_eq!(started.elapsed(), Duration::from_secs(10));
    }
}
