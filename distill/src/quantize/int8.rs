//! The int8 rewrite: QuantizeLinear/DequantizeLinear pairs (QDQ) around activations,
//! per-output-channel symmetric int8 weights, int32 biases.
//!
//! The result is still a standard ONNX graph: onnxruntime fuses each DQ -> op -> Q pattern
//! into an integer kernel, and a runtime without integer kernels computes the same values
//! in float. Which tensors get a QDQ pair:
//!
//! - every float tensor read by an operator that has an integer form (convolution, dense,
//!   pooling, element-wise arithmetic, reshaping, activations), except graph outputs, so
//!   that the logits stay float;
//! - not the output of a Conv/Gemm/MatMul that feeds only a Relu or Clip: the activation's
//!   output is quantized instead, and the activation fuses into the integer kernel;
//! - tensors that only move values (max pooling, reshapes, transposes) reuse their input's
//!   scale and zero point, so they stay exact in integers;
//! - not a Softmax output: probabilities need more than 8 bits near 0.
//!
//! Activations are uint8 with a zero point; weights are int8 with zero point 0 and one
//! scale per output channel; a bias is int32 with scale `input scale x weight scale`.

use std::collections::HashMap;

use tract_onnx::pb;
use tract_onnx::pb::tensor_proto::DataType;

use super::observe::{Observed, RangeMethod};
use super::proto::{Editor, attr_f, attr_i, float_tensor, int_attr, int_tensor, node};
use crate::error::Error;

/// Operators with an integer form: a float tensor they read is worth quantizing.
const INTEGER_OPS: &[&str] = &[
    "Conv",
    "Gemm",
    "MatMul",
    "Add",
    "Mul",
    "Concat",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "GlobalMaxPool",
    "Flatten",
    "Reshape",
    "Transpose",
    "Squeeze",
    "Unsqueeze",
    "Relu",
    "Clip",
    "LeakyRelu",
    "Sigmoid",
    "Tanh",
    "HardSigmoid",
    "HardSwish",
    "Identity",
    "Dropout",
];

/// Operators whose output holds a subset of their input's values: they share its scale.
const VALUE_PRESERVING_OPS: &[&str] = &[
    "MaxPool",
    "GlobalMaxPool",
    "Flatten",
    "Reshape",
    "Transpose",
    "Squeeze",
    "Unsqueeze",
    "Identity",
    "Dropout",
];

/// What the rewrite did, for the model card and the command line.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Int8Summary {
    /// Weight tensors stored as per-channel int8.
    pub weights: usize,
    /// Bias tensors stored as int32.
    pub biases: usize,
    /// Activation tensors given a QDQ pair.
    pub activations: usize,
    /// Float tensors left float, with the reason (for example, graph outputs).
    pub left_float: Vec<String>,
}

/// The uint8 encoding of one activation tensor.
#[derive(Debug, Clone, Copy, PartialEq)]
struct ActivationParams {
    scale: f32,
    zero_point: u8,
}

impl ActivationParams {
    fn from_range(lo: f32, hi: f32) -> ActivationParams {
        let span = hi - lo;
        if span <= 0.0 || !span.is_finite() {
            return ActivationParams {
                scale: 1.0,
                zero_point: 0,
            };
        }
        let scale = span / 255.0;
        let zero_point = (-lo / scale).round().clamp(0.0, 255.0) as u8;
        ActivationParams { scale, zero_point }
    }
}

/// A weight input to quantize: which node, which input slot, along which axis.
struct WeightUse {
    node: usize,
    slot: usize,
    axis: usize,
}

/// Rewrites the graph in `editor` to QDQ int8 using the calibration `observed` ranges.
pub(crate) fn rewrite(
    editor: &mut Editor,
    observed: &HashMap<String, Observed>,
    method: RangeMethod,
) -> Result<Int8Summary, Error> {
    let input = editor.data_input()?;
    let consumers = editor.consumers();
    let nodes = editor.graph().node.clone();
    let mut summary = Int8Summary::default();

    // 1. Weights (and the bias each may carry), found by operator.
    let mut weights = Vec::new();
    let mut biases: Vec<(usize, usize, usize)> = Vec::new(); // (node, slot, weight index)
    // MatMul outputs whose Add with a constant bias is fused into them.
    let mut fused_bias_add: HashMap<usize, usize> = HashMap::new();
    for (i, n) in nodes.iter().enumerate() {
        let init_rank = |slot: usize| -> Option<usize> {
            let name = n.input.get(slot)?;
            let t = editor.initializer(name)?;
            (t.data_type == DataType::Float as i32).then_some(t.dims.len())
        };
        match n.op_type.as_str() {
            "Conv" if init_rank(1).is_some_and(|r| r >= 3) => {
                weights.push(WeightUse {
                    node: i,
                    slot: 1,
                    axis: 0,
                });
                if init_rank(2) == Some(1) {
                    biases.push((i, 2, weights.len() - 1));
                }
            }
            "Gemm" if init_rank(1) == Some(2) => {
                let trans_b = attr_i(n, "transB").unwrap_or(0) != 0;
                weights.push(WeightUse {
                    node: i,
                    slot: 1,
                    axis: if trans_b { 0 } else { 1 },
                });
                let unit = |a: &str| attr_f(n, a).unwrap_or(1.0) == 1.0;
                if init_rank(2) == Some(1) && unit("alpha") && unit("beta") {
                    biases.push((i, 2, weights.len() - 1));
                }
            }
            "MatMul" if init_rank(1) == Some(2) => {
                weights.push(WeightUse {
                    node: i,
                    slot: 1,
                    axis: 1,
                });
                // MatMul followed only by an Add of a constant vector: that vector is a bias.
                let out = &n.output[0];
                if let Some([add]) = consumers.get(out).map(Vec::as_slice) {
                    let a = &nodes[*add];
                    let other = a.input.iter().position(|s| s != out);
                    if a.op_type == "Add" && !editor.is_graph_output(out) {
                        if let Some(slot) = other {
                            let rank = editor
                                .initializer(&a.input[slot])
                                .filter(|t| t.data_type == DataType::Float as i32)
                                .map(|t| t.dims.len());
                            if rank == Some(1) {
                                fused_bias_add.insert(i, *add);
                                biases.push((*add, slot, weights.len() - 1));
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }

    // 2. Which activations get a QDQ pair, and with which parameters (in graph order, so
    //    that value-preserving operators can take their input's parameters).
    let reads_as_integer = |name: &str| -> bool {
        consumers.get(name).is_some_and(|readers| {
            readers.iter().any(|&r| {
                let n = &nodes[r];
                INTEGER_OPS.contains(&n.op_type.as_str())
                    && n.input.iter().enumerate().any(|(slot, s)| {
                        s == name
                            && (slot == 0
                                || matches!(
                                    n.op_type.as_str(),
                                    "Add" | "Mul" | "Concat" | "MatMul"
                                ))
                    })
            })
        })
    };
    let fuses_into_activation = |producer: usize, name: &str| -> bool {
        let p = &nodes[producer];
        let is_linear = matches!(p.op_type.as_str(), "Conv" | "Gemm" | "MatMul" | "Add")
            && (p.op_type != "Add" || fused_bias_add.values().any(|&a| a == producer));
        is_linear
            && consumers.get(name).is_some_and(|readers| {
                readers.len() == 1 && matches!(nodes[readers[0]].op_type.as_str(), "Relu" | "Clip")
            })
    };
    let mut params: HashMap<String, ActivationParams> = HashMap::new();
    let range_of = |name: &str| -> Option<ActivationParams> {
        observed.get(name).map(|o| {
            let (lo, hi) = o.range(method);
            ActivationParams::from_range(lo, hi)
        })
    };
    if observed.contains_key(&input) && reads_as_integer(&input) {
        params.insert(
            input.clone(),
            range_of(&input).unwrap_or(ActivationParams::from_range(0.0, 0.0)),
        );
    }
    for (i, n) in nodes.iter().enumerate() {
        for out in n.output.iter().filter(|o| !o.is_empty()) {
            if !observed.contains_key(out) {
                continue; // not a float tensor
            }
            if editor.is_graph_output(out) {
                summary.left_float.push(format!("`{out}` (a graph output)"));
                continue;
            }
            if n.op_type == "Softmax" {
                // Eight bits hold probabilities poorly, and onnxruntime's integer Softmax
                // departs from the QDQ semantics by up to 0.07 (measured on ops-zoo).
                summary
                    .left_float
                    .push(format!("`{out}` (a Softmax output)"));
                continue;
            }
            if fused_bias_add.contains_key(&i) {
                continue; // the MatMul's output goes straight into its bias Add
            }
            if !reads_as_integer(out) || fuses_into_activation(i, out) {
                continue;
            }
            let shared = VALUE_PRESERVING_OPS
                .contains(&n.op_type.as_str())
                .then(|| n.input.first().and_then(|x| params.get(x)).copied())
                .flatten();
            if let Some(p) = shared.or_else(|| range_of(out)) {
                params.insert(out.clone(), p);
            }
        }
    }

    // 3. Weights and biases as integer initializers, each behind a DequantizeLinear node
    //    that is placed just before the node reading it.
    let mut new_inits = Vec::new();
    let mut dq_before: HashMap<usize, Vec<pb::NodeProto>> = HashMap::new();
    let mut slot_source: HashMap<(usize, usize), String> = HashMap::new();
    let mut weight_scales: Vec<Vec<f32>> = Vec::with_capacity(weights.len());
    for w in &weights {
        let name = nodes[w.node].input[w.slot].clone();
        let t = editor
            .initializer(&name)
            .cloned()
            .ok_or_else(|| editor.fail(format!("weight `{name}` is not an initializer")))?;
        let values = super::proto::tensor_f32(&t).map_err(|r| editor.fail(r))?;
        let dims: Vec<usize> = t.dims.iter().map(|&d| d.max(0) as usize).collect();
        let (q, scales) = quantize_per_channel(&values, &dims, w.axis);
        let channels = [scales.len() as i64];
        let bytes = q.iter().map(|&v| v as u8).collect();
        let zeros = vec![0u8; scales.len()];
        let dq = dequantize(editor, &name, w.axis, &mut new_inits, |q, s, z| {
            [
                int_tensor(q, &t.dims, DataType::Int8, bytes),
                float_tensor(s, &channels, &scales),
                int_tensor(z, &channels, DataType::Int8, zeros),
            ]
        });
        slot_source.insert((w.node, w.slot), dq.output[0].clone());
        dq_before.entry(w.node).or_default().push(dq);
        weight_scales.push(scales);
        summary.weights += 1;
    }
    for &(at, slot, wi) in &biases {
        let name = nodes[at].input[slot].clone();
        let linear = &nodes[weights[wi].node];
        let Some(x) = linear.input.first().and_then(|x| params.get(x)) else {
            summary
                .left_float
                .push(format!("bias `{name}` (its node's input is not quantized)"));
            continue;
        };
        let values = editor.float_initializer(&name)?.unwrap_or_default();
        let scales: Vec<f32> = weight_scales[wi].iter().map(|s| s * x.scale).collect();
        if values.len() != scales.len() {
            summary.left_float.push(format!(
                "bias `{name}` ({} values for {} output channels)",
                values.len(),
                scales.len()
            ));
            continue;
        }
        let q: Vec<f64> = values
            .iter()
            .zip(&scales)
            .map(|(b, s)| (*b as f64 / *s as f64).round())
            .collect();
        if q.iter().any(|v| v.abs() > i32::MAX as f64) {
            summary
                .left_float
                .push(format!("bias `{name}` (beyond int32 at its scale)"));
            continue;
        }
        let channels = [scales.len() as i64];
        let bytes = q.iter().flat_map(|&v| (v as i32).to_le_bytes()).collect();
        let zeros = vec![0u8; 4 * scales.len()];
        let dq = dequantize(editor, &name, 0, &mut new_inits, |q, s, z| {
            [
                int_tensor(q, &channels, DataType::Int32, bytes),
                float_tensor(s, &channels, &scales),
                int_tensor(z, &channels, DataType::Int32, zeros),
            ]
        });
        slot_source.insert((at, slot), dq.output[0].clone());
        dq_before.entry(at).or_default().push(dq);
        summary.biases += 1;
    }

    // 4. The new node list: each node reads dequantized inputs, and each quantized output
    //    gets its QDQ pair right after the node that makes it.
    let mut out_nodes = Vec::with_capacity(nodes.len() * 3);
    let mut dequantized: HashMap<String, String> = HashMap::new();
    if let Some(p) = params.get(&input).copied() {
        let dq = qdq_pair(editor, &input, p, &mut out_nodes, &mut new_inits);
        dequantized.insert(input.clone(), dq);
        summary.activations += 1;
    }
    for (i, mut n) in nodes.into_iter().enumerate() {
        out_nodes.extend(dq_before.remove(&i).unwrap_or_default());
        for (slot, x) in n.input.iter_mut().enumerate() {
            if let Some(src) = slot_source.get(&(i, slot)) {
                *x = src.clone();
            } else if let Some(dq) = dequantized.get(x.as_str()) {
                *x = dq.clone();
            }
        }
        let outputs = n.output.clone();
        out_nodes.push(n);
        for out in outputs {
            if let Some(p) = params.get(&out).copied() {
                let dq = qdq_pair(editor, &out, p, &mut out_nodes, &mut new_inits);
                dequantized.insert(out, dq);
                summary.activations += 1;
            }
        }
    }
    let graph = editor.graph_mut();
    graph.node = out_nodes;
    graph.initializer.extend(new_inits);
    editor.drop_unused_initializers();
    Ok(summary)
}

/// A DequantizeLinear node for the float initializer `name`, whose integer values, scales
/// and zero points `make` builds from the three fresh names it is given.
fn dequantize(
    editor: &mut Editor,
    name: &str,
    axis: usize,
    inits: &mut Vec<pb::TensorProto>,
    make: impl FnOnce(&str, &str, &str) -> [pb::TensorProto; 3],
) -> pb::NodeProto {
    let q = editor.fresh_name(&format!("{name}_quantized"));
    let s = editor.fresh_name(&format!("{name}_scale"));
    let z = editor.fresh_name(&format!("{name}_zero_point"));
    let out = editor.fresh_name(&format!("{name}_dequantized"));
    let node_name = editor.fresh_name(&format!("{name}_DequantizeLinear"));
    inits.extend(make(&q, &s, &z));
    node(
        "DequantizeLinear",
        &node_name,
        &[&q, &s, &z],
        &[&out],
        vec![int_attr("axis", axis as i64)],
    )
}

/// Appends `name -> QuantizeLinear -> DequantizeLinear` to `nodes`; returns the
/// dequantized tensor's name.
fn qdq_pair(
    editor: &mut Editor,
    name: &str,
    p: ActivationParams,
    nodes: &mut Vec<pb::NodeProto>,
    inits: &mut Vec<pb::TensorProto>,
) -> String {
    let scale = editor.fresh_name(&format!("{name}_scale"));
    let zp = editor.fresh_name(&format!("{name}_zero_point"));
    let q = editor.fresh_name(&format!("{name}_quantized"));
    let dq = editor.fresh_name(&format!("{name}_dequantized"));
    let qn = editor.fresh_name(&format!("{name}_QuantizeLinear"));
    let dqn = editor.fresh_name(&format!("{name}_DequantizeLinear"));
    inits.push(float_tensor(&scale, &[], &[p.scale]));
    inits.push(int_tensor(&zp, &[], DataType::Uint8, vec![p.zero_point]));
    nodes.push(node(
        "QuantizeLinear",
        &qn,
        &[name, &scale, &zp],
        &[&q],
        vec![],
    ));
    nodes.push(node(
        "DequantizeLinear",
        &dqn,
        &[&q, &scale, &zp],
        &[&dq],
        vec![],
    ));
    dq
}

/// Symmetric int8 per channel along `axis`: `q = round(w / s)`, `s = max|w| / 127`.
/// Returns the quantized values and one scale per channel.
fn quantize_per_channel(values: &[f32], dims: &[usize], axis: usize) -> (Vec<i8>, Vec<f32>) {
    let channels = dims[axis];
    let inner: usize = dims[axis + 1..].iter().product();
    let channel_of = |i: usize| (i / inner) % channels;
    let mut max = vec![0.0f32; channels];
    for (i, v) in values.iter().enumerate() {
        let c = channel_of(i);
        max[c] = max[c].max(v.abs());
    }
    let scales: Vec<f32> = max
        .iter()
        .map(|&m| if m > 0.0 { m / 127.0 } else { 1.0 })
        .collect();
    let q = values
        .iter()
        .enumerate()
        .map(|(i, v)| (v / scales[channel_of(i)]).round().clamp(-127.0, 127.0) as i8)
        .collect();
    (q, scales)
}
