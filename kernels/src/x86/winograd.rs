//! The Winograd transforms on AVX2 and AVX-512.
//!
//! AVX2 runs the portable 16-lane loops of `crate::winograd`, inlined here so the compiler
//! vectorizes them at its width. AVX-512 works on runs of up to [`RUN`] consecutive tiles
//! of one tile row instead, so every access is a plain (masked) vector load or store:
//!
//! - input: a run's 4 input rows are one 16-float load each (its `2 * RUN + 2` columns);
//!   `B^T d` is 4 vector operations over those columns, and `(B^T d) B` picks columns
//!   `2 tx + q` of each with one permute per `q`. One channel's 16 transformed values per
//!   tile are stored in tile order first, then copied a panel row at a time.
//! - output: a run's `M` values are one masked load per `xi` (the product's columns are
//!   the tiles, in order); `A^T M A` gives 4 vectors over the run's tiles, and the 2x2
//!   outputs of each tile are interleaved into the two output rows with one permute and
//!   stored with one masked store per row.
//!
//! Gathering each tile's 16 inputs and scattering its 4 outputs element by element (the
//! portable loops' order) cost as much as the products themselves.

use std::arch::x86_64::*;

use crate::conv3x3::{Conv3x3, Epilogue};
use crate::pack::NR;
use crate::winograd::{Tiles, input_chunk, output_chunk, pad_planes};
use crate::x86::lanes_mask;

/// The most tiles per run: `2 * RUN + 2` input columns fit one 16-float register.
const RUN: usize = 7;

/// `rows` holds 16 rows of `n + 16` floats: one channel's transformed tiles in tile
/// order, before they are copied into the panels.
///
/// # Safety
/// The CPU must run avx512f.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn input_avx512(
    g: &Tiles,
    planes: &[f32],
    t0: usize,
    n: usize,
    v: &mut [f32],
    rows: &mut [f32],
) {
    let c_in = g.shape.c_in;
    let (wp, plane_len) = (g.wp, g.plane_len);
    let chunk_len = v.len() / 16;
    let row_len = rows.len() / 32;
    let panels = n.div_ceil(NR);
    // Every plane, row and panel touched below must exist: true for the buffers
    // `conv3x3_winograd_f32` cuts, checked so the unsafe accesses rest on no caller.
    let planes_needed = (t0 + n).div_ceil(g.th * g.tw) * c_in * plane_len;
    if planes.len() < planes_needed || chunk_len < panels * NR * c_in || row_len < n + NR {
        return input_chunk(g, planes, t0, n, v);
    }
    // Lane l of a column pick is column 2l + q of the run's 16 columns.
    let pick = |q: i32| {
        _mm512_setr_epi32(
            q,
            q + 2,
            q + 4,
            q + 6,
            q + 8,
            q + 10,
            q + 12,
            q + 14,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
        )
    };
    let picks = [pick(0), pick(1), pick(2), pick(3)];
    let out = v.as_mut_ptr();
    // Two sets of 16 rows: channel c is transformed into one while channel c - 1 is
    // copied out of the other. Copying a channel right after writing it stalled every
    // load: each spans two or three of the overlapping stores, which cannot be
    // forwarded, so it waited for them to reach the cache.
    for c in 0..=c_in {
        if c > 0 {
            let tmp = rows[(c - 1) % 2 * 16 * row_len..].as_ptr();
            // SAFETY: the half of `rows` holds 16 rows of `row_len >= panels * 16`
            // floats, and `v` 16 matrices of `chunk_len >= panels * c_in * 16` (both
            // checked above); the CPU runs avx512f, as this function requires.
            unsafe { copy_rows(tmp, row_len, out, chunk_len, panels, c_in, c - 1) };
        }
        if c == c_in {
            break;
        }
        let tmp = rows[c % 2 * 16 * row_len..].as_mut_ptr();
        // The runs in order, each stored whole: its lanes past the run hold garbage
        // until the next run overwrites them, and the last run's stay past tile n.
        // Plain stores: masked ones, or stores straight into the panels (16 lines
        // per run, each partly), cost several times the arithmetic.
        for (at, sample, ty, tx, _) in g.runs(t0, n, RUN) {
            // Columns 2 tx .. 2 tx + 2 len + 2 of rows 2 ty .. 2 ty + 4 of the plane.
            let cols = lanes_mask((wp - 2 * tx).min(NR));
            let base = (sample * c_in + c) * plane_len + 2 * ty * wp + 2 * tx;
            // SAFETY: the plane of (sample, c) lies inside `planes` (checked above), and
            // row 2 ty + r < 2 th + 2 and the masked columns < wp are inside the plane.
            let row = |r: usize| unsafe {
                _mm512_maskz_loadu_ps(cols, planes.as_ptr().add(base + r * wp))
            };
            let (d0, d1, d2, d3) = (row(0), row(1), row(2), row(3));
            let t = [
                _mm512_sub_ps(d0, d2),
                _mm512_add_ps(d1, d2),
                _mm512_sub_ps(d2, d1),
                _mm512_sub_ps(d1, d3),
            ];
            for (r, tr) in t.into_iter().enumerate() {
                let [e0, e1, e2, e3] = picks.map(|p| _mm512_permutexvar_ps(p, tr));
                let values = [
                    _mm512_sub_ps(e0, e2),
                    _mm512_add_ps(e1, e2),
                    _mm512_sub_ps(e2, e1),
                    _mm512_sub_ps(e1, e3),
                ];
                for (q, value) in values.into_iter().enumerate() {
                    // SAFETY: `at + 16 <= n + 16 <= row_len` (checked above).
                    unsafe { _mm512_storeu_ps(tmp.add((4 * r + q) * row_len + at), value) };
                }
            }
        }
    }
}

/// Copies one channel's 16 rows of transformed tiles (`row_len` apart, in tile order)
/// into row `c` of every panel of the 16 packed matrices (`chunk_len` apart).
///
/// # Safety
/// The CPU must run avx512f; `tmp` must hold 16 rows of `panels * 16` readable floats
/// and `out` 16 matrices of `panels * c_in * 16` writable floats, `c < c_in`.
#[target_feature(enable = "avx512f")]
unsafe fn copy_rows(
    tmp: *const f32,
    row_len: usize,
    out: *mut f32,
    chunk_len: usize,
    panels: usize,
    c_in: usize,
    c: usize,
) {
    for xi in 0..16 {
        for p in 0..panels {
            // SAFETY: as the function's contract states.
            unsafe {
                let value = _mm512_loadu_ps(tmp.add(xi * row_len + p * NR));
                _mm512_storeu_ps(out.add(xi * chunk_len + (p * c_in + c) * NR), value);
            }
        }
    }
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

/// `crate::winograd::pad_planes` with one masked load and store per 16 columns of a
/// padded row (the portable form's many short fills and copies are library calls).
///
/// # Safety
/// The CPU must run avx512f.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn pad_avx512(s: &Conv3x3, x: &[f32], planes: &mut [f32]) {
    let (th, tw) = s.tiles();
    let (hp, wp) = (2 * th + 2, 2 * tw + 2);
    let plane_in = s.h_in * s.w_in;
    let count = x.len().checked_div(plane_in).unwrap_or(0);
    if planes.len() < count * hp * wp {
        return pad_planes(s, x, planes);
    }
    let [top, left] = s.pad;
    for i in 0..count {
        let src = x[i * plane_in..].as_ptr();
        let dst = planes[i * hp * wp..].as_mut_ptr();
        for pr in 0..hp {
            let inside = pr >= top && pr - top < s.h_in;
            for col0 in (0..wp).step_by(NR) {
                let width = (wp - col0).min(NR);
                // Lanes first..end read input columns col0 + lane - left.
                let first = left.saturating_sub(col0).min(width);
                let end = (left + s.w_in).saturating_sub(col0).min(width);
                let value = if inside && end > first {
                    let mask = lanes_mask(end) & !lanes_mask(first);
                    // Lane 0's address may lie before the row (or the slice): only the
                    // masked lanes are read, and those are columns 0..w_in of input row
                    // pr - top < h_in of a plane inside `x`.
                    let at = src
                        .wrapping_add((pr - top) * s.w_in + col0)
                        .wrapping_sub(left);
                    // SAFETY: as above, every active lane is inside `x`.
                    unsafe { _mm512_maskz_loadu_ps(mask, at) }
                } else {
                    _mm512_setzero_ps()
                };
                // SAFETY: columns col0..col0 + width of row pr < hp of plane i, which
                // lies inside `planes` (checked above).
                unsafe { _mm512_mask_storeu_ps(dst.add(pr * wp + col0), lanes_mask(width), value) };
            }
        }
    }
}
