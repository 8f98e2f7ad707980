#!/usr/bin/env bash
# Time-bounded fuzz smoke of the model loader (see docs/robustness.md): builds the libFuzzer
# target on the stable toolchain (fuzz/build.sh) and fuzzes for SECONDS (default 60) from the
# committed seed corpus (fuzz/corpus), the committed fixtures, the fuzz regression inputs and,
# when scripts/fetch-node-tests.sh has run, the ONNX backend node-test models.
# Exits non-zero on any panic, abort, hang (> 10 s per input) or > 2 GiB RSS; the failing
# input is written under fuzz/artifacts/.
#
#   bash scripts/fuzz-smoke.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"

bash fuzz/build.sh
bin=fuzz/target/x86_64-unknown-linux-gnu/release/load_model

# New corpus entries go to a scratch folder (the first directory); the others are read-only seeds.
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p fuzz/artifacts "$work/nodes" "$work/new"
if [ -d .cache/onnx-node-tests/node ]; then
  for d in .cache/onnx-node-tests/node/*/; do
    [ -f "$d/model.onnx" ] && cp "$d/model.onnx" "$work/nodes/$(basename "$d").onnx"
  done
fi

"$bin" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
  -artifact_prefix=fuzz/artifacts/ -print_final_stats=1 \
  "$work/new" fuzz/corpus engine/tests/fixtures engine/tests/fuzz-regressions "$work/nodes" \
  2>&1 | grep -v -E '^#[0-9]+\s+(NEW|REDUCE|pulse)|NEW_FUNC' | tail -n 40
