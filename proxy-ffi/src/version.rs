//! `proxy_version`: which build of the library a program runs.

use std::ffi::{CStr, c_char};

use crate::panic::ffi_panic_boundary;

/// `0.1.0 (1a2b3c4d5e6f)`, as `proxy --version` prints it.
const VERSION: &CStr = match CStr::from_bytes_with_nul(
    concat!(
        env!("CARGO_PKG_VERSION"),
        " (",
        env!("PROXY_GIT_REVISION"),
        ")\0"
    )
    .as_bytes(),
) {
    Ok(v) => v,
    Err(_) => panic!("the version has a NUL inside"),
};

/// The library's version and the git revision it was built from, as `proxy --version`
/// prints them: `0.1.0 (1a2b3c4d5e6f)`. The revision is `unknown` for a build outside a git
/// checkout, and ends in `-modified` for one from a tree with uncommitted changes.
///
/// The string is static and NUL-terminated: never free or change it. Never NULL.
///
/// Thread safety: may be called from any thread at any time.
#[unsafe(no_mangle)]
pub extern "C" fn proxy_version() -> *const c_char {
    ffi_panic_boundary! { ptr: VERSION.as_ptr().cast_mut() }.cast_const()
}
