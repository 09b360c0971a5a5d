//! `privynet-deploy`: the optimizer's choice as the two halves a user runs: local.onnx (the
//! local network with its secret selection) and cloud.onnx (the trained cloud network), with
//! the deployment card (card.json, card.md) beside them. A defended choice ships its base's
//! local network and the defence's encoding in the card. A thin shell over `deploy::run`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;

use privynet_core::Topology;
use privynet_core::defence::Encoding;
use privynet_core::manifest::ManifestArgs;
use privynet_nn::deploy::run::{
    DeployRun, chosen, chosen_topology, defence_of, local_network, run,
};
use privynet_store::Store;

/// Export the chosen topology's two halves (local.onnx, cloud.onnx) with a deployment card.
#[derive(Debug, Parser)]
#[command(name = "privynet-deploy", version)]
struct Args {
    #[command(flatten)]
    manifest: ManifestArgs,
    /// decision.arrow from privynet-optimize.
    #[arg(long)]
    decision: PathBuf,
    /// characterization.parquet the decision was made from.
    #[arg(long)]
    characterization: PathBuf,
    /// The run folder: the chosen topology's `<topology>/local.onnx` is read from it (a
    /// defended topology's base's: `<base>/local.onnx`).
    #[arg(long)]
    run_dir: PathBuf,
    /// The cloud zone's place (a folder, or an object URL when it is a bucket): the chosen
    /// topology's `<topology>/topology.arrow` and `<topology>/train/` (train_summary.arrow,
    /// cloud_model.bpk, cloud_config.json); a defended topology's encoding is read from
    /// `<topology>/features.parquet`'s metadata.
    #[arg(long)]
    cloud_dir: PathBuf,
    /// Where the final trainings are (`final/` of the cloud zone): the choice's is
    /// `<choice>/train/` (train_summary.arrow, cloud_model.bpk, cloud_config.json), deployed
    /// instead of the characterization's, and a defended choice's encoding is that of
    /// `<choice>/features.parquet`; needs the manifest's `final` section.
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
    let (chosen, defence) = topology_and_defence(&store, &args, &topology)?;
    let request = DeployRun {
        local_network: local_network(&args.run_dir, &chosen),
        defence,
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

/// The chosen topology (its cloud-zone `topology.arrow`) and, when it is defended, its
/// encoding: that of the features the deployed cloud network trained on (the final
/// training's with --final-dir), read from their metadata.
fn topology_and_defence(
    store: &Store,
    args: &Args,
    choice: &str,
) -> Result<(Topology, Option<Encoding>)> {
    let path = store.fetch(&args.cloud_dir.join(choice).join("topology.arrow"))?;
    let chosen = chosen_topology(&path, choice)?;
    if chosen.defence().is_none() {
        return Ok((chosen, None));
    }
    let root = args.final_dir.as_ref().unwrap_or(&args.cloud_dir);
    let features = store.fetch(&root.join(choice).join("features.parquet"))?;
    let defence = defence_of(&chosen, &features)
        .with_context(|| format!("reading the defence of {choice}"))?;
    Ok((chosen, defence))
}
