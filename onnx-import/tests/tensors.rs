//! Tensor decoding: raw vs typed fields per element type, size checks, external data,
//! tensor files.

mod common;

use common::*;
use onnx_import::{Error, TensorValues};
use prost::Message;
use tract_onnx::pb::{self, tensor_proto::DataType};

/// Decodes one initializer through a whole model, as a file would be read.
fn decode_init(t: pb::TensorProto) -> Result<onnx_import::TensorData, Error> {
    let m = model(13, vec![], vec![t], vec![], vec![]);
    let mut model = decode(&m)?;
    Ok(model.graph.initializers.remove(0))
}

fn typed(dt: DataType, dims: &[i64], f: impl FnOnce(&mut pb::TensorProto)) -> pb::TensorProto {
    let mut t = pb::TensorProto {
        name: "w".into(),
        data_type: dt as i32,
        dims: dims.to_vec(),
        ..Default::default()
    };
    f(&mut t);
    t
}

/// Raw and typed encodings of the same values decode to the same `expected`.
fn check_both(
    dt: DataType,
    raw: Vec<u8>,
    fill: impl FnOnce(&mut pb::TensorProto),
    expected: TensorValues,
) {
    let n = expected.len() as i64;
    let from_raw = decode_init(raw_tensor("w", dt, &[n], raw)).unwrap();
    let from_typed = decode_init(typed(dt, &[n], fill)).unwrap();
    assert_eq!(from_raw.values, expected, "{dt:?} raw");
    assert_eq!(from_typed.values, expected, "{dt:?} typed");
    assert_eq!(from_raw.dims, vec![n as usize]);
    assert_eq!(from_raw.name, "w");
}

fn le<T: Copy, const N: usize>(v: &[T], f: fn(T) -> [u8; N]) -> Vec<u8> {
    v.iter().flat_map(|x| f(*x)).collect()
}

#[test]
fn every_dtype_raw_and_typed() {
    let f = [1.5f32, -2.0, 0.25];
    check_both(
        DataType::Float,
        le(&f, f32::to_le_bytes),
        |t| t.float_data = f.to_vec(),
        TensorValues::F32(f.to_vec()),
    );
    let d = [1.5f64, -1e300];
    check_both(
        DataType::Double,
        le(&d, f64::to_le_bytes),
        |t| t.double_data = d.to_vec(),
        TensorValues::F64(d.to_vec()),
    );
    let i = [i64::MIN, 0, 7];
    check_both(
        DataType::Int64,
        le(&i, i64::to_le_bytes),
        |t| t.int64_data = i.to_vec(),
        TensorValues::I64(i.to_vec()),
    );
    let i = [i32::MIN, -1, 9];
    check_both(
        DataType::Int32,
        le(&i, i32::to_le_bytes),
        |t| t.int32_data = i.to_vec(),
        TensorValues::I32(i.to_vec()),
    );
    check_both(
        DataType::Int8,
        vec![0x80, 0xff, 5],
        |t| t.int32_data = vec![-128, -1, 5],
        TensorValues::I32(vec![-128, -1, 5]),
    );
    let i = [-300i16, 2];
    check_both(
        DataType::Int16,
        le(&i, i16::to_le_bytes),
        |t| t.int32_data = vec![-300, 2],
        TensorValues::I32(vec![-300, 2]),
    );
    let u = [65535u16, 1];
    check_both(
        DataType::Uint16,
        le(&u, u16::to_le_bytes),
        |t| t.int32_data = vec![65535, 1],
        TensorValues::I32(vec![65535, 1]),
    );
    check_both(
        DataType::Uint8,
        vec![0, 200, 255],
        |t| t.int32_data = vec![0, 200, 255],
        TensorValues::U8(vec![0, 200, 255]),
    );
    check_both(
        DataType::Bool,
        vec![1, 0, 1],
        |t| t.int32_data = vec![1, 0, 1],
        TensorValues::Bool(vec![true, false, true]),
    );
    // float16: 1.0, -2.0, 65504 (max), 2^-24 (smallest subnormal).
    let h = [0x3c00u16, 0xc000, 0x7bff, 0x0001];
    check_both(
        DataType::Float16,
        le(&h, u16::to_le_bytes),
        |t| t.int32_data = h.iter().map(|x| *x as i32).collect(),
        TensorValues::F32(vec![1.0, -2.0, 65504.0, 2f32.powi(-24)]),
    );
    let b = [0x3f80u16, 0xc040];
    check_both(
        DataType::Bfloat16,
        le(&b, u16::to_le_bytes),
        |t| t.int32_data = b.iter().map(|x| *x as i32).collect(),
        TensorValues::F32(vec![1.0, -3.0]),
    );
    let u = [u32::MAX, 3];
    check_both(
        DataType::Uint32,
        le(&u, u32::to_le_bytes),
        |t| t.uint64_data = vec![u32::MAX as u64, 3],
        TensorValues::I64(vec![u32::MAX as i64, 3]),
    );
    let u = [i64::MAX as u64, 3];
    check_both(
        DataType::Uint64,
        le(&u, u64::to_le_bytes),
        |t| t.uint64_data = u.to_vec(),
        TensorValues::I64(vec![i64::MAX, 3]),
    );
}

#[test]
fn scalars_and_empty_tensors() {
    let s = decode_init(f32_tensor("s", &[], &[4.0])).unwrap();
    assert_eq!((s.dims, s.values), (vec![], TensorValues::F32(vec![4.0])));
    let e = decode_init(f32_tensor("e", &[2, 0], &[])).unwrap();
    assert_eq!((e.dims, e.values), (vec![2, 0], TensorValues::F32(vec![])));
}

fn err_text(r: Result<impl std::fmt::Debug, Error>) -> String {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn size_mismatches_are_refused_with_file_and_tensor_names() {
    let e = err_text(decode_init(raw_tensor(
        "w",
        DataType::Float,
        &[2, 2],
        vec![0; 12],
    )));
    assert!(
        e.contains(LABEL) && e.contains("'w'") && e.contains("12 bytes") && e.contains("16"),
        "{e}"
    );
    let e = err_text(decode_init(f32_tensor("w", &[3], &[1.0])));
    assert!(
        e.contains(LABEL) && e.contains("float_data has 1 values") && e.contains("need 3"),
        "{e}"
    );
    let e = err_text(decode_init(typed(DataType::Uint8, &[1], |t| {
        t.int32_data = vec![300]
    })));
    assert!(e.contains("out of range for UINT8"), "{e}");
    let e = err_text(decode_init(typed(DataType::Uint64, &[1], |t| {
        t.uint64_data = vec![u64::MAX]
    })));
    assert!(e.contains("does not fit in INT64"), "{e}");
}

#[test]
fn overflowing_and_negative_dims_are_refused() {
    let e = err_text(decode_init(f32_tensor("big", &[1 << 62, 1 << 62], &[])));
    assert!(
        e.contains(LABEL) && e.contains("'big'") && e.contains("overflows"),
        "{e}"
    );
    // Element count fits usize but byte count does not.
    let e = err_text(decode_init(f32_tensor("big", &[1 << 31, 1 << 31, 8], &[])));
    assert!(e.contains("overflows"), "{e}");
    let e = err_text(decode_init(f32_tensor("neg", &[-1], &[])));
    assert!(e.contains("negative dimension -1"), "{e}");
}

#[test]
fn unsupported_element_types_are_named() {
    let t = typed(DataType::String, &[1], |t| {
        t.string_data = vec![b"a".to_vec()]
    });
    let e = err_text(decode_init(t));
    assert!(
        e.contains(LABEL) && e.contains("'w'") && e.contains("unsupported element type STRING"),
        "{e}"
    );
    let e = err_text(decode_init(raw_tensor(
        "c",
        DataType::Complex64,
        &[1],
        vec![0; 8],
    )));
    assert!(e.contains("COMPLEX64"), "{e}");
    let e = err_text(decode_init(
        raw_tensor("u", DataType::Float, &[1], vec![0; 4]).tap(|t| t.data_type = 99),
    ));
    assert!(e.contains("unknown element type code 99"), "{e}");
}

trait Tap: Sized {
    fn tap(mut self, f: impl FnOnce(&mut Self)) -> Self {
        f(&mut self);
        self
    }
}
impl<T> Tap for T {}

#[test]
fn sparse_initializers_are_refused() {
    let mut m = model(13, vec![], vec![], vec![], vec![]);
    if let Some(g) = m.graph.as_mut() {
        g.sparse_initializer.push(pb::SparseTensorProto {
            values: Some(f32_tensor("sp", &[1], &[1.0])),
            indices: Some(i64_tensor("", &[1], &[0])),
            dims: vec![4],
        });
    }
    let e = err_text(decode(&m));
    assert!(
        e.contains(LABEL) && e.contains("sparse initializer 'sp'"),
        "{e}"
    );
}

// ---- external data ----------------------------------------------------------------------

fn external(
    name: &str,
    location: &str,
    offset: Option<u64>,
    length: Option<u64>,
    dims: &[i64],
) -> pb::TensorProto {
    let mut kv = vec![pb::StringStringEntryProto {
        key: "location".into(),
        value: location.into(),
    }];
    if let Some(o) = offset {
        kv.push(pb::StringStringEntryProto {
            key: "offset".into(),
            value: o.to_string(),
        });
    }
    if let Some(l) = length {
        kv.push(pb::StringStringEntryProto {
            key: "length".into(),
            value: l.to_string(),
        });
    }
    pb::TensorProto {
        name: name.into(),
        data_type: DataType::Float as i32,
        dims: dims.to_vec(),
        data_location: Some(pb::tensor_proto::DataLocation::External as i32),
        external_data: kv,
        ..Default::default()
    }
}

/// Writes `weights.bin` (floats 0..8) and a model using `t` into a fresh folder; loads it.
fn load_with_external(test: &str, t: pb::TensorProto) -> Result<onnx_import::OnnxModel, Error> {
    let dir = temp_dir(test);
    let data: Vec<u8> = (0..8).flat_map(|i| (i as f32).to_le_bytes()).collect();
    std::fs::write(dir.join("weights.bin"), data).unwrap();
    let path = dir.join("model.onnx");
    std::fs::write(
        &path,
        model(13, vec![], vec![t], vec![], vec![]).encode_to_vec(),
    )
    .unwrap();
    let r = onnx_import::load_model(&path);
    let _ = std::fs::remove_dir_all(&dir);
    r
}

#[test]
fn external_data_reads_only_the_range() {
    let m = load_with_external(
        "good",
        external("w", "weights.bin", Some(8), Some(12), &[3]),
    )
    .unwrap();
    assert_eq!(
        m.graph.initializers[0].values,
        TensorValues::F32(vec![2.0, 3.0, 4.0])
    );
    assert!(m.path.is_some_and(|p| p.ends_with("model.onnx")));
    // No length: runs to the end of the file.
    let m = load_with_external(
        "to_end",
        external("w", "./weights.bin", Some(24), None, &[2]),
    )
    .unwrap();
    assert_eq!(
        m.graph.initializers[0].values,
        TensorValues::F32(vec![6.0, 7.0])
    );
}

#[test]
fn external_data_errors() {
    let cases: Vec<(&str, pb::TensorProto, &str)> = vec![
        (
            "missing",
            external("w", "nope.bin", None, Some(4), &[1]),
            "not found",
        ),
        (
            "oob",
            external("w", "weights.bin", Some(24), Some(16), &[4]),
            "past the end",
        ),
        (
            "offset_oob",
            external("w", "weights.bin", Some(100), Some(4), &[1]),
            "past the end",
        ),
        (
            "len_mismatch",
            external("w", "weights.bin", Some(0), Some(8), &[3]),
            "does not match dims",
        ),
        (
            "escape",
            external("w", "../../etc/passwd", None, Some(4), &[1]),
            "escapes the model folder",
        ),
        (
            "absolute",
            external("w", "/etc/passwd", None, Some(4), &[1]),
            "absolute path",
        ),
        (
            "bad_offset",
            external("w", "weights.bin", None, Some(4), &[1]).tap(|t| {
                t.external_data.push(pb::StringStringEntryProto {
                    key: "offset".into(),
                    value: "-3".into(),
                })
            }),
            "not a non-negative integer",
        ),
        (
            "no_location",
            external("w", "", None, Some(4), &[1]),
            "without a 'location'",
        ),
    ];
    for (test, t, want) in cases {
        let e = err_text(load_with_external(test, t));
        assert!(
            e.contains("model.onnx") && e.contains("'w'") && e.contains(want),
            "{test}: {e}"
        );
    }
}

#[cfg(unix)]
#[test]
fn external_data_symlink_out_of_folder_is_refused() {
    let outside = temp_dir("symlink_target");
    std::fs::write(outside.join("secret.bin"), [0u8; 4]).unwrap();
    let dir = temp_dir("symlink");
    std::os::unix::fs::symlink(outside.join("secret.bin"), dir.join("link.bin")).unwrap();
    let path = dir.join("model.onnx");
    let t = external("w", "link.bin", None, Some(4), &[1]);
    std::fs::write(
        &path,
        model(13, vec![], vec![t], vec![], vec![]).encode_to_vec(),
    )
    .unwrap();
    let e = err_text(onnx_import::load_model(&path));
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&outside);
    assert!(e.contains("outside the model folder"), "{e}");
}

#[test]
fn external_data_needs_a_folder() {
    let m = model(
        13,
        vec![],
        vec![external("w", "weights.bin", None, Some(4), &[1])],
        vec![],
        vec![],
    );
    let e = err_text(decode(&m));
    assert!(e.contains(LABEL) && e.contains("read from memory"), "{e}");
}

// ---- tensor files -------------------------------------------------------------------------

#[test]
fn tensor_files() {
    let dir = temp_dir("tensor_file");
    let t = raw_tensor(
        "x",
        DataType::Int64,
        &[2],
        le(&[5i64, -6], i64::to_le_bytes),
    );
    std::fs::write(dir.join("input_0.pb"), t.encode_to_vec()).unwrap();
    let got = onnx_import::read_tensor_file(&dir.join("input_0.pb")).unwrap();
    assert_eq!(
        (got.name.as_str(), got.dims, got.values),
        ("x", vec![2], TensorValues::I64(vec![5, -6]))
    );

    // Writer and reader agree.
    let back = onnx_import::encode_tensor(&onnx_import::TensorData {
        name: "o".into(),
        dims: vec![1, 2],
        values: TensorValues::Bool(vec![true, false]),
    });
    std::fs::write(dir.join("output_0.pb"), back).unwrap();
    let got = onnx_import::read_tensor_file(&dir.join("output_0.pb")).unwrap();
    assert_eq!(got.values, TensorValues::Bool(vec![true, false]));

    std::fs::write(dir.join("empty.pb"), []).unwrap();
    let e = err_text(onnx_import::read_tensor_file(&dir.join("empty.pb")));
    assert!(e.contains("empty.pb") && e.contains("empty"), "{e}");
    std::fs::write(dir.join("bad.pb"), [0xff, 0xff, 0xff]).unwrap();
    let e = err_text(onnx_import::read_tensor_file(&dir.join("bad.pb")));
    assert!(
        e.contains("bad.pb") && e.contains("not a valid ONNX tensor"),
        "{e}"
    );
    let e = err_text(onnx_import::read_tensor_file(&dir.join("absent.pb")));
    assert!(e.contains("absent.pb"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}
