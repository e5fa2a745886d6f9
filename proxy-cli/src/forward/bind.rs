//! Binding every mapping of a `proxy forward` on every address, a kernel-chosen port the
//! same on all of them.

use std::net::SocketAddr;

use anyhow::Context;
use std::sync::Arc;

use proxy_core::resolve::Resolve;
use proxy_core::spec::{address_in_use, ipv6_unavailable};
use proxy_core::{ForwarderHandle, Listen, Target, Transport};

use proxy_core::SAME_PORT_TRIES;

use super::{Bound, ForwardPlan, Mapping, PortSpec};
use crate::args::{UsageError, forward::BindAddr, invalid};
use crate::registry::Protocol;

/// What serves one bound socket: the address it got, and how its bind errors read.
pub(super) trait Listening {
    /// A failure to bind.
    type Error: std::error::Error + Send + Sync + 'static;
    /// The address bound.
    fn local_addr(&self) -> SocketAddr;
    /// The address is in use.
    fn in_use(e: &Self::Error) -> bool;
    /// The address family is not available on this host (IPv6 off).
    fn family_unavailable(e: &Self::Error) -> bool;
}

impl Listening for ForwarderHandle {
    type Error = proxy_core::Error;

    fn local_addr(&self) -> SocketAddr {
        self.local_addrs()[0]
    }

    fn in_use(e: &Self::Error) -> bool {
        address_in_use(e)
    }

    fn family_unavailable(e: &Self::Error) -> bool {
        ipv6_unavailable(e)
    }
}

impl Listening for std::net::TcpListener {
    type Error = std::io::Error;

    fn local_addr(&self) -> SocketAddr {
        std::net::TcpListener::local_addr(self).unwrap_or_else(|_| ([0, 0, 0, 0], 0).into())
    }

    fn in_use(e: &Self::Error) -> bool {
        e.kind() == std::io::ErrorKind::AddrInUse
    }

    fn family_unavailable(e: &Self::Error) -> bool {
        e.kind() == std::io::ErrorKind::AddrNotAvailable
            || e.raw_os_error() == Some(libc::EAFNOSUPPORT)
    }
}

/// Starts what serves mapping `m` on `listen`; the outer error is a settings error.
type Start<'s, H> =
    dyn FnMut(Mapping, SocketAddr) -> Result<Result<H, <H as Listening>::Error>, UsageError> + 's;

/// Binds every mapping on every address.
pub(super) struct Binder<'s, H: Listening> {
    /// The addresses still in use: an optional one is dropped when its family is missing.
    addrs: Vec<BindAddr>,
    /// Sockets on kernel-chosen ports that another address could not have; kept bound
    /// until binding is over, so the kernel does not hand out the same port again.
    passed_over: Vec<H>,
    start: &'s mut Start<'s, H>,
}

impl<'s, H: Listening> Binder<'s, H> {
    pub(super) fn new(addrs: Vec<BindAddr>, start: &'s mut Start<'s, H>) -> Self {
        Binder {
            addrs,
            passed_over: Vec::new(),
            start,
        }
    }

    /// What was bound and passed over, to be closed once binding is over.
    pub(super) fn into_passed_over(self) -> Vec<H> {
        self.passed_over
    }

    /// Every mapping (with the index of its SPEC in `specs`) on every address, in order,
    /// then address order. On an error, nothing stays bound.
    pub(super) fn bind_all(
        &mut self,
        specs: &[PortSpec],
        mappings: &[(usize, Mapping)],
    ) -> anyhow::Result<Vec<Bound<H>>> {
        let mut bound = Vec::new();
        for (slot, &(index, mapping)) in mappings.iter().enumerate() {
            let handles = self
                .bind(mapping)
                .with_context(|| format!("SPEC '{}'", specs[index].token()))?;
            bound.extend(handles.into_iter().map(|(addr, handle)| Bound {
                spec: index,
                slot,
                mapping,
                addr,
                handle,
            }));
        }
        Ok(bound)
    }

    /// One mapping on every address, on the same port.
    fn bind(&mut self, m: Mapping) -> anyhow::Result<Vec<(SocketAddr, H)>> {
        for attempt in 1..=SAME_PORT_TRIES {
            let mut out: Vec<(SocketAddr, H)> = Vec::new();
            let mut port = m.local;
            let mut i = 0;
            let mut retry = false;
            while i < self.addrs.len() {
                let addr = self.addrs[i];
                match (self.start)(m, SocketAddr::new(addr.ip, port))? {
                    Ok(handle) => {
                        let local = handle.local_addr();
                        port = local.port();
                        out.push((local, handle));
                        i += 1;
                    }
                    Err(e) if addr.optional && H::family_unavailable(&e) => {
                        tracing::debug!(
                            error = %e,
                            cause = %source_of(&e),
                            "{} is not available on this host; not listening on it",
                            addr.ip
                        );
                        self.addrs.remove(i);
                    }
                    Err(e)
                        if m.local == 0
                            && !out.is_empty()
                            && H::in_use(&e)
                            && attempt < SAME_PORT_TRIES =>
                    {
                        tracing::warn!(
                            error = %e,
                            cause = %source_of(&e),
                            "the port {port} the kernel chose on {} is taken on {}; trying \
                             another port (attempt {} of {SAME_PORT_TRIES})",
                            out[0].0.ip(),
                            addr.ip,
                            attempt + 1,
                        );
                        self.passed_over.extend(out.drain(..).map(|(_, h)| h));
                        retry = true;
                        break;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            if retry {
                continue;
            }
            if out.is_empty() {
                anyhow::bail!(
                    "cannot listen on localhost: neither 127.0.0.1 nor ::1 is available on \
                     this host; give --address"
                );
            }
            return Ok(out);
        }
        unreachable!("the last attempt returns")
    }
}

/// Starts one core forwarder of `plan` for `m` on `listen`; the outer error is a settings
/// error.
pub(super) fn start_forwarder(
    plan: &ForwardPlan,
    resolver: &Arc<dyn Resolve>,
    m: Mapping,
    listen: SocketAddr,
) -> Result<Result<ForwarderHandle, proxy_core::Error>, UsageError> {
    let mut spec = plan.settings.clone();
    spec.target = Some(Target::new(plan.host.clone(), m.remote));
    spec.listen = Listen::Addrs(vec![listen]);
    let resolver = resolver.clone();
    Ok(match m.protocol {
        Protocol::Tcp => {
            spec.protocol = Transport::Tcp;
            spec.tcp_forwarder(resolver).map_err(invalid)?.start()
        }
        Protocol::Udp => {
            spec.protocol = Transport::Udp;
            spec.udp_forwarder(resolver).map_err(invalid)?.start()
        }
    })
}

/// The cause under `e`, for the logs.
fn source_of(e: &dyn std::error::Error) -> String {
    e.source().map(ToString::to_string).unwrap_or_default()
}
