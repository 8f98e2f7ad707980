//! A model file is untrusted input: every malformed model here must be refused with an error
//! that names the problem (message text and exit code checked), never a panic, a hang or a huge
//! allocation. The models are built in memory as `tract_onnx::pb` protobufs so that each one
//! is malformed in exactly one way. Also replays the fuzzer's committed crash inputs
//! (`engine/tests/fuzz-regressions/`) through the fuzzed pipeline (`fuzz/src/harness.rs`).

use std::path::{Path, PathBuf};

use engine::{DType, Error, Model, Session, SessionOptions, Tensor};
use prost::Message;
use tract_onnx::pb;

mod harness {
    include!("../../fuzz/src/harness.rs");
}

const FLOAT: i32 = pb::tensor_proto::DataType::Float as i32;
const INT64: i32 = pb::tensor_proto::DataType::Int64 as i32;

// ---------------------------------------------------------------------------------------------
// Builders
// ---------------------------------------------------------------------------------------------

/// A value declaration; negative dims are written as `dim_value` as given (files can hold them).
fn value(name: &str, elem_type: i32, dims: &[i64]) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::{dimension::Value, Dimension};
    pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type,
                shape: Some(pb::TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|&d| Dimension {
                            value: Some(Value::DimValue(d)),
                            ..Default::default()
                        })
                        .collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn f32_value(name: &str, dims: &[i64]) -> pb::ValueInfoProto {
    value(name, FLOAT, dims)
}

/// An f32 initializer in `raw_data` holding `count(dims)` copies of `fill`.
fn f32_init(name: &str, dims: &[i64], fill: f32) -> pb::TensorProto {
    let count: i64 = dims.iter().product();
    let raw: Vec<u8> = (0..count).flat_map(|_| fill.to_le_bytes()).collect();
    pb::TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: FLOAT,
        raw_data: raw,
        ..Default::default()
    }
}

fn i64_init(name: &str, values: &[i64]) -> pb::TensorProto {
    pb::TensorProto {
        name: name.into(),
        dims: vec![values.len() as i64],
        data_type: INT64,
        int64_data: values.to_vec(),
        ..Default::default()
    }
}

fn ints(name: &str, v: &[i64]) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::Ints as i32,
        ints: v.to_vec(),
        ..Default::default()
    }
}

fn int(name: &str, v: i64) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::Int as i32,
        i: v,
        ..Default::default()
    }
}

fn string(name: &str, v: &str) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::String as i32,
        s: v.as_bytes().to_vec(),
        ..Default::default()
    }
}

fn node(name: &str, op: &str, inputs: &[&str], outputs: &[&str]) -> pb::NodeProto {
    pb::NodeProto {
        name: name.into(),
        op_type: op.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn with_attrs(mut n: pb::NodeProto, attrs: Vec<pb::AttributeProto>) -> pb::NodeProto {
    n.attribute = attrs;
    n
}

fn graph(
    nodes: Vec<pb::NodeProto>,
    inits: Vec<pb::TensorProto>,
    inputs: Vec<pb::ValueInfoProto>,
    outputs: Vec<pb::ValueInfoProto>,
) -> pb::GraphProto {
    pb::GraphProto {
        name: "bad".into(),
        node: nodes,
        initializer: inits,
        input: inputs,
        output: outputs,
        ..Default::default()
    }
}

fn model_bytes(g: pb::GraphProto) -> Vec<u8> {
    pb::ModelProto {
        ir_version: 8,
        producer_name: "bad_inputs".into(),
        opset_import: vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: 17,
        }],
        graph: Some(g),
        ..Default::default()
    }
    .encode_to_vec()
}

/// A valid x[1,3,8,8] → Conv(4 filters 3x3, pad 1) → Relu → y[1,4,8,8] model.
fn good_conv_graph() -> pb::GraphProto {
    graph(
        vec![
            with_attrs(
                node("conv", "Conv", &["x", "w", "b"], &["c"]),
                vec![ints("kernel_shape", &[3, 3]), ints("pads", &[1, 1, 1, 1])],
            ),
            node("relu", "Relu", &["c"], &["y"]),
        ],
        vec![f32_init("w", &[4, 3, 3, 3], 0.1), f32_init("b", &[4], 0.0)],
        vec![f32_value("x", &[1, 3, 8, 8])],
        vec![f32_value("y", &[1, 4, 8, 8])],
    )
}

/// Options used for every session here: one thread and a small limit, so a missed check
/// cannot take the machine down.
fn opts() -> SessionOptions {
    SessionOptions {
        threads: 1,
        max_memory: Some(256 << 20),
        ..Default::default()
    }
}

/// Loads `bytes` and prepares a session; the first error of either step.
fn load_and_plan(bytes: &[u8]) -> Result<Session, Error> {
    let model = Model::from_bytes(bytes, "bad.onnx")?;
    Session::new(&model, &opts())
}

/// Asserts that `result` is an error whose message contains every part of `needles`, with
/// the given exit code. Returns the message.
#[track_caller]
fn expect_err<T>(result: Result<T, Error>, needles: &[&str], code: i32) -> String {
    let err = match result {
        Ok(_) => panic!("expected an error containing {needles:?}, got Ok"),
        Err(e) => e,
    };
    let msg = err.to_string();
    for n in needles {
        assert!(msg.contains(n), "error {msg:?} does not contain {n:?}");
    }
    assert_eq!(err.exit_code(), code, "exit code of {msg:?}");
    msg
}

fn bad(g: pb::GraphProto, needles: &[&str]) -> String {
    expect_err(load_and_plan(&model_bytes(g)), needles, 2)
}

// ---------------------------------------------------------------------------------------------
// Bytes that are not a model
// ---------------------------------------------------------------------------------------------

#[test]
fn the_good_model_loads_and_runs() {
    // The baseline the malformed variants start from must itself be fine.
    let mut s = load_and_plan(&model_bytes(good_conv_graph())).unwrap();
    let x = Tensor::from_f32(&[1, 3, 8, 8], vec![1.0; 192]).unwrap();
    let out = s.run(&[("x", x)]).unwrap();
    let y = out[0].1.as_f32().unwrap();
    // Centre pixel: 27 taps of 1.0 * 0.1.
    assert!((y[[0, 0, 4, 4]] - 2.7).abs() < 1e-5, "{}", y[[0, 0, 4, 4]]);
}

#[test]
fn empty_file() {
    expect_err(
        Model::from_bytes(&[], "bad.onnx"),
        &[
            "bad.onnx",
            "the file is empty (expected a serialized ONNX model)",
        ],
        2,
    );
}

#[test]
fn not_onnx_bytes() {
    let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x10";
    expect_err(
        Model::from_bytes(png, "bad.onnx"),
        &["bad.onnx: not a valid ONNX model (protobuf decoding failed"],
        2,
    );
}

#[test]
fn truncated_model() {
    let bytes = model_bytes(good_conv_graph());
    // Every cut inside the weights' raw_data must be refused (short of the declared length).
    for cut in [bytes.len() / 2, bytes.len() - 1, 7] {
        expect_err(
            Model::from_bytes(&bytes[..cut], "bad.onnx"),
            &["not a valid ONNX model", "truncated"],
            2,
        );
    }
}

#[test]
fn model_without_graph() {
    let bytes = pb::ModelProto {
        ir_version: 8,
        ..Default::default()
    }
    .encode_to_vec();
    expect_err(
        Model::from_bytes(&bytes, "bad.onnx"),
        &["bad.onnx: the model has no graph"],
        2,
    );
}

#[test]
fn empty_graph() {
    bad(
        graph(vec![], vec![], vec![], vec![]),
        &["invalid model: the graph has no outputs (nothing to compute)"],
    );
}

// ---------------------------------------------------------------------------------------------
// Ops and attributes
// ---------------------------------------------------------------------------------------------

#[test]
fn unknown_op() {
    let mut g = good_conv_graph();
    g.node[1].op_type = "FrobnicateV2".into();
    bad(
        g,
        &[
            "1 unsupported node(s)",
            "node 'relu' (op FrobnicateV2, domain ai.onnx, opset 17)",
        ],
    );
}

#[test]
fn unknown_domain() {
    let mut g = good_conv_graph();
    g.node[1].domain = "com.example".into();
    bad(
        g,
        &[
            "node 'relu' (op Relu, domain com.example",
            "operators of domain 'com.example' are not supported",
        ],
    );
}

#[test]
fn unsupported_attribute_value() {
    let mut g = good_conv_graph();
    g.node[0].attribute.push(string("auto_pad", "SOMETIMES"));
    bad(g, &["conv", "auto_pad", "SOMETIMES"]);
}

#[test]
fn attribute_of_the_wrong_kind() {
    let mut g = good_conv_graph();
    g.node[0].attribute[0] = int("kernel_shape", 3);
    bad(g, &["node 'conv' (Conv)", "kernel_shape"]);
}

// ---------------------------------------------------------------------------------------------
// Shapes
// ---------------------------------------------------------------------------------------------

#[test]
fn negative_initializer_dims() {
    let mut g = good_conv_graph();
    g.initializer[1].dims = vec![-4];
    bad(g, &["tensor 'b'", "negative dimension -4 in dims [-4]"]);
}

#[test]
fn negative_input_dims() {
    // Some exporters write -1 for "unknown": a negative declared input dim is imported as an
    // unknown one, which cannot be bound without an explicit shape.
    let mut g = good_conv_graph();
    g.input[0] = f32_value("x", &[1, 3, -8, 8]);
    bad(
        g.clone(),
        &[
            "input 'x': dimension 2 is the free symbol 'unk_x_2' ([1, 3, unk_x_2, 8])",
            "give the full shape with --input-shape",
        ],
    );
    // Given the shape explicitly, the model is fine.
    let model = Model::from_bytes(&model_bytes(g), "bad.onnx").unwrap();
    let mut options = opts();
    options.input_shapes.insert("x".into(), vec![1, 3, 8, 8]);
    let s = Session::new(&model, &options).unwrap();
    assert_eq!(s.input_infos()[0].fixed_shape(), Some(vec![1, 3, 8, 8]));
}

#[test]
fn negative_reshape_target() {
    let g = graph(
        vec![node("r", "Reshape", &["x", "s"], &["y"])],
        vec![i64_init("s", &[-2, 6])],
        vec![f32_value("x", &[2, 6])],
        vec![f32_value("y", &[2, 6])],
    );
    bad(g, &["node 'r' (Reshape)", "-2"]);
}

#[test]
fn zero_input_dims_leave_conv_nothing_to_compute() {
    let mut g = good_conv_graph();
    g.input[0] = f32_value("x", &[1, 3, 0, 8]);
    bad(g, &["node 'conv' (Conv)"]);
}

#[test]
fn kernel_larger_than_input_leaves_conv_nothing_to_compute() {
    let mut g = good_conv_graph();
    g.node[0].attribute = vec![ints("kernel_shape", &[3, 3])];
    g.input[0] = f32_value("x", &[1, 3, 2, 2]);
    bad(g, &["node 'conv' (Conv)"]);
}

#[test]
fn pool_window_larger_than_input() {
    let g = graph(
        vec![with_attrs(
            node("pool", "MaxPool", &["x"], &["y"]),
            vec![ints("kernel_shape", &[5, 5])],
        )],
        vec![],
        vec![f32_value("x", &[1, 2, 3, 3])],
        vec![f32_value("y", &[1, 2, 1, 1])],
    );
    bad(g, &["node 'pool' (MaxPool)"]);
}

#[test]
fn zero_stride() {
    let mut g = good_conv_graph();
    g.node[0].attribute.push(ints("strides", &[0, 1]));
    bad(g, &["node 'conv' (Conv)", "strides"]);
}

#[test]
fn conv_weight_channels_differ_from_input_channels_over_group() {
    let mut g = good_conv_graph();
    g.initializer[0] = f32_init("w", &[4, 2, 3, 3], 0.1);
    bad(g, &["node 'conv' (Conv)", "channel"]);
    // With group 3 the weight must have 1 input channel, not 3.
    let mut g = good_conv_graph();
    g.node[0].attribute.push(int("group", 3));
    bad(g, &["node 'conv' (Conv)", "group"]);
}

#[test]
fn conv_weight_of_the_wrong_rank() {
    for dims in [vec![4], vec![4, 3], vec![]] {
        let mut g = good_conv_graph();
        g.initializer[0] = f32_init("w", &dims, 0.1);
        bad(g, &["node 'conv' (Conv)"]);
    }
}

#[test]
fn conv_group_that_does_not_divide_channels() {
    let mut g = good_conv_graph();
    g.node[0].attribute.push(int("group", 2));
    bad(g, &["node 'conv' (Conv)", "group"]);
}

#[test]
fn reshape_to_an_incompatible_size() {
    let g = graph(
        vec![node("r", "Reshape", &["x", "s"], &["y"])],
        vec![i64_init("s", &[5, 3])],
        vec![f32_value("x", &[2, 6])],
        vec![f32_value("y", &[5, 3])],
    );
    bad(g, &["node 'r' (Reshape)", "12"]);
}

// ---------------------------------------------------------------------------------------------
// Graph structure
// ---------------------------------------------------------------------------------------------

#[test]
fn cycle() {
    let g = graph(
        vec![
            node("a", "Add", &["x", "d"], &["c"]),
            node("b", "Relu", &["c"], &["d"]),
        ],
        vec![],
        vec![f32_value("x", &[4])],
        vec![f32_value("d", &[4])],
    );
    bad(
        g,
        &["invalid model: the graph has a cycle through node(s) 'a' (Add), 'b' (Relu)"],
    );
}

#[test]
fn self_loop() {
    let g = graph(
        vec![node("a", "Add", &["x", "c"], &["c"])],
        vec![],
        vec![f32_value("x", &[4])],
        vec![f32_value("c", &[4])],
    );
    bad(g, &["cycle", "'a' (Add)"]);
}

#[test]
fn dangling_tensor_name() {
    let mut g = good_conv_graph();
    g.node[1].input[0] = "nowhere".into();
    bad(
        g,
        &["invalid model: 1 value(s) are read but never defined by a graph input, initializer or node: 'nowhere' (input of node 'relu' (Relu))"],
    );
}

#[test]
fn graph_output_that_nothing_produces() {
    let mut g = good_conv_graph();
    g.output[0].name = "ghost".into();
    bad(
        g,
        &["invalid model: graph output 'ghost' is not produced by any node, input or initializer"],
    );
}

#[test]
fn duplicate_output_names() {
    let mut g = good_conv_graph();
    g.node.push(node("relu2", "Relu", &["c"], &["y"]));
    bad(
        g,
        &["invalid model: value 'y' is produced by two nodes: 'relu' (Relu) and 'relu2' (Relu)"],
    );
}

#[test]
fn duplicate_graph_outputs() {
    let mut g = good_conv_graph();
    g.output.push(f32_value("y", &[1, 4, 8, 8]));
    bad(g, &["invalid model: graph output 'y' is listed twice"]);
}

#[test]
fn node_output_shadowing_an_input() {
    let mut g = good_conv_graph();
    g.node[1].output[0] = "x".into();
    bad(
        g,
        &["invalid model: node 'relu' (Relu) outputs 'x', which is already a graph input"],
    );
}

#[test]
fn initializer_defined_twice() {
    let mut g = good_conv_graph();
    g.initializer.push(f32_init("b", &[4], 1.0));
    bad(g, &["invalid model: initializer 'b' is defined twice"]);
}

// ---------------------------------------------------------------------------------------------
// Initializers and external data
// ---------------------------------------------------------------------------------------------

#[test]
fn initializer_byte_length_does_not_match_its_shape() {
    let mut g = good_conv_graph();
    g.initializer[1].raw_data.truncate(13);
    bad(
        g,
        &["bad.onnx: tensor 'b': raw_data has 13 bytes but dims [4] of FLOAT need 16"],
    );
    let mut g = good_conv_graph();
    g.initializer[1].raw_data.clear();
    g.initializer[1].float_data = vec![1.0; 3];
    bad(
        g,
        &["bad.onnx: tensor 'b': float_data has 3 values but dims [4] need 4"],
    );
}

#[test]
fn initializer_with_absurd_dims_and_no_data() {
    // 10^12 declared elements and no data: refused by the length check, nothing allocated.
    let mut g = good_conv_graph();
    g.initializer[1].dims = vec![1_000_000, 1_000_000];
    g.initializer[1].raw_data = vec![0; 16];
    bad(
        g,
        &[
            "tensor 'b'",
            "raw_data has 16 bytes but dims [1000000, 1000000]",
        ],
    );
}

/// A temporary folder holding `model.onnx` whose bias is stored externally with the given
/// `location`, `offset` and `length`; `data` (if any) is written as `weights.bin`.
fn external_model(
    tag: &str,
    location: &str,
    offset: Option<&str>,
    length: Option<&str>,
    data: Option<&[u8]>,
) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("engine-bad-inputs-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    if let Some(d) = data {
        std::fs::write(dir.join("weights.bin"), d).unwrap();
    }
    let mut g = good_conv_graph();
    let b = &mut g.initializer[1];
    b.raw_data.clear();
    b.data_location = Some(pb::tensor_proto::DataLocation::External as i32);
    let kv = |k: &str, v: &str| pb::StringStringEntryProto {
        key: k.into(),
        value: v.into(),
    };
    b.external_data.push(kv("location", location));
    if let Some(o) = offset {
        b.external_data.push(kv("offset", o));
    }
    if let Some(l) = length {
        b.external_data.push(kv("length", l));
    }
    let path = dir.join("model.onnx");
    std::fs::write(&path, model_bytes(g)).unwrap();
    path
}

fn load_file(path: &Path) -> Result<Session, Error> {
    let model = Model::load(path)?;
    Session::new(&model, &opts())
}

#[test]
fn external_data_that_works() {
    // The baseline: 16 bytes of bias after an 8-byte offset.
    let mut data = vec![0u8; 8];
    for v in [1.0f32, 2.0, 3.0, 4.0] {
        data.extend_from_slice(&v.to_le_bytes());
    }
    let path = external_model("ok", "weights.bin", Some("8"), Some("16"), Some(&data));
    let mut s = load_file(&path).unwrap();
    let out = s
        .run(&[("x", Tensor::zeros(DType::F32, &[1, 3, 8, 8]))])
        .unwrap();
    let y = out[0].1.as_f32().unwrap();
    assert_eq!(y[[0, 2, 0, 0]], 3.0);
    std::fs::remove_dir_all(path.parent().unwrap()).ok();
}

#[test]
fn external_data_missing() {
    let path = external_model("missing", "weights.bin", None, None, None);
    expect_err(
        load_file(&path),
        &["tensor 'b'", "external data file", "weights.bin' not found"],
        2,
    );
    std::fs::remove_dir_all(path.parent().unwrap()).ok();
}

#[test]
fn external_data_out_of_bounds() {
    let data = vec![0u8; 20];
    let path = external_model("oob", "weights.bin", Some("8"), Some("16"), Some(&data));
    expect_err(
        load_file(&path),
        &[
            "tensor 'b'",
            "external data range offset 8 + length 16 is past the end of",
            "(20 bytes)",
        ],
        2,
    );
    let path = external_model("oob2", "weights.bin", Some("4096"), None, Some(&data));
    expect_err(
        load_file(&path),
        &["external data offset 4096 is past the end of"],
        2,
    );
    let path = external_model("badlen", "weights.bin", Some("0"), Some("12"), Some(&data));
    expect_err(
        load_file(&path),
        &["external data length 12 does not match dims [4]"],
        2,
    );
    std::fs::remove_dir_all(path.parent().unwrap()).ok();
}

#[test]
fn external_data_escaping_the_model_folder() {
    let path = external_model("escape", "../../etc/passwd", None, None, None);
    expect_err(
        load_file(&path),
        &["tensor 'b'", "external data location '../../etc/passwd' escapes the model folder ('..' is not allowed)"],
        2,
    );
    let path2 = external_model("absolute", "/etc/passwd", None, None, None);
    expect_err(load_file(&path2), &["'/etc/passwd' is an absolute path"], 2);
    std::fs::remove_dir_all(path.parent().unwrap()).ok();
    std::fs::remove_dir_all(path2.parent().unwrap()).ok();
}

#[test]
fn external_data_in_a_model_read_from_memory() {
    let path = external_model("memory", "weights.bin", None, None, Some(&[0; 16]));
    let bytes = std::fs::read(&path).unwrap();
    expect_err(
        Model::from_bytes(&bytes, "bad.onnx"),
        &["cannot be resolved for a model read from memory"],
        2,
    );
    std::fs::remove_dir_all(path.parent().unwrap()).ok();
}

// ---------------------------------------------------------------------------------------------
// Memory limit
// ---------------------------------------------------------------------------------------------

#[test]
fn absurd_input_shape_is_refused_before_allocating() {
    // 10^12 f32 elements: 4 TB. Refused by the planner's accounting, under the default limit.
    let g = graph(
        vec![node("relu", "Relu", &["x"], &["y"])],
        vec![],
        vec![f32_value("x", &[1_000_000, 1_000_000])],
        vec![f32_value("y", &[1_000_000, 1_000_000])],
    );
    let model = Model::from_bytes(&model_bytes(g), "bad.onnx").unwrap();
    let options = SessionOptions {
        threads: 1,
        ..Default::default()
    };
    let msg = expect_err(
        Session::new(&model, &options),
        &["over the memory limit", "raise it with --max-memory"],
        2,
    );
    let limit = engine::session::default_memory_limit();
    assert!(
        msg.contains(&format!("memory limit of {limit} bytes")),
        "{msg}"
    );
}

#[test]
fn absurd_constant_of_shape_is_refused_before_allocating() {
    // A constant-folded ConstantOfShape of 10^12 elements must not be materialised.
    let g = graph(
        vec![
            node("fill", "ConstantOfShape", &["s"], &["big"]),
            node("add", "Add", &["x", "big"], &["y"]),
        ],
        vec![i64_init("s", &[1_000_000, 1_000_000])],
        vec![f32_value("x", &[1])],
        vec![f32_value("y", &[1_000_000, 1_000_000])],
    );
    bad(g, &["over the memory limit"]);
}

#[test]
fn planned_memory_over_an_explicit_limit() {
    let model = Model::from_bytes(&model_bytes(good_conv_graph()), "bad.onnx").unwrap();
    let options = SessionOptions {
        threads: 1,
        max_memory: Some(1000),
        ..Default::default()
    };
    expect_err(
        Session::new(&model, &options),
        &[
            "value 'c' (output of node 'conv' (Conv)) with shape [1, 4, 8, 8] (256 float32 elements) needs 1024 bytes",
            "over the memory limit of 1000 bytes (raise it with --max-memory)",
        ],
        2,
    );
}

// ---------------------------------------------------------------------------------------------
// NaN and Inf
// ---------------------------------------------------------------------------------------------

#[test]
fn nan_and_inf_inputs_propagate() {
    let g = graph(
        vec![
            with_attrs(
                node("conv", "Conv", &["x", "w", "b"], &["c"]),
                vec![ints("kernel_shape", &[3, 3]), ints("pads", &[1, 1, 1, 1])],
            ),
            with_attrs(
                node("pool", "MaxPool", &["c"], &["p"]),
                vec![ints("kernel_shape", &[2, 2]), ints("strides", &[2, 2])],
            ),
            node("flat", "Flatten", &["p"], &["f"]),
            with_attrs(node("sm", "Softmax", &["f"], &["y"]), vec![int("axis", 1)]),
        ],
        vec![f32_init("w", &[1, 1, 3, 3], 1.0), f32_init("b", &[1], 0.0)],
        vec![f32_value("x", &[1, 1, 8, 8])],
        vec![f32_value("y", &[1, 16])],
    );
    let mut s = load_and_plan(&model_bytes(g)).unwrap();
    let mut x = vec![0.5f32; 64];
    x[0] = f32::NAN; // top-left corner: pooled cell 0 sees it
    x[63] = f32::INFINITY; // bottom-right corner: pooled cell 15 sees it
    let out = s
        .run(&[("x", Tensor::from_f32(&[1, 1, 8, 8], x).unwrap())])
        .unwrap();
    let y = out[0].1.as_f32().unwrap();
    // A NaN or Inf logit makes the whole softmax row NaN (Inf - Inf = NaN): no crash, no
    // silently finite answer.
    assert!(y.iter().all(|v| v.is_nan()), "{y:?}");
}

#[test]
fn nan_propagates_through_relu_and_fused_conv_relu() {
    // Unfused Relu (element-wise kernel) on a graph input.
    let g = graph(
        vec![node("relu", "Relu", &["x"], &["y"])],
        vec![],
        vec![f32_value("x", &[1, 1, 4, 4])],
        vec![f32_value("y", &[1, 1, 4, 4])],
    );
    let mut s = load_and_plan(&model_bytes(g)).unwrap();
    let mut x = vec![-1.0f32; 16];
    x[0] = f32::NAN;
    x[1] = f32::INFINITY;
    x[2] = f32::NEG_INFINITY;
    let out = s
        .run(&[("x", Tensor::from_f32(&[1, 1, 4, 4], x).unwrap())])
        .unwrap();
    let y = out[0].1.as_f32().unwrap();
    assert!(y[[0, 0, 0, 0]].is_nan(), "relu(NaN) must stay NaN: {y:?}");
    assert_eq!(y[[0, 0, 0, 1]], f32::INFINITY);
    assert_eq!(y[[0, 0, 0, 2]], 0.0);
    assert_eq!(y[[0, 0, 0, 3]], 0.0);

    // Conv + Relu, fused by the optimizer into the convolution's epilogue: a 1x1 conv with 16
    // output channels (the packed GEMM path) and a 3x3 one with 16 in/out channels (Winograd).
    for (k, pads) in [(1i64, [0i64; 4]), (3, [1; 4])] {
        let g = graph(
            vec![
                with_attrs(
                    node("conv", "Conv", &["x", "w", "b"], &["c"]),
                    vec![ints("kernel_shape", &[k, k]), ints("pads", &pads)],
                ),
                node("relu", "Relu", &["c"], &["y"]),
            ],
            vec![
                f32_init("w", &[16, 16, k, k], 0.01),
                f32_init("b", &[16], 0.0),
            ],
            vec![f32_value("x", &[1, 16, 8, 8])],
            vec![f32_value("y", &[1, 16, 8, 8])],
        );
        let mut s = load_and_plan(&model_bytes(g)).unwrap();
        assert_eq!(s.exec_graph().nodes.len(), 1, "conv+relu should be fused");
        let mut x = vec![1.0f32; 16 * 64];
        x[0] = f32::NAN; // pixel (0,0) of channel 0
        x[63] = f32::NEG_INFINITY; // pixel (7,7) of channel 0
        let out = s
            .run(&[("x", Tensor::from_f32(&[1, 16, 8, 8], x).unwrap())])
            .unwrap();
        let y = out[0].1.as_f32().unwrap();
        for co in 0..16 {
            assert!(
                y[[0, co, 0, 0]].is_nan(),
                "k={k} channel {co}: {}",
                y[[0, co, 0, 0]]
            );
            // Direct convolution gives relu(-inf) = 0. Winograd's input transform subtracts
            // neighbouring inputs, so an infinity in its tile becomes inf - inf = NaN: also a
            // propagated non-finite value, never a crash or a silent finite number.
            let corner = y[[0, co, 7, 7]];
            if k == 1 {
                assert_eq!(corner, 0.0, "relu(-inf) = 0");
            } else {
                assert!(corner == 0.0 || corner.is_nan(), "k={k}: {corner}");
            }
            assert!(y[[0, co, 4, 4]].is_finite(), "k={k}");
        }
    }
}

#[test]
fn maxpool_with_nan_and_inf_does_not_crash() {
    // MaxPool follows `f32::max` (as the reference op documents): NaN never wins a window that
    // has a number in it; +inf does.
    let g = graph(
        vec![with_attrs(
            node("pool", "MaxPool", &["x"], &["y"]),
            vec![ints("kernel_shape", &[2, 2]), ints("strides", &[2, 2])],
        )],
        vec![],
        vec![f32_value("x", &[1, 1, 4, 4])],
        vec![f32_value("y", &[1, 1, 2, 2])],
    );
    let mut s = load_and_plan(&model_bytes(g)).unwrap();
    let mut x = vec![1.0f32; 16];
    x[0] = f32::NAN;
    x[2] = f32::INFINITY;
    x[15] = f32::NEG_INFINITY;
    let out = s
        .run(&[("x", Tensor::from_f32(&[1, 1, 4, 4], x).unwrap())])
        .unwrap();
    let y = out[0].1.as_f32().unwrap();
    assert_eq!(y[[0, 0, 0, 0]], 1.0);
    assert_eq!(y[[0, 0, 0, 1]], f32::INFINITY);
    assert_eq!(y[[0, 0, 1, 0]], 1.0);
    assert_eq!(y[[0, 0, 1, 1]], 1.0);
}

// ---------------------------------------------------------------------------------------------
// Inputs given at run time
// ---------------------------------------------------------------------------------------------

#[test]
fn run_time_inputs_of_the_wrong_dtype_or_shape() {
    let mut s = load_and_plan(&model_bytes(good_conv_graph())).unwrap();
    expect_err(
        s.run(&[("x", Tensor::zeros(DType::F64, &[1, 3, 8, 8]))]),
        &["input 'x': expected element type"],
        2,
    );
    expect_err(
        s.run(&[("x", Tensor::zeros(DType::F32, &[1, 3, 8, 9]))]),
        &["input 'x': expected shape [1, 3, 8, 8], given [1, 3, 8, 9]"],
        2,
    );
    expect_err(s.run(&[]), &["input 'x': missing"], 2);
}

// ---------------------------------------------------------------------------------------------
// Fuzzer regressions
// ---------------------------------------------------------------------------------------------

/// Every input the fuzzer ever crashed on, replayed through the same pipeline it fuzzes.
#[test]
fn fuzz_regressions_do_not_crash() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("fuzz-regressions");
    let mut count = 0;
    if let Ok(entries) = std::fs::read_dir(&dir) {
        let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        for p in paths
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
        {
            let bytes = std::fs::read(p).unwrap();
            harness::check(&bytes);
            count += 1;
        }
    }
    eprintln!(
        "replayed {count} fuzz regression input(s) from {}",
        dir.display()
    );
}

/// The fuzzed pipeline runs small valid models end to end (the fuzzer is not only exercising
/// the decoder's refusals).
#[test]
fn fuzz_harness_runs_a_small_model() {
    assert!(harness::check(&model_bytes(good_conv_graph())));
    assert!(!harness::check(b"not a model"));
}
