//! Criterion benchmarks for proxy-core; see `benches/`.
