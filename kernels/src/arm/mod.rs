//! aarch64 kernels: baseline NEON, the dot-product extension (`sdot`) and half-precision
//! arithmetic (`fmlal`, in `hgemm`).
//!
//! Every function here is compiled with `#[target_feature]` and reached only from the
//! public entry points, after `Isa::require` confirmed the features at run time; the
//! exception is `pack`, which uses only the architecture's baseline (Advanced SIMD).

pub(crate) mod hgemm;
pub(crate) mod pack;
pub(crate) mod qgemm;
pub(crate) mod quant;
pub(crate) mod sgemm;
