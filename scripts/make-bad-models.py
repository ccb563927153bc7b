"""Writes the malformed models that only fail when run (the loader accepts them) into
tests/bad-models/run_*.onnx. Run once with the venv python; the files are checked in.
Each must make `kuaxin run` exit with a clean error (scripts/check-bad-models.sh)."""
import os
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

out = os.path.join(os.path.dirname(__file__), "..", "tests", "bad-models")


def save(name, nodes, inputs, outputs, inits=(), opset=17):
    g = helper.make_graph(nodes, name, inputs, outputs, initializer=list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    onnx.save(m, os.path.join(out, f"run_{name}.onnx"))


f32 = lambda n, s: helper.make_tensor_value_info(n, TensorProto.FLOAT, s)
i64 = lambda n, s: helper.make_tensor_value_info(n, TensorProto.INT64, s)
c64 = lambda name, v: numpy_helper.from_array(np.array(v, dtype=np.int64), name)

# A 4e15-element constant: must be refused before allocating.
save("constant_of_shape_huge", [helper.make_node("ConstantOfShape", ["s"], ["y"])], [], [f32("y", None)],
     [c64("s", [100000, 100000, 400000])])
# Expand of an input to 10^13 elements.
save("expand_huge", [helper.make_node("Expand", ["x", "s"], ["y"])], [f32("x", [1])], [f32("y", None)],
     [c64("s", [10000000, 1000000])])
# Reshape to a negative size other than -1.
save("reshape_negative", [helper.make_node("Reshape", ["x", "s"], ["y"])], [f32("x", [2, 3])], [f32("y", None)],
     [c64("s", [-2, 3])])
# Reshape to a different element count.
save("reshape_wrong_count", [helper.make_node("Reshape", ["x", "s"], ["y"])], [f32("x", [2, 3])], [f32("y", None)],
     [c64("s", [4, 2])])
# Gather with an index out of range.
save("gather_out_of_range", [helper.make_node("Gather", ["x", "i"], ["y"])], [f32("x", [3, 2])], [f32("y", None)],
     [c64("i", [0, 7])])
# MatMul of shapes that do not fit.
save("matmul_mismatch", [helper.make_node("MatMul", ["a", "b"], ["y"])], [f32("a", [2, 3]), f32("b", [4, 5])], [f32("y", None)])
# Conv whose weights have the wrong channel count.
save("conv_channel_mismatch", [helper.make_node("Conv", ["x", "w"], ["y"])], [f32("x", [1, 3, 8, 8])], [f32("y", None)],
     [numpy_helper.from_array(np.ones((4, 5, 3, 3), np.float32), "w")])
# Add of two different dtypes.
save("add_mixed_dtypes", [helper.make_node("Add", ["a", "b"], ["y"])], [f32("a", [2]), i64("b", [2])], [f32("y", None)])
# A Range of 10^12 elements.
save("range_huge", [helper.make_node("Range", ["s", "l", "d"], ["y"])], [], [f32("y", None)],
     [numpy_helper.from_array(np.array(0, np.float32), "s"), numpy_helper.from_array(np.array(1e12, np.float32), "l"),
      numpy_helper.from_array(np.array(1, np.float32), "d")])
# A Loop that never stops (no trip count, condition stays true); its carried value is used.
body = helper.make_graph([helper.make_node("Identity", ["c_in"], ["c_out"]), helper.make_node("Neg", ["v_in"], ["v_out"])], "body",
                         [i64("i", []), helper.make_tensor_value_info("c_in", TensorProto.BOOL, []), f32("v_in", [1])],
                         [helper.make_tensor_value_info("c_out", TensorProto.BOOL, []), f32("v_out", [1])])
save("loop_forever", [helper.make_node("Loop", ["", "c", "x"], ["y"], body=body)],
     [f32("x", [1])], [f32("y", None)], [numpy_helper.from_array(np.array(True), "c")])
# An op from an unknown domain.
save("unknown_domain", [helper.make_node("Frobnicate", ["x"], ["y"], domain="com.example")], [f32("x", [1])], [f32("y", None)])
# An attribute of the wrong type (Transpose perm as a float).
save("wrong_attribute_type", [helper.make_node("Transpose", ["x"], ["y"], perm=1.5)], [f32("x", [2, 3])], [f32("y", None)])
# Transpose with a permutation that repeats an axis.
save("transpose_bad_perm", [helper.make_node("Transpose", ["x"], ["y"], perm=[0, 0])], [f32("x", [2, 3])], [f32("y", None)])
# Concat of incompatible shapes.
save("concat_mismatch", [helper.make_node("Concat", ["a", "b"], ["y"], axis=0)], [f32("a", [2, 3]), f32("b", [2, 4])], [f32("y", None)])
print("wrote", len([f for f in os.listdir(out) if f.startswith("run_")]), "run-time bad models")
