//! The attacker's image reconstruction network (IRN), in the spirit of He et al. 2019's
//! black-box inverse network: features are brought to a power-of-two fraction of the image
//! size (bilinear), then convolutions and learned 2x upsamplings (transposed convolutions)
//! rebuild the image, with a sigmoid output in [0, 1].

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig, ConvTranspose2d, ConvTranspose2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, PaddingConfig2d};
use burn::tensor::activation::{relu, sigmoid};
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
use burn::tensor::{Device, Tensor};

/// The IRN's shape: the size features are resized to, and the number of 2x upsamplings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct IrnSpec {
    pub pre: usize,
    pub ups: usize,
    pub width: usize,
}

/// The IRN layout for features of `[d, h, w]` and images of `size x size`.
pub fn spec(features: [usize; 3], size: usize, width: Option<usize>) -> IrnSpec {
    let h = features[1].max(1);
    let mut ups = 0;
    while h * (1 << (ups + 1)) <= size {
        ups += 1;
    }
    let width = width.unwrap_or_else(|| features[0].next_power_of_two().clamp(64, 256));
    IrnSpec {
        pre: size >> ups,
        ups,
        width,
    }
}

#[derive(Module, Debug)]
struct Up {
    up: ConvTranspose2d,
    norm: BatchNorm,
    conv: Conv2d,
}

/// The network.
#[derive(Module, Debug)]
pub struct Irn {
    stem: Conv2d,
    stem2: Conv2d,
    ups: Vec<Up>,
    out: Conv2d,
}

fn conv3(cin: usize, cout: usize, device: &Device) -> Conv2d {
    Conv2dConfig::new([cin, cout], [3, 3])
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .init(device)
}

impl Irn {
    pub fn new(d: usize, s: IrnSpec, device: &Device) -> Self {
        let mut ups = Vec::new();
        let mut c = s.width;
        for _ in 0..s.ups {
            let next = (c / 2).max(32);
            ups.push(Up {
                up: ConvTranspose2dConfig::new([c, next], [4, 4])
                    .with_stride([2, 2])
                    .with_padding([1, 1])
                    .init(device),
                norm: BatchNormConfig::new(next).init(device),
                conv: conv3(next, next, device),
            });
            c = next;
        }
        Self {
            stem: conv3(d, s.width, device),
            stem2: conv3(s.width, s.width, device),
            ups,
            out: conv3(c, 3, device),
        }
    }

    /// Images [N, 3, size, size] in [0, 1] from features [N, D, h, w].
    pub fn forward(&self, x: Tensor<4>, s: IrnSpec) -> Tensor<4> {
        let [_, _, h, w] = x.dims();
        let x = if h == s.pre && w == s.pre {
            x
        } else {
            interpolate(
                x,
                InterpolateOptions::new(InterpolateMode::Bilinear).with_output_size([s.pre, s.pre]),
            )
        };
        let mut x = relu(self.stem2.forward(relu(self.stem.forward(x))));
        for u in &self.ups {
            x = relu(u.norm.forward(u.up.forward(x)));
            x = relu(u.conv.forward(x));
        }
        sigmoid(self.out.forward(x))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_reaches_the_image_size() {
        assert_eq!(
            spec([64, 15, 15], 32, None),
            IrnSpec {
                pre: 16,
                ups: 1,
                width: 64
            }
        );
        assert_eq!(
            spec([8, 7, 7], 32, None),
            IrnSpec {
                pre: 8,
                ups: 2,
                width: 64
            }
        );
        assert_eq!(
            spec([256, 3, 3], 32, None),
            IrnSpec {
                pre: 4,
                ups: 3,
                width: 256
            }
        );
        assert_eq!(
            spec([512, 1, 1], 32, Some(128)),
            IrnSpec {
                pre: 1,
                ups: 5,
                width: 128
            }
        );
    }
}
