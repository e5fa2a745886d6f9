//! Linux: pipes and `splice(2)` for zero-copy socket-to-socket relaying.

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use rustix::pipe::{PipeFlags, SpliceFlags, fcntl_setpipe_size, pipe_with, splice};

/// Whether this platform can splice.
pub(crate) const SPLICE: bool = true;

/// A kernel pipe used as the buffer between two sockets. Dropping it closes both ends.
#[derive(Debug)]
pub(crate) struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    capacity: usize,
}

impl Pipe {
    /// A non-blocking pipe of (at least) `size` bytes; when the kernel refuses that size
    /// (above `/proc/sys/fs/pipe-max-size` without privileges), the default size is kept.
    pub(crate) fn new(size: usize) -> io::Result<Pipe> {
        let (read, write) = pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)?;
        let capacity = match fcntl_setpipe_size(&write, size) {
            Ok(n) => n,
            Err(e) => {
                let n = rustix::pipe::fcntl_getpipe_size(&write)?;
                tracing::debug!(size, error = %e, kept = n, "could not resize pipe");
                n
            }
        };
        Ok(Pipe {
            read,
            write,
            capacity,
        })
    }

    /// The pipe's capacity in bytes.
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Moves up to `len` bytes from `from` (a socket) into the pipe, without blocking.
    /// `Ok(0)` is end of stream.
    pub(crate) fn fill_from(&self, from: impl AsFd, len: usize) -> io::Result<usize> {
        let flags = SpliceFlags::MOVE | SpliceFlags::NONBLOCK;
        Ok(splice(from, None, &self.write, None, len, flags)?)
    }

    /// Moves up to `len` bytes from the pipe into `to` (a socket), without blocking.
    pub(crate) fn drain_to(&self, to: impl AsFd, len: usize) -> io::Result<usize> {
        let flags = SpliceFlags::MOVE | SpliceFlags::NONBLOCK;
        Ok(splice(&self.read, None, to, None, len, flags)?)
    }
}

/// Copies the bytes waiting on a socket into `buf` without consuming them and without
/// blocking.
pub(crate) fn peek(socket: impl AsFd, buf: &mut [u8]) -> io::Result<usize> {
    use rustix::net::{RecvFlags, recv};
    Ok(recv(socket, buf, RecvFlags::PEEK | RecvFlags::DONTWAIT)?.0)
}

/// The bytes in a TCP socket's send queue that its peer has not acknowledged yet (the
/// SIOCOUTQ ioctl): 0 once everything written has reached the peer.
#[allow(unsafe_code)]
pub(crate) fn unacknowledged(socket: impl AsFd) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    let mut n: libc::c_int = 0;
    // SAFETY: SIOCOUTQ (the socket meaning of TIOCOUTQ's number) writes one `c_int`
    // through its pointer, which points to `n`, live and writable for the call; the
    // descriptor is borrowed, so it stays open meanwhile.
    let rc = unsafe { libc::ioctl(socket.as_fd().as_raw_fd(), libc::TIOCOUTQ, &mut n) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(usize::try_from(n).unwrap_or(0))
}

/// Whether a splice error means "this pair of descriptors cannot splice", so the caller
/// should copy instead.
pub(crate) fn splice_unsupported(e: &io::Error) -> bool {
    use rustix::io::Errno;
    [Errno::INVAL, Errno::NOSYS, Errno::OPNOTSUPP]
        .iter()
        .any(|errno| e.raw_os_error() == Some(errno.raw_os_error()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};

    #[test]
    fn unacknowledged_bytes_go_to_zero_once_the_peer_has_them() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut a = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut b, _) = listener.accept().unwrap();
        assert_eq!(unacknowledged(&a).unwrap(), 0);
        a.write_all(&[7; 4096]).unwrap();
        // Loopback acknowledges at once; poll briefly for the ACK to be processed.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while unacknowledged(&a).unwrap() != 0 {
            assert!(std::time::Instant::now() < deadline, "never acknowledged");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let mut got = [0; 4096];
        b.read_exact(&mut got).unwrap();
        assert_eq!(got, [7; 4096]);
        // Unread by a peer whose window is closed, bytes stay unacknowledged.
        b.set_nonblocking(true).unwrap();
        a.set_nonblocking(true).unwrap();
        let chunk = [1u8; 65536];
        let mut written = 0;
        while let Ok(n) = a.write(&chunk) {
            written += n;
        }
        assert!(written > 0);
        assert!(unacknowledged(&a).unwrap() > 0);
    }

    #[test]
    fn splices_between_sockets() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut a = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (b, _) = listener.accept().unwrap();
        let pipe = Pipe::new(1 << 16).unwrap();
        assert!(pipe.capacity() >= 1 << 16);
        a.write_all(b"hello").unwrap();
        let mut moved = 0;
        while moved == 0 {
            moved = match pipe.fill_from(&b, 1024) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
                Err(e) => panic!("{e}"),
            };
        }
        assert_eq!(pipe.drain_to(&b, moved).unwrap(), 5);
        let mut buf = [0; 5];
        a.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hello");
    }

    #[test]
    fn refused_size_keeps_the_default() {
        // Far above any pipe-max-size: as root the kernel still refuses with EINVAL/ENOMEM
        // or EPERM; either way a usable pipe comes back.
        let pipe = Pipe::new(usize::MAX / 2).unwrap();
        assert!(pipe.capacity() >= 4096);
    }
}
