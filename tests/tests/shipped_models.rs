//! The shipped Fashion-MNIST models, measured afresh on the 10,000 test images through
//! the runtime: they meet the product's goals, and their model cards state exactly what
//! is measured here. Needs Debian's `dataset-fashion-mnist` (installed by the test command).

mod common;

use common::models_dir;
use student_distill::{Dataset, Silent, evaluate};
use student_runtime::{OpenOptions, Precision, StudentModel};

fn open(name: &str) -> StudentModel {
    StudentModel::open_with(models_dir().join(name), &OpenOptions::with_batch(256)).unwrap()
}

#[test]
fn shipped_models_meet_the_goals_and_their_cards_tell_the_truth() {
    let test = Dataset::from_name("fashion-mnist:test").unwrap();
    assert_eq!(test.len(), 10_000);
    let (student, teacher, baseline) = (
        open("student.onnx"),
        open("teacher.onnx"),
        open("baseline.onnx"),
    );
    let s = evaluate(&student, Some(&teacher), &test, None, &mut Silent).unwrap();
    let b = evaluate(&baseline, Some(&teacher), &test, None, &mut Silent).unwrap();
    let teacher_accuracy = s.teacher_accuracy.unwrap();
    eprintln!(
        "teacher {teacher_accuracy:.4}, student {:.4}, baseline {:.4}, escalation {:.4}, \
         cascade {:.4}, params {} vs {}",
        s.accuracy,
        b.accuracy,
        s.escalation_rate,
        s.cascade_accuracy,
        s.params,
        teacher.params()
    );

    // Distillation beats the same architecture trained on hard labels only.
    assert!(
        s.accuracy > b.accuracy,
        "student {} <= baseline {}",
        s.accuracy,
        b.accuracy
    );
    // At least 95% of the teacher's accuracy with at least 10x fewer parameters.
    assert!(s.accuracy >= 0.95 * teacher_accuracy);
    assert!(teacher.params() >= 10 * student.params());
    // The cascade escalates at most 20% and stays within half a point of the teacher.
    assert!(
        s.escalation_rate <= 0.20,
        "escalation {}",
        s.escalation_rate
    );
    assert!(s.cascade_accuracy >= teacher_accuracy - 0.005);

    // The card's test metrics are exactly what the runtime measures now.
    let card = student
        .card()
        .metrics
        .as_ref()
        .expect("student card has metrics");
    let measured = serde_json::to_value(&s).unwrap();
    for key in [
        "accuracy",
        "escalation_rate",
        "cascade_accuracy",
        "agreement",
        "teacher_accuracy",
    ] {
        assert_eq!(card["test"][key], measured[key], "{key}");
    }
    assert_eq!(card["baseline_test_accuracy"].as_f64(), Some(b.accuracy));
    // The card names the shipped teacher file.
    assert_eq!(
        student.card().teacher.as_ref().unwrap().sha256,
        teacher.sha256()
    );
}

/// Top-1 agreement of two logit sets of `classes` columns.
fn agreement(a: &[f32], b: &[f32], classes: usize) -> f64 {
    let top = |row: &[f32]| {
        row.iter()
            .enumerate()
            .max_by(|x, y| x.1.total_cmp(y.1))
            .map_or(0, |(i, _)| i)
    };
    let same = a
        .chunks_exact(classes)
        .zip(b.chunks_exact(classes))
        .filter(|(x, y)| top(x) == top(y))
        .count();
    same as f64 / (a.len() / classes) as f64
}

#[test]
fn shipped_quantized_students_meet_the_goals_and_their_cards_tell_the_truth() {
    let test = Dataset::from_name("fashion-mnist:test").unwrap();
    let (student, teacher) = (open("student.onnx"), open("teacher.onnx"));
    let indices: Vec<usize> = (0..test.len()).collect();
    let input = test.tensor(student.input_spec(), &indices).unwrap();
    let fp32_logits = student.logits_batch(&input).unwrap();
    let fp32 = evaluate(&student, None, &test, None, &mut Silent).unwrap();
    // Issue goals: int8 at most 30% of the fp32 file and at most 0.5 points below it;
    // fp16 at most 0.1 points below; both agree with fp32 on at least 99% of test images.
    for (file, precision, max_size, max_drop) in [
        ("student-int8.onnx", Precision::Int8, 0.30, 0.005),
        ("student-fp16.onnx", Precision::Fp16, 0.55, 0.001),
    ] {
        let q = open(file);
        assert_eq!(q.card().precision(), precision, "{file}");
        assert_eq!(
            q.card().quantization.as_ref().unwrap().source_sha256,
            student.sha256(),
            "{file} names the shipped student as its source"
        );
        // Scales and zero points are not counted as parameters.
        assert_eq!(q.params(), student.params(), "{file}");
        let size = q.file_size() as f64 / student.file_size() as f64;
        let r = evaluate(&q, Some(&teacher), &test, None, &mut Silent).unwrap();
        let a = agreement(&q.logits_batch(&input).unwrap(), &fp32_logits, q.classes());
        eprintln!(
            "{file}: size {:.1}% of fp32, accuracy {:.4} (fp32 {:.4}), agreement {a:.4}, \
             escalation {:.4}, cascade {:.4}",
            size * 100.0,
            r.accuracy,
            fp32.accuracy,
            r.escalation_rate,
            r.cascade_accuracy
        );
        assert!(size <= max_size, "{file}: {:.1}% of fp32", size * 100.0);
        assert!(
            r.accuracy >= fp32.accuracy - max_drop,
            "{file}: {} vs fp32 {}",
            r.accuracy,
            fp32.accuracy
        );
        assert!(a >= 0.99, "{file}: agreement {a}");
        // Its cascade still meets the cascade goals.
        assert!(
            r.escalation_rate <= 0.20 && r.cascade_accuracy >= r.teacher_accuracy.unwrap() - 0.005
        );
        // The card's test figures are what the runtime measures now.
        let card = q.card().metrics.as_ref().expect("card has metrics");
        let measured = serde_json::to_value(&r).unwrap();
        for key in [
            "accuracy",
            "escalation_rate",
            "cascade_accuracy",
            "agreement",
        ] {
            assert_eq!(card["test"][key], measured[key], "{file}: {key}");
        }
        assert_eq!(card["test_agreement_with_fp32"].as_f64(), Some(a), "{file}");
    }
}
