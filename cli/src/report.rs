//! `student eval MODEL --teacher T [--compare [NAME=]MODEL]... --report DIR`: models
//! measured against their teacher, written as a report with plots.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use student_distill::{
    CompareOptions, Comparison, ModelFigures, NamedModel, compare_models, prepare_report_dir,
    write_comparison_report,
};
use student_runtime::{OpenOptions, StudentModel};

use crate::commands::load_data;
use crate::progress::Bars;

/// `eval`'s arguments when it writes a report (or was asked to compare).
pub struct Args<'a> {
    pub model: &'a Path,
    pub data: &'a str,
    pub teacher: Option<&'a Path>,
    pub threshold: Option<f32>,
    pub json: bool,
    pub limit: Option<usize>,
    pub compare: &'a [String],
    pub report: Option<&'a Path>,
}

pub fn eval_report(args: &Args) -> Result<()> {
    let Some(dir) = args.report else {
        bail!("--compare needs --report DIR: compared models are measured into a report");
    };
    let Some(teacher_path) = args.teacher else {
        bail!("--report needs --teacher MODEL: every model is measured against the teacher");
    };
    if args.threshold.is_some() {
        bail!(
            "--threshold does not apply with --report: the report uses each model's card \
             threshold"
        );
    }
    // Every name is checked before any work, and the folder before the long measurement.
    let mut specs = vec![(stem(args.model)?, args.model.to_path_buf())];
    for spec in args.compare {
        specs.push(parse_compare(spec)?);
    }
    prepare_report_dir(dir)?;

    let options = OpenOptions { batch: 256 };
    let teacher = StudentModel::open_with(teacher_path, &options)?;
    let models: Vec<StudentModel> = specs
        .iter()
        .map(|(_, path)| StudentModel::open_with(path, &options))
        .collect::<Result<_, _>>()?;
    let named: Vec<NamedModel<'_>> = specs
        .iter()
        .zip(&models)
        .map(|((name, _), model)| NamedModel { name, model })
        .collect();
    let data = load_data(args.data, args.limit)?;
    let mut bars = Bars::default();
    let comparison = compare_models(
        &teacher,
        &named,
        &data,
        &CompareOptions::default(),
        &mut bars,
    )?;
    let files = write_comparison_report(&comparison, dir)?;
    if args.json {
        writeln!(
            std::io::stdout().lock(),
            "{}",
            serde_json::to_string(&comparison)?
        )?;
        return Ok(());
    }
    print_summary(&comparison, &files)
}

/// `NAME=MODEL` or `MODEL` (named by its file stem). Text before the first `=` is a name
/// only when it holds no path separator, so a path with `=` in a folder name still works.
fn parse_compare(spec: &str) -> Result<(String, PathBuf)> {
    match spec.split_once('=') {
        Some((name, path)) if !name.contains(['/', std::path::MAIN_SEPARATOR]) => {
            if name.trim().is_empty() || path.is_empty() {
                bail!("--compare `{spec}`: expected NAME=MODEL or MODEL, with neither part empty");
            }
            Ok((name.to_string(), PathBuf::from(path)))
        }
        _ => {
            let path = PathBuf::from(spec);
            Ok((stem(&path)?, path))
        }
    }
}

fn stem(path: &Path) -> Result<String> {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .filter(|s| !s.is_empty())
        .with_context(|| format!("{}: no file name to name the model by", path.display()))
}

fn print_summary(c: &Comparison, files: &[PathBuf]) -> Result<()> {
    let mut out = std::io::stdout().lock();
    let pct = |v: f64| format!("{:.2}%", v * 100.0);
    writeln!(out, "data      {} ({} images)", c.data, c.samples)?;
    writeln!(
        out,
        "{:<14} {:>10} {:>9} {:>9} {:>8} {:>7} {:>18} {:>14}",
        "model", "params", "accuracy", "agreement", "KL", "ECE", "cascade (escal.)", "p50 / p90 us"
    )?;
    let row = |m: &ModelFigures| {
        let cascade = m.cascade.as_ref().map_or("-".to_string(), |k| {
            format!(
                "{} ({})",
                pct(k.cascade_accuracy),
                format_args!("{:.1}%", k.escalation_rate * 100.0)
            )
        });
        format!(
            "{:<14} {:>10} {:>9} {:>9} {:>8.4} {:>7} {:>18} {:>14}",
            m.name,
            m.params,
            pct(m.accuracy),
            pct(m.agreement),
            m.kl_from_teacher,
            pct(m.ece),
            cascade,
            format!("{:.0} / {:.0}", m.latency.median_us, m.latency.p90_us)
        )
    };
    for m in std::iter::once(&c.teacher).chain(&c.models) {
        writeln!(out, "{}", row(m))?;
    }
    for m in &c.models {
        if !m.worst_classes.is_empty() {
            let names: Vec<&str> = m.worst_classes.iter().map(|k| k.class.as_str()).collect();
            writeln!(
                out,
                "{}: loses most to the teacher on {}",
                m.name,
                names.join(", ")
            )?;
        }
    }
    for f in files {
        writeln!(out, "wrote {}", f.display())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare_specs() {
        let (name, path) = parse_compare("int8=models/x/student-int8.onnx").unwrap();
        assert_eq!(
            (name.as_str(), path),
            ("int8", "models/x/student-int8.onnx".into())
        );
        let (name, _) = parse_compare("models/x/baseline.onnx").unwrap();
        assert_eq!(name, "baseline");
        let (name, path) = parse_compare("runs/a=b/model.onnx").unwrap();
        assert_eq!(
            (name.as_str(), path),
            ("model", "runs/a=b/model.onnx".into())
        );
        assert!(parse_compare("=model.onnx").is_err());
        assert!(parse_compare("name=").is_err());
    }
}
