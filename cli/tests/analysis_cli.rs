//! `engine rf`, `engine verify`, `engine compare` and `engine zoo` through the built binary.
//!
//! The receptive-field recurrence itself (dilation, asymmetric pads, two-branch concats,
//! unaligned paths) is unit-tested in `engine/src/rf/tests.rs`; here the known whole-network
//! values are checked end to end through the CLI's JSON, the measured receptive fields against
//! windows computed in this file, `verify` on every zoo model, the width-0.5 ratios against
//! figures derived here from the ResNet-50 architecture, and the ONNX files `engine zoo`
//! writes against the in-memory models.

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

fn engine(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_engine"))
        .args(args)
        .output()
        .expect("the engine binary runs")
}

fn ok_json(args: &[&str]) -> Value {
    let out = engine(args);
    assert!(
        out.status.success(),
        "engine {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "engine {args:?}: not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn pair(v: &Value) -> [u64; 2] {
    let a = v.as_array().expect("[h, w]");
    [a[0].as_u64().expect("h"), a[1].as_u64().expect("w")]
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("engine-analysis-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

/// The `rf` JSON node whose output feeds the node named `consumer` (the one listed just
/// before it: all zoo models list a global pool right after what it pools).
fn node_before<'a>(nodes: &'a [Value], consumer: &str) -> &'a Value {
    let i = nodes
        .iter()
        .position(|n| n["name"] == consumer)
        .unwrap_or_else(|| panic!("no node {consumer}"));
    &nodes[i - 1]
}

#[test]
fn rf_json_gives_the_known_whole_network_values() {
    // ResNet-50 v1.5 (stride on the 3×3) and v1 (stride on the first 1×1) at the global pool.
    for (spec, expected) in [("zoo:resnet50", 427), ("zoo:resnet50_v1", 483)] {
        let j = ok_json(&["rf", spec, "--json"]);
        assert_eq!(j["model"], spec);
        let nodes = j["nodes"].as_array().expect("nodes");
        let at_gap = node_before(nodes, "avgpool");
        assert_eq!(pair(&at_gap["rf"]["size"]), [expected; 2], "{spec}");
        assert_eq!(pair(&at_gap["rf"]["stride"]), [32, 32], "{spec}");
        assert!(at_gap["empirical_size"].is_null());
        for key in ["name", "op", "output", "shortcut_size"] {
            assert!(!at_gap[key].is_null(), "{key} missing");
        }
        // The pool itself: a 7×7 window at stride 32 adds 6·32.
        let gap = nodes
            .iter()
            .find(|n| n["name"] == "avgpool")
            .expect("avgpool");
        assert_eq!(pair(&gap["rf"]["size"]), [expected + 6 * 32; 2]);
    }
    // Shortcut for v1.5: stem 7, pool +2·2, the three stride-2 3×3s +2·4, +2·8, +2·16.
    let j = ok_json(&["rf", "zoo:resnet50", "--json", "--node", "layer4.2.relu_2"]);
    let nodes = j["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 1);
    assert_eq!(pair(&nodes[0]["shortcut_size"]), [7 + 4 + 8 + 16 + 32; 2]);
    // VGG-16: 13 stride-1 3×3 convs and 5 2×2/2 pools; after the last pool
    // 1 + 2·(2·1 + 2·2 + 3·4 + 3·8 + 3·16) + 1·(1 + 2 + 4 + 8 + 16) = 212.
    let j = ok_json(&["rf", "zoo:vgg16:width=0.125", "--json"]);
    let last_pool = j["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .rfind(|n| n["op"] == "MaxPool")
        .expect("a pool");
    let hand = 1 + 2 * (2 + 2 * 2 + 3 * 4 + 3 * 8 + 3 * 16) + (1 + 2 + 4 + 8 + 16);
    assert_eq!(hand, 212);
    assert_eq!(pair(&last_pool["rf"]["size"]), [hand; 2]);
    // Unknown node: an error naming it, non-zero exit.
    let out = engine(&["rf", "zoo:resnet20", "--node", "nope"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope"));
}

/// The window of output position `pos` of a node, clipped to an `hw`-pixel input: what a
/// measurement can see.
fn clipped_size(size: u64, stride: u64, offset: f64, pos: u64, hw: u64) -> u64 {
    let start = offset - (size as f64 - 1.0) / 2.0 + (pos * stride) as f64;
    let end = start + size as f64 - 1.0;
    (end.min(hw as f64 - 1.0) - start.max(0.0) + 1.0) as u64
}

#[test]
fn measured_receptive_fields_match_the_analytic_ones() {
    // CIFAR ResNet-20 (residual adds, stride-2 projections) and the Inception-style CIFAR net
    // (concats of 1×1 / 3×3 / pooled branches, valid-padded reductions). Every node is
    // measured at its centre output position (shapes from the importer's shape inference).
    for spec in ["zoo:resnet20:width=0.25", "zoo:inception_cifar:width=0.125"] {
        let j = ok_json(&["rf", spec, "--json", "--empirical", "-t", "1"]);
        let bound = engine::Model::load(spec)
            .and_then(|m| m.bind(&engine::SessionOptions::default()))
            .expect("zoo model binds");
        let nodes = j["nodes"].as_array().expect("nodes");
        assert!(nodes.len() > 20);
        let mut full = 0;
        for n in nodes {
            let size = pair(&n["rf"]["size"]);
            let stride = pair(&n["rf"]["stride"]);
            let offset = &n["rf"]["offset"];
            let name = n["output"].as_str().expect("output");
            let shape = bound
                .find_value(name)
                .and_then(|v| bound.value(v).fixed_shape())
                .expect("bound shape");
            // Each axis on its own: Inception's 1×7 / 7×1 factorised convs make the window
            // rectangular. 2-D values (after the global pool) have one position.
            let expected: [u64; 2] = std::array::from_fn(|axis| {
                let pos = if shape.len() == 4 {
                    shape[2 + axis] / 2
                } else {
                    0
                } as u64;
                let off = offset[axis].as_f64().expect("offset");
                clipped_size(size[axis], stride[axis], off, pos, 32)
            });
            let measured = pair(&n["empirical_size"]);
            assert_eq!(measured, expected, "{spec} node {}", n["name"]);
            if expected == size {
                full += 1;
            }
        }
        // Some windows lie fully inside the image, so the full size was seen.
        assert!(full >= 5, "{spec}: only {full} unclipped windows");
    }
}

/// Architectures cut down to run fast (2 cores): every block type and every op of the zoo.
const SMALL_ZOO: &[&str] = &[
    "zoo:resnet18:width=0.25,input=64",
    "zoo:resnet34:width=0.25,input=64",
    "zoo:resnet50:width=0.25,input=64",
    "zoo:resnet50_v1:width=0.25,input=64",
    "zoo:resnet101:width=0.125,input=64",
    "zoo:resnet152:width=0.125,input=64",
    "zoo:resnext50_32x4d:width=0.25,input=64",
    "zoo:resnext101_32x8d:width=0.125,input=64",
    "zoo:resnet20:width=0.5",
    "zoo:resnet56:width=0.5",
    "zoo:inception_v3:width=0.125,input=75",
    "zoo:inception_v4:width=0.125,input=75",
    "zoo:inception_cifar:width=0.25",
    // Wide and large enough for Winograd (128 channels at 14×14 in block 3).
    "zoo:vgg16:width=0.5,input=56",
];

#[test]
fn verify_passes_on_every_zoo_model() {
    let names: Vec<String> = engine::zoo::list()
        .iter()
        .map(|(n, _)| n.to_string())
        .collect();
    for name in &names {
        assert!(
            SMALL_ZOO
                .iter()
                .any(|s| s.strip_prefix("zoo:").and_then(|s| s.split(':').next()) == Some(name)),
            "zoo model {name} is not verified here"
        );
    }
    let mut winograd = 0;
    for spec in SMALL_ZOO {
        let out = engine(&["verify", spec, "--json", "-t", "2", "--rf-samples", "2"]);
        let j: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{spec}: not JSON ({e})"));
        let bad: Vec<&Value> = j["checks"]
            .as_array()
            .expect("checks")
            .iter()
            .filter(|c| c["status"] == "mismatch")
            .collect();
        assert!(
            out.status.success() && bad.is_empty(),
            "{spec}: {bad:#?} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let checks = j["checks"].as_array().expect("checks");
        for kind in [
            "macs",
            "output_bytes",
            "param_bytes",
            "activation_peak",
            "rf",
        ] {
            assert!(
                checks
                    .iter()
                    .any(|c| c["kind"] == kind && c["status"] != "skipped"),
                "{spec}: no {kind} check"
            );
        }
        assert!(checks
            .iter()
            .filter(|c| c["kind"] == "rf")
            .all(|c| c["status"] == "match"));
        winograd += checks
            .iter()
            .filter(|c| c["kind"] == "macs" && c["status"] == "explained")
            .count();
        // The executed MACs are the analytic ones except where Winograd ran (fewer, or a
        // few more on maps smaller than its tiles).
        let s = &j["summary"];
        let (a, e) = (
            s["macs_analytic"].as_u64().expect("macs"),
            s["macs_executed"].as_u64().expect("macs"),
        );
        assert!(e > a / 3 && e < 2 * a, "{spec}: {e} of {a}");
    }
    assert!(winograd > 0, "no Winograd kernel was checked");
}

/// ResNet-50 v1.5 totals from the architecture alone, at width `w` (channels `c·w`) and a
/// 224×224 input: (MACs, parameters, feature-map elements).
fn resnet50_by_hand(w: f64) -> (f64, f64, f64) {
    let c = |n: f64| (n * w).round();
    let (mut macs, mut params, mut fm) = (0.0, 0.0, 0.0);
    // conv (k×k, cin→cout, output side o), followed by BN (4 per channel, same output).
    let mut conv_bn = |k: f64, cin: f64, cout: f64, o: f64| {
        macs += o * o * cout * cin * k * k;
        params += cout * cin * k * k + 4.0 * cout;
        fm += 2.0 * o * o * cout;
    };
    conv_bn(7.0, 3.0, c(64.0), 112.0);
    let mut extra_fm = 112.0 * 112.0 * c(64.0) + 56.0 * 56.0 * c(64.0); // relu, maxpool
    let mut cin = c(64.0);
    let mut side = 56.0;
    for (planes, blocks, stride) in [
        (64.0, 3, 1.0),
        (128.0, 4, 2.0),
        (256.0, 6, 2.0),
        (512.0, 3, 2.0),
    ] {
        for i in 0..blocks {
            let s = if i == 0 { stride } else { 1.0 };
            let (p, out) = (c(planes), c(4.0 * planes));
            let o = side / s;
            conv_bn(1.0, cin, p, side);
            conv_bn(3.0, p, p, o);
            conv_bn(1.0, p, out, o);
            if i == 0 {
                conv_bn(1.0, cin, out, o);
            }
            // relu, relu, add, relu
            extra_fm += side * side * p + o * o * p + 2.0 * o * o * out;
            cin = out;
            side = o;
        }
    }
    // global pool, flatten, fc (weights + bias), 1000 classes
    macs += cin * 1000.0;
    params += cin * 1000.0 + 1000.0;
    extra_fm += 2.0 * cin + 1000.0;
    (macs, params, fm + extra_fm)
}

#[test]
fn compare_half_width_matches_the_hand_derived_ratios() {
    let j = ok_json(&[
        "compare",
        "zoo:resnet50",
        "zoo:resnet50:width=0.5",
        "--analytic-only",
        "--json",
    ]);
    let (m1, p1, f1) = resnet50_by_hand(1.0);
    let (m2, p2, f2) = resnet50_by_hand(0.5);
    // The known total for torchvision's ResNet-50 (conv + fc MACs), as a check of the formula.
    assert_eq!(m1, 4_089_184_256.0);
    let close = |key: &str, hand: f64| {
        let got = j["ratio"][key].as_f64().unwrap_or(f64::NAN);
        assert!(
            (got / hand - 1.0).abs() < 0.02,
            "{key}: engine {got}, by hand {hand}"
        );
    };
    close("macs", m2 / m1);
    close("params", p2 / p1);
    close("param_bytes", p2 / p1);
    close("feature_map_bytes", f2 / f1);
    // Not exactly 1/4 and 1/2: the 3 input channels and the 1000 classes do not scale.
    assert!(m2 / m1 > 0.255 && p2 / p1 > 0.26);
    for side in ["a", "b"] {
        for key in [
            "model",
            "feature_map_bytes",
            "param_bytes",
            "params",
            "macs",
            "activation_peak_bytes",
        ] {
            assert!(!j[side][key].is_null(), "{side}.{key}");
        }
        assert!(j[side]["latency_ms"].is_null());
    }
    assert_eq!(j["a"]["macs"].as_f64(), Some(m1));
    let text = engine(&[
        "compare",
        "zoo:resnet50",
        "zoo:resnet50:width=0.5",
        "--analytic-only",
    ]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("conv1") && text.contains("in 3→3") && text.contains("out 1000→1000"),
        "{text}"
    );
}

#[test]
fn compare_measures_latency_with_the_predicted_ratio_alongside() {
    let j = ok_json(&[
        "compare",
        "zoo:resnet20",
        "zoo:resnet20:width=0.5",
        "--json",
        "-t",
        "1",
        "--iters",
        "3",
        "--warmup",
        "1",
    ]);
    let (a, b) = (
        j["a"]["latency_ms"].as_f64().expect("latency a"),
        j["b"]["latency_ms"].as_f64().expect("latency b"),
    );
    assert!(a > 0.0 && b > 0.0);
    let r = j["ratio"]["latency_ms"].as_f64().expect("ratio");
    assert!((r - b / a).abs() < 1e-9);
}

#[test]
fn zoo_lists_and_writes_onnx_that_reads_back_identically() {
    let out = engine(&["zoo", "list"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for (name, _) in engine::zoo::list() {
        assert!(text.contains(name), "{name} not listed");
    }
    let out = engine(&["zoo", "resnet20"]);
    assert_eq!(out.status.code(), Some(2), "-o is required");

    let dir = temp_dir("zoo");
    let cases: &[(&[&str], &str)] = &[
        (
            &["resnet20", "--width", "0.5", "--seed", "3", "--batch", "2"],
            "zoo:resnet20:width=0.5,seed=3,batch=2",
        ),
        (
            &[
                "resnext50_32x4d",
                "--width",
                "0.25",
                "--input-size",
                "64",
                "--classes",
                "7",
                "--bn",
                "fold",
            ],
            "zoo:resnext50_32x4d:width=0.25,input=64,classes=7,bn=fold",
        ),
        (
            &["inception_cifar", "--width", "0.25"],
            "zoo:inception_cifar:width=0.25",
        ),
        (
            &["inception_v3", "--width", "0.125", "--input-size", "75"],
            "zoo:inception_v3:width=0.125,input=75",
        ),
    ];
    for (i, (args, spec)) in cases.iter().enumerate() {
        let path = dir.join(format!("m{i}.onnx"));
        let p = path.to_string_lossy().to_string();
        let mut full = vec!["zoo"];
        full.extend_from_slice(args);
        full.extend_from_slice(&["-o", &p]);
        let out = engine(&full);
        assert!(
            out.status.success(),
            "{full:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let onnx = onnx_import::load_model(&path).expect("the file decodes");
        assert_eq!(onnx.opset, 17, "{spec}");
        let from_file = engine::Model::load(&path).expect("the importer reads it");
        let in_memory = engine::Model::load(spec).expect("zoo spec");
        let opts = engine::SessionOptions {
            threads: 1,
            batch: Some(2),
            ..Default::default()
        };
        let mut s1 = engine::Session::new(&from_file, &opts).expect("session");
        let mut s2 = engine::Session::new(&in_memory, &opts).expect("session");
        let info = s1.input_infos()[0].clone();
        let shape = info.fixed_shape().expect("bound shape");
        let n: usize = shape.iter().product();
        let x: Vec<f32> = (0..n)
            .map(|k| ((k * 7919 % 1000) as f32 / 500.0) - 1.0)
            .collect();
        let x = engine::Tensor::from_f32(&shape, x).expect("input");
        let y1 = s1
            .run(&[(info.name.as_str(), x.clone())])
            .expect("run file");
        let y2 = s2.run(&[(info.name.as_str(), x)]).expect("run zoo");
        assert_eq!(y1.len(), y2.len());
        for ((n1, t1), (n2, t2)) in y1.iter().zip(&y2) {
            assert_eq!(n1, n2);
            assert_eq!(t1.shape(), t2.shape());
            assert_eq!(t1.to_f64_vec(), t2.to_f64_vec(), "{spec}: outputs differ");
            assert!(t1.to_f64_vec().iter().any(|v| *v != 0.0));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
