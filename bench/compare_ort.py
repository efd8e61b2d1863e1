#!/usr/bin/env python3
"""Side by side: `student` against onnxruntime on the same model files, one thread, in the
same minute, with ratios.

For each model the ONNX file runs in onnxruntime (PyPI, CPU provider, one intra-op and one
inter-op thread, full graph optimization) and its compiled form (`student compile`) runs in
`student bench`; the ONNX file also runs through tract (`student bench` on the .onnx) for
reference. Models: the shipped Fashion-MNIST student (fp32, int8, fp16) and the shipped
teacher as the larger CNN (824k parameters), quantized here to int8 and fp16 by
`student quantize`.

Printed per model and batch size: p50 latency of each, the ratio student / onnxruntime,
cold start (open to first result, against onnxruntime's session creation plus first run),
and peak resident memory over the process before opening. Then fp16 storage against our
own fp32 on the same model and batch size.

Latencies on a shared machine drift by 10% from one minute to the next, so each ratio is
taken between runs made back to back: the two sides alternate for --rounds rounds of
--seconds / --rounds each, every round gives a ratio, and the median round's ratio is
printed (with the median latency of each side).

Cold start is what an app pays for its first model: the median of COLD_RUNS fresh
processes on each side, the library already loaded (onnxruntime imported, `student`'s
binary started) and its one-time setup counted (onnxruntime's first session in a process
pays about 7 ms that later ones do not; `student` detects the CPU's features). Timing
onnxruntime in this long-lived process instead would charge that setup to whichever model
came first and none of the others.

    python3 bench/compare_ort.py [--student target/release/student] [--seconds 2] [--rounds 3]
                                 [--markdown]
"""
import argparse
import datetime
import json
import os
import pathlib
import platform
import subprocess
import sys
import time

import numpy as np
import onnxruntime as ort

ROOT = pathlib.Path(__file__).resolve().parent.parent
MODELS = ROOT / "models/fashion-mnist"
WORK = ROOT / "target/bench"
# Tries per side for the cold-start median.
COLD_RUNS = 3


def student_bench(student, path, batch, seconds, kernels=None):
    cmd = [student, "bench", str(path), "--batch", str(batch), "--seconds", str(seconds), "--json"]
    if kernels:
        cmd += ["--kernels", kernels]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def student_cold_ms(student, path, batch, first):
    """Median open-to-first-result of COLD_RUNS fresh processes; `first` is one already run."""
    tries = [first] + [student_bench(student, path, batch, 0.01)["first_result_ms"]
                       for _ in range(COLD_RUNS - 1)]
    return float(np.median(tries))


def ort_session(path):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


# One cold start of onnxruntime in a fresh process: session creation and the first run,
# after the imports. Prints milliseconds.
ORT_COLD = """
import sys, time
import numpy as np
import onnxruntime as ort
path, batch = sys.argv[1], int(sys.argv[2])
x = np.random.default_rng(0).random((batch, 1, 28, 28), dtype=np.float32)
options = ort.SessionOptions()
options.intra_op_num_threads = 1
options.inter_op_num_threads = 1
options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
start = time.perf_counter()
session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
session.run(None, {session.get_inputs()[0].name: x})
print((time.perf_counter() - start) * 1e3)
"""


def ort_cold_ms(path, batch):
    """Median of COLD_RUNS fresh processes: session creation + first run, in ms."""
    tries = [float(subprocess.run([sys.executable, "-c", ORT_COLD, str(path), str(batch)], check=True,
                                  capture_output=True, text=True).stdout) for _ in range(COLD_RUNS)]
    return float(np.median(tries))


class OrtRunner:
    """An onnxruntime session on one model and batch size, warmed up."""

    def __init__(self, path, batch):
        self.x = np.random.default_rng(0).random((batch, 1, 28, 28), dtype=np.float32)
        self.session = ort_session(path)
        self.name = self.session.get_inputs()[0].name
        for _ in range(10):
            self.session.run(None, {self.name: self.x})

    def p50_us(self, seconds):
        times = []
        begin = time.perf_counter()
        while time.perf_counter() - begin < seconds or len(times) < 10:
            t = time.perf_counter()
            self.session.run(None, {self.name: self.x})
            times.append(time.perf_counter() - t)
        return float(np.median(times) * 1e6)


def alternate(rounds, seconds, first, second):
    """Runs `first(s)` and `second(s)` (each returns a p50 in us) one after the other for
    `rounds` rounds of `seconds / rounds`; returns the median of each side and the median
    round's ratio second / first."""
    a, b = [], []
    for _ in range(rounds):
        a.append(first(seconds / rounds))
        b.append(second(seconds / rounds))
    ratios = [y / x for x, y in zip(a, b)]
    return float(np.median(a)), float(np.median(b)), float(np.median(ratios))


def prepare(student):
    """The ONNX files to compare, making the teacher's int8 and fp16 copies if missing."""
    WORK.mkdir(parents=True, exist_ok=True)
    models = [("student fp32", MODELS / "student.onnx"), ("student int8", MODELS / "student-int8.onnx"),
              ("student fp16", MODELS / "student-fp16.onnx"), ("teacher fp32", MODELS / "teacher.onnx")]
    for precision in ("int8", "fp16"):
        out = WORK / f"teacher-{precision}.onnx"
        if not out.exists():
            print(f"making {out.name} with student quantize", file=sys.stderr)
            # The teacher's card asks for a target that compares with a teacher; it has none.
            subprocess.run([student, "quantize", str(MODELS / "teacher.onnx"), "--precision", precision,
                            "--target", "max_escalation=0.1", "-o", str(out)], check=True,
                           capture_output=True)
        models.append((f"teacher {precision}", out))
    compiled = []
    for label, onnx_path in models:
        target = WORK / (onnx_path.stem + ".student")
        subprocess.run([student, "compile", str(onnx_path), "-o", str(target)], check=True,
                       capture_output=True)
        compiled.append((label, onnx_path, target))
    return compiled


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--student", default=str(ROOT / "target/release/student"))
    parser.add_argument("--seconds", type=float, default=2.0, help="measuring time per side")
    parser.add_argument("--rounds", type=int, default=3, help="alternations per ratio")
    parser.add_argument("--batches", default="1,32")
    parser.add_argument("--markdown", action="store_true", help="print the table for bench/RESULTS.md")
    args = parser.parse_args()
    models = prepare(args.student)
    rows = []
    for label, onnx_path, compiled in models:
        for batch in [int(b) for b in args.batches.split(",")]:
            ort_cold = ort_cold_ms(onnx_path, batch)
            runner = OrtRunner(onnx_path, batch)
            runs = []

            def ours_p50(seconds):
                runs.append(student_bench(args.student, compiled, batch, seconds))
                return runs[-1]["p50_us"]

            ort_p50, our_p50, ratio = alternate(args.rounds, args.seconds, runner.p50_us, ours_p50)
            ours = runs[0]
            ours["first_result_ms"] = student_cold_ms(args.student, compiled, batch, ours["first_result_ms"])
            tract = student_bench(args.student, onnx_path, batch, args.seconds)
            rows.append({
                "model": label, "batch": batch, "bytes": ours["file_bytes"], "kernel": ours["kernel"],
                "ort_p50_us": ort_p50, "student_p50_us": our_p50, "tract_p50_us": tract["p50_us"],
                "ratio": ratio,
                "ort_cold_ms": ort_cold, "student_cold_ms": ours["first_result_ms"],
                "cold_ratio": ours["first_result_ms"] / ort_cold,
                "rss_over_open_mb": ours["peak_rss_mb"] - ours["peak_rss_before_open_mb"],
            })
            r = rows[-1]
            print(f"{label:13} batch {batch:3}: onnxruntime {ort_p50:9.1f} us, student {r['student_p50_us']:9.1f} us "
                  f"({r['ratio']:.2f}x), tract {r['tract_p50_us']:9.1f} us; cold start {r['student_cold_ms']:.2f} ms "
                  f"vs {ort_cold:.2f} ms ({r['cold_ratio']:.2f}x); peak RSS +{r['rss_over_open_mb']:.1f} MB "
                  f"for a {r['bytes'] / 1e6:.2f} MB file", flush=True)
    # fp16 storage against our own fp32: the two compiled files alternate.
    files = {label: compiled for label, _, compiled in models}
    fp16_rows = []
    for label, compiled in files.items():
        family, precision = label.split()
        base = files.get(f"{family} fp32")
        if precision != "fp16" or base is None:
            continue
        for batch in [int(b) for b in args.batches.split(",")]:
            def p50(path):
                return lambda seconds: student_bench(args.student, path, batch, seconds)["p50_us"]
            f32_us, f16_us, ratio = alternate(args.rounds, args.seconds, p50(base), p50(compiled))
            fp16_rows.append((family, batch, f32_us, f16_us, ratio))
            print(f"{family} batch {batch}: fp16 {f16_us:.1f} us / our fp32 {f32_us:.1f} us = {ratio:.2f}x",
                  flush=True)
    if args.markdown:
        print()
        print(f"Measured {datetime.date.today()} on {platform.machine()} ({cpu_name()}), one thread, "
              f"onnxruntime {ort.__version__}, kernels `{rows[0]['kernel']}`; "
              f"`python3 bench/compare_ort.py --seconds {args.seconds:g} --rounds {args.rounds} --markdown`.")
        print()
        print("| model | batch | file bytes | onnxruntime p50 (us) | student p50 (us) | student / onnxruntime "
              "| tract p50 (us) | cold start student / onnxruntime (ms) | peak RSS over open (MB) |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for r in rows:
            print(f"| {r['model']} | {r['batch']} | {r['bytes']:,} | {r['ort_p50_us']:.1f} | {r['student_p50_us']:.1f} "
                  f"| **{r['ratio']:.2f}x** | {r['tract_p50_us']:.1f} | {r['student_cold_ms']:.2f} / "
                  f"{r['ort_cold_ms']:.2f} ({r['cold_ratio']:.2f}x) | {r['rss_over_open_mb']:.1f} |")
        print()
        print("| model | batch | our fp32 p50 (us) | fp16 storage p50 (us) | fp16 / fp32 |")
        print("| --- | ---: | ---: | ---: | ---: |")
        for family, batch, f32_us, f16_us, ratio in fp16_rows:
            print(f"| {family} | {batch} | {f32_us:.1f} | {f16_us:.1f} | **{ratio:.2f}x** |")
    return 0


def cpu_name():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


if __name__ == "__main__":
    sys.exit(main())
