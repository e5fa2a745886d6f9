//! The resolver callback: a C function behind `proxy_core::resolve::Resolve`.

use std::ffi::{CString, c_char, c_void};
use std::io;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use proxy_core::resolve::{Resolution, Resolve, Resolving};

use crate::handle::{Castable, OwnershipRef, to_ref_mut_ptr, try_mut, try_str};
use crate::panic::ffi_panic_boundary;
use crate::status::{Failure, proxy_status};

/// Resolves `host` for a forwarder whose config has it
/// (`proxy_config_set_resolver_callback`).
///
/// Add each address with `proxy_resolution_add` (and, optionally, how long the answer
/// holds with `proxy_resolution_set_ttl`), then return `PROXY_STATUS_OK` (0). Any other
/// return value, or no address added, is a failed lookup: the forwarder keeps its last
/// good answer (or, before the first, fails the connection or drops the datagram), counts
/// a resolver failure in `proxy_stats`, and asks again later. `resolution` is valid only
/// during the call and only on the calling thread.
///
/// When: when the forwarder starts and again whenever the answer expires (after the TTL
/// set, or 30 s without one); early after every address failed to connect; and for each
/// reload. Never for IP-address targets.
///
/// Thread: a thread of the blocking pool of the forwarder's own runtime (named
/// `proxy-ffi-N`), never the thread that called a `proxy_*` function. It may be called
/// on several threads at once (a `PROXY_TRANSPORT_BOTH` forwarder resolves for TCP and
/// UDP separately, and a reload starts a new resolver while the old one may still be
/// running), so it must be thread-safe. It may block (it delays only new connections to a
/// host that has no answer yet), but `proxy_forwarder_shutdown` and `proxy_forwarder_free`
/// wait for it. It must not call `proxy_forwarder_reload`, `proxy_forwarder_shutdown` or
/// `proxy_forwarder_free` on its own forwarder (that waits for the callback itself), and
/// must not unwind (C++ exceptions, `longjmp`) out of the call.
pub type proxy_resolve_callback = Option<
    unsafe extern "C" fn(
        userdata: *mut c_void,
        host: *const c_char,
        resolution: *mut proxy_resolution,
    ) -> u32,
>;

/// The answer a `proxy_resolve_callback` fills in, valid only during the callback.
///
/// Thread safety: only on the thread running the callback.
pub struct proxy_resolution {
    _private: [u8; 0],
}

impl Castable for proxy_resolution {
    type Ownership = OwnershipRef;
    type RustType = Answer;
}

/// What the callback has added so far.
#[derive(Debug, Default)]
pub(crate) struct Answer {
    addrs: Vec<IpAddr>,
    ttl: Option<Duration>,
}

/// A C callback and its userdata.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Callback {
    f: unsafe extern "C" fn(*mut c_void, *const c_char, *mut proxy_resolution) -> u32,
    userdata: *mut c_void,
}

// SAFETY: the header requires the callback to be callable from any thread and
// concurrently (see `proxy_resolve_callback`), with its `userdata`, until the forwarder
// is freed; the pointer is never dereferenced on the Rust side.
unsafe impl Send for Callback {}
// SAFETY: as for `Send`: calls from several threads at once are part of the contract.
unsafe impl Sync for Callback {}

impl Callback {
    pub(crate) fn new(
        f: unsafe extern "C" fn(*mut c_void, *const c_char, *mut proxy_resolution) -> u32,
        userdata: *mut c_void,
    ) -> Self {
        Callback { f, userdata }
    }

    /// Calls the C function for `name` on the current thread.
    fn call(&self, name: &str) -> io::Result<Resolution> {
        let host = CString::new(name)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "host name contains NUL"))?;
        let mut answer = Answer::default();
        let resolution = to_ref_mut_ptr::<proxy_resolution>(&mut answer);
        // SAFETY: `f` and `userdata` are the caller's, valid until the forwarder is freed
        // (the documented contract of `proxy_config_set_resolver_callback`); `host` is a
        // NUL-terminated string and `resolution` points to `answer`, both alive for the
        // whole call.
        let status = unsafe { (self.f)(self.userdata, host.as_ptr(), resolution) };
        if status != proxy_status::Ok as u32 {
            return Err(io::Error::other(format!(
                "{name}: the resolver callback returned status {status}"
            )));
        }
        if answer.addrs.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{name}: the resolver callback added no address"),
            ));
        }
        let valid_until = answer.ttl.and_then(|ttl| Instant::now().checked_add(ttl));
        Ok(Resolution::new(answer.addrs, valid_until))
    }
}

/// `proxy_core`'s view of a [`Callback`]: each lookup runs it on the blocking pool.
#[derive(Debug)]
pub(crate) struct CallbackResolver(pub(crate) Callback);

impl Resolve for CallbackResolver {
    fn resolve(&self, name: &str) -> Resolving {
        let callback = self.0;
        let name = name.to_owned();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || callback.call(&name))
                .await
                .map_err(io::Error::other)?
        })
    }
}

/// Adds an address to the answer: an IPv4 or IPv6 address such as `"10.0.0.1"` or
/// `"fd00::1"` (no port: the target's port is used). Repeated addresses are kept once.
/// Connections try the addresses in turn, starting with a different one each time.
///
/// Returns `PROXY_STATUS_INVALID_ADDRESS` for anything else; the answer is unchanged then.
///
/// Thread safety: only inside the callback, on its thread.
#[unsafe(no_mangle)]
pub extern "C" fn proxy_resolution_add(
    resolution: *mut proxy_resolution,
    address: *const c_char,
) -> proxy_status {
    ffi_panic_boundary! {
        let answer = try_mut(resolution, "resolution")?;
        let text = try_str(address, "address")?;
        let unbracketed = text
            .strip_prefix('[')
            .and_then(|s| s.strip_suffix(']'))
            .unwrap_or(text);
        let ip: IpAddr = unbracketed.parse().map_err(|_| {
            Failure::new(
                proxy_status::InvalidAddress,
                format!("`{text}` is not an IP address"),
            )
        })?;
        if !answer.addrs.contains(&ip) {
            answer.addrs.push(ip);
        }
        Ok(())
    }
}

/// Says how long the answer may be used, in milliseconds, like a DNS TTL; the forwarder
/// asks again then. Without it the answer is kept for 30 s. Answers are kept at least
/// 1 s and at most 300 s whatever the TTL.
///
/// Thread safety: only inside the callback, on its thread.
#[unsafe(no_mangle)]
pub extern "C" fn proxy_resolution_set_ttl(
    resolution: *mut proxy_resolution,
    ttl_ms: u64,
) -> proxy_status {
    ffi_panic_boundary! {
        try_mut(resolution, "resolution")?.ttl = Some(Duration::from_millis(ttl_ms));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    unsafe extern "C" fn two_addresses(
        userdata: *mut c_void,
        host: *const c_char,
        resolution: *mut proxy_resolution,
    ) -> u32 {
        assert!(userdata.is_null());
        assert_eq!(try_str(host, "host").unwrap(), "db.internal");
        assert_eq!(
            proxy_resolution_add(resolution, c"not an ip".as_ptr()),
            proxy_status::InvalidAddress
        );
        proxy_resolution_add(resolution, c"10.0.0.1".as_ptr());
        proxy_resolution_add(resolution, c"[fd00::1]".as_ptr());
        proxy_resolution_add(resolution, c"10.0.0.1".as_ptr());
        proxy_resolution_set_ttl(resolution, 5000);
        0
    }

    unsafe extern "C" fn fails(_: *mut c_void, _: *const c_char, r: *mut proxy_resolution) -> u32 {
        proxy_resolution_add(r, c"10.0.0.1".as_ptr());
        proxy_status::Resolver as u32
    }

    #[test]
    fn the_callback_fills_the_answer() {
        let r = Callback::new(two_addresses, std::ptr::null_mut())
            .call("db.internal")
            .unwrap();
        assert_eq!(
            r.addrs(),
            [
                "10.0.0.1".parse::<IpAddr>().unwrap(),
                "fd00::1".parse().unwrap()
            ]
        );
        assert!(r.valid_until().is_some());
    }

    #[test]
    fn a_failing_callback_is_an_error() {
        let e = Callback::new(fails, std::ptr::null_mut())
            .call("x")
            .unwrap_err();
        assert!(e.to_string().contains("status 13"), "{e}");
    }
}
