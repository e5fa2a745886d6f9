//! systemd socket activation: the listening sockets systemd passes to a service
//! (`sd_listen_fds(3)`), ready for [`TcpForwarder::start_from`] and
//! [`UdpForwarder::start_from`].
//!
//! With a `.socket` unit, systemd binds the listen addresses itself (privileged ports
//! too) and starts the service with the sockets as descriptors 3, 4, ..., telling it so in
//! `LISTEN_PID`, `LISTEN_FDS` and `LISTEN_FDNAMES`. [`listen_fds`] reads those variables
//! and takes the sockets.
//!
//! # Examples
//!
//! Take the sockets before anything opens a descriptor, the tokio runtime included (see
//! [`listen_fds`]):
//!
//! ```no_run
//! use std::time::Duration;
//! use proxy_core::TcpForwarder;
//! use proxy_core::systemd::{self, SocketKind};
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let inherited = systemd::listen_fds()?;
//!     let runtime = tokio::runtime::Runtime::new()?;
//!     runtime.block_on(async {
//!         let mut listeners = Vec::new();
//!         for socket in inherited {
//!             if socket.kind() == SocketKind::Tcp {
//!                 listeners.push(socket.into_tcp_listener()?);
//!             }
//!         }
//!         let forwarder =
//!             TcpForwarder::builder(["[::]:53".parse()?], "10.0.0.10:53".parse()?).build()?;
//!         let handle = forwarder.start_from(listeners)?;
//!         tokio::signal::ctrl_c().await?;
//!         handle.shutdown(Duration::from_secs(10)).await;
//!         Ok(())
//!     })
//! }
//! ```
//!
//! [`TcpForwarder::start_from`]: crate::TcpForwarder::start_from
//! [`UdpForwarder::start_from`]: crate::UdpForwarder::start_from

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;

use socket2::{Socket, Type};

use crate::sys::systemd::take_listen_fds;

/// What kind of socket systemd passed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SocketKind {
    /// A listening TCP socket (`ListenStream=` with an IP address or a port).
    Tcp,
    /// A UDP socket (`ListenDatagram=` with an IP address or a port).
    Udp,
    /// Anything else: a Unix socket, a FIFO, a stream socket that is not listening
    /// (`Accept=yes`), `SOCK_SEQPACKET`, ...
    Other,
}

/// One socket passed by systemd, owned by this process.
pub struct InheritedSocket {
    socket: Socket,
    kind: SocketKind,
    local_addr: Option<SocketAddr>,
    name: Option<String>,
}

/// What the socket-activation variables say, before any descriptor is touched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ListenEnv {
    /// How many descriptors, from 3.
    pub(crate) count: usize,
    /// Their names (`FileDescriptorName=`, by default the socket unit's name), one per
    /// descriptor, when `LISTEN_FDNAMES` is set.
    pub(crate) names: Option<Vec<String>>,
}

/// Takes the sockets systemd passed to this process: descriptors 3, 4, ... when
/// `LISTEN_PID` is this process's id and `LISTEN_FDS` is their number, named by
/// `LISTEN_FDNAMES` when set. Each is marked close-on-exec. An empty list when the
/// process was not socket-activated (no `LISTEN_PID`, or another process's).
///
/// Only the first call that finds sockets takes them; later calls fail, so no descriptor
/// ever has two owners. Call it first, before the process opens a descriptor of its own
/// (before building the tokio runtime): descriptors past the passed ones are then not
/// open, so an overstated `LISTEN_FDS` fails with `EBADF`. Called later, it would take
/// the process's own descriptors (the runtime's epoll, ...) as passed sockets, and
/// dropping them closes them under their real owner. The variables are left as they are (removing them is
/// `unsafe` in a multi-threaded process); processes started later see a `LISTEN_PID` that
/// is not theirs and ignore them.
///
/// # Errors
///
/// `InvalidData` when `LISTEN_FDS` or `LISTEN_PID` is not a number or `LISTEN_FDNAMES`
/// names a different number of sockets; the OS error when a descriptor is not open or
/// cannot be inspected; `AlreadyExists` when the sockets were taken by an earlier call.
pub fn listen_fds() -> io::Result<Vec<InheritedSocket>> {
    let var = |name| std::env::var(name).ok();
    let Some(env) = parse_env(
        var("LISTEN_PID").as_deref(),
        var("LISTEN_FDS").as_deref(),
        var("LISTEN_FDNAMES").as_deref(),
        std::process::id(),
    )?
    else {
        return Ok(Vec::new());
    };
    let fds = take_listen_fds(env.count)?;
    let mut names = env.names.map(Vec::into_iter);
    fds.into_iter()
        .map(|fd| InheritedSocket::new(fd, names.as_mut().and_then(Iterator::next)))
        .collect()
}

/// Parses the socket-activation variables for process `pid`: `None` when they are not
/// for it or pass no socket.
pub(crate) fn parse_env(
    listen_pid: Option<&str>,
    listen_fds: Option<&str>,
    listen_fdnames: Option<&str>,
    pid: u32,
) -> io::Result<Option<ListenEnv>> {
    let invalid = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
    let Some(listen_pid) = listen_pid else {
        return Ok(None);
    };
    let listen_pid: u32 = listen_pid
        .trim()
        .parse()
        .map_err(|_| invalid(format!("LISTEN_PID={listen_pid:?} is not a process id")))?;
    if listen_pid != pid {
        return Ok(None);
    }
    let Some(listen_fds) = listen_fds else {
        return Ok(None);
    };
    let count: usize = listen_fds
        .trim()
        .parse()
        .map_err(|_| invalid(format!("LISTEN_FDS={listen_fds:?} is not a number")))?;
    if count == 0 {
        return Ok(None);
    }
    let names = match listen_fdnames {
        None => None,
        Some(names) => {
            let names: Vec<String> = names.split(':').map(str::to_owned).collect();
            if names.len() != count {
                return Err(invalid(format!(
                    "LISTEN_FDNAMES={listen_fdnames:?} names {} sockets, LISTEN_FDS={count}",
                    names.len()
                )));
            }
            Some(names)
        }
    };
    Ok(Some(ListenEnv { count, names }))
}

// ===== impl InheritedSocket =====

impl InheritedSocket {
    fn new(fd: OwnedFd, name: Option<String>) -> io::Result<Self> {
        let socket = Socket::from(fd);
        let local_addr = socket.local_addr().ok().and_then(|a| a.as_socket());
        // Not a socket at all (a FIFO, say): `Other`, like any socket we cannot forward.
        let kind = match (socket.r#type().ok(), local_addr) {
            (Some(Type::STREAM), Some(_)) if socket.is_listener().unwrap_or(false) => {
                SocketKind::Tcp
            }
            (Some(Type::DGRAM), Some(_)) => SocketKind::Udp,
            _ => SocketKind::Other,
        };
        Ok(InheritedSocket {
            socket,
            kind,
            local_addr,
            name: name.filter(|n| !n.is_empty()),
        })
    }

    /// What kind of socket it is.
    pub fn kind(&self) -> SocketKind {
        self.kind
    }

    /// The address it is bound to; `None` for sockets that are not IP sockets.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    /// Its name from `LISTEN_FDNAMES` (`FileDescriptorName=` in the socket unit, the
    /// unit's name by default), when systemd gave one.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The socket as a listener, for [`TcpForwarder::start_from`](crate::TcpForwarder::start_from).
    ///
    /// # Errors
    ///
    /// `InvalidInput` when it is not a [`SocketKind::Tcp`] socket.
    pub fn into_tcp_listener(self) -> io::Result<std::net::TcpListener> {
        self.expect(SocketKind::Tcp)?;
        Ok(self.socket.into())
    }

    /// The socket as a UDP socket, for [`UdpForwarder::start_from`](crate::UdpForwarder::start_from).
    ///
    /// # Errors
    ///
    /// `InvalidInput` when it is not a [`SocketKind::Udp`] socket.
    pub fn into_udp_socket(self) -> io::Result<std::net::UdpSocket> {
        self.expect(SocketKind::Udp)?;
        Ok(self.socket.into())
    }

    fn expect(&self, kind: SocketKind) -> io::Result<()> {
        if self.kind == kind {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{self} is not a {kind:?} socket"),
            ))
        }
    }
}

impl From<InheritedSocket> for OwnedFd {
    fn from(s: InheritedSocket) -> OwnedFd {
        s.socket.into()
    }
}

impl fmt::Debug for InheritedSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InheritedSocket")
            .field("kind", &self.kind)
            .field("local_addr", &self.local_addr)
            .field("name", &self.name)
            .finish()
    }
}

/// `tcp 127.0.0.1:53 (proxy.socket)`, as logs show it.
impl fmt::Display for InheritedSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            SocketKind::Tcp => "tcp",
            SocketKind::Udp => "udp",
            SocketKind::Other => "non-IP or non-listening",
        };
        match self.local_addr {
            Some(addr) => write!(f, "{kind} {addr}")?,
            None => write!(f, "{kind} socket")?,
        }
        if let Some(name) = &self.name {
            write!(f, " ({name})")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(count: usize, names: Option<&[&str]>) -> Option<ListenEnv> {
        Some(ListenEnv {
            count,
            names: names.map(|n| n.iter().map(|s| (*s).to_owned()).collect()),
        })
    }

    #[test]
    fn not_for_us() {
        assert_eq!(parse_env(None, Some("2"), None, 7).unwrap(), None);
        assert_eq!(parse_env(Some("8"), Some("2"), None, 7).unwrap(), None);
        // Another process's variables are ignored even when they are malformed.
        assert_eq!(parse_env(Some("8"), Some("x"), None, 7).unwrap(), None);
        assert_eq!(parse_env(Some("7"), None, None, 7).unwrap(), None);
        assert_eq!(parse_env(Some("7"), Some("0"), None, 7).unwrap(), None);
    }

    #[test]
    fn for_us() {
        assert_eq!(
            parse_env(Some("7"), Some("2"), None, 7).unwrap(),
            env(2, None)
        );
        assert_eq!(
            parse_env(Some("7"), Some("2"), Some("web:dns"), 7).unwrap(),
            env(2, Some(&["web", "dns"]))
        );
        assert_eq!(
            parse_env(Some("7"), Some("1"), Some(""), 7).unwrap(),
            env(1, Some(&[""]))
        );
    }

    #[test]
    fn malformed() {
        for (pid, fds, names) in [
            (Some("x"), Some("1"), None),
            (Some("7"), Some("-1"), None),
            (Some("7"), Some("two"), None),
            (Some("7"), Some(""), None),
            (Some("7"), Some("2"), Some("only-one")),
        ] {
            let e = parse_env(pid, fds, names, 7).unwrap_err();
            assert_eq!(
                e.kind(),
                io::ErrorKind::InvalidData,
                "{pid:?} {fds:?} {names:?}"
            );
        }
    }

    #[test]
    fn classifies_sockets() {
        use std::net::{TcpListener, TcpStream, UdpSocket};
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = tcp.local_addr().unwrap();
        let s = InheritedSocket::new(tcp.into(), Some("web".into())).unwrap();
        assert_eq!(s.kind(), SocketKind::Tcp);
        assert_eq!(s.local_addr(), Some(addr));
        assert_eq!(s.name(), Some("web"));
        assert_eq!(s.to_string(), format!("tcp {addr} (web)"));
        assert!(s.into_tcp_listener().is_ok());

        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let s = InheritedSocket::new(udp.into(), Some(String::new())).unwrap();
        assert_eq!(s.kind(), SocketKind::Udp);
        assert_eq!(s.name(), None);
        let e = s.into_tcp_listener().unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);

        // A connected stream is not a listener.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let s = InheritedSocket::new(stream.into(), None).unwrap();
        assert_eq!(s.kind(), SocketKind::Other);

        let (unix, _) = std::os::unix::net::UnixDatagram::pair().unwrap();
        let s = InheritedSocket::new(unix.into(), None).unwrap();
        assert_eq!((s.kind(), s.local_addr()), (SocketKind::Other, None));
        assert!(s.into_udp_socket().is_err());
    }
}
