//! The IDX format of the MNIST family: a big-endian header (two zero bytes, a type code, a
//! rank) followed by one big-endian `u32` per dimension and the data. Files may be gzipped.

use std::io::Read;
use std::path::Path;

use flate2::read::GzDecoder;

use crate::error::Error;

/// An IDX array of unsigned bytes (the only element type the MNIST family uses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxArray {
    /// Dimensions, outermost first.
    pub dims: Vec<usize>,
    /// Elements in row-major order; `data.len()` is the product of `dims`.
    pub data: Vec<u8>,
}

/// Largest IDX payload accepted (256 MiB; the largest MNIST-family file holds 47 MB), to
/// refuse absurd headers before allocating.
const MAX_ELEMENTS: usize = 1 << 28;

/// Reads an IDX file of `u8` elements, gunzipping it when it starts with the gzip magic.
///
/// # Errors
/// [`Error::Io`] when the file cannot be read; [`Error::Idx`] when the header is not IDX,
/// the element type is not `u8`, or the data is shorter or longer than the header says.
pub fn read_idx(path: &Path) -> Result<IdxArray, Error> {
    let raw = read_regular_file(path).map_err(|source| Error::Io {
        action: "cannot read",
        path: path.to_path_buf(),
        source,
    })?;
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        gunzip_bounded(&raw).map_err(|reason| Error::Idx {
            path: path.to_path_buf(),
            reason,
        })?
    } else {
        raw
    };
    parse_idx(bytes).map_err(|reason| Error::Idx {
        path: path.to_path_buf(),
        reason,
    })
}

/// Reads a whole file, refusing anything but a regular file (a FIFO would block).
pub(crate) fn read_regular_file(path: &Path) -> std::io::Result<Vec<u8>> {
    if !std::fs::metadata(path)?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    std::fs::read(path)
}

/// Decompresses a gzipped IDX file, reading no more than its header declares (plus one
/// byte, to notice a longer stream): a small file cannot inflate without bound.
fn gunzip_bounded(raw: &[u8]) -> Result<Vec<u8>, String> {
    // Over the slice itself (no read-ahead buffer), so what follows the stream is left in
    // it to be checked.
    let mut decoder = flate2::bufread::GzDecoder::new(raw);
    let corrupt = |e: std::io::Error| format!("corrupt gzip stream: {e}");
    let mut head = [0u8; 4];
    decoder.read_exact(&mut head).map_err(corrupt)?;
    let rank = head[3] as usize;
    let mut dims = vec![0u8; rank * 4];
    decoder.read_exact(&mut dims).map_err(corrupt)?;
    let count = dims
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .try_fold(1usize, |acc, d| acc.checked_mul(d))
        .filter(|&n| n <= MAX_ELEMENTS)
        .unwrap_or(MAX_ELEMENTS);
    // Room for the data at once: grown by doubling, the buffer took up to twice the data
    // (536 MB for a 260 KB file of 268 MB of pixels). Deflate inflates at most 1032-fold,
    // so a header claiming more than the stream can hold reserves no more than it can.
    let room = count.min(raw.len().saturating_mul(1032)).saturating_add(1);
    let mut out = Vec::with_capacity((head.len() + dims.len()).saturating_add(room));
    out.extend_from_slice(&head);
    out.extend_from_slice(&dims);
    let mut data = decoder.take(count as u64 + 1);
    data.read_to_end(&mut out).map_err(corrupt)?;
    // All of the declared data read: the stream must end there, the file with it (a
    // second gzip member or other bytes after it would be read by nothing).
    if out.len() == head.len() + dims.len() + count {
        let decoder = data.into_inner();
        if !decoder.into_inner().is_empty() {
            return Err("bytes after the end of the gzip stream".to_string());
        }
    }
    Ok(out)
}

/// Reads only the header of an IDX file (through gzip when it starts with the gzip magic)
/// and returns its dimensions, outermost first: what a caller checks before it reads and
/// decompresses the data, which may be hundreds of megabytes.
///
/// # Errors
/// [`Error::Io`] when the file cannot be read; [`Error::Idx`] when the header is not IDX
/// or the element type is not `u8`.
pub fn read_idx_dims(path: &Path) -> Result<Vec<usize>, Error> {
    let idx_error = |reason: String| Error::Idx {
        path: path.to_path_buf(),
        reason,
    };
    let io_error = |source| Error::Io {
        action: "cannot read",
        path: path.to_path_buf(),
        source,
    };
    if !std::fs::metadata(path).map_err(io_error)?.is_file() {
        return Err(io_error(std::io::Error::other("not a regular file")));
    }
    let mut file = std::fs::File::open(path).map_err(io_error)?;
    let mut magic = [0u8; 2];
    let n = read_up_to(&mut file, &mut magic).map_err(io_error)?;
    let gzipped = magic[..n] == [0x1f, 0x8b];
    let file = std::io::Cursor::new(magic[..n].to_vec()).chain(file);
    let mut reader: Box<dyn Read> = if gzipped {
        Box::new(GzDecoder::new(file))
    } else {
        Box::new(file)
    };
    let mut head = [0u8; 4];
    // A short or corrupt stream leaves the header incomplete: refused below.
    let n = read_up_to(&mut reader, &mut head).map_err(|e| idx_error(format!("{e}")))?;
    let rank = if n == 4 { head[3] as usize } else { 0 };
    let mut bytes = head[..n].to_vec();
    bytes.resize(n + rank * 4, 0);
    let got = read_up_to(&mut reader, &mut bytes[n..]).map_err(|e| idx_error(format!("{e}")))?;
    bytes.truncate(n + got);
    parse_header(&bytes)
        .map(|(dims, _)| dims)
        .map_err(idx_error)
}

/// Reads until `buf` is full or the stream ends; returns how many bytes were read.
fn read_up_to(reader: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// The dimensions an IDX header declares, and the header's length in bytes.
fn parse_header(bytes: &[u8]) -> Result<(Vec<usize>, usize), String> {
    let [0, 0, kind, rank, rest @ ..] = bytes else {
        return Err(match bytes {
            [a, b, _, _, ..] => {
                format!("starts with {a:02x} {b:02x}, not the IDX magic (expected 00 00 type rank)")
            }
            _ => "too short for an IDX header (expected 00 00 type rank)".to_string(),
        });
    };
    if *kind != 0x08 {
        return Err(format!(
            "element type 0x{kind:02x} is not unsigned byte (0x08)"
        ));
    }
    let rank = *rank as usize;
    if rank == 0 {
        return Err("rank 0: an IDX array has at least one dimension".to_string());
    }
    if rest.len() < rank * 4 {
        return Err(format!("rank {rank} needs {} dimension bytes", rank * 4));
    }
    let dims: Vec<usize> = rest[..rank * 4]
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    if let Some(axis) = dims.iter().skip(1).position(|&d| d == 0) {
        return Err(format!("dimension {} of {dims:?} is zero", axis + 1));
    }
    // Checked with the header, so a caller reading the header alone refuses the file
    // before inflating or reading its data.
    let count = dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    if count.is_none_or(|n| n > MAX_ELEMENTS) {
        return Err(format!(
            "dimensions {dims:?} exceed the {MAX_ELEMENTS}-element limit"
        ));
    }
    Ok((dims, 4 + rank * 4))
}

/// Parses a whole IDX file, keeping its buffer for the data (no second copy of it).
fn parse_idx(mut bytes: Vec<u8>) -> Result<IdxArray, String> {
    let (dims, header_len) = parse_header(&bytes)?;
    // parse_header bounded the product.
    let count = dims.iter().product::<usize>();
    let data = &bytes[header_len..];
    // A gzipped file is inflated to one element past the header's count, no further.
    if data.len() > count {
        return Err(format!(
            "header {dims:?} declares {count} elements, the file holds more"
        ));
    }
    if data.len() < count {
        return Err(format!(
            "header {dims:?} declares {count} elements, the file holds {}",
            data.len()
        ));
    }
    bytes.drain(..header_len);
    Ok(IdxArray { dims, data: bytes })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut out = vec![0, 0, 8, dims.len() as u8];
        for d in dims {
            out.extend(d.to_be_bytes());
        }
        out.extend(data);
        out
    }

    #[test]
    fn reads_a_small_array() {
        let arr = parse_idx(encode(&[2, 3], &[1, 2, 3, 4, 5, 6])).unwrap();
        assert_eq!(arr.dims, vec![2, 3]);
        assert_eq!(arr.data, vec![1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn truncated_data_is_rejected_with_counts() {
        let err = parse_idx(encode(&[2, 3], &[1, 2, 3])).unwrap_err();
        assert!(
            err.contains("6 elements") && err.contains("holds 3"),
            "{err}"
        );
    }

    #[test]
    fn wrong_type_and_short_header_are_rejected() {
        let mut bytes = encode(&[1], &[0]);
        bytes[2] = 0x0d;
        assert!(parse_idx(bytes.clone()).unwrap_err().contains("0x0d"));
        assert!(parse_idx(vec![0, 0]).is_err());
        assert!(parse_idx(vec![0, 0, 8, 2, 0, 0]).is_err());
    }

    #[test]
    fn absurd_dimensions_are_refused_before_allocating() {
        let err = parse_idx(encode(&[u32::MAX, u32::MAX, 4], &[])).unwrap_err();
        assert!(err.contains("limit"), "{err}");
    }

    #[test]
    fn zero_sized_images_are_rejected() {
        let err = parse_idx(encode(&[1_000_000, 0, 0], &[])).unwrap_err();
        assert!(err.contains("zero"), "{err}");
        assert!(
            parse_idx(encode(&[0, 28, 28], &[])).is_ok(),
            "no images is a valid file"
        );
    }

    #[test]
    fn a_gzip_stream_longer_than_its_header_is_not_inflated_whole() {
        use flate2::{Compression, write::GzEncoder};
        use std::io::Write;
        let mut enc = GzEncoder::new(Vec::new(), Compression::best());
        enc.write_all(&encode(&[2], &[])).unwrap();
        enc.write_all(&vec![0u8; 50_000_000]).unwrap();
        let inflated = gunzip_bounded(&enc.finish().unwrap()).unwrap();
        // The header (4 + 4 bytes) and the 2 declared elements, plus one byte to notice.
        assert_eq!(inflated.len(), 8 + 2 + 1);
        assert!(
            parse_idx(inflated)
                .unwrap_err()
                .contains("the file holds more")
        );
    }

    #[test]
    fn bytes_after_the_gzip_stream_are_refused() {
        use flate2::{Compression, write::GzEncoder};
        use std::io::Write;
        let member = |data: &[u8]| {
            let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
            enc.write_all(data).unwrap();
            enc.finish().unwrap()
        };
        let one = member(&encode(&[2], &[7, 9]));
        assert_eq!(
            parse_idx(gunzip_bounded(&one).unwrap()).unwrap().data,
            [7, 9]
        );
        // Junk, and a second member that nothing would read.
        for tail in [&b"junk"[..], &member(&[1, 2, 3])] {
            let mut bytes = one.clone();
            bytes.extend_from_slice(tail);
            let err = gunzip_bounded(&bytes).unwrap_err();
            assert!(err.contains("after the end of the gzip stream"), "{err}");
        }
    }

    #[test]
    fn gzipped_files_are_read() {
        use flate2::{Compression, write::GzEncoder};
        use std::io::Write;
        let dir = std::env::temp_dir().join(format!("idx-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.gz");
        let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
        enc.write_all(&encode(&[2], &[7, 9])).unwrap();
        std::fs::write(&path, enc.finish().unwrap()).unwrap();
        assert_eq!(read_idx(&path).unwrap().data, vec![7, 9]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_header_alone_is_read_plain_or_gzipped() {
        use flate2::{Compression, write::GzEncoder};
        use std::io::Write;
        let dir = std::env::temp_dir().join(format!("idx-dims-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // Data shorter than declared: only the header is read, so the dimensions come back.
        let plain = encode(&[60_000, 28, 28], &[1, 2, 3]);
        let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
        enc.write_all(&plain).unwrap();
        let gzipped = enc.finish().unwrap();
        for (name, bytes) in [("a.idx", &plain), ("a.idx.gz", &gzipped)] {
            let path = dir.join(name);
            std::fs::write(&path, bytes).unwrap();
            assert_eq!(
                read_idx_dims(&path).unwrap(),
                vec![60_000, 28, 28],
                "{name}"
            );
        }
        // A header cut inside its dimensions, and a gzip stream cut inside the header.
        let cut = dir.join("cut.idx");
        std::fs::write(&cut, &plain[..9]).unwrap();
        let err = read_idx_dims(&cut).unwrap_err().to_string();
        assert!(err.contains("rank 3 needs 12 dimension bytes"), "{err}");
        std::fs::write(&cut, &gzipped[..12]).unwrap();
        assert!(read_idx_dims(&cut).is_err());
        std::fs::write(&cut, b"").unwrap();
        let err = read_idx_dims(&cut).unwrap_err().to_string();
        assert!(err.contains("too short for an IDX header"), "{err}");
        // Over the element limit: refused from the header, before any data is read.
        let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
        enc.write_all(&encode(&[1_000_000, 28, 28], &[])).unwrap();
        std::fs::write(&cut, enc.finish().unwrap()).unwrap();
        let err = read_idx_dims(&cut).unwrap_err().to_string();
        assert!(err.contains("exceed the 268435456-element limit"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
