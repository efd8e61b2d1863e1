//! The numeric kernels of the student runtime: packed GEMMs over f32, f16-stored and int8
//! weights, the quantization steps around them, the Winograd F(2x2, 3x3) transforms
//! of 3x3 convolutions, and direct 3x3 convolutions (with a fused max pool) for first
//! layers.
//!
//! This is the one crate of the workspace that holds `unsafe` code for SIMD. Every public
//! function is safe: it checks its slice lengths and strides, checks that the requested
//! instruction set runs on this CPU, and only then enters code compiled for that set.
//!
//! # Instruction sets
//!
//! Every kernel takes an [`Isa`] first. [`Isa::best`] is the fastest level this CPU runs,
//! [`isa_from_env`] lets the `STUDENT_KERNELS` variable pin a lower one (for tests and
//! comparisons). Passing a level the CPU lacks returns [`KernelError::IsaUnavailable`].
//! Every level computes the same function: integer results are bit-identical to
//! [`reference`], float results differ only by the order of rounding (fused multiply-add),
//! except [`hgemm`] at [`Isa::NeonFp16`], which first rounds its activations to f16 (see
//! its documentation).
//!
//! # Packed B layouts
//!
//! The right-hand matrix B (K x N) of every GEMM is packed once, ahead of time. The packed
//! bytes are a file format: they are the same for every instruction set, so a model file
//! packed on one machine runs on any other.
//!
//! * **f32 and f16** ([`pack_b_f32`], [`pack_b_f16`]): the columns are cut into
//!   `ceil(N / 16)` panels of [`NR`] = 16 columns. Panel `p` holds, for `k` in `0..K`, the 16
//!   values `B[k][16p..16p + 16]`, columns past N set to zero. Panel `p` starts at element
//!   `16 * K * p`; the total is [`packed_len_f32`] = `ceil(N / 16) * 16 * K` elements.
//! * **int8** ([`pack_b_s8`], [`pack_b_u8`]): K is padded with zero rows up to `Kp`, a
//!   multiple of 4. Panel `p` holds, for each group `g` in `0..Kp / 4` and each column `j`
//!   in `0..16`, the four values `B[4g..4g + 4][16p + j]` (64 bytes per group, zero past N).
//!   Panel `p` starts at element `16 * Kp * p`; the total is [`packed_len_q8`] =
//!   `ceil(N / 16) * 16 * Kp`. Four consecutive k of one column are one 32-bit lane: the
//!   shape `vpdpbusd` and `sdot` consume.
//!
//! # Example
//!
//! ```
//! use student_kernels::{Bias, Isa, pack_b_f32, packed_len_f32, sgemm};
//!
//! # fn main() -> Result<(), student_kernels::KernelError> {
//! let (m, n, k) = (2, 3, 2);
//! let a = [1.0, 2.0, 3.0, 4.0]; // 2 x 2
//! let b = [1.0, 0.0, -1.0, 0.0, 1.0, 1.0]; // 2 x 3
//! let mut bp = vec![0.0; packed_len_f32(k, n)];
//! pack_b_f32(&b, k, n, &mut bp)?;
//! let mut c = [0.0; 6];
//! sgemm(Isa::best(), m, n, k, &a, k, &bp, Bias::None, 0.0, f32::INFINITY, &mut c, n)?;
//! assert_eq!(c, [1.0, 2.0, 1.0, 3.0, 4.0, 1.0]);
//! # Ok(())
//! # }
//! ```
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

mod blocks;
mod check;
mod conv3x3;
mod direct;
mod error;
mod isa;
mod pack;
mod pool;
mod qgemm;
mod quant;
mod sgemm;
mod unfold;
mod winograd;

pub mod reference;

#[cfg(target_arch = "aarch64")]
mod arm;
#[cfg(target_arch = "x86_64")]
mod x86;

pub use conv3x3::Conv3x3;
pub use direct::conv3x3_direct_f32;
pub use error::KernelError;
pub use isa::{ENV_VAR, Isa, isa_from_env};
pub use pack::{
    NR, interleave_4x16, pack_b_f16, pack_b_f16_strided, pack_b_f32, pack_b_f32_strided, pack_b_s8,
    pack_b_s8_strided, pack_b_u8, pack_b_u8_strided, packed_len_f16, packed_len_f32, packed_len_q8,
};
pub use pool::{Pool2x2, max_pool_2x2_f32, max_pool_2x2_u8};
pub use qgemm::{qgemm_s8u8, qgemm_u8s8};
pub use quant::{
    IntBias, Scale, dequantize_acc_f32, dequantize_u8, quantize_u8, requantize_max_pool_2x2_u8,
    requantize_u8,
};
pub use sgemm::{Bias, hgemm, sgemm};
pub use unfold::{PanelSource, unfold_panel_f32, unfold_panel_u8};
pub use winograd::{conv3x3_winograd_f32, winograd_weights_f32};
