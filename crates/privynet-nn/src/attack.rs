//! Training the attacker's IRN on (features, image) pairs and reconstructing victims' images.

use std::time::Instant;

use burn::module::Module;
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{Device, Tensor, TensorData};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use privynet_core::manifest::AttackParams;

use crate::NnError;
use crate::irn::{Irn, IrnSpec, spec};

/// A trained attacker.
#[derive(Debug)]
pub struct Attacker {
    pub model: Irn,
    pub spec: IrnSpec,
    pub fshape: [usize; 3],
    pub size: usize,
    /// Training samples per second.
    pub samples_per_second: f64,
    pub final_loss: f64,
}

/// Trains an IRN on `n` pairs: features `x` ([n, fshape] flat) and images `y` ([n, 3, size,
/// size] flat, in [0, 1]).
pub fn train_irn(
    p: &AttackParams,
    seed: u64,
    x: &[f32],
    fshape: [usize; 3],
    y: &[f32],
    size: usize,
    mut on_epoch: impl FnMut(usize, f64),
) -> Result<Attacker, NnError> {
    let flen = fshape.iter().product::<usize>();
    let ilen = 3 * size * size;
    let n = x.len() / flen;
    if n == 0 || y.len() != n * ilen {
        return Err(NnError::Training(format!(
            "the attacker needs matching pairs: {n} feature rows, {} image rows",
            y.len() / ilen.max(1)
        )));
    }
    let device = Device::flex();
    device.seed(seed);
    let ad = device.clone().autodiff();
    let s = spec(fshape, size, p.width);
    let mut model = Irn::new(fshape[0], s, &ad);
    let mut optim = AdamConfig::new().init();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let t = Instant::now();
    let mut final_loss = f64::NAN;
    for epoch in 0..p.epochs {
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut rng);
        let mut sum = 0.0;
        for chunk in order.chunks(p.batch_size) {
            let b = chunk.len();
            let mut xb = Vec::with_capacity(b * flen);
            let mut yb = Vec::with_capacity(b * ilen);
            for &i in chunk {
                xb.extend_from_slice(&x[i * flen..(i + 1) * flen]);
                yb.extend_from_slice(&y[i * ilen..(i + 1) * ilen]);
            }
            let xt = Tensor::<4>::from_data(
                TensorData::new(xb, [b, fshape[0], fshape[1], fshape[2]]),
                &ad,
            );
            let yt = Tensor::<4>::from_data(TensorData::new(yb, [b, 3, size, size]), &ad);
            let pred = model.forward(xt, s);
            let diff = pred.clone() - yt;
            let mut loss = (diff.clone() * diff).mean();
            if p.tv_weight > 0.0 {
                let dh = pred.clone().slice([0..b, 0..3, 1..size, 0..size])
                    - pred.clone().slice([0..b, 0..3, 0..size - 1, 0..size]);
                let dw = pred.clone().slice([0..b, 0..3, 0..size, 1..size])
                    - pred.slice([0..b, 0..3, 0..size, 0..size - 1]);
                loss = loss + (dh.abs().mean() + dw.abs().mean()).mul_scalar(p.tv_weight as f32);
            }
            let lv = f64::from(loss.clone().into_scalar::<f32>());
            if !lv.is_finite() {
                return Err(NnError::Training(format!(
                    "the attacker's loss became {lv} in epoch {}",
                    epoch + 1
                )));
            }
            sum += lv * b as f64;
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(p.lr, model, grads);
        }
        final_loss = sum / n as f64;
        on_epoch(epoch + 1, final_loss);
    }
    Ok(Attacker {
        model: model.valid(),
        spec: s,
        fshape,
        size,
        samples_per_second: (n * p.epochs) as f64 / t.elapsed().as_secs_f64().max(1e-9),
        final_loss,
    })
}

impl Attacker {
    /// Reconstructs images ([n, 3, size, size] flat) from features ([n, fshape] flat).
    pub fn reconstruct(&self, x: &[f32], batch: usize) -> Vec<f32> {
        let device = Device::flex();
        let flen = self.fshape.iter().product::<usize>();
        let n = x.len() / flen;
        let mut out = Vec::with_capacity(n * 3 * self.size * self.size);
        for start in (0..n).step_by(batch.max(1)) {
            let b = (n - start).min(batch.max(1));
            let xb = x[start * flen..(start + b) * flen].to_vec();
            let f = self.fshape;
            let xt = Tensor::<4>::from_data(TensorData::new(xb, [b, f[0], f[1], f[2]]), &device);
            let y = self.model.forward(xt, self.spec);
            out.extend(y.into_data().try_to_vec::<f32>().expect("float output"));
        }
        out
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
