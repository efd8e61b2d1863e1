//! Reading images from files: PNG and PGM through `image` (netpbm headers through
//! `netpbm`), IDX image files directly.

use std::io::{BufRead, Read};
use std::path::Path;

use anyhow::{Context, Result, bail};
use image::ImageDecoder;
use image::codecs::pnm::{PnmDecoder, SampleEncoding};
use student_distill::{read_idx, read_idx_dims};
use student_runtime::{InputSpec, PixelFormat};

use crate::netpbm;

/// The largest image side accepted, in pixels.
const MAX_SIDE: u32 = 4096;
/// The most bytes the decoder may allocate for one image.
const MAX_IMAGE_BYTES: u64 = 64 * 1024 * 1024;

/// One decoded image and a name for it: 8-bit gray, or RGBA when a colour file was read
/// for a model that takes 3 channels.
pub struct Image {
    pub name: String,
    pub pixels: Vec<u8>,
    pub width: usize,
    pub height: usize,
    pub format: PixelFormat,
}

impl Image {
    /// The model's input for this image. Its size must be the card's (the runtime would
    /// resize colour pixels; `run` says so instead, as for gray ones).
    pub fn tensor(&self, spec: &InputSpec) -> Result<Vec<f32>, student_runtime::Error> {
        match self.format {
            PixelFormat::Gray8 => spec.tensor_from_gray8(&self.pixels, self.width, self.height),
            PixelFormat::Rgba8 if (self.width, self.height) != (spec.width, spec.height) => {
                Err(student_runtime::Error::InvalidInput(format!(
                    "image is {}x{}, the model expects {}x{}",
                    self.width, self.height, spec.width, spec.height
                )))
            }
            PixelFormat::Rgba8 => {
                spec.tensor_from_pixels(&self.pixels, self.width, self.height, self.format)
            }
        }
    }
}

/// Reads every image in `path`: one for PNG or PGM, all of them for an IDX image file.
/// Images are read as 8-bit gray, except a colour PNG or PPM when `colour` is set (the
/// model takes 3 channels): that is read as RGBA, and its red, green and blue fill them.
///
/// `expected` is the model's (width, height): an IDX file of other-sized images is refused
/// before it is split into images, so a tiny file of many tiny images costs no memory. An
/// IDX file's images are cut from its data one at a time, as the iterator is consumed, so
/// a large file is held in memory once (at most `read_idx`'s 256 MiB), not twice.
pub fn read_images(
    path: &Path,
    expected: (usize, usize),
    colour: bool,
) -> Result<Box<dyn Iterator<Item = Image>>> {
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
    // IDX: two zero bytes, a type code, a rank (any: a rank the reader refuses is still
    // reported as an IDX file's); or a gzip stream (the data set's own files are gzipped
    // IDX).
    let idx_like = matches!(head[..], [0, 0, 0x08 | 0x09 | 0x0b..=0x0e, _]);
    // A file named as IDX is read as one whatever it holds, so that a bad type code, a
    // bad magic or an empty file gets the IDX reader's reason, not an image decoder's.
    let name = path.file_name().map(|n| n.to_string_lossy().to_lowercase());
    let idx_named = name.is_some_and(|n| {
        let n = n.strip_suffix(".gz").unwrap_or(&n);
        n.ends_with(".idx") || n.ends_with("-ubyte")
    });
    if idx_like || idx_named || head.starts_with(&[0x1f, 0x8b]) {
        // The header first: a gzipped file of other-sized images is refused before
        // hundreds of megabytes are inflated.
        let dims = read_idx_dims(path)?;
        let [n, h, w] = dims[..] else {
            bail!(
                "{}: IDX file holds dimensions {dims:?}, expected images (count x height x \
                 width)",
                path.display(),
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
        let arr = read_idx(path)?;
        if arr.dims != dims {
            bail!("{} changed while it was being read", path.display());
        }
        let name = shown_path(path);
        let data = arr.data;
        return Ok(Box::new((0..n).map(move |i| Image {
            name: format!("{name}#{i}"),
            pixels: data[i * h * w..(i + 1) * h * w].to_vec(),
            width: w,
            height: h,
            format: PixelFormat::Gray8,
        })));
    }
    // Students take small images: refuse huge ones before decoding them.
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_IMAGE_BYTES);
    // png 0.18.1 panics on a PLTE chunk whose length is not a multiple of 3
    // (image-rs/image-png#694): contain it as a bad file, not a bug in student
    // (tests/fuzz-regressions/image_decode/png-palette-*).
    let not_readable = |why: &dyn std::fmt::Display| {
        anyhow::anyhow!(
            "{} is not a readable PNG or PGM image: {why}",
            path.display()
        )
    };
    let decode = || -> Result<image::DynamicImage, anyhow::Error> {
        if netpbm::is_netpbm(&head) {
            // Netpbm headers are parsed here, as the format defines them (see `netpbm`).
            check_pnm_raster(path, netpbm::open_plain(path)?)?;
            let mut decoder =
                PnmDecoder::new(netpbm::open_plain(path)?).map_err(|e| not_readable(&e))?;
            decoder.set_limits(limits).map_err(|e| not_readable(&e))?;
            image::DynamicImage::from_decoder(decoder).map_err(|e| not_readable(&e))
        } else {
            if head.starts_with(b"P7") {
                // PAM: its header is the decoder's to parse, its raster is checked here.
                let file = std::fs::File::open(path)
                    .with_context(|| format!("cannot open {}", path.display()))?;
                check_pnm_raster(path, std::io::BufReader::new(file))?;
            } else if head.starts_with(&PNG_SIGNATURE[..4]) {
                check_png_end(path)?;
            }
            let mut reader = image::ImageReader::open(path)
                .with_context(|| format!("cannot open {}", path.display()))?
                .with_guessed_format()
                .with_context(|| format!("cannot read {}", path.display()))?;
            reader.limits(limits);
            // The decoder's message already includes its inner cause: format it once, flat.
            reader.decode().map_err(|e| not_readable(&e))
        }
    };
    let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(decode))
        .map_err(|_| not_readable(&"the image decoder failed on it"))??;
    let (width, height) = (decoded.width() as usize, decoded.height() as usize);
    let (pixels, format) = if colour && decoded.color().has_color() {
        (decoded.to_rgba8().into_raw(), PixelFormat::Rgba8)
    } else {
        (decoded.to_luma8().into_raw(), PixelFormat::Gray8)
    };
    Ok(Box::new(std::iter::once(Image {
        name: shown_path(path),
        pixels,
        width,
        height,
        format,
    })))
}

const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

/// An input's name in the output: the path as it is, or its escaped, quoted form
/// (`"a\xFF.pgm"`) when it is not UTF-8 or starts with a double quote. Names differing
/// only in bytes that are not UTF-8 stay apart (shown lossily, both would read
/// `a\u{FFFD}.pgm`), and an escaped form, which always starts with a quote, cannot be
/// mistaken for a name shown as it is.
fn shown_path(path: &Path) -> String {
    match path.to_str() {
        Some(text) if !text.starts_with('"') => text.to_string(),
        _ => format!("{:?}", path.as_os_str()),
    }
}

/// Refuses a PNG with bytes after its `IEND` chunk (a second PNG appended, or a damaged
/// file): the decoder stops at `IEND` and would answer for the first image. Only chunk
/// lengths and types are read, seeking over their data; a file whose chunks do not reach
/// an `IEND` is left to the decoder's message.
fn check_png_end(path: &Path) -> Result<()> {
    use std::io::{Seek, SeekFrom};
    let cannot_read = || format!("cannot read {}", path.display());
    let mut file = std::fs::File::open(path).with_context(cannot_read)?;
    let len = file.metadata().with_context(cannot_read)?.len();
    let mut at = PNG_SIGNATURE.len() as u64;
    while at + 12 <= len {
        let mut chunk = [0u8; 8];
        file.seek(SeekFrom::Start(at)).with_context(cannot_read)?;
        file.read_exact(&mut chunk).with_context(cannot_read)?;
        let data = u64::from(u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]));
        at += 12 + data;
        if &chunk[4..] == b"IEND" {
            if at < len {
                bail!(
                    "{} holds {} bytes after its PNG image ends (IEND): a second image or a \
                     damaged file (student reads one image per file)",
                    path.display(),
                    len - at
                );
            }
            return Ok(());
        }
    }
    Ok(())
}

/// The most bytes after a binary raster looked at for anything but whitespace.
const MAX_TRAILER: u64 = 4096;

/// Refuses a PGM or PPM holding a sample above its declared maximum (maxval), or holding
/// more than its raster. The decoder scales samples by 255 / maxval and saturates, so such
/// a sample would silently become white: a different image than the file's author meant.
/// Netpbm allows several images in one file and the decoder reads the first; `student run`
/// answers for one image per file, so a second image (or a damaged file's extra bytes) is
/// refused rather than ignored. Whitespace after the raster is accepted. A file the
/// decoder cannot read is left to it, to be refused with its own message.
fn check_pnm_raster(path: &Path, file: impl BufRead) -> Result<()> {
    let Ok(decoder) = PnmDecoder::new(file) else {
        return Ok(());
    };
    let header = decoder.header();
    // A binary bitmap (P4) packs 8 pixels a byte, each row padded to a whole byte: its
    // raster is counted in bytes, and its samples are bits (nothing above a maximum).
    let bitmap = header.as_bitmap().is_some();
    let channels: u64 = if header.as_graymap().is_some() || bitmap {
        1
    } else if header.as_pixmap().is_some() {
        3
    } else if let Some(pam) = header.as_arbitrary() {
        u64::from(pam.depth)
    } else {
        return Ok(());
    };
    let maxval = header.maximal_sample();
    let sample_bytes: u64 = if maxval > 255 { 2 } else { 1 };
    let samples = if bitmap {
        u64::from(header.width()).div_ceil(8) * u64::from(header.height())
    } else {
        u64::from(header.width()) * u64::from(header.height()) * channels
    };
    if header.width() > MAX_SIDE
        || header.height() > MAX_SIDE
        || samples * sample_bytes > MAX_IMAGE_BYTES
    {
        // Refused by the decoder's limits, with their message.
        return Ok(());
    }
    let (width, height) = (header.width(), header.height());
    let encoding = header.subtype().sample_encoding();
    if bitmap && encoding == SampleEncoding::Ascii {
        // A plain bitmap (P1) may write its bits without separators: left to the decoder.
        return Ok(());
    }
    let (mut raster, _) = decoder.into_inner();
    let cannot_read = || format!("cannot read {}", path.display());
    let more_than_one_image = |what: &str| {
        anyhow::anyhow!(
            "{} holds {what} after its {width}x{height} raster: a second image or a damaged \
             file (student reads one image per file)",
            path.display()
        )
    };
    let above = match encoding {
        SampleEncoding::Binary => {
            let mut bytes = Vec::new();
            (&mut raster)
                .take(samples * sample_bytes)
                .read_to_end(&mut bytes)
                .with_context(cannot_read)?;
            if (bytes.len() as u64) < samples * sample_bytes {
                bail!(
                    "{} is cut short: its raster holds {} of the {} bytes its {width}x{height} \
                     header declares",
                    path.display(),
                    bytes.len(),
                    samples * sample_bytes
                );
            }
            let mut trailer = Vec::new();
            raster
                .take(MAX_TRAILER + 1)
                .read_to_end(&mut trailer)
                .with_context(cannot_read)?;
            if trailer.len() as u64 > MAX_TRAILER {
                return Err(more_than_one_image(&format!(
                    "more than {MAX_TRAILER} bytes"
                )));
            }
            if trailer.iter().any(|b| !b.is_ascii_whitespace()) {
                return Err(more_than_one_image(&format!("{} bytes", trailer.len())));
            }
            if bitmap {
                None
            } else if sample_bytes == 1 {
                bytes.iter().map(|&b| u32::from(b)).find(|&s| s > maxval)
            } else {
                bytes
                    .chunks_exact(2)
                    .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
                    .find(|&s| s > maxval)
            }
        }
        SampleEncoding::Ascii => {
            // At most 6 bytes per sample ("65535" and a separator) are worth reading.
            let mut bytes = Vec::new();
            raster
                .take(samples.saturating_mul(6).saturating_add(64))
                .read_to_end(&mut bytes)
                .with_context(cannot_read)?;
            let mut tokens = bytes
                .split(u8::is_ascii_whitespace)
                .filter(|t| !t.is_empty());
            let mut read = 0u64;
            let mut above = None;
            for token in tokens
                .by_ref()
                .take(usize::try_from(samples).unwrap_or(usize::MAX))
            {
                // A token that is not a sample is left to the decoder's message.
                let Some(sample) = std::str::from_utf8(token).ok().and_then(|t| t.parse().ok())
                else {
                    return Ok(());
                };
                if sample > maxval {
                    above = Some(sample);
                    break;
                }
                read += 1;
            }
            if read == samples && tokens.next().is_some() {
                return Err(more_than_one_image("more than its samples"));
            }
            above
        }
    };
    match above {
        Some(sample) => bail!(
            "{}: a sample is {sample}, above the image's declared maximum (maxval) of {maxval}",
            path.display()
        ),
        None => Ok(()),
    }
}
