#!/usr/bin/env bash
# The Swift bindings' C layer: generates Student.swift and its header from the release
# library, then compiles and runs a C test against that header and library. No Swift
# compiler is needed; what Swift adds on top is exercised by the Kotlin tests' equivalent
# and by ios/Tests on a Mac.
#   bash bindings/tests/swift-c.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

cargo build --release --quiet -p student-ffi --features panic-probe
cargo build --release --quiet -p student-ffi-bindgen
out=target/bindings/swift
rm -rf "$out" && mkdir -p "$out"
target/release/uniffi-bindgen generate --library target/release/libstudent_ffi.so \
  --language swift --no-format --out-dir "$out"

# What Student.swift checks at load: its contract version and one checksum per API item.
{
  sed -n 's/^ *let bindings_contract_version = \([0-9]*\)$/#define EXPECTED_CONTRACT_VERSION \1u/p' \
    "$out/Student.swift"
  printf '#define EXPECTED_CHECKSUMS'
  sed -n 's/^ *if (\(uniffi_student_ffi_checksum_[a-z0-9_]*\)() != \([0-9]*\)) {$/ CHECKSUM(\1, \2u)/p' \
    "$out/Student.swift" | tr '\n' ' '
  echo
} > "$out/expected.h"
if ! grep -q EXPECTED_CONTRACT_VERSION "$out/expected.h" \
    || [ "$(grep -o 'CHECKSUM(' "$out/expected.h" | wc -l)" -lt 10 ]; then
  echo "Student.swift no longer has the checks this script extracts:" >&2
  cat "$out/expected.h" >&2
  exit 1
fi

gcc -std=c11 -Wall -Wextra -Werror -O1 -I "$out" -include "$out/expected.h" \
  bindings/tests/c/swift_layer.c -o "$out/swift_layer_test" \
  -L target/release -lstudent_ffi -Wl,-rpath,"$PWD/target/release" -lm
# The deliberate panic prints its message; no backtrace.
RUST_BACKTRACE=0 "$out/swift_layer_test" models/fashion-mnist/student.onnx
