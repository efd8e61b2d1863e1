//! What the runtime knows of a model's graph, whichever format it came in.

use crate::card::ModelCard;
use crate::error::Error;

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

impl GraphInfo {
    /// The model card in the graph's metadata, checked against its input and classes.
    pub(crate) fn card(&self, origin: &str) -> Result<ModelCard, Error> {
        ModelCard::from_metadata(
            self.metadata.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            self.classes,
            &self.input_dims,
            origin,
        )
    }
}
