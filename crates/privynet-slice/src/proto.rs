//! Small helpers over the ONNX protobuf types that the loader, the constant folder, the shape
//! inference and the surgery all use. They live here, below those modules, so that none of
//! them imports another only for a helper (which made import circles: model <-> fold,
//! fold -> surgery -> analyze -> fold).

use onnx_protobuf::ValueInfoProto;
use onnx_protobuf::tensor_proto::DataType;
use onnx_protobuf::tensor_shape_proto::Dimension;
use onnx_protobuf::tensor_shape_proto::dimension::Value as Dim;
use onnx_protobuf::type_proto::{Tensor, Value as TypeValue};
use onnx_protobuf::{TensorShapeProto, TypeProto};
use protobuf::Enum;

/// Bytes per element of an ONNX tensor data type.
pub fn elem_bytes(data_type: i32) -> u64 {
    match DataType::from_i32(data_type) {
        Some(DataType::FLOAT16 | DataType::BFLOAT16 | DataType::INT16 | DataType::UINT16) => 2,
        Some(DataType::DOUBLE | DataType::INT64 | DataType::UINT64) => 8,
        Some(DataType::INT8 | DataType::UINT8 | DataType::BOOL) => 1,
        _ => 4,
    }
}

/// The dims of a value info (`None` for symbolic dims).
pub fn dims(vi: &ValueInfoProto) -> Option<Vec<Option<i64>>> {
    match vi.type_.as_ref()?.value.as_ref()? {
        TypeValue::TensorType(tt) => Some(
            tt.shape
                .as_ref()?
                .dim
                .iter()
                .map(|d| match d.value {
                    Some(Dim::DimValue(v)) => Some(v),
                    _ => None,
                })
                .collect(),
        ),
        _ => None,
    }
}

/// A fixed dimension of `v`.
pub fn dim_value(v: i64) -> Dimension {
    let mut d = Dimension::new();
    d.value = Some(Dim::DimValue(v));
    d
}

/// A symbolic dimension named `name` (the batch, say).
pub fn dim_param(name: &str) -> Dimension {
    let mut d = Dimension::new();
    d.value = Some(Dim::DimParam(name.to_string()));
    d
}

/// A tensor value info: `name`, of `elem_type`, with `dims`.
pub fn typed_value_info(name: &str, elem_type: DataType, dims: Vec<Dimension>) -> ValueInfoProto {
    let mut shape = TensorShapeProto::new();
    shape.dim = dims;
    let mut tt = Tensor::new();
    tt.elem_type = elem_type as i32;
    tt.shape = Some(shape).into();
    let mut ty = TypeProto::new();
    ty.value = Some(TypeValue::TensorType(tt));
    let mut vi = ValueInfoProto::new();
    vi.name = name.to_string();
    vi.type_ = Some(ty).into();
    vi
}
