//! Teacher logits over the training set, computed once and cached on disk.
//!
//! The cache key is the teacher file's SHA-256 and the data's fingerprint, so a changed
//! teacher or data set never reuses stale logits. The file is raw little-endian `f32`
//! behind a small header that repeats the key and the shape; anything that does not match
//! is recomputed, never trusted.

use std::path::{Path, PathBuf};

use student_runtime::StudentModel;

use crate::dataset::Dataset;
use crate::error::Error;
use crate::eval::logits;
use crate::progress::Progress;

const MAGIC: &[u8; 8] = b"STLOGIT1";

/// Returns the teacher's logits over `data`, from `cache_dir` when a valid entry exists,
/// otherwise computed through the runtime and stored.
pub(crate) fn teacher_logits(
    teacher: &StudentModel,
    data: &Dataset,
    cache_dir: &Path,
    progress: &mut dyn Progress,
) -> Result<(Vec<f32>, bool), Error> {
    let key = format!("{}-{}", &teacher.sha256()[..16], &data.fingerprint()[..16]);
    let path = cache_dir.join(format!("teacher-logits-{key}.bin"));
    let expected = data.len() * teacher.classes();
    if let Some(cached) = read(&path, &key, expected) {
        log::info!("teacher logits from cache {}", path.display());
        return Ok((cached, true));
    }
    let computed = logits(teacher, data, progress)?;
    if let Err(e) = write(&path, &key, &computed) {
        // A cache that cannot be written only costs time on the next run.
        log::warn!("cannot cache teacher logits at {}: {e}", path.display());
    }
    Ok((computed, false))
}

fn read(path: &PathBuf, key: &str, expected: usize) -> Option<Vec<f32>> {
    let bytes = std::fs::read(path).ok()?;
    let header = MAGIC.len() + key.len() + 8;
    if bytes.len() != header + expected * 4
        || &bytes[..MAGIC.len()] != MAGIC
        || &bytes[MAGIC.len()..MAGIC.len() + key.len()] != key.as_bytes()
    {
        return None;
    }
    let count = u64::from_le_bytes(bytes[header - 8..header].try_into().ok()?);
    if count != expected as u64 {
        return None;
    }
    let values: Vec<f32> = bytes[header..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    values.iter().all(|v| v.is_finite()).then_some(values)
}

fn write(path: &Path, key: &str, values: &[f32]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut bytes = Vec::with_capacity(MAGIC.len() + key.len() + 8 + values.len() * 4);
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(key.as_bytes());
    bytes.extend_from_slice(&(values.len() as u64).to_le_bytes());
    bytes.extend(values.iter().flat_map(|v| v.to_le_bytes()));
    // Write then rename, so an interrupted run never leaves a half-written cache entry.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(tmp, path)
}
