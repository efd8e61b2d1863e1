//! Our ONNX writer: a trained net and its model card become one self-describing file.
//!
//! The graph uses only Conv, Relu, MaxPool, Flatten and Gemm at opset 13, which every ONNX
//! runtime loads. Weights are stored little-endian in `raw_data`. The card goes into
//! `metadata_props` (see [`student_runtime::ModelCard::to_metadata`]).

use prost::Message;
use student_runtime::ModelCard;
use tract_onnx::pb;
use tract_onnx::pb::attribute_proto::AttributeType;
use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::tensor_shape_proto::{Dimension, dimension};

use crate::net::{DenseWeights, NetShape, NetWeights};

const OPSET: i64 = 13;
const IR_VERSION: i64 = 8;
/// The graph's input and output names.
pub(crate) const INPUT_NAME: &str = "input";
pub(crate) const OUTPUT_NAME: &str = "logits";

/// Serializes `weights` as an ONNX model carrying `card`.
pub(crate) fn to_onnx(weights: &NetWeights, shape: NetShape, card: &ModelCard) -> Vec<u8> {
    let mut graph = GraphBuilder::default();
    let mut x = INPUT_NAME.to_string();
    for (i, conv) in weights.convs.iter().enumerate() {
        let w = graph.initializer(
            &format!("conv{i}.weight"),
            &[conv.out_channels, conv.in_channels, 3, 3],
            &conv.weight,
        );
        let b = graph.initializer(&format!("conv{i}.bias"), &[conv.out_channels], &conv.bias);
        let conv_out = graph.node(
            "Conv",
            &format!("conv{i}"),
            &[&x, &w, &b],
            vec![
                ints("kernel_shape", &[3, 3]),
                ints("pads", &[1, 1, 1, 1]),
                ints("strides", &[1, 1]),
            ],
        );
        let relu = graph.node("Relu", &format!("conv{i}.relu"), &[&conv_out], vec![]);
        x = graph.node(
            "MaxPool",
            &format!("pool{i}"),
            &[&relu],
            vec![ints("kernel_shape", &[2, 2]), ints("strides", &[2, 2])],
        );
    }
    x = graph.node("Flatten", "flatten", &[&x], vec![int("axis", 1)]);
    if let Some(hidden) = &weights.hidden {
        let h = graph.dense("hidden", &x, hidden);
        x = graph.node("Relu", "hidden.relu", &[&h], vec![]);
    }
    // The last Gemm is named after the graph output, so its result is the logits.
    graph.dense(OUTPUT_NAME, &x, &weights.output);

    let batch = || Dimension {
        value: Some(dimension::Value::DimParam("batch".to_string())),
        ..Default::default()
    };
    let fixed = |d: usize| Dimension {
        value: Some(dimension::Value::DimValue(d as i64)),
        ..Default::default()
    };
    let input = value_info(
        INPUT_NAME,
        vec![
            batch(),
            fixed(shape.channels),
            fixed(shape.height),
            fixed(shape.width),
        ],
    );
    let output = value_info(OUTPUT_NAME, vec![batch(), fixed(shape.classes)]);
    let model = pb::ModelProto {
        ir_version: IR_VERSION,
        opset_import: vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: OPSET,
        }],
        producer_name: "student".to_string(),
        producer_version: env!("CARGO_PKG_VERSION").to_string(),
        doc_string: format!(
            "{}: a student classifier with an embedded model card",
            card.name
        ),
        graph: Some(pb::GraphProto {
            name: card.name.clone(),
            node: graph.nodes,
            initializer: graph.initializers,
            input: vec![input],
            output: vec![output],
            ..Default::default()
        }),
        metadata_props: card
            .to_metadata()
            .into_iter()
            .map(|(key, value)| pb::StringStringEntryProto { key, value })
            .collect(),
        ..Default::default()
    };
    model.encode_to_vec()
}

#[derive(Default)]
struct GraphBuilder {
    nodes: Vec<pb::NodeProto>,
    initializers: Vec<pb::TensorProto>,
}

impl GraphBuilder {
    fn initializer(&mut self, name: &str, dims: &[usize], values: &[f32]) -> String {
        debug_assert_eq!(dims.iter().product::<usize>(), values.len());
        self.initializers.push(pb::TensorProto {
            name: name.to_string(),
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: DataType::Float as i32,
            raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        });
        name.to_string()
    }

    /// Adds a node with one output named after the node; returns the output name.
    fn node(
        &mut self,
        op: &str,
        name: &str,
        inputs: &[&str],
        attribute: Vec<pb::AttributeProto>,
    ) -> String {
        self.nodes.push(pb::NodeProto {
            op_type: op.to_string(),
            name: name.to_string(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![name.to_string()],
            attribute,
            ..Default::default()
        });
        name.to_string()
    }

    /// `y = x W + b` as a Gemm with `W` stored `[inputs, outputs]`.
    fn dense(&mut self, name: &str, x: &str, layer: &DenseWeights) -> String {
        let w = self.initializer(
            &format!("{name}.weight"),
            &[layer.inputs, layer.outputs],
            &layer.weight,
        );
        let b = self.initializer(&format!("{name}.bias"), &[layer.outputs], &layer.bias);
        self.node("Gemm", name, &[x, &w, &b], vec![])
    }
}

fn value_info(name: &str, dims: Vec<Dimension>) -> pb::ValueInfoProto {
    pb::ValueInfoProto {
        name: name.to_string(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: DataType::Float as i32,
                shape: Some(pb::TensorShapeProto { dim: dims }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn ints(name: &str, values: &[i64]) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.to_string(),
        r#type: AttributeType::Ints as i32,
        ints: values.to_vec(),
        ..Default::default()
    }
}

fn int(name: &str, value: i64) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.to_string(),
        r#type: AttributeType::Int as i32,
        i: value,
        ..Default::default()
    }
}
