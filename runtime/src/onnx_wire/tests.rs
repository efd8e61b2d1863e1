//! The scan against the decoder: files are written here field by field, decoded by prost
//! (through tract) and scanned, and what the scan counts is compared with the decoded
//! model counted by the same rule ([`Reference`]).

use tract_onnx::pb;
use tract_onnx::pb::tensor_shape_proto::dimension::Value as DimValue;
use tract_onnx::pb::type_proto::Value as TypeValue;
use tract_onnx::prelude::Framework;

use super::*;

const MODELS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/fashion-mnist");

fn varint(mut v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
    out
}

fn key(number: u32, wire: u8) -> Vec<u8> {
    varint(u64::from(number) << 3 | u64::from(wire))
}

fn int(number: u32, v: u64) -> Vec<u8> {
    [key(number, 0), varint(v)].concat()
}

fn fixed32(number: u32) -> Vec<u8> {
    [key(number, 5), vec![0; 4]].concat()
}

fn fixed64(number: u32) -> Vec<u8> {
    [key(number, 1), vec![0; 8]].concat()
}

fn bytes(number: u32, payload: &[u8]) -> Vec<u8> {
    [
        key(number, 2),
        varint(payload.len() as u64),
        payload.to_vec(),
    ]
    .concat()
}

fn packed(number: u32, values: &[u64]) -> Vec<u8> {
    let payload: Vec<u8> = values.iter().flat_map(|&v| varint(v)).collect();
    bytes(number, &payload)
}

/// A `ModelProto` of IR version 8 with `fields`.
fn model(fields: &[Vec<u8>]) -> Vec<u8> {
    [int(1, 8), fields.concat()].concat()
}

fn decode(bytes: &[u8]) -> Option<pb::ModelProto> {
    tract_onnx::onnx()
        .proto_model_for_read(&mut &bytes[..])
        .ok()
}

fn shipped(name: &str) -> Vec<u8> {
    let path = format!("{MODELS}/{name}");
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A file holding every field of every message the decoder knows, and unknown fields.
fn everything() -> Vec<u8> {
    let entry = [bytes(1, b"key"), bytes(2, b"value")].concat();
    let tensor = [
        packed(1, &[2, 3]),
        int(2, 1),
        bytes(3, &[int(1, 0), int(2, 6)].concat()),
        bytes(4, &[0; 8]),
        fixed32(4),
        packed(5, &[1, 300]),
        int(5, 7),
        bytes(6, b"abc"),
        bytes(6, b""),
        packed(7, &[u64::MAX]),
        bytes(8, b"w"),
        bytes(9, &[1, 2, 3]),
        bytes(10, &[0; 16]),
        fixed64(10),
        packed(11, &[5]),
        int(11, 6),
        bytes(12, b"doc"),
        bytes(13, &entry),
        int(14, 0),
        int(99, 1),
    ]
    .concat();
    let shape = [
        bytes(1, &[int(1, 4), bytes(3, b"den")].concat()),
        bytes(1, &bytes(2, b"N")),
    ]
    .concat();
    let type_proto = [
        bytes(1, &[int(1, 1), bytes(2, &shape)].concat()),
        bytes(6, b"den"),
    ]
    .concat();
    let value_info = [bytes(1, b"x"), bytes(2, &type_proto), bytes(3, b"doc")].concat();
    let sparse = [bytes(1, &tensor), bytes(2, &tensor), packed(3, &[4, 4])].concat();
    let inner = [
        bytes(
            1,
            &[bytes(1, b"x"), bytes(2, b"y"), bytes(4, b"Relu")].concat(),
        ),
        bytes(2, b"inner"),
    ]
    .concat();
    let attribute = [
        bytes(1, b"a"),
        bytes(21, b"r"),
        bytes(13, b"doc"),
        int(20, 4),
        fixed32(2),
        int(3, 5),
        bytes(4, b"s"),
        bytes(5, &tensor),
        bytes(6, &inner),
        bytes(22, &sparse),
        bytes(7, &[0; 8]),
        fixed32(7),
        packed(8, &[1, 2, 3]),
        int(8, 9),
        bytes(9, b"x"),
        bytes(9, b""),
        bytes(10, &tensor),
        bytes(11, &inner),
        bytes(23, &sparse),
        bytes(15, &type_proto),
    ]
    .concat();
    let node = [
        bytes(1, b"x"),
        bytes(1, b""),
        bytes(2, b"y"),
        bytes(3, b"n"),
        bytes(4, b"Relu"),
        bytes(7, b"dom"),
        bytes(5, &attribute),
        bytes(6, b"doc"),
        fixed64(99),
    ]
    .concat();
    let graph = [
        bytes(1, &node),
        bytes(2, b"main"),
        bytes(5, &tensor),
        bytes(15, &sparse),
        bytes(10, b"doc"),
        bytes(11, &value_info),
        bytes(12, &value_info),
        bytes(13, &value_info),
        bytes(14, &[bytes(1, b"t"), bytes(2, &entry)].concat()),
        bytes(99, b"unknown"),
    ]
    .concat();
    let opset = [bytes(1, b""), int(2, 17)].concat();
    let training = [
        bytes(1, &inner),
        bytes(2, &inner),
        bytes(3, &entry),
        bytes(4, &entry),
    ]
    .concat();
    let function = [
        bytes(1, b"f"),
        bytes(4, b"i"),
        bytes(5, b"o"),
        bytes(6, b"a"),
        bytes(7, &node),
        bytes(8, b"doc"),
        bytes(9, &opset),
        bytes(10, b"dom"),
    ]
    .concat();
    model(&[
        bytes(2, b"p"),
        bytes(3, b"v"),
        bytes(4, b"d"),
        int(5, 1),
        bytes(6, b"doc"),
        bytes(7, &graph),
        bytes(8, &opset),
        bytes(14, &entry),
        bytes(20, &training),
        bytes(25, &function),
        int(99, 1),
        fixed32(98),
        fixed64(97),
        bytes(96, b"zzz"),
    ])
}

/// What decoding made, counted on the decoded model by the rule [`Census`] states.
#[derive(Default)]
struct Reference(Census);

impl Reference {
    fn of(model: &pb::ModelProto) -> Census {
        let mut r = Reference::default();
        r.model(model);
        r.0
    }

    fn add(&mut self, bytes: usize) {
        self.0.structure += bytes as u64;
    }

    fn text(&mut self, s: impl AsRef<[u8]>) {
        if !s.as_ref().is_empty() {
            self.0.structure += BLOCK;
        }
    }

    fn texts<T: AsRef<[u8]>>(&mut self, list: &[T]) {
        for s in list {
            self.add(size_of::<Vec<u8>>());
            self.text(s);
        }
    }

    fn listed<T>(&mut self, list: &[T]) {
        self.add(std::mem::size_of_val(list));
    }

    fn model(&mut self, m: &pb::ModelProto) {
        for s in [
            &m.producer_name,
            &m.producer_version,
            &m.domain,
            &m.doc_string,
        ] {
            self.text(s);
        }
        self.listed(&m.opset_import);
        m.opset_import.iter().for_each(|o| self.text(&o.domain));
        self.0.metadata_entries = m.metadata_props.len() as u64;
        self.entries(&m.metadata_props);
        if let Some(g) = &m.graph {
            self.graph(g);
        }
        self.listed(&m.training_info);
        for t in &m.training_info {
            t.initialization.iter().for_each(|g| self.graph(g));
            t.algorithm.iter().for_each(|g| self.graph(g));
            self.entries(&t.initialization_binding);
            self.entries(&t.update_binding);
        }
        self.listed(&m.functions);
        for f in &m.functions {
            for s in [&f.name, &f.doc_string, &f.domain] {
                self.text(s.as_deref().unwrap_or_default());
            }
            self.texts(&f.input);
            self.texts(&f.output);
            self.texts(&f.attribute);
            self.nodes(&f.node);
            self.listed(&f.opset_import);
            f.opset_import.iter().for_each(|o| self.text(&o.domain));
        }
    }

    fn entries(&mut self, list: &[pb::StringStringEntryProto]) {
        self.listed(list);
        for e in list {
            self.text(&e.key);
            self.text(&e.value);
        }
    }

    fn graph(&mut self, g: &pb::GraphProto) {
        self.nodes(&g.node);
        self.text(&g.name);
        self.text(&g.doc_string);
        self.listed(&g.initializer);
        g.initializer.iter().for_each(|t| self.tensor(t));
        self.listed(&g.sparse_initializer);
        g.sparse_initializer.iter().for_each(|s| self.sparse(s));
        for list in [&g.input, &g.output, &g.value_info] {
            self.listed(list);
            for v in list {
                self.text(&v.name);
                self.text(&v.doc_string);
                v.r#type.iter().for_each(|t| self.type_proto(t));
            }
        }
        self.listed(&g.quantization_annotation);
        for a in &g.quantization_annotation {
            self.text(a.tensor_name.as_deref().unwrap_or_default());
            self.entries(&a.quant_parameter_tensor_names);
        }
    }

    fn nodes(&mut self, list: &[pb::NodeProto]) {
        self.listed(list);
        self.0.nodes += list.len() as u64;
        for n in list {
            self.texts(&n.input);
            self.texts(&n.output);
            for s in [&n.name, &n.op_type, &n.domain, &n.doc_string] {
                self.text(s);
            }
            self.listed(&n.attribute);
            n.attribute.iter().for_each(|a| self.attribute(a));
        }
    }

    fn attribute(&mut self, a: &pb::AttributeProto) {
        for s in [&a.name, &a.ref_attr_name, &a.doc_string] {
            self.text(s);
        }
        self.text(&a.s);
        a.t.iter().for_each(|t| self.tensor(t));
        a.g.iter().for_each(|g| self.graph(g));
        a.sparse_tensor.iter().for_each(|s| self.sparse(s));
        // A Constant's `value_floats` / `value_ints` is its tensor.
        self.0.tensor_data += (4 * a.floats.len() + 8 * a.ints.len()) as u64;
        self.texts(&a.strings);
        self.listed(&a.tensors);
        a.tensors.iter().for_each(|t| self.tensor(t));
        self.listed(&a.graphs);
        a.graphs.iter().for_each(|g| self.graph(g));
        self.listed(&a.sparse_tensors);
        a.sparse_tensors.iter().for_each(|s| self.sparse(s));
        self.listed(&a.type_protos);
        a.type_protos.iter().for_each(|t| self.type_proto(t));
    }

    fn tensor(&mut self, t: &pb::TensorProto) {
        self.listed(&t.dims);
        let typed = 4 * (t.float_data.len() + t.int32_data.len())
            + 8 * (t.int64_data.len() + t.double_data.len() + t.uint64_data.len());
        let strings: usize = t.string_data.iter().map(Vec::len).sum();
        let data = (t.raw_data.len() + typed + strings) as u64;
        self.0.tensor_data += data;
        self.0.largest_tensor = self.0.largest_tensor.max(data);
        self.text(&t.raw_data);
        self.texts(&t.string_data);
        self.text(&t.name);
        self.text(&t.doc_string);
        self.entries(&t.external_data);
    }

    fn sparse(&mut self, s: &pb::SparseTensorProto) {
        s.values.iter().for_each(|t| self.tensor(t));
        s.indices.iter().for_each(|t| self.tensor(t));
        self.listed(&s.dims);
    }

    fn type_proto(&mut self, t: &pb::TypeProto) {
        self.text(&t.denotation);
        let Some(TypeValue::TensorType(tensor)) = &t.value else {
            return;
        };
        let Some(shape) = &tensor.shape else {
            return;
        };
        self.listed(&shape.dim);
        for d in &shape.dim {
            self.text(&d.denotation);
            if let Some(DimValue::DimParam(p)) = &d.value {
                self.text(p);
            }
        }
    }
}

/// The error the scan gives for `bytes`.
fn broken(bytes: &[u8]) -> String {
    match census(bytes) {
        Ok(c) => panic!("scanned as {c:?}"),
        Err(b) => b.to_string(),
    }
}

#[test]
fn the_scan_counts_what_the_decoder_makes() {
    let file = everything();
    let decoded = decode(&file).expect("the decoder takes the file");
    // Every list and field is there once decoded: the file's field numbers are the
    // decoder's.
    let graph = decoded.graph.as_ref().expect("a graph");
    let attribute = &graph.node[0].attribute[0];
    assert_eq!(attribute.ints, [1, 2, 3, 9]);
    assert_eq!(attribute.floats.len(), 3);
    assert_eq!(graph.initializer[0].int64_data, [-1]);
    assert_eq!(graph.initializer[0].uint64_data, [5, 6]);
    assert_eq!(decoded.functions[0].node.len(), 1);
    assert_eq!(decoded.training_info[0].update_binding.len(), 1);
    assert_eq!(attribute.type_protos.len(), 1);
    let scanned = census(&file).expect("the scan takes the file");
    assert_eq!(scanned, Reference::of(&decoded));
    // A node with an attribute holding two one-node graphs, in the graph and in the
    // function; and the two one-node graphs of the training info.
    assert_eq!(scanned.nodes, 3 + 3 + 2);
    assert_eq!(scanned.metadata_entries, 1);
    for name in [
        "student.onnx",
        "student-int8.onnx",
        "student-fp16.onnx",
        "teacher.onnx",
    ] {
        let file = shipped(name);
        let decoded = decode(&file).expect("a shipped model decodes");
        assert_eq!(census(&file).ok(), Some(Reference::of(&decoded)), "{name}");
    }
}

#[test]
fn lists_of_empty_values_cost_their_decoded_size() {
    let base = census(&model(&[bytes(7, &[])])).expect("a model");
    let graph = |fields: Vec<Vec<u8>>| census(&model(&[bytes(7, &fields.concat())]));
    let n = 1000;
    // An empty initializer: two bytes of the file, a `TensorProto` once decoded.
    let initializers = graph(vec![bytes(5, &[]); n]).expect("a model");
    assert_eq!(
        initializers.structure - base.structure,
        n as u64 * size_of::<pb::TensorProto>() as u64
    );
    // An empty value name: two bytes, a `String`.
    let names = graph(vec![bytes(1, &vec![bytes(1, b""); n].concat())]).expect("a model");
    assert_eq!(
        names.structure - base.structure,
        size_of::<pb::NodeProto>() as u64 + n as u64 * 24
    );
    // Packed dims: a byte each, an `i64` each; as tensor data, the same.
    let zeros = vec![0; n];
    let dims = graph(vec![bytes(5, &packed(1, &zeros))]).expect("a model");
    assert_eq!(
        dims.structure - base.structure,
        size_of::<pb::TensorProto>() as u64 + 8 * n as u64
    );
    let data = graph(vec![bytes(5, &packed(7, &zeros))]).expect("a model");
    assert_eq!(data.tensor_data, 8 * n as u64);
}

#[test]
fn broken_encodings_are_refused_where_they_break_as_the_decoder_refuses_them() {
    let in_graph = |fields: &[u8]| model(&[bytes(7, fields)]);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "a varint of 11 bytes",
            [key(1, 0), vec![0xff; 10], vec![0]].concat(),
            "at byte 0 (a field of ModelProto): a varint over 64 bits",
        ),
        (
            "a 10-byte varint whose last byte holds more than the 64th bit",
            [key(1, 0), vec![0xff; 9], vec![2]].concat(),
            "a varint over 64 bits",
        ),
        (
            "a varint cut short",
            vec![0x08, 0x80],
            "a varint runs past the end of its message",
        ),
        (
            "a key cut short",
            vec![0x88],
            "at byte 0 (a field of ModelProto): a varint runs past",
        ),
        (
            "a length past the end",
            [key(7, 2), varint(5), vec![0]].concat(),
            "a length of 5 bytes, with 1 left in the message",
        ),
        (
            "a length past the end of the enclosing message",
            model(&[
                bytes(7, &[key(5, 2), varint(3), vec![0, 0]].concat()),
                bytes(99, &[0; 8]),
            ]),
            "(a field of GraphProto): a length of 3 bytes, with 2 left",
        ),
        (
            "a fixed value cut short",
            in_graph(&bytes(1, &bytes(5, &[key(2, 5), vec![0; 2]].concat()))),
            "(a field of AttributeProto): a 4-byte value, with 2 left",
        ),
        (
            "a graph as a varint",
            int(7, 1),
            "field 7 is a varint, expected length-delimited",
        ),
        (
            "an IR version as bytes",
            bytes(1, &[]),
            "field 1 is length-delimited, expected a varint",
        ),
        (
            "a float attribute as a varint",
            in_graph(&bytes(1, &bytes(5, &int(2, 1)))),
            "field 2 is a varint, expected 32 bits",
        ),
        (
            "an unpacked int64 as 64 bits",
            in_graph(&bytes(5, &fixed64(7))),
            "(a field of TensorProto): field 7 is 64 bits, expected a varint",
        ),
        (
            "packed floats of 5 bytes",
            in_graph(&bytes(5, &bytes(4, &[0; 5]))),
            "not a whole number of 4-byte values",
        ),
        (
            "packed varints cut short",
            in_graph(&bytes(5, &bytes(7, &[0x80]))),
            "a varint runs past the end",
        ),
        ("field number 0", bytes(0, &[]), "field number 0"),
        (
            "a key over 32 bits",
            [varint(1 << 32), vec![0]].concat(),
            "a field key of 4294967296, over 32 bits",
        ),
        ("wire type 6", key(7, 6), "field 7 is wire type 6"),
        ("wire type 7", key(1, 7), "field 1 is wire type 7"),
        (
            "a group on a known field",
            [key(7, 3), key(7, 4)].concat(),
            "a group (wire type 3 or 4)",
        ),
    ];
    for (what, file, expected) in cases {
        let reason = broken(&file);
        assert!(reason.contains(expected), "{what}: {reason}");
        assert!(decode(&file).is_none(), "{what}: the decoder takes it");
    }
    // The one difference: the decoder skips a group on a field it does not know.
    let group = [key(99, 3), int(1, 1), key(99, 4)].concat();
    assert!(decode(&group).is_some());
    assert!(broken(&group).contains("a group"));
}

#[test]
fn unknown_fields_are_skipped_at_no_cost() {
    let plain = census(&model(&[])).expect("a model");
    let file = model(&[
        int(99, u64::MAX),
        fixed32(98),
        fixed64(97),
        bytes(96, &[0xff; 40]),
    ]);
    assert!(decode(&file).is_some());
    assert_eq!(census(&file).expect("a model"), plain);
}

#[test]
fn messages_nest_as_deep_as_the_decoder_takes_and_no_deeper() {
    // Graphs in attributes of nodes: a graph, node and attribute are three levels, so
    // the 34th graph lies at depth 1 + 3 * 33 = MAX_DEPTH.
    let nested = |graphs: usize, innermost: &[u8]| {
        let mut g = innermost.to_vec();
        for _ in 1..graphs {
            g = bytes(1, &bytes(5, &bytes(6, &g)));
        }
        model(&[bytes(7, &g)])
    };
    assert_eq!(MAX_DEPTH, 100);
    let deepest = nested(34, &[]);
    assert!(decode(&deepest).is_some());
    assert_eq!(census(&deepest).map(|c| c.nodes).ok(), Some(33));
    // A node inside the deepest graph is one level too deep.
    let too_deep = nested(34, &bytes(1, &[]));
    assert!(decode(&too_deep).is_none());
    assert!(broken(&too_deep).contains("recursion limit reached"));
    // Far deeper: refused without going deeper.
    let abyss = nested(5000, &[]);
    assert!(broken(&abyss).contains(&format!("nest more than {MAX_DEPTH} deep")));
}

/// The limit a census is refused by.
fn refused_by(census: &Census, limits: &Limits) -> Option<&'static str> {
    let check = Check {
        limits,
        origin: "test.onnx",
    };
    match census.check(&check) {
        Ok(()) => None,
        Err(Error::TooLarge { option, .. }) => Some(option),
        Err(e) => panic!("another error: {e}"),
    }
}

#[test]
fn each_count_passes_at_its_limit_and_is_refused_one_past_it() {
    let limits = Limits {
        max_nodes: 10,
        max_metadata_entries: 20,
        max_weight_bytes: 1000,
        max_tensor_bytes: 600,
        ..Limits::default()
    };
    let bound = structure_bound(&limits);
    assert_eq!(bound, BASE + 10 * PER_NODE + 20 * PER_ENTRY);
    let at = Census {
        nodes: 10,
        metadata_entries: 20,
        tensor_data: 1000,
        largest_tensor: 600,
        structure: bound,
    };
    assert_eq!(refused_by(&at, &limits), None);
    let over = [
        (Census { nodes: 11, ..at }, "max_nodes"),
        (
            Census {
                metadata_entries: 21,
                ..at
            },
            "max_metadata_entries",
        ),
        (
            Census {
                tensor_data: 1001,
                ..at
            },
            "max_weight_bytes",
        ),
        (
            Census {
                largest_tensor: 601,
                ..at
            },
            "max_tensor_bytes",
        ),
        (
            Census {
                structure: bound + 1,
                ..at
            },
            "max_nodes",
        ),
    ];
    for (census, option) in over {
        assert_eq!(refused_by(&census, &limits), Some(option), "{census:?}");
    }
    let saturated = Census {
        nodes: u64::MAX,
        metadata_entries: u64::MAX,
        tensor_data: u64::MAX,
        largest_tensor: u64::MAX,
        structure: u64::MAX,
    };
    assert_eq!(refused_by(&saturated, &Limits::unlimited()), None);
    // Through a file: ten nodes and ten entries, at and one under their limits.
    let file = model(&[
        bytes(7, &vec![bytes(1, &[]); 10].concat()),
        vec![bytes(14, &[]); 10].concat(),
    ]);
    let refusal = |limits: Limits| {
        let check = Check {
            limits: &limits,
            origin: "test.onnx",
        };
        match check_encoding(&file, &check) {
            Ok(()) => None,
            Err(Error::TooLarge { option, .. }) => Some(option),
            Err(e) => panic!("another error: {e}"),
        }
    };
    let exact = Limits {
        max_nodes: 10,
        max_metadata_entries: 10,
        ..Limits::default()
    };
    assert_eq!(refusal(exact), None);
    let fewer_nodes = Limits {
        max_nodes: 9,
        ..exact
    };
    assert_eq!(refusal(fewer_nodes), Some("max_nodes"));
    let fewer_entries = Limits {
        max_metadata_entries: 9,
        ..exact
    };
    assert_eq!(refusal(fewer_entries), Some("max_metadata_entries"));
}

#[test]
fn damaged_files_never_panic_and_what_decodes_scans_no_smaller() {
    let file = shipped("student.onnx");
    // A fixed xorshift sequence: the same damage on every run.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut damaged: Vec<Vec<u8>> = (0..file.len())
        .step_by(997)
        .map(|end| file[..end].to_vec())
        .collect();
    for _ in 0..3000 {
        let mut copy = file.clone();
        for _ in 0..1 + next() % 3 {
            // Damage where the structure is: the weights are the file's bulk.
            let at = match next() % 2 {
                0 => (next() % 4096) as usize,
                _ => file.len() - 1 - (next() % 4096) as usize,
            };
            copy[at] = next() as u8;
        }
        damaged.push(copy);
    }
    let mut decoded_count = 0;
    for bytes in &damaged {
        let scanned = census(bytes);
        let Some(decoded) = decode(bytes) else {
            continue;
        };
        decoded_count += 1;
        let reference = Reference::of(&decoded);
        match scanned {
            Ok(c) => assert!(
                c.nodes >= reference.nodes
                    && c.metadata_entries >= reference.metadata_entries
                    && c.tensor_data >= reference.tensor_data
                    && c.structure >= reference.structure,
                "the scan counts less than decoding makes: {c:?} < {reference:?}"
            ),
            Err(b) => assert!(b.reason.contains("a group"), "{b}"),
        }
    }
    // Some damage leaves the file decodable; the property is not vacuous.
    assert!(decoded_count > 100, "{decoded_count} damaged files decode");
}
