//! Where a model's bytes live: a read-only memory map of a file, or an aligned owned copy.
//!
//! This is the one module of the crate allowed to use `unsafe`.

use std::fs::File;
use std::path::Path;

use memmap2::Mmap;

use crate::compiled::exec::{Line, lines};
use crate::error::Error;

/// The bytes of a model file, borrowed from a memory map or owned. Either way they start
/// on a 64-byte boundary, so a compiled student's weights are read in place.
pub(crate) enum ModelBytes {
    Mapped(Mmap),
    Owned { lines: Vec<Line>, len: usize },
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
            return Ok(ModelBytes::copy(&[]));
        }
        // SAFETY: the map is read-only and private to this process. Another process could
        // still truncate or rewrite the file while it is mapped. An ONNX model is only read
        // through the map while it is parsed in `StudentModel::open` (the plan owns copies
        // of its weights). A compiled student's weights are read in place on every run, so
        // truncating its file under a running app faults that process (SIGBUS), as with any
        // memory-mapped asset; apps that replace model files write a new file and rename it
        // over the old one, which leaves the mapped inode intact.
        #[allow(unsafe_code)]
        let map = unsafe { Mmap::map(&file) }.map_err(io)?;
        Ok(ModelBytes::Mapped(map))
    }

    /// An aligned copy of `bytes`.
    pub(crate) fn copy(bytes: &[u8]) -> ModelBytes {
        let mut buffer = lines(bytes.len());
        bytemuck::cast_slice_mut::<Line, u8>(&mut buffer)[..bytes.len()].copy_from_slice(bytes);
        ModelBytes::Owned {
            lines: buffer,
            len: bytes.len(),
        }
    }

    pub(crate) fn as_slice(&self) -> &[u8] {
        match self {
            ModelBytes::Mapped(map) => map,
            ModelBytes::Owned { lines, len } => &bytemuck::cast_slice::<Line, u8>(lines)[..*len],
        }
    }
}
