//! Platform back ends: `splice(2)` through pipes on Linux, a fallback with the same API
//! elsewhere; batched UDP I/O with packet info. The only module allowed to hold `unsafe`:
//! splice goes through rustix's safe wrappers, `recvmmsg`/`sendmmsg` and the SIOCOUTQ
//! ioctl through libc, the UDP batches' memory is mapped in `region.rs`, and the
//! descriptors systemd passes become `OwnedFd`s in `systemd.rs`; the BPF socket map of
//! `relay = sockmap` is made in `sockmap.rs`.

#[cfg(target_os = "linux")]
#[path = "linux.rs"]
mod imp;

#[cfg(not(target_os = "linux"))]
#[path = "fallback.rs"]
mod imp;

#[cfg(target_os = "linux")]
mod linux_udp;
#[cfg(target_os = "linux")]
pub(crate) mod region;
#[cfg(target_os = "linux")]
pub(crate) mod sockmap;
#[cfg(target_os = "linux")]
pub(crate) mod systemd;
pub(crate) mod udp;

pub(crate) use imp::{Pipe, SPLICE, peek, splice_unsupported, unacknowledged};
