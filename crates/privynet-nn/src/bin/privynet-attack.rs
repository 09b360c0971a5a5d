//! `privynet-attack`: the user's privacy audit of one topology. Simulates the cloud-side
//! attacker: it trains an image reconstruction network on (feature, image) pairs from its own
//! pool (the `attacker` split) and rebuilds the victims' `test` images from their features,
//! under each enabled knowledge mode, then refines them by optimisation through the local
//! network; reports PSNR and SSIM per image, per mode and per attacker family. On defended
//! features the attacker knows the defence (the features' encoding, not the user's secret);
//! with noise, the audit also reports the Fisher-information bound (`psnr_bound`).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;
use privynet_core::Zone;
use privynet_store::{Artifact, Store};

use privynet_core::manifest::{AttackParams, ManifestArgs};
use privynet_nn::audit::{self, run::AttackRun};

// Keeps freed memory in the process: training steps reuse it instead of faulting in fresh pages.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Score a topology's privacy: how well an attacker, trained until it converges, rebuilds the
/// victims' images from their features (PSNR, SSIM, 95% intervals, per knowledge mode and
/// attacker family: a learned inverse network, and optimisation through the local network).
#[derive(Debug, Parser)]
#[command(name = "privynet-attack", version, long_about = None)]
struct Args {
    #[command(flatten)]
    manifest: ManifestArgs,
    /// images.parquet (LOCAL): the attacker's pool and the victims' originals.
    #[arg(long)]
    images: Option<PathBuf>,
    /// The topology's features.parquet (victims' test rows; the attacker pool's rows).
    #[arg(long)]
    features: PathBuf,
    /// The topology's topology.arrow.
    #[arg(long)]
    topology: PathBuf,
    /// The topology's selection.arrow (LOCAL), to score the matching attacker.
    #[arg(long)]
    selection: PathBuf,
    /// All-channel features at the same cut, for the attackers that do not know the selection.
    #[arg(long)]
    full_features: Option<PathBuf>,
    /// selection.arrow of the all-channel features (a permutation of the cut's channels), so
    /// that they can be put back in the pretrained network's channel order.
    #[arg(long, requires = "full_features")]
    full_selection: Option<PathBuf>,
    /// The topology's local.onnx (LOCAL): the optimisation attacker differentiates through it,
    /// and every reconstruction's feature error is measured with it. Required when
    /// `attack.families` includes `optimization`.
    #[arg(long)]
    local_network: Option<PathBuf>,
    /// The IRN's epoch cap (overrides `attack.max_epochs`); it stops earlier on a held-out
    /// plateau.
    #[arg(long)]
    max_epochs: Option<usize>,
    /// Seed (overrides the manifest's `seed`).
    #[arg(long)]
    seed: Option<u64>,
    /// Output folder: privacy.parquet, attack_summary.arrow, reconstructions.png.
    #[arg(long, short)]
    output: PathBuf,
}

fn main() {
    privynet_nn::memory::keep_freed_memory();
    privynet_core::logging::run_main(|| run(Args::parse()));
}

fn run(args: Args) -> Result<()> {
    let manifest = args.manifest.load()?;
    let mut params: AttackParams = manifest
        .as_ref()
        .map(|m| m.attack.clone())
        .unwrap_or_default();
    if let Some(e) = args.max_epochs {
        params.max_epochs = e;
    }
    params
        .validate()
        .map_err(|m| anyhow::anyhow!("invalid attack settings (manifest and flags): {m}"))?;
    let images = privynet_core::manifest::images_of(args.images.as_deref(), manifest.as_ref())
        .context("no images: pass --images or --manifest")?;
    // The features and topology may be in a bucket (the cloud zone): read cached copies. The
    // outputs are the user's own audit (LOCAL): refused at an object-store place.
    let store = Store::from_env();
    store.output_dir(&args.output, outputs())?;
    let request = AttackRun {
        params,
        seed: privynet_core::manifest::seed_of(args.seed, manifest.as_ref()),
        classes: manifest.as_ref().map_or(10, |m| m.train.classes),
        images: store.fetch(&images)?,
        features: store.fetch(&args.features)?,
        topology: store.fetch(&args.topology)?,
        selection: store.fetch(&args.selection)?,
        full_features: store.fetch_opt(args.full_features.as_deref())?,
        full_selection: store.fetch_opt(args.full_selection.as_deref())?,
        local_network: store.fetch_opt(args.local_network.as_deref())?,
        preprocess: manifest
            .as_ref()
            .map(|m| m.model.preprocess.clone())
            .unwrap_or_default(),
        manifest_label: args.manifest.label(),
        output: args.output.clone(),
    };
    audit::run::run(&request)?;
    println!("{}", args.output.display());
    Ok(())
}

/// What the audit writes: all LOCAL (the reconstructions are pictures of the user's images).
fn outputs() -> Vec<Artifact> {
    vec![
        Artifact::file("privacy.parquet", "privacy", Zone::Local),
        Artifact::file("attack_summary.arrow", "attack_summary", Zone::Local),
        Artifact::file("attack_metrics.arrow", "attack_metrics", Zone::Local),
        Artifact::file("reconstructions.png", "reconstructions", Zone::Local),
    ]
}
