//! The train stage as a library: loads the cloud's features (or, for the no-privacy baseline,
//! the raw images), trains the cloud network with checkpoints a stopped run continues from,
//! and writes the model, its config and the metrics (see [`super::output`]). The
//! `privynet-train` binary resolves its flags against the manifest and calls [`run`].

use std::path::{Path, PathBuf};

use privynet_core::io::{read_schema, stored_bytes_per_row};
use privynet_core::manifest::TrainParams;
use privynet_core::{ArtifactKind, Provenance, Topology, Zone};

use super::fit::{self, Checkpoints};
use super::output::{self, InputSummary, SplitSizes};
use super::report::TrainReport;
use crate::NnError;
use crate::data::{self, Dataset, Split};

/// The splits the stage reads: it trains on `train` and scores `val` and `test`.
const SPLITS: [&str; 3] = ["train", "val", "test"];

/// What the cloud network trains on.
#[derive(Debug, Clone)]
pub enum TrainInput {
    /// features.parquet (or a folder of parts), checked against the topology.arrow it must
    /// have been made for, when given.
    Features {
        path: PathBuf,
        topology: Option<PathBuf>,
    },
    /// images.parquet: the local-only, no-privacy baseline (`--baseline raw`).
    RawImages(PathBuf),
}

/// A training run, its settings already resolved against the manifest and the flags.
#[derive(Debug, Clone)]
pub struct TrainRun {
    pub params: TrainParams,
    pub seed: u64,
    pub input: TrainInput,
    /// The manifest's name for provenance (`-` without one).
    pub manifest_label: String,
    /// The output folder: cloud_model.bpk, cloud_config.json, train_metrics.arrow,
    /// train_summary.arrow, and `resume/` while the run is unfinished.
    pub output: PathBuf,
    /// Continue from the saved state in the output folder.
    pub resume: bool,
    /// Stop after this epoch (1-based) of the schedule, leaving a state to continue from.
    pub stop_after_epoch: Option<usize>,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrainOutcome {
    /// Every epoch of the schedule is done and every output written.
    Finished,
    /// The run stopped at `stop_after_epoch`; only the model and the state to continue from
    /// are written.
    Stopped,
}

/// Runs the train stage (see the module doc).
pub fn run(run: &TrainRun) -> Result<TrainOutcome, NnError> {
    let params = &run.params;
    let mut prov = Provenance::new("train", &run.manifest_label);
    let (dataset, input, label) = load(&run.input, params.classes)?;
    prov.add_input(&input)?;
    let summary = input_summary(&input, label)?;
    let prov = prov.with_params(&serde_json::json!({
        "train": params, "seed": run.seed, "input": privynet_core::provenance::input_name(&input)
    }));
    let [train_split, val_split, test_split] = splits(&dataset, &input)?;
    let sizes = SplitSizes {
        train: train_split.len(),
        val: val_split.len(),
        test: test_split.len(),
    };
    tracing::info!(
        train = sizes.train,
        val = sizes.val,
        test = sizes.test,
        shape = format!("{:?}", dataset.shape),
        layout = format!(
            "{:?}",
            super::cloud::layout(dataset.shape, params.width, params.depth)
        ),
        "training the cloud network ({})",
        summary.label
    );
    std::fs::create_dir_all(&run.output).map_err(NnError::context(format!(
        "creating {}",
        run.output.display()
    )))?;
    let checkpoints = checkpoints(run, dataset.shape, &prov);
    remove_finished_model(&checkpoints.model)?;
    let (model, report) = fit::train(
        params,
        run.seed,
        dataset.shape,
        train_split,
        val_split,
        test_split,
        &checkpoints,
        |m| {
            tracing::info!(
                epoch = m.epoch,
                train_loss = format!("{:.3}", m.train_loss),
                train_acc = format!("{:.3}", m.train_accuracy),
                val_acc = format!("{:.3}", m.val_accuracy),
                test_acc = format!("{:.3}", m.test_accuracy),
                seconds = format!("{:.1}", m.seconds),
                "epoch done"
            );
        },
    )?;
    if report.epochs.len() < params.epochs && !report.early_stopped {
        tracing::info!(
            "stopped after epoch {} of {}; continue with --resume",
            report.epochs.len(),
            params.epochs
        );
        return Ok(TrainOutcome::Stopped);
    }
    // The model first, the tables after it and the state removed last: whatever a kill leaves,
    // the summary that marks a finished run never stands without its model.
    super::cloud::save(&model.with_stable_ids(), &checkpoints.model)?;
    finish(run, &dataset, &prov, &summary, &report, sizes, &checkpoints)?;
    Ok(TrainOutcome::Finished)
}

/// A model left by an earlier finished run is removed before training starts: until this run
/// completes, its output folder holds no model that could pass for its result (the last good
/// one of an unfinished run stays under `resume/`).
fn remove_finished_model(model: &Path) -> Result<(), NnError> {
    match std::fs::remove_file(model) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(NnError::context(format!("removing {}", model.display()))(e))
        }
        _ => Ok(()),
    }
}

/// The dataset of `input`, the file it came from and the label the summary gives it.
fn load(input: &TrainInput, classes: usize) -> Result<(Dataset, PathBuf, String), NnError> {
    match input {
        TrainInput::RawImages(images) => {
            tracing::warn!("baseline run on raw images: a local-only run, not a cloud stage");
            let dataset = data::load_images(images, &SPLITS, classes)
                .map_err(NnError::context(format!("loading {}", images.display())))?;
            Ok((dataset, images.clone(), "raw".to_string()))
        }
        TrainInput::Features { path, topology } => {
            refuse_local(path)?;
            let label = match topology {
                Some(t) => {
                    let topo = Topology::read(t)
                        .map_err(NnError::context(format!("reading {}", t.display())))?;
                    privynet_core::topology::check_features(path, &topo)?;
                    topo.label()
                }
                None => "features".into(),
            };
            let dataset = data::load_features(path, &SPLITS, classes)
                .map_err(NnError::context(format!("loading {}", path.display())))?;
            Ok((dataset, path.clone(), label))
        }
    }
}

/// The label the summary gives the input, and what one image costs to send, measured on the
/// file trained on (a fetched input's local copy): the features as stored, their defence's
/// quantisation included (for the baseline, the stored images).
fn input_summary(input: &Path, label: String) -> Result<InputSummary, NnError> {
    let bytes = stored_bytes_per_row(input)
        .map_err(NnError::context(format!("measuring {}", input.display())))?;
    Ok(InputSummary {
        label,
        bytes_per_image: Some(bytes),
    })
}

/// The cloud stage refuses local artifacts by their own metadata, whatever their file name.
fn refuse_local(path: &Path) -> Result<(), NnError> {
    for part in privynet_core::io::dataset_parts(path)? {
        let schema = read_schema(&part)?;
        let kind = schema
            .metadata()
            .get("privynet.kind")
            .and_then(|k| ArtifactKind::from_name(k));
        if let Some(k) = kind
            && k.zone()? == Zone::Local
        {
            return Err(NnError::Input(format!(
                "{} is a `{k}` artifact of the LOCAL zone; the cloud training stage never reads local artifacts (raw images, channel selections)",
                part.display()
            )));
        }
    }
    Ok(())
}

/// The train, val and test splits of `dataset`, read from `input`. Validation rows are required:
/// topologies are chosen on them.
fn splits<'a>(dataset: &'a Dataset, input: &Path) -> Result<[&'a Split; 3], NnError> {
    let train_split = dataset.split(input, "train")?;
    if dataset.splits.get("val").is_none_or(|s| s.is_empty()) {
        return Err(NnError::Input(format!(
            "{} has no `val` rows: the cloud network is scored on a validation split, which the optimizer chooses on (the test split only reports). Ingest with `dataset.splits.val` set (or `privynet-ingest --val N`) and extract again",
            input.display()
        )));
    }
    Ok([
        train_split,
        dataset.split(input, "val")?,
        dataset.split(input, "test")?,
    ])
}

/// Where the run keeps its model and state. A saved state is continued only by a run that
/// would have produced it: the schedule, the network and the shuffling stream all follow from
/// the settings, the seed, the input shape and the inputs' digests, which make its key.
fn checkpoints(run: &TrainRun, shape: [usize; 3], prov: &Provenance) -> Checkpoints {
    Checkpoints {
        model: run.output.join("cloud_model.bpk"),
        state: run.output.join("resume"),
        key: serde_json::json!({
            "train": run.params, "seed": run.seed, "shape": shape,
            "input_digests": prov.inputs.values().collect::<Vec<_>>(),
        }),
        resume: run.resume,
        stop_after: run.stop_after_epoch,
    }
}

/// Writes the outputs of a finished run, then removes the state it no longer needs.
fn finish(
    run: &TrainRun,
    dataset: &Dataset,
    prov: &Provenance,
    input: &InputSummary,
    report: &TrainReport,
    sizes: SplitSizes,
    checkpoints: &Checkpoints,
) -> Result<(), NnError> {
    output::write_config(&run.output, dataset.shape, &run.params, run.seed)?;
    output::write_tables(&run.output, prov, input, report, sizes)?;
    // The run is complete and its outputs written: nothing is left to continue.
    std::fs::remove_dir_all(&checkpoints.state).map_err(NnError::context(format!(
        "removing {}",
        checkpoints.state.display()
    )))?;
    let kept = &report.epochs[report.kept];
    if report.early_stopped {
        tracing::info!(
            "val accuracy did not improve for {} epochs: stopped after epoch {}, kept epoch {}",
            run.params.patience.unwrap_or_default(),
            report.epochs.len(),
            kept.epoch
        );
    }
    tracing::info!(
        kept_epoch = kept.epoch,
        final_val_accuracy = format!("{:.4}", kept.val_accuracy),
        final_test_accuracy = format!("{:.4}", kept.test_accuracy),
        samples_per_s = format!("{:.0}", report.samples_per_second),
        seconds = format!("{:.1}", report.seconds),
        bytes_per_image = input.bytes_per_image.map(|b| format!("{b:.0}")),
        "trained {}",
        input.label
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use arrow::array::{Float64Array, Int32Array};

    use super::*;

    fn dataset_with_val(val_rows: usize) -> Dataset {
        let split = |n: usize| Split {
            ids: (0..n as i64).collect(),
            labels: vec![0; n],
            x: vec![0.0; n],
        };
        let splits = BTreeMap::from([
            ("train".to_string(), split(4)),
            ("val".to_string(), split(val_rows)),
            ("test".to_string(), split(2)),
        ]);
        Dataset {
            shape: [1, 1, 1],
            splits,
        }
    }

    #[test]
    fn the_val_split_is_required() {
        let dataset = dataset_with_val(3);
        let [train, val, test] = splits(&dataset, Path::new("f.parquet")).unwrap();
        assert_eq!((train.len(), val.len(), test.len()), (4, 3, 2));
        let e = splits(&dataset_with_val(0), Path::new("f.parquet")).unwrap_err();
        assert!(
            e.to_string().starts_with("f.parquet has no `val` rows"),
            "{e}"
        );
    }

    #[test]
    fn local_artifacts_are_refused_by_their_metadata() {
        let dir = tempfile::tempdir().unwrap();
        // A channel selection (LOCAL) under an innocent name.
        let local = dir.path().join("features.arrow");
        let batch = ArtifactKind::Selection
            .batch(vec![
                ("position", Arc::new(Int32Array::from(vec![0]))),
                ("channel", Arc::new(Int32Array::from(vec![5]))),
                ("fisher_score", Arc::new(Float64Array::from(vec![None]))),
            ])
            .unwrap();
        let mut prov = Provenance::new("slice", "-");
        prov.extra.insert("seed".into(), "1".into());
        prov.extra.insert("method".into(), "random".into());
        let schema = batch.schema().as_ref().clone();
        privynet_core::io::write_artifact(&local, ArtifactKind::Selection, schema, &prov, &[batch])
            .unwrap();
        let e = refuse_local(&local).unwrap_err();
        assert!(
            e.to_string()
                .contains("is a `selection` artifact of the LOCAL zone"),
            "{e}"
        );
        // A cloud artifact passes.
        let report = TrainReport {
            epochs: vec![],
            samples_per_second: 0.0,
            seconds: 0.0,
            kept: 0,
            early_stopped: false,
        };
        let metrics = output::metrics_batch(&report.epochs).unwrap();
        let cloud = dir.path().join("train_metrics.arrow");
        let schema = metrics.schema().as_ref().clone();
        let prov = Provenance::new("train", "-");
        privynet_core::io::write_artifact(
            &cloud,
            ArtifactKind::TrainMetrics,
            schema,
            &prov,
            &[metrics],
        )
        .unwrap();
        refuse_local(&cloud).unwrap();
    }
}
