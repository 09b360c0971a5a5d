//! `privynet-attack`: the user's privacy audit of one topology. Simulates the cloud-side
//! attacker: it trains an image reconstruction network on (feature, image) pairs from its own
//! pool (the `attacker` split) and rebuilds the victims' `test` images from their features,
//! under each enabled knowledge mode; reports PSNR and SSIM per image and per mode.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use arrow::array::{BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use clap::Parser;

use privynet_core::io::{write_artifact, write_bytes_atomic};
use privynet_core::manifest::{AttackMode, AttackParams, ManifestArgs};
use privynet_core::{ArtifactKind, Provenance, Topology};
use privynet_nn::attack::{take_channels, train_irn};
use privynet_nn::data::{self, Split};
use privynet_nn::{matching, metrics};

/// Score a topology's privacy: how well an attacker rebuilds images from its features.
#[derive(Debug, Parser)]
#[command(version, about)]
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
    /// IRN epochs (overrides `attack.epochs`).
    #[arg(long)]
    epochs: Option<usize>,
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

/// Rows of `split` reordered to follow `ids`, with the image rows of the same ids.
fn align(
    feat: &Split,
    flen: usize,
    images: &Split,
    ilen: usize,
    limit: Option<usize>,
) -> Result<(Vec<i64>, Vec<f32>, Vec<f32>)> {
    let pos: HashMap<i64, usize> = images
        .ids
        .iter()
        .enumerate()
        .map(|(i, id)| (*id, i))
        .collect();
    let n = limit.map_or(feat.len(), |l| l.min(feat.len()));
    let (mut ids, mut x, mut y) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n * flen),
        Vec::with_capacity(n * ilen),
    );
    for i in 0..n {
        let id = feat.ids[i];
        let j = *pos
            .get(&id)
            .with_context(|| format!("features row id {id} has no image in images.parquet"))?;
        ids.push(id);
        x.extend_from_slice(&feat.x[i * flen..(i + 1) * flen]);
        y.extend_from_slice(&images.x[j * ilen..(j + 1) * ilen]);
    }
    Ok((ids, x, y))
}

struct ModeResult {
    mode: AttackMode,
    recon: Vec<f32>,
    psnr: Vec<f64>,
    ssim: Vec<f64>,
    mse: Vec<f64>,
    matched: Option<i64>,
    samples_per_second: f64,
    seconds: f64,
}

/// An IRN already trained in this run: its training features and its reconstructions.
struct Trained {
    mode: AttackMode,
    train_x: Vec<f32>,
    recon: Vec<f32>,
    samples_per_second: f64,
}

fn run(args: Args) -> Result<()> {
    let manifest = args.manifest.load()?;
    let mut p: AttackParams = manifest
        .as_ref()
        .map(|m| m.attack.clone())
        .unwrap_or_default();
    if let Some(e) = args.epochs {
        p.epochs = e;
    }
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
    let ilen = 3 * ih * iw;
    let feats = data::load_features(&args.features, &["attacker", "test"], classes)?;
    let fshape = feats.shape;
    let flen = fshape.iter().product::<usize>();
    let hw = fshape[1] * fshape[2];
    let pool_imgs = images.split(&images_path, "attacker")?;
    let test_imgs = images.split(&images_path, "test")?;
    let (victim_ids, victim_x, victim_y) = align(
        feats.split(&args.features, "test")?,
        flen,
        test_imgs,
        ilen,
        p.victims,
    )?;
    let (_, pool_x, pool_y) = align(
        feats.split(&args.features, "attacker")?,
        flen,
        pool_imgs,
        ilen,
        p.pool,
    )?;
    let n_pool = pool_x.len() / flen;
    let n_vic = victim_ids.len();
    tracing::info!(
        pool = n_pool,
        victims = n_vic,
        features = format!("{fshape:?}"),
        "attacking {}",
        topo.label()
    );

    // The attacker's all-channel features of its own pool, for the modes without the selection.
    let needs_full = p.modes.iter().any(|m| *m != AttackMode::KnownSelection);
    let full = if needs_full {
        let path = args.full_features.clone().context(
            "unknown-selection and matched-selection need --full-features (all channels at the cut)",
        )?;
        let full = data::load_features(&path, &["attacker"], classes)?;
        let c = full.shape[0];
        if full.shape[1..] != fshape[1..] || c != topo.cut_channels as usize {
            bail!(
                "{}: shape {:?} is not the cut's {} channels of {}x{}",
                path.display(),
                full.shape,
                topo.cut_channels,
                fshape[1],
                fshape[2]
            );
        }
        let (_, fx, _) = align(
            full.split(&path, "attacker")?,
            c * hw,
            pool_imgs,
            ilen,
            p.pool,
        )?;
        // The attacker computes the cut's channels in the pretrained network's own order; the
        // all-channel features on disk hold them in their selection's order, so undo it.
        let fx = match &args.full_selection {
            Some(sp) => {
                let perm: Vec<usize> = privynet_core::topology::read_selection(sp)?
                    .into_iter()
                    .map(|v| v as usize)
                    .collect();
                let mut sorted = perm.clone();
                sorted.sort_unstable();
                if sorted != (0..c).collect::<Vec<_>>() {
                    bail!(
                        "{}: not a permutation of the cut's {c} channels",
                        sp.display()
                    );
                }
                let mut natural = vec![0f32; fx.len()];
                for s in 0..n_pool {
                    for (pos, &ch) in perm.iter().enumerate() {
                        let (src, dst) = (s * c * hw + pos * hw, s * c * hw + ch * hw);
                        natural[dst..dst + hw].copy_from_slice(&fx[src..src + hw]);
                    }
                }
                natural
            }
            None => fx,
        };
        Some((fx, c))
    } else {
        None
    };

    // The trivial floor: answer every victim with the attacker pool's mean image.
    let mut mean_img = vec![0f32; ilen];
    for row in pool_y.chunks_exact(ilen) {
        for (m, v) in mean_img.iter_mut().zip(row) {
            *m += v / n_pool as f32;
        }
    }
    let (mut floor_psnr, mut floor_ssim) = (0.0, 0.0);
    for row in victim_y.chunks_exact(ilen) {
        floor_psnr += metrics::psnr(row, &mean_img).min(100.0) / n_vic as f64;
        floor_ssim += metrics::ssim(row, &mean_img, 3, ih, iw) / n_vic as f64;
    }

    let mut results = Vec::new();
    let mut trained: Vec<Trained> = Vec::new();
    for &mode in &p.modes {
        let t = Instant::now();
        let d = fshape[0];
        let (train_x, matched) = match mode {
            AttackMode::KnownSelection => (pool_x.clone(), None),
            AttackMode::UnknownSelection => {
                let (fx, c) = full.as_ref().expect("loaded above");
                // The attacker's own guess of D channels: a random draw it cannot check.
                let guess: Vec<usize> =
                    privynet_slice_like_random(c.to_owned(), seed ^ 0x5eed_a77a)[..d].to_vec();
                (take_channels(fx, n_pool, *c, hw, &guess), None)
            }
            AttackMode::MatchedSelection => {
                let (fx, c) = full.as_ref().expect("loaded above");
                let pool_sig = matching::signatures(fx, n_pool, *c, hw);
                let recv_sig = matching::signatures(&victim_x, n_vic, d, hw);
                let m = matching::match_channels(&pool_sig, &recv_sig);
                let right = m.iter().zip(&selection).filter(|(a, b)| a == b).count() as i64;
                tracing::info!(
                    right,
                    of = d,
                    "matched received channels to pretrained channels"
                );
                (take_channels(fx, n_pool, *c, hw, &m), Some(right))
            }
        };
        // Training is deterministic in (pairs, seed), so a mode whose pairs are bit for bit those
        // of a mode already run (the matching attacker that found every channel in order) would
        // train the same network again: take that mode's reconstructions instead of an hour.
        let same = trained.iter().find(|t: &&Trained| t.train_x == train_x);
        let (recon, samples_per_second) = match same {
            Some(t) => {
                tracing::info!(
                    mode = mode.name(),
                    same_as = t.mode.name(),
                    "same training pairs as an earlier mode: its reconstructions stand for this one"
                );
                (t.recon.clone(), t.samples_per_second)
            }
            None => {
                let attacker = train_irn(&p, seed, &train_x, fshape, &pool_y, ih, |e, loss| {
                    tracing::info!(
                        mode = mode.name(),
                        epoch = e,
                        loss = format!("{loss:.4}"),
                        "IRN epoch"
                    );
                })?;
                let recon = attacker.reconstruct(&victim_x, 256);
                trained.push(Trained {
                    mode,
                    train_x,
                    recon: recon.clone(),
                    samples_per_second: attacker.samples_per_second,
                });
                (recon, attacker.samples_per_second)
            }
        };
        let (mut psnr, mut ssim, mut mse) = (Vec::new(), Vec::new(), Vec::new());
        for (a, b) in victim_y.chunks_exact(ilen).zip(recon.chunks_exact(ilen)) {
            psnr.push(metrics::psnr(a, b));
            ssim.push(metrics::ssim(a, b, 3, ih, iw));
            mse.push(metrics::mse(a, b));
        }
        let r = ModeResult {
            mode,
            recon,
            psnr,
            ssim,
            mse,
            matched,
            samples_per_second,
            seconds: t.elapsed().as_secs_f64(),
        };
        tracing::info!(
            mode = mode.name(),
            psnr = format!("{:.2}", mean_capped(&r.psnr)),
            ssim = format!("{:.3}", mean(&r.ssim)),
            floor_psnr = format!("{floor_psnr:.2}"),
            seconds = format!("{:.1}", r.seconds),
            "attack done"
        );
        results.push(r);
    }

    let mut prov = Provenance::new("attack", &args.manifest.label());
    for input in [&images_path, &args.features, &args.selection] {
        prov.add_input(input)?;
    }
    if let Some(f) = &args.full_features {
        prov.add_input(f)?;
    }
    let prov = prov.with_params(&serde_json::json!({ "attack": p, "seed": seed }));
    write_outputs(
        &args.output,
        &prov,
        &results,
        &victim_ids,
        &victim_y,
        ih,
        n_pool,
        fshape[0],
        floor_psnr,
        floor_ssim,
    )?;
    println!("{}", args.output.display());
    Ok(())
}

/// The same seeded permutation the slice stage's `random` method draws (ChaCha8, shuffle).
fn privynet_slice_like_random(c: usize, seed: u64) -> Vec<usize> {
    use rand::SeedableRng;
    use rand::seq::SliceRandom;
    let mut v: Vec<usize> = (0..c).collect();
    v.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
    v
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// Mean PSNR with each image capped at 100 dB, so a perfect reconstruction keeps it finite.
fn mean_capped(v: &[f64]) -> f64 {
    v.iter().map(|p| p.min(100.0)).sum::<f64>() / v.len().max(1) as f64
}

#[allow(clippy::too_many_arguments)]
fn write_outputs(
    out: &Path,
    prov: &Provenance,
    results: &[ModeResult],
    ids: &[i64],
    originals: &[f32],
    size: usize,
    n_pool: usize,
    d: usize,
    floor_psnr: f64,
    floor_ssim: f64,
) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let schema = Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("mode", DataType::Utf8, false),
        Field::new("psnr", DataType::Float64, false),
        Field::new("ssim", DataType::Float64, false),
        Field::new("mse", DataType::Float64, false),
    ]);
    let batches: Vec<RecordBatch> = results
        .iter()
        .map(|r| {
            RecordBatch::try_new(
                Arc::new(schema.clone()),
                vec![
                    Arc::new(Int64Array::from(ids.to_vec())),
                    Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
                        r.mode.name(),
                        ids.len(),
                    ))),
                    Arc::new(Float64Array::from(r.psnr.clone())),
                    Arc::new(Float64Array::from(r.ssim.clone())),
                    Arc::new(Float64Array::from(r.mse.clone())),
                ],
            )
        })
        .collect::<Result<_, _>>()?;
    write_artifact(
        &out.join("privacy.parquet"),
        ArtifactKind::Privacy,
        schema,
        prov,
        &batches,
    )?;

    let worst = results
        .iter()
        .map(|r| mean_capped(&r.psnr))
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(i, _)| i);
    let schema = Schema::new(vec![
        Field::new("mode", DataType::Utf8, false),
        Field::new("images", DataType::Int64, false),
        Field::new("mean_psnr", DataType::Float64, false),
        Field::new("mean_ssim", DataType::Float64, false),
        Field::new("mean_mse", DataType::Float64, false),
        Field::new("floor_psnr", DataType::Float64, false),
        Field::new("floor_ssim", DataType::Float64, false),
        Field::new("channels", DataType::Int64, false),
        Field::new("channels_matched", DataType::Int64, true),
        Field::new("train_samples", DataType::Int64, false),
        Field::new("samples_per_second", DataType::Float64, false),
        Field::new("seconds", DataType::Float64, false),
        Field::new("worst", DataType::Boolean, false),
    ]);
    let n = results.len();
    let batch = RecordBatch::try_new(
        Arc::new(schema.clone()),
        vec![
            Arc::new(StringArray::from_iter_values(
                results.iter().map(|r| r.mode.name()),
            )),
            Arc::new(Int64Array::from(vec![ids.len() as i64; n])),
            Arc::new(Float64Array::from_iter_values(
                results.iter().map(|r| mean_capped(&r.psnr)),
            )),
            Arc::new(Float64Array::from_iter_values(
                results.iter().map(|r| mean(&r.ssim)),
            )),
            Arc::new(Float64Array::from_iter_values(
                results.iter().map(|r| mean(&r.mse)),
            )),
            Arc::new(Float64Array::from(vec![floor_psnr; n])),
            Arc::new(Float64Array::from(vec![floor_ssim; n])),
            Arc::new(Int64Array::from(vec![d as i64; n])),
            Arc::new(Int64Array::from(
                results.iter().map(|r| r.matched).collect::<Vec<_>>(),
            )),
            Arc::new(Int64Array::from(vec![n_pool as i64; n])),
            Arc::new(Float64Array::from_iter_values(
                results.iter().map(|r| r.samples_per_second),
            )),
            Arc::new(Float64Array::from_iter_values(
                results.iter().map(|r| r.seconds),
            )),
            Arc::new(BooleanArray::from(
                (0..n).map(|i| Some(i) == worst).collect::<Vec<_>>(),
            )),
        ],
    )?;
    write_artifact(
        &out.join("attack_summary.arrow"),
        ArtifactKind::AttackSummary,
        schema,
        prov,
        &[batch],
    )?;

    // A grid: 8 originals on top, then one row of reconstructions per mode; each image 2x.
    let k = ids.len().min(8);
    let cell = size * 2 + 2;
    let (w, h) = ((k * cell) as u32, ((1 + results.len()) * cell) as u32);
    let mut img = image::RgbImage::from_pixel(w.max(1), h.max(1), image::Rgb([255, 255, 255]));
    let ilen = 3 * size * size;
    let mut put = |row: usize, col: usize, px: &[f32]| {
        for y in 0..size * 2 {
            for x in 0..size * 2 {
                let p = (y / 2) * size + x / 2;
                let rgb = [0, 1, 2]
                    .map(|c| (px[c * size * size + p].clamp(0.0, 1.0) * 255.0).round() as u8);
                img.put_pixel(
                    (col * cell + x) as u32,
                    (row * cell + y) as u32,
                    image::Rgb(rgb),
                );
            }
        }
    };
    for col in 0..k {
        put(0, col, &originals[col * ilen..(col + 1) * ilen]);
        for (r, res) in results.iter().enumerate() {
            put(r + 1, col, &res.recon[col * ilen..(col + 1) * ilen]);
        }
    }
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)?;
    write_bytes_atomic(&out.join("reconstructions.png"), &png)?;
    Ok(())
}
