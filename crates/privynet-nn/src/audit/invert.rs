//! The optimisation attack (He et al., ACSAC 2019: regularised maximum-likelihood estimation):
//! for each victim, gradient descent on an image in [0, 1] so that the public local network's
//! features of it match the received features, plus a total-variation prior. Each victim is
//! optimised from every start (the IRN's reconstruction, the pool's mean image); what is kept is
//! the image with the lowest feature-matching error seen from any start at any step, the start
//! itself included. That error is what the attacker can compute; the ground truth never enters,
//! and so the kept image never matches the features worse than the IRN's reconstruction.
//! Under a defence (known to the attacker), the error weighs each channel by the likelihood of
//! the noise and the rounding ([`likelihood_weights`]).

use burn::tensor::{Device, Tensor, TensorData};

use privynet_core::defence::Encoding;
use privynet_core::manifest::{OptimizationParams, Schedule};

use super::attack::lr_at_step;
use super::local_net::{LocalNet, Preprocessing};

/// Adam's moment decays and epsilon (the usual defaults).
const BETA1: f64 = 0.9;
const BETA2: f64 = 0.999;
const EPSILON: f64 = 1e-8;

/// What the attacker optimises through: the local network as it believes it to be, the public
/// preprocessing, and its per-channel feature scales.
#[derive(Debug, Clone)]
pub struct Inverter<'a> {
    /// The network on an autodiff device.
    pub net: &'a LocalNet,
    pub preprocessing: &'a Preprocessing,
    /// 1 / standard deviation of each feature channel over the attacker's own pool, so that
    /// every channel weighs alike in the feature error; under a defence, times the square root
    /// of [`likelihood_weights`], so that the error is the noise's likelihood.
    pub inv_std: &'a [f32],
    pub params: &'a OptimizationParams,
    pub device: &'a Device,
    /// Feature shape [D, h, w] and image side.
    pub feature_shape: [usize; 3],
    pub size: usize,
}

/// The kept reconstructions of the victims.
#[derive(Debug, Clone)]
pub struct Inverted {
    /// [n, 3, size, size] flat.
    pub recon: Vec<f32>,
    /// Feature-matching error of each kept image.
    pub feature_error: Vec<f64>,
    /// Which start each kept image descends from (an index into the starts).
    pub start: Vec<usize>,
}

/// One batch's descent from one start: the best image per victim and its error.
struct Descent {
    x: Vec<f32>,
    error: Vec<f64>,
}

impl Inverter<'_> {
    fn image_len(&self) -> usize {
        3 * self.size * self.size
    }
    fn feature_len(&self) -> usize {
        self.feature_shape.iter().product()
    }

    /// Feature-matching error of each image against its target features (no optimisation).
    pub fn feature_error(&self, images: &[f32], targets: &[f32]) -> Vec<f64> {
        let b = self.params.batch_size;
        images
            .chunks(b * self.image_len())
            .zip(targets.chunks(b * self.feature_len()))
            .flat_map(|(x, t)| {
                let n = x.len() / self.image_len();
                let (_, error) = self.errors(x.to_vec(), &self.target(t, n), n, false);
                error
            })
            .collect()
    }

    /// Optimises every victim (`targets`: [n, D, h, w] flat) from each of `starts` (each [n, 3,
    /// size, size] flat) in batches; `on_batch` sees how many victims are done.
    pub fn invert(
        &self,
        targets: &[f32],
        starts: &[&[f32]],
        mut on_batch: impl FnMut(usize),
    ) -> Inverted {
        let (il, fl, b) = (self.image_len(), self.feature_len(), self.params.batch_size);
        let n = targets.len() / fl;
        let mut out = Inverted {
            recon: Vec::with_capacity(n * il),
            feature_error: Vec::with_capacity(n),
            start: Vec::with_capacity(n),
        };
        for lo in (0..n).step_by(b) {
            let hi = (lo + b).min(n);
            let target = self.target(&targets[lo * fl..hi * fl], hi - lo);
            let runs: Vec<Descent> = starts
                .iter()
                .map(|s| self.descend(&target, s[lo * il..hi * il].to_vec(), hi - lo))
                .collect();
            for i in 0..hi - lo {
                let (k, best) = runs
                    .iter()
                    .enumerate()
                    .min_by(|a, b| a.1.error[i].total_cmp(&b.1.error[i]))
                    .expect("at least one start");
                out.recon.extend_from_slice(&best.x[i * il..(i + 1) * il]);
                out.feature_error.push(best.error[i]);
                out.start.push(k);
            }
            on_batch(hi);
        }
        out
    }

    /// The optimisation family's refinement: every victim optimised from the IRN's
    /// reconstruction (`irn_recon`) and from the mean of the attacker pool's images (`pool_y`);
    /// start 0 is the IRN's, start 1 the mean.
    pub fn refine(
        &self,
        targets: &[f32],
        irn_recon: &[f32],
        pool_y: &[f32],
        on_batch: impl FnMut(usize),
    ) -> Inverted {
        let mean = mean_image(pool_y, self.size);
        let n = targets.len() / self.feature_len().max(1);
        let mean_start: Vec<f32> = mean.iter().copied().cycle().take(n * mean.len()).collect();
        self.invert(targets, &[irn_recon, &mean_start], on_batch)
    }

    fn target(&self, t: &[f32], n: usize) -> Tensor<4> {
        let [d, h, w] = self.feature_shape;
        Tensor::from_data(TensorData::new(t.to_vec(), [n, d, h, w]), self.device)
    }

    /// Per-victim feature errors of images `x` ([n, 3, size, size]) and, with `grad`, the
    /// gradient of the objective (errors plus the TV prior, summed over victims) by pixel.
    fn errors(
        &self,
        x: Vec<f32>,
        target: &Tensor<4>,
        n: usize,
        grad: bool,
    ) -> (Option<Vec<f32>>, Vec<f64>) {
        let s = self.size;
        let d = self.feature_shape[0];
        let mut xt = Tensor::<4>::from_data(TensorData::new(x, [n, 3, s, s]), self.device);
        if grad {
            xt = xt.require_grad();
        }
        let features = self.net.forward(self.preprocessing.apply(xt.clone()));
        let scale = Tensor::<4>::from_data(
            TensorData::new(self.inv_std.to_vec(), [1, d, 1, 1]),
            self.device,
        );
        let diff = (features - target.clone()) * scale;
        let per = (diff.clone() * diff).mean_dim(3).mean_dim(2).mean_dim(1);
        let error: Vec<f64> = per
            .clone()
            .into_data()
            .iter::<f32>()
            .map(f64::from)
            .collect();
        if !grad {
            return (None, error);
        }
        let mut objective = per.sum();
        if self.params.tv_weight > 0.0 {
            let dh = xt.clone().slice([0..n, 0..3, 1..s, 0..s])
                - xt.clone().slice([0..n, 0..3, 0..s - 1, 0..s]);
            let dw = xt.clone().slice([0..n, 0..3, 0..s, 1..s])
                - xt.clone().slice([0..n, 0..3, 0..s, 0..s - 1]);
            // Per victim, as the IRN's prior: mean |dh| + mean |dw|, summed over victims.
            let tv = (dh.abs().mean() + dw.abs().mean()).mul_scalar(n as f32);
            objective = objective + tv.mul_scalar(self.params.tv_weight as f32);
        }
        let grads = objective.backward();
        let g = xt
            .grad(&grads)
            .expect("the image requires its gradient")
            .into_data()
            .try_to_vec::<f32>()
            .expect("f32 gradients");
        (Some(g), error)
    }

    /// Adam on the pixels of one batch from `x0`, projected back into [0, 1] after each step,
    /// keeping each victim's lowest-error image (the start counts).
    fn descend(&self, target: &Tensor<4>, x0: Vec<f32>, n: usize) -> Descent {
        let p = self.params;
        let il = self.image_len();
        let mut x = x0;
        x.iter_mut().for_each(|v| *v = v.clamp(0.0, 1.0));
        let (mut m, mut v) = (vec![0f64; x.len()], vec![0f64; x.len()]);
        let mut best = Descent {
            x: x.clone(),
            error: vec![f64::INFINITY; n],
        };
        for step in 0..=p.iterations {
            let last = step == p.iterations;
            let (g, error) = self.errors(x.clone(), target, n, !last);
            for (i, e) in error.iter().enumerate() {
                if *e < best.error[i] {
                    best.error[i] = *e;
                    best.x[i * il..(i + 1) * il].copy_from_slice(&x[i * il..(i + 1) * il]);
                }
            }
            let Some(g) = g else { break };
            let lr = lr_at_step(p.lr, Schedule::Cosine, step, 0, p.iterations);
            let t = (step + 1) as i32;
            let (c1, c2) = (1.0 - BETA1.powi(t), 1.0 - BETA2.powi(t));
            for (k, gk) in g.iter().enumerate() {
                let gk = f64::from(*gk);
                m[k] = BETA1 * m[k] + (1.0 - BETA1) * gk;
                v[k] = BETA2 * v[k] + (1.0 - BETA2) * gk * gk;
                let stepped = f64::from(x[k]) - lr * (m[k] / c1) / ((v[k] / c2).sqrt() + EPSILON);
                x[k] = stepped.clamp(0.0, 1.0) as f32;
            }
        }
        best
    }
}

/// The per-channel weights of the feature error under a defence (Kerckhoffs: the attacker
/// knows the encoding): the received value of channel c is its feature plus noise of variance
/// σ_c² plus, when quantised, a rounding error of variance scale_c²/12, so the Gaussian
/// likelihood weighs channel c's raw squared error by p_c = 1/(σ_c² + scale_c²/12). The
/// inverter's error is already standardised by `inv_std` (1/std of the attacker's own, defended,
/// features), so the weight returned is what turns that into the likelihood: p_c / inv_std_c²,
/// normalised to average 1 over the channels. Without a defence: `None`, and the error stays
/// exactly as it is. A channel with neither noise nor quantisation (σ = 0: constant over the
/// train split) weighs as the most reliable other channel.
pub fn likelihood_weights(encoding: &Encoding, inv_std: &[f32]) -> Option<Vec<f32>> {
    if encoding.defence.is_none() {
        return None;
    }
    let variance = |c: usize| {
        let sigma = encoding.sigma.get(c).map_or(0.0, |s| f64::from(*s));
        let step = encoding.scale.get(c).map_or(0.0, |s| f64::from(*s));
        sigma * sigma + step * step / 12.0
    };
    let relative: Vec<Option<f64>> = inv_std
        .iter()
        .enumerate()
        .map(|(c, &k)| {
            let v = variance(c);
            let k2 = f64::from(k) * f64::from(k);
            (v > 0.0 && k2 > 0.0).then(|| 1.0 / (v * k2))
        })
        .collect();
    let top = relative.iter().flatten().copied().fold(0.0, f64::max);
    let filled: Vec<f64> = relative.iter().map(|r| r.unwrap_or(top)).collect();
    let mean = filled.iter().sum::<f64>() / filled.len().max(1) as f64;
    if mean <= 0.0 || !mean.is_finite() {
        return None;
    }
    Some(filled.iter().map(|w| (w / mean) as f32).collect())
}

/// The mean of the pool's images (each [3, size, size]).
pub fn mean_image(pool_y: &[f32], size: usize) -> Vec<f32> {
    let image_len = 3 * size * size;
    let n_pool = (pool_y.len() / image_len).max(1);
    let mut mean_img = vec![0f32; image_len];
    for row in pool_y.chunks_exact(image_len) {
        for (m, v) in mean_img.iter_mut().zip(row) {
            *m += v / n_pool as f32;
        }
    }
    mean_img
}

#[cfg(test)]
mod tests {
    use super::*;
    use privynet_core::defence::Defence;

    fn encoding(noise: f64, bits: u8, sigma: &[f32], scale: &[f32]) -> Encoding {
        Encoding {
            defence: Defence::new(noise, bits).unwrap(),
            sigma: sigma.to_vec(),
            scale: scale.to_vec(),
            offset: vec![0.0; scale.len()],
        }
    }

    #[test]
    fn likelihood_weights_follow_the_noise_and_the_bins() {
        assert_eq!(
            likelihood_weights(&encoding(0.0, 32, &[0.0; 2], &[]), &[1.0, 2.0]),
            None
        );
        // Noise a fixed fraction of each channel's std, errors standardised by that std: every
        // channel is as noisy as the others, so the weights are uniform.
        let std = [0.5f32, 2.0, 8.0];
        let inv: Vec<f32> = std.iter().map(|s| 1.0 / s).collect();
        let sigma: Vec<f32> = std.iter().map(|s| 0.25 * s).collect();
        let w = likelihood_weights(&encoding(0.25, 32, &sigma, &[]), &inv).unwrap();
        assert!(w.iter().all(|v| (v - 1.0).abs() < 1e-5), "{w:?}");
        // Quantisation only: the weight is (std / step)^2, averaging 1.
        let w = likelihood_weights(&encoding(0.0, 8, &[0.0; 2], &[0.1, 0.2]), &[1.0, 1.0]).unwrap();
        assert!(
            (w[0] / w[1] - 4.0).abs() < 1e-4 && (w[0] + w[1] - 2.0).abs() < 1e-5,
            "{w:?}"
        );
    }
}
