//! The secret channel selection. Both methods produce an ordering of all channels for a seed;
//! a selection of D channels is the first D of that ordering. So, for one seed, narrower
//! selections are prefixes of wider ones, which lets the extract stage derive every channel
//! count at a cut from one run at the widest.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use privynet_core::manifest::SelectionMethod;

use crate::SliceError;

/// A drawn selection: channel indices in output order, with their Fisher scores if scored.
#[derive(Debug, Clone, PartialEq)]
pub struct Selection {
    pub method: SelectionMethod,
    pub seed: u64,
    pub channels: Vec<i64>,
    pub scores: Option<Vec<f64>>,
}

/// The seeded random ordering of `c` channels.
pub fn random_order(c: usize, seed: u64) -> Vec<i64> {
    let mut order: Vec<i64> = (0..c as i64).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    order
}

/// PrivyNet's hierarchical ordering: the top `top_fraction` of channels by Fisher score, in a
/// seeded random order, then the rest in a seeded random order. D up to the top count draws
/// from the most discriminative channels only.
pub fn fisher_order(scores: &[f64], top_fraction: f64, seed: u64) -> Vec<i64> {
    let c = scores.len();
    let top = ((c as f64 * top_fraction).ceil() as usize).clamp(1, c);
    let mut ranked: Vec<usize> = (0..c).collect();
    // Highest score first; ties by index keep it deterministic.
    ranked.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut head: Vec<i64> = ranked[..top].iter().map(|&i| i as i64).collect();
    let mut tail: Vec<i64> = ranked[top..].iter().map(|&i| i as i64).collect();
    head.shuffle(&mut rng);
    tail.shuffle(&mut rng);
    head.extend(tail);
    head
}

/// Takes the first `d` channels of an ordering of `c`.
pub fn take(order: &[i64], d: usize, cut: &str) -> Result<Vec<i64>, SliceError> {
    if d == 0 || d > order.len() {
        return Err(SliceError::Selection(format!(
            "D = {d} channels requested at `{cut}`, which has {} channels (expected 1..={})",
            order.len(),
            order.len()
        )));
    }
    Ok(order[..d].to_vec())
}

/// Fisher discriminant ratio per channel: between-class over within-class variance of the
/// channel's spatially averaged activation. `acts` is [images][channels], `labels` per image.
pub fn fisher_scores(acts: &[Vec<f32>], labels: &[i32], classes: usize) -> Vec<f64> {
    let c = acts.first().map_or(0, Vec::len);
    let mut scores = vec![0.0; c];
    for (ch, score) in scores.iter_mut().enumerate() {
        let mut sum = vec![0.0f64; classes];
        let mut cnt = vec![0usize; classes];
        for (a, &l) in acts.iter().zip(labels) {
            sum[l as usize] += f64::from(a[ch]);
            cnt[l as usize] += 1;
        }
        let n: usize = cnt.iter().sum();
        let mu = sum.iter().sum::<f64>() / n.max(1) as f64;
        let means: Vec<f64> = sum
            .iter()
            .zip(&cnt)
            .map(|(s, &k)| if k > 0 { s / k as f64 } else { 0.0 })
            .collect();
        let between: f64 = means
            .iter()
            .zip(&cnt)
            .map(|(m, &k)| k as f64 * (m - mu).powi(2))
            .sum();
        let within: f64 = acts
            .iter()
            .zip(labels)
            .map(|(a, &l)| (f64::from(a[ch]) - means[l as usize]).powi(2))
            .sum();
        // A dead channel (no variance at all) scores 0 rather than 0/0.
        *score = if within > 0.0 {
            between / within
        } else if between > 0.0 {
            f64::MAX
        } else {
            0.0
        };
    }
    scores
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn fisher_prefers_the_discriminative_channel() {
        // Channel 0 separates the classes, channel 1 is noise.
        let acts = vec![
            vec![0.0, 1.0],
            vec![0.1, 0.0],
            vec![1.0, 1.0],
            vec![1.1, 0.0],
        ];
        let s = fisher_scores(&acts, &[0, 0, 1, 1], 2);
        assert!(s[0] > 10.0 * s[1], "{s:?}");
        let order = fisher_order(&s, 0.5, 3);
        assert_eq!(order[0], 0);
    }

    #[test]
    fn d_out_of_range_is_refused() {
        let order = random_order(8, 1);
        assert!(take(&order, 0, "x").is_err());
        let e = take(&order, 9, "conv1").unwrap_err().to_string();
        assert!(e.contains("conv1") && e.contains("8 channels"), "{e}");
    }

    proptest! {
        #[test]
        fn orders_are_permutations_and_deterministic(c in 1usize..300, seed in any::<u64>()) {
            let a = random_order(c, seed);
            prop_assert_eq!(&a, &random_order(c, seed));
            let mut s = a.clone();
            s.sort();
            prop_assert_eq!(s, (0..c as i64).collect::<Vec<_>>());
            let scores: Vec<f64> = (0..c).map(|i| ((i * 7919) % 13) as f64).collect();
            let f = fisher_order(&scores, 0.5, seed);
            let mut s = f.clone();
            s.sort();
            prop_assert_eq!(s, (0..c as i64).collect::<Vec<_>>());
        }
    }
}
