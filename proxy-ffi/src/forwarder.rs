//! `proxy_forwarder`: a running forwarder (TCP, UDP or HTTP) on threads of its own, and
//! its stats. This
//! module holds the C API (the `extern "C"` functions and the opaque type); what they
//! run on is [`inner`]'s [`Forwarder`], and the stats structs are
//! [`stats`](crate::stats)'.

mod inner;

use std::time::Duration;

use crate::config::proxy_config;
use crate::handle::{
    Castable, OwnershipBox, copy_c_string, copy_u64_fields, free_box, out, to_boxed_mut_ptr,
    try_ref, u64_fields_out,
};
use crate::panic::ffi_panic_boundary;
use crate::stats::{proxy_endpoint_stats, proxy_route_stats, proxy_stats};
use crate::status::{Failure, proxy_status};
use inner::Forwarder;

/// A running forwarder: listening sockets, connections and sessions, served by a runtime
/// with threads of its own (named `proxy-ffi-N`). It relays TCP, UDP or both, or is an
/// HTTP/1.1 reverse proxy routing requests by host and path (the `protocol` key set to
/// `http`, with `route` keys). Forwarders share nothing: several may run in one process,
/// and each is started and freed on its own.
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

/// Starts forwarding as `config` says, on threads of the new forwarder's own, and stores
/// the forwarder in `*out`. Returns once every listen address is bound, so connections
/// can be made as soon as it returns. Host-name targets are resolved in the background.
///
/// With `PROXY_TRANSPORT_BOTH`, TCP and UDP listen on the same ports, also ones the kernel
/// chooses (port 0). A `listen` key set to a bare port listens on every address: one
/// dual-stack `[::]` socket, or `0.0.0.0` on a host without IPv6.
///
/// With `PROXY_TRANSPORT_HTTP` (`protocol` = `http`), requests are routed by host and path
/// to the `route` keys' targets (`target` is the default route), each route resolving,
/// balancing and connecting with its settings; the requests come with `X-Forwarded-For`,
/// `X-Forwarded-Host`, `X-Forwarded-Proto` and `Forwarded` headers. Its counters are per
/// route: `proxy_forwarder_route`. Its routes are resolved by built-in resolvers only: a
/// resolver callback is an `INVALID_SETTING`.
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
/// An HTTP forwarder changes its routes, limits and timeouts in place (requests in flight
/// finish as they began; routes written as before keep their upstream connections and
/// counters), but not its listen addresses: `config` must list the ones it started with
/// (port 0 included) or the bound ones, else `PROXY_STATUS_INVALID_SETTING` naming
/// `listen`.
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
/// sessions go on for up to `grace_ms` milliseconds, then closes the ones still open. An
/// HTTP forwarder's connections finish the request in flight and close (idle ones at
/// once).
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
        write_count(forwarder, out_count, |f| f.address_count())
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
/// An HTTP forwarder's are all 0: it counts by route (`proxy_forwarder_route`).
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
/// `proxy_forwarder_endpoint`. In an HTTP forwarder, those of every route's target.
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

/// Stores the number of routes with counters in `*out_count`, for `proxy_forwarder_route`:
/// for an HTTP forwarder, one per route and one more for the requests no route served;
/// 0 for TCP and UDP.
///
/// Thread safety: may be called from any thread at any time before `proxy_forwarder_free`.
#[unsafe(no_mangle)]
pub extern "C" fn proxy_forwarder_route_count(
    forwarder: *const proxy_forwarder,
    out_count: *mut usize,
) -> proxy_status {
    ffi_panic_boundary! {
        write_count(forwarder, out_count, |f| f.routes().len())
    }
}

/// Copies the counters of route `index` of an HTTP forwarder to `*out`, whose size the
/// caller passes in `out_size` (`sizeof(proxy_route_stats)`), and the route as written to
/// `buf` as a NUL-terminated string, such as `shop.example/api=api.shop:8080`, its length
/// without the NUL to `*out_n`. The routes come in the order of the `route` key, then the
/// `target` key's route `/=TARGET` when set, and last `-`, which counts the requests no
/// route served (answered 404). `buf == NULL` with `len == 0` asks for the length of the route
/// only. Nothing is written unless the call succeeds.
///
/// A reload replaces the list: an index past its end then gives
/// `PROXY_STATUS_INDEX_OUT_OF_RANGE`. After a shutdown it keeps the final counts.
///
/// Errors: `PROXY_STATUS_INDEX_OUT_OF_RANGE`; `PROXY_STATUS_BUFFER_TOO_SMALL` when `len`
/// cannot hold the route or `out_size` is below 8; `PROXY_STATUS_NULL_PARAMETER`.
///
/// Thread safety: may be called from any thread at any time before `proxy_forwarder_free`.
#[unsafe(no_mangle)]
pub extern "C" fn proxy_forwarder_route(
    forwarder: *const proxy_forwarder,
    index: usize,
    buf: *mut std::ffi::c_char,
    len: usize,
    out_n: *mut usize,
    out: *mut proxy_route_stats,
    out_size: usize,
) -> proxy_status {
    ffi_panic_boundary! {
        let forwarder = try_ref(forwarder, "forwarder")?;
        let stats_out = u64_fields_out(out, out_size)?;
        let routes = forwarder.routes();
        let r = routes.get(index).ok_or_else(|| {
            Failure::new(
                proxy_status::IndexOutOfRange,
                format!(
                    "route index {index}, but the forwarder has {} routes",
                    routes.len()
                ),
            )
        })?;
        copy_c_string(&r.route, buf, len, out_n)?;
        stats_out.write(&proxy_route_stats::from(r));
        Ok(())
    }
}
