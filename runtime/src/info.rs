//! What the runtime knows of a model's graph, whichever format it came in.

/// The facts about a graph that the runtime validates and reports.
#[derive(Debug, Clone)]
pub(crate) struct GraphInfo {
    /// Input dimensions with the batch dimension fixed to 1.
    pub input_dims: Vec<usize>,
    /// Number of classes (the last output dimension).
    pub classes: usize,
    pub metadata: Vec<(String, String)>,
    pub params: u64,
    /// Operator type and how often it occurs, sorted by name.
    pub operators: Vec<(String, usize)>,
}
