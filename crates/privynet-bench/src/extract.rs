//! The extract figure: the stage's throughput against what ONNX Runtime, the features writer
//! and the reader each do alone on the same batches (the ceilings), and its peak memory against
//! the image count.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result};
use arrow::array::{Array, FixedSizeListArray, UInt8Array};
use ndarray::ArrayView4;

use privynet_core::ArtifactKind;
use privynet_core::manifest::{ChannelOrder, FeatureDtype, Preprocess, ResizeMode};
use privynet_extract::extract::{features_batch, features_schema, into_values};
use privynet_extract::preprocess::preprocess_into;
use privynet_extract::runtime::Runner;

use crate::process::{bin, timed};

/// Images per ONNX Runtime call, in the ceiling and in the bench manifest.
pub const BATCH: usize = 128;

/// The bench model's preprocessing, as the bench manifest sets it: bilinear, BGR, raw 0-255.
fn preprocess() -> Preprocess {
    Preprocess {
        resize: ResizeMode::Bilinear,
        channel_order: ChannelOrder::Bgr,
        scale: 1.0,
        mean: [0.0; 3],
        std: [1.0; 3],
    }
}

/// Images per second of each part of extraction run alone on the same 10,000 images.
struct Rates {
    /// ONNX Runtime alone on preprocessed batches in memory, all cores: the ceiling.
    ort: f64,
    /// The features writer alone (all cores) on those batches' outputs, already in memory.
    writer: f64,
    /// Decoding and preprocessing alone (one thread).
    reader: f64,
}

impl Rates {
    /// The most a pipeline can do when all three share the machine's P cores: their CPU
    /// seconds per image add up (P / ort, P / writer, 1 / reader: the first two keep every
    /// core busy when alone, the reader one).
    fn shared(&self) -> f64 {
        let p = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get) as f64;
        p / (p / self.ort + p / self.writer + 1.0 / self.reader)
    }
}

/// Measures [`Rates`] for one local network.
fn ceiling(model: &Path, images: &Path, size: u32, n: usize) -> Result<Rates> {
    let t = Instant::now();
    let batches =
        privynet_core::io::open_parquet(images, ArtifactKind::Images, Some(&["pixels"]), BATCH)?.1;
    let per = 3 * (size * size) as usize;
    let mut inputs: Vec<Vec<f32>> = Vec::new();
    let mut count = 0;
    for b in batches {
        let b = b?;
        let px = b
            .column(0)
            .as_any()
            .downcast_ref::<FixedSizeListArray>()
            .context("pixels")?;
        let mut buf = vec![0f32; b.num_rows() * per];
        for r in 0..b.num_rows() {
            let v = px.value(r);
            let v = v.as_any().downcast_ref::<UInt8Array>().context("u8")?;
            preprocess_into(
                v.values(),
                32,
                32,
                &preprocess(),
                size,
                &mut buf[r * per..(r + 1) * per],
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        count += b.num_rows();
        inputs.push(buf);
        if count >= n {
            break;
        }
    }
    // The reader alone: decoding and preprocessing, one thread as in the pipeline.
    let reader = count as f64 / t.elapsed().as_secs_f64();
    // ONNX Runtime's own defaults (idle threads spin): its best on an otherwise idle machine.
    let mut runner = Runner::open_with_spinning(model, "features", None, true)?;
    let s = size as usize;
    // One warm-up batch, as the pipeline's first batch pays the same start-up.
    runner.run(ArrayView4::from_shape(
        (inputs[0].len() / per, 3, s, s),
        &inputs[0],
    )?)?;
    let t = Instant::now();
    for x in &inputs {
        runner.run(ArrayView4::from_shape((x.len() / per, 3, s, s), x)?)?;
    }
    let ort = count as f64 / t.elapsed().as_secs_f64();

    // The writer alone: the same batches' real features, already in memory, through the
    // artifact writer to a features file. No pipeline can outrun its slower half.
    let mut outputs = Vec::new();
    for x in &inputs {
        outputs.push(runner.run(ArrayView4::from_shape((x.len() / per, 3, s, s), x)?)?);
    }
    let shape = &outputs[0].shape()[1..];
    let len: usize = shape.iter().product();
    let mut prov = privynet_core::Provenance::new("bench", "-");
    prov.set(
        "feature_shape",
        format!("{},{},{}", shape[0], shape[1], shape[2]),
    );
    prov.set("topology", "null");
    prov.set("preprocess", "{}");
    let out = model.with_file_name("writer-alone.parquet");
    let t = Instant::now();
    let mut w = privynet_core::io::ArtifactWriter::create(
        &out,
        ArtifactKind::Features,
        features_schema(len, FeatureDtype::Float32),
        &prov,
    )?;
    let mut id = 0i64;
    for y in outputs {
        let n = y.shape()[0];
        let batch = features_batch(
            w.schema(),
            (id..id + n as i64).collect(),
            vec![0; n],
            vec!["test".to_string(); n],
            into_values(y),
            len,
            FeatureDtype::Float32,
        );
        id += n as i64;
        w.write(&batch)?;
    }
    w.finish()?;
    let writer = count as f64 / t.elapsed().as_secs_f64();
    std::fs::remove_file(&out)?;
    Ok(Rates {
        ort,
        writer,
        reader,
    })
}

/// Extract throughput against the ceilings, and peak memory against the image count.
pub fn run(d: &Path, m: &str, images: &Path) -> Result<()> {
    println!("extract throughput on the 10,000 test images (batch {BATCH}, all cores):");
    println!(
        "img/s of each part alone (ort: the issue's ceiling, all cores; writer: the features\n\
         writer on ort's outputs in memory, all cores; reader: decode and preprocess, one\n\
         thread), the most they allow together on shared cores, and the pipeline:"
    );
    println!(
        "{:<5} {:>5} {:>9} {:>9} {:>9} {:>9} {:>9} {:>6} {:>8} {:>8}",
        "cut",
        "input",
        "ort",
        "writer",
        "reader",
        "shared",
        "pipeline",
        "/ort",
        "/shared",
        "peak MiB"
    );
    for cut in ["conv1", "fire3", "fire5"] {
        for size in [32u32, 64] {
            let out = d.join(format!("{cut}-{size}"));
            let set = format!("model.input_size={size}");
            timed(Command::new(bin("privynet-slice")?).args([
                "--manifest",
                m,
                "--set",
                &set,
                "--cut",
                cut,
                "--channels",
                "all",
                "-o",
                out.to_str().context("path")?,
            ]))?;
            let local = out.join("local.onnx");
            let r = ceiling(&local, images, size, 10_000)?;
            let f = out.join("features.parquet");
            let (secs, mb) = timed(Command::new(bin("privynet-extract")?).args([
                "--manifest",
                m,
                "--set",
                &set,
                "--splits",
                "test",
                "--model",
                local.to_str().context("path")?,
                "-o",
                f.to_str().context("path")?,
            ]))?;
            let rate = 10_000.0 / secs;
            println!(
                "{cut:<5} {size:>5} {:>9.0} {:>9.0} {:>9.0} {:>9.0} {rate:>9.0} {:>5.0}% {:>7.0}% {mb:>8.0}",
                r.ort,
                r.writer,
                r.reader,
                r.shared(),
                100.0 * rate / r.ort,
                100.0 * rate / r.shared()
            );
            std::fs::remove_file(&f)?;
        }
    }
    println!("\nextract peak memory against image count (fire3, input 32):");
    let out = d.join("fire3-32");
    for (splits, n) in [("test", 10_000), ("train,attacker,test", 60_000)] {
        let f = out.join("features.parquet");
        let (secs, mb) = timed(Command::new(bin("privynet-extract")?).args([
            "--manifest",
            m,
            "--splits",
            splits,
            "--model",
            out.join("local.onnx").to_str().context("path")?,
            "-o",
            f.to_str().context("path")?,
        ]))?;
        println!(
            "  {n:>6} images: {secs:>6.1} s, peak RSS {mb:>5.0} MiB, {:.0} MiB on disk",
            std::fs::metadata(&f)?.len() as f64 / 1048576.0
        );
        std::fs::remove_file(&f)?;
    }

    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_cores_add_up_the_parts_cpu_seconds() {
        let p = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get) as f64;
        let r = Rates {
            ort: 100.0,
            writer: 100.0,
            reader: 100.0,
        };
        // ort and writer each take all P cores for 1/100 s an image, the reader one core.
        let want = p / (2.0 * p / 100.0 + 1.0 / 100.0);
        assert!((r.shared() - want).abs() < 1e-9, "{}", r.shared());
        assert!(r.shared() < r.ort);
    }
}
