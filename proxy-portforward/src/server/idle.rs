//! The kubelet's `--streaming-connection-idle-timeout`: an upgraded connection from which
//! nothing has been read for that long fails its reads, which ends the session.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// `io`, ending with a `TimedOut` read error once the client has sent nothing (no data,
/// no PING, no frame at all) for `idle`; with no `idle`, `io` as it is.
///
/// The timer is not touched per read: a read only records the time, and when the timer
/// fires early it is set again from the last read.
pub(crate) struct IdleIo<IO> {
    io: IO,
    idle: Duration,
    last_read: Instant,
    timer: Option<Pin<Box<Sleep>>>,
}

impl<IO> IdleIo<IO> {
    pub(crate) fn new(io: IO, idle: Option<Duration>) -> Self {
        let now = Instant::now();
        IdleIo {
            io,
            idle: idle.unwrap_or_default(),
            last_read: now,
            timer: idle.map(|idle| Box::pin(tokio::time::sleep_until(now + idle))),
        }
    }

    /// Whether the connection has been idle too long; re-arms the timer otherwise.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        let due = self.last_read + self.idle;
        let Some(timer) = self.timer.as_mut() else {
            return false;
        };
        loop {
            if timer.as_mut().poll(cx).is_pending() {
                return false;
            }
            if due <= Instant::now() {
                return true;
            }
            timer.as_mut().reset(due);
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for IdleIo<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.io).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if self.timer.is_some() && buf.filled().len() > before {
                    self.last_read = Instant::now();
                }
                Poll::Ready(result)
            }
            Poll::Pending if self.expired(cx) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "nothing from the client for {:?} (the streaming connection idle timeout)",
                    self.idle
                ),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for IdleIo<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn reads_keep_it_open_and_silence_ends_it() {
        let (mut client, server) = duplex(64);
        let mut idle = IdleIo::new(server, Some(Duration::from_secs(10)));
        let mut buf = [0u8; 8];
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_secs(6)).await;
            client.write_all(b"ping").await.unwrap();
            assert_eq!(
                idle.read(&mut buf).await.unwrap(),
                4,
                "30 s, never 10 s silent"
            );
        }
        let started = Instant::now();
        let e = idle.read(&mut buf).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(10));
        assert!(e.to_string().contains("idle timeout"), "{e}");
    }
}
