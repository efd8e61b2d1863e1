//! Quantization loops on NEON, eight elements per step; the last few go through the
//! scalar code, which computes the same bits.

use std::arch::aarch64::*;

use crate::quant::{
    RequantRow, Vals, by_pieces, dequantize_acc_scalar, dequantize_scalar, quantize_scalar,
    requantize_scalar,
};

/// One row of `requantize_u8`.
#[target_feature(enable = "neon")]
pub(crate) fn requantize_row(acc: &[i32], row: RequantRow, out: &mut [u8]) {
    let (lo_v, hi_v) = (vdupq_n_f32(row.lo), vdupq_n_f32(row.hi));
    let zp = vdupq_n_s32(row.zero_point);
    let done = by_pieces::<8, _, _>(acc, out, |j, x, o| {
        let half = |h: usize| {
            let col = j + 4 * h;
            // SAFETY: `x[4h..]` is 4 readable i32.
            let x = vaddq_s32(
                unsafe { vld1q_s32(x[4 * h..].as_ptr()) },
                i32x4(row.bias, col),
            );
            let y = vmulq_f32(vcvtq_f32_s32(x), f32x4(row.scale, col));
            // fmaxnm returns the number when one operand is NaN: NaN becomes `lo`.
            let y = vminnmq_f32(vmaxnmq_f32(y, lo_v), hi_v);
            // fcvtns rounds to nearest, ties to even.
            vaddq_s32(vcvtnq_s32_f32(y), zp)
        };
        let q = [half(0), half(1)];
        // Every value is in 0..=255, so the saturating narrows only narrow.
        let bytes = vqmovn_u16(vcombine_u16(vqmovun_s32(q[0]), vqmovun_s32(q[1])));
        // SAFETY: `o` is 8 writable bytes.
        unsafe { vst1_u8(o.as_mut_ptr(), bytes) };
    });
    requantize_scalar(&acc[done..], row.from(done), &mut out[done..]);
}

/// One row of `dequantize_acc_f32`.
#[target_feature(enable = "neon")]
pub(crate) fn dequantize_row(
    acc: &[i32],
    bias: Vals<i32>,
    scale: Vals<f32>,
    lo: f32,
    hi: f32,
    out: &mut [f32],
) {
    let (lo_v, hi_v) = (vdupq_n_f32(lo), vdupq_n_f32(hi));
    let done = by_pieces::<4, _, _>(acc, out, |j, x, o| {
        // SAFETY: `x` is 4 readable i32.
        let x = vaddq_s32(unsafe { vld1q_s32(x.as_ptr()) }, i32x4(bias, j));
        let y = vmulq_f32(vcvtq_f32_s32(x), f32x4(scale, j));
        // fmax propagates NaN, as `reference::clamp` does.
        let y = vminq_f32(hi_v, vmaxq_f32(lo_v, y));
        // SAFETY: `o` is 4 writable floats.
        unsafe { vst1q_f32(o.as_mut_ptr(), y) };
    });
    dequantize_acc_scalar(
        &acc[done..],
        bias.from(done),
        scale.from(done),
        lo,
        hi,
        &mut out[done..],
    );
}

/// `quantize_u8` over a whole slice.
#[target_feature(enable = "neon")]
pub(crate) fn quantize(x: &[f32], scale: f32, zero_point: u8, out: &mut [u8]) {
    let lo = vdupq_n_f32(-(zero_point as f32));
    let hi = vdupq_n_f32(255.0 - zero_point as f32);
    let (s, zp) = (vdupq_n_f32(scale), vdupq_n_s32(zero_point as i32));
    let done = by_pieces::<8, _, _>(x, out, |_, v, o| {
        let half = |h: usize| {
            // SAFETY: `v[4h..]` is 4 readable floats.
            let v = unsafe { vld1q_f32(v[4 * h..].as_ptr()) };
            // Divide, as ONNX does: multiplying by 1/scale rounds differently.
            let y = vminnmq_f32(vmaxnmq_f32(vdivq_f32(v, s), lo), hi);
            vaddq_s32(vcvtnq_s32_f32(y), zp)
        };
        let q = [half(0), half(1)];
        let bytes = vqmovn_u16(vcombine_u16(vqmovun_s32(q[0]), vqmovun_s32(q[1])));
        // SAFETY: `o` is 8 writable bytes.
        unsafe { vst1_u8(o.as_mut_ptr(), bytes) };
    });
    quantize_scalar(&x[done..], scale, zero_point, &mut out[done..]);
}

/// `dequantize_u8` over a whole slice.
#[target_feature(enable = "neon")]
pub(crate) fn dequantize(x: &[u8], scale: f32, zero_point: u8, out: &mut [f32]) {
    let (s, zp) = (vdupq_n_f32(scale), vdupq_n_s32(zero_point as i32));
    let done = by_pieces::<8, _, _>(x, out, |_, v, o| {
        // SAFETY: `v` is 8 readable bytes.
        let wide = vmovl_u8(unsafe { vld1_u8(v.as_ptr()) });
        let halves = [
            vmovl_u16(vget_low_u16(wide)),
            vmovl_u16(vget_high_u16(wide)),
        ];
        for (h, half) in halves.into_iter().enumerate() {
            let y = vmulq_f32(vcvtq_f32_s32(vsubq_s32(vreinterpretq_s32_u32(half), zp)), s);
            // SAFETY: `o[4h..]` is 4 writable floats.
            unsafe { vst1q_f32(o[4 * h..].as_mut_ptr(), y) };
        }
    });
    dequantize_scalar(&x[done..], scale, zero_point, &mut out[done..]);
}

/// Four values from column `j` on.
#[target_feature(enable = "neon")]
fn i32x4(v: Vals<i32>, j: usize) -> int32x4_t {
    match v {
        Vals::Splat(x) => vdupq_n_s32(x),
        // SAFETY: the slice is at least 4 long (`..4` would have panicked otherwise).
        Vals::Cols(xs) => unsafe { vld1q_s32(xs[j..][..4].as_ptr()) },
    }
}

/// Four values from column `j` on.
#[target_feature(enable = "neon")]
fn f32x4(v: Vals<f32>, j: usize) -> float32x4_t {
    match v {
        Vals::Splat(x) => vdupq_n_f32(x),
        // SAFETY: the slice is at least 4 long (`..4` would have panicked otherwise).
        Vals::Cols(xs) => unsafe { vld1q_f32(xs[j..][..4].as_ptr()) },
    }
}
