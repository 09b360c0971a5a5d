//! `privynet-bench`: measures the extract stage against ONNX Runtime's own throughput on the
//! same batches (the ceiling), and the extract stage's peak memory for 10,000 and 60,000 images;
//! the training-step throughput of the cloud network and the attacker's IRN against the same
//! networks in PyTorch (`steps`); the train and attack stages end to end; and the optimisation
//! attack's settings on a finished run (`inversion`).
//! Prints tables; run it with `make bench` after `make build data`.

mod inversion;
mod steps;

// Keeps freed memory in the process instead of returning it to the OS and faulting it back in
// every training step (the `system-alloc` feature measures without it).
#[cfg(not(feature = "system-alloc"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use arrow::array::{Array, FixedSizeListArray, UInt8Array};
use ndarray::ArrayView4;

use privynet_core::ArtifactKind;
use privynet_core::manifest::{ChannelOrder, FeatureDtype, Preprocess, ResizeMode};
use privynet_extract::extract::{features_batch, features_schema, into_values};
use privynet_extract::preprocess::preprocess_into;
use privynet_extract::runtime::Runner;

const BATCH: usize = 128;

use privynet_e2e::root;

/// A stage binary, located as the end-to-end tests locate it (`PRIVYNET_BIN_DIR` honoured).
fn bin(name: &str) -> Result<PathBuf> {
    privynet_e2e::built(name).map_err(anyhow::Error::msg)
}

/// Runs a command, polling its peak RSS (VmHWM) from /proc; returns (seconds, peak MiB).
fn timed(cmd: &mut Command) -> Result<(f64, f64)> {
    let t = Instant::now();
    let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn()?;
    let status_path = format!("/proc/{}/status", child.id());
    let mut peak_kb = 0u64;
    let status = loop {
        if let Ok(s) = std::fs::read_to_string(&status_path)
            && let Some(line) = s.lines().find(|l| l.starts_with("VmHWM:"))
        {
            let kb: u64 = line
                .split_whitespace()
                .nth(1)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            peak_kb = peak_kb.max(kb);
        }
        if let Some(st) = child.try_wait()? {
            break st;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    if !status.success() {
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            use std::io::Read;
            let _ = e.read_to_string(&mut err);
        }
        bail!("{cmd:?} failed: {err}");
    }
    Ok((t.elapsed().as_secs_f64(), peak_kb as f64 / 1024.0))
}

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

fn main() -> Result<()> {
    // `privynet-bench [extract|nn|all|steps [FILTER]|variants]`: one part, or extract and nn
    // (the default). `steps` is nn's in-process table alone (FILTER: the networks whose name
    // contains it), `variants` the IRN variants behind the training-speed proposals,
    // `inversion [RUN_DIR]` the optimisation attack's settings on a finished run's topologies.
    let part = std::env::args().nth(1).unwrap_or_else(|| "all".into());
    match part.as_str() {
        "steps" => return steps::run(&root(), std::env::args().nth(2).as_deref()),
        "variants" => return steps::variants(&root()),
        "inversion" => return inversion::run(&root(), std::env::args().nth(2).as_deref()),
        "extract" | "nn" | "all" => {}
        _ => {
            bail!("unknown part `{part}`: expected extract, nn, all, steps, variants or inversion")
        }
    }
    if part != "extract" {
        steps::run(&root(), None)?;
    }
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let data = root().join("data/cifar-10");
    let model = root().join("data/models/squeezenet1.1_fp16_opset7.onnx");
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
    if part != "nn" {
        bench_extract(d, m, &images)?;
    }
    if part != "extract" {
        train_and_attack(d, m)?;
    }
    Ok(())
}

/// Extract throughput against the ceilings, and peak memory against the image count.
fn bench_extract(d: &Path, m: &str, images: &Path) -> Result<()> {
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

/// Training and attacker throughput (samples per second, forward and backward) on real
/// features: the cloud network at fire3 with 32 and all 128 channels, and the attacker's IRN
/// at conv1 and fire3 (all channels).
fn train_and_attack(d: &Path, m: &str) -> Result<()> {
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
