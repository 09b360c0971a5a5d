//! "Same" convolutions on small maps (the cloud network's 4x4 blocks) as matrix products over
//! a rows-first, batch-last layout, `[H, C, W, N]`, with no unfolded input and no padding
//! computed.
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

/// Tap `t`'s offsets: rows and columns, from the output position to the input position it
/// reads.
fn offsets(g: &Same, t: usize) -> (isize, isize) {
    let p = g.p as isize;
    ((t / g.k) as isize - p, (t % g.k) as isize - p)
}

/// The output columns `[lo, hi)` that read inside a row of `w` through column offset `d`.
fn columns(w: usize, d: isize) -> (usize, usize) {
    let lo = ((-d).max(0) as usize).min(w);
    let hi = (w as isize - d.max(0)).max(lo as isize) as usize;
    (lo, hi)
}

/// `row + d`, if inside `[0, size)`.
fn shifted(row: usize, d: isize, size: usize) -> Option<usize> {
    row.checked_add_signed(d).filter(|&r| r < size)
}

/// `src` (`[n, r, h, w]`) as rows first, `[h, r, w, n]`, in parallel over rows and channels.
fn to_rows_first(src: &[f32], g: &Same, n: usize, r: usize) -> Vec<f32> {
    let (h, w) = (g.h, g.w);
    let mut dst = vec![0.0f32; src.len()];
    dst.par_chunks_mut(w * n).enumerate().for_each(|(yr, d)| {
        let (y, ri) = (yr / r, yr % r);
        for img in 0..n {
            let row = &src[((img * r + ri) * h + y) * w..][..w];
            for (x, v) in row.iter().enumerate() {
                d[x * n + img] = *v;
            }
        }
    });
    dst
}

/// `src` (`[h, r, w, n]`) into `dst` (`[n, r, h, w]`), in parallel over images.
fn from_rows_first(src: &[f32], g: &Same, n: usize, r: usize, dst: &mut [f32]) {
    let (h, w) = (g.h, g.w);
    dst.par_chunks_mut(r * h * w)
        .enumerate()
        .for_each(|(img, d)| {
            for (i, v) in d.iter_mut().enumerate() {
                let (ri, y, x) = (i / (h * w), i / w % h, i % w);
                *v = src[((y * r + ri) * w + x) * n + img];
            }
        });
}

/// Row `y` of a rows-first tensor (`rows` channels, `n` images), columns `[x0, x0 + len)`, as
/// `[rows, len x n]` (or, `transposed`, `[len x n, rows]`), from the row's start.
fn span(g: &Same, n: usize, rows: usize, y: usize, x0: usize, len: usize, t: bool) -> View {
    let (line, offset) = (g.w * n, (y * rows * g.w + x0) * n);
    if t {
        View::new(offset, [len * n, rows], [1, line])
    } else {
        View::new(offset, [rows, len * n], [line, 1])
    }
}

/// The weight's tap `t` as `[O, C]` (or, `transposed`, `[C, O]`).
fn weight_tap(g: &Same, t: usize, transposed: bool) -> View {
    let (along_o, along_c) = (g.c * g.k * g.k, g.k * g.k);
    if transposed {
        View::new(t, [g.c, g.o], [along_c, along_o])
    } else {
        View::new(t, [g.o, g.c], [along_o, along_c])
    }
}

/// One tile's `n` images, rows first: `out = Σ_taps w_tap @ shifted(inp)`, in parallel over the
/// output's rows. Forward: `inp` the input (`C` channels), `out` the output (`O`); `reverse`:
/// `inp` the output gradient, `out` the input gradient, through the transposed taps.
fn products(g: &Same, weight: &[f32], inp: &[f32], n: usize, reverse: bool) -> Vec<f32> {
    let (rows, along) = if reverse { (g.c, g.o) } else { (g.o, g.c) };
    // The forward reads input row `y + d` for output row `y`; the input gradient, the reverse.
    let sign = if reverse { -1 } else { 1 };
    let line = rows * g.w * n;
    let mut out = vec![0.0f32; g.h * line];
    out.par_chunks_mut(line).enumerate().for_each(|(y, dst)| {
        for t in 0..g.k * g.k {
            let (di, dj) = offsets(g, t);
            let (di, dj) = (di * sign, dj * sign);
            let Some(from) = shifted(y, di, g.h) else {
                continue;
            };
            let (x0, x1) = columns(g.w, dj);
            let len = x1 - x0;
            let d = span(g, n, rows, 0, x0, len, false);
            let b = span(g, n, along, from, x0.saturating_add_signed(dj), len, false);
            gemm(dst, d, true, weight, weight_tap(g, t, reverse), inp, b);
        }
    });
    out
}

/// The images of each tile, `[n, r, h, w]` slices of `src` per tile, rows first.
fn tiles<'a>(
    g: &'a Same,
    src: &'a [f32],
    r: usize,
) -> impl Iterator<Item = (usize, Vec<f32>)> + 'a {
    let image = r * g.h * g.w;
    src.chunks(TILE_IMAGES * image).map(move |t| {
        let n = t.len() / image;
        (n, to_rows_first(t, g, n, r))
    })
}

/// The convolution of `x` (`[n, c, h, w]`) with `weight` (`[o, c, k, k]`): `[n, o, h, w]`.
pub(crate) fn forward(x: &[f32], weight: &[f32], g: &Same) -> Vec<f32> {
    let hw = g.h * g.w;
    let mut y = vec![0.0f32; g.n * g.o * hw];
    for ((n, xt), yt) in tiles(g, x, g.c).zip(y.chunks_mut(TILE_IMAGES * g.o * hw)) {
        from_rows_first(&products(g, weight, &xt, n, false), g, n, g.o, yt);
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
            from_rows_first(&products(g, weight, &dyt, n, true), g, n, g.c, part);
        }
        if let Some(dw) = dw.as_mut() {
            weight_grad(g, &dyt, &xt, n, dw);
        }
    }
    (dx, dw)
}

/// A tile's weight gradient added onto `dw` (`[O, C, k, k]`), in parallel over taps:
/// `dw_tap = Σ_rows dy[O, row] @ x[C, row shifted]ᵀ`.
fn weight_grad(g: &Same, dy: &[f32], x: &[f32], n: usize, dw: &mut [f32]) {
    let taps = g.k * g.k;
    let parts: Vec<Vec<f32>> = (0..taps)
        .into_par_iter()
        .map(|t| {
            let (di, dj) = offsets(g, t);
            let (x0, x1) = columns(g.w, dj);
            let mut part = vec![0.0f32; g.o * g.c];
            let d = View::new(0, [g.o, g.c], [g.c, 1]);
            for y in 0..g.h {
                let Some(from) = shifted(y, di, g.h) else {
                    continue;
                };
                let a = span(g, n, g.o, y, x0, x1 - x0, false);
                let b = span(g, n, g.c, from, x0.saturating_add_signed(dj), x1 - x0, true);
                gemm(&mut part, d, true, dy, a, x, b);
            }
            part
        })
        .collect();
    dw.par_chunks_mut(g.c * taps)
        .enumerate()
        .for_each(|(o, row)| {
            for (i, v) in row.iter_mut().enumerate() {
                *v += parts[i % taps][o * g.c + i / taps];
            }
        });
}
