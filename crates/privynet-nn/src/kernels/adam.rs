//! One Adam step over a parameter in one parallel pass, and the optimizer that takes it.
//!
//! burn's `Adam` (with its coupled weight decay) computes a step as about a dozen tensor
//! operations, each a serial pass over the parameter on the calling thread (burn-flex runs
//! element-wise operations on one core), so the other cores wait through the whole optimizer
//! update (0.83-0.93 ms a step for the cloud network's 447 K parameters, measured). Here the
//! same operations, in the same order and the same f32 arithmetic, run per element in one
//! pass over the parameter and its moments in place, in parallel over blocks (0.44-0.50 ms):
//! the results are burn's bit for bit (`tests/kernels.rs` checks several steps, and a resume
//! in burn's `Adam`), and the state is burn's own `AdamState`, so saved optimizer files read
//! the same either way.

use burn::backend::Dispatch;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::{AdamConfig, AdamState, AdaptiveMomentumState, LearningRate, Optimizer};
use burn::tensor::{DType, Device, Tensor};
use rayon::prelude::*;

use super::Kernels;

/// Parameter values one parallel task updates.
const BLOCK: usize = 16 * 1024;

/// One step's settings: Adam's, the learning rate, the step's number.
#[derive(Debug, Clone, Copy)]
pub struct AdamStep {
    pub lr: LearningRate,
    pub beta_1: f32,
    pub beta_2: f32,
    pub epsilon: f32,
    /// The coupled weight decay (`grad + penalty x param`), if any.
    pub penalty: Option<f32>,
    /// The step's number, from 1.
    pub time: usize,
    /// Whether the parameter has no moments yet (then the moments passed are ignored).
    pub first: bool,
}

/// The f32 factors of one step, computed as burn's `Adam` computes them.
struct Factors {
    lr: f32,
    keep_1: f32,
    take_1: f32,
    keep_2: f32,
    take_2: f32,
    combined: f32,
    epsilon: f32,
}

impl AdamStep {
    fn factors(&self) -> Factors {
        let time = self.time as i32;
        let correction_2 = (1.0 - self.beta_2.powi(time)).sqrt();
        Factors {
            lr: self.lr as f32,
            keep_1: self.beta_1,
            take_1: 1.0 - self.beta_1,
            keep_2: self.beta_2,
            take_2: 1.0 - self.beta_2,
            combined: correction_2 / (1.0 - self.beta_1.powi(time)),
            epsilon: self.epsilon * correction_2,
        }
    }
}

/// The step on fp32 slices, in place: `param` and the moments `m`, `v` (their values ignored
/// on the first step) become the new ones. In parallel over blocks.
pub(crate) fn step(param: &mut [f32], grad: &[f32], m: &mut [f32], v: &mut [f32], s: &AdamStep) {
    let f = s.factors();
    let blocks = param.par_chunks_mut(BLOCK).zip(grad.par_chunks(BLOCK));
    blocks
        .zip(m.par_chunks_mut(BLOCK).zip(v.par_chunks_mut(BLOCK)))
        .for_each(|((p, g), (m, v))| match (s.first, s.penalty) {
            (true, Some(k)) => block::<true, true>(p, g, m, v, &f, k),
            (true, None) => block::<true, false>(p, g, m, v, &f, 0.0),
            (false, Some(k)) => block::<false, true>(p, g, m, v, &f, k),
            (false, None) => block::<false, false>(p, g, m, v, &f, 0.0),
        });
}

/// One block of [`step`], its cases fixed at compile time so that the loop has no branches
/// and vectorises: `FIRST` (no moments yet), `DECAY` (the gradient plus `penalty x param`).
fn block<const FIRST: bool, const DECAY: bool>(
    p: &mut [f32],
    g: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    f: &Factors,
    penalty: f32,
) {
    for ((p, g), (m, v)) in p.iter_mut().zip(g).zip(m.iter_mut().zip(v.iter_mut())) {
        let g = if DECAY { *p * penalty + g } else { *g };
        if FIRST {
            *m = g * f.take_1;
            *v = (g * g) * f.take_2;
        } else {
            *m = *m * f.keep_1 + g * f.take_1;
            *v = *v * f.keep_2 + (g * g) * f.take_2;
        }
        *p -= ((*m * f.combined) / (v.sqrt() + f.epsilon)) * f.lr;
    }
}

/// Adam as burn's `AdamConfig` builds it (no AMSGrad), its step taken by
/// [`Kernels::adam_step`] for fp32 parameters and by burn's own `Adam` otherwise (and with
/// [`super::set_fused_adam`]`(false)`, for the bench's comparison).
#[derive(Clone)]
pub struct FusedAdam {
    beta_1: f32,
    beta_2: f32,
    epsilon: f32,
    penalty: Option<f32>,
    burn: burn::optim::Adam,
}

impl FusedAdam {
    /// burn's defaults (betas 0.9 and 0.999, epsilon 1e-5), with the coupled weight decay
    /// `penalty`, if any.
    pub fn new(penalty: Option<f32>) -> Self {
        Self::with(0.9, 0.999, 1e-5, penalty)
    }

    /// Adam with the given betas and epsilon (as `AdamConfig`'s), and weight decay `penalty`.
    pub fn with(beta_1: f32, beta_2: f32, epsilon: f32, penalty: Option<f32>) -> Self {
        let config = AdamConfig::new()
            .with_beta_1(beta_1)
            .with_beta_2(beta_2)
            .with_epsilon(epsilon)
            .with_weight_decay(penalty.map(WeightDecayConfig::new));
        Self {
            beta_1,
            beta_2,
            epsilon,
            penalty,
            burn: config.build(),
        }
    }
}

impl Optimizer for FusedAdam {
    type State<const D: usize> = AdamState<D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<D>, Option<Self::State<D>>) {
        let amsgrad = state
            .as_ref()
            .is_some_and(|s| s.momentum.max_moment_2.is_some());
        if [tensor.dtype(), grad.dtype()] != [DType::F32; 2] || amsgrad || !super::fused_adam() {
            return self.burn.step(lr, tensor, grad, state);
        }
        let (time, m, v, first) = match state {
            Some(s) => (
                s.momentum.time + 1,
                s.momentum.moment_1,
                s.momentum.moment_2,
                false,
            ),
            None => (1, grad.clone(), grad.clone(), true),
        };
        let s = AdamStep {
            lr,
            beta_1: self.beta_1,
            beta_2: self.beta_2,
            epsilon: self.epsilon,
            penalty: self.penalty,
            time,
            first,
        };
        let (x, m, v) = <Dispatch as Kernels>::adam_step(
            tensor.into_dispatch(),
            grad.into_dispatch(),
            m.into_dispatch(),
            v.into_dispatch(),
            s,
        );
        let momentum =
            AdaptiveMomentumState::new(time, Tensor::from_dispatch(m), Tensor::from_dispatch(v));
        (Tensor::from_dispatch(x), Some(AdamState::new(momentum)))
    }

    fn to_device<const D: usize>(mut state: Self::State<D>, device: &Device) -> Self::State<D> {
        state.momentum = state.momentum.to_device(device);
        state
    }
}
