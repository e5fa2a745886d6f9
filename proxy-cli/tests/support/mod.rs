//! Helpers shared by the integration tests of the `proxy` binary: the process under test
//! ([`proxy`]) and a real DNS server ([`dnsmasq`]). Each test crate uses only part of them.
#![allow(dead_code)]

pub(crate) mod dnsmasq;
pub(crate) mod proxy;
