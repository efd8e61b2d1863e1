//! The shipped Fashion-MNIST models, measured afresh on the 10,000 test images through
//! the runtime: they meet the product's goals, and their model cards state exactly what
//! is measured here. Needs Debian's `dataset-fashion-mnist` (installed by the test command).

mod common;

use common::models_dir;
use student_distill::{Dataset, Silent, evaluate};
use student_runtime::{OpenOptions, StudentModel};

fn open(name: &str) -> StudentModel {
    StudentModel::open_with(models_dir().join(name), &OpenOptions { batch: 256 }).unwrap()
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
