//! Helpers shared by the integration tests of the `proxy` binary: the process under test
//! ([`proxy`]), its upstreams ([`echo`]), clients through it ([`client`]), its admin server
//! ([`http`]), a network namespace of a test's own ([`netns`]), a real DNS server
//! ([`dnsmasq`], the workspace's `testing/dnsmasq.rs`, shared with proxy-core's tests) and
//! a real DNS client ([`dig`]). Each test crate uses only part of them.
#![allow(dead_code)]

pub(crate) mod client;
pub(crate) mod dig;
#[path = "../../../testing/dnsmasq.rs"]
pub(crate) mod dnsmasq;
pub(crate) mod echo;
pub(crate) mod http;
#[cfg(target_os = "linux")]
pub(crate) mod netns;
pub(crate) mod proxy;
