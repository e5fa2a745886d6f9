//! Platform back ends: `splice(2)` through pipes on Linux, a fallback with the same API
//! elsewhere. The only module allowed to hold `unsafe` (today it needs none: rustix wraps
//! the system calls safely).

#[cfg(target_os = "linux")]
#[path = "linux.rs"]
mod imp;

#[cfg(not(target_os = "linux"))]
#[path = "fallback.rs"]
mod imp;

pub(crate) use imp::{Pipe, SPLICE, splice_unsupported};
