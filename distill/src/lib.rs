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
mod dataset;
mod error;
mod eval;
mod export;
mod idx;
mod loss;
mod net;
mod pipeline;
mod progress;
mod recipe;
mod report;
mod teacher_cache;
mod train;

pub use calibrate::{
    ECE_BINS, ThresholdChoice, ThresholdTarget, choose_threshold, expected_calibration_error,
    fit_temperature, temperature_scaling,
};
pub use dataset::{Dataset, FASHION_MNIST_LABELS, Split};
pub use error::Error;
pub use eval::{EvalReport, evaluate, evaluate_logits};
pub use idx::{IdxArray, read_idx};
pub use loss::distillation_loss_reference;
pub use pipeline::run_recipe;
pub use progress::{Progress, Silent};
pub use recipe::Recipe;
pub use report::{DistillReport, Params};
