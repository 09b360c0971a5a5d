//! One small network in the two forms PyTorch's exporters write (ShuffleNetV2's and
//! MobileNetV3's patterns): the dynamo exporter's (tensors named after the op, module scopes in
//! node metadata, `Split`, constant reshape targets, `ReduceMean`, batch norm folded into a
//! convolution that keeps the norm's scopes) and the TorchScript exporter's (tensors named by
//! module path, `chunk` as two `Slice`s whose bounds and the shuffle's reshape targets are
//! computed from `Shape`, `GlobalAveragePool`, `Flatten`).
//!
//! The network, on input `input` [N, 3, 8, 8]: `stem` (conv 3->8 3x3 pad 1, ReLU); `blocks.0`,
//! a ShuffleNetV2 unit (chunk in two, `branch2` = conv 1x1 4->4 and ReLU on the second half,
//! concat, channel shuffle of 2 groups); `blocks.1`, squeeze-excitation (mean, conv 8->2, ReLU,
//! conv 2->8, HardSigmoid, product) and a `Cast` to fp32; `avgpool`; `fc` (8->3, `logits`).

use onnx_protobuf::{GraphProto, ModelProto, NodeProto, StringStringEntryProto, TensorProto};

use super::*;

/// Which exporter's form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exporter {
    Dynamo,
    TorchScript,
}

/// The spatial size the dynamo form's reshape targets hold (the TorchScript form computes them).
pub const SHUFFLE_SIZE: i64 = 8;

fn shuffle_weights() -> Vec<TensorProto> {
    vec![
        weights("stem.0.weight", &[8, 3, 3, 3], 1),
        weights("stem.0.bias", &[8], 2),
        weights("blocks.0.branch2.0.weight", &[4, 4, 1, 1], 3),
        weights("blocks.0.branch2.0.bias", &[4], 4),
        weights("blocks.1.fc1.weight", &[2, 8, 1, 1], 5),
        weights("blocks.1.fc1.bias", &[2], 6),
        weights("blocks.1.fc2.weight", &[8, 2, 1, 1], 7),
        weights("blocks.1.fc2.bias", &[8], 8),
        weights("fc.weight", &[3, 8], 9),
        weights("fc.bias", &[3], 10),
    ]
}

/// The network in `form`.
pub fn shuffle_model(form: Exporter) -> ModelProto {
    let mut g = GraphProto::new();
    g.name = "shuffle".into();
    g.initializer = shuffle_weights();
    let (nodes, consts, opset) = match form {
        Exporter::Dynamo => (dynamo_nodes(), dynamo_constants(), 18),
        Exporter::TorchScript => (torchscript_nodes(), torchscript_constants(), 17),
    };
    g.initializer.extend(consts);
    g.node = nodes;
    g.input = vec![value_info("input", &[None, Some(3), None, None])];
    g.output = vec![value_info("logits", &[None, Some(3)])];
    model(g, opset)
}

/// A node as the dynamo exporter writes it: named `node_{fx}`, output `fx`, and the module
/// scopes (qualified names from the outermost) in its metadata.
fn dy(
    op: &str,
    inputs: &[&str],
    fx: &str,
    scopes: &[&str],
    attrs: Vec<AttributeProto>,
) -> NodeProto {
    let mut n = node(op, inputs, fx, attrs);
    n.name = format!("node_{fx}");
    let list: Vec<String> = std::iter::once("")
        .chain(scopes.iter().copied())
        .chain([fx])
        .map(|s| format!("'{s}'"))
        .collect();
    let mut p = StringStringEntryProto::new();
    p.key = "pkg.torch.onnx.name_scopes".into();
    p.value = format!("[{}]", list.join(", "));
    n.metadata_props.push(p);
    n
}

fn dynamo_constants() -> Vec<TensorProto> {
    let s = SHUFFLE_SIZE;
    vec![
        int_tensor("val_0", &[5], &[-1, 2, 4, s, s]),
        int_tensor("val_1", &[4], &[-1, 8, s, s]),
        int_tensor("val_2", &[2], &[-1, -2]),
        int_tensor("val_3", &[2], &[-1, 8]),
    ]
}

fn dynamo_nodes() -> Vec<NodeProto> {
    let conv_attrs = || vec![ints("kernel_shape", &[1, 1])];
    let bn = "_native_batch_norm_legit_no_training";
    let mut split = dy(
        "Split",
        &["relu"],
        "split",
        &["blocks.0"],
        vec![int("axis", 1), int("num_outputs", 2)],
    );
    split.output = vec!["split_split_0".into(), "split_split_1".into()];
    vec![
        // Batch norm folded into the stem's convolution: the node keeps the norm's scopes.
        dy(
            "Conv",
            &["input", "stem.0.weight", "stem.0.bias"],
            "getitem",
            &["stem", "stem.1", bn],
            vec![ints("kernel_shape", &[3, 3]), ints("pads", &[1, 1, 1, 1])],
        ),
        dy("Relu", &["getitem"], "relu", &["stem", "stem.2"], vec![]),
        split,
        dy(
            "Conv",
            &[
                "split_split_1",
                "blocks.0.branch2.0.weight",
                "blocks.0.branch2.0.bias",
            ],
            "conv2d",
            &["blocks.0", "blocks.0.branch2", "blocks.0.branch2.0"],
            conv_attrs(),
        ),
        dy(
            "Relu",
            &["conv2d"],
            "relu_1",
            &["blocks.0", "blocks.0.branch2", "blocks.0.branch2.1"],
            vec![],
        ),
        dy(
            "Concat",
            &["split_split_0", "relu_1"],
            "cat",
            &["blocks.0"],
            vec![int("axis", 1)],
        ),
        dy(
            "Reshape",
            &["cat", "val_0"],
            "view",
            &["blocks.0"],
            vec![int("allowzero", 1)],
        ),
        dy(
            "Transpose",
            &["view"],
            "transpose",
            &["blocks.0"],
            vec![ints("perm", &[0, 2, 1, 3, 4])],
        ),
        dy(
            "Reshape",
            &["transpose", "val_1"],
            "view_1",
            &["blocks.0"],
            vec![int("allowzero", 1)],
        ),
        dy(
            "ReduceMean",
            &["view_1", "val_2"],
            "mean",
            &["blocks.1"],
            vec![],
        ),
        dy(
            "Conv",
            &["mean", "blocks.1.fc1.weight", "blocks.1.fc1.bias"],
            "conv2d_1",
            &["blocks.1", "blocks.1.fc1"],
            conv_attrs(),
        ),
        dy(
            "Relu",
            &["conv2d_1"],
            "relu_2",
            &["blocks.1", "blocks.1.relu"],
            vec![],
        ),
        dy(
            "Conv",
            &["relu_2", "blocks.1.fc2.weight", "blocks.1.fc2.bias"],
            "conv2d_2",
            &["blocks.1", "blocks.1.fc2"],
            conv_attrs(),
        ),
        dy(
            "HardSigmoid",
            &["conv2d_2"],
            "hardsigmoid",
            &["blocks.1", "blocks.1.gate"],
            vec![float_attr("alpha", 1.0 / 6.0)],
        ),
        dy(
            "Mul",
            &["view_1", "hardsigmoid"],
            "mul",
            &["blocks.1"],
            vec![],
        ),
        dy(
            "Cast",
            &["mul"],
            "_to_copy",
            &["blocks.1"],
            vec![int("to", 1)],
        ),
        dy(
            "ReduceMean",
            &["_to_copy", "val_2"],
            "mean_1",
            &["avgpool"],
            vec![],
        ),
        dy(
            "Reshape",
            &["mean_1", "val_3"],
            "view_2",
            &[],
            vec![int("allowzero", 1)],
        ),
        dy(
            "Gemm",
            &["view_2", "fc.weight", "fc.bias"],
            "logits",
            &["fc"],
            vec![int("transB", 1)],
        ),
    ]
}

/// A node as the TorchScript exporter writes it: named `{path}/{op}{suffix}`, output
/// `{path}/{op}{suffix}_output_0`.
fn ts(
    path: &str,
    op: &str,
    suffix: &str,
    inputs: &[&str],
    attrs: Vec<AttributeProto>,
) -> NodeProto {
    pt(path, op, suffix, inputs, attrs)
}

fn torchscript_constants() -> Vec<TensorProto> {
    vec![
        int_tensor("c0", &[], &[0]),
        int_tensor("c1", &[], &[1]),
        int_tensor("c2", &[], &[2]),
        int_tensor("c3", &[], &[3]),
        int_tensor("one", &[1], &[1]),
        int_tensor("two", &[1], &[2]),
        int_tensor("zero", &[1], &[0]),
        int_tensor("axis1", &[1], &[1]),
        int_tensor("index1", &[1], &[1]),
        int_tensor("axes0", &[1], &[0]),
        int_tensor("minus1", &[1], &[-1]),
    ]
}

/// `x.chunk(2, dim=1)` as TorchScript exports it: two `Slice`s whose bounds are computed from
/// the channel count (`(c + 1) / 2`, then times 1 and 2).
fn ts_chunk(m: &str, x: &str) -> Vec<NodeProto> {
    let o = |op: &str, s: &str| out(m, op, s);
    vec![
        ts(m, "Shape", "", &[x], vec![]),
        ts(
            m,
            "Gather",
            "",
            &[&o("Shape", ""), "index1"],
            vec![int("axis", 0)],
        ),
        ts(m, "Add", "", &[&o("Gather", ""), "one"], vec![]),
        ts(m, "Div", "", &[&o("Add", ""), "two"], vec![]),
        ts(m, "Mul", "", &[&o("Div", ""), "one"], vec![]),
        ts(m, "Slice", "", &[x, "zero", &o("Mul", ""), "axis1"], vec![]),
        ts(m, "Mul", "_1", &[&o("Div", ""), "two"], vec![]),
        ts(
            m,
            "Slice",
            "_1",
            &[x, &o("Mul", ""), &o("Mul", "_1"), "axis1"],
            vec![],
        ),
    ]
}

/// ShuffleNetV2's `channel_shuffle(x, 2)` as TorchScript exports it: the targets
/// `[b, 2, c / 2, h, w]` and `[b, -1, h, w]` from `Shape`, integer division as `Div` then `Cast`.
fn ts_shuffle(m: &str, x: &str) -> Vec<NodeProto> {
    let o = |op: &str, s: &str| out(m, op, s);
    let mut nodes = vec![ts(m, "Shape", "_1", &[x], vec![])];
    for (k, c) in ["c0", "c1", "c2", "c3"].iter().enumerate() {
        let s = format!("_{}", k + 1);
        nodes.push(ts(
            m,
            "Gather",
            &s,
            &[&o("Shape", "_1"), c],
            vec![int("axis", 0)],
        ));
    }
    nodes.extend([
        ts(m, "Div", "_1", &[&o("Gather", "_2"), "c2"], vec![]),
        ts(m, "Cast", "", &[&o("Div", "_1")], vec![int("to", 7)]),
        ts(m, "Cast", "_1", &[&o("Cast", "")], vec![int("to", 7)]),
    ]);
    let parts = [
        o("Gather", "_1"),
        "two".into(),
        o("Cast", "_1"),
        o("Gather", "_3"),
        o("Gather", "_4"),
    ];
    let mut unsqueezed = Vec::new();
    for (k, p) in parts.iter().enumerate() {
        if p == "two" {
            unsqueezed.push(p.clone());
            continue;
        }
        let s = if k == 0 {
            String::new()
        } else {
            format!("_{k}")
        };
        nodes.push(ts(m, "Unsqueeze", &s, &[p, "axes0"], vec![]));
        unsqueezed.push(o("Unsqueeze", &s));
    }
    let refs: Vec<&str> = unsqueezed.iter().map(String::as_str).collect();
    nodes.push(ts(m, "Concat", "_1", &refs, vec![int("axis", 0)]));
    nodes.push(ts(
        m,
        "Reshape",
        "",
        &[x, &o("Concat", "_1")],
        vec![int("allowzero", 0)],
    ));
    nodes.push(ts(
        m,
        "Transpose",
        "",
        &[&o("Reshape", "")],
        vec![ints("perm", &[0, 2, 1, 3, 4])],
    ));
    let back = [refs[0], "minus1", refs[3], refs[4]];
    nodes.push(ts(m, "Concat", "_2", &back, vec![int("axis", 0)]));
    nodes.push(ts(
        m,
        "Reshape",
        "_1",
        &[&o("Transpose", ""), &o("Concat", "_2")],
        vec![int("allowzero", 0)],
    ));
    nodes
}

fn torchscript_nodes() -> Vec<NodeProto> {
    let k1 = || vec![ints("kernel_shape", &[1, 1])];
    let b0 = "/blocks/blocks.0";
    let b1 = "/blocks/blocks.1";
    let mut nodes = vec![
        ts(
            "/stem/stem.0",
            "Conv",
            "",
            &["input", "stem.0.weight", "stem.0.bias"],
            vec![ints("kernel_shape", &[3, 3]), ints("pads", &[1, 1, 1, 1])],
        ),
        ts(
            "/stem/stem.2",
            "Relu",
            "",
            &[&out("/stem/stem.0", "Conv", "")],
            vec![],
        ),
    ];
    let stem = out("/stem/stem.2", "Relu", "");
    nodes.extend(ts_chunk(b0, &stem));
    let br = "/blocks/blocks.0/branch2";
    nodes.extend([
        ts(
            &format!("{br}/branch2.0"),
            "Conv",
            "",
            &[
                &out(b0, "Slice", "_1"),
                "blocks.0.branch2.0.weight",
                "blocks.0.branch2.0.bias",
            ],
            k1(),
        ),
        ts(
            &format!("{br}/branch2.1"),
            "Relu",
            "",
            &[&out(&format!("{br}/branch2.0"), "Conv", "")],
            vec![],
        ),
        ts(
            b0,
            "Concat",
            "",
            &[
                &out(b0, "Slice", ""),
                &out(&format!("{br}/branch2.1"), "Relu", ""),
            ],
            vec![int("axis", 1)],
        ),
    ]);
    nodes.extend(ts_shuffle(b0, &out(b0, "Concat", "")));
    let x = out(b0, "Reshape", "_1");
    nodes.extend([
        ts(b1, "GlobalAveragePool", "", &[&x], vec![]),
        ts(
            &format!("{b1}/fc1"),
            "Conv",
            "",
            &[
                &out(b1, "GlobalAveragePool", ""),
                "blocks.1.fc1.weight",
                "blocks.1.fc1.bias",
            ],
            k1(),
        ),
        ts(
            &format!("{b1}/relu"),
            "Relu",
            "",
            &[&out(&format!("{b1}/fc1"), "Conv", "")],
            vec![],
        ),
        ts(
            &format!("{b1}/fc2"),
            "Conv",
            "",
            &[
                &out(&format!("{b1}/relu"), "Relu", ""),
                "blocks.1.fc2.weight",
                "blocks.1.fc2.bias",
            ],
            k1(),
        ),
        ts(
            &format!("{b1}/gate"),
            "HardSigmoid",
            "",
            &[&out(&format!("{b1}/fc2"), "Conv", "")],
            vec![float_attr("alpha", 1.0 / 6.0)],
        ),
        ts(
            b1,
            "Mul",
            "",
            &[&x, &out(&format!("{b1}/gate"), "HardSigmoid", "")],
            vec![],
        ),
        ts(b1, "Cast", "", &[&out(b1, "Mul", "")], vec![int("to", 1)]),
        ts(
            "/avgpool",
            "GlobalAveragePool",
            "",
            &[&out(b1, "Cast", "")],
            vec![],
        ),
        ts(
            "",
            "Flatten",
            "",
            &[&out("/avgpool", "GlobalAveragePool", "")],
            vec![int("axis", 1)],
        ),
    ]);
    let mut gemm = ts(
        "/fc",
        "Gemm",
        "",
        &[&out("", "Flatten", ""), "fc.weight", "fc.bias"],
        vec![int("transB", 1)],
    );
    gemm.output = vec!["logits".into()];
    nodes.push(gemm);
    nodes
}
