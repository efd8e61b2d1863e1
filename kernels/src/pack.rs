//! Packing B into the panel layouts the GEMMs stream (described in the crate docs).
//!
//! Every `pack_b_*` has a `_strided` form taking the row stride `ldb` of B, so the runtime
//! can pack im2col columns or a slice of a wider matrix without copying it first.

use half::f16;

use crate::check;
use crate::error::KernelError;

/// The panel width: packed B holds its columns in panels of 16.
pub const NR: usize = 16;

/// Elements of f32 packed B for a `k x n` matrix (saturates on overflow).
pub fn packed_len_f32(k: usize, n: usize) -> usize {
    check::product(n.div_ceil(NR), NR, k)
}

/// Elements of f16 packed B for a `k x n` matrix; the same count as [`packed_len_f32`].
pub fn packed_len_f16(k: usize, n: usize) -> usize {
    packed_len_f32(k, n)
}

/// Elements of int8 packed B for a `k x n` matrix: k is padded to a multiple of 4.
pub fn packed_len_q8(k: usize, n: usize) -> usize {
    check::product(n.div_ceil(NR), NR, k.div_ceil(4) * 4)
}

/// Packs the row-major `k x n` matrix `b` (row stride `n`) for [`sgemm`](crate::sgemm).
///
/// Writes the first [`packed_len_f32`] elements of `out`. Errors if a slice is short.
pub fn pack_b_f32(b: &[f32], k: usize, n: usize, out: &mut [f32]) -> Result<(), KernelError> {
    pack_b_f32_strided(b, k, n, n, out)
}

/// [`pack_b_f32`] for a `k x n` matrix whose rows are `ldb >= n` elements apart.
pub fn pack_b_f32_strided(
    b: &[f32],
    k: usize,
    n: usize,
    ldb: usize,
    out: &mut [f32],
) -> Result<(), KernelError> {
    pack_panels(b, k, n, ldb, out)
}

/// Packs the row-major `k x n` f16 matrix `b` for [`hgemm`](crate::hgemm).
///
/// Packing only moves values: convert f32 weights to f16 first (for example with
/// `half::slice::HalfFloatSliceExt::convert_from_f32_slice`), so the reference and the
/// kernels see the same rounded weights.
pub fn pack_b_f16(b: &[f16], k: usize, n: usize, out: &mut [f16]) -> Result<(), KernelError> {
    pack_b_f16_strided(b, k, n, n, out)
}

/// [`pack_b_f16`] for a `k x n` matrix whose rows are `ldb >= n` elements apart.
pub fn pack_b_f16_strided(
    b: &[f16],
    k: usize,
    n: usize,
    ldb: usize,
    out: &mut [f16],
) -> Result<(), KernelError> {
    pack_panels(b, k, n, ldb, out)
}

/// Packs the row-major `k x n` int8 matrix `b` for [`qgemm_u8s8`](crate::qgemm_u8s8).
///
/// Writes the first [`packed_len_q8`] elements of `out`.
pub fn pack_b_s8(b: &[i8], k: usize, n: usize, out: &mut [i8]) -> Result<(), KernelError> {
    pack_b_s8_strided(b, k, n, n, out)
}

/// [`pack_b_s8`] for a `k x n` matrix whose rows are `ldb >= n` elements apart.
pub fn pack_b_s8_strided(
    b: &[i8],
    k: usize,
    n: usize,
    ldb: usize,
    out: &mut [i8],
) -> Result<(), KernelError> {
    pack_groups(as_bytes(b), k, n, ldb, as_bytes_mut(out))
}

/// Packs the row-major `k x n` uint8 matrix `b` for [`qgemm_s8u8`](crate::qgemm_s8u8).
pub fn pack_b_u8(b: &[u8], k: usize, n: usize, out: &mut [u8]) -> Result<(), KernelError> {
    pack_b_u8_strided(b, k, n, n, out)
}

/// [`pack_b_u8`] for a `k x n` matrix whose rows are `ldb >= n` elements apart: the form
/// for im2col, where B's rows are the kernel taps and its columns the output positions.
pub fn pack_b_u8_strided(
    b: &[u8],
    k: usize,
    n: usize,
    ldb: usize,
    out: &mut [u8],
) -> Result<(), KernelError> {
    pack_groups(b, k, n, ldb, out)
}

/// The f32/f16 layout: per panel, K rows of 16 columns.
fn pack_panels<T: Copy + Default>(
    b: &[T],
    k: usize,
    n: usize,
    ldb: usize,
    out: &mut [T],
) -> Result<(), KernelError> {
    check::matrix("b", k, n, ldb, b.len())?;
    let len = packed_len_f32(k, n);
    check::at_least("packed b", len, out.len())?;
    if len == 0 {
        return Ok(());
    }

    // Row by row, so B is read in order; each row scatters 16-column pieces into the
    // panels. Full pieces are fixed 16-element copies (a few vector moves, not a call to
    // memcpy), then the last panel's real columns are copied and its padding zeroed.
    let full = n / NR;
    let (panels, last) = out[..len].split_at_mut(full * NR * k);
    for row in 0..k {
        let src = &b[row * ldb..][..n];
        let (pieces, rest) = src.as_chunks::<NR>();
        for (p, piece) in pieces.iter().enumerate() {
            if let Some(dst) = panels[(p * k + row) * NR..].first_chunk_mut::<NR>() {
                *dst = *piece;
            }
        }
        if !rest.is_empty() {
            let dst = &mut last[row * NR..][..NR];
            dst[..rest.len()].copy_from_slice(rest);
            dst[rest.len()..].fill(T::default());
        }
    }
    Ok(())
}

/// The int8 layout: per panel, per group of 4 rows, 16 columns of 4 consecutive k.
fn pack_groups(
    b: &[u8],
    k: usize,
    n: usize,
    ldb: usize,
    out: &mut [u8],
) -> Result<(), KernelError> {
    check::matrix("b", k, n, ldb, b.len())?;
    let len = packed_len_q8(k, n);
    check::at_least("packed b", len, out.len())?;
    if len == 0 {
        return Ok(());
    }

    let kp = k.div_ceil(4) * 4;
    for (p, panel) in out[..len].chunks_exact_mut(NR * kp).enumerate() {
        let col0 = p * NR;
        let cols = (n - col0).min(NR);
        let groups = panel.as_chunks_mut::<64>().0;
        // Groups of four real rows and 16 real columns: a fixed-size transpose.
        let full = if cols == NR { k / 4 } else { 0 };
        for (g, dst) in groups[..full].iter_mut().enumerate() {
            let at = 4 * g * ldb + col0;
            let row = |t: usize| b[at + t * ldb..].first_chunk::<NR>();
            if let (Some(r0), Some(r1), Some(r2), Some(r3)) = (row(0), row(1), row(2), row(3)) {
                *dst = transpose_4x16([r0, r1, r2, r3]);
            }
        }
        // The rest (a partial panel, or the last group when 4 does not divide k): byte by
        // byte, zero past k and past n.
        for (g, dst) in groups.iter_mut().enumerate().skip(full) {
            dst.fill(0);
            for t in 0..4 {
                let row = 4 * g + t;
                if row < k {
                    for (j, &x) in b[row * ldb + col0..][..cols].iter().enumerate() {
                        dst[4 * j + t] = x;
                    }
                }
            }
        }
    }
    Ok(())
}

/// One group of the int8 packed layout from four rows of B: byte `4j + t` of the result is
/// byte `j` of row `t` (the 16 columns of a panel, four consecutive k each). For callers
/// that build packed panels themselves, such as an unfold written straight into them.
#[inline]
pub fn interleave_4x16(rows: [&[u8; 16]; 4]) -> [u8; 64] {
    transpose_4x16(rows)
}

/// The bytes of an i8 slice, as u8.
fn as_bytes(x: &[i8]) -> &[u8] {
    // SAFETY: i8 and u8 have the same size and alignment and every bit pattern is valid
    // for both; the new slice borrows the same memory for the same lifetime.
    unsafe { std::slice::from_raw_parts(x.as_ptr().cast(), x.len()) }
}

/// The bytes of a mutable i8 slice, as u8.
fn as_bytes_mut(x: &mut [i8]) -> &mut [u8] {
    // SAFETY: as in `as_bytes`; the mutable borrow of `x` is moved into the result, so
    // the memory stays uniquely borrowed.
    unsafe { std::slice::from_raw_parts_mut(x.as_mut_ptr().cast(), x.len()) }
}

/// Interleaves four rows of 16 bytes column by column: byte `4j + t` of the result is
/// byte `j` of row `t`.
///
/// Byte unpacking is part of the architecture baseline (SSE2 on x86-64, Advanced SIMD on
/// aarch64), so this needs no run-time check; other targets get the scalar loop.
#[inline(always)]
fn transpose_4x16(rows: [&[u8; 16]; 4]) -> [u8; 64] {
    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    {
        crate::x86::pack::transpose_4x16(rows)
    }
    #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
    {
        crate::arm::pack::transpose_4x16(rows)
    }
    #[cfg(not(any(
        all(target_arch = "x86_64", target_feature = "sse2"),
        all(target_arch = "aarch64", target_feature = "neon")
    )))]
    {
        transpose_4x16_scalar(rows)
    }
}

/// [`transpose_4x16`] one byte at a time: the definition the SIMD forms are tested
/// against.
#[cfg_attr(
    any(
        all(target_arch = "x86_64", target_feature = "sse2"),
        all(target_arch = "aarch64", target_feature = "neon")
    ),
    allow(dead_code)
)]
fn transpose_4x16_scalar(rows: [&[u8; 16]; 4]) -> [u8; 64] {
    std::array::from_fn(|i| rows[i % 4][i / 4])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f32_layout_is_panels_of_16_zero_padded() {
        // 2 x 17: two panels, the second with one real column.
        let (k, n) = (2, 17);
        let b: Vec<f32> = (0..k * n).map(|x| x as f32 + 1.0).collect();
        let mut out = vec![-1.0; packed_len_f32(k, n)];
        assert_eq!(out.len(), 64);
        pack_b_f32(&b, k, n, &mut out).unwrap();
        assert_eq!(&out[..16], &b[..16]);
        assert_eq!(&out[16..32], &b[17..33]);
        assert_eq!(out[32], 17.0);
        assert!(out[33..48].iter().all(|&x| x == 0.0));
        assert_eq!(out[48], 34.0);
        assert!(out[49..].iter().all(|&x| x == 0.0));
    }

    #[test]
    fn q8_layout_groups_four_k_per_column() {
        // 5 x 3: k pads to 8, one panel of 16 columns.
        let (k, n) = (5, 3);
        let b: Vec<u8> = (1..=15).collect();
        let mut out = vec![0xaa; packed_len_q8(k, n)];
        assert_eq!(out.len(), 128);
        pack_b_u8(&b, k, n, &mut out).unwrap();
        // Group 0, column 1: B[0..4][1].
        assert_eq!(&out[4..8], &[2, 5, 8, 11]);
        // Group 1, column 2: B[4][2], then zero rows.
        assert_eq!(&out[64 + 8..64 + 12], &[15, 0, 0, 0]);
        // Columns past n are zero.
        assert!(out[12..64].iter().all(|&x| x == 0));
    }

    #[test]
    fn transpose_matches_its_definition() {
        let rows: [[u8; 16]; 4] =
            std::array::from_fn(|t| std::array::from_fn(|j| (16 * t + j) as u8));
        let rows = [&rows[0], &rows[1], &rows[2], &rows[3]];
        let out = transpose_4x16(rows);
        assert_eq!(out, transpose_4x16_scalar(rows));
        assert_eq!(&out[..8], &[0, 16, 32, 48, 1, 17, 33, 49]);
    }

    /// Every packed byte against the layout's definition, for shapes with partial panels,
    /// partial groups and strides wider than n.
    #[test]
    fn q8_pack_matches_the_layout_definition() {
        for k in [1, 3, 4, 5, 8, 9, 13, 72, 288] {
            for n in [1, 15, 16, 17, 33, 196] {
                for extra in [0, 3] {
                    let ldb = n + extra;
                    let b: Vec<u8> = (0..(k - 1) * ldb + n)
                        .map(|x| (x * 7 + x / 13) as u8)
                        .collect();
                    let mut out = vec![0xaa; packed_len_q8(k, n) + 5];
                    pack_b_u8_strided(&b, k, n, ldb, &mut out).unwrap();
                    let kp = k.div_ceil(4) * 4;
                    for (i, &got) in out[..packed_len_q8(k, n)].iter().enumerate() {
                        let (p, rest) = (i / (NR * kp), i % (NR * kp));
                        let (g, j, t) = (rest / 64, rest % 64 / 4, rest % 4);
                        let (row, col) = (4 * g + t, NR * p + j);
                        let want = if row < k && col < n {
                            b[row * ldb + col]
                        } else {
                            0
                        };
                        assert_eq!(got, want, "k {k} n {n} ldb {ldb} byte {i}");
                    }
                    assert!(out[packed_len_q8(k, n)..].iter().all(|&x| x == 0xaa));
                }
            }
        }
    }

    #[test]
    fn f32_pack_matches_the_layout_definition() {
        for k in [1, 2, 9, 72] {
            for n in [1, 15, 16, 17, 33, 196] {
                let ldb = n + 2;
                let b: Vec<f32> = (0..(k - 1) * ldb + n).map(|x| x as f32).collect();
                let mut out = vec![-1.0; packed_len_f32(k, n)];
                pack_b_f32_strided(&b, k, n, ldb, &mut out).unwrap();
                for (i, &got) in out.iter().enumerate() {
                    let (p, rest) = (i / (NR * k), i % (NR * k));
                    let (row, col) = (rest / NR, NR * p + rest % NR);
                    let want = if col < n { b[row * ldb + col] } else { 0.0 };
                    assert_eq!(got, want, "k {k} n {n} element {i}");
                }
            }
        }
    }

    #[test]
    fn strided_pack_reads_only_the_first_n_columns() {
        let (k, n, ldb) = (4, 16, 20);
        let b: Vec<i8> = (0..(k - 1) * ldb + n).map(|x| (x % 100) as i8).collect();
        let mut strided = vec![0; packed_len_q8(k, n)];
        pack_b_s8_strided(&b, k, n, ldb, &mut strided).unwrap();
        let dense: Vec<i8> = (0..k)
            .flat_map(|r| b[r * ldb..r * ldb + n].to_vec())
            .collect();
        let mut packed = vec![0; packed_len_q8(k, n)];
        pack_b_s8(&dense, k, n, &mut packed).unwrap();
        assert_eq!(strided, packed);
    }

    #[test]
    fn short_slices_are_errors() {
        let mut out = vec![0.0; 31];
        let err = pack_b_f32(&[0.0; 4], 2, 2, &mut out).unwrap_err();
        assert_eq!(
            err,
            KernelError::TooShort {
                what: "packed b",
                needed: 32,
                got: 31
            }
        );
        let err = pack_b_u8_strided(&[0; 4], 2, 3, 2, &mut [0; 64]).unwrap_err();
        assert_eq!(
            err,
            KernelError::StrideTooSmall {
                what: "b",
                stride: 2,
                width: 3
            }
        );
        let err = pack_b_s8(&[0; 5], 2, 3, &mut [0; 64]).unwrap_err();
        assert_eq!(
            err,
            KernelError::TooShort {
                what: "b",
                needed: 6,
                got: 5
            }
        );
    }
}
