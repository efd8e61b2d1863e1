//! Quantization steps around the integer GEMMs: the epilogues that turn i32 sums into
//! uint8 ([`requantize_u8`], and [`requantize_max_pool_2x2_u8`] with a max pool fused in) or
//! f32 ([`dequantize_acc_f32`]), and ONNX's elementwise QuantizeLinear / DequantizeLinear for
//! uint8 ([`quantize_u8`], [`dequantize_u8`]).
//!
//! These loops are memory-bound, so the AVX-512 levels run the AVX2 code, except the
//! requantizing ones: their AVX-512 rows take 16 elements a step and mask the last one
//! rather than finishing in scalar code (rows of a convolution's 7 x 7 or 14 x 14 outputs
//! are not multiples of 8). Every level is bit-identical to
//! [`reference`](crate::reference): the f32 steps are one conversion and
//! one multiply (or divide), with no fused operation, and rounding is half to even.

use crate::check;
use crate::error::KernelError;
use crate::isa::Isa;
use crate::pool::{self, Pool2x2};

/// An i32 bias added to the sums before scaling.
#[derive(Clone, Copy, Debug)]
pub enum IntBias<'a> {
    /// No bias.
    None,
    /// One value per row (length at least m).
    PerRow(&'a [i32]),
    /// One value per column (length at least n).
    PerCol(&'a [i32]),
}

/// The f32 factor from the integer sums to real values (or to output units).
#[derive(Clone, Copy, Debug)]
pub enum Scale<'a> {
    /// One factor for every element (per-tensor quantization).
    Uniform(f32),
    /// One factor per row (length at least m): per-channel weights when rows are channels.
    PerRow(&'a [f32]),
    /// One factor per column (length at least n).
    PerCol(&'a [f32]),
}

/// One row's view of a bias or scale: one value for the row, or one per column.
#[derive(Clone, Copy)]
pub(crate) enum Vals<'a, T> {
    Splat(T),
    Cols(&'a [T]),
}

impl<T: Copy> Vals<'_, T> {
    pub(crate) fn at(&self, j: usize) -> T {
        match self {
            Vals::Splat(x) => *x,
            Vals::Cols(xs) => xs[j],
        }
    }

    /// The values from column `j` on.
    pub(crate) fn from(&self, j: usize) -> Self {
        match self {
            Vals::Splat(x) => Vals::Splat(*x),
            Vals::Cols(xs) => Vals::Cols(&xs[j..]),
        }
    }

    /// How many columns have a value: unbounded for a splat.
    #[cfg(target_arch = "x86_64")]
    pub(crate) fn cols(&self) -> usize {
        match self {
            Vals::Splat(_) => usize::MAX,
            Vals::Cols(xs) => xs.len(),
        }
    }
}

/// One row of [`requantize_u8`] as every level takes it: its bias and scale, the zero
/// point, and the clamp bounds `lo` and `hi` already offset by the zero point (integers, so
/// exact in f32).
#[derive(Clone, Copy)]
pub(crate) struct RequantRow<'a> {
    pub(crate) bias: Vals<'a, i32>,
    pub(crate) scale: Vals<'a, f32>,
    pub(crate) zero_point: i32,
    pub(crate) lo: f32,
    pub(crate) hi: f32,
}

impl RequantRow<'_> {
    /// The row from column `j` on.
    pub(crate) fn from(&self, j: usize) -> Self {
        RequantRow {
            bias: self.bias.from(j),
            scale: self.scale.from(j),
            ..*self
        }
    }

    /// How many of the first `n` columns have a bias and a scale.
    #[cfg(target_arch = "x86_64")]
    pub(crate) fn cols(&self, n: usize) -> usize {
        n.min(self.bias.cols()).min(self.scale.cols())
    }
}

/// The walk of the fixed-width SIMD loops: `step(j, a, b)` on each whole piece of `L`
/// elements of both slices (`j` the index of its first element), in order. Returns how
/// many elements of `a` that covered (`b` is at least as long); the caller finishes the
/// rest with the scalar loop, which computes the same bits.
#[inline(always)]
pub(crate) fn by_pieces<const L: usize, A, B>(
    a: &[A],
    b: &mut [B],
    mut step: impl FnMut(usize, &[A; L], &mut [B; L]),
) -> usize {
    let (pieces, _) = a.as_chunks::<L>();
    for (i, (a, b)) in pieces.iter().zip(b.as_chunks_mut::<L>().0).enumerate() {
        step(L * i, a, b);
    }
    L * pieces.len()
}

impl IntBias<'_> {
    pub(crate) fn at(&self, i: usize, j: usize) -> i32 {
        self.row(i, usize::MAX).at(j)
    }

    /// Row `i` of an `m x n` problem (lengths checked by `check`).
    fn row(&self, i: usize, n: usize) -> Vals<'_, i32> {
        match self {
            IntBias::None => Vals::Splat(0),
            IntBias::PerRow(b) => Vals::Splat(b[i]),
            IntBias::PerCol(b) => Vals::Cols(&b[..n.min(b.len())]),
        }
    }

    fn check(&self, m: usize, n: usize) -> Result<(), KernelError> {
        match self {
            IntBias::None => Ok(()),
            IntBias::PerRow(b) => check::at_least("bias (per row)", m, b.len()),
            IntBias::PerCol(b) => check::at_least("bias (per column)", n, b.len()),
        }
    }
}

impl Scale<'_> {
    pub(crate) fn at(&self, i: usize, j: usize) -> f32 {
        self.row(i, usize::MAX).at(j)
    }

    fn row(&self, i: usize, n: usize) -> Vals<'_, f32> {
        match self {
            Scale::Uniform(s) => Vals::Splat(*s),
            Scale::PerRow(s) => Vals::Splat(s[i]),
            Scale::PerCol(s) => Vals::Cols(&s[..n.min(s.len())]),
        }
    }

    fn check(&self, m: usize, n: usize) -> Result<(), KernelError> {
        match self {
            Scale::Uniform(_) => Ok(()),
            Scale::PerRow(s) => check::at_least("scale (per row)", m, s.len()),
            Scale::PerCol(s) => check::at_least("scale (per column)", n, s.len()),
        }
    }
}

/// The largest zero point whose clamping bounds f32 holds exactly.
const MAX_ZERO_POINT: i32 = 1 << 23;

/// `out = clamp(round_half_even((acc + bias) as f32 * scale) + zero_point, lo, hi)`.
///
/// `acc` is `m x n` with row stride `ldacc` (the output of a qgemm), `out` is `m x n`
/// uint8 with row stride `ldout`. A fused ReLU or ReLU6 becomes `lo` / `hi`. The clamp is
/// applied in f32 before rounding, so a NaN (from a NaN scale) gives `lo`. Errors if `isa`
/// is unavailable, a slice is short, or `|zero_point| > 2^23`.
#[allow(clippy::too_many_arguments)]
pub fn requantize_u8(
    isa: Isa,
    m: usize,
    n: usize,
    acc: &[i32],
    ldacc: usize,
    bias: IntBias,
    scale: Scale,
    zero_point: i32,
    lo: u8,
    hi: u8,
    out: &mut [u8],
    ldout: usize,
) -> Result<(), KernelError> {
    check_epilogue(isa, m, n, acc.len(), ldacc, bias, scale, out.len(), ldout)?;
    if !(-MAX_ZERO_POINT..=MAX_ZERO_POINT).contains(&zero_point) {
        return Err(KernelError::ZeroPointOutOfRange { zero_point });
    }
    // Bounds in units before the zero point is added; integers, so exact in f32.
    let lo = (lo as i32 - zero_point) as f32;
    let hi = (hi as i32 - zero_point) as f32;

    if n == 0 {
        return Ok(());
    }
    for i in 0..m {
        let acc = &acc[i * ldacc..][..n];
        let out = &mut out[i * ldout..][..n];
        let row = RequantRow {
            bias: bias.row(i, n),
            scale: scale.row(i, n),
            zero_point,
            lo,
            hi,
        };
        // SAFETY: `check_epilogue` ran `isa.require()`.
        unsafe { requantize_row(isa, acc, row, out) };
    }
    Ok(())
}

/// One row of [`requantize_u8`] at `isa`.
///
/// # Safety
/// `isa.require()` must have succeeded.
unsafe fn requantize_row(isa: Isa, acc: &[i32], row: RequantRow, out: &mut [u8]) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 | Isa::Avx512Vnni => {
            // SAFETY: the CPU runs avx512f, bw and vl (the caller's `require`).
            unsafe { crate::x86::quant::requantize_row_avx512(acc, row, out) }
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => {
            // SAFETY: the CPU runs avx2 (the caller's `require`).
            unsafe { crate::x86::quant::requantize_row(acc, row, out) }
        }
        #[cfg(target_arch = "aarch64")]
        Isa::Neon | Isa::NeonDotprod | Isa::NeonFp16 => {
            // SAFETY: the CPU runs neon (the caller's `require`).
            unsafe { crate::arm::quant::requantize_row(acc, row, out) }
        }
        _ => requantize_scalar(acc, row, out),
    }
}

/// [`requantize_u8`] of a 2 x 2, stride 2 max pool of the sums, in one pass: plane `c` of
/// `acc` (one output channel of a convolution, `p.h_in x p.w_in` sums) becomes
/// `p.h_out x p.w_out` bytes
/// `clamp(round_half_even((m + bias[c]) as f32 * scale[c]) + zero_point, lo, hi)`, where
/// `m` is the largest of the window's four sums (integer maxima: exact, in any order).
///
/// With a positive scale every step after the maximum is non-decreasing, so while
/// `m + bias[c]` does not overflow this is exactly requantizing every sum and then max
/// pooling the bytes, for a quarter of the requantizing and no second pass over memory.
/// Errors as [`requantize_u8`] and [`max_pool_2x2_u8`](crate::max_pool_2x2_u8) do, and
/// when `bias` or `scale` has fewer than `p.planes` values.
#[allow(clippy::too_many_arguments)]
pub fn requantize_max_pool_2x2_u8(
    isa: Isa,
    p: Pool2x2,
    acc: &[i32],
    bias: &[i32],
    scale: &[f32],
    zero_point: i32,
    lo: u8,
    hi: u8,
    out: &mut [u8],
) -> Result<(), KernelError> {
    isa.require()?;
    p.check(acc.len(), out.len())?;
    check::at_least("bias (per plane)", p.planes, bias.len())?;
    check::at_least("scale (per plane)", p.planes, scale.len())?;
    if !(-MAX_ZERO_POINT..=MAX_ZERO_POINT).contains(&zero_point) {
        return Err(KernelError::ZeroPointOutOfRange { zero_point });
    }
    if p.planes == 0 || p.h_out == 0 || p.w_out == 0 {
        return Ok(());
    }
    let bounds = RequantRow {
        bias: Vals::Splat(0),
        scale: Vals::Splat(1.0),
        zero_point,
        lo: (lo as i32 - zero_point) as f32,
        hi: (hi as i32 - zero_point) as f32,
    };
    #[cfg(target_arch = "x86_64")]
    if let Isa::Avx512 | Isa::Avx512Vnni = isa {
        // SAFETY: `require` confirmed avx512f, bw and vl; `check` the shape against the
        // slices, and the per-plane values are at least `p.planes` long.
        unsafe { crate::x86::quant::requantize_max_pool_avx512(p, acc, bias, scale, bounds, out) };
        return Ok(());
    }
    // Elsewhere each output row is pooled into a short buffer, then requantized by the
    // level's row loop.
    let (plane_in, plane_out) = (p.h_in * p.w_in, p.h_out * p.w_out);
    let mut pooled = [0i32; 64];
    for c in 0..p.planes {
        let row = RequantRow {
            bias: Vals::Splat(bias[c]),
            scale: Vals::Splat(scale[c]),
            ..bounds
        };
        let src = &acc[c * plane_in..][..plane_in];
        let dst = &mut out[c * plane_out..][..plane_out];
        for (oy, out_row) in dst.chunks_exact_mut(p.w_out).enumerate() {
            let (r0, r1) = (&src[2 * oy * p.w_in..], &src[(2 * oy + 1) * p.w_in..]);
            for (i, piece) in out_row.chunks_mut(pooled.len()).enumerate() {
                let (from, len) = (2 * i * pooled.len(), 2 * piece.len());
                let part = &mut pooled[..piece.len()];
                pool::portable_row(&r0[from..][..len], &r1[from..][..len], part);
                // SAFETY: `require` succeeded above.
                unsafe { requantize_row(isa, part, row, piece) };
            }
        }
    }
    Ok(())
}

/// `out = clamp((acc + bias) as f32 * scale, lo, hi)`: the float epilogue of a qgemm.
///
/// Shapes as in [`requantize_u8`]; a NaN passes the clamp unchanged, and `hi` wins when
/// `lo > hi`.
#[allow(clippy::too_many_arguments)]
pub fn dequantize_acc_f32(
    isa: Isa,
    m: usize,
    n: usize,
    acc: &[i32],
    ldacc: usize,
    bias: IntBias,
    scale: Scale,
    lo: f32,
    hi: f32,
    out: &mut [f32],
    ldout: usize,
) -> Result<(), KernelError> {
    check_epilogue(isa, m, n, acc.len(), ldacc, bias, scale, out.len(), ldout)?;
    if n == 0 {
        return Ok(());
    }
    for i in 0..m {
        let acc = &acc[i * ldacc..][..n];
        let out = &mut out[i * ldout..][..n];
        let (bias, scale) = (bias.row(i, n), scale.row(i, n));
        match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 | Isa::Avx512 | Isa::Avx512Vnni => {
                // SAFETY: `check_epilogue` checked that the CPU runs avx2 (every x86 level).
                unsafe { crate::x86::quant::dequantize_row(acc, bias, scale, lo, hi, out) }
            }
            #[cfg(target_arch = "aarch64")]
            Isa::Neon | Isa::NeonDotprod | Isa::NeonFp16 => {
                // SAFETY: `check_epilogue` checked that the CPU runs neon.
                unsafe { crate::arm::quant::dequantize_row(acc, bias, scale, lo, hi, out) }
            }
            _ => dequantize_acc_scalar(acc, bias, scale, lo, hi, out),
        }
    }
    Ok(())
}

/// ONNX QuantizeLinear to uint8: `out[i] = saturate(round_half_even(x[i] / scale) + zp)`.
///
/// Writes `x.len()` elements of `out`; NaN becomes 0. Errors if `out` is shorter than `x`.
pub fn quantize_u8(
    isa: Isa,
    x: &[f32],
    scale: f32,
    zero_point: u8,
    out: &mut [u8],
) -> Result<(), KernelError> {
    isa.require()?;
    check::at_least("out", x.len(), out.len())?;
    let out = &mut out[..x.len()];
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::Avx512 | Isa::Avx512Vnni => {
            // SAFETY: `require` checked that the CPU runs avx2 (every x86 level).
            unsafe { crate::x86::quant::quantize(x, scale, zero_point, out) }
        }
        #[cfg(target_arch = "aarch64")]
        Isa::Neon | Isa::NeonDotprod | Isa::NeonFp16 => {
            // SAFETY: `require` checked that the CPU runs neon.
            unsafe { crate::arm::quant::quantize(x, scale, zero_point, out) }
        }
        _ => quantize_scalar(x, scale, zero_point, out),
    }
    Ok(())
}

/// ONNX DequantizeLinear from uint8: `out[i] = (x[i] - zero_point) as f32 * scale`.
///
/// Writes `x.len()` elements of `out`. Errors if `out` is shorter than `x`.
pub fn dequantize_u8(
    isa: Isa,
    x: &[u8],
    scale: f32,
    zero_point: u8,
    out: &mut [f32],
) -> Result<(), KernelError> {
    isa.require()?;
    check::at_least("out", x.len(), out.len())?;
    let out = &mut out[..x.len()];
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::Avx512 | Isa::Avx512Vnni => {
            // SAFETY: `require` checked that the CPU runs avx2 (every x86 level).
            unsafe { crate::x86::quant::dequantize(x, scale, zero_point, out) }
        }
        #[cfg(target_arch = "aarch64")]
        Isa::Neon | Isa::NeonDotprod | Isa::NeonFp16 => {
            // SAFETY: `require` checked that the CPU runs neon.
            unsafe { crate::arm::quant::dequantize(x, scale, zero_point, out) }
        }
        _ => dequantize_scalar(x, scale, zero_point, out),
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn check_epilogue(
    isa: Isa,
    m: usize,
    n: usize,
    acc_len: usize,
    ldacc: usize,
    bias: IntBias,
    scale: Scale,
    out_len: usize,
    ldout: usize,
) -> Result<(), KernelError> {
    isa.require()?;
    check::matrix("acc", m, n, ldacc, acc_len)?;
    bias.check(m, n)?;
    scale.check(m, n)?;
    check::matrix("out", m, n, ldout, out_len)
}

/// One row of [`requantize_u8`], element by element. The SIMD rows use it for their last
/// few columns.
pub(crate) fn requantize_scalar(acc: &[i32], row: RequantRow, out: &mut [u8]) {
    let RequantRow {
        bias,
        scale,
        zero_point,
        lo,
        hi,
    } = row;
    for (j, (o, &x)) in out.iter_mut().zip(acc).enumerate() {
        let y = x.wrapping_add(bias.at(j)) as f32 * scale.at(j);
        // `f32::max` returns the other operand when one is NaN, so NaN becomes `lo`.
        *o = (y.max(lo).min(hi).round_ties_even() as i32 + zero_point) as u8;
    }
}

/// One row of [`dequantize_acc_f32`], element by element.
pub(crate) fn dequantize_acc_scalar(
    acc: &[i32],
    bias: Vals<i32>,
    scale: Vals<f32>,
    lo: f32,
    hi: f32,
    out: &mut [f32],
) {
    for (j, (o, &x)) in out.iter_mut().zip(acc).enumerate() {
        let y = x.wrapping_add(bias.at(j)) as f32 * scale.at(j);
        *o = crate::reference::clamp(y, lo, hi);
    }
}

/// [`quantize_u8`] element by element.
pub(crate) fn quantize_scalar(x: &[f32], scale: f32, zero_point: u8, out: &mut [u8]) {
    let (lo, hi) = (-(zero_point as f32), 255.0 - zero_point as f32);
    for (o, &v) in out.iter_mut().zip(x) {
        *o = ((v / scale).max(lo).min(hi).round_ties_even() as i32 + zero_point as i32) as u8;
    }
}

/// [`dequantize_u8`] element by element.
pub(crate) fn dequantize_scalar(x: &[u8], scale: f32, zero_point: u8, out: &mut [f32]) {
    for (o, &v) in out.iter_mut().zip(x) {
        *o = (v as i32 - zero_point as i32) as f32 * scale;
    }
}
