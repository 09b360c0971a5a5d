//! Batch normalisation over a training batch, fused with the ReLU that follows it in every
//! block of this project's networks, on burn-flex's fp32 tensors.
//!
//! burn 0.22 differentiates `batch_norm_train` as one operation, but computes it, forward and
//! backward, out of about twenty tensor operations: two transposed copies of the activation,
//! a fresh buffer for each subtraction, product and broadcast. Here the forward pass reads the
//! activation twice (mean, then variance, per channel) and writes it once; the backward reads
//! it twice (the two per-channel sums, then the input gradient) and writes it once; the ReLU
//! costs nothing extra, since its mask is recomputed from the same product.
//!
//! Every per-channel sum runs over one channel serially (images in order, 16 lanes added in
//! f64), so the result does not depend on the number of threads.

use burn::backend::Flex;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::backend::flex::FlexTensor;
use burn::backend::ops::{ActivationOps, ModuleOps};
use burn::tensor::DType;
use rayon::prelude::*;

use super::{dims, floats, tensor, values};

/// An NCHW activation as batch normalisation sees it: `n` images of `c` planes of `hw` values.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Planes {
    pub n: usize,
    pub c: usize,
    pub hw: usize,
}

impl Planes {
    /// Values per channel, over the batch.
    fn count(&self) -> f64 {
        (self.n * self.hw) as f64
    }

    /// Channel `ch`'s planes, image by image.
    fn planes<'a>(&self, x: &'a [f32], ch: usize) -> impl Iterator<Item = &'a [f32]> {
        let (c, hw) = (self.c, self.hw);
        (0..self.n).map(move |i| &x[(i * c + ch) * hw..][..hw])
    }
}

/// Sums of `f(a, b)` over pairs of `a` and `b`, in 16 independent f32 lanes (so the loop
/// vectorises), added up in f64. `f` returns two terms, summed separately.
fn lane_sums(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> (f32, f32)) -> (f64, f64) {
    const LANES: usize = 16;
    let (mut s0, mut s1) = ([0.0f32; LANES], [0.0f32; LANES]);
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (xa, xb) in ca.zip(cb) {
        for l in 0..LANES {
            let (t0, t1) = f(xa[l], xb[l]);
            s0[l] += t0;
            s1[l] += t1;
        }
    }
    let (mut t0, mut t1) = (0.0f64, 0.0f64);
    for l in 0..LANES {
        t0 += f64::from(s0[l]);
        t1 += f64::from(s1[l]);
    }
    for (&va, &vb) in ra.iter().zip(rb) {
        let (u0, u1) = f(va, vb);
        t0 += f64::from(u0);
        t1 += f64::from(u1);
    }
    (t0, t1)
}

/// Per channel, the batch mean and the biased variance (what burn's batch norm returns and
/// feeds its running statistics), in two passes so the variance does not cancel.
pub(crate) fn statistics(x: &[f32], p: Planes) -> (Vec<f32>, Vec<f32>) {
    let stats: Vec<(f32, f32)> = (0..p.c)
        .into_par_iter()
        .map(|ch| {
            let sum: f64 = p
                .planes(x, ch)
                .map(|v| lane_sums(v, v, |a, _| (a, 0.0)).0)
                .sum();
            let mean = sum / p.count();
            let m = mean as f32;
            let sq: f64 = p
                .planes(x, ch)
                .map(|v| lane_sums(v, v, |a, _| ((a - m) * (a - m), 0.0)).0)
                .sum();
            (m, (sq / p.count()) as f32)
        })
        .collect();
    stats.into_iter().unzip()
}

/// Per channel, `scale = gamma / sqrt(var + eps)` and `shift = beta - mean * scale`: the
/// output before the ReLU is `x * scale + shift`.
pub(crate) fn affine(
    gamma: &[f32],
    beta: &[f32],
    mean: &[f32],
    var: &[f32],
    epsilon: f64,
) -> (Vec<f32>, Vec<f32>) {
    let scale: Vec<f32> = gamma
        .iter()
        .zip(var)
        .map(|(&g, &v)| g * inv_std(v, epsilon))
        .collect();
    let shift = beta
        .iter()
        .zip(mean)
        .zip(&scale)
        .map(|((&b, &m), &s)| b - m * s)
        .collect();
    (scale, shift)
}

fn inv_std(var: f32, epsilon: f64) -> f32 {
    (1.0 / (f64::from(var) + epsilon).sqrt()) as f32
}

/// The output: `x * scale + shift` per channel, then the ReLU if `relu`.
pub(crate) fn forward(x: &[f32], p: Planes, scale: &[f32], shift: &[f32], relu: bool) -> Vec<f32> {
    let mut y = super::zeros(x.len());
    let image = p.c * p.hw;
    y.par_chunks_mut(image)
        .zip(x.par_chunks(image))
        .for_each(|(yi, xi)| {
            let planes = yi.chunks_mut(p.hw).zip(xi.chunks(p.hw));
            for (ch, (o, xs)) in planes.enumerate() {
                let (s, t) = (scale[ch], shift[ch]);
                for (o, &v) in o.iter_mut().zip(xs) {
                    let pre = v * s + t;
                    *o = if relu { pre.max(0.0) } else { pre };
                }
            }
        });
    y
}

/// What the backward pass needs of the forward's statistics.
#[derive(Debug, Clone)]
pub(crate) struct Saved {
    pub mean: Vec<f32>,
    pub var: Vec<f32>,
    pub gamma: Vec<f32>,
    pub beta: Vec<f32>,
    pub epsilon: f64,
    pub relu: bool,
}

/// The gradients of [`forward`] (with the batch's own statistics) for the output gradient
/// `dy`: the input's, gamma's and beta's.
pub(crate) fn backward(
    x: &[f32],
    dy: &[f32],
    p: Planes,
    s: &Saved,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (scale, shift) = affine(&s.gamma, &s.beta, &s.mean, &s.var, s.epsilon);
    let inv: Vec<f32> = s.var.iter().map(|&v| inv_std(v, s.epsilon)).collect();
    // The gradient reaching the normalisation: dy where the ReLU passed its input on (the
    // same product as the forward's, so the same mask).
    let relu = s.relu;
    let gate = move |v: f32, d: f32, st: (f32, f32)| {
        if relu && v * st.0 + st.1 <= 0.0 {
            0.0
        } else {
            d
        }
    };
    // Per channel: d beta = sum of g, d gamma = sum of g * x_hat.
    let sums: Vec<(f32, f32)> = (0..p.c)
        .into_par_iter()
        .map(|ch| {
            let (m, k, st) = (s.mean[ch], inv[ch], (scale[ch], shift[ch]));
            let (mut db, mut dg) = (0.0f64, 0.0f64);
            for (xv, dv) in p.planes(x, ch).zip(p.planes(dy, ch)) {
                let (b, g) = lane_sums(xv, dv, |v, d| {
                    let g = gate(v, d, st);
                    (g, g * (v - m) * k)
                });
                db += b;
                dg += g;
            }
            (dg as f32, db as f32)
        })
        .collect();
    let (dgamma, dbeta): (Vec<f32>, Vec<f32>) = sums.into_iter().unzip();
    // dx = gamma * inv_std * (g - d beta / M - x_hat * d gamma / M).
    let mut dx = super::zeros(x.len());
    let image = p.c * p.hw;
    let count = p.count() as f32;
    dx.par_chunks_mut(image)
        .zip(x.par_chunks(image).zip(dy.par_chunks(image)))
        .for_each(|(dxi, (xi, dyi))| {
            let planes = dxi
                .chunks_mut(p.hw)
                .zip(xi.chunks(p.hw).zip(dyi.chunks(p.hw)));
            for (ch, (o, (xs, ds))) in planes.enumerate() {
                let (m, k, st) = (s.mean[ch], inv[ch], (scale[ch], shift[ch]));
                let (a, mb, mg) = (s.gamma[ch] * k, dbeta[ch] / count, dgamma[ch] / count);
                for ((o, &v), &d) in o.iter_mut().zip(xs).zip(ds) {
                    *o = a * (gate(v, d, st) - mb - (v - m) * k * mg);
                }
            }
        });
    (dx, dgamma, dbeta)
}

/// The planes of an NCHW shape.
fn planes(shape: &[usize]) -> Planes {
    Planes {
        n: shape[0],
        c: shape[1],
        hw: shape[2..].iter().product(),
    }
}

/// `batch_norm_train` with the batch's statistics, then the ReLU if `relu`, on contiguous
/// fp32 flex tensors: the output, and what its backward needs (the mean and biased variance
/// among it).
pub(crate) fn train_forward(
    x: &FlexTensor,
    gamma: &FlexTensor,
    beta: &FlexTensor,
    epsilon: f64,
    relu: bool,
) -> (FlexTensor, Saved) {
    let shape = dims(x);
    let p = planes(&shape);
    let xs = values(x);
    let (mean, var) = statistics(xs, p);
    let (gamma, beta) = (floats(gamma), floats(beta));
    let (scale, shift) = affine(&gamma, &beta, &mean, &var, epsilon);
    let y = forward(xs, p, &scale, &shift, relu);
    let saved = Saved {
        mean,
        var,
        gamma,
        beta,
        epsilon,
        relu,
    };
    (tensor(y, shape), saved)
}

/// [`train_forward`] for any dtype: fp32 here, others through burn's batch norm and ReLU.
pub(crate) fn train_any(
    x: FlexTensor,
    gamma: FlexTensor,
    beta: FlexTensor,
    epsilon: f64,
    relu: bool,
) -> (FlexTensor, FlexTensor, FlexTensor) {
    if [x.dtype(), gamma.dtype(), beta.dtype()] != [DType::F32; 3] {
        let r = Flex::batch_norm_train(x, gamma, beta, epsilon);
        let out = if relu { Flex::relu(r.output) } else { r.output };
        return (out, r.mean, r.variance);
    }
    let (y, s) = train_forward(&x.to_contiguous(), &gamma, &beta, epsilon, relu);
    let c = s.mean.len();
    (y, tensor(s.mean, vec![c]), tensor(s.var, vec![c]))
}

/// The backward step of the fused batch norm: the gradients of [`backward`] for the input,
/// gamma and beta.
#[derive(Debug)]
pub(crate) struct NormBackward;

impl Backward<Flex, 3> for NormBackward {
    type State = (FlexTensor, Saved);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_gamma, node_beta] = ops.parents;
        let dy = grads.consume::<Flex>(&ops.node).to_contiguous();
        let (x, saved) = ops.state;
        let shape = dims(&x);
        let (dx, dgamma, dbeta) = backward(values(&x), values(&dy), planes(&shape), &saved);
        let c = dgamma.len();
        for (node, grad) in [
            (node_x, tensor(dx, shape)),
            (node_gamma, tensor(dgamma, vec![c])),
            (node_beta, tensor(dbeta, vec![c])),
        ] {
            if let Some(node) = node {
                grads.register::<Flex>(node.id, grad);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statistics_are_the_mean_and_biased_variance_per_channel() {
        // Two images, two channels of two values: channel 0 holds 1, 2, 3, 4.
        let x = [1.0, 2.0, 10.0, 10.0, 3.0, 4.0, 10.0, 10.0];
        let (mean, var) = statistics(&x, Planes { n: 2, c: 2, hw: 2 });
        assert_eq!(mean, vec![2.5, 10.0]);
        assert_eq!(var, vec![1.25, 0.0]);
    }

    #[test]
    fn lane_sums_cover_the_remainder() {
        let a: Vec<f32> = (0..37).map(|v| v as f32).collect();
        let (s, n) = lane_sums(&a, &a, |v, _| (v, 1.0));
        assert_eq!((s, n), (666.0, 37.0));
    }
}
