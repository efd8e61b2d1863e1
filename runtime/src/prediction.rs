//! What a classification returns.

use serde::Serialize;

use crate::card::ScoreKind;

/// The outcome of classifying one input.
///
/// `index`, `label` and `confidence` are the student's own answer; `final_index` and
/// `final_label` are what the application should use, which differ only when an escalation
/// hook answered.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Prediction {
    /// The student's class index.
    pub index: usize,
    /// The student's class label.
    pub label: String,
    /// The student's calibrated probability for its class, in `[0, 1]`.
    pub confidence: f32,
    /// The most probable classes, best first.
    pub top_k: Vec<Ranked>,
    /// Which score the decision used.
    pub score_kind: ScoreKind,
    /// The score's value, in `[0, 1]`.
    pub score: f32,
    /// Accepted or escalated, and why.
    pub decision: Decision,
    /// The class index to use.
    pub final_index: usize,
    /// The class label to use.
    pub final_label: String,
    /// Who produced `final_index`.
    pub answered_by: AnsweredBy,
}

/// One class with its calibrated probability.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ranked {
    /// Class index.
    pub index: usize,
    /// Class label.
    pub label: String,
    /// Calibrated probability.
    pub probability: f32,
}

/// Whether the student's answer was accepted.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Decision {
    /// The score reached the threshold.
    Accepted {
        /// The threshold in force.
        threshold: f32,
    },
    /// The score was below the threshold.
    Escalated {
        /// The threshold in force.
        threshold: f32,
        /// What the escalation produced.
        outcome: EscalationOutcome,
    },
}

/// What happened when a prediction escalated.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum EscalationOutcome {
    /// No hook was given: the student's answer stands, flagged as low confidence.
    NoHook,
    /// The hook answered.
    Answered {
        /// The hook's name.
        by: String,
        /// The hook's confidence, when it reports one.
        confidence: Option<f32>,
    },
    /// The hook chose not to answer; the student's answer stands.
    Declined {
        /// The hook's name.
        by: String,
    },
    /// The hook failed (an error, a panic, an answer outside the label set or a confidence
    /// outside `[0, 1]`, or, through a [`DeadlineHook`](crate::DeadlineHook), no answer in
    /// time); the student's answer stands.
    Failed {
        /// The hook's name.
        by: String,
        /// What went wrong.
        error: String,
    },
}

/// The source of a prediction's final answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AnsweredBy {
    /// The student.
    Student,
    /// An escalation hook, by name.
    Hook(String),
}

impl Prediction {
    /// True when the prediction escalated (whatever the hook did).
    pub fn escalated(&self) -> bool {
        matches!(self.decision, Decision::Escalated { .. })
    }
}
