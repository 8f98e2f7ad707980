"""Dev check: every .onnx in a folder passes onnx.checker (with shape inference) and runs in
ONNX Runtime. Not used by cargo test.

    ONNX_IMPORT_DUMP_DIR=/tmp/ox cargo test --release -p onnx-import --test models -- --ignored dump
    python onnx-import/scripts/check_with_ort.py /tmp/ox
"""
import pathlib
import sys

import numpy as np
import onnx
import onnxruntime as ort

TYPES = {"tensor(float)": np.float32, "tensor(int64)": np.int64, "tensor(bool)": np.bool_}

failed = 0
for path in sorted(pathlib.Path(sys.argv[1]).glob("*.onnx")):
    try:
        onnx.checker.check_model(onnx.load(str(path)), full_check=True)
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        feeds = {}
        for i in sess.get_inputs():
            shape = [d if isinstance(d, int) else 2 for d in i.shape]
            feeds[i.name] = np.random.rand(*shape).astype(TYPES[i.type])
        outs = sess.run(None, feeds)
        print(f"ok   {path.name}: outputs {[o.shape for o in outs]}")
    except Exception as e:  # report every file, then fail
        failed += 1
        print(f"FAIL {path.name}: {e}")
sys.exit(1 if failed else 0)
