//! Training the attacker's IRN on (features, image) pairs until it converges, and
//! reconstructing victims' images.
//!
//! A privacy number is only as good as the attacker behind it, so training does not stop after
//! a fixed few epochs: part of the attacker's own pool is held out, mean PSNR on it is scored
//! after every epoch, the best epoch's weights are kept, and training stops once held-out PSNR
//! has not gained `min_delta` dB for `patience` epochs (or at `max_epochs`, reported as not
//! converged). Features are standardised per channel with statistics of the attacker's own
//! training pairs, which it could compute just the same.

use std::time::Instant;

use burn::module::Module;
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Tensor, TensorData};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use privynet_core::manifest::{AttackParams, Schedule};

use super::irn::{Irn, IrnSpec, spec};
use crate::NnError;
use crate::kernels::FusedAdam;
use crate::metrics;

/// Salt for the held-out draw, so that it is not the shuffling stream of the first epoch.
const HOLDOUT_SALT: u64 = 0x401d_0ff5;

/// One epoch of the attacker's training curve.
#[derive(Debug, Clone, PartialEq)]
pub struct EpochRecord {
    pub epoch: usize,
    /// Learning rate at the epoch's last step.
    pub lr: f64,
    pub train_loss: f64,
    /// Mean PSNR (each image capped at 100 dB) and SSIM on the held-out part of the pool.
    pub heldout_psnr: f64,
    pub heldout_ssim: f64,
    /// Seconds since training started, at the end of this epoch.
    pub seconds: f64,
}

/// What early stopping says after an epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StopStep {
    /// This epoch is the best so far: keep its weights.
    pub best: bool,
    /// Stop training now.
    pub stop: bool,
}

/// Early stopping on a score that should rise (held-out PSNR). The best epoch is the one with
/// the highest score; patience counts epochs since the score last rose by at least
/// `min_delta` above the level of the previous such rise, so slow creep does not keep a run
/// going forever but its weights are still the best ones seen.
#[derive(Debug, Clone)]
pub struct EarlyStopping {
    patience: usize,
    min_delta: f64,
    level: f64,
    best: f64,
    best_epoch: usize,
    wait: usize,
}

impl EarlyStopping {
    pub fn new(patience: usize, min_delta: f64) -> Self {
        Self {
            patience,
            min_delta,
            level: f64::NEG_INFINITY,
            best: f64::NEG_INFINITY,
            best_epoch: 0,
            wait: 0,
        }
    }

    /// Records `score` for `epoch` (1-based).
    pub fn observe(&mut self, epoch: usize, score: f64) -> StopStep {
        let best = score > self.best;
        if best {
            self.best = score;
            self.best_epoch = epoch;
        }
        if score >= self.level + self.min_delta {
            self.level = score;
            self.wait = 0;
        } else {
            self.wait += 1;
        }
        StopStep {
            best,
            stop: self.wait >= self.patience,
        }
    }

    /// The best epoch (1-based; 0 before any) and its score.
    pub fn best(&self) -> (usize, f64) {
        (self.best_epoch, self.best)
    }
}

/// Learning rate at optimiser step `step` of `total`: linear warm-up from lr/10 over the first
/// `warmup` steps, then the schedule over the rest.
pub fn lr_at_step(lr: f64, schedule: Schedule, step: usize, warmup: usize, total: usize) -> f64 {
    if step < warmup {
        return lr * (0.1 + 0.9 * step as f64 / warmup as f64);
    }
    match schedule {
        Schedule::Constant => lr,
        Schedule::Cosine => {
            let t = (step - warmup) as f64 / (total.saturating_sub(warmup)).max(1) as f64;
            0.5 * lr * (1.0 + (std::f64::consts::PI * t.min(1.0)).cos())
        }
    }
}

/// Per-channel standardisation of CHW feature rows.
#[derive(Debug, Clone, PartialEq)]
pub struct Standardizer {
    mean: Vec<f32>,
    inv_std: Vec<f32>,
    hw: usize,
}

impl Standardizer {
    /// Mean and standard deviation of every channel over `rows` ([n, c, hw] flat).
    pub fn fit(rows: &[f32], c: usize, hw: usize) -> Self {
        let (mut sum, mut sq) = (vec![0f64; c], vec![0f64; c]);
        for row in rows.chunks_exact(c * hw) {
            for (ch, plane) in row.chunks_exact(hw).enumerate() {
                for &v in plane {
                    sum[ch] += f64::from(v);
                    sq[ch] += f64::from(v) * f64::from(v);
                }
            }
        }
        let count = (rows.len() / c.max(1)).max(1) as f64;
        let mean: Vec<f64> = sum.iter().map(|s| s / count).collect();
        let inv_std = sq
            .iter()
            .zip(&mean)
            .map(|(q, m)| {
                // A dead channel (constant) has no spread; any scale leaves it at 0.
                let var = (q / count - m * m).max(0.0);
                (1.0 / var.sqrt().max(1e-6)) as f32
            })
            .collect();
        Self {
            mean: mean.iter().map(|m| *m as f32).collect(),
            inv_std,
            hw,
        }
    }

    /// 1 / standard deviation of each channel.
    pub fn inv_std(&self) -> &[f32] {
        &self.inv_std
    }

    /// Standardised copy of `rows`.
    pub fn apply(&self, rows: &[f32]) -> Vec<f32> {
        let c = self.mean.len();
        let mut out = rows.to_vec();
        for row in out.chunks_exact_mut(c * self.hw) {
            for (ch, plane) in row.chunks_exact_mut(self.hw).enumerate() {
                let (m, s) = (self.mean[ch], self.inv_std[ch]);
                plane.iter_mut().for_each(|v| *v = (*v - m) * s);
            }
        }
        out
    }
}

/// How an attacker was trained: its shape, curve and stopping point (what the audit reports,
/// and what modes that reuse one network share).
#[derive(Debug, Clone)]
pub struct Training {
    pub spec: IrnSpec,
    pub params: usize,
    pub curve: Vec<EpochRecord>,
    /// The epoch whose weights were kept (1-based).
    pub best_epoch: usize,
    /// Whether training stopped on a held-out plateau rather than at `max_epochs`.
    pub converged: bool,
    pub train_samples: usize,
    pub heldout_samples: usize,
    /// Training samples per second (forward and backward).
    pub samples_per_second: f64,
}

impl Training {
    /// Held-out PSNR of the kept epoch.
    pub fn heldout_psnr(&self) -> f64 {
        self.curve
            .iter()
            .find(|r| r.epoch == self.best_epoch)
            .map_or(f64::NAN, |r| r.heldout_psnr)
    }
}

/// A trained attacker, with the weights of its best held-out epoch.
#[derive(Debug)]
pub struct Attacker {
    pub model: Irn,
    pub feature_shape: [usize; 3],
    pub size: usize,
    pub standardizer: Standardizer,
    pub training: Training,
}

/// The attacker's pool: `n` feature rows of `feature_shape` and their images ([n, 3, size,
/// size] flat, in [0, 1]).
#[derive(Debug, Clone, Copy)]
pub struct Pool<'a> {
    pub x: &'a [f32],
    pub feature_shape: [usize; 3],
    pub y: &'a [f32],
    pub size: usize,
}

impl Pool<'_> {
    fn feature_len(&self) -> usize {
        self.feature_shape.iter().product()
    }
    fn image_len(&self) -> usize {
        3 * self.size * self.size
    }
    fn len(&self) -> usize {
        self.x.len() / self.feature_len().max(1)
    }
    /// Copies of rows `idx`: features and images.
    fn rows(&self, idx: &[usize]) -> (Vec<f32>, Vec<f32>) {
        let (feature_len, image_len) = (self.feature_len(), self.image_len());
        let mut x = Vec::with_capacity(idx.len() * feature_len);
        let mut y = Vec::with_capacity(idx.len() * image_len);
        for &i in idx {
            x.extend_from_slice(&self.x[i * feature_len..(i + 1) * feature_len]);
            y.extend_from_slice(&self.y[i * image_len..(i + 1) * image_len]);
        }
        (x, y)
    }
}

/// The attacker's pool split into the pairs it trains on and the pairs it holds out to score
/// itself on, features standardised with statistics of the training pairs.
struct SplitPool {
    standardizer: Standardizer,
    train_x: Vec<f32>,
    train_y: Vec<f32>,
    heldout_x: Vec<f32>,
    heldout_y: Vec<f32>,
    train_samples: usize,
    heldout_samples: usize,
}

/// Holds out `p.holdout` of the pool (a seeded draw) and standardises both parts.
fn split_pool(params: &AttackParams, seed: u64, pool: Pool<'_>) -> Result<SplitPool, NnError> {
    let n = pool.len();
    let held = ((n as f64 * params.holdout).round() as usize).max(1);
    if n < 2 || pool.y.len() != n * pool.image_len() || held >= n {
        return Err(NnError::Training(format!(
            "the attacker needs at least 2 matching pairs to train and hold out: {n} feature rows, {} image rows",
            pool.y.len() / pool.image_len().max(1)
        )));
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed ^ HOLDOUT_SALT));
    let (held_idx, train_idx) = order.split_at(held);
    let [d, h, w] = pool.feature_shape;
    let (train_x, train_y) = pool.rows(train_idx);
    let standardizer = Standardizer::fit(&train_x, d, h * w);
    let train_x = standardizer.apply(&train_x);
    let (heldout_x, heldout_y) = pool.rows(held_idx);
    let heldout_x = standardizer.apply(&heldout_x);
    Ok(SplitPool {
        standardizer,
        train_x,
        train_y,
        heldout_x,
        heldout_y,
        train_samples: train_idx.len(),
        heldout_samples: held,
    })
}

/// What every epoch of the attacker's training works with.
struct IrnTraining<'a> {
    params: &'a AttackParams,
    irn_spec: IrnSpec,
    /// The training pairs, standardised.
    train: Pool<'a>,
    autodiff: Device,
    /// Optimiser steps of the learning-rate warm-up, and of the whole schedule.
    warmup_steps: usize,
    total_steps: usize,
}

impl<'a> IrnTraining<'a> {
    /// Training on `pairs` (split from `pool`) with the schedule of `params`.
    fn new(
        params: &'a AttackParams,
        irn_spec: IrnSpec,
        pool: Pool<'a>,
        pairs: &'a SplitPool,
        autodiff: Device,
    ) -> Self {
        let steps_per_epoch = pairs.train_samples.div_ceil(params.batch_size);
        Self {
            params,
            irn_spec,
            train: Pool {
                x: &pairs.train_x,
                y: &pairs.train_y,
                ..pool
            },
            autodiff,
            warmup_steps: params.warmup_epochs * steps_per_epoch,
            total_steps: params.max_epochs * steps_per_epoch,
        }
    }
}

/// Mean PSNR and SSIM of the model's reconstructions of the held-out pairs.
fn score_heldout(model: &Irn, training: &IrnTraining<'_>, pairs: &SplitPool) -> (f64, f64) {
    let pool = &training.train;
    let recon = reconstruct_with(
        model,
        training.irn_spec,
        pool.feature_shape,
        &pairs.heldout_x,
        256,
    );
    score(&pairs.heldout_y, &recon, pool.size)
}

/// Trains an IRN on the pool until held-out PSNR converges (see the module doc). `cut_channels`
/// is the cut's full channel count, which sets the IRN's width. `on_epoch` sees every epoch.
pub fn train_irn(
    params: &AttackParams,
    seed: u64,
    cut_channels: usize,
    pool: Pool<'_>,
    mut on_epoch: impl FnMut(&EpochRecord),
) -> Result<Attacker, NnError> {
    let pairs = split_pool(params, seed, pool)?;
    let device = Device::flex();
    device.seed(seed);
    let irn_spec = spec(
        pool.feature_shape,
        cut_channels,
        pool.size,
        params.width,
        params.min_width,
    );
    let training = IrnTraining::new(params, irn_spec, pool, &pairs, device.autodiff());
    let mut model = Irn::new(pool.feature_shape[0], irn_spec, &training.autodiff);
    let mut optim: ModuleOptimizer = FusedAdam::new(None).into();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut stopping = EarlyStopping::new(params.patience, params.min_delta);
    let (mut best, mut curve) = (None, Vec::new());
    let started = Instant::now();
    let mut step = 0;
    let mut converged = false;
    for epoch in 1..=params.max_epochs {
        let (trained, lr, loss_sum) =
            irn_epoch(model, &mut optim, &mut rng, &mut step, &training, epoch)?;
        model = trained;
        let valid = model.valid();
        let (heldout_psnr, heldout_ssim) = score_heldout(&valid, &training, &pairs);
        let record = EpochRecord {
            epoch,
            lr,
            train_loss: loss_sum / pairs.train_samples as f64,
            heldout_psnr,
            heldout_ssim,
            seconds: started.elapsed().as_secs_f64(),
        };
        on_epoch(&record);
        curve.push(record);
        let verdict = stopping.observe(epoch, heldout_psnr);
        if verdict.best {
            best = Some(valid);
        }
        if verdict.stop {
            converged = true;
            break;
        }
    }
    let model = best.expect("at least one epoch ran, and the first is always the best so far");
    Ok(Attacker {
        training: Training {
            spec: irn_spec,
            params: model.num_params(),
            best_epoch: stopping.best().0,
            converged,
            train_samples: pairs.train_samples,
            heldout_samples: pairs.heldout_samples,
            samples_per_second: (pairs.train_samples * curve.len()) as f64
                / started.elapsed().as_secs_f64().max(1e-9),
            curve,
        },
        model,
        feature_shape: pool.feature_shape,
        size: pool.size,
        standardizer: pairs.standardizer,
    })
}

/// One epoch of the attacker's training: the pairs in a fresh shuffled order, one optimiser
/// step per batch (`step` counts them over the run, for the schedule). Returns the model, the
/// learning rate of the epoch's last step and the loss summed over the samples; a loss that is
/// not finite stops training.
fn irn_epoch(
    mut model: Irn,
    optim: &mut ModuleOptimizer,
    rng: &mut ChaCha8Rng,
    step: &mut usize,
    training: &IrnTraining<'_>,
    epoch: usize,
) -> Result<(Irn, f64, f64), NnError> {
    let params = training.params;
    let mut idx: Vec<usize> = (0..training.train.len()).collect();
    idx.shuffle(rng);
    let (mut sum, mut lr) = (0.0, params.lr);
    for chunk in idx.chunks(params.batch_size) {
        lr = lr_at_step(
            params.lr,
            params.schedule,
            *step,
            training.warmup_steps,
            training.total_steps,
        );
        let (loss, grads) = train_step(
            &model,
            training.irn_spec,
            &training.train,
            chunk,
            params.tv_weight,
            &training.autodiff,
        );
        if !loss.is_finite() {
            return Err(NnError::Training(format!(
                "the attacker's loss became {loss} in epoch {epoch}"
            )));
        }
        sum += loss * chunk.len() as f64;
        model = optim.step(lr, model, grads);
        *step += 1;
    }
    Ok((model, lr, sum))
}

/// One forward and backward pass on the rows `chunk` of `train`: the loss and its gradients.
fn train_step(
    model: &Irn,
    irn_spec: IrnSpec,
    train: &Pool<'_>,
    chunk: &[usize],
    tv_weight: f64,
    device: &Device,
) -> (f64, GradientsParams) {
    let (b, [d, h, w], size) = (chunk.len(), train.feature_shape, train.size);
    let (xb, yb) = train.rows(chunk);
    let xt = Tensor::<4>::from_data(TensorData::new(xb, [b, d, h, w]), device);
    let yt = Tensor::<4>::from_data(TensorData::new(yb, [b, 3, size, size]), device);
    let pred = model.forward(xt, irn_spec);
    let diff = pred.clone() - yt;
    let mut loss = (diff.clone() * diff).mean();
    if tv_weight > 0.0 {
        let dh = pred.clone().slice([0..b, 0..3, 1..size, 0..size])
            - pred.clone().slice([0..b, 0..3, 0..size - 1, 0..size]);
        let dw = pred.clone().slice([0..b, 0..3, 0..size, 1..size])
            - pred.slice([0..b, 0..3, 0..size, 0..size - 1]);
        loss = loss + (dh.abs().mean() + dw.abs().mean()).mul_scalar(tv_weight as f32);
    }
    let value = f64::from(loss.clone().into_scalar::<f32>());
    (value, GradientsParams::from_grads(loss.backward(), model))
}

/// Mean capped PSNR and mean SSIM of reconstructions against originals.
fn score(originals: &[f32], recon: &[f32], size: usize) -> (f64, f64) {
    let image_len = 3 * size * size;
    let n = (originals.len() / image_len).max(1) as f64;
    let (mut p, mut s) = (0.0, 0.0);
    for (a, b) in originals
        .chunks_exact(image_len)
        .zip(recon.chunks_exact(image_len))
    {
        p += metrics::psnr(a, b).min(metrics::PSNR_CAP) / n;
        s += metrics::ssim(a, b, 3, size, size) / n;
    }
    (p, s)
}

/// Images ([n, 3, size, size] flat) from standardised features, in batches of `batch`.
fn reconstruct_with(
    model: &Irn,
    irn_spec: IrnSpec,
    shape: [usize; 3],
    x: &[f32],
    batch: usize,
) -> Vec<f32> {
    let device = Device::flex();
    let feature_len = shape.iter().product::<usize>();
    let size = irn_spec.resize_to << irn_spec.upsamplings;
    let mut out = Vec::with_capacity(x.len() / feature_len.max(1) * 3 * size * size);
    for rows in x.chunks(batch.max(1) * feature_len) {
        let b = rows.len() / feature_len;
        let xt = Tensor::<4>::from_data(
            TensorData::new(rows.to_vec(), [b, shape[0], shape[1], shape[2]]),
            &device,
        );
        let y = model.forward(xt, irn_spec);
        out.extend(
            y.into_data()
                .try_to_vec::<f32>()
                .expect("the IRN outputs f32"),
        );
    }
    out
}

impl Attacker {
    /// Reconstructs images ([n, 3, size, size] flat) from raw features ([n, shape] flat).
    pub fn reconstruct(&self, x: &[f32], batch: usize) -> Vec<f32> {
        let x = self.standardizer.apply(x);
        reconstruct_with(
            &self.model,
            self.training.spec,
            self.feature_shape,
            &x,
            batch,
        )
    }
}

/// Keeps the channels `keep` (in that order) of `n` samples of `c` channels of `hw` values.
pub fn take_channels(x: &[f32], n: usize, c: usize, hw: usize, keep: &[usize]) -> Vec<f32> {
    let mut out = Vec::with_capacity(n * keep.len() * hw);
    for s in 0..n {
        for &ch in keep {
            let o = s * c * hw + ch * hw;
            out.extend_from_slice(&x[o..o + hw]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn early_stopping_stops_on_a_plateau_and_keeps_the_best_epoch() {
        let mut s = EarlyStopping::new(2, 0.05);
        // Rises, peaks at epoch 4, then a plateau with noise below min_delta.
        let curve = [12.0, 14.0, 15.0, 15.5, 15.52, 15.40, 15.3];
        let mut stopped_at = None;
        let mut best_epochs = Vec::new();
        for (i, &v) in curve.iter().enumerate() {
            let step = s.observe(i + 1, v);
            if step.best {
                best_epochs.push(i + 1);
            }
            if step.stop {
                stopped_at = Some(i + 1);
                break;
            }
        }
        // 15.52 is the best value (kept) but not progress by 0.05: epochs 5 and 6 wait.
        assert_eq!(stopped_at, Some(6));
        assert_eq!(s.best(), (5, 15.52));
        assert_eq!(best_epochs, vec![1, 2, 3, 4, 5]);
    }

    #[test]
    fn early_stopping_keeps_the_first_of_equal_best_epochs() {
        let mut s = EarlyStopping::new(5, 0.05);
        for (i, v) in [10.0, 12.0, 12.0, 11.0].iter().enumerate() {
            s.observe(i + 1, *v);
        }
        assert_eq!(s.best(), (2, 12.0));
    }

    #[test]
    fn early_stopping_keeps_going_while_the_curve_rises() {
        let mut s = EarlyStopping::new(2, 0.05);
        for (i, v) in [10.0, 11.0, 10.9, 11.2, 11.1, 11.3].iter().enumerate() {
            assert!(!s.observe(i + 1, *v).stop, "stopped at epoch {}", i + 1);
        }
        assert_eq!(s.best(), (6, 11.3));
    }

    #[test]
    fn schedule_warms_up_then_decays_to_zero() {
        let lr = |step| lr_at_step(1e-3, Schedule::Cosine, step, 10, 110);
        assert!((lr(0) - 1e-4).abs() < 1e-12);
        assert!(lr(5) > lr(0) && lr(5) < 1e-3);
        assert!((lr(10) - 1e-3).abs() < 1e-12);
        assert!((lr(60) - 5e-4).abs() < 1e-12);
        assert!(lr(110) < 1e-12);
        assert_eq!(lr_at_step(1e-3, Schedule::Constant, 50, 10, 110), 1e-3);
    }

    #[test]
    fn standardizer_gives_zero_mean_unit_spread_per_channel() {
        // 3 rows of 2 channels of 2 values; channel 1 is constant (a dead ReLU channel).
        let rows = [1.0, 3.0, 5.0, 5.0, 2.0, 4.0, 5.0, 5.0, 3.0, 5.0, 5.0, 5.0];
        let s = Standardizer::fit(&rows, 2, 2);
        let z = s.apply(&rows);
        let ch0: Vec<f32> = z.chunks(4).flat_map(|r| r[..2].to_vec()).collect();
        let mean = ch0.iter().sum::<f32>() / 6.0;
        let var = ch0.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / 6.0;
        assert!(mean.abs() < 1e-6 && (var - 1.0).abs() < 1e-5);
        assert!(z.chunks(4).all(|r| r[2] == 0.0 && r[3] == 0.0));
    }

    #[test]
    fn training_stops_early_on_a_tiny_pool_and_keeps_its_best_epoch() {
        // 200 pairs whose image is a smooth function of the feature (every pixel a feature value
        // scaled into [0.2, 0.8]): an attacker that can learn, and generalise to held-out rows.
        let n = 200;
        let size = 8;
        let shape = [2, 2, 2];
        let x: Vec<f32> = (0..n * 8)
            .map(|i| ((i * 37) % 101) as f32 / 101.0)
            .collect();
        let y: Vec<f32> = (0..n)
            .flat_map(|r| {
                let x = &x;
                (0..3 * size * size).map(move |k| 0.2 + 0.6 * x[r * 8 + k % 8])
            })
            .collect();
        let p = AttackParams {
            max_epochs: 40,
            patience: 2,
            min_delta: 0.05,
            batch_size: 16,
            lr: 1e-2,
            min_width: 8,
            width: Some(8),
            ..AttackParams::default()
        };
        let pool = Pool {
            x: &x,
            feature_shape: shape,
            y: &y,
            size,
        };
        // Bit-for-bit reruns are checked end to end, in separate processes: burn's device RNG,
        // which initialises the weights, is shared by the test threads of this process.
        let a = train_irn(&p, 7, 2, pool, |_| {}).expect("trains");
        let t = &a.training;
        assert_eq!(t.heldout_samples, 20);
        let best = t
            .curve
            .iter()
            .max_by(|a, b| a.heldout_psnr.total_cmp(&b.heldout_psnr))
            .expect("epochs");
        assert_eq!(t.best_epoch, best.epoch);
        // The stop rule, in every case: stopped exactly when `patience` epochs in a row gained
        // less than `min_delta` over the last epoch that did (converged), else ran them all.
        let (mut level, mut wait, mut due) = (f64::NEG_INFINITY, 0, None);
        for e in &t.curve {
            if e.heldout_psnr >= level + p.min_delta {
                (level, wait) = (e.heldout_psnr, 0);
            } else {
                wait += 1;
            }
            if wait >= p.patience {
                due = Some(e.epoch);
                break;
            }
        }
        assert_eq!(t.converged, due.is_some(), "{:?}", t.curve);
        assert_eq!(t.curve.len(), due.unwrap_or(p.max_epochs), "{:?}", t.curve);
        // And it learned: its best held-out PSNR is above the floor of showing every victim the
        // pool's mean image.
        let len = 3 * size * size;
        let mean: Vec<f32> = (0..len)
            .map(|k| (0..n).map(|r| y[r * len + k]).sum::<f32>() / n as f32)
            .collect();
        let floor = (0..n)
            .map(|r| crate::metrics::psnr(&y[r * len..(r + 1) * len], &mean))
            .sum::<f64>()
            / n as f64;
        eprintln!(
            "best held-out PSNR {:.2} dB at epoch {} of {} (floor {floor:.2} dB)",
            best.heldout_psnr,
            best.epoch,
            t.curve.len()
        );
        assert!(
            best.heldout_psnr > floor + 1.0,
            "best held-out PSNR {:.2} dB vs floor {floor:.2} dB: {:?}",
            best.heldout_psnr,
            t.curve
        );
    }
}
