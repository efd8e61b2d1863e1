//! Plain scalar versions of every kernel, on unpacked row-major inputs.
//!
//! They are the definition the SIMD kernels are tested against, and the baseline of the
//! benchmarks. They do not check their arguments: slices too short for the shapes panic.
//! Integer arithmetic wraps modulo 2^32 like the SIMD kernels.

use half::f16;

use crate::quant::{IntBias, Scale};
use crate::sgemm::Bias;

/// `C = clamp(A * B + bias, lo, hi)`; A is `m x k` (stride `lda`), B is `k x n` (stride
/// `ldb`), C is `m x n` (stride `ldc`). Sums run over k in order, one rounding per step.
#[allow(clippy::too_many_arguments)]
pub fn sgemm(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    lda: usize,
    b: &[f32],
    ldb: usize,
    bias: Bias,
    lo: f32,
    hi: f32,
    c: &mut [f32],
    ldc: usize,
) {
    for i in 0..m {
        for j in 0..n {
            let mut acc = 0.0f32;
            for p in 0..k {
                acc += a[i * lda + p] * b[p * ldb + j];
            }
            c[i * ldc + j] = clamp(acc + bias.at(i, j), lo, hi);
        }
    }
}

/// [`sgemm`] with B stored as f16 (each weight converted exactly to f32).
#[allow(clippy::too_many_arguments)]
pub fn hgemm(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    lda: usize,
    b: &[f16],
    ldb: usize,
    bias: Bias,
    lo: f32,
    hi: f32,
    c: &mut [f32],
    ldc: usize,
) {
    let b: Vec<f32> = b.iter().map(|x| x.to_f32()).collect();
    sgemm(m, n, k, a, lda, &b, ldb, bias, lo, hi, c, ldc);
}

/// `C = A * B` with A uint8 (`m x k`) and B int8 (`k x n`), i32 sums.
#[allow(clippy::too_many_arguments)]
pub fn qgemm_u8s8(
    m: usize,
    n: usize,
    k: usize,
    a: &[u8],
    lda: usize,
    b: &[i8],
    ldb: usize,
    c: &mut [i32],
    ldc: usize,
) {
    qgemm(
        m,
        n,
        k,
        |i, p| a[i * lda + p] as i32,
        |p, j| b[p * ldb + j] as i32,
        c,
        ldc,
    );
}

/// `C = A * B` with A int8 (`m x k`) and B uint8 (`k x n`), i32 sums.
#[allow(clippy::too_many_arguments)]
pub fn qgemm_s8u8(
    m: usize,
    n: usize,
    k: usize,
    a: &[i8],
    lda: usize,
    b: &[u8],
    ldb: usize,
    c: &mut [i32],
    ldc: usize,
) {
    qgemm(
        m,
        n,
        k,
        |i, p| a[i * lda + p] as i32,
        |p, j| b[p * ldb + j] as i32,
        c,
        ldc,
    );
}

fn qgemm(
    m: usize,
    n: usize,
    k: usize,
    a: impl Fn(usize, usize) -> i32,
    b: impl Fn(usize, usize) -> i32,
    c: &mut [i32],
    ldc: usize,
) {
    for i in 0..m {
        for j in 0..n {
            let mut acc = 0i32;
            for p in 0..k {
                acc = acc.wrapping_add(a(i, p).wrapping_mul(b(p, j)));
            }
            c[i * ldc + j] = acc;
        }
    }
}

/// Column sums of the `k x n` int8 matrix B: the `b_colsum` of `qgemm_u8s8`.
pub fn col_sums_s8(b: &[i8], k: usize, n: usize, ldb: usize) -> Vec<i32> {
    (0..n)
        .map(|j| (0..k).map(|p| b[p * ldb + j] as i32).sum())
        .collect()
}

/// Row sums of the `m x k` int8 matrix A: the `a_rowsum` of `qgemm_s8u8`.
pub fn row_sums_s8(a: &[i8], m: usize, k: usize, lda: usize) -> Vec<i32> {
    (0..m)
        .map(|i| a[i * lda..i * lda + k].iter().map(|&x| x as i32).sum())
        .collect()
}

/// `out = clamp(round_half_even((acc + bias) as f32 * scale) + zero_point, lo, hi)`.
///
/// The clamp happens in f32 before rounding, so a NaN product becomes `lo`.
#[allow(clippy::too_many_arguments)]
pub fn requantize_u8(
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
) {
    let lo_f = (lo as i32 - zero_point) as f32;
    let hi_f = (hi as i32 - zero_point) as f32;
    for i in 0..m {
        for j in 0..n {
            let x = acc[i * ldacc + j].wrapping_add(bias.at(i, j)) as f32 * scale.at(i, j);
            // f32::max returns the other operand when one is NaN.
            let y = x.max(lo_f).min(hi_f).round_ties_even() as i32;
            out[i * ldout + j] = (y + zero_point) as u8;
        }
    }
}

/// `out = clamp((acc + bias) as f32 * scale, lo, hi)`; a NaN stays NaN.
#[allow(clippy::too_many_arguments)]
pub fn dequantize_acc_f32(
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
) {
    for i in 0..m {
        for j in 0..n {
            let x = acc[i * ldacc + j].wrapping_add(bias.at(i, j)) as f32 * scale.at(i, j);
            out[i * ldout + j] = clamp(x, lo, hi);
        }
    }
}

/// ONNX QuantizeLinear to uint8: `saturate(round_half_even(x / scale) + zero_point)`;
/// NaN becomes 0.
pub fn quantize_u8(x: &[f32], scale: f32, zero_point: u8, out: &mut [u8]) {
    let lo = -(zero_point as f32);
    let hi = 255.0 - zero_point as f32;
    for (o, &v) in out.iter_mut().zip(x) {
        let q = (v / scale).max(lo).min(hi).round_ties_even() as i32;
        *o = (q + zero_point as i32) as u8;
    }
}

/// ONNX DequantizeLinear from uint8: `(x - zero_point) as f32 * scale`.
pub fn dequantize_u8(x: &[u8], scale: f32, zero_point: u8, out: &mut [f32]) {
    for (o, &v) in out.iter_mut().zip(x) {
        *o = (v as i32 - zero_point as i32) as f32 * scale;
    }
}

/// Clamps `x` to `lo..=hi`, letting NaN through: `min(hi, max(lo, x))`, so `hi` wins
/// when `lo > hi`. The rule every float kernel follows.
pub(crate) fn clamp(x: f32, lo: f32, hi: f32) -> f32 {
    let x = if x < lo { lo } else { x };
    if x > hi { hi } else { x }
}
