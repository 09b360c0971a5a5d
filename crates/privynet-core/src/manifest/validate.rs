//! Checks on every manifest section, shared with the binaries that take the same values as flags.

use std::path::Path;

use super::*;
use crate::{CoreError, Result};

/// The split names images can carry.
pub const SPLITS: [&str; 4] = ["train", "val", "attacker", "test"];

/// A number that must be finite and at least `min` (`strict`: above it); the message names
/// the key and what was expected, whatever the value came from (manifest, `--set`, a flag).
fn check_number(key: &str, v: f64, min: f64, strict: bool) -> std::result::Result<(), String> {
    let ok = v.is_finite() && if strict { v > min } else { v >= min };
    if ok {
        Ok(())
    } else {
        let what = if strict { "greater than" } else { "at least" };
        Err(format!(
            "`{key}` must be a finite number {what} {min}, got {v}"
        ))
    }
}

/// The largest square input side accepted: far beyond any image a CNN trunk is run on here,
/// small enough that one image's activations cannot exhaust memory by a typo.
pub const MAX_INPUT_SIZE: u32 = 4096;

/// `model.input_size` (or `--input-size`) is between 1 and [`MAX_INPUT_SIZE`] pixels.
pub fn check_input_size(v: u32) -> std::result::Result<(), String> {
    if (1..=MAX_INPUT_SIZE).contains(&v) {
        Ok(())
    } else {
        Err(format!(
            "`model.input_size` must be between 1 and {MAX_INPUT_SIZE} pixels, got {v}"
        ))
    }
}

/// A count that must be at least 1.
fn check_count(key: &str, v: usize) -> std::result::Result<(), String> {
    if v == 0 {
        Err(format!("`{key}` must be at least 1, got 0"))
    } else {
        Ok(())
    }
}

// The checks of each section live with it, so that a stage binary that overrides a value
// from its command line checks the result exactly as the manifest loader does.

impl SplitSizes {
    /// A cloud network needs images to train on and to be scored on.
    pub fn validate(&self) -> std::result::Result<(), String> {
        check_count("dataset.splits.train", self.train)?;
        check_count("dataset.splits.test", self.test)
    }
}

impl ExtractParams {
    /// The section's values are usable; the message names the key.
    pub fn validate(&self) -> std::result::Result<(), String> {
        check_count("extract.batch_size", self.batch_size)?;
        if let Some(t) = self.threads {
            check_count("extract.threads", t)?;
        }
        for split in &self.splits {
            if !SPLITS.contains(&split.as_str()) {
                return Err(format!(
                    "`extract.splits` names `{split}`, expected one of {}",
                    SPLITS.join(", ")
                ));
            }
        }
        Ok(())
    }
}

impl TrainParams {
    /// The section's values are usable; the message names the key.
    pub fn validate(&self) -> std::result::Result<(), String> {
        check_count("train.epochs", self.epochs)?;
        check_count("train.batch_size", self.batch_size)?;
        check_count("train.width", self.width)?;
        check_count("train.depth", self.depth)?;
        if let Some(p) = self.patience {
            check_count("train.patience", p)?;
        }
        if self.classes < 2 {
            return Err(format!(
                "`train.classes` must be at least 2, got {}",
                self.classes
            ));
        }
        check_number("train.lr", self.lr, 0.0, true)?;
        check_number("train.momentum", self.momentum, 0.0, false)?;
        check_number("train.weight_decay", self.weight_decay, 0.0, false)
    }
}

impl AttackParams {
    /// The section's values are usable; the message names the key.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.modes.is_empty() {
            return Err("`attack.modes` must list at least one mode".into());
        }
        use AttackFamily::{Irn, Optimization};
        if !matches!(self.families.as_slice(), [Irn] | [Irn, Optimization]) {
            return Err(format!(
                "`attack.families` must be [irn] or [irn, optimization] (the optimisation attack starts from the IRN's reconstructions), got {:?}",
                self.families.iter().map(|f| f.name()).collect::<Vec<_>>()
            ));
        }
        let o = &self.optimization;
        check_count("attack.optimization.iterations", o.iterations)?;
        check_count("attack.optimization.batch_size", o.batch_size)?;
        check_number("attack.optimization.lr", o.lr, 0.0, true)?;
        check_number("attack.optimization.tv_weight", o.tv_weight, 0.0, false)?;
        check_count("attack.max_epochs", self.max_epochs)?;
        check_count("attack.batch_size", self.batch_size)?;
        check_count("attack.min_width", self.min_width)?;
        for (key, v) in [
            ("attack.width", self.width),
            ("attack.pool", self.pool),
            ("attack.victims", self.victims),
        ] {
            if let Some(v) = v {
                check_count(key, v)?;
            }
        }
        if !(self.holdout > 0.0 && self.holdout < 1.0) {
            return Err(format!(
                "`attack.holdout` must be a fraction between 0 and 1 (exclusive), got {}",
                self.holdout
            ));
        }
        check_number("attack.lr", self.lr, 0.0, true)?;
        check_number("attack.min_delta", self.min_delta, 0.0, false)?;
        check_number("attack.tv_weight", self.tv_weight, 0.0, false)?;
        if self.bootstrap < 100 {
            return Err(format!(
                "`attack.bootstrap` must be at least 100 resamples, got {}",
                self.bootstrap
            ));
        }
        Ok(())
    }
}

impl Limits {
    /// The limits are usable: PSNR and SSIM finite, MACs and bytes not negative.
    pub fn validate(&self) -> std::result::Result<(), String> {
        for (key, v) in [
            ("max_psnr", self.max_psnr),
            ("max_ssim", self.max_ssim),
            ("max_psnr_bound", self.max_psnr_bound),
        ] {
            if let Some(v) = v.filter(|v| !v.is_finite()) {
                return Err(format!(
                    "`optimize.limits.{key}` must be a finite number, got {v}"
                ));
            }
        }
        for (key, v) in [
            ("max_macs", self.max_macs),
            ("max_weight_bytes", self.max_weight_bytes),
        ] {
            if v.is_some_and(|v| v < 0) {
                return Err(format!("`optimize.limits.{key}` must not be negative"));
            }
        }
        if let Some(v) = self.max_bytes_per_image.filter(|&v| v <= 0) {
            return Err(format!(
                "`optimize.limits.max_bytes_per_image` must be at least 1 byte, got {v}"
            ));
        }
        Ok(())
    }
}

impl OptimizeParams {
    /// The section's values are usable; the message names the key.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.sample.is_empty() {
            return Err("`optimize.sample` must list at least one point".into());
        }
        if self.sample.contains(&SamplePoint::Count(0)) {
            return Err("`optimize.sample` must not contain 0".into());
        }
        check_number("optimize.margin_scale", self.margin_scale, 0.0, false)?;
        self.limits.validate()
    }
}

impl Manifest {
    pub(super) fn validate(&self, path: &Path) -> Result<()> {
        let bad = |message: String| CoreError::ManifestValue {
            path: path.to_path_buf(),
            message,
        };
        if self.name.trim().is_empty() {
            return Err(bad("`name` must not be empty".into()));
        }
        self.dataset.splits.validate().map_err(bad)?;
        check_input_size(self.model.input_size).map_err(bad)?;
        if self.model.preprocess.std.contains(&0.0) {
            return Err(bad("`model.preprocess.std` must not contain 0".into()));
        }
        if self.sweep.cuts.is_empty() || self.sweep.channels.is_empty() {
            return Err(bad(
                "`sweep.cuts` and `sweep.channels` must each list at least one value".into(),
            ));
        }
        if self.sweep.channels.contains(&ChannelCount::Count(0)) {
            return Err(bad("`sweep.channels` must not contain 0".into()));
        }
        self.validate_defences().map_err(bad)?;
        if !(self.slice.top_fraction > 0.0 && self.slice.top_fraction <= 1.0) {
            return Err(bad(format!(
                "`slice.top_fraction` must be in (0, 1], got {}",
                self.slice.top_fraction
            )));
        }
        self.train.validate().map_err(bad)?;
        self.attack.validate().map_err(bad)?;
        self.optimize.validate().map_err(bad)?;
        self.extract.validate().map_err(bad)?;
        self.validate_storage().map_err(bad)?;
        self.validate_attack_sizes().map_err(bad)?;
        if let Some(f) = &self.final_training {
            f.validate(self).map_err(bad)?;
        }
        Ok(())
    }

    /// The defence grid: at least one noise level and one bit width, each usable.
    fn validate_defences(&self) -> std::result::Result<(), String> {
        use crate::defence::{check_bits, check_noise};
        if self.sweep.noise.is_empty() || self.sweep.bits.is_empty() {
            return Err(
                "`sweep.noise` and `sweep.bits` must each list at least one value \
                        (0 and 32: no defence)"
                    .into(),
            );
        }
        for &n in &self.sweep.noise {
            check_noise(n).map_err(|e| format!("`sweep.noise`: {e}"))?;
        }
        for &b in &self.sweep.bits {
            check_bits(b).map_err(|e| format!("`sweep.bits`: {e}"))?;
        }
        Ok(())
    }

    /// The attacker's pool and victims fit in the splits they are drawn from: a larger number
    /// would silently measure a weaker attacker than the one the manifest declares.
    fn validate_attack_sizes(&self) -> std::result::Result<(), String> {
        let splits = &self.dataset.splits;
        for (key, asked, split, held) in [
            ("attack.pool", self.attack.pool, "attacker", splits.attacker),
            ("attack.victims", self.attack.victims, "test", splits.test),
        ] {
            if let Some(asked) = asked.filter(|&a| a > held) {
                return Err(format!(
                    "`{key}` = {asked}, but the `{split}` split holds {held} rows (dataset.splits.{split}): the attack the manifest declares cannot be measured on this data"
                ));
            }
        }
        Ok(())
    }

    /// The local zone must be on this machine: a URL there would send images and selections
    /// to a cloud store.
    fn validate_storage(&self) -> std::result::Result<(), String> {
        let s = &self.storage;
        if let (Some(a), Some(b)) = (&s.local, &self.out_dir)
            && a != b
        {
            return Err(format!(
                "`storage.local` ({}) and `out_dir` ({}) name the same folder differently; set one",
                a.display(),
                b.display()
            ));
        }
        let local = self.out_dir();
        if is_url(&local) {
            return Err(format!(
                "`storage.local` (or `out_dir`) is {}, an object-store URL: the local zone holds \
                 the images (images artifact, LOCAL zone) and the secret selections (selection \
                 artifact, LOCAL zone), which never leave this machine; give a local path, and \
                 put the cloud zone in `storage.cloud`",
                local.display()
            ));
        }
        if let Some(c) = &s.cloud
            && c.as_os_str().is_empty()
        {
            return Err("`storage.cloud` must not be empty".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_checked_at_their_bounds() {
        // At least `min`: the bound itself passes; strictly above it: it does not.
        assert!(check_number("k", 0.0, 0.0, false).is_ok());
        let e = check_number("k", 0.0, 0.0, true).unwrap_err();
        assert!(
            e.contains("`k` must be a finite number greater than 0"),
            "{e}"
        );
        assert!(check_number("k", 1e-9, 0.0, true).is_ok());
        let e = check_number("k", -1e-9, 0.0, false).unwrap_err();
        assert!(e.contains("at least 0"), "{e}");
        for bad in [f64::NAN, f64::INFINITY] {
            assert!(check_number("k", bad, 0.0, false).is_err(), "{bad}");
        }
        assert!(check_count("k", 1).is_ok());
        assert_eq!(
            check_count("k", 0).unwrap_err(),
            "`k` must be at least 1, got 0"
        );
    }

    fn manifest(attack: &str) -> Result<Manifest> {
        let text = format!(
            "name: t\ndataset: {{format: cifar10-binary, path: d, splits: {{train: 10, attacker: 5, test: 7}}}}\nmodel: {{path: m.onnx, input_size: 32}}\nsweep: {{cuts: [conv1], channels: [8]}}\nattack: {attack}\n"
        );
        Manifest::parse(Path::new("t.yaml"), &text, &[])
    }

    #[test]
    fn the_attacker_pool_and_victims_fit_their_splits() {
        assert!(
            manifest("{pool: 5, victims: 7}").is_ok(),
            "as large as the splits"
        );
        let e = manifest("{pool: 6}").unwrap_err().to_string();
        assert!(
            e.contains("`attack.pool` = 6, but the `attacker` split holds 5 rows"),
            "{e}"
        );
        let e = manifest("{victims: 8}").unwrap_err().to_string();
        assert!(
            e.contains("`attack.victims` = 8, but the `test` split holds 7 rows"),
            "{e}"
        );
    }
}
