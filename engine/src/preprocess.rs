//! Image files → input tensors, with the torchvision ImageNet evaluation recipe.
//!
//! [`Preprocess::Imagenet`] does what `torchvision.transforms` does for ImageNet evaluation on a
//! PIL image:
//!
//! ```text
//! Resize(s)  →  CenterCrop((H, W))  →  ToTensor()  →  Normalize(mean, std)
//! ```
//!
//! with `(H, W)` the model's input size and `s = ⌊max(H, W) · 256 / 224⌋` (256 for a 224
//! input; 36 for a 32 input; 341 for a 299 input, as timm's `crop_pct = 0.875`). Step by step:
//!
//! 1. **Decode** (PNG or JPEG) and convert to 8-bit RGB: grey images are replicated to three
//!    channels and alpha is dropped (no compositing), as PIL's `convert("RGB")`.
//! 2. **Resize** so the shorter side is `s`; the longer side becomes `⌊s · long / short⌋`
//!    (torchvision truncates). An image already that size is left untouched. The resampling is
//!    **PIL's bilinear filter, bit for bit** ([`resize_bilinear`]): a triangle filter whose
//!    support grows with the downscaling factor (so downscaling *is* antialiased, as PIL and
//!    torchvision's `antialias=True` do), applied horizontally then vertically with PIL's
//!    22-bit fixed-point weights and rounding to 8 bits between the passes. It is *not*
//!    torchvision's tensor path (float interpolation), which differs by a level here and there.
//! 3. **Centre-crop** to `(H, W)`, with torchvision's offsets `round((size − crop) / 2)`
//!    where Python's `round` takes halves to even ([`center_crop`]).
//! 4. **Scale** to [0, 1] (`v / 255` in f32) and **normalise** per channel with
//!    [`IMAGENET_MEAN`] and [`IMAGENET_STD`]: `(x − mean) / std` in f32, the same operations
//!    torchvision performs, so the results are identical, not just close.
//! 5. **Lay out** as `[1, 3, H, W]` (NCHW) or `[1, H, W, 3]` (NHWC), whichever the model's
//!    input declares ([`ImageInput::for_input`]).
//!
//! [`Preprocess::None`] feeds the decoded pixels as they are (f32 values 0–255, no resizing, no
//! scaling): the image must already have the input's size.
//!
//! `scripts/make_image_fixture.py` recomputes the recipe with PIL and torchvision for the
//! committed test images; `cli/tests/image_input.rs` checks the two agree.
//!
//! ```
//! use engine::preprocess::{self, ImageInput, Layout, Preprocess};
//!
//! // A 300×200 test image with a horizontal gradient.
//! let img = engine::image::RgbImage::from_fn(300, 200, |x, _y| engine::image::Rgb([x as u8, 0, 255]));
//! let input = ImageInput { height: 224, width: 224, layout: Layout::Nchw };
//! let t = preprocess::image_to_tensor(&img, input, Preprocess::Imagenet)?;
//! assert_eq!(t.shape(), &[1, 3, 224, 224]);
//! // The blue channel is 255 everywhere: (1 − 0.406) / 0.225.
//! let x = t.as_f32().unwrap();
//! assert!((x[[0, 2, 100, 100]] - (1.0 - 0.406) / 0.225).abs() < 1e-5);
//! # Ok::<(), engine::Error>(())
//! ```

use std::path::Path;

use image::{Rgb, RgbImage};
use ndarray::{Array4, ArrayD};

use crate::error::{Error, Result};
use crate::ir::{Dim, ValueInfo};
use crate::tensor::Tensor;

/// ImageNet per-channel mean (R, G, B) of pixels scaled to [0, 1].
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet per-channel standard deviation (R, G, B) of pixels scaled to [0, 1].
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Which preprocessing turns an image into the model's input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Preprocess {
    /// torchvision's ImageNet evaluation recipe (see the [module docs](self)).
    #[default]
    Imagenet,
    /// Pixels as f32 values 0–255, no resizing or normalisation; the image must already have
    /// the model's input size.
    None,
}

/// Where the channel axis is in a 4-D image input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Layout {
    /// `[N, C, H, W]` (PyTorch and most ONNX exports).
    #[default]
    Nchw,
    /// `[N, H, W, C]` (TensorFlow/Keras exports).
    Nhwc,
}

/// The size and layout of the tensor an image becomes (batch 1, 3 channels).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageInput {
    /// Rows of the input tensor.
    pub height: usize,
    /// Columns of the input tensor.
    pub width: usize,
    /// Channel-first or channel-last.
    pub layout: Layout,
}

impl ImageInput {
    /// Reads the size and layout from a concrete input shape: `[1, 3, H, W]` is NCHW,
    /// `[1, H, W, 3]` is NHWC (a leading batch other than 1 is refused: one image is one batch
    /// entry). `name` labels the errors.
    pub fn from_shape(name: &str, shape: &[usize]) -> Result<ImageInput> {
        let dims: Vec<Option<usize>> = shape.iter().map(|&d| Some(d)).collect();
        Self::from_dims(name, &dims)
    }

    /// Reads the size and layout from a model input's declared shape. A symbolic batch
    /// dimension is fine (an image is batch 1); symbolic height or width is refused, since
    /// the preprocessing needs the size to crop to (give it with
    /// [`SessionOptions::input_shapes`](crate::SessionOptions::input_shapes) and
    /// [`ImageInput::from_shape`]).
    pub fn for_input(info: &ValueInfo) -> Result<ImageInput> {
        let Some(shape) = &info.shape else {
            return Err(Error::Input {
                name: info.name.clone(),
                message: "the model does not declare this input's shape; an image input needs [N, 3, H, W] or [N, H, W, 3] (give it with --input-shape)".into(),
            });
        };
        let dims: Vec<Option<usize>> = shape
            .iter()
            .map(|d| match d {
                Dim::Fixed(n) => Some(*n),
                Dim::Symbol(_) => None,
            })
            .collect();
        if info.dtype.is_some_and(|d| d != crate::DType::F32) {
            return Err(Error::Input {
                name: info.name.clone(),
                message: format!(
                    "an image becomes a float32 tensor, but this input is {}",
                    info.dtype.map_or("unknown".into(), |d| d.to_string())
                ),
            });
        }
        Self::from_dims(&info.name, &dims)
    }

    fn from_dims(name: &str, dims: &[Option<usize>]) -> Result<ImageInput> {
        let err = |message: String| Error::Input {
            name: name.to_string(),
            message,
        };
        let show: Vec<String> = dims
            .iter()
            .map(|d| d.map_or("?".to_string(), |n| n.to_string()))
            .collect();
        let show = format!("[{}]", show.join(", "));
        if dims.len() != 4 {
            return Err(err(format!(
                "an image input needs a 4-D shape [N, 3, H, W] or [N, H, W, 3], the model's is {show}"
            )));
        }
        if dims[0].is_some_and(|n| n != 1) {
            return Err(err(format!(
                "an image is one batch entry, but this input's batch is fixed to {show}"
            )));
        }
        let (layout, h, w) = if dims[1] == Some(3) {
            (Layout::Nchw, dims[2], dims[3])
        } else if dims[3] == Some(3) {
            (Layout::Nhwc, dims[1], dims[2])
        } else {
            return Err(err(format!(
                "an image input needs 3 channels ([N, 3, H, W] or [N, H, W, 3]), the model's shape is {show}"
            )));
        };
        match (h, w) {
            (Some(height), Some(width)) if height > 0 && width > 0 => Ok(ImageInput {
                height,
                width,
                layout,
            }),
            _ => Err(err(format!(
                "the input's height and width are not fixed ({show}); give them with --input-shape {name}=1x3xHxW"
            ))),
        }
    }

    /// The tensor shape this input takes: `[1, 3, H, W]` or `[1, H, W, 3]`.
    pub fn shape(&self) -> [usize; 4] {
        match self.layout {
            Layout::Nchw => [1, 3, self.height, self.width],
            Layout::Nhwc => [1, self.height, self.width, 3],
        }
    }

    /// The shorter side the image is resized to before cropping: `⌊max(H, W) · 256 / 224⌋`.
    pub fn resize_short_side(&self) -> usize {
        self.height.max(self.width) * 256 / 224
    }
}

fn image_err(path: &str, message: impl Into<String>) -> Error {
    Error::Image {
        path: path.to_string(),
        message: message.into(),
    }
}

/// Reads and decodes a PNG or JPEG file as 8-bit RGB. Files that are not images (or are
/// truncated, empty, or larger than the `image` crate's default decoding limits) give
/// [`Error::Image`] naming the file.
pub fn load_image(path: impl AsRef<Path>) -> Result<RgbImage> {
    let path = path.as_ref();
    let label = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| image_err(&label, format!("cannot read: {e}")))?;
    decode_image(&bytes, &label)
}

/// Decodes PNG or JPEG bytes as 8-bit RGB; `label` names the image in errors.
pub fn decode_image(bytes: &[u8], label: &str) -> Result<RgbImage> {
    if bytes.is_empty() {
        return Err(image_err(
            label,
            "the file is empty (expected a PNG or JPEG image)",
        ));
    }
    let format = image::guess_format(bytes).map_err(|_| {
        image_err(
            label,
            "not a PNG or JPEG image (unrecognised file signature)",
        )
    })?;
    if !matches!(format, image::ImageFormat::Png | image::ImageFormat::Jpeg) {
        return Err(image_err(
            label,
            format!("{format:?} images are not supported (use PNG or JPEG)"),
        ));
    }
    let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes));
    reader.set_format(format);
    let img = reader
        .decode()
        .map_err(|e| image_err(label, format!("cannot decode the {format:?} image: {e}")))?;
    if img.width() == 0 || img.height() == 0 {
        return Err(image_err(label, "the image has no pixels"));
    }
    Ok(img.to_rgb8())
}

/// PIL's fixed-point precision for 8-bit resampling (`PRECISION_BITS` in Pillow's
/// `Resample.c`): 32 bits minus 8 for the pixel value minus 2 of headroom.
const PRECISION_BITS: u32 = 22;

/// Per-output-pixel source windows and fixed-point weights along one axis.
struct Coeffs {
    /// `(first source index, count)` per output index.
    bounds: Vec<(usize, usize)>,
    /// `ksize` weights per output index (zero past `count`).
    weights: Vec<i32>,
    ksize: usize,
}

/// PIL's `precompute_coeffs` + `normalize_coeffs_8bpc` for the bilinear (triangle) filter of
/// support 1: when shrinking, the filter is stretched by the scale factor, which is what makes
/// PIL's downscaling antialiased.
fn coeffs(in_size: usize, out_size: usize) -> Coeffs {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let mut bounds = Vec::with_capacity(out_size);
    let mut weights = vec![0i32; out_size * ksize];
    let mut k = vec![0f64; ksize];
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        let ss = 1.0 / filterscale;
        // `as` truncates toward zero, like C's (int) cast.
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
        let count = xmax.saturating_sub(xmin);
        let mut total = 0.0;
        for (x, kx) in k.iter_mut().enumerate().take(count) {
            let t = ((x + xmin) as f64 - center + 0.5) * ss;
            let w = (1.0 - t.abs()).max(0.0);
            *kx = w;
            total += w;
        }
        for (x, &kx) in k.iter().enumerate().take(count) {
            let w = if total != 0.0 { kx / total } else { kx };
            let fixed = w * f64::from(1u32 << PRECISION_BITS);
            weights[xx * ksize + x] = if w < 0.0 {
                (fixed - 0.5) as i32
            } else {
                (fixed + 0.5) as i32
            };
        }
        bounds.push((xmin, count));
    }
    Coeffs {
        bounds,
        weights,
        ksize,
    }
}

/// PIL's `clip8`: rounds (the accumulator starts at one half) and saturates to 0–255.
fn clip8(acc: i64) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Resizes with PIL's `Image.resize(size, Image.BILINEAR)` algorithm, bit for bit on 8-bit RGB
/// (what torchvision's `Resize` does to a PIL image): separable triangle filter, horizontal
/// pass first, 22-bit fixed-point weights, rounding to 8 bits after each pass. Shrinking
/// widens the filter by the scale factor, so it averages every source pixel it covers
/// (antialiasing), unlike a plain two-tap bilinear interpolation. Same-size input is returned
/// as a copy. `width` and `height` must be positive.
pub fn resize_bilinear(img: &RgbImage, width: u32, height: u32) -> RgbImage {
    let (in_w, in_h) = (img.width() as usize, img.height() as usize);
    let (out_w, out_h) = (width.max(1) as usize, height.max(1) as usize);
    let half = 1i64 << (PRECISION_BITS - 1);
    let src = img.as_raw();
    // Horizontal pass: in_h rows of out_w pixels.
    let horizontal: Vec<u8> = if out_w != in_w {
        let c = coeffs(in_w, out_w);
        let mut out = vec![0u8; in_h * out_w * 3];
        for y in 0..in_h {
            let row = &src[y * in_w * 3..(y + 1) * in_w * 3];
            for (xx, &(xmin, count)) in c.bounds.iter().enumerate() {
                let k = &c.weights[xx * c.ksize..xx * c.ksize + count];
                let mut acc = [half; 3];
                for (i, &w) in k.iter().enumerate() {
                    let p = &row[(xmin + i) * 3..(xmin + i) * 3 + 3];
                    for ch in 0..3 {
                        acc[ch] += i64::from(p[ch]) * i64::from(w);
                    }
                }
                for ch in 0..3 {
                    out[(y * out_w + xx) * 3 + ch] = clip8(acc[ch]);
                }
            }
        }
        out
    } else {
        src.to_vec()
    };
    // Vertical pass: out_h rows of out_w pixels.
    let data = if out_h != in_h {
        let c = coeffs(in_h, out_h);
        let mut out = vec![0u8; out_h * out_w * 3];
        for (yy, &(ymin, count)) in c.bounds.iter().enumerate() {
            let k = &c.weights[yy * c.ksize..yy * c.ksize + count];
            for x in 0..out_w {
                let mut acc = [half; 3];
                for (i, &w) in k.iter().enumerate() {
                    let at = ((ymin + i) * out_w + x) * 3;
                    for ch in 0..3 {
                        acc[ch] += i64::from(horizontal[at + ch]) * i64::from(w);
                    }
                }
                for ch in 0..3 {
                    out[(yy * out_w + x) * 3 + ch] = clip8(acc[ch]);
                }
            }
        }
        out
    } else {
        horizontal
    };
    RgbImage::from_fn(out_w as u32, out_h as u32, |x, y| {
        let at = (y as usize * out_w + x as usize) * 3;
        Rgb([data[at], data[at + 1], data[at + 2]])
    })
}

/// The size torchvision's `Resize(short)` gives a `width × height` image: the shorter side
/// becomes `short`, the longer `⌊short · long / shorter⌋`.
pub fn resized_size(width: u32, height: u32, short: u32) -> (u32, u32) {
    let scaled = |long: u32, shorter: u32| {
        (u64::from(short) * u64::from(long) / u64::from(shorter.max(1))) as u32
    };
    if width <= height {
        (short, scaled(height, width))
    } else {
        (scaled(width, height), short)
    }
}

/// torchvision's `CenterCrop((height, width))`: the window starts at
/// `round((size − crop) / 2)` on each axis, Python's `round` taking halves to even. Refuses a
/// crop larger than the image (torchvision would pad; the ImageNet recipe never needs to).
pub fn center_crop(img: &RgbImage, width: u32, height: u32) -> Result<RgbImage> {
    if width > img.width() || height > img.height() {
        return Err(image_err(
            "image",
            format!(
                "cannot centre-crop {}x{} out of a {}x{} image",
                width,
                height,
                img.width(),
                img.height()
            ),
        ));
    }
    let offset = |size: u32, crop: u32| (f64::from(size - crop) / 2.0).round_ties_even() as u32;
    let (left, top) = (offset(img.width(), width), offset(img.height(), height));
    Ok(image::imageops::crop_imm(img, left, top, width, height).to_image())
}

/// Turns a decoded image into the input tensor of `input`'s size and layout (see the
/// [module docs](self) for the recipe). With [`Preprocess::None`] an image whose size differs
/// from the input's gives [`Error::Image`].
pub fn image_to_tensor(
    img: &RgbImage,
    input: ImageInput,
    preprocess: Preprocess,
) -> Result<Tensor> {
    let (w, h) = (input.width as u32, input.height as u32);
    let prepared;
    let pixels: &RgbImage = match preprocess {
        Preprocess::None => {
            if img.width() != w || img.height() != h {
                return Err(image_err(
                    "image",
                    format!(
                        "the image is {}x{} (width x height) but the model's input is {}x{}; with --preprocess none it must match exactly (use --preprocess imagenet to resize and crop)",
                        img.width(),
                        img.height(),
                        w,
                        h
                    ),
                ));
            }
            img
        }
        Preprocess::Imagenet => {
            let short = input.resize_short_side() as u32;
            let (rw, rh) = resized_size(img.width(), img.height(), short);
            let resized = if (rw, rh) == (img.width(), img.height()) {
                img.clone()
            } else {
                resize_bilinear(img, rw, rh)
            };
            prepared = center_crop(&resized, w, h)?;
            &prepared
        }
    };
    let value = |v: u8, ch: usize| -> f32 {
        match preprocess {
            Preprocess::None => f32::from(v),
            Preprocess::Imagenet => (f32::from(v) / 255.0 - IMAGENET_MEAN[ch]) / IMAGENET_STD[ch],
        }
    };
    let (hh, ww) = (input.height, input.width);
    let array: Array4<f32> = match input.layout {
        Layout::Nchw => Array4::from_shape_fn((1, 3, hh, ww), |(_, c, y, x)| {
            value(pixels.get_pixel(x as u32, y as u32)[c], c)
        }),
        Layout::Nhwc => Array4::from_shape_fn((1, hh, ww, 3), |(_, y, x, c)| {
            value(pixels.get_pixel(x as u32, y as u32)[c], c)
        }),
    };
    let array: ArrayD<f32> = array.into_dyn();
    Ok(Tensor::F32(array))
}

/// [`load_image`] then [`image_to_tensor`], with errors naming the file.
pub fn load_image_tensor(
    path: impl AsRef<Path>,
    input: ImageInput,
    preprocess: Preprocess,
) -> Result<Tensor> {
    let path = path.as_ref();
    let img = load_image(path)?;
    image_to_tensor(&img, input, preprocess).map_err(|e| match e {
        Error::Image { message, .. } => image_err(&path.display().to_string(), message),
        other => other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gradient(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            Rgb([
                (x * 7 % 256) as u8,
                (y * 13 % 256) as u8,
                ((x * y) % 251) as u8,
            ])
        })
    }

    #[test]
    fn coefficients_sum_to_one_in_fixed_point() {
        for (i, o) in [(100, 36), (36, 100), (7, 3), (48, 37)] {
            let c = coeffs(i, o);
            for (xx, &(xmin, count)) in c.bounds.iter().enumerate() {
                assert!(xmin + count <= i);
                let sum: i64 = c.weights[xx * c.ksize..xx * c.ksize + count]
                    .iter()
                    .map(|&w| i64::from(w))
                    .sum();
                // Each weight rounds by at most one half: the sum is within count/2 of 2^22.
                assert!(
                    (sum - (1 << PRECISION_BITS)).abs() <= count as i64,
                    "{i}->{o} {xx}: {sum}"
                );
            }
        }
    }

    #[test]
    fn shrinking_by_an_integer_factor_averages_blocks() {
        // 2x shrink: PIL's stretched triangle covers 4 source pixels with weights 1,3,3,1 /8
        // (the centre is between two pixels), so a constant image stays constant and a
        // two-valued checkerboard of columns averages to the midpoint.
        let img = RgbImage::from_fn(8, 2, |x, _| {
            if x % 2 == 0 {
                Rgb([0, 0, 0])
            } else {
                Rgb([200, 200, 200])
            }
        });
        let out = resize_bilinear(&img, 4, 2);
        for x in 1..3 {
            assert_eq!(out.get_pixel(x, 0)[0], 100, "column {x}");
        }
        let flat = RgbImage::from_pixel(10, 9, Rgb([17, 130, 250]));
        let out = resize_bilinear(&flat, 3, 4);
        assert!(out.pixels().all(|p| *p == Rgb([17, 130, 250])));
    }

    #[test]
    fn same_size_resize_is_a_copy_and_sizes_follow_torchvision() {
        let img = gradient(12, 9);
        assert_eq!(resize_bilinear(&img, 12, 9), img);
        assert_eq!(resized_size(100, 80, 36), (45, 36));
        assert_eq!(resized_size(80, 100, 36), (36, 45));
        assert_eq!(resized_size(42, 40, 36), (37, 36));
        assert_eq!(resized_size(640, 480, 256), (341, 256));
    }

    #[test]
    fn center_crop_rounds_halves_to_even() {
        // 37 - 32 = 5: Python's round(2.5) = 2, not 3.
        let img = gradient(37, 36);
        let c = center_crop(&img, 32, 32).unwrap();
        assert_eq!(c.get_pixel(0, 0), img.get_pixel(2, 2));
        // 39 - 32 = 7: round(3.5) = 4.
        let img = gradient(39, 32);
        let c = center_crop(&img, 32, 32).unwrap();
        assert_eq!(c.get_pixel(0, 0), img.get_pixel(4, 0));
        assert!(center_crop(&img, 40, 10).is_err());
    }

    #[test]
    fn layouts_and_normalisation() {
        let img = gradient(36, 36);
        let nchw = ImageInput {
            height: 32,
            width: 32,
            layout: Layout::Nchw,
        };
        let nhwc = ImageInput {
            layout: Layout::Nhwc,
            ..nchw
        };
        assert_eq!(nchw.resize_short_side(), 36);
        let a = image_to_tensor(&img, nchw, Preprocess::Imagenet).unwrap();
        let b = image_to_tensor(&img, nhwc, Preprocess::Imagenet).unwrap();
        assert_eq!(a.shape(), &[1, 3, 32, 32]);
        assert_eq!(b.shape(), &[1, 32, 32, 3]);
        let (a, b) = (a.as_f32().unwrap(), b.as_f32().unwrap());
        // 36x36 is already the resize target: untouched, then cropped at offset 2.
        for (c, y, x) in [(0, 0, 0), (1, 5, 7), (2, 31, 30)] {
            let v = img.get_pixel(x as u32 + 2, y as u32 + 2)[c];
            let want = (v as f32 / 255.0 - IMAGENET_MEAN[c]) / IMAGENET_STD[c];
            assert_eq!(a[[0, c, y, x]], want);
            assert_eq!(b[[0, y, x, c]], want);
        }
        let raw = image_to_tensor(&gradient(32, 32), nchw, Preprocess::None).unwrap();
        assert_eq!(raw.as_f32().unwrap()[[0, 1, 3, 0]], 39.0);
        let err = image_to_tensor(&img, nchw, Preprocess::None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("36x36") && err.contains("32x32"), "{err}");
    }

    #[test]
    fn input_shapes_are_recognised() {
        let nchw = ImageInput::from_shape("x", &[1, 3, 224, 200]).unwrap();
        assert_eq!(
            (nchw.height, nchw.width, nchw.layout),
            (224, 200, Layout::Nchw)
        );
        assert_eq!(nchw.resize_short_side(), 256);
        let nhwc = ImageInput::from_shape("x", &[1, 299, 299, 3]).unwrap();
        assert_eq!((nhwc.layout, nhwc.resize_short_side()), (Layout::Nhwc, 341));
        for bad in [&[1, 1, 28, 28][..], &[2, 3, 32, 32], &[3, 32, 32]] {
            assert!(ImageInput::from_shape("x", bad).is_err(), "{bad:?}");
        }
        let info = ValueInfo {
            name: "x".into(),
            dtype: Some(crate::DType::F32),
            shape: Some(vec![
                Dim::Symbol("batch".into()),
                Dim::Fixed(3),
                Dim::Fixed(32),
                Dim::Fixed(32),
            ]),
        };
        assert_eq!(
            ImageInput::for_input(&info).unwrap().shape(),
            [1, 3, 32, 32]
        );
        let info = ValueInfo {
            shape: Some(vec![
                Dim::Fixed(1),
                Dim::Fixed(3),
                Dim::Symbol("h".into()),
                Dim::Fixed(32),
            ]),
            ..info
        };
        let err = ImageInput::for_input(&info).unwrap_err().to_string();
        assert!(err.contains("--input-shape"), "{err}");
    }

    #[test]
    fn non_images_are_refused_with_the_file_name() {
        let err = decode_image(b"hello, not a picture", "notes.txt")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("notes.txt: not a PNG or JPEG"), "{err}");
        let err = decode_image(b"", "empty.png").unwrap_err().to_string();
        assert!(err.contains("empty"), "{err}");
        // A PNG signature followed by garbage.
        let err = decode_image(b"\x89PNG\r\n\x1a\n garbage", "broken.png")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("broken.png: cannot decode"), "{err}");
    }
}
