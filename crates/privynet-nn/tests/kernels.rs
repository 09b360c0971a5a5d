//! The project's own kernels against burn's generic operations, relative 1e-4 of the largest
//! value:
//! - the convolution (`privynet_nn::kernels::conv2d`): the same output and the same gradients
//!   of input, weight and bias over random geometries with stride 2, padding (asymmetric
//!   too), dilation, groups (depthwise included), batch 1 and odd sizes, and "same"
//!   convolutions (stride 1, padding half an odd kernel) of several sizes and tilings, on
//!   large maps (shifted frames) and small ones down to 1x1 (the batch-last layout);
//! - the max pool (`kernels::max_pool2d`): the same output and input gradient as burn's over
//!   SqueezeNet's pools, padding, dilation, floor and ceil modes, batch 1, and inputs rounded
//!   to a few values, so that windows hold ties (the gradient goes to the first, row-major);
//! - the fused batch norm and ReLU (`kernels::batch_norm_relu`): the same output, gradients of
//!   input, gamma and beta, and running statistics as `relu(BatchNorm::forward)`, over batch 1,
//!   odd and 1x1 maps, a constant channel and a shifted mean;
//! - the fused Adam (`kernels::FusedAdam`): burn's `Adam`'s parameters bit for bit over several
//!   steps, with and without weight decay, and after its state is saved and resumed in burn's.

use burn::module::Param;
use burn::nn::{BatchNorm, BatchNormConfig, Initializer, LinearConfig};
use burn::optim::decay::WeightDecayConfig;
use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::module::conv2d as burn_conv2d;
use burn::tensor::module::max_pool2d as burn_max_pool2d;
use burn::tensor::ops::{ConvOptions, MaxPoolOptions};
use burn::tensor::{Device, Distribution, Int, Tensor};
use privynet_nn::kernels;

/// One geometry: batch, input channels, height, width, output channels, kernel, stride,
/// padding pairs, dilation, groups.
#[derive(Debug, Clone, Copy)]
struct Case {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    o: usize,
    k: [usize; 2],
    stride: [usize; 2],
    pad: [(usize, usize); 2],
    dilation: [usize; 2],
    groups: usize,
}

/// A 3x3 convolution with padding 1, stride 1 (what the cases below vary).
const SAME3: Case = Case {
    n: 1,
    c: 1,
    h: 1,
    w: 1,
    o: 1,
    k: [3, 3],
    stride: [1, 1],
    pad: [(1, 1), (1, 1)],
    dilation: [1, 1],
    groups: 1,
};

const CASES: &[Case] = &[
    // The cloud network's blocks: 3x3, padding 1, stride 1 and 2.
    Case {
        n: 4,
        c: 8,
        h: 7,
        w: 7,
        o: 16,
        ..SAME3
    },
    Case {
        n: 3,
        c: 16,
        h: 7,
        w: 7,
        o: 32,
        stride: [2, 2],
        ..SAME3
    },
    // "Same" convolutions on maps larger than 16x16, for the shifted-views kernel: several
    // images per tile and an uneven last tile (6 + 1 at 17x17); 32x32, one image a tile; a
    // 5x5 kernel on an odd, non-square map; batch 1.
    Case {
        n: 7,
        c: 6,
        h: 17,
        w: 17,
        o: 7,
        ..SAME3
    },
    Case {
        n: 3,
        c: 4,
        h: 32,
        w: 32,
        o: 3,
        ..SAME3
    },
    Case {
        n: 2,
        c: 3,
        h: 19,
        w: 17,
        o: 5,
        k: [5, 5],
        pad: [(2, 2), (2, 2)],
        ..SAME3
    },
    Case {
        n: 1,
        c: 16,
        h: 18,
        w: 18,
        o: 8,
        ..SAME3
    },
    // "Same" convolutions on maps up to 16x16 with 16 input channels or more, in the batch-last
    // layout: the cloud network's 4x4 blocks (output channels in uneven blocks); a batch of two
    // tiles (32 + 1 images of 64 channels at 8x8); a 16x16 map; a 5x5 kernel on an odd,
    // non-square map and over a 3x3 one; a 1x1 map; a 2x5 map.
    Case {
        n: 3,
        c: 16,
        h: 4,
        w: 4,
        o: 24,
        ..SAME3
    },
    Case {
        n: 33,
        c: 64,
        h: 8,
        w: 8,
        o: 5,
        ..SAME3
    },
    Case {
        n: 2,
        c: 16,
        h: 16,
        w: 16,
        o: 7,
        ..SAME3
    },
    Case {
        n: 2,
        c: 16,
        h: 15,
        w: 13,
        o: 5,
        k: [5, 5],
        pad: [(2, 2), (2, 2)],
        ..SAME3
    },
    Case {
        n: 2,
        c: 16,
        h: 3,
        w: 3,
        o: 6,
        k: [5, 5],
        pad: [(2, 2), (2, 2)],
        ..SAME3
    },
    Case {
        n: 4,
        c: 16,
        h: 1,
        w: 1,
        o: 5,
        ..SAME3
    },
    Case {
        n: 3,
        c: 17,
        h: 2,
        w: 5,
        o: 33,
        ..SAME3
    },
    // Small outputs of other convolutions, also in the batch-last layout: strides 2 and 3
    // (the input's columns in phases), dilation, asymmetric padding, a non-square kernel.
    Case {
        n: 2,
        c: 16,
        h: 9,
        w: 11,
        o: 5,
        k: [3, 2],
        stride: [2, 3],
        pad: [(1, 0), (0, 1)],
        dilation: [1, 2],
        ..SAME3
    },
    Case {
        n: 2,
        c: 17,
        h: 6,
        w: 5,
        o: 6,
        pad: [(2, 0), (1, 2)],
        dilation: [2, 1],
        ..SAME3
    },
    // A row stride of 3 under a 5-row kernel, in the batch-last layout: an input row gets
    // gradient only through the kernel rows of its stride phase (rows 0 and 3, 1 and 4, or 2),
    // which the input gradient's mapping from input to output rows must find.
    Case {
        n: 3,
        c: 16,
        h: 9,
        w: 4,
        o: 7,
        k: [5, 3],
        stride: [3, 1],
        pad: [(2, 1), (1, 1)],
        ..SAME3
    },
    // Small outputs with fewer than 16 input channels, as unfolded products: batch 1, odd
    // sizes, a non-square kernel and stride.
    Case {
        n: 1,
        c: 3,
        h: 11,
        w: 9,
        o: 5,
        k: [3, 2],
        stride: [2, 1],
        pad: [(1, 1), (0, 1)],
        ..SAME3
    },
    // Dilation and asymmetric padding.
    Case {
        n: 2,
        c: 4,
        h: 10,
        w: 13,
        o: 6,
        stride: [1, 2],
        pad: [(2, 0), (1, 2)],
        dilation: [2, 1],
        ..SAME3
    },
    // Groups, and depthwise.
    Case {
        n: 2,
        c: 8,
        h: 6,
        w: 6,
        o: 12,
        groups: 4,
        ..SAME3
    },
    Case {
        n: 3,
        c: 6,
        h: 9,
        w: 9,
        o: 6,
        k: [5, 5],
        stride: [2, 2],
        pad: [(2, 2), (2, 2)],
        groups: 6,
        ..SAME3
    },
    // 1x1, and a kernel as large as the input.
    Case {
        n: 5,
        c: 7,
        h: 4,
        w: 5,
        o: 9,
        k: [1, 1],
        pad: [(0, 0), (0, 0)],
        ..SAME3
    },
    Case {
        n: 2,
        c: 3,
        h: 3,
        w: 3,
        o: 4,
        pad: [(0, 0), (0, 0)],
        ..SAME3
    },
];

fn close(want: Tensor<4>, got: Tensor<4>, what: &str, case: &dyn std::fmt::Debug) {
    let w: Vec<f32> = want.into_data().try_to_vec::<f32>().unwrap();
    let g: Vec<f32> = got.into_data().try_to_vec::<f32>().unwrap();
    assert_eq!(w.len(), g.len(), "{what} of {case:?}: sizes");
    let scale = w.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
    let diff = w
        .iter()
        .zip(&g)
        .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(
        diff <= 1e-4 * scale,
        "{what} of {case:?}: differs by {diff} (largest {scale})"
    );
}

/// Weights in [-1, 1] that differ from element to element, for a loss that reaches every
/// output differently: made without the device's random generator, which the tests running
/// beside share and reseed.
fn loss_weights(dims: [usize; 4], device: &Device) -> Tensor<4> {
    let n = dims.iter().product::<usize>() as i64;
    Tensor::<1, Int>::arange(0..n, device)
        .float()
        .sin()
        .reshape(dims)
}

/// Output and gradients of `conv` (burn's or ours) on `x`, `w`, `b`, through a loss that
/// weights every output element differently.
fn run(
    case: &Case,
    x: &Tensor<4>,
    w: &Tensor<4>,
    b: &Tensor<1>,
    ours: bool,
) -> (Tensor<4>, Tensor<4>, Tensor<4>, Tensor<4>) {
    let x = Param::from_tensor(x.clone()).val();
    let w = Param::from_tensor(w.clone()).val();
    let b = Param::from_tensor(b.clone()).val();
    let options = ConvOptions::new_with_padding(case.stride, case.pad, case.dilation, case.groups);
    let y = if ours {
        kernels::conv2d(x.clone(), w.clone(), Some(b.clone()), options)
    } else {
        burn_conv2d(x.clone(), w.clone(), Some(b.clone()), options)
    };
    let grads = (y.clone() * loss_weights(y.dims(), &y.device()))
        .sum()
        .backward();
    let gx = x.grad(&grads).unwrap();
    let gw = w.grad(&grads).unwrap();
    let gb = b.grad(&grads).unwrap();
    (y.detach(), gx, gw, gb.reshape([1, 1, 1, case.o]))
}

#[test]
fn conv2d_backward_equals_burns() {
    let device = Device::flex().autodiff();
    for (seed, case) in CASES.iter().enumerate() {
        device.seed(seed as u64 + 1);
        let d = Distribution::Uniform(-1.0, 1.0);
        let x = Tensor::<4>::random([case.n, case.c, case.h, case.w], d, &device);
        let w = Tensor::<4>::random(
            [case.o, case.c / case.groups, case.k[0], case.k[1]],
            d,
            &device,
        );
        let b = Tensor::<1>::random([case.o], d, &device);
        device.seed(1000 + seed as u64);
        let want = run(case, &x, &w, &b, false);
        device.seed(1000 + seed as u64);
        let got = run(case, &x, &w, &b, true);
        close(want.0, got.0, "output", case);
        close(want.1, got.1, "input gradient", case);
        close(want.2, got.2, "weight gradient", case);
        close(want.3, got.3, "bias gradient", case);
    }
}

#[test]
fn max_pool2d_equals_burns() {
    let device = Device::flex().autodiff();
    // Input shape, kernel, stride, padding, dilation, ceil mode.
    type Pool = ([usize; 4], usize, usize, usize, usize, bool);
    let cases: &[Pool] = &[
        ([4, 64, 15, 15], 3, 2, 0, 1, true),
        ([4, 128, 7, 7], 3, 2, 0, 1, true),
        ([1, 3, 8, 8], 3, 2, 0, 1, true),
        ([2, 5, 8, 9], 3, 2, 0, 1, false),
        ([2, 4, 6, 6], 2, 2, 0, 1, false),
        ([3, 2, 7, 5], 3, 1, 1, 1, false),
        ([2, 3, 9, 9], 3, 2, 1, 1, true),
        ([2, 3, 10, 11], 3, 1, 0, 2, false),
        ([1, 1, 2, 2], 3, 2, 1, 1, true),
    ];
    for (seed, &(shape, k, s, p, d, ceil)) in cases.iter().enumerate() {
        let what = format!("{shape:?} k{k} s{s} p{p} d{d} ceil {ceil}");
        // Odd seeds round the inputs to quarters, so that many windows hold ties.
        let x = (loss_weights(shape, &device) * (7.0 + seed as f32)).sin();
        let x = if seed % 2 == 1 {
            (x * 4.0).round() / 4.0
        } else {
            x
        };
        let options = MaxPoolOptions::new([k, k])
            .with_stride([s, s])
            .with_padding([p, p])
            .with_dilation([d, d])
            .with_ceil_mode(ceil);
        let side = |ours: bool| {
            let x = Param::from_tensor(x.clone()).val();
            let y = if ours {
                kernels::max_pool2d(x.clone(), options.clone())
            } else {
                burn_max_pool2d(x.clone(), options.clone())
            };
            let grads = (y.clone() * loss_weights(y.dims(), &device))
                .sum()
                .backward();
            (y.detach(), x.grad(&grads).unwrap())
        };
        let (want, got) = (side(false), side(true));
        assert_eq!(want.0.dims(), got.0.dims(), "output shape of {what}");
        close(want.0, got.0, "output", &what);
        close(want.1, got.1, "input gradient", &what);
    }
}

/// A batch norm over `c` channels with the given gamma and beta (each call a fresh module, so
/// the two sides' running statistics are their own).
fn norm(c: usize, gamma: &Tensor<1>, beta: &Tensor<1>, device: &Device) -> BatchNorm {
    let mut n = BatchNormConfig::new(c).init(device);
    n.gamma = Param::from_tensor(gamma.clone());
    n.beta = Param::from_tensor(beta.clone());
    n
}

fn close1(want: Tensor<1>, got: Tensor<1>, what: &str, shape: [usize; 4]) {
    let c = want.dims()[0];
    let (want, got) = (want.reshape([1, 1, 1, c]), got.reshape([1, 1, 1, c]));
    close(want, got, what, &format!("{shape:?}"));
}

#[test]
fn batch_norm_relu_equals_burns() {
    let device = Device::flex().autodiff();
    for (seed, shape) in [
        [4, 8, 7, 7],
        [1, 3, 5, 5],
        [3, 5, 4, 4],
        [2, 16, 1, 1],
        [5, 6, 3, 9],
    ]
    .into_iter()
    .enumerate()
    {
        device.seed(seed as u64 + 1);
        let c = shape[1];
        // A shifted mean, so the variance is not the mean square; channel 0 constant.
        let x = Tensor::<4>::random(shape, Distribution::Uniform(2.0, 4.0), &device);
        let x = x.slice_assign(
            [0..shape[0], 0..1, 0..shape[2], 0..shape[3]],
            Tensor::<4>::ones([shape[0], 1, shape[2], shape[3]], &device),
        );
        let gamma = Tensor::<1>::random([c], Distribution::Uniform(-2.0, 2.0), &device);
        let beta = Tensor::<1>::random([c], Distribution::Uniform(-1.0, 1.0), &device);
        let weights = loss_weights(shape, &device);
        let side = |ours: bool| {
            let n = norm(c, &gamma, &beta, &device);
            let x = Param::from_tensor(x.clone()).val();
            kernels::set_fused_norm(ours);
            let y = kernels::batch_norm_relu(&n, x.clone());
            kernels::set_fused_norm(true);
            let grads = (y.clone() * weights.clone()).sum().backward();
            let gx = x.grad(&grads).unwrap();
            let gg = n.gamma.val().grad(&grads).unwrap();
            let gb = n.beta.val().grad(&grads).unwrap();
            let stats = (n.running_mean.value(), n.running_var.value());
            (y.detach(), gx, gg, gb, stats)
        };
        let (want, got) = (side(false), side(true));
        let what = format!("{shape:?}");
        close(want.0, got.0, "output", &what);
        close(want.1, got.1, "input gradient", &what);
        close1(want.2, got.2, "gamma gradient", shape);
        close1(want.3, got.3, "beta gradient", shape);
        close1(want.4.0, got.4.0, "running mean", shape);
        close1(want.4.1, got.4.1, "running variance", shape);
    }
}

/// Output and every gradient of a "same" convolution of `n` images on `size` x `size` maps
/// (18: shifted frames; 16 and 4: the batch-last layout, whose tiles at 16x16 hold 12 images
/// of 40 channels), then batch norm and ReLU, as bits.
fn block_bits(seed: u64, size: usize, n: usize) -> Vec<u32> {
    let device = Device::flex().autodiff();
    // Inputs from a formula, not the device's generator, which the tests beside reseed.
    let pattern = |dims: [usize; 4], phase: f32| (loss_weights(dims, &device) * 3.0 + phase).sin();
    let x = Param::from_tensor(pattern([n, 16, size, size], seed as f32)).val();
    let w = Param::from_tensor(pattern([40, 16, 3, 3], 2.0 * seed as f32)).val();
    let options = ConvOptions::new_with_padding([1, 1], [(1, 1), (1, 1)], [1, 1], 1);
    let y = kernels::conv2d(x.clone(), w.clone(), None, options);
    let n = BatchNormConfig::new(40).init(&device);
    let y = kernels::batch_norm_relu(&n, y);
    let grads = (y.clone() * loss_weights(y.dims(), &device))
        .sum()
        .backward();
    let parts = [
        y.detach().into_data(),
        x.grad(&grads).unwrap().into_data(),
        w.grad(&grads).unwrap().into_data(),
        n.gamma.val().grad(&grads).unwrap().into_data(),
    ];
    parts
        .into_iter()
        .flat_map(|p| p.try_to_vec::<f32>().unwrap())
        .map(f32::to_bits)
        .collect()
}

#[test]
fn the_kernels_give_the_same_bits_on_any_thread_count() {
    let on = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            [
                block_bits(5, 18, 9),
                block_bits(5, 16, 13),
                block_bits(5, 4, 9),
            ]
        })
    };
    assert_eq!(on(1), on(3));
}

/// The bits of a linear layer's parameters after `steps` Adam steps of `optim` (gradients of
/// a fixed loss, so both optimizers see the same ones on the same parameters); with `reload`
/// `(after, fresh, file)`, the optimizer is saved to `file` after `after` steps and `fresh`
/// loaded from it goes on.
fn adam_bits(
    mut optim: ModuleOptimizer,
    steps: usize,
    mut reload: Option<(usize, ModuleOptimizer, &std::path::Path)>,
) -> Vec<u32> {
    let device = Device::flex().autodiff();
    // 170 x 100 weights: more than one of the fused step's blocks of 16 Ki values. The weights
    // and inputs are made without the device's random generator, which the tests running
    // beside seed and draw from (a draw here between their seed and their draws changed their
    // tensors: the batch-norm test's batch of two 1x1 maps then missed its tolerance).
    let mut model = LinearConfig::new(170, 100)
        .with_initializer(Initializer::Zeros)
        .init(&device);
    model.weight = Param::from_tensor(loss_weights([1, 1, 170, 100], &device).reshape([170, 100]));
    let x = (loss_weights([1, 1, 8, 170], &device) * 3.0)
        .cos()
        .reshape([8, 170]);
    for step in 0..steps {
        let y = model.forward(x.clone());
        let w = loss_weights([1, 1, 8, 100], &device).reshape([8, 100]);
        let grads = GradientsParams::from_grads((y * w).sum().backward(), &model);
        model = optim.step(1e-2, model, grads);
        if let Some((_, fresh, file)) = reload.take_if(|r| r.0 == step + 1) {
            optim.save(file).unwrap();
            optim = fresh.load(file).unwrap();
        }
    }
    let mut values: Vec<f32> = model.weight.val().into_data().try_to_vec().unwrap();
    values.extend(
        model
            .bias
            .unwrap()
            .val()
            .into_data()
            .try_to_vec::<f32>()
            .unwrap(),
    );
    values.iter().map(|v| v.to_bits()).collect()
}

#[test]
fn fused_adam_equals_burns_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    for penalty in [None, Some(5e-4)] {
        let burns = || {
            AdamConfig::new()
                .with_weight_decay(penalty.map(WeightDecayConfig::new))
                .init()
        };
        let fused = || ModuleOptimizer::from(kernels::FusedAdam::new(penalty));
        let want = adam_bits(burns(), 4, None);
        assert_eq!(adam_bits(fused(), 4, None), want, "penalty {penalty:?}");
        // Its saved state is burn's: two steps, saved, loaded into burn's Adam, two more.
        let file = dir.path().join("optimizer.bpk");
        let mixed = adam_bits(fused(), 4, Some((2, burns(), &file)));
        assert_eq!(mixed, want, "penalty {penalty:?}, resumed in burn's Adam");
    }
}
