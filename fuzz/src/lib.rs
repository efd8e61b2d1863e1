//! The fuzz targets' shared code: what each target does with its input (the same file
//! the regression test replays findings through) and the panic policy.

use std::collections::HashMap;
use std::panic::PanicHookInfo;
use std::sync::{Mutex, Once};

#[path = "../../tests/src/fuzzing.rs"]
pub mod fuzzing;

/// Installs the panic policy; call it first in every target.
///
/// libfuzzer-sys aborts on every panic, including those the runtime catches around tract
/// (`catch_unwind` in `model.rs`, `engine.rs` and the compiler) and turns into a typed
/// error. Such a panic is not a crash for our users, so here a panic raised inside a
/// third-party crate (a path under `.cargo/registry`), or by the fuzz hook on purpose,
/// unwinds as it would in an app: the runtime catches it, or, uncaught, it reaches
/// libfuzzer-sys's own `catch_unwind`, which aborts and records the input. Each such
/// panic site is logged the first time and at every power of two (every time with
/// `STUDENT_FUZZ_VERBOSE`), as `caught-panic-candidate #N at FILE:LINE: MESSAGE`. Any
/// other panic aborts at once.
pub fn init() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if info.payload().is::<fuzzing::DeliberateHookPanic>() {
                return;
            }
            if !third_party(info) {
                previous(info);
                std::process::abort();
            }
            let site = info
                .location()
                .map_or_else(|| "?".to_string(), |l| format!("{}:{}", l.file(), l.line()));
            let n = {
                let mut counts = COUNTS.lock().unwrap_or_else(|p| p.into_inner());
                let n = counts
                    .get_or_insert_with(HashMap::new)
                    .entry(site.clone())
                    .or_insert(0);
                *n += 1;
                *n
            };
            if n.is_power_of_two() || verbose() {
                eprintln!("caught-panic-candidate #{n} at {site}: {}", message(info));
            }
        }));
    });
}

static COUNTS: Mutex<Option<HashMap<String, u64>>> = Mutex::new(None);

fn third_party(info: &PanicHookInfo<'_>) -> bool {
    info.location()
        .is_some_and(|l| l.file().contains("/.cargo/registry/"))
}

fn message(info: &PanicHookInfo<'_>) -> String {
    if let Some(s) = info.payload().downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = info.payload().downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-string payload)".to_string()
    }
}

/// Prints a target's outcome when `STUDENT_FUZZ_VERBOSE` is set (to triage a finding or
/// a crafted input: `STUDENT_FUZZ_VERBOSE=1 fuzz/target/.../open_onnx FILE`).
pub fn report(outcome: fuzzing::Outcome) {
    if verbose() {
        eprintln!("outcome: {outcome:?}");
    }
}

/// Whether `STUDENT_FUZZ_VERBOSE` is set: then every outcome and every caught panic is
/// printed (replaying a corpus with it counts the panics per site).
fn verbose() -> bool {
    static VERBOSE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *VERBOSE.get_or_init(|| std::env::var_os("STUDENT_FUZZ_VERBOSE").is_some())
}
