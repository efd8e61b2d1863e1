//! Post-training quantization of any ONNX student of the supported operator set: int8 as
//! QDQ (per-channel int8 weights, calibrated uint8 activations, int32 biases) and fp16
//! weight storage. The quantized file is re-calibrated (temperature, threshold) on labelled
//! held-out data and carries a model card saying what was done.

mod fp16;
mod int8;
mod observe;
mod proto;

use prost::Message;
use serde_json::json;
use student_runtime::{
    ModelCard, OpenOptions, Precision, QuantizationInfo, ScoreKind, StudentModel,
};
use tract_onnx::pb;

pub use fp16::Fp16Summary;
pub use int8::Int8Summary;
pub use observe::RangeMethod;
pub use proto::SUPPORTED_OPS;

use crate::calibrate::{
    ThresholdChoice, ThresholdTarget, agreement, calibrate_and_choose, correct,
};
use crate::dataset::Dataset;
use crate::error::Error;
use crate::eval::{EvalReport, evaluate_logits, logits};
use crate::progress::Progress;
use proto::Editor;

/// Fewer calibration samples than this cannot give trustworthy activation ranges.
pub const MIN_CALIBRATION_SAMPLES: usize = 16;

/// Quantizes a float ONNX model to int8 QDQ. `samples` holds calibration inputs, already
/// scaled as the model expects, one after another, each of the graph input's shape
/// without its batch dimension.
///
/// # Errors
/// [`Error::UnsupportedOperator`], [`Error::AlreadyQuantized`], or [`Error::Quantize`] for a
/// malformed graph, an opset before 13, calibration data of the wrong size or too few
/// samples, and NaN or infinite activations met during calibration.
pub fn quantize_int8(
    onnx: &[u8],
    origin: &str,
    samples: &[f32],
    method: RangeMethod,
    progress: &mut dyn Progress,
) -> Result<(Vec<u8>, Int8Summary), Error> {
    let mut editor = editor(onnx, origin)?;
    if let RangeMethod::Percentile(p) = method {
        if !(p > 50.0 && p <= 100.0) {
            return Err(editor.fail(format!("percentile {p} must lie in (50, 100]")));
        }
    }
    let input = editor.data_input()?;
    let dims = sample_dims(&editor, &input)?;
    let per_sample: usize = dims.iter().product();
    if samples.len() % per_sample != 0 {
        return Err(editor.fail(format!(
            "calibration data holds {} values, not a whole number of samples of shape {dims:?} \
             ({per_sample} values each)",
            samples.len()
        )));
    }
    let count = samples.len() / per_sample;
    if count < MIN_CALIBRATION_SAMPLES {
        return Err(editor.fail(format!(
            "{count} calibration samples are too few: at least {MIN_CALIBRATION_SAMPLES} are \
             needed (a few hundred give stable ranges)"
        )));
    }
    editor.constants_to_initializers();
    editor.fold_batch_norms()?;
    let observed = observe::observe(
        &editor.model,
        origin,
        &input,
        &dims,
        samples,
        method,
        progress,
    )?;
    let summary = int8::rewrite(&mut editor, &observed, method)?;
    Ok((editor.model.encode_to_vec(), summary))
}

/// Stores every float weight of an ONNX model as fp16, widened by a Cast at load.
///
/// # Errors
/// [`Error::AlreadyQuantized`], [`Error::UnsupportedOperator`], or [`Error::Quantize`] for a
/// malformed graph or a weight beyond fp16's range.
pub fn convert_fp16(onnx: &[u8], origin: &str) -> Result<(Vec<u8>, Fp16Summary), Error> {
    let mut editor = editor(onnx, origin)?;
    editor.constants_to_initializers();
    let summary = fp16::rewrite(&mut editor)?;
    Ok((editor.model.encode_to_vec(), summary))
}

/// Checks what quantizing needs of the graph before anything else reads it: one float
/// input, opset 13 or newer, supported operators, and no quantization yet. A file that is
/// already quantized is told so here, before the runtime refuses a form of it.
///
/// # Errors
/// As [`quantize_int8`], for the graph alone.
pub fn check_quantizable(onnx: &[u8], origin: &str) -> Result<(), Error> {
    editor(onnx, origin).map(|_| ())
}

/// Decodes the model to rewrite within the runtime's default limits, checked before
/// decoding as opening checks it: the file may come from anywhere.
fn editor(onnx: &[u8], origin: &str) -> Result<Editor, Error> {
    let model = student_runtime::decode_onnx(onnx, origin, &student_runtime::Limits::default())?;
    Editor::new(model, origin)
}

/// The graph input's dimensions after the batch dimension; each must be fixed.
fn sample_dims(editor: &Editor, input: &str) -> Result<Vec<usize>, Error> {
    use pb::tensor_shape_proto::dimension::Value;
    let info = editor
        .graph()
        .input
        .iter()
        .find(|i| i.name == input)
        .ok_or_else(|| editor.fail(format!("input `{input}` is not declared")))?;
    let dims: Vec<Option<i64>> = match info.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(pb::type_proto::Value::TensorType(t)) => t
            .shape
            .as_ref()
            .map(|s| {
                s.dim
                    .iter()
                    .map(|d| match d.value {
                        Some(Value::DimValue(v)) => Some(v),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default(),
        _ => Vec::new(),
    };
    let rest: Option<Vec<usize>> = dims
        .iter()
        .skip(1)
        .map(|d| d.filter(|&v| v > 0).map(|v| v as usize))
        .collect();
    match rest {
        Some(rest) if !dims.is_empty() => Ok(rest),
        _ => Err(editor.fail(format!(
            "input `{input}` needs a declared shape with fixed dimensions after the batch, \
             found {dims:?}"
        ))),
    }
}

/// What to make of a float student.
#[derive(Debug, Clone)]
pub struct QuantizeSettings {
    /// fp16 or int8 (fp32 is refused).
    pub precision: Precision,
    /// How int8 activation ranges are chosen.
    pub method: RangeMethod,
    /// Calibration samples for int8 activation ranges, taken from the start of the data.
    pub samples: usize,
    /// The threshold target; `None` takes the one in the card's recipe, or else keeps the
    /// float model's threshold.
    pub target: Option<ThresholdTarget>,
    /// The score the threshold applies to; `None` keeps the card's.
    pub score: Option<ScoreKind>,
}

/// A quantized student, its card, and how it compares with its float original on the
/// held-out data.
#[derive(Debug, Clone)]
pub struct QuantizedStudent {
    /// The ONNX file, card included.
    pub bytes: Vec<u8>,
    /// The card written into it.
    pub card: ModelCard,
    /// What the rewrite did, in one line.
    pub summary: String,
    /// Figures on the held-out data (JSON, also in the card's metrics).
    pub validation: serde_json::Value,
}

/// Quantizes the float student `source` (an ONNX file's bytes; `origin` names it), then
/// re-fits its temperature and threshold on `data` (labelled, held out from training), and
/// writes a card for the result. `teacher` is needed by targets that compare with it.
///
/// # Errors
/// As [`quantize_int8`] and [`convert_fp16`]; [`Error::Data`] when `data` does not fit the
/// model; [`Error::UnreachableTarget`] when no threshold meets the target.
pub fn quantize_student(
    source: &[u8],
    origin: &str,
    data: &Dataset,
    teacher: Option<&StudentModel>,
    settings: &QuantizeSettings,
    progress: &mut dyn Progress,
) -> Result<QuantizedStudent, Error> {
    check_quantizable(source, origin)?;
    let batch = OpenOptions::with_batch(256);
    let float = StudentModel::from_bytes_named(source, origin, &batch)?;
    let fail = |reason: String| Error::Quantize {
        origin: origin.to_string(),
        reason,
    };
    if float.card().precision() != Precision::Fp32 {
        return Err(Error::AlreadyQuantized {
            origin: origin.to_string(),
            evidence: format!("its card says {}", float.card().precision().name()),
        });
    }
    let spec = float.input_spec().clone();
    if spec.channels != 1 || data.height != spec.height || data.width != spec.width {
        return Err(Error::Data(format!(
            "{} holds {}x{} grayscale images; the model takes {}x{}x{}",
            data.name, data.height, data.width, spec.channels, spec.height, spec.width
        )));
    }
    if data.classes.len() != float.classes() {
        return Err(Error::Data(format!(
            "{} has {} classes; the model outputs {}",
            data.name,
            data.classes.len(),
            float.classes()
        )));
    }
    // The target is settled before any work: a missing teacher is a usage error.
    let recipe_target = float
        .card()
        .recipe
        .as_ref()
        .and_then(|r| r.pointer("/calibration/target"))
        .and_then(|t| serde_json::from_value::<ThresholdTarget>(t.clone()).ok());
    let target = settings.target.clone().or(recipe_target);
    if let Some(target) = &target {
        target.validate().map_err(fail)?;
        match teacher {
            None if target.needs_teacher() => {
                return Err(fail(format!(
                    "the threshold target ({}) compares with the teacher: give the teacher, \
                     or another target",
                    target.describe()
                )));
            }
            Some(t) if target.needs_teacher() => {
                if t.card().labels != float.card().labels {
                    return Err(Error::Data(format!(
                        "the teacher's labels [{}] differ from the student's [{}]",
                        t.card().labels.join(", "),
                        float.card().labels.join(", ")
                    )));
                }
                if let Some(named) = &float.card().teacher {
                    if named.sha256 != t.sha256() {
                        log::warn!(
                            "{origin}: its card names the teacher {} ({}), but the threshold \
                             is chosen against {} ({}); the new card records both",
                            named.name,
                            named.sha256.chars().take(12).collect::<String>(),
                            t.card().name,
                            &t.sha256()[..12]
                        );
                    }
                }
            }
            _ => {}
        }
    }
    let (bytes, summary) = match settings.precision {
        Precision::Fp32 => return Err(fail("fp32 is not a quantized precision".to_string())),
        Precision::Fp16 => {
            let (bytes, s) = convert_fp16(source, origin)?;
            let text = format!(
                "fp16 storage of {} weight tensors ({} values; largest relative rounding \
                 error {:.1e}, {} tiny values flushed), computed in f32 after a Cast",
                s.tensors, s.values, s.max_relative_error, s.flushed
            );
            (bytes, text)
        }
        Precision::Int8 => {
            let n = settings.samples.min(data.len());
            let indices: Vec<usize> = (0..n).collect();
            let samples = data.tensor(&spec, &indices)?;
            let (bytes, s) = quantize_int8(source, origin, &samples, settings.method, progress)?;
            let text = format!(
                "int8 QDQ: {} weight tensors symmetric int8 per output channel, {} biases \
                 int32, {} activations uint8 with ranges by {} over {n} images of {}{}",
                s.weights,
                s.biases,
                s.activations,
                settings.method.describe(),
                data.name,
                if s.left_float.is_empty() {
                    String::new()
                } else {
                    format!("; left float: {}", s.left_float.join(", "))
                }
            );
            (bytes, text)
        }
    };

    // Re-calibrate on the held-out data: the quantized logits are not the float ones.
    let quantized = StudentModel::from_bytes(&bytes, &batch)?;
    let q_logits = logits(&quantized, data, progress)?;
    let f_logits = logits(&float, data, progress)?;
    let classes = float.classes();
    let accuracy = |l: &[f32]| -> f64 {
        let right = correct(l, &data.labels, classes)
            .iter()
            .filter(|&&c| c)
            .count();
        right as f64 / data.len().max(1) as f64
    };
    let agreement = agreement(&q_logits, &f_logits, classes);
    let score = settings.score.unwrap_or(float.card().escalation.score);
    let mut card = float.card().clone();
    card.name = format!("{}-{}", card.name, settings.precision.name());
    card.quantization = Some(QuantizationInfo {
        precision: settings.precision,
        method: summary.clone(),
        source_sha256: float.sha256().to_string(),
    });
    let mut choice: Option<ThresholdChoice> = None;
    match target {
        Some(target) => {
            let compared = teacher.filter(|_| target.needs_teacher());
            let teacher_correct = compared
                .map(|t| -> Result<Vec<bool>, Error> {
                    Ok(correct(&logits(t, data, progress)?, &data.labels, classes))
                })
                .transpose()?;
            let (calibration, c) = calibrate_and_choose(
                &q_logits,
                &data.labels,
                classes,
                teacher_correct.as_deref(),
                &target,
                score,
                &data.name,
            )?;
            card.calibration = calibration;
            card.escalation.score = score;
            card.escalation.threshold = c.threshold;
            card.escalation.chosen_by = match compared {
                Some(t) => format!(
                    "{}; teacher {} (sha256 {})",
                    c.describe(),
                    t.card().name,
                    &t.sha256()[..12]
                ),
                None => c.describe(),
            };
            choice = Some(c);
        }
        None => {
            card.calibration =
                crate::calibrate::temperature_scaling(&q_logits, &data.labels, classes, &data.name);
            card.escalation.chosen_by = format!(
                "kept from the {} model (no threshold target given): {}",
                Precision::Fp32.name(),
                card.escalation.chosen_by
            );
        }
    }
    let validation = json!({
        "data": data.name,
        "images": data.len(),
        "accuracy": accuracy(&q_logits),
        "fp32_accuracy": accuracy(&f_logits),
        "agreement_with_fp32": agreement,
        "threshold_choice": choice,
    });
    card.metrics = Some(json!({ "validation": validation }));
    let bytes = with_card(&bytes, &card, origin)?;
    // The final file must open with its new card.
    StudentModel::from_bytes(&bytes, &OpenOptions::default())?;
    Ok(QuantizedStudent {
        bytes,
        card,
        summary,
        validation,
    })
}

/// Measures a quantized student on labelled `test` data, with the cascade to the teacher
/// (given with its logits on `test`), and its top-1 agreement with the fp32 student's
/// `fp32_logits` on the same data; records both in the card under `test` and
/// `test_agreement_with_fp32`, and rewrites `q.bytes` with that card.
///
/// # Errors
/// Runtime errors, and [`Error::Data`] when the logits do not fit `test`.
pub fn measure_on_test(
    q: &mut QuantizedStudent,
    fp32_logits: &[f32],
    teacher: Option<(&StudentModel, &[f32])>,
    test: &Dataset,
    progress: &mut dyn Progress,
) -> Result<(EvalReport, f64), Error> {
    let model = StudentModel::from_bytes(&q.bytes, &OpenOptions::with_batch(256))?;
    let classes = model.classes();
    let q_logits = logits(&model, test, progress)?;
    if fp32_logits.len() != q_logits.len() {
        return Err(Error::Data(format!(
            "{} fp32 logits for {} test images of {classes} classes",
            fp32_logits.len(),
            test.len()
        )));
    }
    let report = evaluate_logits(
        &model,
        teacher.map(|t| t.0),
        test,
        &q_logits,
        teacher.map(|t| t.1),
        None,
    )?;
    let agreement = agreement(&q_logits, fp32_logits, classes);
    q.card.metrics = Some(json!({
        "validation": q.validation,
        "test": &report,
        "test_agreement_with_fp32": agreement,
    }));
    q.bytes = with_card(&q.bytes, &q.card, &q.card.name)?;
    Ok((report, agreement))
}

/// Replaces the model card entries of an ONNX file.
fn with_card(onnx: &[u8], card: &ModelCard, origin: &str) -> Result<Vec<u8>, Error> {
    let mut model = pb::ModelProto::decode(onnx).map_err(|e| Error::Quantize {
        origin: origin.to_string(),
        reason: format!("re-reading the quantized model failed: {e}"),
    })?;
    model
        .metadata_props
        .retain(|e| !e.key.starts_with(student_runtime::CARD_KEY_PREFIX));
    model.metadata_props.extend(
        card.to_metadata()
            .into_iter()
            .map(|(key, value)| pb::StringStringEntryProto { key, value }),
    );
    Ok(model.encode_to_vec())
}
