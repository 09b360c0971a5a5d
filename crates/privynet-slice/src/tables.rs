//! The slice stage's Arrow tables: the cut-point listing, the topology row and the selection.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, Int32Array, Int64Array, StringArray};

use privynet_core::io::write_artifact;
use privynet_core::{ArtifactKind, Provenance, Topology};

use crate::SliceError;
use crate::analyze::CutPoint;
use crate::select::Selection;

/// Writes one batch of `kind`, built from named columns by the kind's declared schema.
fn write_columns(
    path: &Path,
    kind: ArtifactKind,
    columns: Vec<(&str, ArrayRef)>,
    provenance: &Provenance,
) -> Result<(), SliceError> {
    let b = kind.batch(columns)?;
    write_artifact(path, kind, b.schema().as_ref().clone(), provenance, &[b])?;
    Ok(())
}

/// Writes the cut-point listing as Arrow.
pub fn write_cut_points(
    path: &Path,
    points: &[CutPoint],
    provenance: &Provenance,
) -> Result<(), SliceError> {
    let i64s = |f: fn(&CutPoint) -> i64| -> ArrayRef {
        Arc::new(Int64Array::from_iter_values(points.iter().map(f)))
    };
    let columns: Vec<(&str, ArrayRef)> = vec![
        (
            "index",
            Arc::new(Int32Array::from_iter_values(
                points.iter().map(|p| p.index as i32),
            )),
        ),
        (
            "name",
            Arc::new(StringArray::from_iter_values(
                points.iter().map(|p| p.name.as_str()),
            )),
        ),
        (
            "layer",
            Arc::new(StringArray::from_iter(
                points.iter().map(|p| p.layer.as_deref()),
            )),
        ),
        (
            "op",
            Arc::new(StringArray::from_iter_values(
                points.iter().map(|p| p.op.as_str()),
            )),
        ),
        ("channels", i64s(|p| p.channels)),
        ("height", i64s(|p| p.height)),
        ("width", i64s(|p| p.width)),
        ("macs", i64s(|p| p.macs)),
        ("params", i64s(|p| p.params)),
        ("weight_bytes", i64s(|p| p.weight_bytes)),
    ];
    write_columns(path, ArtifactKind::CutPoints, columns, provenance)
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
        noise: 0.0,
        bits: 32,
    }
}

/// Writes `topology.arrow` (one row).
pub fn write_topology(
    path: &Path,
    t: &Topology,
    provenance: &Provenance,
) -> Result<(), SliceError> {
    write_columns(path, ArtifactKind::Topology, t.columns(), provenance)
}

/// Writes `selection.arrow`, a LOCAL artifact.
pub fn write_selection(
    path: &Path,
    s: &Selection,
    provenance: &Provenance,
) -> Result<(), SliceError> {
    let scores: Vec<Option<f64>> = s
        .channels
        .iter()
        .map(|&c| s.scores.as_ref().map(|v| v[c as usize]))
        .collect();
    let columns: Vec<(&str, ArrayRef)> = vec![
        (
            "position",
            Arc::new(Int32Array::from_iter_values(0..s.channels.len() as i32)),
        ),
        (
            "channel",
            Arc::new(Int32Array::from_iter_values(
                s.channels.iter().map(|&c| c as i32),
            )),
        ),
        ("fisher_score", Arc::new(Float64Array::from(scores))),
    ];
    let mut p = provenance.clone();
    p.set("seed", s.seed.to_string());
    p.set("method", s.method.to_string());
    write_columns(path, ArtifactKind::Selection, columns, &p)
}
