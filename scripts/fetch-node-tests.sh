#!/usr/bin/env bash
# Fetches the ONNX backend test data (node, pytorch-converted, pytorch-operator, simple, light)
# from the onnx 1.22.0 wheel into .cache/onnx-node-tests/ at the repository root.
#
# Why the wheel: onnx 1.22.0 is the last release whose wheel ships the backend test data, and a
# wheel is a plain zip, so only python3 + pip are needed (no build of onnx itself, any platform
# tag will do since we only read data files from it).
#
# Idempotent: does nothing when the data is already unpacked (a stamp file records the version).
# Usage: scripts/fetch-node-tests.sh [--force]
set -euo pipefail

ONNX_VERSION=1.22.0
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="$ROOT/.cache"
WHEELS="$CACHE/wheels"
DEST="$CACHE/onnx-node-tests"
STAMP="$DEST/.complete-onnx-$ONNX_VERSION"
PY="${PYTHON:-python3}"

if [[ "${1:-}" == "--force" ]]; then
    rm -rf "$DEST"
fi

if [[ -f "$STAMP" ]]; then
    echo "onnx $ONNX_VERSION backend test data already in $DEST"
    exit 0
fi

mkdir -p "$WHEELS"
wheel="$(ls "$WHEELS"/onnx-"$ONNX_VERSION"-*.whl 2>/dev/null | head -n 1 || true)"
if [[ -z "$wheel" ]]; then
    echo "downloading onnx==$ONNX_VERSION wheel into $WHEELS"
    # --no-deps: only the data inside this wheel is needed. If no wheel matches this platform
    # (e.g. a newer Python), fall back to any manylinux x86_64 wheel: the data files are the same.
    if ! "$PY" -m pip download --disable-pip-version-check -q "onnx==$ONNX_VERSION" --no-deps \
            --only-binary=:all: -d "$WHEELS"; then
        "$PY" -m pip download --disable-pip-version-check -q "onnx==$ONNX_VERSION" --no-deps \
            --only-binary=:all: --platform manylinux_2_17_x86_64 --python-version 3.11 \
            -d "$WHEELS"
    fi
    wheel="$(ls "$WHEELS"/onnx-"$ONNX_VERSION"-*.whl | head -n 1)"
fi

echo "unpacking backend test data from $(basename "$wheel")"
rm -rf "$DEST.tmp"
mkdir -p "$DEST.tmp"
"$PY" - "$wheel" "$DEST.tmp" <<'PYEOF'
import sys, zipfile, os
wheel, dest = sys.argv[1], sys.argv[2]
prefix = "onnx/backend/test/data/"
wanted = ("node", "pytorch-converted", "pytorch-operator", "simple", "light")
n = 0
with zipfile.ZipFile(wheel) as z:
    for info in z.infolist():
        name = info.filename
        if not name.startswith(prefix) or info.is_dir():
            continue
        rel = name[len(prefix):]
        top = rel.split("/", 1)[0]
        if top not in wanted:
            continue
        # Refuse anything that would escape the destination.
        if os.path.isabs(rel) or ".." in rel.split("/"):
            raise SystemExit(f"refusing suspicious path in wheel: {name}")
        out = os.path.join(dest, rel)
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with z.open(info) as src, open(out, "wb") as dst:
            dst.write(src.read())
        n += 1
if n == 0:
    raise SystemExit(f"no backend test data found in {wheel}")
print(f"unpacked {n} files")
PYEOF
rm -rf "$DEST"
mv "$DEST.tmp" "$DEST"
touch "$STAMP"
for d in node pytorch-converted pytorch-operator simple light; do
    printf '  %-18s %s entries\n' "$d" "$(ls "$DEST/$d" 2>/dev/null | wc -l)"
done
