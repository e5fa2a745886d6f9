//! TCP forwarding: [`TcpForwarder`], its builder, connect with failover, and the relay.

mod copy;
mod forwarder;
mod peek;
mod relay;
mod route;
mod socket;
#[cfg(target_os = "linux")]
mod sockmap;
mod splice;
mod stream_relay;

pub(crate) use forwarder::Shared;
pub use forwarder::{Builder, TcpForwarder};
pub use relay::RelayMode;
