//! The streaming extraction loop: image batches in, ONNX Runtime, feature row groups out. Only
//! one batch of images and features is held at a time, so memory does not grow with the number
//! of images.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{
    Array, ArrayRef, FixedSizeListArray, Float16Array, Float32Array, Int32Array, Int64Array,
    RecordBatch, StringArray,
};
use arrow::datatypes::{DataType, Field, Schema};
use ndarray::ArrayView4;

use privynet_core::io::{ArtifactWriter, open_parquet, open_parquet_splits};
use privynet_core::manifest::{FeatureDtype, Preprocess};
use privynet_core::{ArtifactKind, Provenance, Topology, column};

use crate::ExtractError;
use crate::preprocess::preprocess_into;
use crate::runtime::Runner;

/// Everything one extraction needs.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ExtractConfig {
    pub images: PathBuf,
    pub model: PathBuf,
    pub output: PathBuf,
    /// The topology the local network implements; its shape is checked against the output.
    pub topology: Option<Topology>,
    pub preprocess: Preprocess,
    pub input_size: u32,
    pub splits: Vec<String>,
    pub batch_size: usize,
    pub dtype: FeatureDtype,
    pub threads: Option<usize>,
    /// `(k, n)`: keep only the rows whose id is k modulo n.
    pub shard: Option<(u64, u64)>,
}

/// Parses `--shard K/N` (keep the rows whose id is K modulo N).
pub fn parse_shard(s: &str) -> Result<(u64, u64), String> {
    let (k, n) = s.split_once('/').ok_or("expected K/N, e.g. 0/4")?;
    let k: u64 = k.trim().parse().map_err(|_| "K is not a number")?;
    let n: u64 = n.trim().parse().map_err(|_| "N is not a number")?;
    if n == 0 || k >= n {
        return Err(format!("shard {k}/{n}: expected 0 <= K < N"));
    }
    Ok((k, n))
}

/// What an extraction did.
#[derive(Debug, Clone)]
pub struct ExtractReport {
    pub rows: usize,
    pub shape: [usize; 3],
    pub seconds: f64,
}

/// The `features` Arrow schema for feature vectors of `len` values.
pub fn features_schema(len: usize, dtype: FeatureDtype) -> Schema {
    let item = match dtype {
        FeatureDtype::Float32 => DataType::Float32,
        FeatureDtype::Float16 => DataType::Float16,
    };
    Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("label", DataType::Int32, false),
        Field::new("split", DataType::Utf8, false),
        Field::new(
            "features",
            DataType::FixedSizeList(Arc::new(Field::new("item", item, false)), len as i32),
            false,
        ),
    ])
}

/// A network output [N, C, H, W] as its row-major values, moved without a copy when it is
/// already laid out that way (as `Runner::run`'s outputs are).
pub fn into_values(y: ndarray::Array4<f32>) -> Vec<f32> {
    if !y.is_standard_layout() {
        return y.iter().copied().collect();
    }
    let n = y.len();
    let (v, offset) = y.into_raw_vec_and_offset();
    match offset {
        Some(0) if v.len() == n => v,
        o => v[o.unwrap_or(0)..][..n].to_vec(),
    }
}

/// Builds a features batch from ids, labels, splits and the flat values (rows x len).
pub fn features_batch(
    schema: arrow::datatypes::SchemaRef,
    ids: Vec<i64>,
    labels: Vec<i32>,
    splits: Vec<String>,
    values: Vec<f32>,
    len: usize,
    dtype: FeatureDtype,
) -> RecordBatch {
    let (item, array): (DataType, ArrayRef) = match dtype {
        FeatureDtype::Float32 => (DataType::Float32, Arc::new(Float32Array::from(values))),
        FeatureDtype::Float16 => (
            DataType::Float16,
            Arc::new(Float16Array::from_iter_values(
                values.into_iter().map(half::f16::from_f32),
            )),
        ),
    };
    crate::rows::list_batch(schema, ids, labels, splits, item, array, len)
}

/// Preprocesses the images of `rows` of an images batch into `input` (NCHW, resized to
/// `size`); an image that cannot be preprocessed is named by its id.
fn fill_input(
    batch: &RecordBatch,
    rows: &[usize],
    preprocess: &Preprocess,
    size: u32,
    input: &mut Vec<f32>,
    path: &Path,
) -> Result<(), ExtractError> {
    let per_image = 3 * (size * size) as usize;
    // `id` is absent when the caller projected it away (channel scoring).
    let ids = column::<Int64Array>(batch, "id", path).ok();
    let hs = column::<Int32Array>(batch, "height", path)?;
    let ws = column::<Int32Array>(batch, "width", path)?;
    let pixels = column::<FixedSizeListArray>(batch, "pixels", path)?;
    input.clear();
    input.resize(rows.len() * per_image, 0.0);
    for (i, &r) in rows.iter().enumerate() {
        let px = pixels.value(r);
        let px = px
            .as_any()
            .downcast_ref::<arrow::array::UInt8Array>()
            .expect("a checked images file has u8 pixels");
        preprocess_into(
            px.values(),
            hs.value(r) as u32,
            ws.value(r) as u32,
            preprocess,
            size,
            &mut input[i * per_image..(i + 1) * per_image],
        )
        .map_err(|e| ExtractError::Input {
            path: path.to_path_buf(),
            message: match ids {
                Some(ids) => format!("image id {}: {e}", ids.value(r)),
                None => e.to_string(),
            },
        })?;
    }
    Ok(())
}

/// One batch of images, filtered to the wanted rows and preprocessed into the network's input.
pub(crate) struct Prepared {
    pub(crate) ids: Vec<i64>,
    pub(crate) labels: Vec<i32>,
    pub(crate) splits: Vec<String>,
    pub(crate) input: Vec<f32>,
    /// Rows read from the images file (for progress), kept or not.
    pub(crate) read: usize,
}

/// The rows of `batch` in the wanted splits (every row when `cfg.splits` is empty) and shard,
/// preprocessed.
pub(crate) fn prepare(
    cfg: &ExtractConfig,
    batch: Result<RecordBatch, arrow::error::ArrowError>,
) -> Result<Prepared, ExtractError> {
    let batch = batch.map_err(|e| ExtractError::Input {
        path: cfg.images.clone(),
        message: e.to_string(),
    })?;
    let ids = column::<Int64Array>(&batch, "id", &cfg.images)?;
    let labels = column::<Int32Array>(&batch, "label", &cfg.images)?;
    let split = column::<StringArray>(&batch, "split", &cfg.images)?;
    let rows: Vec<usize> = (0..batch.num_rows())
        .filter(|&r| cfg.splits.is_empty() || cfg.splits.iter().any(|s| s == split.value(r)))
        .filter(|&r| {
            cfg.shard
                .is_none_or(|(k, n)| (ids.value(r) as u64) % n == k)
        })
        .collect();
    let mut input = Vec::new();
    if !rows.is_empty() {
        fill_input(
            &batch,
            &rows,
            &cfg.preprocess,
            cfg.input_size,
            &mut input,
            &cfg.images,
        )?;
    }
    Ok(Prepared {
        ids: rows.iter().map(|&r| ids.value(r)).collect(),
        labels: rows.iter().map(|&r| labels.value(r)).collect(),
        splits: rows.iter().map(|&r| split.value(r).to_string()).collect(),
        input,
        read: batch.num_rows(),
    })
}

/// Runs the local network over the chosen splits of `images.parquet` and writes `features.parquet`.
pub fn extract(
    cfg: &ExtractConfig,
    mut provenance: Provenance,
) -> Result<ExtractReport, ExtractError> {
    let start = Instant::now();
    let mut runner = Runner::open(&cfg.model, crate::FEATURES_OUTPUT, cfg.threads)?;
    let (_, reader, total) = open_parquet_splits(
        &cfg.images,
        ArtifactKind::Images,
        Some(&["id", "label", "split", "height", "width", "pixels"]),
        cfg.batch_size,
        Some(&cfg.splits),
    )?;
    let bar = privynet_core::logging::progress(total, "images");
    bar.set_message("extract");
    provenance.add_input(&cfg.images)?;
    provenance.add_input(&cfg.model)?;
    provenance.set(
        "preprocess",
        serde_json::to_string(&cfg.preprocess).expect("preprocess should serialise"),
    );
    provenance.set(
        "topology",
        serde_json::to_string(&cfg.topology).expect("a topology should serialise"),
    );
    let size = cfg.input_size as usize;
    let mut writer: Option<(ArtifactWriter, [usize; 3])> = None;
    // Reading and preprocessing run on their own thread, one batch ahead of the network, and
    // the writer encodes row groups on worker threads: each core is kept busy with whichever
    // part is ready instead of the three taking turns.
    std::thread::scope(|scope| -> Result<(), ExtractError> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Result<Prepared, ExtractError>>(2);
        let bar = &bar;
        scope.spawn(move || {
            for batch in reader {
                let prepared = prepare(cfg, batch);
                if let Ok(p) = &prepared {
                    bar.inc(p.read as u64);
                }
                let failed = prepared.is_err();
                if tx.send(prepared).is_err() || failed {
                    break;
                }
            }
        });
        for prepared in rx {
            let p = prepared?;
            if p.ids.is_empty() {
                continue;
            }
            let x = ArrayView4::from_shape((p.ids.len(), 3, size, size), &p.input)
                .expect("the input buffer should have the batch's shape");
            let y = runner.run(x)?;
            let shape = [y.shape()[1], y.shape()[2], y.shape()[3]];
            let len = shape.iter().product::<usize>();
            if writer.is_none() {
                writer = Some((open_writer(cfg, shape, &mut provenance)?, shape));
            }
            let (w, _) = writer.as_mut().expect("the writer was just created");
            let values = into_values(y);
            let out = features_batch(
                w.schema(),
                p.ids,
                p.labels,
                p.splits,
                values,
                len,
                cfg.dtype,
            );
            w.write(&out)?;
        }
        Ok(())
    })?;
    bar.finish_and_clear();
    let Some((w, shape)) = writer else {
        return Err(no_images(cfg));
    };
    let rows = w.finish()?;
    Ok(ExtractReport {
        rows,
        shape,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// The features writer, once the network's first output gives the feature shape: checked
/// against the topology, and recorded in the provenance.
fn open_writer(
    cfg: &ExtractConfig,
    shape: [usize; 3],
    provenance: &mut Provenance,
) -> Result<ArtifactWriter, ExtractError> {
    if let Some(t) = &cfg.topology {
        let want = [t.channels as usize, t.height as usize, t.width as usize];
        if want != shape {
            return Err(ExtractError::Model {
                path: cfg.model.clone(),
                message: format!(
                    "outputs features of shape {shape:?} (C, H, W) at input size {}, but the topology {} says {want:?}",
                    cfg.input_size,
                    t.label()
                ),
            });
        }
    }
    provenance.set(
        "feature_shape",
        format!("{},{},{}", shape[0], shape[1], shape[2]),
    );
    let len = shape.iter().product::<usize>();
    Ok(ArtifactWriter::create(
        &cfg.output,
        ArtifactKind::Features,
        features_schema(len, cfg.dtype),
        provenance,
    )?)
}

/// The error when no row of the images file is in the wanted splits (and shard).
fn no_images(cfg: &ExtractConfig) -> ExtractError {
    ExtractError::Input {
        path: cfg.images.clone(),
        message: format!(
            "no images in the splits [{}]{}",
            cfg.splits.join(", "),
            cfg.shard
                .map(|(k, n)| format!(" in shard {k}/{n}"))
                .unwrap_or_default()
        ),
    }
}

/// Checks that `path` is not a folder of parts when one file is wanted, for clear messages.
pub fn ensure_parent(path: &Path) -> Result<(), ExtractError> {
    if path.is_dir() {
        return Err(ExtractError::Input {
            path: path.to_path_buf(),
            message: "is a folder; expected a .parquet file path".into(),
        });
    }
    Ok(())
}

/// Runs a network over the first `limit` images of one split and returns, per image, the
/// spatial mean of every output channel, with the labels. Used to score channels.
pub fn channel_means(
    model: &Path,
    images: &Path,
    split: &str,
    limit: usize,
    preprocess: &Preprocess,
    input_size: u32,
    threads: Option<usize>,
) -> Result<(Vec<Vec<f32>>, Vec<i32>), ExtractError> {
    let mut runner = Runner::open(model, crate::FEATURES_OUTPUT, threads)?;
    let (_, reader) = open_parquet(
        images,
        ArtifactKind::Images,
        Some(&["label", "split", "height", "width", "pixels"]),
        128,
    )?;
    let size = input_size as usize;
    let (mut acts, mut labels) = (Vec::new(), Vec::new());
    for batch in reader {
        if labels.len() >= limit {
            break;
        }
        let batch = batch.map_err(|e| ExtractError::Input {
            path: images.to_path_buf(),
            message: e.to_string(),
        })?;
        let split_col = column::<StringArray>(&batch, "split", images)?;
        let rows: Vec<usize> = (0..batch.num_rows())
            .filter(|&r| split_col.value(r) == split)
            .take(limit - labels.len())
            .collect();
        if rows.is_empty() {
            continue;
        }
        let lab = column::<Int32Array>(&batch, "label", images)?;
        let mut input = Vec::new();
        fill_input(&batch, &rows, preprocess, input_size, &mut input, images)?;
        labels.extend(rows.iter().map(|&r| lab.value(r)));
        let x = ArrayView4::from_shape((rows.len(), 3, size, size), &input)
            .expect("the input buffer should have the batch's shape");
        let y = runner.run(x)?;
        for img in y.outer_iter() {
            acts.push(
                img.outer_iter()
                    .map(|ch| ch.mean().unwrap_or(0.0))
                    .collect(),
            );
        }
    }
    if labels.is_empty() {
        return Err(ExtractError::Input {
            path: images.to_path_buf(),
            message: format!("no `{split}` images to score channels on"),
        });
    }
    Ok((acts, labels))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_parse_and_out_of_range_ones_are_refused() {
        assert_eq!(parse_shard("1/4"), Ok((1, 4)));
        assert_eq!(parse_shard(" 0 / 2"), Ok((0, 2)));
        assert!(parse_shard("4/4").unwrap_err().contains("0 <= K < N"));
        assert!(parse_shard("0/0").is_err());
        assert!(
            parse_shard("x/2")
                .unwrap_err()
                .contains("K is not a number")
        );
        assert!(parse_shard("3").unwrap_err().contains("expected K/N"));
    }
}
