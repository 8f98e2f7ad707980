//! `.npy` files ⇄ engine tensors, with the checks a user needs when a file is wrong: the
//! header is validated and the data length checked against the file size before anything is
//! allocated, and dtype mismatches are named.

use std::fs::File;
use std::io::{BufReader, Seek};
use std::path::Path;

use anyhow::{bail, Context, Result};
use engine::Tensor;
use ndarray::ArrayD;
use ndarray_npy::{npy::header::Header, ReadNpyExt, WriteNpyExt};

/// Reads a `.npy` file (C or Fortran order) of float32, float64, int64, int32, bool or uint8.
pub fn read_tensor(path: &Path) -> Result<Tensor> {
    let label = path.display();
    let file = File::open(path).with_context(|| format!("{label}: cannot open .npy file"))?;
    let file_len = file
        .metadata()
        .with_context(|| format!("{label}: cannot stat"))?
        .len();
    let mut reader = BufReader::new(file);
    let header = Header::from_reader(&mut reader)
        .map_err(|e| anyhow::anyhow!("{label}: not a valid .npy file (corrupt header: {e})"))?;
    let header_len = reader.stream_position()?;
    let descr = header.type_descriptor.to_string();
    let descr = descr.trim_matches('\'');
    let item_size: u128 = match descr {
        "<f4" | "<i4" => 4,
        "<f8" | "<i8" => 8,
        "|b1" | "|u1" => 1,
        other => bail!(
            "{label}: unsupported .npy dtype {other} (expected float32 '<f4', float64 '<f8', int64 '<i8', int32 '<i4', bool or uint8)"
        ),
    };
    let elements = header
        .shape
        .iter()
        .try_fold(1u128, |acc, &d| acc.checked_mul(d as u128))
        .ok_or_else(|| anyhow::anyhow!("{label}: shape {:?} overflows", header.shape))?;
    let expected = elements * item_size;
    let available = u128::from(file_len.saturating_sub(header_len));
    if expected != available {
        bail!(
            "{label}: header declares shape {:?} ({} bytes of {descr}) but the file holds {} data bytes",
            header.shape,
            expected,
            available
        );
    }
    reader.rewind()?;
    let ctx = || format!("{label}: cannot read .npy data");
    Ok(match descr {
        "<f4" => Tensor::F32(
            ArrayD::<f32>::read_npy(reader)
                .with_context(ctx)?
                .as_standard_layout()
                .into_owned(),
        ),
        "<f8" => Tensor::F64(
            ArrayD::<f64>::read_npy(reader)
                .with_context(ctx)?
                .as_standard_layout()
                .into_owned(),
        ),
        "<i8" => Tensor::I64(
            ArrayD::<i64>::read_npy(reader)
                .with_context(ctx)?
                .as_standard_layout()
                .into_owned(),
        ),
        "<i4" => Tensor::I32(
            ArrayD::<i32>::read_npy(reader)
                .with_context(ctx)?
                .as_standard_layout()
                .into_owned(),
        ),
        "|b1" => Tensor::Bool(
            ArrayD::<bool>::read_npy(reader)
                .with_context(ctx)?
                .as_standard_layout()
                .into_owned(),
        ),
        _ => Tensor::U8(
            ArrayD::<u8>::read_npy(reader)
                .with_context(ctx)?
                .as_standard_layout()
                .into_owned(),
        ),
    })
}

/// Writes a tensor as a C-order `.npy` file.
pub fn write_tensor(path: &Path, tensor: &Tensor) -> Result<()> {
    let file = File::create(path).with_context(|| format!("{}: cannot create", path.display()))?;
    let writer = std::io::BufWriter::new(file);
    let result = match tensor {
        Tensor::F32(a) => a.write_npy(writer),
        Tensor::F64(a) => a.write_npy(writer),
        Tensor::I64(a) => a.write_npy(writer),
        Tensor::I32(a) => a.write_npy(writer),
        Tensor::Bool(a) => a.write_npy(writer),
        Tensor::U8(a) => a.write_npy(writer),
    };
    result.with_context(|| format!("{}: cannot write .npy", path.display()))
}

/// Replaces every character outside `A–Z a–z 0–9 . _ -` so an output name is a safe file name.
pub fn sanitize_file_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitizes_names() {
        assert_eq!(sanitize_file_name("resnetv1/output:0"), "resnetv1_output_0");
        assert_eq!(sanitize_file_name("a.b-c_d"), "a.b-c_d");
    }

    #[test]
    fn round_trips_and_checks_length() {
        let dir = std::env::temp_dir().join(format!("engine-npy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("x.npy");
        let t = Tensor::from_f32(&[2, 3], vec![1., 2., 3., 4., 5., 6.]).unwrap();
        write_tensor(&p, &t).unwrap();
        assert_eq!(read_tensor(&p).unwrap(), t);
        // Truncate the data: the length check must refuse it before reading.
        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(&p, &bytes[..bytes.len() - 4]).unwrap();
        let err = read_tensor(&p).unwrap_err().to_string();
        assert!(err.contains("data bytes"), "{err}");
        std::fs::write(&p, b"garbage").unwrap();
        let err = read_tensor(&p).unwrap_err().to_string();
        assert!(err.contains("corrupt header"), "{err}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
