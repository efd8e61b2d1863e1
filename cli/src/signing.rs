//! `student keygen`, `student sign`, `student verify`, and the `--trust` option of the
//! commands that open models: Ed25519 signatures kept next to model files.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use student_distill::replace_file;
use student_runtime::signing::{self, SecretKey, TrustedKey};
use student_runtime::{OpenOptions, StudentModel};

/// `NAME.key` (the secret key, readable by its owner only) and `NAME.pub`.
pub fn keygen(name: &Path) -> Result<()> {
    if name.file_name().is_some_and(|s| s.to_str().is_none()) {
        bail!(
            "the key name {} is not valid UTF-8; give NAME as text",
            name.display()
        );
    }
    // `keys/` or `.` would name hidden files `keys/.key` and `./.key`.
    let stem = name.file_name().and_then(|s| s.to_str());
    if stem.is_none_or(|s| s.is_empty() || s == "." || s == "..")
        || name.as_os_str().to_string_lossy().ends_with('/')
    {
        bail!(
            "{} names a folder, not a key: give NAME as a file name, such as release \
             (which writes release.key and release.pub)",
            name.display()
        );
    }
    let secret_path = with_suffix(name, "key");
    let public_path = with_suffix(name, "pub");
    for path in [&secret_path, &public_path] {
        if std::fs::symlink_metadata(path).is_ok() {
            bail!(
                "{} already exists; keys are never replaced (choose another NAME)",
                path.display()
            );
        }
    }
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed)
        .map_err(|e| anyhow::anyhow!("the operating system's random generator failed: {e}"))?;
    let key = SecretKey::from_seed(seed);
    // A key file is never replaced: losing a signing key is not undoable.
    let mut file = new_file(&secret_path, 0o600)
        .with_context(|| format!("cannot create {}", secret_path.display()))?;
    writeln!(file, "{SECRET_PREFIX}{}", key.to_hex())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", secret_path.display()))?;
    let public = new_file(&public_path, 0o644).and_then(|mut file| {
        writeln!(file, "{}", key.public().to_hex())?;
        file.sync_all()
    });
    if let Err(e) = public {
        // Leave no half pair behind: the secret key alone is of no use.
        let _ = std::fs::remove_file(&secret_path);
        return Err(e).with_context(|| format!("cannot create {}", public_path.display()));
    }
    // A name may hold a line break; each line printed here stays one line.
    let shown =
        |path: &Path| crate::terminal::printable_line(&path.display().to_string()).into_owned();
    out!(
        "wrote {} (secret: keep it off devices and out of version control)",
        shown(&secret_path)
    );
    out!(
        "wrote {} (public: ship it in the app, pass it to --trust or OpenOptions::trusted_keys)",
        shown(&public_path)
    );
    Ok(())
}

/// What a secret key file starts with, so that it cannot be taken for a public key (both
/// keys are 64 hex digits) nor a public key for it.
const SECRET_PREFIX: &str = "student-secret-key ";

/// The secret key in the file `path`: `SECRET_PREFIX` and 64 hex digits, or the bare hex
/// digits of a key written before the prefix (unless the file is a `.pub`). Any 32 bytes
/// make a valid secret key, so a public key taken for one would sign without complaint,
/// and its signatures would match no key the app trusts.
fn read_secret_key(path: &Path) -> Result<SecretKey> {
    let text = read_small(path, MAX_KEY_FILE)
        .with_context(|| format!("cannot read the secret key {}", path.display()))?;
    let hex = match text.trim_start().strip_prefix(SECRET_PREFIX) {
        Some(hex) => hex,
        None if path.extension().is_some_and(|e| e == "pub") => bail!(
            "{} is a public key; sign with the secret key (`student keygen NAME` writes it \
             to NAME.key)",
            path.display()
        ),
        None => &text,
    };
    let key = SecretKey::from_hex(hex).with_context(|| path.display().to_string())?;
    // The public key next to it, when there is one, must be its own.
    let public_path = path.with_extension("pub");
    if path.extension().is_some_and(|e| e == "key")
        && let Ok(text) = read_small(&public_path, MAX_KEY_FILE)
        && let Ok(public) = TrustedKey::from_hex(&text)
        && public != key.public()
    {
        bail!(
            "{} is not the secret key of {} next to it",
            path.display(),
            public_path.display()
        );
    }
    Ok(key)
}

/// Writes the signature of `model` by `key` to `output` (default `MODEL.sig`).
pub fn sign(model: &Path, key: &Path, output: Option<&Path>) -> Result<()> {
    let key = read_secret_key(key)?;
    let bytes =
        read_bytes(model, u64::MAX).with_context(|| format!("cannot read {}", model.display()))?;
    // Sign only what opens: a signature vouches for a model, not for arbitrary bytes.
    StudentModel::from_bytes_named(
        &bytes,
        &model.display().to_string(),
        &OpenOptions::default(),
    )
    .context("refusing to sign a file that does not open as a model")?;
    let output = output.map_or_else(|| with_suffix(model, "sig"), Path::to_path_buf);
    // A signature replaces only a signature: never the model or another file.
    if std::fs::symlink_metadata(&output).is_ok() {
        let existing = read_bytes(&output, MAX_KEY_FILE).unwrap_or_default();
        if !existing.starts_with(b"student-signature ") {
            bail!(
                "refusing to write the signature over {}, which is not a signature file",
                output.display()
            );
        }
    }
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
            read_bytes(path, MAX_KEY_FILE)
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
        let text = read_small(path, MAX_KEY_FILE)
            .with_context(|| format!("cannot read the public key {}", path.display()))?;
        if text.trim_start().starts_with(SECRET_PREFIX) {
            bail!(
                "{} is a secret key; trust the public key (NAME.pub), and keep secret keys \
                 off devices",
                path.display()
            );
        }
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

/// The most bytes read from a key or signature file: theirs fit in a few hundred.
const MAX_KEY_FILE: u64 = 4096;

/// The bytes of the regular file `path`, at most `max` (a FIFO or a device is refused, not
/// read).
fn read_bytes(path: &Path, max: u64) -> Result<Vec<u8>> {
    use std::io::Read as _;
    if !std::fs::metadata(path)?.is_file() {
        bail!("not a regular file");
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(max.saturating_add(1))
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        bail!("longer than {max} bytes: not a key or signature file");
    }
    Ok(bytes)
}

/// A key file's text, at most `max` bytes.
fn read_small(path: &Path, max: u64) -> Result<String> {
    String::from_utf8(read_bytes(path, max)?).map_err(|_| anyhow::anyhow!("not UTF-8 text"))
}

/// A new file (never an existing one, nor through a symbolic link) with `mode` on Unix.
fn new_file(path: &Path, mode: u32) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    options.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            std::io::Error::new(e.kind(), "a file is already there; keys are never replaced")
        } else {
            e
        }
    })
}
