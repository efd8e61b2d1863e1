//! The training side of `student`: make a small, calibrated student of a teacher.
//!
//! The flow is one way: a data set ([`Dataset`]) -> a teacher (trained here, or any ONNX
//! classifier) -> teacher logits over the training set, computed once through the runtime
//! and cached -> a student trained with the distillation loss, and a hard-label baseline of
//! the same architecture -> a temperature fitted on the validation split -> an escalation
//! threshold chosen on the validation split for a stated target -> ONNX files carrying their
//! model cards -> an evaluation on the test split ([`evaluate`]).
//!
//! [`run_recipe`] runs all of it from a TOML [`Recipe`].

#![forbid(unsafe_code)]

mod calibrate;
mod compare;
mod corrupt;
mod dataset;
mod error;
mod eval;
mod export;
mod idx;
mod loss;
mod net;
mod output;
mod pipeline;
mod plots;
mod progress;
mod quantize;
mod recipe;
mod report;
mod teacher_cache;
mod train;

pub use calibrate::{
    ECE_BINS, ThresholdChoice, ThresholdTarget, calibrate_and_choose, choose_threshold,
    expected_calibration_error, fit_temperature, temperature_scaling,
};
pub use compare::{
    CASCADE_SVG, CascadeFigures, ClassFigures, CompareOptions, Comparison, Curves, Latency,
    MAX_MODEL_NAME_LEN, MODEL_NAME_RULE, ModelFigures, NamedModel, PER_CLASS_SVG, RELIABILITY_SVG,
    REPORT_FILES, RISK_COVERAGE_SVG, ReportFolder, Robustness, TEACHER_NAME, compare_models,
    is_valid_model_name, prepare_report_dir, write_comparison_report,
};
pub use corrupt::{Corruption, MAX_BLUR_SIGMA};
pub use dataset::{Dataset, FASHION_MNIST_LABELS, Split};
pub use error::Error;
pub use eval::{EvalReport, evaluate, evaluate_logits};
pub use idx::{IdxArray, read_idx, read_idx_dims};
pub use loss::distillation_loss_reference;
pub use output::{check_replaceable, replace_file, same_file};
pub use pipeline::{output_files, run_recipe};
pub use plots::{
    CascadeCurve, ClassValues, Curve, Reliability, ReliabilityBin, cascade_plot,
    per_class_accuracy, reliability_diagram, risk_coverage,
};
pub use progress::{Progress, Silent};
pub use quantize::{
    Fp16Summary, Int8Summary, MIN_CALIBRATION_SAMPLES, QuantizeSettings, QuantizedStudent,
    RangeMethod, SUPPORTED_OPS, check_quantizable, convert_fp16, measure_on_test, quantize_int8,
    quantize_student,
};
pub use recipe::{QuantizeSection, Recipe};
pub use report::{DistillReport, Params, QuantizedReport};
