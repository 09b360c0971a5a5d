//! The local network inside burn, built at run time from the slicer's `local.onnx`, so that the
//! optimisation attacker can differentiate the features with respect to an image. The local
//! network is the first layers of a public pretrained model: an attacker who knows (or has
//! matched) the selection holds this exact function. Only the operators a CNN's first layers
//! use are built; any other names itself in the error.

use std::collections::HashMap;
use std::path::Path;

use burn::tensor::activation::{hard_sigmoid, leaky_relu, relu, sigmoid, softmax};
use burn::tensor::module::avg_pool2d;
use burn::tensor::ops::{AvgPoolOptions, ConvOptions, MaxPoolOptions, PadMode};
use burn::tensor::{Device, Int, Tensor, TensorData};
use onnx_protobuf::NodeProto;

use privynet_core::manifest::{ChannelOrder, Preprocess};
use privynet_slice::analyze::{
    attr, int, ints, node_label, slice_range, split_sizes, window_attrs,
};
use privynet_slice::fold::{self, Const, Data};

use crate::NnError;

mod movement;

/// The operators [`LocalNet`] builds, for the error that names one it does not.
pub const SUPPORTED: &str = "Conv, Relu, LeakyRelu, Sigmoid, Tanh, HardSigmoid, HardSwish, \
    Clip, Identity, Dropout, BatchNormalization, MaxPool, AveragePool, GlobalAveragePool, \
    GlobalMaxPool, ReduceMean (spatial, keepdims), Add, Sub, Mul, Div, Softmax, Cast (to fp32), \
    Concat, Split and Slice (channels), Pad (spatial), Gather (channels), and the channel \
    shuffle's Reshape and Transpose";

/// How a windowed op pads: explicit `pads`, or computed from the input size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AutoPad {
    Explicit,
    SameUpper,
    SameLower,
    Valid,
}

/// A windowed op's geometry: per spatial axis `[kernel, stride, dilation, pad_begin, pad_end]`.
#[derive(Debug, Clone, Copy)]
struct Window {
    axes: [[i64; 5]; 2],
    auto_pad: AutoPad,
}

impl Window {
    /// Begin and end padding of each spatial axis for an input of `size` ([h, w]).
    fn pads(&self, size: [usize; 2]) -> [(usize, usize); 2] {
        let mut out = [(0, 0); 2];
        for (axis, [k, s, d, begin, end]) in self.axes.into_iter().enumerate() {
            let eff = d * (k - 1) + 1;
            let n = size[axis] as i64;
            let total = ((n + s - 1) / s - 1) * s + eff - n;
            let total = total.max(0);
            out[axis] = match self.auto_pad {
                AutoPad::Explicit => (begin as usize, end as usize),
                AutoPad::Valid => (0, 0),
                AutoPad::SameUpper => ((total / 2) as usize, (total - total / 2) as usize),
                AutoPad::SameLower => ((total - total / 2) as usize, (total / 2) as usize),
            };
        }
        out
    }
    fn kernel(&self) -> [usize; 2] {
        self.axes.map(|a| a[0] as usize)
    }
    fn stride(&self) -> [usize; 2] {
        self.axes.map(|a| a[1] as usize)
    }
    fn dilation(&self) -> [usize; 2] {
        self.axes.map(|a| a[2] as usize)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Arith {
    Add,
    Sub,
    Mul,
    Div,
}

/// One operator with its constants already on the device.
#[derive(Debug, Clone)]
enum Op {
    Conv {
        weight: Tensor<4>,
        bias: Option<Tensor<1>>,
        window: Window,
        groups: usize,
    },
    MaxPool {
        window: Window,
        ceil: bool,
    },
    AvgPool {
        window: Window,
        ceil: bool,
        count_include_pad: bool,
    },
    GlobalAvgPool,
    GlobalMaxPool,
    Relu,
    LeakyRelu(f64),
    Sigmoid,
    Tanh,
    HardSigmoid(f64, f64),
    HardSwish,
    Clip(f32, f32),
    Identity,
    /// `x * scale + shift`, per channel ([1, C, 1, 1]).
    Affine(Tensor<4>, Tensor<4>),
    Arith(Arith),
    Concat,
    Pad([(usize, usize); 2], f32),
    Gather(Vec<usize>),
    /// Softmax along one axis, or (`None`) over all of C, H and W together (before opset 13,
    /// axis 1 means the input flattened from axis 1 on).
    Softmax(Option<usize>),
    /// The channels `[start, end)` as ONNX `Slice` takes them (negative from the end, clamped).
    Channels(i64, i64),
    /// Output `index` of an equal `Split` of the channels into `parts`.
    SplitPart {
        parts: usize,
        index: usize,
    },
    /// A reshape to `[N, C, H, W]`.
    Reshape([usize; 3]),
    /// The input unchanged, which must be `[N, C, H, W]`: a channel shuffle's view begins or
    /// ends here.
    Shaped([usize; 3]),
}

/// An operator's argument: an activation by name, or a constant (broadcast to rank 4).
#[derive(Debug, Clone)]
enum Operand {
    Value(String),
    Const(Box<Tensor<4>>),
}

#[derive(Debug, Clone)]
struct Step {
    op: Op,
    inputs: Vec<Operand>,
    output: String,
}

/// The local network as burn operations on one device.
#[derive(Debug, Clone)]
pub struct LocalNet {
    steps: Vec<Step>,
    input: String,
    output: String,
}

/// What reading the graph needs: its constants by name and the opset.
struct Graph<'a> {
    consts: HashMap<&'a str, Const>,
    opset: i64,
    device: &'a Device,
}

impl LocalNet {
    /// Builds the network of `path` (a `local.onnx` from the slice stage, or any ONNX CNN whose
    /// output is named `output`) on `device`.
    pub fn load(path: &Path, output: &str, device: &Device) -> Result<Self, NnError> {
        let model = privynet_slice::model::load(path, None).map_err(NnError::context(format!(
            "loading the local network {}",
            path.display()
        )))?;
        let in_file = |e: String| NnError::Input(format!("{}: {e}", path.display()));
        let graph = model
            .proto
            .graph
            .as_ref()
            .expect("a loaded model has a graph");
        let opset = model
            .proto
            .opset_import
            .iter()
            .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
            .map_or(1, |o| o.version);
        let mut consts = HashMap::new();
        for t in &graph.initializer {
            if let Some(c) = fold::decode(t).map_err(&in_file)? {
                consts.insert(t.name.as_str(), c);
            }
        }
        let g = Graph {
            consts,
            opset,
            device,
        };
        let mut views = movement::Views::new();
        let mut steps = Vec::with_capacity(graph.node.len());
        for n in &graph.node {
            steps.extend(step(n, &g, &mut views).map_err(&in_file)?);
        }
        if !graph
            .node
            .iter()
            .any(|n| n.output.iter().any(|o| o == output))
        {
            return Err(in_file(format!("no node produces the output `{output}`")));
        }
        Ok(Self {
            steps,
            input: model.input,
            output: output.to_string(),
        })
    }

    /// The same network with the last channel selection (the `Gather` that makes the output)
    /// replaced by `channels` of the cut: the attacker's own guess or match of the selection.
    pub fn with_output_channels(&self, channels: &[usize]) -> Result<Self, NnError> {
        let mut net = self.clone();
        let gather = net
            .steps
            .iter_mut()
            .find(|s| s.output == self.output && matches!(s.op, Op::Gather(_)))
            .ok_or_else(|| {
                NnError::Input(format!(
                    "the local network's output `{}` is not a channel selection (Gather)",
                    self.output
                ))
            })?;
        gather.op = Op::Gather(channels.to_vec());
        Ok(net)
    }

    /// The features of a batch of network inputs ([n, 3, H, W], already preprocessed).
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let mut values: HashMap<&str, Tensor<4>> = HashMap::new();
        values.insert(self.input.as_str(), x);
        for s in &self.steps {
            let args: Vec<Tensor<4>> = s
                .inputs
                .iter()
                .map(|o| match o {
                    Operand::Value(name) => values[name.as_str()].clone(),
                    Operand::Const(t) => t.as_ref().clone(),
                })
                .collect();
            let y = apply(&s.op, args);
            values.insert(s.output.as_str(), y);
        }
        values
            .remove(self.output.as_str())
            .expect("checked on load: a node produces the output")
    }
}

/// Spatial size [h, w] of an NCHW tensor.
fn hw(x: &Tensor<4>) -> [usize; 2] {
    let [_, _, h, w] = x.dims();
    [h, w]
}

/// A convolution or pooling over `x` with the window's padding for `x`'s size.
fn windowed(op: &Op, x: Tensor<4>) -> Tensor<4> {
    match op {
        Op::Conv {
            weight,
            bias,
            window,
            groups,
        } => {
            let options = ConvOptions::new_with_padding(
                window.stride(),
                window.pads(hw(&x)),
                window.dilation(),
                *groups,
            );
            // The networks' convolution (the project's, burn's for grouped ones): through
            // SqueezeNet's local network, measured 29-30% faster a step of the optimisation
            // attack at fire3 and fire5 than burn's (`make bench BENCH=kernels`).
            crate::kernels::conv2d_chosen(x, weight.clone(), bias.clone(), options)
        }
        Op::MaxPool { window, ceil } => {
            let options = MaxPoolOptions::new(window.kernel())
                .with_stride(window.stride())
                .with_padding_pairs(window.pads(hw(&x)))
                .with_dilation(window.dilation())
                .with_ceil_mode(*ceil);
            // The project's max pool: burn-flex's took a third of the optimisation attack's step
            // through SqueezeNet's pools (`kernels::pool`).
            crate::kernels::max_pool2d(x, options)
        }
        Op::AvgPool {
            window,
            ceil,
            count_include_pad,
        } => {
            let options = AvgPoolOptions::new(window.kernel())
                .with_stride(window.stride())
                .with_padding_pairs(window.pads(hw(&x)))
                .with_count_include_pad(*count_include_pad)
                .with_ceil_mode(*ceil);
            avg_pool2d(x, options)
        }
        _ => unreachable!("only windowed ops come here"),
    }
}

/// Runs one operator on its arguments.
fn apply(op: &Op, mut args: Vec<Tensor<4>>) -> Tensor<4> {
    let x = args.remove(0);
    match op {
        Op::Conv { .. } | Op::MaxPool { .. } | Op::AvgPool { .. } => windowed(op, x),
        Op::GlobalAvgPool => x.mean_dim(2).mean_dim(3),
        Op::GlobalMaxPool => x.max_dim(2).max_dim(3),
        Op::Relu => relu(x),
        Op::LeakyRelu(alpha) => leaky_relu(x, *alpha),
        Op::Sigmoid => sigmoid(x),
        Op::Tanh => x.tanh(),
        Op::HardSigmoid(alpha, beta) => hard_sigmoid(x, *alpha, *beta),
        Op::HardSwish => x.clone() * hard_sigmoid(x, 1.0 / 6.0, 0.5),
        Op::Clip(lo, hi) => x.clamp(*lo, *hi),
        Op::Identity => x,
        Op::Affine(scale, shift) => x * scale.clone() + shift.clone(),
        Op::Arith(a) => {
            let y = args.remove(0);
            match a {
                Arith::Add => x + y,
                Arith::Sub => x - y,
                Arith::Mul => x * y,
                Arith::Div => x / y,
            }
        }
        Op::Concat => {
            args.insert(0, x);
            Tensor::cat(args, 1)
        }
        Op::Pad([h, w], value) => x.pad([*h, *w], PadMode::Constant(*value)),
        Op::Softmax(Some(axis)) => softmax(x, *axis),
        Op::Softmax(None) => {
            let dims = x.dims();
            softmax(x.reshape([dims[0], dims[1] * dims[2] * dims[3]]), 1).reshape(dims)
        }
        Op::Channels(start, end) => {
            let (s, e) = slice_range(*start, *end, x.dims()[1] as i64);
            x.narrow(1, s as usize, (e - s) as usize)
        }
        Op::SplitPart { parts, index } => {
            let c = x.dims()[1];
            let sizes = split_sizes(None, *parts, c as i64)
                .unwrap_or_else(|e| panic!("checked by the slicer's shape inference: {e}"));
            let start: i64 = sizes[..*index].iter().sum();
            x.narrow(1, start as usize, sizes[*index] as usize)
        }
        Op::Reshape([c, h, w]) => {
            let n = x.dims()[0];
            x.reshape([n, *c, *h, *w])
        }
        Op::Shaped(want) => {
            let [_, c, h, w] = x.dims();
            assert_eq!(
                [c, h, w],
                *want,
                "a channel shuffle's reshape is for another input size than this network's input"
            );
            x
        }
        Op::Gather(channels) => {
            let idx: Vec<i64> = channels.iter().map(|&c| c as i64).collect();
            let n = idx.len();
            let idx = Tensor::<1, Int>::from_data(TensorData::new(idx, [n]), &x.device());
            x.select(1, idx)
        }
    }
}

/// Builds one node (a `Split` builds one step per output), or says why it cannot.
fn step(n: &NodeProto, g: &Graph<'_>, views: &mut movement::Views) -> Result<Vec<Step>, String> {
    let err = |m: String| format!("node `{}` (op {}): {m}", node_label(n), n.op_type);
    let output = n
        .output
        .first()
        .cloned()
        .ok_or_else(|| err("no output".into()))?;
    let shuffle = matches!(n.op_type.as_str(), "Reshape" | "Transpose");
    if let Some(view) = n.input.iter().find(|i| views.contains_key(*i))
        && !shuffle
    {
        return Err(err(format!(
            "reads `{view}`, a channel shuffle's 5-D tensor; only its Transpose and Reshape may"
        )));
    }
    let data = vec![value_input(n, 0).map_err(&err)?];
    let (op, inputs) = match n.op_type.as_str() {
        "Conv" => (conv(n, g).map_err(&err)?, data),
        "MaxPool" | "AveragePool" => (pool(n).map_err(&err)?, data),
        "GlobalAveragePool" => (Op::GlobalAvgPool, data),
        "GlobalMaxPool" => (Op::GlobalMaxPool, data),
        "ReduceMean" => (movement::reduce_mean(n, g).map_err(&err)?, data),
        "Relu" => (Op::Relu, data),
        "LeakyRelu" => (Op::LeakyRelu(float_attr(n, "alpha", 0.01)), data),
        "Sigmoid" => (Op::Sigmoid, data),
        "Tanh" => (Op::Tanh, data),
        "HardSigmoid" => (
            Op::HardSigmoid(float_attr(n, "alpha", 0.2), float_attr(n, "beta", 0.5)),
            data,
        ),
        "HardSwish" => (Op::HardSwish, data),
        "Clip" => (clip(n, g).map_err(&err)?, data),
        "Identity" | "Dropout" => (Op::Identity, data),
        "Cast" => (movement::cast(n).map_err(&err)?, data),
        "BatchNormalization" => (batch_norm(n, g).map_err(&err)?, data),
        "Add" | "Sub" | "Mul" | "Div" => arith(n, g).map_err(&err)?,
        "Concat" => concat(n).map_err(&err)?,
        "Split" => return movement::split(n, g).map_err(&err),
        "Slice" => (movement::slice(n, g).map_err(&err)?, data),
        "Reshape" => (movement::reshape(n, g, views).map_err(&err)?, data),
        "Transpose" => (movement::transpose(n, views).map_err(&err)?, data),
        "Pad" => (pad(n, g).map_err(&err)?, data),
        "Gather" => (gather(n, g).map_err(&err)?, data),
        "Softmax" => (softmax_op(n, g).map_err(&err)?, data),
        other => {
            return Err(err(format!(
                "the attack's burn local network cannot build `{other}`; it builds {SUPPORTED}"
            )));
        }
    };
    Ok(vec![Step { op, inputs, output }])
}

/// Input `k` of a node, which must be an activation (not a weight).
fn value_input(n: &NodeProto, k: usize) -> Result<Operand, String> {
    n.input
        .get(k)
        .filter(|s| !s.is_empty())
        .map(|s| Operand::Value(s.clone()))
        .ok_or_else(|| format!("no input {k}"))
}

fn float_attr(n: &NodeProto, name: &str, default: f64) -> f64 {
    attr(n, name).map_or(default, |a| f64::from(a.f))
}

/// The constant input `k` of a node, if it has one (an empty name means absent).
fn const_input<'g>(n: &NodeProto, k: usize, g: &'g Graph<'_>) -> Result<Option<&'g Const>, String> {
    match n.input.get(k).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(name) => g
            .consts
            .get(name.as_str())
            .map(Some)
            .ok_or_else(|| format!("input `{name}` is not a constant")),
    }
}

fn floats(c: &Const) -> Vec<f32> {
    match &c.data {
        Data::Float(v) => v.iter().map(|&x| x as f32).collect(),
        Data::Int(v) => v.iter().map(|&x| x as f32).collect(),
    }
}

/// A constant as a rank-4 tensor, its dims aligned to the right as NumPy broadcasting does.
fn rank4(c: &Const, device: &Device) -> Result<Tensor<4>, String> {
    if c.dims.len() > 4 {
        return Err(format!("a constant of rank {}", c.dims.len()));
    }
    let mut dims = [1usize; 4];
    for (slot, &d) in dims[4 - c.dims.len()..].iter_mut().zip(&c.dims) {
        *slot = d as usize;
    }
    Ok(Tensor::from_data(TensorData::new(floats(c), dims), device))
}

fn window(n: &NodeProto, kernel: Option<[i64; 2]>) -> Result<Window, String> {
    let axes = window_attrs(n, kernel).map_err(|e| e.to_string())?;
    let auto = attr(n, "auto_pad")
        .map(|a| String::from_utf8_lossy(&a.s).into_owned())
        .unwrap_or_default();
    let auto_pad = match auto.as_str() {
        "" | "NOTSET" => AutoPad::Explicit,
        "SAME_UPPER" => AutoPad::SameUpper,
        "SAME_LOWER" => AutoPad::SameLower,
        "VALID" => AutoPad::Valid,
        other => return Err(format!("auto_pad `{other}`")),
    };
    Ok(Window { axes, auto_pad })
}

fn conv(n: &NodeProto, g: &Graph<'_>) -> Result<Op, String> {
    let w = const_input(n, 1, g)?.ok_or("no weights")?;
    if w.dims.len() != 4 {
        return Err(format!(
            "weights of shape {:?}; only 2-D convolutions",
            w.dims
        ));
    }
    let dims: [usize; 4] = std::array::from_fn(|i| w.dims[i] as usize);
    let weight = Tensor::from_data(TensorData::new(floats(w), dims), g.device);
    let bias = const_input(n, 2, g)?.map(|b| {
        let v = floats(b);
        let len = v.len();
        Tensor::<1>::from_data(TensorData::new(v, [len]), g.device)
    });
    let groups = usize::try_from(int(n, "group", 1))
        .ok()
        .filter(|&v| v >= 1)
        .ok_or("a group count below 1")?;
    Ok(Op::Conv {
        weight,
        bias,
        window: window(n, Some([w.dims[2], w.dims[3]]))?,
        groups,
    })
}

fn pool(n: &NodeProto) -> Result<Op, String> {
    let window = window(n, None)?;
    let ceil = int(n, "ceil_mode", 0) == 1;
    if n.op_type == "MaxPool" {
        if n.output.len() > 1 {
            return Err("MaxPool's indices output".into());
        }
        return Ok(Op::MaxPool { window, ceil });
    }
    Ok(Op::AvgPool {
        window,
        ceil,
        count_include_pad: int(n, "count_include_pad", 0) == 1,
    })
}

/// `Clip` with bounds from attributes (before opset 11) or constant inputs (from 11).
fn clip(n: &NodeProto, g: &Graph<'_>) -> Result<Op, String> {
    let bound = |k: usize, name: &str, default: f32| -> Result<f32, String> {
        if g.opset < 11 {
            return Ok(attr(n, name).map_or(default, |a| a.f));
        }
        Ok(const_input(n, k, g)?
            .and_then(|c| floats(c).first().copied())
            .unwrap_or(default))
    };
    Ok(Op::Clip(
        bound(1, "min", f32::MIN)?,
        bound(2, "max", f32::MAX)?,
    ))
}

/// Inference-mode batch normalisation folded into a per-channel scale and shift.
fn batch_norm(n: &NodeProto, g: &Graph<'_>) -> Result<Op, String> {
    let get = |k: usize, what: &str| -> Result<Vec<f32>, String> {
        Ok(floats(const_input(n, k, g)?.ok_or(format!("no {what}"))?))
    };
    let (gamma, beta, mean, var) = (
        get(1, "scale")?,
        get(2, "bias")?,
        get(3, "mean")?,
        get(4, "var")?,
    );
    let eps = float_attr(n, "epsilon", 1e-5) as f32;
    let c = gamma.len();
    if [beta.len(), mean.len(), var.len()] != [c; 3] {
        return Err("scale, bias, mean and var differ in length".into());
    }
    let scale: Vec<f32> = gamma
        .iter()
        .zip(&var)
        .map(|(s, v)| s / (v + eps).sqrt())
        .collect();
    let shift: Vec<f32> = (0..c).map(|i| beta[i] - mean[i] * scale[i]).collect();
    let t = |v: Vec<f32>| Tensor::from_data(TensorData::new(v, [1, c, 1, 1]), g.device);
    Ok(Op::Affine(t(scale), t(shift)))
}

/// An elementwise op between two activations or an activation and a constant.
fn arith(n: &NodeProto, g: &Graph<'_>) -> Result<(Op, Vec<Operand>), String> {
    let kind = match n.op_type.as_str() {
        "Add" => Arith::Add,
        "Sub" => Arith::Sub,
        "Mul" => Arith::Mul,
        _ => Arith::Div,
    };
    let operand = |k: usize| -> Result<Operand, String> {
        match const_input(n, k, g) {
            Ok(Some(c)) => Ok(Operand::Const(Box::new(rank4(c, g.device)?))),
            _ => value_input(n, k),
        }
    };
    Ok((Op::Arith(kind), vec![operand(0)?, operand(1)?]))
}

fn concat(n: &NodeProto) -> Result<(Op, Vec<Operand>), String> {
    let axis = int(n, "axis", 1);
    if axis != 1 && axis != -3 {
        return Err(format!(
            "concatenation along axis {axis}; only channels (1)"
        ));
    }
    let inputs = (0..n.input.len())
        .map(|k| value_input(n, k))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((Op::Concat, inputs))
}

/// Constant padding of the two spatial axes, pads from a constant input (opset 11 on) or the
/// attribute (before).
fn pad(n: &NodeProto, g: &Graph<'_>) -> Result<Op, String> {
    let mode = attr(n, "mode")
        .map(|a| String::from_utf8_lossy(&a.s).into_owned())
        .unwrap_or_else(|| "constant".into());
    if mode != "constant" {
        return Err(format!("padding mode `{mode}`; only constant"));
    }
    let (pads, value) = if g.opset >= 11 {
        let pads = const_input(n, 1, g)?
            .and_then(|c| c.ints().map(<[i64]>::to_vec))
            .ok_or("pads that are not a constant")?;
        let value = const_input(n, 2, g)?.and_then(|c| floats(c).first().copied());
        (pads, value.unwrap_or(0.0))
    } else {
        let pads = ints(n, "pads").ok_or("no pads")?;
        (pads, float_attr(n, "value", 0.0) as f32)
    };
    if n.input.get(3).is_some_and(|s| !s.is_empty()) || pads.len() != 8 {
        return Err(format!("pads {pads:?}; only 8 pads over NCHW"));
    }
    let spatial_only = [0, 1, 4, 5].iter().all(|&i| pads[i] == 0);
    if !spatial_only || pads.iter().any(|&p| p < 0) {
        return Err(format!(
            "pads {pads:?}; only non-negative padding of H and W"
        ));
    }
    let pair = |i: usize| (pads[i] as usize, pads[i + 4] as usize);
    Ok(Op::Pad([pair(2), pair(3)], value))
}

/// Softmax of a rank-4 activation: along `axis` from opset 13 (default the last), before it
/// over the input flattened from `axis` (default 1) on, of which only axis 1 is built.
fn softmax_op(n: &NodeProto, g: &Graph<'_>) -> Result<Op, String> {
    if g.opset < 13 {
        return match int(n, "axis", 1) {
            1 | -3 => Ok(Op::Softmax(None)),
            3 | -1 => Ok(Op::Softmax(Some(3))),
            a => Err(format!(
                "softmax over the input flattened from axis {a}; only 1 or 3"
            )),
        };
    }
    let axis = int(n, "axis", -1);
    let a = if axis < 0 { axis + 4 } else { axis };
    usize::try_from(a)
        .ok()
        .filter(|&a| a < 4)
        .map(|a| Op::Softmax(Some(a)))
        .ok_or_else(|| format!("softmax along axis {axis} of a rank-4 tensor"))
}

/// A constant selection of channels.
fn gather(n: &NodeProto, g: &Graph<'_>) -> Result<Op, String> {
    let axis = int(n, "axis", 0);
    if axis != 1 && axis != -3 {
        return Err(format!("gathering along axis {axis}; only channels (1)"));
    }
    let idx = const_input(n, 1, g)?
        .and_then(|c| c.ints().map(<[i64]>::to_vec))
        .ok_or("indices that are not an integer constant")?;
    let channels = idx
        .iter()
        .map(|&i| usize::try_from(i).map_err(|_| format!("a negative channel index {i}")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Op::Gather(channels))
}

/// The extract stage's preprocessing as an affine map of images in [0, 1] (RGB, CHW): the
/// network's input channel `c` is `image[src(c)] * a[c] + b[c]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Preprocessing {
    order: [usize; 3],
    a: [f32; 3],
    b: [f32; 3],
}

impl Preprocessing {
    /// The manifest's `model.preprocess` over pixels scaled from 0-255 to [0, 1]. Resizing is
    /// not modelled: the images must already be at the model's input size.
    pub fn new(p: &Preprocess) -> Self {
        let order = match p.channel_order {
            ChannelOrder::Rgb => [0, 1, 2],
            ChannelOrder::Bgr => [2, 1, 0],
        };
        Self {
            order,
            a: std::array::from_fn(|c| 255.0 * p.scale / p.std[c]),
            b: std::array::from_fn(|c| -p.mean[c] / p.std[c]),
        }
    }

    /// The network input of a batch of images ([n, 3, H, W] in [0, 1]).
    pub fn apply(&self, images: Tensor<4>) -> Tensor<4> {
        let device = images.device();
        let t = |v: [f32; 3]| {
            Tensor::<4>::from_data(TensorData::new(v.to_vec(), [1, 3, 1, 1]), &device)
        };
        // The channels reordered by slices joined again, not `select`: burn-flex's gradient of
        // a selection scatters element by element, measured 6% of the optimisation attack's
        // step; the slices' gradients are plain copies.
        let ordered = if self.order == [0, 1, 2] {
            images
        } else {
            let [n, _, h, w] = images.dims();
            let channel = |c: usize| images.clone().slice([0..n, c..c + 1, 0..h, 0..w]);
            Tensor::cat(self.order.iter().map(|&c| channel(c)).collect(), 1)
        };
        ordered * t(self.a) + t(self.b)
    }
}
