//! A scan of an ONNX file's protobuf encoding, run before the file is decoded, that
//! bounds what decoding it would allocate.
//!
//! The checks in `limits` run on the decoded `ModelProto`, and decoding alone can
//! allocate far more than a file holds: an empty initializer is 2 bytes of the file and a
//! `TensorProto` of a few hundred bytes once decoded (a 2.2 MB file of a million of them
//! took 324 MB to refuse), a value of a packed `int64` list 1 byte and 8. This module
//! reads the wire format over the messages that the decoder (prost, through tract)
//! builds, allocating nothing, and counts what decoding would make: nodes, metadata
//! entries, tensor data, and the memory of the decoded messages and lists. A file over
//! the limits is refused before the decoder sees it; docs/security.md states the rule.
//!
//! The scan reads the encoding as the decoder does where memory is concerned: fields
//! the schema does not name are skipped, a known field must have its wire type, and
//! messages nest at most [`MAX_DEPTH`] deep. A broken encoding (a truncated length, an
//! overlong varint, a wrong wire type) is refused as the decoder would refuse it. The scan
//! is stricter in one respect: groups (wire types 3 and 4, deprecated, never used by
//! ONNX) are refused rather than skipped.

use std::fmt;
use std::mem::size_of;

use tract_onnx::pb;
use tract_onnx::prelude::Framework;

use crate::error::Error;
use crate::limits::{Check, Limit, Limits};

/// The deepest a message may lie inside the file's `ModelProto` (its graph lies at
/// depth 1). This is prost's recursion limit, so no file the decoder takes is refused
/// for its depth, and it bounds the scan's own recursion.
const MAX_DEPTH: u32 = 100;

/// The decoded structure each node allowed by `max_nodes` may bring, in bytes. A node of
/// the models we know brings 1.4 to 2.9 KB (its attributes, its value names, its share of
/// initializers and value infos); docs/security.md lists the models measured.
const PER_NODE: u64 = 16 << 10;

/// The decoded structure allowed besides, in bytes: for graphs whose few nodes carry
/// much (a long attribute list, many inputs), whatever `max_nodes` is set to.
const BASE: u64 = 1 << 20;

/// What a heap allocation costs beyond its content, at most: a string or byte field
/// that is not empty is one. (glibc rounds a request up to 16 bytes and adds 8 or 16.)
const BLOCK: u64 = 32;

/// A metadata entry once decoded: the entry and the blocks of its key and value.
const PER_ENTRY: u64 = size_of::<pb::StringStringEntryProto>() as u64 + 2 * BLOCK;

/// Decodes an untrusted ONNX file: scans its encoding against the limits
/// ([`check_encoding`]), decodes it, and refuses a message that is not a model (no graph
/// or IR version). The decoded model's own checks (`limits::check_onnx`) are the caller's:
/// they depend on the batch size it plans for.
///
/// # Errors
/// [`Error::NotOnnx`] for an empty file, a broken encoding or a message that is not a
/// model, and [`Error::TooLarge`] as [`check_encoding`] gives it.
pub(crate) fn decode_checked(bytes: &[u8], check: &Check<'_>) -> Result<pb::ModelProto, Error> {
    let not_onnx = |reason: String| Error::NotOnnx {
        origin: check.origin.to_string(),
        reason,
    };
    if bytes.is_empty() {
        return Err(not_onnx("the file is empty".to_string()));
    }
    // Decoding can allocate hundreds of times what a file holds (a list of empty
    // messages): what it would make is counted from the encoding first.
    check_encoding(bytes, check)?;
    let proto: pb::ModelProto =
        std::panic::catch_unwind(|| tract_onnx::onnx().proto_model_for_read(&mut &bytes[..]))
            .map_err(|_| not_onnx("the protobuf decoder panicked".to_string()))?
            .map_err(|e| not_onnx(brief(&format!("{e:#}"))))?;
    if proto.graph.is_none() || proto.ir_version == 0 {
        return Err(not_onnx(
            "no graph or IR version: the bytes decode as protobuf but not as an ONNX model"
                .to_string(),
        ));
    }
    Ok(proto)
}

/// A decoder's message cut to its first and last 150 characters: a deeply nested message
/// repeats the path of fields, and the reason comes last.
fn brief(text: &str) -> String {
    const KEEP: usize = 150;
    let chars = text.chars().count();
    if chars <= 2 * KEEP + 1 {
        return text.to_string();
    }
    let head: String = text.chars().take(KEEP).collect();
    let tail: String = text.chars().skip(chars - KEEP).collect();
    format!("{head} … {tail}")
}

/// Checks what decoding `bytes` as an ONNX `ModelProto` would make against the limits,
/// before decoding: the node count (`max_nodes`), the metadata entry count
/// (`max_metadata_entries`), the tensor data at its decoded size (`max_weight_bytes`),
/// and the memory of the decoded messages and lists ([`structure_bound`]).
///
/// # Errors
/// [`Error::NotOnnx`] when the encoding is broken (the decoder would refuse it too), and
/// [`Error::TooLarge`] naming the count or size over its limit.
pub(crate) fn check_encoding(bytes: &[u8], check: &Check<'_>) -> Result<(), Error> {
    let census = census(bytes).map_err(|broken| Error::NotOnnx {
        origin: check.origin.to_string(),
        reason: broken.to_string(),
    })?;
    census.check(check)
}

/// The most memory the decoded messages and lists may take under `limits`, in bytes:
/// [`PER_NODE`] for each node `max_nodes` allows, [`PER_ENTRY`] for each metadata entry
/// `max_metadata_entries` allows, and [`BASE`].
fn structure_bound(limits: &Limits) -> u64 {
    BASE.saturating_add(limits.max_nodes.saturating_mul(PER_NODE))
        .saturating_add(limits.max_metadata_entries.saturating_mul(PER_ENTRY))
}

/// What decoding a file would make. Sums saturate: a file cannot hold 2^64 of anything,
/// and a saturated sum is over every limit but [`Limits::unlimited`]'s.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Census {
    /// `NodeProto`s: of the graph, its subgraphs, functions and training graphs.
    nodes: u64,
    /// Entries of the model's `metadata_props`.
    metadata_entries: u64,
    /// Tensor data in bytes, at its decoded size: `raw_data`, the typed lists (an `int64`
    /// value takes 8 bytes however short its varint) and the bytes of `string_data`.
    tensor_data: u64,
    /// The most tensor data of one `TensorProto`, in bytes at its decoded size.
    largest_tensor: u64,
    /// The decoded structure in bytes, besides tensor data and the text of strings: each
    /// element of a list takes its decoded size (a `NodeProto`, a `String`, an `i64`), and
    /// each string or byte field that is not empty a heap block ([`BLOCK`]).
    structure: u64,
}

impl Census {
    fn check(&self, check: &Check<'_>) -> Result<(), Error> {
        check.within(Limit::Nodes, Some(self.nodes), || {
            "the node count (subgraphs, functions and training graphs included)".to_string()
        })?;
        check.within(Limit::Metadata, Some(self.metadata_entries), || {
            "the metadata entry count".to_string()
        })?;
        check.within(Limit::Weights, Some(self.tensor_data), || {
            "the size of the file's tensor data, decoded,".to_string()
        })?;
        check.within(Limit::Tensor, Some(self.largest_tensor), || {
            "the data of its largest tensor, decoded,".to_string()
        })?;
        let bound = structure_bound(check.limits);
        if self.structure > bound {
            return Err(Error::TooLarge {
                origin: check.origin.to_string(),
                what: format!(
                    "the memory of its decoded messages and lists (tensor data and text \
                     aside; {} KiB per node of max_nodes, {PER_ENTRY} bytes per metadata entry \
                     and {} MiB besides are allowed)",
                    PER_NODE >> 10,
                    BASE >> 20
                ),
                found: self.structure.to_string(),
                unit: "bytes",
                limit: bound,
                option: "max_nodes",
            });
        }
        Ok(())
    }
}

/// Counts what decoding `bytes` as a `ModelProto` would make.
fn census(bytes: &[u8]) -> Result<Census, Broken> {
    let mut scan = Scan {
        bytes,
        census: Census::default(),
    };
    scan.message(Msg::Model, 0, bytes.len(), 0)?;
    Ok(scan.census)
}

/// Why an encoding cannot be decoded, and where.
#[derive(Debug)]
struct Broken {
    /// The offset of the field at fault (of its key).
    at: usize,
    /// The message it belongs to.
    within: Msg,
    reason: String,
}

impl fmt::Display for Broken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the protobuf encoding is broken at byte {} (a field of {}): {}",
            self.at,
            self.within.name(),
            self.reason
        )
    }
}

/// The messages of the ONNX schema as the decoder knows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Msg {
    Model,
    Graph,
    Node,
    Attribute,
    Tensor,
    Segment,
    Sparse,
    ValueInfo,
    Type,
    TypeTensor,
    Shape,
    Dimension,
    Entry,
    Annotation,
    Training,
    Function,
    Opset,
}

/// How a number is encoded: the wire type of one value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Num {
    Varint,
    Fixed32,
    Fixed64,
}

/// A field of a message, as the decoder reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    /// Not in the decoder's schema: skipped, nothing allocated.
    Unknown,
    /// One number.
    Scalar(Num),
    /// A string or bytes, or a list of them; `data` for tensor data.
    Bytes { repeated: bool, data: bool },
    /// A list of numbers, packed or not, `size` bytes each once decoded; `data` for
    /// tensor data.
    Numbers { num: Num, size: u64, data: bool },
    /// A message, or a list of them.
    Message { of: Msg, repeated: bool },
}

/// The wire types protobuf defines but groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wire {
    Varint,
    Fixed64,
    Len,
    Fixed32,
}

impl Wire {
    fn of(key: u64) -> Result<Wire, String> {
        match key & 7 {
            0 => Ok(Wire::Varint),
            1 => Ok(Wire::Fixed64),
            2 => Ok(Wire::Len),
            5 => Ok(Wire::Fixed32),
            3 | 4 => Err("a group (wire type 3 or 4), which ONNX does not use".to_string()),
            t => Err(format!("wire type {t}, which protobuf does not define")),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Wire::Varint => "a varint",
            Wire::Fixed64 => "64 bits",
            Wire::Len => "length-delimited",
            Wire::Fixed32 => "32 bits",
        }
    }
}

impl Num {
    fn wire(self) -> Wire {
        match self {
            Num::Varint => Wire::Varint,
            Num::Fixed32 => Wire::Fixed32,
            Num::Fixed64 => Wire::Fixed64,
        }
    }
}

impl Msg {
    fn name(self) -> &'static str {
        match self {
            Msg::Model => "ModelProto",
            Msg::Graph => "GraphProto",
            Msg::Node => "NodeProto",
            Msg::Attribute => "AttributeProto",
            Msg::Tensor => "TensorProto",
            Msg::Segment => "TensorProto.Segment",
            Msg::Sparse => "SparseTensorProto",
            Msg::ValueInfo => "ValueInfoProto",
            Msg::Type => "TypeProto",
            Msg::TypeTensor => "TypeProto.Tensor",
            Msg::Shape => "TensorShapeProto",
            Msg::Dimension => "TensorShapeProto.Dimension",
            Msg::Entry => "StringStringEntryProto",
            Msg::Annotation => "TensorAnnotation",
            Msg::Training => "TrainingInfoProto",
            Msg::Function => "FunctionProto",
            Msg::Opset => "OperatorSetIdProto",
        }
    }

    /// The decoded size of one element of a list of these messages, in bytes.
    fn size(self) -> u64 {
        let size = match self {
            Msg::Model => size_of::<pb::ModelProto>(),
            Msg::Graph => size_of::<pb::GraphProto>(),
            Msg::Node => size_of::<pb::NodeProto>(),
            Msg::Attribute => size_of::<pb::AttributeProto>(),
            Msg::Tensor => size_of::<pb::TensorProto>(),
            Msg::Segment => size_of::<pb::tensor_proto::Segment>(),
            Msg::Sparse => size_of::<pb::SparseTensorProto>(),
            Msg::ValueInfo => size_of::<pb::ValueInfoProto>(),
            Msg::Type => size_of::<pb::TypeProto>(),
            Msg::TypeTensor => size_of::<pb::type_proto::Tensor>(),
            Msg::Shape => size_of::<pb::TensorShapeProto>(),
            Msg::Dimension => size_of::<pb::tensor_shape_proto::Dimension>(),
            Msg::Entry => size_of::<pb::StringStringEntryProto>(),
            Msg::Annotation => size_of::<pb::TensorAnnotation>(),
            Msg::Training => size_of::<pb::TrainingInfoProto>(),
            Msg::Function => size_of::<pb::FunctionProto>(),
            Msg::Opset => size_of::<pb::OperatorSetIdProto>(),
        };
        size as u64
    }

    /// Field `number` of this message, as tract-onnx 0.23's `pb` module declares it
    /// (its onnx.proto, field numbers as in ONNX's).
    fn field(self, number: u32) -> Field {
        use Field::{Scalar, Unknown};
        use Num::{Fixed32, Fixed64, Varint};
        let text = Field::Bytes {
            repeated: false,
            data: false,
        };
        let texts = Field::Bytes {
            repeated: true,
            data: false,
        };
        let one = |of| Field::Message {
            of,
            repeated: false,
        };
        let list = |of| Field::Message { of, repeated: true };
        let numbers = |num, size| Field::Numbers {
            num,
            size,
            data: false,
        };
        let data = |num, size| Field::Numbers {
            num,
            size,
            data: true,
        };
        match (self, number) {
            // ir_version, model_version
            (Msg::Model, 1 | 5) => Scalar(Varint),
            // producer_name, producer_version, domain, doc_string
            (Msg::Model, 2 | 3 | 4 | 6) => text,
            (Msg::Model, 7) => one(Msg::Graph),
            (Msg::Model, 8) => list(Msg::Opset),
            (Msg::Model, 14) => list(Msg::Entry),
            (Msg::Model, 20) => list(Msg::Training),
            (Msg::Model, 25) => list(Msg::Function),
            (Msg::Graph, 1) => list(Msg::Node),
            // name, doc_string
            (Msg::Graph, 2 | 10) => text,
            (Msg::Graph, 5) => list(Msg::Tensor),
            // input, output, value_info
            (Msg::Graph, 11..=13) => list(Msg::ValueInfo),
            (Msg::Graph, 14) => list(Msg::Annotation),
            (Msg::Graph, 15) => list(Msg::Sparse),
            // input, output
            (Msg::Node, 1 | 2) => texts,
            // name, op_type, doc_string, domain
            (Msg::Node, 3 | 4 | 6 | 7) => text,
            (Msg::Node, 5) => list(Msg::Attribute),
            // name, s, doc_string, ref_attr_name
            (Msg::Attribute, 1 | 4 | 13 | 21) => text,
            (Msg::Attribute, 2) => Scalar(Fixed32),
            // i, type
            (Msg::Attribute, 3 | 20) => Scalar(Varint),
            (Msg::Attribute, 5) => one(Msg::Tensor),
            (Msg::Attribute, 6) => one(Msg::Graph),
            // floats, ints: a Constant's `value_floats` / `value_ints` is its tensor.
            (Msg::Attribute, 7) => data(Fixed32, 4),
            (Msg::Attribute, 8) => data(Varint, 8),
            (Msg::Attribute, 9) => texts,
            (Msg::Attribute, 10) => list(Msg::Tensor),
            (Msg::Attribute, 11) => list(Msg::Graph),
            (Msg::Attribute, 15) => list(Msg::Type),
            (Msg::Attribute, 22) => one(Msg::Sparse),
            (Msg::Attribute, 23) => list(Msg::Sparse),
            // name, doc_string
            (Msg::ValueInfo, 1 | 3) => text,
            (Msg::ValueInfo, 2) => one(Msg::Type),
            (Msg::Entry, 1 | 2) => text,
            (Msg::Annotation, 1) => text,
            (Msg::Annotation, 2) => list(Msg::Entry),
            // initialization, algorithm
            (Msg::Training, 1 | 2) => one(Msg::Graph),
            // initialization_binding, update_binding
            (Msg::Training, 3 | 4) => list(Msg::Entry),
            (Msg::Tensor, 1) => numbers(Varint, 8),
            // data_type, data_location
            (Msg::Tensor, 2 | 14) => Scalar(Varint),
            (Msg::Tensor, 3) => one(Msg::Segment),
            (Msg::Tensor, 4) => data(Fixed32, 4),
            (Msg::Tensor, 5) => data(Varint, 4),
            (Msg::Tensor, 6) => Field::Bytes {
                repeated: true,
                data: true,
            },
            (Msg::Tensor, 7 | 11) => data(Varint, 8),
            // name, doc_string
            (Msg::Tensor, 8 | 12) => text,
            (Msg::Tensor, 9) => Field::Bytes {
                repeated: false,
                data: true,
            },
            (Msg::Tensor, 10) => data(Fixed64, 8),
            (Msg::Tensor, 13) => list(Msg::Entry),
            (Msg::Segment, 1 | 2) => Scalar(Varint),
            // values, indices
            (Msg::Sparse, 1 | 2) => one(Msg::Tensor),
            (Msg::Sparse, 3) => numbers(Varint, 8),
            (Msg::Shape, 1) => list(Msg::Dimension),
            (Msg::Dimension, 1) => Scalar(Varint),
            // dim_param, denotation
            (Msg::Dimension, 2 | 3) => text,
            (Msg::Type, 1) => one(Msg::TypeTensor),
            (Msg::Type, 6) => text,
            (Msg::TypeTensor, 1) => Scalar(Varint),
            (Msg::TypeTensor, 2) => one(Msg::Shape),
            (Msg::Opset, 1) => text,
            (Msg::Opset, 2) => Scalar(Varint),
            // name, doc_string, domain
            (Msg::Function, 1 | 8 | 10) => text,
            // input, output, attribute
            (Msg::Function, 4..=6) => texts,
            (Msg::Function, 7) => list(Msg::Node),
            (Msg::Function, 9) => list(Msg::Opset),
            _ => Unknown,
        }
    }
}

/// The file being scanned and what was counted so far.
struct Scan<'a> {
    bytes: &'a [u8],
    census: Census,
}

impl Scan<'_> {
    /// Counts the fields of a `msg` at `bytes[pos..end]`, `depth` messages deep.
    fn message(&mut self, msg: Msg, mut pos: usize, end: usize, depth: u32) -> Result<(), Broken> {
        let data_before = self.census.tensor_data;
        while pos < end {
            let at = pos;
            let broken = move |reason: String| Broken {
                at,
                within: msg,
                reason,
            };
            let key = self.varint(&mut pos, end).map_err(broken)?;
            let key = u32::try_from(key)
                .map_err(|_| broken(format!("a field key of {key}, over 32 bits")))?;
            let number = key >> 3;
            if number == 0 {
                return Err(broken("field number 0".to_string()));
            }
            let wire = Wire::of(u64::from(key))
                .map_err(|what| broken(format!("field {number} is {what}")))?;
            let field = msg.field(number);
            let expect = |expected: Wire| {
                if wire == expected {
                    Ok(())
                } else {
                    Err(broken(format!(
                        "field {number} is {}, expected {}",
                        wire.name(),
                        expected.name()
                    )))
                }
            };
            match field {
                Field::Unknown => self.skip(wire, &mut pos, end).map_err(broken)?,
                Field::Scalar(num) => {
                    expect(num.wire())?;
                    self.skip(wire, &mut pos, end).map_err(broken)?;
                }
                Field::Bytes { repeated, data } => {
                    expect(Wire::Len)?;
                    let len = self.len(&mut pos, end).map_err(broken)?;
                    pos += len;
                    let len = len as u64;
                    let c = &mut self.census;
                    if repeated {
                        c.structure = c.structure.saturating_add(size_of::<Vec<u8>>() as u64);
                    }
                    if len > 0 {
                        c.structure = c.structure.saturating_add(BLOCK);
                    }
                    if data {
                        c.tensor_data = c.tensor_data.saturating_add(len);
                    }
                }
                Field::Numbers { num, size, data } => {
                    let count = if wire == Wire::Len {
                        let len = self.len(&mut pos, end).map_err(broken)?;
                        let count = self.packed(num, pos, pos + len).map_err(broken)?;
                        pos += len;
                        count
                    } else {
                        expect(num.wire())?;
                        self.skip(wire, &mut pos, end).map_err(broken)?;
                        1
                    };
                    let bytes = count.saturating_mul(size);
                    let c = &mut self.census;
                    if data {
                        c.tensor_data = c.tensor_data.saturating_add(bytes);
                    } else {
                        c.structure = c.structure.saturating_add(bytes);
                    }
                }
                Field::Message { of, repeated } => {
                    expect(Wire::Len)?;
                    let len = self.len(&mut pos, end).map_err(broken)?;
                    if depth >= MAX_DEPTH {
                        return Err(broken(format!(
                            "recursion limit reached: messages nest more than {MAX_DEPTH} deep"
                        )));
                    }
                    let c = &mut self.census;
                    if repeated {
                        c.structure = c.structure.saturating_add(of.size());
                    }
                    if of == Msg::Node {
                        c.nodes = c.nodes.saturating_add(1);
                    }
                    if msg == Msg::Model && of == Msg::Entry {
                        c.metadata_entries = c.metadata_entries.saturating_add(1);
                    }
                    self.message(of, pos, pos + len, depth + 1)?;
                    pos += len;
                }
            }
        }
        // A tensor's data is one allocation once decoded: `max_tensor_bytes` bounds it.
        if msg == Msg::Tensor {
            let data = self.census.tensor_data.saturating_sub(data_before);
            let c = &mut self.census;
            c.largest_tensor = c.largest_tensor.max(data);
        }
        Ok(())
    }

    /// Reads a varint at `pos`, which must end before `end`.
    fn varint(&self, pos: &mut usize, end: usize) -> Result<u64, String> {
        let mut value = 0u64;
        for i in 0..10 {
            let byte = match self.bytes.get(*pos) {
                Some(&b) if *pos < end => b,
                _ => return Err("a varint runs past the end of its message".to_string()),
            };
            *pos += 1;
            // The tenth byte holds the 64th bit and nothing more.
            if i == 9 && byte > 1 {
                return Err("a varint over 64 bits".to_string());
            }
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte < 0x80 {
                return Ok(value);
            }
        }
        Err("a varint over 64 bits".to_string())
    }

    /// Reads a length at `pos` and checks that as many bytes follow before `end`.
    fn len(&self, pos: &mut usize, end: usize) -> Result<usize, String> {
        let len = self.varint(pos, end)?;
        let left = end - *pos;
        match usize::try_from(len) {
            Ok(len) if len <= left => Ok(len),
            _ => Err(format!(
                "a length of {len} bytes, with {left} left in the message"
            )),
        }
    }

    /// Skips a value of type `wire` at `pos`.
    fn skip(&self, wire: Wire, pos: &mut usize, end: usize) -> Result<(), String> {
        let size = match wire {
            Wire::Varint => return self.varint(pos, end).map(|_| ()),
            Wire::Len => self.len(pos, end)?,
            Wire::Fixed32 => 4,
            Wire::Fixed64 => 8,
        };
        if end - *pos < size {
            return Err(format!(
                "a {size}-byte value, with {} left in the message",
                end - *pos
            ));
        }
        *pos += size;
        Ok(())
    }

    /// The number of values in the packed list `bytes[pos..end]`.
    fn packed(&self, num: Num, pos: usize, end: usize) -> Result<u64, String> {
        let width = match num {
            Num::Fixed32 => 4,
            Num::Fixed64 => 8,
            Num::Varint => {
                let (mut pos, mut count) = (pos, 0u64);
                while pos < end {
                    self.varint(&mut pos, end)?;
                    count += 1;
                }
                return Ok(count);
            }
        };
        let len = end - pos;
        if !len.is_multiple_of(width) {
            return Err(format!(
                "a packed list of {len} bytes, not a whole number of {width}-byte values"
            ));
        }
        Ok((len / width) as u64)
    }
}

#[cfg(test)]
mod tests;
