//! The direct 3x3 convolution on AVX-512 (see `crate::direct` for the blocks).
//!
//! Each input row of a block is read with one masked load per column shift: the masked
//! lanes are the columns outside `0..w_in`, rows outside `0..h_in` are skipped, so no
//! padded copy of the input is made. The block's 2 rows x `CB` channels of sums stay in
//! registers; the weights are broadcast from memory by the multiply-adds.

use std::arch::x86_64::*;

use crate::check;
use crate::conv3x3::{Conv3x3, Epilogue};
use crate::direct::conv_portable;
use crate::pack::NR;
use crate::x86::lanes_mask;

/// Output channels per block.
const CHANNELS: usize = 4;

/// Where one block's input and output lie.
struct At {
    /// Sample.
    n: usize,
    /// First output row (even).
    oy: usize,
    /// First output column.
    ox: usize,
    /// Per column shift, the lanes that read a column inside the input.
    masks: [__mmask16; 3],
}

/// # Safety
/// The CPU must run avx512f.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn conv_avx512(
    s: &Conv3x3,
    batch: usize,
    x: &[f32],
    w: &[f32],
    e: &Epilogue,
    y: &mut [f32],
) {
    let (ph, pw) = s.out_dims();
    // The lengths the blocks rely on, checked here too so the unsafe accesses below rest
    // on no caller.
    let short = x.len() < check::product(batch, s.c_in, s.h_in.saturating_mul(s.w_in))
        || w.len() < check::product(s.c_out, s.c_in, 9)
        || y.len() < check::product(batch, s.c_out, ph.saturating_mul(pw))
        || e.bias.is_some_and(|b| b.len() < s.c_out)
        || (s.pool && (!s.h_out.is_multiple_of(2) || !s.w_out.is_multiple_of(2)));
    if short {
        return conv_portable(s, batch, x, w, e, y);
    }
    for n in 0..batch {
        for oy in (0..s.h_out).step_by(2) {
            for ox in (0..s.w_out).step_by(NR) {
                // Lane l of shift k reads column ox + l + k - pad[1].
                let masks = [0, 1, 2].map(|k| {
                    let first = s.pad[1].saturating_sub(ox + k);
                    let end = (s.w_in + s.pad[1]).saturating_sub(ox + k);
                    lanes_mask(end) & !lanes_mask(first)
                });
                let at = At { n, oy, ox, masks };
                let mut co = 0;
                while co + CHANNELS <= s.c_out {
                    // SAFETY: the lengths were checked above, co + CHANNELS <= c_out; the
                    // CPU runs avx512f, as this function requires.
                    unsafe { block::<CHANNELS>(s, &at, co, x, w, e, y) };
                    co += CHANNELS;
                }
                while co < s.c_out {
                    // SAFETY: as above, with co < c_out.
                    unsafe { block::<1>(s, &at, co, x, w, e, y) };
                    co += 1;
                }
            }
        }
    }
}

/// Computes and stores the outputs of channels `co..co + CB` at `at`.
///
/// # Safety
/// The CPU must run avx512f; `x`, `w`, `y` and the bias must hold what the shape and
/// `batch` need (`at.n < batch`), `co + CB <= c_out`, and with `pool` the output sizes
/// must be even.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn block<const CB: usize>(
    s: &Conv3x3,
    at: &At,
    co: usize,
    x: &[f32],
    w: &[f32],
    e: &Epilogue,
    y: &mut [f32],
) {
    let mut acc = [[_mm512_setzero_ps(); 2]; CB];
    for ci in 0..s.c_in {
        // Channel c's 3x3 kernel for input channel ci starts at k + c * c_in * 9.
        let k = w[(co * s.c_in + ci) * 9..].as_ptr();
        for r in 0..4 {
            let iy = (at.oy + r).wrapping_sub(s.pad[0]);
            if iy >= s.h_in {
                continue;
            }
            let row = x[((at.n * s.c_in + ci) * s.h_in + iy) * s.w_in..].as_ptr();
            for (shift, &mask) in at.masks.iter().enumerate() {
                // Lane 0's address may lie before the row or past it: only the masked
                // lanes, columns 0..w_in of row iy < h_in, are read.
                let first = row.wrapping_add(at.ox + shift).wrapping_sub(s.pad[1]);
                // SAFETY: every active lane is inside `x`, as above.
                let v = unsafe { _mm512_maskz_loadu_ps(mask, first) };
                for (o, ky) in [(0, r), (1, r.wrapping_sub(1))] {
                    if ky >= 3 {
                        continue;
                    }
                    for (c, acc) in acc.iter_mut().enumerate() {
                        // SAFETY: channel co + c < c_out, tap 3 ky + shift < 9: inside `w`.
                        let weight = unsafe { *k.add(c * s.c_in * 9 + 3 * ky + shift) };
                        acc[o] = _mm512_fmadd_ps(_mm512_set1_ps(weight), v, acc[o]);
                    }
                }
            }
        }
    }

    let (lo, hi) = (_mm512_set1_ps(e.lo), _mm512_set1_ps(e.hi));
    let (ph, pw) = s.out_dims();
    let out = y.as_mut_ptr();
    for (c, [r0, r1]) in acc.into_iter().enumerate() {
        let b = _mm512_set1_ps(e.bias(co + c));
        // max(lo, x) then min(hi, x): NaN passes, as in `reference::clamp`.
        let finish = |v: __m512| _mm512_min_ps(hi, _mm512_max_ps(lo, _mm512_add_ps(v, b)));
        let plane = (at.n * s.c_out + co + c) * ph * pw;
        if s.pool {
            // Lanes 0..8: the maximum of lanes 2l, 2l + 1 of both rows, in the pool's
            // order (`crate::pool`, whose `max(a, b)` is `maxps(b, a)`): down each
            // column, then across.
            let m = _mm512_max_ps(r1, r0);
            let evens = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 0, 0, 0, 0, 0, 0, 0, 0);
            let odds = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 0, 0, 0, 0, 0, 0, 0, 0);
            let pooled = _mm512_max_ps(
                _mm512_permutexvar_ps(odds, m),
                _mm512_permutexvar_ps(evens, m),
            );
            let px = at.ox / 2;
            let lanes = lanes_mask((pw - px).min(NR / 2));
            // SAFETY: pooled columns px.. below pw of row oy / 2 < ph of a plane inside
            // `y` (checked by the caller).
            unsafe {
                _mm512_mask_storeu_ps(out.add(plane + at.oy / 2 * pw + px), lanes, finish(pooled))
            };
        } else {
            let lanes = lanes_mask((s.w_out - at.ox).min(NR));
            for (o, sums) in [r0, r1].into_iter().enumerate() {
                if at.oy + o < s.h_out {
                    // SAFETY: columns ox.. below w_out of row oy + o < h_out of a plane
                    // inside `y` (checked by the caller).
                    unsafe {
                        let to = out.add(plane + (at.oy + o) * s.w_out + at.ox);
                        _mm512_mask_storeu_ps(to, lanes, finish(sums))
                    };
                }
            }
        }
    }
}
