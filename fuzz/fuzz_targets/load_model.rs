//! libFuzzer entry point: arbitrary bytes as an ONNX model file (see `engine_fuzz::check`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    engine_fuzz::check(data);
});
