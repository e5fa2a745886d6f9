//! Reaching a pod's port: the half of port-forward that the kubelet delegates to the
//! container runtime. [`Dial`] is what an embedder supplies (a node agent with its own
//! way into pods); [`TargetDialer`] is the built-in one for a [`PodTarget`]:
//!
//! - a host: the stream's port on it, each resolved address tried in turn;
//! - a network namespace (`netns:/run/netns/NAME`, `netns:/proc/PID/ns/net`): a socket
//!   created inside it, on a short-lived thread of its own that enters the namespace
//!   (`setns(2)`) only to create the socket and then ends, so no runtime thread ever
//!   changes namespace; the socket then connects to the port on the namespace's loopback,
//!   `127.0.0.1` and then `[::1]`, as container runtimes do.
//!
//! # Examples
//!
//! ```no_run
//! use std::time::Duration;
//! use proxy_portforward::dial::TargetDialer;
//! use proxy_portforward::objects::PodTarget;
//!
//! # #[tokio::main]
//! # async fn main() -> std::io::Result<()> {
//! let dialer = TargetDialer::new(Duration::from_secs(5));
//! let pod = PodTarget::Netns("/run/netns/web".into());
//! let stream = dialer.connect(&pod, 8080).await?;
//! # drop(stream);
//! # Ok(())
//! # }
//! ```

use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::pin::Pin;
use std::time::Duration;

use tokio::net::{TcpSocket, TcpStream};

use crate::objects::{Pod, PodTarget};

/// A connection being made to a pod's port.
pub type Dialing = Pin<Box<dyn Future<Output = io::Result<TcpStream>> + Send>>;

/// Connects a stream to a pod's port: what a port-forward server calls for each stream.
pub trait Dial: Send + Sync + 'static {
    /// A connection to `port` of `pod`. The error's text goes to the client on the
    /// stream's error channel, after the kubelet's `error forwarding port N to pod ...`.
    fn dial(&self, pod: &Pod, port: u16) -> Dialing;
}

/// The built-in [`Dial`]: a pod's [`PodTarget`], a host or a network namespace.
#[derive(Clone, Copy, Debug)]
pub struct TargetDialer {
    connect_timeout: Duration,
}

impl TargetDialer {
    /// A dialer giving up one connect attempt after `connect_timeout`.
    pub fn new(connect_timeout: Duration) -> Self {
        TargetDialer { connect_timeout }
    }

    /// A connection to `port` of `target`.
    ///
    /// # Errors
    ///
    /// The name does not resolve, the namespace cannot be entered, or every address
    /// refused or timed out (the last error).
    pub async fn connect(&self, target: &PodTarget, port: u16) -> io::Result<TcpStream> {
        match target {
            PodTarget::Host(host) => {
                let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
                    .await?
                    .collect();
                self.first_of(&addrs, |addr| async move {
                    let socket = match addr {
                        SocketAddr::V4(_) => TcpSocket::new_v4()?,
                        SocketAddr::V6(_) => TcpSocket::new_v6()?,
                    };
                    socket.connect(addr).await
                })
                .await
            }
            PodTarget::Netns(path) => {
                let addrs = [
                    SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
                    SocketAddr::from((Ipv6Addr::LOCALHOST, port)),
                ];
                self.first_of(&addrs, |addr| async move {
                    let socket = socket_in(path, addr).await?;
                    socket.connect(addr).await
                })
                .await
            }
        }
    }

    /// The first of `addrs` that `connect` reaches in time, or the last error.
    async fn first_of<F, Fut>(&self, addrs: &[SocketAddr], connect: F) -> io::Result<TcpStream>
    where
        F: Fn(SocketAddr) -> Fut,
        Fut: Future<Output = io::Result<TcpStream>>,
    {
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no address to connect to");
        for &addr in addrs {
            match tokio::time::timeout(self.connect_timeout, connect(addr)).await {
                Ok(Ok(stream)) => return Ok(stream),
                Ok(Err(e)) => last = e,
                Err(_) => {
                    last = io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "connecting to {addr} timed out after {:?}",
                            self.connect_timeout
                        ),
                    );
                }
            }
        }
        Err(last)
    }
}

impl Dial for TargetDialer {
    fn dial(&self, pod: &Pod, port: u16) -> Dialing {
        let (dialer, target) = (*self, pod.target.clone());
        Box::pin(async move { dialer.connect(&target, port).await })
    }
}

/// A TCP socket for `addr`'s family, created inside the network namespace at `path` on a
/// thread of its own, which enters the namespace for that alone and then ends.
async fn socket_in(path: &Path, addr: SocketAddr) -> io::Result<TcpSocket> {
    let path = path.to_owned();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("proxy-netns".into())
        .spawn(move || {
            let _ = tx.send(crate::sys::netns::tcp_socket(&path, addr));
        })?;
    let socket = rx
        .await
        .map_err(|_| io::Error::other("the namespace thread ended without a socket"))??;
    socket.set_nonblocking(true)?;
    Ok(TcpSocket::from_std_stream(socket.into()))
}
