//! Building and starting forwarders from the command line's and the file's plans: the
//! resolver a target needs, the library's checks as usage errors, TCP and UDP on one
//! port, the IPv4 fallback on hosts without IPv6, and reading bind errors.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use proxy_core::resolve::{HickoryResolver, Resolve, ResolverKind, SystemResolver};
use proxy_core::{
    ErrorKind, ForwarderHandle, SamePortError, Target, TcpForwarder, UdpForwarder, start_same_port,
};

use crate::args::{Listen, ResolverArg, TcpPlan, UdpPlan, UsageError};

/// TCP and UDP on the same port ([`start_same_port`], which searches when the kernel
/// chooses it); where they listen on every address and the host has no IPv6, on IPv4.
pub(crate) fn start_both(
    tcp: &TcpForwarder,
    udp: &UdpForwarder,
    listen: &Listen,
) -> anyhow::Result<(ForwarderHandle, ForwarderHandle)> {
    // The messages name the protocol that failed: `TCP: failed to bind ...`.
    let named =
        |e: SamePortError| anyhow::Error::from(e.error).context(if e.tcp { "TCP" } else { "UDP" });
    match start_same_port(tcp, udp) {
        Ok(pair) => Ok(pair),
        Err(e) => match listen.ipv4_fallback() {
            Some(v4) if e.tcp && ipv6_unavailable(&e.error) => {
                tracing::warn!(
                    error = %e.error,
                    cause = %source_of(&e.error),
                    "IPv6 is not available; listening on IPv4 only"
                );
                start_same_port(&tcp.with_listen(v4)?, udp).map_err(named)
            }
            _ => Err(named(e)),
        },
    }
}

pub(crate) fn resolver(target: &Target, which: ResolverArg) -> anyhow::Result<Arc<dyn Resolve>> {
    let chosen = match which {
        ResolverArg::System => ResolverKind::System,
        ResolverArg::Hickory => ResolverKind::Hickory,
    };
    // IP literal targets never ask the resolver: do not fail on a missing resolv.conf.
    // SRV targets need hickory: the C library has no SRV lookup.
    match chosen.for_target(target) {
        ResolverKind::Hickory => {
            if chosen != ResolverKind::Hickory {
                tracing::debug!(target = %target, "an SRV target: resolving with hickory");
            }
            let hickory = HickoryResolver::from_system_conf()
                .context("--resolver hickory: cannot read the system DNS configuration")?;
            Ok(Arc::new(hickory))
        }
        _ => Ok(Arc::new(SystemResolver::new())),
    }
}

pub(crate) fn build_tcp(
    plan: &TcpPlan,
    listen: Vec<SocketAddr>,
    resolver: Arc<dyn Resolve>,
) -> Result<proxy_core::TcpForwarder, UsageError> {
    plan.builder(listen, resolver)
        .build()
        .map_err(|e| UsageError(format!("invalid settings: {e}")))
}

pub(crate) fn build_udp(
    plan: &UdpPlan,
    listen: Vec<SocketAddr>,
    resolver: Arc<dyn Resolve>,
) -> Result<proxy_core::UdpForwarder, UsageError> {
    plan.builder(listen, resolver)
        .build()
        .map_err(|e| UsageError(format!("invalid settings: {e}")))
}

/// The I/O error under a forwarder error.
fn io_source(e: &proxy_core::Error) -> Option<&io::Error> {
    std::error::Error::source(e).and_then(|s| s.downcast_ref::<io::Error>())
}

/// Whether binding failed because this host has no IPv6 (the kernel has it disabled or
/// has no IPv6 address to bind).
pub(crate) fn ipv6_unavailable(e: &proxy_core::Error) -> bool {
    let Some(io) = io_source(e) else {
        return false;
    };
    e.kind() == ErrorKind::Bind
        && (io.kind() == io::ErrorKind::AddrNotAvailable
            // EAFNOSUPPORT, which `std` does not map to an `io::ErrorKind`.
            || io.raw_os_error() == Some(libc::EAFNOSUPPORT))
}

pub(crate) fn source_of(e: &dyn std::error::Error) -> String {
    e.source().map(ToString::to_string).unwrap_or_default()
}
