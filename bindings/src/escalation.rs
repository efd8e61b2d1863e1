//! Escalation handlers written in Kotlin or Swift, seen by the runtime as hooks.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use student_runtime as rt;

use crate::error::StudentError;
use crate::records::{ClassifyOptions, Ranked, index32};
use crate::tensor::Tensor;

/// App code that answers low-confidence inputs: a server call, a larger model, a review
/// queue. Implemented in Kotlin or Swift.
///
/// `escalate` is called only for predictions whose score is below the threshold, on the
/// thread that called `classify`, or, when the call's options set `handler_deadline_ms`,
/// on a thread the library starts for it. Return `null`/`nil` to decline. Anything thrown
/// is caught and recorded in the prediction's `outcome` as `Failed` (the first line of its
/// text, at most 300 characters); the student's answer stands and the `classify` call
/// still succeeds. So is an answer outside the label set or a confidence outside
/// `[0, 1]` (NaN included), and, with a deadline, no answer in time.
#[uniffi::export(foreign)]
pub trait EscalationHandler: Send + Sync {
    /// A short name recorded in predictions as the answering party. A `name()` that throws
    /// or returns an empty string is named `escalation handler` instead. It is called once
    /// per `classify` call given a handler, on the calling thread and outside any
    /// `handler_deadline_ms`: return a constant.
    fn name(&self) -> Result<String, EscalationError>;

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
    /// Anything but an `EscalationException` / `EscalationError`: another exception type,
    /// or a Java `Error`, which uniffi does not catch, so the call returns nothing and
    /// uniffi's `reason` only says that the return value was missing.
    fn from(error: uniffi::UnexpectedUniFFICallbackError) -> Self {
        EscalationError::Failed {
            reason: format!(
                "the handler failed without a typed error (a Java Error or an exception \
                 uniffi cannot carry): {}",
                first_line(&error.reason)
            ),
        }
    }
}

/// The name a handler gets when its own `name()` fails.
const FALLBACK_NAME: &str = "escalation handler";

/// The most of a handler's error text kept in a prediction and in logs, in characters.
const MAX_ERROR_CHARS: usize = 300;

/// Handler calls that outlived their deadline and still run, for every model in the
/// process: a handler that never returns holds at most
/// [`DEFAULT_MAX_ABANDONED`](rt::DEFAULT_MAX_ABANDONED) threads (plus one per call that was
/// waiting on it when that many were reached). While the cap is reached, escalations with
/// a deadline fail at once, saying so, without calling the handler. Process-wide because
/// the threads are the process's, and a handler object has no identity across calls.
static ABANDONED: LazyLock<Arc<rt::AbandonedCalls>> =
    LazyLock::new(|| Arc::new(rt::AbandonedCalls::default()));

/// The hook one call escalates through: `handler` as the runtime sees it, given at most
/// `options.handler_deadline_ms` to answer when that is set.
///
/// # Errors
/// [`StudentError::InvalidInput`] for a deadline of 0 ms, with or without a handler.
pub(crate) fn hook_for(
    handler: Option<Arc<dyn EscalationHandler>>,
    options: Option<&ClassifyOptions>,
) -> Result<Option<Box<dyn rt::EscalationHook>>, StudentError> {
    let deadline = options.and_then(|o| o.handler_deadline_ms);
    if deadline == Some(0) {
        return Err(StudentError::InvalidInput {
            reason: "handler_deadline_ms is 0, expected at least 1 (or none for no deadline)"
                .to_string(),
        });
    }
    let Some(handler) = handler else {
        return Ok(None);
    };
    let hook = ForeignHook::new(handler);
    let Some(ms) = deadline else {
        return Ok(Some(Box::new(hook)));
    };
    let hook = rt::DeadlineHook::new(Arc::new(hook), Duration::from_millis(u64::from(ms)))?
        .with_abandoned_limit(Arc::clone(&ABANDONED));
    Ok(Some(Box::new(hook)))
}

/// The runtime's view of a foreign handler.
struct ForeignHook {
    handler: Arc<dyn EscalationHandler>,
    name: String,
}

impl ForeignHook {
    fn new(handler: Arc<dyn EscalationHandler>) -> ForeignHook {
        // A handler whose name cannot be had still escalates, under a generic name. A Java
        // `Error` thrown by `name()` escapes uniffi and arrives as an empty string.
        let name = match handler.name() {
            Ok(name) if !name.is_empty() => name,
            Ok(_) => FALLBACK_NAME.to_string(),
            Err(e) => {
                log::debug!(
                    "escalation handler name() failed, named `{FALLBACK_NAME}`: {}",
                    brief(&e.to_string())
                );
                FALLBACK_NAME.to_string()
            }
        };
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
            Err(e) => Err(rt::HookError::new(brief(&e.to_string()))),
        }
    }
}

/// A handler's error text as predictions carry it: Kotlin sends a whole stack trace and a
/// message may be megabytes long, so only the first line is kept, cut at
/// [`MAX_ERROR_CHARS`] characters with `…` marking the cut.
fn brief(text: &str) -> String {
    let line = first_line(text);
    if line.chars().count() <= MAX_ERROR_CHARS {
        return line.to_string();
    }
    let mut cut: String = line.chars().take(MAX_ERROR_CHARS - 1).collect();
    cut.push('…');
    cut
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("").trim_end()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stack_trace_is_cut_to_its_first_line() {
        let trace = "java.lang.IllegalStateException: down\n\tat A.b(A.kt:1)\n\tat C.d(C.kt:2)\n";
        assert_eq!(brief(trace), "java.lang.IllegalStateException: down");
        assert_eq!(brief("queue full"), "queue full");
        assert_eq!(brief(""), "");
    }

    #[test]
    fn a_long_message_is_capped_with_a_mark() {
        let long = "é".repeat(10_000);
        let cut = brief(&long);
        assert_eq!(cut.chars().count(), MAX_ERROR_CHARS);
        assert!(cut.ends_with('…'));
        let exact = "x".repeat(MAX_ERROR_CHARS);
        assert_eq!(brief(&exact), exact);
    }

    struct Answering;

    impl EscalationHandler for Answering {
        fn name(&self) -> Result<String, EscalationError> {
            Ok("answering".to_string())
        }
        fn escalate(
            &self,
            request: EscalationRequest,
        ) -> Result<Option<HandlerAnswer>, EscalationError> {
            Ok(Some(HandlerAnswer {
                index: request.index + 1,
                confidence: None,
            }))
        }
    }

    fn with_deadline(ms: Option<u32>) -> ClassifyOptions {
        ClassifyOptions {
            threshold: None,
            top_k: 3,
            handler_deadline_ms: ms,
        }
    }

    #[test]
    fn a_zero_deadline_is_refused_with_or_without_a_handler() {
        for handler in [
            None,
            Some(Arc::new(Answering) as Arc<dyn EscalationHandler>),
        ] {
            let Err(StudentError::InvalidInput { reason }) =
                hook_for(handler, Some(&with_deadline(Some(0))))
            else {
                panic!("a 0 ms deadline was accepted");
            };
            assert!(reason.contains("handler_deadline_ms"), "{reason}");
        }
        assert!(
            hook_for(None, Some(&with_deadline(Some(5))))
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn a_handler_with_a_deadline_keeps_its_name_and_answer() {
        let prediction = rt::Prediction {
            index: 4,
            label: "Coat".to_string(),
            confidence: 0.4,
            top_k: Vec::new(),
            score_kind: rt::ScoreKind::MaxProbability,
            score: 0.4,
            decision: rt::Decision::Escalated {
                threshold: 0.9,
                outcome: rt::EscalationOutcome::NoHook,
            },
            final_index: 4,
            final_label: "Coat".to_string(),
            answered_by: rt::AnsweredBy::Student,
        };
        let input = vec![0.5f32; 784];
        let request = rt::EscalationRequest {
            input: &input,
            prediction: &prediction,
        };
        for ms in [None, Some(10_000)] {
            let hook = hook_for(Some(Arc::new(Answering)), Some(&with_deadline(ms)))
                .unwrap()
                .unwrap();
            assert_eq!(hook.name(), "answering");
            let answer = hook.escalate(&request).unwrap().unwrap();
            assert_eq!(answer.index, 5, "deadline {ms:?}");
        }
    }

    #[test]
    fn an_untyped_failure_says_so() {
        let error = uniffi::UnexpectedUniFFICallbackError::new(
            "not enough bytes remaining in buffer (0 < 1)",
        );
        let EscalationError::Failed { reason } = EscalationError::from(error);
        assert!(
            reason.starts_with("the handler failed without a typed error"),
            "{reason}"
        );
        assert!(reason.ends_with("(0 < 1)"), "{reason}");
    }
}
