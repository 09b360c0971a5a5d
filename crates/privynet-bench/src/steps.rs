//! Training-step throughput, in process, on synthetic tensors: the cloud network and the
//! attacker's IRN as the train and attack stages build them, against the same networks in
//! PyTorch on CPU (`scripts/bench_torch.py`, when a Python with `torch` is found), and the
//! variants measured for the training-speed issue (batch sizes, upsampling, batch building).
//!
//! Each network is written out as a layer list ([`NetDesc`]) derived at run time from
//! `cloud::layout` and `irn::spec`, so the PyTorch side builds what burn trains; both sides
//! check the parameter count against burn's network.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig, ConvTranspose2d, ConvTranspose2dConfig};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::activation::{relu, sigmoid};
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use privynet_core::manifest::{AttackParams, Manifest, TrainParams};
use privynet_nn::audit::irn::{Irn, IrnSpec, spec};
use privynet_nn::kernels::FusedAdam;
use privynet_nn::train::cloud::{CloudNet, layout};

use crate::flops;

/// CIFAR-10's image side: what the IRN rebuilds.
const IMAGE: usize = 32;
/// Rows of the synthetic pool each step takes its batch from (consecutive, wrapping).
const POOL: usize = 512;

/// One layer of a network description (the JSON `scripts/bench_torch.py` reads).
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Layer {
    Conv2d {
        cin: usize,
        cout: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        bias: bool,
    },
    ConvTranspose2d {
        cin: usize,
        cout: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        bias: bool,
    },
    BatchNorm2d {
        channels: usize,
    },
    Relu,
    Sigmoid,
    /// Resize to `size x size` (skipped when the input already has that size).
    Resize {
        mode: &'static str,
        size: usize,
        align_corners: bool,
    },
    PixelShuffle {
        factor: usize,
    },
    GlobalAvgPool,
    Linear {
        cin: usize,
        cout: usize,
        bias: bool,
    },
}

impl Layer {
    fn params(&self) -> usize {
        match *self {
            Self::Conv2d {
                cin,
                cout,
                kernel,
                bias,
                ..
            }
            | Self::ConvTranspose2d {
                cin,
                cout,
                kernel,
                bias,
                ..
            } => cin * cout * kernel * kernel + if bias { cout } else { 0 },
            Self::BatchNorm2d { channels } => 2 * channels,
            Self::Linear { cin, cout, bias } => cin * cout + if bias { cout } else { 0 },
            _ => 0,
        }
    }

    /// What burn's `num_params` counts: the parameters, and batch norm's running mean and
    /// variance.
    fn burn_params(&self) -> usize {
        match *self {
            Self::BatchNorm2d { channels } => 4 * channels,
            _ => self.params(),
        }
    }
}

/// The loss a network trains with.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Loss {
    CrossEntropy { classes: usize },
    Mse { target: [usize; 3] },
}

/// Adam's settings (burn's defaults, which PyTorch is given too).
#[derive(Debug, Clone, Serialize)]
pub struct Adam {
    lr: f64,
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f64,
}

impl Adam {
    fn new(lr: f64, weight_decay: f64) -> Self {
        Self {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-5,
            weight_decay,
        }
    }

    /// The training stages' Adam (`kernels::FusedAdam`, burn's `Adam` bit for bit).
    fn init(&self) -> ModuleOptimizer {
        let penalty = (self.weight_decay > 0.0).then_some(self.weight_decay as f32);
        FusedAdam::with(self.beta1, self.beta2, self.eps, penalty).into()
    }
}

/// A network to train for the comparison.
#[derive(Debug, Clone, Serialize)]
pub struct NetDesc {
    pub name: String,
    pub input: [usize; 3],
    pub batch: usize,
    pub pool: usize,
    pub loss: Loss,
    pub optimizer: Adam,
    /// Trainable parameters (what `torch`'s `parameters()` counts); burn's network and the
    /// PyTorch one are both checked against the layer list.
    pub params: usize,
    pub layers: Vec<Layer>,
}

impl NetDesc {
    /// A description of `layers` for burn's network of `burn_params` parameters (as its
    /// `num_params` counts them), checked against the layers.
    fn new(
        name: &str,
        input: [usize; 3],
        batch: usize,
        loss: Loss,
        optimizer: Adam,
        layers: Vec<Layer>,
        burn_params: usize,
    ) -> Result<Self> {
        let counted: usize = layers.iter().map(Layer::burn_params).sum();
        if counted != burn_params {
            bail!(
                "{name}: the layer list has {counted} parameters, burn's network {burn_params}: \
                 the description is out of date with privynet_nn"
            );
        }
        Ok(Self {
            name: name.to_string(),
            input,
            batch,
            pool: POOL,
            loss,
            optimizer,
            params: layers.iter().map(Layer::params).sum(),
            layers,
        })
    }
}

/// How long each network is timed.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Timing {
    pub threads: usize,
    pub warmup: usize,
    pub min_steps: usize,
    pub min_seconds: f64,
}

impl Timing {
    pub(crate) fn from_env() -> Self {
        Self {
            threads: threads(),
            warmup: 3,
            min_steps: 5,
            min_seconds: std::env::var("PRIVYNET_BENCH_SECONDS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(4.0),
        }
    }
}

/// Threads burn's flex backend uses (rayon's global pool).
fn threads() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n: &usize| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// One side's figure for one network.
#[derive(Debug, Clone, Deserialize)]
pub struct Measured {
    pub name: String,
    pub samples_per_second: f64,
    pub ms_per_step: f64,
    /// PyTorch's same step under CPU bf16 autocast (the PyTorch side only).
    #[serde(default)]
    pub bf16_samples_per_second: Option<f64>,
}

/// Runs `step` (one training step) after the warm-up until `t` is satisfied. The figure is the
/// median step: other work on a shared machine slows some steps, not the typical one.
pub(crate) fn time_steps(name: &str, batch: usize, t: Timing, mut step: impl FnMut()) -> Measured {
    for _ in 0..t.warmup {
        step();
    }
    let (mut times, start) = (Vec::new(), Instant::now());
    while times.len() < t.min_steps || start.elapsed().as_secs_f64() < t.min_seconds {
        let s = Instant::now();
        step();
        times.push(s.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    Measured {
        name: name.to_string(),
        samples_per_second: batch as f64 / median,
        ms_per_step: 1000.0 * median,
        bf16_samples_per_second: None,
    }
}

/// Deterministic synthetic values (xorshift), uniform in [lo, hi).
pub(crate) fn synthetic(n: usize, lo: f32, hi: f32, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            lo + (hi - lo) * ((s >> 40) as f32 / (1u64 << 24) as f32)
        })
        .collect()
}

/// A synthetic pool of `POOL` rows, and the project's way of making a batch of it: copy the
/// rows into a fresh `Vec` (as `attack::Pool::rows` and `train::gather` do), then hand it to
/// burn through `TensorData`.
struct Rows {
    data: Vec<f32>,
    len: usize,
    at: usize,
}

impl Rows {
    fn new(len: usize, lo: f32, hi: f32, seed: u64) -> Self {
        Self {
            data: synthetic(POOL * len, lo, hi, seed),
            len,
            at: 0,
        }
    }

    /// The next `n` consecutive rows (wrapping), copied.
    fn batch(&mut self, n: usize) -> Vec<f32> {
        let mut v = Vec::with_capacity(n * self.len);
        for k in 0..n {
            let i = (self.at + k) % POOL;
            v.extend_from_slice(&self.data[i * self.len..(i + 1) * self.len]);
        }
        self.at = (self.at + n) % POOL;
        v
    }
}

fn tensor4(v: Vec<f32>, n: usize, s: [usize; 3], device: &Device) -> Tensor<4> {
    Tensor::<4>::from_data(TensorData::new(v, [n, s[0], s[1], s[2]]), device)
}

/// The default manifest's training and attack settings (pipelines/cifar10-squeezenet.yaml).
pub fn defaults(root: &Path) -> Result<(TrainParams, AttackParams)> {
    let m = Manifest::load(&root.join("pipelines/cifar10-squeezenet.yaml"), &[])
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok((m.train, m.attack))
}

/// The cloud network's layer list for features of `shape`, from `cloud::layout`.
pub fn cloud_desc(name: &str, shape: [usize; 3], p: &TrainParams) -> Result<NetDesc> {
    let mut layers = Vec::new();
    let blocks = layout(shape, p.width, p.depth);
    for &(cin, cout, stride) in &blocks {
        layers.push(Layer::Conv2d {
            cin,
            cout,
            kernel: 3,
            stride,
            padding: 1,
            bias: false,
        });
        layers.push(Layer::BatchNorm2d { channels: cout });
        layers.push(Layer::Relu);
    }
    let last = blocks.last().map_or(shape[0], |b| b.1);
    layers.push(Layer::GlobalAvgPool);
    layers.push(Layer::Linear {
        cin: last,
        cout: p.classes,
        bias: true,
    });
    let burn = CloudNet::new(shape, p.width, p.depth, p.classes, &Device::flex()).num_params();
    NetDesc::new(
        name,
        shape,
        p.batch_size,
        Loss::CrossEntropy { classes: p.classes },
        Adam::new(p.lr, p.weight_decay),
        layers,
        burn,
    )
}

/// How the IRN doubles its maps: the project's way and the alternatives measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upsample {
    /// Nearest-neighbour 2x resize, then the level's first 3x3 conv (the project's IRN).
    NearestConv,
    /// A 4x4 stride-2 transposed conv as the level's first conv.
    Transposed,
    /// The level's first 3x3 conv at the low resolution with 4x the outputs, then a pixel
    /// shuffle (sub-pixel convolution): the same FLOPs as `NearestConv` on 4x smaller maps.
    PixelShuffle,
}

fn conv3(cin: usize, cout: usize, bias: bool) -> Layer {
    Layer::Conv2d {
        cin,
        cout,
        kernel: 3,
        stride: 1,
        padding: 1,
        bias,
    }
}

/// The IRN's layer list for features of `shape` at a cut of `cut_channels`, from `irn::spec`
/// and the manifest's `attack.width` / `attack.min_width`.
pub fn irn_desc(
    name: &str,
    shape: [usize; 3],
    cut_channels: usize,
    a: &AttackParams,
    batch: usize,
    up: Upsample,
) -> Result<(NetDesc, IrnSpec)> {
    let s = spec(shape, cut_channels, IMAGE, a.width, a.min_width);
    let mut layers = Vec::new();
    if shape[1] != s.resize_to || shape[2] != s.resize_to {
        layers.push(Layer::Resize {
            mode: "bilinear",
            size: s.resize_to,
            align_corners: true,
        });
    }
    let block = |layers: &mut Vec<Layer>, first: Layer, c: usize| {
        layers.push(first);
        layers.push(Layer::BatchNorm2d { channels: c });
        layers.push(Layer::Relu);
        layers.push(conv3(c, c, false));
        layers.push(Layer::BatchNorm2d { channels: c });
        layers.push(Layer::Relu);
    };
    let mut c = s.channels_at(0);
    block(&mut layers, conv3(shape[0], c, false), c);
    let mut side = s.resize_to;
    for level in 1..=s.upsamplings {
        let next = s.channels_at(level);
        side *= 2;
        let first = match up {
            Upsample::NearestConv => {
                layers.push(Layer::Resize {
                    mode: "nearest",
                    size: side,
                    align_corners: true,
                });
                conv3(c, next, false)
            }
            Upsample::Transposed => Layer::ConvTranspose2d {
                cin: c,
                cout: next,
                kernel: 4,
                stride: 2,
                padding: 1,
                bias: false,
            },
            Upsample::PixelShuffle => conv3(c, 4 * next, false),
        };
        if up == Upsample::PixelShuffle {
            layers.push(first);
            layers.push(Layer::PixelShuffle { factor: 2 });
            layers.push(Layer::BatchNorm2d { channels: next });
            layers.push(Layer::Relu);
            layers.push(conv3(next, next, false));
            layers.push(Layer::BatchNorm2d { channels: next });
            layers.push(Layer::Relu);
        } else {
            block(&mut layers, first, next);
        }
        c = next;
    }
    layers.push(conv3(c, 3, true));
    layers.push(Layer::Sigmoid);
    // The alternatives have no project network to check against: the generic one is.
    let burn = if up == Upsample::NearestConv {
        Irn::new(shape[0], s, &Device::flex()).num_params()
    } else {
        Generic::new(&layers, &Device::flex()).num_params()
    };
    let loss = Loss::Mse {
        target: [3, IMAGE, IMAGE],
    };
    let d = NetDesc::new(name, shape, batch, loss, Adam::new(a.lr, 0.0), layers, burn)?;
    Ok((d, s))
}

/// burn: the project's cloud network, one step as `train::train` takes it (batch copy, forward,
/// cross-entropy, loss and accuracy read back, backward, Adam).
fn burn_cloud(d: &NetDesc, p: &TrainParams, t: Timing) -> Measured {
    let device = Device::flex();
    device.seed(0);
    let ad = device.autodiff();
    let mut model = Some(CloudNet::new(d.input, p.width, p.depth, p.classes, &ad));
    let mut optim = d.optimizer.init();
    let loss_fn = CrossEntropyLossConfig::new().init(&ad);
    let mut xs = Rows::new(d.input.iter().product(), -2.0, 2.0, 1);
    let labels: Vec<i64> = (0..POOL).map(|i| (i * 7 % p.classes) as i64).collect();
    let (b, lr) = (d.batch, d.optimizer.lr);
    time_steps(&d.name, b, t, || {
        let at = xs.at;
        let x = tensor4(xs.batch(b), b, d.input, &ad);
        let y: Vec<i64> = (0..b).map(|k| labels[(at + k) % POOL]).collect();
        let y = Tensor::<1, Int>::from_data(TensorData::new(y, [b]), &ad);
        let net = model.take().expect("model");
        let logits = net.forward(x);
        let loss = loss_fn.forward(logits.clone(), y.clone());
        let _ = loss.clone().into_scalar::<f32>();
        let _ = logits
            .argmax(1)
            .reshape([b])
            .equal(y)
            .int()
            .sum()
            .into_scalar::<i64>();
        let grads = GradientsParams::from_grads(loss.backward(), &net);
        model = Some(optim.step(lr, net, grads));
    })
}

/// The parts of one IRN step, for [`burn_irn`]'s breakdown.
#[derive(Debug, Default, Clone, Copy)]
pub struct StepParts {
    pub batch: f64,
    pub forward: f64,
    pub backward: f64,
    pub optim: f64,
}

/// burn: the project's IRN, one step as `attack::train_step` takes it (rows copied, forward,
/// MSE, loss read back, backward, Adam). Also returns the mean seconds of each part.
fn burn_irn(d: &NetDesc, s: IrnSpec, t: Timing) -> (Measured, StepParts) {
    let device = Device::flex();
    device.seed(0);
    let ad = device.autodiff();
    let mut model = Some(Irn::new(d.input[0], s, &ad));
    let mut optim = d.optimizer.init();
    let mut xs = Rows::new(d.input.iter().product(), -2.0, 2.0, 1);
    let mut ys = Rows::new(3 * IMAGE * IMAGE, 0.0, 1.0, 2);
    let (b, lr) = (d.batch, d.optimizer.lr);
    let mut parts = StepParts::default();
    let mut n = 0usize;
    let m = time_steps(&d.name, b, t, || {
        let t0 = Instant::now();
        let x = tensor4(xs.batch(b), b, d.input, &ad);
        let y = tensor4(ys.batch(b), b, [3, IMAGE, IMAGE], &ad);
        let t1 = Instant::now();
        let net = model.take().expect("model");
        let pred = net.forward(x, s);
        let diff = pred - y;
        let loss = (diff.clone() * diff).mean();
        let _ = loss.clone().into_scalar::<f32>();
        let t2 = Instant::now();
        let grads = GradientsParams::from_grads(loss.backward(), &net);
        let t3 = Instant::now();
        model = Some(optim.step(lr, net, grads));
        let t4 = Instant::now();
        parts.batch += (t1 - t0).as_secs_f64();
        parts.forward += (t2 - t1).as_secs_f64();
        parts.backward += (t3 - t2).as_secs_f64();
        parts.optim += (t4 - t3).as_secs_f64();
        n += 1;
    });
    let k = n.max(1) as f64;
    (
        m,
        StepParts {
            batch: parts.batch / k,
            forward: parts.forward / k,
            backward: parts.backward / k,
            optim: parts.optim / k,
        },
    )
}

/// A module of the generic network built from a [`NetDesc`] (for the variants).
#[derive(Module, Debug)]
enum Part {
    Conv(Conv2d),
    ConvT(ConvTranspose2d),
    Norm(BatchNorm),
    Dense(Linear),
}

#[derive(Module, Debug)]
struct Generic {
    parts: Vec<Part>,
}

impl Generic {
    fn new(layers: &[Layer], device: &Device) -> Self {
        let parts = layers
            .iter()
            .filter_map(|l| match *l {
                Layer::Conv2d {
                    cin,
                    cout,
                    kernel,
                    stride,
                    padding,
                    bias,
                } => Some(Part::Conv(
                    Conv2dConfig::new([cin, cout], [kernel, kernel])
                        .with_stride([stride, stride])
                        .with_padding(PaddingConfig2d::Explicit(
                            padding, padding, padding, padding,
                        ))
                        .with_bias(bias)
                        .init(device),
                )),
                Layer::ConvTranspose2d {
                    cin,
                    cout,
                    kernel,
                    stride,
                    padding,
                    bias,
                } => Some(Part::ConvT(
                    ConvTranspose2dConfig::new([cin, cout], [kernel, kernel])
                        .with_stride([stride, stride])
                        .with_padding([padding, padding])
                        .with_bias(bias)
                        .init(device),
                )),
                Layer::BatchNorm2d { channels } => {
                    Some(Part::Norm(BatchNormConfig::new(channels).init(device)))
                }
                Layer::Linear { cin, cout, bias } => Some(Part::Dense(
                    LinearConfig::new(cin, cout).with_bias(bias).init(device),
                )),
                _ => None,
            })
            .collect();
        Self { parts }
    }

    /// Maps [N, C, H, W] through the layers up to a global pooling (not supported here:
    /// the variants are IRNs).
    fn forward(&self, layers: &[Layer], x: Tensor<4>) -> Tensor<4> {
        let mut p = self.parts.iter();
        let mut x = x;
        for l in layers {
            x = match (l, l.params() > 0) {
                (Layer::Relu, _) => relu(x),
                (Layer::Sigmoid, _) => sigmoid(x),
                (
                    Layer::Resize {
                        mode,
                        size,
                        align_corners,
                    },
                    _,
                ) => {
                    let [_, _, h, w] = x.dims();
                    if h == *size && w == *size {
                        x
                    } else {
                        let mode = if *mode == "nearest" {
                            InterpolateMode::Nearest
                        } else {
                            InterpolateMode::Bilinear
                        };
                        interpolate(
                            x,
                            InterpolateOptions::new(mode)
                                .with_align_corners(*align_corners)
                                .with_output_size([*size, *size]),
                        )
                    }
                }
                (Layer::PixelShuffle { factor: r }, _) => {
                    let [n, c, h, w] = x.dims();
                    let c = c / (r * r);
                    x.reshape([n, c, *r, *r, h, w])
                        .permute([0, 1, 4, 2, 5, 3])
                        .reshape([n, c, h * r, w * r])
                }
                (_, true) => match p.next() {
                    Some(Part::Conv(m)) => m.forward(x),
                    Some(Part::ConvT(m)) => m.forward(x),
                    Some(Part::Norm(m)) => m.forward(x),
                    _ => panic!("the generic network takes maps only"),
                },
                _ => panic!("unsupported layer {l:?}"),
            };
        }
        x
    }
}

/// burn: a generic network built from `d` (an IRN variant), trained as [`burn_irn`] does.
fn burn_generic(d: &NetDesc, t: Timing) -> Measured {
    let device = Device::flex();
    device.seed(0);
    let ad = device.autodiff();
    let mut model = Some(Generic::new(&d.layers, &ad));
    let mut optim = d.optimizer.init();
    let mut xs = Rows::new(d.input.iter().product(), -2.0, 2.0, 1);
    let mut ys = Rows::new(3 * IMAGE * IMAGE, 0.0, 1.0, 2);
    let (b, lr) = (d.batch, d.optimizer.lr);
    time_steps(&d.name, b, t, || {
        let x = tensor4(xs.batch(b), b, d.input, &ad);
        let y = tensor4(ys.batch(b), b, [3, IMAGE, IMAGE], &ad);
        let net = model.take().expect("model");
        let diff = net.forward(&d.layers, x) - y;
        let loss = (diff.clone() * diff).mean();
        let _ = loss.clone().into_scalar::<f32>();
        let grads = GradientsParams::from_grads(loss.backward(), &net);
        model = Some(optim.step(lr, net, grads));
    })
}

/// The Python the PyTorch side runs with: `PRIVYNET_TORCH_PYTHON` (empty or `none`: skip
/// PyTorch), else `python3`.
fn python() -> Option<String> {
    match std::env::var("PRIVYNET_TORCH_PYTHON") {
        Ok(v) if v.is_empty() || v == "none" => None,
        Ok(v) => Some(v),
        Err(_) => Some("python3".into()),
    }
}

/// The PyTorch side's figures for `nets`, or why there are none.
fn torch(
    root: &Path,
    dir: &Path,
    nets: &[NetDesc],
    t: Timing,
    bf16: bool,
) -> Result<(String, Vec<Measured>)> {
    #[derive(Serialize)]
    struct Spec<'a> {
        #[serde(flatten)]
        timing: Timing,
        nets: &'a [NetDesc],
        /// Whether to time the bf16 autocast step too.
        bf16: bool,
    }
    #[derive(Deserialize)]
    struct Out {
        torch: String,
        threads: usize,
        results: Vec<Measured>,
    }
    let py = python().context("PRIVYNET_TORCH_PYTHON is empty: PyTorch skipped")?;
    let file = dir.join("nets.json");
    std::fs::write(
        &file,
        serde_json::to_vec_pretty(&Spec {
            timing: t,
            nets,
            bf16,
        })?,
    )?;
    let out = Command::new(&py)
        .arg(root.join("scripts/bench_torch.py"))
        .arg(&file)
        .output()
        .with_context(|| format!("cannot run {py}"))?;
    if out.status.code() == Some(3) {
        bail!(
            "{py} cannot import torch (set PRIVYNET_TORCH_PYTHON to a Python that can): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    if !out.status.success() {
        bail!(
            "scripts/bench_torch.py failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let o: Out = serde_json::from_slice(&out.stdout).context("scripts/bench_torch.py output")?;
    Ok((
        format!("torch {} on {} threads", o.torch, o.threads),
        o.results,
    ))
}

/// The main table: burn's and PyTorch's samples per second, burn / PyTorch, burn's achieved
/// GFLOP/s and its share of the measured gemm peak, and PyTorch under bf16 autocast.
fn print_table(rows: &[(NetDesc, Measured)], torch: &Result<(String, Vec<Measured>)>, peak: f64) {
    let w = rows
        .iter()
        .map(|r| r.0.name.len())
        .max()
        .unwrap_or(0)
        .max(7);
    println!(
        "{:<w$} {:<9} {:>5} {:>9} {:>8} {:>9} {:>8} {:>6} {:>7} {:>6} {:>9}",
        "network",
        "input",
        "batch",
        "burn s/s",
        "ms/step",
        "torch s/s",
        "ms/step",
        "ratio",
        "GFLOP/s",
        "%peak",
        "bf16 s/s"
    );
    for (d, b) in rows {
        let t = torch
            .as_ref()
            .ok()
            .and_then(|(_, r)| r.iter().find(|m| m.name == d.name));
        let input = format!("{}x{}x{}", d.input[0], d.input[1], d.input[2]);
        let dash = || "-".to_string();
        let (ts, tm, ratio, bf16) = t.map_or((dash(), dash(), dash(), dash()), |t| {
            (
                format!("{:.0}", t.samples_per_second),
                format!("{:.1}", t.ms_per_step),
                format!("{:.2}", b.samples_per_second / t.samples_per_second),
                t.bf16_samples_per_second
                    .map_or_else(dash, |v| format!("{v:.0}")),
            )
        });
        let gflops = flops::step_flops_per_sample(d) * b.samples_per_second / 1e9;
        println!(
            "{:<w$} {:<9} {:>5} {:>9.0} {:>8.1} {:>9} {:>8} {:>6} {:>7.1} {:>5.0}% {:>9}",
            d.name,
            input,
            d.batch,
            b.samples_per_second,
            b.ms_per_step,
            ts,
            tm,
            ratio,
            gflops,
            100.0 * gflops / peak,
            bf16
        );
    }
    println!(
        "GFLOP/s: the convolutions' and linear layers' arithmetic of a step (3x the forward's) per \
         second; %peak: of burn-flex's fp32 1024^3 matmul on this machine, {peak:.1} GFLOP/s"
    );
    match torch {
        Ok((v, _)) => println!(
            "PyTorch: {v} (scripts/bench_torch.py); ratio = burn / PyTorch, fp32; bf16 s/s: \
             PyTorch's step under CPU bf16 autocast (not used by the project)"
        ),
        Err(e) => println!("PyTorch: none ({e:#}); burn's figures only"),
    }
}

/// The allocator this bench was built with.
pub fn allocator() -> &'static str {
    if cfg!(feature = "system-alloc") {
        "the system allocator (glibc malloc)"
    } else {
        "mimalloc"
    }
}

pub(crate) fn header(what: &str, t: Timing) {
    println!(
        "\n{what} (samples/s of training steps: forward, backward, Adam; synthetic tensors; \
         {} threads; {} warm-up steps, then the median step of >= {} s; {}):",
        t.threads,
        t.warmup,
        t.min_seconds,
        allocator()
    );
    // Other work on the cores disturbs both sides, PyTorch's OpenMP threads far more (its
    // cloud step measured 20x slower beside a 2-thread job on 2 cores, burn's hardly): say so.
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next()?.parse::<f64>().ok());
    if let Some(l) = load.filter(|&l| l > 0.5) {
        println!(
            "warning: the machine is busy (load average {l:.1} before the run): the figures, \
             PyTorch's especially, are disturbed; rerun on a quiet machine for the ratio"
        );
    }
}

/// Rounds of each network's burn-then-PyTorch pair (`PRIVYNET_BENCH_ROUNDS`, default 3).
fn rounds() -> usize {
    std::env::var("PRIVYNET_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
        .max(1)
}

/// `net` timed in burn, then at once in PyTorch, `rounds` times over: both figures of the
/// round whose ratio (burn / PyTorch) is the median, or burn's alone where PyTorch fails.
/// Each ratio is of two adjacent measurements; on a host whose speed drifts by a fifth
/// within minutes (seen here), single rounds' ratios of the same code spread by ±0.2, and the
/// median round's moves less. PyTorch's bf16 step is timed in the first round only.
fn paired(
    root: &Path,
    dir: &Path,
    net: &Bench,
    t: Timing,
    rounds: usize,
) -> (Measured, Result<(String, Measured)>) {
    let (mut pairs, mut label, mut bf16) = (Vec::new(), String::new(), None);
    for round in 0..rounds {
        let burn = train(net, t);
        let one = torch(root, dir, std::slice::from_ref(&net.desc), t, round == 0)
            .and_then(|(l, r)| Ok((l, r.into_iter().next().context("no PyTorch result")?)));
        match one {
            Ok((l, mut m)) => {
                bf16 = bf16.or(m.bf16_samples_per_second);
                m.bf16_samples_per_second = bf16;
                label = l;
                pairs.push((burn, m));
            }
            Err(e) => return (burn, Err(e)),
        }
    }
    let ratio = |(b, m): &(Measured, Measured)| b.samples_per_second / m.samples_per_second;
    let each: Vec<String> = pairs.iter().map(|p| format!("{:.2}", ratio(p))).collect();
    println!("{}: the rounds' ratios {}", net.desc.name, each.join(", "));
    pairs.sort_by(|x, y| ratio(x).total_cmp(&ratio(y)));
    let (burn, m) = pairs.swap_remove(pairs.len() / 2);
    (burn, Ok((label, m)))
}

/// The main table: the default cloud network at fire3 (32 and all 128 channels) and the IRN
/// at conv1 and fire3 (all channels), burn against PyTorch, each network on both sides in
/// turn ([`paired`]). `filter` keeps the networks whose name contains it (for profiling one).
pub fn run(root: &Path, filter: Option<&str>) -> Result<()> {
    let (t, rounds) = (Timing::from_env(), rounds());
    let keep = |n: &str| filter.is_none_or(|f| n.contains(f));
    header("training throughput, burn flex vs PyTorch CPU", t);
    println!(
        "each network: {rounds} rounds of burn then PyTorch at once; the round of the median ratio \
         (PRIVYNET_BENCH_ROUNDS)"
    );
    let peak = flops::gemm_peak();
    let (mut rows, mut notes) = (Vec::new(), Vec::new());
    let dir = tempfile::tempdir()?;
    let mut tr: Result<(String, Vec<Measured>)> = Ok((String::new(), Vec::new()));
    for net in networks(root)?.into_iter().filter(|n| keep(&n.desc.name)) {
        if let Trainer::Irn(s) = net.trainer {
            let widths: Vec<String> = (0..=s.upsamplings)
                .map(|l| s.channels_at(l).to_string())
                .collect();
            notes.push(format!(
                "{}: resized to {r}x{r}, {} upsamplings, widths {} (attack.min_width {})",
                net.desc.name,
                s.upsamplings,
                widths.join("/"),
                s.min_width,
                r = s.resize_to
            ));
        }
        let m = if tr.is_ok() {
            let (m, r) = paired(root, dir.path(), &net, t, rounds);
            tr = tr.and_then(|(_, mut all)| {
                r.map(|(label, one)| {
                    all.push(one);
                    (label, all)
                })
            });
            m
        } else {
            train(&net, t)
        };
        rows.push((net.desc, m));
    }
    print_table(&rows, &tr, peak);
    for n in notes {
        println!("{n}");
    }
    Ok(())
}

/// One benched network: its description and what it is built from.
pub struct Bench {
    pub desc: NetDesc,
    trainer: Trainer,
}

/// What a benched network is built from: the train stage's settings for the cloud network, the
/// IRN's spec for the attacker's.
enum Trainer {
    Cloud(TrainParams),
    Irn(IrnSpec),
}

/// The four networks of the main table: the default cloud network at fire3 (32 and all 128
/// channels) and the IRN at conv1 and fire3 (all channels).
pub fn networks(root: &Path) -> Result<Vec<Bench>> {
    let (tp, ap) = defaults(root)?;
    let mut out = Vec::new();
    for (name, shape) in [
        ("cloud fire3 D=32", [32, 7, 7]),
        ("cloud fire3 D=128 (all)", [128, 7, 7]),
    ] {
        let desc = cloud_desc(name, shape, &tp)?;
        out.push(Bench {
            desc,
            trainer: Trainer::Cloud(tp.clone()),
        });
    }
    for (name, shape, c) in [
        ("irn conv1 all (C=64)", [64, 15, 15], 64),
        ("irn fire3 all (C=128)", [128, 7, 7], 128),
    ] {
        let (desc, s) = irn_desc(name, shape, c, &ap, ap.batch_size, Upsample::NearestConv)?;
        out.push(Bench {
            desc,
            trainer: Trainer::Irn(s),
        });
    }
    Ok(out)
}

/// burn's training throughput on `net`, as the train or attack stage builds it.
pub fn train(net: &Bench, t: Timing) -> Measured {
    match &net.trainer {
        Trainer::Irn(s) => burn_irn(&net.desc, *s, t).0,
        Trainer::Cloud(p) => burn_cloud(&net.desc, p, t),
    }
}

/// The variants behind the proposals: IRN batch sizes, upsampling alternatives, the
/// step's parts, and the cost of building a batch.
pub fn variants(root: &Path) -> Result<()> {
    let (_, ap) = defaults(root)?;
    let t = Timing::from_env();
    let dir = tempfile::tempdir()?;
    header("IRN variants, burn flex vs PyTorch CPU", t);
    let cuts = [("conv1", [64, 15, 15], 64), ("fire3", [128, 7, 7], 128)];
    let mut rows = Vec::new();
    let mut parts = Vec::new();
    for (cut, shape, c) in cuts {
        for b in [32, 64, 128] {
            let name = format!("irn {cut} batch {b}");
            let (d, s) = irn_desc(&name, shape, c, &ap, b, Upsample::NearestConv)?;
            let (m, p) = burn_irn(&d, s, t);
            if b == ap.batch_size {
                parts.push((name, m.ms_per_step, p));
            }
            rows.push((d, m));
        }
        for (up, what) in [
            (Upsample::NearestConv, "nearest+conv (generic)"),
            (Upsample::Transposed, "convT 4x4/2"),
            (Upsample::PixelShuffle, "pixel shuffle"),
        ] {
            let name = format!("irn {cut} {what}");
            let (d, _) = irn_desc(&name, shape, c, &ap, ap.batch_size, up)?;
            let m = burn_generic(&d, t);
            rows.push((d, m));
        }
    }
    let nets: Vec<NetDesc> = rows.iter().map(|r| r.0.clone()).collect();
    let tr = torch(root, dir.path(), &nets, t, true);
    print_table(&rows, &tr, flops::gemm_peak());

    println!("\nburn IRN step parts (ms; batch {}):", ap.batch_size);
    for (name, total, p) in parts {
        println!(
            "  {name:<22} batch copy {:.2}  forward+loss {:.1}  backward {:.1}  Adam {:.1}  (step {total:.1})",
            1e3 * p.batch,
            1e3 * p.forward,
            1e3 * p.backward,
            1e3 * p.optim
        );
    }
    batch_building(ap.batch_size);
    Ok(())
}

/// Microseconds to build one IRN batch (fire3 features and the images) the project's way
/// (rows copied into a Vec, then TensorData) against selecting the rows of a pool tensor
/// kept on the device.
fn batch_building(b: usize) {
    let device = Device::flex();
    let ad = device.autodiff();
    let shape = [128, 7, 7];
    let mut xs = Rows::new(shape.iter().product(), -2.0, 2.0, 1);
    let mut ys = Rows::new(3 * IMAGE * IMAGE, 0.0, 1.0, 2);
    let reps = 200;
    let t = Instant::now();
    for _ in 0..reps {
        let x = tensor4(xs.batch(b), b, shape, &ad);
        let y = tensor4(ys.batch(b), b, [3, IMAGE, IMAGE], &ad);
        std::hint::black_box((x, y));
    }
    let copy = t.elapsed().as_secs_f64() / reps as f64;
    let px = Tensor::<2>::from_data(TensorData::new(xs.data.clone(), [POOL, xs.len]), &ad);
    let py = Tensor::<2>::from_data(TensorData::new(ys.data.clone(), [POOL, ys.len]), &ad);
    let t = Instant::now();
    for r in 0..reps {
        let idx: Vec<i64> = (0..b).map(|k| ((r * b + k) % POOL) as i64).collect();
        let idx = Tensor::<1, Int>::from_data(TensorData::new(idx, [b]), &ad);
        let x = px.clone().select(0, idx.clone()).reshape([b, 128, 7, 7]);
        let y = py.clone().select(0, idx).reshape([b, 3, IMAGE, IMAGE]);
        std::hint::black_box((x, y));
    }
    let select = t.elapsed().as_secs_f64() / reps as f64;
    println!(
        "\nbuilding one IRN batch of {b} (fire3 features + images, {:.1} MiB): rows copied to a Vec -> TensorData {:.0} us; select() on a pool tensor {:.0} us",
        (b * (xs.len + ys.len) * 4) as f64 / 1048576.0,
        1e6 * copy,
        1e6 * select
    );
}

#[cfg(test)]
mod tests {
    use privynet_e2e::root;

    use super::*;

    /// The layer lists PyTorch builds must add up to the project's networks: a change to
    /// `cloud` or `irn` that the descriptions miss fails here rather than in `make bench`.
    #[test]
    fn descriptions_match_the_project_networks() {
        let (tp, ap) = defaults(&root()).expect("the default manifest");
        for shape in [[32, 7, 7], [128, 7, 7], [64, 15, 15]] {
            cloud_desc("cloud", shape, &tp).expect("cloud description");
        }
        for (shape, c) in [([64, 15, 15], 64), ([128, 7, 7], 128), ([8, 3, 3], 256)] {
            for up in [
                Upsample::NearestConv,
                Upsample::Transposed,
                Upsample::PixelShuffle,
            ] {
                let (d, s) = irn_desc("irn", shape, c, &ap, 64, up).expect("irn description");
                let ups = d
                    .layers
                    .iter()
                    .filter(|l| {
                        matches!(
                            l,
                            Layer::Resize {
                                mode: "nearest",
                                ..
                            } | Layer::ConvTranspose2d { .. }
                                | Layer::PixelShuffle { .. }
                        )
                    })
                    .count();
                assert_eq!(ups, s.upsamplings, "{up:?} {shape:?}");
            }
        }
    }
}
