//! The predict figure: `privynet-predict` on a finished run's deployed pair (`deploy/`) over
//! CIFAR-10's 10,000 test images, read from the batch files as a user would give them, against
//! ONNX Runtime's own throughput for the same two models on the same images already decoded
//! and preprocessed in memory (the ceiling: no reading, no writing, the two sessions alone).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use ndarray::{ArrayView4, Axis};

use privynet_core::ArtifactKind;
use privynet_core::card::Card;
use privynet_extract::preprocess::preprocess_into;
use privynet_extract::runtime::Runner;

use crate::process::{bin, timed};

/// Images per ONNX Runtime call: `privynet-predict`'s default batch.
const BATCH: usize = 256;

/// Prints the figure for the run folder `run_dir` (default: the default pipeline's).
pub fn run(root: &Path, run_dir: Option<&str>) -> Result<()> {
    let run = run_dir.map_or_else(|| root.join("runs/cifar10-squeezenet"), PathBuf::from);
    let deploy = run.join("deploy");
    let card = Card::load(&deploy).with_context(|| {
        format!(
            "no deployed pair in {}: run `make pipeline` first",
            deploy.display()
        )
    })?;
    let cifar = root.join("data/cifar-10");
    let (predict_s, images) = predict_seconds(&deploy, &cifar)?;
    let ceiling = ceiling(&deploy, &card, &cifar)?;
    let rate = images as f64 / predict_s;
    println!(
        "\nprivynet predict on {} ({}), CIFAR-10's {images} test images, 2 cores",
        deploy.display(),
        card.topology
    );
    println!("| | images/s | of the ceiling |");
    println!("|---|---|---|");
    println!(
        "| `privynet predict` (read, preprocess, both halves, write) | {rate:.0} | {:.2} |",
        rate / ceiling
    );
    println!("| ONNX Runtime alone: local.onnx then cloud.onnx in memory | {ceiling:.0} | 1.00 |");
    Ok(())
}

/// The faster of two runs of `privynet-predict` as a user runs it (the first also warms the
/// page cache and ONNX Runtime's library load); (seconds, images).
fn predict_seconds(deploy: &Path, cifar: &Path) -> Result<(f64, usize)> {
    let out = tempfile::tempdir()?;
    let predictions = out.path().join("predictions.parquet");
    let mut best = f64::MAX;
    for _ in 0..2 {
        let mut cmd = Command::new(bin("privynet-predict")?);
        cmd.arg("--deploy").arg(deploy).arg("--images").arg(cifar);
        cmd.args(["--split", "test", "-o"]).arg(&predictions);
        best = best.min(timed(&mut cmd)?.0);
    }
    let (_, reader) = privynet_core::io::open_parquet(
        &predictions,
        ArtifactKind::ImagePredictions,
        Some(&["id"]),
        4096,
    )?;
    let mut images = 0;
    for b in reader {
        images += b?.num_rows();
    }
    Ok((best, images))
}

/// Images per second of the two sessions alone on CIFAR-10's test images, preprocessed as the
/// card says and held in memory; the features go between them as the cloud receives them.
fn ceiling(deploy: &Path, card: &Card, cifar: &Path) -> Result<f64> {
    let data = privynet_ingest::cifar::read(cifar)?;
    let test = data.test_pool.context("CIFAR-10 has a test set")?;
    let size = card.local.input_size;
    let per = 3 * (size * size) as usize;
    let mut batches = Vec::new();
    for chunk in test.chunks(BATCH) {
        let mut buf = vec![0f32; chunk.len() * per];
        for (r, rec) in chunk.iter().enumerate() {
            let out = &mut buf[r * per..(r + 1) * per];
            preprocess_into(
                &rec.pixels,
                data.height,
                data.width,
                &card.local.preprocess,
                size,
                out,
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        batches.push(buf);
    }
    // Idle threads sleep: the two sessions take turns, and one's spinning threads would take
    // the cores from the other (measured: spinning made this 'ceiling' slower than predict).
    let local_path = deploy.join(&card.local.file);
    let mut local = Runner::open(&local_path, "features", None)?;
    let cloud_path = deploy.join(&card.cloud.file);
    let mut cloud = Runner::open(&cloud_path, &card.cloud.output, None)?;
    let s = size as usize;
    let mut pass = || -> Result<usize> {
        let mut n = 0;
        for x in &batches {
            let rows = x.len() / per;
            // Features typed float16 would be rounded on the way: left out, a copy's cost.
            let y = local.run(ArrayView4::from_shape((rows, 3, s, s), x)?)?;
            let logits = cloud.run_all(y.view())?;
            n += logits.values().next().map_or(0, |l| l.len_of(Axis(0)));
        }
        Ok(n)
    };
    pass()?; // warm-up
    let t = Instant::now();
    let n = pass()?;
    if n != test.len() {
        bail!("the cloud half classified {n} of {} images", test.len());
    }
    Ok(n as f64 / t.elapsed().as_secs_f64())
}
