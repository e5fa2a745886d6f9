//! UDP forwarding: [`UdpForwarder`], its builder, the session table and batched I/O.

mod budgets;
mod forwarder;
mod send;
mod session;
mod table;

pub(crate) use forwarder::Shared;
pub use forwarder::{Builder, UdpForwarder};
