//! Reading and rewriting ONNX graphs for the quantizer: tensor values, attributes, unique
//! names, and the normalizations done before quantizing (constants become initializers,
//! batch norms fold into the convolution before them).

use std::collections::{HashMap, HashSet};

use tract_onnx::pb;
use tract_onnx::pb::attribute_proto::AttributeType;
use tract_onnx::pb::tensor_proto::DataType;

use crate::error::Error;

/// Operators the quantizer understands (ONNX default domain). Everything else is refused by
/// name.
pub const SUPPORTED_OPS: &[&str] = &[
    "Conv",
    "Gemm",
    "MatMul",
    "Relu",
    "Clip",
    "LeakyRelu",
    "Sigmoid",
    "Tanh",
    "HardSigmoid",
    "HardSwish",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "GlobalMaxPool",
    "Add",
    "Mul",
    "Concat",
    "Flatten",
    "Reshape",
    "Transpose",
    "Squeeze",
    "Unsqueeze",
    "Softmax",
    "BatchNormalization",
    "Identity",
    "Dropout",
    "Constant",
    // Shape arithmetic that exporters emit around Reshape (integer tensors, left as is).
    "Shape",
    "Gather",
    "Cast",
];

/// Operators whose presence means the graph is quantized already.
const QUANTIZED_OPS: &[&str] = &[
    "QuantizeLinear",
    "DequantizeLinear",
    "DynamicQuantizeLinear",
    "QLinearConv",
    "QLinearMatMul",
    "ConvInteger",
    "MatMulInteger",
];

/// The opset from which DequantizeLinear takes a per-channel `axis`.
pub(crate) const MIN_OPSET: i64 = 13;

/// An ONNX model being rewritten, with the name of the file it came from for errors.
pub(crate) struct Editor {
    pub model: pb::ModelProto,
    pub origin: String,
    used_names: HashSet<String>,
}

impl Editor {
    /// Takes a decoded model after checking what every quantization needs: a graph, one
    /// float input, opset 13 or newer, supported operators, and no quantization yet.
    pub fn new(model: pb::ModelProto, origin: &str) -> Result<Editor, Error> {
        let fail = |reason: String| Error::Quantize {
            origin: origin.to_string(),
            reason,
        };
        let graph = model
            .graph
            .as_ref()
            .ok_or_else(|| fail("the model has no graph".to_string()))?;
        let opset = model
            .opset_import
            .iter()
            .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
            .map(|o| o.version)
            .ok_or_else(|| fail("the model imports no default-domain opset".to_string()))?;
        if opset < MIN_OPSET {
            return Err(fail(format!(
                "opset {opset} is too old: per-channel quantization needs opset {MIN_OPSET} or \
                 newer; re-export the model at opset {MIN_OPSET}+"
            )));
        }
        for node in &graph.node {
            if QUANTIZED_OPS.contains(&node.op_type.as_str()) {
                return Err(Error::AlreadyQuantized {
                    origin: origin.to_string(),
                    evidence: format!("node `{}` is {}", node_name(node), node.op_type),
                });
            }
            if !(node.domain.is_empty() || node.domain == "ai.onnx")
                || !SUPPORTED_OPS.contains(&node.op_type.as_str())
            {
                let op = if node.domain.is_empty() {
                    node.op_type.clone()
                } else {
                    format!("{}.{}", node.domain, node.op_type)
                };
                return Err(Error::UnsupportedOperator {
                    origin: origin.to_string(),
                    op,
                    node: node_name(node),
                    supported: SUPPORTED_OPS.join(", "),
                });
            }
        }
        for t in &graph.initializer {
            if [DataType::Int8, DataType::Uint8, DataType::Float16]
                .iter()
                .any(|d| *d as i32 == t.data_type)
            {
                return Err(Error::AlreadyQuantized {
                    origin: origin.to_string(),
                    evidence: format!(
                        "initializer `{}` is stored as {}",
                        t.name,
                        DataType::try_from(t.data_type)
                            .map(|d| d.as_str_name())
                            .unwrap_or("?")
                    ),
                });
            }
            if !t.external_data.is_empty() {
                return Err(fail(format!(
                    "initializer `{}` is stored in an external file; only self-contained models \
                     are supported",
                    t.name
                )));
            }
        }
        let mut used_names = HashSet::new();
        for v in graph
            .input
            .iter()
            .chain(&graph.output)
            .chain(&graph.value_info)
        {
            used_names.insert(v.name.clone());
        }
        for t in &graph.initializer {
            used_names.insert(t.name.clone());
        }
        for n in &graph.node {
            used_names.extend(n.output.iter().cloned());
            used_names.insert(n.name.clone());
        }
        Ok(Editor {
            model,
            origin: origin.to_string(),
            used_names,
        })
    }

    pub fn graph(&self) -> &pb::GraphProto {
        self.model.graph.as_ref().expect("checked in Editor::new")
    }

    pub fn graph_mut(&mut self) -> &mut pb::GraphProto {
        self.model.graph.as_mut().expect("checked in Editor::new")
    }

    pub fn fail(&self, reason: String) -> Error {
        Error::Quantize {
            origin: self.origin.clone(),
            reason,
        }
    }

    /// A name not yet used in the graph, derived from `base`.
    pub fn fresh_name(&mut self, base: &str) -> String {
        let mut name = base.to_string();
        let mut n = 1;
        while self.used_names.contains(&name) {
            name = format!("{base}_{n}");
            n += 1;
        }
        self.used_names.insert(name.clone());
        name
    }

    /// The graph's float input that is not an initializer.
    pub fn data_input(&self) -> Result<String, Error> {
        let graph = self.graph();
        let initializers: HashSet<&str> =
            graph.initializer.iter().map(|t| t.name.as_str()).collect();
        let inputs: Vec<&pb::ValueInfoProto> = graph
            .input
            .iter()
            .filter(|i| !initializers.contains(i.name.as_str()))
            .collect();
        match inputs.as_slice() {
            [one] => Ok(one.name.clone()),
            other => Err(self.fail(format!(
                "expected exactly one graph input, found {}",
                other.len()
            ))),
        }
    }

    pub fn initializer(&self, name: &str) -> Option<&pb::TensorProto> {
        self.graph().initializer.iter().find(|t| t.name == name)
    }

    /// The float values of initializer `name`, or `None` when it is not a float initializer.
    pub fn float_initializer(&self, name: &str) -> Result<Option<Vec<f32>>, Error> {
        match self.initializer(name) {
            Some(t) if t.data_type == DataType::Float as i32 => {
                tensor_f32(t).map(Some).map_err(|r| self.fail(r))
            }
            _ => Ok(None),
        }
    }

    /// How many nodes read each tensor name (graph outputs count as a reader).
    pub fn consumers(&self) -> HashMap<String, Vec<usize>> {
        let mut map: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, node) in self.graph().node.iter().enumerate() {
            for input in node.input.iter().filter(|s| !s.is_empty()) {
                map.entry(input.clone()).or_default().push(i);
            }
        }
        map
    }

    pub fn is_graph_output(&self, name: &str) -> bool {
        self.graph().output.iter().any(|o| o.name == name)
    }

    /// Replaces every `Constant` node holding a tensor by an initializer of the same name,
    /// so weights given as constants are found like any other.
    pub fn constants_to_initializers(&mut self) {
        let graph = self.graph_mut();
        let mut kept = Vec::with_capacity(graph.node.len());
        for node in std::mem::take(&mut graph.node) {
            let tensor = (node.op_type == "Constant" && node.output.len() == 1)
                .then(|| {
                    node.attribute
                        .iter()
                        .find(|a| a.name == "value" && a.t.is_some())
                })
                .flatten()
                .and_then(|a| a.t.clone());
            match tensor {
                Some(mut t) => {
                    t.name = node.output[0].clone();
                    graph.initializer.push(t);
                }
                None => kept.push(node),
            }
        }
        graph.node = kept;
    }

    /// Folds each BatchNormalization that is the only reader of a Conv's output into that
    /// Conv's weights and bias: `y = gamma (conv(x) - mean) / sqrt(var + eps) + beta`.
    pub fn fold_batch_norms(&mut self) -> Result<usize, Error> {
        let mut folded = 0;
        loop {
            let consumers = self.consumers();
            let nodes = &self.graph().node;
            let found = nodes.iter().enumerate().find_map(|(bi, bn)| {
                if bn.op_type != "BatchNormalization" || bn.output.len() != 1 {
                    return None;
                }
                let ci = nodes
                    .iter()
                    .position(|c| c.op_type == "Conv" && c.output.first() == bn.input.first())?;
                let single = consumers.get(&bn.input[0]).is_some_and(|c| c.len() == 1)
                    && !self.is_graph_output(&bn.input[0]);
                single.then_some((ci, bi))
            });
            let Some((ci, bi)) = found else {
                return Ok(folded);
            };
            let bn = self.graph().node[bi].clone();
            let conv = self.graph().node[ci].clone();
            let param = |k: usize| -> Result<Vec<f32>, Error> {
                let name = bn.input.get(k).cloned().unwrap_or_default();
                self.float_initializer(&name)?.ok_or_else(|| {
                    self.fail(format!(
                        "BatchNormalization `{}`: input {k} (`{name}`) is not a float initializer",
                        node_name(&bn)
                    ))
                })
            };
            let (gamma, beta, mean, var) = (param(1)?, param(2)?, param(3)?, param(4)?);
            let eps = attr_f(&bn, "epsilon").unwrap_or(1e-5);
            let w_name = conv.input.get(1).cloned().unwrap_or_default();
            let w = self.float_initializer(&w_name)?.ok_or_else(|| {
                self.fail(format!(
                    "Conv `{}`: its weight is not a float initializer",
                    node_name(&conv)
                ))
            })?;
            let channels = gamma.len();
            if [&beta, &mean, &var].iter().any(|v| v.len() != channels)
                || channels == 0
                || w.len() % channels != 0
            {
                return Err(self.fail(format!(
                    "BatchNormalization `{}` has {channels} channels, which does not fit the \
                     convolution before it",
                    node_name(&bn)
                )));
            }
            let bias = match conv.input.get(2).filter(|s| !s.is_empty()) {
                Some(b) => self.float_initializer(b)?.ok_or_else(|| {
                    self.fail(format!(
                        "Conv `{}`: its bias is not a float initializer",
                        node_name(&conv)
                    ))
                })?,
                None => vec![0.0; channels],
            };
            let per = w.len() / channels;
            let mut new_w = w.clone();
            let mut new_b = vec![0.0f32; channels];
            for c in 0..channels {
                let k = gamma[c] / (var[c] + eps).sqrt();
                for v in &mut new_w[c * per..(c + 1) * per] {
                    *v *= k;
                }
                new_b[c] = (bias[c] - mean[c]) * k + beta[c];
            }
            let dims = self
                .initializer(&w_name)
                .map(|t| t.dims.clone())
                .unwrap_or_default();
            let w_folded = self.fresh_name(&format!("{w_name}_bn_folded"));
            let b_folded = self.fresh_name(&format!("{}_bias_bn_folded", node_name(&conv)));
            let graph = self.graph_mut();
            graph
                .initializer
                .push(float_tensor(&w_folded, &dims, &new_w));
            graph
                .initializer
                .push(float_tensor(&b_folded, &[channels as i64], &new_b));
            let conv_node = &mut graph.node[ci];
            conv_node.input.truncate(1);
            conv_node.input.push(w_folded);
            conv_node.input.push(b_folded);
            conv_node.output[0] = bn.output[0].clone();
            graph.node.remove(bi);
            self.drop_unused_initializers();
            folded += 1;
        }
    }

    /// Removes initializers that no node reads any more (and their graph input entries).
    pub fn drop_unused_initializers(&mut self) {
        let graph = self.graph_mut();
        let read: HashSet<String> = graph
            .node
            .iter()
            .flat_map(|n| n.input.iter().cloned())
            .chain(graph.output.iter().map(|o| o.name.clone()))
            .collect();
        let removed: HashSet<String> = graph
            .initializer
            .iter()
            .filter(|t| !read.contains(&t.name))
            .map(|t| t.name.clone())
            .collect();
        graph.initializer.retain(|t| !removed.contains(&t.name));
        // Older exporters also list initializers among the graph inputs.
        graph.input.retain(|i| !removed.contains(&i.name));
    }
}

/// A node's name for messages: its own, or its first output's.
pub(crate) fn node_name(node: &pb::NodeProto) -> String {
    if node.name.is_empty() {
        node.output.first().cloned().unwrap_or_default()
    } else {
        node.name.clone()
    }
}

pub(crate) fn attr_i(node: &pb::NodeProto, name: &str) -> Option<i64> {
    node.attribute.iter().find(|a| a.name == name).map(|a| a.i)
}

pub(crate) fn attr_f(node: &pb::NodeProto, name: &str) -> Option<f32> {
    node.attribute.iter().find(|a| a.name == name).map(|a| a.f)
}

/// The values of a float tensor stored in `raw_data` or `float_data`.
pub(crate) fn tensor_f32(t: &pb::TensorProto) -> Result<Vec<f32>, String> {
    let count = t
        .dims
        .iter()
        .try_fold(1usize, |acc, &d| {
            usize::try_from(d).ok().and_then(|d| acc.checked_mul(d))
        })
        .ok_or_else(|| format!("tensor `{}` has invalid dimensions {:?}", t.name, t.dims))?;
    let values: Vec<f32> = if !t.raw_data.is_empty() {
        t.raw_data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    } else {
        t.float_data.clone()
    };
    if values.len() != count {
        return Err(format!(
            "tensor `{}` declares {count} values for dimensions {:?} but holds {}",
            t.name,
            t.dims,
            values.len()
        ));
    }
    Ok(values)
}

pub(crate) fn float_tensor(name: &str, dims: &[i64], values: &[f32]) -> pb::TensorProto {
    pb::TensorProto {
        name: name.to_string(),
        dims: dims.to_vec(),
        data_type: DataType::Float as i32,
        raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    }
}

/// A tensor of one-byte or four-byte integers, little-endian in `raw_data`.
pub(crate) fn int_tensor(
    name: &str,
    dims: &[i64],
    data_type: DataType,
    raw: Vec<u8>,
) -> pb::TensorProto {
    pb::TensorProto {
        name: name.to_string(),
        dims: dims.to_vec(),
        data_type: data_type as i32,
        raw_data: raw,
        ..Default::default()
    }
}

pub(crate) fn node(
    op: &str,
    name: &str,
    inputs: &[&str],
    outputs: &[&str],
    attribute: Vec<pb::AttributeProto>,
) -> pb::NodeProto {
    pb::NodeProto {
        op_type: op.to_string(),
        name: name.to_string(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        attribute,
        ..Default::default()
    }
}

pub(crate) fn int_attr(name: &str, value: i64) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.to_string(),
        r#type: AttributeType::Int as i32,
        i: value,
        ..Default::default()
    }
}
