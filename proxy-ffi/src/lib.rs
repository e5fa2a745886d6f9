//! C ABI for `proxy-core`.
//!
//! The crate builds a `cdylib` and a `staticlib`; its functions and the generated
//! `include/proxy.h` come with the C API work (see the CHANGELOG). It exports nothing yet,
//! on purpose: no placeholder functions that would have to be kept compatible.
