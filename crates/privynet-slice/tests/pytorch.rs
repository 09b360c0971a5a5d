//! A small graph in the shape PyTorch exports (EfficientNet's `Conv2dStaticSamePadding`): its
//! padding computed by a chain of constant nodes into a `Pad`, `Clip` bounds from `Constant`
//! nodes, a depthwise convolution, squeeze-excitation, a residual `Add`, `HardSwish`, and the
//! head's `Shape -> Gather -> Unsqueeze -> Concat -> Reshape` flatten. It folds, analyses with
//! PyTorch-style friendly names, and every cut's local network matches ONNX Runtime on the
//! original graph. Also: an unsupported op is named with the nearest cut before it, and padding
//! of the channel axis is refused by node.

mod common;

use common::*;
use onnx_protobuf::tensor_proto::DataType;
use onnx_protobuf::{Message, ModelProto};
use privynet_slice::{analyze, model, stage};

fn save(path: &std::path::Path, m: &ModelProto) {
    std::fs::write(path, m.write_to_bytes().unwrap()).unwrap();
}

#[test]
fn pytorch_patterns_fold_analyse_and_slice() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pytorch.onnx");
    let original = pytorch_model();
    save(&path, &original);
    let m = model::load(&path, None).unwrap();
    assert_eq!(m.input, "input");
    check_folded(&original, &m);
    for size in [9i64, 16] {
        let a = analyze::analyze(&m, size).unwrap();
        check_cut_points(&a, size);
        let worst = check_local_networks(dir.path(), &original, &m, &a, 2);
        eprintln!(
            "PyTorch-pattern graph at input {size}: {} cuts, max abs diff {worst:e}",
            a.points.len()
        );
    }
}

/// Checks that `m`, loaded from `original`, has its constant nodes folded and the stem's pads
/// as an initializer.
fn check_folded(original: &ModelProto, m: &model::Model) {
    let g = m.proto.graph.as_ref().unwrap();
    // Every constant node is gone; the head's Shape chain stays (it reads the input).
    let ops: Vec<&str> = g.node.iter().map(|n| n.op_type.as_str()).collect();
    for folded in ["Constant", "ConstantOfShape", "Slice", "Transpose", "Cast"] {
        assert!(!ops.contains(&folded), "{folded} left in {ops:?}");
    }
    assert_eq!(
        ops.iter()
            .filter(|o| ["Shape", "Gather", "Unsqueeze", "Concat", "Reshape"].contains(o))
            .count(),
        5,
        "{ops:?}"
    );
    assert_eq!(m.folded, original.graph.node.len() - g.node.len());
    let pads = g
        .initializer
        .iter()
        .find(|t| t.name == "/_conv_stem/static_padding/Cast_output_0")
        .expect("the folded pads are an initializer");
    assert_eq!(pads.data_type, DataType::INT64 as i32);
    assert_eq!(pads.dims, [8]);
    let v: Vec<i64> = pads
        .raw_data
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
        .collect();
    assert_eq!(
        v,
        [0, 0, 0, 0, 0, 0, 1, 1],
        "F.pad [0, 1, 0, 1] pads right and bottom"
    );
}

/// Checks the cut points of the analysis at input `size`: their layers, shapes and costs.
fn check_cut_points(a: &analyze::Analysis, size: i64) {
    assert_eq!(a.stopped_at, None, "the whole graph is analysed");
    let layers: Vec<&str> = a.points.iter().filter_map(|p| p.layer.as_deref()).collect();
    assert_eq!(
        layers,
        ["conv_stem", "swish", "blocks.0", "blocks.1", "avg_pooling"]
    );
    let pad = &a.points[0];
    assert_eq!(pad.op, "Pad");
    assert_eq!(
        (pad.channels, pad.height, pad.width),
        (2, size + 1, size + 1)
    );
    assert_eq!(
        (pad.params, pad.macs),
        (0, 0),
        "pads and pad value are not weights"
    );
    let s = (size + 1 - 3) / 2 + 1;
    let stem = a.find("conv_stem").unwrap();
    assert_eq!((stem.channels, stem.height, stem.width), (4, s, s));
    assert_eq!(stem.macs, 4 * s * s * 2 * 9);
    assert_eq!(stem.params, 4 * 2 * 9 + 4);
    assert_eq!(stem.weight_bytes, 4 * stem.params);
    let relu = a.find("swish").unwrap();
    assert_eq!(
        (relu.params, relu.macs),
        (stem.params, stem.macs),
        "clip bounds are not weights"
    );
    let dw = a.find("/_blocks.0/_depthwise_conv/Conv_output_0").unwrap();
    assert_eq!(
        dw.macs - stem.macs,
        4 * s * s * 9,
        "depthwise: one input channel per output"
    );
    assert_eq!(dw.params - stem.params, 4 * 9 + 4);
    let gate = a.find("/_blocks.0/Mul_output_0").unwrap();
    assert_eq!((gate.channels, gate.height, gate.width), (4, s, s));
    let block = a.find("blocks.0").unwrap();
    assert_eq!(block.name, "/_blocks.0/Add_output_0");
    assert_eq!(block.macs, dw.macs + 4 * 4 + 4 * s * s * 4);
    assert_eq!(block.params, dw.params + 2 * (16 + 4));
    let b1 = a.find("blocks.1").unwrap();
    assert_eq!(b1.name, "/_blocks.1/Mul_output_0");
    assert_eq!(
        b1.params,
        block.params + 4,
        "the per-channel scale is a weight"
    );
    let pool = a.points.last().unwrap();
    assert_eq!(pool.label(), "avg_pooling");
    assert_eq!((pool.channels, pool.height, pool.width), (4, 1, 1));
}

#[test]
fn nothing_to_fold_leaves_the_graph_as_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.onnx");
    let tiny = tiny_model();
    save(&path, &tiny);
    let m = model::load(&path, None).unwrap();
    assert_eq!(m.folded, 0);
    assert_eq!(
        m.proto.write_to_bytes().unwrap(),
        tiny.write_to_bytes().unwrap()
    );
}

#[test]
fn an_unsupported_op_is_named_with_the_last_cut_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut tiny = tiny_model();
    let g = tiny.graph.as_mut().unwrap();
    // p1 -> LpNormalization (node `norm`) -> n1 -> concat.
    let mut norm = node("LpNormalization", &["p1"], "n1", vec![int("axis", 1)]);
    norm.name = "norm".into();
    g.node.insert(3, norm);
    g.node[4].input = vec!["n1".into(), "n1".into()];
    let path = dir.path().join("tiny.onnx");
    save(&path, &tiny);
    let m = model::load(&path, None).unwrap();
    let a = analyze::analyze(&m, 6).unwrap();
    assert_eq!(
        a.stopped_at,
        Some(("norm".to_string(), "LpNormalization".to_string()))
    );
    let names: Vec<&str> = a.points.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["c1", "r1", "p1"]);
    let (_, note) = stage::listing(&a);
    let note = note.expect("a note where the listing stops");
    assert!(
        note.contains("`norm`") && note.contains("LpNormalization") && note.contains("`p1`"),
        "{note}"
    );
    let e = a.find("cat").unwrap_err().to_string();
    assert!(
        e.contains("`norm`") && e.contains("LpNormalization") && e.contains("`p1`"),
        "{e}"
    );
}

#[test]
fn padding_the_channel_axis_is_refused_by_node() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = pytorch_model();
    let g = m.graph.as_mut().unwrap();
    // F.pad over the last three axes: [0, 1, 0, 1, 1, 0] pads one channel in front.
    let start = g
        .node
        .iter()
        .position(|n| n.name == "/_conv_stem/static_padding/Constant_1")
        .unwrap();
    g.node[start] = constant(
        "/_conv_stem/static_padding",
        "_1",
        int_tensor("", &[6], &[0, 1, 0, 1, 1, 0]),
    );
    let cos = g
        .node
        .iter()
        .position(|n| n.name == "/_conv_stem/static_padding/Constant")
        .unwrap();
    g.node[cos] = constant("/_conv_stem/static_padding", "", int_tensor("", &[1], &[2]));
    let path = dir.path().join("pad.onnx");
    save(&path, &m);
    let loaded = model::load(&path, None).unwrap();
    let e = analyze::analyze(&loaded, 8).unwrap_err().to_string();
    assert!(
        e.contains("/_conv_stem/static_padding/Pad") && e.contains("channel"),
        "{e}"
    );
}

#[test]
fn oversized_constants_are_refused_by_node() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = pytorch_model();
    let g = m.graph.as_mut().unwrap();
    let cos = g
        .node
        .iter()
        .position(|n| n.name == "/_conv_stem/static_padding/Constant")
        .unwrap();
    g.node[cos] = constant(
        "/_conv_stem/static_padding",
        "",
        int_tensor("", &[2], &[1 << 30, 1 << 30]),
    );
    let path = dir.path().join("big.onnx");
    save(&path, &m);
    let e = model::load(&path, None).unwrap_err().to_string();
    assert!(
        e.contains("/_conv_stem/static_padding/ConstantOfShape") && e.contains("limit"),
        "{e}"
    );
}
