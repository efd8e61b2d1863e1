//! Execution through tract: a typed, optimized plan with the batch size fixed at open.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use tract_onnx::pb;
use tract_onnx::prelude::*;

use crate::error::Error;
use crate::limits::{Check, Limit, elements};

/// A runnable plan for one batch size. Shared by reference between threads: tract's plan
/// keeps no per-run state, each `run` allocates its own.
pub(crate) struct Engine {
    plan: Arc<TypedRunnableModel>,
    batch: usize,
    /// Dimensions of one sample (the input shape without the batch axis).
    sample_dims: Vec<usize>,
    classes: usize,
}

impl Engine {
    /// Builds a plan for `proto` with the input fixed to `[batch, sample_dims...]`.
    ///
    /// tract evaluates constant parts of the graph while it plans; `check_onnx` has bounded
    /// those it can follow before this runs. Once planned, every value of the plan has a
    /// concrete shape, and each is checked against `max_tensor_bytes` here, so that no run
    /// allocates more than the limits allow.
    ///
    /// tract is not guaranteed to be panic-free on malformed graphs, so planning runs under
    /// `catch_unwind` and a panic becomes an [`Error::Plan`].
    pub(crate) fn plan(
        proto: &pb::ModelProto,
        batch: usize,
        sample_dims: &[usize],
        classes: usize,
        check: &Check<'_>,
    ) -> Result<Engine, Error> {
        let origin = check.origin;
        let plan_error = |source: Box<dyn std::error::Error + Send + Sync>| Error::Plan {
            origin: origin.to_string(),
            source,
        };
        let shape: Vec<usize> = std::iter::once(batch)
            .chain(sample_dims.iter().copied())
            .collect();
        let panicked = || plan_error("the ONNX front end panicked on this graph".into());
        let optimized = catch_unwind(AssertUnwindSafe(|| -> TractResult<TypedModel> {
            tract_onnx::onnx()
                .model_for_proto_model(proto)?
                .with_input_fact(0, f32::fact(&shape).into())?
                .into_optimized()
        }))
        .map_err(|_| panicked())?
        .map_err(|e| plan_error(e.into()))?;
        for node in optimized.nodes() {
            for outlet in &node.outputs {
                let fact = &outlet.fact;
                let bytes = match fact.shape.as_concrete() {
                    Some(dims) => elements(dims.iter().map(|&d| d as u64))
                        .and_then(|n| n.checked_mul(fact.datum_type.size_of() as u64)),
                    // With the input's shape fixed, a shape still unknown depends on the
                    // input's values (a Range up to a computed bound, say): nothing bounds
                    // what the first run would allocate.
                    None if check.limits.max_tensor_bytes != u64::MAX => {
                        return Err(Error::Unsupported {
                            origin: origin.to_string(),
                            reason: format!(
                                "value `{}` of the planned graph has shape {:?}, which depends \
                                 on the input's values, so its size cannot be bounded before \
                                 it runs (Limits::unlimited() opens such models)",
                                node.name, fact.shape
                            ),
                        });
                    }
                    None => Some(0),
                };
                check.within(Limit::Tensor, bytes, || {
                    format!(
                        "value `{}` of the planned graph at batch {batch}, shape {:?},",
                        node.name, fact.shape
                    )
                })?;
            }
        }
        let plan = catch_unwind(AssertUnwindSafe(|| optimized.into_runnable()))
            .map_err(|_| panicked())?
            .map_err(|e| plan_error(e.into()))?;
        log::debug!("planned {origin} for batch {batch}, input {shape:?}");
        Ok(Engine {
            plan,
            batch,
            sample_dims: sample_dims.to_vec(),
            classes,
        })
    }

    pub(crate) fn batch(&self) -> usize {
        self.batch
    }

    /// Runs exactly one batch: `input` holds `batch` samples, the result `batch * classes`
    /// logits.
    pub(crate) fn run(&self, input: &[f32]) -> Result<Vec<f32>, Error> {
        let run_error = |source: Box<dyn std::error::Error + Send + Sync>| Error::Run { source };
        let shape: Vec<usize> = std::iter::once(self.batch)
            .chain(self.sample_dims.iter().copied())
            .collect();
        let tensor = tract_ndarray::ArrayD::from_shape_vec(shape, input.to_vec())
            .map_err(|e| run_error(e.into()))?;
        let outputs = catch_unwind(AssertUnwindSafe(|| {
            self.plan.run(tvec!(Tensor::from(tensor).into_tvalue()))
        }))
        .map_err(|_| run_error("the execution engine panicked".into()))?
        .map_err(|e| run_error(e.into()))?;
        let logits = outputs
            .first()
            .ok_or_else(|| run_error("the model produced no output".into()))?
            .to_plain_array_view::<f32>()
            .map_err(|e| run_error(e.into()))?
            .iter()
            .copied()
            .collect::<Vec<f32>>();
        if logits.len() != self.batch * self.classes {
            return Err(run_error(
                format!(
                    "expected {} logits for batch {}, the model produced {}",
                    self.batch * self.classes,
                    self.batch,
                    logits.len()
                )
                .into(),
            ));
        }
        Ok(logits)
    }
}
