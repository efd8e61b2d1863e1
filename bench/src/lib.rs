//! Benchmarks only: see `benches/` and `compare_ort.py`.
#![forbid(unsafe_code)]
