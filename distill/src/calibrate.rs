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
    /// With probability at least `1 - delta` over the calibration data, the error rate of
    /// accepted predictions is at most `error`, accepting as many as that allows.
    ///
    /// Chosen the way Learn-then-Test does (Angelopoulos et al., 2021): each threshold of
    /// a fixed grid is tested with an exact binomial test of "the accepted error exceeds
    /// `error`", in fixed sequences that control the family-wise error at `delta`. The data
    /// it is chosen on must not have been used to fit anything else; see
    /// [`calibrate_and_choose`].
    RiskBound {
        /// The bound on the error rate of accepted predictions, in `(0, 1)`.
        error: f64,
        /// The allowed probability that the bound fails, in `(0, 1)`.
        delta: f64,
    },
}

impl ThresholdTarget {
    /// Checks the target's numbers lie in their ranges.
    pub fn validate(&self) -> Result<(), String> {
        let fraction = |v: f64| (0.0..=1.0).contains(&v);
        let open = |v: f64| v > 0.0 && v < 1.0;
        match self {
            ThresholdTarget::AcceptedAccuracy { min } if !fraction(*min) => {
                Err(format!("target min {min} must lie in [0, 1]"))
            }
            ThresholdTarget::MaxEscalation { rate } if !fraction(*rate) => {
                Err(format!("target rate {rate} must lie in [0, 1]"))
            }
            ThresholdTarget::CascadeWithinTeacher { points } if !(0.0..=100.0).contains(points) => {
                Err(format!("target points {points} must lie in [0, 100]"))
            }
            ThresholdTarget::RiskBound { error, delta } if !open(*error) || !open(*delta) => Err(
                format!("risk bound error {error} and delta {delta} must both lie in (0, 1)"),
            ),
            _ => Ok(()),
        }
    }

    /// The target in words.
    pub fn describe(&self) -> String {
        match self {
            ThresholdTarget::AcceptedAtLeastTeacher => {
                "accepted predictions at least as accurate as the teacher".to_string()
            }
            ThresholdTarget::CascadeWithinTeacher { points } => {
                format!("cascade within {points} points of the teacher, fewest escalations")
            }
            other => target_text(other, None),
        }
    }

    /// Whether the target needs the teacher's results on the same data.
    pub fn needs_teacher(&self) -> bool {
        matches!(
            self,
            ThresholdTarget::AcceptedAtLeastTeacher | ThresholdTarget::CascadeWithinTeacher { .. }
        )
    }
}

/// Fits the temperature and chooses the threshold on held-out logits.
///
/// For a [`ThresholdTarget::RiskBound`], the statistical guarantee needs a threshold chosen
/// on data the temperature was not fitted on: the first half of the rows fits the
/// temperature and the second half chooses the threshold. Other targets use all rows for
/// both. `teacher_correct` holds the teacher's correctness per row.
pub fn calibrate_and_choose(
    logits: &[f32],
    labels: &[u8],
    classes: usize,
    teacher_correct: Option<&[bool]>,
    target: &ThresholdTarget,
    score: ScoreKind,
    split: &str,
) -> Result<(CalibrationInfo, ThresholdChoice), Error> {
    target.validate().map_err(Error::Data)?;
    let n = labels.len();
    let (fit, choose) = match target {
        ThresholdTarget::RiskBound { .. } => (0..n / 2, n / 2..n),
        _ => (0..n, 0..n),
    };
    let rows = |r: &std::ops::Range<usize>| &logits[r.start * classes..r.end * classes];
    let calibration = temperature_scaling(
        rows(&fit),
        &labels[fit.clone()],
        classes,
        &if fit.len() == n {
            split.to_string()
        } else {
            format!("the first {} images of {split}", fit.len())
        },
    );
    let chosen_logits = rows(&choose);
    let correct = correct(chosen_logits, &labels[choose.clone()], classes);
    let mut choice = choose_threshold(
        &scores(chosen_logits, classes, calibration.temperature, score),
        &correct,
        teacher_correct.map(|t| &t[choose.clone()]),
        target,
    )?;
    choice.on = if choose.len() == n {
        format!("{split} ({n} images)")
    } else {
        format!(
            "the last {} images of {split} (the temperature was fitted on the first {})",
            choose.len(),
            fit.len()
        )
    };
    Ok((calibration, choice))
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
    /// The data it was chosen on, in words (and the figures above are on that data).
    pub on: String,
}

impl ThresholdChoice {
    /// The choice for a model card: the target, the data, and what it achieved there.
    pub fn describe(&self) -> String {
        format!(
            "{}; on {}: escalation rate {:.2}%, accepted accuracy {:.2}%{}",
            self.target,
            self.on,
            self.escalation_rate * 100.0,
            self.accepted_accuracy * 100.0,
            self.cascade_accuracy
                .map(|a| format!(", cascade accuracy {:.2}%", a * 100.0))
                .unwrap_or_default()
        )
    }
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
    if target.needs_teacher() && teacher_accuracy.is_none() {
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
            // Handled by `risk_bound_threshold`.
            ThresholdTarget::RiskBound { .. } => false,
        }
    };
    if let ThresholdTarget::RiskBound { error, delta } = *target {
        return risk_bound_threshold(scores, student_correct, teacher_correct, error, delta);
    }
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
                on: format!("{n} images"),
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
        ThresholdTarget::RiskBound { error, delta } => format!(
            "risk bound: with probability at least {:.1}%, accepted predictions err at most \
             {:.2}% of the time (Learn-then-Test: exact binomial tests, fixed sequences from 20 starts)",
            (1.0 - delta) * 100.0,
            error * 100.0
        ),
    }
}

/// Thresholds tested by the risk-bound target: `1 - j / RISK_GRID` for `j` in
/// `0..=RISK_GRID`, fixed before any data is seen.
const RISK_GRID: usize = 1000;

/// Fixed sequences the risk-bound search runs, each from its own starting threshold with
/// `delta / RISK_STARTS` of the error budget.
const RISK_STARTS: usize = 20;

/// Learn-then-Test for the error rate of accepted predictions.
///
/// Each threshold `t` on the fixed grid is a hypothesis "accepted inputs (score >= t) err
/// more often than `error`", tested by the exact binomial p-value `P(Binomial(k, error) <=
/// mistakes)` over the `k` accepted calibration inputs. A single fixed sequence from the
/// strictest threshold would stop at once, since a handful of accepted inputs can reject
/// nothing; so [`RISK_STARTS`] sequences start at evenly spaced grid points, each walking
/// towards laxer thresholds at level `delta / RISK_STARTS` until its first failure
/// (Bonferroni across sequences, fixed-sequence within: the family-wise error stays at most
/// `delta`). The laxest rejected threshold is the answer.
fn risk_bound_threshold(
    scores: &[f32],
    correct: &[bool],
    teacher_correct: Option<&[bool]>,
    error: f64,
    delta: f64,
) -> Result<ThresholdChoice, Error> {
    let n = scores.len();
    let describe = target_text(&ThresholdTarget::RiskBound { error, delta }, None);
    let level = delta / RISK_STARTS as f64;
    let threshold = |j: usize| 1.0 - j as f32 / RISK_GRID as f32;
    // Accepted count and mistakes at each grid threshold, in one pass over sorted scores.
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let mut counts = Vec::with_capacity(RISK_GRID + 1);
    let (mut k, mut mistakes) = (0, 0);
    for j in 0..=RISK_GRID {
        while k < n && scores[order[k]] >= threshold(j) {
            mistakes += usize::from(!correct[order[k]]);
            k += 1;
        }
        counts.push((k, mistakes));
    }
    let rejects = |j: usize| {
        let (k, mistakes) = counts[j];
        k > 0 && binomial_cdf(mistakes, k, error) <= level
    };
    let mut laxest: Option<usize> = None;
    for start in (0..RISK_STARTS).map(|s| s * RISK_GRID / RISK_STARTS) {
        for j in start..=RISK_GRID {
            if !rejects(j) {
                break;
            }
            laxest = laxest.max(Some(j));
        }
    }
    let Some(j) = laxest else {
        let best = counts
            .iter()
            .copied()
            .filter(|&(k, _)| k > 0)
            .map(|(k, m)| (k, error_upper_bound(m, k, level)))
            .min_by(|a, b| a.1.total_cmp(&b.1));
        return Err(Error::UnreachableTarget {
            target: describe,
            closest: match best {
                Some((k, ub)) => format!(
                    "the tightest bound at this confidence is {:.2}%, accepting the {k} most \
                     confident of {n} calibration inputs",
                    ub * 100.0
                ),
                None => "no input has a score on the threshold grid".to_string(),
            },
        });
    };
    let t = threshold(j);
    let (k, mistakes) = counts[j];
    let cascade = teacher_correct.map(|tc| {
        let right = (0..n)
            .filter(|&i| if scores[i] >= t { correct[i] } else { tc[i] })
            .count();
        right as f64 / n as f64
    });
    Ok(ThresholdChoice {
        threshold: t,
        escalation_rate: (n - k) as f64 / n as f64,
        accepted_accuracy: 1.0 - mistakes as f64 / k as f64,
        cascade_accuracy: cascade,
        target: describe,
        on: format!("{n} images"),
    })
}

/// `P(X <= k)` for `X ~ Binomial(n, p)`, summed in log space (exact up to rounding).
pub(crate) fn binomial_cdf(k: usize, n: usize, p: f64) -> f64 {
    if p <= 0.0 {
        return 1.0;
    }
    if p >= 1.0 {
        return if k >= n { 1.0 } else { 0.0 };
    }
    let (lp, lq) = (p.ln(), (1.0 - p).ln());
    let mut log_choose = 0.0f64; // ln C(n, 0)
    let mut total = 0.0f64;
    for i in 0..=k.min(n) {
        if i > 0 {
            log_choose += ((n - i + 1) as f64).ln() - (i as f64).ln();
        }
        total += (log_choose + i as f64 * lp + (n - i) as f64 * lq).exp();
    }
    total.min(1.0)
}

/// The exact (Clopper-Pearson) upper confidence bound on an error rate from `mistakes`
/// out of `n`, at confidence `1 - delta`: the largest `p` with `P(X <= mistakes) > delta`.
pub(crate) fn error_upper_bound(mistakes: usize, n: usize, delta: f64) -> f64 {
    let (mut lo, mut hi) = (mistakes as f64 / n as f64, 1.0f64);
    for _ in 0..60 {
        let mid = (lo + hi) / 2.0;
        if binomial_cdf(mistakes, n, mid) > delta {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    hi
}

/// For each row of `logits` (`classes` columns), whether its argmax is the row's label.
pub(crate) fn correct(logits: &[f32], labels: &[u8], classes: usize) -> Vec<bool> {
    logits
        .chunks_exact(classes)
        .zip(labels)
        .map(|(row, &y)| argmax(row) == y as usize)
        .collect()
}

/// The fraction of rows where two logit sets (`classes` columns each) have the same
/// argmax; 0 for no rows.
pub(crate) fn agreement(a: &[f32], b: &[f32], classes: usize) -> f64 {
    let rows = a.len() / classes.max(1);
    let same = a
        .chunks_exact(classes)
        .zip(b.chunks_exact(classes))
        .filter(|(x, y)| argmax(x) == argmax(y))
        .count();
    same as f64 / rows.max(1) as f64
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

    /// A reference binomial CDF by direct products, for small n.
    fn cdf_reference(k: usize, n: usize, p: f64) -> f64 {
        (0..=k)
            .map(|i| {
                let choose: f64 = (0..i).map(|j| (n - j) as f64 / (j + 1) as f64).product();
                choose * p.powi(i as i32) * (1.0 - p).powi((n - i) as i32)
            })
            .sum()
    }

    #[test]
    fn binomial_cdf_matches_direct_sums() {
        for (k, n, p) in [
            (0, 10, 0.1),
            (3, 10, 0.1),
            (5, 20, 0.3),
            (20, 20, 0.5),
            (2, 50, 0.02),
        ] {
            let (a, b) = (binomial_cdf(k, n, p), cdf_reference(k, n, p));
            assert!((a - b).abs() < 1e-12, "k={k} n={n} p={p}: {a} vs {b}");
        }
        // 0 mistakes in 100 at p = 0.05: 0.95^100.
        assert!((binomial_cdf(0, 100, 0.05) - 0.95f64.powi(100)).abs() < 1e-15);
    }

    #[test]
    fn clopper_pearson_bound_of_zero_mistakes_is_the_rule_of_three() {
        // With 0 mistakes in n, the bound solves (1 - p)^n = delta: about 3/n at 95%.
        let ub = error_upper_bound(0, 300, 0.05);
        assert!(
            (ub - (1.0 - 0.05f64.powf(1.0 / 300.0))).abs() < 1e-9,
            "{ub}"
        );
    }

    #[test]
    fn risk_bound_accepts_the_prefix_whose_bound_holds() {
        // 200 inputs by falling score: the top 100 are all right, the rest half wrong.
        let scores: Vec<f32> = (0..200).map(|i| 1.0 - i as f32 / 400.0).collect();
        let correct: Vec<bool> = (0..200).map(|i| i < 100 || i % 2 == 0).collect();
        let target = ThresholdTarget::RiskBound {
            error: 0.1,
            delta: 0.1,
        };
        let choice = choose_threshold(&scores, &correct, None, &target).unwrap();
        let accepted = scores.iter().filter(|&&s| s >= choice.threshold).count();
        // The chosen set passes the test at the per-sequence level delta / 20.
        let mistakes = correct[..accepted].iter().filter(|&&c| !c).count();
        assert!(binomial_cdf(mistakes, accepted, 0.1) <= 0.1 / 20.0);
        assert_eq!(
            choice.accepted_accuracy,
            1.0 - mistakes as f64 / accepted as f64
        );
        // It goes past the clean 100 but stops well before the error rate reaches 10%.
        assert!(accepted > 100 && accepted < 125, "accepted {accepted}");
        assert!(choice.target.contains("Learn-then-Test"));
    }

    #[test]
    fn risk_bound_holds_on_fresh_data_at_the_promised_rate() {
        // Simulation: each calibration set of 2,000 draws a score in [0, 1] and is right
        // with probability equal to its score. The true error of accepting scores >= t is
        // (1 - t) / 2. Over 300 sets, the bound 15% may fail in at most ~delta of them.
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let (error, delta) = (0.15, 0.1);
        let target = ThresholdTarget::RiskBound { error, delta };
        let mut failures = 0;
        let mut true_errors = 0.0;
        let trials = 300;
        for _ in 0..trials {
            let scores: Vec<f32> = (0..2000).map(|_| rng.random::<f32>()).collect();
            let correct: Vec<bool> = scores.iter().map(|&s| rng.random::<f32>() < s).collect();
            let t = choose_threshold(&scores, &correct, None, &target)
                .unwrap()
                .threshold;
            let true_error = (1.0 - t as f64) / 2.0;
            true_errors += true_error;
            if true_error > error {
                failures += 1;
            }
        }
        // Allow sampling slack over delta (binomial sd of the count is ~5 at 300 trials).
        assert!(
            failures as f64 <= trials as f64 * delta + 15.0,
            "{failures} failures"
        );
        // And it uses its budget: the true error of the chosen thresholds is not far below it.
        let mean = true_errors / trials as f64;
        assert!(
            mean > error * 0.5,
            "mean true error {mean}: the bound is needlessly loose"
        );
    }
}
