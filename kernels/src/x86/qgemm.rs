//! Integer GEMM tiles: VNNI (`vpdpbusd`), and an exact widening path for AVX-512 BW and
//! AVX2 that extends bytes to i16 and sums pairs with `vpmaddwd`.
//!
//! `vpmaddubsw` alone is not used: it saturates pairs of u8 x s8 products at i16.

use std::arch::x86_64::*;

use crate::blocks::row_blocks;
use crate::pack::NR;
use crate::qgemm::{Q8, Q8Gemm, words};

/// Signed or unsigned byte operations, per operand type.
pub(crate) trait Q8X86: Q8 {
    /// Widens 16 bytes to 16 i16 lanes.
    ///
    /// # Safety
    /// The CPU must run avx2.
    unsafe fn widen16(x: __m128i) -> __m256i;

    /// Widens 32 bytes to 32 i16 lanes.
    ///
    /// # Safety
    /// The CPU must run avx512bw.
    unsafe fn widen32(x: __m256i) -> __m512i;

    /// `acc` plus, per 32-bit lane, the dot product of the four bytes of `mine` (this type)
    /// with the four bytes of `other` (the other signedness).
    ///
    /// # Safety
    /// The CPU must run avx512f and avx512vnni.
    unsafe fn dot4(acc: __m512i, mine: __m512i, other: __m512i) -> __m512i;
}

impl Q8X86 for u8 {
    #[inline(always)]
    unsafe fn widen16(x: __m128i) -> __m256i {
        // SAFETY: the caller guarantees avx2.
        unsafe { _mm256_cvtepu8_epi16(x) }
    }

    #[inline(always)]
    unsafe fn widen32(x: __m256i) -> __m512i {
        // SAFETY: the caller guarantees avx512bw.
        unsafe { _mm512_cvtepu8_epi16(x) }
    }

    #[inline(always)]
    unsafe fn dot4(acc: __m512i, mine: __m512i, other: __m512i) -> __m512i {
        // SAFETY: the caller guarantees avx512vnni; vpdpbusd takes the u8 operand first.
        unsafe { _mm512_dpbusd_epi32(acc, mine, other) }
    }
}

impl Q8X86 for i8 {
    #[inline(always)]
    unsafe fn widen16(x: __m128i) -> __m256i {
        // SAFETY: the caller guarantees avx2.
        unsafe { _mm256_cvtepi8_epi16(x) }
    }

    #[inline(always)]
    unsafe fn widen32(x: __m256i) -> __m512i {
        // SAFETY: the caller guarantees avx512bw.
        unsafe { _mm512_cvtepi8_epi16(x) }
    }

    #[inline(always)]
    unsafe fn dot4(acc: __m512i, mine: __m512i, other: __m512i) -> __m512i {
        // SAFETY: the caller guarantees avx512vnni; the u8 operand (`other`) goes first.
        unsafe { _mm512_dpbusd_epi32(acc, other, mine) }
    }
}

/// VNNI: tiles of 8 rows x 1 panel, one `vpdpbusd` per row, panel and group of four k.
/// `vpdpbusd` accumulates in place, so fewer rows take more panels to overlap its latency.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) fn gemm_vnni<A: Q8X86, B: Q8X86>(g: &Q8Gemm<A, B>, c: &mut [i32]) {
    for (row0, rows) in row_blocks(g.m, 8) {
        match rows {
            1 => rows_vnni::<A, B, 1, 4>(g, row0, c),
            2 => rows_vnni::<A, B, 2, 2>(g, row0, c),
            4 => rows_vnni::<A, B, 4, 1>(g, row0, c),
            _ => rows_vnni::<A, B, 8, 2>(g, row0, c),
        }
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
fn rows_vnni<A: Q8X86, B: Q8X86, const MR: usize, const NP: usize>(
    g: &Q8Gemm<A, B>,
    row0: usize,
    c: &mut [i32],
) {
    // The rows' words are the same for every panel: gather them once per block.
    let (a, tail) = g.a_words::<MR>(row0);
    let mut panel = 0;
    while panel + NP <= g.panels() {
        tile_vnni::<A, B, MR, NP>(g, &a, tail, row0, panel, c);
        panel += NP;
    }
    while panel < g.panels() {
        tile_vnni::<A, B, MR, 1>(g, &a, tail, row0, panel, c);
        panel += 1;
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
fn tile_vnni<A: Q8X86, B: Q8X86, const MR: usize, const NP: usize>(
    g: &Q8Gemm<A, B>,
    a: &[&[[A; 4]]; MR],
    tail: Option<[i32; MR]>,
    row0: usize,
    panel0: usize,
    c: &mut [i32],
) {
    let (full, b) = (g.k / 4, g.b_panels::<NP>(panel0));
    // Raw pointers for the K loop: with eight rows, bounds checks on slices (whose
    // lengths spill to the stack) cost as much as the dot products. Each row holds `full`
    // groups of four bytes; each panel `full` groups of 64 (plus the tail group).
    let a_at: [*const [A; 4]; MR] = std::array::from_fn(|r| a[r][..full].as_ptr());
    let b_at: [*const [B; 64]; NP] = std::array::from_fn(|q| b[q][..full].as_ptr());

    let mut acc = [[_mm512_setzero_si512(); NP]; MR];
    for group in 0..full {
        let mut b_group = [_mm512_setzero_si512(); NP];
        for q in 0..NP {
            // SAFETY: `group < full` and each panel holds `full` groups of 64 bytes.
            b_group[q] = unsafe { _mm512_loadu_si512(b_at[q].add(group).cast()) };
        }
        for r in 0..MR {
            // SAFETY: `group < full` and each row holds `full` groups of four bytes; the
            // read is unaligned, and little-endian like `qgemm::word`.
            let word = unsafe { a_at[r].add(group).cast::<i32>().read_unaligned() };
            let x = _mm512_set1_epi32(word);
            for q in 0..NP {
                // SAFETY: this function is compiled for avx512vnni.
                acc[r][q] = unsafe { A::dot4(acc[r][q], x, b_group[q]) };
            }
        }
    }
    if let Some(words) = tail {
        let mut b_group = [_mm512_setzero_si512(); NP];
        for q in 0..NP {
            // SAFETY: a packed group is 64 readable bytes.
            b_group[q] = unsafe { _mm512_loadu_si512(b[q][full].as_ptr().cast()) };
        }
        for r in 0..MR {
            let x = _mm512_set1_epi32(words[r]);
            for q in 0..NP {
                // SAFETY: this function is compiled for avx512vnni.
                acc[r][q] = unsafe { A::dot4(acc[r][q], x, b_group[q]) };
            }
        }
    }

    for q in 0..NP {
        for (r, sums) in acc.iter().enumerate() {
            store_zmm(g.c_part(c, row0 + r, panel0 + q), sums[q]);
        }
    }
}

/// AVX-512 without VNNI: tiles of 8 rows x 1 panel. Each group of packed B widens to two
/// zmm of i16 (columns 0-7 and 8-15, four k each); `vpmaddwd` against the row's four
/// widened A bytes leaves each column's sum split over two adjacent i32 lanes.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub(crate) fn gemm_avx512<A: Q8X86, B: Q8X86>(g: &Q8Gemm<A, B>, c: &mut [i32]) {
    for (row0, rows) in row_blocks(g.m, 8) {
        for panel in 0..g.panels() {
            match rows {
                1 => tile_avx512::<A, B, 1>(g, row0, panel, c),
                2 => tile_avx512::<A, B, 2>(g, row0, panel, c),
                4 => tile_avx512::<A, B, 4>(g, row0, panel, c),
                _ => tile_avx512::<A, B, 8>(g, row0, panel, c),
            }
        }
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
fn tile_avx512<A: Q8X86, B: Q8X86, const MR: usize>(
    g: &Q8Gemm<A, B>,
    row0: usize,
    panel: usize,
    c: &mut [i32],
) {
    let (a, tail) = g.a_words::<MR>(row0);
    let [b] = g.b_panels::<1>(panel);

    let mut acc = [[_mm512_setzero_si512(); 2]; MR];
    let mut step = |words: [i32; MR], group: usize| {
        let (lo, hi) = b[group].split_at(32);
        // SAFETY: each half of a packed group is 32 readable bytes; compiled for avx512bw.
        let b_group = unsafe {
            [
                B::widen32(_mm256_loadu_si256(lo.as_ptr().cast())),
                B::widen32(_mm256_loadu_si256(hi.as_ptr().cast())),
            ]
        };
        for r in 0..MR {
            // Every 64-bit lane holds the row's four bytes as i16.
            // SAFETY: compiled for avx512bw.
            let x = unsafe { A::widen32(_mm256_set1_epi32(words[r])) };
            for h in 0..2 {
                acc[r][h] = _mm512_add_epi32(acc[r][h], _mm512_madd_epi16(x, b_group[h]));
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

    // Lane 2j of the low half holds k0 + k1 of column j and lane 2j + 1 holds k2 + k3:
    // gather the even and the odd lanes of both halves in column order and add them.
    let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
    for (r, [lo, hi]) in acc.into_iter().enumerate() {
        let sums = _mm512_add_epi32(
            _mm512_permutex2var_epi32(lo, even, hi),
            _mm512_permutex2var_epi32(lo, odd, hi),
        );
        store_zmm(g.c_part(c, row0 + r, panel), sums);
    }
}

/// Stores the first `out.len()` (at most 16) lanes of `v`.
#[target_feature(enable = "avx512f")]
fn store_zmm(out: &mut [i32], v: __m512i) {
    let mask = ((1u32 << out.len().min(NR)) - 1) as __mmask16;
    // SAFETY: the mask enables only the first `out.len()` lanes, all inside `out`;
    // masked-off lanes are neither written nor faulted on.
    unsafe { _mm512_mask_storeu_epi32(out.as_mut_ptr(), mask, v) };
}

/// AVX2: tiles of 2 rows x 1 panel. A group of packed B widens to four ymm of i16 (four
/// columns each); sums stay split over lane pairs until the end, as in the AVX-512 path.
#[target_feature(enable = "avx2")]
pub(crate) fn gemm_avx2<A: Q8X86, B: Q8X86>(g: &Q8Gemm<A, B>, c: &mut [i32]) {
    for row0 in (0..g.m).step_by(2) {
        for panel in 0..g.panels() {
            match g.m - row0 {
                1 => tile_avx2::<A, B, 1>(g, row0, panel, c),
                _ => tile_avx2::<A, B, 2>(g, row0, panel, c),
            }
        }
    }
}

#[target_feature(enable = "avx2")]
fn tile_avx2<A: Q8X86, B: Q8X86, const MR: usize>(
    g: &Q8Gemm<A, B>,
    row0: usize,
    panel: usize,
    c: &mut [i32],
) {
    let (a, tail) = g.a_words::<MR>(row0);
    let [b] = g.b_panels::<1>(panel);

    let mut acc = [[_mm256_setzero_si256(); 4]; MR];
    let mut step = |words: [i32; MR], group: usize| {
        let mut b_group = [_mm256_setzero_si256(); 4];
        for (h, quarter) in b[group].chunks_exact(16).enumerate() {
            // SAFETY: a quarter of a packed group is 16 readable bytes; compiled for avx2.
            b_group[h] = unsafe { B::widen16(_mm_loadu_si128(quarter.as_ptr().cast())) };
        }
        for r in 0..MR {
            // SAFETY: compiled for avx2.
            let x = unsafe { A::widen16(_mm_set1_epi32(words[r])) };
            for h in 0..4 {
                acc[r][h] = _mm256_add_epi32(acc[r][h], _mm256_madd_epi16(x, b_group[h]));
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

    for (r, [q0, q1, q2, q3]) in acc.into_iter().enumerate() {
        // hadd of columns 0-3 and 4-7 gives (0 1 4 5 | 2 3 6 7); the permute restores order.
        let lo = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_hadd_epi32(q0, q1));
        let hi = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_hadd_epi32(q2, q3));
        let mut tile = [0i32; NR];
        let (t_lo, t_hi) = tile.split_at_mut(8);
        // SAFETY: each half of `tile` is 8 writable i32.
        unsafe {
            _mm256_storeu_si256(t_lo.as_mut_ptr().cast(), lo);
            _mm256_storeu_si256(t_hi.as_mut_ptr().cast(), hi);
        }
        let out = g.c_part(c, row0 + r, panel);
        out.copy_from_slice(&tile[..out.len()]);
    }
}
