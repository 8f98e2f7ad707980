//! `engine run` with an integer `.npy` input that carries a shape: the value is bound at session
//! creation (`SessionOptions::constant_inputs`) so the Reshape can be planned. Uses the ONNX
//! node test `test_reshape_reordered_all_dims` (scripts/fetch-node-tests.sh), whose target
//! shape is a graph input.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;

use ndarray::ArrayD;
use ndarray_npy::{ReadNpyExt, WriteNpyExt};
use onnx_import::TensorValues;

fn case_dir() -> PathBuf {
    let root = std::env::var_os("ONNX_NODE_TESTS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.cache/onnx-node-tests"));
    let dir = root.join("node/test_reshape_reordered_all_dims");
    assert!(
        dir.is_dir(),
        "{} missing: run scripts/fetch-node-tests.sh first",
        dir.display()
    );
    dir
}

fn read_pb(path: &Path) -> (Vec<usize>, TensorValues) {
    let t = onnx_import::read_tensor_file(path).unwrap_or_else(|e| panic!("{e}"));
    (t.dims, t.values)
}

fn write_npy<T: ndarray_npy::WritableElement>(path: &Path, dims: &[usize], v: Vec<T>) {
    let a = ArrayD::from_shape_vec(dims.to_vec(), v).expect("shape matches data");
    let f = File::create(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    a.write_npy(f).expect("npy written");
}

#[test]
fn int64_shape_input_is_bound() {
    let case = case_dir();
    let ds = case.join("test_data_set_0");
    let dir = std::env::temp_dir().join(format!("engine-int-inputs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");

    let (data_dims, TensorValues::F32(data)) = read_pb(&ds.join("input_0.pb")) else {
        panic!("input_0 is not f32")
    };
    let (shape_dims, TensorValues::I64(shape)) = read_pb(&ds.join("input_1.pb")) else {
        panic!("input_1 is not i64")
    };
    let (out_dims, TensorValues::F32(expected)) = read_pb(&ds.join("output_0.pb")) else {
        panic!("output_0 is not f32")
    };
    let (x, s, y) = (dir.join("x.npy"), dir.join("shape.npy"), dir.join("y.npy"));
    write_npy(&x, &data_dims, data);
    write_npy(&s, &shape_dims, shape);

    let model = case.join("model.onnx");
    let out = Command::new(env!("CARGO_BIN_EXE_engine"))
        .args(["run", model.to_str().expect("utf-8 path")])
        .args(["-i", x.to_str().expect("utf-8 path")])
        .args(["-i", s.to_str().expect("utf-8 path")])
        .args(["-o", y.to_str().expect("utf-8 path"), "-t", "1"])
        .output()
        .expect("the engine binary runs");
    assert!(
        out.status.success(),
        "engine run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = ArrayD::<f32>::read_npy(File::open(&y).expect("output written")).expect("npy");
    assert_eq!(got.shape(), out_dims.as_slice());
    assert_eq!(got.iter().copied().collect::<Vec<f32>>(), expected);
    let _ = std::fs::remove_dir_all(&dir);
}
