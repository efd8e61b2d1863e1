#!/usr/bin/env bash
# Checks that the Rust library builds for Android (aarch64-linux-android) as a static
# library, which needs no NDK linker. tract's arm64 kernels are assembly files compiled
# with the target's C compiler; without the NDK, Debian's AArch64 GNU toolchain assembles
# them (the objects are plain AArch64 ELF either way; the Gradle build uses the NDK's clang).
#   bash bindings/tests/android-staticlib.sh
# The first run builds tract and the rest for another target: 9 minutes on two cores.
set -euo pipefail
cd "$(dirname "$0")/../.."
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

target=aarch64-linux-android
rustup target list --installed | grep -qx "$target" || rustup target add "$target"
if ! command -v aarch64-linux-gnu-gcc >/dev/null; then
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc-aarch64-linux-gnu
fi

# Its own target folder: a build for another target must not hold the shared one's lock.
export CARGO_TARGET_DIR=target/android-check
CC_aarch64_linux_android=aarch64-linux-gnu-gcc AR_aarch64_linux_android=aarch64-linux-gnu-ar \
  cargo rustc --release -p student-ffi --lib --target "$target" --crate-type staticlib
lib="$CARGO_TARGET_DIR/$target/release/libstudent_ffi.a"
# The archive must hold AArch64 objects and the uniffi entry points. (Whole outputs are
# captured first: `grep -q` on a pipe would end the writer early, which pipefail reports.)
headers=$(aarch64-linux-gnu-objdump -f "$lib" 2>/dev/null)
symbols=$(nm "$lib" 2>/dev/null)
if ! grep -q "architecture: aarch64" <<<"$headers" \
    || ! grep -q " T uniffi_student_ffi_fn_method_studentmodel_classify$" <<<"$symbols"; then
  echo "$lib lacks AArch64 objects or the uniffi entry points" >&2
  exit 1
fi
echo "ok: $lib ($(du -h "$lib" | cut -f1)) for $target"
