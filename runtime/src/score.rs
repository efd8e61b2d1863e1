//! From logits to calibrated probabilities and confidence scores.

use crate::card::ScoreKind;

/// `softmax(logits / temperature)`, computed stably (the maximum is subtracted first).
///
/// `temperature` must be positive; logits must be finite (the caller checks both).
pub fn calibrated_probabilities(logits: &[f32], temperature: f32) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = logits
        .iter()
        .map(|&z| ((z - max) / temperature).exp())
        .collect();
    let sum: f32 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

/// The confidence score of a probability vector, in `[0, 1]`, higher meaning more confident.
///
/// - max probability: `p[0]` of the sorted probabilities;
/// - margin: `p[0] - p[1]`;
/// - entropy: `1 - H(p) / ln(k)` for `k` classes.
pub fn score_from_probabilities(probabilities: &[f32], kind: ScoreKind) -> f32 {
    let mut top = [0.0f32, 0.0f32];
    for &p in probabilities {
        if p > top[0] {
            top = [p, top[0]];
        } else if p > top[1] {
            top[1] = p;
        }
    }
    match kind {
        ScoreKind::MaxProbability => top[0],
        ScoreKind::Margin => top[0] - top[1],
        ScoreKind::Entropy => {
            let k = probabilities.len();
            if k < 2 {
                return 1.0;
            }
            let h: f32 = probabilities
                .iter()
                .filter(|&&p| p > 0.0)
                .map(|&p| -p * p.ln())
                .sum();
            (1.0 - h / (k as f32).ln()).clamp(0.0, 1.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_matches_a_direct_formula() {
        let logits = [1.0f32, 2.0, -0.5, 3.0];
        let t = 2.0f32;
        let direct: Vec<f64> = {
            let e: Vec<f64> = logits
                .iter()
                .map(|&z| (z as f64 / t as f64).exp())
                .collect();
            let s: f64 = e.iter().sum();
            e.iter().map(|x| x / s).collect()
        };
        let ours = calibrated_probabilities(&logits, t);
        for (a, b) in ours.iter().zip(direct) {
            assert!((*a as f64 - b).abs() < 1e-6, "{a} vs {b}");
        }
    }

    #[test]
    fn softmax_survives_huge_logits() {
        let p = calibrated_probabilities(&[1e30, 0.0, -1e30], 1.0);
        assert_eq!(p, vec![1.0, 0.0, 0.0]);
    }

    #[test]
    fn scores_on_known_vectors() {
        let p = [0.7f32, 0.2, 0.1];
        assert_eq!(score_from_probabilities(&p, ScoreKind::MaxProbability), 0.7);
        assert!((score_from_probabilities(&p, ScoreKind::Margin) - 0.5).abs() < 1e-6);
        let uniform = [0.25f32; 4];
        assert!(score_from_probabilities(&uniform, ScoreKind::Entropy).abs() < 1e-6);
        let certain = [1.0f32, 0.0, 0.0, 0.0];
        assert_eq!(score_from_probabilities(&certain, ScoreKind::Entropy), 1.0);
    }
}
