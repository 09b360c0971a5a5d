//! `privynet-ingest`: turns a dataset (CIFAR-10 binaries or an image folder) into `images.parquet`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Parser;

use privynet_core::manifest::{DatasetFormat, ManifestArgs};
use privynet_ingest::stage::{self, Flags, Request};

/// Turn a dataset into images.parquet with seeded, stratified train/val/attacker/test splits.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    #[command(flatten)]
    manifest: ManifestArgs,
    /// Dataset layout (overrides the manifest's `dataset.format`).
    #[arg(long, value_enum)]
    format: Option<Format>,
    /// Dataset path (overrides `dataset.path`).
    #[arg(long)]
    dataset: Option<PathBuf>,
    /// Images in the train split (overrides `dataset.splits.train`).
    #[arg(long)]
    train: Option<usize>,
    /// Validation images, from the training images (overrides `dataset.splits.val`; default
    /// none). The train stage needs them: the cloud network is chosen on validation accuracy.
    #[arg(long)]
    val: Option<usize>,
    /// Images in the attacker pool.
    #[arg(long)]
    attacker: Option<usize>,
    /// Images in the test split.
    #[arg(long)]
    test: Option<usize>,
    /// Resize every image to HEIGHT,WIDTH.
    #[arg(long, value_parser = stage::parse_size)]
    resize: Option<[u32; 2]>,
    /// Seed for the split draw.
    #[arg(long)]
    seed: Option<u64>,
    /// Output file (default: <out_dir>/images.parquet, with --final <out_dir>/final/images.parquet).
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// The final training's images: the train split grown to the manifest's
    /// `final.train_images` from what the other splits leave; val and test as they are.
    #[arg(long = "final")]
    final_images: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Format {
    Cifar10Binary,
    ImageFolder,
}

fn main() {
    privynet_core::logging::run_main(|| run(Args::parse()));
}

fn run(args: Args) -> Result<()> {
    let manifest = args.manifest.load()?;
    let flags = Flags {
        format: args.format.map(|f| match f {
            Format::Cifar10Binary => DatasetFormat::Cifar10Binary,
            Format::ImageFolder => DatasetFormat::ImageFolder,
        }),
        dataset: args.dataset,
        train: args.train,
        val: args.val,
        attacker: args.attacker,
        test: args.test,
        resize: args.resize,
        seed: args.seed,
        output: args.output,
        final_images: args.final_images,
    };
    let req = Request::resolve(&flags, manifest.as_ref(), args.manifest.label())?;
    stage::run(&req)?;
    println!("{}", req.output.display());
    Ok(())
}
