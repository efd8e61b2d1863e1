//! Escalation: what happens to a prediction whose confidence is below the threshold.

mod deadline;

pub use deadline::{AbandonedCalls, DEFAULT_MAX_ABANDONED, DeadlineHook};

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
    /// [`Error::InvalidOption`] when the two models disagree on the input shape, the pixel
    /// scaling, or the labels (names and order): the cascade hands the student's input to
    /// the larger model unchanged and takes its class index as one of the student's.
    pub fn new(model: StudentModel, student: &StudentModel) -> Result<CascadeHook, Error> {
        let (ours, theirs) = (student.card(), model.card());
        let mismatch = |reason: String| Error::InvalidOption {
            name: "escalate-to",
            reason,
        };
        let (a, b) = (&ours.input, &theirs.input);
        if [a.channels, a.height, a.width] != [b.channels, b.height, b.width] {
            return Err(mismatch(format!(
                "the escalation model takes {}x{}x{} inputs, the student {}x{}x{}",
                b.channels, b.height, b.width, a.channels, a.height, a.width
            )));
        }
        // The cascade hands over the student's input tensor as is, so both models must
        // normalize pixels the same way (to float precision).
        let close = |x: f32, y: f32| (x - y).abs() <= 1e-5 * x.abs().max(y.abs()).max(1.0);
        let same_scaling = close(a.scale, b.scale)
            && a.mean.iter().zip(&b.mean).all(|(x, y)| close(*x, *y))
            && a.std.iter().zip(&b.std).all(|(x, y)| close(*x, *y));
        if !same_scaling {
            return Err(mismatch(format!(
                "the escalation model scales pixels by {} with mean {:?} and std {:?}, the \
                 student by {} with mean {:?} and std {:?}",
                b.scale, b.mean, b.std, a.scale, a.mean, a.std
            )));
        }
        if ours.labels != theirs.labels {
            return Err(mismatch(format!(
                "the escalation model's labels [{}] differ from the student's [{}]",
                theirs.labels.join(", "),
                ours.labels.join(", ")
            )));
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
