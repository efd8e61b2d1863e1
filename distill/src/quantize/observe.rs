//! Activation ranges for int8: run the float graph on calibration samples with every
//! intermediate tensor exposed, record what each tensor holds, and pick the range that
//! 8 bits will cover (min-max, a percentile, or the entropy-minimizing clip).

use std::collections::HashMap;

use tract_onnx::pb;
use tract_onnx::prelude::*;

use crate::error::Error;
use crate::progress::Progress;

/// How the range of each activation is chosen from calibration data.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RangeMethod {
    /// The smallest and largest value seen: nothing is clipped.
    MinMax,
    /// Clip magnitudes at this percentile (for example 99.99) of all values seen.
    Percentile(f64),
    /// Clip where the KL divergence between the observed distribution and its 8-bit
    /// version is smallest (the entropy calibration of TensorRT-style quantizers).
    Entropy,
}

impl RangeMethod {
    /// A short description for model cards.
    pub fn describe(self) -> String {
        match self {
            RangeMethod::MinMax => "min-max".to_string(),
            RangeMethod::Percentile(p) => format!("percentile {p}"),
            RangeMethod::Entropy => format!("entropy (KL, {HISTOGRAM_BINS} bins)"),
        }
    }
}

/// Bins of the magnitude histogram used by the percentile and entropy methods.
pub(crate) const HISTOGRAM_BINS: usize = 2048;

/// What one float tensor held over the calibration samples.
#[derive(Debug, Clone)]
pub(crate) struct Observed {
    pub min: f32,
    pub max: f32,
    /// Counts of the positive values over `(0, max]`, in [`HISTOGRAM_BINS`] bins; empty
    /// when the method needs no histogram.
    pub positive: Vec<u64>,
    /// Counts of the magnitudes of the negative values over `(0, -min]`.
    pub negative: Vec<u64>,
}

impl Observed {
    pub fn new() -> Observed {
        Observed {
            min: f32::INFINITY,
            max: f32::NEG_INFINITY,
            positive: Vec::new(),
            negative: Vec::new(),
        }
    }

    /// The float range `[lo, hi]` (containing 0) that the 8-bit encoding will cover.
    ///
    /// Each side of zero is clipped on its own: exact zeros (most of a ReLU's output) are
    /// left out of the histograms, since the zero point represents them exactly whatever
    /// the range.
    pub fn range(&self, method: RangeMethod) -> (f32, f32) {
        let (lo, hi) = (self.min.min(0.0), self.max.max(0.0));
        // Both signs share the 255 steps; a one-sided tensor has them all.
        let levels = if lo < 0.0 && hi > 0.0 { 128 } else { 255 };
        let clip = |h: &[u64], magnitude: f32| match method {
            RangeMethod::MinMax => magnitude,
            RangeMethod::Percentile(p) => percentile(h, magnitude, p),
            RangeMethod::Entropy => entropy_clip(h, magnitude, levels),
        };
        (-clip(&self.negative, -lo), clip(&self.positive, hi))
    }
}

/// The `p`-th percentile of a histogram over `(0, magnitude]`, as the upper edge of the
/// bin where it falls.
fn percentile(h: &[u64], magnitude: f32, p: f64) -> f32 {
    let total: u64 = h.iter().sum();
    let wanted = (total as f64 * p / 100.0).ceil() as u64;
    let mut seen = 0;
    for (i, &c) in h.iter().enumerate() {
        seen += c;
        if seen >= wanted && wanted > 0 {
            return (i + 1) as f32 * magnitude / h.len() as f32;
        }
    }
    magnitude
}

/// The clip `T` minimizing KL(P || Q), where P is the histogram cut at `T` (values beyond
/// folded into the last bin) and Q is P merged into `levels` buckets and spread back over
/// the bins that were non-empty. Ties go to the widest clip.
fn entropy_clip(h: &[u64], magnitude: f32, levels: usize) -> f32 {
    if h.len() < levels || magnitude == 0.0 {
        return magnitude;
    }
    {
        let mut best = (f64::INFINITY, h.len());
        let mut tail: u64 = 0;
        for i in (levels..=h.len()).rev() {
            if i < h.len() {
                tail += h[i];
            }
            let mut p: Vec<f64> = h[..i].iter().map(|&c| c as f64).collect();
            p[i - 1] += tail as f64;
            let mut q = vec![0.0f64; i];
            for j in 0..levels {
                let (start, end) = (j * i / levels, (j + 1) * i / levels);
                let chunk = &h[start..end];
                let nonzero = chunk.iter().filter(|&&c| c > 0).count();
                if nonzero == 0 {
                    continue;
                }
                let each = chunk.iter().sum::<u64>() as f64 / nonzero as f64;
                for (k, &c) in chunk.iter().enumerate() {
                    if c > 0 {
                        q[start + k] = each;
                    }
                }
            }
            let kl = kl_divergence(&p, &q);
            if kl < best.0 - 1e-12 {
                best = (kl, i);
            }
        }
        best.1 as f32 * magnitude / h.len() as f32
    }
}

/// KL(P || Q) of two unnormalized histograms; a bin where P has mass and Q has none gets a
/// small floor so that the divergence stays finite but large.
fn kl_divergence(p: &[f64], q: &[f64]) -> f64 {
    let (sp, sq) = (p.iter().sum::<f64>(), q.iter().sum::<f64>());
    if sp == 0.0 || sq == 0.0 {
        return f64::INFINITY;
    }
    p.iter()
        .zip(q)
        .filter(|(pi, _)| **pi > 0.0)
        .map(|(pi, qi)| {
            let (pn, qn) = (pi / sp, (qi / sq).max(1e-12));
            pn * (pn / qn).ln()
        })
        .sum()
}

/// Runs `model` (batch 1) on each calibration sample with every node output exposed, and
/// returns what each float tensor held, keyed by tensor name. The graph input is included.
///
/// `samples` holds `count` samples of `sample_dims` (without the batch dimension).
pub(crate) fn observe(
    model: &pb::ModelProto,
    origin: &str,
    input_name: &str,
    sample_dims: &[usize],
    samples: &[f32],
    method: RangeMethod,
    progress: &mut dyn Progress,
) -> Result<HashMap<String, Observed>, Error> {
    let fail = |reason: String| Error::Quantize {
        origin: origin.to_string(),
        reason,
    };
    let per_sample: usize = sample_dims.iter().product();
    let count = samples.len() / per_sample.max(1);
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| fail("the model has no graph".to_string()))?;
    // Every node output becomes a graph output, so one run shows all of them.
    let mut exposed = model.clone();
    let mut producer = HashMap::new();
    let mut names: Vec<String> = Vec::new();
    for n in &graph.node {
        for o in n.output.iter().filter(|o| !o.is_empty()) {
            producer.insert(o.clone(), super::proto::node_name(n));
            names.push(o.clone());
        }
    }
    if let Some(g) = exposed.graph.as_mut() {
        g.output = names
            .iter()
            .map(|name| pb::ValueInfoProto {
                name: name.clone(),
                ..Default::default()
            })
            .collect();
    }
    let mut shape = vec![1usize];
    shape.extend_from_slice(sample_dims);
    let plan = (|| -> TractResult<_> {
        tract_onnx::onnx()
            .model_for_proto_model(&exposed)?
            .with_input_fact(0, f32::fact(&shape).into())?
            .into_optimized()?
            .into_runnable()
    })()
    .map_err(|e| {
        fail(format!(
            "the float graph does not plan for calibration: {e:#}"
        ))
    })?;

    let histograms = !matches!(method, RangeMethod::MinMax);
    let passes = if histograms { 2 } else { 1 };
    let mut observed: HashMap<String, Observed> = HashMap::new();
    let mut float_names: Vec<Option<String>> = vec![None; names.len()];
    let mut input_obs = Observed::new();
    for pass in 0..passes {
        progress.stage(
            &format!("calibration pass {} of {passes}", pass + 1),
            count as u64,
        );
        for (i, sample) in samples.chunks_exact(per_sample).enumerate() {
            if pass == 0 {
                record_extremes(&mut input_obs, sample)
                    .map_err(|v| fail(format!("calibration sample {i} holds {v}")))?;
            } else {
                record_histogram(&mut input_obs, sample);
            }
            let input = tract_ndarray::ArrayD::from_shape_vec(shape.clone(), sample.to_vec())
                .map_err(|e| fail(format!("calibration sample {i}: {e}")))?;
            let outputs = plan
                .run(tvec!(Tensor::from(input).into_tvalue()))
                .map_err(|e| fail(format!("running calibration sample {i} failed: {e:#}")))?;
            for (k, value) in outputs.iter().enumerate() {
                if value.datum_type() != f32::datum_type() {
                    continue;
                }
                let Ok(view) = value.to_plain_array_view::<f32>() else {
                    continue;
                };
                let owned;
                let values: &[f32] = match view.as_slice() {
                    Some(s) => s,
                    None => {
                        owned = view.iter().copied().collect::<Vec<f32>>();
                        &owned
                    }
                };
                let name = &names[k];
                if pass == 0 {
                    float_names[k] = Some(name.clone());
                    let entry = observed.entry(name.clone()).or_insert_with(Observed::new);
                    record_extremes(entry, values).map_err(|v| {
                        fail(format!(
                            "tensor `{name}` (output of node `{}`) holds {v} on calibration \
                             sample {i}; the float model is not usable on this data",
                            producer.get(name).cloned().unwrap_or_default()
                        ))
                    })?;
                } else if let Some(entry) = observed.get_mut(name) {
                    record_histogram(entry, values);
                }
            }
            progress.advance(1);
        }
        progress.finish(&format!("{} tensors observed", observed.len() + 1));
    }
    observed.insert(input_name.to_string(), input_obs);
    Ok(observed)
}

fn record_extremes(obs: &mut Observed, values: &[f32]) -> Result<(), String> {
    for &v in values {
        if !v.is_finite() {
            return Err(format!("the non-finite value {v}"));
        }
        obs.min = obs.min.min(v);
        obs.max = obs.max.max(v);
    }
    Ok(())
}

fn record_histogram(obs: &mut Observed, values: &[f32]) {
    if obs.positive.is_empty() {
        obs.positive = vec![0; HISTOGRAM_BINS];
        obs.negative = vec![0; HISTOGRAM_BINS];
    }
    let bins = HISTOGRAM_BINS as f32;
    let (up, down) = (
        bins / obs.max.max(f32::MIN_POSITIVE),
        bins / (-obs.min).max(f32::MIN_POSITIVE),
    );
    for &v in values {
        if v > 0.0 {
            obs.positive[((v * up) as usize).min(HISTOGRAM_BINS - 1)] += 1;
        } else if v < 0.0 {
            obs.negative[((-v * down) as usize).min(HISTOGRAM_BINS - 1)] += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observed(values: &[f32]) -> Observed {
        let mut o = Observed::new();
        record_extremes(&mut o, values).unwrap();
        record_histogram(&mut o, values);
        o
    }

    #[test]
    fn min_max_covers_everything_and_zero() {
        let o = observed(&[0.5, 2.0, 3.0]);
        assert_eq!(o.range(RangeMethod::MinMax), (0.0, 3.0));
        let o = observed(&[-1.5, 2.0]);
        assert_eq!(o.range(RangeMethod::MinMax), (-1.5, 2.0));
    }

    #[test]
    fn percentile_clips_a_rare_outlier() {
        // 9,999 values spread over [0, 1) and one at 100.
        let mut v: Vec<f32> = (0..9999).map(|i| i as f32 / 9999.0).collect();
        v.push(100.0);
        let o = observed(&v);
        let (lo, hi) = o.range(RangeMethod::Percentile(99.9));
        assert_eq!(lo, 0.0);
        // Within one histogram bin (100/2048) above the true 99.9th percentile (~1.0).
        assert!(hi > 0.99 && hi < 1.0 + 100.0 / 2048.0 + 1e-3, "hi = {hi}");
        assert_eq!(o.range(RangeMethod::Percentile(100.0)).1, 100.0);
    }

    #[test]
    fn entropy_clips_a_long_tail_but_not_a_uniform_range() {
        // Uniform data: clipping only loses information, so the clip stays near the max.
        let uniform: Vec<f32> = (0..20000)
            .map(|i| (i % 1000) as f32 / 1000.0 * 4.0)
            .collect();
        let (_, hi) = observed(&uniform).range(RangeMethod::Entropy);
        assert!(hi > 3.8, "uniform data clipped at {hi}");
        // An exponential bulk (mean 1, quantiles up to ~10) with a few far outliers at 50:
        // the clip falls well below 50 but above most of the bulk.
        let mut tailed: Vec<f32> = (0..20000)
            .map(|i| -(1.0 - (i as f32 + 0.5) / 20000.0).ln())
            .collect();
        tailed.extend([50.0; 3]);
        let (_, hi) = observed(&tailed).range(RangeMethod::Entropy);
        assert!(hi < 25.0, "tailed data clipped at {hi}");
        assert!(hi >= 3.0, "tailed data clipped into its bulk at {hi}");
    }

    #[test]
    fn each_side_is_clipped_on_its_own_and_a_spike_is_kept() {
        // Like a normalized image: a spike of background at -0.8, ink spread over (0, 2].
        let mut v = vec![-0.8f32; 30000];
        v.extend((1..=5000).map(|i| i as f32 / 2500.0));
        let o = observed(&v);
        for method in [RangeMethod::Entropy, RangeMethod::Percentile(99.99)] {
            let (lo, hi) = o.range(method);
            assert!(
                (lo + 0.8).abs() < 1e-6,
                "{method:?}: the spike was clipped to {lo}"
            );
            assert!(hi > 1.9, "{method:?}: uniform ink clipped at {hi}");
        }
    }

    #[test]
    fn zeros_do_not_pull_the_clip_down() {
        // A ReLU output: 80% exact zeros, the rest uniform over (0, 4].
        let mut v = vec![0.0f32; 40000];
        v.extend((1..=10000).map(|i| i as f32 / 2500.0));
        let (_, hi) = observed(&v).range(RangeMethod::Entropy);
        assert!(hi > 3.8, "clipped at {hi}");
    }

    #[test]
    fn kl_of_identical_histograms_is_zero() {
        assert_eq!(kl_divergence(&[1.0, 2.0, 3.0], &[2.0, 4.0, 6.0]), 0.0);
        assert!(kl_divergence(&[1.0, 1.0], &[1.0, 0.0]) > 10.0);
    }

    #[test]
    fn non_finite_values_are_refused() {
        let mut o = observed(&[1.0]);
        assert!(record_extremes(&mut o, &[f32::NAN]).is_err());
        assert!(record_extremes(&mut o, &[f32::INFINITY]).is_err());
    }
}
