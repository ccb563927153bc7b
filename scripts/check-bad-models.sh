#!/usr/bin/env bash
# Feeds every malformed model in tests/bad-models to `kuaxin run` (load, then run on seeded random inputs): each must be refused
# with a clean error (exit code 1), never accepted (0), a panic (101), a signal or a hang.
# Usage: scripts/check-bad-models.sh [KUAXIN_BINARY]   (default target/release/kuaxin)
# Prints one line per file and ends with `N passed, M failed`; exits 1 if any failed.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="${1:-$root/target/release/kuaxin}"
dir="$root/tests/bad-models"
timeout_s=60
if [ ! -x "$bin" ]; then
  echo "check-bad-models: $bin is not an executable file" >&2
  exit 2
fi
shopt -s nullglob
files=("$dir"/*.onnx)
if [ ${#files[@]} -eq 0 ]; then
  echo "check-bad-models: no .onnx files in $dir" >&2
  exit 2
fi
err="$(mktemp)"
trap 'rm -f "$err"' EXIT
passed=0
failed=0
for f in "${files[@]}"; do
  name="$(basename "$f")"
  # A memory cap, so a model that makes kuaxin allocate wildly fails here instead of
  # taking the machine down; allocation failure aborts (a signal), which counts as a crash.
  set +e
  # (No exec: the subshell reports a crash's signal itself, to /dev/null, not to our stderr.)
  (
    ulimit -v 8388608 2>/dev/null
    timeout -k 5 "$timeout_s" "$bin" run "$f" >/dev/null 2>"$err"
    status=$?
    exit "$status"
  ) 2>/dev/null
  rc=$?
  set -e
  msg="$(grep -v '^[[:space:]]*$' "$err" | head -n 1 | cut -c1-160 || true)"
  case $rc in
    1) verdict="PASS"; why="clean error" ;;
    0) verdict="FAIL"; why="accepted (exit 0)" ;;
    101) verdict="FAIL"; why="panicked (exit 101)" ;;
    124 | 137) verdict="FAIL"; why="hung (killed after ${timeout_s}s)" ;;
    *)
      verdict="FAIL"
      if [ "$rc" -gt 128 ]; then why="crashed with signal $((rc - 128))"; else why="exit code $rc, expected 1"; fi
      ;;
  esac
  if [ "$verdict" = PASS ]; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
  echo "$verdict $name: $why${msg:+ -- $msg}"
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
