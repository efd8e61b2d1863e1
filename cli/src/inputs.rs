//! Reading images from files: PNG and PGM through `image`, IDX image files directly.

use std::path::Path;

use anyhow::{Context, Result, bail};
use student_distill::read_idx;

/// One grayscale image and a name for it.
pub struct GrayImage {
    pub name: String,
    pub pixels: Vec<u8>,
    pub width: usize,
    pub height: usize,
}

/// Reads every image in `path`: one for PNG or PGM, all of them for an IDX image file.
pub fn read_images(path: &Path) -> Result<Vec<GrayImage>> {
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
    // IDX: two zero bytes, type 0x08 (u8); or a gzip stream (the data set's own files).
    if head.starts_with(&[0, 0, 8]) || head.starts_with(&[0x1f, 0x8b]) {
        let arr = read_idx(path)?;
        let [n, h, w] = arr.dims[..] else {
            bail!(
                "{}: IDX file holds dimensions {:?}, expected images (count x height x width)",
                path.display(),
                arr.dims
            );
        };
        return Ok((0..n)
            .map(|i| GrayImage {
                name: format!("{}#{i}", path.display()),
                pixels: arr.data[i * h * w..(i + 1) * h * w].to_vec(),
                width: w,
                height: h,
            })
            .collect());
    }
    let image = image::ImageReader::open(path)
        .with_context(|| format!("cannot open {}", path.display()))?
        .with_guessed_format()
        .with_context(|| format!("cannot read {}", path.display()))?
        .decode()
        .with_context(|| format!("{} is not a readable PNG or PGM image", path.display()))?
        .to_luma8();
    Ok(vec![GrayImage {
        name: path.display().to_string(),
        width: image.width() as usize,
        height: image.height() as usize,
        pixels: image.into_raw(),
    }])
}
