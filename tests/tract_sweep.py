#!/usr/bin/env python3
"""Varies the quantities of the battery's cases and compares `student run` (default
options, so the checked-forms table applies) with onnxruntime on every variant that
onnxruntime runs.

The table (`runtime/src/tract_checked.rs`) admits a quantity attribute (`pads`, `axis`,
`alpha`) by its name, at any value, after the battery (tests/tract_forms.py) compared
one or a few values of it. This sweep checks the values in between and the combinations:
each variant takes an agreeing case of the battery and changes one to three of
- an integer or float attribute of one of its nodes (the Conv before the operator too):
  a neighbour, the negation, zero, a doubling, a small random value, a list one longer
  or shorter;
- a small integer or float constant (Slice bounds, Pad amounts, Reshape shapes, Clip
  bounds), in the same ways;
- an attribute the node lacks, grafted with a value another case of the same operator
  set (`ceil_mode` and `count_include_pad` together, `dilations` with `auto_pad`).

A variant onnxruntime cannot build or run is invalid and skipped, as is one where
onnxruntime's answer is not finite (its LayerNormalization and MeanVarianceNormalization
give NaN on large values), or where a Cast meets a value out of its target's range, which
ONNX leaves undefined. onnxruntime builds and runs the variants in a worker process,
since some kill it (an integer division by a stride of zero) or run for minutes; a new
worker takes over, and the variant is skipped.

A variant student refuses (non-zero exit, a one-line error) passes: the table does not
list its form, or the runtime's checks refuse it. One it runs with exit 0 passes when its
answer agrees with onnxruntime's: the same top-1 class on every image, every probability
within the case's tolerance (ROUNDING for a graph with integer quantized operators, whose
requantization the two runtimes round by different arithmetic), or within what f32
arithmetic in another order allows on large logits (LOGIT_PRECISION of the logits' span,
the same top-1 class). Where they disagree beyond that, the
ONNX reference evaluator (`onnx.reference`) decides: if student agrees with it, the
variant passes and is printed as onnxruntime's departure. Any other disagreement, and any
variant that kills student (a signal, a panic), fails: it is printed with its changes,
saved under --keep, and the exit status is 1.

    python tests/tract_sweep.py [--student PATH] [--count N] [--seed S] [--only OP,OP]
                                [--keep DIR] [-v]

The same seed and count give the same variants. The last line is `N passed, M failed`.
"""
import argparse
import concurrent.futures
import dataclasses
import multiprocessing
import pathlib
import sys
import tempfile
import time

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnx.reference import ReferenceEvaluator

from tract_cases.graph import AGREE, Net
from tract_cases.table import CASES
from tract_forms import (CHOICES, ROOT, build_model, card, compare, images, inputs,
                         ort_outputs, run_student, softmax_rows)

# The largest |probability difference| of a graph with integer quantized operators: a
# product that lands next to half a step rounds one way in onnxruntime's float arithmetic
# and the other in tract's fixed point; one step of the output moves the probabilities by
# about 1e-3 here. The top-1 class must still agree on every image.
ROUNDING = 5e-3
QUANTIZED = {"QuantizeLinear", "QLinearConv", "QLinearMatMul", "DynamicQuantizeLinear",
             "MatMulInteger", "ConvInteger"}
# The error a logit may carry relative to its image's logits' span (largest minus
# smallest) from f32 arithmetic in another order. A sum of n f32 values carries up to
# n * 6e-8 of its magnitude (4e-5 for the 676 values of a feature map); the sweep saw
# 5e-7, where tract's Einsum summed 676 values in another order than onnxruntime.
LOGIT_PRECISION = 1e-5
# A variant onnxruntime has not built and run in this time (a Resize to a huge size, say)
# is skipped, and its worker replaced.
WORKER_SECONDS = 60
# Constants this small are quantities (bounds, amounts, shapes, axes), not weights.
SMALL = 8
# Attributes that are not quantities though numeric: the choices tract_forms counts by
# value (a Cast target), and the ones that carry the weights of ai.onnx.ml operators.
NOT_QUANTITIES = {name for _, _, name in CHOICES} | {
    "coefficients", "intercepts", "class_weights", "nodes_values", "base_values",
    "nodes_treeids", "nodes_nodeids", "nodes_featureids", "nodes_truenodeids",
    "nodes_falsenodeids", "class_treeids", "class_nodeids", "class_ids",
    "classlabels_int64s", "classlabels_ints", "nodes_hitrates", "nodes_missing_value_tracks_true",
}
NUMERIC = (onnx.AttributeProto.INT, onnx.AttributeProto.INTS, onnx.AttributeProto.FLOAT,
           onnx.AttributeProto.FLOATS)


def vary_int(value, rng):
    """A nearby or telling integer: a neighbour, the negation, zero, a doubling, or a
    small random one."""
    choices = [value + 1, value - 1, value + 2, -value, 0, -1, 2 * value,
               int(rng.integers(-4, 6))]
    return int(choices[rng.integers(len(choices))])


def vary_float(value, rng):
    choices = [-value, 0.0, 2 * value, value / 2, value + 1.0, 1e-3, -2.5, 10.0,
               float(rng.normal())]
    return float(choices[rng.integers(len(choices))])


def vary_list(values, rng, vary):
    """One element varied, or the list one longer or shorter."""
    values = list(values)
    roll = rng.random()
    if roll < 0.15 and len(values) > 1:
        del values[rng.integers(len(values))]
    elif roll < 0.3 and values:
        values.insert(int(rng.integers(len(values) + 1)), values[rng.integers(len(values))])
    elif values:
        i = int(rng.integers(len(values)))
        values[i] = vary(values[i], rng)
    return values


def quantities(nodes):
    """(node, attribute) pairs whose value is a quantity."""
    return [(n, a) for n in nodes for a in n.attribute
            if a.type in NUMERIC and a.name not in NOT_QUANTITIES]


def small_constants(initializers):
    """Integer and float initializers of at most SMALL elements."""
    return [t for t in initializers
            if 0 < int(np.prod(t.dims, dtype=np.int64)) <= SMALL
            and t.data_type in (onnx.TensorProto.INT64, onnx.TensorProto.INT32,
                                onnx.TensorProto.FLOAT)]


def change_attribute(node, attribute, rng):
    value = helper.get_attribute_value(attribute)
    if attribute.type == onnx.AttributeProto.INT:
        new = vary_int(value, rng)
    elif attribute.type == onnx.AttributeProto.FLOAT:
        new = vary_float(value, rng)
    elif attribute.type == onnx.AttributeProto.INTS:
        new = vary_list(value, rng, vary_int)
    else:
        new = vary_list(value, rng, vary_float)
    set_attribute(node, attribute.name, new)
    return f"{node.op_type}.{attribute.name}: {fmt(value)} -> {fmt(new)}"


def set_attribute(node, name, value):
    kept = [a for a in node.attribute if a.name != name]
    del node.attribute[:]
    node.attribute.extend(kept + [helper.make_attribute(name, value)])


def change_constant(tensor, rng):
    array = numpy_helper.to_array(tensor)
    flat = array.reshape(-1).tolist()
    if array.dtype.kind == "f":
        new = vary_list(flat, rng, vary_float) if array.ndim else [vary_float(flat[0], rng)]
    else:
        new = vary_list(flat, rng, vary_int) if array.ndim else [vary_int(flat[0], rng)]
    shape = array.shape if len(new) == len(flat) else (len(new),)
    replaced = numpy_helper.from_array(np.asarray(new, array.dtype).reshape(shape), tensor.name)
    tensor.CopyFrom(replaced)
    return f"constant {tensor.name}: {fmt(flat)} -> {fmt(new)}"


def graft(node, pool, rng):
    """Adds an attribute that another case of the operator set, with its value."""
    present = {a.name for a in node.attribute}
    options = [(name, values) for (op, name), values in pool.items()
               if op == node.op_type and name not in present]
    if not options:
        return None
    name, values = options[rng.integers(len(options))]
    value = values[rng.integers(len(values))]
    set_attribute(node, name, value)
    return f"{node.op_type}.{name}: (absent) -> {fmt(value)}"


def fmt(value):
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return "[" + ", ".join(fmt(v) for v in value) + "]"
    return str(value)


def mutate(net, rng, pool):
    """One to three changes to the case's nodes and small constants; the descriptions."""
    changes = []
    for _ in range(int(rng.integers(1, 4))):
        roll = rng.random()
        attrs = quantities(net.nodes)
        constants = small_constants(net.initializers)
        if roll < 0.5 and attrs:
            node, attribute = attrs[rng.integers(len(attrs))]
            changes.append(change_attribute(node, attribute, rng))
        elif roll < 0.75 and constants:
            changes.append(change_constant(constants[rng.integers(len(constants))], rng))
        else:
            node = net.nodes[rng.integers(len(net.nodes))]
            grafted = graft(node, pool, rng)
            if grafted:
                changes.append(grafted)
    return changes


def attribute_pool(cases):
    """{(op, attribute name): values} over the nodes of every case's graph."""
    pool = {}
    for case in cases:
        net = Net(seed=sum(map(ord, case.name)))
        try:
            case.build(net)
        except Exception:  # a case that cannot build is tract_forms.py's to report
            continue
        for node, attribute in quantities(net.nodes):
            values = pool.setdefault((node.op_type, attribute.name), [])
            value = helper.get_attribute_value(attribute)
            if value not in values:
                values.append(value)
    return pool


def variant(case, seed, pool):
    """The case with its build followed by changes drawn from `seed`; the changes are
    filled in when the model is built."""
    changes = []

    def build(net):
        out = case.build(net)
        changes.extend(mutate(net, np.random.default_rng(seed), pool))
        return out

    return dataclasses.replace(case, build=build), changes


def agreeing_cases(only):
    return [c for c in CASES if c.expect == AGREE and (only is None or c.op in only)]


# The worker's state: the cases, the attribute pool, the card and the images' pixels.
WORKER = {}


def start_worker(only, props, pixels):
    WORKER.update(cases=agreeing_cases(only), pool=attribute_pool(CASES), props=props,
                  pixels=pixels)


def reference(index, seed):
    """In the worker: variant `seed` of case `index`, built and run by onnxruntime.
    (serialized model, changes, probabilities), or (None, changes, why) if invalid."""
    case = WORKER["cases"][index]
    varied, changes = variant(case, seed, WORKER["pool"])
    try:
        model = build_model(varied, WORKER["props"])
        logits = ort_outputs(model, WORKER["pixels"], WORKER["props"])[0][:, 0]
        expected = softmax_rows(logits.astype(np.float64))
        undefined = out_of_range_casts(model, WORKER["pixels"], WORKER["props"])
    except Exception as e:  # onnx's checker and onnxruntime raise several types
        return None, changes, str(e).splitlines()[0][:200] if str(e) else type(e).__name__
    if undefined:
        return None, changes, f"undefined in ONNX: {undefined}"
    if not np.isfinite(expected).all():
        return None, changes, "onnxruntime's answer is not finite"
    return model.SerializeToString(), changes, (expected, np.ptp(logits, axis=1))


def out_of_range_casts(model, pixels, props):
    """The first Cast from floats to integers that meets a value out of the target's
    range (or not a number) on these images, which ONNX leaves undefined; None if none
    does. onnxruntime wraps such values and tract saturates them: neither is wrong."""
    targets = {}
    for node in model.graph.node:
        to = next((a.i for a in node.attribute if a.name == "to"), None)
        if node.op_type == "Cast" and to is not None:
            dtype = helper.tensor_dtype_to_np_dtype(to)
            if dtype.kind in "iu":
                targets[node.input[0]] = dtype
    if not targets:
        return None
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.output[:]
    probe.graph.output.extend(helper.make_tensor_value_info(name, 0, None) for name in targets)
    values = ort_outputs(probe, pixels, props)
    for (name, dtype), value in zip(targets.items(), values):
        if value.dtype.kind != "f":
            continue
        info = np.iinfo(dtype)
        if not np.isfinite(value).all() or value.min() < info.min or value.max() > info.max:
            return f"Cast of {name} to {dtype.name}: values in [{value.min():.4g}, " \
                   f"{value.max():.4g}]"
    return None


def reference_probabilities(model, pixels, props):
    """softmax(logits) from the ONNX reference evaluator, one row per image."""
    evaluator = ReferenceEvaluator(model)
    z = [evaluator.run(None, {"x": x})[0][0] for x in inputs(pixels, props)]
    return softmax_rows(np.array(z, np.float64))


def stop(worker):
    """Ends the worker process, also in the middle of a variant."""
    for process in list(getattr(worker, "_processes", {}).values()):
        process.kill()
    worker.shutdown(wait=True, cancel_futures=True)


def within_precision(lines, expected, spans, case):
    """Whether student's answer differs from onnxruntime's by no more than f32 arithmetic
    allows on large logits: the same top-1 class on every image, and each image's
    probabilities within the case's tolerance or half of LOGIT_PRECISION times its
    logits' span, whichever is larger (a logit off by e moves a probability by at most
    e / 2). A varied bias can make logits of a thousand, where summing 676 values in
    another order moves them by 1e-3."""
    allowed = np.maximum(case.tolerance, 0.5 * LOGIT_PRECISION * spans)
    return compare(case, lines, expected, allowed).status == "agree"


def crashed(outcome):
    """student died of a signal or a panic rather than refusing."""
    return outcome.status == "refused" and (outcome.code < 0 or outcome.code == 101)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--student", default=str(ROOT / "target/release/student"))
    parser.add_argument("--count", type=int, default=1500, help="variants to try")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--only", help="comma-separated operators: only their cases")
    parser.add_argument("--keep", metavar="DIR", help="save failing variants here")
    parser.add_argument("-v", "--verbose", action="store_true", help="a line for every variant")
    args = parser.parse_args()
    only = set(args.only.split(",")) if args.only else None
    cases = agreeing_cases(only)
    if not cases:
        sys.exit("error: no agreeing case of those operators")
    props = card()
    keep = pathlib.Path(args.keep) if args.keep else None
    if keep:
        keep.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    counts = {"invalid": 0, "onnxruntime crashed": 0, "onnxruntime took too long": 0,
              "refused": 0, "agree": 0, "within f32 precision": 0, "onnxruntime departs": 0}
    failures = []
    rng = np.random.default_rng(args.seed)
    spawn = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp:
        imgs = images(tmp)
        setup = (only, props, [p for _, p in imgs])

        def new_worker():
            return concurrent.futures.ProcessPoolExecutor(1, spawn, start_worker, setup)

        worker = new_worker()
        for i in range(args.count):
            index = int(rng.integers(len(cases)))
            case, seed = cases[index], int(rng.integers(2**31))
            try:
                job = worker.submit(reference, index, seed)
                serialized, changes, answer = job.result(timeout=WORKER_SECONDS)
            except (concurrent.futures.process.BrokenProcessPool, TimeoutError) as e:
                what = "crashed" if isinstance(e, concurrent.futures.process.BrokenProcessPool) \
                    else "took too long"
                counts[f"onnxruntime {what}"] += 1
                if args.verbose:
                    print(f"onnxruntime {what}: #{i} {case.name} (seed {seed})", flush=True)
                stop(worker)
                worker = new_worker()
                continue
            label = f"#{i} {case.name} (seed {seed}): {'; '.join(changes) or 'no change'}"
            if serialized is None:
                counts["invalid"] += 1
                if args.verbose:
                    print(f"invalid: {label}: {answer}", flush=True)
                continue
            expected, spans = answer
            model = onnx.load_from_string(serialized)
            path = pathlib.Path(tmp) / "variant.onnx"
            onnx.save(model, path)
            outcome, lines = run_student(path, imgs, args.student, [])
            if any(n.op_type in QUANTIZED for n in model.graph.node):
                case = dataclasses.replace(case, tolerance=max(case.tolerance, ROUNDING))
            outcome = outcome or compare(case, lines, expected)
            if outcome.status == "disagree" and within_precision(lines, expected, spans, case):
                counts["within f32 precision"] += 1
                if args.verbose:
                    print(f"within f32 precision: {label}: {outcome.detail}", flush=True)
                continue
            if outcome.status == "disagree":
                # onnxruntime is the reference because it is fast; the ONNX definition is
                # what counts. Where student agrees with the ONNX reference evaluator,
                # onnxruntime is the one that departs.
                try:
                    defined = reference_probabilities(model, [p for _, p in imgs], props)
                except Exception:  # the reference evaluator lacks some operators
                    defined = None
                if defined is not None and compare(case, lines, defined).status == "agree":
                    counts["onnxruntime departs"] += 1
                    print(f"note: {label}: onnxruntime {outcome.detail}; student agrees with "
                          f"the ONNX reference evaluator", flush=True)
                    continue
            if outcome.status == "disagree" or crashed(outcome):
                failures.append(f"FAIL: {label}: {outcome.status}: {outcome.detail}")
                print(failures[-1], flush=True)
                if keep:
                    onnx.save(model, keep / f"variant-{i}-{case.name}.onnx")
                continue
            counts[outcome.status] += 1
            if args.verbose:
                print(f"{outcome.status}: {label}: {outcome.detail}", flush=True)
        stop(worker)
    ran = (counts["agree"] + counts["refused"] + counts["within f32 precision"]
           + counts["onnxruntime departs"] + len(failures))
    print(f"{args.count} variants in {time.monotonic() - started:.0f} s: {counts['invalid']} "
          f"invalid (onnxruntime refused them), {counts['onnxruntime crashed']} that crashed "
          f"onnxruntime, {counts['onnxruntime took too long']} that onnxruntime did not finish "
          f"in {WORKER_SECONDS} s, {counts['refused']} refused by student, "
          f"{counts['agree']} agreed, {counts['within f32 precision']} within f32 precision of "
          f"large logits, {counts['onnxruntime departs']} where student agrees with "
          f"the ONNX reference evaluator and onnxruntime does not, {len(failures)} failed")
    print(f"{ran - len(failures)} passed, {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
