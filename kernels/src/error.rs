//! The kernels' error type.

use crate::isa::Isa;

/// Why a kernel refused to run. Kernels check everything before touching memory, so an
/// error means nothing was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KernelError {
    /// The instruction set cannot run on this CPU.
    #[error("instruction set {} is not available on this cpu (best here: {})",
        .requested.name(), .best.name())]
    IsaUnavailable {
        /// The level that was asked for.
        requested: Isa,
        /// The best level this CPU runs.
        best: Isa,
    },
    /// `STUDENT_KERNELS` names no known instruction set.
    #[error(
        "unknown instruction set {name:?} in {}: expected one of {}",
        crate::isa::ENV_VAR,
        crate::isa::all_names()
    )]
    UnknownIsa {
        /// The name that was given.
        name: String,
    },
    /// A slice holds fewer elements than the shapes and strides need.
    #[error("{what} holds {got} elements, the shape needs {needed}")]
    TooShort {
        /// The argument at fault (`"a"`, `"packed b"`, `"bias"`, ...).
        what: &'static str,
        /// The number of elements the call reads or writes.
        needed: usize,
        /// The slice's length.
        got: usize,
    },
    /// A row stride is smaller than the row it steps over.
    #[error("{what} has row stride {stride}, smaller than its {width} columns")]
    StrideTooSmall {
        /// The matrix at fault (`"a"`, `"c"`, `"b"`, ...).
        what: &'static str,
        /// The stride that was given.
        stride: usize,
        /// The number of columns in a row.
        width: usize,
    },
    /// A fused 2x2 max pool over a convolution output of odd height or width.
    #[error("a fused 2x2 max pool needs an even convolution output, got {height} x {width}")]
    PoolOfOddSize {
        /// The convolution's output height.
        height: usize,
        /// The convolution's output width.
        width: usize,
    },
    /// A requantization zero point too large for f32 to hold the clamping bounds exactly.
    #[error("zero point {zero_point} is outside -2^23..=2^23")]
    ZeroPointOutOfRange {
        /// The zero point that was given.
        zero_point: i32,
    },
}
