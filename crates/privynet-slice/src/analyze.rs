//! Shape and cost inference over a CNN graph for a given square input size: every candidate cut
//! point with its (C, H, W) and the cumulative local cost of computing it (multiply-accumulates,
//! parameters, weight bytes). An op it does not know stops the inference with an error naming
//! the op, rather than a wrong number.
//!
//! Activations (tensors computed from the image input) are tracked without their batch
//! dimension; constants keep their full dims, and small integer constants their values, so
//! `Pad` reads its folded pads and PyTorch's flatten (`Shape -> Gather -> Unsqueeze -> Concat ->
//! Reshape`) is followed with the batch size as an unknown. Only activations are cut points.

use std::collections::{HashMap, HashSet};

use onnx_protobuf::{AttributeProto, NodeProto};

use crate::model::Model;
use crate::{SliceError, fold};

mod movement;
mod names;

use movement::{cast_output, reduce_mean_output, slice_output, split_output, transpose_output};
pub use movement::{channel_range, is_spatial, nchw_axis, slice_range, split_sizes};
pub use names::friendly_names;

/// One candidate cut point.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CutPoint {
    /// Position among the cut points, in graph order.
    pub index: usize,
    /// The ONNX tensor name.
    pub name: String,
    /// A friendly layer name (`conv1`, `fire2`) where one exists.
    pub layer: Option<String>,
    pub op: String,
    pub channels: i64,
    pub height: i64,
    pub width: i64,
    /// Multiply-accumulates per image of every node needed for this tensor (Conv and Gemm;
    /// pooling and activations do no multiply-accumulates).
    pub macs: i64,
    /// Parameters of every node needed for this tensor.
    pub params: i64,
    /// Bytes of those parameters as stored in the model file.
    pub weight_bytes: i64,
}

impl CutPoint {
    /// The friendly name if there is one, else the tensor name.
    pub fn label(&self) -> &str {
        self.layer.as_deref().unwrap_or(&self.name)
    }
}

/// The result of analysing a model at one input size.
#[derive(Debug, Clone)]
pub struct Analysis {
    pub input_size: i64,
    pub points: Vec<CutPoint>,
    /// The first node whose op is not supported, if inference stopped early: (node, op).
    pub stopped_at: Option<(String, String)>,
    /// Integer values the graph computes from activations' shapes at this input size, `None`
    /// for the batch size: the reshape targets and slice bounds of a TorchScript channel
    /// shuffle (`Shape -> Gather -> Div -> ... -> Concat`). The surgery writes them into the
    /// local network as constants ([`crate::surgery::freeze_shapes`]).
    pub shape_values: ShapeValues,
}

/// An integer tensor that inference computed: its dims and values (`None` for the batch size).
#[derive(Debug, Clone, PartialEq)]
pub struct ShapeValue {
    pub dims: Vec<i64>,
    pub values: Vec<Option<i64>>,
}

/// Integer tensors by name, as [`Analysis::shape_values`] holds them.
pub type ShapeValues = HashMap<String, ShapeValue>;

/// The attribute `name` of a node.
pub fn attr<'a>(n: &'a NodeProto, name: &str) -> Option<&'a AttributeProto> {
    n.attribute.iter().find(|a| a.name == name)
}
/// An ints attribute.
pub fn ints(n: &NodeProto, name: &str) -> Option<Vec<i64>> {
    attr(n, name).map(|a| a.ints.clone())
}
/// An int attribute, or `default` without one.
pub fn int(n: &NodeProto, name: &str, default: i64) -> i64 {
    attr(n, name).map_or(default, |a| a.i)
}
/// A node's name, or its first output's where it has none: what errors call it.
pub fn node_label(n: &NodeProto) -> String {
    if n.name.is_empty() {
        n.output.first().cloned().unwrap_or_default()
    } else {
        n.name.clone()
    }
}

/// An error about node `n`, naming it and its op.
pub fn op_err(n: &NodeProto, message: impl Into<String>) -> SliceError {
    SliceError::Op {
        node: node_label(n),
        op: n.op_type.clone(),
        message: message.into(),
    }
}

/// Largest kernel, stride, dilation or pad accepted: far beyond any real CNN, small enough that
/// the size arithmetic below cannot overflow.
const MAX_WINDOW: i64 = 1 << 20;

/// A windowed op's `[kernel, stride, dilation, pad_begin, pad_end]` along its two spatial axes,
/// checked: a model from the wild or a damaged file may carry any values, and a zero stride
/// would divide by zero. `kernel` is the default kernel (a Conv's weight shape).
pub fn window_attrs(n: &NodeProto, kernel: Option<[i64; 2]>) -> Result<[[i64; 5]; 2], SliceError> {
    let get = |name: &str, len: usize, default: Option<Vec<i64>>, min: i64| {
        let v = match ints(n, name) {
            Some(v) => v,
            None => default.ok_or_else(|| op_err(n, format!("no {name} attribute")))?,
        };
        if v.len() != len {
            return Err(op_err(
                n,
                format!("`{name}` has {} values, expected {len} (2-D)", v.len()),
            ));
        }
        if let Some(bad) = v.iter().find(|&&x| !(min..=MAX_WINDOW).contains(&x)) {
            return Err(op_err(
                n,
                format!("`{name}` holds {bad}, expected {min} to {MAX_WINDOW}"),
            ));
        }
        Ok(v)
    };
    let k = get("kernel_shape", 2, kernel.map(|k| k.to_vec()), 1)?;
    let s = get("strides", 2, Some(vec![1, 1]), 1)?;
    let d = get("dilations", 2, Some(vec![1, 1]), 1)?;
    let p = get("pads", 4, Some(vec![0; 4]), 0)?;
    Ok([
        [k[0], s[0], d[0], p[0], p[2]],
        [k[1], s[1], d[1], p[1], p[3]],
    ])
}

/// Spatial output size of a windowed op (conv or pool) along one axis; `w` is
/// `[kernel, stride, dilation, pad_begin, pad_end]`.
fn window_out(n: &NodeProto, size: i64, w: [i64; 5], ceil: bool) -> Result<i64, SliceError> {
    let [k, s, d, pad_begin, pad_end] = w;
    let auto = attr(n, "auto_pad")
        .map(|a| String::from_utf8_lossy(&a.s).into_owned())
        .unwrap_or_default();
    let eff = d * (k - 1) + 1;
    let out = match auto.as_str() {
        "SAME_UPPER" | "SAME_LOWER" => (size + s - 1) / s,
        "VALID" => (size - eff) / s + 1,
        _ => {
            let span = size + pad_begin + pad_end - eff;
            if span < 0 {
                return Err(op_err(
                    n,
                    format!(
                        "the window ({eff}) is larger than the padded input ({})",
                        size + pad_begin + pad_end
                    ),
                ));
            }
            if ceil {
                let mut o = (span + s - 1) / s + 1;
                // ONNX (like PyTorch) drops a last window that would start in the end padding.
                if (o - 1) * s >= size + pad_begin {
                    o -= 1;
                }
                o
            } else {
                span / s + 1
            }
        }
    };
    if out < 1 {
        return Err(op_err(
            n,
            format!("output size {out} for input size {size}"),
        ));
    }
    Ok(out)
}

/// Per node of the analysed prefix: its own multiply-accumulates, parameter count and stored
/// bytes.
#[derive(Debug, Clone, Copy, Default)]
struct NodeCost {
    macs: i64,
    params: i64,
    bytes: i64,
}

/// What inference knows about one tensor.
#[derive(Debug, Clone)]
struct Tensor {
    /// An activation's shape without the batch dimension; a constant's full dims.
    shape: Vec<i64>,
    /// Computed from the image input: an activation, whose first (batch) dimension `shape`
    /// leaves out. Anything else is a constant (weights, or a shape computed with `Shape`).
    act: bool,
    /// The values of a small integer constant where known; `None` for an element that depends
    /// on the batch size (the `Shape` of an activation).
    ints: Option<Vec<Option<i64>>>,
}

/// What shape inference learned about a graph's prefix: every tensor, which node produced it,
/// each node's own cost, and where inference stopped.
struct Inferred<'g> {
    tensors: HashMap<String, Tensor>,
    producer: HashMap<&'g str, usize>,
    costs: Vec<NodeCost>,
    /// Nodes analysed, from the start of the graph.
    analysed: usize,
    stopped_at: Option<(String, String)>,
}

/// Analyses the model for square inputs of `input_size`.
pub fn analyze(model: &Model, input_size: i64) -> Result<Analysis, SliceError> {
    let graph = model
        .proto
        .graph
        .as_ref()
        .expect("a loaded model has a graph");
    let inferred = infer(model, graph, input_size)?;
    let points = cut_points(graph, &inferred);
    let shape_values = inferred
        .producer
        .keys()
        .filter_map(|&name| {
            let t = &inferred.tensors[name];
            let values = t.ints.clone().filter(|_| !t.act)?;
            let dims = t.shape.clone();
            Some((name.to_string(), ShapeValue { dims, values }))
        })
        .collect();
    Ok(Analysis {
        input_size,
        points,
        stopped_at: inferred.stopped_at,
        shape_values,
    })
}

/// Integer constants up to this many elements have their values read (shapes, pads, axes).
const MAX_INT_VALUES: i64 = 4096;

/// The values of a small integer initializer.
fn int_values(t: &onnx_protobuf::TensorProto) -> Option<Vec<Option<i64>>> {
    let n = t
        .dims
        .iter()
        .try_fold(1i64, |p, &d| if d < 0 { None } else { p.checked_mul(d) })?;
    if n > MAX_INT_VALUES {
        return None;
    }
    let c = fold::decode(t).ok()??;
    Some(c.ints()?.iter().map(|&v| Some(v)).collect())
}

/// Whether input `k` of an `op` node holds weights: bounds, pads, shapes and ratios passed as
/// inputs are settings, not parameters.
fn is_weight_input(op: &str, k: usize) -> bool {
    match op {
        "Clip" | "Pad" | "Dropout" | "Reshape" | "Slice" | "Unsqueeze" | "Squeeze" | "Resize"
        | "Upsample" | "Expand" | "Tile" => k == 0,
        _ => true,
    }
}

/// Runs shape and cost inference node by node until the end of the graph or the first op it
/// does not know.
fn infer<'g>(
    model: &Model,
    graph: &'g onnx_protobuf::GraphProto,
    input_size: i64,
) -> Result<Inferred<'g>, SliceError> {
    let inits: HashMap<&str, &onnx_protobuf::TensorProto> = graph
        .initializer
        .iter()
        .map(|t| (t.name.as_str(), t))
        .collect();
    let mut inferred = Inferred {
        tensors: known_tensors(model, graph, &inits, input_size),
        producer: HashMap::new(),
        costs: Vec::with_capacity(graph.node.len()),
        analysed: 0,
        stopped_at: None,
    };
    for (i, n) in graph.node.iter().enumerate() {
        let inputs = Inputs {
            n,
            tensors: &inferred.tensors,
        };
        let Some(out) = node_output(n, &inputs)? else {
            inferred.stopped_at = Some((node_label(n), n.op_type.clone()));
            break;
        };
        inferred.costs.push(node_cost(model, &inits, n, out.macs));
        // A Split's outputs have their own shapes; Dropout's optional mask is not read, so it
        // shares the first output's.
        for (k, o) in n.output.iter().enumerate() {
            let shape = match k.checked_sub(1).and_then(|j| out.others.get(j)) {
                Some(s) => s.clone(),
                None => out.shape.clone(),
            };
            let t = Tensor {
                shape,
                act: out.act,
                ints: out.ints.clone(),
            };
            inferred.tensors.insert(o.clone(), t);
            inferred.producer.insert(o.as_str(), i);
        }
        inferred.analysed = i + 1;
    }
    Ok(inferred)
}

/// What inference knows before the first node: every initializer, as a constant, and the image
/// input, an activation of `input_size` squares with the channels the graph gives it (else 3).
fn known_tensors(
    model: &Model,
    graph: &onnx_protobuf::GraphProto,
    inits: &HashMap<&str, &onnx_protobuf::TensorProto>,
    input_size: i64,
) -> HashMap<String, Tensor> {
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    let channels_in = graph
        .input
        .iter()
        .find(|i| i.name == model.input)
        .and_then(crate::proto::dims)
        .and_then(|d| d.get(1).copied().flatten())
        .unwrap_or(3);
    for (name, t) in inits {
        let ints = if fold::is_float_type(t.data_type) {
            None
        } else {
            int_values(t)
        };
        let shape = t.dims.clone();
        let tensor = Tensor {
            shape,
            act: false,
            ints,
        };
        tensors.insert((*name).to_string(), tensor);
    }
    tensors.insert(
        model.input.clone(),
        Tensor {
            shape: vec![channels_in, input_size, input_size],
            act: true,
            ints: None,
        },
    );
    tensors
}

/// Node `n`'s own cost: its `macs`, and the parameters and stored bytes of the float
/// initializers it reads as weights.
fn node_cost(
    model: &Model,
    inits: &HashMap<&str, &onnx_protobuf::TensorProto>,
    n: &NodeProto,
    macs: i64,
) -> NodeCost {
    let mut cost = NodeCost {
        macs,
        ..NodeCost::default()
    };
    for (k, inp) in n.input.iter().enumerate() {
        if let Some(t) = inits.get(inp.as_str())
            && fold::is_float_type(t.data_type)
            && is_weight_input(&n.op_type, k)
        {
            cost.params += t.dims.iter().product::<i64>();
            cost.bytes += *model.stored_bytes.get(inp).unwrap_or(&0) as i64;
        }
    }
    cost
}

/// A node's inputs as inference knows them.
struct Inputs<'a> {
    n: &'a NodeProto,
    tensors: &'a HashMap<String, Tensor>,
}

impl Inputs<'_> {
    /// Whether optional input `k` is given.
    fn present(&self, k: usize) -> bool {
        self.n.input.get(k).is_some_and(|s| !s.is_empty())
    }

    fn get(&self, k: usize) -> Result<&Tensor, SliceError> {
        let n = self.n;
        let name = n
            .input
            .get(k)
            .ok_or_else(|| op_err(n, format!("missing input {k}")))?;
        self.tensors
            .get(name)
            .ok_or_else(|| op_err(n, format!("the shape of input `{name}` is unknown")))
    }

    fn shape(&self, k: usize) -> Result<Vec<i64>, SliceError> {
        self.get(k).map(|t| t.shape.clone())
    }

    /// Whether every given input is an integer constant whose values are all known (not the
    /// batch size): only then can arithmetic on it be evaluated.
    fn all_ints_known(&self) -> Result<bool, SliceError> {
        for k in (0..self.n.input.len()).filter(|&k| self.present(k)) {
            let known = self
                .get(k)?
                .ints
                .as_ref()
                .is_some_and(|v| v.iter().all(Option::is_some));
            if !known {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Whether any given input is an activation.
    fn any_act(&self) -> Result<bool, SliceError> {
        let mut any = false;
        for k in (0..self.n.input.len()).filter(|&k| self.present(k)) {
            any |= self.get(k)?.act;
        }
        Ok(any)
    }
}

/// A node's output as inference computed it.
struct Out {
    shape: Vec<i64>,
    macs: i64,
    act: bool,
    ints: Option<Vec<Option<i64>>>,
    /// The shapes of outputs 1, 2, ... where they differ from output 0's (a `Split`); empty
    /// when every output has `shape` (a `Dropout`'s mask is not read).
    others: Vec<Vec<i64>>,
}

impl Out {
    fn like(input: &Tensor, shape: Vec<i64>, macs: i64) -> Out {
        Out {
            shape,
            macs,
            act: input.act,
            ints: None,
            others: Vec::new(),
        }
    }
}

/// A node's output shape (without the batch dimension for an activation) and its
/// multiply-accumulates, from its inputs; `None` for an op the inference does not know.
fn node_output(n: &NodeProto, x: &Inputs<'_>) -> Result<Option<Out>, SliceError> {
    let input_shape = |k: usize| x.shape(k);
    Ok(match n.op_type.as_str() {
        "Conv" => {
            let (shape, macs) = conv_output(n, &x.shape(0)?, &x.shape(1)?)?;
            Some(Out::like(x.get(0)?, shape, macs))
        }
        "MaxPool" | "AveragePool" => Some(Out::like(x.get(0)?, pool_output(n, &x.shape(0)?)?, 0)),
        "GlobalAveragePool" | "GlobalMaxPool" => {
            let s = x.shape(0)?;
            if s.len() != 3 {
                return Err(op_err(n, "only 2-D pooling over NCHW is supported"));
            }
            Some(Out::like(x.get(0)?, vec![s[0], 1, 1], 0))
        }
        "Relu" | "LeakyRelu" | "Sigmoid" | "HardSigmoid" | "HardSwish" | "Clip" | "Dropout"
        | "BatchNormalization" | "Softmax" | "Tanh" => Some(Out::like(x.get(0)?, x.shape(0)?, 0)),
        "Add" | "Sub" | "Mul" | "Div" if !x.any_act()? && x.all_ints_known()? => int_value(n, x)?,
        "Add" | "Sub" | "Mul" | "Div" | "Sum" | "Max" | "Min" => Some(broadcast_output(n, x)?),
        "Shape" => Some(shape_value(n, x.get(0)?)),
        "ReduceMean" => Some(reduce_mean_output(n, x)?),
        "Gather" | "Unsqueeze" | "Squeeze" | "Concat" | "Identity" | "Slice" | "Reshape"
        | "Cast" | "Transpose"
            if !x.any_act()? =>
        {
            int_value(n, x)?
        }
        "Identity" => Some(Out::like(x.get(0)?, x.shape(0)?, 0)),
        "Cast" => Some(cast_output(n, x.get(0)?)?),
        "Concat" => Some(Out::like(x.get(0)?, concat_output(n, &input_shape)?, 0)),
        "Reshape" => reshape_output(n, x)?,
        "Transpose" => Some(transpose_output(n, x.get(0)?)?),
        "Slice" => Some(slice_output(n, x)?),
        "Split" => Some(split_output(n, x)?),
        "Flatten" => Some(Out::like(x.get(0)?, vec![x.shape(0)?.iter().product()], 0)),
        "Pad" => Some(pad_output(n, x)?),
        "Gemm" => {
            let (shape, macs) = gemm_output(n, &x.shape(0)?, &x.shape(1)?)?;
            Some(Out::like(x.get(0)?, shape, macs))
        }
        _ => None,
    })
}

/// Marks the batch dimension when an activation's shape is broadcast with constants' dims.
const BATCH: i64 = i64::MIN;

/// Dims with the batch dimension shown as `N`.
fn show_dims(dims: &[i64]) -> String {
    let d: Vec<String> = dims
        .iter()
        .map(|&d| {
            if d == BATCH {
                "N".into()
            } else {
                d.to_string()
            }
        })
        .collect();
    format!("[{}]", d.join(", "))
}

/// Elementwise ops broadcast as numpy does: an activation against per-channel constants
/// (`[C, H, W] + [C, 1, 1]`), or two activations (a residual `Add`; squeeze-excitation's
/// `[C, H, W] * [C, 1, 1]`). Broadcasting over the batch dimension is refused.
fn broadcast_output(n: &NodeProto, x: &Inputs<'_>) -> Result<Out, SliceError> {
    let mut full: Option<Vec<i64>> = None;
    let mut act = false;
    for k in (0..n.input.len()).filter(|&k| x.present(k)) {
        let t = x.get(k)?;
        if t.shape.iter().any(|&d| d < 0) {
            return Err(op_err(n, format!("input {k} has shape {:?}", t.shape)));
        }
        let s: Vec<i64> = if t.act {
            std::iter::once(BATCH)
                .chain(t.shape.iter().copied())
                .collect()
        } else {
            t.shape.clone()
        };
        act |= t.act;
        full = Some(match full {
            None => s,
            Some(f) => fold::broadcast(&f, &s).ok_or_else(|| {
                op_err(
                    n,
                    format!(
                        "shapes {} and {} do not broadcast",
                        show_dims(&f),
                        show_dims(&s)
                    ),
                )
            })?,
        });
    }
    let full = full.ok_or_else(|| op_err(n, "no inputs"))?;
    let shape = if act {
        if full.first() != Some(&BATCH) {
            return Err(op_err(
                n,
                format!(
                    "broadcasts an activation to {}, across its batch dimension N",
                    show_dims(&full)
                ),
            ));
        }
        full[1..].to_vec()
    } else {
        full
    };
    Ok(Out {
        shape,
        macs: 0,
        act,
        ints: None,
        others: Vec::new(),
    })
}

/// `Shape`: for an activation, its values are the batch size (unknown) and the known dims.
fn shape_value(n: &NodeProto, t: &Tensor) -> Out {
    let full: Vec<Option<i64>> = if t.act {
        std::iter::once(None)
            .chain(t.shape.iter().map(|&d| Some(d)))
            .collect()
    } else {
        t.shape.iter().map(|&d| Some(d)).collect()
    };
    let r = full.len() as i64;
    let clamp = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
    let start = clamp(attr(n, "start").map_or(0, |a| a.i));
    let end = clamp(attr(n, "end").map_or(r, |a| a.i)).max(start);
    let v = full[start..end].to_vec();
    Out {
        shape: vec![v.len() as i64],
        macs: 0,
        act: false,
        ints: Some(v),
        others: Vec::new(),
    }
}

/// Stands for the unknown batch size while the folder's data movement runs on shape values.
const UNKNOWN: i64 = i64::MIN + 0x5eed;

/// Data movement on integer constants computed from shapes (`Shape -> Gather -> Unsqueeze ->
/// Concat` builds PyTorch's flatten target): evaluated with the folder, the batch size carried
/// through as an unknown. `None` (the listing stops) where a value it needs is unknown.
fn int_value(n: &NodeProto, x: &Inputs<'_>) -> Result<Option<Out>, SliceError> {
    let mut consts: Vec<Option<fold::Const>> = Vec::new();
    for k in 0..n.input.len() {
        if !x.present(k) {
            consts.push(None);
            continue;
        }
        let t = x.get(k)?;
        let Some(ints) = &t.ints else {
            return Ok(None);
        };
        // Only the data may hold the unknown batch size: an unknown position, axis or shape
        // would be read as a number.
        if ints.iter().any(Option::is_none) && (k > 0 && n.op_type != "Concat") {
            return Ok(None);
        }
        if t.shape.iter().product::<i64>() != ints.len() as i64 {
            return Err(op_err(n, format!("input {k} of shape {:?}", t.shape)));
        }
        consts.push(Some(fold::Const {
            dtype: onnx_protobuf::tensor_proto::DataType::INT64,
            dims: t.shape.clone(),
            data: fold::Data::Int(ints.iter().map(|v| v.unwrap_or(UNKNOWN)).collect()),
        }));
    }
    if n.op_type == "Cast" && int(n, "to", 0) != onnx_protobuf::tensor_proto::DataType::INT64 as i64
    {
        return Ok(None);
    }
    let refs: Vec<Option<&fold::Const>> = consts.iter().map(Option::as_ref).collect();
    let Some(c) = fold::eval(n, &refs).map_err(|e| op_err(n, e))? else {
        return Ok(None);
    };
    let ints = c
        .ints()
        .map(|v| v.iter().map(|&i| (i != UNKNOWN).then_some(i)).collect());
    Ok(Some(Out {
        shape: c.dims,
        macs: 0,
        act: false,
        ints,
        others: Vec::new(),
    }))
}

/// `Reshape` of an activation to a target whose first value keeps the batch (the batch size
/// from `Shape`, or `0`), or is `-1` while the rest holds one image's elements: PyTorch's
/// `x.view(x.size(0), -1)` and `x.view(-1, k)`. `None` (the listing stops) for a target the
/// inference cannot read or that fixes the batch size.
fn reshape_output(n: &NodeProto, x: &Inputs<'_>) -> Result<Option<Out>, SliceError> {
    let data = x.get(0)?;
    let Some(target) = &x.get(1)?.ints else {
        return Ok(None);
    };
    let allowzero = int(n, "allowzero", 0) != 0;
    let (keeps_batch, rest) = match target.split_first() {
        Some((None, rest)) => (true, rest),
        Some((Some(0), rest)) if !allowzero => (true, rest),
        Some((Some(-1), rest)) => (false, rest),
        _ => return Ok(None),
    };
    let Some(rest) = rest.iter().copied().collect::<Option<Vec<i64>>>() else {
        return Ok(None);
    };
    if !keeps_batch && rest.contains(&-1) {
        return Ok(None);
    }
    // Position j of `rest` is position j + 1 of the target, so its `0` copies `data.shape[j]`.
    let shape = fold::reshape_dims(&data.shape, &rest, allowzero).map_err(|e| {
        if keeps_batch {
            op_err(n, e)
        } else {
            op_err(
                n,
                format!("{e}: the target's -1 would not be the batch size"),
            )
        }
    })?;
    Ok(Some(Out::like(data, shape, 0)))
}

/// `Pad` of an activation's spatial axes, with pads from a constant input (opset 11 on) or the
/// `pads` attribute (before), and the optional `axes` input of opset 18. Padding the batch or
/// channel axis is refused.
fn pad_output(n: &NodeProto, x: &Inputs<'_>) -> Result<Out, SliceError> {
    let data = x.get(0)?;
    if !data.act || data.shape.len() != 3 {
        return Err(op_err(n, "only padding of NCHW activations is supported"));
    }
    let mode = attr(n, "mode")
        .map(|a| String::from_utf8_lossy(&a.s).into_owned())
        .unwrap_or_else(|| "constant".into());
    if !["constant", "reflect", "edge"].contains(&mode.as_str()) {
        return Err(op_err(n, format!("padding mode `{mode}` is not supported")));
    }
    let pads = if x.present(1) {
        constant_ints(n, x, 1, "pads")?
    } else {
        ints(n, "pads")
            .or_else(|| ints(n, "paddings"))
            .ok_or_else(|| op_err(n, "no pads"))?
    };
    let axes = pad_axes(n, x)?;
    let (begin, end) = spatial_pads(n, &pads, &axes)?;
    let h = data.shape[1] + begin[2] + end[2];
    let w = data.shape[2] + begin[3] + end[3];
    if h < 1 || w < 1 {
        return Err(op_err(
            n,
            format!(
                "pads {pads:?} leave a {h}x{w} map of a {:?} input",
                data.shape
            ),
        ));
    }
    Ok(Out::like(data, vec![data.shape[0], h, w], 0))
}

/// The values of input `k` (the node's `what`), which must be a constant the inference read.
fn constant_ints(
    n: &NodeProto,
    x: &Inputs<'_>,
    k: usize,
    what: &str,
) -> Result<Vec<i64>, SliceError> {
    x.get(k)?
        .ints
        .as_ref()
        .and_then(|v| v.iter().copied().collect::<Option<Vec<i64>>>())
        .ok_or_else(|| {
            op_err(
                n,
                format!(
                    "the {what} `{}` are not a constant the inference can read",
                    n.input[k]
                ),
            )
        })
}

/// The NCHW axes a `Pad` node's pads apply to: its `axes` input, else all four.
fn pad_axes(n: &NodeProto, x: &Inputs<'_>) -> Result<Vec<usize>, SliceError> {
    if !x.present(3) {
        return Ok((0..4).collect());
    }
    constant_ints(n, x, 3, "axes")?
        .iter()
        .map(|&a| {
            let v = if a < 0 { a + 4 } else { a };
            usize::try_from(v)
                .ok()
                .filter(|&v| v < 4)
                .ok_or_else(|| op_err(n, format!("axis {a} of a rank-4 input")))
        })
        .collect()
}

/// The padding at the start and at the end of each NCHW axis, from `pads` (all starts, then all
/// ends) over `axes`; refused unless only the two spatial axes are padded, within bounds.
fn spatial_pads(
    n: &NodeProto,
    pads: &[i64],
    axes: &[usize],
) -> Result<([i64; 4], [i64; 4]), SliceError> {
    if pads.len() != 2 * axes.len() {
        return Err(op_err(
            n,
            format!("{} pads for {} axes", pads.len(), axes.len()),
        ));
    }
    if let Some(bad) = pads.iter().find(|p| p.abs() > MAX_WINDOW) {
        return Err(op_err(
            n,
            format!("a pad of {bad}, expected -{MAX_WINDOW} to {MAX_WINDOW}"),
        ));
    }
    let (mut begin, mut end) = ([0i64; 4], [0i64; 4]);
    for (i, &a) in axes.iter().enumerate() {
        begin[a] += pads[i];
        end[a] += pads[i + axes.len()];
    }
    if begin[..2].iter().chain(&end[..2]).any(|&p| p != 0) {
        return Err(op_err(
            n,
            format!(
                "pads {pads:?} pad the batch or channel axis; only the two spatial axes may be \
                 padded"
            ),
        ));
    }
    Ok((begin, end))
}

/// A 2-D convolution's output shape and multiply-accumulates, from its input `x` (CHW) and
/// weights `w` (OIHW).
fn conv_output(n: &NodeProto, x: &[i64], w: &[i64]) -> Result<(Vec<i64>, i64), SliceError> {
    if x.len() != 3 || w.len() != 4 {
        return Err(op_err(n, "only 2-D convolutions over NCHW are supported"));
    }
    if w.iter().any(|&v| v < 1) {
        return Err(op_err(n, format!("weights of shape {w:?}")));
    }
    let group = int(n, "group", 1);
    if group < 1 {
        return Err(op_err(n, format!("group {group}")));
    }
    let [wh, ww] = window_attrs(n, Some([w[2], w[3]]))?;
    if w[1].saturating_mul(group) != x[0] {
        return Err(op_err(
            n,
            format!(
                "weights expect {} input channels, got {}",
                w[1] * group,
                x[0]
            ),
        ));
    }
    // Grouped and depthwise convolutions: each output channel reads `w[1]` = C_in / group
    // input channels.
    if w[0] % group != 0 {
        return Err(op_err(
            n,
            format!("{} output channels do not split into {group} groups", w[0]),
        ));
    }
    let h = window_out(n, x[1], wh, false)?;
    let wd = window_out(n, x[2], ww, false)?;
    let macs = w[0] * h * wd * w[1] * wh[0] * ww[0];
    Ok((vec![w[0], h, wd], macs))
}

/// A 2-D max or average pool's output shape.
fn pool_output(n: &NodeProto, x: &[i64]) -> Result<Vec<i64>, SliceError> {
    if x.len() != 3 {
        return Err(op_err(n, "only 2-D pooling over NCHW is supported"));
    }
    let [wh, ww] = window_attrs(n, None)?;
    let ceil = int(n, "ceil_mode", 0) == 1;
    let h = window_out(n, x[1], wh, ceil)?;
    let w = window_out(n, x[2], ww, ceil)?;
    Ok(vec![x[0], h, w])
}

/// A concatenation over channels: the sum of the inputs' channels at their common spatial size.
fn concat_output(
    n: &NodeProto,
    input_shape: &dyn Fn(usize) -> Result<Vec<i64>, SliceError>,
) -> Result<Vec<i64>, SliceError> {
    let axis = int(n, "axis", 1);
    let first = input_shape(0)?;
    // Batch is dim 0 in ONNX; our shapes drop it, so axis 1 is index 0.
    let rank = first.len() as i64 + 1;
    let axis = if axis < 0 { axis + rank } else { axis };
    if axis != 1 {
        return Err(op_err(
            n,
            format!("only concatenation over channels (axis 1) is supported, got axis {axis}"),
        ));
    }
    let mut c = 0;
    for k in 0..n.input.len() {
        let s = input_shape(k)?;
        // Input 0 is `first`, so this checks it too before it is sliced.
        if s.len() != 3 {
            return Err(op_err(n, "only NCHW inputs can be concatenated"));
        }
        if s[1..] != first[1..] {
            return Err(op_err(n, "inputs differ in spatial size"));
        }
        c += s[0];
    }
    let mut out = first.clone();
    out[0] = c;
    Ok(out)
}

/// A fully connected layer's output shape and multiply-accumulates, from its input `a` and
/// weights `b`.
fn gemm_output(n: &NodeProto, a: &[i64], b: &[i64]) -> Result<(Vec<i64>, i64), SliceError> {
    if b.len() != 2 {
        return Err(op_err(n, format!("weights of shape {b:?}, expected 2-D")));
    }
    let trans_b = int(n, "transB", 0) == 1;
    let (k, m) = if trans_b { (b[1], b[0]) } else { (b[0], b[1]) };
    if a.iter().product::<i64>() != k {
        return Err(op_err(
            n,
            format!(
                "input has {} features, weights expect {k}",
                a.iter().product::<i64>()
            ),
        ));
    }
    Ok((vec![m], k * m))
}

/// Every analysed node's first output that is a CHW activation, with the cumulative cost of
/// computing it.
fn cut_points(graph: &onnx_protobuf::GraphProto, inferred: &Inferred<'_>) -> Vec<CutPoint> {
    let analysed = &graph.node[..inferred.analysed];
    let layers = friendly_names(analysed);
    let mut points = Vec::new();
    // Every output of a `Split` is a cut point (as each `Slice` of the TorchScript form is);
    // of other ops only the first output (a `Dropout` mask or pool indices are not features).
    let outputs = analysed.iter().flat_map(|n| {
        let count = if n.op_type == "Split" {
            n.output.len()
        } else {
            1
        };
        n.output.iter().take(count).map(move |o| (n, o))
    });
    for (n, name) in outputs {
        let t = &inferred.tensors[name];
        if !t.act || t.shape.len() != 3 {
            continue;
        }
        let shape = &t.shape;
        // Cumulative cost over the ancestors of this tensor, not a graph-order prefix, so
        // branches that the cut does not need are not charged.
        let needed = ancestors(&graph.node, &inferred.producer, name);
        let (mut macs, mut params, mut bytes) = (0, 0, 0);
        for &j in &needed {
            macs += inferred.costs[j].macs;
            params += inferred.costs[j].params;
            bytes += inferred.costs[j].bytes;
        }
        points.push(CutPoint {
            index: points.len(),
            name: name.clone(),
            layer: layers.get(name.as_str()).cloned(),
            op: n.op_type.clone(),
            channels: shape[0],
            height: shape[1],
            width: shape[2],
            macs,
            params,
            weight_bytes: bytes,
        });
    }
    points
}

/// Indices of the nodes needed to compute `tensor`.
pub fn ancestors(
    nodes: &[NodeProto],
    producer: &HashMap<&str, usize>,
    tensor: &str,
) -> HashSet<usize> {
    let mut needed = HashSet::new();
    let mut stack = vec![tensor.to_string()];
    while let Some(t) = stack.pop() {
        if let Some(&i) = producer.get(t.as_str())
            && needed.insert(i)
        {
            stack.extend(nodes[i].input.iter().filter(|s| !s.is_empty()).cloned());
        }
    }
    needed
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

impl Analysis {
    /// Where the listing ends when inference stopped early: the last cut point before the
    /// node it stopped at.
    pub fn last_before_stop(&self) -> String {
        match self.points.last() {
            Some(p) if p.layer.is_some() => {
                format!(
                    "the last cut point before it is `{}` (`{}`)",
                    p.label(),
                    p.name
                )
            }
            Some(p) => format!("the last cut point before it is `{}`", p.name),
            None => "there is no cut point before it".into(),
        }
    }

    /// Finds a cut point by friendly layer name, else by tensor name (a dynamo export's tensor
    /// `relu` is not the block whose name happens to be `relu`); an unknown name gets the
    /// three nearest names in the error.
    pub fn find(&self, name: &str) -> Result<&CutPoint, SliceError> {
        let by_layer = self
            .points
            .iter()
            .find(|p| p.layer.as_deref() == Some(name));
        if let Some(p) = by_layer.or_else(|| self.points.iter().find(|p| p.name == name)) {
            return Ok(p);
        }
        let mut names: Vec<&str> = self
            .points
            .iter()
            .flat_map(|p| p.layer.as_deref().into_iter().chain([p.name.as_str()]))
            .collect();
        names.sort_by_key(|n| (levenshtein(name, n), *n));
        names.dedup();
        let mut suggestions = names
            .iter()
            .take(3)
            .map(|s| format!("`{s}`"))
            .collect::<Vec<_>>()
            .join(", ");
        if let Some((node, op)) = &self.stopped_at {
            suggestions.push_str(&format!(
                " (cut points after node `{node}` are not listed: op {op} is not supported; {})",
                self.last_before_stop()
            ));
        }
        Err(SliceError::UnknownCut {
            name: name.to_string(),
            suggestions,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(index: usize, name: &str, layer: Option<&str>) -> CutPoint {
        CutPoint {
            index,
            name: name.into(),
            layer: layer.map(str::to_string),
            op: "Relu".into(),
            channels: 1,
            height: 1,
            width: 1,
            macs: 0,
            params: 0,
            weight_bytes: 0,
        }
    }

    #[test]
    fn a_layer_name_wins_over_a_tensor_of_that_name() {
        let a = Analysis {
            input_size: 8,
            points: vec![point(0, "relu", None), point(1, "relu_7", Some("relu"))],
            stopped_at: None,
            shape_values: ShapeValues::new(),
        };
        assert_eq!(a.find("relu").unwrap().name, "relu_7");
        assert_eq!(a.find("relu_7").unwrap().index, 1);
    }

    #[test]
    fn levenshtein_basics() {
        assert_eq!(levenshtein("fire3", "fire3"), 0);
        assert_eq!(levenshtein("fier3", "fire3"), 2);
        assert_eq!(levenshtein("", "abc"), 3);
    }
}
