//! Reads what the runtime needs from an ONNX protobuf: the input and output shapes, the
//! metadata entries, the parameter count and the operators used.

use std::collections::BTreeMap;

use tract_onnx::pb;
use tract_onnx::pb::tensor_shape_proto::dimension::Value as DimValue;
use tract_onnx::pb::type_proto::Value as TypeValue;

use crate::error::Error;
use crate::info::GraphInfo;
use crate::onnx_attributes::{LATEST_OPSETS, SCHEMAS, Schema, Value};
use crate::tract_checked::{CHECKED, Checked};

/// The largest input sample accepted (2^28 values, 1 GiB of f32): a bound that refuses
/// absurd declared shapes before anything is allocated for them.
const MAX_SAMPLE_VALUES: usize = 1 << 28;

/// Where a quantized Softmax leads instead of tract. `student compile` matches this to
/// skip its comparison with tract, which cannot run the file.
pub const QUANTIZED_SOFTMAX_ADVICE: &str =
    "compile the file (`student compile`): the compiled form computes it as ONNX defines";

/// The most classes a classifier may declare.
const MAX_CLASSES: i64 = 1 << 20;

impl GraphInfo {
    pub(crate) fn read(model: &pb::ModelProto, origin: &str) -> Result<GraphInfo, Error> {
        let unsupported = |reason: String| Error::Unsupported {
            origin: origin.to_string(),
            reason,
        };
        let graph = model
            .graph
            .as_ref()
            .ok_or_else(|| unsupported("the model has no graph".to_string()))?;
        let initializers: Vec<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
        let inputs: Vec<&pb::ValueInfoProto> = graph
            .input
            .iter()
            .filter(|i| !initializers.contains(&i.name.as_str()))
            .collect();
        let [input] = inputs.as_slice() else {
            // An input with an initializer of its name is a constant with a default: the
            // runtime feeds only an input without one.
            let with_initializers = if inputs.is_empty() && !graph.input.is_empty() {
                let names: Vec<&str> = graph
                    .input
                    .iter()
                    .take(4)
                    .map(|i| i.name.as_str())
                    .collect();
                let more = graph.input.len() - names.len();
                format!(
                    " (the declared inputs [{}{}] each have an initializer of their name, so \
                     they are constants here)",
                    names.join(", "),
                    if more > 0 {
                        format!(" and {more} more")
                    } else {
                        String::new()
                    }
                )
            } else {
                String::new()
            };
            return Err(unsupported(format!(
                "expected exactly one graph input, found {}{with_initializers}",
                inputs.len()
            )));
        };
        let input_dims = dims(input)
            .map_err(|r| unsupported(format!("input `{}`: {r}", input.name)))?
            .into_iter()
            .enumerate()
            .map(|(axis, d)| match (axis, d) {
                // Samples run one at a time: a graph made for a fixed batch of 2 ran with
                // the image in both places and answered for that pair.
                (0, None | Some(1)) => Ok(1),
                (0, Some(d)) => Err(unsupported(format!(
                    "input `{}` fixes its batch size at {d}; samples run one at a time, so \
                     the batch axis must be 1 or symbolic: export the model so",
                    input.name
                ))),
                (_, Some(d)) if d > 0 => Ok(d as usize),
                (axis, d) => Err(unsupported(format!(
                    "input `{}` axis {axis} must have a fixed positive size, found {}",
                    input.name,
                    d.map_or("no size".to_string(), |d| d.to_string())
                ))),
            })
            .collect::<Result<Vec<usize>, Error>>()?;
        if input_dims.len() < 2 {
            return Err(unsupported(format!(
                "input `{}` must be [batch, ...], found rank {}",
                input.name,
                input_dims.len()
            )));
        }
        let per_sample = input_dims[1..]
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d));
        if !per_sample.is_some_and(|n| n <= MAX_SAMPLE_VALUES) {
            return Err(unsupported(format!(
                "input `{}` dimensions {input_dims:?} exceed {MAX_SAMPLE_VALUES} values per sample",
                input.name
            )));
        }
        let [output] = graph.output.as_slice() else {
            return Err(unsupported(format!(
                "expected exactly one graph output (the logits), found {}",
                graph.output.len()
            )));
        };
        let out_dims = dims(output).map_err(|r| unsupported(format!("output: {r}")))?;
        let classes = match out_dims.as_slice() {
            [_, Some(k)] if (2..=MAX_CLASSES).contains(k) => *k as usize,
            other => {
                return Err(unsupported(format!(
                    "output `{}` must be [batch, classes] with 2 to {MAX_CLASSES} classes, found {}",
                    output.name,
                    shown_dims(other)
                )));
            }
        };
        check_nodes(graph, &model.opset_import, &input.name, origin)?;
        // Scales and zero points of a quantized graph describe weights; they are not weights.
        let quantization_params: std::collections::HashSet<&str> = graph
            .node
            .iter()
            .filter(|n| matches!(n.op_type.as_str(), "QuantizeLinear" | "DequantizeLinear"))
            .flat_map(|n| n.input.iter().skip(1).map(String::as_str))
            .collect();
        let params = graph
            .initializer
            .iter()
            .filter(|t| !quantization_params.contains(t.name.as_str()))
            .map(|t| {
                t.dims
                    .iter()
                    .fold(1u64, |acc, d| acc.saturating_mul((*d).max(0) as u64))
            })
            .fold(0u64, u64::saturating_add);
        // (A LogSoftmax output is fine: the softmax of log-probabilities is the
        // probabilities.)
        if let Some(maker) = squashing_output(graph, &output.name) {
            log::warn!(
                "{origin}: the output `{}` is made by {maker}: the runtime takes outputs \
                 as logits, so confidences will be the softmax of probabilities; export \
                 the model without its final {maker}",
                output.name
            );
        }
        let mut operators = BTreeMap::new();
        for node in &graph.node {
            *operators.entry(node.op_type.clone()).or_insert(0usize) += 1;
        }
        Ok(GraphInfo {
            input_dims,
            classes,
            metadata: model
                .metadata_props
                .iter()
                .map(|e| (e.key.clone(), e.value.clone()))
                .collect(),
            params,
            operators: operators.into_iter().collect(),
        })
    }
}

/// Refuses what tract panics on while planning rather than reporting: a window attribute
/// of 0 (it divides by it) and a graph output that no node makes. tract's panics are
/// caught, but they say nothing of the cause and print through the panic hook. Also
/// refuses what tract would run with another meaning than the file's: see the comments
/// below.
fn check_nodes(
    graph: &pb::GraphProto,
    imports: &[pb::OperatorSetIdProto],
    input: &str,
    origin: &str,
) -> Result<(), Error> {
    let malformed = |reason: String| Error::Malformed {
        origin: origin.to_string(),
        reason,
    };
    // tract runs any opset and only warns above 18; an operator's meaning may change in an
    // opset the schemas below do not know.
    for (i, import) in imports.iter().enumerate() {
        let domain = standard_domain(&import.domain);
        // tract binds to the first import of a domain, onnxruntime to the last, the ONNX
        // reference evaluator to the highest: a Softmax's axis meant another thing to each.
        if let Some(again) = imports[i + 1..]
            .iter()
            .find(|other| standard_domain(&other.domain) == domain)
        {
            return Err(Error::Unsupported {
                origin: origin.to_string(),
                reason: format!(
                    "the model imports {} twice (opsets {} and {}); import each domain once",
                    shown_domain(domain),
                    import.version,
                    again.version
                ),
            });
        }
        if let Some(latest) = latest_opset(domain)
            && import.version > latest
        {
            return Err(Error::Unsupported {
                origin: origin.to_string(),
                reason: format!(
                    "the model imports {} opset {}, newer than the {latest} the runtime knows",
                    shown_domain(domain),
                    import.version
                ),
            });
        }
    }
    for node in &graph.node {
        let named = || describe_node(node);
        // tract runs an operator by its name alone: a `com.example` Relu ran as the
        // standard Relu, where onnxruntime refuses a domain it has no kernels for.
        if !matches!(node.domain.as_str(), "" | "ai.onnx" | "ai.onnx.ml") {
            return Err(Error::Unsupported {
                origin: origin.to_string(),
                reason: format!(
                    "{} is in the operator domain `{}`; only the standard ONNX domains (\"\", \
                     ai.onnx, ai.onnx.ml) are run",
                    named(),
                    node.domain
                ),
            });
        }
        // tract and the compiler read the first of two attributes of one name, the ONNX
        // reference evaluator the second; onnxruntime refuses the node.
        for (i, attribute) in node.attribute.iter().enumerate() {
            if node.attribute[..i].iter().any(|a| a.name == attribute.name) {
                return Err(malformed(format!(
                    "{}: attribute `{}` is given twice",
                    named(),
                    attribute.name
                )));
            }
        }
        check_attributes(node, imports)
            .map_err(|reason| malformed(format!("{}: {reason}", named())))?;
        for attribute in &node.attribute {
            let positive = match attribute.name.as_str() {
                "kernel_shape" | "strides" | "dilations" => attribute.ints.iter().all(|&v| v > 0),
                "group" => attribute.i > 0,
                _ => true,
            };
            if !positive {
                return Err(malformed(format!(
                    "{}: attribute `{}` must be positive, found {:?}",
                    named(),
                    attribute.name,
                    if attribute.ints.is_empty() {
                        vec![attribute.i]
                    } else {
                        attribute.ints.clone()
                    }
                )));
            }
        }
        // A BatchNormalization in training mode normalizes by the batch's own statistics;
        // tract and the compiler use the running ones given (the compiled answer was
        // another class on 8 of 8 images; onnxruntime refuses the one-output form). Before
        // opset 7 `is_test` says it, and its default 0 means training.
        if node.op_type == "BatchNormalization" && standard_domain(&node.domain).is_empty() {
            let version = opset_version(imports, "").unwrap_or(1);
            let training = if version < 7 {
                attr_i(node, "is_test").is_none_or(|v| v == 0)
            } else {
                attr_i(node, "training_mode").is_some_and(|v| v != 0)
            };
            if training {
                return Err(Error::Unsupported {
                    origin: origin.to_string(),
                    reason: format!(
                        "{} is in training mode ({}), which normalizes by the batch's own \
                         statistics; only inference (the running mean and variance) is run: \
                         export the model for inference",
                        named(),
                        if version < 7 {
                            "is_test 0"
                        } else {
                            "training_mode 1"
                        }
                    ),
                });
            }
        }
        check_window(node, graph).map_err(|reason| malformed(format!("{}: {reason}", named())))?;
        check_recurrent_sizes(node, graph)
            .map_err(|reason| malformed(format!("{}: {reason}", named())))?;
        // A NaN or infinite quantization scale makes every value it touches NaN, 0 or
        // saturated. A scale that quantizes (divides) must also be above 0: tract ran a
        // negative one otherwise than onnxruntime (another class on 21 of 32 images).
        // Both ran and answered; the compiler refuses them. Dequantizing scales may be
        // negative or 0 (weights negated with their scale, a channel of zeros).
        let scales: &[(usize, bool)] = match node.op_type.as_str() {
            "QuantizeLinear" => &[(1, true)],
            "DequantizeLinear" => &[(1, false)],
            "QLinearConv" | "QLinearMatMul" => &[(1, false), (4, false), (6, true)],
            _ => &[],
        };
        for &(i, divides) in scales {
            let Some(name) = node.input.get(i) else {
                continue;
            };
            let bad = |v: f32| !v.is_finite() || (divides && v <= 0.0);
            if let Some(bad) = constant_tensor(graph, name).and_then(|t| first_float(t, bad)) {
                return Err(malformed(format!(
                    "{}: its scale `{name}` holds {bad}, not a finite number{}",
                    named(),
                    if divides { " above 0" } else { "" }
                )));
            }
        }
        check_quantization_types(node, graph).map_err(|reason| Error::Unsupported {
            origin: origin.to_string(),
            reason: format!("{}: {reason}", named()),
        })?;
        // Slice steps of 0 divide by zero. Steps other than 1 tract computes wrongly after
        // a padded convolution (a slice of columns 1, 3, 5, ... of its output read columns
        // 0, 2, 4, ...: a different class than onnxruntime's on 10 of 32 images), so only
        // steps of 1, given as constants, are taken.
        if let Some(name) = (node.op_type == "Slice")
            .then(|| node.input.get(4))
            .flatten()
            .filter(|name| !name.is_empty())
        {
            match constant_ints(graph, name) {
                Some(steps) if steps.contains(&0) => {
                    return Err(malformed(format!("{}: a slice step is 0", named())));
                }
                Some(steps) if steps.iter().all(|&s| s == 1) => {}
                Some(steps) => {
                    return Err(Error::Unsupported {
                        origin: origin.to_string(),
                        reason: format!(
                            "{}: slice steps {steps:?}: only steps of 1 are supported (tract \
                             computes some strided slices wrongly)",
                            named()
                        ),
                    });
                }
                None => {
                    return Err(Error::Unsupported {
                        origin: origin.to_string(),
                        reason: format!(
                            "{}: its slice steps `{name}` are not a constant; only constant \
                             steps of 1 are supported",
                            named()
                        ),
                    });
                }
            }
        }
    }
    for output in &graph.output {
        let made = output.name == input
            || graph.node.iter().any(|n| n.output.contains(&output.name))
            || graph.initializer.iter().any(|t| t.name == output.name);
        if !made {
            return Err(malformed(format!(
                "the graph output `{}` is made by no node",
                output.name
            )));
        }
    }
    Ok(())
}

/// Refuses an attribute that the node's operator does not take at the model's opset, or
/// one of another type, as onnxruntime does. tract reads the attributes it knows and
/// ignores the rest: a Conv with a misspelt `dilation` ran as dilation 1 and answered.
/// Operators, domains and opsets the table does not know are left to tract.
fn check_attributes(
    node: &pb::NodeProto,
    imports: &[pb::OperatorSetIdProto],
) -> Result<(), String> {
    let domain = standard_domain(&node.domain);
    let Some(version) = opset_version(imports, domain) else {
        return Ok(());
    };
    let op = node.op_type.as_str();
    let Some(schema) = schema_at(domain, op, version) else {
        // tract also runs operators of its own under standard names (Rsqrt, FastGelu, ...),
        // and operators from later opsets; onnxruntime refuses both. An opset newer than
        // the table's is left to tract.
        if latest_opset(domain).is_some_and(|latest| version <= latest) {
            let shown = shown_domain(domain);
            return Err(match schema_rows(domain, op).first() {
                Some(row) => format!(
                    "{op} is not an operator of {shown} opset {version}; it is defined from \
                     opset {}",
                    row.since
                ),
                None => format!("{op} is not an operator of {shown} (opset {version})"),
            });
        }
        return Ok(());
    };
    for attribute in &node.attribute {
        let found = attribute.r#type;
        match schema
            .attributes
            .iter()
            .find(|(name, _)| *name == attribute.name)
        {
            None => {
                let takes: Vec<&str> = schema.attributes.iter().map(|(name, _)| *name).collect();
                return Err(format!(
                    "attribute `{}` is not one that {op} takes at opset {version} ({})",
                    attribute.name,
                    if takes.is_empty() {
                        "it takes none".to_string()
                    } else {
                        format!("it takes {}", takes.join(", "))
                    }
                ));
            }
            Some(&(name, expected)) if expected != found => {
                return Err(format!(
                    "attribute `{name}` must be of type {}, found {}",
                    attribute_type(expected),
                    attribute_type(found)
                ));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// `ai.onnx` is another name of the default domain "".
fn standard_domain(domain: &str) -> &str {
    if domain == "ai.onnx" { "" } else { domain }
}

/// A standard domain for messages: the default domain as `ai.onnx`.
fn shown_domain(domain: &str) -> &str {
    if domain.is_empty() { "ai.onnx" } else { domain }
}

/// The newest opset of a standard domain (`""` for the default) that the schema table
/// covers.
fn latest_opset(domain: &str) -> Option<i64> {
    LATEST_OPSETS
        .iter()
        .find(|(d, _)| *d == domain)
        .map(|&(_, latest)| latest)
}

/// The opset version a model imports for `domain` (`""` or `ai.onnx` for the default
/// domain), if it imports one.
pub(crate) fn opset_version(imports: &[pb::OperatorSetIdProto], domain: &str) -> Option<i64> {
    let domain = standard_domain(domain);
    imports
        .iter()
        .find(|i| standard_domain(&i.domain) == domain)
        .map(|i| i.version)
}

/// An `AttributeProto.AttributeType` code by its name in the ONNX definition.
fn attribute_type(code: i32) -> String {
    pb::attribute_proto::AttributeType::try_from(code)
        .map(|t| t.as_str_name().to_string())
        .unwrap_or_else(|_| format!("code {code}"))
}

/// Refuses the QuantizeLinear and DequantizeLinear forms that neither tract nor the
/// compiler runs as ONNX defines them: a QuantizeLinear `output_dtype` other than its zero
/// point's type or uint8 (tract quantized to uint8 whatever it said: another class on 9
/// of 32 images for int8), quantized types other than 8 bits (and int32 for a
/// DequantizeLinear, the form of biases), and blocked quantization (`block_size`).
fn check_quantization_types(node: &pb::NodeProto, graph: &pb::GraphProto) -> Result<(), String> {
    use pb::tensor_proto::DataType;
    let dequantize = match node.op_type.as_str() {
        "QuantizeLinear" => false,
        "DequantizeLinear" => true,
        _ => return Ok(()),
    };
    let type_name = |code: i32| {
        DataType::try_from(code)
            .map_or_else(|_| format!("code {code}"), |t| t.as_str_name().to_string())
    };
    if let Some(size) = attr_i(node, "block_size").filter(|&b| b != 0) {
        return Err(format!(
            "blocked quantization (block_size {size}) is not supported"
        ));
    }
    let zero_point = node
        .input
        .get(2)
        .filter(|name| !name.is_empty())
        .and_then(|name| constant_tensor(graph, name))
        .map(|t| t.data_type);
    // The quantized value: a DequantizeLinear's input, when it is a constant.
    let quantized = dequantize
        .then(|| node.input.first())
        .flatten()
        .and_then(|name| constant_tensor(graph, name))
        .map(|t| t.data_type);
    let eight_bit = [DataType::Uint8 as i32, DataType::Int8 as i32];
    let allowed =
        |code: i32| eight_bit.contains(&code) || (dequantize && code == DataType::Int32 as i32);
    for code in zero_point.into_iter().chain(quantized) {
        if !allowed(code) {
            return Err(format!(
                "quantized type {}: only uint8 and int8 quantization is supported{}",
                type_name(code),
                if dequantize {
                    " (and int32 biases)"
                } else {
                    ""
                }
            ));
        }
    }
    if let Some(wanted) = (!dequantize)
        .then(|| attr_i(node, "output_dtype"))
        .flatten()
        .filter(|&t| t != 0)
    {
        let wanted = i32::try_from(wanted).unwrap_or(-1);
        let given = zero_point.unwrap_or(DataType::Uint8 as i32);
        if wanted != given {
            return Err(format!(
                "output_dtype {} is not supported {}; give a zero point of that type instead",
                type_name(wanted),
                if zero_point.is_some() {
                    format!("with a zero point of type {}", type_name(given))
                } else {
                    "without a zero point".to_string()
                }
            ));
        }
    }
    Ok(())
}

/// The largest kernel side, stride or dilation a convolution or pooling window may have.
const MAX_WINDOW: i64 = 1024;

/// The most positions a window's kernel may cover (128 x 128): tract planned a window of
/// that area in 0.2 s, of 1024 x 1024 in 12 s.
const MAX_WINDOW_TAPS: i64 = 16_384;

/// Refuses windows tract plans as given but cannot afford: a kernel side, stride or
/// dilation over [`MAX_WINDOW`], a kernel covering more than [`MAX_WINDOW_TAPS`]
/// positions, pads other than two per axis, or padding beyond the kernel's extent (`(k - 1) * d`),
/// which only adds outputs that read nothing. tract sizes its patch tables by the padded
/// output, so a 300-byte Conv padded by 30,000 made opening allocate 28 GB and abort, and
/// a MaxPool of 20,000 x 20,000 took gigabytes. The kernel is `kernel_shape`, or for a
/// convolution without it the spatial dimensions of its weight initializer.
fn check_window(node: &pb::NodeProto, graph: &pb::GraphProto) -> Result<(), String> {
    let weight_input = match node.op_type.as_str() {
        "Conv" | "ConvTranspose" | "ConvInteger" => Some(1),
        "QLinearConv" => Some(3),
        "MaxPool" | "AveragePool" | "LpPool" | "MaxUnpool" => None,
        _ => return Ok(()),
    };
    for name in ["kernel_shape", "strides", "dilations"] {
        if let Some(bad) = attr_ints(node, name)
            .unwrap_or_default()
            .into_iter()
            .find(|v| !(1..=MAX_WINDOW).contains(v))
        {
            return Err(format!(
                "attribute `{name}` holds {bad}, expected 1 to {MAX_WINDOW}"
            ));
        }
    }
    let weights_kernel = weight_input
        .and_then(|i| node.input.get(i))
        .and_then(|name| graph.initializer.iter().find(|t| &t.name == name))
        .and_then(|weights| Some(weights.dims.get(2..)?.to_vec()));
    // tract takes the kernel from the weights: a ConvTranspose whose `kernel_shape` said
    // otherwise ran, where onnxruntime refuses the file.
    let kernel_shape = attr_ints(node, "kernel_shape");
    if let (Some(given), Some(weights)) = (&kernel_shape, &weights_kernel)
        && given != weights
    {
        return Err(format!(
            "attribute `kernel_shape` is {given:?}, but its weights hold a kernel of {weights:?}"
        ));
    }
    let kernel = kernel_shape.or(weights_kernel);
    if let Some(bad) = kernel
        .iter()
        .flatten()
        .find(|v| !(1..=MAX_WINDOW).contains(*v))
    {
        return Err(format!(
            "its kernel has a side of {bad}, expected 1 to {MAX_WINDOW}"
        ));
    }
    // tract's planning time grows with the window's area: a 1024 x 1024 Conv took 12 s
    // to open, and each more node using it as long again.
    let taps = kernel
        .iter()
        .flatten()
        .try_fold(1i64, |a, &v| a.checked_mul(v));
    if taps.is_none_or(|t| t > MAX_WINDOW_TAPS) {
        return Err(format!(
            "its kernel of {:?} covers more than {MAX_WINDOW_TAPS} positions",
            kernel.unwrap_or_default()
        ));
    }
    let dilations = attr_ints(node, "dilations").unwrap_or_default();
    // Two pads (begin and end) per spatial axis: tract indexes them by axis.
    if let (Some(pads), Some(k)) = (attr_ints(node, "pads"), kernel.as_deref()) {
        if pads.len() != 2 * k.len() {
            return Err(format!(
                "attribute `pads` holds {} values, expected {} (a begin and an end for each \
                 of the kernel's {} axes)",
                pads.len(),
                2 * k.len(),
                k.len()
            ));
        }
    }
    for (i, &pad) in attr_ints(node, "pads")
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let extent = match kernel.as_deref() {
            Some(k) if !k.is_empty() => {
                let axis = i % k.len();
                (k[axis] - 1) * dilations.get(axis).copied().unwrap_or(1)
            }
            _ => MAX_WINDOW,
        };
        if !(0..=extent).contains(&pad) {
            return Err(format!(
                "attribute `pads` holds {pad}, expected 0 to {extent} (no more than the \
                 kernel's extent less one)"
            ));
        }
    }
    Ok(())
}

/// Refuses an LSTM, GRU or RNN whose `hidden_size` or `direction` disagrees with its
/// constant recurrence weights (`[directions, gates x units, units]`). tract sizes the
/// layer by the weights alone and ran such files; onnxruntime refuses them.
fn check_recurrent_sizes(node: &pb::NodeProto, graph: &pb::GraphProto) -> Result<(), String> {
    if !matches!(node.op_type.as_str(), "LSTM" | "GRU" | "RNN") {
        return Ok(());
    }
    let Some(r) = node
        .input
        .get(2)
        .and_then(|name| graph.initializer.iter().find(|t| &t.name == name))
        .map(|t| &t.dims)
        .filter(|dims| dims.len() == 3)
    else {
        return Ok(());
    };
    let direction = attr_text(node, "direction").unwrap_or_else(|| "forward".to_string());
    let directions = if direction == "bidirectional" { 2 } else { 1 };
    if r[0] != directions {
        return Err(format!(
            "its recurrence weights hold {} direction(s), where `direction` `{direction}` \
             takes {directions}",
            r[0]
        ));
    }
    if let Some(hidden) = attr_i(node, "hidden_size")
        && hidden != r[2]
    {
        return Err(format!(
            "`hidden_size` is {hidden}, but its recurrence weights hold {} units",
            r[2]
        ));
    }
    Ok(())
}

/// Where a form the tract path has not been checked on leads. Said once per refusal.
const UNCHECKED_ADVICE: &str = "compile the model (`student compile`) if the compiler takes \
     its operators, or open it with unchecked operators (`--unchecked-operators`, \
     `OpenOptions::unchecked_operators`) to run it through tract as it is";

/// Refuses, for a model about to run through tract, the forms tract computes otherwise than
/// ONNX defines (`check_meaning`) and, unless `unchecked` is set, every operator or
/// attribute value that has not been compared with onnxruntime (`check_listed`). The
/// compiler computes the operators itself, so it does not ask.
pub(crate) fn check_tract_forms(
    model: &pb::ModelProto,
    origin: &str,
    unchecked: bool,
) -> Result<(), Error> {
    let Some(graph) = &model.graph else {
        return Ok(());
    };
    for node in &graph.node {
        check_meaning(node, graph)
            .and_then(|()| match unchecked {
                true => Ok(()),
                false => check_listed(node, &model.opset_import, CHECKED),
            })
            .map_err(|reason| Error::Unsupported {
                origin: origin.to_string(),
                reason: format!("{}: {reason}", describe_node(node)),
            })?;
    }
    Ok(())
}

/// Refuses an operator that `tests/tract_forms.py` has not compared with onnxruntime, and an
/// attribute it has not compared at a value other than the ONNX default: by name, or for
/// an attribute that names a choice, by value (`mode=edge`). tract runs many operators;
/// where it departs from ONNX it answers all the same, so only what was checked runs by
/// default (`table` is `tract_checked::CHECKED`). An operator's versions older than the
/// oldest checked are refused too: some meant something else (tract ran an opset-10 Resize
/// rounding its nearest samples where onnxruntime floors them, as Upsample does).
fn check_listed(
    node: &pb::NodeProto,
    imports: &[pb::OperatorSetIdProto],
    table: &[Checked],
) -> Result<(), String> {
    let domain = standard_domain(&node.domain);
    let op = node.op_type.as_str();
    let Some(checked) = table.iter().find(|c| (c.domain, c.op) == (domain, op)) else {
        return Err(format!(
            "{op} ({}) has not been checked against onnxruntime on the tract path; \
             {UNCHECKED_ADVICE}",
            shown_domain(domain)
        ));
    };
    let version = opset_version(imports, domain);
    let schema = version.and_then(|version| schema_at(domain, op, version));
    match (version, schema) {
        (None, _) => {
            return Err(format!(
                "the model imports no opset of {}, so which {op} it means is not known; \
                 {UNCHECKED_ADVICE}",
                shown_domain(domain)
            ));
        }
        (Some(version), Some(s)) if s.since < checked.since => {
            return Err(format!(
                "{op} of opset {version} (its version {}) has not been checked against \
                 onnxruntime on the tract path, only versions from {}; re-export the model \
                 at a newer opset, or {UNCHECKED_ADVICE}",
                s.since, checked.since
            ));
        }
        _ => {}
    }
    for attribute in &node.attribute {
        let name = attribute.name.as_str();
        if checked.attributes.contains(&name) {
            continue;
        }
        let choices: Vec<&str> = checked
            .attributes
            .iter()
            .filter_map(|a| a.strip_prefix(name)?.strip_prefix('='))
            .collect();
        let chosen = choice_values(attribute);
        if !choices.is_empty()
            && chosen.as_ref().is_some_and(|values| {
                !values.is_empty() && values.iter().all(|v| choices.contains(&v.as_str()))
            })
        {
            continue;
        }
        let default = schema.and_then(|s| {
            s.defaults
                .iter()
                .find(|(name, _)| *name == attribute.name)
                .map(|&(_, value)| value)
        });
        if !default.is_some_and(|d| is_value(attribute, d)) {
            return Err(format!(
                "attribute `{}` = {}{} has not been checked against onnxruntime on the \
                 tract path{}; {UNCHECKED_ADVICE}",
                attribute.name,
                shown_value(attribute),
                match default {
                    Some(d) => format!(" (default {})", shown_default(d)),
                    None => String::new(),
                },
                match choices.is_empty() {
                    true => String::new(),
                    false => format!(" (checked: {})", choices.join(", ")),
                }
            ));
        }
    }
    Ok(())
}

/// The values of an attribute as the table of checked forms names choices: a text, each
/// text of a list, or an integer (a `Cast` target type code, a flag). `None` for other
/// kinds.
fn choice_values(a: &pb::AttributeProto) -> Option<Vec<String>> {
    use pb::attribute_proto::AttributeType as T;
    let text = |s: &[u8]| String::from_utf8_lossy(s).into_owned();
    match T::try_from(a.r#type) {
        Ok(T::String) => Some(vec![text(&a.s)]),
        Ok(T::Strings) => Some(a.strings.iter().map(|s| text(s)).collect()),
        Ok(T::Int) => Some(vec![a.i.to_string()]),
        _ => None,
    }
}

/// The schema row of `op` in force at `version`.
fn schema_at(domain: &str, op: &str, version: i64) -> Option<&'static Schema> {
    schema_rows(domain, op)
        .iter()
        .take_while(|s| s.since <= version)
        .last()
}

/// Every version of `op`, oldest first; empty for an operator the table does not know.
fn schema_rows(domain: &str, op: &str) -> &'static [Schema] {
    let first = SCHEMAS.partition_point(|s| (s.domain, s.op) < (domain, op));
    let end = first + SCHEMAS[first..].partition_point(|s| (s.domain, s.op) == (domain, op));
    &SCHEMAS[first..end]
}

/// Whether an attribute holds `value` (compared as the attribute's own type says).
fn is_value(a: &pb::AttributeProto, value: Value) -> bool {
    use pb::attribute_proto::AttributeType as T;
    match (T::try_from(a.r#type), value) {
        (Ok(T::Int), Value::Int(v)) => a.i == v,
        (Ok(T::Float), Value::Float(v)) => a.f == v,
        (Ok(T::String), Value::Text(v)) => a.s == v.as_bytes(),
        (Ok(T::Ints), Value::Ints(v)) => a.ints == v,
        (Ok(T::Strings), Value::Texts(v)) => {
            a.strings.len() == v.len() && a.strings.iter().zip(v).all(|(s, t)| s == t.as_bytes())
        }
        _ => false,
    }
}

/// An attribute's value for a message, cut short past a few elements.
fn shown_value(a: &pb::AttributeProto) -> String {
    use pb::attribute_proto::AttributeType as T;
    fn list<T: std::fmt::Debug>(items: &[T]) -> String {
        match items.len() {
            0..=8 => format!("{items:?}"),
            n => format!("{:?} (and {} more)", &items[..8], n - 8),
        }
    }
    let text = |s: &[u8]| format!("{:?}", String::from_utf8_lossy(&s[..s.len().min(64)]));
    match T::try_from(a.r#type) {
        Ok(T::Int) => a.i.to_string(),
        Ok(T::Float) => a.f.to_string(),
        Ok(T::String) => text(&a.s),
        Ok(T::Ints) => list(&a.ints),
        Ok(T::Floats) => list(&a.floats),
        Ok(T::Strings) => {
            let shown: Vec<String> = a.strings.iter().take(8).map(|s| text(s)).collect();
            format!(
                "[{}]{}",
                shown.join(", "),
                if a.strings.len() > 8 {
                    " (and more)"
                } else {
                    ""
                }
            )
        }
        _ => format!("(a value of type {})", attribute_type(a.r#type)),
    }
}

/// A schema default for a message.
fn shown_default(value: Value) -> String {
    match value {
        Value::Int(v) => v.to_string(),
        Value::Float(v) => v.to_string(),
        Value::Text(v) => format!("{v:?}"),
        Value::Ints(v) => format!("{v:?}"),
        Value::Texts(v) => format!("{v:?}"),
    }
}

/// Refuses attribute values that tract reads otherwise than the ONNX definition. Each of
/// these ran and answered, exit 0, with another class than onnxruntime's:
/// - LSTM, GRU and RNN: tract runs every direction with the default activations and no
///   clipping. `direction = "reverse"`, `clip`, `activations`, `activation_alpha`,
///   `activation_beta` and LSTM's `input_forget` were ignored (another class on 8 to 32 of
///   32 images).
/// - Celu: tract leaves out the factor `alpha` of `alpha * (exp(x / alpha) - 1)`.
/// - Pad: tract pads with the `constant_value` input whatever the mode, so an `edge` or
///   `reflect` Pad given one ran as a constant Pad. Negative pads (cropping) passed the
///   open and panicked in tract at the first run.
/// - ConvTranspose: an `output_padding` not below its stride (ONNX requires it below).
/// - QLinearConv and QLinearMatMul: a constant input or weight scale of zero or below.
///
/// Two forms tract cannot plan are refused here too, so that they stay out of the way of
/// the table of checked forms (which names attributes, not values): a Pad in mode `wrap`
/// and a ConstantOfShape without `value`.
fn check_meaning(node: &pb::NodeProto, graph: &pb::GraphProto) -> Result<(), String> {
    match node.op_type.as_str() {
        op @ ("LSTM" | "GRU" | "RNN") => {
            let direction = attr_text(node, "direction").unwrap_or_else(|| "forward".to_string());
            let directions = match direction.as_str() {
                "forward" => 1,
                "bidirectional" => 2,
                _ => {
                    return Err(format!(
                        "direction `{direction}` is not supported (tract runs it forward); \
                         `forward` and `bidirectional` are"
                    ));
                }
            };
            for ignored in ["clip", "activation_alpha", "activation_beta"] {
                if attr(node, ignored).is_some() {
                    return Err(format!(
                        "attribute `{ignored}` is not supported (tract ignores it); remove it \
                         or run the model with another runtime"
                    ));
                }
            }
            if op == "LSTM" && attr(node, "input_forget").is_some_and(|a| a.i != 0) {
                return Err(
                    "`input_forget` other than 0 is not supported (tract ignores it)".to_string(),
                );
            }
            let defaults: &[&str] = match op {
                "LSTM" => &["Sigmoid", "Tanh", "Tanh"],
                "GRU" => &["Sigmoid", "Tanh"],
                _ => &["Tanh"],
            };
            if let Some(a) = attr(node, "activations") {
                let given: Vec<String> = a
                    .strings
                    .iter()
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect();
                let expected = defaults.repeat(directions);
                if given != expected {
                    return Err(format!(
                        "activations {given:?} are not supported (tract runs {op} with its \
                         default activations); only {expected:?} are"
                    ));
                }
            }
        }
        // tract reads only the list forms of these attributes.
        "TreeEnsembleClassifier" | "TreeEnsembleRegressor" => {
            if let Some(a) = node
                .attribute
                .iter()
                .find(|a| a.name.ends_with("_as_tensor"))
            {
                return Err(format!(
                    "attribute `{}` is not supported (tract ignores it); give `{}` instead",
                    a.name,
                    a.name.trim_end_matches("_as_tensor")
                ));
            }
        }
        "GlobalLpPool" => {
            return Err(
                "GlobalLpPool is not supported (tract takes the mean of |x|^p where \
                        ONNX sums them)"
                    .to_string(),
            );
        }
        "Einsum" => {
            if let Some(equation) = attr_text(node, "equation").filter(|e| e.contains("...")) {
                return Err(format!(
                    "equation `{equation}`: equations with `...` are not supported (tract \
                     drops a dimension of them); name every axis"
                ));
            }
        }
        "Resize" => {
            let given = |i: usize| node.input.get(i).is_some_and(|name| !name.is_empty());
            if attr_text(node, "coordinate_transformation_mode").as_deref() == Some("align_corners")
                && given(2)
                && !given(3)
            {
                return Err(
                    "`align_corners` with `scales` is not supported (tract places \
                            the samples otherwise than onnxruntime); give `sizes` instead"
                        .to_string(),
                );
            }
        }
        // tract computed the quantized probabilities of onnxruntime's `quantize_static`
        // files wrongly: 0.1 for every class of every input on one such file.
        "Softmax" => {
            let quantized = graph
                .node
                .iter()
                .any(|n| n.op_type == "QuantizeLinear" && n.input.first() == node.output.first());
            if quantized {
                return Err(format!(
                    "a Softmax whose output is quantized is not supported on the ONNX path \
                     (tract computes it wrongly); {QUANTIZED_SOFTMAX_ADVICE}"
                ));
            }
        }
        // tract fills with float64 zeros, which the float graph around it then fails to
        // plan with.
        "ConstantOfShape" if attr(node, "value").is_none() => {
            return Err(
                "a ConstantOfShape without `value` is not supported (tract makes \
                        float64 zeros where ONNX makes float32); give `value`"
                    .to_string(),
            );
        }
        // onnxruntime and the ONNX reference evaluator disagree on the divisor of the
        // windows ceil_mode adds (2/9 against 1/3 at an edge); tract follows the reference.
        "AveragePool"
            if attr_i(node, "ceil_mode").is_some_and(|c| c != 0)
                && attr_i(node, "count_include_pad").is_some_and(|c| c != 0) =>
        {
            return Err(
                "`ceil_mode` with `count_include_pad` is not supported (runtimes \
                        disagree on the windows ceil_mode adds); pad the input explicitly \
                        instead of ceil_mode"
                    .to_string(),
            );
        }
        // ONNX requires each output_padding below its stride; past it, onnxruntime and
        // tract place the added rows differently (found by tests/tract_sweep.py).
        "ConvTranspose" => {
            if let Some(padding) = attr_ints(node, "output_padding") {
                let strides = attr_ints(node, "strides").unwrap_or_else(|| vec![1; padding.len()]);
                let below =
                    |(i, &p): (usize, &i64)| p >= 0 && strides.get(i).is_some_and(|&s| p < s);
                if !padding.iter().enumerate().all(below) {
                    return Err(format!(
                        "output_padding {padding:?} with strides {strides:?} is not supported: \
                         ONNX requires each output_padding to be at least 0 and below its stride"
                    ));
                }
            }
        }
        // An input or weight scale of zero or below: tract requantized such products
        // otherwise than onnxruntime (every class changed; tests/tract_sweep.py). The
        // compiler computes them as ONNX does, so `check_nodes`, which both paths run
        // first, refuses only scales that are not finite and output scales of zero or below.
        "QLinearConv" | "QLinearMatMul" => {
            for (i, role) in [(1, "x_scale"), (4, "w_scale")] {
                let tensor = node
                    .input
                    .get(i)
                    .and_then(|name| constant_tensor(graph, name));
                let bad = tensor.and_then(|t| first_float(t, |v| !(v > 0.0)));
                if let Some(bad) = bad {
                    return Err(format!(
                        "{role} {bad} is not supported: quantization scales must be above 0 \
                         and finite"
                    ));
                }
            }
        }
        "Celu" => {
            if let Some(alpha) = attr(node, "alpha").map(|a| a.f).filter(|&a| a != 1.0) {
                return Err(format!(
                    "alpha {alpha} is not supported (tract computes Celu without its factor \
                     alpha); only alpha 1 is"
                ));
            }
        }
        "Pad" => {
            let mode = attr_text(node, "mode").unwrap_or_else(|| "constant".to_string());
            if mode == "wrap" {
                return Err(
                    "mode `wrap` is not supported (tract does not implement it); \
                            `constant`, `edge` and `reflect` are"
                        .to_string(),
                );
            }
            let value_input = node.input.get(2).is_some_and(|name| !name.is_empty());
            if mode != "constant" && value_input {
                return Err(format!(
                    "a Pad in mode `{mode}` with a constant_value input is not supported (tract \
                     pads with the constant); leave the input out for `{mode}` padding"
                ));
            }
            let pads = match node.input.get(1).filter(|name| !name.is_empty()) {
                Some(name) => constant_ints(graph, name),
                None => attr_ints(node, "pads"),
            };
            if let Some(pads) = pads.filter(|p| p.iter().any(|&v| v < 0)) {
                return Err(format!(
                    "pads {pads:?}: negative pads (cropping) are not supported; use a Slice"
                ));
            }
        }
        _ => {}
    }
    Ok(())
}

/// The operator that squashes the graph's output into probabilities, if one does: a
/// Softmax or Sigmoid, or a softmax written out (a Div of an Exp), seen through the nodes
/// that only move or relabel values after it (Identity, Reshape, Flatten, Squeeze,
/// Unsqueeze, Dropout, a Cast to float).
fn squashing_output(graph: &pb::GraphProto, output: &str) -> Option<&'static str> {
    let maker = |name: &str| {
        graph
            .node
            .iter()
            .find(|n| n.output.iter().any(|o| o == name))
    };
    let mut name = output;
    // Each step moves to an earlier node; the bound stops a cycle the checks refuse later.
    for _ in 0..=graph.node.len() {
        let node = maker(name)?;
        match node.op_type.as_str() {
            "Softmax" => return Some("Softmax"),
            "Sigmoid" => return Some("Sigmoid"),
            "Div" => {
                let numerator = node.input.first().and_then(|i| maker(i));
                return numerator
                    .filter(|n| n.op_type == "Exp")
                    .map(|_| "a softmax written out (Exp, then Div)");
            }
            "Identity" | "Reshape" | "Flatten" | "Squeeze" | "Unsqueeze" | "Dropout" | "Cast" => {
                name = node.input.first()?;
            }
            _ => return None,
        }
    }
    None
}

/// Renames the nodes that tract would name alike. tract names a node by its name, or by
/// its first output when it has none, and refuses a graph where two nodes come out the same
/// ("Duplicate node name"); ONNX does not require node names to be unique, and onnxruntime
/// runs such graphs. A node that would repeat an earlier one's name gets `name#index`
/// (its position in the graph), made unique.
pub(crate) fn name_nodes_apart(graph: &mut pb::GraphProto) {
    let mut taken: std::collections::HashSet<String> = std::collections::HashSet::new();
    for (index, node) in graph.node.iter_mut().enumerate() {
        let shown = match (node.name.is_empty(), node.output.first()) {
            (false, _) => node.name.clone(),
            (true, Some(output)) if !output.is_empty() => output.clone(),
            _ => continue,
        };
        if taken.insert(shown.clone()) {
            continue;
        }
        let mut fresh = format!("{shown}#{index}");
        while !taken.insert(fresh.clone()) {
            fresh.push('#');
        }
        node.name = fresh;
    }
}

/// The attribute holding the value of the `Constant` node that makes `name`.
fn constant_attribute<'g>(graph: &'g pb::GraphProto, name: &str) -> Option<&'g pb::AttributeProto> {
    graph
        .node
        .iter()
        .find(|n| n.op_type == "Constant" && n.output.iter().any(|o| o == name))?
        .attribute
        .first()
}

/// The tensor value of the constant `name`: an initializer, or a `Constant` node's `value`.
fn constant_tensor<'g>(graph: &'g pb::GraphProto, name: &str) -> Option<&'g pb::TensorProto> {
    match graph.initializer.iter().find(|t| t.name == name) {
        Some(t) => Some(t),
        None => constant_attribute(graph, name)
            .filter(|a| a.name == "value")?
            .t
            .as_ref(),
    }
}

/// The values of the int64 or int32 constant `name`.
fn constant_ints(graph: &pb::GraphProto, name: &str) -> Option<Vec<i64>> {
    if let Some(t) = constant_tensor(graph, name) {
        return int64s(t).or_else(|| int32s(t));
    }
    let a = constant_attribute(graph, name)?;
    match a.name.as_str() {
        "value_ints" => Some(a.ints.clone()),
        "value_int" => Some(vec![a.i]),
        _ => None,
    }
}

/// The first value of a float32 or float16 constant for which `wanted` holds, if any.
fn first_float(t: &pb::TensorProto, wanted: impl Fn(f32) -> bool) -> Option<f32> {
    use pb::tensor_proto::DataType;
    let raw = &t.raw_data;
    if t.data_type == DataType::Float as i32 {
        let from_raw = raw
            .as_chunks::<4>()
            .0
            .iter()
            .map(|c| f32::from_le_bytes(*c));
        return from_raw
            .chain(t.float_data.iter().copied())
            .find(|&v| wanted(v));
    }
    if t.data_type == DataType::Float16 as i32 {
        let from_raw = raw
            .as_chunks::<2>()
            .0
            .iter()
            .map(|c| u16::from_le_bytes(*c));
        let from_ints = t.int32_data.iter().map(|&x| x as u16);
        return from_raw
            .chain(from_ints)
            .map(|b| half::f16::from_bits(b).to_f32())
            .find(|&v| wanted(v));
    }
    None
}

/// Declared dimensions for messages: `[?, 5, 1, 1]`, `?` for a dimension without a size.
fn shown_dims(dims: &[Option<i64>]) -> String {
    let shown: Vec<String> = dims
        .iter()
        .map(|d| d.map_or("?".to_string(), |d| d.to_string()))
        .collect();
    format!("[{}]", shown.join(", "))
}

/// A node for messages: "node `conv1` (Conv)", or "a Conv node" when it has no name.
pub(crate) fn describe_node(node: &pb::NodeProto) -> String {
    match (node.name.as_str(), node.op_type.as_str()) {
        ("", "") => "a node with no operator type".to_string(),
        ("", op) => format!("a {op} node"),
        (name, "") => format!("node `{name}` (no operator type)"),
        (name, op) => format!("node `{name}` ({op})"),
    }
}

/// The attribute `name` of `node`, if it has one.
fn attr<'n>(node: &'n pb::NodeProto, name: &str) -> Option<&'n pb::AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}

/// The integer attribute `name` of `node`, if it has one.
pub(crate) fn attr_i(node: &pb::NodeProto, name: &str) -> Option<i64> {
    attr(node, name).map(|a| a.i)
}

/// The integer-list attribute `name` of `node`, if it has one.
pub(crate) fn attr_ints(node: &pb::NodeProto, name: &str) -> Option<Vec<i64>> {
    attr(node, name).map(|a| a.ints.clone())
}

/// The string attribute `name` of `node`, if it has one (not UTF-8 shown lossily).
fn attr_text(node: &pb::NodeProto, name: &str) -> Option<String> {
    attr(node, name).map(|a| String::from_utf8_lossy(&a.s).into_owned())
}

/// The values of an int64 tensor stored inline, `None` when it is not one.
pub(crate) fn int64s(t: &pb::TensorProto) -> Option<Vec<i64>> {
    if t.data_type != pb::tensor_proto::DataType::Int64 as i32 {
        return None;
    }
    if !t.int64_data.is_empty() {
        return Some(t.int64_data.clone());
    }
    (t.raw_data.len() % 8 == 0).then(|| {
        t.raw_data
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap_or_default()))
            .collect()
    })
}

/// The values of an int32 tensor stored inline, widened, `None` when it is not one.
fn int32s(t: &pb::TensorProto) -> Option<Vec<i64>> {
    if t.data_type != pb::tensor_proto::DataType::Int32 as i32 {
        return None;
    }
    if !t.int32_data.is_empty() {
        return Some(t.int32_data.iter().map(|&v| i64::from(v)).collect());
    }
    (t.raw_data.len() % 4 == 0).then(|| {
        t.raw_data
            .as_chunks::<4>()
            .0
            .iter()
            .map(|c| i64::from(i32::from_le_bytes(*c)))
            .collect()
    })
}

/// The dimensions of a tensor value: `Some(size)` when fixed, `None` when symbolic.
fn dims(info: &pb::ValueInfoProto) -> Result<Vec<Option<i64>>, String> {
    let Some(TypeValue::TensorType(tensor)) = info.r#type.as_ref().and_then(|t| t.value.as_ref())
    else {
        return Err("not a tensor".to_string());
    };
    if tensor.elem_type != pb::tensor_proto::DataType::Float as i32 {
        return Err(format!("element type {} is not float32", tensor.elem_type));
    }
    let shape = tensor.shape.as_ref().ok_or("no declared shape")?;
    Ok(shape
        .dim
        .iter()
        .map(|d| match d.value {
            Some(DimValue::DimValue(v)) => Some(v),
            _ => None,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(op: &str, domain: &str, attributes: Vec<pb::AttributeProto>) -> pb::NodeProto {
        pb::NodeProto {
            op_type: op.to_string(),
            domain: domain.to_string(),
            attribute: attributes,
            ..Default::default()
        }
    }

    fn attribute(name: &str, kind: pb::attribute_proto::AttributeType) -> pb::AttributeProto {
        pb::AttributeProto {
            name: name.to_string(),
            r#type: kind as i32,
            ..Default::default()
        }
    }

    fn opset(domain: &str, version: i64) -> Vec<pb::OperatorSetIdProto> {
        vec![pb::OperatorSetIdProto {
            domain: domain.to_string(),
            version,
        }]
    }

    use pb::attribute_proto::AttributeType::{Float, Floats, Int, Ints, Tensor};

    #[test]
    fn an_output_squashed_into_probabilities_is_seen_through_reshapes() {
        let step = |op: &str, inputs: &[&str], output: &str| pb::NodeProto {
            op_type: op.to_string(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.to_string()],
            ..Default::default()
        };
        let graph = |nodes: Vec<pb::NodeProto>| pb::GraphProto {
            node: nodes,
            ..Default::default()
        };
        let softmax_then = graph(vec![
            step("Gemm", &["x", "w"], "z"),
            step("Softmax", &["z"], "p"),
            step("Identity", &["p"], "q"),
            step("Reshape", &["q", "shape"], "y"),
        ]);
        assert_eq!(squashing_output(&softmax_then, "y"), Some("Softmax"));
        let by_hand = graph(vec![
            step("Exp", &["z"], "e"),
            step("ReduceSum", &["e"], "s"),
            step("Div", &["e", "s"], "y"),
        ]);
        assert!(squashing_output(&by_hand, "y").is_some_and(|m| m.contains("Exp, then Div")));
        let logits = graph(vec![
            step("Gemm", &["x", "w"], "z"),
            step("Identity", &["z"], "y"),
        ]);
        assert_eq!(squashing_output(&logits, "y"), None);
        let log_softmax = graph(vec![step("LogSoftmax", &["z"], "y")]);
        assert_eq!(squashing_output(&log_softmax, "y"), None);
        // A cycle of pass-through nodes ends the walk.
        let cycle = graph(vec![
            step("Identity", &["b"], "a"),
            step("Identity", &["a"], "b"),
        ]);
        assert_eq!(squashing_output(&cycle, "a"), None);
    }

    #[test]
    fn nodes_tract_would_name_alike_are_renamed_apart() {
        let named = |name: &str, output: &str| pb::NodeProto {
            name: name.to_string(),
            output: vec![output.to_string()],
            ..Default::default()
        };
        let mut graph = pb::GraphProto {
            node: vec![
                named("logits", "gemm_out"),
                named("", "logits"),
                named("a", "a_out"),
                named("a", "a_out2"),
                named("a#3", "x"),
                named("", ""),
            ],
            ..Default::default()
        };
        name_nodes_apart(&mut graph);
        let names: Vec<&str> = graph.node.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["logits", "logits#1", "a", "a#3", "a#3#4", ""]);
    }

    #[test]
    fn the_schema_table_is_sorted_for_its_binary_search() {
        for pair in SCHEMAS.windows(2) {
            let (a, b) = (&pair[0], &pair[1]);
            assert!(
                (a.domain, a.op, a.since) < (b.domain, b.op, b.since),
                "{} {} {} before {} {} {}",
                a.domain,
                a.op,
                a.since,
                b.domain,
                b.op,
                b.since
            );
        }
    }

    /// A small table for the tests of `check_listed`, in place of the generated one.
    static TABLE: &[Checked] = &[
        Checked {
            domain: "",
            op: "BatchNormalization",
            since: 1,
            attributes: &["epsilon"],
        },
        Checked {
            domain: "",
            op: "Conv",
            since: 1,
            attributes: &[],
        },
        Checked {
            domain: "",
            op: "Pad",
            since: 11,
            attributes: &["mode=edge", "pads"],
        },
    ];

    fn valued(name: &str, value: Value) -> pb::AttributeProto {
        match value {
            Value::Int(i) => pb::AttributeProto {
                i,
                ..attribute(name, Int)
            },
            Value::Float(f) => pb::AttributeProto {
                f,
                ..attribute(name, Float)
            },
            Value::Text(s) => pb::AttributeProto {
                s: s.as_bytes().to_vec(),
                ..attribute(name, pb::attribute_proto::AttributeType::String)
            },
            Value::Ints(v) => pb::AttributeProto {
                ints: v.to_vec(),
                ..attribute(name, Ints)
            },
            Value::Texts(v) => pb::AttributeProto {
                strings: v.iter().map(|s| s.as_bytes().to_vec()).collect(),
                ..attribute(name, pb::attribute_proto::AttributeType::Strings)
            },
        }
    }

    #[test]
    fn operators_missing_from_the_checked_table_are_refused_with_the_way_out() {
        let relu = node("Relu", "", vec![]);
        let refused = check_listed(&relu, &opset("", 13), TABLE).unwrap_err();
        assert!(
            refused.starts_with("Relu (ai.onnx) has not been checked against onnxruntime")
                && refused.contains("`student compile`")
                && refused.contains("--unchecked-operators"),
            "{refused}"
        );
        // `ai.onnx` is the default domain spelled out.
        let conv = node("Conv", "ai.onnx", vec![]);
        assert_eq!(check_listed(&conv, &opset("", 13), TABLE), Ok(()));
        let ml = node("Conv", "ai.onnx.ml", vec![]);
        assert!(check_listed(&ml, &opset("ai.onnx.ml", 3), TABLE).is_err());
        let refused = check_listed(&conv, &[], TABLE).unwrap_err();
        assert!(
            refused.starts_with("the model imports no opset of ai.onnx, so which Conv"),
            "{refused}"
        );
    }

    #[test]
    fn versions_older_than_the_checked_ones_are_refused() {
        let pad = node("Pad", "", vec![]);
        // Pad's versions: 2, then 11 (pads became an input), 13, 18, ...
        assert_eq!(check_listed(&pad, &opset("", 11), TABLE), Ok(()));
        assert_eq!(check_listed(&pad, &opset("", 19), TABLE), Ok(()));
        let refused = check_listed(&pad, &opset("", 10), TABLE).unwrap_err();
        assert!(
            refused.starts_with(
                "Pad of opset 10 (its version 2) has not been checked against onnxruntime on \
                 the tract path, only versions from 11;"
            ),
            "{refused}"
        );
    }

    #[test]
    fn unlisted_attributes_pass_only_at_their_schema_defaults() {
        let check = |op: &str, a: pb::AttributeProto| {
            check_listed(&node(op, "", vec![a]), &opset("", 15), TABLE)
        };
        // Listed: any value.
        assert_eq!(
            check("BatchNormalization", valued("epsilon", Value::Float(0.25))),
            Ok(())
        );
        // Written out at the default (as exporters do), then changed.
        assert_eq!(
            check("BatchNormalization", valued("momentum", Value::Float(0.9))),
            Ok(())
        );
        let refused =
            check("BatchNormalization", valued("momentum", Value::Float(0.5))).unwrap_err();
        assert!(
            refused.starts_with("attribute `momentum` = 0.5 (default 0.9) has not been checked"),
            "{refused}"
        );
        assert_eq!(
            check("BatchNormalization", valued("training_mode", Value::Int(0))),
            Ok(())
        );
        assert!(check("BatchNormalization", valued("training_mode", Value::Int(1))).is_err());
        assert_eq!(
            check("Pad", valued("mode", Value::Text("constant"))),
            Ok(())
        );
        // A choice passes by value.
        assert_eq!(check("Pad", valued("mode", Value::Text("edge"))), Ok(()));
        let refused = check("Pad", valued("mode", Value::Text("reflect"))).unwrap_err();
        assert!(
            refused.starts_with(
                "attribute `mode` = \"reflect\" (default \"constant\") has not been checked \
                 against onnxruntime on the tract path (checked: edge);"
            ),
            "{refused}"
        );
        let tensor = pb::AttributeProto {
            t: Some(pb::TensorProto::default()),
            ..attribute("mode", Tensor)
        };
        assert!(check("Pad", tensor).is_err());
        // A default of another type than the attribute's is not the default.
        assert!(check("Pad", valued("mode", Value::Int(0))).is_err());
        // An attribute without a default counts as set whenever it is present.
        let refused = check("Conv", valued("kernel_shape", Value::Ints(&[3, 3]))).unwrap_err();
        assert!(
            refused.starts_with(
                "attribute `kernel_shape` = [3, 3] has not been checked against \
                                 onnxruntime on the tract path;"
            ),
            "{refused}"
        );
    }

    #[test]
    fn the_checked_table_is_sorted_and_names_attributes_its_operators_take() {
        for pair in CHECKED.windows(2) {
            assert!(
                (pair[0].domain, pair[0].op) < (pair[1].domain, pair[1].op),
                "{}",
                pair[1].op
            );
        }
        for c in CHECKED {
            let takes = |name: &str| {
                schema_rows(c.domain, c.op)
                    .iter()
                    .any(|s| s.attributes.iter().any(|(a, _)| *a == name))
            };
            for key in c.attributes {
                let name = key.split('=').next().unwrap_or(key);
                assert!(takes(name), "{} {} does not take `{name}`", c.domain, c.op);
            }
        }
    }

    #[test]
    fn attributes_an_operator_takes_pass() {
        let conv = node(
            "Conv",
            "",
            vec![attribute("dilations", Ints), attribute("group", Int)],
        );
        assert_eq!(check_attributes(&conv, &opset("", 13)), Ok(()));
        let leaky = node("LeakyRelu", "ai.onnx", vec![attribute("alpha", Float)]);
        assert_eq!(check_attributes(&leaky, &opset("ai.onnx", 6)), Ok(()));
        assert_eq!(check_attributes(&leaky, &opset("", 17)), Ok(()));
    }

    #[test]
    fn a_misspelt_attribute_is_refused_with_what_the_operator_takes() {
        let conv = node("Conv", "", vec![attribute("dilation", Ints)]);
        let message = check_attributes(&conv, &opset("", 13)).unwrap_err();
        assert_eq!(
            message,
            "attribute `dilation` is not one that Conv takes at opset 13 (it takes auto_pad, \
             dilations, group, kernel_shape, pads, strides)"
        );
        let relu = node("Relu", "", vec![attribute("alpha", Float)]);
        assert!(
            check_attributes(&relu, &opset("", 14))
                .unwrap_err()
                .ends_with("(it takes none)")
        );
    }

    #[test]
    fn the_opset_decides_which_attributes_exist() {
        // LeakyRelu took `consumed_inputs` until opset 6 dropped it.
        let leaky = node("LeakyRelu", "", vec![attribute("consumed_inputs", Ints)]);
        assert_eq!(check_attributes(&leaky, &opset("", 5)), Ok(()));
        assert!(check_attributes(&leaky, &opset("", 6)).is_err());
    }

    #[test]
    fn an_attribute_of_another_type_is_refused() {
        let leaky = node("LeakyRelu", "", vec![attribute("alpha", Int)]);
        assert_eq!(
            check_attributes(&leaky, &opset("", 13)),
            Err("attribute `alpha` must be of type FLOAT, found INT".to_string())
        );
        let untyped = pb::AttributeProto {
            name: "alpha".to_string(),
            f: 0.5,
            ..Default::default()
        };
        assert_eq!(
            check_attributes(&node("LeakyRelu", "", vec![untyped]), &opset("", 13)),
            Err("attribute `alpha` must be of type FLOAT, found UNDEFINED".to_string())
        );
    }

    #[test]
    fn operators_onnx_does_not_define_at_the_opset_are_refused() {
        // tract runs some operators of its own under standard names; onnxruntime refuses.
        let e = check_attributes(&node("Rsqrt", "", vec![]), &opset("", 13)).unwrap_err();
        assert_eq!(e, "Rsqrt is not an operator of ai.onnx (opset 13)");
        let e = check_attributes(&node("Gelu", "", vec![]), &opset("", 13)).unwrap_err();
        assert_eq!(
            e,
            "Gelu is not an operator of ai.onnx opset 13; it is defined from opset 20"
        );
        assert_eq!(
            check_attributes(&node("Gelu", "ai.onnx", vec![]), &opset("", 20)),
            Ok(())
        );
    }

    #[test]
    fn tree_ensemble_tensor_attributes_tract_ignores_are_refused() {
        // tract read `base_values` and ignored `base_values_as_tensor`: another class
        // than onnxruntime's on 12 of 16 images.
        let graph = pb::GraphProto::default();
        let tree = node(
            "TreeEnsembleClassifier",
            "ai.onnx.ml",
            vec![attribute("base_values_as_tensor", Tensor)],
        );
        let e = check_meaning(&tree, &graph).unwrap_err();
        assert!(
            e.contains("`base_values_as_tensor` is not supported"),
            "{e}"
        );
        assert!(e.contains("give `base_values` instead"), "{e}");
        let listed = node(
            "TreeEnsembleClassifier",
            "ai.onnx.ml",
            vec![attribute("base_values", Floats)],
        );
        assert_eq!(check_meaning(&listed, &graph), Ok(()));
    }

    #[test]
    fn what_the_table_does_not_know_is_left_to_tract() {
        let typo = || vec![attribute("alph", Float)];
        // An opset newer than the table's, and a model that imports no opset for the
        // node's domain.
        assert_eq!(
            check_attributes(&node("NoSuchOp", "", typo()), &opset("", 27)),
            Ok(())
        );
        assert_eq!(
            check_attributes(&node("LeakyRelu", "", typo()), &opset("ai.onnx.ml", 3)),
            Ok(())
        );
    }
}
