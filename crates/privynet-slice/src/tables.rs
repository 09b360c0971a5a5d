//! The slice stage's Arrow tables: the cut-point listing, the topology row and the selection.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};

use privynet_core::io::write_artifact;
use privynet_core::{ArtifactKind, Provenance, Topology};

use crate::SliceError;
use crate::analyze::CutPoint;
use crate::select::Selection;

fn batch(schema: &Schema, columns: Vec<ArrayRef>) -> RecordBatch {
    RecordBatch::try_new(Arc::new(schema.clone()), columns)
        .expect("columns should match the schema they were built for")
}

/// Writes the cut-point listing as Arrow.
pub fn write_cut_points(
    path: &Path,
    points: &[CutPoint],
    provenance: &Provenance,
) -> Result<(), SliceError> {
    let schema = Schema::new(vec![
        Field::new("index", DataType::Int32, false),
        Field::new("name", DataType::Utf8, false),
        Field::new("layer", DataType::Utf8, true),
        Field::new("op", DataType::Utf8, false),
        Field::new("channels", DataType::Int64, false),
        Field::new("height", DataType::Int64, false),
        Field::new("width", DataType::Int64, false),
        Field::new("macs", DataType::Int64, false),
        Field::new("params", DataType::Int64, false),
        Field::new("weight_bytes", DataType::Int64, false),
    ]);
    let i64s = |f: fn(&CutPoint) -> i64| -> ArrayRef {
        Arc::new(Int64Array::from_iter_values(points.iter().map(f)))
    };
    let b = batch(
        &schema,
        vec![
            Arc::new(Int32Array::from_iter_values(
                points.iter().map(|p| p.index as i32),
            )),
            Arc::new(StringArray::from_iter_values(
                points.iter().map(|p| p.name.as_str()),
            )),
            Arc::new(StringArray::from_iter(
                points.iter().map(|p| p.layer.as_deref()),
            )),
            Arc::new(StringArray::from_iter_values(
                points.iter().map(|p| p.op.as_str()),
            )),
            i64s(|p| p.channels),
            i64s(|p| p.height),
            i64s(|p| p.width),
            i64s(|p| p.macs),
            i64s(|p| p.params),
            i64s(|p| p.weight_bytes),
        ],
    );
    write_artifact(path, ArtifactKind::CutPoints, schema, provenance, &[b])?;
    Ok(())
}

/// The topology of `d` channels at cut point `p`.
pub fn topology(p: &CutPoint, input_size: i64, d: i64, method: &str) -> Topology {
    Topology {
        cut: p.name.clone(),
        layer: p.layer.clone(),
        input_size,
        cut_channels: p.channels,
        channels: d,
        method: method.to_string(),
        height: p.height,
        width: p.width,
        feature_len: d * p.height * p.width,
        // The Gather that selects channels does no arithmetic, so the cost is the cut's.
        macs: p.macs,
        params: p.params,
        weight_bytes: p.weight_bytes,
    }
}

/// Writes `topology.arrow` (one row).
pub fn write_topology(
    path: &Path,
    t: &Topology,
    provenance: &Provenance,
) -> Result<(), SliceError> {
    let schema = Schema::new(vec![
        Field::new("cut", DataType::Utf8, false),
        Field::new("layer", DataType::Utf8, true),
        Field::new("input_size", DataType::Int64, false),
        Field::new("cut_channels", DataType::Int64, false),
        Field::new("channels", DataType::Int64, false),
        Field::new("method", DataType::Utf8, false),
        Field::new("height", DataType::Int64, false),
        Field::new("width", DataType::Int64, false),
        Field::new("feature_len", DataType::Int64, false),
        Field::new("macs", DataType::Int64, false),
        Field::new("params", DataType::Int64, false),
        Field::new("weight_bytes", DataType::Int64, false),
    ]);
    let one = |v: i64| -> ArrayRef { Arc::new(Int64Array::from(vec![v])) };
    let b = batch(
        &schema,
        vec![
            Arc::new(StringArray::from(vec![t.cut.as_str()])),
            Arc::new(StringArray::from(vec![t.layer.as_deref()])),
            one(t.input_size),
            one(t.cut_channels),
            one(t.channels),
            Arc::new(StringArray::from(vec![t.method.as_str()])),
            one(t.height),
            one(t.width),
            one(t.feature_len),
            one(t.macs),
            one(t.params),
            one(t.weight_bytes),
        ],
    );
    write_artifact(path, ArtifactKind::Topology, schema, provenance, &[b])?;
    Ok(())
}

/// Writes `selection.arrow`, a LOCAL artifact.
pub fn write_selection(
    path: &Path,
    s: &Selection,
    provenance: &Provenance,
) -> Result<(), SliceError> {
    let schema = Schema::new(vec![
        Field::new("position", DataType::Int32, false),
        Field::new("channel", DataType::Int32, false),
        Field::new("fisher_score", DataType::Float64, true),
    ]);
    let scores: Vec<Option<f64>> = s
        .channels
        .iter()
        .map(|&c| s.scores.as_ref().map(|v| v[c as usize]))
        .collect();
    let b = batch(
        &schema,
        vec![
            Arc::new(Int32Array::from_iter_values(0..s.channels.len() as i32)),
            Arc::new(Int32Array::from_iter_values(
                s.channels.iter().map(|&c| c as i32),
            )),
            Arc::new(Float64Array::from(scores)),
        ],
    );
    let mut p = provenance.clone();
    p.set("seed", s.seed.to_string());
    p.set("method", s.method.to_string());
    write_artifact(path, ArtifactKind::Selection, schema, &p, &[b])?;
    Ok(())
}
