#!/usr/bin/env bash
# Builds the fuzz target with the STABLE toolchain: libfuzzer-sys compiles libFuzzer itself (C++,
# needs g++), and rustc's SanitizerCoverage pass (-Cpasses=sancov-module, a stable flag) gives
# libFuzzer its edge counters and comparison tracing. No nightly, no cargo-fuzz, no -Z flags.
# AddressSanitizer is left out (it needs -Zsanitizer); Rust's own bounds and overflow checks
# (overflow-checks and debug-assertions are on in this project's release profile) catch memory
# errors in safe code.
#
# Output: fuzz/target/x86_64-unknown-linux-gnu/release/load_model (a libFuzzer binary).
set -euo pipefail
cd "$(dirname "$0")"
export RUSTFLAGS="-Cpasses=sancov-module \
 -Cllvm-args=-sanitizer-coverage-level=4 \
 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
 -Cllvm-args=-sanitizer-coverage-pc-table \
 -Cllvm-args=-sanitizer-coverage-trace-compares \
 --cfg fuzzing -Ctarget-cpu=native"
# An explicit --target keeps RUSTFLAGS off build scripts and proc macros (which must not be
# instrumented: rustc loads them and has no libFuzzer runtime).
exec cargo build --release --target x86_64-unknown-linux-gnu --bin load_model "$@"
