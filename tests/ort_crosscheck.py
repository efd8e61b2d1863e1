#!/usr/bin/env python3
"""Cross-checks the runtime against onnxruntime on the shipped models.

For each model, the first N Fashion-MNIST test images are written to an IDX file and
classified by `student run --json --top-k 10`; onnxruntime runs the same ONNX file on the
same pixels, scaled as the model card says, and the calibrated probabilities
softmax(logits / T) are compared class by class.

Tolerance: 1e-5 absolute on each probability (both sides compute in f32; the observed
difference is ~1e-7). Top-1 classes must agree on every image.

    python3 tests/ort_crosscheck.py [--student target/release/student] [--count 500]
"""
import argparse
import gzip
import json
import pathlib
import struct
import subprocess
import sys
import tempfile

import numpy as np
import onnxruntime as ort

ROOT = pathlib.Path(__file__).resolve().parent.parent
TOLERANCE = 1e-5


def read_idx(path):
    data = gzip.open(path).read()
    rank = data[3]
    dims = struct.unpack(f">{rank}I", data[4 : 4 + 4 * rank])
    return np.frombuffer(data[4 + 4 * rank :], dtype=np.uint8).reshape(dims)


def card(session):
    meta = session.get_modelmeta().custom_metadata_map
    return {k.removeprefix("student."): json.loads(v) for k, v in meta.items() if k.startswith("student.")}


def check(model, images, idx_path, student_bin):
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    c = card(session)
    spec, temperature = c["input"], c["calibration"]["temperature"]
    x = images.astype(np.float32)[:, None, :, :] * np.float32(spec["scale"])
    x = (x - np.float32(spec["mean"][0])) / np.float32(spec["std"][0])
    logits = session.run(None, {session.get_inputs()[0].name: x})[0].astype(np.float64)
    z = logits / temperature
    z -= z.max(axis=1, keepdims=True)
    expected = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)

    out = subprocess.run(
        [student_bin, "run", str(model), str(idx_path), "--json", "--top-k", "10", "--threshold", "0"],
        check=True, capture_output=True, text=True,
    ).stdout.splitlines()
    ours = np.zeros_like(expected)
    for i, line in enumerate(out):
        for ranked in json.loads(line)["top_k"]:
            ours[i, ranked["index"]] = ranked["probability"]
    worst = float(np.abs(ours - expected).max())
    top1 = int((ours.argmax(1) == expected.argmax(1)).sum())
    ok = len(out) == len(images) and worst <= TOLERANCE and top1 == len(images)
    print(f"{'ok' if ok else 'FAIL'}: {model.name}: {len(out)} images, max |dp| {worst:.2e} "
          f"(tolerance {TOLERANCE:.0e}), top-1 agreement {top1}/{len(images)}")
    return ok


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--student", default=str(ROOT / "target/release/student"))
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    args = parser.parse_args()
    images = read_idx(pathlib.Path(args.data) / "t10k-images-idx3-ubyte.gz")[: args.count]
    with tempfile.TemporaryDirectory() as tmp:
        idx_path = pathlib.Path(tmp) / "images.idx"
        n, h, w = images.shape
        idx_path.write_bytes(struct.pack(">BBBBIII", 0, 0, 8, 3, n, h, w) + images.tobytes())
        models = sorted((ROOT / "models/fashion-mnist").glob("*.onnx"))
        results = [check(m, images, idx_path, args.student) for m in models]
    passed = sum(results)
    print(f"{passed} passed, {len(results) - passed} failed")
    return 0 if results and all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
