//! Features (or raw images, for the no-privacy baseline) held in memory as flat f32 arrays per
//! split, checked for non-finite values and out-of-range labels.

use std::borrow::Cow;
use std::path::Path;

use arrow::array::{
    Array, FixedSizeListArray, Float32Array, Int32Array, Int64Array, StringArray, UInt8Array,
};

use arrow::datatypes::Schema;
use privynet_core::defence::{Encoding, METADATA_KEY};
use privynet_core::io::{dataset_parts, open_parquet_splits, read_schema};
use privynet_core::{ArtifactKind, column};

use crate::NnError;

/// One split in memory: row-major samples of `len` values.
#[derive(Debug, Clone, Default)]
pub struct Split {
    pub ids: Vec<i64>,
    pub labels: Vec<i32>,
    pub x: Vec<f32>,
}

impl Split {
    pub fn len(&self) -> usize {
        self.ids.len()
    }
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// A dataset of samples of shape `[c, h, w]`, by split name.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub shape: [usize; 3],
    pub splits: std::collections::BTreeMap<String, Split>,
}

impl Dataset {
    /// The split of that name, or an error naming the file and the split.
    pub fn split(&self, path: &Path, name: &str) -> Result<&Split, NnError> {
        match self.splits.get(name) {
            Some(s) if !s.is_empty() => Ok(s),
            _ => Err(NnError::Data {
                path: path.to_path_buf(),
                message: format!("the `{name}` split is empty"),
            }),
        }
    }
}

fn parse_shape(path: &Path, v: Option<&String>) -> Result<[usize; 3], NnError> {
    let bad = || NnError::Data {
        path: path.to_path_buf(),
        message: "metadata `privynet.feature_shape` is missing or not C,H,W".into(),
    };
    let parts: Vec<usize> = v
        .ok_or_else(bad)?
        .split(',')
        .map(|p| p.trim().parse().map_err(|_| bad()))
        .collect::<Result<_, _>>()?;
    match parts.as_slice() {
        [c, h, w] => Ok([*c, *h, *w]),
        _ => Err(bad()),
    }
}

/// The defence encoding a features file (or the first part of a folder of parts) carries in
/// its `privynet.defence` metadata; `None` for an undefended file. Reads the schema only.
pub fn features_encoding(path: &Path) -> Result<Option<Encoding>, NnError> {
    let parts = dataset_parts(path)?;
    encoding_of(&parts[0], read_schema(&parts[0])?.as_ref())
}

/// The encoding in a part's metadata, an unreadable one an error naming the part.
fn encoding_of(part: &Path, schema: &Schema) -> Result<Option<Encoding>, NnError> {
    Encoding::from_metadata(schema.metadata().get(METADATA_KEY)).map_err(|message| NnError::Data {
        path: part.to_path_buf(),
        message,
    })
}

/// Loads the given splits of a features file or folder of parts. Integer codes (a quantising
/// defence) are decoded to values through the encoding in each part's metadata, so training
/// and attacks see what the cloud can reconstruct.
pub fn load_features(path: &Path, splits: &[&str], classes: usize) -> Result<Dataset, NnError> {
    let parts = dataset_parts(path)?;
    let shape = parse_shape(
        path,
        read_schema(&parts[0])?
            .metadata()
            .get("privynet.feature_shape"),
    )?;
    let mut out: std::collections::BTreeMap<String, Split> = splits
        .iter()
        .map(|s| (s.to_string(), Split::default()))
        .collect();
    let mut bad_rows = Vec::new();
    for part in &parts {
        load_part(part, shape, classes, &mut out, &mut bad_rows)?;
    }
    if !bad_rows.is_empty() {
        let shown: Vec<String> = bad_rows.iter().take(10).map(i64::to_string).collect();
        return Err(NnError::Data {
            path: path.to_path_buf(),
            message: format!(
                "{} rows hold NaN or infinite features (ids {}{}); refusing to train on them",
                bad_rows.len(),
                shown.join(", "),
                if bad_rows.len() > 10 { ", ..." } else { "" }
            ),
        });
    }
    Ok(Dataset { shape, splits: out })
}

/// Adds the rows of one part that belong to the splits of `out`; the ids of rows with NaN or
/// infinite values go to `bad_rows` instead.
fn load_part(
    part: &Path,
    shape: [usize; 3],
    classes: usize,
    out: &mut std::collections::BTreeMap<String, Split>,
    bad_rows: &mut Vec<i64>,
) -> Result<(), NnError> {
    let len = shape.iter().product::<usize>();
    let wanted: Vec<String> = out.keys().cloned().collect();
    let (schema, reader, _) =
        open_parquet_splits(part, ArtifactKind::Features, None, 4096, Some(&wanted))?;
    let encoding = encoding_of(part, &schema)?;
    if let Some(e) = &encoding {
        check_encoding(part, e, shape[0])?;
    }
    for b in reader {
        let b = b.map_err(|e| NnError::Data {
            path: part.to_path_buf(),
            message: e.to_string(),
        })?;
        let ids = column::<Int64Array>(&b, "id", part)?;
        let labels = column::<Int32Array>(&b, "label", part)?;
        let split = column::<StringArray>(&b, "split", part)?;
        let list = column::<FixedSizeListArray>(&b, "features", part)?;
        if list.value_length() as usize != len {
            return Err(NnError::Data {
                path: part.to_path_buf(),
                message: format!(
                    "rows hold {} values, the feature shape {shape:?} needs {len}",
                    list.value_length()
                ),
            });
        }
        let values = batch_values(part, list, encoding.as_ref(), shape[1] * shape[2])?;
        for r in 0..b.num_rows() {
            let Some(s) = out.get_mut(split.value(r)) else {
                continue;
            };
            let label = check_label(part, ids.value(r), labels.value(r), classes)?;
            let row = &values[r * len..(r + 1) * len];
            if row.iter().any(|v| !v.is_finite()) {
                bad_rows.push(ids.value(r));
                continue;
            }
            s.ids.push(ids.value(r));
            s.labels.push(label);
            s.x.extend_from_slice(row);
        }
    }
    Ok(())
}

/// A quantising encoding must give a scale and an offset for each of the `channels` channels:
/// decoding would otherwise reuse another channel's.
fn check_encoding(part: &Path, e: &Encoding, channels: usize) -> Result<(), NnError> {
    if e.defence.quantised() && (e.scale.len() != channels || e.offset.len() != channels) {
        return Err(NnError::Data {
            path: part.to_path_buf(),
            message: format!(
                "`{METADATA_KEY}` gives {} scales and {} offsets for {channels} channels",
                e.scale.len(),
                e.offset.len()
            ),
        });
    }
    Ok(())
}

/// A batch's feature values, rows back to back: float32 as stored, or uint8 codes decoded
/// (offset + code x scale per channel) through the part's encoding.
fn batch_values<'a>(
    part: &Path,
    list: &'a FixedSizeListArray,
    encoding: Option<&Encoding>,
    plane: usize,
) -> Result<Cow<'a, [f32]>, NnError> {
    let bad = |message: String| NnError::Data {
        path: part.to_path_buf(),
        message,
    };
    let values = list.values().as_any();
    if let Some(v) = values.downcast_ref::<Float32Array>() {
        return Ok(Cow::Borrowed(v.values()));
    }
    let Some(codes) = values.downcast_ref::<UInt8Array>() else {
        return Err(bad(format!(
            "features are {}, expected float32 values or uint8 codes",
            list.value_type()
        )));
    };
    match encoding {
        Some(e) if e.defence.quantised() => {
            let mut out = Vec::with_capacity(codes.len());
            e.dequantise(codes.values(), plane, &mut out);
            Ok(Cow::Owned(out))
        }
        Some(e) => Err(bad(format!(
            "features are integer codes but `{METADATA_KEY}` says {} bits (no quantisation)",
            e.defence.bits
        ))),
        None => Err(bad(format!(
            "features are integer codes without {METADATA_KEY} metadata to decode them"
        ))),
    }
}

/// Loads raw images as [3, H, W] floats in [0, 1] (RGB), for the no-privacy baseline.
pub fn load_images(path: &Path, splits: &[&str], classes: usize) -> Result<Dataset, NnError> {
    let wanted: Vec<String> = splits.iter().map(|s| s.to_string()).collect();
    let (schema, reader, _) =
        open_parquet_splits(path, ArtifactKind::Images, None, 4096, Some(&wanted))?;
    let dims: Vec<usize> = schema
        .metadata()
        .get("privynet.image_shape")
        .map(|s| s.split(',').filter_map(|p| p.trim().parse().ok()).collect())
        .unwrap_or_default();
    let [h, w, _] = dims[..] else {
        return Err(NnError::Data {
            path: path.to_path_buf(),
            message: "metadata `privynet.image_shape` is missing".into(),
        });
    };
    let mut out: std::collections::BTreeMap<String, Split> = splits
        .iter()
        .map(|s| (s.to_string(), Split::default()))
        .collect();
    for b in reader {
        let b = b.map_err(|e| NnError::Data {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let ids = column::<Int64Array>(&b, "id", path)?;
        let labels = column::<Int32Array>(&b, "label", path)?;
        let split = column::<StringArray>(&b, "split", path)?;
        let px = column::<FixedSizeListArray>(&b, "pixels", path)?;
        for r in 0..b.num_rows() {
            let Some(s) = out.get_mut(split.value(r)) else {
                continue;
            };
            let label = check_label(path, ids.value(r), labels.value(r), classes)?;
            let v = px.value(r);
            let v = v
                .as_any()
                .downcast_ref::<UInt8Array>()
                .expect("checked u8 pixels");
            s.ids.push(ids.value(r));
            s.labels.push(label);
            // HWC to CHW.
            for c in 0..3 {
                for p in 0..h * w {
                    s.x.push(f32::from(v.value(p * 3 + c)) / 255.0);
                }
            }
        }
    }
    Ok(Dataset {
        shape: [3, h, w],
        splits: out,
    })
}

/// A label within `0..classes`, or an error naming the row's id.
fn check_label(path: &Path, id: i64, label: i32, classes: usize) -> Result<i32, NnError> {
    if label < 0 || label as usize >= classes {
        return Err(NnError::Data {
            path: path.to_path_buf(),
            message: format!("row with id {id} has label {label}, outside 0..{classes}"),
        });
    }
    Ok(label)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::RecordBatch;
    use arrow::datatypes::{DataType, Field, Schema};
    use privynet_core::Provenance;
    use privynet_core::defence::Defence;
    use privynet_core::io::write_artifact;

    use super::*;

    /// Writes features of shape 2,2,1 held as uint8 codes, one train row per entry of `rows`,
    /// with `privynet.defence` set to `defence` when given.
    fn write_codes(path: &Path, rows: &[[u8; 4]], defence: Option<&str>) {
        let item = Arc::new(Field::new("item", DataType::UInt8, false));
        let codes = UInt8Array::from(rows.concat());
        let list = FixedSizeListArray::new(item.clone(), 4, Arc::new(codes), None);
        let schema = Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("label", DataType::Int32, false),
            Field::new("split", DataType::Utf8, false),
            Field::new("features", DataType::FixedSizeList(item, 4), false),
        ]);
        let n = rows.len();
        let columns: Vec<arrow::array::ArrayRef> = vec![
            Arc::new(Int64Array::from_iter_values(0..n as i64)),
            Arc::new(Int32Array::from(vec![1; n])),
            Arc::new(StringArray::from(vec!["train"; n])),
            Arc::new(list),
        ];
        let batch = RecordBatch::try_new(Arc::new(schema.clone()), columns).unwrap();
        let mut prov = Provenance::new("defend", "-");
        prov.set("feature_shape", "2,2,1");
        prov.set("topology", "null");
        prov.set("preprocess", "null");
        if let Some(d) = defence {
            prov.set("defence", d);
        }
        write_artifact(path, ArtifactKind::Features, schema, &prov, &[batch]).unwrap();
    }

    fn eight_bits() -> Encoding {
        Encoding {
            defence: Defence::new(0.25, 8).unwrap(),
            sigma: vec![0.1, 0.2],
            scale: vec![0.5, 2.0],
            offset: vec![-1.0, 10.0],
        }
    }

    #[test]
    fn integer_codes_are_decoded_through_the_files_encoding() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("features.parquet");
        let e = eight_bits();
        write_codes(
            &path,
            &[[0, 2, 1, 3], [255, 1, 0, 0]],
            Some(&e.to_metadata()),
        );
        assert_eq!(features_encoding(&path).unwrap(), Some(e));
        let d = load_features(&path, &["train"], 2).unwrap();
        assert_eq!(d.shape, [2, 2, 1]);
        let train = &d.splits["train"];
        assert_eq!(train.ids, [0, 1]);
        // Channel 0: -1 + code x 0.5; channel 1: 10 + code x 2.
        assert_eq!(train.x, [-1.0, 0.0, 12.0, 16.0, 126.5, -0.5, 10.0, 10.0]);
    }

    #[test]
    fn integer_codes_need_a_readable_encoding() {
        let dir = tempfile::tempdir().unwrap();
        let bare = dir.path().join("bare.parquet");
        write_codes(&bare, &[[0, 1, 2, 3]], None);
        assert_eq!(features_encoding(&bare).unwrap(), None);
        let e = load_features(&bare, &["train"], 2).unwrap_err().to_string();
        assert!(e.starts_with(&bare.display().to_string()), "{e}");
        assert!(e.contains("integer codes without privynet.defence"), "{e}");
        let garbled = dir.path().join("garbled.parquet");
        write_codes(&garbled, &[[0, 1, 2, 3]], Some("{not json"));
        for e in [
            features_encoding(&garbled).unwrap_err(),
            load_features(&garbled, &["train"], 2).unwrap_err(),
        ] {
            let e = e.to_string();
            assert!(e.starts_with(&garbled.display().to_string()), "{e}");
            assert!(e.contains("is not an encoding"), "{e}");
        }
        // An encoding for another channel count would decode with the wrong channel's scale.
        let mut one = eight_bits();
        one.scale.pop();
        one.offset.pop();
        let short = dir.path().join("short.parquet");
        write_codes(&short, &[[0, 1, 2, 3]], Some(&one.to_metadata()));
        let e = load_features(&short, &["train"], 2)
            .unwrap_err()
            .to_string();
        assert!(e.contains("1 scales and 1 offsets for 2 channels"), "{e}");
    }
}
