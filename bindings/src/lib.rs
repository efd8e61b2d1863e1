//! Kotlin and Swift bindings for `student-runtime`, generated with uniffi.
//!
//! This crate is glue only: every behaviour lives in the runtime and is reached through
//! the same calls. What it adds is the shape apps need at a language boundary:
//!
//! - [`StudentModel`]: an object that can be unloaded, shared between threads, and that
//!   turns the runtime's errors into [`StudentError`];
//! - records ([`ModelInfo`], [`Prediction`]) holding plain values instead of borrowed ones;
//! - [`EscalationHandler`] and [`LogSink`]: traits the app implements in Kotlin or Swift;
//! - [`Tensor`]: float samples that cross as little-endian bytes and arrive as a
//!   `FloatArray` in Kotlin and `[Float]` in Swift, never as a list of boxed floats.
//!
//! Panics in exported calls are caught by uniffi and reach the app as an exception; the
//! workspace's release profile keeps unwinding for that reason.

#![forbid(unsafe_code)]

mod error;
mod escalation;
mod logging;
mod model;
mod records;
mod tensor;

pub use error::StudentError;
pub use escalation::{EscalationError, EscalationHandler, EscalationRequest, HandlerAnswer};
pub use logging::{LogLevel, LogRecord, LogSink, LogSinkError, set_log_sink};
pub use model::{StudentModel, default_limits};
pub use records::{
    ClassifyOptions, EscalationOutcome, InputInfo, Limits, ModelInfo, OpenOptions, PixelFormat,
    Precision, Prediction, Ranked, ScoreKind,
};
pub use tensor::Tensor;

uniffi::setup_scaffolding!();

/// Panics on purpose. Built only with the `panic-probe` feature, for the tests that check a
/// panic in an exported call reaches the app as an exception instead of aborting it.
#[cfg(feature = "panic-probe")]
#[uniffi::export]
pub fn panic_probe() -> Result<(), StudentError> {
    panic!("panic_probe: a deliberate panic")
}
