//! Float GEMMs over packed B: [`sgemm`] (f32 weights) and [`hgemm`] (f16 weights).
//!
//! Every instruction set uses the same plan. C is cut into tiles of MR rows by one or more
//! 16-column panels; a tile keeps its MR x 16·NP sums in registers for the whole K loop,
//! broadcasting one A value per row and streaming one packed B row per panel, then adds
//! the bias, clamps and stores. Rows short of a whole tile go in blocks of 4, 2 and 1
//! (`blocks::row_blocks`). Row blocks with few rows take several panels at once, so
//! a 1-row product (a dense layer at batch 1) still has independent sums to overlap.

use half::f16;

use crate::blocks::row_blocks;
use crate::check;
use crate::error::KernelError;
use crate::isa::Isa;
use crate::pack::{NR, packed_len_f32};
use crate::reference::clamp;

/// A bias added to every sum before clamping.
#[derive(Clone, Copy, Debug)]
pub enum Bias<'a> {
    /// No bias.
    None,
    /// One value per row of C (length at least m): a per-output-channel bias when rows
    /// are channels.
    PerRow(&'a [f32]),
    /// One value per column of C (length at least n): a dense layer's bias when columns
    /// are features.
    PerCol(&'a [f32]),
}

impl Bias<'_> {
    /// The bias of element (i, j); checked lengths are the caller's business.
    pub(crate) fn at(&self, i: usize, j: usize) -> f32 {
        match self {
            Bias::None => 0.0,
            Bias::PerRow(b) => b[i],
            Bias::PerCol(b) => b[j],
        }
    }

    fn check(&self, m: usize, n: usize) -> Result<(), KernelError> {
        match self {
            Bias::None => Ok(()),
            Bias::PerRow(b) => check::at_least("bias (per row)", m, b.len()),
            Bias::PerCol(b) => check::at_least("bias (per column)", n, b.len()),
        }
    }
}

/// `C = clamp(A * B + bias, lo, hi)`, overwriting C.
///
/// A is `m x k` row-major with row stride `lda`; `bp` is B (`k x n`) packed by
/// [`pack_b_f32`](crate::pack_b_f32); C is `m x n` with row stride `ldc`. Pass
/// `-inf, inf` for no clamp, `0, inf` for ReLU and `0, 6` for ReLU6; a NaN sum stays NaN.
/// Errors if `isa` is unavailable, a stride is smaller than its row or a slice is short.
#[allow(clippy::too_many_arguments)]
pub fn sgemm(
    isa: Isa,
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    lda: usize,
    bp: &[f32],
    bias: Bias,
    lo: f32,
    hi: f32,
    c: &mut [f32],
    ldc: usize,
) -> Result<(), KernelError> {
    let g = F32Gemm::new(isa, m, n, k, a, lda, bp, bias, lo, hi, c.len(), ldc)?;
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 | Isa::Avx512Vnni => {
            // SAFETY: `F32Gemm::new` checked that the CPU runs avx512f.
            unsafe { crate::x86::sgemm::gemm_avx512(&g, c) }
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => {
            // SAFETY: `F32Gemm::new` checked that the CPU runs avx2, fma and f16c.
            unsafe { crate::x86::sgemm::gemm_avx2(&g, c) }
        }
        #[cfg(target_arch = "aarch64")]
        Isa::Neon | Isa::NeonDotprod | Isa::NeonFp16 => {
            // SAFETY: `F32Gemm::new` checked that the CPU runs neon.
            unsafe { crate::arm::sgemm::gemm_neon(&g, c) }
        }
        // Only Portable gets here: other levels were refused by `F32Gemm::new`.
        _ => gemm_portable(&g, c),
    }
    Ok(())
}

/// [`sgemm`] with B stored as f16, packed by [`pack_b_f16`](crate::pack_b_f16).
///
/// Every sum is f32. Below [`Isa::NeonFp16`] the weights are widened to f32 in registers
/// (F16C / AVX-512 `vcvtph2ps`, NEON `fcvtl`), so results match [`sgemm`] on the widened
/// weights. At [`Isa::NeonFp16`] the activations are rounded to f16 (to nearest, ties to
/// even) and each product of two halves, exact in f32, is added into f32 sums (`fmlal`):
/// results match [`sgemm`] on the widened weights and the rounded activations, an error of
/// at most 2^-11 of each `|a| * |b|` term (2^-25 * |b| below f16's normal range). A block
/// of up to 4 rows of A holding a value beyond f16's range (|x| > 65504, infinities
/// included) is multiplied in f32 instead, as at the levels below, so no activation
/// overflows.
#[allow(clippy::too_many_arguments)]
pub fn hgemm(
    isa: Isa,
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    lda: usize,
    bp: &[f16],
    bias: Bias,
    lo: f32,
    hi: f32,
    c: &mut [f32],
    ldc: usize,
) -> Result<(), KernelError> {
    let g = F32Gemm::new(isa, m, n, k, a, lda, bp, bias, lo, hi, c.len(), ldc)?;
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 | Isa::Avx512Vnni => {
            // SAFETY: `F32Gemm::new` checked that the CPU runs avx512f.
            unsafe { crate::x86::sgemm::gemm_avx512(&g, c) }
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => {
            // SAFETY: `F32Gemm::new` checked that the CPU runs avx2, fma and f16c.
            unsafe { crate::x86::sgemm::gemm_avx2(&g, c) }
        }
        #[cfg(target_arch = "aarch64")]
        Isa::NeonFp16 => {
            // SAFETY: `F32Gemm::new` checked that the CPU runs neon, fp16 and fhm.
            unsafe { crate::arm::hgemm::gemm_fhm(&g, c) }
        }
        #[cfg(target_arch = "aarch64")]
        Isa::Neon | Isa::NeonDotprod => {
            // SAFETY: `F32Gemm::new` checked that the CPU runs neon.
            unsafe { crate::arm::sgemm::gemm_neon(&g, c) }
        }
        _ => gemm_portable(&g, c),
    }
    Ok(())
}

/// A checked float GEMM, handed to the per-ISA drivers. B elements are f32 or f16.
pub(crate) struct F32Gemm<'a, B> {
    pub(crate) m: usize,
    pub(crate) n: usize,
    pub(crate) k: usize,
    a: &'a [f32],
    lda: usize,
    bp: &'a [B],
    pub(crate) bias: Bias<'a>,
    pub(crate) lo: f32,
    pub(crate) hi: f32,
    ldc: usize,
}

impl<'a, B> F32Gemm<'a, B> {
    /// Checks every argument; after this, every accessor below stays in bounds.
    #[allow(clippy::too_many_arguments)]
    fn new(
        isa: Isa,
        m: usize,
        n: usize,
        k: usize,
        a: &'a [f32],
        lda: usize,
        bp: &'a [B],
        bias: Bias<'a>,
        lo: f32,
        hi: f32,
        c_len: usize,
        ldc: usize,
    ) -> Result<Self, KernelError> {
        isa.require()?;
        check::matrix("a", m, k, lda, a.len())?;
        check::at_least("packed b", packed_len_f32(k, n), bp.len())?;
        bias.check(m, n)?;
        check::matrix("c", m, n, ldc, c_len)?;
        Ok(F32Gemm {
            m,
            n,
            k,
            a,
            lda,
            bp,
            bias,
            lo,
            hi,
            ldc,
        })
    }

    /// The number of 16-column panels.
    pub(crate) fn panels(&self) -> usize {
        self.n.div_ceil(NR)
    }

    /// Rows `row0..row0 + MR` of A, each cut to its k elements.
    #[inline(always)]
    pub(crate) fn a_rows<const MR: usize>(&self, row0: usize) -> [&'a [f32]; MR] {
        if self.k == 0 {
            return [&[]; MR];
        }
        std::array::from_fn(|r| &self.a[(row0 + r) * self.lda..][..self.k])
    }

    /// Panels `panel0..panel0 + NP` of packed B, each k rows of 16 values.
    #[inline(always)]
    pub(crate) fn b_panels<const NP: usize>(&self, panel0: usize) -> [&'a [[B; NR]]; NP] {
        std::array::from_fn(|q| {
            self.bp[(panel0 + q) * NR * self.k..][..NR * self.k]
                .as_chunks()
                .0
        })
    }

    /// The bias shared by every column of `row` (0 unless per row).
    #[inline(always)]
    pub(crate) fn row_bias(&self, row: usize) -> f32 {
        match self.bias {
            Bias::PerRow(b) => b[row],
            _ => 0.0,
        }
    }

    /// The biases of the 16 columns of `panel` (0 unless per column, and past n).
    #[inline(always)]
    pub(crate) fn col_bias(&self, panel: usize) -> [f32; NR] {
        let mut out = [0.0; NR];
        if let Bias::PerCol(b) = self.bias {
            let cols = self.cols(panel);
            out[..cols].copy_from_slice(&b[panel * NR..][..cols]);
        }
        out
    }

    /// The real columns of `panel`: 16, or fewer in the last panel.
    #[inline(always)]
    pub(crate) fn cols(&self, panel: usize) -> usize {
        (self.n - panel * NR).min(NR)
    }

    /// The part of C's `row` that `panel` covers.
    #[inline(always)]
    pub(crate) fn c_part<'c>(&self, c: &'c mut [f32], row: usize, panel: usize) -> &'c mut [f32] {
        &mut c[row * self.ldc + panel * NR..][..self.cols(panel)]
    }
}

/// The portable driver: MR = 4 rows by one panel, sums in plain arrays the compiler
/// vectorizes at whatever width the build targets.
fn gemm_portable<B: Copy + Into<f32>>(g: &F32Gemm<B>, c: &mut [f32]) {
    const MR: usize = 4;
    for (row0, rows) in row_blocks(g.m, MR) {
        for panel in 0..g.panels() {
            match rows {
                1 => tile_portable::<B, 1>(g, row0, panel, c),
                2 => tile_portable::<B, 2>(g, row0, panel, c),
                _ => tile_portable::<B, MR>(g, row0, panel, c),
            }
        }
    }
}

fn tile_portable<B: Copy + Into<f32>, const MR: usize>(
    g: &F32Gemm<B>,
    row0: usize,
    panel: usize,
    c: &mut [f32],
) {
    let a = g.a_rows::<MR>(row0);
    let [b] = g.b_panels::<1>(panel);

    let mut acc = [[0.0f32; NR]; MR];
    for (kk, b_row) in b.iter().enumerate() {
        let b_row = b_row.map(Into::into);
        for r in 0..MR {
            let x = a[r][kk];
            for j in 0..NR {
                acc[r][j] += x * b_row[j];
            }
        }
    }

    let col_bias = g.col_bias(panel);
    for (r, sums) in acc.iter().enumerate() {
        let row_bias = g.row_bias(row0 + r);
        for (j, out) in g.c_part(c, row0 + r, panel).iter_mut().enumerate() {
            *out = clamp(sums[j] + (row_bias + col_bias[j]), g.lo, g.hi);
        }
    }
}
