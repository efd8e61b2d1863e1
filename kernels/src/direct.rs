//! Direct 3x3 convolutions for few input channels, with an optional fused 2x2 max pool.
//!
//! The first layer of an image model has one or three input channels: unfolding it for a
//! GEMM (K = 9 or 27) spends more time moving the unfolded matrix and the full-size
//! output than multiplying. Here every output is summed in registers straight from the
//! input rows, and a following 2x2, stride 2 max pool is applied before anything is
//! stored, so the unpooled output never reaches memory.
//!
//! # Blocks
//!
//! At AVX-512, outputs are computed in blocks of 2 rows by 16 columns by 4 output
//! channels. For each input channel, the block reads 4 input rows, each at 3 column
//! shifts (one 16-lane vector per row and shift, zero outside the input), and adds each
//! into the sums of the output rows it belongs to. A pooled block is one pooled row of 8
//! values. An odd last output row is computed with a dummy second row that is dropped.
//!
//! # Pooling and NaN
//!
//! Max pooling commutes with adding a per-channel bias and clamping (both are monotonic,
//! and so is rounding), so the raw sums are pooled first and the bias and clamp applied
//! once per pooled value. The window's values are compared in the order and with the
//! maximum of [`max_pool_2x2_f32`](crate::max_pool_2x2_f32), so a NaN is kept or passed
//! over exactly as there, and the fused pool gives the unfused one's result. The clamp is
//! [`reference::clamp`](crate::reference), which lets NaN through.

use crate::check;
use crate::conv3x3::{Conv3x3, Epilogue};
use crate::error::KernelError;
use crate::isa::Isa;
use crate::pool::max;
use crate::reference::clamp;

impl Conv3x3 {
    /// Whether [`conv3x3_direct_f32`] outruns unfolding and a GEMM at `isa`. At AVX-512 it
    /// does: on the teacher's first layer (1 -> 32 channels, 28 x 28, with its pool) it
    /// took 0.3-0.4 of the time. Elsewhere it runs a plain scalar loop (a vectorized
    /// portable form took 1.15-1.3 times the AVX2 GEMM's time): callers should unfold.
    pub fn direct_is_fast(isa: Isa) -> bool {
        matches!(isa, Isa::Avx512 | Isa::Avx512Vnni)
    }
}

/// `y = pool?(clamp(conv3x3(x, w) + bias, lo, hi))` over `batch` NCHW samples.
///
/// `x` holds `batch x c_in x h_in x w_in` values; `w` is the ONNX weight tensor
/// `[c_out, c_in, 3, 3]`; `bias` (optional) has one value per output channel; `y`
/// receives `batch x c_out` planes of [`Conv3x3::out_dims`]. Pass `-inf, inf` for no
/// clamp; a NaN stays NaN (see the module docs for the pool). Errors, having written
/// nothing, if `isa` is unavailable, a slice is short, or `pool` is set with an odd
/// `h_out` or `w_out`.
#[allow(clippy::too_many_arguments)]
pub fn conv3x3_direct_f32(
    isa: Isa,
    shape: &Conv3x3,
    batch: usize,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    lo: f32,
    hi: f32,
    y: &mut [f32],
) -> Result<(), KernelError> {
    isa.require()?;
    let s = *shape;
    let (x_len, y_len) = s.check_io(batch, x, y, bias)?;
    check::at_least("weights", check::product(s.c_out, s.c_in, 9), w.len())?;
    if y_len == 0 {
        return Ok(());
    }
    let e = Epilogue { bias, lo, hi };
    let (x, y) = (&x[..x_len], &mut y[..y_len]);
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 | Isa::Avx512Vnni => {
            // SAFETY: `require` confirmed that the CPU runs avx512f, and the lengths of
            // `x`, `w`, `y` and `bias` were checked against the shape above.
            unsafe { crate::x86::direct::conv_avx512(&s, batch, x, w, &e, y) }
        }
        _ => conv_portable(&s, batch, x, w, &e, y),
    }
    Ok(())
}

/// The portable loop, one output at a time, in the AVX-512 kernel's order of terms
/// (input channel, kernel row, kernel column). Kept small rather than fast: at the levels
/// that run it, unfolding and a GEMM are faster ([`Conv3x3::direct_is_fast`]), so the runtime
/// does not call it there. The slices' lengths must have been checked against the shape.
pub(crate) fn conv_portable(
    s: &Conv3x3,
    batch: usize,
    x: &[f32],
    w: &[f32],
    e: &Epilogue,
    y: &mut [f32],
) {
    let plane = s.h_in * s.w_in;
    // Output (oy, ox) of channel co of sample n, before the bias.
    let conv = |n: usize, co: usize, oy: usize, ox: usize| -> f32 {
        let mut sum = 0.0f32;
        for c in 0..s.c_in {
            let xs = &x[(n * s.c_in + c) * plane..][..plane];
            let ws = &w[(co * s.c_in + c) * 9..][..9];
            for ky in 0..3 {
                let Some(iy) = (oy + ky).checked_sub(s.pad[0]).filter(|&r| r < s.h_in) else {
                    continue;
                };
                for kx in 0..3 {
                    if let Some(ix) = (ox + kx).checked_sub(s.pad[1]).filter(|&c| c < s.w_in) {
                        sum += xs[iy * s.w_in + ix] * ws[3 * ky + kx];
                    }
                }
            }
        }
        sum
    };
    let (ph, pw) = s.out_dims();
    let mut out = y.iter_mut();
    for n in 0..batch {
        for co in 0..s.c_out {
            for oy in 0..ph {
                for ox in 0..pw {
                    let v = if s.pool {
                        let at = |dy: usize, dx: usize| conv(n, co, 2 * oy + dy, 2 * ox + dx);
                        // The pool's order (`crate::pool`): down each column, then across.
                        max(max(at(0, 0), at(1, 0)), max(at(0, 1), at(1, 1)))
                    } else {
                        conv(n, co, oy, ox)
                    };
                    if let Some(o) = out.next() {
                        *o = clamp(v + e.bias(co), e.lo, e.hi);
                    }
                }
            }
        }
    }
}
