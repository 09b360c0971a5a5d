//! predictions.parquet (`image_predictions`): the cloud half run on each batch as sent,
//! softmax, and the rows written with the counts the report gives (images, those with a
//! known label, those predicted right).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    ArrayRef, FixedSizeListArray, Float32Array, Int32Array, Int64Array, RecordBatch, StringArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use ndarray::Array2;

use privynet_core::card::Card;
use privynet_core::io::ArtifactWriter;
use privynet_core::{ArtifactKind, Provenance};

use super::halves::classify;
use super::sent::Sent;
use crate::ExtractError;
use crate::runtime::Runner;

/// How many images a run saw, how many had a known label, and how many of those it got right.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub images: usize,
    pub labelled: usize,
    pub correct: usize,
}

impl Counts {
    /// Counts the images of a batch, its known labels (not negative) and the right classes.
    pub(crate) fn add(&mut self, labels: &[i32], classes: &[i32]) {
        self.images += labels.len();
        self.labelled += labels.iter().filter(|&&l| l >= 0).count();
        self.correct += labels
            .iter()
            .zip(classes)
            .filter(|(l, c)| **l >= 0 && l == c)
            .count();
    }
}

/// Softmax of each row of logits.
fn softmax(logits: &Array2<f32>) -> Array2<f32> {
    let mut p = logits.clone();
    for mut row in p.rows_mut() {
        let max = row.fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        row.mapv_inplace(|v| (v - max).exp());
        let sum = row.sum();
        row.mapv_inplace(|v| v / sum);
    }
    p
}

/// The schema of predictions.parquet for `classes` classes.
fn schema(classes: usize) -> Schema {
    let item = Arc::new(Field::new("item", DataType::Float32, false));
    Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("split", DataType::Utf8, false),
        Field::new("label", DataType::Int32, false),
        Field::new("class", DataType::Int32, false),
        Field::new("confidence", DataType::Float32, false),
        Field::new(
            "probabilities",
            DataType::FixedSizeList(item, classes as i32),
            false,
        ),
    ])
}

/// Each row's most probable class.
fn best(probs: &Array2<f32>) -> Vec<i32> {
    probs
        .rows()
        .into_iter()
        .map(|r| {
            let best = r.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1));
            best.map_or(0, |(i, _)| i as i32)
        })
        .collect()
}

/// The predictions table of one batch.
fn batch(schema: SchemaRef, sent: Sent, classes: Vec<i32>, probs: &Array2<f32>) -> RecordBatch {
    let confidence: Vec<f32> = probs
        .rows()
        .into_iter()
        .zip(&classes)
        .map(|(r, &c)| r[c as usize])
        .collect();
    let list = FixedSizeListArray::try_new(
        Arc::new(Field::new("item", DataType::Float32, false)),
        probs.ncols() as i32,
        Arc::new(Float32Array::from_iter_values(probs.iter().copied())),
        None,
    )
    .expect("the probabilities hold rows * classes values");
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(sent.ids)),
        Arc::new(StringArray::from(sent.splits)),
        Arc::new(Int32Array::from(sent.labels)),
        Arc::new(Int32Array::from(classes)),
        Arc::new(Float32Array::from(confidence)),
        Arc::new(list),
    ];
    RecordBatch::try_new(schema, columns).expect("columns match the image_predictions schema")
}

/// The cloud half and the predictions file it fills.
pub(crate) struct Predictions {
    writer: ArtifactWriter,
    cloud: Runner,
    cloud_path: PathBuf,
    card: Card,
    pub(crate) counts: Counts,
}

impl Predictions {
    pub(crate) fn create(
        path: &Path,
        (cloud, cloud_path): (Runner, PathBuf),
        card: &Card,
        provenance: &Provenance,
    ) -> Result<Self, ExtractError> {
        let writer = ArtifactWriter::create(
            path,
            ArtifactKind::ImagePredictions,
            schema(card.cloud.classes),
            provenance,
        )?;
        Ok(Self {
            writer,
            cloud,
            cloud_path,
            card: card.clone(),
            counts: Counts::default(),
        })
    }

    /// Classifies a batch as sent and writes its rows.
    pub(crate) fn add(&mut self, sent: Sent) -> Result<(), ExtractError> {
        let logits = classify(
            &mut self.cloud,
            &sent.features,
            &self.card,
            &self.cloud_path,
        )?;
        let probs = softmax(&logits);
        let classes = best(&probs);
        self.counts.add(&sent.labels, &classes);
        let out = batch(self.writer.schema(), sent, classes, &probs);
        Ok(self.writer.write(&out)?)
    }

    /// Puts the file in place.
    pub(crate) fn finish(self) -> Result<Counts, ExtractError> {
        self.writer.finish()?;
        Ok(self.counts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accuracy_counts_only_the_known_labels() {
        let mut c = Counts::default();
        c.add(&[0, -1, 2, 1], &[0, 0, 1, 1]);
        assert_eq!(
            c,
            Counts {
                images: 4,
                labelled: 3,
                correct: 2
            }
        );
    }

    #[test]
    fn softmax_rows_sum_to_one() {
        let p = softmax(&Array2::from_shape_vec((1, 3), vec![1.0, 2.0, 3.0]).unwrap());
        assert!((p.sum() - 1.0).abs() < 1e-6);
        assert_eq!(best(&p), vec![2]);
    }
}
