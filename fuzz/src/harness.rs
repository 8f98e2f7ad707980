// The fuzzed pipeline, shared by the fuzz target (fuzz/src/lib.rs) and the regression test
// that replays committed crash inputs (engine/tests/bad_inputs.rs includes this file), so both
// run exactly the same code.

/// Memory limit of the fuzzed sessions: weights + planned activations + scratch. Small, so
/// that absurd shapes are refused by the planner's accounting rather than by the machine.
pub const FUZZ_MEMORY_LIMIT: u64 = 16 << 20;

/// Models whose analytic cost exceeds this many multiply-accumulates are planned but not run:
/// a memory cap alone still admits a 4M-element output with a 4M-element kernel.
pub const FUZZ_MAX_RUN_MACS: u64 = 20_000_000;

/// Models whose non-MAC work (pooling windows, element-wise ops: the cost model's flops of
/// nodes without multiply-accumulates) exceeds this are planned but not run either. Those ops
/// go through scalar loops that the coverage instrumentation slows ~20x: a 3-D AveragePool of
/// 21M window taps (0.5 s in a release build) took over 10 s in the fuzzer, which libFuzzer
/// reports as a hang (see engine/tests/fuzz-regressions/).
pub const FUZZ_MAX_RUN_SCALAR_FLOPS: u64 = 4_000_000;

/// Decodes, imports, binds shapes, folds constants, optimizes and plans `bytes` as an ONNX
/// model, then runs it on seeded inputs when it is small enough. Every error is an acceptable
/// outcome; a panic, abort, hang or allocation failure is a bug. Returns whether it ran.
pub fn check(bytes: &[u8]) -> bool {
    use engine::{DType, Model, Session, SessionOptions, Tensor};

    let Ok(model) = Model::from_bytes(bytes, "fuzz.onnx") else {
        return false;
    };
    let options = SessionOptions {
        threads: 1,
        max_memory: Some(FUZZ_MEMORY_LIMIT),
        ..Default::default()
    };
    let Ok(mut session) = Session::new(&model, &options) else {
        return false;
    };
    let (costs, totals) = engine::cost::graph_cost(session.exec_graph());
    let scalar_flops = costs
        .iter()
        .filter(|c| c.macs == 0)
        .fold(0u64, |acc, c| acc.saturating_add(c.flops));
    if totals.macs > FUZZ_MAX_RUN_MACS
        || scalar_flops > FUZZ_MAX_RUN_SCALAR_FLOPS
        || totals.output_bytes > FUZZ_MEMORY_LIMIT * 4
    {
        return false;
    }
    let mut feeds: Vec<(String, Tensor)> = Vec::new();
    for (i, info) in session.input_infos().iter().enumerate() {
        let (Some(shape), Some(dtype)) = (info.fixed_shape(), info.dtype) else {
            return false;
        };
        let tensor = match dtype {
            DType::F32 => engine::random::normal_tensor(&shape, i as u64),
            other => Tensor::zeros(other, &shape),
        };
        feeds.push((info.name.clone(), tensor));
    }
    let feeds: Vec<(&str, Tensor)> = feeds.iter().map(|(n, t)| (n.as_str(), t.clone())).collect();
    session.run(&feeds).is_ok()
}
