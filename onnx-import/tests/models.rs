//! Model decoding: errors, Constant nodes, inputs that are initializers, names, opset
//! rewrites, and write → read round trips.

mod common;

use std::collections::BTreeMap;

use common::*;
use onnx_import::*;
use prost::Message;
use tract_onnx::pb::{self, tensor_proto::DataType};

fn err_text(r: Result<impl std::fmt::Debug, Error>) -> String {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e.to_string(),
    }
}

fn init<'a>(m: &'a OnnxModel, name: &str) -> &'a TensorData {
    m.graph
        .initializers
        .iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("no initializer {name}"))
}

fn the_node(m: &OnnxModel) -> &OnnxNode {
    assert_eq!(m.graph.nodes.len(), 1);
    &m.graph.nodes[0]
}

// ---- file-level errors --------------------------------------------------------------------

#[test]
fn empty_garbage_truncated_and_graphless_files() {
    let e = err_text(decode_model(&[], None, "a.onnx"));
    assert!(e.starts_with("a.onnx:") && e.contains("empty"), "{e}");
    let e = err_text(decode_model(b"\xff\xff\xff\xff not onnx", None, "b.onnx"));
    assert!(
        e.starts_with("b.onnx:") && e.contains("not a valid ONNX model"),
        "{e}"
    );
    let bytes = one_node(13, "Relu", &["x"], vec![]).encode_to_vec();
    let e = err_text(decode_model(&bytes[..bytes.len() - 3], None, "c.onnx"));
    assert!(e.starts_with("c.onnx:") && e.contains("truncated"), "{e}");
    let m = pb::ModelProto {
        ir_version: 7,
        ..Default::default()
    };
    let e = err_text(decode_model(&m.encode_to_vec(), None, "d.onnx"));
    assert_eq!(e, "d.onnx: the model has no graph");
    let e = err_text(load_model(std::path::Path::new("/nonexistent/e.onnx")));
    assert!(e.starts_with("/nonexistent/e.onnx:"), "{e}");
}

#[test]
fn opset_default_domain_and_metadata() {
    let mut m = one_node(9, "Relu", &["x"], vec![]);
    m.opset_import = vec![
        pb::OperatorSetIdProto {
            domain: "com.microsoft".into(),
            version: 1,
        },
        pb::OperatorSetIdProto {
            domain: "ai.onnx".into(),
            version: 15,
        },
    ];
    let d = decode(&m).unwrap();
    assert_eq!(
        (
            d.opset,
            d.ir_version,
            d.producer_name.as_str(),
            d.path.clone()
        ),
        (15, 7, "test", None)
    );
    assert_eq!(
        d.graph.inputs[0].shape,
        Some(vec![
            DimDecl::Fixed(1),
            DimDecl::Fixed(3),
            DimDecl::Fixed(4),
            DimDecl::Fixed(4)
        ])
    );
    assert_eq!(d.graph.inputs[0].elem_type, Some(ElemType::Float));
    assert_eq!(d.graph.outputs[0].shape, Some(vec![]));
    m.opset_import.clear();
    assert_eq!(decode(&m).unwrap().opset, 1);
}

// ---- graph structure ----------------------------------------------------------------------

#[test]
fn nameless_nodes_and_initializer_inputs() {
    let m = model(
        13,
        vec![
            node("", "Add", &["x", "b"], &["t"], vec![]),
            node("", "Relu", &["t"], &["y"], vec![]),
        ],
        vec![f32_tensor("b", &[1], &[1.0])],
        vec![value("x", &[-1, 2]), value("b", &[1])],
        vec![value("y", &[-1, 2])],
    );
    let d = decode(&m).unwrap();
    let names: Vec<&str> = d.graph.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["Add_0", "Relu_1"]);
    assert_eq!(d.graph.inputs.len(), 1);
    assert_eq!(d.graph.inputs[0].name, "x");
    assert_eq!(
        d.graph.inputs[0].shape,
        Some(vec![DimDecl::Symbolic("N".into()), DimDecl::Fixed(2)])
    );
}

#[test]
fn constant_nodes_become_initializers() {
    let m = model(
        13,
        vec![
            node(
                "c0",
                "Constant",
                &[],
                &["t"],
                vec![attr_t("value", i64_tensor("ignored", &[2], &[3, 4]))],
            ),
            node(
                "c1",
                "Constant",
                &[],
                &["f"],
                vec![attr_f("value_float", 2.5)],
            ),
            node(
                "c2",
                "Constant",
                &[],
                &["fs"],
                vec![attr_floats("value_floats", &[1.0, 2.0])],
            ),
            node("c3", "Constant", &[], &["i"], vec![attr_i("value_int", -7)]),
            node(
                "c4",
                "Constant",
                &[],
                &["is"],
                vec![attr_ints("value_ints", &[5, 6, 7])],
            ),
            node("r", "Reshape", &["x", "t"], &["y"], vec![]),
        ],
        vec![],
        vec![value("x", &[12])],
        vec![value("y", &[3, 4])],
    );
    let d = decode(&m).unwrap();
    assert_eq!(the_node(&d).op_type, "Reshape");
    let got: Vec<(&str, Vec<usize>, &TensorValues)> = d
        .graph
        .initializers
        .iter()
        .map(|t| (t.name.as_str(), t.dims.clone(), &t.values))
        .collect();
    assert_eq!(
        got,
        vec![
            ("t", vec![2], &TensorValues::I64(vec![3, 4])),
            ("f", vec![], &TensorValues::F32(vec![2.5])),
            ("fs", vec![2], &TensorValues::F32(vec![1.0, 2.0])),
            ("i", vec![], &TensorValues::I64(vec![-7])),
            ("is", vec![3], &TensorValues::I64(vec![5, 6, 7])),
        ]
    );
}

#[test]
fn constant_errors_name_the_node() {
    let bad = |attrs| {
        model(
            13,
            vec![node("cst", "Constant", &[], &["t"], attrs)],
            vec![],
            vec![],
            vec![],
        )
    };
    let e = err_text(decode(&bad(vec![attr_s("value_string", "hi")])));
    assert!(
        e.contains(LABEL)
            && e.contains("'cst'")
            && e.contains("(Constant)")
            && e.contains("unsupported")
            && e.contains("value_string"),
        "{e}"
    );
    let sparse = pb::AttributeProto {
        name: "sparse_value".into(),
        r#type: pb::attribute_proto::AttributeType::SparseTensor as i32,
        sparse_tensor: Some(pb::SparseTensorProto::default()),
        ..Default::default()
    };
    let e = err_text(decode(&bad(vec![sparse])));
    assert!(e.contains("'cst'") && e.contains("sparse"), "{e}");
    let e = err_text(decode(&bad(vec![])));
    assert!(
        e.contains("'cst'") && e.contains("expected exactly one"),
        "{e}"
    );
    let e = err_text(decode(&bad(vec![attr_t(
        "value",
        raw_tensor("v", DataType::Float, &[2], vec![0; 4]),
    )])));
    assert!(
        e.contains(LABEL)
            && e.contains("'cst'")
            && e.contains("attribute 'value'")
            && e.contains("4 bytes"),
        "{e}"
    );
}

#[test]
fn attributes_decode_by_type_and_legacy_untyped() {
    let untyped_ints = pb::AttributeProto {
        name: "pads".into(),
        ints: vec![1, 1],
        ..Default::default()
    };
    let m = one_node(
        13,
        "Conv",
        &["x", "w"],
        vec![
            attr_s("auto_pad", "NOTSET"),
            attr_ints("strides", &[2, 2]),
            untyped_ints,
            attr_f("alpha", 0.5),
        ],
    );
    let d = decode(&m).unwrap();
    let a = &the_node(&d).attributes;
    assert_eq!(a.get("auto_pad"), Some(&Attribute::String("NOTSET".into())));
    assert_eq!(a.get("strides"), Some(&Attribute::Ints(vec![2, 2])));
    assert_eq!(a.get("pads"), Some(&Attribute::Ints(vec![1, 1])));
    assert_eq!(a.get("alpha"), Some(&Attribute::Float(0.5)));
    let g = pb::AttributeProto {
        name: "body".into(),
        r#type: pb::attribute_proto::AttributeType::Graph as i32,
        g: Some(pb::GraphProto::default()),
        ..Default::default()
    };
    let d = decode(&one_node(13, "Loop", &["x"], vec![g])).unwrap();
    assert_eq!(
        the_node(&d).attributes.get("body"),
        Some(&Attribute::Unsupported("GRAPH".into()))
    );
}

// ---- opset rewrites -----------------------------------------------------------------------

#[test]
fn clip_before_11() {
    let d = decode(&one_node(
        6,
        "Clip",
        &["x"],
        vec![attr_f("min", 0.0), attr_f("max", 6.0)],
    ))
    .unwrap();
    let n = the_node(&d);
    assert_eq!(n.inputs, ["x", "n::min", "n::max"]);
    assert!(n.attributes.is_empty());
    assert_eq!(init(&d, "n::min").values, TensorValues::F32(vec![0.0]));
    assert_eq!(init(&d, "n::max").values, TensorValues::F32(vec![6.0]));
    assert!(init(&d, "n::max").dims.is_empty());
    // Omitted min stays an empty input; omitted trailing max is trimmed.
    let d = decode(&one_node(6, "Clip", &["x"], vec![attr_f("max", 6.0)])).unwrap();
    assert_eq!(the_node(&d).inputs, ["x", "", "n::max"]);
    let d = decode(&one_node(6, "Clip", &["x"], vec![attr_f("min", -1.0)])).unwrap();
    assert_eq!(the_node(&d).inputs, ["x", "n::min"]);
    // From opset 11 inputs are already inputs.
    let d = decode(&one_node(11, "Clip", &["x", "lo"], vec![])).unwrap();
    assert_eq!(the_node(&d).inputs, ["x", "lo"]);
    assert!(d.graph.initializers.is_empty());
}

#[test]
fn squeeze_unsqueeze_before_13() {
    for op in ["Squeeze", "Unsqueeze"] {
        let d = decode(&one_node(11, op, &["x"], vec![attr_ints("axes", &[0, -1])])).unwrap();
        assert_eq!(the_node(&d).inputs, ["x", "n::axes"], "{op}");
        assert!(the_node(&d).attributes.is_empty());
        assert_eq!(init(&d, "n::axes").values, TensorValues::I64(vec![0, -1]));
        assert_eq!(init(&d, "n::axes").dims, vec![2]);
        let d = decode(&one_node(13, op, &["x", "ax"], vec![])).unwrap();
        assert_eq!(the_node(&d).inputs, ["x", "ax"]);
    }
    let d = decode(&one_node(11, "Squeeze", &["x"], vec![])).unwrap();
    assert_eq!(the_node(&d).inputs, ["x"]);
}

#[test]
fn pad_before_11() {
    let pads = [0, 0, 1, 1, 0, 0, 1, 1];
    let m = one_node(
        2,
        "Pad",
        &["x"],
        vec![
            attr_ints("pads", &pads),
            attr_f("value", 0.5),
            attr_s("mode", "constant"),
        ],
    );
    let d = decode(&m).unwrap();
    let n = the_node(&d);
    assert_eq!(n.inputs, ["x", "n::pads", "n::value"]);
    assert_eq!(n.attributes.keys().collect::<Vec<_>>(), ["mode"]);
    assert_eq!(init(&d, "n::pads").values, TensorValues::I64(pads.to_vec()));
    assert_eq!(init(&d, "n::value").values, TensorValues::F32(vec![0.5]));
    // Pad-1 called them `paddings`; no value means the default 0.
    let d = decode(&one_node(
        1,
        "Pad",
        &["x"],
        vec![attr_ints("paddings", &pads)],
    ))
    .unwrap();
    assert_eq!(the_node(&d).inputs, ["x", "n::pads"]);
    let e = err_text(decode(&one_node(2, "Pad", &["x"], vec![])));
    assert!(
        e.contains(LABEL) && e.contains("'n' (Pad)") && e.contains("'pads'"),
        "{e}"
    );
}

#[test]
fn slice_before_10() {
    let m = one_node(
        9,
        "Slice",
        &["x"],
        vec![
            attr_ints("starts", &[1]),
            attr_ints("ends", &[3]),
            attr_ints("axes", &[2]),
        ],
    );
    let d = decode(&m).unwrap();
    assert_eq!(
        the_node(&d).inputs,
        ["x", "n::starts", "n::ends", "n::axes"]
    );
    assert_eq!(init(&d, "n::ends").values, TensorValues::I64(vec![3]));
    assert_eq!(init(&d, "n::axes").values, TensorValues::I64(vec![2]));
    let d = decode(&one_node(
        9,
        "Slice",
        &["x"],
        vec![attr_ints("starts", &[1]), attr_ints("ends", &[3])],
    ))
    .unwrap();
    assert_eq!(the_node(&d).inputs, ["x", "n::starts", "n::ends"]);
    let e = err_text(decode(&one_node(
        9,
        "Slice",
        &["x"],
        vec![attr_ints("starts", &[1])],
    )));
    assert!(e.contains("'n' (Slice)") && e.contains("'ends'"), "{e}");
}

#[test]
fn reshape_before_5() {
    let m = one_node(
        4,
        "Reshape",
        &["x"],
        vec![
            attr_ints("shape", &[1, -1]),
            attr_ints("consumed_inputs", &[0]),
        ],
    );
    let d = decode(&m).unwrap();
    assert_eq!(the_node(&d).inputs, ["x", "n::shape"]);
    assert!(the_node(&d).attributes.is_empty());
    assert_eq!(init(&d, "n::shape").values, TensorValues::I64(vec![1, -1]));
}

#[test]
fn reduce_mean_before_18() {
    let d = decode(&one_node(
        17,
        "ReduceMean",
        &["x"],
        vec![attr_ints("axes", &[2, 3]), attr_i("keepdims", 1)],
    ))
    .unwrap();
    let n = the_node(&d);
    assert_eq!(n.inputs, ["x", "n::axes"]);
    assert_eq!(
        n.attributes,
        BTreeMap::from([("keepdims".to_string(), Attribute::Int(1))])
    );
    let d = decode(&one_node(
        18,
        "ReduceMean",
        &["x"],
        vec![attr_ints("axes", &[2])],
    ))
    .unwrap();
    assert_eq!(the_node(&d).inputs, ["x"], "opset 18 is left alone");
}

#[test]
fn dropout_before_12() {
    let d = decode(&one_node(
        10,
        "Dropout",
        &["x"],
        vec![attr_f("ratio", 0.25)],
    ))
    .unwrap();
    assert_eq!(the_node(&d).inputs, ["x", "n::ratio"]);
    assert_eq!(init(&d, "n::ratio").values, TensorValues::F32(vec![0.25]));
    let d = decode(&one_node(6, "Dropout", &["x"], vec![attr_i("is_test", 1)])).unwrap();
    assert_eq!(the_node(&d).inputs, ["x"]);
    assert!(the_node(&d).attributes.is_empty());
}

#[test]
fn legacy_attributes_are_dropped() {
    let m = one_node(
        6,
        "BatchNormalization",
        &["x", "s", "b", "m", "v"],
        vec![
            attr_i("spatial", 1),
            attr_i("is_test", 1),
            attr_ints("consumed_inputs", &[0]),
            attr_f("epsilon", 1e-3),
        ],
    );
    let d = decode(&m).unwrap();
    assert_eq!(
        the_node(&d).attributes.keys().collect::<Vec<_>>(),
        ["epsilon"]
    );
    let d = decode(&one_node(
        6,
        "Gemm",
        &["x", "w", "c"],
        vec![attr_i("broadcast", 1), attr_i("transB", 1)],
    ))
    .unwrap();
    assert_eq!(
        the_node(&d).attributes.keys().collect::<Vec<_>>(),
        ["transB"]
    );
    // Numpy-compatible legacy broadcast (no axis, or axis at the suffix) just loses the attrs.
    let d = decode(&one_node(
        6,
        "Mul",
        &["x", "y0"],
        vec![attr_i("broadcast", 1)],
    ))
    .unwrap();
    assert!(the_node(&d).attributes.is_empty());
    let m = model(
        6,
        vec![node(
            "n",
            "Sub",
            &["x", "b"],
            &["y"],
            vec![attr_i("broadcast", 1), attr_i("axis", 2)],
        )],
        vec![],
        vec![value("x", &[1, 3, 4, 4]), value("b", &[4, 4])],
        vec![value("y", &[1, 3, 4, 4])],
    );
    let d = decode(&m).unwrap();
    assert_eq!(the_node(&d).inputs, ["x", "b"]);
    assert!(the_node(&d).attributes.is_empty());
}

#[test]
fn legacy_axis_broadcast_reshapes_initializer_or_refuses() {
    // Classic per-channel bias: B [3] at axis 1 of a rank-4 A → B reshaped to [3, 1, 1].
    let m = model(
        6,
        vec![node(
            "add",
            "Add",
            &["x", "bias"],
            &["y"],
            vec![attr_i("broadcast", 1), attr_i("axis", 1)],
        )],
        vec![f32_tensor("bias", &[3], &[1.0, 2.0, 3.0])],
        vec![value("x", &[1, 3, 4, 4])],
        vec![value("y", &[1, 3, 4, 4])],
    );
    let d = decode(&m).unwrap();
    assert_eq!(the_node(&d).inputs, ["x", "add::B"]);
    assert!(the_node(&d).attributes.is_empty());
    assert_eq!(init(&d, "add::B").dims, vec![3, 1, 1]);
    assert_eq!(
        init(&d, "add::B").values,
        TensorValues::F32(vec![1.0, 2.0, 3.0])
    );
    assert_eq!(init(&d, "bias").dims, vec![3], "the original is untouched");

    // B is not an initializer: cannot be expressed with numpy broadcasting.
    let m = model(
        6,
        vec![node(
            "div",
            "Div",
            &["x", "b"],
            &["y"],
            vec![attr_i("broadcast", 1), attr_i("axis", 1)],
        )],
        vec![],
        vec![value("x", &[1, 3, 4, 4]), value("b", &[3])],
        vec![value("y", &[1, 3, 4, 4])],
    );
    let e = err_text(decode(&m));
    assert!(
        e.contains(LABEL)
            && e.contains("'div' (Div)")
            && e.contains("unsupported")
            && e.contains("axis=1"),
        "{e}"
    );
    // Unknown ranks: refused rather than guessed.
    let e = err_text(decode(&one_node(
        6,
        "Add",
        &["x", "q"],
        vec![attr_i("broadcast", 1), attr_i("axis", 1)],
    )));
    assert!(
        e.contains("'n' (Add)") && e.contains("unsupported") && e.contains("ranks"),
        "{e}"
    );
}

#[test]
fn softmax_axis_default_is_made_explicit() {
    let d = decode(&one_node(11, "Softmax", &["x"], vec![])).unwrap();
    assert_eq!(
        the_node(&d).attributes.get("axis"),
        Some(&Attribute::Int(1))
    );
    let d = decode(&one_node(13, "Softmax", &["x"], vec![])).unwrap();
    assert_eq!(
        the_node(&d).attributes.get("axis"),
        Some(&Attribute::Int(-1))
    );
    let d = decode(&one_node(11, "Softmax", &["x"], vec![attr_i("axis", 3)])).unwrap();
    assert_eq!(
        the_node(&d).attributes.get("axis"),
        Some(&Attribute::Int(3))
    );
}

#[test]
fn custom_domain_nodes_are_not_rewritten() {
    let mut m = one_node(6, "Clip", &["x"], vec![attr_f("min", 0.0)]);
    if let Some(g) = m.graph.as_mut() {
        g.node[0].domain = "com.example".into();
    }
    let d = decode(&m).unwrap();
    assert_eq!(the_node(&d).inputs, ["x"]);
    assert_eq!(the_node(&d).domain, "com.example");
}

// ---- writer -------------------------------------------------------------------------------

fn sample_model(opset: i64) -> OnnxModel {
    let f = |name: &str, dims: Vec<usize>, v: Vec<f32>| TensorData {
        name: name.into(),
        dims,
        values: TensorValues::F32(v),
    };
    OnnxModel {
        path: None,
        ir_version: 8,
        producer_name: "zoo".into(),
        opset,
        graph: OnnxGraph {
            name: "net".into(),
            inputs: vec![ValueDecl {
                name: "x".into(),
                elem_type: Some(ElemType::Float),
                shape: Some(vec![
                    DimDecl::Symbolic("batch".into()),
                    DimDecl::Fixed(2),
                    DimDecl::Fixed(3),
                    DimDecl::Unknown,
                ]),
            }],
            outputs: vec![ValueDecl {
                name: "y".into(),
                elem_type: Some(ElemType::Float),
                shape: Some(vec![DimDecl::Symbolic("batch".into()), DimDecl::Fixed(2)]),
            }],
            value_info: vec![ValueDecl {
                name: "c".into(),
                elem_type: Some(ElemType::Float),
                shape: None,
            }],
            initializers: vec![
                f("w", vec![2, 2, 1, 1], vec![1.0, 2.0, 3.0, 4.0]),
                TensorData {
                    name: "idx".into(),
                    dims: vec![2],
                    values: TensorValues::I64(vec![0, 1]),
                },
                TensorData {
                    name: "mask".into(),
                    dims: vec![1],
                    values: TensorValues::Bool(vec![true]),
                },
                TensorData {
                    name: "m::axes".into(),
                    dims: vec![2],
                    values: TensorValues::I64(vec![2, 3]),
                },
            ],
            nodes: vec![
                OnnxNode {
                    name: "conv".into(),
                    op_type: "Conv".into(),
                    domain: String::new(),
                    inputs: vec!["x".into(), "w".into()],
                    outputs: vec!["c".into()],
                    attributes: BTreeMap::from([
                        ("strides".to_string(), Attribute::Ints(vec![1, 1])),
                        ("auto_pad".to_string(), Attribute::String("NOTSET".into())),
                    ]),
                },
                OnnxNode {
                    name: "m".into(),
                    op_type: "ReduceMean".into(),
                    domain: String::new(),
                    inputs: vec!["c".into(), "m::axes".into()],
                    outputs: vec!["y".into()],
                    attributes: BTreeMap::from([("keepdims".to_string(), Attribute::Int(0))]),
                },
            ],
        },
    }
}

#[test]
fn write_read_round_trip() {
    for opset in [17, 18] {
        let m = sample_model(opset);
        let back = decode_model(&encode_model(&m), None, "rt").unwrap();
        assert_eq!(back, m, "opset {opset}");
    }
    // Through a file, with the path recorded.
    let dir = temp_dir("write");
    let path = dir.join("m.onnx");
    write_model(&sample_model(17), &path).unwrap();
    let back = load_model(&path).unwrap();
    assert_eq!(back.path.as_deref(), Some(path.as_path()));
    assert_eq!(OnnxModel { path: None, ..back }, sample_model(17));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn written_structure_is_what_onnx_runtime_expects() {
    let p = pb::ModelProto::decode(encode_model(&sample_model(17)).as_slice()).unwrap();
    assert_eq!(p.ir_version, 8);
    assert_eq!(
        p.opset_import,
        vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: 17
        }]
    );
    let g = p.graph.unwrap();
    // ReduceMean at opset 17 takes axes as an attribute; its constant is gone.
    let rm = &g.node[1];
    assert_eq!(rm.input, ["c"]);
    let axes = rm.attribute.iter().find(|a| a.name == "axes").unwrap();
    assert_eq!(
        (axes.r#type, axes.ints.clone()),
        (pb::attribute_proto::AttributeType::Ints as i32, vec![2, 3])
    );
    assert!(g.initializer.iter().all(|t| t.name != "m::axes"));
    for a in g.node.iter().flat_map(|n| &n.attribute) {
        assert_ne!(a.r#type, 0, "attribute {} has no type", a.name);
    }
    let input_names: Vec<&str> = g.input.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(input_names, ["x"]);
    for t in &g.initializer {
        assert!(
            !t.raw_data.is_empty() && t.float_data.is_empty() && t.int64_data.is_empty(),
            "{}",
            t.name
        );
    }
    let dims = match g.input[0].r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(pb::type_proto::Value::TensorType(t)) => t.shape.clone().unwrap().dim,
        None => panic!("input has no type"),
    };
    use pb::tensor_shape_proto::dimension::Value;
    assert_eq!(dims[0].value, Some(Value::DimParam("batch".into())));
    assert_eq!(dims[1].value, Some(Value::DimValue(2)));
    assert_eq!(dims[3].value, None);
}

#[test]
fn old_opset_file_round_trips_through_the_newest_form() {
    let m = model(
        9,
        vec![
            node("clip", "Clip", &["x"], &["c"], vec![attr_f("max", 6.0)]),
            node(
                "sq",
                "Unsqueeze",
                &["c"],
                &["u"],
                vec![attr_ints("axes", &[0])],
            ),
            node(
                "sl",
                "Slice",
                &["u"],
                &["y"],
                vec![attr_ints("starts", &[0]), attr_ints("ends", &[1])],
            ),
        ],
        vec![],
        vec![value("x", &[2, 2])],
        vec![value("y", &[1, 2, 2])],
    );
    let first = decode(&m).unwrap();
    let written = encode_model(&first);
    let p = pb::ModelProto::decode(written.as_slice()).unwrap();
    let g = p.graph.as_ref().unwrap();
    assert!(
        g.initializer.is_empty(),
        "constants went back into attributes"
    );
    assert!(g.node.iter().all(|n| n.input.len() == 1));
    let again = decode_model(&written, None, LABEL).unwrap();
    assert_eq!(
        OnnxModel {
            ir_version: 7,
            producer_name: "test".into(),
            ..again
        },
        first
    );
}

#[test]
fn write_refuses_unsupported_attributes() {
    let mut m = sample_model(17);
    m.graph.nodes[0]
        .attributes
        .insert("body".into(), Attribute::Unsupported("GRAPH".into()));
    let dir = temp_dir("write_unsupported");
    let path = dir.join("m.onnx");
    let e = err_text(write_model(&m, &path));
    assert!(
        e.contains("m.onnx") && e.contains("'conv' (Conv)") && e.contains("GRAPH"),
        "{e}"
    );
    assert!(!path.exists());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Writes sample models for `scripts/check_with_ort.py` (ONNX checker + ONNX Runtime), which
/// cargo test cannot run: `ONNX_IMPORT_DUMP_DIR=/tmp/x cargo test --release -p onnx-import
/// --test models -- --ignored dump`.
#[test]
#[ignore = "dev helper: writes files for the Python ONNX Runtime check"]
fn dump_samples_for_onnx_runtime() {
    let dir = std::path::PathBuf::from(
        std::env::var("ONNX_IMPORT_DUMP_DIR").expect("set ONNX_IMPORT_DUMP_DIR"),
    );
    std::fs::create_dir_all(&dir).unwrap();
    write_model(&sample_model(17), &dir.join("sample_opset17.onnx")).unwrap();
    write_model(&sample_model(18), &dir.join("sample_opset18.onnx")).unwrap();
    let old = model(
        9,
        vec![
            node("clip", "Clip", &["x"], &["c"], vec![attr_f("max", 6.0)]),
            node(
                "sq",
                "Unsqueeze",
                &["c"],
                &["u"],
                vec![attr_ints("axes", &[0])],
            ),
            node(
                "sl",
                "Slice",
                &["u"],
                &["s"],
                vec![attr_ints("starts", &[0]), attr_ints("ends", &[1])],
            ),
            node("", "Softmax", &["s"], &["y"], vec![]),
        ],
        vec![],
        vec![value("x", &[2, 2])],
        vec![value("y", &[1, 2, 2])],
    );
    write_model(&decode(&old).unwrap(), &dir.join("old_opset9.onnx")).unwrap();
}

/// Prints what the importer makes of a model written by another tool:
/// `ONNX_IMPORT_LOAD=/path/m.onnx cargo test --release -p onnx-import --test models -- --ignored print_loaded --nocapture`.
#[test]
#[ignore = "dev helper: inspects a model file produced outside the tests"]
fn print_loaded_model() {
    let path =
        std::path::PathBuf::from(std::env::var("ONNX_IMPORT_LOAD").expect("set ONNX_IMPORT_LOAD"));
    println!("{:#?}", load_model(&path));
}
