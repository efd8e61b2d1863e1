//! Benchmarks only: see `benches/` and `compare_ort.py`.
