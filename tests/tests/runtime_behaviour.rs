//! The runtime's contract on the shipped student: opening, classifying, escalating, bad
//! files and bad inputs, concurrency.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use student_runtime::{
    AnsweredBy, CascadeHook, ClassifyOptions, Decision, Error, EscalationHook, EscalationOutcome,
    EscalationRequest, HookAnswer, HookError, OpenOptions, StudentModel,
};

#[test]
fn shipped_student_classifies_most_samples_correctly() {
    let model = student();
    let samples = samples(&model);
    let correct = samples
        .iter()
        .filter(|(_, label, x)| {
            model
                .classify(x, &ClassifyOptions::accept_all(), None)
                .unwrap()
                .index
                == *label
        })
        .count();
    // The student measures about 89% on the test set; the 32 samples are test images.
    assert!(
        correct * 10 >= samples.len() * 7,
        "{correct}/{} correct",
        samples.len()
    );
}

#[test]
fn from_bytes_and_memory_map_agree_exactly() {
    let path = models_dir().join("student.onnx");
    let mapped = StudentModel::open(&path).unwrap();
    let owned =
        StudentModel::from_bytes(&std::fs::read(&path).unwrap(), &OpenOptions::default()).unwrap();
    assert_eq!(mapped.sha256(), owned.sha256());
    for (_, _, x) in samples(&mapped).iter().take(5) {
        assert_eq!(mapped.logits(x).unwrap(), owned.logits(x).unwrap());
    }
}

#[test]
fn batched_logits_equal_single_logits() {
    let path = models_dir().join("student.onnx");
    let batched = StudentModel::open_with(&path, &OpenOptions::with_batch(4)).unwrap();
    let samples = samples(&batched);
    // 10 samples: two full batches of 4 and a remainder of 2 through the batch-1 plan.
    let input: Vec<f32> = samples.iter().take(10).flat_map(|s| s.2.clone()).collect();
    let all = batched.logits_batch(&input).unwrap();
    for (i, (_, _, x)) in samples.iter().take(10).enumerate() {
        let one = batched.logits(x).unwrap();
        for (a, b) in one.iter().zip(&all[i * 10..(i + 1) * 10]) {
            // Different batch sizes may take different kernel paths: 1e-4 absolute.
            assert!((a - b).abs() < 1e-4, "sample {i}: {a} vs {b}");
        }
    }
}

#[test]
fn prediction_is_consistent_with_its_card() {
    let model = student();
    let (_, _, x) = &samples(&model)[0];
    let p = model
        .classify(
            x,
            &ClassifyOptions {
                threshold: None,
                top_k: 10,
            },
            None,
        )
        .unwrap();
    assert_eq!(p.top_k.len(), 10);
    let sum: f32 = p.top_k.iter().map(|r| r.probability).sum();
    assert!((sum - 1.0).abs() < 1e-5, "probabilities sum to {sum}");
    assert_eq!(p.top_k[0].index, p.index);
    assert_eq!(p.confidence, p.top_k[0].probability);
    assert_eq!(p.label, model.card().labels[p.index]);
    let calibrated = student_runtime::calibrated_probabilities(
        &model.logits(x).unwrap(),
        model.card().calibration.temperature,
    );
    assert!((calibrated[p.index] - p.confidence).abs() < 1e-6);
    let threshold = model.card().escalation.threshold;
    assert_eq!(p.escalated(), p.score < threshold);
}

#[test]
fn threshold_override_forces_and_prevents_escalation() {
    let model = student();
    let (_, _, x) = &samples(&model)[0];
    let always = model.classify(
        x,
        &ClassifyOptions {
            threshold: Some(1.0),
            top_k: 1,
        },
        None,
    );
    let always = always.unwrap();
    // A score of exactly 1.0 would be accepted; anything below escalates.
    assert_eq!(always.escalated(), always.score < 1.0);
    let never = model
        .classify(x, &ClassifyOptions::accept_all(), None)
        .unwrap();
    assert!(!never.escalated());
}

#[test]
fn threshold_outside_unit_interval_is_an_error() {
    let model = student();
    let (_, _, x) = &samples(&model)[0];
    for t in [-0.1, 1.5, f32::NAN] {
        let err = model.classify(
            x,
            &ClassifyOptions {
                threshold: Some(t),
                top_k: 1,
            },
            None,
        );
        assert!(
            matches!(
                err,
                Err(Error::InvalidOption {
                    name: "threshold",
                    ..
                })
            ),
            "{t}"
        );
    }
}

#[test]
fn wrong_input_length_and_non_finite_values_are_rejected() {
    let model = student();
    let err = model.logits(&[0.0; 10]).unwrap_err().to_string();
    assert!(err.contains("10 values") && err.contains("784"), "{err}");
    let mut x = vec![0.0f32; 784];
    x[17] = f32::NAN;
    let err = model.logits(&x).unwrap_err().to_string();
    assert!(
        err.contains("position 17") && err.contains("not finite"),
        "{err}"
    );
    x[17] = f32::INFINITY;
    assert!(matches!(model.logits(&x), Err(Error::InvalidInput(_))));
    assert!(model.logits_batch(&[0.0; 785]).is_err());
}

#[test]
fn wrong_image_size_names_both_sizes() {
    let model = student();
    let err = model
        .input_spec()
        .tensor_from_gray8(&[0; 30 * 30], 30, 30)
        .unwrap_err();
    assert!(
        err.to_string().contains("30x30") && err.to_string().contains("28x28"),
        "{err}"
    );
}

#[test]
fn bad_files_give_typed_errors() {
    let dir = scratch("bad-files");
    let good = std::fs::read(models_dir().join("student.onnx")).unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty.onnx", vec![]),
        ("truncated.onnx", good[..good.len() / 2].to_vec()),
        ("header-only.onnx", good[..16].to_vec()),
        (
            "png.onnx",
            std::fs::read(models_dir().join("samples/test-00000-label-9.png")).unwrap(),
        ),
        ("text.onnx", b"this is not a model\n".to_vec()),
        ("zeros.onnx", vec![0u8; 4096]),
    ];
    for (name, bytes) in cases {
        let path = dir.join(name);
        std::fs::write(&path, &bytes).unwrap();
        let err = StudentModel::open(&path).expect_err(name);
        assert!(
            matches!(
                err,
                Error::NotOnnx { .. } | Error::Unsupported { .. } | Error::Plan { .. }
            ),
            "{name}: {err:?}"
        );
        assert!(
            err.to_string().contains(name),
            "{name}: error does not name the file: {err}"
        );
        assert!(
            StudentModel::from_bytes(&bytes, &OpenOptions::default()).is_err(),
            "{name}"
        );
    }
    let missing = StudentModel::open(dir.join("missing.onnx")).unwrap_err();
    assert!(matches!(missing, Error::Io { .. }), "{missing:?}");
    let folder = StudentModel::open(&dir).unwrap_err();
    assert!(matches!(folder, Error::Io { .. }), "{folder:?}");
}

#[test]
fn model_without_card_runs_with_stated_defaults() {
    let bytes = without_card(&models_dir().join("student.onnx"));
    let model = StudentModel::from_bytes(&bytes, &OpenOptions::default()).unwrap();
    let card = model.card();
    assert_eq!(
        card.labels,
        (0..10).map(|i| i.to_string()).collect::<Vec<_>>()
    );
    assert_eq!(card.calibration.temperature, 1.0);
    assert_eq!(card.escalation.threshold, 0.0);
    assert!(
        card.defaults_applied()
            .iter()
            .any(|d| d.starts_with("labels"))
    );
    assert!(
        card.defaults_applied()
            .iter()
            .any(|d| d.starts_with("input"))
    );
    let p = model
        .classify(&vec![0.5; 784], &ClassifyOptions::default(), None)
        .unwrap();
    assert!(!p.escalated());
}

#[test]
fn malformed_card_entries_are_errors_naming_the_key() {
    let path = models_dir().join("student.onnx");
    for (key, value) in [
        ("student.labels", "[\"only\", \"three\", \"labels\"]"),
        (
            "student.escalation",
            "{\"score\":\"margin\",\"threshold\":2,\"chosen_by\":\"x\"}",
        ),
        (
            "student.calibration",
            "{\"temperature\":-1,\"method\":\"x\"}",
        ),
        ("student.input", "{\"layout\":\"NHWC\"}"),
        ("student.teacher", "not json"),
    ] {
        let bytes = with_card_entry(&path, key, value);
        let err = StudentModel::from_bytes(&bytes, &OpenOptions::default()).unwrap_err();
        assert!(matches!(err, Error::InvalidCard { .. }), "{key}: {err:?}");
        assert!(err.to_string().contains(key), "{key}: {err}");
    }
}

struct Recording {
    calls: AtomicUsize,
    behaviour: fn(&EscalationRequest<'_>) -> Result<Option<HookAnswer>, HookError>,
}

impl EscalationHook for Recording {
    fn name(&self) -> &str {
        "recording"
    }
    fn escalate(&self, request: &EscalationRequest<'_>) -> Result<Option<HookAnswer>, HookError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        (self.behaviour)(request)
    }
}

fn escalate_with(
    behaviour: fn(&EscalationRequest<'_>) -> Result<Option<HookAnswer>, HookError>,
) -> (student_runtime::Prediction, usize) {
    let model = student();
    let (_, _, x) = &samples(&model)[0];
    let hook = Recording {
        calls: AtomicUsize::new(0),
        behaviour,
    };
    // Threshold 1.0: every prediction below certainty escalates.
    let options = ClassifyOptions {
        threshold: Some(1.0),
        top_k: 1,
    };
    let p = model.classify(x, &options, Some(&hook)).unwrap();
    assert!(p.escalated(), "the sample must escalate at threshold 1");
    (p, hook.calls.load(Ordering::SeqCst))
}

#[test]
fn hook_answer_replaces_the_final_answer_only() {
    let (p, calls) = escalate_with(|r| {
        assert!(r.prediction.escalated());
        assert_eq!(r.input.len(), 784);
        Ok(Some(HookAnswer {
            index: (r.prediction.index + 1) % 10,
            confidence: Some(0.9),
        }))
    });
    assert_eq!(calls, 1);
    assert_eq!(p.final_index, (p.index + 1) % 10);
    assert_eq!(p.answered_by, AnsweredBy::Hook("recording".into()));
    assert!(matches!(
        p.decision,
        Decision::Escalated {
            outcome: EscalationOutcome::Answered {
                confidence: Some(_),
                ..
            },
            ..
        }
    ));
}

#[test]
fn declining_failing_panicking_and_garbage_hooks_keep_the_student_answer() {
    let declined = escalate_with(|_| Ok(None)).0;
    let failed = escalate_with(|_| Err(HookError::new("server unreachable"))).0;
    let panicked = escalate_with(|_| panic!("hook bug")).0;
    let garbage = escalate_with(|_| {
        Ok(Some(HookAnswer {
            index: 99,
            confidence: None,
        }))
    })
    .0;
    for p in [&declined, &failed, &panicked, &garbage] {
        assert_eq!(p.final_index, p.index);
        assert_eq!(p.answered_by, AnsweredBy::Student);
    }
    let outcome = |p: &student_runtime::Prediction| match &p.decision {
        Decision::Escalated { outcome, .. } => outcome.clone(),
        other => panic!("not escalated: {other:?}"),
    };
    assert!(matches!(
        outcome(&declined),
        EscalationOutcome::Declined { .. }
    ));
    assert!(
        matches!(outcome(&failed), EscalationOutcome::Failed { error, .. } if error.contains("unreachable"))
    );
    assert!(
        matches!(outcome(&panicked), EscalationOutcome::Failed { error, .. } if error.contains("panicked"))
    );
    assert!(
        matches!(outcome(&garbage), EscalationOutcome::Failed { error, .. } if error.contains("class 99"))
    );
}

#[test]
fn accepted_predictions_never_call_the_hook() {
    let model = student();
    let (_, _, x) = &samples(&model)[0];
    let hook = Recording {
        calls: AtomicUsize::new(0),
        behaviour: |_| Ok(None),
    };
    let p = model
        .classify(x, &ClassifyOptions::accept_all(), Some(&hook))
        .unwrap();
    assert!(!p.escalated());
    assert_eq!(hook.calls.load(Ordering::SeqCst), 0);
}

#[test]
fn cascade_hook_answers_with_the_teacher() {
    let model = student();
    let teacher = teacher();
    let samples = samples(&model);
    let expected: Vec<usize> = samples
        .iter()
        .map(|(_, _, x)| {
            teacher
                .classify(x, &ClassifyOptions::accept_all(), None)
                .unwrap()
                .index
        })
        .collect();
    let hook = CascadeHook::new(teacher, &model).unwrap();
    let options = ClassifyOptions {
        threshold: Some(1.0),
        top_k: 1,
    };
    for ((_, _, x), t) in samples.iter().zip(expected) {
        let p = model.classify(x, &options, Some(&hook)).unwrap();
        if p.escalated() {
            assert_eq!(p.final_index, t);
            assert!(matches!(p.answered_by, AnsweredBy::Hook(ref n) if n.starts_with("cascade:")));
        }
    }
}

#[test]
fn cascade_hook_refuses_a_model_with_other_classes_or_input() {
    let model = student();
    let cardless = without_card(&models_dir().join("teacher.onnx"));
    let other = StudentModel::from_bytes(&cardless, &OpenOptions::default()).unwrap();
    // The card-less teacher scales pixels differently: its input spec differs.
    assert!(CascadeHook::new(other, &model).is_err());
}

#[test]
fn one_model_serves_many_threads_with_identical_results() {
    let model = Arc::new(student());
    let samples = Arc::new(samples(&model));
    let reference: Vec<Vec<f32>> = samples
        .iter()
        .map(|(_, _, x)| model.logits(x).unwrap())
        .collect();
    let handles: Vec<_> = (0..8)
        .map(|t| {
            let (model, samples) = (Arc::clone(&model), Arc::clone(&samples));
            std::thread::spawn(move || {
                (0..4)
                    .flat_map(|round| {
                        let model = Arc::clone(&model);
                        samples
                            .iter()
                            .enumerate()
                            .skip((t + round) % 3)
                            .map(move |(i, (_, _, x))| (i, model.logits(x).unwrap()))
                            .collect::<Vec<_>>()
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for h in handles {
        for (i, logits) in h.join().unwrap() {
            assert_eq!(logits, reference[i], "sample {i} differs under concurrency");
        }
    }
}

#[test]
fn open_options_reject_zero_batch() {
    let err = StudentModel::open_with(
        models_dir().join("student.onnx"),
        &OpenOptions::with_batch(0),
    );
    assert!(matches!(
        err,
        Err(Error::InvalidOption { name: "batch", .. })
    ));
}

#[test]
fn a_kernel_level_for_an_onnx_file_is_an_error_not_ignored() {
    // ONNX files run through tract: a level asked for would not be the one measured.
    let options = OpenOptions {
        kernels: Some(student_runtime::Isa::Portable),
        ..OpenOptions::default()
    };
    let err = StudentModel::open_with(models_dir().join("student.onnx"), &options).unwrap_err();
    assert!(
        matches!(&err, Error::InvalidOption { name: "kernels", reason } if reason.contains("student compile")),
        "{err}"
    );
}

#[test]
fn shape_annotations_with_their_own_batch_symbol_do_not_stop_a_fixed_batch() {
    // What ONNX shape inference writes: every intermediate tensor annotated with the
    // exporter's batch symbol. The runtime plans with batch 1 and 32 regardless.
    use prost::Message;
    use tract_onnx::pb;
    use tract_onnx::pb::tensor_shape_proto::{Dimension, dimension};
    let bytes = std::fs::read(models_dir().join("student.onnx")).unwrap();
    let mut m = pb::ModelProto::decode(bytes.as_slice()).unwrap();
    let g = m.graph.as_mut().unwrap();
    let dim = |v: dimension::Value| Dimension {
        value: Some(v),
        ..Default::default()
    };
    for (name, rest) in [("conv0", [8, 28, 28]), ("pool0", [8, 14, 14])] {
        let mut dims = vec![dim(dimension::Value::DimParam("N".to_string()))];
        dims.extend(rest.map(|d| dim(dimension::Value::DimValue(d))));
        g.value_info.push(pb::ValueInfoProto {
            name: name.to_string(),
            r#type: Some(pb::TypeProto {
                value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                    elem_type: 1,
                    shape: Some(pb::TensorShapeProto { dim: dims }),
                })),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    let annotated = StudentModel::from_bytes(&m.encode_to_vec(), &OpenOptions::with_batch(32))
        .expect("annotated model opens");
    let plain = student();
    let (_, _, x) = &samples(&plain)[0];
    assert_eq!(annotated.logits(x).unwrap(), plain.logits(x).unwrap());
}

#[test]
fn a_graph_that_mixes_the_batch_answers_each_sample_as_alone() {
    // The shipped student with the batch mean of its logits added: alone, a sample's
    // logits double; in a batch, they would move with the samples beside them. An ONNX
    // file runs a batch sample by sample, so it answers as its samples do one by one.
    use prost::Message;
    use tract_onnx::pb;
    let bytes = std::fs::read(models_dir().join("student.onnx")).unwrap();
    let mut m = pb::ModelProto::decode(bytes.as_slice()).unwrap();
    let g = m.graph.as_mut().unwrap();
    let output = g.output[0].name.clone();
    let raw = format!("{output}_raw");
    for n in g.node.iter_mut() {
        for o in n.output.iter_mut().filter(|o| **o == output) {
            *o = raw.clone();
        }
    }
    let node =
        |op: &str, inputs: &[&str], out: &str, attribute: Vec<pb::AttributeProto>| pb::NodeProto {
            op_type: op.to_string(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![out.to_string()],
            attribute,
            ..Default::default()
        };
    let axes = pb::AttributeProto {
        name: "axes".to_string(),
        r#type: pb::attribute_proto::AttributeType::Ints as i32,
        ints: vec![0],
        ..Default::default()
    };
    g.node
        .push(node("ReduceMean", &[&raw], "batch_mean", vec![axes]));
    g.node
        .push(node("Add", &[&raw, "batch_mean"], &output, vec![]));
    let mixed = StudentModel::from_bytes(&m.encode_to_vec(), &OpenOptions::with_batch(4))
        .expect("the mixing model opens");
    let plain = student();
    let samples = samples(&plain);
    let input: Vec<f32> = samples.iter().take(8).flat_map(|s| s.2.clone()).collect();
    let together = mixed.logits_batch(&input).unwrap();
    for (i, (_, _, x)) in samples.iter().take(8).enumerate() {
        let alone = mixed.logits(x).unwrap();
        let own = plain.logits(x).unwrap();
        for ((a, b), p) in alone.iter().zip(&together[i * 10..(i + 1) * 10]).zip(&own) {
            assert!(
                (a - b).abs() < 1e-4,
                "sample {i}: {a} alone, {b} in the batch"
            );
            assert!(
                (a - 2.0 * p).abs() < 1e-3,
                "sample {i}: {a} is not twice {p}"
            );
        }
    }
}
