//! `privynet-characterize`: gathers every evaluated topology's local cost, validation and test
//! accuracy and privacy loss into characterization.parquet (the work is
//! [`privynet::characterize`]'s).

use std::path::PathBuf;

use anyhow::Result;
use clap::Parser;

use privynet::characterize::RunPlaces;
use privynet_core::manifest::ManifestArgs;

/// Gather each evaluated topology's local cost, validation and test accuracy and privacy loss
/// (per attacker mode and in the worst case) from a run's folders into
/// characterization.parquet, the table the optimizer chooses from.
#[derive(Debug, Parser)]
#[command(name = "privynet-characterize", version)]
struct Args {
    #[command(flatten)]
    manifest: ManifestArgs,
    /// The run's output folder (holding one folder per topology).
    #[arg(long)]
    run_dir: PathBuf,
    /// Where the cloud zone's artifacts are (topology.arrow, train/): a folder or an object
    /// URL such as s3://bucket/prefix; by default --run-dir.
    #[arg(long)]
    cloud_dir: Option<PathBuf>,
    /// Topology folders to gather, comma-separated (e.g. conv1-d8,fire3-d8).
    #[arg(long, value_delimiter = ',', required = true)]
    topologies: Vec<String>,
    /// Output file.
    #[arg(long, short)]
    output: PathBuf,
}

fn main() {
    privynet_core::logging::run_main(|| run(Args::parse()));
}

fn run(args: Args) -> Result<()> {
    let store = privynet_store::Store::from_env();
    let run = RunPlaces {
        local: &args.run_dir,
        cloud: args.cloud_dir.as_deref().unwrap_or(&args.run_dir),
        store: &store,
    };
    let rows = privynet::characterize::characterize(
        run,
        &args.topologies,
        &args.manifest.label(),
        &args.output,
    )?;
    tracing::info!(rows, "wrote {}", args.output.display());
    println!("{}", args.output.display());
    Ok(())
}
