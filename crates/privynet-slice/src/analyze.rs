//! Shape and cost inference over a CNN graph for a given square input size: every candidate cut
//! point with its (C, H, W) and the cumulative local cost of computing it (multiply-accumulates,
//! parameters, weight bytes). An op it does not know stops the inference with an error naming
//! the op, rather than a wrong number.

use std::collections::{HashMap, HashSet};

use onnx_protobuf::{AttributeProto, NodeProto};

use crate::SliceError;
use crate::model::Model;

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
}

fn attr<'a>(n: &'a NodeProto, name: &str) -> Option<&'a AttributeProto> {
    n.attribute.iter().find(|a| a.name == name)
}
fn ints(n: &NodeProto, name: &str) -> Option<Vec<i64>> {
    attr(n, name).map(|a| a.ints.clone())
}
fn int(n: &NodeProto, name: &str, default: i64) -> i64 {
    attr(n, name).map_or(default, |a| a.i)
}
fn node_label(n: &NodeProto) -> String {
    if n.name.is_empty() {
        n.output.first().cloned().unwrap_or_default()
    } else {
        n.name.clone()
    }
}

fn op_err(n: &NodeProto, message: impl Into<String>) -> SliceError {
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
fn window_attrs(n: &NodeProto, kernel: Option<[i64; 2]>) -> Result<[[i64; 5]; 2], SliceError> {
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

/// What shape inference learned about a graph's prefix: every tensor's shape (without the batch
/// dimension), which node produced it, each node's own cost, and where inference stopped.
struct Inferred<'g> {
    shapes: HashMap<String, Vec<i64>>,
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
    Ok(Analysis {
        input_size,
        points,
        stopped_at: inferred.stopped_at,
    })
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
    let mut shapes: HashMap<String, Vec<i64>> = HashMap::new();
    let channels_in = graph
        .input
        .iter()
        .find(|i| i.name == model.input)
        .and_then(crate::model::dims)
        .and_then(|d| d.get(1).copied().flatten())
        .unwrap_or(3);
    shapes.insert(
        model.input.clone(),
        vec![channels_in, input_size, input_size],
    );
    for (name, t) in &inits {
        shapes.insert((*name).to_string(), t.dims.clone());
    }
    let mut inferred = Inferred {
        shapes,
        producer: HashMap::new(),
        costs: Vec::with_capacity(graph.node.len()),
        analysed: 0,
        stopped_at: None,
    };
    for (i, n) in graph.node.iter().enumerate() {
        let input_shape = |k: usize| -> Result<Vec<i64>, SliceError> {
            let name = n
                .input
                .get(k)
                .ok_or_else(|| op_err(n, format!("missing input {k}")))?;
            inferred
                .shapes
                .get(name)
                .cloned()
                .ok_or_else(|| op_err(n, format!("the shape of input `{name}` is unknown")))
        };
        let Some((out, macs)) = node_output(n, &input_shape)? else {
            inferred.stopped_at = Some((node_label(n), n.op_type.clone()));
            break;
        };
        let mut cost = NodeCost {
            macs,
            ..NodeCost::default()
        };
        for inp in &n.input {
            if let Some(t) = inits.get(inp.as_str()) {
                cost.params += t.dims.iter().product::<i64>();
                cost.bytes += *model.stored_bytes.get(inp).unwrap_or(&0) as i64;
            }
        }
        inferred.costs.push(cost);
        for o in &n.output {
            inferred.shapes.insert(o.clone(), out.clone());
            inferred.producer.insert(o.as_str(), i);
        }
        // Dropout's optional mask output is not an activation; only the first output counts.
        inferred.analysed = i + 1;
    }
    Ok(inferred)
}

/// A node's output shape (without the batch dimension) and its multiply-accumulates, from the
/// shapes of its inputs; `None` for an op the inference does not know.
fn node_output(
    n: &NodeProto,
    input_shape: &dyn Fn(usize) -> Result<Vec<i64>, SliceError>,
) -> Result<Option<(Vec<i64>, i64)>, SliceError> {
    let no_macs = |shape: Vec<i64>| Some((shape, 0));
    Ok(match n.op_type.as_str() {
        "Conv" => Some(conv_output(n, &input_shape(0)?, &input_shape(1)?)?),
        "MaxPool" | "AveragePool" => no_macs(pool_output(n, &input_shape(0)?)?),
        "GlobalAveragePool" | "GlobalMaxPool" => {
            let x = input_shape(0)?;
            if x.len() != 3 {
                return Err(op_err(n, "only 2-D pooling over NCHW is supported"));
            }
            no_macs(vec![x[0], 1, 1])
        }
        "Relu" | "LeakyRelu" | "Sigmoid" | "Clip" | "Dropout" | "Identity"
        | "BatchNormalization" | "Softmax" | "Tanh" => no_macs(input_shape(0)?),
        "Add" | "Sum" | "Mul" | "Max" => {
            // Activations broadcast against per-channel constants: the larger shape wins.
            let mut best = Vec::new();
            for k in 0..n.input.len() {
                let s = input_shape(k)?;
                if s.len() > best.len() {
                    best = s;
                }
            }
            no_macs(best)
        }
        "Concat" => no_macs(concat_output(n, input_shape)?),
        "Flatten" => no_macs(vec![input_shape(0)?.iter().product()]),
        "Gemm" => Some(gemm_output(n, &input_shape(0)?, &input_shape(1)?)?),
        _ => None,
    })
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
    for n in analysed {
        let Some(name) = n.output.first() else {
            continue;
        };
        let shape = &inferred.shapes[name];
        if shape.len() != 3 {
            continue;
        }
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

/// Friendly layer names: the stem of a tensor name (the part before the first `/`, else the
/// name without a trailing `_<digits>`), given to the last tensor of each stem in graph order.
/// SqueezeNet's `conv1_1`, `conv1_2` become `conv1` at `conv1_2` (after the ReLU), and
/// `fire2/...` becomes `fire2` at `fire2/concat_1`.
pub fn friendly_names(nodes: &[NodeProto]) -> HashMap<&str, String> {
    fn stem(name: &str) -> &str {
        if let Some((head, _)) = name.split_once('/') {
            return head;
        }
        match name.rsplit_once('_') {
            Some((head, tail)) if !tail.is_empty() && tail.bytes().all(|b| b.is_ascii_digit()) => {
                head
            }
            _ => name,
        }
    }
    let mut last: HashMap<&str, &str> = HashMap::new();
    for n in nodes {
        if let Some(o) = n.output.first() {
            last.insert(stem(o), o.as_str());
        }
    }
    last.into_iter()
        .filter(|(s, o)| s != o)
        .map(|(s, o)| (o, s.to_string()))
        .collect()
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
    /// Finds a cut point by friendly layer name or tensor name; an unknown name gets the three
    /// nearest names in the error.
    pub fn find(&self, name: &str) -> Result<&CutPoint, SliceError> {
        if let Some(p) = self
            .points
            .iter()
            .find(|p| p.layer.as_deref() == Some(name) || p.name == name)
        {
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
                " (cut points after node `{node}` are not listed: op {op} is not supported)"
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

    #[test]
    fn levenshtein_basics() {
        assert_eq!(levenshtein("fire3", "fire3"), 0);
        assert_eq!(levenshtein("fier3", "fire3"), 2);
        assert_eq!(levenshtein("", "abc"), 3);
    }
}
