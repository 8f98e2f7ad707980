//! `engine run MODEL --image FILE [--preprocess imagenet|none] [--labels FILE]` against tensors
//! computed independently by PIL + torchvision (scripts/make_image_fixture.py, committed in
//! engine/tests/fixtures/image/).
//!
//! The fixture models copy their input to an output (`pixels = image * 1`), so the `.npy` the
//! run writes *is* the preprocessed tensor. The engine resizes with PIL's fixed-point bilinear
//! algorithm and normalises with the same f32 operations as torchvision, so PNG inputs must
//! match exactly. JPEG decoders (libjpeg-turbo in PIL, the `image` crate here) may round
//! differently; that case is held to a bound of 3 pixel levels instead.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ndarray::{ArrayD, Axis};
use ndarray_npy::ReadNpyExt;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../engine/tests/fixtures/image")
}

fn engine(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_engine"))
        .args(args)
        .output()
        .expect("the engine binary runs")
}

fn npy(path: &Path) -> ArrayD<f32> {
    let f = File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    ArrayD::<f32>::read_npy(f).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("engine-image-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

/// Runs `model` on `image` and returns the `pixels` output plus stdout.
fn run_image(model: &str, image: &str, extra: &[&str], tag: &str) -> (ArrayD<f32>, String) {
    let dir = temp_dir(tag);
    let (m, i) = (fixtures().join(model), fixtures().join(image));
    let mut args = vec![
        "run",
        m.to_str().expect("utf-8 path"),
        "--image",
        i.to_str().expect("utf-8 path"),
        "-t",
        "1",
        "--output-dir",
        dir.to_str().expect("utf-8 path"),
    ];
    args.extend_from_slice(extra);
    let out = engine(&args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{args:?}: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pixels = npy(&dir.join("pixels.npy"));
    std::fs::remove_dir_all(&dir).ok();
    (pixels, stdout)
}

fn max_diff(a: &ArrayD<f32>, b: &ArrayD<f32>) -> f32 {
    assert_eq!(a.shape(), b.shape());
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()))
}

#[test]
fn imagenet_recipe_matches_torchvision_exactly_on_png() {
    // photo: 96x80 -> 43x36 (antialiased 2.2x shrink); gray: L -> RGB, 42x40 -> 37x36, crop
    // offset round(2.5) = 2; tall: already 36 wide (untouched); rgba: alpha dropped.
    for name in ["photo", "gray", "tall", "rgba"] {
        let (got, _) = run_image("model_nchw.onnx", &format!("{name}.png"), &[], name);
        let want = npy(&fixtures().join(format!("{name}.expected.npy")));
        assert_eq!(got.shape(), &[1, 3, 32, 32], "{name}");
        let d = max_diff(&got, &want);
        assert_eq!(d, 0.0, "{name}: max |engine - torchvision| = {d}");
    }
}

#[test]
fn jpeg_decodes_within_a_few_levels_of_pil() {
    let (got, _) = run_image(
        "model_nchw.onnx",
        "photo.jpg",
        &["--preprocess", "imagenet"],
        "jpg",
    );
    let want = npy(&fixtures().join("photo_jpg.expected.npy"));
    // One pixel level is 1/255/std, at most 1/255/0.224 ≈ 0.0175 after normalisation.
    let d = max_diff(&got, &want);
    assert!(
        d <= 3.0 * 0.0176,
        "max |engine - PIL| = {d} (over 3 levels)"
    );
}

#[test]
fn nhwc_inputs_get_channels_last() {
    let (got, _) = run_image("model_nhwc.onnx", "photo.png", &[], "nhwc");
    let want = npy(&fixtures().join("photo.expected.npy"));
    let want = want
        .permuted_axes(vec![0, 2, 3, 1])
        .as_standard_layout()
        .into_owned();
    assert_eq!(got.shape(), &[1, 32, 32, 3]);
    assert_eq!(max_diff(&got, &want), 0.0);
}

#[test]
fn preprocess_none_feeds_raw_pixels_of_a_right_sized_image() {
    let (got, _) = run_image(
        "model_nchw.onnx",
        "small32.png",
        &["--preprocess", "none"],
        "none",
    );
    let want = npy(&fixtures().join("small32.expected.npy"));
    assert_eq!(max_diff(&got, &want), 0.0);
    assert!(
        got.iter().any(|&v| v > 100.0),
        "raw 0-255 values, not scaled"
    );
}

#[test]
fn labels_name_the_top5() {
    // scores = per-channel means of the preprocessed image; rank them from the torchvision
    // tensor and check the printed order and labels.
    let labels = fixtures().join("labels.txt");
    let (_, stdout) = run_image(
        "model_nchw.onnx",
        "photo.png",
        &["--labels", labels.to_str().expect("utf-8 path")],
        "labels",
    );
    let want = npy(&fixtures().join("photo.expected.npy"));
    let means: Vec<f32> = want
        .mean_axis(Axis(3))
        .and_then(|m| m.mean_axis(Axis(2)))
        .map(|m| m.iter().copied().collect())
        .expect("non-empty");
    let mut order: Vec<usize> = (0..3).collect();
    order.sort_by(|&a, &b| means[b].total_cmp(&means[a]));
    let names = ["red", "green", "blue"];
    let lines: Vec<&str> = stdout
        .lines()
        .filter(|l| l.trim_start().starts_with(['1', '2', '3']))
        .collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    for (rank, (&i, line)) in order.iter().zip(&lines).enumerate() {
        let prefix = format!("{}. {} ({i}): ", rank + 1, names[i]);
        let value = line
            .trim()
            .strip_prefix(&prefix)
            .and_then(|v| v.parse::<f32>().ok());
        // The engine's pooling sums in another order: the printed mean may differ in the 6th decimal.
        assert!(
            value.is_some_and(|v| (v - means[i]).abs() < 1e-5),
            "want {prefix}{}:\n{stdout}",
            means[i]
        );
    }
}

#[test]
fn bad_images_are_clear_usage_errors() {
    let model = fixtures().join("model_nchw.onnx");
    let model = model.to_str().expect("utf-8 path");
    let dir = temp_dir("bad");
    let text = dir.join("notes.png");
    std::fs::write(&text, "this is not an image\n").expect("write");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec![text.display().to_string()], "not a PNG or JPEG image"),
        (
            vec![dir.join("missing.png").display().to_string()],
            "cannot read",
        ),
        (
            vec![
                fixtures().join("photo.png").display().to_string(),
                "--preprocess".into(),
                "none".into(),
            ],
            "the image is 96x80 (width x height) but the model's input is 32x32",
        ),
    ];
    for (extra, message) in cases {
        let mut args = vec!["run", model, "--image"];
        args.extend(extra.iter().map(String::as_str));
        let out = engine(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn run_help_shows_the_image_flags_and_an_example() {
    let out = engine(&["run", "--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--image",
        "--preprocess",
        "--labels",
        "engine run resnet50.onnx --image",
    ] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
    }
}
