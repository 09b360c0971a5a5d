//! What a training run keeps after every epoch so that a later run continues it exactly: the
//! model, the optimizer's state, the position of the shuffling stream and the metrics so far,
//! tied to a key (settings, seed, input digests) that a continuing run must match.
//!
//! Layout of the state folder: `epoch-NNNN/{model,optimizer}.bpk` and `state.json`, which names
//! the epoch. `state.json` is replaced atomically only once that epoch's folder is whole, so a
//! run killed at any point leaves a state that points at complete files.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::optim::ModuleOptimizer;
use rand_chacha::ChaCha8Rng;

use super::cloud::{self, CloudNet};
use super::report::EpochMetrics;
use crate::NnError;

/// The saved state of a run after `epochs_done` epochs.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SavedState {
    /// What the run was: a continuing run must present the same key.
    pub key: serde_json::Value,
    pub epochs_done: usize,
    /// ChaCha8 word position of the shuffling stream, in decimal: a u128 does not survive a
    /// JSON number.
    pub rng_word_pos: String,
    /// Seconds spent in training steps, and in all, before the stop (for samples/s and totals).
    pub train_seconds: f64,
    pub seconds: f64,
    /// The metrics so far, exactly (see `report::json_f64`): a continued run reports its
    /// earlier epochs as they were.
    pub epochs: Vec<EpochMetrics>,
}

fn state_file(dir: &Path) -> PathBuf {
    dir.join("state.json")
}

fn epoch_dir(dir: &Path, epoch: usize) -> PathBuf {
    dir.join(format!("epoch-{epoch:04}"))
}

fn resume_err(path: &Path, message: String) -> NnError {
    NnError::Resume {
        path: path.to_path_buf(),
        message,
    }
}

/// Whether `dir` holds a saved state.
pub fn exists(dir: &Path) -> bool {
    state_file(dir).is_file()
}

/// Saves the state after an epoch, then drops the folders of earlier epochs.
pub fn save(
    dir: &Path,
    state: &SavedState,
    model: &CloudNet,
    optim: &ModuleOptimizer,
) -> Result<(), NnError> {
    let epoch_folder = epoch_dir(dir, state.epochs_done);
    // Creates `epoch_folder` too.
    cloud::save(model, &epoch_folder.join("model.bpk"))?;
    let optimizer_file = epoch_folder.join("optimizer.bpk");
    optim
        .save(&optimizer_file)
        .map_err(|e| NnError::save(&optimizer_file, e))?;
    let json = serde_json::to_string_pretty(state).map_err(|e| NnError::save(dir, e))?;
    privynet_core::io::write_bytes_atomic(&state_file(dir), json.as_bytes())?;
    for entry in std::fs::read_dir(dir).map_err(|e| NnError::save(dir, e))? {
        let path = entry.map_err(|e| NnError::save(dir, e))?.path();
        if path.is_dir() && path != epoch_folder {
            std::fs::remove_dir_all(&path).map_err(|e| NnError::save(&path, e))?;
        }
    }
    Ok(())
}

/// The state saved in `dir`, if there is one; an error if it was saved by a run with another
/// key (naming what differs) or cannot be read.
pub fn load(dir: &Path, key: &serde_json::Value) -> Result<Option<SavedState>, NnError> {
    let path = state_file(dir);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(resume_err(&path, e.to_string())),
    };
    let state: SavedState = serde_json::from_str(&text)
        .map_err(|e| resume_err(&path, format!("not a training state ({e})")))?;
    if &state.key != key {
        let mut diffs = Vec::new();
        differences("", &state.key, key, &mut diffs);
        return Err(resume_err(
            &path,
            format!(
                "was saved by a run with other settings or input, so it cannot be continued: {}. \
                 To start over, remove {} or run without --resume",
                diffs.join("; "),
                dir.display()
            ),
        ));
    }
    Ok(Some(state))
}

/// Restores the model, optimizer and shuffling stream of a loaded state.
pub fn restore(
    dir: &Path,
    state: &SavedState,
    model: CloudNet,
    optim: ModuleOptimizer,
    rng: &mut ChaCha8Rng,
) -> Result<(CloudNet, ModuleOptimizer), NnError> {
    let epoch_folder = epoch_dir(dir, state.epochs_done);
    let model_file = epoch_folder.join("model.bpk");
    let model = model
        .try_load_file(&model_file)
        .map_err(|e| resume_err(&model_file, e.to_string()))?;
    let optimizer_file = epoch_folder.join("optimizer.bpk");
    let optim = optim
        .load(&optimizer_file)
        .map_err(|e| resume_err(&optimizer_file, e.to_string()))?;
    let pos = state.rng_word_pos.parse::<u128>().map_err(|e| {
        resume_err(
            &state_file(dir),
            format!("rng_word_pos {:?}: {e}", state.rng_word_pos),
        )
    })?;
    rng.set_word_pos(pos);
    Ok((model, optim))
}

/// Collects `path: saved X, now Y` for every leaf where two JSON values differ.
fn differences(
    path: &str,
    saved: &serde_json::Value,
    now: &serde_json::Value,
    out: &mut Vec<String>,
) {
    use serde_json::Value::Object;
    match (saved, now) {
        (Object(a), Object(b)) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for k in keys {
                let leaf_path = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                let null = serde_json::Value::Null;
                differences(
                    &leaf_path,
                    a.get(k).unwrap_or(&null),
                    b.get(k).unwrap_or(&null),
                    out,
                );
            }
        }
        (a, b) if a != b => out.push(format!("{path}: saved {a}, now {b}")),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_name_each_changed_leaf() {
        let saved = serde_json::json!({"train": {"lr": 0.001, "epochs": 10}, "seed": 7});
        let now = serde_json::json!({"train": {"lr": 0.01, "epochs": 10}, "seed": 7, "x": 1});
        let mut d = Vec::new();
        differences("", &saved, &now, &mut d);
        assert_eq!(
            d,
            ["train.lr: saved 0.001, now 0.01", "x: saved null, now 1"]
        );
    }

    #[test]
    fn metrics_survive_the_state_file_bit_for_bit() {
        // Values a plain JSON number can bring back an ulp off, and an infinite test loss.
        let m = EpochMetrics {
            epoch: 3,
            lr: 0.1 + 0.2,
            train_loss: 2.0 / 3.0,
            train_accuracy: 1.0 / 7.0,
            val_loss: 0.1 * 3.0,
            val_accuracy: 1.0 / 3.0,
            test_loss: f64::INFINITY,
            test_accuracy: 0.123_456_789_012_345_68,
            seconds: 1e-300,
        };
        let state = SavedState {
            key: serde_json::json!({}),
            epochs_done: 1,
            rng_word_pos: "0".into(),
            train_seconds: 0.0,
            seconds: 0.0,
            epochs: vec![m.clone()],
        };
        let back: SavedState =
            serde_json::from_str(&serde_json::to_string(&state).unwrap()).unwrap();
        let bits = |m: &EpochMetrics| {
            [
                m.lr,
                m.train_loss,
                m.train_accuracy,
                m.val_loss,
                m.val_accuracy,
                m.test_loss,
                m.test_accuracy,
                m.seconds,
            ]
            .map(f64::to_bits)
        };
        assert_eq!(bits(&back.epochs[0]), bits(&m));
        assert_eq!(back.epochs[0].epoch, 3);
    }

    #[test]
    fn states_with_metrics_saved_as_strings_are_read() {
        // The form states had before the metrics were JSON numbers.
        let text = r#"{"key": {}, "epochs_done": 1, "rng_word_pos": "12", "train_seconds": 1.5,
            "seconds": 2.0, "epochs": [{"epoch": 1, "lr": "0.30000000000000004",
            "train_loss": "0.6666666666666666", "train_accuracy": "0.5", "val_loss": "NaN",
            "val_accuracy": "0.25", "test_loss": "inf", "test_accuracy": "1e-300",
            "seconds": "3"}]}"#;
        let state: SavedState = serde_json::from_str(text).expect("a state");
        let m = &state.epochs[0];
        assert_eq!(m.lr.to_bits(), (0.1f64 + 0.2).to_bits());
        assert_eq!(m.train_loss.to_bits(), (2.0f64 / 3.0).to_bits());
        assert!(m.val_loss.is_nan());
        assert_eq!(m.test_loss, f64::INFINITY);
        assert_eq!((m.test_accuracy, m.seconds), (1e-300, 3.0));
    }
}
