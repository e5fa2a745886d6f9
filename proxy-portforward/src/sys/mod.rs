//! The platform code: entering a network namespace.

#[cfg(target_os = "linux")]
pub(crate) mod netns;

#[cfg(not(target_os = "linux"))]
pub(crate) mod netns {
    //! Network namespaces are Linux's.

    use std::io;
    use std::net::SocketAddr;
    use std::path::Path;

    /// Refused: there are no network namespaces here.
    pub(crate) fn tcp_socket(path: &Path, _addr: SocketAddr) -> io::Result<socket2::Socket> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("network namespaces ({}) need Linux", path.display()),
        ))
    }

    /// Refused: there are no network namespaces here.
    pub(crate) fn udp_socket(path: &Path, addr: SocketAddr) -> io::Result<socket2::Socket> {
        tcp_socket(path, addr)
    }
}
