//! The optimisation attack on a network it can invert exactly (a 1x1 convolution with an
//! invertible channel mix, then a channel selection of all three): gradient descent recovers
//! the images, the kept image is the lowest feature error over starts and steps (a start that
//! is already exact is kept as it is), and pixels stay in [0, 1].

#[path = "../../privynet-slice/tests/common/mod.rs"]
mod common;

use burn::tensor::{Device, Tensor, TensorData};
use common::*;
use onnx_protobuf::{GraphProto, Message, ModelProto};

use privynet_core::manifest::{OptimizationParams, Preprocess};
use privynet_nn::audit::invert::Inverter;
use privynet_nn::audit::local_net::{LocalNet, Preprocessing};
use privynet_nn::metrics;

/// x[N,3,H,W] -> 1x1 conv mixing the channels -> relu-free features `f`.
fn mixing_model() -> ModelProto {
    let mut g = GraphProto::new();
    g.name = "mix".into();
    g.initializer = vec![tensor(
        "w",
        &[3, 3, 1, 1],
        &[1.0, 0.5, 0.0, -0.25, 1.0, 0.5, 0.0, 0.5, 1.0],
    )];
    g.node = vec![
        node(
            "Conv",
            &["x", "w"],
            "f",
            vec![ints("kernel_shape", &[1, 1])],
        ),
        node("Gather", &["f", "idx"], "features", vec![int("axis", 1)]),
    ];
    g.initializer.push(int_tensor("idx", &[3], &[2, 0, 1]));
    model_of(g, "x", 3, "features", 3)
}

/// Smooth images in [0.1, 0.9], so that a TV prior does not fight the truth much.
fn images(n: usize, size: usize) -> Vec<f32> {
    (0..n * 3 * size * size)
        .map(|k| {
            let (img, c, p) = (
                k / (3 * size * size),
                (k / (size * size)) % 3,
                k % (size * size),
            );
            let (y, x) = ((p / size) as f32, (p % size) as f32);
            0.5 + 0.4 * ((x * 0.3 + y * 0.2 + c as f32 + img as f32).sin())
        })
        .collect()
}

#[test]
fn descent_recovers_images_through_an_invertible_network() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mix.onnx");
    std::fs::write(&path, mixing_model().write_to_bytes().unwrap()).unwrap();
    let device = Device::flex().autodiff();
    let net = LocalNet::load(&path, "features", &device).unwrap();
    let preprocessing = Preprocessing::new(&Preprocess::default());
    let (n, size) = (6, 8);
    let truth = images(n, size);
    let x = Tensor::<4>::from_data(TensorData::new(truth.clone(), [n, 3, size, size]), &device);
    let targets = net
        .forward(preprocessing.apply(x))
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    let params = OptimizationParams {
        iterations: 150,
        lr: 0.05,
        tv_weight: 0.0,
        batch_size: 4,
    };
    let inv_std = [0.01f32; 3];
    let inverter = Inverter {
        net: &net,
        preprocessing: &preprocessing,
        inv_std: &inv_std,
        params: &params,
        device: &device,
        feature_shape: [3, size, size],
        size,
    };
    let grey = vec![0.5f32; truth.len()];
    let start_error = inverter.feature_error(&grey, &targets);
    let mut batches = Vec::new();
    let out = inverter.invert(&targets, &[&grey], |done| batches.push(done));
    assert_eq!(batches, [4, 6], "two batches of at most 4");
    assert!(out.recon.iter().all(|v| (0.0..=1.0).contains(v)));
    let image_len = 3 * size * size;
    for i in 0..n {
        assert!(
            out.feature_error[i] < start_error[i] / 100.0,
            "victim {i}: feature error {} from {}",
            out.feature_error[i],
            start_error[i]
        );
        let psnr = metrics::psnr(
            &truth[i * image_len..(i + 1) * image_len],
            &out.recon[i * image_len..(i + 1) * image_len],
        );
        assert!(psnr > 30.0, "victim {i}: {psnr:.1} dB");
    }

    // With the truth among the starts, the truth (feature error 0) is what is kept.
    let out = inverter.invert(&targets, &[&grey, &truth], |_| {});
    assert!(out.start.iter().all(|&k| k == 1), "{:?}", out.start);
    assert!(out.feature_error.iter().all(|&e| e < 1e-6));
    assert!(
        out.recon
            .iter()
            .zip(&truth)
            .all(|(a, b)| (a - b).abs() < 1e-6)
    );
}
