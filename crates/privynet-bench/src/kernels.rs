//! `make bench BENCH=kernels`: every convolution of the four benched networks alone, forward
//! and backward (the weight and input gradients), burn's and this project's
//! (`privynet_nn::kernels`), on the same tensors in the same run; every batch
//! norm and ReLU alone, burn's and the fused one; then the whole training steps with burn's
//! operations, with the fused Adam, with the fused batch norm too, and with the project's
//! convolution too; and a step of the
//! optimisation attack through SqueezeNet's local network (its convolutions and pools) with
//! burn's operations and with this project's.

use std::process::Command;

use anyhow::{Context, Result};
use burn::module::Param;
use burn::nn::BatchNormConfig;
use burn::tensor::module::conv2d as burn_conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Distribution, Tensor};

use privynet_core::manifest::{Manifest, OptimizationParams};
use privynet_nn::audit::invert::Inverter;
use privynet_nn::audit::local_net::{LocalNet, Preprocessing};
use privynet_nn::kernels;

use crate::flops::walk;
use crate::process::{bin, timed};
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

/// One table of layers alone, burn's against this project's: for each network, a row per
/// distinct layer of `layers(net)` (a repeated one is timed once and counted each time,
/// `time(layer, batch, ours)` in ms), then the network's total over all of them.
fn layer_table<L: PartialEq + Copy>(
    nets: &[steps::Bench],
    columns: [&str; 3],
    layers: impl Fn(&NetDesc) -> Vec<L>,
    label: impl Fn(L) -> String,
    time: impl Fn(L, usize, bool) -> f64,
) {
    let [what, ours, all] = columns;
    println!("| network | {what} | burn ms | {ours} ms | {ours} / burn time |");
    println!("|---|---|---|---|---|");
    for d in nets.iter().map(|n| &n.desc) {
        let list = layers(d);
        let mut timed: Vec<(L, f64, f64)> = Vec::new();
        let (mut burn_total, mut ours_total) = (0.0, 0.0);
        for &layer in &list {
            let (burn, own) = match timed.iter().find(|(l, ..)| *l == layer) {
                Some(&(_, burn, own)) => (burn, own),
                None => {
                    let (burn, own) = (time(layer, d.batch, false), time(layer, d.batch, true));
                    timed.push((layer, burn, own));
                    println!(
                        "| {} | {} | {burn:.2} | {own:.2} | {:.2} |",
                        d.name,
                        label(layer),
                        own / burn
                    );
                    (burn, own)
                }
            };
            burn_total += burn;
            ours_total += own;
        }
        println!(
            "| {} | all {} {all} | {burn_total:.1} | {ours_total:.1} | {:.2} |",
            d.name,
            list.len(),
            ours_total / burn_total
        );
    }
    println!();
}

/// The input shape of every batch norm of a network (each followed by a ReLU in both).
fn norms(d: &NetDesc) -> Vec<[usize; 3]> {
    walk(d)
        .into_iter()
        .filter(|(l, _)| matches!(l, Layer::BatchNorm2d { .. }))
        .map(|(_, s)| s)
        .collect()
}

/// Whole steps four ways: burn's operations, then with the fused Adam, the fused batch norm
/// too, and this project's convolution too.
fn step_table(nets: &[steps::Bench], t: Timing) {
    println!(
        "| network | burn's ops (samples/s) | fused Adam | and fused norm | and own conv | \
         all / burn |"
    );
    println!("|---|---|---|---|---|---|");
    for net in nets {
        let mut sps = Vec::new();
        for (adam, norm, conv) in [
            (false, false, false),
            (true, false, false),
            (true, true, false),
            (true, true, true),
        ] {
            kernels::set_fused_adam(adam);
            kernels::set_fused_norm(norm);
            kernels::set_own_conv(conv);
            sps.push(steps::train(net, t).samples_per_second);
        }
        println!(
            "| {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.2} |",
            net.desc.name,
            sps[0],
            sps[1],
            sps[2],
            sps[3],
            sps[3] / sps[0]
        );
    }
    kernels::set_fused_adam(true);
    kernels::set_fused_norm(true);
    kernels::set_own_conv(true);
}

/// Victims the optimisation attack optimises together (its default batch).
const VICTIMS: usize = 100;

/// Milliseconds of one step of the optimisation attack (forward, gradient by pixel, Adam) on
/// [`VICTIMS`] images through `net`, burn's operations or this project's.
fn time_attack(net: &LocalNet, pre: &Preprocessing, ours: bool, t: Timing) -> Result<f64> {
    let device = Device::flex().autodiff();
    let size = 32;
    let images = steps::synthetic(VICTIMS * 3 * size * size, 0.0, 1.0, 11);
    let x = Tensor::<4>::from_data(
        burn::tensor::TensorData::new(images.clone(), [VICTIMS, 3, size, size]),
        &device,
    );
    let f = net.forward(pre.apply(x));
    let [_, d, h, w] = f.dims();
    let targets = f.into_data().try_to_vec::<f32>().context("features")?;
    let inv_std = vec![1.0f32; d];
    // Four Adam steps and the last error per call: time per step is a fifth of a call.
    let params = OptimizationParams {
        iterations: 4,
        batch_size: VICTIMS,
        ..OptimizationParams::default()
    };
    let inv = Inverter {
        net,
        preprocessing: pre,
        inv_std: &inv_std,
        params: &params,
        device: &device,
        feature_shape: [d, h, w],
        size,
    };
    let start = vec![0.5f32; images.len()];
    kernels::set_own_conv(ours);
    let m = steps::time_steps("attack", VICTIMS, t, || {
        let _ = inv.invert(&targets, &[&start], |_| {});
    });
    kernels::set_own_conv(true);
    Ok(m.ms_per_step / 5.0)
}

/// A step of the optimisation attack through SqueezeNet's local network at conv1, fire3 and
/// fire5 (16 channels, sliced here), burn's operations against this project's. The channels are
/// chosen at random: the step's time does not depend on which, and the manifest's
/// fisher-random selection would need a finished run's images.parquet.
fn attack_table(root: &std::path::Path, t: Timing) -> Result<()> {
    let manifest = root.join("pipelines/cifar10-squeezenet.yaml");
    let m = Manifest::load(&manifest, &[]).context("the default manifest")?;
    let pre = Preprocessing::new(&m.model.preprocess);
    let dir = tempfile::tempdir()?;
    println!(
        "| optimisation attack through SqueezeNet's local network (100 victims) | burn ms | ours \
         ms | ours / burn time |"
    );
    println!("|---|---|---|---|");
    for cut in ["conv1", "fire3", "fire5"] {
        let out = dir.path().join(cut);
        timed(
            Command::new(bin("privynet-slice")?)
                .current_dir(root)
                .args([
                    "--manifest",
                    manifest.to_str().context("path")?,
                    "--cut",
                    cut,
                    "--channels",
                    "16",
                    "--method",
                    "random",
                    "-o",
                    out.to_str().context("path")?,
                ]),
        )?;
        let device = Device::flex().autodiff();
        let net = LocalNet::load(&out.join("local.onnx"), "features", &device)?;
        let (burn, ours) = (
            time_attack(&net, &pre, false, t)?,
            time_attack(&net, &pre, true, t)?,
        );
        println!("| {cut}-d16 | {burn:.1} | {ours:.1} | {:.2} |", ours / burn);
    }
    println!();
    Ok(())
}

/// Prints the four tables.
pub fn run(root: &std::path::Path) -> Result<()> {
    let t = Timing::from_env();
    steps::header(
        "convolutions and batch norms alone, and whole steps: burn's operations vs this project's",
        t,
    );
    let nets = steps::networks(root)?;
    layer_table(
        &nets,
        ["convolution (input -> out, k/s/p)", "ours", "convolutions"],
        convolutions,
        |c: Conv| {
            let [ci, h, w] = c.input;
            format!(
                "{ci}x{h}x{w} -> {}, {}/{}/{}",
                c.cout, c.kernel, c.stride, c.padding
            )
        },
        |c, batch, ours| time_conv(c, batch, ours, t),
    );
    layer_table(
        &nets,
        ["batch norm and ReLU over", "fused", "batch norms"],
        norms,
        |[c, h, w]: [usize; 3]| format!("{c}x{h}x{w}"),
        |s, batch, fused| time_norm(s, batch, fused, t),
    );
    step_table(&nets, t);
    println!();
    attack_table(root, t)
}
