//! Exact preprocessing of HWC RGB u8 images into the model's NCHW float input:
//! resize (bilinear, only when the manifest allows it), channel order, then
//! `(pixel * scale - mean[c]) / std[c]`.

use image::imageops::FilterType;
use privynet_core::manifest::{ChannelOrder, Preprocess, ResizeMode};

/// Why an image could not be preprocessed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SizeMismatch {
    pub height: u32,
    pub width: u32,
    pub input_size: u32,
}

impl std::fmt::Display for SizeMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "image is {}x{} but the model's input_size is {}, and the manifest does not say how to resize (set `model.preprocess.resize: bilinear`)",
            self.height, self.width, self.input_size
        )
    }
}

/// Writes one image into `out` (3 * size * size floats, CHW).
pub fn preprocess_into(
    pixels: &[u8],
    height: u32,
    width: u32,
    spec: &Preprocess,
    size: u32,
    out: &mut [f32],
) -> Result<(), SizeMismatch> {
    let resized;
    let px: &[u8] = if height == size && width == size {
        pixels
    } else {
        match spec.resize {
            ResizeMode::None => {
                return Err(SizeMismatch {
                    height,
                    width,
                    input_size: size,
                });
            }
            ResizeMode::Bilinear => {
                let img = image::RgbImage::from_raw(width, height, pixels.to_vec())
                    .expect("pixels should hold height*width*3 bytes");
                resized =
                    image::imageops::resize(&img, size, size, FilterType::Triangle).into_raw();
                &resized
            }
        }
    };
    let plane = (size * size) as usize;
    for c in 0..3 {
        // Output channel c takes RGB channel c, or the reverse for BGR models.
        let src = match spec.channel_order {
            ChannelOrder::Rgb => c,
            ChannelOrder::Bgr => 2 - c,
        };
        let (m, s) = (spec.mean[c], spec.std[c]);
        let dst = &mut out[c * plane..(c + 1) * plane];
        for (p, d) in dst.iter_mut().enumerate() {
            *d = (f32::from(px[p * 3 + src]) * spec.scale - m) / s;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bgr_scale_mean_std() {
        let spec = Preprocess {
            resize: ResizeMode::None,
            channel_order: ChannelOrder::Bgr,
            scale: 2.0,
            mean: [1.0, 2.0, 3.0],
            std: [1.0, 2.0, 4.0],
        };
        let mut out = vec![0.0; 3];
        preprocess_into(&[10, 20, 30], 1, 1, &spec, 1, &mut out).unwrap();
        // B first: (30*2-1)/1, then G: (20*2-2)/2, then R: (10*2-3)/4.
        assert_eq!(out, vec![59.0, 19.0, 4.25]);
    }

    #[test]
    fn size_mismatch_without_resize_is_an_error() {
        let spec = Preprocess::default();
        let mut out = vec![0.0; 3 * 4];
        let e = preprocess_into(&[0; 3], 1, 1, &spec, 2, &mut out).unwrap_err();
        assert!(e.to_string().contains("resize"));
    }
}
