//! `privynet-train`: the cloud stage. Trains the cloud network on the train split of
//! features.parquet and scores it on the val split (what topologies are chosen on) and the
//! test split (reported only); or, with `--baseline raw`, the same network on the raw images
//! (a local-only run that says what the split costs in accuracy).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;

use privynet_core::manifest::{ManifestArgs, TrainParams};
use privynet_core::{ArtifactKind, Zone};
use privynet_nn::train;
use privynet_nn::train::run::{TrainInput, TrainOutcome, TrainRun};
use privynet_store::{Artifact, Store};

// Keeps freed memory in the process: training steps reuse it instead of faulting in fresh pages.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Train the cloud network on features (the cloud never sees images or the selection).
#[derive(Debug, Parser)]
#[command(name = "privynet-train", version)]
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
    /// The final training of the chosen topology: the manifest's `final` section (epochs at
    /// most, patience on val, width, depth) over `train`'s settings.
    #[arg(long = "final", conflicts_with = "baseline")]
    final_training: bool,
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
    privynet_nn::memory::keep_freed_memory();
    privynet_core::logging::run_main(|| run(Args::parse()));
}

fn run(args: Args) -> Result<()> {
    let manifest = args.manifest.load()?;
    let mut params: TrainParams = if args.final_training {
        manifest
            .as_ref()
            .and_then(|m| m.final_train_params())
            .context("--final needs --manifest with a `final` section")?
    } else {
        manifest
            .as_ref()
            .map(|m| m.train.clone())
            .unwrap_or_default()
    };
    if let Some(e) = args.epochs {
        params.epochs = e;
    }
    params
        .validate()
        .map_err(|m| anyhow::anyhow!("invalid training settings (manifest and flags): {m}"))?;
    let seed = privynet_core::manifest::seed_of(args.seed, manifest.as_ref());
    // The features and the outputs may be in a bucket: the run reads cached copies and writes
    // into a staging folder (which also keeps `resume/` between a kill and the rerun) that
    // `publish` uploads once the run has finished.
    let store = Store::from_env();
    let files = outputs(args.baseline.is_some(), args.final_training)?;
    let output = store.output_dir(&args.output, files)?;
    let input = if args.baseline.is_some() {
        let images = privynet_core::manifest::images_of(args.images.as_deref(), manifest.as_ref())
            .context("--baseline raw needs --images images.parquet")?;
        TrainInput::RawImages(store.fetch(&images)?)
    } else {
        let features = args.features.as_deref().expect("clap requires --features");
        TrainInput::Features {
            path: store.fetch(features)?,
            topology: store.fetch_opt(args.topology.as_deref())?,
        }
    };
    let request = TrainRun {
        params,
        seed,
        input,
        manifest_label: args.manifest.label(),
        output: output.dir().to_path_buf(),
        resume: args.resume,
        stop_after_epoch: args.stop_after_epoch.map(|e| e as usize),
    };
    if train::run::run(&request)? == TrainOutcome::Finished {
        if args.final_training {
            // What deploy ships: written where the training ran, so it goes to the cloud zone.
            train::export::write_from_dir(output.dir())?;
        }
        output.publish()?;
        println!("{}", args.output.display());
    }
    Ok(())
}

/// The files a finished run writes (the final training adds cloud.onnx). The raw baseline
/// trained on the images themselves, so its outputs are LOCAL: it is refused at an
/// object-store place.
fn outputs(baseline: bool, final_training: bool) -> Result<Vec<Artifact>> {
    let zone = if baseline { Zone::Local } else { Zone::Cloud };
    let tables = [
        ("train_metrics.arrow", ArtifactKind::TrainMetrics),
        ("train_summary.arrow", ArtifactKind::TrainSummary),
    ];
    let mut files = vec![
        Artifact::file("cloud_model.bpk", "cloud_model", zone),
        Artifact::file("cloud_config.json", "cloud_config", zone),
    ];
    for (file, kind) in tables {
        let mut a = Artifact::table(file, kind)?;
        a.zone = zone;
        files.push(a);
    }
    if final_training {
        files.push(Artifact::file("cloud.onnx", "cloud_network", zone));
    }
    Ok(files)
}
