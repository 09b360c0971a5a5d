//! The cloud network: conv blocks (3x3 conv, batch norm, ReLU), downsampling by strided conv
//! while the maps are larger than 4x4, global average pooling and a linear head. It suits the
//! C x H x W feature maps of any early cut.

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};

/// A 3x3 conv, batch norm and ReLU.
#[derive(Module, Debug)]
pub struct ConvBlock {
    conv: Conv2d,
    norm: BatchNorm,
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
        relu(self.norm.forward(self.conv.forward(x)))
    }
}

/// The cloud network.
#[derive(Module, Debug)]
pub struct CloudNet {
    blocks: Vec<ConvBlock>,
    head: Linear,
}

/// The cloud network's layout for an input shape: (in, out, stride) per block.
pub fn layout(shape: [usize; 3], width: usize, depth: usize) -> Vec<(usize, usize, usize)> {
    let [c, h, w] = shape;
    let mut blocks = Vec::new();
    let mut cin = c;
    let mut cout = width;
    for _ in 0..depth {
        blocks.push((cin, cout, 1));
        cin = cout;
    }
    let (mut h, mut w) = (h, w);
    while h > 4 || w > 4 {
        let next = (cout * 2).min(512);
        blocks.push((cin, next, 2));
        cin = next;
        cout = next;
        for _ in 1..depth {
            blocks.push((cin, cout, 1));
        }
        h = h.div_ceil(2);
        w = w.div_ceil(2);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_downsamples_to_at_most_4x4() {
        let l = layout([64, 15, 15], 64, 1);
        assert_eq!(l, vec![(64, 64, 1), (64, 128, 2), (128, 256, 2)]);
        let l = layout([8, 3, 3], 32, 2);
        assert_eq!(l, vec![(8, 32, 1), (32, 32, 1)]);
    }
}
