#!/usr/bin/env python3
"""Per-node times: engine vs ONNX Runtime on the same model, same threads.

Dev script (never needed by cargo test). Runs `target/release/engine profile MODEL --format
json` and an ONNX Runtime session with its profiler on (`enable_profiling`, all graph
optimizations, `intra_op_num_threads=N`), and prints one row per engine execution node: the
engine's median time, ORT's median kernel time for the same ONNX nodes, their ratio and the
engine's GFLOP/s, largest gap first. This is how the per-node gaps quoted in
docs/benchmarks.md were found.

Matching: ORT renames the nodes it rewrites (fused Conv+Relu+Add, NCHWc convolutions are
named after their output value, with a `_nchwc` suffix); every ORT kernel is attributed to the
engine group (fused head) that produces that value or has that node name. ORT kernels that
match nothing (layout reorders) are summed on the last line.

Usage (from the repository root, after `cargo build --release -p engine-cli`):
  /work/venv/bin/python scripts/node_times_vs_ort.py .cache/models/resnet50.onnx [--threads 1] [--iters 10] [--rounds 3]
"""
import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import onnxruntime as ort

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def engine_profile(model, threads, iters):
    exe = os.path.join(ROOT, "target", "release", "engine")
    out = subprocess.run(
        [exe, "profile", model, "-t", str(threads), "-q", "--iters", str(iters), "--format", "json"],
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        sys.exit(f"engine profile failed: {out.stderr}")
    return json.loads(out.stdout)


def ort_profile(model, threads, iters):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.enable_profiling = True
    so.profile_file_prefix = os.path.join(tempfile.mkdtemp(), "ort")
    sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    shape = [d if isinstance(d, int) else 1 for d in inp.shape]
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    for _ in range(3):
        sess.run(None, {inp.name: x})
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        sess.run(None, {inp.name: x})
        times.append(time.perf_counter() - t)
    events = json.load(open(sess.end_profiling()))
    per_node = collections.defaultdict(list)
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            per_node[e["name"][: -len("_kernel_time")]].append(e["dur"] / 1000.0)
    medians = {k: sorted(v)[len(v) // 2] for k, v in per_node.items()}
    return sorted(times)[len(times) // 2] * 1000.0, medians


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--top", type=int, default=40, help="rows to print (largest gaps first)")
    ap.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="alternate engine and ORT this many times and keep each node's fastest median "
        "(the host has slow phases that last longer than one profile)",
    )
    a = ap.parse_args()

    rep, ort_run_ms, ort_nodes = None, None, {}
    for _ in range(a.rounds):
        r = engine_profile(a.model, a.threads, a.iters)
        if rep is None:
            rep = r
        else:
            rep["totals"]["time_ms"] = min(rep["totals"]["time_ms"], r["totals"]["time_ms"])
            for n, m in zip(rep["nodes"], r["nodes"]):
                if n["time_ms"] is not None and m["time_ms"] is not None and m["time_ms"] < n["time_ms"]:
                    n["time_ms"], n["gflops"] = m["time_ms"], m["gflops"]
        run_ms, nodes = ort_profile(a.model, a.threads, a.iters)
        ort_run_ms = run_ms if ort_run_ms is None else min(ort_run_ms, run_ms)
        for k, v in nodes.items():
            ort_nodes[k] = min(ort_nodes.get(k, v), v)

    head_of = {}
    for n in rep["nodes"]:
        head = n["fused_into"] or n["name"]
        head_of[n["name"]] = head
        for o in n["outputs"]:
            head_of[o["name"]] = head
    ort_by_head = collections.defaultdict(float)
    unmatched = 0.0
    for name, ms in ort_nodes.items():
        key = name[: -len("_nchwc")] if name.endswith("_nchwc") else name
        if key in head_of:
            ort_by_head[head_of[key]] += ms
        else:
            unmatched += ms

    rows = []
    for n in rep["nodes"]:
        if n["time_ms"] is None:
            continue
        o = ort_by_head.get(n["name"])
        weight = n["inputs"][1]["shape"] if len(n["inputs"]) > 1 else None
        rows.append((n["name"], n["op"], n["outputs"][0]["shape"], weight, n["time_ms"], o, n["gflops"] or 0.0))
    rows.sort(key=lambda r: -(r[4] - (r[5] or 0.0)))

    print(
        f"{a.model}, {a.threads} thread(s), medians of {a.iters} runs (best of {a.rounds} rounds): engine run {rep['totals']['time_ms']:.1f} ms, "
        f"ORT run {ort_run_ms:.1f} ms (ORT kernels sum {sum(ort_nodes.values()):.1f} ms)"
    )
    print(f"{'node':44} {'op':12} {'output':20} {'weights':18} {'engine':>8} {'ORT':>8} {'ratio':>6} {'GFLOP/s':>8}")
    for name, op, shape, weight, te, to, gf in rows[: a.top]:
        ratio = f"{te / to:6.2f}" if to else "     -"
        tos = f"{to:8.3f}" if to is not None else "       -"
        print(f"{name[:44]:44} {op[:12]:12} {str(shape):20} {str(weight):18} {te:8.3f} {tos} {ratio} {gf:8.1f}")
    print(f"ORT kernels matching no engine node (layout reorders): {unmatched:.3f} ms")


if __name__ == "__main__":
    main()
