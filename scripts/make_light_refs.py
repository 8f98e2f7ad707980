#!/usr/bin/env python3
"""Reference values for the ONNX `light_*` models' last hidden tensor (the input of the node
that produces the graph output), computed by ONNX Runtime on the runner's input
(arange(n)/n). Why: the light models' weights are constants (ConstantOfShape), so their
stored outputs are uniform softmaxes (0.001 everywhere) that a wrong conv would reproduce too;
the pre-softmax tensor depends on every layer.

Writes engine/tests/fixtures/light_refs/<model>.npy (float32) and <model>.txt (the tensor's
name). Needs the data from scripts/fetch-node-tests.sh.
Usage: /work/venv/bin/python scripts/make_light_refs.py
"""
import glob
import os

import numpy as np
import onnx
import onnxruntime as ort

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIGHT = os.path.join(ROOT, ".cache", "onnx-node-tests", "light")
OUT = os.path.join(ROOT, "engine", "tests", "fixtures", "light_refs")

os.makedirs(OUT, exist_ok=True)
for path in sorted(glob.glob(os.path.join(LIGHT, "light_*.onnx"))):
    name = os.path.splitext(os.path.basename(path))[0]
    m = onnx.load(path)
    out0 = m.graph.output[0].name
    last = next(n for n in m.graph.node if out0 in n.output)
    hidden = last.input[0]
    m.graph.output.append(onnx.helper.make_tensor_value_info(hidden, onnx.TensorProto.FLOAT, None))
    inits = {i.name for i in m.graph.initializer}
    feeds = {}
    for x in m.graph.input:
        if x.name in inits:
            continue
        shape = tuple(d.dim_value if d.HasField("dim_value") else 1 for d in x.type.tensor_type.shape.dim)
        n = int(np.prod(shape))
        feeds[x.name] = (np.arange(n).reshape(shape) / n).astype(np.float32)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    val = sess.run([hidden], feeds)[0]
    np.save(os.path.join(OUT, f"{name}.npy"), val.astype(np.float32))
    with open(os.path.join(OUT, f"{name}.txt"), "w") as f:
        f.write(hidden + "\n")
    print(f"{name}: {last.op_type} input '{hidden}' {val.shape} min {val.min():.6g} max {val.max():.6g}")
