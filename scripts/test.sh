#!/usr/bin/env bash
# kuaxin's whole test suite: what CI runs (through .ci/run) and what to run before sending a change.
#
#   1. build      cargo build --release -p kuaxin-cli
#   2. unit       cargo test --release --workspace
#   3. node       the official ONNX backend node tests against tests/conformance/cpu.pass, fused and unfused
#   4. models     real models against onnxruntime (scripts/real-models.py), fused and unfused
#   5. bad-models malformed models must be refused cleanly (scripts/check-bad-models.sh)
#   6. check      kuaxin check on MiniLM-L3: f64 reference, planted fault, exit codes, HTML report
#                 in headless Chromium, conformance coverage matrix (scripts/check-report.sh)
#   7. wgpu       cargo build --features wgpu, then the node tests on the wgpu back end (Mesa's
#                 software Vulkan driver in CI) against tests/conformance/wgpu.pass, and the real
#                 models on wgpu against onnxruntime. Runs last:
#                 it leaves a wgpu-enabled binary in target/release.
#
# Every stage runs even when an earlier one failed (stages 3-5 need the binary of stage 1),
# so one run shows everything that is broken. Ends with a summary line; exits 1 on any failure.
# Needs cargo, and python3 with venv support (scripts/py-env.sh builds the Python oracle venv).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
bin="$root/target/release/kuaxin"

passed=()
failed=()
skipped=()
stage_no=0
stage_total=7
start_all=$SECONDS

header() {
  stage_no=$((stage_no + 1))
  echo
  echo "=================================================================="
  echo "== [$stage_no/$stage_total] $1"
  echo "=================================================================="
}

# run_stage NAME CMD...: runs CMD, records the outcome, never stops the script.
run_stage() {
  local name="$1"
  shift
  local t0=$SECONDS
  set +e
  "$@"
  local rc=$?
  set -e
  if [ "$rc" -eq 0 ]; then
    passed+=("$name")
    echo "-- $name: ok ($((SECONDS - t0))s)"
  else
    failed+=("$name")
    echo "-- $name: FAILED with exit code $rc ($((SECONDS - t0))s)"
  fi
}

skip_stage() {
  skipped+=("$1")
  echo "-- $1: skipped: $2"
}

node_tests() {
  local suite
  suite="$(bash scripts/onnx-node-tests.sh | tail -n 1)" || return 1
  echo "-- fused (the default):"
  "$bin" conformance --suite "$suite" --device cpu --pass-list tests/conformance/cpu.pass || return 1
  # Fusion bugs are the commonest wrong-answer bugs: the same list must pass unfused too.
  echo "-- unfused (--no-fuse):"
  "$bin" conformance --suite "$suite" --device cpu --pass-list tests/conformance/cpu.pass --no-fuse
}

real_models() {
  local py="$1"
  echo "-- fused (the default):"
  "$py" scripts/real-models.py "$bin" || return 1
  echo "-- unfused (--no-fuse):"
  "$py" scripts/real-models.py "$bin" --kuaxin-arg=--no-fuse
}

wgpu_tests() {
  cargo build --release -p kuaxin-cli --features wgpu || return 1
  if ! "$bin" devices 2>/dev/null | grep -q '^wgpu:'; then
    echo "-- no wgpu adapter found (Debian: apt-get install mesa-vulkan-drivers libvulkan1)"
    return 1
  fi
  "$bin" devices 2>/dev/null | grep '^wgpu:'
  local suite
  suite="$(bash scripts/onnx-node-tests.sh | tail -n 1)" || return 1
  "$bin" conformance --suite "$suite" --device wgpu --pass-list tests/conformance/wgpu.pass 2>&1 | grep -v XDG_RUNTIME_DIR
  local rc="${PIPESTATUS[0]}"
  [ "$rc" -eq 0 ] || return "$rc"
  # The real models on wgpu, against the same onnxruntime references as on the CPU.
  echo "-- real models on wgpu:"
  "$(python_venv)" scripts/real-models.py "$bin" --kuaxin-arg=--device --kuaxin-arg=wgpu 2>&1 | grep -v XDG_RUNTIME_DIR
  return "${PIPESTATUS[0]}"
}

python_venv() {
  bash scripts/py-env.sh | tail -n 1
}

header "build: cargo build --release -p kuaxin-cli"
run_stage build cargo build --release -p kuaxin-cli

header "unit: cargo test --release --workspace"
run_stage unit cargo test --release --workspace

header "node: ONNX backend node tests (kuaxin conformance, tests/conformance/cpu.pass)"
if [ -x "$bin" ] && [[ " ${passed[*]} " == *" build "* ]]; then
  run_stage node node_tests
else
  skip_stage node "no kuaxin binary (the build failed)"
fi

header "models: real models against onnxruntime (scripts/real-models.py)"
if [ -x "$bin" ] && [[ " ${passed[*]} " == *" build "* ]]; then
  set +e
  py="$(python_venv)"
  venv_rc=$?
  set -e
  if [ "$venv_rc" -ne 0 ] || [ ! -x "$py" ]; then
    failed+=("models")
    echo "-- models: FAILED: scripts/py-env.sh could not make the Python venv"
  else
    run_stage models real_models "$py"
  fi
else
  skip_stage models "no kuaxin binary (the build failed)"
fi

header "bad-models: malformed models must give a clean error (scripts/check-bad-models.sh)"
if [ -x "$bin" ] && [[ " ${passed[*]} " == *" build "* ]]; then
  run_stage bad-models bash scripts/check-bad-models.sh "$bin"
else
  skip_stage bad-models "no kuaxin binary (the build failed)"
fi

header "check: kuaxin check on MiniLM-L3, planted fault, HTML report in Chromium (scripts/check-report.sh)"
if [ -x "$bin" ] && [[ " ${passed[*]} " == *" build "* ]]; then
  set +e
  py="$(python_venv)"
  venv_rc=$?
  set -e
  if [ "$venv_rc" -ne 0 ] || [ ! -x "$py" ]; then
    failed+=("check")
    echo "-- check: FAILED: scripts/py-env.sh could not make the Python venv"
  else
    run_stage check bash scripts/check-report.sh "$bin" "$py"
  fi
else
  skip_stage check "no kuaxin binary (the build failed)"
fi

header "wgpu: build with --features wgpu, node tests on wgpu (tests/conformance/wgpu.pass)"
if [[ " ${passed[*]} " == *" build "* ]]; then
  run_stage wgpu wgpu_tests
else
  skip_stage wgpu "the default build failed"
fi

echo
echo "=================================================================="
elapsed=$((SECONDS - start_all))
summary="passed: ${passed[*]:-none}"
if [ ${#failed[@]} -gt 0 ]; then summary+="; FAILED: ${failed[*]}"; fi
if [ ${#skipped[@]} -gt 0 ]; then summary+="; skipped: ${skipped[*]}"; fi
if [ ${#failed[@]} -eq 0 ] && [ ${#skipped[@]} -eq 0 ]; then
  echo "test.sh: ALL ${#passed[@]} STAGES PASSED ($summary) in ${elapsed}s"
  exit 0
fi
echo "test.sh: FAILED ($summary) in ${elapsed}s"
exit 1
