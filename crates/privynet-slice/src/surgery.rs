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
    AttributeProto, Message, ModelProto, NodeProto, TensorProto, ValueInfoProto,
    attribute_proto::AttributeType,
};

use crate::SliceError;
use crate::analyze::{ShapeValues, ancestors, int};
use crate::model::Model;
use crate::proto::{dim_param, dim_value, dims, typed_value_info};

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
    let producer: HashMap<&str, usize> = graph
        .node
        .iter()
        .enumerate()
        .flat_map(|(i, n)| n.output.iter().map(move |o| (o.as_str(), i)))
        .collect();
    if !producer.contains_key(cut) {
        return Err(SliceError::UnknownCut {
            name: cut.to_string(),
            suggestions: "(no node produces this tensor)".into(),
        });
    }
    let needed = ancestors(&graph.node, &producer, cut);
    let mut nodes: Vec<NodeProto> = graph
        .node
        .iter()
        .enumerate()
        .filter(|(i, _)| needed.contains(i))
        .map(|(_, n)| n.clone())
        .collect();
    let used: HashSet<String> = nodes.iter().flat_map(|n| n.input.iter().cloned()).collect();
    graph.initializer.retain(|t| used.contains(&t.name));
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
    graph.initializer.push(selection_indices(selection));
    nodes.push(channel_gather(cut));

    graph.node = nodes;
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
    // Each tensor's constant value, if every node that reads it can take the same one.
    let mut frozen: HashMap<&str, Vec<i64>> = HashMap::new();
    let mut refused: HashSet<&str> = HashSet::new();
    for n in &graph.node {
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
                Some(value) if frozen.get(input.as_str()).is_none_or(|f| *f == value) => {
                    frozen.insert(input, value);
                }
                _ => {
                    refused.insert(input);
                }
            }
        }
    }
    frozen.retain(|name, _| !refused.contains(name));
    if frozen.is_empty() {
        return 0;
    }
    let producer: HashMap<&str, usize> = graph
        .node
        .iter()
        .enumerate()
        .flat_map(|(i, n)| n.output.iter().map(move |o| (o.as_str(), i)))
        .filter(|(o, _)| !frozen.contains_key(o))
        .collect();
    let needed = ancestors(&graph.node, &producer, OUTPUT);
    let constants: Vec<TensorProto> = frozen
        .iter()
        .map(|(name, v)| {
            let mut t = TensorProto::new();
            t.name = name.to_string();
            t.data_type = DataType::INT64 as i32;
            t.dims = values[*name].dims.clone();
            t.raw_data = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            t
        })
        .collect();
    let nodes: Vec<NodeProto> = std::mem::take(&mut graph.node)
        .into_iter()
        .enumerate()
        .filter(|(i, _)| needed.contains(i))
        .map(|(_, n)| n)
        .collect();
    graph.node = nodes;
    let used: HashSet<&str> = graph
        .node
        .iter()
        .flat_map(|n| n.input.iter().map(String::as_str))
        .collect();
    let mut constants: Vec<TensorProto> = constants
        .into_iter()
        .filter(|t| used.contains(t.name.as_str()))
        .collect();
    constants.sort_by(|a, b| a.name.cmp(&b.name));
    let count = constants.len();
    let used: HashSet<String> = used.into_iter().map(str::to_string).collect();
    graph.initializer.retain(|t| used.contains(&t.name));
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

/// The secret selection as an int64 initializer, in output order.
fn selection_indices(selection: &[i64]) -> TensorProto {
    let mut indices = TensorProto::new();
    indices.name = INDICES.to_string();
    indices.data_type = DataType::INT64 as i32;
    indices.dims = vec![selection.len() as i64];
    indices.raw_data = selection.iter().flat_map(|v| v.to_le_bytes()).collect();
    indices
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
