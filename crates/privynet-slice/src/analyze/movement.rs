//! Shape inference for the data movement that today's PyTorch exports put between
//! convolutions: a channel shuffle (`Reshape` to `[N, g, C/g, H, W]`, `Transpose`, `Reshape`
//! back), `Split` and `Slice` of channels (ShuffleNetV2's `chunk`), `ReduceMean` over the spatial
//! axes (the dynamo exporter's global average pool and squeeze-excitation) and `Cast` between
//! float types. Anything else of these ops is refused with an error naming the node.

use onnx_protobuf::NodeProto;
use onnx_protobuf::tensor_proto::DataType;

use super::{Inputs, Out, Tensor, attr, constant_ints, int, ints, op_err};
use crate::SliceError;

/// The range `[start, end)` that an ONNX `Slice` with step 1 takes of an axis of `dim`
/// elements: negative positions count from the end, and both are clamped to the axis.
pub fn slice_range(start: i64, end: i64, dim: i64) -> (i64, i64) {
    let norm = |v: i64| if v < 0 { v.saturating_add(dim) } else { v };
    let s = norm(start).clamp(0, dim);
    let e = norm(end).clamp(0, dim);
    (s, e.max(s))
}

/// The channel counts of a `Split` of `channels` over the channel axis into `outputs` parts:
/// the `split` sizes (an input from opset 13, an attribute before), else `num_outputs` (opset
/// 18) or the output count, as equal parts with a smaller last one (ONNX's rule).
pub fn split_sizes(
    split: Option<Vec<i64>>,
    outputs: usize,
    channels: i64,
) -> Result<Vec<i64>, String> {
    if let Some(sizes) = split {
        if sizes.len() != outputs || sizes.iter().any(|&s| s < 0) {
            return Err(format!("split sizes {sizes:?} for {outputs} outputs"));
        }
        if sizes.iter().sum::<i64>() != channels {
            return Err(format!(
                "split sizes {sizes:?} do not add up to the {channels} channels"
            ));
        }
        return Ok(sizes);
    }
    let n = outputs as i64;
    if n < 1 || channels < n {
        return Err(format!("{channels} channels into {n} parts"));
    }
    let part = (channels + n - 1) / n;
    Ok((0..n)
        .map(|k| (channels - k * part).clamp(0, part))
        .collect())
}

/// An axis of a rank-4 NCHW tensor, negative counting from the end.
pub fn nchw_axis(a: i64) -> Option<usize> {
    let v = if a < 0 { a + 4 } else { a };
    usize::try_from(v).ok().filter(|&v| v < 4)
}

/// [`nchw_axis`], or an error naming node `n`.
fn checked_axis(n: &NodeProto, a: i64) -> Result<usize, SliceError> {
    nchw_axis(a).ok_or_else(|| op_err(n, format!("axis {a} of an NCHW tensor")))
}

/// Whether `axes` of an NCHW tensor are its two spatial axes, in any order: a mean over them
/// is a global average pool.
pub fn is_spatial(axes: &[i64]) -> bool {
    let mut v: Vec<Option<usize>> = axes.iter().map(|&a| nchw_axis(a)).collect();
    v.sort_unstable();
    v == [Some(2), Some(3)]
}

/// The `(start, end)` of a `Slice` that takes one range of channels with step 1; `None` for
/// any other slice.
pub fn channel_range(
    starts: &[i64],
    ends: &[i64],
    axes: &[i64],
    steps: &[i64],
) -> Option<(i64, i64)> {
    match (starts, ends, axes, steps) {
        (&[s], &[e], &[a], &[1]) if nchw_axis(a) == Some(1) => Some((s, e)),
        _ => None,
    }
}

/// An NCHW activation (rank 3 without its batch), else an error naming `what` is refused.
fn nchw<'t>(n: &NodeProto, t: &'t Tensor, what: &str) -> Result<&'t [i64], SliceError> {
    if !t.act || t.shape.len() != 3 {
        return Err(op_err(
            n,
            format!("only {what} of an NCHW activation is supported"),
        ));
    }
    Ok(&t.shape)
}

/// `ReduceMean` over both spatial axes, as a global average pool: `[C, 1, 1]` with `keepdims`
/// (the default), `[C]` without. Axes come from the input (opset 18) or the attribute.
pub(super) fn reduce_mean_output(n: &NodeProto, x: &Inputs<'_>) -> Result<Out, SliceError> {
    let data = x.get(0)?;
    let s = nchw(n, data, "a mean")?;
    let axes = if x.present(1) {
        constant_ints(n, x, 1, "axes")?
    } else {
        ints(n, "axes").unwrap_or_default()
    };
    for &a in &axes {
        checked_axis(n, a)?;
    }
    if !is_spatial(&axes) {
        return Err(op_err(
            n,
            format!("a mean over axes {axes:?}; only over both spatial axes (2, 3) is supported"),
        ));
    }
    let shape = if int(n, "keepdims", 1) == 1 {
        vec![s[0], 1, 1]
    } else {
        vec![s[0]]
    };
    Ok(Out::like(data, shape, 0))
}

/// Whether an ONNX data type is a floating-point type.
fn is_float_cast(to: i64) -> bool {
    [
        DataType::FLOAT,
        DataType::DOUBLE,
        DataType::FLOAT16,
        DataType::BFLOAT16,
    ]
    .iter()
    .any(|&d| d as i64 == to)
}

/// `Cast` of an activation to a float type keeps its shape; to any other type it is refused.
pub(super) fn cast_output(n: &NodeProto, data: &Tensor) -> Result<Out, SliceError> {
    let to = int(n, "to", 0);
    if !is_float_cast(to) {
        return Err(op_err(
            n,
            format!("a cast of an activation to type {to}; only to a float type is supported"),
        ));
    }
    Ok(Out::like(data, data.shape.clone(), 0))
}

/// `Transpose` of an activation that keeps the batch first (a channel shuffle's
/// `[N, g, C/g, H, W] -> [N, C/g, g, H, W]`).
pub(super) fn transpose_output(n: &NodeProto, data: &Tensor) -> Result<Out, SliceError> {
    let rank = data.shape.len() + 1;
    let perm = ints(n, "perm").unwrap_or_else(|| (0..rank as i64).rev().collect());
    let mut seen = vec![false; rank];
    for &p in &perm {
        match usize::try_from(p).ok().filter(|&p| p < rank) {
            Some(p) if !seen[p] => seen[p] = true,
            _ => return Err(op_err(n, format!("perm {perm:?} of a rank-{rank} tensor"))),
        }
    }
    if perm.len() != rank || perm[0] != 0 {
        return Err(op_err(
            n,
            format!("perm {perm:?} moves the batch axis; only perms that keep it first"),
        ));
    }
    let shape = perm[1..]
        .iter()
        .map(|&p| data.shape[p as usize - 1])
        .collect();
    Ok(Out::like(data, shape, 0))
}

/// `Slice` of an activation's channels with step 1 (ShuffleNetV2's `x[:, :c]`), with starts and
/// ends from constant inputs (opset 10 on) or attributes (before).
pub(super) fn slice_output(n: &NodeProto, x: &Inputs<'_>) -> Result<Out, SliceError> {
    let data = x.get(0)?;
    let s = nchw(n, data, "slicing")?;
    let get = |k: usize, name: &str| -> Result<Option<Vec<i64>>, SliceError> {
        if x.present(k) {
            constant_ints(n, x, k, name).map(Some)
        } else {
            Ok(ints(n, name))
        }
    };
    let starts = get(1, "starts")?.ok_or_else(|| op_err(n, "no starts"))?;
    let ends = get(2, "ends")?.ok_or_else(|| op_err(n, "no ends"))?;
    let axes = get(3, "axes")?.unwrap_or_else(|| (0..starts.len() as i64).collect());
    let steps = get(4, "steps")?.unwrap_or_else(|| vec![1; starts.len()]);
    let Some((start, end)) = channel_range(&starts, &ends, &axes, &steps) else {
        return Err(op_err(
            n,
            format!(
                "a slice over axes {axes:?} with steps {steps:?}; only a range of channels with \
                 step 1 is supported"
            ),
        ));
    };
    let (a, b) = slice_range(start, end, s[0]);
    if a == b {
        return Err(op_err(n, format!("an empty slice of {} channels", s[0])));
    }
    Ok(Out::like(data, vec![b - a, s[1], s[2]], 0))
}

/// `Split` of an activation's channels.
pub(super) fn split_output(n: &NodeProto, x: &Inputs<'_>) -> Result<Out, SliceError> {
    let data = x.get(0)?;
    let s = nchw(n, data, "a split")?;
    if checked_axis(n, int(n, "axis", 0))? != 1 {
        return Err(op_err(
            n,
            "a split along another axis than the channels (1)",
        ));
    }
    let split = if x.present(1) {
        Some(constant_ints(n, x, 1, "split")?)
    } else {
        attr(n, "split").map(|a| a.ints.clone())
    };
    let sizes = split_sizes(split, n.output.len(), s[0]).map_err(|e| op_err(n, e))?;
    let shapes: Vec<Vec<i64>> = sizes.iter().map(|&c| vec![c, s[1], s[2]]).collect();
    let mut out = Out::like(data, shapes[0].clone(), 0);
    out.others = shapes[1..].to_vec();
    Ok(out)
}
