//! The panic boundary every exported function sits behind.
//!
//! Unwinding out of an `extern "C"` function aborts the process, so each export runs its
//! body inside [`std::panic::catch_unwind`] through [`ffi_panic_boundary!`] (the shape of
//! rustls-ffi's `ffi_panic_boundary!` and hyper's `ffi_fn!`). A body returns
//! `Result<(), Failure>`; the boundary turns a failure into its status and records the
//! detail as the thread's last error, and a panic into `PROXY_STATUS_PANIC`.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::status::{Failure, proxy_status, set_last_error};

/// Runs the body behind the panic boundary.
///
/// - `ffi_panic_boundary! { body }`: `body` gives `Result<(), Failure>`; the export returns
///   its `proxy_status`, and failures set the last error.
/// - `ffi_panic_boundary! { quiet: body }`: the same without touching the last error
///   (for the functions that read it).
/// - `ffi_panic_boundary! { unit: body }`: for `void` functions (the `_free`s).
/// - `ffi_panic_boundary! { ptr: body }`: for functions returning a pointer; NULL on panic.
macro_rules! ffi_panic_boundary {
    (quiet: $($body:tt)*) => {
        $crate::panic::status(false, || -> ::std::result::Result<(), $crate::status::Failure> {
            $($body)*
        })
    };
    (unit: $($body:tt)*) => {
        $crate::panic::unit(|| { $($body)* })
    };
    (ptr: $($body:tt)*) => {
        $crate::panic::pointer(|| { $($body)* })
    };
    ($($body:tt)*) => {
        $crate::panic::status(true, || -> ::std::result::Result<(), $crate::status::Failure> {
            $($body)*
        })
    };
}

pub(crate) use ffi_panic_boundary;

/// Runs `f`; its failure or panic becomes a status, recorded as the last error when
/// `record` is set.
pub(crate) fn status(record: bool, f: impl FnOnce() -> Result<(), Failure>) -> proxy_status {
    let failure = match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => return proxy_status::Ok,
        Ok(Err(failure)) => failure,
        Err(payload) => Failure::new(proxy_status::Panic, panic_message(&*payload)),
    };
    if record {
        set_last_error(&failure.detail);
    }
    failure.status
}

/// Runs `f`, which returns nothing; a panic is recorded as the last error.
pub(crate) fn unit(f: impl FnOnce()) {
    if let Err(payload) = catch_unwind(AssertUnwindSafe(f)) {
        set_last_error(&panic_message(&*payload));
    }
}

/// Runs `f`, which returns a pointer; a panic gives NULL and is recorded as the last error.
pub(crate) fn pointer<T>(f: impl FnOnce() -> *mut T) -> *mut T {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|payload| {
        set_last_error(&panic_message(&*payload));
        std::ptr::null_mut()
    })
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    let what = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)");
    format!("internal error: the library panicked: {what}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panics_become_a_status_and_a_last_error() {
        let s = ffi_panic_boundary! {
            panic!("boom");
        };
        assert_eq!(s, proxy_status::Panic);
        let p: *mut u8 = ffi_panic_boundary! { ptr: panic!("boom") };
        assert!(p.is_null());
        ffi_panic_boundary! { unit: panic!("boom") };
    }

    #[test]
    fn failures_set_the_last_error_unless_quiet() {
        let s = ffi_panic_boundary! { Err(Failure::setting("first")) };
        assert_eq!(s, proxy_status::InvalidSetting);
        let s = ffi_panic_boundary! { quiet: Err(Failure::setting("second")) };
        assert_eq!(s, proxy_status::InvalidSetting);
        let mut buf = [0 as std::ffi::c_char; 16];
        let mut n = 0;
        let s = crate::proxy_last_error(buf.as_mut_ptr(), buf.len(), &mut n);
        assert_eq!(s, proxy_status::Ok);
        assert_eq!(n, 5);
    }
}
