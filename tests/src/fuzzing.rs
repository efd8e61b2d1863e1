//! What each fuzz target does with its input.
//!
//! One file, compiled into two crates with `#[path]`: the cargo-fuzz crate in `fuzz/`
//! (its targets call these functions on every generated input) and the regression test
//! `tests/tests/fuzz_regressions.rs` (which replays the minimized findings kept in
//! `tests/fuzz-regressions/<target>/`). The fuzz crate is its own workspace built on
//! nightly and must not pull this crate's dev-dependencies, so the file is shared as
//! source rather than through a library; it uses only `student-runtime` (with `onnx`),
//! `image`, `serde_json` and `sha2`, which both crates have.
//!
//! Every function takes the fuzzer's bytes and returns the outcome of the call under
//! test: `Ok(())`, or the typed error it returned, as text with its causes. A panic is a
//! finding, and so is a broken contract: the checks after each call (`assert!`) state
//! what the runtime promises for that input.

#![allow(dead_code)] // Each fuzz target uses one function.

use std::io::Cursor;
use std::sync::OnceLock;

use sha2::{Digest, Sha256};
use student_runtime::{
    ClassifyOptions, Decision, EscalationHook, EscalationOutcome, EscalationRequest, HookAnswer,
    HookError, InputSpec, ModelCard, NonFinite, OpenOptions, PixelFormat, StudentModel,
    compile_onnx,
};

/// What a call under test returned: nothing, or its error as text.
pub type Outcome = Result<(), String>;

/// Every target, by the name of its fuzz target and of its regression folder.
pub const TARGETS: &[&str] = &[
    "open_onnx",
    "open_compiled",
    "open_compiled_rehashed",
    "open_compiled_parts",
    "compile_onnx",
    "model_card",
    "image_decode",
    "classify",
];

/// Runs the target named `target` on `data`; `None` for an unknown name.
pub fn run(target: &str, data: &[u8]) -> Option<Outcome> {
    Some(match target {
        "open_onnx" => open_onnx(data),
        "open_compiled" => open_compiled(data),
        "open_compiled_rehashed" => open_compiled_rehashed(data),
        "open_compiled_parts" => open_compiled_parts(data),
        "compile_onnx" => compile(data),
        "model_card" => model_card(data),
        "image_decode" => image_decode(data),
        "classify" => classify(data),
        _ => return None,
    })
}

/// The shipped Fashion-MNIST models (both crates sit one folder below the repository).
pub const MODELS_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/fashion-mnist");

/// `StudentModel::from_bytes` on arbitrary bytes (seeded with ONNX files); a model that
/// opens classifies one all-zero input. A file refused for an operator or attribute value
/// the tract path has not been checked on is opened again with `unchecked_operators`,
/// which apps may set: what tract does with it is fuzzed too.
pub fn open_onnx(data: &[u8]) -> Outcome {
    match open_and_run(data, &OpenOptions::default()) {
        Err(e) if e.contains("has not been checked against onnxruntime") => {
            let unchecked = OpenOptions {
                unchecked_operators: true,
                ..OpenOptions::default()
            };
            open_and_run(data, &unchecked)
        }
        outcome => outcome,
    }
}

/// The same on compiled `.student` bytes, opened with a batch of 2 so that
/// `logits_batch` runs its batched path too. Random changes mostly stop at the
/// checksum; [`open_compiled_rehashed`] and [`open_compiled_parts`] get past it.
pub fn open_compiled(data: &[u8]) -> Outcome {
    open_and_run(data, &OpenOptions::with_batch(2))
}

/// [`open_compiled`] after making the header agree with the bytes: the magic, the file
/// length field and the SHA-256 are rewritten, so changes reach the manifest, the blob
/// ranges and the plan's validation. A change of length inside the manifest still breaks
/// it (its length is not rewritten): [`open_compiled_parts`] covers those.
pub fn open_compiled_rehashed(data: &[u8]) -> Outcome {
    let mut file = data.to_vec();
    if file.len() >= compiled::HEADER_LEN {
        file[..8].copy_from_slice(compiled::MAGIC);
        let len = file.len() as u64;
        file[16..24].copy_from_slice(&len.to_le_bytes());
        compiled::rehash(&mut file);
    }
    open_compiled(&file)
}

/// A compiled file assembled from its parts: the input is the manifest JSON, one zero
/// byte, then the data section. The header (lengths, offsets, padding, checksum) is
/// written as the compiler writes it, so every input reaches the manifest parser and any
/// manifest that parses reaches the plan's validation and a run.
pub fn open_compiled_parts(data: &[u8]) -> Outcome {
    let (manifest, blobs) = match data.iter().position(|&b| b == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[][..]),
    };
    open_compiled(&compiled::assemble(manifest, blobs))
}

/// `compile_onnx` on arbitrary bytes (seeded with ONNX files). What it compiles must open,
/// and then runs as in [`open_compiled`].
pub fn compile(data: &[u8]) -> Outcome {
    let compiled = compile_onnx(data, "fuzz input").map_err(|e| e.with_causes())?;
    if let Err(e) = StudentModel::from_bytes(&compiled.bytes, &OpenOptions::default()) {
        panic!(
            "a file compile_onnx wrote does not open: {}",
            e.with_causes()
        );
    }
    open_compiled(&compiled.bytes)
}

/// `ModelCard::from_metadata`, the card reader every open goes through, on fuzzed
/// metadata entries and graph facts.
///
/// Input: one byte for the class count (2 to 251, or 0, 1 or 2^12), one byte for the rank
/// of the input dimensions (0 to 5) and one byte per dimension, then the entries as text,
/// one `key=value` per line (lossy UTF-8). A card that reads back must agree with the
/// graph facts, and must survive `to_metadata` and a second read unchanged.
pub fn model_card(data: &[u8]) -> Outcome {
    let mut r = Reader::new(data);
    let classes = match r.byte() {
        b @ 0..=249 => b as usize + 2,
        250 => 0,
        251 => 1,
        // Larger counts cost the fuzzer its speed (every default label is a string);
        // card.rs has a unit test of a million labels.
        _ => 1 << 12,
    };
    let rank = r.byte() % 6;
    let dims: Vec<usize> = (0..rank).map(|_| r.byte() as usize).collect();
    let text = String::from_utf8_lossy(r.rest()).into_owned();
    let entries: Vec<(&str, &str)> = text
        .lines()
        .map(|line| line.split_once('=').unwrap_or((line, "")))
        .collect();
    let card = ModelCard::from_metadata(entries.iter().copied(), classes, &dims, "fuzz input")
        .map_err(|e| e.with_causes())?;
    assert_eq!(
        card.labels.len(),
        classes,
        "the card's labels and the classes"
    );
    let declared = [card.input.channels, card.input.height, card.input.width];
    match dims[..] {
        [_, features] => assert_eq!(card.input.len(), features, "values per sample"),
        [_, c, h, w] => assert_eq!(declared, [c, h, w], "the card's input and the graph's"),
        _ => panic!("a card was read for input dimensions {dims:?}"),
    }
    let written = card.to_metadata();
    let again = ModelCard::from_metadata(
        written.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        classes,
        &dims,
        "fuzz input, written back",
    )
    .unwrap_or_else(|e| panic!("a card that read does not read back: {}", e.with_causes()));
    assert_eq!(
        again.to_metadata(),
        written,
        "the card changed on a round trip"
    );
    Ok(())
}

/// The image paths: decoding a PNG or PGM file as `student run` does (and should: see
/// `decode_file`) and converting it
/// into a model input, and `InputSpec::tensor_from_pixels` / `tensor_from_gray8` on raw
/// pixels of any size (what the bindings' `classifyImage` calls).
///
/// Input: one mode byte, then per mode: (0) an image file; (1) a pixel format byte, a
/// 16-bit width and the pixels, converted for a 1x28x28 and a 3x32x32 spec; (2) the same
/// for an input spec built field by field from the bytes, as an app may build one.
pub fn image_decode(data: &[u8]) -> Outcome {
    let mut r = Reader::new(data);
    match r.byte() % 3 {
        0 => decode_file(r.rest()),
        1 => {
            let specs = [gray_spec(), colour_spec()];
            raw_pixels(&mut r, &specs)
        }
        _ => {
            let spec = spec_from(&mut r);
            raw_pixels(&mut r, &[spec])
        }
    }
}

/// The largest image side and decoding allocation `student run` accepts
/// (`cli/src/inputs.rs`).
const MAX_SIDE: u32 = 4096;
const MAX_DECODE_ALLOC: u64 = 64 * 1024 * 1024;

fn decode_file(bytes: &[u8]) -> Outcome {
    let mut reader = image::ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| e.to_string())?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_DECODE_ALLOC);
    reader.limits(limits);
    // png 0.18.1 panics on a PLTE chunk whose length is not a multiple of 3
    // (image-rs/image-png#694, fixed upstream, unreleased): `student run` must contain it
    // as here (tests/fuzz-regressions/image_decode/png-palette-*).
    let image = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| reader.decode()))
        .map_err(|_| "the image decoder failed on it".to_string())?
        .map_err(|e| e.to_string())?;
    let gray = image.to_luma8();
    let (w, h) = (gray.width() as usize, gray.height() as usize);
    let spec = gray_spec();
    // `student run` needs the card's size exactly; the bindings resize any size.
    let exact = spec.tensor_from_gray8(gray.as_raw(), w, h);
    assert_eq!(
        exact.is_ok(),
        (w, h) == (spec.width, spec.height),
        "tensor_from_gray8 of a {w}x{h} image"
    );
    let resized = spec
        .tensor_from_pixels(gray.as_raw(), w, h, PixelFormat::Gray8)
        .map_err(|e| e.with_causes())?;
    assert_eq!(resized.len(), spec.len());
    let rgba = image.to_rgba8();
    let colour = colour_spec()
        .tensor_from_pixels(rgba.as_raw(), w, h, PixelFormat::Rgba8)
        .map_err(|e| e.with_causes())?;
    assert_eq!(colour.len(), colour_spec().len());
    Ok(())
}

fn raw_pixels(r: &mut Reader<'_>, specs: &[InputSpec]) -> Outcome {
    let format = if r.byte() % 2 == 0 {
        PixelFormat::Gray8
    } else {
        PixelFormat::Rgba8
    };
    let bpp = match format {
        PixelFormat::Gray8 => 1,
        _ => 4,
    };
    // Widths up to 2^16, and now and then a height that does not match the bytes.
    let width = r.u16() as usize;
    let skew = r.byte();
    let pixels = r.rest();
    let height = match (width, skew) {
        (0, _) => pixels.len(),
        (w, 0..=239) => pixels.len() / (w * bpp),
        (w, s) => pixels.len() / (w * bpp) + (s - 239) as usize,
    };
    let mut outcome = Ok(());
    for spec in specs {
        let fits = width * height * bpp == pixels.len() && width > 0 && height > 0;
        let result = spec.tensor_from_pixels(pixels, width, height, format);
        match &result {
            Ok(t) => assert_eq!(t.len(), spec.len(), "tensor_from_pixels length"),
            Err(_) if fits && spec_is_valid(spec) => {
                panic!("a valid {width}x{height} image was refused for a valid spec")
            }
            Err(_) => {}
        }
        if format == PixelFormat::Gray8 {
            if let Ok(t) = spec.tensor_from_gray8(pixels, width, height) {
                assert_eq!(t.len(), spec.len(), "tensor_from_gray8 length");
            }
        }
        outcome = outcome.and(result.map(drop).map_err(|e| e.with_causes()));
    }
    outcome
}

/// The shipped student's input: one 28x28 channel.
fn gray_spec() -> InputSpec {
    spec_json(1, 28, 28, "[0.286]", "[0.353]")
}

/// A colour model's input: three 32x32 channels.
fn colour_spec() -> InputSpec {
    spec_json(3, 32, 32, "[0.485, 0.456, 0.406]", "[0.229, 0.224, 0.225]")
}

/// A spec as a card states it (fields the card may omit take their defaults).
fn spec_json(channels: usize, height: usize, width: usize, mean: &str, std: &str) -> InputSpec {
    let text = format!(
        r#"{{"layout": "NCHW", "channels": {channels}, "height": {height}, "width": {width},
            "scale": 0.003921569, "mean": {mean}, "std": {std}}}"#
    );
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("the harness's spec {text}: {e}"))
}

/// An input spec with every field from the bytes: channels 0 to 4, sides 0 to 64, mean
/// and std lists of 0 to 4 entries, raw f32 scale and statistics.
fn spec_from(r: &mut Reader<'_>) -> InputSpec {
    let channels = (r.byte() % 5) as usize;
    let height = (r.byte() % 65) as usize;
    let width = (r.byte() % 65) as usize;
    let scale = r.f32();
    fn list(r: &mut Reader<'_>) -> Vec<f32> {
        let n = r.byte() % 5;
        (0..n).map(|_| r.f32()).collect()
    }
    let mut spec = gray_spec();
    spec.channels = channels;
    spec.height = height;
    spec.width = width;
    spec.scale = scale;
    spec.mean = list(r);
    spec.std = list(r);
    spec
}

/// What the card reader would accept of a spec's own fields.
fn spec_is_valid(spec: &InputSpec) -> bool {
    spec.channels > 0
        && spec.height > 0
        && spec.width > 0
        && spec.mean.len() == spec.channels
        && spec.std.len() == spec.channels
        && spec.scale.is_finite()
        && spec.scale > 0.0
        && spec.std.iter().all(|s| s.is_finite() && *s > 0.0)
        && spec.mean.iter().all(|m| m.is_finite())
}

/// The shipped student, through tract and compiled, each opened once per process.
pub struct Shipped {
    pub models: Vec<(String, StudentModel)>,
}

/// The models [`classify`] runs, opened on first use.
pub fn shipped() -> &'static Shipped {
    static SHIPPED: OnceLock<Shipped> = OnceLock::new();
    SHIPPED.get_or_init(|| {
        let read = |name: &str| {
            let path = format!("{MODELS_DIR}/{name}");
            std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
        };
        let onnx = |name: &str, batch: usize| {
            let model =
                StudentModel::from_bytes_named(&read(name), name, &OpenOptions::with_batch(batch));
            let model =
                model.unwrap_or_else(|e| panic!("{name} does not open: {}", e.with_causes()));
            (format!("{name} (tract, batch {batch})"), model)
        };
        let compiled = |name: &str, batch: usize| {
            let bytes = compile_onnx(&read(name), name)
                .unwrap_or_else(|e| panic!("{name} does not compile: {}", e.with_causes()))
                .bytes;
            let model =
                StudentModel::from_bytes_named(&bytes, name, &OpenOptions::with_batch(batch));
            let model = model
                .unwrap_or_else(|e| panic!("compiled {name} does not open: {}", e.with_causes()));
            (format!("{name} (compiled, batch {batch})"), model)
        };
        Shipped {
            models: vec![
                onnx("student.onnx", 4),
                onnx("student-int8.onnx", 1),
                compiled("student.onnx", 4),
                compiled("student-int8.onnx", 3),
                compiled("student-fp16.onnx", 1),
            ],
        }
    })
}

/// `logits`, `logits_batch`, `classify` (without and with a hook) and
/// `predict_from_logits` of a shipped model on fuzzed lengths, values (NaN and infinities
/// included) and options.
///
/// Input: the model, the call, the threshold, top-k, how the length is chosen, how values
/// are made, the hook's behaviour, then the bytes the values are made from (repeated to
/// the length).
pub fn classify(data: &[u8]) -> Outcome {
    let shipped = shipped();
    let mut r = Reader::new(data);
    let (name, model) = &shipped.models[r.byte() as usize % shipped.models.len()];
    let call = Call::from(r.byte());
    let options = ClassifyOptions {
        threshold: threshold(&mut r),
        top_k: match r.byte() {
            255 => usize::MAX,
            k => k as usize,
        },
    };
    let per = model.input_spec().len();
    let classes = model.classes();
    let natural = match call {
        Call::Batch => per * (1 + r.byte() as usize % 9),
        Call::FromLogits => classes,
        _ => per,
    };
    let len = match r.byte() % 4 {
        0 => natural,
        1 => per * (r.byte() as usize % 12),
        2 => r.u16() as usize,
        _ => natural.saturating_add_signed(r.byte() as i8 as isize),
    };
    let value_mode = r.byte() % 3;
    let special_at = r.u16() as usize;
    let hook = FuzzHook {
        behaviour: r.byte(),
        index: r.byte() as usize,
        confidence: r.f32(),
    };
    let values = make_values(r.rest(), len, value_mode, special_at);
    let finite = values.iter().all(|v| v.is_finite());
    // A card may ask for non-finite inputs to be zeroed instead of refused.
    let refused = !finite && model.input_spec().non_finite == NonFinite::Reject;
    let threshold_ok = options.threshold.is_none_or(|t| (0.0..=1.0).contains(&t));
    let ctx = format!("{name}, {call:?}, {len} values (finite: {finite}), {options:?}");
    match call {
        Call::Logits => {
            let result = model.logits(&values);
            if len != per || refused {
                expect_invalid_input(&result, &ctx);
            }
            let logits = result.map_err(|e| e.with_causes())?;
            assert_eq!(logits.len(), classes, "{ctx}");
            assert!(logits.iter().all(|v| v.is_finite()), "{ctx}");
        }
        Call::Batch => {
            let result = model.logits_batch(&values);
            if len == 0 || len % per != 0 || refused {
                expect_invalid_input(&result, &ctx);
            }
            let logits = result.map_err(|e| e.with_causes())?;
            assert_eq!(logits.len(), len / per * classes, "{ctx}");
            if value_mode == 0 {
                // Moderate inputs: every row equals the single-sample logits, whether it ran
                // in a full batch or in the remainder.
                for (sample, row) in values.chunks(per).zip(logits.chunks(classes)) {
                    let single = model.logits(sample).map_err(|e| e.with_causes())?;
                    let scale = 1.0 + single.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                    for (a, b) in row.iter().zip(&single) {
                        assert!(
                            (a - b).abs() <= 1e-3 * scale,
                            "{ctx}: batch {row:?}, single {single:?}"
                        );
                    }
                }
            }
        }
        Call::Classify | Call::WithHook => {
            let with_hook = call == Call::WithHook;
            let result = model.classify(
                &values,
                &options,
                with_hook.then_some(&hook as &dyn EscalationHook),
            );
            if len != per || refused {
                expect_invalid_input(&result, &ctx);
            } else if !threshold_ok {
                // The threshold is checked once the logits exist, so a model that fails on
                // this input reports that instead.
                assert!(
                    matches!(
                        result,
                        Err(student_runtime::Error::InvalidOption { .. }
                            | student_runtime::Error::NonFiniteOutput { .. }
                            | student_runtime::Error::Run { .. })
                    ),
                    "{ctx}: {result:?}"
                );
            }
            let p = result.map_err(|e| e.with_causes())?;
            check_prediction(&p, model, &options, &ctx);
            if with_hook {
                check_hook_outcome(&p, &hook, classes, &ctx);
            }
        }
        Call::FromLogits => {
            let result = model.predict_from_logits(&values, &options);
            if len != classes {
                expect_invalid_input(&result, &ctx);
            } else if !finite {
                assert!(result.is_err(), "{ctx}: non-finite logits gave {result:?}");
            } else if !threshold_ok {
                assert!(
                    matches!(result, Err(student_runtime::Error::InvalidOption { .. })),
                    "{ctx}: {result:?}"
                );
            }
            let p = result.map_err(|e| e.with_causes())?;
            check_prediction(&p, model, &options, &ctx);
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    Logits,
    Batch,
    Classify,
    WithHook,
    FromLogits,
}

impl From<u8> for Call {
    fn from(b: u8) -> Call {
        match b % 5 {
            0 => Call::Logits,
            1 => Call::Batch,
            2 => Call::Classify,
            3 => Call::WithHook,
            _ => Call::FromLogits,
        }
    }
}

fn threshold(r: &mut Reader<'_>) -> Option<f32> {
    const SPECIAL: [f32; 8] = [
        f32::NAN,
        f32::INFINITY,
        -0.0,
        1.0,
        1.000_000_1,
        -1e-45,
        1e-45,
        0.999_999_94,
    ];
    match r.byte() % 4 {
        0 => None,
        1 => Some(r.byte() as f32 / 255.0),
        2 => Some(r.f32()),
        _ => Some(SPECIAL[r.byte() as usize % SPECIAL.len()]),
    }
}

/// `len` values from `source`, repeated: (0) bytes scaled to [-8, 8), (1) raw f32 bits,
/// (2) as 0 with one special value (NaN, an infinity, the extremes) at `special_at`.
fn make_values(source: &[u8], len: usize, mode: u8, special_at: usize) -> Vec<f32> {
    const SPECIAL: [f32; 8] = [
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::MAX,
        -f32::MAX,
        f32::MIN_POSITIVE,
        1e-45,
        -0.0,
    ];
    if source.is_empty() {
        return vec![0.0; len];
    }
    let mut values: Vec<f32> = match mode {
        1 => source
            .chunks(4)
            .map(|c| {
                let mut b = [0u8; 4];
                b[..c.len()].copy_from_slice(c);
                f32::from_le_bytes(b)
            })
            .cycle()
            .take(len)
            .collect(),
        _ => source
            .iter()
            .map(|&b| (b as f32 - 128.0) / 16.0)
            .cycle()
            .take(len)
            .collect(),
    };
    if mode == 2 && len > 0 {
        values[special_at % len] = SPECIAL[source[0] as usize % SPECIAL.len()];
    }
    values
}

fn expect_invalid_input<T: std::fmt::Debug>(result: &Result<T, student_runtime::Error>, ctx: &str) {
    assert!(
        matches!(result, Err(student_runtime::Error::InvalidInput(_))),
        "{ctx}: expected an invalid-input error, got {result:?}"
    );
}

fn check_prediction(
    p: &student_runtime::Prediction,
    model: &StudentModel,
    options: &ClassifyOptions,
    ctx: &str,
) {
    let classes = model.classes();
    assert!(p.index < classes && p.final_index < classes, "{ctx}: {p:?}");
    assert_eq!(p.label, model.card().labels[p.index], "{ctx}");
    assert!((0.0..=1.0).contains(&p.confidence), "{ctx}: {p:?}");
    assert!((0.0..=1.0).contains(&p.score), "{ctx}: {p:?}");
    assert_eq!(p.top_k.len(), options.top_k.clamp(1, classes), "{ctx}");
    assert_eq!(p.top_k[0].index, p.index, "{ctx}");
    assert!(
        p.top_k
            .windows(2)
            .all(|w| w[0].probability >= w[1].probability),
        "{ctx}: top-k out of order: {:?}",
        p.top_k
    );
    let threshold = options
        .threshold
        .unwrap_or(model.card().escalation.threshold);
    let (decided, escalated) = match &p.decision {
        Decision::Accepted { threshold } => (*threshold, false),
        Decision::Escalated { threshold, .. } => (*threshold, true),
    };
    assert_eq!(decided, threshold, "{ctx}");
    assert_eq!(escalated, p.score < threshold, "{ctx}: {p:?}");
}

fn check_hook_outcome(p: &student_runtime::Prediction, hook: &FuzzHook, classes: usize, ctx: &str) {
    let Decision::Escalated { outcome, .. } = &p.decision else {
        assert_eq!(p.final_index, p.index, "{ctx}");
        return;
    };
    let valid = hook.index < classes && (0.0..=1.0).contains(&hook.confidence);
    let answered = matches!(outcome, EscalationOutcome::Answered { .. });
    match hook.behaviour % 4 {
        0 => assert_eq!(answered, valid, "{ctx}: {outcome:?}"),
        1 => assert!(
            matches!(outcome, EscalationOutcome::Declined { .. }),
            "{ctx}"
        ),
        _ => assert!(matches!(outcome, EscalationOutcome::Failed { .. }), "{ctx}"),
    }
    let expected = if answered { hook.index } else { p.index };
    assert_eq!(p.final_index, expected, "{ctx}: {outcome:?}");
}

/// The payload of the hook's deliberate panic, which the fuzzers' panic hook lets unwind
/// into the runtime's `catch_unwind`.
pub struct DeliberateHookPanic;

/// An escalation hook that (0) answers `index` with `confidence`, (1) declines, (2) fails
/// or (3) panics.
struct FuzzHook {
    behaviour: u8,
    index: usize,
    confidence: f32,
}

impl EscalationHook for FuzzHook {
    fn name(&self) -> &str {
        "fuzz hook"
    }

    fn escalate(&self, _: &EscalationRequest<'_>) -> Result<Option<HookAnswer>, HookError> {
        match self.behaviour % 4 {
            0 => Ok(Some(HookAnswer {
                index: self.index,
                confidence: Some(self.confidence),
            })),
            1 => Ok(None),
            2 => Err(HookError::new("the fuzz hook fails")),
            _ => std::panic::panic_any(DeliberateHookPanic),
        }
    }
}

/// Opens `data` with `options`; a model that opens classifies one all-zero input and runs
/// a batch of one more zero sample than its batch size.
fn open_and_run(data: &[u8], options: &OpenOptions) -> Outcome {
    let batch = options.batch;
    let model = StudentModel::from_bytes(data, options).map_err(|e| e.with_causes())?;
    let per = model.input_spec().len();
    let classes = model.classes();
    assert!(
        per > 0 && classes >= 2,
        "opened with {per} inputs and {classes} classes"
    );
    assert_eq!(model.card().labels.len(), classes);
    let zeros = vec![0.0f32; per];
    let p = model
        .classify(&zeros, &ClassifyOptions::default(), None)
        .map_err(|e| e.with_causes())?;
    assert!(
        p.index < classes && (0.0..=1.0).contains(&p.confidence),
        "{p:?}"
    );
    let batch_zeros = vec![0.0f32; per * (batch + 1)];
    let logits = model
        .logits_batch(&batch_zeros)
        .map_err(|e| e.with_causes())?;
    assert_eq!(logits.len(), classes * (batch + 1));
    Ok(())
}

/// The `.student` header as `runtime/src/compiled/format.rs` documents it.
pub mod compiled {
    use super::*;

    pub const MAGIC: &[u8; 8] = b"STUDENT\x1a";
    pub const HEADER_LEN: usize = 128;
    const CHECKSUM_AT: usize = 96;
    const ALIGN: usize = 64;

    /// Rewrites the SHA-256 of bytes `[0, 96)` and `[128, end)` at offset 96.
    pub fn rehash(file: &mut [u8]) {
        let mut hasher = Sha256::new();
        hasher.update(&file[..CHECKSUM_AT]);
        hasher.update(&file[HEADER_LEN..]);
        let sum: [u8; 32] = hasher.finalize().into();
        file[CHECKSUM_AT..HEADER_LEN].copy_from_slice(&sum);
    }

    /// A version-1 file of `manifest` and the data section `data`.
    pub fn assemble(manifest: &[u8], data: &[u8]) -> Vec<u8> {
        let data_offset = (HEADER_LEN + manifest.len()).next_multiple_of(ALIGN);
        let file_len = data_offset + data.len();
        let mut file = Vec::with_capacity(file_len);
        file.extend_from_slice(MAGIC);
        file.extend_from_slice(&1u32.to_le_bytes());
        file.extend_from_slice(&(HEADER_LEN as u32).to_le_bytes());
        for field in [
            file_len,
            HEADER_LEN,
            manifest.len(),
            data_offset,
            data.len(),
        ] {
            file.extend_from_slice(&(field as u64).to_le_bytes());
        }
        file.resize(HEADER_LEN, 0);
        file.extend_from_slice(manifest);
        file.resize(data_offset, 0);
        file.extend_from_slice(data);
        rehash(&mut file);
        file
    }

    /// The inverse of [`assemble`] for a well-formed file: the manifest, a zero byte and
    /// the data section (the seeds of `open_compiled_parts`).
    pub fn parts(file: &[u8]) -> Option<Vec<u8>> {
        let u64_at = |at: usize| -> Option<usize> {
            let bytes: [u8; 8] = file.get(at..at + 8)?.try_into().ok()?;
            usize::try_from(u64::from_le_bytes(bytes)).ok()
        };
        let (m_off, m_len, d_off) = (u64_at(24)?, u64_at(32)?, u64_at(40)?);
        let mut out = file.get(m_off..m_off.checked_add(m_len)?)?.to_vec();
        out.push(0);
        out.extend_from_slice(file.get(d_off..)?);
        Some(out)
    }
}

/// Reads fuzzer bytes front to back; past the end every read is zero.
struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(data: &'a [u8]) -> Self {
        Reader { data }
    }

    fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }

    fn f32(&mut self) -> f32 {
        f32::from_le_bytes([self.byte(), self.byte(), self.byte(), self.byte()])
    }

    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }
}
