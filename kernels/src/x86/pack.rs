//! Packing helpers on SSE2, which every x86-64 CPU runs.

use std::arch::x86_64::*;

/// Byte `4j + t` of the result is byte `j` of row `t` (see `pack::transpose_4x16`).
#[inline(always)]
pub(crate) fn transpose_4x16(rows: [&[u8; 16]; 4]) -> [u8; 64] {
    let mut out = [0u8; 64];
    // SAFETY: each row is 16 readable bytes and each quarter of `out` 16 writable ones;
    // SSE2 is part of the x86-64 baseline, and the caller is compiled only when
    // `target_feature = "sse2"` holds.
    unsafe {
        let rows = rows.map(|r| _mm_loadu_si128(r.as_ptr().cast()));
        for (dst, q) in out.chunks_exact_mut(16).zip(interleave_4x16(rows)) {
            _mm_storeu_si128(dst.as_mut_ptr().cast(), q);
        }
    }
    out
}

/// Four rows of 16 bytes interleaved: byte `4j + t` of the 64 result bytes (four
/// registers, in order) is byte `j` of `rows[t]`. SSE2 only.
#[inline(always)]
pub(crate) fn interleave_4x16(rows: [__m128i; 4]) -> [__m128i; 4] {
    let [r0, r1, r2, r3] = rows;
    // SAFETY: register-only SSE2 operations; SSE2 is part of the x86-64 baseline (see
    // `transpose_4x16`).
    unsafe {
        // Pairs of rows interleaved byte by byte: (r0 r1) and (r2 r3), columns 0-7, 8-15.
        let (p01_lo, p01_hi) = (_mm_unpacklo_epi8(r0, r1), _mm_unpackhi_epi8(r0, r1));
        let (p23_lo, p23_hi) = (_mm_unpacklo_epi8(r2, r3), _mm_unpackhi_epi8(r2, r3));
        // Then the pairs interleaved 16 bits at a time: four bytes per column.
        [
            _mm_unpacklo_epi16(p01_lo, p23_lo),
            _mm_unpackhi_epi16(p01_lo, p23_lo),
            _mm_unpacklo_epi16(p01_hi, p23_hi),
            _mm_unpackhi_epi16(p01_hi, p23_hi),
        ]
    }
}
