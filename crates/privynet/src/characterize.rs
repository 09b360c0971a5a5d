//! The characterization table (characterization.parquet): per evaluated topology, its local
//! cost, its defence and the bytes it sends per image, validation and test accuracy and
//! privacy loss (per attacker mode, in the worst case, and the Fisher-information bound of a
//! noisy defence), gathered from the topology's own artifacts. The optimizer chooses from it on
//! validation accuracy; test accuracy is carried for the report only.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BooleanArray, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray,
};
use privynet_core::io::{read_arrow, write_artifact};
use privynet_core::{ArtifactKind, CoreError, Provenance, Topology, column};
use privynet_store::Store;

use crate::RunError;

/// What one topology's run measured.
#[derive(Debug, Clone)]
pub struct TopologyResults {
    /// The topology's folder name, e.g. `fire3-d8`.
    pub label: String,
    pub topology: Topology,
    pub val_accuracy: f64,
    pub test_accuracy: f64,
    pub train_seconds: f64,
    /// Bytes per image of the features trained on, as stored (null for a summary written
    /// before it was measured).
    pub bytes_per_image: Option<f64>,
    /// One per attacker mode the audit ran; never empty.
    pub modes: Vec<ModeResult>,
    /// The privacy floor (PSNR, SSIM) of the audit.
    pub floor: (f64, f64),
    /// All modes' attack seconds together.
    pub attack_seconds: f64,
    /// The dFIL PSNR bound of a noisy defence and its 95% interval (lo, hi); null without
    /// noise.
    pub psnr_bound: Option<f64>,
    pub psnr_bound_ci: (Option<f64>, Option<f64>),
}

/// One attacker (a knowledge mode and a family) of a topology's audit.
#[derive(Debug, Default, Clone)]
pub struct ModeResult {
    pub mode: String,
    pub family: String,
    pub psnr: f64,
    pub ssim: f64,
    pub matched: Option<i64>,
    pub worst: bool,
    /// 95% intervals of the means: (lo, hi).
    pub psnr_ci: (f64, f64),
    pub ssim_ci: (f64, f64),
    pub epochs: i32,
    pub converged: bool,
}

/// Where a run's topologies are: the local zone's folder (attack summaries), the cloud zone's
/// place (topologies, training summaries; a folder or an object-store URL), and the store
/// that reads the latter.
#[derive(Debug, Clone, Copy)]
pub struct RunPlaces<'a> {
    pub local: &'a Path,
    pub cloud: &'a Path,
    pub store: &'a Store,
}

/// Gathers the named topologies of a run into `output`, recording what it read in its
/// provenance; returns how many rows it wrote.
pub fn characterize(
    run: RunPlaces<'_>,
    labels: &[String],
    manifest_label: &str,
    output: &Path,
) -> Result<usize, RunError> {
    let mut prov = Provenance::new("characterize", manifest_label);
    let mut rows = Vec::new();
    for label in labels {
        let (row, read) = read_topology(run, label)?;
        for path in &read {
            prov.add_input(path)?;
        }
        rows.push(row);
    }
    let batch = table(&rows)?;
    let prov = prov.with_params(&serde_json::json!({ "topologies": labels }));
    write_artifact(
        output,
        ArtifactKind::Characterization,
        batch.schema().as_ref().clone(),
        &prov,
        &[batch],
    )?;
    Ok(rows.len())
}

/// An error reading `path`, said as such.
fn reading(path: &Path) -> impl FnOnce(CoreError) -> RunError + '_ {
    move |e| RunError::context(format!("reading {}", path.display()), e)
}

/// One topology's results, read from its folders (local and cloud), and the local copies of
/// the files they came from.
pub fn read_topology(
    run: RunPlaces<'_>,
    label: &str,
) -> Result<(TopologyResults, [PathBuf; 3]), RunError> {
    let cloud = run.cloud.join(label);
    let topology_path = run.store.fetch(&cloud.join("topology.arrow"))?;
    let topology = Topology::read(&topology_path).map_err(reading(&topology_path))?;
    let train_path = run.store.fetch(&cloud.join("train/train_summary.arrow"))?;
    let training = read_train_summary(&train_path)?;
    let attack_path = run.local.join(label).join("attack/attack_summary.arrow");
    let audit = read_attack_summary(&attack_path)?;
    let results = TopologyResults {
        label: label.to_string(),
        topology,
        val_accuracy: training.val_accuracy,
        test_accuracy: training.test_accuracy,
        train_seconds: training.seconds,
        bytes_per_image: training.bytes_per_image,
        modes: audit.modes,
        floor: audit.floor,
        attack_seconds: audit.seconds,
        psnr_bound: audit.psnr_bound[0],
        psnr_bound_ci: (audit.psnr_bound[1], audit.psnr_bound[2]),
    };
    Ok((results, [topology_path, train_path, attack_path]))
}

/// What a training run's summary says.
struct Training {
    val_accuracy: f64,
    test_accuracy: f64,
    seconds: f64,
    bytes_per_image: Option<f64>,
}

/// The final validation and test accuracy, the seconds and the bytes per image of a training
/// run.
fn read_train_summary(path: &Path) -> Result<Training, RunError> {
    let (_, batches) = read_arrow(path, ArtifactKind::TrainSummary).map_err(reading(path))?;
    let batch = batches
        .first()
        .ok_or_else(|| RunError::Dag("empty train summary".into()))?;
    let value = |name| column::<Float64Array>(batch, name, path).map(|c| c.value(0));
    Ok(Training {
        val_accuracy: value("final_val_accuracy")?,
        test_accuracy: value("final_test_accuracy")?,
        seconds: value("seconds")?,
        bytes_per_image: first_value(batch, "bytes_per_image", path)?,
    })
}

/// The first non-null value of the float column `name`, which a file written before the
/// column existed lacks (then `None`, as for a column of nulls).
fn first_value(batch: &RecordBatch, name: &str, path: &Path) -> Result<Option<f64>, RunError> {
    if batch.column_by_name(name).is_none() {
        return Ok(None);
    }
    let c = column::<Float64Array>(batch, name, path)?;
    Ok(c.iter().flatten().next())
}

/// What a topology's privacy audit measured: every attacker mode, the privacy floor (PSNR,
/// SSIM) and the seconds of all modes together.
struct Audit {
    modes: Vec<ModeResult>,
    floor: (f64, f64),
    seconds: f64,
    /// The dFIL PSNR bound, its interval's low and high end (each null without noise).
    psnr_bound: [Option<f64>; 3],
}

fn read_attack_summary(path: &Path) -> Result<Audit, RunError> {
    let (_, batches) = read_arrow(path, ArtifactKind::AttackSummary).map_err(reading(path))?;
    let mut modes = Vec::new();
    let mut floor = (0.0, 0.0);
    let mut seconds = 0.0;
    let mut psnr_bound = [None; 3];
    for b in &batches {
        let names = ["psnr_bound", "psnr_bound_lo", "psnr_bound_hi"];
        for (value, name) in psnr_bound.iter_mut().zip(names) {
            if value.is_none() {
                *value = first_value(b, name, path)?;
            }
        }
        let mode = column::<StringArray>(b, "mode", path)?;
        let family = column::<StringArray>(b, "family", path)?;
        let matched = column::<Int64Array>(b, "channels_matched", path)?;
        let worst = column::<BooleanArray>(b, "worst", path)?;
        let converged = column::<BooleanArray>(b, "converged", path)?;
        let epochs = column::<Int32Array>(b, "epochs", path)?;
        let float = |name| column::<Float64Array>(b, name, path);
        let (psnr, ssim) = (float("mean_psnr")?, float("mean_ssim")?);
        let (psnr_lo, psnr_hi) = (float("psnr_lo")?, float("psnr_hi")?);
        let (ssim_lo, ssim_hi) = (float("ssim_lo")?, float("ssim_hi")?);
        let (floor_psnr, floor_ssim) = (float("floor_psnr")?, float("floor_ssim")?);
        let mode_seconds = float("seconds")?;
        for i in 0..b.num_rows() {
            modes.push(ModeResult {
                mode: mode.value(i).to_string(),
                family: family.value(i).to_string(),
                psnr: psnr.value(i),
                ssim: ssim.value(i),
                matched: matched.is_valid(i).then(|| matched.value(i)),
                worst: worst.value(i),
                psnr_ci: (psnr_lo.value(i), psnr_hi.value(i)),
                ssim_ci: (ssim_lo.value(i), ssim_hi.value(i)),
                epochs: epochs.value(i),
                converged: converged.value(i),
            });
            floor = (floor_psnr.value(i), floor_ssim.value(i));
            seconds += mode_seconds.value(i);
        }
    }
    if modes.is_empty() {
        return Err(RunError::Dag(format!(
            "{}: no attacker mode was run",
            path.display()
        )));
    }
    Ok(Audit {
        modes,
        floor,
        seconds,
        psnr_bound,
    })
}

/// Each cut's depth: its position among the rows' cuts, deepest last (by cumulative MACs,
/// which grow along the graph), counted from 1.
fn cut_depths(rows: &[TopologyResults]) -> impl Fn(&str) -> i32 {
    let mut cuts: Vec<(i64, String)> = rows
        .iter()
        .map(|r| (r.topology.macs, r.topology.cut.clone()))
        .collect();
    cuts.sort();
    cuts.dedup();
    move |cut| {
        cuts.iter()
            .position(|c| c.1 == cut)
            .map_or(0, |i| i as i32 + 1)
    }
}

/// The characterization table, one row per topology (in the column order of its schema file).
pub fn table(rows: &[TopologyResults]) -> Result<RecordBatch, RunError> {
    let mut columns = topology_columns(rows);
    columns.extend(privacy_columns(rows));
    columns.extend(attack_columns(rows));
    Ok(ArtifactKind::Characterization.batch(columns)?)
}

type Column = (&'static str, ArrayRef);

fn floats(rows: &[TopologyResults], value: impl Fn(&TopologyResults) -> Option<f64>) -> ArrayRef {
    Arc::new(Float64Array::from(
        rows.iter().map(value).collect::<Vec<_>>(),
    ))
}

fn ints(rows: &[TopologyResults], value: impl Fn(&Topology) -> i64) -> ArrayRef {
    Arc::new(Int64Array::from_iter_values(
        rows.iter().map(|r| value(&r.topology)),
    ))
}

fn strings(rows: &[TopologyResults], value: impl Fn(&TopologyResults) -> String) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(rows.iter().map(value)))
}

/// What the topology is and costs, and the cloud network's accuracy on it.
fn topology_columns(rows: &[TopologyResults]) -> Vec<Column> {
    let depth = cut_depths(rows);
    vec![
        ("topology", strings(rows, |r| r.label.clone())),
        ("cut", strings(rows, |r| r.topology.cut.clone())),
        (
            "layer",
            Arc::new(StringArray::from(
                rows.iter()
                    .map(|r| r.topology.layer.clone())
                    .collect::<Vec<_>>(),
            )),
        ),
        (
            "depth",
            Arc::new(Int32Array::from_iter_values(
                rows.iter().map(|r| depth(&r.topology.cut)),
            )),
        ),
        ("cut_channels", ints(rows, |t| t.cut_channels)),
        ("channels", ints(rows, |t| t.channels)),
        ("method", strings(rows, |r| r.topology.method.clone())),
        ("feature_len", ints(rows, |t| t.feature_len)),
        ("macs", ints(rows, |t| t.macs)),
        ("params", ints(rows, |t| t.params)),
        ("weight_bytes", ints(rows, |t| t.weight_bytes)),
        ("noise", floats(rows, |r| Some(r.topology.noise))),
        ("bits", ints(rows, |t| t.bits)),
        ("bytes_per_image", floats(rows, |r| r.bytes_per_image)),
        ("val_accuracy", floats(rows, |r| Some(r.val_accuracy))),
        ("test_accuracy", floats(rows, |r| Some(r.test_accuracy))),
    ]
}

/// The strongest attacker (highest mean PSNR) among those `keep` selects.
fn strongest(r: &TopologyResults, keep: impl Fn(&ModeResult) -> bool) -> Option<&ModeResult> {
    r.modes
        .iter()
        .filter(|m| keep(m))
        .max_by(|a, b| a.psnr.total_cmp(&b.psnr))
}

/// A mode's strongest family.
fn mode<'a>(r: &'a TopologyResults, name: &str) -> Option<&'a ModeResult> {
    strongest(r, |m| m.mode == name)
}

/// A family's strongest mode.
fn family<'a>(r: &'a TopologyResults, name: &str) -> Option<&'a ModeResult> {
    strongest(r, |m| m.family == name)
}

/// The worst case over modes: the one the audit marked, else the highest mean PSNR.
fn worst(r: &TopologyResults) -> &ModeResult {
    r.modes
        .iter()
        .find(|m| m.worst)
        .or_else(|| strongest(r, |_| true))
        .expect("modes are not empty")
}

/// Of each interval end the highest over the modes, so that the upper end bounds every mode's
/// mean at once.
fn max_over_modes(r: &TopologyResults, value: fn(&ModeResult) -> f64) -> f64 {
    r.modes.iter().map(value).fold(f64::NEG_INFINITY, f64::max)
}

/// The privacy loss per attacker mode and per family (each the strongest of the other axis;
/// empty where none was run) and in the worst case over both.
fn privacy_columns(rows: &[TopologyResults]) -> Vec<Column> {
    let per_mode =
        |name: &str, value: fn(&ModeResult) -> f64| floats(rows, |r| mode(r, name).map(value));
    let per_family =
        |name: &str, value: fn(&ModeResult) -> f64| floats(rows, |r| family(r, name).map(value));
    let worst_case = |value: fn(&ModeResult) -> f64| floats(rows, |r| Some(value(worst(r))));
    let widest = |value: fn(&ModeResult) -> f64| floats(rows, |r| Some(max_over_modes(r, value)));
    vec![
        ("psnr_known", per_mode("known-selection", |m| m.psnr)),
        ("ssim_known", per_mode("known-selection", |m| m.ssim)),
        ("psnr_unknown", per_mode("unknown-selection", |m| m.psnr)),
        ("ssim_unknown", per_mode("unknown-selection", |m| m.ssim)),
        ("psnr_matched", per_mode("matched-selection", |m| m.psnr)),
        ("ssim_matched", per_mode("matched-selection", |m| m.ssim)),
        (
            "channels_matched",
            Arc::new(Int64Array::from(
                rows.iter()
                    .map(|r| mode(r, "matched-selection").and_then(|m| m.matched))
                    .collect::<Vec<_>>(),
            )),
        ),
        ("psnr_irn", per_family("irn", |m| m.psnr)),
        ("ssim_irn", per_family("irn", |m| m.ssim)),
        ("psnr_optimization", per_family("optimization", |m| m.psnr)),
        ("ssim_optimization", per_family("optimization", |m| m.ssim)),
        (
            "worst_attack",
            strings(rows, |r| {
                let w = worst(r);
                format!("{} {}", w.mode, w.family)
            }),
        ),
        ("psnr_worst", worst_case(|m| m.psnr)),
        ("ssim_worst", worst_case(|m| m.ssim)),
        ("psnr_bound", floats(rows, |r| r.psnr_bound)),
        ("psnr_bound_lo", floats(rows, |r| r.psnr_bound_ci.0)),
        ("psnr_bound_hi", floats(rows, |r| r.psnr_bound_ci.1)),
        ("psnr_worst_lo", widest(|m| m.psnr_ci.0)),
        ("psnr_worst_hi", widest(|m| m.psnr_ci.1)),
        ("ssim_worst_lo", widest(|m| m.ssim_ci.0)),
        ("ssim_worst_hi", widest(|m| m.ssim_ci.1)),
    ]
}

/// How far the attackers trained, the privacy floor, and what training and attacking cost.
fn attack_columns(rows: &[TopologyResults]) -> Vec<Column> {
    vec![
        (
            "attack_epochs",
            Arc::new(Int32Array::from_iter_values(
                rows.iter()
                    .map(|r| r.modes.iter().map(|m| m.epochs).max().unwrap_or(0)),
            )),
        ),
        (
            "attack_converged",
            Arc::new(BooleanArray::from(
                rows.iter()
                    .map(|r| r.modes.iter().all(|m| m.converged))
                    .collect::<Vec<_>>(),
            )),
        ),
        ("floor_psnr", floats(rows, |r| Some(r.floor.0))),
        ("floor_ssim", floats(rows, |r| Some(r.floor.1))),
        ("train_seconds", floats(rows, |r| Some(r.train_seconds))),
        ("attack_seconds", floats(rows, |r| Some(r.attack_seconds))),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topology(cut: &str, channels: i64, macs: i64) -> Topology {
        Topology {
            cut: cut.into(),
            layer: (cut != "conv1").then(|| format!("{cut}/concat")),
            input_size: 32,
            cut_channels: 128,
            channels,
            method: "random".into(),
            height: 8,
            width: 8,
            feature_len: channels * 64,
            macs,
            params: 10,
            weight_bytes: 40,
            noise: 0.0,
            bits: 32,
        }
    }

    fn mode(name: &str, psnr: f64, worst: bool) -> ModeResult {
        ModeResult {
            mode: name.into(),
            family: "irn".into(),
            psnr,
            ssim: psnr / 100.0,
            matched: (name == "matched-selection").then_some(3),
            worst,
            psnr_ci: (psnr - 1.0, psnr + 1.0),
            ssim_ci: (0.1, 0.2),
            epochs: psnr as i32,
            converged: true,
        }
    }

    /// The optimisation family under mode `name`, refined from an IRN that trained `epochs`.
    fn refined(name: &str, psnr: f64, epochs: i32) -> ModeResult {
        ModeResult {
            family: "optimization".into(),
            epochs,
            ..mode(name, psnr, false)
        }
    }

    fn results(label: &str, topology: Topology, modes: Vec<ModeResult>) -> TopologyResults {
        TopologyResults {
            label: label.into(),
            topology,
            val_accuracy: 0.5,
            test_accuracy: 0.4,
            train_seconds: 3.0,
            bytes_per_image: Some(256.0),
            modes,
            floor: (11.0, 0.01),
            attack_seconds: 7.0,
            psnr_bound: None,
            psnr_bound_ci: (None, None),
        }
    }

    fn floats_of<'a>(batch: &'a RecordBatch, name: &str) -> &'a Float64Array {
        column::<Float64Array>(batch, name, Path::new("t")).unwrap()
    }

    #[test]
    fn one_row_per_topology_with_depths_and_worst_cases() {
        let rows = vec![
            results(
                "fire3-d8",
                topology("fire3", 8, 300),
                vec![
                    mode("known-selection", 20.0, false),
                    refined("known-selection", 21.5, 20),
                    mode("unknown-selection", 14.0, false),
                ],
            ),
            results(
                "conv1-d8",
                topology("conv1", 8, 100),
                vec![
                    mode("known-selection", 15.0, false),
                    mode("matched-selection", 18.0, true),
                ],
            ),
            results(
                "fire3-d4",
                topology("fire3", 4, 300),
                vec![mode("unknown-selection", 12.0, false)],
            ),
        ];
        let batch = table(&rows).unwrap();
        assert_eq!(batch.num_rows(), 3);
        let schema = ArtifactKind::Characterization.schema().unwrap();
        let names: Vec<&str> = schema.fields.iter().map(|f| f.name.as_str()).collect();
        let got: Vec<&str> = batch
            .schema_ref()
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        assert_eq!(got, names);
        let depth = column::<Int32Array>(&batch, "depth", Path::new("t")).unwrap();
        assert_eq!(depth.values(), &[2, 1, 2]);
        let layer = column::<StringArray>(&batch, "layer", Path::new("t")).unwrap();
        assert!(layer.is_null(1) && layer.value(0) == "fire3/concat");
        // No worst attack marked: the highest mean over modes and families; else the marked
        // one, even if lower.
        assert_eq!(
            floats_of(&batch, "psnr_worst").values(),
            &[21.5, 18.0, 12.0]
        );
        assert_eq!(
            floats_of(&batch, "psnr_worst_hi").values(),
            &[22.5, 19.0, 13.0]
        );
        let worst = column::<StringArray>(&batch, "worst_attack", Path::new("t")).unwrap();
        assert_eq!(worst.value(0), "known-selection optimization");
        assert_eq!(worst.value(1), "matched-selection irn");
        // A mode's strongest family; a family's strongest mode.
        let known = floats_of(&batch, "psnr_known");
        assert_eq!((known.value(0), known.value(1)), (21.5, 15.0));
        assert!(known.is_null(2));
        let irn = floats_of(&batch, "psnr_irn");
        assert_eq!(irn.values(), &[20.0, 18.0, 12.0]);
        let optimization = floats_of(&batch, "psnr_optimization");
        assert_eq!(optimization.value(0), 21.5);
        assert!(optimization.is_null(1) && optimization.is_null(2));
        let matched = column::<Int64Array>(&batch, "channels_matched", Path::new("t")).unwrap();
        assert_eq!(matched.iter().collect::<Vec<_>>(), [None, Some(3), None]);
        let epochs = column::<Int32Array>(&batch, "attack_epochs", Path::new("t")).unwrap();
        assert_eq!(epochs.values(), &[20, 18, 12]);
    }

    #[test]
    fn defended_rows_carry_their_defence_bytes_and_bound() {
        let mut defended = results(
            "fire3-d8-n0.5-q8",
            Topology {
                noise: 0.5,
                bits: 8,
                ..topology("fire3", 8, 300)
            },
            vec![mode("known-selection", 12.0, false)],
        );
        defended.bytes_per_image = Some(64.5);
        defended.psnr_bound = Some(9.0);
        defended.psnr_bound_ci = (Some(8.5), Some(9.5));
        let mut old = results(
            "fire3-d8",
            topology("fire3", 8, 300),
            vec![mode("known-selection", 20.0, false)],
        );
        old.bytes_per_image = None;
        let batch = table(&[defended, old]).unwrap();
        assert_eq!(floats_of(&batch, "noise").values(), &[0.5, 0.0]);
        let bits = column::<Int64Array>(&batch, "bits", Path::new("t")).unwrap();
        assert_eq!(bits.values(), &[8, 32]);
        let bytes = floats_of(&batch, "bytes_per_image");
        assert_eq!(bytes.iter().collect::<Vec<_>>(), [Some(64.5), None]);
        for (name, value) in [
            ("psnr_bound", 9.0),
            ("psnr_bound_lo", 8.5),
            ("psnr_bound_hi", 9.5),
        ] {
            let c = floats_of(&batch, name);
            assert_eq!(c.iter().collect::<Vec<_>>(), [Some(value), None], "{name}");
        }
    }

    #[test]
    fn an_optional_column_is_its_first_value_or_null_when_absent() {
        let bound: ArrayRef = Arc::new(Float64Array::from(vec![None, Some(7.0), Some(8.0)]));
        let other: ArrayRef = Arc::new(Float64Array::from(vec![1.0, 2.0, 3.0]));
        let batch =
            RecordBatch::try_from_iter([("psnr_bound", bound), ("seconds", other)]).unwrap();
        let p = Path::new("t");
        assert_eq!(first_value(&batch, "psnr_bound", p).unwrap(), Some(7.0));
        assert_eq!(first_value(&batch, "bytes_per_image", p).unwrap(), None);
        let nulls: ArrayRef = Arc::new(Float64Array::from(vec![None::<f64>; 2]));
        let batch = RecordBatch::try_from_iter([("psnr_bound", nulls)]).unwrap();
        assert_eq!(first_value(&batch, "psnr_bound", p).unwrap(), None);
    }

    #[test]
    fn a_missing_topology_folder_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path().join("cache"));
        let run = RunPlaces {
            local: dir.path(),
            cloud: dir.path(),
            store: &store,
        };
        let e = read_topology(run, "fire9-d3").unwrap_err();
        let text = privynet_core::logging::describe(&e);
        let expected = format!(
            "reading {}",
            dir.path().join("fire9-d3/topology.arrow").display()
        );
        assert!(text.starts_with(&expected), "{text}");
    }
}
