//! `privynet-slice`: lists a pretrained CNN's cut points, or writes the local network for one
//! topology (local.onnx, topology.arrow, and the LOCAL selection.arrow).

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Parser;

use privynet_core::Provenance;
use privynet_core::manifest::{ManifestArgs, Preprocess, SelectionMethod};
use privynet_slice::{analyze, model, select, surgery, tables};

/// Cut a pretrained ONNX network into the local network, with a secret channel selection.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    #[command(flatten)]
    manifest: ManifestArgs,
    /// List the cut points of MODEL instead of slicing.
    #[arg(long, value_name = "MODEL")]
    list: Option<PathBuf>,
    /// The pretrained model (overrides `model.path`).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Square input size (overrides `model.input_size`).
    #[arg(long)]
    input_size: Option<u32>,
    /// The image input's name, when the model has several.
    #[arg(long)]
    input: Option<String>,
    /// Cut point: a layer name (conv1, fire3) or an ONNX tensor name.
    #[arg(long)]
    cut: Option<String>,
    /// Number of channels to keep (D), or `all`.
    #[arg(long)]
    channels: Option<String>,
    /// Selection method (overrides `slice.method`).
    #[arg(long, value_enum)]
    method: Option<Method>,
    /// Seed of the selection (overrides the manifest's `seed`).
    #[arg(long)]
    seed: Option<u64>,
    /// images.parquet whose train split scores channels for fisher-random.
    #[arg(long)]
    images: Option<PathBuf>,
    /// Output folder for local.onnx, topology.arrow and selection.arrow; with --list, the
    /// Arrow file for the listing.
    #[arg(long, short)]
    output: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Method {
    Random,
    FisherRandom,
}

fn main() {
    privynet_core::logging::run_main(|| run(Args::parse()));
}

fn run(args: Args) -> Result<()> {
    let manifest = args.manifest.load()?;
    let input_size = args
        .input_size
        .or(manifest.as_ref().map(|m| m.model.input_size))
        .context("no input size: pass --input-size or --manifest")?;
    privynet_core::manifest::check_input_size(input_size).map_err(anyhow::Error::msg)?;
    let input_name = args
        .input
        .clone()
        .or_else(|| manifest.as_ref().and_then(|m| m.model.input.clone()));
    if let Some(path) = &args.list {
        return list(&args, path, input_name.as_deref(), input_size);
    }
    let model_path = args
        .model
        .clone()
        .or_else(|| manifest.as_ref().map(|m| m.model.path.clone()))
        .context("no model: pass --model or --manifest")?;
    let cut = args.cut.clone().context("no cut point: pass --cut")?;
    let channels = args
        .channels
        .clone()
        .context("no channel count: pass --channels D (or all)")?;
    let out = args
        .output
        .clone()
        .context("no output folder: pass --output DIR")?;
    let method = match args.method {
        Some(Method::Random) => SelectionMethod::Random,
        Some(Method::FisherRandom) => SelectionMethod::FisherRandom,
        None => manifest
            .as_ref()
            .map_or(SelectionMethod::Random, |m| m.slice.method),
    };
    let seed = privynet_core::manifest::seed_of(args.seed, manifest.as_ref());
    let slice_params = manifest
        .as_ref()
        .map(|m| m.slice.clone())
        .unwrap_or_default();

    let m = model::load(&model_path, input_name.as_deref())
        .with_context(|| format!("loading {}", model_path.display()))?;
    if m.was_fp16 {
        tracing::info!(
            "fp16 weights upcast to fp32 (exact); the local network computes and outputs fp32"
        );
    }
    let analysis = analyze::analyze(&m, i64::from(input_size))?;
    let point = analysis.find(&cut)?.clone();
    let d = if channels == "all" {
        point.channels as usize
    } else {
        channels
            .parse::<usize>()
            .with_context(|| format!("--channels `{channels}` is not a number or `all`"))?
    };
    // Check D before any expensive scoring.
    select::take(&(0..point.channels).collect::<Vec<_>>(), d, point.label())?;

    let mut prov = Provenance::new("slice", &args.manifest.label());
    prov.add_input(&model_path)?;
    let (order, scores) = match method {
        SelectionMethod::Random => (select::random_order(point.channels as usize, seed), None),
        SelectionMethod::FisherRandom => {
            let images =
                privynet_core::manifest::images_of(args.images.as_deref(), manifest.as_ref())
                    .context("fisher-random needs labelled images: pass --images images.parquet")?;
            prov.add_input(&images)?;
            let scores = fisher(
                &m,
                &point,
                &images,
                manifest
                    .as_ref()
                    .map(|m| m.model.preprocess.clone())
                    .unwrap_or_default(),
                input_size,
                slice_params.fisher_images,
            )?;
            (
                select::fisher_order(&scores, slice_params.top_fraction, seed),
                Some(scores),
            )
        }
    };
    let chosen = select::take(&order, d, point.label())?;
    #[derive(serde::Serialize)]
    struct Params<'a> {
        model: String,
        input_size: u32,
        cut: &'a str,
        channels: usize,
        method: String,
        seed: u64,
        top_fraction: f64,
        fisher_images: usize,
    }
    let prov = prov.with_params(&Params {
        model: model_path.display().to_string(),
        input_size,
        cut: &point.name,
        channels: d,
        method: method.to_string(),
        seed,
        top_fraction: slice_params.top_fraction,
        fisher_images: slice_params.fisher_images,
    });
    let local = surgery::local_network(&m, &point.name, &chosen)?;
    let bytes = surgery::to_bytes(&local)?;
    privynet_core::io::write_bytes_atomic(&out.join("local.onnx"), &bytes)?;
    let topo = tables::topology(&point, i64::from(input_size), d as i64, &method.to_string());
    tables::write_topology(&out.join("topology.arrow"), &topo, &prov)?;
    let selection = select::Selection {
        method,
        seed,
        channels: chosen,
        scores,
    };
    tables::write_selection(&out.join("selection.arrow"), &selection, &prov)?;
    tracing::info!(
        cut = point.label(),
        d,
        shape = format!("{}x{}x{}", d, point.height, point.width),
        macs = point.macs,
        weight_bytes = point.weight_bytes,
        "wrote the local network to {}",
        out.display()
    );
    println!("{}", out.display());
    Ok(())
}

/// Scores every channel at the cut by its Fisher ratio on the user's labelled training images.
fn fisher(
    m: &model::Model,
    point: &analyze::CutPoint,
    images: &std::path::Path,
    preprocess: Preprocess,
    input_size: u32,
    limit: usize,
) -> Result<Vec<f64>> {
    let all: Vec<i64> = (0..point.channels).collect();
    let full = surgery::local_network(m, &point.name, &all)?;
    let dir = tempfile::tempdir().context("creating a temporary folder")?;
    let path = dir.path().join("full.onnx");
    std::fs::write(&path, surgery::to_bytes(&full)?).context("writing a temporary model")?;
    let (acts, labels) = privynet_extract::extract::channel_means(
        &path,
        images,
        "train",
        limit,
        &preprocess,
        input_size,
        None,
    )
    .with_context(|| format!("scoring channels on {}", images.display()))?;
    let classes = labels.iter().copied().max().unwrap_or(0) as usize + 1;
    tracing::info!(
        images = labels.len(),
        "scored {} channels by Fisher ratio",
        point.channels
    );
    Ok(select::fisher_scores(&acts, &labels, classes))
}

fn list(args: &Args, path: &std::path::Path, input: Option<&str>, input_size: u32) -> Result<()> {
    let m = model::load(path, input).with_context(|| format!("loading {}", path.display()))?;
    let a = analyze::analyze(&m, i64::from(input_size))?;
    if a.points.is_empty() {
        bail!("{}: no cut points could be inferred", path.display());
    }
    println!(
        "{:>3}  {:<10} {:<22} {:<9} {:>16} {:>14} {:>10} {:>12}",
        "#", "layer", "tensor", "op", "shape (CxHxW)", "MACs/image", "params", "weight B"
    );
    for p in &a.points {
        println!(
            "{:>3}  {:<10} {:<22} {:<9} {:>16} {:>14} {:>10} {:>12}",
            p.index,
            p.layer.as_deref().unwrap_or("-"),
            p.name,
            p.op,
            format!("{}x{}x{}", p.channels, p.height, p.width),
            p.macs,
            p.params,
            p.weight_bytes
        );
    }
    if let Some((node, op)) = &a.stopped_at {
        eprintln!(
            "note: listing stops at node `{node}`: op {op} is not supported by the shape and cost inference"
        );
    }
    if let Some(out) = &args.output {
        let mut prov = Provenance::new("slice", &args.manifest.label());
        prov.add_input(path)?;
        prov.set("input_size", input_size.to_string());
        tables::write_cut_points(out, &a.points, &prov)?;
    }
    Ok(())
}
