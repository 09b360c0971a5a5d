//! The Fisher-information leakage bound of a noisy topology (dFIL; Maeng et al., NeurIPS 2023,
//! "Bounding the invertibility of privacy-preserving instance encoding"): dFIL = Tr(Jᵀ Σ⁻¹ J)/d,
//! J the Jacobian of the burn local network (preprocessing and selection included) with respect
//! to the d input pixels in [0, 1], Σ = diag(σ_c²) the defence's noise per feature value. An
//! unbiased attacker's per-pixel MSE is at least 1/dFIL, so 10·log10(dFIL) dB is the PSNR no
//! unbiased attacker can exceed on average; a biased one (a learned prior, such as the IRN) may.
//! Quantisation is ignored: a deterministic function of the noisy features adds no Fisher
//! information, so the bound holds for noise then quantisation too. The trace is estimated by
//! random projections, E‖Jᵀ Σ^{-1/2} u‖² with u ~ N(0, I), one backward pass each.

use burn::tensor::{Device, Tensor, TensorData};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use privynet_core::defence::Gaussian;

use super::local_net::{LocalNet, Preprocessing};
use crate::NnError;
use crate::metrics::{self, PSNR_CAP};

/// Random projections per image.
pub const PROJECTIONS: usize = 8;
/// Salt of the projections' generator, so that they are not another stage's draws.
const SALT: u64 = 0xdf11_5eed;

/// What the bound differentiates through: the local network on an autodiff device.
#[derive(Debug, Clone, Copy)]
pub struct Probe<'a> {
    pub net: &'a LocalNet,
    pub preprocessing: &'a Preprocessing,
    pub device: &'a Device,
    /// Image side (images are [3, size, size] in [0, 1]).
    pub size: usize,
    /// Images per forward and backward pass.
    pub batch: usize,
}

/// The estimator's settings.
#[derive(Debug, Clone, Copy)]
pub struct BoundSpec<'a> {
    /// The noise std of each feature channel, in the network's output order (the encoding's
    /// `sigma`). A channel without noise (σ = 0) is left out of the bound, and said so.
    pub sigma: &'a [f32],
    pub projections: usize,
    pub seed: u64,
    /// Bootstrap resamples of the 95% intervals.
    pub bootstrap: usize,
}

/// The bound over a set of images: the mean per-image PSNR bound (dB) and the mean dFIL, each
/// with its 95% bootstrap interval over the images (the estimator's own spread included, as
/// each image's estimate carries its projections' noise).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bound {
    pub mean: f64,
    pub lo: f64,
    pub hi: f64,
    pub dfil: f64,
    pub dfil_lo: f64,
    pub dfil_hi: f64,
    pub images: usize,
    pub projections: usize,
}

/// The PSNR bound of `images` ([n, 3, size, size] flat, in [0, 1]): per image 10·log10(dFIL)
/// (each within ±[`PSNR_CAP`] dB), averaged as the measured PSNR is.
pub fn psnr_bound(probe: Probe<'_>, images: &[f32], spec: BoundSpec<'_>) -> Result<Bound, NnError> {
    let per = dfil_per_image(probe, images, spec)?;
    let psnr: Vec<f64> = per
        .iter()
        .map(|f| (10.0 * f.log10()).clamp(-PSNR_CAP, PSNR_CAP))
        .collect();
    let psnr_ci = metrics::bootstrap_mean(&psnr, spec.bootstrap, spec.seed);
    let dfil = metrics::mean(&per);
    let (dfil_lo, dfil_hi) = metrics::percentile_bootstrap(&per, spec.bootstrap, spec.seed);
    Ok(Bound {
        mean: metrics::mean_capped_psnr(&psnr),
        lo: psnr_ci.lo,
        hi: psnr_ci.hi,
        dfil,
        dfil_lo: dfil_lo.min(dfil),
        dfil_hi: dfil_hi.max(dfil),
        images: per.len(),
        projections: spec.projections,
    })
}

/// Each image's dFIL estimate: the mean over `spec.projections` draws of ‖Jᵀ Σ^{-1/2} u‖² / d.
/// Image `i`'s draws come from its own stream of the seeded generator, so the estimate does
/// not depend on the batch size.
pub fn dfil_per_image(
    probe: Probe<'_>,
    images: &[f32],
    spec: BoundSpec<'_>,
) -> Result<Vec<f64>, NnError> {
    let d = 3 * probe.size * probe.size;
    let n = images.len() / d.max(1);
    let k = spec.projections.max(1);
    let precision = inv_sigma(spec.sigma);
    let [c, fh, fw] = feature_shape(probe);
    if c != precision.len() {
        return Err(NnError::Input(format!(
            "the noise has {} channels, the local network gives {c}",
            precision.len()
        )));
    }
    let m = c * fh * fw;
    let batch = probe.batch.max(1);
    let mut out = Vec::with_capacity(n);
    for lo in (0..n).step_by(batch) {
        let hi = (lo + batch).min(n);
        let draws: Vec<Vec<f32>> = (lo..hi)
            .map(|i| projections(spec.seed, i, k * m, &precision, fh * fw))
            .collect();
        let mut sums = vec![0f64; hi - lo];
        for p in 0..k {
            let v: Vec<f32> = draws
                .iter()
                .flat_map(|u| u[p * m..(p + 1) * m].iter().copied())
                .collect();
            let g = vjp(probe, &images[lo * d..hi * d], v, [hi - lo, c, fh, fw]);
            for (sum, gi) in sums.iter_mut().zip(g.chunks_exact(d)) {
                *sum += gi.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>();
            }
        }
        out.extend(sums.iter().map(|sum| sum / (k * d) as f64));
    }
    Ok(out)
}

/// The local network's feature shape [C, h, w] on one image of the probe's size.
fn feature_shape(probe: Probe<'_>) -> [usize; 3] {
    let s = probe.size;
    let zero = Tensor::<4>::zeros([1, 3, s, s], probe.device);
    let [_, c, h, w] = probe.net.forward(probe.preprocessing.apply(zero)).dims();
    [c, h, w]
}

/// Jᵀ v for each image of `x` ([n, 3, size, size] flat), `v` the features' cotangent of
/// shape `dims`: one backward pass through preprocessing and the local network.
fn vjp(probe: Probe<'_>, x: &[f32], v: Vec<f32>, dims: [usize; 4]) -> Vec<f32> {
    let s = probe.size;
    let data = TensorData::new(x.to_vec(), [dims[0], 3, s, s]);
    let xt = Tensor::<4>::from_data(data, probe.device).require_grad();
    let features = probe.net.forward(probe.preprocessing.apply(xt.clone()));
    let v = Tensor::<4>::from_data(TensorData::new(v, dims), probe.device);
    let grads = (features * v).sum().backward();
    xt.grad(&grads)
        .expect("the image requires its gradient")
        .into_data()
        .try_to_vec::<f32>()
        .expect("f32 gradients")
}

/// 1/σ per channel, 0 for a channel without noise (left out of the bound, with a warning).
fn inv_sigma(sigma: &[f32]) -> Vec<f32> {
    let silent = sigma.iter().filter(|&&s| s <= 0.0 || s.is_nan()).count();
    if silent > 0 {
        tracing::warn!(
            channels = silent,
            "channels without noise (constant over the train split) are left out of the Fisher bound"
        );
    }
    sigma
        .iter()
        .map(|&s| if s > 0.0 { 1.0 / s } else { 0.0 })
        .collect()
}

/// Image `image`'s `len` projection values Σ^{-1/2} u (u ~ N(0, I)), `plane` values per channel.
fn projections(seed: u64, image: usize, len: usize, precision: &[f32], plane: usize) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ SALT);
    rng.set_stream(image as u64);
    let mut gauss = Gaussian::default();
    let channels = precision.len().max(1);
    (0..len)
        .map(|j| gauss.sample(&mut rng) * precision[(j / plane.max(1)) % channels])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use onnx_protobuf::tensor_proto::DataType;
    use onnx_protobuf::{AttributeProto, GraphProto, Message, ModelProto, NodeProto, TensorProto};
    use onnx_protobuf::{OperatorSetIdProto, attribute_proto::AttributeType};
    use privynet_core::manifest::Preprocess;
    use privynet_slice::proto::{dim_param, typed_value_info};

    fn float_tensor(name: &str, dims: &[i64], values: &[f32]) -> TensorProto {
        let mut t = TensorProto::new();
        t.name = name.into();
        t.dims = dims.to_vec();
        t.data_type = DataType::FLOAT as i32;
        t.raw_data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        t
    }

    fn node(
        op: &str,
        inputs: &[&str],
        output: &str,
        attr: (&str, AttributeType, &[i64]),
    ) -> NodeProto {
        let mut a = AttributeProto::new();
        a.name = attr.0.into();
        a.type_ = attr.1.into();
        match attr.1 {
            AttributeType::INT => a.i = attr.2[0],
            _ => a.ints = attr.2.to_vec(),
        }
        let mut n = NodeProto::new();
        n.op_type = op.into();
        n.name = output.into();
        n.input = inputs.iter().map(|s| s.to_string()).collect();
        n.output = vec![output.into()];
        n.attribute = vec![a];
        n
    }

    /// x[N,3,H,W] -> 1x1 convolution with weights `w` ([c_out, 3]) and a bias -> the channels
    /// `selection` of it (a Gather, as a slicer's local network ends) named `features`.
    fn linear_model(w: &[f32], selection: &[i64]) -> ModelProto {
        let c_out = (w.len() / 3) as i64;
        let mut g = GraphProto::new();
        g.name = "linear".into();
        let mut idx = float_tensor("idx", &[selection.len() as i64], &[]);
        idx.data_type = DataType::INT64 as i32;
        idx.raw_data = selection.iter().flat_map(|v| v.to_le_bytes()).collect();
        let bias: Vec<f32> = (0..c_out).map(|c| c as f32 * 0.1).collect();
        g.initializer = vec![
            float_tensor("w", &[c_out, 3, 1, 1], w),
            float_tensor("b", &[c_out], &bias),
            idx,
        ];
        g.node = vec![
            node(
                "Conv",
                &["x", "w", "b"],
                "f",
                ("kernel_shape", AttributeType::INTS, &[1, 1]),
            ),
            node(
                "Gather",
                &["f", "idx"],
                "features",
                ("axis", AttributeType::INT, &[1]),
            ),
        ];
        let dims = |c: i64| {
            vec![
                dim_param("N"),
                privynet_slice::proto::dim_value(c),
                dim_param("H"),
                dim_param("W"),
            ]
        };
        g.input = vec![typed_value_info("x", DataType::FLOAT, dims(3))];
        g.output = vec![typed_value_info(
            "features",
            DataType::FLOAT,
            dims(selection.len() as i64),
        )];
        let mut m = ModelProto::new();
        m.ir_version = 8;
        let mut op = OperatorSetIdProto::new();
        op.version = 13;
        m.opset_import = vec![op];
        m.graph = Some(g).into();
        m
    }

    /// The estimated dFIL of a linear network equals the closed form within its interval: with
    /// J the same for every image, Tr(Jᵀ Σ⁻¹ J)/d = Σ_c Σ_j W_cj²/σ_c² · (H·W)/d, which with one
    /// σ is Tr(WᵀW)/(3σ²).
    #[test]
    fn dfil_of_a_linear_network_is_its_closed_form() {
        let w = [
            0.8f32, -0.3, 0.5, 0.2, 1.1, -0.7, -0.4, 0.6, 0.9, 1.3, 0.1, -0.2,
        ];
        let selection = [2i64, 0, 3, 1];
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("linear.onnx");
        std::fs::write(
            &path,
            linear_model(&w, &selection).write_to_bytes().unwrap(),
        )
        .unwrap();
        let device = Device::flex().autodiff();
        let net = LocalNet::load(&path, "features", &device).unwrap();
        // Pixels in [0, 1] are the network's input as they are.
        let identity = Preprocess {
            scale: 1.0 / 255.0,
            ..Preprocess::default()
        };
        let preprocessing = Preprocessing::new(&identity);
        let (n, size) = (64usize, 8usize);
        let images: Vec<f32> = (0..n * 3 * size * size)
            .map(|i| ((i * 7919) % 1000) as f32 / 1000.0)
            .collect();
        let probe = Probe {
            net: &net,
            preprocessing: &preprocessing,
            device: &device,
            size,
            batch: 16,
        };
        for sigma in [[0.5f32; 4], [0.25, 0.5, 1.0, 2.0]] {
            let spec = BoundSpec {
                sigma: &sigma,
                projections: PROJECTIONS,
                seed: 7,
                bootstrap: 2000,
            };
            let b = psnr_bound(probe, &images, spec).unwrap();
            // Output position k holds conv channel selection[k], with noise sigma[k].
            let trace: f64 = selection
                .iter()
                .zip(&sigma)
                .map(|(&c, &s)| {
                    let row = &w[c as usize * 3..c as usize * 3 + 3];
                    row.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / f64::from(s).powi(2)
                })
                .sum();
            let closed = trace / 3.0;
            eprintln!(
                "sigma {sigma:?}: dFIL {:.4} [{:.4}, {:.4}], closed form {closed:.4}; PSNR bound {:.3} dB [{:.3}, {:.3}], closed form {:.3} dB",
                b.dfil,
                b.dfil_lo,
                b.dfil_hi,
                b.mean,
                b.lo,
                b.hi,
                10.0 * closed.log10()
            );
            assert_eq!(b.images, n);
            assert!(
                b.dfil_lo <= closed && closed <= b.dfil_hi,
                "{closed} outside [{}, {}]",
                b.dfil_lo,
                b.dfil_hi
            );
            // Tight: the interval is within 5% of the closed form.
            assert!(b.dfil_hi - b.dfil_lo < 0.05 * closed, "{b:?}");
            // Deterministic in the seed, whatever the batch.
            let again = psnr_bound(Probe { batch: 5, ..probe }, &images, spec).unwrap();
            assert!(
                (again.dfil - b.dfil).abs() < 1e-4 * b.dfil,
                "{again:?} vs {b:?}"
            );
        }
    }
}
