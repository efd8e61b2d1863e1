//! One function per subcommand.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde_json::json;
use student_distill::{Dataset, Recipe, evaluate, output_files, run_recipe, same_file};
use student_runtime::{
    CascadeHook, ClassifyOptions, Decision, EscalationHook, EscalationOutcome, OpenOptions,
    Prediction, StudentModel,
};

use crate::inputs::read_images;

use crate::progress::Bars;

/// The shipped Fashion-MNIST models: `./models/fashion-mnist` when run from a checkout,
/// else the folder beside this crate's sources.
fn default_models_dir() -> PathBuf {
    let local = PathBuf::from("models/fashion-mnist");
    if local.join("student.onnx").exists() {
        return local;
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/fashion-mnist")
}

pub fn demo(models: Option<PathBuf>) -> Result<()> {
    let dir = models.unwrap_or_else(default_models_dir);
    let student = StudentModel::open(dir.join("student.onnx"))?;
    let teacher = StudentModel::open(dir.join("teacher.onnx"))?;
    // The library names the option apps set (`escalate-to`); demo has none.
    let hook = CascadeHook::new(teacher, &student).map_err(|e| match e {
        student_runtime::Error::InvalidOption { reason, .. } => anyhow::anyhow!(
            "{} cannot take {}'s escalations: {reason}",
            dir.join("teacher.onnx").display(),
            dir.join("student.onnx").display()
        ),
        other => other.into(),
    })?;
    let samples_dir = dir.join("samples");
    let mut samples: Vec<PathBuf> = std::fs::read_dir(&samples_dir)
        .with_context(|| format!("cannot list {}", samples_dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .collect();
    samples.sort();
    if samples.is_empty() {
        bail!("no PNG samples in {}", samples_dir.display());
    }
    let card = student.card();
    out!(
        "student {} ({} parameters), threshold {:.3} on {}; escalates to {} ({} parameters)",
        card.name,
        student.params(),
        card.escalation.threshold,
        card.escalation.score.name(),
        hook.model().card().name,
        hook.model().params()
    );
    out!(
        "{:<26} {:<12} {:<20} {:<10} {:<12}",
        "sample",
        "true",
        "student (conf)",
        "decision",
        "final"
    );
    let (mut student_right, mut final_right, mut escalated) = (0, 0, 0);
    let (mut total, mut labelled) = (0usize, 0usize);
    for path in &samples {
        // A class the model does not have is no truth to score against.
        let truth = true_label(path).filter(|&t| t < card.labels.len());
        let spec = student.input_spec();
        for image in read_images(path, (spec.width, spec.height), spec.channels == 3)? {
            let input = image.tensor(spec)?;
            let p = student.classify(&input, &ClassifyOptions::default(), Some(&hook))?;
            let file = path
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default();
            let truth_label = truth.and_then(|t| card.labels.get(t).cloned());
            total += 1;
            labelled += usize::from(truth.is_some());
            student_right += usize::from(truth == Some(p.index));
            final_right += usize::from(truth == Some(p.final_index));
            escalated += usize::from(p.escalated());
            out!(
                "{:<26} {:<12} {:<20} {:<10} {:<12}",
                file,
                truth_label.as_deref().unwrap_or("?"),
                format!("{} ({:.2})", p.label, p.confidence),
                if p.escalated() {
                    "escalated"
                } else {
                    "accepted"
                },
                p.final_label
            );
        }
    }
    let unscored = if labelled < total {
        format!(
            " ({} of {total} images have no class in their file name and are not scored)",
            total - labelled
        )
    } else {
        String::new()
    };
    out!(
        "\nstudent alone: {student_right}/{labelled} correct; escalated {escalated}/{total} \
         ({:.0}%) to the teacher; final answers: {final_right}/{labelled} correct{unscored}",
        escalated as f64 / total.max(1) as f64 * 100.0
    );
    Ok(())
}

/// Sample files are named `test-NNNNN-label-K.png`, K being the true class.
fn true_label(path: &Path) -> Option<usize> {
    let stem = path.file_stem()?.to_str()?;
    stem.rsplit_once("-label-")?.1.parse().ok()
}

pub fn run(
    model: &Path,
    inputs: &[PathBuf],
    threshold: Option<f32>,
    escalate_to: Option<&Path>,
    as_json: bool,
    top_k: usize,
    open: &OpenOptions,
) -> Result<()> {
    if let Some(t) = threshold {
        if !(0.0..=1.0).contains(&t) {
            bail!("--threshold {t} is outside [0, 1]");
        }
    }
    let student = StudentModel::open_with(model, open)?;
    let hook = escalate_to
        .map(|path| -> Result<CascadeHook> {
            Ok(CascadeHook::new(
                StudentModel::open_with(path, open)?,
                &student,
            )?)
        })
        .transpose()?;
    let options = ClassifyOptions { threshold, top_k };
    let hook_ref = hook.as_ref().map(|h| h as &dyn EscalationHook);
    for path in inputs {
        let spec = student.input_spec();
        for image in read_images(path, (spec.width, spec.height), spec.channels == 3)? {
            let input = image.tensor(spec).with_context(|| image.name.clone())?;
            let p = student.classify(&input, &options, hook_ref)?;
            if as_json {
                out!("{}", prediction_json(&image.name, &p));
            } else {
                out!("{}", prediction_line(&image.name, &p));
            }
        }
    }
    Ok(())
}

fn prediction_json(input: &str, p: &Prediction) -> serde_json::Value {
    let (threshold, outcome) = match &p.decision {
        Decision::Accepted { threshold } => (*threshold, None),
        Decision::Escalated { threshold, outcome } => (*threshold, Some(outcome)),
    };
    json!({
        "input": input,
        "label": p.label,
        "index": p.index,
        "confidence": p.confidence,
        "score": p.score,
        "score_kind": p.score_kind,
        "threshold": threshold,
        "escalated": p.escalated(),
        "escalation": outcome,
        "final_label": p.final_label,
        "final_index": p.final_index,
        "answered_by": p.answered_by,
        "top_k": p.top_k,
    })
}

fn prediction_line(input: &str, p: &Prediction) -> String {
    let decision = match &p.decision {
        Decision::Accepted { .. } => "accepted".to_string(),
        Decision::Escalated { outcome, .. } => match outcome {
            EscalationOutcome::NoHook => "escalated (no hook: student answer kept)".to_string(),
            EscalationOutcome::Answered { by, .. } => format!("escalated -> {by}"),
            EscalationOutcome::Declined { by } => format!("escalated, {by} declined"),
            EscalationOutcome::Failed { by, error } => format!("escalated, {by} failed: {error}"),
        },
    };
    format!(
        "{input}: {} ({:.3}, score {:.3}) {decision}; final: {}",
        p.label, p.confidence, p.score, p.final_label
    )
}

pub fn inspect(model: &Path, as_json: bool, open: &OpenOptions) -> Result<()> {
    let m = StudentModel::open_with(model, open)?;
    let card = m.card();
    if as_json {
        let out = json!({
            "file": model.display().to_string(),
            "file_size": m.file_size(),
            "sha256": m.sha256(),
            "params": m.params(),
            "classes": m.classes(),
            "operators": m.operators().iter().map(|(op, n)| json!({"op": op, "count": n})).collect::<Vec<_>>(),
            "kernels": m.kernels(),
            "compiled_ops": m.compiled_ops().iter().map(|(op, n)| json!({"op": op, "count": n})).collect::<Vec<_>>(),
            "card": card,
            "defaults_applied": card.defaults_applied(),
        });
        out!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    out!("model       {}", card.name);
    out!(
        "file        {} ({} bytes, sha256 {})",
        model.display(),
        m.file_size(),
        m.sha256()
    );
    out!("parameters  {}", m.params());
    let i = &card.input;
    out!(
        "input       {} {}x{}x{}, pixel * {:.6}, mean {:?}, std {:?}",
        i.layout,
        i.channels,
        i.height,
        i.width,
        i.scale,
        i.mean,
        i.std
    );
    out!("labels      {}", card.labels.join(", "));
    out!(
        "calibration temperature {:.4} ({}); ECE {} -> {}",
        card.calibration.temperature,
        card.calibration.method,
        fmt_opt(card.calibration.ece_before),
        fmt_opt(card.calibration.ece_after)
    );
    out!(
        "escalation  {} < {:.4} escalates; {}",
        card.escalation.score.name(),
        card.escalation.threshold,
        card.escalation.chosen_by
    );
    if let Some(t) = &card.teacher {
        out!(
            "teacher     {} ({} parameters, sha256 {})",
            t.name,
            t.params,
            t.sha256
        );
    }
    match &card.quantization {
        Some(q) => out!(
            "precision   {}: {} (from the fp32 file with sha256 {})",
            q.precision.name(),
            q.method,
            q.source_sha256
        ),
        None => out!("precision   {}", card.precision().name()),
    }
    let ops: Vec<String> = m
        .operators()
        .iter()
        .map(|(op, n)| format!("{op} x{n}"))
        .collect();
    out!("operators   {}", ops.join(", "));
    let compiled = m.compiled_ops();
    if compiled.is_empty() {
        out!("runs on     tract (compile with `student compile` for the fast path)");
    } else {
        let ops: Vec<String> = compiled
            .iter()
            .map(|(op, n)| format!("{op} x{n}"))
            .collect();
        out!("compiled    {}", ops.join(", "));
        out!("runs on     {} kernels", m.kernels());
    }
    if let Some(metrics) = &card.metrics {
        out!("metrics     {}", serde_json::to_string(metrics)?);
    }
    for d in card.defaults_applied() {
        out!("default     no card entry, using {d}");
    }
    Ok(())
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.4}"))
        .unwrap_or_else(|| "n/a".to_string())
}

/// `1 image`, `200 images`.
pub fn images(n: usize) -> String {
    let plural = if n == 1 { "" } else { "s" };
    format!("{n} image{plural}")
}

/// The data set named `name`, cut to its first `limit` images when given (the name then
/// says so, for example `fashion-mnist:test[..200]`).
pub fn load_data(name: &str, limit: Option<usize>) -> Result<Dataset> {
    let data = Dataset::from_name(name)?;
    Ok(match limit {
        Some(n) if n < data.len() => {
            let mut cut = data.slice(0, n);
            cut.name = format!("{}[..{n}]", data.name);
            cut
        }
        _ => data,
    })
}

pub fn eval(
    model: &Path,
    data: &str,
    teacher: Option<&Path>,
    threshold: Option<f32>,
    as_json: bool,
    limit: Option<usize>,
    open: &OpenOptions,
) -> Result<()> {
    if let Some(t) = threshold {
        if !(0.0..=1.0).contains(&t) {
            bail!("--threshold {t} is outside [0, 1]");
        }
    }
    let student = StudentModel::open_with(model, open)?;
    let teacher = teacher
        .map(|t| StudentModel::open_with(t, open))
        .transpose()?;
    let dataset = load_data(data, limit)?;
    let mut bars = Bars::default();
    let report = evaluate(&student, teacher.as_ref(), &dataset, threshold, &mut bars)?;
    if as_json {
        out!("{}", serde_json::to_string(&report)?);
        return Ok(());
    }
    let pct = |v: f64| format!("{:.2}%", v * 100.0);
    out!(
        "data                {} ({})",
        report.data,
        images(report.samples)
    );
    out!(
        "student accuracy    {} ({} parameters)",
        pct(report.accuracy),
        report.params
    );
    if let (Some(acc), Some(params)) = (report.teacher_accuracy, report.teacher_params) {
        out!("teacher accuracy    {} ({} parameters)", pct(acc), params);
    }
    if let Some(a) = report.agreement {
        out!("agreement           {}", pct(a));
    }
    out!("threshold           {:.4}", report.threshold);
    out!("escalation rate     {}", pct(report.escalation_rate));
    let accepted = report.accepted_accuracy.map(pct);
    out!(
        "accepted accuracy   {}",
        accepted.as_deref().unwrap_or("n/a (nothing accepted)")
    );
    out!(
        "cascade accuracy    {}{}",
        pct(report.cascade_accuracy),
        if teacher.is_none() {
            " (no teacher: escalated inputs keep the student's answer)"
        } else {
            ""
        }
    );
    Ok(())
}

pub fn distill(recipe_path: &Path) -> Result<()> {
    let recipe = Recipe::load(recipe_path)?;
    if let Some(out) = output_files(&recipe)
        .into_iter()
        .find(|out| same_file(recipe_path, out))
    {
        bail!(
            "{}: it is the recipe itself, which the run would replace; choose another \
             [output] dir or move the recipe",
            out.display()
        );
    }
    let mut bars = Bars::default();
    let report = run_recipe(&recipe, &mut bars)?;
    let s = &report.student_test;
    let pct = |v: f64| format!("{:.2}%", v * 100.0);
    out!(
        "teacher {} ({} parameters); student {} ({} parameters, {:.1}x smaller); baseline {}",
        s.teacher_accuracy.map(pct).unwrap_or_default(),
        report.params.teacher,
        pct(s.accuracy),
        report.params.student,
        report.params.compression,
        pct(report.baseline_test.accuracy)
    );
    out!(
        "cascade: escalation {}, accuracy {}; temperature {:.3}, threshold {:.4}",
        pct(s.escalation_rate),
        pct(s.cascade_accuracy),
        report.calibration.temperature,
        report.threshold.threshold
    );
    for f in &report.files {
        out!("wrote {}", f.display());
    }
    Ok(())
}
