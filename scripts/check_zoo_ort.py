#!/usr/bin/env python3
"""Dev check for the model zoo (issue 5): every `engine zoo NAME -o FILE.onnx` file must load in
ONNX Runtime (onnx.checker too) and give the same outputs as the engine on the same input.

Not needed by `cargo test` (the round-trip test there reads the files back with the engine's own
importer); run it by hand after changing the zoo:

    cargo build --release -p engine-cli
    /work/venv/bin/python scripts/check_zoo_ort.py            # reduced sizes, all 14 models
    /work/venv/bin/python scripts/check_zoo_ort.py --full     # the full-size architectures

Prints one row per model (max |engine − ORT| relative to max |ORT|) and exits 1 if any model
fails to load or differs by more than 1e-4 relative.
"""
import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np
import onnx
import onnxruntime as ort

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENGINE = os.path.join(ROOT, "target", "release", "engine")

# name -> (reduced-size options, input side used for both runs)
MODELS = {
    "resnet18": ["--width", "0.25", "--input-size", "64"],
    "resnet34": ["--width", "0.25", "--input-size", "64"],
    "resnet50": ["--width", "0.25", "--input-size", "64"],
    "resnet50_v1": ["--width", "0.25", "--input-size", "64"],
    "resnet101": ["--width", "0.125", "--input-size", "64"],
    "resnet152": ["--width", "0.125", "--input-size", "64"],
    "resnext50_32x4d": ["--width", "0.25", "--input-size", "64"],
    "resnext101_32x8d": ["--width", "0.125", "--input-size", "64"],
    "resnet20": [],
    "resnet56": [],
    "inception_v3": ["--width", "0.25", "--input-size", "107"],
    "inception_v4": ["--width", "0.25", "--input-size", "107"],
    "inception_cifar": [],
    "vgg16": ["--width", "0.25", "--input-size", "64"],
}


def check(name, opts, work, bn):
    path = os.path.join(work, f"{name}_{bn}.onnx")
    subprocess.run([ENGINE, "zoo", name, *opts, "--batch", "1", "--bn", bn, "-o", path],
                   check=True, stdout=subprocess.DEVNULL)
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    opset = {o.domain: o.version for o in model.opset_import}.get("", None)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    shape = [d if isinstance(d, int) else 1 for d in inp.shape]
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    ref = sess.run(None, {inp.name: x})[0]
    xin = os.path.join(work, f"{name}_in.npy")
    out = os.path.join(work, f"{name}_out.npy")
    np.save(xin, x)
    subprocess.run([ENGINE, "run", path, "--input", xin, "--output", out, "--threads", "1"],
                   check=True, stdout=subprocess.DEVNULL)
    got = np.load(out)
    rel = float(np.abs(got - ref).max() / max(1.0, float(np.abs(ref).max())))
    return opset, shape, rel


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--full", action="store_true", help="full-size models (slow)")
    ap.add_argument("--only", nargs="*", help="model names")
    args = ap.parse_args()
    failed = 0
    print(f"onnxruntime {ort.__version__}, onnx {onnx.__version__}")
    print(f"{'model':18} {'bn':5} {'opset':>5} {'input':>16} {'max rel diff':>13}")
    with tempfile.TemporaryDirectory() as work:
        for name, opts in MODELS.items():
            if args.only and name not in args.only:
                continue
            for bn in ["keep", "fold"]:
                try:
                    opset, shape, rel = check(name, [] if args.full else opts, work, bn)
                except Exception as e:  # report every model, then fail
                    print(f"{name:18} {bn:5} FAILED: {e}")
                    failed += 1
                    continue
                ok = rel <= 1e-4
                failed += not ok
                dims = "x".join(map(str, shape))
                print(f"{name:18} {bn:5} {opset:>5} {dims:>16} {rel:13.2e} {'ok' if ok else 'MISMATCH'}")
    print("all loaded and matched" if not failed else f"{failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
