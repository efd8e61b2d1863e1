//! `student keygen`, `sign`, `verify` and `--trust`, as a publisher and an app would use
//! them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn student(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_student"))
        .args(args)
        .env("RUST_LOG", "warn")
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("the student binary runs")
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn scratch() -> PathBuf {
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("signing-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Exit code 1 and exactly one `error:` line containing `expected`.
fn refused(output: &Output, expected: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("error: ") && stderr.contains(expected),
        "expected `{expected}` in: {stderr}"
    );
}

#[test]
fn a_signed_model_verifies_and_opens_only_under_its_key() {
    let dir = scratch();
    let model = dir.join("student.onnx");
    std::fs::copy(root().join("models/fashion-mnist/student.onnx"), &model).unwrap();
    let sample = root().join("models/fashion-mnist/samples/test-00000-label-9.png");
    let (publisher, other) = (dir.join("publisher"), dir.join("other"));
    for name in [&publisher, &other] {
        let out = student(&["keygen", s(name)]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let (key, public, other_public) = (
        dir.join("publisher.key"),
        dir.join("publisher.pub"),
        dir.join("other.pub"),
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the secret key is readable by others");
    }
    // A key is never replaced.
    refused(&student(&["keygen", s(&publisher)]), "never replaced");
    // A folder is not a key name (it would write the hidden files `keys/.key` and `.pub`).
    let folder = format!("{}/", dir.display());
    refused(&student(&["keygen", &folder]), "names a folder, not a key");
    assert!(!dir.join(".key").exists() && !dir.join(".pub").exists());
    // A name that is not UTF-8 is said to be so, not called a folder.
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let mut name = dir.clone().into_os_string();
        name.push(std::ffi::OsStr::from_bytes(b"/k\xff"));
        let out = Command::new(env!("CARGO_BIN_EXE_student"))
            .arg("keygen")
            .arg(&name)
            .output()
            .unwrap();
        refused(&out, "is not valid UTF-8");
    }

    let out = student(&["sign", s(&model), "--key", s(&key)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir.join("student.onnx.sig").is_file());

    let out = student(&["verify", s(&model), "--trust", s(&public)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("signature verified"));
    let out = student(&[
        "inspect",
        s(&model),
        "--trust",
        s(&other_public),
        "--trust",
        s(&public),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = student(&["run", s(&model), s(&sample), "--trust", s(&public)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    refused(
        &student(&["run", s(&model), s(&sample), "--trust", s(&other_public)]),
        "not among the 1 trusted key",
    );
    // Changed after signing.
    let mut bytes = std::fs::read(&model).unwrap();
    bytes[100] ^= 0x40;
    std::fs::write(&model, &bytes).unwrap();
    refused(
        &student(&["verify", s(&model), "--trust", s(&public)]),
        "signature is for other bytes",
    );
    // Only models are signed.
    let text = dir.join("notes.txt");
    std::fs::write(&text, "not a model").unwrap();
    refused(
        &student(&["sign", s(&text), "--key", s(&key)]),
        "refusing to sign a file that does not open as a model",
    );
    // A public key file that is not a key.
    refused(
        &student(&["verify", s(&model), "--trust", s(&text)]),
        "expected 64 hex digits",
    );
    // The two keys taken for each other: both are 64 hex digits, and any 32 bytes sign.
    std::fs::copy(root().join("models/fashion-mnist/student.onnx"), &model).unwrap();
    let signature = std::fs::read(dir.join("student.onnx.sig")).unwrap();
    refused(
        &student(&["sign", s(&model), "--key", s(&public)]),
        "is a public key",
    );
    refused(
        &student(&["verify", s(&model), "--trust", s(&key)]),
        "is a secret key",
    );
    // A secret key next to another pair's public key.
    std::fs::copy(dir.join("other.key"), dir.join("mixed.key")).unwrap();
    std::fs::copy(&public, dir.join("mixed.pub")).unwrap();
    refused(
        &student(&["sign", s(&model), "--key", s(&dir.join("mixed.key"))]),
        "is not the secret key of",
    );
    // None of these replaced the good signature.
    assert_eq!(
        std::fs::read(dir.join("student.onnx.sig")).unwrap(),
        signature
    );
    let out = student(&["verify", s(&model), "--trust", s(&public)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
