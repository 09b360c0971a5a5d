//! The cloud network: three stages of `depth` conv blocks each (3x3 conv, batch norm, ReLU)
//! with `width`, `2 x width` and `4 x width` channels (at most 512), global average pooling and
//! a linear head. The first block of the second and third stages downsamples (stride 2) while
//! the maps are larger than 4x4, and keeps stride 1 once they are not, so every cut gets the
//! same blocks and channels: a deep cut with small maps (fire5's 3x3) is not handed a smaller
//! network than a shallow one (conv1's 15x15), and cuts compare on accuracy fairly.

use std::path::{Path, PathBuf};

use burn::module::{Module, ModuleMapper, Param, ParamId, RunningState};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::{Device, Tensor};

use crate::NnError;

/// A 3x3 conv, batch norm and ReLU.
#[derive(Module, Debug)]
pub struct ConvBlock {
    pub(crate) conv: Conv2d,
    pub(crate) norm: BatchNorm,
}

impl ConvBlock {
    fn new(cin: usize, cout: usize, stride: usize, device: &Device) -> Self {
        Self {
            conv: Conv2dConfig::new([cin, cout], [3, 3])
                .with_stride([stride, stride])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .with_bias(false)
                .init(device),
            norm: BatchNormConfig::new(cout).init(device),
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        crate::kernels::batch_norm_relu(&self.norm, crate::kernels::conv2d_module(&self.conv, x))
    }
}

/// The cloud network.
#[derive(Module, Debug)]
pub struct CloudNet {
    pub(crate) blocks: Vec<ConvBlock>,
    pub(crate) head: Linear,
}

/// Stages of the cloud network; stage `k` (0-based) has `width << k` channels.
pub const STAGES: usize = 3;

/// The cloud network's layout for an input shape: (in, out, stride) per block. It has
/// `STAGES x depth` blocks whatever the shape; only the strides depend on the map size.
pub fn layout(shape: [usize; 3], width: usize, depth: usize) -> Vec<(usize, usize, usize)> {
    let [c, mut h, mut w] = shape;
    let mut blocks = Vec::with_capacity(STAGES * depth);
    let mut cin = c;
    for stage in 0..STAGES {
        // Doubling stops at 512 (or at `width`, if a manifest asks for more than that).
        let cout = (width << stage).min(width.max(512));
        for block in 0..depth {
            // Only a later stage's first block may downsample, and only maps still above 4x4.
            let stride = if stage > 0 && block == 0 && (h > 4 || w > 4) {
                h = h.div_ceil(2);
                w = w.div_ceil(2);
                2
            } else {
                1
            };
            blocks.push((cin, cout, stride));
            cin = cout;
        }
    }
    blocks
}

impl CloudNet {
    /// A freshly initialised network for inputs of `shape` (C, H, W).
    pub fn new(
        shape: [usize; 3],
        width: usize,
        depth: usize,
        classes: usize,
        device: &Device,
    ) -> Self {
        let spec = layout(shape, width, depth);
        let last = spec.last().map_or(shape[0], |b| b.1);
        Self {
            blocks: spec
                .iter()
                .map(|&(i, o, s)| ConvBlock::new(i, o, s, device))
                .collect(),
            head: LinearConfig::new(last, classes).init(device),
        }
    }

    /// The number of classes it scores.
    pub fn classes(&self) -> usize {
        self.head.weight.dims()[1]
    }

    /// Logits [N, classes] for inputs [N, C, H, W].
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let mut x = x;
        for b in &self.blocks {
            x = b.forward(x);
        }
        let [n, c, _, _] = x.dims();
        let pooled = x.mean_dim(2).mean_dim(3).reshape([n, c]);
        self.head.forward(pooled)
    }
}

/// Numbers parameters in module order. burn gives every parameter and running statistic a
/// random id and stores it in the model file, so two identical trainings would write different
/// bytes; the ids carry no meaning once training is over. The cloud network holds float
/// parameters and BatchNorm's training flag only (the determinism test would catch another).
struct StableIds(u64);

impl StableIds {
    fn next(&mut self) -> ParamId {
        self.0 += 1;
        ParamId::from(self.0)
    }

    fn renumber<T: burn::module::ParameterValue>(&mut self, p: Param<T>) -> Param<T> {
        let (_, value, mapper) = p.consume();
        Param::from_mapped_value(self.next(), value, mapper)
    }
}

impl ModuleMapper for StableIds {
    fn map_float<const D: usize>(&mut self, p: Param<Tensor<D>>) -> Param<Tensor<D>> {
        self.renumber(p)
    }

    fn map_flag(&mut self, p: Param<burn::module::Flag>) -> Param<burn::module::Flag> {
        self.renumber(p)
    }
}

impl CloudNet {
    /// The same network with ids numbered in module order instead of burn's random ones, for
    /// the final model file (same training, same bytes). Not for a training state that goes
    /// on: the optimizer's moments are keyed by the ids the training ran with.
    pub fn with_stable_ids(self) -> Self {
        let mut ids = StableIds(0);
        let mut net = self.map(&mut ids);
        // A running statistic keeps its own id through `map`: give it one explicitly.
        for b in &mut net.blocks {
            let n = &mut b.norm;
            n.running_mean = RunningState::with_id(ids.next(), n.running_mean.value());
            n.running_var = RunningState::with_id(ids.next(), n.running_var.value());
        }
        net
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_cut_gets_the_same_blocks_and_only_the_strides_differ() {
        // conv1 at input 32 (15x15): two downsamplings, 15 -> 8 -> 4.
        let l = layout([64, 15, 15], 64, 1);
        assert_eq!(l, vec![(64, 64, 1), (64, 128, 2), (128, 256, 2)]);
        // fire3 (7x7): one downsampling to 4x4, then stride 1.
        let l = layout([128, 7, 7], 64, 1);
        assert_eq!(l, vec![(128, 64, 1), (64, 128, 2), (128, 256, 1)]);
        // fire5 (3x3): already small, so stride 1 throughout, but the same three stages
        // (it used to get a single block).
        let l = layout([8, 3, 3], 32, 2);
        assert_eq!(
            l,
            vec![
                (8, 32, 1),
                (32, 32, 1),
                (32, 64, 1),
                (64, 64, 1),
                (64, 128, 1),
                (128, 128, 1)
            ]
        );
        // Raw 32x32 images (the baseline): 32 -> 16 -> 8, still three stages.
        let l = layout([3, 32, 32], 64, 1);
        assert_eq!(l, vec![(3, 64, 1), (64, 128, 2), (128, 256, 2)]);
        // The width doubles per stage up to 512.
        let l = layout([8, 3, 3], 256, 1);
        assert_eq!(l, vec![(8, 256, 1), (256, 512, 1), (512, 512, 1)]);
        // Every shape: the same number of blocks and the same output channels per block.
        let outs = |s| layout(s, 64, 2).iter().map(|b| b.1).collect::<Vec<_>>();
        for s in [
            [64, 15, 15],
            [128, 7, 7],
            [256, 3, 3],
            [3, 32, 32],
            [4, 1, 1],
        ] {
            assert_eq!(outs(s), [64, 64, 128, 128, 256, 256], "{s:?}");
        }
    }
}
