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
    let train_dir = args.cloud_dir.join(&topology).join("train");
    let cloud = |name: &str| store.fetch(&train_dir.join(name));
    let request = DeployRun {
        local_network: args.run_dir.join(&topology).join("local.onnx"),
        decision: args.decision,
        characterization: args.characterization,
        train_summary: cloud("train_summary.arrow")?,
        cloud_model: cloud("cloud_model.bpk")?,
        cloud_config: cloud("cloud_config.json")?,
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
