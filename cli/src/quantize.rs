//! `student quantize`: an int8 or fp16 copy of a float student, re-calibrated on held-out
//! data, written next to nothing it could overwrite by accident.

use std::path::Path;

use anyhow::{Context, Result, bail};
use student_distill::{
    Dataset, QuantizeSettings, RangeMethod, ThresholdTarget, check_quantizable, measure_on_test,
    quantize_student, replace_file, same_file,
};
use student_runtime::{OpenOptions, Precision, ScoreKind, StudentModel};

use crate::progress::Bars;

/// The command's arguments, as parsed by clap.
pub struct Args<'a> {
    pub model: &'a Path,
    pub output: &'a Path,
    pub precision: &'a str,
    pub method: &'a str,
    pub percentile: f64,
    pub samples: usize,
    pub data: &'a str,
    pub images: Option<&'a Path>,
    pub labels: Option<&'a Path>,
    pub teacher: Option<&'a Path>,
    pub target: Option<&'a str>,
    pub score: Option<&'a str>,
    pub test_data: Option<&'a str>,
    pub json: bool,
}

pub fn quantize(args: &Args) -> Result<()> {
    let precision = match args.precision {
        "int8" => Precision::Int8,
        "fp16" => Precision::Fp16,
        other => bail!("--precision `{other}`: expected int8 or fp16"),
    };
    let method = match args.method {
        "minmax" => RangeMethod::MinMax,
        "percentile" => RangeMethod::Percentile(args.percentile),
        "entropy" => RangeMethod::Entropy,
        other => bail!("--method `{other}`: expected minmax, percentile or entropy"),
    };
    let target = args.target.map(parse_target).transpose()?;
    // A compiled student is already packed for its precision: say so, not a protobuf error.
    if crate::compile::is_compiled_file(args.model).unwrap_or(false) {
        bail!(
            "{} is a compiled student; quantize the ONNX file it was compiled from, then \
             compile the result",
            args.model.display()
        );
    }
    let score = args
        .score
        .map(|s| {
            ScoreKind::from_name(s).with_context(|| {
                format!("--score `{s}`: expected max_probability, margin or entropy")
            })
        })
        .transpose()?;
    // Nothing this run reads may be overwritten by its output.
    let inputs = [
        ("the input model", Some(args.model)),
        ("--teacher", args.teacher),
        ("--images", args.images),
        ("--labels", args.labels),
    ];
    for (what, path) in inputs {
        if path.is_some_and(|p| same_file(p, args.output)) {
            bail!(
                "--output {} is {what}: write the quantized model to another file",
                args.output.display()
            );
        }
    }
    check_output(args.output)?;
    if args
        .test_data
        .is_some_and(|t| args.images.is_none() && t == args.data)
    {
        bail!(
            "--test-data {} is also the calibration data (--data): figures measured where the \
             temperature and threshold were fitted would flatter the model; use \
             fashion-mnist:test with fashion-mnist:validation",
            args.data
        );
    }
    if args.images.is_none() && args.data == "fashion-mnist:train" {
        log::warn!(
            "calibrating on the training split: the student has seen these images, so the \
             fitted temperature and threshold will be over-confident; prefer \
             fashion-mnist:validation"
        );
    }
    let source = std::fs::read(args.model)
        .with_context(|| format!("cannot read {}", args.model.display()))?;
    let origin = args.model.display().to_string();
    check_quantizable(&source, &origin)?;
    let float = StudentModel::from_bytes_named(&source, &origin, &OpenOptions::default())?;
    let data = match (args.images, args.labels) {
        (Some(images), Some(labels)) => {
            let classes: Vec<&str> = float.card().labels.iter().map(String::as_str).collect();
            Dataset::from_idx(&images.display().to_string(), images, labels, &classes)?
        }
        (None, None) => Dataset::from_name(args.data)?,
        _ => bail!("--images and --labels go together: calibration needs labelled images"),
    };
    let teacher = args
        .teacher
        .map(|t| StudentModel::open_with(t, &OpenOptions::with_batch(256)))
        .transpose()?;
    let settings = QuantizeSettings {
        precision,
        method,
        samples: args.samples,
        target,
        score,
    };
    let test = args.test_data.map(Dataset::from_name).transpose()?;
    let mut bars = Bars::default();
    let mut q = quantize_student(
        &source,
        &origin,
        &data,
        teacher.as_ref(),
        &settings,
        &mut bars,
    )?;
    let measured = match &test {
        Some(test) => {
            let float = StudentModel::from_bytes(&source, &OpenOptions::with_batch(256))?;
            let fp32_logits = logits_of(&float, test)?;
            let teacher_logits = teacher.as_ref().map(|t| logits_of(t, test)).transpose()?;
            let with_teacher = teacher.as_ref().zip(teacher_logits.as_deref());
            Some(measure_on_test(
                &mut q,
                &fp32_logits,
                with_teacher,
                test,
                &mut bars,
            )?)
        }
        None => None,
    };
    // Checked again at the write: the entry may have changed during the run.
    replace_file(args.output, &q.bytes)?;
    if args.json {
        let out = serde_json::json!({
            "output": args.output.display().to_string(),
            "precision": precision.name(),
            "summary": q.summary,
            "validation": q.validation,
            "temperature": q.card.calibration.temperature,
            "threshold": q.card.escalation.threshold,
            "chosen_by": q.card.escalation.chosen_by,
            "test": measured.as_ref().map(|(report, _)| report),
            "test_agreement_with_fp32": measured.as_ref().map(|(_, a)| a),
        });
        out!("{out}");
        return Ok(());
    }
    let v = &q.validation;
    let num = |k: &str| v.get(k).and_then(|x| x.as_f64()).unwrap_or(f64::NAN);
    out!(
        "wrote {} ({} bytes, {:.1}% of the fp32 file)",
        args.output.display(),
        q.bytes.len(),
        q.bytes.len() as f64 / source.len() as f64 * 100.0
    );
    out!("{}", q.summary);
    out!(
        "{}: accuracy {:.2}% ({} {:.2}%), agreement with fp32 {:.2}%",
        data.name,
        num("accuracy") * 100.0,
        Precision::Fp32.name(),
        num("fp32_accuracy") * 100.0,
        num("agreement_with_fp32") * 100.0
    );
    out!(
        "temperature {:.3}; threshold {:.4}: {}",
        q.card.calibration.temperature,
        q.card.escalation.threshold,
        q.card.escalation.chosen_by
    );
    if let Some((report, agreement)) = &measured {
        out!(
            "{}: accuracy {:.2}%, agreement with fp32 {:.2}%, escalation {:.2}%, cascade accuracy {:.2}%",
            report.data,
            report.accuracy * 100.0,
            agreement * 100.0,
            report.escalation_rate * 100.0,
            report.cascade_accuracy * 100.0
        );
    }
    Ok(())
}

/// Logits of every image of `data`, through the model's card.
fn logits_of(model: &StudentModel, data: &Dataset) -> Result<Vec<f32>> {
    let indices: Vec<usize> = (0..data.len()).collect();
    let input = data.tensor(model.input_spec(), &indices)?;
    Ok(model.logits_batch(&input)?)
}

/// Parses `accepted_accuracy=0.95`, `max_escalation=0.1`, `cascade_within_teacher=0.25`,
/// `accepted_at_least_teacher` or `risk_bound=ERROR,DELTA`.
fn parse_target(text: &str) -> Result<ThresholdTarget> {
    let (kind, value) = text.split_once('=').unwrap_or((text, ""));
    let number = |v: &str| -> Result<f64> {
        v.trim()
            .parse::<f64>()
            .ok()
            .filter(|x| x.is_finite())
            .with_context(|| format!("--target {text}: `{v}` is not a number"))
    };
    let target = match kind {
        "accepted_at_least_teacher" if value.is_empty() => ThresholdTarget::AcceptedAtLeastTeacher,
        "accepted_accuracy" => ThresholdTarget::AcceptedAccuracy {
            min: number(value)?,
        },
        "max_escalation" => ThresholdTarget::MaxEscalation {
            rate: number(value)?,
        },
        "cascade_within_teacher" => ThresholdTarget::CascadeWithinTeacher {
            points: number(value)?,
        },
        "risk_bound" => {
            let (error, delta) = value.split_once(',').with_context(|| {
                format!("--target {text}: expected risk_bound=ERROR,DELTA, for example 0.05,0.1")
            })?;
            ThresholdTarget::RiskBound {
                error: number(error)?,
                delta: number(delta)?,
            }
        }
        _ => bail!(
            "--target `{text}`: expected accepted_accuracy=MIN, max_escalation=RATE, \
             cascade_within_teacher=POINTS, accepted_at_least_teacher or risk_bound=ERROR,DELTA"
        ),
    };
    target
        .validate()
        .map_err(|reason| anyhow::anyhow!("--target {text}: {reason}"))?;
    Ok(target)
}

/// Refuses an output path whose existing entry is not a regular file: renaming over a
/// device, a FIFO or a symlink would replace it rather than write to it.
///
/// A regular file is replaced only when it is empty or an earlier quantized student (an
/// ONNX file whose model card has a `quantization` section): a teacher, a float student, a
/// compiled file or a note at that name would be lost.
fn check_output(path: &Path) -> Result<()> {
    // Calibration takes a while: a folder that is not there is said before it, not after.
    let folder = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !folder.is_dir() {
        bail!(
            "--output {}: the folder {} does not exist; create it or write elsewhere",
            path.display(),
            folder.display()
        );
    }
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    if !meta.file_type().is_file() {
        bail!(
            "--output {} exists and is not a regular file (a {}); give a new or regular file",
            path.display(),
            if meta.file_type().is_symlink() {
                "symbolic link"
            } else if meta.is_dir() {
                "directory"
            } else {
                "device, FIFO or socket"
            }
        );
    }
    if meta.len() > 0 && !is_quantized_student(path, meta.len())? {
        bail!(
            "--output {} exists and is not a quantized student; quantize replaces only an \
             earlier quantized file (remove it first, or choose another file)",
            path.display()
        );
    }
    Ok(())
}

/// Whether the file `path` (of `len` bytes) is an ONNX model whose card has a
/// `quantization` section. A file over the opening limit is not read: it is none.
fn is_quantized_student(path: &Path, len: u64) -> Result<bool> {
    let limits = student_runtime::Limits::default();
    if len > limits.max_file_bytes {
        return Ok(false);
    }
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let section = format!("{}quantization", student_runtime::CARD_KEY_PREFIX);
    Ok(
        student_runtime::decode_onnx(&bytes, &path.display().to_string(), &limits)
            .is_ok_and(|m| m.metadata_props.iter().any(|p| p.key == section)),
    )
}
