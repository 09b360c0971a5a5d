//! `privynet-predict`: the deployed pair on images, as a deployment runs it: local.onnx on the
//! user's side, cloud.onnx on the features. Writes predictions.parquet and prints the accuracy
//! on the images whose class is known. A thin shell over `privynet_extract::predict`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Parser;

use privynet_extract::predict::{PredictRun, predict};

/// Classify images with a deployed pair (local.onnx, then cloud.onnx, as card.json says).
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The deploy folder: card.json, local.onnx, cloud.onnx (`deploy/` of a run).
    #[arg(long)]
    deploy: PathBuf,
    /// images.parquet (from privynet-ingest).
    #[arg(long)]
    images: PathBuf,
    /// Only these splits (e.g. `test`); all of the file's by default.
    #[arg(long, value_delimiter = ',')]
    split: Vec<String>,
    /// Images per batch.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..))]
    batch_size: u64,
    /// ONNX Runtime threads per half (default: the cores).
    #[arg(long)]
    threads: Option<usize>,
    /// predictions.parquet to write.
    #[arg(long, short)]
    output: PathBuf,
}

fn main() {
    privynet_core::logging::run_main(|| run(Args::parse()));
}

fn run(args: Args) -> Result<()> {
    let request = PredictRun {
        deploy: args.deploy,
        images: args.images,
        splits: args.split,
        output: args.output.clone(),
        batch_size: args.batch_size as usize,
        threads: args.threads,
    };
    let report = predict(&request, "-")?;
    println!(
        "{} images in {:.1}s ({:.0} images/s); accuracy {:.4} ({} of {}) -> {}",
        report.images,
        report.seconds,
        report.images as f64 / report.seconds.max(1e-9),
        report.accuracy(),
        report.correct,
        report.images,
        args.output.display()
    );
    Ok(())
}
