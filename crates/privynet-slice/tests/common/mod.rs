//! Shared helpers of the slice crate's integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

use onnx_protobuf::tensor_proto::DataType;
use onnx_protobuf::tensor_shape_proto::Dimension;
use onnx_protobuf::tensor_shape_proto::dimension::Value as Dim;
use onnx_protobuf::type_proto::{Tensor, Value as TypeValue};
use onnx_protobuf::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto, attribute_proto::AttributeType,
};

/// A file under the repository's data/ folder (filled by `make data`).
pub fn data(rel: &str) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../data")
        .join(rel);
    assert!(p.exists(), "{} is missing: run `make data`", p.display());
    p
}

pub fn value_info(name: &str, dims: &[Option<i64>]) -> ValueInfoProto {
    let mut shape = TensorShapeProto::new();
    shape.dim = dims
        .iter()
        .map(|d| {
            let mut x = Dimension::new();
            x.value = Some(match d {
                Some(v) => Dim::DimValue(*v),
                None => Dim::DimParam("N".into()),
            });
            x
        })
        .collect();
    let mut tt = Tensor::new();
    tt.elem_type = DataType::FLOAT as i32;
    tt.shape = Some(shape).into();
    let mut ty = TypeProto::new();
    ty.value = Some(TypeValue::TensorType(tt));
    let mut vi = ValueInfoProto::new();
    vi.name = name.into();
    vi.type_ = Some(ty).into();
    vi
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
    g.input = vec![value_info("x", &[None, Some(2), None, None])];
    g.output = vec![value_info("cat", &[None, Some(6), None, None])];
    let mut m = ModelProto::new();
    m.ir_version = 8;
    let mut op = OperatorSetIdProto::new();
    op.version = 13;
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
