//! Compiled students (`.student`) checked against logits computed on another machine.
//!
//! `scripts/test-aarch64.sh` compiles the shipped students on the x86-64 host, runs
//! [`write_expected_on_this_host`] there to record their logits on sample images, then runs
//! [`compiled_students_match_the_expected_logits`] on the host and on aarch64 under qemu.
//! The test needs no `onnx` feature, so the mobile build (no tract) runs it and it
//! cross-builds cheaply.
//!
//! The folder named by `STUDENT_COMPILED_CASES` holds, for each `NAME.student`, a
//! `NAME.expected.json` ([`Expected`]) and the PNG images it names, relative to the folder.
//! Every file is opened at every kernel level this CPU has (`Isa::available()`) and run
//! one image at a time and in batches of [`BATCH`].
//!
//! Without the variable both tests say that they were skipped and pass. With it, an
//! empty or unreadable folder, or a student without its expected file (or the reverse),
//! fails.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use student_runtime::{Isa, OpenOptions, Precision, StudentModel};

/// The folder of cases.
const CASES_VAR: &str = "STUDENT_COMPILED_CASES";

/// Comma-separated kernel levels this machine must offer (as in the kernel tests), so that
/// a qemu without dotprod cannot pass by testing the lower levels only.
const EXPECT_ISA_VAR: &str = "STUDENT_EXPECT_ISA";

/// The batch size of the batched calls: the 32 sample images make four full batches.
const BATCH: usize = 8;

/// The level that computes the expected logits: the plain-Rust kernels that every SIMD
/// level is tested against.
const WRITE_ISA: Isa = Isa::Portable;

/// Where the images are looked for when the expected files are written.
const SAMPLES_DIR: &str = "samples";

/// fp32, and fp16 (f16-stored weights) below neon-fp16: the levels differ only in the order
/// of float rounding (fused multiply-add, the order of partial sums), a relative error a
/// few times the f32 epsilon per layer. 1e-5 of the largest logit leaves room for that
/// and nothing else.
const FLOAT_TOLERANCE: f32 = 1e-5;

/// fp16 at neon-fp16: the f16-weight dense layers round their activations to f16 before
/// multiplying (`student_kernels::hgemm`), an error of up to 2^-11 of each term, which the
/// logits do not bound (terms cancel). Measured under qemu on these images: 2.2e-4 of the
/// largest logit. 2e-3 leaves room for that, and is still far below what a wrong kernel
/// gives (a lane or a row out of place moves logits by their own size).
const FP16_ARITHMETIC_TOLERANCE: f32 = 2e-3;

/// int8: the integer GEMMs are exact on every level, and the kernels document their
/// requantization epilogues (one conversion, one multiply, rounding half to even) as
/// bit-identical too, so the logits are expected to be equal; the test prints the measured
/// difference. But those epilogues are float arithmetic, and the guarantee rests on each
/// target's code keeping that exact order: should one CPU round an activation that sits on
/// a rounding boundary one step apart from another (a fused multiply-add on one target,
/// say), that one-step difference flows through every later layer and moves the logits by
/// a few output quantization steps, far more than the float tolerance allows. So the
/// class must agree on every input, and each logit must lie within 2% of the largest.
const INT8_TOLERANCE: f32 = 0.02;

/// One `NAME.expected.json`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expected {
    /// `std::env::consts::ARCH` of the machine that computed the logits.
    arch: String,
    /// The kernel level that computed them.
    kernels: String,
    /// The precision of the student's weights, from its card.
    precision: Precision,
    /// The number of classes: the length of every `logits`.
    classes: usize,
    /// The inputs and their logits.
    inputs: Vec<ExpectedInput>,
}

/// One input image and the logits computed for it.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpectedInput {
    /// A PNG image, relative to the cases folder; decoded to 8-bit gray and scaled by the
    /// model card (`InputSpec::tensor_from_gray8`).
    png: String,
    logits: Vec<f32>,
}

/// A compiled student and its expected file.
struct Case {
    name: String,
    student: PathBuf,
    expected: PathBuf,
}

#[test]
fn compiled_students_match_the_expected_logits() {
    let Some(dir) = cases_dir("check the compiled students") else {
        return;
    };
    if let Err(e) = check_expected_levels() {
        panic!("{e}");
    }
    let cases = match list_cases(&dir) {
        Ok(cases) => cases,
        Err(e) => panic!("{e}"),
    };
    let levels = Isa::available();
    let mut report = Vec::new();
    let mut failures = Vec::new();
    for case in &cases {
        for &isa in &levels {
            match check_case(&dir, case, isa) {
                Ok(line) => report.push(line),
                Err(e) => {
                    report.push(format!("FAILED {e}"));
                    failures.push(e);
                }
            }
        }
    }
    let names: Vec<&str> = levels.iter().map(|isa| isa.name()).collect();
    report.push(format!(
        "compiled_files: {} students checked at {} on {}: {} of {} checks failed",
        cases.len(),
        names.join(", "),
        std::env::consts::ARCH,
        failures.len(),
        cases.len() * levels.len()
    ));
    say(&report.join("\n"));
    assert!(
        failures.is_empty(),
        "{} checks failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Writes `NAME.expected.json` for every `NAME.student` in the cases folder, from the
/// PNG images under its `samples/` folder, computed here with the portable kernels.
#[test]
#[ignore = "writes the expected files: scripts/test-aarch64.sh runs it on the x86-64 host"]
fn write_expected_on_this_host() {
    let Some(dir) = cases_dir("write expected files") else {
        return;
    };
    match write_expected(&dir) {
        Ok(report) => say(&report.join("\n")),
        Err(e) => panic!("{e}"),
    }
}

/// The cases folder, or `None` after saying why the test is skipped.
fn cases_dir(what: &str) -> Option<PathBuf> {
    match std::env::var_os(CASES_VAR) {
        // An empty value names no folder: `read_dir` fails on it, and the test with it.
        Some(dir) => Some(PathBuf::from(dir)),
        None => {
            say(&format!(
                "compiled_files: SKIPPED, no cases given: {CASES_VAR} is not set, so nothing \
                 to {what} (scripts/test-aarch64.sh sets it)"
            ));
            None
        }
    }
}

/// Writes straight to stderr, past the test harness's capture, so that a skip or a
/// comparison shows in the output of a passing run too. The harness has printed
/// `test NAME ... ` without a line end by then: the text starts on a line of its own.
fn say(text: &str) {
    let _ = writeln!(std::io::stderr().lock(), "\n{text}");
}

fn check_expected_levels() -> Result<(), String> {
    let Ok(names) = std::env::var(EXPECT_ISA_VAR) else {
        return Ok(());
    };
    for name in names.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let isa = Isa::from_name(name)
            .ok_or_else(|| format!("{EXPECT_ISA_VAR}: unknown kernel level {name:?}"))?;
        if !isa.is_available() {
            return Err(format!(
                "{EXPECT_ISA_VAR} expects {isa} on this machine; detected {:?}",
                Isa::available()
            ));
        }
    }
    Ok(())
}

/// Pairs every `NAME.student` with its `NAME.expected.json`; fails on an unreadable or
/// empty folder and on a file of either kind without its partner.
fn list_cases(dir: &Path) -> Result<Vec<Case>, String> {
    let students = files_ending(dir, ".student")?;
    let expected = files_ending(dir, ".expected.json")?;
    if students.is_empty() {
        return Err(format!(
            "{CASES_VAR} is set, but {} holds no .student files",
            dir.display()
        ));
    }
    if let Some(orphan) = expected.iter().find(|name| !students.contains(name)) {
        return Err(format!(
            "{}: {orphan}.expected.json has no {orphan}.student",
            dir.display()
        ));
    }
    students
        .into_iter()
        .map(|name| {
            let case = Case {
                student: dir.join(format!("{name}.student")),
                expected: dir.join(format!("{name}.expected.json")),
                name,
            };
            if case.expected.is_file() {
                Ok(case)
            } else {
                Err(format!(
                    "{}: {}.student has no {}.expected.json",
                    dir.display(),
                    case.name,
                    case.name
                ))
            }
        })
        .collect()
}

/// The names, without `suffix`, of the files in `dir` that end in `suffix`, sorted.
fn files_ending(dir: &Path, suffix: &str) -> Result<Vec<String>, String> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| format!("{CASES_VAR}: cannot read the folder {}: {e}", dir.display()))?;
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
        let file_name = entry.file_name();
        let Some(name) = file_name.to_str() else {
            continue;
        };
        if let Some(stem) = name.strip_suffix(suffix) {
            names.push(stem.to_string());
        }
    }
    names.sort();
    Ok(names)
}

/// Opens `case` at `isa`, runs every input one at a time and in batches, and compares the
/// logits with the expected ones. Returns a one-line summary, or what failed.
fn check_case(dir: &Path, case: &Case, isa: Isa) -> Result<String, String> {
    let at = format!("{} at {}", case.name, isa.name());
    let text = std::fs::read_to_string(&case.expected)
        .map_err(|e| format!("{at}: cannot read {}: {e}", case.expected.display()))?;
    let expected: Expected = serde_json::from_str(&text)
        .map_err(|e| format!("{at}: {} is malformed: {e}", case.expected.display()))?;
    if expected.inputs.is_empty() {
        return Err(format!("{at}: {} lists no inputs", case.expected.display()));
    }

    let options = OpenOptions {
        batch: BATCH,
        kernels: Some(isa),
        ..OpenOptions::default()
    };
    let model = StudentModel::open_with(&case.student, &options)
        .map_err(|e| format!("{at}: cannot open {}: {e}", case.student.display()))?;
    if model.kernels() != isa.name() {
        return Err(format!(
            "{at}: opened with kernels {} but the model reports {}",
            isa.name(),
            model.kernels()
        ));
    }
    let precision = precision_of(&model);
    if precision != expected.precision || model.classes() != expected.classes {
        return Err(format!(
            "{at}: the student is {} with {} classes, {} describes {} with {}: files mixed up?",
            precision.name(),
            model.classes(),
            case.expected.display(),
            expected.precision.name(),
            expected.classes
        ));
    }

    let mut inputs = Vec::new();
    for input in &expected.inputs {
        let tensor =
            image_tensor(&model, &dir.join(&input.png)).map_err(|e| format!("{at}: {e}"))?;
        inputs.extend(tensor);
    }
    let want: Vec<f32> = expected
        .inputs
        .iter()
        .flat_map(|i| i.logits.iter().copied())
        .collect();
    if want.len() != expected.inputs.len() * model.classes() {
        return Err(format!(
            "{at}: {} holds {} logits for {} inputs of {} classes",
            case.expected.display(),
            want.len(),
            expected.inputs.len(),
            model.classes()
        ));
    }
    let per = model.input_spec().len();
    let mut single = Vec::with_capacity(want.len());
    for sample in inputs.chunks(per) {
        single.extend(
            model
                .logits(sample)
                .map_err(|e| format!("{at}: one image: {e}"))?,
        );
    }
    let batched = model
        .logits_batch(&inputs)
        .map_err(|e| format!("{at}: batch of {BATCH}: {e}"))?;

    // The tolerance is relative to the largest logit of the case, over all its inputs.
    let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let tolerance = match precision {
        Precision::Fp16 if isa == Isa::NeonFp16 => FP16_ARITHMETIC_TOLERANCE,
        Precision::Fp32 | Precision::Fp16 => FLOAT_TOLERANCE,
        Precision::Int8 => INT8_TOLERANCE,
    };
    let mut worst = 0.0f32;
    for (how, got) in [("one image at a time", &single), ("in batches", &batched)] {
        let rows = got
            .chunks(model.classes())
            .zip(want.chunks(model.classes()));
        for ((got, want), input) in rows.zip(&expected.inputs) {
            let diff = got
                .iter()
                .zip(want)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            worst = worst.max(diff / scale);
            // int8: the class must agree outright. Floats: the bound below keeps the class
            // unless two logits tie within it.
            if precision == Precision::Int8 && argmax(got) != argmax(want) {
                return Err(format!(
                    "{at}, {how}: {}: class {}, where {} {} gave class {}",
                    input.png,
                    argmax(got),
                    expected.arch,
                    expected.kernels,
                    argmax(want)
                ));
            }
            if diff > tolerance * scale {
                return Err(format!(
                    "{at}, {how}: {}: max |diff| {diff:.3e} exceeds {tolerance:.0e} x max |logit| \
                     {scale:.3} (expected {want:?}, got {got:?})",
                    input.png
                ));
            }
        }
    }
    Ok(format!(
        "compiled_files: {at} ({}): {} images, one at a time and in batches of {BATCH}: \
         max |diff| / max |logit| = {worst:.2e} (limit {tolerance:.0e}); \
         expected from {} {}",
        precision.name(),
        expected.inputs.len(),
        expected.arch,
        expected.kernels
    ))
}

/// Returns a line per file written.
fn write_expected(dir: &Path) -> Result<Vec<String>, String> {
    let samples = dir.join(SAMPLES_DIR);
    let pngs = files_ending(&samples, ".png")?;
    if pngs.is_empty() {
        return Err(format!("{} holds no .png images", samples.display()));
    }
    let students = files_ending(dir, ".student")?;
    if students.is_empty() {
        return Err(format!("{} holds no .student files", dir.display()));
    }
    let options = OpenOptions {
        batch: 1,
        kernels: Some(WRITE_ISA),
        ..OpenOptions::default()
    };
    let mut report = Vec::new();
    for name in students {
        let path = dir.join(format!("{name}.student"));
        let model = StudentModel::open_with(&path, &options)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        let mut inputs = Vec::new();
        for png in &pngs {
            let relative = format!("{SAMPLES_DIR}/{png}.png");
            let input = image_tensor(&model, &dir.join(&relative))?;
            let logits = model
                .logits(&input)
                .map_err(|e| format!("{}: {relative}: {e}", path.display()))?;
            inputs.push(ExpectedInput {
                png: relative,
                logits,
            });
        }
        let expected = Expected {
            arch: std::env::consts::ARCH.to_string(),
            kernels: model.kernels().to_string(),
            precision: precision_of(&model),
            classes: model.classes(),
            inputs,
        };
        let out = dir.join(format!("{name}.expected.json"));
        let json = serde_json::to_string_pretty(&expected)
            .map_err(|e| format!("cannot encode {}: {e}", out.display()))?;
        std::fs::write(&out, json + "\n")
            .map_err(|e| format!("cannot write {}: {e}", out.display()))?;
        report.push(format!(
            "compiled_files: wrote {} ({} images, {} {})",
            out.display(),
            expected.inputs.len(),
            expected.arch,
            expected.kernels
        ));
    }
    Ok(report)
}

/// Decodes the PNG at `path` to 8-bit gray and scales it as the model's card says.
fn image_tensor(model: &StudentModel, path: &Path) -> Result<Vec<f32>, String> {
    let image = image::ImageReader::open(path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?
        .decode()
        .map_err(|e| format!("cannot decode {}: {e}", path.display()))?
        .to_luma8();
    let (width, height) = (image.width() as usize, image.height() as usize);
    model
        .input_spec()
        .tensor_from_gray8(image.as_raw(), width, height)
        .map_err(|e| format!("{}: {e}", path.display()))
}

fn precision_of(model: &StudentModel) -> Precision {
    model
        .card()
        .quantization
        .as_ref()
        .map_or(Precision::Fp32, |q| q.precision)
}

/// The index of the largest value, the first on ties.
fn argmax(values: &[f32]) -> usize {
    (0..values.len()).fold(0, |best, i| if values[i] > values[best] { i } else { best })
}
