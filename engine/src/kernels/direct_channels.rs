//! Direct convolution (2-D, group 1) with the register tile across output channels: each
//! tile is [`PR`] output positions (input values broadcast from wherever they lie) × [`CR`]
//! output channels (two vectors of weights packed at load).
//!
//! Why: [`super::direct_conv`] tiles 16 consecutive positions of a phase-plane row, so it
//! computes and throws away the columns between output rows (a 3×3/2 conv from 28×28 to
//! 14×14 computes 15 columns per 14 kept, then 224 positions for 210: 14% wasted; 17 → 8
//! wastes a fifth) and rounds output channels up to 6-row panels (32 → 36). Here positions
//! are numbered over the output plane itself and a tile may cross output rows: each position
//! broadcasts its own input address, so strides, padding and row ends cost nothing in the
//! inner loop, and only the plane's last tile is ragged (summed at its own width). Channels
//! come in 16s, which ResNet's and Inception's widths are multiples of.
//!
//! 1. Padded convs copy the image once into a zero-padded buffer `cin × Hp × Wp` (on several
//!    workers, where the strips below allow, each worker copies only the padded rows of its
//!    strip into its own slot: `strip_padding`); unpadded ones read the input where it lies.
//!    No phase split: broadcasts read any address.
//! 2. A work item is a strip of position tiles × a range of 16-channel panels. For each chunk
//!    of input channels (at most `CHUNK_K` = 128 multiply-adds per output, the blocked summation
//!    of the other conv paths) the tile's input stays in L1 while every panel's weights
//!    stream past it; partial sums wait in the worker's totals (`[positions][CR]` per panel).
//! 3. After the last chunk the totals are transposed to output rows (8×8 blocks in registers,
//!    `pointwise_channels::store_rows`) with bias, residual and activation, so each
//!    output is written once, as runs of the NCHW plane.
//!
//! Each output is the same chunk sums added in the same order whatever the thread count or
//! the work split, so results are bit-identical across thread counts.

use super::conv::ConvGeometry;
use super::cpu_features::{detected_simd_level, SimdLevel};
use super::gemm::SendPtr;
use super::pointwise_channels::{merge_part_into_totals, store_rows};
use super::worker_items::{for_each_item, for_each_item_state};
use crate::ir::Activation;
use rayon::prelude::*;

/// Output positions per register tile (broadcast operand).
pub const PR: usize = 6;
/// Output channels per register tile (two AVX2 vectors of packed weights).
pub const CR: usize = 16;
/// Most kernel taps (`kh·kw`): a chunk's offset table lives on the stack.
pub const MAX_TAPS: usize = 64;
/// Most multiply-adds per output per channel chunk (as [`super::direct_conv`]'s chunks: the
/// full models' error against float64 stays that of the other paths).
const CHUNK_K: usize = 128;
// A chunk holds at least one channel: its steps must fit a CHUNK_K-long table.
const _: () = assert!(MAX_TAPS <= CHUNK_K);
/// Floats of running totals per worker: every panel of a strip of positions, sized to stay in
/// L2 next to a chunk's weights.
const TOTALS_FLOATS: usize = 32 * 1024;

/// Whether [`direct_channels_conv`] can compute `g`: 2-D, one group, at most [`MAX_TAPS`]
/// taps, some input channels (with none, the sums would be the totals' stale values).
pub fn applies(g: &ConvGeometry) -> bool {
    g.in_spatial.len() == 2
        && g.group == 1
        && g.in_channels > 0
        && g.kernel_size() <= MAX_TAPS
        && g.out_plane() > 0
        && g.out_channels > 0
}

/// Whether the kernel should be the default for `g` (where Winograd is not chosen): it
/// [`applies`], the kernel is larger than 1×1 (1×1 convs have their own kernels), there are at
/// least 27 (`MIN_K`) multiply-adds per output, and rounding the output channels up to whole
/// 16-channel panels wastes little (at most 15%, `MAX_CHANNEL_WASTE`).
///
/// Per conv alone against the previous default (`engine profile`, 6 alternating runs, 28 Nov;
/// `ENGINE_DIRECT_CHANNELS=off`), time at 1 / 2 threads: ResNet-50's 3×3/2 at 28×28 0.90 /
/// 0.92, at 14×14 0.87 / 0.89, its 512-channel 3×3/2 to 7×7 (im2col before) 0.87 / 0.69, the
/// 64-channel 3×3 at 56×56 0.94 / 0.91, the 7×7/2 stem 0.90 / 0.98; Inception-v3's 3→32
/// 3×3/2 0.74 / 0.82, 32→32 and 32→64 3×3 at 147×147 0.91 / 0.94 and 0.96 / 0.97, 288→384
/// 3×3/2 0.88 / 0.88, 96→96, 192→320 and 192→192 3×3/2 0.76, 0.80 and 0.69 at 1 thread, 5×5
/// 0.91 / 0.71, 7×1 0.95 / 0.97, 1×7 0.875 / 0.95, 1×3 and 3×1 at 8×8 0.91. Where Winograd
/// is the default it stays faster (64→96 at 35×35: this kernel 1.1×, 448→384 at 8×8 1.5×).
pub fn worth_it(g: &ConvGeometry) -> bool {
    let cout = g.out_channels;
    applies(g)
        && g.kernel_size() > 1
        && g.in_channels * g.kernel_size() >= MIN_K
        && (cout.next_multiple_of(CR) as f64) <= MAX_CHANNEL_WASTE * cout as f64
}

/// Fewest multiply-adds per output for which [`worth_it`] picks the kernel (as
/// [`super::direct_conv`]: below it the per-tile overhead is unmeasured).
const MIN_K: usize = 27;

/// Most output channels computed per useful one (`ceil(cout / 16)·16 / cout`) for which
/// [`worth_it`] picks the kernel: 24 channels would compute 32, where the position-wide
/// kernel's 6-channel panels compute 24.
const MAX_CHANNEL_WASTE: f64 = 1.15;

/// Where one image lies in memory for the kernel, and how the work is cut.
#[derive(Debug, Clone, Copy)]
struct Layout {
    cin: usize,
    h: usize,
    w: usize,
    pt: usize,
    pl: usize,
    /// Padded image rows and columns (the input's own when there is no padding).
    hp: usize,
    wp: usize,
    sh: usize,
    sw: usize,
    ho: usize,
    wo: usize,
    cout: usize,
    /// Offsets of the taps (OIHW order) from an output position's window origin.
    taps: [usize; MAX_TAPS],
    ntaps: usize,
    /// Kernel rows and columns, and the dilation between rows.
    kh: usize,
    kw: usize,
    dh: usize,
    /// Some padding: the image is copied into the padded buffer first.
    padded: bool,
    /// Input channels per chunk.
    chunk_ch: usize,
    /// Position tiles per strip: every panel's totals of a strip fit [`TOTALS_FLOATS`].
    strip_tiles: usize,
}

impl Layout {
    fn new(g: &ConvGeometry) -> Layout {
        let padded = g.pads_begin.iter().chain(&g.pads_end).any(|&p| p > 0);
        let (h, w) = (g.in_spatial[0], g.in_spatial[1]);
        let hp = h + g.pads_begin[0] + g.pads_end[0];
        let wp = w + g.pads_begin[1] + g.pads_end[1];
        let (kh, kw) = (g.kernel[0], g.kernel[1]);
        let mut taps = [0usize; MAX_TAPS];
        for i in 0..kh {
            for j in 0..kw {
                taps[i * kw + j] = i * g.dilations[0] * wp + j * g.dilations[1];
            }
        }
        let ntaps = kh * kw;
        let cin = g.in_channels;
        // Equal chunks (11, 11, 10 rather than 14, 14, 4): a short last chunk pays a tile's
        // whole load-and-store of totals for few multiply-adds.
        let most = (CHUNK_K / ntaps.max(1)).clamp(1, cin.max(1));
        let chunk_ch = cin.div_ceil(cin.div_ceil(most).max(1)).max(1);
        let panels = g.out_channels.div_ceil(CR);
        let tiles = g.out_plane().div_ceil(PR);
        Layout {
            cin,
            h,
            w,
            pt: g.pads_begin[0],
            pl: g.pads_begin[1],
            hp,
            wp,
            sh: g.strides[0],
            sw: g.strides[1],
            ho: g.out_spatial[0],
            wo: g.out_spatial[1],
            cout: g.out_channels,
            taps,
            ntaps,
            kh,
            kw,
            dh: g.dilations[0],
            padded,
            chunk_ch,
            strip_tiles: (TOTALS_FLOATS / (panels * PR * CR).max(1)).clamp(1, tiles.max(1)),
        }
    }
    fn panels(&self) -> usize {
        self.cout.div_ceil(CR)
    }
    fn plane(&self) -> usize {
        self.ho * self.wo
    }
    fn tiles(&self) -> usize {
        self.plane().div_ceil(PR)
    }
    /// Floats between input channels in the layout the kernel reads.
    fn chan(&self) -> usize {
        self.hp * self.wp
    }
    /// Offset of output position `q`'s window origin within a channel.
    fn base(&self, q: usize) -> usize {
        let (oh, ow) = (q / self.wo, q % self.wo);
        oh * self.sh * self.wp + ow * self.sw
    }
    /// The kernel rows that read inside the image (not its zero padding) for some position
    /// of output rows `oh0..=oh1`: output row `oh`, kernel row `i` reads padded row
    /// `oh·sh + i·dh`, inside the image for `pt ≤ oh·sh + i·dh < pt + h`. The lower bound
    /// falls and the upper one falls with `oh`, so the union is `lo(oh1)..hi(oh0)`.
    fn live_rows(&self, oh0: usize, oh1: usize) -> (usize, usize) {
        let dh = self.dh.max(1);
        let lo = (self.pt.saturating_sub(oh1 * self.sh))
            .div_ceil(dh)
            .min(self.kh);
        let hi = (self.pt + self.h)
            .saturating_sub(oh0 * self.sh)
            .div_ceil(dh)
            .min(self.kh);
        (lo, hi.max(lo))
    }
    fn padded_len(&self) -> usize {
        if self.padded {
            self.cin * self.chan()
        } else {
            0
        }
    }
    /// Positions of a strip's totals per panel, whole 8-position blocks for the transposes.
    fn strip_positions(&self) -> usize {
        (self.strip_tiles * PR).next_multiple_of(8)
    }
    /// Running-total floats of one worker.
    fn totals_len(&self) -> usize {
        self.panels() * self.strip_positions() * CR
    }
}

/// Scratch floats [`direct_channels_conv`] needs to run `threads` workers: on one, the padded
/// image (padded convs only) plus its running totals; on more, one slot per worker (its totals,
/// and for padded convs the padded rows of its strip: `strip_padding`). With less, fewer
/// workers run; [`min_scratch_len`] must fit.
pub fn scratch_len(g: &ConvGeometry, threads: usize) -> usize {
    let l = Layout::new(g);
    if strip_padding(&l, threads) {
        strip_slot_len(&l, &Split::new(&l, threads)) * threads
    } else {
        l.padded_len() + l.totals_len() * threads.max(1)
    }
}

/// The least scratch a call on a pool of `threads` workers runs with (one worker then).
pub fn min_scratch_len(g: &ConvGeometry, threads: usize) -> usize {
    let l = Layout::new(g);
    if strip_padding(&l, threads) {
        strip_slot_len(&l, &Split::new(&l, threads))
    } else {
        scratch_len(g, 1)
    }
}

/// Whether a call on `threads` workers pads per strip: every worker copies the padded rows
/// its strip reads into its own slot (when its item's strip is not the one already there),
/// instead of all of them padding the whole image into one shared buffer first. Timed inside
/// the kernel (29 Nov), Inception-v3's shared copies took 5.6% of its direct convs' time at 2
/// threads, more in all than the same copies on one thread (2.1%): a separate parallel step,
/// where each worker rewrites lines the other core last read. A worker's own rows stay in its
/// cache, and the copy needs no step of its own. Taken where the split already has a strip per
/// worker and the strips' rows (which overlap by the window's height) add up to at most 1.5×
/// the image's: not for the 7×7/2 stem, whose strips of 4–5 output rows read 15–16 rows each.
/// Measured (two binaries, Inception-v3 at 2 threads, 10 alternating runs of `engine
/// profile`, fastest of each node): the 7×7 branches' nodes 0.945× the time (their 7×1 and 1×7
/// convs 0.83–0.91× in an earlier sitting), the run 0.984×.
fn strip_padding(l: &Layout, threads: usize) -> bool {
    if !l.padded || threads < 2 || l.tiles().div_ceil(l.strip_tiles) < threads {
        return false;
    }
    // The strips' rows overlap by the window's height: copying them must not cost much more
    // than copying the image once.
    let rows: usize = Split::new(l, threads).strip_heights(l).sum();
    2 * rows <= 3 * l.hp
}

/// Floats of one worker's slot when padding per strip: its running totals, then the padded
/// rows of the tallest strip.
fn strip_slot_len(l: &Layout, split: &Split) -> usize {
    l.totals_len() + l.cin * split.strip_heights(l).max().unwrap_or(0) * l.wp
}

/// Packs OIHW weights (`cout × cin·kh·kw`) chunk by chunk of input channels: within a chunk,
/// `ceil(cout / CR)` panels of `cc·kh·kw × CR` floats (k-major, output channel minor, zero
/// lanes past the last channel), one after the other, so a chunk's weights for every panel
/// are one sequential stream.
pub fn pack_weights(g: &ConvGeometry, weights: &[f32]) -> Vec<f32> {
    super::direct_conv::pack_chunked_panels(g, weights, Layout::new(g).chunk_ch, CR)
}

/// One unit of parallel work: panels `b0..b1` × position tiles `t0..t1`.
#[derive(Clone, Copy)]
struct Item {
    b0: usize,
    b1: usize,
    t0: usize,
    t1: usize,
}

/// How one call cuts its work into items (depends on the geometry and thread count only).
struct Split {
    strips: usize,
    parts: usize,
}

impl Split {
    fn new(l: &Layout, threads: usize) -> Split {
        let (tiles, panels) = (l.tiles(), l.panels());
        // Panels are split only to give every thread enough items (each part reads the
        // strip's input again); then, when the items do not divide among the threads, more
        // (shorter) strips, so that the workers finish together.
        let parts_for = |strips: usize| {
            if threads > 1 {
                (3 * threads).div_ceil(strips).clamp(1, panels)
            } else {
                1
            }
        };
        let mut strips = tiles.div_ceil(l.strip_tiles);
        if !(strips * parts_for(strips)).is_multiple_of(threads) {
            strips = (strips.div_ceil(threads) * threads).min(tiles);
        }
        Split {
            strips,
            parts: parts_for(strips),
        }
    }
    fn items(&self) -> usize {
        self.strips * self.parts
    }
    /// Padded rows each strip reads ([`Split::strip_rows`]).
    fn strip_heights<'a>(&'a self, l: &'a Layout) -> impl Iterator<Item = usize> + 'a {
        (0..self.strips).map(|s| {
            let (r0, r1) = self.strip_rows(l, s);
            r1 - r0
        })
    }
    /// Padded rows `r0..r1` that strip `s`'s positions read: from its first output row's
    /// window top to its last output row's window bottom.
    fn strip_rows(&self, l: &Layout, s: usize) -> (usize, usize) {
        let tiles = l.tiles();
        let (t0, t1) = (s * tiles / self.strips, (s + 1) * tiles / self.strips);
        if t0 >= t1 {
            return (0, 0);
        }
        let (oh0, oh1) = (t0 * PR / l.wo, ((t1 * PR).min(l.plane()) - 1) / l.wo);
        let r1 = oh1 * l.sh + (l.kh - 1) * l.dh + 1;
        (oh0 * l.sh, r1.min(l.hp))
    }
    /// Item `i`: consecutive items share a strip (its input stays in cache); tiles spread
    /// evenly over the strips and panels over the parts (32 panels in 6 parts: 5, 5, 5, 5, 6,
    /// 6 rather than five of 6 and one of 2, which left a worker idle at 2 threads).
    fn item(&self, l: &Layout, i: usize) -> Item {
        let (s, p) = (i / self.parts, i % self.parts);
        let (tiles, panels) = (l.tiles(), l.panels());
        Item {
            b0: p * panels / self.parts,
            b1: (p + 1) * panels / self.parts,
            t0: s * tiles / self.strips,
            t1: (s + 1) * tiles / self.strips,
        }
    }
}

/// `output = act(W ⊛ input + bias + residual)` for a 2-D group-1 conv ([`applies`]) with
/// weights from [`pack_weights`] and at least `min_scratch_len(g, threads)` floats of scratch
/// (`threads` the current pool's).
///
/// # Panics
/// If a slice is shorter than the geometry needs.
#[allow(clippy::too_many_arguments)]
pub fn direct_channels_conv(
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
    assert!(applies(g), "direct_channels_conv: not a 2-D group-1 conv");
    let threads = rayon::current_num_threads().max(1);
    assert!(
        scratch.len() >= min_scratch_len(g, threads),
        "scratch too short"
    );
    assert!(input.len() >= g.input_len() && output.len() >= g.output_len());
    assert!(bias.len() >= g.out_channels);
    if let Some(r) = residual {
        assert!(r.len() >= g.output_len());
    }
    let level = level.min(detected_simd_level());
    let l = Layout::new(g);
    let panels = l.panels();
    assert!(packed.len() >= panels * CR * g.in_channels * l.ntaps);
    let taps = &l.taps[..l.ntaps];
    let plane = l.plane();
    let in_img = l.cin * l.h * l.w;
    let out_img = l.cout * plane;
    let split = Split::new(&l, threads);
    let items = split.items();
    let tot_len = l.totals_len();
    let strip_pos = l.strip_positions();
    let per_strip = strip_padding(&l, threads);
    let slot_len = strip_slot_len(&l, &split);
    for n in 0..g.batch {
        let img = &input[n * in_img..(n + 1) * in_img];
        let out_ptr = SendPtr(output[n * out_img..(n + 1) * out_img].as_mut_ptr());
        let res = residual.map(|r| &r[n * out_img..(n + 1) * out_img]);
        // Item `it` into the totals `tot`, reading the layout's input rows from `row0` on in
        // `x` (the padded image, a strip of it, or the input itself), `chan` floats a channel.
        let run = |it: Item, tot: &mut [f32], x: &[f32], chan: usize, row0: usize| {
            // Every position of the item reads rows from row0 on (bases never wrap below).
            assert!(it.t0 * PR / l.wo * l.sh >= row0);
            let mut offsets = [0usize; CHUNK_K];
            let (mut live_off, mut live_step) = ([0usize; CHUNK_K], [0usize; CHUNK_K]);
            let mut c0 = 0;
            while c0 < l.cin {
                let cc = l.chunk_ch.min(l.cin - c0);
                let kc = cc * l.ntaps;
                // The chunk's steps in packing order: channel-major, then taps.
                for (c, offs) in offsets[..kc].chunks_exact_mut(l.ntaps).enumerate() {
                    for (o, &t) in offs.iter_mut().zip(taps) {
                        *o = (c0 + c) * chan + t;
                    }
                }
                let reach = offsets[..kc].iter().max().copied().unwrap_or(0);
                // Every read x[base + offset] is in bounds: the item's last position's
                // window origin plus the farthest step.
                assert!(l.base((it.t1 * PR).min(plane) - 1) - row0 * l.wp + reach < x.len());
                assert!(packed.len() >= (c0 * l.ntaps * panels + panels * kc) * CR);
                // The next chunk's weights for this item's panels, fetched into L2 a few lines
                // per tile while this chunk runs: on small maps (8×8, 7×7) a chunk is only a
                // handful of tiles, and its weights, 1–9 MiB per conv, come cold from memory.
                let next = (c0 + cc < l.cin).then(|| {
                    let nkc = l.chunk_ch.min(l.cin - c0 - cc) * l.ntaps;
                    let start = (c0 + cc) * l.ntaps * CR * panels + it.b0 * nkc * CR;
                    &packed[start..start + (it.b1 - it.b0) * nkc * CR]
                });
                let calls = (it.t1 - it.t0) * (it.b1 - it.b0);
                let per_call =
                    next.map_or(0, |n| n.len().div_ceil(calls.max(1)).next_multiple_of(16));
                let mut fetched = 0;
                for t in it.t0..it.t1 {
                    let q0 = t * PR;
                    let width = PR.min(plane - q0);
                    // Window origins of the tile's positions, row by row (one division per
                    // tile: six took a twentieth of a 32-channel conv's time).
                    let mut bases = [0usize; PR];
                    let (mut oh, mut ow) = (q0 / l.wo, q0 % l.wo);
                    for b in &mut bases[..width] {
                        *b = (oh * l.sh - row0) * l.wp + ow * l.sw;
                        ow += 1;
                        if ow == l.wo {
                            (oh, ow) = (oh + 1, 0);
                        }
                    }
                    // Kernel rows that only read the zero padding for every position of the
                    // tile (the top and bottom rows of a 7×1 conv on a 17×17 map: a tenth of
                    // its taps) are left out: their products are zeros.
                    let (i0, i1) = l.live_rows(q0 / l.wo, (q0 + width - 1) / l.wo);
                    let live = if l.padded && (i0, i1) != (0, l.kh) && i1 > i0 {
                        let mut n = 0;
                        for c in 0..cc {
                            let first = c * l.ntaps + i0 * l.kw;
                            let len = (i1 - i0) * l.kw;
                            live_off[n..n + len].copy_from_slice(&offsets[first..first + len]);
                            for (k, s) in live_step[n..n + len].iter_mut().enumerate() {
                                *s = first + k;
                            }
                            n += len;
                        }
                        Some(n)
                    } else {
                        None
                    };
                    let (offs, steps) = match live {
                        Some(n) => (&live_off[..n], Some(&live_step[..n])),
                        None => (&offsets[..kc], None),
                    };
                    for b in it.b0..it.b1 {
                        let w = &packed[c0 * l.ntaps * CR * panels + b * kc * CR..][..kc * CR];
                        let at = ((b - it.b0) * strip_pos + (t - it.t0) * PR) * CR;
                        if let Some(n) = next {
                            let end = (fetched + per_call).min(n.len());
                            prefetch_l2(&n[fetched..end]);
                            fetched = end;
                        }
                        // SAFETY: every base (from row0 on: asserted for the item) is at most
                        // the item's last one and every offset ≤ reach, with that base + reach
                        // < x.len() (asserted for this chunk); the panel holds kc·CR floats
                        // and the totals slice PR·CR.
                        unsafe {
                            tile_sums(
                                level,
                                offs,
                                steps,
                                w,
                                x,
                                &bases[..width],
                                c0 == 0,
                                &mut tot[at..at + PR * CR],
                            )
                        };
                    }
                }
                c0 += cc;
            }
            let p0 = it.t0 * PR;
            let count = (it.t1 * PR).min(plane) - p0;
            for b in it.b0..it.b1 {
                let rows = CR.min(l.cout - b * CR);
                let at = b * CR * plane + p0;
                let span = (rows - 1) * plane + count;
                // SAFETY: output channels b·CR.. (`rows` of them) at positions p0..p0 + count
                // are this item's alone (items are disjoint (panel, tile) sets); the span lies
                // inside this image's output, which outlives the parallel scope.
                let out = unsafe { std::slice::from_raw_parts_mut({ out_ptr }.0.add(at), span) };
                store_rows(
                    level,
                    &tot[(b - it.b0) * strip_pos * CR..][..strip_pos * CR],
                    &bias[b * CR..b * CR + rows],
                    res.map(|r| &r[at..at + span]),
                    act,
                    out,
                    count,
                    plane,
                );
            }
        };
        if per_strip {
            // Each task's slot: its totals, then the padded rows of the strip it last padded.
            for_each_item_state(
                items,
                &mut *scratch,
                slot_len,
                |_| None,
                |i, slot, held: &mut Option<usize>| {
                    let s = i / split.parts;
                    let (r0, r1) = split.strip_rows(&l, s);
                    let (tot, rows) = slot.split_at_mut(tot_len);
                    let rows = &mut rows[..l.cin * (r1 - r0) * l.wp];
                    if *held != Some(s) {
                        pad_rows(&l, img, r0, r1, rows, true);
                        *held = Some(s);
                    }
                    run(split.item(&l, i), tot, rows, (r1 - r0) * l.wp, r0);
                },
            );
        } else {
            let (padded, totals) = scratch.split_at_mut(l.padded_len());
            let x: &[f32] = if l.padded {
                pad_rows(&l, img, 0, l.hp, padded, false);
                padded
            } else {
                img
            };
            for_each_item(items, &mut *totals, tot_len, |i, tot| {
                run(split.item(&l, i), tot, x, l.chan(), 0)
            });
        }
    }
}

/// Asks for every cache line of `s` to be brought into L2 (a hint: no effect on results).
#[inline(always)]
pub(crate) fn prefetch_l2(s: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    for line in s.chunks(16) {
        // SAFETY: a prefetch hint for an address inside a live slice; it never faults and
        // writes nothing.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T1 }>(
                line.as_ptr().cast(),
            )
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = s;
}

/// Copies padded rows `r0..r1` of one NCHW image into `cin × (r1 − r0) × Wp` (all of them:
/// the zero-padded layout `cin × Hp × Wp`).
fn pad_rows(l: &Layout, img: &[f32], r0: usize, r1: usize, padded: &mut [f32], in_task: bool) {
    let (hw, chan) = (l.h * l.w, (r1 - r0) * l.wp);
    let copy = |(c, dst): (usize, &mut [f32])| {
        let src = &img[c * hw..(c + 1) * hw];
        for (y, row) in (r0..).zip(dst.chunks_exact_mut(l.wp)) {
            match y.checked_sub(l.pt).filter(|&sy| sy < l.h) {
                Some(sy) => {
                    row[..l.pl].fill(0.0);
                    row[l.pl..l.pl + l.w].copy_from_slice(&src[sy * l.w..(sy + 1) * l.w]);
                    row[l.pl + l.w..].fill(0.0);
                }
                None => row.fill(0.0),
            }
        }
    };
    if chan == 0 {
        return;
    }
    let body = &mut padded[..l.cin * chan];
    if body.len() >= 1 << 16 && rayon::current_num_threads() > 1 && !in_task {
        body.par_chunks_mut(chan).enumerate().for_each(copy);
    } else {
        body.chunks_mut(chan).enumerate().for_each(copy);
    }
}

/// Sums one chunk for one position tile (`bases.len() ≤ PR` positions, each reading input
/// `x[base + offset]` for the chunk's step `offset`) and one panel (`w`: `[steps][CR]`), and
/// stores (`first`) or adds the sums into `tot` (`[PR][CR]`). With `steps`, `offsets` are a
/// subset of the chunk's steps and `steps[k]` is the index of `offsets[k]`'s weights.
///
/// # Safety
/// Every `x[base + offset]` is in bounds (checked once per chunk by the caller: here it would
/// cost a pass over the offsets per tile); `steps`, when given, is ascending.
#[allow(clippy::too_many_arguments)]
unsafe fn tile_sums(
    level: SimdLevel,
    offsets: &[usize],
    steps: Option<&[usize]>,
    w: &[f32],
    x: &[f32],
    bases: &[usize],
    first: bool,
    tot: &mut [f32],
) {
    let width = bases.len();
    assert!((1..=PR).contains(&width) && tot.len() >= PR * CR);
    match steps {
        // Ascending (the caller's contract), so the last bounds them all; checking each took
        // a twentieth of a 7×1 conv's time.
        Some(steps) => {
            assert!(steps.len() == offsets.len());
            assert!(steps.last().is_none_or(|&s| (s + 1) * CR <= w.len()));
            debug_assert!(steps.windows(2).all(|p| p[0] < p[1]));
        }
        None => assert!(w.len() >= offsets.len() * CR),
    }
    #[cfg(target_arch = "x86_64")]
    if level >= SimdLevel::Avx2 {
        // SAFETY: AVX2+FMA present (the level never exceeds the detected one); every read
        // x[base + offset] is in bounds (the caller's contract), every step's weights lie in
        // the panel and the totals hold PR·CR floats (asserted above).
        unsafe {
            avx2::tile_sums(
                offsets,
                steps,
                w.as_ptr(),
                x.as_ptr(),
                bases,
                first,
                tot.as_mut_ptr(),
            )
        };
        return;
    }
    let _ = level;
    let mut part = [[0.0f32; CR]; PR];
    for (k, &off) in offsets.iter().enumerate() {
        let step = steps.map_or(k, |s| s[k]);
        let wr = &w[step * CR..(step + 1) * CR];
        for (pj, &base) in part.iter_mut().zip(bases) {
            let xv = x[base + off];
            for (s, &wv) in pj.iter_mut().zip(wr) {
                *s = xv.mul_add(wv, *s);
            }
        }
    }
    merge_part_into_totals(&part, width, first, tot);
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{CR, PR};
    use crate::kernels::pointwise_channels::avx2::merge_into_totals;
    use std::arch::x86_64::*;

    /// [`super::tile_sums`] in AVX2, the tile's width a const parameter so a ragged last tile
    /// does only its own positions' work.
    ///
    /// # Safety
    /// Requires AVX2 and FMA; every `x[base + offset]` is readable, `w` holds
    /// `offsets.len()·CR` floats, `tot` `PR·CR`; `1 ≤ bases.len() ≤ PR`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn tile_sums(
        offsets: &[usize],
        steps: Option<&[usize]>,
        w: *const f32,
        x: *const f32,
        bases: &[usize],
        first: bool,
        tot: *mut f32,
    ) {
        let Some(steps) = steps else {
            return sums_of::<false>(offsets, &[], w, x, bases, first, tot);
        };
        sums_of::<true>(offsets, steps, w, x, bases, first, tot)
    }

    /// [`tile_sums`] with the weights sequential (`GATHER` false) or at `steps`.
    ///
    /// # Safety
    /// As [`tile_sums`].
    #[inline(always)]
    unsafe fn sums_of<const GATHER: bool>(
        offsets: &[usize],
        steps: &[usize],
        w: *const f32,
        x: *const f32,
        bases: &[usize],
        first: bool,
        tot: *mut f32,
    ) {
        let args = (offsets, steps, w, x, bases, first, tot);
        match bases.len() {
            // Narrow tails in several accumulator sets, so that about twelve FMA chains are
            // in flight.
            1 => sums::<1, 6, GATHER>(args),
            2 => sums::<2, 3, GATHER>(args),
            3 => sums::<3, 2, GATHER>(args),
            4 => sums::<4, 1, GATHER>(args),
            5 => sums::<5, 1, GATHER>(args),
            _ => sums::<PR, 1, GATHER>(args),
        }
    }

    /// What [`sums`] reads: the offsets, their weight steps (`GATHER`), the panel, the input,
    /// the tile's bases, whether the totals start here, and the totals.
    type SumArgs<'a> = (
        &'a [usize],
        &'a [usize],
        *const f32,
        *const f32,
        &'a [usize],
        bool,
        *mut f32,
    );

    /// `NP` positions × 16 channels in `S` accumulator sets (steps dealt round-robin, added at
    /// the end): two weight vectors per step and one broadcast input value per position.
    ///
    /// # Safety
    /// As [`tile_sums`] with `bases.len() == NP`.
    #[inline(always)]
    unsafe fn sums<const NP: usize, const S: usize, const GATHER: bool>(
        (offsets, steps, w, x, bases, first, tot): SumArgs<'_>,
    ) {
        #[inline(always)]
        unsafe fn step<const NP: usize>(
            acc: &mut [[__m256; 2]; NP],
            w: *const f32,
            at: &[*const f32; NP],
            off: usize,
        ) {
            let w0 = _mm256_loadu_ps(w);
            let w1 = _mm256_loadu_ps(w.add(8));
            for (a, &p) in acc.iter_mut().zip(at) {
                let b = _mm256_broadcast_ss(&*p.add(off));
                a[0] = _mm256_fmadd_ps(b, w0, a[0]);
                a[1] = _mm256_fmadd_ps(b, w1, a[1]);
            }
        }
        let mut at = [x; NP];
        for (p, &b) in at.iter_mut().zip(bases) {
            *p = x.add(b);
        }
        let mut sets = [[[_mm256_setzero_ps(); 2]; NP]; S];
        // Step k's weights: the k-th of the panel, or those of steps[k].
        let weights = |k: usize| -> *const f32 {
            if GATHER {
                w.add(steps[k] * CR)
            } else {
                w.add(k * CR)
            }
        };
        let n = offsets.len();
        let whole = n / S * S;
        let mut k = 0;
        while k < whole {
            for (j, set) in sets.iter_mut().enumerate() {
                step::<NP>(set, weights(k + j), &at, *offsets.get_unchecked(k + j));
            }
            k += S;
        }
        while k < n {
            step::<NP>(&mut sets[0], weights(k), &at, *offsets.get_unchecked(k));
            k += 1;
        }
        merge_into_totals(&sets, first, tot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::direct_conv::tests::Case;
    use crate::kernels::pointwise_conv::tests::check_kernel;

    fn cases() -> Vec<Case> {
        let s1 = [1, 1];
        vec![
            // ResNet's 3×3/2 and 7×7/2 stem, Inception's unpadded 3×3/2 and first convs (odd
            // sizes, several chunks, ragged panels and last tiles).
            (1, 20, 14, 14, 24, [3, 3], [2, 2], [1, 1], [1, 1], [1, 1]),
            (1, 3, 23, 21, 8, [7, 7], [2, 2], [1, 1], [3, 3], [3, 3]),
            (2, 24, 15, 15, 33, [3, 3], [2, 2], [1, 1], [0, 0], [0, 0]),
            (1, 3, 19, 19, 32, [3, 3], [2, 2], [1, 1], [0, 0], [0, 0]),
            (1, 32, 11, 11, 17, [3, 3], s1, [1, 1], [0, 0], [0, 0]),
            (1, 33, 9, 10, 64, [3, 3], s1, [1, 1], [1, 1], [1, 1]),
            // 5×5 and 7×1 / 1×7 'same', dilation, asymmetric pads, unequal strides, stride 3.
            (1, 12, 9, 9, 20, [5, 5], s1, [1, 1], [2, 2], [2, 2]),
            (2, 10, 8, 8, 16, [7, 1], s1, [1, 1], [3, 0], [3, 0]),
            (1, 10, 8, 8, 16, [1, 7], s1, [1, 1], [0, 3], [0, 3]),
            (1, 6, 10, 10, 6, [3, 3], s1, [2, 3], [2, 3], [2, 3]),
            (2, 8, 7, 7, 13, [3, 3], s1, [1, 1], [0, 2], [2, 0]),
            (1, 10, 12, 13, 7, [3, 3], [2, 1], [1, 1], [1, 0], [0, 1]),
            (1, 5, 16, 17, 6, [5, 3], [3, 3], [1, 2], [2, 1], [1, 2]),
            // 1×1 strided, one position, one input channel; 300 channels of a 3×1 (chunks).
            (2, 20, 9, 11, 14, [1, 1], [2, 2], [1, 1], [0, 0], [0, 0]),
            (1, 1, 1, 1, 4, [3, 3], s1, [1, 1], [1, 1], [1, 1]),
            (2, 300, 5, 6, 7, [3, 1], s1, [1, 1], [1, 0], [1, 0]),
            // Pads wider than the kernel: output rows whose window lies wholly in the padding
            // (no live kernel row) next to rows with one or two.
            (1, 3, 2, 2, 16, [3, 3], s1, [1, 1], [4, 4], [4, 4]),
            (1, 4, 3, 5, 16, [7, 1], s1, [1, 1], [5, 0], [4, 0]),
            // Maps of two strips or more: at 2 threads each worker pads its strip's rows.
            (1, 3, 50, 50, 16, [3, 3], s1, [1, 1], [1, 1], [1, 1]),
            (1, 4, 48, 48, 16, [7, 1], s1, [1, 1], [3, 0], [3, 0]),
        ]
    }

    /// Padded convs pad per strip on several workers where the strips cover the workers and
    /// their rows overlap little, and share one padded image otherwise.
    #[test]
    fn pads_per_strip_where_strips_cover_the_workers() {
        let layout = |cin, hw, cout, k: [usize; 2], st, p: [usize; 2]| {
            let g = ConvGeometry::new(1, cin, &[hw, hw], cout, &k, &[st, st], &[1, 1], &p, &p, 1)
                .expect("geometry");
            Layout::new(&g)
        };
        let by_strip = [
            layout(3, 50, 16, [3, 3], 1, [1, 1]),
            layout(4, 48, 16, [7, 1], 1, [3, 0]),
            // Inception-v3's 7×1 and 1×7 at 17×17, ResNet-50's 3×3/2 from 28×28.
            layout(192, 17, 192, [7, 1], 1, [3, 0]),
            layout(160, 17, 192, [1, 7], 1, [0, 3]),
            layout(256, 28, 256, [3, 3], 2, [1, 1]),
        ];
        for l in &by_strip {
            assert!(strip_padding(l, 2), "{l:?}");
            assert!(!strip_padding(l, 1), "{l:?}");
        }
        let shared = [
            // One strip (ResNet-50's 512-channel 3×3/2 to 7×7), unpadded, and the 7×7/2 stem
            // (its strips of 4–5 output rows each read 15–16 padded rows).
            layout(512, 14, 512, [3, 3], 2, [1, 1]),
            layout(192, 17, 192, [3, 3], 1, [0, 0]),
            layout(3, 224, 64, [7, 7], 2, [3, 3]),
        ];
        for l in &shared {
            assert!(!strip_padding(l, 2), "{l:?}");
        }
    }

    #[test]
    fn matches_f64_reference_every_level_and_thread_count() {
        let geometries: Vec<_> = cases()
            .into_iter()
            .map(|(b, cin, h, w, cout, k, st, d, pb, pe)| {
                ConvGeometry::new(b, cin, &[h, w], cout, &k, &st, &d, &pb, &pe, 1)
                    .expect("valid case")
            })
            .collect();
        assert!(geometries.iter().all(applies));
        check_kernel(
            &geometries,
            130,
            pack_weights,
            scratch_len,
            direct_channels_conv,
            &[(1, 1), (2, 2), (2, 1), (3, 3)],
        );
    }

    #[test]
    fn picked_for_kernels_larger_than_1x1_with_whole_panels() {
        use crate::kernels::conv::{ConvAlgo, PackedConvWeights};
        let geom = |cin: usize, hw: usize, cout: usize, k: usize, s: usize, p: usize| {
            ConvGeometry::new(
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
            .expect("geometry")
        };
        // ResNet-50's 3×3/2 convs and stem, Inception-v3's first conv (K = 27).
        assert!(worth_it(&geom(128, 56, 128, 3, 2, 1)));
        assert!(worth_it(&geom(512, 14, 512, 3, 2, 1)));
        assert!(worth_it(&geom(3, 224, 64, 7, 2, 3)));
        assert!(worth_it(&geom(3, 299, 32, 3, 2, 0)));
        // 1×1 convs have their own kernels; one input channel of a 3×3 is too little work;
        // 24 output channels would compute 32.
        assert!(!worth_it(&geom(256, 56, 64, 1, 1, 0)));
        assert!(!worth_it(&geom(1, 32, 16, 3, 1, 1)));
        assert!(!worth_it(&geom(64, 32, 24, 3, 1, 1)));
        assert!(worth_it(&geom(64, 32, 100, 3, 1, 1)));
        // No input channels: left to the paths that write the bias alone.
        assert!(!applies(&geom(0, 8, 16, 3, 1, 1)));
        // The default choice (unless overridden for A/B runs): this kernel for ResNet-50's
        // 3×3/2, Winograd where it applies with enough channels (stage 1's 64-channel 3×3,
        // stage 3's 256-channel ones).
        if std::env::var_os("ENGINE_CONV_ALGO").is_some()
            || std::env::var_os("ENGINE_DIRECT_CHANNELS").is_some()
        {
            return;
        }
        let algo = |g: ConvGeometry| {
            let w = vec![0.01f32; g.weight_len()];
            PackedConvWeights::new(&g, &w, None).expect("pack").algo()
        };
        assert_eq!(algo(geom(128, 56, 128, 3, 2, 1)), ConvAlgo::DirectChannels);
        for winograd in [geom(64, 56, 64, 3, 1, 1), geom(256, 14, 256, 3, 1, 1)] {
            assert!(matches!(algo(winograd), ConvAlgo::Winograd(_)));
        }
    }

    #[test]
    fn strips_fit_the_totals_and_items_cover_every_tile_once() {
        for (cout, hw, threads) in [(384, 17, 2), (32, 147, 2), (16, 3, 3), (2048, 7, 2)] {
            let g = ConvGeometry::new(
                1,
                8,
                &[hw, hw],
                cout,
                &[3, 3],
                &[1, 1],
                &[1, 1],
                &[1, 1],
                &[1, 1],
                1,
            )
            .expect("geometry");
            let l = Layout::new(&g);
            assert!(l.totals_len() <= TOTALS_FLOATS + l.panels() * 8 * CR);
            let split = Split::new(&l, threads);
            let mut seen = vec![0u32; l.tiles() * l.panels()];
            for i in 0..split.items() {
                let it = split.item(&l, i);
                assert!(
                    it.t1 - it.t0 <= l.strip_tiles,
                    "{cout} {hw}: strip too long"
                );
                for t in it.t0..it.t1 {
                    for b in it.b0..it.b1 {
                        seen[t * l.panels() + b] += 1;
                    }
                }
            }
            assert!(seen.iter().all(|&s| s == 1), "{cout} {hw} t{threads}");
        }
    }
}
