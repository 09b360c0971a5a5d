//! `make bench BENCH=kernels`: every convolution of the four benched networks alone, forward
//! and backward (the weight and input gradients), with burn's generic backward pass and with
//! this project's (`privynet_nn::kernels`), on the same tensors in the same run; then the whole
//! training steps both ways.

use anyhow::Result;
use burn::module::Param;
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

/// Prints both tables.
pub fn run(root: &std::path::Path) -> Result<()> {
    let t = Timing::from_env();
    steps::header(
        "convolutions alone and whole steps: burn's backward vs this project's",
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
    println!(
        "| network | step, burn's backward (samples/s) | step, ours (samples/s) | ours / burn |"
    );
    println!("|---|---|---|---|");
    for net in &nets {
        kernels::set_own_backward(false);
        let before = steps::train(net, t);
        kernels::set_own_backward(true);
        let after = steps::train(net, t);
        println!(
            "| {} | {:.0} | {:.0} | {:.2} |",
            net.desc.name,
            before.samples_per_second,
            after.samples_per_second,
            after.samples_per_second / before.samples_per_second
        );
    }
    kernels::set_own_backward(false);
    Ok(())
}
