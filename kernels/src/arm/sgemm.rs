//! Float GEMM tiles on NEON: a 16-column panel is four q registers.

use std::arch::aarch64::*;

use half::f16;

use crate::blocks::row_blocks;
use crate::pack::NR;
use crate::sgemm::F32Gemm;

/// A packed-B element type the tiles widen to 16 f32 lanes.
pub(crate) trait PanelF32: Copy {
    /// One packed row of a panel as four q registers.
    ///
    /// # Safety
    /// The CPU must run neon.
    unsafe fn load_q4(x: &[Self; NR]) -> [float32x4_t; 4];
}

impl PanelF32 for f32 {
    #[inline(always)]
    unsafe fn load_q4(x: &[f32; NR]) -> [float32x4_t; 4] {
        let p = x.as_ptr();
        // SAFETY: `x` is 16 readable floats, four per load; the caller guarantees neon.
        unsafe {
            [
                vld1q_f32(p),
                vld1q_f32(p.add(4)),
                vld1q_f32(p.add(8)),
                vld1q_f32(p.add(12)),
            ]
        }
    }
}

impl PanelF32 for f16 {
    #[inline(always)]
    unsafe fn load_q4(x: &[f16; NR]) -> [float32x4_t; 4] {
        // `f16` is a 2-byte IEEE half; `fcvtl` widens four at a time, exactly.
        let p: *const u16 = x.as_ptr().cast();
        // SAFETY: `x` is 16 readable halves, four per load; the caller guarantees neon.
        unsafe {
            let wide = |p: *const u16| vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(p)));
            [wide(p), wide(p.add(4)), wide(p.add(8)), wide(p.add(12))]
        }
    }
}

/// NEON: tiles of 4 rows x 1 panel (16 q sums out of 32 registers); one row takes two
/// panels so that it still has 8 independent sums.
#[target_feature(enable = "neon")]
pub(crate) fn gemm_neon<B: PanelF32>(g: &F32Gemm<B>, c: &mut [f32]) {
    for (row0, rows) in row_blocks(g.m, 4) {
        match rows {
            1 => rows_neon::<B, 1, 2>(g, row0, c),
            2 => rows_neon::<B, 2, 1>(g, row0, c),
            _ => rows_neon::<B, 4, 1>(g, row0, c),
        }
    }
}

/// One block of MR rows: NP panels at a time, then the leftover panels one by one.
#[target_feature(enable = "neon")]
pub(crate) fn rows_neon<B: PanelF32, const MR: usize, const NP: usize>(
    g: &F32Gemm<B>,
    row0: usize,
    c: &mut [f32],
) {
    let mut panel = 0;
    while panel + NP <= g.panels() {
        tile_neon::<B, MR, NP>(g, row0, panel, c);
        panel += NP;
    }
    while panel < g.panels() {
        tile_neon::<B, MR, 1>(g, row0, panel, c);
        panel += 1;
    }
}

#[target_feature(enable = "neon")]
fn tile_neon<B: PanelF32, const MR: usize, const NP: usize>(
    g: &F32Gemm<B>,
    row0: usize,
    panel0: usize,
    c: &mut [f32],
) {
    let a = g.a_rows::<MR>(row0);
    let b = g.b_panels::<NP>(panel0);

    let mut acc = [[[vdupq_n_f32(0.0); 4]; NP]; MR];
    for kk in 0..g.k {
        let mut b_row = [[vdupq_n_f32(0.0); 4]; NP];
        for q in 0..NP {
            // SAFETY: this function is compiled for neon.
            b_row[q] = unsafe { B::load_q4(&b[q][kk]) };
        }
        for r in 0..MR {
            let x = vdupq_n_f32(a[r][kk]);
            for q in 0..NP {
                for i in 0..4 {
                    acc[r][q][i] = vfmaq_f32(acc[r][q][i], x, b_row[q][i]);
                }
            }
        }
    }

    store(g, row0, panel0, acc, c);
}

/// The epilogue of a tile of MR rows by NP panels of f32 sums: adds the biases, clamps and
/// writes the real columns of each panel to C. The sums come by value: a tile that lent
/// them would keep them in memory, not registers, through its k loop.
#[target_feature(enable = "neon")]
pub(crate) fn store<B, const MR: usize, const NP: usize>(
    g: &F32Gemm<B>,
    row0: usize,
    panel0: usize,
    acc: [[[float32x4_t; 4]; NP]; MR],
    c: &mut [f32],
) {
    // fmax returns NaN when either operand is NaN, so a NaN sum passes the clamp.
    let (lo, hi) = (vdupq_n_f32(g.lo), vdupq_n_f32(g.hi));
    for q in 0..NP {
        let panel = panel0 + q;
        let col_bias = g.col_bias(panel);
        for (r, sums) in acc.iter().enumerate() {
            let row_bias = vdupq_n_f32(g.row_bias(row0 + r));
            let mut tile = [0.0f32; NR];
            for (i, quarter) in tile.chunks_exact_mut(4).enumerate() {
                // SAFETY: `col_bias[4i..]` is at least 4 readable floats.
                let bias = vaddq_f32(row_bias, unsafe { vld1q_f32(col_bias[4 * i..].as_ptr()) });
                let v = vminq_f32(hi, vmaxq_f32(lo, vaddq_f32(sums[q][i], bias)));
                // SAFETY: `quarter` is 4 writable floats.
                unsafe { vst1q_f32(quarter.as_mut_ptr(), v) };
            }
            let out = g.c_part(c, row0 + r, panel);
            out.copy_from_slice(&tile[..out.len()]);
        }
    }
}
