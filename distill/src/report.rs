//! The distillation report: what a run produced and measured, as JSON and Markdown.

use std::path::PathBuf;

use serde::Serialize;
use student_runtime::CalibrationInfo;

use crate::calibrate::ThresholdChoice;
use crate::eval::EvalReport;

/// What a distillation run produced and measured. Written as `report.json`.
#[derive(Debug, Clone, Serialize)]
pub struct DistillReport {
    /// The recipe's name.
    pub name: String,
    /// Files written.
    pub files: Vec<PathBuf>,
    /// Parameters of teacher, student and baseline.
    pub params: Params,
    /// Student (fp32) on the test split, with the cascade to the teacher.
    pub student_test: EvalReport,
    /// The hard-label baseline (same architecture) on the test split, at its own fitted
    /// temperature and the student's threshold rule.
    pub baseline_test: EvalReport,
    /// The fitted temperature and calibration error before and after, on validation.
    pub calibration: CalibrationInfo,
    /// The threshold choice on the validation split.
    pub threshold: ThresholdChoice,
    /// Validation accuracy after each epoch, per model trained here.
    pub history: Vec<(String, Vec<f64>)>,
    /// Quantized copies of the student (the recipe's `[quantize]` section), on test.
    pub quantized: Vec<QuantizedReport>,
    /// Whether teacher logits came from the cache.
    pub teacher_logits_cached: bool,
    /// Wall-clock seconds per stage.
    pub seconds: Vec<(String, f64)>,
}

/// A quantized copy of the student, measured on the test split.
#[derive(Debug, Clone, Serialize)]
pub struct QuantizedReport {
    /// `int8` or `fp16`.
    pub precision: String,
    /// The file written.
    pub file: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
    /// The fp32 student's size in bytes.
    pub fp32_bytes: u64,
    /// What the quantizer did.
    pub method: String,
    /// Fraction of test images where it gives the fp32 student's class.
    pub agreement_with_fp32: f64,
    /// Accuracy and cascade on test, at its own re-fitted temperature and threshold.
    pub test: EvalReport,
}

/// Parameter counts.
#[derive(Debug, Clone, Serialize)]
pub struct Params {
    /// Teacher parameters.
    pub teacher: u64,
    /// Student parameters.
    pub student: u64,
    /// How many times smaller the student is.
    pub compression: f64,
}

/// The report as Markdown: a summary table, the cascade, per-class gaps, stage times.
pub(crate) fn markdown(report: &DistillReport, classes: &[String]) -> String {
    let s = &report.student_test;
    let b = &report.baseline_test;
    let pct = |v: f64| format!("{:.2}%", v * 100.0);
    let opt = |v: Option<f64>| v.map(pct).unwrap_or_else(|| "n/a".to_string());
    let mut md = format!(
        "# {} distillation report\n\n\
         Measured on {} ({} images) by running the exported ONNX files through the runtime.\n\n\
         | model | parameters | test accuracy |\n| --- | ---: | ---: |\n\
         | teacher | {} | {} |\n| student (distilled) | {} | {} |\n| baseline (hard labels, same architecture) | {} | {} |\n\n\
         - compression: {:.1}x fewer parameters; student reaches {:.1}% of the teacher's accuracy\n\
         - distillation gain over the baseline: {:+.2} points\n\
         - agreement with the teacher: {}\n\
         - temperature {:.3}; ECE on validation {} -> {}\n\
         - threshold {:.4} on {} ({}); on validation: escalation {}, accepted accuracy {}\n\
         - test, cascade (student, escalating to the teacher): escalation {}, accepted accuracy {}, cascade accuracy {} (teacher {})\n\n\
         ## Per-class test accuracy\n\n| class | teacher | student | gap |\n| --- | ---: | ---: | ---: |\n",
        report.name,
        s.data,
        s.samples,
        report.params.teacher,
        opt(s.teacher_accuracy),
        report.params.student,
        pct(s.accuracy),
        b.params,
        pct(b.accuracy),
        report.params.compression,
        s.accuracy / s.teacher_accuracy.unwrap_or(f64::NAN) * 100.0,
        (s.accuracy - b.accuracy) * 100.0,
        opt(s.agreement),
        report.calibration.temperature,
        opt(report.calibration.ece_before),
        opt(report.calibration.ece_after),
        report.threshold.threshold,
        "max probability",
        report.threshold.target,
        pct(report.threshold.escalation_rate),
        pct(report.threshold.accepted_accuracy),
        pct(s.escalation_rate),
        opt(s.accepted_accuracy),
        pct(s.cascade_accuracy),
        opt(s.teacher_accuracy),
    );
    if let Some(teacher) = &s.teacher_per_class_accuracy {
        for (i, name) in classes.iter().enumerate() {
            // A class with no test image has no accuracy, hence no gap.
            let (t, a) = (
                teacher.get(i).copied().flatten(),
                s.per_class_accuracy.get(i).copied().flatten(),
            );
            let gap = t.zip(a).map_or("n/a".to_string(), |(t, a)| {
                format!("{:+.2}", (a - t) * 100.0)
            });
            md.push_str(&format!("| {name} | {} | {} | {gap} |\n", opt(t), opt(a)));
        }
    }
    if !report.quantized.is_empty() {
        md.push_str(
            "\n## Quantized students\n\nEach re-calibrated (temperature, threshold) on the \
             validation split; measured on test.\n\n\
             | precision | file size | test accuracy | vs fp32 | agreement with fp32 | escalation | cascade accuracy |\n\
             | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n",
        );
        for q in &report.quantized {
            md.push_str(&format!(
                "| {} | {} bytes ({:.1}% of fp32) | {} | {:+.2} points | {} | {} | {} |\n",
                q.precision,
                q.bytes,
                q.bytes as f64 / q.fp32_bytes.max(1) as f64 * 100.0,
                pct(q.test.accuracy),
                (q.test.accuracy - s.accuracy) * 100.0,
                pct(q.agreement_with_fp32),
                pct(q.test.escalation_rate),
                pct(q.test.cascade_accuracy),
            ));
        }
        for q in &report.quantized {
            md.push_str(&format!("\n- {}: {}\n", q.precision, q.method));
        }
    }
    md.push_str("\n## Stages\n\n| stage | seconds |\n| --- | ---: |\n");
    for (stage, secs) in &report.seconds {
        md.push_str(&format!("| {stage} | {secs:.1} |\n"));
    }
    md
}
