//! The `.student` file: a fixed header, a JSON manifest, and 64-byte aligned weight blobs.
//!
//! ```text
//! offset  size  field
//!      0     8  magic "STUDENT\x1a"
//!      8     4  format version (u32, little endian), currently 1
//!     12     4  header length (u32), 128
//!     16     8  file length (u64)
//!     24     8  manifest offset (u64), 128
//!     32     8  manifest length (u64)
//!     40     8  data offset (u64), a multiple of 64
//!     48     8  data length (u64)
//!     56    40  reserved, zero
//!     96    32  SHA-256 of bytes [0, 96) followed by bytes [128, file length)
//!    128        manifest (UTF-8 JSON), zero padding, then the data section
//! ```
//!
//! Blob offsets in the manifest count from the data section, are multiples of 64, and
//! blobs never overlap the end of the section. Since a memory map starts on a page boundary,
//! every blob is aligned for any element type and is read in place.

use sha2::{Digest, Sha256};

use super::ir::{Blob, DType, Manifest};

pub(crate) const MAGIC: &[u8; 8] = b"STUDENT\x1a";
pub(crate) const VERSION: u32 = 1;
pub(crate) const HEADER_LEN: usize = 128;
pub(crate) const ALIGN: usize = 64;
const CHECKSUM_AT: usize = 96;

/// The largest manifest accepted (64 MiB): a bound checked before the JSON is parsed.
const MAX_MANIFEST: u64 = 64 << 20;

/// The manifest length a compiled file's header declares, if it has a header: read
/// before anything is checked, so only to bound what parsing it may cost.
pub(crate) fn declared_manifest_len(bytes: &[u8]) -> Option<u64> {
    let field = bytes.get(32..40)?;
    Some(u64::from_le_bytes([
        field[0], field[1], field[2], field[3], field[4], field[5], field[6], field[7],
    ]))
}

/// Whether `head`, the first bytes of a file, start with the compiled format's magic
/// (eight bytes): tools that write compiled students use it before replacing a file.
pub fn starts_like_compiled(head: &[u8]) -> bool {
    head.starts_with(MAGIC)
}

/// Whether `bytes` start like a compiled student (the magic, or a file cut inside it).
pub(crate) fn is_compiled(bytes: &[u8]) -> bool {
    starts_like_compiled(bytes) || (!bytes.is_empty() && MAGIC.starts_with(bytes))
}

/// Whether `bytes` that [`is_compiled`] refused still look like a compiled student with a
/// damaged magic: at least five of its eight bytes in place. No ONNX file comes near: a
/// protobuf starts with a field tag, never with five of "STUDENT\x1a".
pub(crate) fn near_magic(bytes: &[u8]) -> bool {
    bytes.iter().zip(MAGIC).filter(|(a, b)| a == b).count() >= 5
}

/// What is wrong with the first bytes of a file that should be a compiled student.
pub(crate) fn wrong_magic(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return "the file is empty".to_string();
    }
    format!(
        "wrong magic: the file starts with \"{}\", a compiled student with \"{}\"",
        bytes[..bytes.len().min(MAGIC.len())].escape_ascii(),
        MAGIC.escape_ascii()
    )
}

/// Assembles a file from a manifest whose blob offsets are not yet set and the blobs'
/// bytes, in manifest order.
#[cfg_attr(not(feature = "onnx"), allow(dead_code))] // Written by the compiler.
pub(crate) fn write(manifest: &mut Manifest, blobs: &[Vec<u8>]) -> Vec<u8> {
    let mut data = Vec::new();
    for (decl, bytes) in manifest.blobs.iter_mut().zip(blobs) {
        data.resize(data.len().next_multiple_of(ALIGN), 0);
        decl.offset = data.len() as u64;
        decl.len = bytes.len() as u64;
        data.extend_from_slice(bytes);
    }
    let json = serde_json::to_vec(manifest).expect("the manifest types serialize infallibly");
    let data_offset = (HEADER_LEN + json.len()).next_multiple_of(ALIGN);
    let file_len = data_offset + data.len();
    let mut out = Vec::with_capacity(file_len);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(HEADER_LEN as u32).to_le_bytes());
    for field in [
        file_len as u64,
        HEADER_LEN as u64,
        json.len() as u64,
        data_offset as u64,
        data.len() as u64,
    ] {
        out.extend_from_slice(&field.to_le_bytes());
    }
    out.resize(HEADER_LEN, 0);
    out.extend_from_slice(&json);
    out.resize(data_offset, 0);
    out.extend_from_slice(&data);
    let sum = checksum(&out);
    out[CHECKSUM_AT..HEADER_LEN].copy_from_slice(&sum);
    out
}

fn checksum(file: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(&file[..CHECKSUM_AT]);
    hasher.update(&file[HEADER_LEN..]);
    hasher.finalize().into()
}

/// A validated file: its manifest and where its data section lies.
#[derive(Debug)]
pub(crate) struct Parsed {
    pub manifest: Manifest,
    pub data_offset: usize,
    pub data_len: usize,
}

/// Checks the header, the checksum and every blob range, and parses the manifest.
/// Errors are one-line reasons.
pub(crate) fn parse(bytes: &[u8]) -> Result<Parsed, String> {
    if bytes.len() < HEADER_LEN {
        return Err(format!(
            "the file is {} bytes, shorter than the {HEADER_LEN}-byte header",
            bytes.len()
        ));
    }
    if !is_compiled(bytes) {
        return Err("wrong magic: not a compiled student".to_string());
    }
    let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
    let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    let version = u32_at(8);
    if version != VERSION {
        return Err(format!(
            "format version {version}; this runtime reads version {VERSION} (recompile the model with this version of `student compile`)"
        ));
    }
    if u32_at(12) as usize != HEADER_LEN {
        return Err(format!(
            "header length {} where {HEADER_LEN} was expected",
            u32_at(12)
        ));
    }
    let file_len = u64_at(16);
    if file_len != bytes.len() as u64 {
        return Err(format!(
            "the header declares {file_len} bytes but the file has {}: truncated or extended",
            bytes.len()
        ));
    }
    if bytes[56..CHECKSUM_AT].iter().any(|&b| b != 0) {
        return Err("reserved header bytes are not zero".to_string());
    }
    if checksum(bytes)[..] != bytes[CHECKSUM_AT..HEADER_LEN] {
        return Err("checksum mismatch: the file is corrupted".to_string());
    }
    let (manifest_offset, manifest_len) = (u64_at(24), u64_at(32));
    let (data_offset, data_len) = (u64_at(40), u64_at(48));
    if manifest_offset != HEADER_LEN as u64 || manifest_len > MAX_MANIFEST {
        return Err(format!(
            "manifest at {manifest_offset} of {manifest_len} bytes: expected offset {HEADER_LEN} and at most {MAX_MANIFEST} bytes"
        ));
    }
    let manifest_end = manifest_offset + manifest_len;
    if data_offset % ALIGN as u64 != 0
        || data_offset < manifest_end
        || data_offset.checked_add(data_len) != Some(file_len)
    {
        return Err(format!(
            "data section at {data_offset} of {data_len} bytes does not end the {file_len}-byte file after the manifest on a {ALIGN}-byte boundary"
        ));
    }
    let manifest: Manifest =
        serde_json::from_slice(&bytes[manifest_offset as usize..manifest_end as usize])
            .map_err(|e| format!("malformed manifest: {e}"))?;
    for (i, blob) in manifest.blobs.iter().enumerate() {
        check_blob(i, blob, data_len)?;
    }
    Ok(Parsed {
        manifest,
        data_offset: data_offset as usize,
        data_len: data_len as usize,
    })
}

fn check_blob(index: usize, blob: &Blob, data_len: u64) -> Result<(), String> {
    let fits = blob
        .offset
        .checked_add(blob.len)
        .is_some_and(|end| end <= data_len);
    if blob.offset % ALIGN as u64 != 0 || !fits {
        return Err(format!(
            "blob {index} at {} of {} bytes is misaligned or outside the {data_len}-byte data section",
            blob.offset, blob.len
        ));
    }
    if blob.len % blob.dtype.size() as u64 != 0 {
        return Err(format!(
            "blob {index} of {} bytes is not a whole number of {:?} elements",
            blob.len, blob.dtype
        ));
    }
    Ok(())
}

/// Element count of a blob of type `dtype`.
pub(crate) fn elements(blob: &Blob) -> usize {
    (blob.len / blob.dtype.size() as u64) as usize
}

/// The dtype check used by the plan validator.
pub(crate) fn expect_dtype(index: usize, blob: &Blob, dtype: DType) -> Result<(), String> {
    if blob.dtype == dtype {
        Ok(())
    } else {
        Err(format!(
            "blob {index} holds {:?} where {dtype:?} was expected",
            blob.dtype
        ))
    }
}
