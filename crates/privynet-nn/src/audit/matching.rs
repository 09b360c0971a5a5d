//! The channel-matching attacker's first step: per-channel statistical signatures (mean,
//! standard deviation, fraction of zeros, quantiles, the normalised mean spatial map), computed
//! on the attacker's own all-channel features and on the received features, then an optimal
//! assignment of received channels to pretrained channels (Hungarian algorithm). Signatures
//! do not depend on channel order, so shuffled channels are matched as well.

use pathfinding::kuhn_munkres::kuhn_munkres_min;
use pathfinding::matrix::Matrix;

/// Per-channel signatures of `n` samples of `c` channels of `hw` values each (row-major CHW).
pub fn signatures(x: &[f32], n: usize, c: usize, hw: usize) -> Vec<Vec<f64>> {
    let len = c * hw;
    (0..c)
        .map(|ch| {
            let mut vals: Vec<f32> = Vec::with_capacity(n * hw);
            let mut map = vec![0.0f64; hw];
            for s in 0..n {
                let row = &x[s * len + ch * hw..s * len + (ch + 1) * hw];
                vals.extend_from_slice(row);
                for (m, v) in map.iter_mut().zip(row) {
                    *m += f64::from(*v);
                }
            }
            let count = vals.len().max(1) as f64;
            let mean = vals.iter().map(|v| f64::from(*v)).sum::<f64>() / count;
            let var = vals
                .iter()
                .map(|v| (f64::from(*v) - mean).powi(2))
                .sum::<f64>()
                / count;
            let zeros = vals.iter().filter(|v| **v <= 0.0).count() as f64 / count;
            vals.sort_by(f32::total_cmp);
            let q = |p: f64| f64::from(vals[((vals.len() - 1) as f64 * p) as usize]);
            let norm = map.iter().map(|m| m * m).sum::<f64>().sqrt().max(1e-12);
            let mut sig = vec![mean, var.sqrt(), zeros, q(0.1), q(0.5), q(0.9), q(0.99)];
            sig.extend(map.iter().map(|m| m / norm));
            sig
        })
        .collect()
}

/// For each received channel, the pool channel it is matched to (an optimal one-to-one
/// assignment minimising the total distance between standardised signatures).
pub fn match_channels(pool: &[Vec<f64>], received: &[Vec<f64>]) -> Vec<usize> {
    let dims = pool.first().map_or(0, Vec::len);
    // Standardise every signature dimension by its spread over the pool's channels, so that
    // no statistic dominates by its units.
    let (mut mean, mut spread) = (vec![0.0; dims], vec![0.0; dims]);
    for k in 0..dims {
        mean[k] = pool.iter().map(|s| s[k]).sum::<f64>() / pool.len() as f64;
        spread[k] = (pool.iter().map(|s| (s[k] - mean[k]).powi(2)).sum::<f64>()
            / pool.len() as f64)
            .sqrt()
            .max(1e-9);
    }
    let standardise =
        |s: &Vec<f64>| -> Vec<f64> { (0..dims).map(|k| (s[k] - mean[k]) / spread[k]).collect() };
    let pool_standardised: Vec<Vec<f64>> = pool.iter().map(standardise).collect();
    let received_standardised: Vec<Vec<f64>> = received.iter().map(standardise).collect();
    let costs: Vec<i64> = received_standardised
        .iter()
        .flat_map(|r| {
            pool_standardised.iter().map(move |p| {
                let d: f64 = r
                    .iter()
                    .zip(p)
                    .map(|(a, b)| (a - b).powi(2))
                    .sum::<f64>()
                    .sqrt();
                (d * 1e6) as i64
            })
        })
        .collect();
    let cost_matrix = Matrix::from_vec(received.len(), pool.len(), costs)
        .expect("the cost matrix has received x pool entries");
    kuhn_munkres_min(&cost_matrix).1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shuffled_channels_are_matched() {
        // 6 channels with distinct statistics; the receiver gets channels 4, 1, 5 in that order.
        let (n, c, hw) = (50, 6, 4);
        let x: Vec<f32> = (0..n * c * hw)
            .map(|i| {
                let ch = (i / hw) % c;
                let s = i / (c * hw);
                ((ch as f32 + 1.0) * ((s * 7 + i % hw) % 5) as f32 * 0.3 - ch as f32 * 0.2).max(0.0)
            })
            .collect();
        let pool = signatures(&x, n, c, hw);
        let picked = [4usize, 1, 5];
        let mut received = Vec::new();
        for s in 0..n {
            for &ch in &picked {
                received.extend_from_slice(&x[s * c * hw + ch * hw..s * c * hw + (ch + 1) * hw]);
            }
        }
        let got = match_channels(&pool, &signatures(&received, n, 3, hw));
        assert_eq!(got, picked.to_vec());
    }
}
