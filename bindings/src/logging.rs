//! Forwarding the runtime's `log` records to the app's logger (Logcat, os_log).

use std::cell::Cell;
use std::sync::{Arc, OnceLock, PoisonError, RwLock};

use crate::error::StudentError;

/// The app's logger, implemented in Kotlin or Swift. Called on whichever thread logged;
/// it must not block for long. What it throws is dropped with the record.
#[uniffi::export(foreign)]
pub trait LogSink: Send + Sync {
    /// Receives one record. Anything thrown drops that record and nothing else.
    fn log(&self, record: LogRecord) -> Result<(), LogSinkError>;
}

/// What a log sink throws (any other exception is dropped the same way).
#[derive(Debug, thiserror::Error, uniffi::Error)]
pub enum LogSinkError {
    /// The record could not be logged.
    #[error("{reason}")]
    Failed {
        /// Why, in the sink's words.
        reason: String,
    },
}

impl From<uniffi::UnexpectedUniFFICallbackError> for LogSinkError {
    /// Any other exception the sink threw: without this, uniffi would panic.
    fn from(error: uniffi::UnexpectedUniFFICallbackError) -> Self {
        LogSinkError::Failed {
            reason: error.reason,
        }
    }
}

/// One runtime log record.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct LogRecord {
    /// Severity.
    pub level: LogLevel,
    /// The Rust module that logged, for example `student_runtime::model`.
    pub target: String,
    /// The text.
    pub text: String,
}

/// Severity of a record, most severe first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum LogLevel {
    /// A call failed.
    Error,
    /// Something was off but the call went on (a card default, a failing handler).
    Warn,
    /// Once per model lifecycle step (opened).
    Info,
    /// Decisions (which plan, which fallback).
    Debug,
    /// Per-inference detail.
    Trace,
}

/// Sends runtime log records at `level` and above to `sink`, replacing any sink set
/// before; `None` stops forwarding.
///
/// The forwarder is installed as the process's `log` logger on the first call and stays.
///
/// # Errors
/// [`StudentError::Logging`] when another Rust library in the app already installed a
/// `log` logger: records go to that one.
#[uniffi::export]
pub fn set_log_sink(sink: Option<Arc<dyn LogSink>>, level: LogLevel) -> Result<(), StudentError> {
    let forwarder = FORWARDER.get_or_init(|| {
        let installed = log::set_logger(&SINK).is_ok();
        Forwarder { installed }
    });
    if !forwarder.installed {
        return Err(StudentError::Logging {
            reason: "another logger is already installed for the `log` crate".to_string(),
        });
    }
    let enabled = sink.is_some();
    *SINK.sink.write().unwrap_or_else(PoisonError::into_inner) = sink;
    log::set_max_level(match (enabled, level) {
        (false, _) => log::LevelFilter::Off,
        (true, LogLevel::Error) => log::LevelFilter::Error,
        (true, LogLevel::Warn) => log::LevelFilter::Warn,
        (true, LogLevel::Info) => log::LevelFilter::Info,
        (true, LogLevel::Debug) => log::LevelFilter::Debug,
        (true, LogLevel::Trace) => log::LevelFilter::Trace,
    });
    Ok(())
}

/// Whether this library owns the `log` facade; decided once.
struct Forwarder {
    installed: bool,
}

static FORWARDER: OnceLock<Forwarder> = OnceLock::new();
static SINK: SinkLogger = SinkLogger {
    sink: RwLock::new(None),
};

struct SinkLogger {
    sink: RwLock<Option<Arc<dyn LogSink>>>,
}

thread_local! {
    /// Set while a record is being handed to the sink, so that a sink which calls back
    /// into Rust cannot recurse through the logger.
    static FORWARDING: Cell<bool> = const { Cell::new(false) };
}

impl log::Log for SinkLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) || FORWARDING.with(Cell::get) {
            return;
        }
        let Some(sink) = self
            .sink
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
        else {
            return;
        };
        let level = match record.level() {
            log::Level::Error => LogLevel::Error,
            log::Level::Warn => LogLevel::Warn,
            log::Level::Info => LogLevel::Info,
            log::Level::Debug => LogLevel::Debug,
            log::Level::Trace => LogLevel::Trace,
        };
        let record = LogRecord {
            level,
            target: record.target().to_string(),
            text: record.args().to_string(),
        };
        FORWARDING.with(|f| f.set(true));
        // Logging must never fail the call that logged, and logging the sink's own failure
        // would only reach the same sink: the record is dropped.
        let _dropped = sink.log(record);
        FORWARDING.with(|f| f.set(false));
    }

    fn flush(&self) {}
}
