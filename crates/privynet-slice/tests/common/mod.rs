//! Shared helpers of the slice crate's integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

use onnx_protobuf::tensor_proto::DataType;
use onnx_protobuf::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    ValueInfoProto, attribute_proto::AttributeType,
};
use privynet_slice::proto;

mod exporters;
mod ort;
#[allow(unused_imports)]
pub use exporters::*;
#[allow(unused_imports)]
pub use ort::*;

/// A file under the repository's data/ folder (filled by `make data`).
pub fn data(rel: &str) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../data")
        .join(rel);
    assert!(p.exists(), "{} is missing: run `make data`", p.display());
    p
}

/// A model file from data/models, else from the shared mirror next to the repository
/// (`../shared/data/models`, which data/models links). Where neither has it the test fails,
/// unless the user opted out of `mirror-models` (then `None`, and the caller returns).
pub fn model_file(name: &str) -> Option<PathBuf> {
    privynet_e2e::mirrored_model(name)
}

/// The largest absolute difference between two equally long slices.
pub fn max_abs_diff<'a>(
    a: impl IntoIterator<Item = &'a f32>,
    b: impl IntoIterator<Item = &'a f32>,
) -> f32 {
    a.into_iter()
        .zip(b)
        .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()))
}

pub fn int_tensor(name: &str, dims: &[i64], values: &[i64]) -> TensorProto {
    let mut t = TensorProto::new();
    t.name = name.into();
    t.dims = dims.to_vec();
    t.data_type = DataType::INT64 as i32;
    t.raw_data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    t
}

pub fn int(name: &str, v: i64) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.into();
    a.type_ = AttributeType::INT.into();
    a.i = v;
    a
}

pub fn float_attr(name: &str, v: f32) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.into();
    a.type_ = AttributeType::FLOAT.into();
    a.f = v;
    a
}

pub fn string(name: &str, v: &str) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.into();
    a.type_ = AttributeType::STRING.into();
    a.s = v.as_bytes().to_vec();
    a
}

pub fn tensor_attr(name: &str, t: TensorProto) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.into();
    a.type_ = AttributeType::TENSOR.into();
    a.t = Some(t).into();
    a
}

/// A float tensor input or output; `None` dims are the symbolic batch `N`.
pub fn value_info(name: &str, dims: &[Option<i64>]) -> ValueInfoProto {
    let dims = dims
        .iter()
        .map(|d| d.map_or_else(|| proto::dim_param("N"), proto::dim_value))
        .collect();
    proto::typed_value_info(name, DataType::FLOAT, dims)
}

pub fn tensor(name: &str, dims: &[i64], values: &[f32]) -> TensorProto {
    let mut t = TensorProto::new();
    t.name = name.into();
    t.dims = dims.to_vec();
    t.data_type = DataType::FLOAT as i32;
    t.raw_data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    t
}

pub fn ints(name: &str, v: &[i64]) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.into();
    a.type_ = AttributeType::INTS.into();
    a.ints = v.to_vec();
    a
}

pub fn node(op: &str, inputs: &[&str], output: &str, attrs: Vec<AttributeProto>) -> NodeProto {
    let mut n = NodeProto::new();
    n.op_type = op.into();
    n.name = output.into();
    n.input = inputs.iter().map(|s| s.to_string()).collect();
    n.output = vec![output.into()];
    n.attribute = attrs;
    n
}

/// The tiny test CNN: x[N,2,H,W] -> conv3x3 (3 out, pad 1) `c1` -> relu `r1` -> maxpool 2x2
/// `p1` -> concat(p1, p1) `cat`. Weights are `w[i] = (i % 7 - 3) / 10`, bias `[0.5, -0.5, 0]`.
pub fn tiny_model() -> ModelProto {
    let w: Vec<f32> = (0..3 * 2 * 9)
        .map(|i| ((i % 7) as f32 - 3.0) / 10.0)
        .collect();
    let mut g = GraphProto::new();
    g.name = "tiny".into();
    g.initializer = vec![
        tensor("w", &[3, 2, 3, 3], &w),
        tensor("b", &[3], &[0.5, -0.5, 0.0]),
    ];
    g.node = vec![
        node(
            "Conv",
            &["x", "w", "b"],
            "c1",
            vec![ints("kernel_shape", &[3, 3]), ints("pads", &[1, 1, 1, 1])],
        ),
        node("Relu", &["c1"], "r1", vec![]),
        node(
            "MaxPool",
            &["r1"],
            "p1",
            vec![ints("kernel_shape", &[2, 2]), ints("strides", &[2, 2])],
        ),
        {
            let mut n = node("Concat", &["p1", "p1"], "cat", vec![]);
            let mut a = AttributeProto::new();
            a.name = "axis".into();
            a.type_ = AttributeType::INT.into();
            a.i = 1;
            n.attribute = vec![a];
            n
        },
    ];
    model_of(g, "x", 2, "cat", 6)
}

/// A model of graph `g` (IR 8, opset 13) with its NCHW input `x` of `c_in` channels and output
/// `y` of `c_out`, batch and spatial sizes free.
pub fn model_of(mut g: GraphProto, x: &str, c_in: i64, y: &str, c_out: i64) -> ModelProto {
    g.input = vec![value_info(x, &[None, Some(c_in), None, None])];
    g.output = vec![value_info(y, &[None, Some(c_out), None, None])];
    model(g, 13)
}

/// A model (IR 8) of graph `g` in the default domain at `opset`.
pub fn model(g: GraphProto, opset: i64) -> ModelProto {
    let mut m = ModelProto::new();
    m.ir_version = 8;
    let mut op = OperatorSetIdProto::new();
    op.version = opset;
    m.opset_import = vec![op];
    m.graph = Some(g).into();
    m
}

/// The tiny model's `r1` (conv + relu) computed by hand, for input x[2][h][w].
pub fn tiny_r1(x: &[f32], h: usize, w: usize) -> Vec<f32> {
    let wt: Vec<f32> = (0..3 * 2 * 9)
        .map(|i| ((i % 7) as f32 - 3.0) / 10.0)
        .collect();
    let b = [0.5f32, -0.5, 0.0];
    let mut out = vec![0.0; 3 * h * w];
    for o in 0..3 {
        for y in 0..h {
            for xx in 0..w {
                let mut s = b[o];
                for c in 0..2 {
                    for ky in 0..3 {
                        for kx in 0..3 {
                            let (iy, ix) = (y as i64 + ky as i64 - 1, xx as i64 + kx as i64 - 1);
                            if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                                s += wt[((o * 2 + c) * 3 + ky) * 3 + kx]
                                    * x[(c * h + iy as usize) * w + ix as usize];
                            }
                        }
                    }
                }
                out[(o * h + y) * w + xx] = s.max(0.0);
            }
        }
    }
    out
}

/// A node as PyTorch names it: `{module}/{op}{suffix}`, output `{module}/{op}{suffix}_output_0`.
pub fn pt(
    module: &str,
    op: &str,
    suffix: &str,
    inputs: &[&str],
    attrs: Vec<AttributeProto>,
) -> NodeProto {
    let name = format!("{module}/{op}{suffix}");
    let mut n = node(op, inputs, &format!("{name}_output_0"), attrs);
    n.name = name;
    n
}

pub fn out(module: &str, op: &str, suffix: &str) -> String {
    format!("{module}/{op}{suffix}_output_0")
}

pub fn constant(module: &str, suffix: &str, t: TensorProto) -> NodeProto {
    pt(
        module,
        "Constant",
        suffix,
        &[],
        vec![tensor_attr("value", t)],
    )
}

pub fn float_scalar(v: f32) -> TensorProto {
    tensor("", &[], &[v])
}

/// Deterministic weights in [-0.5, 0.5).
pub fn weights(name: &str, dims: &[i64], seed: u64) -> TensorProto {
    let n: i64 = dims.iter().product();
    let mut s = seed;
    let v: Vec<f32> = (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        })
        .collect();
    tensor(name, dims, &v)
}

/// `Conv2dStaticSamePadding`'s padding: F.pad's `torch_pads` (last axis first) turned into ONNX
/// pads by the exporter's chain of constant nodes, into a `Pad` of `x`.
pub fn static_padding(module: &str, x: &str, torch_pads: &[i64]) -> Vec<NodeProto> {
    let m = format!("{module}/static_padding");
    let m = m.as_str();
    let c = |suffix: &str, v: &[i64]| constant(m, suffix, int_tensor("", &[v.len() as i64], v));
    vec![
        c("", &[4]),
        c("_1", torch_pads),
        pt(
            m,
            "ConstantOfShape",
            "",
            &[&out(m, "Constant", "")],
            vec![tensor_attr("value", int_tensor("", &[1], &[0]))],
        ),
        pt(
            m,
            "Concat",
            "",
            &[&out(m, "Constant", "_1"), &out(m, "ConstantOfShape", "")],
            vec![int("axis", 0)],
        ),
        c("_2", &[-1, 2]),
        pt(
            m,
            "Reshape",
            "",
            &[&out(m, "Concat", ""), &out(m, "Constant", "_2")],
            vec![],
        ),
        c("_3", &[0]),
        c("_4", &[-1]),
        c("_5", &[-9223372036854775807]),
        c("_6", &[-1]),
        pt(
            m,
            "Slice",
            "",
            &[
                &out(m, "Reshape", ""),
                &out(m, "Constant", "_4"),
                &out(m, "Constant", "_5"),
                &out(m, "Constant", "_3"),
                &out(m, "Constant", "_6"),
            ],
            vec![],
        ),
        pt(
            m,
            "Transpose",
            "",
            &[&out(m, "Slice", "")],
            vec![ints("perm", &[1, 0])],
        ),
        c("_7", &[-1]),
        pt(
            m,
            "Reshape",
            "_1",
            &[&out(m, "Transpose", ""), &out(m, "Constant", "_7")],
            vec![],
        ),
        pt(
            m,
            "Cast",
            "",
            &[&out(m, "Reshape", "_1")],
            vec![int("to", 7)],
        ),
        constant(m, "_8", float_scalar(0.0)),
        pt(
            m,
            "Pad",
            "",
            &[x, &out(m, "Cast", ""), &out(m, "Constant", "_8")],
            vec![string("mode", "constant")],
        ),
    ]
}

/// ReLU6 as PyTorch exports it: `Clip` with bounds from two `Constant` nodes.
pub fn relu6(module: &str, x: &str) -> Vec<NodeProto> {
    vec![
        constant(module, "", float_scalar(0.0)),
        constant(module, "_1", float_scalar(6.0)),
        pt(
            module,
            "Clip",
            "",
            &[
                x,
                &out(module, "Constant", ""),
                &out(module, "Constant", "_1"),
            ],
            vec![],
        ),
    ]
}

pub fn conv(module: &str, x: &str, w: &str, b: &str, attrs: Vec<AttributeProto>) -> NodeProto {
    pt(module, "Conv", "", &[x, w, b], attrs)
}

/// A small network as PyTorch exports EfficientNet, on input `input` [N, 2, H, W]: the stem's
/// padding computed by constant nodes into a `Pad`, ReLU6 as `Clip` with `Constant` bounds, a
/// block with a depthwise conv, squeeze-excitation and a residual `Add`, a block with
/// `HardSwish`, `HardSigmoid` and a per-channel scale, and the head's `Shape -> Gather ->
/// Unsqueeze -> Concat -> Reshape` flatten before a `Gemm` (output `logits`).
pub fn pytorch_model() -> ModelProto {
    let mut g = GraphProto::new();
    g.name = "pytorch_patterns".into();
    g.initializer = pytorch_weights();
    let mut nodes = pytorch_stem();
    let stem = out("/_swish", "Clip", "");
    nodes.extend(pytorch_block0(&stem));
    nodes.extend(pytorch_block1(&out("/_blocks.0", "Add", "")));
    nodes.extend(pytorch_head(&out("/_blocks.1", "Mul", "")));
    g.node = nodes;
    g.input = vec![value_info("input", &[None, Some(2), None, None])];
    g.output = vec![value_info("logits", &[None, Some(3)])];
    model(g, 17)
}

/// The initializers of [`pytorch_model`], named as PyTorch names them.
fn pytorch_weights() -> Vec<TensorProto> {
    vec![
        weights("onnx::Conv_1", &[4, 2, 3, 3], 1),
        weights("onnx::Conv_2", &[4], 2),
        weights("onnx::Conv_3", &[4, 1, 3, 3], 3),
        weights("onnx::Conv_4", &[4], 4),
        weights("onnx::Conv_5", &[4, 4, 1, 1], 5),
        weights("onnx::Conv_6", &[4], 6),
        weights("onnx::Conv_7", &[4, 4, 1, 1], 7),
        weights("onnx::Conv_8", &[4], 8),
        weights("scale", &[1, 4, 1, 1], 9),
        weights("_fc.weight", &[3, 4], 10),
        weights("_fc.bias", &[3], 11),
    ]
}

/// The first nodes of [`pytorch_model`]: the batch size from `Shape -> Gather` of the input (for
/// the head), then the stem: static padding, a stride-2 conv and ReLU6 (output `/_swish/Clip`).
fn pytorch_stem() -> Vec<NodeProto> {
    let mut nodes = vec![
        pt("", "Shape", "", &["input"], vec![]),
        constant("", "", int_tensor("", &[], &[0])),
        pt(
            "",
            "Gather",
            "",
            &[&out("", "Shape", ""), &out("", "Constant", "")],
            vec![int("axis", 0)],
        ),
    ];
    nodes.extend(static_padding("/_conv_stem", "input", &[0, 1, 0, 1]));
    nodes.push(conv(
        "/_conv_stem",
        &out("/_conv_stem/static_padding", "Pad", ""),
        "onnx::Conv_1",
        "onnx::Conv_2",
        vec![ints("kernel_shape", &[3, 3]), ints("strides", &[2, 2])],
    ));
    nodes.extend(relu6("/_swish", &out("/_conv_stem", "Conv", "")));
    nodes
}

/// Block 0 of [`pytorch_model`] on `stem`: depthwise conv (padding as an attribute), ReLU6,
/// squeeze-excitation, projection, residual (output `/_blocks.0/Add`).
fn pytorch_block0(stem: &str) -> Vec<NodeProto> {
    let b = "/_blocks.0";
    let mut nodes = vec![conv(
        &format!("{b}/_depthwise_conv"),
        stem,
        "onnx::Conv_3",
        "onnx::Conv_4",
        vec![
            ints("kernel_shape", &[3, 3]),
            ints("pads", &[1, 1, 1, 1]),
            int("group", 4),
        ],
    )];
    nodes.extend(relu6(
        &format!("{b}/_swish"),
        &out(&format!("{b}/_depthwise_conv"), "Conv", ""),
    ));
    let act = out(&format!("{b}/_swish"), "Clip", "");
    nodes.push(pt(b, "GlobalAveragePool", "", &[&act], vec![]));
    nodes.push(conv(
        &format!("{b}/_se_reduce"),
        &out(b, "GlobalAveragePool", ""),
        "onnx::Conv_5",
        "onnx::Conv_6",
        vec![ints("kernel_shape", &[1, 1])],
    ));
    nodes.push(pt(
        b,
        "Sigmoid",
        "",
        &[&out(&format!("{b}/_se_reduce"), "Conv", "")],
        vec![],
    ));
    // The [C, 1, 1] gate first: broadcasting must give [C, H, W].
    nodes.push(pt(b, "Mul", "", &[&out(b, "Sigmoid", ""), &act], vec![]));
    nodes.push(conv(
        &format!("{b}/_project_conv"),
        &out(b, "Mul", ""),
        "onnx::Conv_7",
        "onnx::Conv_8",
        vec![ints("kernel_shape", &[1, 1])],
    ));
    nodes.push(pt(
        b,
        "Add",
        "",
        &[&out(&format!("{b}/_project_conv"), "Conv", ""), stem],
        vec![],
    ));
    nodes
}

/// Block 1 of [`pytorch_model`] on `x`: HardSwish, HardSigmoid gate, a per-channel scale
/// (output `/_blocks.1/Mul`).
fn pytorch_block1(x: &str) -> Vec<NodeProto> {
    let b1 = "/_blocks.1";
    vec![
        pt(&format!("{b1}/_act"), "HardSwish", "", &[x], vec![]),
        pt(
            b1,
            "HardSigmoid",
            "",
            &[&out(&format!("{b1}/_act"), "HardSwish", "")],
            vec![],
        ),
        pt(
            b1,
            "Mul",
            "",
            &[&out(b1, "HardSigmoid", ""), "scale"],
            vec![],
        ),
    ]
}

/// The head of [`pytorch_model`] on `x`: global pooling, flatten by the batch size from `Shape`
/// (the stem's `/Gather`), classifier (output `logits`).
fn pytorch_head(x: &str) -> Vec<NodeProto> {
    let mut gemm = node(
        "Gemm",
        &[&out("", "Reshape", ""), "_fc.weight", "_fc.bias"],
        "logits",
        vec![int("transB", 1)],
    );
    gemm.name = "/_fc/Gemm".into();
    vec![
        pt("/_avg_pooling", "GlobalAveragePool", "", &[x], vec![]),
        constant("", "_1", int_tensor("", &[1], &[0])),
        pt(
            "",
            "Unsqueeze",
            "",
            &[&out("", "Gather", ""), &out("", "Constant", "_1")],
            vec![],
        ),
        constant("", "_2", int_tensor("", &[1], &[-1])),
        pt(
            "",
            "Concat",
            "",
            &[&out("", "Unsqueeze", ""), &out("", "Constant", "_2")],
            vec![int("axis", 0)],
        ),
        pt(
            "",
            "Reshape",
            "",
            &[
                &out("/_avg_pooling", "GlobalAveragePool", ""),
                &out("", "Concat", ""),
            ],
            vec![],
        ),
        gemm,
    ]
}
