//! The command line as a user meets it: outputs, JSON fields, and one-line errors with a
//! non-zero exit for every bad input.

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use prost::Message;

fn student(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_student"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("the student binary runs")
}

fn models() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/fashion-mnist")
}

fn model(name: &str) -> String {
    models().join(name).display().to_string()
}

fn sample(name: &str) -> String {
    models().join("samples").join(name).display().to_string()
}

fn scratch(name: &str) -> PathBuf {
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A failed run: exit code 1, and a single `error:` line that mentions `needle`.
fn assert_one_line_error(o: &Output, needle: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(1), "exit code; stderr: {err}");
    assert!(!err.contains("panicked"), "panic: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(lines.len(), 1, "expected one error line: {err}");
    assert!(lines[0].contains(needle), "`{needle}` not in: {err}");
}

#[test]
fn demo_prints_a_line_per_sample_and_a_summary() {
    let o = student(&["demo"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let samples = std::fs::read_dir(models().join("samples")).unwrap().count();
    assert_eq!(
        out.lines().filter(|l| l.starts_with("test-")).count(),
        samples,
        "{out}"
    );
    assert!(out.contains("final answers:"), "{out}");
    assert!(out.contains("accepted"), "{out}");
}

#[test]
fn demo_scores_only_samples_whose_name_gives_a_class() {
    // Samples without a class in their name, or with one the model does not have, show
    // `?` and are not counted as wrong.
    let dir = scratch("demo-unlabelled");
    for name in ["student.onnx", "teacher.onnx"] {
        std::fs::copy(model(name), dir.join(name)).unwrap();
    }
    let samples = dir.join("samples");
    std::fs::create_dir(&samples).unwrap();
    let image = sample("test-00000-label-9.png");
    std::fs::copy(&image, samples.join("a-label-9.png")).unwrap();
    std::fs::copy(&image, samples.join("b.png")).unwrap();
    std::fs::copy(&image, samples.join("c-label-99.png")).unwrap();
    let o = student(&["demo", "--models", &dir.display().to_string()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let unknown = out
        .lines()
        .filter(|l| l.starts_with("b.png") || l.starts_with("c-label-99.png"))
        .filter(|l| l.split_whitespace().nth(1) == Some("?"))
        .count();
    assert_eq!(unknown, 2, "{out}");
    assert!(
        out.contains("/1 correct") && out.contains("2 of 3 images have no class"),
        "{out}"
    );
}

#[test]
fn run_json_has_the_documented_fields() {
    let o = student(&[
        "run",
        &model("student.onnx"),
        &sample("test-00000-label-9.png"),
        &sample("test-00001-label-2.png"),
        "--escalate-to",
        &model("teacher.onnx"),
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let lines: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    for v in &lines {
        for key in [
            "input",
            "label",
            "index",
            "confidence",
            "escalated",
            "final_label",
        ] {
            assert!(v.get(key).is_some(), "{key} missing from {v}");
        }
        let c = v["confidence"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&c));
    }
    assert_eq!(lines[0]["final_label"], "Ankle boot");
}

#[test]
fn run_refuses_pgm_samples_above_their_maxval() {
    let dir = scratch("maxval");
    let pixels: Vec<u8> = (0..28 * 28).map(|i| (i % 101) as u8).collect();
    let binary = |maxval: u32, raster: &[u8]| {
        let mut file = format!("P5\n28 28\n{maxval}\n").into_bytes();
        file.extend_from_slice(raster);
        file
    };
    let run = |name: &str, bytes: Vec<u8>| {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        student(&["run", &model("student.onnx"), &path.display().to_string()])
    };
    // Samples up to maxval: accepted.
    let o = run("ok.pgm", binary(100, &pixels));
    assert!(o.status.success(), "{}", stderr(&o));
    let mut over = pixels.clone();
    over[500] = 200;
    assert_one_line_error(
        &run("over.pgm", binary(100, &over)),
        "over.pgm: a sample is 200, above the image's declared maximum (maxval) of 100",
    );
    // 16-bit samples, big-endian.
    let mut wide: Vec<u8> = pixels
        .iter()
        .flat_map(|&p| (u16::from(p) * 9).to_be_bytes())
        .collect();
    wide[2 * 700..2 * 700 + 2].copy_from_slice(&1001u16.to_be_bytes());
    assert_one_line_error(
        &run("wide.pgm", binary(1000, &wide)),
        "a sample is 1001, above the image's declared maximum (maxval) of 1000",
    );
    // Plain (ASCII) PGM.
    let mut text = String::from("P2\n28 28\n15\n");
    for i in 0..28 * 28 {
        text.push_str(if i == 300 { "16 " } else { "7 " });
    }
    assert_one_line_error(
        &run("plain.pgm", text.into_bytes()),
        "a sample is 16, above the image's declared maximum (maxval) of 15",
    );
}

#[test]
fn run_refuses_a_pgm_holding_more_than_its_raster() {
    let dir = scratch("pgm-trailer");
    let pixels: Vec<u8> = (0..28 * 28).map(|i| (i * 3 % 256) as u8).collect();
    let run = |name: &str, bytes: Vec<u8>| {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        student(&["run", &model("student.onnx"), &path.display().to_string()])
    };
    let one = [b"P5\n28 28\n255\n".as_slice(), &pixels].concat();
    // A line end after the raster, as some writers add: accepted, the same answer.
    let o = run("one.pgm", one.clone());
    assert!(o.status.success(), "{}", stderr(&o));
    let o2 = run("newline.pgm", [one.as_slice(), b"\n"].concat());
    assert!(o2.status.success(), "{}", stderr(&o2));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).replace("one.pgm", "newline.pgm"),
        String::from_utf8_lossy(&o2.stdout)
    );
    // Two images in one file: netpbm allows it, the decoder would read the first.
    assert_one_line_error(
        &run("two.pgm", [one.as_slice(), &one].concat()),
        "two.pgm holds 797 bytes after its 28x28 raster: a second image or a damaged file",
    );
    // The same in a PAM, a binary PBM and a PNG.
    let pam = [
        b"P7\nWIDTH 28\nHEIGHT 28\nDEPTH 1\nMAXVAL 255\nTUPLTYPE GRAYSCALE\nENDHDR\n".as_slice(),
        &pixels,
    ]
    .concat();
    let o = run("one.pam", pam.clone());
    assert!(o.status.success(), "{}", stderr(&o));
    assert_one_line_error(
        &run("two.pam", [pam.as_slice(), &pam].concat()),
        "after its 28x28 raster",
    );
    let pbm = [b"P4\n28 28\n".as_slice(), &[0x55u8; 4 * 28]].concat();
    let o = run("one.pbm", pbm.clone());
    assert!(o.status.success(), "{}", stderr(&o));
    assert_one_line_error(
        &run("junk.pbm", [pbm.as_slice(), b"junk"].concat()),
        "holds 4 bytes after its 28x28 raster",
    );
    let png = std::fs::read(model("samples/test-00000-label-9.png")).unwrap();
    assert_one_line_error(
        &run("two.png", [png.as_slice(), &png].concat()),
        &format!("holds {} bytes after its PNG image ends (IEND)", png.len()),
    );
    // A raster cut short.
    assert_one_line_error(
        &run("short.pgm", one[..one.len() - 10].to_vec()),
        "short.pgm is cut short: its raster holds 774 of the 784 bytes its 28x28 header",
    );
    // Long junk after the raster.
    assert_one_line_error(
        &run(
            "junk.pgm",
            [one.as_slice(), &vec![b' '; 5000], b"x"].concat(),
        ),
        "holds more than 4096 bytes after its 28x28 raster",
    );
    // Plain (ASCII) PGM with a sample too many.
    let mut text = String::from("P2\n28 28\n255\n");
    for _ in 0..28 * 28 + 1 {
        text.push_str("7 ");
    }
    assert_one_line_error(
        &run("plain.pgm", text.into_bytes()),
        "plain.pgm holds more than its samples after its 28x28 raster",
    );
}

#[test]
fn pgm_header_comments_separate_numbers_wherever_they_stand() {
    let dir = scratch("pgm-comments");
    let pixels: Vec<u8> = (0..28 * 28).map(|i| (i * 7 % 256) as u8).collect();
    let run = |name: &str, header: &str| {
        let mut bytes = header.as_bytes().to_vec();
        bytes.extend_from_slice(&pixels);
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        student(&[
            "run",
            &model("student.onnx"),
            "--json",
            &path.display().to_string(),
        ])
    };
    let plain = run("plain.pgm", "P5\n28 28\n255\n");
    assert!(plain.status.success(), "{}", stderr(&plain));
    // Comments glued to the numbers (`28#...` is 28, then a comment), and the raster's
    // first byte, 0, right after the comment that ends the header.
    let glued = run("glued.pgm", "P5#made by hand\n28#wide\n28#high\r255#max\n");
    assert!(glued.status.success(), "{}", stderr(&glued));
    // The same image: the same prediction, to the last digit of its confidence.
    let prediction = |o: &Output| -> serde_json::Value {
        let mut line: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        line.as_object_mut().unwrap().remove("input");
        line
    };
    assert_eq!(prediction(&glued), prediction(&plain));
    let cut = dir.join("cut.pgm");
    std::fs::write(&cut, "P5 28 #x").unwrap();
    assert_one_line_error(
        &student(&["run", &model("student.onnx"), &cut.display().to_string()]),
        "cut.pgm is not a readable PNG or PGM image: it ends inside a comment in its header",
    );
    // A comment longer than the header cap: the cap is named, not a truncated file.
    let long = run(
        "long.pgm",
        &format!("P5\n#{}\n28 28\n255\n", "c".repeat(70_000)),
    );
    assert_one_line_error(
        &long,
        "long.pgm is not a readable PNG or PGM image: its header (comments included) runs \
         past 65536 bytes, the most read",
    );
}

#[test]
fn run_reads_idx_and_pgm_inputs() {
    let dir = scratch("formats");
    let png = image::open(sample("test-00002-label-1.png"))
        .unwrap()
        .to_luma8();
    let pgm = dir.join("x.pgm");
    png.save(&pgm).unwrap();
    let mut idx = vec![0u8, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 28, 0, 0, 0, 28];
    idx.extend_from_slice(png.as_raw());
    idx.extend_from_slice(png.as_raw());
    std::fs::write(dir.join("x.idx"), idx).unwrap();
    let o = student(&[
        "run",
        &model("student.onnx"),
        &pgm.display().to_string(),
        &dir.join("x.idx").display().to_string(),
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let labels: Vec<String> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["label"].to_string())
        .collect();
    assert_eq!(labels.len(), 3);
    assert!(
        labels.iter().all(|l| *l == labels[0]),
        "same image, same answer: {labels:?}"
    );
}

#[test]
fn inspect_json_shows_card_params_size_and_operators() {
    let o = student(&["inspect", &model("student.onnx"), "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert!(v["params"].as_u64().unwrap() > 1000);
    assert!(v["file_size"].as_u64().unwrap() > 1000);
    assert_eq!(v["card"]["labels"].as_array().unwrap().len(), 10);
    assert!(v["card"]["teacher"]["sha256"].as_str().unwrap().len() == 64);
    assert!(
        v["operators"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["op"] == "Conv")
    );
    let text = student(&["inspect", &model("student.onnx")]);
    assert!(stdout(&text).contains("temperature"));
}

#[test]
fn eval_json_has_the_documented_fields() {
    let o = student(&[
        "eval",
        &model("student.onnx"),
        "--data",
        "fashion-mnist:test",
        "--teacher",
        &model("teacher.onnx"),
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    for key in [
        "accuracy",
        "escalation_rate",
        "cascade_accuracy",
        "teacher_accuracy",
        "agreement",
        "params",
        "teacher_params",
    ] {
        assert!(!v[key].is_null(), "{key} missing from {v}");
    }
    assert_eq!(v["samples"], 10000);
}

/// The malformed corpus's two files of forms outside the checked table: refused by
/// default (tests/malformed checks the message), run with `--unchecked-operators` by the
/// commands that take it.
#[test]
fn unchecked_operators_run_only_when_asked_for() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/malformed/onnx");
    let image = sample("test-00000-label-9.png");
    for name in ["unchecked-operator.onnx", "unchecked-attribute.onnx"] {
        let path = corpus.join(name).display().to_string();
        assert_one_line_error(
            &student(&["run", &path, &image]),
            "has not been checked against onnxruntime",
        );
        for args in [
            vec!["run", "--unchecked-operators", &path, &image],
            vec!["inspect", "--unchecked-operators", &path],
            vec!["eval", "--unchecked-operators", &path, "--limit", "20"],
            vec!["bench", "--unchecked-operators", &path, "--seconds", "0.1"],
        ] {
            let o = student(&args);
            assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        }
    }
}

#[test]
fn missing_model_file() {
    let o = student(&[
        "run",
        "/nonexistent/model.onnx",
        &sample("test-00000-label-9.png"),
    ]);
    assert_one_line_error(&o, "/nonexistent/model.onnx");
}

#[test]
fn truncated_and_non_onnx_models() {
    let dir = scratch("bad-models");
    let bytes = std::fs::read(model("student.onnx")).unwrap();
    std::fs::write(dir.join("cut.onnx"), &bytes[..bytes.len() / 3]).unwrap();
    std::fs::write(
        dir.join("image.onnx"),
        std::fs::read(sample("test-00000-label-9.png")).unwrap(),
    )
    .unwrap();
    std::fs::write(dir.join("empty.onnx"), b"").unwrap();
    for name in ["cut.onnx", "image.onnx", "empty.onnx"] {
        let path = dir.join(name).display().to_string();
        assert_one_line_error(&student(&["inspect", &path]), name);
        assert_one_line_error(
            &student(&["run", &path, &sample("test-00000-label-9.png")]),
            name,
        );
    }
}

#[test]
fn image_of_the_wrong_size() {
    let dir = scratch("big-image");
    let img = image::GrayImage::new(30, 30);
    let path = dir.join("big.png");
    img.save(&path).unwrap();
    let o = student(&["run", &model("student.onnx"), &path.display().to_string()]);
    assert_one_line_error(&o, "30x30");
}

#[test]
fn unreadable_image() {
    let dir = scratch("bad-image");
    let path = dir.join("noise.png");
    std::fs::write(&path, b"\x89PNG\r\n\x1a\nnot really").unwrap();
    let o = student(&["run", &model("student.onnx"), &path.display().to_string()]);
    assert_one_line_error(&o, "noise.png");
}

#[test]
fn threshold_outside_unit_interval() {
    for t in ["1.5", "-0.2", "NaN"] {
        let o = student(&[
            "run",
            &model("student.onnx"),
            &sample("test-00000-label-9.png"),
            &format!("--threshold={t}"),
        ]);
        assert_one_line_error(&o, "threshold");
    }
}

/// Writes a copy of a shipped model, changed by `edit`, into `dir`.
fn edited_copy(
    name: &str,
    dir: &Path,
    edit: impl FnOnce(&mut tract_onnx::pb::ModelProto),
) -> PathBuf {
    let bytes = std::fs::read(model(name)).unwrap();
    let mut proto = tract_onnx::pb::ModelProto::decode(bytes.as_slice()).unwrap();
    edit(&mut proto);
    let path = dir.join(format!("edited-{name}"));
    std::fs::write(&path, proto.encode_to_vec()).unwrap();
    path
}

/// Writes a copy of a shipped model whose card lists its labels in reverse order into `dir`.
fn with_labels_reversed(name: &str, dir: &Path) -> PathBuf {
    edited_copy(name, dir, |proto| {
        for entry in &mut proto.metadata_props {
            if entry.key == "student.labels" {
                let mut labels: Vec<String> = serde_json::from_str(&entry.value).unwrap();
                labels.reverse();
                entry.value = serde_json::to_string(&labels).unwrap();
            }
        }
    })
}

/// Writes a copy of a shipped model without its model card into `dir`.
fn without_card(name: &str, dir: &Path) -> PathBuf {
    edited_copy(name, dir, |proto| proto.metadata_props.clear())
}

/// Runs the student on one sample, escalating to `escalation_model`.
fn run_escalating_to(escalation_model: &Path) -> Output {
    student(&[
        "run",
        &model("student.onnx"),
        &sample("test-00000-label-9.png"),
        "--escalate-to",
        &escalation_model.display().to_string(),
    ])
}

#[test]
fn model_without_card_runs_and_states_its_defaults() {
    let path = without_card("student.onnx", &scratch("cardless"));
    let o = student(&[
        "run",
        &path.display().to_string(),
        &sample("test-00000-label-9.png"),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("lacks labels") && err.contains("threshold 0"),
        "{err}"
    );
    let inspect = student(&["inspect", &path.display().to_string()]);
    assert!(
        stdout(&inspect).contains("no card entry"),
        "{}",
        stdout(&inspect)
    );
}

#[test]
fn escalation_model_with_other_input_is_refused() {
    let path = without_card("teacher.onnx", &scratch("mismatch"));
    assert_one_line_error(&run_escalating_to(&path), "escalat");
}

#[test]
fn unknown_data_set_and_missing_recipe() {
    let o = student(&["eval", &model("student.onnx"), "--data", "cifar10:test"]);
    assert_one_line_error(&o, "cifar10:test");
    let o = student(&["distill", "--recipe", "/nonexistent/recipe.toml"]);
    assert_one_line_error(&o, "/nonexistent/recipe.toml");
}

/// A recipe distilling from `out/student.onnx` into `out`, beside the recipe in `dir`.
fn recipe_in(dir: &Path) -> String {
    let recipe = dir.join("recipe.toml");
    std::fs::write(
        &recipe,
        "name = \"t\"\nseed = 1\n[data]\nsource = \"fashion-mnist\"\nvalidation = 1000\n\
         mean = 0.286\nstd = 0.353\n[teacher]\nonnx = \"out/student.onnx\"\n\
         [student.net]\nconvs = [4]\nhidden = 8\n[student.train]\nepochs = 1\nbatch = 128\n\
         learning_rate = 0.004\n[student]\ntemperature = 2.0\nalpha = 0.5\n[calibration]\n\
         score = \"max_probability\"\ntarget = { kind = \"cascade_within_teacher\", points = 0.25 }\n\
         [output]\ndir = \"out\"\n",
    )
    .unwrap();
    recipe.display().to_string()
}

#[test]
fn distill_refuses_outputs_it_could_not_write_before_training() {
    // The recipe's teacher is at the name the student would be written to: the run would
    // replace the file it distils from.
    let dir = scratch("distill-outputs");
    let out = dir.join("out");
    std::fs::create_dir_all(&out).unwrap();
    let teacher = std::fs::read(model("teacher.onnx")).unwrap();
    std::fs::write(out.join("student.onnx"), &teacher).unwrap();
    let recipe = recipe_in(&dir);
    let o = student(&["distill", "--recipe", &recipe]);
    assert_one_line_error(&o, "it is the recipe's teacher");
    assert_eq!(std::fs::read(out.join("student.onnx")).unwrap(), teacher);
    // A folder where the report goes is refused before training too, not after it.
    std::fs::rename(out.join("student.onnx"), out.join("teacher-copy.onnx")).unwrap();
    std::fs::write(
        dir.join("recipe.toml"),
        std::fs::read_to_string(&recipe)
            .unwrap()
            .replace("out/student.onnx", "out/teacher-copy.onnx"),
    )
    .unwrap();
    std::fs::create_dir(out.join("report.md")).unwrap();
    let o = student(&["distill", "--recipe", &recipe]);
    assert_one_line_error(&o, "report.md");
    assert!(!out.join("student.onnx").exists());
}

#[test]
fn eval_refuses_a_model_whose_labels_are_not_the_data_sets() {
    let dir = scratch("eval-labels");
    let reversed = with_labels_reversed("student.onnx", &dir);
    let o = student(&["eval", &reversed.display().to_string(), "--limit", "10"]);
    assert_one_line_error(&o, "would be scored against other classes");
    // A model without labels counts classes by index and is evaluated.
    let unlabelled = without_card("student.onnx", &dir);
    let o = student(&["eval", &unlabelled.display().to_string(), "--limit", "10"]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn closed_output_pipe_is_not_a_crash() {
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_student"))
        .args(["inspect", &model("student.onnx")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
}

/// Writes an unsigned-byte IDX file of image dimensions `dims` holding `data`, and runs
/// the student on it.
fn run_on_idx(dir: &Path, name: &str, dims: [u32; 3], data: &[u8]) -> Output {
    let mut bytes = vec![0u8, 0, 8, 3];
    for d in dims {
        bytes.extend(d.to_be_bytes());
    }
    bytes.extend_from_slice(data);
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    student(&["run", &model("student.onnx"), &path.display().to_string()])
}

#[test]
fn idx_with_zero_sized_images_or_none() {
    let dir = scratch("idx-zero");
    // A billion images of 0x0 pixels: 16 bytes that must not become a billion entries.
    assert_one_line_error(
        &run_on_idx(&dir, "zero.idx", [1_000_000_000, 0, 0], &[]),
        "zero",
    );
    assert_one_line_error(
        &run_on_idx(&dir, "empty.idx", [0, 28, 28], &[]),
        "no images",
    );
    // Many 1x1 images: refused from the header, before they are split into images.
    let tiny = run_on_idx(&dir, "tiny.idx", [100_000, 1, 1], &[0; 100_000]);
    assert_one_line_error(&tiny, "1x1 images");
    // Ranks other than 3 are IDX files too, not images of an unknown extension, and so are
    // files named as IDX whatever they hold.
    for (name, head) in [
        ("five.idx", &[0u8, 0, 8, 5][..]),
        ("rank255.idx", &[0, 0, 8, 255]),
        ("type42.idx", &[0, 0, 0x42, 3]),
        ("magic.idx", &[1, 0, 8, 3]),
        ("empty.idx.gz", &[]),
        ("t10k-images-idx3-ubyte", &[]),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, head).unwrap();
        let o = student(&["run", &model("student.onnx"), &path.display().to_string()]);
        assert_one_line_error(&o, "IDX");
    }
}

#[test]
fn gzipped_idx_of_other_sized_images_is_refused_from_its_header() {
    use flate2::{Compression, write::GzEncoder};
    use std::io::Write;
    let dir = scratch("idx-gz-header");
    // The header declares 60,000 images of 10x10 and the stream stops after it: refused
    // for the image size, which only the header says, not for the missing data, which
    // inflating the whole stream first would have found.
    let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
    for d in [0x0000_0803u32, 60_000, 10, 10] {
        enc.write_all(&d.to_be_bytes()).unwrap();
    }
    let path = dir.join("other.idx.gz");
    std::fs::write(&path, enc.finish().unwrap()).unwrap();
    let o = student(&["run", &model("student.onnx"), &path.display().to_string()]);
    assert_one_line_error(&o, "holds 10x10 images, the model expects 28x28");
}

#[test]
fn escalation_model_with_other_labels_is_refused() {
    let path = with_labels_reversed("teacher.onnx", &scratch("reversed"));
    assert_one_line_error(&run_escalating_to(&path), "labels");
}

#[test]
fn fifo_input_is_refused_not_waited_on() {
    let dir = scratch("fifo");
    let fifo = dir.join("pipe.png");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let o = student(&["run", &model("student.onnx"), &fifo.display().to_string()]);
    assert_one_line_error(&o, "not a regular file");
    for args in [vec!["inspect"], vec!["distill", "--recipe"]] {
        let mut args = args.clone();
        let path = fifo.display().to_string();
        args.push(&path);
        assert_one_line_error(&student(&args), "not a regular file");
    }
}

#[test]
fn top_k_zero_is_a_usage_error() {
    let o = student(&[
        "run",
        &model("student.onnx"),
        &sample("test-00000-label-9.png"),
        "--top-k",
        "0",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

#[test]
fn eval_limit_cuts_the_data_and_says_so() {
    let o = student(&["eval", &model("student.onnx"), "--limit", "100", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["samples"], 100);
    assert_eq!(v["data"], "fashion-mnist:test[..100]");
}

/// A fraction in [0, 1].
fn fraction(v: &serde_json::Value, what: &str) -> f64 {
    let x = v
        .as_f64()
        .unwrap_or_else(|| panic!("{what} is not a number: {v}"));
    assert!((0.0..=1.0).contains(&x), "{what} = {x}");
    x
}

#[test]
fn eval_report_writes_tables_json_and_plots() {
    let dir = scratch("report").join("out");
    let o = student(&[
        "eval",
        &model("student.onnx"),
        "--teacher",
        &model("teacher.onnx"),
        "--compare",
        &model("baseline.onnx"),
        "--compare",
        &format!("self={}", model("teacher.onnx")),
        "--report",
        &dir.display().to_string(),
        "--limit",
        "200",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    for file in [
        "report.md",
        "report.json",
        "reliability.svg",
        "risk-coverage.svg",
        "cascade.svg",
        "per-class.svg",
    ] {
        let path = dir.join(file);
        assert!(path.is_file(), "{} missing", path.display());
        if file.ends_with(".svg") {
            let svg = std::fs::read_to_string(&path).unwrap();
            assert!(svg.starts_with("<svg") && svg.contains("</svg>"), "{file}");
        }
    }
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap();
    assert_eq!(v["samples"], 200);
    assert_eq!(v["classes"].as_array().unwrap().len(), 10);
    let corruptions = v["corruptions"].as_array().unwrap().len();
    assert!(corruptions >= 4, "{}", v["corruptions"]);
    let teacher = &v["teacher"];
    let models = v["models"].as_array().unwrap();
    let names: Vec<&str> = models.iter().map(|m| m["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["student", "baseline", "self"]);
    for m in std::iter::once(teacher).chain(models) {
        let name = m["name"].as_str().unwrap();
        for key in ["accuracy", "agreement", "ece", "aurc"] {
            fraction(&m[key], &format!("{name}.{key}"));
        }
        assert!(m["kl_from_teacher"].as_f64().unwrap() >= 0.0, "{name}");
        assert!(m["params"].as_u64().unwrap() > 1000, "{name}");
        assert!(m["file_size"].as_u64().unwrap() > 1000, "{name}");
        // Latency is reported, never judged: only its presence is checked.
        assert!(m["latency"]["median_us"].is_number(), "{name}");
        assert!(m["latency"]["p90_us"].is_number(), "{name}");
        let per_class = m["per_class"].as_array().unwrap();
        assert_eq!(per_class.len(), 10, "{name}");
        for c in per_class {
            fraction(&c["accuracy"], &format!("{name} per class"));
        }
        let robustness = m["robustness"].as_array().unwrap();
        assert_eq!(robustness.len(), corruptions, "{name}");
        for r in robustness {
            fraction(&r["accuracy"], &format!("{name} {}", r["corruption"]));
        }
    }
    assert!(teacher["cascade"].is_null());
    assert_eq!(teacher["agreement"], 1.0);
    // The teacher compared with itself: same answers, no divergence, no class singled out.
    let same = &models[2];
    assert_eq!(same["agreement"], 1.0);
    assert!(same["kl_from_teacher"].as_f64().unwrap() < 1e-9);
    assert_eq!(same["accuracy"], teacher["accuracy"]);
    assert_eq!(same["worst_classes"].as_array().unwrap().len(), 0);
    // No gap at all is 0, not -0.
    let no_gap = same["mean_class_drop"].as_f64().unwrap();
    assert!(no_gap == 0.0 && no_gap.is_sign_positive(), "{no_gap}");
    // The bias audit names a class only where the model is below the teacher and loses
    // more than its mean loss per class.
    for m in models {
        let mean_drop = m["mean_class_drop"].as_f64().unwrap();
        for k in m["worst_classes"].as_array().unwrap() {
            let delta = k["delta"].as_f64().unwrap();
            assert!(delta < 0.0 && -delta > mean_drop, "{}: {k}", m["name"]);
        }
    }
    assert_eq!(same["cascade"]["cascade_accuracy"], teacher["accuracy"]);
    for m in &models[..2] {
        let cascade = &m["cascade"];
        fraction(&cascade["escalation_rate"], "escalation_rate");
        fraction(&cascade["cascade_accuracy"], "cascade_accuracy");
        assert_eq!(
            m["agreement"].as_f64().unwrap() < 1.0,
            m["kl_from_teacher"].as_f64().unwrap() > 0.0
        );
    }
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    for text in [
        "](reliability.svg)",
        "](risk-coverage.svg)",
        "](cascade.svg)",
        "](per-class.svg)",
        "| student |",
        "| baseline |",
        "Bias audit",
        "noise(sigma=25)",
    ] {
        assert!(md.contains(text), "`{text}` missing from report.md");
    }
    assert!(stdout(&o).contains("wrote"), "{}", stdout(&o));
}

/// A model kept in the report folder under a report file's name, or a recipe under an
/// output's name, is refused before anything is written, and stays as it was.
#[test]
fn reports_and_runs_do_not_replace_their_own_inputs() {
    let dir = scratch("own-inputs");
    let student_bytes = std::fs::read(model("student.onnx")).unwrap();
    let kept = dir.join("report.json");
    std::fs::write(&kept, &student_bytes).unwrap();
    let (kept_text, dir_text) = (kept.display().to_string(), dir.display().to_string());
    for args in [
        vec![
            "eval",
            &kept_text,
            "--teacher",
            &model("teacher.onnx"),
            "--report",
            &dir_text,
        ],
        vec![
            "eval",
            &model("student.onnx"),
            "--teacher",
            &kept_text,
            "--report",
            &dir_text,
        ],
    ] {
        assert_one_line_error(&student(&args), "which the report would replace");
    }
    assert_eq!(std::fs::read(&kept).unwrap(), student_bytes);
    let recipe = std::fs::read_to_string(models().join("recipe.toml")).unwrap();
    let named = dir.join("report.md");
    std::fs::write(&named, &recipe).unwrap();
    let o = student(&["distill", "--recipe", &named.display().to_string()]);
    assert_one_line_error(&o, "it is the recipe itself");
    assert_eq!(std::fs::read_to_string(&named).unwrap(), recipe);
}

#[test]
fn eval_report_refuses_bad_requests_in_one_line() {
    let dir = scratch("report-errors");
    let out = dir.join("out").display().to_string();
    let base = ["eval", "--limit", "50"];
    let run = |extra: &[&str]| {
        let mut args: Vec<&str> = base.to_vec();
        args.extend_from_slice(extra);
        student(&args)
    };
    let student_model = model("student.onnx");
    let teacher_model = model("teacher.onnx");
    assert_one_line_error(&run(&[&student_model, "--report", &out]), "--teacher");
    assert_one_line_error(
        &run(&[&student_model, "--compare", &model("baseline.onnx")]),
        "--report",
    );
    // The teacher file's stem is `teacher`, the name of the teacher's own row.
    assert_one_line_error(
        &run(&[
            &student_model,
            "--teacher",
            &teacher_model,
            "--compare",
            &teacher_model,
            "--report",
            &out,
        ]),
        "NAME=MODEL",
    );
    let reversed = with_labels_reversed("baseline.onnx", &dir);
    assert_one_line_error(
        &run(&[
            &student_model,
            "--teacher",
            &teacher_model,
            "--compare",
            &reversed.display().to_string(),
            "--report",
            &out,
        ]),
        "labels",
    );
    // A folder that cannot exist: its parent is a regular file.
    let file = dir.join("plain-file");
    std::fs::write(&file, b"x").unwrap();
    let under_file = file.join("report").display().to_string();
    assert_one_line_error(
        &run(&[
            &student_model,
            "--teacher",
            &teacher_model,
            "--report",
            &under_file,
        ]),
        "plain-file",
    );
    assert_one_line_error(
        &run(&[
            &student_model,
            "--teacher",
            &teacher_model,
            "--compare",
            "=x.onnx",
            "--report",
            &out,
        ]),
        "NAME=MODEL",
    );
    assert_one_line_error(
        &run(&[
            &student_model,
            "--teacher",
            "/nonexistent/teacher.onnx",
            "--report",
            &out,
        ]),
        "/nonexistent/teacher.onnx",
    );
    // None of the refused runs leaves a report folder behind.
    assert!(!Path::new(&out).exists(), "{out} was left behind");
}

/// `student eval` of the shipped student against the shipped teacher on the first `limit`
/// test images, with extra arguments.
fn eval_report(limit: &str, extra: &[&str]) -> Output {
    let student_model = model("student.onnx");
    let teacher_model = model("teacher.onnx");
    let mut args = vec![
        "eval",
        &student_model,
        "--teacher",
        &teacher_model,
        "--limit",
        limit,
    ];
    args.extend_from_slice(extra);
    student(&args)
}

#[test]
fn eval_report_makes_only_its_own_folder() {
    let dir = scratch("report-parents");
    let deep = dir.join("missing").join("a").join("b");
    let o = eval_report("5", &["--report", &deep.display().to_string()]);
    assert_one_line_error(&o, "missing/a does not exist");
    assert!(!dir.join("missing").exists(), "a parent folder was created");
    // The folder itself is made when its parent is there.
    let out = dir.join("out");
    let o = eval_report("5", &["--report", &out.display().to_string()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(out.join("report.md").is_file());
}

#[cfg(unix)]
#[test]
fn eval_report_never_writes_through_a_link_at_a_file_name() {
    let dir = scratch("report-link");
    let out = dir.join("out");
    std::fs::create_dir(&out).unwrap();
    let victim = dir.join("victim.txt");
    std::fs::write(&victim, "keep me").unwrap();
    std::os::unix::fs::symlink(&victim, out.join("report.md")).unwrap();
    let o = eval_report("5", &["--report", &out.display().to_string()]);
    assert_one_line_error(&o, "symbolic link");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me");
    assert!(
        std::fs::symlink_metadata(out.join("report.md"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    // Refused before anything was written: no other report file, and no temporary file.
    for entry in std::fs::read_dir(&out).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        assert_eq!(name, "report.md", "{name} written");
    }
}

#[test]
fn eval_report_refuses_names_that_would_break_the_report() {
    let dir = scratch("report-names");
    let out = dir.join("out").display().to_string();
    let baseline = model("baseline.onnx");
    for name in ["a|b<script>", "two\nlines", &"n".repeat(65)] {
        let spec = format!("{name}={baseline}");
        let o = eval_report("5", &["--compare", &spec, "--report", &out]);
        assert_one_line_error(&o, &format!("`{}`", name.escape_debug()));
        assert_one_line_error(&o, "ASCII letters, digits");
    }
    // The text before the first `=` is a name, not part of a path.
    let spec = format!("x/y={baseline}");
    let o = eval_report("5", &["--compare", &spec, "--report", &out]);
    assert_one_line_error(&o, "`x/y` before the first `=` is not a valid model name");
    assert!(!stderr(&o).contains("cannot read"), "{}", stderr(&o));
    assert!(!Path::new(&out).exists());
}

#[test]
fn classes_without_images_have_no_accuracy() {
    let o = student(&["eval", &model("student.onnx"), "--limit", "1", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    let per_class = v["per_class_accuracy"].as_array().unwrap();
    assert_eq!(per_class.len(), 10);
    // The first test image is an ankle boot: the other nine classes have no image.
    assert_eq!(per_class.iter().filter(|a| a.is_null()).count(), 9, "{v}");
    assert!(per_class[9].is_number(), "{v}");
    let text = student(&["eval", &model("student.onnx"), "--limit", "1"]);
    assert!(stdout(&text).contains("(1 image)"), "{}", stdout(&text));

    let dir = scratch("report-one-image").join("out");
    let o = eval_report("1", &["--report", &dir.display().to_string()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stdout(&o).contains("1 images") && !stderr(&o).contains("1 images"));
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap();
    for m in std::iter::once(&v["teacher"]).chain(v["models"].as_array().unwrap()) {
        let per_class = m["per_class"].as_array().unwrap();
        let empty: Vec<&serde_json::Value> = per_class
            .iter()
            .filter(|k| k["accuracy"].is_null())
            .collect();
        assert_eq!(empty.len(), 9, "{}", m["name"]);
        for k in empty {
            assert!(
                k["teacher_accuracy"].is_null() && k["delta"].is_null(),
                "{k}"
            );
        }
        assert!(m["worst_classes"].as_array().unwrap().is_empty());
    }
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(md.contains("| T-shirt/top | n/a | n/a | n/a |"), "{md}");
    assert!(md.contains("1 image.") && !md.contains("1 images"), "{md}");
    // One bar per model, for the one class with an image (besides the legend swatches).
    let svg = std::fs::read_to_string(dir.join("per-class.svg")).unwrap();
    let filled = svg
        .split("<rect ")
        .skip(1)
        .filter(|r| !r.contains("fill=\"#FFFFFF\"") && !r.contains("fill=\"none\""))
        .count();
    assert_eq!(filled, 2 + 2, "{svg}");
}

/// `student quantize` of the shipped student into `out`, with extra arguments.
fn quantize_into(out: &Path, extra: &[&str]) -> Output {
    let student_model = model("student.onnx");
    let out = out.display().to_string();
    let mut args = vec![
        "quantize",
        &student_model,
        "--precision",
        "fp16",
        "--target",
        "max_escalation=0.2",
        "-o",
        &out,
    ];
    args.extend_from_slice(extra);
    student(&args)
}

#[test]
fn quantize_writes_a_model_that_opens_with_its_card() {
    let dir = scratch("quantize-ok");
    let out = dir.join("s-fp16.onnx");
    let o = quantize_into(&out, &["--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["precision"], "fp16");
    assert!(
        v["chosen_by"]
            .as_str()
            .unwrap()
            .contains("escalate at most 20.0%")
    );
    let i = student(&["inspect", &out.display().to_string()]);
    assert!(stdout(&i).contains("precision   fp16"), "{}", stdout(&i));
    // Only the output remains: no temporary file is left beside it.
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["s-fp16.onnx"]);
    // An earlier quantized file is replaced.
    let again = quantize_into(&out, &[]);
    assert!(again.status.success(), "{}", stderr(&again));
}

#[cfg(unix)]
#[test]
fn quantize_never_replaces_what_is_not_a_regular_file_or_is_an_input() {
    let dir = scratch("quantize-out");
    // A symlink at the output name: refused, and its target untouched.
    let victim = dir.join("victim.txt");
    std::fs::write(&victim, "keep me").unwrap();
    let link = dir.join("link.onnx");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    assert_one_line_error(&quantize_into(&link, &[]), "symbolic link");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me");
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    // A FIFO and a directory.
    let fifo = dir.join("fifo");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    assert_one_line_error(&quantize_into(&fifo, &[]), "not a regular file");
    assert!(
        std::fs::symlink_metadata(&fifo)
            .unwrap()
            .file_type()
            .is_fifo()
    );
    assert_one_line_error(&quantize_into(&dir, &[]), "directory");
    // The output may not be one of the run's inputs.
    let teacher_copy = dir.join("teacher.onnx");
    std::fs::copy(models().join("teacher.onnx"), &teacher_copy).unwrap();
    let before = std::fs::read(&teacher_copy).unwrap();
    let t = teacher_copy.display().to_string();
    assert_one_line_error(
        &quantize_into(&teacher_copy, &["--teacher", &t]),
        "--teacher",
    );
    assert_eq!(std::fs::read(&teacher_copy).unwrap(), before);
    // Nor another kind of file: a model that is not a quantized student, a note.
    assert_one_line_error(
        &quantize_into(&teacher_copy, &[]),
        "exists and is not a quantized student",
    );
    assert_eq!(std::fs::read(&teacher_copy).unwrap(), before);
    let note = dir.join("notes.txt");
    std::fs::write(&note, "keep me").unwrap();
    assert_one_line_error(&quantize_into(&note, &[]), "not a quantized student");
    assert_eq!(std::fs::read_to_string(&note).unwrap(), "keep me");
    // A folder that is not there: said before calibrating, not after.
    assert_one_line_error(
        &quantize_into(&dir.join("missing/int8.onnx"), &[]),
        "does not exist; create it or write elsewhere",
    );
    // A compiled student as the input: named as one.
    let compiled = dir.join("s.student");
    let c = student(&[
        "compile",
        &model("student.onnx"),
        "-o",
        compiled.to_str().unwrap(),
    ]);
    assert!(c.status.success(), "{}", stderr(&c));
    let o = student(&[
        "quantize",
        compiled.to_str().unwrap(),
        "--precision",
        "int8",
        "-o",
        dir.join("q.onnx").to_str().unwrap(),
    ]);
    assert_one_line_error(&o, "is a compiled student; quantize the ONNX file");
    let o = student(&[
        "quantize",
        &model("student.onnx"),
        "--precision",
        "int8",
        "-o",
        &model("student.onnx"),
    ]);
    assert_one_line_error(&o, "the input model");
}

#[test]
fn quantize_usage_errors_fail_before_any_work() {
    let dir = scratch("quantize-usage");
    let out = dir.join("x.onnx").display().to_string();
    let s = model("student.onnx");
    // Unknown values are usage errors (exit 2).
    for args in [
        vec!["quantize", &s, "--precision", "int4", "-o", &out],
        vec![
            "quantize",
            &s,
            "--precision",
            "int8",
            "--method",
            "kl",
            "-o",
            &out,
        ],
        vec![
            "quantize",
            &s,
            "--precision",
            "int8",
            "--score",
            "x",
            "-o",
            &out,
        ],
    ] {
        let o = student(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
    }
    // The card's recipe target compares with the teacher: without one, a clear error
    // that says how to fix it.
    let o = student(&["quantize", &s, "--precision", "fp16", "-o", &out]);
    assert_one_line_error(&o, "give the teacher");
    assert!(
        !stderr(&o).contains("CascadeWithinTeacher"),
        "{}",
        stderr(&o)
    );
    // Measuring on the data the threshold was fitted on would flatter the model.
    let o = student(&[
        "quantize",
        &s,
        "--precision",
        "fp16",
        "--target",
        "max_escalation=0.1",
        "--test-data",
        "fashion-mnist:validation",
        "-o",
        &out,
    ]);
    assert_one_line_error(&o, "also the calibration data");
    for bad in [
        "risk_bound=0.05",
        "risk_bound=2,0.1",
        "accepted_accuracy=nan",
        "fastest",
    ] {
        let o = student(&[
            "quantize",
            &s,
            "--precision",
            "fp16",
            "--target",
            bad,
            "-o",
            &out,
        ]);
        assert_one_line_error(&o, "--target");
    }
    assert!(!dir.join("x.onnx").exists());
}

#[test]
fn compile_writes_nothing_when_the_compiled_file_disagrees_with_the_onnx_file() {
    let dir = scratch("compile-tolerance");
    let out = dir.join("teacher.student");
    // An earlier compiled file (of the student) at the output.
    let o = student(&[
        "compile",
        &model("student.onnx"),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let earlier = std::fs::read(&out).unwrap();
    let compile = |tolerance: &str| {
        student(&[
            "compile",
            &model("teacher.onnx"),
            "-o",
            out.to_str().unwrap(),
            &format!("--tolerance={tolerance}"),
        ])
    };
    // The teacher's Winograd convolutions sum in another order than tract's: its logits
    // differ by a few ulps, which a tolerance of 0 refuses.
    let o = compile("0");
    assert_one_line_error(&o, "differ from the ONNX file's (through tract) by up to");
    assert!(stderr(&o).contains("was not written"), "{}", stderr(&o));
    assert_eq!(std::fs::read(&out).unwrap(), earlier);
    for bad in ["-0.5", "nan", "inf", "x"] {
        let o = compile(bad);
        assert!(!o.status.success());
        assert!(
            stderr(&o).contains("a fraction of the logits' span"),
            "{}",
            stderr(&o)
        );
    }
    assert_eq!(std::fs::read(&out).unwrap(), earlier);
    // The default tolerance (1% of the logits' span) accepts it.
    let o = student(&[
        "compile",
        &model("teacher.onnx"),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let written = std::fs::read(&out).unwrap();
    assert!(written.starts_with(b"STUDENT") && written != earlier);
    // Another kind of file at the output (a copy of the teacher, a note) is not replaced.
    for (name, bytes) in [
        (
            "teacher.onnx",
            std::fs::read(model("teacher.onnx")).unwrap(),
        ),
        ("notes.txt", b"notes".to_vec()),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, &bytes).unwrap();
        let o = student(&[
            "compile",
            &model("student.onnx"),
            "-o",
            path.to_str().unwrap(),
        ]);
        assert_one_line_error(&o, "exists and is not a compiled student");
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
    }
}

#[test]
fn compile_then_bench_the_compiled_file() {
    let dir = scratch("compile-bench");
    let out = dir.join("student-int8.student");
    let o = student(&[
        "compile",
        &model("student-int8.onnx"),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("conv-int8+max-pool x2"),
        "{}",
        stdout(&o)
    );
    // Compiling the compiled file, or over the input, is refused in one line.
    let again = student(&[
        "compile",
        out.to_str().unwrap(),
        "-o",
        dir.join("x").to_str().unwrap(),
    ]);
    assert_one_line_error(&again, "already a compiled student");
    let over = student(&[
        "compile",
        out.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_one_line_error(&over, "is the input model");

    let o = student(&[
        "bench",
        out.to_str().unwrap(),
        "--seconds",
        "0.2",
        "--batch",
        "2",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    for key in [
        "load_ms",
        "first_result_ms",
        "p50_us",
        "p90_us",
        "throughput_per_s",
        "peak_rss_mb",
    ] {
        assert!(v[key].as_f64().is_some_and(|x| x > 0.0), "{key} in {v}");
    }
    assert!(v["p50_us"].as_f64() <= v["p90_us"].as_f64(), "{v}");
    assert_ne!(v["kernel"], "tract", "{v}");
    assert_eq!(v["batch"], 2);

    // A level this CPU cannot run is an error, and so is a bad duration (a usage error).
    let o = student(&["bench", out.to_str().unwrap(), "--kernels", "no-such-level"]);
    assert_one_line_error(&o, "expected one of portable");
    let o = student(&["bench", out.to_str().unwrap(), "--seconds", "0"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    // An ONNX file runs through tract: benchmarking it "at" a level would report tract.
    let onnx = models().join("student.onnx");
    let o = student(&["bench", onnx.to_str().unwrap(), "--kernels", "portable"]);
    assert_one_line_error(&o, "runs through tract");
}

/// png 0.18.1 panics on a palette chunk whose length is not a multiple of 3 (found by the
/// `image_decode` fuzzer): `student run` reports a bad image, not an internal error.
#[test]
fn png_that_makes_the_decoder_panic() {
    let dir = scratch("png-panic");
    let finding = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fuzz-regressions/image_decode/png-palette-53-bytes");
    // The fuzz input's first byte chooses the target's mode; the PNG follows.
    let bytes = std::fs::read(finding).unwrap();
    let path = dir.join("palette.png");
    std::fs::write(&path, &bytes[1..]).unwrap();
    let o = student(&["run", &model("student.onnx"), &path.display().to_string()]);
    assert_one_line_error(&o, "palette.png is not a readable PNG or PGM image");
    assert!(!stderr(&o).contains("internal error"), "{}", stderr(&o));
}

/// Card text reaches the terminal with its control characters escaped: a free-text field
/// holding an escape sequence or a carriage return cannot rewrite what the user sees.
/// (Names and labels with control characters are refused when the card is read.)
#[test]
fn card_text_cannot_send_control_characters_to_the_terminal() {
    let dir = scratch("control-characters");
    let path = edited_copy("student.onnx", &dir, |proto| {
        for entry in &mut proto.metadata_props {
            if entry.key == "student.calibration" {
                let at = entry.value.find("\"method\":\"").expect("a method") + 10;
                entry.value.insert_str(at, "\\u001b[2J\\r");
            }
            if entry.key == "student.teacher" {
                entry.value = entry
                    .value
                    .replacen("fashion-mnist-teacher", "t\\u009bx", 1);
            }
        }
    });
    let path = path.display().to_string();
    let o = student(&["inspect", &path]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(!out.chars().any(|c| c.is_control() && c != '\n'), "{out:?}");
    assert!(out.contains("(\\u001b[2J\\u000d"), "{out}");
    assert!(out.contains("teacher     t\\u009bx ("), "{out}");
    // JSON output stays valid JSON, the text intact inside it.
    let o = student(&["inspect", &path, "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(json["card"]["teacher"]["name"], "t\u{9b}x");
}

#[test]
fn input_names_that_are_not_utf8_stay_apart_in_the_output() {
    use std::os::unix::ffi::OsStrExt;
    let dir = scratch("non-utf8");
    let png = std::fs::read(model("samples/test-00000-label-9.png")).unwrap();
    // Two bytes that are not UTF-8 apart, and a UTF-8 name that spells the first's
    // escaped form: all three must be told apart.
    let names = [
        b"a\xff.png".as_slice(),
        b"a\xfe.png".as_slice(),
        b"\"a\\xFF.png\"".as_slice(),
    ];
    for n in names {
        std::fs::write(dir.join(std::ffi::OsStr::from_bytes(n)), &png).unwrap();
    }
    let o = Command::new(env!("CARGO_BIN_EXE_student"))
        .current_dir(&dir)
        .args(["run", &model("student.onnx"), "--json"])
        .args(names.map(std::ffi::OsStr::from_bytes))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let inputs: Vec<String> = stdout(&o)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["input"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(
        inputs,
        [r#""a\xFF.png""#, r#""a\xFE.png""#, r#""\"a\\xFF.png\"""#],
        "escaped, quoted forms"
    );
}

#[test]
fn a_three_channel_model_reads_colour_images_in_colour() {
    // A model whose three logits are the means of its three input channels: a red image
    // is class 0, green 1, blue 2. Read as gray, all three would tie.
    use tract_onnx::pb;
    let dir = scratch("colour");
    let dim = |v: pb::tensor_shape_proto::dimension::Value| pb::tensor_shape_proto::Dimension {
        value: Some(v),
        ..Default::default()
    };
    let value = |name: &str, dims: Vec<pb::tensor_shape_proto::Dimension>| pb::ValueInfoProto {
        name: name.to_string(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: 1,
                shape: Some(pb::TensorShapeProto { dim: dims }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    };
    use pb::tensor_shape_proto::dimension::Value::{DimParam, DimValue};
    let batch = || dim(DimParam("N".to_string()));
    let node = |op: &str, input: &str, output: &str| pb::NodeProto {
        op_type: op.to_string(),
        input: vec![input.to_string()],
        output: vec![output.to_string()],
        ..Default::default()
    };
    let model = pb::ModelProto {
        ir_version: 8,
        opset_import: vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: 13,
        }],
        graph: Some(pb::GraphProto {
            name: "colour".to_string(),
            node: vec![
                node("GlobalAveragePool", "x", "pooled"),
                node("Flatten", "pooled", "y"),
            ],
            input: vec![value(
                "x",
                vec![
                    batch(),
                    dim(DimValue(3)),
                    dim(DimValue(28)),
                    dim(DimValue(28)),
                ],
            )],
            output: vec![value("y", vec![batch(), dim(DimValue(3))])],
            ..Default::default()
        }),
        ..Default::default()
    };
    let path = dir.join("colour.onnx");
    std::fs::write(&path, model.encode_to_vec()).unwrap();
    let mut args = vec![
        "run".to_string(),
        path.display().to_string(),
        "--json".to_string(),
    ];
    for (i, rgb) in [[250u8, 0, 0], [0, 250, 0], [0, 0, 250]].iter().enumerate() {
        let image = dir.join(format!("colour-{i}.png"));
        image::RgbImage::from_pixel(28, 28, image::Rgb(*rgb))
            .save(&image)
            .unwrap();
        args.push(image.display().to_string());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = student(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let classes: Vec<u64> = stdout(&o)
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["index"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(classes, [0, 1, 2]);
}
