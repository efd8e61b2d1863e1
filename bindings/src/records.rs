//! Plain values that cross the boundary: the model card, options, predictions.

use student_runtime as rt;

use crate::error::StudentError;

/// The model card and a few facts about the opened file.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct ModelInfo {
    /// A short name for the model.
    pub name: String,
    /// Class labels, in logit order.
    pub labels: Vec<String>,
    /// The input the model expects and how raw pixels are scaled into it.
    pub input: InputInfo,
    /// The precision the weights are stored in.
    pub precision: Precision,
    /// Probabilities are `softmax(logits / temperature)`.
    pub temperature: f32,
    /// Predictions whose score is below this value escalate.
    pub threshold: f32,
    /// The score the threshold applies to.
    pub score_kind: ScoreKind,
    /// How the threshold was chosen, in words.
    pub threshold_chosen_by: String,
    /// The teacher's name, for a distilled student.
    pub teacher: Option<String>,
    /// The measured metrics the card records, as a JSON object; `None` when it has none.
    pub metrics_json: Option<String>,
    /// Card sections the file lacked, each with the default that replaced it.
    pub defaults_applied: Vec<String>,
    /// Number of parameters.
    pub params: u64,
    /// Size in bytes of the opened file or buffer.
    pub file_size: u64,
    /// SHA-256 of the opened file or buffer, hex encoded.
    pub sha256: String,
    /// What runs the model: the kernel level of a compiled `.student` file (`neon-dotprod`,
    /// `avx512vnni`, ...), or `tract` for an `.onnx` file.
    pub kernels: String,
}

/// The declared input: one sample holds `channels * height * width` floats (NCHW).
///
/// A raw pixel `p` in `[0, 255]` becomes `(p * scale - mean[c]) / std[c]` for channel `c`.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct InputInfo {
    /// Dimension order; `"NCHW"`.
    pub layout: String,
    /// Channels per image.
    pub channels: u32,
    /// Image height in pixels.
    pub height: u32,
    /// Image width in pixels.
    pub width: u32,
    /// Multiplier applied to raw 8-bit pixels before normalization.
    pub scale: f32,
    /// Per-channel mean.
    pub mean: Vec<f32>,
    /// Per-channel standard deviation.
    pub std: Vec<f32>,
}

/// The numeric precision of a model's weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum Precision {
    /// 32-bit floats.
    Fp32,
    /// 16-bit float weights, 32-bit compute.
    Fp16,
    /// 8-bit integer weights and activations.
    Int8,
}

/// The confidence score a threshold applies to; all lie in `[0, 1]`, higher is surer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum ScoreKind {
    /// The largest calibrated probability.
    MaxProbability,
    /// The largest probability minus the second largest.
    Margin,
    /// One minus the normalized entropy.
    Entropy,
}

/// How the bytes of a raw image are laid out: row-major, 8 bits per channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum PixelFormat {
    /// One byte per pixel.
    Gray8,
    /// Four bytes per pixel: red, green, blue, alpha.
    Rgba8,
}

/// Per-call choices.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct ClassifyOptions {
    /// Overrides the card's threshold for this call; must lie in `[0, 1]`.
    #[uniffi(default = None)]
    pub threshold: Option<f32>,
    /// How many ranked classes the prediction lists: at least 1 (0 is an `InvalidInput`
    /// error), at most the number of labels are listed.
    #[uniffi(default = 3)]
    pub top_k: u32,
    /// The longest an escalation handler may take, in milliseconds; at least 1. Past it
    /// the call returns with the handler's outcome `Failed` ("no answer within N ms") and
    /// the student's answer; the handler runs on a thread of its own, which is left to
    /// finish and whose answer is dropped. While 4 such abandoned calls still run in the
    /// process, escalations with a deadline fail at once ("not called: ...") without
    /// calling the handler. `None` (the default): no limit, and the handler runs on the
    /// calling thread.
    #[uniffi(default = None)]
    pub handler_deadline_ms: Option<u32>,
}

/// The outcome of classifying one input.
///
/// `label`, `index` and `confidence` are the student's own answer; `final_label` and
/// `final_index` are what the app should use, which differ only when a handler answered.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct Prediction {
    /// The student's class label.
    pub label: String,
    /// The student's class index.
    pub index: u32,
    /// The student's calibrated probability for its class, in `[0, 1]`.
    pub confidence: f32,
    /// The most probable classes, best first.
    pub top_k: Vec<Ranked>,
    /// The score the decision used, in `[0, 1]`.
    pub score: f32,
    /// Which score that is.
    pub score_kind: ScoreKind,
    /// The threshold in force for this call.
    pub threshold: f32,
    /// True when the score was below the threshold.
    pub escalated: bool,
    /// What the escalation produced.
    pub outcome: EscalationOutcome,
    /// The decision and what followed it, in words.
    pub reason: String,
    /// `"student"`, or the name of the handler that answered.
    pub answered_by: String,
    /// The class label to use.
    pub final_label: String,
    /// The class index to use.
    pub final_index: u32,
    /// Time spent in the call in Rust, in microseconds, including any handler.
    pub latency_micros: u64,
}

/// One class with its calibrated probability.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct Ranked {
    /// Class label.
    pub label: String,
    /// Class index.
    pub index: u32,
    /// Calibrated probability.
    pub probability: f32,
}

/// What happened to a prediction's escalation.
#[derive(Debug, Clone, PartialEq, uniffi::Enum)]
pub enum EscalationOutcome {
    /// The score reached the threshold: nothing escalated.
    NotEscalated,
    /// Escalated without a handler: the student's answer stands, flagged.
    NoHandler,
    /// The handler answered.
    Answered {
        /// The handler's name.
        by: String,
        /// The handler's confidence, when it gave one.
        confidence: Option<f32>,
    },
    /// The handler declined; the student's answer stands.
    Declined {
        /// The handler's name.
        by: String,
    },
    /// The handler threw, answered outside the label set or with a confidence outside
    /// `[0, 1]`, or did not answer within `handler_deadline_ms`; the student's answer
    /// stands.
    Failed {
        /// The handler's name.
        by: String,
        /// What went wrong.
        error: String,
    },
}

impl From<rt::Precision> for Precision {
    fn from(p: rt::Precision) -> Self {
        match p {
            rt::Precision::Fp32 => Precision::Fp32,
            rt::Precision::Fp16 => Precision::Fp16,
            rt::Precision::Int8 => Precision::Int8,
        }
    }
}

impl From<rt::ScoreKind> for ScoreKind {
    fn from(k: rt::ScoreKind) -> Self {
        match k {
            rt::ScoreKind::MaxProbability => ScoreKind::MaxProbability,
            rt::ScoreKind::Margin => ScoreKind::Margin,
            rt::ScoreKind::Entropy => ScoreKind::Entropy,
        }
    }
}

impl From<PixelFormat> for rt::PixelFormat {
    fn from(f: PixelFormat) -> Self {
        match f {
            PixelFormat::Gray8 => rt::PixelFormat::Gray8,
            PixelFormat::Rgba8 => rt::PixelFormat::Rgba8,
        }
    }
}

impl ClassifyOptions {
    /// The runtime's options; a threshold of `-0.0` becomes `0.0` so that predictions
    /// report the threshold as written.
    ///
    /// # Errors
    /// [`StudentError::InvalidInput`] for `top_k = 0` (the runtime would list one class
    /// anyway, which hides a caller's bug). The threshold's range is the runtime's check.
    pub(crate) fn to_runtime(&self) -> Result<rt::ClassifyOptions, StudentError> {
        if self.top_k == 0 {
            return Err(StudentError::InvalidInput {
                reason: "top_k is 0, expected at least 1".to_string(),
            });
        }
        Ok(rt::ClassifyOptions {
            // `-0.0 == 0.0`, so this maps both zeros to positive zero and nothing else.
            threshold: self.threshold.map(|t| if t == 0.0 { 0.0 } else { t }),
            top_k: self.top_k as usize,
        })
    }
}

impl ModelInfo {
    pub(crate) fn of(model: &rt::StudentModel) -> ModelInfo {
        let card = model.card();
        let input = &card.input;
        ModelInfo {
            name: card.name.clone(),
            labels: card.labels.clone(),
            input: InputInfo {
                layout: input.layout.clone(),
                channels: index32(input.channels),
                height: index32(input.height),
                width: index32(input.width),
                scale: input.scale,
                mean: input.mean.clone(),
                std: input.std.clone(),
            },
            precision: card.precision().into(),
            temperature: card.calibration.temperature,
            threshold: card.escalation.threshold,
            score_kind: card.escalation.score.into(),
            threshold_chosen_by: card.escalation.chosen_by.clone(),
            teacher: card.teacher.as_ref().map(|t| t.name.clone()),
            metrics_json: card.metrics.as_ref().map(|m| m.to_string()),
            defaults_applied: card.defaults_applied().to_vec(),
            params: model.params(),
            file_size: model.file_size(),
            sha256: model.sha256().to_string(),
            kernels: model.kernels().to_string(),
        }
    }
}

impl Prediction {
    pub(crate) fn of(p: &rt::Prediction, latency_micros: u64) -> Prediction {
        let (threshold, outcome) = match &p.decision {
            rt::Decision::Accepted { threshold } => (*threshold, EscalationOutcome::NotEscalated),
            rt::Decision::Escalated { threshold, outcome } => (*threshold, outcome.into()),
        };
        let reason = describe(p.score, threshold, &outcome);
        Prediction {
            label: p.label.clone(),
            index: index32(p.index),
            confidence: p.confidence,
            top_k: p.top_k.iter().map(Ranked::of).collect(),
            score: p.score,
            score_kind: p.score_kind.into(),
            threshold,
            escalated: p.escalated(),
            outcome,
            reason,
            answered_by: match &p.answered_by {
                rt::AnsweredBy::Student => "student".to_string(),
                rt::AnsweredBy::Hook(name) => name.clone(),
            },
            final_label: p.final_label.clone(),
            final_index: index32(p.final_index),
            latency_micros,
        }
    }
}

impl Ranked {
    pub(crate) fn of(r: &rt::Ranked) -> Ranked {
        Ranked {
            label: r.label.clone(),
            index: index32(r.index),
            probability: r.probability,
        }
    }
}

impl From<&rt::EscalationOutcome> for EscalationOutcome {
    fn from(o: &rt::EscalationOutcome) -> Self {
        match o.clone() {
            rt::EscalationOutcome::NoHook => EscalationOutcome::NoHandler,
            rt::EscalationOutcome::Answered { by, confidence } => {
                EscalationOutcome::Answered { by, confidence }
            }
            rt::EscalationOutcome::Declined { by } => EscalationOutcome::Declined { by },
            rt::EscalationOutcome::Failed { by, error } => EscalationOutcome::Failed { by, error },
        }
    }
}

/// One sentence for logs and review screens; the typed fields say the same.
fn describe(score: f32, threshold: f32, outcome: &EscalationOutcome) -> String {
    let below = format!("score {score:.3} is below the threshold {threshold:.3}");
    match outcome {
        EscalationOutcome::NotEscalated => {
            format!("score {score:.3} reached the threshold {threshold:.3}")
        }
        EscalationOutcome::NoHandler => {
            format!("{below}; no handler was given, the student's answer stands")
        }
        EscalationOutcome::Answered { by, .. } => format!("{below}; {by} answered"),
        EscalationOutcome::Declined { by } => {
            format!("{below}; {by} declined, the student's answer stands")
        }
        EscalationOutcome::Failed { by, error } => {
            format!("{below}; {by} failed ({error}), the student's answer stands")
        }
    }
}

/// Class indices and image sides are small; the boundary carries them as `u32`.
pub(crate) fn index32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// What a model file may declare before it is refused, checked before anything of that
/// size is allocated. Start from [`default_limits`](crate::default_limits) and change the
/// fields that matter to the app.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Record)]
pub struct Limits {
    /// The largest model file, in bytes.
    pub max_file_bytes: u64,
    /// The most nodes a graph may have (a compiled student: ops), subgraphs included.
    pub max_nodes: u64,
    /// The largest single tensor, in bytes: weights, declared inputs, and every
    /// intermediate value.
    pub max_tensor_bytes: u64,
    /// The most bytes of weights in one model.
    pub max_weight_bytes: u64,
    /// The longest string: names, metadata keys and values (the model card).
    pub max_string_bytes: u64,
    /// The most metadata entries (the model card's sections and any others).
    pub max_metadata_entries: u64,
    /// The most working memory one call may use, in bytes.
    pub max_scratch_bytes: u64,
}

impl From<rt::Limits> for Limits {
    fn from(l: rt::Limits) -> Limits {
        Limits {
            max_file_bytes: l.max_file_bytes,
            max_nodes: l.max_nodes,
            max_tensor_bytes: l.max_tensor_bytes,
            max_weight_bytes: l.max_weight_bytes,
            max_string_bytes: l.max_string_bytes,
            max_metadata_entries: l.max_metadata_entries,
            max_scratch_bytes: l.max_scratch_bytes,
        }
    }
}

impl From<Limits> for rt::Limits {
    fn from(l: Limits) -> rt::Limits {
        rt::Limits {
            max_file_bytes: l.max_file_bytes,
            max_nodes: l.max_nodes,
            max_tensor_bytes: l.max_tensor_bytes,
            max_weight_bytes: l.max_weight_bytes,
            max_string_bytes: l.max_string_bytes,
            max_metadata_entries: l.max_metadata_entries,
            max_scratch_bytes: l.max_scratch_bytes,
        }
    }
}

/// How a model is opened. Every field has a default, so apps name only what they change.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct OpenOptions {
    /// What the file may declare; `None` (the default) is
    /// [`default_limits`](crate::default_limits).
    #[uniffi(default = None)]
    pub limits: Option<Limits>,
    /// Memory-map the file instead of reading it into memory the model owns (the default,
    /// `false`). Mapping saves one copy of the file, but a file truncated or rewritten in
    /// place while the model is open then crashes the process (SIGBUS) or changes its
    /// answers: set it only for files the app replaces by writing a new file and renaming
    /// it over the old one. Bytes opened from memory ignore it.
    #[uniffi(default = false)]
    pub memory_map: bool,
    /// The kernels a compiled `.student` file runs with, by name (`portable`, `avx2`,
    /// `avx512`, `avx512vnni`, `neon`, `neon-dotprod`, `neon-fp16`); `None` (the default)
    /// takes the best this CPU has. Naming a level the CPU lacks fails the open, and so
    /// does naming one for an `.onnx` file, which runs through tract.
    #[uniffi(default = None)]
    pub kernels: Option<String>,
    /// When not empty, only models signed by one of these keys open (public keys as 64 hex
    /// digits, the contents of a `.pub` file from `student keygen`). The signature is
    /// `signature`, or else the file `MODEL.sig` next to a model opened from a path.
    #[uniffi(default)]
    pub trusted_keys: Vec<String>,
    /// The contents of the model's `.sig` file, for bytes opened from memory or a
    /// signature kept elsewhere.
    #[uniffi(default = None)]
    pub signature: Option<Vec<u8>>,
    /// Run an `.onnx` file through tract even where it uses an operator or attribute
    /// value that has not been checked against onnxruntime (by default, `false`, such a
    /// file is refused as `Unsupported`). Check the model's answers yourself before
    /// shipping it. Compiled `.student` files ignore it.
    #[uniffi(default = false)]
    pub unchecked_operators: bool,
}

impl OpenOptions {
    /// The runtime's options.
    ///
    /// # Errors
    /// [`StudentError::InvalidInput`] for an unknown kernel name, a malformed key, or a
    /// signature without trusted keys (it would be ignored, which hides a caller's bug).
    pub(crate) fn to_runtime(&self) -> Result<rt::OpenOptions, StudentError> {
        let kernels = match self.kernels.as_deref() {
            None => None,
            Some(name) => Some(rt::Isa::from_name(name).ok_or_else(|| {
                let known: Vec<&str> = rt::Isa::ALL.iter().map(|isa| isa.name()).collect();
                StudentError::InvalidInput {
                    reason: format!(
                        "unknown kernels {name:?}, expected one of {}",
                        known.join(", ")
                    ),
                }
            })?),
        };
        if self.signature.is_some() && self.trusted_keys.is_empty() {
            return Err(StudentError::InvalidInput {
                reason: "a signature was given without trusted keys: name at least one key \
                         to check it against"
                    .to_string(),
            });
        }
        let trusted_keys = self
            .trusted_keys
            .iter()
            .map(|k| rt::signing::TrustedKey::from_hex(k))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rt::OpenOptions {
            kernels,
            limits: self
                .limits
                .map_or_else(rt::Limits::default, rt::Limits::from),
            memory_map: self.memory_map,
            trusted_keys,
            signature: self.signature.clone(),
            unchecked_operators: self.unchecked_operators,
            ..rt::OpenOptions::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_cross_unchanged_both_ways() {
        let runtime = rt::Limits {
            max_file_bytes: 1,
            max_nodes: 2,
            max_tensor_bytes: 3,
            max_weight_bytes: 4,
            max_string_bytes: 5,
            max_metadata_entries: 7,
            max_scratch_bytes: 6,
        };
        let back = rt::Limits::from(Limits::from(runtime));
        assert_eq!(back, runtime);
    }

    #[test]
    fn open_options_default_to_the_runtime_defaults() {
        let options = OpenOptions {
            limits: None,
            memory_map: false,
            kernels: None,
            trusted_keys: Vec::new(),
            signature: None,
            unchecked_operators: false,
        };
        let runtime = options.to_runtime().unwrap();
        assert_eq!(runtime.limits, rt::Limits::default());
        assert_eq!(runtime.kernels, None);
        assert!(!runtime.memory_map && runtime.trusted_keys.is_empty());
        assert!(!runtime.unchecked_operators);
        assert_eq!(crate::default_limits(), Limits::from(rt::Limits::default()));
    }

    #[test]
    fn bad_open_options_are_invalid_input_naming_the_fault() {
        let base = OpenOptions {
            limits: None,
            memory_map: false,
            kernels: None,
            trusted_keys: Vec::new(),
            signature: None,
            unchecked_operators: false,
        };
        let unknown = OpenOptions {
            kernels: Some("sse9".into()),
            ..base.clone()
        };
        match unknown.to_runtime() {
            Err(StudentError::InvalidInput { reason }) => {
                assert!(
                    reason.contains("\"sse9\"") && reason.contains("avx512vnni"),
                    "{reason}"
                )
            }
            other => panic!("{other:?}"),
        }
        let portable = OpenOptions {
            kernels: Some("portable".into()),
            ..base.clone()
        };
        assert_eq!(
            portable.to_runtime().unwrap().kernels,
            Some(rt::Isa::Portable)
        );
        let lonely = OpenOptions {
            signature: Some(b"sig".to_vec()),
            ..base.clone()
        };
        assert!(matches!(
            lonely.to_runtime(),
            Err(StudentError::InvalidInput { .. })
        ));
        let bad_key = OpenOptions {
            trusted_keys: vec!["not a key".into()],
            ..base
        };
        assert!(matches!(
            bad_key.to_runtime(),
            Err(StudentError::InvalidInput { .. })
        ));
    }
}
