//! Building one packed panel of B straight from shifted image planes: the inner step of a
//! convolution that unfolds its input into the GEMM's panels without an im2col matrix.
//!
//! The caller copies each input channel's plane into `planes`, `stride` elements apart,
//! with margins wide enough that every piece below is in bounds. Row `c * taps + t` of
//! the panel (channel `c`, kernel tap `t`) is the 16 elements
//! `planes[c * stride + base + offsets[t]..][..16]`, where lane `j` keeps its element if
//! bit `j` of `masks[t]` is set and holds the fill value otherwise (0 for f32; for u8 the
//! lane's byte of `fill`, the input's zero point or 0 past the matrix's last column).
//! Every level writes exactly these values.

use crate::check;
use crate::error::KernelError;
use crate::isa::Isa;
use crate::pack::NR;

/// Where the rows of one panel come from (see the module docs).
#[derive(Clone, Copy, Debug)]
pub struct PanelSource<'a, T> {
    /// The channel planes with their margins.
    pub planes: &'a [T],
    /// Elements from one channel's plane copy to the next.
    pub stride: usize,
    /// Number of channels: the panel has `channels * offsets.len()` rows.
    pub channels: usize,
    /// Added to every offset: the panel's first column plus the margin before a plane.
    pub base: usize,
    /// Per kernel tap, the shift of its pieces (negative: reads the margin before).
    pub offsets: &'a [isize],
    /// Per kernel tap, which of the 16 lanes read the plane (bit j: lane j).
    pub masks: &'a [u16],
}

impl<T> PanelSource<'_, T> {
    /// Checks that every piece lies inside `planes` and the masks cover the taps.
    fn check(&self) -> Result<usize, KernelError> {
        let taps = self.offsets.len();
        check::at_least("panel masks", taps, self.masks.len())?;
        let rows = self.channels.checked_mul(taps).unwrap_or(usize::MAX);
        if rows == 0 {
            return Ok(0);
        }
        let lowest = self.offsets.iter().copied().min().unwrap_or(0);
        let highest = self.offsets.iter().copied().max().unwrap_or(0);
        let first = (self.base as i128) + lowest as i128;
        let last = (self.channels as i128 - 1) * self.stride as i128
            + self.base as i128
            + highest as i128
            + NR as i128;
        if first < 0 {
            return Err(KernelError::TooShort {
                what: "panel planes (margin before the first piece)",
                needed: first.unsigned_abs().min(usize::MAX as u128) as usize,
                got: 0,
            });
        }
        check::at_least(
            "panel planes",
            last.min(usize::MAX as i128) as usize,
            self.planes.len(),
        )?;
        Ok(rows)
    }
}

/// Writes one f32 panel: `channels * taps` rows of 16 lanes (see the module docs).
///
/// Errors if `isa` is unavailable, a piece would lie outside `planes`, `masks` is shorter
/// than `offsets` or `out` holds fewer rows than the panel has.
pub fn unfold_panel_f32(
    isa: Isa,
    src: PanelSource<'_, f32>,
    out: &mut [[f32; NR]],
) -> Result<(), KernelError> {
    isa.require()?;
    let rows = src.check()?;
    check::at_least("panel rows", rows, out.len())?;
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 | Isa::Avx512Vnni => {
            // SAFETY: `require` confirmed avx512f; `check` that every piece is in bounds
            // and `out` holds every row.
            unsafe { crate::x86::unfold::panel_f32_avx512(&src, out) }
        }
        _ => {
            for (row, dst) in rows_of(&src).zip(out.iter_mut()) {
                let (piece, mask) = row;
                *dst = std::array::from_fn(|j| if mask >> j & 1 == 1 { piece[j] } else { 0.0 });
            }
        }
    }
    Ok(())
}

/// Writes one u8 panel in the int8 packed layout: the `channels * taps` rows, padded with
/// zero rows to a multiple of 4, four rows to each 64-byte group (byte `4j + t` of a group
/// is lane `j` of its row `t`); masked lanes take their byte of `fill`.
///
/// Errors as [`unfold_panel_f32`] does, `out` counting groups.
pub fn unfold_panel_u8(
    isa: Isa,
    src: PanelSource<'_, u8>,
    fill: &[u8; NR],
    out: &mut [[u8; 64]],
) -> Result<(), KernelError> {
    isa.require()?;
    let rows = src.check()?;
    check::at_least("panel groups", rows.div_ceil(4), out.len())?;
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 | Isa::Avx512Vnni => {
            // SAFETY: `require` confirmed avx512f, bw and vl; `check` that every piece is
            // in bounds and `out` holds every group.
            unsafe { crate::x86::unfold::panel_u8_avx512(&src, fill, out) }
        }
        _ => {
            let mut pieces = rows_of(&src).map(|(piece, mask)| -> [u8; NR] {
                std::array::from_fn(|j| {
                    if mask >> j & 1 == 1 {
                        piece[j]
                    } else {
                        fill[j]
                    }
                })
            });
            for dst in out.iter_mut().take(rows.div_ceil(4)) {
                let quad: [[u8; NR]; 4] = std::array::from_fn(|_| pieces.next().unwrap_or([0; NR]));
                *dst = crate::pack::interleave_4x16([&quad[0], &quad[1], &quad[2], &quad[3]]);
            }
        }
    }
    Ok(())
}

/// The rows of a checked source in order: each piece with its tap's mask.
fn rows_of<'s, T>(src: &'s PanelSource<'_, T>) -> impl Iterator<Item = (&'s [T; NR], u16)> {
    (0..src.channels).flat_map(move |c| {
        src.offsets
            .iter()
            .zip(src.masks)
            .filter_map(move |(&offset, &mask)| {
                let at = (c * src.stride + src.base).wrapping_add_signed(offset);
                // Always present: `check` bounded every piece.
                let piece = src.planes.get(at..).and_then(<[T]>::first_chunk::<NR>)?;
                Some((piece, mask))
            })
    })
}
