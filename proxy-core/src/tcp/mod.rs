//! TCP forwarding: [`TcpForwarder`], its builder, connect with failover, and the relay.

mod connect;
mod copy;
mod forwarder;
mod peek;
mod relay;
mod splice;

pub use forwarder::{Builder, TcpForwarder};
pub(crate) use forwarder::{Shared, spawn_listener};
pub use relay::RelayMode;
