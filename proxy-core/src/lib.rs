//! An embeddable TCP/UDP forwarding proxy.
//!
//! `proxy-core` listens on one or more addresses and forwards every connection to an
//! upstream [`Target`]: a host name (resolved through a pluggable [`resolve::Resolve`],
//! cached with its TTL and refreshed in the background) or an IP address. It is the
//! library behind the `proxy` command, a drop-in for Kubernetes' `proxy-to-service`.
//!
//! - Connects try the resolved addresses in round-robin order, with a timeout per attempt
//!   and a budget for all of them ([`Timeouts`]).
//! - The relay moves bytes with `splice(2)` through pooled pipes on Linux (no copy to user
//!   space) and through pooled buffers elsewhere; idle connections hold neither.
//! - A FIN is forwarded as a FIN while the other direction goes on; a reset is forwarded
//!   as a reset. One idle timer counts traffic in both directions.
//! - One failing connection never affects another, and the accept loop survives running
//!   out of file descriptors.
//!
//! # Examples
//!
//! Forward `127.0.0.1:8080` to `example.com:80` until Ctrl-C, then drain for 10 s:
//!
//! ```no_run
//! use std::time::Duration;
//! use proxy_core::{TcpForwarder, resolve::HickoryResolver};
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let forwarder = TcpForwarder::builder(["127.0.0.1:8080".parse()?], "example.com:80".parse()?)
//!         .resolver(HickoryResolver::from_system_conf()?)
//!         .idle_timeout(Duration::from_secs(600))
//!         .build()?;
//!     let handle = forwarder.start()?;
//!     for addr in handle.local_addrs() {
//!         println!("Forwarding from {addr} -> example.com:80");
//!     }
//!     tokio::signal::ctrl_c().await?;
//!     handle.shutdown(Duration::from_secs(10)).await;
//!     Ok(())
//! }
//! ```
#![deny(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![doc(test(attr(deny(warnings))))]

mod balance;
mod cidr;
mod dial;
mod error;
mod forward;
mod gate;
mod handle;
mod limit;
mod listen;
mod pool;
pub mod proxy_protocol;
pub mod resolve;
mod same_port;
pub mod sni;
pub mod spec;
mod stats;
pub mod supervise;
mod sys;
#[cfg(target_os = "linux")]
#[cfg_attr(docsrs, doc(cfg(target_os = "linux")))]
pub mod systemd;
mod target;
mod tcp;
mod timeout;
pub mod tls;
mod udp;
mod upstream;
pub mod value;
mod workers;

pub use balance::{Balance, Ejection, HealthCheck, Opened, Picker};
pub use cidr::{Access, Cidr, CidrError};
pub use error::{BuildError, Error, ErrorKind, Side, TimeoutKind};
pub use forward::Forwarder;
pub use gate::{Admitted, Gate, Refusal};
pub use handle::{ForwarderHandle, StatsReader};
pub use limit::{Limits, Rate};
pub use proxy_protocol::{AcceptProxy, ProxyProtocol};
pub use same_port::{SAME_PORT_TRIES, SamePortError, start_same_port};
pub use spec::{ForwardSpec, Listen, Transport};
pub use stats::{ConnectFailures, EndpointStats, Limited, StatsSnapshot, UdpStats};
pub use target::{Host, Target, TargetError};
pub use tcp::{Builder as TcpForwarderBuilder, RelayMode, TcpForwarder};
pub use timeout::{MAX_DURATION, Timeouts};
pub use udp::{Builder as UdpForwarderBuilder, UdpForwarder};
pub use upstream::{Upstream, UpstreamOpen};
pub use workers::Workers;

/// The README's examples, compiled as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;
