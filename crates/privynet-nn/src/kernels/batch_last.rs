//! Convolutions with small output maps (the cloud network's 4x4 blocks and its stride-2
//! block, SqueezeNet's 3x3 fire convolutions at fire4-5) as matrix products over a rows-first,
//! batch-last layout, `[H, C, W, N]`: no unfolded input, and no padding multiplied.
//!
//! On maps this small, [`super::shifted`]'s frames compute too many padding positions (56%
//! more arithmetic at 4x4), and an unfolded input (im2col) multiplies its zeros too (44% more
//! at 4x4: 100 of a 3x3 kernel's 144 tap positions read inside a 4x4 map) and is written 4
//! values a row segment. With the batch last, the images' values at one position are
//! contiguous, so the output positions of one row that a tap reads inside the map form one
//! span of columns `[positions x N]` of the row's `[channels, W x N]` matrix; with the input's
//! columns stored in phases of the stride (`0, s, 2s, ..., 1, s + 1, ...`), so do the input
//! columns a strided tap reads. For each tap and row:
//! - forward: `y[O, span] += w_tap [O, C] @ x[C, span the tap reads]`;
//! - input gradient: `dx[C, span the tap reads] += w_tapᵀ [C, O] @ dy[O, span]`;
//! - weight gradient: `dw_tap [O, C] += dy[O, span] @ x[C, span the tap reads]ᵀ`.
//!
//! The layout costs a transposition of each operand and result. With the rows first, each
//! output row is one block, so the forward and the input gradient run in parallel over rows,
//! each product with every channel (the weight, not the larger activations, is what gets
//! packed again per row); the weight gradient runs in parallel over taps. Batches are cut into
//! tiles of about [`TILE_VALUES`] values that run in parallel too, so the cores share the rows
//! of all tiles (one tile's 7 rows split 4:3 over 2 cores), and every product's shape and order
//! is fixed by the geometry, so results do not depend on the thread count.

use rayon::prelude::*;

use super::conv::Geometry;
use super::gemm::{View, gemm};
use super::tiled_backward;

/// Images [`Layout::scatter`] moves at once: one cache line of fp32 values.
const IMAGES_AT_ONCE: usize = 16;

/// The values a tile holds on its larger side (input or output), at most: 512 KiB of fp32, so
/// that its operands stay in a core's L2. Measured on single layers: tiles of 32 images at
/// 4x4 with 256 outputs and of 16 at 8x8 with 128 channels were 5-20% faster than tiles of
/// 64-128 images; at 7x7 tiles of 16-64 images were equal.
const TILE_VALUES: usize = 128 * 1024;

/// The most output positions per image this module takes a convolution with (16x16). Measured
/// against frames, forward and backward of single layers, interleaved: 0.72 of their time at
/// 7x7 (128 channels), 0.78-0.84 at 8x8, 0.90-0.96 at 16x16, but 1.3-2.6x at 32x32; 4x4
/// outputs take 0.6 of the time of frames or unfolding (stride 1 and 2).
const MAX_POSITIONS: usize = 256;

/// The fewest input channels this module takes a convolution with. Each tap's product has the
/// input channels as its inner dimension: with SqueezeNet's first convolution (3 channels,
/// 15x15 outputs, stride 2) here, the optimisation attack's step through conv1 took 1.11-1.22
/// of burn's time, against 0.77-0.86 through unfolded products (27 rows); interleaved runs.
const MIN_CHANNELS: usize = 16;

/// Whether this module computes the convolution of geometry `g`: ungrouped, with small output
/// maps and enough input channels.
pub(crate) fn takes(g: &Geometry) -> bool {
    g.groups == 1 && g.oh * g.ow <= MAX_POSITIONS && g.c >= MIN_CHANNELS
}

/// A rows-first, batch-last tensor of one tile: `[height, rows, width, n]`, each row's columns
/// in the order `order` gives (the input side's in phases of the stride, so that the columns a
/// strided tap reads are contiguous).
struct Layout<'a> {
    height: usize,
    rows: usize,
    width: usize,
    n: usize,
    order: &'a [usize],
}

impl Layout<'_> {
    /// Row `y`'s columns `[x0, x0 + len)` (`x0` before reordering; the run must be contiguous
    /// after it), as `[rows, len x n]` (or, `transposed`, `[len x n, rows]`).
    fn view(&self, y: usize, x0: usize, len: usize, transposed: bool) -> View {
        let line = self.width * self.n;
        let offset = (y * self.rows * self.width + self.order[x0]) * self.n;
        if transposed {
            View::new(offset, [len * self.n, self.rows], [1, line])
        } else {
            View::new(offset, [self.rows, len * self.n], [line, 1])
        }
    }

    fn len(&self) -> usize {
        self.height * self.rows * self.width * self.n
    }

    /// `src` (`[n, rows, height, width]`) in this layout.
    fn gather(&self, src: &[f32]) -> Vec<f32> {
        let mut dst = vec![0.0f32; self.len()];
        self.gather_into(src, &mut dst);
        dst
    }

    /// `src` (`[n, rows, height, width]`) in this layout into `dst`, in parallel over rows and
    /// channels.
    fn gather_into(&self, src: &[f32], dst: &mut [f32]) {
        let (r, h, w, n) = (self.rows, self.height, self.width, self.n);
        dst.par_chunks_mut(w * n).enumerate().for_each(|(yr, d)| {
            let (y, ri) = (yr / r, yr % r);
            for img in 0..n {
                let row = &src[((img * r + ri) * h + y) * w..][..w];
                for (x, v) in row.iter().enumerate() {
                    d[self.order[x] * n + img] = *v;
                }
            }
        });
    }

    /// `src` (this layout) into `dst` (`[n, rows, height, width]`), in parallel over groups
    /// of [`IMAGES_AT_ONCE`] images: each read is one cache line of consecutive images, and
    /// each image's values are written in order.
    fn scatter(&self, src: &[f32], dst: &mut [f32]) {
        let (r, h, w, n) = (self.rows, self.height, self.width, self.n);
        let image = r * h * w;
        dst.par_chunks_mut(IMAGES_AT_ONCE * image)
            .enumerate()
            .for_each(|(group, d)| {
                let (first, images) = (group * IMAGES_AT_ONCE, d.len() / image);
                let mut at = 0;
                for ri in 0..r {
                    for y in 0..h {
                        for &x in self.order {
                            let from = &src[((y * r + ri) * w + x) * n + first..][..images];
                            for (k, v) in from.iter().enumerate() {
                                d[k * image + at] = *v;
                            }
                            at += 1;
                        }
                    }
                }
            });
    }
}

/// The position of each of `width` columns when those of stride phase 0 come first, then phase
/// 1, and so on: columns `x0, x0 + s, x0 + 2s, ...` are then contiguous.
fn phase_order(width: usize, s: usize) -> Vec<usize> {
    let before: Vec<usize> = (0..s)
        .scan(0, |acc, f| {
            let at = *acc;
            *acc += width.saturating_sub(f).div_ceil(s);
            Some(at)
        })
        .collect();
    (0..width).map(|x| before[x % s] + x / s).collect()
}

/// Both sides' layouts of one tile of `n` images: input (`C` channels, columns in stride
/// phases) and output (`O`).
struct Sides {
    input_order: Vec<usize>,
    output_order: Vec<usize>,
}

impl Sides {
    fn new(g: &Geometry) -> Self {
        Self {
            input_order: phase_order(g.w, g.stride[1]),
            output_order: (0..g.ow).collect(),
        }
    }

    fn input(&self, g: &Geometry, n: usize) -> Layout<'_> {
        Layout {
            height: g.h,
            rows: g.c,
            width: g.w,
            n,
            order: &self.input_order,
        }
    }

    fn output(&self, g: &Geometry, n: usize) -> Layout<'_> {
        Layout {
            height: g.oh,
            rows: g.o,
            width: g.ow,
            n,
            order: &self.output_order,
        }
    }
}

/// The weight's tap `t` as `[O, C]` (or, `transposed`, `[C, O]`).
fn weight_tap(g: &Geometry, t: usize, transposed: bool) -> View {
    View::weight_tap(g.o, g.c, g.kh * g.kw, t, transposed)
}

/// A tap's output rows `[lo, hi)` that read inside the input and the input row `lo` reads,
/// then its output columns likewise: `((oh0, oh1, ih0), (ow0, ow1, iw0))`.
type Reach = ((usize, usize, usize), (usize, usize, usize));

/// Tap `t`'s [`Reach`]; `None` where the tap reads only padding.
fn reach(g: &Geometry, t: usize) -> Option<Reach> {
    let (rows, cols) = (g.valid(0, t / g.kw), g.valid(1, t % g.kw));
    (rows.0 < rows.1 && cols.0 < cols.1).then_some((rows, cols))
}

/// The input row output row `oh` reads through tap rows `(oh0, oh1, ih0)`, if any.
fn input_row(g: &Geometry, (oh0, oh1, ih0): (usize, usize, usize), oh: usize) -> Option<usize> {
    (oh0..oh1)
        .contains(&oh)
        .then(|| ih0 + (oh - oh0) * g.stride[0])
}

/// The output row that reads input row `ih` through tap rows `(oh0, oh1, ih0)`, if any.
fn output_row(g: &Geometry, (oh0, oh1, ih0): (usize, usize, usize), ih: usize) -> Option<usize> {
    let d = ih.checked_sub(ih0)?;
    let oh = oh0 + d / g.stride[0];
    (d % g.stride[0] == 0 && oh < oh1).then_some(oh)
}

/// A tile's output (`[OH, O, OW, n]`): `y[row] = Σ_taps w_tap @ x[input row, tap's columns]`,
/// in parallel over output rows.
fn forward_tile(g: &Geometry, weight: &[f32], x: &[f32], s: &Sides, n: usize) -> Vec<f32> {
    let (inp, out) = (s.input(g, n), s.output(g, n));
    let mut y = vec![0.0f32; out.len()];
    y.par_chunks_mut(g.o * g.ow * n)
        .enumerate()
        .for_each(|(oh, dst)| {
            for t in 0..g.kh * g.kw {
                let Some((rows, (ow0, ow1, iw0))) = reach(g, t) else {
                    continue;
                };
                let Some(ih) = input_row(g, rows, oh) else {
                    continue;
                };
                let d = out.view(0, ow0, ow1 - ow0, false);
                let b = inp.view(ih, iw0, ow1 - ow0, false);
                gemm(dst, d, true, weight, weight_tap(g, t, false), x, b);
            }
        });
    y
}

/// A tile's input gradient (`[H, C, W, n]`): `dx[row, tap's columns] += w_tapᵀ @ dy[output
/// row]`, in parallel over input rows.
fn input_grad_tile(g: &Geometry, weight: &[f32], dy: &[f32], s: &Sides, n: usize) -> Vec<f32> {
    let (inp, out) = (s.input(g, n), s.output(g, n));
    let mut dx = vec![0.0f32; inp.len()];
    dx.par_chunks_mut(g.c * g.w * n)
        .enumerate()
        .for_each(|(ih, dst)| {
            for t in 0..g.kh * g.kw {
                let Some((rows, (ow0, ow1, iw0))) = reach(g, t) else {
                    continue;
                };
                let Some(oh) = output_row(g, rows, ih) else {
                    continue;
                };
                let d = inp.view(0, iw0, ow1 - ow0, false);
                let b = out.view(oh, ow0, ow1 - ow0, false);
                gemm(dst, d, true, weight, weight_tap(g, t, true), dy, b);
            }
        });
    dx
}

/// A tile's weight gradient tap by tap (`[kh x kw, O, C]`), in parallel over taps:
/// `dw_tap = Σ_rows dy[output row] @ x[input row, tap's columns]ᵀ`.
fn weight_grad_tile(g: &Geometry, dy: &[f32], x: &[f32], s: &Sides, n: usize) -> Vec<f32> {
    let (inp, out) = (s.input(g, n), s.output(g, n));
    let mut dw = vec![0.0f32; g.kh * g.kw * g.o * g.c];
    dw.par_chunks_mut(g.o * g.c)
        .enumerate()
        .for_each(|(t, part)| {
            let Some((rows, (ow0, ow1, iw0))) = reach(g, t) else {
                return;
            };
            let d = View::new(0, [g.o, g.c], [g.c, 1]);
            for oh in 0..g.oh {
                if let Some(ih) = input_row(g, rows, oh) {
                    let a = out.view(oh, ow0, ow1 - ow0, false);
                    let b = inp.view(ih, iw0, ow1 - ow0, true);
                    gemm(part, d, true, dy, a, x, b);
                }
            }
        });
    dw
}

/// A weight gradient tap by tap (`[taps, O, C]`) in the weight's layout, `[O, C, taps]`.
fn taps_last(g: &Geometry, by_tap: &[f32]) -> Vec<f32> {
    let (taps, oc) = (g.kh * g.kw, g.o * g.c);
    let mut dw = super::zeros(oc * taps);
    dw.par_chunks_mut(g.c * taps)
        .enumerate()
        .for_each(|(o, row)| {
            for (c, at) in row.chunks_mut(taps).enumerate() {
                for (t, v) in at.iter_mut().enumerate() {
                    *v = by_tap[t * oc + o * g.c + c];
                }
            }
        });
    dw
}

/// The convolution of `x` (`[n, c, h, w]`) with `weight` (`[o, c, kh, kw]`): `[n, o, oh, ow]`,
/// tiles in parallel (each in parallel over its rows, so the rows of all tiles share the cores);
/// and `x` in the layout, tile after tile, which [`backward`] takes for the weight gradient
/// instead of transposing `x` again.
pub(crate) fn forward(x: &[f32], weight: &[f32], g: &Geometry) -> (Vec<f32>, Vec<f32>) {
    let s = Sides::new(g);
    let (image_in, image_out) = (g.c * g.h * g.w, g.o * g.oh * g.ow);
    let tile = tile_images(g);
    let (mut y, mut tiles) = (super::zeros(g.n * image_out), super::zeros(x.len()));
    y.par_chunks_mut(tile * image_out)
        .zip(x.par_chunks(tile * image_in))
        .zip(tiles.par_chunks_mut(tile * image_in))
        .for_each(|((yt, xt), xr)| {
            let n = xt.len() / image_in;
            s.input(g, n).gather_into(xt, xr);
            s.output(g, n)
                .scatter(&forward_tile(g, weight, xr, &s, n), yt);
        });
    (y, tiles)
}

/// Images per tile: [`TILE_VALUES`] over an image's values on the larger side. It depends on
/// the geometry only, so the weight gradient's parts group the same way on any machine.
fn tile_images(g: &Geometry) -> usize {
    let image = (g.c * g.h * g.w).max(g.o * g.oh * g.ow);
    (TILE_VALUES / image.max(1)).max(1)
}

/// The gradients of [`forward`] for the output gradient `dy`, given the input in the layout
/// as [`forward`] returns it (`x_tiles`): the input's where `want_x`, the weight's where
/// `want_w` (tiles' parts summed in order, tap by tap, then put in the weight's layout once).
pub(crate) fn backward(
    x_tiles: &[f32],
    weight: &[f32],
    dy: &[f32],
    g: &Geometry,
    want_x: bool,
    want_w: bool,
) -> (Option<Vec<f32>>, Option<Vec<f32>>) {
    let s = Sides::new(g);
    let (image_in, image_out) = (g.c * g.h * g.w, g.o * g.oh * g.ow);
    let per = tile_images(g);
    let tile = |t0: usize, dxt: Option<&mut [f32]>| {
        let n = (g.n - t0).min(per);
        let dyr = s
            .output(g, n)
            .gather(&dy[t0 * image_out..][..n * image_out]);
        if let Some(dxt) = dxt {
            s.input(g, n)
                .scatter(&input_grad_tile(g, weight, &dyr, &s, n), dxt);
        }
        want_w.then(|| {
            let xr = &x_tiles[t0 * image_in..][..n * image_in];
            weight_grad_tile(g, &dyr, xr, &s, n)
        })
    };
    let (dx, by_tap) = tiled_backward(g.n, per, image_in, want_x, tile);
    (dx, by_tap.map(|d| taps_last(g, &d)))
}
