//! `privynet-optimize`: chooses the local topology with the best validation accuracy under
//! privacy, compute and storage limits from the characterization table (test accuracy is only
//! reported), and writes decision.arrow, frontier.parquet, predictions.parquet, report.md and
//! plots/. A thin shell: it resolves the flags against the manifest, calls the library and
//! prints the outcome.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Parser;

use privynet_core::Provenance;
use privynet_core::manifest::{
    ChannelCount, Manifest, ManifestArgs, OptimizeMode, OptimizeParams, SamplePoint,
};
use privynet_optimize::choose::{self, Plan};
use privynet_optimize::{baseline, output, table};

/// Chooses the local topology (cut and channel count) with the best validation accuracy under
/// privacy, compute and storage limits, from the characterization table.
///
/// Fits monotone models of validation accuracy and attacker PSNR/SSIM against the channel count
/// to the sampled topologies of each cut, predicts the rest of the grid (with a safety margin
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
    #[arg(long, value_delimiter = ',', value_parser = parse_channels)]
    channels: Vec<ChannelCount>,
    /// Sampled points per cut (overrides `optimize.sample`), e.g. smallest,middle,largest or 8.
    #[arg(long, value_delimiter = ',', value_parser = parse_sample)]
    sample: Vec<SamplePoint>,
    /// `model` or `exhaustive` (overrides `optimize.mode`).
    #[arg(long, value_parser = parse_mode)]
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

fn yaml<T: serde::de::DeserializeOwned>(s: &str) -> Result<T, String> {
    serde_norway::from_str(s).map_err(|e| format!("`{s}`: {e}"))
}
fn parse_channels(s: &str) -> Result<ChannelCount, String> {
    yaml(s)
}
fn parse_sample(s: &str) -> Result<SamplePoint, String> {
    yaml(s)
}
fn parse_mode(s: &str) -> Result<OptimizeMode, String> {
    yaml(s)
}

/// The run's settings: the manifest's, with the flags over them.
struct Settings {
    params: OptimizeParams,
    cuts: Vec<String>,
    channels: Vec<ChannelCount>,
}

/// Resolves the flags against the manifest (if any) and checks the result.
fn resolve(args: &Args, manifest: Option<&Manifest>) -> Result<Settings> {
    let mut params = manifest.map(|m| m.optimize.clone()).unwrap_or_default();
    let cuts = if args.cuts.is_empty() {
        manifest.map(|m| m.sweep.cuts.clone()).unwrap_or_default()
    } else {
        args.cuts.clone()
    };
    let channels = if args.channels.is_empty() {
        manifest
            .map(|m| m.sweep.channels.clone())
            .unwrap_or_default()
    } else {
        args.channels.clone()
    };
    if cuts.is_empty() || channels.is_empty() {
        bail!("the grid is not set: give --manifest, or --cuts and --channels");
    }
    if !args.sample.is_empty() {
        params.sample = args.sample.clone();
    }
    if let Some(mode) = args.mode {
        params.mode = mode;
    }
    if let Some(scale) = args.margin_scale {
        params.margin_scale = scale;
    }
    let limits = &mut params.limits;
    limits.max_psnr = args.max_psnr.or(limits.max_psnr);
    limits.max_ssim = args.max_ssim.or(limits.max_ssim);
    limits.max_macs = args.max_macs.or(limits.max_macs);
    limits.max_weight_bytes = args.max_weight_bytes.or(limits.max_weight_bytes);
    // The flags go through the manifest's own checks (a NaN limit would silently never bind).
    params
        .validate()
        .map_err(|m| anyhow::anyhow!("invalid optimizer settings (manifest and flags): {m}"))?;
    Ok(Settings {
        params,
        cuts,
        channels,
    })
}

fn main() {
    privynet_core::logging::run_main(|| run(Args::parse()));
}

fn run(args: Args) -> Result<()> {
    let manifest = args.manifest.load()?;
    let Settings {
        params,
        cuts,
        channels,
    } = resolve(&args, manifest.as_ref())?;
    // Destructured so that a new optimizer setting cannot go unused unnoticed.
    let OptimizeParams {
        mode,
        sample,
        limits,
        margin_scale,
        raw_baseline: _,
    } = params.clone();

    let rows = table::read_characterization(&args.characterization)
        .with_context(|| format!("reading {}", args.characterization.display()))?;
    let grid = table::grid(&rows, &cuts, &channels)?;
    let mut plan = choose::optimize(&rows, &grid, &sample, &limits, margin_scale, mode)?;

    let mut prov = Provenance::new("optimize", &args.manifest.label()).with_params(
        &serde_json::json!({ "optimize": params, "cuts": cuts, "channels": channels }),
    );
    prov.add_input(&args.characterization)?;
    if let Some(path) = &args.baseline {
        plan.baseline = Some(
            baseline::read(path)
                .with_context(|| format!("reading the baseline {}", path.display()))?,
        );
        prov.add_input(path)?;
    }
    let out = &args.output;
    std::fs::create_dir_all(out.join("plots"))
        .with_context(|| format!("creating {}", out.display()))?;
    output::write_all(out, &plan, &prov, &args.manifest.label())?;
    print_outcome(&plan);
    Ok(())
}

/// Logs the choice (or the nearest topologies) and prints `chosen <topology>` or `infeasible`.
fn print_outcome(plan: &Plan) {
    match plan.chosen.map(|i| &plan.candidates[i]) {
        Some(c) => {
            let measured = c.measured.map_or_else(
                || "not measured yet".to_string(),
                |m| {
                    format!(
                        "measured val acc {:.4} (test {}), PSNR {:.2} dB",
                        m.accuracy,
                        c.measured_test_accuracy
                            .map_or_else(|| "-".into(), |t| format!("{t:.4}")),
                        m.psnr
                    )
                },
            );
            tracing::info!(
                binding = choose::limit_names(&plan.binding),
                "chose {}: predicted val acc {:.4}, PSNR {:.2} dB; {measured}",
                c.topo.topology,
                c.predicted.accuracy,
                c.predicted.psnr
            );
            println!("chosen {}", c.topo.topology);
        }
        None => {
            let nearest: Vec<&str> = plan
                .nearest
                .iter()
                .map(|&i| plan.candidates[i].topo.topology.as_str())
                .collect();
            tracing::warn!(
                binding = choose::limit_names(&plan.binding),
                "no topology meets the limits; nearest: {}",
                nearest.join(", ")
            );
            println!("infeasible");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_grid_and_the_limits() {
        let args = Args::parse_from([
            "privynet-optimize",
            "--characterization",
            "c.parquet",
            "--cuts",
            "conv1,fire3",
            "--channels",
            "4,all",
            "--max-psnr",
            "16",
            "--mode",
            "exhaustive",
            "-o",
            "out",
        ]);
        let settings = resolve(&args, None).unwrap();
        assert_eq!(settings.cuts, ["conv1", "fire3"]);
        assert_eq!(settings.channels.len(), 2);
        assert_eq!(settings.params.limits.max_psnr, Some(16.0));
        assert_eq!(settings.params.mode, OptimizeMode::Exhaustive);
        let no_grid = Args::parse_from(["privynet-optimize", "--characterization", "c", "-o", "o"]);
        let e = resolve(&no_grid, None).err().unwrap().to_string();
        assert!(e.contains("the grid is not set"), "{e}");
    }
}
