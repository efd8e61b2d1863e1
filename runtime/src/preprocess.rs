//! Turning raw pixels into the tensor a model's card declares.

use crate::card::InputSpec;
use crate::error::Error;

impl InputSpec {
    /// Converts an 8-bit grayscale image (row-major, `width * height` bytes) into one input
    /// sample: each pixel becomes `(p * scale - mean) / std` and is repeated over channels.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when the image size differs from the card's `width x height`
    /// or the byte count differs from `width * height`.
    pub fn tensor_from_gray8(
        &self,
        pixels: &[u8],
        width: usize,
        height: usize,
    ) -> Result<Vec<f32>, Error> {
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
    fn wrong_size_names_both_sizes() {
        let err = spec()
            .tensor_from_gray8(&[0; 9], 3, 3)
            .unwrap_err()
            .to_string();
        assert!(err.contains("3x3") && err.contains("2x2"), "{err}");
    }
}
