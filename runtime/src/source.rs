//! Where a model's bytes live: a read-only memory map of a file, or an owned buffer.
//!
//! This is the one module of the crate allowed to use `unsafe`.

use std::fs::File;
use std::path::Path;

use memmap2::Mmap;

use crate::error::Error;

/// The bytes of a model file, borrowed from a memory map or owned.
pub(crate) enum ModelBytes {
    Mapped(Mmap),
    Owned(Vec<u8>),
}

impl ModelBytes {
    /// Memory-maps `path` read-only.
    ///
    /// An empty file cannot be mapped on every platform, so it is read as an empty buffer
    /// and rejected later by the parser with a clear message.
    pub(crate) fn map(path: &Path) -> Result<ModelBytes, Error> {
        let io = |source| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        // Check before opening: opening a FIFO blocks until a writer appears.
        let meta = std::fs::metadata(path).map_err(io)?;
        if !meta.is_file() {
            return Err(io(std::io::Error::other("not a regular file")));
        }
        let file = File::open(path).map_err(io)?;
        if meta.len() == 0 {
            return Ok(ModelBytes::Owned(Vec::new()));
        }
        // SAFETY: the map is read-only and private to this process. The file could still
        // be truncated by another process while mapped, which would fault on access; the
        // runtime only reads the map while parsing in `StudentModel::open`, and the
        // execution plan owns copies of every weight, so later truncation cannot reach a
        // read through this map during inference.
        // TODO: when weights are used in place from the map (compiled students), guard
        // against truncation after open (private copy, lease, or size checks per run).
        #[allow(unsafe_code)]
        let map = unsafe { Mmap::map(&file) }.map_err(io)?;
        Ok(ModelBytes::Mapped(map))
    }

    pub(crate) fn as_slice(&self) -> &[u8] {
        match self {
            ModelBytes::Mapped(map) => map,
            ModelBytes::Owned(bytes) => bytes,
        }
    }
}
