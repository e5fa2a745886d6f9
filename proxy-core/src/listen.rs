//! Turning listen addresses into sockets.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

/// Socket options shared by a forwarder's listeners.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ListenOptions {
    pub(crate) reuse_port: bool,
    pub(crate) dual_stack: bool,
    pub(crate) backlog: u32,
}

impl Default for ListenOptions {
    fn default() -> Self {
        ListenOptions {
            reuse_port: false,
            dual_stack: true,
            backlog: 1024,
        }
    }
}

/// A socket of `ty` bound to `addr`, non-blocking; with SO_REUSEADDR for TCP only.
///
/// An unspecified IPv6 address (`[::]`) accepts IPv4 too when `dual_stack` is set; any
/// other IPv6 address is IPv6-only, so `0.0.0.0:P` and `[::1]:P` can be bound side by side.
pub(crate) fn bind(addr: SocketAddr, ty: Type, opts: &ListenOptions) -> io::Result<Socket> {
    let protocol = if ty == Type::STREAM {
        Protocol::TCP
    } else {
        Protocol::UDP
    };
    let socket = Socket::new(Domain::for_address(addr), ty, Some(protocol))?;
    // TCP: rebind while old connections sit in TIME_WAIT. UDP has no TIME_WAIT, and there
    // SO_REUSEADDR would let a second socket bind the same port silently.
    if ty == Type::STREAM {
        socket.set_reuse_address(true)?;
    }
    #[cfg(unix)]
    if opts.reuse_port {
        socket.set_reuse_port(true)?;
    }
    if addr.is_ipv6() {
        socket.set_only_v6(!(addr.ip().is_unspecified() && opts.dual_stack))?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket)
}

/// A listening TCP socket on `addr`.
pub(crate) fn tcp(addr: SocketAddr, opts: &ListenOptions) -> io::Result<tokio::net::TcpListener> {
    let socket = bind(addr, Type::STREAM, opts)?;
    socket.listen(i32::try_from(opts.backlog).unwrap_or(i32::MAX))?;
    tokio::net::TcpListener::from_std(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn dual_stack_accepts_ipv4() {
        let Ok(l) = tcp("[::]:0".parse().unwrap(), &ListenOptions::default()) else {
            return; // no IPv6 on this host
        };
        let port = l.local_addr().unwrap().port();
        let c = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let (_, peer) = l.accept().await.unwrap();
        assert_eq!(peer.port(), c.local_addr().unwrap().port());
    }

    #[tokio::test]
    async fn reuse_port_allows_two_listeners() {
        let opts = ListenOptions {
            reuse_port: true,
            ..ListenOptions::default()
        };
        let a = tcp("127.0.0.1:0".parse().unwrap(), &opts).unwrap();
        let b = tcp(a.local_addr().unwrap(), &opts);
        assert!(b.is_ok(), "{b:?}");
        let c = tcp(a.local_addr().unwrap(), &ListenOptions::default());
        assert_eq!(c.unwrap_err().kind(), io::ErrorKind::AddrInUse);
    }
}
