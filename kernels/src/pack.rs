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
    pack_groups(b, k, n, ldb, out)
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

    for (p, panel) in out[..len].chunks_exact_mut(NR * k).enumerate() {
        let col0 = p * NR;
        let cols = (n - col0).min(NR);
        for (row, dst) in panel.chunks_exact_mut(NR).enumerate() {
            dst[..cols].copy_from_slice(&b[row * ldb + col0..][..cols]);
            dst[cols..].fill(T::default());
        }
    }
    Ok(())
}

/// The int8 layout: per panel, per group of 4 rows, 16 columns of 4 consecutive k.
fn pack_groups<T: Copy + Default>(
    b: &[T],
    k: usize,
    n: usize,
    ldb: usize,
    out: &mut [T],
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
        for (g, dst) in panel.as_chunks_mut::<64>().0.iter_mut().enumerate() {
            // The four source rows of this group; rows past k are empty (zero padding).
            let rows: [&[T]; 4] = std::array::from_fn(|t| {
                let row = 4 * g + t;
                if row < k {
                    &b[row * ldb + col0..][..cols]
                } else {
                    &[]
                }
            });
            match rows.map(<&[T; NR]>::try_from) {
                // The common case, a full 4 x 16 block: a fixed-size transpose the compiler
                // turns into byte shuffles.
                [Ok(r0), Ok(r1), Ok(r2), Ok(r3)] => {
                    for j in 0..NR {
                        dst[4 * j..4 * j + 4].copy_from_slice(&[r0[j], r1[j], r2[j], r3[j]]);
                    }
                }
                _ => {
                    dst.fill(T::default());
                    for (t, row) in rows.iter().enumerate() {
                        for (j, &x) in row.iter().enumerate() {
                            dst[4 * j + t] = x;
                        }
                    }
                }
            }
        }
    }
    Ok(())
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
