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
//! UDP ports ([`Dial::dial_udp`], for this crate's UDP extension, [`crate::udp`]) are
//! reached the same ways, with a connected UDP socket: on a host, to its first address
//! (in the resolver's order) that a socket can be connected to; in a namespace, to
//! `127.0.0.1` (then `[::1]` when the namespace has no IPv4 loopback).
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

use tokio::net::{TcpSocket, TcpStream, UdpSocket};

use crate::objects::{Pod, PodTarget};

/// A connection being made to a pod's port.
pub type Dialing = Pin<Box<dyn Future<Output = io::Result<TcpStream>> + Send>>;

/// A connected UDP socket being made to a pod's port.
pub type DialingUdp = Pin<Box<dyn Future<Output = io::Result<UdpSocket>> + Send>>;

/// Connects a stream to a pod's port: what a port-forward server calls for each stream.
pub trait Dial: Send + Sync + 'static {
    /// A connection to `port` of `pod`. The error's text goes to the client on the
    /// stream's error channel, after the kubelet's `error forwarding port N to pod ...`.
    fn dial(&self, pod: &Pod, port: u16) -> Dialing;

    /// A UDP socket connected to `port` of `pod` (in the pod's network namespace, as
    /// [`dial`](Self::dial)), for a UDP stream ([`crate::udp`]). By default refused:
    /// a dialer reaches TCP ports only unless it says otherwise.
    fn dial_udp(&self, pod: &Pod, port: u16) -> DialingUdp {
        let _ = (pod, port);
        Box::pin(async {
            Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "this dialer does not reach UDP ports",
            ))
        })
    }
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

    /// A UDP socket connected to `port` of `target` (nothing is sent: a port with nothing
    /// listening is only found out at the first datagram, by the ICMP error it gets).
    ///
    /// # Errors
    ///
    /// The name does not resolve, the namespace cannot be entered, or no address can be
    /// connected to (the last error).
    pub async fn connect_udp(&self, target: &PodTarget, port: u16) -> io::Result<UdpSocket> {
        let addrs: Vec<SocketAddr> = match target {
            PodTarget::Host(host) => tokio::net::lookup_host((host.as_str(), port))
                .await?
                .collect(),
            PodTarget::Netns(_) => vec![
                SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
                SocketAddr::from((Ipv6Addr::LOCALHOST, port)),
            ],
        };
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no address to connect to");
        for addr in addrs {
            let socket = match target {
                PodTarget::Host(_) => {
                    let unspecified: SocketAddr = match addr {
                        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
                        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
                    };
                    UdpSocket::bind(unspecified).await
                }
                PodTarget::Netns(path) => udp_socket_in(path, addr).await,
            };
            let connected = match socket {
                Ok(socket) => socket.connect(addr).await.map(|()| socket),
                Err(e) => Err(e),
            };
            match connected {
                Ok(socket) => return Ok(socket),
                Err(e) => last = e,
            }
        }
        Err(last)
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

    fn dial_udp(&self, pod: &Pod, port: u16) -> DialingUdp {
        let (dialer, target) = (*self, pod.target.clone());
        Box::pin(async move { dialer.connect_udp(&target, port).await })
    }
}

/// A TCP socket for `addr`'s family, created inside the network namespace at `path` on a
/// thread of its own, which enters the namespace for that alone and then ends.
async fn socket_in(path: &Path, addr: SocketAddr) -> io::Result<TcpSocket> {
    let socket = on_netns_thread(path, addr, crate::sys::netns::tcp_socket).await?;
    Ok(TcpSocket::from_std_stream(socket.into()))
}

/// A UDP socket for `addr`'s family, created inside the network namespace at `path` as
/// [`socket_in`] does, bound to an ephemeral port there.
async fn udp_socket_in(path: &Path, addr: SocketAddr) -> io::Result<UdpSocket> {
    let socket = on_netns_thread(path, addr, crate::sys::netns::udp_socket).await?;
    UdpSocket::from_std(socket.into())
}

/// Runs `make` on a thread of its own (which it may move into a namespace, and which ends
/// right after), and returns its socket, non-blocking.
async fn on_netns_thread(
    path: &Path,
    addr: SocketAddr,
    make: fn(&Path, SocketAddr) -> io::Result<socket2::Socket>,
) -> io::Result<socket2::Socket> {
    let path = path.to_owned();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("proxy-netns".into())
        .spawn(move || {
            let _ = tx.send(make(&path, addr));
        })?;
    let socket = rx
        .await
        .map_err(|_| io::Error::other("the namespace thread ended without a socket"))??;
    socket.set_nonblocking(true)?;
    Ok(socket)
}
