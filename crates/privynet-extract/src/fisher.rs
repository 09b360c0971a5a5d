//! Fisher scoring of a cut's channels with ONNX Runtime: the slice binary's scorer for
//! `fisher-random`. It lives here, with ONNX Runtime, and so does the slice binary: the slice
//! library stays free of ort, so the runner, which plans with it, links no ONNX Runtime.

use std::path::Path;

use privynet_core::manifest::Preprocess;

use privynet_slice::analyze::CutPoint;
use privynet_slice::{SliceError, model, select, surgery};

/// Scores every channel at the cut by its Fisher ratio on the first `limit` labelled training
/// images of `images`.
pub fn scores(
    m: &model::Model,
    point: &CutPoint,
    images: &Path,
    preprocess: &Preprocess,
    input_size: u32,
    limit: usize,
) -> Result<Vec<f64>, SliceError> {
    let all: Vec<i64> = (0..point.channels).collect();
    let full = surgery::local_network(m, &point.name, &all)?;
    let dir = tempfile::tempdir().map_err(|source| SliceError::Io {
        path: std::env::temp_dir(),
        source,
    })?;
    let path = dir.path().join("full.onnx");
    std::fs::write(&path, surgery::to_bytes(&full)?).map_err(|source| SliceError::Io {
        path: path.clone(),
        source,
    })?;
    let (acts, labels) =
        crate::extract::channel_means(&path, images, "train", limit, preprocess, input_size, None)
            .map_err(|e| SliceError::Scoring {
                path: images.to_path_buf(),
                source: Box::new(e),
            })?;
    if labels.len() < limit {
        // A cap, not a threat model: scoring goes on with what the split holds, but says so.
        tracing::warn!(
            "slice.fisher_images = {limit}, but the train split of {} holds {} images: the channels are scored on those {}",
            images.display(),
            labels.len(),
            labels.len()
        );
    }
    let classes = labels.iter().copied().max().unwrap_or(0) as usize + 1;
    tracing::info!(
        images = labels.len(),
        "scored {} channels by Fisher ratio",
        point.channels
    );
    Ok(select::fisher_scores(&acts, &labels, classes))
}
