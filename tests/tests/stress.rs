//! Concurrency under load: many threads calling `logits`, `logits_batch` and `classify`
//! (with hooks) on one model, on several models at once, on a model whose opener drops it
//! while others still use it, and on a batched compiled model; every result is compared
//! bit for bit with a single-threaded run of the same call.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::{models_dir, samples, scratch};
use student_runtime::{
    CascadeHook, ClassifyOptions, DeadlineHook, Error, EscalationHook, EscalationRequest,
    HookAnswer, HookError, Isa, OpenOptions, StudentModel, compile_onnx,
};

/// Multiplies every thread's number of calls: `STUDENT_STRESS_SCALE=50` for a soak run
/// (about a minute per test on two cores); 1 by default.
fn scale() -> usize {
    std::env::var("STUDENT_STRESS_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(1)
}

/// One call a thread makes. Samples are the shipped images, by index, taken cyclically.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Call {
    /// `logits` of one sample.
    Logits(usize),
    /// `logits_batch` of `len` samples from `start`.
    Batch { start: usize, len: usize },
    /// `classify` of one sample, with a threshold and a hook.
    Classify {
        sample: usize,
        always_escalate: bool,
        hook: Hook,
    },
}

/// Which hook a `classify` call escalates through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Hook {
    None,
    /// [`ByClass`] as is.
    ByClass,
    /// [`ByClass`] inside a [`DeadlineHook`] (a generous deadline: it must never fire).
    ByClassWithDeadline,
    /// The shipped teacher, through a [`CascadeHook`].
    Teacher,
}

/// What a call returned, in a form compared bit for bit: logits as their bit patterns, a
/// prediction as JSON (floats print in their shortest exact form, so equal text means equal
/// bits). An error is a result too: a worker thread never panics, so a failing call cannot
/// leave the others waiting at a barrier.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Got {
    Bits(Vec<u32>),
    Prediction(String),
    Error(String),
}

/// A deterministic hook with every outcome: by the student's class, it fails, declines, or
/// answers the next class.
struct ByClass {
    classes: usize,
}

impl EscalationHook for ByClass {
    fn name(&self) -> &str {
        "by-class"
    }

    fn escalate(&self, request: &EscalationRequest<'_>) -> Result<Option<HookAnswer>, HookError> {
        let index = request.prediction.index;
        match index % 3 {
            0 => Err(HookError::new(format!("no server for class {index}"))),
            1 => Ok(None),
            _ => Ok(Some(HookAnswer {
                index: (index + 1) % self.classes,
                confidence: Some(request.prediction.confidence / 2.0),
            })),
        }
    }
}

/// A model with its samples and hooks: everything a thread needs to make any [`Call`].
struct Subject {
    name: String,
    model: Arc<StudentModel>,
    samples: Vec<Vec<f32>>,
    by_class: Arc<ByClass>,
    deadline: DeadlineHook,
    teacher: Option<Arc<CascadeHook>>,
}

impl Subject {
    fn new(name: &str, model: StudentModel, teacher: Option<Arc<CascadeHook>>) -> Subject {
        let samples = samples(&model).into_iter().map(|(_, _, x)| x).collect();
        let by_class = Arc::new(ByClass {
            classes: model.classes(),
        });
        let deadline = DeadlineHook::new(by_class.clone(), Duration::from_secs(30)).unwrap();
        Subject {
            name: name.to_string(),
            model: Arc::new(model),
            samples,
            by_class,
            deadline,
            teacher,
        }
    }

    fn input(&self, start: usize, len: usize) -> Vec<f32> {
        (0..len)
            .flat_map(|j| {
                self.samples[(start + j) % self.samples.len()]
                    .iter()
                    .copied()
            })
            .collect()
    }

    fn run(&self, call: Call) -> Got {
        run(&self.model, self, call)
    }
}

/// Makes `call` on `model` (which may be a clone of `subject.model` held elsewhere).
fn run(model: &StudentModel, subject: &Subject, call: Call) -> Got {
    let bits = |v: Result<Vec<f32>, Error>| match v {
        Ok(v) => Got::Bits(v.iter().map(|x| x.to_bits()).collect()),
        Err(e) => Got::Error(e.to_string()),
    };
    match call {
        Call::Logits(i) => bits(model.logits(&subject.input(i, 1))),
        Call::Batch { start, len } => bits(model.logits_batch(&subject.input(start, len))),
        Call::Classify {
            sample,
            always_escalate,
            hook,
        } => {
            let options = ClassifyOptions {
                threshold: always_escalate.then_some(1.0),
                top_k: 3,
            };
            let hook: Option<&dyn EscalationHook> = match hook {
                Hook::None => None,
                Hook::ByClass => Some(subject.by_class.as_ref()),
                Hook::ByClassWithDeadline => Some(&subject.deadline),
                Hook::Teacher => subject.teacher.as_deref().map(|h| h as &dyn EscalationHook),
            };
            match model.classify(&subject.input(sample, 1), &options, hook) {
                Ok(p) => Got::Prediction(serde_json::to_string(&p).unwrap()),
                Err(e) => Got::Error(e.to_string()),
            }
        }
    }
}

/// The `k`-th call of thread `t`: a mix of every kind, spread over the samples.
fn call_for(t: usize, k: usize, max_batch: usize, teacher: bool) -> Call {
    let n = t * 7919 + k * 104_729;
    let sample = (t * 13 + k * 7) % 32;
    match n % 4 {
        0 => Call::Logits(sample),
        1 => Call::Batch {
            start: sample,
            len: 1 + (n / 4) % max_batch,
        },
        _ => {
            let hooks: &[Hook] = if teacher {
                &[
                    Hook::None,
                    Hook::ByClass,
                    Hook::ByClassWithDeadline,
                    Hook::Teacher,
                ]
            } else {
                &[Hook::None, Hook::ByClass, Hook::ByClassWithDeadline]
            };
            Call::Classify {
                sample,
                always_escalate: (n / 4).is_multiple_of(2),
                hook: hooks[(n / 8) % hooks.len()],
            }
        }
    }
}

/// Runs `threads` threads, thread `t` making the calls `calls(t)` (each on a subject, by
/// index), and returns every result that differs from `expected`, described.
fn hammer(
    subjects: &[Subject],
    threads: usize,
    calls: impl Fn(usize) -> Vec<(usize, Call)> + Sync,
    expected: &HashMap<(usize, Call), Got>,
) -> Vec<String> {
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let calls = &calls;
                s.spawn(move || {
                    let mut wrong = Vec::new();
                    for (k, (m, call)) in calls(t).into_iter().enumerate() {
                        let got = subjects[m].run(call);
                        if expected[&(m, call)] != got {
                            wrong.push(format!(
                                "thread {t} call {k} on {}: {call:?}: got {got:?}, expected {:?}",
                                subjects[m].name,
                                expected[&(m, call)]
                            ));
                        }
                    }
                    wrong
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("a worker thread panicked"))
            .collect()
    })
}

/// Single-threaded results of every distinct call in `plan`; none may be an error.
fn reference(subjects: &[Subject], plan: &[(usize, Call)]) -> HashMap<(usize, Call), Got> {
    let mut expected = HashMap::new();
    for &(m, call) in plan {
        expected
            .entry((m, call))
            .or_insert_with(|| subjects[m].run(call));
    }
    assert_no_errors(&expected);
    expected
}

fn assert_no_errors(results: &HashMap<(usize, Call), Got>) {
    for (call, got) in results {
        assert!(!matches!(got, Got::Error(_)), "{call:?}: {got:?}");
    }
}

/// The outcomes among the reference predictions, by kind, so that a test can show its
/// hooks were exercised.
fn outcomes(expected: &HashMap<(usize, Call), Got>) -> HashMap<&'static str, usize> {
    let mut seen = HashMap::new();
    for got in expected.values() {
        let Got::Prediction(json) = got else { continue };
        let value: serde_json::Value = serde_json::from_str(json).unwrap();
        let kind = match value["decision"]["decision"].as_str().unwrap() {
            "accepted" => "accepted",
            _ => match value["decision"]["outcome"]["outcome"].as_str().unwrap() {
                "no_hook" => "no_hook",
                "answered" => "answered",
                "declined" => "declined",
                "failed" => "failed",
                other => panic!("unknown outcome {other}"),
            },
        };
        *seen.entry(kind).or_insert(0) += 1;
    }
    seen
}

fn report(what: &str, wrong: &[String], start: Instant, calls: usize) {
    eprintln!(
        "{what}: {calls} concurrent calls in {:.2} s, {} differ",
        start.elapsed().as_secs_f64(),
        wrong.len()
    );
    assert!(
        wrong.is_empty(),
        "{what}: {} results differ from the single-threaded run; first ones:\n{}",
        wrong.len(),
        wrong.iter().take(5).cloned().collect::<Vec<_>>().join("\n")
    );
}

fn compiled(name: &str, options: &OpenOptions) -> StudentModel {
    let bytes = std::fs::read(models_dir().join(name)).unwrap();
    let compiled = compile_onnx(&bytes, name).unwrap().bytes;
    StudentModel::from_bytes_named(&compiled, &format!("{name} compiled"), options).unwrap()
}

#[test]
fn sixteen_threads_on_one_model_match_a_single_thread() {
    let student = StudentModel::open(models_dir().join("student.onnx")).unwrap();
    let teacher = StudentModel::open(models_dir().join("teacher.onnx")).unwrap();
    let teacher = Arc::new(CascadeHook::new(teacher, &student).unwrap());
    let subjects = [Subject::new("student.onnx", student, Some(teacher))];
    let (threads, per_thread) = (16, 200 * scale());
    let calls = |t: usize| -> Vec<(usize, Call)> {
        (0..per_thread)
            .map(|k| (0, call_for(t, k, 6, true)))
            .collect()
    };
    let plan: Vec<_> = (0..threads).flat_map(calls).collect();
    let expected = reference(&subjects, &plan);
    let seen = outcomes(&expected);
    for kind in ["accepted", "no_hook", "answered", "declined", "failed"] {
        assert!(
            seen.contains_key(kind),
            "no {kind} prediction among {seen:?}"
        );
    }
    let start = Instant::now();
    let wrong = hammer(&subjects, threads, calls, &expected);
    report("one model", &wrong, start, plan.len());
    // The deadline never fired, so nothing was left running.
    assert_eq!(subjects[0].deadline.abandoned().running(), 0);
}

#[test]
fn threads_spread_over_several_models_match_a_single_thread_per_model() {
    // Each shipped student through tract, and compiled at the best and the portable
    // kernel level (one model when this CPU has no SIMD level).
    let mut subjects = Vec::new();
    let levels: std::collections::BTreeSet<Isa> = [Isa::best(), Isa::Portable].into();
    for name in ["student.onnx", "student-int8.onnx", "student-fp16.onnx"] {
        let onnx = StudentModel::open(models_dir().join(name)).unwrap();
        subjects.push(Subject::new(name, onnx, None));
        for &isa in &levels {
            let options = OpenOptions {
                kernels: Some(isa),
                ..OpenOptions::default()
            };
            let fast = compiled(name, &options);
            assert_eq!(fast.kernels(), isa.name());
            subjects.push(Subject::new(
                &format!("{name} compiled, {}", isa.name()),
                fast,
                None,
            ));
        }
    }
    let (threads, per_thread) = (12, 300 * scale());
    let n = subjects.len();
    // Each thread visits every model, starting at its own: every model has several
    // threads on it at any time.
    let calls = |t: usize| -> Vec<(usize, Call)> {
        (0..per_thread)
            .map(|k| ((t + k) % n, call_for(t, k, 6, false)))
            .collect()
    };
    let plan: Vec<_> = (0..threads).flat_map(calls).collect();
    let expected = reference(&subjects, &plan);
    for (m, subject) in subjects.iter().enumerate() {
        let mine = plan.iter().filter(|(i, _)| *i == m).count();
        assert!(mine >= 100, "{}: only {mine} calls", subject.name);
    }
    // The models differ, so mixing up their states would show.
    let first = |m: usize| subjects[m].run(Call::Logits(0));
    let int8 = levels.len() + 1;
    assert!(subjects[int8].name.starts_with("student-int8.onnx"));
    assert_ne!(first(0), first(int8), "fp32 and int8 give the same logits");
    let start = Instant::now();
    let wrong = hammer(&subjects, threads, calls, &expected);
    report("several models", &wrong, start, plan.len());
}

#[test]
fn a_model_dropped_by_its_opener_keeps_serving_the_threads_that_hold_it() {
    // A compiled file read in place from its memory map, and an ONNX file through tract.
    let dir = scratch("stress-dropped");
    let bytes = std::fs::read(models_dir().join("student-int8.onnx")).unwrap();
    let file = dir.join("student-int8.student");
    std::fs::write(
        &file,
        compile_onnx(&bytes, "student-int8.onnx").unwrap().bytes,
    )
    .unwrap();
    for path in [file, models_dir().join("student.onnx")] {
        // The opener's handle; a second instance of the file supplies the inputs and hooks.
        let opener = Arc::new(StudentModel::open(&path).unwrap());
        let subject = Subject::new(
            &path.display().to_string(),
            StudentModel::open(&path).unwrap(),
            None,
        );
        let (threads, per_thread) = (8, 60 * scale());
        let calls =
            |t: usize| -> Vec<Call> { (0..per_thread).map(|k| call_for(t, k, 4, false)).collect() };
        let mut expected = HashMap::new();
        for call in (0..threads).flat_map(calls) {
            expected
                .entry((0, call))
                .or_insert_with(|| run(&opener, &subject, call));
        }
        assert_no_errors(&expected);
        let weak = Arc::downgrade(&opener);
        let halfway = Barrier::new(threads + 1);
        let dropped = Barrier::new(threads + 1);
        let after_drop = AtomicBool::new(false);
        // Nothing on this thread may panic inside the scope while workers wait at a barrier.
        let mut holders = 0;
        let wrong: Vec<String> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let model = Arc::clone(&opener);
                    let (subject, expected, calls) = (&subject, &expected, &calls);
                    let (halfway, dropped, after_drop) = (&halfway, &dropped, &after_drop);
                    s.spawn(move || {
                        let mut wrong = Vec::new();
                        for (k, call) in calls(t).into_iter().enumerate() {
                            if k == per_thread / 2 {
                                halfway.wait();
                                dropped.wait();
                                if !after_drop.load(Ordering::SeqCst) {
                                    wrong.push(format!("thread {t}: the model was not dropped"));
                                }
                            }
                            let got = run(&model, subject, call);
                            if expected[&(0, call)] != got {
                                wrong.push(format!("thread {t} call {k}: {call:?}"));
                            }
                        }
                        // The last thread to finish frees the model, here.
                        drop(model);
                        wrong
                    })
                })
                .collect();
            halfway.wait();
            // Every worker holds a clone; the opener lets go of its own.
            holders = Arc::strong_count(&opener);
            drop(opener);
            after_drop.store(true, Ordering::SeqCst);
            dropped.wait();
            handles
                .into_iter()
                .flat_map(|h| h.join().expect("a worker thread panicked"))
                .collect()
        });
        assert_eq!(holders, threads + 1, "{}", path.display());
        assert!(wrong.is_empty(), "{}: {wrong:?}", path.display());
        assert!(
            weak.upgrade().is_none(),
            "{}: the model outlived every holder",
            path.display()
        );
    }
}

#[test]
fn a_batch_8_compiled_model_gives_each_batch_size_the_same_answer_under_load() {
    let subjects = [Subject::new(
        "student-int8 compiled at batch 8",
        compiled("student-int8.onnx", &OpenOptions::with_batch(8)),
        None,
    )];
    let (threads, per_thread) = (8, 200 * scale());
    // Every size from 1 to 40 samples (5 full batches), from several starts.
    let calls = |t: usize| -> Vec<(usize, Call)> {
        (0..per_thread)
            .map(|k| {
                let n = t * 31 + k * 17;
                let call = Call::Batch {
                    start: (n / 40) % 4 * 5,
                    len: 1 + n % 40,
                };
                (0, call)
            })
            .collect()
    };
    let plan: Vec<_> = (0..threads).flat_map(calls).collect();
    let sizes: std::collections::HashSet<usize> = plan
        .iter()
        .map(|(_, c)| match c {
            Call::Batch { len, .. } => *len,
            _ => 0,
        })
        .collect();
    assert_eq!(sizes.len(), 40, "sizes covered: {sizes:?}");
    let expected = reference(&subjects, &plan);
    let start = Instant::now();
    let wrong = hammer(&subjects, threads, calls, &expected);
    report("batch 8", &wrong, start, plan.len());
    // A row of a batched call is the same sample's logits whatever its place in the batch.
    let model = &subjects[0].model;
    let per = model.classes();
    let whole = model.logits_batch(&subjects[0].input(0, 40)).unwrap();
    for (j, row) in whole.chunks(per).enumerate() {
        let alone = model.logits(&subjects[0].input(j, 1)).unwrap();
        let scale = alone.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        for (a, b) in row.iter().zip(&alone) {
            assert!(
                (a - b).abs() <= 1e-5 * scale,
                "sample {j}: {a} in a batch, {b} alone"
            );
        }
    }
}
