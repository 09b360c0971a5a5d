//! The sweep a DAG covers: the manifest's cuts, channel counts and defences resolved against
//! the model, the topologies evaluated (the whole grid, or the sampled points of each series
//! plus the optimizer's last choice), per defended point the undefended base its features are
//! made from, and per cut the all-channel point every narrower one is derived from.

use std::path::{Path, PathBuf};

use arrow::array::{Array, Float64Array, RecordBatch, StringArray};
use privynet_core::defence::Defence;
use privynet_core::manifest::{
    Manifest, OptimizeMode, SamplePoint, grid_channels, sample_channels,
};
use privynet_core::{ArtifactKind, column};
use privynet_slice::{analyze, model};

use crate::RunError;

/// A topology of the sweep, resolved against the model.
#[derive(Debug, Clone, PartialEq)]
pub struct SweepPoint {
    pub cut: String,
    /// Its folder name: the base's label and the defence's suffix (`fire3-d8-n0.5-q8`).
    pub label: String,
    pub channels: i64,
    pub cut_channels: i64,
    /// What is applied to the base's features before they leave (none for a sliced point).
    pub defence: Defence,
}

impl SweepPoint {
    /// The label of the undefended topology its features are made from (its own when it is
    /// undefended): the same cut, channel count, selection and local network.
    pub fn base_label(&self) -> &str {
        let suffix = self.defence.suffix();
        self.label.strip_suffix(&suffix).unwrap_or(&self.label)
    }

    pub fn is_defended(&self) -> bool {
        !self.defence.is_none()
    }

    /// The undefended point its defence applies to (itself when undefended).
    pub fn base(&self) -> SweepPoint {
        SweepPoint {
            label: self.base_label().to_string(),
            defence: Defence::default(),
            ..self.clone()
        }
    }

    /// Whether `other` is the same topology (cut, channel count and defence).
    fn same(&self, other: &SweepPoint) -> bool {
        self.cut == other.cut && self.channels == other.channels && self.defence == other.defence
    }
}

/// The base label and the defence of a topology label as [`SweepPoint`] writes it
/// (`fire3-d8-n0.5-q8`: `fire3-d8`, noise 0.5, 8 bits). A base label ends in `-d<D>`, which
/// neither suffix parses as, so an undefended label comes back whole with no defence.
pub(crate) fn split_label(label: &str) -> (&str, Defence) {
    let mut defence = Defence::default();
    let mut base = label;
    if let Some((rest, bits)) = base.rsplit_once("-q")
        && let Ok(bits) = bits.parse::<u8>()
    {
        defence.bits = bits;
        base = rest;
    }
    if let Some((rest, noise)) = base.rsplit_once("-n")
        && let Ok(noise) = noise.parse::<f64>()
    {
        defence.noise = noise;
        base = rest;
    }
    // Only what the suffix writes back exactly is a defence.
    if format!("{base}{}", defence.suffix()) == label {
        (base, defence)
    } else {
        (label, Defence::default())
    }
}

/// Resolves the sweep against the model: every cut must exist and every D must fit. The
/// result is the whole grid: in manifest order of the cuts, ascending D, and per D each
/// defence of `sweep.noise` x `sweep.bits` (undefended first).
pub fn resolve_sweep(m: &Manifest) -> Result<Vec<SweepPoint>, RunError> {
    let model = model::load(&m.model.path, m.model.input.as_deref())?;
    let a = analyze::analyze(&model, i64::from(m.model.input_size))?;
    let defences = m.sweep.defences();
    let mut out = Vec::new();
    for cut in &m.sweep.cuts {
        let p = a.find(cut)?;
        for d in grid_channels(&m.sweep.channels, cut, p.channels).map_err(RunError::Dag)? {
            out.extend(defences.iter().map(|defence| SweepPoint {
                cut: cut.clone(),
                label: privynet_core::topology::label(p.label(), d, *defence),
                channels: d,
                cut_channels: p.channels,
                defence: *defence,
            }));
        }
    }
    if out.len() > m.sweep.max_topologies {
        return Err(RunError::Dag(format!(
            "the sweep resolves to {} topologies ({} cuts x their channel counts x {} defences), \
             more than `sweep.max_topologies` = {}; shorten `sweep.channels`, `sweep.cuts`, \
             `sweep.noise` or `sweep.bits`, or raise the limit if the grid is meant",
            out.len(),
            m.sweep.cuts.len(),
            defences.len(),
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
/// sampled points of each series (a cut under one defence) plus the optimizer's last choice,
/// once it has made one.
pub fn evaluated(m: &Manifest, grid: &[SweepPoint]) -> Vec<SweepPoint> {
    if m.optimize.mode == OptimizeMode::Exhaustive {
        return grid.to_vec();
    }
    let chosen = chosen_topology(&m.out_dir());
    sampled(grid, &m.optimize.sample, chosen.as_deref())
}

/// Per series of `grid` (a cut and a defence, in the grid's order) the channel counts
/// `sample` picks, plus the point labelled `chosen`.
fn sampled(grid: &[SweepPoint], sample: &[SamplePoint], chosen: Option<&str>) -> Vec<SweepPoint> {
    let mut series: Vec<(&str, Defence)> = Vec::new();
    for p in grid {
        if !series.contains(&(p.cut.as_str(), p.defence)) {
            series.push((p.cut.as_str(), p.defence));
        }
    }
    let mut out = Vec::new();
    for (cut, defence) in series {
        let own: Vec<&SweepPoint> = grid
            .iter()
            .filter(|p| p.cut == cut && p.defence == defence)
            .collect();
        let ds: Vec<i64> = own.iter().map(|p| p.channels).collect();
        let sampled = sample_channels(&ds, own[0].cut_channels, sample);
        out.extend(
            own.into_iter()
                .filter(|p| sampled.contains(&p.channels) || chosen == Some(p.label.as_str()))
                .cloned(),
        );
    }
    out
}

/// The evaluated points plus, for each defended one whose base is not among them, that base
/// (sliced and extracted: the defence is applied to its features), and for each cut whose
/// undefended all-channel point is not among them, that point: per cut, all C channels are
/// extracted once (in the selection's order); every narrower D is derived from that, and the
/// attack stage's attackers compute their own guesses from it. An added point is sliced and
/// extracted for those uses only (it is not trained or attacked).
pub(crate) fn with_wide_points(sweep: &[SweepPoint]) -> Vec<SweepPoint> {
    let mut points = sweep.to_vec();
    for p in sweep {
        let base = p.base();
        let wide = SweepPoint {
            label: base
                .label
                .rsplit_once("-d")
                .map_or(base.label.clone(), |(l, _)| {
                    format!("{l}-d{}", p.cut_channels)
                }),
            channels: p.cut_channels,
            ..base.clone()
        };
        for q in [base, wide] {
            if !points.iter().any(|r| r.same(&q)) {
                points.push(q);
            }
        }
    }
    points
}

/// The undefended all-channel point of `p`'s cut among `points` (which [`with_wide_points`]
/// completed).
pub(crate) fn wide_point<'a>(points: &'a [SweepPoint], p: &SweepPoint) -> &'a SweepPoint {
    points
        .iter()
        .find(|q| q.cut == p.cut && q.channels == p.cut_channels && !q.is_defended())
        .expect("every cut has its undefended all-channel point")
}

#[cfg(test)]
mod tests {
    use privynet_core::manifest::SampleRule;

    use super::*;

    fn point(cut: &str, channels: i64, noise: f64, bits: u8) -> SweepPoint {
        let defence = Defence::new(noise, bits).unwrap();
        SweepPoint {
            cut: cut.into(),
            label: format!("{cut}-d{channels}{}", defence.suffix()),
            channels,
            cut_channels: 64,
            defence,
        }
    }

    fn labels(points: &[SweepPoint]) -> Vec<&str> {
        points.iter().map(|p| p.label.as_str()).collect()
    }

    #[test]
    fn a_defended_label_names_its_base_and_splits_back() {
        let p = point("fire3", 8, 0.25, 8);
        assert_eq!(p.label, "fire3-d8-n0.25-q8");
        assert_eq!(p.base_label(), "fire3-d8");
        assert_eq!(p.base(), point("fire3", 8, 0.0, 32));
        assert_eq!(point("fire3", 8, 0.0, 32).base_label(), "fire3-d8");
        let (base, d) = split_label("fire3-d8-n0.25-q8");
        assert_eq!((base, d), ("fire3-d8", Defence::new(0.25, 8).unwrap()));
        assert_eq!(split_label("fire3-d8-q4").1, Defence::new(0.0, 4).unwrap());
        assert_eq!(
            split_label("fire3-d8-n0.5").1,
            Defence::new(0.5, 32).unwrap()
        );
        // Undefended labels, whatever their layer is called, come back whole.
        for label in ["fire3-d8", "conv-n1-d8", "x-q8-d4", "a-n1-q8x"] {
            assert_eq!(split_label(label), (label, Defence::default()), "{label}");
        }
    }

    #[test]
    fn defended_points_bring_their_base_and_the_undefended_wide_point() {
        let sweep = vec![point("fire3", 4, 0.5, 32), point("fire3", 8, 0.5, 8)];
        let points = with_wide_points(&sweep);
        assert_eq!(
            labels(&points),
            [
                "fire3-d4-n0.5",
                "fire3-d8-n0.5-q8",
                "fire3-d4",
                "fire3-d64",
                "fire3-d8"
            ]
        );
        for p in &sweep {
            assert_eq!(wide_point(&points, p).label, "fire3-d64");
        }
        // A defended all-channel point is not the wide point: its base is.
        let sweep = vec![point("fire3", 64, 0.5, 32), point("fire3", 4, 0.0, 32)];
        let points = with_wide_points(&sweep);
        assert_eq!(labels(&points), ["fire3-d64-n0.5", "fire3-d4", "fire3-d64"]);
        assert_eq!(wide_point(&points, &sweep[0]).label, "fire3-d64");
    }

    #[test]
    fn an_undefended_sweep_is_completed_as_before() {
        let sweep = vec![point("fire3", 4, 0.0, 32), point("conv1", 64, 0.0, 32)];
        let points = with_wide_points(&sweep);
        assert_eq!(labels(&points), ["fire3-d4", "conv1-d64", "fire3-d64"]);
        assert_eq!(wide_point(&points, &sweep[1]).label, "conv1-d64");
    }

    #[test]
    fn each_cut_and_defence_is_sampled_as_its_own_series() {
        let mut grid = Vec::new();
        for d in [4, 8, 16, 64] {
            for (noise, bits) in [(0.0, 32), (0.5, 8)] {
                grid.push(point("fire3", d, noise, bits));
            }
        }
        let sample = [
            SamplePoint::Rule(SampleRule::Smallest),
            SamplePoint::Rule(SampleRule::All),
        ];
        let got = sampled(&grid, &sample, None);
        assert_eq!(
            labels(&got),
            [
                "fire3-d4",
                "fire3-d64",
                "fire3-d4-n0.5-q8",
                "fire3-d64-n0.5-q8"
            ]
        );
        let got = sampled(&grid, &sample, Some("fire3-d16-n0.5-q8"));
        assert_eq!(
            labels(&got),
            [
                "fire3-d4",
                "fire3-d64",
                "fire3-d4-n0.5-q8",
                "fire3-d16-n0.5-q8",
                "fire3-d64-n0.5-q8"
            ]
        );
    }
}
