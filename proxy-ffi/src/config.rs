//! `proxy_config`: a [`ForwardSpec`] (every setting of a forward, also those of the typed
//! setters here) plus what is not a key: the resolver callback and the worker threads.
//! The text setters by key are in `keys`.

use std::ffi::{c_char, c_void};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use proxy_core::resolve::ResolverKind;
use proxy_core::{ForwardSpec, Listen, Target, Transport};

use crate::handle::{Castable, OwnershipBox, free_box, to_boxed_mut_ptr, try_mut, try_str};
use crate::panic::ffi_panic_boundary;
use crate::resolve::{Callback, proxy_resolve_callback};
use crate::status::{Failure, proxy_status};

/// The settings of a forwarder, to pass to `proxy_forwarder_start` and
/// `proxy_forwarder_reload`, which copy what they need: the config may be changed or
/// freed as soon as they return, and one config may start any number of forwarders.
///
/// Every setting is a key of `proxy_config_set` (the keys of the CLI's flags and config
/// file; see `proxy_key_name`); the typed setters (`proxy_config_set_transport`, ...) set
/// the same values. Only the resolver callback and the worker threads have no key.
///
/// Made by `proxy_config_new`, freed by `proxy_config_free`.
///
/// Thread safety: a config is not synchronised. It may be moved to another thread, and
/// several threads may pass the same config to `proxy_forwarder_start` or
/// `proxy_forwarder_reload` (or read it with `proxy_config_get`) at once, but no thread
/// may change it (`proxy_config_set`, the `proxy_config_set_*` and `_add`/`_clear`
/// functions) or free it while another uses it.
pub struct proxy_config {
    _private: [u8; 0],
}

impl Castable for proxy_config {
    type Ownership = OwnershipBox;
    type RustType = Config;
}

/// The transport protocols a forwarder serves, TCP, UDP or both, or HTTP (the `protocol`
/// key's `tcp`, `udp`, `tcp,udp` and `http`): a value for `proxy_config_set_transport`.
/// (The PROXY protocol, the header carrying the client's address, is another setting.)
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum proxy_transport {
    /// TCP connections (the default).
    Tcp = 1,
    /// UDP datagrams, one session per client address.
    Udp = 2,
    /// TCP and UDP on the same addresses and ports. With port 0, TCP binds first and UDP
    /// then binds the port TCP got; when that UDP port is taken, both try another port, up
    /// to 10 times.
    Both = 3,
    /// An HTTP/1.1 reverse proxy (the `protocol` key's `http`): requests go by host and
    /// path to the targets of the `route` keys (`target` is the default route).
    Http = 4,
}

/// A timer of the forwarder: a value for `proxy_config_set_timeout`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum proxy_timeout {
    /// One TCP connect attempt to one upstream address. Default 5000 ms; cannot be off.
    Connect = 1,
    /// All connect attempts of one TCP connection together, across the resolved
    /// addresses. Default 15000 ms; cannot be off, nor shorter than `CONNECT`.
    ConnectTotal = 2,
    /// A TCP connection with no traffic in either direction for this long is closed.
    /// Default off.
    Idle = 3,
    /// Once one direction of a TCP connection has ended (a FIN was forwarded), the
    /// connection is closed when the other has moved no byte for this long (an inactivity
    /// timer: a reply still streaming is never cut). Default 60000 ms.
    HalfClose = 4,
    /// A TCP connection is closed when it is this old, busy or not. Default off.
    MaxLifetime = 5,
    /// A UDP session ends after this long without a datagram in either direction.
    /// Default 30000 ms; off keeps sessions until the session table is full.
    UdpSessionIdle = 6,
}

/// A limit on new connections (or UDP sessions): a value for `proxy_config_set_limit`.
/// Past a limit, a new TCP connection is reset at once and the datagrams that would start
/// a UDP session are dropped; both are counted (`proxy_stats.limited_*`). Open connections
/// are never touched, and the counts outlive `proxy_forwarder_reload`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum proxy_limit {
    /// The most TCP connections (or UDP sessions) open at once. Default off.
    MaxConnections = 1,
    /// The most TCP connections (or UDP sessions) open at once from one client IP
    /// address. Default off.
    MaxPerSource = 2,
    /// The most new TCP connections (or UDP sessions) admitted per second, on average.
    /// Default off.
    AcceptRate = 3,
    /// How many `ACCEPT_RATE` admits at once after a quiet spell. Default: the rate (one
    /// second's worth). Needs `ACCEPT_RATE`: a burst alone does not start.
    AcceptBurst = 4,
}

/// A built-in resolver for host-name targets: a value for `proxy_config_set_resolver`.
/// `srv:` targets always use hickory: the C library cannot look up SRV records.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum proxy_resolver {
    /// The C library's `getaddrinfo` (the default): `/etc/hosts`, `nsswitch.conf`,
    /// `/etc/resolv.conf` with `search` and `ndots`. Answers are kept for 30 s.
    System = 1,
    /// hickory-resolver, following each answer's TTL: configured from `/etc/resolv.conf`,
    /// or asking the name servers added with `proxy_config_add_name_server`.
    Hickory = 2,
}

/// What a `proxy_config` holds.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    /// Every setting with a key.
    pub(crate) spec: ForwardSpec,
    /// The resolver callback, used instead of the spec's resolver when set.
    pub(crate) callback: Option<Callback>,
    /// Worker threads of each forwarder's runtime.
    pub(crate) worker_threads: usize,
}

/// Worker threads of a forwarder's runtime unless set.
const DEFAULT_WORKER_THREADS: usize = 2;

/// The port of a name server given without one.
const DNS_PORT: u16 = 53;

/// The most worker threads a forwarder may have.
const MAX_WORKER_THREADS: usize = 256;

/// The longest timer in milliseconds: proxy-core's [`MAX_DURATION`](proxy_core::MAX_DURATION)
/// (10 years), which every front end shares.
const MAX_TIMEOUT_MS: u64 = proxy_core::MAX_DURATION.as_millis() as u64;

// Starting forwarders from several threads with one config shares it between them.
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<Config>();
};

impl Default for Config {
    fn default() -> Self {
        Config {
            spec: ForwardSpec::default(),
            callback: None,
            worker_threads: DEFAULT_WORKER_THREADS,
        }
    }
}

/// Parses a listen address: an IP address and a port.
pub(crate) fn parse_listen(s: &str) -> Result<SocketAddr, Failure> {
    s.parse().map_err(|_| {
        Failure::new(
            proxy_status::InvalidAddress,
            format!("`{s}` is not IP:PORT or [IPv6]:PORT"),
        )
    })
}

fn timeout_kind(kind: u32) -> Result<proxy_timeout, Failure> {
    use proxy_timeout::*;
    [
        Connect,
        ConnectTotal,
        Idle,
        HalfClose,
        MaxLifetime,
        UdpSessionIdle,
    ]
    .into_iter()
    .find(|k| *k as u32 == kind)
    .ok_or_else(|| Failure::setting(format!("unknown timeout kind {kind}")))
}

fn limit_kind(kind: u32) -> Result<proxy_limit, Failure> {
    use proxy_limit::*;
    [MaxConnections, MaxPerSource, AcceptRate, AcceptBurst]
        .into_iter()
        .find(|k| *k as u32 == kind)
        .ok_or_else(|| Failure::setting(format!("unknown limit kind {kind}")))
}

/// A new config with the defaults: TCP, no listen address, no target, the default timers
/// (see `proxy_timeout`), the system resolver, 2 worker threads, and every other key at
/// its default (`proxy_config_get` on a new config reads them).
///
/// Returns NULL only if the library panicked (see `proxy_last_error`). Free it with
/// `proxy_config_free`.
///
/// Thread safety: may be called from any thread.
#[unsafe(no_mangle)]
pub extern "C" fn proxy_config_new() -> *mut proxy_config {
    ffi_panic_boundary! { ptr:
        to_boxed_mut_ptr::<proxy_config>(Config::default())
    }
}

/// Frees a config. NULL does nothing. Forwarders started with it are not affected.
///
/// Thread safety: no other thread may use the config during or after this call.
#[unsafe(no_mangle)]
pub extern "C" fn proxy_config_free(config: *mut proxy_config) {
    ffi_panic_boundary! { unit:
        free_box(config);
    }
}

/// Sets the transport protocols to serve: a `proxy_transport` value (the `protocol` key).
/// Default `PROXY_TRANSPORT_TCP`.
///
/// Returns `PROXY_STATUS_INVALID_SETTING` for a value that is not a `proxy_transport`.
///
/// Thread safety: see `proxy_config`.
#[unsafe(no_mangle)]
pub extern "C" fn proxy_config_set_transport(
    config: *mut proxy_config,
    transport: u32,
) -> proxy_status {
    ffi_panic_boundary! {
        let config = try_mut(config, "config")?;
        config.spec.protocol = match transport {
            t if t == proxy_transport::Tcp as u32 => Transport::Tcp,
            t if t == proxy_transport::Udp as u32 => Transport::Udp,
            t if t == proxy_transport::Both as u32 => Transport::Both,
            t if t == proxy_transport::Http as u32 => Transport::Http,
            t => return Err(Failure::setting(format!("unknown transport {t}"))),
        };
        Ok(())
    }
}

/// Adds a listen address: an IP address and a port, such as `"127.0.0.1:8080"`,
/// `"0.0.0.0:53"`, `"[::1]:0"` or `"[::]:8080"` (one dual-stack socket that also takes
/// IPv4). Port 0 binds a port chosen by the kernel; read it with `proxy_forwarder_port`.
/// Host names are not accepted. The addresses are the `listen` key's list; after that key
/// was set to a bare port (every address), that port's `[::]:PORT` comes first in it.
///
/// Returns `PROXY_STATUS_INVALID_ADDRESS` for anything else; the config is unchanged then.
///
/// Thread safety: see `proxy_config`.
#[unsafe(no_mangle)]
pub extern "C" fn proxy_config_add_listen(
    config: *mut proxy_config,
    address: *const c_char,
) -> proxy_status {
    ffi_panic_boundary! {
        let config = try_mut(config, "config")?;
        let address = parse_listen(try_str(address, "address")?)?;
        let mut addrs = config.spec.listen.addrs();
        addrs.push(address);
        config.spec.listen = Listen::Addrs(addrs);
        Ok(())
    }
}

/// Removes every listen address, so the config can be filled anew (for a reload, say).
///
/// Thread safety: see `proxy_config`.
#[unsafe(no_mangle)]
pub extern "C" fn proxy_config_clear_listen(config: *mut proxy_config) -> proxy_status {
    ffi_panic_boundary! {
        try_mut(config, "config")?.spec.listen = Listen::Addrs(Vec::new());
        Ok(())
    }
}

/// Sets the upstream target (the `target` key): `"host:port"`, `"10.0.0.1:80"`,
/// `"[fd00::1]:80"`, or `"srv:_service._proto.name"` (such as
/// `"srv:_dns._udp.kube-dns.kube-system"`), whose SRV records give the hosts and ports, by
/// priority and weight. Host names are resolved by the config's resolver when the
/// forwarder runs, and again when the answer expires; `srv:` names by hickory whatever
/// `proxy_config_set_resolver` chose (not by a resolver callback); IP addresses are used
/// as they are.
///
/// Returns `PROXY_STATUS_INVALID_TARGET` (the last error names the bad part) for anything
/// else; the config is unchanged then.
///
/// Thread safety: see `proxy_config`.
#[unsafe(no_mangle)]
pub extern "C" fn proxy_config_set_target(
    config: *mut proxy_config,
    target: *const c_char,
) -> proxy_status {
    ffi_panic_boundary! {
        let config = try_mut(config, "config")?;
        let target = try_str(target, "target")?;
        let target = target
            .parse::<Target>()
            .map_err(|e| Failure::new(proxy_status::InvalidTarget, e.to_string()))?;
        config.spec.target = Some(target);
        Ok(())
    }
}

/// Sets one timer (`kind` is a `proxy_timeout` value) to `ms` milliseconds; 0 turns it off
/// where the timer can be off (see `proxy_timeout` for each timer's default). The timers
/// are the keys `connect_timeout`, `connect_total_timeout`, `idle_timeout` (here TCP's
/// only), `half_close_timeout`, `max_lifetime` and `udp_idle_timeout`; unlike the
/// `connect_timeout` key, `PROXY_TIMEOUT_CONNECT` does not raise the total budget.
///
/// Returns `PROXY_STATUS_INVALID_SETTING` for an unknown `kind`, 0 for a timer that
/// cannot be off, or more than 10 years; the config is unchanged then. A connect timeout longer than the total
/// connect budget is reported by `proxy_forwarder_start` and `proxy_forwarder_reload`.
///
/// Thread safety: see `proxy_config`.
#[unsafe(no_mangle)]
pub extern "C" fn proxy_config_set_timeout(
    config: *mut proxy_config,
    kind: u32,
    ms: u64,
) -> proxy_status {
    ffi_panic_boundary! {
        let config = try_mut(config, "config")?;
        let kind = timeout_kind(kind)?;
        if ms > MAX_TIMEOUT_MS {
            return Err(Failure::setting(format!(
                "timeout of {ms} ms: at most {MAX_TIMEOUT_MS} ms (10 years)"
            )));
        }
        let value = (ms != 0).then(|| Duration::from_millis(ms));
        let required = |name: &str| {
            value.ok_or_else(|| Failure::setting(format!("the {name} timeout cannot be off (0)")))
        };
        let s = &mut config.spec;
        match kind {
            proxy_timeout::Connect => s.connect_timeout = required("connect")?,
            proxy_timeout::ConnectTotal => s.connect_total_timeout = required("connect_total")?,
            proxy_timeout::Idle => s.idle_timeout = value,
            proxy_timeout::HalfClose => s.half_close_timeout = value,
            proxy_timeout::MaxLifetime => s.max_lifetime = value,
            proxy_timeout::UdpSessionIdle => s.udp_idle_timeout = value,
        }
        Ok(())
    }
}

/// Chooses a built-in resolver for host-name targets: a `proxy_resolver` value (the
/// `resolver` key). Replaces a resolver callback set before. Default
/// `PROXY_RESOLVER_SYSTEM`.
///
/// Returns `PROXY_STATUS_INVALID_SETTING` for a value that is not a `proxy_resolver`.
///
/// Thread safety: see `proxy_config`.
#[unsafe(no_mangle)]
pub extern "C" fn proxy_config_set_resolver(
    config: *mut proxy_config,
    resolver: u32,
) -> proxy_status {
    ffi_panic_boundary! {
        let config = try_mut(config, "config")?;
        config.spec.resolver = match resolver {
            r if r == proxy_resolver::System as u32 => ResolverKind::System,
            r if r == proxy_resolver::Hickory as u32 => ResolverKind::Hickory,
            r => return Err(Failure::setting(format!("unknown resolver {r}"))),
        };
        config.callback = None;
        Ok(())
    }
}

/// Adds a DNS server for the hickory resolver to ask, instead of those of
/// `/etc/resolv.conf` (to the `name_servers` key's list): an IP address with an optional
/// port (default 53), such as `"10.96.0.10"`, `"127.0.0.1:5353"` or `"[fd00::10]:53"`.
/// Servers are asked over UDP (TCP for truncated answers), in the order added when one
/// fails; names are looked up as they are written (no search domains, no `/etc/hosts`).
///
/// They serve `srv:` targets and host-name targets alike: asking them means hickory, so
/// with name servers a host-name target is resolved by hickory whatever
/// `proxy_config_set_resolver` chose (the C library cannot be pointed at a server), as
/// with the CLI. A resolver callback, when set, is used instead of them.
///
/// Returns `PROXY_STATUS_INVALID_ADDRESS` for anything else; the config is unchanged then.
///
/// Thread safety: see `proxy_config`.
#[unsafe(no_mangle)]
pub extern "C" fn proxy_config_add_name_server(
    config: *mut proxy_config,
    address: *const c_char,
) -> proxy_status {
    ffi_panic_boundary! {
        let config = try_mut(config, "config")?;
        let text = try_str(address, "address")?;
        let server = match text.parse::<IpAddr>() {
            Ok(ip) => SocketAddr::new(ip, DNS_PORT),
            Err(_) => text.parse().map_err(|_| {
                Failure::new(
                    proxy_status::InvalidAddress,
                    format!("name server `{text}` is not IP, IP:PORT or [IPv6]:PORT"),
                )
            })?,
        };
        config.spec.name_servers.push(server);
        Ok(())
    }
}

/// Removes every name server added with `proxy_config_add_name_server`: hickory reads
/// `/etc/resolv.conf` again.
///
/// Thread safety: see `proxy_config`.
#[unsafe(no_mangle)]
pub extern "C" fn proxy_config_clear_name_servers(config: *mut proxy_config) -> proxy_status {
    ffi_panic_boundary! {
        try_mut(config, "config")?.spec.name_servers.clear();
        Ok(())
    }
}

/// Resolves host-name targets with `callback` instead of a built-in resolver; see
/// `proxy_resolve_callback` for when and on which thread it is called. `userdata` is
/// passed to it as it is; it may be NULL. A callback answers address lookups only, not
/// SRV: a forwarder with a `srv:` target and a callback does not start.
///
/// `callback` and `userdata` must stay valid until `proxy_forwarder_free` has returned for
/// every forwarder started or reloaded with this config (`proxy_forwarder_free` waits for
/// a call in progress to return).
///
/// Returns `PROXY_STATUS_NULL_PARAMETER` when `callback` is NULL; to go back to a built-in
/// resolver, call `proxy_config_set_resolver` (or set the `resolver` key). Not a key:
/// `proxy_config_get` does not show it.
///
/// Thread safety: see `proxy_config`.
#[unsafe(no_mangle)]
pub extern "C" fn proxy_config_set_resolver_callback(
    config: *mut proxy_config,
    callback: proxy_resolve_callback,
    userdata: *mut c_void,
) -> proxy_status {
    ffi_panic_boundary! {
        let config = try_mut(config, "config")?;
        let callback = callback.ok_or_else(|| Failure::null("callback"))?;
        config.callback = Some(Callback::new(callback, userdata));
        Ok(())
    }
}

/// Sets the number of worker threads of the runtime each forwarder started with this config
/// owns, 1 to 256. Default 2. A reload keeps the forwarder's threads. Not a key.
///
/// Returns `PROXY_STATUS_INVALID_SETTING` outside 1 to 256.
///
/// Thread safety: see `proxy_config`.
#[unsafe(no_mangle)]
pub extern "C" fn proxy_config_set_worker_threads(
    config: *mut proxy_config,
    threads: usize,
) -> proxy_status {
    ffi_panic_boundary! {
        let config = try_mut(config, "config")?;
        if !(1..=MAX_WORKER_THREADS).contains(&threads) {
            return Err(Failure::setting(format!(
                "{threads} worker threads: expected 1 to {MAX_WORKER_THREADS}"
            )));
        }
        config.worker_threads = threads;
        Ok(())
    }
}

/// Sets one limit (`kind` is a `proxy_limit` value) to `value`; 0 turns it off (for
/// `PROXY_LIMIT_ACCEPT_BURST`: back to the rate). The limits are the keys
/// `max_connections`, `max_per_source`, `accept_rate` and `accept_burst`; a burst without
/// a rate is refused by `proxy_forwarder_start`, as by the CLI.
///
/// Returns `PROXY_STATUS_INVALID_SETTING` for an unknown `kind`, or a rate or burst past
/// 4294967295; the config is unchanged then.
///
/// Thread safety: see `proxy_config`.
#[unsafe(no_mangle)]
pub extern "C" fn proxy_config_set_limit(
    config: *mut proxy_config,
    kind: u32,
    value: u64,
) -> proxy_status {
    ffi_panic_boundary! {
        let config = try_mut(config, "config")?;
        let kind = limit_kind(kind)?;
        let count = (value != 0).then(|| usize::try_from(value).unwrap_or(usize::MAX));
        let per_second = || -> Result<Option<u32>, Failure> {
            let n = u32::try_from(value)
                .map_err(|_| Failure::setting(format!("{value} a second: at most {}", u32::MAX)))?;
            Ok((n != 0).then_some(n))
        };
        let s = &mut config.spec;
        match kind {
            proxy_limit::MaxConnections => s.max_connections = count,
            proxy_limit::MaxPerSource => s.max_per_source = count,
            proxy_limit::AcceptRate => s.accept_rate = per_second()?,
            proxy_limit::AcceptBurst => s.accept_burst = per_second()?,
        }
        Ok(())
    }
}
