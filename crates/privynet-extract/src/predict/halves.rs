//! The deploy folder's two halves: the files each half needs, opening them, and the checks
//! that they fit (cloud.onnx takes the features that local.onnx outputs, or that a features
//! file holds); the features as sent and the cloud half's logits.

use std::path::{Path, PathBuf};

use ndarray::{Array2, Array4, Ix2};

use privynet_core::card::{CARD_JSON, Card};
use privynet_core::manifest::FeatureDtype;

use crate::ExtractError;
use crate::runtime::Runner;

/// Which halves a run needs, for the deploy folder's check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Needs {
    pub(crate) local: bool,
    pub(crate) cloud: bool,
}

/// The card of a deploy folder that holds the files the run needs, naming the first missing
/// one: the cloud half never needs local.onnx, nor the local half cloud.onnx.
pub(crate) fn load_card(dir: &Path, needs: Needs) -> Result<Card, ExtractError> {
    let missing = |file: &str, half| ExtractError::DeployFile {
        dir: dir.to_path_buf(),
        file: file.to_string(),
        half,
    };
    if !dir.join(CARD_JSON).is_file() {
        return Err(missing(CARD_JSON, "either half"));
    }
    let card = Card::load(dir)?;
    if needs.local && !dir.join(&card.local.file).is_file() {
        return Err(missing(&card.local.file, "the local half"));
    }
    if needs.cloud && !dir.join(&card.cloud.file).is_file() {
        return Err(missing(&card.cloud.file, "the cloud half"));
    }
    Ok(card)
}

/// local.onnx, and the shape (C, H, W) of the features it outputs: its declared output shape
/// where it declares one, checked against the card's.
pub(crate) fn open_local(
    dir: &Path,
    card: &Card,
    threads: Option<usize>,
) -> Result<(Runner, [usize; 3]), ExtractError> {
    let path = dir.join(&card.local.file);
    let local = Runner::open(&path, crate::FEATURES_OUTPUT, threads)?;
    let declared = local.output_dims();
    let want = card.local.features_shape;
    if declared.len() == 4 && !fits(&declared[1..], want) {
        return Err(ExtractError::Model {
            path,
            message: format!(
                "outputs features of shape {} (C x H x W), but card.json says {}",
                shape_text(&declared[1..]),
                shape_text(&want.map(Some))
            ),
        });
    }
    Ok((local, want))
}

/// cloud.onnx and its path.
pub(crate) fn open_cloud(
    dir: &Path,
    card: &Card,
    threads: Option<usize>,
) -> Result<(Runner, PathBuf), ExtractError> {
    let path = dir.join(&card.cloud.file);
    Ok((Runner::open(&path, &card.cloud.output, threads)?, path))
}

/// Checks that cloud.onnx takes features of `shape`, which `from` (local.onnx, or a features
/// file) `verb`s; both shapes are named when it does not.
pub(crate) fn check_cloud_takes(
    cloud: &Runner,
    cloud_path: &Path,
    shape: [usize; 3],
    from: &Path,
    verb: &'static str,
) -> Result<(), ExtractError> {
    let dims = cloud.input_dims();
    if dims.len() == 4 && fits(&dims[1..], shape) {
        return Ok(());
    }
    // An input of another rank takes no [N, C, H, W] features: it is named whole.
    let takes = if dims.len() == 4 {
        &dims[1..]
    } else {
        &dims[..]
    };
    Err(ExtractError::Shape {
        from: from.to_path_buf(),
        verb,
        found: shape_text(&shape.map(Some)),
        cloud: cloud_path.to_path_buf(),
        expected: shape_text(takes),
    })
}

/// Whether `shape` fits declared dimensions (an open one fits any size).
fn fits(declared: &[Option<usize>], shape: [usize; 3]) -> bool {
    declared.len() == 3
        && declared
            .iter()
            .zip(shape)
            .all(|(d, s)| d.is_none_or(|d| d == s))
}

/// `8x16x16`, with `?` for an open dimension.
pub(crate) fn shape_text(dims: &[Option<usize>]) -> String {
    let parts: Vec<String> = dims
        .iter()
        .map(|d| d.map_or("?".to_string(), |d| d.to_string()))
        .collect();
    parts.join("x")
}

/// Features as the cloud receives them: rounded through float16 when the card says so, as the
/// cloud network was trained on them. Rounding twice changes nothing, so features read back
/// from a float16 file come out the same.
pub(crate) fn as_sent(mut y: Array4<f32>, dtype: FeatureDtype) -> Array4<f32> {
    if dtype == FeatureDtype::Float16 {
        y.mapv_inplace(|v| half::f16::from_f32(v).to_f32());
    }
    y
}

/// Checks a batch of the local network's features against the card's shape.
pub(crate) fn check_batch(
    features: &Array4<f32>,
    card: &Card,
    local: &Path,
) -> Result<(), ExtractError> {
    let s = features.shape();
    let shape = [s[1], s[2], s[3]];
    if shape == card.local.features_shape {
        return Ok(());
    }
    Err(ExtractError::Model {
        path: local.to_path_buf(),
        message: format!(
            "outputs features of shape {} (C x H x W), but card.json says {}",
            shape_text(&shape.map(Some)),
            shape_text(&card.local.features_shape.map(Some))
        ),
    })
}

/// The cloud half's logits [N, classes] for features [N, C, H, W].
pub(crate) fn classify(
    cloud: &mut Runner,
    features: &Array4<f32>,
    card: &Card,
    path: &Path,
) -> Result<Array2<f32>, ExtractError> {
    let out = cloud.run_all(features.view())?;
    let name = &card.cloud.output;
    let logits = out.get(name).cloned().ok_or_else(|| ExtractError::Model {
        path: path.to_path_buf(),
        message: format!("has no output `{name}`"),
    })?;
    logits
        .into_dimensionality::<Ix2>()
        .map_err(|e| ExtractError::Model {
            path: path.to_path_buf(),
            message: format!("output `{name}` is not [N, classes]: {e}"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::predict::tests::card;

    #[test]
    fn open_dimensions_fit_any_size_and_fixed_ones_must_match() {
        assert!(fits(&[Some(8), None, None], [8, 4, 4]));
        assert!(!fits(&[Some(4), Some(4), Some(4)], [8, 4, 4]));
        assert!(!fits(&[Some(8), Some(4)], [8, 4, 4]));
        assert_eq!(shape_text(&[Some(8), None, Some(2)]), "8x?x2");
    }

    #[test]
    fn a_features_batch_of_another_shape_than_the_card_names_both() {
        let card = card([8, 4, 4], 10, 32);
        let features = Array4::<f32>::zeros((2, 3, 4, 4));
        let e = check_batch(&features, &card, Path::new("d/local.onnx")).unwrap_err();
        let e = e.to_string();
        assert!(
            e.contains("local.onnx") && e.contains("3x4x4") && e.contains("8x4x4"),
            "{e}"
        );
    }

    #[test]
    fn float16_rounding_is_idempotent() {
        let y = Array4::from_shape_fn((1, 1, 1, 3), |(_, _, _, i)| 0.1 + i as f32 / 3.0);
        let once = as_sent(y, FeatureDtype::Float16);
        assert_eq!(as_sent(once.clone(), FeatureDtype::Float16), once);
    }

    #[test]
    fn a_deploy_folder_without_a_needed_file_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let both = Needs {
            local: true,
            cloud: true,
        };
        let e = load_card(dir.path(), both).unwrap_err().to_string();
        assert!(e.contains("no card.json"), "{e}");
        std::fs::write(
            dir.path().join(CARD_JSON),
            serde_json::to_string(&card([8, 4, 4], 10, 32)).unwrap(),
        )
        .unwrap();
        let e = load_card(dir.path(), both).unwrap_err().to_string();
        assert!(
            e.contains("no local.onnx") && e.contains("local half"),
            "{e}"
        );
        std::fs::write(dir.path().join("local.onnx"), b"").unwrap();
        let e = load_card(dir.path(), both).unwrap_err().to_string();
        assert!(
            e.contains("no cloud.onnx") && e.contains("cloud half"),
            "{e}"
        );
        // The cloud's side alone needs no local.onnx.
        std::fs::remove_file(dir.path().join("local.onnx")).unwrap();
        std::fs::write(dir.path().join("cloud.onnx"), b"").unwrap();
        let cloud = Needs {
            local: false,
            cloud: true,
        };
        assert!(load_card(dir.path(), cloud).is_ok());
    }
}
