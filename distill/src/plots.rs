//! SVG plots for comparison reports, drawn with plotters from plain numbers.
//!
//! SVG leaves text to the viewer, so no font files are read and nothing here depends on
//! the machine's fonts. Series are coloured in order from one palette whose first colour is
//! black: pass the teacher first and it is drawn in black in every plot.

use std::path::Path;

use plotters::coord::Shift;
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use serde::Serialize;

use crate::error::Error;
use crate::output::replace_file;

/// A named line through `(x, y)` points.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Curve {
    /// The legend entry.
    pub name: String,
    /// The points, in drawing order.
    pub points: Vec<(f64, f64)>,
}

/// One confidence bin of a reliability diagram.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReliabilityBin {
    /// Lower edge of the bin (confidence), in `[0, 1]`.
    pub lower: f64,
    /// Upper edge of the bin (confidence), in `[0, 1]`.
    pub upper: f64,
    /// Predictions whose confidence fell in the bin.
    pub count: usize,
    /// Their mean confidence (0 for an empty bin).
    pub confidence: f64,
    /// The fraction of them that were right (0 for an empty bin).
    pub accuracy: f64,
}

/// A model's reliability diagram: its predictions binned by confidence.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reliability {
    /// The legend entry.
    pub name: String,
    /// Equal-width bins over `[0, 1]`, lowest first; empty bins are not drawn.
    pub bins: Vec<ReliabilityBin>,
}

/// A model escalating its least confident inputs to the teacher.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CascadeCurve {
    /// The legend entry.
    pub name: String,
    /// `(escalation rate, cascade accuracy)` points, both fractions in `[0, 1]`.
    pub points: Vec<(f64, f64)>,
    /// The threshold marked on the curve (the model card's).
    pub threshold: f32,
    /// `(escalation rate, cascade accuracy)` at that threshold.
    pub at_threshold: (f64, f64),
}

/// Values per class for one model, in label order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassValues {
    /// The legend entry.
    pub name: String,
    /// One value per class, fractions in `[0, 1]`; `None` where there is no value (a class
    /// without images), drawn as no bar.
    pub values: Vec<Option<f64>>,
}

/// Draws a reliability diagram: per model, accuracy against mean confidence in each
/// non-empty bin, with the diagonal of perfect calibration.
///
/// # Errors
/// [`Error::Plot`] when there is no model, a model has no non-empty bin, or a value is
/// not finite; [`Error::Io`] when the file cannot be written.
pub fn reliability_diagram(path: &Path, title: &str, models: &[Reliability]) -> Result<(), Error> {
    let lines: Vec<Curve> = models
        .iter()
        .map(|m| Curve {
            name: m.name.clone(),
            points: m
                .bins
                .iter()
                .filter(|b| b.count > 0)
                .map(|b| (b.confidence, b.accuracy))
                .collect(),
        })
        .collect();
    check_curves(path, &lines)?;
    render(path, (900, 700), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 22))
            .margin(20)
            .x_label_area_size(50)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..1f64, 0f64..1f64)?;
        let fmt = percent(0);
        chart
            .configure_mesh()
            .x_desc("confidence (mean over the bin; marker area: predictions in the bin)")
            .y_desc("accuracy")
            .x_labels(11)
            .y_labels(11)
            .x_label_formatter(&fmt)
            .y_label_formatter(&fmt)
            .light_line_style(LIGHT)
            .max_light_lines(1)
            .label_style(("sans-serif", 14))
            .axis_desc_style(("sans-serif", 16))
            .draw()?;
        chart
            .draw_series(DashedLineSeries::new(
                [(0.0, 0.0), (1.0, 1.0)],
                6,
                4,
                GREY.stroke_width(1),
            ))?
            .label("perfect calibration")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 24, y)], GREY.stroke_width(1)));
        // Marker area follows the bin's share of predictions: sparse bins are noisy.
        let most = models
            .iter()
            .flat_map(|m| m.bins.iter().map(|b| b.count))
            .max()
            .unwrap_or(1)
            .max(1);
        for (i, (line, model)) in lines.iter().zip(models).enumerate() {
            let sizes: Vec<u32> = model
                .bins
                .iter()
                .filter(|b| b.count > 0)
                .map(|b| 2 + (10.0 * (b.count as f64 / most as f64).sqrt()).round() as u32)
                .collect();
            draw_line(&mut chart, line, color(i), Some(&sizes))?;
        }
        legend(&mut chart, SeriesLabelPosition::UpperLeft)
    })
}

/// Draws risk-coverage curves: the error rate among accepted inputs (y) when a model
/// accepts only its most confident fraction (x, the coverage).
///
/// # Errors
/// As [`reliability_diagram`].
pub fn risk_coverage(path: &Path, title: &str, models: &[Curve]) -> Result<(), Error> {
    check_curves(path, models)?;
    let top = models
        .iter()
        .flat_map(|m| m.points.iter().map(|p| p.1))
        .fold(0.0f64, f64::max);
    let top = nice_ceiling(top * 1.1).max(0.01);
    render(path, (900, 650), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 22))
            .margin(20)
            .x_label_area_size(50)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..1f64, 0f64..top)?;
        let (x_fmt, y_fmt) = (percent(0), percent(1));
        chart
            .configure_mesh()
            .x_desc("coverage (fraction accepted, most confident first)")
            .y_desc("error rate among accepted")
            .x_labels(11)
            .x_label_formatter(&x_fmt)
            .y_label_formatter(&y_fmt)
            .light_line_style(LIGHT)
            .max_light_lines(1)
            .label_style(("sans-serif", 14))
            .axis_desc_style(("sans-serif", 16))
            .draw()?;
        for (i, m) in models.iter().enumerate() {
            draw_line(&mut chart, m, color(i), None)?;
        }
        legend(&mut chart, SeriesLabelPosition::UpperLeft)
    })
}

/// Draws cascade accuracy against escalation rate for each model escalating to the
/// teacher, the teacher's own accuracy as a horizontal line, and each model's card
/// threshold as a marked point. Curves take palette colours from the second on (the
/// first, black, is the teacher's line).
///
/// # Errors
/// As [`reliability_diagram`]; also when `teacher_accuracy` is not finite.
pub fn cascade_plot(
    path: &Path,
    title: &str,
    teacher_accuracy: f64,
    models: &[CascadeCurve],
) -> Result<(), Error> {
    let lines: Vec<Curve> = models
        .iter()
        .map(|m| Curve {
            name: m.name.clone(),
            points: m.points.clone(),
        })
        .collect();
    check_curves(path, &lines)?;
    let marks = models
        .iter()
        .flat_map(|m| [m.at_threshold.0, m.at_threshold.1]);
    check_finite(
        path,
        "teacher and threshold points",
        marks.chain([teacher_accuracy]),
    )?;
    // The interesting part is the knee at small escalation rates: show up to a little past
    // the furthest marked point rather than all the way to escalating everything.
    let furthest = models.iter().map(|m| m.at_threshold.0).fold(0.0, f64::max);
    let x_max = nice_ceiling((furthest * 2.5).max(0.3)).min(1.0);
    let shown: Vec<Curve> = lines
        .into_iter()
        .map(|mut c| {
            c.points.retain(|p| p.0 <= x_max + 1e-12);
            c
        })
        .collect();
    let ys = shown
        .iter()
        .flat_map(|c| c.points.iter().map(|p| p.1))
        .chain([teacher_accuracy]);
    let (lo, hi) = ys.fold((1.0f64, 0.0f64), |(lo, hi), y| (lo.min(y), hi.max(y)));
    let pad = ((hi - lo) * 0.15).max(0.002);
    let (y_lo, y_hi) = ((lo - pad).max(0.0), (hi + pad).min(1.0));
    render(path, (900, 650), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 22))
            .margin(20)
            .x_label_area_size(50)
            .y_label_area_size(80)
            .build_cartesian_2d(0f64..x_max, y_lo..y_hi)?;
        let (x_fmt, y_fmt) = (percent(0), percent(1));
        chart
            .configure_mesh()
            .x_desc("escalation rate (least confident inputs sent to the teacher)")
            .y_desc("cascade accuracy")
            .x_label_formatter(&x_fmt)
            .y_label_formatter(&y_fmt)
            .light_line_style(LIGHT)
            .max_light_lines(1)
            .label_style(("sans-serif", 14))
            .axis_desc_style(("sans-serif", 16))
            .draw()?;
        let teacher = color(0);
        chart
            .draw_series(DashedLineSeries::new(
                [(0.0, teacher_accuracy), (x_max, teacher_accuracy)],
                8,
                5,
                teacher.stroke_width(2),
            ))?
            .label(format!("teacher alone ({:.2}%)", teacher_accuracy * 100.0))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 24, y)], teacher.stroke_width(2)));
        for (i, (line, model)) in shown.iter().zip(models).enumerate() {
            let c = color(i + 1);
            let (ex, acc) = model.at_threshold;
            // The legend carries the numbers: notes beside close points would overlap.
            let named = Curve {
                name: format!(
                    "{}: card threshold {:.3} (dot): {:.1}% escalated, {:.2}%",
                    line.name,
                    model.threshold,
                    ex * 100.0,
                    acc * 100.0
                ),
                points: line.points.clone(),
            };
            draw_line(&mut chart, &named, c, None)?;
            chart.draw_series([Circle::new((ex, acc), 7, c.filled())])?;
        }
        legend(&mut chart, SeriesLabelPosition::LowerRight)
    })
}

/// Draws per-class values as grouped bars, one group per class (named on the axis), one
/// bar per series; a missing value draws no bar. The value axis starts below the smallest
/// value, at a multiple of 10%, so that gaps of a few points stay visible, and ends at
/// 100%; the axis title says where it starts. The legend sits in the space above.
///
/// # Errors
/// [`Error::Plot`] when there is no series or no class, a series does not hold one value
/// per class, or a value is not finite; [`Error::Io`] when the file cannot be written.
pub fn per_class_accuracy(
    path: &Path,
    title: &str,
    classes: &[String],
    series: &[ClassValues],
) -> Result<(), Error> {
    let plot_error = |reason: String| Error::Plot {
        path: path.to_path_buf(),
        reason,
    };
    if classes.is_empty() || series.is_empty() {
        return Err(plot_error(format!(
            "nothing to plot: {} classes, {} series",
            classes.len(),
            series.len()
        )));
    }
    for s in series {
        if s.values.len() != classes.len() {
            return Err(plot_error(format!(
                "series `{}` holds {} values for {} classes",
                s.name,
                s.values.len(),
                classes.len()
            )));
        }
        check_finite(path, &s.name, s.values.iter().flatten().copied())?;
    }
    let lowest = series
        .iter()
        .flat_map(|s| s.values.iter().flatten().copied())
        .fold(1.0f64, f64::min);
    let floor = (((lowest - 0.05) * 10.0).floor() / 10.0).clamp(0.0, 0.9);
    // Headroom above 100% holds the legend clear of the tallest bars; the axis, its ticks
    // and grid lines stop at 100%.
    let top = 1.0 + (1.0 - floor) * 0.3;
    let values = CappedAxis {
        range: (floor..top).into(),
        cap: 1.0,
    };
    let n = classes.len();
    let width = (110 * n as u32).clamp(600, 1600);
    render(path, (width, 650), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 22))
            .margin(20)
            .x_label_area_size(50)
            .y_label_area_size(80)
            .build_cartesian_2d(ClassAxis { classes: n }, values)?;
        let class_name = |v: &f64| {
            let i = v.round();
            if i >= 0.0 && (i as usize) < n {
                classes[i as usize].clone()
            } else {
                String::new()
            }
        };
        let y_fmt = percent(0);
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_desc("class")
            .y_desc(format!("accuracy (axis starts at {:.0}%)", floor * 100.0))
            .x_label_formatter(&class_name)
            .y_label_formatter(&y_fmt)
            .light_line_style(LIGHT)
            .max_light_lines(1)
            .label_style(("sans-serif", 14))
            .axis_desc_style(("sans-serif", 16))
            .draw()?;
        let group = 0.8;
        let bar = group / series.len() as f64;
        for (j, s) in series.iter().enumerate() {
            let c = color(j);
            let bars = s.values.iter().enumerate().filter_map(move |(class, &v)| {
                let x0 = class as f64 - group / 2.0 + j as f64 * bar;
                let v = v?;
                Some(Rectangle::new(
                    [(x0, floor), (x0 + bar * 0.9, v.max(floor))],
                    c.filled(),
                ))
            });
            chart
                .draw_series(bars)?
                .label(s.name.clone())
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], c.filled()));
        }
        legend(&mut chart, SeriesLabelPosition::UpperRight)
    })
}

/// A horizontal axis of `classes` groups centred on 0, 1, ..., with one key point (tick
/// and label) per class.
struct ClassAxis {
    classes: usize,
}

impl Ranged for ClassAxis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let span = self.classes as f64;
        let t = (value + 0.5) / span;
        limit.0 + (t * (limit.1 - limit.0) as f64).round() as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, _: Hint) -> Vec<f64> {
        (0..self.classes).map(|c| c as f64).collect()
    }

    fn range(&self) -> std::ops::Range<f64> {
        -0.5..self.classes as f64 - 0.5
    }
}

/// A value axis over a range whose axis line, ticks and grid lines stop at `cap`: the
/// range above it is room for the legend, not for values.
struct CappedAxis {
    range: RangedCoordf64,
    cap: f64,
}

impl Ranged for CappedAxis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        self.range.map(value, limit)
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        let mut points = self.range.key_points(hint);
        // A hair of tolerance keeps a key point computed as 0.9999999 for 100%.
        points.retain(|&v| v <= self.cap + 1e-9);
        points
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.range.range()
    }

    fn axis_pixel_range(&self, limit: (i32, i32)) -> std::ops::Range<i32> {
        let (a, b) = (
            self.map(&self.range.range().start, limit),
            self.map(&self.cap, limit),
        );
        a.min(b)..a.max(b)
    }
}

type DrawResult = Result<(), Box<dyn std::error::Error>>;
type Chart<'a, 'b, X, Y = RangedCoordf64> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<X, Y>>;

const LIGHT: RGBColor = RGBColor(232, 232, 232);
const GREY: RGBColor = RGBColor(140, 140, 140);

/// Black for the teacher, then colours that stay apart for common colour blindness.
const PALETTE: [RGBColor; 8] = [
    RGBColor(0, 0, 0),
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(120, 120, 120),
];

fn color(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

/// Draws into an SVG held in memory, then writes it: drawing errors and file errors are
/// told apart.
fn render(
    path: &Path,
    size: (u32, u32),
    draw: impl FnOnce(&DrawingArea<SVGBackend<'_>, Shift>) -> DrawResult,
) -> Result<(), Error> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        let drawn = root
            .fill(&WHITE)
            .map_err(Into::into)
            .and_then(|()| draw(&root))
            .and_then(|()| root.present().map_err(Into::into));
        drawn.map_err(|e| Error::Plot {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    }
    replace_file(path, svg.as_bytes())
}

/// Draws `line` with a legend entry and, when `markers` gives a radius per point, a dot at
/// each point.
fn draw_line<'a, 'b: 'a, X>(
    chart: &mut Chart<'a, 'b, X>,
    line: &Curve,
    c: RGBColor,
    markers: Option<&[u32]>,
) -> DrawResult
where
    X: Ranged<ValueType = f64>,
{
    chart
        .draw_series(LineSeries::new(
            line.points.iter().copied(),
            c.stroke_width(2),
        ))?
        .label(line.name.clone())
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 24, y)], c.stroke_width(2)));
    if let Some(radii) = markers {
        let dots = line.points.iter().zip(radii);
        chart.draw_series(dots.map(|(&p, &r)| Circle::new(p, r, c.filled())))?;
    }
    Ok(())
}

fn legend<'a, 'b: 'a, X, Y>(
    chart: &mut Chart<'a, 'b, X, Y>,
    position: SeriesLabelPosition,
) -> DrawResult
where
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    chart
        .configure_series_labels()
        .position(position)
        .margin(12)
        .label_font(("sans-serif", 15))
        .background_style(WHITE.mix(0.9))
        .border_style(GREY)
        .draw()?;
    Ok(())
}

/// A label formatter for fractions shown as percentages with `decimals` digits.
fn percent(decimals: usize) -> impl Fn(&f64) -> String {
    move |v| format!("{:.*}%", decimals, v * 100.0)
}

/// The smallest of 1, 2 or 5 times a power of ten that is at least `v` (for `v > 0`).
fn nice_ceiling(v: f64) -> f64 {
    if v.is_nan() || v <= 0.0 || v.is_infinite() {
        return 1.0;
    }
    let base = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * base)
        .find(|&c| c >= v * (1.0 - 1e-12))
        .unwrap_or(10.0 * base)
}

fn check_curves(path: &Path, curves: &[Curve]) -> Result<(), Error> {
    if curves.is_empty() {
        return Err(Error::Plot {
            path: path.to_path_buf(),
            reason: "nothing to plot: no series".to_string(),
        });
    }
    for c in curves {
        if c.points.is_empty() {
            return Err(Error::Plot {
                path: path.to_path_buf(),
                reason: format!("series `{}` has no points", c.name),
            });
        }
        check_finite(path, &c.name, c.points.iter().flat_map(|p| [p.0, p.1]))?;
    }
    Ok(())
}

fn check_finite(path: &Path, what: &str, values: impl Iterator<Item = f64>) -> Result<(), Error> {
    for v in values {
        if !v.is_finite() {
            return Err(Error::Plot {
                path: path.to_path_buf(),
                reason: format!("{what} holds the value {v}, expected finite numbers"),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh folder for one test, removed by the test when it passes.
    fn scratch(test: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("student-plots-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn curve(name: &str, points: &[(f64, f64)]) -> Curve {
        Curve {
            name: name.into(),
            points: points.to_vec(),
        }
    }

    #[test]
    fn each_plot_writes_an_svg_with_its_title_and_legend() {
        let dir = scratch("each");
        let path = dir.join("risk.svg");
        let curves = [
            curve("teacher", &[(0.1, 0.0), (0.5, 0.01), (1.0, 0.07)]),
            curve("student", &[(0.1, 0.0), (0.5, 0.02), (1.0, 0.08)]),
        ];
        risk_coverage(&path, "Risk and coverage", &curves).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..80.min(svg.len())]);
        for text in ["Risk and coverage", "teacher", "student", "coverage"] {
            assert!(svg.contains(text), "`{text}` missing");
        }

        let path = dir.join("reliability.svg");
        let bin = |lower: f64, count, confidence, accuracy| ReliabilityBin {
            lower,
            upper: lower + 0.5,
            count,
            confidence,
            accuracy,
        };
        let model = Reliability {
            name: "student".into(),
            bins: vec![bin(0.0, 0, 0.0, 0.0), bin(0.5, 10, 0.8, 0.7)],
        };
        reliability_diagram(&path, "Reliability", &[model]).unwrap();
        assert!(
            std::fs::read_to_string(&path)
                .unwrap()
                .contains("perfect calibration")
        );

        let path = dir.join("cascade.svg");
        let cascade = CascadeCurve {
            name: "student".into(),
            points: vec![(0.0, 0.91), (0.1, 0.924), (0.5, 0.925), (1.0, 0.925)],
            threshold: 0.7,
            at_threshold: (0.1, 0.924),
        };
        cascade_plot(&path, "Cascade", 0.925, &[cascade]).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.contains("teacher alone (92.50%)") && svg.contains("threshold 0.700"));

        let path = dir.join("classes.svg");
        let classes = vec!["T-shirt/top".to_string(), "Trouser".to_string()];
        let series = [
            ClassValues {
                name: "teacher".into(),
                values: vec![Some(0.85), Some(0.99)],
            },
            ClassValues {
                name: "student".into(),
                values: vec![Some(0.8), Some(0.98)],
            },
        ];
        per_class_accuracy(&path, "Per class", &classes, &series).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.contains("T-shirt/top") && svg.contains("Trouser"));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn bad_data_is_an_error_naming_the_file() {
        let dir = scratch("bad");
        let path = dir.join("bad.svg");
        let err = risk_coverage(&path, "t", &[curve("m", &[(0.5, f64::NAN)])]).unwrap_err();
        assert!(err.to_string().contains("bad.svg") && err.to_string().contains("NaN"));
        assert!(risk_coverage(&path, "t", &[]).is_err());
        assert!(risk_coverage(&path, "t", &[curve("m", &[])]).is_err());
        let short = ClassValues {
            name: "m".into(),
            values: vec![Some(0.5)],
        };
        let err = per_class_accuracy(&path, "t", &["a".into(), "b".into()], &[short]);
        assert!(
            err.unwrap_err()
                .to_string()
                .contains("1 values for 2 classes")
        );
        assert!(!path.exists(), "nothing is written from bad data");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn an_unwritable_path_is_an_io_error() {
        let dir = scratch("unwritable");
        let file = dir.join("not-a-folder");
        std::fs::write(&file, b"x").unwrap();
        let err = risk_coverage(&file.join("x.svg"), "t", &[curve("m", &[(0.5, 0.1)])]);
        assert!(matches!(err, Err(Error::Io { .. })));
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// The value of attribute `name` of every `tag` element of `svg` that has it.
    fn attribute(svg: &str, tag: &str, name: &str) -> Vec<String> {
        let key = format!(" {name}=\"");
        svg.split(&format!("<{tag} "))
            .skip(1)
            .filter_map(|element| {
                let element = format!(" {}", &element[..element.find('>')?]);
                let start = element.find(&key)? + key.len();
                let len = element[start..].find('"')?;
                Some(element[start..start + len].to_string())
            })
            .collect()
    }

    #[test]
    fn per_class_bars_stop_at_100_percent_and_skip_missing_values() {
        let dir = scratch("per-class");
        let path = dir.join("classes.svg");
        let classes = vec!["a".to_string(), "b".to_string(), "c".to_string()];
        let series = [
            ClassValues {
                name: "teacher".into(),
                values: vec![Some(0.9), None, Some(1.0)],
            },
            ClassValues {
                name: "student".into(),
                values: vec![Some(0.8), None, Some(0.95)],
            },
        ];
        per_class_accuracy(&path, "Per class", &classes, &series).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();

        // The 100% label's height: no grid line, tick or axis line rises above it.
        let label = svg.find(">\n100%\n<").expect("a 100% label");
        let element = &svg[svg[..label].rfind("<text").unwrap()..];
        let y_100: i32 = attribute(element, "text", "y")[0].parse().unwrap();
        let lines = attribute(&svg, "line", "y1");
        assert!(!lines.is_empty());
        for y in lines {
            assert!(
                y.parse::<i32>().unwrap() >= y_100,
                "grid line at {y}, 100% at {y_100}"
            );
        }
        for points in attribute(&svg, "polyline", "points") {
            for point in points.split_whitespace() {
                let y: i32 = point.split(',').nth(1).unwrap().parse().unwrap();
                assert!(y >= y_100, "axis or tick at {y}, 100% at {y_100}: {points}");
            }
        }
        // Bars: four drawn values and two legend swatches, nothing for class `b`.
        let bars = attribute(&svg, "rect", "fill")
            .into_iter()
            .filter(|fill| fill != "#FFFFFF" && fill != "none")
            .count();
        assert_eq!(bars, 4 + 2, "{svg}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn nice_ceilings() {
        assert_eq!(nice_ceiling(0.07), 0.1);
        assert_eq!(nice_ceiling(0.3), 0.5);
        assert_eq!(nice_ceiling(0.12), 0.2);
        assert_eq!(nice_ceiling(2.0), 2.0);
        assert_eq!(nice_ceiling(0.0), 1.0);
    }
}
