#!/usr/bin/env python3
"""Compares `student run` (the tract path) with onnxruntime, operator by operator, and
writes the table of the forms that agree (`runtime/src/tract_checked.rs`).

Each case builds one small classifier around the operator under test: the shipped
student's input ([N, 1, 28, 28] float) and model card (calibration temperature 1), the
operator somewhere in the middle, then Flatten and a Gemm to 10 logits with fixed random
weights. Both runtimes classify the same 16 images (8 shipped samples, 8 generated PGMs).
A case declares its operator, opset, the attributes it sets to values other than their
ONNX schema defaults, and what it expects:
- `agree`: student exits 0, the same top-1 class on every image, and every probability
  within TOLERANCE of onnxruntime's;
- `refuse`: a form the runtime already refuses because tract computes it otherwise than
  ONNX (non-zero exit, "unsupported model" on stderr).
What a case declares is checked against the model it builds: the attributes of its
operator's nodes that differ from the schema default (or that have no default) must be
exactly the declared ones.

    python tests/tract_forms.py [--student PATH] [--write PATH] [--only OP,OP] [-v]

With `--write PATH`, every `agree` case runs (with `--unchecked-operators` when the binary
has it) and PATH receives the table: each operator with a case that agreed, with the
attributes such cases set. A form that a case showed to disagree, or that student refused,
is taken out even where other cases agreed: the whole operator for a default form, else
the attributes that case set (the table names attributes, not their values). A case
enters only if every other node of its model (the Conv before it, the Flatten and Gemm
after it) is in the table too. What stays out is printed.

Without it (check mode, run by CI), the table is read from runtime/src/tract_checked.rs
and every case runs. It fails when a case whose forms are all in the table disagrees or
is refused, when a table entry (operator, or operator and attribute) has no agreeing
case, when a `refuse` case runs (these run with `--unchecked-operators` when the binary
has it: the runtime's own checks must refuse them), or when a case cannot be built. A
case with a form outside the table must be refused by the runtime's table check; a
binary without that check (no `--unchecked-operators` in `student run --help`) still runs
it, which is reported, not counted. The last line is `N passed, M failed`; the exit
status is 0 only if none failed. The table is compiled into the binary: check mode
tests a binary built from the table it reads.
"""
import argparse
import dataclasses
import json
import pathlib
import re
import subprocess
import sys
import tempfile
import time
from typing import Callable

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

ROOT = pathlib.Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "models/fashion-mnist/student.onnx"
SAMPLES = ROOT / "models/fashion-mnist/samples"
TABLE = ROOT / "runtime/src/tract_checked.rs"

# The largest |probability difference| an agreeing case may show on any class of any
# image. Both sides compute in f32; what remains is summation order, far below this.
TOLERANCE = 1e-4
SAMPLE_IMAGES = 8
GENERATED_IMAGES = 8
ML = "ai.onnx.ml"
AGREE = "agree"
REFUSE = "refuse"
FLAG = "--unchecked-operators"


@dataclasses.dataclass(frozen=True)
class Case:
    """One model around one operator. `build(net)` adds the nodes after the input `x`
    and returns the name of the float tensor that the Flatten and Gemm turn into logits.
    `attributes` are the ones set to non-default values on the nodes of `op`; `tag`
    tells apart cases of the same form; `shown` replaces the attributes in the name."""

    op: str
    attributes: tuple
    build: Callable
    opset: int = 13
    expect: str = AGREE
    domain: str = ""
    ml_opset: int = 0
    tolerance: float = TOLERANCE
    tag: str = ""
    shown: str = ""

    @property
    def name(self):
        attrs = self.shown or "+".join(self.attributes) or "default"
        version = self.ml_opset if self.domain else self.opset
        return f"{self.op}-{version}-{attrs}" + (f"-{self.tag}" if self.tag else "")


class Net:
    """The nodes and constants of one case's graph, with fresh names."""

    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)
        self.nodes = []
        self.initializers = []
        self.count = 0

    def fresh(self, stem):
        self.count += 1
        return f"{stem}_{self.count}"

    def const(self, value, dtype=np.float32):
        name = self.fresh("c")
        self.initializers.append(numpy_helper.from_array(np.asarray(value, dtype), name))
        return name

    def ints(self, *values):
        return self.const(list(values), np.int64)

    def normal(self, *shape, scale=0.5):
        return self.const(self.rng.normal(0, scale, shape))

    def add(self, op, *inputs, outputs=1, domain="", **attrs):
        names = [self.fresh(op.lower()) for _ in range(outputs)]
        self.nodes.append(helper.make_node(op, list(inputs), names, domain=domain, **attrs))
        return names[0] if outputs == 1 else names

    def features(self, channels=4):
        """A Conv of its default form: [N, channels, 26, 26], values of both signs."""
        return self.add("Conv", "x", self.normal(channels, 1, 3, 3), self.normal(channels))

    def to_float(self, name):
        return self.add("Cast", name, to=TensorProto.FLOAT)


def value_tag(attrs):
    """The string values among `attrs`, lowercase: they tell apart cases of one form."""
    return "-".join(v.lower() for _, v in sorted(attrs.items()) if isinstance(v, str))


def custom(op, attributes, opset=13, expect=AGREE, tag="", **fields):
    """A case built by the decorated function."""

    def register(build):
        return Case(op, tuple(sorted(attributes)), build, opset, expect, tag=tag, **fields)

    return register


def unary(op, opset=13, scale=1.0, offset=0.0, positive=False, bounded=False, gain=1.0,
          **attrs):
    """`op` over the features, optionally made positive (|f| + offset), bounded to
    (-0.95, 0.95) or scaled first, and multiplied by `gain` after."""

    def build(net):
        f = net.features()
        if bounded:
            f = net.add("Mul", net.add("Tanh", f), net.const(0.95))
        elif positive:
            f = net.add("Add", net.add("Abs", f), net.const(offset))
        elif scale != 1.0:
            f = net.add("Mul", f, net.const(scale))
        y = net.add(op, f, **attrs)
        return y if gain == 1.0 else net.add("Mul", y, net.const(gain))

    return Case(op, tuple(sorted(attrs)), build, opset, tag=value_tag(attrs))


def binary(op, opset=13, arity=2, positive=False):
    """`op` of the features and per-channel constants (broadcast [1, 4, 1, 1])."""

    def build(net):
        f = net.features()
        if positive:
            f = net.add("Add", net.add("Abs", f), net.const(0.5))
        others = [net.const(net.rng.uniform(0.5, 1.5, (1, 4, 1, 1))) for _ in range(arity - 1)]
        return net.add(op, f, *others)

    return Case(op, (), build, opset, tag=f"{arity}ary" if arity != 2 else "")


def predicate(op, threshold=0.0):
    """A comparison of the features with a constant, as 0/1 weights on the features."""

    def build(net):
        f = net.features()
        mask = net.add(op, net.add("Floor", f), net.const(threshold))
        return net.add("Mul", f, net.to_float(mask))

    return Case(op, (), build)


def conv(**attrs):
    """Conv over the image with a 4 x 4 kernel (even, so SAME_UPPER and SAME_LOWER
    differ), or over the 4 features when `group` is set."""

    def build(net):
        if "group" in attrs:
            source, per_group = net.features(), 4 // attrs["group"]
            return net.add("Conv", source, net.normal(4, per_group, 3, 3), **attrs)
        return net.add("Conv", "x", net.normal(4, 1, 4, 4), net.normal(4), **attrs)

    return Case("Conv", tuple(sorted(attrs)), build, tag=value_tag(attrs))


def conv_transpose(**attrs):
    """ConvTranspose of the image to 2 channels, or of the 4 features when grouped."""

    def build(net):
        if "group" in attrs:
            return net.add("ConvTranspose", net.features(), net.normal(4, 1, 3, 3), **attrs)
        return net.add("ConvTranspose", "x", net.normal(1, 2, 3, 3), net.normal(2), **attrs)

    return Case("ConvTranspose", tuple(sorted(attrs)), build, tag=value_tag(attrs))


def gemm(**attrs):
    """Gemm of the flattened image [N, 784] to 32 values, with a bias C."""

    def build(net):
        a = net.add("Flatten", "x")
        if attrs.get("transA"):
            a = net.add("Transpose", a, perm=[1, 0])
        shape = (32, 784) if attrs.get("transB") else (784, 32)
        return net.add("Gemm", a, net.normal(*shape, scale=0.05), net.normal(32), **attrs)

    return Case("Gemm", tuple(sorted(attrs)), build)


def pool(op, opset=13, **attrs):
    """A pooling of the features (26 x 26: kernel 3 and stride 2 pad unevenly)."""

    def build(net):
        return net.add(op, net.features(), **attrs)

    return Case(op, tuple(sorted(attrs)), build, opset, tag=value_tag(attrs))


def batch_norm(opset=15, **attrs):
    """BatchNormalization of the features with small variances (epsilon matters)."""

    def build(net):
        stats = [net.normal(4) for _ in range(3)]
        var = net.const(net.rng.uniform(0.01, 0.2, 4))
        return net.add("BatchNormalization", net.features(), *stats, var, **attrs)

    return Case("BatchNormalization", tuple(sorted(attrs)), build, opset)


def normalization(op, opset, scale_shape, tag="", **attrs):
    """InstanceNormalization, LayerNormalization, RMSNormalization or GroupNormalization of
    the features scaled down to 0.05 (epsilon matters), with a random scale (and bias)."""

    def build(net):
        f = net.add("Mul", net.features(), net.const(0.05))
        bias = [] if op == "RMSNormalization" else [net.normal(*scale_shape)]
        return net.add(op, f, net.normal(*scale_shape), *bias, **attrs)

    return Case(op, tuple(sorted(attrs)), build, opset, tag=tag)


def lrn(**attrs):
    """LRN across 6 channels, 3 at a time (onnxruntime takes odd sizes only)."""

    def build(net):
        return net.add("LRN", net.features(channels=6), size=3, **attrs)

    return Case("LRN", tuple(sorted(["size", *attrs])), build)


def softmax(op, opset, tag="", **attrs):
    """Softmax, LogSoftmax or Hardmax of the features."""

    def build(net):
        return net.add(op, net.features(), **attrs)

    return Case(op, tuple(sorted(attrs)), build, opset, tag=tag)


def resize(mode_attrs, sizes=None, scale=1.5, opset=13, expect=AGREE, roi=None, tag=""):
    """Resize of the image by `scale`, or to `sizes` ([N, 1, h, w]); over the last two
    axes only when the node sets `axes`."""

    def build(net):
        two = "axes" in mode_attrs
        if sizes:
            shape = net.ints(*sizes) if two else net.ints(1, 1, *sizes)
            return net.add("Resize", "x", "", "", shape, **mode_attrs)
        scales = net.const([scale, scale] if two else [1.0, 1.0, scale, scale])
        if opset == 10:
            return net.add("Resize", "x", scales, **mode_attrs)
        region = net.const(np.zeros(0) if roi is None else roi)
        return net.add("Resize", "x", region, scales, **mode_attrs)

    tag = "-".join(t for t in [value_tag(mode_attrs), tag] if t)
    return Case("Resize", tuple(sorted(mode_attrs)), build, opset, expect, tag=tag)


def pad(opset, mode=None, value=None, axes=None, pads=(0, 0, 2, 1, 0, 0, 3, 4), expect=AGREE,
        tag=""):
    """Pad of the features: `pads` as an input from opset 11, an attribute before."""

    def build(net):
        f = net.features()
        attrs = {} if mode is None else {"mode": mode}
        if opset < 11:
            if value is not None:
                attrs["value"] = value
            return net.add("Pad", f, pads=list(pads), **attrs)
        inputs = [f, net.ints(*pads)]
        if value is not None or axes is not None:
            inputs.append("" if value is None else net.const(value))
        if axes is not None:
            inputs.append(net.ints(*axes))
        return net.add("Pad", *inputs, **attrs)

    declared = (["pads"] if opset < 11 else []) + (["mode"] if mode else [])
    declared += ["value"] if opset < 11 and value is not None else []
    tag = "-".join(t for t in [mode, tag] if t)
    return Case("Pad", tuple(sorted(declared)), build, opset, expect, tag=tag)


def reduce(op, opset, axes=(2,), keepdims=None, as_input=False, scale=1.0):
    """`op` over `axes` of the features (made positive for the logarithms, scaled down
    for the product), axes as an attribute or an input."""

    def build(net):
        f = net.features()
        if op in ("ReduceLogSum", "ReduceProd"):
            f = net.add("Add", net.add("Abs", f), net.const(0.5))
        if scale != 1.0:
            f = net.add("Mul", f, net.const(scale))
        attrs = {} if keepdims is None else {"keepdims": keepdims}
        if as_input:
            y = net.add(op, f, net.ints(*axes), **attrs)
        else:
            y = net.add(op, f, axes=list(axes), **attrs)
        # A Softmax over the last axis, which keepdims decides (1 wide when kept).
        return y if keepdims is None else net.add("Softmax", y, axis=-1)

    declared = ([] if as_input else ["axes"]) + ([] if keepdims is None else ["keepdims"])
    return Case(op, tuple(sorted(declared)), build, opset, tag="axes-input" if as_input else "")


def arg(op, **attrs):
    """ArgMax or ArgMin over the channels of the floored features (ties on purpose); with
    keepdims 0, over the last axis, followed by a Softmax over the last axis (which
    keepdims decides)."""

    def build(net):
        f = net.add("Floor", net.add("Mul", net.features(), net.const(0.7)))
        if "keepdims" in attrs:
            return net.add("Softmax", net.to_float(net.add(op, f, axis=3, **attrs)), axis=-1)
        index = net.add(op, f, axis=1, **attrs)
        return net.add("Mul", f, net.to_float(index))

    return Case(op, tuple(sorted(["axis", *attrs])), build)


def recurrent(op, expect=AGREE, dirs=1, state=False, initial=False, peepholes=False, tag="",
              **attrs):
    """An LSTM, GRU or RNN over the image's 28 rows, hidden size 8; Y (or with `state`,
    the last hidden state Y_h) feeds the classifier, batch first again. `initial` adds
    initial states made from the image's first row (they follow the batch); `peepholes`
    adds an LSTM's P."""
    gates = {"LSTM": 4, "GRU": 3, "RNN": 1}[op]

    def build(net):
        rows = net.add("Transpose", net.add("Reshape", "x", net.ints(0, 28, 28)), perm=[1, 0, 2])
        inputs = [rows, net.normal(dirs, gates * 8, 28, scale=0.3),
                  net.normal(dirs, gates * 8, 8), net.normal(dirs, 2 * gates * 8)]
        if initial or peepholes:
            inputs.append("")  # sequence_lens
        if initial:
            first = net.add("Gather", rows, net.const(0, np.int64))  # [N, 28]
            for _ in range(2 if op == "LSTM" else 1):
                # [N, 28] x [dirs, 28, 8]: [dirs, N, 8].
                inputs.append(net.add("Tanh", net.add("MatMul", first, net.normal(dirs, 28, 8))))
        elif peepholes:
            inputs += ["", ""]
        if peepholes:
            inputs.append(net.normal(dirs, 3 * 8))
        y, y_h = net.add(op, *inputs, outputs=2, hidden_size=8, **attrs)
        if state:
            return net.add("Transpose", y_h, perm=[1, 0, 2])
        return net.add("Transpose", y, perm=[2, 0, 1, 3])

    declared = ["hidden_size", *attrs]
    extras = [("state", state), ("initial", initial), ("peepholes", peepholes)]
    tag = "-".join(t for t in [value_tag(attrs), tag] + [t for t, on in extras if on] if t)
    return Case(op, tuple(sorted(declared)), build, 14, expect, tag=tag)


def quantize_pair(op, axis=None, signed=False):
    """Features quantized to 8 bits and back (a QDQ pair): per tensor (`axis` None), or
    per slice along axis 1 (the default: left out of the nodes) or 2. The scales are
    coarse so that the rounding shows."""

    def build(net):
        dtype = np.int8 if signed else np.uint8
        f = net.features()
        count = {1: 4, 2: 26}.get(axis, 1)
        shape = () if axis is None else (count,)
        scale = net.const(np.full(shape, 0.07) * (np.linspace(0.5, 2, count) if axis else 1))
        zero = net.const(np.full(shape, 0 if signed else 128), dtype)
        attrs = {"axis": axis} if axis not in (None, 1) else {}
        q = net.add("QuantizeLinear", f, scale, zero, **attrs)
        return net.add("DequantizeLinear", q, scale, zero, **attrs)

    tag = ("int8" if signed else "") + (f"per-axis-{axis}" if axis else "")
    return Case(op, ("axis",) if axis not in (None, 1) else (), build, tag=tag)


def quantized_input(net):
    """The image quantized to uint8 (scale 1/64, zero point 52), with its scale and
    zero point."""
    scale, zero = net.const(1 / 64), net.const(52, np.uint8)
    return net.add("QuantizeLinear", "x", scale, zero), scale, zero


def qlinear_conv(**attrs):
    """QLinearConv of the quantized image with int8 weights (per channel), back to float."""

    def build(net):
        xq, xs, xz = quantized_input(net)
        w = net.const(net.rng.integers(-100, 100, (4, 1, 3, 3)), np.int8)
        ws, wz = net.const(net.rng.uniform(0.002, 0.006, 4)), net.const(np.zeros(4), np.int8)
        ys, yz = net.const(0.05), net.const(100, np.uint8)
        bias = net.const(net.rng.integers(-2000, 2000, 4), np.int32)
        y = net.add("QLinearConv", xq, xs, xz, w, ws, wz, ys, yz, bias, **attrs)
        return net.add("DequantizeLinear", y, ys, yz)

    return Case("QLinearConv", tuple(sorted(attrs)), build)


@custom("QLinearMatMul", ())
def qlinear_matmul(net):
    """QLinearMatMul of the quantized image rows with int8 weights, back to float."""
    xq, xs, xz = quantized_input(net)
    w = net.const(net.rng.integers(-100, 100, (28, 16)), np.int8)
    ws, wz = net.const(0.004), net.const(0, np.int8)
    ys, yz = net.const(0.05), net.const(128, np.uint8)
    y = net.add("QLinearMatMul", xq, xs, xz, w, ws, wz, ys, yz)
    return net.add("DequantizeLinear", y, ys, yz)


def integer_op(op):
    """MatMulInteger or ConvInteger of the quantized image and int8 weights, in int32,
    scaled back to float."""

    def build(net):
        xq, _, xz = quantized_input(net)
        if op == "MatMulInteger":
            w = net.const(net.rng.integers(-100, 100, (28, 16)), np.int8)
            wz = net.const(3, np.int8)
        else:  # onnxruntime's ConvInteger takes uint8 weights only
            w = net.const(net.rng.integers(0, 255, (4, 1, 3, 3)), np.uint8)
            wz = net.const(120, np.uint8)
        y = net.add(op, xq, w, xz, wz)
        return net.add("Mul", net.to_float(y), net.const(1e-3))

    return Case(op, (), build)


def tree_classifier(extra=None, expect=AGREE, tag=""):
    """A TreeEnsembleClassifier (ai.onnx.ml 3) of 10 classes over the flattened image:
    10 trees of one split each, thresholds where the images vary."""

    def build(net):
        rng = np.random.default_rng(11)
        attrs = {k: [] for k in TREE_LISTS}
        for t in range(10):
            attrs["nodes_treeids"] += [t, t, t]
            attrs["nodes_nodeids"] += [0, 1, 2]
            attrs["nodes_featureids"] += [int(rng.integers(200, 584)), 0, 0]
            attrs["nodes_modes"] += ["BRANCH_LEQ", "LEAF", "LEAF"]
            attrs["nodes_values"] += [float(rng.uniform(-0.5, 1.0)), 0.0, 0.0]
            attrs["nodes_truenodeids"] += [1, 0, 0]
            attrs["nodes_falsenodeids"] += [2, 0, 0]
            attrs["class_treeids"] += [t, t]
            attrs["class_nodeids"] += [1, 2]
            attrs["class_ids"] += [t, t]
            attrs["class_weights"] += [float(rng.normal()), float(rng.normal())]
        attrs.update(extra or {})
        if "base_values_as_tensor" in attrs:
            attrs["base_values_as_tensor"] = numpy_helper.from_array(
                np.asarray(attrs["base_values_as_tensor"], np.float32), "base")
        flat = net.add("Flatten", "x")
        _, scores = net.add("TreeEnsembleClassifier", flat, outputs=2, domain=ML,
                            classlabels_int64s=list(range(10)), **attrs)
        return scores

    declared = sorted([*TREE_LISTS, "classlabels_int64s", *(extra or {})])
    shown = "+".join(["trees", *(extra or {})])
    return Case("TreeEnsembleClassifier", tuple(declared), build, expect=expect, domain=ML,
                ml_opset=3, tag=tag, shown=shown)


TREE_LISTS = ("nodes_treeids", "nodes_nodeids", "nodes_featureids", "nodes_modes",
              "nodes_values", "nodes_truenodeids", "nodes_falsenodeids", "class_treeids",
              "class_nodeids", "class_ids", "class_weights")


def ml_op(op, make_attrs, declared):
    """An ai.onnx.ml operator over the flattened image (784 features)."""

    def build(net):
        flat = net.add("Flatten", "x")
        attrs = make_attrs(np.random.default_rng(5))
        if op == "LinearClassifier":
            _, scores = net.add(op, flat, outputs=2, domain=ML, **attrs)
            return scores
        return net.add(op, flat, domain=ML, **attrs)

    named = make_attrs(np.random.default_rng(5))
    tag = value_tag({k: v for k, v in named.items() if k in ("norm", "post_transform")})
    return Case(op, tuple(sorted(declared)), build, domain=ML, ml_opset=1, tag=tag)


def two_features(op, tag="", **attrs):
    """`op` of the features and their ReLU (same shapes, different values)."""

    def build(net):
        f = net.features()
        return net.add(op, f, net.add("Relu", f), **attrs)

    return Case(op, tuple(sorted(attrs)), build, tag=tag)


def second_output(op, opset, inputs=(), **attrs):
    """The second output of a Split of the features (over the channels unless `axis`)."""

    def build(net):
        f = net.features()
        args = [net.ints(*v) for v in inputs]
        return net.add(op, f, *args, outputs=2, **attrs)[1]

    return Case(op, tuple(sorted(attrs)), build, opset, tag="input" if inputs else "")


def slice_case(opset, starts, ends, axes=None, steps=None, expect=AGREE, tag=""):
    """A Slice of the features, its bounds as attributes before opset 10, inputs after."""

    def build(net):
        f = net.features()
        if opset < 10:
            extra = {} if axes is None else {"axes": list(axes)}
            return net.add("Slice", f, starts=list(starts), ends=list(ends), **extra)
        inputs = [net.ints(*starts), net.ints(*ends)]
        if axes is not None:
            inputs.append(net.ints(*axes))
        if steps is not None:
            inputs.append(net.ints(*steps))
        return net.add("Slice", f, *inputs)

    declared = (["ends", "starts"] + (["axes"] if axes else [])) if opset < 10 else []
    return Case("Slice", tuple(sorted(declared)), build, opset, expect, tag=tag)


@custom("MatMul", ())
def matmul(net):
    return net.add("MatMul", "x", net.normal(28, 16))


@custom("PRelu", ())
def prelu(net):
    return net.add("PRelu", net.features(), net.const(net.rng.uniform(0, 0.5, (4, 1, 1))))


@custom("Flatten", ("axis",))
def flatten_axis(net):
    # [N * 4, 676], a Softmax over its rows (which the axis decides), back to one row
    # per image.
    rows = net.add("Softmax", net.add("Flatten", net.features(), axis=2))
    return net.add("Reshape", net.add("Mul", rows, net.const(676.0)), net.ints(-1, 2704))


@custom("Reshape", ())
def reshape(net):
    return net.add("Reshape", net.features(), net.ints(0, 8, -1))


@custom("Identity", ())
def identity(net):
    return net.add("Identity", net.features())


@custom("Dropout", ())
def dropout(net):
    return net.add("Dropout", net.features())


@custom("Squeeze", ("axes",), opset=11)
def squeeze_attr(net):
    return net.add("Squeeze", "x", axes=[1])


@custom("Squeeze", (), tag="axes-input")
def squeeze_input(net):
    return net.add("Squeeze", "x", net.ints(1))


@custom("Unsqueeze", ("axes",), opset=11)
def unsqueeze_attr(net):
    return net.add("Unsqueeze", net.features(), axes=[2, 4])


@custom("Unsqueeze", (), tag="axes-input")
def unsqueeze_input(net):
    return net.add("Unsqueeze", net.features(), net.ints(2, 4))


@custom("Gather", ("axis",))
def gather_axis(net):
    return net.add("Gather", net.features(), net.ints(0, 5, 7, 20, -1, 5), axis=2)


@custom("Gather", (), tag="shape")
def gather_default(net):
    # Gather on axis 0 of a shape vector: the 26 of [N, 4, 26, 26].
    size = net.add("Gather", net.add("Shape", net.features()), net.const(2, np.int64))
    return net.add("Div", net.features(), net.to_float(size))


@custom("Shape", ("end", "start"), opset=15)
def shape_slice(net):
    f = net.features()
    return net.add("Div", f, net.to_float(net.add("Shape", f, start=1, end=2)))


@custom("Size", ())
def size(net):
    one = net.add("Gather", net.features(), net.const(0, np.int64))
    return net.add("Div", net.features(), net.to_float(net.add("Size", one)))


@custom("Expand", ())
def expand(net):
    wide = net.add("Expand", "x", net.ints(1, 3, 28, 28))
    return net.add("Mul", wide, net.normal(1, 3, 1, 1))


@custom("Tile", ())
def tile(net):
    return net.add("Mul", net.add("Tile", "x", net.ints(1, 2, 1, 2)), net.normal(1, 2, 1, 56))


@custom("Range", ())
def range_case(net):
    ramp = net.add("Range", net.const(0.0), net.const(2.6), net.const(0.1))
    return net.add("Mul", net.features(), ramp)


@custom("ConstantOfShape", ("value",))
def constant_of_shape(net):
    value = numpy_helper.from_array(np.array([0.7], np.float32), "v")
    filled = net.add("ConstantOfShape", net.ints(26), value=value)
    return net.add("Add", net.features(), filled)


@custom("ConstantOfShape", (), tag="zeros")
def constant_of_shape_zeros(net):
    filled = net.add("ConstantOfShape", net.ints(4, 1, 1))
    return net.add("Max", net.features(), filled)


@custom("Constant", ("value",))
def constant_value(net):
    value = numpy_helper.from_array(net.rng.normal(0, 1, (4, 1, 1)).astype(np.float32), "v")
    return net.add("Mul", net.features(), net.add("Constant", value=value))


@custom("Constant", ("value_float",), opset=13)
def constant_float(net):
    return net.add("Mul", net.features(), net.add("Constant", value_float=-1.7))


@custom("Constant", ("value_floats",), opset=13)
def constant_floats(net):
    ramp = [float(v) for v in np.linspace(-1, 1, 26)]
    return net.add("Mul", net.features(), net.add("Constant", value_floats=ramp))


@custom("Constant", ("value_ints",), opset=13)
def constant_ints(net):
    shape = net.add("Constant", value_ints=[0, 13, -1])
    return net.add("Reshape", net.features(), shape)


@custom("Where", ())
def where(net):
    f = net.features()
    return net.add("Where", net.add("Greater", f, net.const(0.0)), f,
                   net.add("Mul", f, net.const(-0.3)))


@custom("Cast", ("to",))
def cast_int(net):
    # float -> int32 -> float truncates toward zero.
    f = net.add("Mul", net.features(), net.const(2.5))
    return net.to_float(net.add("Cast", f, to=TensorProto.INT32))


@custom("Cast", ("to",), tag="float16")
def cast_half(net):
    f = net.add("Mul", net.features(), net.const(100.0))
    return net.to_float(net.add("Cast", f, to=TensorProto.FLOAT16))


@custom("Not", ())
def not_case(net):
    f = net.features()
    return net.add("Mul", f, net.to_float(net.add("Not", net.add("Greater", f, net.const(0.0)))))


def logical(op):
    """`op` of two masks of the features, as 0/1 weights on them."""

    def build(net):
        f = net.features()
        a = net.add("Greater", f, net.const(0.0))
        b = net.add("Less", f, net.const(1.0))
        return net.add("Mul", f, net.to_float(net.add(op, a, b)))

    return Case(op, (), build)


@custom("IsNaN", ())
def is_nan(net):
    f = net.features()
    return net.add("Mul", f, net.to_float(net.add("IsNaN", net.add("Sqrt", f))))


@custom("IsInf", ("detect_negative",))
def is_inf(net):
    f = net.features()
    infinite = net.add("IsInf", net.add("Log", net.add("Relu", f)), detect_negative=0)
    return net.add("Add", f, net.to_float(infinite))


@custom("IsInf", (), tag="both")
def is_inf_both(net):
    f = net.features()
    infinite = net.add("IsInf", net.add("Log", net.add("Relu", f)))
    return net.add("Add", f, net.to_float(infinite))


@custom("Mod", ("fmod",))
def mod_float(net):
    return net.add("Mod", net.features(), net.const(0.7), fmod=1)


@custom("Mod", ())
def mod_int(net):
    f = net.add("Cast", net.add("Mul", net.features(), net.const(10.0)), to=TensorProto.INT32)
    return net.to_float(net.add("Mod", f, net.const(7, np.int32)))


@custom("CumSum", (), opset=14)
def cumsum(net):
    return net.add("CumSum", net.features(), net.const(3, np.int64))


@custom("CumSum", ("exclusive",), opset=14)
def cumsum_exclusive(net):
    return net.add("CumSum", net.features(), net.const(2, np.int64), exclusive=1)


@custom("CumSum", ("exclusive", "reverse"), opset=14)
def cumsum_both(net):
    return net.add("CumSum", net.features(), net.const(-1, np.int64), exclusive=1, reverse=1)


@custom("CumSum", ("reverse",), opset=14)
def cumsum_reverse(net):
    return net.add("CumSum", net.features(), net.const(3, np.int64), reverse=1)


def topk(**attrs):
    """The 5 largest (or smallest) values of the features along an axis."""

    def build(net):
        return net.add("TopK", net.features(), net.ints(5), outputs=2, **attrs)[0]

    return Case("TopK", tuple(sorted(attrs)), build, 11)


def einsum(equation, expect=AGREE, tag=""):
    """Einsum of the features, and of a [3, 4] weight when the equation takes two."""

    def build(net):
        weight = [net.normal(3, 4)] if "," in equation else []
        return net.add("Einsum", net.features(), *weight, equation=equation)

    return Case("Einsum", ("equation",), build, 12, expect, tag=tag)


@custom("Einsum", ("equation",), opset=12, tag="two-axes")
def einsum_contract(net):
    return net.add("Einsum", net.features(), net.normal(26, 5), equation="nchw,wv->ncv")


@custom("Einsum", ("equation",), opset=12, tag="pairwise")
def einsum_pairwise(net):
    f = net.features()
    return net.add("Einsum", f, net.add("Relu", f), equation="nchw,nchv->nhwv")


@custom("Round", (), tag="halves")
def round_halves(net):
    # Values on exact halves: ONNX rounds them to the even integer.
    f = net.add("Floor", net.add("Mul", net.features(), net.const(4.0)))
    return net.add("Round", net.add("Mul", f, net.const(0.5)))


@custom("Div", (), tag="int")
def div_int(net):
    # Integer division truncates toward zero.
    f = net.add("Cast", net.add("Mul", net.features(), net.const(10.0)), to=TensorProto.INT32)
    return net.to_float(net.add("Div", f, net.const(3, np.int32)))


@custom("TopK", ("axis",), opset=11, tag="ties")
def topk_ties(net):
    # Indices among equal values: ONNX puts the lower index first.
    f = net.add("Floor", net.features())
    _, index = net.add("TopK", f, net.ints(6), outputs=2, axis=2)
    return net.to_float(index)


@custom("QuantizeLinear", (), tag="halves")
def quantize_halves(net):
    # Values on exact half steps: ONNX rounds them to the even step.
    halves = net.add("Mul", net.add("Floor", net.add("Mul", net.features(), net.const(4.0))),
                     net.const(0.5))
    scale, zero = net.const(1.0), net.const(0, np.int8)
    return net.add("DequantizeLinear", net.add("QuantizeLinear", halves, scale, zero), scale,
                   zero)


@custom("DequantizeLinear", ("axis",), tag="weights")
def dequantize_weights(net):
    # Int8 weights per output channel, as QDQ exporters write them.
    w = net.const(net.rng.integers(-127, 127, (4, 1, 3, 3)), np.int8)
    scale = net.const(net.rng.uniform(0.002, 0.01, 4))
    weights = net.add("DequantizeLinear", w, scale, net.const(np.zeros(4), np.int8), axis=0)
    return net.add("Conv", "x", weights)


@custom("DynamicQuantizeLinear", (), opset=11)
def dynamic_quantize(net):
    # Dequantized by hand: tract's DequantizeLinear takes constant scales only.
    y, scale, zero = net.add("DynamicQuantizeLinear", net.features(), outputs=3)
    return net.add("Mul", net.add("Sub", net.to_float(y), net.to_float(zero)), scale)


@custom("ArrayFeatureExtractor", (), domain=ML, ml_opset=1)
def array_feature_extractor(net):
    picked = net.ints(*np.random.default_rng(5).integers(0, 784, 50))
    return net.add("ArrayFeatureExtractor", net.add("Flatten", "x"), picked, domain=ML)


@custom("GatherElements", ("axis",))
def gather_elements(net):
    # Indices made from the data, so that they follow the batch.
    f = net.features()
    scaled = net.add("Cast", net.add("Mul", net.add("Abs", f), net.const(7.0)),
                     to=TensorProto.INT32)
    index = net.add("Cast", net.add("Mod", scaled, net.const(26, np.int32)),
                    to=TensorProto.INT64)
    return net.add("GatherElements", f, index, axis=3)


@custom("GatherND", ())
def gather_nd(net):
    # Rows of a constant [4, 26] picked by the channel ArgMax: [N, 26, 26, 26].
    index = net.add("Unsqueeze", net.add("ArgMax", net.features(), axis=1, keepdims=0),
                    net.ints(3))
    return net.add("GatherND", net.normal(4, 26), index)


@custom("GatherND", ("batch_dims",), tag="batch")
def gather_nd_batch(net):
    # Per image, 4 channels picked by indices made from its data: [N, 4, 26, 26].
    f = net.features()
    means = net.add("ReduceMean", f, axes=[3], keepdims=0)
    picked = net.add("ArgMax", means, axis=2)  # [N, 4, 1], 0 to 25
    index = net.add("Mod", picked, net.const(4, np.int64))
    return net.add("GatherND", f, index, batch_dims=1)


def scatter_elements(**attrs):
    """ScatterElements of the features' ReLU into the features, along the last axis by
    a permutation (unique indices) broadcast to every image."""

    def build(net):
        f = net.features()
        order = net.const(np.random.default_rng(3).permutation(26).reshape(1, 1, 1, 26))
        # f * 0 + order: the permutation at the features' shape, made from the data so
        # that it follows the batch without being planned as a constant.
        spread = net.add("Add", net.add("Mul", f, net.const(0.0)), order)
        index = net.add("Cast", spread, to=TensorProto.INT64)
        return net.add("ScatterElements", f, index, net.add("Relu", f), axis=3, **attrs)

    return Case("ScatterElements", tuple(sorted(["axis", *attrs])), build, 16,
                tag=value_tag(attrs))


def one_hot(**attrs):
    """OneHot of the channel ArgMax (over 4 classes), values 0.2 and 1.5."""

    def build(net):
        index = net.add("ArgMax", net.features(), axis=1, keepdims=0)
        return net.add("OneHot", index, net.const(4, np.int64), net.const([0.2, 1.5]), **attrs)

    return Case("OneHot", tuple(sorted(attrs)), build)


@custom("CastLike", (), opset=15)
def cast_like(net):
    f = net.add("Mul", net.features(), net.const(2.5))
    return net.to_float(net.add("CastLike", f, net.const(0, np.int32)))


def bitwise(op, **attrs):
    """`op` on the features as integers (uint8 for BitShift, int32 otherwise)."""

    def build(net):
        dtype = np.uint8 if op == "BitShift" else np.int32
        code = TensorProto.UINT8 if op == "BitShift" else TensorProto.INT32
        scaled = net.add("Mul", net.add("Abs", net.features()), net.const(9.0))
        f = net.add("Cast", scaled, to=code)
        if op == "BitwiseNot":
            return net.to_float(net.add(op, f))
        return net.to_float(net.add(op, f, net.const(np.array([1, 2, 3, 5]).reshape(4, 1, 1),
                                                     dtype), **attrs))

    return Case(op, tuple(sorted(attrs)), build, 18, tag=value_tag(attrs))


@custom("Scaler", ("offset", "scale"), domain=ML, ml_opset=1)
def scaler(net):
    rng = np.random.default_rng(5)
    return net.add("Scaler", net.add("Flatten", "x"), domain=ML,
                   offset=[float(v) for v in rng.normal(0, 1, 784)],
                   scale=[float(v) for v in rng.uniform(0.2, 3, 784)])


CASES = [
    # 1. The shipped models' operators and the common CNN and MLP classifier operators.
    Case("Conv", (), lambda net: net.features()),
    conv(kernel_shape=[4, 4]),
    conv(pads=[1, 2, 0, 3]),
    conv(strides=[2, 3]),
    conv(dilations=[2, 1]),
    conv(group=2),
    conv(auto_pad="SAME_UPPER"),
    conv(auto_pad="SAME_LOWER"),
    conv(group=4, strides=[2, 2], pads=[1, 1, 1, 1], dilations=[2, 2], kernel_shape=[3, 3]),
    conv(auto_pad="SAME_UPPER", strides=[2, 2]),
    conv_transpose(),
    conv_transpose(kernel_shape=[3, 3]),
    conv_transpose(strides=[2, 2], pads=[1, 0, 1, 2]),
    conv_transpose(strides=[2, 2], output_padding=[1, 0]),
    conv_transpose(dilations=[2, 2]),
    conv_transpose(group=2),
    conv_transpose(strides=[2, 2], output_shape=[58, 57]),
    conv_transpose(strides=[2, 2], auto_pad="SAME_UPPER"),
    conv_transpose(strides=[2, 2], auto_pad="SAME_LOWER", kernel_shape=[3, 3]),
    conv_transpose(group=2, strides=[2, 3], dilations=[2, 1], pads=[1, 0, 2, 1],
                   output_padding=[1, 0]),
    gemm(),
    gemm(transA=1),
    gemm(transB=1),
    gemm(alpha=0.37),
    gemm(beta=2.5),
    gemm(transA=1, transB=1),
    Case("Gemm", ("alpha", "beta", "transB"), lambda net: net.add(
        "Gemm", net.add("Flatten", "x"), net.normal(32, 784, scale=0.05), net.normal(1),
        alpha=1.5, beta=-0.5, transB=1), tag="scalar-c"),
    matmul,
    Case("MatMul", (), lambda net: net.add("MatMul", "x", net.normal(3, 28, 16)),
         tag="broadcast"),
    unary("Relu"),
    unary("Sigmoid"),
    unary("Tanh"),
    unary("Softplus"),
    unary("Softsign"),
    unary("Erf"),
    unary("HardSwish", opset=14, scale=3.0),
    unary("HardSigmoid"),
    unary("HardSigmoid", alpha=0.5),
    unary("HardSigmoid", beta=0.3),
    unary("LeakyRelu"),
    unary("LeakyRelu", alpha=0.4),
    unary("Elu"),
    unary("Elu", alpha=0.3),
    unary("Selu"),
    unary("Selu", alpha=0.8),
    unary("Selu", gamma=2.0),
    unary("Celu", opset=12),
    dataclasses.replace(unary("Celu", opset=12, alpha=2.0), expect=REFUSE),
    unary("ThresholdedRelu"),
    unary("ThresholdedRelu", alpha=0.3),
    unary("Shrink"),
    unary("Shrink", lambd=0.8),
    unary("Shrink", bias=0.3),
    unary("Mish", opset=18),
    unary("Gelu", opset=20),
    # The tanh approximation departs from erf by 2e-4 at most: the gain carries that to
    # about 6e-4 in probability, above TOLERANCE.
    unary("Gelu", opset=20, approximate="tanh", scale=3.0, gain=10.0),
    prelu,
    softmax("Softmax", 13),
    softmax("Softmax", 13, axis=1),
    softmax("Softmax", 11),
    softmax("Softmax", 11, axis=3),
    softmax("LogSoftmax", 13),
    softmax("LogSoftmax", 13, axis=2),
    softmax("LogSoftmax", 11),
    # Before opset 13 these flatten the axes from `axis` on into one.
    softmax("Softmax", 11, tag="coerced", axis=2),
    softmax("LogSoftmax", 11, tag="coerced", axis=2),
    softmax("Hardmax", 11, tag="coerced", axis=2),
    softmax("Hardmax", 11),
    softmax("Hardmax", 13),
    softmax("Hardmax", 13, axis=1),
    pool("MaxPool", kernel_shape=[3, 3]),
    pool("MaxPool", kernel_shape=[3, 3], strides=[2, 2]),
    pool("MaxPool", kernel_shape=[3, 3], pads=[1, 2, 0, 1]),
    pool("MaxPool", kernel_shape=[3, 3], dilations=[2, 3]),
    pool("MaxPool", kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1),
    pool("MaxPool", kernel_shape=[2, 2], auto_pad="SAME_UPPER"),
    pool("MaxPool", kernel_shape=[2, 2], auto_pad="SAME_LOWER"),
    pool("AveragePool", kernel_shape=[3, 3]),
    pool("AveragePool", kernel_shape=[3, 3], strides=[2, 2]),
    pool("AveragePool", kernel_shape=[3, 3], pads=[1, 2, 0, 1]),
    pool("AveragePool", kernel_shape=[3, 3], pads=[1, 2, 0, 1], count_include_pad=1),
    pool("AveragePool", kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1),
    pool("AveragePool", kernel_shape=[2, 2], auto_pad="SAME_UPPER"),
    pool("AveragePool", kernel_shape=[2, 2], auto_pad="SAME_LOWER"),
    pool("AveragePool", opset=19, kernel_shape=[3, 3], dilations=[2, 2]),
    pool("AveragePool", kernel_shape=[2, 2], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1,
         count_include_pad=1),
    pool("AveragePool", kernel_shape=[3, 3], strides=[3, 3], pads=[0, 1, 1, 0], ceil_mode=1),
    pool("MaxPool", opset=12, kernel_shape=[3, 3], strides=[2, 2], pads=[1, 0, 0, 1], ceil_mode=1,
         dilations=[2, 2]),
    pool("GlobalAveragePool"),
    pool("GlobalMaxPool"),
    dataclasses.replace(pool("GlobalLpPool"), expect=REFUSE),
    batch_norm(),
    batch_norm(epsilon=0.3),
    batch_norm(opset=9),
    normalization("InstanceNormalization", 13, (4,)),
    normalization("InstanceNormalization", 13, (4,), epsilon=0.01),
    normalization("LayerNormalization", 17, (26,)),
    normalization("LayerNormalization", 17, (4, 26, 26), axis=1),
    normalization("LayerNormalization", 17, (26,), epsilon=0.01),
    normalization("RMSNormalization", 23, (26,)),
    normalization("RMSNormalization", 23, (4, 26, 26), axis=1),
    normalization("RMSNormalization", 23, (26,), epsilon=0.01),
    normalization("GroupNormalization", 21, (4,), num_groups=2),
    normalization("GroupNormalization", 21, (4,), num_groups=2, epsilon=0.01),
    lrn(),
    lrn(alpha=0.5),
    lrn(beta=0.3, alpha=0.5),
    lrn(bias=2.0, alpha=0.5),
    dropout,
    identity,
    Case("Flatten", (), lambda net: net.add("Flatten", net.features())),
    flatten_axis,
    reshape,
    Case("Transpose", ("perm",), lambda net: net.add("Transpose", net.features(),
                                                      perm=[0, 2, 3, 1])),
    Case("Transpose", ("perm",), lambda net: net.add("Transpose", net.features(),
                                                      perm=[0, 3, 1, 2]), tag="rotate"),
    squeeze_attr,
    squeeze_input,
    unsqueeze_attr,
    unsqueeze_input,
    two_features("Concat", axis=1),
    two_features("Concat", axis=-1, tag="last"),
    second_output("Split", 11, axis=1, split=[1, 3]),
    second_output("Split", 11, axis=2),
    second_output("Split", 13, inputs=[(3, 1)], axis=1),
    second_output("Split", 18, axis=3, num_outputs=2),
    slice_case(13, starts=(1, 3), ends=(3, 20), axes=(1, 3)),
    slice_case(13, starts=(-20, 2), ends=(-1, 1000), axes=(2, -1), tag="negative"),
    slice_case(13, starts=(0, 1, 2, 3), ends=(1000, 3, 20, 19), tag="all-axes"),
    slice_case(9, starts=(1, 3), ends=(3, 20), axes=(1, 3)),
    slice_case(9, starts=(0, 1, 2, 3), ends=(1000, 3, 20, 19)),
    slice_case(13, starts=(0, 1), ends=(26, 26), axes=(2, 3), steps=(2, 3), expect=REFUSE,
               tag="steps"),
    gather_axis,
    gather_default,
    pad(13),
    pad(13, value=0.8, tag="value"),
    pad(13, mode="reflect"),
    pad(13, mode="edge"),
    pad(18, axes=(2, 3), pads=(2, 1, 3, 4), tag="axes"),
    pad(10),
    pad(10, value=0.8),
    pad(10, mode="reflect"),
    pad(10, mode="edge"),
    # tract does not implement it; the runtime refuses it, so `mode` stays in the table.
    pad(19, mode="wrap", expect=REFUSE),
    pad(13, mode="edge", value=0.8, expect=REFUSE, tag="value"),
    pad(13, pads=(0, 0, 2, -1, 0, 0, 3, -4), expect=REFUSE, tag="negative"),
    resize({}),
    resize({}, scale=0.6, tag="down"),
    resize({"mode": "linear"}),
    resize({"mode": "linear"}, scale=0.6, tag="down"),
    resize({"mode": "cubic"}),
    resize({"mode": "cubic", "cubic_coeff_a": -0.5}),
    resize({"mode": "cubic", "exclude_outside": 1}),
    resize({"coordinate_transformation_mode": "asymmetric"}),
    resize({"coordinate_transformation_mode": "asymmetric", "mode": "linear"}),
    # pytorch_half_pixel departs from half_pixel only on an axis resized to length 1.
    resize({"coordinate_transformation_mode": "pytorch_half_pixel", "mode": "linear"},
           sizes=(1, 41)),
    resize({"coordinate_transformation_mode": "align_corners", "mode": "linear"},
           sizes=(33, 41)),
    # half_pixel_symmetric departs from half_pixel where the output length is not a whole
    # multiple of the scale.
    resize({"coordinate_transformation_mode": "half_pixel_symmetric", "mode": "linear"},
           opset=19, scale=1.7),
    resize({"nearest_mode": "floor"}, scale=1.7),
    resize({"nearest_mode": "ceil"}, scale=1.7),
    resize({"nearest_mode": "round_prefer_ceil"}),
    resize({}, sizes=(33, 41), tag="sizes"),
    resize({"mode": "linear"}, opset=10),
    resize({"coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"},
           scale=0.6),
    resize({"coordinate_transformation_mode": "align_corners", "mode": "cubic"},
           sizes=(33, 41)),
    resize({"coordinate_transformation_mode": "tf_crop_and_resize", "mode": "linear"},
           roi=[0, 0, 0.1, 0.2, 1, 1, 0.8, 0.9]),
    resize({"coordinate_transformation_mode": "tf_crop_and_resize", "mode": "linear",
            "extrapolation_value": 2.0}, roi=[0, 0, -0.2, 0.1, 1, 1, 0.9, 1.3]),
    resize({"antialias": 1, "mode": "linear"}, opset=18, scale=0.6),
    resize({"axes": [2, 3]}, opset=18),
    resize({"keep_aspect_ratio_policy": "not_larger"}, opset=18, sizes=(33, 41)),
    resize({}, opset=11),
    resize({"coordinate_transformation_mode": "align_corners", "mode": "linear"},
           expect=REFUSE, tag="scales"),
    Case("Clip", ("max", "min"), lambda net: net.add("Clip", net.features(), min=-0.5, max=0.8),
         opset=10),
    Case("Clip", ("min",), lambda net: net.add("Clip", net.features(), min=-0.5), opset=10),
    Case("Clip", (), lambda net: net.add("Clip", net.features(), net.const(-0.5),
                                         net.const(0.8))),
    Case("Clip", (), lambda net: net.add("Clip", net.features(), "", net.const(0.8)),
         tag="max-only"),
    Case("DepthToSpace", ("blocksize",),
         lambda net: net.add("DepthToSpace", net.features(channels=8), blocksize=2)),
    Case("DepthToSpace", ("blocksize", "mode"),
         lambda net: net.add("DepthToSpace", net.features(channels=8), blocksize=2, mode="CRD")),
    Case("SpaceToDepth", ("blocksize",),
         lambda net: net.add("SpaceToDepth", "x", blocksize=2)),
    Case("SpaceToDepth", ("blocksize",),
         lambda net: net.add("SpaceToDepth", net.features(), blocksize=2), tag="channels"),
    # 2. Elementwise arithmetic.
    binary("Add"),
    binary("Sub"),
    binary("Mul"),
    binary("Div"),
    binary("Pow", positive=True),
    binary("Max"),
    binary("Max", arity=3),
    binary("Min"),
    binary("Min", arity=3),
    binary("Sum", arity=3),
    binary("Mean", arity=3),
    mod_float,
    mod_int,
    div_int,
    Case("Pow", (), lambda net: net.add("Pow", net.features(), net.const(3.0)), tag="odd"),
    unary("Abs"),
    unary("Neg"),
    unary("Exp"),
    unary("Log", positive=True, offset=0.1),
    unary("Sqrt", positive=True),
    unary("Reciprocal", positive=True, offset=0.5),
    unary("Floor", scale=2.0),
    unary("Ceil", scale=2.0),
    unary("Round", scale=2.0),
    round_halves,
    unary("Sign"),
    unary("Sin", scale=2.0),
    unary("Cos", scale=2.0),
    unary("Tan", scale=0.3),
    unary("Atan", scale=2.0),
    unary("Asin", bounded=True),
    unary("Acos", bounded=True),
    unary("Sinh"),
    unary("Cosh"),
    unary("Asinh", scale=2.0),
    unary("Acosh", positive=True, offset=1.0),
    unary("Atanh", bounded=True),
    # 3. Reductions, shapes, comparisons, casts, Einsum.
    *[reduce(op, 13, axes=(2,)) for op in ["ReduceMean", "ReduceMax", "ReduceMin",
                                            "ReduceL1", "ReduceL2", "ReduceLogSumExp",
                                            "ReduceSumSquare", "ReduceLogSum"]],
    reduce("ReduceProd", 13, axes=(1,), scale=0.6),
    reduce("ReduceMean", 13, axes=(1, 3), keepdims=0),
    reduce("ReduceMax", 13, axes=(-1,), keepdims=0),
    reduce("ReduceSum", 11, axes=(2,)),
    reduce("ReduceSum", 11, axes=(3,), keepdims=0),  # its Softmax: opset 11, axis -1
    reduce("ReduceSum", 13, axes=(2,), as_input=True),
    reduce("ReduceSum", 13, axes=(1, 3), keepdims=0, as_input=True),
    *[reduce(op, 18, axes=(2,), as_input=True) for op in ["ReduceMean", "ReduceMax",
                                                           "ReduceMin", "ReduceL1",
                                                           "ReduceL2", "ReduceLogSumExp",
                                                           "ReduceSumSquare"]],
    reduce("ReduceMean", 18, axes=(3,), keepdims=0, as_input=True),
    arg("ArgMax"),
    arg("ArgMax", keepdims=0),
    arg("ArgMax", select_last_index=1),
    arg("ArgMin"),
    arg("ArgMin", keepdims=0),
    arg("ArgMin", select_last_index=1),
    cumsum,
    cumsum_exclusive,
    cumsum_reverse,
    cumsum_both,
    topk(),
    topk(axis=2),
    topk(largest=0),
    # ONNX leaves the order of the k values open with sorted=0: this form may disagree
    # without either side being wrong, and then stays out of the table.
    topk(sorted=0),
    topk_ties,
    shape_slice,
    size,
    expand,
    tile,
    # Refused by the runtime's size limits: its output is computed while the model is
    # planned, before its size can be bounded.
    dataclasses.replace(range_case, expect=REFUSE),
    constant_of_shape,
    # tract makes float64 zeros: refused by the runtime, so `value` stays in the table.
    dataclasses.replace(constant_of_shape_zeros, expect=REFUSE),
    constant_value,
    constant_float,
    constant_floats,
    constant_ints,
    where,
    predicate("Equal"),
    predicate("Greater"),
    predicate("GreaterOrEqual"),
    predicate("Less"),
    predicate("LessOrEqual"),
    not_case,
    logical("And"),
    logical("Or"),
    logical("Xor"),
    is_nan,
    is_inf,
    is_inf_both,
    cast_int,
    cast_half,
    einsum("nchw,kc->nkhw"),
    einsum_contract,
    einsum_pairwise,
    einsum("nchh->nch", tag="diagonal"),
    einsum("nchw->nc", tag="sum"),
    einsum("...chw,kc->...khw", expect=REFUSE, tag="ellipsis"),
    # 4. Quantization.
    quantize_pair("QuantizeLinear"),
    quantize_pair("QuantizeLinear", signed=True),
    quantize_pair("QuantizeLinear", axis=1),
    quantize_pair("QuantizeLinear", axis=2),
    quantize_halves,
    quantize_pair("DequantizeLinear"),
    quantize_pair("DequantizeLinear", axis=1),
    quantize_pair("DequantizeLinear", axis=2),
    dequantize_weights,
    qlinear_conv(),
    qlinear_conv(pads=[1, 1, 1, 1], strides=[2, 2]),
    qlinear_conv(kernel_shape=[3, 3], dilations=[2, 2]),
    qlinear_matmul,
    integer_op("MatMulInteger"),
    integer_op("ConvInteger"),
    dynamic_quantize,
    # 5. Recurrent layers and ai.onnx.ml.
    recurrent("LSTM"),
    recurrent("LSTM", dirs=2, direction="bidirectional"),
    recurrent("LSTM", dirs=2, state=True, direction="bidirectional"),
    recurrent("LSTM", initial=True),
    recurrent("LSTM", dirs=2, initial=True, direction="bidirectional"),
    recurrent("LSTM", peepholes=True),
    # Activations written out: only the defaults run (other ones are refused, below), so
    # these cases change nothing but let exporters that write them through.
    recurrent("LSTM", activations=["Sigmoid", "Tanh", "Tanh"], tag="defaults"),
    recurrent("LSTM", dirs=2, direction="bidirectional",
              activations=["Sigmoid", "Tanh", "Tanh"] * 2, tag="defaults"),
    recurrent("LSTM", REFUSE, direction="reverse"),
    recurrent("LSTM", REFUSE, clip=0.1),
    recurrent("LSTM", REFUSE, activations=["HardSigmoid", "Tanh", "Tanh"]),
    recurrent("GRU"),
    recurrent("GRU", dirs=2, direction="bidirectional"),
    recurrent("GRU", dirs=2, state=True, direction="bidirectional"),
    recurrent("GRU", linear_before_reset=1),
    recurrent("GRU", dirs=2, direction="bidirectional", linear_before_reset=1),
    recurrent("GRU", initial=True),
    recurrent("GRU", activations=["Sigmoid", "Tanh"], tag="defaults"),
    recurrent("GRU", REFUSE, direction="reverse"),
    recurrent("RNN"),
    recurrent("RNN", dirs=2, direction="bidirectional"),
    recurrent("RNN", dirs=2, state=True, initial=True, direction="bidirectional"),
    recurrent("RNN", activations=["Tanh"], tag="defaults"),
    recurrent("RNN", REFUSE, activations=["Relu"]),
    tree_classifier(),
    tree_classifier({"post_transform": "SOFTMAX"}),
    tree_classifier({"base_values": [float(v) for v in np.linspace(-1, 1, 10)]}),
    tree_classifier({"base_values_as_tensor": np.linspace(-1, 1, 10)}, expect=REFUSE),
    ml_op("LinearClassifier", lambda rng: {
        "coefficients": [float(v) for v in rng.normal(0, 0.05, 7840)],
        "intercepts": [float(v) for v in rng.normal(0, 0.5, 10)],
        "classlabels_ints": list(range(10))}, ["coefficients", "intercepts", "classlabels_ints"]),
    ml_op("LinearClassifier", lambda rng: {
        "coefficients": [float(v) for v in rng.normal(0, 0.05, 7840)],
        "intercepts": [float(v) for v in rng.normal(0, 0.5, 10)],
        "classlabels_ints": list(range(10)), "post_transform": "SOFTMAX"},
        ["coefficients", "intercepts", "classlabels_ints", "post_transform"]),
    scaler,
    ml_op("Normalizer", lambda rng: {"norm": "L2"}, ["norm"]),
    ml_op("Normalizer", lambda rng: {"norm": "L1"}, ["norm"]),
    ml_op("LinearRegressor", lambda rng: {
        "coefficients": [float(v) for v in rng.normal(0, 0.05, 784 * 6)],
        "intercepts": [float(v) for v in rng.normal(0, 0.5, 6)], "targets": 6},
        ["coefficients", "intercepts", "targets"]),
    array_feature_extractor,
    # 6. More of what tract registers.
    gather_elements,
    gather_nd,
    gather_nd_batch,
    scatter_elements(),
    scatter_elements(reduction="add"),
    scatter_elements(reduction="max"),
    Case("Trilu", (), lambda net: net.add("Trilu", net.features()), opset=14),
    Case("Trilu", ("upper",), lambda net: net.add("Trilu", net.features(), upper=0), opset=14),
    Case("Trilu", (), lambda net: net.add("Trilu", net.features(), net.const(-3, np.int64)),
         opset=14, tag="k"),
    one_hot(),
    one_hot(axis=1),
    Case("Compress", ("axis",), lambda net: net.add(
        "Compress", net.features(), net.const(np.arange(26) % 3 == 1, np.bool_), axis=2)),
    Case("LpNormalization", (), lambda net: net.add("LpNormalization", net.features())),
    Case("LpNormalization", ("axis",),
         lambda net: net.add("LpNormalization", net.features(), axis=1)),
    Case("LpNormalization", ("p",), lambda net: net.add("LpNormalization", net.features(), p=1)),
    Case("MeanVarianceNormalization", ("axes",), lambda net: net.add(
        "MeanVarianceNormalization", net.features(), axes=[1, 2, 3])),
    Case("MeanVarianceNormalization", ("axes",), lambda net: net.add(
        "MeanVarianceNormalization", net.features(), axes=[2, 3]), tag="spatial"),
    cast_like,
    *[bitwise(op) for op in ["BitwiseAnd", "BitwiseOr", "BitwiseXor", "BitwiseNot"]],
    bitwise("BitShift", direction="LEFT"),
    bitwise("BitShift", direction="RIGHT"),
    # Refused by the runtime's size limits, as Range.
    Case("EyeLike", ("k",), lambda net: net.add(
        "Mul", net.features(), net.add("EyeLike", net.const(np.zeros((26, 26))), k=2)),
         expect=REFUSE),
    Case("ReduceSum", ("noop_with_empty_axes",), lambda net: net.add(
        "ReduceSum", net.features(), net.ints(), noop_with_empty_axes=1), tag="empty-axes"),
    # Not among the operators tract registers: expected to stay out of the table.
    Case("Upsample", (), lambda net: net.add("Upsample", "x", net.const([1, 1, 2, 2])),
         opset=9),
]


@dataclasses.dataclass
class Outcome:
    """What one case did: `status` is agree, disagree, refused (student exited non-zero)
    or error (onnxruntime failed)."""

    status: str
    detail: str = ""
    refused_unsupported: bool = False


def card():
    """The shipped student's model card with its calibration temperature set to 1."""
    props = {p.key: p.value for p in onnx.load(SHIPPED).metadata_props
             if p.key.startswith("student.")}
    calibration = json.loads(props["student.calibration"])
    calibration["temperature"] = 1.0
    props["student.calibration"] = json.dumps(calibration)
    return props


def build_model(case, props):
    """The case's classifier: input `x` [N, 1, 28, 28], the case's nodes, then Flatten
    and a Gemm to 10 logits whose width onnxruntime measures on the nodes alone."""
    net = Net(seed=sum(map(ord, case.name)))
    out = case.build(net)
    imports = [helper.make_opsetid("", case.opset)]
    if case.ml_opset:
        imports.append(helper.make_opsetid(ML, case.ml_opset))
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 28, 28])

    def model(nodes, outputs, initializers):
        graph = helper.make_graph(nodes, case.name, [x], outputs, initializers)
        m = helper.make_model(graph, opset_imports=imports)
        m.ir_version = 8
        return m

    probe = model(net.nodes, [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)],
                  net.initializers)
    session = ort_session(probe)
    shape = session.run(None, {"x": np.zeros((1, 1, 28, 28), np.float32)})[0].shape
    width = int(np.prod(shape[1:]))
    w = net.rng.normal(0, 1 / np.sqrt(width), (width, 10))
    tail = [helper.make_node("Flatten", [out], ["flat"]),
            helper.make_node("Gemm", ["flat", "gemm_w", "gemm_b"], ["logits"])]
    inits = [numpy_helper.from_array(w.astype(np.float32), "gemm_w"),
             numpy_helper.from_array(net.rng.normal(0, 0.1, 10).astype(np.float32), "gemm_b")]
    logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])
    m = model(net.nodes + tail, [logits], net.initializers + inits)
    for key, value in props.items():
        m.metadata_props.append(onnx.StringStringEntryProto(key=key, value=value))
    onnx.checker.check_model(m, full_check=True)
    return m


def ort_session(model):
    """An onnxruntime session that evaluates the graph as written (no fusions)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options,
                                providers=["CPUExecutionProvider"])


def non_default(node, opset):
    """The names of `node`'s attributes whose values differ from the schema default, or
    that have no default."""
    schema = onnx.defs.get_schema(node.op_type, opset, node.domain)
    names = set()
    for attribute in node.attribute:
        spec = schema.attributes.get(attribute.name)
        if spec is None:
            raise ValueError(f"{node.op_type} takes no attribute `{attribute.name}` at opset "
                             f"{opset}")
        default = spec.default_value
        if (default.type == onnx.AttributeProto.UNDEFINED
                or helper.get_attribute_value(attribute) != helper.get_attribute_value(default)):
            names.add(attribute.name)
    return names


def forms(model):
    """{(domain, op): attributes set to non-default values} over every node."""
    opsets = {i.domain: i.version for i in model.opset_import}
    found = {}
    for node in model.graph.node:
        key = (node.domain, node.op_type)
        names = non_default(node, opsets[node.domain])
        found[key] = found.get(key, set()) | names
    return found


def check_declaration(case, model):
    """Raises unless the case's operator is in the model with exactly the declared
    non-default attributes."""
    found = forms(model)
    key = (case.domain, case.op)
    if key not in found:
        raise ValueError(f"the model holds no {case.op}")
    if found[key] != set(case.attributes):
        raise ValueError(f"{case.op} sets {sorted(found[key])} to non-default values, the case "
                         f"declares {sorted(case.attributes)}")


def images(folder):
    """[(path, pixels)]: the first shipped samples, then generated PGMs written to
    `folder` (uniform noise and smooth blobs, which spread the values more)."""
    out = [(p, np.asarray(Image.open(p).convert("L")))
           for p in sorted(SAMPLES.glob("*.png"))[:SAMPLE_IMAGES]]
    rng = np.random.default_rng(20240601)
    yy, xx = np.mgrid[0:28, 0:28]
    for i in range(GENERATED_IMAGES):
        if i % 2 == 0:
            pixels = rng.integers(0, 256, (28, 28))
        else:
            cy, cx = rng.uniform(4, 24, 2)
            blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * rng.uniform(3, 10) ** 2))
            pixels = 255 * blob * rng.uniform(0.5, 1.0) + rng.uniform(0, 40, (28, 28))
        pixels = np.clip(pixels, 0, 255).astype(np.uint8)
        path = pathlib.Path(folder) / f"generated-{i:02d}.pgm"
        path.write_bytes(b"P5\n28 28\n255\n" + pixels.tobytes())
        out.append((path, pixels))
    return out


def ort_probabilities(model, pixels, props):
    """softmax(logits) from onnxruntime, one image at a time, the pixels scaled as the
    card says."""
    spec = json.loads(props["student.input"])
    session = ort_session(model)
    probs = []
    for p in pixels:
        x = p.astype(np.float32)[None, None] * np.float32(spec["scale"])
        x = (x - np.float32(spec["mean"][0])) / np.float32(spec["std"][0])
        z = session.run(None, {"x": x})[0][0].astype(np.float64)
        e = np.exp(z - z.max())
        probs.append(e / e.sum())
    return np.array(probs)


def run_case(case, model, path, imgs, props, student, flags):
    """Runs `student run` on the saved model and compares it with onnxruntime."""
    proc = subprocess.run([student, "run", str(path), *[str(p) for p, _ in imgs], "--json",
                           "--top-k", "10", "--threshold", "0", *flags],
                          capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
        return Outcome("refused", last[:300], "unsupported model" in proc.stderr)
    if case.expect == REFUSE:
        return Outcome("ran", "exit 0")
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    try:
        expected = ort_probabilities(model, [p for _, p in imgs], props)
    except Exception as e:  # onnxruntime raises several types
        return Outcome("error", f"onnxruntime: {str(e).splitlines()[0][:200]}")
    if len(lines) != len(imgs):
        return Outcome("disagree", f"{len(lines)} results for {len(imgs)} images")
    ours = np.zeros_like(expected)
    for i, line in enumerate(lines):
        for ranked in line["top_k"]:
            ours[i, ranked["index"]] = ranked["probability"]
    top1 = sum(int(line["index"] != int(np.argmax(e))) for line, e in zip(lines, expected))
    worst = float(np.abs(ours - expected).max())
    detail = f"top-1 differs on {top1}/{len(imgs)} images, max |dp| {worst:.2e}"
    if top1 == 0 and worst <= case.tolerance:
        return Outcome("agree", detail)
    return Outcome("disagree", detail)


TABLE_HEAD = '''\
//! The operators the runtime runs through tract, each with the attributes that may take
//! values other than their ONNX defaults. Every entry was compared with onnxruntime by
//! `tests/tract_forms.py`, which writes this file (`--write`); do not edit.

/// An operator the tract path runs, and its attributes that may differ from their defaults.
pub(crate) struct Checked {
    /// `""` (the default domain) or `ai.onnx.ml`.
    pub domain: &'static str,
    pub op: &'static str,
    /// Sorted by name.
    pub attributes: &'static [&'static str],
}

/// Sorted by domain and operator.
#[rustfmt::skip]
pub(crate) static CHECKED: &[Checked] = &[
'''
ROW = re.compile(r'^\s*Checked \{ domain: "([^"]*)", op: "([^"]+)", attributes: &\[(.*)\] \},$')


def render_table(table):
    rows = []
    for (domain, op), attrs in sorted(table.items()):
        names = ", ".join(f'"{a}"' for a in sorted(attrs))
        rows.append(f'    Checked {{ domain: "{domain}", op: "{op}", attributes: &[{names}] }},\n')
    return TABLE_HEAD + "".join(rows) + "];\n"


def parse_table(text):
    """{(domain, op): attributes} from the generated Rust file."""
    table = {}
    for line in text.splitlines():
        m = ROW.match(line)
        if m:
            table[(m[1], m[2])] = set(re.findall(r'"([^"]+)"', m[3]))
    return table


def covered(model_forms, table):
    """The forms of a model that the table lacks, as text ([] when all are in it)."""
    missing = []
    for (domain, op), attrs in sorted(model_forms.items()):
        if (domain, op) not in table:
            missing.append(op)
        elif attrs - table[(domain, op)]:
            missing.append(f"{op}[{','.join(sorted(attrs - table[(domain, op)]))}]")
    return missing


def rebuild(case):
    return f"target/py/bin/python tests/tract_forms.py --only {case.op} -v"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--student", default=str(ROOT / "target/release/student"))
    parser.add_argument("--write", metavar="PATH",
                        help="run the agree cases and write the table of those that agree")
    parser.add_argument("--only", help="comma-separated operators: only their cases")
    parser.add_argument("-v", "--verbose", action="store_true", help="a line for every case")
    args = parser.parse_args()
    names = [c.name for c in CASES]
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:
        sys.exit(f"error: cases named twice: {sorted(duplicates)}")
    if args.write and args.only:
        sys.exit("error: --write takes every case; --only would write a partial table")
    only = set(args.only.split(",")) if args.only else None
    cases = [c for c in CASES if only is None or c.op in only]
    if args.write:
        cases = [c for c in cases if c.expect == AGREE]
    help_text = subprocess.run([args.student, "run", "--help"], capture_output=True,
                               text=True).stdout
    checking = FLAG in help_text
    if args.write:
        table = {}
    else:
        if not TABLE.exists():
            print(f"FAIL: {TABLE} is missing; write it with --write")
            print("0 passed, 1 failed")
            return 1
        table = parse_table(TABLE.read_text())

    started = time.monotonic()
    props = card()
    results = []  # (case, model forms, outcome or None, failure text or None)
    with tempfile.TemporaryDirectory() as tmp:
        imgs = images(tmp)
        for case in cases:
            try:
                model = build_model(case, props)
                check_declaration(case, model)
            except Exception as e:  # onnx and onnxruntime raise several types
                results.append((case, {}, None, f"cannot build: {str(e).splitlines()[0][:300]}"))
                continue
            path = pathlib.Path(tmp) / f"{case.name}.onnx"
            onnx.save(model, path)
            model_forms = forms(model)
            # Refuse cases skip the table too: the runtime's own checks must refuse them.
            flags = [FLAG] if checking and (args.write or case.expect == REFUSE) else []
            outcome = run_case(case, model, path, imgs, props, args.student, flags)
            results.append((case, model_forms, outcome, None))

    if args.write:
        return write(args, results, started)
    return check(args, results, table, checking, only, started)


def write(args, results, started):
    """Writes the table from the agreeing cases. A case stays out when a form of its
    model is outside the table; a form that some case showed to disagree is taken out
    of it (the operator for a default form, else the attributes that case set), even
    where other cases with those attributes agreed."""
    failed = [(case, why) for case, _, _, why in results if why]
    failed += [(case, outcome.detail) for case, _, outcome, why in results
               if not why and outcome.status == "error"]
    agreeing = [(case, f) for case, f, outcome, why in results
                if not why and outcome.status == "agree"]
    disagreeing = [case for case, _, outcome, why in results
                   if not why and outcome.status in ("disagree", "refused")]
    taken_out = {}
    while True:
        table = {}
        for case, _ in agreeing:
            key = (case.domain, case.op)
            table[key] = table.get(key, set()) | set(case.attributes)
        for case in disagreeing:
            key = (case.domain, case.op)
            if key in table and set(case.attributes) <= table[key]:
                taken_out[case.name] = sorted(case.attributes) or ["the operator"]
                if case.attributes:
                    table[key] -= set(case.attributes)
                else:
                    del table[key]
        kept = [(case, f) for case, f in agreeing if not covered(f, table)]
        if len(kept) == len(agreeing):
            break
        agreeing = kept
    kept_names = {case.name for case, _ in agreeing}
    for case, f, outcome, why in results:
        if why:
            print(f"FAIL: {case.name}: {why}")
        elif outcome.status == "error":
            print(f"FAIL: {case.name}: {outcome.detail}")
        elif outcome.status != "agree":
            out = taken_out.get(case.name)
            also = f"; taken out of the table: {', '.join(out)}" if out else ""
            print(f"out: {case.name}: {outcome.status}: {outcome.detail}{also}  "
                  f"({rebuild(case)})")
        elif case.name not in kept_names:
            print(f"out: {case.name}: agrees, but uses forms outside the table: "
                  f"{', '.join(covered(f, table))}")
        elif args.verbose:
            print(f"ok: {case.name}: {outcome.detail}")
    pathlib.Path(args.write).write_text(render_table(table))
    print(f"wrote {args.write}: {len(table)} operators from {len(agreeing)} agreeing cases "
          f"of {len(results)} ({time.monotonic() - started:.0f} s)")
    print(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


def check(args, results, table, checking, only, started):
    """Check mode: one line per failure, then `N passed, M failed`."""
    passed, failures, outside = 0, [], []
    agreed = {}  # (domain, op) -> attributes of covered cases that agreed
    for case, model_forms, outcome, why in results:
        if why:
            failures.append(f"FAIL: {case.name}: {why}")
            continue
        missing = covered(model_forms, table)
        refused = outcome.status == "refused" and outcome.refused_unsupported
        if case.expect == REFUSE:
            ok = refused
            text = f"expected a refusal, got {outcome.status}: {outcome.detail}"
        elif not missing:
            ok = outcome.status == "agree"
            key = (case.domain, case.op)
            if ok:
                agreed[key] = agreed.get(key, set()) | set(case.attributes)
            text = f"in the table but {outcome.status}: {outcome.detail}  ({rebuild(case)})"
        elif checking:
            ok = refused
            text = f"outside the table ({', '.join(missing)}), expected a refusal, got " \
                   f"{outcome.status}: {outcome.detail}"
        else:
            outside.append(f"outside the table ({', '.join(missing)}): the runtime's check will "
                           f"refuse it; today it runs: {outcome.status}: {outcome.detail}")
            print(f"note: {case.name}: {outside[-1]}")
            continue
        if ok:
            passed += 1
            if args.verbose:
                print(f"ok: {case.name}: {outcome.status}: {outcome.detail}")
        else:
            failures.append(f"FAIL: {case.name}: {text}")
    for (domain, op), attrs in sorted(table.items()):
        if only is not None and op not in only:
            continue
        shown = f"{domain}:{op}" if domain else op
        if (domain, op) not in agreed:
            failures.append(f"FAIL: table entry {shown}: no case in the table agreed")
        for name in sorted(attrs - agreed.get((domain, op), set())):
            failures.append(f"FAIL: table entry {shown}.{name}: no agreeing case sets it")
    for line in failures:
        print(line)
    print(f"{len(results)} cases in {time.monotonic() - started:.0f} s; {len(outside)} outside "
          f"the table, not counted (this binary has no table check)" if outside else
          f"{len(results)} cases in {time.monotonic() - started:.0f} s")
    print(f"{passed} passed, {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
