//! The Winograd transforms on AVX2 and AVX-512.
//!
//! AVX2 runs the portable 16-lane loops of `crate::winograd`, inlined here so the compiler
//! vectorizes them at its width. AVX-512 works on runs of up to [`RUN`] consecutive tiles
//! of one tile row instead, so every access is a plain (masked) vector load or store:
//!
//! - input: a run's 4 input rows are one masked 16-float load each (its `2 * RUN + 2`
//!   columns, straight from the unpadded input); `B^T d` is 4 vector operations over
//!   those columns, and the columns `2 tx + q` of each are picked into their panel's lanes
//!   with one permute per `q`. See [`input_avx512`].
//! - output: a run's `M` values are one masked load per `xi` (the product's columns are
//!   the tiles, in order); `A^T M A` gives 4 vectors over the run's tiles, and the 2x2
//!   outputs of each tile are interleaved into the two output rows with one permute and
//!   stored with one masked store per row.
//!
//! Gathering each tile's 16 inputs and scattering its 4 outputs element by element (the
//! portable loops' order) cost as much as the products themselves.

use std::arch::x86_64::*;

use crate::conv3x3::Epilogue;
use crate::pack::NR;
use crate::winograd::{Tiles, output_chunk};
use crate::x86::lanes_mask;

/// The most tiles per run: `2 * RUN + 2` input columns fit one 16-float register.
const RUN: usize = 7;

/// One run of consecutive tiles of one tile row inside a panel (see [`input_avx512`]).
#[derive(Clone, Copy)]
struct Piece {
    /// The panel lanes its tiles take.
    lanes: __mmask16,
    /// For each of its 4 input rows: the columns inside the input (none for a row of
    /// padding), and the element of channel 0 that lane 0 would read (it may lie before
    /// the row, or the slice: only masked lanes are read).
    rows: [(__mmask16, isize); 4],
    /// For each column `q` of the tile: lane `l` of the panel picks input column
    /// `2 (l - first lane) + q` of the run's 16.
    picks: [__m512i; 4],
}

/// Writes the transformed tiles `t0..t0 + n` of every channel into the packed panels of
/// the 16 matrices in `v`, reading the input `x` where it is (not a padded copy). Writes
/// nothing if `x` or `v` is shorter than the tiles need (the public entry point checks
/// them).
///
/// Each panel (16 tiles, in tile order) is cut into pieces: runs of at most [`RUN`] tiles
/// of one tile row. A piece's 4 input rows are one masked 16-float load each (its
/// `2 * RUN + 2` columns; lanes outside the input are zero, which is the padding);
/// `B^T d` is 4 vector operations over those columns. Each of its rows' 4 column picks
/// `2 tx + q` is one permute, merged into the panel's lanes of the piece; once every piece
/// is in, `(B^T d) B` is 16 vector operations and the panel's 16 rows of the channel are
/// 16 aligned stores. No store overlaps another and no load waits on a store: staging
/// runs in tile order and copying them into the panels spent most of its time waiting
/// for its own stores (on Sapphire Rapids, 10 of the 48 us of a 32 -> 64 channel layer
/// on 14 x 14 at batch 1, plus 1.6 us padding).
///
/// # Safety
/// The CPU must run avx512f.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn input_avx512(g: &Tiles, x: &[f32], t0: usize, n: usize, v: &mut [f32]) {
    let s = &g.shape;
    let (c_in, w_in) = (s.c_in, s.w_in);
    let plane = s.h_in * w_in;
    let chunk_len = v.len() / 16;
    let panels = n.div_ceil(NR);
    // Every sample's channels and every panel written below must exist: true for the
    // buffers `conv3x3_winograd_f32` checks and cuts, checked so that the unsafe accesses
    // rest on no caller.
    let samples = (t0 + n).div_ceil(g.th * g.tw);
    if x.len() < samples * c_in * plane || chunk_len < panels * c_in * NR {
        return;
    }
    // Lane l picks column 2l + q of a run's 16, before the shift to the piece's lanes.
    let twice_lane = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let columns: [__m512i; 4] =
        std::array::from_fn(|q| _mm512_add_epi32(twice_lane, _mm512_set1_epi32(q as i32)));
    let (pad_top, pad_left) = (
        isize::try_from(s.pad[0]).unwrap_or(isize::MAX),
        isize::try_from(s.pad[1]).unwrap_or(isize::MAX),
    );
    // `x` is at most isize::MAX bytes, so its sizes convert.
    let (h_in, w_in, plane) = (as_isize(s.h_in), as_isize(w_in), as_isize(plane));
    let out = v.as_mut_ptr();
    let empty = Piece {
        lanes: 0,
        rows: [(0, 0); 4],
        picks: columns,
    };
    for p in 0..panels {
        let first = p * NR;
        let mut pieces = [empty; NR];
        let mut count = 0;
        for (at, sample, ty, tx, len) in g.runs(t0 + first, (n - first).min(NR), RUN) {
            // The run's input: rows iy0..iy0 + 4, columns ix0..ix0 + 2 len + 2.
            let iy0 = (2 * ty as isize).saturating_sub(pad_top);
            let ix0 = (2 * tx as isize).saturating_sub(pad_left);
            let lo = ix0.saturating_neg().clamp(0, NR as isize) as usize;
            let hi = (w_in.saturating_sub(ix0).clamp(0, NR as isize) as usize).min(2 * len + 2);
            let cols = if hi > lo {
                lanes_mask(hi) & !lanes_mask(lo)
            } else {
                0
            };
            let sample_at = (sample * c_in) as isize * plane;
            let rows = std::array::from_fn(|r| {
                let iy = iy0.saturating_add(r as isize);
                if (0..h_in).contains(&iy) && cols != 0 {
                    (cols, sample_at + iy * w_in + ix0)
                } else {
                    (0, 0)
                }
            });
            let shift = _mm512_set1_epi32(2 * at as i32);
            pieces[count] = Piece {
                lanes: lanes_mask(at + len) & !lanes_mask(at),
                rows,
                picks: columns.map(|c| _mm512_sub_epi32(c, shift)),
            };
            count += 1;
        }
        for c in 0..c_in {
            let channel = c as isize * plane;
            // e[r][q]: column q of row r of B^T d, for the panel's 16 tiles.
            let mut e = [[_mm512_setzero_ps(); 4]; 4];
            for piece in &pieces[..count] {
                // SAFETY: only the masked lanes are read: columns inside row iy < h_in of
                // channel c < c_in of a sample inside `x` (checked above).
                let d = piece.rows.map(|(mask, at)| unsafe {
                    _mm512_maskz_loadu_ps(mask, x.as_ptr().wrapping_offset(at + channel))
                });
                let t = [
                    _mm512_sub_ps(d[0], d[2]),
                    _mm512_add_ps(d[1], d[2]),
                    _mm512_sub_ps(d[2], d[1]),
                    _mm512_sub_ps(d[1], d[3]),
                ];
                for (er, tr) in e.iter_mut().zip(t) {
                    for (eq, pick) in er.iter_mut().zip(piece.picks) {
                        *eq = _mm512_mask_permutexvar_ps(*eq, piece.lanes, pick, tr);
                    }
                }
            }
            for (r, [e0, e1, e2, e3]) in e.into_iter().enumerate() {
                let values = [
                    _mm512_sub_ps(e0, e2),
                    _mm512_add_ps(e1, e2),
                    _mm512_sub_ps(e2, e1),
                    _mm512_sub_ps(e1, e3),
                ];
                for (q, value) in values.into_iter().enumerate() {
                    let at = (4 * r + q) * chunk_len + (p * c_in + c) * NR;
                    // SAFETY: row c of panel p of matrix 4r + q: inside `v` (checked above).
                    unsafe { _mm512_storeu_ps(out.add(at), value) };
                }
            }
        }
    }
}

/// A size of `x` as an `isize`: its elements number at most `isize::MAX`.
fn as_isize(size: usize) -> isize {
    isize::try_from(size).unwrap_or(isize::MAX)
}

/// # Safety
/// The CPU must run avx512f.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn output_avx512(
    g: &Tiles,
    m: &[f32],
    ld: usize,
    t0: usize,
    n: usize,
    e: &Epilogue,
    y: &mut [f32],
) {
    let s = &g.shape;
    let (hw, w_out) = (s.h_out * s.w_out, s.w_out);
    let (ph, pw) = s.out_dims();
    let matrix = s.c_out * ld;
    let samples = (t0 + n).div_ceil(g.th * g.tw);
    if y.len() < samples * s.c_out * ph * pw || m.len() < 16 * matrix || n > ld {
        return output_chunk(g, m, ld, t0, n, e, y);
    }
    let (lo, hi) = (_mm512_set1_ps(e.lo), _mm512_set1_ps(e.hi));
    if s.pool {
        // SAFETY: as this function requires; `y` and `m` were checked above.
        return unsafe { output_pooled_avx512(g, m, ld, t0, n, e, y) };
    }
    // Lanes 2l and 2l + 1 of a row are the left and right outputs of tile l.
    let interleave = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    let out = y.as_mut_ptr();
    // Channel by channel, then the runs in order, so the rows of `m` are read in
    // order (see `input_avx512`).
    for co in 0..s.c_out {
        for (at, sample, ty, tx, len) in g.runs(t0, n, RUN) {
            let tiles = lanes_mask(len);
            let cols = lanes_mask((2 * len).min(w_out - 2 * tx));
            let below = 2 * ty + 1 < s.h_out;
            // SAFETY: tiles `at..at + len` of row `co` of each matrix are inside `m`
            // (`at + len <= n <= ld`, checked above with the length of `m`).
            let load = |xi: usize| unsafe {
                _mm512_maskz_loadu_ps(tiles, m.as_ptr().add(xi * matrix + co * ld + at))
            };
            let [r0, r1] = a_t_m(load);
            let b = _mm512_set1_ps(e.bias.map_or(0.0, |b| b[co]));
            // max(lo, x) then min(hi, x): NaN passes, as in `reference::clamp`.
            let finish = |x: __m512| _mm512_min_ps(hi, _mm512_max_ps(lo, _mm512_add_ps(x, b)));
            let line = |r: &[__m512; 4]| {
                let left = finish(_mm512_add_ps(_mm512_add_ps(r[0], r[1]), r[2]));
                let right = finish(_mm512_sub_ps(_mm512_sub_ps(r[1], r[2]), r[3]));
                _mm512_permutex2var_ps(left, interleave, right)
            };
            let top = (sample * s.c_out + co) * hw + 2 * ty * w_out + 2 * tx;
            // SAFETY: the masked columns 2 tx .. are below w_out, and rows 2 ty (and
            // 2 ty + 1 when below) below h_out, of a plane inside `y` (checked above).
            unsafe {
                _mm512_mask_storeu_ps(out.add(top), cols, line(&r0));
                if below {
                    _mm512_mask_storeu_ps(out.add(top + w_out), cols, line(&r1));
                }
            }
        }
    }
}

/// The output transform of a pooling shape: one value per tile, so the pooled outputs of
/// consecutive tiles of a sample are consecutive in its planes. The tiles go 16 at a time,
/// whole vectors, instead of in runs of one tile row; each vector is stored with one
/// masked store per sample it spans.
///
/// # Safety
/// The CPU must run avx512f; `y` must hold the pooled planes of every sample the tiles
/// reach, and `m` 16 matrices of `c_out` rows of `ld >= n` floats.
#[target_feature(enable = "avx512f")]
unsafe fn output_pooled_avx512(
    g: &Tiles,
    m: &[f32],
    ld: usize,
    t0: usize,
    n: usize,
    e: &Epilogue,
    y: &mut [f32],
) {
    let s = &g.shape;
    let per = g.th * g.tw;
    let matrix = s.c_out * ld;
    let (lo, hi) = (_mm512_set1_ps(e.lo), _mm512_set1_ps(e.hi));
    let out = y.as_mut_ptr();
    for first in (0..n).step_by(NR) {
        let lanes = (n - first).min(NR);
        // The samples the 16 tiles span: for each, the lanes it takes and the element of
        // channel 0 that lane 0 would go to (lanes before the first it takes fall before it).
        let mut spans = [(0 as __mmask16, 0usize); NR];
        let mut count = 0;
        let mut j = 0;
        while j < lanes {
            let (sample, rest) = ((t0 + first + j) / per, (t0 + first + j) % per);
            let len = (per - rest).min(lanes - j);
            let mask = lanes_mask(j + len) & !lanes_mask(j);
            spans[count] = (mask, (sample * s.c_out * per + rest).wrapping_sub(j));
            count += 1;
            j += len;
        }
        let tiles = lanes_mask(lanes);
        for co in 0..s.c_out {
            // SAFETY: tiles first .. first + lanes <= n <= ld of row co of each matrix
            // are inside `m`, as the caller guarantees.
            let load = |xi: usize| unsafe {
                _mm512_maskz_loadu_ps(tiles, m.as_ptr().add(xi * matrix + co * ld + first))
            };
            let [r0, r1] = a_t_m(load);
            // The pool's order (`crate::pool`, whose `max(a, b)` is `maxps(b, a)`): down
            // each column, then across. On the raw sums, as adding the bias and clamping
            // commute with the maximum.
            let left = |r: &[__m512; 4]| _mm512_add_ps(_mm512_add_ps(r[0], r[1]), r[2]);
            let right = |r: &[__m512; 4]| _mm512_sub_ps(_mm512_sub_ps(r[1], r[2]), r[3]);
            let m0 = _mm512_max_ps(left(&r1), left(&r0));
            let m1 = _mm512_max_ps(right(&r1), right(&r0));
            let b = _mm512_set1_ps(e.bias.map_or(0.0, |b| b[co]));
            let v = _mm512_min_ps(
                hi,
                _mm512_max_ps(lo, _mm512_add_ps(_mm512_max_ps(m1, m0), b)),
            );
            for &(mask, at) in &spans[..count] {
                // Lane 0's address may lie before the plane (or `y`): only the masked
                // lanes are written, and those are the pooled outputs of their tiles,
                // inside the plane of channel co of their sample.
                let at = out.wrapping_add(at.wrapping_add(co * per));
                // SAFETY: as above, every active lane is inside `y`.
                unsafe { _mm512_mask_storeu_ps(at, mask, v) };
            }
        }
    }
}

/// `A^T M` of 16 lanes of tiles: the two rows of 4 vectors, from the 16 vectors of `M`
/// that `load(xi)` gives.
#[target_feature(enable = "avx512f")]
#[inline]
fn a_t_m(load: impl Fn(usize) -> __m512) -> [[__m512; 4]; 2] {
    let mut r = [[_mm512_setzero_ps(); 4]; 2];
    for j in 0..4 {
        let (m0, m1, m2, m3) = (load(j), load(4 + j), load(8 + j), load(12 + j));
        r[0][j] = _mm512_add_ps(_mm512_add_ps(m0, m1), m2);
        r[1][j] = _mm512_sub_ps(_mm512_sub_ps(m1, m2), m3);
    }
    r
}
