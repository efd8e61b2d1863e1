//! x86-64 kernels: AVX2 (with FMA and F16C), AVX-512 (F, BW, VL) and AVX-512 VNNI.
//!
//! Every function here is compiled with `#[target_feature]` and reached only from the
//! public entry points, after `Isa::require` confirmed the features at run time; the
//! exception is `pack`, which uses only the architecture's baseline (SSE2).

pub(crate) mod direct;
pub(crate) mod pack;
pub(crate) mod pool;
pub(crate) mod qgemm;
pub(crate) mod quant;
pub(crate) mod sgemm;
pub(crate) mod unfold;
pub(crate) mod winograd;

use std::arch::x86_64::__mmask16;

/// A 16-lane mask with the first `lanes` bits set (all 16 from 16 on).
#[inline(always)]
pub(crate) fn lanes_mask(lanes: usize) -> __mmask16 {
    if lanes >= crate::pack::NR {
        0xffff
    } else {
        (1u16 << lanes) - 1
    }
}
