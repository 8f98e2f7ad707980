#!/usr/bin/env python3
"""Peer benchmark: engine vs ONNX Runtime vs tract on the same ONNX files.

Dev script (never needed by cargo test). For every (model, batch, threads) case it runs, in
rounds interleaved so that load from other processes hits all three alike:
  * ONNX Runtime in a subprocess (intra_op_num_threads=N, inter_op 1, sequential, all graph
    optimizations),
  * `target/release/engine bench MODEL --json`,
  * the `peers` binary (engine vs tract in one process, alternating run by run),
and prints a markdown table of medians (median over rounds of each round's median) and the
ratios engine/ORT and engine/tract, plus (1-thread cases) the median CPU time per run, which
waiting for a core on a loaded machine does not inflate (ORT: process_time; engine and tract:
the peers binary's schedstat sum). Peak RSS of `engine run` and of an ORT run (one inference
each, fresh process) is read from /usr/bin/time -v when present, else from getrusage of the child.

Usage (from the repository root, after `cargo build --release -p engine-cli` and
`cargo build --release -p engine-benches --bin peers`):
  /work/venv/bin/python scripts/bench_peers.py [--threads 1 2] [--rounds 3] [--iters 20]
"""
import argparse
import json
import os
import re
import resource
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.path.join(ROOT, ".cache", "models")
ENGINE = os.environ.get("ENGINE_BIN", os.path.join(ROOT, "target", "release", "engine"))
PEERS = os.environ.get("PEERS_BIN", os.path.join(ROOT, "target", "release", "peers"))

ORT_CODE = r"""
import json, sys, time
import numpy as np, onnxruntime as ort
path, batch, threads, warmup, iters, mode = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
so = ort.SessionOptions()
so.intra_op_num_threads = threads
so.inter_op_num_threads = 1
so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
inp = s.get_inputs()[0]
shape = [batch] + [d for d in inp.shape[1:]]
x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
if mode == "rss":
    s.run(None, {inp.name: x})
    sys.exit(0)
for _ in range(warmup):
    s.run(None, {inp.name: x})
ts, cs = [], []
for _ in range(iters):
    c = time.process_time(); t = time.perf_counter(); s.run(None, {inp.name: x})
    ts.append((time.perf_counter() - t) * 1e3); cs.append((time.process_time() - c) * 1e3)
def med(v):
    v = sorted(v); n = len(v)
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2
print(json.dumps({"median_ms": med(ts), "min_ms": min(ts), "cpu_median_ms": med(cs)}))
"""


def export_b8():
    """resnet50 with a dynamic batch axis (same weights recipe as check_full_models.py)."""
    path = os.path.join(CACHE, "resnet50_b8.onnx")
    if os.path.exists(path):
        return path
    import torch

    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    import check_full_models as cfm

    gen = torch.Generator().manual_seed(20261126)
    model, size = cfm.build("resnet50")
    cfm.randomize_bn(model, gen, size)
    x = torch.randn(8, 3, size, size, generator=gen)
    torch.onnx.export(model, (x,), path, input_names=["input"], output_names=["output"],
                      opset_version=17, dynamo=False,
                      dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
    return path


def run_json(cmd):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def peak_rss(cmd):
    """Peak RSS in bytes of `cmd` run in a fresh process."""
    if os.path.exists("/usr/bin/time"):
        r = subprocess.run(["/usr/bin/time", "-v"] + cmd, capture_output=True, text=True, check=True)
        m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr)
        if m:
            return int(m.group(1)) * 1024
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    subprocess.run(cmd, capture_output=True, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    # ru_maxrss of children is the max over all children so far: only exact for the first.
    return max(after, before) * 1024


def median(v):
    v = sorted(v)
    n = len(v)
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds per case")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--models", nargs="+", default=["resnet50", "resnext50_32x4d", "inception_v3", "resnet50_b8"])
    ap.add_argument("--no-tract", action="store_true")
    ap.add_argument("--no-rss", action="store_true")
    args = ap.parse_args()

    cases = []
    for name in args.models:
        if name == "resnet50_b8":
            path, batch = export_b8(), 8
        else:
            path, batch = os.path.join(CACHE, f"{name}.onnx"), 1
        for t in args.threads:
            cases.append((name, path, batch, t))

    rows = []
    for name, path, batch, t in cases:
        res = {"ort": [], "engine": [], "tract": [], "engine_in_peers": [], "ort_cpu": [], "engine_cpu": [],
               "tract_cpu": []}
        for r in range(args.rounds):
            common = [str(batch), str(t), str(args.warmup), str(args.iters)]
            o = run_json([sys.executable, "-c", ORT_CODE, path] + common + ["time"])
            res["ort"].append(o["median_ms"])
            res["ort_cpu"].append(o["cpu_median_ms"])
            e = run_json([ENGINE, "bench", path, "--batch", str(batch), "--threads", str(t), "--warmup",
                          str(args.warmup), "--iters", str(args.iters), "--json", "--quiet"])
            res["engine"].append(e["median_ms"])
            if not args.no_tract:
                p = run_json([PEERS, path, "--batch", str(batch), "--threads", str(t), "--warmup",
                              str(args.warmup), "--iters", str(args.iters)])
                res["tract"].append(p["tract_median_ms"])
                res["engine_in_peers"].append(p["engine_median_ms"])
                res["engine_cpu"].append(p.get("engine_cpu_median_ms", 0.0))
                res["tract_cpu"].append(p.get("tract_cpu_median_ms", 0.0))
            print(f"# {name} b{batch} t{t} round {r}: ort {res['ort'][-1]:.1f} engine {res['engine'][-1]:.1f}"
                  + ("" if args.no_tract else f" tract {res['tract'][-1]:.1f} (engine beside tract {res['engine_in_peers'][-1]:.1f})"),
                  file=sys.stderr, flush=True)
        row = {k: (median(v) if v else None) for k, v in res.items()}
        row.update(name=name, batch=batch, threads=t)
        if not args.no_rss:
            row["rss_engine"] = peak_rss([ENGINE, "run", path, "--batch", str(batch), "--threads", str(t)])
            row["rss_ort"] = peak_rss([sys.executable, "-c", ORT_CODE, path, str(batch), str(t), "0", "0", "rss"])
        rows.append(row)
        print(f"# {name} b{batch} t{t}: {json.dumps(row)}", file=sys.stderr, flush=True)

    print("| model | batch | threads | engine ms | ORT ms | tract ms | engine/ORT | engine/tract (same process) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        tract = f"{r['tract']:.1f}" if r["tract"] else "-"
        et = f"{r['engine_in_peers'] / r['tract']:.2f}" if r["tract"] else "-"
        print(f"| {r['name']} | {r['batch']} | {r['threads']} | {r['engine']:.1f} | {r['ort']:.1f} | {tract} | "
              f"{r['engine'] / r['ort']:.2f} | {et} |")
    cpu_rows = [r for r in rows if r["threads"] == 1 and r.get("engine_cpu")]
    if cpu_rows:
        print()
        print("| model | batch | threads | engine CPU ms | ORT CPU ms | tract CPU ms | engine/ORT (CPU) | engine/tract (CPU) |")
        print("|---|---|---|---|---|---|---|---|")
        for r in cpu_rows:
            print(f"| {r['name']} | {r['batch']} | 1 | {r['engine_cpu']:.1f} | {r['ort_cpu']:.1f} | {r['tract_cpu']:.1f} | "
                  f"{r['engine_cpu'] / r['ort_cpu']:.2f} | {r['engine_cpu'] / r['tract_cpu']:.2f} |")
    if not args.no_rss:
        print()
        print("| model | batch | threads | peak RSS `engine run` (MiB) | peak RSS ORT python process (MiB) |")
        print("|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['name']} | {r['batch']} | {r['threads']} | {r['rss_engine'] / 2**20:.0f} | {r['rss_ort'] / 2**20:.0f} |")


if __name__ == "__main__":
    main()
