"""Writes runtime/src/onnx_attributes.rs: the attributes, with their types, that each
operator of the standard ONNX domains takes, from the operator schemas of the `onnx`
Python package. The runtime refuses a node with an attribute its operator does not take at
the model's opset, or of another type, as onnxruntime does: tract reads the attributes it
knows and ignores the rest, so a misspelt `dilation` on a Conv ran as dilation 1. The
schemas' default values tell which attributes a node sets to something else (the tract
path runs only the values its battery checked, runtime/src/tract_checked.rs).

    target/py/bin/python scripts/onnx-attributes.py

Every version of every operator is written: the tract path checks which version a node
is (runtime/src/tract_checked.rs holds the oldest checked).
"""

import pathlib

import math

import numpy as np
import onnx
import onnx.defs
from onnx import AttributeProto

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "runtime/src/onnx_attributes.rs"
DOMAINS = ("", "ai.onnx.ml")


def rust_float(x):
    """An f32 literal for Rust: the shortest text that reads back as the same float."""
    if math.isinf(x):
        return "f32::INFINITY" if x > 0 else "f32::NEG_INFINITY"
    text = str(np.float32(x))  # the shortest text that reads back as this f32
    return text if any(c in text for c in ".e") else f"{text}.0"


def rust_text(b):
    """A Rust string literal of UTF-8 bytes."""
    return '"' + b.decode().replace("\\", "\\\\").replace('"', '\\"') + '"'


def default(attribute):
    """The schema default of an attribute as a Rust `Value`, or None when it has none (or
    one of a kind no schema gives a default of today: floats, a tensor, a graph)."""
    d = attribute.default_value
    if not d.name:
        return None
    kinds = {
        AttributeProto.INT: lambda: f"Value::Int({d.i})",
        AttributeProto.FLOAT: lambda: f"Value::Float({rust_float(d.f)})",
        AttributeProto.STRING: lambda: f"Value::Text({rust_text(d.s)})",
        AttributeProto.INTS: lambda: f"Value::Ints(&[{', '.join(str(i) for i in d.ints)}])",
        AttributeProto.STRINGS: lambda: "Value::Texts(&[" + ", ".join(rust_text(s) for s in d.strings) + "])",
    }
    return kinds[d.type]() if d.type in kinds else None


def changes():
    """(domain, op, since, [(name, type code)], [(name, default)]) for every version of
    every operator."""
    versions = {}
    for schema in onnx.defs.get_all_schemas_with_history():
        if schema.domain in DOMAINS:
            versions.setdefault((schema.domain, schema.name), []).append(schema)
    rows = []
    for (domain, op), schemas in sorted(versions.items()):
        for schema in sorted(schemas, key=lambda s: s.since_version):
            attributes = sorted((name, int(a.type)) for name, a in schema.attributes.items())
            defaults = sorted(
                (name, default(a))
                for name, a in schema.attributes.items()
                if default(a) is not None
            )
            rows.append((domain, op, schema.since_version, attributes, defaults))
    return rows


def main():
    lines = [
        "//! The attributes each operator of the standard ONNX domains takes, with their",
        "//! types and defaults, for every version of each. Written by",
        f"//! `scripts/onnx-attributes.py` from the schemas of onnx {onnx.__version__}; do not edit.",
        "",
        "/// An operator's version `since`: in force from that opset until the next row for the",
        "/// same operator.",
        "pub(crate) struct Schema {",
        "    /// `\"\"` (the default domain, also written `ai.onnx`) or `ai.onnx.ml`.",
        "    pub domain: &'static str,",
        "    pub op: &'static str,",
        "    pub since: i64,",
        "    /// Names with their `AttributeProto.AttributeType` codes, sorted by name.",
        "    pub attributes: &'static [(&'static str, i32)],",
        "    /// The attributes that have a default value, with it, sorted by name.",
        "    pub defaults: &'static [(&'static str, Value)],",
        "}",
        "",
        "/// An attribute's default value in its schema.",
        "#[derive(Debug, Clone, Copy, PartialEq)]",
        "pub(crate) enum Value {",
        "    Int(i64),",
        "    Float(f32),",
        "    Text(&'static str),",
        "    Ints(&'static [i64]),",
        "    Texts(&'static [&'static str]),",
        "}",
        "",
        "/// Sorted by domain, operator and `since`.",
        "#[rustfmt::skip]",
        "pub(crate) static SCHEMAS: &[Schema] = &[",
    ]
    rows = changes()
    for domain, op, since, attributes, defaults in rows:
        listed = ", ".join(f'("{name}", {code})' for name, code in attributes)
        valued = ", ".join(f'("{name}", {value})' for name, value in defaults)
        lines.append(f'    Schema {{ domain: "{domain}", op: "{op}", since: {since}, '
                     f"attributes: &[{listed}], defaults: &[{valued}] }},")
    lines.append("];")
    # The newest opset of each domain these schemas define: at or below it, an operator
    # without a row is not an ONNX operator.
    _, _, latest, latest_ml, _ = onnx.helper.VERSION_TABLE[-1]
    lines += [
        "",
        "/// The newest opset of each domain the table covers.",
        f'pub(crate) static LATEST_OPSETS: &[(&str, i64)] = &[("", {latest}), '
        f'("ai.onnx.ml", {latest_ml})];',
    ]
    OUT.write_text("\n".join(lines) + "\n")
    print(f"{OUT.relative_to(ROOT)}: {len(rows)} rows")


if __name__ == "__main__":
    main()
