//! One poll of the session's connection: write what waits, flush, read.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What one poll of the connection did.
pub(super) enum IoStep {
    /// Bytes read (0: the client's EOF).
    Read(usize),
    /// Everything waiting was written.
    Drained,
}

/// Writes what is waiting (then flushes), and reads if `reading`: ready when something
/// was read, or when everything waiting went out.
pub(super) fn poll_io<IO: AsyncRead + AsyncWrite + Unpin>(
    cx: &mut Context<'_>,
    io: &mut IO,
    out: &mut BytesMut,
    unflushed: &mut bool,
    input: &mut BytesMut,
    scratch: &mut [u8],
    reading: bool,
) -> Poll<io::Result<IoStep>> {
    let mut wrote = false;
    while !out.is_empty() {
        match Pin::new(&mut *io).poll_write(cx, out) {
            Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
            Poll::Ready(Ok(n)) => {
                out.advance(n);
                wrote = true;
                *unflushed = true;
            }
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => break,
        }
    }
    if out.is_empty() && *unflushed {
        match Pin::new(&mut *io).poll_flush(cx) {
            Poll::Ready(Ok(())) => *unflushed = false,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => {}
        }
    }
    if reading {
        let mut buf = ReadBuf::new(scratch);
        match Pin::new(&mut *io).poll_read(cx, &mut buf) {
            Poll::Ready(Ok(())) => {
                input.extend_from_slice(buf.filled());
                return Poll::Ready(Ok(IoStep::Read(buf.filled().len())));
            }
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => {}
        }
    }
    if wrote && out.is_empty() {
        return Poll::Ready(Ok(IoStep::Drained));
    }
    Poll::Pending
}
