//! Shared by the integration tests.

pub(crate) mod spdy_client;
