//! `privynet-bench inversion [RUN_DIR]`: how the optimisation attack's settings (steps, step
//! size, TV weight) trade its strength for time, on topologies of a finished default-pipeline
//! run (default `runs/cifar10-squeezenet`). Per topology the known-selection IRN is trained once
//! as the attack stage trains it; every setting then refines its reconstructions of the same
//! victims from the same two starts. PSNR and SSIM against the originals are what the attacker
//! cannot see; the feature error is what it optimises.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use burn::tensor::Device;

use privynet_core::Topology;
use privynet_core::manifest::{AttackFamily, AttackMode, Manifest, OptimizationParams};
use privynet_nn::audit::assess::{self, AuditInput};
use privynet_nn::audit::attack::Standardizer;
use privynet_nn::audit::invert::Inverter;
use privynet_nn::audit::local_net::{LocalNet, Preprocessing};
use privynet_nn::audit::run::{self as audit_run, AttackRun, AuditData};
use privynet_nn::metrics;

/// The topologies tuned on (one per depth), and the victims attacked at each.
const TOPOLOGIES: [&str; 3] = ["conv1-d16", "fire3-d16", "fire5-d16"];
const VICTIMS: usize = 200;

/// The settings compared: (steps, step size, TV weight).
const SETTINGS: [(usize, f64, f64); 7] = [
    (200, 0.02, 0.0),
    (200, 0.02, 0.01),
    (200, 0.02, 0.05),
    (200, 0.02, 0.2),
    (100, 0.02, 0.05),
    (400, 0.02, 0.05),
    (200, 0.05, 0.05),
];

pub fn run(root: &Path, run_dir: Option<&str>) -> Result<()> {
    let run_dir = root.join(run_dir.unwrap_or("runs/cifar10-squeezenet"));
    let manifest = Manifest::load(&root.join("pipelines/cifar10-squeezenet.yaml"), &[])
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!(
        "optimisation attack settings, known selection, {VICTIMS} victims, starts: IRN and mean image"
    );
    println!(
        "{:<10} {:>5} {:>5} {:>5} {:>8} {:>7} {:>9} {:>8}",
        "topology", "steps", "lr", "tv", "PSNR dB", "SSIM", "feat err", "seconds"
    );
    for topo in TOPOLOGIES {
        let dir = run_dir.join(topo);
        if !dir.join("local.onnx").exists() {
            println!(
                "{topo:<10} (not in {}: run `make pipeline`)",
                run_dir.display()
            );
            continue;
        }
        tune(&manifest, &run_dir, topo)?;
    }
    Ok(())
}

/// The topology's victims and attacker pool, and the known-selection IRN's reconstructions of
/// the victims, trained as the attack stage trains it.
fn irn_reconstructions(
    manifest: &Manifest,
    run_dir: &Path,
    topo: &str,
) -> Result<(AuditData, Vec<f32>)> {
    let dir = run_dir.join(topo);
    let mut params = manifest.attack.clone();
    params.modes = vec![AttackMode::KnownSelection];
    params.families = vec![AttackFamily::Irn];
    params.victims = Some(VICTIMS);
    let request = AttackRun {
        params: params.clone(),
        seed: manifest.seed,
        classes: manifest.train.classes,
        images: run_dir.join("images.parquet"),
        features: dir.join("features.parquet"),
        topology: dir.join("topology.arrow"),
        selection: dir.join("selection.arrow"),
        full_features: None,
        full_selection: None,
        local_network: None,
        preprocess: manifest.model.preprocess.clone(),
        manifest_label: "bench".into(),
        output: dir.join("unused"),
    };
    let topology = Topology::read(&request.topology).context("topology")?;
    let data = audit_run::load(&request, &topology)?;
    let mut irn = assess::run(
        AuditInput {
            params: &params,
            seed: request.seed,
            cut_channels: topology.cut_channels as usize,
            feature_shape: data.feature_shape,
            image_size: data.image_size,
            selection: &[],
            pool: &data.pool,
            victims: &data.victims,
            full_pool: None,
            local: None,
        },
        |_, _| {},
    )?;
    Ok((data, irn.attacks.swap_remove(0).recon))
}

fn tune(manifest: &Manifest, run_dir: &Path, topo: &str) -> Result<()> {
    let started = Instant::now();
    let (data, irn_recon) = irn_reconstructions(manifest, run_dir, topo)?;
    let dir = run_dir.join(topo);
    let device = Device::flex().autodiff();
    let net = LocalNet::load(&dir.join("local.onnx"), "features", &device)?;
    let preprocessing = Preprocessing::new(&manifest.model.preprocess);
    let [d, h, w] = data.feature_shape;
    let standardizer = Standardizer::fit(&data.pool.x, d, h * w);
    let size = data.image_size;
    let default = OptimizationParams::default();
    let base = Inverter {
        net: &net,
        preprocessing: &preprocessing,
        inv_std: standardizer.inv_std(),
        params: &default,
        device: &device,
        feature_shape: data.feature_shape,
        size,
    };
    let irn_error = base.feature_error(&irn_recon, &data.victims.x);
    row(
        topo,
        "IRN",
        &data.victims.y,
        &irn_recon,
        &irn_error,
        size,
        started.elapsed().as_secs_f64(),
    );
    for (iterations, lr, tv_weight) in SETTINGS {
        let p = OptimizationParams {
            iterations,
            lr,
            tv_weight,
            ..OptimizationParams::default()
        };
        let t = Instant::now();
        let inverter = Inverter {
            params: &p,
            ..base.clone()
        };
        let out = inverter.refine(&data.victims.x, &irn_recon, &data.pool.y, |_| {});
        row(
            topo,
            &format!("{iterations:>5} {lr:>5} {tv_weight:>5}"),
            &data.victims.y,
            &out.recon,
            &out.feature_error,
            size,
            t.elapsed().as_secs_f64(),
        );
    }
    Ok(())
}

fn row(
    topo: &str,
    setting: &str,
    originals: &[f32],
    recon: &[f32],
    error: &[f64],
    size: usize,
    seconds: f64,
) {
    let image_len = 3 * size * size;
    let (mut psnr, mut ssim) = (Vec::new(), Vec::new());
    for (a, b) in originals
        .chunks_exact(image_len)
        .zip(recon.chunks_exact(image_len))
    {
        psnr.push(metrics::psnr(a, b));
        ssim.push(metrics::ssim(a, b, 3, size, size));
    }
    println!(
        "{topo:<10} {setting:>17} {:>8.2} {:>7.3} {:>9.4} {seconds:>8.1}",
        metrics::mean_capped_psnr(&psnr),
        metrics::mean(&ssim),
        metrics::mean(error)
    );
}
