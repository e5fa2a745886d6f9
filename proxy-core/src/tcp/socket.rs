//! What the relay does to a socket itself, beside moving bytes: forward a FIN
//! ([`shutdown_write`]), make the close send a RST ([`reset_on_close`]), and wait for an
//! error the peer sends ([`peer_error`]).

use std::io;
use std::net::Shutdown;
use std::os::fd::AsFd;
use std::time::Duration;

use socket2::SockRef;
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::task::coop::consume_budget;

/// Resolves once `stream` has an error pending, such as a reset from its peer.
pub(super) async fn peer_error(stream: &TcpStream) -> io::Error {
    loop {
        if let Err(e) = stream.ready(Interest::ERROR).await {
            return e;
        }
        match stream.take_error() {
            Ok(Some(e)) | Err(e) => return e,
            // Spurious: forget the cached readiness and wait for the next event (and
            // yield, since `ready()` takes no coop budget).
            Ok(None) => {
                let _ = stream.try_io(Interest::ERROR, || {
                    Err::<(), _>(io::Error::from(io::ErrorKind::WouldBlock))
                });
                consume_budget().await;
            }
        }
    }
}

/// Forwards a FIN: no more bytes will be written to `stream`.
pub(super) fn shutdown_write(stream: &impl AsFd) {
    if let Err(e) = SockRef::from(stream).shutdown(Shutdown::Write) {
        tracing::trace!(error = %e, "shutdown(SHUT_WR) failed");
    }
}

/// Makes the coming close of both sockets send a RST (SO_LINGER 0).
pub(super) fn reset(a: &impl AsFd, b: &impl AsFd) {
    reset_on_close(a);
    reset_on_close(b);
}

/// Makes the coming close of `stream` send a RST (SO_LINGER 0).
pub(super) fn reset_on_close(stream: &impl AsFd) {
    if let Err(e) = SockRef::from(stream).set_linger(Some(Duration::ZERO)) {
        tracing::trace!(error = %e, "SO_LINGER 0 failed");
    }
}
