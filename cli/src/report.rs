//! `student eval MODEL --teacher T [--compare [NAME=]MODEL]... --report DIR`: models
//! measured against their teacher, written as a report with plots.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use student_distill::{
    CompareOptions, Comparison, MAX_MODEL_NAME_LEN, MODEL_NAME_RULE, ModelFigures, NamedModel,
    REPORT_FILES, ReportFolder, compare_models, is_valid_model_name, prepare_report_dir, same_file,
    write_comparison_report,
};
use student_runtime::{OpenOptions, StudentModel};

use crate::commands::{images, load_data};
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
    /// How the models are opened.
    pub open: &'a OpenOptions,
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
    // Every name is checked before any work, the models and data are opened before the
    // report folder is made, and the folder is made before the long measurement.
    let mut specs = vec![(stem(args.model)?, args.model.to_path_buf())];
    for spec in args.compare {
        specs.push(parse_compare(spec)?);
    }
    // The report replaces its files in DIR: a model among them would be lost.
    let inputs = specs.iter().map(|(_, path)| path.as_path());
    for input in inputs.chain([teacher_path]) {
        if let Some(name) = REPORT_FILES
            .iter()
            .find(|name| same_file(input, &dir.join(name)))
        {
            bail!(
                "--report {}: its {name} is the model {}, which the report would replace; \
                 choose another report folder or move the model",
                dir.display(),
                input.display()
            );
        }
    }
    let options = args.open;
    let teacher = StudentModel::open_with(teacher_path, options)?;
    let models: Vec<StudentModel> = specs
        .iter()
        .map(|(_, path)| StudentModel::open_with(path, options))
        .collect::<Result<_, _>>()?;
    let named: Vec<NamedModel<'_>> = specs
        .iter()
        .zip(&models)
        .map(|((name, _), model)| NamedModel { name, model })
        .collect();
    let data = load_data(args.data, args.limit)?;

    let folder = prepare_report_dir(dir)?;
    let written = compare_models(
        &teacher,
        &named,
        &data,
        &CompareOptions::default(),
        &mut Bars::default(),
    )
    .and_then(|comparison| {
        let files = write_comparison_report(&comparison, dir)?;
        Ok((comparison, files))
    });
    let (comparison, files) = match written {
        Ok(done) => done,
        Err(e) => {
            // A failed run leaves no empty folder of its own making behind; `remove_dir`
            // removes only an empty one.
            if folder == ReportFolder::Created {
                let _ = std::fs::remove_dir(dir);
            }
            return Err(e.into());
        }
    };
    if args.json {
        out!("{}", serde_json::to_string(&comparison)?);
        return Ok(());
    }
    print_summary(&comparison, &files)
}

/// `NAME=MODEL` or `MODEL` (named by its file stem). Text before the first `=` is always
/// the name, and must be a valid one: a model whose path holds `=` is given as NAME=MODEL.
fn parse_compare(spec: &str) -> Result<(String, PathBuf)> {
    let shown = spec.escape_debug();
    let Some((name, path)) = spec.split_once('=') else {
        let path = PathBuf::from(spec);
        return Ok((stem(&path)?, path));
    };
    if name.is_empty() || path.is_empty() {
        bail!("--compare `{shown}`: expected NAME=MODEL or MODEL, with neither part empty");
    }
    if !is_valid_model_name(name) {
        bail!(
            "--compare `{shown}`: `{}` before the first `=` is not a valid model name; \
             expected {MODEL_NAME_RULE} (a model whose path holds `=` is given as NAME=MODEL)",
            name.escape_debug()
        );
    }
    Ok((name.to_string(), PathBuf::from(path)))
}

/// The name of a model given without one: its file stem, with every character outside the
/// allowed set ([`MODEL_NAME_RULE`]) made `_` and cut to [`MAX_MODEL_NAME_LEN`].
fn stem(path: &Path) -> Result<String> {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .filter(|s| !s.is_empty())
        .with_context(|| format!("{}: no file name to name the model by", path.display()))?;
    let name: String = stem
        .chars()
        .map(|c| {
            if is_valid_model_name(c.encode_utf8(&mut [0; 4])) {
                c
            } else {
                '_'
            }
        })
        .take(MAX_MODEL_NAME_LEN)
        .collect();
    Ok(name)
}

fn print_summary(c: &Comparison, files: &[PathBuf]) -> Result<()> {
    let pct = |v: f64| format!("{:.2}%", v * 100.0);
    out!("data      {} ({})", c.data, images(c.samples));
    out!(
        "{:<14} {:>10} {:>9} {:>9} {:>8} {:>7} {:>18} {:>14}",
        "model",
        "params",
        "accuracy",
        "agreement",
        "KL",
        "ECE",
        "cascade (escal.)",
        "p50 / p90 us"
    );
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
        out!("{}", row(m));
    }
    for m in &c.models {
        if !m.worst_classes.is_empty() {
            let names: Vec<&str> = m.worst_classes.iter().map(|k| k.class.as_str()).collect();
            out!(
                "{}: loses most to the teacher on {}",
                m.name,
                names.join(", ")
            );
        }
    }
    for f in files {
        out!("wrote {}", f.display());
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
        // A path holding `=` is given with a name.
        let (name, path) = parse_compare("model=runs/a=b/model.onnx").unwrap();
        assert_eq!(
            (name.as_str(), path),
            ("model", "runs/a=b/model.onnx".into())
        );
        assert!(parse_compare("=model.onnx").is_err());
        assert!(parse_compare("name=").is_err());
    }

    #[test]
    fn compare_names_outside_the_safe_set_are_refused_by_name() {
        for (spec, name) in [
            ("a|b<script>=m.onnx", "a|b<script>"),
            ("x/y=m.onnx", "x/y"),
            ("runs/a=b/model.onnx", "runs/a"),
            ("two\nlines=m.onnx", "two\\nlines"),
        ] {
            let err = parse_compare(spec).unwrap_err().to_string();
            assert!(err.contains(&format!("`{name}`")), "{err}");
            assert!(err.contains(MODEL_NAME_RULE), "{err}");
            assert!(!err.contains('\n'), "one line: {err}");
        }
        let long = format!("{}=m.onnx", "n".repeat(MAX_MODEL_NAME_LEN + 1));
        assert!(parse_compare(&long).is_err());
    }

    #[test]
    fn a_file_stem_becomes_a_safe_name() {
        let (name, _) = parse_compare("runs/my model|v2.onnx").unwrap();
        assert_eq!(name, "my_model_v2");
        let (name, _) = parse_compare(&format!("{}.onnx", "é".repeat(80))).unwrap();
        assert_eq!(name, "_".repeat(MAX_MODEL_NAME_LEN));
        assert!(is_valid_model_name(&name));
    }
}
