//! `student`: run, inspect, evaluate and make distilled student models.

#![forbid(unsafe_code)]

/// `println!` that returns write errors (a closed pipe) instead of panicking, and escapes
/// control characters (see [`terminal::printable`]).
macro_rules! out {
    ($($arg:tt)*) => {
        std::io::Write::write_fmt(
            &mut std::io::stdout().lock(),
            format_args!("{}\n", crate::terminal::printable(&format!($($arg)*))),
        )?
    };
}

mod bench;
mod commands;
mod compile;
mod inputs;
mod netpbm;
mod progress;
mod quantize;
mod report;
mod signing;
mod terminal;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use student_runtime::OpenOptions;

/// Distilled student models: run them with calibrated confidence and escalation, inspect
/// their model cards, evaluate them, and make them.
#[derive(Parser)]
#[command(name = "student", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the shipped Fashion-MNIST student on the shipped sample images, escalating
    /// low-confidence answers to the shipped teacher.
    Demo {
        /// Folder holding student.onnx, teacher.onnx and samples/ (default: the shipped one).
        #[arg(long)]
        models: Option<PathBuf>,
    },
    /// Classify images (PNG, PGM) or IDX image files with a model.
    Run {
        /// The student model (.onnx or compiled .student).
        model: PathBuf,
        /// Images to classify: PNG or PGM files, or IDX image files (every image in them).
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
        /// Escalate below this score instead of the model card's threshold; in [0, 1].
        #[arg(long)]
        threshold: Option<f32>,
        /// A larger model (typically the teacher) that answers escalated inputs.
        #[arg(long, value_name = "MODEL")]
        escalate_to: Option<PathBuf>,
        /// Print one JSON object per input instead of a table.
        #[arg(long)]
        json: bool,
        /// How many ranked classes to list per input in --json output (at least 1).
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..))]
        top_k: u64,
        /// Open only models (this one and --escalate-to) signed by this public key, with
        /// their signatures in MODEL.sig. Repeatable.
        #[arg(long, value_name = "KEY.pub")]
        trust: Vec<PathBuf>,
        #[command(flatten)]
        unchecked: Unchecked,
    },
    /// Show a model's card, input, parameters, size and operators.
    Inspect {
        /// The model (.onnx or compiled .student).
        model: PathBuf,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
        /// Open the model only if it is signed by this public key (MODEL.sig). Repeatable.
        #[arg(long, value_name = "KEY.pub")]
        trust: Vec<PathBuf>,
        #[command(flatten)]
        unchecked: Unchecked,
    },
    /// Make an Ed25519 key pair for signing models: NAME.key (secret) and NAME.pub.
    Keygen {
        /// The path and stem of the two key files.
        name: PathBuf,
    },
    /// Sign a model (.onnx or .student) with a secret key: writes MODEL.sig next to it.
    Sign {
        /// The model to sign; it must open as a model.
        model: PathBuf,
        /// The secret key made by `student keygen`.
        #[arg(long, value_name = "NAME.key")]
        key: PathBuf,
        /// Where to write the signature (default: MODEL.sig).
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Check that a model is signed by a trusted key, as an app opening it would.
    Verify {
        /// The model to check.
        model: PathBuf,
        /// A trusted public key (NAME.pub). Repeatable.
        #[arg(long, value_name = "KEY.pub", required = true)]
        trust: Vec<PathBuf>,
        /// The signature file (default: MODEL.sig).
        #[arg(long, value_name = "SIG")]
        signature: Option<PathBuf>,
    },
    /// Measure accuracy, escalation and cascade accuracy on a labelled data set.
    Eval {
        /// The student model (.onnx or compiled .student).
        model: PathBuf,
        /// fashion-mnist:test, fashion-mnist:validation or fashion-mnist:train.
        #[arg(long, default_value = "fashion-mnist:test")]
        data: String,
        /// The teacher, for cascade accuracy and agreement.
        #[arg(long)]
        teacher: Option<PathBuf>,
        /// Override the model card's threshold; in [0, 1].
        #[arg(long)]
        threshold: Option<f32>,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
        /// Use only the first N images of the data (quick checks).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        limit: Option<u64>,
        /// With --report: another model to measure against the teacher, as [NAME=]MODEL
        /// (NAME defaults to the file stem). Repeatable.
        #[arg(long, value_name = "[NAME=]MODEL")]
        compare: Vec<String>,
        /// Write a comparison with the teacher into DIR: report.md, report.json and SVG
        /// plots (calibration, risk-coverage, cascade, per class). Needs --teacher.
        #[arg(long, value_name = "DIR")]
        report: Option<PathBuf>,
        #[command(flatten)]
        unchecked: Unchecked,
    },
    /// Quantize a float student to int8 (QDQ) or fp16, re-fit its temperature and threshold
    /// on labelled held-out data, and write it with an updated model card.
    Quantize {
        /// The float student (.onnx).
        model: PathBuf,
        /// The quantized model to write.
        #[arg(short, long)]
        output: PathBuf,
        /// int8 (QDQ, per-channel weights) or fp16 (weights stored as fp16).
        #[arg(long, value_parser = ["int8", "fp16"])]
        precision: String,
        /// How int8 activation ranges are chosen: minmax, percentile or entropy (on the
        /// shipped student, minmax and percentile 99.99 both agree with fp32 on 99.8% of
        /// test images, entropy on 93.9%).
        #[arg(long, default_value = "minmax", value_parser = ["minmax", "percentile", "entropy"])]
        method: String,
        /// The percentile of activation magnitudes kept by --method percentile.
        #[arg(long, default_value_t = 99.99)]
        percentile: f64,
        /// Images used to calibrate int8 activation ranges (from the start of the data).
        #[arg(long, default_value_t = 1000)]
        samples: usize,
        /// Labelled held-out data: fashion-mnist:validation, or see --images.
        #[arg(long, default_value = "fashion-mnist:validation")]
        data: String,
        /// An IDX image file to use instead of --data (with --labels).
        #[arg(long, requires = "labels")]
        images: Option<PathBuf>,
        /// The IDX label file for --images.
        #[arg(long, requires = "images")]
        labels: Option<PathBuf>,
        /// The teacher, for targets that compare with it.
        #[arg(long)]
        teacher: Option<PathBuf>,
        /// The threshold target (default: the one in the card's recipe): accepted_accuracy=MIN,
        /// max_escalation=RATE, cascade_within_teacher=POINTS, accepted_at_least_teacher,
        /// risk_bound=ERROR,DELTA.
        #[arg(long)]
        target: Option<String>,
        /// The confidence score: max_probability, margin or entropy (default: the card's).
        #[arg(long, value_parser = ["max_probability", "margin", "entropy"])]
        score: Option<String>,
        /// Also measure the result on this data (for example fashion-mnist:test) and record
        /// the figures in its card.
        #[arg(long, value_name = "DATA")]
        test_data: Option<String>,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Compile an ONNX student into a `.student` file: packed weights used in place from a
    /// memory map, run by the runtime's own kernels (int8 in integer arithmetic).
    Compile {
        /// The ONNX student.
        model: PathBuf,
        /// The compiled file to write.
        #[arg(short, long)]
        output: PathBuf,
        /// The largest logit difference from the ONNX file (run through tract on 16 check
        /// inputs, each input's logits centred on their mean) to accept, as a fraction of
        /// the widest span of one input's logits; above it nothing is written.
        #[arg(long, default_value = "0.01", value_parser = compile::parse_tolerance)]
        tolerance: f32,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Measure a model: load time, open-to-first-result, latency percentiles, throughput
    /// and peak memory.
    Bench {
        /// The model (.student or .onnx).
        model: PathBuf,
        /// Samples per call.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=4096))]
        batch: u64,
        /// Threads calling the model at once.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=256))]
        threads: u64,
        /// How long to measure, in seconds (at most 3600).
        #[arg(long, default_value = "2", value_parser = bench::parse_seconds)]
        seconds: f64,
        /// Force a kernel level (portable, avx2, avx512, avx512vnni, neon, neon-dotprod,
        /// neon-fp16); default: STUDENT_KERNELS, else the best this CPU has.
        #[arg(long)]
        kernels: Option<String>,
        /// Memory-map the file instead of reading it (see docs/security.md).
        #[arg(long)]
        memory_map: bool,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        unchecked: Unchecked,
    },
    /// Train a teacher, distil a student, calibrate, export and evaluate, from a recipe.
    Distill {
        /// The recipe (TOML), for example models/fashion-mnist/recipe.toml.
        #[arg(long)]
        recipe: PathBuf,
    },
}

/// `--unchecked-operators`, for the commands that open models to run them.
#[derive(clap::Args, Clone, Copy)]
struct Unchecked {
    /// Run an ONNX file through tract even where it uses an operator or attribute value
    /// that has not been checked against onnxruntime (such files are refused by default);
    /// check its answers yourself. Compiled files ignore it.
    #[arg(long)]
    unchecked_operators: bool,
}

impl Unchecked {
    fn apply(self, options: OpenOptions) -> OpenOptions {
        OpenOptions {
            unchecked_operators: self.unchecked_operators,
            ..options
        }
    }
}

/// Warnings, except tract's ONNX reader's: it warned that any opset above 18 is untested
/// by tract, a second line before every message about such a file, valid or not.
/// `RUST_LOG=warn` shows it again.
const LOG_FILTER: &str = "warn,tract_onnx=error";

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(LOG_FILTER))
        // Warnings quote file names, graph value names and hook errors: escaped like
        // everything else the CLI prints.
        // A warning given again (`compile` reads its model three times) is printed once.
        .format(|buf, record| {
            use std::io::Write;
            static PRINTED: std::sync::LazyLock<
                std::sync::Mutex<std::collections::HashSet<String>>,
            > = std::sync::LazyLock::new(Default::default);
            let line = format!(
                "[{:<5}] {}",
                record.level(),
                terminal::printable_line(&record.args().to_string())
            );
            let mut printed = PRINTED.lock().unwrap_or_else(|e| e.into_inner());
            if !printed.insert(line.clone()) {
                return Ok(());
            }
            drop(printed);
            writeln!(buf, "{line}")
        })
        .init();
    let cli = Cli::parse();
    // The runtime turns panics inside the ONNX front end into errors; the default hook
    // would still print them. A panic anywhere becomes one `error:` line like any error.
    std::panic::set_hook(Box::new(|info| log::debug!("caught panic: {info}")));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(cli)))
        .unwrap_or_else(|payload| {
            let text = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "no message".to_string());
            Err(anyhow::anyhow!("internal error (a bug in student): {text}"))
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // The reader went away (`student run ... | head`): nothing more to say.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the error and its causes, outermost first.
            let full = format!("{e:#}");
            let message = terminal::shortened(&full, MAX_ERROR_CHARS);
            eprintln!("error: {}", terminal::printable_line(&message));
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Demo { models } => commands::demo(models),
        Command::Run {
            model,
            inputs,
            threshold,
            escalate_to,
            json,
            top_k,
            trust,
            unchecked,
        } => signing::open_options(&trust).and_then(|options| {
            commands::run(
                &model,
                &inputs,
                threshold,
                escalate_to.as_deref(),
                json,
                usize::try_from(top_k).unwrap_or(usize::MAX),
                &unchecked.apply(options),
            )
        }),
        Command::Inspect {
            model,
            json,
            trust,
            unchecked,
        } => signing::open_options(&trust)
            .and_then(|options| commands::inspect(&model, json, &unchecked.apply(options))),
        Command::Keygen { name } => signing::keygen(&name),
        Command::Sign { model, key, output } => signing::sign(&model, &key, output.as_deref()),
        Command::Verify {
            model,
            trust,
            signature,
        } => signing::verify(&model, &trust, signature.as_deref()),
        Command::Eval {
            model,
            data,
            teacher,
            threshold,
            json,
            limit,
            compare,
            report,
            unchecked,
        } => {
            let limit = limit.map(|n| usize::try_from(n).unwrap_or(usize::MAX));
            let open = unchecked.apply(OpenOptions::with_batch(256));
            if report.is_some() || !compare.is_empty() {
                report::eval_report(&report::Args {
                    model: &model,
                    data: &data,
                    teacher: teacher.as_deref(),
                    threshold,
                    json,
                    limit,
                    compare: &compare,
                    report: report.as_deref(),
                    open: &open,
                })
            } else {
                commands::eval(
                    &model,
                    &data,
                    teacher.as_deref(),
                    threshold,
                    json,
                    limit,
                    &open,
                )
            }
        }
        Command::Distill { recipe } => commands::distill(&recipe),
        Command::Compile {
            model,
            output,
            tolerance,
            json,
        } => compile::compile(&model, &output, tolerance, json),
        Command::Bench {
            model,
            batch,
            threads,
            seconds,
            kernels,
            memory_map,
            json,
            unchecked,
        } => bench::bench(&bench::Args {
            model: &model,
            batch: batch as usize,
            threads: threads as usize,
            seconds,
            kernels: kernels.as_deref(),
            memory_map,
            json,
            unchecked_operators: unchecked.unchecked_operators,
        }),
        Command::Quantize {
            model,
            output,
            precision,
            method,
            percentile,
            samples,
            data,
            images,
            labels,
            teacher,
            target,
            score,
            test_data,
            json,
        } => quantize::quantize(&quantize::Args {
            model: &model,
            output: &output,
            precision: &precision,
            method: &method,
            percentile,
            samples,
            data: &data,
            images: images.as_deref(),
            labels: labels.as_deref(),
            teacher: teacher.as_deref(),
            target: target.as_deref(),
            score: score.as_deref(),
            test_data: test_data.as_deref(),
            json,
        }),
    }
}

/// The most characters of an error line: a message may quote what a file declares (a
/// list of 4 million dimensions made a 12 MB line), and the reason comes last.
const MAX_ERROR_CHARS: usize = 2000;

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
