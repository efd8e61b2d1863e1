//! 2 x 2 max pooling: each output row is made from its two input rows in pieces of 16
//! (f32) or 32 (u8) outputs on AVX-512, the last piece masked, so rows as short as 7 or 14
//! outputs cost one or two steps. AVX2 runs the portable loop: its masked loads and stores
//! made an AVX2 kernel 1.8x slower than that loop on Zen 4 (37.7 against 20.7 us for 256
//! planes of 28 x 28).

use std::arch::x86_64::*;

use crate::pool::Pool2x2;

/// The walk every kernel shares: each output row of each plane, in pieces of at most
/// `width` outputs, the last piece shorter. `step(plane, r0, r1, out, count)` makes outputs
/// `out[..count]` from inputs `r0[..2 * count]` and `r1[..2 * count]` of the row's two
/// input rows. The pointers lie within their rows, in bounds by `Pool2x2::check`
/// (2 * h_out <= h_in, 2 * w_out <= w_in, planes of x and y long enough), and the slicing
/// here checks it again once per row.
#[inline(always)]
pub(crate) fn each_piece<T, U>(
    p: Pool2x2,
    x: &[T],
    y: &mut [U],
    width: usize,
    mut step: impl FnMut(usize, *const T, *const T, *mut U, usize),
) {
    let (plane_in, plane_out, w_out) = (p.h_in * p.w_in, p.h_out * p.w_out, p.w_out);
    for plane in 0..p.planes {
        for oy in 0..p.h_out {
            let i0 = plane * plane_in + 2 * oy * p.w_in;
            let r0 = x[i0..][..2 * w_out].as_ptr();
            let r1 = x[i0 + p.w_in..][..2 * w_out].as_ptr();
            let out = y[plane * plane_out + oy * w_out..][..w_out].as_mut_ptr();
            let mut ox = 0;
            while ox < w_out {
                let count = (w_out - ox).min(width);
                // Wrapping: no pointer past the row is formed by an offset.
                step(
                    plane,
                    r0.wrapping_add(2 * ox),
                    r1.wrapping_add(2 * ox),
                    out.wrapping_add(ox),
                    count,
                );
                ox += count;
            }
        }
    }
}

/// The enabled lanes of a piece of `count` (at most 16) outputs over 32-bit inputs: its
/// `2 * count` inputs, as masks of the first and the second 16.
#[inline(always)]
pub(crate) fn input_masks(count: usize) -> (__mmask16, __mmask16) {
    let inputs = 2 * count as u32;
    let lo = (((1u64 << inputs.min(16)) - 1) & 0xffff) as __mmask16;
    let hi = ((1u64 << inputs.saturating_sub(16)) - 1) as __mmask16;
    (lo, hi)
}

/// The `permutex2var` indices that pick the even and the odd elements of two 16-lane
/// vectors.
#[inline]
#[target_feature(enable = "avx512f")]
pub(crate) fn even_odd() -> (__m512i, __m512i) {
    (
        _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30),
        _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31),
    )
}

/// f32 on AVX-512: 16 outputs per step from 32 inputs of each row.
///
/// # Safety
/// The CPU must run avx512f; `p` must have passed `Pool2x2::check` for these slices.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn max_2x2_f32_avx512(p: Pool2x2, x: &[f32], y: &mut [f32]) {
    let (even, odd) = even_odd();
    each_piece(p, x, y, 16, |_, r0, r1, out, count| {
        let (lo, hi) = input_masks(count);
        // SAFETY: the enabled lanes are the piece's `2 * count` inputs (`each_piece`);
        // disabled lanes are not read (nor faulted on).
        let (a0, a1, b0, b1) = unsafe {
            (
                _mm512_maskz_loadu_ps(lo, r0),
                _mm512_maskz_loadu_ps(hi, r0.wrapping_add(16)),
                _mm512_maskz_loadu_ps(lo, r1),
                _mm512_maskz_loadu_ps(hi, r1.wrapping_add(16)),
            )
        };
        // maxps(s, t) is `s > t ? s : t`, so maxps(b, a) is the module's max(a, b).
        let m0 = _mm512_max_ps(b0, a0);
        let m1 = _mm512_max_ps(b1, a1);
        let e = _mm512_permutex2var_ps(m0, even, m1);
        let o = _mm512_permutex2var_ps(m0, odd, m1);
        let d = _mm512_max_ps(o, e);
        let mask = ((1u32 << count) - 1) as __mmask16;
        // SAFETY: the first `count` lanes are the piece's outputs.
        unsafe { _mm512_mask_storeu_ps(out, mask, d) };
    });
}

/// u8 on AVX-512 (BW, VL): 32 outputs per step from 64 inputs of each row.
///
/// # Safety
/// The CPU must run avx512f, avx512bw and avx512vl; `p` must have passed
/// `Pool2x2::check` for these slices.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub(crate) unsafe fn max_2x2_u8_avx512(p: Pool2x2, x: &[u8], y: &mut [u8]) {
    let low_bytes = _mm512_set1_epi16(0xff);
    let lows = _mm512_setr_epi64(0, 2, 4, 6, 1, 3, 5, 7);
    each_piece(p, x, y, 32, |_, r0, r1, out, count| {
        let inputs = 2 * count as u32;
        let mask = if inputs == 64 {
            u64::MAX
        } else {
            (1u64 << inputs) - 1
        };
        // SAFETY: the enabled lanes are the piece's `2 * count` inputs (`each_piece`);
        // disabled lanes are not read (nor faulted on).
        let (a, b) = unsafe {
            (
                _mm512_maskz_loadu_epi8(mask, r0.cast()),
                _mm512_maskz_loadu_epi8(mask, r1.cast()),
            )
        };
        // Integer max is exact, so the order of the four maxima does not matter.
        let m = _mm512_max_epu8(a, b);
        let pairs = _mm512_max_epu16(_mm512_and_si512(m, low_bytes), _mm512_srli_epi16::<8>(m));
        // Narrowed by packing (8 outputs per 128-bit lane, then the lanes' low halves
        // gathered), not vpmovwb: its store forms are slow on Zen 4.
        let packed = _mm512_packus_epi16(pairs, pairs);
        let d = _mm512_castsi512_si256(_mm512_permutexvar_epi64(lows, packed));
        if count == 32 {
            // SAFETY: the piece's 32 outputs.
            unsafe { _mm256_storeu_si256(out.cast(), d) };
        } else {
            let keep = ((1u64 << count) - 1) as __mmask32;
            // SAFETY: the first `count` bytes are the piece's outputs.
            unsafe { _mm256_mask_storeu_epi8(out.cast(), keep, d) };
        }
    });
}
