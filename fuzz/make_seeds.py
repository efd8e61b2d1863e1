#!/usr/bin/env python3
"""Writes the fuzzers' seed corpora.

    target/py/bin/python fuzz/make_seeds.py OUT_DIR [--student PATH]

OUT_DIR/<target>/ gets the seeds of each fuzz target (see fuzz/README.md): the shipped ONNX
files and a few tiny classifiers built here (one op family each, with and without a model
card), their compiled forms (`student compile`, from --student, default
target/release/student), the same split into manifest and data, the shipped cards as
`key=value` lines, images (the shipped samples, and PNG and PGM files of every colour
type and depth written here) and byte strings for the classify target. Needs `onnx` and
`numpy` (scripts/test.sh installs both into target/py).
"""
import argparse
import json
import pathlib
import struct
import shutil
import subprocess
import tempfile
import zlib

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = pathlib.Path(__file__).resolve().parent.parent
MODELS = ROOT / "models/fashion-mnist"
rng = np.random.default_rng(6)
f32 = np.float32


def card(labels, channels, height, width):
    """The card entries of a small model (a 1/255 scale, no normalization)."""
    return {
        "student.name": json.dumps("tiny"),
        "student.labels": json.dumps(labels),
        "student.input": json.dumps({"layout": "NCHW", "channels": channels, "height": height,
                                     "width": width, "scale": 1 / 255, "mean": [0.0] * channels,
                                     "std": [1.0] * channels}),
        "student.calibration": json.dumps({"temperature": 1.5, "method": "seed"}),
        "student.escalation": json.dumps({"score": "margin", "threshold": 0.3,
                                          "chosen_by": "seed"}),
    }


def model(nodes, inits, in_shape, classes, with_card, opset=17):
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *in_shape])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])],
        [numpy_helper.from_array(np.asarray(a), n) for n, a in inits.items()])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                          producer_name="fuzz/make_seeds.py")
    m.ir_version = 8
    if with_card:
        c, h, w = in_shape if len(in_shape) == 3 else (1, 1, in_shape[0])
        labels = [f"class {i}" for i in range(classes)]
        helper.set_model_props(m, card(labels, c, h, w))
    return m.SerializeToString()


def w(*shape):
    return rng.standard_normal(shape).astype(f32) * f32(0.5)


def tiny_models():
    """Small classifiers, each with a different op family."""
    out = {}
    out["gemm"] = model([helper.make_node("Gemm", ["x", "w", "b"], ["logits"], transB=1)],
                        {"w": w(3, 4), "b": w(3)}, [4], 3, True)
    out["conv-pool"] = model([
        helper.make_node("Conv", ["x", "cw", "cb"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "w", "b"], ["logits"], transB=1),
    ], {"cw": w(2, 1, 3, 3), "cb": w(2), "w": w(2, 8), "b": w(2)}, [1, 4, 4], 2, True)
    # Eight channels in and out: compiled as a Winograd convolution.
    out["winograd"] = model([
        helper.make_node("Conv", ["x", "cw", "cb"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Flatten", ["r"], ["f"]),
        helper.make_node("Gemm", ["f", "w", "b"], ["logits"], transB=1),
    ], {"cw": w(8, 8, 3, 3), "cb": w(8), "w": w(2, 72), "b": w(2)}, [8, 3, 3], 2, True)
    # The same with a 2x2 max pool after it: fused into the Winograd output transform.
    out["winograd-pool"] = model([
        helper.make_node("Conv", ["x", "cw", "cb"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "w", "b"], ["logits"], transB=1),
    ], {"cw": w(8, 8, 3, 3), "cb": w(8), "w": w(2, 32), "b": w(2)}, [8, 4, 4], 2, True)
    out["zoo"] = model([
        helper.make_node("Conv", ["x", "cw"], ["c"], group=2, strides=[1, 1]),
        helper.make_node("BatchNormalization", ["c", "s", "o", "m", "v"], ["bn"]),
        helper.make_node("Sigmoid", ["bn"], ["sg"]),
        helper.make_node("AveragePool", ["sg"], ["ap"], kernel_shape=[2, 2]),
        helper.make_node("Transpose", ["ap"], ["t"], perm=[0, 1, 3, 2]),
        helper.make_node("Concat", ["t", "t"], ["cc"], axis=1),
        helper.make_node("Shape", ["cc"], ["sh"]),
        helper.make_node("Gather", ["sh", "zero"], ["n"], axis=0),
        helper.make_node("Unsqueeze", ["n", "zero1"], ["n1"]),
        helper.make_node("Concat", ["n1", "minus1"], ["newshape"], axis=0),
        helper.make_node("Reshape", ["cc", "newshape"], ["flat"]),
        helper.make_node("LayerNormalization", ["flat", "g", "be"], ["ln"], axis=-1),
        helper.make_node("MatMul", ["ln", "mw"], ["mm"]),
        helper.make_node("Add", ["mm", "mb"], ["ad"]),
        helper.make_node("LeakyRelu", ["ad"], ["lr"], alpha=0.1),
        helper.make_node("Clip", ["lr", "lo", "hi"], ["logits"]),
    ], {"cw": w(2, 1, 2, 2), "s": w(2), "o": w(2), "m": w(2), "v": np.abs(w(2)) + f32(1),
        "zero": np.array(0, np.int64), "zero1": np.array([0], np.int64),
        "minus1": np.array([-1], np.int64), "g": w(36), "be": w(36), "mw": w(36, 3),
        "mb": w(3), "lo": np.array(-6, f32), "hi": np.array(6, f32)}, [2, 5, 5], 3, True)
    out["qdq"] = model([
        helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
        helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["wd"], axis=0),
        helper.make_node("Conv", ["xd", "wd"], ["c"]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("QuantizeLinear", ["r", "ys", "yz"], ["rq"]),
        helper.make_node("DequantizeLinear", ["rq", "ys", "yz"], ["rd"]),
        helper.make_node("GlobalAveragePool", ["rd"], ["g"]),
        helper.make_node("Flatten", ["g"], ["logits"]),
    ], {"xs": np.array(0.02, f32), "xz": np.array(128, np.uint8),
        "wq": rng.integers(-127, 127, (2, 1, 2, 2)).astype(np.int8),
        "ws": np.array([0.01, 0.02], f32), "wz": np.zeros(2, np.int8),
        "ys": np.array(0.05, f32), "yz": np.array(0, np.uint8)}, [1, 3, 3], 2, True)
    out["constant-of-shape"] = model([
        helper.make_node("Shape", ["x"], ["sh"]),
        helper.make_node("ConstantOfShape", ["sh"], ["z"],
                         value=numpy_helper.from_array(np.array([1], f32))),
        helper.make_node("Mul", ["x", "z"], ["xm"]),
        helper.make_node("Gemm", ["xm", "w"], ["logits"], transB=1),
    ], {"w": w(2, 6)}, [6], 2, False)
    out["elementwise"] = model([
        helper.make_node("Tanh", ["x"], ["a"]),
        helper.make_node("HardSwish", ["a"], ["b"]),
        helper.make_node("Div", ["b", "d"], ["c"]),
        helper.make_node("Sub", ["c", "d"], ["e"]),
        helper.make_node("Softmax", ["e"], ["s"], axis=-1),
        helper.make_node("Gemm", ["s", "w"], ["logits"], transB=1),
    ], {"d": np.array([2.0], f32), "w": w(4, 5)}, [5], 4, True, opset=14)
    return out


def png(width, height, colour, depth, pixels, interlace=0):
    """A PNG file: one IHDR, one IDAT of unfiltered rows, IEND."""
    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, interlace)
    chunks = [chunk(b"IHDR", ihdr)]
    if colour == 3:
        chunks.append(chunk(b"PLTE", bytes(range(48))))
    chunks.append(chunk(b"IDAT", zlib.compress(pixels)))
    chunks.append(chunk(b"IEND", b""))
    return b"\x89PNG\r\n\x1a\n" + b"".join(chunks)


def images():
    out = {}
    for p in sorted((MODELS / "samples").glob("*.png"))[:4]:
        out[p.stem] = p.read_bytes()
    # (colour type, bit depth, samples per pixel)
    for colour, depth, spp in [(0, 1, 1), (0, 8, 1), (0, 16, 1), (2, 8, 3), (3, 4, 1),
                               (4, 8, 2), (6, 8, 4), (6, 16, 4)]:
        wd, ht = 5, 3
        row = (wd * spp * depth + 7) // 8
        raw = b"".join(b"\x00" + bytes((x * 37 + y) % 256 for x in range(row))
                       for y in range(ht))
        out[f"png-c{colour}-d{depth}"] = png(wd, ht, colour, depth, raw)
    out["pgm-p5"] = b"P5\n4 3\n255\n" + bytes(range(0, 240, 20))
    out["pgm-p5-16bit"] = b"P5\n2 2\n65535\n" + bytes(range(8))
    out["pgm-p2"] = b"P2\n# ascii\n3 2\n15\n0 3 6\n9 12 15\n"
    out["pbm-p4"] = b"P4\n8 2\n\xaa\x55"
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=pathlib.Path)
    ap.add_argument("--student", type=pathlib.Path, default=ROOT / "target/release/student")
    args = ap.parse_args()

    def put(target, name, data):
        d = args.out / target
        d.mkdir(parents=True, exist_ok=True)
        (d / name).write_bytes(data)

    onnx_files = {p.stem: p.read_bytes() for p in sorted(MODELS.glob("*.onnx"))}
    onnx_files.update({f"tiny-{k}": v for k, v in tiny_models().items()})
    compiled_dir = pathlib.Path(tempfile.mkdtemp(prefix="student-seeds-"))
    for name, data in onnx_files.items():
        put("open_onnx", f"{name}.onnx", data)
        put("compile_onnx", f"{name}.onnx", data)
        src = compiled_dir / f"{name}.onnx"
        src.write_bytes(data)
        if name == "teacher":
            continue  # 3 MB: slow to mutate, and the students cover its ops.
        dst = compiled_dir / f"{name}.student"
        done = subprocess.run([str(args.student), "compile", str(src), "-o", str(dst)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            print(f"{name}: not compiled: {done.stderr.strip()}")
            continue
        compiled = dst.read_bytes()
        put("open_compiled", f"{name}.student", compiled)
        put("open_compiled_rehashed", f"{name}.student", compiled)
        m_len, d_off = struct.unpack_from("<Q", compiled, 32)[0], struct.unpack_from(
            "<Q", compiled, 40)[0]
        put("open_compiled_parts", f"{name}.parts",
            compiled[128:128 + m_len] + b"\x00" + compiled[d_off:])
    shutil.rmtree(compiled_dir)

    for name, data in onnx_files.items():
        m = onnx.load_from_string(data)
        lines = "\n".join(f"{e.key}={e.value}" for e in m.metadata_props)
        graph_in = m.graph.input[0].type.tensor_type.shape.dim
        dims = [1] + [d.dim_value for d in graph_in[1:]]
        classes = m.graph.output[0].type.tensor_type.shape.dim[1].dim_value
        head = bytes([classes - 2, len(dims)] + [min(d, 255) for d in dims])
        put("model_card", f"{name}.card", head + lines.encode())

    for name, data in images().items():
        put("image_decode", f"file-{name}", b"\x00" + data)
    put("image_decode", "raw-gray-28", b"\x01\x00\x1c\x00\x00" + bytes(range(256)) * 3 + bytes(16))
    put("image_decode", "raw-rgba-7", b"\x01\x01\x07\x00\x00" + bytes(range(7 * 5 * 4)))
    put("image_decode", "raw-spec", b"\x02\x03\x04\x05" + struct.pack("<f", 1 / 255)
        + b"\x03" + struct.pack("<3f", 0, 0, 0) + b"\x03" + struct.pack("<3f", 1, 1, 1)
        + b"\x01\x03\x00\x00" + bytes(range(36)))

    # classify: model, call, threshold, top-k, length mode, value mode, special position,
    # hook (behaviour, index, confidence), then value bytes.
    for model_ix in range(5):
        for call in range(5):
            head = bytes([model_ix, call, 1, 200, 3, 0, 0, 0, 0, 0, 0]) + struct.pack("<f", 0.5)
            put("classify", f"m{model_ix}-c{call}", head + bytes(range(0, 256, 3)))
    print(f"seeds written to {args.out}")


if __name__ == "__main__":
    main()
