//! `SessionOptions::constant_inputs`: inputs whose values are fixed when the session is created
//! (a Reshape's target shape fed as a graph input, as the ONNX node tests do).

use engine::ir::{Dim, Graph, Node, Op};
use engine::session::{Model, Session, SessionOptions};
use engine::{DType, Error, Tensor};

/// `y = Relu(Reshape(x, shape))` with `x: f32 [2, 6]` and `shape: i64 [2]` both graph inputs.
fn reshape_model() -> Model {
    let mut g = Graph {
        name: "reshape".into(),
        ..Graph::default()
    };
    let x = g.add_value(
        "x",
        Some(DType::F32),
        Some(vec![Dim::Fixed(2), Dim::Fixed(6)]),
    );
    let shape = g.add_value("shape", Some(DType::I64), Some(vec![Dim::Fixed(2)]));
    let r = g.add_value("r", None, None);
    let y = g.add_value("y", None, None);
    g.inputs = vec![x, shape];
    g.outputs = vec![y];
    g.nodes.push(Node {
        name: "reshape".into(),
        op: Op::Reshape { allowzero: false },
        inputs: vec![Some(x), Some(shape)],
        outputs: vec![r],
        origin: Vec::new(),
    });
    g.nodes.push(Node {
        name: "relu".into(),
        op: Op::Relu,
        inputs: vec![Some(r)],
        outputs: vec![y],
        origin: Vec::new(),
    });
    Model::from_graph(g, "reshape test graph")
}

fn shape_tensor(v: &[i64]) -> Tensor {
    Tensor::from_i64(&[v.len()], v.to_vec()).unwrap_or_else(|| unreachable!())
}

fn x_tensor() -> Tensor {
    let data: Vec<f32> = (0..12).map(|i| i as f32 - 5.5).collect();
    Tensor::from_f32(&[2, 6], data).unwrap_or_else(|| unreachable!())
}

fn options(shape: &[i64]) -> SessionOptions {
    let mut o = SessionOptions {
        threads: 1,
        ..SessionOptions::default()
    };
    o.constant_inputs
        .insert("shape".into(), shape_tensor(shape));
    o
}

#[test]
fn bound_shape_input_is_folded_and_not_required() {
    let model = reshape_model();
    // Without the value the engine cannot know the output shape.
    assert!(Session::new(&model, &SessionOptions::default()).is_err());

    let mut s = Session::new(&model, &options(&[3, -1])).expect("session");
    let names: Vec<&str> = s.input_infos().iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["x"], "a bound input is no longer an input");
    let out = s
        .run(&[("x", x_tensor())])
        .expect("run without the bound input");
    let y = &out[0].1;
    assert_eq!(y.shape(), &[3, 4]);
    let want: Vec<f64> = (0..12).map(|i| (i as f64 - 5.5).max(0.0)).collect();
    assert_eq!(y.to_f64_vec(), want);

    // Re-supplying the same value is accepted; a different one is refused by name.
    let again = s
        .run(&[("x", x_tensor()), ("shape", shape_tensor(&[3, -1]))])
        .expect("same bound value");
    assert_eq!(again[0].1, *y);
    match s.run(&[("x", x_tensor()), ("shape", shape_tensor(&[4, 3]))]) {
        Err(Error::Input { name, message }) => {
            assert_eq!(name, "shape");
            assert!(
                message.contains("fixed when the session was created"),
                "{message}"
            );
        }
        other => panic!("expected Error::Input, got {other:?}"),
    }

    // Another bound value gives another shape.
    let mut s = Session::new(&model, &options(&[6, 2])).expect("session");
    let out = s.run(&[("x", x_tensor())]).expect("run");
    assert_eq!(out[0].1.shape(), &[6, 2]);
}

#[test]
fn bound_value_is_checked_against_the_declaration() {
    let model = reshape_model();
    let mut o = SessionOptions::default();
    o.constant_inputs.insert(
        "shape".into(),
        Tensor::from_f32(&[2], vec![3.0, 4.0]).unwrap_or_else(|| unreachable!()),
    );
    match Session::new(&model, &o) {
        Err(Error::Input { name, .. }) => assert_eq!(name, "shape"),
        other => panic!("expected a dtype error, got {:?}", other.err()),
    }
    // A value the Reshape cannot take (12 elements into rows of 5) fails at creation, at the node.
    match Session::new(&model, &options(&[5, -1])) {
        Err(Error::Node { node, .. }) => assert_eq!(node, "reshape"),
        other => panic!("expected Error::Node, got {:?}", other.err()),
    }
    // A value of another length than the declared [2] is like an explicit shape: it wins, and
    // the Reshape follows it.
    let mut s = Session::new(&model, &options(&[1, 3, 4])).expect("session");
    let out = s.run(&[("x", x_tensor())]).expect("run");
    assert_eq!(out[0].1.shape(), &[1, 3, 4]);
    // Unknown name.
    let mut o = SessionOptions::default();
    o.constant_inputs
        .insert("nope".into(), shape_tensor(&[3, 4]));
    match Session::new(&model, &o) {
        Err(Error::Input { name, .. }) => assert_eq!(name, "nope"),
        other => panic!("expected Error::Input, got {:?}", other.err()),
    }
}
