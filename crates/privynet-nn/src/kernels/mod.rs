//! Kernels this project owns, plugged into burn through its backend extension: a backend trait
//! with its own operations, implemented for burn-flex and for `Autodiff<Flex>` with a
//! handwritten backward pass, and a tensor-level function the networks call.
//!
//! `conv2d`: burn-flex's own forward (tiled im2col and gemm), and a backward pass whose two
//! gradients are matrix products over tiles of images ([`conv`]) instead of burn's generic
//! decomposition (a transposed convolution for the input gradient, a batch-for-channel
//! convolution for the weight gradient). The networks take it only when switched on
//! ([`set_own_backward`]): measured, it is not faster than burn's.

mod conv;

use std::sync::atomic::{AtomicBool, Ordering};

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::ops::ModuleOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Dispatch, Flex, backend_extension};
use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::tensor::Tensor;
use burn::tensor::ops::ConvOptions;

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
        Flex::conv2d(x, weight, None, options(stride, padding, dilation, groups))
    }
}

/// The backward step of [`Kernels::conv2d_nobias`]: the input and weight gradients of
/// [`conv::conv2d_backward`].
#[derive(Debug)]
struct Conv2dBackward;

impl Backward<Flex, 2> for Conv2dBackward {
    type State = (FlexTensor, FlexTensor, ConvOptions<2>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_w] = ops.parents;
        let dy = grads.consume::<Flex>(&ops.node);
        let (x, weight, options) = ops.state;
        let (dx, dw) =
            conv::conv2d_backward(x, weight, dy, &options, node_x.is_some(), node_w.is_some());
        if let (Some(node), Some(dx)) = (node_x, dx) {
            grads.register::<Flex>(node.id, dx);
        }
        if let (Some(node), Some(dw)) = (node_w, dw) {
            grads.register::<Flex>(node.id, dw);
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
                let out = Flex::conv2d(xp.clone(), wp.clone(), None, options.clone());
                prep.finish((xp, wp, options), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(Flex::conv2d(xp, wp, None, options)),
        }
    }
}

/// `conv2d(x, weight)` with this project's backward pass, then the bias if any.
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

/// Whether [`conv2d_module`] takes this project's backward pass or burn's. Off: measured on
/// this project's networks (`make bench BENCH=kernels`), the tiled backward is on a par with
/// burn's, not faster, so training keeps burn's path, bit for bit; the bench turns it on to
/// compare whole steps in one run.
static OWN_BACKWARD: AtomicBool = AtomicBool::new(false);

/// Sets whether [`conv2d_module`] uses this project's backward pass.
pub fn set_own_backward(on: bool) {
    OWN_BACKWARD.store(on, Ordering::Relaxed);
}

/// A `Conv2d` module's forward pass: `conv.forward(x)` itself, or, with
/// [`set_own_backward`]`(true)` (and explicit or no padding), the same through [`conv2d`].
pub fn conv2d_module(conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    if !OWN_BACKWARD.load(Ordering::Relaxed) {
        return conv.forward(x);
    }
    let padding = match conv.padding {
        PaddingConfig2d::Explicit(top, left, bottom, right) => [(top, bottom), (left, right)],
        PaddingConfig2d::Valid => [(0, 0), (0, 0)],
        PaddingConfig2d::Same => return conv.forward(x),
    };
    let options = ConvOptions::new_with_padding(conv.stride, padding, conv.dilation, conv.groups);
    conv2d(
        x,
        conv.weight.val(),
        conv.bias.as_ref().map(|b| b.val()),
        options,
    )
}
