//! [`Forwarder`], the Rust side of a `proxy_forwarder`: starting one from a config on a
//! runtime of its own (proxy-core's TCP and UDP forwarders, or proxy-http's
//! [`HttpForwarder`] for `protocol = http`), reloading it in place, shutting it down, and
//! reading its bound addresses and stats. The C functions on it are [`forwarder`](super)'s.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use proxy_core::resolve::Resolve;
use proxy_core::spec::StartError;
use proxy_core::{
    EndpointStats, ForwardSpec, ForwarderHandle, Host, Listen, StatsReader, TcpForwarder,
    Transport, UdpForwarder,
};
use proxy_http::{HttpForwarder, HttpHandle, RouteSnapshot};
use tokio::runtime::Runtime;

use crate::config::Config;
use crate::resolve::CallbackResolver;
use crate::stats::proxy_stats;
use crate::status::{Failure, proxy_status};

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
    /// An HTTP forwarder's handle, for its per-route counters (which outlive a shutdown).
    http: Option<HttpHandle>,
    runtime: Runtime,
}

// The header lets every function but `_free` run on any thread, concurrently.
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<Forwarder>();
};

/// The running parts, each with the settings it runs with (a `BOTH` reload that fails
/// half-way goes back to them). An HTTP forwarder has `http` only, with the listen
/// setting it started with.
#[derive(Debug, Default)]
struct Running {
    tcp: Option<(ForwarderHandle, TcpForwarder)>,
    udp: Option<(ForwarderHandle, UdpForwarder)>,
    http: Option<(HttpHandle, Listen)>,
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
        Transport::Http => "HTTP",
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
    let sni = config.spec.sni.iter().map(|route| (&route.target, "sni"));
    let srv = (config.spec.target.iter().map(|t| (t, "target")))
        .chain(sni)
        .find(|(t, _)| matches!(t.host(), Host::Srv(_)));
    match (config.callback, srv) {
        (Some(_), Some((target, key))) => Err(Failure::setting(format!(
            "{key}: `{target}`: a resolver callback cannot look up SRV records; use a \
             built-in resolver (proxy_config_set_resolver)"
        ))),
        (Some(cb), None) => Ok(Arc::new(CallbackResolver(cb))),
        (None, _) => config.spec.make_resolver().map_err(|e| {
            Failure::new(
                proxy_status::Resolver,
                format!("resolver: cannot set up hickory: {e}"),
            )
        }),
    }
}

/// Builds the forwarders `config` describes (validated, not started), through
/// `resolver`, for a forwarder bound to `bound` (none yet: empty).
fn plan(
    config: &Config,
    resolver: Arc<dyn Resolve>,
    bound: &[SocketAddr],
) -> Result<Planned, Failure> {
    let spec = &config.spec;
    let listen = spec.listen.reload_fallback(bound);
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
        StartError::Http => Failure::setting(e.to_string()),
    }
}

/// A resolver callback cannot serve an HTTP forward: each route resolves its own target
/// with the resolver its settings name (the `resolver` and `name_servers` keys, also per
/// route).
fn refuse_callback(config: &Config) -> Result<(), Failure> {
    match config.callback {
        Some(_) => Err(Failure::setting(
            "resolver: a resolver callback cannot resolve an HTTP forward's routes; use a \
             built-in resolver (proxy_config_set_resolver, or the `resolver` key)",
        )),
        None => Ok(()),
    }
}

/// Binds `spec`'s listen addresses for an HTTP forward, all or none: a bare port listens
/// on `[::]`, or on `0.0.0.0` where the host has no IPv6 (as TCP forwards do). Call inside
/// the forwarder's runtime.
fn bind_http(spec: &ForwardSpec) -> Result<Vec<std::net::TcpListener>, Failure> {
    let bind_all = |addrs: &[SocketAddr]| {
        addrs
            .iter()
            .map(|&a| {
                spec.tcp_listener(a)
                    .and_then(tokio::net::TcpListener::into_std)
                    .map_err(|e| (a, e))
            })
            .collect::<Result<Vec<_>, _>>()
    };
    let bound = match (bind_all(&spec.listen.addrs()), spec.listen.ipv4_fallback()) {
        (Err((_, e)), Some(v4)) if e.kind() != std::io::ErrorKind::AddrInUse => bind_all(&v4),
        (bound, _) => bound,
    };
    bound.map_err(|(a, e)| {
        let status = match e.kind() {
            std::io::ErrorKind::AddrInUse => proxy_status::AddressInUse,
            _ => proxy_status::BindFailed,
        };
        Failure::new(status, format!("failed to bind listen address ({a}): {e}"))
    })
}

/// Why an HTTP forward's routes could not be set up (their resolvers, once the settings
/// were checked).
fn http_failure(e: &std::io::Error) -> Failure {
    Failure::new(
        proxy_status::Resolver,
        format!("route: cannot set up its upstream: {e}"),
    )
}

// ===== impl Forwarder =====

impl Forwarder {
    pub(super) fn start(config: &Config) -> Result<Self, Failure> {
        // Check what can be checked before starting threads.
        config.spec.validate()?;
        if config.spec.protocol == Transport::Http {
            return Forwarder::start_http(config);
        }
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
                http: None,
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
            http: None,
            runtime,
        })
    }

    /// [`start`](Self::start) for `protocol = http`: proxy-http's forwarder on this
    /// forwarder's runtime.
    fn start_http(config: &Config) -> Result<Self, Failure> {
        refuse_callback(config)?;
        let forwarder = HttpForwarder::new(config.spec.clone())?;
        let runtime = runtime(config.worker_threads)?;
        let handle = {
            let _entered = runtime.enter();
            let listeners = bind_http(&config.spec)?;
            forwarder
                .start_from(listeners)
                .map_err(|e| http_failure(&e))?
        };
        let running = Running {
            http: Some((handle.clone(), config.spec.listen.clone())),
            ..Running::default()
        };
        Ok(Forwarder {
            transport: Transport::Http,
            addrs: Mutex::new(running.local_addrs()),
            running: Mutex::new(Some(running)),
            stats: Vec::new(),
            http: Some(handle),
            runtime,
        })
    }

    pub(super) fn reload(&self, config: &Config) -> Result<(), Failure> {
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
        if let Some((http, listen)) = &running.http {
            // New routes' upstreams start their tasks on this forwarder's runtime.
            let _entered = self.runtime.enter();
            return reload_http(http, listen, config);
        }
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
    pub(super) fn shutdown(&self, grace: Duration) {
        let mut running = lock(&self.running);
        let Some(Running { tcp, udp, http }) = running.take() else {
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
            let http = async {
                if let Some((h, _)) = http {
                    h.shutdown(grace).await;
                }
            };
            tokio::join!(tcp, udp, http);
        });
    }

    /// How many listen addresses are bound (0 after a shutdown).
    pub(super) fn address_count(&self) -> usize {
        lock(&self.addrs).len()
    }

    pub(super) fn addr(&self, index: usize) -> Result<SocketAddr, Failure> {
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
    /// UDP have (or, in an HTTP forwarder, several routes) is one entry with their counts
    /// added.
    pub(super) fn endpoints(&self) -> Vec<EndpointStats> {
        let http = (self.http.iter())
            .flat_map(HttpHandle::endpoints)
            .flat_map(|(_, endpoints)| endpoints);
        let mut all: Vec<EndpointStats> = (self.stats.iter().flat_map(|r| r.endpoints()))
            .chain(http)
            .collect();
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

    /// An HTTP forwarder's counters by route, in the order the routes were given, and
    /// last those of requests no route served (route `-`); none for TCP and UDP.
    pub(super) fn routes(&self) -> Vec<RouteSnapshot> {
        self.http
            .as_ref()
            .map(HttpHandle::routes)
            .unwrap_or_default()
    }

    pub(super) fn stats(&self) -> proxy_stats {
        let mut total = proxy_stats::default();
        for reader in &self.stats {
            total.add(&reader.stats());
        }
        total
    }
}

// ===== impl Running =====

impl Running {
    /// The bound addresses: TCP's, which UDP shares in a `BOTH` forwarder, or HTTP's.
    fn local_addrs(&self) -> Vec<SocketAddr> {
        match (&self.tcp, &self.udp, &self.http) {
            (Some((h, _)), _, _) | (None, Some((h, _)), _) => h.local_addrs().to_vec(),
            (None, None, Some((h, _))) => h.local_addrs().to_vec(),
            (None, None, None) => Vec::new(),
        }
    }
}

/// Reloads an HTTP forwarder that started listening as `listen` says: routes, limits and
/// timeouts change in place. Its listen addresses cannot: `config` must name the same
/// ones, as it started with them (port 0 included) or as they are bound.
fn reload_http(handle: &HttpHandle, listen: &Listen, config: &Config) -> Result<(), Failure> {
    refuse_callback(config)?;
    let bound = handle.local_addrs();
    if config.spec.listen != *listen && config.spec.listen.addrs() != bound {
        return Err(Failure::setting(format!(
            "listen: an HTTP forwarder keeps its listen addresses in a reload (it listens on \
             {}); `{}` needs a new forwarder",
            Listen::Addrs(bound.to_vec()),
            config.spec.listen
        )));
    }
    let mut spec = config.spec.clone();
    spec.listen = listen.clone();
    // The settings first, so that their errors name the key.
    HttpForwarder::new(spec.clone())?;
    handle.reload(&spec).map_err(|e| http_failure(&e))
}

fn not_running() -> Failure {
    Failure::new(
        proxy_status::NotRunning,
        "the forwarder was shut down; free it and start a new one",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::tests::{field_paths, header_fields};

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
