//! The deployment card (`deploy/card.json`, and `card.md` for people): what was deployed
//! (the two ONNX files and their hashes, the preprocessing the local half expects, the
//! features the cloud half takes), what it was measured to do (accuracy with its interval,
//! the worst attack's PSNR and SSIM intervals), under which limits it was chosen, and its
//! cost. The deploy stage writes it; `privynet-predict` reads it to run the two halves.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::manifest::{FeatureDtype, Preprocess};
use crate::{CoreError, Result};

/// The card's file name in a deploy folder.
pub const CARD_JSON: &str = "card.json";
/// The local network's file name in a deploy folder.
pub const LOCAL_ONNX: &str = "local.onnx";
/// The cloud network's file name in a deploy folder.
pub const CLOUD_ONNX: &str = "cloud.onnx";

/// One deployed topology.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Card {
    /// The topology's label (e.g. `fire3-d8`), its cut and channel count.
    pub topology: String,
    pub cut: String,
    pub channels: i64,
    pub accuracy: Accuracy,
    pub privacy: Privacy,
    /// The optimizer's limits the topology was chosen under (`null`: no limit).
    pub limits: serde_json::Value,
    /// Multiply-accumulates of the local network per image, its weight bytes, and the bytes of
    /// one image's features as sent to the cloud.
    pub macs: i64,
    pub weight_bytes: i64,
    pub bytes_per_image: i64,
    pub local: LocalHalf,
    pub cloud: CloudHalf,
    /// What the cloud network was trained on: the features file's label and the rows per split.
    pub trained_on: TrainedOn,
}

/// Accuracy of the cloud network on the features of the local network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Accuracy {
    /// On the validation split (what the topology was chosen on).
    pub val: f64,
    /// On the test split (never used to choose), with its Wilson 95% interval.
    pub test: f64,
    pub test_lo: f64,
    pub test_hi: f64,
    pub test_images: i64,
    /// The same topology's test accuracy at the characterization's budget, when the deployed
    /// network is the final training's (`final:`); what the extra images and epochs bought.
    #[serde(default)]
    pub characterized_test: Option<f64>,
}

/// The worst attack measured on this topology (the highest PSNR over attack modes and
/// families), with 95% intervals over its victim images.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Privacy {
    pub worst_attack: String,
    pub psnr: f64,
    pub psnr_lo: f64,
    pub psnr_hi: f64,
    pub ssim: f64,
    pub ssim_lo: f64,
    pub ssim_hi: f64,
}

/// The half that runs on the user's machines.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalHalf {
    pub file: String,
    pub blake3: String,
    /// The square input size and the preprocessing from RGB u8 pixels to its input.
    pub input_size: u32,
    pub preprocess: Preprocess,
    /// The features' element type as sent (what the cloud network was trained on).
    pub features_dtype: FeatureDtype,
    /// The features' shape (C, H, W).
    pub features_shape: [usize; 3],
    /// The defence applied to the features before they leave (noise, quantisation) with what
    /// was fitted for it; absent when the features leave as the local network gives them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub defence: Option<crate::defence::Encoding>,
}

/// The half that runs in the cloud.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudHalf {
    pub file: String,
    pub blake3: String,
    pub input: String,
    pub output: String,
    pub classes: usize,
}

/// What the cloud network was trained on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainedOn {
    pub dataset: String,
    pub train_images: i64,
    pub val_images: i64,
    /// Epochs trained.
    pub epochs: i64,
    /// The final training's (`final:`, early stopping on val with `patience`, the best epoch
    /// kept) rather than the characterization's.
    #[serde(default)]
    pub final_training: bool,
    #[serde(default)]
    pub patience: Option<i64>,
}

impl TrainedOn {
    /// How the cloud network was trained, for the card's table.
    fn describe(&self) -> String {
        let how = match (self.final_training, self.patience) {
            (true, Some(p)) => format!(
                "; the final training: to stop once val accuracy had not improved for {p} epoch{}, the best epoch kept",
                if p == 1 { "" } else { "s" }
            ),
            (true, None) => "; the final training".into(),
            (false, _) => "; the characterization's training".into(),
        };
        format!(
            "{} images of {}, {} epochs{how}",
            self.train_images, self.dataset, self.epochs
        )
    }
}

/// The Wilson score interval (95%) of a proportion `p` observed over `n` trials: unlike the
/// normal approximation it stays inside [0, 1] and is honest near 0 and 1.
pub fn wilson(p: f64, n: i64) -> (f64, f64) {
    if n <= 0 {
        return (0.0, 1.0);
    }
    let z = 1.959_963_984_540_054_f64;
    let n = n as f64;
    let denom = 1.0 + z * z / n;
    let centre = (p + z * z / (2.0 * n)) / denom;
    let half = z * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt() / denom;
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

impl Card {
    /// Reads `card.json` from a deploy folder.
    pub fn load(dir: &Path) -> Result<Card> {
        let path = dir.join(CARD_JSON);
        let text = std::fs::read_to_string(&path).map_err(|e| CoreError::Io {
            path: path.clone(),
            source: e,
        })?;
        serde_json::from_str(&text).map_err(|e| CoreError::ManifestValue {
            path: path.clone(),
            message: format!("not a deployment card: {e}"),
        })
    }

    /// The card for people.
    pub fn markdown(&self) -> String {
        let a = &self.accuracy;
        let p = &self.privacy;
        let pct = |x: f64| format!("{:.1}%", 100.0 * x);
        format!(
            "# Deployment card: {topology}\n\n\
             The local network (`{lf}`) runs on your machines: the pretrained model cut at \
             `{cut}`, keeping {d} secretly selected channels. Only its output, {bytes} bytes of \
             {dtype} features per image, goes to the cloud, where `{cf}` classifies it.\n\n\
             | | |\n| --- | --- |\n\
             | test accuracy | {test} (95% interval {tlo} to {thi}, {n} images) |\n\
             | validation accuracy (chosen on) | {val} |\n\
             | worst attack ({attack}) PSNR | {psnr:.2} dB (95% interval {plo:.2} to {phi:.2}) |\n\
             | worst attack SSIM | {ssim:.3} ({slo:.3} to {shi:.3}) |\n\
             | local MACs per image | {macs} |\n\
             | local weight bytes | {wb} |\n\
             | features per image | {bytes} bytes, shape {shape:?} |\n\
             | defence before sending | {defence} |\n\
             | limits chosen under | {limits} |\n\
             {budget}\
             | trained on | {trained} |\n\n\
             Files: `{lf}` blake3 `{lh}`; `{cf}` blake3 `{ch}` (input `{ci}`, output `{co}`, \
             {classes} classes). Preprocessing from RGB pixels: `{pre}` at {size}x{size}.\n\n\
             The privacy figures are the strongest reconstruction attacks this toolkit ran \
             against these features (an attacker who knows the model and the data \
             distribution); they bound what those attacks achieve, not every attack.\n",
            topology = self.topology,
            lf = self.local.file,
            cf = self.cloud.file,
            cut = self.cut,
            d = self.channels,
            bytes = self.bytes_per_image,
            dtype = format!("{:?}", self.local.features_dtype).to_lowercase(),
            test = pct(a.test),
            tlo = pct(a.test_lo),
            thi = pct(a.test_hi),
            n = a.test_images,
            val = pct(a.val),
            attack = p.worst_attack,
            psnr = p.psnr,
            plo = p.psnr_lo,
            phi = p.psnr_hi,
            ssim = p.ssim,
            slo = p.ssim_lo,
            shi = p.ssim_hi,
            macs = self.macs,
            wb = self.weight_bytes,
            shape = self.local.features_shape,
            defence = self
                .local
                .defence
                .as_ref()
                .map_or("none".into(), |e| e.defence.describe()),
            limits = self.limits,
            budget = a
                .characterized_test
                .filter(|_| self.trained_on.final_training)
                .map_or(String::new(), |t| format!(
                    "| test accuracy at the characterization's budget | {} |\n",
                    pct(t)
                )),
            trained = self.trained_on.describe(),
            lh = self.local.blake3,
            ch = self.cloud.blake3,
            ci = self.cloud.input,
            co = self.cloud.output,
            classes = self.cloud.classes,
            pre = serde_json::to_string(&self.local.preprocess).unwrap_or_default(),
            size = self.local.input_size,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wilson_matches_the_closed_form_and_stays_in_range() {
        // 80 of 100: the textbook interval is [0.711, 0.867].
        let (lo, hi) = wilson(0.8, 100);
        assert!(
            (lo - 0.7112).abs() < 1e-3 && (hi - 0.8666).abs() < 1e-3,
            "{lo} {hi}"
        );
        let (lo, hi) = wilson(1.0, 10);
        assert!(lo > 0.6 && lo < 0.8 && hi > 1.0 - 1e-12, "{lo} {hi}");
        let (lo, hi) = wilson(0.0, 10);
        assert!(lo == 0.0 && hi > 0.2 && hi < 0.4, "{lo} {hi}");
        assert_eq!(wilson(0.5, 0), (0.0, 1.0));
    }
}
