//! The train and attack stages end to end: the samples per second their summaries record, on
//! real features of a small ingestion.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use privynet_core::ArtifactKind;

use crate::process::{bin, timed};

/// Training and attacker throughput (samples per second, forward and backward) on real
/// features: the cloud network at fire3 with 32 and all 128 channels, and the attacker's IRN
/// at conv1 and fire3 (all channels).
pub fn run(d: &Path, m: &str) -> Result<()> {
    let small = "dataset.splits={train: 4000, val: 500, attacker: 1000, test: 1000}";
    let sd = d.join("small");
    let sm = d.join("small.yaml");
    std::fs::write(
        &sm,
        std::fs::read_to_string(m)?.replace(
            &format!("out_dir: {}", d.display()),
            &format!("out_dir: {}", sd.display()),
        ),
    )?;
    let sms = sm.to_str().context("path")?;
    timed(Command::new(bin("privynet-ingest")?).args(["--manifest", sms, "--set", small]))?;
    cloud_throughput(sms, &sd)?;
    attack_throughput(sms, &sd)?;
    println!(
        "  (end to end: data loading, evaluation and checkpoints included; the step table above is the training step alone)"
    );
    Ok(())
}

/// Slices and extracts one topology of the small manifest `sms` into `sd/<cut>-<channels>`.
fn slice_and_extract(sms: &str, sd: &Path, cut: &str, channels: &str) -> Result<PathBuf> {
    let o = sd.join(format!("{cut}-{channels}"));
    let os = o.to_str().context("path")?.to_string();
    timed(Command::new(bin("privynet-slice")?).args([
        "--manifest",
        sms,
        "--cut",
        cut,
        "--channels",
        channels,
        "-o",
        &os,
    ]))?;
    timed(Command::new(bin("privynet-extract")?).args([
        "--manifest",
        sms,
        "--model",
        &format!("{os}/local.onnx"),
        "--topology",
        &format!("{os}/topology.arrow"),
        "-o",
        &format!("{os}/features.parquet"),
    ]))?;
    Ok(o)
}

/// The `samples_per_second` a train or attack summary recorded.
fn rate(file: &Path, kind: ArtifactKind) -> Result<f64> {
    let (_, b) = privynet_core::io::read_arrow(file, kind)?;
    let b = b.first().context("an empty summary")?;
    Ok(
        privynet_core::column::<arrow::array::Float64Array>(b, "samples_per_second", file)?
            .value(0),
    )
}

/// Cloud training at fire3 with 32 and all channels, two epochs each.
fn cloud_throughput(sms: &str, sd: &Path) -> Result<()> {
    println!(
        "\ncloud training throughput (default network, batch 128, Adam, burn flex on all cores):"
    );
    for dch in ["32", "all"] {
        let o = slice_and_extract(sms, sd, "fire3", dch)?;
        let os = o.to_str().context("path")?;
        timed(Command::new(bin("privynet-train")?).args([
            "--manifest",
            sms,
            "--features",
            &format!("{os}/features.parquet"),
            "--epochs",
            "2",
            "-o",
            &format!("{os}/train"),
        ]))?;
        let samples = rate(
            &o.join("train/train_summary.arrow"),
            ArtifactKind::TrainSummary,
        )?;
        println!("  fire3 D={dch:<4} {samples:>7.0} samples/s");
    }
    Ok(())
}

/// The attacker (known selection, 100 victims, two epochs) at conv1 and fire3, all channels.
fn attack_throughput(sms: &str, sd: &Path) -> Result<()> {
    println!("\nattacker IRN training throughput (known-selection, batch 64, Adam):");
    for cut in ["conv1", "fire3"] {
        let o = if cut == "fire3" {
            sd.join("fire3-all")
        } else {
            slice_and_extract(sms, sd, cut, "all")?
        };
        let os = o.to_str().context("path")?;
        timed(Command::new(bin("privynet-attack")?).args([
            "--manifest",
            sms,
            "--set",
            "attack.modes=[known-selection]",
            "--set",
            "attack.families=[irn]",
            "--set",
            "attack.victims=100",
            "--max-epochs",
            "2",
            "--features",
            &format!("{os}/features.parquet"),
            "--topology",
            &format!("{os}/topology.arrow"),
            "--selection",
            &format!("{os}/selection.arrow"),
            "-o",
            &format!("{os}/attack"),
        ]))?;
        let samples = rate(
            &o.join("attack/attack_summary.arrow"),
            ArtifactKind::AttackSummary,
        )?;
        println!("  {cut:<6} all channels {samples:>7.0} samples/s");
    }
    Ok(())
}
