//! WGSL compute shaders of the wgpu backend.
//!
//! Every shader shares one bind group layout so one pipeline layout serves them all:
//! binding 0 is the activation arena (read-write, every activation lives there at an element
//! offset), bindings 1 and 2 are up to two constant tensors the node reads (weights, bias, the
//! per-channel scale/shift of an unfused BatchNormalization), binding 3 is a uniform block of 32
//! words of per-node parameters. Inputs are read through `ld(sel, index)` so any input may be an
//! activation (sel 0) or a constant (sel 1 = binding 1, sel 2 = binding 2); the branch is uniform
//! across a dispatch. One-dimensional kernels use 256-thread workgroups on a 2-D grid so element
//! counts above 65535 workgroups still fit the dispatch limits.

/// Declarations shared by all shaders.
const COMMON: &str = r#"
@group(0) @binding(0) var<storage, read_write> arena: array<f32>;
@group(0) @binding(1) var<storage, read> w0: array<f32>;
@group(0) @binding(2) var<storage, read> w1: array<f32>;
struct Params { u: array<vec4<u32>, 8> }
@group(0) @binding(3) var<uniform> P: Params;

fn p(i: u32) -> u32 { return P.u[i / 4u][i % 4u]; }
fn pf(i: u32) -> f32 { return bitcast<f32>(p(i)); }
fn ld(sel: u32, i: u32) -> f32 {
    if (sel == 0u) { return arena[i]; }
    if (sel == 1u) { return w0[i]; }
    return w1[i];
}
// 0 none, 1 relu, 2 leaky relu (a = alpha), 3 clip [a, b], 4 sigmoid
fn act(kind: u32, a: f32, b: f32, v: f32) -> f32 {
    switch kind {
        case 1u: { return max(v, 0.0); }
        case 2u: { return select(v, v * a, v < 0.0); }
        case 3u: { return min(max(v, a), b); }
        case 4u: { return 1.0 / (1.0 + exp(-v)); }
        default: { return v; }
    }
}
fn linear_index(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.y * (nwg.x * 256u) + gid.x;
}
"#;

/// Convolution as an implicit GEMM per group: rows are output channels of the group, columns
/// are (batch, oy, ox) output pixels, the reduction runs over (input channel, ky, kx). A 64x64
/// output tile per 16x16 workgroup, 4x4 outputs per thread, 16-deep reduction slices staged
/// in workgroup memory; the im2col matrix is never materialised. Epilogue: bias, residual,
/// activation.
const CONV_GEMM: &str = r#"
// params: 0 x_sel 1 x_off 2 w_sel 3 w_off 4 has_bias 5 res_off(+1, 0 = none) 6 y_off
// 7 N 8 C 9 H 10 W 11 M 12 OH 13 OW 14 KH 15 KW 16 SH 17 SW 18 PH 19 PW 20 DH 21 DW
// 22 group 23 act 24 act_a 25 act_b 26 b_sel 27 b_off
var<workgroup> As: array<array<f32, 64>, 16>;
var<workgroup> Bs: array<array<f32, 64>, 16>;

@compute @workgroup_size(16, 16, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let N = p(7u); let C = p(8u); let H = p(9u); let W = p(10u); let M = p(11u);
    let OH = p(12u); let OW = p(13u); let KH = p(14u); let KW = p(15u);
    let SH = p(16u); let SW = p(17u); let PH = p(18u); let PW = p(19u);
    let DH = p(20u); let DW = p(21u); let G = p(22u);
    let Mg = M / G; let Cg = C / G; let KK = KH * KW; let K = Cg * KK;
    let OHW = OH * OW; let NN = N * OHW;
    let g = wid.z;
    let m0 = wid.y * 64u; let n0 = wid.x * 64u;
    let tx = lid.x; let ty = lid.y; let li = ty * 16u + tx;
    let x_sel = p(0u); let x_off = p(1u); let w_sel = p(2u); let w_off = p(3u);
    var acc: array<array<f32, 4>, 4>;
    for (var i = 0u; i < 4u; i++) { for (var j = 0u; j < 4u; j++) { acc[i][j] = 0.0; } }
    for (var k0 = 0u; k0 < K; k0 += 16u) {
        for (var r = 0u; r < 4u; r++) {
            let e = li + r * 256u;
            // weights: consecutive threads read consecutive k of one row (contiguous)
            let kk = e % 16u; let mm = e / 16u;
            let gm = m0 + mm; let gk = k0 + kk;
            var a = 0.0;
            if (gm < Mg && gk < K) { a = ld(w_sel, w_off + (g * Mg + gm) * K + gk); }
            As[kk][mm] = a;
            // input patches: consecutive threads read consecutive output pixels
            let nn = e % 64u; let kb = e / 64u;
            let gn = n0 + nn; let gk2 = k0 + kb;
            var b = 0.0;
            if (gn < NN && gk2 < K) {
                let bi = gn / OHW; let pix = gn % OHW;
                let oy = pix / OW; let ox = pix % OW;
                let ci = gk2 / KK; let kr = gk2 % KK;
                let ky = kr / KW; let kx = kr % KW;
                let iy = i32(oy * SH + ky * DH) - i32(PH);
                let ix = i32(ox * SW + kx * DW) - i32(PW);
                if (iy >= 0 && iy < i32(H) && ix >= 0 && ix < i32(W)) {
                    b = ld(x_sel, x_off + ((bi * C + g * Cg + ci) * H + u32(iy)) * W + u32(ix));
                }
            }
            Bs[kb][nn] = b;
        }
        workgroupBarrier();
        for (var k = 0u; k < 16u; k++) {
            var av: array<f32, 4>;
            var bv: array<f32, 4>;
            for (var i = 0u; i < 4u; i++) { av[i] = As[k][ty + 16u * i]; bv[i] = Bs[k][tx + 16u * i]; }
            for (var i = 0u; i < 4u; i++) {
                for (var j = 0u; j < 4u; j++) { acc[i][j] = fma(av[i], bv[j], acc[i][j]); }
            }
        }
        workgroupBarrier();
    }
    let has_bias = p(4u); let res = p(5u); let y_off = p(6u);
    let ak = p(23u); let aa = pf(24u); let ab = pf(25u);
    for (var i = 0u; i < 4u; i++) {
        let gm = m0 + ty + 16u * i;
        if (gm >= Mg) { continue; }
        let oc = g * Mg + gm;
        var bias = 0.0;
        if (has_bias != 0u) { bias = ld(p(26u), p(27u) + oc); }
        for (var j = 0u; j < 4u; j++) {
            let gn = n0 + tx + 16u * j;
            if (gn >= NN) { continue; }
            let bi = gn / OHW; let pix = gn % OHW;
            let idx = (bi * M + oc) * OHW + pix;
            var v = acc[i][j] + bias;
            if (res != 0u) { v += arena[res - 1u + idx]; }
            arena[y_off + idx] = act(ak, aa, ab, v);
        }
    }
}
"#;

/// Direct convolution, one thread per output element: for depthwise and other groups with few
/// output channels, where a 64-row GEMM tile would be mostly empty. Same parameters as
/// [`CONV_GEMM`].
const CONV_DIRECT: &str = r#"
@compute @workgroup_size(256, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let N = p(7u); let C = p(8u); let H = p(9u); let W = p(10u); let M = p(11u);
    let OH = p(12u); let OW = p(13u); let KH = p(14u); let KW = p(15u);
    let SH = p(16u); let SW = p(17u); let PH = p(18u); let PW = p(19u);
    let DH = p(20u); let DW = p(21u); let G = p(22u);
    let idx = linear_index(gid, nwg);
    let OHW = OH * OW;
    if (idx >= N * M * OHW) { return; }
    let pix = idx % OHW; let oc = (idx / OHW) % M; let bi = idx / (OHW * M);
    let oy = pix / OW; let ox = pix % OW;
    let Mg = M / G; let Cg = C / G; let g = oc / Mg;
    let x_sel = p(0u); let x_off = p(1u); let w_sel = p(2u); let w_off = p(3u);
    var v = 0.0;
    for (var ci = 0u; ci < Cg; ci++) {
        let xb = x_off + (bi * C + g * Cg + ci) * H * W;
        let wb = w_off + ((oc * Cg + ci) * KH) * KW;
        for (var ky = 0u; ky < KH; ky++) {
            let iy = i32(oy * SH + ky * DH) - i32(PH);
            if (iy < 0 || iy >= i32(H)) { continue; }
            for (var kx = 0u; kx < KW; kx++) {
                let ix = i32(ox * SW + kx * DW) - i32(PW);
                if (ix < 0 || ix >= i32(W)) { continue; }
                v = fma(ld(x_sel, xb + u32(iy) * W + u32(ix)), ld(w_sel, wb + ky * KW + kx), v);
            }
        }
    }
    if (p(4u) != 0u) { v += ld(p(26u), p(27u) + oc); }
    let res = p(5u);
    if (res != 0u) { v += arena[res - 1u + idx]; }
    arena[p(6u) + idx] = act(p(23u), pf(24u), pf(25u), v);
}
"#;

/// (Batched) matrix product for Gemm and MatMul with arbitrary element strides, so transposes
/// and broadcast batch dimensions need no copies: Y = alpha * A·B + beta * C.
const GEMM: &str = r#"
// params: 0 a_sel 1 a_off 2 b_sel 3 b_off 4 c_sel 5 c_off 6 has_c 7 y_off 8 M 9 N 10 K
// 11 sam 12 sak 13 sbk 14 sbn 15 scm 16 scn 17 alpha 18 beta 19 a_batch 20 b_batch
var<workgroup> As: array<array<f32, 64>, 16>;
var<workgroup> Bs: array<array<f32, 64>, 16>;

@compute @workgroup_size(16, 16, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let M = p(8u); let N = p(9u); let K = p(10u);
    let sam = p(11u); let sak = p(12u); let sbk = p(13u); let sbn = p(14u);
    let z = wid.z;
    let a_base = p(1u) + z * p(19u); let b_base = p(3u) + z * p(20u);
    let a_sel = p(0u); let b_sel = p(2u);
    let m0 = wid.y * 64u; let n0 = wid.x * 64u;
    let tx = lid.x; let ty = lid.y; let li = ty * 16u + tx;
    var acc: array<array<f32, 4>, 4>;
    for (var i = 0u; i < 4u; i++) { for (var j = 0u; j < 4u; j++) { acc[i][j] = 0.0; } }
    for (var k0 = 0u; k0 < K; k0 += 16u) {
        for (var r = 0u; r < 4u; r++) {
            let e = li + r * 256u;
            let kk = e % 16u; let mm = e / 16u;
            let gm = m0 + mm; let gk = k0 + kk;
            var a = 0.0;
            if (gm < M && gk < K) { a = ld(a_sel, a_base + gm * sam + gk * sak); }
            As[kk][mm] = a;
            let nn = e % 64u; let kb = e / 64u;
            let gn = n0 + nn; let gk2 = k0 + kb;
            var b = 0.0;
            if (gn < N && gk2 < K) { b = ld(b_sel, b_base + gk2 * sbk + gn * sbn); }
            Bs[kb][nn] = b;
        }
        workgroupBarrier();
        for (var k = 0u; k < 16u; k++) {
            var av: array<f32, 4>;
            var bv: array<f32, 4>;
            for (var i = 0u; i < 4u; i++) { av[i] = As[k][ty + 16u * i]; bv[i] = Bs[k][tx + 16u * i]; }
            for (var i = 0u; i < 4u; i++) {
                for (var j = 0u; j < 4u; j++) { acc[i][j] = fma(av[i], bv[j], acc[i][j]); }
            }
        }
        workgroupBarrier();
    }
    let alpha = pf(17u); let beta = pf(18u);
    let y_base = p(7u) + z * M * N;
    for (var i = 0u; i < 4u; i++) {
        let gm = m0 + ty + 16u * i;
        if (gm >= M) { continue; }
        for (var j = 0u; j < 4u; j++) {
            let gn = n0 + tx + 16u * j;
            if (gn >= N) { continue; }
            var v = alpha * acc[i][j];
            if (p(6u) != 0u) { v += beta * ld(p(4u), p(5u) + gm * p(15u) + gn * p(16u)); }
            arena[y_base + gm * N + gn] = v;
        }
    }
}
"#;

/// Elementwise over an output of rank <= 6 with per-input element strides (0 on broadcast
/// axes): binary arithmetic, copies with permuted strides (Transpose), activations, and the
/// per-channel affine of an unfused BatchNormalization (scale in binding 1, shift in binding 2).
const ELEMENTWISE: &str = r#"
// params: 0 op 1 a_sel 2 a_off 3 b_sel 4 b_off 5 y_off 6 total 7 rank 8..13 dims
// 14..19 a strides 20..25 b strides 26 act 27 act_a 28 act_b
// op: 0 add 1 sub 2 mul 3 div 4 copy a 5 act(a) 6 a * w0[b] + w1[b]
@compute @workgroup_size(256, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = linear_index(gid, nwg);
    if (idx >= p(6u)) { return; }
    let rank = p(7u);
    var rem = idx;
    var ai = 0u; var bi = 0u;
    for (var d = 0u; d < rank; d++) {
        let axis = rank - 1u - d;
        let n = p(8u + axis);
        let c = rem % n;
        rem = rem / n;
        ai += c * p(14u + axis);
        bi += c * p(20u + axis);
    }
    let a = ld(p(1u), p(2u) + ai);
    let op = p(0u);
    var v = a;
    switch op {
        case 0u: { v = a + ld(p(3u), p(4u) + bi); }
        case 1u: { v = a - ld(p(3u), p(4u) + bi); }
        case 2u: { v = a * ld(p(3u), p(4u) + bi); }
        case 3u: { v = a / ld(p(3u), p(4u) + bi); }
        case 5u: { v = act(p(26u), pf(27u), pf(28u), a); }
        case 6u: { v = fma(a, w0[bi], w1[bi]); }
        default: { v = a; }
    }
    arena[p(5u) + idx] = v;
}
"#;

/// 2-D max/average pooling, one thread per output element. Max ignores padded cells; the
/// average divides by the valid cells, or with `count_include_pad` by the cells inside the
/// input grown by its explicit pads (never the extra cells a ceil-mode window reaches).
const POOL: &str = r#"
// params: 0 x_sel 1 x_off 2 y_off 3 NC 4 H 5 W 6 OH 7 OW 8 KH 9 KW 10 SH 11 SW 12 PH 13 PW
// 14 DH 15 DW 16 is_max 17 count_include_pad 18 PH_end 19 PW_end
@compute @workgroup_size(256, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = linear_index(gid, nwg);
    let H = p(4u); let W = p(5u); let OH = p(6u); let OW = p(7u);
    if (idx >= p(3u) * OH * OW) { return; }
    let KH = p(8u); let KW = p(9u); let SH = p(10u); let SW = p(11u);
    let PH = p(12u); let PW = p(13u); let DH = p(14u); let DW = p(15u);
    let plane = idx / (OH * OW); let pix = idx % (OH * OW);
    let oy = pix / OW; let ox = pix % OW;
    let xb = p(1u) + plane * H * W;
    let is_max = p(16u) != 0u;
    var m = -3.4028235e38;
    var s = 0.0;
    var valid = 0u;
    var padded_h = 0u;
    var padded_w = 0u;
    for (var ky = 0u; ky < KH; ky++) {
        let py = oy * SH + ky * DH;
        if (py < H + PH + p(18u)) { padded_h += 1u; }
        let iy = i32(py) - i32(PH);
        if (iy < 0 || iy >= i32(H)) { continue; }
        for (var kx = 0u; kx < KW; kx++) {
            let ix = i32(ox * SW + kx * DW) - i32(PW);
            if (ix < 0 || ix >= i32(W)) { continue; }
            let v = ld(p(0u), xb + u32(iy) * W + u32(ix));
            m = max(m, v);
            s += v;
            valid += 1u;
        }
    }
    for (var kx = 0u; kx < KW; kx++) {
        if (ox * SW + kx * DW < W + PW + p(19u)) { padded_w += 1u; }
    }
    var out = m;
    if (!is_max) {
        var cnt = valid;
        if (p(17u) != 0u) { cnt = padded_h * padded_w; }
        out = select(s / f32(cnt), 0.0, cnt == 0u);
    }
    arena[p(2u) + idx] = out;
}
"#;

/// GlobalAveragePool / GlobalMaxPool: one thread per (batch, channel) plane.
const GLOBAL_POOL: &str = r#"
// params: 0 x_sel 1 x_off 2 y_off 3 NC 4 HW 5 is_max
@compute @workgroup_size(256, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = linear_index(gid, nwg);
    if (idx >= p(3u)) { return; }
    let HW = p(4u);
    let xb = p(1u) + idx * HW;
    var m = -3.4028235e38;
    var s = 0.0;
    for (var i = 0u; i < HW; i++) {
        let v = ld(p(0u), xb + i);
        m = max(m, v);
        s += v;
    }
    arena[p(2u) + idx] = select(s / f32(HW), m, p(5u) != 0u);
}
"#;

/// Copies one Concat input into its slice of the output (rows of `inner_in` elements placed
/// `inner_out` apart, starting `dst_base` into each row).
const CONCAT: &str = r#"
// params: 0 x_sel 1 x_off 2 y_off 3 outer 4 inner_in 5 inner_out 6 dst_base
@compute @workgroup_size(256, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = linear_index(gid, nwg);
    let inner_in = p(4u);
    if (idx >= p(3u) * inner_in) { return; }
    let o = idx / inner_in; let r = idx % inner_in;
    arena[p(2u) + o * p(5u) + p(6u) + r] = ld(p(0u), p(1u) + idx);
}
"#;

/// Softmax, one thread per row (max, sum of exponentials, normalise).
const SOFTMAX: &str = r#"
// params: 0 x_sel 1 x_off 2 y_off 3 outer 4 n 5 inner
@compute @workgroup_size(256, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = linear_index(gid, nwg);
    let n = p(4u); let inner = p(5u);
    if (idx >= p(3u) * inner) { return; }
    let o = idx / inner; let i = idx % inner;
    let base = o * n * inner + i;
    let xs = p(0u); let xo = p(1u); let yo = p(2u);
    var m = -3.4028235e38;
    for (var k = 0u; k < n; k++) { m = max(m, ld(xs, xo + base + k * inner)); }
    var s = 0.0;
    for (var k = 0u; k < n; k++) {
        let e = exp(ld(xs, xo + base + k * inner) - m);
        arena[yo + base + k * inner] = e;
        s += e;
    }
    for (var k = 0u; k < n; k++) { arena[yo + base + k * inner] = arena[yo + base + k * inner] / s; }
}
"#;

/// The compute kernels, one pipeline each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kernel {
    ConvGemm,
    ConvDirect,
    Gemm,
    Elementwise,
    Pool,
    GlobalPool,
    Concat,
    Softmax,
}

impl Kernel {
    pub const ALL: [Kernel; 8] = [
        Kernel::ConvGemm,
        Kernel::ConvDirect,
        Kernel::Gemm,
        Kernel::Elementwise,
        Kernel::Pool,
        Kernel::GlobalPool,
        Kernel::Concat,
        Kernel::Softmax,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kernel::ConvGemm => "conv_gemm",
            Kernel::ConvDirect => "conv_direct",
            Kernel::Gemm => "gemm",
            Kernel::Elementwise => "elementwise",
            Kernel::Pool => "pool",
            Kernel::GlobalPool => "global_pool",
            Kernel::Concat => "concat",
            Kernel::Softmax => "softmax",
        }
    }

    /// Full WGSL source (shared declarations + kernel).
    pub fn source(self) -> String {
        let body = match self {
            Kernel::ConvGemm => CONV_GEMM,
            Kernel::ConvDirect => CONV_DIRECT,
            Kernel::Gemm => GEMM,
            Kernel::Elementwise => ELEMENTWISE,
            Kernel::Pool => POOL,
            Kernel::GlobalPool => GLOBAL_POOL,
            Kernel::Concat => CONCAT,
            Kernel::Softmax => SOFTMAX,
        };
        format!("{COMMON}\n{body}")
    }

    /// Whether the kernel tiles 64x64 outputs per 16x16 workgroup (else 256 threads on a
    /// linear index).
    pub fn tiled(self) -> bool {
        matches!(self, Kernel::ConvGemm | Kernel::Gemm)
    }
}
