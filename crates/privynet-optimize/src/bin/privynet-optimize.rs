//! `privynet-optimize`: chooses the local topology with the best validation accuracy under
//! privacy, compute and storage limits from the characterization table (test accuracy is only
//! reported), and writes decision.arrow, frontier.parquet, predictions.parquet, report.md and
//! plots/.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use arrow::array::{Float64Array, StringArray};
use clap::Parser;

use privynet_core::io::{read_arrow, write_bytes_atomic};
use privynet_core::manifest::{
    ChannelCount, Limits, ManifestArgs, OptimizeMode, OptimizeParams, SamplePoint,
};
use privynet_core::{ArtifactKind, Provenance};
use privynet_optimize::{choose, output, plot, report, table};

/// Choose the local topology from the characterization table.
#[derive(Debug, Parser)]
#[command(version, about)]
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

/// The raw-image baseline's final validation and test accuracy, from its train summary.
fn baseline_accuracy(path: &Path) -> Result<choose::Baseline> {
    let (_, batches) = read_arrow(path, ArtifactKind::TrainSummary)?;
    let b = batches.first().context("the summary has no row")?;
    let topology = b
        .column_by_name("topology")
        .and_then(|c| c.as_any().downcast_ref::<StringArray>())
        .context("no `topology` column")?
        .value(0);
    if topology != "raw" {
        bail!(
            "this is the train summary of `{topology}`, not of the raw-image baseline (`privynet-train --baseline raw`)"
        );
    }
    let get = |name: &str| -> Result<f64> {
        Ok(b.column_by_name(name)
            .and_then(|c| c.as_any().downcast_ref::<Float64Array>())
            .with_context(|| format!("no `{name}` column"))?
            .value(0))
    };
    Ok(choose::Baseline {
        val_accuracy: get("final_val_accuracy")?,
        test_accuracy: get("final_test_accuracy")?,
    })
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

fn main() {
    privynet_core::logging::run_main(|| run(Args::parse()));
}

fn run(args: Args) -> Result<()> {
    let m = args.manifest.load()?;
    let mut params = m.as_ref().map(|m| m.optimize.clone()).unwrap_or_default();
    let cuts = if args.cuts.is_empty() {
        m.as_ref().map(|m| m.sweep.cuts.clone()).unwrap_or_default()
    } else {
        args.cuts.clone()
    };
    let channels = if args.channels.is_empty() {
        m.as_ref()
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
    if let Some(s) = args.margin_scale {
        params.margin_scale = s;
    }
    let l = &mut params.limits;
    l.max_psnr = args.max_psnr.or(l.max_psnr);
    l.max_ssim = args.max_ssim.or(l.max_ssim);
    l.max_macs = args.max_macs.or(l.max_macs);
    l.max_weight_bytes = args.max_weight_bytes.or(l.max_weight_bytes);
    // The flags go through the manifest's own checks (a NaN limit would silently never bind).
    params
        .validate()
        .map_err(|m| anyhow::anyhow!("invalid optimizer settings (manifest and flags): {m}"))?;
    let OptimizeParams {
        mode,
        sample,
        limits,
        margin_scale,
        raw_baseline: _,
    } = params.clone();
    let limits: Limits = limits;

    let rows = table::read_characterization(&args.characterization)
        .with_context(|| format!("reading {}", args.characterization.display()))?;
    let grid = table::grid(&rows, &cuts, &channels)?;
    let mut plan = choose::optimize(&rows, &grid, &sample, &limits, margin_scale, mode)?;

    let mut prov = Provenance::new("optimize", &args.manifest.label()).with_params(
        &serde_json::json!({ "optimize": params, "cuts": cuts, "channels": channels }),
    );
    prov.add_input(&args.characterization)?;
    if let Some(b) = &args.baseline {
        plan.baseline = Some(
            baseline_accuracy(b)
                .with_context(|| format!("reading the baseline {}", b.display()))?,
        );
        prov.add_input(b)?;
    }
    let out = &args.output;
    std::fs::create_dir_all(out.join("plots"))
        .with_context(|| format!("creating {}", out.display()))?;
    output::write_predictions(&out.join("predictions.parquet"), &plan, &prov)?;
    output::write_frontier(&out.join("frontier.parquet"), &plan, &prov)?;
    write_bytes_atomic(
        &out.join("plots/tradeoff.svg"),
        plot::tradeoff(&plan).as_bytes(),
    )?;
    write_bytes_atomic(
        &out.join("plots/channels.svg"),
        plot::by_channels(&plan).as_bytes(),
    )?;
    write_bytes_atomic(
        &out.join("report.md"),
        report::render(&plan, &args.manifest.label()).as_bytes(),
    )?;
    // The decision last: its presence means every other output of this run is in place.
    output::write_decision(&out.join("decision.arrow"), &plan, &prov)?;

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
    Ok(())
}
