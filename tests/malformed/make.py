#!/usr/bin/env python3
"""Writes the corpus of malformed model files and `cases.json`, which lists them.

Each case is one defect in an otherwise valid file, and names the error the runtime must
give: the `student_runtime::Error` variant and a substring of the message with its causes
(what `student` prints). `tests/tests/malformed.rs` opens every case through the library,
`cli/tests/malformed.rs` through the command line.

The corpus is committed, so the tests never run this script. Remake it from the workspace
root, with the venv that `scripts/test.sh` sets up and a release build of `student` (which
compiles the `.student` controls):

    target/py/bin/python tests/malformed/make.py [--student target/release/student]

Every file is small: the valid bases are tiny classifiers (a few KB) carrying the shipped
student's model card, and huge sizes are declared, never stored. Cases cut from the shipped
student (212 KB) are not stored: `cases.json` names the source file and how much of it to
keep, and the tests cut it in memory. Output is deterministic: the same script writes the
same bytes.
"""

import argparse
import copy
import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
SHIPPED = os.path.join(ROOT, "models", "fashion-mnist")

# The sections a card needs; the rest of the shipped card (recipe, metrics, ...) only
# makes files bigger.
CARD_KEYS = ["name", "labels", "input", "calibration", "escalation"]

# Planned for issue 6: cases that today open, hang or allocate absurdly, and that the
# `Limits` of `OpenOptions` will refuse with `Error::TooLarge`. The tests skip them.


class Corpus:
    """Collects the cases and writes their files."""

    def __init__(self):
        self.cases = []
        self.controls = []
        self.names = set()

    def _entry(self, name, what, error, message, pending, today):
        if name in self.names:
            raise ValueError(f"duplicate case {name}")
        self.names.add(name)
        entry = {"name": name, "what": what, "error": error, "message": message}
        if pending:
            entry["pending"] = pending
            entry["today"] = today
        return entry

    def add(self, path, data, what, error, message, pending=None, today=None):
        """A committed file: `path` relative to this folder."""
        name = os.path.splitext(os.path.basename(path))[0]
        entry = self._entry(f"{os.path.dirname(path)}/{name}", what, error, message,
                            pending, today)
        entry["file"] = path
        write(path, data)
        self.cases.append(entry)

    def cut(self, name, source, percent, what, error, message):
        """A prefix of a shipped file, cut by the tests in memory (not stored)."""
        entry = self._entry(name, what, error, message, None, None)
        entry["source"] = source
        entry["keep_percent"] = percent
        self.cases.append(entry)

    def control(self, path, data, what):
        """A valid file the cases are made from: it must open and run."""
        write(path, data)
        self.controls.append({"file": path, "what": what})


def write(path, data):
    full = os.path.join(HERE, path)
    os.makedirs(os.path.dirname(full), exist_ok=True)
    with open(full, "wb") as f:
        f.write(data)


def serialize(model):
    return model.SerializeToString(deterministic=True)


def shipped_card():
    student = onnx.load(os.path.join(SHIPPED, "student.onnx"))
    props = {p.key: p.value for p in student.metadata_props}
    card = {key: props["student." + key] for key in CARD_KEYS}
    card["name"] = json.dumps("malformed-corpus-base")
    return card


def set_card(model, card):
    del model.metadata_props[:]
    for key, value in card.items():
        entry = model.metadata_props.add()
        entry.key = "student." + key
        entry.value = value


def float_base(card):
    """A tiny float classifier of 28x28 images: Conv 3x3 (2 channels), Relu, MaxPool 4x4,
    Flatten, Gemm to 10 classes."""
    rng = np.random.default_rng(6)
    inits = [
        numpy_helper.from_array(rng.normal(0, 0.5, (2, 1, 3, 3)).astype(np.float32), "conv.weight"),
        numpy_helper.from_array(rng.normal(0, 0.1, (2,)).astype(np.float32), "conv.bias"),
        numpy_helper.from_array(rng.normal(0, 0.2, (98, 10)).astype(np.float32), "dense.weight"),
        numpy_helper.from_array(rng.normal(0, 0.1, (10,)).astype(np.float32), "dense.bias"),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "conv.weight", "conv.bias"], ["conv"], name="conv",
                         kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["relu"], name="relu"),
        helper.make_node("MaxPool", ["relu"], ["pool"], name="pool", kernel_shape=[4, 4],
                         strides=[4, 4]),
        helper.make_node("Flatten", ["pool"], ["flat"], name="flatten", axis=1),
        helper.make_node("Gemm", ["flat", "dense.weight", "dense.bias"], ["logits"],
                         name="dense"),
    ]
    return make_model(nodes, inits, card)


def make_model(nodes, inits, card, input_dims=("batch", 1, 28, 28), classes=10):
    graph = helper.make_graph(
        nodes,
        "malformed-corpus",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, list(input_dims))],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])],
        inits,
    )
    model = helper.make_model(graph, producer_name="malformed-corpus",
                              opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    if card is not None:
        set_card(model, card)
    return model


def int8_base(card):
    """The float base as an int8 QDQ graph, the form `student quantize` writes."""
    rng = np.random.default_rng(8)
    inits = []

    def const(name, array):
        inits.append(numpy_helper.from_array(array, name))
        return name

    def qparams(name, scale):
        return [const(name + "_scale", np.array(scale, np.float32)),
                const(name + "_zero_point", np.array(0, np.uint8))]

    def qdq(name, scale):
        params = qparams(name, scale)
        return [
            helper.make_node("QuantizeLinear", [name] + params, [name + "_q"],
                             name=name + "_quantize"),
            helper.make_node("DequantizeLinear", [name + "_q"] + params, [name + "_dq"],
                             name=name + "_dequantize"),
        ]

    def weights(name, shape, axis, x_scale):
        channels = shape[axis]
        w_scale = np.full(channels, 0.01, np.float32)
        q = rng.integers(-60, 60, shape, dtype=np.int8)
        b = rng.integers(-500, 500, channels, dtype=np.int32)
        w = [const(name + ".weight_q", q), const(name + ".weight_scale", w_scale),
             const(name + ".weight_zero_point", np.zeros(channels, np.int8))]
        bias = [const(name + ".bias_q", b), const(name + ".bias_scale", w_scale * x_scale),
                const(name + ".bias_zero_point", np.zeros(channels, np.int32))]
        return [
            helper.make_node("DequantizeLinear", w, [name + ".weight"], axis=axis,
                             name=name + ".weight_dequantize"),
            helper.make_node("DequantizeLinear", bias, [name + ".bias"], axis=0,
                             name=name + ".bias_dequantize"),
        ]

    x_scale, act_scale = 1.0 / 255.0, 0.02
    nodes = qdq("input", x_scale)
    nodes += weights("conv", (2, 1, 3, 3), 0, x_scale)
    nodes += [
        helper.make_node("Conv", ["input_dq", "conv.weight", "conv.bias"], ["conv"],
                         name="conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["relu"], name="relu"),
    ]
    nodes += qdq("relu", act_scale)
    nodes.append(helper.make_node("MaxPool", ["relu_dq"], ["pool"], name="pool",
                                  kernel_shape=[4, 4], strides=[4, 4]))
    nodes += qdq("pool", act_scale)
    nodes.append(helper.make_node("Flatten", ["pool_dq"], ["flat"], name="flatten", axis=1))
    nodes += qdq("flat", act_scale)
    nodes += weights("dense", (98, 10), 1, act_scale)
    nodes.append(helper.make_node("Gemm", ["flat_dq", "dense.weight", "dense.bias"],
                                  ["logits"], name="dense"))
    return make_model(nodes, inits, card)


def copy_of(model):
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


def copy_of_tensor(tensor):
    out = onnx.TensorProto()
    out.CopyFrom(tensor)
    return out


def node(model, name):
    return next(n for n in model.graph.node if n.name == name)


def initializer(model, name):
    return next(t for t in model.graph.initializer if t.name == name)


def set_dims(value_info, dims):
    """Replaces the declared dimensions: ints are sizes, strings symbols, None no size."""
    shape = value_info.type.tensor_type.shape
    del shape.dim[:]
    for d in dims:
        dim = shape.dim.add()
        if isinstance(d, str):
            dim.dim_param = d
        elif d is not None:
            dim.dim_value = d


def varint(n):
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def field(number, payload):
    """A length-delimited protobuf field."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def nested_subgraphs(depth):
    """A ModelProto whose graph holds an `If` node whose branch holds an `If` node ...
    `depth` levels deep, encoded by hand (protobuf libraries refuse to go this deep)."""
    # GraphProto.node = 1, NodeProto.attribute = 5, AttributeProto.g = 6,
    # AttributeProto.name = 1, AttributeProto.type = 20 (GRAPH = 5), NodeProto.op_type = 4.
    graph = b""
    for _ in range(depth):
        attribute = field(1, b"then_branch") + varint(20 << 3) + varint(5) + field(6, graph)
        graph = field(1, field(4, b"If") + field(5, attribute))
    # ModelProto.ir_version = 1 (varint), ModelProto.graph = 7.
    return varint(1 << 3) + varint(8) + field(7, graph)


def onnx_cases(corpus, base, card):
    """ONNX files: not ONNX at all, ONNX without a usable graph, bad shapes and types,
    broken graphs, and bad model cards."""
    add = corpus.add
    valid = serialize(base)

    # Not an ONNX model.
    add("onnx/empty.onnx", b"", "zero-length file", "NotOnnx", "the file is empty")
    for percent in (10, 50, 99):
        corpus.cut(f"shipped/student-cut-{percent}pct", "models/fashion-mnist/student.onnx",
                   percent, f"the shipped student cut to its first {percent}% of bytes",
                   "NotOnnx", "is not an ONNX model")
    add("onnx/cut-3-bytes.onnx", valid[:3], "the base model cut to its first 3 bytes",
        "NotOnnx", "is not an ONNX model")
    add("onnx/cut-last-byte.onnx", valid[:-1], "the base model without its last byte",
        "NotOnnx", "is not an ONNX model")
    add("onnx/random-bytes.onnx", np.random.default_rng(1).bytes(4096),
        "4096 random bytes", "NotOnnx", "is not an ONNX model")
    with open(os.path.join(SHIPPED, "samples", "test-00000-label-9.png"), "rb") as f:
        add("onnx/png-image.onnx", f.read(), "a PNG image named .onnx", "NotOnnx",
            "is not an ONNX model")
    add("onnx/text.onnx", b"This is a text file, not a model.\n" * 4,
        "a text file named .onnx", "NotOnnx", "is not an ONNX model")
    no_graph = helper.make_model(helper.make_graph([], "g", [], []))
    no_graph.ClearField("graph")
    add("onnx/no-graph.onnx", serialize(no_graph),
        "a ModelProto that decodes but has no graph", "NotOnnx",
        "decode as protobuf but not as an ONNX model")
    zero_ir = copy_of(base)
    zero_ir.ir_version = 0
    add("onnx/ir-version-0.onnx", serialize(zero_ir), "a graph but IR version 0",
        "NotOnnx", "no graph or IR version")
    add("onnx/nested-subgraphs.onnx", nested_subgraphs(2000),
        "If nodes whose branches nest 2000 graphs deep", "NotOnnx",
        "recursion limit reached")

    # Not a single-input, single-output classifier.
    m = copy_of(base)
    del m.graph.input[:]
    add("onnx/no-inputs.onnx", serialize(m), "a graph with no inputs", "Unsupported",
        "expected exactly one graph input, found 0")
    # A plain dense classifier: with its input a constant, the open-time bound on what
    # tract folds can follow it, so the input check is what refuses it.
    m = make_model(
        [helper.make_node("Flatten", ["input"], ["flat"], name="flatten"),
         helper.make_node("Gemm", ["flat", "w", "b"], ["logits"], name="dense")],
        [numpy_helper.from_array(np.zeros((784, 10), np.float32), "w"),
         numpy_helper.from_array(np.zeros(10, np.float32), "b"),
         numpy_helper.from_array(np.zeros((1, 1, 28, 28), np.float32), "input")],
        card)
    add("onnx/input-with-initializer.onnx", serialize(m),
        "a graph whose one input has an initializer of its name (a constant with a default)",
        "Unsupported", "the declared inputs [input] each have an initializer of their name")
    m = copy_of(base)
    m.graph.input.append(helper.make_tensor_value_info("extra", TensorProto.FLOAT, [1, 4]))
    add("onnx/two-inputs.onnx", serialize(m), "a graph with two inputs", "Unsupported",
        "expected exactly one graph input, found 2")
    m = copy_of(base)
    m.graph.output.append(helper.make_tensor_value_info("relu", TensorProto.FLOAT, None))
    add("onnx/two-outputs.onnx", serialize(m), "a graph with two outputs", "Unsupported",
        "expected exactly one graph output (the logits), found 2")
    input_dims = [
        ("input-no-shape", None, "an input declared without a shape",
         "input `input`: no declared shape"),
        ("input-zero-dim", ["batch", 1, 0, 28], "an input axis of size 0",
         "axis 2 must have a fixed positive size, found 0"),
        ("input-negative-dim", ["batch", 1, -28, 28], "an input axis of size -28",
         "axis 2 must have a fixed positive size, found -28"),
        ("input-missing-dim", ["batch", 1, None, 28], "an input axis with no size",
         "axis 2 must have a fixed positive size, found no size"),
        ("input-symbolic-dim", ["batch", 1, "height", 28], "a symbolic input axis",
         "axis 2 must have a fixed positive size, found no size"),
        ("input-huge-dim", ["batch", 1, 1 << 40, 28], "an input axis of 2^40",
         "is 123145302310912 bytes, over the limit"),
        ("input-dims-overflow", ["batch", 1 << 62, 1 << 62, 4],
         "input axes whose product overflows u64", "is more than 2^64 bytes, over the limit"),
        ("input-rank-1", ["batch"], "an input with only a batch axis",
         "must be [batch, ...], found rank 1"),
        # Samples run one at a time: a fixed batch of 2 ran with the image in both places.
        ("input-batch-2", [2, 1, 28, 28], "an input whose batch size is fixed at 2",
         "input `input` fixes its batch size at 2; samples run one at a time"),
    ]
    for name, dims, what, message in input_dims:
        m = copy_of(base)
        if dims is None:
            m.graph.input[0].type.tensor_type.ClearField("shape")
        else:
            set_dims(m.graph.input[0], dims)
        # The limits check declared sizes before the graph is read.
        error = "TooLarge" if "over the limit" in message else "Unsupported"
        add(f"onnx/{name}.onnx", serialize(m), what, error, message)
    for name, dtype, number in [("int64", TensorProto.INT64, 7),
                                ("string", TensorProto.STRING, 8)]:
        m = copy_of(base)
        m.graph.input[0].type.tensor_type.elem_type = dtype
        add(f"onnx/input-{name}.onnx", serialize(m), f"an {name} input", "Unsupported",
            f"element type {number} is not float32")
    m = copy_of(base)
    m.graph.input[0].type.ClearField("tensor_type")
    m.graph.input[0].type.sequence_type.elem_type.tensor_type.elem_type = TensorProto.FLOAT
    add("onnx/input-sequence.onnx", serialize(m), "an input that is a sequence, not a tensor",
        "Unsupported", "input `input`: not a tensor")
    for name, dims, what in [("output-one-class", ["batch", 1], "an output of 1 class"),
                             ("output-huge-classes", ["batch", 1 << 40],
                              "an output of 2^40 classes"),
                             ("output-rank-3", ["batch", 10, 1], "an output of rank 3")]:
        m = copy_of(base)
        set_dims(m.graph.output[0], dims)
        add(f"onnx/{name}.onnx", serialize(m), what, "Unsupported",
            "must be [batch, classes] with 2 to 1048576 classes")

    # Broken graphs: the runtime reads them, the engine refuses to plan them.
    m = copy_of(base)
    w = initializer(m, "dense.weight")
    w.raw_data = w.raw_data[: len(w.raw_data) // 2]
    add("onnx/initializer-short.onnx", serialize(m),
        "an initializer whose dims [98, 10] say more elements than its raw_data holds (490)",
        "Malformed", "declares dimensions [98, 10] (980 elements, 3920 bytes) but holds 1960")
    m = copy_of(base)
    w = initializer(m, "dense.weight")
    del w.dims[:]
    w.dims.extend([1 << 32, 1 << 32, 16])
    add("onnx/initializer-dims-overflow.onnx", serialize(m),
        "an initializer whose dims product (2^68) overflows u64", "TooLarge",
        "initializer `dense.weight`, dimensions [4294967296, 4294967296, 16], is more than 2^64")
    m = copy_of(base)
    w = initializer(m, "dense.weight")
    del w.dims[:]
    w.dims.extend([-98, 10])
    add("onnx/initializer-negative-dim.onnx", serialize(m),
        "an initializer with a negative dimension", "Malformed",
        "`dense.weight` has a negative dimension -98")
    m = copy_of(base)
    w = initializer(m, "conv.weight")
    half = numpy_helper.to_array(w).astype(np.float16)
    w.CopyFrom(numpy_helper.from_array(half, "conv.weight"))
    add("onnx/initializer-float16.onnx", serialize(m),
        "a float16 initializer feeding a Conv whose input is float", "Plan", "conv")
    # float16 values kept in int32_data, one 16-bit pattern per entry: tract kept the low
    # 16 bits of 0x103C00 (1.0); onnxruntime refuses the file.
    m = copy_of(base)
    w = initializer(m, "conv.bias")
    values = numpy_helper.to_array(w).astype(np.float16).view(np.uint16).astype(np.int64)
    values[0] |= 0x100000
    w.CopyFrom(helper.make_tensor("conv.bias", TensorProto.FLOAT16, w.dims, []))
    w.int32_data.extend(int(v) for v in values)
    add("onnx/initializer-float16-high-bits.onnx", serialize(m),
        "a float16 initializer whose int32_data entry has bits above 16", "Malformed",
        f"initializer `conv.bias` holds {values[0]} in int32_data, out of the range of float16")
    m = copy_of(base)
    w = initializer(m, "conv.bias")
    w.data_location = TensorProto.EXTERNAL
    w.ClearField("raw_data")
    for key, value in [("location", "../../../../../../etc/hostname"), ("length", "8")]:
        entry = w.external_data.add()
        entry.key, entry.value = key, value
    add("onnx/initializer-external-data.onnx", serialize(m),
        "an initializer whose data lies in an external file outside the model's folder",
        "Malformed", "`conv.bias` keeps its data in an external file")
    m = copy_of(base)
    node(m, "dense").input[0] = "no_such_value"
    add("onnx/missing-node-input.onnx", serialize(m),
        "a node reading a value that nothing produces", "Plan", "no_such_value")
    m = copy_of(base)
    node(m, "relu").input[0] = "pool"
    add("onnx/cycle.onnx", serialize(m),
        "a cycle: Relu reads MaxPool's output and MaxPool reads Relu's", "Plan",
        "cannot prepare the model")
    m = copy_of(base)
    node(m, "relu").input[0] = "relu"
    add("onnx/self-loop.onnx", serialize(m), "a node reading its own output", "Plan",
        "cannot prepare the model")
    m = copy_of(base)
    twin = onnx.NodeProto()
    twin.CopyFrom(node(m, "relu"))
    twin.name = "relu_twin"
    m.graph.node.append(twin)
    add("onnx/value-written-twice.onnx", serialize(m),
        "two nodes writing the same value", "Malformed",
        "is written by node `relu` and by node `relu_twin`")
    m = copy_of(base)
    node(m, "relu").output[0] = m.graph.input[0].name
    add("onnx/node-writes-input.onnx", serialize(m), "a node writing the graph's input",
        "Malformed", "is written by the graph's input and by node `relu`")
    m = copy_of(base)
    m.graph.initializer.append(copy_of_tensor(m.graph.initializer[0]))
    add("onnx/initializer-twice.onnx", serialize(m), "two initializers of one name",
        "Malformed", "is written by an initializer and by an initializer")
    m = copy_of(base)
    m.graph.output[0].name = "dense.bias"
    add("onnx/output-is-initializer.onnx", serialize(m),
        "the graph's output is an initializer: a constant", "Malformed",
        "output `dense.bias` is an initializer")
    # A branch of an If writing `relu`, which the enclosing graph's node `relu` writes:
    # values are single-assignment across nested graphs too.
    m = copy_of(base)
    branch = helper.make_graph(
        [helper.make_node("Identity", ["conv"], ["relu"], name="shadow")], "branch", [],
        [helper.make_tensor_value_info("relu", TensorProto.FLOAT, None)])
    m.graph.initializer.append(numpy_helper.from_array(np.array(True), "always"))
    relu = node(m, "relu")
    relu.CopyFrom(helper.make_node("If", ["always"], ["relu"], name="relu",
                                   then_branch=branch, else_branch=branch))
    add("onnx/branch-writes-outer-value.onnx", serialize(m),
        "an If branch writing a value its enclosing graph also writes", "Malformed",
        "is written by node `relu` and by node `shadow`")
    m = copy_of(base)
    flatten = node(m, "flatten")
    flatten.CopyFrom(helper.make_node("Reshape", ["pool", "bad_shape"], ["flat"],
                                      name="flatten"))
    m.graph.initializer.append(numpy_helper.from_array(np.array([1, 97], np.int64),
                                                       "bad_shape"))
    add("onnx/reshape-wrong-count.onnx", serialize(m),
        "a Reshape of 98 elements to [1, 97]", "Plan", "cannot prepare the model")
    m = copy_of(base)
    node(m, "relu").op_type = "NoSuchOperator"
    add("onnx/unknown-operator.onnx", serialize(m), "an operator ONNX does not define",
        "Malformed", "NoSuchOperator is not an operator of ai.onnx (opset 13)")
    m = copy_of(base)
    m.opset_import[0].version = 100
    add("onnx/opset-100.onnx", serialize(m), "a model importing ONNX opset 100 (tract ran it)",
        "Unsupported", "imports ai.onnx opset 100, newer than the 26 the runtime knows")
    # Runtimes bind two imports of one domain differently (tract the first, onnxruntime the
    # last); a Softmax's axis means another thing at opset 11 and 13.
    m = copy_of(base)
    m.opset_import.insert(0, helper.make_opsetid("ai.onnx", 11))
    add("onnx/opset-imported-twice.onnx", serialize(m), "the default domain imported twice",
        "Unsupported", "imports ai.onnx twice (opsets 11 and 13)")
    m = copy_of(base)
    node(m, "pool").attribute.append(helper.make_attribute("strides", [1, 1]))
    add("onnx/attribute-twice.onnx", serialize(m), "a MaxPool with `strides` given twice",
        "Malformed", "attribute `strides` is given twice")
    attribute_edits = [
        ("pool-stride-0", "pool", {"strides": [0, 0]}, "a MaxPool with stride 0",
         "Malformed", "attribute `strides` must be positive"),
        ("pool-kernel-0", "pool", {"kernel_shape": [0, 0]}, "a MaxPool window of 0x0",
         "Malformed", "attribute `kernel_shape` must be positive"),
        ("conv-stride-0", "conv", {"strides": [0, 0]}, "a Conv with stride 0",
         "Malformed", "attribute `strides` must be positive"),
        ("conv-dilation-0", "conv", {"dilations": [0, 0]}, "a Conv with dilation 0",
         "Malformed", "attribute `dilations` must be positive"),
        ("conv-group-0", "conv", {"group": 0}, "a Conv of 0 groups", "Malformed",
         "attribute `group` must be positive"),
        ("conv-huge-pads", "conv", {"pads": [1 << 62] * 4},
         "a Conv padded by 2^62 on every side", "Malformed",
         "attribute `pads` holds 4611686018427387904, expected 0 to 2"),
        ("conv-negative-pads", "conv", {"pads": [-5] * 4}, "a Conv padded by -5",
         "Malformed", "attribute `pads` holds -5, expected 0 to 2"),
        ("conv-pads-beyond-kernel", "conv", {"pads": [30000] * 4},
         "a 3x3 Conv padded by 30,000 on every side", "Malformed",
         "attribute `pads` holds 30000, expected 0 to 2"),
        ("pool-kernel-20000", "pool", {"kernel_shape": [20000, 20000], "pads": [10000] * 4},
         "a MaxPool window of 20,000 x 20,000", "Malformed",
         "attribute `kernel_shape` holds 20000, expected 1 to 1024"),
        ("flatten-axis-10", "flatten", {"axis": 10}, "a Flatten of axis 10 on a rank-4 value",
         "Plan", "cannot prepare the model"),
        ("pool-kernel-200x200", "pool", {"kernel_shape": [200, 200]},
         "a MaxPool window of 200 x 200 (tract plans a window in time growing with its area)",
         "Malformed", "its kernel of [200, 200] covers more than 16384 positions"),
        ("conv-two-pads", "conv", {"pads": [1, 1]}, "a 2-D Conv with two pads instead of four",
         "Malformed", "attribute `pads` holds 2 values, expected 4"),
        # tract ignores attributes it does not know, and reads those it knows whatever
        # their type: the Conv below ran as dilation 1 and answered.
        ("conv-dilation-misspelt", "conv", {"dilation": [2, 2]},
         "a Conv whose `dilations` is spelt `dilation`", "Malformed",
         "attribute `dilation` is not one that Conv takes at opset 13"),
        ("pool-strides-floats", "pool", {"strides": [2.0, 2.0]},
         "a MaxPool whose strides are floats", "Malformed",
         "attribute `strides` must be of type INTS, found FLOATS"),
    ]
    for name, target, edits, what, error, message in attribute_edits:
        m = copy_of(base)
        n = node(m, target)
        kept = [a for a in n.attribute if a.name not in edits]
        del n.attribute[:]
        n.attribute.extend(kept)
        n.attribute.extend(helper.make_attribute(k, v) for k, v in edits.items())
        add(f"onnx/{name}.onnx", serialize(m), what, error, message)
    m = copy_of(base)
    node(m, "relu").CopyFrom(helper.make_node("Transpose", ["conv"], ["relu"], name="relu",
                                              perm=[0, 5, 1, 2]))
    add("onnx/transpose-axis-5.onnx", serialize(m),
        "a Transpose naming axis 5 of a rank-4 value", "Malformed", "expected each of 0..4 once")
    m = copy_of(base)
    m.graph.initializer.extend([numpy_helper.from_array(np.array(10, dtype=np.int64), "depth"),
                                numpy_helper.from_array(np.array([0, 1], dtype=np.float32),
                                                        "onoff")])
    node(m, "relu").CopyFrom(helper.make_node("OneHot", ["conv", "depth", "onoff"], ["relu"],
                                              name="relu", axis=-6))
    add("onnx/onehot-axis-minus-6.onnx", serialize(m),
        "a OneHot of axis -6 on a rank-4 value (opening grew without bound)", "Malformed",
        "for OneHot the runtime takes -1 or a non-negative axis")
    m = copy_of(base)
    node(m, "relu").CopyFrom(helper.make_node("Softmax", ["conv"], ["relu"], name="relu",
                                              axis=4))
    add("onnx/softmax-axis-4.onnx", serialize(m),
        "a Softmax over axis 4 of a rank-4 value (tract ran it as the identity)", "Malformed",
        "node `relu` (Softmax): axis 4 is outside its input's rank 4 (expected -4 to 3)")
    m = copy_of(base)
    m.graph.initializer.append(numpy_helper.from_array(np.array([2, 1], dtype=np.int64),
                                                       "sizes"))
    node(m, "relu").CopyFrom(helper.make_node("Split", ["conv", "sizes"], ["relu", "extra"],
                                              name="relu", axis=1))
    add("onnx/split-sizes-over-axis.onnx", serialize(m),
        "a Split of a 2-channel value into 2 and 1 channels", "Malformed",
        "split sizes [2, 1] do not add up to the 2 elements of axis 1")
    m = copy_of(base)
    weight = initializer(m, "dense.weight")
    weight.CopyFrom(numpy_helper.from_array(np.zeros((98, 12), np.float32), "dense.weight"))
    initializer(m, "dense.bias").CopyFrom(numpy_helper.from_array(np.zeros(12, np.float32),
                                                                   "dense.bias"))
    add("onnx/output-12-declared-10.onnx", serialize(m),
        "a graph declaring 10 logits that computes 12", "Malformed",
        "the graph's output is [1, 12] at batch 1, where its declaration promises 10 values")
    m = copy_of(base)
    m.graph.output[0].name = "nothing"
    add("onnx/output-made-by-nothing.onnx", serialize(m),
        "a graph output that no node makes", "Malformed", "`nothing` is made by no node")

    def before_pool(new_nodes, inits):
        """The base with `new_nodes` between the Relu and the MaxPool, which reads `mid`."""
        m = copy_of(base)
        node(m, "pool").input[0] = "mid"
        at = [n.name for n in m.graph.node].index("relu") + 1
        for i, n in enumerate(new_nodes):
            m.graph.node.insert(at + i, n)
        m.graph.initializer.extend(numpy_helper.from_array(np.array(v), k)
                                   for k, v in inits.items())
        return m

    def sliced(start, axis, step, index=np.int64):
        """The base with a Slice of `relu` (start to 28 along `axis`, by `step`), its
        operands of type `index`."""
        return before_pool([helper.make_node("Slice", ["relu", "starts", "ends", "axes", "steps"],
                                             ["mid"], name="slice")],
                           {"starts": np.array([start], index),
                            "ends": np.array([28], index),
                            "axes": np.array([axis], index),
                            "steps": np.array([step], index)})

    m = copy_of(base)
    node(m, "relu").domain = "com.example"
    add("onnx/relu-in-another-domain.onnx", serialize(m), "a Relu in the domain com.example",
        "Unsupported", "is in the operator domain `com.example`")
    # Slice operands may be int32 as well as int64: steps of 1 either way are taken.
    corpus.control("controls/slice-int32-steps.onnx", serialize(sliced(0, 2, 1, np.int32)),
                   "the float base with a Slice whose operands are int32, steps of 1")

    add("onnx/slice-step-0.onnx", serialize(sliced(0, 2, 0)), "a Slice with step 0", "Malformed",
        "a slice step is 0")
    # tract reads columns 0, 2, 4, ... for a slice of columns 1, 3, 5, ... after a padded
    # convolution: a wrong answer with no error, so strided slices are refused.
    add("onnx/slice-step-2.onnx", serialize(sliced(1, 3, 2)), "a Slice with step 2",
        "Unsupported", "slice steps [2]: only steps of 1 are supported")
    # Forms outside the table of those checked against onnxruntime on the tract path
    # (runtime/src/tract_checked.rs): tract runs both; `--unchecked-operators` lets them
    # through (cli/tests/cli.rs).
    m = before_pool([helper.make_node("ScatterND", ["relu", "where", "what"], ["mid"],
                                      name="scatter")],
                    {"where": np.array([[0, 0, 0, 0]], np.int64),
                     "what": np.array([1.0], np.float32)})
    add("onnx/unchecked-operator.onnx", serialize(m),
        "a ScatterND, an operator not checked against onnxruntime on the tract path",
        "Unsupported", "node `scatter` (ScatterND): ScatterND (ai.onnx) has not been checked")
    m = before_pool([helper.make_node("Dropout", ["relu"], ["mid"], name="dropout", seed=7)], {})
    add("onnx/unchecked-attribute.onnx", serialize(m),
        "a Dropout with a seed, an attribute not checked on the tract path", "Unsupported",
        "node `dropout` (Dropout): attribute `seed` = 7 has not been checked")
    # A BatchNormalization in training mode normalizes by the batch's statistics; the
    # compiler used the running ones and answered another class (onnxruntime refuses the
    # one-output form).
    m = before_pool([helper.make_node("BatchNormalization",
                                      ["relu", "bn.scale", "bn.bias", "bn.mean", "bn.var"],
                                      ["mid"], name="bn", training_mode=1)],
                    {"bn.scale": np.ones(2, np.float32), "bn.bias": np.zeros(2, np.float32),
                     "bn.mean": np.zeros(2, np.float32), "bn.var": np.ones(2, np.float32)})
    m.opset_import[0].version = 15
    add("onnx/batchnorm-training-mode.onnx", serialize(m),
        "a BatchNormalization with training_mode 1 (the compiler used the running statistics)",
        "Unsupported", "node `bn` (BatchNormalization) is in training mode (training_mode 1)")
    node(m, "bn").domain = "ai.onnx"
    add("onnx/batchnorm-training-mode-ai-onnx.onnx", serialize(m),
        "the same BatchNormalization in the domain spelled `ai.onnx`", "Unsupported",
        "node `bn` (BatchNormalization) is in training mode (training_mode 1)")
    # A flag counts by value: only 0 and 1, as checked, pass (tests/tract_sweep.py found
    # Trilu `upper=-1` read as true by onnxruntime and not by tract).
    m = before_pool([helper.make_node("ReduceMean", ["relu"], ["mid"], name="mean", axes=[1],
                                      keepdims=2)], {})
    add("onnx/flag-keepdims-2.onnx", serialize(m),
        "a ReduceMean with keepdims 2, a flag value not checked on the tract path",
        "Unsupported", "node `mean` (ReduceMean): attribute `keepdims` = 2 (default 1) has not been checked")
    # Attribute values tract reads otherwise than ONNX: each ran, exit 0, with another class
    # than onnxruntime's.
    m = before_pool([helper.make_node("Celu", ["relu"], ["mid"], name="celu", alpha=2.0)], {})
    add("onnx/celu-alpha-2.onnx", serialize(m),
        "a Celu of alpha 2 (tract leaves out the factor alpha)", "Unsupported",
        "node `celu` (Celu): alpha 2 is not supported")
    m = before_pool([helper.make_node("Pad", ["relu", "pads", "value"], ["mid"], name="pad",
                                      mode="edge")],
                    {"pads": np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64),
                     "value": np.array(0.0, np.float32)})
    add("onnx/pad-edge-with-value.onnx", serialize(m),
        "an edge Pad given a constant_value input (tract padded with the constant)",
        "Unsupported", "node `pad` (Pad): a Pad in mode `edge` with a constant_value input")
    # An unnamed node whose output has the name of another node, which tract names the
    # node by: ONNX allows it and onnxruntime runs it; tract refused it ("Duplicate node
    # name: logits") until the runtime renamed such nodes apart.
    m = copy_of(base)
    node(m, "dense").name = "logits"
    node(m, "logits").output[0] = "dense_out"
    m.graph.node.append(helper.make_node("Mul", ["dense_out", "one"], ["logits"]))
    m.graph.initializer.append(numpy_helper.from_array(np.array(1.0, np.float32), "one"))
    corpus.control("controls/node-names-repeated.onnx", serialize(m),
                   "the float base with an unnamed Mul making `logits` after a node named "
                   "`logits`")
    corpus.control("controls/pad-edge.onnx",
                   serialize(before_pool([helper.make_node("Pad", ["relu", "pads"], ["mid"],
                                                           name="pad", mode="edge")],
                                         {"pads": np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64)})),
                   "the float base with an edge Pad without a constant_value input")
    m = before_pool([helper.make_node("ConvTranspose", ["relu", "deconv.weight"], ["mid"],
                                      name="deconv", kernel_shape=[2, 2], pads=[1, 1, 1, 1])],
                    {"deconv.weight": np.full((2, 2, 3, 3), 0.1, np.float32)})
    add("onnx/conv-transpose-kernel-shape.onnx", serialize(m),
        "a ConvTranspose whose kernel_shape [2, 2] contradicts its 3x3 weights (tract ran it)",
        "Malformed", "attribute `kernel_shape` is [2, 2], but its weights hold a kernel of [3, 3]")
    m = before_pool([helper.make_node("Einsum", ["relu", "square"], ["mid"], name="einsum",
                                      equation="...hw,wk->...hk")],
                    {"square": np.eye(28, dtype=np.float32)})
    add("onnx/einsum-ellipsis.onnx", serialize(m),
        "an Einsum with `...` (tract dropped a dimension of it)", "Unsupported",
        "equations with `...` are not supported")
    m = before_pool([helper.make_node("GlobalLpPool", ["relu"], ["lp"], name="lp", p=2),
                     helper.make_node("Add", ["relu", "lp"], ["mid"], name="add")], {})
    add("onnx/global-lp-pool.onnx", serialize(m),
        "a GlobalLpPool (tract took the mean of |x|^p, not the sum)", "Unsupported",
        "GlobalLpPool is not supported")
    m = before_pool([helper.make_node("Resize", ["relu", "", "scales"], ["mid"], name="resize",
                                      mode="linear",
                                      coordinate_transformation_mode="align_corners")],
                    {"scales": np.array([1, 1, 1, 1], np.float32)})
    add("onnx/resize-align-corners-scales.onnx", serialize(m),
        "a Resize with align_corners given scales (tract placed samples otherwise than "
        "onnxruntime)", "Unsupported", "`align_corners` with `scales` is not supported")
    m = before_pool([helper.make_node("Rsqrt", ["relu"], ["mid"], name="rsqrt")], {})
    add("onnx/rsqrt-not-onnx.onnx", serialize(m),
        "an Rsqrt node: an operator of tract's, not of ONNX (tract ran it)", "Malformed",
        "node `rsqrt` (Rsqrt): Rsqrt is not an operator of ai.onnx (opset 13)")
    m = before_pool([helper.make_node("Pad", ["relu", "pads"], ["mid"], name="pad")],
                    {"pads": np.array([0, 0, 2, 2, 0, 0, -2, -2], np.int64)})
    add("onnx/pad-negative.onnx", serialize(m),
        "a Pad of negative pads (tract panicked at the first run)", "Unsupported",
        "negative pads (cropping) are not supported")

    def lstm(**attributes):
        """A classifier reading the image's rows as a sequence: an LSTM of 4 units, its
        last state to a Gemm of 10 classes."""
        rng = np.random.default_rng(11)
        hidden = 4
        weights = {
            "W": rng.normal(0, 0.3, (1, 4 * hidden, 28)),
            "R": rng.normal(0, 0.3, (1, 4 * hidden, hidden)),
            "B": np.zeros((1, 8 * hidden)),
            "dense.weight": rng.normal(0, 0.3, (hidden, 10)),
            "dense.bias": np.zeros(10),
        }
        return make_model(
            [helper.make_node("Squeeze", ["input", "axis1"], ["rows"], name="squeeze"),
             helper.make_node("Transpose", ["rows"], ["seq"], name="time_major",
                              perm=[1, 0, 2]),
             helper.make_node("LSTM", ["seq", "W", "R", "B"], ["", "h"], name="lstm",
                              **{"hidden_size": hidden, **attributes}),
             helper.make_node("Squeeze", ["h", "axis0"], ["last"], name="last"),
             helper.make_node("Gemm", ["last", "dense.weight", "dense.bias"], ["logits"],
                              name="dense")],
            [numpy_helper.from_array(np.array([1], np.int64), "axis1"),
             numpy_helper.from_array(np.array([0], np.int64), "axis0")]
            + [numpy_helper.from_array(v.astype(np.float32), k) for k, v in weights.items()],
            card)

    corpus.control("controls/lstm.onnx",
                   serialize(lstm(activations=["Sigmoid", "Tanh", "Tanh"])),
                   "an LSTM classifier, its default activations written out")
    add("onnx/lstm-reverse.onnx", serialize(lstm(direction="reverse")),
        "an LSTM run in reverse (tract ran it forward)", "Unsupported",
        "node `lstm` (LSTM): direction `reverse` is not supported")
    add("onnx/lstm-hidden-size.onnx", serialize(lstm(hidden_size=8)),
        "an LSTM declaring 8 units with weights for 4 (tract ran it by its weights)",
        "Malformed", "`hidden_size` is 8, but its recurrence weights hold 4 units")
    add("onnx/lstm-clip.onnx", serialize(lstm(clip=0.5)),
        "an LSTM whose cell is clipped at 0.5 (tract ignored the clip)", "Unsupported",
        "attribute `clip` is not supported")
    add("onnx/lstm-activations.onnx",
        serialize(lstm(activations=["Sigmoid", "Relu", "Tanh"])),
        "an LSTM whose cell activation is Relu (tract ran Tanh)", "Unsupported",
        "activations [\"Sigmoid\", \"Relu\", \"Tanh\"] are not supported")
    m = before_pool([helper.make_node("Gather", ["table", "index"], ["row"], name="gather"),
                     helper.make_node("Add", ["relu", "row"], ["mid"], name="add")],
                    {"table": np.array([1.0, 2.0], np.float32),
                     "index": np.array([1000], np.int64)})
    add("onnx/gather-index-out-of-range.onnx", serialize(m),
        "a Gather of index 1000 from a constant of 2 elements", "Plan",
        "cannot prepare the model")
    m = before_pool([helper.make_node("ConstantOfShape", ["shape"], ["zeros"], name="zeros",
                                      value=helper.make_tensor("value", TensorProto.FLOAT,
                                                               [1], [0.0])),
                     helper.make_node("Add", ["relu", "zeros"], ["mid"], name="add")],
                    {"shape": np.array([-1, 5], np.int64)})
    add("onnx/constant-of-shape-negative.onnx", serialize(m),
        "a ConstantOfShape of shape [-1, 5]", "Plan", "cannot prepare the model")

    # Bad model cards.
    def with_card(name, key, value, what, message):
        m = copy_of(base)
        bad = dict(card)
        if value is None:
            del bad[key]
        else:
            bad[key] = value
        set_card(m, bad)
        add(f"onnx/card-{name}.onnx", serialize(m), what, "InvalidCard", message)

    with_card("labels-invalid-json", "labels", '["T-shirt/top", "Trouser"',
              "a labels entry that is not valid JSON", "student.labels")
    with_card("labels-wrong-type", "labels", '"T-shirt/top"',
              "a labels entry that is a string, not a list", "invalid type: string")
    labels = json.loads(card["labels"])
    with_card("labels-count", "labels", json.dumps(labels + ["Umbrella"]),
              "11 labels for 10 classes", "11 labels, but the model outputs 10 classes")
    with_card("labels-duplicate", "labels", json.dumps(labels[:-1] + [labels[0]]),
              "the same label twice", "labels must be non-empty and distinct")
    calibration = json.loads(card["calibration"])
    with_card("temperature-nan", "calibration",
              json.dumps(dict(calibration, temperature=float("nan"))),
              "temperature NaN (as Python's json writes it)", "student.calibration")
    with_card("temperature-zero", "calibration",
              json.dumps(dict(calibration, temperature=0.0)),
              "temperature 0", "temperature 0 is outside")
    escalation = json.loads(card["escalation"])
    for name, t in [("threshold-above-1", 1.5), ("threshold-negative", -0.25)]:
        with_card(name, "escalation", json.dumps(dict(escalation, threshold=t)),
                  f"escalation threshold {t}", f"threshold {t} is outside [0, 1]")
    spec = json.loads(card["input"])
    with_card("input-height", "input", json.dumps(dict(spec, height=27)),
              "a card input of 27 rows for a graph of 28",
              "card declares 1x27x28 (channels x height x width)")
    with_card("missing-calibration", "calibration", None,
              "a card without its calibration section", "student.calibration")
    m = copy_of(base)
    entry = m.metadata_props.add()
    entry.key, entry.value = "student.labels", card["labels"]
    add("onnx/card-duplicate-key.onnx", serialize(m), "the labels entry twice",
        "InvalidCard", "appears more than once")
    m = copy_of(base)
    entry = m.metadata_props.add()
    entry.key, entry.value = "student.data", "[" * 20_000
    add("onnx/card-nested-json.onnx", serialize(m),
        "a card entry of 20000 nested JSON arrays", "InvalidCard", "recursion limit exceeded")

    # Hazards the planned limits refuse. Not opened by the tests until they land.
    m = copy_of(base)
    m.graph.node.insert(0, helper.make_node("ConstantOfShape", ["big_shape"], ["big"],
                                            name="big"))
    m.graph.node.insert(1, helper.make_node("ReduceSum", ["big"], ["big_sum"],
                                            name="big_sum", keepdims=0))
    node(m, "dense").output[0] = "dense_out"
    m.graph.node.append(helper.make_node("Add", ["dense_out", "big_sum"], ["logits"],
                                         name="plus_big"))
    m.graph.initializer.append(numpy_helper.from_array(np.array([65536, 65536], np.int64),
                                                       "big_shape"))
    add("onnx/constant-of-shape-16gib.onnx", serialize(m),
        "a ConstantOfShape of [65536, 65536] floats (16 GiB once folded)", "TooLarge",
        "ConstantOfShape")
    m = before_pool([helper.make_node("Expand", ["one", "big_shape"], ["big"], name="big"),
                     helper.make_node("ReduceSum", ["big"], ["big_sum"], name="big_sum",
                                      keepdims=0),
                     helper.make_node("Add", ["relu", "big_sum"], ["mid"], name="add")],
                    {"one": np.array([1.0], np.float32),
                     "big_shape": np.array([1 << 17, 1 << 17], np.int64)})
    add("onnx/expand-64gib.onnx", serialize(m),
        "an Expand of a constant to [2^17, 2^17] floats (64 GiB once folded)", "TooLarge",
        "Expand")
    # A graph refused by the engine, in a file without a card: the card's missing
    # sections are logged as warnings before the engine refuses it.
    m = copy_of(base)
    set_card(m, {})
    node(m, "dense").input[0] = "no_such_value"
    add("onnx/no-card-missing-node-input.onnx", serialize(m),
        "a file without a card whose node reads a value that nothing produces", "Plan",
        "no_such_value")


# The compiled file: a 128-byte header, the JSON manifest, the 64-byte aligned data.
HEADER = struct.Struct("<8sIIQQQQQ40s32s")
MAGIC = b"STUDENT\x1a"


class Compiled:
    """A `.student` file taken apart: its header fields, manifest and data section."""

    def __init__(self, data):
        (self.magic, self.version, self.header_len, self.file_len, self.manifest_offset,
         manifest_len, self.data_offset, data_len, self.reserved,
         self.checksum) = HEADER.unpack_from(data)
        self.manifest = json.loads(data[128:128 + manifest_len])
        self.data = data[self.data_offset:self.data_offset + data_len]

    def copy(self):
        return copy.deepcopy(self)

    def build(self, manifest_bytes=None, fix=None):
        """Lays the file out as `student compile` does and recomputes the checksum;
        `fix(fields)` may then change header fields (the checksum follows)."""
        text = manifest_bytes if manifest_bytes is not None else manifest_json(self.manifest)
        data_offset = -(-(128 + len(text)) // 64) * 64
        fields = {
            "magic": self.magic, "version": self.version, "header_len": 128,
            "file_len": data_offset + len(self.data), "manifest_offset": 128,
            "manifest_len": len(text), "data_offset": data_offset,
            "data_len": len(self.data), "reserved": bytes(40),
        }
        if fix:
            fix(fields)
        body = text + bytes(data_offset - 128 - len(text)) + self.data
        return seal(fields, body)


def manifest_json(manifest):
    return json.dumps(manifest, separators=(",", ":")).encode()


def seal(fields, body):
    head = HEADER.pack(fields["magic"], fields["version"], fields["header_len"],
                       fields["file_len"], fields["manifest_offset"], fields["manifest_len"],
                       fields["data_offset"], fields["data_len"], fields["reserved"],
                       bytes(32))
    checksum = hashlib.sha256(head[:96] + body).digest()
    return head[:96] + checksum + body


def compile_model(student, onnx_bytes, name):
    with tempfile.TemporaryDirectory() as tmp:
        source = os.path.join(tmp, name + ".onnx")
        target = os.path.join(tmp, name + ".student")
        with open(source, "wb") as f:
            f.write(onnx_bytes)
        subprocess.run([student, "compile", source, "-o", target], check=True,
                       stdout=subprocess.DEVNULL)
        with open(target, "rb") as f:
            return f.read()


def op_index(manifest, kind):
    return next(i for i, op in enumerate(manifest["ops"]) if op["op"] == kind)


def quantized_onnx_cases(corpus, base_int8):
    """QDQ forms that tract ran otherwise than ONNX defines them, answering."""
    def opset_21():
        m = copy_of(base_int8)
        m.opset_import[0].version = 21
        m.ir_version = 10
        return m

    m = copy_of(base_int8)
    initializer(m, "relu_scale").CopyFrom(numpy_helper.from_array(np.array(-0.02, np.float32),
                                                                  "relu_scale"))
    corpus.add("onnx/qdq-negative-scale.onnx", serialize(m),
               "a QDQ pair of scale -0.02 (tract answered another class than onnxruntime on "
               "21 of 32 images)", "Malformed", "holds -0.02, not a finite number above 0")
    m = opset_21()
    quantize = node(m, "relu_quantize")
    del quantize.input[2:]
    quantize.attribute.append(helper.make_attribute("output_dtype", TensorProto.INT8))
    corpus.add("onnx/quantize-output-dtype-int8.onnx", serialize(m),
               "a QuantizeLinear to int8 by `output_dtype` (tract quantized to uint8)",
               "Unsupported", "output_dtype INT8 is not supported without a zero point")
    m = copy_of(base_int8)
    initializer(m, "relu_zero_point").CopyFrom(numpy_helper.from_array(
        np.array(0, np.uint16), "relu_zero_point"))
    corpus.add("onnx/quantize-uint16.onnx", serialize(m), "a QDQ pair of uint16",
               "Unsupported", "quantized type UINT16: only uint8 and int8 quantization")
    m = opset_21()
    node(m, "dense.weight_dequantize").attribute.append(helper.make_attribute("block_size", 2))
    corpus.add("onnx/dequantize-blocked.onnx", serialize(m),
               "a DequantizeLinear of weights in blocks of 2", "Unsupported",
               "blocked quantization (block_size 2) is not supported")


def compiled_cases(corpus, valid, valid_int8):
    """Compiled files: damaged headers, checksums, manifests and plans."""
    base = Compiled(valid)
    add = corpus.add

    def header_case(name, what, message, fix, error="NotCompiled"):
        add(f"compiled/{name}.student", base.build(fix=fix), what, error, message)

    # The header and the layout.
    add("compiled/cut-in-magic.student", valid[:4], "the first 4 bytes (inside the magic)",
        "NotCompiled", "the file is 4 bytes, shorter than the 128-byte header")
    add("compiled/cut-in-header.student", valid[:100], "the first 100 bytes",
        "NotCompiled", "the file is 100 bytes, shorter than the 128-byte header")
    add("compiled/cut-in-body.student", valid[: len(valid) // 2],
        "the first half of the file", "NotCompiled", "truncated or extended")
    add("compiled/cut-last-byte.student", valid[:-1], "all but the last byte",
        "NotCompiled", "truncated or extended")
    add("compiled/extended.student", valid + bytes(64), "64 zero bytes appended",
        "NotCompiled", "truncated or extended")
    header_case("wrong-magic", "the magic STUDENT\\x00 instead of STUDENT\\x1a",
                "wrong magic: the file starts with \"STUDENT\\x00\"",
                lambda f: f.update(magic=b"STUDENT\x00"))
    header_case("version-2", "format version 2", "format version 2; this runtime reads version 1",
                lambda f: f.update(version=2))
    header_case("version-max", "format version 2^32-1",
                "format version 4294967295", lambda f: f.update(version=0xFFFFFFFF))
    header_case("header-length", "a header length of 64", "header length 64 where 128",
                lambda f: f.update(header_len=64))
    header_case("reserved-not-zero", "a reserved header byte set",
                "reserved header bytes are not zero",
                lambda f: f.update(reserved=b"\x01" + bytes(39)))
    header_case("manifest-offset", "a manifest offset of 0", "manifest at 0 of",
                lambda f: f.update(manifest_offset=0))
    header_case("manifest-length-huge", "a manifest length of 2^40",
                "manifest at 128 of 1099511627776 bytes",
                lambda f: f.update(manifest_len=1 << 40))
    header_case("manifest-length-max", "a manifest length of 2^64-1",
                "manifest at 128 of 18446744073709551615 bytes",
                lambda f: f.update(manifest_len=(1 << 64) - 1))
    header_case("data-offset-misaligned", "a data offset that is not a multiple of 64",
                "on a 64-byte boundary", lambda f: f.update(data_offset=f["data_offset"] + 4,
                                                            data_len=f["data_len"] - 4))
    header_case("data-inside-manifest", "a data section starting inside the manifest",
                "after the manifest", lambda f: f.update(
                    data_offset=128, data_len=f["file_len"] - 128))
    header_case("data-length-overflow", "a data length whose end overflows u64",
                "does not end the", lambda f: f.update(data_len=(1 << 64) - 64))
    sealed = bytearray(base.build())
    sealed[-1] ^= 0xFF
    add("compiled/checksum-mismatch.student", bytes(sealed),
        "one weight byte flipped after sealing", "NotCompiled", "checksum mismatch")
    sealed = bytearray(base.build())
    sealed[96:128] = bytes(32)
    add("compiled/checksum-zero.student", bytes(sealed), "a zeroed checksum",
        "NotCompiled", "checksum mismatch")

    # The manifest's text.
    text = manifest_json(base.manifest)
    at = text.index(b'"producer":"') + len(b'"producer":"')
    add("compiled/manifest-not-utf8.student",
        base.build(text[:at] + b"\xff\xfe" + text[at:]),
        "bytes that are not UTF-8 in a manifest string", "NotCompiled",
        "malformed manifest")
    add("compiled/manifest-not-json.student", base.build(b"<html>not JSON</html>"),
        "a manifest that is not JSON", "NotCompiled", "malformed manifest: expected value")
    add("compiled/manifest-empty.student", base.build(b""), "an empty manifest",
        "NotCompiled", "malformed manifest: EOF while parsing")
    add("compiled/manifest-cut.student", base.build(text[: len(text) // 2]),
        "half a manifest", "NotCompiled", "malformed manifest: EOF while parsing")
    add("compiled/manifest-wrong-type.student", base.build(b"[1, 2, 3]"),
        "a manifest that is JSON but a list", "NotCompiled",
        "malformed manifest: invalid type: integer `1`, expected a string")

    def edited(name, what, message, edit, error="NotCompiled", source=base, **extra):
        c = source.copy()
        edit(c.manifest)
        add(f"compiled/{name}.student", c.build(), what, error, message, **extra)

    conv = op_index(base.manifest, "conv")
    dense = op_index(base.manifest, "dense")
    weights = base.manifest["ops"][conv]["weights"]["f32"]

    def blob(field, value, index=weights):
        return lambda m: m["blobs"][index].update({field: value})

    # Blobs: where the weights lie.
    data_len = len(base.data)
    edited("blob-beyond-file", "a blob offset past the end of the file",
           "outside the", blob("offset", data_len + 64 * 1024))
    edited("blob-negative-offset", "a blob offset of -8", "invalid value: integer `-8`",
           blob("offset", -8))
    edited("blob-offset-above-u64", "a blob offset of 2^64+64 (above u64)",
           "expected u64", blob("offset", (1 << 64) + 64))
    edited("blob-end-overflow", "a blob offset of 2^64-64, so offset plus length overflows",
           "outside the", blob("offset", (1 << 64) - 64))
    edited("blob-misaligned", "a blob offset that is not a multiple of 64",
           "is misaligned", blob("offset", 4))
    edited("blob-partial-element", "a float blob of 6 bytes", "not a whole number of F32",
           blob("len", 6))
    edited("blob-too-short", "conv weights of 12 floats where 18 are needed",
           "holds 12 elements, expected 18", blob("len", 48))
    edited("blob-wrong-dtype", "conv weights declared as i32", "holds I32 where F32",
           blob("dtype", "i32"))
    edited("blob-unknown-dtype", "a blob of dtype f64", "unknown variant `f64`",
           blob("dtype", "f64"))
    edited("blob-missing", "conv weights naming blob 999", "names blob 999",
           lambda m: m["ops"][conv]["weights"].update(f32=999))

    # Values: the activations' shapes and types.
    x = base.manifest["ops"][conv]["x"]
    y = base.manifest["ops"][conv]["y"]

    def value(index, **fields):
        return lambda m: m["values"][index].update(fields)

    edited("value-dims-overflow", "an activation of [2^32, 2^32, 2] (product overflows)",
           "expected at most 6 positive dimensions of at most 2^28 elements",
           value(y, dims=[1 << 32, 1 << 32, 2]))
    edited("value-dims-huge", "an activation of 2^40 elements",
           "expected at most 6 positive dimensions", value(y, dims=[1 << 20, 1 << 20]))
    edited("value-dim-zero", "an activation with a zero dimension",
           "expected at most 6 positive dimensions", value(y, dims=[2, 0, 28]))
    edited("value-rank-7", "an activation of rank 7", "expected at most 6 positive",
           value(y, dims=[1, 1, 1, 2, 1, 28, 28]))
    edited("value-negative-dim", "an activation dimension of -2",
           "invalid value: integer `-2`", value(y, dims=[-2, 28, 28]))
    edited("value-wrong-dtype", "the conv output declared u8", "is U8, expected F32",
           value(y, dtype="u8"))
    edited("value-i8", "an activation of type i8", "values are f32 or u8",
           value(y, dtype="i8"))
    edited("input-missing", "the input naming value 999", "names a missing value",
           lambda m: m.update(input=999))
    edited("input-u8", "a u8 model input", "input and output must be f32",
           value(x, dtype="u8"))

    # Ops: the program.
    def op(index, **fields):
        return lambda m: m["ops"][index].update(fields)

    edited("op-missing-value", "an op reading value 999", "reads value 999",
           op(conv, x=999))
    def swap(m):
        m["ops"][0], m["ops"][1] = m["ops"][1], m["ops"][0]
    edited("op-reads-later-value", "the first two ops swapped: an op reads a value "
           "produced later", "which no earlier op writes", swap)
    pool = op_index(base.manifest, "pool")
    def cycle(m):
        ops = m["ops"]
        ops[conv]["x"], ops[pool]["x"] = ops[pool]["y"], ops[conv]["y"]
    edited("ops-cycle", "a cycle: conv reads the pool's output and the pool the conv's",
           "which no earlier op writes", cycle)
    edited("op-writes-twice", "two ops writing the same value",
           "already written", op(pool, y=y))
    edited("op-writes-input", "an op writing the model's input", "already written",
           op(conv, y=x))
    edited("ops-empty", "an empty op list", "no op writes the output value",
           lambda m: m.update(ops=[]))
    edited("op-unknown", "an op of a kind the runtime does not know",
           "unknown variant `conv3d`", op(conv, op="conv3d"))
    edited("op-missing-field", "a conv without its window", "missing field `window`",
           lambda m: m["ops"][conv].pop("window"))
    window = base.manifest["ops"][conv]["window"]
    edited("conv-window-inconsistent", "a conv whose output size does not follow from "
           "its window", "does not follow from an input",
           lambda m: m["ops"][conv]["window"].update(h_out=window["h_out"] - 5))
    edited("conv-stride-0", "a conv with stride 0", "invalid window",
           lambda m: m["ops"][conv]["window"].update(stride=[0, 1]))
    edited("conv-huge-padding", "a conv padded by 2^20", "is too large",
           lambda m: m["ops"][conv]["window"].update(pad=[1 << 20, 1]))
    edited("dense-shape", "a dense layer whose n disagrees with its output",
           "do not match k=", op(dense, n=11))
    def card_labels(m):
        for entry in m["metadata"]:
            if entry[0] == "student.labels":
                entry[1] = json.dumps(json.loads(entry[1])[:9])
    edited("card-labels-count", "a card of 9 labels for 10 classes", "9 labels, but the "
           "model outputs 10 classes", card_labels, error="InvalidCard")

    # Hand-made plans that reach arithmetic the compiler never produces.
    empty = base.copy()
    empty.data = bytes(64)

    def plan(name, what, message, values, ops, blobs, error="NotCompiled", **extra):
        c = empty.copy()
        c.manifest.update(metadata=[], values=values, ops=ops, blobs=blobs, input=0,
                          output=len(values) - 1)
        add(f"compiled/{name}.student", c.build(), what, error, message, **extra)

    f32 = lambda *dims: {"dtype": "f32", "dims": list(dims)}
    plan("affine-rank-0", "a channel affine map over a value with no dimensions",
         "invalid plan",
         [f32(), f32()],
         [{"op": "channel_affine", "x": 0, "y": 1, "scale": 0, "shift": 0}],
         [{"offset": 0, "len": 4, "dtype": "f32"}])
    plan("gather-size-overflow", "a gather table of (2^62+1) x 4 rows, whose element "
         "count overflows to 4", "invalid plan",
         [f32(1), f32(4)],
         [{"op": "gather", "x": 0, "y": 1, "table": 0, "rows": (1 << 62) + 1, "width": 4}],
         [{"offset": 0, "len": 16, "dtype": "f32"}])
    big = 1 << 24
    plan("conv-weights-overflow", "a conv whose weight count c_out x c_in x kh x kw "
         "(2^8 x 2^8 x 2^24 x 2^24) overflows to 0", "invalid plan",
         [f32(256, 1, 1), f32(256, 1, 1), f32(256)],
         [{"op": "conv", "x": 0, "y": 1, "weights": {"f32": 0}, "bias": None,
           "lo": None, "hi": None,
           "window": {"c_in": 256, "c_out": 256, "h_in": 1, "w_in": 1, "h_out": 1,
                      "w_out": 1, "kh": big, "kw": big, "stride": [1, 1], "pad": [0, 0],
                      "dilation": [1, 1], "groups": 1}},
          {"op": "copy", "x": 1, "y": 2}],
         [{"offset": 0, "len": 0, "dtype": "f32"}])
    plan("binary-const-overflow", "a constant operand of [2^32, 2^32] (its element count "
         "overflows to 0)", "does not broadcast",
         [f32(10), f32(10)],
         [{"op": "binary", "a": {"value": 0},
           "b": {"const": {"blob": 0, "dims": [1 << 32, 1 << 32]}}, "y": 1, "f": "add"}],
         [{"offset": 0, "len": 0, "dtype": "f32"}])
    plan("activation-800mb", "a 28x28 input broadcast into an activation of 2^18 x 28 x 28 "
         "floats (822 MB at the first run)", "value 1 at batch 1",
         [f32(1, 28, 28), f32(1 << 18, 28, 28), f32(1 << 18)],
         [{"op": "binary", "a": {"value": 0},
           "b": {"const": {"blob": 0, "dims": [1, 1, 1, 1]}}, "y": 1, "f": "add"},
          {"op": "global_avg_pool", "x": 1, "y": 2}],
         [{"offset": 0, "len": 4, "dtype": "f32"}],
         error="TooLarge")

    # int8: the quantized ops' own checks.
    q = Compiled(valid_int8)
    quantize = op_index(q.manifest, "quantize")
    edited("int8-quantize-scale-0", "an int8 file whose input is quantized with scale 0",
           "is not a positive finite number",
           lambda m: m["ops"][quantize].update(scale=0.0), source=q)
    qconv = op_index(q.manifest, "q_conv")
    scale = q.manifest["ops"][qconv]["scale"]
    edited("int8-scale-wrong-dtype", "an int8 conv whose scales are declared i32",
           "where F32 was expected",
           lambda m: m["blobs"][scale].update(dtype="i32"), source=q)
    edited("int8-conv-f32-input", "an int8 conv reading a float value",
           "expected U8", op(qconv, x=q.manifest["ops"][quantize]["x"]), source=q)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--student", default=os.path.join(ROOT, "target", "release",
                                                          "student"),
                        help="the student binary that compiles the .student controls")
    args = parser.parse_args()
    if not os.path.exists(args.student):
        sys.exit(f"{args.student} is missing: cargo build --release -p student-cli")
    for folder in ("onnx", "compiled", "controls"):
        shutil.rmtree(os.path.join(HERE, folder), ignore_errors=True)

    card = shipped_card()
    base = float_base(card)
    base_int8 = int8_base(card)
    corpus = Corpus()
    valid = serialize(base)
    valid_int8 = serialize(base_int8)
    compiled = compile_model(args.student, valid, "base")
    compiled_int8 = compile_model(args.student, valid_int8, "base-int8")
    corpus.control("controls/base.onnx", valid,
                   "the float base the ONNX cases are made from")
    corpus.control("controls/base-int8.onnx", valid_int8, "the int8 QDQ base")
    corpus.control("controls/base.student", compiled,
                   "the float base compiled: the compiled cases are made from it")
    corpus.control("controls/base-int8.student", compiled_int8, "the int8 base compiled")
    corpus.control("controls/base-rebuilt.student", Compiled(compiled).build(),
                   "the compiled base taken apart and laid out again by this script, as "
                   "every compiled case is")
    corpus.control("controls/base-int8-rebuilt.student", Compiled(compiled_int8).build(),
                   "the compiled int8 base laid out again by this script")
    onnx_cases(corpus, base, card)
    quantized_onnx_cases(corpus, base_int8)
    compiled_cases(corpus, compiled, compiled_int8)

    listing = {
        "about": "Malformed model files, each refused with a typed error; written by "
                 "make.py. `error` is the student_runtime::Error variant, `message` a "
                 "substring of the error with its causes. A case with `pending` is not "
                 "opened by the tests yet; `today` says why.",
        "controls": corpus.controls,
        "cases": corpus.cases,
    }
    with open(os.path.join(HERE, "cases.json"), "w") as f:
        json.dump(listing, f, indent=2)
        f.write("\n")
    sizes = [os.path.getsize(os.path.join(HERE, c["file"]))
             for c in corpus.cases + corpus.controls if "file" in c]
    print(f"{len(corpus.cases)} cases, {len(corpus.controls)} controls, "
          f"{sum(sizes)} bytes, largest {max(sizes)}")


if __name__ == "__main__":
    main()
