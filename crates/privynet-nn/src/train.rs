//! Training the cloud network: seeded shuffling and flips, Adam or SGD with momentum, cosine
//! schedule, weight decay; a validation and a test pass per epoch (validation accuracy is what
//! topologies are chosen on, test accuracy only reports); a checkpoint after every good epoch,
//! so a loss that turns NaN stops the run with the last good model kept, and a saved state that
//! lets a stopped or killed run continue exactly where it was (see `resume`).

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{AdamConfig, GradientsParams, SgdConfig};
use burn::tensor::{Device, Int, Tensor, TensorData};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use privynet_core::manifest::{OptimizerKind, Schedule, TrainParams};

use crate::cloud::CloudNet;
use crate::data::Split;
use crate::{NnError, resume};

/// One epoch's metrics.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct EpochMetrics {
    pub epoch: usize,
    pub lr: f64,
    pub train_loss: f64,
    pub train_accuracy: f64,
    pub val_loss: f64,
    pub val_accuracy: f64,
    pub test_loss: f64,
    pub test_accuracy: f64,
    pub seconds: f64,
}

/// What a training run did. `epochs` holds the epochs before a resumed run's start too, and
/// is shorter than the schedule when the run stopped at `Checkpoints::stop_after`.
#[derive(Debug, Clone)]
pub struct TrainReport {
    pub epochs: Vec<EpochMetrics>,
    pub samples_per_second: f64,
    pub seconds: f64,
}

/// Where a run keeps its checkpoints, whether it continues a saved state, and where it stops.
#[derive(Debug, Clone)]
pub struct Checkpoints {
    /// The last good model (burnpack), rewritten after every good epoch.
    pub model: PathBuf,
    /// The folder of the state a later run continues from (`resume`); left in place when the
    /// run ends, for the caller to remove once its outputs are written.
    pub state: PathBuf,
    /// What a saved state must have been saved with to be continued: settings, seed, input.
    pub key: serde_json::Value,
    /// Continue from the state in `state` when there is one.
    pub resume: bool,
    /// Stop after this epoch (1-based) of the schedule, leaving a state to continue from.
    pub stop_after: Option<usize>,
}

/// Learning rate at `epoch` (0-based) of `epochs`.
pub fn lr_at(p: &TrainParams, epoch: usize) -> f64 {
    match p.schedule {
        Schedule::Constant => p.lr,
        Schedule::Cosine => {
            0.5 * p.lr * (1.0 + (std::f64::consts::PI * epoch as f64 / p.epochs as f64).cos())
        }
    }
}

/// Copies the rows `idx` of a split into a batch, flipping the rows `flip` marks horizontally.
fn gather(s: &Split, shape: [usize; 3], idx: &[usize], flip: &[bool]) -> (Vec<f32>, Vec<i64>) {
    let [c, h, w] = shape;
    let len = c * h * w;
    let mut x = Vec::with_capacity(idx.len() * len);
    for (k, &i) in idx.iter().enumerate() {
        let row = &s.x[i * len..(i + 1) * len];
        if flip[k] {
            for line in row.chunks_exact(w) {
                x.extend(line.iter().rev());
            }
        } else {
            x.extend_from_slice(row);
        }
    }
    (x, idx.iter().map(|&i| i64::from(s.labels[i])).collect())
}

/// Loss and accuracy of a model on a split (inference mode, batch statistics frozen).
pub fn evaluate(
    model: &CloudNet,
    s: &Split,
    shape: [usize; 3],
    batch: usize,
    device: &Device,
) -> (f64, f64) {
    let loss_fn = CrossEntropyLossConfig::new().init(device);
    let (mut loss, mut correct) = (0.0, 0usize);
    let idx: Vec<usize> = (0..s.len()).collect();
    for chunk in idx.chunks(batch) {
        let (x, y) = gather(s, shape, chunk, &vec![false; chunk.len()]);
        let n = chunk.len();
        let x = Tensor::<4>::from_data(
            TensorData::new(x, [n, shape[0], shape[1], shape[2]]),
            device,
        );
        let y = Tensor::<1, Int>::from_data(TensorData::new(y, [n]), device);
        let logits = model.forward(x);
        loss += f64::from(
            loss_fn
                .forward(logits.clone(), y.clone())
                .into_scalar::<f32>(),
        ) * n as f64;
        correct += logits
            .argmax(1)
            .reshape([n])
            .equal(y)
            .int()
            .sum()
            .into_scalar::<i64>() as usize;
    }
    (loss / s.len() as f64, correct as f64 / s.len() as f64)
}

/// Trains a cloud network on `train`, scoring it on `val` and `test` after every epoch; after
/// every epoch whose loss is finite, saves the model and the state to continue from (`ckpt`).
/// Nothing in training depends on either score. `on_epoch` sees each epoch this run trains.
#[allow(clippy::too_many_arguments)]
pub fn train(
    p: &TrainParams,
    seed: u64,
    shape: [usize; 3],
    train: &Split,
    val: &Split,
    test: &Split,
    ckpt: &Checkpoints,
    mut on_epoch: impl FnMut(&EpochMetrics),
) -> Result<(CloudNet, TrainReport), NnError> {
    let device = Device::flex();
    device.seed(seed);
    let ad = device.clone().autodiff();
    let mut model = CloudNet::new(shape, p.width, p.depth, p.classes, &ad);
    let mut optim = match p.optimizer {
        OptimizerKind::Adam => AdamConfig::new()
            .with_weight_decay(Some(WeightDecayConfig::new(p.weight_decay as f32)))
            .init(),
        OptimizerKind::Sgd => SgdConfig::new()
            .with_weight_decay(Some(WeightDecayConfig::new(p.weight_decay as f32)))
            .with_momentum(Some(
                MomentumConfig::new()
                    .with_momentum(p.momentum)
                    .with_dampening(0.0),
            ))
            .init(),
    };
    let loss_fn = CrossEntropyLossConfig::new().init(&ad);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (mut train_time, mut before, mut epochs) = (0.0, 0.0, Vec::new());
    let saved = if ckpt.resume {
        resume::load(&ckpt.state, &ckpt.key)?
    } else {
        if resume::exists(&ckpt.state) {
            tracing::warn!(
                "starting over: the saved state in {} will be replaced (--resume continues it)",
                ckpt.state.display()
            );
        }
        None
    };
    if let Some(s) = &saved {
        (model, optim) = resume::restore(&ckpt.state, s, model, optim, &mut rng)?;
        (train_time, before, epochs) = (s.train_seconds, s.seconds, s.epochs.clone());
        tracing::info!(
            "continuing after epoch {} of {} from {}",
            s.epochs_done,
            p.epochs,
            ckpt.state.display()
        );
    } else if ckpt.resume {
        tracing::info!(
            "no saved state in {}: starting from epoch 1",
            ckpt.state.display()
        );
    }
    let first = epochs.len();
    let bar = privynet_core::logging::progress((p.epochs * train.len()) as u64, "samples");
    bar.inc((first * train.len()) as u64);
    let start = Instant::now();
    for epoch in first..p.epochs {
        // Checked before the epoch, so a continued run already past the stop trains nothing.
        if ckpt.stop_after.is_some_and(|k| epoch >= k) {
            break;
        }
        let t = Instant::now();
        let lr = lr_at(p, epoch);
        let mut order: Vec<usize> = (0..train.len()).collect();
        order.shuffle(&mut rng);
        let (mut loss_sum, mut correct) = (0.0f64, 0usize);
        for chunk in order.chunks(p.batch_size) {
            let n = chunk.len();
            let flip: Vec<bool> = (0..n)
                .map(|_| p.flip && rand::Rng::random_bool(&mut rng, 0.5))
                .collect();
            let (x, y) = gather(train, shape, chunk, &flip);
            let x =
                Tensor::<4>::from_data(TensorData::new(x, [n, shape[0], shape[1], shape[2]]), &ad);
            let y = Tensor::<1, Int>::from_data(TensorData::new(y, [n]), &ad);
            let logits = model.forward(x);
            let loss = loss_fn.forward(logits.clone(), y.clone());
            let lv = loss.clone().into_scalar::<f32>();
            if !lv.is_finite() {
                return Err(NnError::Training(format!(
                    "the training loss became {lv} in epoch {} (lr {lr:.2e}); stopped. The last good model is at {}",
                    epoch + 1,
                    ckpt.model.display()
                )));
            }
            loss_sum += f64::from(lv) * n as f64;
            correct += logits
                .argmax(1)
                .reshape([n])
                .equal(y)
                .int()
                .sum()
                .into_scalar::<i64>() as usize;
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(lr, model, grads);
            bar.inc(n as u64);
            bar.set_message(format!("epoch {}/{} loss {:.3}", epoch + 1, p.epochs, lv));
        }
        train_time += t.elapsed().as_secs_f64();
        let valid = model.valid();
        let (val_loss, val_accuracy) = evaluate(&valid, val, shape, 256, &device);
        let (test_loss, test_accuracy) = evaluate(&valid, test, shape, 256, &device);
        save(&valid.clone().with_stable_ids(), &ckpt.model)?;
        let m = EpochMetrics {
            epoch: epoch + 1,
            lr,
            train_loss: loss_sum / train.len() as f64,
            train_accuracy: correct as f64 / train.len() as f64,
            val_loss,
            val_accuracy,
            test_loss,
            test_accuracy,
            seconds: t.elapsed().as_secs_f64(),
        };
        epochs.push(m);
        let state = resume::SavedState {
            key: ckpt.key.clone(),
            epochs_done: epoch + 1,
            rng_word_pos: rng.get_word_pos().to_string(),
            train_seconds: train_time,
            seconds: before + start.elapsed().as_secs_f64(),
            epochs: epochs.clone(),
        };
        resume::save(&ckpt.state, &state, &valid, &optim)?;
        on_epoch(epochs.last().expect("just pushed"));
    }
    bar.finish_and_clear();
    let report = TrainReport {
        samples_per_second: (epochs.len() * train.len()) as f64 / train_time.max(1e-9),
        seconds: before + start.elapsed().as_secs_f64(),
        epochs,
    };
    Ok((model.valid(), report))
}

/// Saves a model atomically: to a temporary name beside `path`, then renamed.
pub fn save(model: &CloudNet, path: &Path) -> Result<(), NnError> {
    let tmp: PathBuf = path.with_extension("bpk.partial");
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).map_err(|e| NnError::save(d, e))?;
    }
    model
        .clone()
        .save_file(&tmp)
        .map_err(|e| NnError::save(path, e))?;
    // burn may add its own extension; find what it wrote.
    let written = if tmp.exists() {
        tmp.clone()
    } else {
        tmp.with_extension("partial.bpk")
    };
    std::fs::rename(&written, path).map_err(|e| NnError::save(path, e))
}
