//! Deterministic corruptions of grayscale data sets: how a model copes with inputs unlike
//! the clean images it was trained and measured on.
//!
//! Every corruption is a pure function of the data and its parameters (noise draws from a
//! generator seeded by the caller), so a report made twice measures the same images.

use std::fmt;

use serde::Serialize;

use crate::dataset::Dataset;
use crate::error::Error;

/// A change applied to every image of a data set.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Corruption {
    /// Independent gaussian noise added to each pixel, then rounded and clamped to 0..=255.
    Noise {
        /// Standard deviation in pixel units (0..=255 scale), in `[0, 255]`.
        sigma: f32,
        /// Fixes the draw: the same seed gives the same noisy images.
        seed: u64,
    },
    /// A gaussian blur, separable, with edge pixels repeated beyond the border.
    Blur {
        /// Standard deviation in pixels, in `(0, MAX_BLUR_SIGMA]`; the kernel reaches
        /// `ceil(3 sigma)` pixels each way.
        sigma: f32,
    },
    /// Lower contrast: each pixel pulled toward its image's mean,
    /// `mean + factor * (pixel - mean)`, so the mean brightness stays.
    Contrast {
        /// In `[0, 1]`: 1 leaves the image as it is, 0 makes it flat.
        factor: f32,
    },
    /// A translation; pixels that come in from outside the image are 0 (background).
    Shift {
        /// Pixels to the right (negative: to the left).
        dx: i32,
        /// Pixels down (negative: up).
        dy: i32,
    },
}

/// The widest blur accepted, in pixels of standard deviation.
pub const MAX_BLUR_SIGMA: f32 = 8.0;

impl Corruption {
    /// The set a comparison report measures: moderate noise, a slight blur, halved
    /// contrast and a two-pixel shift down and right. Each costs a well-trained
    /// Fashion-MNIST classifier some accuracy without making the images unreadable.
    pub fn standard() -> Vec<Corruption> {
        vec![
            Corruption::Noise {
                sigma: 25.0,
                seed: 7,
            },
            Corruption::Blur { sigma: 1.0 },
            Corruption::Contrast { factor: 0.5 },
            Corruption::Shift { dx: 2, dy: 2 },
        ]
    }

    /// A new data set holding every image of `data` corrupted, with the same labels, named
    /// `<data's name>+<this corruption>` (for example
    /// `fashion-mnist:test+noise(sigma=25)`).
    ///
    /// # Errors
    /// [`Error::Corruption`] for a parameter out of its documented range;
    /// [`Error::Data`] when `data`'s pixel buffer does not hold `len * height * width`
    /// bytes.
    pub fn apply(&self, data: &Dataset) -> Result<Dataset, Error> {
        self.validate()?;
        let px = data.height.checked_mul(data.width).unwrap_or(0);
        if px == 0 {
            return Err(Error::Data(format!(
                "{} holds images of {}x{} pixels: expected at least one pixel",
                data.name, data.width, data.height
            )));
        }
        if Some(data.images.len()) != data.len().checked_mul(px) {
            return Err(Error::Data(format!(
                "{} holds {} pixel bytes for {} images of {}x{}",
                data.name,
                data.images.len(),
                data.len(),
                data.width,
                data.height
            )));
        }
        let (h, w) = (data.height, data.width);
        let mut images = data.images.clone();
        match *self {
            Corruption::Noise { sigma, seed } => {
                let mut rng = SplitMix64(seed);
                for p in &mut images {
                    *p = to_pixel(*p as f64 + sigma as f64 * rng.gaussian());
                }
            }
            Corruption::Blur { sigma } => {
                let kernel = gaussian_kernel(sigma);
                for image in images.chunks_exact_mut(px) {
                    blur(image, h, w, &kernel);
                }
            }
            Corruption::Contrast { factor } => {
                for image in images.chunks_exact_mut(px) {
                    let mean = image.iter().map(|&p| p as f64).sum::<f64>() / px.max(1) as f64;
                    for p in image {
                        *p = to_pixel(mean + factor as f64 * (*p as f64 - mean));
                    }
                }
            }
            Corruption::Shift { dx, dy } => {
                for (image, src) in images
                    .chunks_exact_mut(px)
                    .zip(data.images.chunks_exact(px))
                {
                    shift(image, src, h, w, dx as i64, dy as i64);
                }
            }
        }
        Ok(Dataset {
            name: format!("{}+{self}", data.name),
            images,
            labels: data.labels.clone(),
            height: h,
            width: w,
            classes: data.classes.clone(),
        })
    }

    fn validate(&self) -> Result<(), Error> {
        let bad = |reason: String| {
            Err(Error::Corruption {
                corruption: self.to_string(),
                reason,
            })
        };
        match *self {
            Corruption::Noise { sigma, .. } if !(0.0..=255.0).contains(&sigma) => {
                bad(format!("sigma {sigma} is outside [0, 255] (pixel units)"))
            }
            Corruption::Blur { sigma } if !(sigma > 0.0 && sigma <= MAX_BLUR_SIGMA) => bad(
                format!("sigma {sigma} is outside (0, {MAX_BLUR_SIGMA}] (pixels)"),
            ),
            Corruption::Contrast { factor } if !(0.0..=1.0).contains(&factor) => {
                bad(format!("factor {factor} is outside [0, 1]"))
            }
            _ => Ok(()),
        }
    }
}

impl fmt::Display for Corruption {
    /// A short name with the parameters that change the images: `noise(sigma=25)`,
    /// `blur(sigma=1)`, `contrast(factor=0.5)`, `shift(dx=2,dy=2)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Corruption::Noise { sigma, .. } => write!(f, "noise(sigma={sigma})"),
            Corruption::Blur { sigma } => write!(f, "blur(sigma={sigma})"),
            Corruption::Contrast { factor } => write!(f, "contrast(factor={factor})"),
            Corruption::Shift { dx, dy } => write!(f, "shift(dx={dx},dy={dy})"),
        }
    }
}

fn to_pixel(v: f64) -> u8 {
    v.round().clamp(0.0, 255.0) as u8
}

/// A normalized 1-D gaussian reaching `ceil(3 sigma)` pixels each side of its centre.
fn gaussian_kernel(sigma: f32) -> Vec<f32> {
    let radius = (3.0 * sigma).ceil() as i64;
    let weights: Vec<f32> = (-radius..=radius)
        .map(|d| (-((d * d) as f32) / (2.0 * sigma * sigma)).exp())
        .collect();
    let sum: f32 = weights.iter().sum();
    weights.into_iter().map(|w| w / sum).collect()
}

/// Blurs one `h x w` image in place: rows, then columns, edge pixels repeated.
fn blur(image: &mut [u8], h: usize, w: usize, kernel: &[f32]) {
    let radius = (kernel.len() / 2) as i64;
    let at = |i: i64, len: usize| i.clamp(0, len as i64 - 1) as usize;
    let mut rows = vec![0.0f32; h * w];
    for y in 0..h {
        for x in 0..w {
            rows[y * w + x] = kernel
                .iter()
                .enumerate()
                .map(|(k, &wt)| wt * image[y * w + at(x as i64 + k as i64 - radius, w)] as f32)
                .sum();
        }
    }
    for y in 0..h {
        for x in 0..w {
            let v: f32 = kernel
                .iter()
                .enumerate()
                .map(|(k, &wt)| wt * rows[at(y as i64 + k as i64 - radius, h) * w + x])
                .sum();
            image[y * w + x] = to_pixel(v as f64);
        }
    }
}

/// Writes `src` moved by `(dx, dy)` into `dst`; uncovered pixels become 0.
fn shift(dst: &mut [u8], src: &[u8], h: usize, w: usize, dx: i64, dy: i64) {
    let (hi, wi) = (h as i64, w as i64);
    for y in 0..hi {
        for x in 0..wi {
            let (sy, sx) = (y - dy, x - dx);
            let inside = (0..hi).contains(&sy) && (0..wi).contains(&sx);
            dst[(y * wi + x) as usize] = if inside {
                src[(sy * wi + sx) as usize]
            } else {
                0
            };
        }
    }
}

/// SplitMix64 (Steele, Lea and Flood, 2014): a tiny generator whose output depends on the
/// seed alone, not on a library version, so noisy data sets stay the same across upgrades.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `(0, 1]`: 53 random bits, never 0 (the logarithm below needs that).
    fn uniform(&mut self) -> f64 {
        ((self.next() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }

    /// A standard normal draw (Box-Muller).
    fn gaussian(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(images: Vec<u8>, h: usize, w: usize) -> Dataset {
        let n = images.len() / (h * w);
        Dataset {
            name: "tiny".into(),
            images,
            labels: vec![1; n],
            height: h,
            width: w,
            classes: vec!["a".into(), "b".into()],
        }
    }

    fn mean(pixels: &[u8]) -> f64 {
        pixels.iter().map(|&p| p as f64).sum::<f64>() / pixels.len() as f64
    }

    #[test]
    fn shift_moves_a_known_pixel_and_fills_with_zero() {
        let mut img = vec![0u8; 5 * 4];
        img[4 + 1] = 200; // row 1, column 1
        img[3] = 50; // row 0, column 3: pushed out to the right
        let out = Corruption::Shift { dx: 2, dy: 1 }
            .apply(&data(img, 5, 4))
            .unwrap();
        let lit: Vec<(usize, u8)> = (0..20)
            .filter(|&i| out.images[i] != 0)
            .map(|i| (i, out.images[i]))
            .collect();
        assert_eq!(lit, vec![(2 * 4 + 3, 200)]);
        assert_eq!(out.name, "tiny+shift(dx=2,dy=1)");
        assert_eq!(out.labels, vec![1]);
    }

    #[test]
    fn negative_and_oversized_shifts() {
        let img: Vec<u8> = (1..=9).collect();
        let left = Corruption::Shift { dx: -1, dy: 0 }
            .apply(&data(img.clone(), 3, 3))
            .unwrap();
        assert_eq!(left.images, vec![2, 3, 0, 5, 6, 0, 8, 9, 0]);
        let gone = Corruption::Shift {
            dx: i32::MIN,
            dy: i32::MAX,
        }
        .apply(&data(img, 3, 3))
        .unwrap();
        assert!(gone.images.iter().all(|&p| p == 0));
    }

    #[test]
    fn contrast_keeps_the_mean_and_narrows_the_spread() {
        let img: Vec<u8> = vec![0, 255, 10, 200, 30, 90, 120, 60, 0, 250, 255, 5];
        let before = mean(&img);
        let out = Corruption::Contrast { factor: 0.5 }
            .apply(&data(img.clone(), 3, 4))
            .unwrap();
        assert!((mean(&out.images) - before).abs() <= 0.5, "mean moved");
        let spread = |p: &[u8]| p.iter().max().unwrap() - p.iter().min().unwrap();
        assert!(spread(&out.images) <= spread(&img) / 2 + 1);
        let flat = Corruption::Contrast { factor: 0.0 }
            .apply(&data(img.clone(), 3, 4))
            .unwrap();
        assert!(flat.images.iter().all(|&p| p == before.round() as u8));
        let same = Corruption::Contrast { factor: 1.0 }
            .apply(&data(img.clone(), 3, 4))
            .unwrap();
        assert_eq!(same.images, img);
    }

    #[test]
    fn blur_keeps_a_constant_image_and_spreads_a_dot() {
        let out = Corruption::Blur { sigma: 1.5 }
            .apply(&data(vec![137; 7 * 6], 7, 6))
            .unwrap();
        assert!(out.images.iter().all(|&p| p == 137), "{:?}", out.images);
        let mut dot = vec![0u8; 7 * 7];
        dot[3 * 7 + 3] = 255;
        let out = Corruption::Blur { sigma: 1.0 }
            .apply(&data(dot, 7, 7))
            .unwrap();
        let centre = out.images[3 * 7 + 3];
        assert!(centre < 255 && centre > 0);
        assert!(out.images[3 * 7 + 4] > 0 && out.images[3 * 7 + 4] < centre);
        // Symmetric kernel: the four neighbours match.
        let n = [2 * 7 + 3, 4 * 7 + 3, 3 * 7 + 2, 3 * 7 + 4].map(|i| out.images[i]);
        assert!(n.iter().all(|&v| v == n[0]), "{n:?}");
    }

    #[test]
    fn noise_is_reproducible_per_seed_and_clamped() {
        let img: Vec<u8> = (0..64).map(|i| [0u8, 255, 128, 3][i % 4]).collect();
        let d = data(img.clone(), 8, 8);
        let noisy = |seed| {
            Corruption::Noise { sigma: 40.0, seed }
                .apply(&d)
                .unwrap()
                .images
        };
        assert_eq!(noisy(11), noisy(11));
        assert_ne!(noisy(11), noisy(12));
        let out = noisy(11);
        assert_ne!(out, img);
        // Clamped at both ends: black pixels never go below 0 and white never above 255,
        // so some of each stay exactly at the bound.
        assert!((0..64).any(|i| img[i] == 0 && out[i] == 0));
        assert!((0..64).any(|i| img[i] == 255 && out[i] == 255));
        let none = Corruption::Noise {
            sigma: 0.0,
            seed: 1,
        }
        .apply(&d)
        .unwrap();
        assert_eq!(none.images, img);
    }

    #[test]
    fn noise_has_the_stated_spread() {
        let d = data(vec![128; 100 * 100], 100, 100);
        let out = Corruption::Noise {
            sigma: 10.0,
            seed: 3,
        }
        .apply(&d)
        .unwrap();
        let m = mean(&out.images);
        let var = out
            .images
            .iter()
            .map(|&p| (p as f64 - m).powi(2))
            .sum::<f64>()
            / out.images.len() as f64;
        assert!((m - 128.0).abs() < 0.5, "mean {m}");
        assert!((var.sqrt() - 10.0).abs() < 0.5, "sd {}", var.sqrt());
    }

    #[test]
    fn parameters_out_of_range_are_refused() {
        let d = data(vec![0; 4], 2, 2);
        for bad in [
            Corruption::Noise {
                sigma: -1.0,
                seed: 0,
            },
            Corruption::Noise {
                sigma: f32::NAN,
                seed: 0,
            },
            Corruption::Blur { sigma: 0.0 },
            Corruption::Blur { sigma: 100.0 },
            Corruption::Contrast { factor: 1.5 },
        ] {
            let err = bad.apply(&d).unwrap_err().to_string();
            assert!(err.contains("outside"), "{err}");
        }
        let mut broken = data(vec![0; 4], 2, 2);
        broken.images.pop();
        assert!(Corruption::Shift { dx: 1, dy: 0 }.apply(&broken).is_err());
        let mut empty = data(vec![0; 4], 2, 2);
        empty.width = 0;
        let err = Corruption::Blur { sigma: 1.0 }.apply(&empty).unwrap_err();
        assert!(err.to_string().contains("0x2 pixels"), "{err}");
    }
}
