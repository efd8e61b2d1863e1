//! Panels from shifted planes on AVX-512: each row is one masked load, the masked lanes
//! filled in the same instruction (zero for f32, the fill bytes for u8).

use std::arch::x86_64::*;

use crate::pack::NR;
use crate::unfold::PanelSource;
use crate::x86::pack::interleave_4x16;

/// The first element of row (c, t) of a checked source.
#[inline(always)]
fn at<T>(src: &PanelSource<'_, T>, c: usize, offset: isize) -> usize {
    (c * src.stride + src.base).wrapping_add_signed(offset)
}

/// # Safety
/// The CPU must run avx512f; `src` must have passed `PanelSource::check` and `out` hold
/// its `channels * taps` rows.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn panel_f32_avx512(src: &PanelSource<'_, f32>, out: &mut [[f32; NR]]) {
    let mut dst = out.iter_mut();
    for c in 0..src.channels {
        for (&offset, &mask) in src.offsets.iter().zip(src.masks) {
            let Some(row) = dst.next() else { return };
            let from = at(src, c, offset);
            // SAFETY: `check` put every piece's 16 elements inside `planes`.
            let v = unsafe { _mm512_maskz_loadu_ps(mask, src.planes.as_ptr().add(from)) };
            // SAFETY: `row` is 16 writable floats.
            unsafe { _mm512_storeu_ps(row.as_mut_ptr(), v) };
        }
    }
}

/// # Safety
/// The CPU must run avx512f, avx512bw and avx512vl; `src` must have passed
/// `PanelSource::check` and `out` hold its `channels * taps` rows in groups of four.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub(crate) unsafe fn panel_u8_avx512(
    src: &PanelSource<'_, u8>,
    fill: &[u8; NR],
    out: &mut [[u8; 64]],
) {
    // SAFETY: `fill` is 16 readable bytes.
    let fill = unsafe { _mm_loadu_si128(fill.as_ptr().cast()) };
    let mut dst = out.iter_mut();
    let mut quad = [_mm_setzero_si128(); 4];
    let mut filled = 0;
    for c in 0..src.channels {
        for (&offset, &mask) in src.offsets.iter().zip(src.masks) {
            let from = at(src, c, offset);
            // SAFETY: `check` put every piece's 16 bytes inside `planes`.
            quad[filled] =
                unsafe { _mm_mask_loadu_epi8(fill, mask, src.planes.as_ptr().add(from).cast()) };
            filled += 1;
            if filled == 4 {
                let Some(group) = dst.next() else { return };
                store_group(quad, group);
                filled = 0;
            }
        }
    }
    if filled > 0 {
        for row in &mut quad[filled..] {
            *row = _mm_setzero_si128();
        }
        if let Some(group) = dst.next() {
            store_group(quad, group);
        }
    }
}

/// Byte `4j + t` of `group` is byte `j` of `rows[t]`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
fn store_group(rows: [__m128i; 4], group: &mut [u8; 64]) {
    for (dst, q) in group.chunks_exact_mut(16).zip(interleave_4x16(rows)) {
        // SAFETY: `dst` is 16 writable bytes.
        unsafe { _mm_storeu_si128(dst.as_mut_ptr().cast(), q) };
    }
}
