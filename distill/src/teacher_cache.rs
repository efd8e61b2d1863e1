//! Teacher logits over the training set, computed once and cached on disk.
//!
//! The cache key is the teacher file's SHA-256 and the data's fingerprint, so a changed
//! teacher or data set never reuses stale logits. The file is raw little-endian `f32`
//! behind a small header that repeats the key and the count and holds the values'
//! SHA-256; anything that does not match (a damaged or edited entry included) is
//! recomputed, never trusted.

use std::path::{Path, PathBuf};

use student_runtime::StudentModel;

use crate::dataset::Dataset;
use crate::error::Error;
use crate::eval::logits;
use crate::progress::Progress;

use sha2::{Digest, Sha256};

const MAGIC: &[u8; 8] = b"STLOGIT2";

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
    match read(&path, &key, expected) {
        Some(Ok(cached)) => {
            log::info!("teacher logits from cache {}", path.display());
            return Ok((cached, true));
        }
        Some(Err(why)) => log::warn!(
            "the teacher-logits cache {} is not usable ({why}); computing them again",
            path.display()
        ),
        None => {}
    }
    let computed = logits(teacher, data, progress)?;
    if let Err(e) = write(&path, &key, &computed) {
        // A cache that cannot be written only costs time on the next run.
        log::warn!("cannot cache teacher logits at {}: {e}", path.display());
    }
    Ok((computed, false))
}

/// The cached logits: `None` when there is no entry, an error naming what is wrong with
/// one that exists.
fn read(path: &PathBuf, key: &str, expected: usize) -> Option<Result<Vec<f32>, String>> {
    let bytes = std::fs::read(path).ok()?;
    Some(parse(&bytes, key, expected))
}

fn parse(bytes: &[u8], key: &str, expected: usize) -> Result<Vec<f32>, String> {
    let header = MAGIC.len() + key.len() + 8 + 32;
    if bytes.len() != header + expected * 4
        || &bytes[..MAGIC.len()] != MAGIC
        || &bytes[MAGIC.len()..MAGIC.len() + key.len()] != key.as_bytes()
    {
        return Err(format!(
            "{} bytes, not a cache entry of {expected} logits for this teacher and data",
            bytes.len()
        ));
    }
    let at = MAGIC.len() + key.len();
    let count = u64::from_le_bytes(bytes[at..at + 8].try_into().map_err(|_| "short header")?);
    if count != expected as u64 {
        return Err(format!("it holds {count} logits, not {expected}"));
    }
    if bytes[at + 8..header] != Sha256::digest(&bytes[header..])[..] {
        return Err("its checksum does not match its values (the file was changed)".to_string());
    }
    let values: Vec<f32> = bytes[header..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    if values.iter().any(|v| !v.is_finite()) {
        return Err("it holds a NaN or infinite logit".to_string());
    }
    Ok(values)
}

fn write(path: &Path, key: &str, values: &[f32]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut bytes = Vec::with_capacity(MAGIC.len() + key.len() + 8 + values.len() * 4);
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(key.as_bytes());
    bytes.extend_from_slice(&(values.len() as u64).to_le_bytes());
    let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    bytes.extend_from_slice(&Sha256::digest(&data));
    bytes.extend_from_slice(&data);
    // Write then rename, so an interrupted run never leaves a half-written cache entry.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_reads_back_and_any_change_to_it_is_refused() {
        let dir = std::env::temp_dir().join(format!("student-cache-{}", std::process::id()));
        let path = dir.join("teacher-logits-k.bin");
        let values = [1.5f32, -2.0, 0.25, 3.0];
        write(&path, "k", &values).unwrap();
        assert_eq!(read(&path, "k", 4), Some(Ok(values.to_vec())));
        assert_eq!(read(&dir.join("missing.bin"), "k", 4), None);
        let good = std::fs::read(&path).unwrap();
        // One value changed (as a disk error or an edit would): the checksum catches it.
        let mut changed = good.clone();
        let last = changed.len() - 1;
        changed[last] ^= 0x40;
        let e = parse(&changed, "k", 4).unwrap_err();
        assert!(e.contains("checksum"), "{e}");
        // Another key, count or length: not this entry.
        assert!(parse(&good, "j", 4).is_err());
        assert!(parse(&good, "k", 3).is_err());
        assert!(parse(&good[..good.len() - 4], "k", 4).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
