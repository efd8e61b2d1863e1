//! `student`: run, inspect, evaluate and make distilled student models.

#![forbid(unsafe_code)]

mod commands;
mod inputs;
mod progress;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
        /// The student model (.onnx).
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
    },
    /// Show a model's card, input, parameters, size and operators.
    Inspect {
        /// The model (.onnx).
        model: PathBuf,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Measure accuracy, escalation and cascade accuracy on a labelled data set.
    Eval {
        /// The student model (.onnx).
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
    },
    /// Train a teacher, distil a student, calibrate, export and evaluate, from a recipe.
    Distill {
        /// The recipe (TOML), for example models/fashion-mnist/recipe.toml.
        #[arg(long)]
        recipe: PathBuf,
    },
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .format_timestamp(None)
        .format_target(false)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo { models } => commands::demo(models),
        Command::Run {
            model,
            inputs,
            threshold,
            escalate_to,
            json,
            top_k,
        } => commands::run(
            &model,
            &inputs,
            threshold,
            escalate_to.as_deref(),
            json,
            usize::try_from(top_k).unwrap_or(usize::MAX),
        ),
        Command::Inspect { model, json } => commands::inspect(&model, json),
        Command::Eval {
            model,
            data,
            teacher,
            threshold,
            json,
        } => commands::eval(&model, &data, teacher.as_deref(), threshold, json),
        Command::Distill { recipe } => commands::distill(&recipe),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // The reader went away (`student run ... | head`): nothing more to say.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the error and its causes, outermost first.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
