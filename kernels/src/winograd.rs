//! 3x3 convolutions by Winograd's minimal filtering F(2x2, 3x3): 16 multiplies per 2x2
//! outputs and input channel instead of 36, so 2.25 times fewer than a direct
//! convolution, at the price of the transforms around them.
//!
//! With the 3x3 kernel `g`, a 4x4 input tile `d` and the matrices below, the 2x2 outputs
//! of the tile are `Y = A^T [(G g G^T) ⊙ (B^T d B)] A`. Summed over input channels, the
//! elementwise product becomes 16 independent matrix products, one per position `xi` of
//! the 4x4 transformed tile:
//!
//! ```text
//! M[xi] (c_out x tiles) = U[xi] (c_out x c_in) * V[xi] (c_in x tiles)
//! ```
//!
//! where `U[xi]` are the transformed weights (made once, by [`winograd_weights_f32`]) and
//! `V[xi]` the transformed input tiles. Those products run on [`sgemm`](crate::sgemm), with
//! `V` written straight into its packed-B panel layout.
//!
//! ```text
//!        | 1  0  0 |          | 1  0 -1  0 |
//!    G = | ½  ½  ½ |   B^T =  | 0  1  1  0 |   A^T = | 1  1  1  0 |
//!        | ½ -½  ½ |          | 0 -1  1  0 |         | 0  1 -1 -1 |
//!        | 0  0  1 |          | 0  1  0 -1 |
//! ```
//!
//! # Tiles and chunks
//!
//! Output tile `(ty, tx)` of a sample covers outputs `2ty..2ty + 2` by `2tx..2tx + 2` and
//! reads inputs `2ty - pad_top..+4` by `2tx - pad_left..+4`; outside the input is zero,
//! outputs past an odd output size are computed and dropped. The batch is folded into
//! the tile axis (tile `t = (sample * tiles_h + ty) * tiles_w + tx`), so the columns of
//! the products fill whole 16-column panels however small the image. The tiles are
//! processed in chunks of [`Conv3x3::chunk_tiles`], sized so that one chunk's `V` and
//! `M` stay in the L2 cache; scratch is therefore bounded per chunk, plus one zero-padded
//! copy of the input on the levels that read tiles from one (AVX-512 masks its loads
//! from the input instead).
//!
//! # Accuracy
//!
//! The transforms add and subtract up to 9 input values and 9 products, so the rounding
//! error grows by a small constant factor over a direct convolution; for inputs and
//! weights of magnitude about 1 the results agree with it to about 1e-5 relative.

use crate::check;
use crate::conv3x3::{Conv3x3, Epilogue};
use crate::error::KernelError;
use crate::isa::Isa;
use crate::pack::{NR, packed_len_f32};
use crate::pool::max;
use crate::reference::clamp;
use crate::sgemm::{Bias, sgemm};

/// The scratch the chunks of `V` and `M` may take together (bytes): about half of a
/// 1-2 MiB L2, so the products' operands stay in it between the transforms.
const CHUNK_BYTES: usize = 256 << 10;

/// The Winograd layout's sizes.
impl Conv3x3 {
    /// Output tiles per sample: `(ceil(h_out / 2), ceil(w_out / 2))`.
    pub fn tiles(&self) -> (usize, usize) {
        (self.h_out.div_ceil(2), self.w_out.div_ceil(2))
    }

    /// Elements of the transformed weights: 16 matrices of `c_out x c_in`.
    pub fn weights_len(&self) -> usize {
        check::product(16, self.c_out, self.c_in)
    }

    /// Tiles per chunk: a multiple of 16 (whole panels), as many as fit the cache budget,
    /// at least 16.
    pub fn chunk_tiles(&self) -> usize {
        let per_tile = 16usize
            .saturating_mul(self.c_in.saturating_add(self.c_out))
            .saturating_mul(size_of::<f32>())
            .max(1);
        (CHUNK_BYTES / per_tile / NR).max(1) * NR
    }

    /// f32 elements of scratch [`conv3x3_winograd_f32`] needs for `batch` samples
    /// (`usize::MAX` on overflow): one chunk's `V` and `M`, the zero-padded input planes
    /// (which AVX-512 does without), and [`NR`] more to start `V` on a cache line.
    pub fn scratch_len(&self, batch: usize) -> usize {
        let planes = check::product(batch, self.c_in, self.plane_len());
        let chunk = self.chunk_tiles();
        let v = check::product(16, self.c_in, chunk);
        let m = check::product(16, self.c_out, chunk);
        planes
            .checked_add(v)
            .and_then(|s| s.checked_add(m))
            .and_then(|s| s.checked_add(NR))
            .unwrap_or(usize::MAX)
    }

    /// Elements of one padded input plane: `(2 * tiles_h + 2) x (2 * tiles_w + 2)`, every
    /// tile's 4x4 read inside it.
    fn plane_len(&self) -> usize {
        let (th, tw) = self.tiles();
        th.saturating_mul(2)
            .saturating_add(2)
            .saturating_mul(tw.saturating_mul(2).saturating_add(2))
    }
}

/// Transforms 3x3 kernels into the 16 matrices `U[xi] = (G g G^T)[xi]`.
///
/// `g` is the ONNX weight tensor `[c_out, c_in, 3, 3]`; `u` receives 16 row-major
/// `c_out x c_in` matrices, matrix `xi = 4 * row + column` of the 4x4 transformed kernel
/// first at element `xi * c_out * c_in`. Errors if a slice is short.
pub fn winograd_weights_f32(
    g: &[f32],
    c_out: usize,
    c_in: usize,
    u: &mut [f32],
) -> Result<(), KernelError> {
    let pairs = c_out.saturating_mul(c_in);
    check::at_least("weights", check::product(pairs, 9, 1), g.len())?;
    check::at_least("transformed weights", check::product(pairs, 16, 1), u.len())?;
    for (pair, k) in g.chunks_exact(9).take(pairs).enumerate() {
        // G g: 4 x 3, then (G g) G^T: 4 x 4.
        let mut gg = [[0.0f32; 3]; 4];
        for col in 0..3 {
            let (a, b, c) = (k[col], k[3 + col], k[6 + col]);
            gg[0][col] = a;
            gg[1][col] = 0.5 * (a + b + c);
            gg[2][col] = 0.5 * (a - b + c);
            gg[3][col] = c;
        }
        for (row, r) in gg.iter().enumerate() {
            let t = [
                r[0],
                0.5 * (r[0] + r[1] + r[2]),
                0.5 * (r[0] - r[1] + r[2]),
                r[2],
            ];
            for (col, &value) in t.iter().enumerate() {
                u[(4 * row + col) * pairs + pair] = value;
            }
        }
    }
    Ok(())
}

/// `y = clamp(conv3x3(x, g) + bias, lo, hi)` over `batch` NCHW samples, with `u` the
/// kernels transformed by [`winograd_weights_f32`].
///
/// `x` holds `batch x c_in x h_in x w_in` values, `y` receives `batch x c_out` planes of
/// [`Conv3x3::out_dims`]; `bias` (optional) has one value per output channel. Pass `-inf, inf` for no
/// clamp. `scratch` holds at least [`Conv3x3::scratch_len`] elements; its contents
/// on entry do not matter. Errors, having written nothing, if `isa` is unavailable or a
/// slice is short.
#[allow(clippy::too_many_arguments)]
pub fn conv3x3_winograd_f32(
    isa: Isa,
    shape: &Conv3x3,
    batch: usize,
    x: &[f32],
    u: &[f32],
    bias: Option<&[f32]>,
    lo: f32,
    hi: f32,
    y: &mut [f32],
    scratch: &mut [f32],
) -> Result<(), KernelError> {
    isa.require()?;
    let s = *shape;
    let (x_len, y_len) = s.check_io(batch, x, y, bias)?;
    check::at_least("transformed weights", s.weights_len(), u.len())?;
    check::at_least("scratch", s.scratch_len(batch), scratch.len())?;
    if x_len == 0 || y_len == 0 {
        // Nothing to read (no input channel or pixel) still means outputs to write.
        let value = |c: usize| clamp(bias.map_or(0.0, |b| b[c]), lo, hi);
        let (ph, pw) = s.out_dims();
        let plane = ph * pw;
        if plane > 0 {
            for (i, out) in y[..y_len].chunks_exact_mut(plane).enumerate() {
                out.fill(value(i % s.c_out));
            }
        }
        return Ok(());
    }

    let (th, tw) = s.tiles();
    let tiles = batch * th * tw;
    let chunk = s.chunk_tiles();
    let plane_len = s.plane_len();
    // `V` and `M` start on a cache line (a multiple of 16 floats long each, they keep
    // every panel row on one), so no store or load of the products straddles two.
    let skip = scratch.as_ptr().align_offset(64).min(NR - 1);
    let (v, rest) = scratch[skip..].split_at_mut(16 * s.c_in * chunk);
    let (m, rest) = rest.split_at_mut(16 * s.c_out * chunk);
    let planes = &mut rest[..batch * s.c_in * plane_len];
    let x = &x[..x_len];
    if !reads_unpadded(isa) {
        pad_planes(&s, x, planes);
    }
    let geometry = Tiles {
        shape: s,
        th,
        tw,
        wp: 2 * tw + 2,
        plane_len,
    };
    for t0 in (0..tiles).step_by(chunk) {
        let n = (tiles - t0).min(chunk);
        transform_input(isa, &geometry, x, planes, t0, n, v);
        let v_len = packed_len_f32(s.c_in, n);
        for xi in 0..16 {
            sgemm(
                isa,
                s.c_out,
                n,
                s.c_in,
                &u[xi * s.c_out * s.c_in..][..s.c_out * s.c_in],
                s.c_in,
                &v[xi * s.c_in * chunk..][..v_len],
                Bias::None,
                f32::NEG_INFINITY,
                f32::INFINITY,
                &mut m[xi * s.c_out * chunk..][..s.c_out * chunk],
                chunk,
            )?;
        }
        let epilogue = Epilogue { bias, lo, hi };
        transform_output(isa, &geometry, m, chunk, t0, n, &epilogue, &mut y[..y_len]);
    }
    Ok(())
}

/// The derived sizes the transforms share.
pub(crate) struct Tiles {
    pub(crate) shape: Conv3x3,
    pub(crate) th: usize,
    pub(crate) tw: usize,
    /// Width of a padded plane.
    pub(crate) wp: usize,
    pub(crate) plane_len: usize,
}

impl Tiles {
    /// Splits tiles `t0..t0 + n` into runs of at most `most` consecutive tiles of one tile
    /// row: `(first tile - t0, sample, ty, tx, length)` for each. (The x86 transforms walk
    /// tiles in runs; the portable ones one at a time.)
    #[cfg(target_arch = "x86_64")]
    pub(crate) fn runs(
        &self,
        t0: usize,
        n: usize,
        most: usize,
    ) -> impl Iterator<Item = (usize, usize, usize, usize, usize)> + '_ {
        // Divides once, then steps: a division per run cost as much as its transform.
        let per = self.th * self.tw;
        let (mut sample, rest) = (t0 / per, t0 % per);
        let (mut ty, mut tx) = (rest / self.tw, rest % self.tw);
        let mut at = 0;
        std::iter::from_fn(move || {
            if at >= n || most == 0 {
                return None;
            }
            let len = most.min(self.tw - tx).min(n - at);
            let run = (at, sample, ty, tx, len);
            at += len;
            tx += len;
            if tx == self.tw {
                tx = 0;
                ty += 1;
                if ty == self.th {
                    ty = 0;
                    sample += 1;
                }
            }
            Some(run)
        })
    }

    /// The first element of tile `t`'s 4x4 read in the padded planes, channel 0.
    #[inline(always)]
    pub(crate) fn input_at(&self, t: usize) -> usize {
        let (sample, rest) = (t / (self.th * self.tw), t % (self.th * self.tw));
        let (ty, tx) = (rest / self.tw, rest % self.tw);
        sample * self.shape.c_in * self.plane_len + 2 * ty * self.wp + 2 * tx
    }

    /// Where tile `t`'s top-left output goes (channel 0), and whether its right column
    /// and bottom row exist.
    #[inline(always)]
    pub(crate) fn output_at(&self, t: usize) -> (usize, bool, bool) {
        let s = &self.shape;
        let (sample, rest) = (t / (self.th * self.tw), t % (self.th * self.tw));
        let (ty, tx) = (rest / self.tw, rest % self.tw);
        let at = sample * s.c_out * s.h_out * s.w_out + 2 * ty * s.w_out + 2 * tx;
        (at, 2 * tx + 1 < s.w_out, 2 * ty + 1 < s.h_out)
    }

    /// Where tile `t`'s pooled output goes (channel 0), when the shape pools.
    #[inline(always)]
    pub(crate) fn pooled_at(&self, t: usize) -> usize {
        let (sample, rest) = (t / (self.th * self.tw), t % (self.th * self.tw));
        sample * self.shape.c_out * self.th * self.tw + rest
    }
}

/// Copies every input plane into `planes` with its padding: input `(r, c)` goes to
/// `(r + pad_top, c + pad_left)` of a `(2 th + 2) x (2 tw + 2)` plane, the rest is zero.
/// Input rows and columns no tile reads are left out.
pub(crate) fn pad_planes(s: &Conv3x3, x: &[f32], planes: &mut [f32]) {
    let (th, tw) = s.tiles();
    let (hp, wp) = (2 * th + 2, 2 * tw + 2);
    let rows = s.h_in.min(hp.saturating_sub(s.pad[0]));
    let cols = s.w_in.min(wp.saturating_sub(s.pad[1]));
    for (src, dst) in x
        .chunks_exact(s.h_in * s.w_in)
        .zip(planes.chunks_exact_mut(hp * wp))
    {
        let top = s.pad[0].min(hp);
        dst[..top * wp].fill(0.0);
        for r in 0..rows {
            let line = &mut dst[(top + r) * wp..][..wp];
            let left = s.pad[1].min(wp);
            line[..left].fill(0.0);
            line[left..left + cols].copy_from_slice(&src[r * s.w_in..][..cols]);
            line[left + cols..].fill(0.0);
        }
        dst[(top + rows) * wp..].fill(0.0);
    }
}

/// Whether `isa`'s input transform reads the input as it is, padding by masking its
/// loads, rather than from the zero-padded planes.
fn reads_unpadded(isa: Isa) -> bool {
    matches!(isa, Isa::Avx512 | Isa::Avx512Vnni) && cfg!(target_arch = "x86_64")
}

/// Writes the transformed tiles `t0..t0 + n` of every channel as 16 packed-B matrices
/// (`c_in x n`, matrix `xi` at `xi * c_in * chunk`), from the input `x` or from its
/// padded copy `planes` (see [`reads_unpadded`]). Lanes past `n` of the last panel may
/// hold anything: their columns of the products are never read.
fn transform_input(
    isa: Isa,
    g: &Tiles,
    x: &[f32],
    planes: &[f32],
    t0: usize,
    n: usize,
    v: &mut [f32],
) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 | Isa::Avx512Vnni => {
            // SAFETY: the public entry point checked that the CPU runs avx512f.
            unsafe { crate::x86::winograd::input_avx512(g, x, t0, n, v) }
        }
        _ => {
            let _ = x;
            input_chunk(g, planes, t0, n, v)
        }
    }
}

/// The output transform of tiles `t0..t0 + n`, from the 16 matrices of `m` (`c_out x n`,
/// row stride `ld`, matrix `xi` at `xi * c_out * ld`).
#[allow(clippy::too_many_arguments)]
fn transform_output(
    isa: Isa,
    g: &Tiles,
    m: &[f32],
    ld: usize,
    t0: usize,
    n: usize,
    e: &Epilogue,
    y: &mut [f32],
) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 | Isa::Avx512Vnni => {
            // SAFETY: the public entry point checked that the CPU runs avx512f.
            unsafe { crate::x86::winograd::output_avx512(g, m, ld, t0, n, e, y) }
        }
        _ => output_chunk(g, m, ld, t0, n, e, y),
    }
}

/// The portable input transform, over 16 tiles (one panel) at a time so every step is a
/// 16-lane operation the compiler vectorizes at the width the caller was compiled for.
#[inline(always)]
pub(crate) fn input_chunk(g: &Tiles, planes: &[f32], t0: usize, n: usize, v: &mut [f32]) {
    let c_in = g.shape.c_in;
    let chunk_len = v.len() / 16;
    let (wp, plane_len) = (g.wp, g.plane_len);
    for (p, first) in (0..n).step_by(NR).enumerate() {
        let lanes = (n - first).min(NR);
        let mut at = [0usize; NR];
        for (l, a) in at.iter_mut().enumerate().take(lanes) {
            *a = g.input_at(t0 + first + l);
        }
        for c in 0..c_in {
            // d[4r + q][lane]: the 4x4 input tile of each lane.
            let mut d = [[0.0f32; NR]; 16];
            for (l, &a) in at.iter().enumerate().take(lanes) {
                let Some(patch) = planes.get(a + c * plane_len..a + c * plane_len + 3 * wp + 4)
                else {
                    continue;
                };
                for r in 0..4 {
                    for q in 0..4 {
                        d[4 * r + q][l] = patch[r * wp + q];
                    }
                }
            }
            // B^T d, then (B^T d) B, lane by lane.
            let mut t = [[0.0f32; NR]; 16];
            for q in 0..4 {
                for l in 0..NR {
                    let (d0, d1, d2, d3) = (d[q][l], d[4 + q][l], d[8 + q][l], d[12 + q][l]);
                    t[q][l] = d0 - d2;
                    t[4 + q][l] = d1 + d2;
                    t[8 + q][l] = d2 - d1;
                    t[12 + q][l] = d1 - d3;
                }
            }
            let row = (p * c_in + c) * NR;
            for r in 0..4 {
                let mut out = [[0.0f32; NR]; 4];
                for l in 0..NR {
                    let (a0, a1, a2, a3) = (
                        t[4 * r][l],
                        t[4 * r + 1][l],
                        t[4 * r + 2][l],
                        t[4 * r + 3][l],
                    );
                    out[0][l] = a0 - a2;
                    out[1][l] = a1 + a2;
                    out[2][l] = a2 - a1;
                    out[3][l] = a1 - a3;
                }
                for (q, lanes) in out.iter().enumerate() {
                    if let Some(dst) = v[(4 * r + q) * chunk_len + row..].first_chunk_mut::<NR>() {
                        *dst = *lanes;
                    }
                }
            }
        }
    }
}

/// The portable output transform: per 16 tiles and output channel, `A^T M A` across the
/// lanes, then bias, clamp and the scattered stores of each tile's 2x2 outputs.
#[inline(always)]
pub(crate) fn output_chunk(
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
    let matrix = s.c_out * ld;
    for first in (0..n).step_by(NR) {
        let lanes = (n - first).min(NR);
        let mut at = [(0usize, false, false); NR];
        for (l, a) in at.iter_mut().enumerate().take(lanes) {
            *a = g.output_at(t0 + first + l);
        }
        for co in 0..s.c_out {
            let mut mm = [[0.0f32; NR]; 16];
            for (xi, lanes) in mm.iter_mut().enumerate() {
                if let Some(src) = m[xi * matrix + co * ld + first..].first_chunk::<NR>() {
                    *lanes = *src;
                }
            }
            // A^T M: 2 x 4, then (A^T M) A: 2 x 2.
            let mut r = [[[0.0f32; NR]; 4]; 2];
            for j in 0..4 {
                for l in 0..NR {
                    let (m0, m1, m2, m3) = (mm[j][l], mm[4 + j][l], mm[8 + j][l], mm[12 + j][l]);
                    r[0][j][l] = m0 + m1 + m2;
                    r[1][j][l] = m1 - m2 - m3;
                }
            }
            let b = e.bias.map_or(0.0, |b| b[co]);
            if s.pool {
                // One value per tile, in the pool's order (`crate::pool`): down each
                // column, then across. Pooled on the raw sums, as adding the bias and
                // clamping commute with the maximum: the result is the unfused one's.
                let plane = g.th * g.tw;
                for l in 0..lanes {
                    let (a, c) = (&r[0], &r[1]);
                    let left = max(a[0][l] + a[1][l] + a[2][l], c[0][l] + c[1][l] + c[2][l]);
                    let right = max(a[1][l] - a[2][l] - a[3][l], c[1][l] - c[2][l] - c[3][l]);
                    y[g.pooled_at(t0 + first + l) + co * plane] =
                        clamp(max(left, right) + b, e.lo, e.hi);
                }
                continue;
            }
            let mut out = [[0.0f32; NR]; 4];
            for i in 0..2 {
                for l in 0..NR {
                    let (a0, a1, a2, a3) = (r[i][0][l], r[i][1][l], r[i][2][l], r[i][3][l]);
                    out[2 * i][l] = clamp(a0 + a1 + a2 + b, e.lo, e.hi);
                    out[2 * i + 1][l] = clamp(a1 - a2 - a3 + b, e.lo, e.hi);
                }
            }
            for (l, &(base, right, below)) in at.iter().enumerate().take(lanes) {
                let o = base + co * hw;
                y[o] = out[0][l];
                if right {
                    y[o + 1] = out[1][l];
                }
                if below {
                    y[o + w_out] = out[2][l];
                    if right {
                        y[o + w_out + 1] = out[3][l];
                    }
                }
            }
        }
    }
}
