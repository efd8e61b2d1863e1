//! Progress bars on standard error for the training side's long work.

use indicatif::{ProgressBar, ProgressStyle};
use student_distill::Progress;

use crate::terminal::printable_line;

/// Draws one bar per stage; status and summaries are printed above the bars.
#[derive(Default)]
pub struct Bars {
    bar: Option<ProgressBar>,
}

impl Progress for Bars {
    fn stage(&mut self, name: &str, total: u64) {
        if let Some(old) = self.bar.take() {
            old.finish_and_clear();
        }
        let bar = ProgressBar::new(total);
        let style = ProgressStyle::with_template(
            "{prefix:>28} [{bar:30}] {pos}/{len} {elapsed_precise} eta {eta} {msg}",
        )
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        let name = printable_line(name);
        bar.set_prefix(name.to_string());
        if bar.is_hidden() {
            let plural = if total == 1 { "" } else { "s" };
            eprintln!("{name} ({total} step{plural})");
        }
        self.bar = Some(bar);
    }

    fn advance(&mut self, units: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(units);
        }
    }

    fn status(&mut self, text: &str) {
        let text = printable_line(text);
        // A hidden bar (standard error is not a terminal) drops println: print directly.
        match &self.bar {
            Some(bar) if !bar.is_hidden() => bar.println(format!("  {text}")),
            _ => eprintln!("  {text}"),
        }
    }

    fn finish(&mut self, summary: &str) {
        let summary = printable_line(summary);
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        eprintln!("done: {summary}");
    }
}
