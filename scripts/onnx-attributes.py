"""Writes runtime/src/onnx_attributes.rs: the attributes, with their types, that each
operator of the standard ONNX domains takes, from the operator schemas of the `onnx`
Python package. The runtime refuses a node with an attribute its operator does not take at
the model's opset, or of another type, as onnxruntime does: tract reads the attributes it
knows and ignores the rest, so a misspelt `dilation` on a Conv ran as dilation 1.

    target/py/bin/python scripts/onnx-attributes.py

Only the versions where an operator's attributes change are written.
"""

import pathlib

import onnx
import onnx.defs

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "runtime/src/onnx_attributes.rs"
DOMAINS = ("", "ai.onnx.ml")


def changes():
    """(domain, op, since, [(name, type code)]) where an operator's attributes change."""
    versions = {}
    for schema in onnx.defs.get_all_schemas_with_history():
        if schema.domain in DOMAINS:
            versions.setdefault((schema.domain, schema.name), []).append(schema)
    rows = []
    for (domain, op), schemas in sorted(versions.items()):
        before = None
        for schema in sorted(schemas, key=lambda s: s.since_version):
            attributes = sorted((name, int(a.type)) for name, a in schema.attributes.items())
            if attributes != before:
                rows.append((domain, op, schema.since_version, attributes))
                before = attributes
    return rows


def main():
    lines = [
        "//! The attributes each operator of the standard ONNX domains takes, with their",
        "//! types, from the opset version where they last changed. Written by",
        f"//! `scripts/onnx-attributes.py` from the schemas of onnx {onnx.__version__}; do not edit.",
        "",
        "/// An operator's attributes from opset `since` until the next row for the same operator.",
        "pub(crate) struct Schema {",
        "    /// `\"\"` (the default domain, also written `ai.onnx`) or `ai.onnx.ml`.",
        "    pub domain: &'static str,",
        "    pub op: &'static str,",
        "    pub since: i64,",
        "    /// Names with their `AttributeProto.AttributeType` codes, sorted by name.",
        "    pub attributes: &'static [(&'static str, i32)],",
        "}",
        "",
        "/// Sorted by domain, operator and `since`.",
        "#[rustfmt::skip]",
        "pub(crate) static SCHEMAS: &[Schema] = &[",
    ]
    rows = changes()
    for domain, op, since, attributes in rows:
        listed = ", ".join(f'("{name}", {code})' for name, code in attributes)
        lines.append(f'    Schema {{ domain: "{domain}", op: "{op}", since: {since}, '
                     f"attributes: &[{listed}] }},")
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
