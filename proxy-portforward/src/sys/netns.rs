//! Creating a socket inside a network namespace.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::path::Path;

use rustix::thread::{LinkNameSpaceType, move_into_link_name_space};
use socket2::{Domain, Protocol, Socket, Type};

/// A TCP socket for `addr`'s family, created in the network namespace at `path`.
///
/// This moves the calling thread into that namespace for good: call it only on a thread
/// that ends right after (see `dial::socket_in`). The socket stays in the namespace it was
/// created in wherever it is used from.
pub(crate) fn tcp_socket(path: &Path, addr: SocketAddr) -> io::Result<Socket> {
    enter(path)?;
    Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
}

/// A UDP socket for `addr`'s family, created in the network namespace at `path`; as
/// [`tcp_socket`], for a thread that ends right after.
pub(crate) fn udp_socket(path: &Path, addr: SocketAddr) -> io::Result<Socket> {
    enter(path)?;
    Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))
}

/// Moves the calling thread into the network namespace at `path`.
fn enter(path: &Path) -> io::Result<()> {
    let shown = path.display();
    let ns = std::fs::File::open(path).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot open network namespace {shown}: {e}"),
        )
    })?;
    move_into_link_name_space(ns.as_fd(), Some(LinkNameSpaceType::Network)).map_err(|e| {
        let e = io::Error::from(e);
        io::Error::new(
            e.kind(),
            format!("cannot enter network namespace {shown}: {e}"),
        )
    })
}
