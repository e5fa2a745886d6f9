//! Starting a [`ForwardSpec`]: the resolver its target needs, TCP, UDP or both on one
//! port (port 0 included), the IPv4 fallback on hosts without IPv6, and sockets
//! inherited from systemd as another input of the same path.

use std::fmt;
use std::io;
use std::sync::Arc;

use super::{ForwardSpec, Transport};
use crate::resolve::Resolve;
use crate::same_port::{SamePortError, start_same_port};
use crate::{BuildError, Error, ErrorKind, ForwarderHandle, TcpForwarder, UdpForwarder};

/// A started spec: a handle per transport it serves.
#[derive(Debug)]
pub struct Running {
    /// The TCP forwarder, when the spec serves TCP.
    pub tcp: Option<ForwarderHandle>,
    /// The UDP forwarder, when the spec serves UDP.
    pub udp: Option<ForwarderHandle>,
}

impl Running {
    /// The handles, TCP first.
    pub fn handles(&self) -> impl Iterator<Item = &ForwarderHandle> {
        self.tcp.iter().chain(self.udp.iter())
    }

    /// Stops accepting and lets open connections and sessions finish for `drain`, both
    /// transports at once.
    pub async fn shutdown(self, drain: std::time::Duration) {
        let tcp = async {
            if let Some(h) = self.tcp {
                h.shutdown(drain).await;
            }
        };
        let udp = async {
            if let Some(h) = self.udp {
                h.shutdown(drain).await;
            }
        };
        tokio::join!(tcp, udp);
    }
}

/// Sockets bound elsewhere (systemd's socket activation), to forward from instead of
/// binding the spec's listen addresses.
#[derive(Debug, Default)]
pub struct Inherited {
    /// Listening TCP sockets.
    pub tcp: Vec<std::net::TcpListener>,
    /// Bound UDP sockets.
    pub udp: Vec<std::net::UdpSocket>,
}

impl Inherited {
    /// Whether there is no socket at all.
    pub fn is_empty(&self) -> bool {
        self.tcp.is_empty() && self.udp.is_empty()
    }
}

/// Why a spec did not start. Nothing stays bound then.
#[derive(Debug)]
pub enum StartError {
    /// A setting is invalid; [`BuildError::key`] names it.
    Invalid(BuildError),
    /// The resolver cannot be set up (hickory cannot read the system DNS configuration).
    Resolver(io::Error),
    /// A transport could not start (a listen address cannot be bound, ...).
    Start {
        /// Which transport.
        transport: Transport,
        /// Why.
        error: Error,
    },
    /// Inherited sockets do not match the spec's transports.
    Inherited(&'static str),
    /// The spec is an HTTP forward, which the `proxy-http` crate starts.
    Http,
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Invalid(e) => write!(f, "invalid settings: {e}"),
            StartError::Resolver(_) => {
                f.write_str("resolver: cannot read the system DNS configuration")
            }
            StartError::Start { transport, error } => {
                write!(f, "{}: {error}", transport.as_str().to_uppercase())
            }
            StartError::Inherited(why) => f.write_str(why),
            StartError::Http => {
                f.write_str("an HTTP forward is started by the HTTP layer (proxy-http)")
            }
        }
    }
}

impl std::error::Error for StartError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StartError::Invalid(e) => Some(e),
            StartError::Resolver(e) => Some(e),
            StartError::Start { error, .. } => Some(error),
            StartError::Inherited(_) | StartError::Http => None,
        }
    }
}

impl From<BuildError> for StartError {
    fn from(e: BuildError) -> Self {
        StartError::Invalid(e)
    }
}

impl ForwardSpec {
    /// A listening TCP socket on `addr` with these listen options (`reuse_port`,
    /// `dual_stack`, `backlog`), for layers that accept connections of their own.
    ///
    /// # Errors
    ///
    /// The address cannot be bound.
    ///
    /// # Panics
    ///
    /// When called outside a tokio runtime.
    pub fn tcp_listener(&self, addr: std::net::SocketAddr) -> io::Result<tokio::net::TcpListener> {
        crate::listen::tcp(addr, &self.listen_options())
    }

    /// A TCP forwarder with these settings, resolving through `resolver` (see
    /// [`make_resolver`](ForwardSpec::make_resolver)).
    ///
    /// # Errors
    ///
    /// The first invalid setting.
    pub fn tcp_forwarder(&self, resolver: Arc<dyn Resolve>) -> Result<TcpForwarder, BuildError> {
        crate::TcpForwarderBuilder::from_spec(self.clone(), resolver).build()
    }

    /// A UDP forwarder with these settings, resolving through `resolver`.
    ///
    /// # Errors
    ///
    /// The first invalid setting.
    pub fn udp_forwarder(&self, resolver: Arc<dyn Resolve>) -> Result<UdpForwarder, BuildError> {
        crate::UdpForwarderBuilder::from_spec(self.clone(), resolver).build()
    }

    /// Validates the spec, sets up its resolver and starts every transport it serves on
    /// the current tokio runtime. TCP and UDP together listen on the same port, also one
    /// the kernel chooses ([`start_same_port`]); `listen` as a bare port on a host without
    /// IPv6 listens on `0.0.0.0` (with a warning).
    ///
    /// # Errors
    ///
    /// A [`StartError`]; nothing stays bound then.
    ///
    /// # Panics
    ///
    /// When called outside a tokio runtime.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use proxy_core::ForwardSpec;
    ///
    /// # #[tokio::main]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let mut spec = ForwardSpec::default();
    /// spec.set("protocol", "tcp,udp")?;
    /// spec.set("listen", "127.0.0.1:0")?;
    /// spec.set("target", "10.96.0.10:53")?;
    /// let running = spec.start()?;
    /// let (tcp, udp) = (running.tcp.as_ref().unwrap(), running.udp.as_ref().unwrap());
    /// assert_eq!(tcp.local_addrs(), udp.local_addrs());
    /// running.shutdown(std::time::Duration::from_secs(5)).await;
    /// # Ok(())
    /// # }
    /// ```
    pub fn start(&self) -> Result<Running, StartError> {
        self.validate()?;
        let resolver = self.make_resolver().map_err(StartError::Resolver)?;
        self.start_with(resolver)
    }

    /// [`start`](ForwardSpec::start) with a resolver of the caller's.
    ///
    /// # Errors
    ///
    /// A [`StartError`]; nothing stays bound then.
    pub fn start_with(&self, resolver: Arc<dyn Resolve>) -> Result<Running, StartError> {
        if self.protocol == Transport::Http {
            return Err(StartError::Http);
        }
        let tcp = self
            .protocol
            .tcp()
            .then(|| self.tcp_forwarder(resolver.clone()))
            .transpose()?;
        let udp = self
            .protocol
            .udp()
            .then(|| self.udp_forwarder(resolver))
            .transpose()?;
        let fallback = self.listen.ipv4_fallback();
        match (tcp, udp) {
            (Some(tcp), Some(udp)) => {
                let (tcp, udp) = match start_same_port(&tcp, &udp) {
                    Err(e) if e.tcp && fallback.is_some() && ipv6_unavailable(&e.error) => {
                        warn_ipv4_only(&e.error);
                        let v4 = tcp.with_listen(fallback.unwrap_or_default())?;
                        start_same_port(&v4, &udp)
                    }
                    started => started,
                }
                .map_err(|e: SamePortError| StartError::Start {
                    transport: if e.tcp {
                        Transport::Tcp
                    } else {
                        Transport::Udp
                    },
                    error: e.error,
                })?;
                Ok(Running {
                    tcp: Some(tcp),
                    udp: Some(udp),
                })
            }
            (Some(tcp), None) => {
                let handle = with_fallback(tcp.start(), fallback, |v4| {
                    tcp.with_listen(v4).map(|f| f.start())
                })
                .map_err(|e| start_error(Transport::Tcp, e))?;
                Ok(Running {
                    tcp: Some(handle),
                    udp: None,
                })
            }
            (None, Some(udp)) => {
                let handle = with_fallback(udp.start(), fallback, |v4| {
                    udp.with_listen(v4).map(|f| f.start())
                })
                .map_err(|e| start_error(Transport::Udp, e))?;
                Ok(Running {
                    tcp: None,
                    udp: Some(handle),
                })
            }
            (None, None) => unreachable!("a spec serves TCP, UDP or both"),
        }
    }

    /// Starts forwarding from sockets bound elsewhere (systemd's), instead of the
    /// spec's listen addresses: the TCP listeners for TCP, the UDP sockets for UDP.
    ///
    /// # Errors
    ///
    /// [`StartError::Inherited`] when a transport the spec serves got no socket or one
    /// it does not serve got some; else as [`start`](ForwardSpec::start).
    pub fn start_from(&self, inherited: Inherited) -> Result<Running, StartError> {
        let mut spec = self.clone();
        // The sockets stand for the listen addresses.
        let first = (inherited.tcp.first().and_then(|l| l.local_addr().ok()))
            .or_else(|| inherited.udp.first().and_then(|s| s.local_addr().ok()));
        if let Some(addr) = first {
            spec.listen = super::Listen::Addrs(vec![addr]);
        }
        spec.validate()?;
        if self.protocol == Transport::Http {
            return Err(StartError::Http);
        }
        match (self.protocol.tcp(), inherited.tcp.is_empty()) {
            (true, true) => return Err(StartError::Inherited("no inherited TCP listener")),
            (false, false) => {
                return Err(StartError::Inherited(
                    "inherited TCP listeners, but the forward serves UDP only",
                ));
            }
            _ => {}
        }
        match (self.protocol.udp(), inherited.udp.is_empty()) {
            (true, true) => return Err(StartError::Inherited("no inherited UDP socket")),
            (false, false) => {
                return Err(StartError::Inherited(
                    "inherited UDP sockets, but the forward serves TCP only",
                ));
            }
            _ => {}
        }
        let resolver = spec.make_resolver().map_err(StartError::Resolver)?;
        let tcp = match self.protocol.tcp() {
            true => Some(
                spec.tcp_forwarder(resolver.clone())?
                    .start_from(inherited.tcp)
                    .map_err(|e| start_error(Transport::Tcp, e))?,
            ),
            false => None,
        };
        let udp = match self.protocol.udp() {
            true => Some(
                spec.udp_forwarder(resolver)?
                    .start_from(inherited.udp)
                    .map_err(|e| start_error(Transport::Udp, e))?,
            ),
            false => None,
        };
        Ok(Running { tcp, udp })
    }
}

fn start_error(transport: Transport, error: Error) -> StartError {
    StartError::Start { transport, error }
}

/// `started`, or when it failed because this host has no IPv6 and there is an IPv4
/// `fallback`, what `again` starts there.
fn with_fallback(
    started: Result<ForwarderHandle, Error>,
    fallback: Option<Vec<std::net::SocketAddr>>,
    again: impl FnOnce(Vec<std::net::SocketAddr>) -> Result<Result<ForwarderHandle, Error>, BuildError>,
) -> Result<ForwarderHandle, Error> {
    match (started, fallback) {
        (Err(e), Some(v4)) if ipv6_unavailable(&e) => {
            warn_ipv4_only(&e);
            match again(v4) {
                Ok(started) => started,
                // The same settings on other addresses: only the addresses could be bad.
                Err(_) => Err(e),
            }
        }
        (started, _) => started,
    }
}

fn warn_ipv4_only(e: &Error) {
    tracing::warn!(
        error = %e,
        cause = %std::error::Error::source(e).map(ToString::to_string).unwrap_or_default(),
        "IPv6 is not available; listening on IPv4 only"
    );
}

/// The I/O error under a forwarder error.
fn io_source(e: &Error) -> Option<&io::Error> {
    std::error::Error::source(e).and_then(|s| s.downcast_ref::<io::Error>())
}

/// Whether binding failed because the address is taken.
pub fn address_in_use(e: &Error) -> bool {
    e.kind() == ErrorKind::Bind
        && io_source(e).is_some_and(|io| io.kind() == io::ErrorKind::AddrInUse)
}

/// Whether binding failed because this host has no IPv6 (the kernel has it disabled or
/// has no IPv6 address to bind).
pub fn ipv6_unavailable(e: &Error) -> bool {
    let Some(io) = io_source(e) else {
        return false;
    };
    e.kind() == ErrorKind::Bind
        && (io.kind() == io::ErrorKind::AddrNotAvailable
            // EAFNOSUPPORT, which `std` does not map to an `io::ErrorKind`.
            || io.raw_os_error() == Some(EAFNOSUPPORT_LINUX))
}

/// EAFNOSUPPORT, where `libc` is a dependency.
#[cfg(target_os = "linux")]
const EAFNOSUPPORT_LINUX: i32 = libc::EAFNOSUPPORT;
#[cfg(not(target_os = "linux"))]
const EAFNOSUPPORT_LINUX: i32 = i32::MIN;
