//! Inception family: torchvision Inception-v3, timm Inception-v4, and a small
//! Inception-v4-style CIFAR network. All convolutions are `BasicConv2d` (conv without bias,
//! BN with ε = 0.001, ReLU). Auxiliary classifiers are training-only and left out.

use super::builder::{scale_ch, Builder};
use super::Options;
use crate::ir::{Graph, ValueId};

const EPS: f32 = 1e-3;

struct Ctx<'a> {
    b: Builder,
    o: &'a Options,
}

impl Ctx<'_> {
    fn w(&self, c: usize) -> usize {
        scale_ch(c, self.o.width, 1)
    }

    /// BasicConv2d with kernel `(kh, kw)`, stride `s`, symmetric padding `(ph, pw)`.
    fn bc(
        &mut self,
        prefix: &str,
        x: ValueId,
        cout: usize,
        k: (usize, usize),
        s: usize,
        p: (usize, usize),
    ) -> ValueId {
        let c = self.w(cout);
        self.b.conv_bn_relu(
            &format!("{prefix}."),
            x,
            c,
            [k.0, k.1],
            [s, s],
            [p.0, p.1, p.0, p.1],
            EPS,
        )
    }

    /// 1×1 BasicConv2d.
    fn c1(&mut self, prefix: &str, x: ValueId, cout: usize) -> ValueId {
        self.bc(prefix, x, cout, (1, 1), 1, (0, 0))
    }

    /// 3×3 stride-1 "same" BasicConv2d.
    fn c3(&mut self, prefix: &str, x: ValueId, cout: usize) -> ValueId {
        self.bc(prefix, x, cout, (3, 3), 1, (1, 1))
    }

    /// 1×n "same" BasicConv2d.
    fn c1n(&mut self, prefix: &str, x: ValueId, cout: usize, n: usize) -> ValueId {
        self.bc(prefix, x, cout, (1, n), 1, (0, n / 2))
    }

    /// n×1 "same" BasicConv2d.
    fn cn1(&mut self, prefix: &str, x: ValueId, cout: usize, n: usize) -> ValueId {
        self.bc(prefix, x, cout, (n, 1), 1, (n / 2, 0))
    }
}

// ---------------------------------------------------------------- torchvision Inception-v3

/// torchvision `inception_v3` (eval mode, no aux logits, no input transform), 299×299.
pub(crate) fn inception_v3(name: &str, o: &Options) -> crate::Result<Graph> {
    let mut c = Ctx {
        b: Builder::new(name, o.seed, o.batch, o.bn),
        o,
    };
    let size = o.input.unwrap_or(299);
    let x = c.b.input("input", 3, size, size);
    let x = c.bc("Conv2d_1a_3x3", x, 32, (3, 3), 2, (0, 0));
    let x = c.bc("Conv2d_2a_3x3", x, 32, (3, 3), 1, (0, 0));
    let x = c.bc("Conv2d_2b_3x3", x, 64, (3, 3), 1, (1, 1));
    let x = c.b.maxpool("maxpool1", x, 3, 2, 0);
    let x = c.c1("Conv2d_3b_1x1", x, 80);
    let x = c.bc("Conv2d_4a_3x3", x, 192, (3, 3), 1, (0, 0));
    let x = c.b.maxpool("maxpool2", x, 3, 2, 0);
    let x = v3_a(&mut c, "Mixed_5b", x, 32);
    let x = v3_a(&mut c, "Mixed_5c", x, 64);
    let x = v3_a(&mut c, "Mixed_5d", x, 64);
    let x = v3_b(&mut c, "Mixed_6a", x);
    let x = v3_c(&mut c, "Mixed_6b", x, 128);
    let x = v3_c(&mut c, "Mixed_6c", x, 160);
    let x = v3_c(&mut c, "Mixed_6d", x, 160);
    let x = v3_c(&mut c, "Mixed_6e", x, 192);
    let x = v3_d(&mut c, "Mixed_7a", x);
    let x = v3_e(&mut c, "Mixed_7b", x);
    let x = v3_e(&mut c, "Mixed_7c", x);
    let x = c.b.global_avgpool("avgpool", x);
    let x = c.b.flatten("flatten", x);
    let x = c.b.gemm("fc", x, o.classes, false);
    c.b.finish(x)
}

fn v3_a(c: &mut Ctx, p: &str, x: ValueId, pool_features: usize) -> ValueId {
    let b1 = c.c1(&format!("{p}.branch1x1"), x, 64);
    let b5 = c.c1(&format!("{p}.branch5x5_1"), x, 48);
    let b5 = c.bc(&format!("{p}.branch5x5_2"), b5, 64, (5, 5), 1, (2, 2));
    let b3 = c.c1(&format!("{p}.branch3x3dbl_1"), x, 64);
    let b3 = c.c3(&format!("{p}.branch3x3dbl_2"), b3, 96);
    let b3 = c.c3(&format!("{p}.branch3x3dbl_3"), b3, 96);
    let bp = c.b.avgpool(&format!("{p}.avg_pool"), x, 3, 1, 1, true);
    let bp = c.c1(&format!("{p}.branch_pool"), bp, pool_features);
    c.b.concat(&format!("{p}.concat"), &[b1, b5, b3, bp])
}

fn v3_b(c: &mut Ctx, p: &str, x: ValueId) -> ValueId {
    let b3 = c.bc(&format!("{p}.branch3x3"), x, 384, (3, 3), 2, (0, 0));
    let bd = c.c1(&format!("{p}.branch3x3dbl_1"), x, 64);
    let bd = c.c3(&format!("{p}.branch3x3dbl_2"), bd, 96);
    let bd = c.bc(&format!("{p}.branch3x3dbl_3"), bd, 96, (3, 3), 2, (0, 0));
    let bp = c.b.maxpool(&format!("{p}.max_pool"), x, 3, 2, 0);
    c.b.concat(&format!("{p}.concat"), &[b3, bd, bp])
}

fn v3_c(c: &mut Ctx, p: &str, x: ValueId, c7: usize) -> ValueId {
    let b1 = c.c1(&format!("{p}.branch1x1"), x, 192);
    let b7 = c.c1(&format!("{p}.branch7x7_1"), x, c7);
    let b7 = c.c1n(&format!("{p}.branch7x7_2"), b7, c7, 7);
    let b7 = c.cn1(&format!("{p}.branch7x7_3"), b7, 192, 7);
    let bd = c.c1(&format!("{p}.branch7x7dbl_1"), x, c7);
    let bd = c.cn1(&format!("{p}.branch7x7dbl_2"), bd, c7, 7);
    let bd = c.c1n(&format!("{p}.branch7x7dbl_3"), bd, c7, 7);
    let bd = c.cn1(&format!("{p}.branch7x7dbl_4"), bd, c7, 7);
    let bd = c.c1n(&format!("{p}.branch7x7dbl_5"), bd, 192, 7);
    let bp = c.b.avgpool(&format!("{p}.avg_pool"), x, 3, 1, 1, true);
    let bp = c.c1(&format!("{p}.branch_pool"), bp, 192);
    c.b.concat(&format!("{p}.concat"), &[b1, b7, bd, bp])
}

fn v3_d(c: &mut Ctx, p: &str, x: ValueId) -> ValueId {
    let b3 = c.c1(&format!("{p}.branch3x3_1"), x, 192);
    let b3 = c.bc(&format!("{p}.branch3x3_2"), b3, 320, (3, 3), 2, (0, 0));
    let b7 = c.c1(&format!("{p}.branch7x7x3_1"), x, 192);
    let b7 = c.c1n(&format!("{p}.branch7x7x3_2"), b7, 192, 7);
    let b7 = c.cn1(&format!("{p}.branch7x7x3_3"), b7, 192, 7);
    let b7 = c.bc(&format!("{p}.branch7x7x3_4"), b7, 192, (3, 3), 2, (0, 0));
    let bp = c.b.maxpool(&format!("{p}.max_pool"), x, 3, 2, 0);
    c.b.concat(&format!("{p}.concat"), &[b3, b7, bp])
}

fn v3_e(c: &mut Ctx, p: &str, x: ValueId) -> ValueId {
    let b1 = c.c1(&format!("{p}.branch1x1"), x, 320);
    let b3 = c.c1(&format!("{p}.branch3x3_1"), x, 384);
    let b3a = c.c1n(&format!("{p}.branch3x3_2a"), b3, 384, 3);
    let b3b = c.cn1(&format!("{p}.branch3x3_2b"), b3, 384, 3);
    let bd = c.c1(&format!("{p}.branch3x3dbl_1"), x, 448);
    let bd = c.c3(&format!("{p}.branch3x3dbl_2"), bd, 384);
    let bda = c.c1n(&format!("{p}.branch3x3dbl_3a"), bd, 384, 3);
    let bdb = c.cn1(&format!("{p}.branch3x3dbl_3b"), bd, 384, 3);
    let bp = c.b.avgpool(&format!("{p}.avg_pool"), x, 3, 1, 1, true);
    let bp = c.c1(&format!("{p}.branch_pool"), bp, 192);
    c.b.concat(&format!("{p}.concat"), &[b1, b3a, b3b, bda, bdb, bp])
}

// ---------------------------------------------------- Inception-v4 blocks (timm naming)

/// Channel plan of an Inception-v4 "A" block: b0 1×1; b1 1×1→3×3; b2 1×1→3×3→3×3; b3 pool→1×1.
struct ACfg {
    b0: usize,
    b1: (usize, usize),
    b2: (usize, usize, usize),
    b3: usize,
}

fn v4_a(c: &mut Ctx, p: &str, x: ValueId, k: &ACfg) -> ValueId {
    let b0 = c.c1(&format!("{p}.branch0"), x, k.b0);
    let b1 = c.c1(&format!("{p}.branch1.0"), x, k.b1.0);
    let b1 = c.c3(&format!("{p}.branch1.1"), b1, k.b1.1);
    let b2 = c.c1(&format!("{p}.branch2.0"), x, k.b2.0);
    let b2 = c.c3(&format!("{p}.branch2.1"), b2, k.b2.1);
    let b2 = c.c3(&format!("{p}.branch2.2"), b2, k.b2.2);
    let b3 = c.b.avgpool(&format!("{p}.branch3.0"), x, 3, 1, 1, false);
    let b3 = c.c1(&format!("{p}.branch3.1"), b3, k.b3);
    c.b.concat(&format!("{p}.concat"), &[b0, b1, b2, b3])
}

/// Reduction A: b0 3×3/2; b1 1×1→3×3→3×3/2; b2 max pool 3×3/2 (all valid padding).
fn v4_red_a(c: &mut Ctx, p: &str, x: ValueId, b0: usize, b1: (usize, usize, usize)) -> ValueId {
    let y0 = c.bc(&format!("{p}.branch0"), x, b0, (3, 3), 2, (0, 0));
    let y1 = c.c1(&format!("{p}.branch1.0"), x, b1.0);
    let y1 = c.c3(&format!("{p}.branch1.1"), y1, b1.1);
    let y1 = c.bc(&format!("{p}.branch1.2"), y1, b1.2, (3, 3), 2, (0, 0));
    let y2 = c.b.maxpool(&format!("{p}.branch2"), x, 3, 2, 0);
    c.b.concat(&format!("{p}.concat"), &[y0, y1, y2])
}

/// "B" block: b0 1×1; b1 1×1→1×7→7×1; b2 1×1→7×1→1×7→7×1→1×7; b3 pool→1×1.
struct BCfg {
    b0: usize,
    b1: (usize, usize, usize),
    b2: (usize, usize, usize, usize, usize),
    b3: usize,
}

fn v4_b(c: &mut Ctx, p: &str, x: ValueId, k: &BCfg) -> ValueId {
    let b0 = c.c1(&format!("{p}.branch0"), x, k.b0);
    let b1 = c.c1(&format!("{p}.branch1.0"), x, k.b1.0);
    let b1 = c.c1n(&format!("{p}.branch1.1"), b1, k.b1.1, 7);
    let b1 = c.cn1(&format!("{p}.branch1.2"), b1, k.b1.2, 7);
    let b2 = c.c1(&format!("{p}.branch2.0"), x, k.b2.0);
    let b2 = c.cn1(&format!("{p}.branch2.1"), b2, k.b2.1, 7);
    let b2 = c.c1n(&format!("{p}.branch2.2"), b2, k.b2.2, 7);
    let b2 = c.cn1(&format!("{p}.branch2.3"), b2, k.b2.3, 7);
    let b2 = c.c1n(&format!("{p}.branch2.4"), b2, k.b2.4, 7);
    let b3 = c.b.avgpool(&format!("{p}.branch3.0"), x, 3, 1, 1, false);
    let b3 = c.c1(&format!("{p}.branch3.1"), b3, k.b3);
    c.b.concat(&format!("{p}.concat"), &[b0, b1, b2, b3])
}

/// Reduction B: b0 1×1→3×3/2; b1 1×1→1×7→7×1→3×3/2; b2 max pool 3×3/2.
fn v4_red_b(
    c: &mut Ctx,
    p: &str,
    x: ValueId,
    b0: (usize, usize),
    b1: (usize, usize, usize, usize),
) -> ValueId {
    let y0 = c.c1(&format!("{p}.branch0.0"), x, b0.0);
    let y0 = c.bc(&format!("{p}.branch0.1"), y0, b0.1, (3, 3), 2, (0, 0));
    let y1 = c.c1(&format!("{p}.branch1.0"), x, b1.0);
    let y1 = c.c1n(&format!("{p}.branch1.1"), y1, b1.1, 7);
    let y1 = c.cn1(&format!("{p}.branch1.2"), y1, b1.2, 7);
    let y1 = c.bc(&format!("{p}.branch1.3"), y1, b1.3, (3, 3), 2, (0, 0));
    let y2 = c.b.maxpool(&format!("{p}.branch2"), x, 3, 2, 0);
    c.b.concat(&format!("{p}.concat"), &[y0, y1, y2])
}

/// "C" block: b0 1×1; b1 1×1→{1×3, 3×1}; b2 1×1→3×1→1×3→{1×3, 3×1}; b3 pool→1×1.
struct CCfg {
    b0: usize,
    b1: (usize, usize),
    b2: (usize, usize, usize, usize),
    b3: usize,
}

fn v4_c(c: &mut Ctx, p: &str, x: ValueId, k: &CCfg) -> ValueId {
    let b0 = c.c1(&format!("{p}.branch0"), x, k.b0);
    let b1 = c.c1(&format!("{p}.branch1_0"), x, k.b1.0);
    let b1a = c.c1n(&format!("{p}.branch1_1a"), b1, k.b1.1, 3);
    let b1b = c.cn1(&format!("{p}.branch1_1b"), b1, k.b1.1, 3);
    let b2 = c.c1(&format!("{p}.branch2_0"), x, k.b2.0);
    let b2 = c.cn1(&format!("{p}.branch2_1"), b2, k.b2.1, 3);
    let b2 = c.c1n(&format!("{p}.branch2_2"), b2, k.b2.2, 3);
    let b2a = c.c1n(&format!("{p}.branch2_3a"), b2, k.b2.3, 3);
    let b2b = c.cn1(&format!("{p}.branch2_3b"), b2, k.b2.3, 3);
    let b3 = c.b.avgpool(&format!("{p}.branch3.0"), x, 3, 1, 1, false);
    let b3 = c.c1(&format!("{p}.branch3.1"), b3, k.b3);
    c.b.concat(&format!("{p}.concat"), &[b0, b1a, b1b, b2a, b2b, b3])
}

/// timm `inception_v4` (Szegedy et al. 2016), 299×299, layer names `features.N...`.
pub(crate) fn inception_v4(name: &str, o: &Options) -> crate::Result<Graph> {
    let mut c = Ctx {
        b: Builder::new(name, o.seed, o.batch, o.bn),
        o,
    };
    let size = o.input.unwrap_or(299);
    let x = c.b.input("input", 3, size, size);
    let x = c.bc("features.0", x, 32, (3, 3), 2, (0, 0));
    let x = c.bc("features.1", x, 32, (3, 3), 1, (0, 0));
    let x = c.bc("features.2", x, 64, (3, 3), 1, (1, 1));
    // Mixed_3a: max pool ‖ conv 3×3/2.
    let m = c.b.maxpool("features.3.maxpool", x, 3, 2, 0);
    let y = c.bc("features.3.conv", x, 96, (3, 3), 2, (0, 0));
    let x = c.b.concat("features.3.concat", &[m, y]);
    // Mixed_4a.
    let b0 = c.c1("features.4.branch0.0", x, 64);
    let b0 = c.bc("features.4.branch0.1", b0, 96, (3, 3), 1, (0, 0));
    let b1 = c.c1("features.4.branch1.0", x, 64);
    let b1 = c.c1n("features.4.branch1.1", b1, 64, 7);
    let b1 = c.cn1("features.4.branch1.2", b1, 64, 7);
    let b1 = c.bc("features.4.branch1.3", b1, 96, (3, 3), 1, (0, 0));
    let x = c.b.concat("features.4.concat", &[b0, b1]);
    // Mixed_5a: conv 3×3/2 ‖ max pool.
    let y = c.bc("features.5.conv", x, 192, (3, 3), 2, (0, 0));
    let m = c.b.maxpool("features.5.maxpool", x, 3, 2, 0);
    let mut x = c.b.concat("features.5.concat", &[y, m]);
    let a = ACfg {
        b0: 96,
        b1: (64, 96),
        b2: (64, 96, 96),
        b3: 96,
    };
    for i in 6..10 {
        x = v4_a(&mut c, &format!("features.{i}"), x, &a);
    }
    x = v4_red_a(&mut c, "features.10", x, 384, (192, 224, 256));
    let b = BCfg {
        b0: 384,
        b1: (192, 224, 256),
        b2: (192, 192, 224, 224, 256),
        b3: 128,
    };
    for i in 11..18 {
        x = v4_b(&mut c, &format!("features.{i}"), x, &b);
    }
    x = v4_red_b(&mut c, "features.18", x, (192, 192), (256, 256, 320, 320));
    let k = CCfg {
        b0: 256,
        b1: (384, 256),
        b2: (384, 448, 512, 256),
        b3: 256,
    };
    for i in 19..22 {
        x = v4_c(&mut c, &format!("features.{i}"), x, &k);
    }
    let x = c.b.global_avgpool("global_pool", x);
    let x = c.b.flatten("flatten", x);
    let x = c.b.gemm("last_linear", x, o.classes, false);
    c.b.finish(x)
}

/// A small Inception-v4-style network for 32×32 CIFAR-10 images: a two-conv "same" stem
/// (32×32), 2 A blocks at 32×32, reduction A to 15×15, 2 B blocks, reduction B to 7×7, one C
/// block, then global average pooling over 7×7 and a 10-way FC (by default).
pub(crate) fn inception_cifar(name: &str, o: &Options) -> crate::Result<Graph> {
    let mut c = Ctx {
        b: Builder::new(name, o.seed, o.batch, o.bn),
        o,
    };
    let size = o.input.unwrap_or(32);
    let x = c.b.input("input", 3, size, size);
    let x = c.c3("stem.0", x, 32);
    let mut x = c.c3("stem.1", x, 64);
    let a = ACfg {
        b0: 32,
        b1: (24, 32),
        b2: (24, 32, 32),
        b3: 32,
    };
    for i in 0..2 {
        x = v4_a(&mut c, &format!("inception_a.{i}"), x, &a);
    }
    x = v4_red_a(&mut c, "reduction_a", x, 96, (64, 96, 96));
    let b = BCfg {
        b0: 96,
        b1: (64, 80, 96),
        b2: (64, 64, 80, 80, 96),
        b3: 32,
    };
    for i in 0..2 {
        x = v4_b(&mut c, &format!("inception_b.{i}"), x, &b);
    }
    x = v4_red_b(&mut c, "reduction_b", x, (64, 96), (96, 96, 128, 128));
    let k = CCfg {
        b0: 96,
        b1: (128, 64),
        b2: (128, 160, 192, 64),
        b3: 96,
    };
    let x = v4_c(&mut c, "inception_c.0", x, &k);
    let x = c.b.global_avgpool("global_pool", x);
    let x = c.b.flatten("flatten", x);
    let x = c.b.gemm("fc", x, o.classes, false);
    c.b.finish(x)
}
