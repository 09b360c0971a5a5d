//! `privynet-characterize`: gathers every evaluated topology's local cost, test accuracy and
//! privacy loss (per attacker mode and in the worst case) into characterization.parquet, the
//! table the optimizer chooses from.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use arrow::array::{
    Array, ArrayRef, BooleanArray, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray,
};
use arrow::datatypes::{DataType, Field, Schema};
use clap::Parser;

use privynet_core::io::{read_arrow, write_artifact};
use privynet_core::manifest::ManifestArgs;
use privynet_core::{ArtifactKind, Provenance, Topology};

/// Gather the per-topology results of a run into characterization.parquet.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    #[command(flatten)]
    manifest: ManifestArgs,
    /// The run's output folder (holding one folder per topology).
    #[arg(long)]
    run_dir: PathBuf,
    /// Topology folders to gather, comma-separated (e.g. conv1-d8,fire3-d8).
    #[arg(long, value_delimiter = ',', required = true)]
    topologies: Vec<String>,
    /// Output file.
    #[arg(long, short)]
    output: PathBuf,
}

fn main() {
    privynet_core::logging::run_main(|| run(Args::parse()));
}

#[derive(Debug, Default, Clone)]
struct Row {
    label: String,
    topo: Option<Topology>,
    acc: f64,
    best: f64,
    train_s: f64,
    modes: Vec<(String, f64, f64, Option<i64>, bool)>,
    floor: (f64, f64),
    attack_s: f64,
}

fn col<'a, T: 'static>(b: &'a RecordBatch, name: &str) -> Result<&'a T> {
    b.column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .with_context(|| format!("no column `{name}`"))
}

fn run(args: Args) -> Result<()> {
    let mut prov = Provenance::new("characterize", &args.manifest.label());
    let mut rows = Vec::new();
    for label in &args.topologies {
        let dir = args.run_dir.join(label);
        let mut r = Row {
            label: label.clone(),
            ..Row::default()
        };
        let tp = dir.join("topology.arrow");
        r.topo = Some(Topology::read(&tp).with_context(|| format!("reading {}", tp.display()))?);
        let ts = dir.join("train/train_summary.arrow");
        let (_, b) = read_arrow(&ts, ArtifactKind::TrainSummary)
            .with_context(|| format!("reading {}", ts.display()))?;
        let b = b.first().context("empty train summary")?;
        r.acc = col::<Float64Array>(b, "final_test_accuracy")?.value(0);
        r.best = col::<Float64Array>(b, "best_test_accuracy")?.value(0);
        r.train_s = col::<Float64Array>(b, "seconds")?.value(0);
        let asum = dir.join("attack/attack_summary.arrow");
        let (_, bs) = read_arrow(&asum, ArtifactKind::AttackSummary)
            .with_context(|| format!("reading {}", asum.display()))?;
        for b in &bs {
            let mode = col::<StringArray>(b, "mode")?;
            let psnr = col::<Float64Array>(b, "mean_psnr")?;
            let ssim = col::<Float64Array>(b, "mean_ssim")?;
            let matched = col::<Int64Array>(b, "channels_matched")?;
            let worst = col::<BooleanArray>(b, "worst")?;
            for i in 0..b.num_rows() {
                r.modes.push((
                    mode.value(i).to_string(),
                    psnr.value(i),
                    ssim.value(i),
                    matched.is_valid(i).then(|| matched.value(i)),
                    worst.value(i),
                ));
                r.floor = (
                    col::<Float64Array>(b, "floor_psnr")?.value(i),
                    col::<Float64Array>(b, "floor_ssim")?.value(i),
                );
                r.attack_s += col::<Float64Array>(b, "seconds")?.value(i);
            }
        }
        if r.modes.is_empty() {
            bail!("{}: no attacker mode was run", asum.display());
        }
        for p in [&tp, &ts, &asum] {
            prov.add_input(p)?;
        }
        rows.push(r);
    }
    // Depth: the cut's position among this table's cuts, deepest last (by cumulative MACs,
    // which grow along the graph).
    let mut cuts: Vec<(i64, String)> = rows
        .iter()
        .map(|r| {
            let t = r.topo.as_ref().expect("read above");
            (t.macs, t.cut.clone())
        })
        .collect();
    cuts.sort();
    cuts.dedup();
    let depth = |cut: &str| {
        cuts.iter()
            .position(|c| c.1 == cut)
            .map_or(0, |i| i as i32 + 1)
    };
    let t = |r: &Row| r.topo.clone().expect("read above");
    let mode = |r: &Row, m: &str| r.modes.iter().find(|x| x.0 == m).cloned();
    let f = |v: Vec<Option<f64>>| -> ArrayRef { Arc::new(Float64Array::from(v)) };
    let i64s = |v: Vec<i64>| -> ArrayRef { Arc::new(Int64Array::from(v)) };
    let worst = |r: &Row| {
        r.modes
            .iter()
            .find(|m| m.4)
            .or_else(|| r.modes.iter().max_by(|a, b| a.1.total_cmp(&b.1)))
            .cloned()
            .expect("modes are not empty")
    };
    let fields = vec![
        Field::new("topology", DataType::Utf8, false),
        Field::new("cut", DataType::Utf8, false),
        Field::new("layer", DataType::Utf8, true),
        Field::new("depth", DataType::Int32, false),
        Field::new("cut_channels", DataType::Int64, false),
        Field::new("channels", DataType::Int64, false),
        Field::new("method", DataType::Utf8, false),
        Field::new("feature_len", DataType::Int64, false),
        Field::new("macs", DataType::Int64, false),
        Field::new("params", DataType::Int64, false),
        Field::new("weight_bytes", DataType::Int64, false),
        Field::new("test_accuracy", DataType::Float64, false),
        Field::new("best_test_accuracy", DataType::Float64, false),
        Field::new("psnr_known", DataType::Float64, true),
        Field::new("ssim_known", DataType::Float64, true),
        Field::new("psnr_unknown", DataType::Float64, true),
        Field::new("ssim_unknown", DataType::Float64, true),
        Field::new("psnr_matched", DataType::Float64, true),
        Field::new("ssim_matched", DataType::Float64, true),
        Field::new("channels_matched", DataType::Int64, true),
        Field::new("psnr_worst", DataType::Float64, false),
        Field::new("ssim_worst", DataType::Float64, false),
        Field::new("floor_psnr", DataType::Float64, false),
        Field::new("floor_ssim", DataType::Float64, false),
        Field::new("train_seconds", DataType::Float64, false),
        Field::new("attack_seconds", DataType::Float64, false),
    ];
    let schema = Schema::new(fields);
    let batch = RecordBatch::try_new(
        Arc::new(schema.clone()),
        vec![
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| r.label.as_str()),
            )),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| t(r).cut))),
            Arc::new(StringArray::from(
                rows.iter().map(|r| t(r).layer).collect::<Vec<_>>(),
            )),
            Arc::new(Int32Array::from_iter_values(
                rows.iter().map(|r| depth(&t(r).cut)),
            )),
            i64s(rows.iter().map(|r| t(r).cut_channels).collect()),
            i64s(rows.iter().map(|r| t(r).channels).collect()),
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| t(r).method),
            )),
            i64s(rows.iter().map(|r| t(r).feature_len).collect()),
            i64s(rows.iter().map(|r| t(r).macs).collect()),
            i64s(rows.iter().map(|r| t(r).params).collect()),
            i64s(rows.iter().map(|r| t(r).weight_bytes).collect()),
            f(rows.iter().map(|r| Some(r.acc)).collect()),
            f(rows.iter().map(|r| Some(r.best)).collect()),
            f(rows
                .iter()
                .map(|r| mode(r, "known-selection").map(|m| m.1))
                .collect()),
            f(rows
                .iter()
                .map(|r| mode(r, "known-selection").map(|m| m.2))
                .collect()),
            f(rows
                .iter()
                .map(|r| mode(r, "unknown-selection").map(|m| m.1))
                .collect()),
            f(rows
                .iter()
                .map(|r| mode(r, "unknown-selection").map(|m| m.2))
                .collect()),
            f(rows
                .iter()
                .map(|r| mode(r, "matched-selection").map(|m| m.1))
                .collect()),
            f(rows
                .iter()
                .map(|r| mode(r, "matched-selection").map(|m| m.2))
                .collect()),
            Arc::new(Int64Array::from(
                rows.iter()
                    .map(|r| mode(r, "matched-selection").and_then(|m| m.3))
                    .collect::<Vec<_>>(),
            )),
            f(rows.iter().map(|r| Some(worst(r).1)).collect()),
            f(rows.iter().map(|r| Some(worst(r).2)).collect()),
            f(rows.iter().map(|r| Some(r.floor.0)).collect()),
            f(rows.iter().map(|r| Some(r.floor.1)).collect()),
            f(rows.iter().map(|r| Some(r.train_s)).collect()),
            f(rows.iter().map(|r| Some(r.attack_s)).collect()),
        ],
    )?;
    let prov = prov.with_params(&serde_json::json!({ "topologies": args.topologies }));
    write_artifact(
        &args.output,
        ArtifactKind::Characterization,
        schema,
        &prov,
        &[batch],
    )?;
    tracing::info!(rows = rows.len(), "wrote {}", args.output.display());
    println!("{}", args.output.display());
    Ok(())
}
