//! Reading images from files: PNG and PGM through `image`, IDX image files directly.

use std::path::Path;

use anyhow::{Context, Result, bail};
use student_distill::read_idx;

/// The largest image side accepted, in pixels.
const MAX_SIDE: u32 = 4096;

/// One grayscale image and a name for it.
pub struct GrayImage {
    pub name: String,
    pub pixels: Vec<u8>,
    pub width: usize,
    pub height: usize,
}

/// Reads every image in `path`: one for PNG or PGM, all of them for an IDX image file.
///
/// `expected` is the model's (width, height): an IDX file of other-sized images is refused
/// before it is split into images, so a tiny file of many tiny images costs no memory.
pub fn read_images(path: &Path, expected: (usize, usize)) -> Result<Vec<GrayImage>> {
    // Opening a FIFO or a device would block or read forever: only regular files.
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot open {}", path.display()))?;
    if !meta.is_file() {
        bail!("{} is not a regular file", path.display());
    }
    let head = {
        use std::io::Read;
        let mut buf = [0u8; 4];
        let mut file =
            std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let n = file
            .read(&mut buf)
            .with_context(|| format!("cannot read {}", path.display()))?;
        buf[..n].to_vec()
    };
    // IDX: two zero bytes, a type code, a rank of 1 to 4; or a gzip stream (the data set's
    // own files are gzipped IDX).
    let idx_like = matches!(head[..], [0, 0, _, 1..=4]);
    if idx_like || head.starts_with(&[0x1f, 0x8b]) {
        let arr = read_idx(path)?;
        let [n, h, w] = arr.dims[..] else {
            bail!(
                "{}: IDX file holds dimensions {:?}, expected images (count x height x width)",
                path.display(),
                arr.dims
            );
        };
        if n == 0 {
            bail!("{}: the IDX file holds no images", path.display());
        }
        if (w, h) != expected {
            bail!(
                "{}: the IDX file holds {w}x{h} images, the model expects {}x{}",
                path.display(),
                expected.0,
                expected.1
            );
        }
        return Ok((0..n)
            .map(|i| GrayImage {
                name: format!("{}#{i}", path.display()),
                pixels: arr.data[i * h * w..(i + 1) * h * w].to_vec(),
                width: w,
                height: h,
            })
            .collect());
    }
    let mut reader = image::ImageReader::open(path)
        .with_context(|| format!("cannot open {}", path.display()))?
        .with_guessed_format()
        .with_context(|| format!("cannot read {}", path.display()))?;
    // Students take small images: refuse huge ones before decoding them.
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(64 * 1024 * 1024);
    reader.limits(limits);
    // png 0.18.1 panics on a PLTE chunk whose length is not a multiple of 3
    // (image-rs/image-png#694): contain it as a bad file, not a bug in student
    // (tests/fuzz-regressions/image_decode/png-palette-*).
    let not_readable = |why: &dyn std::fmt::Display| {
        anyhow::anyhow!(
            "{} is not a readable PNG or PGM image: {why}",
            path.display()
        )
    };
    let image = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| reader.decode()))
        .map_err(|_| not_readable(&"the image decoder failed on it"))?
        // The decoder's message already includes its inner cause: format it once, flat.
        .map_err(|e| not_readable(&e))?
        .to_luma8();
    Ok(vec![GrayImage {
        name: path.display().to_string(),
        width: image.width() as usize,
        height: image.height() as usize,
        pixels: image.into_raw(),
    }])
}
