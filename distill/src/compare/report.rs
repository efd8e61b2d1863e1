//! A [`Comparison`] written into a folder: `report.md` (tables and plot links),
//! `report.json` and the SVG plots.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::compare::{Comparison, ModelFigures};
use crate::error::Error;
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

/// Creates `dir` (and its parents) and checks that a file can be written in it, so that a
/// long comparison does not end on a folder it cannot write.
///
/// # Errors
/// [`Error::Io`] naming the folder when it cannot be created or written.
pub fn prepare_report_dir(dir: &Path) -> Result<(), Error> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        action: "cannot create the report folder",
        path: dir.to_path_buf(),
        source,
    })?;
    let probe = dir.join(".student-write-check");
    std::fs::write(&probe, b"").map_err(|source| Error::Io {
        action: "cannot write in the report folder",
        path: dir.to_path_buf(),
        source,
    })?;
    // The probe has done its job; a leftover empty file would be harmless.
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// Writes `comparison` into `dir` (created if missing): `report.md`, `report.json` and
/// the four plots. Returns the files written. Existing files of the same names are
/// replaced.
///
/// # Errors
/// [`Error::Io`] when the folder or a file cannot be written; [`Error::Plot`] when a plot
/// cannot be drawn from the figures (for example, a value that is not finite).
pub fn write_comparison_report(comparison: &Comparison, dir: &Path) -> Result<Vec<PathBuf>, Error> {
    prepare_report_dir(dir)?;
    let c = comparison;
    let mut files = Vec::new();
    let on = format!("{} ({} images)", c.data, grouped(c.samples as u64));

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

    let path = dir.join("report.json");
    let json = serde_json::to_string_pretty(c)
        .map_err(|e| Error::Data(format!("cannot serialize the comparison: {e}")))?;
    write(&path, json)?;
    files.push(path);

    let path = dir.join("report.md");
    write(&path, markdown(c))?;
    files.push(path);
    Ok(files)
}

/// The teacher's row, then the compared models.
fn everyone(c: &Comparison) -> impl Iterator<Item = &ModelFigures> {
    std::iter::once(&c.teacher).chain(&c.models)
}

fn write(path: &Path, text: String) -> Result<(), Error> {
    std::fs::write(path, text).map_err(|source| Error::Io {
        action: "cannot write",
        path: path.to_path_buf(),
        source,
    })
}

fn pct(v: f64) -> String {
    format!("{:.2}%", v * 100.0)
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
         {} images. Every figure comes from running the ONNX files through the runtime, as an \
         app runs them. Teacher: `{}`.\n\n",
        c.data,
        grouped(c.samples as u64),
        t.file
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
    for (i, class) in c.classes.iter().enumerate() {
        let teacher = t.per_class.get(i).map_or(f64::NAN, |k| k.accuracy);
        let _ = write!(md, "\n| {class} | {} |", pct(teacher));
        for m in &c.models {
            if let Some(k) = m.per_class.get(i) {
                let _ = write!(md, " {} | {} |", pct(k.accuracy), points(k.delta));
            }
        }
    }
    let _ = write!(
        md,
        "\n\n![accuracy per class]({PER_CLASS_SVG})\n\n\
         ## Bias audit\n\n\
         Classes where a model loses more accuracy to the teacher than its mean loss per \
         class, the largest loss first.\n\n"
    );
    for m in &c.models {
        let worst: Vec<String> = m
            .worst_classes
            .iter()
            .map(|k| format!("{} ({} points)", k.class, points(k.delta)))
            .collect();
        let _ = writeln!(
            md,
            "- {}: mean loss {} points per class; {}",
            m.name,
            points(m.mean_class_drop).trim_start_matches('+'),
            if worst.is_empty() {
                "no class loses more than that.".to_string()
            } else {
                format!("worse on {}.", worst.join(", "))
            }
        );
    }
    if c.models.is_empty() {
        md.push_str("- no model compared.\n");
    }

    md.push_str("\n## Files\n\n| model | file | bytes | sha256 |\n| --- | --- | ---: | --- |\n");
    for m in everyone(c) {
        let _ = writeln!(
            md,
            "| {} | `{}` | {} | `{}` |",
            m.name,
            m.file,
            grouped(m.file_size),
            m.sha256
        );
    }
    md
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
