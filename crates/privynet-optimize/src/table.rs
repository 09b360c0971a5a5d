//! Reading the characterization table with polars: one [`Measurement`] per evaluated topology,
//! with the privacy loss taken as the worst case over the attacker modes and families for each metric
//! separately (the PSNR-worst attack need not be the SSIM-worst one). The accuracy a choice is
//! made on is `val_accuracy`; `test_accuracy` is carried beside it for the report only. The
//! privacy loss a choice is made on is the upper end of the 95% interval of that worst-case
//! mean (`psnr_worst_hi`, `ssim_worst_hi`); the means are carried for the report. Likewise the
//! Fisher-information bound: `psnr_bound_hi` is what a limit is tested against, `psnr_bound`
//! (its mean) is reported. Each row also carries its defence (`noise`, `bits`) and the bytes
//! per image it sends to the cloud.

use std::fs::File;
use std::path::Path;

use polars::prelude::*;
use privynet_core::ArtifactKind;
use privynet_core::defence::Defence;
use privynet_core::io::read_schema;
use privynet_core::manifest::{ChannelCount, grid_channels};

use crate::choose::{Measurement, Metrics, SeriesGrid, Topo};
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
            .optional_floats(name)?
            .into_iter()
            .map(|v| v.unwrap_or(f64::NAN))
            .collect())
    }

    fn optional_floats(&self, name: &str) -> Result<Vec<Option<f64>>, OptimizeError> {
        Ok(self
            .column(name)?
            .f64()
            .map_err(polars_error(self.path))?
            .iter()
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
    let (noise, bits) = (columns.floats("noise")?, columns.ints("bits")?);
    let bytes = columns.optional_floats("bytes_per_image")?;
    // Like the attacks' PSNR: the limit holds against the upper end, the mean is reported.
    let (bound, bound_mean) = (
        columns.optional_floats("psnr_bound_hi")?,
        columns.optional_floats("psnr_bound")?,
    );
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
                noise: noise[k],
                bits: bits[k],
            },
            metrics: Metrics {
                accuracy: accuracy[k],
                psnr: psnr[k],
                ssim: ssim[k],
                bytes_per_image: bytes[k],
                psnr_bound: bound[k],
            },
            test_accuracy: test_accuracy[k],
            privacy_mean: (psnr_mean[k], ssim_mean[k]),
            psnr_bound_mean: bound_mean[k],
            attack_converged: converged[k],
        })
        .collect())
}

/// Refuses a row whose accuracy or privacy loss is missing or not finite, whose defence is not
/// one the manifest accepts, or whose bytes or bound is present but not finite, naming it.
fn check_finite(rows: &[Measurement], path: &Path) -> Result<(), OptimizeError> {
    let refuse = |r: &Measurement, what: String| {
        Err(OptimizeError::Input(format!(
            "{}: topology `{}` {what}",
            path.display(),
            r.topo.topology
        )))
    };
    for r in rows {
        let m = &r.metrics;
        if !(m.accuracy.is_finite()
            && r.test_accuracy.is_finite()
            && m.psnr.is_finite()
            && m.ssim.is_finite())
        {
            return refuse(
                r,
                "has a missing or non-finite validation or test accuracy, PSNR or SSIM".into(),
            );
        }
        if let Err(e) = u8::try_from(r.topo.bits)
            .map_err(|_| format!("{} bits is out of range", r.topo.bits))
            .and_then(|bits| Defence::new(r.topo.noise, bits))
        {
            return refuse(r, format!("has an invalid defence: {e}"));
        }
        let finite = |v: Option<f64>| v.is_none_or(f64::is_finite);
        if !(finite(m.bytes_per_image) && finite(m.psnr_bound) && finite(r.psnr_bound_mean)) {
            return refuse(r, "has a non-finite bytes_per_image or psnr_bound".into());
        }
    }
    Ok(())
}

/// The grid of the manifest's sweep over the characterized cuts: one series per cut (named by
/// its friendly or tensor name in the manifest) and defence, the cut resolved against its
/// channel count from the table. Cuts with no row get empty series, which the optimizer reports
/// as not characterized.
pub fn grid(
    rows: &[Measurement],
    cuts: &[String],
    channels: &[ChannelCount],
    defences: &[Defence],
) -> Result<Vec<SeriesGrid>, OptimizeError> {
    let mut series = Vec::with_capacity(cuts.len() * defences.len());
    for name in cuts {
        let row = rows
            .iter()
            .find(|r| &r.topo.layer == name || &r.topo.cut == name);
        let (cut, ds) = match row {
            Some(r) => (
                r.topo.cut.clone(),
                grid_channels(channels, name, r.topo.cut_channels).map_err(OptimizeError::Input)?,
            ),
            None => (name.clone(), vec![]),
        };
        series.extend(defences.iter().map(|&defence| SeriesGrid {
            cut: cut.clone(),
            defence,
            channels: ds.clone(),
        }));
    }
    Ok(series)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use arrow::array::{ArrayRef, BooleanArray, Float64Array, Int32Array, Int64Array, StringArray};
    use privynet_core::Provenance;
    use privynet_core::io::write_artifact;
    use privynet_core::manifest::ChannelCount;

    use super::*;

    /// A characterization of `f-d4` undefended and `f-d4-n0.5-q8`: every column of the schema
    /// with a plain value, then the ones under test.
    fn write_table(path: &Path) {
        let kind = ArtifactKind::Characterization;
        let mut columns: BTreeMap<String, ArrayRef> = BTreeMap::new();
        for f in &kind.schema().unwrap().fields {
            let col: ArrayRef = match f.ty.as_str() {
                "utf8" => Arc::new(StringArray::from(vec!["f"; 2])),
                "int32" => Arc::new(Int32Array::from(vec![1; 2])),
                "int64" => Arc::new(Int64Array::from(vec![4; 2])),
                "float64" => Arc::new(Float64Array::from(vec![0.5; 2])),
                "bool" => Arc::new(BooleanArray::from(vec![true; 2])),
                other => panic!("no test value for {other}"),
            };
            columns.insert(f.name.clone(), col);
        }
        let float = |v: Vec<Option<f64>>| -> ArrayRef { Arc::new(Float64Array::from(v)) };
        columns.insert(
            "topology".into(),
            Arc::new(StringArray::from(vec!["f-d4", "f-d4-n0.5-q8"])),
        );
        columns.insert("noise".into(), float(vec![Some(0.0), Some(0.5)]));
        columns.insert("bits".into(), Arc::new(Int64Array::from(vec![32, 8])));
        columns.insert("bytes_per_image".into(), float(vec![Some(884.0), None]));
        columns.insert("psnr_bound".into(), float(vec![None, Some(12.0)]));
        columns.insert("psnr_bound_lo".into(), float(vec![None, Some(11.0)]));
        columns.insert("psnr_bound_hi".into(), float(vec![None, Some(13.0)]));
        let batch = kind
            .batch(
                columns
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.clone()))
                    .collect(),
            )
            .unwrap();
        let prov = Provenance::new("characterize", "-");
        write_artifact(path, kind, batch.schema().as_ref().clone(), &prov, &[batch]).unwrap();
    }

    #[test]
    fn reads_the_defence_bytes_and_bound_and_resolves_a_series_per_defence() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("characterization.parquet");
        write_table(&path);
        let rows = read_characterization(&path).unwrap();
        let by_name = |n: &str| rows.iter().find(|r| r.topo.topology == n).unwrap();
        let (plain, defended) = (by_name("f-d4"), by_name("f-d4-n0.5-q8"));
        assert!(plain.topo.defence().is_none());
        assert_eq!(plain.metrics.bytes_per_image, Some(884.0));
        assert_eq!(
            (plain.metrics.psnr_bound, plain.psnr_bound_mean),
            (None, None)
        );
        assert_eq!(
            defended.topo.defence(),
            Defence {
                noise: 0.5,
                bits: 8
            }
        );
        assert_eq!(defended.metrics.bytes_per_image, None);
        // The limit's side of the bound is the upper end of its interval; the mean rides along.
        assert_eq!(defended.metrics.psnr_bound, Some(13.0));
        assert_eq!(defended.psnr_bound_mean, Some(12.0));

        let defences = [
            Defence::default(),
            Defence {
                noise: 0.5,
                bits: 8,
            },
        ];
        let grid = grid(&rows, &["f".into()], &[ChannelCount::Count(4)], &defences).unwrap();
        assert_eq!(grid.len(), 2);
        assert_eq!(grid[1].name(), "f-n0.5-q8");
        assert!(grid.iter().all(|g| g.channels == [4]));
    }
}
