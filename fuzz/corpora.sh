#!/usr/bin/env bash
# The fuzzing corpora kept in the repository, minimized and compressed, so that a campaign
# on a new machine starts where the last one stopped instead of from the seeds.
#
#   bash fuzz/corpora.sh restore WORK      # fuzz/corpora/T.tar.xz -> WORK/T/
#   bash fuzz/corpora.sh save WORK BINDIR  # WORK/T/ minimized by BINDIR/T -> fuzz/corpora/T.tar.xz
#
# `save` runs libFuzzer's merge (`-merge=1`) into an empty folder: only inputs that add
# coverage are kept. It saves every target that has a corpus in WORK and a binary in
# BINDIR (a `cargo fuzz build` output folder, or a copy of one).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
kept=$here/corpora

case "${1:-}" in
  restore)
    work=${2:?usage: corpora.sh restore WORK}
    mkdir -p "$work"
    for archive in "$kept"/*.tar.xz; do
      tar -C "$work" -xJf "$archive"
      echo "$(basename "$archive" .tar.xz): $(ls "$work/$(basename "$archive" .tar.xz)" | wc -l) inputs"
    done
    ;;
  save)
    work=${2:?usage: corpora.sh save WORK BINDIR}
    bindir=${3:?usage: corpora.sh save WORK BINDIR}
    mkdir -p "$kept"
    scratch=$(mktemp -d)
    trap 'rm -rf "$scratch"' EXIT
    for corpus in "$work"/*/; do
      target=$(basename "$corpus")
      [ -x "$bindir/$target" ] || continue
      mkdir "$scratch/$target"
      "$bindir/$target" -merge=1 -rss_limit_mb=4096 -timeout=10 \
        "$scratch/$target" "$corpus" > "$scratch/$target.log" 2>&1 \
        || { tail -n 5 "$scratch/$target.log"; exit 1; }
      # Sorted names and fixed metadata: an unchanged corpus gives the same archive.
      tar -C "$scratch" --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner \
        -cf - "$target" | xz -9 > "$kept/$target.tar.xz"
      echo "$target: $(ls "$scratch/$target" | wc -l) inputs kept of $(ls "$corpus" | wc -l)," \
        "$(stat -c %s "$kept/$target.tar.xz") bytes compressed"
    done
    ;;
  *)
    sed -n '2,10p' "$0"
    exit 2
    ;;
esac
