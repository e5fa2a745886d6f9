//! Shared by the integration tests.

pub(crate) mod recording;
#[allow(dead_code)] // Not every test file speaks SPDY.
pub(crate) mod spdy_client;
