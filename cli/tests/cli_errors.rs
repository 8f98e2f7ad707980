//! The command line's side of bad input: every malformed model or input file must end the
//! process with a one-line `error: ...` naming the file and the problem and the documented exit
//! code (0 ok, 1 runtime failure, 2 bad usage or bad input), never a panic. The engine-level
//! checks behind these messages are tested in engine/tests/bad_inputs.rs.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use engine::onnx_import::{
    encode_model, Attribute, DimDecl, ElemType, OnnxGraph, OnnxModel, OnnxNode, TensorData,
    TensorValues, ValueDecl,
};
use ndarray::{ArrayD, IxDyn};
use ndarray_npy::{ReadNpyExt, WriteNpyExt};

fn engine(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_engine"))
        .args(args)
        .output()
        .expect("the engine binary runs")
}

/// A fresh temporary folder for one test.
fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("engine-cli-errors-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Runs the engine and checks its exit code; returns stderr. On failure the message must be a
/// single `error: ` line (no panic, no backtrace) containing every needle.
#[track_caller]
fn expect_exit(args: &[&str], code: i32, needles: &[&str]) -> String {
    let out = engine(args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(code),
        "{args:?}\nstderr: {stderr}\nstdout: {stdout}"
    );
    assert!(!stderr.contains("panicked"), "{args:?} panicked: {stderr}");
    for n in needles {
        assert!(
            stderr.contains(n),
            "{args:?}: stderr {stderr:?} lacks {n:?}"
        );
    }
    if code != 0 {
        assert!(stderr.starts_with("error: "), "{args:?}: {stderr:?}");
    }
    stderr
}

fn f32_decl(name: &str, dims: &[usize]) -> ValueDecl {
    ValueDecl {
        name: name.into(),
        elem_type: Some(ElemType::Float),
        shape: Some(dims.iter().map(|&d| DimDecl::Fixed(d)).collect()),
    }
}

fn f32_tensor(name: &str, dims: &[usize], fill: f32) -> TensorData {
    TensorData {
        name: name.into(),
        dims: dims.to_vec(),
        values: TensorValues::F32(vec![fill; dims.iter().product()]),
    }
}

fn onnx_node(name: &str, op: &str, ins: &[&str], outs: &[&str]) -> OnnxNode {
    OnnxNode {
        name: name.into(),
        op_type: op.into(),
        domain: String::new(),
        inputs: ins.iter().map(|s| s.to_string()).collect(),
        outputs: outs.iter().map(|s| s.to_string()).collect(),
        attributes: BTreeMap::new(),
    }
}

fn model(graph: OnnxGraph) -> OnnxModel {
    OnnxModel {
        path: None,
        ir_version: 8,
        producer_name: "cli_errors".into(),
        opset: 17,
        graph,
    }
}

/// x[1,3,8,8] → Conv(4 filters 3x3, pad 1, weights 0.1, bias `b`) → Relu → y[1,4,8,8].
/// Without the bias initializer when `with_bias` is false (the external-data tests add it).
fn conv_model(with_bias: bool) -> OnnxModel {
    let mut conv = onnx_node("conv", "Conv", &["x", "w", "b"], &["c"]);
    conv.attributes
        .insert("kernel_shape".into(), Attribute::Ints(vec![3, 3]));
    conv.attributes
        .insert("pads".into(), Attribute::Ints(vec![1, 1, 1, 1]));
    let mut initializers = vec![f32_tensor("w", &[4, 3, 3, 3], 0.1)];
    if with_bias {
        initializers.push(f32_tensor("b", &[4], 0.5));
    }
    model(OnnxGraph {
        name: "conv".into(),
        inputs: vec![f32_decl("x", &[1, 3, 8, 8])],
        outputs: vec![f32_decl("y", &[1, 4, 8, 8])],
        value_info: vec![],
        initializers,
        nodes: vec![conv, onnx_node("relu", "Relu", &["c"], &["y"])],
    })
}

fn write_model(dir: &Path, m: &OnnxModel) -> PathBuf {
    let p = dir.join("model.onnx");
    std::fs::write(&p, encode_model(m)).expect("write model");
    p
}

// --- A minimal protobuf writer, only to add an externally stored initializer (which the plain
// `OnnxModel` cannot describe: the importer resolves external data while loading). Protobuf
// merges a repeated message field across concatenated encodings, so appending a `ModelProto`
// that holds only `graph { initializer { ... } }` adds one initializer to the encoded model.

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn len_field(field: u64, bytes: &[u8], out: &mut Vec<u8>) {
    varint((field << 3) | 2, out);
    varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

fn int_field(field: u64, v: u64, out: &mut Vec<u8>) {
    varint(field << 3, out);
    varint(v, out);
}

/// The conv model whose 4-float bias `b` is stored externally under `location`.
fn external_bias_model(dir: &Path, location: &str) -> PathBuf {
    let mut bytes = encode_model(&conv_model(false));
    let mut tensor = Vec::new();
    int_field(1, 4, &mut tensor); // dims: [4]
    int_field(2, 1, &mut tensor); // data_type: FLOAT
    len_field(8, b"b", &mut tensor); // name
    let mut entry = Vec::new();
    len_field(1, b"location", &mut entry);
    len_field(2, location.as_bytes(), &mut entry);
    len_field(13, &entry, &mut tensor); // external_data
    int_field(14, 1, &mut tensor); // data_location: EXTERNAL
    let mut graph = Vec::new();
    len_field(5, &tensor, &mut graph); // GraphProto.initializer
    len_field(7, &graph, &mut bytes); // ModelProto.graph (merged)
    let p = dir.join("model.onnx");
    std::fs::write(&p, bytes).expect("write model");
    p
}

fn write_npy<T: ndarray_npy::WritableElement>(path: &Path, shape: &[usize], data: Vec<T>) {
    let a = ArrayD::from_shape_vec(IxDyn(shape), data).expect("shape");
    a.write_npy(File::create(path).expect("create npy"))
        .expect("write npy");
}

fn read_npy(path: &Path) -> ArrayD<f32> {
    ArrayD::<f32>::read_npy(File::open(path).expect("open npy")).expect("read npy")
}

#[test]
fn a_good_model_runs_with_exit_code_0() {
    let dir = temp_dir("good");
    let m = write_model(&dir, &conv_model(true));
    let x = dir.join("x.npy");
    write_npy(&x, &[1, 3, 8, 8], vec![1.0f32; 192]);
    let y = dir.join("y.npy");
    expect_exit(&["run", s(&m), "-i", s(&x), "-o", s(&y), "-t", "1"], 0, &[]);
    let y = read_npy(&y);
    assert_eq!(y.shape(), &[1, 4, 8, 8]);
    // Centre pixel: 27 taps of 1.0 * 0.1, plus the bias 0.5.
    assert!((y[[0, 1, 4, 4]] - 3.2).abs() < 1e-5, "{}", y[[0, 1, 4, 4]]);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn empty_file() {
    let dir = temp_dir("empty");
    let m = dir.join("model.onnx");
    std::fs::write(&m, b"").unwrap();
    expect_exit(
        &["run", s(&m)],
        2,
        &[
            "model.onnx",
            "the file is empty (expected a serialized ONNX model)",
        ],
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn not_onnx_bytes() {
    let dir = temp_dir("notonnx");
    let m = dir.join("model.onnx");
    std::fs::write(&m, b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x10").unwrap();
    expect_exit(
        &["run", s(&m)],
        2,
        &["model.onnx: not a valid ONNX model (protobuf decoding failed"],
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn truncated_model() {
    let dir = temp_dir("truncated");
    let bytes = encode_model(&conv_model(true));
    let m = dir.join("model.onnx");
    std::fs::write(&m, &bytes[..bytes.len() / 2]).unwrap();
    expect_exit(
        &["run", s(&m)],
        2,
        &["model.onnx: not a valid ONNX model", "truncated"],
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn missing_model_file_is_bad_input() {
    expect_exit(
        &["run", "/nonexistent/engine-cli-errors/model.onnx"],
        2,
        &["/nonexistent/engine-cli-errors/model.onnx"],
    );
}

#[test]
fn external_data_resolves_next_to_the_model() {
    // The baseline of the two tests below: the appended external initializer works.
    let dir = temp_dir("extok");
    let m = external_bias_model(&dir, "weights.bin");
    let bias: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    std::fs::write(dir.join("weights.bin"), bias).unwrap();
    let x = dir.join("x.npy");
    write_npy(&x, &[1, 3, 8, 8], vec![0.0f32; 192]);
    let y = dir.join("y.npy");
    expect_exit(&["run", s(&m), "-i", s(&x), "-o", s(&y), "-t", "1"], 0, &[]);
    let y = read_npy(&y);
    assert_eq!(y[[0, 3, 0, 0]], 4.0);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn missing_external_data() {
    let dir = temp_dir("extmissing");
    let m = external_bias_model(&dir, "weights.bin");
    expect_exit(
        &["run", s(&m)],
        2,
        &["tensor 'b'", "external data file", "weights.bin' not found"],
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn external_data_path_escaping_the_model_folder() {
    let dir = temp_dir("extescape");
    let m = external_bias_model(&dir, "../../etc/passwd");
    expect_exit(
        &["run", s(&m)],
        2,
        &[
            "tensor 'b'",
            "external data location '../../etc/passwd' escapes the model folder ('..' is not allowed)",
        ],
    );
    let m = external_bias_model(&dir, "/etc/passwd");
    expect_exit(&["run", s(&m)], 2, &["'/etc/passwd' is an absolute path"]);
    std::fs::remove_dir_all(&dir).ok();
}

/// x[10^6, 10^6] → Relu → y: 4 TB of activations.
fn absurd_model() -> OnnxModel {
    model(OnnxGraph {
        name: "absurd".into(),
        inputs: vec![f32_decl("x", &[1_000_000, 1_000_000])],
        outputs: vec![f32_decl("y", &[1_000_000, 1_000_000])],
        value_info: vec![],
        initializers: vec![],
        nodes: vec![onnx_node("relu", "Relu", &["x"], &["y"])],
    })
}

#[test]
fn absurd_shape_is_refused_by_the_memory_limit() {
    let dir = temp_dir("absurd");
    let m = write_model(&dir, &absurd_model());
    expect_exit(
        &["run", s(&m), "--max-memory", "1G"],
        2,
        &[
            "1000000000000",
            "over the memory limit of 1073741824 bytes (raise it with --max-memory)",
        ],
    );
    // Without --max-memory the default limit (a share of physical memory) still refuses it.
    expect_exit(
        &["run", s(&m)],
        2,
        &["over the memory limit", "raise it with --max-memory"],
    );
    // A limit below what even a small model needs.
    let small = write_model(&temp_dir("absurd-small"), &conv_model(true));
    expect_exit(
        &["run", s(&small), "--max-memory", "100"],
        2,
        &["over the memory limit of 100 bytes"],
    );
    std::fs::remove_dir_all(small.parent().unwrap()).ok();
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bad_max_memory_value_is_a_usage_error() {
    expect_exit(
        &["run", "zoo:resnet20", "--max-memory=0"],
        2,
        &["--max-memory '0': expected a positive size such as 512M or 4G"],
    );
    expect_exit(
        &["run", "zoo:resnet20", "--max-memory", "3Q"],
        2,
        &["unknown suffix 'Q'"],
    );
}

#[test]
fn unknown_flag_is_a_usage_error() {
    expect_exit(&["run", "--no-such-flag"], 2, &["--no-such-flag"]);
}

#[test]
fn npy_of_the_wrong_dtype() {
    let dir = temp_dir("npydtype");
    let m = write_model(&dir, &conv_model(true));
    let x = dir.join("x.npy");
    write_npy(&x, &[1, 3, 8, 8], vec![1.0f64; 192]);
    expect_exit(
        &["run", s(&m), "-i", s(&x)],
        2,
        &["input 'x': expected element type"],
    );
    // A dtype the engine does not read at all: int16.
    write_npy(&x, &[1, 3, 8, 8], vec![1i16; 192]);
    expect_exit(
        &["run", s(&m), "-i", s(&x)],
        2,
        &["x.npy: unsupported .npy dtype <i2"],
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn npy_of_the_wrong_shape() {
    let dir = temp_dir("npyshape");
    let m = write_model(&dir, &conv_model(true));
    let x = dir.join("x.npy");
    write_npy(&x, &[1, 3, 8, 9], vec![1.0f32; 216]);
    expect_exit(
        &["run", s(&m), "-i", s(&x)],
        2,
        &["x.npy: shape [1, 3, 8, 9] does not fit input 'x', declared as [1, 3, 8, 8] (to run the model at another size, pass --input-shape x=1x3x8x9)"],
    );
    // Asked for explicitly, the other size runs (the conv is size-agnostic).
    let y = dir.join("y.npy");
    expect_exit(
        &[
            "run",
            s(&m),
            "-i",
            s(&x),
            "--input-shape",
            "x=1x3x8x9",
            "-o",
            s(&y),
            "-t",
            "1",
        ],
        0,
        &[],
    );
    assert_eq!(read_npy(&y).shape(), &[1, 4, 8, 9]);
    // Wrong rank.
    write_npy(&x, &[3, 8, 8], vec![1.0f32; 192]);
    expect_exit(
        &["run", s(&m), "-i", s(&x)],
        2,
        &["x.npy: shape [3, 8, 8] does not fit input 'x'"],
    );
    // Wrong channel count, forced past the declaration: the conv names the mismatch.
    write_npy(&x, &[1, 2, 8, 8], vec![1.0f32; 128]);
    expect_exit(
        &["run", s(&m), "-i", s(&x), "--input-shape", "x=1x2x8x8"],
        2,
        &["node 'conv' (Conv)", "channel"],
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn npy_with_a_corrupt_header_or_short_data() {
    let dir = temp_dir("npycorrupt");
    let m = write_model(&dir, &conv_model(true));
    let x = dir.join("x.npy");
    std::fs::write(&x, b"\x93NUMPY\x01\x00garbage").unwrap();
    expect_exit(
        &["run", s(&m), "-i", s(&x)],
        2,
        &["x.npy: not a valid .npy file (corrupt header"],
    );
    // A valid header whose data is cut short.
    write_npy(&x, &[1, 3, 8, 8], vec![1.0f32; 192]);
    let bytes = std::fs::read(&x).unwrap();
    std::fs::write(&x, &bytes[..bytes.len() - 10]).unwrap();
    expect_exit(
        &["run", s(&m), "-i", s(&x)],
        2,
        &["x.npy: header declares shape [1, 3, 8, 8] (768 bytes of <f4) but the file holds 758 data bytes"],
    );
    // A header declaring an absurd shape: refused from the file size, nothing allocated.
    let mut header = b"\x93NUMPY\x01\x00".to_vec();
    let dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (1000000, 1000000, 1000000), }";
    let mut dict = dict.to_string();
    while !(10 + dict.len() + 1).is_multiple_of(64) {
        dict.push(' ');
    }
    dict.push('\n');
    header.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    header.extend_from_slice(dict.as_bytes());
    header.extend_from_slice(&[0; 16]);
    std::fs::write(&x, header).unwrap();
    expect_exit(
        &["run", s(&m), "-i", s(&x)],
        2,
        &[
            "x.npy: header declares shape [1000000, 1000000, 1000000]",
            "16 data bytes",
        ],
    );
    std::fs::write(&x, b"").unwrap();
    expect_exit(
        &["run", s(&m), "-i", s(&x)],
        2,
        &["x.npy: not a valid .npy file"],
    );
    expect_exit(
        &["run", s(&m), "-i", s(&dir.join("absent.npy"))],
        2,
        &["absent.npy: cannot open .npy file"],
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn nan_and_inf_inputs_propagate_with_exit_code_0() {
    let dir = temp_dir("nan");
    let m = write_model(&dir, &conv_model(true));
    let x = dir.join("x.npy");
    let mut data = vec![1.0f32; 192];
    data[0] = f32::NAN; // channel 0, pixel (0,0)
    data[63] = f32::INFINITY; // channel 0, pixel (7,7)
    write_npy(&x, &[1, 3, 8, 8], data);
    let y = dir.join("y.npy");
    expect_exit(&["run", s(&m), "-i", s(&x), "-o", s(&y), "-t", "1"], 0, &[]);
    let y = read_npy(&y);
    for co in 0..4 {
        // Every output pixel whose 3x3 window sees the NaN is NaN (Relu keeps it); the ones
        // that see the +inf are +inf; the rest are finite.
        assert!(y[[0, co, 0, 0]].is_nan(), "{}", y[[0, co, 0, 0]]);
        assert!(y[[0, co, 1, 1]].is_nan(), "{}", y[[0, co, 1, 1]]);
        assert_eq!(y[[0, co, 7, 7]], f32::INFINITY);
        assert_eq!(y[[0, co, 6, 6]], f32::INFINITY);
        assert!(y[[0, co, 4, 4]].is_finite());
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn failing_to_write_the_output_is_a_runtime_failure() {
    // Exit code 1: the input was fine, the run itself failed.
    let dir = temp_dir("writefail");
    let m = write_model(&dir, &conv_model(true));
    let out = dir.join("no-such-folder").join("y.npy");
    expect_exit(
        &["run", s(&m), "-o", s(&out), "-t", "1"],
        1,
        &["y.npy: cannot create"],
    );
    std::fs::remove_dir_all(&dir).ok();
}
