//! Other systems: no splice; relays copy through user-space buffers.

use std::io;

/// Whether this platform can splice.
pub(crate) const SPLICE: bool = false;

/// Stands in for the Linux pipe; it can never be made.
#[derive(Debug)]
pub(crate) enum Pipe {}

impl Pipe {
    pub(crate) fn new(_size: usize) -> io::Result<Pipe> {
        Err(io::Error::from(io::ErrorKind::Unsupported))
    }

    pub(crate) fn capacity(&self) -> usize {
        match *self {}
    }

    pub(crate) fn fill_from<T>(&self, _from: T, _len: usize) -> io::Result<usize> {
        match *self {}
    }

    pub(crate) fn drain_to<T>(&self, _to: T, _len: usize) -> io::Result<usize> {
        match *self {}
    }
}

/// Copies the bytes waiting on a (non-blocking) socket into `buf` without consuming them.
#[allow(unsafe_code)]
pub(crate) fn peek(socket: &tokio::net::TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    let socket = socket2::SockRef::from(socket);
    // SAFETY: `[u8]` and `[MaybeUninit<u8>]` have the same layout, and `peek` only writes
    // initialised bytes into the slice, so it stays fully initialised.
    let uninit = unsafe { &mut *(std::ptr::from_mut(buf) as *mut [std::mem::MaybeUninit<u8>]) };
    socket.peek(uninit)
}

/// Unknown here: 0, so nothing waits for the peer to acknowledge bytes.
pub(crate) fn unacknowledged<T>(_socket: T) -> io::Result<usize> {
    Ok(0)
}

/// Whether a splice error means "cannot splice"; never reached without splice.
pub(crate) fn splice_unsupported(_e: &io::Error) -> bool {
    true
}
