//! Criterion benchmark of the TCP relay (placeholder until the bench lands).
fn main() {}
