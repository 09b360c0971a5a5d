//! What a cloud training run records: each epoch's metrics and the run's totals. The metrics
//! also go into the state a stopped run continues from (`resume`), which must give them back
//! bit for bit, so their JSON form is exact (see [`json_f64`]).

/// One epoch's metrics.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EpochMetrics {
    pub epoch: usize,
    #[serde(with = "json_f64")]
    pub lr: f64,
    #[serde(with = "json_f64")]
    pub train_loss: f64,
    #[serde(with = "json_f64")]
    pub train_accuracy: f64,
    #[serde(with = "json_f64")]
    pub val_loss: f64,
    #[serde(with = "json_f64")]
    pub val_accuracy: f64,
    #[serde(with = "json_f64")]
    pub test_loss: f64,
    #[serde(with = "json_f64")]
    pub test_accuracy: f64,
    #[serde(with = "json_f64")]
    pub seconds: f64,
}

/// What a training run did. `epochs` holds the epochs before a resumed run's start too, and
/// is shorter than the schedule when the run stopped at `Checkpoints::stop_after` or early.
#[derive(Debug, Clone)]
pub struct TrainReport {
    pub epochs: Vec<EpochMetrics>,
    /// The epoch (index into `epochs`) whose network is kept: the last, or with
    /// `train.patience` the best on val.
    pub kept: usize,
    /// Training ended before the schedule's last epoch because val accuracy stopped
    /// improving (`train.patience`): the run is finished.
    pub early_stopped: bool,
    pub samples_per_second: f64,
    pub seconds: f64,
}

/// An f64 in JSON, exactly. A finite value is a JSON number: serde_json writes the shortest
/// decimal that parses back to the same double, and parses it back exactly (its
/// `float_roundtrip` feature, which the workspace enables). A JSON number cannot hold an
/// infinity or NaN (a validation loss can be either once the weights blow up), so those are
/// the strings Rust prints for them (`inf`, `-inf`, `NaN`). Strings of finite values are read
/// too: states saved before the metrics were numbers hold every value as a string.
pub mod json_f64 {
    use serde::de::Error;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &f64, s: S) -> Result<S::Ok, S::Error> {
        if value.is_finite() {
            s.serialize_f64(*value)
        } else {
            s.collect_str(value)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            Number(f64),
            Text(String),
        }
        match Written::deserialize(d)? {
            Written::Number(value) => Ok(value),
            Written::Text(text) => text
                .parse::<f64>()
                .map_err(|e| D::Error::custom(format!("{text:?}: {e}"))),
        }
    }
}

/// The epoch (index) with the best val accuracy, the first of equals: a later epoch must do
/// strictly better to replace it.
pub fn best_epoch(epochs: &[EpochMetrics]) -> Option<usize> {
    let mut best: Option<usize> = None;
    for (i, m) in epochs.iter().enumerate() {
        if best.is_none_or(|b| m.val_accuracy > epochs[b].val_accuracy) {
            best = Some(i);
        }
    }
    best
}

/// Whether training stops before another epoch: val accuracy has not improved on its best for
/// `patience` epochs.
pub fn patience_spent(epochs: &[EpochMetrics], patience: Option<usize>) -> bool {
    match (patience, best_epoch(epochs)) {
        (Some(p), Some(best)) => epochs.len() - 1 - best >= p,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};

    use super::*;

    fn metrics_of(value: f64) -> EpochMetrics {
        EpochMetrics {
            epoch: 1,
            lr: value,
            train_loss: -value,
            train_accuracy: value,
            val_loss: value,
            val_accuracy: value,
            test_loss: value,
            test_accuracy: value,
            seconds: value,
        }
    }

    fn round_trip(m: &EpochMetrics) -> EpochMetrics {
        let text = serde_json::to_string(m).unwrap();
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn every_double_survives_json_bit_for_bit() {
        let edges = [
            0.0,
            -0.0,
            f64::MIN_POSITIVE,
            5e-324,
            f64::MAX,
            f64::EPSILON,
            0.1 + 0.2,
            2.0 / 3.0,
            1e-300,
            f64::INFINITY,
            f64::NEG_INFINITY,
        ];
        // Doubles of every exponent and mantissa, subnormals included.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let random = (0..20_000).map(|_| f64::from_bits(rng.random::<u64>()));
        for value in edges.into_iter().chain(random).filter(|v| !v.is_nan()) {
            let m = metrics_of(value);
            let back = round_trip(&m);
            assert_eq!(back.lr.to_bits(), value.to_bits(), "{value:e}");
            assert_eq!(back.train_loss.to_bits(), (-value).to_bits(), "{value:e}");
            assert_eq!(back, m);
        }
        let nan = round_trip(&metrics_of(f64::NAN));
        assert!(nan.lr.is_nan() && nan.seconds.is_nan());
    }

    #[test]
    fn finite_values_are_json_numbers_and_others_strings() {
        let text = serde_json::to_string(&metrics_of(0.5)).unwrap();
        assert!(text.contains(r#""lr":0.5,"#), "{text}");
        let text = serde_json::to_string(&metrics_of(f64::INFINITY)).unwrap();
        assert!(text.contains(r#""lr":"inf","train_loss":"-inf""#), "{text}");
    }

    #[test]
    fn patience_counts_epochs_since_the_first_best_val_accuracy() {
        let run =
            |vals: &[f64]| -> Vec<EpochMetrics> { vals.iter().map(|&v| metrics_of(v)).collect() };
        assert_eq!(best_epoch(&[]), None);
        assert_eq!(best_epoch(&run(&[0.2, 0.5, 0.5, 0.4])), Some(1));
        assert!(!patience_spent(&run(&[0.2, 0.5, 0.5, 0.4]), None));
        assert!(!patience_spent(&run(&[0.2, 0.5, 0.5]), Some(2)));
        // An equal score is not an improvement.
        assert!(patience_spent(&run(&[0.2, 0.5, 0.5, 0.4]), Some(2)));
        assert!(!patience_spent(&run(&[0.2, 0.5, 0.5, 0.6]), Some(2)));
        assert!(patience_spent(&run(&[0.9, 0.1]), Some(1)));
    }
}
