//! VGG-16 (configuration D of Simonyan & Zisserman 2014) with torchvision names.
//! Convolutions carry a bias and no BN (so `bn=` has no effect).

use super::builder::{scale_ch, Builder};
use super::Options;
use crate::ir::Graph;

pub(crate) fn vgg16(name: &str, o: &Options) -> crate::Result<Graph> {
    const CFG: [usize; 18] = [
        64, 64, 0, 128, 128, 0, 256, 256, 256, 0, 512, 512, 512, 0, 512, 512, 512, 0,
    ];
    let mut b = Builder::new(name, o.seed, o.batch, o.bn);
    let size = o.input.unwrap_or(224);
    let mut x = b.input("input", 3, size, size);
    for (i, &c) in CFG.iter().enumerate() {
        x = if c == 0 {
            b.maxpool(&format!("features.{}", torch_index(i)), x, 2, 2, 0)
        } else {
            let idx = torch_index(i);
            let y = b.conv(
                &format!("features.{idx}"),
                x,
                scale_ch(c, o.width, 1),
                [3, 3],
                [1, 1],
                [1; 4],
                1,
                true,
            );
            b.relu(&format!("features.{}", idx + 1), y)
        };
    }
    // At 224×224 the adaptive 7×7 average pool is the identity; it is left out.
    let x = b.flatten("flatten", x);
    let hidden = scale_ch(4096, o.width, 1);
    let x = b.gemm("classifier.0", x, hidden, true);
    let x = b.relu("classifier.1", x);
    let x = b.gemm("classifier.3", x, hidden, true);
    let x = b.relu("classifier.4", x);
    let x = b.gemm("classifier.6", x, o.classes, false);
    b.finish(x)
}

/// Index in torchvision's `features` Sequential of the CFG entry `i` (convs take two slots,
/// conv + ReLU; pools one).
fn torch_index(i: usize) -> usize {
    const CFG_IS_POOL: [bool; 18] = [
        false, false, true, false, false, true, false, false, false, true, false, false, false,
        true, false, false, false, true,
    ];
    CFG_IS_POOL[..i]
        .iter()
        .map(|&p| if p { 1 } else { 2 })
        .sum()
}
