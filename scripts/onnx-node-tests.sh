#!/usr/bin/env bash
# Writes the official ONNX backend node tests (onnx 1.23.2) into target/onnx-node-tests
# and prints that folder as its last line. Reuses the folder when it is complete.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="$root/target/onnx-node-tests"
stamp="$out/.complete-onnx-1.23.2"
if [ ! -f "$stamp" ]; then
  py="$("$root/scripts/py-env.sh" | tail -n 1)"
  rm -rf "$out"
  mkdir -p "$out"
  "$py" - "$out" >&2 <<'PY'
import sys
import argparse
from onnx.backend.test import cmd_tools
from onnx.backend.test.case import node
# generate_data writes the cases that model_test collects; point it at the node cases.
cmd_tools.model_test.collect_testcases = node.collect_testcases
cmd_tools.generate_data(argparse.Namespace(output=sys.argv[1], op_type=None, diff=False))
PY
  # generate_data writes <out>/node/<test>; flatten so each test is <out>/<test>
  if [ -d "$out/node" ]; then
    find "$out" -mindepth 1 -maxdepth 1 ! -name node -exec rm -rf {} +
    mv "$out/node"/* "$out"/ && rmdir "$out/node"
  fi
  count=$(find "$out" -mindepth 1 -maxdepth 1 -type d | wc -l)
  echo "wrote $count node tests" >&2
  touch "$stamp"
fi
echo "$out"
