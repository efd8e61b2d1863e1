//! x86-64 kernels: AVX2 (with FMA and F16C), AVX-512 (F, BW, VL) and AVX-512 VNNI.
//!
//! Every function here is compiled with `#[target_feature]` and reached only from the
//! public entry points, after `Isa::require` confirmed the features at run time; the
//! exception is `pack`, which uses only the architecture's baseline (SSE2).

pub(crate) mod pack;
pub(crate) mod pool;
pub(crate) mod qgemm;
pub(crate) mod quant;
pub(crate) mod sgemm;
pub(crate) mod unfold;
pub(crate) mod winograd;
