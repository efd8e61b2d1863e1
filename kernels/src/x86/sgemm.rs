//! Float GEMM tiles: AVX-512 keeps a 16-column panel in one zmm, AVX2 in two ymm.

use std::arch::x86_64::*;

use half::f16;

use std::ops::Range;

use crate::blocks::{panel_chunks, row_blocks};
use crate::pack::NR;
use crate::sgemm::F32Gemm;

/// A packed-B element type the tiles widen to 16 f32 lanes.
pub(crate) trait PanelF32: Copy {
    /// Whether blocks of one or two rows run faster on the AVX2 tiles on this CPU. They
    /// stream several panels per A value, so their speed is the widening of B.
    fn few_rows_on_avx2() -> bool;

    /// One packed row of a panel as a zmm.
    ///
    /// # Safety
    /// The CPU must run avx512f.
    unsafe fn load_zmm(x: &[Self; NR]) -> __m512;

    /// One packed row of a panel as two ymm.
    ///
    /// # Safety
    /// The CPU must run avx2 and f16c.
    unsafe fn load_ymm(x: &[Self; NR]) -> [__m256; 2];
}

impl PanelF32 for f32 {
    fn few_rows_on_avx2() -> bool {
        false
    }

    #[inline(always)]
    unsafe fn load_zmm(x: &[f32; NR]) -> __m512 {
        // SAFETY: `x` is 16 readable floats; the caller guarantees avx512f.
        unsafe { _mm512_loadu_ps(x.as_ptr()) }
    }

    #[inline(always)]
    unsafe fn load_ymm(x: &[f32; NR]) -> [__m256; 2] {
        let (lo, hi) = x.split_at(8);
        // SAFETY: each half is 8 readable floats; the caller guarantees avx2.
        unsafe { [_mm256_loadu_ps(lo.as_ptr()), _mm256_loadu_ps(hi.as_ptr())] }
    }
}

impl PanelF32 for f16 {
    /// Where `vcvtph2ps` on a zmm has half the throughput of two on ymm: on Zen 4, a
    /// 1 x 3136 x 256 hgemm took 18 us on the AVX2 tile and 29 us on the AVX-512 one. On
    /// Sapphire Rapids the AVX-512 tile is the faster (alternated with the AVX2 one five
    /// times: the fp16 student at batch 1 0.95x, the fp16 teacher 0.93x). The CPUs known
    /// to widen at full rate are told apart by the AVX512-FP16 instructions they bring.
    fn few_rows_on_avx2() -> bool {
        !std::is_x86_feature_detected!("avx512fp16")
    }

    #[inline(always)]
    unsafe fn load_zmm(x: &[f16; NR]) -> __m512 {
        // SAFETY: `f16` is a 2-byte IEEE half, so `x` is 32 readable bytes of 16 halves;
        // the caller guarantees avx512f (vcvtph2ps zmm is an AVX-512F instruction).
        unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(x.as_ptr().cast())) }
    }

    #[inline(always)]
    unsafe fn load_ymm(x: &[f16; NR]) -> [__m256; 2] {
        let (lo, hi) = x.split_at(8);
        // SAFETY: each half is 16 readable bytes of 8 halves; the caller guarantees f16c.
        unsafe {
            [
                _mm256_cvtph_ps(_mm_loadu_si128(lo.as_ptr().cast())),
                _mm256_cvtph_ps(_mm_loadu_si128(hi.as_ptr().cast())),
            ]
        }
    }
}

/// AVX-512: tiles of 8 rows x 1 panel (8 zmm sums); fewer rows take more panels, and
/// take the AVX2 tiles where those are faster (see [`PanelF32::few_rows_on_avx2`]).
#[target_feature(enable = "avx512f")]
pub(crate) fn gemm_avx512<B: PanelF32>(g: &F32Gemm<B>, c: &mut [f32]) {
    let few_rows_on_avx2 = B::few_rows_on_avx2();
    for panels in panel_chunks(g.panels()) {
        for (row0, rows) in row_blocks(g.m, 8) {
            let p = panels.clone();
            match rows {
                // avx512f implies avx2, fma and f16c, so the AVX2 tiles are safe to call.
                1 if few_rows_on_avx2 => rows_avx2::<B, 1, 4>(g, row0, p, c),
                2 if few_rows_on_avx2 => rows_avx2::<B, 2, 2>(g, row0, p, c),
                1 => rows_avx512::<B, 1, 4>(g, row0, p, c),
                2 => rows_avx512::<B, 2, 2>(g, row0, p, c),
                4 => rows_avx512::<B, 4, 1>(g, row0, p, c),
                _ => rows_avx512::<B, 8, 2>(g, row0, p, c),
            }
        }
    }
}

/// One block of MR rows over some panels: NP at a time, then the leftovers one by one.
#[target_feature(enable = "avx512f")]
fn rows_avx512<B: PanelF32, const MR: usize, const NP: usize>(
    g: &F32Gemm<B>,
    row0: usize,
    panels: Range<usize>,
    c: &mut [f32],
) {
    let mut panel = panels.start;
    while panel + NP <= panels.end {
        tile_avx512::<B, MR, NP>(g, row0, panel, c);
        panel += NP;
    }
    while panel < panels.end {
        tile_avx512::<B, MR, 1>(g, row0, panel, c);
        panel += 1;
    }
}

#[target_feature(enable = "avx512f")]
fn tile_avx512<B: PanelF32, const MR: usize, const NP: usize>(
    g: &F32Gemm<B>,
    row0: usize,
    panel0: usize,
    c: &mut [f32],
) {
    let (k, a, b) = (g.k, g.a_rows::<MR>(row0), g.b_panels::<NP>(panel0));
    // Raw pointers for the K loop: with eight rows, bounds checks on slices (whose
    // lengths spill to the stack) cost as much as the multiply-adds.
    let a: [*const f32; MR] = std::array::from_fn(|r| a[r][..k].as_ptr());
    let b: [*const [B; NR]; NP] = std::array::from_fn(|q| b[q][..k].as_ptr());

    let mut acc = [[_mm512_setzero_ps(); NP]; MR];
    for kk in 0..k {
        let mut b_row = [_mm512_setzero_ps(); NP];
        for q in 0..NP {
            // SAFETY: `kk < k` and each panel was cut to k rows; compiled for avx512f.
            b_row[q] = unsafe { B::load_zmm(&*b[q].add(kk)) };
        }
        for r in 0..MR {
            // SAFETY: `kk < k` and each row was cut to k elements.
            let x = _mm512_set1_ps(unsafe { *a[r].add(kk) });
            for q in 0..NP {
                acc[r][q] = _mm512_fmadd_ps(x, b_row[q], acc[r][q]);
            }
        }
    }

    // Bias, then clamp with `lo` first so that a NaN sum passes through (maxps returns
    // its second operand when either is NaN).
    let (lo, hi) = (_mm512_set1_ps(g.lo), _mm512_set1_ps(g.hi));
    for q in 0..NP {
        let panel = panel0 + q;
        let col_bias = g.col_bias(panel);
        // SAFETY: `col_bias` is 16 readable floats.
        let col_bias = unsafe { _mm512_loadu_ps(col_bias.as_ptr()) };
        for (r, sums) in acc.iter().enumerate() {
            let bias = _mm512_add_ps(_mm512_set1_ps(g.row_bias(row0 + r)), col_bias);
            let v = _mm512_min_ps(hi, _mm512_max_ps(lo, _mm512_add_ps(sums[q], bias)));
            let out = g.c_part(c, row0 + r, panel);
            let mask = ((1u32 << out.len()) - 1) as __mmask16;
            // SAFETY: the mask enables exactly the first `out.len()` lanes, all inside `out`;
            // masked-off lanes are neither written nor faulted on.
            unsafe { _mm512_mask_storeu_ps(out.as_mut_ptr(), mask, v) };
        }
    }
}

/// AVX2: tiles of 4 rows x 1 panel (8 ymm sums); fewer rows take more panels.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn gemm_avx2<B: PanelF32>(g: &F32Gemm<B>, c: &mut [f32]) {
    for panels in panel_chunks(g.panels()) {
        for (row0, rows) in row_blocks(g.m, 4) {
            let p = panels.clone();
            match rows {
                1 => rows_avx2::<B, 1, 4>(g, row0, p, c),
                2 => rows_avx2::<B, 2, 2>(g, row0, p, c),
                _ => rows_avx2::<B, 4, 1>(g, row0, p, c),
            }
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
fn rows_avx2<B: PanelF32, const MR: usize, const NP: usize>(
    g: &F32Gemm<B>,
    row0: usize,
    panels: Range<usize>,
    c: &mut [f32],
) {
    let mut panel = panels.start;
    while panel + NP <= panels.end {
        tile_avx2::<B, MR, NP>(g, row0, panel, c);
        panel += NP;
    }
    while panel < panels.end {
        tile_avx2::<B, MR, 1>(g, row0, panel, c);
        panel += 1;
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
fn tile_avx2<B: PanelF32, const MR: usize, const NP: usize>(
    g: &F32Gemm<B>,
    row0: usize,
    panel0: usize,
    c: &mut [f32],
) {
    let (k, a, b) = (g.k, g.a_rows::<MR>(row0), g.b_panels::<NP>(panel0));
    // Raw pointers for the K loop: with eight rows, bounds checks on slices (whose
    // lengths spill to the stack) cost as much as the multiply-adds.
    let a: [*const f32; MR] = std::array::from_fn(|r| a[r][..k].as_ptr());
    let b: [*const [B; NR]; NP] = std::array::from_fn(|q| b[q][..k].as_ptr());

    let mut acc = [[[_mm256_setzero_ps(); 2]; NP]; MR];
    for kk in 0..k {
        let mut b_row = [[_mm256_setzero_ps(); 2]; NP];
        for q in 0..NP {
            // SAFETY: `kk < k` and each panel was cut to k rows; compiled for avx2, f16c.
            b_row[q] = unsafe { B::load_ymm(&*b[q].add(kk)) };
        }
        for r in 0..MR {
            // SAFETY: `kk < k` and each row was cut to k elements.
            let x = _mm256_set1_ps(unsafe { *a[r].add(kk) });
            for q in 0..NP {
                for h in 0..2 {
                    acc[r][q][h] = _mm256_fmadd_ps(x, b_row[q][h], acc[r][q][h]);
                }
            }
        }
    }

    let (lo, hi) = (_mm256_set1_ps(g.lo), _mm256_set1_ps(g.hi));
    for q in 0..NP {
        let panel = panel0 + q;
        let col_bias = g.col_bias(panel);
        for (r, sums) in acc.iter().enumerate() {
            let row_bias = _mm256_set1_ps(g.row_bias(row0 + r));
            let mut tile = [0.0f32; NR];
            for (h, half) in tile.chunks_exact_mut(8).enumerate() {
                // SAFETY: `col_bias[8h..]` is 8 readable floats.
                let bias = unsafe { _mm256_loadu_ps(col_bias[8 * h..].as_ptr()) };
                let v = _mm256_add_ps(sums[q][h], _mm256_add_ps(row_bias, bias));
                let v = _mm256_min_ps(hi, _mm256_max_ps(lo, v));
                // SAFETY: `half` is 8 writable floats.
                unsafe { _mm256_storeu_ps(half.as_mut_ptr(), v) };
            }
            let out = g.c_part(c, row0 + r, panel);
            out.copy_from_slice(&tile[..out.len()]);
        }
    }
}
