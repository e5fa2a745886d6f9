//! `proxy_forwarder`: a running forwarder on threads of its own, and its stats.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use proxy_core::resolve::Resolve;
use proxy_core::spec::StartError;
use proxy_core::{
    EndpointStats, ForwardSpec, ForwarderHandle, Host, StatsReader, StatsSnapshot, Target,
    TcpForwarder, Transport, UdpForwarder,
};
use tokio::runtime::Runtime;

use crate::config::{Config, proxy_config};
use crate::handle::{
    Castable, OwnershipBox, U64Fields, copy_c_string, copy_u64_fields, free_box, out,
    to_boxed_mut_ptr, try_ref, u64_fields_out,
};
use crate::panic::ffi_panic_boundary;
use crate::resolve::CallbackResolver;
use crate::status::{Failure, proxy_status};

/// A running forwarder: listening sockets, connections and sessions, served by a runtime
/// with threads of its own (named `proxy-ffi-N`). Forwarders share nothing: several may
/// run in one process, and each is started and freed on its own.
///
/// Made by `proxy_forwarder_start`, stopped by `proxy_forwarder_shutdown` (gracefully) or
/// `proxy_forwarder_free` (at once), and always freed with `proxy_forwarder_free`.
///
/// Thread safety: every function but `proxy_forwarder_free` may be called from any thread,
/// also concurrently on the same forwarder (reloads and shutdowns take turns; stats and
/// addresses can be read during either). `proxy_forwarder_free` must be the last call,
/// made when no other call on the forwarder is in progress.
pub struct proxy_forwarder {
    _private: [u8; 0],
}

impl Castable for proxy_forwarder {
    type Ownership = OwnershipBox;
    type RustType = Forwarder;
}

/// A buffer of this many bytes holds any address `proxy_forwarder_address` writes,
/// with its NUL.
pub const PROXY_ADDRESS_BUFFER_SIZE: usize = 80;

/// A snapshot of a forwarder's counters, summed over its TCP and UDP parts. Counters
/// count from the start and carry on across reloads.
///
/// Fields are only ever added at the end, so pass `sizeof(proxy_stats)` to
/// `proxy_forwarder_stats`: a program built against an older header gets the fields it
/// knows.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct proxy_stats {
    /// TCP connections open now.
    pub connections_open: u64,
    /// TCP connections accepted since the start.
    pub connections_total: u64,
    /// Bytes relayed from clients to the upstream (TCP and UDP payload).
    pub bytes_to_upstream: u64,
    /// Bytes relayed from the upstream to clients (TCP and UDP payload).
    pub bytes_to_downstream: u64,
    /// Of the TCP bytes relayed, those moved by `splice(2)` without a copy.
    pub bytes_spliced: u64,
    /// TCP relay directions that fell back from splice to copying.
    pub splice_fallbacks: u64,
    /// Connect attempts the upstream refused.
    pub connect_refused: u64,
    /// Connect attempts that found no route to the upstream.
    pub connect_unreachable: u64,
    /// Connect attempts that timed out.
    pub connect_timeout: u64,
    /// Connect attempts that failed otherwise.
    pub connect_other: u64,
    /// TCP connections closed because no upstream address could be reached or resolved.
    pub upstream_unavailable: u64,
    /// Successful lookups of the upstream name.
    pub resolve_refreshes: u64,
    /// Failed lookups of the upstream name (the last good answer was kept).
    pub resolve_failures: u64,
    /// Errors from `accept(2)`, such as running out of file descriptors.
    pub accept_errors: u64,
    /// UDP sessions open now.
    pub udp_sessions_open: u64,
    /// UDP sessions created since the start.
    pub udp_sessions_total: u64,
    /// UDP sessions ended early because the session table was full.
    pub udp_sessions_evicted: u64,
    /// Datagrams relayed from clients to the upstream.
    pub udp_datagrams_to_upstream: u64,
    /// Datagrams relayed from the upstream to clients.
    pub udp_datagrams_to_downstream: u64,
    /// Datagrams dropped (a full send buffer, no upstream reachable, too many queued for a
    /// new session).
    pub udp_dropped: u64,
    /// Datagrams that arrived truncated; dropped.
    pub udp_truncated: u64,
    /// ICMP port-unreachable reports from the upstream.
    pub udp_upstream_refused: u64,
    /// TCP connections reset and UDP datagrams dropped by `PROXY_LIMIT_MAX_CONNECTIONS`.
    pub limited_connections: u64,
    /// TCP connections reset and UDP datagrams dropped by `PROXY_LIMIT_MAX_PER_SOURCE`.
    pub limited_per_source: u64,
    /// TCP connections reset and UDP datagrams dropped by `PROXY_LIMIT_ACCEPT_RATE`.
    pub limited_rate: u64,
    /// Times an upstream address was ejected (skipped for a while) after failing again and
    /// again. Ejection is off unless configured.
    pub ejections: u64,
    /// TCP connections and UDP sessions refused at once because every upstream address
    /// was ejected (also counted in `upstream_unavailable`).
    pub all_ejected: u64,
    /// TCP connections from trusted peers closed for a missing, malformed or late PROXY
    /// protocol header (accepting PROXY headers is off unless configured).
    pub proxy_headers_rejected: u64,
    /// TCP connections reset and UDP datagrams dropped because the access rules do not
    /// permit their client (every client is permitted unless configured).
    pub denied: u64,
}

// SAFETY: `proxy_stats` is `#[repr(C)]` and every field is a `u64`.
unsafe impl U64Fields for proxy_stats {}

/// How one upstream address has fared, summed over the forwarder's TCP and UDP parts:
/// what `proxy_forwarder_endpoint` copies out. Every address of the target's current DNS
/// answer that has been tried has one, and so has one that left the answer, until it has
/// been missing from a few answers in a row with nothing open on it.
///
/// Fields are only ever added at the end, as in `proxy_stats`: pass
/// `sizeof(proxy_endpoint_stats)`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct proxy_endpoint_stats {
    /// Successful connects (TCP) and sessions set up (UDP).
    pub connects: u64,
    /// Failed connects (TCP) and ICMP port-unreachable reports (UDP).
    pub failures: u64,
    /// Failures since the last success (the larger of TCP's and UDP's).
    pub consecutive_failures: u64,
    /// Times the address was ejected for failing (ejection is off unless configured).
    pub ejections: u64,
    /// 1 while health checks mark the address down, else 0 (health checks are off unless
    /// configured).
    pub checked_down: u64,
}

// SAFETY: `proxy_endpoint_stats` is `#[repr(C)]` and every field is a `u64`.
unsafe impl U64Fields for proxy_endpoint_stats {}

impl From<&EndpointStats> for proxy_endpoint_stats {
    fn from(e: &EndpointStats) -> Self {
        proxy_endpoint_stats {
            connects: e.connects,
            failures: e.failures,
            consecutive_failures: e.consecutive_failures,
            ejections: e.ejections,
            checked_down: e.checked_down.into(),
        }
    }
}

impl proxy_stats {
    /// Adds `s` to these counters.
    fn add(&mut self, s: &StatsSnapshot) {
        let c = &s.connect_failures;
        let u = &s.udp;
        let pairs = [
            (&mut self.connections_open, s.connections_open),
            (&mut self.connections_total, s.connections_total),
            (&mut self.bytes_to_upstream, s.bytes_to_upstream),
            (&mut self.bytes_to_downstream, s.bytes_to_downstream),
            (&mut self.bytes_spliced, s.bytes_spliced),
            (&mut self.splice_fallbacks, s.splice_fallbacks),
            (&mut self.connect_refused, c.refused),
            (&mut self.connect_unreachable, c.unreachable),
            (&mut self.connect_timeout, c.timeout),
            (&mut self.connect_other, c.other),
            (&mut self.upstream_unavailable, s.upstream_unavailable),
            (&mut self.resolve_refreshes, s.resolve_refreshes),
            (&mut self.resolve_failures, s.resolve_failures),
            (&mut self.accept_errors, s.accept_errors),
            (&mut self.udp_sessions_open, u.sessions_open),
            (&mut self.udp_sessions_total, u.sessions_total),
            (&mut self.udp_sessions_evicted, u.sessions_evicted),
            (&mut self.udp_datagrams_to_upstream, u.datagrams_to_upstream),
            (
                &mut self.udp_datagrams_to_downstream,
                u.datagrams_to_downstream,
            ),
            (&mut self.udp_dropped, u.dropped),
            (&mut self.udp_truncated, u.truncated),
            (&mut self.udp_upstream_refused, u.upstream_refused),
            (&mut self.limited_connections, s.limited.connections),
            (&mut self.limited_per_source, s.limited.per_source),
            (&mut self.limited_rate, s.limited.rate),
            (&mut self.ejections, s.ejections),
            (&mut self.all_ejected, s.all_ejected),
            (&mut self.proxy_headers_rejected, s.proxy_headers_rejected),
            (&mut self.denied, s.denied),
        ];
        for (field, value) in pairs {
            *field = field.saturating_add(value);
        }
    }
}

/// What a `proxy_forwarder` holds.
///
/// Fields drop in order: the running handles first (which stops every listener and
/// connection), then the runtime, whose drop waits for its threads, including a resolver
/// callback in progress.
#[derive(Debug)]
pub(crate) struct Forwarder {
    transport: Transport,
    /// `None` once shut down. Held for the length of a reload or shutdown.
    running: Mutex<Option<Running>>,
    /// The bound addresses, readable while a reload runs.
    addrs: Mutex<Vec<SocketAddr>>,
    /// The TCP and UDP parts' counters; they outlive a shutdown.
    stats: Vec<StatsReader>,
    runtime: Runtime,
}

// The header lets every function but `_free` run on any thread, concurrently.
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<Forwarder>();
};

/// The running parts, each with the settings it runs with (a `BOTH` reload that fails
/// half-way goes back to them).
#[derive(Debug, Default)]
struct Running {
    tcp: Option<(ForwarderHandle, TcpForwarder)>,
    udp: Option<(ForwarderHandle, UdpForwarder)>,
}

/// The forwarders a config describes, built (validated) but not started.
struct Planned {
    tcp: Option<TcpForwarder>,
    udp: Option<UdpForwarder>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock was reported as PROXY_STATUS_PANIC; what it guarded
    // is still consistent enough to stop and free.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn transport_name(p: Transport) -> &'static str {
    match p {
        Transport::Tcp => "TCP",
        Transport::Udp => "UDP",
        Transport::Both => "TCP and UDP",
    }
}

/// The runtime of one forwarder.
fn runtime(threads: usize) -> Result<Runtime, Failure> {
    let n = Arc::new(AtomicUsize::new(0));
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name_fn(move || format!("proxy-ffi-{}", n.fetch_add(1, Relaxed)))
        .enable_all()
        .build()
        .map_err(|e| {
            Failure::new(
                proxy_status::Runtime,
                format!("cannot start the forwarder's threads: {e}"),
            )
        })
}

/// The resolver of `config`: its callback when set, else the one its spec asks for
/// ([`ForwardSpec::make_resolver`]: hickory for `srv:` targets and with name servers).
/// Call inside the forwarder's runtime (hickory is made here).
fn resolver(config: &Config) -> Result<Arc<dyn Resolve>, Failure> {
    let srv = matches!(
        config.spec.target.as_ref().map(Target::host),
        Some(Host::Srv(_))
    );
    match config.callback {
        Some(_) if srv => Err(Failure::setting(format!(
            "target: `{}`: a resolver callback cannot look up SRV records; use a built-in \
             resolver (proxy_config_set_resolver)",
            config
                .spec
                .target
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default()
        ))),
        Some(cb) => Ok(Arc::new(CallbackResolver(cb))),
        None => config.spec.make_resolver().map_err(|e| {
            Failure::new(
                proxy_status::Resolver,
                format!("resolver: cannot set up hickory: {e}"),
            )
        }),
    }
}

/// The listen addresses for `spec` on a forwarder bound to `bound`: the spec's, or its
/// IPv4 fallback when it listens on every address and the forwarder fell back to IPv4
/// (this host has no IPv6), as [`ForwardSpec::start_with`] does.
fn listen_for(spec: &ForwardSpec, bound: &[SocketAddr]) -> Option<Vec<SocketAddr>> {
    let v4 = spec.listen.ipv4_fallback()?;
    let fell_back =
        !bound.is_empty() && bound.iter().all(|a| a.is_ipv4() && a.ip().is_unspecified());
    fell_back.then_some(v4)
}

/// Builds the forwarders `config` describes (validated, not started), through
/// `resolver`, for a forwarder bound to `bound` (none yet: empty).
fn plan(
    config: &Config,
    resolver: Arc<dyn Resolve>,
    bound: &[SocketAddr],
) -> Result<Planned, Failure> {
    let spec = &config.spec;
    let listen = listen_for(spec, bound);
    let tcp = spec
        .protocol
        .tcp()
        .then(|| -> Result<TcpForwarder, Failure> {
            let f = spec.tcp_forwarder(resolver.clone())?;
            Ok(match &listen {
                Some(v4) => f.with_listen(v4.iter().copied())?,
                None => f,
            })
        })
        .transpose()?;
    let udp = spec
        .protocol
        .udp()
        .then(|| -> Result<UdpForwarder, Failure> {
            let f = spec.udp_forwarder(resolver.clone())?;
            Ok(match &listen {
                Some(v4) => f.with_listen(v4.iter().copied())?,
                None => f,
            })
        })
        .transpose()?;
    Ok(Planned { tcp, udp })
}

/// Why a spec did not start, as a failure.
fn start_failure(e: StartError) -> Failure {
    match e {
        StartError::Invalid(e) => e.into(),
        StartError::Resolver(e) => Failure::new(
            proxy_status::Resolver,
            format!("resolver: cannot set up hickory: {e}"),
        ),
        StartError::Start { error, .. } => error.into(),
        StartError::Inherited(why) => Failure::setting(why),
    }
}

// ===== impl Forwarder =====

impl Forwarder {
    fn start(config: &Config) -> Result<Self, Failure> {
        // Check what can be checked before starting threads.
        config.spec.validate()?;
        let runtime = runtime(config.worker_threads)?;
        let running = {
            let _entered = runtime.enter();
            let resolver = resolver(config)?;
            let started = config
                .spec
                .start_with(resolver.clone())
                .map_err(start_failure)?;
            // The settings each part runs with, for a reload to go back to.
            let bound =
                (started.handles().next()).map_or_else(Vec::new, |h| h.local_addrs().to_vec());
            let planned = plan(config, resolver, &bound)?;
            Running {
                tcp: started.tcp.zip(planned.tcp),
                udp: match (started.udp, planned.udp) {
                    // UDP listens where TCP does (on the port TCP got).
                    (Some(h), Some(f)) if config.spec.protocol.tcp() => {
                        Some((h, f.with_listen(bound.iter().copied())?))
                    }
                    (h, f) => h.zip(f),
                },
            }
        };
        let stats = (running.tcp.iter().map(|(h, _)| h.stats_reader()))
            .chain(running.udp.iter().map(|(h, _)| h.stats_reader()))
            .collect();
        Ok(Forwarder {
            transport: config.spec.protocol,
            addrs: Mutex::new(running.local_addrs()),
            running: Mutex::new(Some(running)),
            stats,
            runtime,
        })
    }

    fn reload(&self, config: &Config) -> Result<(), Failure> {
        if config.spec.protocol != self.transport {
            return Err(Failure::new(
                proxy_status::ReloadTransportMismatch,
                format!(
                    "the forwarder serves {}; the config asks for {}",
                    transport_name(self.transport),
                    transport_name(config.spec.protocol)
                ),
            ));
        }
        config.spec.validate()?;
        let mut running = lock(&self.running);
        let Some(running) = running.as_mut() else {
            return Err(not_running());
        };
        let planned = {
            let _entered = self.runtime.enter();
            plan(config, resolver(config)?, &running.local_addrs())?
        };
        let rt = &self.runtime;
        match (&mut running.tcp, &mut running.udp, planned.tcp, planned.udp) {
            (Some((tcp, old_tcp)), Some((udp, old_udp)), Some(new_tcp), Some(new_udp)) => {
                rt.block_on(tcp.reload(new_tcp.clone()))?;
                // UDP follows the ports TCP has now, as at the start.
                let new_udp = new_udp.with_listen(tcp.local_addrs().iter().copied())?;
                if let Err(e) = rt.block_on(udp.reload(new_udp.clone())) {
                    // Best effort: put TCP back on the settings UDP still has.
                    if let Err(back) = rt.block_on(tcp.reload(old_tcp.clone())) {
                        let mut f = Failure::from(e);
                        f.detail
                            .push_str(&format!("; TCP could not go back either: {back}"));
                        return Err(f);
                    }
                    return Err(e.into());
                }
                *old_tcp = new_tcp;
                *old_udp = new_udp;
            }
            (Some((tcp, old)), None, Some(new), None) => {
                rt.block_on(tcp.reload(new.clone()))?;
                *old = new;
            }
            (None, Some((udp, old)), None, Some(new)) => {
                rt.block_on(udp.reload(new.clone()))?;
                *old = new;
            }
            _ => unreachable!("the transports were compared above"),
        }
        *lock(&self.addrs) = running.local_addrs();
        Ok(())
    }

    /// Stops accepting, lets connections finish for up to `grace`, then closes the rest.
    /// Shutting down twice does nothing the second time.
    fn shutdown(&self, grace: Duration) {
        let mut running = lock(&self.running);
        let Some(Running { tcp, udp }) = running.take() else {
            return;
        };
        lock(&self.addrs).clear();
        self.runtime.block_on(async move {
            let tcp = async {
                if let Some((h, _)) = tcp {
                    h.shutdown(grace).await;
                }
            };
            let udp = async {
                if let Some((h, _)) = udp {
                    h.shutdown(grace).await;
                }
            };
            tokio::join!(tcp, udp);
        });
    }

    fn addr(&self, index: usize) -> Result<SocketAddr, Failure> {
        let addrs = lock(&self.addrs);
        addrs.get(index).copied().ok_or_else(|| {
            Failure::new(
                proxy_status::IndexOutOfRange,
                format!(
                    "address index {index}, but the forwarder has {} addresses",
                    addrs.len()
                ),
            )
        })
    }

    /// The stats of every upstream address, ordered by address; an address both TCP and
    /// UDP have is one entry with their counts added.
    fn endpoints(&self) -> Vec<EndpointStats> {
        let mut all: Vec<EndpointStats> = self.stats.iter().flat_map(|r| r.endpoints()).collect();
        all.sort_by_key(|e| e.addr);
        let mut merged: Vec<EndpointStats> = Vec::with_capacity(all.len());
        for e in all {
            match merged.last_mut() {
                Some(m) if m.addr == e.addr => {
                    m.connects = m.connects.saturating_add(e.connects);
                    m.failures = m.failures.saturating_add(e.failures);
                    m.consecutive_failures = m.consecutive_failures.max(e.consecutive_failures);
                    m.ejections = m.ejections.saturating_add(e.ejections);
                    m.checked_down |= e.checked_down;
                }
                _ => merged.push(e),
            }
        }
        merged
    }

    fn stats(&self) -> proxy_stats {
        let mut total = proxy_stats::default();
        for reader in &self.stats {
            total.add(&reader.stats());
        }
        total
    }
}

// ===== impl Running =====

impl Running {
    /// The bound addresses: TCP's, which UDP shares in a `BOTH` forwarder.
    fn local_addrs(&self) -> Vec<SocketAddr> {
        match (&self.tcp, &self.udp) {
            (Some((h, _)), _) | (None, Some((h, _))) => h.local_addrs().to_vec(),
            (None, None) => Vec::new(),
        }
    }
}

fn not_running() -> Failure {
    Failure::new(
        proxy_status::NotRunning,
        "the forwarder was shut down; free it and start a new one",
    )
}

/// Starts forwarding as `config` says, on threads of the new forwarder's own, and stores
/// the forwarder in `*out`. Returns once every listen address is bound, so connections
/// can be made as soon as it returns. Host-name targets are resolved in the background.
///
/// With `PROXY_TRANSPORT_BOTH`, TCP and UDP listen on the same ports, also ones the kernel
/// chooses (port 0). A `listen` key set to a bare port listens on every address: one
/// dual-stack `[::]` socket, or `0.0.0.0` on a host without IPv6.
///
/// Errors: `PROXY_STATUS_NULL_PARAMETER`; `PROXY_STATUS_INVALID_SETTING` for settings that
/// do not go together, the last error starting with the key at fault (`key: why`): no
/// target or listen address, a duplicate listen address, a connect timeout longer than
/// the connect budget, `accept_burst` without `accept_rate`, PROXY protocol v1 on UDP, a
/// `srv:` target with a resolver callback, ...; `PROXY_STATUS_ADDRESS_IN_USE` or
/// `PROXY_STATUS_BIND_FAILED` naming the address in the last error;
/// `PROXY_STATUS_RESOLVER`; `PROXY_STATUS_RUNTIME`. Nothing stays bound or running then,
/// and `*out` is not written.
///
/// Thread safety: may be called from any thread, also with the same config on several
/// threads at once (see `proxy_config`).
#[unsafe(no_mangle)]
pub extern "C" fn proxy_forwarder_start(
    config: *const proxy_config,
    out: *mut *mut proxy_forwarder,
) -> proxy_status {
    ffi_panic_boundary! {
        let config = try_ref(config, "config")?;
        let out = crate::handle::out(out, "out")?;
        let forwarder = Forwarder::start(config)?;
        out.write(to_boxed_mut_ptr::<proxy_forwarder>(forwarder));
        Ok(())
    }
}

/// Applies `config` to the running forwarder without dropping anything established: new
/// listen addresses are bound, ones no longer listed stop accepting (their connections go
/// on), ones in both keep their socket (an address with port 0 names the listener it
/// started, so passing the same config keeps every port). New connections and sessions
/// use the new settings (target, resolver, timers, balancing, access rules, limits, ...);
/// established ones finish with the old. Listener options (`backlog`, `reuse_port`,
/// `dual_stack`) apply to newly bound addresses only. The counters carry on. Blocks until
/// done.
///
/// In a `PROXY_TRANSPORT_BOTH` forwarder UDP follows TCP's new addresses; when UDP cannot
/// bind them, TCP goes back to its previous addresses and the error is returned.
///
/// Errors: `PROXY_STATUS_RELOAD_TRANSPORT_MISMATCH` when `config` has another transport;
/// `PROXY_STATUS_NOT_RUNNING` after `proxy_forwarder_shutdown`; the setting and bind errors
/// of `proxy_forwarder_start`. Nothing changes then.
///
/// Thread safety: may be called from any thread; reloads and shutdowns of one forwarder
/// take turns. Not from this forwarder's resolver callback.
#[unsafe(no_mangle)]
pub extern "C" fn proxy_forwarder_reload(
    forwarder: *mut proxy_forwarder,
    config: *const proxy_config,
) -> proxy_status {
    ffi_panic_boundary! {
        let forwarder = try_ref(forwarder.cast_const(), "forwarder")?;
        let config = try_ref(config, "config")?;
        forwarder.reload(config)
    }
}

/// Stops accepting new connections and datagrams, lets open TCP connections and UDP
/// sessions go on for up to `grace_ms` milliseconds, then closes the ones still open.
/// Blocks until every socket is closed. After it, the forwarder has no address, its stats
/// keep their final values, a reload returns `PROXY_STATUS_NOT_RUNNING` and a second
/// shutdown does nothing. The forwarder must still be freed with `proxy_forwarder_free`.
///
/// Thread safety: may be called from any thread; reloads and shutdowns of one forwarder
/// take turns. Not from this forwarder's resolver callback.
#[unsafe(no_mangle)]
pub extern "C" fn proxy_forwarder_shutdown(
    forwarder: *mut proxy_forwarder,
    grace_ms: u64,
) -> proxy_status {
    ffi_panic_boundary! {
        let forwarder = try_ref(forwarder.cast_const(), "forwarder")?;
        forwarder.shutdown(Duration::from_millis(grace_ms));
        Ok(())
    }
}

/// Frees a forwarder. One still running is stopped at once: listeners close and open
/// connections are reset. Blocks until its threads have ended, waiting for a resolver
/// callback in progress to return. NULL does nothing.
///
/// Thread safety: the last call on the forwarder: no other call on it may be in progress
/// or follow. Not from any resolver callback of this forwarder.
#[unsafe(no_mangle)]
pub extern "C" fn proxy_forwarder_free(forwarder: *mut proxy_forwarder) {
    ffi_panic_boundary! { unit:
        free_box(forwarder);
    }
}

/// Writes `count` of the forwarder to `*out_count`: the `_count` functions.
fn write_count(
    forwarder: *const proxy_forwarder,
    out_count: *mut usize,
    count: impl FnOnce(&Forwarder) -> usize,
) -> Result<(), Failure> {
    let forwarder = try_ref(forwarder, "forwarder")?;
    let out_count = out(out_count, "out_count")?;
    out_count.write(count(forwarder));
    Ok(())
}

/// Stores the number of bound listen addresses in `*out_count`: as many as the config
/// listed (0 after a shutdown).
///
/// Thread safety: may be called from any thread at any time before `proxy_forwarder_free`.
#[unsafe(no_mangle)]
pub extern "C" fn proxy_forwarder_address_count(
    forwarder: *const proxy_forwarder,
    out_count: *mut usize,
) -> proxy_status {
    ffi_panic_boundary! {
        write_count(forwarder, out_count, |f| lock(&f.addrs).len())
    }
}

/// Writes bound listen address `index` (in the order the config listed them, with the
/// kernel's port where port 0 was asked for) to `buf` as a NUL-terminated string such as
/// `127.0.0.1:40123` or `[::1]:40123`; `*out_n` receives its length without the NUL.
/// `PROXY_ADDRESS_BUFFER_SIZE` bytes always suffice; `buf == NULL` with `len == 0` asks for
/// the length only.
///
/// Errors: `PROXY_STATUS_INDEX_OUT_OF_RANGE`, `PROXY_STATUS_BUFFER_TOO_SMALL` (nothing is
/// written then), `PROXY_STATUS_NULL_PARAMETER`.
///
/// Thread safety: may be called from any thread at any time before `proxy_forwarder_free`.
#[unsafe(no_mangle)]
pub extern "C" fn proxy_forwarder_address(
    forwarder: *const proxy_forwarder,
    index: usize,
    buf: *mut std::ffi::c_char,
    len: usize,
    out_n: *mut usize,
) -> proxy_status {
    ffi_panic_boundary! {
        let forwarder = try_ref(forwarder, "forwarder")?;
        let addr = forwarder.addr(index)?;
        copy_c_string(&addr.to_string(), buf, len, out_n)
    }
}

/// Stores the port of bound listen address `index` in `*out_port`: the kernel's choice
/// where port 0 was asked for.
///
/// Errors: `PROXY_STATUS_INDEX_OUT_OF_RANGE`, `PROXY_STATUS_NULL_PARAMETER`.
///
/// Thread safety: may be called from any thread at any time before `proxy_forwarder_free`.
#[unsafe(no_mangle)]
pub extern "C" fn proxy_forwarder_port(
    forwarder: *const proxy_forwarder,
    index: usize,
    out_port: *mut u16,
) -> proxy_status {
    ffi_panic_boundary! {
        let forwarder = try_ref(forwarder, "forwarder")?;
        let out_port = out(out_port, "out_port")?;
        out_port.write(forwarder.addr(index)?.port());
        Ok(())
    }
}

/// Copies a snapshot of the forwarder's counters to `*out`, whose size the caller passes
/// in `out_size`: `sizeof(proxy_stats)`. Works after a shutdown too (the final counts).
///
/// Errors: `PROXY_STATUS_NULL_PARAMETER`; `PROXY_STATUS_BUFFER_TOO_SMALL` when `out_size`
/// is below 8.
///
/// Thread safety: may be called from any thread at any time before `proxy_forwarder_free`.
#[unsafe(no_mangle)]
pub extern "C" fn proxy_forwarder_stats(
    forwarder: *const proxy_forwarder,
    out: *mut proxy_stats,
    out_size: usize,
) -> proxy_status {
    ffi_panic_boundary! {
        let forwarder = try_ref(forwarder, "forwarder")?;
        copy_u64_fields(&forwarder.stats(), out, out_size)
    }
}

/// Stores the number of upstream addresses with stats in `*out_count`, for
/// `proxy_forwarder_endpoint`.
///
/// Thread safety: may be called from any thread at any time before `proxy_forwarder_free`.
#[unsafe(no_mangle)]
pub extern "C" fn proxy_forwarder_endpoint_count(
    forwarder: *const proxy_forwarder,
    out_count: *mut usize,
) -> proxy_status {
    ffi_panic_boundary! {
        write_count(forwarder, out_count, |f| f.endpoints().len())
    }
}

/// Copies the stats of upstream address `index` (the addresses are ordered: IPv4 before
/// IPv6, then by address and port) to `*out`, whose size the caller passes in `out_size`
/// (`sizeof(proxy_endpoint_stats)`), and the address itself to `buf` as a NUL-terminated
/// string such as `10.0.0.7:80` or `[fd00::7]:80`, its length without the NUL to
/// `*out_n`. `PROXY_ADDRESS_BUFFER_SIZE` bytes always suffice. Nothing is written unless
/// the call succeeds.
///
/// The list changes as the forwarder runs (a new DNS answer, an address tried for the
/// first time), also between `proxy_forwarder_endpoint_count` and this call: an index
/// past its end then gives `PROXY_STATUS_INDEX_OUT_OF_RANGE`.
///
/// Errors: `PROXY_STATUS_INDEX_OUT_OF_RANGE`; `PROXY_STATUS_BUFFER_TOO_SMALL` when `len`
/// cannot hold the address or `out_size` is below 8; `PROXY_STATUS_NULL_PARAMETER`.
///
/// Thread safety: may be called from any thread at any time before `proxy_forwarder_free`.
#[unsafe(no_mangle)]
pub extern "C" fn proxy_forwarder_endpoint(
    forwarder: *const proxy_forwarder,
    index: usize,
    buf: *mut std::ffi::c_char,
    len: usize,
    out_n: *mut usize,
    out: *mut proxy_endpoint_stats,
    out_size: usize,
) -> proxy_status {
    ffi_panic_boundary! {
        let forwarder = try_ref(forwarder, "forwarder")?;
        let stats_out = u64_fields_out(out, out_size)?;
        let endpoints = forwarder.endpoints();
        let e = endpoints.get(index).ok_or_else(|| {
            Failure::new(
                proxy_status::IndexOutOfRange,
                format!(
                    "endpoint index {index}, but the forwarder has {} endpoints",
                    endpoints.len()
                ),
            )
        })?;
        copy_c_string(&e.addr.to_string(), buf, len, out_n)?;
        stats_out.write(&proxy_endpoint_stats::from(e));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `proxy_stats` field of each nested struct's counters is the nested field's name
    /// with this prefix: `connect_failures.refused` is `connect_refused`.
    const PREFIXES: &[(&str, &str)] = &[
        ("connect_failures", "connect_"),
        ("limited", "limited_"),
        ("udp", "udp_"),
    ];

    /// Counters of `StatsSnapshot` deliberately left out of `proxy_stats`, each with the
    /// reason. None: C sees every counter Rust has. (Per-address stats,
    /// `ForwarderHandle::endpoints`, are a list outside the snapshot: `proxy_endpoint_stats`,
    /// checked by the next test.)
    const NOT_IN_C: &[&str] = &[];

    /// The fields of `debug`, a `{:#?}` of a struct whose fields are plain values or
    /// nested structs of them, as paths (`["connect_failures", "refused"]`) with values.
    fn field_paths(debug: &str) -> Vec<(Vec<String>, String)> {
        let mut path: Vec<String> = Vec::new();
        let mut fields = Vec::new();
        for line in debug.lines().skip(1) {
            let line = line.trim().trim_end_matches(',');
            if line == "}" {
                path.pop();
                continue;
            }
            let (name, value) = line
                .split_once(": ")
                .unwrap_or_else(|| panic!("not `name: value`: {line}"));
            if value.ends_with('{') {
                path.push(name.to_owned());
            } else {
                let field = path.iter().cloned().chain([name.to_owned()]).collect();
                fields.push((field, value.to_owned()));
            }
        }
        fields
    }

    /// The `uint64_t` fields of `struct NAME` in the checked-in header.
    fn header_fields(name: &str) -> Vec<String> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/include/proxy.h");
        let header = std::fs::read_to_string(path).unwrap();
        let open = format!("typedef struct {name} {{");
        let start = header
            .find(&open)
            .unwrap_or_else(|| panic!("no {name} in proxy.h"));
        let end = start + header[start..].find(&format!("}} {name};")).unwrap();
        header[start..end]
            .lines()
            .filter_map(|l| l.trim().strip_prefix("uint64_t "))
            .map(|f| f.trim_end_matches(';').to_owned())
            .collect()
    }

    /// The `proxy_stats` name of a counter at `path`.
    fn c_name(path: &[String]) -> String {
        match path {
            [name] => name.clone(),
            [outer, name] => {
                let Some((_, prefix)) = PREFIXES.iter().find(|(o, _)| o == outer) else {
                    panic!(
                        "`{outer}` is a new nested struct of StatsSnapshot: add its prefix to PREFIXES"
                    );
                };
                format!("{prefix}{name}")
            }
            _ => panic!("counters nested deeper than one struct: {path:?}"),
        }
    }

    /// Fails when `StatsSnapshot` has a counter that `proxy_stats` (as the header declares
    /// it) lacks, or the header declares one that no Rust counter fills.
    #[test]
    fn proxy_stats_has_every_counter_of_the_rust_stats() {
        let fields = field_paths(&format!("{:#?}", StatsSnapshot::default()));
        for (path, value) in &fields {
            assert!(
                value.parse::<u64>().is_ok(),
                "{path:?} is not a counter: {value}"
            );
        }
        let rust: Vec<String> = fields.iter().map(|(p, _)| c_name(p)).collect();
        assert!(
            rust.len() >= 29,
            "the Debug walk found too few counters: {rust:?}"
        );
        let c = header_fields("proxy_stats");
        let missing: Vec<&String> = (rust.iter())
            .filter(|f| !c.contains(f) && !NOT_IN_C.contains(&f.as_str()))
            .collect();
        assert!(
            missing.is_empty(),
            "StatsSnapshot counters missing from proxy_stats in include/proxy.h: {missing:?} \
             (add them at the end of proxy_stats and in proxy_stats::add, then run \
             proxy-ffi/gen-header.sh)"
        );
        let unknown: Vec<&String> = c.iter().filter(|f| !rust.contains(f)).collect();
        assert!(
            unknown.is_empty(),
            "proxy_stats fields with no Rust counter: {unknown:?}"
        );
        assert_eq!(c.len(), std::mem::size_of::<proxy_stats>() / 8);
    }

    /// The same for the stats of one upstream address: every field of `EndpointStats`
    /// but `addr` (which `proxy_forwarder_endpoint` gives as a string) is a field of
    /// `proxy_endpoint_stats`, and the other way round. The value comes from a real
    /// forwarder, `EndpointStats` having no constructor outside proxy-core.
    #[test]
    fn proxy_endpoint_stats_has_every_field_of_the_rust_endpoint_stats() {
        // A closed port: the one connect fails, and the address gets its stats.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let target = closed.local_addr().unwrap();
        drop(closed);
        let mut config = Config::default();
        config.spec.set("listen", "127.0.0.1:0").unwrap();
        config.spec.target = Some(target.into());
        let forwarder = Forwarder::start(&config).unwrap();
        let _client = std::net::TcpStream::connect(forwarder.addr(0).unwrap()).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let endpoint = loop {
            if let Some(e) = forwarder.endpoints().first() {
                break *e;
            }
            assert!(std::time::Instant::now() < deadline, "no endpoint stats");
            std::thread::sleep(Duration::from_millis(10));
        };
        assert_eq!(endpoint.addr, target);
        let rust: Vec<String> = field_paths(&format!("{endpoint:#?}"))
            .into_iter()
            .map(|(p, _)| p.join("."))
            .filter(|f| f != "addr")
            .collect();
        assert_eq!(header_fields("proxy_endpoint_stats"), rust);
    }
}
