//! Deriving a narrower channel count from a wider extraction at the same cut. Selections are
//! prefixes of one seeded ordering (see privynet-slice's `select`), so the first D channels of
//! the wide features are exactly the D-channel local network's output, and in CHW layout those
//! are the first D*H*W values of each row. The prefix property is checked, never assumed.

use std::path::Path;

use arrow::array::{Array, FixedSizeListArray, Int32Array, Int64Array, RecordBatch, StringArray};

use privynet_core::io::{ArtifactWriter, dataset_parts, open_parquet, read_schema};
use privynet_core::manifest::FeatureDtype;
use privynet_core::{ArtifactKind, Provenance, Topology, column};

use crate::ExtractError;
use crate::extract::{features_batch, features_schema};
use crate::rows::{Stored, append_floats, stored};

/// Writes the features of `narrow` (a prefix selection) from the wide features.
pub fn derive(
    wide: &Path,
    wide_selection: &[i64],
    narrow_selection: &[i64],
    narrow: &Topology,
    output: &Path,
    provenance: Provenance,
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
    // Values per row of the wide features: the same H*W per channel.
    let wide_len = wide_selection.len() * (len / d);
    let parts = dataset_parts(wide)?;
    let (mut w, dtype) = open_writer(wide, &parts[0], narrow, output, provenance)?;
    for part in parts {
        let (_, reader) = open_parquet(&part, ArtifactKind::Features, None, 1024)?;
        for b in reader {
            let b = b.map_err(|e| ExtractError::Input {
                path: part.clone(),
                message: e.to_string(),
            })?;
            let out = narrow_batch(&b, &part, &w, wide_len, wide_selection.len(), len, dtype)?;
            w.write(&out)?;
        }
    }
    Ok(w.finish()?)
}

/// The narrow features' writer, with the wide features' preprocessing and storage type and the
/// narrow topology in its provenance.
fn open_writer(
    wide: &Path,
    first_part: &Path,
    narrow: &Topology,
    output: &Path,
    mut provenance: Provenance,
) -> Result<(ArtifactWriter, FeatureDtype), ExtractError> {
    let schema0 = read_schema(first_part)?;
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
    let dtype = match stored(&schema0) {
        Some(Stored::Float(dtype)) => dtype,
        _ => {
            return Err(ExtractError::Input {
                path: wide.to_path_buf(),
                message: "holds no float features (integer codes of a defence?); derive narrower features from an undefended extraction".into(),
            });
        }
    };
    let len = (narrow.channels * narrow.height * narrow.width) as usize;
    let w = ArtifactWriter::create(
        output,
        ArtifactKind::Features,
        features_schema(len, dtype),
        &provenance,
    )?;
    Ok((w, dtype))
}

/// One batch of wide features cut to the first `len` values of each row.
fn narrow_batch(
    b: &RecordBatch,
    part: &Path,
    w: &ArtifactWriter,
    wide_len: usize,
    wide_channels: usize,
    len: usize,
    dtype: FeatureDtype,
) -> Result<RecordBatch, ExtractError> {
    let list = column::<FixedSizeListArray>(b, "features", part)?;
    let row_len = list.value_length() as usize;
    if row_len != wide_len {
        return Err(ExtractError::Input {
            path: part.to_path_buf(),
            message: format!(
                "rows hold {row_len} values, expected {wide_len} for the {wide_channels}-channel selection"
            ),
        });
    }
    let mut values = Vec::with_capacity(b.num_rows() * len);
    // A part that holds codes (a defended file among float parts) is named, not misread.
    if !append_floats(list, 0..b.num_rows(), len, &mut values) {
        return Err(ExtractError::Input {
            path: part.to_path_buf(),
            message: "the features are neither float32 nor float16".into(),
        });
    }
    let ids = column::<Int64Array>(b, "id", part)?;
    let labels = column::<Int32Array>(b, "label", part)?;
    let splits = column::<StringArray>(b, "split", part)?;
    Ok(features_batch(
        w.schema(),
        ids.values().to_vec(),
        labels.values().to_vec(),
        (0..splits.len())
            .map(|i| splits.value(i).to_string())
            .collect(),
        values,
        len,
        dtype,
    ))
}
