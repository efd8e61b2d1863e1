#!/usr/bin/env bash
# The kernels on aarch64, run under qemu: both NEON levels (baseline and dotprod) against
# the reference, with `-cpu max` so that qemu offers the dot-product extension.
#   bash scripts/test-aarch64.sh
# Installs the cross linker and qemu with apt-get when missing. If the tools or the Rust
# target cannot be had, prints a line starting "AARCH64 KERNELS NOT TESTED:" and exits 0;
# if the tests run and fail, exits non-zero.
set -euo pipefail
cd "$(dirname "$0")/.."

target=aarch64-unknown-linux-gnu

not_tested() {
  echo "=========================================================================="
  echo "AARCH64 KERNELS NOT TESTED: $*"
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
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="$qemu -cpu max -L /usr/aarch64-linux-gnu"
# The detection test fails unless both levels were found, so a qemu without dotprod
# cannot pass by testing only the baseline.
export STUDENT_EXPECT_ISA=neon,neon-dotprod

echo "== cargo test -p student-kernels --target $target (under $qemu -cpu max)"
cargo test --release -p student-kernels --target "$target"
echo "== aarch64 kernels tested under qemu: neon, neon-dotprod"
