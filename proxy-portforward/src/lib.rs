//! Kubernetes port-forward: the protocols `kubectl port-forward` and the client libraries
//! speak to a node (SPDY/3.1, the WebSocket channel protocol, SPDY tunnelled over
//! WebSocket), and the node side that copies each stream to the pod's port.
//!
//! This crate is being built up (see the project's issues): its modules so far are the
//! wire formats, each a small codec with no I/O, fuzzed.
#![deny(unsafe_code)]
#![doc(test(attr(deny(warnings))))]
pub mod spdy;
