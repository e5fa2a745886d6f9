//! UDP forwarding: [`UdpForwarder`], its builder, the session table and batched I/O.

mod forwarder;
mod session;

pub use forwarder::{Builder, UdpForwarder};
pub(crate) use forwarder::{Shared, Socket, spawn_listener};
