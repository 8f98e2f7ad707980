//! Kernel benchmarks: every distinct ResNet-50 convolution shape (batch 1, 224²) through each
//! GEMM the conv can use and, for the stride-1 3×3 ones, Winograd F(2×2) and F(4×4);
//! conv-shaped GEMMs through both crates, and the FC-layer GEMV; Inception-v3's sibling 1×1
//! heads one by one and as one group call. Whole models: `benches/models.rs`.
//!
//! Throughput is reported in elements/s where one element is one FLOP (2 per multiply-add), so
//! criterion's "Gelem/s" reads as GFLOP/s. Run:
//! `cargo bench -p engine-benches --bench kernels` (all, ~3 min on 2 cores), or filter, e.g.
//! `cargo bench -p engine-benches --bench kernels -- conv/l3_3x3`. Threads: `KERNEL_THREADS=2`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use engine::ir::Activation;
use engine::kernels::conv::{conv, conv_scratch_len, ConvGemm, ConvGeometry, PackedConvWeights};
use engine::kernels::gemm::{sgemm, sgemm_crate, GemmBackend};
use engine::kernels::winograd::WinogradTile;
use std::hint::black_box;
use std::time::Duration;

/// (name, occurrences in ResNet-50, in channels, input H=W, out channels, kernel, stride).
const RESNET50_CONVS: &[(&str, usize, usize, usize, usize, usize, usize)] = &[
    ("stem_7x7s2_3_64", 1, 3, 224, 64, 7, 2),
    ("l1_1x1_64_64", 1, 64, 56, 64, 1, 1),
    ("l1_3x3_64", 3, 64, 56, 64, 3, 1),
    ("l1_1x1_64_256", 4, 64, 56, 256, 1, 1),
    ("l1_1x1_256_64", 2, 256, 56, 64, 1, 1),
    ("l2_1x1_256_128", 1, 256, 56, 128, 1, 1),
    ("l2_3x3s2_128", 1, 128, 56, 128, 3, 2),
    ("l2_ds_1x1s2_256_512", 1, 256, 56, 512, 1, 2),
    ("l2_1x1_128_512", 4, 128, 28, 512, 1, 1),
    ("l2_1x1_512_128", 3, 512, 28, 128, 1, 1),
    ("l2_3x3_128", 3, 128, 28, 128, 3, 1),
    ("l3_1x1_512_256", 1, 512, 28, 256, 1, 1),
    ("l3_3x3s2_256", 1, 256, 28, 256, 3, 2),
    ("l3_ds_1x1s2_512_1024", 1, 512, 28, 1024, 1, 2),
    ("l3_1x1_256_1024", 6, 256, 14, 1024, 1, 1),
    ("l3_1x1_1024_256", 5, 1024, 14, 256, 1, 1),
    ("l3_3x3_256", 5, 256, 14, 256, 3, 1),
    ("l4_1x1_1024_512", 1, 1024, 14, 512, 1, 1),
    ("l4_3x3s2_512", 1, 512, 14, 512, 3, 2),
    ("l4_ds_1x1s2_1024_2048", 1, 1024, 14, 2048, 1, 2),
    ("l4_1x1_512_2048", 3, 512, 7, 2048, 1, 1),
    ("l4_1x1_2048_512", 2, 2048, 7, 512, 1, 1),
    ("l4_3x3_512", 2, 512, 7, 512, 3, 1),
];

/// Conv-shaped GEMMs M×K×N (weights × im2col columns).
const GEMM_SHAPES: &[(usize, usize, usize)] = &[
    (64, 147, 12544),
    (64, 576, 3136),
    (128, 1152, 784),
    (256, 2304, 196),
    (512, 4608, 49),
    (256, 64, 3136),
    (2048, 512, 49),
];

fn threads() -> usize {
    std::env::var("KERNEL_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
}

fn pool() -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads())
        .build()
        .expect("rayon pool")
}

fn values(n: usize, seed: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 7 + seed) % 13) as f32 * 0.1 - 0.6)
        .collect()
}

fn bench_convs(c: &mut Criterion) {
    let pool = pool();
    let mut group = c.benchmark_group(format!("conv_t{}", threads()));
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    for &(name, _count, cin, hw, cout, k, s) in RESNET50_CONVS {
        let p = k / 2;
        let g = ConvGeometry::new(
            1,
            cin,
            &[hw, hw],
            cout,
            &[k, k],
            &[s, s],
            &[1, 1],
            &[p, p],
            &[p, p],
            1,
        )
        .expect("valid ResNet-50 geometry");
        let x = values(g.input_len(), 1);
        let w = values(g.weight_len(), 2);
        let bias = values(cout, 3);
        let res = values(g.output_len(), 4);
        group.throughput(Throughput::Elements(2 * g.macs()));
        // im2col/pointwise through each GEMM, plus Winograd where it applies (stride-1 3×3) and
        // the direct kernel.
        // Throughput stays the direct algorithm's FLOPs, so Winograd's Gelem/s is "effective".
        let crate_gemm = ConvGemm::Crate(GemmBackend::Gemm);
        let mut variants = vec![
            ("gemm", crate_gemm, None),
            (
                "matrixmultiply",
                ConvGemm::Crate(GemmBackend::MatrixMultiply),
                None,
            ),
            ("packed", ConvGemm::Packed, None),
        ];
        if g.winograd_applies() {
            variants.push(("winograd_f2", crate_gemm, Some(WinogradTile::F2)));
            variants.push(("winograd_f4", crate_gemm, Some(WinogradTile::F4)));
        }
        let mut packs: Vec<(&str, PackedConvWeights)> = variants
            .into_iter()
            .map(|(label, gemm, wino)| {
                let pw =
                    PackedConvWeights::with_algo(&g, &w, Some(&bias), gemm, wino).expect("pack");
                (label, pw)
            })
            .collect();
        // The direct (implicit-GEMM) kernel wherever it can run, chosen by default or not.
        if engine::kernels::direct_conv::applies(&g) {
            packs.push((
                "direct",
                PackedConvWeights::with_direct(&g, &w, Some(&bias)).expect("pack"),
            ));
        }
        // The direct kernel with its register tile across output channels (the default for
        // ResNet-50's 3×3/2 convs, its stem and its 64-channel 3×3 at 56×56).
        if engine::kernels::direct_channels::applies(&g) {
            packs.push((
                "direct_channels",
                PackedConvWeights::with_direct_channels(&g, &w, Some(&bias)).expect("pack"),
            ));
        }
        // The 1×1 kernels over one image's im2col matrix (the default on maps of at most 64
        // outputs that the direct kernel and Winograd leave to im2col: the 3×3/2 to 7×7).
        if engine::kernels::unfolded_conv::applies(&g) {
            packs.push((
                "unfolded",
                PackedConvWeights::with_unfolded(&g, &w, Some(&bias)).expect("pack"),
            ));
        }
        // The engine's 1×1 kernel (the default for 1×1 convs, strided ones included).
        if engine::kernels::pointwise_conv::applies(&g) {
            packs.push((
                "pointwise",
                PackedConvWeights::with_pointwise(&g, &w, Some(&bias)).expect("pack"),
            ));
        }
        for (label, pw) in packs {
            let mut out = vec![0.0f32; g.output_len()];
            let mut scratch = vec![0.0f32; conv_scratch_len(&g, &pw, threads())];
            group.bench_function(BenchmarkId::new(name, label), |b| {
                b.iter(|| {
                    pool.install(|| {
                        conv(
                            &g,
                            black_box(&x),
                            &pw,
                            Some(&res),
                            Activation::Relu,
                            &mut out,
                            &mut scratch,
                        )
                        .expect("conv")
                    })
                })
            });
        }
    }
    group.finish();
}

fn bench_gemm(c: &mut Criterion) {
    let mut group = c.benchmark_group("gemm_t1");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    for &(m, k, n) in GEMM_SHAPES {
        let a = values(m * k, 1);
        let b = values(k * n, 2);
        let mut out = vec![0.0f32; m * n];
        group.throughput(Throughput::Elements((2 * m * k * n) as u64));
        for backend in GemmBackend::ALL {
            group.bench_function(
                BenchmarkId::new(format!("{m}x{k}x{n}"), backend.name()),
                |bch| {
                    bch.iter(|| {
                        sgemm(
                            backend,
                            m,
                            n,
                            k,
                            black_box(&a),
                            k,
                            &b,
                            n,
                            &mut out,
                            n,
                            false,
                            1,
                        )
                    })
                },
            );
        }
    }
    // Fully connected layer at batch 1: y[1000] = W[1000×2048] · x.
    let (m, k) = (1000, 2048);
    let w = values(m * k, 5);
    let x = values(k, 6);
    let mut y = vec![0.0f32; m];
    group.throughput(Throughput::Elements((2 * m * k) as u64));
    for backend in GemmBackend::ALL {
        group.bench_function(BenchmarkId::new("fc_1000x2048x1", backend.name()), |bch| {
            bch.iter(|| sgemm_crate(backend, m, 1, k, black_box(&w), k, &x, 1, &mut y, 1))
        });
    }
    group.bench_function(BenchmarkId::new("fc_1000x2048x1", "engine_gemv"), |bch| {
        bch.iter(|| {
            sgemm(
                GemmBackend::Gemm,
                m,
                1,
                k,
                black_box(&w),
                k,
                &x,
                1,
                &mut y,
                1,
                false,
                1,
            )
        })
    });
    group.finish();
}

/// (name, in channels, H=W, the sibling heads' out channels): Inception-v3's 1×1 branch heads.
const INCEPTION_SIBLINGS: &[(&str, usize, usize, &[usize])] = &[
    ("mixed_5c_35x35", 256, 35, &[64, 48, 64]),
    ("mixed_6c_17x17", 768, 17, &[192, 160, 160]),
    ("mixed_7b_8x8", 1280, 8, &[320, 384, 448]),
];

fn bench_sibling_groups(c: &mut Criterion) {
    use engine::kernels::pointwise_conv::{pack_weights, pointwise_conv, scratch_len};
    use engine::kernels::pointwise_group::{Member, PointwiseGroup};
    let level = engine::kernels::simd_level();
    let pool = pool();
    let mut group = c.benchmark_group(format!("pointwise_group_t{}", threads()));
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500));
    for &(name, cin, hw, couts) in INCEPTION_SIBLINGS {
        let geoms: Vec<ConvGeometry> = couts
            .iter()
            .map(|&co| {
                ConvGeometry::new(
                    1,
                    cin,
                    &[hw, hw],
                    co,
                    &[1, 1],
                    &[1, 1],
                    &[1, 1],
                    &[0, 0],
                    &[0, 0],
                    1,
                )
                .expect("geometry")
            })
            .collect();
        let x = values(geoms[0].input_len(), 1);
        let packed: Vec<Vec<f32>> = geoms
            .iter()
            .map(|g| pack_weights(g, &values(g.weight_len(), 2)))
            .collect();
        let biases: Vec<Vec<f32>> = geoms.iter().map(|g| values(g.out_channels, 3)).collect();
        let mut outs: Vec<Vec<f32>> = geoms.iter().map(|g| vec![0.0; g.output_len()]).collect();
        let flops: u64 = geoms.iter().map(|g| 2 * g.macs()).sum();
        group.throughput(Throughput::Elements(flops));
        let mut scratch = vec![0.0f32; scratch_len(&geoms[0], threads()) * 4];
        group.bench_function(BenchmarkId::new(name, "one_by_one"), |b| {
            b.iter(|| {
                pool.install(|| {
                    for (m, g) in geoms.iter().enumerate() {
                        let s = &mut scratch[..scratch_len(g, threads())];
                        pointwise_conv(
                            level,
                            g,
                            black_box(&x),
                            &packed[m],
                            &biases[m],
                            None,
                            Activation::Relu,
                            &mut outs[m],
                            s,
                        );
                    }
                })
            })
        });
        let members: Vec<Member> = (0..geoms.len())
            .map(|m| Member {
                geom: &geoms[m],
                packed: &packed[m],
                bias: &biases[m],
                act: Activation::Relu,
            })
            .collect();
        let sib = PointwiseGroup::new(&members).expect("group");
        let mut scratch = vec![0.0f32; sib.scratch_len(threads())];
        group.bench_function(BenchmarkId::new(name, "group"), |b| {
            b.iter(|| {
                pool.install(|| {
                    let mut refs: Vec<&mut [f32]> =
                        outs.iter_mut().map(|o| o.as_mut_slice()).collect();
                    sib.run(level, black_box(&x), &mut refs, &mut scratch)
                        .expect("group")
                })
            })
        });
    }
    group.finish();
}

/// The max pools of Inception-v3 (3×3/2, unpadded: 64 channels at 147×147, 192 at 71×71) and
/// ResNet-50 (3×3/2 pad 1, 64 channels at 112×112), planned at the machine's SIMD level (the
/// AVX-512 rows-first path where it has AVX-512, `pool2d::avx512`) and capped at AVX2 (the
/// row walk), side by side.
fn bench_max_pools(c: &mut Criterion) {
    use engine::kernels::pool::{PoolGeometry, PoolKind, PreparedPool};
    use engine::kernels::{set_max_simd_level, SimdLevel};
    let pool = pool();
    let mut group = c.benchmark_group("max_pool");
    group.measurement_time(Duration::from_secs(3));
    for (name, channels, hw, pad) in [
        ("inception_64x147_3x3s2", 64, 147, 0),
        ("inception_192x71_3x3s2", 192, 71, 0),
        ("resnet50_64x112_3x3s2p1", 64, 112, 1),
    ] {
        let out = (hw + 2 * pad - 3) / 2 + 1;
        let g = PoolGeometry {
            batch: 1,
            channels,
            in_spatial: vec![hw, hw],
            kernel: vec![3, 3],
            strides: vec![2, 2],
            dilations: vec![1, 1],
            pads_begin: vec![pad, pad],
            pads_end: vec![pad, pad],
            out_spatial: vec![out, out],
        };
        let x = values(channels * hw * hw, 3);
        let mut y = vec![0.0f32; channels * out * out];
        group.throughput(Throughput::Elements((channels * hw * hw) as u64));
        for (label, cap) in [("native", None), ("avx2", Some(SimdLevel::Avx2))] {
            // The plan keeps the level in force when it is made.
            let level = set_max_simd_level(cap);
            let prepared =
                PreparedPool::new(g.clone(), PoolKind::Max, threads()).expect("pool geometry");
            set_max_simd_level(None);
            let id = format!("{label}_{level:?}_t{}", threads());
            group.bench_function(BenchmarkId::new(name, id), |b| {
                b.iter(|| pool.install(|| prepared.run(black_box(&x), &mut y).expect("pool")))
            });
        }
    }
    group.finish();
}

criterion_group!(
    benches,
    bench_convs,
    bench_gemm,
    bench_sibling_groups,
    bench_max_pools
);
criterion_main!(benches);
