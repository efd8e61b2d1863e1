//! [`DeadlineHook`]: another hook, given at most a fixed time to answer.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::{EscalationHook, EscalationRequest, HookAnswer};
use crate::error::{Error, HookError};

/// How many abandoned calls may still be running when a [`DeadlineHook`] is made without
/// [`DeadlineHook::with_abandoned_limit`].
pub const DEFAULT_MAX_ABANDONED: usize = 4;

/// A hook that gives another hook at most a fixed time to answer.
///
/// Each escalation copies the request (the input tensor and the prediction) into owned
/// data, runs the inner hook on a thread of its own and waits at most the deadline. An
/// answer in time is returned as the inner hook gave it. Past the deadline this hook fails
/// with "no answer within N ms": the prediction records
/// [`Failed`](crate::EscalationOutcome::Failed) under the inner hook's name and the
/// student's answer stands. The late call is not interrupted (Rust cannot stop a thread);
/// it goes on in the background and its answer is dropped when it comes. A panic in the
/// inner hook becomes a failure at once, not a wait for the deadline.
///
/// Calls abandoned this way and still running are counted by an [`AbandonedCalls`]
/// limit (by default [`DEFAULT_MAX_ABANDONED`], one per hook; share one between hooks
/// with [`with_abandoned_limit`](DeadlineHook::with_abandoned_limit)). While the limit is
/// reached, escalations fail at once, saying so, without calling the inner hook or
/// starting a thread. A hook that never returns thus holds at most that many threads,
/// plus one per call that was already waiting on it when the limit was reached (the
/// limit is checked when a call starts; calls waiting then may still be abandoned).
///
/// Cost, per escalated call: a copy of the input (4 bytes per value: 3 KB for a 28x28
/// image) and of the prediction, and one thread started and handed the result back
/// (about 80 µs more per escalated `classify` on a two-core x86-64 test machine, with a
/// hook that answers at once; its stack is reserved, not committed). Accepted predictions
/// cost nothing. A thread per call rather than a pool: escalations are the rare, slow path
/// (a network round trip, a larger model), and a pool's threads can all be taken by hung
/// calls, after which calls that would have answered in time queue behind them and miss
/// their deadlines.
///
/// The inner hook's [`name`](EscalationHook::name) is read once, at construction;
/// if it panics, this hook is named `escalation hook`.
pub struct DeadlineHook {
    inner: Arc<dyn EscalationHook>,
    name: String,
    deadline: Duration,
    abandoned: Arc<AbandonedCalls>,
}

/// A cap on escalation calls that a [`DeadlineHook`] stopped waiting for and that are
/// still running. One limit may be shared by many hooks (all the handlers of an app, say)
/// through an `Arc`.
#[derive(Debug)]
pub struct AbandonedCalls {
    max: usize,
    running: AtomicUsize,
}

impl AbandonedCalls {
    /// A limit of `max` abandoned calls running at once.
    ///
    /// # Errors
    /// [`Error::InvalidOption`] for `max = 0`, which would refuse every call.
    pub fn new(max: usize) -> Result<AbandonedCalls, Error> {
        if max == 0 {
            return Err(Error::InvalidOption {
                name: "max_abandoned",
                reason: "0 would refuse every escalation; expected at least 1".to_string(),
            });
        }
        Ok(AbandonedCalls {
            max,
            running: AtomicUsize::new(0),
        })
    }

    /// The most abandoned calls that may run at once before escalations are refused.
    pub fn max(&self) -> usize {
        self.max
    }

    /// How many abandoned calls are running now.
    pub fn running(&self) -> usize {
        self.running.load(Ordering::Acquire)
    }
}

impl Default for AbandonedCalls {
    /// A limit of [`DEFAULT_MAX_ABANDONED`].
    fn default() -> Self {
        AbandonedCalls {
            max: DEFAULT_MAX_ABANDONED,
            running: AtomicUsize::new(0),
        }
    }
}

impl DeadlineHook {
    /// Wraps `inner` so that it has at most `deadline` to answer each escalation.
    ///
    /// # Errors
    /// [`Error::InvalidOption`] for a zero deadline, which would fail every escalation.
    pub fn new(inner: Arc<dyn EscalationHook>, deadline: Duration) -> Result<DeadlineHook, Error> {
        if deadline.is_zero() {
            return Err(Error::InvalidOption {
                name: "deadline",
                reason: "0 would fail every escalation; expected a positive duration".to_string(),
            });
        }
        let name = catch_unwind(AssertUnwindSafe(|| inner.name().to_string()))
            .unwrap_or_else(|_| "escalation hook".to_string());
        Ok(DeadlineHook {
            inner,
            name,
            deadline,
            abandoned: Arc::new(AbandonedCalls::default()),
        })
    }

    /// The same hook counting its abandoned calls against `limit`, which other hooks may
    /// share.
    pub fn with_abandoned_limit(self, limit: Arc<AbandonedCalls>) -> DeadlineHook {
        DeadlineHook {
            abandoned: limit,
            ..self
        }
    }

    /// The time the inner hook has to answer.
    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    /// The limit this hook's abandoned calls count against.
    pub fn abandoned(&self) -> &AbandonedCalls {
        &self.abandoned
    }
}

impl EscalationHook for DeadlineHook {
    fn name(&self) -> &str {
        &self.name
    }

    fn escalate(&self, request: &EscalationRequest<'_>) -> Result<Option<HookAnswer>, HookError> {
        let limit = &self.abandoned;
        let running = limit.running();
        if running >= limit.max {
            return Err(HookError::new(format!(
                "not called: {running} earlier calls are still running past their deadline, \
                 the most allowed is {}",
                limit.max
            )));
        }
        // The request borrows from the caller, who stops waiting at the deadline; the
        // thread gets its own copy.
        let input = request.input.to_vec();
        let prediction = request.prediction.clone();
        let call = Arc::new(Call::default());
        let worker = WorkerCall {
            call: Arc::clone(&call),
            limit: Arc::clone(limit),
            started: Instant::now(),
            deadline: self.deadline,
            name: self.name.clone(),
        };
        let inner = Arc::clone(&self.inner);
        let spawned = std::thread::Builder::new()
            .name("student-hook".to_string())
            .spawn(move || {
                let request = EscalationRequest {
                    input: &input,
                    prediction: &prediction,
                };
                let result = catch_unwind(AssertUnwindSafe(|| inner.escalate(&request)))
                    .unwrap_or_else(|payload| Err(HookError::new(panicked(payload.as_ref()))));
                worker.finish(result);
            });
        if let Err(e) = spawned {
            return Err(HookError::new(format!(
                "cannot start a thread to call the hook: {e}"
            )));
        }
        let state = call.state.lock().unwrap_or_else(PoisonError::into_inner);
        let (mut state, _) = call
            .done
            .wait_timeout_while(state, self.deadline, |s| matches!(s, CallState::Running))
            .unwrap_or_else(PoisonError::into_inner);
        match std::mem::replace(&mut *state, CallState::Abandoned) {
            CallState::Finished(result) => result,
            // Still running: counted until its thread sees `Abandoned` and uncounts it,
            // under the same lock.
            _ => {
                limit.running.fetch_add(1, Ordering::AcqRel);
                Err(HookError::new(format!(
                    "no answer within {}; the call was left running and its answer will \
                     be ignored",
                    duration_text(self.deadline)
                )))
            }
        }
    }
}

/// One escalation on its thread: `Running` until the hook returns (`Finished`) or the
/// caller stops waiting (`Abandoned`), whichever comes first.
#[derive(Default)]
struct Call {
    state: Mutex<CallState>,
    done: Condvar,
}

#[derive(Default)]
enum CallState {
    #[default]
    Running,
    Finished(Result<Option<HookAnswer>, HookError>),
    Abandoned,
}

/// What the thread needs to hand its result over or, if the caller left, to drop it.
struct WorkerCall {
    call: Arc<Call>,
    limit: Arc<AbandonedCalls>,
    started: Instant,
    deadline: Duration,
    name: String,
}

impl WorkerCall {
    fn finish(self, result: Result<Option<HookAnswer>, HookError>) {
        let mut state = self
            .call
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if matches!(*state, CallState::Abandoned) {
            self.limit.running.fetch_sub(1, Ordering::AcqRel);
            log::debug!(
                "escalation hook {} returned after {} (deadline {}); its result was dropped",
                self.name,
                duration_text(self.started.elapsed()),
                duration_text(self.deadline)
            );
            return;
        }
        *state = CallState::Finished(result);
        self.call.done.notify_one();
    }
}

/// A panic's message as a hook error: its first line, at most 200 characters.
fn panicked(payload: &(dyn std::any::Any + Send)) -> String {
    match crate::error::panic_line(payload) {
        Some(line) => format!("the hook panicked: {line}"),
        None => "the hook panicked".to_string(),
    }
}

/// `250 ms` for whole milliseconds, else the duration as Rust prints it (`1.5ms`, `3µs`).
fn duration_text(d: Duration) -> String {
    if d.subsec_nanos().is_multiple_of(1_000_000) {
        format!("{} ms", d.as_millis())
    } else {
        format!("{d:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::card::ScoreKind;
    use crate::model::{ClassifyOptions, StudentModel};
    use crate::prediction::Prediction;
    use crate::prediction::{AnsweredBy, Decision, EscalationOutcome};

    /// A hook that blocks each call until the test opens its gate, then answers class 1.
    #[derive(Default)]
    struct Gated {
        open: Mutex<bool>,
        opened: Condvar,
        calls: AtomicUsize,
    }

    impl Gated {
        fn open(&self) {
            *self.open.lock().unwrap() = true;
            self.opened.notify_all();
        }
    }

    impl EscalationHook for Gated {
        fn name(&self) -> &str {
            "gated"
        }
        fn escalate(&self, _: &EscalationRequest<'_>) -> Result<Option<HookAnswer>, HookError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let open = self.open.lock().unwrap();
            drop(self.opened.wait_while(open, |open| !*open).unwrap());
            Ok(Some(HookAnswer {
                index: 1,
                confidence: None,
            }))
        }
    }

    /// A hook that runs a closure.
    struct With<F>(F);

    impl<F> EscalationHook for With<F>
    where
        F: Fn(&EscalationRequest<'_>) -> Result<Option<HookAnswer>, HookError> + Send + Sync,
    {
        fn name(&self) -> &str {
            "with"
        }
        fn escalate(&self, r: &EscalationRequest<'_>) -> Result<Option<HookAnswer>, HookError> {
            (self.0)(r)
        }
    }

    fn prediction() -> Prediction {
        Prediction {
            index: 4,
            label: "Coat".to_string(),
            confidence: 0.4,
            top_k: Vec::new(),
            score_kind: ScoreKind::MaxProbability,
            score: 0.4,
            decision: Decision::Escalated {
                threshold: 0.9,
                outcome: EscalationOutcome::NoHook,
            },
            final_index: 4,
            final_label: "Coat".to_string(),
            answered_by: AnsweredBy::Student,
        }
    }

    fn escalate(hook: &DeadlineHook) -> Result<Option<HookAnswer>, HookError> {
        let input: Vec<f32> = (0..784).map(|i| i as f32 / 784.0).collect();
        hook.escalate(&EscalationRequest {
            input: &input,
            prediction: &prediction(),
        })
    }

    /// Waits up to 10 s for the abandoned calls counted by `limit` to end.
    fn wait_until_none_running(limit: &AbandonedCalls) {
        let start = Instant::now();
        while limit.running() > 0 {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "{} abandoned calls still running",
                limit.running()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn an_answer_in_time_is_passed_on_with_the_request_intact() {
        let hook = With(|r: &EscalationRequest<'_>| {
            // The copy the thread sees is the caller's request.
            assert_eq!(r.input.len(), 784);
            assert_eq!(r.input[392], 0.5);
            assert_eq!(r.prediction, &prediction());
            Ok(Some(HookAnswer {
                index: 7,
                confidence: Some(0.75),
            }))
        });
        let hook = DeadlineHook::new(Arc::new(hook), Duration::from_secs(10)).unwrap();
        assert_eq!(hook.name(), "with");
        let answer = escalate(&hook).unwrap();
        assert_eq!(
            answer,
            Some(HookAnswer {
                index: 7,
                confidence: Some(0.75)
            })
        );
        assert_eq!(hook.abandoned().running(), 0);
        let failing = With(|_: &EscalationRequest<'_>| Err(HookError::new("server down")));
        let failing = DeadlineHook::new(Arc::new(failing), Duration::from_secs(10)).unwrap();
        assert_eq!(escalate(&failing).unwrap_err().to_string(), "server down");
    }

    #[test]
    fn a_hook_past_its_deadline_fails_and_is_left_running() {
        let gated = Arc::new(Gated::default());
        let hook = DeadlineHook::new(gated.clone(), Duration::from_millis(50)).unwrap();
        let start = Instant::now();
        let error = escalate(&hook).unwrap_err().to_string();
        let waited = start.elapsed();
        assert!(error.starts_with("no answer within 50 ms"), "{error}");
        assert!(
            waited >= Duration::from_millis(50) && waited < Duration::from_secs(5),
            "waited {waited:?}"
        );
        assert_eq!(hook.abandoned().running(), 1);
        assert_eq!(gated.calls.load(Ordering::SeqCst), 1);
        // Its late answer is dropped and it stops counting once it returns.
        gated.open();
        wait_until_none_running(hook.abandoned());
        assert_eq!(escalate(&hook).unwrap().map(|a| a.index), Some(1));
    }

    #[test]
    fn a_panicking_hook_fails_at_once() {
        let hook = With(
            |_: &EscalationRequest<'_>| -> Result<Option<HookAnswer>, HookError> {
                panic!("hook bug\nsecond line")
            },
        );
        let hook = DeadlineHook::new(Arc::new(hook), Duration::from_secs(30)).unwrap();
        let start = Instant::now();
        let error = escalate(&hook).unwrap_err().to_string();
        assert_eq!(error, "the hook panicked: hook bug");
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{:?}",
            start.elapsed()
        );
        assert_eq!(hook.abandoned().running(), 0);
        // A payload that is not text.
        let opaque = With(
            |_: &EscalationRequest<'_>| -> Result<Option<HookAnswer>, HookError> {
                std::panic::panic_any(42)
            },
        );
        let opaque = DeadlineHook::new(Arc::new(opaque), Duration::from_secs(30)).unwrap();
        assert_eq!(
            escalate(&opaque).unwrap_err().to_string(),
            "the hook panicked"
        );
    }

    #[test]
    fn past_the_cap_calls_fail_without_calling_the_hook() {
        let gated = Arc::new(Gated::default());
        let limit = Arc::new(AbandonedCalls::new(2).unwrap());
        let make = |deadline| {
            DeadlineHook::new(gated.clone(), deadline)
                .unwrap()
                .with_abandoned_limit(limit.clone())
        };
        let short = make(Duration::from_millis(20));
        for _ in 0..2 {
            let error = escalate(&short).unwrap_err().to_string();
            assert!(error.starts_with("no answer within 20 ms"), "{error}");
        }
        assert_eq!(limit.running(), 2);
        // Every hook sharing the limit refuses at once (this one would wait 30 s) without
        // calling the inner hook.
        let long = make(Duration::from_secs(30));
        for hook in [&short, &long] {
            let start = Instant::now();
            let error = escalate(hook).unwrap_err().to_string();
            assert_eq!(
                error,
                "not called: 2 earlier calls are still running past their deadline, the most \
                 allowed is 2"
            );
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "{:?}",
                start.elapsed()
            );
        }
        // The two abandoned calls reach the inner hook on their own threads, which a busy
        // machine may start after their 20 ms deadline: wait for them, then check that the
        // refused calls added none.
        let start = Instant::now();
        while gated.calls.load(Ordering::SeqCst) < 2 {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "abandoned calls never ran"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(gated.calls.load(Ordering::SeqCst), 2);
        gated.open();
        wait_until_none_running(&limit);
        assert_eq!(escalate(&long).unwrap().map(|a| a.index), Some(1));
        assert_eq!(gated.calls.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn a_zero_deadline_or_cap_is_refused() {
        let hook = Arc::new(Gated::default());
        let error = DeadlineHook::new(hook, Duration::ZERO).err().unwrap();
        assert!(error.to_string().contains("`deadline`"), "{error}");
        let error = AbandonedCalls::new(0).unwrap_err();
        assert!(error.to_string().contains("`max_abandoned`"), "{error}");
        assert_eq!(AbandonedCalls::default().max(), DEFAULT_MAX_ABANDONED);
    }

    #[test]
    fn a_hook_whose_name_panics_gets_a_generic_name() {
        struct Nameless;
        impl EscalationHook for Nameless {
            fn name(&self) -> &str {
                panic!("no name")
            }
            fn escalate(&self, _: &EscalationRequest<'_>) -> Result<Option<HookAnswer>, HookError> {
                Ok(None)
            }
        }
        let hook = DeadlineHook::new(Arc::new(Nameless), Duration::from_secs(1)).unwrap();
        assert_eq!(hook.name(), "escalation hook");
        assert_eq!(escalate(&hook).unwrap(), None);
    }

    #[test]
    fn durations_read_in_milliseconds_when_whole() {
        assert_eq!(duration_text(Duration::from_millis(250)), "250 ms");
        assert_eq!(duration_text(Duration::from_secs(2)), "2000 ms");
        assert_eq!(duration_text(Duration::from_micros(1500)), "1.5ms");
    }

    #[cfg(feature = "onnx")]
    #[test]
    fn a_late_hook_leaves_a_prediction_that_says_so() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../models/fashion-mnist/student.onnx"
        );
        let model = StudentModel::open(path).unwrap();
        let gated = Arc::new(Gated::default());
        let hook = DeadlineHook::new(gated.clone(), Duration::from_millis(30)).unwrap();
        let input = vec![0.0f32; model.input_spec().len()];
        let always = ClassifyOptions {
            threshold: Some(1.0),
            top_k: 1,
        };
        let p = model.classify(&input, &always, Some(&hook)).unwrap();
        match &p.decision {
            Decision::Escalated {
                outcome: EscalationOutcome::Failed { by, error },
                ..
            } => {
                assert_eq!(by, "gated");
                assert!(error.starts_with("no answer within 30 ms"), "{error}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(p.final_index, p.index);
        assert_eq!(p.answered_by, AnsweredBy::Student);
        gated.open();
        wait_until_none_running(hook.abandoned());
    }
}
