//! Labelled image data sets, read from their IDX files.

use std::path::{Path, PathBuf};

use student_runtime::InputSpec;

use crate::error::Error;
use crate::idx::read_idx;

/// The Fashion-MNIST class names, in label order.
pub const FASHION_MNIST_LABELS: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// Where Debian's `dataset-fashion-mnist` package installs the files.
const FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// The environment variable that overrides [`FASHION_MNIST_DIR`].
pub const FASHION_MNIST_DIR_ENV: &str = "STUDENT_FASHION_MNIST_DIR";

/// Images held back from the end of the training file for validation (temperature and
/// threshold fitting). The file's order is already shuffled, so the tail is a fair sample.
pub const DEFAULT_VALIDATION: usize = 5000;

/// Which part of a data set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// The training file without its validation tail.
    Train,
    /// The last `validation` images of the training file.
    Validation,
    /// The test file.
    Test,
}

/// 8-bit grayscale images with class labels.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// For reports, for example `fashion-mnist:test`.
    pub name: String,
    /// Row-major pixels, `len() * height * width` bytes.
    pub images: Vec<u8>,
    /// One class index per image.
    pub labels: Vec<u8>,
    /// Image height in pixels.
    pub height: usize,
    /// Image width in pixels.
    pub width: usize,
    /// Class names, in label order.
    pub classes: Vec<String>,
}

impl Dataset {
    /// Loads a split of Fashion-MNIST from `dir` (the folder holding the four
    /// `*-ubyte.gz` files), keeping the last `validation` training images apart.
    ///
    /// # Errors
    /// [`Error::Io`] or [`Error::Idx`] for missing or malformed files (the message names the
    /// Debian package that provides them); [`Error::Data`] when images and labels disagree.
    pub fn fashion_mnist(dir: &Path, split: Split, validation: usize) -> Result<Dataset, Error> {
        let file = |stem: &str| dir.join(format!("{stem}-ubyte.gz"));
        let (images, labels) = match split {
            Split::Train | Split::Validation => {
                (file("train-images-idx3"), file("train-labels-idx1"))
            }
            Split::Test => (file("t10k-images-idx3"), file("t10k-labels-idx1")),
        };
        for path in [&images, &labels] {
            if !path.exists() {
                return Err(Error::Data(format!(
                    "{} not found: install Debian's `dataset-fashion-mnist` package or set {}",
                    path.display(),
                    FASHION_MNIST_DIR_ENV
                )));
            }
        }
        let name = match split {
            Split::Train => "fashion-mnist:train",
            Split::Validation => "fashion-mnist:validation",
            Split::Test => "fashion-mnist:test",
        };
        let all = Dataset::from_idx(name, &images, &labels, &FASHION_MNIST_LABELS)?;
        let n = all.len();
        if matches!(split, Split::Train | Split::Validation) && validation >= n {
            return Err(Error::Data(format!(
                "a validation split of {validation} leaves nothing of {n} training images"
            )));
        }
        Ok(match split {
            Split::Train => all.slice(0, n - validation),
            Split::Validation => all.slice(n - validation, n),
            Split::Test => all,
        })
    }

    /// Resolves a name such as `fashion-mnist:test` to a data set, reading from
    /// `$STUDENT_FASHION_MNIST_DIR` or Debian's install location.
    ///
    /// # Errors
    /// [`Error::UnknownDataset`] for any other name; otherwise as
    /// [`fashion_mnist`](Dataset::fashion_mnist).
    pub fn from_name(name: &str) -> Result<Dataset, Error> {
        let split = match name {
            "fashion-mnist:train" => Split::Train,
            "fashion-mnist:validation" => Split::Validation,
            "fashion-mnist:test" => Split::Test,
            other => return Err(Error::UnknownDataset(other.to_string())),
        };
        Dataset::fashion_mnist(&fashion_mnist_dir(), split, DEFAULT_VALIDATION)
    }

    /// Reads an image IDX file (`n x height x width`) and a label IDX file (`n`).
    pub fn from_idx(
        name: &str,
        images: &Path,
        labels: &Path,
        classes: &[&str],
    ) -> Result<Dataset, Error> {
        let img = read_idx(images)?;
        let lab = read_idx(labels)?;
        let [n, height, width] = img.dims[..] else {
            return Err(Error::Data(format!(
                "{}: expected n x height x width images, found dimensions {:?}",
                images.display(),
                img.dims
            )));
        };
        if lab.dims != [n] {
            return Err(Error::Data(format!(
                "{} holds {:?} labels for {n} images in {}",
                labels.display(),
                lab.dims,
                images.display()
            )));
        }
        if let Some(bad) = lab.data.iter().find(|&&l| l as usize >= classes.len()) {
            return Err(Error::Data(format!(
                "{}: label {bad} is outside the {} classes",
                labels.display(),
                classes.len()
            )));
        }
        Ok(Dataset {
            name: name.to_string(),
            images: img.data,
            labels: lab.data,
            height,
            width,
            classes: classes.iter().map(|c| c.to_string()).collect(),
        })
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when the data set holds no image.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Images `start..end` as a new data set.
    pub fn slice(&self, start: usize, end: usize) -> Dataset {
        let end = end.min(self.len());
        let start = start.min(end);
        let px = self.height * self.width;
        Dataset {
            name: self.name.clone(),
            images: self.images[start * px..end * px].to_vec(),
            labels: self.labels[start..end].to_vec(),
            height: self.height,
            width: self.width,
            classes: self.classes.clone(),
        }
    }

    /// The pixels of image `i`, or `None` past the end.
    pub fn image(&self, i: usize) -> Option<&[u8]> {
        let px = self.height * self.width;
        self.images.get(i * px..(i + 1) * px)
    }

    /// Images `indices`, converted to model input through `spec` (the same conversion the
    /// runtime applies), concatenated.
    pub fn tensor(&self, spec: &InputSpec, indices: &[usize]) -> Result<Vec<f32>, Error> {
        let mut out = Vec::with_capacity(indices.len() * spec.len());
        for &i in indices {
            let image = self.image(i).ok_or_else(|| {
                Error::Data(format!(
                    "image {i} is past the end of {} ({} images)",
                    self.name,
                    self.len()
                ))
            })?;
            out.extend(spec.tensor_from_gray8(image, self.width, self.height)?);
        }
        Ok(out)
    }

    /// A SHA-256 over labels and pixels, to key caches and identify data in model cards.
    pub fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut hash = Sha256::new();
        hash.update((self.len() as u64).to_le_bytes());
        hash.update(&self.labels);
        hash.update(&self.images);
        hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// The Fashion-MNIST folder: `$STUDENT_FASHION_MNIST_DIR` or Debian's location.
pub fn fashion_mnist_dir() -> PathBuf {
    std::env::var_os(FASHION_MNIST_DIR_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(FASHION_MNIST_DIR))
}
