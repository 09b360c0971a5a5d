//! Graph surgery: keep only the nodes and weights needed to compute the cut tensor, append the
//! channel selection (a `Gather` over the channel axis with the selected indices), and expose it
//! as the single output `features`. The opset and IR version are kept; stale value infos are
//! dropped, since their shapes belong to the model's original input size. Shape computations
//! that feed activations (a TorchScript channel shuffle's reshape targets) are then written in
//! as constants at the analysed input size ([`freeze_shapes`]).

use std::collections::{HashMap, HashSet};

use onnx_protobuf::tensor_proto::DataType;
use onnx_protobuf::tensor_shape_proto::Dimension;
use onnx_protobuf::{
    AttributeProto, GraphProto, Message, ModelProto, NodeProto, TensorProto, ValueInfoProto,
    attribute_proto::AttributeType,
};

use crate::analyze::{ShapeValues, ancestors, int};
use crate::model::Model;
use crate::proto::{dim_param, dim_value, dims, typed_value_info};
use crate::{SliceError, fold};

/// The name of the local network's only output.
pub const OUTPUT: &str = "features";
const INDICES: &str = "privynet_selection_indices";

/// A graph input or output: a float tensor `name` of shape `dims`.
fn tensor_value_info(name: &str, dims: Vec<Dimension>) -> ValueInfoProto {
    typed_value_info(name, DataType::FLOAT, dims)
}

/// Builds the local network: the model up to `cut`, then the channels in `selection` (in that
/// order) as the output `features` of shape [N, D, H, W].
pub fn local_network(
    model: &Model,
    cut: &str,
    selection: &[i64],
) -> Result<ModelProto, SliceError> {
    if selection.is_empty() {
        return Err(SliceError::Selection("the selection is empty".into()));
    }
    let mut proto = model.proto.clone();
    let graph = proto.graph.as_mut().expect("a loaded model has a graph");
    let producer = producers(&graph.node);
    if !producer.contains_key(cut) {
        return Err(SliceError::UnknownCut {
            name: cut.to_string(),
            suggestions: "(no node produces this tensor)".into(),
        });
    }
    let needed = ancestors(&graph.node, &producer, cut);
    keep_needed(graph, &needed);
    let kept: HashSet<String> = graph.initializer.iter().map(|t| t.name.clone()).collect();

    let mut inputs = vec![image_input(graph, &model.input)];
    // IR < 4 requires every initializer to be listed among the graph inputs too.
    let old_ir = proto.ir_version < 4;
    if old_ir {
        inputs.extend(
            graph
                .input
                .iter()
                .filter(|i| kept.contains(&i.name))
                .cloned(),
        );
        let dims = vec![dim_value(selection.len() as i64)];
        inputs.push(typed_value_info(INDICES, DataType::INT64, dims));
    }
    graph.initializer.push(int64_initializer(
        INDICES,
        vec![selection.len() as i64],
        selection.to_vec(),
    ));
    graph.node.push(channel_gather(cut));
    graph.input = inputs;
    graph.output = vec![tensor_value_info(
        OUTPUT,
        vec![
            dim_param("N"),
            dim_value(selection.len() as i64),
            dim_param("FH"),
            dim_param("FW"),
        ],
    )];
    graph.value_info.clear();
    graph.name = format!("{}_local", graph.name);
    proto.doc_string = format!(
        "PrivyNet local network: the pretrained model up to `{cut}`, then a secret selection of {} channels.",
        selection.len()
    );
    Ok(proto)
}

/// Replaces every integer tensor of `local` that shape inference computed (`values`, from
/// [`crate::analyze::Analysis::shape_values`]) by a constant, and drops the nodes only those
/// tensors needed (`Shape`, `Gather`, `Div`, `Concat`...). A value that holds the batch size is
/// written only as a `Reshape` target, as `0` ("copy the input's dim"). So the local network
/// is plain constants and operators, which the burn local network builds; it then runs at the
/// analysed input size only, as a dynamo export's does. Returns how many tensors were frozen.
pub fn freeze_shapes(local: &mut ModelProto, values: &ShapeValues) -> usize {
    let old_ir = local.ir_version < 4;
    let graph = local.graph.as_mut().expect("a local network has a graph");
    let frozen = frozen_values(&graph.node, values);
    if frozen.is_empty() {
        return 0;
    }
    let mut producer = producers(&graph.node);
    producer.retain(|o, _| !frozen.contains_key(*o));
    let needed = ancestors(&graph.node, &producer, OUTPUT);
    let constants: Vec<TensorProto> = frozen
        .iter()
        .map(|(name, v)| int64_initializer(name, values[name].dims.clone(), v.clone()))
        .collect();
    let used = keep_needed(graph, &needed);
    let mut constants: Vec<TensorProto> = constants
        .into_iter()
        .filter(|t| used.contains(&t.name))
        .collect();
    constants.sort_by(|a, b| a.name.cmp(&b.name));
    let count = constants.len();
    let image = graph.input.first().map(|i| i.name.clone());
    graph
        .input
        .retain(|i| Some(&i.name) == image.as_ref() || used.contains(&i.name));
    if old_ir {
        graph.input.extend(constants.iter().map(|t| {
            let dims = t.dims.iter().map(|&d| dim_value(d)).collect();
            typed_value_info(&t.name, DataType::INT64, dims)
        }));
    }
    graph.initializer.extend(constants);
    count
}

/// The constant each of `values` takes in `nodes`, for the tensors every reader can take the
/// same one of: fully known, or a `Reshape` target whose only unknown is the batch (as `0`).
fn frozen_values(nodes: &[NodeProto], values: &ShapeValues) -> HashMap<String, Vec<i64>> {
    let mut frozen: HashMap<String, Vec<i64>> = HashMap::new();
    let mut refused: HashSet<&str> = HashSet::new();
    for n in nodes {
        for (k, input) in n.input.iter().enumerate() {
            let Some(v) = values.get(input) else {
                continue;
            };
            let batch_as_zero = n.op_type == "Reshape" && k == 1 && int(n, "allowzero", 0) == 0;
            let value: Option<Vec<i64>> = v
                .values
                .iter()
                .enumerate()
                .map(|(i, x)| x.or((batch_as_zero && i == 0).then_some(0)))
                .collect();
            match value {
                Some(value) if frozen.get(input).is_none_or(|f| *f == value) => {
                    frozen.insert(input.clone(), value);
                }
                _ => {
                    refused.insert(input);
                }
            }
        }
    }
    frozen.retain(|name, _| !refused.contains(name.as_str()));
    frozen
}

/// The image input with symbolic batch and spatial dims, so any input size runs.
fn image_input(graph: &onnx_protobuf::GraphProto, name: &str) -> ValueInfoProto {
    let image = graph
        .input
        .iter()
        .find(|i| i.name == name)
        .expect("the image input was found on load");
    let channels = dims(image)
        .and_then(|d| d.get(1).copied().flatten())
        .unwrap_or(3);
    tensor_value_info(
        name,
        vec![
            dim_param("N"),
            dim_value(channels),
            dim_param("H"),
            dim_param("W"),
        ],
    )
}

/// Where each tensor is computed: the index of the node that outputs it.
fn producers(nodes: &[NodeProto]) -> HashMap<&str, usize> {
    nodes
        .iter()
        .enumerate()
        .flat_map(|(i, n)| n.output.iter().map(move |o| (o.as_str(), i)))
        .collect()
}

/// Keeps the nodes of `graph` in `needed`, in graph order, and the initializers they read;
/// returns the names the kept nodes read.
fn keep_needed(graph: &mut GraphProto, needed: &HashSet<usize>) -> HashSet<String> {
    let nodes: Vec<NodeProto> = std::mem::take(&mut graph.node)
        .into_iter()
        .enumerate()
        .filter(|(i, _)| needed.contains(i))
        .map(|(_, n)| n)
        .collect();
    graph.node = nodes;
    let used: HashSet<String> = graph
        .node
        .iter()
        .flat_map(|n| n.input.iter().cloned())
        .collect();
    graph.initializer.retain(|t| used.contains(&t.name));
    used
}

/// An int64 initializer, encoded as the constant folder encodes its results.
fn int64_initializer(name: &str, dims: Vec<i64>, values: Vec<i64>) -> TensorProto {
    let c = fold::Const {
        dtype: DataType::INT64,
        dims,
        data: fold::Data::Int(values),
    };
    fold::encode(&c, name)
}

/// `Gather` over the channel axis of `cut` with the selection, producing `features`.
fn channel_gather(cut: &str) -> NodeProto {
    let mut axis = AttributeProto::new();
    axis.name = "axis".into();
    axis.type_ = AttributeType::INT.into();
    axis.i = 1;
    let mut gather = NodeProto::new();
    gather.op_type = "Gather".into();
    gather.name = "privynet_channel_selection".into();
    gather.input = vec![cut.to_string(), INDICES.to_string()];
    gather.output = vec![OUTPUT.to_string()];
    gather.attribute = vec![axis];
    gather
}

/// Serialises a model.
pub fn to_bytes(proto: &ModelProto) -> Result<Vec<u8>, SliceError> {
    proto
        .write_to_bytes()
        .map_err(|e| SliceError::Selection(format!("serialising the local network: {e}")))
}
