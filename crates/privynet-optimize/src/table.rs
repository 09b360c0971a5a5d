//! Reading the characterization table with polars: one [`Measurement`] per evaluated topology,
//! with the privacy loss taken as the worst case over the attacker modes and families for each metric
//! separately (the PSNR-worst attack need not be the SSIM-worst one). The accuracy a choice is
//! made on is `val_accuracy`; `test_accuracy` is carried beside it for the report only. The
//! privacy loss a choice is made on is the upper end of the 95% interval of that worst-case
//! mean (`psnr_worst_hi`, `ssim_worst_hi`); the means are carried for the report.

use std::fs::File;
use std::path::Path;

use polars::prelude::*;
use privynet_core::ArtifactKind;
use privynet_core::io::read_schema;
use privynet_core::manifest::{ChannelCount, grid_channels};

use crate::choose::{CutGrid, Measurement, Metrics, Topo};
use crate::{OptimizeError, io_error, polars_error};

/// Reads `characterization.parquet` (its schema checked against `schemas/characterization.yaml`
/// first, so a wrong file is named with the field at fault), sorted by depth and channels.
pub fn read_characterization(path: &Path) -> Result<Vec<Measurement>, OptimizeError> {
    let df = with_worst_case(read_checked(path)?, path)?;
    let rows = measurements(&Columns { df: &df, path })?;
    check_finite(&rows, path)?;
    Ok(rows)
}

/// The table as polars reads it, after its schema was checked.
fn read_checked(path: &Path) -> Result<DataFrame, OptimizeError> {
    let schema = read_schema(path)?;
    ArtifactKind::Characterization
        .schema()?
        .check(path, &schema)?;
    let file = File::open(path).map_err(io_error(path))?;
    ParquetReader::new(file)
        .finish()
        .map_err(polars_error(path))
}

/// Adds the worst-case mean PSNR and SSIM over the attacker modes (`psnr_max`, `ssim_max`) and
/// the cut's display name, and sorts by depth and channels.
fn with_worst_case(df: DataFrame, path: &Path) -> Result<DataFrame, OptimizeError> {
    let worst = |metric: &str| -> Result<Expr, OptimizeError> {
        polars::lazy::dsl::max_horizontal(
            [
                "known",
                "unknown",
                "matched",
                "irn",
                "optimization",
                "worst",
            ]
            .map(|m| col(format!("{metric}_{m}"))),
        )
        .map_err(polars_error(path))
    };
    df.lazy()
        .with_columns([
            worst("psnr")?.alias("psnr_max"),
            worst("ssim")?.alias("ssim_max"),
            coalesce(&[col("layer"), col("cut")]).alias("name"),
        ])
        .sort(["depth", "channels"], SortMultipleOptions::default())
        .collect()
        .map_err(polars_error(path))
}

/// The columns of a frame read from `path`, as plain vectors (nulls as empty, 0, NaN or false).
struct Columns<'a> {
    df: &'a DataFrame,
    path: &'a Path,
}

impl Columns<'_> {
    fn column(&self, name: &str) -> Result<&Column, OptimizeError> {
        self.df.column(name).map_err(polars_error(self.path))
    }

    fn strings(&self, name: &str) -> Result<Vec<String>, OptimizeError> {
        Ok(self
            .column(name)?
            .str()
            .map_err(polars_error(self.path))?
            .iter()
            .map(|v| v.unwrap_or_default().to_string())
            .collect())
    }

    fn ints(&self, name: &str) -> Result<Vec<i64>, OptimizeError> {
        let cast = self
            .column(name)?
            .cast(&DataType::Int64)
            .map_err(polars_error(self.path))?;
        Ok(cast
            .i64()
            .map_err(polars_error(self.path))?
            .iter()
            .map(|v| v.unwrap_or(0))
            .collect())
    }

    fn floats(&self, name: &str) -> Result<Vec<f64>, OptimizeError> {
        Ok(self
            .column(name)?
            .f64()
            .map_err(polars_error(self.path))?
            .iter()
            .map(|v| v.unwrap_or(f64::NAN))
            .collect())
    }

    fn bools(&self, name: &str) -> Result<Vec<bool>, OptimizeError> {
        Ok(self
            .column(name)?
            .bool()
            .map_err(polars_error(self.path))?
            .iter()
            .map(|v| v.unwrap_or(false))
            .collect())
    }
}

/// One [`Measurement`] per row of the (worst-cased, sorted) table.
fn measurements(columns: &Columns<'_>) -> Result<Vec<Measurement>, OptimizeError> {
    let (topology, cut, name) = (
        columns.strings("topology")?,
        columns.strings("cut")?,
        columns.strings("name")?,
    );
    let (depth, cut_channels, channels) = (
        columns.ints("depth")?,
        columns.ints("cut_channels")?,
        columns.ints("channels")?,
    );
    let (macs, weight_bytes) = (columns.ints("macs")?, columns.ints("weight_bytes")?);
    // Limits hold against the upper ends of the intervals; the means are reported beside them.
    let (accuracy, psnr, ssim) = (
        columns.floats("val_accuracy")?,
        columns.floats("psnr_worst_hi")?,
        columns.floats("ssim_worst_hi")?,
    );
    let (psnr_mean, ssim_mean) = (columns.floats("psnr_max")?, columns.floats("ssim_max")?);
    let test_accuracy = columns.floats("test_accuracy")?;
    let converged = columns.bools("attack_converged")?;
    Ok((0..columns.df.height())
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
                accuracy: accuracy[k],
                psnr: psnr[k],
                ssim: ssim[k],
            },
            test_accuracy: test_accuracy[k],
            privacy_mean: (psnr_mean[k], ssim_mean[k]),
            attack_converged: converged[k],
        })
        .collect())
}

/// Refuses a row whose accuracy or privacy loss is missing or not finite, naming it.
fn check_finite(rows: &[Measurement], path: &Path) -> Result<(), OptimizeError> {
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
    Ok(())
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
