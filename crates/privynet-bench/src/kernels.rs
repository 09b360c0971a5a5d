//! `make bench BENCH=kernels`: every convolution of the four benched networks alone, forward
//! and backward (the weight and input gradients), burn's and this project's
//! (`privynet_nn::kernels`), on the same tensors in the same run; every batch
//! norm and ReLU alone, burn's and the fused one; then the whole training steps with burn's
//! operations, with the fused batch norm, and with both kernels.

use anyhow::Result;
use burn::module::Param;
use burn::nn::BatchNormConfig;
use burn::tensor::module::conv2d as burn_conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Distribution, Tensor};

use privynet_nn::kernels;

use crate::flops::walk;
use crate::steps::{self, Layer, NetDesc, Timing};

/// One convolution's geometry within a network: input [c, h, w], output channels, kernel,
/// stride and padding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Conv {
    input: [usize; 3],
    cout: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
}

/// The convolutions of a network's layer list, with the shape each one sees.
fn convolutions(d: &NetDesc) -> Vec<Conv> {
    walk(d)
        .into_iter()
        .filter_map(|(l, input)| match *l {
            Layer::Conv2d {
                cout,
                kernel,
                stride,
                padding,
                ..
            } => Some(Conv {
                input,
                cout,
                kernel,
                stride,
                padding,
            }),
            _ => None,
        })
        .collect()
}

/// Milliseconds of one forward and backward pass of `conv` at `batch`, burn's or ours.
fn time_conv(conv: Conv, batch: usize, ours: bool, t: Timing) -> f64 {
    let device = Device::flex().autodiff();
    device.seed(7);
    let d = Distribution::Uniform(-1.0, 1.0);
    let [c, h, w] = conv.input;
    let x = Tensor::<4>::random([batch, c, h, w], d, &device);
    let k = conv.kernel;
    let weight = Tensor::<4>::random([conv.cout, c, k, k], d, &device);
    let options = ConvOptions::new([conv.stride; 2], [conv.padding; 2], [1, 1], 1);
    let m = steps::time_steps("conv", batch, t, || {
        let x = Param::from_tensor(x.clone()).val();
        let weight = Param::from_tensor(weight.clone()).val();
        let y = if ours {
            kernels::conv2d(x.clone(), weight.clone(), None, options.clone())
        } else {
            burn_conv2d(x.clone(), weight.clone(), None, options.clone())
        };
        let grads = y.sum().backward();
        let _ = (x.grad(&grads), weight.grad(&grads));
    });
    m.ms_per_step
}

/// Milliseconds of one forward and backward pass of batch norm and ReLU over `[batch, c, h,
/// w]`, burn's or the fused one.
fn time_norm(input: [usize; 3], batch: usize, fused: bool, t: Timing) -> f64 {
    let device = Device::flex().autodiff();
    device.seed(7);
    let [c, h, w] = input;
    let x = Tensor::<4>::random([batch, c, h, w], Distribution::Uniform(-1.0, 1.0), &device);
    let norm = BatchNormConfig::new(c).init(&device);
    kernels::set_fused_norm(fused);
    let m = steps::time_steps("norm", batch, t, || {
        let x = Param::from_tensor(x.clone()).val();
        let grads = kernels::batch_norm_relu(&norm, x.clone()).sum().backward();
        let _ = (x.grad(&grads), norm.gamma.val().grad(&grads));
    });
    kernels::set_fused_norm(true);
    m.ms_per_step
}

/// Every batch norm of the networks alone (each followed by a ReLU in both networks).
fn norm_table(nets: &[steps::Bench], t: Timing) {
    println!("| network | batch norm and ReLU over | burn ms | fused ms | fused / burn time |");
    println!("|---|---|---|---|---|");
    for d in nets.iter().map(|n| &n.desc) {
        let shapes: Vec<[usize; 3]> = walk(d)
            .into_iter()
            .filter(|(l, _)| matches!(l, Layer::BatchNorm2d { .. }))
            .map(|(_, s)| s)
            .collect();
        let (mut burn_total, mut fused_total) = (0.0, 0.0);
        for &s in &shapes {
            let (burn, fused) = (
                time_norm(s, d.batch, false, t),
                time_norm(s, d.batch, true, t),
            );
            println!(
                "| {} | {}x{}x{} | {burn:.2} | {fused:.2} | {:.2} |",
                d.name,
                s[0],
                s[1],
                s[2],
                fused / burn
            );
            burn_total += burn;
            fused_total += fused;
        }
        println!(
            "| {} | all {} | {burn_total:.1} | {fused_total:.1} | {:.2} |",
            d.name,
            shapes.len(),
            fused_total / burn_total
        );
    }
    println!();
}

/// Whole steps three ways: burn's operations, the fused batch norm, and the fused batch norm
/// with this project's convolution.
fn step_table(nets: &[steps::Bench], t: Timing) {
    println!(
        "| network | burn's ops (samples/s) | fused norm | fused norm and own conv | \
         fused / burn | both / burn |"
    );
    println!("|---|---|---|---|---|---|");
    for net in nets {
        let mut sps = Vec::new();
        for (fused, own) in [(false, false), (true, false), (true, true)] {
            kernels::set_fused_norm(fused);
            kernels::set_own_conv(own);
            sps.push(steps::train(net, t).samples_per_second);
        }
        println!(
            "| {} | {:.0} | {:.0} | {:.0} | {:.2} | {:.2} |",
            net.desc.name,
            sps[0],
            sps[1],
            sps[2],
            sps[1] / sps[0],
            sps[2] / sps[0]
        );
    }
    kernels::set_fused_norm(true);
    kernels::set_own_conv(true);
}

/// Prints the three tables.
pub fn run(root: &std::path::Path) -> Result<()> {
    let t = Timing::from_env();
    steps::header(
        "convolutions and batch norms alone, and whole steps: burn's operations vs this project's",
        t,
    );
    println!(
        "| network | convolution (input -> out, k/s/p) | burn ms | ours ms | ours / burn time |"
    );
    println!("|---|---|---|---|---|");
    let nets = steps::networks(root)?;
    for d in nets.iter().map(|n| &n.desc) {
        let convs = convolutions(d);
        // A geometry the network repeats is timed once and counted each time.
        let mut timed: Vec<(Conv, f64, f64)> = Vec::new();
        let (mut burn_total, mut ours_total) = (0.0, 0.0);
        for &conv in &convs {
            let (burn, ours) = match timed.iter().find(|(c, ..)| *c == conv) {
                Some(&(_, burn, ours)) => (burn, ours),
                None => {
                    let burn = time_conv(conv, d.batch, false, t);
                    let ours = time_conv(conv, d.batch, true, t);
                    timed.push((conv, burn, ours));
                    let [c, h, w] = conv.input;
                    println!(
                        "| {} | {c}x{h}x{w} -> {}, {}/{}/{} | {burn:.2} | {ours:.2} | {:.2} |",
                        d.name,
                        conv.cout,
                        conv.kernel,
                        conv.stride,
                        conv.padding,
                        ours / burn
                    );
                    (burn, ours)
                }
            };
            burn_total += burn;
            ours_total += ours;
        }
        println!(
            "| {} | all {} convolutions | {burn_total:.1} | {ours_total:.1} | {:.2} |",
            d.name,
            convs.len(),
            ours_total / burn_total
        );
    }
    println!();
    norm_table(&nets, t);
    step_table(&nets, t);
    Ok(())
}
