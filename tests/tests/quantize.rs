//! The quantizer on the shipped student: int8 QDQ and fp16 files that are small, agree with
//! the fp32 student, carry a card saying what was done, and refuse what they cannot handle
//! with a clear error. Needs Debian's `dataset-fashion-mnist` (installed by the test
//! command).

mod common;

use common::models_dir;
use prost::Message;
use student_distill::{
    Dataset, Error, MIN_CALIBRATION_SAMPLES, QuantizeSettings, RangeMethod, Silent,
    ThresholdTarget, convert_fp16, quantize_int8, quantize_student,
};
use student_runtime::{OpenOptions, Precision, ScoreKind, StudentModel};
use tract_onnx::pb;

fn student_bytes() -> Vec<u8> {
    std::fs::read(models_dir().join("student.onnx")).expect("shipped student")
}

/// 1,000 validation images: enough for calibration and a stable agreement figure.
fn validation() -> Dataset {
    Dataset::from_name("fashion-mnist:validation")
        .expect("Fashion-MNIST installed")
        .slice(0, 1000)
}

fn settings(precision: Precision) -> QuantizeSettings {
    QuantizeSettings {
        precision,
        method: RangeMethod::MinMax,
        samples: 200,
        target: Some(ThresholdTarget::MaxEscalation { rate: 0.1 }),
        score: None,
    }
}

/// Top-1 agreement of two models over `data`, run through the runtime.
fn agreement(a: &StudentModel, b: &StudentModel, data: &Dataset) -> f64 {
    let spec = a.input_spec().clone();
    let indices: Vec<usize> = (0..data.len()).collect();
    let input = data.tensor(&spec, &indices).unwrap();
    let (la, lb) = (
        a.logits_batch(&input).unwrap(),
        b.logits_batch(&input).unwrap(),
    );
    let top = |row: &[f32]| {
        row.iter()
            .enumerate()
            .max_by(|x, y| x.1.total_cmp(y.1))
            .unwrap()
            .0
    };
    let classes = a.classes();
    let same = la
        .chunks_exact(classes)
        .zip(lb.chunks_exact(classes))
        .filter(|(x, y)| top(x) == top(y))
        .count();
    same as f64 / data.len() as f64
}

fn operator_count(model: &StudentModel, op: &str) -> usize {
    model
        .operators()
        .iter()
        .find(|(name, _)| name == op)
        .map_or(0, |(_, n)| *n)
}

#[test]
fn int8_student_is_small_agrees_with_fp32_and_says_what_it_is() {
    let source = student_bytes();
    let data = validation();
    let made = quantize_student(
        &source,
        "student.onnx",
        &data,
        None,
        &settings(Precision::Int8),
        &mut Silent,
    )
    .unwrap();
    // Issue goal: the int8 file is at most 30% of the fp32 one.
    let ratio = made.bytes.len() as f64 / source.len() as f64;
    assert!(ratio <= 0.30, "int8 file is {:.1}% of fp32", ratio * 100.0);

    let options = OpenOptions::with_batch(250);
    let fp32 = StudentModel::from_bytes(&source, &options).unwrap();
    let int8 = StudentModel::from_bytes(&made.bytes, &options).unwrap();
    let card = int8.card();
    assert_eq!(card.precision(), Precision::Int8);
    let q = card.quantization.as_ref().unwrap();
    assert_eq!(q.source_sha256, fp32.sha256());
    assert!(q.method.contains("per output channel"), "{}", q.method);
    assert!(card.name.ends_with("-int8"), "{}", card.name);
    // Re-calibrated for the target on the given data, and recorded as such.
    assert!(
        card.escalation.chosen_by.contains("escalate at most 10.0%"),
        "{}",
        card.escalation.chosen_by
    );
    assert_ne!(
        card.calibration.temperature,
        fp32.card().calibration.temperature
    );
    // A QDQ graph: weights, biases and activations each behind DequantizeLinear.
    assert_eq!(operator_count(&int8, "Conv"), 2);
    assert!(operator_count(&int8, "QuantizeLinear") >= 5);
    assert!(operator_count(&int8, "DequantizeLinear") >= 13);
    // Issue goal: at least 99% agreement with fp32 (measured here on images the
    // calibration did not use).
    let held_out = Dataset::from_name("fashion-mnist:test")
        .unwrap()
        .slice(0, 1000);
    let a = agreement(&fp32, &int8, &held_out);
    assert!(a >= 0.99, "int8 agrees with fp32 on {:.2}%", a * 100.0);
    // The card's validation figures are what the file gives.
    let v = &made.validation;
    assert_eq!(v["images"], 1000);
    let measured = agreement(&fp32, &int8, &data);
    assert!((v["agreement_with_fp32"].as_f64().unwrap() - measured).abs() < 1e-12);
}

#[test]
fn fp16_student_is_half_the_size_and_agrees_with_fp32() {
    let source = student_bytes();
    let data = validation();
    let made = quantize_student(
        &source,
        "student.onnx",
        &data,
        None,
        &settings(Precision::Fp16),
        &mut Silent,
    )
    .unwrap();
    let ratio = made.bytes.len() as f64 / source.len() as f64;
    assert!(ratio < 0.55, "fp16 file is {:.1}% of fp32", ratio * 100.0);
    let options = OpenOptions::with_batch(250);
    let fp32 = StudentModel::from_bytes(&source, &options).unwrap();
    let fp16 = StudentModel::from_bytes(&made.bytes, &options).unwrap();
    assert_eq!(fp16.card().precision(), Precision::Fp16);
    let held_out = Dataset::from_name("fashion-mnist:test")
        .unwrap()
        .slice(0, 1000);
    let a = agreement(&fp32, &fp16, &held_out);
    assert!(a >= 0.999, "fp16 agrees with fp32 on {:.2}%", a * 100.0);
    // Logits stay within fp16 weight rounding of fp32 (relative error ~5e-4 per weight).
    let spec = fp32.input_spec().clone();
    let x = held_out.tensor(&spec, &[0, 1, 2, 3]).unwrap();
    for i in 0..4 {
        let s = &x[i * spec.len()..(i + 1) * spec.len()];
        let (a, b) = (fp32.logits(s).unwrap(), fp16.logits(s).unwrap());
        for (u, v) in a.iter().zip(&b) {
            assert!((u - v).abs() <= 2e-2 * u.abs().max(1.0), "{u} vs {v}");
        }
    }
}

#[test]
fn a_quantized_model_is_not_quantized_again() {
    let data = validation();
    let made = quantize_student(
        &student_bytes(),
        "student.onnx",
        &data,
        None,
        &settings(Precision::Int8),
        &mut Silent,
    )
    .unwrap();
    for precision in [Precision::Int8, Precision::Fp16] {
        let err = quantize_student(
            &made.bytes,
            "student-int8.onnx",
            &data,
            None,
            &settings(precision),
            &mut Silent,
        )
        .unwrap_err();
        assert!(matches!(err, Error::AlreadyQuantized { .. }), "{err}");
        assert!(err.to_string().contains("quantize the fp32 model"), "{err}");
    }
    // The graph alone (no card) gives it away too.
    let err = convert_fp16(&without_card(&made.bytes), "bare.onnx").unwrap_err();
    assert!(err.to_string().contains("QuantizeLinear"), "{err}");
}

#[test]
fn a_file_that_decodes_to_far_more_than_its_size_is_refused_before_decoding() {
    // A million empty initializers: 2 bytes each in the file, a few hundred once decoded.
    // The quantizer counts them from the encoding, as opening does.
    let hostile = edited(|m| {
        let graph = m.graph.as_mut().unwrap();
        graph
            .initializer
            .extend(std::iter::repeat_n(pb::TensorProto::default(), 1_000_000));
    });
    assert!(hostile.len() < 3 << 20, "{} bytes", hostile.len());
    let Err(err) = convert_fp16(&hostile, "hostile.onnx") else {
        panic!("the file was converted");
    };
    assert!(
        matches!(
            &err,
            Error::Runtime(student_runtime::Error::TooLarge { .. })
        ),
        "{err}"
    );
    assert!(err.to_string().contains("hostile.onnx"), "{err}");
    let Err(err) = quantize_student(
        &hostile,
        "hostile.onnx",
        &validation(),
        None,
        &settings(Precision::Int8),
        &mut Silent,
    ) else {
        panic!("the file was quantized");
    };
    assert!(
        matches!(
            &err,
            Error::Runtime(student_runtime::Error::TooLarge { .. })
        ),
        "{err}"
    );
}

fn without_card(bytes: &[u8]) -> Vec<u8> {
    let mut m = pb::ModelProto::decode(bytes).unwrap();
    m.metadata_props.clear();
    m.encode_to_vec()
}

fn edited(edit: impl FnOnce(&mut pb::ModelProto)) -> Vec<u8> {
    let mut m = pb::ModelProto::decode(student_bytes().as_slice()).unwrap();
    edit(&mut m);
    m.encode_to_vec()
}

fn calibration_samples(n: usize) -> Vec<f32> {
    let model = common::student();
    let data = validation();
    let indices: Vec<usize> = (0..n).collect();
    data.tensor(model.input_spec(), &indices).unwrap()
}

#[test]
fn calibration_data_of_the_wrong_size_or_too_few_samples_is_refused() {
    let source = student_bytes();
    let few = calibration_samples(MIN_CALIBRATION_SAMPLES - 1);
    let err = quantize_int8(&source, "s.onnx", &few, RangeMethod::MinMax, &mut Silent)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("too few") && err.contains("at least 16"),
        "{err}"
    );
    let mut ragged = calibration_samples(20);
    ragged.pop();
    let err = quantize_int8(&source, "s.onnx", &ragged, RangeMethod::MinMax, &mut Silent)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("[1, 28, 28]") && err.contains("784 values each"),
        "{err}"
    );
    // Images of the wrong size for the model, through the student-level call.
    let small = Dataset {
        name: "small".to_string(),
        images: vec![0; 100 * 14 * 14],
        labels: vec![0; 100],
        height: 14,
        width: 14,
        classes: validation().classes,
    };
    let err = quantize_student(
        &source,
        "s.onnx",
        &small,
        None,
        &settings(Precision::Int8),
        &mut Silent,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("14x14") && err.contains("1x28x28"), "{err}");
}

#[test]
fn an_unsupported_operator_is_named_with_its_node() {
    let bytes = edited(|m| {
        let node = m
            .graph
            .as_mut()
            .unwrap()
            .node
            .iter_mut()
            .find(|n| n.op_type == "Relu");
        node.unwrap().op_type = "Erf".to_string();
    });
    let samples = calibration_samples(32);
    let err = quantize_int8(
        &bytes,
        "erf.onnx",
        &samples,
        RangeMethod::MinMax,
        &mut Silent,
    )
    .unwrap_err();
    assert!(matches!(err, Error::UnsupportedOperator { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("operator Erf (node `conv0.relu`)"), "{text}");
}

#[test]
fn an_old_opset_is_refused_with_the_fix() {
    let bytes = edited(|m| m.opset_import[0].version = 11);
    let err = convert_fp16(&bytes, "old.onnx").unwrap_err().to_string();
    assert!(
        err.contains("opset 11 is too old") && err.contains("13"),
        "{err}"
    );
}

#[test]
fn non_finite_activations_during_calibration_are_reported() {
    // A weight of +inf makes the first convolution's output infinite.
    let bytes = edited(|m| {
        let g = m.graph.as_mut().unwrap();
        let w = g
            .initializer
            .iter_mut()
            .find(|t| t.name == "conv0.weight")
            .unwrap();
        w.raw_data[..4].copy_from_slice(&f32::INFINITY.to_le_bytes());
    });
    let samples = calibration_samples(32);
    let err = quantize_int8(
        &bytes,
        "inf.onnx",
        &samples,
        RangeMethod::Percentile(99.9),
        &mut Silent,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("non-finite") && err.contains("calibration sample 0"),
        "{err}"
    );
    assert!(err.contains("conv0"), "{err}");
}

#[test]
fn an_unreachable_target_reports_the_closest_result() {
    let mut s = settings(Precision::Int8);
    s.target = Some(ThresholdTarget::RiskBound {
        error: 0.001,
        delta: 0.01,
    });
    s.score = Some(ScoreKind::Margin);
    let err = quantize_student(
        &student_bytes(),
        "student.onnx",
        &validation(),
        None,
        &s,
        &mut Silent,
    )
    .unwrap_err();
    assert!(matches!(err, Error::UnreachableTarget { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("tightest bound"), "{text}");
}

#[test]
fn a_risk_bound_target_is_chosen_on_data_the_temperature_did_not_see() {
    let mut s = settings(Precision::Int8);
    s.target = Some(ThresholdTarget::RiskBound {
        error: 0.05,
        delta: 0.1,
    });
    let made = quantize_student(
        &student_bytes(),
        "student.onnx",
        &validation(),
        None,
        &s,
        &mut Silent,
    )
    .unwrap();
    let card = &made.card;
    assert!(
        card.calibration.method.contains("first 500 images"),
        "{}",
        card.calibration.method
    );
    assert!(
        card.escalation.chosen_by.contains("last 500 images"),
        "{}",
        card.escalation.chosen_by
    );
    assert!(card.escalation.chosen_by.contains("Learn-then-Test"));
    // On the 500 images it was chosen on, accepted predictions err at most ~5% (the bound
    // holds with margin on its own data, since the test is conservative).
    let accepted = made.validation["threshold_choice"]["accepted_accuracy"]
        .as_f64()
        .unwrap();
    assert!(accepted >= 0.95, "accepted accuracy {accepted}");
}
