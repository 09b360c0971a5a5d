//! "Same" convolutions on small maps (the cloud network's 4x4 blocks) as matrix products over
//! a batch-last layout, `[C, H, W, N]`, with no unfolded input and no padding computed.
//!
//! On maps this small, [`super::shifted`]'s frames compute too many padding positions (56%
//! more arithmetic at 4x4) and an unfolded input (im2col) multiplies by its zeros as well
//! (44% at 4x4: 100 of a 3x3 kernel's 144 tap positions read inside a 4x4 map) and writes 4
//! values a row segment. With the batch last, the images' values at one position are
//! contiguous, so a tap's valid output positions in one row (or, for the kernel's middle
//! column, in all valid rows at once) form one span of columns `[positions x N]`, and for
//! each tap and span:
//! - forward: `y[O, span] += w_tap [O, C] @ x[C, span shifted by the tap]`;
//! - input gradient: `dx[C, span shifted] += w_tapᵀ [C, O] @ dy[O, span]`;
//! - weight gradient: `dw_tap [O, C] += dy[O, span] @ x[C, span shifted]ᵀ`.
//!
//! Only positions that read inside the map are multiplied. The layout costs one transposition
//! of each operand and result (a few percent of the products at 128 channels). Work is split
//! into [`BLOCKS`] blocks of output (or input) channels and batches into tiles of at most
//! [`TILE_IMAGES`] images, both fixed, so results do not depend on the thread count.

use rayon::prelude::*;

use super::gemm::{View, gemm};
use super::shifted::Same;

/// Images per tile: a tile's operands at 4x4 and 128 channels (1 MiB each) stay in L2.
const TILE_IMAGES: usize = 128;

/// Blocks of channels each product is split into, run in parallel.
const BLOCKS: usize = 4;

/// A run of positions, `len` long, that a tap maps from `out` (output) to `inp` (input), as
/// flat positions `y * w + x` of the map.
#[derive(Debug, Clone, Copy)]
struct Run {
    out: usize,
    inp: usize,
    len: usize,
}

/// Tap `t`'s runs: the output positions that read inside the map, one run per output row, or
/// one for all rows where the tap's column offset is 0 (whole rows are then contiguous).
fn runs(g: &Same, t: usize) -> Vec<Run> {
    let (di, dj) = (
        (t / g.k) as isize - g.p as isize,
        (t % g.k) as isize - g.p as isize,
    );
    let range = |size: usize, d: isize| {
        let lo = (-d).max(0) as usize;
        let hi = (size as isize - d.max(0)).max(0) as usize;
        (lo.min(hi), hi)
    };
    let ((oh0, oh1), (ow0, ow1)) = (range(g.h, di), range(g.w, dj));
    let at = |oh: usize, ow: usize| {
        let (ih, iw) = (oh as isize + di, ow as isize + dj);
        (oh * g.w + ow, ih as usize * g.w + iw as usize)
    };
    if oh0 == oh1 || ow0 == ow1 {
        return Vec::new();
    }
    if dj == 0 {
        let (out, inp) = at(oh0, 0);
        return vec![Run {
            out,
            inp,
            len: (oh1 - oh0) * g.w,
        }];
    }
    (oh0..oh1)
        .map(|oh| {
            let (out, inp) = at(oh, ow0);
            Run {
                out,
                inp,
                len: ow1 - ow0,
            }
        })
        .collect()
}

/// Channels per block for `channels`: a multiple of 16 (a vector of floats).
fn block(channels: usize) -> usize {
    channels.div_ceil(BLOCKS).div_ceil(16).max(1) * 16
}

/// `src` (`[n, r, hw]`) as `[r, hw, n]`, in parallel over `r`.
fn to_batch_last(src: &[f32], n: usize, r: usize, hw: usize) -> Vec<f32> {
    let mut dst = vec![0.0f32; src.len()];
    dst.par_chunks_mut(hw * n).enumerate().for_each(|(ri, d)| {
        for img in 0..n {
            let plane = &src[(img * r + ri) * hw..][..hw];
            for (p, v) in plane.iter().enumerate() {
                d[p * n + img] = *v;
            }
        }
    });
    dst
}

/// `src` (`[r, hw, n]`) into `dst` (`[n, r, hw]`), in parallel over images.
fn from_batch_last(src: &[f32], n: usize, r: usize, hw: usize, dst: &mut [f32]) {
    dst.par_chunks_mut(r * hw).enumerate().for_each(|(img, d)| {
        for (i, v) in d.iter_mut().enumerate() {
            *v = src[i * n + img];
        }
    });
}

/// A span of a batch-last tensor with `n` images: rows `[r0, r0 + rows)`, positions
/// `[pos, pos + len)`, as `[rows, len x n]` (or, `transposed`, `[len x n, rows]`).
fn span(
    g: &Same,
    n: usize,
    r0: usize,
    rows: usize,
    pos: usize,
    len: usize,
    transposed: bool,
) -> View {
    let plane = g.h * g.w * n;
    let offset = r0 * plane + pos * n;
    if transposed {
        View::new(offset, [len * n, rows], [1, plane])
    } else {
        View::new(offset, [rows, len * n], [plane, 1])
    }
}

/// The weight's tap `t`, output channels `[o0, o0 + rows)`, as `[rows, C]`; or, `transposed`,
/// input channels `[o0, o0 + rows)` as `[rows, O]`.
fn weight_tap(g: &Same, t: usize, o0: usize, rows: usize, transposed: bool) -> View {
    let (along_o, along_c) = (g.c * g.k * g.k, g.k * g.k);
    if transposed {
        View::new(t + o0 * along_c, [rows, g.o], [along_c, along_o])
    } else {
        View::new(t + o0 * along_o, [rows, g.c], [along_o, along_c])
    }
}

/// One tile's images, `[n, C, H, W]` in and `[n, O, H, W]` out (or the reverse, `reverse`:
/// the input gradient), batch-last: `out = Σ_taps w_tap @ shifted(inp)` in parallel over
/// blocks of the output's channels.
fn products(g: &Same, weight: &[f32], inp: &[f32], n: usize, reverse: bool) -> Vec<f32> {
    let (rows, along) = if reverse { (g.c, g.o) } else { (g.o, g.c) };
    let plane = g.h * g.w * n;
    let b = block(rows);
    let mut out = vec![0.0f32; rows * plane];
    out.par_chunks_mut(b * plane)
        .enumerate()
        .for_each(|(i, dst)| {
            let r = dst.len() / plane;
            for t in 0..g.k * g.k {
                for run in runs(g, t) {
                    let (to, from) = if reverse {
                        (run.inp, run.out)
                    } else {
                        (run.out, run.inp)
                    };
                    let d = span(g, n, 0, r, to, run.len, false);
                    let a = weight_tap(g, t, i * b, r, reverse);
                    let x = span(g, n, 0, along, from, run.len, false);
                    gemm(dst, d, true, weight, a, inp, x);
                }
            }
        });
    out
}

/// The images of each tile, `[n, c, h, w]` slices of `src` per tile, batch-last.
fn tiles<'a>(
    g: &'a Same,
    src: &'a [f32],
    r: usize,
) -> impl Iterator<Item = (usize, Vec<f32>)> + 'a {
    let image = r * g.h * g.w;
    src.chunks(TILE_IMAGES * image).map(move |t| {
        let n = t.len() / image;
        (n, to_batch_last(t, n, r, g.h * g.w))
    })
}

/// The convolution of `x` (`[n, c, h, w]`) with `weight` (`[o, c, k, k]`): `[n, o, h, w]`.
pub(crate) fn forward(x: &[f32], weight: &[f32], g: &Same) -> Vec<f32> {
    let hw = g.h * g.w;
    let mut y = vec![0.0f32; g.n * g.o * hw];
    for ((n, xt), yt) in tiles(g, x, g.c).zip(y.chunks_mut(TILE_IMAGES * g.o * hw)) {
        from_batch_last(&products(g, weight, &xt, n, false), n, g.o, hw, yt);
    }
    y
}

/// The gradients of [`forward`] for the output gradient `dy`: the input's where `want_x`,
/// the weight's where `want_w` (tiles' parts summed in order).
pub(crate) fn backward(
    x: &[f32],
    weight: &[f32],
    dy: &[f32],
    g: &Same,
    want_x: bool,
    want_w: bool,
) -> (Option<Vec<f32>>, Option<Vec<f32>>) {
    let hw = g.h * g.w;
    let mut dx = want_x.then(|| vec![0.0f32; g.n * g.c * hw]);
    let mut dw = want_w.then(|| vec![0.0f32; g.o * g.c * g.k * g.k]);
    let xs = tiles(g, x, g.c);
    for (i, ((n, dyt), (_, xt))) in tiles(g, dy, g.o).zip(xs).enumerate() {
        if let Some(dx) = dx.as_mut() {
            let part = &mut dx[i * TILE_IMAGES * g.c * hw..][..n * g.c * hw];
            from_batch_last(&products(g, weight, &dyt, n, true), n, g.c, hw, part);
        }
        if let Some(dw) = dw.as_mut() {
            weight_grad(g, &dyt, &xt, n, dw);
        }
    }
    (dx, dw)
}

/// A tile's weight gradient added onto `dw` (`[O, C, k, k]`), in parallel over blocks of output
/// channels: `dw_tap += Σ_runs dy[O, run] @ x[C, run shifted]ᵀ`.
fn weight_grad(g: &Same, dy: &[f32], x: &[f32], n: usize, dw: &mut [f32]) {
    let per_o = g.c * g.k * g.k;
    let b = block(g.o);
    dw.par_chunks_mut(b * per_o)
        .enumerate()
        .for_each(|(i, dst)| {
            let r = dst.len() / per_o;
            for t in 0..g.k * g.k {
                let d = weight_tap(g, t, 0, r, false);
                for run in runs(g, t) {
                    let a = span(g, n, i * b, r, run.out, run.len, false);
                    let xt = span(g, n, 0, g.c, run.inp, run.len, true);
                    gemm(dst, d, true, dy, a, x, xt);
                }
            }
        });
}
