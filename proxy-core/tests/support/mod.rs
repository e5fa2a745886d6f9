//! Helpers shared by proxy-core's integration tests that build on proxy-core itself:
//! forwarders on kernel-chosen ports, resolvers the test steers, and the kernel's UDP
//! queues. Servers, clients, payloads and bounded waits are the workspace's test kit,
//! `proxy_testkit`.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use proxy_core::resolve::{Resolution, Resolve, Resolving};
use proxy_core::{ForwarderHandle, RelayMode, Target, TcpForwarder, Timeouts};
use proxy_testkit::net::v4_any_port;
use tokio::sync::watch;

/// Every relay mode, for tests that run once per mode: the in-kernel one on Linux.
pub(crate) const MODES: &[RelayMode] = &[
    RelayMode::Auto,
    RelayMode::Copy,
    #[cfg(target_os = "linux")]
    RelayMode::Sockmap,
];

// ===== forwarders =====

/// Timeouts with the defaults, changed by `f`.
pub(crate) fn timeouts(f: impl FnOnce(&mut Timeouts)) -> Timeouts {
    let mut t = Timeouts::default();
    f(&mut t);
    t
}

/// Starts a forwarder from `127.0.0.1:0` to `target` on the current runtime.
pub(crate) fn forwarder(
    target: impl Into<Target>,
    mode: RelayMode,
    timeouts: Timeouts,
) -> ForwarderHandle {
    TcpForwarder::builder([v4_any_port()], target.into())
        .relay(mode)
        .timeouts(timeouts)
        .build()
        .expect("valid settings")
        .start()
        .expect("start the forwarder")
}

/// The forwarder's first bound address.
pub(crate) fn proxy_addr(handle: &ForwarderHandle) -> SocketAddr {
    handle.local_addrs()[0]
}

// ===== resolvers =====

/// A resolver whose answer the test changes while the forwarder runs (a Service whose
/// endpoints move). Answers carry no TTL, so the cache policy sets the refresh interval.
#[derive(Clone, Debug)]
pub(crate) struct SwitchResolver(Arc<Mutex<Vec<IpAddr>>>);

impl SwitchResolver {
    pub(crate) fn new(ips: impl IntoIterator<Item = IpAddr>) -> SwitchResolver {
        SwitchResolver(Arc::new(Mutex::new(ips.into_iter().collect())))
    }

    /// Answers `ips` from now on.
    pub(crate) fn set(&self, ips: impl IntoIterator<Item = IpAddr>) {
        *self.0.lock().unwrap() = ips.into_iter().collect();
    }
}

impl Resolve for SwitchResolver {
    fn resolve(&self, _name: &str) -> Resolving {
        let ips = self.0.lock().unwrap().clone();
        Box::pin(std::future::ready(Ok(Resolution::new(ips, None))))
    }
}

/// A resolver that answers `ip` only once the test [`open`](GatedResolver::open)s it:
/// sessions wait for their first DNS answer as long as the test likes.
#[derive(Clone, Debug)]
pub(crate) struct GatedResolver {
    ip: IpAddr,
    open: Arc<watch::Sender<bool>>,
}

impl GatedResolver {
    pub(crate) fn new(ip: IpAddr) -> GatedResolver {
        GatedResolver {
            ip,
            open: Arc::new(watch::Sender::new(false)),
        }
    }

    /// Lets every lookup, waiting or later, answer.
    pub(crate) fn open(&self) {
        self.open.send_replace(true);
    }
}

impl Resolve for GatedResolver {
    fn resolve(&self, _name: &str) -> Resolving {
        let (ip, mut open) = (self.ip, self.open.subscribe());
        Box::pin(async move {
            open.wait_for(|open| *open)
                .await
                .map_err(io::Error::other)?;
            Ok(Resolution::new(vec![ip], None))
        })
    }
}

// ===== kernel queues =====

/// Bytes waiting in the receive queue of the UDP socket bound to `addr`, as
/// `/proc/net/udp` (or `udp6`) shows them; `None` when no such socket is listed.
#[cfg(target_os = "linux")]
pub(crate) fn rx_queue(addr: SocketAddr) -> Option<u64> {
    proc_net_udp(addr).map(|(rx, _)| rx)
}

/// Datagrams the kernel dropped for the UDP socket bound to `addr` (its receive buffer
/// was full), as `/proc/net/udp` (or `udp6`) shows them.
#[cfg(target_os = "linux")]
pub(crate) fn kernel_drops(addr: SocketAddr) -> Option<u64> {
    proc_net_udp(addr).map(|(_, drops)| drops)
}

/// The receive queue (bytes) and drop count of the UDP socket bound to `addr`'s port.
#[cfg(target_os = "linux")]
fn proc_net_udp(addr: SocketAddr) -> Option<(u64, u64)> {
    let table = if addr.is_ipv6() {
        "/proc/net/udp6"
    } else {
        "/proc/net/udp"
    };
    let text = std::fs::read_to_string(table).ok()?;
    let port = format!(":{:04X}", addr.port());
    text.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if !fields.get(1)?.ends_with(&port) {
            return None;
        }
        let rx = fields.get(4)?.split(':').nth(1)?;
        let drops = fields.last()?.parse().ok()?;
        Some((u64::from_str_radix(rx, 16).ok()?, drops))
    })
}
