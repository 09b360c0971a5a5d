//! `privynet-extract`: runs the local network over images.parquet and writes features.parquet,
//! or derives a narrower channel count from a wider extraction at the same cut.

use std::path::PathBuf;

use anyhow::Result;
use clap::Parser;

use privynet_core::ArtifactKind;
use privynet_core::manifest::{FeatureDtype, ManifestArgs};
use privynet_extract::stage::{self, Derivation, Flags};
use privynet_store::Store;

/// Turn images into features with the local network (ONNX Runtime), streaming to Parquet.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    #[command(flatten)]
    manifest: ManifestArgs,
    /// images.parquet (default: <out_dir>/images.parquet from the manifest).
    #[arg(long)]
    images: Option<PathBuf>,
    /// The local network (local.onnx from privynet-slice).
    #[arg(long)]
    model: Option<PathBuf>,
    /// topology.arrow of the local network; its shape is checked and stored with the features.
    #[arg(long)]
    topology: Option<PathBuf>,
    /// Output features file.
    #[arg(long, short)]
    output: PathBuf,
    /// Splits to extract, comma-separated (overrides `extract.splits`).
    #[arg(long, value_delimiter = ',')]
    splits: Option<Vec<String>>,
    /// Images per ONNX Runtime call (overrides `extract.batch_size`).
    #[arg(long)]
    batch_size: Option<usize>,
    /// Storage type of the features (overrides `extract.dtype`).
    #[arg(long, value_enum)]
    dtype: Option<Dtype>,
    /// ONNX Runtime threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Square model input size (overrides `model.input_size`).
    #[arg(long)]
    input_size: Option<u32>,
    /// Write only shard K of N (rows whose id is K modulo N), e.g. `--shard 0/4`.
    #[arg(long, value_parser = privynet_extract::extract::parse_shard)]
    shard: Option<(u64, u64)>,
    /// Derive from these wider features (same cut, nested selection) instead of running the network.
    #[arg(long, requires_all = ["wide_selection", "selection", "topology"])]
    derive_from: Option<PathBuf>,
    /// selection.arrow the wider features were made with.
    #[arg(long)]
    wide_selection: Option<PathBuf>,
    /// selection.arrow of the narrower topology.
    #[arg(long)]
    selection: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Dtype {
    Float32,
    Float16,
}

fn main() {
    privynet_core::logging::run_main(|| run(Args::parse()));
}

fn run(args: Args) -> Result<()> {
    let manifest = args.manifest.load()?;
    // Inputs and the output may be object URLs (the cloud zone in a bucket): the stage reads
    // cached copies and writes into a staging folder that `publish` uploads at the end.
    let store = Store::from_env();
    let output = store.output_table(&args.output, ArtifactKind::Features)?;
    let fetch = |p: &Option<PathBuf>| store.fetch_opt(p.as_deref());
    let topology = fetch(&args.topology)?;
    let images = fetch(&args.images)?;
    let model = fetch(&args.model)?;
    let wide = fetch(&args.derive_from)?;
    let wide_selection = fetch(&args.wide_selection)?;
    let selection = fetch(&args.selection)?;
    let derive = wide
        .zip(args.derive_from.clone())
        .map(|(wide, place)| Derivation {
            wide,
            wide_place: place,
            wide_selection: wide_selection.expect("clap requires --wide-selection"),
            selection: selection.expect("clap requires --selection"),
        });
    let flags = Flags {
        images,
        model,
        topology,
        output: output.path(),
        splits: args.splits,
        batch_size: args.batch_size,
        dtype: args.dtype.map(|d| match d {
            Dtype::Float32 => FeatureDtype::Float32,
            Dtype::Float16 => FeatureDtype::Float16,
        }),
        threads: args.threads,
        input_size: args.input_size,
        shard: args.shard,
        derive,
    };
    stage::run(&flags, manifest.as_ref(), &args.manifest.label())?;
    output.publish()?;
    println!("{}", args.output.display());
    Ok(())
}
