//! 1×1 convolutions (ResNet's bottleneck convs and strided shortcuts, Inception's 1×1
//! branches): a weight-stationary GEMM with the weights packed once and the epilogue in the
//! only store of each output.
//!
//! Why not the crate GEMM: it re-packs the weights on every call and writes the raw product,
//! which a second pass then reads back to add bias and residual and apply the activation — for
//! ResNet-50's 64→256 convs at 56×56 (short K, a residual) that pass and the packing made the
//! node 2× ONNX Runtime's time. The engine's packed GEMM fuses the epilogue but sweeps each
//! 16-column slice down all output rows, `H·W` floats apart.
//!
//! Here, for a conv `C[cout × P] = W[cout × K] · X[K × P]` (`K` = input channels per group,
//! `P` = output positions):
//! - the weights are packed once, at load, into panels of [`MR`] output channels, `[K][MR]`;
//! - a work item is one image's block of positions and a range of output-channel panels. Its
//!   input is copied into tiles of [`NR`] positions, `[depth][NR]` each and contiguous (strided
//!   convs gather their positions here), because reading 16 floats from each of K rows far
//!   apart per tile measured 1.1–1.45× slower: every row was an L1 miss the prefetchers could
//!   not predict. The copy is read row by row, along the (cold) input. The exception: with
//!   AVX-512, a stride-1 conv with few weight panels (≤ 24) over planes of whole 16-position
//!   tiles reads its input in place (`reads_in_place`): so few panels re-read the copy too
//!   rarely to pay for it (ResNet-50's 256→64 convs at 56×56 take 0.85–0.87× the time);
//! - each panel's weights stay in L1 while an [`MR`]×[`NR`] register tile sweeps the block's
//!   tiles left to right, so the output and residual are written and read along their rows;
//! - K is summed in the slices of `gemm::k_slice` (the GEMM path's, for the same rounding: a
//!   blocked summation). Up to 512 channels the tile sums all slices itself (the
//!   running total in L1) and stores once; longer K (1024–2048 channels on 14×14 and 7×7
//!   maps) is swept one slice per pass with the running sums in the output, so blocks stay
//!   wide enough that the weights are not streamed from memory once per few tiles;
//! - the last slice adds bias + residual and applies the activation in registers.
//!
//! With AVX-512 the tile is one 16-lane vector per output row ([`MR`] rows, the weight
//! broadcast folded into each FMA), and blocks of at most four tiles run two panels per input
//! tile; tiles of at most 8 positions keep the AVX2 kernel's half-width path, and the last
//! tile of a plane with at most 4 positions puts the panel's rows across the lanes instead
//! (`NARROW_MAX`).
//!
//! A ragged last tile stores (and reads output and residual) through lane masks, so nothing
//! outside the tensors is touched. Each output is the same slice sums added in the same order
//! whatever the work split, so results are bit-identical across thread counts.

use super::conv::ConvGeometry;
use super::cpu_features::{detected_simd_level, SimdLevel};
use super::elementwise::activation_inplace_with;
use super::gemm::{k_slice, SendPtr};
use super::worker_items::for_each_item;
use crate::ir::Activation;

/// Output channels per register tile (the broadcast operand, from the packed weights).
pub const MR: usize = 6;
/// Positions per register tile (two AVX2 vectors of the input row).
pub const NR: usize = 16;
/// Bytes of one item's packed input (`depth` channels × its block of positions) when it is
/// swept in one pass: kept in L2 (512 KiB per core on the machine measured) while every panel
/// of weights sweeps it.
const BLOCK_BYTES: usize = 256 * 1024;
/// Bytes of one item's input slice plus its output (re-read by each later K slice) when K has
/// several slices: both stay in L2.
const SLICED_BLOCK_BYTES: usize = 320 * 1024;
/// Largest K swept whole per block of positions (blocks of at least 128 positions): beyond it
/// (1024–2048 channels on 14×14 and 7×7 maps) the blocks would be so narrow that the weights,
/// 1–8 MiB, would stream from memory once per handful of tiles, so those sweep one K slice
/// at a time with the running sums in the output. Measured (ResNet-50, per node, 1 thread):
/// with every multi-slice K swept a slice per pass, 256→1024 at 14×14 took 1.2–1.3× the crate
/// GEMM's time; swept whole, 0.88–1.0×.
const WHOLE_K_MAX: usize = 512;

/// Most positions in an item's block for which the AVX-512 kernel runs two panels per input
/// tile ([`avx512::tile_12x16`]). With so few tiles each panel's pass re-reads the same input
/// from L1/L2 rather than streaming it, and sharing it between two panels pays: ResNet-50 at
/// 1 thread, per node (10 alternating runs, fastest of each): Winograd's 512-channel elements
/// at 7×7 (one tile) 0.86–0.87× the time of single panels, the 1024→2048 shortcut at 7×7 0.93×.
/// Over wider blocks the two panels' weights (12–24 KiB) crowd the streamed input out of L1:
/// 256→1024 and 64→256 with a residual 1.06–1.07×, 512→128 at 28×28 1.04×.
const PAIR_MAX_POSITIONS: usize = 4 * NR;

/// Most weight panels ([`MR`] output channels each) for which a call reads its input in place
/// ([`reads_in_place`]): 22 panels gained 4–8%, 43 lost 3–7%.
const IN_PLACE_MAX_PANELS: usize = 24;

/// Most positions per block: the strided packing keeps their input offsets on the stack.
const MAX_BLOCK: usize = 1024;

/// Whether [`pointwise_conv`] computes `g`: every kernel dim 1 and no padding (any stride, any
/// spatial rank, any group count). With stride 1 the input already is the GEMM's right-hand
/// side; with larger strides (ResNet's 1×1/2 shortcuts) the packing gathers its positions.
pub fn applies(g: &ConvGeometry) -> bool {
    g.kernel.iter().all(|&k| k == 1) && g.pads_begin.iter().chain(&g.pads_end).all(|&p| p == 0)
}

/// Packs OIHW 1×1 weights (`cout × cin/group`) per group into panels of [`MR`] output channels,
/// each `[K][MR]` (rows past the group's last channel are zero).
pub fn pack_weights(g: &ConvGeometry, weights: &[f32]) -> Vec<f32> {
    pack_panels(g, weights, MR)
}

/// Packs OIHW 1×1 weights per group into panels of `width` output channels, each
/// `[K][width]` (lanes past the group's last channel are zero): the layout of both 1×1
/// kernels, whose tiles broadcast ([`MR`]) or load ([`super::pointwise_channels::CR`]) a
/// panel row per input channel.
pub(crate) fn pack_panels(g: &ConvGeometry, weights: &[f32], width: usize) -> Vec<f32> {
    let (k, cout_g) = (g.cin_per_group(), g.cout_per_group());
    let panels = cout_g.div_ceil(width);
    let mut out = vec![0.0; g.group * panels * k * width];
    for grp in 0..g.group {
        for p in 0..panels {
            let dst = &mut out[(grp * panels + p) * k * width..][..k * width];
            for r in 0..width.min(cout_g - p * width) {
                let co = grp * cout_g + p * width + r;
                for (kk, &w) in weights[co * k..(co + 1) * k].iter().enumerate() {
                    dst[kk * width + r] = w;
                }
            }
        }
    }
    out
}

/// Floats [`pack_weights`] returns for `g`.
pub fn packed_len(g: &ConvGeometry) -> usize {
    g.group * g.cout_per_group().div_ceil(MR) * g.cin_per_group() * MR
}

/// One item of work: positions `p0..p1` of image `n`, group `grp`, panels `b0..b1`.
#[derive(Debug, Clone, Copy)]
struct Item {
    n: usize,
    grp: usize,
    p0: usize,
    p1: usize,
    b0: usize,
    b1: usize,
}

/// How one call splits its work (depends on the geometry and thread count, never on values).
#[derive(Debug, Clone, Copy)]
struct Split {
    block: usize,
    blocks: usize,
    panels: usize,
    panels_per_part: usize,
    parts: usize,
    tiles: usize,
    /// Input channels packed and swept per pass: all of K (the kernel sums its slices in
    /// registers and L1, each output is written once) or one K slice (the output holds the
    /// running sums between passes).
    depth: usize,
}

/// Blocks of positions for a conv with `k` input channels swept `kc` per pass, `cout` output
/// channels and `tiles` tiles of positions. In one pass only the packed input has to fit
/// ([`BLOCK_BYTES`], at most [`MAX_BLOCK`] positions). With several passes, the count that
/// moves the fewest bytes between L2 and memory: every block streams all the weights once,
/// and a block whose output (re-read by each pass) and input slice do not fit
/// [`SLICED_BLOCK_BYTES`] moves its output once more per extra pass. So 7×7 maps with 2048
/// channels run as one block (their 4–8 MiB of weights dominate), 28×28 maps with 128 output
/// channels and 512 inputs in slices of 128 as three.
fn block_count(k: usize, kc: usize, cout: usize, tiles: usize) -> usize {
    let slices = k.div_ceil(kc);
    let min_blocks = tiles.div_ceil(MAX_BLOCK / NR);
    if slices == 1 {
        let per_block = (BLOCK_BYTES / 4 / kc / NR).max(1);
        return tiles.div_ceil(per_block).max(min_blocks);
    }
    let weights = (cout * k) as f64;
    let fit_tiles = SLICED_BLOCK_BYTES / 4 / NR / (kc + cout);
    let cost = |blocks: usize| {
        let fits = tiles.div_ceil(blocks) <= fit_tiles;
        let out_traffic = if fits {
            0.0
        } else {
            (2 * (slices - 1) * cout * tiles * NR) as f64
        };
        blocks as f64 * weights + out_traffic
    };
    // The cost grows with the block count except where blocks start to fit, so the best is
    // the fewest blocks allowed or the fewest that fit.
    let fitting = tiles.div_ceil(fit_tiles.max(1)).max(min_blocks);
    if fit_tiles > 0 && cost(fitting) < cost(min_blocks) {
        fitting
    } else {
        min_blocks
    }
}

impl Split {
    fn new(g: &ConvGeometry, threads: usize) -> Split {
        let (k, plane) = (g.cin_per_group().max(1), g.out_plane().max(1));
        let kc = k_slice(k).max(1);
        let panels = g.cout_per_group().div_ceil(MR).max(1);
        let tiles = plane.div_ceil(NR);
        let whole_k = k <= WHOLE_K_MAX;
        let depth = if whole_k { k } else { kc };
        let blocks = block_count(k, depth, panels * MR, tiles);
        // Items are about equal, so a count that is not a multiple of the thread count leaves
        // threads idle at the end: 13 blocks on 2 threads take 7 rounds for 6.5 of work. One
        // or two more (smaller) blocks even it out; the sums do not depend on the split.
        // Measured alone at 2 threads (best of 60): 256→64 at 56×56 0.77 → 0.74 ms, 512→128
        // at 28×28 0.72 → 0.68; in ResNet-50 (6 interleaved runs) its 28×28 conv1s 0.90–0.94×.
        let per_block = g.batch * g.group;
        let mut blocks = blocks;
        if per_block * blocks > threads {
            while !(per_block * blocks).is_multiple_of(threads) && blocks < tiles {
                blocks += 1;
            }
        }
        // Tiles spread evenly over the blocks (13 tiles in 4 blocks: 3, 3, 3, 4).
        let block = tiles.div_ceil(blocks) * NR;
        // Output channels split only to give every thread an item: each part packs its block's
        // input again, which costs more than the balance of smaller items gains (ResNet-50's
        // 1×1 convs at 2 threads, per node: 0.86–1.0× the time with one part per thread
        // against three, 4% less in all).
        let outer = g.batch * g.group * blocks;
        let parts = if outer < threads {
            threads.div_ceil(outer).min(panels)
        } else {
            1
        };
        let panels_per_part = panels.div_ceil(parts);
        Split {
            block,
            blocks,
            panels,
            panels_per_part,
            parts: panels.div_ceil(panels_per_part),
            tiles,
            depth,
        }
    }

    fn items(&self, g: &ConvGeometry) -> usize {
        g.batch * g.group * self.blocks * self.parts
    }

    /// Item `i`; consecutive items share a block of positions (its input stays in cache).
    fn item(&self, g: &ConvGeometry, i: usize) -> Item {
        let part = i % self.parts;
        let rest = i / self.parts;
        let blk = rest % self.blocks;
        let rest = rest / self.blocks;
        let (grp, n) = (rest % g.group, rest / g.group);
        let plane = g.out_plane();
        Item {
            n,
            grp,
            p0: blk * self.tiles / self.blocks * NR,
            p1: ((blk + 1) * self.tiles / self.blocks * NR).min(plane),
            b0: part * self.panels_per_part,
            b1: ((part + 1) * self.panels_per_part).min(self.panels),
        }
    }
}

/// `output = act(W ⊛ input + bias + residual)` for a 1×1 conv ([`applies`]) with weights from
/// [`pack_weights`]; `scratch` holds at least one worker's packed input slice
/// ([`scratch_len`]). With K over 512 the running sums live in the output between passes.
///
/// # Panics
/// If a slice is shorter than the geometry needs.
#[allow(clippy::too_many_arguments)]
pub fn pointwise_conv(
    level: SimdLevel,
    g: &ConvGeometry,
    input: &[f32],
    packed: &[f32],
    bias: &[f32],
    residual: Option<&[f32]>,
    act: Activation,
    output: &mut [f32],
    scratch: &mut [f32],
) {
    let layout = InputLayout::nchw(g);
    pointwise_with_layout(
        level, g, input, layout, packed, bias, residual, act, output, scratch,
    )
}

/// Where input channel `c` of group `grp` of image `n` starts: `n·image + grp·group + c·channel`
/// floats into the input (its `∏in_spatial` values are contiguous from there).
#[derive(Debug, Clone, Copy)]
pub(crate) struct InputLayout {
    pub image: usize,
    pub group: usize,
    pub channel: usize,
}

impl InputLayout {
    /// The NCHW layout of `g`'s input.
    pub fn nchw(g: &ConvGeometry) -> InputLayout {
        let plane = g.in_plane();
        InputLayout {
            image: g.in_channels * plane,
            group: g.cin_per_group() * plane,
            channel: plane,
        }
    }

    fn end(&self, g: &ConvGeometry) -> usize {
        let last = (g.batch.max(1) - 1) * self.image
            + (g.group.max(1) - 1) * self.group
            + g.cin_per_group().saturating_sub(1) * self.channel;
        last + g.in_plane()
    }
}

/// [`pointwise_conv`] on an input whose channels lie at the strides of `layout` (Winograd's
/// transformed tiles: its 16 element-wise GEMMs are one 16-group 1×1 conv over channels that
/// are interleaved with the other elements').
#[allow(clippy::too_many_arguments)]
pub(crate) fn pointwise_with_layout(
    level: SimdLevel,
    g: &ConvGeometry,
    input: &[f32],
    layout: InputLayout,
    packed: &[f32],
    bias: &[f32],
    residual: Option<&[f32]>,
    act: Activation,
    output: &mut [f32],
    scratch: &mut [f32],
) {
    assert!(output.len() >= g.output_len());
    if let Some(r) = residual {
        assert!(r.len() >= g.output_len());
    }
    if g.cin_per_group() == 0 || g.out_plane() == 0 {
        without_inputs(g, bias, residual, act, output);
        return;
    }
    let out = Outputs::One(SendPtr(output.as_mut_ptr()));
    pointwise_impl(
        level, g, input, layout, packed, bias, residual, act, out, scratch, true,
    )
}

/// Where a call's output panels go: one NCHW tensor (channel `c` of image `n` at
/// `(n·cout + c)·plane`), or a group's separate tensors ([`PanelTarget`] per panel).
#[derive(Clone, Copy)]
pub(crate) enum Outputs<'a> {
    One(SendPtr<f32>),
    Group {
        panels: &'a [PanelTarget],
        /// Per member: its output's first float and its channel count.
        members: &'a [(SendPtr<f32>, usize)],
    },
}

/// Where panel `b` of a group's merged weights goes: `rows` channels from channel `first` of
/// member `member`'s output, with that member's activation (one the tile applies).
#[derive(Debug, Clone, Copy)]
pub(crate) struct PanelTarget {
    pub member: usize,
    pub first: usize,
    pub rows: usize,
    pub act: Activation,
}

/// Where the tiles read a stride-1 conv's input: in place, from its NCHW rows (16 positions
/// of each of K rows a channel apart per tile), instead of from a packed copy. The copy reads
/// and writes the whole input once and pays off only over many weight panels, each of which
/// re-reads it: for few panels the tile's strided loads from L2 cost less. Measured (AVX-512,
/// ResNet-50, 8 alternating runs of the binaries with and without, fastest of each node):
/// 256→64 at 56×56 (11 panels) 0.85× the time at 1 thread and 0.87× at 2, 256→128 at 56×56
/// and 512→128 at 28×28 (22 panels) 0.92–0.96× and 0.92–0.95×. Left out, as measured with
/// a switch: 64→256 at 56×56 (43 panels) alone 1.03–1.07×, 256→1024 at 14×14 1.02–1.04×,
/// and planes whose rows do not start on a 64-byte line (16 floats: Inception-v3's 35×35 and
/// 17×17 maps split every load over two lines) 1.05–1.18×. Only the AVX-512 tiles read in
/// place. Winograd's element GEMMs (channels `layout.channel` apart, interleaved with the
/// other elements') read in place too where their rows start on lines: ResNet-50's
/// 64-channel F(2×2) at 56×56 (784 tiles, 8–10 alternating runs per node, fastest of each,
/// 29 Nov) took 0.94–0.965× the packed copy's time at 1 thread and 0.93–0.95× at 2 with the
/// rows half a line off (an older kernel had measured 1.03–1.08× there), and a further
/// 0.92–0.95× and 0.94–0.99× once they start on lines.
fn reads_in_place(level: SimdLevel, g: &ConvGeometry, layout: InputLayout, panels: usize) -> bool {
    let stride_one = g.strides.iter().all(|&s| s == 1);
    stride_one
        && level >= SimdLevel::Avx512
        && g.in_plane().is_multiple_of(NR)
        && layout.channel.is_multiple_of(NR)
        && panels <= IN_PLACE_MAX_PANELS
}

/// The kernel behind [`pointwise_with_layout`] and the sibling groups of
/// [`super::pointwise_group`]. With [`Outputs::Group`] there is no residual and every
/// activation is one the tile applies (the group checks both); the caller has checked the
/// outputs' lengths. `in_place_allowed`: whether the call may read its input in place where
/// [`reads_in_place`] picks it (tests turn it off to compare: the sums are bit-identical).
#[allow(clippy::too_many_arguments)]
pub(crate) fn pointwise_impl(
    level: SimdLevel,
    g: &ConvGeometry,
    input: &[f32],
    layout: InputLayout,
    packed: &[f32],
    bias: &[f32],
    residual: Option<&[f32]>,
    act: Activation,
    outputs: Outputs<'_>,
    scratch: &mut [f32],
    in_place_allowed: bool,
) {
    assert!(applies(g), "pointwise_conv: not a 1×1 unpadded conv");
    assert!(
        scratch.len() >= slot_len(g),
        "pointwise_conv: scratch too short"
    );
    assert!(input.len() >= layout.end(g));
    assert!(packed.len() >= packed_len(g) && bias.len() >= g.out_channels);
    if let Outputs::Group { panels, members } = outputs {
        assert!(residual.is_none() && g.group == 1);
        assert!(panels.len() >= g.cout_per_group().div_ceil(MR));
        assert!(panels.iter().all(|t| t.member < members.len()
            && t.first + t.rows <= members[t.member].1
            && t.rows <= MR
            && matches!(
                t.act,
                Activation::None | Activation::Relu | Activation::Clip(..)
            )));
    }
    let level = level.min(detected_simd_level());
    let threads = rayon::current_num_threads().max(1);
    let split = Split::new(g, threads);
    let (k, cout_g, plane) = (g.cin_per_group(), g.cout_per_group(), g.out_plane());
    // The single-output entry handles these (`without_inputs`); groups never have them.
    assert!(
        k > 0 && plane > 0,
        "pointwise_conv: no input channels or positions"
    );
    let kc_max = k_slice(k);
    // Activations the tile applies in registers; the others run over the item's rows after
    // its last slice.
    let (tile_act, post_act) = match act {
        Activation::None | Activation::Relu | Activation::Clip(..) => (act, Activation::None),
        other => (Activation::None, other),
    };
    let strided = g.strides.iter().any(|&s| s != 1);
    // In place, every tile is full (whole planes of whole tiles; the split's blocks are
    // whole tiles): a ragged one would read past its rows (`compute_tile` checks).
    let in_place = in_place_allowed && reads_in_place(level, g, layout, split.panels);
    let run = |it: Item, panel_buf: &mut [f32]| {
        let x_img = it.n * layout.image + it.grp * layout.group;
        let co_base = it.grp * cout_g;
        let out_img = (it.n * g.out_channels + co_base) * plane;
        let positions = it.p1 - it.p0;
        let mut k0 = 0;
        while k0 < k {
            let kc = split.depth.min(k - k0);
            let (first, last) = (k0 == 0, k0 + kc == k);
            let xp = &mut panel_buf[..positions.next_multiple_of(NR) * kc];
            let x = &input[x_img + k0 * layout.channel..];
            if strided {
                pack_input_strided(level, g, x, layout.channel, kc, it.p0, positions, xp);
            } else if !in_place {
                pack_input(&x[it.p0..], layout.channel, kc, positions, xp);
            }
            let xp: &[f32] = xp;
            let tiles = positions.div_ceil(NR);
            // Panel b's weights for this slice, its first output row (position 0), channel
            // count and activation.
            let panel = |b: usize| {
                let a = &packed[((it.grp * split.panels + b) * k + k0) * MR..][..kc * MR];
                let row0 = out_img + b * MR * plane;
                let (dst0, rows, panel_act) = match outputs {
                    // SAFETY (offsets): within the output (`output_len` floats, checked by the
                    // caller) or the member's output (`n·cout_m + first + rows ≤ its channels`
                    // per image, checked above and by the group).
                    Outputs::One(p) => unsafe {
                        (p.0.add(row0), MR.min(cout_g - b * MR), tile_act)
                    },
                    Outputs::Group { panels, members } => {
                        let t = panels[b];
                        let (p, cout_m) = members[t.member];
                        let at = (it.n * cout_m + t.first) * plane;
                        (unsafe { p.0.add(at) }, t.rows, t.act)
                    }
                };
                (a, row0, SendPtr(dst0), rows, panel_act)
            };
            let tile_of = |b: usize, tile: usize| {
                let (_, row0, _, rows, panel_act) = panel(b);
                let j = it.p0 + tile * NR;
                Tile {
                    rows,
                    width: NR.min(it.p1 - j),
                    ldc: plane,
                    first,
                    last,
                    bias: &bias[co_base + b * MR..co_base + b * MR + rows],
                    residual: residual.map(|r| &r[row0 + j..]),
                    act: panel_act,
                }
            };
            let mut b = it.b0;
            while b < it.b1 {
                let (a, _, dst0, rows, _) = panel(b);
                // Two full panels share each input tile in the AVX-512 kernel (partial panels
                // run alone, so every panel's sums are the same whichever way the panels are
                // paired: the pairing depends on the work split).
                let pair = (!in_place && b + 1 < it.b1 && rows == MR)
                    .then(|| panel(b + 1))
                    .filter(|p| {
                        p.3 == MR && level >= SimdLevel::Avx512 && positions <= PAIR_MAX_POSITIONS
                    });
                if in_place {
                    for tile in 0..tiles {
                        let j = it.p0 + tile * NR;
                        // SAFETY: as below (never paired); the tile is full (planes of whole
                        // tiles) and its kc rows lie `layout.channel` apart in `x`.
                        unsafe {
                            compute_tile_in_place(
                                kc,
                                kc_max,
                                a,
                                &x[j..],
                                layout.channel,
                                { dst0 }.0.add(j),
                                &tile_of(b, tile),
                            )
                        }
                    }
                } else {
                    for (tile, x) in xp.chunks_exact(kc * NR).enumerate() {
                        let j = it.p0 + tile * NR;
                        let t = tile_of(b, tile);
                        // SAFETY: the tile is rows `rows` of panel b (and of b + 1 when paired:
                        // output channels of this item) × positions j..j+width of image n;
                        // items are disjoint (image, group, block, panel range) sets so no
                        // other thread touches it; the outputs outlive the parallel scope.
                        unsafe {
                            match &pair {
                                Some((a1, _, dst1, _, _)) => compute_pair(
                                    level,
                                    kc,
                                    kc_max,
                                    [a, a1],
                                    x,
                                    [{ dst0 }.0.add(j), { *dst1 }.0.add(j)],
                                    [&t, &tile_of(b + 1, tile)],
                                ),
                                None => {
                                    compute_tile(level, kc, kc_max, a, x, { dst0 }.0.add(j), &t)
                                }
                            }
                        }
                    }
                }
                let done = if pair.is_some() { 2 } else { 1 };
                if last && post_act != Activation::None {
                    for pb in b..b + done {
                        let (_, _, dst0, rows, _) = panel(pb);
                        for r in 0..rows {
                            // SAFETY: row r of this item's output (positions p0..p1), owned by
                            // this item as above.
                            let dst = unsafe {
                                std::slice::from_raw_parts_mut(
                                    { dst0 }.0.add(r * plane + it.p0),
                                    positions,
                                )
                            };
                            activation_inplace_with(level, dst, post_act);
                        }
                    }
                }
                b += done;
            }
            k0 += kc;
        }
    };
    for_each_item(split.items(g), scratch, slot_len(g), |i, buf| {
        run(split.item(g, i), buf)
    });
}

/// Copies `kc` rows (`ldx` apart) of `positions` floats into tiles of [`NR`] positions, each
/// `[kc][NR]` and contiguous, the last one zero-padded: the kernel then streams each tile in
/// order instead of touching `kc` rows far apart per tile. The input is read row by row (the
/// prefetchers follow each row; it is usually cold, just written by the previous node).
fn pack_input(x: &[f32], ldx: usize, kc: usize, positions: usize, out: &mut [f32]) {
    let full = positions / NR;
    let tail = positions - full * NR;
    for kk in 0..kc {
        let row = &x[kk * ldx..kk * ldx + positions];
        for (t, src) in row.chunks_exact(NR).enumerate() {
            let d: &mut [f32; NR] = (&mut out[(t * kc + kk) * NR..][..NR])
                .try_into()
                .expect("NR floats");
            *d = src.try_into().expect("NR floats");
        }
        if tail > 0 {
            let d = &mut out[(full * kc + kk) * NR..][..NR];
            d[..tail].copy_from_slice(&row[full * NR..]);
            d[tail..].fill(0.0);
        }
    }
}

/// [`pack_input`] for a strided conv: output positions `p0..p0 + positions` gather the input
/// values they read (each row is read once per tile of 16 positions, the tiles in order).
/// With AVX-512 and a stride of 2 along the last axis (ResNet's 1×1/2 shortcuts) the gather
/// runs a vector at a time: the block's positions are cut into runs that stay in one output
/// row and one tile ([`even_runs`]), and each run of each channel is two masked loads of
/// consecutive inputs, one permute keeping the even lanes and one masked store. The scalar
/// gather, one load and store per value from a cold input, took 12% of the 256→512 shortcut
/// at 56×56 → 28×28 (`perf`, 1 thread) against 67% for its register tiles. That conv alone (8
/// alternating runs of the binaries, fastest) took 0.925× the time at 1 thread, 512→1024 to
/// 14×14 0.98×; in ResNet-50 the two shortcuts 0.96–0.98× (the cold input, not the gather,
/// dominates there). The values are copied, not computed: the packed tiles are identical.
#[allow(clippy::too_many_arguments)]
fn pack_input_strided(
    level: SimdLevel,
    g: &ConvGeometry,
    x: &[f32],
    ldx: usize,
    kc: usize,
    p0: usize,
    positions: usize,
    out: &mut [f32],
) {
    let in_plane = g.in_plane();
    #[cfg(target_arch = "x86_64")]
    if level >= SimdLevel::Avx512 && g.strides.last() == Some(&2) {
        let mut runs = [EvenRun::default(); MAX_RUNS];
        let runs = even_runs(g, p0, positions, &mut runs);
        let tail = positions.next_multiple_of(NR) - positions;
        for kk in 0..kc {
            let row = &x[kk * ldx..kk * ldx + in_plane];
            for r in runs {
                let src = &row[r.src..r.src + 2 * r.len - 1];
                let dst = &mut out[(r.tile * kc + kk) * NR + r.lane..][..r.len];
                // SAFETY: AVX-512F present (the kernel clamps `level` to the detected one);
                // `gather_even`'s slice lengths hold (`2·len − 1` inputs, `len ≤ 16` outputs).
                unsafe { avx512_gather::gather_even(src, dst) };
            }
            if tail > 0 {
                out[((positions / NR) * kc + kk) * NR + NR - tail..][..tail].fill(0.0);
            }
        }
        return;
    }
    let _ = level;
    let mut offsets = [0usize; MAX_BLOCK];
    for (i, off) in offsets[..positions].iter_mut().enumerate() {
        *off = strided_input_index(g, p0 + i);
    }
    let offsets = &offsets[..positions];
    for kk in 0..kc {
        let row = &x[kk * ldx..kk * ldx + in_plane];
        for (t, offs) in offsets.chunks(NR).enumerate() {
            let d = &mut out[(t * kc + kk) * NR..][..NR];
            for (v, &o) in d.iter_mut().zip(offs) {
                *v = row[o];
            }
            d[offs.len()..].fill(0.0);
        }
    }
}

/// One stretch of consecutive output positions along the last axis inside one packed tile:
/// its first input index (the rest follow 2 apart), tile, first lane and length (≤ [`NR`]).
#[cfg(target_arch = "x86_64")]
#[derive(Debug, Clone, Copy, Default)]
struct EvenRun {
    src: usize,
    tile: usize,
    lane: usize,
    len: usize,
}

/// Most runs in a block: every run holds a position, and a block has at most [`MAX_BLOCK`].
#[cfg(target_arch = "x86_64")]
const MAX_RUNS: usize = MAX_BLOCK;

/// Cuts positions `p0..p0 + positions` into runs along the last output axis that stay in one
/// row and one packed tile ([`pack_input_strided`]'s stride-2 path); returns them in order.
#[cfg(target_arch = "x86_64")]
fn even_runs<'a>(
    g: &ConvGeometry,
    p0: usize,
    positions: usize,
    runs: &'a mut [EvenRun; MAX_RUNS],
) -> &'a [EvenRun] {
    let row_len = g.out_spatial.last().copied().unwrap_or(1).max(1);
    let mut count = 0;
    let end = p0 + positions;
    let mut p = p0;
    while p < end {
        let (tile, lane) = ((p - p0) / NR, (p - p0) % NR);
        let stop = end.min((p / row_len + 1) * row_len).min(p + NR - lane);
        runs[count] = EvenRun {
            src: strided_input_index(g, p),
            tile,
            lane,
            len: stop - p,
        };
        count += 1;
        p = stop;
    }
    &runs[..count]
}

#[cfg(target_arch = "x86_64")]
mod avx512_gather {
    use std::arch::x86_64::*;

    /// `dst[i] = src[2·i]` for `dst.len() ≤ 16`.
    ///
    /// # Safety
    /// Requires AVX-512F; `src.len() == 2·dst.len() − 1` (the masked loads and store touch
    /// only those elements).
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn gather_even(src: &[f32], dst: &mut [f32]) {
        let n = dst.len();
        debug_assert!((1..=16).contains(&n) && src.len() == 2 * n - 1);
        let lo = src.len().min(16);
        let hi = src.len() - lo;
        let mask = |k: usize| ((1u32 << k) - 1) as u16;
        let a = _mm512_maskz_loadu_ps(mask(lo), src.as_ptr());
        let b = _mm512_maskz_loadu_ps(mask(hi), src.as_ptr().wrapping_add(16));
        let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        let v = _mm512_permutex2var_ps(a, even, b);
        _mm512_mask_storeu_ps(dst.as_mut_ptr(), mask(n), v);
    }
}

/// A 1×1 conv with no input channels (or no positions): every output is
/// `act(bias + residual)`.
pub(crate) fn without_inputs(
    g: &ConvGeometry,
    bias: &[f32],
    residual: Option<&[f32]>,
    act: Activation,
    output: &mut [f32],
) {
    let plane = g.out_plane().max(1);
    for (i, v) in output[..g.output_len()].iter_mut().enumerate() {
        let co = i / plane % g.out_channels;
        *v = act.apply(bias[co] + residual.map_or(0.0, |r| r[i]));
    }
}

/// The index in an input channel that output position `p` of a 1×1 conv reads, dimension by
/// dimension (last fastest): strided convs skip input positions.
#[inline]
pub(crate) fn strided_input_index(g: &ConvGeometry, p: usize) -> usize {
    let (mut q, mut idx, mut scale) = (p, 0, 1);
    for d in (0..g.out_spatial.len()).rev() {
        idx += q % g.out_spatial[d] * g.strides[d] * scale;
        q /= g.out_spatial[d];
        scale *= g.in_spatial[d];
    }
    idx
}

/// Scratch floats per worker: one item's packed input slice.
fn slot_len(g: &ConvGeometry) -> usize {
    let s = Split::new(g, 1);
    s.depth * s.block.min(g.out_plane().next_multiple_of(NR))
}

/// Scratch floats [`pointwise_conv`] needs to run on `threads` workers (less, down to one
/// worker's share, runs fewer items at once).
pub fn scratch_len(g: &ConvGeometry, threads: usize) -> usize {
    slot_len(g) * threads.max(1)
}

/// One register tile's shape and store: `rows ≤ MR` output channels × `width ≤ NR` positions
/// at row stride `ldc`.
struct Tile<'a> {
    rows: usize,
    width: usize,
    ldc: usize,
    /// First K slice: store the sums (otherwise add them to what is stored).
    first: bool,
    /// Last K slice: apply bias, residual and `act` before the store.
    last: bool,
    bias: &'a [f32],
    /// Starts at the tile's first position of its first row (row stride `ldc`).
    residual: Option<&'a [f32]>,
    act: Activation,
}

/// Widest tile computed by [`avx2::narrow_tile`] (rows across the vector lanes) rather than by
/// the position-wide tiles, which spend six FMAs per input channel (one per row) however few of
/// their lanes hold positions: the last tile of a 17×17 plane (289 = 18·16 + 1) holds one
/// position, that of Winograd's GEMMs on 14×14 maps (49 tiles) one and on 28×28 maps (196)
/// four. Measured (1 thread, 6–8 alternating runs, fastest of each, against the previous
/// binary): ResNet-50's 256-channel Winograd convs at 14×14 0.94× the time, the 128-channel
/// ones at 28×28 0.98×, Inception-v3's 1×1 convs at 17×17 0.98×. Wider tails stay on the
/// half-width tile (at 5–8 positions the narrow one would need as many FMAs).
const NARROW_MAX: usize = 4;

/// How far ahead of a tile (floats along its rows) the AVX2 kernel prefetches the output and
/// residual.
const PREFETCH_AHEAD: usize = 2 * NR;

/// Computes one tile over `depth` input channels, summed in slices of `slice` (then added in
/// order), at `level` (the AVX-512 kernel for tiles wider than 8 positions, the AVX2 one, or
/// the portable one).
///
/// # Safety
/// `c` must be valid for reads and writes of `t.rows` rows of `t.width` floats at stride
/// `t.ldc`, owned by the caller; `x` is a packed input tile (`depth·NR` floats,
/// [`pack_input`]); `a` holds `depth·MR` floats; `t.residual` covers the tile like `c`.
#[inline]
unsafe fn compute_tile(
    level: SimdLevel,
    depth: usize,
    slice: usize,
    a: &[f32],
    x: &[f32],
    c: *mut f32,
    t: &Tile<'_>,
) {
    assert!(a.len() >= depth * MR && x.len() >= depth * NR && slice > 0);
    #[cfg(target_arch = "x86_64")]
    if level >= SimdLevel::Avx2 && t.width <= NARROW_MAX {
        // SAFETY: AVX2+FMA present (level clamped to the detected one); the slices were
        // checked above and the tile satisfies the kernel's contract by this function's.
        return avx2::narrow_tile(depth, slice, a.as_ptr(), x.as_ptr(), c, t);
    }
    #[cfg(target_arch = "x86_64")]
    if level >= SimdLevel::Avx512 && t.width > NR / 2 {
        // A ragged tile of at most 8 positions takes the AVX2 kernel's one-vector path, half
        // the work of a 16-lane vector.
        // SAFETY: AVX-512F present (level clamped to the detected one); as below.
        return avx512::tile_6x16(depth, slice, a.as_ptr(), x.as_ptr(), c, t);
    }
    #[cfg(target_arch = "x86_64")]
    if level >= SimdLevel::Avx2 {
        // SAFETY: AVX2+FMA present (level clamped to the detected one); the slices were
        // checked above and the tile satisfies the kernel's contract by this function's.
        return avx2::tile_6x16(depth, slice, a.as_ptr(), x.as_ptr(), c, t);
    }
    let _ = level;
    tile_portable(depth, slice, a, x, c, t)
}

/// [`compute_tile`] for a full tile read in place ([`reads_in_place`]): its `depth` input
/// rows start `xs` floats apart in `x`, the tile's 16 positions at the start of each. The
/// same sums as [`compute_tile`] on the packed copy of those rows.
///
/// # Safety
/// As [`compute_tile`], with `x` holding `(depth − 1)·xs + NR` floats, a full tile
/// (`t.width == NR`) and AVX-512F present.
#[inline]
unsafe fn compute_tile_in_place(
    depth: usize,
    slice: usize,
    a: &[f32],
    x: &[f32],
    xs: usize,
    c: *mut f32,
    t: &Tile<'_>,
) {
    assert!(depth > 0 && a.len() >= depth * MR && x.len() >= (depth - 1) * xs + NR);
    assert!(slice > 0 && t.width == NR);
    #[cfg(target_arch = "x86_64")]
    {
        assert!(detected_simd_level() >= SimdLevel::Avx512);
        // SAFETY: AVX-512F present (checked above); the slices, the width and the tile's
        // output satisfy the kernel's contract by this function's.
        avx512::tile_at::<false>(depth, slice, a.as_ptr(), x.as_ptr(), xs, c, t)
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("in-place tiles need AVX-512")
}

/// Two panels' tiles over the same input tile (AVX-512 only; `level` must be at least
/// [`SimdLevel::Avx512`]): the same sums as two [`compute_tile`] calls on full panels.
///
/// # Safety
/// [`compute_tile`]'s contract for each (`a[i]`, `c[i]`, `t[i]`), both tiles of [`MR`] rows.
#[inline]
unsafe fn compute_pair(
    level: SimdLevel,
    depth: usize,
    slice: usize,
    a: [&[f32]; 2],
    x: &[f32],
    c: [*mut f32; 2],
    t: [&Tile<'_>; 2],
) {
    assert!(a.iter().all(|a| a.len() >= depth * MR) && x.len() >= depth * NR && slice > 0);
    assert!(t.iter().all(|t| t.rows == MR));
    #[cfg(target_arch = "x86_64")]
    if level.min(detected_simd_level()) >= SimdLevel::Avx512 && t[0].width > NR / 2 {
        // SAFETY: AVX-512F present; the slices and rows were checked above and each tile
        // satisfies the kernel's contract by this function's.
        return avx512::tile_12x16(
            depth,
            slice,
            [a[0].as_ptr(), a[1].as_ptr()],
            x.as_ptr(),
            c,
            t,
        );
    }
    for i in 0..2 {
        compute_tile(level, depth, slice, a[i], x, c[i], t[i]);
    }
}

/// The portable tile: the same sums (one chain per output per slice, slices added in order)
/// without explicit SIMD.
///
/// # Safety
/// As [`compute_tile`].
unsafe fn tile_portable(
    depth: usize,
    slice: usize,
    a: &[f32],
    x: &[f32],
    c: *mut f32,
    t: &Tile<'_>,
) {
    let mut acc = [[0.0f32; NR]; MR];
    let mut total = [[0.0f32; NR]; MR];
    let mut done = 0;
    while done < depth {
        let n = slice.min(depth - done);
        let mut part = [[0.0f32; NR]; MR];
        let rows = x[done * NR..]
            .chunks_exact(NR)
            .zip(a[done * MR..].chunks_exact(MR));
        for (xr, ar) in rows.take(n) {
            for (pr, &w) in part.iter_mut().zip(ar) {
                for (s, &v) in pr.iter_mut().zip(xr) {
                    *s += w * v;
                }
            }
        }
        if done == 0 {
            total = part;
        } else {
            for (tr, pr) in total.iter_mut().zip(&part) {
                for (t, &p) in tr.iter_mut().zip(pr) {
                    *t += p;
                }
            }
        }
        acc = total;
        done += n;
    }
    for (r, accr) in acc.iter().enumerate().take(t.rows) {
        for (j, &s) in accr.iter().enumerate().take(t.width) {
            // SAFETY: (r, j) is inside the tile the caller owns.
            let dst = c.add(r * t.ldc + j);
            let mut v = if t.first { s } else { *dst + s };
            if t.last {
                v += t.bias[r] + t.residual.map_or(0.0, |res| res[r * t.ldc + j]);
                v = t.act.apply(v);
            }
            *dst = v;
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    use super::{Tile, MR, NARROW_MAX, NR, PREFETCH_AHEAD};
    use crate::ir::Activation;
    use std::arch::x86_64::*;

    /// Lane mask for the first `n` of 8 lanes (sign bit set = lane active); the other 1×1
    /// kernel's ragged stores use it too.
    #[inline(always)]
    pub(crate) unsafe fn mask(n: usize) -> __m256i {
        let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        _mm256_cmpgt_epi32(_mm256_set1_epi32(n as i32), lanes)
    }

    /// One step of a weight-broadcast register tile (both conv kernels whose tiles span
    /// positions): `acc[r][v] += a[r] · x[8v .. 8v + 8]` for `R` rows and `V` vectors.
    ///
    /// # Safety
    /// Requires AVX2 and FMA; `a` holds `R` floats and `x` `8·V`.
    #[inline(always)]
    pub(crate) unsafe fn fma_step<const V: usize, const R: usize>(
        acc: &mut [[__m256; 2]; R],
        a: *const f32,
        x: *const f32,
    ) {
        let x0 = _mm256_loadu_ps(x);
        let x1 = if V == 2 {
            _mm256_loadu_ps(x.add(8))
        } else {
            _mm256_setzero_ps()
        };
        for (r, accr) in acc.iter_mut().enumerate() {
            let w = _mm256_broadcast_ss(&*a.add(r));
            accr[0] = _mm256_fmadd_ps(w, x0, accr[0]);
            if V == 2 {
                accr[1] = _mm256_fmadd_ps(w, x1, accr[1]);
            }
        }
    }

    /// `n` steps of the register tile: `V` vectors of 8 positions (2, or 1 for a narrow tail)
    /// times `R` broadcast weights (the panel's live rows; rows `R..` of the result are zero),
    /// from a fresh zero. The steps are dealt round-robin to `S` sets of accumulators, added at
    /// the end: a 2-row tile has only four accumulators, and one FMA chain each would wait out
    /// the FMA latency at every step.
    ///
    /// # Safety
    /// Requires AVX2 and FMA; `a` holds `n·MR` floats and `x` `n·NR`.
    #[inline(always)]
    unsafe fn slice_sums<const V: usize, const R: usize, const S: usize>(
        n: usize,
        a: *const f32,
        x: *const f32,
    ) -> [[__m256; 2]; MR] {
        let mut sets = [[[_mm256_setzero_ps(); 2]; R]; S];
        let (mut a, mut x) = (a, x);
        for _ in 0..n / S {
            for set in sets.iter_mut() {
                fma_step::<V, R>(set, a, x);
                a = a.add(MR);
                x = x.add(NR);
            }
        }
        for _ in 0..n % S {
            fma_step::<V, R>(&mut sets[0], a, x);
            a = a.add(MR);
            x = x.add(NR);
        }
        let mut acc = [[_mm256_setzero_ps(); 2]; MR];
        for (r, accr) in acc.iter_mut().take(R).enumerate() {
            *accr = sets[0][r];
            for set in &sets[1..] {
                accr[0] = _mm256_add_ps(accr[0], set[r][0]);
                accr[1] = _mm256_add_ps(accr[1], set[r][1]);
            }
        }
        acc
    }

    /// A tile of at most [`NARROW_MAX`] positions with the panel's [`MR`] rows across the lanes
    /// of one vector per position: a step loads the panel's row of weights (six lanes, masked)
    /// and adds it times each position's broadcast input, one FMA per position instead of one
    /// per row. The steps of a K slice are dealt round-robin to `S` accumulator sets (added in
    /// order at the end) to keep several FMA chains in flight; slices are added in order as in
    /// the other tiles, and the epilogue is theirs, one value at a time.
    ///
    /// # Safety
    /// Requires AVX2 and FMA; the contract of `super::compute_tile`, with `t.width ≤
    /// NARROW_MAX`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn narrow_tile(
        depth: usize,
        slice: usize,
        a: *const f32,
        x: *const f32,
        c: *mut f32,
        t: &Tile<'_>,
    ) {
        let acc = match t.width {
            0..=1 => narrow_sums::<1, 8>(depth, slice, a, x),
            2 => narrow_sums::<2, 4>(depth, slice, a, x),
            _ => narrow_sums::<NARROW_MAX, 2>(depth, slice, a, x),
        };
        let mut sums = [[0.0f32; 8]; NARROW_MAX];
        for (dst, v) in sums.iter_mut().zip(acc) {
            _mm256_storeu_ps(dst.as_mut_ptr(), v);
        }
        for r in 0..t.rows {
            for (j, col) in sums.iter().enumerate().take(t.width) {
                let dst = c.add(r * t.ldc + j);
                let mut v = if t.first { col[r] } else { *dst + col[r] };
                if t.last {
                    // v + (bias + residual): the order of the vector epilogues.
                    let add = match t.residual {
                        Some(res) => t.bias[r] + res[r * t.ldc + j],
                        None => t.bias[r],
                    };
                    v = t.act.apply(v + add);
                }
                *dst = v;
            }
        }
    }

    /// One step of [`narrow_tile`]: `acc[j] += a[..MR] · x[j]`. The masked load reads the
    /// panel row's [`MR`] floats only (the packed weights' last row ends the buffer).
    ///
    /// # Safety
    /// Requires AVX2 and FMA; `a` holds [`MR`] floats and `x` `W`.
    #[inline(always)]
    unsafe fn narrow_step<const W: usize>(
        acc: &mut [__m256; W],
        rows: __m256i,
        a: *const f32,
        x: *const f32,
    ) {
        let w = _mm256_maskload_ps(a, rows);
        for (j, accj) in acc.iter_mut().enumerate() {
            *accj = _mm256_fmadd_ps(w, _mm256_broadcast_ss(&*x.add(j)), *accj);
        }
    }

    /// [`narrow_tile`]'s sums over `depth` channels in slices of `slice`, added in order: one
    /// vector of [`MR`] rows per position (`W` of them), lanes past the rows zero.
    ///
    /// # Safety
    /// As [`narrow_tile`].
    #[inline(always)]
    unsafe fn narrow_sums<const W: usize, const S: usize>(
        depth: usize,
        slice: usize,
        a: *const f32,
        x: *const f32,
    ) -> [__m256; NARROW_MAX] {
        let rows = mask(MR);
        let (mut a, mut x) = (a, x);
        let mut total = [_mm256_setzero_ps(); NARROW_MAX];
        let mut done = 0;
        while done < depth {
            let n = slice.min(depth - done);
            let mut sets = [[_mm256_setzero_ps(); W]; S];
            for _ in 0..n / S {
                for set in sets.iter_mut() {
                    narrow_step(set, rows, a, x);
                    a = a.add(MR);
                    x = x.add(NR);
                }
            }
            for _ in 0..n % S {
                narrow_step(&mut sets[0], rows, a, x);
                a = a.add(MR);
                x = x.add(NR);
            }
            let mut part = sets[0];
            for set in &sets[1..] {
                for (p, &v) in part.iter_mut().zip(set) {
                    *p = _mm256_add_ps(*p, v);
                }
            }
            for (tv, p) in total.iter_mut().zip(part) {
                *tv = if done == 0 { p } else { _mm256_add_ps(*tv, p) };
            }
            done += n;
        }
        total
    }

    /// The 6×16 tile: 12 accumulators, two input vectors per channel and one broadcast weight.
    /// A ragged tile (`t.width < 16`) stores (and reads the output and residual) through lane
    /// masks; its packed input lanes past the width are zero.
    ///
    /// # Safety
    /// Requires AVX2 and FMA; the contract of `super::compute_tile`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn tile_6x16(
        depth: usize,
        slice: usize,
        a: *const f32,
        x: *const f32,
        c: *mut f32,
        t: &Tile<'_>,
    ) {
        // The tile after next, in every output (and residual) row: those rows are 6 (or 12)
        // streams far apart, more than the hardware prefetchers follow at once. Measured
        // (ResNet-50, 2 threads, per node): convs with a residual 0.84–0.97× the time without,
        // the others unchanged. Prefetches never fault; `wrapping_add` keeps the address
        // arithmetic defined past the tensor's end.
        for r in 0..t.rows {
            let p = c.wrapping_add(r * t.ldc + PREFETCH_AHEAD) as *const i8;
            _mm_prefetch::<_MM_HINT_T0>(p);
            _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(60));
            if let Some(res) = t.residual {
                let p = res.as_ptr().wrapping_add(r * t.ldc + PREFETCH_AHEAD) as *const i8;
                _mm_prefetch::<_MM_HINT_T0>(p);
                _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(60));
            }
        }
        // A last panel of fewer than MR channels (64 = 10·6 + 4) computes only its rows, and a
        // tail of at most 8 positions one vector per row; either way in enough accumulator
        // sets to keep about twelve FMA chains in flight.
        let acc = match (t.rows, t.width > 8) {
            (0..=2, true) => sums::<2, 2, 3>(depth, slice, a, x),
            (0..=2, false) => sums::<1, 2, 6>(depth, slice, a, x),
            (3..=4, true) => sums::<2, 4, 1>(depth, slice, a, x),
            (3..=4, false) => sums::<1, 4, 3>(depth, slice, a, x),
            (_, true) => sums::<2, MR, 1>(depth, slice, a, x),
            (_, false) => sums::<1, MR, 2>(depth, slice, a, x),
        };
        if t.rows == MR && t.width == NR {
            store_full(acc, c, t);
        } else {
            store_masked(acc, c, t);
        }
    }

    /// The tile's sums over `depth` channels in slices of `slice`: `V` vectors of positions
    /// (1 for a tail of at most 8) × `R` live rows, in `S` accumulator sets.
    ///
    /// # Safety
    /// As [`tile_6x16`].
    #[inline(always)]
    unsafe fn sums<const V: usize, const R: usize, const S: usize>(
        depth: usize,
        slice: usize,
        a: *const f32,
        x: *const f32,
    ) -> [[__m256; 2]; MR] {
        if depth <= slice {
            // One slice (K ≤ 128, or one pass of a longer K): no running total.
            slice_sums::<V, R, S>(depth, a, x)
        } else {
            sliced_sums::<V, R, S>(depth, slice, a, x)
        }
    }

    /// The sums of several K slices, added in order (blocked summation, the order of the GEMM
    /// path's K slices: ((s1 + s2) + s3) + ..). The earlier slices' total is kept in L1
    /// through explicit loads and stores: the accumulators need all the registers, and a
    /// second register array would spill.
    ///
    /// # Safety
    /// As [`tile_6x16`].
    #[inline(always)]
    unsafe fn sliced_sums<const V: usize, const R: usize, const S: usize>(
        depth: usize,
        slice: usize,
        a: *const f32,
        x: *const f32,
    ) -> [[__m256; 2]; MR] {
        let (mut a, mut x) = (a, x);
        let mut total = [0.0f32; MR * NR];
        let tp = total.as_mut_ptr();
        let mut done = 0;
        loop {
            let n = slice.min(depth - done);
            let mut acc = slice_sums::<V, R, S>(n, a, x);
            a = a.add(n * MR);
            x = x.add(n * NR);
            if done > 0 {
                for (r, ar) in acc.iter_mut().enumerate().take(R) {
                    for (v, av) in ar.iter_mut().enumerate().take(V) {
                        *av = _mm256_add_ps(_mm256_loadu_ps(tp.add(r * NR + 8 * v)), *av);
                    }
                }
            }
            done += n;
            if done >= depth {
                return acc;
            }
            for (r, ar) in acc.iter().enumerate().take(R) {
                for (v, av) in ar.iter().enumerate().take(V) {
                    _mm256_storeu_ps(tp.add(r * NR + 8 * v), *av);
                }
            }
        }
    }

    /// Epilogue kinds of [`store_full`], as const parameters: the tile's stores run without a
    /// test per vector. When each vector tested first/last/residual/activation, a quarter of a
    /// 128-deep tile's samples fell outside its FMA loop; specialised, a twentieth. ResNet-50 at
    /// 1 thread, per node: 64→256 and 128→512 convs with a residual 0.79–0.87× the time, all
    /// 1×1 and Winograd nodes together 0.95×.
    const ACT_NONE: u8 = 0;
    const ACT_RELU: u8 = 1;
    const ACT_CLIP: u8 = 2;

    /// Stores a full 6×16 tile, dispatching once to the epilogue it needs.
    ///
    /// # Safety
    /// As [`tile_6x16`], with `t.rows == MR` and `t.width == NR`.
    #[inline(always)]
    unsafe fn store_full(acc: [[__m256; 2]; MR], c: *mut f32, t: &Tile<'_>) {
        let res = t.residual.map_or(std::ptr::null(), |r| r.as_ptr());
        let (lo, hi) = match t.act {
            Activation::Clip(l, h) => (l, h),
            _ => (0.0, 0.0),
        };
        let act = match t.act {
            Activation::Relu => ACT_RELU,
            Activation::Clip(..) => ACT_CLIP,
            _ => ACT_NONE,
        };
        let e = (acc, c, t.ldc, t.bias.as_ptr(), res, lo, hi);
        match (t.first, t.last, res.is_null(), act) {
            (true, false, _, _) => epilogue::<true, false, false, ACT_NONE>(e),
            (false, false, _, _) => epilogue::<false, false, false, ACT_NONE>(e),
            (true, true, true, ACT_NONE) => epilogue::<true, true, false, ACT_NONE>(e),
            (true, true, true, ACT_RELU) => epilogue::<true, true, false, ACT_RELU>(e),
            (true, true, true, _) => epilogue::<true, true, false, ACT_CLIP>(e),
            (true, true, false, ACT_NONE) => epilogue::<true, true, true, ACT_NONE>(e),
            (true, true, false, ACT_RELU) => epilogue::<true, true, true, ACT_RELU>(e),
            (true, true, false, _) => epilogue::<true, true, true, ACT_CLIP>(e),
            (false, true, true, ACT_NONE) => epilogue::<false, true, false, ACT_NONE>(e),
            (false, true, true, ACT_RELU) => epilogue::<false, true, false, ACT_RELU>(e),
            (false, true, true, _) => epilogue::<false, true, false, ACT_CLIP>(e),
            (false, true, false, ACT_NONE) => epilogue::<false, true, true, ACT_NONE>(e),
            (false, true, false, ACT_RELU) => epilogue::<false, true, true, ACT_RELU>(e),
            (false, true, false, _) => epilogue::<false, true, true, ACT_CLIP>(e),
        }
    }

    /// What [`epilogue`] stores: sums, output, row stride, bias, residual (null: none), clip
    /// bounds.
    type Epi = (
        [[__m256; 2]; MR],
        *mut f32,
        usize,
        *const f32,
        *const f32,
        f32,
        f32,
    );

    /// `c = act(sums [+ c] [+ bias + residual])` for a full tile (the same operation order as
    /// [`store_masked`]).
    ///
    /// # Safety
    /// As [`store_full`]; `bias` holds [`MR`] floats, `res` (when `RES`) covers the tile.
    #[inline(always)]
    unsafe fn epilogue<const FIRST: bool, const LAST: bool, const RES: bool, const ACT: u8>(
        (acc, c, ldc, bias, res, lo, hi): Epi,
    ) {
        let (zero, lo, hi) = (_mm256_setzero_ps(), _mm256_set1_ps(lo), _mm256_set1_ps(hi));
        for (r, accr) in acc.iter().enumerate() {
            let crow = c.add(r * ldc);
            let b = _mm256_set1_ps(*bias.add(r));
            for (v, &sum) in accr.iter().enumerate() {
                let p = crow.add(8 * v);
                let mut y = sum;
                if !FIRST {
                    y = _mm256_add_ps(_mm256_loadu_ps(p), y);
                }
                if LAST {
                    let add = if RES {
                        _mm256_add_ps(b, _mm256_loadu_ps(res.add(r * ldc + 8 * v)))
                    } else {
                        b
                    };
                    y = _mm256_add_ps(y, add);
                    if ACT == ACT_RELU {
                        // max(0, NaN) is NaN: ONNX Relu keeps NaN.
                        y = _mm256_max_ps(zero, y);
                    } else if ACT == ACT_CLIP {
                        y = _mm256_min_ps(_mm256_max_ps(y, lo), hi);
                    }
                }
                _mm256_storeu_ps(p, y);
            }
        }
    }

    /// Stores a ragged tile (fewer rows or positions) through lane masks.
    ///
    /// Compiled for AVX2 itself: without `target_feature` here its intrinsics were
    /// out-of-line calls (5.5% of `perf` samples of a 64→256 conv at 56×56, whose last panel
    /// of 4 rows stores every tile through this path; every last tile of a 7×7 or 14×14 map
    /// does too). Compiled for AVX2, that conv alone (best of 2000, 1 thread): 1.43 → 1.27 ms;
    /// 512→2048 at 7×7 1.54 → 1.42 ms.
    ///
    /// # Safety
    /// As [`tile_6x16`].
    #[inline(never)]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn store_masked(acc: [[__m256; 2]; MR], c: *mut f32, t: &Tile<'_>) {
        let zero = _mm256_setzero_ps();
        let masks = [mask(t.width), mask(t.width.saturating_sub(8))];
        let load = |p: *const f32, v: usize| -> __m256 { _mm256_maskload_ps(p, masks[v]) };
        let (lo, hi) = match t.act {
            Activation::Clip(l, h) => (_mm256_set1_ps(l), _mm256_set1_ps(h)),
            _ => (zero, zero),
        };
        for (r, accr) in acc.iter().enumerate().take(t.rows) {
            let crow = c.add(r * t.ldc);
            let bias = _mm256_set1_ps(t.bias[r]);
            for (v, &sum) in accr.iter().enumerate().take(t.width.div_ceil(8)) {
                let p = crow.add(8 * v);
                let mut y = sum;
                if !t.first {
                    y = _mm256_add_ps(load(p, v), y);
                }
                if t.last {
                    // y + (bias + residual): the order of the other conv epilogues.
                    let mut add = bias;
                    if let Some(res) = t.residual {
                        add = _mm256_add_ps(bias, load(res.as_ptr().add(r * t.ldc + 8 * v), v));
                    }
                    y = _mm256_add_ps(y, add);
                    y = match t.act {
                        // max(0, NaN) is NaN: ONNX Relu keeps NaN.
                        Activation::Relu => _mm256_max_ps(zero, y),
                        Activation::Clip(..) => _mm256_min_ps(_mm256_max_ps(y, lo), hi),
                        _ => y,
                    };
                }
                _mm256_maskstore_ps(p, masks[v], y);
            }
        }
    }
}

/// The 6×16 tile in AVX-512: one 16-lane vector per output row, so a step is one input load
/// and six FMAs whose broadcast weight is folded into the instruction (`{1to16}`), against
/// AVX2's two loads, six broadcasts and twelve FMAs for the same arithmetic. Same packed
/// layouts, same sums (one chain per output per K slice, slices added in order).
///
/// Measured on an AMD Zen 4 core (AVX-512 on 256-bit units, so the same FMA peak as AVX2),
/// ResNet-50 per node at 1 thread, 10 alternating runs of one binary, fastest of each, against
/// the AVX2 tiles (the same binary with the choice switched at run time): 1×1 convs with 1024 input channels at 14×14
/// 0.93–0.95×, Winograd's 512-channel elements at 7×7 0.82× (with [`tile_12x16`]); all nodes
/// 0.971×. A 16-lane tile costs as much at 4 positions as at 16, so ragged tiles of at most
/// 8 positions stay on AVX2 (where Winograd's 49-position elements at 14×14 were 1.06×
/// slower before that).
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{Tile, MR, NR, PREFETCH_AHEAD};
    use crate::ir::Activation;
    use std::arch::x86_64::*;

    /// The tile: sums in registers, then the epilogue (full tiles specialised, ragged ones
    /// through lane masks; packed input lanes past the width are zero).
    ///
    /// # Safety
    /// Requires AVX-512F; the contract of `super::compute_tile`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn tile_6x16(
        depth: usize,
        slice: usize,
        a: *const f32,
        x: *const f32,
        c: *mut f32,
        t: &Tile<'_>,
    ) {
        tile_at::<true>(depth, slice, a, x, NR, c, t)
    }

    /// [`tile_6x16`] with the input stepping as in [`slice_sums`]: `tile_at::<false>` reads a
    /// full tile in place, row `k` at `x + k·xs`. Each instance is compiled on its own, so the
    /// packed tile keeps its constant step folded into its loads.
    ///
    /// # Safety
    /// Requires AVX-512F; the contract of `super::compute_tile` (`PACKED`) or of
    /// `super::compute_tile_in_place`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn tile_at<const PACKED: bool>(
        depth: usize,
        slice: usize,
        a: *const f32,
        x: *const f32,
        xs: usize,
        c: *mut f32,
        t: &Tile<'_>,
    ) {
        prefetch_rows(c, t);
        // Fewer live rows (a last panel of 64 = 10·6 + 4 channels) run in more accumulator
        // sets, so at least six FMA chains hide the FMA latency.
        let acc = match t.rows {
            0..=2 => sums::<2, 3, PACKED>(depth, slice, a, x, xs),
            3..=4 => sums::<4, 2, PACKED>(depth, slice, a, x, xs),
            _ => sums::<MR, 1, PACKED>(depth, slice, a, x, xs),
        };
        store(acc, c, t);
    }

    /// The tile after next in every output (and residual) row, as in the AVX2 kernel.
    ///
    /// # Safety
    /// Requires AVX-512F (prefetches never fault).
    #[inline(always)]
    unsafe fn prefetch_rows(c: *mut f32, t: &Tile<'_>) {
        for r in 0..t.rows {
            let p = c.wrapping_add(r * t.ldc + PREFETCH_AHEAD) as *const i8;
            _mm_prefetch::<_MM_HINT_T0>(p);
            _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(60));
            if let Some(res) = t.residual {
                let p = res.as_ptr().wrapping_add(r * t.ldc + PREFETCH_AHEAD) as *const i8;
                _mm_prefetch::<_MM_HINT_T0>(p);
                _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(60));
            }
        }
    }

    /// The epilogue of one panel's tile: full tiles specialised, ragged ones through lane
    /// masks (packed input lanes past the width are zero).
    ///
    /// # Safety
    /// As [`tile_6x16`].
    #[inline(always)]
    unsafe fn store(acc: [__m512; MR], c: *mut f32, t: &Tile<'_>) {
        if t.rows == MR && t.width == NR {
            store_full(acc, c, t);
        } else {
            store_masked(acc, c, t);
        }
    }

    /// Two full panels' tiles over one input tile: twelve accumulators, each input vector
    /// loaded once for both panels (half the input traffic from L2 per FMA of
    /// [`tile_6x16`]). Each output's sums are those of [`tile_6x16`] on a full panel.
    ///
    /// # Safety
    /// Requires AVX-512F; `super::compute_pair`'s contract.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn tile_12x16(
        depth: usize,
        slice: usize,
        a: [*const f32; 2],
        x: *const f32,
        c: [*mut f32; 2],
        t: [&Tile<'_>; 2],
    ) {
        prefetch_rows(c[0], t[0]);
        prefetch_rows(c[1], t[1]);
        let (lo, hi) = if depth <= slice {
            pair_sums(depth, a, x)
        } else {
            let (mut a, mut x) = (a, x);
            let mut total = [0.0f32; 2 * MR * NR];
            let tp = total.as_mut_ptr();
            let mut done = 0;
            loop {
                let n = slice.min(depth - done);
                let (mut lo, mut hi) = pair_sums(n, a, x);
                a = [a[0].add(n * MR), a[1].add(n * MR)];
                x = x.add(n * NR);
                let all = lo.iter_mut().chain(hi.iter_mut());
                if done > 0 {
                    for (r, av) in all.enumerate() {
                        *av = _mm512_add_ps(_mm512_loadu_ps(tp.add(r * NR)), *av);
                    }
                }
                done += n;
                if done >= depth {
                    break (lo, hi);
                }
                for (r, av) in lo.iter().chain(hi.iter()).enumerate() {
                    _mm512_storeu_ps(tp.add(r * NR), *av);
                }
            }
        };
        store(lo, c[0], t[0]);
        store(hi, c[1], t[1]);
    }

    /// `n` steps of both panels from a fresh zero, one chain per output.
    ///
    /// # Safety
    /// Requires AVX-512F; `a[i]` hold `n·MR` floats and `x` `n·NR`.
    #[inline(always)]
    unsafe fn pair_sums(
        n: usize,
        a: [*const f32; 2],
        x: *const f32,
    ) -> ([__m512; MR], [__m512; MR]) {
        let mut lo = [_mm512_setzero_ps(); MR];
        let mut hi = [_mm512_setzero_ps(); MR];
        let ([mut a0, mut a1], mut x) = (a, x);
        for _ in 0..n {
            let xv = _mm512_loadu_ps(x);
            for r in 0..MR {
                lo[r] = _mm512_fmadd_ps(_mm512_set1_ps(*a0.add(r)), xv, lo[r]);
                hi[r] = _mm512_fmadd_ps(_mm512_set1_ps(*a1.add(r)), xv, hi[r]);
            }
            a0 = a0.add(MR);
            a1 = a1.add(MR);
            x = x.add(NR);
        }
        (lo, hi)
    }

    /// `n` steps from a fresh zero for `R` live rows (rows `R..` are zero), the steps dealt
    /// round-robin to `S` accumulator sets that are added at the end. Step `k` reads the
    /// input vector at `x + k·NR` when `PACKED`, else at `x + k·xs` (a tile read in place).
    ///
    /// # Safety
    /// Requires AVX-512F; `a` holds `n·MR` floats and `x` `(n − 1)·step + NR`.
    #[inline(always)]
    unsafe fn slice_sums<const R: usize, const S: usize, const PACKED: bool>(
        n: usize,
        a: *const f32,
        x: *const f32,
        xs: usize,
    ) -> [__m512; MR] {
        let xs = if PACKED { NR } else { xs };
        let mut sets = [[_mm512_setzero_ps(); R]; S];
        let (mut a, mut x) = (a, x);
        let step = |set: &mut [__m512; R], a: *const f32, x: *const f32| {
            let xv = _mm512_loadu_ps(x);
            for (r, acc) in set.iter_mut().enumerate() {
                *acc = _mm512_fmadd_ps(_mm512_set1_ps(*a.add(r)), xv, *acc);
            }
        };
        for _ in 0..n / S {
            for set in sets.iter_mut() {
                step(set, a, x);
                a = a.add(MR);
                x = x.add(xs);
            }
        }
        for _ in 0..n % S {
            step(&mut sets[0], a, x);
            a = a.add(MR);
            x = x.add(xs);
        }
        let mut acc = [_mm512_setzero_ps(); MR];
        for (r, out) in acc.iter_mut().take(R).enumerate() {
            *out = sets[0][r];
            for set in &sets[1..] {
                *out = _mm512_add_ps(*out, set[r]);
            }
        }
        acc
    }

    /// The sums over `depth` channels in slices of `slice`, added in order; the earlier
    /// slices' total waits in L1 (a second register array would not fit beside the sets).
    /// The input steps as in [`slice_sums`].
    ///
    /// # Safety
    /// As [`tile_at`].
    #[inline(always)]
    unsafe fn sums<const R: usize, const S: usize, const PACKED: bool>(
        depth: usize,
        slice: usize,
        a: *const f32,
        x: *const f32,
        xs: usize,
    ) -> [__m512; MR] {
        let xs = if PACKED { NR } else { xs };
        if depth <= slice {
            return slice_sums::<R, S, PACKED>(depth, a, x, xs);
        }
        let (mut a, mut x) = (a, x);
        let mut total = [0.0f32; MR * NR];
        let tp = total.as_mut_ptr();
        let mut done = 0;
        loop {
            let n = slice.min(depth - done);
            let mut acc = slice_sums::<R, S, PACKED>(n, a, x, xs);
            a = a.add(n * MR);
            x = x.add(n * xs);
            if done > 0 {
                for (r, av) in acc.iter_mut().enumerate().take(R) {
                    *av = _mm512_add_ps(_mm512_loadu_ps(tp.add(r * NR)), *av);
                }
            }
            done += n;
            if done >= depth {
                return acc;
            }
            for (r, av) in acc.iter().enumerate().take(R) {
                _mm512_storeu_ps(tp.add(r * NR), *av);
            }
        }
    }

    const ACT_NONE: u8 = 0;
    const ACT_RELU: u8 = 1;
    const ACT_CLIP: u8 = 2;

    /// Stores a full tile, dispatching once to the epilogue it needs (no test per vector;
    /// see the AVX2 kernel's measurements).
    ///
    /// # Safety
    /// As [`tile_6x16`], with `t.rows == MR` and `t.width == NR`.
    #[inline(always)]
    unsafe fn store_full(acc: [__m512; MR], c: *mut f32, t: &Tile<'_>) {
        let res = t.residual.map_or(std::ptr::null(), |r| r.as_ptr());
        let (lo, hi) = match t.act {
            Activation::Clip(l, h) => (l, h),
            _ => (0.0, 0.0),
        };
        let act = match t.act {
            Activation::Relu => ACT_RELU,
            Activation::Clip(..) => ACT_CLIP,
            _ => ACT_NONE,
        };
        let e = (acc, c, t.ldc, t.bias.as_ptr(), res, lo, hi);
        match (t.first, t.last, res.is_null(), act) {
            (true, false, _, _) => epilogue::<true, false, false, ACT_NONE>(e),
            (false, false, _, _) => epilogue::<false, false, false, ACT_NONE>(e),
            (true, true, true, ACT_NONE) => epilogue::<true, true, false, ACT_NONE>(e),
            (true, true, true, ACT_RELU) => epilogue::<true, true, false, ACT_RELU>(e),
            (true, true, true, _) => epilogue::<true, true, false, ACT_CLIP>(e),
            (true, true, false, ACT_NONE) => epilogue::<true, true, true, ACT_NONE>(e),
            (true, true, false, ACT_RELU) => epilogue::<true, true, true, ACT_RELU>(e),
            (true, true, false, _) => epilogue::<true, true, true, ACT_CLIP>(e),
            (false, true, true, ACT_NONE) => epilogue::<false, true, false, ACT_NONE>(e),
            (false, true, true, ACT_RELU) => epilogue::<false, true, false, ACT_RELU>(e),
            (false, true, true, _) => epilogue::<false, true, false, ACT_CLIP>(e),
            (false, true, false, ACT_NONE) => epilogue::<false, true, true, ACT_NONE>(e),
            (false, true, false, ACT_RELU) => epilogue::<false, true, true, ACT_RELU>(e),
            (false, true, false, _) => epilogue::<false, true, true, ACT_CLIP>(e),
        }
    }

    /// What [`epilogue`] stores: sums, output, row stride, bias, residual (null: none), clip
    /// bounds.
    type Epi = (
        [__m512; MR],
        *mut f32,
        usize,
        *const f32,
        *const f32,
        f32,
        f32,
    );

    /// `c = act(sums [+ c] [+ (bias + residual)])` for a full tile, in the order of
    /// [`store_masked`] and the AVX2 epilogues.
    ///
    /// # Safety
    /// As [`store_full`]; `bias` holds [`MR`] floats, `res` (when `RES`) covers the tile.
    #[inline(always)]
    unsafe fn epilogue<const FIRST: bool, const LAST: bool, const RES: bool, const ACT: u8>(
        (acc, c, ldc, bias, res, lo, hi): Epi,
    ) {
        let (zero, lo, hi) = (_mm512_setzero_ps(), _mm512_set1_ps(lo), _mm512_set1_ps(hi));
        for (r, &sum) in acc.iter().enumerate() {
            let p = c.add(r * ldc);
            let mut y = sum;
            if !FIRST {
                y = _mm512_add_ps(_mm512_loadu_ps(p), y);
            }
            if LAST {
                let b = _mm512_set1_ps(*bias.add(r));
                let add = if RES {
                    _mm512_add_ps(b, _mm512_loadu_ps(res.add(r * ldc)))
                } else {
                    b
                };
                y = _mm512_add_ps(y, add);
                if ACT == ACT_RELU {
                    // max(0, NaN) is NaN: ONNX Relu keeps NaN.
                    y = _mm512_max_ps(zero, y);
                } else if ACT == ACT_CLIP {
                    y = _mm512_min_ps(_mm512_max_ps(y, lo), hi);
                }
            }
            _mm512_storeu_ps(p, y);
        }
    }

    /// Stores a ragged tile (fewer rows or positions) through a lane mask: nothing outside
    /// the tile is read or written.
    ///
    /// # Safety
    /// As [`tile_6x16`].
    #[inline(never)]
    #[target_feature(enable = "avx512f")]
    unsafe fn store_masked(acc: [__m512; MR], c: *mut f32, t: &Tile<'_>) {
        let zero = _mm512_setzero_ps();
        let m: __mmask16 = ((1u32 << t.width.min(NR)) - 1) as __mmask16;
        let (lo, hi) = match t.act {
            Activation::Clip(l, h) => (_mm512_set1_ps(l), _mm512_set1_ps(h)),
            _ => (zero, zero),
        };
        for (r, &sum) in acc.iter().enumerate().take(t.rows) {
            let p = c.add(r * t.ldc);
            let mut y = sum;
            if !t.first {
                y = _mm512_add_ps(_mm512_maskz_loadu_ps(m, p), y);
            }
            if t.last {
                let mut add = _mm512_set1_ps(t.bias[r]);
                if let Some(res) = t.residual {
                    let rv = _mm512_maskz_loadu_ps(m, res.as_ptr().add(r * t.ldc));
                    add = _mm512_add_ps(add, rv);
                }
                y = _mm512_add_ps(y, add);
                y = match t.act {
                    // max(0, NaN) is NaN: ONNX Relu keeps NaN.
                    Activation::Relu => _mm512_max_ps(zero, y),
                    Activation::Clip(..) => _mm512_min_ps(_mm512_max_ps(y, lo), hi),
                    _ => y,
                };
            }
            _mm512_mask_storeu_ps(p, m, y);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::kernels::conv::tests::conv_ref;
    use crate::kernels::test_util::{rand_vec, with_threads};

    /// (batch, cin, spatial, cout, group, strides)
    pub(crate) type Case = (usize, usize, Vec<usize>, usize, usize, Vec<usize>);

    fn cases() -> Vec<Case> {
        let s1 = |n: usize| vec![1; n];
        vec![
            (1, 64, vec![56, 56], 256, 1, s1(2)),
            (1, 256, vec![7, 7], 70, 1, s1(2)),
            // Several K slices (300 → 2 × 150; 600 → 3 × 200), ragged tiles and panels.
            (2, 300, vec![5, 9], 13, 1, s1(2)),
            (1, 600, vec![3, 3], 20, 1, s1(2)),
            (1, 5, vec![1, 1], 7, 1, s1(2)),
            // A 2-position last tile, several K slices (2 × 65).
            (1, 130, vec![3, 6], 11, 1, s1(2)),
            // 3- and 4-position last tiles.
            (1, 40, vec![4, 5], 9, 1, s1(2)),
            (2, 33, vec![19], 14, 1, s1(1)),
            (1, 1, vec![17], 3, 1, s1(1)),
            (2, 12, vec![3, 4, 5], 9, 1, s1(3)),
            (1, 8, vec![6, 6], 12, 2, s1(2)),
            (1, 16, vec![5, 7], 8, 4, s1(2)),
            // Planes of whole 16-position tiles and few panels: read in place with AVX-512
            // (`reads_in_place`), one block and several, one K slice and several, grouped.
            (2, 48, vec![8, 8], 20, 1, s1(2)),
            (1, 520, vec![16, 20], 30, 1, s1(2)),
            (1, 32, vec![4, 8], 24, 2, s1(2)),
            // Many positions and channels: several blocks and panel parts.
            (1, 520, vec![30, 30], 40, 1, s1(2)),
            (1, 2048, vec![7, 7], 64, 1, s1(2)),
            // Strided (ResNet's 1×1/2 shortcut; odd sizes, unequal strides, 1-D and 3-D).
            (1, 64, vec![28, 28], 40, 1, vec![2, 2]),
            (2, 20, vec![9, 11], 14, 1, vec![2, 2]),
            (1, 300, vec![15, 15], 9, 1, vec![2, 1]),
            (1, 7, vec![20], 5, 1, vec![3]),
            (1, 6, vec![5, 6, 7], 4, 2, vec![2, 3, 1]),
            // Stride 2 along the last axis: 1-D, 3-D, rows of 1 and of 17 positions.
            (2, 9, vec![37], 7, 1, vec![2]),
            (1, 5, vec![3, 4, 9], 8, 1, vec![1, 2, 2]),
            (1, 3, vec![6, 2], 6, 1, vec![2, 2]),
            (1, 18, vec![34, 34], 13, 1, vec![2, 2]),
        ]
    }

    /// The 1×1 conv of a case.
    pub(crate) fn geometry(c: &Case) -> ConvGeometry {
        let (b, cin, sp, cout, grp, st) = c;
        let nd = sp.len();
        ConvGeometry::new(
            *b,
            *cin,
            sp,
            *cout,
            &vec![1; nd],
            st,
            &vec![1; nd],
            &vec![0; nd],
            &vec![0; nd],
            *grp,
        )
        .expect("valid case")
    }

    /// A 1×1 kernel's entry point: `(level, geometry, input, packed weights, bias, residual,
    /// activation, output, scratch)`.
    pub(crate) type Kernel = fn(
        SimdLevel,
        &ConvGeometry,
        &[f32],
        &[f32],
        &[f32],
        Option<&[f32]>,
        Activation,
        &mut [f32],
        &mut [f32],
    );

    /// Runs `kernel` (weights from `pack`, scratch for `slots` workers from `scratch_len`) on
    /// every case, at every SIMD level, with and without a residual, at each (threads, slots)
    /// pair: the results must agree bit for bit across thread counts and with a float64
    /// reference within rounding.
    pub(crate) fn check_kernel(
        cases: &[ConvGeometry],
        seed: u64,
        pack: fn(&ConvGeometry, &[f32]) -> Vec<f32>,
        scratch_len: fn(&ConvGeometry, usize) -> usize,
        kernel: Kernel,
        splits: &[(usize, usize)],
    ) {
        let acts = [
            Activation::Relu,
            Activation::None,
            Activation::Clip(-0.5, 0.7),
            Activation::Sigmoid,
            Activation::LeakyRelu(0.1),
        ];
        for (ci, g) in cases.iter().enumerate() {
            let s = seed + 4 * ci as u64;
            let x = rand_vec(g.input_len(), s);
            let w = rand_vec(g.weight_len(), s + 1);
            let bias = rand_vec(g.out_channels, s + 2);
            let res = rand_vec(g.output_len(), s + 3);
            let want = conv_ref(g, &x, &w, Some(&bias));
            let packed = pack(g, &w);
            let act = acts[ci % acts.len()];
            let tol = 2e-6 * (g.cin_per_group() as f64).sqrt() * 8.0 + 1e-5;
            for residual in [None, Some(&res[..])] {
                for level in SimdLevel::available() {
                    let mut outs = Vec::new();
                    for &(threads, slots) in splits {
                        let mut out = vec![f32::NAN; g.output_len()];
                        let mut scratch = vec![f32::NAN; scratch_len(g, slots)];
                        with_threads(threads, || {
                            kernel(
                                level,
                                g,
                                &x,
                                &packed,
                                &bias,
                                residual,
                                act,
                                &mut out,
                                &mut scratch,
                            )
                        });
                        outs.push(out);
                    }
                    for other in &outs[1..] {
                        assert_eq!(
                            outs[0].iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                            other.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                            "case {ci} {level:?}: thread counts or worker slots differ"
                        );
                    }
                    for (i, (&got, &r)) in outs[0].iter().zip(&want).enumerate() {
                        let pre = r + residual.map_or(0.0, |res| res[i] as f64);
                        let exp = act.apply(pre as f32) as f64;
                        assert!(
                            (got as f64 - exp).abs() <= tol * (1.0 + exp.abs()),
                            "case {ci} {level:?} {act:?} res={} at {i}: {got} vs {exp}",
                            residual.is_some()
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn pointwise_matches_f64_reference_every_level_and_thread_count() {
        let geometries: Vec<_> = cases().iter().map(geometry).collect();
        for g in &geometries {
            assert!(applies(g), "{g:?}");
            assert_eq!(
                pack_weights(g, &vec![0.0; g.weight_len()]).len(),
                packed_len(g)
            );
        }
        check_kernel(
            &geometries,
            10,
            pack_weights,
            scratch_len,
            pointwise_conv,
            &[(1, 1), (2, 2), (2, 1)],
        );
    }

    #[test]
    fn block_count_trades_weight_streams_against_output_rereads() {
        // ResNet-50 layer4 shortcut, 1024→2048 at 7×7: 8 MiB of weights, one block.
        assert_eq!(block_count(1024, 256, 2052, 4), 1);
        // layer2 conv1, 512→128 at 28×28: blocks of ≤ 272 positions keep the output in L2.
        assert_eq!(block_count(512, 128, 132, 49), 3);
        // layer1 conv3, 64→256 at 56×56, one K slice: 1024-position blocks.
        assert_eq!(block_count(64, 64, 258, 196), 4);
    }

    /// Two panels through the AVX-512 pair kernel give the bits of each panel alone (the
    /// pairing depends on the work split, the sums must not), with K in one slice and in
    /// several, as first, middle and last slice, at full and ragged widths.
    #[test]
    fn panel_pairs_match_panels_alone() {
        let ldc = 40;
        for (depth, slice) in [(64, 128), (300, 150), (7, 3)] {
            let a0 = rand_vec(depth * MR, 1);
            let a1 = rand_vec(depth * MR, 2);
            let x = rand_vec(depth * NR, 3);
            let bias = rand_vec(2 * MR, 4);
            let res = rand_vec(2 * MR * ldc, 5);
            let start = rand_vec(2 * MR * ldc, 6);
            for (first, last) in [(true, true), (true, false), (false, false), (false, true)] {
                for width in [NR, 13, 9] {
                    let tile = |p: usize| Tile {
                        rows: MR,
                        width,
                        ldc,
                        first,
                        last,
                        bias: &bias[p * MR..(p + 1) * MR],
                        residual: Some(&res[p * MR * ldc..]),
                        act: Activation::Relu,
                    };
                    let (t0, t1) = (tile(0), tile(1));
                    let mut alone = start.clone();
                    let mut paired = start.clone();
                    let (lo, hi) = alone.split_at_mut(MR * ldc);
                    // SAFETY: each tile is MR rows of `width ≤ ldc` floats at stride ldc inside
                    // its half of the buffer; the slices hold depth·MR and depth·NR floats.
                    unsafe {
                        compute_tile(
                            SimdLevel::Avx512,
                            depth,
                            slice,
                            &a0,
                            &x,
                            lo.as_mut_ptr(),
                            &t0,
                        );
                        compute_tile(
                            SimdLevel::Avx512,
                            depth,
                            slice,
                            &a1,
                            &x,
                            hi.as_mut_ptr(),
                            &t1,
                        );
                        let c0 = paired.as_mut_ptr();
                        compute_pair(
                            SimdLevel::Avx512,
                            depth,
                            slice,
                            [&a0, &a1],
                            &x,
                            [c0, c0.add(MR * ldc)],
                            [&t0, &t1],
                        );
                    }
                    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                    assert_eq!(
                        bits(&alone),
                        bits(&paired),
                        "depth {depth} slice {slice} first {first} last {last} width {width}"
                    );
                    assert_ne!(bits(&alone), bits(&start), "the tiles wrote nothing");
                }
            }
        }
    }

    /// The vector gather of stride-2 convs packs the same tiles as the scalar one, for blocks
    /// that start mid-row and mid-tile, rows shorter and longer than a tile, and ragged ends.
    #[test]
    fn stride2_packing_matches_the_scalar_gather() {
        let mut vector_checked = 0;
        for case in cases() {
            let g = geometry(&case);
            if g.strides.last() != Some(&2) {
                continue;
            }
            let (in_plane, plane) = (g.in_plane(), g.out_plane());
            let kc = g.cin_per_group().min(7);
            let x = rand_vec(kc * in_plane + 3, 99);
            for (p0, positions) in [(0, plane), (plane / 3, plane - plane / 3), (5, 1)] {
                let positions = positions.min(plane - p0).min(MAX_BLOCK);
                if positions == 0 {
                    continue;
                }
                let len = positions.next_multiple_of(NR) * kc;
                let mut want = vec![f32::NAN; len];
                pack_input_strided(
                    SimdLevel::Scalar,
                    &g,
                    &x,
                    in_plane,
                    kc,
                    p0,
                    positions,
                    &mut want,
                );
                for level in SimdLevel::available() {
                    let mut got = vec![f32::NAN; len];
                    pack_input_strided(level, &g, &x, in_plane, kc, p0, positions, &mut got);
                    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                    assert_eq!(
                        bits(&got),
                        bits(&want),
                        "{case:?} {level:?} block {p0}+{positions}"
                    );
                    vector_checked += usize::from(level >= SimdLevel::Avx512);
                }
            }
        }
        if detected_simd_level() >= SimdLevel::Avx512 {
            assert!(
                vector_checked >= 10,
                "only {vector_checked} vector packings checked"
            );
        }
    }

    /// Tiles that read their input in place give the bits of tiles that read a packed copy
    /// (same slices, same order), for the cases the rule picks; the rule picks them only with
    /// AVX-512, whole-tile planes, stride 1, NCHW channels and few panels.
    #[test]
    fn in_place_reads_match_packed_reads() {
        let avx512 = detected_simd_level() >= SimdLevel::Avx512;
        let mut picked = 0;
        for (ci, case) in cases().iter().enumerate() {
            let g = geometry(case);
            let panels = Split::new(&g, 2).panels;
            let rule = reads_in_place(SimdLevel::Avx512, &g, InputLayout::nchw(&g), panels);
            let expected = avx512
                && g.strides.iter().all(|&s| s == 1)
                && g.in_plane().is_multiple_of(NR)
                && panels <= IN_PLACE_MAX_PANELS;
            assert_eq!(rule, expected, "case {ci}: {g:?}");
            if !rule {
                continue;
            }
            picked += 1;
            let x = rand_vec(g.input_len(), 40 + ci as u64);
            let packed = pack_weights(&g, &rand_vec(g.weight_len(), 41 + ci as u64));
            let bias = rand_vec(g.out_channels, 42 + ci as u64);
            let res = rand_vec(g.output_len(), 43 + ci as u64);
            for threads in [1, 2] {
                let outs: Vec<Vec<u32>> = [false, true]
                    .iter()
                    .map(|&in_place| {
                        let mut out = vec![f32::NAN; g.output_len()];
                        let mut scratch = vec![f32::NAN; scratch_len(&g, threads)];
                        let target = Outputs::One(SendPtr(out.as_mut_ptr()));
                        with_threads(threads, || {
                            pointwise_impl(
                                SimdLevel::Avx512,
                                &g,
                                &x,
                                InputLayout::nchw(&g),
                                &packed,
                                &bias,
                                Some(&res),
                                Activation::Relu,
                                target,
                                &mut scratch,
                                in_place,
                            )
                        });
                        out.iter().map(|v| v.to_bits()).collect()
                    })
                    .collect();
                assert!(outs[0].iter().all(|&b| !f32::from_bits(b).is_nan()));
                assert_eq!(outs[0], outs[1], "case {ci}, {threads} threads");
            }
        }
        // Three cases qualify; without AVX-512 none may.
        assert_eq!(picked, if avx512 { 3 } else { 0 });
    }

    #[test]
    fn splits_cover_every_output_once() {
        for threads in [1, 2, 8] {
            for case in cases() {
                let g = geometry(&case);
                let s = Split::new(&g, threads);
                let mut seen = vec![0u8; g.batch * g.group * s.panels * g.out_plane()];
                for i in 0..s.items(&g) {
                    let it = s.item(&g, i);
                    for p in it.b0..it.b1 {
                        for q in it.p0..it.p1 {
                            seen[((it.n * g.group + it.grp) * s.panels + p) * g.out_plane() + q] +=
                                1;
                        }
                    }
                }
                assert!(seen.iter().all(|&c| c == 1), "{case:?} t{threads}");
            }
        }
    }
}
