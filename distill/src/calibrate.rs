//! Calibration: temperature scaling (Guo et al., 2017), expected calibration error, and
//! the choice of an escalation threshold for a stated target.

use serde::{Deserialize, Serialize};
use student_runtime::{
    CalibrationInfo, ScoreKind, calibrated_probabilities, score_from_probabilities,
};

use crate::error::Error;

/// Fits the temperature `T` that minimizes the mean negative log-likelihood of
/// `softmax(logits / T)` on held-out data (`rows x classes` logits, one label per row).
///
/// The NLL is convex in `1/T`, so a golden-section search over `1/T` in `[1/20, 20]` finds
/// the minimum; 60 iterations narrow the bracket far below `f32` resolution.
pub fn fit_temperature(logits: &[f32], labels: &[u8], classes: usize) -> f32 {
    let nll = |beta: f64| mean_nll(logits, labels, classes, (1.0 / beta) as f32);
    let (mut lo, mut hi) = (1.0 / 20.0, 20.0);
    let phi = (5f64.sqrt() - 1.0) / 2.0;
    let (mut a, mut b) = (hi - phi * (hi - lo), lo + phi * (hi - lo));
    let (mut fa, mut fb) = (nll(a), nll(b));
    for _ in 0..60 {
        if fa < fb {
            hi = b;
            (b, fb) = (a, fa);
            a = hi - phi * (hi - lo);
            fa = nll(a);
        } else {
            lo = a;
            (a, fa) = (b, fb);
            b = lo + phi * (hi - lo);
            fb = nll(b);
        }
    }
    (2.0 / (lo + hi)) as f32
}

/// Bins of the expected calibration error in model cards and reports.
pub const ECE_BINS: usize = 15;

/// Fits the temperature on held-out logits and measures the expected calibration error
/// (15 bins) before and after, as a model card section. `split` names the data in it.
pub fn temperature_scaling(
    logits: &[f32],
    labels: &[u8],
    classes: usize,
    split: &str,
) -> CalibrationInfo {
    let temperature = fit_temperature(logits, labels, classes);
    CalibrationInfo {
        temperature,
        method: format!(
            "temperature scaling: NLL minimized on {split} ({} images)",
            labels.len()
        ),
        ece_before: Some(expected_calibration_error(
            logits, labels, classes, 1.0, ECE_BINS,
        )),
        ece_after: Some(expected_calibration_error(
            logits,
            labels,
            classes,
            temperature,
            ECE_BINS,
        )),
    }
}

/// Mean negative log-likelihood of the labels under `softmax(logits / temperature)`.
pub fn mean_nll(logits: &[f32], labels: &[u8], classes: usize, temperature: f32) -> f64 {
    let total: f64 = logits
        .chunks_exact(classes)
        .zip(labels)
        .map(|(row, &y)| {
            let p = calibrated_probabilities(row, temperature)[y as usize];
            -(p.max(f32::MIN_POSITIVE) as f64).ln()
        })
        .sum();
    total / labels.len().max(1) as f64
}

/// Expected calibration error of the max probability with `bins` equal-width bins:
/// the mean over bins, weighted by their share of samples, of |accuracy - confidence|.
pub fn expected_calibration_error(
    logits: &[f32],
    labels: &[u8],
    classes: usize,
    temperature: f32,
    bins: usize,
) -> f64 {
    let mut count = vec![0usize; bins];
    let mut confidence = vec![0.0f64; bins];
    let mut correct = vec![0usize; bins];
    for (row, &y) in logits.chunks_exact(classes).zip(labels) {
        let p = calibrated_probabilities(row, temperature);
        let best = argmax(&p);
        let conf = p[best];
        let bin = ((conf as f64 * bins as f64) as usize).min(bins - 1);
        count[bin] += 1;
        confidence[bin] += conf as f64;
        correct[bin] += usize::from(best == y as usize);
    }
    let n = labels.len().max(1) as f64;
    (0..bins)
        .filter(|&b| count[b] > 0)
        .map(|b| {
            let c = count[b] as f64;
            (c / n) * (correct[b] as f64 / c - confidence[b] / c).abs()
        })
        .sum()
}

/// What an escalation threshold must achieve on the validation split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ThresholdTarget {
    /// Accepted predictions at least as accurate as the teacher is overall.
    AcceptedAtLeastTeacher,
    /// Accepted predictions at least this accurate (a fraction in `[0, 1]`).
    AcceptedAccuracy {
        /// The minimum accuracy of accepted predictions.
        min: f64,
    },
    /// The cascade (student, escalating to the teacher) within `points` percentage points of
    /// the teacher's accuracy, escalating as little as possible.
    CascadeWithinTeacher {
        /// Allowed gap in percentage points.
        points: f64,
    },
    /// Escalate at most this fraction of inputs, as many as that allows.
    MaxEscalation {
        /// The largest escalation rate, in `[0, 1]`.
        rate: f64,
    },
}

/// A chosen threshold and what it achieved on the data it was chosen on.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ThresholdChoice {
    /// Predictions whose score is below it escalate.
    pub threshold: f32,
    /// Fraction of inputs that escalate.
    pub escalation_rate: f64,
    /// Accuracy of the accepted predictions (1 when none is accepted).
    pub accepted_accuracy: f64,
    /// Accuracy of student-then-teacher, when teacher results were given.
    pub cascade_accuracy: Option<f64>,
    /// The target, in words, for the model card.
    pub target: String,
}

/// Chooses the lowest threshold on `scores` that meets `target`, given which student
/// predictions are correct and, for teacher-relative targets, which teacher predictions are.
///
/// # Errors
/// [`Error::UnreachableTarget`], with the closest achievable result, when no threshold
/// meets the target; [`Error::Data`] when the inputs differ in length, are empty, or a
/// teacher-relative target comes without teacher results.
pub fn choose_threshold(
    scores: &[f32],
    student_correct: &[bool],
    teacher_correct: Option<&[bool]>,
    target: &ThresholdTarget,
) -> Result<ThresholdChoice, Error> {
    let n = scores.len();
    if n == 0 || student_correct.len() != n || teacher_correct.is_some_and(|t| t.len() != n) {
        return Err(Error::Data(format!(
            "threshold selection needs equal, non-empty score and correctness lists, found {n} \
             scores and {} student results",
            student_correct.len()
        )));
    }
    let teacher_accuracy =
        teacher_correct.map(|t| t.iter().filter(|&&c| c).count() as f64 / n as f64);
    let needs_teacher = matches!(
        target,
        ThresholdTarget::AcceptedAtLeastTeacher | ThresholdTarget::CascadeWithinTeacher { .. }
    );
    if needs_teacher && teacher_accuracy.is_none() {
        return Err(Error::Data(format!(
            "target {target:?} needs the teacher's results"
        )));
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    // Prefix sums over the sorted order: student correct among the first k, teacher correct
    // among the first k (so teacher correct on the rest is total minus prefix).
    let mut student_prefix = vec![0usize; n + 1];
    let mut teacher_prefix = vec![0usize; n + 1];
    for (k, &i) in order.iter().enumerate() {
        student_prefix[k + 1] = student_prefix[k] + usize::from(student_correct[i]);
        let t = teacher_correct.is_some_and(|t| t[i]);
        teacher_prefix[k + 1] = teacher_prefix[k] + usize::from(t);
    }
    // Accepting exactly the first k is possible only at a boundary between distinct scores.
    let threshold_for = |k: usize| -> Option<f32> {
        match k {
            0 => {
                let top = scores[order[0]];
                (top < 1.0).then(|| next_up(top))
            }
            k if k == n => Some(scores[order[n - 1]]),
            k => (scores[order[k - 1]] > scores[order[k]]).then(|| scores[order[k - 1]]),
        }
    };
    let evaluate = |k: usize| -> (f64, f64, Option<f64>) {
        let accepted = if k == 0 {
            1.0
        } else {
            student_prefix[k] as f64 / k as f64
        };
        let cascade = teacher_correct
            .map(|_| (student_prefix[k] + teacher_prefix[n] - teacher_prefix[k]) as f64 / n as f64);
        ((n - k) as f64 / n as f64, accepted, cascade)
    };
    let meets = |k: usize| -> bool {
        let (escalation, accepted, cascade) = evaluate(k);
        match target {
            ThresholdTarget::AcceptedAtLeastTeacher => {
                k > 0 && accepted >= teacher_accuracy.unwrap_or(1.0)
            }
            ThresholdTarget::AcceptedAccuracy { min } => k > 0 && accepted >= *min,
            ThresholdTarget::CascadeWithinTeacher { points } => {
                cascade.unwrap_or(0.0) >= teacher_accuracy.unwrap_or(1.0) - points / 100.0
            }
            ThresholdTarget::MaxEscalation { rate } => escalation <= *rate,
        }
    };
    // Most accepted inputs first for accuracy targets (lowest threshold that still meets
    // the bar); fewest accepted first for an escalation budget (use the whole budget).
    let candidates: Box<dyn Iterator<Item = usize>> = match target {
        ThresholdTarget::MaxEscalation { .. } => Box::new(0..=n),
        _ => Box::new((0..=n).rev()),
    };
    let describe = target_text(target, teacher_accuracy);
    for k in candidates {
        let Some(threshold) = threshold_for(k) else {
            continue;
        };
        if meets(k) {
            let (escalation_rate, accepted_accuracy, cascade_accuracy) = evaluate(k);
            return Ok(ThresholdChoice {
                threshold,
                escalation_rate,
                accepted_accuracy,
                cascade_accuracy,
                target: describe,
            });
        }
    }
    let best_accepted = (1..=n)
        .filter(|&k| threshold_for(k).is_some())
        .map(|k| (k, evaluate(k).1))
        .max_by(|a, b| a.1.total_cmp(&b.1));
    Err(Error::UnreachableTarget {
        target: describe,
        closest: match best_accepted {
            Some((k, acc)) => format!(
                "the best accepted accuracy is {:.2}% at an escalation rate of {:.1}%",
                acc * 100.0,
                (n - k) as f64 / n as f64 * 100.0
            ),
            None => "all scores are equal".to_string(),
        },
    })
}

/// Scores of `rows x classes` logits under `temperature`.
pub(crate) fn scores(
    logits: &[f32],
    classes: usize,
    temperature: f32,
    kind: ScoreKind,
) -> Vec<f32> {
    logits
        .chunks_exact(classes)
        .map(|row| score_from_probabilities(&calibrated_probabilities(row, temperature), kind))
        .collect()
}

fn target_text(target: &ThresholdTarget, teacher_accuracy: Option<f64>) -> String {
    match target {
        ThresholdTarget::AcceptedAtLeastTeacher => format!(
            "accepted predictions at least as accurate as the teacher ({:.2}%)",
            teacher_accuracy.unwrap_or(0.0) * 100.0
        ),
        ThresholdTarget::AcceptedAccuracy { min } => {
            format!("accepted predictions at least {:.2}% accurate", min * 100.0)
        }
        ThresholdTarget::CascadeWithinTeacher { points } => format!(
            "cascade within {points} points of the teacher ({:.2}%), fewest escalations",
            teacher_accuracy.unwrap_or(0.0) * 100.0
        ),
        ThresholdTarget::MaxEscalation { rate } => {
            format!("escalate at most {:.1}% of inputs", rate * 100.0)
        }
    }
}

/// The index of the largest value (the first, on ties).
pub(crate) fn argmax(row: &[f32]) -> usize {
    row.iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
            if v > best.1 { (i, v) } else { best }
        })
        .0
}

/// The smallest `f32` above `x` (for finite, non-negative `x`).
fn next_up(x: f32) -> f32 {
    f32::from_bits(x.to_bits() + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temperature_recovers_a_known_scale() {
        // Labels drawn so that softmax(z / 3) is the true distribution: the NLL minimum is
        // at T = 3 in expectation; with a deterministic quantile draw it lands close.
        let classes = 3;
        let mut logits = Vec::new();
        let mut labels = Vec::new();
        for i in 0..3000 {
            let z = [3.0f32 * ((i % 7) as f32 - 3.0), 0.0, 1.5];
            let p = calibrated_probabilities(&z, 3.0);
            let u = (i as f32 * 0.618_034) % 1.0;
            let y = if u < p[0] {
                0
            } else if u < p[0] + p[1] {
                1
            } else {
                2
            };
            logits.extend(z);
            labels.push(y as u8);
        }
        let t = fit_temperature(&logits, &labels, classes);
        assert!((t - 3.0).abs() < 0.3, "fitted {t}");
    }

    #[test]
    fn ece_is_zero_for_perfect_confident_predictions_and_large_for_wrong_ones() {
        let logits = [50.0f32, 0.0, 0.0, 50.0];
        assert!(expected_calibration_error(&logits, &[0, 1], 2, 1.0, 15) < 1e-6);
        assert!(expected_calibration_error(&logits, &[1, 0], 2, 1.0, 15) > 0.99);
    }

    #[test]
    fn accepted_accuracy_target_picks_the_lowest_sufficient_threshold() {
        let scores = [0.9f32, 0.8, 0.7, 0.6, 0.5];
        let correct = [true, true, false, true, false];
        let choice = choose_threshold(
            &scores,
            &correct,
            None,
            &ThresholdTarget::AcceptedAccuracy { min: 0.75 },
        )
        .unwrap();
        // Accepting the top 4 gives 3/4 = 75%; the top 5 would give 60%.
        assert_eq!(choice.threshold, 0.6);
        assert!((choice.escalation_rate - 0.2).abs() < 1e-12);
    }

    #[test]
    fn ties_are_never_split() {
        let scores = [0.9f32, 0.5, 0.5, 0.5];
        let correct = [true, true, false, false];
        let choice = choose_threshold(
            &scores,
            &correct,
            None,
            &ThresholdTarget::AcceptedAccuracy { min: 0.6 },
        )
        .unwrap();
        assert_eq!(choice.threshold, 0.9);
        assert!((choice.escalation_rate - 0.75).abs() < 1e-12);
    }

    #[test]
    fn cascade_target_uses_teacher_results_on_the_escalated_rest() {
        let scores = [0.9f32, 0.8, 0.7, 0.6];
        let student = [true, true, false, false];
        let teacher = [true, true, true, false];
        let target = ThresholdTarget::CascadeWithinTeacher { points: 0.0 };
        let choice = choose_threshold(&scores, &student, Some(&teacher), &target).unwrap();
        // Teacher accuracy is 3/4. Accepting the top 2 and escalating the rest gives
        // 2 + 1 correct = 3/4; accepting 3 would keep the student's third mistake (2/4).
        assert_eq!(choice.threshold, 0.8);
        assert_eq!(choice.cascade_accuracy, Some(0.75));
    }

    #[test]
    fn escalation_budget_is_used_but_not_exceeded() {
        let scores = [0.9f32, 0.8, 0.7, 0.6];
        let correct = [true; 4];
        let target = ThresholdTarget::MaxEscalation { rate: 0.5 };
        let choice = choose_threshold(&scores, &correct, None, &target).unwrap();
        assert_eq!(choice.threshold, 0.8);
        assert_eq!(choice.escalation_rate, 0.5);
    }

    #[test]
    fn unreachable_target_reports_the_closest_result() {
        let err = choose_threshold(
            &[0.9, 0.8],
            &[false, true],
            None,
            &ThresholdTarget::AcceptedAccuracy { min: 0.99 },
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("50.00%"), "{err}");
    }
}
