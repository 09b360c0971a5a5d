//! Deriving a narrower channel count from a wider extraction at the same cut. Selections are
//! prefixes of one seeded ordering (see privynet-slice's `select`), so the first D channels of
//! the wide features are exactly the D-channel local network's output, and in CHW layout those
//! are the first D*H*W values of each row. The prefix property is checked, never assumed.

use std::path::Path;

use arrow::array::{
    Array, FixedSizeListArray, Float16Array, Float32Array, Int32Array, Int64Array, StringArray,
};

use privynet_core::io::{ArtifactWriter, dataset_parts, open_parquet, read_schema};
use privynet_core::manifest::FeatureDtype;
use privynet_core::{ArtifactKind, Provenance, Topology};

use crate::ExtractError;
use crate::extract::{features_batch, features_schema};

/// Writes the features of `narrow` (a prefix selection) from the wide features.
pub fn derive(
    wide: &Path,
    wide_selection: &[i64],
    narrow_selection: &[i64],
    narrow: &Topology,
    output: &Path,
    mut provenance: Provenance,
) -> Result<usize, ExtractError> {
    let d = narrow_selection.len();
    if d > wide_selection.len() || wide_selection[..d] != *narrow_selection {
        return Err(ExtractError::Input {
            path: wide.to_path_buf(),
            message: format!(
                "the {d}-channel selection is not a prefix of the {}-channel selection these features were made with; derive only works for nested selections (same seed and method); run extract for this topology instead",
                wide_selection.len()
            ),
        });
    }
    let len = (narrow.channels * narrow.height * narrow.width) as usize;
    let parts = dataset_parts(wide)?;
    let schema0 = read_schema(&parts[0])?;
    let meta = schema0.metadata();
    for key in ["preprocess"] {
        if let Some(v) = meta.get(&format!("privynet.{key}")) {
            provenance.set(key, v.clone());
        }
    }
    provenance.set(
        "topology",
        serde_json::to_string(narrow).expect("a topology should serialise"),
    );
    provenance.set(
        "feature_shape",
        format!("{},{},{}", narrow.channels, narrow.height, narrow.width),
    );
    provenance.add_input(wide)?;
    let dtype = match schema0
        .field_with_name("features")
        .map(|f| f.data_type().clone())
    {
        Ok(arrow::datatypes::DataType::FixedSizeList(item, _))
            if *item.data_type() == arrow::datatypes::DataType::Float16 =>
        {
            FeatureDtype::Float16
        }
        _ => FeatureDtype::Float32,
    };
    let mut w = ArtifactWriter::create(
        output,
        ArtifactKind::Features,
        features_schema(len, dtype),
        &provenance,
    )?;
    for part in parts {
        let (_, reader) = open_parquet(&part, ArtifactKind::Features, None, 1024)?;
        for b in reader {
            let b = b.map_err(|e| ExtractError::Input {
                path: part.clone(),
                message: e.to_string(),
            })?;
            let list = b
                .column_by_name("features")
                .and_then(|c| c.as_any().downcast_ref::<FixedSizeListArray>())
                .expect("checked features");
            let wide_len = list.value_length() as usize;
            if wide_len != wide_selection.len() * (len / d) {
                return Err(ExtractError::Input {
                    path: part.clone(),
                    message: format!(
                        "rows hold {wide_len} values, expected {} for the {}-channel selection",
                        wide_selection.len() * (len / d),
                        wide_selection.len()
                    ),
                });
            }
            let mut values = Vec::with_capacity(b.num_rows() * len);
            let flat = list.values();
            if let Some(f) = flat.as_any().downcast_ref::<Float32Array>() {
                for r in 0..b.num_rows() {
                    let o = r * wide_len;
                    values.extend_from_slice(&f.values()[o..o + len]);
                }
            } else if let Some(f) = flat.as_any().downcast_ref::<Float16Array>() {
                for r in 0..b.num_rows() {
                    let o = r * wide_len;
                    values.extend(f.values()[o..o + len].iter().map(|v| v.to_f32()));
                }
            }
            let ids = b
                .column_by_name("id")
                .and_then(|c| c.as_any().downcast_ref::<Int64Array>())
                .expect("checked");
            let labels = b
                .column_by_name("label")
                .and_then(|c| c.as_any().downcast_ref::<Int32Array>())
                .expect("checked");
            let splits = b
                .column_by_name("split")
                .and_then(|c| c.as_any().downcast_ref::<StringArray>())
                .expect("checked");
            let out = features_batch(
                w.schema(),
                ids.values().to_vec(),
                labels.values().to_vec(),
                (0..splits.len())
                    .map(|i| splits.value(i).to_string())
                    .collect(),
                values,
                len,
                dtype,
            );
            w.write(&out)?;
        }
    }
    Ok(w.finish()?)
}
