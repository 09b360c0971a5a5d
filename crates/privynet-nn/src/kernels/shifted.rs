//! "Same" convolutions (stride 1, odd square kernel, padding half the kernel, no dilation or
//! groups) that [`super::batch_last`] does not take (maps larger than 16x16: the IRN's 32x32
//! blocks; or fewer than 16 input channels) as one matrix product per kernel tap on shifted
//! views of a padded copy, with no unfolded input.
//!
//! A tile of images is copied once into a frame: per channel, the images' planes one after
//! another, each row followed by `p` zeros and each image by `p` rows of zeros (`(H + p) x
//! (W + p)` values an image: a row's trailing zeros are the next row's leading padding, an
//! image's trailing rows the next image's top padding), with a margin of zeros at both ends.
//! In that frame, tap
//! `(i, j)` of the output at position `q` reads the input at `q + off(i, j)`, one constant
//! offset per tap, so for every tap the input is a plain strided matrix `[C, positions]`:
//! - forward: `y += w_tap [O, C] @ frame(x) shifted by +off`;
//! - input gradient: `dx += w_tapᵀ [C, O] @ frame(dy) shifted by -off`;
//! - weight gradient: `dw_tap += frame(dy) [O, positions] @ (frame(x) shifted by +off)ᵀ`.
//!
//! Outputs are computed at the padding positions too and dropped (6% more arithmetic at 32x32,
//! 31% at 7x7, 56% at 4x4), in exchange for no unfolding: burn's im2col writes `C x k²` values per output
//! position and reads them back. Each tile runs single-threaded; tiles run in parallel, and
//! the weight gradient's partial sums are added in tile order, so results do not depend on
//! the number of threads.

use rayon::prelude::*;

use super::gemm::{View, gemm};
use super::tiled_backward;

/// Output positions a tile aims for: a tile's frame of 64 channels stays within a core's L2.
const TILE_POSITIONS: usize = 2048;

/// Tiles a batch is cut into at least, so that small maps still give every core work.
const MIN_TILES: usize = 4;

/// The most arithmetic the padding positions may add, as a factor. Square maps of the sizes
/// frames take add at most 13% (17x17); only narrow ones (a few rows or columns) add more,
/// and take unfolded tiles instead: measured (`make bench BENCH=kernels`) when frames also
/// took small maps, 7x7 (1.31) gained on burn's im2col, 4x4 with 128 channels (1.56) lost.
const MAX_WASTE: f64 = 1.35;

/// A "same" convolution's geometry: input `[n, c, h, w]`, weight `[o, c, k, k]`, padding `p`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Same {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    o: usize,
    k: usize,
    p: usize,
}

impl Same {
    /// The geometry, if the convolution is a "same" one.
    pub(crate) fn new(
        x: &[usize],
        weight: &[usize],
        stride: [usize; 2],
        padding: [(usize, usize); 2],
        dilation: [usize; 2],
        groups: usize,
    ) -> Option<Self> {
        let k = weight[2];
        let p = k / 2;
        let same = k % 2 == 1
            && weight[3] == k
            && weight[1] == x[1]
            && stride == [1, 1]
            && dilation == [1, 1]
            && groups == 1
            && padding == [(p, p), (p, p)];
        same.then_some(Self {
            n: x[0],
            c: x[1],
            h: x[2],
            w: x[3],
            o: weight[0],
            k,
            p,
        })
    }

    /// Whether this module computes it: its padding positions add at most [`MAX_WASTE`] to
    /// the arithmetic (smaller maps take another route, `kernels::route`).
    pub(crate) fn framed(&self) -> bool {
        self.per_image() as f64 / (self.h * self.w).max(1) as f64 <= MAX_WASTE
    }

    /// The output's shape: `[n, o, h, w]`.
    pub(crate) fn output_shape(&self) -> Vec<usize> {
        vec![self.n, self.o, self.h, self.w]
    }

    /// A row's values in a frame, its padding included; an image's; the margin of zeros
    /// before and after a frame (what the first image's taps reach above and left of it).
    fn wp(&self) -> usize {
        self.w + self.p
    }

    fn per_image(&self) -> usize {
        (self.h + self.p) * self.wp()
    }

    fn margin(&self) -> usize {
        self.p * self.wp() + self.p
    }

    /// Images per tile: about [`TILE_POSITIONS`] positions, and at least [`MIN_TILES`] tiles
    /// where the batch allows. It depends on the geometry only, never on the thread count,
    /// so the weight gradient's partial sums group the same way on any machine.
    fn tile(&self) -> usize {
        (TILE_POSITIONS / self.per_image()).clamp(1, self.n.div_ceil(MIN_TILES).max(1))
    }

    /// Tap `t` (row-major over the kernel) as its frame offset.
    fn offset(&self, t: usize) -> isize {
        let (i, j) = ((t / self.k) as isize, (t % self.k) as isize);
        let p = self.p as isize;
        (i - p) * self.wp() as isize + (j - p)
    }

    /// The weight's tap `t` as `[O, C]` (or, `transposed`, `[C, O]`).
    fn weight_tap(&self, t: usize, transposed: bool) -> View {
        View::weight_tap(self.o, self.c, self.k * self.k, t, transposed)
    }
}

/// A tile's frame: `channels` rows of `margin + images x per_image + margin` values, the
/// images' planes (`src`, `[images, channels, h, w]`) inside their padding, zeros elsewhere.
struct Frame {
    data: Vec<f32>,
    len: usize,
}

impl Frame {
    fn new(src: &[f32], g: &Same, channels: usize, images: usize) -> Self {
        let (m, wp, per) = (g.margin(), g.wp(), g.per_image());
        let len = 2 * m + images * per;
        let mut data = vec![0.0f32; channels * len];
        for (t, image) in src.chunks(channels * g.h * g.w).enumerate() {
            for (ch, plane) in image.chunks(g.h * g.w).enumerate() {
                for (y, row) in plane.chunks(g.w).enumerate() {
                    let at = ch * len + m + t * per + y * wp;
                    data[at..at + g.w].copy_from_slice(row);
                }
            }
        }
        Self { data, len }
    }

    /// The frame's `rows` x `cols` positions from `m + shift`, as `[rows, cols]`
    /// (or, `transposed`, `[cols, rows]`).
    fn view(&self, g: &Same, rows: usize, cols: usize, shift: isize, transposed: bool) -> View {
        let start = (g.margin() as isize + shift) as usize;
        if transposed {
            View::new(start, [cols, rows], [1, self.len])
        } else {
            View::new(start, [rows, cols], [self.len, 1])
        }
    }
}

/// The interior of `[rows, images x per_image]` (padded positions dropped) into `dst`
/// (`[images, rows, h, w]`).
fn crop(src: &[f32], g: &Same, rows: usize, dst: &mut [f32]) {
    let (per, wp) = (g.per_image(), g.wp());
    let cols = src.len() / rows;
    for (t, image) in dst.chunks_mut(rows * g.h * g.w).enumerate() {
        for (r, plane) in image.chunks_mut(g.h * g.w).enumerate() {
            for (y, row) in plane.chunks_mut(g.w).enumerate() {
                let at = r * cols + t * per + y * wp;
                row.copy_from_slice(&src[at..at + g.w]);
            }
        }
    }
}

/// The sum over taps of `a(tap) @ b(tap)` as `[rows, cols]`, cropped into `dst`.
fn taps_into(
    g: &Same,
    rows: usize,
    lhs: &[f32],
    a: impl Fn(usize) -> View,
    rhs: &[f32],
    b: impl Fn(usize) -> View,
    dst: &mut [f32],
) {
    let cols = b(0).cols();
    let mut out = vec![0.0f32; rows * cols];
    let d = View::new(0, [rows, cols], [cols, 1]);
    for t in 0..g.k * g.k {
        gemm(&mut out, d, t > 0, lhs, a(t), rhs, b(t));
    }
    crop(&out, g, rows, dst);
}

/// The convolution of `x` (`[n, c, h, w]`) with `weight` (`[o, c, k, k]`): `[n, o, h, w]`.
pub(crate) fn forward(x: &[f32], weight: &[f32], g: &Same) -> Vec<f32> {
    let tile = g.tile();
    let (image_in, image_out) = (g.c * g.h * g.w, g.o * g.h * g.w);
    let mut y = super::zeros(g.n * image_out);
    y.par_chunks_mut(tile * image_out)
        .zip(x.par_chunks(tile * image_in))
        .for_each(|(yt, xt)| {
            let images = xt.len() / image_in;
            let f = Frame::new(xt, g, g.c, images);
            let cols = images * g.per_image();
            let b = |t| f.view(g, g.c, cols, g.offset(t), false);
            taps_into(g, g.o, weight, |t| g.weight_tap(t, false), &f.data, b, yt);
        });
    y
}

/// The gradients of [`forward`] for the output gradient `dy`: the input's where `want_x`,
/// the weight's where `want_w`.
pub(crate) fn backward(
    x: &[f32],
    weight: &[f32],
    dy: &[f32],
    g: &Same,
    want_x: bool,
    want_w: bool,
) -> (Option<Vec<f32>>, Option<Vec<f32>>) {
    let tile = g.tile();
    let (image_in, image_out) = (g.c * g.h * g.w, g.o * g.h * g.w);
    let taps = g.k * g.k;
    let tile_grads = |t0: usize, dxt: Option<&mut [f32]>| {
        let images = (g.n - t0).min(tile);
        let fy = Frame::new(&dy[t0 * image_out..][..images * image_out], g, g.o, images);
        let cols = images * g.per_image();
        if let Some(dxt) = dxt {
            let b = |t| fy.view(g, g.o, cols, -g.offset(t), false);
            taps_into(g, g.c, weight, |t| g.weight_tap(t, true), &fy.data, b, dxt);
        }
        want_w.then(|| {
            let fx = Frame::new(&x[t0 * image_in..][..images * image_in], g, g.c, images);
            let mut dw = vec![0.0f32; g.o * g.c * taps];
            let a = fy.view(g, g.o, cols, 0, false);
            for t in 0..taps {
                let b = fx.view(g, g.c, cols, g.offset(t), true);
                gemm(
                    &mut dw,
                    g.weight_tap(t, false),
                    false,
                    &fy.data,
                    a,
                    &fx.data,
                    b,
                );
            }
            dw
        })
    };
    tiled_backward(g.n, tile, image_in, want_x, tile_grads)
}
