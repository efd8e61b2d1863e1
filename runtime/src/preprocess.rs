//! Turning raw pixels into the tensor a model's card declares.

use image::imageops::FilterType;
use image::{DynamicImage, GrayImage, RgbaImage};

use crate::card::InputSpec;
use crate::error::Error;

impl InputSpec {
    /// Converts an 8-bit grayscale image (row-major, `width * height` bytes) into one input
    /// sample: each pixel becomes `(p * scale - mean) / std` and is repeated over channels.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when the image size differs from the card's `width x height`
    /// or the byte count differs from `width * height`, or when the spec itself does not
    /// hold one mean and one std per channel (possible only for a spec built by hand).
    pub fn tensor_from_gray8(
        &self,
        pixels: &[u8],
        width: usize,
        height: usize,
    ) -> Result<Vec<f32>, Error> {
        self.check_shape()?;
        if width != self.width || height != self.height {
            return Err(Error::InvalidInput(format!(
                "image is {width}x{height}, the model expects {}x{}",
                self.width, self.height
            )));
        }
        if pixels.len() != width * height {
            return Err(Error::InvalidInput(format!(
                "{} pixel bytes for a {width}x{height} grayscale image, expected {}",
                pixels.len(),
                width * height
            )));
        }
        let mut out = Vec::with_capacity(self.len());
        for c in 0..self.channels {
            let (mean, std) = (self.mean[c], self.std[c]);
            out.extend(pixels.iter().map(|&p| (p as f32 * self.scale - mean) / std));
        }
        Ok(out)
    }

    /// Converts a raw image of any size into one input sample, as a camera frame or a
    /// decoded bitmap arrives on a phone.
    ///
    /// RGBA pixels become 8-bit luma (Rec. 709 weights, alpha ignored) unless the model
    /// takes 3 channels, in which case red, green and blue fill them in that order. An
    /// image whose size differs from the card's `width x height` is resized to it with a
    /// bilinear (triangle) filter whose support widens when shrinking, so that every source
    /// pixel counts. The result is then scaled and normalized as
    /// [`tensor_from_gray8`](InputSpec::tensor_from_gray8) does.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when the width or height is zero, or the byte count differs
    /// from `width * height` times the format's bytes per pixel, or the spec is
    /// inconsistent as for [`tensor_from_gray8`](InputSpec::tensor_from_gray8).
    pub fn tensor_from_pixels(
        &self,
        pixels: &[u8],
        width: usize,
        height: usize,
        format: PixelFormat,
    ) -> Result<Vec<f32>, Error> {
        self.check_shape()?;
        let expected = width
            .checked_mul(height)
            .and_then(|n| n.checked_mul(format.bytes()));
        if width == 0 || height == 0 || expected != Some(pixels.len()) {
            return Err(Error::InvalidInput(format!(
                "{} bytes for a {width}x{height} {} image, expected {width} * {height} * {}",
                pixels.len(),
                format.name(),
                format.bytes()
            )));
        }
        let too_large = || Error::InvalidInput(format!("a {width}x{height} image is too large"));
        let (w, h) = (
            u32::try_from(width).map_err(|_| too_large())?,
            u32::try_from(height).map_err(|_| too_large())?,
        );
        let spec_too_large = || {
            Error::InvalidInput(format!(
                "the input spec's {}x{} image is too large",
                self.width, self.height
            ))
        };
        let (out_w, out_h) = (
            u32::try_from(self.width).map_err(|_| spec_too_large())?,
            u32::try_from(self.height).map_err(|_| spec_too_large())?,
        );
        let fit = |image: DynamicImage| {
            if (w, h) == (out_w, out_h) {
                image
            } else {
                image.resize_exact(out_w, out_h, FilterType::Triangle)
            }
        };
        let image = match format {
            PixelFormat::Gray8 => GrayImage::from_raw(w, h, pixels.to_vec()).map(Into::into),
            PixelFormat::Rgba8 => RgbaImage::from_raw(w, h, pixels.to_vec()).map(Into::into),
        }
        .ok_or_else(too_large)?;
        if self.channels == 3 && format == PixelFormat::Rgba8 {
            let rgb = fit(image).to_rgb8();
            let mut out = Vec::with_capacity(self.len());
            for c in 0..3 {
                let (mean, std) = (self.mean[c], self.std[c]);
                out.extend(
                    rgb.pixels()
                        .map(|p| (p.0[c] as f32 * self.scale - mean) / std),
                );
            }
            return Ok(out);
        }
        let gray = fit(image.to_luma8().into()).to_luma8();
        self.tensor_from_gray8(gray.as_raw(), self.width, self.height)
    }

    /// Checks what the conversions index and multiply by: one mean and one std per
    /// channel, and a value count that fits in `usize`. A spec read from a model card
    /// always passes; one an app builds field by field may not, and must get an error
    /// rather than a panic.
    fn check_shape(&self) -> Result<(), Error> {
        if self.mean.len() != self.channels || self.std.len() != self.channels {
            return Err(Error::InvalidInput(format!(
                "the input spec has {} channels but {} mean and {} std values, expected one \
                 of each per channel",
                self.channels,
                self.mean.len(),
                self.std.len()
            )));
        }
        let values = self
            .height
            .checked_mul(self.width)
            .and_then(|area| area.checked_mul(self.channels.max(1)));
        if values.is_none() {
            return Err(Error::InvalidInput(format!(
                "the input spec's {}x{}x{} values overflow",
                self.channels, self.height, self.width
            )));
        }
        Ok(())
    }
}

/// How the bytes of a raw image are laid out: row-major, 8 bits per channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PixelFormat {
    /// One byte per pixel.
    Gray8,
    /// Four bytes per pixel: red, green, blue, alpha (as Android's `ARGB_8888` bitmaps
    /// store them in memory, and as iOS draws into an RGBA context).
    Rgba8,
}

impl PixelFormat {
    fn bytes(self) -> usize {
        match self {
            PixelFormat::Gray8 => 1,
            PixelFormat::Rgba8 => 4,
        }
    }

    fn name(self) -> &'static str {
        match self {
            PixelFormat::Gray8 => "8-bit grayscale",
            PixelFormat::Rgba8 => "RGBA",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> InputSpec {
        InputSpec {
            layout: "NCHW".into(),
            channels: 1,
            height: 2,
            width: 2,
            scale: 1.0 / 255.0,
            mean: vec![0.5],
            std: vec![0.25],
            non_finite: Default::default(),
        }
    }

    #[test]
    fn pixels_are_scaled_and_normalized() {
        let t = spec().tensor_from_gray8(&[0, 255, 51, 102], 2, 2).unwrap();
        let expected = [-2.0f32, 2.0, -1.2, -0.4];
        for (a, b) in t.iter().zip(expected) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
    }

    #[test]
    fn rgba_of_the_card_size_becomes_luma() {
        // Pure red, green, blue and white: luma 54, 182, 18 and 255 (Rec. 709, rounded down).
        let rgba = [255, 0, 0, 9, 0, 255, 0, 9, 0, 0, 255, 9, 255, 255, 255, 9];
        let t = spec()
            .tensor_from_pixels(&rgba, 2, 2, PixelFormat::Rgba8)
            .unwrap();
        let g = spec().tensor_from_gray8(&[54, 182, 18, 255], 2, 2).unwrap();
        assert_eq!(t, g);
    }

    #[test]
    fn other_sizes_are_resized_to_the_card() {
        // A flat image stays flat at any size, within one pixel level.
        let level = (1.0 / 255.0) / 0.25 + 1e-5;
        let flat = spec().tensor_from_gray8(&[77; 4], 2, 2).unwrap();
        for (w, h) in [(7, 5), (1, 1), (40, 3)] {
            let t = spec()
                .tensor_from_pixels(&vec![77; w * h], w, h, PixelFormat::Gray8)
                .unwrap();
            assert!(
                t.iter().zip(&flat).all(|(a, b)| (a - b).abs() <= level),
                "{w}x{h}: {t:?}"
            );
        }
        // Dark left half, bright right half: the left column stays darker.
        let halves: Vec<u8> = (0..16).map(|i| if i % 4 < 2 { 0 } else { 255 }).collect();
        let t = spec()
            .tensor_from_pixels(&halves, 4, 4, PixelFormat::Gray8)
            .unwrap();
        assert!(t[0] < t[1] && t[2] < t[3], "{t:?}");
    }

    #[test]
    fn three_channel_models_keep_colour() {
        let mut spec = spec();
        spec.channels = 3;
        spec.mean = vec![0.0; 3];
        spec.std = vec![1.0; 3];
        spec.scale = 1.0;
        let rgba = [10, 20, 30, 0].repeat(4);
        let t = spec
            .tensor_from_pixels(&rgba, 2, 2, PixelFormat::Rgba8)
            .unwrap();
        assert_eq!(t, [[10.0f32; 4], [20.0; 4], [30.0; 4]].concat());
    }

    #[test]
    fn pixel_byte_count_must_match_the_format() {
        for (bytes, w, h, format) in [
            (3, 1, 1, PixelFormat::Rgba8),
            (4, 2, 1, PixelFormat::Rgba8),
            (0, 0, 0, PixelFormat::Gray8),
            (5, 2, 2, PixelFormat::Gray8),
        ] {
            let err = spec()
                .tensor_from_pixels(&vec![0; bytes], w, h, format)
                .unwrap_err();
            assert!(matches!(err, Error::InvalidInput(_)), "{err}");
        }
    }

    #[test]
    fn a_spec_without_statistics_for_every_channel_is_an_error() {
        // Found by fuzzing (tests/fuzz-regressions/image_decode): an index past `mean`.
        let mut short = spec();
        short.channels = 3;
        let gray = short.tensor_from_gray8(&[0; 4], 2, 2).unwrap_err();
        let rgba = short
            .tensor_from_pixels(&[0; 16], 2, 2, PixelFormat::Rgba8)
            .unwrap_err();
        for err in [gray, rgba] {
            assert!(err.to_string().contains("3 channels but 1 mean"), "{err}");
        }
        let mut huge = spec();
        huge.width = usize::MAX;
        let err = huge.tensor_from_gray8(&[], usize::MAX, 2).unwrap_err();
        assert!(err.to_string().contains("overflow"), "{err}");
    }

    #[test]
    fn wrong_size_names_both_sizes() {
        let err = spec()
            .tensor_from_gray8(&[0; 9], 3, 3)
            .unwrap_err()
            .to_string();
        assert!(err.contains("3x3") && err.contains("2x2"), "{err}");
    }
}
