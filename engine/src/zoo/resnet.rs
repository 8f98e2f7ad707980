//! ResNet family (He et al. 2015/2016) with torchvision's layer names, and ResNeXt.

use super::builder::{scale_ch, Builder};
use super::Options;
use crate::ir::{Graph, ValueId};

/// torchvision's BN epsilon.
const EPS: f32 = 1e-5;

/// Which residual block and where a bottleneck puts its stride.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Block {
    Basic,
    /// Stride on the 3×3 (torchvision, "v1.5").
    Bottleneck,
    /// Stride on the first 1×1 (the original 2015 paper / Caffe "v1").
    BottleneckV1,
}

pub(crate) struct ResNetCfg {
    pub block: Block,
    pub layers: [usize; 4],
    pub groups: usize,
    pub width_per_group: usize,
}

/// ImageNet ResNet/ResNeXt: 7×7/2 stem, 3×3/2 max pool, four stages, global average pool, FC.
pub(crate) fn imagenet(name: &str, cfg: &ResNetCfg, o: &Options) -> crate::Result<Graph> {
    let mut b = Builder::new(name, o.seed, o.batch, o.bn);
    let size = o.input.unwrap_or(224);
    let x = b.input("input", 3, size, size);
    let stem = scale_ch(64, o.width, 1);
    let c = b.conv("conv1", x, stem, [7, 7], [2, 2], [3; 4], 1, false);
    let c = b.bn("bn1", c, EPS);
    let c = b.relu("relu", c);
    let mut x = b.maxpool("maxpool", c, 3, 2, 1);
    let expansion = if cfg.block == Block::Basic { 1 } else { 4 };
    for (stage, &blocks) in cfg.layers.iter().enumerate() {
        let planes = 64usize << stage;
        for i in 0..blocks {
            let stride = if stage > 0 && i == 0 { 2 } else { 1 };
            let p = format!("layer{}.{}.", stage + 1, i);
            x = match cfg.block {
                Block::Basic => basic_block(&mut b, &p, x, scale_ch(planes, o.width, 1), stride),
                Block::Bottleneck | Block::BottleneckV1 => {
                    let mid_raw = planes * cfg.width_per_group / 64 * cfg.groups;
                    let mid = scale_ch(mid_raw, o.width, cfg.groups);
                    let out = scale_ch(planes * expansion, o.width, 1);
                    bottleneck(
                        &mut b,
                        &p,
                        x,
                        mid,
                        out,
                        stride,
                        cfg.groups,
                        cfg.block == Block::BottleneckV1,
                    )
                }
            };
        }
    }
    let x = b.global_avgpool("avgpool", x);
    let x = b.flatten("flatten", x);
    let x = b.gemm("fc", x, o.classes, false);
    b.finish(x)
}

/// Projection shortcut (1×1 conv + BN) when the shape changes, identity otherwise.
fn shortcut(b: &mut Builder, p: &str, x: ValueId, out: usize, stride: usize) -> ValueId {
    if stride == 1 && b.channels(x) == out {
        return x;
    }
    let d = b.conv(
        &format!("{p}downsample.0"),
        x,
        out,
        [1, 1],
        [stride, stride],
        [0; 4],
        1,
        false,
    );
    b.bn(&format!("{p}downsample.1"), d, EPS)
}

fn basic_block(b: &mut Builder, p: &str, x: ValueId, planes: usize, stride: usize) -> ValueId {
    let c = b.conv(
        &format!("{p}conv1"),
        x,
        planes,
        [3, 3],
        [stride, stride],
        [1; 4],
        1,
        false,
    );
    let c = b.bn(&format!("{p}bn1"), c, EPS);
    let c = b.relu(&format!("{p}relu"), c);
    let c = b.conv(
        &format!("{p}conv2"),
        c,
        planes,
        [3, 3],
        [1, 1],
        [1; 4],
        1,
        false,
    );
    let c = b.bn(&format!("{p}bn2"), c, EPS);
    let s = shortcut(b, p, x, planes, stride);
    let a = b.add(&format!("{p}add"), c, s);
    b.relu(&format!("{p}relu_1"), a)
}

#[allow(clippy::too_many_arguments)]
fn bottleneck(
    b: &mut Builder,
    p: &str,
    x: ValueId,
    mid: usize,
    out: usize,
    stride: usize,
    groups: usize,
    v1: bool,
) -> ValueId {
    let (s1, s2) = if v1 { (stride, 1) } else { (1, stride) };
    let c = b.conv(
        &format!("{p}conv1"),
        x,
        mid,
        [1, 1],
        [s1, s1],
        [0; 4],
        1,
        false,
    );
    let c = b.bn(&format!("{p}bn1"), c, EPS);
    let c = b.relu(&format!("{p}relu"), c);
    let c = b.conv(
        &format!("{p}conv2"),
        c,
        mid,
        [3, 3],
        [s2, s2],
        [1; 4],
        groups,
        false,
    );
    let c = b.bn(&format!("{p}bn2"), c, EPS);
    let c = b.relu(&format!("{p}relu_1"), c);
    let c = b.conv(
        &format!("{p}conv3"),
        c,
        out,
        [1, 1],
        [1, 1],
        [0; 4],
        1,
        false,
    );
    let c = b.bn(&format!("{p}bn3"), c, EPS);
    let s = shortcut(b, p, x, out, stride);
    let a = b.add(&format!("{p}add"), c, s);
    b.relu(&format!("{p}relu_2"), a)
}

/// CIFAR ResNet (He et al. 2015, §4.2): 3×3 stem with 16 channels, three stages of `n` basic
/// blocks with 16/32/64 channels at 32/16/8 pixels, global average pool, FC. Depth = 6n + 2.
///
/// Shortcuts use **option B** (a 1×1 stride-2 conv + BN projection where the shape changes,
/// identity elsewhere), not the paper's parameter-free option A (subsample + zero-pad channels):
/// option B is what most reimplementations ship and it keeps the graph to ops every backend
/// runs. It adds 2·(16·32 + 32·64) = 5,120 weights + BN stats and ≈1.3 M MACs at 32×32.
pub(crate) fn cifar(name: &str, depth: usize, o: &Options) -> crate::Result<Graph> {
    let n = (depth - 2) / 6;
    let mut b = Builder::new(name, o.seed, o.batch, o.bn);
    let size = o.input.unwrap_or(32);
    let x = b.input("input", 3, size, size);
    let c = b.conv(
        "conv1",
        x,
        scale_ch(16, o.width, 1),
        [3, 3],
        [1, 1],
        [1; 4],
        1,
        false,
    );
    let c = b.bn("bn1", c, EPS);
    let mut x = b.relu("relu", c);
    for stage in 0..3 {
        let planes = scale_ch(16 << stage, o.width, 1);
        for i in 0..n {
            let stride = if stage > 0 && i == 0 { 2 } else { 1 };
            x = basic_block(
                &mut b,
                &format!("layer{}.{}.", stage + 1, i),
                x,
                planes,
                stride,
            );
        }
    }
    let x = b.global_avgpool("avgpool", x);
    let x = b.flatten("flatten", x);
    let x = b.gemm("fc", x, o.classes, false);
    b.finish(x)
}
