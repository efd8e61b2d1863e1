//! How the GEMMs cut the rows of C into blocks, one tile height per block.

/// The row blocks `(first row, rows)` covering `0..m`, in order: blocks of `max` rows
/// (a power of two) while they last, then what is left as powers of two, largest first
/// (7 rows: 4, 2, 1). Every tile height is a separate copy of the tile in the binary, for
/// each instruction set and element type; with powers of two only, a level compiles four
/// heights instead of eight, and an odd row count costs at most `log2(max)` more passes
/// over B.
pub(crate) fn row_blocks(m: usize, max: usize) -> impl Iterator<Item = (usize, usize)> {
    debug_assert!(max.is_power_of_two());
    let mut row0 = 0;
    std::iter::from_fn(move || {
        let left = m.checked_sub(row0).filter(|&left| left > 0)?;
        let rows = if left >= max { max } else { 1 << left.ilog2() };
        let block = (row0, rows);
        row0 += rows;
        Some(block)
    })
}

/// Panels taken together, [`CHUNK_PANELS`] at a time: a GEMM walks every row block over
/// one chunk before the next, so the chunk of B, read from memory once, serves every row
/// block from cache. With row blocks outermost, a dense layer of batch 32 over a
/// 3136 x 256 B (3.2 MB, beyond L2) streamed all of B from memory once per 8 rows.
pub(crate) fn panel_chunks(panels: usize) -> impl Iterator<Item = std::ops::Range<usize>> {
    (0..panels)
        .step_by(CHUNK_PANELS)
        .map(move |p| p..(p + CHUNK_PANELS).min(panels))
}

/// Panels per chunk of [`panel_chunks`]: 64 columns, a multiple of every tile's panel
/// count (so only the matrix's last chunk has leftover panels), and 800 KB of f32 B at
/// k = 3136, within the L2 of the x86 and Arm cores we target.
pub(crate) const CHUNK_PANELS: usize = 4;

#[cfg(test)]
mod tests {
    use super::{CHUNK_PANELS, panel_chunks, row_blocks};

    #[test]
    fn chunks_cover_every_panel_once_in_order() {
        assert_eq!(panel_chunks(0).count(), 0);
        let nine: Vec<_> = panel_chunks(9).collect();
        assert_eq!(nine, [0..4, 4..8, 8..9]);
        assert_eq!(
            panel_chunks(CHUNK_PANELS).collect::<Vec<_>>(),
            [0..CHUNK_PANELS]
        );
    }

    #[test]
    fn blocks_cover_every_row_once_in_powers_of_two() {
        assert_eq!(row_blocks(0, 8).count(), 0);
        let seven: Vec<_> = row_blocks(7, 8).collect();
        assert_eq!(seven, [(0, 4), (4, 2), (6, 1)]);
        let nineteen: Vec<_> = row_blocks(19, 8).collect();
        assert_eq!(nineteen, [(0, 8), (8, 8), (16, 2), (18, 1)]);
        for m in 0..70 {
            for max in [1, 2, 4, 8] {
                let mut next = 0;
                for (row0, rows) in row_blocks(m, max) {
                    assert_eq!(row0, next, "m={m} max={max}");
                    assert!(rows.is_power_of_two() && rows <= max, "m={m} max={max}");
                    next += rows;
                }
                assert_eq!(next, m, "m={m} max={max}");
            }
        }
    }
}
