//! The pipeline manifest (`pipelines/*.yaml`): dataset, pretrained model and preprocessing, the
//! sweep of topologies and each stage's parameters. Unknown keys are errors with line and column,
//! and `--set key.path=value` overrides apply before the manifest is checked.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_norway::Value;

use crate::{CoreError, Result};

mod args;
mod executor;
mod final_training;
mod grid;
mod overrides;
mod validate;

pub use args::ManifestArgs;
pub use executor::{ExecutorKind, ExecutorSpec, SlurmResources, SlurmSpec};
pub use final_training::{FinalParams, ImageCount};
pub use grid::{grid_channels, sample_channels};
pub use overrides::apply_override;
pub use validate::{MAX_INPUT_SIZE, SPLITS, check_input_size};

/// A whole pipeline manifest.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// A short name; written into every artifact's provenance.
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// The seed every seeded choice derives from (splits, selections, training).
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Where the pipeline's outputs go; defaults to `runs/<name>`.
    #[serde(default)]
    pub out_dir: Option<PathBuf>,
    pub dataset: DatasetSpec,
    pub model: ModelSpec,
    pub sweep: SweepSpec,
    #[serde(default)]
    pub slice: SliceParams,
    #[serde(default)]
    pub extract: ExtractParams,
    #[serde(default)]
    pub train: TrainParams,
    #[serde(default)]
    pub attack: AttackParams,
    #[serde(default)]
    pub optimize: OptimizeParams,
    /// The chosen topology's final training, before it is deployed (`final:`); without it the
    /// characterization's cloud network is deployed.
    #[serde(default, rename = "final", skip_serializing_if = "Option::is_none")]
    pub final_training: Option<FinalParams>,
    /// Where the runner runs the nodes (this machine or Slurm); not part of any cache key.
    #[serde(default)]
    pub executor: ExecutorSpec,
    /// Where each zone's artifacts live.
    #[serde(default)]
    pub storage: StorageSpec,
}

/// Where each zone's artifacts live. Cloud-zone artifacts (features, topologies, the cloud
/// network and its training outputs) go under `cloud`, which may be an object-store URL
/// (`s3://bucket/prefix`, `gs://`, `az://`); everything else (images, selections, local
/// networks, attack outputs, the raw baseline, the report, the lock file) stays under `local`,
/// which must be a path on this machine.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSpec {
    /// The local zone's folder; the same as `out_dir` (set one of the two), by default
    /// `runs/<name>`.
    #[serde(default)]
    pub local: Option<PathBuf>,
    /// The cloud zone's place; by default the local folder (today's single-folder layout).
    #[serde(default)]
    pub cloud: Option<PathBuf>,
}

/// Whether a place names an object (`scheme://...`) rather than a path on this machine.
pub fn is_url(p: &Path) -> bool {
    p.to_str()
        .and_then(|s| s.split_once("://"))
        .is_some_and(|(scheme, _)| {
            !scheme.is_empty()
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        })
}

/// The seed used when neither the manifest nor a `--seed` flag sets one.
pub const DEFAULT_SEED: u64 = 42;

fn default_seed() -> u64 {
    DEFAULT_SEED
}

/// The seed a stage binary uses: its `--seed` flag, else the manifest's `seed`, else
/// [`DEFAULT_SEED`].
pub fn seed_of(flag: Option<u64>, manifest: Option<&Manifest>) -> u64 {
    flag.or(manifest.map(|m| m.seed)).unwrap_or(DEFAULT_SEED)
}

/// The `images.parquet` a stage binary uses: the path its flag gives, else the manifest's
/// ([`Manifest::images_path`]); `None` when it has neither.
pub fn images_of(flag: Option<&Path>, manifest: Option<&Manifest>) -> Option<PathBuf> {
    flag.map(Path::to_path_buf)
        .or_else(|| manifest.map(Manifest::images_path))
}

/// The dataset and how it is split.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetSpec {
    pub format: DatasetFormat,
    /// A CIFAR-10 folder (plain or .gz batch files, or the official tarball) or an image folder.
    pub path: PathBuf,
    /// Resize every image to `[height, width]` (bilinear). Without it, images of mixed sizes
    /// are an error rather than a silent resize.
    #[serde(default)]
    pub resize: Option<[u32; 2]>,
    pub splits: SplitSizes,
}

/// Supported dataset layouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DatasetFormat {
    /// CIFAR-10 in the official binary layout.
    Cifar10Binary,
    /// One subfolder per class holding PNG or JPEG files.
    ImageFolder,
}

/// Number of images per split, drawn stratified by class.
#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SplitSizes {
    /// Images the cloud network trains on.
    pub train: usize,
    /// Validation images, carved from the training images (CIFAR-10's train batches) and
    /// disjoint from `train`, `attacker` and `test`: the cloud network is scored on them after
    /// every epoch and the optimizer chooses on their accuracy, so the test split only reports.
    /// Optional in a manifest (0 when absent), but the train stage refuses features without
    /// `val` rows, naming this key; every shipped manifest sets it.
    #[serde(default)]
    pub val: usize,
    /// The attacker's own pool: same distribution, disjoint from `train`.
    pub attacker: usize,
    /// Images the cloud network is tested on and the attacker tries to rebuild. Test accuracy
    /// is reported, never used to choose.
    pub test: usize,
}

/// The pretrained model and its preprocessing.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    pub path: PathBuf,
    /// The image input's name; defaults to the model's only image input.
    #[serde(default)]
    pub input: Option<String>,
    /// The square input size images are resized to.
    pub input_size: u32,
    #[serde(default)]
    pub preprocess: Preprocess,
}

/// Exact preprocessing of RGB u8 pixels into the model's input:
/// `x = (pixel * scale - mean[c]) / std[c]`, channels in `channel_order`, NCHW.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Preprocess {
    /// How images whose size differs from `model.input_size` are resized; `none` makes such
    /// an image an error, so a resize is never silent.
    #[serde(default)]
    pub resize: ResizeMode,
    #[serde(default)]
    pub channel_order: ChannelOrder,
    #[serde(default = "one")]
    pub scale: f32,
    #[serde(default)]
    pub mean: [f32; 3],
    #[serde(default = "ones")]
    pub std: [f32; 3],
}

fn one() -> f32 {
    1.0
}
fn ones() -> [f32; 3] {
    [1.0; 3]
}

impl Default for Preprocess {
    fn default() -> Self {
        Self {
            resize: ResizeMode::None,
            channel_order: ChannelOrder::Rgb,
            scale: 1.0,
            mean: [0.0; 3],
            std: [1.0; 3],
        }
    }
}

/// How an image is brought to the model's input size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ResizeMode {
    /// Images must already have the input size.
    #[default]
    None,
    /// Bilinear interpolation (the `image` crate's triangle filter).
    Bilinear,
}

/// Channel order of the model's input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelOrder {
    #[default]
    Rgb,
    Bgr,
}

/// A channel count in a sweep: a number, or `all` channels at the cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum ChannelCount {
    Count(u32),
    All(AllKeyword),
}

/// The literal `all`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AllKeyword {
    All,
}

impl ChannelCount {
    /// Resolves against the number of channels at the cut.
    pub fn resolve(self, cut_channels: u32) -> u32 {
        match self {
            ChannelCount::Count(d) => d,
            ChannelCount::All(_) => cut_channels,
        }
    }
}

impl std::fmt::Display for ChannelCount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChannelCount::Count(d) => write!(f, "{d}"),
            ChannelCount::All(_) => f.write_str("all"),
        }
    }
}

/// The topologies to characterize: the grid `cuts x channels`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SweepSpec {
    /// Cut names: friendly layer names (`conv1`, `fire3`) or ONNX tensor names.
    pub cuts: Vec<String>,
    pub channels: Vec<ChannelCount>,
    /// The most topologies the grid may resolve to: each one costs a training and an attack
    /// (minutes to hours), so a typo such as a channel list of every count is refused before
    /// anything runs rather than queued for days. Raise it when the grid is meant.
    #[serde(default = "default_max_topologies")]
    pub max_topologies: usize,
    /// Defences searched beside cuts and channel counts: Gaussian noise, its std a fraction of
    /// each selected channel's std (0: none), added on the user's machine before features
    /// leave. Every level is crossed with every `bits`.
    #[serde(default = "default_noise", skip_serializing_if = "is_default_noise")]
    pub noise: Vec<f64>,
    /// Bits per feature value sent: 32 (float, as extracted), 8 or 4 (per-channel integer
    /// codes, after the noise).
    #[serde(default = "default_bits", skip_serializing_if = "is_default_bits")]
    pub bits: Vec<u8>,
}

fn default_noise() -> Vec<f64> {
    vec![0.0]
}
fn is_default_noise(v: &[f64]) -> bool {
    v == [0.0]
}
fn default_bits() -> Vec<u8> {
    vec![32]
}
fn is_default_bits(v: &[u8]) -> bool {
    v == [32]
}

impl SweepSpec {
    /// The defences of the grid, undefended first, each once, in the order noise x bits.
    pub fn defences(&self) -> Vec<crate::defence::Defence> {
        let mut out = vec![];
        for &noise in &self.noise {
            for &bits in &self.bits {
                let d = crate::defence::Defence { noise, bits };
                if !out.contains(&d) {
                    out.push(d);
                }
            }
        }
        out.sort_by_key(|d| !d.is_none());
        out
    }
}

fn default_max_topologies() -> usize {
    256
}

/// How the secret channel selection is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SelectionMethod {
    /// Uniform without replacement, seeded.
    #[default]
    Random,
    /// PrivyNet's hierarchical selection: keep the top fraction of channels by Fisher
    /// discriminant ratio on the user's labelled training images, then draw at random from them.
    FisherRandom,
}

impl std::fmt::Display for SelectionMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SelectionMethod::Random => "random",
            SelectionMethod::FisherRandom => "fisher-random",
        })
    }
}

/// Parameters of the slice stage.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SliceParams {
    #[serde(default)]
    pub method: SelectionMethod,
    /// For `fisher-random`: the fraction of channels, by Fisher score, that D are drawn from.
    #[serde(default = "default_top_fraction")]
    pub top_fraction: f64,
    /// For `fisher-random`: how many training images score the channels.
    #[serde(default = "default_fisher_images")]
    pub fisher_images: usize,
}

fn default_top_fraction() -> f64 {
    0.5
}
fn default_fisher_images() -> usize {
    1000
}

impl Default for SliceParams {
    fn default() -> Self {
        Self {
            method: SelectionMethod::Random,
            top_fraction: default_top_fraction(),
            fisher_images: default_fisher_images(),
        }
    }
}

/// Storage type of features.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FeatureDtype {
    #[default]
    Float32,
    Float16,
}

/// Parameters of the extract stage.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ExtractParams {
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    #[serde(default = "default_splits")]
    pub splits: Vec<String>,
    #[serde(default)]
    pub dtype: FeatureDtype,
    /// ONNX Runtime intra-op threads; defaults to the machine's cores.
    #[serde(default)]
    pub threads: Option<usize>,
}

fn default_batch() -> usize {
    128
}
fn default_splits() -> Vec<String> {
    SPLITS.iter().map(|s| s.to_string()).collect()
}

impl Default for ExtractParams {
    fn default() -> Self {
        Self {
            batch_size: default_batch(),
            splits: default_splits(),
            dtype: FeatureDtype::Float32,
            threads: None,
        }
    }
}

/// The optimizer of a training run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    #[default]
    Adam,
    /// SGD with momentum.
    Sgd,
}

/// The learning-rate schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    /// Cosine decay from `lr` to 0 over the epochs.
    #[default]
    Cosine,
    Constant,
}

/// Parameters of the cloud training stage: the cloud network and its optimizer.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TrainParams {
    #[serde(default = "default_epochs")]
    pub epochs: usize,
    #[serde(default = "default_train_batch")]
    pub batch_size: usize,
    #[serde(default)]
    pub optimizer: OptimizerKind,
    #[serde(default = "default_lr")]
    pub lr: f64,
    /// Momentum, for `sgd`.
    #[serde(default = "default_momentum")]
    pub momentum: f64,
    #[serde(default = "default_weight_decay")]
    pub weight_decay: f64,
    #[serde(default)]
    pub schedule: Schedule,
    /// Channels of the cloud network's first stage; its second and third stages have twice
    /// and four times as many (at most 512). Every cut gets the same three stages, whatever the
    /// size of its feature maps (see `privynet_nn::train::cloud`), so cuts compare on accuracy
    /// with networks of comparable capacity.
    #[serde(default = "default_width")]
    pub width: usize,
    /// Conv blocks per stage (three stages, so `3 x depth` blocks in all).
    #[serde(default = "default_depth")]
    pub depth: usize,
    /// Random horizontal flips of the feature maps.
    #[serde(default = "default_true")]
    pub flip: bool,
    /// Stop when val accuracy has not improved for this many epochs and keep the best epoch's
    /// network (the final training sets it); without it every epoch runs and the last is kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patience: Option<usize>,
    /// Number of classes of the task.
    #[serde(default = "default_classes")]
    pub classes: usize,
}

fn default_epochs() -> usize {
    10
}
fn default_train_batch() -> usize {
    128
}
fn default_lr() -> f64 {
    1e-3
}
fn default_momentum() -> f64 {
    0.9
}
fn default_weight_decay() -> f64 {
    5e-4
}
fn default_width() -> usize {
    64
}
fn default_depth() -> usize {
    1
}
fn default_true() -> bool {
    true
}
fn default_classes() -> usize {
    10
}

impl Default for TrainParams {
    fn default() -> Self {
        Self {
            epochs: default_epochs(),
            batch_size: default_train_batch(),
            optimizer: OptimizerKind::Adam,
            lr: default_lr(),
            momentum: default_momentum(),
            weight_decay: default_weight_decay(),
            schedule: Schedule::Cosine,
            width: default_width(),
            depth: default_depth(),
            flip: true,
            patience: None,
            classes: default_classes(),
        }
    }
}

/// What the simulated attacker knows about the local network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AttackMode {
    /// The pretrained model, the cut and which channels were selected (the worst case).
    KnownSelection,
    /// The model, the cut and D, but not which channels: it trains on its own random guess.
    UnknownSelection,
    /// The model, the cut and D: it matches each received channel to a pretrained channel by
    /// per-channel statistics, then trains on the matched channels.
    MatchedSelection,
}

impl AttackMode {
    pub fn name(self) -> &'static str {
        match self {
            AttackMode::KnownSelection => "known-selection",
            AttackMode::UnknownSelection => "unknown-selection",
            AttackMode::MatchedSelection => "matched-selection",
        }
    }
}

/// How the simulated attacker rebuilds images from features.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AttackFamily {
    /// A learned inverse network (IRN) trained on the attacker's own (image, features) pairs.
    Irn,
    /// He et al.'s regularised maximum-likelihood attack: gradient descent on the image through
    /// the public local network, started from the IRN's reconstruction and the pool's mean.
    Optimization,
}

impl AttackFamily {
    pub fn name(self) -> &'static str {
        match self {
            AttackFamily::Irn => "irn",
            AttackFamily::Optimization => "optimization",
        }
    }
}

/// Parameters of the optimisation attack (`attack.optimization`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OptimizationParams {
    /// Adam steps on each batch of victim images, from each start.
    #[serde(default = "default_opt_iterations")]
    pub iterations: usize,
    /// Peak step size (Adam, on pixels in [0, 1]), decayed by a cosine over the iterations.
    #[serde(default = "default_opt_lr")]
    pub lr: f64,
    /// Weight of the total-variation prior against the feature-matching error.
    #[serde(default = "default_opt_tv")]
    pub tv_weight: f64,
    /// Victims optimised together.
    #[serde(default = "default_opt_batch")]
    pub batch_size: usize,
}

fn default_opt_iterations() -> usize {
    // The same bench at TV 0.05: 100 / 200 / 400 steps gave 21.50 / 22.21 / 22.88 dB at
    // conv1-d16 and 17.43 / 17.82 / 18.26 at fire3-d16, each doubling of the time for about
    // 0.5 dB; 200 is the default, and docs/benchmarks.md gives what 400 would add.
    200
}
fn default_opt_lr() -> f64 {
    // lr 0.05 lost 1.1 dB at conv1-d16 and 1.6 dB at fire3-d16 against 0.02 (200 steps, TV
    // 0.05): Adam's steps overshoot the pixels.
    0.02
}
fn default_opt_tv() -> f64 {
    // `make bench BENCH=inversion` (known selection, 200 victims of the default pipeline): with
    // 200 steps at lr 0.02, TV weights 0 / 0.01 / 0.05 / 0.2 gave 20.74 / 21.39 / 22.21 / 22.49
    // dB at conv1-d16, 17.26 / 17.39 / 17.82 / 18.44 at fire3-d16 and 13.00 / 12.96 / 13.08 /
    // 13.28 at fire5-d16: the prior matters most where the features say least.
    0.2
}
fn default_opt_batch() -> usize {
    100
}

impl Default for OptimizationParams {
    fn default() -> Self {
        Self {
            iterations: default_opt_iterations(),
            lr: default_opt_lr(),
            tv_weight: default_opt_tv(),
            batch_size: default_opt_batch(),
        }
    }
}

/// Parameters of the attack stage: the attacker's image reconstruction network (IRN) and the
/// optimisation attack.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AttackParams {
    #[serde(default = "default_modes")]
    pub modes: Vec<AttackMode>,
    /// The attacker families run under every mode (`irn` first: the optimisation starts from
    /// its reconstructions). The reported loss is the worst over families and modes.
    #[serde(default = "default_families")]
    pub families: Vec<AttackFamily>,
    #[serde(default)]
    pub optimization: OptimizationParams,
    /// The most epochs the IRN trains; it stops earlier once held-out PSNR has stopped
    /// improving (`patience`, `min_delta`). A run that reaches the cap is reported as not
    /// converged: its privacy loss may be understated.
    #[serde(default = "default_attack_max_epochs")]
    pub max_epochs: usize,
    /// Epochs without a held-out PSNR gain of at least `min_delta` after which training stops.
    #[serde(default = "default_patience")]
    pub patience: usize,
    /// The smallest held-out PSNR gain (dB) that counts as progress.
    #[serde(default = "default_min_delta")]
    pub min_delta: f64,
    /// Fraction of the attacker pool held out to decide when to stop and which epoch to keep.
    #[serde(default = "default_holdout")]
    pub holdout: f64,
    #[serde(default = "default_attack_batch")]
    pub batch_size: usize,
    /// Peak learning rate (Adam).
    #[serde(default = "default_lr")]
    pub lr: f64,
    /// Learning rate schedule over `max_epochs`, after the warm-up.
    #[serde(default = "default_attack_schedule")]
    pub schedule: Schedule,
    /// Epochs of linear learning-rate warm-up (per step) from lr/10 to lr.
    #[serde(default = "default_warmup")]
    pub warmup_epochs: usize,
    /// Weight of the total-variation term added to the MSE loss (0 turns it off).
    #[serde(default)]
    pub tv_weight: f64,
    /// Channels of the IRN's first level; by default it follows the cut's full channel count
    /// C (at least 64, at most 256), never the number of channels kept, and halves at each
    /// upsampling.
    #[serde(default)]
    pub width: Option<usize>,
    /// No hidden IRN layer is narrower than this.
    #[serde(default = "default_min_width")]
    pub min_width: usize,
    /// At most this many attacker-pool images train the IRN, held-out part included
    /// (default: the whole pool).
    #[serde(default)]
    pub pool: Option<usize>,
    /// At most this many test images are attacked (default: all).
    #[serde(default)]
    pub victims: Option<usize>,
    /// Bootstrap resamples for the 95% interval of mean PSNR and SSIM over the victims.
    #[serde(default = "default_bootstrap")]
    pub bootstrap: usize,
}

fn default_modes() -> Vec<AttackMode> {
    vec![
        AttackMode::KnownSelection,
        AttackMode::UnknownSelection,
        AttackMode::MatchedSelection,
    ]
}
fn default_families() -> Vec<AttackFamily> {
    vec![AttackFamily::Irn, AttackFamily::Optimization]
}
fn default_attack_max_epochs() -> usize {
    30
}
fn default_patience() -> usize {
    2
}
fn default_min_delta() -> f64 {
    0.05
}
fn default_holdout() -> f64 {
    0.1
}
fn default_attack_batch() -> usize {
    64
}
fn default_attack_schedule() -> Schedule {
    Schedule::Cosine
}
fn default_warmup() -> usize {
    1
}
fn default_min_width() -> usize {
    // Measured at fire3-d4 (the default pipeline's pool, converged): a floor of 64 gave
    // 14.79 dB [14.62, 14.97], a floor of 32 14.74 [14.57, 14.93] at 1.2-1.8x the speed. The
    // width that matters is the stem's (from C): at fire3-d128, width 128 reached 20.25 dB by
    // epoch 9 where width 64 had 19.79.
    32
}
fn default_bootstrap() -> usize {
    1000
}

impl Default for AttackParams {
    fn default() -> Self {
        Self {
            modes: default_modes(),
            families: default_families(),
            optimization: OptimizationParams::default(),
            max_epochs: default_attack_max_epochs(),
            patience: default_patience(),
            min_delta: default_min_delta(),
            holdout: default_holdout(),
            batch_size: default_attack_batch(),
            lr: default_lr(),
            schedule: default_attack_schedule(),
            warmup_epochs: default_warmup(),
            tv_weight: 0.0,
            width: None,
            min_width: default_min_width(),
            pool: None,
            victims: None,
            bootstrap: default_bootstrap(),
        }
    }
}

/// How the optimizer gets its data points.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizeMode {
    /// Characterize only the sampled topologies, fit models of accuracy and privacy loss in
    /// log D per cut, choose from the predictions, then evaluate the choice for real.
    #[default]
    Model,
    /// Characterize the whole grid; the report also gives the model-based choice's regret.
    Exhaustive,
}

/// Which channel counts of a cut's grid are sampled: a rule or a count (`all` is the cut's
/// channel count). A count that is not on a cut's grid samples nothing there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum SamplePoint {
    Count(u32),
    Rule(SampleRule),
}

/// A sampling rule over a cut's sorted grid of channel counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SampleRule {
    Smallest,
    /// The grid's median position (the lower one of two).
    Middle,
    Largest,
    All,
}

/// The optimizer's limits. Privacy loss is the worst case over the enabled attacker modes.
#[derive(Debug, Clone, Copy, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Largest allowed reconstruction PSNR (dB).
    #[serde(default)]
    pub max_psnr: Option<f64>,
    /// Largest allowed reconstruction SSIM.
    #[serde(default)]
    pub max_ssim: Option<f64>,
    /// Most local multiply-accumulates per image.
    #[serde(default)]
    pub max_macs: Option<i64>,
    /// Most bytes of local weights.
    #[serde(default)]
    pub max_weight_bytes: Option<i64>,
    /// Most bytes sent to the cloud per image (the features as stored in Parquet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes_per_image: Option<i64>,
    /// Largest allowed Fisher-information PSNR bound (dB): what no unbiased attacker can beat
    /// on average. A topology without noise has no bound and fails this limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_psnr_bound: Option<f64>,
}

/// Parameters of the optimizer stage.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OptimizeParams {
    #[serde(default)]
    pub mode: OptimizeMode,
    /// The channel counts sampled per cut to fit the models.
    #[serde(default = "default_sample")]
    pub sample: Vec<SamplePoint>,
    #[serde(default)]
    pub limits: Limits,
    /// The privacy safety margin is this many times the fit's largest held-out error.
    #[serde(default = "default_margin_scale")]
    pub margin_scale: f64,
    /// Also train the cloud network on the raw images (a local-only run), so the report says
    /// what the split costs in accuracy.
    #[serde(default = "default_true")]
    pub raw_baseline: bool,
}

fn default_sample() -> Vec<SamplePoint> {
    vec![
        SamplePoint::Rule(SampleRule::Smallest),
        SamplePoint::Rule(SampleRule::Middle),
        SamplePoint::Rule(SampleRule::Largest),
    ]
}
fn default_margin_scale() -> f64 {
    1.0
}

impl Default for OptimizeParams {
    fn default() -> Self {
        Self {
            mode: OptimizeMode::Model,
            sample: default_sample(),
            limits: Limits::default(),
            margin_scale: default_margin_scale(),
            raw_baseline: true,
        }
    }
}

impl Manifest {
    /// Reads a manifest file and applies `key.path=value` overrides.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| CoreError::io(path, e))?;
        Self::parse(path, &text, overrides)
    }

    /// Parses manifest text; `path` is only used in messages.
    pub fn parse(path: &Path, text: &str, overrides: &[String]) -> Result<Self> {
        // Parse the text as written first, so errors carry its line and column.
        let manifest: Manifest = serde_norway::from_str(text).map_err(|e| yaml_err(path, &e))?;
        let manifest = if overrides.is_empty() {
            manifest
        } else {
            let mut value: Value = serde_norway::from_str(text).map_err(|e| yaml_err(path, &e))?;
            for expr in overrides {
                apply_override(&mut value, expr)?;
            }
            serde_norway::from_value(value).map_err(|e| CoreError::ManifestValue {
                path: path.to_path_buf(),
                message: format!("after --set {}: {e}", overrides.join(" --set ")),
            })?
        };
        manifest.validate(path)?;
        Ok(manifest)
    }

    /// Where the ingest stage writes `images.parquet`, and every later stage reads it.
    pub fn images_path(&self) -> PathBuf {
        self.out_dir().join("images.parquet")
    }

    /// The folder the pipeline's outputs go to: the local zone (`storage.local`, or
    /// `out_dir`), by default `runs/<name>`.
    pub fn out_dir(&self) -> PathBuf {
        self.storage
            .local
            .clone()
            .or_else(|| self.out_dir.clone())
            .unwrap_or_else(|| PathBuf::from("runs").join(&self.name))
    }

    /// Where the cloud zone's artifacts go: `storage.cloud`, by default the local folder.
    pub fn cloud_dir(&self) -> PathBuf {
        self.storage.cloud.clone().unwrap_or_else(|| self.out_dir())
    }
}

fn yaml_err(path: &Path, e: &serde_norway::Error) -> CoreError {
    let (line, column) = e
        .location()
        .map(|l| (l.line(), l.column()))
        .unwrap_or((0, 0));
    let message = e.to_string();
    // The YAML error text repeats the position; keep it once, in front.
    let message = match message.find(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message,
    };
    CoreError::Manifest {
        path: path.to_path_buf(),
        line,
        column,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "\
name: t
dataset:
  format: cifar10-binary
  path: data/cifar-10
  splits: {train: 10, attacker: 5, test: 5}
model:
  path: m.onnx
  input_size: 32
sweep:
  cuts: [conv1]
  channels: [8, all]
";

    #[test]
    fn parses_defaults() {
        let m = Manifest::parse(Path::new("t.yaml"), BASE, &[]).unwrap();
        assert_eq!(m.seed, 42);
        assert_eq!(m.sweep.channels[1], ChannelCount::All(AllKeyword::All));
        assert_eq!(m.out_dir(), PathBuf::from("runs/t"));
        // No `val` in the manifest: none is carved (the train stage then refuses to run).
        assert_eq!(m.dataset.splits.val, 0);
        let text = BASE.replace("attacker: 5,", "val: 3, attacker: 5,");
        let m = Manifest::parse(Path::new("t.yaml"), &text, &[]).unwrap();
        assert_eq!(m.dataset.splits.val, 3);
        assert_eq!(m.extract.splits, ["train", "val", "attacker", "test"]);
    }

    #[test]
    fn unknown_key_has_line_and_column() {
        let text = BASE.replace("  input_size: 32", "  input_size: 32\n  inptu: x");
        let e = Manifest::parse(Path::new("t.yaml"), &text, &[])
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("t.yaml:9:3: "), "{e}");
        assert!(e.contains("unknown field `inptu`"), "{e}");
    }

    #[test]
    fn overrides_apply_and_typos_fail() {
        let m = Manifest::parse(
            Path::new("t.yaml"),
            BASE,
            &["extract.batch_size=7".into(), "sweep.channels=[4]".into()],
        )
        .unwrap();
        assert_eq!(m.extract.batch_size, 7);
        assert_eq!(m.sweep.channels, vec![ChannelCount::Count(4)]);
        let e = Manifest::parse(Path::new("t.yaml"), BASE, &["extract.batchsize=7".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("batchsize"), "{e}");
        let e = Manifest::parse(Path::new("t.yaml"), BASE, &["seed".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("KEY=VALUE"), "{e}");
    }

    #[test]
    fn zero_channels_is_refused() {
        let text = BASE.replace("[8, all]", "[0]");
        let e = Manifest::parse(Path::new("t.yaml"), &text, &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("sweep.channels"), "{e}");
    }

    #[test]
    fn optimize_section_parses_and_samples() {
        let text = format!(
            "{BASE}optimize:\n  mode: exhaustive\n  sample: [smallest, 16, largest]\n  limits: {{max_psnr: 15.5, max_macs: 1000000}}\n"
        );
        let m = Manifest::parse(Path::new("t.yaml"), &text, &[]).unwrap();
        assert_eq!(m.optimize.mode, OptimizeMode::Exhaustive);
        assert_eq!(m.optimize.limits.max_psnr, Some(15.5));
        assert_eq!(m.optimize.limits.max_ssim, None);
        let grid = grid_channels(
            &[
                ChannelCount::Count(4),
                ChannelCount::Count(16),
                ChannelCount::All(AllKeyword::All),
            ],
            "conv1",
            64,
        )
        .unwrap();
        assert_eq!(grid, vec![4, 16, 64]);
        assert_eq!(
            sample_channels(&grid, 64, &m.optimize.sample),
            vec![4, 16, 64]
        );
        // The default rule: smallest, middle (lower median) and largest.
        let grid = vec![4, 8, 16, 32, 64, 128];
        assert_eq!(
            sample_channels(&grid, 128, &OptimizeParams::default().sample),
            vec![4, 16, 128]
        );
        // A count off the grid samples nothing; too many channels is an error naming the cut.
        assert_eq!(
            sample_channels(&grid, 128, &[SamplePoint::Count(5)]),
            Vec::<i64>::new()
        );
        let e = grid_channels(&[ChannelCount::Count(128)], "conv1", 64).unwrap_err();
        assert!(
            e.contains("128") && e.contains("conv1") && e.contains("64"),
            "{e}"
        );
        let bad = format!("{BASE}optimize:\n  limits: {{max_psnr: 15, max_flops: 3}}\n");
        let e = Manifest::parse(Path::new("t.yaml"), &bad, &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_flops"), "{e}");
    }

    proptest::proptest! {
        #[test]
        fn any_batch_size_override_roundtrips(n in 1usize..100_000) {
            let m = Manifest::parse(Path::new("t.yaml"), BASE, &[format!("extract.batch_size={n}")]).unwrap();
            proptest::prop_assert_eq!(m.extract.batch_size, n);
        }
    }
}
