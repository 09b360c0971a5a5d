//! Features (or raw images, for the no-privacy baseline) held in memory as flat f32 arrays per
//! split, checked for non-finite values and out-of-range labels.

use std::path::Path;

use arrow::array::{
    Array, FixedSizeListArray, Float32Array, Int32Array, Int64Array, StringArray, UInt8Array,
};

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

/// Loads the given splits of a features file or folder of parts.
pub fn load_features(path: &Path, splits: &[&str], classes: usize) -> Result<Dataset, NnError> {
    let parts = dataset_parts(path)?;
    let shape = parse_shape(
        path,
        read_schema(&parts[0])?
            .metadata()
            .get("privynet.feature_shape"),
    )?;
    let len = shape.iter().product::<usize>();
    let mut out: std::collections::BTreeMap<String, Split> = splits
        .iter()
        .map(|s| (s.to_string(), Split::default()))
        .collect();
    let mut bad_rows = Vec::new();
    for part in &parts {
        let wanted: Vec<String> = splits.iter().map(|s| s.to_string()).collect();
        let (_, reader, _) =
            open_parquet_splits(part, ArtifactKind::Features, None, 4096, Some(&wanted))?;
        for b in reader {
            let b = b.map_err(|e| NnError::Data {
                path: part.clone(),
                message: e.to_string(),
            })?;
            let ids = column::<Int64Array>(&b, "id", part)?;
            let labels = column::<Int32Array>(&b, "label", part)?;
            let split = column::<StringArray>(&b, "split", part)?;
            let list = column::<FixedSizeListArray>(&b, "features", part)?;
            if list.value_length() as usize != len {
                return Err(NnError::Data {
                    path: part.clone(),
                    message: format!(
                        "rows hold {} values, the feature shape {shape:?} needs {len}",
                        list.value_length()
                    ),
                });
            }
            let values = list
                .values()
                .as_any()
                .downcast_ref::<Float32Array>()
                .ok_or_else(|| NnError::Data {
                    path: part.clone(),
                    message: "features are not float32".into(),
                })?;
            for r in 0..b.num_rows() {
                let Some(s) = out.get_mut(split.value(r)) else {
                    continue;
                };
                let label = check_label(part, ids.value(r), labels.value(r), classes)?;
                let row = &values.values()[r * len..(r + 1) * len];
                if row.iter().any(|v| !v.is_finite()) {
                    bad_rows.push(ids.value(r));
                    continue;
                }
                s.ids.push(ids.value(r));
                s.labels.push(label);
                s.x.extend_from_slice(row);
            }
        }
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
