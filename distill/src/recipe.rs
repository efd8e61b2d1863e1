//! The recipe: one TOML file that says how a teacher and its student are made.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use student_runtime::{Precision, ScoreKind};

use crate::calibrate::ThresholdTarget;
use crate::error::Error;
use crate::net::NetSpec;
use crate::quantize::RangeMethod;
use crate::train::TrainSettings;

/// The widest conv or dense layer a recipe may ask for.
const MAX_WIDTH: usize = 4096;

/// A distillation recipe, as read from TOML. Relative paths are resolved against the
/// recipe's folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// Names the produced models (`NAME-teacher`, `NAME-student`, `NAME-baseline`).
    pub name: String,
    /// Seeds weight initialization and batch order: the same recipe gives the same weights
    /// on the same build and machine.
    pub seed: u64,
    /// The data.
    pub data: DataSection,
    /// The teacher: trained here, or an existing ONNX file.
    pub teacher: TeacherSection,
    /// The student and its distillation.
    pub student: StudentSection,
    /// Temperature scaling and the escalation threshold.
    pub calibration: CalibrationSection,
    /// Where the models and the report go.
    pub output: OutputSection,
    /// Quantized copies of the student to make; none without this section.
    #[serde(default)]
    pub quantize: Option<QuantizeSection>,
}

/// Quantized copies of the distilled student (`student-int8.onnx`, `student-fp16.onnx`),
/// re-calibrated on the validation split with the recipe's threshold target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuantizeSection {
    /// Which: `"int8"`, `"fp16"`, or both.
    pub precisions: Vec<Precision>,
    /// int8 activation ranges: `"minmax"`, `"percentile"` or `"entropy"`.
    #[serde(default = "default_method")]
    pub method: String,
    /// The percentile kept by the percentile method.
    #[serde(default = "default_percentile")]
    pub percentile: f64,
    /// Validation images that calibrate int8 activation ranges.
    #[serde(default = "default_samples")]
    pub samples: usize,
}

fn default_method() -> String {
    "minmax".to_string()
}

fn default_percentile() -> f64 {
    99.99
}

fn default_samples() -> usize {
    1000
}

impl QuantizeSection {
    /// The activation range method named by `method` and `percentile`.
    pub fn range_method(&self) -> Result<RangeMethod, String> {
        match self.method.as_str() {
            "minmax" => Ok(RangeMethod::MinMax),
            "percentile" if self.percentile > 50.0 && self.percentile <= 100.0 => {
                Ok(RangeMethod::Percentile(self.percentile))
            }
            "percentile" => Err(format!(
                "quantize.percentile {} must lie in (50, 100]",
                self.percentile
            )),
            "entropy" => Ok(RangeMethod::Entropy),
            other => Err(format!(
                "quantize.method `{other}`: expected minmax, percentile or entropy"
            )),
        }
    }
}

/// Which data, and how much of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSection {
    /// Only `fashion-mnist` for now.
    pub source: String,
    /// Folder of the IDX files; defaults to `$STUDENT_FASHION_MNIST_DIR` or Debian's.
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// Training images held back for calibration and threshold choice.
    pub validation: usize,
    /// Use only the first N training images (0: all); for quick trials and tests.
    #[serde(default)]
    pub train_limit: usize,
    /// Use only the first N test images (0: all).
    #[serde(default)]
    pub test_limit: usize,
    /// Per-channel mean and standard deviation of pixels scaled to `[0, 1]`.
    pub mean: f32,
    /// See `mean`.
    pub std: f32,
}

/// The teacher.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeacherSection {
    /// An existing ONNX teacher; when set, no teacher is trained.
    #[serde(default)]
    pub onnx: Option<PathBuf>,
    /// The architecture to train when `onnx` is not set.
    #[serde(default)]
    pub net: Option<NetSpec>,
    /// Training settings when `onnx` is not set.
    #[serde(default)]
    pub train: Option<TrainSettings>,
}

/// The student.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StudentSection {
    /// The architecture (the hard-label baseline uses the same).
    pub net: NetSpec,
    /// Training settings (the baseline uses the same).
    pub train: TrainSettings,
    /// Distillation temperature `T`.
    pub temperature: f32,
    /// Weight of the soft (teacher) term; `1 - alpha` weighs the hard labels.
    pub alpha: f32,
}

/// Calibration and escalation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalibrationSection {
    /// The score the threshold applies to.
    pub score: ScoreKind,
    /// What the threshold must achieve on the validation split.
    pub target: ThresholdTarget,
}

/// Outputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSection {
    /// Folder for `teacher.onnx`, `student.onnx`, `baseline.onnx` and `report.json`.
    pub dir: PathBuf,
    /// Folder for caches (teacher logits); defaults to `target/student-cache`.
    #[serde(default)]
    pub cache: Option<PathBuf>,
}

impl Recipe {
    /// Reads and checks a recipe; relative paths become relative to the recipe's folder.
    ///
    /// # Errors
    /// [`Error::Io`] when the file cannot be read; [`Error::Recipe`] for TOML errors (with
    /// line and column), unknown keys, or inconsistent values.
    pub fn load(path: &Path) -> Result<Recipe, Error> {
        let text = crate::idx::read_regular_file(path).and_then(|bytes| {
            String::from_utf8(bytes)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
        });
        let text = text.map_err(|source| Error::Io {
            action: "cannot read recipe",
            path: path.to_path_buf(),
            source,
        })?;
        let bad = |reason: String| Error::Recipe {
            path: path.to_path_buf(),
            reason,
        };
        let mut recipe: Recipe = toml::from_str(&text).map_err(|e| bad(one_line(&e, &text)))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                // Drop `.` components so that reports print `dir/file`, not `dir/./file`.
                *p = base
                    .join(&*p)
                    .components()
                    .filter(|c| !matches!(c, std::path::Component::CurDir))
                    .collect();
            }
        };
        resolve(&mut recipe.output.dir);
        if let Some(cache) = recipe.output.cache.as_mut() {
            resolve(cache);
        }
        if let Some(dir) = recipe.data.dir.as_mut() {
            resolve(dir);
        }
        if let Some(onnx) = recipe.teacher.onnx.as_mut() {
            resolve(onnx);
        }
        recipe.check().map_err(bad)?;
        Ok(recipe)
    }

    fn check(&self) -> Result<(), String> {
        if self.data.source != "fashion-mnist" {
            return Err(format!(
                "data source `{}` is not supported, expected fashion-mnist",
                self.data.source
            ));
        }
        if !(self.data.std > 0.0 && self.data.std.is_finite() && self.data.mean.is_finite()) {
            return Err("data.std must be positive and data.mean finite".to_string());
        }
        if self.teacher.onnx.is_none()
            && (self.teacher.net.is_none() || self.teacher.train.is_none())
        {
            return Err("[teacher] needs either `onnx` or both `net` and `train`".to_string());
        }
        if !(self.student.temperature > 0.0 && self.student.temperature.is_finite()) {
            return Err(format!(
                "student.temperature {} must be positive",
                self.student.temperature
            ));
        }
        if !(0.0..=1.0).contains(&self.student.alpha) {
            return Err(format!(
                "student.alpha {} must lie in [0, 1]",
                self.student.alpha
            ));
        }
        if self.data.validation == 0 {
            return Err(
                "data.validation must be positive: the temperature and the threshold \
                        are fitted on it"
                    .to_string(),
            );
        }
        if !(0.0..=1.0).contains(&self.data.mean) || !(self.data.std > 0.0 && self.data.std <= 1.0)
        {
            return Err(format!(
                "data.mean {} must lie in [0, 1] and data.std {} in (0, 1]: they describe \
                 pixels scaled to [0, 1]",
                self.data.mean, self.data.std
            ));
        }
        let trainings = [
            ("student", Some(&self.student.train)),
            ("teacher", self.teacher.train.as_ref()),
        ];
        for (who, t) in trainings.into_iter().filter_map(|(w, t)| t.map(|t| (w, t))) {
            if t.epochs == 0
                || t.batch == 0
                || !(t.learning_rate.is_finite() && t.learning_rate > 0.0)
            {
                return Err(format!(
                    "{who}.train: epochs, batch and learning_rate must be positive and finite"
                ));
            }
        }
        let nets = [
            ("student", Some(&self.student.net)),
            ("teacher", self.teacher.net.as_ref()),
        ];
        for (who, net) in nets.into_iter().filter_map(|(w, n)| n.map(|n| (w, n))) {
            if net.convs.contains(&0) {
                return Err(format!("{who}.net: conv channel counts must be positive"));
            }
            // Bound the widths before anything is allocated for them.
            if net
                .convs
                .iter()
                .chain([&net.hidden])
                .any(|&w| w > MAX_WIDTH)
            {
                return Err(format!(
                    "{who}.net: layer widths must be at most {MAX_WIDTH}"
                ));
            }
        }
        if let Some(q) = &self.quantize {
            q.range_method()?;
            if q.precisions.contains(&Precision::Fp32) {
                return Err(
                    "quantize.precisions: fp32 is the student itself; use int8 or fp16".to_string(),
                );
            }
            if q.samples < crate::quantize::MIN_CALIBRATION_SAMPLES {
                return Err(format!(
                    "quantize.samples {} is below the minimum of {}",
                    q.samples,
                    crate::quantize::MIN_CALIBRATION_SAMPLES
                ));
            }
        }
        self.calibration
            .target
            .validate()
            .map_err(|reason| format!("calibration.{reason}"))
    }
}

/// A TOML error as one line: the message and where it is (line and column).
fn one_line(error: &toml::de::Error, text: &str) -> String {
    let message = error.message().trim().replace('\n', " ");
    match error.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("line {line}, column {column}: {message}")
        }
        None => message,
    }
}
