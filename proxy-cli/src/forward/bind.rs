//! Binding every mapping of a `proxy forward` on every address, a kernel-chosen port the
//! same on all of them.

use std::net::SocketAddr;

use anyhow::Context;
use std::sync::Arc;

use proxy_core::resolve::Resolve;
use proxy_core::spec::{address_in_use, ipv6_unavailable};
use proxy_core::{ForwarderHandle, Listen, Target, Transport};

use proxy_core::SAME_PORT_TRIES;

use super::{Bound, ForwardPlan, Mapping};
use crate::args::{UsageError, forward::BindAddr, invalid};
use crate::registry::Protocol;

/// Binds every mapping of a plan on every address.
pub(super) struct Binder<'a> {
    pub(super) plan: &'a ForwardPlan,
    pub(super) resolver: Arc<dyn Resolve>,
    /// The addresses still in use: an optional one is dropped when its family is missing.
    pub(super) addrs: Vec<BindAddr>,
    /// Forwarders on kernel-chosen ports that another address could not have; kept bound
    /// until binding is over, so the kernel does not hand out the same port again.
    pub(super) passed_over: Vec<ForwarderHandle>,
}

impl Binder<'_> {
    /// Every mapping on every address, in SPEC order, then mapping order, then address
    /// order. On an error, nothing stays bound.
    pub(super) fn bind_all(&mut self) -> anyhow::Result<Vec<Bound>> {
        let mut bound = Vec::new();
        let plan = self.plan;
        let mut slot = 0;
        for (index, spec) in plan.specs.iter().enumerate() {
            for mapping in spec.mappings() {
                let handles = self
                    .bind(mapping)
                    .with_context(|| format!("SPEC '{}'", spec.token()))?;
                bound.extend(handles.into_iter().map(|(addr, handle)| Bound {
                    spec: index,
                    slot,
                    mapping,
                    addr,
                    handle,
                }));
                slot += 1;
            }
        }
        Ok(bound)
    }

    /// One mapping on every address, on the same port.
    fn bind(&mut self, m: Mapping) -> anyhow::Result<Vec<(SocketAddr, ForwarderHandle)>> {
        for attempt in 1..=SAME_PORT_TRIES {
            let mut out: Vec<(SocketAddr, ForwarderHandle)> = Vec::new();
            let mut port = m.local;
            let mut i = 0;
            let mut retry = false;
            while i < self.addrs.len() {
                let addr = self.addrs[i];
                match self.start(m, SocketAddr::new(addr.ip, port))? {
                    Ok(handle) => {
                        let local = handle.local_addrs()[0];
                        port = local.port();
                        out.push((local, handle));
                        i += 1;
                    }
                    Err(e) if addr.optional && ipv6_unavailable(&e) => {
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
                            && address_in_use(&e)
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

    /// Starts one forwarder for `m` on `listen`; the outer error is a settings error.
    fn start(
        &self,
        m: Mapping,
        listen: SocketAddr,
    ) -> Result<Result<ForwarderHandle, proxy_core::Error>, UsageError> {
        let mut spec = self.plan.settings.clone();
        spec.target = Some(Target::new(self.plan.host.clone(), m.remote));
        spec.listen = Listen::Addrs(vec![listen]);
        let resolver = self.resolver.clone();
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
}

/// The cause under `e`, for the logs.
fn source_of(e: &dyn std::error::Error) -> String {
    e.source().map(ToString::to_string).unwrap_or_default()
}
