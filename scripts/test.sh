#!/usr/bin/env bash
# kuaxin's whole test suite: what CI runs (through .ci/run) and what to run before sending a change.
#
#   1. build      cargo build --release -p kuaxin-cli
#   2. unit       cargo test --release --workspace (includes the LLM fixtures against transformers)
#   3. node       the official ONNX backend node tests against tests/conformance/cpu.pass, fused and unfused
#   4. models     real models against onnxruntime (scripts/real-models.py), fused and unfused
#   5. bad-models malformed models must be refused cleanly (scripts/check-bad-models.sh)
#   6. check      kuaxin check on MiniLM-L3: f64 reference, planted fault, exit codes, HTML report
#                 in headless Chromium, conformance coverage matrix (scripts/check-report.sh)
#   7. wgpu       cargo build --features wgpu, then the node tests on the wgpu back end (Mesa's
#                 software Vulkan driver in CI) against tests/conformance/wgpu.pass, and the real
#                 models on wgpu against onnxruntime, and the LLM fixtures on wgpu.
#   8. cuda       the kuaxin-cuda crate's tests (its generated kernels run on the host via g++ against
#                 the CPU), cargo build --features wgpu,cuda, then the CUDA generator without a GPU: the node
#                 tests, the real models and the LLM fixtures on `--device cuda-codegen`, which runs on the CPU but
#                 compiles every kernel the CUDA back end would launch with NVRTC (PyPI
#                 nvidia-cuda-nvrtc 13.0, from scripts/py-env.sh) to PTX for compute_90; any compile
#                 error fails a test. Prints the count compiled. Runs last: it leaves a binary with
#                 both GPU back ends in target/release.
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
stage_total=8
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
  rc="${PIPESTATUS[0]}"
  [ "$rc" -eq 0 ] || return "$rc"
  # The LLM fixtures (7 architectures) against transformers' logits and greedy tokens.
  echo "-- LLM fixtures on wgpu:"
  KUAXIN_TEST_DEVICES=wgpu cargo test --release -p kuaxin-llm --features wgpu --test reference 2>&1 | grep -v XDG_RUNTIME_DIR
  return "${PIPESTATUS[0]}"
}

cuda_codegen_tests() {
  cargo build --release -p kuaxin-cli --features wgpu,cuda || return 1
  local py lib suite log
  py="$(python_venv)" || return 1
  lib="$("$py" -c 'import glob, os, sysconfig; print(next((os.path.dirname(p) for p in glob.glob(sysconfig.get_paths()["purelib"] + "/nvidia/*/lib/libnvrtc.so.13")), ""))')"
  if [ -z "$lib" ]; then
    echo "-- libnvrtc.so.13 not found in the venv (scripts/py-env.sh installs nvidia-cuda-nvrtc)"
    return 1
  fi
  export LD_LIBRARY_PATH="$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  # The crate's own tests (renderer, dialect table, NVRTC errors, no-driver error; the generated
  # kernels run on the host through g++ against the CPU back end). Not a workspace member: its
  # own lock file (seeded from the workspace's, so the same builds of its dependencies are
  # reused), the workspace's target folder.
  cp Cargo.lock crates/kuaxin-cuda/Cargo.lock
  cargo test --release --manifest-path crates/kuaxin-cuda/Cargo.toml \
    --target-dir "${CARGO_TARGET_DIR:-$root/target}" || return 1
  # Without a driver, --device cuda must fail with one clear line, not a panic.
  if ! "$bin" devices 2>/dev/null | grep -q '^cuda:'; then
    local msg drc
    msg="$("$bin" demo --device cuda 2>&1)"
    drc=$?
    if [ "$drc" -ne 1 ] || ! grep -q '^error: .*no CUDA driver' <<<"$msg"; then
      echo "-- --device cuda without a driver should exit 1 with a clear error; got exit $drc:"
      echo "$msg"
      return 1
    fi
    echo "-- --device cuda without a driver: $(grep '^error:' <<<"$msg")"
  fi
  suite="$(bash scripts/onnx-node-tests.sh | tail -n 1)" || return 1
  log="$(mktemp)"
  "$bin" conformance --suite "$suite" --device cuda-codegen --pass-list tests/conformance/cpu.pass >"$log" 2>&1
  local rc=$?
  grep -v '^SKIP ' "$log"
  # The check must have compiled something: a generator that renders nothing proves nothing.
  if ! grep -Eq '^cuda-codegen: [1-9][0-9]* distinct kernels compiled' "$log"; then
    echo "-- no kernels were compiled"
    rc=1
  fi
  rm -f "$log"
  [ "$rc" -eq 0 ] || return "$rc"
  echo "-- real models on cuda-codegen:"
  "$py" scripts/real-models.py "$bin" --kuaxin-arg=--device --kuaxin-arg=cuda-codegen || return 1
  # The LLM fixtures: every kernel their graphs generate compiles, and the results match.
  echo "-- LLM fixtures on cuda-codegen:"
  KUAXIN_TEST_DEVICES=cuda-codegen cargo test --release -p kuaxin-llm --features wgpu,cuda --test reference
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

header "cuda: build with --features cuda, every CUDA kernel of the node tests and real models through NVRTC"
if [[ " ${passed[*]} " == *" build "* ]]; then
  run_stage cuda cuda_codegen_tests
else
  skip_stage cuda "the default build failed"
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
