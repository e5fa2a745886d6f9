//! Copying through pooled user-space buffers: the portable relay, and how every burst
//! starts on Linux too, since small messages cost fewer system calls copied than spliced.

use std::convert::Infallible;
use std::io::{self, Read as _};

use socket2::SockRef;
use tokio::io::Interest;
use tokio::task::coop::consume_budget;

use super::relay::{Burst, Half, HalfError};

/// What one non-blocking read found.
enum Read {
    /// The buffer was filled: more bytes may be waiting.
    Full(usize),
    /// Fewer bytes than the buffer holds: the socket is empty now.
    Short(usize),
    /// Nothing to read (a stale readiness event).
    Empty,
    /// The peer's FIN.
    Eof,
}

impl Half<'_> {
    /// Reads into `buf` without blocking. A read shorter than `buf` leaves the socket
    /// empty, so it clears tokio's readiness there and then (as tokio's own `poll_read`
    /// does): the next wait needs no extra system call to learn that. This is race-free,
    /// since tokio clears only the readiness it saw before the read; an event for bytes
    /// that arrive after the read is kept.
    fn read_into(&self, buf: &mut [u8]) -> Result<Read, HalfError> {
        let mut short = 0;
        let read = self.from.try_io(Interest::READABLE, || {
            let n = (&*SockRef::from(self.from)).read(buf)?;
            if n > 0 && n < buf.len() {
                short = n;
                return Err(io::ErrorKind::WouldBlock.into());
            }
            Ok(n)
        });
        match read {
            Ok(0) => Ok(Read::Eof),
            Ok(n) => Ok(Read::Full(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && short > 0 => Ok(Read::Short(short)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Read::Empty),
            Err(e) => Err(self.read_error(e)),
        }
    }

    /// Copies one burst, the source being readable: until it is drained or sends its
    /// FIN, or, with `hand_over`, until a read fills the buffer (a bulk transfer, which the
    /// caller splices). A buffer is taken from the pool only for the burst, so an idle
    /// connection holds none.
    pub(super) async fn copy_burst(&self, hand_over: bool) -> Result<Burst, HalfError> {
        let mut buf = self
            .shared
            .buffers
            .take(|| Ok::<_, Infallible>(vec![0; self.shared.buffer_size].into()))
            .unwrap_or_else(|never| match never {});
        let limit = if hand_over {
            self.shared.splice_after.min(buf.len())
        } else {
            buf.len()
        };
        let burst = self.copy_with(&mut buf[..limit], hand_over).await;
        self.shared.buffers.put(buf);
        burst
    }

    async fn copy_with(&self, buf: &mut [u8], hand_over: bool) -> Result<Burst, HalfError> {
        loop {
            let (n, next) = match self.read_into(buf)? {
                Read::Eof => return Ok(Burst::Eof),
                Read::Empty => return Ok(Burst::Drained),
                Read::Short(n) => (n, Some(Burst::Drained)),
                Read::Full(n) if hand_over => (n, Some(Burst::More)),
                Read::Full(n) => (n, None),
            };
            let data = &buf[..n];
            self.write_with(n, false, |left| self.to.try_write(&data[n - left..]))
                .await?;
            if let Some(burst) = next {
                return Ok(burst);
            }
            consume_budget().await;
        }
    }
}
