//! The manifest's `final` section: how the chosen topology's cloud network is trained for
//! deployment once the optimizer has chosen (more images than the characterization's budget,
//! early stopping on val, a larger network), and the checks on it.

use serde::{Deserialize, Serialize};

use super::{AllKeyword, Manifest, TrainParams};

/// A number of images, or `all` of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum ImageCount {
    Count(usize),
    All(AllKeyword),
}

impl std::fmt::Display for ImageCount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ImageCount::Count(n) => write!(f, "{n}"),
            ImageCount::All(_) => f.write_str("all"),
        }
    }
}

/// The final training of the chosen topology (`final:`). Without the section the deployed
/// cloud network is the characterization's.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FinalParams {
    /// Images the final network trains on: the characterization's train split plus images
    /// drawn (stratified, seeded) from what the val, attacker and test splits leave of the
    /// training set; at least `dataset.splits.train`, or `all` of what is left. The val and
    /// test splits are the characterization's, so the accuracies compare.
    pub train_images: ImageCount,
    /// The most epochs; training stops earlier when val accuracy has not improved for
    /// `patience` epochs, and the best epoch's network is kept.
    #[serde(default = "default_final_epochs")]
    pub epochs: usize,
    #[serde(default = "default_patience")]
    pub patience: usize,
    /// The cloud network's width and depth, when larger than `train`'s.
    #[serde(default)]
    pub width: Option<usize>,
    #[serde(default)]
    pub depth: Option<usize>,
}

fn default_final_epochs() -> usize {
    30
}
fn default_patience() -> usize {
    3
}

impl FinalParams {
    /// The section's values are usable next to the rest of the manifest.
    pub fn validate(&self, m: &Manifest) -> std::result::Result<(), String> {
        if let ImageCount::Count(n) = self.train_images
            && n < m.dataset.splits.train
        {
            return Err(format!(
                "`final.train_images` = {n} is fewer than the characterization's train split (`dataset.splits.train` = {}): the final training adds images to it",
                m.dataset.splits.train
            ));
        }
        for (key, v) in [
            ("final.epochs", self.epochs),
            ("final.patience", self.patience),
        ] {
            if v == 0 {
                return Err(format!("`{key}` must be at least 1, got 0"));
            }
        }
        for (key, v, at_least) in [
            ("final.width", self.width, m.train.width),
            ("final.depth", self.depth, m.train.depth),
        ] {
            if let Some(v) = v.filter(|&v| v < at_least) {
                return Err(format!(
                    "`{key}` = {v} is smaller than `train.{}` = {at_least}: the final network is the characterized one or larger",
                    &key[6..]
                ));
            }
        }
        Ok(())
    }
}

impl Manifest {
    /// The settings of the final training: `train`'s, with the final section's epochs,
    /// patience, width and depth; `None` without a `final` section.
    pub fn final_train_params(&self) -> Option<TrainParams> {
        let f = self.final_training.as_ref()?;
        Some(TrainParams {
            epochs: f.epochs,
            patience: Some(f.patience),
            width: f.width.unwrap_or(self.train.width),
            depth: f.depth.unwrap_or(self.train.depth),
            ..self.train.clone()
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    const BASE: &str = "\
name: t
dataset:
  format: cifar10-binary
  path: data/cifar-10
  splits: {train: 10, val: 2, attacker: 5, test: 5}
model:
  path: m.onnx
  input_size: 32
sweep:
  cuts: [conv1]
  channels: [8, all]
train: {epochs: 4, width: 32}
";

    fn parse(extra: &str, set: &[&str]) -> Result<Manifest, String> {
        let set: Vec<String> = set.iter().map(|s| s.to_string()).collect();
        Manifest::parse(Path::new("t.yaml"), &format!("{BASE}{extra}"), &set)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn the_final_section_puts_its_settings_over_train() {
        let m = parse("", &[]).unwrap();
        assert_eq!(m.final_training, None);
        assert_eq!(m.final_train_params(), None);
        // Without the section the manifest serialises as before (the lock's parameters).
        assert!(!serde_json::to_string(&m).unwrap().contains("final"));
        let m = parse("final: {train_images: all, width: 64}\n", &[]).unwrap();
        let p = m.final_train_params().unwrap();
        assert_eq!(
            (p.epochs, p.patience, p.width, p.depth),
            (30, Some(3), 64, 1)
        );
        assert_eq!((p.lr, p.batch_size), (m.train.lr, m.train.batch_size));
        let m = parse("final: {train_images: 20}\n", &["final.epochs=7"]).unwrap();
        let f = m.final_training.as_ref().unwrap();
        assert_eq!((f.train_images, f.epochs), (ImageCount::Count(20), 7));
    }

    #[test]
    fn bad_final_settings_are_named() {
        for (extra, expected) in [
            (
                "final: {train_images: 9}\n",
                "`final.train_images` = 9 is fewer than",
            ),
            (
                "final: {train_images: all, patience: 0}\n",
                "`final.patience` must be at least 1",
            ),
            (
                "final: {train_images: all, epochs: 0}\n",
                "`final.epochs` must be at least 1",
            ),
            (
                "final: {train_images: all, width: 16}\n",
                "`final.width` = 16 is smaller than `train.width` = 32",
            ),
            ("final: {epochs: 3}\n", "train_images"),
            ("final: {train_images: all, patiense: 2}\n", "patiense"),
        ] {
            let e = parse(extra, &[]).unwrap_err();
            assert!(e.contains(expected), "{extra}: {e}");
        }
    }
}
