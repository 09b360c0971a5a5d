//! `privynet-defend`: makes a defended topology's features from its undefended base's on the
//! user's machine (Gaussian noise keyed by the run's secret, then per-channel integer codes
//! when quantised), to be written to the cloud zone. A thin shell over
//! `privynet_extract::defend`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use clap::Parser;

use privynet_core::ArtifactKind;
use privynet_core::defence::Defence;
use privynet_core::manifest::ManifestArgs;
use privynet_extract::defend::{DefendRequest, Fetched, defend};
use privynet_store::{Store, is_remote};

/// Defend a topology's features before they leave: Gaussian noise keyed by the run's secret,
/// then per-channel integer codes.
#[derive(Debug, Parser)]
#[command(name = "privynet-defend", version)]
struct Args {
    #[command(flatten)]
    manifest: ManifestArgs,
    /// The undefended base's features.parquet (a path or an object URL).
    #[arg(long)]
    features: PathBuf,
    /// The base's topology.arrow (undefended; the written topology adds the defence).
    #[arg(long)]
    topology: PathBuf,
    /// The noise secret (the run's secret.key: 32 bytes, local zone; a local path only).
    #[arg(long)]
    secret: PathBuf,
    /// Noise std as a fraction of each channel's std over the train split (0: none).
    #[arg(long)]
    noise: f64,
    /// Bits per value sent: 32 (float values), 8 or 4 (per-channel integer codes).
    #[arg(long)]
    bits: u8,
    /// The defended features file to write (a path or an object URL).
    #[arg(long, short)]
    output: PathBuf,
    /// Where to write the defended topology.arrow (a path or an object URL).
    #[arg(long, value_name = "PATH")]
    topology_output: Option<PathBuf>,
    /// Reuse the encoding of these defended features (same --noise and --bits) instead of
    /// fitting one: the final training's features get the characterized encoding.
    #[arg(long, value_name = "FEATURES")]
    encoding_from: Option<PathBuf>,
}

fn main() {
    privynet_core::logging::run_main(|| run(Args::parse()));
}

fn run(args: Args) -> Result<()> {
    // Nothing of the manifest is needed; loading it checks it and names it in provenance.
    args.manifest.load()?;
    let defence = Defence::new(args.noise, args.bits)
        .map_err(|m| anyhow!("--noise {} --bits {}: {m}", args.noise, args.bits))?;
    if is_remote(&args.secret) {
        bail!(
            "--secret {}: the noise secret is a local-zone file and never leaves this machine; give a local path",
            args.secret.display()
        );
    }
    let store = Store::from_env();
    let fetch = |p: &Path| -> Result<Fetched> {
        let local = store
            .fetch(p)
            .with_context(|| format!("fetching {}", p.display()))?;
        Ok(Fetched {
            local,
            given: p.to_path_buf(),
        })
    };
    let features = fetch(&args.features)?;
    let topology = fetch(&args.topology)?;
    let encoding_from = args.encoding_from.as_deref().map(fetch).transpose()?;
    let output = store.output_table(&args.output, ArtifactKind::Features)?;
    let topology_output = args
        .topology_output
        .as_deref()
        .map(|p| store.output_table(p, ArtifactKind::Topology))
        .transpose()?;
    let request = DefendRequest {
        features,
        topology,
        secret: args.secret,
        defence,
        encoding_from,
        output: output.path(),
        topology_output: topology_output.as_ref().map(|o| o.path()),
    };
    defend(&request, &args.manifest.label())
        .with_context(|| format!("defending {}", args.features.display()))?;
    output.publish()?;
    if let Some(t) = topology_output {
        t.publish()?;
    }
    println!("{}", args.output.display());
    Ok(())
}
