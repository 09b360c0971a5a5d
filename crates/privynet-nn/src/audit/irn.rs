//! The attacker's image reconstruction network (IRN), in the spirit of He et al. 2019's
//! black-box inverse network: features are brought to a power-of-two fraction of the image
//! size (bilinear), then 3x3 convolution blocks and 2x upsamplings rebuild the image, with a
//! sigmoid output in [0, 1].
//!
//! Two choices make the privacy number trustworthy rather than cheap:
//! - the network's width comes from the cut (its full channel count C, or the manifest's
//!   `attack.width`), never from how many channels D the user kept, so "fewer channels leak
//!   less" is not "a smaller attacker was used"; no layer is narrower than `attack.min_width`;
//! - upsampling is nearest-neighbour resize followed by a 3x3 convolution, not a transposed
//!   convolution: it takes the fast convolution path and leaves no checkerboard artefacts.

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, PaddingConfig2d};
use burn::tensor::activation::sigmoid;
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
use burn::tensor::{Device, Tensor};

/// The IRN's shape for one cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct IrnSpec {
    /// The side features are resized to before the first block (the image size over
    /// `2^upsamplings`).
    pub resize_to: usize,
    /// How many 2x upsampling blocks follow the stem.
    pub upsamplings: usize,
    /// Channels of the stem; halved at each upsampling, down to `min_width`.
    pub width: usize,
    /// The narrowest any hidden layer gets.
    pub min_width: usize,
}

impl IrnSpec {
    /// Channels of the blocks at resolution level `level` (0 is the stem).
    pub fn channels_at(&self, level: usize) -> usize {
        (self.width >> level.min(31)).max(self.min_width)
    }
}

/// The IRN layout for features of `[d, h, w]` cut from a layer of `cut_channels` channels,
/// rebuilding images of `size x size`. `width` overrides the stem's width, which otherwise
/// follows the cut's channel count (at least 64, at most 256); D never enters.
pub fn spec(
    features: [usize; 3],
    cut_channels: usize,
    size: usize,
    width: Option<usize>,
    min_width: usize,
) -> IrnSpec {
    let h = features[1].max(1);
    let mut upsamplings = 0;
    while h * (1 << (upsamplings + 1)) <= size {
        upsamplings += 1;
    }
    let width = width.unwrap_or_else(|| cut_channels.next_power_of_two().clamp(64, 256));
    IrnSpec {
        resize_to: size >> upsamplings,
        upsamplings,
        width: width.max(min_width),
        min_width,
    }
}

/// A 3x3 convolution, batch norm and ReLU.
#[derive(Module, Debug)]
struct ConvBnRelu {
    conv: Conv2d,
    norm: BatchNorm,
}

impl ConvBnRelu {
    fn new(cin: usize, cout: usize, device: &Device) -> Self {
        Self {
            conv: conv3(cin, cout).with_bias(false).init(device),
            norm: BatchNormConfig::new(cout).init(device),
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        crate::kernels::batch_norm_relu(&self.norm, crate::kernels::conv2d_module(&self.conv, x))
    }
}

/// One resolution level: two conv blocks, the first of which changes the width.
#[derive(Module, Debug)]
struct Level {
    first: ConvBnRelu,
    second: ConvBnRelu,
}

impl Level {
    fn new(cin: usize, cout: usize, device: &Device) -> Self {
        Self {
            first: ConvBnRelu::new(cin, cout, device),
            second: ConvBnRelu::new(cout, cout, device),
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.second.forward(self.first.forward(x))
    }
}

/// The network: a stem level at `resize_to`, one level after each 2x upsampling, and a 3x3
/// convolution to RGB.
#[derive(Module, Debug)]
pub struct Irn {
    stem: Level,
    upsampled: Vec<Level>,
    out: Conv2d,
}

/// A 3x3 convolution that keeps the map's size.
fn conv3(cin: usize, cout: usize) -> Conv2dConfig {
    Conv2dConfig::new([cin, cout], [3, 3]).with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
}

impl Irn {
    /// A freshly initialised IRN for `d` input channels.
    pub fn new(d: usize, s: IrnSpec, device: &Device) -> Self {
        let mut upsampled = Vec::new();
        let mut c = s.channels_at(0);
        for level in 1..=s.upsamplings {
            let next = s.channels_at(level);
            upsampled.push(Level::new(c, next, device));
            c = next;
        }
        Self {
            stem: Level::new(d, s.channels_at(0), device),
            upsampled,
            out: conv3(c, 3).init(device),
        }
    }

    /// Images [N, 3, size, size] in [0, 1] from (standardised) features [N, D, h, w].
    pub fn forward(&self, x: Tensor<4>, s: IrnSpec) -> Tensor<4> {
        let [_, _, h, w] = x.dims();
        let x = if h == s.resize_to && w == s.resize_to {
            x
        } else {
            resize(x, s.resize_to, InterpolateMode::Bilinear)
        };
        let mut x = self.stem.forward(x);
        for level in &self.upsampled {
            let [_, _, h, _] = x.dims();
            x = level.forward(resize(x, 2 * h, InterpolateMode::Nearest));
        }
        sigmoid(crate::kernels::conv2d_module(&self.out, x))
    }
}

fn resize(x: Tensor<4>, side: usize, mode: InterpolateMode) -> Tensor<4> {
    interpolate(
        x,
        InterpolateOptions::new(mode).with_output_size([side, side]),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_reaches_the_image_size() {
        let s = spec([64, 15, 15], 64, 32, None, 32);
        assert_eq!((s.resize_to, s.upsamplings, s.width), (16, 1, 64));
        let s = spec([8, 7, 7], 128, 32, None, 32);
        assert_eq!((s.resize_to, s.upsamplings, s.width), (8, 2, 128));
        let s = spec([256, 3, 3], 256, 32, None, 32);
        assert_eq!((s.resize_to, s.upsamplings, s.width), (4, 3, 256));
        let s = spec([512, 1, 1], 512, 32, Some(128), 32);
        assert_eq!((s.resize_to, s.upsamplings, s.width), (1, 5, 128));
    }

    #[test]
    fn width_follows_the_cut_not_the_kept_channels() {
        // fire5: 256 channels at 3x3. Keeping 8 or all 256 must give the same attacker.
        let few = spec([8, 3, 3], 256, 32, None, 64);
        let all = spec([256, 3, 3], 256, 32, None, 64);
        assert_eq!(few, all);
        let device = Device::flex();
        let params = |d| Irn::new(d, few, &device).num_params();
        // Only the first convolution's input channels differ: (256 - 8) * 256 * 9 weights.
        assert_eq!(params(256) - params(8), (256 - 8) * 256 * 9);
        // No hidden layer narrower than the floor.
        assert!((0..=few.upsamplings).all(|l| few.channels_at(l) >= 64));
    }

    #[test]
    fn forward_gives_images_in_the_unit_range() {
        let device = Device::flex();
        let s = spec([4, 7, 7], 16, 32, None, 16);
        let net = Irn::new(4, s, &device);
        let x = Tensor::<4>::random(
            [2, 4, 7, 7],
            burn::tensor::Distribution::Normal(0.0, 1.0),
            &device,
        );
        let y = net.forward(x, s);
        assert_eq!(y.dims(), [2, 3, 32, 32]);
        let v = y.into_data().try_to_vec::<f32>().expect("f32");
        assert!(v.iter().all(|p| (0.0..=1.0).contains(p)));
    }
}
