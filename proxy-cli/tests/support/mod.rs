//! Helpers shared by the integration tests of the `proxy` binary: the process under test
//! ([`proxy`]), a real DNS server ([`dnsmasq`], the workspace's `testing/dnsmasq.rs`, shared
//! with proxy-core's tests) and a real DNS client ([`dig`]). Each test crate uses only part
//! of them.
#![allow(dead_code)]

pub(crate) mod dig;
#[path = "../../../testing/dnsmasq.rs"]
pub(crate) mod dnsmasq;
pub(crate) mod proxy;
