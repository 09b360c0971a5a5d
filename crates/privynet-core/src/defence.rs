//! Defences applied on the user's machine after the local network and the secret selection,
//! before features leave: Gaussian noise (std a fraction of each selected channel's std, fresh
//! per image, keyed by a secret kept in the local zone) and per-channel quantisation to 8 or 4
//! bit codes. The [`Encoding`] (the defence with the fitted per-channel sigma, scale and
//! offset) travels in the features' `privynet.defence` metadata: it is what the cloud needs to
//! decode the codes, and holds nothing of the secret.

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};

/// The metadata key that carries a defended features file's [`Encoding`].
pub const METADATA_KEY: &str = "privynet.defence";

/// The bit widths features may be sent at: 32 is the float features as they are.
pub const SUPPORTED_BITS: [u8; 3] = [32, 8, 4];

/// The length in bytes of the noise secret (`<run>/secret.key`, local zone).
pub const SECRET_LEN: usize = 32;

/// One point of the defence grid: noise as a fraction of each channel's std, and bits.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Defence {
    pub noise: f64,
    pub bits: u8,
}

impl Default for Defence {
    fn default() -> Self {
        Defence {
            noise: 0.0,
            bits: 32,
        }
    }
}

impl Defence {
    /// A checked defence: noise finite and not negative, bits one of [`SUPPORTED_BITS`].
    pub fn new(noise: f64, bits: u8) -> Result<Defence, String> {
        check_noise(noise)?;
        check_bits(bits)?;
        Ok(Defence { noise, bits })
    }

    /// No noise and float features: the features exactly as the local network gives them.
    pub fn is_none(&self) -> bool {
        self.noise == 0.0 && self.bits == 32
    }

    /// Whether values are sent as integer codes.
    pub fn quantised(&self) -> bool {
        self.bits < 32
    }

    /// The suffix of a defended topology's label: `-n0.25-q8`, `-n0.5`, `-q8`, or nothing.
    pub fn suffix(&self) -> String {
        let mut s = String::new();
        if self.noise > 0.0 {
            s.push_str(&format!("-n{}", self.noise));
        }
        if self.quantised() {
            s.push_str(&format!("-q{}", self.bits));
        }
        s
    }

    /// The defence in words, for reports and cards.
    pub fn describe(&self) -> String {
        match (self.noise > 0.0, self.quantised()) {
            (false, false) => "none".into(),
            (true, false) => format!("Gaussian noise at {} of each channel's std", self.noise),
            (false, true) => format!("{}-bit quantisation per channel", self.bits),
            (true, true) => format!(
                "Gaussian noise at {} of each channel's std, then {}-bit quantisation per channel",
                self.noise, self.bits
            ),
        }
    }
}

/// A noise level as the manifest gives it: finite and not negative.
pub fn check_noise(noise: f64) -> Result<(), String> {
    if noise.is_finite() && noise >= 0.0 {
        Ok(())
    } else {
        Err(format!(
            "noise {noise} is not a finite fraction >= 0 of each channel's std"
        ))
    }
}

/// A bit width as the manifest gives it: one of [`SUPPORTED_BITS`].
pub fn check_bits(bits: u8) -> Result<(), String> {
    if SUPPORTED_BITS.contains(&bits) {
        Ok(())
    } else {
        Err(format!(
            "{bits} bits is not supported; expected one of {SUPPORTED_BITS:?} (32: float features)"
        ))
    }
}

/// A defence with what was fitted on the train split's features: per channel, the noise std
/// (absolute), and for quantised features the step and the value of code 0.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Encoding {
    pub defence: Defence,
    /// Per channel: the noise std added (0 without noise).
    pub sigma: Vec<f32>,
    /// Per channel: value = offset + code * scale (empty for float features).
    pub scale: Vec<f32>,
    pub offset: Vec<f32>,
}

/// Per-channel running statistics of features laid out CHW: mean and std (Welford, in f64),
/// min and max.
#[derive(Debug, Clone)]
pub struct ChannelStats {
    plane: usize,
    n: Vec<f64>,
    mean: Vec<f64>,
    m2: Vec<f64>,
    pub min: Vec<f32>,
    pub max: Vec<f32>,
}

impl ChannelStats {
    /// Statistics of `channels` channels of `plane` (H*W) values each.
    pub fn new(channels: usize, plane: usize) -> Self {
        ChannelStats {
            plane: plane.max(1),
            n: vec![0.0; channels],
            mean: vec![0.0; channels],
            m2: vec![0.0; channels],
            min: vec![f32::INFINITY; channels],
            max: vec![f32::NEG_INFINITY; channels],
        }
    }

    /// Adds one image's features (CHW).
    pub fn add(&mut self, row: &[f32]) {
        for (c, values) in row.chunks(self.plane).enumerate() {
            for &v in values {
                self.n[c] += 1.0;
                let d = f64::from(v) - self.mean[c];
                self.mean[c] += d / self.n[c];
                self.m2[c] += d * (f64::from(v) - self.mean[c]);
                self.min[c] = self.min[c].min(v);
                self.max[c] = self.max[c].max(v);
            }
        }
    }

    /// The population std per channel (0 for a channel with no values).
    pub fn std(&self) -> Vec<f32> {
        let n = self.n.iter().zip(&self.m2);
        n.map(|(&n, &m2)| if n > 0.0 { (m2 / n).sqrt() as f32 } else { 0.0 })
            .collect()
    }
}

impl Encoding {
    /// The noise part of an encoding: sigma = noise x each channel's std (from `stats` of the
    /// undefended train features); no quantisation fitted yet.
    pub fn with_noise(defence: Defence, stats: &ChannelStats) -> Encoding {
        let sigma = stats
            .std()
            .iter()
            .map(|s| (f64::from(*s) * defence.noise) as f32)
            .collect();
        Encoding {
            defence,
            sigma,
            scale: vec![],
            offset: vec![],
        }
    }

    /// Fits the quantisation to the range of the (noisy) train features in `stats`: code 0 is
    /// each channel's minimum, the top code its maximum. A constant channel gets step 1.
    pub fn fit_quantisation(&mut self, stats: &ChannelStats) {
        if !self.defence.quantised() {
            return;
        }
        let top = self.top_code() as f32;
        self.offset = stats.min.iter().map(|m| finite_or_zero(*m)).collect();
        self.scale = stats
            .min
            .iter()
            .zip(&stats.max)
            .map(|(lo, hi)| {
                let step = (finite_or_zero(*hi) - finite_or_zero(*lo)) / top;
                if step > 0.0 { step } else { 1.0 }
            })
            .collect();
    }

    /// The largest code: 2^bits - 1.
    pub fn top_code(&self) -> u32 {
        (1u32 << self.defence.bits.min(31)) - 1
    }

    /// The encoding of a features file, from its `privynet.defence` metadata (`None`: the file
    /// is undefended). An encoding that does not parse, or whose bits are not supported, is an
    /// error naming what was found.
    pub fn from_metadata(raw: Option<&String>) -> Result<Option<Encoding>, String> {
        let Some(raw) = raw else { return Ok(None) };
        let e: Encoding = serde_json::from_str(raw)
            .map_err(|e| format!("`{METADATA_KEY}` metadata is not an encoding: {e}"))?;
        check_bits(e.defence.bits)?;
        check_noise(e.defence.noise)?;
        Ok(Some(e))
    }

    /// As JSON for the `privynet.defence` metadata.
    pub fn to_metadata(&self) -> String {
        serde_json::to_string(self).expect("an encoding serialises")
    }

    /// Adds this encoding's noise to one image's features (CHW, `plane` values per channel),
    /// drawn from `rng`.
    pub fn add_noise(&self, row: &mut [f32], plane: usize, rng: &mut impl RngCore) {
        if self.defence.noise == 0.0 {
            return;
        }
        let mut gauss = Gaussian::default();
        for (c, values) in row.chunks_mut(plane.max(1)).enumerate() {
            let s = self.sigma[c];
            for v in values {
                *v += s * gauss.sample(rng);
            }
        }
    }

    /// One image's features as codes, each channel clamped to its fitted range.
    pub fn quantise(&self, row: &[f32], plane: usize, out: &mut Vec<u8>) {
        let top = self.top_code() as f32;
        for (c, values) in row.chunks(plane.max(1)).enumerate() {
            let (o, s) = (self.offset[c], self.scale[c]);
            out.extend(
                values
                    .iter()
                    .map(|v| ((v - o) / s).round().clamp(0.0, top) as u8),
            );
        }
    }

    /// Codes back to values: offset + code x scale, per channel, for any number of rows.
    pub fn dequantise(&self, codes: &[u8], plane: usize, out: &mut Vec<f32>) {
        let plane = plane.max(1);
        let channels = self.offset.len().max(1);
        for (i, values) in codes.chunks(plane).enumerate() {
            let c = i % channels;
            let (o, s) = (self.offset[c], self.scale[c]);
            out.extend(values.iter().map(|&q| o + f32::from(q) * s));
        }
    }

    /// What the cloud receives for one image: noise, then (when quantised) the codes decoded
    /// again, in place. What the training and the attackers see, as values.
    pub fn apply(&self, row: &mut [f32], plane: usize, rng: &mut impl RngCore) {
        self.add_noise(row, plane, rng);
        if self.defence.quantised() {
            let mut codes = Vec::with_capacity(row.len());
            self.quantise(row, plane, &mut codes);
            let mut values = Vec::with_capacity(row.len());
            self.dequantise(&codes, plane, &mut values);
            row.copy_from_slice(&values);
        }
    }
}

fn finite_or_zero(v: f32) -> f32 {
    if v.is_finite() { v } else { 0.0 }
}

/// Standard normal draws by the Box-Muller transform (two per pair of uniforms), so the
/// stream depends only on the generator: no distribution crate's version can change it.
#[derive(Default)]
pub struct Gaussian {
    spare: Option<f32>,
}

impl Gaussian {
    pub fn sample(&mut self, rng: &mut impl RngCore) -> f32 {
        if let Some(z) = self.spare.take() {
            return z;
        }
        // u1 in (0, 1]: 53 random bits, never 0, so the log is finite.
        let u1 = ((rng.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64;
        let u2 = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        let r = (-2.0 * u1.ln()).sqrt();
        let t = std::f64::consts::TAU * u2;
        self.spare = Some((r * t.sin()) as f32);
        (r * t.cos()) as f32
    }
}

/// The noise generator of one image of one topology: ChaCha20 seeded by the blake3 keyed hash
/// of (topology label, image id) under the secret. Fresh for every image and topology, the same
/// on every rerun with the same secret, and not derivable without it.
pub fn image_rng(secret: &[u8; SECRET_LEN], label: &str, id: i64) -> ChaCha20Rng {
    let mut h = blake3::Hasher::new_keyed(secret);
    h.update(label.as_bytes());
    h.update(&[0]);
    h.update(&id.to_le_bytes());
    ChaCha20Rng::from_seed(*h.finalize().as_bytes())
}

/// Reads a secret file: exactly [`SECRET_LEN`] bytes.
pub fn read_secret(path: &std::path::Path) -> crate::Result<[u8; SECRET_LEN]> {
    let bytes = std::fs::read(path).map_err(|e| crate::CoreError::io(path, e))?;
    bytes
        .as_slice()
        .try_into()
        .map_err(|_| crate::CoreError::Invalid {
            path: path.to_path_buf(),
            message: format!(
                "a noise secret is {SECRET_LEN} bytes, this file holds {}",
                bytes.len()
            ),
        })
}

/// Creates the secret at `path` from the operating system's randomness when it is not there
/// (atomically, readable by the owner only), and returns it.
pub fn ensure_secret(path: &std::path::Path) -> crate::Result<[u8; SECRET_LEN]> {
    if path.exists() {
        return read_secret(path);
    }
    let mut secret = [0u8; SECRET_LEN];
    rand::rng().fill_bytes(&mut secret);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| crate::CoreError::write(dir, e))?;
    }
    crate::io::write_bytes_atomic(path, &secret)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let owner_only = std::fs::Permissions::from_mode(0o600);
        std::fs::set_permissions(path, owner_only).map_err(|e| crate::CoreError::write(path, e))?;
    }
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(rows: &[Vec<f32>], channels: usize, plane: usize) -> ChannelStats {
        let mut s = ChannelStats::new(channels, plane);
        rows.iter().for_each(|r| s.add(r));
        s
    }

    #[test]
    fn labels_and_checks() {
        assert_eq!(Defence::new(0.25, 8).unwrap().suffix(), "-n0.25-q8");
        assert_eq!(Defence::new(0.5, 32).unwrap().suffix(), "-n0.5");
        assert_eq!(Defence::new(0.0, 4).unwrap().suffix(), "-q4");
        assert_eq!(Defence::default().suffix(), "");
        assert!(Defence::default().is_none());
        assert!(Defence::new(f64::NAN, 8).unwrap_err().contains("NaN"));
        assert!(Defence::new(-0.1, 8).unwrap_err().contains("-0.1"));
        assert!(Defence::new(0.1, 16).unwrap_err().contains("16 bits"));
    }

    #[test]
    fn quantisation_error_is_at_most_half_a_step_per_channel() {
        let rows: Vec<Vec<f32>> = (0..20)
            .map(|i| {
                (0..8)
                    .map(|j| ((i * 7 + j * 13) % 17) as f32 * 0.37 - (j as f32))
                    .collect()
            })
            .collect();
        for bits in [8, 4] {
            let s = stats(&rows, 2, 4);
            let mut e = Encoding::with_noise(Defence::new(0.0, bits).unwrap(), &s);
            e.fit_quantisation(&s);
            for r in &rows {
                let mut codes = vec![];
                e.quantise(r, 4, &mut codes);
                assert!(codes.iter().all(|&q| u32::from(q) <= e.top_code()));
                let mut back = vec![];
                e.dequantise(&codes, 4, &mut back);
                for (i, (a, b)) in r.iter().zip(&back).enumerate() {
                    let half = e.scale[i / 4] / 2.0;
                    assert!(
                        (a - b).abs() <= half * 1.0001,
                        "{a} vs {b} (half step {half})"
                    );
                }
            }
        }
    }

    #[test]
    fn noise_has_the_asked_std_and_depends_on_secret_label_and_id() {
        let secret = [7u8; SECRET_LEN];
        let rows: Vec<Vec<f32>> = (0..50).map(|i| vec![i as f32; 4]).collect();
        let s = stats(&rows, 1, 4);
        let e = Encoding::with_noise(Defence::new(0.5, 32).unwrap(), &s);
        assert!((e.sigma[0] - 0.5 * s.std()[0]).abs() < 1e-4);
        let mut draws = Vec::new();
        for id in 0..4000 {
            let mut row = vec![0.0f32; 4];
            e.add_noise(&mut row, 4, &mut image_rng(&secret, "t", id));
            draws.extend(row);
        }
        let n = draws.len() as f64;
        let mean = draws.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
        let sd = (draws
            .iter()
            .map(|&v| (f64::from(v) - mean).powi(2))
            .sum::<f64>()
            / n)
            .sqrt();
        assert!(mean.abs() < 0.1 * f64::from(e.sigma[0]), "mean {mean}");
        assert!((sd / f64::from(e.sigma[0]) - 1.0).abs() < 0.03, "sd {sd}");
        let draw = |secret: &[u8; SECRET_LEN], label: &str, id| {
            let mut row = vec![0.0f32; 4];
            e.add_noise(&mut row, 4, &mut image_rng(secret, label, id));
            row
        };
        assert_eq!(draw(&secret, "t", 1), draw(&secret, "t", 1));
        assert_ne!(draw(&secret, "t", 1), draw(&secret, "t", 2));
        assert_ne!(draw(&secret, "t", 1), draw(&secret, "u", 1));
        assert_ne!(draw(&secret, "t", 1), draw(&[8u8; SECRET_LEN], "t", 1));
    }

    #[test]
    fn no_defence_leaves_features_bit_identical() {
        let row: Vec<f32> = (0..8).map(|i| i as f32 * 0.1 - 0.3).collect();
        let s = stats(std::slice::from_ref(&row), 2, 4);
        let e = Encoding::with_noise(Defence::default(), &s);
        let mut out = row.clone();
        e.apply(&mut out, 4, &mut image_rng(&[1; SECRET_LEN], "t", 0));
        assert_eq!(
            out.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            row.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
    }

    #[test]
    fn metadata_round_trips_and_names_bad_input() {
        let s = stats(&[vec![0.0, 1.0, 2.0, 3.0]], 1, 4);
        let mut e = Encoding::with_noise(Defence::new(0.25, 8).unwrap(), &s);
        e.fit_quantisation(&s);
        let back = Encoding::from_metadata(Some(&e.to_metadata())).unwrap();
        assert_eq!(back, Some(e));
        assert_eq!(Encoding::from_metadata(None).unwrap(), None);
        let bad = r#"{"defence":{"noise":0.0,"bits":7},"sigma":[],"scale":[],"offset":[]}"#;
        assert!(
            Encoding::from_metadata(Some(&bad.into()))
                .unwrap_err()
                .contains("7 bits")
        );
    }

    #[test]
    fn the_secret_is_made_once_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("secret.key");
        let a = ensure_secret(&p).unwrap();
        assert_eq!(ensure_secret(&p).unwrap(), a);
        std::fs::write(&p, b"short").unwrap();
        assert!(
            read_secret(&p)
                .unwrap_err()
                .to_string()
                .contains("32 bytes")
        );
    }
}
