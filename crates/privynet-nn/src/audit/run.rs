//! The attack stage as a library: loads a topology's features, its selection and the images,
//! pairs the rows of the attacker's pool and of the victims with their images, runs the audit
//! ([`super::assess::run_with_defence`], the attacker knowing the features' defence), computes
//! the Fisher-information bound of a topology with noise ([`super::dfil`]) and writes its files
//! ([`super::output`]). The `privynet-attack` binary resolves its flags against the manifest
//! and calls [`run`].

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::tensor::Device;
use privynet_core::defence::{Encoding, METADATA_KEY};
use privynet_core::manifest::{AttackFamily, AttackMode, AttackParams, Preprocess};
use privynet_core::{Provenance, Topology};

use super::assess::{self, Aligned, Audit, AuditInput, KnownDefence, LocalAttack};
use super::dfil::{self, Bound, BoundSpec, Probe};
use super::local_net::{LocalNet, Preprocessing};
use super::output::{OutputContext, write_outputs};
use crate::NnError;
use crate::data::{self, Dataset};

/// An audit of one topology, its settings already resolved against the manifest and the flags.
#[derive(Debug, Clone)]
pub struct AttackRun {
    pub params: AttackParams,
    pub seed: u64,
    /// Classes of the task (the labels the files are checked against).
    pub classes: usize,
    /// images.parquet (LOCAL): the attacker's pool and the victims' originals.
    pub images: PathBuf,
    /// The topology's features.parquet, topology.arrow and selection.arrow.
    pub features: PathBuf,
    pub topology: PathBuf,
    pub selection: PathBuf,
    /// All-channel features at the same cut, and the selection.arrow that orders them, for the
    /// attackers that do not know the selection.
    pub full_features: Option<PathBuf>,
    pub full_selection: Option<PathBuf>,
    /// The topology's local.onnx (LOCAL) and the model's preprocessing, for the optimisation
    /// family and the feature errors of every reconstruction.
    pub local_network: Option<PathBuf>,
    pub preprocess: Preprocess,
    /// The manifest's name for provenance (`-` without one).
    pub manifest_label: String,
    /// Output folder: privacy.parquet, attack_summary.arrow, attack_metrics.arrow,
    /// reconstructions.png.
    pub output: PathBuf,
}

/// Runs the attack stage (see the module doc).
pub fn run(run: &AttackRun) -> Result<(), NnError> {
    let params = &run.params;
    let topo = Topology::read(&run.topology).map_err(NnError::context(format!(
        "reading {}",
        run.topology.display()
    )))?;
    privynet_core::topology::check_features(&run.features, &topo)?;
    let selection: Vec<usize> = privynet_core::topology::read_selection(&run.selection)?
        .into_iter()
        .map(|c| c as usize)
        .collect();

    let data = load(run, &topo)?;
    let encoding = encoding_of(&run.features, data.feature_shape[0])?;
    tracing::info!(
        pool = data.pool.len(),
        victims = data.victims.len(),
        features = format!("{:?}", data.feature_shape),
        "attacking {}",
        topo.label()
    );
    let device = Device::flex().autodiff();
    let local = local_network(run, &device)?;
    if let (Some(net), Some(path)) = (&local, &run.local_network) {
        check_local_shape(net, path, &data, &device)?;
    }
    let preprocessing = Preprocessing::new(&run.preprocess);
    let input = AuditInput {
        local: local.as_ref().map(|net| LocalAttack {
            net,
            preprocessing: &preprocessing,
            device: &device,
        }),
        params,
        seed: run.seed,
        cut_channels: topo.cut_channels as usize,
        feature_shape: data.feature_shape,
        image_size: data.image_size,
        selection: &selection,
        pool: &data.pool,
        victims: &data.victims,
        full_pool: data.full_pool.as_deref(),
    };
    let label = topo.label();
    let defence = encoding.as_ref().map(|encoding| KnownDefence {
        encoding,
        key: assess::attacker_key(run.seed),
        label: &label,
    });
    let result = assess::run_with_defence(input, defence, |mode, e| {
        tracing::info!(
            mode = mode.name(),
            epoch = e.epoch,
            loss = format!("{:.4}", e.train_loss),
            heldout_psnr = format!("{:.2}", e.heldout_psnr),
            lr = format!("{:.2e}", e.lr),
            "IRN epoch"
        );
    })?;
    log_results(&result, params.max_epochs);
    let bound = fisher_bound(run, encoding.as_ref(), input.local, &data)?;

    let prov = provenance(run)?;
    let ctx = OutputContext {
        label: &label,
        ids: &data.victims.ids,
        originals: &data.victims.y,
        size: data.image_size,
        channels: data.feature_shape[0],
        max_epochs: params.max_epochs,
        bound,
    };
    write_outputs(&run.output, &prov, &result, ctx).map_err(NnError::context(format!(
        "writing the audit to {}",
        run.output.display()
    )))
}

/// The defence of a features file (its `privynet.defence` metadata), checked against the
/// features' channels: `None` for undefended features.
pub fn encoding_of(path: &Path, channels: usize) -> Result<Option<Encoding>, NnError> {
    let parts = privynet_core::io::dataset_parts(path)?;
    let schema = privynet_core::io::read_schema(&parts[0])?;
    let bad = |message: String| NnError::Data {
        path: path.to_path_buf(),
        message,
    };
    let Some(e) = Encoding::from_metadata(schema.metadata().get(METADATA_KEY)).map_err(bad)? else {
        return Ok(None);
    };
    let q = e.defence.quantised();
    let lens = [
        ("sigma", e.sigma.len(), e.defence.noise > 0.0),
        ("scale", e.scale.len(), q),
        ("offset", e.offset.len(), q),
    ];
    for (what, len, needed) in lens {
        if needed && len != channels {
            return Err(bad(format!(
                "`{METADATA_KEY}` holds {len} {what} values for features of {channels} channels"
            )));
        }
    }
    Ok(Some(e))
}

/// The Fisher-information bound of a topology with noise, over all the victims; `None` without
/// noise, or (said so) without the local network to differentiate.
fn fisher_bound(
    run: &AttackRun,
    encoding: Option<&Encoding>,
    local: Option<LocalAttack<'_>>,
    data: &AuditData,
) -> Result<Option<Bound>, NnError> {
    let Some(e) = encoding.filter(|e| e.defence.noise > 0.0) else {
        return Ok(None);
    };
    let Some(local) = local else {
        tracing::warn!("no --local-network: no Fisher-information bound for this noisy topology");
        return Ok(None);
    };
    let started = Instant::now();
    let probe = Probe {
        net: local.net,
        preprocessing: local.preprocessing,
        device: local.device,
        size: data.image_size,
        batch: run.params.optimization.batch_size,
    };
    let spec = BoundSpec {
        sigma: &e.sigma,
        projections: dfil::PROJECTIONS,
        seed: run.seed,
        bootstrap: run.params.bootstrap,
    };
    let b = dfil::psnr_bound(probe, &data.victims.y, spec)?;
    tracing::info!(
        psnr_bound = format!("{:.2} [{:.2}, {:.2}]", b.mean, b.lo, b.hi),
        dfil = format!("{:.4e}", b.dfil),
        images = b.images,
        projections = b.projections,
        seconds = format!("{:.1}", started.elapsed().as_secs_f64()),
        "Fisher-information bound: the PSNR no unbiased attacker exceeds on average (one with a learned prior may)"
    );
    Ok(Some(b))
}

/// The topology's local network in burn, when the run has one; a run whose families include
/// the optimisation attack must.
fn local_network(run: &AttackRun, device: &Device) -> Result<Option<LocalNet>, NnError> {
    let Some(path) = &run.local_network else {
        return Ok(None);
    };
    let net = LocalNet::load(path, privynet_slice::surgery::OUTPUT, device)?;
    tracing::info!(path = %path.display(), "local network built in burn");
    Ok(Some(net))
}

/// The burn network must turn an image of the stored size into features of the stored shape;
/// it does not model a resize in preprocessing, which would break this.
fn check_local_shape(
    net: &LocalNet,
    path: &Path,
    data: &AuditData,
    device: &Device,
) -> Result<(), NnError> {
    let s = data.image_size;
    let probe = burn::tensor::Tensor::<4>::zeros([1, 3, s, s], device);
    let [_, d, h, w] = net.forward(probe).dims();
    if [d, h, w] != data.feature_shape {
        return Err(NnError::Input(format!(
            "{}: on a {s}x{s} image it gives features of shape {:?}, the stored features are {:?}; \
             the optimisation attack needs images stored at the model's input size",
            path.display(),
            [d, h, w],
            data.feature_shape
        )));
    }
    Ok(())
}

/// What the audit works on: the victims' and the attacker pool's feature rows, each with its
/// image, and the pool's all-channel features when a mode needs them.
#[derive(Debug, Clone)]
pub struct AuditData {
    pub feature_shape: [usize; 3],
    pub image_size: usize,
    pub victims: Aligned,
    pub pool: Aligned,
    pub full_pool: Option<Vec<f32>>,
}

/// Loads the images and features of the `attacker` and `test` splits and pairs their rows.
pub fn load(run: &AttackRun, topo: &Topology) -> Result<AuditData, NnError> {
    let params = &run.params;
    let images = data::load_images(&run.images, &["attacker", "test"], run.classes).map_err(
        NnError::context(format!("loading {}", run.images.display())),
    )?;
    let [_, image_height, image_width] = images.shape;
    if image_height != image_width {
        return Err(NnError::Input(format!(
            "{}: images are {image_height}x{image_width}; the attacker rebuilds square images only",
            run.images.display()
        )));
    }
    let feats = data::load_features(&run.features, &["attacker", "test"], run.classes)?;
    let victims = aligned(
        &feats,
        &run.features,
        "test",
        &images,
        &run.images,
        ("attack.victims", params.victims),
    )?;
    let pool = aligned(
        &feats,
        &run.features,
        "attacker",
        &images,
        &run.images,
        ("attack.pool", params.pool),
    )?;
    let full_pool = full_pool(run, topo, feats.shape, &images)?;
    Ok(AuditData {
        feature_shape: feats.shape,
        image_size: image_height,
        victims,
        pool,
        full_pool,
    })
}

/// Logs each mode's scores, and warns where the attacker stopped before it converged.
fn log_results(result: &Audit, max_epochs: usize) {
    for r in &result.attacks {
        tracing::info!(
            mode = r.mode.name(),
            family = r.family.name(),
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
            feature_error = r
                .feature_error
                .as_deref()
                .map_or("-".into(), |e| format!("{:.4}", crate::metrics::mean(e))),
            converged = r.training.converged,
            seconds = format!("{:.1}", r.seconds),
            "attack done"
        );
        if !r.training.converged && r.family == AttackFamily::Irn {
            tracing::warn!(
                mode = r.mode.name(),
                "the attacker hit attack.max_epochs = {} before its held-out PSNR converged: this privacy loss may be understated",
                max_epochs
            );
        }
    }
}

/// The audit's provenance: its settings and the digests of every file it read.
fn provenance(run: &AttackRun) -> Result<Provenance, NnError> {
    let mut prov = Provenance::new("attack", &run.manifest_label);
    for input in [&run.images, &run.features, &run.selection] {
        prov.add_input(input)?;
    }
    for f in [&run.full_features, &run.local_network]
        .into_iter()
        .flatten()
    {
        prov.add_input(f)?;
    }
    Ok(prov.with_params(&serde_json::json!({ "attack": run.params, "seed": run.seed })))
}

/// The rows of `split` of the features, with their images, at most the `(setting, limit)` the
/// manifest asks for. A limit the split cannot honour is refused: the threat model the user
/// declared (an attacker with that many images, that many victims) would silently not be the
/// one measured.
fn aligned(
    feats: &Dataset,
    feats_path: &Path,
    split: &str,
    images: &Dataset,
    images_path: &Path,
    (setting, limit): (&str, Option<usize>),
) -> Result<Aligned, NnError> {
    let feature_len = feats.shape.iter().product::<usize>();
    let image_len = images.shape.iter().product::<usize>();
    let rows = feats.split(feats_path, split)?;
    if let Some(asked) = limit.filter(|&l| l > rows.len()) {
        return Err(NnError::Input(format!(
            "`{setting}` = {asked}, but the `{split}` split of {} holds {} rows: the attack the manifest declares cannot be measured on this data. Lower {setting} or ingest a larger `{split}` split (dataset.splits.{split})",
            feats_path.display(),
            rows.len()
        )));
    }
    assess::align(
        rows,
        feature_len,
        images.split(images_path, split)?,
        image_len,
        limit,
    )
    .map_err(|e| {
        NnError::Input(format!(
            "{}: `{split}` rows against {}: {e}",
            feats_path.display(),
            images_path.display()
        ))
    })
}

/// The attacker pool's all-channel features in the pretrained network's channel order, when a
/// mode without the selection needs them.
fn full_pool(
    run: &AttackRun,
    topo: &Topology,
    shape: [usize; 3],
    images: &Dataset,
) -> Result<Option<Vec<f32>>, NnError> {
    if run
        .params
        .modes
        .iter()
        .all(|m| *m == AttackMode::KnownSelection)
    {
        return Ok(None);
    }
    let path = run.full_features.as_ref().ok_or_else(|| {
        NnError::Input(
            "unknown-selection and matched-selection need --full-features (all channels at the cut)"
                .into(),
        )
    })?;
    let full = data::load_features(path, &["attacker"], run.classes)?;
    let channels = full.shape[0];
    if full.shape[1..] != shape[1..] || channels != topo.cut_channels as usize {
        return Err(NnError::Input(format!(
            "{}: shape {:?} is not the cut's {} channels of {}x{}",
            path.display(),
            full.shape,
            topo.cut_channels,
            shape[1],
            shape[2]
        )));
    }
    let full_x = aligned(
        &full,
        path,
        "attacker",
        images,
        &run.images,
        ("attack.pool", run.params.pool),
    )?
    .x;
    // The attacker computes the cut's channels in the pretrained network's own order; the
    // all-channel features on disk hold them in their selection's order, so undo it.
    let Some(selection_path) = &run.full_selection else {
        return Ok(Some(full_x));
    };
    let perm: Vec<usize> = privynet_core::topology::read_selection(selection_path)?
        .into_iter()
        .map(|v| v as usize)
        .collect();
    let hw = shape[1] * shape[2];
    assess::natural_order(&full_x, channels, hw, &perm)
        .map(Some)
        .map_err(|e| NnError::Input(format!("{}: {e}", selection_path.display())))
}
