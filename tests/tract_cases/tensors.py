"""Builders of cases of tensor operators."""
import numpy as np
from onnx import TensorProto, numpy_helper

from tract_cases.graph import AGREE, ML, Case, custom, value_tag


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


def cast_to(kind, name, scale=2.5, positive=False):
    """float -> `kind` -> float of features times `scale` (made positive first for the
    unsigned types: a negative float cast to one is left undefined by ONNX)."""

    def build(net):
        f = net.features()
        if positive:
            f = net.add("Abs", f)
        f = net.add("Mul", f, net.const(scale))
        return net.to_float(net.add("Cast", f, to=kind))

    return Case("Cast", ("to",), build, tag=name)


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


@custom("Mod", (), tag="signs")
def mod_int_signs(net):
    # Integer Mod takes the divisor's sign in ONNX (-8 mod 3 is 1, 8 mod -3 is -1).
    f = net.add("Cast", net.add("Mul", net.features(), net.const(10.0)), to=TensorProto.INT64)
    return net.to_float(net.add("Mod", f, net.const(-3, np.int64)))


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
    scaled = net.add("Mul", net.add("Abs", f), net.const(7.0))
    index = net.add("Cast", net.add("Clip", scaled, net.const(0.0), net.const(25.0)),
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
    first = net.add("Slice", means, net.ints(0), net.ints(4), net.ints(2))  # [N, 4, 4]
    index = net.add("ArgMax", first, axis=2)  # [N, 4, 1], 0 to 3
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
