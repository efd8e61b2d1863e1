//! Integer GEMM tiles on NEON: `sdot` with the dot-product extension, and an exact
//! widening path (i16 products, pairwise long accumulation) on baseline NEON.

use std::arch::aarch64::*;
use std::arch::asm;

use crate::blocks::row_blocks;
use crate::pack::NR;
use crate::qgemm::{Q8, Q8Gemm, Sums, words};

/// Signed or unsigned byte operations, per operand type.
pub(crate) trait Q8Neon: Q8 {
    /// XOR-ing a byte with this makes it the signed byte `value - 128` for u8 operands;
    /// 0 for i8 operands, which `sdot` takes as they are.
    const FLIP: u8;

    /// Widens 8 bytes to 8 i16 lanes.
    ///
    /// # Safety
    /// The CPU must run neon.
    unsafe fn widen(x: uint8x8_t) -> int16x8_t;
}

impl Q8Neon for u8 {
    const FLIP: u8 = 0x80;

    #[inline(always)]
    unsafe fn widen(x: uint8x8_t) -> int16x8_t {
        // SAFETY: the caller guarantees neon.
        unsafe { vreinterpretq_s16_u16(vmovl_u8(x)) }
    }
}

impl Q8Neon for i8 {
    const FLIP: u8 = 0;

    #[inline(always)]
    unsafe fn widen(x: uint8x8_t) -> int16x8_t {
        // SAFETY: the caller guarantees neon.
        unsafe { vmovl_s8(vreinterpret_s8_u8(x)) }
    }
}

/// `acc + sdot(a, b)`: per 32-bit lane, the dot product of four signed byte pairs.
#[target_feature(enable = "neon,dotprod")]
fn sdot(mut acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    // `vdotq_s32` is not stable yet, so the instruction is written out.
    // SAFETY: `sdot` reads `a` and `b` and updates `acc`, nothing else; this function is
    // compiled for (and only reached on CPUs with) the dot-product extension.
    unsafe {
        asm!(
            "sdot {acc:v}.4s, {a:v}.16b, {b:v}.16b",
            acc = inout(vreg) acc,
            a = in(vreg) a,
            b = in(vreg) b,
            options(pure, nomem, nostack, preserves_flags),
        );
    }
    acc
}

/// Dotprod: tiles of 4 rows x 1 panel, 16 q sums. The unsigned operand is flipped to
/// signed (`x ^ 0x80 = x - 128`), so every sum is short by 128 times the other operand's
/// sum over k: the caller's column sums of B (u8 x s8) or row sums of A (s8 x u8). Zero
/// padding in K stays harmless: a flipped zero meets a zero of the other operand.
#[target_feature(enable = "neon,dotprod")]
pub(crate) fn gemm_dotprod<A: Q8Neon, B: Q8Neon>(g: &Q8Gemm<A, B>, c: &mut [i32]) {
    for (row0, rows) in row_blocks(g.m, 4) {
        for panel in 0..g.panels() {
            match rows {
                1 => tile_dotprod::<A, B, 1>(g, row0, panel, c),
                2 => tile_dotprod::<A, B, 2>(g, row0, panel, c),
                _ => tile_dotprod::<A, B, 4>(g, row0, panel, c),
            }
        }
    }
}

#[target_feature(enable = "neon,dotprod")]
fn tile_dotprod<A: Q8Neon, B: Q8Neon, const MR: usize>(
    g: &Q8Gemm<A, B>,
    row0: usize,
    panel: usize,
    c: &mut [i32],
) {
    let (a, tail) = g.a_words::<MR>(row0);
    let [b] = g.b_panels::<1>(panel);
    let a_flip = i32::from_le_bytes([A::FLIP; 4]);
    let b_flip = vdupq_n_s8(B::FLIP as i8);

    let mut acc = [[vdupq_n_s32(0); 4]; MR];
    let mut step = |words: [i32; MR], group: usize| {
        let mut b_group = [vdupq_n_s8(0); 4];
        for (i, quarter) in b[group].chunks_exact(16).enumerate() {
            // SAFETY: a quarter of a packed group is 16 readable bytes.
            let raw = unsafe { vld1q_s8(quarter.as_ptr().cast()) };
            b_group[i] = veorq_s8(raw, b_flip);
        }
        for r in 0..MR {
            let x = vreinterpretq_s8_s32(vdupq_n_s32(words[r] ^ a_flip));
            for i in 0..4 {
                acc[r][i] = sdot(acc[r][i], x, b_group[i]);
            }
        }
    };
    let full = g.k / 4;
    for group in 0..full {
        step(words(&a, group), group);
    }
    if let Some(tail) = tail {
        step(tail, full);
    }

    for (r, sums) in acc.iter().enumerate() {
        let mut tile = [0i32; NR];
        for (i, quarter) in tile.chunks_exact_mut(4).enumerate() {
            // SAFETY: `quarter` is 4 writable i32.
            unsafe { vst1q_s32(quarter.as_mut_ptr(), sums[i]) };
        }
        let out = g.c_part(c, row0 + r, panel);
        for (j, (o, &t)) in out.iter_mut().zip(&tile).enumerate() {
            let missing = match g.sums {
                Sums::BCols(col) if A::FLIP != 0 => col[panel * NR + j],
                Sums::ARows(row) if B::FLIP != 0 => row[row0 + r],
                _ => 0,
            };
            *o = t.wrapping_add(missing.wrapping_mul(128));
        }
    }
}

/// Baseline NEON: tiles of 2 rows x 1 panel. A group of packed B widens to eight i16
/// vectors (two columns of four k each); products of a u8 and an s8 fit i16 exactly, and
/// `sadalp` adds them pairwise into i32 sums, each column split over two lanes.
#[target_feature(enable = "neon")]
pub(crate) fn gemm_neon<A: Q8Neon, B: Q8Neon>(g: &Q8Gemm<A, B>, c: &mut [i32]) {
    for row0 in (0..g.m).step_by(2) {
        for panel in 0..g.panels() {
            match g.m - row0 {
                1 => tile_neon::<A, B, 1>(g, row0, panel, c),
                _ => tile_neon::<A, B, 2>(g, row0, panel, c),
            }
        }
    }
}

#[target_feature(enable = "neon")]
fn tile_neon<A: Q8Neon, B: Q8Neon, const MR: usize>(
    g: &Q8Gemm<A, B>,
    row0: usize,
    panel: usize,
    c: &mut [i32],
) {
    let (a, tail) = g.a_words::<MR>(row0);
    let [b] = g.b_panels::<1>(panel);

    let mut acc = [[vdupq_n_s32(0); 8]; MR];
    let mut step = |words: [i32; MR], group: usize| {
        let mut b_group = [vdupq_n_s16(0); 8];
        for (i, eighth) in b[group].chunks_exact(8).enumerate() {
            // SAFETY: an eighth of a packed group is 8 readable bytes; compiled for neon.
            b_group[i] = unsafe { B::widen(vld1_u8(eighth.as_ptr().cast())) };
        }
        for r in 0..MR {
            // The row's four bytes, twice, as i16: lined up with two columns of B.
            // SAFETY: compiled for neon.
            let x = unsafe { A::widen(vreinterpret_u8_s32(vdup_n_s32(words[r]))) };
            for i in 0..8 {
                acc[r][i] = vpadalq_s16(acc[r][i], vmulq_s16(x, b_group[i]));
            }
        }
    };
    let full = g.k / 4;
    for group in 0..full {
        step(words(&a, group), group);
    }
    if let Some(tail) = tail {
        step(tail, full);
    }

    for (r, sums) in acc.iter().enumerate() {
        let mut tile = [0i32; NR];
        for (i, quarter) in tile.chunks_exact_mut(4).enumerate() {
            // Pairwise adds join each column's two half sums: columns 4i..4i + 4.
            let v = vpaddq_s32(sums[2 * i], sums[2 * i + 1]);
            // SAFETY: `quarter` is 4 writable i32.
            unsafe { vst1q_s32(quarter.as_mut_ptr(), v) };
        }
        let out = g.c_part(c, row0 + r, panel);
        out.copy_from_slice(&tile[..out.len()]);
    }
}
