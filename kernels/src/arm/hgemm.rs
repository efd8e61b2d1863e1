//! The f16-weight GEMM with half-precision arithmetic (`Isa::NeonFp16`): `fmlal` and
//! `fmlal2` (FEAT_FHM) multiply f16 weights by activations rounded to f16 and add the
//! products into f32 sums.
//!
//! # Why `fmlal` into f32, not `fmla .8h` into f16
//!
//! The other way to use the half-precision units is `fmla` on eight f16 lanes, keeping
//! f16 partial sums over short runs of k (16 to 32 steps) and adding them into f32 sums.
//! It has twice the lanes per instruction, and needs only FEAT_FP16, which more cores have
//! than FEAT_FHM (Cortex-A76-class cores have the first only, as qemu's model of the A76
//! does). It is not the one used here:
//!
//! - Accuracy. A product of two halves (11 significant bits each) is exact in f32, so with
//!   `fmlal` the only new error is the rounding of each activation to f16: at most 2^-11
//!   of each term, whatever k is, and the tests can hold it to the f32 tolerance of the
//!   other levels against a reference that rounds the activations first. f16 partial sums
//!   round every product and every addition at 2^-11 of the running sum, an error that
//!   grows with the run length and that a reference can only bound, not reproduce.
//! - Range. A running f16 sum overflows past 65504, and nothing in an ONNX model trained
//!   in f32 keeps its partial dot products below that; the error would be an infinity,
//!   not a rounding. With `fmlal` only the activations must fit, which one pass over A
//!   checks: a block of rows holding a larger value goes through the f32 kernel instead
//!   ([`gemm_fhm`]).
//! - It is what the design asks for: fp16 storage, f32 accumulation.
//!
//! What `fmlal` saves over the NEON kernel is the widening: B rows stay in two registers
//! of eight halves, used as they are loaded (no `fcvtl`), and the activations come as
//! lanes of one register per row for eight steps of k (no broadcast per step). The
//! multiply-adds are as many as at the NEON level (16 per step for 4 rows by 16
//! columns), each with four f32 lanes. Its speed on a phone has not been measured (the
//! aarch64 code runs only under qemu here).

use std::arch::aarch64::*;

use half::f16;

use crate::arm::sgemm::{rows_neon, store};
use crate::blocks::row_blocks;
use crate::pack::NR;
use crate::sgemm::F32Gemm;

/// The largest finite f16: a larger activation would round to infinity.
const F16_MAX: f32 = 65504.0;

/// Tiles of 4 rows x 1 panel (16 f32 sums); one row takes two panels so that it still has
/// 8 independent sums, as in `arm::sgemm::gemm_neon`. A block of rows whose activations
/// do not all fit f16 runs the NEON kernel (f32 arithmetic) instead.
#[target_feature(enable = "neon,fp16,fhm")]
pub(crate) fn gemm_fhm(g: &F32Gemm<f16>, c: &mut [f32]) {
    for (row0, rows) in row_blocks(g.m, 4) {
        match rows {
            1 => rows_fhm::<1, 2>(g, row0, c),
            2 => rows_fhm::<2, 1>(g, row0, c),
            _ => rows_fhm::<4, 1>(g, row0, c),
        }
    }
}

/// One block of MR rows: NP panels at a time, then the leftover panels one by one.
#[target_feature(enable = "neon,fp16,fhm")]
fn rows_fhm<const MR: usize, const NP: usize>(g: &F32Gemm<f16>, row0: usize, c: &mut [f32]) {
    if !fits_f16(&g.a_rows::<MR>(row0)) {
        return rows_neon::<f16, MR, NP>(g, row0, c);
    }
    let mut panel = 0;
    while panel + NP <= g.panels() {
        tile_fhm::<MR, NP>(g, row0, panel, c);
        panel += NP;
    }
    while panel < g.panels() {
        tile_fhm::<MR, 1>(g, row0, panel, c);
        panel += 1;
    }
}

/// Whether no value of the rows is beyond f16's finite range. NaN fits: it stays NaN.
#[target_feature(enable = "neon")]
fn fits_f16<const MR: usize>(rows: &[&[f32]; MR]) -> bool {
    // fmaxnm returns the number when one operand is NaN, so `big` never becomes NaN.
    let mut big = vdupq_n_f32(0.0);
    for row in rows {
        let (quads, tail) = row.as_chunks::<4>();
        for quad in quads {
            // SAFETY: `quad` is 4 readable floats.
            let x = unsafe { vld1q_f32(quad.as_ptr()) };
            big = vmaxnmq_f32(big, vabsq_f32(x));
        }
        if tail.iter().any(|x| x.abs() > F16_MAX) {
            return false;
        }
    }
    vmaxnmvq_f32(big) <= F16_MAX
}

/// One step of k, written out where it is used (an `#[inline(always)]` function could not
/// be, compiled for these features, and `tile_fhm` must keep its sums in registers):
/// packed row `$lane` of each panel of `$rows` times lane `$lane` of each row's activations
/// `$x`, added into `$acc`. Needs neon, fp16 and fhm, and more than `$lane` rows in each of
/// `$rows`.
macro_rules! step {
    ($acc:ident, $rows:ident, $x:ident, $lane:literal) => {
        for q in 0..$acc[0].len() {
            // `f16` is a 2-byte IEEE half, the bits `float16x8_t` holds.
            let p: *const u16 = $rows[q][$lane].as_ptr().cast();
            // SAFETY: a packed row is 16 readable halves, eight per load.
            let b = unsafe {
                [
                    vreinterpretq_f16_u16(vld1q_u16(p)),
                    vreinterpretq_f16_u16(vld1q_u16(p.add(8))),
                ]
            };
            for (sums, x) in $acc.iter_mut().zip(&$x) {
                // Columns 0-3 and 4-7 come from the low and high halves of the first
                // register, 8-11 and 12-15 from the second: the order `store` writes.
                let s = &mut sums[q];
                s[0] = vfmlalq_laneq_low_f16::<$lane>(s[0], b[0], *x);
                s[1] = vfmlalq_laneq_high_f16::<$lane>(s[1], b[0], *x);
                s[2] = vfmlalq_laneq_low_f16::<$lane>(s[2], b[1], *x);
                s[3] = vfmlalq_laneq_high_f16::<$lane>(s[3], b[1], *x);
            }
        }
    };
}

#[target_feature(enable = "neon,fp16,fhm")]
fn tile_fhm<const MR: usize, const NP: usize>(
    g: &F32Gemm<f16>,
    row0: usize,
    panel0: usize,
    c: &mut [f32],
) {
    // Eight steps of k at a time: eight activations of a row fill one register of halves,
    // and step L takes lane L of it. The last few steps go one at a time, lane 0.
    let a = g.a_rows::<MR>(row0).map(|row| row.as_chunks::<8>());
    let b = g.b_panels::<NP>(panel0).map(|panel| panel.as_chunks::<8>());

    let mut acc = [[[vdupq_n_f32(0.0); 4]; NP]; MR];
    for group in 0..g.k / 8 {
        let x: [float16x8_t; MR] = std::array::from_fn(|r| halves(&a[r].0[group]));
        let rows: [&[[f16; NR]; 8]; NP] = std::array::from_fn(|q| &b[q].0[group]);
        step!(acc, rows, x, 0);
        step!(acc, rows, x, 1);
        step!(acc, rows, x, 2);
        step!(acc, rows, x, 3);
        step!(acc, rows, x, 4);
        step!(acc, rows, x, 5);
        step!(acc, rows, x, 6);
        step!(acc, rows, x, 7);
    }
    for j in 0..g.k % 8 {
        let x: [float16x8_t; MR] = std::array::from_fn(|r| halves(&[a[r].1[j]; 8]));
        let rows: [&[[f16; NR]]; NP] = std::array::from_fn(|q| &b[q].1[j..]);
        step!(acc, rows, x, 0);
    }

    store(g, row0, panel0, acc, c);
}

/// Eight activations rounded to f16 (to nearest, ties to even: `fcvtn`, FPCR's default).
#[target_feature(enable = "neon,fp16")]
fn halves(x: &[f32; 8]) -> float16x8_t {
    // SAFETY: `x` is 8 readable floats, four per load.
    let (lo, hi) = unsafe { (vld1q_f32(x.as_ptr()), vld1q_f32(x.as_ptr().add(4))) };
    vcvt_high_f16_f32(vcvt_f16_f32(lo), hi)
}
