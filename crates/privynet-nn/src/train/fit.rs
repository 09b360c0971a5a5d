//! Training the cloud network: seeded shuffling and flips, Adam or SGD with momentum, cosine
//! schedule, weight decay; a validation and a test pass per epoch (validation accuracy is what
//! topologies are chosen on, test accuracy only reports); a checkpoint after every good epoch,
//! so a loss that turns NaN stops the run with the last good model kept, and a saved state that
//! lets a stopped or killed run continue exactly where it was (see `resume`).

use std::path::PathBuf;
use std::time::Instant;

use burn::module::Module;
use burn::nn::loss::{CrossEntropyLoss, CrossEntropyLossConfig};
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{GradientsParams, ModuleOptimizer, SgdConfig};
use burn::tensor::{Device, Int, Tensor, TensorData};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use privynet_core::manifest::{OptimizerKind, Schedule, TrainParams};

use super::cloud::CloudNet;
use super::report::{self, EpochMetrics, TrainReport};
use super::resume;
use crate::NnError;
use crate::data::Split;
use crate::kernels::FusedAdam;

/// Where a run keeps its checkpoints, whether it continues a saved state, and where it stops.
#[derive(Debug, Clone)]
pub struct Checkpoints {
    /// Where the finished model (burnpack) goes: the caller writes it once the run completes,
    /// and a run removes an older one when it starts, so an unfinished run leaves none.
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
pub fn lr_at(params: &TrainParams, epoch: usize) -> f64 {
    match params.schedule {
        Schedule::Constant => params.lr,
        Schedule::Cosine => {
            0.5 * params.lr
                * (1.0 + (std::f64::consts::PI * epoch as f64 / params.epochs as f64).cos())
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

/// What every epoch of a run works with.
struct EpochInputs<'a> {
    params: &'a TrainParams,
    shape: [usize; 3],
    train: &'a Split,
    val: &'a Split,
    test: &'a Split,
    checkpoints: &'a Checkpoints,
    /// The device of the validation and test passes, and its autodiff twin for training.
    device: Device,
    autodiff: Device,
    loss_fn: CrossEntropyLoss,
}

/// What a run has done so far, with the runs it continues: the shuffling stream, the epochs'
/// metrics and the time they took.
struct Progress {
    rng: ChaCha8Rng,
    epochs: Vec<EpochMetrics>,
    /// Seconds spent in training steps.
    train_seconds: f64,
    /// Seconds the runs this one continues took in all.
    seconds_before: f64,
}

/// Trains a cloud network on `train`, scoring it on `val` and `test` after every epoch; after
/// every epoch whose loss is finite, saves the model and the state to continue from
/// (`checkpoints`). Nothing in training depends on either score. `on_epoch` sees each epoch
/// this run trains.
#[allow(clippy::too_many_arguments)]
pub fn train(
    params: &TrainParams,
    seed: u64,
    shape: [usize; 3],
    train: &Split,
    val: &Split,
    test: &Split,
    checkpoints: &Checkpoints,
    mut on_epoch: impl FnMut(&EpochMetrics),
) -> Result<(CloudNet, TrainReport), NnError> {
    let device = Device::flex();
    device.seed(seed);
    let autodiff = device.clone().autodiff();
    let model = CloudNet::new(shape, params.width, params.depth, params.classes, &autodiff);
    let optim = optimizer(params);
    let loss_fn = CrossEntropyLossConfig::new().init(&autodiff);
    let (mut model, mut optim, mut progress) = start(params, seed, checkpoints, model, optim)?;
    let inputs = EpochInputs {
        params,
        shape,
        train,
        val,
        test,
        checkpoints,
        device,
        autodiff,
        loss_fn,
    };
    let first = progress.epochs.len();
    let bar = privynet_core::logging::progress((params.epochs * train.len()) as u64, "samples");
    bar.inc((first * train.len()) as u64);
    let start = Instant::now();
    for epoch in first..params.epochs {
        // Checked before the epoch, so a continued run already past the stop trains nothing.
        if checkpoints.stop_after.is_some_and(|k| epoch >= k) {
            break;
        }
        // Also checked before the epoch, so a continued run stops where the first would have.
        if report::patience_spent(&progress.epochs, params.patience) {
            break;
        }
        let on_batch = |rows: usize, loss: f32| {
            bar.inc(rows as u64);
            bar.set_message(format!(
                "epoch {}/{} loss {:.3}",
                epoch + 1,
                params.epochs,
                loss
            ));
        };
        model = run_epoch(
            model,
            &mut optim,
            &mut progress,
            &inputs,
            epoch,
            start,
            on_batch,
        )?;
        on_epoch(progress.epochs.last().expect("just pushed"));
    }
    bar.finish_and_clear();
    let early_stopped = report::patience_spent(&progress.epochs, params.patience);
    let last = progress.epochs.len().saturating_sub(1);
    let (model, kept) = match (params.patience, report::best_epoch(&progress.epochs)) {
        (Some(_), Some(best)) if best != last => (load_best(model.valid(), checkpoints)?, best),
        _ => (model.valid(), last),
    };
    let report = TrainReport {
        samples_per_second: (progress.epochs.len() * train.len()) as f64
            / progress.train_seconds.max(1e-9),
        seconds: progress.seconds_before + start.elapsed().as_secs_f64(),
        epochs: progress.epochs,
        kept,
        early_stopped,
    };
    Ok((model, report))
}

/// Where the best epoch's network waits while a run with `train.patience` goes on: in the
/// state folder, so that a killed run continued later still keeps it.
fn best_path(checkpoints: &Checkpoints) -> PathBuf {
    checkpoints.state.join("best.bpk")
}

/// The best epoch's network, saved by [`end_epoch`].
fn load_best(model: CloudNet, checkpoints: &Checkpoints) -> Result<CloudNet, NnError> {
    let path = best_path(checkpoints);
    model.try_load_file(&path).map_err(|e| NnError::Data {
        message: format!("the best epoch's network cannot be loaded: {e}"),
        path,
    })
}

/// The optimizer the settings ask for.
fn optimizer(params: &TrainParams) -> ModuleOptimizer {
    let decay = WeightDecayConfig::new(params.weight_decay as f32);
    match params.optimizer {
        OptimizerKind::Adam => FusedAdam::new(Some(decay.penalty)).into(),
        OptimizerKind::Sgd => SgdConfig::new()
            .with_weight_decay(Some(decay))
            .with_momentum(Some(
                MomentumConfig::new()
                    .with_momentum(params.momentum)
                    .with_dampening(0.0),
            ))
            .init(),
    }
}

/// Where a run starts: from scratch, or from the saved state it continues
/// (`checkpoints.resume`), whose model, optimizer and stream position replace the fresh ones.
fn start(
    params: &TrainParams,
    seed: u64,
    checkpoints: &Checkpoints,
    model: CloudNet,
    optim: ModuleOptimizer,
) -> Result<(CloudNet, ModuleOptimizer, Progress), NnError> {
    let mut progress = Progress {
        rng: ChaCha8Rng::seed_from_u64(seed),
        epochs: Vec::new(),
        train_seconds: 0.0,
        seconds_before: 0.0,
    };
    let saved = if checkpoints.resume {
        resume::load(&checkpoints.state, &checkpoints.key)?
    } else {
        if resume::exists(&checkpoints.state) {
            tracing::warn!(
                "starting over: the saved state in {} will be replaced (--resume continues it)",
                checkpoints.state.display()
            );
        }
        None
    };
    let Some(saved) = saved else {
        if checkpoints.resume {
            tracing::info!(
                "no saved state in {}: starting from epoch 1",
                checkpoints.state.display()
            );
        }
        return Ok((model, optim, progress));
    };
    let (model, optim) =
        resume::restore(&checkpoints.state, &saved, model, optim, &mut progress.rng)?;
    progress.train_seconds = saved.train_seconds;
    progress.seconds_before = saved.seconds;
    progress.epochs = saved.epochs;
    tracing::info!(
        "continuing after epoch {} of {} from {}",
        saved.epochs_done,
        params.epochs,
        checkpoints.state.display()
    );
    Ok((model, optim, progress))
}

/// One epoch (0-based) of the schedule: the training pass, then the scores and the state saved
/// after it (see [`end_epoch`]). `run_start` is when this run started.
fn run_epoch(
    model: CloudNet,
    optim: &mut ModuleOptimizer,
    progress: &mut Progress,
    inputs: &EpochInputs<'_>,
    epoch: usize,
    run_start: Instant,
    on_batch: impl FnMut(usize, f32),
) -> Result<CloudNet, NnError> {
    let epoch_start = Instant::now();
    let pass = TrainPass {
        epoch,
        lr: lr_at(inputs.params, epoch),
        ..TrainPass::default()
    };
    let (model, pass) = train_epoch(model, optim, &mut progress.rng, inputs, pass, on_batch)?;
    progress.train_seconds += epoch_start.elapsed().as_secs_f64();
    end_epoch(
        &model,
        optim,
        progress,
        inputs,
        pass,
        epoch_start,
        run_start,
    )?;
    Ok(model)
}

/// An epoch's training pass: its index (0-based) and learning rate, the summed loss over its
/// samples and how many of them the network got right as it went.
#[derive(Debug, Clone, Copy, Default)]
struct TrainPass {
    epoch: usize,
    lr: f64,
    loss_sum: f64,
    correct: usize,
}

/// One pass over the training split in a fresh shuffled order, with random flips if the
/// settings ask for them. A loss that is not finite stops the run. `on_batch` sees each batch's
/// size and loss.
fn train_epoch(
    mut model: CloudNet,
    optim: &mut ModuleOptimizer,
    rng: &mut ChaCha8Rng,
    inputs: &EpochInputs<'_>,
    mut pass: TrainPass,
    mut on_batch: impl FnMut(usize, f32),
) -> Result<(CloudNet, TrainPass), NnError> {
    let (params, shape, train) = (inputs.params, inputs.shape, inputs.train);
    let mut order: Vec<usize> = (0..train.len()).collect();
    order.shuffle(rng);
    for chunk in order.chunks(params.batch_size) {
        let n = chunk.len();
        let flip: Vec<bool> = (0..n)
            .map(|_| params.flip && rand::Rng::random_bool(rng, 0.5))
            .collect();
        let (x, y) = gather(train, shape, chunk, &flip);
        let x = Tensor::<4>::from_data(
            TensorData::new(x, [n, shape[0], shape[1], shape[2]]),
            &inputs.autodiff,
        );
        let y = Tensor::<1, Int>::from_data(TensorData::new(y, [n]), &inputs.autodiff);
        let logits = model.forward(x);
        let loss = inputs.loss_fn.forward(logits.clone(), y.clone());
        let batch_loss = loss.clone().into_scalar::<f32>();
        if !batch_loss.is_finite() {
            return Err(NnError::Training(format!(
                "the training loss became {batch_loss} in epoch {} (lr {:.2e}); stopped. The last good model is in {}",
                pass.epoch + 1,
                pass.lr,
                inputs.checkpoints.state.display()
            )));
        }
        pass.loss_sum += f64::from(batch_loss) * n as f64;
        pass.correct += logits
            .argmax(1)
            .reshape([n])
            .equal(y)
            .int()
            .sum()
            .into_scalar::<i64>() as usize;
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(pass.lr, model, grads);
        on_batch(n, batch_loss);
    }
    Ok((model, pass))
}

/// After an epoch's training pass: scores the model on the validation and test splits, records
/// the epoch's metrics and saves the state a later run continues from. The last good model
/// lives in that state: the output folder gets its model only when the run completes, so an
/// interrupted run leaves nothing there that looks whole. `epoch_start` and `run_start` time
/// the epoch and the run.
fn end_epoch(
    model: &CloudNet,
    optim: &ModuleOptimizer,
    progress: &mut Progress,
    inputs: &EpochInputs<'_>,
    pass: TrainPass,
    epoch_start: Instant,
    run_start: Instant,
) -> Result<(), NnError> {
    let (shape, train, checkpoints) = (inputs.shape, inputs.train, inputs.checkpoints);
    let valid = model.valid();
    let (val_loss, val_accuracy) = evaluate(&valid, inputs.val, shape, 256, &inputs.device);
    let (test_loss, test_accuracy) = evaluate(&valid, inputs.test, shape, 256, &inputs.device);
    progress.epochs.push(EpochMetrics {
        epoch: pass.epoch + 1,
        lr: pass.lr,
        train_loss: pass.loss_sum / train.len() as f64,
        train_accuracy: pass.correct as f64 / train.len() as f64,
        val_loss,
        val_accuracy,
        test_loss,
        test_accuracy,
        seconds: epoch_start.elapsed().as_secs_f64(),
    });
    // Saved before the state that counts this epoch: a run killed in between repeats the
    // epoch, exactly, and saves the same network again.
    if inputs.params.patience.is_some()
        && report::best_epoch(&progress.epochs) == Some(progress.epochs.len() - 1)
    {
        super::cloud::save(&valid, &best_path(checkpoints))?;
    }
    let state = resume::SavedState {
        key: checkpoints.key.clone(),
        epochs_done: pass.epoch + 1,
        rng_word_pos: progress.rng.get_word_pos().to_string(),
        train_seconds: progress.train_seconds,
        seconds: progress.seconds_before + run_start.elapsed().as_secs_f64(),
        epochs: progress.epochs.clone(),
    };
    resume::save(&checkpoints.state, &state, &valid, optim)
}

#[cfg(test)]
mod tests {
    use rand::Rng;

    use super::*;

    /// `n` random 2x4x4 feature maps with random labels of 3 classes: val accuracy wanders, so
    /// patience ends the run and an earlier epoch is the best.
    fn random_split(n: usize, rng: &mut ChaCha8Rng) -> Split {
        Split {
            ids: (0..n as i64).collect(),
            labels: (0..n).map(|_| rng.random_range(0..3)).collect(),
            x: (0..n * 32).map(|_| rng.random_range(-1.0..1.0)).collect(),
        }
    }

    #[test]
    fn patience_stops_the_run_and_keeps_the_best_epochs_network() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let (train_split, val, test) = (
            random_split(64, &mut rng),
            random_split(40, &mut rng),
            random_split(8, &mut rng),
        );
        let params = TrainParams {
            epochs: 12,
            batch_size: 16,
            width: 4,
            classes: 3,
            lr: 0.01,
            schedule: Schedule::Constant,
            patience: Some(1),
            ..TrainParams::default()
        };
        let dir = tempfile::tempdir().unwrap();
        let checkpoints = Checkpoints {
            model: dir.path().join("cloud_model.bpk"),
            state: dir.path().join("resume"),
            key: serde_json::json!({}),
            resume: false,
            stop_after: None,
        };
        let shape = [2, 4, 4];
        let (model, report) = train(
            &params,
            5,
            shape,
            &train_split,
            &val,
            &test,
            &checkpoints,
            |_| {},
        )
        .unwrap();
        let n = report.epochs.len();
        assert!(report.early_stopped && n < params.epochs, "{n} epochs");
        // The epoch before the last did not improve on the best, and the best is kept.
        let best = report::best_epoch(&report.epochs).unwrap();
        assert_eq!((report.kept, n - 1 - best), (best, 1));
        let (_, accuracy) = evaluate(&model, &val, shape, 256, &Device::flex());
        assert_eq!(accuracy, report.epochs[best].val_accuracy);
    }
}
