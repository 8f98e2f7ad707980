#!/usr/bin/env python3
"""Dev tool (not run by CI): accuracy of the engine on full-size models against float64.

Exports torchvision resnet18 / resnet50 / resnext50_32x4d / inception_v3 and timm inception_v4
with random weights and non-trivial BatchNorm statistics into .cache/models/ (BN folded by the
exporter; --keep-bn exports with BN nodes kept instead), runs each in float64 torch as the
reference, and prints ONNX Runtime's and the engine's float32 error against it.

Also Keras applications (keras_resnet50, keras_inception_v3, keras_mobilenet_v2; weights=None)
converted with tf2onnx by scripts/export_keras_models.py, which this script runs in the TF venv
(/work/venv-tf, override with $TF_PYTHON) when their files are missing. Their graphs take an
NHWC input followed by a Transpose, use explicit Pad nodes, BatchNormalization as Mul/Add,
ReLU6 as Clip and (MobileNetV2) depthwise convolutions; their float64 reference is the Keras
model rebuilt in float64.

A model passes when the engine's error is at most 2x ONNX Runtime's (the issue's criterion).

The engine runs through its CLI: `target/release/engine run MODEL --input x.npy --output y.npy`
(build it first: cargo build --release -p engine-cli). When the binary is missing or fails, its column
says why and the rest of the table is still printed.

Usage: /work/venv/bin/python scripts/check_full_models.py [--models resnet50,keras_mobilenet_v2]
       [--threads 1] [--keep-bn] [--force-export]
Expected (../shared/README.md): ORT float32 error ~2e-5 (resnet50) to ~5e-4 (inception_v4).
"""

import argparse
import os
import subprocess
import sys
import time

import numpy as np
import onnxruntime as ort
import torch
import torch.nn as nn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.path.join(ROOT, ".cache", "models")
ENGINE = os.path.join(ROOT, "target", "release", "engine")


def build(name):
    import torchvision.models as tvm

    if name == "inception_v3":
        return tvm.inception_v3(weights=None, aux_logits=False, init_weights=True), 299
    if name == "inception_v4":
        import timm

        return timm.create_model("inception_v4", pretrained=False), 299
    return getattr(tvm, name)(weights=None), 224


TORCH_MODELS = ["resnet18", "resnet50", "resnext50_32x4d", "inception_v3", "inception_v4"]
KERAS_MODELS = ["keras_resnet50", "keras_inception_v3", "keras_mobilenet_v2"]
MODELS = TORCH_MODELS + KERAS_MODELS
TF_PYTHON = os.environ.get("TF_PYTHON", "/work/venv-tf/bin/python")


def randomize_bn(model, gen, size):
    """Random BN affine parameters and running statistics from a few train-mode passes, so
    activations stay O(1) through the whole network."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            with torch.no_grad():
                if m.affine:
                    m.weight.uniform_(0.5, 1.5, generator=gen)
                    m.bias.normal_(0.0, 0.2, generator=gen)
            m.momentum = None
            m.reset_running_stats()
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(4, 3, size, size, generator=gen))
    model.eval()


def rel_err(got, ref):
    return float(np.abs(got.astype(np.float64) - ref).max() / max(1.0, float(np.abs(ref).max())))


def rms_err(got, ref):
    return float(np.sqrt(np.mean((got.astype(np.float64) - ref) ** 2)))


def prepare_keras(name, force):
    """Exports (once, in the TF venv) and returns (onnx path, input path, float64 reference)."""
    path = os.path.join(CACHE, f"{name}.onnx")
    xin = os.path.join(CACHE, f"{name}_input.npy")
    ref_path = os.path.join(CACHE, f"{name}_ref64.npy")
    if force or not all(os.path.exists(p) for p in (path, xin, ref_path)):
        script = os.path.join(ROOT, "scripts", "export_keras_models.py")
        subprocess.run([TF_PYTHON, script, "--models", name[len("keras_"):]], check=True)
    return path, xin, np.load(ref_path)


def prepare(name, keep_bn, force):
    """Exports (once) and returns (onnx path, input path, float64 reference)."""
    if name.startswith("keras_"):
        return prepare_keras(name, force)
    os.makedirs(CACHE, exist_ok=True)
    tag = f"{name}{'_bn' if keep_bn else ''}"
    path = os.path.join(CACHE, f"{tag}.onnx")
    # The BN-kept export is a different random model: its input and reference get their own
    # files (sharing them overwrote the folded model's reference).
    xin = os.path.join(CACHE, f"{tag}_input.npy")
    ref_path = os.path.join(CACHE, f"{tag}_ref64.npy")
    if not force and all(os.path.exists(p) for p in (path, xin, ref_path)):
        return path, xin, np.load(ref_path)
    torch.manual_seed(20261126)  # the models' own weight init draws from the global RNG
    gen = torch.Generator().manual_seed(20261126)
    model, size = build(name)
    randomize_bn(model, gen, size)
    x = torch.randn(1, 3, size, size, generator=gen)
    kwargs = dict(input_names=["input"], output_names=["output"], opset_version=17, dynamo=False)
    if keep_bn:
        kwargs["training"] = torch.onnx.TrainingMode.PRESERVE
    torch.onnx.export(model, (x,), path, **kwargs)
    with torch.no_grad():
        ref = model.double()(x.double()).numpy()
    np.save(xin, x.numpy())
    np.save(ref_path, ref)
    return path, xin, ref


def run_engine(path, xin, threads):
    if not os.path.exists(ENGINE):
        return None, f"no {os.path.relpath(ENGINE, ROOT)} (cargo build --release -p engine-cli)"
    out = os.path.join(CACHE, "engine_out.npy")
    if os.path.exists(out):
        os.remove(out)
    cmd = [ENGINE, "run", path, "--input", xin, "--output", out, "--threads", str(threads)]
    t = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True)
    dt = time.perf_counter() - t
    if p.returncode != 0:
        msg = (p.stderr or p.stdout).strip().splitlines()
        return None, f"exit {p.returncode}: {msg[-1] if msg else ''}"[:120]
    return np.load(out), f"{dt:.2f}s incl. load"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--keep-bn", action="store_true", help="export with BatchNormalization nodes kept")
    ap.add_argument("--force-export", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))

    unknown = [m for m in args.models.split(",") if m not in MODELS]
    if unknown:
        sys.exit(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(MODELS)}")
    rows = []
    for name in args.models.split(","):
        path, xin, ref = prepare(name, args.keep_bn, args.force_export)
        x = np.load(xin)
        so = ort.SessionOptions()
        so.intra_op_num_threads = args.threads
        sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        ort_out = sess.run(None, {sess.get_inputs()[0].name: x})[0]
        eng_out, note = run_engine(path, xin, args.threads)
        eng_err = rel_err(eng_out, ref) if eng_out is not None and eng_out.shape == ref.shape else None
        if eng_out is not None and eng_out.shape != ref.shape:
            note = f"shape {eng_out.shape} != {ref.shape}"
        # RMS over all outputs: less noisy than the max, which one logit decides.
        rms = (rms_err(eng_out, ref) / rms_err(ort_out, ref)
               if eng_err is not None and rms_err(ort_out, ref) > 0 else None)
        rows.append((name, float(np.abs(ref).max()), rel_err(ort_out, ref), eng_err, rms, note))
        print(f"done {name}", file=sys.stderr)

    print(f"\nerror = max|out - ref64| / max(1, max|ref64|); threads {args.threads}; BN {'kept' if args.keep_bn else 'folded'}")
    print("ratio = engine error / ORT error; rms = ratio of the RMS errors over all outputs")
    print(f"{'model':<20} {'max|ref|':>9} {'ORT f32':>10} {'engine':>10} {'ratio':>6} {'rms':>5}  note")
    for name, mref, oe, ee, rms, note in rows:
        es = f"{ee:.2e}" if ee is not None else "n/a"
        ratio = f"{ee / oe:.2f}" if ee is not None and oe > 0 else "n/a"
        rs = f"{rms:.2f}" if rms is not None else "n/a"
        print(f"{name:<20} {mref:>9.3f} {oe:>10.2e} {es:>10} {ratio:>6} {rs:>5}  {note}")
    bad = [r for r in rows if r[3] is None or r[3] > 2 * r[2]]
    if bad:
        print(f"\n{len(bad)} model(s) without an engine result or with error > 2x ORT's: "
              + ", ".join(r[0] for r in bad))
        sys.exit(1)


if __name__ == "__main__":
    main()
