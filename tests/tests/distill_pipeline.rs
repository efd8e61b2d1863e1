//! The training side end to end on a small slice of Fashion-MNIST: a recipe in, three
//! self-describing ONNX files and a report out, with card metrics that the runtime
//! reproduces. Needs Debian's `dataset-fashion-mnist` (installed by the test command).

mod common;

use common::scratch;
use student_distill::{Dataset, Recipe, Silent, evaluate, run_recipe};
use student_runtime::{Precision, StudentModel};

const RECIPE: &str = r#"
name = "tiny"
seed = 3

[data]
source = "fashion-mnist"
validation = 500
train_limit = 1500
test_limit = 400
mean = 0.2860
std = 0.3530

[teacher.net]
convs = [8]
hidden = 32

[teacher.train]
epochs = 2
batch = 64
learning_rate = 0.003

[student.net]
convs = [4]
hidden = 0

[student.train]
epochs = 2
batch = 64
learning_rate = 0.004

[student]
temperature = 4.0
alpha = 0.7

[calibration]
score = "max_probability"
target = { kind = "max_escalation", rate = 0.3 }

[output]
dir = "out"
cache = "cache"

[quantize]
precisions = ["int8", "fp16"]
samples = 100
"#;

#[test]
fn a_small_recipe_produces_consistent_models_and_report() {
    let dir = scratch("tiny-recipe");
    std::fs::write(dir.join("recipe.toml"), RECIPE).unwrap();
    let recipe = Recipe::load(&dir.join("recipe.toml")).unwrap();
    let report = run_recipe(&recipe, &mut Silent).unwrap();
    let out = dir.join("out");
    for f in [
        "teacher.onnx",
        "student.onnx",
        "baseline.onnx",
        "report.json",
        "report.md",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let teacher = StudentModel::open(out.join("teacher.onnx")).unwrap();
    let student = StudentModel::open(out.join("student.onnx")).unwrap();
    let card = student.card();
    assert!(
        card.defaults_applied().is_empty(),
        "{:?}",
        card.defaults_applied()
    );
    assert_eq!(card.labels.len(), 10);
    assert_eq!(card.labels[9], "Ankle boot");
    // The card names the teacher file actually written, by hash and size.
    let t = card.teacher.as_ref().unwrap();
    assert_eq!(t.sha256, teacher.sha256());
    assert_eq!(t.params, teacher.params());
    assert!(card.calibration.temperature > 0.0);
    assert!(card.calibration.ece_after.unwrap() <= card.calibration.ece_before.unwrap() + 1e-9);
    // The threshold met its target on validation.
    assert!(report.threshold.escalation_rate <= 0.3);
    assert!((0.0..=1.0).contains(&card.escalation.threshold));
    assert!(card.escalation.chosen_by.contains("escalate at most 30.0%"));

    // The metrics in the card are what the runtime measures on the same test images.
    let test = Dataset::from_name("fashion-mnist:test")
        .unwrap()
        .slice(0, 400);
    let measured = evaluate(&student, Some(&teacher), &test, None, &mut Silent).unwrap();
    let metrics = &card.metrics.as_ref().unwrap()["test"];
    for key in [
        "accuracy",
        "cascade_accuracy",
        "escalation_rate",
        "agreement",
        "teacher_accuracy",
    ] {
        let in_card = metrics[key].as_f64().unwrap();
        let now = serde_json::to_value(&measured).unwrap()[key]
            .as_f64()
            .unwrap();
        assert!(
            (in_card - now).abs() < 1e-12,
            "{key}: card {in_card}, measured {now}"
        );
    }
    assert_eq!(report.student_test.accuracy, measured.accuracy);
    assert_eq!(report.params.student, student.params());

    // The [quantize] section: int8 and fp16 copies, each re-calibrated for the recipe's
    // target on validation, with test figures in their cards that the runtime reproduces.
    assert_eq!(report.quantized.len(), 2);
    for (q, precision) in report
        .quantized
        .iter()
        .zip([Precision::Int8, Precision::Fp16])
    {
        let model = StudentModel::open(out.join(format!("student-{}.onnx", q.precision))).unwrap();
        let qcard = model.card();
        assert_eq!(qcard.precision(), precision);
        assert_eq!(
            qcard.quantization.as_ref().unwrap().source_sha256,
            student.sha256()
        );
        assert!(
            qcard
                .escalation
                .chosen_by
                .contains("escalate at most 30.0%")
        );
        assert!(q.bytes < q.fp32_bytes, "{} is not smaller", q.precision);
        assert!(
            q.agreement_with_fp32 >= 0.95,
            "{}: {}",
            q.precision,
            q.agreement_with_fp32
        );
        let now = evaluate(&model, Some(&teacher), &test, None, &mut Silent).unwrap();
        let in_card = &qcard.metrics.as_ref().unwrap()["test"];
        assert_eq!(in_card["accuracy"].as_f64().unwrap(), now.accuracy);
        assert_eq!(
            in_card["escalation_rate"].as_f64().unwrap(),
            now.escalation_rate
        );
        assert_eq!(q.test.accuracy, now.accuracy);
    }
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("## Quantized students"), "{md}");

    // The same recipe and seed give the same weights, though the baseline trains on a
    // second thread (the output folder differs, and so does the recipe in the card).
    let mut again = recipe.clone();
    again.output.dir = dir.join("out-again");
    run_recipe(&again, &mut Silent).unwrap();
    for file in ["teacher.onnx", "student.onnx", "baseline.onnx"] {
        assert_eq!(
            weights(&out.join(file)),
            weights(&dir.join("out-again").join(file)),
            "{file}"
        );
    }

    // With the teacher given as an ONNX file, the first run computes its logits over the
    // training split and caches them; the second reuses them.
    let mut from_file = recipe.clone();
    from_file.teacher.onnx = Some(out.join("teacher.onnx"));
    from_file.output.dir = dir.join("out-from-file");
    let first = run_recipe(&from_file, &mut Silent).unwrap();
    let second = run_recipe(&from_file, &mut Silent).unwrap();
    assert!(!first.teacher_logits_cached && second.teacher_logits_cached);
    assert_eq!(
        first.student_test.teacher_accuracy,
        second.student_test.teacher_accuracy
    );
    assert!(
        !dir.join("out-from-file/teacher.onnx").exists(),
        "a given teacher is not rewritten"
    );
}

#[test]
fn bad_recipes_are_rejected_with_the_reason() {
    let dir = scratch("bad-recipes");
    let cases = [
        (RECIPE.replace("alpha = 0.7", "alpha = 1.7"), "alpha"),
        (
            RECIPE.replace("temperature = 4.0", "temperature = 0.0"),
            "temperature",
        ),
        (
            RECIPE.replace("source = \"fashion-mnist\"", "source = \"cifar\""),
            "cifar",
        ),
        (RECIPE.replace("seed = 3", "seed = 3\ncolour = 1"), "colour"),
        (
            RECIPE.replace("validation = 500", "validation = 0"),
            "validation",
        ),
        (
            RECIPE.replace("learning_rate = 0.004", "learning_rate = inf"),
            "student.train",
        ),
        (RECIPE.replace("convs = [4]", "convs = [0]"), "student.net"),
        (
            RECIPE.replace("hidden = 32", "hidden = 1000000000000"),
            "teacher.net",
        ),
        (RECIPE.replace("rate = 0.3", "rate = -1.0"), "rate"),
        (
            RECIPE.replace("samples = 100", "samples = 100\nmethod = \"kl\""),
            "quantize.method",
        ),
        (
            RECIPE.replace("\"int8\", \"fp16\"", "\"fp32\""),
            "quantize.precisions",
        ),
        (
            RECIPE.replace("samples = 100", "samples = 3"),
            "quantize.samples",
        ),
        (RECIPE.replace("mean = 0.2860", "mean = 1e30"), "data.mean"),
        (RECIPE.replace("seed = 3", "seed = \"three\""), "line 3"),
        (
            RECIPE.replace("[teacher.net]\nconvs = [8]\nhidden = 32", ""),
            "teacher",
        ),
    ];
    for (i, (text, needle)) in cases.iter().enumerate() {
        let path = dir.join(format!("r{i}.toml"));
        std::fs::write(&path, text).unwrap();
        let err = Recipe::load(&path).unwrap_err().to_string();
        assert!(
            err.contains(needle) && err.contains(&format!("r{i}.toml")),
            "{needle}: {err}"
        );
    }
    assert!(Recipe::load(&dir.join("absent.toml")).is_err());
}

/// The initializers (names and raw bytes) of an ONNX file.
fn weights(path: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    use prost::Message;
    let bytes = std::fs::read(path).unwrap();
    let model = tract_onnx::pb::ModelProto::decode(bytes.as_slice()).unwrap();
    let graph = model.graph.unwrap();
    assert!(!graph.initializer.is_empty());
    graph
        .initializer
        .into_iter()
        .map(|t| (t.name, t.raw_data))
        .collect()
}
