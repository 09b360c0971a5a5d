//! The data movement of today's PyTorch exports in the burn local network: the channel shuffle
//! (`Reshape` to `[N, g, C/g, H, W]`, `Transpose`, `Reshape` back), `Split` and `Slice` of
//! channels, `ReduceMean` over the spatial axes and `Cast` to fp32.
//!
//! burn tensors have a fixed rank, and a network here is rank 4 throughout. A channel shuffle's
//! 5-D tensor is therefore never built: the reshape to `[N, g, k, H, W]` records the grouping of
//! the channels (a "view"), the transpose becomes the channel permutation it amounts to (a
//! `Gather`), and the reshape back ends the view. A view read by any other op is refused.

use std::collections::HashMap;

use onnx_protobuf::NodeProto;
use onnx_protobuf::tensor_proto::DataType;
use privynet_slice::analyze::{attr, channel_range, int, ints, is_spatial, nchw_axis};

use super::{Graph, Op, Step, const_input, value_input};

/// The 5-D views of channel shuffles by tensor name: `[g, k]`, channel `i * k + j` at (i, j).
pub(super) type Views = HashMap<String, [usize; 2]>;

/// The constant integer input `k`, else the ints attribute `name` (older opsets).
fn ints_input(
    n: &NodeProto,
    k: usize,
    name: &str,
    g: &Graph<'_>,
) -> Result<Option<Vec<i64>>, String> {
    match const_input(n, k, g)? {
        Some(c) => c
            .ints()
            .map(|v| Some(v.to_vec()))
            .ok_or_else(|| format!("{name} that are not integers")),
        None => Ok(ints(n, name)),
    }
}

/// A positive dimension of a reshape target.
fn dim(v: i64, target: &[i64]) -> Result<usize, String> {
    usize::try_from(v)
        .ok()
        .filter(|&v| v > 0)
        .ok_or_else(|| format!("reshape target {target:?}; only fixed sizes after the batch"))
}

/// `Reshape` of an activation that keeps the batch (`0` or `-1` first): into a channel view
/// `[g, k, H, W]`, out of one back to `[C, H, W]`, or between rank-4 shapes.
pub(super) fn reshape(n: &NodeProto, g: &Graph<'_>, views: &mut Views) -> Result<Op, String> {
    let target = const_input(n, 1, g)?
        .and_then(|c| c.ints().map(<[i64]>::to_vec))
        .ok_or("a reshape target that is not a constant")?;
    let allowzero = int(n, "allowzero", 0) != 0;
    let keeps_batch = match target.first() {
        Some(-1) => true,
        Some(0) => !allowzero,
        _ => false,
    };
    if !keeps_batch {
        return Err(format!(
            "reshape target {target:?}; only targets that keep the batch first (0 or -1)"
        ));
    }
    let view = views.get(&n.input[0]).copied();
    // Back from a view, the channels may be `-1` (TorchScript's `[b, -1, h, w]`): `g * k`.
    let rest = target[1..]
        .iter()
        .enumerate()
        .map(|(i, &v)| match view {
            Some([groups, k]) if i == 0 && v == -1 && target.len() == 4 => Ok(groups * k),
            _ => dim(v, &target),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let output = n.output.first().cloned().unwrap_or_default();
    match (view, rest.as_slice()) {
        (None, &[groups, k, h, w]) => {
            views.insert(output, [groups, k]);
            Ok(Op::Shaped([groups * k, h, w]))
        }
        (Some([groups, k]), &[c, h, w]) if c == groups * k => Ok(Op::Shaped([c, h, w])),
        (None, &[c, h, w]) => Ok(Op::Reshape([c, h, w])),
        _ => Err(format!(
            "reshape target {target:?} of a channel shuffle's view"
        )),
    }
}

/// `Transpose` of a channel view `[g, k]` to `[k, g]`: the channel shuffle, as the permutation
/// of channels it is.
pub(super) fn transpose(n: &NodeProto, views: &mut Views) -> Result<Op, String> {
    let perm = ints(n, "perm").unwrap_or_default();
    let Some(&[groups, k]) = views.get(&n.input[0]) else {
        return Err(format!(
            "a transpose (perm {perm:?}) of a rank-4 tensor; only a channel shuffle's"
        ));
    };
    if perm != [0, 2, 1, 3, 4] {
        return Err(format!(
            "perm {perm:?} of a channel shuffle's view; only [0, 2, 1, 3, 4]"
        ));
    }
    views.insert(n.output.first().cloned().unwrap_or_default(), [k, groups]);
    // Output channel (j, i) of the [k, g] grouping is input channel (i, j) of [g, k].
    let order = (0..k)
        .flat_map(|j| (0..groups).map(move |i| i * k + j))
        .collect();
    Ok(Op::Gather(order))
}

/// `Split` of the channels: one step per output, each a range of channels.
pub(super) fn split(n: &NodeProto, g: &Graph<'_>) -> Result<Vec<Step>, String> {
    if nchw_axis(int(n, "axis", 0)) != Some(1) {
        return Err("a split along another axis than the channels (1)".into());
    }
    let sizes = match const_input(n, 1, g)? {
        Some(c) => Some(
            c.ints()
                .ok_or("split sizes that are not integers")?
                .to_vec(),
        ),
        None => attr(n, "split").map(|a| a.ints.clone()),
    };
    let parts = n.output.len();
    let mut start = 0;
    let mut steps = Vec::with_capacity(parts);
    for (index, output) in n.output.iter().enumerate() {
        let op = match &sizes {
            Some(s) => {
                let len = *s
                    .get(index)
                    .ok_or(format!("split sizes {s:?} for {parts} outputs"))?;
                start += len;
                Op::Channels(start - len, start)
            }
            None => Op::SplitPart { parts, index },
        };
        if !output.is_empty() {
            steps.push(Step {
                op,
                inputs: vec![value_input(n, 0)?],
                output: output.clone(),
            });
        }
    }
    Ok(steps)
}

/// `Slice` of a range of channels with step 1.
pub(super) fn slice(n: &NodeProto, g: &Graph<'_>) -> Result<Op, String> {
    let starts = ints_input(n, 1, "starts", g)?.ok_or("no starts")?;
    let ends = ints_input(n, 2, "ends", g)?.ok_or("no ends")?;
    let axes = ints_input(n, 3, "axes", g)?.unwrap_or_else(|| (0..starts.len() as i64).collect());
    let steps = ints_input(n, 4, "steps", g)?.unwrap_or_else(|| vec![1; starts.len()]);
    let (start, end) = channel_range(&starts, &ends, &axes, &steps).ok_or_else(|| {
        format!(
            "a slice over axes {axes:?} with steps {steps:?}; only a range of channels with step 1"
        )
    })?;
    Ok(Op::Channels(start, end))
}

/// `ReduceMean` over both spatial axes with `keepdims`: a global average pool.
pub(super) fn reduce_mean(n: &NodeProto, g: &Graph<'_>) -> Result<Op, String> {
    let axes = ints_input(n, 1, "axes", g)?.unwrap_or_default();
    if !is_spatial(&axes) || int(n, "keepdims", 1) != 1 {
        return Err(format!(
            "a mean over axes {axes:?} (keepdims {}); only over both spatial axes, keeping them",
            int(n, "keepdims", 1)
        ));
    }
    Ok(Op::GlobalAvgPool)
}

/// `Cast` of an activation to fp32 or fp64, which the fp32 network computes exactly.
pub(super) fn cast(n: &NodeProto) -> Result<Op, String> {
    let to = int(n, "to", 0);
    if to == DataType::FLOAT as i64 || to == DataType::DOUBLE as i64 {
        return Ok(Op::Identity);
    }
    Err(format!(
        "a cast to type {to}; only to fp32 or fp64 (a half-precision cast would round)"
    ))
}
