//! `privynet-train`: the cloud stage. Trains the cloud network on the train split of
//! features.parquet and scores it on the val split (what topologies are chosen on) and the
//! test split (reported only); or, with `--baseline raw`, the same network on the raw images
//! (a local-only run that says what the split costs in accuracy).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use arrow::array::{Float64Array, Int32Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use clap::Parser;

use privynet_core::io::{read_schema, write_artifact};
use privynet_core::manifest::{ManifestArgs, TrainParams};
use privynet_core::{ArtifactKind, Provenance, Topology, Zone};
use privynet_nn::{data, train};

// Keeps freed memory in the process: training steps reuse it instead of faulting in fresh pages.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The splits the stage reads: it trains on `train` and scores `val` and `test`.
const SPLITS: [&str; 3] = ["train", "val", "test"];

/// Train the cloud network on features (the cloud never sees images or the selection).
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    #[command(flatten)]
    manifest: ManifestArgs,
    /// features.parquet (or a folder of parts).
    #[arg(long, required_unless_present = "baseline")]
    features: Option<PathBuf>,
    /// topology.arrow the features must have been made for.
    #[arg(long)]
    topology: Option<PathBuf>,
    /// Train on raw images instead (a local-only, no-privacy baseline).
    #[arg(long, value_parser = ["raw"])]
    baseline: Option<String>,
    /// images.parquet, for `--baseline raw`.
    #[arg(long)]
    images: Option<PathBuf>,
    /// Epochs (overrides `train.epochs`).
    #[arg(long)]
    epochs: Option<usize>,
    /// Seed (overrides the manifest's `seed`).
    #[arg(long)]
    seed: Option<u64>,
    /// Output folder: cloud_model.bpk, cloud_config.json, train_metrics.arrow, train_summary.arrow.
    /// While a run is unfinished it also holds `resume/`, the state `--resume` continues from.
    #[arg(long, short)]
    output: PathBuf,
    /// Continue a stopped or killed run from the state in the output folder (same settings,
    /// seed and input, checked): the result is the one an uninterrupted run gives.
    #[arg(long)]
    resume: bool,
    /// Stop after this epoch of the schedule, leaving a state that `--resume` continues; no
    /// metrics or summary are written until the last epoch is done.
    #[arg(long, value_name = "EPOCH", value_parser = clap::value_parser!(u64).range(1..))]
    stop_after_epoch: Option<u64>,
}

fn main() {
    privynet_core::logging::run_main(|| run(Args::parse()));
}

/// The cloud stage refuses local artifacts by their own metadata, whatever their file name.
fn refuse_local(path: &Path) -> Result<()> {
    for part in privynet_core::io::dataset_parts(path)? {
        let schema = read_schema(&part)?;
        let kind = schema
            .metadata()
            .get("privynet.kind")
            .and_then(|k| ArtifactKind::from_name(k));
        if let Some(k) = kind
            && k.zone()? == Zone::Local
        {
            bail!(
                "{} is a `{k}` artifact of the LOCAL zone; the cloud training stage never reads local artifacts (raw images, channel selections)",
                part.display()
            );
        }
    }
    Ok(())
}

fn run(args: Args) -> Result<()> {
    let manifest = args.manifest.load()?;
    let mut params: TrainParams = manifest
        .as_ref()
        .map(|m| m.train.clone())
        .unwrap_or_default();
    if let Some(e) = args.epochs {
        params.epochs = e;
    }
    params
        .validate()
        .map_err(|m| anyhow::anyhow!("invalid training settings (manifest and flags): {m}"))?;
    let seed = privynet_core::manifest::seed_of(args.seed, manifest.as_ref());
    let mut prov = Provenance::new("train", &args.manifest.label());
    let (ds, input, label) = if args.baseline.is_some() {
        let images = privynet_core::manifest::images_of(args.images.as_deref(), manifest.as_ref())
            .context("--baseline raw needs --images images.parquet")?;
        tracing::warn!("baseline run on raw images: a local-only run, not a cloud stage");
        let ds = data::load_images(&images, &SPLITS, params.classes)
            .with_context(|| format!("loading {}", images.display()))?;
        (ds, images, "raw".to_string())
    } else {
        let features = args.features.clone().expect("clap requires --features");
        refuse_local(&features)?;
        let label = match &args.topology {
            Some(t) => {
                let topo = Topology::read(t).with_context(|| format!("reading {}", t.display()))?;
                privynet_core::topology::check_features(&features, &topo)?;
                topo.label()
            }
            None => "features".into(),
        };
        let ds = data::load_features(&features, &SPLITS, params.classes)
            .with_context(|| format!("loading {}", features.display()))?;
        (ds, features, label)
    };
    prov.add_input(&input)?;
    let prov = prov.with_params(
        &serde_json::json!({ "train": params, "seed": seed, "input": input.display().to_string() }),
    );
    let tr = ds.split(&input, "train")?;
    if ds.splits.get("val").is_none_or(|s| s.is_empty()) {
        bail!(
            "{} has no `val` rows: the cloud network is scored on a validation split, which the optimizer chooses on (the test split only reports). Ingest with `dataset.splits.val` set (or `privynet-ingest --val N`) and extract again",
            input.display()
        );
    }
    let va = ds.split(&input, "val")?;
    let te = ds.split(&input, "test")?;
    tracing::info!(
        train = tr.len(),
        val = va.len(),
        test = te.len(),
        shape = format!("{:?}", ds.shape),
        layout = format!(
            "{:?}",
            privynet_nn::cloud::layout(ds.shape, params.width, params.depth)
        ),
        "training the cloud network ({label})"
    );
    std::fs::create_dir_all(&args.output)
        .with_context(|| format!("creating {}", args.output.display()))?;
    // A saved state is continued only by a run that would have produced it: the schedule, the
    // network and the shuffling stream all follow from these.
    let ckpt = train::Checkpoints {
        model: args.output.join("cloud_model.bpk"),
        state: args.output.join("resume"),
        key: serde_json::json!({
            "train": params, "seed": seed, "shape": ds.shape,
            "input_digests": prov.inputs.values().collect::<Vec<_>>(),
        }),
        resume: args.resume,
        stop_after: args.stop_after_epoch.map(|e| e as usize),
    };
    let (_, report) = train::train(&params, seed, ds.shape, tr, va, te, &ckpt, |m| {
        tracing::info!(
            epoch = m.epoch,
            train_loss = format!("{:.3}", m.train_loss),
            train_acc = format!("{:.3}", m.train_accuracy),
            val_acc = format!("{:.3}", m.val_accuracy),
            test_acc = format!("{:.3}", m.test_accuracy),
            seconds = format!("{:.1}", m.seconds),
            "epoch done"
        );
    })?;
    if report.epochs.len() < params.epochs {
        tracing::info!(
            "stopped after epoch {} of {}; continue with --resume",
            report.epochs.len(),
            params.epochs
        );
        return Ok(());
    }
    let config = serde_json::json!({
        "input_shape": ds.shape, "train": params, "seed": seed,
        "layout": privynet_nn::cloud::layout(ds.shape, params.width, params.depth),
    });
    privynet_core::io::write_bytes_atomic(
        &args.output.join("cloud_config.json"),
        serde_json::to_string_pretty(&config)?.as_bytes(),
    )?;

    let e = &report.epochs;
    let f64s = |f: fn(&train::EpochMetrics) -> f64| {
        Arc::new(Float64Array::from_iter_values(e.iter().map(f)))
    };
    let schema = Schema::new(vec![
        Field::new("epoch", DataType::Int32, false),
        Field::new("lr", DataType::Float64, false),
        Field::new("train_loss", DataType::Float64, false),
        Field::new("train_accuracy", DataType::Float64, false),
        Field::new("val_loss", DataType::Float64, false),
        Field::new("val_accuracy", DataType::Float64, false),
        Field::new("test_loss", DataType::Float64, false),
        Field::new("test_accuracy", DataType::Float64, false),
        Field::new("seconds", DataType::Float64, false),
    ]);
    let batch = RecordBatch::try_new(
        Arc::new(schema.clone()),
        vec![
            Arc::new(Int32Array::from_iter_values(
                e.iter().map(|m| m.epoch as i32),
            )),
            f64s(|m| m.lr),
            f64s(|m| m.train_loss),
            f64s(|m| m.train_accuracy),
            f64s(|m| m.val_loss),
            f64s(|m| m.val_accuracy),
            f64s(|m| m.test_loss),
            f64s(|m| m.test_accuracy),
            f64s(|m| m.seconds),
        ],
    )?;
    write_artifact(
        &args.output.join("train_metrics.arrow"),
        ArtifactKind::TrainMetrics,
        schema,
        &prov,
        &[batch],
    )?;

    // The model kept is the last epoch's, so the summary reports that epoch on both splits;
    // no epoch is picked, least of all on the test split.
    let last = e.last().context("no epoch ran")?;
    let schema = Schema::new(vec![
        Field::new("topology", DataType::Utf8, false),
        Field::new("final_val_accuracy", DataType::Float64, false),
        Field::new("final_test_accuracy", DataType::Float64, false),
        Field::new("epochs", DataType::Int32, false),
        Field::new("train_samples", DataType::Int64, false),
        Field::new("val_samples", DataType::Int64, false),
        Field::new("test_samples", DataType::Int64, false),
        Field::new("samples_per_second", DataType::Float64, false),
        Field::new("seconds", DataType::Float64, false),
    ]);
    let batch = RecordBatch::try_new(
        Arc::new(schema.clone()),
        vec![
            Arc::new(StringArray::from(vec![label.as_str()])),
            Arc::new(Float64Array::from(vec![last.val_accuracy])),
            Arc::new(Float64Array::from(vec![last.test_accuracy])),
            Arc::new(Int32Array::from(vec![e.len() as i32])),
            Arc::new(Int64Array::from(vec![tr.len() as i64])),
            Arc::new(Int64Array::from(vec![va.len() as i64])),
            Arc::new(Int64Array::from(vec![te.len() as i64])),
            Arc::new(Float64Array::from(vec![report.samples_per_second])),
            Arc::new(Float64Array::from(vec![report.seconds])),
        ],
    )?;
    write_artifact(
        &args.output.join("train_summary.arrow"),
        ArtifactKind::TrainSummary,
        schema,
        &prov,
        &[batch],
    )?;
    // The run is complete and its outputs written: nothing is left to continue.
    std::fs::remove_dir_all(&ckpt.state)
        .with_context(|| format!("removing {}", ckpt.state.display()))?;
    tracing::info!(
        final_val_accuracy = format!("{:.4}", last.val_accuracy),
        final_test_accuracy = format!("{:.4}", last.test_accuracy),
        samples_per_s = format!("{:.0}", report.samples_per_second),
        seconds = format!("{:.1}", report.seconds),
        "trained {label}"
    );
    println!("{}", args.output.display());
    Ok(())
}
