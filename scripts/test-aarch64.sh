#!/usr/bin/env bash
# aarch64, run under qemu with `-cpu max` so that it offers the dot-product extension,
# half-precision arithmetic and `fmlal` (fp16, fhm):
#  1. the kernels at every NEON level (neon, neon-dotprod, neon-fp16) against the
#     reference; then detection on two CPU models with fewer features: cortex-a57 (best
#     level neon) and cortex-a76 (dotprod and fp16 but no fhm: best level neon-dotprod);
#  2. the shipped students end to end: compiled on this x86-64 host by
#     target/release/student, their logits on the sample images written here with the
#     portable kernels, then runtime/tests/compiled_files.rs (mobile build: no tract)
#     compares every kernel level with them, here and on aarch64.
#   bash scripts/test-aarch64.sh
# Installs the cross linker and qemu with apt-get when missing. If the tools or the Rust
# target cannot be had, prints a line starting "AARCH64 NOT TESTED:" and exits 0. If
# target/release/student is missing (the workspace test run builds it), or any test
# fails, exits non-zero.
set -euo pipefail
cd "$(dirname "$0")/.."

target=aarch64-unknown-linux-gnu

not_tested() {
  echo "=========================================================================="
  echo "AARCH64 NOT TESTED (kernels, compiled students): $*"
  echo "=========================================================================="
  exit 0
}

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

find_qemu() { command -v qemu-aarch64 || command -v qemu-aarch64-static || true; }

# Debian names: gcc-aarch64-linux-gnu gives the linker and the aarch64 libc under
# /usr/aarch64-linux-gnu; qemu-user gives qemu-aarch64.
missing=()
command -v aarch64-linux-gnu-gcc >/dev/null || missing+=(gcc-aarch64-linux-gnu)
[ -n "$(find_qemu)" ] || missing+=(qemu-user)
if [ ${#missing[@]} -gt 0 ]; then
  echo "== installing ${missing[*]}"
  if ! command -v apt-get >/dev/null; then
    not_tested "${missing[*]} missing and there is no apt-get to install them"
  fi
  if ! { as_root apt-get update -qq \
      && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"; }; then
    not_tested "apt-get could not install ${missing[*]}"
  fi
fi
qemu=$(find_qemu)
[ -n "$qemu" ] || not_tested "no qemu-aarch64 after installing qemu-user"
[ -d /usr/aarch64-linux-gnu/lib ] || not_tested "no aarch64 libc under /usr/aarch64-linux-gnu"

if command -v rustup >/dev/null; then
  rustup target add "$target" || not_tested "rustup could not add the $target target"
fi
if [ ! -d "$(rustc --print target-libdir --target "$target")" ]; then
  not_tested "the Rust standard library for $target is not installed"
fi

export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
runner() { echo "$qemu -cpu $1 -L /usr/aarch64-linux-gnu"; }
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="$(runner max)"
# The detection tests fail unless every level was found and neon-fp16 is the best, so a
# qemu without dotprod or fp16 cannot pass by testing only the lower levels.
export STUDENT_EXPECT_ISA=neon,neon-dotprod,neon-fp16

echo "== cargo test -p student-kernels --target $target (under $qemu -cpu max)"
STUDENT_EXPECT_BEST=neon-fp16 cargo test --release -p student-kernels --target "$target"
echo "== aarch64 kernels tested under qemu: neon, neon-dotprod, neon-fp16"

# Detection on CPUs without the top level: the detection and level tests, and the float
# GEMMs at the best level there. cortex-a76 has fp16 arithmetic but not fmlal (fhm), which
# neon-fp16 needs.
for cpu_best in cortex-a57:neon cortex-a76:neon-dotprod; do
  cpu=${cpu_best%%:*}
  best=${cpu_best#*:}
  echo "== cargo test -p student-kernels --target $target --lib --test isa --test sgemm" \
    "(under $qemu -cpu $cpu: best level $best)"
  CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="$(runner "$cpu")" \
    STUDENT_EXPECT_BEST=$best env -u STUDENT_EXPECT_ISA \
    cargo test --release -p student-kernels --target "$target" --lib --test isa --test sgemm
done
echo "== aarch64 detection tested under qemu: cortex-a57 neon, cortex-a76 neon-dotprod, max neon-fp16"

# Compiled students. The expected logits come from running each student on this host, so
# the comparison on aarch64 is across machines, not against itself.
student=target/release/student
if [ ! -x "$student" ]; then
  echo "=========================================================================="
  echo "AARCH64 COMPILED STUDENTS FAILED: $student is missing. It compiles the students;"
  echo "build it first (scripts/test.sh does, through cargo test --release --workspace)."
  echo "=========================================================================="
  exit 1
fi
cases="$PWD/target/aarch64-cases"
rm -rf "$cases"
mkdir -p "$cases/samples"
cp models/fashion-mnist/samples/*.png "$cases/samples/"
for name in student student-int8 student-fp16; do
  echo "== $student compile models/fashion-mnist/$name.onnx"
  "$student" compile "models/fashion-mnist/$name.onnx" -o "$cases/$name.student"
done
export STUDENT_COMPILED_CASES="$cases"
# The mobile build, without tract. The host has no NEON: it expects no levels.
host_test=(cargo test --release -p student-runtime --no-default-features --test compiled_files)

echo "== expected logits, computed on this host ($(uname -m)): ${host_test[*]} -- --ignored"
env -u STUDENT_EXPECT_ISA "${host_test[@]}" -- --ignored --exact write_expected_on_this_host

echo "== compiled students on this host ($(uname -m)), every kernel level: ${host_test[*]}"
env -u STUDENT_EXPECT_ISA "${host_test[@]}"

echo "== compiled students on $target (under $qemu -cpu max), levels $STUDENT_EXPECT_ISA"
cargo test --release -p student-runtime --no-default-features --target "$target" \
  --test compiled_files
echo "== aarch64 compiled students tested under qemu against $(uname -m) logits"
