#!/usr/bin/env python3
"""Generates the small real-model fixtures in engine/tests/fixtures/ (committed).

Each fixture is a folder with `model.onnx`, `input_0.npy` and `output_<i>.npy`, the outputs
computed by ONNX Runtime (float32). The models are reduced-width versions of the architectures
the engine targets, exported by torch's TorchScript exporter at opset 17:

- resnet:    a ResNet with BasicBlocks and Bottlenecks and stride-2 1x1 downsample shortcuts;
- resnext:   ResNeXt bottlenecks with a 32-group 3x3;
- inception: Inception-style blocks (1x1 / 1x1-3x3 / 1x1-5x5 / pool branches joined by Concat,
             asymmetric 1x7/7x1 convs, stride-2 reduction, ceil-mode max pool,
             average pool with and without count_include_pad).

Every architecture is exported twice: `<name>_folded` (eval-mode export: the exporter folds
BatchNormalization into the convs) and `<name>_bn` (TrainingMode.PRESERVE: BN nodes kept).
Weights are random but BN gets non-trivial statistics (random affine parameters, then running
statistics accumulated over a few train-mode passes) so activations stay O(1) through the
network and a wrong BN or fusion shows up in the outputs.

Every model has two outputs: the logits and the last feature map (before global pooling), so
errors in the spatial part are not averaged away.

Usage: /work/venv/bin/python scripts/make_fixtures.py   (needs torch, onnx, onnxruntime, numpy)
"""

import argparse
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "engine", "tests", "fixtures")


def conv_bn(cin, cout, k, stride=1, padding=None, groups=1):
    if padding is None:
        padding = tuple(x // 2 for x in k) if isinstance(k, tuple) else k // 2
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride=stride, padding=padding, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    )


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.a = conv_bn(cin, cout, 3, stride)
        self.b = conv_bn(cout, cout, 3)
        self.down = conv_bn(cin, cout, 1, stride, 0) if (stride != 1 or cin != cout) else None

    def forward(self, x):
        y = self.b(F.relu(self.a(x)))
        s = x if self.down is None else self.down(x)
        return F.relu(y + s)


class Bottleneck(nn.Module):
    """torchvision v1.5 layout (stride on the 3x3); groups > 1 makes it a ResNeXt block."""

    def __init__(self, cin, width, cout, stride, groups=1):
        super().__init__()
        self.a = conv_bn(cin, width, 1, 1, 0)
        self.b = conv_bn(width, width, 3, stride, 1, groups=groups)
        self.c = conv_bn(width, cout, 1, 1, 0)
        self.down = conv_bn(cin, cout, 1, stride, 0) if (stride != 1 or cin != cout) else None

    def forward(self, x):
        y = self.c(F.relu(self.b(F.relu(self.a(x)))))
        s = x if self.down is None else self.down(x)
        return F.relu(y + s)


class Head(nn.Module):
    def __init__(self, c, classes=10):
        super().__init__()
        self.fc = nn.Linear(c, classes)

    def forward(self, x):
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)), x


class SmallResNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = conv_bn(3, 16, 7, 2, 3)
        self.layer1 = nn.Sequential(BasicBlock(16, 16, 1), BasicBlock(16, 32, 2))
        self.layer2 = nn.Sequential(Bottleneck(32, 16, 64, 2), Bottleneck(64, 16, 64, 1))
        self.head = Head(64)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.stem(x)), 3, 2, 1)
        return self.head(self.layer2(self.layer1(x)))


class SmallResNeXt(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = conv_bn(3, 32, 3, 2, 1)
        self.blocks = nn.Sequential(
            Bottleneck(32, 64, 64, 1, groups=32),
            Bottleneck(64, 64, 128, 2, groups=32),
            Bottleneck(128, 128, 128, 1, groups=32),
        )
        self.head = Head(128)

    def forward(self, x):
        return self.head(self.blocks(F.relu(self.stem(x))))


class BasicConv(nn.Module):
    def __init__(self, cin, cout, k, stride=1, padding=None):
        super().__init__()
        self.cb = conv_bn(cin, cout, k, stride, padding)

    def forward(self, x):
        return F.relu(self.cb(x))


class InceptionA(nn.Module):
    """1x1 / 1x1-3x3 / 1x1-5x5 / avgpool-1x1 branches, concatenated."""

    def __init__(self, cin, include_pad):
        super().__init__()
        self.b1 = BasicConv(cin, 8, 1)
        self.b3 = nn.Sequential(BasicConv(cin, 8, 1), BasicConv(8, 12, 3))
        self.b5 = nn.Sequential(BasicConv(cin, 4, 1), BasicConv(4, 8, 5))
        self.bp = BasicConv(cin, 8, 1)
        self.include_pad = include_pad

    def forward(self, x):
        p = F.avg_pool2d(x, 3, 1, 1, count_include_pad=self.include_pad)
        return torch.cat([self.b1(x), self.b3(x), self.b5(x), self.bp(p)], 1)


class ReductionB(nn.Module):
    """Stride-2 3x3 conv branches beside a stride-2 max pool."""

    def __init__(self, cin):
        super().__init__()
        self.b3 = BasicConv(cin, 16, 3, 2, 0)
        self.b33 = nn.Sequential(BasicConv(cin, 8, 1), BasicConv(8, 12, 3), BasicConv(12, 12, 3, 2, 0))

    def forward(self, x):
        return torch.cat([self.b3(x), self.b33(x), F.max_pool2d(x, 3, 2)], 1)


class InceptionC(nn.Module):
    """Factorised 7x7: 1x7 then 7x1 (and 7x1-1x7), as in Inception v3/v4."""

    def __init__(self, cin):
        super().__init__()
        self.b1 = BasicConv(cin, 12, 1)
        self.b7 = nn.Sequential(BasicConv(cin, 8, 1), BasicConv(8, 8, (1, 7)), BasicConv(8, 12, (7, 1)))
        self.b77 = nn.Sequential(
            BasicConv(cin, 8, 1),
            BasicConv(8, 8, (7, 1)),
            BasicConv(8, 8, (1, 7)),
            BasicConv(8, 8, (7, 1)),
            BasicConv(8, 12, (1, 7)),
        )
        self.bp = BasicConv(cin, 12, 1)

    def forward(self, x):
        p = F.avg_pool2d(x, 3, 1, 1)
        return torch.cat([self.b1(x), self.b7(x), self.b77(x), self.bp(p)], 1)


class SmallInception(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(BasicConv(3, 16, 3, 2, 0), BasicConv(16, 24, 3, 1, 1))
        self.a1 = InceptionA(24, include_pad=False)
        self.a2 = InceptionA(36, include_pad=True)
        self.red = ReductionB(36)
        self.c = InceptionC(64)
        self.head = Head(48)

    def forward(self, x):
        x = F.max_pool2d(self.stem(x), 3, 2, ceil_mode=True)
        x = self.a2(self.a1(x))
        x = self.c(self.red(x))
        return self.head(x)


ARCHS = {
    "resnet": (SmallResNet, (1, 3, 64, 64)),
    "resnext": (SmallResNeXt, (1, 3, 32, 32)),
    "inception": (SmallInception, (1, 3, 75, 75)),
}


def randomize_bn(model, gen, input_shape):
    """Random BN affine parameters, then running statistics from real train-mode passes."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.weight.uniform_(0.5, 1.5, generator=gen)
                m.bias.normal_(0.0, 0.2, generator=gen)
            m.momentum = None  # cumulative average over the passes below
            m.reset_running_stats()
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn((8,) + tuple(input_shape[1:]), generator=gen))
    model.eval()


def export(model, x, path, keep_bn):
    kwargs = dict(
        input_names=["input"],
        output_names=["logits", "features"],
        opset_version=17,
        dynamo=False,
    )
    if keep_bn:
        kwargs["training"] = torch.onnx.TrainingMode.PRESERVE
    torch.onnx.export(model, (x,), path, **kwargs)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=OUT)
    args = ap.parse_args()
    torch.manual_seed(0)
    total = 0
    for name, (cls, shape) in ARCHS.items():
        gen = torch.Generator().manual_seed(1234 + len(name))
        model = cls()
        randomize_bn(model, gen, shape)
        x = torch.randn(shape, generator=gen)
        with torch.no_grad():
            ref64 = [t.numpy() for t in model.double()(x.double())]
        model.float()
        for variant, keep_bn in (("folded", False), ("bn", True)):
            d = os.path.join(args.out, f"{name}_{variant}")
            os.makedirs(d, exist_ok=True)
            path = os.path.join(d, "model.onnx")
            export(model, x, path, keep_bn)
            m = onnx.load(path)
            onnx.checker.check_model(m)
            ops = sorted({n.op_type for n in m.graph.node})
            n_bn = sum(n.op_type == "BatchNormalization" for n in m.graph.node)
            if keep_bn != (n_bn > 0):
                sys.exit(f"{name}_{variant}: expected BN kept={keep_bn}, found {n_bn} BN nodes")
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = 1
            sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
            outs = sess.run(None, {"input": x.numpy()})
            np.save(os.path.join(d, "input_0.npy"), x.numpy())
            for i, o in enumerate(outs):
                np.save(os.path.join(d, f"output_{i}.npy"), o.astype(np.float32))
            errs = [float(np.abs(o - r).max() / max(1.0, np.abs(r).max())) for o, r in zip(outs, ref64)]
            size = sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))
            total += size
            print(
                f"{name}_{variant:6}: {size / 1024:7.1f} KiB, {len(m.graph.node)} nodes ({n_bn} BN), "
                f"outputs {[o.shape for o in outs]}, max|ref| {[float(np.abs(r).max()) for r in ref64]}, "
                f"ORT rel err vs float64 torch {['%.2e' % e for e in errs]}\n    ops: {' '.join(ops)}"
            )
    print(f"total {total / 1024:.1f} KiB in {args.out}")


if __name__ == "__main__":
    main()
