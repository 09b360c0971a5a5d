//! The stage binaries' figures (`privynet-bench extract|nn|all`): the 60,000 CIFAR-10 images
//! ingested afresh into a temporary folder, timed, then the extract figure, the train and
//! attack figure, or both, on them.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::extract::{self, BATCH};
use crate::process::{bin, timed};
use crate::training;

/// Ingests, then measures extraction when `extract` and training and the attacker when `nn`.
pub fn run(root: &Path, extract: bool, nn: bool) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let data = root.join("data/cifar-10");
    let model = root.join("data/models/squeezenet1.1_fp16_opset7.onnx");
    if !data.exists() || !model.exists() {
        bail!("data missing: run `make data`");
    }
    let manifest = d.join("bench.yaml");
    std::fs::write(
        &manifest,
        format!(
            "name: bench\nout_dir: {}\ndataset: {{format: cifar10-binary, path: {}, splits: {{train: 45000, attacker: 5000, test: 10000}}}}\nmodel: {{path: {}, input_size: 32, preprocess: {{resize: bilinear, channel_order: bgr}}}}\nsweep: {{cuts: [conv1], channels: [all]}}\nextract: {{batch_size: {BATCH}}}\n",
            d.display(),
            data.display(),
            model.display()
        ),
    )?;
    let m = manifest.to_str().context("utf-8 path")?;
    let (ingest_s, ingest_mb) =
        timed(Command::new(bin("privynet-ingest")?).args(["--manifest", m]))?;
    println!("ingest: 60,000 CIFAR-10 images in {ingest_s:.1} s, peak RSS {ingest_mb:.0} MiB\n");
    let images = d.join("images.parquet");
    if extract {
        extract::run(d, m, &images)?;
    }
    if nn {
        training::run(d, m)?;
    }
    Ok(())
}
