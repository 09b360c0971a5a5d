//! `privynet-optimize`: chooses the local topology with the best validation accuracy under
//! privacy, compute, storage and bandwidth limits from the characterization table (test accuracy is only
//! reported), and writes decision.arrow, frontier.parquet, predictions.parquet, report.md and
//! plots/. A thin shell over the library's `stage`, which resolves the flags against the
//! manifest and runs; the binary prints the outcome.

use std::path::PathBuf;

use anyhow::Result;
use clap::Parser;

use privynet_core::manifest::{ChannelCount, ManifestArgs, OptimizeMode, SamplePoint};
use privynet_optimize::stage::{self, Flags, Request};

/// Chooses the local topology (cut, channel count and defence) with the best validation accuracy
/// under privacy, compute, storage and bandwidth limits, from the characterization table.
///
/// Fits monotone models of validation accuracy, attacker PSNR/SSIM and the Fisher-information
/// PSNR bound against the channel count to the sampled topologies of each series (a cut under
/// one defence), scales bytes sent per image with the channel count, predicts the rest of the grid (with a safety margin
/// from the fits' held-out error), and chooses the most accurate topology that meets every
/// limit; test accuracy is only reported. Writes decision.arrow, frontier.parquet,
/// predictions.parquet, report.md and plots/ into --output, and prints `chosen <topology>` or
/// `infeasible`.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    manifest: ManifestArgs,
    /// characterization.parquet (one row per evaluated topology).
    #[arg(long)]
    characterization: PathBuf,
    /// Cuts of the grid (overrides `sweep.cuts`), e.g. conv1,fire3.
    #[arg(long, value_delimiter = ',')]
    cuts: Vec<String>,
    /// Channel counts of the grid (overrides `sweep.channels`), e.g. 4,16,all.
    #[arg(long, value_delimiter = ',', value_parser = stage::parse_value::<ChannelCount>)]
    channels: Vec<ChannelCount>,
    /// Noise levels of the grid, fractions of each channel's std (overrides `sweep.noise`),
    /// e.g. 0,0.25.
    #[arg(long, value_delimiter = ',')]
    noise: Vec<f64>,
    /// Bits per value sent of the grid (overrides `sweep.bits`), e.g. 32,8.
    #[arg(long, value_delimiter = ',')]
    bits: Vec<u8>,
    /// Sampled points per series, a cut under one defence (overrides `optimize.sample`), e.g. smallest,middle,largest or 8.
    #[arg(long, value_delimiter = ',', value_parser = stage::parse_value::<SamplePoint>)]
    sample: Vec<SamplePoint>,
    /// `model` or `exhaustive` (overrides `optimize.mode`).
    #[arg(long, value_parser = stage::parse_value::<OptimizeMode>)]
    mode: Option<OptimizeMode>,
    /// Largest allowed attacker PSNR in dB (overrides `optimize.limits.max_psnr`).
    #[arg(long)]
    max_psnr: Option<f64>,
    /// Largest allowed attacker SSIM.
    #[arg(long)]
    max_ssim: Option<f64>,
    /// Most local MACs per image.
    #[arg(long)]
    max_macs: Option<i64>,
    /// Most bytes of local weights.
    #[arg(long)]
    max_weight_bytes: Option<i64>,
    /// Most bytes sent to the cloud per image (overrides `optimize.limits.max_bytes_per_image`).
    #[arg(long)]
    max_bytes_per_image: Option<i64>,
    /// Largest allowed Fisher-information PSNR bound in dB; a topology without noise has no
    /// bound and fails it (overrides `optimize.limits.max_psnr_bound`).
    #[arg(long)]
    max_psnr_bound: Option<f64>,
    /// Safety margin = this x the largest held-out fit error (overrides `optimize.margin_scale`).
    #[arg(long)]
    margin_scale: Option<f64>,
    /// train_summary.arrow of the raw-image baseline (`privynet-train --baseline raw`): the
    /// decision and report then say what the split costs in accuracy.
    #[arg(long)]
    baseline: Option<PathBuf>,
    /// Output folder.
    #[arg(long, short)]
    output: PathBuf,
}

fn main() {
    privynet_core::logging::run_main(|| run(Args::parse()));
}

fn run(args: Args) -> Result<()> {
    let manifest = args.manifest.load()?;
    let flags = Flags {
        cuts: args.cuts,
        channels: args.channels,
        noise: args.noise,
        bits: args.bits,
        sample: args.sample,
        mode: args.mode,
        max_psnr: args.max_psnr,
        max_ssim: args.max_ssim,
        max_macs: args.max_macs,
        max_weight_bytes: args.max_weight_bytes,
        max_bytes_per_image: args.max_bytes_per_image,
        max_psnr_bound: args.max_psnr_bound,
        margin_scale: args.margin_scale,
    };
    let req = Request {
        settings: stage::resolve(&flags, manifest.as_ref())?,
        characterization: args.characterization,
        baseline: args.baseline,
        output: args.output,
        manifest_label: args.manifest.label(),
    };
    let plan = stage::run(&req)?;
    println!("{}", stage::outcome(&plan));
    Ok(())
}
