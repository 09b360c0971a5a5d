//! A defended card's encoding applied to the local half's output, as the defend stage applied
//! it to the features the cloud half was trained on: noise per image (fresh from the operating
//! system's randomness, or drawn from the run's secret as the run drew it), then, quantised,
//! the codes decoded again; or, not quantised, the noisy values rounded to the type the card
//! sends (the defend stage stores them in the base's type). What the cloud half receives, as
//! values; a `--local-only` file stores the codes themselves.

use std::path::{Path, PathBuf};

use ndarray::Array4;

use privynet_core::card::Card;
use privynet_core::defence::{Encoding, SECRET_LEN, image_rng, read_secret};
use privynet_core::manifest::FeatureDtype;

use crate::ExtractError;

/// Where the noise comes from.
#[derive(Debug)]
enum Source {
    /// The operating system's randomness, fresh for every image.
    Fresh,
    /// The run's secret: `image_rng(secret, topology label, image id)`, the defend stage's
    /// generator, so the run's features come out again.
    Keyed {
        secret: [u8; SECRET_LEN],
        label: String,
    },
}

/// The card's defence, ready to apply to batches.
#[derive(Debug)]
pub(crate) struct Defender {
    encoding: Encoding,
    plane: usize,
    len: usize,
    dtype: FeatureDtype,
    source: Source,
}

impl Defender {
    /// The defence of the card in `deploy` (`None` when it has none), its noise drawn from
    /// `secret` when given. An encoding for another channel count than the card's features is
    /// named.
    pub(crate) fn new(
        card: &Card,
        deploy: &Path,
        secret: Option<&Path>,
    ) -> Result<Option<Defender>, ExtractError> {
        let Some(encoding) = card.local.defence.clone() else {
            if secret.is_some() {
                tracing::warn!("card.json has no defence: --secret is not used");
            }
            return Ok(None);
        };
        let [c, h, w] = card.local.features_shape;
        let mut widths = vec![encoding.sigma.len()];
        if encoding.defence.quantised() {
            widths.extend([encoding.scale.len(), encoding.offset.len()]);
        }
        let fitted = widths.iter().all(|&n| n == c);
        if !fitted {
            return Err(ExtractError::Input {
                path: deploy.join(privynet_core::card::CARD_JSON),
                message: format!(
                    "its defence is fitted for {} channels, but its features have {c}",
                    encoding.sigma.len()
                ),
            });
        }
        let source = match secret {
            Some(p) => Source::Keyed {
                secret: read_secret(p)?,
                label: card.topology.clone(),
            },
            None => Source::Fresh,
        };
        Ok(Some(Defender {
            encoding,
            plane: h * w,
            len: c * h * w,
            dtype: card.local.features_dtype,
            source,
        }))
    }

    /// Applies the defence to a batch [N, C, H, W] of the local half's output as sent, the
    /// rows in the order of `ids`.
    pub(crate) fn apply(&self, features: &mut Array4<f32>, ids: &[i64]) {
        if !features.is_standard_layout() {
            *features = features.as_standard_layout().into_owned();
        }
        let values = features
            .as_slice_mut()
            .expect("a standard-layout array is one slice");
        let mut fresh = rand::rng();
        for (row, &id) in values.chunks_mut(self.len).zip(ids) {
            match &self.source {
                Source::Fresh => self.encoding.apply(row, self.plane, &mut fresh),
                Source::Keyed { secret, label } => {
                    let mut rng = image_rng(secret, label, id);
                    self.encoding.apply(row, self.plane, &mut rng);
                }
            }
        }
        let noisy_floats = !self.encoding.defence.quantised() && self.encoding.defence.noise > 0.0;
        if noisy_floats && self.dtype == FeatureDtype::Float16 {
            features.mapv_inplace(|v| half::f16::from_f32(v).to_f32());
        }
    }
}

/// Checks that a features file's defence (its `privynet.defence` metadata) is the card's:
/// the cloud half was trained on features defended with that very encoding.
pub(crate) fn check_file_defence(
    file: Option<&Encoding>,
    card: &Card,
    path: &Path,
) -> Result<(), ExtractError> {
    let want = card.local.defence.as_ref();
    let message = match (file, want) {
        (a, b) if a == b => return Ok(()),
        (None, Some(c)) => format!(
            "holds undefended features, but card.json's cloud half was trained on features defended with {}; run the local half with this card (--local-only) to make them",
            c.defence.describe()
        ),
        (Some(f), None) => format!(
            "holds features defended with {}, but card.json has no defence: its cloud half was trained on undefended features",
            f.defence.describe()
        ),
        (Some(f), Some(c)) if f.defence != c.defence => format!(
            "holds features defended with {}, but card.json's defence is {}",
            f.defence.describe(),
            c.defence.describe()
        ),
        _ => "holds features defended with another fitted encoding (per-channel noise, code ranges) than card.json's".to_string(),
    };
    Err(ExtractError::Input {
        path: PathBuf::from(path),
        message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::predict::tests::card;
    use privynet_core::defence::{ChannelStats, Defence};

    /// A card of `shape` features defended with `defence`, fitted on `rows`.
    fn defended(shape: [usize; 3], defence: Defence, rows: &[Vec<f32>]) -> Card {
        let mut c = card(shape, 3, 4);
        let mut stats = ChannelStats::new(shape[0], shape[1] * shape[2]);
        rows.iter().for_each(|r| stats.add(r));
        let mut e = Encoding::with_noise(defence, &stats);
        e.fit_quantisation(&stats);
        c.local.defence = Some(e);
        c
    }

    fn batch() -> Array4<f32> {
        Array4::from_shape_fn((3, 2, 2, 2), |(n, c, y, x)| {
            (n * 8 + c * 4 + y * 2 + x) as f32 * 0.37 - 1.5 + (c as f32)
        })
    }

    fn rows(a: &Array4<f32>) -> Vec<Vec<f32>> {
        a.outer_iter()
            .map(|r| r.iter().copied().collect())
            .collect()
    }

    #[test]
    fn eight_bits_without_noise_change_the_features_only_by_quantising() {
        let plain = batch();
        let card = defended([2, 2, 2], Defence::new(0.0, 8).unwrap(), &rows(&plain));
        let d = Defender::new(&card, Path::new("d"), None).unwrap().unwrap();
        let mut got = plain.clone();
        d.apply(&mut got, &[0, 1, 2]);
        let e = card.local.defence.as_ref().unwrap();
        for (r, got) in rows(&plain).iter().zip(rows(&got)) {
            let (mut codes, mut want) = (vec![], vec![]);
            e.quantise(r, 4, &mut codes);
            e.dequantise(&codes, 4, &mut want);
            assert_eq!(got, want);
            let mut again = vec![];
            e.quantise(&got, 4, &mut again);
            assert_eq!(
                again, codes,
                "the values give back the codes they were decoded from"
            );
        }
        assert_ne!(got, plain);
    }

    #[test]
    fn keyed_noise_repeats_and_fresh_noise_does_not() {
        let plain = batch();
        let card = defended([2, 2, 2], Defence::new(0.5, 32).unwrap(), &rows(&plain));
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret.key");
        std::fs::write(&secret, [9u8; SECRET_LEN]).unwrap();
        let run = |secret: Option<&Path>| {
            let d = Defender::new(&card, Path::new("d"), secret)
                .unwrap()
                .unwrap();
            let mut f = plain.clone();
            d.apply(&mut f, &[4, 5, 6]);
            f
        };
        assert_eq!(run(Some(&secret)), run(Some(&secret)));
        assert_ne!(run(None), run(None));
        assert_ne!(run(Some(&secret)), plain);
        // Float16 is sent: the noisy values are rounded to it, as the defend stage stores them.
        let f = run(None);
        assert!(f.iter().all(|&v| half::f16::from_f32(v).to_f32() == v));
    }

    #[test]
    fn a_file_of_another_defence_than_the_card_is_named() {
        let card = defended([2, 2, 2], Defence::new(0.0, 8).unwrap(), &rows(&batch()));
        let e = card.local.defence.as_ref();
        assert!(check_file_defence(e, &card, Path::new("f")).is_ok());
        let msg = check_file_defence(None, &card, Path::new("f.parquet"))
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("f.parquet: holds undefended features") && msg.contains("8-bit"),
            "{msg}"
        );
        let mut other = e.unwrap().clone();
        other.scale[0] *= 2.0;
        let msg = check_file_defence(Some(&other), &card, Path::new("f")).unwrap_err();
        assert!(msg.to_string().contains("another fitted encoding"), "{msg}");
        let narrow = card.local.features_shape;
        let mut wrong = card.clone();
        wrong.local.features_shape = [3, narrow[1], narrow[2]];
        let msg = Defender::new(&wrong, Path::new("d"), None)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("fitted for 2 channels") && msg.contains("have 3"),
            "{msg}"
        );
    }
}
