//! Integer GEMMs over packed int8 B, with exact i32 sums: [`qgemm_u8s8`] and [`qgemm_s8u8`].
//!
//! The tiles follow the float plan (MR rows by 16-column panels, sums in registers) but
//! step through K four at a time: one 32-bit lane of packed B holds four consecutive k
//! of one column, and the matching four bytes of an A row are broadcast to every lane.
//! How the four products are summed depends on the instruction set: `vpdpbusd` (VNNI);
//! widening to i16 and summing pairs of products (`vpmaddwd` on AVX2 and AVX-512, `mul`
//! and `sadalp` on NEON); or `sdot` on sign-flipped bytes, corrected by the caller's row
//! or column sums (NEON dotprod).
//! Every path is exact: the i32 results equal [`reference`](crate::reference), wrapping
//! modulo 2^32 if a sum ever overflows.

use crate::blocks::row_blocks;
use crate::check;
use crate::error::KernelError;
use crate::isa::Isa;
use crate::pack::{NR, packed_len_q8};

/// `C = A * B` with A uint8 and B int8, i32 sums, overwriting C.
///
/// A is `m x k` row-major with row stride `lda` and needs `(m - 1) * lda + k` elements
/// (no padding is read: the last group of a row is completed with zeros in registers).
/// `bp` is B packed by [`pack_b_s8`](crate::pack_b_s8). `b_colsum[j]` (length at least
/// n) must be the sum of B's column j over k: paths that flip A's sign bit to use signed
/// dot products correct with it; the others ignore it, so a wrong sum gives results
/// that differ between instruction sets. C is `m x n` with row stride `ldc`.
#[allow(clippy::too_many_arguments)]
pub fn qgemm_u8s8(
    isa: Isa,
    m: usize,
    n: usize,
    k: usize,
    a: &[u8],
    lda: usize,
    bp: &[i8],
    b_colsum: &[i32],
    c: &mut [i32],
    ldc: usize,
) -> Result<(), KernelError> {
    check::at_least("b column sums", n, b_colsum.len())?;
    let g = Q8Gemm::new(
        isa,
        m,
        n,
        k,
        a,
        lda,
        bp,
        Sums::BCols(b_colsum),
        c.len(),
        ldc,
    )?;
    run(isa, &g, c);
    Ok(())
}

/// `C = A * B` with A int8 and B uint8, i32 sums, overwriting C.
///
/// The mirror of [`qgemm_u8s8`]: `bp` is packed by [`pack_b_u8`](crate::pack_b_u8), and
/// `a_rowsum[i]` (length at least m) must be the sum of A's row i over k.
#[allow(clippy::too_many_arguments)]
pub fn qgemm_s8u8(
    isa: Isa,
    m: usize,
    n: usize,
    k: usize,
    a: &[i8],
    lda: usize,
    bp: &[u8],
    a_rowsum: &[i32],
    c: &mut [i32],
    ldc: usize,
) -> Result<(), KernelError> {
    check::at_least("a row sums", m, a_rowsum.len())?;
    let g = Q8Gemm::new(
        isa,
        m,
        n,
        k,
        a,
        lda,
        bp,
        Sums::ARows(a_rowsum),
        c.len(),
        ldc,
    )?;
    run(isa, &g, c);
    Ok(())
}

fn run<A: Q8Arch, B: Q8Arch>(isa: Isa, g: &Q8Gemm<A, B>, c: &mut [i32]) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni => {
            // SAFETY: `Q8Gemm::new` checked that the CPU runs avx512f/bw/vl and vnni.
            unsafe { crate::x86::qgemm::gemm_vnni(g, c) }
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => {
            // SAFETY: `Q8Gemm::new` checked that the CPU runs avx512f and avx512bw.
            unsafe { crate::x86::qgemm::gemm_avx512(g, c) }
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => {
            // SAFETY: `Q8Gemm::new` checked that the CPU runs avx2.
            unsafe { crate::x86::qgemm::gemm_avx2(g, c) }
        }
        #[cfg(target_arch = "aarch64")]
        Isa::NeonDotprod | Isa::NeonFp16 => {
            // SAFETY: `Q8Gemm::new` checked that the CPU runs neon and dotprod (which
            // neon-fp16 includes).
            unsafe { crate::arm::qgemm::gemm_dotprod(g, c) }
        }
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => {
            // SAFETY: `Q8Gemm::new` checked that the CPU runs neon.
            unsafe { crate::arm::qgemm::gemm_neon(g, c) }
        }
        // Only Portable gets here: other levels were refused by `Q8Gemm::new`.
        _ => gemm_portable(g, c),
    }
}

/// A byte operand of the integer GEMMs: `u8` or `i8`.
pub(crate) trait Q8: Copy + Default {
    /// The raw bits.
    fn bits(self) -> u8;
    /// The value.
    fn wide(self) -> i32;
    /// The byte with these bits.
    fn from_bits(bits: u8) -> Self;
}

impl Q8 for u8 {
    #[inline(always)]
    fn bits(self) -> u8 {
        self
    }
    fn wide(self) -> i32 {
        self as i32
    }
    fn from_bits(bits: u8) -> u8 {
        bits
    }
}

impl Q8 for i8 {
    #[inline(always)]
    fn bits(self) -> u8 {
        self as u8
    }
    fn wide(self) -> i32 {
        self as i32
    }
    fn from_bits(bits: u8) -> i8 {
        bits as i8
    }
}

/// The per-architecture operations on a byte type (signed or unsigned widening).
#[cfg(target_arch = "x86_64")]
pub(crate) use crate::x86::qgemm::Q8X86 as Q8Arch;

#[cfg(target_arch = "aarch64")]
pub(crate) use crate::arm::qgemm::Q8Neon as Q8Arch;

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
pub(crate) use Q8 as Q8Arch;

/// The caller's sums: column sums of B for `u8 x s8`, row sums of A for `s8 x u8`.
/// Only the NEON dotprod path reads them.
#[derive(Clone, Copy)]
#[cfg_attr(not(target_arch = "aarch64"), allow(dead_code))]
pub(crate) enum Sums<'a> {
    BCols(&'a [i32]),
    ARows(&'a [i32]),
}

/// A checked integer GEMM, handed to the per-ISA drivers.
#[cfg_attr(not(target_arch = "aarch64"), allow(dead_code))]
pub(crate) struct Q8Gemm<'a, A, B> {
    pub(crate) m: usize,
    pub(crate) n: usize,
    pub(crate) k: usize,
    a: &'a [A],
    lda: usize,
    bp: &'a [B],
    pub(crate) sums: Sums<'a>,
    ldc: usize,
}

impl<'a, A: Q8, B: Q8> Q8Gemm<'a, A, B> {
    /// Checks every argument; after this, every accessor below stays in bounds.
    #[allow(clippy::too_many_arguments)]
    fn new(
        isa: Isa,
        m: usize,
        n: usize,
        k: usize,
        a: &'a [A],
        lda: usize,
        bp: &'a [B],
        sums: Sums<'a>,
        c_len: usize,
        ldc: usize,
    ) -> Result<Self, KernelError> {
        isa.require()?;
        check::matrix("a", m, k, lda, a.len())?;
        check::at_least("packed b", packed_len_q8(k, n), bp.len())?;
        check::matrix("c", m, n, ldc, c_len)?;
        Ok(Q8Gemm {
            m,
            n,
            k,
            a,
            lda,
            bp,
            sums,
            ldc,
        })
    }

    /// The number of 16-column panels.
    pub(crate) fn panels(&self) -> usize {
        self.n.div_ceil(NR)
    }

    /// The number of groups of four k (the last may be partial).
    pub(crate) fn groups(&self) -> usize {
        self.k.div_ceil(4)
    }

    /// Rows `row0..row0 + MR` of A as their four-byte groups, each a little-endian word
    /// ready to broadcast: the full groups, and the partial last one completed with zeros
    /// (`None` when 4 divides k).
    pub(crate) fn a_words<const MR: usize>(
        &self,
        row0: usize,
    ) -> ([&'a [[A; 4]]; MR], Option<[i32; MR]>) {
        if self.k == 0 {
            return ([&[]; MR], None);
        }
        let rows: [&'a [A]; MR] =
            std::array::from_fn(|r| &self.a[(row0 + r) * self.lda..][..self.k]);
        let full = rows.map(|row| row.as_chunks::<4>().0);
        let tail = (!self.k.is_multiple_of(4)).then(|| {
            rows.map(|row| {
                let mut word = [0u8; 4];
                for (w, x) in word.iter_mut().zip(row.as_chunks::<4>().1) {
                    *w = x.bits();
                }
                i32::from_le_bytes(word)
            })
        });
        (full, tail)
    }

    /// Panels `panel0..panel0 + NP` of packed B, each as its 64-byte groups.
    pub(crate) fn b_panels<const NP: usize>(&self, panel0: usize) -> [&'a [[B; 64]]; NP] {
        let len = NR * 4 * self.groups();
        std::array::from_fn(|q| self.bp[(panel0 + q) * len..][..len].as_chunks().0)
    }

    /// The part of C's `row` that `panel` covers.
    pub(crate) fn c_part<'c>(&self, c: &'c mut [i32], row: usize, panel: usize) -> &'c mut [i32] {
        let cols = (self.n - panel * NR).min(NR);
        &mut c[row * self.ldc + panel * NR..][..cols]
    }
}

/// Four bytes of A as the little-endian word a SIMD lane holds.
#[inline(always)]
pub(crate) fn word<A: Q8>(group: &[A; 4]) -> i32 {
    i32::from_le_bytes([
        group[0].bits(),
        group[1].bits(),
        group[2].bits(),
        group[3].bits(),
    ])
}

/// The words of group `group` of each row, as the tiles broadcast them.
#[inline(always)]
pub(crate) fn words<A: Q8, const MR: usize>(rows: &[&[[A; 4]]; MR], group: usize) -> [i32; MR] {
    let mut words = [0; MR];
    for r in 0..MR {
        words[r] = word(&rows[r][group]);
    }
    words
}

/// The portable driver: MR = 4 rows by one panel, i32 sums in arrays.
fn gemm_portable<A: Q8, B: Q8>(g: &Q8Gemm<A, B>, c: &mut [i32]) {
    const MR: usize = 4;
    for (row0, rows) in row_blocks(g.m, MR) {
        for panel in 0..g.panels() {
            match rows {
                1 => tile_portable::<A, B, 1>(g, row0, panel, c),
                2 => tile_portable::<A, B, 2>(g, row0, panel, c),
                _ => tile_portable::<A, B, MR>(g, row0, panel, c),
            }
        }
    }
}

fn tile_portable<A: Q8, B: Q8, const MR: usize>(
    g: &Q8Gemm<A, B>,
    row0: usize,
    panel: usize,
    c: &mut [i32],
) {
    let (a, tail) = g.a_words::<MR>(row0);
    let [b] = g.b_panels::<1>(panel);

    let mut acc = [[0i32; NR]; MR];
    let mut step = |words: [[i32; 4]; MR], group: &[B; 64]| {
        let group = group.map(Q8::wide);
        for r in 0..MR {
            for j in 0..NR {
                let dot = (0..4).map(|t| words[r][t] * group[4 * j + t]).sum::<i32>();
                acc[r][j] = acc[r][j].wrapping_add(dot);
            }
        }
    };
    for (gi, group) in b.iter().enumerate() {
        match tail {
            Some(tail) if gi + 1 == b.len() => step(tail.map(unpack::<A>), group),
            _ => step(std::array::from_fn(|r| a[r][gi].map(Q8::wide)), group),
        }
    }

    for (r, sums) in acc.iter().enumerate() {
        let out = g.c_part(c, row0 + r, panel);
        out.copy_from_slice(&sums[..out.len()]);
    }
}

/// The four values of a little-endian word of A bytes.
fn unpack<A: Q8>(word: i32) -> [i32; 4] {
    word.to_le_bytes().map(|x| A::from_bits(x).wide())
}
