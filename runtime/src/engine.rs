//! Execution through tract: a typed, optimized plan for one sample, made at open.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use tract_onnx::pb;
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::infer::Factoid;

use crate::error::Error;
use crate::limits::{Check, Limit, elements};
use crate::onnx_info::{attr_i, attr_ints, int64s};

/// A runnable plan for one sample: a batch runs sample by sample, so that a graph that reads
/// its batch size or mixes samples answers each as it would alone (`StudentModel::run`).
/// Shared by reference between threads: tract's plan keeps no per-run state, each `run`
/// allocates its own.
pub(crate) struct Engine {
    plan: Arc<TypedRunnableModel>,
    /// The input shape: a batch of 1, then the dimensions of one sample.
    shape: Vec<usize>,
    classes: usize,
}

impl Engine {
    /// Builds a plan for `proto` with the input fixed to `[1, sample_dims...]`.
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
        sample_dims: &[usize],
        classes: usize,
        check: &Check<'_>,
    ) -> Result<Engine, Error> {
        let origin = check.origin;
        let plan_error = |source: Box<dyn std::error::Error + Send + Sync>| Error::Plan {
            origin: origin.to_string(),
            source,
        };
        let shape: Vec<usize> = std::iter::once(1)
            .chain(sample_dims.iter().copied())
            .collect();
        let panicked = |stage: &str, payload: Box<dyn std::any::Any + Send>| {
            let what = panic_note(payload.as_ref());
            plan_error(
                format!("the ONNX front end panicked on this graph while {stage}{what}").into(),
            )
        };
        let typed = catch_unwind(AssertUnwindSafe(
            || -> TractResult<Result<TypedModel, Error>> {
                let mut model = tract_onnx::onnx()
                    .model_for_proto_model(proto)?
                    .with_input_fact(0, f32::fact(&shape).into())?;
                model.analyse(false)?;
                if let Err(reason) = check_axes(&model, proto) {
                    return Ok(Err(Error::Malformed {
                        origin: origin.to_string(),
                        reason,
                    }));
                }
                model.into_typed().map(Ok)
            },
        ))
        .map_err(|p| panicked("inferring its types and shapes", p))?
        .map_err(|e| plan_error(e.into()))??;
        let optimized = catch_unwind(AssertUnwindSafe(|| typed.into_optimized()))
            .map_err(|p| panicked("optimizing it", p))?
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
                        "value `{}` of the planned graph at batch 1, shape {:?},",
                        node.name, fact.shape
                    )
                })?;
            }
        }
        // The graph's output as planned must hold `classes` values per sample, as its
        // declaration says: otherwise the model would open and fail on every call.
        let output = optimized
            .output_outlets()
            .ok()
            .and_then(|o| o.first().copied())
            .and_then(|o| optimized.outlet_fact(o).ok())
            .and_then(|f| f.shape.as_concrete().map(|d| d.to_vec()));
        let values = output
            .as_ref()
            .map(|d| d.iter().try_fold(1usize, |a, &x| a.checked_mul(x)));
        if let Some(dims) = output.filter(|_| values != Some(Some(classes))) {
            return Err(Error::Malformed {
                origin: origin.to_string(),
                reason: format!(
                    "the graph's output is {dims:?} at batch 1, where its declaration \
                     promises {classes} values per sample"
                ),
            });
        }
        let plan = catch_unwind(AssertUnwindSafe(|| optimized.into_runnable()))
            .map_err(|p| panicked("making it runnable", p))?
            .map_err(|e| plan_error(e.into()))?;
        log::debug!("planned {origin} for one sample, input {shape:?}");
        Ok(Engine {
            plan,
            shape,
            classes,
        })
    }

    /// Runs one sample: `input` holds its values, the result its `classes` logits.
    pub(crate) fn run(&self, input: &[f32]) -> Result<Vec<f32>, Error> {
        let run_error = |source: Box<dyn std::error::Error + Send + Sync>| Error::Run { source };
        let tensor = tract_ndarray::ArrayD::from_shape_vec(self.shape.clone(), input.to_vec())
            .map_err(|e| run_error(e.into()))?;
        let outputs = catch_unwind(AssertUnwindSafe(|| {
            self.plan.run(tvec!(Tensor::from(tensor).into_tvalue()))
        }))
        .map_err(|payload| {
            let what = panic_note(payload.as_ref());
            run_error(format!("the execution engine panicked{what}").into())
        })?
        .map_err(|e| run_error(e.into()))?;
        let logits = outputs
            .first()
            .ok_or_else(|| run_error("the model produced no output".into()))?
            .to_plain_array_view::<f32>()
            .map_err(|e| run_error(e.into()))?
            .iter()
            .copied()
            .collect::<Vec<f32>>();
        if logits.len() != self.classes {
            return Err(run_error(
                format!(
                    "expected {} logits for batch 1, the model produced {}",
                    self.classes,
                    logits.len()
                )
                .into(),
            ));
        }
        Ok(logits)
    }
}

/// A caught tract panic's message for an error, ` (message)`, or nothing when it has none:
/// tract does not say which node it was on, so its message is what there is to go on.
fn panic_note(payload: &(dyn std::any::Any + Send)) -> String {
    match crate::error::panic_line(payload) {
        Some(line) => format!(" ({line})"),
        None => String::new(),
    }
}

/// Refuses axis attributes that tract accepts though ONNX does not, and then answers
/// with: a Softmax over axis 4 of a rank-4 value is the identity in tract, and a Split
/// whose sizes do not add up to the axis keeps only the slices it names. Such a model
/// would run and answer, wrongly. Checked on tract's analysed graph, where every value's
/// shape is known once the input's is.
fn check_axes(model: &InferenceModel, proto: &pb::ModelProto) -> Result<(), String> {
    let Some(graph) = &proto.graph else {
        return Ok(());
    };
    let opset = crate::onnx_info::opset_version(&proto.opset_import, "").unwrap_or(1);
    for node in &graph.node {
        let (default_axis, splits) = match node.op_type.as_str() {
            "Softmax" | "LogSoftmax" | "Hardmax" => (if opset < 13 { 1 } else { -1 }, false),
            "Split" => (0, true),
            _ => continue,
        };
        // tract names a node as the ONNX file does, or after its first output.
        let name = match (node.name.as_str(), node.output.first()) {
            ("", Some(output)) => output.as_str(),
            (name, _) => name,
        };
        let Some(dims) = model
            .node_by_name(name)
            .ok()
            .and_then(|n| n.inputs.first())
            .and_then(|&outlet| model.outlet_fact(outlet).ok())
            .and_then(|fact| fact.shape.concretize())
        else {
            continue;
        };
        let shown = crate::onnx_info::describe_node(node);
        let rank = dims.len() as i64;
        let axis = attr_i(node, "axis").unwrap_or(default_axis);
        if !(-rank..rank).contains(&axis) {
            return Err(format!(
                "{shown}: axis {axis} is outside its input's rank {rank} (expected {} to {})",
                -rank,
                rank - 1
            ));
        }
        let Some(length) = dims[axis.rem_euclid(rank) as usize].to_i64().ok() else {
            continue;
        };
        // The sizes: an attribute before opset 13, a constant input from 13 on.
        let sizes = splits.then(|| {
            attr_ints(node, "split").or_else(|| {
                let input = node.input.get(1).filter(|n| !n.is_empty())?;
                let t = graph.initializer.iter().find(|t| &t.name == input)?;
                int64s(t)
            })
        });
        if let Some(Some(sizes)) = sizes {
            let total = sizes.iter().try_fold(0i64, |a, &s| a.checked_add(s));
            if sizes.iter().any(|&s| s < 0) || total != Some(length) {
                return Err(format!(
                    "{shown}: split sizes {sizes:?} do not add up to the {length} elements of \
                     axis {axis}"
                ));
            }
        }
    }
    Ok(())
}
