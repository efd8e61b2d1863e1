//! Batch-1 latency of several models, timed in one interleaved pass.

use std::time::{Duration, Instant};

use crate::compare::{CompareOptions, Latency, NamedModel};
use crate::dataset::Dataset;
use crate::error::Error;
use crate::progress::Progress;

/// Times batch-1 calls, the models interleaved call by call.
pub(super) fn latency(
    all: &[NamedModel<'_>],
    data: &Dataset,
    options: &CompareOptions,
    progress: &mut dyn Progress,
) -> Result<Vec<Latency>, Error> {
    let calls = options.latency_calls.max(1);
    let distinct: Vec<usize> = (0..calls.min(data.len())).collect();
    // Inputs are converted beforehand: the figure is the model call alone.
    let inputs: Vec<Vec<f32>> = all
        .iter()
        .map(|m| data.tensor(m.model.input_spec(), &distinct))
        .collect::<Result<_, _>>()?;
    let sample = |k: usize, call: usize| {
        let per = all[k].model.input_spec().len();
        let i = call % distinct.len();
        &inputs[k][i * per..(i + 1) * per]
    };
    for (k, m) in all.iter().enumerate() {
        for call in 0..options.warmup_calls {
            m.model.logits(sample(k, call))?;
        }
    }
    progress.stage("time batch-1 calls", calls as u64);
    let mut times: Vec<Vec<Duration>> = vec![Vec::with_capacity(calls); all.len()];
    for call in 0..calls {
        for (k, m) in all.iter().enumerate() {
            let input = sample(k, call);
            let start = Instant::now();
            let out = m.model.logits(input)?;
            times[k].push(start.elapsed());
            std::hint::black_box(out);
        }
        progress.advance(1);
    }
    let summary: Vec<Latency> = times
        .into_iter()
        .map(|mut t| {
            t.sort();
            let at = |q: f64| {
                let rank = ((q * t.len() as f64).ceil() as usize).clamp(1, t.len());
                t[rank - 1].as_secs_f64() * 1e6
            };
            Latency {
                calls: t.len(),
                median_us: at(0.5),
                p90_us: at(0.9),
            }
        })
        .collect();
    let text: Vec<String> = all
        .iter()
        .zip(&summary)
        .map(|(m, l)| format!("{} {:.0} us", m.name, l.median_us))
        .collect();
    progress.finish(&format!("median batch-1 latency: {}", text.join(", ")));
    Ok(summary)
}
