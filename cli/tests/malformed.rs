//! The corpus of malformed model files (`tests/malformed/`, listed in its `cases.json`)
//! through the command line: `student inspect FILE` and `student run FILE IMAGE` each
//! exit with code 1 and print one line, the error, on standard error; no panic text.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn student(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_student"))
        .args(args)
        // What a user sees by default: warnings on, no backtraces.
        .env("RUST_LOG", "warn")
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("the student binary runs")
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn corpus_dir() -> PathBuf {
    root().join("tests/malformed")
}

fn sample() -> String {
    root()
        .join("models/fashion-mnist/samples/test-00000-label-9.png")
        .display()
        .to_string()
}

fn listing() -> Value {
    let text = std::fs::read_to_string(corpus_dir().join("cases.json")).expect("cases.json");
    serde_json::from_str(&text).expect("cases.json is JSON")
}

fn field<'v>(entry: &'v Value, key: &str) -> &'v str {
    entry[key]
        .as_str()
        .unwrap_or_else(|| panic!("`{key}` missing from {entry}"))
}

/// The file a case opens: a corpus file, or a cut of a shipped file written to `dir`.
fn case_file(entry: &Value, dir: &Path) -> PathBuf {
    if let Some(file) = entry["file"].as_str() {
        return corpus_dir().join(file);
    }
    let whole = std::fs::read(root().join(field(entry, "source"))).unwrap();
    let percent = entry["keep_percent"].as_u64().expect("keep_percent") as usize;
    let path = dir.join(field(entry, "name").replace('/', "-"));
    std::fs::write(&path, &whole[..whole.len() * percent / 100]).unwrap();
    path
}

/// What is wrong with a refused run, if anything: the exit code, panic text, more than
/// one line, or a line that is not the expected error naming the file.
fn problem(o: &Output, path: &str, message: &str) -> Option<String> {
    let err = String::from_utf8_lossy(&o.stderr);
    let lines: Vec<&str> = err.lines().collect();
    if o.status.code() != Some(1) {
        Some(format!("exit status {}", o.status))
    } else if ["panicked at", "RUST_BACKTRACE", "stack backtrace"]
        .iter()
        .any(|p| err.contains(p))
    {
        Some("panic text".to_string())
    } else if lines.len() != 1 {
        Some(format!("{} lines on stderr", lines.len()))
    } else if !lines[0].starts_with("error: ") || !lines[0].contains(path) {
        Some("not an error line naming the file".to_string())
    } else if !lines[0].contains(message) {
        Some(format!("`{message}` not in the error"))
    } else {
        None
    }
    .map(|p| format!("{p}:\n    {}", lines.join("\n    ")))
}

#[test]
fn every_case_is_one_error_line_and_exit_code_1() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("cli-malformed-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let listing = listing();
    let sample = sample();
    let mut failures = Vec::new();
    let mut checked = 0;
    for entry in listing["cases"].as_array().expect("a list of cases") {
        let name = field(entry, "name");
        if let Some(pending) = entry["pending"].as_str() {
            eprintln!(
                "skipped {name} (pending {pending}: {})",
                field(entry, "today")
            );
            continue;
        }
        let path = case_file(entry, &dir).display().to_string();
        let message = field(entry, "message");
        for (command, args) in [
            ("inspect", vec!["inspect", path.as_str()]),
            ("run", vec!["run", path.as_str(), sample.as_str()]),
        ] {
            if let Some(p) = problem(&student(&args), &path, message) {
                failures.push(format!("{name} ({command}): {p}"));
            }
        }
        checked += 1;
    }
    assert!(checked >= 100, "only {checked} cases were run");
    assert!(
        failures.is_empty(),
        "{} failures over {checked} cases:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn the_files_the_cases_are_made_from_run() {
    let listing = listing();
    let controls = listing["controls"].as_array().expect("a list of controls");
    assert!(!controls.is_empty());
    for control in controls {
        let path = corpus_dir()
            .join(field(control, "file"))
            .display()
            .to_string();
        let sample = sample();
        for args in [
            vec!["inspect", path.as_str()],
            vec!["run", path.as_str(), sample.as_str()],
        ] {
            let o = student(&args);
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(o.status.success(), "{args:?}: {err}");
            assert!(err.is_empty(), "{args:?}: {err}");
        }
    }
}
