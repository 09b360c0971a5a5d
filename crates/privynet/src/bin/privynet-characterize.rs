//! `privynet-characterize`: gathers every evaluated topology's local cost, validation and test
//! accuracy and privacy loss (per attacker mode and in the worst case) into
//! characterization.parquet, the table the optimizer chooses from (on validation accuracy; test
//! accuracy is carried for the report only).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use arrow::array::{
    Array, ArrayRef, BooleanArray, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray,
};
use clap::Parser;

use privynet_core::io::{read_arrow, write_artifact};
use privynet_core::manifest::ManifestArgs;
use privynet_core::{ArtifactKind, Provenance, Topology, column};

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
    val_acc: f64,
    test_acc: f64,
    train_s: f64,
    modes: Vec<ModeRow>,
    floor: (f64, f64),
    attack_s: f64,
}

/// One attacker mode of a topology's audit.
#[derive(Debug, Default, Clone)]
struct ModeRow {
    mode: String,
    psnr: f64,
    ssim: f64,
    matched: Option<i64>,
    worst: bool,
    /// 95% intervals of the means: (lo, hi).
    psnr_ci: (f64, f64),
    ssim_ci: (f64, f64),
    epochs: i32,
    converged: bool,
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
        r.val_acc = column::<Float64Array>(b, "final_val_accuracy", &ts)?.value(0);
        r.test_acc = column::<Float64Array>(b, "final_test_accuracy", &ts)?.value(0);
        r.train_s = column::<Float64Array>(b, "seconds", &ts)?.value(0);
        let asum = dir.join("attack/attack_summary.arrow");
        let (_, bs) = read_arrow(&asum, ArtifactKind::AttackSummary)
            .with_context(|| format!("reading {}", asum.display()))?;
        for b in &bs {
            let mode = column::<StringArray>(b, "mode", &asum)?;
            let f = |name| column::<Float64Array>(b, name, &asum);
            let matched = column::<Int64Array>(b, "channels_matched", &asum)?;
            let worst = column::<BooleanArray>(b, "worst", &asum)?;
            let converged = column::<BooleanArray>(b, "converged", &asum)?;
            let epochs = column::<Int32Array>(b, "epochs", &asum)?;
            for i in 0..b.num_rows() {
                r.modes.push(ModeRow {
                    mode: mode.value(i).to_string(),
                    psnr: f("mean_psnr")?.value(i),
                    ssim: f("mean_ssim")?.value(i),
                    matched: matched.is_valid(i).then(|| matched.value(i)),
                    worst: worst.value(i),
                    psnr_ci: (f("psnr_lo")?.value(i), f("psnr_hi")?.value(i)),
                    ssim_ci: (f("ssim_lo")?.value(i), f("ssim_hi")?.value(i)),
                    epochs: epochs.value(i),
                    converged: converged.value(i),
                });
                r.floor = (f("floor_psnr")?.value(i), f("floor_ssim")?.value(i));
                r.attack_s += f("seconds")?.value(i);
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
    let batch = table(&rows, &depth)?;
    let prov = prov.with_params(&serde_json::json!({ "topologies": args.topologies }));
    write_artifact(
        &args.output,
        ArtifactKind::Characterization,
        batch.schema().as_ref().clone(),
        &prov,
        &[batch],
    )?;
    tracing::info!(rows = rows.len(), "wrote {}", args.output.display());
    println!("{}", args.output.display());
    Ok(())
}

/// The characterization table, one row per topology, in the column order of its schema file.
fn table(rows: &[Row], depth: &dyn Fn(&str) -> i32) -> Result<RecordBatch> {
    let t = |r: &Row| r.topo.clone().expect("read above");
    let mode = |r: &Row, m: &str| r.modes.iter().find(|x| x.mode == m).cloned();
    let f = |v: Vec<Option<f64>>| -> ArrayRef { Arc::new(Float64Array::from(v)) };
    let per_row = |g: &dyn Fn(&Row) -> f64| f(rows.iter().map(|r| Some(g(r))).collect());
    let per_mode = |m: &str, g: fn(&ModeRow) -> f64| {
        f(rows.iter().map(|r| mode(r, m).map(|x| g(&x))).collect())
    };
    let i64s = |g: &dyn Fn(&Row) -> i64| -> ArrayRef {
        Arc::new(Int64Array::from_iter_values(rows.iter().map(g)))
    };
    let strs = |g: &dyn Fn(&Row) -> String| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(rows.iter().map(g)))
    };
    // The worst case over modes: the highest mean, and of each interval end the highest, so
    // that the upper end bounds every mode's mean at once.
    let worst = |r: &Row| {
        r.modes
            .iter()
            .find(|m| m.worst)
            .or_else(|| r.modes.iter().max_by(|a, b| a.psnr.total_cmp(&b.psnr)))
            .cloned()
            .expect("modes are not empty")
    };
    let max_of =
        |r: &Row, g: fn(&ModeRow) -> f64| r.modes.iter().map(g).fold(f64::NEG_INFINITY, f64::max);
    let kind = ArtifactKind::Characterization;
    Ok(kind.batch(vec![
        ("topology", strs(&|r| r.label.clone())),
        ("cut", strs(&|r| t(r).cut)),
        (
            "layer",
            Arc::new(StringArray::from(
                rows.iter().map(|r| t(r).layer).collect::<Vec<_>>(),
            )),
        ),
        (
            "depth",
            Arc::new(Int32Array::from_iter_values(
                rows.iter().map(|r| depth(&t(r).cut)),
            )),
        ),
        ("cut_channels", i64s(&|r| t(r).cut_channels)),
        ("channels", i64s(&|r| t(r).channels)),
        ("method", strs(&|r| t(r).method)),
        ("feature_len", i64s(&|r| t(r).feature_len)),
        ("macs", i64s(&|r| t(r).macs)),
        ("params", i64s(&|r| t(r).params)),
        ("weight_bytes", i64s(&|r| t(r).weight_bytes)),
        ("val_accuracy", per_row(&|r| r.val_acc)),
        ("test_accuracy", per_row(&|r| r.test_acc)),
        ("psnr_known", per_mode("known-selection", |m| m.psnr)),
        ("ssim_known", per_mode("known-selection", |m| m.ssim)),
        ("psnr_unknown", per_mode("unknown-selection", |m| m.psnr)),
        ("ssim_unknown", per_mode("unknown-selection", |m| m.ssim)),
        ("psnr_matched", per_mode("matched-selection", |m| m.psnr)),
        ("ssim_matched", per_mode("matched-selection", |m| m.ssim)),
        (
            "channels_matched",
            Arc::new(Int64Array::from(
                rows.iter()
                    .map(|r| mode(r, "matched-selection").and_then(|m| m.matched))
                    .collect::<Vec<_>>(),
            )),
        ),
        ("psnr_worst", per_row(&|r| worst(r).psnr)),
        ("ssim_worst", per_row(&|r| worst(r).ssim)),
        ("psnr_worst_lo", per_row(&|r| max_of(r, |m| m.psnr_ci.0))),
        ("psnr_worst_hi", per_row(&|r| max_of(r, |m| m.psnr_ci.1))),
        ("ssim_worst_lo", per_row(&|r| max_of(r, |m| m.ssim_ci.0))),
        ("ssim_worst_hi", per_row(&|r| max_of(r, |m| m.ssim_ci.1))),
        (
            "attack_epochs",
            Arc::new(Int32Array::from_iter_values(
                rows.iter()
                    .map(|r| r.modes.iter().map(|m| m.epochs).max().unwrap_or(0)),
            )),
        ),
        (
            "attack_converged",
            Arc::new(BooleanArray::from(
                rows.iter()
                    .map(|r| r.modes.iter().all(|m| m.converged))
                    .collect::<Vec<_>>(),
            )),
        ),
        ("floor_psnr", per_row(&|r| r.floor.0)),
        ("floor_ssim", per_row(&|r| r.floor.1)),
        ("train_seconds", per_row(&|r| r.train_s)),
        ("attack_seconds", per_row(&|r| r.attack_s)),
    ])?)
}
