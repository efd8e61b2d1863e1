//! Replays the fuzzers' minimized findings (`fuzz/`, see its README) as ordinary tests.
//!
//! `tests/fuzz-regressions/<target>/` holds, for each finding, the input file and a
//! sibling `<input>.txt` that says what the input broke and how it was fixed. Its first
//! line states what the call must return now: `expect: ok`, `expect: error`, or
//! `expect: error: TEXT` (an error whose message, causes included, contains TEXT). Every
//! input runs through the same function its fuzz target calls (`tests/src/fuzzing.rs`),
//! which also checks the runtime's contract for it; a panic fails the test. Findings that
//! were slow (libFuzzer timeouts) are replayed for their result only: tests check
//! correctness, not time, and a regression shows as a CI run that hangs.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[path = "../src/fuzzing.rs"]
mod fuzzing;

/// The folder of findings.
const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz-regressions");

/// Findings are minimized: anything larger was not run through `cargo fuzz tmin`.
const MAX_FINDING_BYTES: u64 = 8 * 1024;

#[derive(Debug, PartialEq)]
enum Expect {
    Ok,
    Error(Option<String>),
}

struct Finding {
    target: String,
    input: PathBuf,
    expect: Expect,
}

#[test]
fn every_finding_returns_what_its_note_says_without_panicking() {
    let findings = match list_findings(Path::new(DIR)) {
        Ok(findings) => findings,
        Err(e) => panic!("{e}"),
    };
    assert!(!findings.is_empty(), "no findings under {DIR}");
    replay(&findings);
}

/// Runs every finding and fails with the list of those that panicked or returned
/// something else than their note says.
fn replay(findings: &[Finding]) {
    let mut failures = Vec::new();
    for finding in findings {
        let name = format!(
            "{}/{}",
            finding.target,
            finding
                .input
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
        );
        let bytes = match std::fs::read(&finding.input) {
            Ok(bytes) => bytes,
            Err(e) => {
                failures.push(format!("{name}: cannot read: {e}"));
                continue;
            }
        };
        let started = Instant::now();
        let run = catch_unwind(AssertUnwindSafe(|| fuzzing::run(&finding.target, &bytes)));
        let took = started.elapsed();
        let outcome = match run {
            Err(_) => {
                failures.push(format!("{name}: panicked"));
                continue;
            }
            Ok(None) => unreachable!("targets were checked when listing"),
            Ok(Some(outcome)) => outcome,
        };
        let matches = match (&finding.expect, &outcome) {
            (Expect::Ok, Ok(())) => true,
            (Expect::Error(None), Err(_)) => true,
            (Expect::Error(Some(text)), Err(message)) => message.contains(text.as_str()),
            _ => false,
        };
        if matches {
            println!("{name} ({took:.1?}): {outcome:?}");
        } else {
            failures.push(format!(
                "{name}: expected {:?}, got {outcome:?}",
                finding.expect
            ));
        }
    }
    println!(
        "fuzz_regressions: {} findings replayed, {} failed",
        findings.len(),
        failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Every finding under `dir`, checked for a known target, a note and a small size.
fn list_findings(dir: &Path) -> Result<Vec<Finding>, String> {
    let mut findings = Vec::new();
    for target_dir in sorted_entries(dir)? {
        let target = file_name(&target_dir);
        if !target_dir.is_dir() || !fuzzing::TARGETS.contains(&target.as_str()) {
            return Err(format!(
                "{}: not a folder named after a fuzz target ({})",
                target_dir.display(),
                fuzzing::TARGETS.join(", ")
            ));
        }
        for path in sorted_entries(&target_dir)? {
            let name = file_name(&path);
            if let Some(input) = name.strip_suffix(".txt") {
                if !target_dir.join(input).is_file() {
                    return Err(format!("{}: a note without its input", path.display()));
                }
                continue;
            }
            let size = path.metadata().map_err(|e| e.to_string())?.len();
            if size > MAX_FINDING_BYTES {
                return Err(format!(
                    "{}: {size} bytes, more than {MAX_FINDING_BYTES}: minimize it",
                    path.display()
                ));
            }
            let note = target_dir.join(format!("{name}.txt"));
            let text = std::fs::read_to_string(&note)
                .map_err(|e| format!("{}: cannot read its note: {e}", path.display()))?;
            let at_note = |e: String| format!("{}: {e}", note.display());
            findings.push(Finding {
                target: target.clone(),
                expect: parse_expect(&text).map_err(at_note)?,
                input: path,
            });
        }
    }
    Ok(findings)
}

fn parse_expect(note: &str) -> Result<Expect, String> {
    let first = note.lines().next().unwrap_or_default().trim();
    match first.strip_prefix("expect:").map(str::trim) {
        Some("ok") => Ok(Expect::Ok),
        Some("error") => Ok(Expect::Error(None)),
        Some(rest) => match rest.strip_prefix("error:") {
            Some(text) if !text.trim().is_empty() => Ok(Expect::Error(Some(text.trim().into()))),
            _ => Err(format!("unknown expectation `{first}`")),
        },
        None => Err(format!(
            "the first line is `{first}`, expected `expect: ok`, `expect: error` or `expect: \
             error: TEXT`"
        )),
    }
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut paths = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot list {}: {e}", dir.display()))?
        .map(|entry| entry.map(|e| e.path()).map_err(|e| e.to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    paths.sort();
    Ok(paths)
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned()
}

#[test]
fn expectations_parse_strictly() {
    assert_eq!(parse_expect("expect: ok\nwhy"), Ok(Expect::Ok));
    assert_eq!(parse_expect("expect: error"), Ok(Expect::Error(None)));
    assert_eq!(
        parse_expect("expect: error: checksum\n"),
        Ok(Expect::Error(Some("checksum".into())))
    );
    for bad in ["", "ok", "expect: maybe", "expect: error:  "] {
        assert!(parse_expect(bad).is_err(), "{bad:?}");
    }
}
