//! Constant folding, run once when a model is loaded: every node whose inputs are all constants
//! (initializers, `Constant` nodes, or outputs folded before it) and whose op the folder knows
//! is evaluated, and the folded values that the rest of the graph reads become initializers.
//!
//! PyTorch computes constants in the graph: a `Conv2dStaticSamePadding` exports its padding as
//! `Constant -> ConstantOfShape -> Concat -> Reshape -> Slice -> Transpose -> Reshape -> Cast`
//! into a `Pad`, and clip bounds, reshape targets and the like as `Constant` nodes. After
//! folding, shape inference and the local network see plain initializers. Nothing here depends
//! on the input size: the `Shape` of an activation is left to the shape inference.
//!
//! Known ops: `Constant`, `ConstantOfShape`, `Identity`, `Cast`, `Reshape`, `Transpose`,
//! `Concat`, `Slice`, `Unsqueeze`, `Squeeze`, `Gather`, `Shape` (of a constant) and elementwise
//! `Add`, `Sub`, `Mul`, `Div`. Any other op, and any value the folder cannot represent (strings,
//! an integer overflow, a cast of NaN to an integer), is left in the graph as it is. A graph with
//! nothing to fold is not touched. Constants are bounded: reading or making one of more than
//! [`MAX_ELEMENTS`] elements is an error naming the node, not an allocation without limit.

use std::collections::{HashMap, HashSet};

use onnx_protobuf::tensor_proto::{DataLocation, DataType};
use onnx_protobuf::{AttributeProto, GraphProto, ModelProto, NodeProto, TensorProto};
use protobuf::Enum;

use crate::SliceError;

/// The most elements a constant that the folder reads or makes may hold (16 Mi: 128 MiB as
/// f64 or i64); far beyond any shape, padding or bound a network computes.
pub const MAX_ELEMENTS: usize = 1 << 24;

/// The ops the folder evaluates.
const FOLDABLE: &[&str] = &[
    "ConstantOfShape",
    "Identity",
    "Cast",
    "Reshape",
    "Transpose",
    "Concat",
    "Slice",
    "Unsqueeze",
    "Squeeze",
    "Gather",
    "Shape",
    "Add",
    "Sub",
    "Mul",
    "Div",
];

/// A constant's values: floating-point types as f64 (exact for fp16, bf16, fp32 and fp64; an
/// elementwise op computed in f64 and rounded to fp32 gives the fp32 result), integer and
/// boolean types as i64.
#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    Float(Vec<f64>),
    Int(Vec<i64>),
}

impl Data {
    fn len(&self) -> usize {
        match self {
            Data::Float(v) => v.len(),
            Data::Int(v) => v.len(),
        }
    }

    /// The elements at `idx`, in that order.
    fn pick(&self, idx: &[usize]) -> Data {
        match self {
            Data::Float(v) => Data::Float(idx.iter().map(|&i| v[i]).collect()),
            Data::Int(v) => Data::Int(idx.iter().map(|&i| v[i]).collect()),
        }
    }
}

/// A decoded constant tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Const {
    pub dtype: DataType,
    pub dims: Vec<i64>,
    pub data: Data,
}

impl Const {
    /// The values of an integer tensor.
    pub fn ints(&self) -> Option<&[i64]> {
        match &self.data {
            Data::Int(v) => Some(v),
            Data::Float(_) => None,
        }
    }

    fn with(&self, dims: Vec<i64>, data: Data) -> Const {
        Const {
            dtype: self.dtype,
            dims,
            data,
        }
    }
}

fn is_float(dt: DataType) -> bool {
    matches!(
        dt,
        DataType::FLOAT | DataType::FLOAT16 | DataType::BFLOAT16 | DataType::DOUBLE
    )
}

fn is_int(dt: DataType) -> bool {
    matches!(
        dt,
        DataType::INT8
            | DataType::INT16
            | DataType::INT32
            | DataType::INT64
            | DataType::UINT8
            | DataType::UINT16
            | DataType::UINT32
            | DataType::UINT64
            | DataType::BOOL
    )
}

/// Whether an ONNX data type is a floating-point type (a weight's type).
pub fn is_float_type(data_type: i32) -> bool {
    DataType::from_i32(data_type).is_some_and(is_float)
}

/// The element count of `dims`, refused above [`MAX_ELEMENTS`].
fn element_count(dims: &[i64]) -> Result<usize, String> {
    let mut n: usize = 1;
    for &d in dims {
        let d = usize::try_from(d).map_err(|_| format!("a dimension of {d} in {dims:?}"))?;
        n = n.checked_mul(d).ok_or_else(|| too_big(dims))?;
    }
    if n > MAX_ELEMENTS {
        return Err(too_big(dims));
    }
    Ok(n)
}

fn too_big(dims: &[i64]) -> String {
    format!(
        "a constant of shape {dims:?} is more than the folder's limit of {MAX_ELEMENTS} elements"
    )
}

fn raw_values<T, const N: usize>(raw: &[u8], f: impl Fn([u8; N]) -> T) -> Vec<T> {
    raw.chunks_exact(N)
        .map(|c| f(c.try_into().expect("chunks_exact gives N bytes")))
        .collect()
}

/// Decodes a tensor's values. `Ok(None)` for a type the folder does not represent (strings,
/// complex, 8-bit floats) or data stored outside the tensor; an error for a tensor whose data
/// does not match its dims, or one larger than [`MAX_ELEMENTS`].
pub fn decode(t: &TensorProto) -> Result<Option<Const>, String> {
    let Some(dtype) = DataType::from_i32(t.data_type) else {
        return Ok(None);
    };
    if t.data_location.enum_value_or_default() == DataLocation::EXTERNAL
        || !(is_float(dtype) || is_int(dtype))
    {
        return Ok(None);
    }
    let n = element_count(&t.dims).map_err(|e| format!("tensor `{}`: {e}", t.name))?;
    let raw = &t.raw_data;
    let size = crate::proto::elem_bytes(t.data_type) as usize;
    if !raw.is_empty() && raw.len() != n * size {
        return Err(format!(
            "tensor `{}` has {} bytes of data, its dims {:?} need {}",
            t.name,
            raw.len(),
            t.dims,
            n * size
        ));
    }
    let r = !raw.is_empty();
    let data = match dtype {
        DataType::FLOAT if r => Data::Float(raw_values(raw, |b| f64::from(f32::from_le_bytes(b)))),
        DataType::FLOAT => Data::Float(t.float_data.iter().map(|&v| f64::from(v)).collect()),
        DataType::DOUBLE if r => Data::Float(raw_values(raw, f64::from_le_bytes)),
        DataType::DOUBLE => Data::Float(t.double_data.clone()),
        DataType::FLOAT16 if r => {
            Data::Float(raw_values(raw, |b| half::f16::from_le_bytes(b).to_f64()))
        }
        DataType::BFLOAT16 if r => {
            Data::Float(raw_values(raw, |b| half::bf16::from_le_bytes(b).to_f64()))
        }
        DataType::FLOAT16 => Data::Float(
            t.int32_data
                .iter()
                .map(|&v| half::f16::from_bits(v as u16).to_f64())
                .collect(),
        ),
        DataType::BFLOAT16 => Data::Float(
            t.int32_data
                .iter()
                .map(|&v| half::bf16::from_bits(v as u16).to_f64())
                .collect(),
        ),
        DataType::INT64 if r => Data::Int(raw_values(raw, i64::from_le_bytes)),
        DataType::INT64 => Data::Int(t.int64_data.clone()),
        DataType::UINT64 | DataType::UINT32 => {
            let v: Vec<u64> = match (dtype, r) {
                (DataType::UINT64, true) => raw_values(raw, u64::from_le_bytes),
                (_, true) => raw_values(raw, |b| u64::from(u32::from_le_bytes(b))),
                (_, false) => t.uint64_data.clone(),
            };
            match v.iter().map(|&x| i64::try_from(x)).collect() {
                Ok(v) => Data::Int(v),
                Err(_) => return Ok(None),
            }
        }
        _ if r => Data::Int(match dtype {
            DataType::INT32 => raw_values(raw, |b| i64::from(i32::from_le_bytes(b))),
            DataType::INT16 => raw_values(raw, |b| i64::from(i16::from_le_bytes(b))),
            DataType::UINT16 => raw_values(raw, |b| i64::from(u16::from_le_bytes(b))),
            DataType::INT8 => raw_values(raw, |b: [u8; 1]| i64::from(b[0] as i8)),
            _ => raw_values(raw, |b: [u8; 1]| i64::from(b[0])),
        }),
        _ => Data::Int(
            t.int32_data
                .iter()
                .map(|&v| wrap_int(dtype, i64::from(v)))
                .collect(),
        ),
    };
    if data.len() != n {
        return Err(format!(
            "tensor `{}` holds {} values, its dims {:?} say {n}",
            t.name,
            data.len(),
            t.dims
        ));
    }
    Ok(Some(Const {
        dtype,
        dims: t.dims.clone(),
        data,
    }))
}

/// A constant as an initializer named `name`, its values little-endian in `raw_data`.
pub fn encode(c: &Const, name: &str) -> TensorProto {
    let mut t = TensorProto::new();
    t.name = name.to_string();
    t.data_type = c.dtype as i32;
    t.dims = c.dims.clone();
    t.raw_data = match &c.data {
        Data::Float(v) => match c.dtype {
            DataType::DOUBLE => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            DataType::FLOAT16 => v
                .iter()
                .flat_map(|&x| half::f16::from_f64(x).to_le_bytes())
                .collect(),
            DataType::BFLOAT16 => v
                .iter()
                .flat_map(|&x| half::bf16::from_f64(x).to_le_bytes())
                .collect(),
            _ => v.iter().flat_map(|&x| (x as f32).to_le_bytes()).collect(),
        },
        Data::Int(v) => match c.dtype {
            DataType::INT32 | DataType::UINT32 => {
                v.iter().flat_map(|&x| (x as i32).to_le_bytes()).collect()
            }
            DataType::INT16 | DataType::UINT16 => {
                v.iter().flat_map(|&x| (x as i16).to_le_bytes()).collect()
            }
            DataType::INT8 | DataType::UINT8 | DataType::BOOL => {
                v.iter().map(|&x| x as u8).collect()
            }
            _ => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        },
    };
    t
}

/// A float value rounded to the precision of `dt`.
fn round_float(dt: DataType, v: f64) -> f64 {
    match dt {
        DataType::FLOAT => f64::from(v as f32),
        DataType::FLOAT16 => half::f16::from_f64(v).to_f64(),
        DataType::BFLOAT16 => half::bf16::from_f64(v).to_f64(),
        _ => v,
    }
}

/// An integer value wrapped to the range of `dt`, as a C cast does (ONNX Runtime's `Cast`).
fn wrap_int(dt: DataType, v: i64) -> i64 {
    match dt {
        DataType::INT32 => i64::from(v as i32),
        DataType::INT16 => i64::from(v as i16),
        DataType::INT8 => i64::from(v as i8),
        DataType::UINT32 => i64::from(v as u32),
        DataType::UINT16 => i64::from(v as u16),
        DataType::UINT8 => i64::from(v as u8),
        DataType::BOOL => i64::from(v != 0),
        _ => v,
    }
}

/// Row-major strides of `dims`.
fn strides(dims: &[usize]) -> Vec<usize> {
    let mut s = vec![1; dims.len()];
    for i in (0..dims.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * dims[i + 1];
    }
    s
}

/// The source element of every output element, in row-major output order: `src` maps an output
/// multi-index to a flat source index.
fn gather_indices(out: &[usize], mut src: impl FnMut(&[usize]) -> usize) -> Vec<usize> {
    let n: usize = out.iter().product();
    let mut idx = vec![0usize; out.len()];
    let mut result = Vec::with_capacity(n);
    for _ in 0..n {
        result.push(src(&idx));
        for a in (0..out.len()).rev() {
            idx[a] += 1;
            if idx[a] < out[a] {
                break;
            }
            idx[a] = 0;
        }
    }
    result
}

fn udims(dims: &[i64]) -> Vec<usize> {
    dims.iter().map(|&d| d as usize).collect()
}

/// An axis, possibly negative, normalised for a tensor of `rank`.
fn axis(a: i64, rank: usize) -> Result<usize, String> {
    let r = rank as i64;
    let v = if a < 0 { a + r } else { a };
    if (0..r).contains(&v) {
        Ok(v as usize)
    } else {
        Err(format!("axis {a} is out of range for rank {rank}"))
    }
}

fn attr<'a>(n: &'a NodeProto, name: &str) -> Option<&'a AttributeProto> {
    n.attribute.iter().find(|a| a.name == name)
}

/// The tensor a `Constant` node holds; `None` for a form the folder leaves alone (strings, a
/// sparse tensor, data stored outside).
fn constant_tensor(n: &NodeProto) -> Option<TensorProto> {
    let a = n.attribute.first()?;
    let mut t = TensorProto::new();
    match a.name.as_str() {
        "value" => {
            t = a.t.as_ref()?.clone();
            if t.data_location.enum_value_or_default() == DataLocation::EXTERNAL {
                return None;
            }
        }
        "value_float" => {
            t.data_type = DataType::FLOAT as i32;
            t.raw_data = a.f.to_le_bytes().to_vec();
        }
        "value_floats" => {
            t.data_type = DataType::FLOAT as i32;
            t.dims = vec![a.floats.len() as i64];
            t.raw_data = a.floats.iter().flat_map(|v| v.to_le_bytes()).collect();
        }
        "value_int" => {
            t.data_type = DataType::INT64 as i32;
            t.raw_data = a.i.to_le_bytes().to_vec();
        }
        "value_ints" => {
            t.data_type = DataType::INT64 as i32;
            t.dims = vec![a.ints.len() as i64];
            t.raw_data = a.ints.iter().flat_map(|v| v.to_le_bytes()).collect();
        }
        _ => return None,
    }
    Some(t)
}

/// The integer values of an optional input, else of an ints attribute.
fn ints_of(
    n: &NodeProto,
    inputs: &[Option<&Const>],
    k: usize,
    name: &str,
) -> Result<Option<Vec<i64>>, String> {
    match inputs.get(k).copied().flatten() {
        Some(c) => c
            .ints()
            .map(|v| Some(v.to_vec()))
            .ok_or_else(|| format!("input {k} (`{name}`) is not an integer tensor")),
        None => Ok(attr(n, name).map(|a| a.ints.clone())),
    }
}

fn input<'a>(inputs: &[Option<&'a Const>], k: usize) -> Result<&'a Const, String> {
    inputs
        .get(k)
        .copied()
        .flatten()
        .ok_or_else(|| format!("missing input {k}"))
}

/// Evaluates one node on constant inputs (absent optional inputs are `None`). `Ok(None)`: the
/// folder leaves this node in the graph.
pub(crate) fn eval(n: &NodeProto, inputs: &[Option<&Const>]) -> Result<Option<Const>, String> {
    Ok(match n.op_type.as_str() {
        "Identity" => Some(input(inputs, 0)?.clone()),
        "Cast" => eval_cast(n, inputs),
        "ConstantOfShape" => eval_constant_of_shape(n, inputs)?,
        "Reshape" => Some(eval_reshape(n, inputs)?),
        "Transpose" => Some(eval_transpose(n, inputs)?),
        "Concat" => concat(inputs, int_attr_or(n, "axis", 0))?,
        "Slice" => Some(slice(n, inputs)?),
        "Unsqueeze" => Some(eval_unsqueeze(n, inputs)?),
        "Squeeze" => Some(eval_squeeze(n, inputs)?),
        "Gather" => Some(gather(inputs, int_attr_or(n, "axis", 0))?),
        "Add" | "Sub" | "Mul" | "Div" => arithmetic(&n.op_type, inputs)?,
        _ => None,
    })
}

/// The int attribute `name` of `n`, else `default`.
fn int_attr_or(n: &NodeProto, name: &str, default: i64) -> i64 {
    attr(n, name).map_or(default, |a| a.i)
}

/// `Cast` to the type of the `to` attribute; `None` (left in the graph) for an unknown type, a
/// missing input, or a value the target type cannot take.
fn eval_cast(n: &NodeProto, inputs: &[Option<&Const>]) -> Option<Const> {
    let to = i32::try_from(int_attr_or(n, "to", 0))
        .ok()
        .and_then(DataType::from_i32);
    to.and_then(|to| cast(input(inputs, 0).ok()?, to))
}

/// `ConstantOfShape`: the one-element `value` attribute (else a float 0) repeated over the
/// shape that input 0 holds; `None` for a `value` the folder cannot decode.
fn eval_constant_of_shape(
    n: &NodeProto,
    inputs: &[Option<&Const>],
) -> Result<Option<Const>, String> {
    let shape = input(inputs, 0)?
        .ints()
        .ok_or("the shape is not an integer tensor")?
        .to_vec();
    let count = element_count(&shape)?;
    let value = match attr(n, "value").and_then(|a| a.t.as_ref()) {
        Some(t) => match decode(t)? {
            Some(c) if c.data.len() == 1 => c,
            Some(_) => return Err("`value` must hold one element".into()),
            None => return Ok(None),
        },
        None => Const {
            dtype: DataType::FLOAT,
            dims: vec![],
            data: Data::Float(vec![0.0]),
        },
    };
    let data = value.data.pick(&vec![0; count]);
    Ok(Some(value.with(shape, data)))
}

/// `Reshape` of input 0 to the target shape of input 1: the values stay, the dims change.
fn eval_reshape(n: &NodeProto, inputs: &[Option<&Const>]) -> Result<Const, String> {
    let x = input(inputs, 0)?;
    let target = input(inputs, 1)?
        .ints()
        .ok_or("the shape is not an integer tensor")?;
    let dims = reshape_dims(&x.dims, target, int_attr_or(n, "allowzero", 0) != 0)?;
    Ok(x.with(dims, x.data.clone()))
}

/// `Transpose` by the `perm` attribute, which defaults to reversing the axes.
fn eval_transpose(n: &NodeProto, inputs: &[Option<&Const>]) -> Result<Const, String> {
    let x = input(inputs, 0)?;
    let r = x.dims.len();
    let perm: Vec<usize> = match attr(n, "perm") {
        Some(a) => a
            .ints
            .iter()
            .map(|&p| usize::try_from(p).ok().filter(|&p| p < r))
            .collect::<Option<_>>()
            .ok_or_else(|| format!("perm {:?} for rank {r}", a.ints))?,
        None => (0..r).rev().collect(),
    };
    let mut seen = perm.clone();
    seen.sort_unstable();
    if seen != (0..r).collect::<Vec<_>>() {
        return Err(format!("perm {perm:?} is not a permutation of 0..{r}"));
    }
    let d = udims(&x.dims);
    let s = strides(&d);
    let out: Vec<usize> = perm.iter().map(|&p| d[p]).collect();
    let idx = gather_indices(&out, |o| perm.iter().zip(o).map(|(&p, &i)| i * s[p]).sum());
    Ok(x.with(perm.iter().map(|&p| x.dims[p]).collect(), x.data.pick(&idx)))
}

/// `Unsqueeze`: a dim of 1 inserted at each of the axes (an input from opset 13, an attribute
/// before), which index the output's dims.
fn eval_unsqueeze(n: &NodeProto, inputs: &[Option<&Const>]) -> Result<Const, String> {
    let x = input(inputs, 0)?;
    let axes = ints_of(n, inputs, 1, "axes")?.ok_or("no axes")?;
    let rank = x.dims.len() + axes.len();
    let mut at = axes
        .iter()
        .map(|&a| axis(a, rank))
        .collect::<Result<Vec<_>, _>>()?;
    at.sort_unstable();
    if at.windows(2).any(|w| w[0] == w[1]) {
        return Err(format!("axes {axes:?} repeat an axis"));
    }
    let mut rest = x.dims.iter();
    let dims = (0..rank)
        .map(|i| {
            if at.contains(&i) {
                1
            } else {
                *rest.next().expect("rank counts the input's dims")
            }
        })
        .collect();
    Ok(x.with(dims, x.data.clone()))
}

/// `Squeeze` of the given axes, each of which must be 1, or, without axes, of every dim of 1.
fn eval_squeeze(n: &NodeProto, inputs: &[Option<&Const>]) -> Result<Const, String> {
    let x = input(inputs, 0)?;
    let dims = match ints_of(n, inputs, 1, "axes")? {
        Some(axes) => {
            let at = axes
                .iter()
                .map(|&a| axis(a, x.dims.len()))
                .collect::<Result<Vec<_>, _>>()?;
            if let Some(&a) = at.iter().find(|&&a| x.dims[a] != 1) {
                return Err(format!("axis {a} of {:?} is not 1", x.dims));
            }
            (0..x.dims.len())
                .filter(|i| !at.contains(i))
                .map(|i| x.dims[i])
                .collect()
        }
        None => x.dims.iter().copied().filter(|&d| d != 1).collect(),
    };
    Ok(x.with(dims, x.data.clone()))
}

/// The dims of `Shape` of a tensor of `dims`, with the `start` and `end` attributes of opset 15.
fn shape_of(n: &NodeProto, dims: &[i64]) -> Const {
    let r = dims.len() as i64;
    let clamp = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
    let start = clamp(attr(n, "start").map_or(0, |a| a.i));
    let end = clamp(attr(n, "end").map_or(r, |a| a.i));
    let v: Vec<i64> = dims[start..end.max(start)].to_vec();
    Const {
        dtype: DataType::INT64,
        dims: vec![v.len() as i64],
        data: Data::Int(v),
    }
}

/// `Reshape`'s output dims: `0` copies the input's dim (unless `allowzero`), one `-1` is inferred.
/// Sizes are only multiplied (checked), never allocated, so activations of any size reshape.
pub fn reshape_dims(dims: &[i64], target: &[i64], allowzero: bool) -> Result<Vec<i64>, String> {
    let product = |v: &[i64]| {
        v.iter()
            .try_fold(1i64, |p, &d| if d < 0 { None } else { p.checked_mul(d) })
            .ok_or_else(|| format!("cannot reshape {dims:?} to {target:?}"))
    };
    let total = product(dims)?;
    let mut out = Vec::with_capacity(target.len());
    let mut infer = None;
    for (i, &t) in target.iter().enumerate() {
        match t {
            -1 if infer.is_none() => {
                infer = Some(i);
                out.push(1);
            }
            0 if !allowzero => out.push(
                *dims
                    .get(i)
                    .ok_or_else(|| format!("target {target:?} copies dim {i} of {dims:?}"))?,
            ),
            t if t >= 0 => out.push(t),
            _ => return Err(format!("cannot reshape {dims:?} to {target:?}")),
        }
    }
    let known = product(&out)?;
    if let Some(i) = infer {
        if known == 0 || total % known != 0 {
            return Err(format!("cannot reshape {dims:?} to {target:?}"));
        }
        out[i] = total / known;
    } else if known != total {
        return Err(format!("cannot reshape {dims:?} to {target:?}"));
    }
    Ok(out)
}

fn cast(x: &Const, to: DataType) -> Option<Const> {
    let data = match (&x.data, is_float(to), is_int(to)) {
        (Data::Float(v), true, _) => Data::Float(v.iter().map(|&f| round_float(to, f)).collect()),
        (Data::Int(v), true, _) => {
            Data::Float(v.iter().map(|&i| round_float(to, i as f64)).collect())
        }
        (Data::Int(v), _, true) => Data::Int(v.iter().map(|&i| wrap_int(to, i)).collect()),
        (Data::Float(v), _, true) => Data::Int(
            v.iter()
                .map(|&f| {
                    if to == DataType::BOOL {
                        Some(i64::from(f != 0.0))
                    } else if f.is_finite() && f.trunc().abs() < 9.2e18 {
                        Some(wrap_int(to, f.trunc() as i64))
                    } else {
                        None
                    }
                })
                .collect::<Option<_>>()?,
        ),
        _ => return None,
    };
    Some(Const {
        dtype: to,
        dims: x.dims.clone(),
        data,
    })
}

fn concat(inputs: &[Option<&Const>], a: i64) -> Result<Option<Const>, String> {
    let xs: Vec<&Const> = inputs.iter().flatten().copied().collect();
    let first = *xs.first().ok_or("no inputs")?;
    let r = first.dims.len();
    let ax = axis(a, r)?;
    let mut dims = first.dims.clone();
    dims[ax] = 0;
    for x in &xs {
        if x.dtype != first.dtype {
            return Ok(None);
        }
        let same = x.dims.len() == r && (0..r).all(|i| i == ax || x.dims[i] == first.dims[i]);
        if !same {
            return Err(format!(
                "inputs of shapes {:?} and {:?} do not concatenate on axis {a}",
                first.dims, x.dims
            ));
        }
        dims[ax] += x.dims[ax];
    }
    element_count(&dims)?;
    let outer: usize = udims(&first.dims[..ax]).iter().product();
    let inner: usize = udims(&first.dims[ax + 1..]).iter().product();
    let mut f = Vec::new();
    let mut i = Vec::new();
    for o in 0..outer {
        for x in &xs {
            let chunk = x.dims[ax] as usize * inner;
            match &x.data {
                Data::Float(v) => f.extend_from_slice(&v[o * chunk..(o + 1) * chunk]),
                Data::Int(v) => i.extend_from_slice(&v[o * chunk..(o + 1) * chunk]),
            }
        }
    }
    let data = match first.data {
        Data::Float(_) => Data::Float(f),
        Data::Int(_) => Data::Int(i),
    };
    Ok(Some(first.with(dims, data)))
}

/// `Slice` with starts, ends, axes and steps as inputs (opset 10 on) or attributes (before),
/// clamped as ONNX defines: negative positions count from the end, huge ends mean "to the end",
/// and a negative step walks backwards.
fn slice(n: &NodeProto, inputs: &[Option<&Const>]) -> Result<Const, String> {
    let x = input(inputs, 0)?;
    let r = x.dims.len();
    let get = |k: usize, name: &str| ints_of(n, inputs, k, name);
    let starts = get(1, "starts")?.ok_or("no starts")?;
    let ends = get(2, "ends")?.ok_or("no ends")?;
    if starts.len() != ends.len() {
        return Err(format!(
            "starts {starts:?} and ends {ends:?} differ in length"
        ));
    }
    let axes = get(3, "axes")?.unwrap_or_else(|| (0..starts.len() as i64).collect());
    let steps = match inputs.get(4).copied().flatten() {
        Some(c) => c.ints().ok_or("steps are not integers")?.to_vec(),
        None => vec![1; starts.len()],
    };
    if axes.len() != starts.len() || steps.len() != starts.len() {
        return Err("starts, ends, axes and steps differ in length".into());
    }
    // Per axis: first element and step; the output keeps the rest whole.
    let mut first = vec![0i64; r];
    let mut step = vec![1i64; r];
    let mut out = x.dims.clone();
    let mut seen = HashSet::new();
    for k in 0..starts.len() {
        let a = axis(axes[k], r)?;
        if !seen.insert(a) {
            return Err(format!("axes {axes:?} repeat an axis"));
        }
        let (d, st) = (x.dims[a], steps[k]);
        if st == 0 {
            return Err("a step of 0".into());
        }
        let norm = |v: i64| if v < 0 { v.saturating_add(d) } else { v };
        let (s, e) = (norm(starts[k]), norm(ends[k]));
        let (s, e) = if st > 0 {
            (s.clamp(0, d), e.clamp(0, d))
        } else {
            (s.clamp(0, (d - 1).max(0)), e.clamp(-1, d - 1))
        };
        let (s2, e2, st2) = (i128::from(s), i128::from(e), i128::from(st));
        let count = if st > 0 {
            (e2 - s2 + st2 - 1).max(0) / st2
        } else {
            (s2 - e2 - st2 - 1).max(0) / (-st2)
        } as i64;
        // `count` is 0 for an empty range; a start clamped to `d - 1` of an empty axis is unused.
        out[a] = if d == 0 { 0 } else { count };
        first[a] = s;
        step[a] = st;
    }
    element_count(&out)?;
    let s = strides(&udims(&x.dims));
    let idx = gather_indices(&udims(&out), |o| {
        (0..r)
            .map(|a| (first[a] + o[a] as i64 * step[a]) as usize * s[a])
            .sum()
    });
    Ok(x.with(out, x.data.pick(&idx)))
}

fn gather(inputs: &[Option<&Const>], a: i64) -> Result<Const, String> {
    let x = input(inputs, 0)?;
    let ind = input(inputs, 1)?;
    let ax = axis(a, x.dims.len())?;
    let d = x.dims[ax];
    let at: Vec<usize> = ind
        .ints()
        .ok_or("the indices are not integers")?
        .iter()
        .map(|&i| {
            let j = if i < 0 { i + d } else { i };
            usize::try_from(j)
                .ok()
                .filter(|&j| (j as i64) < d)
                .ok_or_else(|| format!("index {i} is out of range for a dim of {d}"))
        })
        .collect::<Result<_, _>>()?;
    let mut dims = x.dims[..ax].to_vec();
    dims.extend_from_slice(&ind.dims);
    dims.extend_from_slice(&x.dims[ax + 1..]);
    element_count(&dims)?;
    let s = strides(&udims(&x.dims));
    let q = ind.dims.len();
    let qs = strides(&udims(&ind.dims));
    let idx = gather_indices(&udims(&dims), |o| {
        let flat: usize = (0..q).map(|k| o[ax + k] * qs[k]).sum();
        let mut src = at[flat] * s[ax];
        for k in 0..ax {
            src += o[k] * s[k];
        }
        for k in ax + 1..x.dims.len() {
            src += o[k + q - 1] * s[k];
        }
        src
    });
    Ok(x.with(dims, x.data.pick(&idx)))
}

/// Numpy broadcasting of two shapes.
pub fn broadcast(a: &[i64], b: &[i64]) -> Option<Vec<i64>> {
    let r = a.len().max(b.len());
    (0..r)
        .map(|i| {
            let x = if i + a.len() >= r {
                a[i + a.len() - r]
            } else {
                1
            };
            let y = if i + b.len() >= r {
                b[i + b.len() - r]
            } else {
                1
            };
            match (x, y) {
                _ if x == y => Some(x),
                (1, _) => Some(y),
                (_, 1) => Some(x),
                _ => None,
            }
        })
        .collect()
}

fn arithmetic(op: &str, inputs: &[Option<&Const>]) -> Result<Option<Const>, String> {
    let (a, b) = (input(inputs, 0)?, input(inputs, 1)?);
    if a.dtype != b.dtype {
        return Ok(None);
    }
    let dims = broadcast(&a.dims, &b.dims)
        .ok_or_else(|| format!("shapes {:?} and {:?} do not broadcast", a.dims, b.dims))?;
    element_count(&dims)?;
    let out = udims(&dims);
    let index = |x: &Const| {
        let d = udims(&x.dims);
        let s = strides(&d);
        let off = out.len() - d.len();
        gather_indices(&out, |o| {
            (0..d.len())
                .map(|k| if d[k] == 1 { 0 } else { o[k + off] * s[k] })
                .sum()
        })
    };
    let (ia, ib) = (index(a), index(b));
    let data = match (&a.data, &b.data) {
        (Data::Float(x), Data::Float(y)) => Data::Float(
            ia.iter()
                .zip(&ib)
                .map(|(&i, &j)| {
                    let v = match op {
                        "Add" => x[i] + y[j],
                        "Sub" => x[i] - y[j],
                        "Mul" => x[i] * y[j],
                        _ => x[i] / y[j],
                    };
                    round_float(a.dtype, v)
                })
                .collect(),
        ),
        (Data::Int(x), Data::Int(y)) => {
            let v: Option<Vec<i64>> = ia
                .iter()
                .zip(&ib)
                .map(|(&i, &j)| {
                    let v = match op {
                        "Add" => x[i].checked_add(y[j]),
                        "Sub" => x[i].checked_sub(y[j]),
                        "Mul" => x[i].checked_mul(y[j]),
                        _ => x[i].checked_div(y[j]),
                    }?;
                    // A result that the type cannot hold is left to ONNX Runtime.
                    (wrap_int(a.dtype, v) == v).then_some(v)
                })
                .collect();
            match v {
                Some(v) => Data::Int(v),
                None => return Ok(None),
            }
        }
        _ => return Ok(None),
    };
    Ok(Some(a.with(dims, data)))
}

fn default_domain(n: &NodeProto) -> bool {
    n.domain.is_empty() || n.domain == "ai.onnx"
}

fn op_err(n: &NodeProto, message: String) -> SliceError {
    SliceError::Op {
        node: if n.name.is_empty() {
            n.output.first().cloned().unwrap_or_default()
        } else {
            n.name.clone()
        },
        op: n.op_type.clone(),
        message: format!("constant folding: {message}"),
    }
}

/// Folds the model's constant subgraphs in place and returns how many nodes were folded; a
/// graph with nothing to fold is left untouched.
pub fn fold(proto: &mut ModelProto) -> Result<usize, SliceError> {
    let old_ir = proto.ir_version < 4;
    let Some(graph) = proto.graph.as_mut() else {
        return Ok(0);
    };
    let outputs: HashSet<String> = graph.output.iter().map(|o| o.name.clone()).collect();
    let folding = fold_nodes(graph, &outputs)?;
    let count = folding.folded.iter().filter(|&&f| f).count();
    if count == 0 {
        return Ok(0);
    }
    let added = remove_folded(graph, &outputs, folding);
    if old_ir {
        // IR < 4 lists every initializer among the graph inputs too.
        list_as_inputs(graph, &added);
    }
    graph.initializer.extend(added);
    Ok(count)
}

/// What folding a graph's nodes gives, before the graph is changed.
struct Folding {
    /// Per node, in graph order, whether it folded.
    folded: Vec<bool>,
    /// What each folded `Constant` (or `Identity` of a stored tensor) leaves: a tensor as it is.
    hoisted: HashMap<String, TensorProto>,
    /// What each other folded node leaves, and the decoded inputs of those evaluated.
    values: HashMap<String, Const>,
}

/// The constants known while walking a graph: its initializers, and what the nodes folded so
/// far leave.
struct Folder<'g> {
    inits: HashMap<&'g str, &'g TensorProto>,
    hoisted: HashMap<String, TensorProto>,
    values: HashMap<String, Const>,
}

/// Folds, in graph order, every node that can be folded; the graph itself is not changed.
fn fold_nodes(graph: &GraphProto, outputs: &HashSet<String>) -> Result<Folding, SliceError> {
    let mut folder = Folder {
        inits: graph
            .initializer
            .iter()
            .map(|t| (t.name.as_str(), t))
            .collect(),
        hoisted: HashMap::new(),
        values: HashMap::new(),
    };
    let mut folded = vec![false; graph.node.len()];
    for (i, n) in graph.node.iter().enumerate() {
        folded[i] = folder.fold_node(n, outputs)?;
    }
    Ok(Folding {
        folded,
        hoisted: folder.hoisted,
        values: folder.values,
    })
}

impl Folder<'_> {
    /// Folds `n` if it can and says whether it did: a `Constant` is hoisted, an `Identity` of a
    /// constant aliased, a `Shape` of a constant or a known op on constant inputs evaluated.
    fn fold_node(&mut self, n: &NodeProto, outputs: &HashSet<String>) -> Result<bool, SliceError> {
        // A node that writes a graph output or an initializer's name must stay to write it.
        let fixed = |o: &String| outputs.contains(o) || self.inits.contains_key(o.as_str());
        if !default_domain(n) || n.output.is_empty() || n.output.iter().any(fixed) {
            return Ok(false);
        }
        if n.op_type == "Constant" {
            if let (true, Some(t)) = (n.input.is_empty(), constant_tensor(n)) {
                self.hoisted.insert(n.output[0].clone(), t);
                return Ok(true);
            }
            return Ok(false);
        }
        let present: Vec<&str> = n
            .input
            .iter()
            .filter(|s| !s.is_empty())
            .map(String::as_str)
            .collect();
        if present.is_empty()
            || n.output.len() != 1
            || !FOLDABLE.contains(&n.op_type.as_str())
            || !present.iter().all(|s| self.is_constant(s))
        {
            return Ok(false);
        }
        if n.op_type == "Identity" {
            self.alias(n, present[0]);
            return Ok(true);
        }
        let result = if n.op_type == "Shape" {
            Some(shape_of(n, &self.dims(present[0])))
        } else {
            self.evaluate(n, &present)?
        };
        let Some(c) = result else {
            return Ok(false);
        };
        self.values.insert(n.output[0].clone(), c);
        Ok(true)
    }

    /// Whether `name` is a constant: an initializer or what a folded node leaves.
    fn is_constant(&self, name: &str) -> bool {
        self.inits.contains_key(name)
            || self.hoisted.contains_key(name)
            || self.values.contains_key(name)
    }

    /// The stored tensor of constant `name` that is not decoded: an initializer or a hoisted one.
    fn tensor(&self, name: &str) -> &TensorProto {
        self.inits
            .get(name)
            .copied()
            .or_else(|| self.hoisted.get(name))
            .expect("checked: every input is a constant")
    }

    /// The dims of constant `name`.
    fn dims(&self, name: &str) -> Vec<i64> {
        match (
            self.inits.get(name).copied(),
            self.hoisted.get(name),
            self.values.get(name),
        ) {
            (Some(t), _, _) | (_, Some(t), _) => t.dims.clone(),
            (_, _, Some(c)) => c.dims.clone(),
            _ => unreachable!("checked: every input is a constant"),
        }
    }

    /// Folds `Identity` node `n` of constant `name` into an alias of it.
    fn alias(&mut self, n: &NodeProto, name: &str) {
        // Copied as it is, so a large weight passed through (as PyTorch does for shared
        // parameters) is neither decoded nor bound by the limit.
        if let Some(c) = self.values.get(name) {
            let c = c.clone();
            self.values.insert(n.output[0].clone(), c);
        } else {
            let t = self.tensor(name).clone();
            self.hoisted.insert(n.output[0].clone(), t);
        }
    }

    /// Evaluates `n` on its constant inputs `present`, decoding those not decoded yet; `None`
    /// where an input has a type the folder does not represent or [`eval`] leaves the node.
    fn evaluate(&mut self, n: &NodeProto, present: &[&str]) -> Result<Option<Const>, SliceError> {
        // Decode what is not decoded yet, then evaluate on references.
        let mut readable = true;
        for s in present {
            if self.values.contains_key(*s) {
                continue;
            }
            match decode(self.tensor(s)).map_err(|e| op_err(n, e))? {
                Some(c) => {
                    self.values.insert((*s).to_string(), c);
                }
                None => readable = false,
            }
        }
        if !readable {
            return Ok(None);
        }
        let args: Vec<Option<&Const>> = n
            .input
            .iter()
            .map(|s| self.values.get(s.as_str()).filter(|_| !s.is_empty()))
            .collect();
        eval(n, &args).map_err(|e| op_err(n, e))
    }
}

/// Removes the folded nodes from the graph and returns, as initializers, the values they leave
/// that the remaining nodes or the graph's outputs read.
fn remove_folded(
    graph: &mut GraphProto,
    outputs: &HashSet<String>,
    folding: Folding,
) -> Vec<TensorProto> {
    let Folding {
        folded,
        mut hoisted,
        values,
    } = folding;
    let nodes = std::mem::take(&mut graph.node);
    let (gone, kept): (Vec<_>, Vec<_>) = nodes.into_iter().zip(&folded).partition(|(_, f)| **f);
    graph.node = kept.into_iter().map(|(n, _)| n).collect();
    // What the remaining nodes read, subgraphs (`If`, `Loop` bodies) included, and the outputs.
    let mut needed: HashSet<String> = outputs.clone();
    read_names(&graph.node, &mut needed);
    let mut added = Vec::new();
    for (n, _) in &gone {
        let o = &n.output[0];
        if !needed.contains(o) {
            continue;
        }
        let t = match hoisted.remove(o) {
            Some(mut t) => {
                t.name = o.clone();
                t
            }
            None => encode(&values[o], o),
        };
        added.push(t);
    }
    added
}

/// Lists the initializers `added` among the graph's inputs too.
fn list_as_inputs(graph: &mut GraphProto, added: &[TensorProto]) {
    for t in added {
        let dt = DataType::from_i32(t.data_type).unwrap_or(DataType::FLOAT);
        let dims = t.dims.iter().map(|&d| crate::proto::dim_value(d)).collect();
        graph
            .input
            .push(crate::proto::typed_value_info(&t.name, dt, dims));
    }
}

/// Every name `nodes` read, in their subgraphs too.
fn read_names(nodes: &[NodeProto], names: &mut HashSet<String>) {
    for n in nodes {
        names.extend(n.input.iter().cloned());
        for a in &n.attribute {
            for g in a.g.as_ref().into_iter().chain(&a.graphs) {
                read_names(&g.node, names);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ints(dims: &[i64], v: &[i64]) -> Const {
        Const {
            dtype: DataType::INT64,
            dims: dims.to_vec(),
            data: Data::Int(v.to_vec()),
        }
    }

    fn node(op: &str, attrs: Vec<AttributeProto>) -> NodeProto {
        let mut n = NodeProto::new();
        n.op_type = op.into();
        n.name = format!("/{op}");
        n.output = vec!["y".into()];
        n.attribute = attrs;
        n
    }

    fn ints_attr(name: &str, v: &[i64]) -> AttributeProto {
        let mut a = AttributeProto::new();
        a.name = name.into();
        a.ints = v.to_vec();
        a
    }

    fn int_attr(name: &str, v: i64) -> AttributeProto {
        let mut a = AttributeProto::new();
        a.name = name.into();
        a.i = v;
        a
    }

    #[test]
    fn pytorch_static_padding_chain() {
        // F.pad's [0, 1, 0, 1] (last dim first) becomes ONNX pads [0, 0, 0, 0, 0, 0, 1, 1].
        let torch = ints(&[4], &[0, 1, 0, 1]);
        let zeros = eval(&node("ConstantOfShape", vec![]), &[Some(&ints(&[1], &[4]))])
            .unwrap()
            .unwrap();
        assert_eq!(zeros.dtype, DataType::FLOAT);
        let zeros = cast(&zeros, DataType::INT64).unwrap();
        let cat = eval(
            &node("Concat", vec![int_attr("axis", 0)]),
            &[Some(&torch), Some(&zeros)],
        )
        .unwrap()
        .unwrap();
        let r = eval(
            &node("Reshape", vec![]),
            &[Some(&cat), Some(&ints(&[2], &[-1, 2]))],
        )
        .unwrap()
        .unwrap();
        assert_eq!(r.dims, [4, 2]);
        let s = eval(
            &node("Slice", vec![]),
            &[
                Some(&r),
                Some(&ints(&[1], &[-1])),
                Some(&ints(&[1], &[-9223372036854775807])),
                Some(&ints(&[1], &[0])),
                Some(&ints(&[1], &[-1])),
            ],
        )
        .unwrap()
        .unwrap();
        assert_eq!(s.ints().unwrap(), [0, 0, 0, 0, 0, 1, 0, 1]);
        let t = eval(
            &node("Transpose", vec![ints_attr("perm", &[1, 0])]),
            &[Some(&s)],
        )
        .unwrap()
        .unwrap();
        let f = eval(
            &node("Reshape", vec![]),
            &[Some(&t), Some(&ints(&[1], &[-1]))],
        )
        .unwrap()
        .unwrap();
        assert_eq!(f.dims, [8]);
        assert_eq!(f.ints().unwrap(), [0, 0, 0, 0, 0, 0, 1, 1]);
    }

    #[test]
    fn slice_clamps_like_onnx() {
        let x = ints(&[5], &[0, 1, 2, 3, 4]);
        let run = |s: i64, e: i64, st: i64| {
            let c = eval(
                &node("Slice", vec![]),
                &[
                    Some(&x),
                    Some(&ints(&[1], &[s])),
                    Some(&ints(&[1], &[e])),
                    None,
                    Some(&ints(&[1], &[st])),
                ],
            )
            .unwrap()
            .unwrap();
            c.ints().unwrap().to_vec()
        };
        assert_eq!(run(1, i64::MAX, 1), [1, 2, 3, 4]);
        assert_eq!(run(-2, 100, 1), [3, 4]);
        assert_eq!(run(0, -1, 2), [0, 2]);
        assert_eq!(run(i64::MAX, i64::MIN, -1), [4, 3, 2, 1, 0]);
        assert_eq!(run(-1, -4, -2), [4, 2]);
        assert_eq!(run(3, 1, 1), Vec::<i64>::new());
        // Opset 1-9: starts, ends and axes as attributes.
        let old = node(
            "Slice",
            vec![
                ints_attr("starts", &[1]),
                ints_attr("ends", &[-1]),
                ints_attr("axes", &[0]),
            ],
        );
        let c = eval(&old, &[Some(&x)]).unwrap().unwrap();
        assert_eq!(c.ints().unwrap(), [1, 2, 3]);
    }

    #[test]
    fn gather_unsqueeze_squeeze_and_arithmetic() {
        let x = ints(&[2, 3], &[1, 2, 3, 4, 5, 6]);
        let g = eval(
            &node("Gather", vec![int_attr("axis", 1)]),
            &[Some(&x), Some(&ints(&[2], &[-1, 0]))],
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (g.dims.as_slice(), g.ints().unwrap()),
            (&[2, 2][..], &[3, 1, 6, 4][..])
        );
        let scalar = eval(&node("Gather", vec![]), &[Some(&x), Some(&ints(&[], &[1]))])
            .unwrap()
            .unwrap();
        assert_eq!(
            (scalar.dims.as_slice(), scalar.ints().unwrap()),
            (&[3][..], &[4, 5, 6][..])
        );
        let u = eval(
            &node("Unsqueeze", vec![]),
            &[Some(&scalar), Some(&ints(&[2], &[0, -1]))],
        )
        .unwrap()
        .unwrap();
        assert_eq!(u.dims, [1, 3, 1]);
        let s = eval(&node("Squeeze", vec![]), &[Some(&u), None])
            .unwrap()
            .unwrap();
        assert_eq!(s.dims, [3]);
        let m = eval(
            &node("Mul", vec![]),
            &[Some(&x), Some(&ints(&[3], &[10, 0, -1]))],
        )
        .unwrap()
        .unwrap();
        assert_eq!(m.ints().unwrap(), [10, 0, -3, 40, 0, -6]);
        let d = eval(
            &node("Div", vec![]),
            &[Some(&ints(&[2], &[-7, 7])), Some(&ints(&[], &[2]))],
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            d.ints().unwrap(),
            [-3, 3],
            "integer division truncates toward zero"
        );
        // Division by zero and overflow are left to ONNX Runtime.
        let z = eval(&node("Div", vec![]), &[Some(&x), Some(&ints(&[], &[0]))]).unwrap();
        assert!(z.is_none());
        let f = Const {
            dtype: DataType::FLOAT,
            dims: vec![2],
            data: Data::Float(vec![f64::from(0.1f32), 1.0]),
        };
        let sum = eval(&node("Add", vec![]), &[Some(&f), Some(&f)])
            .unwrap()
            .unwrap();
        assert_eq!(sum.data, Data::Float(vec![f64::from(0.1f32 + 0.1f32), 2.0]));
        let back = decode(&encode(&sum, "s")).unwrap().unwrap();
        assert_eq!(back, sum);
    }

    fn graph_model(nodes: Vec<NodeProto>, inits: Vec<TensorProto>, output: &str) -> ModelProto {
        let mut g = onnx_protobuf::GraphProto::new();
        g.node = nodes;
        g.initializer = inits;
        let mut o = onnx_protobuf::ValueInfoProto::new();
        o.name = output.into();
        g.output = vec![o];
        let mut m = ModelProto::new();
        m.ir_version = 8;
        m.graph = Some(g).into();
        m
    }

    fn wired(op: &str, inputs: &[&str], output: &str, attrs: Vec<AttributeProto>) -> NodeProto {
        let mut n = node(op, attrs);
        n.input = inputs.iter().map(|s| s.to_string()).collect();
        n.output = vec![output.into()];
        n
    }

    #[test]
    fn identity_aliases_and_constants_read_by_subgraphs_become_initializers() {
        let w = encode(
            &Const {
                dtype: DataType::FLOAT16,
                dims: vec![2],
                data: Data::Float(vec![0.5, -2.0]),
            },
            "w",
        );
        let mut k = node("Constant", vec![ints_attr("value_ints", &[1, 2])]);
        k.output = vec!["k".into()];
        let mut body = onnx_protobuf::GraphProto::new();
        body.node = vec![wired("Identity", &["k"], "t", vec![])];
        let mut branch = AttributeProto::new();
        branch.name = "then_branch".into();
        branch.g = Some(body).into();
        let mut m = graph_model(
            vec![
                k,
                wired("Identity", &["w"], "w2", vec![]),
                wired("Relu", &["w2"], "r", vec![]),
                wired("If", &["cond"], "y", vec![branch]),
            ],
            vec![w.clone()],
            "y",
        );
        assert_eq!(fold(&mut m).unwrap(), 2);
        let g = m.graph.as_ref().unwrap();
        let ops: Vec<&str> = g.node.iter().map(|n| n.op_type.as_str()).collect();
        assert_eq!(ops, ["Relu", "If"]);
        let w2 = g.initializer.iter().find(|t| t.name == "w2").unwrap();
        assert_eq!((w2.data_type, &w2.raw_data), (w.data_type, &w.raw_data));
        let k = g.initializer.iter().find(|t| t.name == "k").unwrap();
        assert_eq!(decode(k).unwrap().unwrap().ints().unwrap(), [1, 2]);
    }

    #[test]
    fn oversized_constants_are_refused() {
        let e = eval(
            &node("ConstantOfShape", vec![]),
            &[Some(&ints(&[2], &[1 << 20, 1 << 20]))],
        )
        .unwrap_err();
        assert!(e.contains("limit"), "{e}");
        let e = eval(
            &node("ConstantOfShape", vec![]),
            &[Some(&ints(&[1], &[-3]))],
        )
        .unwrap_err();
        assert!(e.contains("-3"), "{e}");
        let mut t = TensorProto::new();
        t.name = "big".into();
        t.data_type = DataType::INT64 as i32;
        t.dims = vec![i64::MAX, 4];
        assert!(decode(&t).unwrap_err().contains("big"));
        t.dims = vec![3];
        t.raw_data = vec![0; 16];
        assert!(decode(&t).unwrap_err().contains("16 bytes"));
    }
}
