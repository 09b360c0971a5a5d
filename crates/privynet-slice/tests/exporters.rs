//! Both PyTorch exporters' forms of one small network (ShuffleNetV2's chunk and channel
//! shuffle, squeeze-excitation, a cast, the head): the same cut-point table (block names,
//! shapes, MACs, parameters) under either, every cut of each equal to ONNX Runtime on the
//! full graph, and the forms this support does not cover refused by node.

mod common;

use common::*;
use onnx_protobuf::{Message, ModelProto};
use privynet_slice::{analyze, model};

fn load(dir: &std::path::Path, name: &str, m: &ModelProto) -> model::Model {
    let path = dir.join(name);
    std::fs::write(&path, m.write_to_bytes().unwrap()).unwrap();
    model::load(&path, None).unwrap()
}

/// A cut-point row without its tensor name: layer, channels, height, width, MACs, parameters
/// and weight bytes.
type Row = (Option<String>, i64, i64, i64, i64, i64, i64);

/// The columns of a cut-point table that do not depend on tensor names.
fn table(a: &analyze::Analysis) -> Vec<Row> {
    a.points
        .iter()
        .map(|p| {
            let shape = (p.channels, p.height, p.width);
            (
                p.layer.clone(),
                shape.0,
                shape.1,
                shape.2,
                p.macs,
                p.params,
                p.weight_bytes,
            )
        })
        .collect()
}

#[test]
fn both_exporters_give_the_same_cut_point_table() {
    let dir = tempfile::tempdir().unwrap();
    let size = SHUFFLE_SIZE;
    let dynamo = analyze::analyze(
        &load(dir.path(), "d.onnx", &shuffle_model(Exporter::Dynamo)),
        size,
    )
    .unwrap();
    let torchscript = analyze::analyze(
        &load(dir.path(), "t.onnx", &shuffle_model(Exporter::TorchScript)),
        size,
    )
    .unwrap();
    for a in [&dynamo, &torchscript] {
        assert_eq!(a.stopped_at, None, "the whole graph is analysed");
    }
    assert_eq!(table(&dynamo), table(&torchscript));
    let layers: Vec<&str> = dynamo
        .points
        .iter()
        .filter_map(|p| p.layer.as_deref())
        .collect();
    assert_eq!(
        layers,
        [
            "stem.0",
            "stem.2",
            "branch2.0",
            "branch2.1",
            "blocks.0",
            "blocks.1",
            "avgpool"
        ]
    );
    // The chunk's halves are both cut points, as are the shuffle's result and the pool.
    let shapes: Vec<(i64, i64)> = dynamo
        .points
        .iter()
        .map(|p| (p.channels, p.height))
        .collect();
    assert_eq!(
        shapes,
        [
            (8, 8),
            (8, 8),
            (4, 8),
            (4, 8),
            (4, 8),
            (4, 8),
            (8, 8),
            (8, 8),
            (8, 1),
            (2, 1),
            (2, 1),
            (8, 1),
            (8, 1),
            (8, 8),
            (8, 8),
            (8, 1)
        ]
    );
    let block = dynamo.find("blocks.0").unwrap();
    assert_eq!(block.name, "view_1");
    assert_eq!(
        torchscript.find("blocks.0").unwrap().name,
        "/blocks/blocks.0/Reshape_1_output_0"
    );
    let s = size * size;
    assert_eq!(
        block.macs,
        8 * 3 * 9 * s + 4 * 4 * s,
        "stem and the branch's 1x1"
    );
    assert_eq!(block.params, 8 * 27 + 8 + 16 + 4);
}

#[test]
fn every_cut_of_both_forms_equals_onnx_runtime() {
    let dir = tempfile::tempdir().unwrap();
    for form in [Exporter::Dynamo, Exporter::TorchScript] {
        let original = shuffle_model(form);
        let m = load(dir.path(), "m.onnx", &original);
        let a = analyze::analyze(&m, SHUFFLE_SIZE).unwrap();
        let worst = check_local_networks(dir.path(), &original, &m, &a, 3);
        eprintln!(
            "{form:?} form: {} cuts, max abs diff {worst:e}",
            a.points.len()
        );
    }
}

/// Node `node_{fx}` of a dynamo-form graph.
fn node_mut<'g>(
    g: &'g mut onnx_protobuf::GraphProto,
    fx: &str,
) -> &'g mut onnx_protobuf::NodeProto {
    g.node
        .iter_mut()
        .find(|n| n.name == format!("node_{fx}"))
        .unwrap()
}

/// The dynamo form changed by `edit`, analysed: the error.
fn refused(edit: impl Fn(&mut onnx_protobuf::GraphProto)) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut m = shuffle_model(Exporter::Dynamo);
    edit(m.graph.as_mut().unwrap());
    let loaded = load(dir.path(), "bad.onnx", &m);
    analyze::analyze(&loaded, SHUFFLE_SIZE)
        .unwrap_err()
        .to_string()
}

#[test]
fn forms_outside_the_support_are_refused_by_node() {
    // A mean over the channels is not a global pool.
    let e = refused(|g| {
        g.initializer.push(int_tensor("channel_axis", &[1], &[1]));
        node_mut(g, "mean").input[1] = "channel_axis".into();
    });
    assert!(e.contains("node_mean") && e.contains("spatial"), "{e}");
    let e = refused(|g| node_mut(g, "transpose").attribute = vec![ints("perm", &[1, 0, 2, 3, 4])]);
    assert!(e.contains("node_transpose") && e.contains("batch"), "{e}");
    let e = refused(|g| node_mut(g, "_to_copy").attribute = vec![int("to", 7)]);
    assert!(e.contains("node__to_copy") && e.contains("float"), "{e}");
    let e = refused(|g| {
        node_mut(g, "split").attribute = vec![int("axis", 2), int("num_outputs", 2)];
    });
    assert!(e.contains("node_split") && e.contains("channels"), "{e}");
}
