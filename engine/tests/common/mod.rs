//! Helpers shared by the integration tests: where the test data lives, decoding ONNX protobufs
//! (to classify dtypes and name inputs without trusting the code under test), comparing tensors
//! the way the ONNX backend runner does, and running one model through the public API.
//!
//! Every model runs through the *public* API only (`Model::load`, `Session::new`,
//! `Session::run`), so these tests exercise what a user gets.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use engine::error::UnsupportedNode;
use engine::session::{Model, Session, SessionOptions};
use engine::{DType, Error, Tensor};
use ndarray::{ArrayD, IxDyn};
use prost::Message;
use tract_onnx::pb;

/// Repository root (the workspace directory above `engine/`).
pub fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// Where `scripts/fetch-node-tests.sh` unpacks the ONNX backend test data.
/// `ONNX_NODE_TESTS_DIR` overrides it. Panics when missing: a CI run without the data must not
/// pass silently.
pub fn node_tests_dir() -> PathBuf {
    let dir = std::env::var_os("ONNX_NODE_TESTS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".cache").join("onnx-node-tests"));
    assert!(
        dir.join("node").is_dir(),
        "ONNX backend test data not found at {}: run scripts/fetch-node-tests.sh first \
         (or set ONNX_NODE_TESTS_DIR)",
        dir.display()
    );
    dir
}

/// Optional substring filter on test names (`ONNX_TEST_FILTER=conv`), for debugging.
pub fn name_filter() -> Option<String> {
    std::env::var("ONNX_TEST_FILTER")
        .ok()
        .filter(|s| !s.is_empty())
}

// ---------------------------------------------------------------------------------------------
// ONNX protobuf decoding (independent of the engine's importer, so a bug there cannot hide a
// test).

/// The engine's element type for an ONNX `TensorProto.DataType` code, if it has one.
pub fn engine_dtype(code: i32) -> Option<DType> {
    match code {
        1 => Some(DType::F32),
        2 => Some(DType::U8),
        6 => Some(DType::I32),
        7 => Some(DType::I64),
        9 => Some(DType::Bool),
        11 => Some(DType::F64),
        _ => None,
    }
}

pub fn onnx_dtype_name(code: i32) -> String {
    pb::tensor_proto::DataType::try_from(code)
        .map(|d| d.as_str_name().to_lowercase())
        .unwrap_or_else(|_| format!("dtype#{code}"))
}

pub fn load_model_proto(path: &Path) -> Result<pb::ModelProto, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    pb::ModelProto::decode(bytes.as_slice()).map_err(|e| format!("{}: {e}", path.display()))
}

fn value_info_dtype_issue(v: &pb::ValueInfoProto) -> Option<String> {
    match v.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(pb::type_proto::Value::TensorType(t)) => {
            if engine_dtype(t.elem_type).is_none() {
                Some(format!("'{}' is {}", v.name, onnx_dtype_name(t.elem_type)))
            } else {
                None
            }
        }
        // Sequence, map, optional and sparse types decode as unknown fields here.
        None if v.r#type.is_some() => Some(format!(
            "'{}' is not a tensor (sequence/map/optional)",
            v.name
        )),
        None => None,
    }
}

fn scan_graph_dtypes(g: &pb::GraphProto, out: &mut BTreeSet<String>) {
    for v in g.input.iter().chain(&g.output).chain(&g.value_info) {
        out.extend(value_info_dtype_issue(v));
    }
    for t in &g.initializer {
        if engine_dtype(t.data_type).is_none() {
            out.insert(format!(
                "initializer '{}' is {}",
                t.name,
                onnx_dtype_name(t.data_type)
            ));
        }
    }
    for n in &g.node {
        for a in &n.attribute {
            if let Some(t) = &a.t {
                if engine_dtype(t.data_type).is_none() {
                    out.insert(format!(
                        "{} '{}' attribute {} is {}",
                        n.op_type,
                        n.name,
                        a.name,
                        onnx_dtype_name(t.data_type)
                    ));
                }
            }
            let is_type_attr =
                (a.name == "to" && n.op_type.starts_with("Cast")) || a.name == "dtype";
            if is_type_attr
                && a.r#type == pb::attribute_proto::AttributeType::Int as i32
                && engine_dtype(a.i as i32).is_none()
            {
                out.insert(format!(
                    "{} '{}' {}={}",
                    n.op_type,
                    n.name,
                    a.name,
                    onnx_dtype_name(a.i as i32)
                ));
            }
            if let Some(sub) = &a.g {
                scan_graph_dtypes(sub, out);
            }
            for sub in &a.graphs {
                scan_graph_dtypes(sub, out);
            }
        }
    }
}

/// Element types (or non-tensor types) in the model that the engine's `DType` cannot hold.
pub fn unsupported_dtypes(model: &pb::ModelProto) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    if let Some(g) = &model.graph {
        scan_graph_dtypes(g, &mut out);
    }
    out
}

/// Names of the graph inputs to feed (initializers excluded), in declaration order.
pub fn feed_inputs(model: &pb::ModelProto) -> Vec<&pb::ValueInfoProto> {
    let Some(g) = &model.graph else {
        return Vec::new();
    };
    let inits: BTreeSet<&str> = g.initializer.iter().map(|t| t.name.as_str()).collect();
    g.input
        .iter()
        .filter(|v| !inits.contains(v.name.as_str()))
        .collect()
}

/// Declared dims of a value: `Some(n)` for fixed ones, `None` for symbolic/unknown; `None`
/// overall when no shape is declared.
pub fn declared_dims(v: &pb::ValueInfoProto) -> Option<Vec<Option<usize>>> {
    match v.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(pb::type_proto::Value::TensorType(t)) => t.shape.as_ref().map(|s| {
            s.dim
                .iter()
                .map(|d| match d.value {
                    Some(pb::tensor_shape_proto::dimension::Value::DimValue(n)) if n >= 0 => {
                        Some(n as usize)
                    }
                    _ => None,
                })
                .collect()
        }),
        None => None,
    }
}

/// Whether any node (outside subgraphs) is a convolution: those tests also run on 2 threads.
pub fn has_conv(model: &pb::ModelProto) -> bool {
    model.graph.as_ref().is_some_and(|g| {
        g.node
            .iter()
            .any(|n| n.op_type == "Conv" || n.op_type == "ConvTranspose")
    })
}

// ---------------------------------------------------------------------------------------------
// Tensor files.

/// Why a tensor file could not be used.
#[derive(Debug)]
pub enum ReadError {
    /// The element type is outside the engine's set (the test is skipped, not failed).
    Dtype(String),
    Other(String),
}

fn le_chunks<const N: usize, T>(raw: &[u8], f: fn([u8; N]) -> T) -> Result<Vec<T>, String> {
    if !raw.len().is_multiple_of(N) {
        return Err(format!(
            "raw_data length {} is not a multiple of {N}",
            raw.len()
        ));
    }
    Ok(raw
        .chunks_exact(N)
        .map(|c| f(c.try_into().unwrap_or([0; N])))
        .collect())
}

/// Decodes a `TensorProto` into an engine tensor.
///
/// A minimal reader private to the tests; it is deliberately independent of the importer so
/// the harness does not depend on the code it checks.
pub fn tensor_from_proto(t: &pb::TensorProto) -> Result<Tensor, ReadError> {
    let Some(dtype) = engine_dtype(t.data_type) else {
        return Err(ReadError::Dtype(onnx_dtype_name(t.data_type)));
    };
    let dims: Vec<usize> = t.dims.iter().map(|&d| d.max(0) as usize).collect();
    let n: usize = dims.iter().product();
    let raw = &t.raw_data;
    let bad = |m: String| ReadError::Other(format!("tensor '{}': {m}", t.name));
    let shape = IxDyn(&dims);
    macro_rules! build {
        ($variant:ident, $vec:expr) => {{
            let v = $vec.map_err(bad)?;
            if v.len() != n {
                return Err(bad(format!("{} values for shape {:?}", v.len(), dims)));
            }
            ArrayD::from_shape_vec(shape, v)
                .map(Tensor::$variant)
                .map_err(|e| bad(e.to_string()))
        }};
    }
    match dtype {
        DType::F32 => build!(
            F32,
            if raw.is_empty() {
                Ok(t.float_data.clone())
            } else {
                le_chunks(raw, f32::from_le_bytes)
            }
        ),
        DType::F64 => build!(
            F64,
            if raw.is_empty() {
                Ok(t.double_data.clone())
            } else {
                le_chunks(raw, f64::from_le_bytes)
            }
        ),
        DType::I64 => build!(
            I64,
            if raw.is_empty() {
                Ok(t.int64_data.clone())
            } else {
                le_chunks(raw, i64::from_le_bytes)
            }
        ),
        DType::I32 => build!(
            I32,
            if raw.is_empty() {
                Ok(t.int32_data.clone())
            } else {
                le_chunks(raw, i32::from_le_bytes)
            }
        ),
        DType::U8 => build!(
            U8,
            if raw.is_empty() {
                Ok(t.int32_data.iter().map(|&v| v as u8).collect::<Vec<_>>())
            } else {
                Ok(raw.clone())
            }
        ),
        DType::Bool => build!(
            Bool,
            if raw.is_empty() {
                Ok(t.int32_data.iter().map(|&v| v != 0).collect::<Vec<_>>())
            } else {
                Ok(raw.iter().map(|&v| v != 0).collect::<Vec<_>>())
            }
        ),
    }
}

/// Reads a serialized `TensorProto` with the harness's own decoder (cross-checks the importer).
pub fn read_tensor_file_own(path: &Path) -> Result<Tensor, ReadError> {
    let bytes =
        std::fs::read(path).map_err(|e| ReadError::Other(format!("{}: {e}", path.display())))?;
    let t = pb::TensorProto::decode(bytes.as_slice())
        .map_err(|e| ReadError::Other(format!("{}: not a TensorProto ({e})", path.display())))?;
    tensor_from_proto(&t)
}

/// The ONNX element type code stored in a tensor file.
fn tensor_file_dtype(path: &Path) -> Result<i32, ReadError> {
    let bytes =
        std::fs::read(path).map_err(|e| ReadError::Other(format!("{}: {e}", path.display())))?;
    let t = pb::TensorProto::decode(bytes.as_slice())
        .map_err(|e| ReadError::Other(format!("{}: not a TensorProto ({e})", path.display())))?;
    Ok(t.data_type)
}

/// Reads a serialized `TensorProto` (`input_0.pb`, ...) with the importer's reader.
///
/// The element type is checked first: the importer widens types the engine lacks (float16 to
/// f32, int8 to i32...), and a test on such types is a skip, not a test of the engine.
pub fn read_tensor_file(path: &Path) -> Result<Tensor, ReadError> {
    let code = tensor_file_dtype(path)?;
    if engine_dtype(code).is_none() {
        return Err(ReadError::Dtype(onnx_dtype_name(code)));
    }
    let data = onnx_import::read_tensor_file(path).map_err(|e| ReadError::Other(e.to_string()))?;
    tensor_from_data(data).map_err(ReadError::Other)
}

/// Importer tensor → engine tensor.
pub fn tensor_from_data(data: onnx_import::TensorData) -> Result<Tensor, String> {
    use onnx_import::TensorValues as V;
    let shape = IxDyn(&data.dims);
    let r = match data.values {
        V::F32(v) => ArrayD::from_shape_vec(shape, v).map(Tensor::F32),
        V::F64(v) => ArrayD::from_shape_vec(shape, v).map(Tensor::F64),
        V::I64(v) => ArrayD::from_shape_vec(shape, v).map(Tensor::I64),
        V::I32(v) => ArrayD::from_shape_vec(shape, v).map(Tensor::I32),
        V::Bool(v) => ArrayD::from_shape_vec(shape, v).map(Tensor::Bool),
        V::U8(v) => ArrayD::from_shape_vec(shape, v).map(Tensor::U8),
    };
    r.map_err(|e| format!("tensor '{}': {e}", data.name))
}

// ---------------------------------------------------------------------------------------------
// Comparison.

/// Compares like `numpy.testing.assert_allclose(actual, expected, rtol, atol)` after checking
/// shape and dtype (as the ONNX backend runner does): `|a - e| <= atol + rtol * |e|`, NaN
/// matches NaN, infinities must be equal. Integers and booleans must match exactly.
/// Returns the largest absolute difference.
pub fn compare(expected: &Tensor, actual: &Tensor, rtol: f64, atol: f64) -> Result<f64, String> {
    if expected.dtype() != actual.dtype() {
        return Err(format!(
            "dtype: expected {}, got {}",
            expected.dtype(),
            actual.dtype()
        ));
    }
    if expected.shape() != actual.shape() {
        return Err(format!(
            "shape: expected {:?}, got {:?}",
            expected.shape(),
            actual.shape()
        ));
    }
    let exact = !matches!(expected, Tensor::F32(_) | Tensor::F64(_));
    if exact {
        let same = match (expected, actual) {
            (Tensor::I64(e), Tensor::I64(a)) => e == a,
            (Tensor::I32(e), Tensor::I32(a)) => e == a,
            (Tensor::U8(e), Tensor::U8(a)) => e == a,
            (Tensor::Bool(e), Tensor::Bool(a)) => e == a,
            _ => false,
        };
        if same {
            return Ok(0.0);
        }
    }
    let e = expected.to_f64_vec();
    let a = actual.to_f64_vec();
    let mut max_abs = 0.0f64;
    let mut bad = 0usize;
    let mut worst: Option<(usize, f64)> = None;
    for (i, (&ev, &av)) in e.iter().zip(&a).enumerate() {
        let ok = if ev.is_nan() {
            av.is_nan()
        } else if ev.is_infinite() {
            av == ev
        } else {
            let d = (av - ev).abs();
            if d.is_finite() {
                max_abs = max_abs.max(d);
            }
            let lim = if exact { 0.0 } else { atol + rtol * ev.abs() };
            let excess = if d.is_nan() { f64::INFINITY } else { d - lim };
            if excess > 0.0 && worst.is_none_or(|(_, w)| excess > w) {
                worst = Some((i, excess));
            }
            d <= lim
        };
        if !ok {
            bad += 1;
            if worst.is_none() {
                worst = Some((i, f64::INFINITY));
            }
        }
    }
    match worst {
        None if bad == 0 => Ok(max_abs),
        _ => {
            let (i, _) = worst.unwrap_or((0, 0.0));
            Err(format!(
                "{bad} of {} elements differ (rtol {rtol:e}, atol {atol:e}); max abs diff {max_abs:.3e}; \
                 worst at flat index {i}: expected {}, got {}",
                e.len(),
                e[i],
                a[i]
            ))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Running one case.

/// Where one input or expected output comes from.
pub enum TensorSpec {
    File(PathBuf),
    Value(Tensor),
}

pub struct DataSet {
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
}

pub struct Case {
    pub suite: String,
    pub name: String,
    pub model: PathBuf,
    pub data_sets: Vec<DataSet>,
    pub rtol: f64,
    pub atol: f64,
}

#[derive(Debug, Clone)]
pub enum Outcome {
    Passed { max_abs: f64 },
    Failed(String),
    Skipped(String),
}

pub struct CaseResult {
    pub suite: String,
    pub name: String,
    pub outcome: Outcome,
    pub elapsed: Duration,
}

/// A short, groupable description of why nodes are unsupported.
pub fn unsupported_reason(nodes: &[UnsupportedNode]) -> String {
    let mut items: BTreeSet<String> = BTreeSet::new();
    for n in nodes {
        let domain = if n.domain.is_empty() || n.domain == "ai.onnx" {
            String::new()
        } else {
            format!("{}.", n.domain)
        };
        match &n.reason {
            Some(r) => items.insert(format!("{domain}{} ({r})", n.op_type)),
            None => items.insert(format!("{domain}{}", n.op_type)),
        };
    }
    format!(
        "unsupported op: {}",
        items.into_iter().collect::<Vec<_>>().join(", ")
    )
}

fn load_spec(spec: &TensorSpec) -> Result<Tensor, ReadError> {
    match spec {
        TensorSpec::File(p) => read_tensor_file(p),
        TensorSpec::Value(t) => Ok(t.clone()),
    }
}

/// Runs one case through the public API; panics inside the engine count as failures.
pub fn run_case(case: &Case) -> CaseResult {
    let start = Instant::now();
    let outcome = match catch_unwind(AssertUnwindSafe(|| run_case_inner(case))) {
        Ok(o) => o,
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "non-string panic payload".into());
            Outcome::Failed(format!("panicked: {msg}"))
        }
    };
    CaseResult {
        suite: case.suite.clone(),
        name: case.name.clone(),
        outcome,
        elapsed: start.elapsed(),
    }
}

fn run_case_inner(case: &Case) -> Outcome {
    let proto = match load_model_proto(&case.model) {
        Ok(p) => p,
        Err(e) => return Outcome::Failed(format!("model does not decode as ModelProto: {e}")),
    };
    let dtype_issues = unsupported_dtypes(&proto);
    // An engine error on a model that uses a dtype the engine does not have is a skip, not a
    // failure: the engine is not expected to run it.
    let fail = |what: String| {
        if dtype_issues.is_empty() {
            Outcome::Failed(what)
        } else {
            Outcome::Skipped(format!(
                "unsupported dtype: {}",
                dtype_issues.iter().cloned().collect::<Vec<_>>().join("; ")
            ))
        }
    };
    let engine_err = |stage: &str, e: Error| match e {
        Error::Unsupported(nodes) => Outcome::Skipped(unsupported_reason(&nodes)),
        other => fail(format!("{stage}: {other}")),
    };

    let model = match Model::load(&case.model) {
        Ok(m) => m,
        Err(e) => return engine_err("Model::load", e),
    };
    let feeds = feed_inputs(&proto);
    let out_names: Vec<String> = proto
        .graph
        .as_ref()
        .map(|g| g.output.iter().map(|o| o.name.clone()).collect())
        .unwrap_or_default();
    let thread_counts: &[usize] = if has_conv(&proto) { &[1, 2] } else { &[1] };
    let mut max_abs = 0.0f64;

    for (ds_index, ds) in case.data_sets.iter().enumerate() {
        let mut inputs = Vec::new();
        for spec in &ds.inputs {
            match load_spec(spec) {
                Ok(t) => inputs.push(t),
                Err(ReadError::Dtype(d)) => {
                    return Outcome::Skipped(format!("unsupported dtype: input is {d}"))
                }
                // Sequence/optional inputs are not TensorProtos; `fail` skips when the model
                // declares such types.
                Err(ReadError::Other(m)) => return fail(format!("reading input: {m}")),
            }
        }
        let mut expected = Vec::new();
        for spec in &ds.outputs {
            match load_spec(spec) {
                Ok(t) => expected.push(t),
                Err(ReadError::Dtype(d)) => {
                    return Outcome::Skipped(format!("unsupported dtype: output is {d}"))
                }
                Err(ReadError::Other(m)) => return fail(format!("reading expected output: {m}")),
            }
        }
        if inputs.len() > feeds.len() {
            return Outcome::Failed(format!(
                "{} input files but the model declares {} inputs",
                inputs.len(),
                feeds.len()
            ));
        }
        let mut options = SessionOptions::default();
        for (decl, t) in feeds.iter().zip(&inputs) {
            // Integer inputs carry shapes, axes, pads, repeats or indices in these tests; the
            // engine plans with static shapes, so their values are fixed at session creation
            // (they are still fed to `run`, which checks they equal the bound values).
            if matches!(t.dtype(), DType::I64 | DType::I32) {
                options.constant_inputs.insert(decl.name.clone(), t.clone());
                continue;
            }
            // Only where the model leaves dims open: fixed declarations must bind on their own.
            let fixed = declared_dims(decl).is_some_and(|d| d.iter().all(Option::is_some));
            if !fixed {
                options
                    .input_shapes
                    .insert(decl.name.clone(), t.shape().to_vec());
            }
        }
        for &threads in thread_counts {
            options.threads = threads;
            let mut session = match Session::new(&model, &options) {
                Ok(s) => s,
                Err(e) => return engine_err(&format!("Session::new (threads {threads})"), e),
            };
            let feed: Vec<(&str, Tensor)> = feeds
                .iter()
                .zip(&inputs)
                .map(|(d, t)| (d.name.as_str(), t.clone()))
                .collect();
            let outputs = match session.run(&feed) {
                Ok(o) => o,
                Err(e) => return engine_err(&format!("Session::run (threads {threads})"), e),
            };
            if outputs.len() < expected.len() {
                return Outcome::Failed(format!(
                    "{} outputs, expected {}",
                    outputs.len(),
                    expected.len()
                ));
            }
            for (i, (exp, (name, got))) in expected.iter().zip(&outputs).enumerate() {
                if let Some(want) = out_names.get(i) {
                    if want != name {
                        return Outcome::Failed(format!(
                            "output {i} is named '{name}', the model's is '{want}'"
                        ));
                    }
                }
                match compare(exp, got, case.rtol, case.atol) {
                    Ok(d) => max_abs = max_abs.max(d),
                    Err(m) => {
                        return fail(format!(
                            "data set {ds_index}, threads {threads}, output {i} '{name}': {m}"
                        ));
                    }
                }
            }
        }
    }
    Outcome::Passed { max_abs }
}

// ---------------------------------------------------------------------------------------------
// Reporting.

pub struct Report {
    pub results: Vec<CaseResult>,
}

impl Report {
    pub fn run(cases: &[Case]) -> Report {
        let mut results = Vec::with_capacity(cases.len());
        for case in cases {
            let r = run_case(case);
            if std::env::var_os("ONNX_TEST_VERBOSE").is_some() {
                eprintln!(
                    "{:>8.3}s {} {:?}",
                    r.elapsed.as_secs_f64(),
                    r.name,
                    r.outcome
                );
            }
            results.push(r);
        }
        Report { results }
    }

    pub fn passed(&self) -> Vec<&CaseResult> {
        self.results
            .iter()
            .filter(|r| matches!(r.outcome, Outcome::Passed { .. }))
            .collect()
    }

    pub fn failed(&self) -> Vec<&CaseResult> {
        self.results
            .iter()
            .filter(|r| matches!(r.outcome, Outcome::Failed(_)))
            .collect()
    }

    pub fn skipped(&self) -> Vec<&CaseResult> {
        self.results
            .iter()
            .filter(|r| matches!(r.outcome, Outcome::Skipped(_)))
            .collect()
    }

    /// Counts per suite, the passed names, the failures with reasons, the skips grouped by
    /// reason and the slowest cases.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let mut suites: Vec<&str> = self.results.iter().map(|r| r.suite.as_str()).collect();
        suites.dedup();
        let _ = writeln!(s, "\n==== ONNX backend tests ====");
        for suite in &suites {
            let of = |f: fn(&Outcome) -> bool| {
                self.results
                    .iter()
                    .filter(|r| r.suite == *suite && f(&r.outcome))
                    .count()
            };
            let _ = writeln!(
                s,
                "{suite:>18}: {} passed, {} failed, {} skipped",
                of(|o| matches!(o, Outcome::Passed { .. })),
                of(|o| matches!(o, Outcome::Failed(_))),
                of(|o| matches!(o, Outcome::Skipped(_)))
            );
        }
        let (p, f, k) = (self.passed(), self.failed(), self.skipped());
        let _ = writeln!(
            s,
            "{:>18}: {} passed, {} failed, {} skipped",
            "total",
            p.len(),
            f.len(),
            k.len()
        );

        let _ = writeln!(s, "\n-- passed ({}):", p.len());
        for r in &p {
            if let Outcome::Passed { max_abs } = r.outcome {
                let _ = writeln!(
                    s,
                    "  {} (max abs diff {max_abs:.2e}, {:.2}s)",
                    r.name,
                    r.elapsed.as_secs_f64()
                );
            }
        }
        let _ = writeln!(s, "\n-- failed ({}):", f.len());
        for r in &f {
            if let Outcome::Failed(m) = &r.outcome {
                let _ = writeln!(s, "  {}: {m}", r.name);
            }
        }
        let mut groups: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
        for r in &k {
            if let Outcome::Skipped(m) = &r.outcome {
                groups.entry(m.as_str()).or_default().push(r.name.as_str());
            }
        }
        let _ = writeln!(s, "\n-- skipped ({}), by reason:", k.len());
        for (reason, names) in &groups {
            let _ = writeln!(s, "  [{}] {reason}: {}", names.len(), names.join(" "));
        }
        let mut slow: Vec<&CaseResult> = self.results.iter().collect();
        slow.sort_by_key(|r| std::cmp::Reverse(r.elapsed));
        let _ = writeln!(s, "\n-- slowest:");
        for r in slow.iter().take(8) {
            let _ = writeln!(s, "  {:>8.3}s {}", r.elapsed.as_secs_f64(), r.name);
        }
        s
    }

    /// Panics unless every test whose name starts with one of `prefixes` exists and passed.
    pub fn assert_must_pass(&self, prefixes: &[&str]) -> Vec<String> {
        let mut problems = Vec::new();
        for prefix in prefixes {
            let matching: Vec<&CaseResult> = self
                .results
                .iter()
                .filter(|r| r.name.starts_with(prefix))
                .collect();
            if matching.is_empty() {
                problems.push(format!("must-pass '{prefix}*': no such test was found"));
            }
            for r in matching {
                match &r.outcome {
                    Outcome::Passed { .. } => {}
                    Outcome::Failed(m) => {
                        problems.push(format!("must-pass {}: FAILED: {m}", r.name))
                    }
                    Outcome::Skipped(m) => {
                        problems.push(format!("must-pass {}: SKIPPED: {m}", r.name))
                    }
                }
            }
        }
        problems
    }
}
