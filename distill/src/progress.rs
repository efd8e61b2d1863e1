//! Progress reporting for long work, without printing from the library.

/// Receives progress from long-running work. The command line draws progress bars from
/// it; library users may log or ignore it ([`Silent`]).
pub trait Progress {
    /// A new stage begins with `total` units of work (0 when unknown).
    fn stage(&mut self, name: &str, total: u64);
    /// `units` more units of the current stage are done.
    fn advance(&mut self, units: u64);
    /// A one-line status for the current stage (for example, the last epoch's loss).
    fn status(&mut self, text: &str);
    /// The current stage is finished; `summary` says what it produced.
    fn finish(&mut self, summary: &str);
}

/// A [`Progress`] that discards everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct Silent;

impl Progress for Silent {
    fn stage(&mut self, _: &str, _: u64) {}
    fn advance(&mut self, _: u64) {}
    fn status(&mut self, _: &str) {}
    fn finish(&mut self, _: &str) {}
}
