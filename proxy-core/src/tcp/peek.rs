//! Waiting for, and peeking at, a connection's first bytes without consuming them (the
//! PROXY header a trusted peer sends; a future SNI peek belongs here too).
//!
//! A loop that waits on read readiness but does not read the bytes out can spin: once the
//! peer's FIN has arrived, tokio keeps the `READ_CLOSED` readiness for good (it is final;
//! clearing the readiness never clears it), so every later wait returns at once, and a
//! peek returns the same incomplete bytes every time. Readers never meet this, since their
//! read returns 0 at the FIN and they stop. Every loop here therefore goes through
//! [`read_ready`], which says whether the peer has closed, and gives up on bytes that can
//! no longer grow; and it takes from the task's coop budget on each round, since tokio's
//! `ready()` does not, so even a loop that is wrong in some other way yields to the
//! worker's other tasks and timers.

use std::io;

use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::task::coop::consume_budget;

/// Whether more bytes can arrive on a readable socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Incoming {
    /// The peer may send more.
    Open,
    /// The peer has sent its FIN: the bytes waiting now are all that will ever come.
    Closed,
}

/// Waits until `stream` is readable (bytes, the peer's FIN, or an error are waiting) and
/// says whether the peer has closed its side. Seen before a peek, `Closed` means that peek
/// sees every byte the peer sent, since its FIN came after them.
pub(super) async fn read_ready(stream: &TcpStream) -> io::Result<Incoming> {
    let ready = stream.ready(Interest::READABLE).await?;
    Ok(if ready.is_read_closed() {
        Incoming::Closed
    } else {
        Incoming::Open
    })
}

/// Peeks at the start of `stream` until `decide` settles on the bytes: `Ok(Some(_))`
/// accepts them, `Ok(None)` asks for more, an error rejects them. Nothing is consumed.
///
/// Bytes that can no longer grow and are still undecided (the peer closed, or `buf` is
/// full) fail with `UnexpectedEof`, at once rather than at some timeout: a peer that
/// sends half a header and its FIN is rejected as soon as the FIN arrives. Waiting for
/// more clears tokio's readiness (race-free: only the readiness seen before the peek is
/// cleared), so the next wait is for new bytes, not the same ones again.
///
/// # Errors
///
/// `UnexpectedEof` as above, `decide`'s error, or the socket's.
pub(super) async fn peek_until<T>(
    stream: &TcpStream,
    buf: &mut [u8],
    mut decide: impl FnMut(&[u8]) -> io::Result<Option<T>>,
) -> io::Result<T> {
    loop {
        let incoming = read_ready(stream).await?;
        let peeked = stream.try_io(Interest::READABLE, || {
            let n = crate::sys::peek(stream, buf)?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            match decide(&buf[..n])? {
                Some(decided) => Ok(decided),
                None if incoming == Incoming::Closed || n == buf.len() => {
                    Err(io::ErrorKind::UnexpectedEof.into())
                }
                None => Err(io::ErrorKind::WouldBlock.into()),
            }
        });
        match peeked {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => consume_budget().await,
            done => return done,
        }
    }
}
