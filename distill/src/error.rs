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
    /// The runtime refused a model or an input.
    #[error(transparent)]
    Runtime(#[from] student_runtime::Error),
}
