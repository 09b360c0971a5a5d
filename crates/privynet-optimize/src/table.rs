//! Reading the characterization table with polars: one [`Measurement`] per evaluated topology,
//! with the privacy loss taken as the worst case over the attacker modes for each metric
//! separately (the PSNR-worst mode need not be the SSIM-worst one). The accuracy a choice is
//! made on is `val_accuracy`; `test_accuracy` is carried beside it for the report only. The
//! privacy loss a choice is made on is the upper end of the 95% interval of that worst-case
//! mean (`psnr_worst_hi`, `ssim_worst_hi`); the means are carried for the report.

use std::fs::File;
use std::path::Path;

use polars::prelude::*;
use privynet_core::ArtifactKind;
use privynet_core::io::read_schema;
use privynet_core::manifest::{ChannelCount, grid_channels};

use crate::OptimizeError;
use crate::choose::{CutGrid, Measurement, Metrics, Topo};

fn perr(path: &Path) -> impl Fn(PolarsError) -> OptimizeError + '_ {
    move |e| OptimizeError::Polars {
        path: path.display().to_string(),
        source: e,
    }
}

/// Reads `characterization.parquet` (its schema checked against `schemas/characterization.yaml`
/// first, so a wrong file is named with the field at fault), sorted by depth and channels.
pub fn read_characterization(path: &Path) -> Result<Vec<Measurement>, OptimizeError> {
    let schema = read_schema(path)?;
    ArtifactKind::Characterization
        .schema()?
        .check(path, &schema)?;
    let file = File::open(path).map_err(|e| OptimizeError::Io {
        path: path.display().to_string(),
        source: e,
    })?;
    let df = ParquetReader::new(file).finish().map_err(perr(path))?;
    let worst = |metric: &str| -> PolarsResult<Expr> {
        polars::lazy::dsl::max_horizontal(
            ["known", "unknown", "matched", "worst"].map(|m| col(format!("{metric}_{m}"))),
        )
    };
    let df = df
        .lazy()
        .with_columns([
            worst("psnr").map_err(perr(path))?.alias("psnr_max"),
            worst("ssim").map_err(perr(path))?.alias("ssim_max"),
            coalesce(&[col("layer"), col("cut")]).alias("name"),
        ])
        .sort(["depth", "channels"], SortMultipleOptions::default())
        .collect()
        .map_err(perr(path))?;
    let e = perr(path);
    let s = |name: &str| -> Result<Vec<String>, OptimizeError> {
        Ok(df
            .column(name)
            .and_then(|c| c.str().cloned())
            .map_err(&e)?
            .iter()
            .map(|v| v.unwrap_or_default().to_string())
            .collect())
    };
    let i = |name: &str| -> Result<Vec<i64>, OptimizeError> {
        let c = df.column(name).map_err(&e)?;
        let c = c.cast(&DataType::Int64).map_err(&e)?;
        Ok(c.i64()
            .map_err(&e)?
            .iter()
            .map(|v| v.unwrap_or(0))
            .collect())
    };
    let f = |name: &str| -> Result<Vec<f64>, OptimizeError> {
        Ok(df
            .column(name)
            .and_then(|c| c.f64().cloned())
            .map_err(&e)?
            .iter()
            .map(|v| v.unwrap_or(f64::NAN))
            .collect())
    };
    let (topology, cut, name) = (s("topology")?, s("cut")?, s("name")?);
    let (depth, cut_channels, channels) = (i("depth")?, i("cut_channels")?, i("channels")?);
    let (macs, weight_bytes) = (i("macs")?, i("weight_bytes")?);
    // Limits hold against the upper ends of the intervals; the means are reported beside them.
    let (acc, psnr, ssim) = (f("val_accuracy")?, f("psnr_worst_hi")?, f("ssim_worst_hi")?);
    let (psnr_mean, ssim_mean) = (f("psnr_max")?, f("ssim_max")?);
    let test_acc = f("test_accuracy")?;
    let converged: Vec<bool> = df
        .column("attack_converged")
        .and_then(|c| c.bool().cloned())
        .map_err(&e)?
        .iter()
        .map(|v| v.unwrap_or(false))
        .collect();
    let rows: Vec<Measurement> = (0..df.height())
        .map(|k| Measurement {
            topo: Topo {
                topology: topology[k].clone(),
                cut: cut[k].clone(),
                layer: name[k].clone(),
                depth: depth[k] as i32,
                cut_channels: cut_channels[k],
                channels: channels[k],
                macs: macs[k],
                weight_bytes: weight_bytes[k],
            },
            metrics: Metrics {
                accuracy: acc[k],
                psnr: psnr[k],
                ssim: ssim[k],
            },
            test_accuracy: test_acc[k],
            privacy_mean: (psnr_mean[k], ssim_mean[k]),
            attack_converged: converged[k],
        })
        .collect();
    if let Some(r) = rows.iter().find(|r| {
        !(r.metrics.accuracy.is_finite()
            && r.test_accuracy.is_finite()
            && r.metrics.psnr.is_finite()
            && r.metrics.ssim.is_finite())
    }) {
        return Err(OptimizeError::Input(format!(
            "{}: topology `{}` has a missing or non-finite validation or test accuracy, PSNR or SSIM",
            path.display(),
            r.topo.topology
        )));
    }
    Ok(rows)
}

/// The grid of the manifest's sweep over the characterized cuts: each cut (named by its friendly
/// or tensor name in the manifest) resolved against its channel count from the table. Cuts with
/// no row get an empty grid, which the optimizer reports as not characterized.
pub fn grid(
    rows: &[Measurement],
    cuts: &[String],
    channels: &[ChannelCount],
) -> Result<Vec<CutGrid>, OptimizeError> {
    cuts.iter()
        .map(|name| {
            let row = rows
                .iter()
                .find(|r| &r.topo.layer == name || &r.topo.cut == name);
            Ok(match row {
                Some(r) => CutGrid {
                    cut: r.topo.cut.clone(),
                    channels: grid_channels(channels, name, r.topo.cut_channels)
                        .map_err(OptimizeError::Input)?,
                },
                None => CutGrid {
                    cut: name.clone(),
                    channels: vec![],
                },
            })
        })
        .collect()
}
