//! The runtime's error type.

use std::path::PathBuf;

/// Everything that can go wrong while opening a model or classifying an input.
///
/// Messages are lowercase, name what was at fault and say what was expected. Where a
/// lower-level error caused this one, it is kept as [`source`](std::error::Error::source)
/// and not repeated in the message: print the chain to see both.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The model file could not be read.
    #[error("cannot read model file {path}")]
    Io {
        /// The file that was being opened.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The bytes are not an ONNX model (empty, truncated, or another format).
    #[error("{origin} is not an ONNX model: {reason}")]
    NotOnnx {
        /// Where the bytes came from (a path, or "in-memory bytes").
        origin: String,
        /// What the parser found.
        reason: String,
    },
    /// The bytes start like a compiled student but are not a valid one (truncated,
    /// corrupted, another format version), or are not a compiled student in a build that
    /// reads only compiled students.
    #[error("{origin} is not a valid compiled student: {reason}")]
    NotCompiled {
        /// Where the bytes came from.
        origin: String,
        /// What the check found.
        reason: String,
    },
    /// The compiler cannot translate a node of the ONNX graph.
    #[error("{origin}: cannot compile {node}: {reason}")]
    Compile {
        /// Where the bytes came from.
        origin: String,
        /// The node at fault: its operator and name.
        node: String,
        /// What is not supported or wrong, and what would be.
        reason: String,
    },
    /// The ONNX model is well-formed but cannot serve as a classifier here.
    #[error("{origin}: unsupported model: {reason}")]
    Unsupported {
        /// Where the bytes came from.
        origin: String,
        /// What is not supported and what was expected.
        reason: String,
    },
    /// The model card in `metadata_props` is present but invalid.
    #[error("{origin}: invalid model card entry `{key}`: {reason}")]
    InvalidCard {
        /// Where the bytes came from.
        origin: String,
        /// The metadata key at fault.
        key: String,
        /// What was wrong and what was expected.
        reason: String,
    },
    /// The execution engine refused to load or plan the model.
    #[error("{origin}: cannot prepare the model for execution")]
    Plan {
        /// Where the bytes came from.
        origin: String,
        /// The engine's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The engine failed while running an input.
    #[error("model execution failed")]
    Run {
        /// The engine's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// An input does not match the model's declared input.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// An option is outside its allowed range.
    #[error("invalid option `{name}`: {reason}")]
    InvalidOption {
        /// The option's name.
        name: &'static str,
        /// What was wrong and what was expected.
        reason: String,
    },
    /// The model declares more than [`Limits`](crate::Limits) allow: a file, a tensor, a
    /// graph, a string or the working memory of a call. Nothing of that size was allocated.
    #[error("{origin}: {what} is {found} {unit}, over the limit of {limit} (Limits::{option})")]
    TooLarge {
        /// Where the bytes came from.
        origin: String,
        /// What is too large.
        what: String,
        /// Its size (a number, or "more than 2^64" when it overflowed).
        found: String,
        /// The unit of `found` and `limit`.
        unit: &'static str,
        /// The limit in force.
        limit: u64,
        /// The field of [`Limits`](crate::Limits) that sets it.
        option: &'static str,
    },
    /// The file is structurally broken in a way its format forbids: a tensor whose data
    /// does not match its dimensions, a negative dimension, data kept outside the file.
    #[error("{origin}: malformed model: {reason}")]
    Malformed {
        /// Where the bytes came from.
        origin: String,
        /// What is wrong.
        reason: String,
    },
    /// The model's signature is missing, is not by a trusted key, or does not match the
    /// bytes (see [`OpenOptions::trusted_keys`](crate::OpenOptions::trusted_keys)).
    #[error("{origin}: signature check failed: {reason}")]
    Signature {
        /// Where the bytes came from.
        origin: String,
        /// What the check found.
        reason: String,
    },
    /// The model produced non-finite outputs.
    #[error("{origin}: the model produced a non-finite logit at class {index}")]
    NonFiniteOutput {
        /// The model that produced it.
        origin: String,
        /// The class whose logit was NaN or infinite.
        index: usize,
    },
}

impl Error {
    /// The message followed by each cause, `: `-separated: one line for a log or an app.
    pub fn with_causes(&self) -> String {
        let mut text = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        text
    }
}

/// The error an [`EscalationHook`](crate::EscalationHook) reports when it cannot answer.
///
/// A failing hook never fails the classification: the student's answer stays in place and
/// the [`Prediction`](crate::Prediction) records the failure.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HookError(pub String);

impl HookError {
    /// Builds a hook error from anything printable.
    pub fn new(reason: impl Into<String>) -> Self {
        HookError(reason.into())
    }
}

impl From<Error> for HookError {
    /// Keeps the whole chain of causes in the message, since a hook error is reported as
    /// text.
    fn from(error: Error) -> Self {
        let mut text = error.to_string();
        let mut source = std::error::Error::source(&error);
        while let Some(cause) = source {
            text.push_str(&format!(": {cause}"));
            source = cause.source();
        }
        HookError(text)
    }
}

/// The first line of a caught panic's message, at most 200 characters; `None` when the
/// payload is not text or is empty.
pub(crate) fn panic_line(payload: &(dyn std::any::Any + Send)) -> Option<String> {
    let text = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))?;
    let line = text.lines().next().filter(|line| !line.is_empty())?;
    Some(line.chars().take(200).collect())
}
