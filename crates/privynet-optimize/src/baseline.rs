//! The raw-image baseline (`privynet-train --baseline raw`): the same cloud network trained on
//! the images themselves, read from its train summary so the decision can say what the split
//! costs in accuracy.

use std::path::Path;

use arrow::array::{Float64Array, StringArray};
use privynet_core::io::read_arrow;
use privynet_core::{ArtifactKind, column};

use crate::OptimizeError;
use crate::choose::Baseline;

/// The raw-image baseline's final validation and test accuracy, from its `train_summary.arrow`
/// (schema-checked on reading); the summary of any other topology is refused.
pub fn read(path: &Path) -> Result<Baseline, OptimizeError> {
    let (_, batches) = read_arrow(path, ArtifactKind::TrainSummary)?;
    let batch = batches
        .first()
        .filter(|b| b.num_rows() > 0)
        .ok_or_else(|| OptimizeError::Input("the summary has no row".into()))?;
    let topology = column::<StringArray>(batch, "topology", path)?.value(0);
    if topology != "raw" {
        return Err(OptimizeError::Input(format!(
            "this is the train summary of `{topology}`, not of the raw-image baseline (`privynet-train --baseline raw`)"
        )));
    }
    let accuracy = |name: &str| -> Result<f64, OptimizeError> {
        Ok(column::<Float64Array>(batch, name, path)?.value(0))
    };
    Ok(Baseline {
        val_accuracy: accuracy("final_val_accuracy")?,
        test_accuracy: accuracy("final_test_accuracy")?,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, Int32Array, Int64Array};
    use privynet_core::Provenance;
    use privynet_core::io::write_artifact;

    use super::*;

    /// Writes a one-row train summary of `topology` and returns its path.
    fn summary(dir: &Path, topology: &str) -> std::path::PathBuf {
        let path = dir.join(format!("{topology}.arrow"));
        let float = |v: f64| -> ArrayRef { Arc::new(Float64Array::from(vec![v])) };
        let int = |v: i64| -> ArrayRef { Arc::new(Int64Array::from(vec![v])) };
        let batch = ArtifactKind::TrainSummary
            .batch(vec![
                ("topology", Arc::new(StringArray::from(vec![topology]))),
                ("final_val_accuracy", float(0.81)),
                ("final_test_accuracy", float(0.79)),
                ("epochs", Arc::new(Int32Array::from(vec![3]))),
                ("train_samples", int(100)),
                ("val_samples", int(20)),
                ("test_samples", int(20)),
                ("samples_per_second", float(1.0)),
                ("seconds", float(2.0)),
                ("bytes_per_image", float(3072.0)),
            ])
            .unwrap();
        let prov = Provenance::new("train", "-");
        write_artifact(
            &path,
            ArtifactKind::TrainSummary,
            batch.schema().as_ref().clone(),
            &prov,
            &[batch],
        )
        .unwrap();
        path
    }

    #[test]
    fn reads_the_raw_baseline_and_refuses_another_topology() {
        let dir = tempfile::tempdir().unwrap();
        let baseline = read(&summary(dir.path(), "raw")).unwrap();
        assert_eq!(baseline.val_accuracy, 0.81);
        assert_eq!(baseline.test_accuracy, 0.79);
        let e = read(&summary(dir.path(), "fire3-d16"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("train summary of `fire3-d16`") && e.contains("raw-image baseline"),
            "{e}"
        );
    }
}
