//! `student keygen`, `student sign`, `student verify`, and the `--trust` option of the
//! commands that open models: Ed25519 signatures kept next to model files.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use student_distill::replace_file;
use student_runtime::signing::{self, SecretKey, TrustedKey};
use student_runtime::{OpenOptions, StudentModel};

/// `NAME.key` (the secret key, readable by its owner only) and `NAME.pub`.
pub fn keygen(name: &Path) -> Result<()> {
    let secret_path = with_suffix(name, "key");
    let public_path = with_suffix(name, "pub");
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed)
        .map_err(|e| anyhow::anyhow!("the operating system's random generator failed: {e}"))?;
    let key = SecretKey::from_seed(seed);
    // A key file is never replaced: losing a signing key is not undoable.
    let mut file = new_private_file(&secret_path)
        .with_context(|| format!("cannot create {}", secret_path.display()))?;
    writeln!(file, "{}", key.to_hex())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", secret_path.display()))?;
    replace_file(
        &public_path,
        format!("{}\n", key.public().to_hex()).as_bytes(),
    )?;
    out!(
        "wrote {} (secret: keep it off devices and out of version control)",
        secret_path.display()
    );
    out!(
        "wrote {} (public: ship it in the app, pass it to --trust or OpenOptions::trusted_keys)",
        public_path.display()
    );
    Ok(())
}

/// Writes the signature of `model` by `key` to `output` (default `MODEL.sig`).
pub fn sign(model: &Path, key: &Path, output: Option<&Path>) -> Result<()> {
    let text = std::fs::read_to_string(key)
        .with_context(|| format!("cannot read the secret key {}", key.display()))?;
    let key = SecretKey::from_hex(&text).with_context(|| key.display().to_string())?;
    let bytes = std::fs::read(model).with_context(|| format!("cannot read {}", model.display()))?;
    // Sign only what opens: a signature vouches for a model, not for arbitrary bytes.
    StudentModel::from_bytes_named(
        &bytes,
        &model.display().to_string(),
        &OpenOptions::default(),
    )
    .context("refusing to sign a file that does not open as a model")?;
    let output = output.map_or_else(|| with_suffix(model, "sig"), Path::to_path_buf);
    replace_file(&output, signing::sign(&bytes, &key).as_bytes())?;
    out!(
        "wrote {} (signed by {})",
        output.display(),
        key.public().to_hex()
    );
    Ok(())
}

/// Checks that `model` is signed by one of `trust`.
pub fn verify(model: &Path, trust: &[PathBuf], signature: Option<&Path>) -> Result<()> {
    let mut options = open_options(trust)?;
    if let Some(path) = signature {
        options.signature = Some(
            std::fs::read(path)
                .with_context(|| format!("cannot read the signature {}", path.display()))?,
        );
    }
    StudentModel::open_with(model, &options)?;
    out!(
        "{}: signature verified, signed by a trusted key",
        model.display()
    );
    Ok(())
}

/// Options that accept only models signed by one of the public keys in `trust` (none:
/// every model).
pub fn open_options(trust: &[PathBuf]) -> Result<OpenOptions> {
    let mut keys = Vec::with_capacity(trust.len());
    for path in trust {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the public key {}", path.display()))?;
        keys.push(TrustedKey::from_hex(&text).with_context(|| path.display().to_string())?);
    }
    Ok(OpenOptions {
        trusted_keys: keys,
        ..OpenOptions::default()
    })
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".");
    name.push(suffix);
    PathBuf::from(name)
}

fn new_private_file(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            std::io::Error::new(e.kind(), "a file is already there; keys are never replaced")
        } else {
            e
        }
    })
}
