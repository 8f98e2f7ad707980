#!/usr/bin/env python3
"""Per-node A/B of convolution times between engine variants, robust to a noisy shared host.

Dev script (never needed by cargo test). Runs `engine profile MODEL -f json` once per variant per
round, alternating the order (A B, B A, ...), and normalises each run's node times by that run's
total over *reference* nodes (a regex matching convs the variants do not change), which cancels
the machine's slow and fast phases. Prints the normalised median per node and each variant's
ratio to the first. This is how the per-node figures in docs/benchmarks.md were measured.

A variant is a comma-separated list of environment settings, e.g. `ENGINE_POINTWISE=gemm`;
`X=1` is a no-op setting (the default); `ENGINE_BIN=path` runs another engine binary (compare
two builds).

Usage (from the repository root, after `cargo build --release -p engine-cli`):
  python3 scripts/ab_node_times.py .cache/models/resnet50.onnx 1 4 'layer1.*conv2/Conv$' \\
      ENGINE_POINTWISE=gemm X=1
"""
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile


def main():
    if len(sys.argv) < 6:
        sys.exit(__doc__)
    model, threads, rounds, ref = sys.argv[1], sys.argv[2], int(sys.argv[3]), re.compile(sys.argv[4])
    variants = sys.argv[5:]
    runs = {v: [] for v in variants}
    out = os.path.join(tempfile.mkdtemp(), "profile.json")
    for r in range(rounds):
        for v in variants if r % 2 == 0 else variants[::-1]:
            env = dict(os.environ)
            exe = os.path.join("target", "release", "engine")
            for kv in v.split(","):
                k, val = kv.split("=", 1)
                if k == "ENGINE_BIN":
                    exe = val
                else:
                    env[k] = val
            subprocess.run(
                [exe, "profile", model, "-t", threads, "--iters", "5", "-q", "-f", "json", "-o", out],
                env=env,
                check=True,
            )
            with open(out) as f:
                nodes = json.load(f)["nodes"]
            runs[v].append(
                {n["name"]: n["time_ms"] for n in nodes if n["op"] == "Conv" and n.get("time_ms") is not None}
            )

    def ref_total(t):
        return sum(x for n, x in t.items() if ref.search(n))

    median_ref = statistics.median(ref_total(t) for v in variants for t in runs[v])
    if median_ref == 0:
        sys.exit("no reference node matched")
    norm = {v: [{n: x * median_ref / ref_total(t) for n, x in t.items()} for t in runs[v]] for v in variants}
    print("run factors:", {v: [round(ref_total(t) / median_ref, 2) for t in runs[v]] for v in variants})
    names = [n for n in runs[variants[0]][0] if not ref.search(n)]
    totals = {v: round(statistics.median(sum(t[n] for n in names) for t in norm[v]), 2) for v in variants}
    print("non-reference conv total (normalised ms):", totals)
    for name in names:
        ms = [statistics.median(t[name] for t in norm[v]) for v in variants]
        ratios = " ".join(f"{m / ms[0]:.2f}" for m in ms[1:])
        print(f"{name[:48]:48s} " + " ".join(f"{m:7.3f}" for m in ms) + "  " + ratios)


if __name__ == "__main__":
    main()
