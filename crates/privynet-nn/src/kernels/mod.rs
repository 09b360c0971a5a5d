//! Kernels this project owns, plugged into burn through its backend extension: a backend trait
//! with its own operations, implemented for burn-flex and for `Autodiff<Flex>` with a
//! handwritten backward pass, and a tensor-level function the networks call.
//!
//! `batch_norm_relu`: batch normalisation with the batch's statistics and the ReLU after it,
//! as one operation with its own backward ([`norm`]), instead of burn's twenty-odd tensor
//! operations. Every block of the cloud network and the IRN takes it in training.
//!
//! `conv2d`: a convolution with its own forward and backward, by one [`route`]: any ungrouped
//! one with output maps up to 16x16 (any stride) and 16 input channels or more is one matrix
//! product per kernel tap and output row over a batch-last copy ([`batch_last`]); a "same"
//! convolution (stride 1, padding half an odd kernel) it does not take, one product per tap
//! on shifted views of a padded copy ([`shifted`]); any other takes its gradients as products
//! over tiles of unfolded images ([`conv`]) instead of burn's generic backward (a transposed
//! convolution for the input gradient, a batch-for-channel convolution for the weight
//! gradient), and its forward the same way where the unfolded rows are few (up to 576:
//! SqueezeNet's first convolution), burn-flex's otherwise.
//!
//! The networks take it through [`conv2d_chosen`] (grouped convolutions keep burn's;
//! [`set_own_conv`] turns it off, for the bench's comparison): the blocks of the cloud network
//! and the IRN by [`conv2d_module`], the optimisation attack's local network directly.
//!
//! `max_pool2d`: max pooling with its own forward and backward ([`pool`]), for the local
//! network's pools.
//!
//! The matrix products are the `gemm` crate's, burn-flex's own, called through [`gemm`]'s
//! checked wrapper.

mod adam;
mod batch_last;
mod conv;
mod gemm;
mod norm;
mod pool;
mod shifted;

use std::sync::atomic::{AtomicBool, Ordering};

use burn::backend::AutodiffBackend;
use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::ops::ModuleOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Dispatch, Flex, backend_extension};
use burn::nn::conv::Conv2d;
use burn::nn::{BatchNorm, PaddingConfig2d};
use burn::tensor::activation::relu;
use burn::tensor::ops::{ConvOptions, MaxPoolOptions};
use burn::tensor::{DType, Tensor, TensorData};
use rayon::prelude::*;

pub use adam::{AdamStep, FusedAdam};

/// The operations this project implements itself.
#[backend_extension(Flex, Autodiff)]
pub trait Kernels: Backend {
    /// A 2-D convolution without bias (`[n, c, h, w]` by `[o, c / groups, kh, kw]`), with
    /// `stride`, `padding` as (begin, end) pairs, `dilation` and `groups`.
    fn conv2d_nobias(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        stride: [usize; 2],
        padding: [(usize, usize); 2],
        dilation: [usize; 2],
        groups: usize,
    ) -> FloatTensor<Self>;

    /// Batch normalisation of `x` (`[n, c, ...]`) with the batch's own statistics, scaled by
    /// `gamma` and shifted by `beta` (`[c]`), then the ReLU if `relu`: the output, and the
    /// batch's mean and biased variance per channel (not differentiated). fp32 only under
    /// autodiff.
    fn batch_norm_train_relu(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
        relu: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);

    /// Max pooling of `x` (`[n, c, h, w]`, fp32 under autodiff) over `kernel` windows with
    /// `stride`, symmetric `padding`, `dilation` and `ceil` mode.
    fn max_pool2d_own(
        x: FloatTensor<Self>,
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 2],
        dilation: [usize; 2],
        ceil: bool,
    ) -> FloatTensor<Self>;

    /// One Adam step on `param` (fp32) with `grad` and the moments `moment_1`, `moment_2`
    /// (ignored on the first step), as burn's `Adam` computes it ([`adam`]): the new
    /// parameter and moments.
    fn adam_step(
        param: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        moment_1: FloatTensor<Self>,
        moment_2: FloatTensor<Self>,
        step: AdamStep,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
}

fn dims(t: &FlexTensor) -> Vec<usize> {
    t.layout().shape().iter().copied().collect()
}

fn tensor(values: Vec<f32>, shape: Vec<usize>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape))
}

/// A contiguous fp32 tensor's values (the callers make it contiguous and check the dtype).
fn values(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>().expect("a contiguous fp32 tensor")
}

/// `t` contiguous over the whole of its storage, which [`FlexTensor::storage_mut`] then hands
/// out as its values (copied first only where another tensor shares them).
fn owned(t: FlexTensor) -> FlexTensor {
    let n = t.layout().num_elements();
    if t.layout().contiguous_offsets() == Some((0, n)) && t.storage::<f32>().len() == n {
        return t;
    }
    let t = t.to_contiguous();
    tensor(values(&t).to_vec(), dims(&t))
}

/// A small fp32 tensor's values, copied (gamma, beta: one per channel).
fn floats(t: &FlexTensor) -> Vec<f32> {
    values(&t.clone().to_contiguous()).to_vec()
}

/// Buffers at least this long are zeroed in parallel by [`zeros`].
const PARALLEL_ZEROS: usize = 64 * 1024;

/// `len` zeros, written in parallel where long: the kernels allocate their outputs on the
/// calling thread before the parallel work, and mimalloc hands back freed memory (which it
/// keeps, [`crate::memory`]) that must be cleared, so a serial fill there left the other cores
/// idle (measured: 2.4% of the cloud network's step samples, all of them on the main thread).
pub(crate) fn zeros(len: usize) -> Vec<f32> {
    if len < PARALLEL_ZEROS {
        return vec![0.0f32; len];
    }
    let mut v = Vec::with_capacity(len);
    v.par_extend(rayon::iter::repeat_n(0.0f32, len));
    v
}

/// Values of weight-gradient parts [`tiled_backward`] sums per parallel task.
const SUM_BLOCK: usize = 16 * 1024;

/// The element-wise sum of `parts` (equal lengths), each element's added in order (so the
/// bits do not depend on the thread count), in parallel over blocks of elements.
fn sum_in_order(parts: &[Vec<f32>]) -> Option<Vec<f32>> {
    let first = parts.first()?;
    let mut sum = zeros(first.len());
    sum.par_chunks_mut(SUM_BLOCK)
        .enumerate()
        .for_each(|(i, block)| {
            for part in parts {
                let from = &part[i * SUM_BLOCK..][..block.len()];
                block.iter_mut().zip(from).for_each(|(s, v)| *s += v);
            }
        });
    Some(sum)
}

/// A convolution's backward pass over `images` images in tiles of `per_tile`, in parallel:
/// `tile(first image, its part of the input gradient)` writes that part (where `want_x`;
/// `image` values an image) and returns its part of the weight gradient, if wanted. The
/// input gradient, and the parts summed in tile order (so the sum does not depend on the
/// thread count).
fn tiled_backward<F>(
    images: usize,
    per_tile: usize,
    image: usize,
    want_x: bool,
    tile: F,
) -> (Option<Vec<f32>>, Option<Vec<f32>>)
where
    F: Fn(usize, Option<&mut [f32]>) -> Option<Vec<f32>> + Sync,
{
    let mut dx = zeros(if want_x { images * image } else { 0 });
    let parts: Vec<Option<Vec<f32>>> = if want_x {
        dx.par_chunks_mut(per_tile * image)
            .enumerate()
            .map(|(i, d)| tile(i * per_tile, Some(d)))
            .collect()
    } else {
        (0..images.div_ceil(per_tile))
            .into_par_iter()
            .map(|i| tile(i * per_tile, None))
            .collect()
    };
    let parts: Vec<Vec<f32>> = parts.into_iter().flatten().collect();
    (want_x.then_some(dx), sum_in_order(&parts))
}

fn options(
    stride: [usize; 2],
    padding: [(usize, usize); 2],
    dilation: [usize; 2],
    groups: usize,
) -> ConvOptions<2> {
    ConvOptions::new_with_padding(stride, padding, dilation, groups)
}

impl Kernels for Flex {
    fn conv2d_nobias(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        stride: [usize; 2],
        padding: [(usize, usize); 2],
        dilation: [usize; 2],
        groups: usize,
    ) -> FloatTensor<Self> {
        conv_forward(x, weight, options(stride, padding, dilation, groups)).0
    }

    fn batch_norm_train_relu(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
        relu: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        norm::train_any(x, gamma, beta, epsilon, relu)
    }

    fn max_pool2d_own(
        x: FloatTensor<Self>,
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 2],
        dilation: [usize; 2],
        ceil: bool,
    ) -> FloatTensor<Self> {
        if x.dtype() != DType::F32 {
            return Flex::max_pool2d(x, kernel, stride, padding, dilation, ceil);
        }
        pooled(&x.to_contiguous(), kernel, stride, padding, dilation, ceil).1
    }

    fn adam_step(
        param: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        moment_1: FloatTensor<Self>,
        moment_2: FloatTensor<Self>,
        step: AdamStep,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let grad = grad.to_contiguous();
        let [mut p, mut m, mut v] = [param, moment_1, moment_2].map(owned);
        let (ps, ms, vs) = (p.storage_mut(), m.storage_mut(), v.storage_mut());
        adam::step(ps, values(&grad), ms, vs, &step);
        (p, m, v)
    }
}

/// Which of the project's own convolutions computes `x` convolved with `weight`; where
/// [`route`] gives none, [`conv`]'s tiles of unfolded images do (the forward only where it
/// [takes it](conv::tiles_forward), else burn-flex's), and burn-flex's for dtypes other than
/// fp32.
enum Own {
    /// A "same" convolution [`batch_last`] does not take: [`shifted`]'s frames.
    Framed(shifted::Same),
    /// Output maps up to 16x16, 16 input channels or more: [`batch_last`].
    BatchLast(conv::Geometry),
}

fn route(x: &FlexTensor, weight: &FlexTensor, options: &ConvOptions<2>) -> Option<Own> {
    if [x.dtype(), weight.dtype()] != [DType::F32; 2] {
        return None;
    }
    let (o, p) = (options, options.padding);
    let g = conv::Geometry::of(x, weight, options);
    if batch_last::takes(&g) {
        return Some(Own::BatchLast(g));
    }
    let same = shifted::Same::new(&dims(x), &dims(weight), o.stride, p, o.dilation, o.groups);
    same.filter(shifted::Same::framed).map(Own::Framed)
}

/// What a convolution's backward pass keeps of its forward: the [`route`] it took, with the
/// input, or, on the batch-last route, the input in that layout, tile after tile (all the
/// weight gradient reads of it, so the backward pass need not transpose it again).
#[derive(Debug, Clone)]
enum Kept {
    /// No route of the project's own: [`conv`]'s tiles take the gradients.
    Unrouted(FlexTensor),
    Framed(FlexTensor, shifted::Same),
    BatchLast(FlexTensor, conv::Geometry),
}

/// A convolution without bias, by its [`route`], and what its backward pass keeps.
fn conv_forward(x: FlexTensor, weight: FlexTensor, options: ConvOptions<2>) -> (FlexTensor, Kept) {
    let Some(own) = route(&x, &weight, &options) else {
        let y = if conv::tiles_forward(&x, &weight) {
            conv::conv2d_forward(x.clone(), weight, &options)
        } else {
            Flex::conv2d(x.clone(), weight, None, options)
        };
        return (y, Kept::Unrouted(x));
    };
    let (xc, w) = (x.to_contiguous(), weight.to_contiguous());
    let (xs, ws) = (values(&xc), values(&w));
    match own {
        Own::Framed(g) => (
            tensor(shifted::forward(xs, ws, &g), g.output_shape()),
            Kept::Framed(x, g),
        ),
        Own::BatchLast(g) => {
            let (y, tiles) = batch_last::forward(xs, ws, &g);
            let len = tiles.len();
            let kept = Kept::BatchLast(tensor(tiles, vec![len]), g);
            (tensor(y, g.output_shape()), kept)
        }
    }
}

/// The gradients of [`conv_forward`], by the route it took, from what it kept.
fn conv_backward(
    kept: Kept,
    weight: FlexTensor,
    dy: FlexTensor,
    options: &ConvOptions<2>,
    want_x: bool,
    want_w: bool,
) -> (Option<FlexTensor>, Option<FlexTensor>) {
    let (ws, dys) = (weight.to_contiguous(), dy.to_contiguous());
    let (w_, dy_) = (values(&ws), values(&dys));
    let ((dx, dw), x_shape) = match kept {
        Kept::Unrouted(x) => {
            return conv::conv2d_backward(x, weight, dy, options, want_x, want_w);
        }
        Kept::Framed(x, g) => {
            let xs = x.to_contiguous();
            let grads = shifted::backward(values(&xs), w_, dy_, &g, want_x, want_w);
            (grads, dims(&x))
        }
        Kept::BatchLast(tiles, g) => {
            let grads = batch_last::backward(values(&tiles), w_, dy_, &g, want_x, want_w);
            (grads, vec![g.n, g.c, g.h, g.w])
        }
    };
    (
        dx.map(|v| tensor(v, x_shape)),
        dw.map(|v| tensor(v, dims(&weight))),
    )
}

/// The backward step of [`Kernels::conv2d_nobias`]: the input and weight gradients of
/// [`conv_backward`].
#[derive(Debug)]
struct Conv2dBackward;

impl Backward<Flex, 2> for Conv2dBackward {
    /// What the forward kept of the input, the weight, and the options.
    type State = (Kept, FlexTensor, ConvOptions<2>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_w] = ops.parents;
        let dy = grads.consume::<Flex>(&ops.node);
        let (kept, weight, options) = ops.state;
        let (dx, dw) = conv_backward(
            kept,
            weight,
            dy,
            &options,
            node_x.is_some(),
            node_w.is_some(),
        );
        if let (Some(node), Some(dx)) = (node_x, dx) {
            grads.register::<Flex>(node.id, dx);
        }
        if let (Some(node), Some(dw)) = (node_w, dw) {
            grads.register::<Flex>(node.id, dw);
        }
    }
}

/// The geometry of max pooling `x` (contiguous fp32) and the pooled maps ([`pool`]).
fn pooled(
    x: &FlexTensor,
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
    dilation: [usize; 2],
    ceil: bool,
) -> (pool::Pool, FlexTensor) {
    let pool = pool::Pool::new(&dims(x), kernel, stride, padding, dilation, ceil);
    let y = tensor(pool.forward(values(x)), pool.output_shape());
    (pool, y)
}

/// The backward step of [`Kernels::max_pool2d_own`]: the output's gradient at each window's
/// argmax ([`pool`]).
#[derive(Debug)]
struct MaxPoolBackward;

impl Backward<Flex, 1> for MaxPoolBackward {
    /// The input and the output (contiguous), and the geometry.
    type State = (FlexTensor, FlexTensor, pool::Pool);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x] = ops.parents;
        let dy = grads.consume::<Flex>(&ops.node).to_contiguous();
        let (x, y, pool) = ops.state;
        if let Some(node) = node_x {
            let dx = pool.backward(values(&x), values(&y), values(&dy));
            grads.register::<Flex>(node.id, tensor(dx, dims(&x)));
        }
    }
}

impl<C: CheckpointStrategy> Kernels for Autodiff<Flex, C> {
    fn conv2d_nobias(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        stride: [usize; 2],
        padding: [(usize, usize); 2],
        dilation: [usize; 2],
        groups: usize,
    ) -> FloatTensor<Self> {
        let options = options(stride, padding, dilation, groups);
        let (xp, x_node) = x.into_parts();
        let (wp, w_node) = weight.into_parts();
        match Conv2dBackward
            .prepare::<C>([x_node, w_node])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (out, kept) = conv_forward(xp, wp.clone(), options.clone());
                prep.finish((kept, wp, options), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(conv_forward(xp, wp, options).0),
        }
    }

    fn batch_norm_train_relu(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
        relu: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let (xp, x_node) = x.into_parts();
        let (gp, g_node) = gamma.into_parts();
        let (bp, b_node) = beta.into_parts();
        let xp = xp.to_contiguous();
        let (y, saved) = norm::train_forward(&xp, &gp, &bp, epsilon, relu);
        let c = saved.mean.len();
        let stat = |v: &[f32]| Self::from_inner(tensor(v.to_vec(), vec![c]));
        let (mean, var) = (stat(&saved.mean), stat(&saved.var));
        let y = match norm::NormBackward
            .prepare::<C>([x_node, g_node, b_node])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish((xp, saved), y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        };
        (y, mean, var)
    }

    fn max_pool2d_own(
        x: FloatTensor<Self>,
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 2],
        dilation: [usize; 2],
        ceil: bool,
    ) -> FloatTensor<Self> {
        let (xp, x_node) = x.into_parts();
        let xp = xp.to_contiguous();
        let (pool, y) = pooled(&xp, kernel, stride, padding, dilation, ceil);
        match MaxPoolBackward
            .prepare::<C>([x_node])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish((xp, y.clone(), pool), y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }

    /// Not differentiated: the optimizer steps on parameters outside the graph.
    fn adam_step(
        param: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        moment_1: FloatTensor<Self>,
        moment_2: FloatTensor<Self>,
        step: AdamStep,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let [p, g, m, v] = [param, grad, moment_1, moment_2].map(Self::inner);
        let (x, m, v) = Flex::adam_step(p, g, m, v, step);
        (
            Self::from_inner(x),
            Self::from_inner(m),
            Self::from_inner(v),
        )
    }
}

/// `conv2d(x, weight)` with this project's forward and backward passes, then the bias if any.
pub fn conv2d(
    x: Tensor<4>,
    weight: Tensor<4>,
    bias: Option<Tensor<1>>,
    options: ConvOptions<2>,
) -> Tensor<4> {
    let y = <Dispatch as Kernels>::conv2d_nobias(
        x.into_dispatch(),
        weight.into_dispatch(),
        options.stride,
        options.padding,
        options.dilation,
        options.groups,
    );
    let y = Tensor::<4>::from_dispatch(y);
    match bias {
        Some(b) => {
            let o = b.dims()[0];
            y + b.reshape([1, o, 1, 1])
        }
        None => y,
    }
}

/// `max_pool2d(x, options)` with this project's forward and backward ([`pool`]): fp32 with
/// symmetric padding; anything else, or with [`set_own_conv`]`(false)`, takes burn's own.
pub fn max_pool2d(x: Tensor<4>, options: MaxPoolOptions<2>) -> Tensor<4> {
    let [(top, bottom), (left, right)] = options.padding;
    if x.dtype() != DType::F32 || top != bottom || left != right || !own_conv() {
        return burn::tensor::module::max_pool2d(x, options);
    }
    Tensor::<4>::from_dispatch(<Dispatch as Kernels>::max_pool2d_own(
        x.into_dispatch(),
        options.kernel_size,
        options.stride,
        [top, left],
        options.dilation,
        options.ceil_mode,
    ))
}

/// Whether [`conv2d_module`] takes this project's convolution or burn's. On: measured on
/// this project's networks (`make bench BENCH=kernels`), it takes 0.1-1.0 of burn's time per
/// convolution, forward and backward; the bench turns it off to compare.
static OWN_CONV: AtomicBool = AtomicBool::new(true);

/// Sets whether [`conv2d_module`] and the optimisation attack's local network use this
/// project's convolution, and [`max_pool2d`] this project's pool.
pub fn set_own_conv(on: bool) {
    OWN_CONV.store(on, Ordering::Relaxed);
}

/// Whether this project's convolution and pool are on (see [`set_own_conv`]).
fn own_conv() -> bool {
    OWN_CONV.load(Ordering::Relaxed)
}

/// The convolution the networks take: [`conv2d`], or burn's own for grouped and depthwise
/// convolutions (burn-flex's direct kernels) and with [`set_own_conv`]`(false)`.
pub fn conv2d_chosen(
    x: Tensor<4>,
    weight: Tensor<4>,
    bias: Option<Tensor<1>>,
    options: ConvOptions<2>,
) -> Tensor<4> {
    if own_conv() && options.groups == 1 {
        conv2d(x, weight, bias, options)
    } else {
        burn::tensor::module::conv2d(x, weight, bias, options)
    }
}

/// A `Conv2d` module's forward pass through [`conv2d_chosen`] (explicit or no padding), or
/// `conv.forward(x)` itself for "same" padding.
pub fn conv2d_module(conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    let padding = match conv.padding {
        PaddingConfig2d::Explicit(top, left, bottom, right) => [(top, bottom), (left, right)],
        PaddingConfig2d::Valid => [(0, 0), (0, 0)],
        PaddingConfig2d::Same => return conv.forward(x),
    };
    let options = ConvOptions::new_with_padding(conv.stride, padding, conv.dilation, conv.groups);
    conv2d_chosen(
        x,
        conv.weight.val(),
        conv.bias.as_ref().map(|b| b.val()),
        options,
    )
}

/// Whether [`batch_norm_relu`] takes the fused batch norm ([`norm`]) in training or burn's
/// own. On: measured faster (`make bench BENCH=kernels`); the bench turns it off to compare.
static FUSED_NORM: AtomicBool = AtomicBool::new(true);

/// Whether [`FusedAdam`] takes its own step or burn's `Adam`'s (the same bits either way).
/// On: measured faster (`make bench BENCH=kernels`); the bench turns it off to compare.
static FUSED_ADAM: AtomicBool = AtomicBool::new(true);

/// Sets whether [`FusedAdam`] takes its own step ([`Kernels::adam_step`]).
pub fn set_fused_adam(on: bool) {
    FUSED_ADAM.store(on, Ordering::Relaxed);
}

/// Whether [`FusedAdam`] takes its own step (see [`set_fused_adam`]).
fn fused_adam() -> bool {
    FUSED_ADAM.load(Ordering::Relaxed)
}

/// Sets whether [`batch_norm_relu`] uses the fused batch norm.
pub fn set_fused_norm(on: bool) {
    FUSED_NORM.store(on, Ordering::Relaxed);
}

/// `relu(norm.forward(x))`: in training (an autodiff device, the layer not frozen, fp32),
/// through [`Kernels::batch_norm_train_relu`], updating the running statistics as burn's
/// `BatchNorm` does; otherwise burn's own layer.
pub fn batch_norm_relu(norm: &BatchNorm, x: Tensor<4>) -> Tensor<4> {
    let device = x.device();
    let train = device.is_autodiff() && norm.training.is_enabled();
    if !(train && x.dtype() == DType::F32 && FUSED_NORM.load(Ordering::Relaxed)) {
        return relu(norm.forward(x));
    }
    let (y, mean, var) = <Dispatch as Kernels>::batch_norm_train_relu(
        x.into_dispatch(),
        norm.gamma.val().into_dispatch(),
        norm.beta.val().into_dispatch(),
        norm.epsilon,
        true,
    );
    let m = norm.momentum;
    for (state, batch) in [(&norm.running_mean, mean), (&norm.running_var, var)] {
        let running = state.value_sync().to_device(&device).mul_scalar(1.0 - m);
        let batch = Tensor::<1>::from_dispatch(batch).mul_scalar(m);
        state.update(running.add(batch).detach());
    }
    Tensor::<4>::from_dispatch(y)
}
