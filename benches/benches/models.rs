//! Whole-model benchmarks: one inference of each full-size model the peer comparison uses
//! (torchvision exports in `.cache/models/`, written by `scripts/check_full_models.py`), batch
//! 1, on `MODEL_THREADS` threads (default 1). Models whose file is missing are skipped with a
//! note, so the bench runs on a fresh clone too (then it only benches the built-in ResNet-50
//! from the zoo, whose weights are seeded random values); the built-in CIFAR ResNet-20 always
//! runs, as a small model. Run:
//! `cargo bench -p engine-benches --bench models` (add `-- resnet50` to filter).

use criterion::{criterion_group, criterion_main, Criterion};
use engine::session::{Session, SessionOptions};
use std::path::PathBuf;
use std::time::Duration;

const MODELS: &[&str] = &["resnet50", "resnext50_32x4d", "inception_v3"];

fn threads() -> usize {
    std::env::var("MODEL_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&t| t > 0)
        .unwrap_or(1)
}

/// The workspace's `.cache/models` (benches run with the package directory as cwd).
fn cache_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(".cache")
        .join("models")
}

fn bench_model(c: &mut Criterion, label: &str, model: &engine::Model) {
    let options = SessionOptions {
        threads: threads(),
        batch: Some(1),
        ..Default::default()
    };
    let mut session = Session::new(model, &options).expect("session");
    let info = session
        .input_infos()
        .first()
        .cloned()
        .expect("the model has an input");
    let shape = info.fixed_shape().expect("fixed input shape at batch 1");
    let input = engine::random::normal_tensor(&shape, 0);
    let mut group = c.benchmark_group(format!("model_t{}", threads()));
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    group.bench_function(label, |b| {
        b.iter(|| {
            session
                .run(&[(info.name.as_str(), input.clone())])
                .expect("run")
        })
    });
    group.finish();
}

fn bench_models(c: &mut Criterion) {
    let mut found = 0;
    for name in MODELS {
        let path = cache_dir().join(format!("{name}.onnx"));
        if !path.exists() {
            eprintln!(
                "skipping {name}: {} not found (run scripts/check_full_models.py)",
                path.display()
            );
            continue;
        }
        let model = engine::Model::load(&path).expect("load model");
        bench_model(c, name, &model);
        found += 1;
    }
    if found == 0 {
        let model = engine::Model::load("zoo:resnet50").expect("built-in ResNet-50");
        bench_model(c, "zoo_resnet50", &model);
    }
    // A small model (~1 ms): its time is as much the hand-over between parallel loops as the
    // kernels, which is where workers that keep polling (`exec/warm_workers.rs`) and work
    // items with worker affinity (`kernels/worker_items.rs`) show at 2 threads.
    let small = engine::Model::load("zoo:resnet20").expect("built-in ResNet-20");
    bench_model(c, "zoo_resnet20", &small);
}

criterion_group!(benches, bench_models);
criterion_main!(benches);
