//! `privynet-slice`: lists a pretrained CNN's cut points, or writes the local network for one
//! topology (local.onnx, topology.arrow, and the LOCAL selection.arrow).

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Parser;

use privynet_core::manifest::{ManifestArgs, SelectionMethod};
use privynet_core::{ArtifactKind, Zone};
use privynet_extract::fisher;
use privynet_slice::stage::{self, Flags, Request};
use privynet_slice::{analyze, model};
use privynet_store::{Artifact, Store};

/// Cut a pretrained ONNX network into the local network, with a secret channel selection.
#[derive(Debug, Parser)]
#[command(
    name = "privynet-slice",
    version,
    about = "Slice stage: ONNX graph surgery, cut points, channel selection and local cost"
)]
struct Args {
    #[command(flatten)]
    manifest: ManifestArgs,
    /// List the cut points of MODEL instead of slicing (the slicing flags do not apply).
    #[arg(
        long,
        value_name = "MODEL",
        conflicts_with_all = ["model", "cut", "channels", "method", "seed", "images", "topology_output"]
    )]
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
    let label = args.manifest.label();
    let flags = Flags {
        model: args.model,
        input_size: args.input_size,
        input: args.input,
        cut: args.cut,
        channels: args.channels,
        method: args.method.map(|m| match m {
            Method::Random => SelectionMethod::Random,
            Method::FisherRandom => SelectionMethod::FisherRandom,
        }),
        seed: args.seed,
        images: args.images,
        output: args.output,
        topology_output: args.topology_output,
    };
    let (input, input_size) = stage::model_input(&flags, manifest.as_ref())?;
    let store = Store::from_env();
    if let Some(path) = &args.list {
        let a = stage::cut_points(path, input.as_deref(), input_size)?;
        let (table, note) = stage::listing(&a);
        print!("{table}");
        if let Some(note) = note {
            eprintln!("{note}");
        }
        if let Some(out) = &flags.output {
            let target = store.output_table(out, ArtifactKind::CutPoints)?;
            stage::write_cut_points(&target.path(), &a, path, input_size, &label)?;
            target.publish()?;
        }
        return Ok(());
    }
    let mut req = Request::resolve(&flags, manifest.as_ref(), (input, input_size), label)?;
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
    written.log(&req.output);
    println!("{}", req.output.display());
    Ok(())
}

/// The files of `--output`: both LOCAL.
fn local_outputs() -> Vec<Artifact> {
    vec![
        Artifact::file("local.onnx", "local_network", Zone::Local),
        Artifact::file("selection.arrow", "selection", Zone::Local),
    ]
}
