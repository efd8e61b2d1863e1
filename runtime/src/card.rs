//! The model card: what a student file says about itself.
//!
//! The card lives in the ONNX `metadata_props` as one entry per section, each a JSON
//! value under a key starting with [`CARD_KEY_PREFIX`]. A file without a card still runs:
//! every missing section gets a stated default, listed by [`ModelCard::defaults_applied`].

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// Every card key starts with this prefix (for example `student.labels`).
pub const CARD_KEY_PREFIX: &str = "student.";

/// The self-description a student file carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCard {
    /// A short name for the model.
    pub name: String,
    /// Class labels, in logit order.
    pub labels: Vec<String>,
    /// The input the model expects and how raw pixels are scaled into it.
    pub input: InputSpec,
    /// How logits become calibrated probabilities.
    pub calibration: CalibrationInfo,
    /// When a prediction is accepted and when it escalates.
    pub escalation: EscalationPolicy,
    /// The teacher this student was distilled from, if any.
    pub teacher: Option<TeacherRef>,
    /// The data the model was trained and measured on (free-form JSON).
    pub data: Option<serde_json::Value>,
    /// The recipe that produced the model (free-form JSON).
    pub recipe: Option<serde_json::Value>,
    /// Measured metrics (free-form JSON).
    pub metrics: Option<serde_json::Value>,
    /// How the weights were reduced to fp16 or int8; absent for an fp32 model.
    pub quantization: Option<QuantizationInfo>,
    /// Card sections that were missing from the file and took a default, with the default.
    #[serde(skip)]
    defaults_applied: Vec<String>,
}

/// The sections every card written by `student` has; a card with any entry needs them all.
const CORE_SECTIONS: [&str; 5] = ["name", "labels", "input", "calibration", "escalation"];

/// Every section a card may have (each a `student.`-prefixed metadata entry).
const SECTIONS: [&str; 10] = [
    "name",
    "labels",
    "input",
    "calibration",
    "escalation",
    "teacher",
    "data",
    "recipe",
    "metrics",
    "quantization",
];

/// Temperatures outside this range are refused: they make every probability 0 or 1, or
/// every class equally likely.
const TEMPERATURE_RANGE: std::ops::RangeInclusive<f32> = 1e-3..=1e3;

/// Normalized pixels beyond this magnitude mean a broken input spec: real normalizations
/// map 0..255 to within a few units of zero.
const MAX_NORMALIZED: f32 = 1e4;

/// The declared input of a model: shape, layout and the pixel scaling.
///
/// A raw pixel `p` in `[0, 255]` becomes `(p * scale - mean[c]) / std[c]` for channel `c`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// Dimension order; only `"NCHW"` is supported.
    pub layout: String,
    /// Channels per image.
    pub channels: usize,
    /// Image height in pixels.
    pub height: usize,
    /// Image width in pixels.
    pub width: usize,
    /// Multiplier applied to raw 8-bit pixels before normalization.
    pub scale: f32,
    /// Per-channel mean subtracted after scaling.
    pub mean: Vec<f32>,
    /// Per-channel standard deviation divided after subtracting the mean.
    pub std: Vec<f32>,
    /// What the runtime does with NaN or infinite input values (reject by default).
    #[serde(default, skip_serializing_if = "NonFinite::is_reject")]
    pub non_finite: NonFinite,
}

/// What the runtime does with a NaN or infinite value in an input tensor, as the model card
/// says (`"non_finite"` in the `input` section).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NonFinite {
    /// Refuse the input with [`Error::InvalidInput`] naming the first such value.
    #[default]
    Reject,
    /// Replace every NaN or infinite value by 0 (for a normalized input, the channel's
    /// mean) and run; for models trained with missing values filled that way.
    Zero,
}

impl NonFinite {
    fn is_reject(&self) -> bool {
        *self == NonFinite::Reject
    }
}

/// Temperature scaling of the logits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalibrationInfo {
    /// Probabilities are `softmax(logits / temperature)`.
    pub temperature: f32,
    /// How the temperature was obtained (for example "nll on validation split").
    pub method: String,
    /// Expected calibration error before scaling, when measured.
    #[serde(default)]
    pub ece_before: Option<f64>,
    /// Expected calibration error after scaling, when measured.
    #[serde(default)]
    pub ece_after: Option<f64>,
}

/// The rule that decides between accepting and escalating.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EscalationPolicy {
    /// The confidence score the threshold applies to.
    pub score: ScoreKind,
    /// Predictions whose score is below this value escalate; in `[0, 1]`.
    pub threshold: f32,
    /// How the threshold was chosen (target, split, measured rates).
    pub chosen_by: String,
}

/// A confidence score computed from calibrated probabilities; all lie in `[0, 1]` and
/// higher means more confident.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScoreKind {
    /// The largest probability.
    MaxProbability,
    /// The largest probability minus the second largest.
    Margin,
    /// One minus the entropy divided by its maximum, `ln(classes)`.
    Entropy,
}

impl ScoreKind {
    /// The name used in cards and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            ScoreKind::MaxProbability => "max_probability",
            ScoreKind::Margin => "margin",
            ScoreKind::Entropy => "entropy",
        }
    }

    /// Parses a name produced by [`ScoreKind::name`].
    pub fn from_name(name: &str) -> Option<ScoreKind> {
        match name {
            "max_probability" => Some(ScoreKind::MaxProbability),
            "margin" => Some(ScoreKind::Margin),
            "entropy" => Some(ScoreKind::Entropy),
            _ => None,
        }
    }
}

/// The numeric precision a model's weights are stored in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    /// 32-bit floats throughout.
    Fp32,
    /// Weights stored as 16-bit floats, computed in 32-bit floats.
    Fp16,
    /// Weights and activations quantized to 8-bit integers (QDQ), biases to 32-bit.
    Int8,
}

impl Precision {
    /// The name used in cards, file names and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Fp16 => "fp16",
            Precision::Int8 => "int8",
        }
    }
}

/// How a model was quantized: the `quantization` card section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuantizationInfo {
    /// The precision the weights are stored in.
    pub precision: Precision,
    /// What was done, in words: weight and activation schemes, calibration method and data.
    pub method: String,
    /// SHA-256 of the fp32 file it was made from, hex encoded.
    pub source_sha256: String,
}

/// The identity of the teacher a student was distilled from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeacherRef {
    /// The teacher's name.
    pub name: String,
    /// SHA-256 of the teacher's ONNX file, hex encoded.
    pub sha256: String,
    /// The teacher's parameter count.
    pub params: u64,
}

impl ModelCard {
    /// Builds a card from explicit parts; no section is defaulted.
    pub fn new(
        name: impl Into<String>,
        labels: Vec<String>,
        input: InputSpec,
        calibration: CalibrationInfo,
        escalation: EscalationPolicy,
    ) -> Self {
        ModelCard {
            name: name.into(),
            labels,
            input,
            calibration,
            escalation,
            teacher: None,
            data: None,
            recipe: None,
            metrics: None,
            quantization: None,
            defaults_applied: Vec::new(),
        }
    }

    /// The card sections that the file lacked, each with the default that replaced it.
    /// Empty for a complete card.
    pub fn defaults_applied(&self) -> &[String] {
        &self.defaults_applied
    }

    /// The precision of the weights: the quantization section's, or fp32 without one.
    pub fn precision(&self) -> Precision {
        self.quantization
            .as_ref()
            .map_or(Precision::Fp32, |q| q.precision)
    }

    /// The card as `metadata_props` entries (key, JSON value), in a stable order.
    pub fn to_metadata(&self) -> Vec<(String, String)> {
        let mut entries = vec![
            ("name", serde_json::Value::String(self.name.clone())),
            ("labels", json(&self.labels)),
            ("input", json(&self.input)),
            ("calibration", json(&self.calibration)),
            ("escalation", json(&self.escalation)),
        ];
        let optional = [
            ("teacher", self.teacher.as_ref().map(json)),
            ("data", self.data.clone()),
            ("recipe", self.recipe.clone()),
            ("metrics", self.metrics.clone()),
            ("quantization", self.quantization.as_ref().map(json)),
        ];
        entries.extend(optional.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))));
        entries
            .into_iter()
            .map(|(key, value)| (format!("{CARD_KEY_PREFIX}{key}"), value.to_string()))
            .collect()
    }

    /// Reads a card from `metadata_props` entries.
    ///
    /// `classes` and `input_dims` come from the graph itself and supply the defaults for a
    /// missing `labels` or `input` section. `origin` names the file in errors.
    ///
    /// # Errors
    /// [`Error::InvalidCard`] when a present entry is not valid JSON of the expected form, or
    /// contradicts the graph (label count, input dimensions, a threshold outside `[0, 1]`).
    pub fn from_metadata<'a>(
        entries: impl IntoIterator<Item = (&'a str, &'a str)>,
        classes: usize,
        input_dims: &[usize],
        origin: &str,
    ) -> Result<ModelCard, Error> {
        let entries: Vec<(&str, &str)> = entries
            .into_iter()
            .filter_map(|(k, v)| k.strip_prefix(CARD_KEY_PREFIX).map(|k| (k, v)))
            .collect();
        let find = |key: &str| entries.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
        let invalid = |key: &str, reason: String| Error::InvalidCard {
            origin: origin.to_string(),
            key: format!("{CARD_KEY_PREFIX}{key}"),
            reason,
        };
        let mut seen = HashSet::new();
        for (key, _) in &entries {
            if !seen.insert(*key) {
                return Err(invalid(key, "appears more than once".to_string()));
            }
            // A section this runtime does not know may change what the card means (a new
            // preprocessing step, say): refused rather than ignored, like unknown fields
            // inside the sections it knows.
            if !SECTIONS.contains(key) {
                return Err(invalid(
                    key,
                    format!(
                        "is not a card section this runtime knows (it reads {})",
                        SECTIONS.join(", ")
                    ),
                ));
            }
        }
        // A card is all or nothing: a file with some sections but not the core ones was
        // most likely cut short, and defaults would hide that.
        if !entries.is_empty() {
            if let Some(missing) = CORE_SECTIONS.iter().find(|k| find(k).is_none()) {
                return Err(invalid(
                    missing,
                    "missing while other card entries are present (is the file truncated?)"
                        .to_string(),
                ));
            }
        }
        let parse = |key: &str| -> Result<Option<serde_json::Value>, Error> {
            find(key)
                .map(|text| {
                    serde_json::from_str::<NoDuplicateKeys>(text)
                        .and_then(|_| serde_json::from_str(text))
                        .map_err(|e| invalid(key, e.to_string()))
                })
                .transpose()
        };
        fn typed<T: serde::de::DeserializeOwned>(
            value: Option<serde_json::Value>,
            key: &str,
            invalid: &dyn Fn(&str, String) -> Error,
        ) -> Result<Option<T>, Error> {
            value
                .map(|v| serde_json::from_value(v).map_err(|e| invalid(key, e.to_string())))
                .transpose()
        }

        let mut defaults = Vec::new();
        let name = match typed::<String>(parse("name")?, "name", &invalid)? {
            Some(name) => name,
            None => {
                defaults.push("name: \"unnamed\"".to_string());
                "unnamed".to_string()
            }
        };
        if name.chars().any(hides_text) {
            return Err(invalid(
                "name",
                "contains control or bidirectional formatting characters".to_string(),
            ));
        }
        let labels = match typed::<Vec<String>>(parse("labels")?, "labels", &invalid)? {
            Some(labels) if labels.iter().any(|l| l.chars().any(hides_text)) => {
                return Err(invalid(
                    "labels",
                    "a label contains control or bidirectional formatting characters".to_string(),
                ));
            }
            // A set, not a scan of the labels before each: a card may hold a million labels
            // and opening must stay linear in them. Labels are compared as they are shown:
            // "Bag" and "Bag" with a zero-width space would print alike.
            Some(labels) if !distinct_as_shown(&labels) => {
                return Err(invalid(
                    "labels",
                    "labels must be non-empty and distinct as shown (ignoring spaces at either \
                     end and invisible characters)"
                        .to_string(),
                ));
            }
            Some(labels) if labels.len() != classes => {
                return Err(invalid(
                    "labels",
                    format!(
                        "{} labels, but the model outputs {classes} classes",
                        labels.len()
                    ),
                ));
            }
            Some(labels) => labels,
            None => {
                defaults.push(format!("labels: class indices 0..{classes}"));
                (0..classes).map(|i| i.to_string()).collect()
            }
        };
        let input = match typed::<InputSpec>(parse("input")?, "input", &invalid)? {
            Some(spec) => {
                spec.validate(input_dims)
                    .map_err(|reason| invalid("input", reason))?;
                spec
            }
            None => {
                let spec = InputSpec::default_for(input_dims)
                    .map_err(|reason| invalid("input", reason))?;
                defaults.push(format!(
                    "input: NCHW {}x{}x{}, pixels scaled by 1/255, no normalization",
                    spec.channels, spec.height, spec.width
                ));
                spec
            }
        };
        let calibration =
            match typed::<CalibrationInfo>(parse("calibration")?, "calibration", &invalid)? {
                Some(c) if !TEMPERATURE_RANGE.contains(&c.temperature) => {
                    return Err(invalid(
                        "calibration",
                        format!(
                            "temperature {} is outside [{}, {}]",
                            c.temperature,
                            TEMPERATURE_RANGE.start(),
                            TEMPERATURE_RANGE.end()
                        ),
                    ));
                }
                Some(c) => c,
                None => {
                    defaults.push("calibration: temperature 1 (uncalibrated)".to_string());
                    CalibrationInfo {
                        temperature: 1.0,
                        method: "none".to_string(),
                        ece_before: None,
                        ece_after: None,
                    }
                }
            };
        let escalation =
            match typed::<EscalationPolicy>(parse("escalation")?, "escalation", &invalid)? {
                Some(p) if !(0.0..=1.0).contains(&p.threshold) => {
                    return Err(invalid(
                        "escalation",
                        format!("threshold {} is outside [0, 1]", p.threshold),
                    ));
                }
                Some(p) => p,
                None => {
                    defaults.push(
                        "escalation: max_probability score, threshold 0 (never escalates)"
                            .to_string(),
                    );
                    EscalationPolicy {
                        score: ScoreKind::MaxProbability,
                        threshold: 0.0,
                        chosen_by: "default: no threshold in the model card".to_string(),
                    }
                }
            };
        Ok(ModelCard {
            name,
            labels,
            input,
            calibration,
            escalation,
            teacher: typed(parse("teacher")?, "teacher", &invalid)?,
            data: parse("data")?,
            recipe: parse("recipe")?,
            metrics: parse("metrics")?,
            quantization: typed(parse("quantization")?, "quantization", &invalid)?,
            defaults_applied: defaults,
        })
    }
}

impl InputSpec {
    /// The number of `f32` values in one input sample.
    pub fn len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// True when the spec describes an empty input (never for a valid spec).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The spec used when a file has no `input` card entry: the graph's own dimensions,
    /// raw pixels scaled to `[0, 1]`.
    fn default_for(dims: &[usize]) -> Result<InputSpec, String> {
        let (channels, height, width) = match dims {
            [_, c, h, w] => (*c, *h, *w),
            [_, features] => (1, 1, *features),
            other => {
                return Err(format!(
                    "cannot default an input spec for dimensions {other:?}"
                ));
            }
        };
        Ok(InputSpec {
            layout: "NCHW".to_string(),
            channels,
            height,
            width,
            scale: 1.0 / 255.0,
            mean: vec![0.0; channels],
            std: vec![1.0; channels],
            non_finite: NonFinite::Reject,
        })
    }

    /// Checks the spec is usable and agrees with the graph's input dimensions.
    fn validate(&self, dims: &[usize]) -> Result<(), String> {
        if self.layout != "NCHW" {
            return Err(format!(
                "layout `{}` is not supported, expected NCHW",
                self.layout
            ));
        }
        if self.mean.len() != self.channels || self.std.len() != self.channels {
            return Err(format!(
                "{} channels need {} mean and std values, found {} and {}",
                self.channels,
                self.channels,
                self.mean.len(),
                self.std.len()
            ));
        }
        if !(self.scale.is_finite() && self.scale > 0.0) {
            return Err(format!("scale {} must be a positive number", self.scale));
        }
        for (c, (mean, std)) in self.mean.iter().zip(&self.std).enumerate() {
            // Both ends of the pixel range must normalize to finite values.
            let ends = [0.0f32, 255.0].map(|p| (p * self.scale - mean) / std);
            if !(std.is_finite() && *std > 0.0) || ends.iter().any(|v| !(v.abs() <= MAX_NORMALIZED))
            {
                return Err(format!(
                    "channel {c}: mean {mean} and std {std} with scale {} map pixels 0..255 \
                     outside [-{MAX_NORMALIZED}, {MAX_NORMALIZED}] (std must be positive)",
                    self.scale
                ));
            }
        }
        let declared = [self.channels, self.height, self.width];
        let fits = match dims {
            [_, c, h, w] => [*c, *h, *w] == declared,
            [_, features] => {
                declared.iter().try_fold(1usize, |a, &d| a.checked_mul(d)) == Some(*features)
            }
            _ => false,
        };
        if !fits {
            return Err(format!(
                "card declares {}x{}x{} (channels x height x width), the graph input is {:?}",
                self.channels, self.height, self.width, dims
            ));
        }
        Ok(())
    }
}

/// A JSON text read only to find an object with a key given twice: a `Value` keeps the
/// last, so `{"threshold": 0.67, "threshold": 0}` read as a card that never escalates.
struct NoDuplicateKeys;

impl<'de> serde::Deserialize<'de> for NoDuplicateKeys {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NoDuplicateKeys)
    }
}

impl<'de> serde::de::Visitor<'de> for NoDuplicateKeys {
    type Value = NoDuplicateKeys;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self, E> {
        Ok(self)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Self, E> {
        Ok(self)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Self, E> {
        Ok(self)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Self, E> {
        Ok(self)
    }

    fn visit_str<E>(self, _: &str) -> Result<Self, E> {
        Ok(self)
    }

    fn visit_unit<E>(self) -> Result<Self, E> {
        Ok(self)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self, A::Error> {
        while seq.next_element::<NoDuplicateKeys>()?.is_some() {}
        Ok(self)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self, A::Error> {
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if seen.contains(&key) {
                return Err(serde::de::Error::custom(format!(
                    "key `{key}` appears twice in one object"
                )));
            }
            map.next_value::<NoDuplicateKeys>()?;
            seen.insert(key);
        }
        Ok(self)
    }
}

fn json<T: Serialize>(value: &T) -> serde_json::Value {
    // Serializing these plain structs cannot fail: no maps with non-string keys, no
    // non-finite floats are rejected by serde_json (they become null).
    serde_json::to_value(value).unwrap_or(serde_json::Value::Null)
}

/// Whether every label shows as something, and no two show alike (one pass: a card may
/// hold a million labels).
fn distinct_as_shown(labels: &[String]) -> bool {
    let mut seen = HashSet::with_capacity(labels.len());
    labels.iter().all(|l| {
        let s = shown(l);
        !s.is_empty() && seen.insert(s)
    })
}

/// A label as a terminal shows it: without characters that take no space (zero-width
/// spaces and joiners, the word joiner and invisible operators, the byte order mark, the
/// soft hyphen, variation selectors, tags, Hangul fillers) and without spaces at either end.
fn shown(label: &str) -> String {
    let invisible = |c: char| {
        matches!(
            c,
            '\u{00AD}'
                | '\u{034F}'
                | '\u{115F}'
                | '\u{1160}'
                | '\u{180B}'..='\u{180F}'
                | '\u{200B}'..='\u{200D}'
                | '\u{2060}'..='\u{2064}'
                | '\u{3164}'
                | '\u{FE00}'..='\u{FE0F}'
                | '\u{FEFF}'
                | '\u{FFA0}'
                | '\u{E0000}'..='\u{E007F}'
                | '\u{E0100}'..='\u{E01EF}'
        )
    };
    label
        .chars()
        .filter(|&c| !invisible(c))
        .collect::<String>()
        .trim()
        .to_string()
}

/// Characters that let a name or label rewrite how it, or the text around it, is shown:
/// control characters (escape sequences, carriage returns) and Unicode's Bidi_Control
/// set: the embeddings, overrides and isolates (U+202A to U+202E, U+2066 to U+2069), with
/// which "gpj.exe" can display as "exe.jpg", and the marks (U+061C, U+200E, U+200F),
/// which reorder the neutral characters around them.
fn hides_text(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn card() -> ModelCard {
        ModelCard::new(
            "t",
            vec!["a".into(), "b".into()],
            InputSpec::default_for(&[1, 1, 2, 2]).unwrap(),
            CalibrationInfo {
                temperature: 1.5,
                method: "nll".into(),
                ece_before: Some(0.1),
                ece_after: Some(0.02),
            },
            EscalationPolicy {
                score: ScoreKind::Margin,
                threshold: 0.3,
                chosen_by: "test".into(),
            },
        )
    }

    #[test]
    fn metadata_round_trip_keeps_every_section() {
        let mut original = card();
        original.metrics = Some(serde_json::json!({"accuracy": 0.9}));
        let entries = original.to_metadata();
        let read = ModelCard::from_metadata(
            entries.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            2,
            &[1, 1, 2, 2],
            "test",
        )
        .unwrap();
        assert_eq!(read, original);
        assert!(read.defaults_applied().is_empty());
    }

    #[test]
    fn a_key_given_twice_in_an_entry_is_refused() {
        // A JSON value keeps the last of two: the threshold would read as 0, never
        // escalating, where the first said 0.67.
        let mut entries = card().to_metadata();
        let (_, escalation) = entries
            .iter_mut()
            .find(|(k, _)| k.as_str() == "student.escalation")
            .expect("an escalation entry");
        let doubled = escalation.replacen('{', "{\"threshold\":0.0,", 1);
        assert!(doubled.matches("threshold").count() == 2, "{doubled}");
        *escalation = doubled;
        let err = ModelCard::from_metadata(
            entries.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            2,
            &[1, 1, 2, 2],
            "test",
        )
        .unwrap_err();
        assert!(
            matches!(&err, Error::InvalidCard { key, reason, .. }
                if key == "student.escalation" && reason.contains("`threshold` appears twice")),
            "{err}"
        );
    }

    #[test]
    fn a_million_labels_are_checked_in_linear_time() {
        // Checked as the correctness of a large card, not by timing: the former pairwise
        // scan made this case take hours, so the test would not finish.
        let n = 1 << 20;
        let mut labels: Vec<String> = (0..n).map(|i| format!("class {i}")).collect();
        let mut c = card();
        c.labels = labels.clone();
        let entries = c.to_metadata();
        let read = ModelCard::from_metadata(
            entries.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            n,
            &[1, 1, 2, 2],
            "test",
        )
        .unwrap();
        assert_eq!(read.labels.len(), n);
        // A duplicate at the very end is still found.
        labels[n - 1] = "class 0".to_string();
        c.labels = labels;
        let entries = c.to_metadata();
        let err = ModelCard::from_metadata(
            entries.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            n,
            &[1, 1, 2, 2],
            "test",
        )
        .unwrap_err();
        assert!(err.to_string().contains("distinct"), "{err}");
    }

    #[test]
    fn missing_card_gets_stated_defaults() {
        let read = ModelCard::from_metadata([], 3, &[1, 1, 4, 4], "test").unwrap();
        assert_eq!(read.labels, vec!["0", "1", "2"]);
        assert_eq!(read.escalation.threshold, 0.0);
        assert_eq!(read.calibration.temperature, 1.0);
        assert_eq!(read.defaults_applied().len(), 5);
    }

    /// The complete metadata of [`card`] with `key` set to `value`, read back for a graph
    /// of `classes` classes and a 1x1x2x2 input.
    fn read_with(key: &str, value: &str, classes: usize) -> Result<ModelCard, Error> {
        let mut entries = card().to_metadata();
        entries.retain(|(k, _)| k != key);
        entries.push((key.to_string(), value.to_string()));
        ModelCard::from_metadata(
            entries.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            classes,
            &[1, 1, 2, 2],
            "m.onnx",
        )
    }

    #[test]
    fn contradicting_label_count_is_an_error_naming_the_key() {
        let text = read_with("student.labels", r#"["a","b"]"#, 3)
            .unwrap_err()
            .to_string();
        assert!(
            text.contains("student.labels") && text.contains("3 classes"),
            "{text}"
        );
    }

    #[test]
    fn threshold_outside_unit_interval_is_rejected() {
        let value = r#"{"score":"margin","threshold":1.5,"chosen_by":"x"}"#;
        let err = read_with("student.escalation", value, 2).unwrap_err();
        assert!(err.to_string().contains("outside [0, 1]"), "{err}");
    }

    #[test]
    fn malformed_json_is_an_error_not_a_default() {
        assert!(read_with("student.calibration", "{not json", 2).is_err());
    }

    #[test]
    fn input_must_match_the_graph_dimension_by_dimension() {
        let swapped =
            r#"{"layout":"NCHW","channels":1,"height":1,"width":4,"scale":1,"mean":[0],"std":[1]}"#;
        let err = read_with("student.input", swapped, 2)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("1x1x4") && err.contains("[1, 1, 2, 2]"),
            "{err}"
        );
    }

    #[test]
    fn input_scaling_must_map_pixels_to_finite_values() {
        for (scale, mean, std) in [
            ("1", "1e39", "1"),
            ("1e38", "0", "1"),
            ("1", "0", "1e-45"),
            ("-1", "0", "1"),
            ("0", "0", "1"),
        ] {
            let spec = format!(
                r#"{{"layout":"NCHW","channels":1,"height":2,"width":2,"scale":{scale},"mean":[{mean}],"std":[{std}]}}"#
            );
            assert!(read_with("student.input", &spec, 2).is_err(), "{spec}");
        }
    }

    #[test]
    fn duplicate_and_partial_cards_are_errors() {
        let mut entries = card().to_metadata();
        entries.push(entries[0].clone());
        let read = |e: &[(String, String)]| {
            ModelCard::from_metadata(
                e.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                2,
                &[1, 1, 2, 2],
                "m",
            )
        };
        assert!(
            read(&entries)
                .unwrap_err()
                .to_string()
                .contains("more than once")
        );
        let partial: Vec<_> = card().to_metadata().into_iter().take(2).collect();
        assert!(
            read(&partial)
                .unwrap_err()
                .to_string()
                .contains("truncated")
        );
    }

    #[test]
    fn labels_must_be_distinct_and_non_empty() {
        assert!(read_with("student.labels", r#"["same","same"]"#, 2).is_err());
        assert!(read_with("student.labels", r#"["a"," "]"#, 2).is_err());
    }

    #[test]
    fn normalization_far_outside_a_few_units_is_refused() {
        let spec = r#"{"layout":"NCHW","channels":1,"height":2,"width":2,"scale":1,"mean":[3e38],"std":[1]}"#;
        assert!(read_with("student.input", spec, 2).is_err());
    }

    #[test]
    fn control_characters_and_extreme_temperatures_are_refused() {
        assert!(read_with("student.name", "\"a\\u001b[31mb\"", 2).is_err());
        assert!(read_with("student.labels", r#"["a\nb","c"]"#, 2).is_err());
        // A right-to-left override: "cat\u{202E}god" displays as "catdog" reversed.
        let bidi = read_with("student.labels", r#"["cat\u202egod","c"]"#, 2);
        assert!(
            bidi.is_err_and(|e| e.to_string().contains("bidirectional")),
            "a bidi override in a label"
        );
        assert!(read_with("student.name", r#""a\u2067b""#, 2).is_err());
        // Sections and fields this runtime does not know.
        let unknown = read_with("student.augment", "{}", 2);
        assert!(
            unknown.is_err_and(|e| e.to_string().contains("not a card section")),
            "an unknown section"
        );
        let spec = r#"{"layout":"NCHW","channels":1,"height":2,"width":2,"scale":1,
            "mean":[0],"std":[1],"resize":"bilinear"}"#;
        let field = read_with("student.input", spec, 2);
        assert!(
            field.is_err_and(|e| e.to_string().contains("unknown field `resize`")),
            "an unknown field"
        );
        // Labels that print alike.
        for twin in [
            r#"["Bag","Bag\u200b"]"#,
            r#"["Bag","B\udb40\udc41ag"]"#,
            r#"["Bag"," Bag"]"#,
        ] {
            let e = read_with("student.labels", twin, 2);
            assert!(
                e.is_err_and(|e| e.to_string().contains("distinct as shown")),
                "{twin}"
            );
        }
        assert!(read_with("student.labels", r#"["\u200b","c"]"#, 2).is_err());
        for mark in [r"\u061c", r"\u200e", r"\u200f"] {
            let label = format!(r#"["a{mark}b","c"]"#);
            assert!(read_with("student.labels", &label, 2).is_err(), "{mark}");
        }
        assert!(read_with("student.labels", r#"["caf\u00e9","\u732b"]"#, 2).is_ok());
        let cold = r#"{"temperature":1e-45,"method":"x"}"#;
        assert!(read_with("student.calibration", cold, 2).is_err());
    }
}
