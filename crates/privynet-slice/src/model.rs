//! Loading an ONNX model safely: protobuf parse with a clear error for non-ONNX files, external
//! data read only from inside the model's folder, constant subgraphs folded into initializers
//! (`fold`), fp16 weights upcast to fp32 (exactly), and the image input found.

use std::path::{Component, Path};

use onnx_protobuf::tensor_proto::{DataLocation, DataType};
use onnx_protobuf::type_proto::Value as TypeValue;
use onnx_protobuf::{Message, ModelProto, TensorProto, ValueInfoProto};
use protobuf::Enum;

use crate::{SliceError, proto};

/// A loaded model with its graph's image input.
#[derive(Debug, Clone)]
pub struct Model {
    pub proto: ModelProto,
    /// The name of the graph input that takes images (NCHW, rank 4, not an initializer).
    pub input: String,
    /// Whether any weights were stored as fp16 (and upcast to fp32 on load).
    pub was_fp16: bool,
    /// Bytes each initializer takes as stored in the file (before any upcast): local storage.
    pub stored_bytes: std::collections::HashMap<String, u64>,
    /// How many nodes constant folding replaced by initializers (0: the graph is as in the file).
    pub folded: usize,
}

/// Reads and checks an ONNX file. `input` names the image input when the graph has several.
/// Constant subgraphs are folded into initializers (see [`crate::fold`]).
pub fn load(path: &Path, input: Option<&str>) -> Result<Model, SliceError> {
    let bytes = std::fs::read(path).map_err(|e| SliceError::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    let mut proto = ModelProto::parse_from_bytes(&bytes).map_err(|e| SliceError::NotOnnx {
        path: path.to_path_buf(),
        message: format!("protobuf decode failed ({e})"),
    })?;
    let graph = proto.graph.as_ref();
    if proto.ir_version == 0 || graph.is_none_or(|g| g.node.is_empty()) {
        return Err(SliceError::NotOnnx {
            path: path.to_path_buf(),
            message: "no IR version or no graph nodes".into(),
        });
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    load_external_data(&mut proto, path, dir)?;
    check_order(&proto, path)?;
    let folded = crate::fold::fold(&mut proto)?;
    let stored_bytes = proto
        .graph
        .as_ref()
        .expect("checked: the model has a graph")
        .initializer
        .iter()
        .map(|t| {
            let n: i64 = t.dims.iter().product();
            (
                t.name.clone(),
                n.max(0) as u64 * proto::elem_bytes(t.data_type),
            )
        })
        .collect();
    let was_fp16 = upcast_fp16(&mut proto);
    let input = find_image_input(&proto, path, input)?;
    Ok(Model {
        proto,
        input,
        was_fp16,
        stored_bytes,
        folded,
    })
}

/// ONNX requires a graph's nodes in topological order. A node that reads what only it or a later
/// node produces means a cycle (or a scrambled file), which shape inference and surgery would
/// otherwise misread as an unknown tensor somewhere downstream.
fn check_order(proto: &ModelProto, path: &Path) -> Result<(), SliceError> {
    let g = proto
        .graph
        .as_ref()
        .expect("checked: the model has a graph");
    let mut producer: std::collections::HashMap<&str, usize> = Default::default();
    for (i, n) in g.node.iter().enumerate() {
        for o in &n.output {
            producer.entry(o.as_str()).or_insert(i);
        }
    }
    for (i, n) in g.node.iter().enumerate() {
        for inp in n.input.iter().filter(|s| !s.is_empty()) {
            if let Some(&j) = producer.get(inp.as_str())
                && j >= i
            {
                return Err(SliceError::Model {
                    path: path.to_path_buf(),
                    message: format!(
                        "node `{}` ({}) reads `{inp}`, which node `{}` produces at or after it: \
                         the graph has a cycle or its nodes are not in topological order, as \
                         ONNX requires",
                        n.name, n.op_type, g.node[j].name
                    ),
                });
            }
        }
    }
    Ok(())
}

/// Inlines external tensor data, refusing any location that would read outside the model's folder.
fn load_external_data(proto: &mut ModelProto, path: &Path, dir: &Path) -> Result<(), SliceError> {
    let graph = proto
        .graph
        .as_mut()
        .expect("checked: the model has a graph");
    for t in &mut graph.initializer {
        if t.data_location.enum_value_or_default() != DataLocation::EXTERNAL {
            continue;
        }
        let get = |k: &str| {
            t.external_data
                .iter()
                .find(|e| e.key == k)
                .map(|e| e.value.clone())
        };
        let location = get("location").ok_or_else(|| SliceError::Model {
            path: path.to_path_buf(),
            message: format!(
                "initializer `{}` has external data without a location",
                t.name
            ),
        })?;
        let rel = Path::new(&location);
        let escapes = rel.is_absolute()
            || rel.components().any(|c| {
                matches!(
                    c,
                    Component::ParentDir | Component::RootDir | Component::Prefix(_)
                )
            });
        if escapes {
            return Err(SliceError::Model {
                path: path.to_path_buf(),
                message: format!(
                    "initializer `{}` points its external data at `{location}`, outside the model's folder; refusing to read it",
                    t.name
                ),
            });
        }
        let file = dir.join(rel);
        let data = std::fs::read(&file).map_err(|e| SliceError::Io {
            path: file.clone(),
            source: e,
        })?;
        let offset: usize = get("offset").and_then(|v| v.parse().ok()).unwrap_or(0);
        let length: usize = get("length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(data.len().saturating_sub(offset));
        let slice = data.get(offset..offset + length).ok_or_else(|| SliceError::Model {
            path: file.clone(),
            message: format!(
                "external data of `{}` (offset {offset}, length {length}) runs past the file's {} bytes",
                t.name,
                data.len()
            ),
        })?;
        t.raw_data = slice.to_vec();
        t.external_data.clear();
        t.data_location = DataLocation::DEFAULT.into();
    }
    Ok(())
}

/// The f32 values of a float or float16 tensor.
pub fn tensor_f32(t: &TensorProto) -> Option<Vec<f32>> {
    match DataType::from_i32(t.data_type)? {
        DataType::FLOAT => {
            if !t.float_data.is_empty() {
                Some(t.float_data.clone())
            } else {
                Some(
                    t.raw_data
                        .chunks_exact(4)
                        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                        .collect(),
                )
            }
        }
        DataType::FLOAT16 => {
            if !t.raw_data.is_empty() {
                Some(
                    t.raw_data
                        .chunks_exact(2)
                        .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                        .collect(),
                )
            } else {
                // fp16 values without raw data are stored as the low 16 bits of int32_data.
                Some(
                    t.int32_data
                        .iter()
                        .map(|&v| half::f16::from_bits(v as u16).to_f32())
                        .collect(),
                )
            }
        }
        _ => None,
    }
}

/// Upcasts fp16 initializers and fp16 inputs, outputs and value infos to fp32. fp16 to fp32 is
/// exact, so the local network computes with the very weights the model holds, in fp32.
fn upcast_fp16(proto: &mut ModelProto) -> bool {
    let graph = proto
        .graph
        .as_mut()
        .expect("checked: the model has a graph");
    let mut any = false;
    for t in &mut graph.initializer {
        if t.data_type == DataType::FLOAT16 as i32 {
            let values = tensor_f32(t).expect("a float16 tensor should convert");
            t.raw_data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            t.int32_data.clear();
            t.data_type = DataType::FLOAT as i32;
            any = true;
        }
    }
    for vi in graph
        .input
        .iter_mut()
        .chain(graph.output.iter_mut())
        .chain(graph.value_info.iter_mut())
    {
        if let Some(TypeValue::TensorType(tt)) = vi.type_.as_mut().and_then(|t| t.value.as_mut())
            && tt.elem_type == DataType::FLOAT16 as i32
        {
            tt.elem_type = DataType::FLOAT as i32;
            any = true;
        }
    }
    any
}

fn find_image_input(
    proto: &ModelProto,
    path: &Path,
    wanted: Option<&str>,
) -> Result<String, SliceError> {
    let graph = proto
        .graph
        .as_ref()
        .expect("checked: the model has a graph");
    let inits: std::collections::HashSet<&str> =
        graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let candidates: Vec<&ValueInfoProto> = graph
        .input
        .iter()
        .filter(|i| !inits.contains(i.name.as_str()))
        .filter(|i| proto::dims(i).is_some_and(|d| d.len() == 4))
        .collect();
    if let Some(name) = wanted {
        return candidates
            .iter()
            .find(|i| i.name == name)
            .map(|i| i.name.clone())
            .ok_or_else(|| SliceError::Model {
                path: path.to_path_buf(),
                message: format!(
                    "no image input named `{name}`; image inputs (rank 4, not weights): [{}]",
                    candidates
                        .iter()
                        .map(|i| i.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
    }
    match candidates.as_slice() {
        [one] => Ok(one.name.clone()),
        [] => Err(SliceError::Model {
            path: path.to_path_buf(),
            message: "the graph has no image input (a rank-4 NCHW input that is not a weight)"
                .into(),
        }),
        many => Err(SliceError::Model {
            path: path.to_path_buf(),
            message: format!(
                "the graph has several image inputs ({}); name one with `model.input`",
                many.iter()
                    .map(|i| i.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }),
    }
}
