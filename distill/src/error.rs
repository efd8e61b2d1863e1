//! The training side's error type.

use std::path::PathBuf;

/// Everything that can go wrong while reading data, training, exporting or evaluating.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be read or written.
    #[error("{action} {path}")]
    Io {
        /// What was being done ("cannot read", "cannot write").
        action: &'static str,
        /// The file at fault.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// An output path that cannot be used: a folder to create whose parent is missing, or
    /// something other than a regular file at the name of a file to write.
    #[error("cannot write {path}: {reason}")]
    Output {
        /// The file or folder at fault.
        path: PathBuf,
        /// What was in the way and what to do.
        reason: String,
    },
    /// An IDX file is malformed.
    #[error("{path}: invalid IDX file: {reason}")]
    Idx {
        /// The file at fault.
        path: PathBuf,
        /// What was wrong and what was expected.
        reason: String,
    },
    /// Data sets do not fit together (image and label counts, sizes, class ranges).
    #[error("invalid data: {0}")]
    Data(String),
    /// A corruption with a parameter out of its range.
    #[error("invalid corruption {corruption}: {reason}")]
    Corruption {
        /// The corruption as named in reports, for example `blur(sigma=0)`.
        corruption: String,
        /// What was wrong and what was expected.
        reason: String,
    },
    /// A model that cannot be compared with the teacher (other labels or input size), or a
    /// list of models whose names clash.
    #[error("cannot compare {model}: {reason}")]
    Compare {
        /// The model's name in the comparison, or its file.
        model: String,
        /// What was wrong and what was expected.
        reason: String,
    },
    /// A plot could not be drawn (data that does not fit a chart, or the drawing failed).
    #[error("cannot draw {path}: {reason}")]
    Plot {
        /// The plot file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// The recipe is malformed or inconsistent.
    #[error("recipe {path}: {reason}")]
    Recipe {
        /// The recipe file.
        path: PathBuf,
        /// What was wrong and what was expected.
        reason: String,
    },
    /// A data set name that is not known.
    #[error(
        "unknown data set `{0}`: expected `fashion-mnist:train`, `fashion-mnist:test` or `fashion-mnist:validation`"
    )]
    UnknownDataset(String),
    /// Training diverged or the training backend failed.
    #[error("training {model} failed: {reason}")]
    Training {
        /// The model being trained.
        model: String,
        /// What happened.
        reason: String,
    },
    /// A threshold target that no threshold can meet.
    #[error("no threshold meets the target {target}: {closest}")]
    UnreachableTarget {
        /// The target as stated.
        target: String,
        /// The closest achievable result.
        closest: String,
    },
    /// A model cannot be quantized as asked (a malformed graph, NaN activations met during
    /// calibration, too few or ill-shaped calibration samples, weights out of fp16 range).
    #[error("cannot quantize {origin}: {reason}")]
    Quantize {
        /// The model file.
        origin: String,
        /// What was wrong and what was expected.
        reason: String,
    },
    /// The graph holds an operator the quantizer does not handle.
    #[error(
        "cannot quantize {origin}: operator {op} (node `{node}`) is not supported; supported: {supported}"
    )]
    UnsupportedOperator {
        /// The model file.
        origin: String,
        /// The operator type.
        op: String,
        /// The node's name (or its first output when unnamed).
        node: String,
        /// The supported operators, comma separated.
        supported: String,
    },
    /// The model is quantized already; quantize its float original instead.
    #[error(
        "cannot quantize {origin}: it is already quantized ({evidence}); quantize the fp32 model"
    )]
    AlreadyQuantized {
        /// The model file.
        origin: String,
        /// What shows it (a node or an initializer type).
        evidence: String,
    },
    /// The runtime refused a model or an input.
    #[error(transparent)]
    Runtime(#[from] student_runtime::Error),
}
