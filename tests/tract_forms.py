#!/usr/bin/env python3
"""Compares `student run` (the tract path) with onnxruntime, operator by operator, and
writes the table of the forms that agree (`runtime/src/tract_checked.rs`).

Each case (tests/tract_cases/) builds one small classifier around the operator under
test: the shipped student's input ([N, 1, 28, 28] float) and model card (calibration
temperature 1), the operator somewhere in the middle, then Flatten and a Gemm to 10 logits with fixed random
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

A form is an operator with the attributes its nodes set to values other than their
defaults. An attribute counts by its name, except where the value names a choice rather
than a quantity: a text (`mode`, `equation`, `post_transform`), each element of a list of
texts (`nodes_modes`, `activations`), the target type of a `Cast`, and an integer flag
(`keepdims`, `ceil_mode`, `transA`). These count by value (`mode=edge`, `keepdims=0`), so
that only the choices a case checked are in the table. Quantities (`pads`, `axis`,
`alpha`) count by name: tests/tract_sweep.py varies their values.

With `--write PATH`, every `agree` case runs (with `--unchecked-operators` when the binary
has it) and PATH receives the table: each operator with a case that agreed, with the
forms such cases set. A form that a case showed to disagree, or that student refused,
is taken out even where other cases agreed: its version and older ones when a newer
version agreed, else the whole operator for a default form, else the attributes (or
values) that case set, less those that agreed in a case setting fewer. A case enters
only if every other node of its model (the Conv before it, the Flatten and Gemm after
it) is in the table too. What stays out is printed.

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

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from tract_cases.graph import AGREE, ML, REFUSE, Net
from tract_cases.table import CASES

ROOT = pathlib.Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "models/fashion-mnist/student.onnx"
SAMPLES = ROOT / "models/fashion-mnist/samples"
TABLE = ROOT / "runtime/src/tract_checked.rs"
SAMPLE_IMAGES = 8
GENERATED_IMAGES = 8
FLAG = "--unchecked-operators"


@dataclasses.dataclass
class Outcome:
    """What one case did: `status` is agree, disagree, refused (student exited non-zero)
    or error (onnxruntime failed); `code` is student's exit status (negative: a signal)."""

    status: str
    detail: str = ""
    refused_unsupported: bool = False
    code: int = 0


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
    # One thread: the machine is shared, and the graphs are small.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), options,
                                providers=["CPUExecutionProvider"])


# Integer attributes whose value is a choice, counted by value: a type code, an order
# that only 1 or 2 may take, and the flags that ONNX means as 0 or 1. Other values of a
# flag are read as "true" by some runtimes and as invalid or "false" by others (the sweep,
# tests/tract_sweep.py, found Trilu `upper=-1` to disagree), so only the checked ones run.
CHOICES = {("", "Cast", "to"), ("", "LpNormalization", "p")}
FLAGS = {"allowzero", "antialias", "ceil_mode", "count_include_pad", "detect_negative",
         "detect_positive", "exclude_outside", "exclusive", "input_forget", "keepdims",
         "largest", "layout", "linear_before_reset", "noop_with_empty_axes", "reverse",
         "saturate", "select_last_index", "sorted", "storage_order", "training_mode", "transA",
         "transB", "upper"}


def is_choice(node, attribute):
    """Whether an integer attribute names a choice (see CHOICES and FLAGS)."""
    return ((node.domain, node.op_type, attribute.name) in CHOICES
            or attribute.name in FLAGS)


def form_keys(node, attribute):
    """How an attribute set away from its default enters a form: its name, or
    `name=value` for each value of a choice."""
    value = helper.get_attribute_value(attribute)
    if attribute.type == onnx.AttributeProto.STRING:
        values = [value]
    elif attribute.type == onnx.AttributeProto.STRINGS:
        values = value
    elif attribute.type == onnx.AttributeProto.INT and is_choice(node, attribute):
        values = [str(value).encode()]
    else:
        return {attribute.name}
    texts = [v.decode() for v in values]
    if any('"' in t or "\\" in t for t in texts):
        raise ValueError(f"{attribute.name}: a value with a quote or backslash")
    return {f"{attribute.name}={t}" for t in texts}


def non_default(node, opset):
    """The form keys of `node`'s attributes whose values differ from the schema default,
    or that have no default (see `form_keys`)."""
    schema = onnx.defs.get_schema(node.op_type, opset, node.domain)
    keys = set()
    for attribute in node.attribute:
        spec = schema.attributes.get(attribute.name)
        if spec is None:
            raise ValueError(f"{node.op_type} takes no attribute `{attribute.name}` at opset "
                             f"{opset}")
        default = spec.default_value
        if (default.type == onnx.AttributeProto.UNDEFINED
                or helper.get_attribute_value(attribute) != helper.get_attribute_value(default)):
            keys |= form_keys(node, attribute)
    return keys


def names(keys):
    """The attribute names of form keys."""
    return {key.split("=", 1)[0] for key in keys}


def forms(model):
    """{(domain, op): form keys} over every node: the keys of the attributes set to
    non-default values, and `@N` for the operator's version N (the opset its schema dates
    from at the model's opset)."""
    opsets = {i.domain: i.version for i in model.opset_import}
    found = {}
    for node in model.graph.node:
        key = (node.domain, node.op_type)
        opset = opsets[node.domain]
        since = onnx.defs.get_schema(node.op_type, opset, node.domain).since_version
        found[key] = found.get(key, set()) | non_default(node, opset) | {f"@{since}"}
    return found


def split(keys):
    """Form keys as (attribute keys, operator versions)."""
    return ({k for k in keys if not k.startswith("@")},
            {int(k[1:]) for k in keys if k.startswith("@")})


def check_declaration(case, model):
    """Raises unless the case's operator is in the model with exactly the declared
    non-default attributes."""
    found = forms(model)
    key = (case.domain, case.op)
    if key not in found:
        raise ValueError(f"the model holds no {case.op}")
    attrs, _ = split(found[key])
    if names(attrs) != set(case.attributes):
        raise ValueError(f"{case.op} sets {sorted(names(attrs))} to non-default values, the "
                         f"case declares {sorted(case.attributes)}")


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
    """softmax(logits) from onnxruntime, one row per image."""
    return softmax_rows(ort_outputs(model, pixels, props)[0][:, 0].astype(np.float64))


def ort_outputs(model, pixels, props):
    """The model's outputs from onnxruntime, one image at a time (the pixels scaled as the
    card says), each stacked over the images: [images, *shape]."""
    session = ort_session(model)
    runs = [session.run(None, {"x": x}) for x in inputs(pixels, props)]
    return [np.stack([run[i] for run in runs]) for i in range(len(runs[0]))]


def inputs(pixels, props):
    """Each image as the model's input [1, 1, 28, 28], scaled as the card says."""
    spec = json.loads(props["student.input"])
    for p in pixels:
        x = p.astype(np.float32)[None, None] * np.float32(spec["scale"])
        yield (x - np.float32(spec["mean"][0])) / np.float32(spec["std"][0])


def softmax_rows(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def run_case(case, model, path, imgs, props, student, flags):
    """Runs `student run` on the saved model and compares it with onnxruntime."""
    refused, lines = run_student(path, imgs, student, flags)
    if refused:
        return refused
    if case.expect == REFUSE:
        return Outcome("ran", "exit 0")
    try:
        expected = ort_probabilities(model, [p for _, p in imgs], props)
    except Exception as e:  # onnxruntime raises several types
        return Outcome("error", f"onnxruntime: {str(e).splitlines()[0][:200]}")
    return compare(case, lines, expected)


def run_student(path, imgs, student, flags):
    """`student run` on the saved model and the images: (an Outcome when it exited
    non-zero, else None; its JSON lines)."""
    proc = subprocess.run([student, "run", str(path), *[str(p) for p, _ in imgs], "--json",
                           "--top-k", "10", "--threshold", "0", *flags],
                          capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
        return Outcome("refused", last[:300], "unsupported model" in proc.stderr,
                       proc.returncode), []
    return None, [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def probabilities(lines, shape):
    """student's probabilities from its JSON lines (`--top-k` every class), one row per
    image."""
    ours = np.zeros(shape)
    for i, line in enumerate(lines):
        for ranked in line["top_k"]:
            ours[i, ranked["index"]] = ranked["probability"]
    return ours


def compare(case, lines, expected, allowed=None):
    """agree or disagree: student's JSON lines against onnxruntime's probabilities, one
    row per image. They agree on the same top-1 class everywhere and probabilities within
    `allowed` (the case's tolerance, or one bound per image)."""
    if len(lines) != len(expected):
        return Outcome("disagree", f"{len(lines)} results for {len(expected)} images")
    ours = probabilities(lines, expected.shape)
    top1 = sum(int(line["index"] != int(np.argmax(e))) for line, e in zip(lines, expected))
    per_image = np.abs(ours - expected).max(axis=1)
    detail = f"top-1 differs on {top1}/{len(expected)} images, max |dp| {per_image.max():.2e}"
    bound = case.tolerance if allowed is None else allowed
    if top1 == 0 and bool((per_image <= bound).all()):
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
    /// The oldest version of the operator checked (the opset its schema dates from at the
    /// case's opset): older versions, which may mean something else, are refused.
    pub since: i64,
    /// Sorted. A name passes at any value; `name=value` passes that value of an attribute
    /// that names a choice (a text, each text of a list, a `Cast` target type code, an
    /// integer flag).
    pub attributes: &'static [&'static str],
}

/// Sorted by domain and operator.
#[rustfmt::skip]
pub(crate) static CHECKED: &[Checked] = &[
'''
ROW = re.compile(r'^\s*Checked \{ domain: "([^"]*)", op: "([^"]+)", since: (\d+), '
                 r'attributes: &\[(.*)\] \},$')


def render_table(table):
    """The Rust file. A table row holds its operator's form keys; its `since` is the
    oldest version of the operator that agreed."""
    rows = []
    for (domain, op), keys in sorted(table.items()):
        attrs, versions = split(keys)
        listed = ", ".join(f'"{a}"' for a in sorted(attrs))
        rows.append(f'    Checked {{ domain: "{domain}", op: "{op}", since: {min(versions)}, '
                    f'attributes: &[{listed}] }},\n')
    return TABLE_HEAD + "".join(rows) + "];\n"


def parse_table(text):
    """{(domain, op): form keys, with `@since`} from the generated Rust file."""
    table = {}
    for line in text.splitlines():
        m = ROW.match(line)
        if m:
            table[(m[1], m[2])] = set(re.findall(r'"([^"]+)"', m[4])) | {f"@{m[3]}"}
    return table


def covered(model_forms, table):
    """The forms of a model that the table lacks, as text ([] when all are in it): an
    operator, attribute keys, or a version older than the oldest that agreed."""
    missing = []
    for (domain, op), keys in sorted(model_forms.items()):
        if (domain, op) not in table:
            missing.append(op)
            continue
        attrs, versions = split(keys)
        listed, agreed = split(table[(domain, op)])
        if attrs - listed:
            missing.append(f"{op}[{','.join(sorted(attrs - listed))}]")
        if min(versions) < min(agreed):
            missing.append(f"{op} version {min(versions)} (checked from {min(agreed)})")
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
    disagreeing = [(case, f) for case, f, outcome, why in results
                   if not why and outcome.status in ("disagree", "refused")]
    taken_out = {}
    while True:
        table = {}
        for case, f in agreeing:
            key = (case.domain, case.op)
            table[key] = table.get(key, set()) | f[key]
        # Every node of a model that agreed checks its operator's version (the Flatten and
        # Gemm after an opset-11 case check their opset-11 versions).
        for case, f in agreeing:
            for key, keys in f.items():
                if key in table:
                    table[key] |= {k for k in keys if k.startswith("@")}
        for case, f in disagreeing:
            key = (case.domain, case.op)
            attrs, (version,) = split(f[key])
            if key not in table or not f[key] <= table[key]:
                continue
            # A form that disagrees at an older version than some that agreed takes that
            # version and older ones out; at the newest, the attributes or the operator.
            checked = split(table[key])[1]
            if version < max(checked):
                taken_out[case.name] = [f"version {version} and older"]
                table[key] -= {f"@{v}" for v in checked if v <= version}
            elif attrs:
                # Attributes that agreed in a case setting fewer of them stay, unless that
                # leaves nothing to take out.
                smaller = [split(g[key])[0] for c, g in agreeing
                           if (c.domain, c.op) == key and split(g[key])[0] < attrs]
                out = attrs - set().union(*smaller) or attrs
                taken_out[case.name] = sorted(out)
                table[key] -= out
            else:
                taken_out[case.name] = ["the operator"]
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
    agreed = {}  # (domain, op) -> form keys of covered cases that agreed
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
                agreed[key] = agreed.get(key, set()) | model_forms[key]
                for other, keys in model_forms.items():
                    agreed[other] = agreed.get(other, set()) | {k for k in keys if k[0] == "@"}
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
            what = (f"version {name[1:]}: no agreeing case at it" if name.startswith("@")
                    else f"{name}: no agreeing case sets it")
            failures.append(f"FAIL: table entry {shown} {what}")
    for line in failures:
        print(line)
    print(f"{len(results)} cases in {time.monotonic() - started:.0f} s; {len(outside)} outside "
          f"the table, not counted (this binary has no table check)" if outside else
          f"{len(results)} cases in {time.monotonic() - started:.0f} s")
    print(f"{passed} passed, {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
