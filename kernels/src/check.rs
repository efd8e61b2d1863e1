//! Argument checks shared by every public kernel: they run before any memory is touched.

use crate::error::KernelError;

/// Checks that `len` elements hold a `rows x cols` matrix with row stride `ld`.
///
/// The last row needs only `cols` elements, so a matrix cut out of a larger one passes.
pub(crate) fn matrix(
    what: &'static str,
    rows: usize,
    cols: usize,
    ld: usize,
    len: usize,
) -> Result<(), KernelError> {
    if rows == 0 || cols == 0 {
        return Ok(());
    }
    if ld < cols {
        return Err(KernelError::StrideTooSmall {
            what,
            stride: ld,
            width: cols,
        });
    }
    // An overflowing size cannot be held by any slice: report it as "needs usize::MAX".
    let needed = (rows - 1).checked_mul(ld).and_then(|x| x.checked_add(cols));
    at_least(what, needed.unwrap_or(usize::MAX), len)
}

/// Checks that a slice of `len` elements holds `needed`.
pub(crate) fn at_least(what: &'static str, needed: usize, len: usize) -> Result<(), KernelError> {
    if len < needed {
        Err(KernelError::TooShort {
            what,
            needed,
            got: len,
        })
    } else {
        Ok(())
    }
}

/// `a * b * c`, or `usize::MAX` when it overflows (no slice is that long).
pub(crate) fn product(a: usize, b: usize, c: usize) -> usize {
    a.checked_mul(b)
        .and_then(|x| x.checked_mul(c))
        .unwrap_or(usize::MAX)
}
