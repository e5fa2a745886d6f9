//! Status codes, their messages, and the calling thread's last error.

use std::cell::RefCell;
use std::ffi::c_char;
use std::io;

use crate::handle::copy_c_string;
use crate::panic::ffi_panic_boundary;

/// What a call did: `PROXY_STATUS_OK` (0) or the reason it failed.
///
/// Every value keeps its meaning forever: codes are only ever added, never renumbered or
/// reused, so a program may store or compare them. A failing call also leaves a longer,
/// specific text for the calling thread in `proxy_last_error`; `proxy_status_message`
/// gives a fixed text for each code.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum proxy_status {
    /// Success.
    Ok = 0,
    /// A pointer argument that must not be NULL was NULL.
    NullParameter = 1,
    /// A string argument is not valid UTF-8.
    InvalidUtf8 = 2,
    /// An address is not an IP address with a port, such as `127.0.0.1:8080` or `[::1]:0`.
    InvalidAddress = 3,
    /// A target is not `host:port`, `a.b.c.d:port` or `[v6]:port`.
    InvalidTarget = 4,
    /// A setting is out of range, unknown, missing or inconsistent with another one.
    InvalidSetting = 5,
    /// The caller's buffer cannot hold the string and its terminating NUL.
    BufferTooSmall = 6,
    /// An index is not below the number of items.
    IndexOutOfRange = 7,
    /// A listen address could not be bound (not available on this host, not permitted).
    BindFailed = 8,
    /// A listen address is in use by another socket.
    AddressInUse = 9,
    /// A reload named another transport than the forwarder was started with.
    ReloadTransportMismatch = 10,
    /// The forwarder was shut down.
    NotRunning = 11,
    /// The forwarder's threads could not be started.
    Runtime = 12,
    /// The resolver could not be set up (for the hickory resolver: the system's DNS
    /// configuration could not be read).
    Resolver = 13,
    /// Another I/O error.
    Io = 14,
    /// The library panicked: a bug. The call had no effect beyond what the last error
    /// says; the objects it was given may be freed but should not be used otherwise.
    Panic = 100,
}

impl proxy_status {
    /// Every code, for tests and the message table.
    pub(crate) const ALL: [proxy_status; 16] = [
        proxy_status::Ok,
        proxy_status::NullParameter,
        proxy_status::InvalidUtf8,
        proxy_status::InvalidAddress,
        proxy_status::InvalidTarget,
        proxy_status::InvalidSetting,
        proxy_status::BufferTooSmall,
        proxy_status::IndexOutOfRange,
        proxy_status::BindFailed,
        proxy_status::AddressInUse,
        proxy_status::ReloadTransportMismatch,
        proxy_status::NotRunning,
        proxy_status::Runtime,
        proxy_status::Resolver,
        proxy_status::Io,
        proxy_status::Panic,
    ];

    /// The code with value `code`, if there is one.
    pub(crate) fn from_u32(code: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|s| *s as u32 == code)
    }

    /// The fixed message of the code.
    pub(crate) fn message(self) -> &'static str {
        match self {
            proxy_status::Ok => "success",
            proxy_status::NullParameter => "a required pointer argument was NULL",
            proxy_status::InvalidUtf8 => "a string argument is not valid UTF-8",
            proxy_status::InvalidAddress => "invalid address: expected IP:PORT or [IPv6]:PORT",
            proxy_status::InvalidTarget => "invalid target: expected HOST:PORT",
            proxy_status::InvalidSetting => "invalid setting",
            proxy_status::BufferTooSmall => "the buffer is too small",
            proxy_status::IndexOutOfRange => "index out of range",
            proxy_status::BindFailed => "failed to bind a listen address",
            proxy_status::AddressInUse => "a listen address is already in use",
            proxy_status::ReloadTransportMismatch => {
                "a reload cannot change the forwarder's transport"
            }
            proxy_status::NotRunning => "the forwarder was shut down",
            proxy_status::Runtime => "the forwarder's threads could not be started",
            proxy_status::Resolver => "the resolver could not be set up",
            proxy_status::Io => "I/O error",
            proxy_status::Panic => "internal error: the library panicked",
        }
    }
}

/// A failed call: its status and the detail kept as the thread's last error.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) status: proxy_status,
    pub(crate) detail: String,
}

impl Failure {
    pub(crate) fn new(status: proxy_status, detail: impl Into<String>) -> Self {
        Failure {
            status,
            detail: detail.into(),
        }
    }

    pub(crate) fn null(name: &str) -> Self {
        Failure::new(
            proxy_status::NullParameter,
            format!("`{name}` must not be NULL"),
        )
    }

    pub(crate) fn setting(detail: impl Into<String>) -> Self {
        Failure::new(proxy_status::InvalidSetting, detail)
    }
}

impl From<proxy_core::BuildError> for Failure {
    /// `key: why`, as a `proxy_config_set` error names its key.
    fn from(e: proxy_core::BuildError) -> Self {
        Failure::setting(format!("{}: {e}", e.key()))
    }
}

impl From<proxy_core::Error> for Failure {
    fn from(e: proxy_core::Error) -> Self {
        let status = match e.kind() {
            proxy_core::ErrorKind::Bind if io_kind(&e) == Some(io::ErrorKind::AddrInUse) => {
                proxy_status::AddressInUse
            }
            proxy_core::ErrorKind::Bind => proxy_status::BindFailed,
            proxy_core::ErrorKind::Reload => proxy_status::ReloadTransportMismatch,
            _ => proxy_status::Io,
        };
        Failure::new(status, with_sources(&e))
    }
}

/// The kind of the `io::Error` behind `e`, if it has one.
pub(crate) fn io_kind(e: &proxy_core::Error) -> Option<io::ErrorKind> {
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<io::Error>())
        .map(io::Error::kind)
}

/// `e` and its sources, `outer: inner: innermost`.
pub(crate) fn with_sources(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

thread_local! {
    /// The detail of the last failed call on this thread.
    static LAST_ERROR: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Records `detail` as this thread's last error.
pub(crate) fn set_last_error(detail: &str) {
    // `try_with`: during thread teardown the slot may be gone; the error is lost then.
    let _ = LAST_ERROR.try_with(|e| {
        let mut e = e.borrow_mut();
        e.clear();
        e.push_str(detail);
    });
}

fn last_error() -> String {
    LAST_ERROR
        .try_with(|e| e.borrow().clone())
        .unwrap_or_default()
}

/// Writes the fixed message of `status` (a `proxy_status` value) to `buf`.
///
/// The text is NUL-terminated; `*out_n` receives its length without the NUL. With
/// `buf == NULL` and `len == 0`, nothing is written but `*out_n`, which receives the
/// length, so the caller can size a buffer: the buffer needs `*out_n + 1` bytes. An unknown
/// code gets the message `unknown status N`.
///
/// Returns `PROXY_STATUS_NULL_PARAMETER` when `out_n` is NULL (or `buf` is NULL with
/// `len > 0`) and `PROXY_STATUS_BUFFER_TOO_SMALL` when `len` cannot hold the text and its
/// NUL; nothing is written then. Never changes the calling thread's last error.
///
/// Thread safety: may be called from any thread at any time.
#[unsafe(no_mangle)]
pub extern "C" fn proxy_status_message(
    status: u32,
    buf: *mut c_char,
    len: usize,
    out_n: *mut usize,
) -> proxy_status {
    ffi_panic_boundary! { quiet:
        match proxy_status::from_u32(status) {
            Some(s) => copy_c_string(s.message(), buf, len, out_n),
            None => copy_c_string(&format!("unknown status {status}"), buf, len, out_n),
        }
    }
}

/// Writes the detail of the last call that failed on the calling thread to `buf`: what
/// went wrong and with which argument, such as `failed to bind listen address
/// (127.0.0.1:8080): Address already in use (os error 98)`.
///
/// Every call that returns a status other than `PROXY_STATUS_OK` sets it (except this
/// function and `proxy_status_message`, which never change it); successful calls leave
/// it as it was, like `errno`. Before any failure it is the empty string. It is kept per
/// thread: a failure on one thread is not seen on another.
///
/// The buffer contract is `proxy_status_message`'s: NUL-terminated, `*out_n` receives the
/// length without the NUL, `buf == NULL` with `len == 0` asks for the length only,
/// `PROXY_STATUS_BUFFER_TOO_SMALL` writes nothing.
///
/// Thread safety: may be called from any thread at any time; it reads that thread's own
/// last error.
#[unsafe(no_mangle)]
pub extern "C" fn proxy_last_error(
    buf: *mut c_char,
    len: usize,
    out_n: *mut usize,
) -> proxy_status {
    ffi_panic_boundary! { quiet:
        copy_c_string(&last_error(), buf, len, out_n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_stable() {
        let values: Vec<u32> = proxy_status::ALL.iter().map(|s| *s as u32).collect();
        // Pinned: changing a value breaks every C program built against an older header.
        assert_eq!(
            values,
            [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 100]
        );
        for s in proxy_status::ALL {
            assert_eq!(proxy_status::from_u32(s as u32), Some(s));
            assert!(!s.message().is_empty());
        }
        assert_eq!(proxy_status::from_u32(15), None);
    }
}
