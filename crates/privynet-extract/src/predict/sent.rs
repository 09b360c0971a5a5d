//! What crosses from the local half to the cloud half when they run in separate processes: a
//! `features` artifact written with the extract stage's schema and batches (so it reads as a
//! features.parquet does), and read back batch by batch as the cloud receives it. A defended
//! card's features cross as the defend stage writes them: integer codes when quantised, with
//! the encoding in the `privynet.defence` metadata, decoded again on reading.

use std::path::{Path, PathBuf};

use arrow::array::{FixedSizeListArray, Int32Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::Schema;
use ndarray::Array4;

use privynet_core::card::Card;
use privynet_core::defence::{Encoding, METADATA_KEY};
use privynet_core::io::{ArtifactWriter, open_parquet_splits, read_schema};
use privynet_core::{ArtifactKind, Provenance, column};

use crate::ExtractError;
use crate::extract::{features_batch, features_schema, into_values};
use crate::rows::{append_codes, append_floats, codes_batch, codes_schema};

/// One batch as the cloud receives it.
#[derive(Debug, Clone)]
pub(crate) struct Sent {
    pub(crate) ids: Vec<i64>,
    pub(crate) labels: Vec<i32>,
    pub(crate) splits: Vec<String>,
    /// [N, C, H, W], already rounded to the type the card says is sent (and defended, for a
    /// defended card: values as the cloud receives them).
    pub(crate) features: Array4<f32>,
}

/// The features file the local half writes.
pub(crate) struct SentWriter {
    writer: ArtifactWriter,
    card: Card,
}

impl SentWriter {
    /// Opens the file with the metadata a features file carries (shape, preprocessing, the
    /// card's defence; no topology, which the card names only by label).
    pub(crate) fn create(
        path: &Path,
        card: &Card,
        mut provenance: Provenance,
    ) -> Result<Self, ExtractError> {
        let [c, h, w] = card.local.features_shape;
        provenance.set("feature_shape", format!("{c},{h},{w}"));
        provenance.set("topology", "null");
        provenance.set(
            "preprocess",
            serde_json::to_string(&card.local.preprocess).expect("preprocess should serialise"),
        );
        if let Some(e) = &card.local.defence {
            let key = METADATA_KEY.strip_prefix("privynet.");
            provenance.set(key.expect("a privynet key"), e.to_metadata());
        }
        let schema = match quantising(card) {
            Some(_) => codes_schema(c * h * w),
            None => features_schema(c * h * w, card.local.features_dtype),
        };
        let writer = ArtifactWriter::create(path, ArtifactKind::Features, schema, &provenance)?;
        Ok(Self {
            writer,
            card: card.clone(),
        })
    }

    /// Writes a batch; a quantising card's values (decoded codes) are written as their codes.
    pub(crate) fn write(&mut self, sent: Sent) -> Result<(), ExtractError> {
        let [c, h, w] = self.card.local.features_shape;
        let (len, schema) = (c * h * w, self.writer.schema());
        let values = into_values(sent.features);
        let batch = match quantising(&self.card) {
            Some(e) => {
                let mut codes = Vec::with_capacity(values.len());
                for row in values.chunks(len) {
                    e.quantise(row, h * w, &mut codes);
                }
                codes_batch(schema, sent.ids, sent.labels, sent.splits, codes, len)
            }
            None => {
                let dtype = self.card.local.features_dtype;
                features_batch(
                    schema,
                    sent.ids,
                    sent.labels,
                    sent.splits,
                    values,
                    len,
                    dtype,
                )
            }
        };
        Ok(self.writer.write(&batch)?)
    }

    pub(crate) fn finish(self) -> Result<usize, ExtractError> {
        Ok(self.writer.finish()?)
    }
}

/// The card's encoding when it quantises (its features cross as codes).
fn quantising(card: &Card) -> Option<&Encoding> {
    card.local
        .defence
        .as_ref()
        .filter(|e| e.defence.quantised())
}

/// A features file's batches as the cloud receives them.
pub(crate) type SentBatches = Box<dyn Iterator<Item = Result<Sent, ExtractError>>>;

/// An opened features file: its feature shape (C, H, W, from its metadata), its batches, how
/// many rows the reader will read (for progress), and its defence's encoding, if defended.
pub(crate) struct Opened {
    pub(crate) shape: [usize; 3],
    pub(crate) batches: SentBatches,
    pub(crate) total: u64,
    pub(crate) encoding: Option<Encoding>,
}

/// Opens a features file, its batches of the wanted splits (all when empty) decoded to values
/// (codes through the file's encoding).
pub(crate) fn open(
    path: &Path,
    splits: &[String],
    batch_size: usize,
) -> Result<Opened, ExtractError> {
    if path.is_dir() {
        return Err(ExtractError::Input {
            path: path.to_path_buf(),
            message: "is a folder; expected a features .parquet file (from --local-only)".into(),
        });
    }
    let wanted = (!splits.is_empty()).then_some(splits);
    let (_, reader, total) =
        open_parquet_splits(path, ArtifactKind::Features, None, batch_size, wanted)?;
    let schema = read_schema(path)?;
    let shape = feature_shape(&schema, path)?;
    let encoding = Encoding::from_metadata(schema.metadata().get(METADATA_KEY)).map_err(|m| {
        ExtractError::Input {
            path: path.to_path_buf(),
            message: m,
        }
    })?;
    let (path, splits) = (path.to_path_buf(), splits.to_vec());
    let decode = encoding.clone();
    let batches = reader.map(move |b| {
        let b = b.map_err(|e| ExtractError::Input {
            path: path.clone(),
            message: e.to_string(),
        })?;
        to_sent(&b, &path, shape, &splits, decode.as_ref())
    });
    Ok(Opened {
        shape,
        batches: Box::new(batches),
        total,
        encoding,
    })
}

/// The `privynet.feature_shape` metadata of a features file.
fn feature_shape(schema: &Schema, path: &Path) -> Result<[usize; 3], ExtractError> {
    let raw = schema.metadata().get("privynet.feature_shape");
    let parts: Option<Vec<usize>> =
        raw.map(|v| v.split(',').map_while(|p| p.trim().parse().ok()).collect());
    match parts.as_deref() {
        Some(&[c, h, w]) => Ok([c, h, w]),
        _ => Err(ExtractError::Input {
            path: path.to_path_buf(),
            message: format!("metadata `privynet.feature_shape` is {raw:?}, expected C,H,W"),
        }),
    }
}

/// The rows of a features batch in the wanted splits, as the cloud receives them.
fn to_sent(
    b: &RecordBatch,
    path: &Path,
    shape: [usize; 3],
    splits: &[String],
    encoding: Option<&Encoding>,
) -> Result<Sent, ExtractError> {
    let ids = column::<Int64Array>(b, "id", path)?;
    let labels = column::<Int32Array>(b, "label", path)?;
    let split = column::<StringArray>(b, "split", path)?;
    let list = column::<FixedSizeListArray>(b, "features", path)?;
    let len: usize = shape.iter().product();
    if list.value_length() as usize != len {
        return Err(ExtractError::Input {
            path: path.to_path_buf(),
            message: format!(
                "rows hold {} values, but its feature_shape {shape:?} needs {len}",
                list.value_length()
            ),
        });
    }
    let rows: Vec<usize> = (0..b.num_rows())
        .filter(|&r| splits.is_empty() || splits.iter().any(|s| s == split.value(r)))
        .collect();
    let values = row_values(list, &rows, (len, shape[1] * shape[2]), encoding, path)?;
    let features = Array4::from_shape_vec((rows.len(), shape[0], shape[1], shape[2]), values)
        .expect("the rows hold len values each");
    Ok(Sent {
        ids: rows.iter().map(|&r| ids.value(r)).collect(),
        labels: rows.iter().map(|&r| labels.value(r)).collect(),
        splits: rows.iter().map(|&r| split.value(r).to_string()).collect(),
        features,
    })
}

/// The values of `rows` of a float32 or float16 feature column, or of a column of codes
/// decoded through the file's `encoding`, as f32, row after row (`len` values, `plane` per
/// channel).
fn row_values(
    list: &FixedSizeListArray,
    rows: &[usize],
    (len, plane): (usize, usize),
    encoding: Option<&Encoding>,
    path: &Path,
) -> Result<Vec<f32>, ExtractError> {
    let mut out = Vec::with_capacity(rows.len() * len);
    if append_floats(list, rows.iter().copied(), len, &mut out) {
        return Ok(out);
    }
    let mut codes = Vec::with_capacity(rows.len() * len);
    match encoding.filter(|e| e.defence.quantised()) {
        Some(e) if append_codes(list, rows.iter().copied(), len, &mut codes) => {
            e.dequantise(&codes, plane, &mut out);
            Ok(out)
        }
        _ => Err(ExtractError::Input {
            path: PathBuf::from(path),
            message: format!(
                "the features are neither float32 nor float16, nor integer codes with the `{METADATA_KEY}` metadata that decodes them"
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::predict::tests::card;

    #[test]
    fn sent_features_read_back_as_written_in_the_wanted_splits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sent.parquet");
        let card = card([8, 4, 4], 10, 32);
        let mut w = SentWriter::create(&path, &card, Provenance::new("predict", "-")).unwrap();
        let features = Array4::from_shape_fn((3, 8, 4, 4), |(n, c, h, x)| {
            half::f16::from_f32((n * 128 + c * 16 + h * 4 + x) as f32 / 7.0).to_f32()
        });
        let sent = Sent {
            ids: vec![5, 6, 7],
            labels: vec![1, -1, 3],
            splits: vec!["test".into(), "train".into(), "test".into()],
            features: features.clone(),
        };
        w.write(sent).unwrap();
        assert_eq!(w.finish().unwrap(), 3);
        let opened = open(&path, &["test".to_string()], 16).unwrap();
        assert_eq!(opened.shape, [8, 4, 4]);
        assert_eq!(opened.encoding, None);
        let got: Vec<Sent> = opened.batches.collect::<Result<_, _>>().unwrap();
        let ids: Vec<i64> = got.iter().flat_map(|s| s.ids.clone()).collect();
        assert_eq!(ids, vec![5, 7]);
        assert_eq!(got[0].labels, vec![1, 3]);
        assert_eq!(
            got[0].features.index_axis(ndarray::Axis(0), 1),
            features.index_axis(ndarray::Axis(0), 2)
        );
    }
}
