//! Where a model's bytes live: a private copy (the default), or a read-only memory map
//! of the file.
//!
//! This is the one module of the crate allowed to use `unsafe`.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use memmap2::{Mmap, MmapMut, MmapOptions};

use crate::compiled::exec::{Line, lines};
use crate::error::Error;
use crate::limits::{Check, Limit};

/// The bytes of a model file: a map of the file itself, or a copy this process owns.
/// Either way they start on a 64-byte boundary, so a compiled student's weights are read
/// in place.
pub(crate) enum ModelBytes {
    /// A read-only map of the file.
    Mapped(Mmap),
    Owned(Private),
}

/// Memory this process owns, holding a copy of a model's bytes.
pub(crate) enum Private {
    /// Anonymous memory (page-aligned).
    Anonymous(MmapMut),
    /// The heap, where no anonymous map could be made (and for empty files).
    Heap { lines: Vec<Line>, len: usize },
}

/// Opens `path` for reading if it is a regular file, with its length. The type and length
/// are those of what was opened, not of what the path names a moment later; and a FIFO
/// swapped in at the path is refused rather than waited on (opened non-blocking).
pub(crate) fn open_regular(path: &Path) -> std::io::Result<(File, u64)> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut options, libc::O_NONBLOCK);
    let file = options.open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    Ok((file, meta.len()))
}

/// Reads at most `max` bytes of the regular file `path`; more is an error, whatever length
/// the file reports (files under /proc report 0).
pub(crate) fn read_bounded(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    let (file, _) = open_regular(path)?;
    let mut bytes = Vec::new();
    file.take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(std::io::Error::other(format!(
            "longer than {max} bytes, the most expected"
        )));
    }
    Ok(bytes)
}

impl ModelBytes {
    /// Opens `path` as a regular file of at most `max_file_bytes`, returning it with its
    /// length.
    fn open(path: &Path, check: &Check<'_>) -> Result<(File, u64), Error> {
        let (file, len) = open_regular(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        check.within(Limit::File, Some(len), || "the file".to_string())?;
        Ok((file, len))
    }

    /// Reads `path` into an aligned buffer owned by this process.
    ///
    /// Once read, nothing another process does to the file (truncating it, rewriting it in
    /// place) reaches the model: this is the guard against a file changed under a running
    /// app. A file that shrinks while it is being read is an error; one that grows is read
    /// up to the length it had when it was opened.
    pub(crate) fn read(path: &Path, check: &Check<'_>) -> Result<ModelBytes, Error> {
        let (file, len) = ModelBytes::open(path, check)?;
        let io = |source| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        let len = usize::try_from(len).map_err(|_| io(std::io::Error::other("too large")))?;
        let mut copy = Private::new(len);
        file.take(len as u64)
            .read_exact(copy.bytes_mut())
            .map_err(|e| {
                io(match e.kind() {
                    std::io::ErrorKind::UnexpectedEof => {
                        std::io::Error::other("the file shrank while it was being read")
                    }
                    _ => e,
                })
            })?;
        Ok(ModelBytes::Owned(copy))
    }

    /// Memory-maps `path` read-only: no copy, pages shared with other processes mapping
    /// the same file, but the file must not change while the model is open (see SAFETY).
    ///
    /// An empty file cannot be mapped on every platform, so it is read as an empty buffer
    /// and rejected later by the parser with a clear message.
    pub(crate) fn map(path: &Path, check: &Check<'_>) -> Result<ModelBytes, Error> {
        let (file, len) = ModelBytes::open(path, check)?;
        if len == 0 {
            return Ok(ModelBytes::copy(&[]));
        }
        // SAFETY: the map is read-only and private to this process, and `as_slice` hands
        // out only shared borrows of it. Another process can still truncate or rewrite the
        // file while it is mapped: reads past a truncation fault the process (SIGBUS) and
        // reads of rewritten pages see the new bytes. That is why mapping is opt-in
        // (`OpenOptions::memory_map`) and documented as safe only for files the app
        // replaces by renaming a new file over the old one, which leaves the mapped inode
        // intact; the default reads a private copy instead.
        #[allow(unsafe_code)]
        let map = unsafe { Mmap::map(&file) }.map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(ModelBytes::Mapped(map))
    }

    /// An aligned copy of `bytes`.
    pub(crate) fn copy(bytes: &[u8]) -> ModelBytes {
        let mut copy = Private::new(bytes.len());
        copy.bytes_mut().copy_from_slice(bytes);
        ModelBytes::Owned(copy)
    }

    pub(crate) fn as_slice(&self) -> &[u8] {
        match self {
            ModelBytes::Mapped(map) => map,
            ModelBytes::Owned(copy) => copy.bytes(),
        }
    }
}

impl Private {
    /// Zeroed memory for a copy of `len` bytes.
    ///
    /// Anonymous memory, its pages made present in one call where the system allows
    /// (`MAP_POPULATE` on Linux and Android), since the copy writes every page anyway: a
    /// heap buffer was zeroed page fault by page fault before the copy overwrote it, and
    /// that took a 3.3 MB file 1.8 ms to read in a fresh process where this takes 1.2 ms
    /// (x86-64 VM).
    fn new(len: usize) -> Private {
        if len > 0 {
            match MmapOptions::new().len(len).populate().map_anon() {
                Ok(map) => return Private::Anonymous(map),
                Err(e) => log::debug!("no anonymous map of {len} bytes ({e}); copying to the heap"),
            }
        }
        Private::Heap {
            lines: lines(len),
            len,
        }
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Private::Anonymous(map) => map,
            Private::Heap { lines, len } => &bytemuck::cast_slice::<Line, u8>(lines)[..*len],
        }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        match self {
            Private::Anonymous(map) => map,
            Private::Heap { lines, len } => {
                &mut bytemuck::cast_slice_mut::<Line, u8>(lines)[..*len]
            }
        }
    }
}
