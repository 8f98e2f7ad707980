#!/usr/bin/env python3
"""Dev tool (not run by CI): exports Keras applications to ONNX with tf2onnx, plus an input and
a float64 reference, for scripts/check_full_models.py.

Runs in the TensorFlow venv (/work/venv-tf: TF 2.x, Keras 3, tf2onnx):

    /work/venv-tf/bin/python scripts/export_keras_models.py [--models resnet50,inception_v3]

For each model (keras.applications ResNet50, InceptionV3, MobileNetV2, weights=None) it writes
.cache/models/keras_<name>.onnx, keras_<name>_input.npy (NHWC float32) and
keras_<name>_ref64.npy. What tf2onnx makes of these is what the issue asks the engine to cope
with: an NHWC input followed by a Transpose, explicit Pad nodes (Keras 'valid' padding after
ZeroPadding2D), BatchNormalization left as Mul/Add after the convolutions it cannot fuse, ReLU6
as Clip, depthwise convolutions (MobileNetV2).

BatchNormalization statistics are made non-trivial, as the torch exporter does: random gamma and
beta, then one training-mode pass with momentum 0 sets every layer's moving mean and variance to
its batch statistics, so activations stay O(1) through the network.

The classifier's softmax is left out (classifier_activation=None): with random weights its output
is a near-uniform 0.001 everywhere, which would hide any error; the logits do not.

The float64 reference is the same Keras model rebuilt under the float64 dtype policy with the
same weights.
"""

import argparse
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.path.join(ROOT, ".cache", "models")
MODELS = ["resnet50", "inception_v3", "mobilenet_v2"]
SEED = 20261126


def build(name):
    import keras

    if name == "resnet50":
        return keras.applications.ResNet50(weights=None, classifier_activation=None), 224
    if name == "inception_v3":
        return keras.applications.InceptionV3(weights=None, classifier_activation=None), 299
    if name == "mobilenet_v2":
        return keras.applications.MobileNetV2(weights=None, classifier_activation=None), 224
    raise SystemExit(f"unknown model {name} (known: {', '.join(MODELS)})")


def randomize_bn(model, rng, size):
    import keras

    bns = [l for l in model.layers if isinstance(l, keras.layers.BatchNormalization)]
    for l in bns:
        # Weight order: [gamma if scale], [beta if center], moving mean, moving variance
        # (InceptionV3's layers have scale=False).
        w = l.get_weights()
        i = 0
        if l.scale:
            w[i] = rng.uniform(0.5, 1.5, w[i].shape).astype(np.float32)
            i += 1
        if l.center:
            w[i] = rng.normal(0.0, 0.2, w[i].shape).astype(np.float32)
        l.set_weights(w)
        l.momentum = 0.0
    x = rng.standard_normal((4, size, size, 3)).astype(np.float32)
    model(x, training=True)
    for l in bns:
        l.momentum = 0.99
    return len(bns)


def export(name):
    import keras
    import tensorflow as tf
    import tf2onnx

    os.makedirs(CACHE, exist_ok=True)
    path = os.path.join(CACHE, f"keras_{name}.onnx")
    xin = os.path.join(CACHE, f"keras_{name}_input.npy")
    ref_path = os.path.join(CACHE, f"keras_{name}_ref64.npy")

    # The global dtype policy, not floatx, decides a new layer's dtype in Keras 3.
    keras.config.set_dtype_policy("float32")
    keras.utils.set_random_seed(SEED)
    rng = np.random.default_rng(SEED)
    model, size = build(name)
    n_bn = randomize_bn(model, rng, size)
    x = rng.standard_normal((1, size, size, 3)).astype(np.float32)
    out32 = np.asarray(model(x, training=False))

    spec = (tf.TensorSpec((1, size, size, 3), tf.float32, name="input"),)
    # Keras 3 models are not tf.keras models; convert the traced inference function instead.
    fn = tf.function(lambda t: model(t, training=False))
    tf2onnx.convert.from_function(fn, input_signature=spec, opset=17, output_path=path)

    keras.config.set_dtype_policy("float64")
    model64, _ = build(name)
    model64.set_weights([w.astype(np.float64) for w in model.get_weights()])
    ref = np.asarray(model64(x.astype(np.float64), training=False))
    keras.config.set_dtype_policy("float32")
    if ref.dtype != np.float64 or model64.weights[0].dtype != "float64":
        raise SystemExit(f"{name}: the reference did not run in float64 ({ref.dtype})")

    err32 = float(np.abs(out32 - ref).max())
    print(f"{name}: {n_bn} BN layers, keras f32 vs f64 max abs {err32:.2e}, max|ref| {np.abs(ref).max():.3f}",
          file=sys.stderr)
    np.save(xin, x)
    np.save(ref_path, ref)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(MODELS))
    args = ap.parse_args()
    for name in args.models.split(","):
        export(name)


if __name__ == "__main__":
    main()
