//! Classify an image with a model: decode, preprocess as torchvision's ImageNet recipe, run,
//! and print the five most likely classes (softmax of the first output).
//!
//! ```text
//! cargo run --release -p engine --example classify -- MODEL IMAGE [LABELS.txt]
//! cargo run --release -p engine --example classify -- resnet50.onnx cat.jpg imagenet_classes.txt
//! # with the committed CIFAR fixture (untrained weights, so the classes mean nothing):
//! cargo run --release -p engine --example classify -- \
//!     engine/tests/fixtures/resnet_folded/model.onnx engine/tests/fixtures/image/photo.jpg \
//!     engine/examples/cifar10_labels.txt
//! ```
//!
//! MODEL is an `.onnx` file or a `zoo:` spec (the zoo's weights are seeded random ones: the
//! classes it picks are meaningless, but everything runs).

use std::process::ExitCode;

use engine::preprocess::{self, ImageInput, Preprocess};
use engine::{Model, Session, SessionOptions};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !(2..=3).contains(&args.len()) {
        eprintln!("usage: classify MODEL IMAGE [LABELS.txt]");
        return ExitCode::from(2);
    }
    match classify(&args[0], &args[1], args.get(2).map(String::as_str)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

fn classify(model_path: &str, image: &str, labels: Option<&str>) -> engine::Result<()> {
    let model = Model::load(model_path)?;
    let Some(input) = model.inputs().first().map(|v| (*v).clone()) else {
        return Err(engine::Error::Model(format!(
            "{model_path}: the model has no inputs"
        )));
    };
    // The input's declared shape says the size to crop to and whether it is NCHW or NHWC.
    let target = ImageInput::for_input(&input)?;
    let tensor = preprocess::load_image_tensor(image, target, Preprocess::Imagenet)?;

    let options = SessionOptions {
        input_shapes: [(input.name.clone(), target.shape().to_vec())].into(),
        ..Default::default()
    };
    let mut session = Session::new(&model, &options)?;
    let outputs = session.run(&[(input.name.as_str(), tensor)])?;
    let (name, scores) = &outputs[0];
    let scores = scores.to_f64_vec();

    // Softmax (shifted by the maximum for stability) turns logits into probabilities.
    let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let exp: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
    let sum: f64 = exp.iter().sum();
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));

    let names: Vec<String> = match labels {
        Some(path) => std::fs::read_to_string(path)?
            .lines()
            .map(str::to_string)
            .collect(),
        None => Vec::new(),
    };
    println!(
        "{image} -> {} ({name}, {} classes)",
        model.source,
        scores.len()
    );
    for &i in order.iter().take(5) {
        let label = names.get(i).map_or("", String::as_str);
        println!("  {:6.2}%  {i:4} {label}", 100.0 * exp[i] / sum);
    }
    Ok(())
}
