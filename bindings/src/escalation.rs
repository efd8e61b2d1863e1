//! Escalation handlers written in Kotlin or Swift, seen by the runtime as hooks.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use student_runtime as rt;

use crate::records::{Ranked, index32};
use crate::tensor::Tensor;

/// App code that answers low-confidence inputs: a server call, a larger model, a review
/// queue. Implemented in Kotlin or Swift.
///
/// `escalate` is called only for predictions whose score is below the threshold, on the
/// thread that called `classify`. Return `null`/`nil` to decline. Anything thrown is caught
/// and recorded in the prediction's `outcome` as `Failed`; the student's answer stands and
/// the `classify` call still succeeds.
#[uniffi::export(foreign)]
pub trait EscalationHandler: Send + Sync {
    /// A short name recorded in predictions as the answering party.
    fn name(&self) -> String;

    /// Answers, declines (`None`), or fails for one escalated input.
    fn escalate(
        &self,
        request: EscalationRequest,
    ) -> Result<Option<HandlerAnswer>, EscalationError>;
}

/// A low-confidence input and the student's answer to it.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct EscalationRequest {
    /// The input tensor exactly as the student saw it.
    pub input: Tensor,
    /// The student's class label.
    pub label: String,
    /// The student's class index.
    pub index: u32,
    /// The student's calibrated confidence.
    pub confidence: f32,
    /// The score that fell below the threshold.
    pub score: f32,
    /// The threshold in force.
    pub threshold: f32,
    /// The student's ranked classes, best first.
    pub top_k: Vec<Ranked>,
}

/// A handler's answer: a class index of the model's label set.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct HandlerAnswer {
    /// The class index; must be below the number of labels.
    pub index: u32,
    /// The handler's confidence in `[0, 1]`, if it has one.
    #[uniffi(default = None)]
    pub confidence: Option<f32>,
}

/// What a handler throws (any other exception is reported the same way).
#[derive(Debug, thiserror::Error, uniffi::Error)]
pub enum EscalationError {
    /// The handler could not answer.
    #[error("{reason}")]
    Failed {
        /// Why, in the handler's words.
        reason: String,
    },
}

impl From<uniffi::UnexpectedUniFFICallbackError> for EscalationError {
    /// An exception of another type thrown by the handler.
    fn from(error: uniffi::UnexpectedUniFFICallbackError) -> Self {
        EscalationError::Failed {
            reason: error.reason,
        }
    }
}

/// The runtime's view of a foreign handler.
pub(crate) struct ForeignHook {
    handler: Arc<dyn EscalationHandler>,
    name: String,
}

impl ForeignHook {
    pub(crate) fn new(handler: Arc<dyn EscalationHandler>) -> ForeignHook {
        // `name()` cannot report an error; one that throws anyway makes uniffi panic here,
        // and the handler is then named generically instead of failing the call.
        let name = catch_unwind(AssertUnwindSafe(|| handler.name()))
            .unwrap_or_else(|_| "escalation handler".to_string());
        ForeignHook { handler, name }
    }
}

impl rt::EscalationHook for ForeignHook {
    fn name(&self) -> &str {
        &self.name
    }

    fn escalate(
        &self,
        request: &rt::EscalationRequest<'_>,
    ) -> Result<Option<rt::HookAnswer>, rt::HookError> {
        let p = request.prediction;
        let threshold = match p.decision {
            rt::Decision::Accepted { threshold } | rt::Decision::Escalated { threshold, .. } => {
                threshold
            }
        };
        let ffi_request = EscalationRequest {
            input: Tensor::from(request.input.to_vec()),
            label: p.label.clone(),
            index: index32(p.index),
            confidence: p.confidence,
            score: p.score,
            threshold,
            top_k: p.top_k.iter().map(Ranked::of).collect(),
        };
        match self.handler.escalate(ffi_request) {
            Ok(answer) => Ok(answer.map(|a| rt::HookAnswer {
                index: a.index as usize,
                confidence: a.confidence,
            })),
            Err(e) => Err(rt::HookError::new(e.to_string())),
        }
    }
}
