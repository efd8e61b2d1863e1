//! The one error type apps see, and the one place runtime errors are mapped to it.

/// What went wrong in a call. Each variant carries `reason`: the runtime's message with
/// its causes, lowercase, naming the file or input at fault.
///
/// (No field is called `message`: Kotlin exceptions already have one.)
#[derive(Debug, thiserror::Error, uniffi::Error)]
pub enum StudentError {
    /// The model file could not be read.
    #[error("{reason}")]
    Io {
        /// What failed, with the operating system's error.
        reason: String,
    },
    /// The bytes are not a usable student model: not ONNX, not a classifier, a broken
    /// model card, or a graph the engine cannot plan.
    #[error("{reason}")]
    InvalidModel {
        /// What is wrong with the model.
        reason: String,
    },
    /// An input or option does not fit the model: wrong length, a NaN, a bad image size,
    /// a threshold outside `[0, 1]`.
    #[error("{reason}")]
    InvalidInput {
        /// What was wrong and what was expected.
        reason: String,
    },
    /// The model failed while running an input, or produced non-finite outputs.
    #[error("{reason}")]
    Execution {
        /// What failed.
        reason: String,
    },
    /// The model was used after `unload()`.
    #[error("{reason}")]
    Unloaded {
        /// Which call was refused.
        reason: String,
    },
    /// Runtime log records cannot be forwarded: another logger already owns the process's
    /// `log` facade.
    #[error("{reason}")]
    Logging {
        /// Why forwarding is unavailable.
        reason: String,
    },
}

impl StudentError {
    /// The same error with `prefix: ` before its reason, naming what failed within a call.
    pub(crate) fn within(self, prefix: &str) -> StudentError {
        let with = |reason: String| format!("{prefix}: {reason}");
        match self {
            StudentError::Io { reason } => StudentError::Io {
                reason: with(reason),
            },
            StudentError::InvalidModel { reason } => StudentError::InvalidModel {
                reason: with(reason),
            },
            StudentError::InvalidInput { reason } => StudentError::InvalidInput {
                reason: with(reason),
            },
            StudentError::Execution { reason } => StudentError::Execution {
                reason: with(reason),
            },
            StudentError::Unloaded { reason } => StudentError::Unloaded {
                reason: with(reason),
            },
            StudentError::Logging { reason } => StudentError::Logging {
                reason: with(reason),
            },
        }
    }
}

impl From<student_runtime::Error> for StudentError {
    fn from(error: student_runtime::Error) -> Self {
        use student_runtime::Error as E;
        let reason = error.with_causes();
        match error {
            E::Io { .. } => StudentError::Io { reason },
            E::NotOnnx { .. }
            | E::NotCompiled { .. }
            | E::Compile { .. }
            | E::Unsupported { .. }
            | E::InvalidCard { .. }
            | E::Plan { .. }
            | E::TooLarge { .. }
            | E::Malformed { .. }
            | E::Signature { .. } => StudentError::InvalidModel { reason },
            E::InvalidInput(_) | E::InvalidOption { .. } => StudentError::InvalidInput { reason },
            E::Run { .. } | E::NonFiniteOutput { .. } => StudentError::Execution { reason },
            // The runtime's error is non-exhaustive; a kind added later fails a call that
            // was running, so it is reported as an execution failure until mapped here.
            _ => StudentError::Execution { reason },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_errors_map_to_their_kind_with_causes() {
        let io = student_runtime::Error::Io {
            path: "missing.onnx".into(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        };
        match StudentError::from(io) {
            StudentError::Io { reason } => {
                assert_eq!(reason, "cannot read model file missing.onnx: no such file")
            }
            other => panic!("{other:?}"),
        }
        let input = student_runtime::Error::InvalidInput("3 values, expected 784".into());
        assert!(matches!(
            StudentError::from(input),
            StudentError::InvalidInput { .. }
        ));
        let option = student_runtime::Error::InvalidOption {
            name: "threshold",
            reason: "2 is outside [0, 1]".into(),
        };
        assert!(matches!(
            StudentError::from(option),
            StudentError::InvalidInput { .. }
        ));
    }

    #[test]
    fn within_prefixes_the_reason_and_keeps_the_kind() {
        let error = StudentError::Execution {
            reason: "non-finite output".into(),
        };
        match error.within("sample 2") {
            StudentError::Execution { reason } => assert_eq!(reason, "sample 2: non-finite output"),
            other => panic!("{other:?}"),
        }
    }
}
