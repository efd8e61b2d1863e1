//! How much a model file may make the runtime allocate, checked before it allocates.
//!
//! A model file is untrusted input: a few kilobytes can declare a tensor of terabytes. The
//! checks here run on what a file declares (sizes of files, tensors, graphs and strings)
//! and refuse it with [`Error::TooLarge`] before anything of that size is allocated.

use crate::error::Error;

/// Upper bounds on what opening and running a model may allocate. The defaults suit a
/// phone; [`Limits::unlimited`] turns every check off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The largest model file, in bytes.
    pub max_file_bytes: u64,
    /// The most nodes a graph may have (a compiled student: ops), subgraphs included.
    /// tract's planning time grows faster than linearly with the node count (a chain of
    /// 1,000 nodes took 2.4 s to open here, 2,000 took 12 s), so the default is modest:
    /// students are small graphs.
    pub max_nodes: u64,
    /// The largest single tensor, in bytes: weights, declared inputs, constants the graph
    /// makes while it is planned, and every intermediate value at the opening batch size.
    pub max_tensor_bytes: u64,
    /// The most bytes of weights (initializers and constants) in one model.
    pub max_weight_bytes: u64,
    /// The longest string: names, metadata keys and values (the model card), doc strings.
    pub max_string_bytes: u64,
    /// The most metadata entries (the model card's sections and any others). A card has
    /// about ten; a 14 MB file of a million tiny entries took 250 MB to open with no
    /// bound on their count.
    pub max_metadata_entries: u64,
    /// The most working memory one call may use at the opening batch size, in bytes
    /// (intermediate values and unfolded convolution inputs of a compiled student).
    pub max_scratch_bytes: u64,
}

const MIB: u64 = 1 << 20;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_file_bytes: 512 * MIB,
            max_nodes: 1_000,
            max_tensor_bytes: 256 * MIB,
            max_weight_bytes: 512 * MIB,
            max_string_bytes: MIB,
            max_metadata_entries: 1_000,
            max_scratch_bytes: 512 * MIB,
        }
    }
}

impl Limits {
    /// No limits: every check passes. For files the app made itself.
    pub fn unlimited() -> Self {
        Limits {
            max_file_bytes: u64::MAX,
            max_nodes: u64::MAX,
            max_tensor_bytes: u64::MAX,
            max_weight_bytes: u64::MAX,
            max_string_bytes: u64::MAX,
            max_metadata_entries: u64::MAX,
            max_scratch_bytes: u64::MAX,
        }
    }
}

/// One limit being applied to one model.
pub(crate) struct Check<'a> {
    pub limits: &'a Limits,
    pub origin: &'a str,
}

/// Which limit, for messages: its field name and unit.
#[derive(Clone, Copy)]
pub(crate) enum Limit {
    File,
    Nodes,
    Tensor,
    Weights,
    String,
    Metadata,
    Scratch,
}

impl Check<'_> {
    /// `Ok` when `found` (`None`: it overflowed 64 bits) is within `limit`.
    pub(crate) fn within(
        &self,
        limit: Limit,
        found: Option<u64>,
        what: impl FnOnce() -> String,
    ) -> Result<(), Error> {
        let l = self.limits;
        let (max, option, unit) = match limit {
            Limit::File => (l.max_file_bytes, "max_file_bytes", "bytes"),
            Limit::Nodes => (l.max_nodes, "max_nodes", "nodes"),
            Limit::Tensor => (l.max_tensor_bytes, "max_tensor_bytes", "bytes"),
            Limit::Weights => (l.max_weight_bytes, "max_weight_bytes", "bytes"),
            Limit::String => (l.max_string_bytes, "max_string_bytes", "bytes"),
            Limit::Metadata => (l.max_metadata_entries, "max_metadata_entries", "entries"),
            Limit::Scratch => (l.max_scratch_bytes, "max_scratch_bytes", "bytes"),
        };
        match found {
            Some(n) if n <= max => Ok(()),
            _ => Err(Error::TooLarge {
                origin: self.origin.to_string(),
                what: what(),
                found: found.map_or_else(|| "more than 2^64".to_string(), |n| n.to_string()),
                unit,
                limit: max,
                option,
            }),
        }
    }
}

/// The number of elements of `dims`, `None` on overflow.
pub(crate) fn elements(dims: impl IntoIterator<Item = u64>) -> Option<u64> {
    dims.into_iter().try_fold(1u64, |acc, d| acc.checked_mul(d))
}

#[cfg(feature = "onnx")]
pub(crate) use onnx::check_onnx;

/// Decodes an untrusted ONNX file (named `origin` in errors) as opening does: what decoding
/// would allocate is counted from the encoding first, and the decoded model is checked
/// against `limits` at batch size 1. For tools that edit ONNX files, such as the
/// quantizer, so that a hostile file costs them no more than it costs opening.
///
/// # Errors
/// [`Error::NotOnnx`] for an empty file, a broken encoding or a message that is not a
/// model, [`Error::TooLarge`] naming the limit a count or size exceeds, and
/// [`Error::Malformed`] for a graph the checks refuse.
#[cfg(feature = "onnx")]
pub fn decode_onnx(
    bytes: &[u8],
    origin: &str,
    limits: &Limits,
) -> Result<tract_onnx::pb::ModelProto, Error> {
    let check = Check { limits, origin };
    let proto = crate::onnx_wire::decode_checked(bytes, &check)?;
    check_onnx(&proto, &check, 1)?;
    Ok(proto)
}

#[cfg(feature = "onnx")]
mod onnx {
    //! The checks on an ONNX graph, run on the decoded protobuf before tract sees it.
    //!
    //! tract evaluates every node whose inputs are constant while it plans (that is how it
    //! folds shape arithmetic), so a 1 KB graph whose `ConstantOfShape` is fed `[65536,
    //! 65536]` would allocate 16 GiB at open. Besides the sizes a file declares outright,
    //! this follows the constant part of the graph: the shapes of constant values, and the
    //! values of small integer constants (the shapes exporters compute), through the
    //! operators that exporters use for that, and checks what each node would make. A
    //! constant whose shape it cannot follow is left to the check of the planned graph
    //! (`Engine::plan`), which bounds every value of the plan before it runs; see
    //! docs/security.md for what that leaves open.

    use std::collections::{HashMap, HashSet};

    use tract_onnx::pb;
    use tract_onnx::pb::tensor_proto::{DataLocation, DataType};

    use super::{Check, Limit, elements};
    use crate::error::Error;
    use crate::onnx_info::{attr_i, attr_ints};

    /// Integer constants up to this many elements have their values followed.
    const SMALL: u64 = 64;

    /// What is known of a constant value: its shape, the size of an element, and its
    /// elements when it is a small integer tensor.
    #[derive(Clone)]
    struct Known {
        dims: Vec<u64>,
        elem: u64,
        ints: Option<Vec<i64>>,
    }

    impl Known {
        fn count(&self) -> Option<u64> {
            elements(self.dims.iter().copied())
        }
    }

    /// Checks `proto` against the limits; `batch` replaces a symbolic leading dimension
    /// of the input.
    pub(crate) fn check_onnx(
        proto: &pb::ModelProto,
        check: &Check<'_>,
        batch: u64,
    ) -> Result<(), Error> {
        let malformed = |reason: String| Error::Malformed {
            origin: check.origin.to_string(),
            reason,
        };
        let entries = proto.metadata_props.len() as u64;
        check.within(Limit::Metadata, Some(entries), || {
            "the metadata entry count".to_string()
        })?;
        for p in &proto.metadata_props {
            string(check, "a metadata key", &p.key)?;
            string(
                check,
                &format!("metadata entry `{}`", shown(&p.key)),
                &p.value,
            )?;
        }
        string(check, "the producer name", &proto.producer_name)?;
        string(check, "the model's doc string", &proto.doc_string)?;
        let Some(graph) = &proto.graph else {
            return Ok(());
        };
        let mut nodes = 0u64;
        let mut weights = 0u64;
        walk(graph, None, check, &mut nodes, &mut weights, &malformed)?;
        check.within(Limit::Nodes, Some(nodes), || {
            "the graph's node count (subgraphs included)".to_string()
        })?;
        check.within(Limit::Weights, Some(weights), || {
            "the total size of the graph's weights".to_string()
        })?;
        follow_constants(graph, check, batch)
    }

    fn string(check: &Check<'_>, what: &str, s: &str) -> Result<(), Error> {
        check.within(Limit::String, Some(s.len() as u64), || what.to_string())
    }

    /// The most dimensions an axis attribute may address.
    const MAX_RANK: u64 = 64;

    /// At most this many characters of a name from the file go into a message.
    const SHOWN_CHARS: usize = 80;

    /// `name` for an error message: a file's names may be up to `max_string_bytes` long.
    fn shown(name: &str) -> String {
        match name.char_indices().nth(SHOWN_CHARS) {
            Some((end, _)) => format!("{}...", &name[..end]),
            None => name.to_string(),
        }
    }

    /// Records `by` as the writer of value `name`; a second writer is an error. Single
    /// assignment is what ONNX requires: with two writers, which one a reader sees would
    /// depend on the engine's node order.
    fn define<'g>(
        writers: &mut HashMap<&'g str, String>,
        name: &'g str,
        by: String,
        malformed: &dyn Fn(String) -> Error,
    ) -> Result<(), Error> {
        if name.is_empty() {
            return Ok(());
        }
        match writers.insert(name, by.clone()) {
            Some(first) => Err(malformed(format!(
                "value `{}` is written by {first} and by {by}; each value must have one writer",
                shown(name)
            ))),
            None => Ok(()),
        }
    }

    /// Counts nodes and weights of `graph` and its subgraphs, checking every string and
    /// every constant tensor on the way, and that each value has one writer (the graph's
    /// input, an initializer or a node) across this graph and the graphs enclosing it:
    /// `outer` holds the values those define, `None` for the main graph.
    fn walk<'g>(
        graph: &'g pb::GraphProto,
        outer: Option<&HashMap<&'g str, String>>,
        check: &Check<'_>,
        nodes: &mut u64,
        weights: &mut u64,
        malformed: &dyn Fn(String) -> Error,
    ) -> Result<(), Error> {
        string(check, "the graph's name", &graph.name)?;
        string(check, "the graph's doc string", &graph.doc_string)?;
        for t in &graph.initializer {
            *weights = weights.saturating_add(tensor(t, "initializer", check, malformed)?);
        }
        for v in graph
            .input
            .iter()
            .chain(&graph.output)
            .chain(&graph.value_info)
        {
            string(check, "a value name", &v.name)?;
        }
        // Every string a message below may quote is within the limit from here on.
        for node in &graph.node {
            let strings = [&node.name, &node.op_type, &node.domain, &node.doc_string];
            for s in strings.into_iter().chain(&node.input).chain(&node.output) {
                string(check, "a string of a node", s)?;
            }
        }
        let mut writers = outer.cloned().unwrap_or_default();
        for v in &graph.input {
            define(&mut writers, &v.name, "the graph's input".into(), malformed)?;
        }
        let inputs: HashSet<&str> = graph.input.iter().map(|v| v.name.as_str()).collect();
        // The main graph (no enclosing graph) must compute its output: an initializer as
        // the output is a constant, not an answer. A branch of an `If` may be constant.
        let main = outer.is_none();
        for t in &graph.initializer {
            // An initializer may give a graph input its default value (IR version 3).
            if inputs.contains(t.name.as_str()) {
                continue;
            }
            if main && graph.output.iter().any(|o| o.name == t.name) {
                return Err(malformed(format!(
                    "the graph's output `{}` is an initializer: a constant, not computed from the \
                     input",
                    shown(&t.name)
                )));
            }
            define(&mut writers, &t.name, "an initializer".into(), malformed)?;
        }
        let names: Vec<String> = graph
            .node
            .iter()
            .map(|node| {
                shown(if node.name.is_empty() {
                    &node.op_type
                } else {
                    &node.name
                })
            })
            .collect();
        for (node, name) in graph.node.iter().zip(&names) {
            for out in &node.output {
                define(&mut writers, out, format!("node `{name}`"), malformed)?;
            }
        }
        for (node, name) in graph.node.iter().zip(&names) {
            *nodes += 1;
            // Engines disagree on such a window (onnxruntime refuses it, tract took the
            // pads), and ONNX allows one of the two.
            let auto_pad = node.attribute.iter().find(|a| a.name == "auto_pad");
            let explicit = auto_pad.is_some_and(|a| !matches!(&a.s[..], b"" | b"NOTSET"));
            if explicit && node.attribute.iter().any(|a| a.name == "pads") {
                return Err(malformed(format!(
                    "node `{name}` gives both auto_pad and pads; ONNX allows one of them"
                )));
            }
            for a in &node.attribute {
                string(
                    check,
                    &format!("an attribute name of node `{name}`"),
                    &a.name,
                )?;
                let what = format!("attribute `{}` of node `{name}`", shown(&a.name));
                // tract normalizes some axes unchecked (LayerNormalization's `axis` below
                // -rank wraps to about 2^64, and opening loops that many times).
                if a.name == "axis" || a.name == "axes" {
                    let axes = std::iter::once(a.i).chain(a.ints.iter().copied());
                    if let Some(bad) = axes.into_iter().find(|v| v.unsigned_abs() > MAX_RANK) {
                        return Err(malformed(format!(
                            "{what} is {bad}: an axis lies within the rank, and no value has \
                             more than {MAX_RANK} dimensions"
                        )));
                    }
                }
                // The same normalization in tract's LayerNormalization, RMSNormalization and
                // OneHot wraps for any axis below minus the input's rank, which is not known
                // before tract runs: of the negative axes only -1, the default, is taken.
                if a.name == "axis"
                    && a.i < -1
                    && matches!(
                        node.op_type.as_str(),
                        "LayerNormalization" | "RMSNormalization" | "OneHot"
                    )
                {
                    return Err(malformed(format!(
                        "{what} is {}: for {} the runtime takes -1 or a non-negative axis (count \
                         the axis from the front)",
                        a.i,
                        shown(&node.op_type)
                    )));
                }
                // tract takes a `perm` as given: one repeating an axis made opening allocate
                // without bound (16 GB before it was stopped).
                if a.name == "perm" && !is_permutation(&a.ints) {
                    return Err(malformed(format!(
                        "{what} is {:?}: expected each of 0..{} once",
                        &a.ints[..a.ints.len().min(16)],
                        a.ints.len()
                    )));
                }
                for s in std::iter::once(&a.s).chain(&a.strings) {
                    check.within(Limit::String, Some(s.len() as u64), || {
                        format!("a string of {what}")
                    })?;
                }
                for t in a.t.iter().chain(&a.tensors) {
                    *weights = weights.saturating_add(tensor(t, &what, check, malformed)?);
                }
                for g in a.g.iter().chain(&a.graphs) {
                    walk(g, Some(&writers), check, nodes, weights, malformed)?;
                }
            }
        }
        Ok(())
    }

    /// Whether `perm` holds each of `0..perm.len()` exactly once.
    fn is_permutation(perm: &[i64]) -> bool {
        let mut seen = vec![false; perm.len()];
        perm.iter().all(|&p| {
            let Some(slot) = usize::try_from(p).ok().and_then(|p| seen.get_mut(p)) else {
                return false;
            };
            !std::mem::replace(slot, true)
        })
    }

    /// The size in bytes of an element of `data_type`, `None` for strings and unknown types.
    fn element_size(data_type: i32) -> Option<u64> {
        Some(match DataType::try_from(data_type).ok()? {
            DataType::Float | DataType::Int32 | DataType::Uint32 => 4,
            DataType::Double | DataType::Int64 | DataType::Uint64 | DataType::Complex64 => 8,
            DataType::Complex128 => 16,
            DataType::Float16 | DataType::Bfloat16 | DataType::Int16 | DataType::Uint16 => 2,
            DataType::Int8 | DataType::Uint8 | DataType::Bool => 1,
            _ => return None,
        })
    }

    /// Checks one constant tensor's declared size and that its data holds what its
    /// dimensions say; returns its size in bytes.
    fn tensor(
        t: &pb::TensorProto,
        what: &str,
        check: &Check<'_>,
        malformed: &dyn Fn(String) -> Error,
    ) -> Result<u64, Error> {
        let label = format!("{what} `{}`", shown(&t.name));
        string(check, "a tensor name", &t.name)?;
        if t.data_location == Some(DataLocation::External as i32) || !t.external_data.is_empty() {
            return Err(malformed(format!(
                "{label} keeps its data in an external file; only self-contained models \
                 are opened"
            )));
        }
        if let Some(d) = t.dims.iter().find(|&&d| d < 0) {
            return Err(malformed(format!(
                "{label} has a negative dimension {d} in {:?}",
                t.dims
            )));
        }
        let count = elements(t.dims.iter().map(|&d| d as u64));
        let Some(size) = element_size(t.data_type) else {
            // Strings: what the file holds is what would be allocated.
            let held: u64 = t.string_data.iter().map(|s| s.len() as u64).sum();
            check.within(Limit::Tensor, Some(held), || format!("the size of {label}"))?;
            return Ok(held);
        };
        let bytes = count.and_then(|n| n.checked_mul(size));
        check.within(Limit::Tensor, bytes, || {
            format!("the size of {label}, dimensions {:?},", t.dims)
        })?;
        let (count, bytes) = (count.unwrap_or(0), bytes.unwrap_or(0));
        // What the file holds: raw bytes, or one of the typed repeated fields.
        let held = if !t.raw_data.is_empty() {
            t.raw_data.len() as u64
        } else {
            let n = t.float_data.len()
                + t.int32_data.len()
                + t.int64_data.len()
                + t.double_data.len()
                + t.uint64_data.len();
            // Complex numbers take two entries each.
            let per = match DataType::try_from(t.data_type) {
                Ok(DataType::Complex64 | DataType::Complex128) => 2,
                _ => 1,
            };
            n as u64 / per * size
        };
        if held != bytes && !(held == 0 && count == 0) {
            return Err(malformed(format!(
                "{label} declares dimensions {:?} ({count} elements, {bytes} bytes) but holds \
                 {held} bytes",
                t.dims
            )));
        }
        // Narrow types kept in `int32_data` take one element per entry; an entry out of
        // the type's range is an invalid file (onnxruntime refuses it; tract kept the low
        // bits of a float16's).
        if let Some((low, high, kind)) = int32_data_range(t.data_type)
            && let Some(v) = t.int32_data.iter().find(|&&v| !(low..=high).contains(&v))
        {
            return Err(malformed(format!(
                "{label} holds {v} in int32_data, out of the range of {kind} ({low} to {high})"
            )));
        }
        Ok(bytes)
    }

    /// The values an `int32_data` entry may take for a type narrower than 32 bits, and
    /// what they are; `None` for other types.
    fn int32_data_range(data_type: i32) -> Option<(i32, i32, &'static str)> {
        Some(match DataType::try_from(data_type).ok()? {
            DataType::Float16 => (0, 0xffff, "float16 bit patterns"),
            DataType::Bfloat16 => (0, 0xffff, "bfloat16 bit patterns"),
            DataType::Int16 => (i16::MIN.into(), i16::MAX.into(), "int16"),
            DataType::Uint16 => (0, u16::MAX.into(), "uint16"),
            DataType::Int8 => (i8::MIN.into(), i8::MAX.into(), "int8"),
            DataType::Uint8 => (0, u8::MAX.into(), "uint8"),
            DataType::Bool => (0, 1, "bool"),
            _ => return None,
        })
    }

    /// Follows constant values through the graph and checks what each node would make.
    fn follow_constants(
        graph: &pb::GraphProto,
        check: &Check<'_>,
        batch: u64,
    ) -> Result<(), Error> {
        let mut known: HashMap<&str, Known> = HashMap::new();
        // Every value tract can evaluate while planning, with an upper bound on its
        // element count. A value missing here is computed from the input at run time.
        let mut constant: HashMap<&str, u64> = HashMap::new();
        for t in &graph.initializer {
            if let Some(k) = known_tensor(t) {
                constant.insert(t.name.as_str(), k.count().unwrap_or(u64::MAX));
                known.insert(t.name.as_str(), k);
            } else {
                // Strings and unknown types: what the file holds bounds them.
                constant.insert(t.name.as_str(), t.string_data.len() as u64);
            }
        }
        let enforce = check.limits.max_tensor_bytes != u64::MAX;
        // Shapes of graph inputs, for `Shape` of an input. A symbolic leading dimension
        // is the batch.
        let mut input_dims: HashMap<&str, Vec<u64>> = HashMap::new();
        for v in &graph.input {
            if let Some(dims) = value_dims(v, batch) {
                let bytes = elements(dims.iter().copied()).and_then(|n| n.checked_mul(4));
                check.within(Limit::Tensor, bytes, || {
                    format!("the size of input `{}`, dimensions {dims:?},", v.name)
                })?;
                input_dims.insert(v.name.as_str(), dims);
            }
        }
        for node in &graph.node {
            let input = |i: usize| -> Option<&Known> {
                node.input.get(i).and_then(|n| known.get(n.as_str()))
            };
            let made = match node.op_type.as_str() {
                "Constant" => constant_node(node),
                "Shape" => node
                    .input
                    .first()
                    .and_then(|n| {
                        known
                            .get(n.as_str())
                            .map(|k| k.dims.clone())
                            .or_else(|| input_dims.get(n.as_str()).cloned())
                    })
                    .map(|dims| {
                        let ints = dims.iter().map(|&d| d as i64).collect::<Vec<_>>();
                        Known {
                            dims: vec![ints.len() as u64],
                            elem: 8,
                            ints: Some(ints),
                        }
                    }),
                op => {
                    let all_known = node
                        .input
                        .iter()
                        .all(|n| n.is_empty() || known.contains_key(n.as_str()));
                    follow(op, node, &input, all_known)
                }
            };
            let label = || format!("the output of {}", crate::onnx_info::describe_node(node));
            // tract evaluates a node at planning time when all its inputs are (`Shape`
            // and `Size` only need their input's shape, fixed once the input is).
            let is_constant = matches!(node.op_type.as_str(), "Shape" | "Size")
                || node
                    .input
                    .iter()
                    .all(|n| n.is_empty() || constant.contains_key(n.as_str()));
            let bound = if is_constant {
                let bounds: Vec<u64> = node
                    .input
                    .iter()
                    .filter(|n| !n.is_empty())
                    .filter_map(|n| constant.get(n.as_str()).copied())
                    .collect();
                match (&made, constant_bound(&node.op_type, &bounds)) {
                    (Some(k), _) => Some(k.count()),
                    (None, Some(b)) => Some(b),
                    (None, None) if enforce => {
                        return Err(Error::Unsupported {
                            origin: check.origin.to_string(),
                            reason: format!(
                                "{} is computed while the model is planned, and the runtime \
                                 cannot bound its size before it is (Limits::unlimited() \
                                 opens such models)",
                                label()
                            ),
                        });
                    }
                    (None, None) => Some(Some(u64::MAX)),
                }
            } else {
                None
            };
            // Ops that make tensors from a shape are checked even when their data input
            // is not constant: the shape alone says how much they make. Values computed
            // at run time are checked on the planned graph (`Engine::plan`).
            let size = match (&made, bound) {
                (Some(k), _) => k.count().and_then(|n| n.checked_mul(k.elem)),
                (None, Some(b)) => b.and_then(|n| n.checked_mul(4)),
                (None, None) => made_from_shape(node, &input)
                    .map(|dims| elements(dims).and_then(|n| n.checked_mul(4)))
                    .unwrap_or(Some(0)),
            };
            check.within(Limit::Tensor, size, label)?;
            // A node output may reuse the name of an initializer or an earlier value.
            for out in &node.output {
                known.remove(out.as_str());
                constant.remove(out.as_str());
            }
            if let Some(b) = bound {
                for out in node.output.iter().filter(|o| !o.is_empty()) {
                    constant.insert(out.as_str(), b.unwrap_or(u64::MAX));
                }
            }
            if let (Some(k), Some(out)) = (made, node.output.first()) {
                known.insert(out.as_str(), k);
            }
        }
        Ok(())
    }

    /// An upper bound on the elements of a constant node's output from its inputs' bounds,
    /// for operators that never make more than their inputs, or more than their product;
    /// `None` for operators whose size depends on their inputs' values (which only
    /// `follow` computes) or that this does not know.
    fn constant_bound(op: &str, inputs: &[u64]) -> Option<Option<u64>> {
        let max = inputs.iter().copied().max().unwrap_or(1);
        let product = inputs
            .iter()
            .try_fold(1u64, |acc, &b| acc.checked_mul(b.max(1)));
        Some(match op {
            // Shapes have at most a few dimensions.
            "Shape" => Some(64),
            "Size" => Some(1),
            "Identity" | "Cast" | "CastLike" | "Neg" | "Abs" | "Relu" | "Sigmoid" | "Tanh"
            | "Exp" | "Log" | "Sqrt" | "Floor" | "Ceil" | "Round" | "Sign" | "Reciprocal"
            | "Erf" | "Not" | "Softmax" | "LogSoftmax" | "DequantizeLinear" | "QuantizeLinear"
            | "Clip" | "Squeeze" | "Unsqueeze" | "Reshape" | "Flatten" | "Transpose" | "Slice"
            | "Split" | "CumSum" | "ReduceSum" | "ReduceMean" | "ReduceMax" | "ReduceMin"
            | "ReduceProd" | "ArgMax" | "ArgMin" | "IsNaN" | "IsInf" | "Dropout"
            | "BatchNormalization" | "LeakyRelu" | "Elu" | "HardSigmoid" | "HardSwish"
            | "Softplus" | "Gelu" | "Sin" | "Cos" => Some(max),
            // Broadcasting and products make at most the product of their inputs.
            "Add" | "Sub" | "Mul" | "Div" | "Pow" | "Max" | "Min" | "Sum" | "Mean" | "Mod"
            | "And" | "Or" | "Xor" | "Equal" | "Less" | "Greater" | "LessOrEqual"
            | "GreaterOrEqual" | "Where" | "PRelu" | "Gather" | "GatherElements" | "MatMul"
            | "Gemm" => product,
            "Concat" => inputs.iter().try_fold(0u64, |acc, &b| acc.checked_add(b)),
            "NonZero" => max.checked_mul(8),
            _ => return None,
        })
    }

    /// The dimensions of a graph input; a symbolic or missing first dimension is `batch`.
    fn value_dims(v: &pb::ValueInfoProto, batch: u64) -> Option<Vec<u64>> {
        use pb::tensor_shape_proto::dimension::Value;
        use pb::type_proto::Value as TypeValue;
        let Some(TypeValue::TensorType(t)) = v.r#type.as_ref()?.value.as_ref() else {
            return None;
        };
        let shape = t.shape.as_ref()?;
        shape
            .dim
            .iter()
            .enumerate()
            .map(|(i, d)| match d.value {
                Some(Value::DimValue(n)) if n > 0 => Some(n as u64),
                _ if i == 0 => Some(batch),
                _ => None,
            })
            .collect()
    }

    fn known_tensor(t: &pb::TensorProto) -> Option<Known> {
        let dims: Vec<u64> = t.dims.iter().map(|&d| d.max(0) as u64).collect();
        let count = elements(dims.iter().copied())?;
        let elem = element_size(t.data_type)?;
        let ints = if count <= SMALL {
            match DataType::try_from(t.data_type).ok()? {
                DataType::Int64 if !t.raw_data.is_empty() => Some(
                    t.raw_data
                        .chunks_exact(8)
                        .map(|c| i64::from_le_bytes(c.try_into().unwrap_or_default()))
                        .collect(),
                ),
                DataType::Int64 => Some(t.int64_data.clone()),
                DataType::Int32 if !t.raw_data.is_empty() => Some(
                    t.raw_data
                        .chunks_exact(4)
                        .map(|c| i32::from_le_bytes(c.try_into().unwrap_or_default()) as i64)
                        .collect(),
                ),
                DataType::Int32 => Some(t.int32_data.iter().map(|&v| v as i64).collect()),
                _ => None,
            }
            .filter(|v: &Vec<i64>| v.len() as u64 == count)
        } else {
            None
        };
        Some(Known { dims, elem, ints })
    }

    fn constant_node(node: &pb::NodeProto) -> Option<Known> {
        let a = node.attribute.first()?;
        match a.name.as_str() {
            "value" => known_tensor(a.t.as_ref()?),
            "value_ints" => Some(Known {
                dims: vec![a.ints.len() as u64],
                elem: 8,
                ints: Some(a.ints.clone()),
            }),
            "value_int" => Some(Known {
                dims: vec![],
                elem: 8,
                ints: Some(vec![a.i]),
            }),
            "value_floats" => Some(Known {
                dims: vec![a.floats.len() as u64],
                elem: 4,
                ints: None,
            }),
            _ => Some(Known {
                dims: vec![],
                elem: 4,
                ints: None,
            }),
        }
    }

    /// The shape `node` makes from a shape operand, when that operand is known, whatever
    /// its data input is.
    fn made_from_shape<'k>(
        node: &pb::NodeProto,
        input: &dyn Fn(usize) -> Option<&'k Known>,
    ) -> Option<Vec<u64>> {
        let ints = |i: usize| input(i).and_then(|k| k.ints.clone());
        let dims = match node.op_type.as_str() {
            "ConstantOfShape" | "Expand" | "RandomNormal" | "RandomUniform" => {
                let i = if node.op_type == "Expand" { 1 } else { 0 };
                ints(i)?
            }
            "Tile" => ints(1)?,
            "OneHot" => ints(1)?,
            _ => return None,
        };
        Some(dims.iter().map(|&d| d.max(0) as u64).collect())
    }

    /// What a node makes when all its inputs are known; `None` when this does not follow it.
    fn follow<'k>(
        op: &str,
        node: &pb::NodeProto,
        input: &dyn Fn(usize) -> Option<&'k Known>,
        all_known: bool,
    ) -> Option<Known> {
        if !all_known {
            return None;
        }
        let x = input(0)?;
        let same = |ints: Option<Vec<i64>>| Known {
            dims: x.dims.clone(),
            elem: x.elem,
            ints,
        };
        let rank = x.dims.len() as i64;
        let axis = |a: i64, rank: i64| -> Option<usize> {
            let a = if a < 0 { a + rank } else { a };
            (0..rank).contains(&a).then_some(a as usize)
        };
        match op {
            "Identity" | "Cast" | "Neg" | "Abs" | "Relu" | "Sigmoid" | "Tanh" | "Exp" | "Log"
            | "Sqrt" | "Floor" | "Ceil" | "Round" | "Sign" | "Reciprocal" | "Erf" | "Not"
            | "Softmax" | "DequantizeLinear" | "QuantizeLinear" | "Clip" => {
                let elem = match op {
                    "Cast" => attr_i(node, "to")
                        .and_then(|t| element_size(t as i32))
                        .unwrap_or(x.elem),
                    "DequantizeLinear" => 4,
                    "QuantizeLinear" => 1,
                    _ => x.elem,
                };
                let ints = match op {
                    "Identity" | "Cast" => x.ints.clone(),
                    "Neg" => x
                        .ints
                        .as_ref()
                        .map(|v| v.iter().map(|a| a.wrapping_neg()).collect()),
                    _ => None,
                };
                Some(Known {
                    dims: x.dims.clone(),
                    elem,
                    ints,
                })
            }
            "Add" | "Sub" | "Mul" | "Div" | "Pow" | "Max" | "Min" | "Sum" | "Mod" | "And"
            | "Or" | "Equal" | "Less" | "Greater" | "LessOrEqual" | "GreaterOrEqual" | "Where"
            | "PRelu" => {
                let mut dims = x.dims.clone();
                for i in 1..node.input.len() {
                    dims = broadcast(&dims, &input(i)?.dims)?;
                }
                let ints = match op {
                    "Add" | "Sub" | "Mul" | "Div" | "Max" | "Min" | "Sum" => {
                        let mut acc = x.ints.clone();
                        for i in 1..node.input.len() {
                            acc = match (acc, input(i).and_then(|b| b.ints.as_ref())) {
                                (Some(a), Some(b)) => elementwise(op, &a, b),
                                _ => None,
                            };
                        }
                        acc
                    }
                    _ => None,
                };
                let elem = match op {
                    "Equal" | "Less" | "Greater" | "LessOrEqual" | "GreaterOrEqual" | "And"
                    | "Or" => 1,
                    "Where" => input(1)?.elem,
                    _ => x.elem,
                };
                Some(Known { dims, elem, ints })
            }
            "MatMul" => {
                let b = input(1)?;
                let (a, bd) = (&x.dims, &b.dims);
                if a.len() < 2 || bd.len() < 2 {
                    return Some(same(None)); // Vector products make no more than their inputs.
                }
                let mut dims = broadcast(&a[..a.len() - 2], &bd[..bd.len() - 2])?;
                dims.extend([a[a.len() - 2], bd[bd.len() - 1]]);
                Some(Known {
                    dims,
                    elem: x.elem,
                    ints: None,
                })
            }
            "Gemm" => {
                let b = input(1)?;
                let (ta, tb) = (
                    attr_i(node, "transA") == Some(1),
                    attr_i(node, "transB") == Some(1),
                );
                let m = *if ta { x.dims.last()? } else { x.dims.first()? };
                let n = *if tb { b.dims.first()? } else { b.dims.last()? };
                Some(Known {
                    dims: vec![m, n],
                    elem: x.elem,
                    ints: None,
                })
            }
            "Unsqueeze" | "Squeeze" | "Flatten" | "Reshape" => {
                // Shape changes keep the element count; the exact shape matters only for
                // broadcasting, so it is followed where it is cheap.
                let dims = match op {
                    "Reshape" => reshape(&x.dims, input(1)?.ints.as_ref()?)?,
                    "Unsqueeze" => {
                        let axes = match attr_ints(node, "axes") {
                            Some(a) if !a.is_empty() => a,
                            _ => input(1)?.ints.clone()?,
                        };
                        let out_rank = rank + axes.len() as i64;
                        let mut axes: Vec<usize> = axes
                            .iter()
                            .map(|&a| axis(a, out_rank))
                            .collect::<Option<_>>()?;
                        axes.sort_unstable();
                        let mut dims = x.dims.clone();
                        for a in axes {
                            if a > dims.len() {
                                return None;
                            }
                            dims.insert(a, 1);
                        }
                        dims
                    }
                    "Flatten" => {
                        let a = axis(attr_i(node, "axis").unwrap_or(1), rank + 1)?;
                        let outer = elements(x.dims[..a].iter().copied())?;
                        let inner = elements(x.dims[a..].iter().copied())?;
                        vec![outer, inner]
                    }
                    _ => x.dims.iter().copied().filter(|&d| d != 1).collect(),
                };
                Some(Known {
                    dims,
                    elem: x.elem,
                    ints: x.ints.clone(),
                })
            }
            "Slice" => {
                let ints = |i: usize, attr: &str| match input(i) {
                    Some(k) => k.ints.clone(),
                    None if node.input.len() <= i => attr_ints(node, attr),
                    None => None,
                };
                let starts = ints(1, "starts")?;
                let ends = ints(2, "ends")?;
                let axes = ints(3, "axes").unwrap_or_else(|| (0..starts.len() as i64).collect());
                let steps = ints(4, "steps").unwrap_or_else(|| vec![1; starts.len()]);
                if ends.len() != starts.len()
                    || axes.len() != starts.len()
                    || steps.len() != starts.len()
                {
                    return None;
                }
                let mut dims = x.dims.clone();
                let mut pick = None;
                for i in 0..starts.len() {
                    let a = axis(axes[i], rank)?;
                    let d = i64::try_from(dims[a]).ok()?;
                    let step = steps[i];
                    let norm = |v: i64| if v < 0 { v.saturating_add(d) } else { v };
                    let (s, e) = (norm(starts[i]), norm(ends[i]));
                    let (start, len) = match step {
                        0 => return None,
                        st if st > 0 => {
                            let (s, e) = (s.clamp(0, d), e.clamp(0, d));
                            (s, if e > s { (e - s + st - 1) / st } else { 0 })
                        }
                        st => {
                            let (s, e) = (s.clamp(-1, d - 1), e.clamp(-1, d - 1));
                            (s, if s > e { (s - e - st - 1) / -st } else { 0 })
                        }
                    };
                    dims[a] = len as u64;
                    if a == 0 {
                        pick = Some((start, step, len as usize));
                    }
                }
                let ints = match &x.ints {
                    Some(v) if rank == 1 => {
                        let (start, step, len) = pick.unwrap_or((0, 1, v.len()));
                        (0..len)
                            .map(|i| {
                                let at = start.checked_add(step.checked_mul(i as i64)?)?;
                                v.get(usize::try_from(at).ok()?).copied()
                            })
                            .collect()
                    }
                    _ => None,
                };
                Some(Known {
                    dims,
                    elem: x.elem,
                    ints,
                })
            }
            "ReduceProd" | "ReduceSum" | "ReduceMax" | "ReduceMin"
                if rank == 1 && node.input.len() == 1 =>
            {
                let v = x.ints.as_ref()?;
                let r = match op {
                    "ReduceProd" => v.iter().try_fold(1i64, |a, &b| a.checked_mul(b)),
                    "ReduceSum" => v.iter().try_fold(0i64, |a, &b| a.checked_add(b)),
                    "ReduceMax" => v.iter().copied().max(),
                    _ => v.iter().copied().min(),
                }?;
                let keep = attr_i(node, "keepdims").unwrap_or(1) != 0;
                Some(Known {
                    dims: if keep { vec![1] } else { vec![] },
                    elem: x.elem,
                    ints: Some(vec![r]),
                })
            }
            "Transpose" => {
                let perm =
                    attr_ints(node, "perm").unwrap_or_else(|| (0..rank).rev().collect::<Vec<_>>());
                let dims = perm
                    .iter()
                    .map(|&p| axis(p, rank).map(|a| x.dims[a]))
                    .collect::<Option<Vec<_>>>()?;
                Some(Known {
                    dims,
                    elem: x.elem,
                    ints: None,
                })
            }
            "Concat" => {
                let a = axis(attr_i(node, "axis").unwrap_or(0), rank)?;
                let mut dims = x.dims.clone();
                let mut ints = x.ints.clone();
                for i in 1..node.input.len() {
                    let k = input(i)?;
                    if k.dims.len() != x.dims.len() {
                        return None;
                    }
                    dims[a] = dims[a].checked_add(k.dims[a])?;
                    ints = match (ints, &k.ints) {
                        (Some(mut v), Some(w)) if rank == 1 => {
                            v.extend(w);
                            Some(v)
                        }
                        _ => None,
                    };
                }
                Some(Known {
                    dims,
                    elem: x.elem,
                    ints,
                })
            }
            "Gather" => {
                let idx = input(1)?;
                let a = axis(attr_i(node, "axis").unwrap_or(0), rank)?;
                let mut dims = x.dims[..a].to_vec();
                dims.extend(&idx.dims);
                dims.extend(&x.dims[a + 1..]);
                let ints = match (&x.ints, &idx.ints) {
                    (Some(v), Some(is)) if rank == 1 => is
                        .iter()
                        .map(|&i| {
                            let i = if i < 0 { i + v.len() as i64 } else { i };
                            v.get(usize::try_from(i).ok()?).copied()
                        })
                        .collect(),
                    _ => None,
                };
                Some(Known {
                    dims,
                    elem: x.elem,
                    ints,
                })
            }
            "ConstantOfShape" => {
                let dims: Vec<u64> = x.ints.as_ref()?.iter().map(|&d| d.max(0) as u64).collect();
                let elem = node
                    .attribute
                    .iter()
                    .find(|a| a.name == "value")
                    .and_then(|a| a.t.as_ref())
                    .and_then(|t| element_size(t.data_type))
                    .unwrap_or(4);
                Some(Known {
                    dims,
                    elem,
                    ints: None,
                })
            }
            "Expand" => {
                let shape: Vec<u64> = input(1)?
                    .ints
                    .as_ref()?
                    .iter()
                    .map(|&d| d.max(0) as u64)
                    .collect();
                Some(Known {
                    dims: broadcast(&x.dims, &shape)?,
                    elem: x.elem,
                    ints: None,
                })
            }
            "Tile" => {
                let reps = input(1)?.ints.as_ref()?;
                if reps.len() != x.dims.len() {
                    return None;
                }
                let dims = x
                    .dims
                    .iter()
                    .zip(reps)
                    .map(|(&d, &r)| d.checked_mul(r.max(0) as u64))
                    .collect::<Option<Vec<_>>>()?;
                Some(Known {
                    dims,
                    elem: x.elem,
                    ints: None,
                })
            }
            "Range" => {
                let v = |i: usize| input(i).and_then(|k| k.ints.as_ref()?.first().copied());
                let (start, limit, delta) = (v(0)?, v(1)?, v(2)?);
                if delta == 0 {
                    return None;
                }
                let span = (limit as i128 - start as i128) as f64 / delta as f64;
                let n = span.ceil().max(0.0);
                Some(Known {
                    dims: vec![if n >= u64::MAX as f64 {
                        u64::MAX
                    } else {
                        n as u64
                    }],
                    elem: x.elem,
                    ints: None,
                })
            }
            _ => None,
        }
    }

    fn elementwise(op: &str, a: &[i64], b: &[i64]) -> Option<Vec<i64>> {
        let n = a.len().max(b.len());
        if !(a.len() == n || a.len() == 1) || !(b.len() == n || b.len() == 1) {
            return None;
        }
        (0..n)
            .map(|i| {
                let (x, y) = (a[i.min(a.len() - 1)], b[i.min(b.len() - 1)]);
                match op {
                    "Add" | "Sum" => x.checked_add(y),
                    "Sub" => x.checked_sub(y),
                    "Mul" => x.checked_mul(y),
                    "Max" => Some(x.max(y)),
                    "Min" => Some(x.min(y)),
                    _ => x.checked_div(y),
                }
            })
            .collect()
    }

    /// Numpy-style broadcasting of two shapes; `None` when they do not broadcast.
    fn broadcast(a: &[u64], b: &[u64]) -> Option<Vec<u64>> {
        let n = a.len().max(b.len());
        (0..n)
            .map(|i| {
                let x = if i + a.len() >= n {
                    a[i + a.len() - n]
                } else {
                    1
                };
                let y = if i + b.len() >= n {
                    b[i + b.len() - n]
                } else {
                    1
                };
                match (x, y) {
                    (x, y) if x == y => Some(x),
                    (1, y) => Some(y),
                    (x, 1) => Some(x),
                    _ => None,
                }
            })
            .collect()
    }

    /// ONNX Reshape: 0 copies a dimension, -1 takes what is left.
    fn reshape(dims: &[u64], target: &[i64]) -> Option<Vec<u64>> {
        let total = elements(dims.iter().copied())?;
        let mut out = Vec::with_capacity(target.len());
        let mut infer = None;
        for (i, &t) in target.iter().enumerate() {
            match t {
                0 => out.push(*dims.get(i)?),
                -1 if infer.is_none() => {
                    infer = Some(i);
                    out.push(1);
                }
                t if t > 0 => out.push(t as u64),
                _ => return None,
            }
        }
        if let Some(i) = infer {
            let rest = elements(out.iter().copied())?;
            if rest == 0 || total % rest != 0 {
                return None;
            }
            out[i] = total / rest;
        }
        Some(out)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn shapes_broadcast_and_reshape_like_onnx() {
            assert_eq!(broadcast(&[4, 1, 3], &[5, 1]), Some(vec![4, 5, 3]));
            assert_eq!(broadcast(&[2], &[3]), None);
            assert_eq!(reshape(&[2, 3, 4], &[0, -1]), Some(vec![2, 12]));
            assert_eq!(reshape(&[2, 3, 4], &[5, -1]), None);
            assert_eq!(elementwise("Mul", &[2, 3], &[4]), Some(vec![8, 12]));
            assert_eq!(elementwise("Mul", &[i64::MAX], &[2]), None);
        }
    }
}
