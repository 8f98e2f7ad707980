//! Runs the ONNX backend test data (onnx 1.22.0: `node`, `pytorch-converted`,
//! `pytorch-operator`, `simple` and the `light_*` real architectures) through the public API.
//!
//! Fetch the data first: `scripts/fetch-node-tests.sh` (into `.cache/onnx-node-tests/`). The
//! tests fail when it is missing, so CI cannot pass without running them.
//!
//! Each test is classified as
//! - *skipped*: the engine reports `Error::Unsupported` (an op or attribute outside its set), or
//!   the model/data uses an element type the engine's `DType` does not have (checked by decoding
//!   the protobufs here, never by guessing from test names);
//! - *passed*: every output matches within the tolerances below, on 1 thread and, for models
//!   with convolutions, also on 2 threads;
//! - *failed*: anything else (wrong values, other errors, panics).
//!
//! Any failure fails the test, and so does a must-pass test that was skipped.
//!
//! `ONNX_TEST_FILTER=substr` runs only matching tests (and skips the must-pass check);
//! `ONNX_TEST_VERBOSE=1` prints each case as it finishes. Run with `--nocapture` to see the
//! full report even when everything passes.

mod common;

use std::path::{Path, PathBuf};

use common::{Case, DataSet, Outcome, Report, TensorSpec};
use engine::Tensor;

/// The ONNX runner's defaults (onnx/backend/test/loader and case/model).
const RTOL: f64 = 1e-3;
const ATOL: f64 = 1e-7;

/// Per-test tolerances that differ from the defaults: (test name, rtol, atol, why).
const TOLERANCES: &[(&str, f64, f64, &str)] = &[(
    "light_densenet121",
    2e-3,
    1e-7,
    "the ONNX runner itself registers densenet121 with rtol 2e-3 (onnx/backend/test/case/model/__init__.py)",
)];

/// Tests that must be attempted and pass (prefixes), from the node/pytorch suites.
const MUST_PASS_NODE: &[&str] = &[
    "test_Conv2d_groups",
    "test_Conv2d_depthwise",
    "test_Conv2d_dilated",
    "test_MaxPool2d_stride_padding_dilation",
    "test_maxpool_2d_pads",
    "test_maxpool_2d_precomputed_pads",
    "test_maxpool_2d_ceil",
    "test_maxpool_2d_same_upper",
    "test_maxpool_2d_same_lower",
    "test_maxpool_2d_precomputed_same_upper",
    "test_maxpool_2d_dilations",
    "test_averagepool_2d_pads",
    "test_averagepool_2d_precomputed_pads",
    "test_averagepool_2d_ceil",
    "test_averagepool_2d_same_upper",
    "test_averagepool_2d_same_lower",
    "test_averagepool_2d_precomputed_same_upper",
    "test_averagepool_2d_dilations",
];

/// The real architectures in `light/`; all must pass.
const MUST_PASS_LIGHT: &[&str] = &[
    "light_resnet50",
    "light_inception_v1",
    "light_inception_v2",
    "light_bvlc_alexnet",
    "light_vgg19",
    "light_densenet121",
    "light_squeezenet",
    "light_zfnet512",
    "light_shufflenet",
];

fn tolerances(name: &str) -> (f64, f64) {
    TOLERANCES
        .iter()
        .find(|t| t.0 == name)
        .map(|t| (t.1, t.2))
        .unwrap_or((RTOL, ATOL))
}

fn sorted_dir(dir: &Path) -> Vec<PathBuf> {
    let rd =
        std::fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
    let mut v: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
    v.sort();
    v
}

/// `prefix_0.pb, prefix_1.pb, ...` in index order (stops at the first gap, like the runner
/// which counts the files and opens 0..n).
fn numbered_files(dir: &Path, prefix: &str) -> Vec<TensorSpec> {
    let mut v = Vec::new();
    loop {
        let p = dir.join(format!("{prefix}_{}.pb", v.len()));
        if !p.is_file() {
            return v;
        }
        v.push(TensorSpec::File(p));
    }
}

/// The cases of one suite folder: `<suite>/<test>/model.onnx` + `test_data_set_*`.
fn suite_cases(root: &Path, suite: &str) -> Vec<Case> {
    let dir = root.join(suite);
    assert!(
        dir.is_dir(),
        "missing {}: re-run scripts/fetch-node-tests.sh --force",
        dir.display()
    );
    let filter = common::name_filter();
    let mut cases = Vec::new();
    for test_dir in sorted_dir(&dir) {
        let model = test_dir.join("model.onnx");
        let Some(name) = test_dir
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_string)
        else {
            continue;
        };
        if !model.is_file() || filter.as_ref().is_some_and(|f| !name.contains(f.as_str())) {
            continue;
        }
        let data_sets: Vec<DataSet> = sorted_dir(&test_dir)
            .into_iter()
            .filter(|p| {
                p.is_dir()
                    && p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("test_data_set"))
            })
            .map(|ds| DataSet {
                inputs: numbered_files(&ds, "input"),
                outputs: numbered_files(&ds, "output"),
            })
            .collect();
        assert!(
            !data_sets.is_empty(),
            "{}: no test_data_set_* folder",
            test_dir.display()
        );
        let (rtol, atol) = tolerances(&name);
        cases.push(Case {
            suite: suite.to_string(),
            name,
            model,
            data_sets,
            rtol,
            atol,
        });
    }
    cases
}

/// The `light/light_*.onnx` models, with the input the ONNX runner generates for them
/// (`generate_dummy_data(random=False)`: declared fixed dims, 1 for the others, values
/// `arange(n) / n` as float32) and the stored `light_*_output_<i>.pb` as expected outputs.
fn light_cases(root: &Path) -> Vec<Case> {
    let dir = root.join("light");
    assert!(
        dir.is_dir(),
        "missing {}: re-run scripts/fetch-node-tests.sh --force",
        dir.display()
    );
    let filter = common::name_filter();
    let mut cases = Vec::new();
    for model in sorted_dir(&dir) {
        if model.extension().and_then(|e| e.to_str()) != Some("onnx") {
            continue;
        }
        let Some(name) = model
            .file_stem()
            .and_then(|n| n.to_str())
            .map(str::to_string)
        else {
            continue;
        };
        if filter.as_ref().is_some_and(|f| !name.contains(f.as_str())) {
            continue;
        }
        let proto = common::load_model_proto(&model).unwrap_or_else(|e| panic!("{e}"));
        let mut inputs = Vec::new();
        for decl in common::feed_inputs(&proto) {
            let dims: Vec<usize> = common::declared_dims(decl)
                .unwrap_or_default()
                .into_iter()
                .map(|d| d.unwrap_or(1))
                .collect();
            let n: usize = dims.iter().product();
            let data: Vec<f32> = (0..n).map(|i| (i as f64 / n as f64) as f32).collect();
            let t = Tensor::from_f32(&dims, data)
                .unwrap_or_else(|| panic!("{name}: bad input shape {dims:?}"));
            inputs.push(TensorSpec::Value(t));
        }
        let mut outputs = numbered_files(&dir, &format!("{name}_output"));
        assert!(
            !outputs.is_empty(),
            "{name}: no {name}_output_0.pb next to it"
        );
        let (hidden_model, hidden_ref) = with_hidden_output(&name, proto);
        outputs.push(TensorSpec::Value(hidden_ref));
        let (rtol, atol) = tolerances(&name);
        cases.push(Case {
            suite: "light".into(),
            name,
            model: hidden_model,
            data_sets: vec![DataSet { inputs, outputs }],
            rtol,
            atol,
        });
    }
    cases
}

/// The light models' weights are constants, so their stored outputs are uniform softmaxes
/// (0.001 everywhere) that a wrong convolution would reproduce as well. This writes a copy of
/// the model (under `.cache/light-hidden/`) that also outputs the input of the last node (the
/// logits), and returns it with the ONNX Runtime value of that tensor committed in
/// `tests/fixtures/light_refs/` (scripts/make_light_refs.py).
fn with_hidden_output(name: &str, mut proto: tract_onnx::pb::ModelProto) -> (PathBuf, Tensor) {
    use prost::Message;
    let refs = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/light_refs");
    let hidden_name =
        std::fs::read_to_string(refs.join(format!("{name}.txt"))).unwrap_or_else(|e| {
            panic!("{name}: light_refs/{name}.txt: {e} (run scripts/make_light_refs.py)")
        });
    let hidden_name = hidden_name.trim().to_string();
    let f = std::fs::File::open(refs.join(format!("{name}.npy")))
        .unwrap_or_else(|e| panic!("{name}: light_refs/{name}.npy: {e}"));
    let reference = <ndarray::ArrayD<f32> as ndarray_npy::ReadNpyExt>::read_npy(f)
        .unwrap_or_else(|e| panic!("{name}: light_refs/{name}.npy: {e}"));
    let graph = proto
        .graph
        .as_mut()
        .unwrap_or_else(|| panic!("{name}: no graph"));
    assert!(
        graph.node.iter().any(|n| n.output.contains(&hidden_name)),
        "{name}: no node produces '{hidden_name}'"
    );
    graph.output.push(tract_onnx::pb::ValueInfoProto {
        name: hidden_name,
        ..Default::default()
    });
    let dir = common::repo_root().join(".cache").join("light-hidden");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let path = dir.join(format!("{name}.onnx"));
    std::fs::write(&path, proto.encode_to_vec())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (path, Tensor::F32(reference))
}

fn check(report: &Report, must_pass: &[&str]) {
    println!("{}", report.summary());
    let mut problems: Vec<String> = report
        .failed()
        .iter()
        .map(|r| match &r.outcome {
            Outcome::Failed(m) => format!("{}: {m}", r.name),
            _ => unreachable!(),
        })
        .collect();
    if common::name_filter().is_none() {
        problems.extend(report.assert_must_pass(must_pass));
    } else {
        println!("(ONNX_TEST_FILTER is set: must-pass list not checked)");
    }
    assert!(
        problems.is_empty(),
        "{} problem(s):\n  {}",
        problems.len(),
        problems.join("\n  ")
    );
}

/// The operator-level suites.
#[test]
fn onnx_backend_node_tests() {
    let root = common::node_tests_dir();
    let mut cases = Vec::new();
    for suite in ["node", "pytorch-converted", "pytorch-operator", "simple"] {
        cases.extend(suite_cases(&root, suite));
    }
    if common::name_filter().is_none() {
        assert!(
            cases.len() > 1500,
            "only {} cases found under {}",
            cases.len(),
            root.display()
        );
    }
    let report = Report::run(&cases);
    check(&report, MUST_PASS_NODE);
}

/// The real architectures (`light_*`).
#[test]
fn onnx_backend_light_models() {
    let root = common::node_tests_dir();
    let cases = light_cases(&root);
    if common::name_filter().is_none() {
        assert_eq!(
            cases.len(),
            MUST_PASS_LIGHT.len(),
            "light models found: {}",
            cases.len()
        );
    }
    let report = Report::run(&cases);
    check(&report, MUST_PASS_LIGHT);
}

/// The harness itself and the importer's tensor reader: every stored tensor file decodes, or
/// is reported as an element type the engine lacks (never as a broken file), and
/// `onnx_import::read_tensor_file` agrees bit for bit with the harness's own decoder.
#[test]
fn harness_reads_every_tensor_file() {
    let root = common::node_tests_dir();
    let (mut decoded, mut other_dtype) = (0usize, 0usize);
    let mut problems = Vec::new();
    for suite in ["node", "pytorch-converted", "pytorch-operator", "simple"] {
        for test_dir in sorted_dir(&root.join(suite)) {
            for ds in sorted_dir(&test_dir).into_iter().filter(|p| p.is_dir()) {
                for f in sorted_dir(&ds) {
                    match (
                        common::read_tensor_file(&f),
                        common::read_tensor_file_own(&f),
                    ) {
                        (Ok(a), Ok(b)) => {
                            decoded += 1;
                            // Bitwise, so NaN payloads and -0.0 count too.
                            let same = a.dtype() == b.dtype()
                                && a.shape() == b.shape()
                                && a.to_f64_vec()
                                    .iter()
                                    .map(|v| v.to_bits())
                                    .eq(b.to_f64_vec().iter().map(|v| v.to_bits()));
                            if !same {
                                problems.push(format!(
                                    "{}: importer and harness decode differently",
                                    f.display()
                                ));
                            }
                        }
                        (Err(common::ReadError::Dtype(_)), _) => other_dtype += 1,
                        (Err(common::ReadError::Other(m)), _)
                        | (Ok(_), Err(common::ReadError::Other(m))) => {
                            // Sequence/optional data are not TensorProtos; the model says so.
                            let model = common::load_model_proto(&test_dir.join("model.onnx"));
                            if model
                                .map(|m| common::unsupported_dtypes(&m).is_empty())
                                .unwrap_or(true)
                            {
                                problems.push(m);
                            } else {
                                other_dtype += 1;
                            }
                        }
                        (Ok(_), Err(common::ReadError::Dtype(d))) => problems.push(format!(
                            "{}: harness says {d}, importer decoded it",
                            f.display()
                        )),
                    }
                }
            }
        }
    }
    println!("{decoded} tensor files decoded, {other_dtype} with types the engine lacks");
    assert!(decoded > 3000, "only {decoded} tensor files decoded");
    assert!(
        problems.is_empty(),
        "{} problems:\n  {}",
        problems.len(),
        problems.join("\n  ")
    );
}

/// The comparison follows `numpy.testing.assert_allclose` (|a - e| <= atol + rtol |e|, NaN
/// equals NaN) and checks dtype and shape first.
#[test]
fn harness_compare_follows_allclose() {
    let t = |v: Vec<f32>| Tensor::from_f32(&[v.len()], v).unwrap_or_else(|| unreachable!());
    let e = t(vec![1.0, 100.0, f32::NAN, f32::INFINITY, 0.0]);
    let ok = t(vec![1.0009, 100.09, f32::NAN, f32::INFINITY, 0.9e-7]);
    assert!(common::compare(&e, &ok, 1e-3, 1e-7).is_ok());
    for bad in [
        vec![1.0011, 100.0, f32::NAN, f32::INFINITY, 0.0],
        vec![1.0, 100.0, 0.0, f32::INFINITY, 0.0],
        vec![1.0, 100.0, f32::NAN, f32::NEG_INFINITY, 0.0],
        vec![1.0, 100.0, f32::NAN, f32::INFINITY, 2e-7],
        vec![1.0, f32::NAN, f32::NAN, f32::INFINITY, 0.0],
    ] {
        assert!(
            common::compare(&e, &t(bad.clone()), 1e-3, 1e-7).is_err(),
            "{bad:?} accepted"
        );
    }
    let short = t(vec![1.0, 100.0]);
    assert!(common::compare(&e, &short, 1e-3, 1e-7).is_err());
    let ints = Tensor::from_i64(&[5], vec![1, 100, 0, 0, 0]).unwrap_or_else(|| unreachable!());
    assert!(common::compare(&e, &ints, 1e-3, 1e-7).is_err());
    let ints2 = Tensor::from_i64(&[5], vec![1, 100, 0, 0, 1]).unwrap_or_else(|| unreachable!());
    assert!(common::compare(&ints, &ints2, 1e-3, 1e-7).is_err());
    assert!(common::compare(&ints, &ints.clone(), 0.0, 0.0).is_ok());
}
