//! Mini-batch training of a [`ConvNet`] with the distillation loss, on burn's CPU backend.

use burn::module::Module;
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{Device, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use student_runtime::InputSpec;

use crate::dataset::Dataset;
use crate::error::Error;
use crate::loss::{Targets, distillation_loss, soften};
use crate::net::{ConvNet, NetShape, NetSpec};
use crate::progress::Progress;

/// How one model is trained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSettings {
    /// Passes over the training split.
    pub epochs: usize,
    /// Images per optimizer step.
    pub batch: usize,
    /// Adam's peak learning rate; it decays along a cosine to zero over the run.
    pub learning_rate: f64,
    /// Augment training images: a random horizontal flip and a random shift of up to
    /// [`MAX_SHIFT`] pixels each way (the background, 0, fills the gap).
    #[serde(default)]
    pub augment: bool,
}

/// The largest shift, in pixels, of an augmented training image.
pub const MAX_SHIFT: i64 = 2;

/// What the loss mixes: `alpha = 0` is hard-label training.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct LossSettings {
    pub temperature: f32,
    pub alpha: f32,
}

/// Everything one training run needs besides the data.
pub(crate) struct Job<'a> {
    pub name: &'a str,
    pub spec: &'a NetSpec,
    pub shape: NetShape,
    pub input: &'a InputSpec,
    pub settings: &'a TrainSettings,
    pub loss: LossSettings,
    /// Teacher logits over `train`, row per image; required when `loss.alpha > 0`.
    pub teacher_logits: Option<&'a [f32]>,
    pub seed: u64,
}

/// A freshly initialized net for `job`, on the training device. Initialization draws from
/// the backend's random generator, which may be process-wide: call this from one thread,
/// before any training runs concurrently, so that the same seed gives the same weights.
pub(crate) fn init(job: &Job<'_>) -> Result<ConvNet, Error> {
    job.spec
        .validate(job.shape)
        .map_err(|reason| Error::Training {
            model: job.name.to_string(),
            reason,
        })?;
    let device = Device::flex().autodiff();
    device.seed(job.seed);
    let net = job.spec.init(job.shape, &device);
    // burn initializes parameters lazily, on first read, from a process-wide generator.
    // Reading them here draws the weights now, on this thread, in a fixed order; left to
    // the training threads, the draws would interleave and the seed would not fix them.
    net.weights().map_err(|reason| Error::Training {
        model: job.name.to_string(),
        reason,
    })?;
    log::info!(
        "initialized {}: {} parameters",
        job.name,
        job.spec.params(job.shape)
    );
    Ok(net)
}

/// Trains `model` (from [`init`]) on `train` and returns it with the validation accuracy
/// after each epoch.
///
/// # Errors
/// [`Error::Training`] when the loss becomes NaN or infinite, or the teacher logits do not
/// cover the training set.
pub(crate) fn train(
    job: &Job<'_>,
    mut model: ConvNet,
    train: &Dataset,
    validation: &Dataset,
    progress: &mut dyn Progress,
) -> Result<(ConvNet, Vec<f64>), Error> {
    let fail = |reason: String| Error::Training {
        model: job.name.to_string(),
        reason,
    };
    let classes = job.shape.classes;
    if job.loss.alpha > 0.0 {
        match job.teacher_logits {
            Some(l) if l.len() == train.len() * classes => {}
            Some(l) => {
                return Err(fail(format!(
                    "{} teacher logits for {} images of {classes} classes",
                    l.len(),
                    train.len()
                )));
            }
            None => return Err(fail("distillation needs teacher logits".to_string())),
        }
    }
    if job.settings.batch == 0 || job.settings.epochs == 0 {
        return Err(fail("epochs and batch size must be positive".to_string()));
    }
    let device = Device::flex().autodiff();
    let mut optimizer = AdamConfig::new().init();
    let mut rng = StdRng::seed_from_u64(job.seed);
    let mut order: Vec<usize> = (0..train.len()).collect();
    let steps_per_epoch = train.len().div_ceil(job.settings.batch);
    let total_steps = (steps_per_epoch * job.settings.epochs) as f64;
    let mut step = 0usize;
    let mut history = Vec::new();
    progress.stage(&format!("train {}", job.name), total_steps as u64);
    for epoch in 0..job.settings.epochs {
        order.shuffle(&mut rng);
        let mut loss_sum = 0.0f64;
        for batch in order.chunks(job.settings.batch) {
            let x = if job.settings.augment {
                let augmented = augmented_batch(train, batch, &mut rng);
                batch_tensor(
                    &augmented,
                    job,
                    &(0..batch.len()).collect::<Vec<_>>(),
                    &device,
                )?
            } else {
                batch_tensor(train, job, batch, &device)?
            };
            let targets = batch_targets(train, job, batch, &device);
            let loss = distillation_loss(
                model.forward(x),
                targets,
                job.loss.temperature,
                job.loss.alpha,
            );
            let value: f32 = loss.clone().into_scalar();
            if !value.is_finite() {
                return Err(fail(format!(
                    "the loss became {value} at epoch {}",
                    epoch + 1
                )));
            }
            loss_sum += value as f64 * batch.len() as f64;
            let lr = job.settings.learning_rate
                * 0.5
                * (1.0 + (std::f64::consts::PI * step as f64 / total_steps).cos());
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optimizer.step(lr, model, grads);
            step += 1;
            progress.advance(1);
        }
        let accuracy = accuracy(&model, validation, job)?;
        history.push(accuracy);
        progress.status(&format!(
            "epoch {}/{}: loss {:.4}, validation accuracy {:.2}%",
            epoch + 1,
            job.settings.epochs,
            loss_sum / train.len() as f64,
            accuracy * 100.0
        ));
        log::info!(
            "{} epoch {}: validation accuracy {:.4}",
            job.name,
            epoch + 1,
            accuracy
        );
    }
    progress.finish(&format!(
        "{}: validation accuracy {:.2}%",
        job.name,
        history.last().copied().unwrap_or(0.0) * 100.0
    ));
    Ok((model.valid(), history))
}

/// Validation accuracy with burn's forward pass (used for progress only; reported metrics
/// come from the exported file run by the runtime).
fn accuracy(model: &ConvNet, data: &Dataset, job: &Job<'_>) -> Result<f64, Error> {
    let model = model.valid();
    let device = Device::flex();
    let mut correct = 0usize;
    let indices: Vec<usize> = (0..data.len()).collect();
    for chunk in indices.chunks(1000) {
        let logits = model.forward(batch_tensor(data, job, chunk, &device)?);
        let predicted = logits.argmax(1).into_data();
        let predicted = predicted
            .convert::<i64>()
            .try_to_vec::<i64>()
            .map_err(|e| Error::Training {
                model: job.name.to_string(),
                reason: format!("{e:?}"),
            })?;
        correct += chunk
            .iter()
            .zip(predicted)
            .filter(|(i, p)| data.labels[**i] as i64 == *p)
            .count();
    }
    Ok(correct as f64 / data.len().max(1) as f64)
}

fn batch_tensor(
    data: &Dataset,
    job: &Job<'_>,
    batch: &[usize],
    device: &Device,
) -> Result<Tensor<4>, Error> {
    let values = data.tensor(job.input, batch)?;
    let shape = [
        batch.len(),
        job.shape.channels,
        job.shape.height,
        job.shape.width,
    ];
    Ok(Tensor::from_data(TensorData::new(values, shape), device))
}

/// The images `batch` of `data`, each flipped with probability one half and shifted by up
/// to [`MAX_SHIFT`] pixels in each direction. Labels are not carried: targets come from
/// the original indices.
fn augmented_batch(data: &Dataset, batch: &[usize], rng: &mut StdRng) -> Dataset {
    let (h, w) = (data.height as i64, data.width as i64);
    let mut images = vec![0u8; batch.len() * data.height * data.width];
    for (slot, &i) in batch.iter().enumerate() {
        let Some(src) = data.image(i) else { continue };
        let flip = rng.random_bool(0.5);
        let dy = rng.random_range(-MAX_SHIFT..=MAX_SHIFT);
        let dx = rng.random_range(-MAX_SHIFT..=MAX_SHIFT);
        let dst = &mut images[slot * data.height * data.width..][..data.height * data.width];
        for y in 0..h {
            let sy = y - dy;
            if !(0..h).contains(&sy) {
                continue;
            }
            for x in 0..w {
                let sx = if flip { w - 1 - (x - dx) } else { x - dx };
                if (0..w).contains(&sx) && (0..w).contains(&(x - dx)) {
                    dst[(y * w + x) as usize] = src[(sy * w + sx) as usize];
                }
            }
        }
    }
    Dataset {
        name: data.name.clone(),
        images,
        labels: vec![0; batch.len()],
        height: data.height,
        width: data.width,
        classes: data.classes.clone(),
    }
}

fn batch_targets(data: &Dataset, job: &Job<'_>, batch: &[usize], device: &Device) -> Targets {
    let classes = job.shape.classes;
    let mut hard = vec![0.0f32; batch.len() * classes];
    for (row, &i) in batch.iter().enumerate() {
        hard[row * classes + data.labels[i] as usize] = 1.0;
    }
    let (soft, soft_neg_entropy) = match job.teacher_logits {
        Some(all) if job.loss.alpha > 0.0 => {
            let rows: Vec<f32> = batch
                .iter()
                .flat_map(|&i| all[i * classes..(i + 1) * classes].iter().copied())
                .collect();
            soften(&rows, classes, job.loss.temperature)
        }
        _ => (vec![0.0; batch.len() * classes], 0.0),
    };
    Targets {
        soft: Tensor::from_data(TensorData::new(soft, [batch.len(), classes]), device),
        soft_neg_entropy,
        hard: Tensor::from_data(TensorData::new(hard, [batch.len(), classes]), device),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn augmentation_moves_a_pixel_by_at_most_the_shift_and_may_mirror_it() {
        let mut images = vec![0u8; 28 * 28];
        images[14 * 28 + 20] = 255;
        let data = Dataset {
            name: "dot".into(),
            images,
            labels: vec![0],
            height: 28,
            width: 28,
            classes: vec!["a".into()],
        };
        let mut rng = StdRng::seed_from_u64(1);
        let mut flipped = 0;
        for _ in 0..200 {
            let out = augmented_batch(&data, &[0], &mut rng);
            let lit: Vec<usize> = (0..784).filter(|&p| out.images[p] != 0).collect();
            assert_eq!(lit.len(), 1, "the dot must survive a shift of 2 pixels");
            let (y, x) = ((lit[0] / 28) as i64, (lit[0] % 28) as i64);
            assert!((y - 14).abs() <= MAX_SHIFT, "row {y}");
            let mirrored = (x - (27 - 20)).abs() <= MAX_SHIFT;
            assert!((x - 20).abs() <= MAX_SHIFT || mirrored, "column {x}");
            flipped += usize::from(mirrored);
        }
        assert!((60..140).contains(&flipped), "{flipped} of 200 flipped");
    }
}
