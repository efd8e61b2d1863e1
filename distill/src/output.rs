//! Output files written without following what is at their names: each file is written to
//! a fresh temporary file in its folder and renamed into place.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::error::Error;

/// Writes `bytes` to `path` through a fresh temporary file in the same folder, renamed
/// over `path`. A regular file at `path` is replaced; anything else there (a symbolic
/// link, a folder, a FIFO) is refused and left as it was, so that a link planted at an
/// output's name cannot redirect the write. A failed write leaves no temporary file.
///
/// # Errors
/// [`Error::Output`] when something other than a regular file is at `path`;
/// [`Error::Io`] when the temporary file cannot be made, written or renamed.
pub fn replace_file(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let io = |action: &'static str| {
        move |source| Error::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    };
    check_replaceable(path)?;
    let mut file = temporary_file(&parent(path)).map_err(io("cannot write beside"))?;
    file.write_all(bytes).map_err(io("cannot write"))?;
    // The rename replaces the entry at `path` itself: a link put there since the check
    // above is replaced, never followed.
    file.persist(path)
        .map_err(|e| io("cannot write")(e.error))?;
    Ok(())
}

/// What [`replace_file`] checks before writing: nothing, or a regular file, at `path`.
/// Run it on every output name before long work, so that a run is not lost at its end.
///
/// # Errors
/// [`Error::Output`] when something other than a regular file is at `path`;
/// [`Error::Io`] when `path` cannot be inspected.
pub fn check_replaceable(path: &Path) -> Result<(), Error> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_file() => {
            let what = if meta.file_type().is_symlink() {
                "a symbolic link"
            } else if meta.is_dir() {
                "a folder"
            } else {
                "something other than a regular file"
            };
            Err(Error::Output {
                path: path.to_path_buf(),
                reason: format!(
                    "{what} is at that name and only a regular file is replaced; remove it \
                     or write elsewhere"
                ),
            })
        }
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(Error::Io {
            action: "cannot inspect",
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Whether `a` and `b` name one file, through links of either kind. `false` when either
/// cannot be read.
pub fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        #[cfg(unix)]
        (Ok(x), Ok(y)) => {
            use std::os::unix::fs::MetadataExt as _;
            (x.dev(), x.ino()) == (y.dev(), y.ino())
        }
        #[cfg(not(unix))]
        (Ok(_), Ok(_)) => matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y),
        _ => false,
    }
}

/// A fresh, empty temporary file in `dir`, removed when dropped unless persisted. It is
/// created with the permissions a plain new file gets (read-write, less the umask), not
/// the temporary file's usual owner-only ones: it becomes an output meant to be read.
pub(crate) fn temporary_file(dir: &Path) -> std::io::Result<tempfile::NamedTempFile> {
    let mut builder = tempfile::Builder::new();
    builder.prefix(".student-").suffix(".tmp");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    builder.tempfile_in(dir)
}

/// The folder holding `path`: `.` for a bare file name.
pub(crate) fn parent(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh folder for one test, removed by the test when it passes.
    fn scratch(test: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("student-output-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_regular_file_is_replaced_and_no_temporary_file_stays() {
        let dir = scratch("replace");
        let path = dir.join("report.md");
        replace_file(&path, b"first").unwrap();
        replace_file(&path, b"second").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        assert_eq!(entries(&dir), ["report.md"]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn a_new_file_gets_the_permissions_of_a_plain_new_file() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = scratch("mode");
        let reference = dir.join("plain");
        std::fs::write(&reference, b"x").unwrap();
        let path = dir.join("report.json");
        replace_file(&path, b"{}").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), mode(&reference));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn a_symbolic_link_or_a_folder_at_the_name_is_refused_and_left_alone() {
        let dir = scratch("symlink");
        let victim = dir.join("victim.txt");
        std::fs::write(&victim, b"keep me").unwrap();
        let link = dir.join("report.md");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        let err = replace_file(&link, b"report").unwrap_err();
        assert!(matches!(err, Error::Output { .. }), "{err}");
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert!(err.to_string().contains("report.md"), "{err}");
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep me");
        assert!(
            std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );

        // A dangling link is refused too: it would create its target.
        let dangling = dir.join("report.json");
        std::os::unix::fs::symlink(dir.join("elsewhere"), &dangling).unwrap();
        assert!(replace_file(&dangling, b"{}").is_err());
        assert!(!dir.join("elsewhere").exists());

        let folder = dir.join("per-class.svg");
        std::fs::create_dir(&folder).unwrap();
        let err = replace_file(&folder, b"<svg/>").unwrap_err();
        assert!(err.to_string().contains("a folder"), "{err}");
        assert_eq!(
            entries(&dir),
            ["per-class.svg", "report.json", "report.md", "victim.txt"]
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
