#!/usr/bin/env bash
# The Kotlin binding tests: builds the release library (with the panic probe), generates
# the Kotlin bindings from it, compiles them with the test suite, runs it on the JVM.
#   bash bindings/tests/kotlin.sh     (from anywhere; tools go under target/)
# Needs Java 17; installs kotlinc (npm `kotlin-compiler`) and JNA (Debian `libjna-java`).
set -euo pipefail
cd "$(dirname "$0")/../.."

KOTLIN_VERSION=2.4.20
kotlinc=target/kotlin/node_modules/kotlin-compiler/bin/kotlinc
jna=/usr/share/java/jna.jar
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if [ ! -x "$kotlinc" ]; then
  echo "== installing kotlin-compiler $KOTLIN_VERSION into target/kotlin"
  npm install --prefix target/kotlin --no-audit --no-fund --silent "kotlin-compiler@$KOTLIN_VERSION"
fi
if [ ! -f "$jna" ]; then
  echo "== installing libjna-java"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libjna-java
fi

cargo build --release --quiet -p student-ffi --features panic-probe
cargo build --release --quiet -p student-ffi-bindgen
out=target/bindings/kotlin
rm -rf "$out" && mkdir -p "$out"
target/release/uniffi-bindgen generate --library target/release/libstudent_ffi.so \
  --language kotlin --no-format --out-dir "$out/src"

# Warnings in generated code are uniffi's; the test suite's own would show here too.
"$kotlinc" -nowarn -classpath "$jna" -include-runtime -d "$out/test.jar" \
  "$out/src/dev/student/student_ffi.kt" bindings/tests/kotlin/StudentTest.kt
# A compiled student for the fast-path tests, made by the CLI that `cargo test --workspace`
# builds (building it here alone would rebuild tract and burn with other features).
compiled=""
if [ -x target/release/student ]; then
  target/release/student compile models/fashion-mnist/student-int8.onnx \
    -o "$out/student-int8.student" >/dev/null
  compiled="$out/student-int8.student"
  # A model signed by a key made here, for the signed-model tests.
  mkdir -p "$out/signed"
  cp models/fashion-mnist/student.onnx "$out/signed/student.onnx"
  target/release/student keygen "$out/signed/app" >/dev/null
  target/release/student keygen "$out/signed/other" >/dev/null
  target/release/student sign "$out/signed/student.onnx" --key "$out/signed/app.key" >/dev/null
else
  echo "NOTE: target/release/student is not built: the compiled-student tests are skipped"
fi
# The deliberate panic (the probe) prints its message; no backtrace.
RUST_BACKTRACE=0 java -Djna.library.path="$PWD/target/release" -Dstudent.root="$PWD" \
  -Dstudent.compiled="$compiled" -Dstudent.signed="${compiled:+$out/signed}" \
  -cp "$out/test.jar:$jna" dev.student.test.StudentTestKt
