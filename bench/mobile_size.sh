#!/usr/bin/env bash
# The size of what an app ships per ABI: student-ffi (the uniffi cdylib) built for release
# without tract (--no-default-features), stripped, for x86_64 and aarch64 Linux, against a
# goal of 1.5 MB (1,500,000 bytes). For comparison, the x86_64 library with tract (the
# default features), and the biggest contributors to each mobile library by crate.
#   bash bench/mobile_size.sh
# Environment:
#   MOBILE_SIZE_OPT_LEVEL   opt-level of the size builds (default 3; see below)
#   MOBILE_SIZE_TRACT       0 skips the build with tract (default 1)
#   MOBILE_SIZE_TRACT_TIMEOUT  seconds the build with tract may take (default 600); a build
#                           cut short resumes where it stopped on the next run
# Installs the aarch64 cross toolchain when missing, as scripts/test-aarch64.sh does; if it
# cannot be had, says "AARCH64 SIZE NOT MEASURED" and measures x86_64 only. Exits 1 when a
# library without tract is over the goal.
set -euo pipefail
cd "$(dirname "$0")/.."

goal_bytes=1500000
x86=x86_64-unknown-linux-gnu
arm=aarch64-unknown-linux-gnu

# Its own target folder: these builds change profile settings and features, and must not
# wait on (or invalidate) the shared target folder.
export CARGO_TARGET_DIR=target/mobile
# Size settings, through the environment only: the workspace's release profile stays as it
# is. Measured on x86_64 without tract, stripped: 1,556,384 bytes as the profile stands,
# 1,311,344 with fat LTO and one codegen unit (the linker then drops what no export
# reaches), 1,037,448 with opt-level "s" on top. opt-level stays 3 by default: the kernels
# are the product's speed, and "s" was not measured for speed.
export CARGO_PROFILE_RELEASE_LTO=fat
export CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1
export CARGO_PROFILE_RELEASE_OPT_LEVEL="${MOBILE_SIZE_OPT_LEVEL:-3}"
# Crates off the kernels' path are built for size ("z"): the JSON of the model card and the
# manifest, signatures, the FFI's plumbing, and two that run once per open or call, `sha2`
# (the checksum at open) and `image` (resizing pixels an app hands to classifyImage). The
# kernels and the bindings keep opt-level 3; the runtime crate is at "s" (below). Their
# effect on open and resize times was not measured; this took x86_64 from 1,531,952 to
# 1,503,200 bytes.
size_config=()
for crate in serde_core serde_json zmij image png uniffi_core anyhow curve25519-dalek \
    ed25519-dalek sha2; do
  size_config+=(--config "profile.release.package.$crate.opt-level=\"z\"")
done
# The runtime at "s": the executor's dispatch and its loops around the kernels, the
# manifest's parsing (whose derived deserializer alone took 92 KB at opt-level 3), the card
# and the checks. The same setting in the benchmarked binary (`cargo build --release
# --config 'profile.release.package.student-runtime.opt-level="s"'`), alternating five
# times with an opt-level 3 build, was within 2.4% of it on every shipped model at batch
# 1 and 32 ("z" cost the int8 student 10% at batch 1).
size_config+=(--config 'profile.release.package.student-runtime.opt-level="s"')
# Unwinding stays: uniffi turns a panic in an exported call into an exception for the app.
export CARGO_PROFILE_RELEASE_PANIC=unwind
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

arm_missing=""
if ! command -v aarch64-linux-gnu-gcc >/dev/null || ! command -v aarch64-linux-gnu-strip >/dev/null; then
  echo "== installing gcc-aarch64-linux-gnu (linker and strip for $arm)"
  if ! command -v apt-get >/dev/null; then
    arm_missing="gcc-aarch64-linux-gnu missing and there is no apt-get to install it"
  elif ! { as_root apt-get update -qq \
      && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc-aarch64-linux-gnu; }; then
    arm_missing="apt-get could not install gcc-aarch64-linux-gnu"
  fi
fi
if [ -z "$arm_missing" ] && command -v rustup >/dev/null; then
  rustup target add "$arm" >/dev/null 2>&1 || arm_missing="rustup could not add the $arm target"
fi
if [ -z "$arm_missing" ] && [ ! -d "$(rustc --print target-libdir --target "$arm")" ]; then
  arm_missing="the Rust standard library for $arm is not installed"
fi

# build TARGET LABEL CARGO-ARGS...: builds the cdylib only (not the staticlib the crate also
# declares), copies it to sizes/TARGET-LABEL.so (builds with other features write the same
# file) and prints the copy's path. BUILD_LIMIT, when set, bounds the build in seconds
# (`timeout` then ends cargo and the compilers it started, and returns 124). Failures are
# returned explicitly: callers test the status, which turns `set -e` off in here.
build() {
  local target=$1 label=$2 start=$SECONDS
  shift 2
  echo "== cargo rustc --release -p student-ffi${*:+ $*} --lib --crate-type cdylib --target $target" >&2
  timeout "${BUILD_LIMIT:-0}" cargo "${size_config[@]}" rustc --release --quiet -p student-ffi \
    "$@" --lib \
    --crate-type cdylib --target "$target" >&2 || return $?
  echo "   built in $((SECONDS - start)) s" >&2
  mkdir -p "$CARGO_TARGET_DIR/sizes" || return $?
  cp "$CARGO_TARGET_DIR/$target/release/libstudent_ffi.so" \
    "$CARGO_TARGET_DIR/sizes/$target-$label.so" || return $?
  echo "$CARGO_TARGET_DIR/sizes/$target-$label.so"
}

# stripped LIB STRIP-TOOL: a stripped copy of LIB beside it (LIB keeps its symbols for the
# breakdown below); prints the copy's path.
stripped() {
  local out="${1%.so}.stripped.so"
  "$2" -o "$out" "$1"
  echo "$out"
}

rows=()
over=0
# row TARGET FEATURES STRIPPED-FILE goal|comparison: one line of the table.
row() {
  local bytes verdict=comparison
  bytes=$(stat -c %s "$3")
  if [ "$4" = goal ]; then
    if [ "$bytes" -le "$goal_bytes" ]; then verdict=pass; else verdict=FAIL; over=1; fi
  fi
  rows+=("$(printf '%-27s %-16s %14s %6s  %s' "$1" "$2" "$bytes" \
    "$(awk -v b="$bytes" 'BEGIN { printf "%.2f", b / 1e6 }')" "$verdict")")
}

libs=()
lib=$(build "$x86" no-tract --no-default-features)
so=$(stripped "$lib" strip)
row "$x86" "no tract" "$so" goal
libs+=("$x86 $lib nm size")

if [ -z "$arm_missing" ]; then
  lib=$(build "$arm" no-tract --no-default-features)
  so=$(stripped "$lib" aarch64-linux-gnu-strip)
  row "$arm" "no tract" "$so" goal
  libs+=("$arm $lib aarch64-linux-gnu-nm aarch64-linux-gnu-size")
fi

tract_note=""
if [ "${MOBILE_SIZE_TRACT:-1}" = 1 ]; then
  limit=${MOBILE_SIZE_TRACT_TIMEOUT:-600}
  status=0
  lib=$(BUILD_LIMIT=$limit build "$x86" tract) || status=$?
  if [ "$status" = 0 ]; then
    row "$x86" "tract (default)" "$(stripped "$lib" strip)" comparison
  elif [ "$status" = 124 ]; then
    tract_note="x86_64 with tract: SKIPPED, the build took over $limit s (run again to resume it)"
  else
    tract_note="x86_64 with tract: NOT MEASURED, the build failed (status $status)"
  fi
else
  tract_note="x86_64 with tract: skipped (MOBILE_SIZE_TRACT=0)"
fi

echo
echo "Mobile library size: student-ffi cdylib, release, LTO fat, codegen-units 1," \
  "opt-level $CARGO_PROFILE_RELEASE_OPT_LEVEL, panic unwind, stripped"
printf '%-27s %-16s %14s %6s  %s\n' target features "stripped bytes" MB "goal 1.5 MB"
printf '%s\n' "${rows[@]}"
[ -z "$tract_note" ] || echo "$tract_note"
if [ -n "$arm_missing" ]; then
  echo "=========================================================================="
  echo "AARCH64 SIZE NOT MEASURED: $arm_missing"
  echo "=========================================================================="
fi

# Where the bytes go in each library without tract: ELF sections of the stripped file,
# then symbol sizes of the unstripped one grouped by the first crate named in each
# (demangled) symbol, so that a generic instantiated for a crate's type counts for that
# crate; what only names the standard library counts as "std" (its largest part is the
# backtrace symbolizer of the panic hook: gimli, addr2line, miniz_oxide). Section data
# without symbols (unwind tables, string constants) appears in the first list only. On
# aarch64 the linker aligns segments to 64 KiB, so file sizes move in steps.
for entry in "${libs[@]}"; do
  read -r target lib nm_tool size_tool <<<"$entry"
  echo
  echo "$target, sections over 10 kB (stripped):"
  "$size_tool" -A "${lib%.so}.stripped.so" | awk '$2 > 10000 && $1 ~ /^\./ { printf "  %-20s %9d\n", $1, $2 }' \
    | sort -k2,2nr
  if ! command -v python3 >/dev/null; then
    echo "  (no python3: no breakdown by crate)"
    continue
  fi
  echo "$target, symbol bytes by crate (unstripped), top 12:"
  "$nm_tool" --size-sort -S -C "$lib" | python3 -c '
import collections, re, sys
STD = {"core", "alloc", "std", "compiler_builtins", "hashbrown", "std_detect", "gimli",
       "addr2line", "miniz_oxide", "rustc_demangle", "object", "memchr", "adler2",
       "backtrace_rs", "panic_unwind", "unwind"}
sizes, total = collections.Counter(), 0
for line in sys.stdin:
    parts = line.split(None, 3)
    if len(parts) < 4 or parts[2] not in "tTrRdDbBvVwW":
        continue
    size = int(parts[1], 16)
    total += size
    # A crate name starts a path: at the start, or after "<", a space, "(", "&", ",", "*".
    named = re.findall(r"(?:^|[<\s(&,*\[])([A-Za-z_]\w*)::", parts[3])
    ours = [c for c in named if c not in STD]
    if ours:
        crate = ours[0]
    elif named:
        crate = "std"
    elif parts[3].lower().startswith(("uniffi", "ffi_")):
        # The exported entry points, with the calls they wrap inlined by LTO.
        crate = "uniffi exports"
    else:
        crate = "(no Rust path)"
    sizes[crate] += size
for crate, size in sizes.most_common(12):
    print(f"  {crate:<20} {size:>9}  {100 * size / total:5.1f}%")
print("  %-20s %9d" % ("all symbols", total))
'
done

exit "$over"
