//! Kubernetes port-forward: the protocols `kubectl port-forward` and the client libraries
//! speak to a node (SPDY/3.1, the WebSocket channel protocol, SPDY tunnelled over
//! WebSocket), and the node side that copies each stream to the pod's port.
//!
//! This crate is being built up (see the project's issues). So far it has the wire formats,
//! each a small codec with no I/O, fuzzed ([`spdy`] with its [`spdy::Session`],
//! [`channel`], and [`status`] for failed requests), the objects a server serves so that kubectl finds its pods ([`objects`],
//! [`cluster_file`], [`discovery`]), the dialer that reaches a pod's port on a host or
//! inside its network namespace ([`dial`]), the node's side with I/O ([`forward`],
//! [`server`]), and the client's side with I/O ([`client`]: the upgrades, SPDY sessions
//! and their streams, WebSocket channel streams), and UDP through port-forward, an extension
//! only this crate's server speaks ([`udp`]).
#![deny(unsafe_code)]
#![doc(test(attr(deny(warnings))))]

pub mod channel;
pub mod client;
pub mod cluster_file;
pub mod dial;
pub mod discovery;
pub mod forward;
pub mod objects;
mod query;
pub mod server;
pub mod spdy;
pub mod status;
mod sys;
pub mod udp;
