//! The gradients of a 2-D convolution as matrix products over tiles of images, on burn-flex's
//! fp32 tensors; and the forward pass the same way, where it pays ([`tiles_forward`]).
//!
//! burn computes a convolution's input gradient as a transposed convolution and its weight
//! gradient as a convolution with batch and channels swapped. Here, for each tile of images
//! (about [`TILE_POSITIONS`] output positions, so a tile's buffers stay in cache), in parallel
//! over tiles:
//!
//! - the output gradient as `[g, O/g, T]` (T = the tile's output positions);
//! - the weight gradient: `dy @ colsᵀ`, `cols` being the tile's input unfolded, `[g, K, T]`
//!   (K = C/g * kh * kw); the tiles' partial sums are added at the end;
//! - the input gradient: `wᵀ @ dy`, `[g, K, T]`, folded back onto the tile's images (col2im);
//!   each tile writes only its own images.
//!
//! The products are burn-flex's own `float_matmul` (the gemm crate, strided operands, so the
//! transposes cost nothing); unfolding and folding are written here in safe Rust, one row
//! segment at a time.

use burn::backend::Flex;
use burn::backend::flex::FlexTensor;
use burn::backend::ops::{FloatTensorOps, ModuleOps};
use burn::tensor::DType;
use burn::tensor::ops::ConvOptions;

use rayon::prelude::*;

use super::{dims, tensor, tiled_backward, values};

/// Output positions per tile: large enough for the products to run near the gemm's speed,
/// small enough that a tile's unfolded input and gradients stay in a core's cache.
const TILE_POSITIONS: usize = 1024;

/// The geometry of one convolution: input `[n, c, h, w]`, weight `[o, c / groups, kh, kw]`,
/// output `[n, o, oh, ow]`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Geometry {
    pub(super) n: usize,
    pub(super) c: usize,
    pub(super) h: usize,
    pub(super) w: usize,
    pub(super) o: usize,
    pub(super) kh: usize,
    pub(super) kw: usize,
    pub(super) oh: usize,
    pub(super) ow: usize,
    pub(super) groups: usize,
    pub(super) stride: [usize; 2],
    dilation: [usize; 2],
    /// Padding before the first row and column.
    pad: [usize; 2],
}

impl Geometry {
    /// The geometry of `x` convolved with `weight` (contiguous or not).
    pub(super) fn of(x: &FlexTensor, weight: &FlexTensor, options: &ConvOptions<2>) -> Self {
        let (xd, wd) = (dims(x), dims(weight));
        let (pad, s, d) = (options.padding, options.stride, options.dilation);
        let yd = [
            xd[0],
            wd[0],
            out_size(xd[2], pad[0], wd[2], s[0], d[0]),
            out_size(xd[3], pad[1], wd[3], s[1], d[1]),
        ];
        Self::new(&xd, &wd, &yd, options)
    }

    /// The output's shape, `[n, o, oh, ow]`.
    pub(super) fn output_shape(&self) -> Vec<usize> {
        vec![self.n, self.o, self.oh, self.ow]
    }

    fn new(x: &[usize], wt: &[usize], y: &[usize], options: &ConvOptions<2>) -> Self {
        Self {
            n: x[0],
            c: x[1],
            h: x[2],
            w: x[3],
            o: wt[0],
            kh: wt[2],
            kw: wt[3],
            oh: y[2],
            ow: y[3],
            groups: options.groups,
            stride: options.stride,
            dilation: options.dilation,
            pad: [options.padding[0].0, options.padding[1].0],
        }
    }

    /// Rows of the unfolded input per group: C/g * kh * kw.
    fn k(&self) -> usize {
        self.c / self.groups * self.kh * self.kw
    }

    /// Output positions per image.
    fn p(&self) -> usize {
        self.oh * self.ow
    }

    /// For tap `tap` along `axis`, the output coordinates `[lo, hi)` that read inside the input
    /// (not the padding), and the input coordinate output `lo` reads.
    pub(super) fn valid(&self, axis: usize, tap: usize) -> (usize, usize, usize) {
        let (size, out) = if axis == 0 {
            (self.h, self.oh)
        } else {
            (self.w, self.ow)
        };
        let (s, offset, pad) = (self.stride[axis], tap * self.dilation[axis], self.pad[axis]);
        // Output o reads o * s + offset - pad, inside when pad <= o * s + offset < size + pad.
        let lo = pad.saturating_sub(offset).div_ceil(s);
        let hi = (size + pad).saturating_sub(offset).div_ceil(s).min(out);
        let lo = lo.min(hi);
        (lo, hi, (lo * s + offset).saturating_sub(pad))
    }
}

/// For tap `(i, j)`: each output row `oh` that reads inside the input, with the input row it
/// reads, the output columns `[ow0, ow1)` that do, and the input column `ow0` reads.
fn rows(
    g: &Geometry,
    i: usize,
    j: usize,
) -> impl Iterator<Item = (usize, usize, usize, usize, usize)> {
    let (oh0, oh1, ih0) = g.valid(0, i);
    let (ow0, ow1, iw0) = g.valid(1, j);
    let sh = g.stride[0];
    (oh0..oh1).map(move |oh| (oh, ih0 + (oh - oh0) * sh, ow0, ow1, iw0))
}

/// Tap `(i, j)` of one input plane (`[h, w]`) at every output position (`out`, `[oh, ow]`,
/// zero where the tap reads padding).
fn gather(g: &Geometry, plane: &[f32], out: &mut [f32], i: usize, j: usize) {
    for (oh, ih, ow0, ow1, iw0) in rows(g, i, j) {
        let src = plane[ih * g.w + iw0..(ih + 1) * g.w]
            .iter()
            .step_by(g.stride[1]);
        for (d, s) in out[oh * g.ow + ow0..oh * g.ow + ow1].iter_mut().zip(src) {
            *d = *s;
        }
    }
}

/// The reverse of [`gather`]: `src` (`[oh, ow]`) added onto the plane where tap `(i, j)` reads.
fn scatter(g: &Geometry, plane: &mut [f32], src: &[f32], i: usize, j: usize) {
    for (oh, ih, ow0, ow1, iw0) in rows(g, i, j) {
        let dst = plane[ih * g.w + iw0..(ih + 1) * g.w]
            .iter_mut()
            .step_by(g.stride[1]);
        for (d, s) in dst.zip(&src[oh * g.ow + ow0..oh * g.ow + ow1]) {
            *d += *s;
        }
    }
}

/// A tile's input (images `[n0, n0 + tn)` of `x`) unfolded: `[g, K, tn * P]`.
fn unfold(x: &[f32], g: &Geometry, n0: usize, tn: usize) -> Vec<f32> {
    let (k, p, hw) = (g.k(), g.p(), g.h * g.w);
    let cg = g.c / g.groups;
    let mut cols = vec![0.0f32; g.groups * k * tn * p];
    for (row, out) in cols.chunks_mut(tn * p).enumerate() {
        let (group, r) = (row / k, row % k);
        let (ci, i, j) = (r / (g.kh * g.kw), r / g.kw % g.kh, r % g.kw);
        for t in 0..tn {
            let channel = (n0 + t) * g.c + group * cg + ci;
            gather(g, &x[channel * hw..][..hw], &mut out[t * p..][..p], i, j);
        }
    }
    cols
}

/// A tile's column gradients `[g, K, tn * P]` folded back onto its images' input gradient
/// (`dx`, `[tn, C, H, W]`).
fn fold(cols: &[f32], g: &Geometry, tn: usize, dx: &mut [f32]) {
    let (k, p, hw) = (g.k(), g.p(), g.h * g.w);
    let cg = g.c / g.groups;
    for (row, src) in cols.chunks(tn * p).enumerate() {
        let (group, r) = (row / k, row % k);
        let (ci, i, j) = (r / (g.kh * g.kw), r / g.kw % g.kh, r % g.kw);
        for t in 0..tn {
            let plane = &mut dx[(t * g.c + group * cg + ci) * hw..][..hw];
            scatter(g, plane, &src[t * p..][..p], i, j);
        }
    }
}

/// A tile's output gradient (images `[n0, n0 + tn)` of `dy`, `[N, O, P]`) as `[O, tn * P]`.
fn tile_columns(dy: &[f32], g: &Geometry, n0: usize, tn: usize) -> Vec<f32> {
    let p = g.p();
    let mut out = vec![0.0f32; g.o * tn * p];
    for (o, row) in out.chunks_mut(tn * p).enumerate() {
        for t in 0..tn {
            row[t * p..][..p].copy_from_slice(&dy[((n0 + t) * g.o + o) * p..][..p]);
        }
    }
    out
}

/// One tile's weight-gradient part (`[O, K]`, if wanted), writing its input gradient into `dx`.
fn tile(
    x: &[f32],
    w: &FlexTensor,
    dy: &[f32],
    g: &Geometry,
    n0: usize,
    dx: Option<&mut [f32]>,
    want_w: bool,
) -> Option<Vec<f32>> {
    let tn = (g.n - n0).min(g.n.div_ceil(tiles(g)));
    let (k, og, t) = (g.k(), g.o / g.groups, tn * g.p());
    let dy_cols = tensor(tile_columns(dy, g, n0, tn), vec![g.groups, og, t]);
    let dw = want_w.then(|| {
        let cols = tensor(unfold(x, g, n0, tn), vec![g.groups, k, t]);
        let dw = Flex::float_matmul(dy_cols.clone(), cols.transpose(1, 2)).to_contiguous();
        values(&dw).to_vec()
    });
    if let Some(dx) = dx {
        let wt = w.reshape(vec![g.groups, og, k].into()).transpose(1, 2);
        let cols = Flex::float_matmul(wt, dy_cols).to_contiguous();
        fold(values(&cols), g, tn, dx);
    }
    dw
}

/// How many tiles of images the batch is cut into.
fn tiles(g: &Geometry) -> usize {
    let per_tile = TILE_POSITIONS.div_ceil(g.p().max(1)).max(1);
    g.n.div_ceil(per_tile)
}

/// A tile's product `[O, tn * P]` put back in the output's order (`y`, `[tn, O, P]`).
fn untile(cols: &[f32], g: &Geometry, tn: usize, y: &mut [f32]) {
    let p = g.p();
    for (o, row) in cols.chunks(tn * p).enumerate() {
        for t in 0..tn {
            y[(t * g.o + o) * p..][..p].copy_from_slice(&row[t * p..][..p]);
        }
    }
}

/// The output size of a convolution along one axis.
fn out_size(
    size: usize,
    pad: (usize, usize),
    kernel: usize,
    stride: usize,
    dilation: usize,
) -> usize {
    (size + pad.0 + pad.1 - dilation * (kernel - 1) - 1) / stride + 1
}

/// The largest unfolded row count (C/g * kh * kw) that [`conv2d_forward`] takes: measured
/// (one thread, `[100, C, H, W]`), 2.5-3x faster than burn-flex's forward for SqueezeNet's
/// first convolution (27 rows, stride 2) and 1.3-1.5x for its 3x3 fire convolutions (144 and
/// 288 rows); 576 rows (the cloud network's stride-2 layer) about equal; 1,152 rows (its 4x4
/// layer) 20% slower.
const TILED_FORWARD_ROWS: usize = 576;

/// Whether [`conv2d_forward`] computes this convolution (else burn-flex's forward).
pub(crate) fn tiles_forward(x: &FlexTensor, weight: &FlexTensor) -> bool {
    let w = dims(weight);
    [x.dtype(), weight.dtype()] == [DType::F32; 2] && w[1] * w[2] * w[3] <= TILED_FORWARD_ROWS
}

/// `conv2d(x, weight)` (no bias) over tiles of images, in parallel: each tile's input
/// unfolded, one product with the weight, put back in `[N, O, P]` order.
pub(crate) fn conv2d_forward(
    x: FlexTensor,
    weight: FlexTensor,
    options: &ConvOptions<2>,
) -> FlexTensor {
    let (x, weight) = (x.to_contiguous(), weight.to_contiguous());
    let g = Geometry::of(&x, &weight, options);
    let (k, og) = (g.k(), g.o / g.groups);
    let w = weight.reshape(vec![g.groups, og, k].into());
    let xs = values(&x);
    let per_tile = g.n.div_ceil(tiles(&g));
    let mut y = super::zeros(g.n * g.o * g.p());
    y.par_chunks_mut(per_tile * g.o * g.p())
        .enumerate()
        .for_each(|(i, ys)| {
            let tn = ys.len() / (g.o * g.p());
            let cols = tensor(
                unfold(xs, &g, i * per_tile, tn),
                vec![g.groups, k, tn * g.p()],
            );
            let out = Flex::float_matmul(w.clone(), cols).to_contiguous();
            untile(values(&out), &g, tn, ys);
        });
    tensor(y, g.output_shape())
}

/// The gradients of `conv2d(x, weight)` (no bias) for the output gradient `dy`: the input's
/// where `want_x`, the weight's where `want_w`. Other dtypes than fp32 go to burn's own.
pub(crate) fn conv2d_backward(
    x: FlexTensor,
    weight: FlexTensor,
    dy: FlexTensor,
    options: &ConvOptions<2>,
    want_x: bool,
    want_w: bool,
) -> (Option<FlexTensor>, Option<FlexTensor>) {
    if [x.dtype(), weight.dtype(), dy.dtype()] != [DType::F32; 3] {
        let dx = want_x.then(|| {
            Flex::conv2d_x_backward(x.clone(), weight.clone(), dy.clone(), options.clone())
        });
        let dw = want_w.then(|| Flex::conv2d_weight_backward(x, weight, dy, options.clone()));
        return (dx, dw);
    }
    let (x, weight, dy) = (
        x.to_contiguous(),
        weight.to_contiguous(),
        dy.to_contiguous(),
    );
    let (xd, wd) = (dims(&x), dims(&weight));
    let g = Geometry::new(&xd, &wd, &dims(&dy), options);
    let (xs, dys) = (values(&x), values(&dy));
    let per_tile = g.n.div_ceil(tiles(&g));
    let (dx, dw) = tiled_backward(g.n, per_tile, g.c * g.h * g.w, want_x, |n0, d| {
        tile(xs, &weight, dys, &g, n0, d, want_w)
    });
    (dx.map(|v| tensor(v, xd)), dw.map(|v| tensor(v, wd)))
}
