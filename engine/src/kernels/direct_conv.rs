//! Direct convolution for 2-D convolutions (group 1): an implicit GEMM that reads the
//! input where it lies instead of copying it into an im2col matrix.
//!
//! Why: im2col + a crate GEMM moves every input value `kh·kw` times into the column matrix,
//! then the crate packs that matrix and the weights again on every call, then a separate pass
//! applies the epilogue — about a third of the time of Inception-v3's convolutions went to that
//! data movement (see docs/benchmarks.md). Here:
//!
//! 1. The image is copied once into a zero-padded buffer `cin × Hp × Wp` (plus a few floats of
//!    slack), so every tap of every output is an in-bounds read with no border tests. With
//!    strides `sh × sw` the padded image is split into `sh·sw` phase planes (rows `a, a+sh, ..`
//!    × columns `b, b+sw, ..`) so a strided conv reads like a stride-1 one.
//! 2. Output positions are numbered over the (phase) plane width: `q = oh·Ws + ow`. The input
//!    value tap `(ic, i, j)` needs for output `q` then sits at `q + offset(ic, i, j)`:
//!    consecutive outputs read consecutive inputs, so a tile of [`NR`] outputs reads one
//!    contiguous vector per tap, whatever the kernel shape. Positions with `ow ≥ Wo` are
//!    computed and thrown away (a fraction `(Ws − Wo) / Ws` of the work).
//! 3. A register tile of [`MR`] output channels × [`NR`] positions accumulates over a chunk of
//!    input channels (weights packed at load as `K × MR` panels, broadcast; input rows loaded
//!    as vectors, the next tile's rows prefetched). Chunks are sized so the tile's input rows
//!    stay in L1 while every block of output channels reuses them; partial sums wait in a
//!    per-worker buffer, and after the last chunk the epilogue (bias, residual, activation)
//!    writes the valid positions straight into the NCHW output — from registers when the
//!    tile is [`NR`] valid outputs of one row and the activation is ReLU or none.
//!
//! Each output value is the same chunked sum in the same order whatever the thread count or
//! the work split, so results are bit-identical across thread counts.

use super::conv::ConvGeometry;
use super::cpu_features::SimdLevel;
use super::elementwise::bias_residual_activation_with;
use super::gemm::SendPtr;
use super::worker_items::for_each_item;
use crate::ir::Activation;
use rayon::prelude::*;

/// Output channels per register tile (broadcast operand).
pub const MR: usize = 6;
/// Output positions per register tile (two AVX2 vectors).
pub const NR: usize = 16;
/// Most kernel taps (`kh·kw`) supported: the tap offset table lives on the stack.
pub const MAX_TAPS: usize = 64;
/// Partial-sum floats per worker: output channels × a strip of positions, accumulated over
/// channel chunks (sized to stay in L2 next to the weight chunk).
const CBUF_FLOATS: usize = 24 * 1024;
/// Most multiply-adds per output per channel chunk: each output sums chunk partials (shorter
/// rounding chains than one K-long sum, like a blocked GEMM). Full models' error against
/// float64 (scripts/check_full_models.py, engine / ONNX Runtime): with 256, 1.16–1.41; with
/// 128, 0.97–1.29 as before this kernel existed; 64 gained no accuracy and cost ~20% speed.
const CHUNK_K: usize = 128;
/// Cache lines of input one tile's channel chunk may touch: they stay in L1 (32 KiB = 512
/// lines) while every block of output channels reuses them, next to the streaming weights.
const CHUNK_LINES: usize = 192;

/// Channels per chunk for layout `l` with tap offsets `taps`: at most [`CHUNK_K`] taps and
/// [`CHUNK_LINES`] input lines.
fn chunk_channels(l: &Layout, taps: &[usize]) -> usize {
    let lo = taps.iter().copied().min().unwrap_or(0);
    let hi = taps.iter().copied().max().unwrap_or(0);
    // Each distinct input row a tile reads is a run of NR + (column reach) floats, which spans
    // one more line than its length needs when unaligned; on narrow planes the rows of one
    // channel overlap or touch, so the whole span may be fewer lines.
    let row_floats = NR + l.col_reach;
    let row_lines = l.rows_per_channel * (row_floats.div_ceil(16) + 1);
    let span_lines = (hi - lo + NR).div_ceil(16) + 1;
    let most = (CHUNK_K / taps.len().max(1))
        .min(CHUNK_LINES / row_lines.min(span_lines))
        .clamp(1, l.cin.max(1));
    // Equal chunks (11, 11, 10 rather than 14, 14, 4 for 32 channels of a 3×3): a short last
    // chunk pays a tile's whole load-and-store for few multiply-adds (Inception's 32→64 3×3
    // at 147×147: 0.96–0.99× the time).
    l.cin.div_ceil(l.cin.div_ceil(most))
}

/// Whether [`direct_conv`] can compute `g`: 2-D, one group, at most [`MAX_TAPS`] taps, strides
/// up to 4.
pub fn applies(g: &ConvGeometry) -> bool {
    g.in_spatial.len() == 2
        && g.group == 1
        && g.kernel_size() <= MAX_TAPS
        && g.strides.iter().all(|&s| (1..=4).contains(&s))
        // (at most 16 phase planes: `pad_image` tracks them in a bit mask)
        && g.out_plane() > 0
}

/// Most positions computed per useful output (`tiles·NR / (Ho·Wo)`) for which
/// [`worth_it`] picks the direct kernel: per node, it measured 0.75–0.95× im2col's time with
/// little overhead (35×35 and 17×17 maps with 3×3, 5×5 and 7×1 kernels) but 1.1–1.3× with a
/// fifth or more thrown away (8×8 maps with 3×3; 17×17 maps with 1×7 before they ran in the
/// transposed layout, where they now take 0.92–0.98×).
const MAX_OVERCOMPUTE: f64 = 1.15;

/// Most output channels of a strided conv for which [`worth_it`] picks the direct kernel.
/// Single-conv timings (interleaved, best of 40, 1 thread): 3×3/2 with 96 and 128 channels
/// 0.71–0.91× im2col's time, the 7×7/2 stem 0.71–0.84×, Inception's 288→384 3×3/2
/// 1.06–1.07× (its tall channel strips leave little of L1 to the input rows of a tile). In
/// the model that conv measured 0.98× im2col's time at 1 thread and 0.85× at 2 (4
/// interleaved runs; im2col re-packs its 4 MiB of weights per work item, which two cores
/// share the memory bandwidth for), so 384 channels are in; ResNet-50's 512-channel 3×3/2
/// (14×14 → 7×7) is not measured and stays on im2col.
const MAX_STRIDED_COUT: usize = 384;

/// Whether the direct kernel should be the default for `g`: it [`applies`], the kernel is
/// larger than 1×1, few computed positions are thrown away and, when strided, the conv is not
/// wider than `MAX_STRIDED_COUT` (384). Not 1×1 convs: here stride-2 shortcuts measured
/// 1.1–1.5× im2col's time, and stride-1 ones 1.04–1.36× the crate GEMM's (ResNet-50 and
/// Inception shapes; 0.7–1.08× for 64→256 at 56×56), also when each tile's rows were first
/// copied contiguous (1.0–1.85×); they run on `super::pointwise_conv`.
pub fn worth_it(g: &ConvGeometry) -> bool {
    let strided = g.strides.iter().any(|&s| s > 1);
    if !applies(g)
        || g.kernel_size() == 1
        || (strided && g.out_channels > MAX_STRIDED_COUT)
        || g.in_channels * g.kernel_size() < MIN_K
    {
        return false;
    }
    let l = Layout::new(g);
    l.tiles() >= MIN_TILES && (l.tiles() * NR) as f64 <= MAX_OVERCOMPUTE * (l.ho * l.wo) as f64
}

/// Fewest multiply-adds per output for which [`worth_it`] picks the direct kernel: below it
/// the per-tile overhead is unmeasured. Inception's 3→32 3×3/2 stem conv (K = 27) measured
/// 1.26× im2col's time in the model before the direct kernel's row-store epilogue and equal
/// strips; since (28 Nov, `engine profile`, 4 alternating runs, `ENGINE_CONV_ALGO=direct`)
/// 0.85× at 1 thread and 0.84× at 2, and VGG-16's 3→64 3×3 at 224×224 0.99×.
const MIN_K: usize = 27;

/// Fewest tiles of output positions for which [`worth_it`] picks the direct kernel: Inception's
/// 8×8 maps (4 tiles) with 384–448 channels measured 1.05–1.2× im2col's time in the model
/// (`engine profile`, 1 thread, 4 interleaved runs), though ~1.0× in isolation — with so few
/// positions every worker streams most of the (cold) weights for little work.
const MIN_TILES: usize = 8;

/// Layout of one image in scratch. The zero-padded image (`Hp × Wp`) is split into
/// `sh·sw` phase planes of `Hs × Ws` (phase `(a, b)` holds padded rows `a, a+sh, ..` and
/// columns `b, b+sw, ..`), so that a strided conv reads, for each tap, consecutive floats of one
/// phase plane for consecutive outputs — the stride-1 case is one phase, the padded image.
#[derive(Debug, Clone, Copy)]
struct Layout {
    cin: usize,
    h: usize,
    w: usize,
    sh: usize,
    sw: usize,
    /// Pads before the first row and column.
    pt: usize,
    pl: usize,
    /// Kernel dims and dilations.
    kh: usize,
    kw: usize,
    dh: usize,
    dw: usize,
    /// The layout holds the image transposed (rows are the input's columns): for stride-1
    /// kernels wider than tall (1×7, 1×3), whose padded width would otherwise be thrown away
    /// on every row. All other fields are then in transposed terms.
    transposed: bool,
    /// Phase plane rows and columns (`ceil(Hp / sh)`, `ceil(Wp / sw)`).
    hs: usize,
    ws: usize,
    ho: usize,
    wo: usize,
    /// Floats per channel: `sh·sw·hs·ws`.
    chan: usize,
    /// Farthest column offset of a tap inside its phase row.
    col_reach: usize,
    /// Distinct (phase, row) pairs the taps of one channel read.
    rows_per_channel: usize,
    cout: usize,
    /// Largest tap offset.
    reach: usize,
    /// Input channels per chunk ([`chunk_channels`]).
    chunk_ch: usize,
    /// Stride 1 without padding, not transposed: the NCHW image already is the layout, so
    /// tiles read it where it lies (no copy); only tiles whose vector reads would run past the
    /// image's end read a zero-extended copy of their rows (the worker's tail buffer).
    in_place: bool,
}

impl Layout {
    fn new(g: &ConvGeometry) -> Layout {
        // Axis 0 = rows, 1 = columns of the layout; swapped for the transposed layout.
        let stride1 = g.strides.iter().all(|&s| s == 1);
        let reach = |a: usize| g.dilations[a] * (g.kernel[a] - 1);
        let padded = |a: usize| g.in_spatial[a] + g.pads_begin[a] + g.pads_end[a];
        // Thrown-away positions per useful one: column reach / padded width (rows layout) vs
        // row reach / padded height (transposed).
        let transposed = stride1 && reach(0) * padded(1) < reach(1) * padded(0);
        let (r, c) = if transposed { (1, 0) } else { (0, 1) };
        let (h, w) = (g.in_spatial[r], g.in_spatial[c]);
        let (hp, wp) = (padded(r), padded(c));
        let (sh, sw) = (g.strides[r], g.strides[c]);
        let (ho, wo) = (g.out_spatial[r], g.out_spatial[c]);
        let (hs, mut ws) = (hp.div_ceil(sh), wp.div_ceil(sw));
        if sw == 1 {
            // Rows share their side padding: one gap of zeros between consecutive rows serves
            // as the right pad of one and the left pad of the next, so a row is `w + gap`
            // wide rather than `pl + w + pr`, and fewer computed positions are thrown away
            // (a 5×5 'same' conv at 35×35: 37 per 35 outputs instead of 39).
            let pl = g.pads_begin[c];
            let overflow = (wo + reach(c)).saturating_sub(pl + w);
            let gap = pl.max(overflow).max(wo.saturating_sub(w));
            ws = ws.min(w + gap);
        }
        let (kh, kw) = (g.kernel[r], g.kernel[c]);
        let (dh, dw) = (g.dilations[r], g.dilations[c]);
        let col_phases = kw.min(sw / gcd(sw, dw));
        let mut l = Layout {
            cin: g.in_channels,
            h,
            w,
            sh,
            sw,
            pt: g.pads_begin[r],
            pl: g.pads_begin[c],
            kh,
            kw,
            dh,
            dw,
            transposed,
            hs,
            ws,
            ho,
            wo,
            chan: sh * sw * hs * ws,
            col_reach: dw * (kw - 1) / sw,
            rows_per_channel: kh * col_phases,
            cout: g.out_channels,
            reach: 0,
            chunk_ch: 1,
            in_place: !transposed
                && stride1
                && g.pads_begin.iter().chain(&g.pads_end).all(|&p| p == 0),
        };
        let mut buf = [0usize; MAX_TAPS];
        let taps = l.taps(&mut buf);
        l.reach = taps.iter().copied().max().unwrap_or(0);
        l.chunk_ch = chunk_channels(&l, taps);
        l
    }
    fn tiles(&self) -> usize {
        (self.ho * self.ws).div_ceil(NR)
    }
    /// Offsets of the taps (OIHW order) from a channel's start to the float output `q = 0`
    /// reads; output `q = oh·ws + ow` reads `offset + q`.
    fn taps<'a>(&self, buf: &'a mut [usize; MAX_TAPS]) -> &'a [usize] {
        // Taps stay in the weights' OIHW order (i over the ONNX kernel's rows): in the
        // transposed layout, ONNX row i is layout column i.
        let (oh, ow) = if self.transposed {
            (self.kw, self.kh)
        } else {
            (self.kh, self.kw)
        };
        for i in 0..oh {
            for j in 0..ow {
                let (li, lj) = if self.transposed { (j, i) } else { (i, j) };
                let (vi, vj) = (li * self.dh, lj * self.dw);
                let phase = (vi % self.sh) * self.sw + vj % self.sw;
                buf[i * ow + j] =
                    phase * self.hs * self.ws + (vi / self.sh) * self.ws + vj / self.sw;
            }
        }
        &buf[..oh * ow]
    }
    /// Index in the NCHW output plane of layout output position (oh, ow).
    fn out_index(&self, oh: usize, ow: usize) -> usize {
        if self.transposed {
            ow * self.ho + oh
        } else {
            oh * self.wo + ow
        }
    }
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

impl Layout {
    /// Floats of the phase-split padded image plus the slack the last tile's over-read
    /// reaches (its lanes past the last position, shifted by the farthest column offset).
    fn padded_len(&self) -> usize {
        if self.in_place {
            0
        } else {
            self.cin * self.chan + NR + self.col_reach
        }
    }
    /// Floats of one worker's tail buffer (in-place mode): a channel chunk's rows from a
    /// tile's first position to the farthest tap's last lane.
    fn tail_len(&self) -> usize {
        if self.in_place {
            self.chunk_ch * (self.reach + NR)
        } else {
            0
        }
    }
    /// Tiles per strip: the strip's partial sums for every output channel fit
    /// [`CBUF_FLOATS`].
    fn strip_tiles(&self) -> usize {
        (CBUF_FLOATS / (self.sums_rows() * NR)).clamp(1, self.tiles())
    }
    /// Output channels rounded up to whole register tiles.
    fn sums_rows(&self) -> usize {
        self.cout.div_ceil(MR) * MR
    }
    /// Partial-sum floats of one worker.
    fn sums_len(&self) -> usize {
        self.sums_rows() * NR * self.strip_tiles()
    }
    /// Scratch floats of one worker: its partial sums, then its tail buffer.
    fn worker_len(&self) -> usize {
        self.sums_len() + self.tail_len()
    }
}

/// Scratch floats [`direct_conv`] needs to run `threads` workers: the padded image plus one
/// partial-sum buffer per worker (with less, fewer workers run; at least one must fit).
pub fn scratch_len(g: &ConvGeometry, threads: usize) -> usize {
    let l = Layout::new(g);
    l.padded_len() + l.worker_len() * threads.max(1)
}

/// Packs OIHW weights (`cout × cin·kh·kw`) chunk by chunk of input channels
/// (`chunk_channels`): within a chunk, `ceil(cout / MR)` panels of `cc·kh·kw × MR` floats
/// (k-major, output channel minor, zero rows past the last channel), one after the other. A
/// chunk's weights for every block of output channels are then one sequential stream, which
/// is how the kernel reads them (in a model they come cold from memory).
pub fn pack_weights(g: &ConvGeometry, weights: &[f32]) -> Vec<f32> {
    pack_chunked_panels(g, weights, Layout::new(g).chunk_ch, MR)
}

/// Packs OIHW weights chunk by chunk of `chunk` input channels: within a chunk,
/// `ceil(cout / width)` panels of `cc·kh·kw × width` floats (k-major, output channel minor,
/// zero lanes past the last channel), one after the other. Shared by the two direct kernels
/// (panels of [`MR`] channels here, of 16 in [`super::direct_channels`]).
pub(crate) fn pack_chunked_panels(
    g: &ConvGeometry,
    weights: &[f32],
    chunk: usize,
    width: usize,
) -> Vec<f32> {
    let ntaps = g.kernel_size();
    let k = g.in_channels * ntaps;
    let blocks = g.out_channels.div_ceil(width);
    let mut packed = vec![0.0f32; blocks * k * width];
    let mut c0 = 0;
    while c0 < g.in_channels {
        let cc = chunk.min(g.in_channels - c0);
        let (k0, kc) = (c0 * ntaps, cc * ntaps);
        for b in 0..blocks {
            let panel = &mut packed[k0 * width * blocks + b * kc * width..][..kc * width];
            for r in 0..width.min(g.out_channels - b * width) {
                let oc = b * width + r;
                for (kk, &v) in weights[oc * k + k0..oc * k + k0 + kc].iter().enumerate() {
                    panel[kk * width + r] = v;
                }
            }
        }
        c0 += cc;
    }
    packed
}

/// One unit of parallel work: output-channel blocks `b0..b1` × tiles `t0..t1`.
#[derive(Clone, Copy)]
struct Item {
    b0: usize,
    b1: usize,
    t0: usize,
    t1: usize,
}

/// Runs the convolution (see the module docs). Preconditions (checked by `conv::conv`):
/// [`applies`]`(g)`, lengths of `input`/`output`/`residual` match `g`, `packed` comes from
/// [`pack_weights`] for `g`, `bias` has `cout` values, `scratch` has at least
/// [`scratch_len`]`(g, 1)` floats.
#[allow(clippy::too_many_arguments)]
pub fn direct_conv(
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
    let l = Layout::new(g);
    let mut tap_buf = [0usize; MAX_TAPS];
    let taps = l.taps(&mut tap_buf);
    let ntaps = taps.len();
    let tap_offsets = TapOffsets::new(taps);
    // Prefetch targets: the first tap of each distinct (phase, row) the taps read.
    let mut row_buf = [0usize; MAX_TAPS];
    let mut nrows = 0;
    for &t in taps {
        let row = t - t % l.ws.max(1);
        if !row_buf[..nrows].iter().any(|&r| r - r % l.ws.max(1) == row) {
            row_buf[nrows] = t;
            nrows += 1;
        }
    }
    let rows = &row_buf[..nrows];
    let cout = g.out_channels;
    let blocks = cout.div_ceil(MR);
    let in_img = l.cin * l.h * l.w;
    let out_plane = l.ho * l.wo;
    let out_img = cout * out_plane;
    let chunk_ch = l.chunk_ch;
    let (padded, cbufs) = scratch.split_at_mut(l.padded_len());
    let cbuf = l.worker_len();
    let sums_len = l.sums_len();
    let in_place = l.in_place;
    let reach = l.reach;
    let threads = rayon::current_num_threads().max(1);
    let row_store_ok = !l.transposed && matches!(act, Activation::None | Activation::Relu);

    // Work split: the fewest strips of tiles whose partial sums fit the worker's buffer, of
    // (near-)equal length, then blocks of output channels split further only when there are
    // too few strips for the threads; when the items do not divide among the threads, more
    // strips. (Full-length strips plus a short last one left a worker idle: 35×35 maps have
    // 81 tiles, 6 strips of ≤ 16 made 48 + 33 tiles per worker; equal strips measured 0.88×
    // the time at 2 threads there and 0.90× on 8×8 maps, unchanged at 1 thread. ResNet-50's
    // 64-channel 56×56 convs made 9 items, 5 + 4 per worker.)
    let tiles = l.tiles();
    let mut strips = tiles.div_ceil(l.strip_tiles());
    let parts_for = |strips: usize| (3 * threads).div_ceil(strips).clamp(1, blocks);
    let items_for = |strips: usize| strips * blocks.div_ceil(blocks.div_ceil(parts_for(strips)));
    if !items_for(strips).is_multiple_of(threads) {
        strips = (strips.div_ceil(threads) * threads).min(tiles);
    }
    let blocks_per_part = blocks.div_ceil(parts_for(strips));
    let item_count = items_for(strips);

    for n in 0..g.batch {
        let img = &input[n * in_img..(n + 1) * in_img];
        if !in_place {
            pad_image(&l, img, padded);
        }
        let padded: &[f32] = padded;
        let out_ptr = SendPtr(output[n * out_img..(n + 1) * out_img].as_mut_ptr());
        let res = residual.map(|r| &r[n * out_img..(n + 1) * out_img]);
        // Items strip by strip, the longer strips (and parts) first: the last items handed
        // out are the short ones, so the workers finish together. (17×17 maps have 19 tiles
        // in strips of 7, 6, 6: in the old order the two 7-tile items came third and sixth
        // and one worker ended a 7-tile item later; Inception-v3's 7×1 / 1×7 convs at 2
        // threads took 0.94–0.97× the time, 1 thread unchanged.)
        let parts = blocks.div_ceil(blocks_per_part);
        let (tiles_per_strip, longer_strips) = (tiles / strips, tiles % strips);
        let item = |i: usize| -> Item {
            let (s, p) = (i / parts, i % parts);
            let t0 = s * tiles_per_strip + s.min(longer_strips);
            Item {
                b0: p * blocks_per_part,
                b1: ((p + 1) * blocks_per_part).min(blocks),
                t0,
                t1: t0 + tiles_per_strip + usize::from(s < longer_strips),
            }
        };
        let run = |it: Item, slot_buf: &mut [f32]| {
            let (acc, tail) = slot_buf.split_at_mut(sums_len);
            let nt = it.t1 - it.t0;
            let mut c0 = 0;
            while c0 < l.cin {
                let cc = chunk_ch.min(l.cin - c0);
                let first = c0 == 0;
                let last = c0 + cc == l.cin;
                for t in it.t0..it.t1 {
                    let q0 = t * NR;
                    let start = c0 * l.chan + q0;
                    let (x, plane, prefetch) = if !in_place {
                        (&padded[start..], l.chan, rows)
                    } else if start + (cc - 1) * l.chan + reach + NR <= img.len() {
                        (&img[start..], l.chan, rows)
                    } else {
                        // The last tiles: their lanes past the image end read zeros instead.
                        let span = reach + NR;
                        for (c, dst) in tail[..cc * span].chunks_exact_mut(span).enumerate() {
                            let from = start + c * l.chan;
                            let avail = img.len().saturating_sub(from).min(span);
                            dst[..avail].copy_from_slice(&img[from..from + avail]);
                            dst[avail..].fill(0.0);
                        }
                        (&tail[..cc * span], span, &[][..])
                    };
                    // A tile of NR valid outputs in a row takes its epilogue in registers. When
                    // no column is thrown away (ws = wo: 7×1 and 3×1 kernels without side
                    // pads), layout positions are output positions and every whole tile is a
                    // run of outputs, across rows too: on 17×17 maps most tiles cross a row,
                    // and with their partial-sum round trip and run-by-run epilogue Inception's
                    // 7×1 convs took 1.03–1.07× the time (in the model, 1 thread, 4 runs).
                    // Lanes 8.. of the plane's last tile may all lie past its last row.
                    let narrow = q0 + NR / 2 >= l.ho * l.ws;
                    let row_start = (last && row_store_ok).then(|| (q0 / l.ws, q0 % l.ws));
                    let row_start = row_start.filter(|&(oh, ow)| {
                        oh < l.ho && (ow + NR <= l.wo || (l.ws == l.wo && q0 + NR <= l.ho * l.wo))
                    });
                    for b in it.b0..it.b1 {
                        let kc = cc * ntaps;
                        let a = &packed[c0 * ntaps * MR * blocks + b * kc * MR..][..kc * MR];
                        let slot = ((b - it.b0) * nt + (t - it.t0)) * MR * NR;
                        let tile = as_tile(&mut acc[slot..slot + MR * NR]);
                        let pf = if b == it.b0 { prefetch } else { &[][..] };
                        let rows = MR.min(cout - b * MR);
                        let finish = row_start.map(|(oh, ow)| {
                            let at = b * MR * out_plane + oh * l.wo + ow;
                            // SAFETY: channels b·MR.. (`rows` of them) at outputs oh·wo + ow
                            // .. + NR (ow + NR ≤ wo and oh < ho, or, with ws = wo, oh·wo + ow
                            // = q0 and q0 + NR ≤ ho·wo) lie inside `output`; this item
                            // alone writes them (items are disjoint (block, tile) sets), and
                            // `output` outlives the scope.
                            unsafe {
                                RowStore::new(
                                    { out_ptr }.0.add(at),
                                    out_plane,
                                    &bias[b * MR..b * MR + rows],
                                    res.map(|r| &r[at..]),
                                    act == Activation::Relu,
                                )
                            }
                        });
                        let stored = finish.is_some();
                        compute_tile(
                            level,
                            plane,
                            cc,
                            &tap_offsets,
                            a,
                            x,
                            tile,
                            rows,
                            narrow,
                            first,
                            pf,
                            finish,
                        );
                        if last && !stored {
                            // SAFETY: the item writes output channels b·MR.. (`rows` of them)
                            // at the valid positions of tile t; items are disjoint (block,
                            // tile) sets, so no other thread writes these values, and `output`
                            // outlives the scope.
                            unsafe {
                                store_tile(
                                    level,
                                    &l,
                                    q0,
                                    &tile[..rows],
                                    &bias[b * MR..b * MR + rows],
                                    res.map(|r| &r[b * MR * out_plane..]),
                                    act,
                                    { out_ptr }.0.add(b * MR * out_plane),
                                )
                            };
                        }
                    }
                }
                c0 += cc;
            }
        };
        for_each_item(item_count, cbufs, cbuf, |i, acc| run(item(i), acc));
    }
}

/// Views `MR·NR` floats as a register tile.
fn as_tile(s: &mut [f32]) -> &mut [[f32; NR]; MR] {
    let arr: &mut [f32; MR * NR] = s.try_into().expect("tile slice has MR*NR floats");
    // SAFETY: [f32; MR*NR] and [[f32; NR]; MR] have the same size, alignment and layout.
    unsafe { &mut *(arr as *mut [f32; MR * NR] as *mut [[f32; NR]; MR]) }
}

/// Copies one NCHW image into the phase-split zero-padded layout (and zeroes the slack).
fn pad_image(l: &Layout, img: &[f32], padded: &mut [f32]) {
    let (pt, pl) = (l.pt, l.pl);
    let body = l.cin * l.chan;
    let (chans, slack) = padded.split_at_mut(body);
    slack.fill(0.0);
    let phase_plane = l.hs * l.ws;
    let mut tap_buf = [0usize; MAX_TAPS];
    let used_phases = l
        .taps(&mut tap_buf)
        .iter()
        .fold(0u32, |m, &t| m | 1 << (t / phase_plane.max(1)));
    let copy = |(c, dst): (usize, &mut [f32])| {
        let src = &img[c * l.h * l.w..(c + 1) * l.h * l.w];
        for (phase, plane) in dst.chunks_exact_mut(phase_plane).enumerate() {
            if used_phases & (1 << phase) == 0 {
                // No tap reads it (a 1×1 stride-2 conv reads one phase of four): only lanes
                // that are thrown away may over-read into it, so it is left as it is.
                continue;
            }
            let (a, b) = (phase / l.sw, phase % l.sw);
            // Phase column x holds padded column x·sw + b, i.e. input column x·sw + b − pl:
            // inside the image for x in x0..x1. The same for every row (computed per row,
            // these divisions took a tenth of a 128-channel 3×3/2 conv's time).
            let x0 = pl.saturating_sub(b).div_ceil(l.sw).min(l.ws);
            let x1 = (pl + l.w).saturating_sub(b).div_ceil(l.sw).clamp(x0, l.ws);
            let first = (x0 * l.sw + b).saturating_sub(pl);
            for (y, row) in plane.chunks_exact_mut(l.ws).enumerate() {
                // Padded row y·sh + a is input row y·sh + a − pt when inside the image.
                let Some(sy) = (y * l.sh + a).checked_sub(pt).filter(|&sy| sy < l.h) else {
                    row.fill(0.0);
                    continue;
                };
                if l.transposed {
                    // Layout row sy is input column sy (stride 1): a strided gather.
                    row[..pl].fill(0.0);
                    for (v, &sv) in row[pl..pl + l.w]
                        .iter_mut()
                        .zip(src[sy..].iter().step_by(l.h))
                    {
                        *v = sv;
                    }
                    row[pl + l.w..].fill(0.0);
                    continue;
                }
                let srow = &src[sy * l.w..(sy + 1) * l.w];
                if l.sw == 1 {
                    row[..pl].fill(0.0);
                    row[pl..pl + l.w].copy_from_slice(srow);
                    row[pl + l.w..].fill(0.0);
                } else {
                    row[..x0].fill(0.0);
                    gather_every(l.sw, &mut row[x0..x1], &srow[first.min(l.w)..]);
                    row[x1..].fill(0.0);
                }
            }
        }
    };
    if body >= 1 << 16 && rayon::current_num_threads() > 1 {
        chans.par_chunks_mut(l.chan).enumerate().for_each(copy);
    } else {
        chans.chunks_mut(l.chan).enumerate().for_each(copy);
    }
}

/// `dst[i] = src[i·step]`. With the step a constant (2 for the strided stems, 3 or 4) the
/// compiler turns the gather into vector loads and shuffles; with a run-time step it stayed
/// a scalar loop, which took a fifth of Inception's 3→32 3×3/2 conv.
fn gather_every(step: usize, dst: &mut [f32], src: &[f32]) {
    fn fixed<const S: usize>(dst: &mut [f32], src: &[f32]) {
        for (d, s) in dst.iter_mut().zip(src.chunks(S)) {
            *d = s[0];
        }
    }
    /// Step 2 (every stride-2 conv's phase split), four outputs per SSE shuffle: the scalar
    /// loop took a tenth of a 128-channel 3×3/2 conv's time.
    fn every_second(dst: &mut [f32], src: &[f32]) {
        #[cfg(target_arch = "x86_64")]
        let done = {
            use std::arch::x86_64::{_mm_loadu_ps, _mm_shuffle_ps, _mm_storeu_ps};
            let groups = (dst.len() / 4).min(src.len() / 8);
            for (d, s) in dst
                .chunks_exact_mut(4)
                .zip(src.chunks_exact(8))
                .take(groups)
            {
                // SAFETY: SSE is part of x86_64; `s` holds 8 floats and `d` 4.
                unsafe {
                    let (lo, hi) = (_mm_loadu_ps(s.as_ptr()), _mm_loadu_ps(s.as_ptr().add(4)));
                    _mm_storeu_ps(d.as_mut_ptr(), _mm_shuffle_ps::<0b10_00_10_00>(lo, hi));
                }
            }
            groups * 4
        };
        #[cfg(not(target_arch = "x86_64"))]
        let done = 0;
        fixed::<2>(&mut dst[done..], &src[2 * done..]);
    }
    match step {
        2 => every_second(dst, src),
        3 => fixed::<3>(dst, src),
        4 => fixed::<4>(dst, src),
        _ => {
            for (d, &s) in dst.iter_mut().zip(src.iter().step_by(step.max(1))) {
                *d = s;
            }
        }
    }
}

/// A tile's tap offsets with their largest, computed once per call: the bound every tile's
/// reads are checked against. Recomputed per tile (a 64-bit max over up to 64 offsets, SSE2
/// in the baseline build) it took an eighth of the 7×7/2 stem's time.
struct TapOffsets<'a> {
    offsets: &'a [usize],
    max: usize,
}

impl<'a> TapOffsets<'a> {
    fn new(offsets: &'a [usize]) -> Self {
        let max = offsets.iter().copied().max().unwrap_or(0);
        TapOffsets { offsets, max }
    }
}

/// Where a tile whose [`NR`] positions are consecutive valid outputs of one row goes after its
/// last channel chunk: straight from registers into the output, with bias, residual and ReLU
/// (or no activation) applied — the partial-sum round trip and the run-by-run epilogue of
/// [`store_tile`] took a twelfth of a 3×3 conv's time.
#[derive(Clone, Copy)]
struct RowStore<'a> {
    /// Output channel 0 of the block at the tile's first position; channel `r` is `plane`
    /// floats further.
    out: *mut f32,
    plane: usize,
    /// One value per output channel of the block (its length is the number of rows stored).
    bias: &'a [f32],
    /// Residual with the output's layout from `out`'s position, when added.
    residual: Option<&'a [f32]>,
    relu: bool,
}

impl<'a> RowStore<'a> {
    /// # Safety
    /// For every `r < bias.len()`, `out + r·plane .. + NR` is writable, and nothing else reads
    /// or writes it while the store is alive.
    unsafe fn new(
        out: *mut f32,
        plane: usize,
        bias: &'a [f32],
        residual: Option<&'a [f32]>,
        relu: bool,
    ) -> Self {
        assert!(bias.len() <= MR);
        if let Some(r) = residual {
            assert!(bias.is_empty() || r.len() >= (bias.len() - 1) * plane + NR);
        }
        RowStore {
            out,
            plane,
            bias,
            residual,
            relu,
        }
    }

    /// `out[r][j] = act(sum[r][j] + (bias[r] + residual[r][j]))`, the epilogue's order.
    fn store_scalar(&self, sum: &[[f32; NR]; MR]) {
        for (r, (row, &b)) in sum.iter().zip(self.bias).enumerate() {
            for (j, &v) in row.iter().enumerate() {
                let add = b + self.residual.map_or(0.0, |res| res[r * self.plane + j]);
                let x = v + add;
                let x = if self.relu && x < 0.0 { 0.0 } else { x };
                // SAFETY: r < bias.len() and j < NR: writable and ours by `new`'s contract.
                unsafe { *self.out.add(r * self.plane + j) = x };
            }
        }
    }
}

/// `tile[r][j] (+)= Σ_k panel[k][r] · x[off(k) + j]` over `cc` channels (`x[0]` is the first
/// channel's row at the tile's first position, channels `plane` floats apart); `first`
/// overwrites instead of adding. With `finish`, the sum goes to the output instead of `tile`
/// (see [`RowStore`]). Inlined into the work loop: as a call (with the portable path in its
/// body) it cost Inception-v3's direct convs 3–4% at 1 thread.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn compute_tile(
    level: SimdLevel,
    plane: usize,
    cc: usize,
    taps: &TapOffsets<'_>,
    panel: &[f32],
    x: &[f32],
    tile: &mut [[f32; NR]; MR],
    rows: usize,
    narrow: bool,
    first: bool,
    prefetch_rows: &[usize],
    finish: Option<RowStore<'_>>,
) {
    let reach = (cc - 1) * plane + taps.max + NR;
    let taps = taps.offsets;
    assert!(cc >= 1 && x.len() >= reach && panel.len() >= cc * taps.len() * MR);
    #[cfg(target_arch = "x86_64")]
    if level >= SimdLevel::Avx2 {
        // A block's last panel may hold fewer than MR channels (cout 32 = 5·6 + 2): its tile
        // sums only the rows it stores, in registers of its own height.
        // A tile whose valid positions all lie in its first 8 lanes (the last of a plane, e.g.
        // 289 = 18·16 + 1 positions of a 17×17 map) sums one vector per row, in more
        // accumulator sets.
        let narrow = narrow && finish.is_none();
        let tile_fn: avx2::TileFn = match (rows, narrow) {
            (0..=2, false) => avx2::tile_rows::<2, 2, 3>,
            (0..=2, true) => avx2::tile_rows::<1, 2, 6>,
            (3..=4, false) => avx2::tile_rows::<2, 4, 1>,
            (3..=4, true) => avx2::tile_rows::<1, 4, 3>,
            (_, false) => avx2::tile_rows::<2, MR, 1>,
            (_, true) => avx2::tile_rows::<1, MR, 2>,
        };
        let (a, xp, fin) = (panel.as_ptr(), x.as_ptr(), finish.as_ref());
        // SAFETY: AVX2+FMA present (the level never exceeds the detected one); the assert above
        // bounds every read: channel c's taps read x[c·plane + off .. + NR] ≤ reach, and the
        // panel holds cc·taps·MR floats.
        unsafe { tile_fn(cc, plane, taps, a, xp, tile, first, prefetch_rows, fin) };
        return;
    }
    let _ = level;
    compute_tile_portable(plane, cc, taps, panel, x, tile, first, finish);
}

/// [`compute_tile`] without SIMD (the reference the AVX2 tile is tested against).
#[allow(clippy::too_many_arguments)]
#[inline(never)]
fn compute_tile_portable(
    plane: usize,
    cc: usize,
    taps: &[usize],
    panel: &[f32],
    x: &[f32],
    tile: &mut [[f32; NR]; MR],
    first: bool,
    finish: Option<RowStore<'_>>,
) {
    let mut sum = [[0.0f32; NR]; MR];
    let mut a = panel.chunks_exact(MR);
    for c in 0..cc {
        let xc = &x[c * plane..];
        for &off in taps {
            let Some(av) = a.next() else { break };
            let xv = &xc[off..off + NR];
            for (row, &w) in sum.iter_mut().zip(av) {
                for (acc, &xx) in row.iter_mut().zip(xv) {
                    *acc += w * xx;
                }
            }
        }
    }
    for (row, srow) in tile.iter().zip(sum.iter_mut()) {
        for (t, v) in row.iter().zip(srow) {
            *v = if first { *v } else { *t + *v };
        }
    }
    match finish {
        Some(f) => f.store_scalar(&sum),
        None => *tile = sum,
    }
}

/// Writes the valid positions of a computed tile (rows = output channels of this block) into
/// the output with the epilogue applied.
///
/// # Safety
/// `out` points to the first of `tile.len()` output channel planes (`ho·wo` floats each) that
/// the caller may write; `residual`, when given, has the same layout from the same channel.
#[allow(clippy::too_many_arguments)]
unsafe fn store_tile(
    level: SimdLevel,
    l: &Layout,
    q0: usize,
    tile: &[[f32; NR]],
    bias: &[f32],
    residual: Option<&[f32]>,
    act: Activation,
    out: *mut f32,
) {
    #[cfg(target_arch = "x86_64")]
    if level >= SimdLevel::Avx2 {
        // SAFETY: AVX2+FMA present (the level never exceeds the detected one); the caller's
        // contract is this function's.
        return unsafe { store_tile_avx2(level, l, q0, tile, bias, residual, act, out) };
    }
    // SAFETY: the caller's contract is this function's.
    unsafe { store_tile_body(level, l, q0, tile, bias, residual, act, out) }
}

/// [`store_tile`] compiled for AVX2: the epilogue's short runs (16 positions per row) are
/// vectorised 8 lanes wide instead of SSE2's 4. In the baseline build they were about a
/// sixth of the 7×7/2 stem's time (its 147-tap tiles are short, so the store weighs more):
/// SSE2 compare-and-mask sequences for every ReLU.
///
/// # Safety
/// AVX2 and FMA present; otherwise as [`store_tile`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn store_tile_avx2(
    level: SimdLevel,
    l: &Layout,
    q0: usize,
    tile: &[[f32; NR]],
    bias: &[f32],
    residual: Option<&[f32]>,
    act: Activation,
    out: *mut f32,
) {
    // SAFETY: as this function's contract.
    unsafe { store_tile_body(level, l, q0, tile, bias, residual, act, out) }
}

/// The body of [`store_tile`], inlined into each compiled copy.
///
/// # Safety
/// As [`store_tile`].
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn store_tile_body(
    level: SimdLevel,
    l: &Layout,
    q0: usize,
    tile: &[[f32; NR]],
    bias: &[f32],
    residual: Option<&[f32]>,
    act: Activation,
    out: *mut f32,
) {
    let plane_out = l.ho * l.wo;
    let mut j = 0;
    while j < NR {
        let q = q0 + j;
        let (oh, ow) = (q / l.ws, q % l.ws);
        if oh >= l.ho {
            break;
        }
        if ow >= l.wo {
            j += l.ws - ow;
            continue;
        }
        let len = (l.wo - ow).min(NR - j);
        if l.transposed {
            // Consecutive layout positions are one output column: strided stores.
            for (r, row) in tile.iter().enumerate() {
                for (jj, &v) in row[j..j + len].iter().enumerate() {
                    let idx = r * plane_out + l.out_index(oh, ow + jj);
                    let x = v + (bias[r] + residual.map_or(0.0, |res| res[idx]));
                    // SAFETY: idx < tile.len()·plane_out (oh < ho, ow + jj < wo), a position
                    // the caller owns.
                    unsafe { *out.add(idx) = act.apply(x) };
                }
            }
            j += len;
            continue;
        }
        let dst0 = oh * l.wo + ow;
        for (r, row) in tile.iter().enumerate() {
            // SAFETY: channel r's plane has plane_out floats and dst0 + len ≤ plane_out because
            // oh < ho and ow + len ≤ wo; the caller owns these positions.
            let dst = unsafe { std::slice::from_raw_parts_mut(out.add(r * plane_out + dst0), len) };
            let res = residual.map(|x| &x[r * plane_out + dst0..r * plane_out + dst0 + len]);
            epilogue_run(level, dst, &row[j..j + len], bias[r], res, act);
        }
        j += len;
    }
}

/// `dst = act(src + bias + residual)` for one run of positions; the common activations inline
/// (the call per run would cost as much as the run), the others through the shared kernel.
#[inline(always)]
fn epilogue_run(
    level: SimdLevel,
    dst: &mut [f32],
    src: &[f32],
    bias: f32,
    residual: Option<&[f32]>,
    act: Activation,
) {
    let relu = |v: f32| if v < 0.0 { 0.0 } else { v };
    match (residual, act) {
        (None, Activation::None) => dst.iter_mut().zip(src).for_each(|(d, s)| *d = s + bias),
        (None, Activation::Relu) => dst
            .iter_mut()
            .zip(src)
            .for_each(|(d, s)| *d = relu(s + bias)),
        (Some(r), Activation::None) => dst
            .iter_mut()
            .zip(src.iter().zip(r))
            .for_each(|(d, (s, r))| *d = s + (bias + r)),
        (Some(r), Activation::Relu) => dst
            .iter_mut()
            .zip(src.iter().zip(r))
            .for_each(|(d, (s, r))| *d = relu(s + (bias + r))),
        _ => {
            dst.copy_from_slice(src);
            bias_residual_activation_with(level, dst, bias, residual, act);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{RowStore, MR, NR};
    use crate::kernels::pointwise_conv::avx2::fma_step;
    use std::arch::x86_64::*;

    /// [`tile_rows`] for some row count.
    pub type TileFn = unsafe fn(
        usize,
        usize,
        &[usize],
        *const f32,
        *const f32,
        &mut [[f32; NR]; MR],
        bool,
        &[usize],
        Option<&RowStore<'_>>,
    );

    /// The `R`×16 register tile (`R` ≤ [`MR`] output channels; 6 uses 12 accumulators, two
    /// input vectors and one broadcast weight), summing taps into `S` sets of accumulators. Rows `R..` of `tile` are left untouched, and
    /// `finish` stores at most `R` rows.
    ///
    /// # Safety
    /// Requires AVX2 and FMA. `a` holds `cin·taps.len()·MR` floats (`cin` = the chunk's channels); for every channel `c < cin`
    /// and tap offset `o`, `x + c·plane + o .. + NR` is readable. `finish`'s output is
    /// writable as [`RowStore::new`] requires.
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn tile_rows<const V: usize, const R: usize, const S: usize>(
        cin: usize,
        plane: usize,
        taps: &[usize],
        a: *const f32,
        x: *const f32,
        tile: &mut [[f32; NR]; MR],
        first: bool,
        prefetch_rows: &[usize],
        finish: Option<&RowStore<'_>>,
    ) {
        // Independent accumulator sets, taps dealt round-robin: a 2-row tile has only four
        // accumulators, and one FMA chain per accumulator waits out the FMA latency (5
        // cycles) at every tap; three sets keep twelve chains in flight, as the 6-row tile.
        let mut sets = [[[_mm256_setzero_ps(); 2]; R]; S];
        let mut a = a;
        for c in 0..cin {
            let xc = x.add(c * plane);
            // The next tile's input (16 positions on) is new to L1 in most rows: fetch it while
            // this one computes. Prefetches never fault, so reaching past the buffer is fine.
            for &row in prefetch_rows {
                let p = xc.wrapping_add(row + NR) as *const i8;
                _mm_prefetch::<_MM_HINT_T0>(p);
                _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(64));
            }
            let mut groups = taps.chunks_exact(S);
            for group in &mut groups {
                for (set, &off) in sets.iter_mut().zip(group) {
                    fma_step::<V, R>(set, a, xc.add(off));
                    a = a.add(MR);
                }
            }
            for &off in groups.remainder() {
                fma_step::<V, R>(&mut sets[0], a, xc.add(off));
                a = a.add(MR);
            }
        }
        let mut acc = sets[0];
        for set in &sets[1..] {
            for (accr, sr) in acc.iter_mut().zip(set) {
                accr[0] = _mm256_add_ps(accr[0], sr[0]);
                accr[1] = _mm256_add_ps(accr[1], sr[1]);
            }
        }
        // The chunk's sum is added to the earlier chunks' (not accumulated on top of them):
        // blocked summation, as a GEMM's K blocks, keeps rounding chains one chunk long.
        for (r, (row, accr)) in tile.iter_mut().zip(&acc).enumerate() {
            let (mut lo, mut hi) = (accr[0], accr[1]);
            if !first {
                lo = _mm256_add_ps(_mm256_loadu_ps(row.as_ptr()), lo);
                if V == 2 {
                    hi = _mm256_add_ps(_mm256_loadu_ps(row.as_ptr().add(8)), hi);
                }
            }
            if V == 1 {
                // A narrow tile: its lanes 8.. are past the plane (never stored, no `finish`).
                _mm256_storeu_ps(row.as_mut_ptr(), lo);
                continue;
            }
            match finish {
                Some(f) if r < f.bias.len() => {
                    let b = _mm256_set1_ps(f.bias[r]);
                    let (mut add_lo, mut add_hi) = (b, b);
                    if let Some(res) = f.residual {
                        let p = res[r * f.plane..r * f.plane + NR].as_ptr();
                        add_lo = _mm256_add_ps(b, _mm256_loadu_ps(p));
                        add_hi = _mm256_add_ps(b, _mm256_loadu_ps(p.add(8)));
                    }
                    lo = _mm256_add_ps(lo, add_lo);
                    hi = _mm256_add_ps(hi, add_hi);
                    if f.relu {
                        // max(0, v) returns v when v is NaN, as ONNX Relu keeps it.
                        lo = _mm256_max_ps(_mm256_setzero_ps(), lo);
                        hi = _mm256_max_ps(_mm256_setzero_ps(), hi);
                    }
                    let out = f.out.add(r * f.plane);
                    _mm256_storeu_ps(out, lo);
                    _mm256_storeu_ps(out.add(8), hi);
                }
                Some(_) => {}
                None => {
                    _mm256_storeu_ps(row.as_mut_ptr(), lo);
                    _mm256_storeu_ps(row.as_mut_ptr().add(8), hi);
                }
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::kernels::conv::{conv, conv_scratch_len, ConvGemm, PackedConvWeights};
    use crate::kernels::gemm::GemmBackend;
    use crate::kernels::test_util::{interleaved_best, rand_vec, with_threads};

    /// (batch, cin, h, w, cout, kernel, strides, dilation, pads_begin, pads_end); shared with
    /// the channel-wide direct kernel's tests.
    pub(crate) type Case = (
        usize,
        usize,
        usize,
        usize,
        usize,
        [usize; 2],
        [usize; 2],
        [usize; 2],
        [usize; 2],
        [usize; 2],
    );

    fn cases() -> Vec<Case> {
        let s1 = [1, 1];
        vec![
            (1, 3, 9, 11, 5, [3, 3], s1, [1, 1], [1, 1], [1, 1]),
            (2, 8, 7, 7, 13, [3, 3], s1, [1, 1], [0, 2], [2, 0]),
            (1, 48, 12, 13, 20, [5, 5], s1, [1, 1], [2, 2], [2, 2]),
            (1, 40, 9, 9, 12, [1, 7], s1, [1, 1], [0, 3], [0, 3]),
            (1, 40, 9, 9, 7, [7, 1], s1, [1, 1], [3, 0], [3, 0]),
            (1, 6, 10, 10, 6, [3, 3], s1, [2, 3], [2, 3], [2, 3]),
            (1, 2, 3, 3, 1, [2, 2], s1, [1, 1], [0, 0], [0, 0]),
            (1, 1, 1, 1, 4, [3, 3], s1, [1, 1], [1, 1], [1, 1]),
            // Several channel chunks, many blocks and strips, ragged last tile.
            (1, 70, 15, 17, 50, [3, 3], s1, [1, 1], [1, 1], [1, 1]),
            (2, 300, 5, 6, 7, [3, 1], s1, [1, 1], [1, 0], [1, 0]),
            // Strided: phase planes (ResNet's 3×3/2, 7×7/2 stem, 1×1/2 shortcut; odd sizes,
            // no padding, unequal strides, stride 3, dilation with stride).
            (1, 16, 14, 14, 24, [3, 3], [2, 2], [1, 1], [1, 1], [1, 1]),
            (1, 3, 23, 21, 8, [7, 7], [2, 2], [1, 1], [3, 3], [3, 3]),
            (2, 20, 9, 11, 14, [1, 1], [2, 2], [1, 1], [0, 0], [0, 0]),
            (1, 24, 15, 15, 9, [3, 3], [2, 2], [1, 1], [0, 0], [0, 0]),
            (1, 10, 12, 13, 7, [3, 3], [2, 1], [1, 1], [1, 0], [0, 1]),
            (1, 5, 16, 17, 6, [5, 3], [3, 3], [1, 2], [2, 1], [1, 2]),
            (1, 4, 12, 12, 6, [3, 3], [2, 2], [2, 2], [2, 2], [2, 2]),
            // Stride 4 (and 4 × 1): the phase split's constant-step gathers.
            (1, 3, 19, 22, 7, [5, 5], [4, 4], [1, 1], [2, 2], [1, 1]),
            (1, 2, 13, 30, 5, [3, 3], [1, 4], [1, 1], [1, 1], [1, 1]),
            // In place (stride 1, no padding): 1×1 with several chunks and a ragged last tile
            // (its lanes past the image end come from the zero-extended tail copy), and 3×3.
            (2, 230, 7, 9, 10, [1, 1], s1, [1, 1], [0, 0], [0, 0]),
            (2, 17, 11, 11, 8, [3, 3], s1, [1, 1], [0, 0], [0, 0]),
            (1, 9, 6, 5, 7, [2, 3], s1, [2, 1], [0, 0], [0, 0]),
            // Transposed layout (kernel wider than tall): dilated, asymmetric pads, unpadded.
            (2, 6, 7, 12, 5, [2, 5], s1, [1, 2], [1, 2], [0, 1]),
            (1, 20, 8, 8, 9, [1, 3], s1, [1, 1], [0, 0], [0, 0]),
            // Rows of 40 outputs: most tiles are 16 valid outputs of one row and take their
            // epilogue in registers (`RowStore`), the rest through `store_tile`; 3 chunks, a
            // ragged last block; one in place (no padding).
            (1, 40, 9, 40, 13, [3, 3], s1, [1, 1], [1, 1], [1, 1]),
            (2, 11, 6, 42, 8, [3, 3], s1, [1, 1], [0, 0], [0, 0]),
            (1, 7, 5, 44, 6, [5, 5], s1, [1, 1], [2, 2], [2, 2]),
        ]
    }

    #[test]
    fn direct_matches_f64_reference_every_level_and_thread_count() {
        use crate::kernels::conv::tests::conv_ref;
        let acts = [
            Activation::Relu,
            Activation::None,
            Activation::Clip(-0.5, 0.7),
        ];
        for (ci, (b, cin, h, w, cout, k, st, d, pb, pe)) in cases().into_iter().enumerate() {
            let g = ConvGeometry::new(b, cin, &[h, w], cout, &k, &st, &d, &pb, &pe, 1)
                .expect("valid case");
            assert!(applies(&g), "case {ci}");
            let x = rand_vec(g.input_len(), 100 + ci as u64);
            let wt = rand_vec(g.weight_len(), 200 + ci as u64);
            let bias = rand_vec(cout, 300 + ci as u64);
            let want = conv_ref(&g, &x, &wt, Some(&bias));
            let tol = 2e-6 * ((cin * k[0] * k[1]) as f64).sqrt() * 8.0 + 1e-5;
            let packed = pack_weights(&g, &wt);
            // Every activation with and without a residual over the cases.
            let act = acts[ci % acts.len()];
            let res = if (ci / acts.len()).is_multiple_of(2) {
                rand_vec(g.output_len(), 400 + ci as u64)
            } else {
                vec![0.0; g.output_len()]
            };
            let with_res = res.iter().any(|&v| v != 0.0);
            for level in SimdLevel::available() {
                let mut first: Option<Vec<f32>> = None;
                for (threads, slots) in [(1, 1), (2, 2), (2, 1)] {
                    let mut out = vec![f32::NAN; g.output_len()];
                    let mut scratch = vec![f32::NAN; scratch_len(&g, slots)];
                    with_threads(threads, || {
                        direct_conv(
                            level,
                            &g,
                            &x,
                            &packed,
                            &bias,
                            with_res.then_some(&res[..]),
                            act,
                            &mut out,
                            &mut scratch,
                        )
                    });
                    let mut err = 0.0f64;
                    for (i, &o) in out.iter().enumerate() {
                        let e = act.apply((want[i] + res[i] as f64) as f32) as f64;
                        err = err.max((o as f64 - e).abs());
                        assert!(o.is_finite(), "case {ci} {level:?}: output {i} not written");
                    }
                    assert!(
                        err < tol,
                        "case {ci} {level:?} t{threads}: err {err} tol {tol}"
                    );
                    // Each output is one tile's sum in a fixed order: identical bits whatever
                    // the thread count or the number of partial-sum buffers.
                    match &first {
                        None => first = Some(out),
                        Some(f) => assert!(
                            f.iter().zip(&out).all(|(a, b)| a.to_bits() == b.to_bits()),
                            "case {ci} {level:?}: t{threads}/{slots} slots changed the result"
                        ),
                    }
                }
            }
        }
    }

    #[test]
    fn gather_every_matches_a_strided_copy() {
        let src: Vec<f32> = (0..61).map(|i| i as f32).collect();
        for step in 1..=6 {
            for len in [0, 1, 7, 8, 9, 16] {
                let start = 3;
                let n = len.min((src.len() - start).div_ceil(step));
                let mut dst = vec![-1.0; n];
                gather_every(step, &mut dst, &src[start..]);
                let want: Vec<f32> = (0..n).map(|i| src[start + i * step]).collect();
                assert_eq!(dst, want, "step {step} len {len}");
            }
        }
    }

    #[test]
    fn conv_picks_direct_only_where_little_work_is_thrown_away() {
        let conv_geom = |cin: usize, h: usize, cout: usize, k: [usize; 2], p: [usize; 2], s| {
            ConvGeometry::new(1, cin, &[h, h], cout, &k, &[s, s], &[1, 1], &p, &p, 1).expect("geom")
        };
        let geom = |h, k, p, s| conv_geom(64, h, 64, k, p, s);
        // 35×35 with 3×3: 37/35 of the positions computed.
        assert!(worth_it(&geom(35, [3, 3], [1, 1], 1)));
        // 7×1 keeps the width: nothing thrown away.
        assert!(worth_it(&geom(17, [7, 1], [3, 0], 1)));
        // 8×8 with 3×3 computes 10 columns per 8 kept.
        assert!(!worth_it(&geom(8, [3, 3], [1, 1], 1)));
        // 1×7 on 17 wide would compute 23 columns per 17: it runs transposed, where the
        // padding is along the rows and nothing is thrown away.
        assert!(worth_it(&geom(17, [1, 7], [0, 3], 1)));
        // 8×8 maps are too few tiles even without padding (1×3 runs transposed, 3×1 as is).
        assert!(!worth_it(&geom(8, [1, 3], [0, 1], 1)));
        assert!(!worth_it(&geom(8, [3, 1], [1, 0], 1)));
        // K = 3·3·3 = 27 (Inception's first conv) is in; K = 9 (one input channel) is not.
        assert!(worth_it(&conv_geom(3, 299, 32, [3, 3], [0, 0], 2)));
        let gray = conv_geom(1, 299, 32, [3, 3], [0, 0], 2);
        assert!(applies(&gray) && !worth_it(&gray));
        assert!(Layout::new(&geom(17, [1, 7], [0, 3], 1)).transposed);
        assert!(!Layout::new(&geom(17, [7, 1], [3, 0], 1)).transposed);
        assert!(!Layout::new(&geom(17, [3, 3], [1, 1], 1)).transposed);
        // Stride 2 reads phase planes: 3×3/2 on 35 computes 18 columns per 17 kept.
        assert!(worth_it(&geom(35, [3, 3], [0, 0], 2)));
        // Inception's 288→384 3×3/2 is in; wider strided convs are not.
        assert!(worth_it(&conv_geom(288, 35, 384, [3, 3], [0, 0], 2)));
        let wide = conv_geom(288, 35, 512, [3, 3], [0, 0], 2);
        assert!(applies(&wide) && !worth_it(&wide));
        // 1×1 stride 2 applies (phase (0, 0) only) but is not the default.
        assert!(applies(&geom(56, [1, 1], [0, 0], 2)) && !worth_it(&geom(56, [1, 1], [0, 0], 2)));
        // 1×1 stride 1 reads the input in place, but is not the default.
        assert!(applies(&geom(35, [1, 1], [0, 0], 1)) && !worth_it(&geom(35, [1, 1], [0, 0], 1)));
        // Not applicable: groups.
        let grouped = ConvGeometry::new(
            1,
            64,
            &[9, 9],
            64,
            &[3, 3],
            &[1, 1],
            &[1, 1],
            &[1, 1],
            &[1, 1],
            2,
        )
        .expect("geom");
        assert!(!applies(&grouped));
    }

    /// Dev timing helper: the direct kernel at 1 and 2 threads (scaling).
    #[test]
    #[ignore = "timing helper for development; run with --ignored --nocapture in release"]
    fn time_direct_thread_scaling() {
        let shapes = [
            (32, 64, 147, 147, [3, 3], [1, 1]),
            (96, 96, 35, 35, [3, 3], [1, 1]),
            (48, 64, 35, 35, [5, 5], [2, 2]),
            (192, 192, 17, 17, [7, 1], [3, 0]),
            (80, 192, 73, 73, [3, 3], [0, 0]),
            (448, 384, 8, 8, [3, 3], [1, 1]),
        ];
        for (cin, cout, h, w, k, p) in shapes {
            let g = ConvGeometry::new(1, cin, &[h, w], cout, &k, &[1, 1], &[1, 1], &p, &p, 1)
                .expect("geometry");
            let x = rand_vec(g.input_len(), 1);
            let wt = rand_vec(g.weight_len(), 2);
            let pw = PackedConvWeights::with_direct(&g, &wt, None).expect("pack");
            let mut out = vec![0.0; g.output_len()];
            let mut scratch = vec![0.0; conv_scratch_len(&g, &pw, 2)];
            let mut best = [f64::MAX; 2];
            for _ in 0..6 {
                for (t, b) in [1, 2].into_iter().zip(best.iter_mut()) {
                    with_threads(t, || {
                        for _ in 0..5 {
                            let t0 = std::time::Instant::now();
                            conv(&g, &x, &pw, None, Activation::Relu, &mut out, &mut scratch)
                                .expect("conv");
                            *b = b.min(t0.elapsed().as_secs_f64());
                        }
                    });
                }
            }
            let gf = |t: f64| 2.0 * g.macs() as f64 / t / 1e9;
            println!(
                "{cin}->{cout} {h}x{w} k{k:?}: t1 {:.3} ms {:.1} GF/s, t2 {:.3} ms {:.1} GF/s, scaling {:.2}",
                best[0] * 1e3,
                gf(best[0]),
                best[1] * 1e3,
                gf(best[1]),
                best[0] / best[1]
            );
        }
    }

    /// Dev timing helper: direct vs im2col + crate GEMM on Inception/ResNet shapes.
    #[test]
    #[ignore = "timing helper for development; run with --ignored --nocapture in release"]
    fn time_direct_vs_im2col() {
        let shapes = [
            (192, 192, 17, 17, [1, 7], [0, 3], 1),
            (160, 160, 17, 17, [1, 7], [0, 3], 1),
            (384, 384, 8, 8, [1, 3], [0, 1], 1),
            (448, 384, 8, 8, [3, 3], [1, 1], 1),
            (192, 192, 17, 17, [7, 1], [3, 0], 1),
            (256, 64, 56, 56, [1, 1], [0, 0], 1),
            (3, 64, 224, 224, [7, 7], [3, 3], 2),
            (48, 64, 35, 35, [5, 5], [2, 2], 1),
        ];
        for (cin, cout, h, w, k, p, st) in shapes {
            let g = ConvGeometry::new(1, cin, &[h, w], cout, &k, &[st, st], &[1, 1], &p, &p, 1)
                .expect("geometry");
            let x = rand_vec(g.input_len(), 1);
            let wt = rand_vec(g.weight_len(), 2);
            let mut line = format!("{cin}->{cout} {h}x{w} k{k:?} s{st}:");
            let packs = [
                PackedConvWeights::with_gemm(&g, &wt, None, ConvGemm::Crate(GemmBackend::Gemm)),
                PackedConvWeights::with_direct(&g, &wt, None),
            ]
            .map(|p| p.expect("pack"));
            let mut out = vec![0.0; g.output_len()];
            let mut scratch = vec![
                0.0;
                conv_scratch_len(&g, &packs[1], 1)
                    .max(conv_scratch_len(&g, &packs[0], 1))
            ];
            let best = interleaved_best(1, &packs, |pw| {
                conv(&g, &x, pw, None, Activation::Relu, &mut out, &mut scratch).expect("conv")
            });
            for (pw, b) in packs.iter().zip(best) {
                let gf = 2.0 * g.macs() as f64 / b / 1e9;
                line += &format!(" {:?} {:.3} ms {gf:.1} GF/s;", pw.algo(), b * 1e3);
            }
            println!("{line}");
        }
    }
}
