//! Quantization loops on AVX2, eight elements per step; the last few go through the
//! scalar code, which computes the same bits.

use std::arch::x86_64::*;

use super::pool::{each_piece, even_odd, input_masks};
use crate::pool::Pool2x2;
use crate::quant::{
    RequantRow, Vals, by_pieces, dequantize_acc_scalar, dequantize_scalar, quantize_scalar,
    requantize_scalar,
};

/// One row of `requantize_u8`.
#[target_feature(enable = "avx2")]
pub(crate) fn requantize_row(acc: &[i32], row: RequantRow, out: &mut [u8]) {
    let (lo, hi) = (_mm256_set1_ps(row.lo), _mm256_set1_ps(row.hi));
    let zp = _mm256_set1_epi32(row.zero_point);
    let done = by_pieces::<8, _, _>(acc, out, |j, x, o| {
        let x = _mm256_add_epi32(load_i32(x), i32x8(row.bias, j));
        let y = _mm256_mul_ps(_mm256_cvtepi32_ps(x), f32x8(row.scale, j));
        // maxps returns its second operand when the first is NaN: NaN becomes `lo`.
        let y = _mm256_min_ps(_mm256_max_ps(y, lo), hi);
        // cvtps2dq rounds half to even (the default MXCSR mode, which Rust assumes).
        let q = _mm256_add_epi32(_mm256_cvtps_epi32(y), zp);
        // Every value is in 0..=255, so the saturating packs only narrow.
        let words = _mm_packs_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256::<1>(q));
        let bytes = _mm_packus_epi16(words, words);
        // SAFETY: `o` is 8 writable bytes, the low 8 bytes of `bytes` are stored.
        unsafe { _mm_storel_epi64(o.as_mut_ptr().cast(), bytes) };
    });
    requantize_scalar(&acc[done..], row.from(done), &mut out[done..]);
}

/// One row of `requantize_u8` on AVX-512: 64 elements per step while they last, then 16
/// per step with the last one masked, so rows of any length take no scalar tail. The same
/// operations as [`requantize_row`].
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub(crate) fn requantize_row_avx512(acc: &[i32], row: RequantRow, out: &mut [u8]) {
    let n = row.cols(acc.len().min(out.len()));
    let mut j = 0;
    // Four vectors narrowed together: per 64 bytes two packs and one dword permute instead
    // of four times three extracts and three packs, which made requantizing a fifth of the
    // int8 teacher's time at batch 32. Within each 128-bit lane `l`, the packs leave dword
    // `4l + t` holding elements `4l..4l + 4` of vector `t`; the permute puts vector `t`'s
    // elements in dwords `4t..4t + 4`.
    let order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    while j + 64 <= n {
        let q0 = requantize_16(acc, &row, j, u16::MAX);
        let q1 = requantize_16(acc, &row, j + 16, u16::MAX);
        let q2 = requantize_16(acc, &row, j + 32, u16::MAX);
        let q3 = requantize_16(acc, &row, j + 48, u16::MAX);
        // Every value is in 0..=255, so the saturating packs only narrow.
        let bytes = _mm512_packus_epi16(_mm512_packs_epi32(q0, q1), _mm512_packs_epi32(q2, q3));
        let bytes = _mm512_permutexvar_epi32(order, bytes);
        // SAFETY: `j + 64 <= n <= out.len()`: 64 writable bytes.
        unsafe { _mm512_storeu_si512(out.as_mut_ptr().add(j).cast(), bytes) };
        j += 64;
    }
    while j < n {
        let count = (n - j).min(16);
        let mask = ((1u32 << count) - 1) as __mmask16;
        let q = requantize_16(acc, &row, j, mask);
        // SAFETY: the first `count` bytes are elements j..j + count, all below
        // `n <= out.len()`.
        unsafe { store_bytes(out.as_mut_ptr().wrapping_add(j), count, narrow_16(q)) };
        j += count;
    }
}

/// The 16 lanes of `q`, each in `0..=255`, as bytes. Narrowed by packing quarters, not
/// vpmovdb: its store forms are slow on Zen 4 (and the compiler folds the register form
/// into the store).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
fn narrow_16(q: __m512i) -> __m128i {
    let words = [
        _mm_packs_epi32(_mm512_castsi512_si128(q), _mm512_extracti32x4_epi32::<1>(q)),
        _mm_packs_epi32(
            _mm512_extracti32x4_epi32::<2>(q),
            _mm512_extracti32x4_epi32::<3>(q),
        ),
    ];
    _mm_packus_epi16(words[0], words[1])
}

/// Stores the first `count` (at most 16) bytes of `bytes` at `dst`.
///
/// # Safety
/// `dst..dst + count` must be writable; bytes past it are not touched.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn store_bytes(dst: *mut u8, count: usize, bytes: __m128i) {
    if count == 16 {
        // SAFETY: 16 writable bytes (the caller).
        unsafe { _mm_storeu_si128(dst.cast(), bytes) };
    } else {
        let mask = ((1u32 << count) - 1) as __mmask16;
        // SAFETY: the enabled lanes are the caller's `count` writable bytes; disabled
        // lanes are not touched.
        unsafe { _mm_mask_storeu_epi8(dst.cast(), mask, bytes) };
    }
}

/// `requantize_max_pool_2x2_u8` on AVX-512: 16 outputs per step from 32 sums of each of
/// the two input rows (as `max_2x2_f32_avx512` pools), requantized as
/// [`requantize_16`] does, with plane `c`'s bias and scale.
///
/// # Safety
/// The CPU must run avx512f, avx512bw and avx512vl; `p` must have passed
/// `Pool2x2::check` for `acc` and `out`, and `bias` and `scale` must hold `p.planes`
/// values.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub(crate) unsafe fn requantize_max_pool_avx512(
    p: Pool2x2,
    acc: &[i32],
    bias: &[i32],
    scale: &[f32],
    bounds: RequantRow,
    out: &mut [u8],
) {
    let (even, odd) = even_odd();
    each_piece(p, acc, out, 16, |c, r0, r1, dst, count| {
        let (lo, hi) = input_masks(count);
        // SAFETY: the enabled lanes are the piece's `2 * count` sums of each row
        // (`each_piece`); disabled lanes are not read (nor faulted on).
        let (a0, a1, b0, b1) = unsafe {
            (
                _mm512_maskz_loadu_epi32(lo, r0.cast()),
                _mm512_maskz_loadu_epi32(hi, r0.wrapping_add(16).cast()),
                _mm512_maskz_loadu_epi32(lo, r1.cast()),
                _mm512_maskz_loadu_epi32(hi, r1.wrapping_add(16).cast()),
            )
        };
        let m0 = _mm512_max_epi32(a0, b0);
        let m1 = _mm512_max_epi32(a1, b1);
        let m = _mm512_max_epi32(
            _mm512_permutex2var_epi32(m0, even, m1),
            _mm512_permutex2var_epi32(m0, odd, m1),
        );
        let q = requantize_lanes(
            m,
            _mm512_set1_epi32(bias[c]),
            _mm512_set1_ps(scale[c]),
            &bounds,
        );
        // SAFETY: the piece's `count` outputs (`each_piece`).
        unsafe { store_bytes(dst, count, narrow_16(q)) };
    });
}

/// Elements `j..j + 16` of the row under `mask`, requantized: i32 lanes in `0..=255`
/// (lanes outside `mask` hold whatever the zero they load becomes). The caller guarantees
/// every enabled lane is below the row's length (`RequantRow::cols`).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
fn requantize_16(acc: &[i32], row: &RequantRow, j: usize, mask: __mmask16) -> __m512i {
    // SAFETY (every masked load): the enabled lanes are elements below the row's length,
    // within every slice; disabled lanes are not touched.
    let x = unsafe { _mm512_maskz_loadu_epi32(mask, acc.as_ptr().add(j).cast()) };
    let b = match row.bias {
        Vals::Splat(v) => _mm512_set1_epi32(v),
        Vals::Cols(xs) => unsafe { _mm512_maskz_loadu_epi32(mask, xs.as_ptr().add(j).cast()) },
    };
    let s = match row.scale {
        Vals::Splat(v) => _mm512_set1_ps(v),
        Vals::Cols(xs) => unsafe { _mm512_maskz_loadu_ps(mask, xs.as_ptr().add(j)) },
    };
    requantize_lanes(x, b, s, row)
}

/// Sums `x` with bias `b` and scale `s`, requantized with `row`'s zero point and bounds
/// (its own bias and scale are not read).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
fn requantize_lanes(x: __m512i, b: __m512i, s: __m512, row: &RequantRow) -> __m512i {
    let y = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(x, b)), s);
    // maxps returns its second operand when the first is NaN: NaN becomes `lo`.
    let y = _mm512_min_ps(
        _mm512_max_ps(y, _mm512_set1_ps(row.lo)),
        _mm512_set1_ps(row.hi),
    );
    // cvtps2dq rounds half to even (the default MXCSR mode, which Rust assumes); every
    // value is then in 0..=255, so narrowing keeps it.
    _mm512_add_epi32(_mm512_cvtps_epi32(y), _mm512_set1_epi32(row.zero_point))
}

/// One row of `dequantize_acc_f32`.
#[target_feature(enable = "avx2")]
pub(crate) fn dequantize_row(
    acc: &[i32],
    bias: Vals<i32>,
    scale: Vals<f32>,
    lo: f32,
    hi: f32,
    out: &mut [f32],
) {
    let (lo_v, hi_v) = (_mm256_set1_ps(lo), _mm256_set1_ps(hi));
    let done = by_pieces::<8, _, _>(acc, out, |j, x, o| {
        let x = _mm256_add_epi32(load_i32(x), i32x8(bias, j));
        let y = _mm256_mul_ps(_mm256_cvtepi32_ps(x), f32x8(scale, j));
        // `lo` first: a NaN passes through, as in `reference::clamp`.
        let y = _mm256_min_ps(hi_v, _mm256_max_ps(lo_v, y));
        // SAFETY: `o` is 8 writable floats.
        unsafe { _mm256_storeu_ps(o.as_mut_ptr(), y) };
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
#[target_feature(enable = "avx2")]
pub(crate) fn quantize(x: &[f32], scale: f32, zero_point: u8, out: &mut [u8]) {
    let lo = _mm256_set1_ps(-(zero_point as f32));
    let hi = _mm256_set1_ps(255.0 - zero_point as f32);
    let (s, zp) = (_mm256_set1_ps(scale), _mm256_set1_epi32(zero_point as i32));
    let done = by_pieces::<8, _, _>(x, out, |_, v, o| {
        // SAFETY: `v` is 8 readable floats.
        let v = unsafe { _mm256_loadu_ps(v.as_ptr()) };
        // Divide, as ONNX does: multiplying by 1/scale rounds differently.
        let y = _mm256_min_ps(_mm256_max_ps(_mm256_div_ps(v, s), lo), hi);
        let q = _mm256_add_epi32(_mm256_cvtps_epi32(y), zp);
        let words = _mm_packs_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256::<1>(q));
        let bytes = _mm_packus_epi16(words, words);
        // SAFETY: `o` is 8 writable bytes.
        unsafe { _mm_storel_epi64(o.as_mut_ptr().cast(), bytes) };
    });
    quantize_scalar(&x[done..], scale, zero_point, &mut out[done..]);
}

/// `dequantize_u8` over a whole slice.
#[target_feature(enable = "avx2")]
pub(crate) fn dequantize(x: &[u8], scale: f32, zero_point: u8, out: &mut [f32]) {
    let (s, zp) = (_mm256_set1_ps(scale), _mm256_set1_epi32(zero_point as i32));
    let done = by_pieces::<8, _, _>(x, out, |_, v, o| {
        // SAFETY: `v` is 8 readable bytes, exactly what movq loads.
        let v = unsafe { _mm_loadl_epi64(v.as_ptr().cast()) };
        let v = _mm256_sub_epi32(_mm256_cvtepu8_epi32(v), zp);
        let y = _mm256_mul_ps(_mm256_cvtepi32_ps(v), s);
        // SAFETY: `o` is 8 writable floats.
        unsafe { _mm256_storeu_ps(o.as_mut_ptr(), y) };
    });
    dequantize_scalar(&x[done..], scale, zero_point, &mut out[done..]);
}

#[target_feature(enable = "avx2")]
fn load_i32(x: &[i32; 8]) -> __m256i {
    // SAFETY: `x` is 8 readable i32.
    unsafe { _mm256_loadu_si256(x.as_ptr().cast()) }
}

/// Eight values from column `j` on.
#[target_feature(enable = "avx2")]
fn i32x8(v: Vals<i32>, j: usize) -> __m256i {
    match v {
        Vals::Splat(x) => _mm256_set1_epi32(x),
        // SAFETY: the slice is at least 8 long (`..8` would have panicked otherwise).
        Vals::Cols(xs) => unsafe { _mm256_loadu_si256(xs[j..][..8].as_ptr().cast()) },
    }
}

/// Eight values from column `j` on.
#[target_feature(enable = "avx2")]
fn f32x8(v: Vals<f32>, j: usize) -> __m256 {
    match v {
        Vals::Splat(x) => _mm256_set1_ps(x),
        // SAFETY: the slice is at least 8 long (`..8` would have panicked otherwise).
        Vals::Cols(xs) => unsafe { _mm256_loadu_ps(xs[j..][..8].as_ptr()) },
    }
}
