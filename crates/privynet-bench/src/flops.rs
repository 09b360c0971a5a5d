//! The arithmetic a training step does, and the machine's fp32 matrix-product peak, so that the
//! step bench can print each network's GFLOP/s and its share of what this CPU can do at all.

use std::time::Instant;

use burn::tensor::{Device, Distribution, Tensor};

use crate::steps::{Layer, NetDesc};

/// A convolution's output size along one axis.
fn conv_out(size: usize, kernel: usize, stride: usize, padding: usize) -> usize {
    (size + 2 * padding - kernel) / stride + 1
}

/// The shape `l` turns an input of `[c, h, w]` into.
fn output(l: &Layer, [c, h, w]: [usize; 3]) -> [usize; 3] {
    match *l {
        Layer::Conv2d {
            cout,
            kernel,
            stride,
            padding,
            ..
        } => [
            cout,
            conv_out(h, kernel, stride, padding),
            conv_out(w, kernel, stride, padding),
        ],
        Layer::ConvTranspose2d {
            cout,
            kernel,
            stride,
            padding,
            ..
        } => [
            cout,
            (h - 1) * stride + kernel - 2 * padding,
            (w - 1) * stride + kernel - 2 * padding,
        ],
        Layer::Resize { size, .. } => [c, size, size],
        Layer::PixelShuffle { factor } => [c / (factor * factor), h * factor, w * factor],
        Layer::GlobalAvgPool => [c, 1, 1],
        _ => [c, h, w],
    }
}

/// Each layer of `d` with the input shape `[c, h, w]` it sees, up to the global pool.
pub fn walk(d: &NetDesc) -> Vec<(&Layer, [usize; 3])> {
    let mut shape = d.input;
    let mut out = Vec::new();
    for l in &d.layers {
        out.push((l, shape));
        shape = output(l, shape);
    }
    out
}

/// Floating-point operations of one training step per sample: the convolutions' and linear
/// layers' multiply-adds (2 FLOPs each) in the forward pass, and twice that in the backward
/// pass (input and weight gradients), as PyTorch's profilers count a step. Elementwise layers
/// are left out: they are memory-bound, not what a peak measures.
pub fn step_flops_per_sample(d: &NetDesc) -> f64 {
    let forward: f64 = walk(d)
        .into_iter()
        .map(|(l, [c, h, w])| match *l {
            Layer::Conv2d { cout, kernel, .. } => {
                let [_, oh, ow] = output(l, [c, h, w]);
                2.0 * (c * cout * kernel * kernel * oh * ow) as f64
            }
            Layer::ConvTranspose2d { cout, kernel, .. } => {
                2.0 * (c * cout * kernel * kernel * h * w) as f64
            }
            Layer::Linear { cin, cout, .. } => 2.0 * (cin * cout) as f64,
            _ => 0.0,
        })
        .sum();
    3.0 * forward
}

/// The fp32 matrix product's throughput on this machine, in GFLOP/s: burn-flex's own
/// `matmul` (the gemm crate) of two 1024 x 1024 matrices on all threads, the best of a few
/// seconds. What the networks' convolutions could reach at most.
pub fn gemm_peak() -> f64 {
    let device = Device::flex();
    device.seed(3);
    let n = 1024;
    let a = Tensor::<2>::random([n, n], Distribution::Uniform(-1.0, 1.0), &device);
    let b = Tensor::<2>::random([n, n], Distribution::Uniform(-1.0, 1.0), &device);
    let mut best = f64::MAX;
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < 3.0 {
        let t = Instant::now();
        let c = a.clone().matmul(b.clone());
        let _ = c.into_data();
        best = best.min(t.elapsed().as_secs_f64());
    }
    2.0 * (n * n * n) as f64 / best / 1e9
}
