//! Friendly layer names for cut points: the block a tensor belongs to (`fire3`, `layer2.1`,
//! `features.7`, `blocks.3`), from the tensor names the TorchScript exporter writes or the module
//! scopes the dynamo exporter records in each node's metadata, so that a cut by name is the same
//! cut under either exporter.

use std::collections::{HashMap, HashSet};

use onnx_protobuf::NodeProto;

/// Friendly layer names: the stem of each tensor's module path, given to the last tensor of each
/// stem in graph order.
///
/// For names without a leading `/` the stem is the part before the first `/`, else the name
/// without a trailing `_<digits>`: SqueezeNet's `conv1_1`, `conv1_2` become `conv1` at
/// `conv1_2` (after the ReLU), and `fire2/...` becomes `fire2` at `fire2/concat_1`.
///
/// PyTorch's TorchScript exporter names a tensor by its module path and op,
/// `/_blocks.3/_depthwise_conv/Conv_output_0` or `/layer1/layer1.1/relu_1/Relu_output_0`. Its
/// stem is the deepest module of the form `<name>.<index>` whose name no other module path
/// shares (`blocks.3`, `layer1.1`; a ResNet's `downsample.0` is in every stage, so its tensors
/// belong to `layer2.0`), without leading underscores; a path without such a module takes its
/// first module (`/_conv_stem/Conv_output_0` is `conv_stem`). So the last tensor of each block,
/// its output, is named after the block.
///
/// The dynamo exporter names tensors after the op (`relu_3`, `getitem_9`) and records the
/// module path in each node's metadata instead ([`scope_path`]), which gives the same paths; a
/// graph with that metadata takes its names from it alone.
pub fn friendly_names(nodes: &[NodeProto]) -> HashMap<&str, String> {
    let dynamo = nodes.iter().any(|n| name_scopes(n).is_some());
    // Each node's first output with the module path its name is taken from.
    let keyed: Vec<(&str, String)> = nodes
        .iter()
        .filter_map(|n| {
            let out = n.output.first()?.as_str();
            let key = if dynamo {
                scope_path(n)?
            } else {
                out.to_string()
            };
            Some((out, key))
        })
        .collect();
    // Every module path that each indexed module name appears at.
    let mut owners: HashMap<&str, HashSet<&str>> = HashMap::new();
    for (_, key) in &keyed {
        for (module, path) in module_path(key) {
            if is_indexed(module) {
                owners.entry(bare(module)).or_default().insert(path);
            }
        }
    }
    let stem = |key: &str| -> Option<String> {
        if !key.starts_with('/') {
            return Some(legacy_stem(key).to_string());
        }
        let path = module_path(key);
        let unique = path
            .iter()
            .rev()
            .map(|(m, _)| *m)
            .find(|m| is_indexed(m) && owners.get(bare(m)).is_some_and(|p| p.len() == 1));
        unique
            .or_else(|| path.first().map(|(m, _)| *m))
            .map(|m| bare(m).to_string())
    };
    let mut last: HashMap<String, &str> = HashMap::new();
    for (out, key) in &keyed {
        if let Some(s) = stem(key) {
            last.insert(s, out);
        }
    }
    // A tensor named as its own stem has no better name (SqueezeNet's `conv10`), unless the
    // name came from the dynamo exporter's scopes (its `relu` is the stem's own ReLU module).
    last.into_iter()
        .filter(|(s, o)| dynamo || s.as_str() != *o)
        .map(|(s, o)| (o, s))
        .collect()
}

/// The metadata key under which the dynamo exporter records a node's module scopes.
const NAME_SCOPES: &str = "pkg.torch.onnx.name_scopes";

/// A node's module scopes as the dynamo exporter records them: a Python list of strings, the
/// root (`''`), each module's qualified name from the outermost, then the node's own name:
/// `['', 'layer1', 'layer1.0', 'layer1.0.bn1', '_native_batch_norm_legit_no_training_1']`.
fn name_scopes(n: &NodeProto) -> Option<Vec<&str>> {
    let value = &n
        .metadata_props
        .iter()
        .find(|p| p.key == NAME_SCOPES)?
        .value;
    let inner = value.trim().strip_prefix('[')?.strip_suffix(']')?;
    // Module names hold neither quotes nor commas.
    Some(
        inner
            .split(',')
            .map(|s| s.trim().trim_matches(|c| c == '\'' || c == '"'))
            .collect(),
    )
}

/// The TorchScript exporter's module path of a node, built from the dynamo exporter's scopes:
/// `/layer1/layer1.0/relu/Relu` for scopes `layer1`, `layer1.0`, `layer1.0.relu`. Each module
/// is named relative to its parent, and an index keeps its parent's name (`layer1.0`,
/// `conv.0.0`), as TorchScript names them. A convolution takes its module from its weight's
/// name (`layer1.0.conv1.weight`): the exporter folds batch norm into the convolution and
/// leaves the norm's scopes on it.
pub fn scope_path(n: &NodeProto) -> Option<String> {
    let mut scopes = name_scopes(n)?;
    scopes.pop(); // the node's own name
    scopes.retain(|m| !m.is_empty());
    if n.op_type == "Conv"
        && let Some(module) = n.input.get(1).and_then(|w| w.strip_suffix(".weight"))
    {
        scopes.retain(|m| module.starts_with(m) && module[m.len()..].starts_with('.'));
        scopes.push(module);
    }
    let mut path = String::new();
    let mut parent: Option<(&str, String)> = None;
    for m in scopes {
        let local = match parent
            .as_ref()
            .and_then(|(p, local)| Some((m.strip_prefix(p)?.strip_prefix('.')?, local)))
        {
            Some((rest, local)) if rest.bytes().all(|b| b.is_ascii_digit()) => {
                format!("{local}.{rest}")
            }
            Some((rest, _)) => rest.to_string(),
            None => m.to_string(),
        };
        path.push('/');
        path.push_str(&local);
        parent = Some((m, local));
    }
    path.push('/');
    path.push_str(&n.op_type);
    Some(path)
}

/// SqueezeNet-style stems: the part before the first `/`, else the name without a trailing
/// `_<digits>`.
fn legacy_stem(name: &str) -> &str {
    if let Some((head, _)) = name.split_once('/') {
        return head;
    }
    match name.rsplit_once('_') {
        Some((head, tail)) if !tail.is_empty() && tail.bytes().all(|b| b.is_ascii_digit()) => head,
        _ => name,
    }
}

/// The modules of a PyTorch tensor name, each with the name's prefix up to it:
/// `/_blocks.3/_depthwise_conv/Conv_output_0` gives `(_blocks.3, /_blocks.3)` and
/// `(_depthwise_conv, /_blocks.3/_depthwise_conv)`; the last part names the op's output.
fn module_path(name: &str) -> Vec<(&str, &str)> {
    let Some(rest) = name.strip_prefix('/') else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut start = 1;
    for part in rest.split('/') {
        let end = start + part.len();
        out.push((part, &name[..end]));
        start = end + 1;
    }
    out.pop();
    out.retain(|(m, _)| !bare(m).is_empty());
    out
}

/// A module name of the form `<name>.<index>`: `_blocks.3`, `layer1.1`, `features.7.0`.
fn is_indexed(module: &str) -> bool {
    module.rsplit_once('.').is_some_and(|(head, tail)| {
        !bare(head).is_empty() && !tail.is_empty() && tail.bytes().all(|b| b.is_ascii_digit())
    })
}

/// A module name without PyTorch's leading underscores (`_blocks.3` is `blocks.3`).
fn bare(module: &str) -> &str {
    module.trim_start_matches('_')
}

#[cfg(test)]
mod tests {
    use onnx_protobuf::StringStringEntryProto;

    use super::*;

    fn scoped(op: &str, weight: &str, scopes: &str) -> NodeProto {
        let mut n = NodeProto::new();
        n.op_type = op.into();
        n.input = vec!["x".into(), weight.into()];
        let mut p = StringStringEntryProto::new();
        p.key = NAME_SCOPES.into();
        p.value = scopes.into();
        n.metadata_props.push(p);
        n
    }

    #[test]
    fn dynamo_scopes_become_torchscript_paths() {
        // MobileNetV2's inverted residual: indices keep their parent's name.
        let relu = scoped(
            "Clip",
            "",
            "['', 'features', 'features.7', 'features.7.conv', 'features.7.conv.0', \
             'features.7.conv.0.2', 'hardtanh_3']",
        );
        assert_eq!(
            scope_path(&relu).unwrap(),
            "/features/features.7/conv/conv.0/conv.0.2/Clip"
        );
        // Batch norm folded into the convolution: its module is the weight's, not the norm's.
        let conv = scoped(
            "Conv",
            "layer1.0.conv1.weight",
            "['', 'layer1', 'layer1.0', 'layer1.0.bn1', '_native_batch_norm_legit_no_training_1']",
        );
        assert_eq!(scope_path(&conv).unwrap(), "/layer1/layer1.0/conv1/Conv");
        // A ModuleList that is never called: its items sit under the root.
        let dw = scoped(
            "Conv",
            "w",
            "['', '_blocks.3', '_blocks.3._depthwise_conv', 'conv2d']",
        );
        assert_eq!(scope_path(&dw).unwrap(), "/_blocks.3/_depthwise_conv/Conv");
        let root = scoped("Reshape", "t", "['', 'view']");
        assert_eq!(scope_path(&root).unwrap(), "/Reshape");
        assert_eq!(scope_path(&NodeProto::new()), None);
    }
}
