//! Max pooling over 2 x 2 windows with stride 2, the pooling of most small CNNs.
//!
//! Output element `(oy, ox)` of a plane is `max(m[2ox], m[2ox + 1])` where
//! `m[j] = max(x[2oy][j], x[2oy + 1][j])`, and `max(a, b)` is `if b > a { b } else { a }`:
//! a NaN in `b` is passed over, a NaN in `a` is kept. Every level computes exactly this, in
//! this order, so results are bit-identical across levels. Input rows and columns past
//! `2 * h_out` and `2 * w_out` (an odd size, floor mode) are not read.

use crate::check;
use crate::error::KernelError;
use crate::isa::Isa;

/// The shape of a 2 x 2, stride 2 max pool over `planes` planes (samples times channels),
/// each `h_in x w_in` in, `h_out x w_out` out, planes stored one after another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool2x2 {
    /// Number of planes (batch times channels).
    pub planes: usize,
    /// Input rows per plane; at least `2 * h_out`.
    pub h_in: usize,
    /// Input columns per row; at least `2 * w_out`.
    pub w_in: usize,
    /// Output rows per plane.
    pub h_out: usize,
    /// Output columns per row.
    pub w_out: usize,
}

impl Pool2x2 {
    pub(crate) fn check(&self, x_len: usize, y_len: usize) -> Result<(), KernelError> {
        let (twice_h, twice_w) = (self.h_out.saturating_mul(2), self.w_out.saturating_mul(2));
        if self.planes == 0 || self.h_out == 0 || self.w_out == 0 {
            return Ok(());
        }
        if self.w_in < twice_w {
            return Err(KernelError::StrideTooSmall {
                what: "pool input row",
                stride: self.w_in,
                width: twice_w,
            });
        }
        if self.h_in < twice_h {
            return Err(KernelError::StrideTooSmall {
                what: "pool input plane (rows)",
                stride: self.h_in,
                width: twice_h,
            });
        }
        let plane_in = self.h_in.saturating_mul(self.w_in);
        let plane_out = self.h_out.saturating_mul(self.w_out);
        check::at_least(
            "pool input",
            check::product(self.planes, plane_in, 1),
            x_len,
        )?;
        check::at_least(
            "pool output",
            check::product(self.planes, plane_out, 1),
            y_len,
        )
    }
}

/// 2 x 2, stride 2 max pooling of f32 planes (see the module docs for the exact function).
///
/// Errors if `isa` is unavailable, the input is smaller than twice the output along an
/// axis, or a slice is shorter than `planes` planes.
pub fn max_pool_2x2_f32(isa: Isa, p: Pool2x2, x: &[f32], y: &mut [f32]) -> Result<(), KernelError> {
    max_pool_2x2(isa, p, x, y)
}

/// 2 x 2, stride 2 max pooling of u8 planes; the same contract as [`max_pool_2x2_f32`].
pub fn max_pool_2x2_u8(isa: Isa, p: Pool2x2, x: &[u8], y: &mut [u8]) -> Result<(), KernelError> {
    max_pool_2x2(isa, p, x, y)
}

/// A SIMD pooling kernel. Safety: callable once `Isa::require` confirmed the level it was
/// chosen for and `Pool2x2::check` accepted the slices.
type Kernel<T> = unsafe fn(Pool2x2, &[T], &mut [T]);

/// An element type the pool runs on, and its SIMD kernel at each level that has one.
pub(crate) trait Lane: Copy + PartialOrd {
    /// The kernel for `isa`, or `None` where the portable loop runs.
    fn simd(isa: Isa) -> Option<Kernel<Self>>;
}

impl Lane for f32 {
    fn simd(isa: Isa) -> Option<Kernel<f32>> {
        match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 | Isa::Avx512Vnni => Some(crate::x86::pool::max_2x2_f32_avx512),
            _ => None,
        }
    }
}

impl Lane for u8 {
    fn simd(isa: Isa) -> Option<Kernel<u8>> {
        match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 | Isa::Avx512Vnni => Some(crate::x86::pool::max_2x2_u8_avx512),
            _ => None,
        }
    }
}

/// Both public entry points: checks, then the level's kernel or the portable loop.
fn max_pool_2x2<T: Lane>(isa: Isa, p: Pool2x2, x: &[T], y: &mut [T]) -> Result<(), KernelError> {
    isa.require()?;
    p.check(x.len(), y.len())?;
    if p.planes == 0 || p.h_out == 0 || p.w_out == 0 {
        return Ok(());
    }
    match T::simd(isa) {
        // SAFETY: `require` confirmed the features of `isa` (avx512f, bw and vl),
        // the ones its kernel is compiled for; `check` the shape against the lengths.
        Some(kernel) => unsafe { kernel(p, x, y) },
        None => portable(p, x, y),
    }
    Ok(())
}

/// `max(a, b)` as the module docs define it.
#[inline(always)]
pub(crate) fn max<T: PartialOrd>(a: T, b: T) -> T {
    if b > a { b } else { a }
}

/// The plain loop: also the reference the SIMD levels are tested against.
pub(crate) fn portable<T: Copy + PartialOrd>(p: Pool2x2, x: &[T], y: &mut [T]) {
    let (plane_in, plane_out) = (p.h_in * p.w_in, p.h_out * p.w_out);
    for (src, dst) in x
        .chunks_exact(plane_in)
        .zip(y.chunks_exact_mut(plane_out))
        .take(p.planes)
    {
        for (oy, out) in dst.chunks_exact_mut(p.w_out).enumerate() {
            let (r0, r1) = (&src[2 * oy * p.w_in..], &src[(2 * oy + 1) * p.w_in..]);
            portable_row(&r0[..2 * p.w_out], &r1[..2 * p.w_out], out);
        }
    }
}

/// One output row from its two input rows (`2 * out.len()` elements each).
#[inline(always)]
pub(crate) fn portable_row<T: Copy + PartialOrd>(r0: &[T], r1: &[T], out: &mut [T]) {
    for ((d, a), b) in out
        .iter_mut()
        .zip(r0.chunks_exact(2))
        .zip(r1.chunks_exact(2))
    {
        *d = max(max(a[0], b[0]), max(a[1], b[1]));
    }
}
