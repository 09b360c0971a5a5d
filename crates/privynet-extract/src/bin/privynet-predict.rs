//! `privynet-predict`: the deployed pair on images, as a deployment runs it: local.onnx on the
//! user's side, cloud.onnx on the features. Reads images.parquet, an image folder or CIFAR-10
//! binaries; runs both halves, or one (`--local-only` writes the features that cross,
//! `--features` runs the cloud half on them). A defended card's defence is applied to the local
//! half's output (noise, then quantisation). Writes predictions.parquet and prints the
//! accuracy on the images whose class is known. A thin shell over `privynet_extract::predict`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;

use privynet_extract::predict::{Input, PredictReport, PredictRun, predict};

/// Classify images with a deployed pair (local.onnx, then cloud.onnx, as card.json says).
#[derive(Debug, Parser)]
#[command(name = "privynet-predict", version)]
struct Args {
    /// The deploy folder: card.json, local.onnx, cloud.onnx (`deploy/` of a run).
    #[arg(long)]
    deploy: PathBuf,
    /// The images: images.parquet (from privynet-ingest), a folder of PNG or JPEG images (one
    /// subfolder per class, labelled by its index in sorted order, or flat, labels unknown),
    /// or CIFAR-10 binaries (a folder of the official batch files, plain or .gz, or one file).
    #[arg(
        long,
        required_unless_present = "features",
        conflicts_with = "features"
    )]
    images: Option<PathBuf>,
    /// Run only cloud.onnx, on the features a `--local-only` run wrote (the cloud's side: it
    /// needs neither images nor local.onnx).
    #[arg(long)]
    features: Option<PathBuf>,
    /// Run only local.onnx and write the features the cloud would receive to --features-out.
    #[arg(long, requires = "features_out")]
    local_only: bool,
    /// The features file a `--local-only` run writes (as features.parquet).
    #[arg(long, requires = "local_only")]
    features_out: Option<PathBuf>,
    /// Only these splits (e.g. `test`); all of the input's by default. CIFAR-10 binaries hold
    /// `train` (data_batch_1 to 5) and `test` (test_batch); a folder has none.
    #[arg(long, value_delimiter = ',')]
    split: Vec<String>,
    /// Images per batch.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..))]
    batch_size: u64,
    /// ONNX Runtime threads per half (default: the cores).
    #[arg(long)]
    threads: Option<usize>,
    /// For a defended card: draw the noise from this secret (the run's secret.key) as the
    /// run's defend stage did, reproducing its features; by default the noise is fresh for
    /// every image, from the operating system's randomness.
    #[arg(long, value_name = "PATH", conflicts_with = "features")]
    secret: Option<PathBuf>,
    /// predictions.parquet to write (not with --local-only).
    #[arg(
        long,
        short,
        required_unless_present = "local_only",
        conflicts_with = "local_only"
    )]
    output: Option<PathBuf>,
}

fn main() {
    privynet_core::logging::run_main(|| run(Args::parse()));
}

fn run(args: Args) -> Result<()> {
    let input = match (args.images, args.features) {
        (Some(images), _) => Input::Images(images),
        (None, Some(features)) => Input::Features(features),
        (None, None) => unreachable!("clap requires --images or --features"),
    };
    let output = match (args.local_only, args.features_out, args.output) {
        (true, Some(f), _) => f,
        (false, _, Some(o)) => o,
        _ => unreachable!("clap requires --features-out or -o"),
    };
    let request = PredictRun {
        deploy: args.deploy,
        input: input.clone(),
        local_only: args.local_only,
        splits: args.split,
        output: output.clone(),
        batch_size: args.batch_size as usize,
        threads: args.threads,
        secret: args.secret,
    };
    let what = match &input {
        Input::Images(p) | Input::Features(p) => p.display().to_string(),
    };
    let report = predict(&request, "-").with_context(|| format!("predicting on {what}"))?;
    println!("{}", summary(&report, args.local_only, &output));
    Ok(())
}

/// The report line: images, speed, how many had labels, and the accuracy over those.
fn summary(report: &PredictReport, local_only: bool, output: &std::path::Path) -> String {
    let c = report.counts;
    let head = format!(
        "{} images in {:.1}s ({:.0} images/s), {} with labels",
        c.images,
        report.seconds,
        c.images as f64 / report.seconds.max(1e-9),
        c.labelled
    );
    let tail = match (local_only, report.accuracy()) {
        (true, _) => "features as the cloud receives them".to_string(),
        (false, Some(a)) => format!("accuracy {a:.4} ({} of {})", c.correct, c.labelled),
        (false, None) => "no accuracy without labels".to_string(),
    };
    format!("{head}; {tail} -> {}", output.display())
}
