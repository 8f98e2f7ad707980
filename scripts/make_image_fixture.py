#!/usr/bin/env python3
"""Generates the image-input fixtures in engine/tests/fixtures/image/ (committed).

`engine run MODEL --image FILE` preprocesses with torchvision's ImageNet evaluation recipe
(see engine/src/preprocess.rs). This script computes the expected tensors *independently*,
with PIL and torchvision, for a few small committed images, so cli/tests/image_input.rs can
check the engine's Rust implementation against them:

    Resize(36) -> CenterCrop(32) -> ToTensor() -> Normalize(mean, std)

(36 = floor(32 * 256 / 224): the models take 32x32 inputs to keep the files tiny.)
The same numbers are also recomputed by hand (PIL resize + numpy crop/normalise, Python's
round-half-to-even crop offsets) and the script fails if the two disagree.

Files written:
- photo.png    96x80 RGB, smooth gradients + shapes + noise (a 2.2x antialiased downscale);
- gray.png     42x40 greyscale (L -> RGB; resized to 37x36, crop offset round(2.5) = 2);
- tall.png     36x50 RGB (already at the resize size: left untouched; crop offset 9 rows);
- rgba.png     40x40 RGBA (alpha dropped, not composited, as PIL's convert("RGB"));
- photo.jpg    photo.png as a JPEG (quality 90): decoders may differ by a level or two;
- small32.png  32x32 RGB for --preprocess none (raw 0-255 values, no resizing);
- <image>.expected.npy  float32 [1, 3, 32, 32] torchvision output for each image above
  (small32.expected.npy holds the raw pixel values, NCHW, as --preprocess none feeds them);
- model_nchw.onnx  input `image` [batch, 3, 32, 32] -> `pixels` = image * 1 (so the run writes
  the preprocessed tensor back out) and `scores` = Flatten(GlobalAveragePool(image)) [batch, 3];
- model_nhwc.onnx  input `image` [1, 32, 32, 3] -> `pixels` = image * 1;
- labels.txt   one label per line for the three `scores` classes.

Usage: /work/venv/bin/python scripts/make_image_fixture.py   (needs numpy, pillow,
torch + torchvision, onnx)
"""

import os

import numpy as np
import onnx
from onnx import TensorProto, helper
from PIL import Image
import torch
from torchvision import transforms

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "engine", "tests", "fixtures", "image")
SIZE = 32
SHORT = SIZE * 256 // 224  # 36
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def synthetic_photo(w, h, seed):
    """Smooth colour gradients, a disc and a bar, plus mild noise: enough structure that a
    wrong filter, offset or channel order shows."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 255 * x / (w - 1)
    g = 255 * y / (h - 1)
    b = 127 + 120 * np.sin(x / 5.0) * np.cos(y / 7.0)
    img = np.stack([r, g, b], axis=-1)
    disc = (x - 0.6 * w) ** 2 + (y - 0.4 * h) ** 2 < (0.2 * min(w, h)) ** 2
    img[disc] = [250, 30, 60]
    img[int(0.7 * h) : int(0.7 * h) + 3, :] = [10, 10, 10]
    img += rng.normal(0, 8, img.shape)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def torchvision_recipe(pil):
    t = transforms.Compose(
        [
            transforms.Resize(SHORT),  # bilinear, antialias: PIL's resize on PIL images
            transforms.CenterCrop(SIZE),
            transforms.ToTensor(),
            transforms.Normalize(MEAN, STD),
        ]
    )
    return t(pil.convert("RGB")).unsqueeze(0).numpy().astype(np.float32)


def by_hand(pil):
    """The same recipe without torchvision: PIL resize, numpy crop and normalisation."""
    img = pil.convert("RGB")
    w, h = img.size
    if w <= h:
        size = (SHORT, int(SHORT * h / w))
    else:
        size = (int(SHORT * w / h), SHORT)
    if size != img.size:
        img = img.resize(size, Image.BILINEAR)
    a = np.asarray(img)
    top = int(round((a.shape[0] - SIZE) / 2.0))  # Python rounds halves to even
    left = int(round((a.shape[1] - SIZE) / 2.0))
    a = a[top : top + SIZE, left : left + SIZE].astype(np.float32) / np.float32(255)
    a = (a - np.array(MEAN, np.float32)) / np.array(STD, np.float32)
    return a.transpose(2, 0, 1)[None].astype(np.float32)


def write_models():
    one = helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])
    nchw = helper.make_graph(
        [
            helper.make_node("Mul", ["image", "one"], ["pixels"], name="copy"),
            helper.make_node("GlobalAveragePool", ["image"], ["pooled"], name="pool"),
            helper.make_node("Flatten", ["pooled"], ["scores"], name="flatten", axis=1),
        ],
        "image_nchw",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, SIZE, SIZE])],
        [
            helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["batch", 3, SIZE, SIZE]),
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 3]),
        ],
        initializer=[one],
    )
    nhwc = helper.make_graph(
        [helper.make_node("Mul", ["image", "one"], ["pixels"], name="copy")],
        "image_nhwc",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, SIZE, SIZE, 3])],
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, [1, SIZE, SIZE, 3])],
        initializer=[one],
    )
    for name, g in [("model_nchw.onnx", nchw), ("model_nhwc.onnx", nhwc)]:
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], producer_name="make_image_fixture")
        m.ir_version = 8
        onnx.checker.check_model(m)
        onnx.save(m, os.path.join(OUT, name))


def main():
    os.makedirs(OUT, exist_ok=True)
    photo = synthetic_photo(96, 80, 1)
    images = {
        "photo.png": Image.fromarray(photo, "RGB"),
        "gray.png": Image.fromarray(synthetic_photo(42, 40, 2)[:, :, 1], "L"),
        "tall.png": Image.fromarray(synthetic_photo(36, 50, 3), "RGB"),
        "rgba.png": Image.fromarray(
            np.concatenate(
                [synthetic_photo(40, 40, 4), np.linspace(0, 255, 1600).reshape(40, 40, 1).astype(np.uint8)], axis=-1
            ),
            "RGBA",
        ),
    }
    for name, img in images.items():
        img.save(os.path.join(OUT, name), optimize=True)
    Image.fromarray(photo, "RGB").save(os.path.join(OUT, "photo.jpg"), quality=90)
    images["photo.jpg"] = None

    for name in images:
        # Re-open from disk: the expected values are of what the engine will decode.
        pil = Image.open(os.path.join(OUT, name))
        pil.load()
        tv = torchvision_recipe(pil)
        hand = by_hand(pil)
        diff = float(np.abs(tv - hand).max())
        assert diff == 0.0, f"{name}: torchvision and the by-hand recipe differ by {diff}"
        np.save(os.path.join(OUT, name.rsplit(".", 1)[0] + ("_jpg" if name.endswith(".jpg") else "") + ".expected.npy"), tv)
        print(f"{name}: {pil.mode} {pil.size} -> {tv.shape}, mean {tv.mean():.4f}, torchvision == by hand")

    small = synthetic_photo(SIZE, SIZE, 5)
    Image.fromarray(small, "RGB").save(os.path.join(OUT, "small32.png"))
    np.save(os.path.join(OUT, "small32.expected.npy"), small.transpose(2, 0, 1)[None].astype(np.float32))

    with open(os.path.join(OUT, "labels.txt"), "w") as f:
        f.write("red\ngreen\nblue\n")
    write_models()
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
