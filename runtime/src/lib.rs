//! Run knowledge-distilled student models on a device.
//!
//! A student is an ONNX classifier that carries its own model card in the ONNX
//! `metadata_props`: labels, input layout and scaling, the fitted temperature and the
//! escalation threshold. [`StudentModel::open`] memory-maps such a file, reads the card,
//! validates it and prepares an execution plan. [`StudentModel::classify`] turns an input
//! tensor into a [`Prediction`]: calibrated probabilities, a confidence score, and a
//! decision to accept the student's answer or to escalate it through an
//! [`EscalationHook`] that the application owns (a server, a larger model, a review queue).
//!
//! ```no_run
//! use student_runtime::{ClassifyOptions, StudentModel};
//!
//! # fn main() -> Result<(), student_runtime::Error> {
//! let model = StudentModel::open("models/fashion-mnist/student.onnx")?;
//! let pixels = vec![0u8; 28 * 28];
//! let input = model.input_spec().tensor_from_gray8(&pixels, 28, 28)?;
//! let prediction = model.classify(&input, &ClassifyOptions::default(), None)?;
//! println!("{} ({:.2})", prediction.final_label, prediction.confidence);
//! # Ok(())
//! # }
//! ```

// Only the memory-map module holds `unsafe`; it opts back in with a documented block.
// The SIMD kernels live in the `student-kernels` crate.
#![deny(unsafe_code)]

mod card;
#[cfg(feature = "onnx")]
mod compile;
mod compiled;
#[cfg(feature = "onnx")]
mod engine;
mod error;
mod escalation;
mod info;
mod limits;
mod model;
#[cfg(feature = "onnx")]
mod onnx_attributes;
#[cfg(feature = "onnx")]
mod onnx_info;
#[cfg(feature = "onnx")]
mod onnx_wire;
mod prediction;
mod preprocess;
mod score;
pub mod signing;
mod source;
#[cfg(feature = "onnx")]
mod tract_checked;

pub use card::{
    CARD_KEY_PREFIX, CalibrationInfo, EscalationPolicy, InputSpec, ModelCard, NonFinite, Precision,
    QuantizationInfo, ScoreKind, TeacherRef,
};
#[cfg(feature = "onnx")]
pub use compile::{Compiled, compile_onnx};
pub use compiled::starts_like_compiled;
pub use error::{Error, HookError};
pub use escalation::{
    AbandonedCalls, CascadeHook, DEFAULT_MAX_ABANDONED, DeadlineHook, EscalationHook,
    EscalationRequest, HookAnswer,
};
pub use limits::Limits;
#[cfg(feature = "onnx")]
pub use limits::decode_onnx;
pub use model::{ClassifyOptions, OpenOptions, StudentModel};
#[cfg(feature = "onnx")]
pub use onnx_info::QUANTIZED_SOFTMAX_ADVICE;
pub use prediction::{AnsweredBy, Decision, EscalationOutcome, Prediction, Ranked};
pub use preprocess::PixelFormat;
pub use score::{calibrated_probabilities, score_from_probabilities};
pub use student_kernels::Isa;
