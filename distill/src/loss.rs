//! The distillation loss (Hinton et al., 2015).
//!
//! For student logits `s`, teacher logits `t`, hard label `y`, temperature `T` and weight
//! `alpha`:
//!
//! `loss = alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(softmax(s), y)`
//!
//! averaged over the batch. The `T^2` factor keeps the soft term's gradients on the same
//! scale as the hard term's when `T` changes. `alpha = 0` is plain hard-label training.

use burn::tensor::Tensor;
use burn::tensor::activation::log_softmax;

/// Soft and hard targets of one batch, prepared outside the autodiff graph.
pub(crate) struct Targets {
    /// `softmax(t / T)`, `[batch, classes]`.
    pub soft: Tensor<2>,
    /// Mean over the batch of `sum p ln p` of the soft targets (a constant that makes the
    /// soft term a true KL divergence, so the reported loss is interpretable).
    pub soft_neg_entropy: f32,
    /// One-hot hard labels, `[batch, classes]`.
    pub hard: Tensor<2>,
}

/// The batch loss as a burn tensor of one element, differentiable in `student`.
pub(crate) fn distillation_loss(
    student: Tensor<2>,
    targets: Targets,
    temperature: f32,
    alpha: f32,
) -> Tensor<1> {
    let hard_nll = (targets.hard * log_softmax(student.clone(), 1).neg())
        .sum_dim(1)
        .mean();
    if alpha == 0.0 {
        return hard_nll;
    }
    let soft_ce = (targets.soft * log_softmax(student.div_scalar(temperature), 1).neg())
        .sum_dim(1)
        .mean();
    let kl = soft_ce.add_scalar(targets.soft_neg_entropy);
    kl.mul_scalar(alpha * temperature * temperature)
        .add(hard_nll.mul_scalar(1.0 - alpha))
}

/// Softmax at temperature `T` of each row of `logits` (`rows x classes`), and the mean over
/// rows of `sum p ln p`.
pub(crate) fn soften(logits: &[f32], classes: usize, temperature: f32) -> (Vec<f32>, f32) {
    let mut probs = Vec::with_capacity(logits.len());
    let mut neg_entropy = 0.0f64;
    let rows = logits.len() / classes;
    for row in logits.chunks_exact(classes) {
        let p = student_runtime::calibrated_probabilities(row, temperature);
        neg_entropy += p
            .iter()
            .filter(|&&p| p > 0.0)
            .map(|&p| (p * p.ln()) as f64)
            .sum::<f64>();
        probs.extend(p);
    }
    (probs, (neg_entropy / rows.max(1) as f64) as f32)
}

/// The same loss for one sample, in plain `f64` loops: the reference the burn version is
/// tested against.
pub fn distillation_loss_reference(
    student: &[f64],
    teacher: &[f64],
    label: usize,
    temperature: f64,
    alpha: f64,
) -> f64 {
    fn log_softmax(z: &[f64], t: f64) -> Vec<f64> {
        let m = z.iter().copied().fold(f64::NEG_INFINITY, f64::max) / t;
        let lse = z.iter().map(|&v| (v / t - m).exp()).sum::<f64>().ln() + m;
        z.iter().map(|&v| v / t - lse).collect()
    }
    let log_q = log_softmax(student, temperature);
    let log_p = log_softmax(teacher, temperature);
    let kl: f64 = log_p
        .iter()
        .zip(&log_q)
        .map(|(lp, lq)| lp.exp() * (lp - lq))
        .sum();
    let ce = -log_softmax(student, 1.0)[label];
    alpha * temperature * temperature * kl + (1.0 - alpha) * ce
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

    const STUDENT: [[f64; 4]; 2] = [[0.5, -1.0, 2.0, 0.1], [1.5, 0.3, -0.7, 0.0]];
    const TEACHER: [[f64; 4]; 2] = [[1.0, -2.0, 3.0, 0.0], [2.0, 1.0, -1.0, 0.5]];
    const LABELS: [usize; 2] = [2, 1];

    fn burn_loss(student: Tensor<2>, t: f32, alpha: f32, device: &Device) -> Tensor<1> {
        let teacher: Vec<f32> = TEACHER.iter().flatten().map(|&v| v as f32).collect();
        let (soft, neg_entropy) = soften(&teacher, 4, t);
        let mut hard = vec![0.0f32; 8];
        for (row, &l) in LABELS.iter().enumerate() {
            hard[row * 4 + l] = 1.0;
        }
        let targets = Targets {
            soft: Tensor::from_data(TensorData::new(soft, [2, 4]), device),
            soft_neg_entropy: neg_entropy,
            hard: Tensor::from_data(TensorData::new(hard, [2, 4]), device),
        };
        distillation_loss(student, targets, t, alpha)
    }

    fn reference_mean(student: &[[f64; 4]; 2], t: f64, alpha: f64) -> f64 {
        (0..2)
            .map(|i| distillation_loss_reference(&student[i], &TEACHER[i], LABELS[i], t, alpha))
            .sum::<f64>()
            / 2.0
    }

    #[test]
    fn loss_value_matches_the_scalar_reference() {
        let device = Device::flex();
        for (t, alpha) in [(1.0, 0.0), (4.0, 0.7), (20.0, 1.0)] {
            let s: Vec<f32> = STUDENT.iter().flatten().map(|&v| v as f32).collect();
            let student = Tensor::<2>::from_data(TensorData::new(s, [2, 4]), &device);
            let ours: f32 = burn_loss(student, t as f32, alpha as f32, &device).into_scalar();
            let reference = reference_mean(&STUDENT, t, alpha);
            // The soft term is an f32 cross-entropy minus an f32 entropy (each near ln 4, so
            // rounded to ~2e-7), then multiplied by T^2: allow 1e-6 * T^2 on top of 1e-5.
            let tolerance = 1e-5 * reference.abs().max(1.0) + 1e-6 * t * t;
            assert!(
                (ours as f64 - reference).abs() < tolerance,
                "T={t} alpha={alpha}: {ours} vs {reference}"
            );
        }
    }

    #[test]
    fn gradient_matches_finite_differences_of_the_reference() {
        let device = Device::flex().autodiff();
        let (t, alpha) = (4.0, 0.7);
        let s: Vec<f32> = STUDENT.iter().flatten().map(|&v| v as f32).collect();
        let student = Tensor::<2>::from_data(TensorData::new(s, [2, 4]), &device).require_grad();
        let grads = burn_loss(student.clone(), t as f32, alpha as f32, &device).backward();
        let ours = student
            .grad(&grads)
            .unwrap()
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        let h = 1e-5;
        for i in 0..8 {
            let (mut plus, mut minus) = (STUDENT, STUDENT);
            plus[i / 4][i % 4] += h;
            minus[i / 4][i % 4] -= h;
            let numeric =
                (reference_mean(&plus, t, alpha) - reference_mean(&minus, t, alpha)) / (2.0 * h);
            // Central differences in f64 are accurate to ~1e-9; the burn gradient is f32.
            assert!(
                (ours[i] as f64 - numeric).abs() < 1e-4,
                "d/ds[{i}]: {} vs {numeric}",
                ours[i]
            );
        }
    }
}
