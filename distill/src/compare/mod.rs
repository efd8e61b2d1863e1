//! Comparison and audit of models against their teacher on one labelled data set.
//!
//! Every figure comes from running the ONNX files through the runtime, as an app would:
//! accuracy, agreement with the teacher, how far the calibrated probabilities are from
//! the teacher's, calibration error, size, batch-1 latency, per-class gaps (the bias
//! audit), accuracy under corruptions, and the cascade to the teacher at the card's
//! threshold. [`write_comparison_report`] turns the result into Markdown, JSON and SVG
//! plots.

mod curves;
mod latency;
mod report;

use serde::Serialize;
use student_runtime::{StudentModel, calibrated_probabilities};

use crate::calibrate::{ECE_BINS, correct, expected_calibration_error};
use crate::corrupt::Corruption;
use crate::dataset::Dataset;
use crate::error::Error;
use crate::eval::{check_labels, evaluate_logits, logits};
use crate::plots::{CascadeCurve, Curve, Reliability};
use crate::progress::Progress;
use curves::{cascade_curve, confidence_order, reliability_bins, risk_coverage};
use latency::latency;

pub use report::{
    CASCADE_SVG, PER_CLASS_SVG, RELIABILITY_SVG, REPORT_FILES, RISK_COVERAGE_SVG, ReportFolder,
    prepare_report_dir, write_comparison_report,
};

/// The name of the teacher's row in a comparison; no compared model may take it.
pub const TEACHER_NAME: &str = "teacher";

/// The longest name a compared model may carry, in characters.
pub const MAX_MODEL_NAME_LEN: usize = 64;

/// The names [`is_valid_model_name`] accepts, in words, for error messages.
pub const MODEL_NAME_RULE: &str =
    "1 to 64 characters among ASCII letters, digits, `-`, `_`, `.` and `+`";

/// Whether `name` may name a model in a comparison: 1 to [`MAX_MODEL_NAME_LEN`] ASCII
/// letters, digits, `-`, `_`, `.` and `+`. Names appear in Markdown tables, SVG legends and
/// JSON; this set reads the same in all of them and can break none.
pub fn is_valid_model_name(name: &str) -> bool {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '+');
    (1..=MAX_MODEL_NAME_LEN).contains(&name.len()) && name.chars().all(allowed)
}

/// What a comparison measures besides the clean data.
#[derive(Debug, Clone, PartialEq)]
pub struct CompareOptions {
    /// Corruptions to measure every model under, in report order.
    pub corruptions: Vec<Corruption>,
    /// Timed batch-1 calls per model (at least one is made).
    pub latency_calls: usize,
    /// Untimed calls per model before timing starts.
    pub warmup_calls: usize,
}

impl Default for CompareOptions {
    /// [`Corruption::standard`], 300 timed calls per model after 20 warm-up calls.
    fn default() -> Self {
        CompareOptions {
            corruptions: Corruption::standard(),
            latency_calls: 300,
            warmup_calls: 20,
        }
    }
}

/// A model to compare, with the name it carries in the report.
#[derive(Debug, Clone, Copy)]
pub struct NamedModel<'a> {
    /// Unique within a comparison, not [`TEACHER_NAME`], and valid by
    /// [`is_valid_model_name`].
    pub name: &'a str,
    /// The opened model.
    pub model: &'a StudentModel,
}

/// Models measured against a teacher on one data set. Written as `report.json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    /// The data set's name.
    pub data: String,
    /// Images measured.
    pub samples: usize,
    /// Class names, in label order.
    pub classes: Vec<String>,
    /// The teacher measured like the others (agreement 1, divergence 0, no cascade).
    pub teacher: ModelFigures,
    /// The compared models, in the order given.
    pub models: Vec<ModelFigures>,
    /// The corruptions measured, as named in each model's `robustness`.
    pub corruptions: Vec<String>,
    /// How latency was measured, in words.
    pub latency_method: String,
    /// The data behind the plots.
    pub curves: Curves,
}

/// One model's figures. Fractions are in `[0, 1]`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelFigures {
    /// The name in the report.
    pub name: String,
    /// Where the model was opened from.
    pub file: String,
    /// SHA-256 of the file, hex.
    pub sha256: String,
    /// File size in bytes.
    pub file_size: u64,
    /// Parameter count.
    pub params: u64,
    /// Top-1 accuracy.
    pub accuracy: f64,
    /// Fraction of inputs where the model's class is the teacher's.
    pub agreement: f64,
    /// Mean KL(teacher || model) in nats, over calibrated probabilities (each model at its
    /// card's temperature).
    pub kl_from_teacher: f64,
    /// The card's temperature, used for every probability here.
    pub temperature: f32,
    /// Expected calibration error of the max probability, [`ECE_BINS`] bins.
    pub ece: f64,
    /// Area under the risk-coverage curve: the mean error rate among accepted inputs over
    /// all coverages, accepting the highest card scores first. Lower is better.
    pub aurc: f64,
    /// Batch-1 latency.
    pub latency: Latency,
    /// Accuracy per class, in label order, against the teacher's.
    pub per_class: Vec<ClassFigures>,
    /// Mean over the classes that have images of the teacher's accuracy minus the model's:
    /// positive where the model loses on average, negative where it gains.
    pub mean_class_drop: f64,
    /// The bias audit: classes where the model is below the teacher and loses more than
    /// `mean_class_drop`, the largest loss first. Classes without images are left out.
    pub worst_classes: Vec<ClassFigures>,
    /// Accuracy under each corruption.
    pub robustness: Vec<Robustness>,
    /// The cascade to the teacher at the card's threshold; `None` for the teacher's row.
    pub cascade: Option<CascadeFigures>,
}

/// Batch-1 latency of single-input `logits` calls on prepared inputs, in microseconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Latency {
    /// Timed calls.
    pub calls: usize,
    /// Median.
    pub median_us: f64,
    /// 90th percentile (nearest rank).
    pub p90_us: f64,
}

/// A model's accuracy on one class, beside the teacher's. A class with no image in the
/// data has no accuracy: its figures are `None` (JSON `null`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassFigures {
    /// The class name.
    pub class: String,
    /// The model's accuracy on the class.
    pub accuracy: Option<f64>,
    /// The teacher's accuracy on the class.
    pub teacher_accuracy: Option<f64>,
    /// `accuracy - teacher_accuracy`: negative where the model loses.
    pub delta: Option<f64>,
}

/// Accuracy on a corrupted copy of the data.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Robustness {
    /// The corruption, for example `noise(sigma=25)`.
    pub corruption: String,
    /// Accuracy on the corrupted data.
    pub accuracy: f64,
    /// Clean accuracy minus corrupted accuracy.
    pub drop: f64,
}

/// The cascade at the card's threshold: inputs scoring below it take the teacher's answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CascadeFigures {
    /// The card's threshold.
    pub threshold: f32,
    /// The card's score (`max_probability`, `margin` or `entropy`).
    pub score: String,
    /// Fraction of inputs escalated.
    pub escalation_rate: f64,
    /// Accuracy of the inputs kept; `None` when all escalate.
    pub accepted_accuracy: Option<f64>,
    /// Accuracy of the cascade.
    pub cascade_accuracy: f64,
}

/// The data behind the report's plots; the teacher comes first where it is drawn.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Curves {
    /// Reliability bins per model ([`ECE_BINS`] bins).
    pub reliability: Vec<Reliability>,
    /// `(coverage, error rate among accepted)` per model.
    pub risk_coverage: Vec<Curve>,
    /// `(escalation rate, cascade accuracy)` per compared model.
    pub cascade: Vec<CascadeCurve>,
}

/// Measures `models` against `teacher` on `data` (a labelled split the models did not
/// train on, typically the test split).
///
/// Latency is measured in this process, in one pass that interleaves the models call by
/// call, so that every model sees the same machine load; it is a reported figure, not a
/// benchmark.
///
/// # Errors
/// [`Error::Compare`] when a model's name is not valid ([`is_valid_model_name`]), repeated
/// or [`TEACHER_NAME`], or its
/// labels (names and order) or input size differ from the teacher's; [`Error::Data`] when
/// the data does not fit the models or is empty; [`Error::Corruption`] for a corruption
/// out of range; runtime errors from running the models.
pub fn compare_models(
    teacher: &StudentModel,
    models: &[NamedModel<'_>],
    data: &Dataset,
    options: &CompareOptions,
    progress: &mut dyn Progress,
) -> Result<Comparison, Error> {
    check_models(teacher, models)?;
    for model in std::iter::once(teacher).chain(models.iter().map(|m| m.model)) {
        check_labels(model, data)?;
    }
    if data.is_empty() {
        return Err(Error::Data(format!("{} holds no image", data.name)));
    }
    let all: Vec<NamedModel<'_>> = std::iter::once(NamedModel {
        name: TEACHER_NAME,
        model: teacher,
    })
    .chain(models.iter().copied())
    .collect();
    let clean: Vec<Vec<f32>> = all
        .iter()
        .map(|m| logits(m.model, data, progress))
        .collect::<Result<_, _>>()?;
    let mut robustness = vec![Vec::new(); all.len()];
    for corruption in &options.corruptions {
        let corrupted = corruption.apply(data)?;
        for (k, m) in all.iter().enumerate() {
            let l = logits(m.model, &corrupted, progress)?;
            robustness[k].push((corruption.to_string(), accuracy(&l, &data.labels)));
        }
    }
    let latencies = latency(&all, data, options, progress)?;

    let teacher_logits = &clean[0];
    let classes = teacher.classes();
    let teacher_correct = correct(teacher_logits, &data.labels, classes);
    let mut figures = Vec::with_capacity(all.len());
    let mut curves = Curves {
        reliability: Vec::new(),
        risk_coverage: Vec::new(),
        cascade: Vec::new(),
    };
    for (k, m) in all.iter().enumerate() {
        let l = &clean[k];
        let card = m.model.card();
        let temperature = card.calibration.temperature;
        let eval = evaluate_logits(m.model, Some(teacher), data, l, Some(teacher_logits), None)?;
        let teacher_per_class = eval
            .teacher_per_class_accuracy
            .clone()
            .unwrap_or_else(|| eval.per_class_accuracy.clone());
        let per_class: Vec<ClassFigures> = data
            .classes
            .iter()
            .zip(eval.per_class_accuracy.iter().zip(&teacher_per_class))
            .map(|(class, (&acc, &t))| ClassFigures {
                class: class.clone(),
                accuracy: acc,
                teacher_accuracy: t,
                delta: acc.zip(t).map(|(a, t)| a - t),
            })
            .collect();
        let (mean_class_drop, worst_classes) = bias_audit(&per_class);
        let order = confidence_order(l, classes, temperature, card);
        let model_correct = correct(l, &data.labels, classes);
        let (risk, aurc) = risk_coverage(&order, &model_correct);
        curves.risk_coverage.push(Curve {
            name: m.name.to_string(),
            points: risk,
        });
        curves.reliability.push(Reliability {
            name: m.name.to_string(),
            bins: reliability_bins(l, &data.labels, classes, temperature),
        });
        let cascade = (k > 0).then(|| CascadeFigures {
            threshold: eval.threshold,
            score: card.escalation.score.name().to_string(),
            escalation_rate: eval.escalation_rate,
            accepted_accuracy: eval.accepted_accuracy,
            cascade_accuracy: eval.cascade_accuracy,
        });
        if let Some(c) = &cascade {
            curves.cascade.push(CascadeCurve {
                name: m.name.to_string(),
                points: cascade_curve(&order, &model_correct, &teacher_correct),
                threshold: c.threshold,
                at_threshold: (c.escalation_rate, c.cascade_accuracy),
            });
        }
        figures.push(ModelFigures {
            name: m.name.to_string(),
            file: m.model.origin().to_string(),
            sha256: m.model.sha256().to_string(),
            file_size: m.model.file_size(),
            params: m.model.params(),
            accuracy: eval.accuracy,
            agreement: eval.agreement.unwrap_or(1.0),
            kl_from_teacher: mean_kl(
                teacher_logits,
                teacher.card().calibration.temperature,
                l,
                temperature,
                classes,
            ),
            temperature,
            ece: expected_calibration_error(l, &data.labels, classes, temperature, ECE_BINS),
            aurc,
            latency: latencies[k].clone(),
            per_class,
            mean_class_drop,
            worst_classes,
            robustness: robustness[k]
                .iter()
                .map(|(name, acc)| Robustness {
                    corruption: name.clone(),
                    accuracy: *acc,
                    drop: eval.accuracy - acc,
                })
                .collect(),
            cascade,
        });
    }
    let mut figures = figures.into_iter();
    let teacher_figures = figures
        .next()
        .ok_or_else(|| Error::Data("the comparison lost the teacher's figures".to_string()))?;
    Ok(Comparison {
        data: data.name.clone(),
        samples: data.len(),
        classes: data.classes.clone(),
        teacher: teacher_figures,
        models: figures.collect(),
        corruptions: options.corruptions.iter().map(|c| c.to_string()).collect(),
        latency_method: format!(
            "batch-1 `logits` calls on inputs prepared beforehand, {} timed calls per model \
             after {} warm-up calls, the models interleaved call by call in one process",
            options.latency_calls.max(1),
            options.warmup_calls
        ),
        curves,
    })
}

/// Names valid, unique and not the teacher's; labels and input size the teacher's.
fn check_models(teacher: &StudentModel, models: &[NamedModel<'_>]) -> Result<(), Error> {
    let tc = teacher.card();
    for (i, m) in models.iter().enumerate() {
        let refuse = |reason: String| {
            Err(Error::Compare {
                // Escaped: a refused name may hold a line break or a control character.
                model: format!("`{}` ({})", m.name.escape_debug(), m.model.origin()),
                reason,
            })
        };
        if m.name.trim().is_empty() {
            return refuse("its name is empty; give it one with NAME=MODEL".to_string());
        }
        if !is_valid_model_name(m.name) {
            return refuse(format!(
                "its name is not allowed; expected {MODEL_NAME_RULE}; give it one with \
                 NAME=MODEL"
            ));
        }
        if m.name == TEACHER_NAME {
            return refuse(format!(
                "`{TEACHER_NAME}` names the teacher's own row; give this model another name \
                 with NAME=MODEL"
            ));
        }
        if models[..i].iter().any(|o| o.name == m.name) {
            return refuse(format!(
                "another model is named `{}`; give each a name of its own with NAME=MODEL",
                m.name
            ));
        }
        let mc = m.model.card();
        if mc.labels != tc.labels {
            return refuse(format!(
                "its labels [{}] differ from the teacher's [{}]; expected the same classes in \
                 the same order",
                mc.labels.join(", "),
                tc.labels.join(", ")
            ));
        }
        let (a, b) = (&mc.input, &tc.input);
        if [a.channels, a.height, a.width] != [b.channels, b.height, b.width] {
            return refuse(format!(
                "it takes {}x{}x{} inputs, the teacher {}x{}x{}; expected the teacher's size",
                a.channels, a.height, a.width, b.channels, b.height, b.width
            ));
        }
    }
    Ok(())
}

fn accuracy(logits: &[f32], labels: &[u8]) -> f64 {
    let classes = logits.len() / labels.len().max(1);
    if classes == 0 {
        return 0.0;
    }
    let right = correct(logits, labels, classes)
        .iter()
        .filter(|&&c| c)
        .count();
    right as f64 / labels.len() as f64
}

/// Mean over the classes with images of the teacher's accuracy minus the model's, and the
/// classes where the model is below the teacher and loses more than that mean, the largest
/// loss first. Where the model gains on average, every class it loses on is named.
fn bias_audit(per_class: &[ClassFigures]) -> (f64, Vec<ClassFigures>) {
    // A hair of tolerance: a class at the teacher's accuracy or losing exactly the mean is
    // not singled out for floating-point noise.
    const NOISE: f64 = 1e-12;
    let deltas: Vec<f64> = per_class.iter().filter_map(|c| c.delta).collect();
    let mean = -deltas.iter().sum::<f64>() / deltas.len().max(1) as f64;
    // No gap at all is 0, not -0, in report.json.
    let mean = if mean == 0.0 { 0.0 } else { mean };
    let loses = |d: f64| d < -NOISE && -d > mean + NOISE;
    let mut worst: Vec<ClassFigures> = per_class
        .iter()
        .filter(|c| c.delta.is_some_and(loses))
        .cloned()
        .collect();
    worst.sort_by(|a, b| {
        let (a, b) = (a.delta.unwrap_or(0.0), b.delta.unwrap_or(0.0));
        a.total_cmp(&b)
    });
    (mean, worst)
}

/// Mean KL(p || q) in nats over rows, `p` and `q` the calibrated probabilities of the
/// teacher's and the model's logits. `q` is floored at the smallest positive `f32` so that
/// a class the model rules out entirely gives a large but finite term.
fn mean_kl(
    teacher: &[f32],
    teacher_temperature: f32,
    model: &[f32],
    temperature: f32,
    classes: usize,
) -> f64 {
    let rows = teacher.len() / classes.max(1);
    let total: f64 = teacher
        .chunks_exact(classes)
        .zip(model.chunks_exact(classes))
        .map(|(t, m)| {
            let p = calibrated_probabilities(t, teacher_temperature);
            let q = calibrated_probabilities(m, temperature);
            p.iter()
                .zip(&q)
                .filter(|(p, _)| **p > 0.0)
                .map(|(&p, &q)| p as f64 * (p as f64 / q.max(f32::MIN_POSITIVE) as f64).ln())
                .sum::<f64>()
        })
        .sum();
    total / rows.max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(name: &str, accuracy: f64, teacher: f64) -> ClassFigures {
        ClassFigures {
            class: name.into(),
            accuracy: Some(accuracy),
            teacher_accuracy: Some(teacher),
            delta: Some(accuracy - teacher),
        }
    }

    /// A class with no image in the data.
    fn empty_class(name: &str) -> ClassFigures {
        ClassFigures {
            class: name.into(),
            accuracy: None,
            teacher_accuracy: None,
            delta: None,
        }
    }

    #[test]
    fn bias_audit_names_classes_losing_more_than_the_mean() {
        let per_class = [
            class("a", 0.90, 0.90),
            class("b", 0.80, 0.90),
            class("c", 0.85, 0.90),
            class("d", 0.95, 0.95),
        ];
        let (mean, worst) = bias_audit(&per_class);
        assert!((mean - 0.0375).abs() < 1e-12);
        let names: Vec<&str> = worst.iter().map(|c| c.class.as_str()).collect();
        assert_eq!(names, ["b", "c"]);
        let (mean, worst) = bias_audit(&[class("a", 0.9, 0.9), class("b", 0.5, 0.5)]);
        assert_eq!(mean, 0.0);
        assert!(mean.is_sign_positive(), "no gap is 0, not -0");
        assert!(worst.is_empty());
    }

    #[test]
    fn bias_audit_names_only_classes_below_the_teacher() {
        // A model that gains on average: the classes at the teacher's accuracy lose more
        // than the mean change but lose nothing, so only `b` is named.
        let per_class = [
            class("a", 0.90, 0.90),
            class("b", 0.85, 0.90),
            class("c", 1.00, 0.80),
            class("d", 0.70, 0.70),
        ];
        let (mean, worst) = bias_audit(&per_class);
        assert!((mean + 0.0375).abs() < 1e-12, "{mean}");
        let names: Vec<&str> = worst.iter().map(|c| c.class.as_str()).collect();
        assert_eq!(names, ["b"]);
    }

    #[test]
    fn bias_audit_leaves_out_classes_without_images() {
        let per_class = [
            class("a", 0.80, 0.90),
            empty_class("b"),
            class("c", 0.90, 0.90),
            empty_class("d"),
        ];
        let (mean, worst) = bias_audit(&per_class);
        // Over `a` and `c` only: (0.10 + 0) / 2.
        assert!((mean - 0.05).abs() < 1e-12, "{mean}");
        let names: Vec<&str> = worst.iter().map(|c| c.class.as_str()).collect();
        assert_eq!(names, ["a"]);
        let (mean, worst) = bias_audit(&[empty_class("a")]);
        assert_eq!((mean, worst.len()), (0.0, 0));
    }

    #[test]
    fn model_names_are_kept_to_a_safe_set() {
        for good in [
            "student",
            "int8",
            "student-fp16",
            "v1.2+qat",
            "a_b",
            &"x".repeat(64),
        ] {
            assert!(is_valid_model_name(good), "{good}");
        }
        let long = "x".repeat(65);
        for bad in [
            "",
            "a|b",
            "a<script>",
            "two\nlines",
            "x/y",
            "a b",
            "é",
            "`x`",
            &long,
        ] {
            assert!(!is_valid_model_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn kl_is_zero_for_the_same_logits_and_positive_otherwise() {
        let a = [2.0f32, 0.0, -1.0, 0.5, 0.5, 3.0];
        assert!(mean_kl(&a, 1.0, &a, 1.0, 3).abs() < 1e-9);
        let b = [0.0f32, 2.0, -1.0, 3.0, 0.5, 0.5];
        assert!(mean_kl(&a, 1.0, &b, 1.0, 3) > 0.1);
        // Ruling a class out entirely stays finite.
        let c = [1e4f32, -1e4, -1e4, 1e4, -1e4, -1e4];
        assert!(mean_kl(&a, 1.0, &c, 1.0, 3).is_finite());
    }
}
