//! `TensorProto` ⇄ [`TensorData`].
//!
//! Decoding accepts both `raw_data` (little-endian bytes) and the typed repeated fields, and
//! loads external data from files next to the model. Every size is checked against the
//! declared dims *before* anything is allocated, so a corrupt or hostile file cannot make us
//! allocate gigabytes or read outside the model's folder.
//!
//! Element types are widened into the few [`TensorValues`] kinds the engine computes with:
//!
//! | ONNX type                  | decoded as | why                                              |
//! |----------------------------|------------|--------------------------------------------------|
//! | FLOAT, FLOAT16, BFLOAT16   | `F32`      | half types are storage formats; f32 is exact     |
//! | DOUBLE                     | `F64`      |                                                  |
//! | INT8, INT16, UINT16, INT32 | `I32`      | all values fit exactly                           |
//! | UINT32, INT64              | `I64`      | all values fit exactly                           |
//! | UINT64                     | `I64`      | values above `i64::MAX` are refused              |
//! | UINT8                      | `U8`       |                                                  |
//! | BOOL                       | `Bool`     | any non-zero byte is `true`                      |
//!
//! STRING, complex, 4-bit and 8-bit float types are refused with their ONNX name.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Component, Path};

use tract_onnx::pb::{self, tensor_proto::DataType};

use crate::model::{ElemType, TensorData, TensorValues};

/// ONNX `DataType` code → [`ElemType`].
pub fn elem_type_from_code(code: i32) -> ElemType {
    match DataType::try_from(code) {
        Ok(DataType::Float) => ElemType::Float,
        Ok(DataType::Double) => ElemType::Double,
        Ok(DataType::Int64) => ElemType::Int64,
        Ok(DataType::Int32) => ElemType::Int32,
        Ok(DataType::Bool) => ElemType::Bool,
        Ok(DataType::Uint8) => ElemType::Uint8,
        Ok(DataType::Int8) => ElemType::Int8,
        Ok(DataType::Int16) => ElemType::Int16,
        Ok(DataType::Uint16) => ElemType::Uint16,
        Ok(DataType::Float16) => ElemType::Float16,
        Ok(DataType::String) => ElemType::String,
        _ => ElemType::Other(code),
    }
}

/// [`ElemType`] → ONNX `DataType` code.
pub fn elem_type_code(t: ElemType) -> i32 {
    let d = match t {
        ElemType::Float => DataType::Float,
        ElemType::Double => DataType::Double,
        ElemType::Int64 => DataType::Int64,
        ElemType::Int32 => DataType::Int32,
        ElemType::Bool => DataType::Bool,
        ElemType::Uint8 => DataType::Uint8,
        ElemType::Int8 => DataType::Int8,
        ElemType::Int16 => DataType::Int16,
        ElemType::Uint16 => DataType::Uint16,
        ElemType::Float16 => DataType::Float16,
        ElemType::String => DataType::String,
        ElemType::Other(code) => return code,
    };
    d as i32
}

/// The ONNX spelling of a data type code, for error messages (`FLOAT`, `STRING`, `code 99`).
pub fn type_name(code: i32) -> String {
    match DataType::try_from(code) {
        Ok(d) => d.as_str_name().to_string(),
        Err(_) => format!("code {code}"),
    }
}

/// The ONNX element type a decoded tensor is written back as.
pub fn values_elem_type(v: &TensorValues) -> ElemType {
    match v {
        TensorValues::F32(_) => ElemType::Float,
        TensorValues::F64(_) => ElemType::Double,
        TensorValues::I64(_) => ElemType::Int64,
        TensorValues::I32(_) => ElemType::Int32,
        TensorValues::Bool(_) => ElemType::Bool,
        TensorValues::U8(_) => ElemType::Uint8,
    }
}

/// Where a tensor lives, so external data can be resolved: the folder that holds the model
/// (or `None` for in-memory bytes, which then cannot use external data).
#[derive(Clone, Copy)]
pub struct TensorContext<'a> {
    pub base_dir: Option<&'a Path>,
}

/// Why a tensor could not be decoded; the caller adds file, tensor and node names.
#[derive(Debug)]
pub struct TensorIssue(pub String);

type Res<T> = Result<T, TensorIssue>;

fn issue<T>(msg: impl Into<String>) -> Res<T> {
    Err(TensorIssue(msg.into()))
}

/// Size in bytes of one element in `raw_data`, for the types we decode.
fn raw_elem_size(d: DataType) -> Option<usize> {
    Some(match d {
        DataType::Float | DataType::Int32 | DataType::Uint32 => 4,
        DataType::Double | DataType::Int64 | DataType::Uint64 => 8,
        DataType::Float16 | DataType::Bfloat16 | DataType::Int16 | DataType::Uint16 => 2,
        DataType::Int8 | DataType::Uint8 | DataType::Bool => 1,
        _ => return None,
    })
}

/// Checked conversion of ONNX dims (i64) into usize dims and their element count.
pub fn checked_dims(dims: &[i64]) -> Res<(Vec<usize>, usize)> {
    let mut out = Vec::with_capacity(dims.len());
    let mut count: usize = 1;
    for &d in dims {
        let Ok(u) = usize::try_from(d) else {
            return issue(format!("negative dimension {d} in dims {dims:?}"));
        };
        out.push(u);
        count = match count.checked_mul(u) {
            Some(c) => c,
            None => return issue(format!("element count of dims {dims:?} overflows")),
        };
    }
    Ok((out, count))
}

/// Decodes a tensor. `name` is the proto's own name (the caller may rename, e.g. Constants).
pub fn decode_tensor(t: &pb::TensorProto, ctx: TensorContext<'_>) -> Res<TensorData> {
    let Ok(dtype) = DataType::try_from(t.data_type) else {
        return issue(format!("unknown element type code {}", t.data_type));
    };
    let Some(elem_size) = raw_elem_size(dtype) else {
        return issue(format!("unsupported element type {}", dtype.as_str_name()));
    };
    if t.segment.is_some() {
        return issue("segmented tensors are not supported");
    }
    let (dims, count) = checked_dims(&t.dims)?;
    let Some(nbytes) = count.checked_mul(elem_size) else {
        return issue(format!("byte size of dims {:?} overflows", t.dims));
    };
    let external = t.data_location == Some(pb::tensor_proto::DataLocation::External as i32);
    let values = if external {
        let bytes = read_external(t, ctx, nbytes)?;
        from_raw(dtype, &bytes)?
    } else if !t.raw_data.is_empty() {
        if t.raw_data.len() != nbytes {
            return issue(format!(
                "raw_data has {} bytes but dims {:?} of {} need {nbytes}",
                t.raw_data.len(),
                t.dims,
                dtype.as_str_name()
            ));
        }
        from_raw(dtype, &t.raw_data)?
    } else {
        from_typed(t, dtype, count)?
    };
    Ok(TensorData {
        name: t.name.clone(),
        dims,
        values,
    })
}

fn check_len(field: &str, got: usize, want: usize, t: &pb::TensorProto) -> Res<()> {
    if got != want {
        return issue(format!(
            "{field} has {got} values but dims {:?} need {want}",
            t.dims
        ));
    }
    Ok(())
}

fn from_typed(t: &pb::TensorProto, dtype: DataType, count: usize) -> Res<TensorValues> {
    use DataType as D;
    let i32s = || -> Res<&[i32]> {
        check_len("int32_data", t.int32_data.len(), count, t)?;
        Ok(&t.int32_data)
    };
    Ok(match dtype {
        D::Float => {
            check_len("float_data", t.float_data.len(), count, t)?;
            TensorValues::F32(t.float_data.clone())
        }
        D::Double => {
            check_len("double_data", t.double_data.len(), count, t)?;
            TensorValues::F64(t.double_data.clone())
        }
        D::Int64 => {
            check_len("int64_data", t.int64_data.len(), count, t)?;
            TensorValues::I64(t.int64_data.clone())
        }
        D::Int32 | D::Int8 | D::Int16 | D::Uint16 => {
            let v = i32s()?;
            // The narrow types are stored widened; out-of-range values mean a corrupt file.
            let (lo, hi) = match dtype {
                D::Int8 => (i8::MIN as i32, i8::MAX as i32),
                D::Int16 => (i16::MIN as i32, i16::MAX as i32),
                D::Uint16 => (0, u16::MAX as i32),
                _ => (i32::MIN, i32::MAX),
            };
            if let Some(bad) = v.iter().find(|x| **x < lo || **x > hi) {
                return issue(format!(
                    "int32_data value {bad} is out of range for {}",
                    dtype.as_str_name()
                ));
            }
            TensorValues::I32(v.to_vec())
        }
        D::Uint8 => {
            let v = i32s()?;
            let mut out = Vec::with_capacity(v.len());
            for &x in v {
                match u8::try_from(x) {
                    Ok(b) => out.push(b),
                    Err(_) => {
                        return issue(format!("int32_data value {x} is out of range for UINT8"))
                    }
                }
            }
            TensorValues::U8(out)
        }
        D::Bool => TensorValues::Bool(i32s()?.iter().map(|x| *x != 0).collect()),
        // Half types keep their 16 bits in the low half of each int32.
        D::Float16 => TensorValues::F32(i32s()?.iter().map(|x| f16_to_f32(*x as u16)).collect()),
        D::Bfloat16 => TensorValues::F32(i32s()?.iter().map(|x| bf16_to_f32(*x as u16)).collect()),
        D::Uint32 => {
            check_len("uint64_data", t.uint64_data.len(), count, t)?;
            let mut out = Vec::with_capacity(count);
            for &x in &t.uint64_data {
                if x > u32::MAX as u64 {
                    return issue(format!("uint64_data value {x} is out of range for UINT32"));
                }
                out.push(x as i64);
            }
            TensorValues::I64(out)
        }
        D::Uint64 => {
            check_len("uint64_data", t.uint64_data.len(), count, t)?;
            TensorValues::I64(u64s_to_i64(&t.uint64_data)?)
        }
        other => return issue(format!("unsupported element type {}", other.as_str_name())),
    })
}

fn u64s_to_i64(v: &[u64]) -> Res<Vec<i64>> {
    let mut out = Vec::with_capacity(v.len());
    for &x in v {
        match i64::try_from(x) {
            Ok(i) => out.push(i),
            Err(_) => return issue(format!("UINT64 value {x} does not fit in INT64")),
        }
    }
    Ok(out)
}

fn le_chunks<const N: usize>(bytes: &[u8]) -> impl Iterator<Item = [u8; N]> + '_ {
    bytes.chunks_exact(N).map(|c| {
        let mut a = [0u8; N];
        a.copy_from_slice(c);
        a
    })
}

/// Little-endian bytes → values. The caller has checked the byte length.
fn from_raw(dtype: DataType, b: &[u8]) -> Res<TensorValues> {
    use DataType as D;
    Ok(match dtype {
        D::Float => TensorValues::F32(le_chunks::<4>(b).map(f32::from_le_bytes).collect()),
        D::Double => TensorValues::F64(le_chunks::<8>(b).map(f64::from_le_bytes).collect()),
        D::Int64 => TensorValues::I64(le_chunks::<8>(b).map(i64::from_le_bytes).collect()),
        D::Int32 => TensorValues::I32(le_chunks::<4>(b).map(i32::from_le_bytes).collect()),
        D::Uint32 => TensorValues::I64(
            le_chunks::<4>(b)
                .map(|a| u32::from_le_bytes(a) as i64)
                .collect(),
        ),
        D::Uint64 => {
            let v: Vec<u64> = le_chunks::<8>(b).map(u64::from_le_bytes).collect();
            TensorValues::I64(u64s_to_i64(&v)?)
        }
        D::Int16 => TensorValues::I32(
            le_chunks::<2>(b)
                .map(|a| i16::from_le_bytes(a) as i32)
                .collect(),
        ),
        D::Uint16 => TensorValues::I32(
            le_chunks::<2>(b)
                .map(|a| u16::from_le_bytes(a) as i32)
                .collect(),
        ),
        D::Float16 => TensorValues::F32(
            le_chunks::<2>(b)
                .map(|a| f16_to_f32(u16::from_le_bytes(a)))
                .collect(),
        ),
        D::Bfloat16 => TensorValues::F32(
            le_chunks::<2>(b)
                .map(|a| bf16_to_f32(u16::from_le_bytes(a)))
                .collect(),
        ),
        D::Int8 => TensorValues::I32(b.iter().map(|x| *x as i8 as i32).collect()),
        D::Uint8 => TensorValues::U8(b.to_vec()),
        D::Bool => TensorValues::Bool(b.iter().map(|x| *x != 0).collect()),
        other => return issue(format!("unsupported element type {}", other.as_str_name())),
    })
}

/// IEEE 754 binary16 → f32, exact (including subnormals, infinities and NaN).
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let man = (h & 0x3ff) as u32;
    let bits = match (exp, man) {
        (0, 0) => sign,
        (0, m) => {
            // Subnormal half: value = m * 2^-24; normalise into an f32.
            let mut e: i32 = -14;
            let mut m = m;
            while m & 0x400 == 0 {
                m <<= 1;
                e -= 1;
            }
            let m = m & 0x3ff;
            sign | (((e + 127) as u32) << 23) | (m << 13)
        }
        (0x1f, 0) => sign | 0x7f80_0000,
        (0x1f, m) => sign | 0x7f80_0000 | (m << 13) | 0x0040_0000,
        (e, m) => sign | ((e + 127 - 15) << 23) | (m << 13),
    };
    f32::from_bits(bits)
}

/// bfloat16 → f32 (bfloat16 is the top half of an f32).
pub fn bf16_to_f32(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

/// Reads `nbytes` of external data for `t`, after checking that the location stays inside the
/// model's folder and that offset/length fit the file.
fn read_external(t: &pb::TensorProto, ctx: TensorContext<'_>, nbytes: usize) -> Res<Vec<u8>> {
    let mut location = None;
    let mut offset: u64 = 0;
    let mut length: Option<u64> = None;
    for kv in &t.external_data {
        match kv.key.as_str() {
            "location" => location = Some(kv.value.as_str()),
            "offset" => match kv.value.trim().parse::<u64>() {
                Ok(v) => offset = v,
                Err(_) => {
                    return issue(format!(
                        "external data offset '{}' is not a non-negative integer",
                        kv.value
                    ))
                }
            },
            "length" => match kv.value.trim().parse::<u64>() {
                Ok(v) => length = Some(v),
                Err(_) => {
                    return issue(format!(
                        "external data length '{}' is not a non-negative integer",
                        kv.value
                    ))
                }
            },
            // "checksum" and unknown keys do not change what we read.
            _ => {}
        }
    }
    let Some(location) = location.filter(|l| !l.is_empty()) else {
        return issue("external data without a 'location'");
    };
    let Some(base) = ctx.base_dir else {
        return issue(format!(
            "external data file '{location}' cannot be resolved for a model read from memory (no model folder)"
        ));
    };
    let rel = Path::new(location);
    for c in rel.components() {
        match c {
            Component::Normal(_) | Component::CurDir => {}
            Component::ParentDir => {
                return issue(format!("external data location '{location}' escapes the model folder ('..' is not allowed)"))
            }
            Component::RootDir | Component::Prefix(_) => {
                return issue(format!("external data location '{location}' is an absolute path; it must be relative to the model folder"))
            }
        }
    }
    if location.contains('\\') && location.split('\\').any(|p| p == "..") {
        return issue(format!(
            "external data location '{location}' escapes the model folder ('..' is not allowed)"
        ));
    }
    let base_canon = match base.canonicalize() {
        Ok(p) => p,
        Err(e) => {
            return issue(format!(
                "model folder '{}' cannot be resolved: {e}",
                base.display()
            ))
        }
    };
    let joined = base.join(rel);
    let canon = match joined.canonicalize() {
        Ok(p) => p,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return issue(format!(
                "external data file '{}' not found",
                joined.display()
            ))
        }
        Err(e) => return issue(format!("external data file '{}': {e}", joined.display())),
    };
    if !canon.starts_with(&base_canon) {
        return issue(format!(
            "external data location '{location}' resolves to '{}', outside the model folder '{}' (symlink?)",
            canon.display(),
            base_canon.display()
        ));
    }
    let mut file = match File::open(&canon) {
        Ok(f) => f,
        Err(e) => return issue(format!("external data file '{}': {e}", canon.display())),
    };
    let file_len = match file.metadata() {
        Ok(m) if m.is_file() => m.len(),
        Ok(_) => {
            return issue(format!(
                "external data location '{}' is not a regular file",
                canon.display()
            ))
        }
        Err(e) => return issue(format!("external data file '{}': {e}", canon.display())),
    };
    if offset > file_len {
        return issue(format!(
            "external data offset {offset} is past the end of '{}' ({file_len} bytes)",
            canon.display()
        ));
    }
    // Without a length the tensor runs to the end of the file.
    let length = length.unwrap_or(file_len - offset);
    let end = offset.checked_add(length);
    if end.is_none_or(|e| e > file_len) {
        return issue(format!(
            "external data range offset {offset} + length {length} is past the end of '{}' ({file_len} bytes)",
            canon.display()
        ));
    }
    if length != nbytes as u64 {
        return issue(format!(
            "external data length {length} does not match dims {:?} of {} ({nbytes} bytes)",
            t.dims,
            type_name(t.data_type)
        ));
    }
    let mut buf = vec![0u8; nbytes];
    if let Err(e) = file
        .seek(SeekFrom::Start(offset))
        .and_then(|_| file.read_exact(&mut buf))
    {
        return issue(format!(
            "reading external data from '{}': {e}",
            canon.display()
        ));
    }
    Ok(buf)
}

/// Encodes a tensor with `raw_data` (little-endian), as current exporters do.
pub fn encode_tensor(t: &TensorData) -> pb::TensorProto {
    let mut raw = Vec::with_capacity(t.values.len() * 8);
    match &t.values {
        TensorValues::F32(v) => v
            .iter()
            .for_each(|x| raw.extend_from_slice(&x.to_le_bytes())),
        TensorValues::F64(v) => v
            .iter()
            .for_each(|x| raw.extend_from_slice(&x.to_le_bytes())),
        TensorValues::I64(v) => v
            .iter()
            .for_each(|x| raw.extend_from_slice(&x.to_le_bytes())),
        TensorValues::I32(v) => v
            .iter()
            .for_each(|x| raw.extend_from_slice(&x.to_le_bytes())),
        TensorValues::Bool(v) => raw.extend(v.iter().map(|b| *b as u8)),
        TensorValues::U8(v) => raw.extend_from_slice(v),
    }
    pb::TensorProto {
        dims: t.dims.iter().map(|d| *d as i64).collect(),
        data_type: elem_type_code(values_elem_type(&t.values)),
        name: t.name.clone(),
        raw_data: raw,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_conversion_matches_known_values() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x7bff), 65504.0);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert_eq!(f16_to_f32(0x03ff), 1023.0 * 2f32.powi(-24));
        assert_eq!(f16_to_f32(0x7c00), f32::INFINITY);
        assert_eq!(f16_to_f32(0xfc00), f32::NEG_INFINITY);
        assert!(f16_to_f32(0x7e00).is_nan());
        assert_eq!(f16_to_f32(0x8000).to_bits(), (-0.0f32).to_bits());
        assert_eq!(f16_to_f32(0x3555), 0.333_251_95);
        assert_eq!(bf16_to_f32(0x3f80), 1.0);
        assert_eq!(bf16_to_f32(0xc040), -3.0);
    }

    #[test]
    fn dims_overflow_and_negative_are_refused() {
        assert!(checked_dims(&[i64::MAX, i64::MAX]).is_err());
        assert!(checked_dims(&[2, -1]).is_err());
        assert_eq!(checked_dims(&[]).ok().map(|d| d.1), Some(1));
        assert_eq!(checked_dims(&[3, 0, 5]).ok().map(|d| d.1), Some(0));
    }
}
