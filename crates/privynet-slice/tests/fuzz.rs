//! Fuzzed ONNX loading and shape inference: the tiny CNN the tests build, mutated as bytes and
//! as a graph (attribute values out of range, weights of other shapes, inputs dropped or
//! renamed, absurd input sizes), must load and analyse or be refused by name; never a panic.
//! The same for the PyTorch-pattern graph with its constants (pads, slice bounds, shapes, axes)
//! and the folded ops' attributes replaced by extreme values: constant folding and the shape
//! inference after it refuse by name or go on.
//! `make test` runs proptest's default 256 cases per property; `make fuzz` sets
//! `PROPTEST_CASES` (which proptest's default configuration reads) to 20,000.

mod common;

use common::*;
use onnx_protobuf::Message;
use privynet_slice::{analyze, model};
use proptest::prelude::*;

/// Integer values that break arithmetic written for sane models.
fn extreme() -> impl Strategy<Value = i64> {
    prop_oneof![
        Just(0i64),
        Just(-1),
        Just(i64::MAX),
        Just(i64::MIN),
        Just(1 << 40),
        -8i64..16,
    ]
}

/// One change to the tiny model's graph.
#[derive(Debug, Clone)]
enum GraphEdit {
    /// Node, attribute, position in its ints, new value.
    AttrInt(usize, usize, usize, i64),
    /// Initializer, dimension, new value.
    Dim(usize, usize, i64),
    /// Node, input position.
    DropInput(usize, usize),
    /// Node, input position: read a name nothing produces.
    RenameInput(usize, usize),
    /// Node: change its operator to another supported one.
    Op(usize, &'static str),
}

fn graph_edit() -> impl Strategy<Value = GraphEdit> {
    prop_oneof![
        (0usize..8, 0usize..4, 0usize..4, extreme())
            .prop_map(|(n, a, i, v)| GraphEdit::AttrInt(n, a, i, v)),
        (0usize..2, 0usize..4, extreme()).prop_map(|(t, d, v)| GraphEdit::Dim(t, d, v)),
        (0usize..8, 0usize..3).prop_map(|(n, i)| GraphEdit::DropInput(n, i)),
        (0usize..8, 0usize..3).prop_map(|(n, i)| GraphEdit::RenameInput(n, i)),
        (
            0usize..8,
            proptest::sample::select(vec!["Conv", "Relu", "MaxPool", "Concat", "AveragePool"])
        )
            .prop_map(|(n, op)| GraphEdit::Op(n, op)),
    ]
}

fn apply_graph(m: &mut onnx_protobuf::ModelProto, edits: &[GraphEdit]) {
    let g = m.graph.as_mut().unwrap();
    for e in edits {
        match e {
            GraphEdit::AttrInt(n, a, i, v) => {
                let k = g.node.len();
                let node = &mut g.node[n % k];
                let at = *a % node.attribute.len().max(1);
                if let Some(attr) = node.attribute.get_mut(at) {
                    if attr.ints.is_empty() {
                        attr.i = *v;
                    } else {
                        let len = attr.ints.len();
                        attr.ints[i % len] = *v;
                    }
                } else {
                    node.attribute.push(ints("strides", &[*v, *v]));
                }
            }
            GraphEdit::Dim(t, d, v) => {
                let k = g.initializer.len();
                let dims = &mut g.initializer[t % k].dims;
                let len = dims.len();
                dims[d % len] = *v;
            }
            GraphEdit::DropInput(n, i) => {
                let k = g.node.len();
                let node = &mut g.node[n % k];
                if !node.input.is_empty() {
                    let len = node.input.len();
                    node.input.remove(i % len);
                }
            }
            GraphEdit::RenameInput(n, i) => {
                let k = g.node.len();
                let node = &mut g.node[n % k];
                if !node.input.is_empty() {
                    let len = node.input.len();
                    node.input[i % len] = "nowhere".into();
                }
            }
            GraphEdit::Op(n, op) => {
                let k = g.node.len();
                g.node[n % k].op_type = (*op).into();
            }
        }
    }
}

/// Loads `bytes` as a model file and analyses it at `size`: either may succeed, but a refusal
/// must name what it refuses: loading names the file, analysis the node (and its op) or the
/// file.
fn load_and_analyse(bytes: &[u8], size: i64) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fuzz.onnx");
    std::fs::write(&path, bytes).unwrap();
    match model::load(&path, None) {
        Ok(m) => {
            if let Err(e) = analyze::analyze(&m, size) {
                let msg = e.to_string();
                assert!(
                    msg.contains("node `") || msg.contains("fuzz.onnx"),
                    "an analysis refusal names no node or file: {msg}"
                );
            }
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(
                msg.contains("fuzz.onnx") || msg.contains("node `"),
                "a load refusal names no file: {msg}"
            );
        }
    }
}

/// One change to the PyTorch-pattern graph's constants.
#[derive(Debug, Clone)]
enum ConstEdit {
    /// The k-th `Constant` node now holds these int64 values, of these dims.
    Values(usize, Vec<i64>, Vec<i64>),
    /// A node's first attribute value (an axis, a permutation's first entry, a cast's type).
    Attr(usize, i64),
}

fn const_edit() -> impl Strategy<Value = ConstEdit> {
    prop_oneof![
        (
            0usize..64,
            proptest::collection::vec(extreme(), 0..9),
            proptest::collection::vec(prop_oneof![Just(-1i64), 0i64..4, Just(1 << 40)], 0..3),
        )
            .prop_map(|(k, v, d)| ConstEdit::Values(k, v, d)),
        (0usize..128, extreme()).prop_map(|(n, v)| ConstEdit::Attr(n, v)),
    ]
}

fn apply_consts(m: &mut onnx_protobuf::ModelProto, edits: &[ConstEdit]) {
    let g = m.graph.as_mut().unwrap();
    let constants: Vec<usize> = (0..g.node.len())
        .filter(|&i| g.node[i].op_type == "Constant")
        .collect();
    for e in edits {
        match e {
            ConstEdit::Values(k, v, d) => {
                let i = constants[k % constants.len()];
                // Dims that may disagree with the values: the folder must notice.
                let dims = if d.is_empty() {
                    vec![v.len() as i64]
                } else {
                    d.clone()
                };
                g.node[i].attribute = vec![tensor_attr("value", int_tensor("", &dims, v))];
            }
            ConstEdit::Attr(n, v) => {
                let k = g.node.len();
                if let Some(a) = g.node[n % k].attribute.first_mut() {
                    if a.ints.is_empty() {
                        a.i = *v;
                    } else {
                        a.ints[0] = *v;
                    }
                }
            }
        }
    }
}

proptest! {
    /// Any change to the constants of a PyTorch export folds and analyses or is refused by
    /// name; never a panic.
    #[test]
    fn mutated_pytorch_constants_never_panic(
        edits in proptest::collection::vec(const_edit(), 1..4),
        size in prop_oneof![Just(1i64), 2i64..40, Just(4096)],
    ) {
        let mut m = pytorch_model();
        apply_consts(&mut m, &edits);
        load_and_analyse(&m.write_to_bytes().unwrap(), size);
    }

    /// Any graph edit, at any input size, analyses or is refused; never a panic.
    #[test]
    fn mutated_graphs_never_panic(
        edits in proptest::collection::vec(graph_edit(), 1..4),
        size in prop_oneof![Just(0i64), Just(1), 2i64..64, Just(4096)],
    ) {
        let mut m = tiny_model();
        apply_graph(&mut m, &edits);
        load_and_analyse(&m.write_to_bytes().unwrap(), size);
    }

    /// Any byte flips, cuts or insertions in the file load and analyse or are refused.
    #[test]
    fn mutated_model_bytes_never_panic(
        flips in proptest::collection::vec((any::<usize>(), 1u8..=255), 0..6),
        cut in proptest::option::of(any::<usize>()),
    ) {
        let mut b = tiny_model().write_to_bytes().unwrap();
        let len = b.len();
        for (i, x) in flips {
            b[i % len] ^= x;
        }
        if let Some(c) = cut {
            b.truncate(c % len);
        }
        load_and_analyse(&b, 8);
    }
}
