//! Graph surgery: keep only the nodes and weights needed to compute the cut tensor, append the
//! channel selection (a `Gather` over the channel axis with the selected indices), and expose it
//! as the single output `features`. The opset and IR version are kept; stale value infos are
//! dropped, since their shapes belong to the model's original input size.

use std::collections::{HashMap, HashSet};

use onnx_protobuf::tensor_proto::DataType;
use onnx_protobuf::tensor_shape_proto::Dimension;
use onnx_protobuf::{
    AttributeProto, Message, ModelProto, NodeProto, TensorProto, ValueInfoProto,
    attribute_proto::AttributeType,
};

use crate::SliceError;
use crate::analyze::ancestors;
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
