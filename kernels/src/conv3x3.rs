//! The geometry both 3x3 convolution kernels take ([`conv3x3_winograd_f32`] and
//! [`conv3x3_direct_f32`]), and the bias and clamp they end with.
//!
//! [`conv3x3_winograd_f32`]: crate::conv3x3_winograd_f32
//! [`conv3x3_direct_f32`]: crate::conv3x3_direct_f32

use crate::check;
use crate::error::KernelError;

/// A 3x3, stride-1, dilation-1, single-group convolution over NCHW samples, with an
/// optional fused 2x2 max pool.
///
/// Any output size is accepted: output `(oy, ox)` reads input rows `oy - pad[0]..+3` and
/// columns `ox - pad[1]..+3`, zero outside the input (ONNX's zero padding, with the
/// bottom and right padding implied by the output size).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv3x3 {
    /// Input channels.
    pub c_in: usize,
    /// Output channels.
    pub c_out: usize,
    /// Input height.
    pub h_in: usize,
    /// Input width.
    pub w_in: usize,
    /// The convolution's output height (before any pooling).
    pub h_out: usize,
    /// The convolution's output width (before any pooling).
    pub w_out: usize,
    /// Top and left padding.
    pub pad: [usize; 2],
    /// Whether a 2x2, stride-2 max pool follows, fused into the kernel: the output is then
    /// `(h_out / 2) x (w_out / 2)`, output `(py, px)` the maximum of the convolution's
    /// outputs `(2py + dy, 2px + dx)` in the order of
    /// [`max_pool_2x2_f32`](crate::max_pool_2x2_f32), so NaNs are kept or passed over as
    /// there. `h_out` and `w_out` must be even.
    pub pool: bool,
}

impl Conv3x3 {
    /// The size of each output plane: `(h_out, w_out)`, or half of each when pooling.
    pub fn out_dims(&self) -> (usize, usize) {
        if self.pool {
            (self.h_out / 2, self.w_out / 2)
        } else {
            (self.h_out, self.w_out)
        }
    }

    /// Checks a call's input, output and bias lengths over `batch` samples, and refuses a
    /// pool over an odd output; returns the elements of the input and of the output.
    pub(crate) fn check_io(
        &self,
        batch: usize,
        x: &[f32],
        y: &[f32],
        bias: Option<&[f32]>,
    ) -> Result<(usize, usize), KernelError> {
        if self.pool && (self.h_out % 2 == 1 || self.w_out % 2 == 1) {
            return Err(KernelError::PoolOfOddSize {
                height: self.h_out,
                width: self.w_out,
            });
        }
        let (h, w) = self.out_dims();
        let x_len = check::product(batch, self.c_in, self.h_in.saturating_mul(self.w_in));
        let y_len = check::product(batch, self.c_out, h.saturating_mul(w));
        check::at_least("x", x_len, x.len())?;
        check::at_least("y", y_len, y.len())?;
        if let Some(b) = bias {
            check::at_least("bias", self.c_out, b.len())?;
        }
        Ok((x_len, y_len))
    }
}

/// The bias and clamp applied to every output (pooled or not).
pub(crate) struct Epilogue<'a> {
    pub(crate) bias: Option<&'a [f32]>,
    pub(crate) lo: f32,
    pub(crate) hi: f32,
}

impl Epilogue<'_> {
    /// Output channel `c`'s bias (0 without one).
    #[inline(always)]
    pub(crate) fn bias(&self, c: usize) -> f32 {
        self.bias.map_or(0.0, |b| b[c])
    }
}
