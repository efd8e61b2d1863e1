#!/usr/bin/env bash
# The test command: installs what the tests need, then runs every test.
#   bash scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# Fashion-MNIST (Debian package): the data every end-to-end test and `student eval` uses.
if [ ! -f /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz ] \
    && [ -z "${STUDENT_FASHION_MNIST_DIR:-}" ]; then
  echo "== installing dataset-fashion-mnist"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist
fi

# onnxruntime (PyPI) in a private virtual environment: the reference the runtime is
# cross-checked against.
if [ ! -x target/py/bin/python ]; then
  echo "== creating target/py with onnxruntime"
  python3 -m venv target/py
fi
target/py/bin/python -m pip install --quiet --disable-pip-version-check \
  "onnxruntime==1.23.2" "onnx==1.21.0" "numpy>=2,<3" "pillow>=11,<13"

echo "== cargo fmt --check"
cargo fmt --all -- --check

log=$(mktemp)
trap 'rm -f "$log"' EXIT

echo "== cargo test (release: the training tests need optimized burn)"
cargo test --release --workspace 2>&1 | tee "$log"

# The bindings: Kotlin on the JVM, and the C layer under the Swift bindings. Each script
# builds the library with its panic probe and installs what it needs (kotlinc, JNA).
echo "== Kotlin bindings (kotlinc, JVM, JNA)"
bash bindings/tests/kotlin.sh 2>&1 | tee -a "$log"
echo "== Swift bindings: their C layer"
bash bindings/tests/swift-c.sh 2>&1 | tee -a "$log"
# Opt in: the first run builds tract for Android, 9 minutes on two cores.
if [ "${STUDENT_TEST_ANDROID:-0}" = 1 ]; then
  echo "== the Rust library as an Android static library"
  bash bindings/tests/android-staticlib.sh
fi

echo "== runtime vs onnxruntime"
# `cargo test --workspace` above built target/release/student for the CLI tests. Building
# `-p student-cli` alone would resolve features for that package only and rebuild burn and
# tract (about 8 minutes on two cores).
test -x target/release/student
target/py/bin/python tests/ort_crosscheck.py | tee -a "$log"

# The forms the tract path runs by default, each against onnxruntime: fails when a form in
# runtime/src/tract_checked.rs disagrees, lacks its case, or a form out of it still runs.
echo "== tract forms vs onnxruntime"
target/py/bin/python tests/tract_forms.py | tee -a "$log"

# The quantities the table admits by name (pads, axes, scales), varied: 3000 variants of
# the battery's cases, the same ones every run (about a minute). Fails when student answers
# one otherwise than onnxruntime with exit 0, or crashes; counts each variant compared.
echo "== tract quantities varied, vs onnxruntime"
target/py/bin/python tests/tract_sweep.py --count 3000 --seed 1 | tee -a "$log"

# The kernels' NEON and dotprod paths, and compiled students end to end, on aarch64 under
# qemu (installs the cross toolchain and qemu-user when missing).
echo "== aarch64 under qemu"
bash scripts/test-aarch64.sh 2>&1 | tee -a "$log"

# One closing line over every suite above.
awk '/^test result:/ { p += $4; f += $6 } /^[0-9]+ passed, [0-9]+ failed$/ { p += $1; f += $3 }
     END { printf "%d passed, %d failed\n", p, f }' "$log"
