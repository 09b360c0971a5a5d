//! `privynet-ingest`: turns a dataset (CIFAR-10 binaries or an image folder) into `images.parquet`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Parser;

use privynet_core::Provenance;
use privynet_core::manifest::{DatasetFormat, ManifestArgs, SplitSizes};
use privynet_ingest::{cifar, folder, split, write};

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
    #[arg(long, value_parser = parse_size)]
    resize: Option<[u32; 2]>,
    /// Seed for the split draw.
    #[arg(long)]
    seed: Option<u64>,
    /// Output file (default: <out_dir>/images.parquet).
    #[arg(long, short)]
    output: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Format {
    Cifar10Binary,
    ImageFolder,
}

fn parse_size(s: &str) -> Result<[u32; 2], String> {
    let (h, w) = s.split_once(',').ok_or("expected HEIGHT,WIDTH")?;
    Ok([
        h.trim().parse().map_err(|_| "HEIGHT is not a number")?,
        w.trim().parse().map_err(|_| "WIDTH is not a number")?,
    ])
}

fn main() {
    privynet_core::logging::run_main(|| run(Args::parse()));
}

fn run(args: Args) -> Result<()> {
    let manifest = args.manifest.load()?;
    let ds = manifest.as_ref().map(|m| &m.dataset);
    let format = match (args.format, ds) {
        (Some(Format::Cifar10Binary), _) => DatasetFormat::Cifar10Binary,
        (Some(Format::ImageFolder), _) => DatasetFormat::ImageFolder,
        (None, Some(d)) => d.format,
        (None, None) => bail!("no dataset format: pass --format or --manifest"),
    };
    let path = args
        .dataset
        .clone()
        .or_else(|| ds.map(|d| d.path.clone()))
        .context("no dataset path: pass --dataset or --manifest")?;
    let resize = args.resize.or_else(|| ds.and_then(|d| d.resize));
    let sizes = SplitSizes {
        train: args
            .train
            .or(ds.map(|d| d.splits.train))
            .context("no train size: pass --train or --manifest")?,
        val: args.val.or(ds.map(|d| d.splits.val)).unwrap_or(0),
        attacker: args.attacker.or(ds.map(|d| d.splits.attacker)).unwrap_or(0),
        test: args
            .test
            .or(ds.map(|d| d.splits.test))
            .context("no test size: pass --test or --manifest")?,
    };
    sizes
        .validate()
        .map_err(|m| anyhow::anyhow!("invalid split sizes (manifest and flags): {m}"))?;
    let seed = privynet_core::manifest::seed_of(args.seed, manifest.as_ref());
    let output = privynet_core::manifest::images_of(args.output.as_deref(), manifest.as_ref())
        .context("no output: pass --output or --manifest")?;

    let start = Instant::now();
    let data = match format {
        DatasetFormat::Cifar10Binary => {
            if resize.is_some() {
                bail!("`resize` applies to image folders; CIFAR-10 images are 32x32 (the extract stage resizes to the model's input)");
            }
            cifar::read(&path)
        }
        DatasetFormat::ImageFolder => folder::read(&path, resize),
    }
    .with_context(|| format!("reading the dataset at {}", path.display()))?;
    let (classes, h, w) = (data.class_names.clone(), data.height, data.width);
    let read_s = start.elapsed().as_secs_f64();
    let splits = split::split(data, sizes, seed)
        .with_context(|| format!("drawing splits from {}", path.display()))?;

    #[derive(serde::Serialize)]
    struct Params<'a> {
        format: &'a str,
        dataset: String,
        splits: SplitSizes,
        resize: Option<[u32; 2]>,
        seed: u64,
    }
    let mut prov = Provenance::new("ingest", &args.manifest.label()).with_params(&Params {
        format: match format {
            DatasetFormat::Cifar10Binary => "cifar10-binary",
            DatasetFormat::ImageFolder => "image-folder",
        },
        dataset: path.display().to_string(),
        splits: sizes,
        resize,
        seed,
    });
    prov.add_input(&path)
        .with_context(|| format!("hashing {}", path.display()))?;
    let counts = write::write_images(&output, &splits, &classes, h, w, prov)
        .with_context(|| format!("writing {}", output.display()))?;
    tracing::info!(
        train = counts[0],
        val = counts[1],
        attacker = counts[2],
        test = counts[3],
        read_s = format!("{read_s:.1}"),
        total_s = format!("{:.1}", start.elapsed().as_secs_f64()),
        "wrote {}",
        output.display()
    );
    println!("{}", output.display());
    Ok(())
}
