//! The curves behind a comparison's plots, from logits and correctness flags: the order of
//! confidence, risk against coverage, cascade accuracy against escalation rate, and the
//! reliability bins.

use student_runtime::{ModelCard, calibrated_probabilities};

use crate::calibrate::{ECE_BINS, argmax, scores};
use crate::plots::ReliabilityBin;

/// Points per risk-coverage and cascade curve kept for plots and JSON.
const CURVE_POINTS: usize = 200;

/// Sample indices, highest card score first (ties in index order).
pub(super) fn confidence_order(
    logits: &[f32],
    classes: usize,
    temperature: f32,
    card: &ModelCard,
) -> Vec<usize> {
    let s = scores(logits, classes, temperature, card.escalation.score);
    let mut order: Vec<usize> = (0..s.len()).collect();
    order.sort_by(|&a, &b| s[b].total_cmp(&s[a]));
    order
}

/// Counts of `flags` true among the first `k` of `order`, for every `k` in `0..=n`.
fn prefix_counts(order: &[usize], flags: &[bool]) -> Vec<usize> {
    let mut prefix = Vec::with_capacity(order.len() + 1);
    prefix.push(0);
    for &i in order {
        let last = prefix.last().copied().unwrap_or(0);
        prefix.push(last + usize::from(flags.get(i).copied().unwrap_or(false)));
    }
    prefix
}

/// Sample counts `ceil(j * n / CURVE_POINTS)` for `j` in `from..=CURVE_POINTS`, without
/// repeats.
fn curve_steps(n: usize, from: usize) -> Vec<usize> {
    let mut steps: Vec<usize> = (from..=CURVE_POINTS)
        .map(|j| (j * n).div_ceil(CURVE_POINTS))
        .collect();
    steps.dedup();
    steps
}

/// The risk-coverage curve (thinned to about [`CURVE_POINTS`] points) and its exact area.
pub(super) fn risk_coverage(order: &[usize], correct: &[bool]) -> (Vec<(f64, f64)>, f64) {
    let n = order.len();
    let right = prefix_counts(order, correct);
    let risk = |k: usize| (k - right[k]) as f64 / k as f64;
    let aurc = (1..=n).map(risk).sum::<f64>() / n.max(1) as f64;
    let points = curve_steps(n, 1)
        .into_iter()
        .filter(|&k| k > 0)
        .map(|k| (k as f64 / n as f64, risk(k)))
        .collect();
    (points, aurc)
}

/// `(escalation rate, cascade accuracy)` when the least confident inputs take the
/// teacher's answer, from none escalated to all.
pub(super) fn cascade_curve(order: &[usize], model: &[bool], teacher: &[bool]) -> Vec<(f64, f64)> {
    let n = order.len();
    let model_right = prefix_counts(order, model);
    let teacher_right = prefix_counts(order, teacher);
    curve_steps(n, 0)
        .into_iter()
        .map(|escalated| {
            let kept = n - escalated;
            let right = model_right[kept] + teacher_right[n] - teacher_right[kept];
            (escalated as f64 / n as f64, right as f64 / n as f64)
        })
        .collect()
}

/// Reliability bins of the max calibrated probability, binned as
/// [`expected_calibration_error`] bins it.
pub(super) fn reliability_bins(
    logits: &[f32],
    labels: &[u8],
    classes: usize,
    temperature: f32,
) -> Vec<ReliabilityBin> {
    let mut count = [0usize; ECE_BINS];
    let mut confidence = [0.0f64; ECE_BINS];
    let mut right = [0usize; ECE_BINS];
    for (row, &y) in logits.chunks_exact(classes).zip(labels) {
        let p = calibrated_probabilities(row, temperature);
        let best = argmax(&p);
        let conf = p[best] as f64;
        let bin = ((conf * ECE_BINS as f64) as usize).min(ECE_BINS - 1);
        count[bin] += 1;
        confidence[bin] += conf;
        right[bin] += usize::from(best == y as usize);
    }
    (0..ECE_BINS)
        .map(|b| {
            let c = count[b].max(1) as f64;
            ReliabilityBin {
                lower: b as f64 / ECE_BINS as f64,
                upper: (b + 1) as f64 / ECE_BINS as f64,
                count: count[b],
                confidence: confidence[b] / c,
                accuracy: right[b] as f64 / c,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calibrate::expected_calibration_error;

    #[test]
    fn risk_coverage_and_cascade_on_a_hand_made_order() {
        // Most confident first: right, right, wrong, wrong.
        let order = [2, 0, 3, 1];
        let model = [true, false, true, false];
        let (points, aurc) = risk_coverage(&order, &model);
        assert_eq!(points.first(), Some(&(0.25, 0.0)));
        assert_eq!(points.last(), Some(&(1.0, 0.5)));
        // Risks at k = 1..4: 0, 0, 1/3, 1/2.
        assert!((aurc - (1.0 / 3.0 + 0.5) / 4.0).abs() < 1e-12);
        let teacher = [true, true, true, false];
        let curve = cascade_curve(&order, &model, &teacher);
        assert_eq!(curve.first(), Some(&(0.0, 0.5)));
        // Escalating the two least confident (3 and 1): teacher right on 3, wrong on 1.
        assert!(curve.contains(&(0.5, 0.75)));
        assert_eq!(curve.last(), Some(&(1.0, 0.75)));
    }

    #[test]
    fn reliability_bins_match_the_ece_binning() {
        let logits = [3.0f32, 0.0, 0.0, 3.0, 0.2, 0.0];
        let labels = [0u8, 0, 1];
        let bins = reliability_bins(&logits, &labels, 2, 1.0);
        assert_eq!(bins.len(), ECE_BINS);
        assert_eq!(bins.iter().map(|b| b.count).sum::<usize>(), 3);
        let ece: f64 = bins
            .iter()
            .map(|b| b.count as f64 / 3.0 * (b.accuracy - b.confidence).abs())
            .sum();
        let reference = expected_calibration_error(&logits, &labels, 2, 1.0, ECE_BINS);
        assert!((ece - reference).abs() < 1e-9, "{ece} vs {reference}");
    }
}
