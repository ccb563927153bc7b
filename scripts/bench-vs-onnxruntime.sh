#!/usr/bin/env bash
# kuaxin vs onnxruntime on CPU, interleaved in one run: MiniLM-L3 (1x128), light_resnet50,
# light_squeezenet (1x3x224x224, seeded random weights) and a MatMul 1024^3, at 1 and 2 threads.
# Prints one row per case with both medians and the ratio kuaxin/onnxruntime. A benchmark, not a
# test. See scripts/bench_vs_onnxruntime.py for the method.
# Usage: scripts/bench-vs-onnxruntime.sh [--quick] [--only CASE]... [--threads T]... [--rounds R]
#          [--kuaxin-arg=ARG]... [--json FILE]      (e.g. --kuaxin-arg=--no-fuse)
#   KUAXIN=path overrides the binary (default target/release/kuaxin; build it with
#   `cargo build --release` first).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="${KUAXIN:-$root/target/release/kuaxin}"
[ -x "$bin" ] || { echo "error: $bin not found (cargo build --release)" >&2; exit 2; }
py="$(bash "$root/scripts/py-env.sh" | tail -n1)"
exec "$py" "$root/scripts/bench_vs_onnxruntime.py" "$bin" "$@"
