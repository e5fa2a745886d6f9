//! Test support shared by the workspace's tests, benches and examples (`publish = false`):
//! one copy of each helper instead of one per test crate.
//!
//! - [`process`]: finding programs (failing with the package to install, never skipping),
//!   [`KillOnDrop`](process::KillOnDrop) children, unique [`TempPath`](process::TempPath)s;
//! - [`dns`]: a real DNS server, [`Dnsmasq`](dns::Dnsmasq);
//! - [`net`]: loopback addresses on kernel-chosen ports, and a test run again alone in a
//!   network namespace of its own (`unshare --net`).
//!
//! Nothing here sleeps to synchronise: waits either await an event or poll a condition
//! with a deadline, and every one is bounded.

pub mod dns;
pub mod net;
pub mod process;
