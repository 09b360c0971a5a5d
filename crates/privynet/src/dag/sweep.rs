//! The sweep a DAG covers: the manifest's cuts and channel counts resolved against the model,
//! the topologies evaluated (the whole grid, or the sampled points plus the optimizer's last
//! choice), and per cut the all-channel point every narrower one is derived from.

use std::path::{Path, PathBuf};

use arrow::array::{Array, Float64Array, RecordBatch, StringArray};
use privynet_core::manifest::{Manifest, OptimizeMode, grid_channels, sample_channels};
use privynet_core::{ArtifactKind, column};
use privynet_slice::{analyze, model};

use crate::RunError;

/// A topology of the sweep, resolved against the model.
#[derive(Debug, Clone, PartialEq)]
pub struct SweepPoint {
    pub cut: String,
    pub label: String,
    pub channels: i64,
    pub cut_channels: i64,
}

fn dir_label(cut: &analyze::CutPoint, d: i64) -> String {
    format!("{}-d{d}", cut.label().replace('/', "_"))
}

/// Resolves the sweep against the model: every cut must exist and every D must fit. The
/// result is the whole grid, in manifest order of the cuts and ascending D.
pub fn resolve_sweep(m: &Manifest) -> Result<Vec<SweepPoint>, RunError> {
    let model = model::load(&m.model.path, m.model.input.as_deref())?;
    let a = analyze::analyze(&model, i64::from(m.model.input_size))?;
    let mut out = Vec::new();
    for cut in &m.sweep.cuts {
        let p = a.find(cut)?;
        for d in grid_channels(&m.sweep.channels, cut, p.channels).map_err(RunError::Dag)? {
            out.push(SweepPoint {
                cut: cut.clone(),
                label: dir_label(p, d),
                channels: d,
                cut_channels: p.channels,
            });
        }
    }
    if out.len() > m.sweep.max_topologies {
        return Err(RunError::Dag(format!(
            "the sweep resolves to {} topologies ({} cuts x their channel counts), more than \
             `sweep.max_topologies` = {}; shorten `sweep.channels` or `sweep.cuts`, or raise \
             the limit if the grid is meant",
            out.len(),
            m.sweep.cuts.len(),
            m.sweep.max_topologies
        )));
    }
    Ok(out)
}

/// Where the optimizer writes its decision.
pub fn decision_path(out: &Path) -> PathBuf {
    out.join("optimize").join("decision.arrow")
}

/// The topology a previous optimizer run chose, if its decision file is there and readable.
fn chosen_topology(out: &Path) -> Option<String> {
    let (path, batch) = decision_row(out)?;
    chosen_in(&batch, &path)
}

/// The decision file in `out` and its row, if it is there and readable.
fn decision_row(out: &Path) -> Option<(PathBuf, RecordBatch)> {
    let path = decision_path(out);
    if !path.is_file() {
        return None;
    }
    let (_, batches) = match privynet_core::io::read_arrow(&path, ArtifactKind::Decision) {
        Ok(x) => x,
        Err(e) => {
            tracing::warn!("ignoring {}: {e}", path.display());
            return None;
        }
    };
    let batch = batches.into_iter().find(|b| b.num_rows() > 0)?;
    Some((path, batch))
}

/// The topology a decision row names, if any.
fn chosen_in(batch: &RecordBatch, path: &Path) -> Option<String> {
    let topology = column::<StringArray>(batch, "topology", path).ok()?;
    (!topology.is_null(0)).then(|| topology.value(0).to_string())
}

/// The topology of the decision in `out` when it was measured (trained and attacked), not only
/// predicted: the choice to deploy.
pub(crate) fn settled_choice(out: &Path) -> Option<String> {
    let (path, batch) = decision_row(out)?;
    let topology = chosen_in(&batch, &path)?;
    let measured = column::<Float64Array>(&batch, "measured_val_accuracy", &path).ok()?;
    (!measured.is_null(0)).then_some(topology)
}

/// The topologies to evaluate (train and attack): the whole grid in exhaustive mode; else the
/// sampled points of each cut plus the optimizer's last choice, once it has made one.
pub fn evaluated(m: &Manifest, grid: &[SweepPoint]) -> Vec<SweepPoint> {
    if m.optimize.mode == OptimizeMode::Exhaustive {
        return grid.to_vec();
    }
    let chosen = chosen_topology(&m.out_dir());
    let mut out = Vec::new();
    for cut in &m.sweep.cuts {
        let own: Vec<&SweepPoint> = grid.iter().filter(|p| &p.cut == cut).collect();
        let Some(first) = own.first() else { continue };
        let ds: Vec<i64> = own.iter().map(|p| p.channels).collect();
        let sampled = sample_channels(&ds, first.cut_channels, &m.optimize.sample);
        out.extend(
            own.into_iter()
                .filter(|p| sampled.contains(&p.channels) || chosen.as_deref() == Some(&p.label))
                .cloned(),
        );
    }
    out
}

/// The evaluated points plus, for each cut whose all-channel point is not among them, that
/// point: per cut, all C channels are extracted once (in the selection's order); every
/// narrower D is derived from that, and the attack stage's attackers compute their own
/// guesses from it. An added point is sliced and extracted for those uses only (it is not
/// trained or attacked).
pub(crate) fn with_wide_points(sweep: &[SweepPoint]) -> Vec<SweepPoint> {
    let mut points = sweep.to_vec();
    for p in sweep {
        if !points
            .iter()
            .any(|q| q.cut == p.cut && q.channels == p.cut_channels)
        {
            points.push(SweepPoint {
                cut: p.cut.clone(),
                label: p
                    .label
                    .rsplit_once("-d")
                    .map_or(p.label.clone(), |(l, _)| format!("{l}-d{}", p.cut_channels)),
                channels: p.cut_channels,
                cut_channels: p.cut_channels,
            });
        }
    }
    points
}

/// The all-channel point of `p`'s cut among `points` (which [`with_wide_points`] completed).
pub(crate) fn wide_point<'a>(points: &'a [SweepPoint], p: &SweepPoint) -> &'a SweepPoint {
    points
        .iter()
        .find(|q| q.cut == p.cut && q.channels == p.cut_channels)
        .expect("every cut has its all-channel point")
}
