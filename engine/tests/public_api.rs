//! The public facade only (`engine::{Model, Session, ...}`, nothing from the hidden modules):
//! load a committed fixture model from a path and from bytes, inspect it, run it on ndarray
//! inputs, read its profile report, and get typed errors for bad files and inputs.
//!
//! The fixture (engine/tests/fixtures/inception_bn, from scripts/make_fixtures.py) is a small
//! Inception-style net with BatchNormalization kept; its expected outputs were computed by
//! ONNX Runtime. Same bound as tests/fixtures.rs: max |engine − ORT| ≤ 1e-4 · max(1, max |ORT|).

use std::fs::File;
use std::path::{Path, PathBuf};

use engine::ndarray::ArrayD;
use engine::{Backend, DType, Dim, Error, Model, Session, SessionOptions, Tensor};
use ndarray_npy::ReadNpyExt;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/inception_bn")
}

fn npy(path: &Path) -> ArrayD<f32> {
    let f = File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    ArrayD::<f32>::read_npy(f).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn assert_close(got: &Tensor, want: &ArrayD<f32>, what: &str) {
    let got = got.as_f32().unwrap_or_else(|| panic!("{what}: not f32"));
    assert_eq!(got.shape(), want.shape(), "{what}");
    let scale = want.iter().fold(1f32, |m, v| m.max(v.abs()));
    let err = got
        .iter()
        .zip(want)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(
        err <= 1e-4 * scale,
        "{what}: max error {err} (scale {scale})"
    );
}

#[test]
fn load_inspect_run_and_profile_a_fixture() {
    let dir = fixture();
    let model = Model::load(dir.join("model.onnx")).expect("fixture loads");

    // Inspect: declared inputs and outputs, as the ONNX file names them.
    let inputs = model.inputs();
    assert_eq!(inputs.len(), 1);
    assert_eq!(inputs[0].name, "input");
    assert_eq!(inputs[0].dtype, Some(DType::F32));
    assert_eq!(
        inputs[0].shape,
        Some(vec![
            Dim::Fixed(1),
            Dim::Fixed(3),
            Dim::Fixed(75),
            Dim::Fixed(75)
        ])
    );
    let outputs: Vec<&str> = model.outputs().iter().map(|v| v.name.as_str()).collect();
    assert_eq!(outputs, ["logits", "features"]);

    // Run on an ndarray input with a chosen thread count and backend.
    let x = npy(&dir.join("input_0.npy"));
    let options = SessionOptions {
        threads: 2,
        backend: Backend::Cpu,
        ..Default::default()
    };
    let mut session = Session::new(&model, &options).expect("session");
    assert_eq!((session.threads(), session.backend()), (2, Backend::Cpu));
    let out = session
        .run(&[("input", Tensor::from(x.clone()))])
        .expect("run");
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].0, "logits");
    assert_close(&out[0].1, &npy(&dir.join("output_0.npy")), "logits");
    assert_close(&out[1].1, &npy(&dir.join("output_1.npy")), "features");

    // The same model from bytes gives the same outputs.
    let bytes = std::fs::read(dir.join("model.onnx")).expect("read fixture");
    let again = Model::from_bytes(&bytes, "inception_bn").expect("from bytes");
    let mut s1 = Session::new(
        &again,
        &SessionOptions {
            threads: 1,
            ..Default::default()
        },
    )
    .expect("session");
    let out1 = s1.run(&[("input", Tensor::from(x))]).expect("run");
    assert_close(
        &out1[0].1,
        &npy(&dir.join("output_0.npy")),
        "logits (from bytes, 1 thread)",
    );

    // Profile: one entry per ONNX node, named as in the file, times that add up.
    let report = session.profile(1, 3).expect("profile");
    assert_eq!(report.iters, Some(3));
    assert_eq!(report.threads, 2);
    assert_eq!(report.backend, "cpu");
    assert_eq!(report.nodes.len(), 96, "the fixture has 96 ONNX nodes");
    assert_eq!(report.nodes[0].name, "/stem/stem.0/cb/cb.0/Conv");
    assert_eq!(report.nodes[0].op, "Conv");
    let total = report.totals.time_ms.expect("measured total");
    let timed: f64 = report.nodes.iter().filter_map(|n| n.time_ms).sum();
    assert!(
        total > 0.0 && timed > 0.0 && timed <= total * 1.5,
        "{timed} vs {total}"
    );
    assert_eq!(
        report.totals.macs,
        report.nodes.iter().map(|n| n.macs).sum::<u64>()
    );
    // Every timed node has its group's FLOPs; fused members point at a timed head.
    for n in &report.nodes {
        if let Some(head) = &n.fused_into {
            assert!(report
                .nodes
                .iter()
                .any(|h| &h.name == head && h.time_ms.is_some()));
        }
    }

    // The analytic report (nothing runs) carries the same costs and receptive fields.
    let analytic = model.analytic_report(&options).expect("analytic");
    assert!(analytic.iters.is_none());
    assert_eq!(analytic.nodes.len(), report.nodes.len());
    for (a, m) in analytic.nodes.iter().zip(&report.nodes) {
        assert_eq!(
            (&a.name, a.macs, a.params, a.rf),
            (&m.name, m.macs, m.params, m.rf)
        );
        assert!(a.time_ms.is_none());
    }
    // And what the cost model computes from the bound graph directly.
    let graph = model.bind(&options).expect("bind");
    let (_, totals) = engine::cost::graph_cost(&graph);
    assert_eq!(totals.macs, analytic.totals.macs);
}

#[test]
fn errors_are_typed_not_panics() {
    let err = Model::from_bytes(b"definitely not onnx", "junk.onnx").unwrap_err();
    assert!(matches!(err, Error::Onnx(_)), "{err:?}");
    assert!(err.to_string().starts_with("junk.onnx"), "{err}");

    let err = Model::load(fixture().join("missing.onnx")).unwrap_err();
    assert!(matches!(err, Error::Onnx(_)), "{err:?}");

    let err = Model::load("zoo:no_such_net").unwrap_err();
    assert!(matches!(err, Error::Model(_)), "{err:?}");

    let model = Model::load(fixture().join("model.onnx")).expect("fixture loads");
    let mut session = Session::new(
        &model,
        &SessionOptions {
            threads: 1,
            ..Default::default()
        },
    )
    .expect("session");
    let wrong = Tensor::zeros(DType::F32, &[1, 3, 74, 75]);
    match session.run(&[("input", wrong)]) {
        Err(Error::Input { name, message }) => {
            assert_eq!(name, "input");
            assert!(message.contains("75"), "{message}");
        }
        other => panic!("expected an input error, got {other:?}"),
    }
    let err = session.run(&[]).unwrap_err();
    assert!(matches!(err, Error::Input { .. }), "{err:?}");

    let tiny = SessionOptions {
        max_memory: Some(1 << 10),
        ..Default::default()
    };
    let err = Session::new(&model, &tiny)
        .err()
        .expect("1 KiB cannot hold the model");
    assert!(matches!(err, Error::MemoryLimit { .. }), "{err:?}");
}
