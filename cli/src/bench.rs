//! `student bench`: load time, cold start, latency percentiles, throughput and peak memory
//! of one model, measured in this process.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use serde_json::json;
use student_runtime::{Isa, OpenOptions, StudentModel};

pub struct Args<'a> {
    pub model: &'a Path,
    pub batch: usize,
    pub threads: usize,
    pub seconds: f64,
    pub kernels: Option<&'a str>,
    pub memory_map: bool,
    pub json: bool,
    pub unchecked_operators: bool,
}

pub fn bench(args: &Args) -> Result<()> {
    if args.batch == 0 || args.threads == 0 {
        bail!("--batch and --threads must be at least 1");
    }
    if !(args.seconds > 0.0 && args.seconds <= 3600.0) {
        bail!("--seconds must be greater than 0 and at most 3600");
    }
    let kernels = match args.kernels {
        Some(name) => Some(Isa::from_name(name).ok_or_else(|| {
            let names = |levels: &[Isa]| {
                levels
                    .iter()
                    .map(|i| i.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            anyhow::anyhow!(
                "--kernels `{name}`: expected one of {} (this CPU has {})",
                names(&Isa::ALL),
                names(&Isa::available())
            )
        })?),
        None => None,
    };
    let options = OpenOptions {
        batch: args.batch,
        kernels,
        memory_map: args.memory_map,
        unchecked_operators: args.unchecked_operators,
        ..OpenOptions::default()
    };
    let rss_before = peak_rss_mb();
    let start = Instant::now();
    let model = StudentModel::open_with(args.model, &options)?;
    let load = start.elapsed();
    let per = model.input_spec().len();
    let input: Vec<f32> = (0..per * args.batch)
        .map(|i| ((i * 7919) % 1000) as f32 / 1000.0)
        .collect();
    model.logits_batch(&input)?;
    let first = start.elapsed();
    // Warm up, then time calls until the budget is spent, on every thread at once.
    let budget = Duration::from_secs_f64(args.seconds);
    let timed: Vec<Timed> = std::thread::scope(|scope| -> Result<Vec<Timed>> {
        let handles: Vec<_> = (0..args.threads)
            .map(|_| {
                let (model, input) = (&model, &input);
                scope.spawn(move || -> Result<Timed> {
                    // Up to 3 warm-up calls, within a tenth of the budget; then calls until
                    // the budget is spent, at least one (a slow call is not cut short, so a
                    // run lasts about --seconds or one call, whichever is longer).
                    let warm = Instant::now();
                    for _ in 0..3 {
                        model.logits_batch(input)?;
                        if warm.elapsed() >= budget / 10 {
                            break;
                        }
                    }
                    let begin = Instant::now();
                    let mut timed = Timed::default();
                    while timed.calls == 0 || begin.elapsed() < budget {
                        let t = Instant::now();
                        model.logits_batch(input)?;
                        timed.add(t.elapsed());
                    }
                    Ok(timed)
                })
            })
            .collect();
        let mut all = Vec::new();
        for h in handles {
            all.push(
                h.join()
                    .map_err(|_| anyhow::anyhow!("a benchmark thread panicked"))??,
            );
        }
        Ok(all)
    })?;
    let calls: usize = timed.iter().map(|t| t.calls).sum();
    let mut latencies: Vec<Duration> = timed.iter().flat_map(|t| t.kept.iter().copied()).collect();
    latencies.sort();
    let kept = latencies.len();
    let fastest = timed
        .iter()
        .filter_map(|t| t.fastest)
        .min()
        .unwrap_or_default();
    let pct = |p: f64| latencies[((kept - 1) as f64 * p).round() as usize].as_secs_f64() * 1e6;
    let busy: f64 = timed.iter().map(|t| t.busy.as_secs_f64()).sum::<f64>() / args.threads as f64;
    let throughput = (calls * args.batch) as f64 / busy;
    let peak = peak_rss_mb();
    if args.json {
        let out = json!({
            "model": args.model.display().to_string(),
            "file_bytes": model.file_size(),
            "kernel": model.kernels(),
            "memory_map": args.memory_map,
            "batch": args.batch,
            "threads": args.threads,
            "calls": calls,
            "load_ms": load.as_secs_f64() * 1e3,
            "first_result_ms": first.as_secs_f64() * 1e3,
            "p50_us": pct(0.5),
            "p90_us": pct(0.9),
            "p99_us": pct(0.99),
            "min_us": fastest.as_secs_f64() * 1e6,
            "throughput_per_s": throughput,
            "peak_rss_mb": peak,
            "peak_rss_before_open_mb": rss_before,
        });
        out!("{}", serde_json::to_string(&out)?);
    } else {
        out!(
            "model       {} ({} bytes), kernels {}",
            args.model.display(),
            model.file_size(),
            model.kernels()
        );
        out!(
            "load        {:.3} ms; open to first result {:.3} ms",
            load.as_secs_f64() * 1e3,
            first.as_secs_f64() * 1e3
        );
        out!(
            "latency     batch {} x {} thread(s), {calls} calls: p50 {:.1} us, p90 {:.1} us, p99 {:.1} us",
            args.batch,
            args.threads,
            pct(0.5),
            pct(0.9),
            pct(0.99)
        );
        out!("throughput  {throughput:.0} samples/s");
        match (peak, rss_before) {
            (Some(p), Some(b)) => out!("peak memory {p:.1} MB resident ({b:.1} MB before opening)"),
            _ => out!("peak memory not available on this system"),
        }
    }
    Ok(())
}

/// The most call times one thread keeps for percentiles: a long run of fast calls (an hour
/// at 100,000 calls a second) would otherwise keep gigabytes of them.
const MAX_KEPT: usize = 100_000;

/// One thread's calls: how many, their total time, and a uniform sample of their times
/// (every call until [`MAX_KEPT`], then reservoir sampling).
#[derive(Default)]
struct Timed {
    calls: usize,
    busy: Duration,
    fastest: Option<Duration>,
    kept: Vec<Duration>,
    state: u64,
}

impl Timed {
    fn add(&mut self, time: Duration) {
        self.calls += 1;
        self.busy += time;
        self.fastest = Some(self.fastest.map_or(time, |f| f.min(time)));
        if self.kept.len() < MAX_KEPT {
            self.kept.push(time);
            return;
        }
        // Keep this call with probability MAX_KEPT / calls, in place of a random one.
        self.state = self
            .state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let slot = ((self.state >> 33) as usize) % self.calls;
        if slot < MAX_KEPT {
            self.kept[slot] = time;
        }
    }
}

/// Parses `--seconds`: a duration in (0, 3600].
pub fn parse_seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(s) if s > 0.0 && s <= 3600.0 => Ok(s),
        _ => Err("expected a number of seconds greater than 0 and at most 3600".to_string()),
    }
}

/// The process's peak resident set in MB, from /proc (Linux and Android).
fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_run_keeps_a_bounded_uniform_sample_and_exact_totals() {
        let mut timed = Timed::default();
        let n = 250_000u64;
        for i in 1..=n {
            timed.add(Duration::from_micros(i));
        }
        assert_eq!(timed.calls, n as usize);
        assert_eq!(timed.kept.len(), MAX_KEPT);
        assert_eq!(timed.fastest, Some(Duration::from_micros(1)));
        assert_eq!(timed.busy, Duration::from_micros(n * (n + 1) / 2));
        // The sample's median stands for the whole run's (125,000 us) within 2%: a sample
        // that kept only the first calls would give 50,000.
        let mut kept = timed.kept.clone();
        kept.sort();
        let median = kept[MAX_KEPT / 2].as_micros() as f64;
        assert!((median / 125_000.0 - 1.0).abs() < 0.02, "median {median}");
    }
}
