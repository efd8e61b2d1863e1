//! Escalation: what happens to a prediction whose confidence is below the threshold.

use crate::error::{Error, HookError};
use crate::model::{ClassifyOptions, StudentModel};
use crate::prediction::Prediction;

/// A low-confidence input and the student's answer to it, handed to a hook.
#[derive(Debug, Clone, Copy)]
pub struct EscalationRequest<'a> {
    /// The input tensor exactly as the student saw it (one sample, card layout).
    pub input: &'a [f32],
    /// The student's prediction (decision: escalated).
    pub prediction: &'a Prediction,
}

/// A hook's answer: a class index of the student's label set.
#[derive(Debug, Clone, PartialEq)]
pub struct HookAnswer {
    /// The class index; must be below the student's class count.
    pub index: usize,
    /// The hook's confidence, if it has one.
    pub confidence: Option<f32>,
}

/// Code the application owns that answers low-confidence inputs: a server call, a larger
/// model, a human review queue.
///
/// The runtime calls [`escalate`](EscalationHook::escalate) only for predictions below the
/// threshold. Returning `Ok(None)` declines. An error, a panic, or an index outside the
/// label set is recorded in the prediction and the student's answer stays in place; the
/// caller of `classify` never sees a failure from the hook.
pub trait EscalationHook: Send + Sync {
    /// A short name recorded in predictions as the answering party.
    fn name(&self) -> &str;

    /// Answers, declines, or fails for one escalated input.
    fn escalate(&self, request: &EscalationRequest<'_>) -> Result<Option<HookAnswer>, HookError>;
}

/// A hook that runs a second, larger model locally (typically the teacher).
pub struct CascadeHook {
    model: StudentModel,
    name: String,
}

impl CascadeHook {
    /// Wraps `model` as an escalation target for `student`.
    ///
    /// # Errors
    /// [`Error::InvalidOption`] when the two models disagree on the input size or on the
    /// number of classes, since the cascade hands the student's input to the larger model
    /// unchanged and maps its answer to the student's labels.
    pub fn new(model: StudentModel, student: &StudentModel) -> Result<CascadeHook, Error> {
        let (ours, theirs) = (student.card(), model.card());
        if ours.input != theirs.input {
            return Err(Error::InvalidOption {
                name: "escalate-to",
                reason: format!(
                    "the escalation model expects input {:?}, the student {:?}",
                    theirs.input, ours.input
                ),
            });
        }
        if ours.labels.len() != theirs.labels.len() {
            return Err(Error::InvalidOption {
                name: "escalate-to",
                reason: format!(
                    "the escalation model has {} classes, the student {}",
                    theirs.labels.len(),
                    ours.labels.len()
                ),
            });
        }
        let name = format!("cascade:{}", theirs.name);
        Ok(CascadeHook { model, name })
    }

    /// The model escalated inputs are sent to.
    pub fn model(&self) -> &StudentModel {
        &self.model
    }
}

impl EscalationHook for CascadeHook {
    fn name(&self) -> &str {
        &self.name
    }

    fn escalate(&self, request: &EscalationRequest<'_>) -> Result<Option<HookAnswer>, HookError> {
        let answer = self
            .model
            .classify(request.input, &ClassifyOptions::accept_all(), None)?;
        Ok(Some(HookAnswer {
            index: answer.index,
            confidence: Some(answer.confidence),
        }))
    }
}
