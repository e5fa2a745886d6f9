//! UDP forwarding: [`UdpForwarder`], its builder, the session table and batched I/O.

mod forwarder;
mod session;

pub(crate) use forwarder::Shared;
pub use forwarder::{Builder, UdpForwarder};
