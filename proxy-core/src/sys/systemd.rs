//! Taking ownership of the sockets systemd passes to a socket-activated service
//! (`sd_listen_fds(3)`): descriptors 3, 4, ... up to `LISTEN_FDS` of them.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

/// The first descriptor systemd passes (`SD_LISTEN_FDS_START`).
pub(crate) const LISTEN_FDS_START: RawFd = 3;

/// Set once the passed descriptors have been taken, so no descriptor gets two owners.
static TAKEN: AtomicBool = AtomicBool::new(false);

/// Takes ownership of descriptors `3..3 + n`, marking each close-on-exec.
///
/// The caller has checked that `LISTEN_PID` names this process, so these descriptors were
/// handed over to it by the socket-activation protocol. They are taken at most once per
/// process: a second call fails with `AlreadyExists`. A descriptor that is not open fails
/// with `EBADF` before anything is taken.
pub(crate) fn take_listen_fds(n: usize) -> io::Result<Vec<OwnedFd>> {
    let n = RawFd::try_from(n)
        .ok()
        .filter(|n| n.checked_add(LISTEN_FDS_START).is_some())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "LISTEN_FDS is too large"))?;
    let fds = LISTEN_FDS_START..LISTEN_FDS_START + n;
    // Check every descriptor is open before owning any, so a bad environment leaves the
    // descriptors alone.
    for fd in fds.clone() {
        // SAFETY: F_GETFD only reads the descriptor flags of `fd`, open or not; it neither
        // closes nor otherwise changes any descriptor.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(
                e.kind(),
                format!("LISTEN_FDS: descriptor {fd} is not open: {e}"),
            ));
        }
    }
    if TAKEN.swap(true, Ordering::SeqCst) {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "the sockets passed by systemd were already taken",
        ));
    }
    fds.map(|fd| {
        // SAFETY: `fd` is open (checked above), and the socket-activation protocol hands
        // descriptors LISTEN_FDS_START.. over to the process named by LISTEN_PID, which
        // the caller checked is this one; nothing else in the process owns them. `TAKEN`
        // makes this the only place that ever takes them, so each gets exactly one owner.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        // systemd clears FD_CLOEXEC so the descriptors survive its exec of us; set it
        // again so they do not leak into processes we start.
        rustix::io::fcntl_setfd(&owned, rustix::io::FdFlags::CLOEXEC)?;
        Ok(owned)
    })
    .collect()
}
