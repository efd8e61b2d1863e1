#!/usr/bin/env python3
"""Cross-checks the runtime against onnxruntime on the shipped models and on quantized
students exported by other tools.

For each model, the first N Fashion-MNIST test images are written to an IDX file and
classified by `student run --json --top-k 10`; onnxruntime runs the same ONNX file on the
same pixels, scaled as the model card says, and the calibrated probabilities
softmax(logits / T) are compared class by class.

Tolerances, by the precision in the model card:
- fp32 and fp16 (fp16 weights are widened to f32 at load, so both sides compute in f32):
  every probability within 1e-5 of onnxruntime's, top-1 equal on every image.
- int8 (QDQ): onnxruntime runs integer kernels, our runtime evaluates the QDQ graph in f32.
  Both round each requantized activation to the nearest step, and where a value falls
  within float noise of a half step they can round apart by one step. So: at least 99% of
  images with every probability within 1e-5, every probability within 0.05, and top-1
  equal on at least 99.5% of images. (onnxruntime's own integer kernels and its own f32
  evaluation of the same file differ the same way.)

Every file is also compiled by `student compile` and its `.student` form checked the same
way. Against onnxruntime's integer kernels the compiled int8 student agrees to within
float rounding (both accumulate exactly in i32).

Then, on models laid out the way other exporters write them (tests/foreign_models.py): each
is quantized by `student quantize` (int8 and fp16) and cross-checked the same way, its
agreement with the float original is measured in onnxruntime, and files the quantizer must
refuse (already quantized, opset 11) must fail with a one-line error.

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
import onnx
import onnxruntime as ort

ROOT = pathlib.Path(__file__).resolve().parent.parent
TOLERANCE = 1e-5
INT8_WORST = 0.05


def read_idx(path):
    data = gzip.open(path).read()
    rank = data[3]
    dims = struct.unpack(f">{rank}I", data[4 : 4 + 4 * rank])
    return np.frombuffer(data[4 + 4 * rank :], dtype=np.uint8).reshape(dims)


def card(session):
    meta = session.get_modelmeta().custom_metadata_map
    return {k.removeprefix("student."): json.loads(v) for k, v in meta.items() if k.startswith("student.")}


def ort_probabilities(model, x, temperature, optimize):
    """softmax(logits / T) from onnxruntime; `optimize=False` evaluates the graph as written."""
    options = ort.SessionOptions()
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    if session.get_inputs()[0].shape[0] == 1:  # a graph with its batch fixed to 1
        logits = np.concatenate([session.run(None, {name: x[i:i + 1]})[0] for i in range(len(x))])
    else:
        logits = session.run(None, {name: x})[0]
    z = logits.astype(np.float64) / temperature
    z -= z.max(axis=1, keepdims=True)
    return np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)


def check(model, images, idx_path, student_bin, tmp, onnx_too=True, strict_modes=None,
          tolerance=None):
    """Compares our probabilities with onnxruntime's, for the ONNX file (unless `onnx_too`
    is false) and for it compiled by `student compile` (with `--tolerance`, when given);
    int8 files against both of onnxruntime's modes, or only those named in `strict_modes`
    (the others are printed)."""
    c = card(ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]))
    compiled = pathlib.Path(tmp) / (model.stem + ".student")
    extra = [] if tolerance is None else ["--tolerance", str(tolerance)]
    p = subprocess.run([student_bin, "compile", str(model), "-o", str(compiled)] + extra,
                       capture_output=True, text=True)
    if p.returncode != 0:
        print(f"FAIL: student compile {model.name}: {p.stderr.strip()}")
        return False
    ok = True
    for path in ((model, compiled) if onnx_too else (compiled,)):
        ok = compare(model, path, c, images, idx_path, student_bin, strict_modes) and ok
    return ok


def compare(model, path, c, images, idx_path, student_bin, strict_modes=None):
    """Runs `path` (the ONNX file or its compiled form) with `student run` against
    onnxruntime on `model`."""
    # Card-less files run on the runtime's defaults: pixels / 255, temperature 1.
    spec = c.get("input", {"scale": 1 / 255, "mean": [0.0], "std": [1.0]})
    temperature = c.get("calibration", {}).get("temperature", 1.0)
    x = images.astype(np.float32)[:, None, :, :] * np.float32(spec["scale"])
    x = (x - np.float32(spec["mean"][0])) / np.float32(spec["std"][0])
    out = subprocess.run(
        [student_bin, "run", str(path), str(idx_path), "--json", "--top-k", "1000", "--threshold", "0"],
        check=True, capture_output=True, text=True,
    ).stdout.splitlines()
    n = len(images)
    classes = len(json.loads(out[0])["top_k"]) if out else 1
    ours = np.zeros((n, classes))
    for i, line in enumerate(out):
        for ranked in json.loads(line)["top_k"]:
            ours[i, ranked["index"]] = ranked["probability"]
    precision = c.get("quantization", {}).get("precision", "fp32")
    if precision == "fp32" and "QuantizeLinear" in {n.op_type for n in onnx.load(str(model)).graph.node}:
        precision = "int8"
    modes = [("integer kernels", True), ("QDQ as written", False)] if precision == "int8" else [("", True)]
    ok = len(out) == n
    for mode, optimize in modes:
        expected = ort_probabilities(model, x, temperature, optimize)
        per_image = np.abs(ours - expected).max(axis=1)
        worst = float(per_image.max())
        close = int((per_image <= TOLERANCE).sum())
        top1 = int((ours.argmax(1) == expected.argmax(1)).sum())
        if precision == "int8":
            good = close >= 0.99 * n and worst <= INT8_WORST and top1 >= 0.995 * n
            rule = f"int8 vs {mode}: >=99% within {TOLERANCE:.0e}, all within {INT8_WORST}, top-1 >=99.5%"
        else:
            good = close == n and top1 == n
            rule = f"{precision}: all within {TOLERANCE:.0e}, top-1 all"
        if strict_modes is not None and mode not in strict_modes:
            other = ort_probabilities(model, x, temperature, not optimize)
            own = float(np.abs(expected - other).max())
            own_top1 = int((expected.argmax(1) == other.argmax(1)).sum())
            print(f"info: {path.name}: {len(out)} images, {close} within {TOLERANCE:.0e}, max |dp| "
                  f"{worst:.2e}, top-1 agreement {top1}/{n} against onnxruntime's {mode}, which "
                  f"itself departs from its QDQ-as-written result by up to {own:.2e} (top-1 "
                  f"{own_top1}/{n})")
            continue
        print(f"{'ok' if good and ok else 'FAIL'}: {path.name}: {len(out)} images, {close} within "
              f"{TOLERANCE:.0e}, max |dp| {worst:.2e}, top-1 agreement {top1}/{n} ({rule})")
        ok = ok and good
    return ok


def write_idx(path, array):
    """Writes an uncompressed IDX file of unsigned bytes."""
    header = struct.pack(">BBBB", 0, 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def quantize(student_bin, model, precision, out, calib):
    """Runs `student quantize`; returns (exit code, stderr)."""
    p = subprocess.run(
        [student_bin, "quantize", str(model), "--precision", precision, "-o", str(out),
         "--images", str(calib[0]), "--labels", str(calib[1]),
         "--target", "max_escalation=0.1", "--samples", "500"],
        capture_output=True, text=True,
    )
    # Only the error line: card-less models also log the defaults they run on.
    errors = [line for line in p.stderr.splitlines() if not line.startswith("[WARN ]")]
    return p.returncode, "\n".join(errors).strip()


def float_agreement(original, quantized, images):
    """Top-1 agreement of two files in onnxruntime, on pixels scaled by 1/255 (card-less)."""
    x = images.astype(np.float32)[:, None, :, :] / np.float32(255)
    tops = []
    for m in (original, quantized):
        s = ort.InferenceSession(str(m), providers=["CPUExecutionProvider"])
        tops.append(np.concatenate([s.run(None, {s.get_inputs()[0].name: x[i:i + 1]})[0].argmax(1)
                                    for i in range(len(x))]))
    return float((tops[0] == tops[1]).mean())


def foreign(tmp, images, idx_path, args):
    """Quantizes models written the way other exporters write them, and cross-checks them."""
    out = tmp / "foreign"
    subprocess.run([sys.executable, str(ROOT / "tests/foreign_models.py"), str(out),
                    "--data", args.data], check=True)
    # Calibration data: the validation split (the last 5,000 training images).
    train = read_idx(pathlib.Path(args.data) / "train-images-idx3-ubyte.gz")[-5000:]
    labels = read_idx(pathlib.Path(args.data) / "train-labels-idx1-ubyte.gz")[-5000:]
    calib = (tmp / "calib-images.idx", tmp / "calib-labels.idx")
    write_idx(calib[0], train)
    write_idx(calib[1], labels)
    results = []
    # The torchstyle student normalizes its pixels / 255 input itself, so it is the shipped
    # student's function and must meet the same 99% goal. The random-weight ops-zoo has
    # logits within about one unit of each other, so int8 rounding flips more of them
    # (98.4% agree on the 500 images here).
    for name, min_agreement in [("student-torchstyle", 0.99), ("ops-zoo", 0.95)]:
        results.append(check(out / f"{name}.onnx", images, idx_path, args.student, tmp))
        for precision in ["int8", "fp16"]:
            q = out / f"{name}-{precision}.onnx"
            code, err = quantize(args.student, out / f"{name}.onnx", precision, q, calib)
            if code != 0:
                print(f"FAIL: student quantize {name}.onnx --precision {precision}: {err}")
                results.append(False)
                continue
            results.append(check(q, images, idx_path, args.student, tmp))
            agree = float_agreement(out / f"{name}.onnx", q, images)
            ok = agree >= (min_agreement if precision == "int8" else 0.999)
            print(f"{'ok' if ok else 'FAIL'}: {q.name}: top-1 agreement with its float original "
                  f"in onnxruntime {agree:.2%}")
            results.append(ok)
    # A file quantized by onnxruntime's own quantize_static (int8 activations, a quantized
    # Softmax) compiles and computes exactly what its QDQ graph specifies. tract's plan of
    # the .onnx gets the quantized Softmax wrong, so `student run` refuses the .onnx and
    # `student compile` writes the file without its check against tract, saying so; the
    # compiled file is checked here. onnxruntime's own integer kernels depart from the QDQ
    # semantics on this model (its integer Softmax and Mul), so that comparison is printed,
    # not required.
    p = subprocess.run([args.student, "run", str(out / "already-int8.onnx"), str(idx_path)],
                       capture_output=True, text=True)
    ok = p.returncode == 1 and "a Softmax whose output is quantized is not supported" in p.stderr
    print(f"{'ok' if ok else 'FAIL'}: already-int8.onnx refused on the ONNX path: "
          f"{p.stderr.strip().splitlines()[-1] if p.stderr.strip() else p.returncode}")
    results.append(ok)
    compiled = tmp / "already-int8.student"
    p = subprocess.run([args.student, "compile", str(out / "already-int8.onnx"), "-o",
                        str(compiled)], capture_output=True, text=True)
    ok = p.returncode == 0 and "check   not run" in p.stdout and compiled.exists()
    print(f"{'ok' if ok else 'FAIL'}: already-int8.onnx compiled without the check against "
          f"tract: {(p.stdout + p.stderr).strip().splitlines()[-1:]}")
    results.append(ok)
    results.append(check(out / "already-int8.onnx", images, idx_path, args.student, tmp,
                         onnx_too=False, strict_modes=["QDQ as written"]))
    for name, expected in [("already-int8", "already quantized"), ("opset11", "opset 11 is too old")]:
        code, err = quantize(args.student, out / f"{name}.onnx", "int8", out / "refused.onnx", calib)
        ok = code == 1 and expected in err and err.count("\n") == 0 and not (out / "refused.onnx").exists()
        print(f"{'ok' if ok else 'FAIL'}: {name}.onnx refused: {err}")
        results.append(ok)
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--student", default=str(ROOT / "target/release/student"))
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--skip-foreign", action="store_true",
                        help="check only the models in --models")
    parser.add_argument("--models", default=str(ROOT / "models/fashion-mnist"),
                        help="folder whose *.onnx files are checked")
    args = parser.parse_args()
    images = read_idx(pathlib.Path(args.data) / "t10k-images-idx3-ubyte.gz")[: args.count]
    with tempfile.TemporaryDirectory() as tmp:
        idx_path = pathlib.Path(tmp) / "images.idx"
        n, h, w = images.shape
        idx_path.write_bytes(struct.pack(">BBBBIII", 0, 0, 8, 3, n, h, w) + images.tobytes())
        models = sorted(pathlib.Path(args.models).glob("*.onnx"))
        results = [check(m, images, idx_path, args.student, tmp) for m in models]
        if not args.skip_foreign:
            results += foreign(pathlib.Path(tmp), images, idx_path, args)
    passed = sum(results)
    print(f"{passed} passed, {len(results) - passed} failed")
    return 0 if results and all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
