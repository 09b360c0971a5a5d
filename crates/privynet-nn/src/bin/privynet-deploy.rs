//! `privynet-deploy`: the optimizer's choice as the two halves a user runs: local.onnx (the
//! local network with its secret selection) and cloud.onnx (the trained cloud network), with
//! the deployment card (card.json, card.md) beside them. A thin shell over `deploy::run`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;

use privynet_core::manifest::ManifestArgs;
use privynet_nn::deploy::run::{DeployRun, chosen, run};
use privynet_store::Store;

/// Export the chosen topology's two halves (local.onnx, cloud.onnx) with a deployment card.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    manifest: ManifestArgs,
    /// decision.arrow from privynet-optimize.
    #[arg(long)]
    decision: PathBuf,
    /// characterization.parquet the decision was made from.
    #[arg(long)]
    characterization: PathBuf,
    /// The run folder: the chosen topology's `<topology>/local.onnx` is read from it.
    #[arg(long)]
    run_dir: PathBuf,
    /// The cloud zone's place (a folder, or an object URL when it is a bucket): the chosen
    /// topology's `<topology>/train/` (train_summary.arrow, cloud_model.bpk, cloud_config.json).
    #[arg(long)]
    cloud_dir: PathBuf,
    /// Where the final trainings are (`final/` of the cloud zone): the choice's is
    /// `<choice>/train/` (train_summary.arrow, cloud_model.bpk, cloud_config.json), deployed
    /// instead of the characterization's; needs the manifest's `final` section.
    #[arg(long)]
    final_dir: Option<PathBuf>,
    /// With --final-dir: when the choice's final training is not there yet (the decision
    /// changed in this run), write nothing and say so: the runner's next pass trains it and
    /// deploys it.
    #[arg(long, requires = "final_dir")]
    defer_missing: bool,
    /// Output folder: local.onnx, cloud.onnx, card.json, card.md.
    #[arg(long, short)]
    output: PathBuf,
}

fn main() {
    privynet_core::logging::run_main(|| deploy(Args::parse()));
}

fn deploy(args: Args) -> Result<()> {
    let m = args
        .manifest
        .load()?
        .context("privynet-deploy needs --manifest (the preprocessing and features type)")?;
    // The decision names the topology; its files are found under the two places.
    let (topology, _) = chosen(&args.decision)?;
    let store = Store::from_env();
    let (train_dir, final_patience) = match &args.final_dir {
        Some(root) => {
            let f = m.final_training.as_ref();
            let f = f.context("--final-dir needs a manifest with a `final` section")?;
            (root.join(&topology).join("train"), Some(f.patience))
        }
        None => (args.cloud_dir.join(&topology).join("train"), None),
    };
    let summary = train_dir.join("train_summary.arrow");
    // `stat` answers for objects only; a local file is looked at directly.
    let present = summary.is_file() || store.stat(&summary)?.is_some();
    if args.defer_missing && !present {
        println!(
            "deferred: the decision now chooses {topology}, whose final training has not run yet; the runner's next pass trains and deploys it"
        );
        return Ok(());
    }
    let cloud = |name: &str| store.fetch(&train_dir.join(name));
    let request = DeployRun {
        local_network: args.run_dir.join(&topology).join("local.onnx"),
        decision: args.decision,
        characterization: args.characterization,
        train_summary: cloud("train_summary.arrow")?,
        cloud_model: cloud("cloud_model.bpk")?,
        cloud_config: cloud("cloud_config.json")?,
        final_patience,
        input_size: m.model.input_size,
        preprocess: m.model.preprocess.clone(),
        features_dtype: m.extract.dtype,
        dataset: m.dataset.path.display().to_string(),
        output: args.output.clone(),
    };
    let card = run(&request)?;
    tracing::info!(
        topology = card.topology,
        test_accuracy = format!("{:.4}", card.accuracy.test),
        psnr = format!("{:.2}", card.privacy.psnr),
        "deployed"
    );
    println!("{}", args.output.display());
    Ok(())
}
