//! The train stage's files besides the model: `cloud_config.json` (what the network was built
//! and trained with), `train_metrics.arrow` (one row per epoch) and `train_summary.arrow` (one
//! row for the run). The tables take their schemas from `schemas/` through
//! [`ArtifactKind::batch`].

use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray};

use privynet_core::io::{write_artifact, write_bytes_atomic};
use privynet_core::manifest::TrainParams;
use privynet_core::{ArtifactKind, Provenance};

use super::report::{EpochMetrics, TrainReport};
use crate::NnError;

/// Rows of the three splits a run trained and scored on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplitSizes {
    pub train: usize,
    pub val: usize,
    pub test: usize,
}

/// What a run trained on, as its summary says it.
#[derive(Debug, Clone, PartialEq)]
pub struct InputSummary {
    /// The topology's label, `features` without a topology, or `raw` for the baseline.
    pub label: String,
    /// The stored (compressed) bytes per row of the file trained on: what sending one image's
    /// features to the cloud costs (for the baseline, one image).
    pub bytes_per_image: Option<f64>,
}

/// Writes `cloud_config.json` into `output`: the input shape, the settings, the seed and the
/// network's layout.
pub fn write_config(
    output: &Path,
    shape: [usize; 3],
    params: &TrainParams,
    seed: u64,
) -> Result<(), NnError> {
    let config = serde_json::json!({
        "input_shape": shape, "train": params, "seed": seed,
        "layout": super::cloud::layout(shape, params.width, params.depth),
    });
    let path = output.join("cloud_config.json");
    let text = serde_json::to_string_pretty(&config).map_err(|e| NnError::save(&path, e))?;
    write_bytes_atomic(&path, text.as_bytes())?;
    Ok(())
}

/// Writes `train_metrics.arrow` and `train_summary.arrow` into `output`. The summary reports the
/// kept model on both splits: the last epoch's, or with `train.patience` the best on val (an
/// epoch is never picked on the test split).
pub fn write_tables(
    output: &Path,
    prov: &Provenance,
    input: &InputSummary,
    report: &TrainReport,
    sizes: SplitSizes,
) -> Result<(), NnError> {
    let metrics = metrics_batch(&report.epochs)?;
    write(
        output,
        "train_metrics.arrow",
        ArtifactKind::TrainMetrics,
        prov,
        metrics,
    )?;
    let summary = summary_batch(input, report, sizes)?;
    write(
        output,
        "train_summary.arrow",
        ArtifactKind::TrainSummary,
        prov,
        summary,
    )
}

fn write(
    output: &Path,
    name: &str,
    kind: ArtifactKind,
    prov: &Provenance,
    batch: RecordBatch,
) -> Result<(), NnError> {
    let schema = batch.schema().as_ref().clone();
    write_artifact(&output.join(name), kind, schema, prov, &[batch])?;
    Ok(())
}

/// One row per epoch.
pub fn metrics_batch(epochs: &[EpochMetrics]) -> Result<RecordBatch, NnError> {
    let f64_array = |field: fn(&EpochMetrics) -> f64| -> ArrayRef {
        Arc::new(Float64Array::from_iter_values(epochs.iter().map(field)))
    };
    let epoch = Int32Array::from_iter_values(epochs.iter().map(|m| m.epoch as i32));
    Ok(ArtifactKind::TrainMetrics.batch(vec![
        ("epoch", Arc::new(epoch)),
        ("lr", f64_array(|m| m.lr)),
        ("train_loss", f64_array(|m| m.train_loss)),
        ("train_accuracy", f64_array(|m| m.train_accuracy)),
        ("val_loss", f64_array(|m| m.val_loss)),
        ("val_accuracy", f64_array(|m| m.val_accuracy)),
        ("test_loss", f64_array(|m| m.test_loss)),
        ("test_accuracy", f64_array(|m| m.test_accuracy)),
        ("seconds", f64_array(|m| m.seconds)),
    ])?)
}

/// The run's one row: the kept epoch's accuracies, the split sizes, the speed and the bytes
/// per image of the input.
pub fn summary_batch(
    input: &InputSummary,
    report: &TrainReport,
    sizes: SplitSizes,
) -> Result<RecordBatch, NnError> {
    let last = report
        .epochs
        .get(report.kept)
        .ok_or_else(|| NnError::Training("no epoch ran".into()))?;
    let f64_value = |v: f64| -> ArrayRef { Arc::new(Float64Array::from(vec![v])) };
    let i64_value = |v: usize| -> ArrayRef { Arc::new(Int64Array::from(vec![v as i64])) };
    Ok(ArtifactKind::TrainSummary.batch(vec![
        (
            "topology",
            Arc::new(StringArray::from(vec![input.label.as_str()])),
        ),
        ("final_val_accuracy", f64_value(last.val_accuracy)),
        ("final_test_accuracy", f64_value(last.test_accuracy)),
        (
            "epochs",
            Arc::new(Int32Array::from(vec![report.epochs.len() as i32])),
        ),
        ("train_samples", i64_value(sizes.train)),
        ("val_samples", i64_value(sizes.val)),
        ("test_samples", i64_value(sizes.test)),
        ("samples_per_second", f64_value(report.samples_per_second)),
        ("seconds", f64_value(report.seconds)),
        (
            "bytes_per_image",
            Arc::new(Float64Array::from(vec![input.bytes_per_image])),
        ),
    ])?)
}

#[cfg(test)]
mod tests {
    use arrow::array::Array;
    use arrow::datatypes::{DataType, Field, Schema};
    use privynet_core::column;

    use super::*;

    fn epoch(n: usize) -> EpochMetrics {
        let v = n as f64;
        EpochMetrics {
            epoch: n,
            lr: v / 10.0,
            train_loss: v + 0.1,
            train_accuracy: v + 0.2,
            val_loss: v + 0.3,
            val_accuracy: v + 0.4,
            test_loss: v + 0.5,
            test_accuracy: v + 0.6,
            seconds: v + 0.7,
        }
    }

    fn non_null(fields: &[(&str, DataType)]) -> Schema {
        Schema::new(
            fields
                .iter()
                .map(|(name, ty)| Field::new(*name, ty.clone(), false))
                .collect::<Vec<_>>(),
        )
    }

    #[test]
    fn metrics_have_the_schema_the_stage_always_wrote() {
        let b = metrics_batch(&[epoch(1), epoch(2)]).unwrap();
        // The schema the binary spelled out by hand before the YAML schemas built it: the
        // files stay byte for byte the same.
        let f64 = DataType::Float64;
        let expected = non_null(&[
            ("epoch", DataType::Int32),
            ("lr", f64.clone()),
            ("train_loss", f64.clone()),
            ("train_accuracy", f64.clone()),
            ("val_loss", f64.clone()),
            ("val_accuracy", f64.clone()),
            ("test_loss", f64.clone()),
            ("test_accuracy", f64.clone()),
            ("seconds", f64),
        ]);
        assert_eq!(b.schema().as_ref(), &expected);
        assert_eq!(b.num_rows(), 2);
        let val_loss = column::<Float64Array>(&b, "val_loss", Path::new("metrics")).unwrap();
        assert_eq!(
            val_loss.values().as_ref(),
            &[epoch(1).val_loss, epoch(2).val_loss]
        );
        assert!(b.columns().iter().all(|c| c.nulls().is_none()));
    }

    #[test]
    fn the_summary_reports_the_kept_epoch() {
        let report = TrainReport {
            epochs: vec![epoch(1), epoch(2)],
            samples_per_second: 50.0,
            seconds: 9.0,
            kept: 1,
            early_stopped: false,
        };
        let sizes = SplitSizes {
            train: 10,
            val: 3,
            test: 4,
        };
        let input = InputSummary {
            label: "fire3-d8".into(),
            bytes_per_image: Some(812.5),
        };
        let b = summary_batch(&input, &report, sizes).unwrap();
        let mut expected = non_null(&[
            ("topology", DataType::Utf8),
            ("final_val_accuracy", DataType::Float64),
            ("final_test_accuracy", DataType::Float64),
            ("epochs", DataType::Int32),
            ("train_samples", DataType::Int64),
            ("val_samples", DataType::Int64),
            ("test_samples", DataType::Int64),
            ("samples_per_second", DataType::Float64),
            ("seconds", DataType::Float64),
        ])
        .fields()
        .to_vec();
        // Nullable, as the schema declares it: readers treat it as possibly absent.
        expected.push(Arc::new(Field::new(
            "bytes_per_image",
            DataType::Float64,
            true,
        )));
        assert_eq!(b.schema().as_ref(), &Schema::new(expected));
        let path = Path::new("summary");
        let f64_at = |name| column::<Float64Array>(&b, name, path).unwrap().value(0);
        assert_eq!(f64_at("bytes_per_image"), 812.5);
        assert_eq!(f64_at("final_val_accuracy"), epoch(2).val_accuracy);
        assert_eq!(f64_at("final_test_accuracy"), epoch(2).test_accuracy);
        let val = column::<Int64Array>(&b, "val_samples", path).unwrap();
        assert_eq!(val.value(0), 3);
        // Early stopping keeps an earlier epoch; the summary still counts the epochs run.
        let early = TrainReport {
            kept: 0,
            early_stopped: true,
            ..report.clone()
        };
        let b = summary_batch(&input, &early, sizes).unwrap();
        let val_acc = column::<Float64Array>(&b, "final_val_accuracy", path).unwrap();
        assert_eq!(val_acc.value(0), epoch(1).val_accuracy);
        assert_eq!(
            column::<Int32Array>(&b, "epochs", path).unwrap().value(0),
            2
        );
        let raw = InputSummary {
            label: "raw".into(),
            bytes_per_image: None,
        };
        let b = summary_batch(&raw, &report, sizes).unwrap();
        let bytes = column::<Float64Array>(&b, "bytes_per_image", path).unwrap();
        assert!(bytes.is_null(0));
        let empty = TrainReport {
            epochs: vec![],
            ..report
        };
        let e = summary_batch(&raw, &empty, sizes).unwrap_err();
        assert_eq!(e.to_string(), "no epoch ran");
    }
}
