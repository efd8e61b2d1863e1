//! The corpus of malformed model files in `tests/malformed/` (written by its `make.py`,
//! listed in its `cases.json`): each file is refused with the error variant and message
//! its case names, opened from a path and from bytes, and none makes the library panic.
//! The valid files the cases were made from open and run, so every case fails for its own
//! defect. `cli/tests/malformed.rs` runs the same corpus through the command line.

mod common;

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use common::{models_dir, scratch};
use serde_json::Value;
use student_runtime::{Error, OpenOptions, StudentModel};

/// One entry of `cases.json`.
struct Case {
    name: String,
    what: String,
    /// The `Error` variant expected, by name.
    error: String,
    /// A substring of the error and its causes.
    message: String,
    /// Why the case is not opened yet (the limits it waits for), and what it does today.
    pending: Option<(String, String)>,
    bytes: Vec<u8>,
    /// The file to open by path: the corpus file, or the cut written to a scratch folder.
    path: PathBuf,
}

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("malformed")
}

fn listing() -> Value {
    let text = std::fs::read_to_string(corpus_dir().join("cases.json")).expect("cases.json");
    serde_json::from_str(&text).expect("cases.json is JSON")
}

fn text(entry: &Value, key: &str) -> String {
    entry[key]
        .as_str()
        .unwrap_or_else(|| panic!("`{key}` missing from {entry}"))
        .to_string()
}

/// Every case with its bytes; cuts of shipped files are made here and written to `dir`.
fn cases(dir: &Path) -> Vec<Case> {
    let listing = listing();
    let entries = listing["cases"].as_array().expect("a list of cases");
    entries
        .iter()
        .map(|entry| {
            let name = text(entry, "name");
            let (bytes, path) = if let Some(file) = entry["file"].as_str() {
                let path = corpus_dir().join(file);
                let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{file}: {e}"));
                (bytes, path)
            } else {
                let source = Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("..")
                    .join(text(entry, "source"));
                let whole = std::fs::read(&source).unwrap_or_else(|e| panic!("{name}: {e}"));
                let percent = entry["keep_percent"].as_u64().expect("keep_percent");
                assert!(
                    percent < 100,
                    "{name}: a cut keeps less than the whole file"
                );
                let bytes = whole[..whole.len() * percent as usize / 100].to_vec();
                let path = dir.join(name.replace('/', "-"));
                std::fs::write(&path, &bytes).unwrap();
                (bytes, path)
            };
            let pending = entry["pending"]
                .as_str()
                .map(|p| (p.to_string(), text(entry, "today")));
            Case {
                what: text(entry, "what"),
                error: text(entry, "error"),
                message: text(entry, "message"),
                name,
                pending,
                bytes,
                path,
            }
        })
        .collect()
}

/// The variant's name, from its `Debug` form (`NotOnnx { .. }`): this way variants added
/// later are named too.
fn variant(error: &Error) -> String {
    format!("{error:?}")
        .split(|c: char| !c.is_alphanumeric())
        .next()
        .unwrap_or_default()
        .to_string()
}

/// The error and its causes on one line, as `student` prints them.
fn chain(error: &Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// Opens `case` one way and says what was wrong with the result, if anything.
fn check(
    case: &Case,
    how: &str,
    origin: &str,
    open: impl FnOnce() -> Result<StudentModel, Error>,
) -> Option<String> {
    let at = format!("{} ({how})", case.name);
    match catch_unwind(AssertUnwindSafe(open)) {
        Err(_) => Some(format!("{at}: panicked ({})", case.what)),
        Ok(Ok(_)) => Some(format!(
            "{at}: opened, expected {} ({})",
            case.error, case.what
        )),
        Ok(Err(e)) => {
            let found = variant(&e);
            let text = chain(&e);
            eprintln!("{at}: {found}: {text}");
            if found != case.error {
                Some(format!(
                    "{at}: {found} where {} was expected: {text}",
                    case.error
                ))
            } else if !text.contains(&case.message) {
                Some(format!("{at}: `{}` not in: {text}", case.message))
            } else if !text.contains(origin) {
                Some(format!("{at}: the error does not name `{origin}`: {text}"))
            } else if text.contains('\n') {
                Some(format!("{at}: the error spans several lines: {text}"))
            } else {
                None
            }
        }
    }
}

#[test]
fn every_case_is_refused_with_its_error_and_none_panics() {
    let dir = scratch("malformed-cuts");
    let cases = cases(&dir);
    let mut failures = Vec::new();
    let mut checked = 0;
    for case in &cases {
        if let Some((pending, today)) = &case.pending {
            eprintln!(
                "skipped {} (pending {pending}: {today}); expected {} once it lands",
                case.name, case.error
            );
            continue;
        }
        let path = case.path.display().to_string();
        failures.extend(check(case, "open", &path, || {
            StudentModel::open(&case.path)
        }));
        failures.extend(check(case, "from_bytes", "in-memory bytes", || {
            StudentModel::from_bytes(&case.bytes, &OpenOptions::default())
        }));
        checked += 1;
    }
    eprintln!("{checked} cases refused as expected or listed below");
    assert!(
        failures.is_empty(),
        "{} of {checked} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // The corpus covers both formats and every way a file is refused.
    assert!(checked >= 100, "only {checked} cases were opened");
    for variant in [
        "NotOnnx",
        "NotCompiled",
        "Unsupported",
        "InvalidCard",
        "Plan",
        "Malformed",
    ] {
        assert!(
            cases
                .iter()
                .any(|c| c.pending.is_none() && c.error == variant),
            "no case expects {variant}"
        );
    }
}

#[test]
fn the_listing_names_every_corpus_file_once_and_they_are_small() {
    let listing = listing();
    let mut listed: Vec<String> = ["cases", "controls"]
        .iter()
        .flat_map(|key| listing[key].as_array().expect("a list").clone())
        .filter_map(|entry| entry["file"].as_str().map(str::to_string))
        .collect();
    listed.sort();
    let before = listed.len();
    listed.dedup();
    assert_eq!(before, listed.len(), "a file is listed twice");
    let mut on_disk = Vec::new();
    for folder in ["onnx", "compiled", "controls"] {
        for entry in std::fs::read_dir(corpus_dir().join(folder)).unwrap() {
            let path = entry.unwrap().path();
            let size = std::fs::metadata(&path).unwrap().len();
            // Huge sizes are declared, never stored.
            assert!(size <= 200 << 10, "{} is {size} bytes", path.display());
            on_disk.push(format!(
                "{folder}/{}",
                path.file_name().unwrap().to_string_lossy()
            ));
        }
    }
    on_disk.sort();
    assert_eq!(listed, on_disk, "cases.json and the corpus folders differ");
    let mut names: Vec<String> = cases(&scratch("malformed-names"))
        .into_iter()
        .map(|c| c.name)
        .collect();
    let count = names.len();
    names.sort();
    names.dedup();
    assert_eq!(count, names.len(), "two cases share a name");
}

#[test]
fn the_files_the_cases_are_made_from_open_and_run() {
    let listing = listing();
    let controls = listing["controls"].as_array().expect("a list of controls");
    assert!(controls.len() >= 4, "{controls:?}");
    let sample = image::open(models_dir().join("samples/test-00000-label-9.png"))
        .unwrap()
        .to_luma8();
    // Per base (`base`, `base-int8`): the first file's class for the sample.
    let mut classes: HashMap<String, (String, usize)> = HashMap::new();
    for control in controls {
        let file = text(control, "file");
        let path = corpus_dir().join(&file);
        let bytes = std::fs::read(&path).unwrap();
        for model in [
            StudentModel::open(&path),
            StudentModel::from_bytes(&bytes, &OpenOptions::default()),
        ] {
            let model = model.unwrap_or_else(|e| panic!("{file}: {}", chain(&e)));
            // The shipped card survives into every control, compiled or not.
            assert_eq!(model.card().name, "malformed-corpus-base", "{file}");
            assert!(model.card().defaults_applied().is_empty(), "{file}");
            let input = model
                .input_spec()
                .tensor_from_gray8(sample.as_raw(), 28, 28)
                .unwrap();
            let logits = model.logits(&input).unwrap();
            assert_eq!(logits.len(), 10, "{file}");
            assert!(logits.iter().all(|v| v.is_finite()), "{file}: {logits:?}");
            // A base, compiled or laid out again, gives the same class.
            let best = (0..logits.len()).fold(0, |b, i| if logits[i] > logits[b] { i } else { b });
            let stem = Path::new(&file).file_stem().unwrap().to_string_lossy();
            let base = stem.trim_end_matches("-rebuilt").to_string();
            let (first, class) = classes.entry(base).or_insert((file.clone(), best));
            assert_eq!(best, *class, "{file} and {first} disagree");
        }
    }
    // Both bases were seen (other controls, such as an int32-indexed Slice, stand alone).
    assert!(
        classes.contains_key("base") && classes.contains_key("base-int8"),
        "{classes:?}"
    );
}
