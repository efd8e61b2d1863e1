//! Packing helpers on Advanced SIMD, which every aarch64 CPU runs.

use std::arch::aarch64::*;

/// Byte `4j + t` of the result is byte `j` of row `t` (see `pack::transpose_4x16`).
#[inline(always)]
pub(crate) fn transpose_4x16(rows: [&[u8; 16]; 4]) -> [u8; 64] {
    // SAFETY: each row is 16 readable bytes, each quarter of `out` 16 writable ones; NEON
    // is part of the aarch64 baseline (the caller is compiled only when
    // `target_feature = "neon"` holds).
    unsafe {
        let [r0, r1, r2, r3] = rows.map(|r| vld1q_u8(r.as_ptr()));
        // Pairs of rows interleaved byte by byte: (r0 r1) and (r2 r3) for columns 0-7, 8-15.
        let p01 = [
            vreinterpretq_u16_u8(vzip1q_u8(r0, r1)),
            vreinterpretq_u16_u8(vzip2q_u8(r0, r1)),
        ];
        let p23 = [
            vreinterpretq_u16_u8(vzip1q_u8(r2, r3)),
            vreinterpretq_u16_u8(vzip2q_u8(r2, r3)),
        ];
        // Then the pairs interleaved 16 bits at a time: four bytes per column.
        let quarters = [
            vzip1q_u16(p01[0], p23[0]),
            vzip2q_u16(p01[0], p23[0]),
            vzip1q_u16(p01[1], p23[1]),
            vzip2q_u16(p01[1], p23[1]),
        ];
        let mut out = [0u8; 64];
        for (dst, q) in out.chunks_exact_mut(16).zip(quarters) {
            vst1q_u8(dst.as_mut_ptr(), vreinterpretq_u8_u16(q));
        }
        out
    }
}
