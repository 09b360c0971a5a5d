//! `privynet-extract`: runs the local network over images.parquet and writes features.parquet,
//! or derives a narrower channel count from a wider extraction at the same cut.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Parser;
use privynet_core::ArtifactKind;
use privynet_store::Store;

use privynet_core::manifest::{FeatureDtype, Manifest, ManifestArgs, Preprocess};
use privynet_core::{Provenance, Topology};
use privynet_extract::extract::{ExtractConfig, extract};

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

fn run(mut args: Args) -> Result<()> {
    let manifest = args.manifest.load()?;
    // Inputs and the output may be object URLs (the cloud zone in a bucket): the stage reads
    // cached copies and writes into a staging folder that `publish` uploads at the end.
    let store = Store::from_env();
    let target = args.output.clone();
    let output = store.output_table(&target, ArtifactKind::Features)?;
    args.output = output.path();
    let wide_url = args.derive_from.clone();
    for p in [
        &mut args.topology,
        &mut args.images,
        &mut args.model,
        &mut args.derive_from,
        &mut args.wide_selection,
        &mut args.selection,
    ] {
        *p = store.fetch_opt(p.as_deref())?;
    }
    stage(&args, manifest.as_ref(), wide_url.as_deref())?;
    output.publish()?;
    println!("{}", target.display());
    Ok(())
}

/// Extracts (or derives) the features into `args.output`.
fn stage(args: &Args, manifest: Option<&Manifest>, wide_url: Option<&Path>) -> Result<()> {
    let topology = args
        .topology
        .as_ref()
        .map(|p| Topology::read(p).with_context(|| format!("reading {}", p.display())))
        .transpose()?;
    let prov = Provenance::new("extract", &args.manifest.label());
    if let (Some(wide), Some(url)) = (&args.derive_from, wide_url) {
        let topology = topology.expect("clap requires --topology with --derive-from");
        return derive_from(args, (wide, url), topology, prov);
    }
    let cfg = config(args, manifest, topology)?;
    let prov = prov.with_params(&cfg);
    let report = extract(&cfg, prov)
        .with_context(|| format!("extracting features from {}", cfg.images.display()))?;
    tracing::info!(
        rows = report.rows,
        shape = format!("{:?}", report.shape),
        seconds = format!("{:.1}", report.seconds),
        images_per_s = format!("{:.0}", report.rows as f64 / report.seconds.max(1e-9)),
        "wrote the features"
    );
    Ok(())
}

/// Derives the narrower features of `--selection` from the wider ones at the same cut (read
/// from `wide.0`, named by its place `wide.1` in provenance and messages).
fn derive_from(
    args: &Args,
    wide: (&Path, &Path),
    topology: Topology,
    prov: Provenance,
) -> Result<()> {
    let (wide, wide_url) = wide;
    let read = |p: &PathBuf| {
        privynet_core::topology::read_selection(p)
            .with_context(|| format!("reading {}", p.display()))
    };
    let wide_sel = read(args.wide_selection.as_ref().expect("clap requires it"))?;
    let narrow_sel = read(args.selection.as_ref().expect("clap requires it"))?;
    let prov = prov.with_params(&serde_json::json!({
        "derive_from": wide_url.display().to_string(),
        "channels": narrow_sel.len(),
    }));
    let rows = privynet_extract::derive::derive(
        wide,
        &wide_sel,
        &narrow_sel,
        &topology,
        &args.output,
        prov,
    )
    .with_context(|| format!("deriving features from {}", wide_url.display()))?;
    tracing::info!(rows, "derived {} channels", narrow_sel.len());
    Ok(())
}

/// The extraction's settings from the flags, the manifest and the topology (in that order).
fn config(
    args: &Args,
    manifest: Option<&Manifest>,
    topology: Option<Topology>,
) -> Result<ExtractConfig> {
    let mut params = manifest.map(|m| m.extract.clone()).unwrap_or_default();
    params.batch_size = args.batch_size.unwrap_or(params.batch_size);
    params.threads = args.threads.or(params.threads);
    if let Some(s) = &args.splits {
        params.splits.clone_from(s);
    }
    // The flags go through the manifest's own checks.
    params
        .validate()
        .map_err(|m| anyhow::anyhow!("invalid extraction settings (manifest and flags): {m}"))?;
    let images = privynet_core::manifest::images_of(args.images.as_deref(), manifest)
        .context("no images: pass --images or --manifest")?;
    let model = args
        .model
        .clone()
        .context("no local network: pass --model local.onnx")?;
    let input_size = args
        .input_size
        .or(manifest.map(|m| m.model.input_size))
        .or(topology.as_ref().map(|t| t.input_size as u32))
        .context("no input size: pass --input-size, --topology or --manifest")?;
    privynet_core::manifest::check_input_size(input_size).map_err(anyhow::Error::msg)?;
    let preprocess: Preprocess = manifest
        .map(|m| m.model.preprocess.clone())
        .unwrap_or_default();
    if manifest.is_none() {
        tracing::warn!("no manifest: preprocessing is RGB, raw 0-255, no mean or std");
    }
    let dtype = match args.dtype {
        Some(Dtype::Float32) => FeatureDtype::Float32,
        Some(Dtype::Float16) => FeatureDtype::Float16,
        None => params.dtype,
    };
    if dtype == FeatureDtype::Float16 {
        bail!(
            "float16 feature storage is refused: polars reads Float16 Parquet columns only with a cast, and features must open in polars as they are; use float32"
        );
    }
    Ok(ExtractConfig {
        images,
        model,
        output: args.output.clone(),
        topology,
        preprocess,
        input_size,
        splits: params.splits,
        batch_size: params.batch_size,
        dtype,
        threads: params.threads,
        shard: args.shard,
    })
}
