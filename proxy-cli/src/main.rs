//! The `proxy` command.
fn main() {}
