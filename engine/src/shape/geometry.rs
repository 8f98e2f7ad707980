//! Sliding-window arithmetic shared by shape inference, kernels, the cost model and the
//! receptive-field analysis, so they all agree on one definition of output sizes and padding.

use crate::ir::AutoPad;

/// The extent a dilated kernel covers: `dilation * (kernel - 1) + 1`. `None` on overflow or
/// for an empty kernel.
pub fn effective_kernel(kernel: usize, dilation: usize) -> Option<usize> {
    dilation.checked_mul(kernel.checked_sub(1)?)?.checked_add(1)
}

/// Output length of a convolution along one axis:
/// `floor((input + pad_begin + pad_end - dilation*(kernel-1) - 1) / stride) + 1`.
///
/// `None` when the dilated kernel does not fit in the padded input (no output position), when
/// `stride` or `kernel` is zero, or on overflow.
pub fn conv_output_len(
    input: usize,
    kernel: usize,
    stride: usize,
    dilation: usize,
    pad_begin: usize,
    pad_end: usize,
) -> Option<usize> {
    pool_output_len(input, kernel, stride, dilation, pad_begin, pad_end, false)
}

/// Output length of a pooling window along one axis, like [`conv_output_len`] but rounding up
/// when `ceil_mode` is set.
///
/// With `ceil_mode`, ONNX (and PyTorch) drop a last window that would *start* in the end
/// padding, i.e. at padded position `>= pad_begin + input`: such a window would see padding
/// only. This matters for e.g. input 6, kernel 2, stride 2, pad_end 1: the ceil formula gives 4
/// windows, but the fourth starts at 6 (in the padding), so the output is 3.
pub fn pool_output_len(
    input: usize,
    kernel: usize,
    stride: usize,
    dilation: usize,
    pad_begin: usize,
    pad_end: usize,
    ceil_mode: bool,
) -> Option<usize> {
    if stride == 0 {
        return None;
    }
    let eff = effective_kernel(kernel, dilation)?;
    let padded = input.checked_add(pad_begin)?.checked_add(pad_end)?;
    let span = padded.checked_sub(eff)?;
    let mut out = if ceil_mode {
        span.div_ceil(stride) + 1
    } else {
        span / stride + 1
    };
    if ceil_mode && out > 1 && (out - 1) * stride >= pad_begin + input {
        out -= 1;
    }
    Some(out)
}

/// Begin and end padding along one axis for an `auto_pad` mode.
///
/// * `SameUpper` / `SameLower`: the output length is `ceil(input / stride)`, and the total
///   padding needed for it, `max(0, (out - 1) * stride + dilation*(kernel-1) + 1 - input)`, is
///   split evenly with the odd cell at the end (`SameUpper`) or the beginning (`SameLower`).
/// * `Valid`: no padding.
/// * `NotSet`: `explicit` (the node's own pads) is returned unchanged.
///
/// `None` for a zero stride or on overflow.
pub fn resolve_auto_pad(
    auto_pad: AutoPad,
    input: usize,
    kernel: usize,
    stride: usize,
    dilation: usize,
    explicit: (usize, usize),
) -> Option<(usize, usize)> {
    match auto_pad {
        AutoPad::NotSet => Some(explicit),
        AutoPad::Valid => Some((0, 0)),
        AutoPad::SameUpper | AutoPad::SameLower => {
            if stride == 0 {
                return None;
            }
            let out = input.div_ceil(stride);
            let needed = out
                .saturating_sub(1)
                .checked_mul(stride)?
                .checked_add(effective_kernel(kernel, dilation)?)?;
            let total = needed.saturating_sub(input);
            let small = total / 2;
            let large = total - small;
            Some(if auto_pad == AutoPad::SameUpper {
                (small, large)
            } else {
                (large, small)
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conv_lengths() {
        // ResNet stem: 224, k7 s2 p3 -> 112; 3x3 s1 p1 keeps size; 1x1 s2 downsample 56 -> 28.
        assert_eq!(conv_output_len(224, 7, 2, 1, 3, 3), Some(112));
        assert_eq!(conv_output_len(56, 3, 1, 1, 1, 1), Some(56));
        assert_eq!(conv_output_len(56, 1, 2, 1, 0, 0), Some(28));
        // Dilation 2 on k3 covers 5 cells: (10 - 5)/1 + 1 = 6.
        assert_eq!(conv_output_len(10, 3, 1, 2, 0, 0), Some(6));
        // Kernel larger than the padded input.
        assert_eq!(conv_output_len(2, 5, 1, 1, 1, 1), None);
        assert_eq!(conv_output_len(4, 3, 0, 1, 0, 0), None);
    }

    #[test]
    fn pool_lengths_with_ceil_mode() {
        // ResNet max pool: 112, k3 s2 p1 -> 56; with ceil: ceil(111/2)+1 = 57, and the 57th
        // window starts at 112 < 1 + 112, inside the input, so it stays.
        assert_eq!(pool_output_len(112, 3, 2, 1, 1, 1, false), Some(56));
        assert_eq!(pool_output_len(112, 3, 2, 1, 1, 1, true), Some(57));
        // GoogLeNet-style: 112, k3 s2 p0: floor gives 55, ceil gives 56.
        assert_eq!(pool_output_len(112, 3, 2, 1, 0, 0, false), Some(55));
        assert_eq!(pool_output_len(112, 3, 2, 1, 0, 0, true), Some(56));
        // Last window would start in the end padding: 6, k2 s2 pad_end 1 -> ceil(5/2)+1 = 4,
        // but the 4th window starts at 6 >= 0 + 6, so 3.
        assert_eq!(pool_output_len(6, 2, 2, 1, 0, 1, true), Some(3));
        // Same but the window starts inside: 5, k2 s2 -> ceil(3/2)+1 = 3, third starts at 4 < 5.
        assert_eq!(pool_output_len(5, 2, 2, 1, 0, 0, true), Some(3));
        assert_eq!(pool_output_len(5, 2, 2, 1, 0, 0, false), Some(2));
    }

    #[test]
    fn auto_pad_resolution() {
        // in 7, k3 s2: out 4, needs (4-1)*2+3 = 9 -> total 2 -> (1,1) both ways.
        assert_eq!(
            resolve_auto_pad(AutoPad::SameUpper, 7, 3, 2, 1, (0, 0)),
            Some((1, 1))
        );
        // in 8, k3 s2: out 4, needs 9 -> total 1 -> upper (0,1), lower (1,0).
        assert_eq!(
            resolve_auto_pad(AutoPad::SameUpper, 8, 3, 2, 1, (0, 0)),
            Some((0, 1))
        );
        assert_eq!(
            resolve_auto_pad(AutoPad::SameLower, 8, 3, 2, 1, (0, 0)),
            Some((1, 0))
        );
        // in 5, k1 s2: out 3, needs 5 -> no padding.
        assert_eq!(
            resolve_auto_pad(AutoPad::SameUpper, 5, 1, 2, 1, (0, 0)),
            Some((0, 0))
        );
        // k4 s1 d2: eff 7, in 10: out 10, needs 16 -> total 6 -> (3,3).
        assert_eq!(
            resolve_auto_pad(AutoPad::SameLower, 10, 4, 1, 2, (9, 9)),
            Some((3, 3))
        );
        assert_eq!(
            resolve_auto_pad(AutoPad::Valid, 10, 3, 1, 1, (2, 2)),
            Some((0, 0))
        );
        assert_eq!(
            resolve_auto_pad(AutoPad::NotSet, 10, 3, 1, 1, (2, 1)),
            Some((2, 1))
        );
        // SAME gives ceil(in/stride) outputs.
        let (b, e) = resolve_auto_pad(AutoPad::SameUpper, 8, 3, 2, 1, (0, 0)).unwrap();
        assert_eq!(conv_output_len(8, 3, 2, 1, b, e), Some(4));
    }
}
