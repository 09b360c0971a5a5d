//! `privynet-attack`: the user's privacy audit of one topology. Simulates the cloud-side
//! attacker: it trains an image reconstruction network on (feature, image) pairs from its own
//! pool (the `attacker` split) and rebuilds the victims' `test` images from their features,
//! under each enabled knowledge mode; reports PSNR and SSIM per image and per mode.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Parser;

use privynet_core::manifest::{AttackMode, AttackParams, ManifestArgs};
use privynet_core::{Provenance, Topology};
use privynet_nn::audit::{self, Aligned, AuditInput};
use privynet_nn::audit_output::{OutputContext, write_outputs};
use privynet_nn::data::{self, Dataset};

// Keeps freed memory in the process: training steps reuse it instead of faulting in fresh pages.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Score a topology's privacy: how well an attacker, trained until it converges, rebuilds the
/// victims' images from their features (PSNR, SSIM, 95% intervals, per knowledge mode).
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
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
    privynet_core::logging::run_main(|| run(Args::parse()));
}

fn run(args: Args) -> Result<()> {
    let manifest = args.manifest.load()?;
    let mut p: AttackParams = manifest
        .as_ref()
        .map(|m| m.attack.clone())
        .unwrap_or_default();
    if let Some(e) = args.max_epochs {
        p.max_epochs = e;
    }
    p.validate()
        .map_err(|m| anyhow::anyhow!("invalid attack settings (manifest and flags): {m}"))?;
    let seed = privynet_core::manifest::seed_of(args.seed, manifest.as_ref());
    let classes = manifest.as_ref().map_or(10, |m| m.train.classes);
    let images_path = privynet_core::manifest::images_of(args.images.as_deref(), manifest.as_ref())
        .context("no images: pass --images or --manifest")?;
    let topo = Topology::read(&args.topology)
        .with_context(|| format!("reading {}", args.topology.display()))?;
    privynet_core::topology::check_features(&args.features, &topo)?;
    let selection: Vec<usize> = privynet_core::topology::read_selection(&args.selection)?
        .into_iter()
        .map(|c| c as usize)
        .collect();

    let images = data::load_images(&images_path, &["attacker", "test"], classes)
        .with_context(|| format!("loading {}", images_path.display()))?;
    let [_, ih, iw] = images.shape;
    if ih != iw {
        bail!(
            "{}: images are {ih}x{iw}; the attacker rebuilds square images only",
            images_path.display()
        );
    }
    let feats = data::load_features(&args.features, &["attacker", "test"], classes)?;
    let victims = aligned(
        &feats,
        &args.features,
        "test",
        &images,
        &images_path,
        p.victims,
    )?;
    let pool = aligned(
        &feats,
        &args.features,
        "attacker",
        &images,
        &images_path,
        p.pool,
    )?;
    let full_pool = full_pool(
        &args,
        &p,
        &topo,
        feats.shape,
        &images,
        &images_path,
        classes,
    )?;
    tracing::info!(
        pool = pool.len(),
        victims = victims.len(),
        features = format!("{:?}", feats.shape),
        "attacking {}",
        topo.label()
    );
    let input = AuditInput {
        params: &p,
        seed,
        cut_channels: topo.cut_channels as usize,
        feature_shape: feats.shape,
        image_size: ih,
        selection: &selection,
        pool: &pool,
        victims: &victims,
        full_pool: full_pool.as_deref(),
    };
    let result = audit::run(input, |mode, e| {
        tracing::info!(
            mode = mode.name(),
            epoch = e.epoch,
            loss = format!("{:.4}", e.train_loss),
            heldout_psnr = format!("{:.2}", e.heldout_psnr),
            lr = format!("{:.2e}", e.lr),
            "IRN epoch"
        );
    })?;
    for r in &result.modes {
        tracing::info!(
            mode = r.mode.name(),
            psnr = format!(
                "{:.2} [{:.2}, {:.2}]",
                r.mean_psnr(),
                r.psnr_interval.lo,
                r.psnr_interval.hi
            ),
            ssim = format!("{:.3}", r.mean_ssim()),
            floor_psnr = format!("{:.2}", result.floor_psnr),
            epochs = r.training.curve.len(),
            best_epoch = r.training.best_epoch,
            converged = r.training.converged,
            seconds = format!("{:.1}", r.seconds),
            "attack done"
        );
        if !r.training.converged {
            tracing::warn!(
                mode = r.mode.name(),
                "the attacker hit attack.max_epochs = {} before its held-out PSNR converged: this privacy loss may be understated",
                p.max_epochs
            );
        }
    }

    let mut prov = Provenance::new("attack", &args.manifest.label());
    for input in [&images_path, &args.features, &args.selection] {
        prov.add_input(input)?;
    }
    if let Some(f) = &args.full_features {
        prov.add_input(f)?;
    }
    let prov = prov.with_params(&serde_json::json!({ "attack": p, "seed": seed }));
    let ctx = OutputContext {
        label: &topo.label(),
        ids: &victims.ids,
        originals: &victims.y,
        size: ih,
        channels: feats.shape[0],
        max_epochs: p.max_epochs,
    };
    write_outputs(&args.output, &prov, &result, ctx)
        .with_context(|| format!("writing the audit to {}", args.output.display()))?;
    println!("{}", args.output.display());
    Ok(())
}

/// The rows of `split` of the features, with their images.
fn aligned(
    feats: &Dataset,
    feats_path: &Path,
    split: &str,
    images: &Dataset,
    images_path: &Path,
    limit: Option<usize>,
) -> Result<Aligned> {
    let flen = feats.shape.iter().product::<usize>();
    let ilen = images.shape.iter().product::<usize>();
    audit::align(
        feats.split(feats_path, split)?,
        flen,
        images.split(images_path, split)?,
        ilen,
        limit,
    )
    .map_err(|e| {
        anyhow::anyhow!(
            "{}: `{split}` rows against {}: {e}",
            feats_path.display(),
            images_path.display()
        )
    })
}

/// The attacker pool's all-channel features in the pretrained network's channel order, when a
/// mode without the selection needs them.
fn full_pool(
    args: &Args,
    p: &AttackParams,
    topo: &Topology,
    shape: [usize; 3],
    images: &Dataset,
    images_path: &Path,
    classes: usize,
) -> Result<Option<Vec<f32>>> {
    if p.modes.iter().all(|m| *m == AttackMode::KnownSelection) {
        return Ok(None);
    }
    let path = args.full_features.as_ref().context(
        "unknown-selection and matched-selection need --full-features (all channels at the cut)",
    )?;
    let full = data::load_features(path, &["attacker"], classes)?;
    let c = full.shape[0];
    if full.shape[1..] != shape[1..] || c != topo.cut_channels as usize {
        bail!(
            "{}: shape {:?} is not the cut's {} channels of {}x{}",
            path.display(),
            full.shape,
            topo.cut_channels,
            shape[1],
            shape[2]
        );
    }
    let fx = aligned(&full, path, "attacker", images, images_path, p.pool)?.x;
    // The attacker computes the cut's channels in the pretrained network's own order; the
    // all-channel features on disk hold them in their selection's order, so undo it.
    match &args.full_selection {
        Some(sp) => {
            let perm: Vec<usize> = privynet_core::topology::read_selection(sp)?
                .into_iter()
                .map(|v| v as usize)
                .collect();
            let hw = shape[1] * shape[2];
            audit::natural_order(&fx, c, hw, &perm)
                .map(Some)
                .map_err(|e| anyhow::anyhow!("{}: {e}", sp.display()))
        }
        None => Ok(Some(fx)),
    }
}
