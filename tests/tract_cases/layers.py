"""Builders of cases of layer-like operators."""
import numpy as np
from onnx import numpy_helper

from tract_cases.graph import AGREE, ML, Case, custom, value_tag


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


def conv_transpose(tag="", **attrs):
    """ConvTranspose of the image to 2 channels, or of the 4 features when grouped."""

    def build(net):
        if "group" in attrs:
            return net.add("ConvTranspose", net.features(), net.normal(4, 1, 3, 3), **attrs)
        return net.add("ConvTranspose", "x", net.normal(1, 2, 3, 3), net.normal(2), **attrs)

    tag = "-".join(t for t in [value_tag(attrs), tag] if t)
    return Case("ConvTranspose", tuple(sorted(attrs)), build, tag=tag)


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
              opset=14, **attrs):
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
    return Case(op, tuple(sorted(declared)), build, opset, expect, tag=tag)


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


def qlinear_matmul(w_scale=0.004, expect=AGREE, tag=""):
    """QLinearMatMul of the quantized image rows with int8 weights, back to float."""

    def build(net):
        xq, xs, xz = quantized_input(net)
        w = net.const(net.rng.integers(-100, 100, (28, 16)), np.int8)
        ws, wz = net.const(w_scale), net.const(0, np.int8)
        ys, yz = net.const(0.05), net.const(128, np.uint8)
        y = net.add("QLinearMatMul", xq, xs, xz, w, ws, wz, ys, yz)
        return net.add("DequantizeLinear", y, ys, yz)

    return Case("QLinearMatMul", (), build, expect=expect, tag=tag)


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
