"""Writes tests/models/fuzz_seed.onnx: a small valid model touching many op families, the seed
that crates/kuaxin/tests/mutated_models.rs mutates. Run once with the venv python; checked in."""
import os
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

rng = np.random.default_rng(0)
W = lambda name, *shape: numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32) * 0.3, name)
I = lambda name, v: numpy_helper.from_array(np.array(v, dtype=np.int64), name)
nodes = [
    helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], strides=[1, 1]),
    helper.make_node("Relu", ["c"], ["r"]),
    helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
    helper.make_node("Reshape", ["p", "shape"], ["f"]),
    helper.make_node("MatMul", ["f", "w2"], ["m"]),
    helper.make_node("Add", ["m", "b2"], ["a"]),
    helper.make_node("LayerNormalization", ["a", "g", "beta"], ["ln"], axis=-1),
    helper.make_node("Slice", ["ln", "starts", "ends", "axes"], ["s"]),
    helper.make_node("Gather", ["s", "idx"], ["gt"], axis=1),
    helper.make_node("Concat", ["gt", "s"], ["cc"], axis=1),
    helper.make_node("Softmax", ["cc"], ["y"], axis=-1),
    helper.make_node("ReduceMean", ["y"], ["z"], axes=[1], keepdims=0),
]
inits = [W("w", 4, 3, 3, 3), W("b", 4), I("shape", [2, -1]), W("w2", 64, 8), W("b2", 8), W("g", 8), W("beta", 8),
         I("starts", [1]), I("ends", [6]), I("axes", [1]), I("idx", [0, 2])]
g = helper.make_graph(nodes, "fuzz_seed", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 8, 8])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 7]), helper.make_tensor_value_info("z", TensorProto.FLOAT, [2])], inits)
m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
m.ir_version = 8
onnx.checker.check_model(m)
out = os.path.join(os.path.dirname(__file__), "..", "tests", "models", "fuzz_seed.onnx")
onnx.save(m, out)
print(out, os.path.getsize(out), "bytes")
