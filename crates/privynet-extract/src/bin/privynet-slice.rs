//! `privynet-slice`: lists a pretrained CNN's cut points, or writes the local network for one
//! topology (local.onnx, topology.arrow, and the LOCAL selection.arrow).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Parser;

use privynet_core::manifest::{AllKeyword, ChannelCount, Manifest, ManifestArgs, SelectionMethod};
use privynet_core::{ArtifactKind, Provenance, Zone};
use privynet_extract::fisher;
use privynet_slice::stage::{self, Request};
use privynet_slice::{analyze, model, tables};
use privynet_store::{Artifact, Store};

/// Cut a pretrained ONNX network into the local network, with a secret channel selection.
#[derive(Debug, Parser)]
#[command(
    version,
    about = "Slice stage: ONNX graph surgery, cut points, channel selection and local cost"
)]
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
    /// Where topology.arrow goes (the cloud zone: a folder path or an object URL such as
    /// s3://bucket/run/fire3-d8/topology.arrow); by default in --output.
    #[arg(long, value_name = "PATH")]
    topology_output: Option<PathBuf>,
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
    let store = Store::from_env();
    let mut req = request(&args, manifest.as_ref(), input_name, input_size)?;
    // Checked before anything is written: the local network and the selection never go to an
    // object store.
    store.output_dir(&req.output, local_outputs())?;
    let topology = req
        .topology_output
        .clone()
        .unwrap_or_else(|| req.output.join("topology.arrow"));
    let topology = store.output_table(&topology, ArtifactKind::Topology)?;
    req.topology_output = Some(topology.path());
    req.images = store.fetch_opt(req.images.as_deref())?;
    let (preprocess, limit) = (req.preprocess.clone(), req.params.fisher_images);
    let score = |m: &model::Model, point: &analyze::CutPoint, images: &Path| {
        fisher::scores(m, point, images, &preprocess, input_size, limit)
    };
    let written = stage::slice(&req, &score)?;
    topology.publish()?;
    let point = &written.point;
    tracing::info!(
        cut = point.label(),
        d = written.channels,
        shape = format!("{}x{}x{}", written.channels, point.height, point.width),
        macs = point.macs,
        weight_bytes = point.weight_bytes,
        "wrote the local network to {}",
        req.output.display()
    );
    println!("{}", req.output.display());
    Ok(())
}

/// The topology to slice, from the flags and the manifest (flags win).
fn request(
    args: &Args,
    manifest: Option<&Manifest>,
    input: Option<String>,
    input_size: u32,
) -> Result<Request> {
    let model = args
        .model
        .clone()
        .or_else(|| manifest.map(|m| m.model.path.clone()))
        .context("no model: pass --model or --manifest")?;
    let cut = args.cut.clone().context("no cut point: pass --cut")?;
    let channels = args
        .channels
        .clone()
        .context("no channel count: pass --channels D (or all)")?;
    let channels = if channels == "all" {
        ChannelCount::All(AllKeyword::All)
    } else {
        ChannelCount::Count(
            channels
                .parse()
                .with_context(|| format!("--channels `{channels}` is not a number or `all`"))?,
        )
    };
    let output = args
        .output
        .clone()
        .context("no output folder: pass --output DIR")?;
    let method = match args.method {
        Some(Method::Random) => SelectionMethod::Random,
        Some(Method::FisherRandom) => SelectionMethod::FisherRandom,
        None => manifest.map_or(SelectionMethod::Random, |m| m.slice.method),
    };
    Ok(Request {
        model,
        input,
        input_size,
        cut,
        channels,
        method,
        seed: privynet_core::manifest::seed_of(args.seed, manifest),
        params: manifest.map(|m| m.slice.clone()).unwrap_or_default(),
        images: privynet_core::manifest::images_of(args.images.as_deref(), manifest),
        preprocess: manifest
            .map(|m| m.model.preprocess.clone())
            .unwrap_or_default(),
        output,
        topology_output: args.topology_output.clone(),
        manifest_label: args.manifest.label(),
    })
}

fn list(args: &Args, path: &Path, input: Option<&str>, input_size: u32) -> Result<()> {
    let m = model::load(path, input).with_context(|| format!("loading {}", path.display()))?;
    let a = analyze::analyze(&m, i64::from(input_size))?;
    if a.points.is_empty() {
        bail!("{}: no cut points could be inferred", path.display());
    }
    let (table, note) = stage::listing(&a);
    print!("{table}");
    if let Some(note) = note {
        eprintln!("{note}");
    }
    if let Some(out) = &args.output {
        let mut prov = Provenance::new("slice", &args.manifest.label());
        prov.add_input(path)?;
        prov.set("input_size", input_size.to_string());
        let store = Store::from_env();
        let target = store.output_table(out, ArtifactKind::CutPoints)?;
        tables::write_cut_points(&target.path(), &a.points, &prov)?;
        target.publish()?;
    }
    Ok(())
}

/// The files of `--output`: both LOCAL.
fn local_outputs() -> Vec<Artifact> {
    vec![
        Artifact::file("local.onnx", "local_network", Zone::Local),
        Artifact::file("selection.arrow", "selection", Zone::Local),
    ]
}
