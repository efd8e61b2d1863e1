#!/usr/bin/env bash
# Builds StudentFFI.xcframework (device, simulator and macOS slices of the Rust static
# library, with the C header uniffi generates) and the Swift bindings beside it.
#   ios/build-xcframework.sh            (on a Mac with Xcode and rustup)
# Outputs: ios/build/StudentFFI.xcframework, ios/Sources/Student/Student.swift.
set -euo pipefail
cd "$(dirname "$0")/.."

device=aarch64-apple-ios
simulators=(aarch64-apple-ios-sim x86_64-apple-ios)
macs=(aarch64-apple-darwin x86_64-apple-darwin)
lib=libstudent_ffi.a
build=ios/build

rustup target add "$device" "${simulators[@]}" "${macs[@]}"
for target in "$device" "${simulators[@]}" "${macs[@]}"; do
  cargo build --release -p student-ffi --target "$target"
done

# The bindings come from the library's own metadata (library mode), so they always match
# the code that was just built.
cargo build --release -p student-ffi-bindgen
rm -rf "$build" && mkdir -p "$build/headers" "$build/sim" "$build/mac"
target/release/uniffi-bindgen generate --library "target/$device/release/$lib" \
  --language swift --out-dir "$build/generated"
cp "$build/generated/StudentFFI.h" "$build/headers/"
# An XCFramework's headers need the module map under this exact name.
cp "$build/generated/StudentFFI.modulemap" "$build/headers/module.modulemap"
cp "$build/generated/Student.swift" ios/Sources/Student/Student.swift

# One static library per platform: the simulator and macOS slices join with lipo.
lipo -create $(printf "target/%s/release/$lib " "${simulators[@]}") -output "$build/sim/$lib"
lipo -create $(printf "target/%s/release/$lib " "${macs[@]}") -output "$build/mac/$lib"

xcodebuild -create-xcframework \
  -library "target/$device/release/$lib" -headers "$build/headers" \
  -library "$build/sim/$lib" -headers "$build/headers" \
  -library "$build/mac/$lib" -headers "$build/headers" \
  -output "$build/StudentFFI.xcframework"
echo "built $build/StudentFFI.xcframework and ios/Sources/Student/Student.swift"
