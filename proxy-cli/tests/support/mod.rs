//! Helpers shared by the integration tests of the `proxy` binary: the process under test
//! ([`proxy`]), its admin server ([`http`]) and a real DNS client ([`dig`]). Each test
//! crate uses only part of them. What the tests of other crates need too (echo servers,
//! clients with deadlines, payloads, the dnsmasq harness, network namespaces, temp files,
//! finding programs) is in the workspace's test kit, `proxy_testkit`.
#![allow(dead_code)]

pub(crate) mod dig;
pub(crate) mod http;
pub(crate) mod port_forward;
pub(crate) mod proxy;
