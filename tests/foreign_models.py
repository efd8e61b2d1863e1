#!/usr/bin/env python3
"""Writes "foreign" ONNX students, laid out the way other exporters write them.

    python tests/foreign_models.py OUT_DIR [--verbose] [--data DIR]

student-torchstyle.onnx: the shipped student as torch.onnx.export would write it, same
function (checked within 1e-4 on 200 test images); opset11.onnx: the same at opset 11;
ops-zoo.onnx: random weights over every op the quantizer must support; already-int8.onnx:
ops-zoo through onnxruntime's quantize_static (QDQ). Generated at test time, never
committed; a failed check exits 1 with a one-line message.
"""
import argparse
import json
import logging
import os
import pathlib
from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from onnxruntime import quantization as oq

from ort_crosscheck import ROOT, read_idx  # the sibling script (tests/ is on sys.path)

STUDENT = ROOT / "models/fashion-mnist/student.onnx"
TOLERANCE = 1e-4  # max |logit difference| allowed between the student and its torch form
BN_EPS = 1e-5  # torch.nn.BatchNorm2d's default
PRODUCER = "student tests/foreign_models.py"  # honest: these files are not torch's own
IR_FOR_OPSET = {11: 6, 17: 8}  # onnx.helper.VERSION_TABLE's IR version for each opset
f32 = np.float32


def fail(message):
    raise SystemExit(f"foreign_models.py: {message}")


def scale_pixels(model, images):
    """Scales 8-bit images to [n, 1, 28, 28] floats as the model card's `student.input` says."""
    spec = json.loads(next(p.value for p in model.metadata_props if p.key == "student.input"))
    x = images.astype(f32)[:, None, :, :] * f32(spec["scale"])
    return (x - f32(spec["mean"][0])) / f32(spec["std"][0])


class Graph:
    """Collects nodes and initializers; node outputs are named as torch names them."""

    def __init__(self):
        self.nodes, self.inits = [], []

    def init(self, name, array):
        self.inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def op(self, op_type, inputs, scope, out=None, **attrs):
        path = f"/{scope}/{op_type}" if scope else f"/{op_type}"
        out = out or f"{path}_output_0"
        self.nodes.append(helper.make_node(op_type, inputs, [out], path, **attrs))
        return out

    def model(self, opset, input_shape, output, output_shape):
        x = helper.make_tensor_value_info("input.1", TensorProto.FLOAT, input_shape)
        y = helper.make_tensor_value_info(output, TensorProto.FLOAT, output_shape)
        graph = helper.make_graph(self.nodes, "main_graph", [x], [y], self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                                  ir_version=IR_FOR_OPSET[opset], producer_name=PRODUCER)
        onnx.checker.check_model(model, full_check=True)
        return model


def torchstyle(student, opset):
    """The student with the same function, laid out as torch.onnx.export writes it."""
    w = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in student.graph.initializer}
    rng = np.random.default_rng(2017)
    g = Graph()

    def conv_bn(name, x, weight, bias):
        # BatchNormalization(eval) computes a * (z - mean) + beta with a = gamma / sqrt(var + eps),
        # per output channel. With conv weights W / a, no conv bias (torch's bias=False before
        # a BN) and beta = b + a * mean, Conv+BN gives W x + b: the original conv. gamma, var
        # and mean are random so that the BN is not an identity a quantizer could skip.
        c = weight.shape[0]
        gamma, var = rng.uniform(0.5, 2.0, c).astype(f32), rng.uniform(0.5, 2.0, c).astype(f32)
        mean = rng.normal(0.0, 0.5, c).astype(f32)
        a = gamma / np.sqrt(var.astype(np.float64) + BN_EPS)
        conv = g.op("Conv", [x, g.init(f"{name}.weight", f32(weight / a[:, None, None, None]))],
                    name, dilations=[1, 1], group=1, kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                    strides=[1, 1])
        bn = name.replace("conv", "bn")
        params = zip(("weight", "bias", "running_mean", "running_var"),
                     (gamma, f32(bias + a * mean), mean, var))
        inputs = [g.init(f"{bn}.{p}", v) for p, v in params]
        return g.op("BatchNormalization", [conv, *inputs], bn, epsilon=BN_EPS, momentum=0.9)

    def pool(name, x):
        return g.op("MaxPool", [x], name, kernel_shape=[2, 2], pads=[0, 0, 0, 0], strides=[2, 2])

    def linear(name, x, out=None):
        # The student's Gemm has transB=0: its weight is already [in, out], i.e. the
        # transposed Linear weight that torch writes as MatMul's second input.
        mm = g.op("MatMul", [x, g.init(f"onnx::MatMul_{name}", f32(w[f"{name}.weight"]))], name)
        return g.op("Add", [mm, g.init(f"{name}.bias", f32(w[f"{name}.bias"]))], name, out=out)

    # The normalization as the first ops of the graph (as exports of a model that wraps its
    # transforms do): the file takes pixels / 255, which is what a runtime feeds a model
    # without a card, so it sees the inputs it was trained on.
    spec = json.loads(next(p.value for p in student.metadata_props if p.key == "student.input"))
    x = g.op("Add", ["input.1", g.init("normalize.shift", f32([-spec["mean"][0]]))], "normalize")
    x = g.op("Mul", [x, g.init("normalize.scale", f32([1.0 / spec["std"][0]]))], "normalize")
    x = g.op("Relu", [conv_bn("conv0", x, w["conv0.weight"], w["conv0.bias"])], "relu0")
    # A depthwise 1x1 conv scales channel c by s_c > 0. Relu and MaxPool commute with positive
    # scaling and conv1's zero padding stays zero, so dividing conv1's input channel c by s_c
    # undoes it exactly (up to rounding).
    channels = w["conv0.weight"].shape[0]
    s = np.exp(rng.uniform(-1.0, 1.0, channels)).astype(f32)
    x = g.op("Conv", [x, g.init("dw0.weight", s.reshape(channels, 1, 1, 1))], "dw0",
             dilations=[1, 1], group=channels, kernel_shape=[1, 1], pads=[0, 0, 0, 0],
             strides=[1, 1])
    x = pool("pool0", x)
    w1 = w["conv1.weight"] / s[None, :, None, None].astype(np.float64)
    x = pool("pool1", g.op("Relu", [conv_bn("conv1", x, w1, w["conv1.bias"])], "relu1"))
    # torch's x.view(-1, K): a Constant shape feeding Reshape keeps the batch dynamic.
    k = w["hidden.weight"].shape[0]
    shape = g.op("Constant", [], "", value=numpy_helper.from_array(np.array([-1, k], np.int64)))
    x = g.op("Relu", [linear("hidden", g.op("Reshape", [x, shape], ""))], "relu2")
    logits = linear("logits", x, out="logits")
    return g.model(opset, ["batch_size", 1, 28, 28], logits, ["batch_size", 10])


def ops_zoo():
    """A random classifier on [1, 1, 28, 28] using every op the quantizer must support."""
    rng = np.random.default_rng(7)
    g = Graph()

    def he(*shape, gain=2.0):  # weights scaled so activations keep roughly unit variance
        fan_in = int(np.prod(shape[1:])) if len(shape) == 4 else shape[0]
        return g.init(f"w{len(g.inits)}", f32(rng.normal(0, np.sqrt(gain / fan_in), shape)))

    def const(*shape, lo=-0.1, hi=0.1):
        return g.init(f"c{len(g.inits)}", f32(rng.uniform(lo, hi, shape)))

    def conv(name, x, cin, cout, k=3, **attrs):
        group = attrs.get("group", 1)
        return g.op("Conv", [x, he(cout, cin // group, k, k), const(cout)], name,
                    kernel_shape=[k, k], **attrs)

    x = conv("stem", "input.1", 1, 8, strides=[2, 2], pads=[1, 1, 1, 1])  # [1, 8, 14, 14]
    bn = [const(8, lo=0.5, hi=1.5), const(8), const(8, lo=-0.2, hi=0.2), const(8, lo=0.5, hi=2)]
    x = g.op("Relu", [g.op("BatchNormalization", [x, *bn], "bn", epsilon=BN_EPS)], "relu")
    a = conv("dilated", x, 8, 8, dilations=[2, 2], pads=[2, 2, 2, 2])
    a = g.op("Clip", [a, g.init("clip.min", f32(0)), g.init("clip.max", f32(6))], "clip")
    a = g.op("Add", [a, x], "residual")
    b = conv("depthwise", x, 8, 8, group=8, pads=[1, 1, 1, 1])
    b = g.op("LeakyRelu", [b], "leaky", alpha=0.1)
    x = g.op("Concat", [a, b], "concat", axis=1)  # [1, 16, 14, 14]
    x = g.op("Mul", [x, const(1, 16, 1, 1, lo=0.5, hi=1.5)], "scale")
    x = g.op("Add", [x, const(1, 16, 1, 1)], "shift")
    x = g.op("MaxPool", [g.op("HardSwish", [x], "hswish")], "maxpool", kernel_shape=[2, 2],
             strides=[2, 2])  # [1, 16, 7, 7]
    gate = g.op("Sigmoid", [conv("gate", x, 16, 16, k=1)], "sigmoid")
    x = g.op("Mul", [x, gate], "gated")
    # count_include_pad=1, as torch's AvgPool2d exports by default: every window divides by 9.
    # Border windows dividing by 4 or 6 make exact half-step ties once quantize_static gives
    # the output its input's scale, and runtimes then round them apart on float noise.
    x = g.op("AveragePool", [x], "avgpool", kernel_shape=[3, 3], strides=[2, 2],
             pads=[1, 1, 1, 1], count_include_pad=1)  # [1, 16, 4, 4]
    # Channel attention: softmax over the 16 pooled channels, times 16 so its mean is 1.
    se = g.op("GlobalAveragePool", [x], "gap")
    se = g.op("Reshape", [se, g.init("shape16", np.array([1, 16], np.int64))], "squeeze")
    se = g.op("Softmax", [se], "softmax", axis=1)
    se = g.op("Mul", [se, g.init("sixteen", f32(16))], "attention")
    se = g.op("Reshape", [se, g.init("shape1611", np.array([1, 16, 1, 1], np.int64))], "unsqueeze")
    x = g.op("Flatten", [g.op("Mul", [x, se], "attended")], "flatten", axis=1)  # [1, 256]
    x = g.op("Gemm", [x, he(256, 32, gain=1.0), const(32)], "fc", transB=0)
    x = g.op("MatMul", [g.op("Tanh", [x], "tanh"), he(32, 10, gain=16.0)], "head")  # wide logits
    return g.model(17, [1, 1, 28, 28], g.op("Add", [x, const(10)], "head", out="logits"), [1, 10])


def run(model, x):
    """All outputs for x, unoptimized so that each op runs as written (no Conv+BN fusion)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    spec = session.get_inputs()[0]
    chunks = [x[i : i + 1] for i in range(len(x))] if spec.shape[0] == 1 else [x]
    return [np.concatenate(t) for t in zip(*(session.run(None, {spec.name: c}) for c in chunks))]


def print_ranges(model, x):
    """Runs the model with every node output exposed and prints each tensor's range."""
    probe = onnx.shape_inference.infer_shapes(model)
    probe.graph.output.extend(v for v in probe.graph.value_info)
    for name, t in zip([o.name for o in probe.graph.output], run(probe, x)):
        print(f"  {name:32} [{t.min():9.3f}, {t.max():9.3f}]  std {t.std():.3f}")


class Images(oq.CalibrationDataReader):
    """Feeds quantize_static's calibration one image at a time."""

    def __init__(self, x):
        self.items = iter({"input.1": x[i : i + 1]} for i in range(len(x)))

    def get_next(self):
        return next(self.items, None)


def describe(path):
    model = onnx.load(path)
    ops = Counter(n.op_type for n in model.graph.node)
    listing = ", ".join(f"{op} x{n}" if n > 1 else op for op, n in sorted(ops.items()))
    print(f"wrote {path.name}: {path.stat().st_size} bytes, opset "
          f"{model.opset_import[0].version}, {len(model.graph.node)} nodes: {listing}")
    return model


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=pathlib.Path)
    parser.add_argument("--verbose", action="store_true", help="print ops-zoo tensor ranges")
    parser.add_argument("--data", type=pathlib.Path, default=pathlib.Path(os.environ.get(
        "STUDENT_FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist")))
    args = parser.parse_args()
    idx = args.data / "t10k-images-idx3-ubyte.gz"
    if not idx.is_file():
        fail(f"{idx}: no Fashion-MNIST test images (install dataset-fashion-mnist)")
    student = onnx.load(STUDENT)
    x = scale_pixels(student, read_idx(idx)[:200])
    args.out_dir.mkdir(parents=True, exist_ok=True)

    expected = run(student, x)[0]
    raw = read_idx(idx)[:200].astype(f32)[:, None, :, :] / f32(255)
    for name, opset in (("student-torchstyle.onnx", 17), ("opset11.onnx", 11)):
        model = torchstyle(student, opset)
        worst = float(np.abs(run(model, raw)[0] - expected).max())
        if not worst <= TOLERANCE:
            fail(f"{name}: logits differ from the student's by {worst:.2e} on {len(x)} images "
                 f"(tolerance {TOLERANCE:.0e})")
        onnx.save(model, args.out_dir / name)
        describe(args.out_dir / name)
        print(f"  max |logit - student logit| {worst:.2e} over {len(x)} test images")

    zoo = ops_zoo()
    logits = run(zoo, x)[0]
    spread = float(logits.std(axis=1).mean())
    classes = len(set(logits.argmax(axis=1)))
    if not np.isfinite(logits).all() or spread < 0.1 or classes < 2:
        fail(f"ops-zoo.onnx: outputs not finite or too flat (mean std over classes {spread:.3f},"
             f" {classes} distinct top-1 classes on {len(x)} images)")
    if args.verbose:
        print_ranges(zoo, x[:50])
    onnx.save(zoo, args.out_dir / "ops-zoo.onnx")
    describe(args.out_dir / "ops-zoo.onnx")
    print(f"  logits in [{logits.min():.2f}, {logits.max():.2f}], mean std over classes "
          f"{spread:.2f}, {classes} distinct top-1 classes over {len(x)} images")

    # Per-channel int8 weights, int8 activations calibrated (min-max) on 50 test images.
    logging.getLogger().setLevel(logging.INFO if args.verbose else logging.ERROR)
    int8_path = args.out_dir / "already-int8.onnx"
    oq.quantize_static(args.out_dir / "ops-zoo.onnx", int8_path, Images(x[:50]),
                       quant_format=oq.QuantFormat.QDQ, per_channel=True,
                       activation_type=oq.QuantType.QInt8, weight_type=oq.QuantType.QInt8)
    got = run(describe(int8_path), x)[0]
    agree = int((got.argmax(1) == logits.argmax(1)).sum())
    if not np.isfinite(got).all():
        fail(f"{int8_path.name}: onnxruntime gives non-finite outputs")
    print(f"  max |logit - float logit| {np.abs(got - logits).max():.3f}, top-1 agreement "
          f"{agree}/{len(x)}")


if __name__ == "__main__":
    main()
