//! Max pooling over fp32 `[n, c, h, w]` maps, forward and backward, on burn-flex's tensors.
//!
//! burn-flex scans each window with one scalar loop that also tracks the argmax and NaN in
//! branches: measured 13-16 ms for SqueezeNet's first pool on 100 images (64 channels,
//! 15x15 to 7x7) on one core, a third of the optimisation attack's step. Here the forward is
//! separable: the maximum over the window's rows at every position first, then over its
//! columns, each one long loop over a tile of planes that the compiler vectorises, the outputs
//! read off at the windows' corners. The backward keeps no indices: it finds each window's
//! argmax again, the first position in row-major order that holds the output's value (the one
//! burn and PyTorch choose), and adds the output's gradient there. Windows are clipped to the
//! input, so padding never wins; NaN propagates.

use rayon::prelude::*;

/// Elements per parallel task: enough that a task's overhead is small against its work.
const TASK_ELEMENTS: usize = 16 * 1024;

/// The taps of one output position along one axis: the first input index and how many taps
/// fall inside the input, each `dilation` apart.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Taps {
    first: usize,
    count: usize,
}

/// One axis of a pooling window: every output position's taps.
fn axis_taps(
    input: usize,
    kernel: usize,
    stride: usize,
    pad: usize,
    dilation: usize,
    out: usize,
) -> Vec<Taps> {
    (0..out)
        .map(|o| {
            let valid: Vec<usize> = (0..kernel)
                .filter_map(|t| (o * stride + t * dilation).checked_sub(pad))
                .filter(|&i| i < input)
                .collect();
            Taps {
                first: valid.first().copied().unwrap_or(0),
                count: valid.len(),
            }
        })
        .collect()
}

/// The output size along one axis, as burn-flex and PyTorch compute it: in ceil mode, a last
/// window that would start in the trailing padding or past the input is dropped.
fn output_size(
    input: usize,
    kernel: usize,
    stride: usize,
    pad: usize,
    dilation: usize,
    ceil: bool,
) -> usize {
    let span = dilation * (kernel - 1) + 1;
    let padded = input + 2 * pad;
    if padded < span {
        return usize::from(ceil);
    }
    let room = padded - span;
    if !ceil {
        return room / stride + 1;
    }
    let out = room.div_ceil(stride) + 1;
    if (out - 1) * stride >= input + pad {
        out - 1
    } else {
        out
    }
}

/// A max pool's geometry: input `[n, c, h, w]` (`planes = n * c`), output `[n, c, oh, ow]`.
#[derive(Debug, Clone)]
pub(crate) struct Pool {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    rows: Vec<Taps>,
    cols: Vec<Taps>,
    kernel: [usize; 2],
    dilation: [usize; 2],
}

impl Pool {
    /// The geometry of pooling `shape` (`[n, c, h, w]`) with a `kernel` window, `stride`,
    /// symmetric `padding`, `dilation` and `ceil` mode. Kernel, stride and dilation must be
    /// positive.
    pub(crate) fn new(
        shape: &[usize],
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 2],
        dilation: [usize; 2],
        ceil: bool,
    ) -> Self {
        assert!(
            shape.len() == 4 && [kernel, stride, dilation].iter().flatten().all(|&v| v > 0),
            "max pool: a rank-4 input and a positive kernel, stride and dilation"
        );
        let axis = |a: usize| {
            let input = shape[2 + a];
            let (k, s, p, d) = (kernel[a], stride[a], padding[a], dilation[a]);
            axis_taps(input, k, s, p, d, output_size(input, k, s, p, d, ceil))
        };
        Self {
            n: shape[0],
            c: shape[1],
            h: shape[2],
            w: shape[3],
            rows: axis(0),
            cols: axis(1),
            kernel,
            dilation,
        }
    }

    pub(crate) fn output_shape(&self) -> Vec<usize> {
        vec![self.n, self.c, self.rows.len(), self.cols.len()]
    }

    fn plane_in(&self) -> usize {
        self.h * self.w
    }

    fn plane_out(&self) -> usize {
        self.rows.len() * self.cols.len()
    }

    /// Planes per parallel task.
    fn planes_per_task(&self) -> usize {
        (TASK_ELEMENTS / self.plane_in().max(1)).max(1)
    }

    /// The pooled maps of `x` (`[n, c, h, w]` flat).
    pub(crate) fn forward(&self, x: &[f32]) -> Vec<f32> {
        let (pin, pout, per) = (self.plane_in(), self.plane_out(), self.planes_per_task());
        let mut y = super::zeros(self.n * self.c * pout);
        if pout == 0 {
            return y;
        }
        y.par_chunks_mut(per * pout)
            .zip(x.par_chunks(per * pin))
            .for_each(|(ys, xs)| self.tile_forward(xs, ys));
        y
    }

    /// A tile of planes: the maximum over every window's rows at every position of the tile,
    /// then over its columns (two long loops over the whole tile, which the compiler
    /// vectorises; windows of a plane's last rows run on into the next plane, and feed no
    /// output); each whole window's output then read off at its corner. Windows clipped by
    /// the padding or the ceil mode are scanned alone.
    fn tile_forward(&self, x: &[f32], y: &mut [f32]) {
        let (w, [kh, kw], [dh, dw]) = (self.w, self.kernel, self.dilation);
        let both = span_max(&span_max(x, kh, dh * w), kw, dw);
        let (pin, ow) = (self.plane_in(), self.cols.len());
        for (plane, yp) in y.chunks_exact_mut(self.plane_out()).enumerate() {
            let xp = &x[plane * pin..][..pin];
            for (o, rt) in self.rows.iter().enumerate() {
                for (q, ct) in self.cols.iter().enumerate() {
                    yp[o * ow + q] = if rt.count == kh && ct.count == kw {
                        both[plane * pin + rt.first * w + ct.first]
                    } else {
                        self.window_max(xp, rt, ct)
                    };
                }
            }
        }
    }

    /// The maximum of one plane's window with taps `rt` by `ct` (`-inf` if it has none).
    fn window_max(&self, x: &[f32], rt: &Taps, ct: &Taps) -> f32 {
        let [dh, dw] = self.dilation;
        let mut m = f32::NEG_INFINITY;
        for t in 0..rt.count {
            let row = (rt.first + t * dh) * self.w + ct.first;
            for u in 0..ct.count {
                m = nan_max(m, x[row + u * dw]);
            }
        }
        m
    }

    /// The input gradient: each output's gradient `dy` added at its window's argmax in `x`
    /// (the first position, row-major, holding the output `y`).
    pub(crate) fn backward(&self, x: &[f32], y: &[f32], dy: &[f32]) -> Vec<f32> {
        let (pin, pout, per) = (self.plane_in(), self.plane_out(), self.planes_per_task());
        let mut dx = super::zeros(x.len());
        if pout == 0 {
            return dx;
        }
        dx.par_chunks_mut(per * pin)
            .zip(x.par_chunks(per * pin))
            .zip(y.par_chunks(per * pout).zip(dy.par_chunks(per * pout)))
            .for_each(|((dxs, xs), (ys, dys))| {
                let planes = dxs
                    .chunks_exact_mut(pin)
                    .zip(xs.chunks_exact(pin))
                    .zip(ys.chunks_exact(pout).zip(dys.chunks_exact(pout)));
                for ((dxp, xp), (yp, dyp)) in planes {
                    self.plane_backward(xp, yp, dyp, dxp);
                }
            });
        dx
    }

    fn plane_backward(&self, x: &[f32], y: &[f32], dy: &[f32], dx: &mut [f32]) {
        let ow = self.cols.len();
        for (o, rt) in self.rows.iter().enumerate() {
            for (q, ct) in self.cols.iter().enumerate() {
                if let Some(i) = self.argmax(x, rt, ct, y[o * ow + q]) {
                    dx[i] += dy[o * ow + q];
                }
            }
        }
    }

    /// The first position (row-major) in `x` of the window with taps `rt` by `ct` that holds
    /// `target`. The window is scanned backwards without an early exit, so that the choice
    /// compiles to conditional moves (an exit at a data-dependent tap mispredicts).
    fn argmax(&self, x: &[f32], rt: &Taps, ct: &Taps, target: f32) -> Option<usize> {
        let [dh, dw] = self.dilation;
        let mut at = usize::MAX;
        for t in (0..rt.count).rev() {
            let row = (rt.first + t * dh) * self.w + ct.first;
            for i in (0..ct.count).rev().map(|u| row + u * dw) {
                at = if equal(x[i], target) { i } else { at };
            }
        }
        (at != usize::MAX).then_some(at)
    }
}

/// `out[i]`: the maximum of `v[i + t * step]` over `t < taps`, for every `i` whose taps are
/// all in `v`.
fn span_max(v: &[f32], taps: usize, step: usize) -> Vec<f32> {
    let len = v.len().saturating_sub((taps - 1) * step);
    let mut out = v[..len].to_vec();
    if len == 0 {
        return out;
    }
    for t in 1..taps {
        let src = &v[t * step..][..len];
        out.iter_mut()
            .zip(src)
            .for_each(|(a, &b)| *a = nan_max(*a, b));
    }
    out
}

/// The larger of `a` and `b`, NaN winning (as in burn's and PyTorch's max pool).
#[inline(always)]
fn nan_max(a: f32, b: f32) -> f32 {
    if b > a || b.is_nan() { b } else { a }
}

/// `b == a`, NaN equal to NaN.
#[inline(always)]
fn equal(b: f32, a: f32) -> bool {
    (b == a) | (b.is_nan() & a.is_nan())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_sizes_follow_pytorch() {
        // SqueezeNet's pools: 3x3, stride 2, ceil mode.
        assert_eq!(output_size(15, 3, 2, 0, 1, true), 7);
        assert_eq!(output_size(7, 3, 2, 0, 1, true), 3);
        assert_eq!(output_size(8, 3, 2, 0, 1, true), 4);
        assert_eq!(output_size(8, 3, 2, 0, 1, false), 3);
        // Ceil mode never starts a window in the trailing padding.
        assert_eq!(output_size(5, 2, 2, 1, 1, true), 3);
        assert_eq!(output_size(2, 3, 1, 0, 1, false), 0);
    }

    #[test]
    fn windows_are_clipped_to_the_input() {
        let taps = axis_taps(5, 3, 2, 1, 1, 3);
        let expected = [(0, 2), (1, 3), (3, 2)].map(|(first, count)| Taps { first, count });
        assert_eq!(taps, expected);
    }

    #[test]
    fn ties_send_the_gradient_to_the_first_maximum_and_nan_wins() {
        // One 2x3 plane, a 2x2 window, stride 1: [1 3 3; 3 0 nan].
        let pool = Pool::new(&[1, 1, 2, 3], [2, 2], [1, 1], [0, 0], [1, 1], false);
        let x = [1.0, 3.0, 3.0, 3.0, 0.0, f32::NAN];
        let y = pool.forward(&x);
        assert_eq!(y[0], 3.0);
        assert!(y[1].is_nan());
        let dx = pool.backward(&x, &y, &[1.0, 10.0]);
        assert_eq!(dx, vec![0.0, 1.0, 0.0, 0.0, 0.0, 10.0]);
    }
}
