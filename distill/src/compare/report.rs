//! A [`Comparison`] written into a folder: `report.md` (tables and plot links),
//! `report.json` and the SVG plots.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::compare::{Comparison, ModelFigures};
use crate::error::Error;
use crate::output::{check_replaceable, parent, replace_file, temporary_file};
use crate::plots::{
    ClassValues, cascade_plot, per_class_accuracy, reliability_diagram, risk_coverage,
};

/// The plots a report holds, by file name.
pub const RELIABILITY_SVG: &str = "reliability.svg";
/// Selective error rate against coverage.
pub const RISK_COVERAGE_SVG: &str = "risk-coverage.svg";
/// Cascade accuracy against escalation rate.
pub const CASCADE_SVG: &str = "cascade.svg";
/// Per-class accuracy, teacher and models.
pub const PER_CLASS_SVG: &str = "per-class.svg";
/// The figures, as JSON and as a markdown report.
const REPORT_JSON: &str = "report.json";
const REPORT_MD: &str = "report.md";

/// Every file a report writes into its folder.
pub const REPORT_FILES: [&str; 6] = [
    RELIABILITY_SVG,
    RISK_COVERAGE_SVG,
    CASCADE_SVG,
    PER_CLASS_SVG,
    REPORT_JSON,
    REPORT_MD,
];

/// What [`prepare_report_dir`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportFolder {
    /// The folder was missing and has been created: a run that then fails should remove it
    /// again while it is empty.
    Created,
    /// The folder was there already.
    Existing,
}

/// Makes `dir` ready for a report: creates it when missing, and only it (its parent must
/// exist), then checks that a file can be created in it, so that a long comparison does
/// not end on a folder it cannot write, nor half-way through the report on a link or a
/// folder at one of its files' names.
///
/// # Errors
/// [`Error::Output`] when the parent of a missing `dir` is missing or not a folder, `dir`
/// is not a folder, or something other than a regular file is at a report file's name;
/// [`Error::Io`] naming the folder when it cannot be created or written.
pub fn prepare_report_dir(dir: &Path) -> Result<ReportFolder, Error> {
    use std::io::ErrorKind;
    let refuse = |reason: String| Error::Output {
        path: dir.to_path_buf(),
        reason,
    };
    let io = |action: &'static str| {
        move |source| Error::Io {
            action,
            path: dir.to_path_buf(),
            source,
        }
    };
    let found = match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => ReportFolder::Existing,
        Ok(_) => return Err(refuse("it is there and is not a folder".to_string())),
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
            let parent = parent(dir);
            if !parent.is_dir() {
                let state = if parent.exists() {
                    "is not a folder"
                } else {
                    "does not exist"
                };
                return Err(refuse(format!(
                    "its parent {} {state}; make the parent first (only the report folder \
                     itself is created)",
                    parent.display()
                )));
            }
            std::fs::create_dir(dir).map_err(io("cannot create the report folder"))?;
            ReportFolder::Created
        }
        Err(source) => return Err(io("cannot open the report folder")(source)),
    };
    // A fresh file, removed on drop: nothing at a fixed name is followed or left behind.
    if let Err(source) = temporary_file(dir) {
        if found == ReportFolder::Created {
            let _ = std::fs::remove_dir(dir);
        }
        return Err(io("cannot write in the report folder")(source));
    }
    // Something other than a regular file at a report file's name (a link, a folder)
    // would stop the writing half-way, after the measurement.
    for name in REPORT_FILES {
        check_replaceable(&dir.join(name))?;
    }
    Ok(found)
}

/// Writes `comparison` into `dir` (created if missing, as by [`prepare_report_dir`]):
/// `report.md`, `report.json` and the four plots. Returns the files written. Each file is
/// written to a temporary file in `dir` and renamed into place: an existing regular file
/// of the same name is replaced, anything else at that name (a symbolic link, a folder) is
/// refused.
///
/// # Errors
/// [`Error::Output`] when the folder cannot be made or something other than a regular
/// file is at a report file's name; [`Error::Io`] when the folder or a file cannot be
/// written; [`Error::Plot`] when a plot cannot be drawn from the figures (for example, a
/// value that is not finite).
pub fn write_comparison_report(comparison: &Comparison, dir: &Path) -> Result<Vec<PathBuf>, Error> {
    prepare_report_dir(dir)?;
    let c = comparison;
    let mut files = Vec::new();
    let on = format!("{} ({})", c.data, images(c.samples));

    let path = dir.join(RELIABILITY_SVG);
    reliability_diagram(
        &path,
        &format!("Reliability on {on}"),
        &c.curves.reliability,
    )?;
    files.push(path);

    let path = dir.join(RISK_COVERAGE_SVG);
    let mut curves = c.curves.risk_coverage.clone();
    for (curve, m) in curves.iter_mut().zip(everyone(c)) {
        curve.name = format!("{} (AURC {:.2}%)", curve.name, m.aurc * 100.0);
    }
    risk_coverage(&path, &format!("Risk and coverage on {on}"), &curves)?;
    files.push(path);

    if !c.curves.cascade.is_empty() {
        let path = dir.join(CASCADE_SVG);
        let title = format!("Escalating to the teacher on {on}");
        cascade_plot(&path, &title, c.teacher.accuracy, &c.curves.cascade)?;
        files.push(path);
    }

    let path = dir.join(PER_CLASS_SVG);
    let series: Vec<ClassValues> = everyone(c)
        .map(|m| ClassValues {
            name: m.name.clone(),
            values: m.per_class.iter().map(|k| k.accuracy).collect(),
        })
        .collect();
    let title = format!("Accuracy per class on {on}");
    per_class_accuracy(&path, &title, &c.classes, &series)?;
    files.push(path);

    let path = dir.join(REPORT_JSON);
    let json = serde_json::to_string_pretty(c)
        .map_err(|e| Error::Data(format!("cannot serialize the comparison: {e}")))?;
    write(&path, json)?;
    files.push(path);

    let path = dir.join(REPORT_MD);
    write(&path, markdown(c))?;
    files.push(path);
    Ok(files)
}

/// The teacher's row, then the compared models.
fn everyone(c: &Comparison) -> impl Iterator<Item = &ModelFigures> {
    std::iter::once(&c.teacher).chain(&c.models)
}

fn write(path: &Path, text: String) -> Result<(), Error> {
    replace_file(path, text.as_bytes())
}

fn pct(v: f64) -> String {
    format!("{:.2}%", v * 100.0)
}

/// An accuracy that a class without images does not have.
fn pct_or_na(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".to_string(), pct)
}

/// `1 image`, `10,000 images`.
fn images(n: usize) -> String {
    let plural = if n == 1 { "" } else { "s" };
    format!("{} image{plural}", grouped(n as u64))
}

/// Signed percentage points (a difference that rounds to zero shows as `+0.00`).
fn points(v: f64) -> String {
    let p = v * 100.0;
    format!("{:+.2}", if p.abs() < 0.005 { 0.0 } else { p })
}

/// `1234567` as `1,234,567`.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

fn size(bytes: u64) -> String {
    if bytes >= 1 << 20 {
        format!("{:.2} MiB", bytes as f64 / (1u64 << 20) as f64)
    } else {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    }
}

/// The report as Markdown. `write!` into a `String` cannot fail, so its results are
/// dropped.
fn markdown(c: &Comparison) -> String {
    let t = &c.teacher;
    let mut md = String::new();
    let _ = write!(
        md,
        "# Models against their teacher on {}\n\n\
         {}. Every figure comes from running the ONNX files through the runtime, as an \
         app runs them. Teacher: {}.\n\n",
        c.data,
        images(c.samples),
        code(&t.file)
    );

    md.push_str(
        "## Summary\n\n\
         | model | parameters | file size | accuracy | vs teacher | agreement | \
         KL(teacher, model) | ECE | AURC | latency p50 / p90 |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for m in everyone(c) {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {:.4} | {} | {} | {:.0} / {:.0} us |",
            m.name,
            grouped(m.params),
            size(m.file_size),
            pct(m.accuracy),
            points(m.accuracy - t.accuracy),
            pct(m.agreement),
            m.kl_from_teacher,
            pct(m.ece),
            pct(m.aurc),
            m.latency.median_us,
            m.latency.p90_us
        );
    }
    let _ = write!(
        md,
        "\n- vs teacher: accuracy difference in percentage points; agreement: same class as \
         the teacher.\n\
         - KL(teacher, model): mean divergence in nats of the model's calibrated \
         probabilities from the teacher's, each at its card's temperature.\n\
         - ECE: expected calibration error of the max probability, {} equal-width bins, at \
         the card's temperature. AURC: area under the risk-coverage curve (mean error rate \
         among accepted inputs over all coverages; lower is better).\n\
         - Latency: {}. A figure for this machine at this moment, not a benchmark.\n\n",
        c.curves.reliability.first().map_or(0, |r| r.bins.len()),
        c.latency_method
    );

    if !c.models.is_empty() {
        md.push_str(
            "## Cascade at each card's threshold\n\n\
             Inputs scoring below the threshold take the teacher's answer.\n\n\
             | model | score | threshold | escalated | accepted accuracy | cascade accuracy | \
             vs teacher |\n| --- | --- | ---: | ---: | ---: | ---: | ---: |\n",
        );
        for m in &c.models {
            if let Some(k) = &m.cascade {
                let _ = writeln!(
                    md,
                    "| {} | {} | {:.4} | {} | {} | {} | {} |",
                    m.name,
                    k.score,
                    k.threshold,
                    pct(k.escalation_rate),
                    k.accepted_accuracy.map_or("n/a".to_string(), pct),
                    pct(k.cascade_accuracy),
                    points(k.cascade_accuracy - t.accuracy)
                );
            }
        }
        let _ = write!(
            md,
            "\nTeacher alone: {}.\n\n![cascade accuracy against escalation rate]({CASCADE_SVG})\n\n",
            pct(t.accuracy)
        );
    }

    let _ = write!(
        md,
        "## Calibration and selective prediction\n\n\
         ![reliability diagram]({RELIABILITY_SVG})\n\n\
         ![risk-coverage curves]({RISK_COVERAGE_SVG})\n\n"
    );

    if !c.corruptions.is_empty() {
        md.push_str(
            "## Robustness: accuracy under corruption\n\n\
             Each corruption is applied to every image, deterministically (noise from a fixed \
             seed). In brackets: the drop from clean data, in points.\n\n| data |",
        );
        for m in everyone(c) {
            let _ = write!(md, " {} |", m.name);
        }
        md.push_str("\n| --- |");
        md.push_str(&" ---: |".repeat(c.models.len() + 1));
        md.push_str("\n| clean |");
        for m in everyone(c) {
            let _ = write!(md, " {} |", pct(m.accuracy));
        }
        for (i, name) in c.corruptions.iter().enumerate() {
            let _ = write!(md, "\n| {name} |");
            for m in everyone(c) {
                if let Some(r) = m.robustness.get(i) {
                    let _ = write!(md, " {} ({}) |", pct(r.accuracy), points(-r.drop));
                }
            }
        }
        md.push_str("\n\n");
    }

    md.push_str("## Per-class accuracy\n\n| class | teacher |");
    for m in &c.models {
        let _ = write!(md, " {} | vs teacher |", m.name);
    }
    md.push_str("\n| --- | ---: |");
    md.push_str(&" ---: | ---: |".repeat(c.models.len()));
    let mut without_images = 0;
    for (i, class) in c.classes.iter().enumerate() {
        let teacher = t.per_class.get(i).and_then(|k| k.accuracy);
        without_images += usize::from(teacher.is_none());
        let _ = write!(md, "\n| {} | {} |", cell(class), pct_or_na(teacher));
        for m in &c.models {
            if let Some(k) = m.per_class.get(i) {
                let delta = k.delta.map_or_else(|| "n/a".to_string(), points);
                let _ = write!(md, " {} | {delta} |", pct_or_na(k.accuracy));
            }
        }
    }
    if without_images > 0 {
        let _ = write!(
            md,
            "\n\nn/a: the data holds no image of the class. Such classes are left out of the \
             plot and of the bias audit."
        );
    }
    let _ = write!(
        md,
        "\n\n![accuracy per class]({PER_CLASS_SVG})\n\n\
         ## Bias audit\n\n\
         Per model: its mean change in accuracy per class against the teacher (model minus \
         teacher, in points), and the classes where it is below the teacher and loses more \
         than that mean, the largest loss first.\n\n"
    );
    for m in &c.models {
        let _ = writeln!(md, "- {}", bias_line(m));
    }
    if c.models.is_empty() {
        md.push_str("- no model compared.\n");
    }

    md.push_str("\n## Files\n\n| model | file | bytes | sha256 |\n| --- | --- | ---: | --- |\n");
    for m in everyone(c) {
        let _ = writeln!(
            md,
            "| {} | {} | {} | `{}` |",
            m.name,
            code(&m.file),
            grouped(m.file_size),
            m.sha256
        );
    }
    md
}

/// One model's bias audit in words: the mean change per class, then the classes named by
/// the audit. The wording holds whether the model loses or gains on average.
fn bias_line(m: &ModelFigures) -> String {
    // `mean_class_drop` is teacher minus model; the line speaks of the model's change.
    let change = points(-m.mean_class_drop);
    // Where the model gains (or holds) on average, the audit names every class below the
    // teacher; otherwise those losing more than the mean.
    let gains = m.mean_class_drop <= 0.0;
    let named: Vec<String> = m
        .worst_classes
        .iter()
        .map(|k| {
            let delta = k.delta.map_or_else(|| "n/a".to_string(), points);
            format!("{} ({delta} points)", cell(&k.class))
        })
        .collect();
    let verdict = match (named.is_empty(), gains) {
        (true, true) => "no class is below the teacher.".to_string(),
        (true, false) => "no class loses more than that.".to_string(),
        (false, true) => format!("below the teacher on {}.", named.join(", ")),
        (false, false) => format!("loses more than that on {}.", named.join(", ")),
    };
    format!(
        "{}: mean change {change} points per class; {verdict}",
        m.name
    )
}

/// Text from a model card or a file name made safe for a Markdown table cell: a `|` would
/// end the cell, a line break the row, and `<` could open raw HTML.
fn cell(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '|' | '\\' | '<' | '>' | '`' | '*' | '[' | ']' | '_' => {
                out.push('\\');
                out.push(ch);
            }
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// A path as inline code in a table cell. Inside code spans only `|` (which still ends a
/// table cell), backticks and line breaks need care.
fn code(text: &str) -> String {
    let safe: String = text
        .chars()
        .map(|c| if c.is_control() || c == '`' { ' ' } else { c })
        .collect();
    format!("`{}`", safe.replace('|', "\\|"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_as_people_write_them() {
        assert_eq!(grouped(824_458), "824,458");
        assert_eq!(grouped(52), "52");
        assert_eq!(grouped(1_000), "1,000");
        assert_eq!(size(3 * 1024 * 1024 + 512 * 1024), "3.50 MiB");
        assert_eq!(size(2048), "2.0 KiB");
        assert_eq!(points(-0.0125), "-1.25");
        assert_eq!(points(-1e-17), "+0.00");
        assert_eq!(images(1), "1 image");
        assert_eq!(images(10_000), "10,000 images");
    }

    #[test]
    fn text_from_outside_cannot_break_a_table() {
        assert_eq!(cell("a|b<script>\nc"), "a\\|b\\<script\\> c");
        assert_eq!(cell("T-shirt/top"), "T-shirt/top");
        assert_eq!(code("runs/a|b`c\n.onnx"), "`runs/a\\|b c .onnx`");
    }

    /// A compared model's figures with the given bias audit; the rest is filler.
    fn audited(mean_class_drop: f64, worst: &[(&str, f64)]) -> ModelFigures {
        let latency = crate::compare::Latency {
            calls: 1,
            median_us: 1.0,
            p90_us: 1.0,
        };
        ModelFigures {
            name: "student".into(),
            file: "student.onnx".into(),
            sha256: String::new(),
            file_size: 1,
            params: 1,
            accuracy: 0.9,
            agreement: 0.9,
            kl_from_teacher: 0.0,
            temperature: 1.0,
            ece: 0.0,
            aurc: 0.0,
            latency,
            per_class: Vec::new(),
            mean_class_drop,
            worst_classes: worst
                .iter()
                .map(|&(class, delta)| crate::compare::ClassFigures {
                    class: class.into(),
                    accuracy: Some(0.5),
                    teacher_accuracy: Some(0.5 - delta),
                    delta: Some(delta),
                })
                .collect(),
            robustness: Vec::new(),
            cascade: None,
        }
    }

    #[test]
    fn the_bias_audit_reads_right_whether_a_model_loses_or_gains() {
        let line = bias_line(&audited(0.02, &[("Shirt", -0.08)]));
        assert_eq!(
            line,
            "student: mean change -2.00 points per class; loses more than that on Shirt \
             (-8.00 points)."
        );
        let line = bias_line(&audited(0.02, &[]));
        assert!(line.ends_with("no class loses more than that."), "{line}");
        // Gaining on average: every class named is below the teacher, and said so.
        let line = bias_line(&audited(-0.0108, &[("T-shirt/top", -0.05)]));
        assert_eq!(
            line,
            "student: mean change +1.08 points per class; below the teacher on T-shirt/top \
             (-5.00 points)."
        );
        let line = bias_line(&audited(0.0, &[]));
        assert_eq!(
            line,
            "student: mean change +0.00 points per class; no class is below the teacher."
        );
    }

    #[test]
    fn only_the_report_folder_itself_is_created() {
        let base = std::env::temp_dir().join(format!("student-report-dir-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).unwrap();
        let deep = base.join("missing").join("report");
        let err = prepare_report_dir(&deep).unwrap_err();
        assert!(matches!(err, Error::Output { .. }), "{err}");
        assert!(err.to_string().contains("missing does not exist"), "{err}");
        assert!(!base.join("missing").exists());

        let dir = base.join("report");
        assert_eq!(prepare_report_dir(&dir).unwrap(), ReportFolder::Created);
        assert_eq!(prepare_report_dir(&dir).unwrap(), ReportFolder::Existing);
        // The write check leaves nothing behind.
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        std::fs::remove_dir_all(base).unwrap();
    }

    #[test]
    fn a_folder_under_a_file_is_refused_with_its_name() {
        let base = std::env::temp_dir().join(format!("student-report-{}", std::process::id()));
        std::fs::create_dir_all(&base).unwrap();
        let file = base.join("plain-file");
        std::fs::write(&file, b"x").unwrap();
        let err = prepare_report_dir(&file.join("report")).unwrap_err();
        assert!(err.to_string().contains("plain-file"), "{err}");
        std::fs::remove_dir_all(base).unwrap();
    }
}
