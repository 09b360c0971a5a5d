//! The burn local network (what the optimisation attacker differentiates through) against ONNX
//! Runtime on the same `local.onnx`: at every cut point of graphs the test builds (a tiny CNN,
//! a PyTorch-style EfficientNet block, one with batch norm, average pooling with padding,
//! ceil-mode max pooling, LeakyRelu and arithmetic with constants, and a ShuffleNetV2-style
//! network in both PyTorch exporters' forms), at every cut point of the real SqueezeNet 1.1
//! and, when the mirror has it, EfficientNet-Lite0, and at every named cut of the models that
//! `scripts/model-zoo.py` exports (with `PRIVYNET_ZOO_DIR`). Also: the channel selection can be
//! swapped, an operator it does not build is named, a channel shuffle's 5-D tensor read by
//! another op is refused, and the preprocessing equals the extract stage's.

#[path = "../../privynet-slice/tests/common/mod.rs"]
mod common;

use std::path::Path;

use burn::tensor::{Device, Tensor, TensorData};
use common::*;
use ndarray::Array4;
use onnx_protobuf::{GraphProto, Message, ModelProto};

use privynet_core::manifest::{ChannelOrder, Preprocess, ResizeMode};
use privynet_extract::runtime::Runner;
use privynet_nn::audit::local_net::{LocalNet, Preprocessing};
use privynet_slice::{analyze, model, surgery};

/// Pseudo-random inputs in [lo, hi).
fn inputs(seed: u64, shape: (usize, usize, usize, usize), lo: f32, hi: f32) -> Array4<f32> {
    let mut s = seed;
    Array4::from_shape_fn(shape, |_| {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        lo + ((s >> 40) as f32 / (1u64 << 24) as f32) * (hi - lo)
    })
}

fn burn_forward(net: &LocalNet, x: &Array4<f32>) -> (Vec<usize>, Vec<f32>) {
    let device = Device::flex();
    let dims: [usize; 4] = x.shape().try_into().unwrap();
    let t = Tensor::<4>::from_data(TensorData::new(x.iter().copied().collect(), dims), &device);
    let y = net.forward(t);
    (
        y.dims().to_vec(),
        y.into_data().try_to_vec::<f32>().expect("f32 features"),
    )
}

/// Slices `m` at every cut point before its classifier head with every channel in reverse order
/// (so the selection is not the identity), and compares burn with ONNX Runtime on each local
/// network. Returns the worst absolute difference relative to the largest feature (at least 1).
fn check_every_cut(dir: &Path, m: &model::Model, size: i64, x: &Array4<f32>) -> f32 {
    check_cuts(dir, m, size, x, |_| true)
}

/// [`check_every_cut`] over the cut points `keep` selects.
fn check_cuts(
    dir: &Path,
    m: &model::Model,
    size: i64,
    x: &Array4<f32>,
    keep: impl Fn(&analyze::CutPoint) -> bool,
) -> f32 {
    let a = analyze::analyze(m, size).expect("analysed");
    let mut worst = 0.0f32;
    let (mut cuts, mut head) = (0, 0);
    for p in a
        .points
        .iter()
        .filter(|p| p.height > 0 && p.channels > 0 && keep(p))
    {
        let selection: Vec<i64> = (0..p.channels).rev().collect();
        let mut local = surgery::local_network(m, &p.name, &selection).expect("sliced");
        surgery::freeze_shapes(&mut local, &a.shape_values);
        // A classifier head's cut points (after a flatten) are not a local network anyone
        // splits at, and the burn network does not build them.
        if is_head(local.graph.as_ref().unwrap()) {
            head += 1;
            continue;
        }
        assert_eq!(head, 0, "cut {} follows a head cut point", p.name);
        let path = dir.join("local.onnx");
        std::fs::write(&path, surgery::to_bytes(&local).unwrap()).unwrap();
        let want = Runner::open(&path, surgery::OUTPUT, Some(1))
            .unwrap()
            .run(x.view())
            .unwrap();
        let net = LocalNet::load(&path, surgery::OUTPUT, &Device::flex())
            .unwrap_or_else(|e| panic!("cut {}: {e}", p.name));
        let (dims, got) = burn_forward(&net, x);
        assert_eq!(dims, want.shape(), "cut {}: shape", p.name);
        let scale = want.iter().fold(1.0f32, |m, v| m.max(v.abs()));
        let diff = max_abs_diff(want.iter(), got.iter());
        assert!(
            diff <= 1e-5 * scale,
            "cut {} ({}): burn differs from ONNX Runtime by {diff} (largest feature {scale})",
            p.name,
            p.op
        );
        worst = worst.max(diff / scale);
        cuts += 1;
    }
    assert!(cuts > 0, "no cut point checked");
    eprintln!("  {cuts} cut points checked, {head} of the classifier head skipped");
    worst
}

/// Whether a local network holds a classifier head: a flatten (`Flatten`, or a `Reshape` to
/// fewer than four dims, or one whose target is still computed by `Shape`) or a dense layer.
fn is_head(g: &GraphProto) -> bool {
    let short_target = |t: &str| {
        g.initializer
            .iter()
            .find(|i| i.name == t)
            .is_none_or(|i| i.dims.iter().product::<i64>() < 4)
    };
    g.node.iter().any(|n| match n.op_type.as_str() {
        "Flatten" | "Gemm" | "MatMul" | "Shape" => true,
        "Reshape" => short_target(&n.input[1]),
        _ => false,
    })
}

fn save(path: &Path, m: &ModelProto) {
    std::fs::write(path, m.write_to_bytes().unwrap()).unwrap();
}

fn loaded(dir: &Path, name: &str, m: &ModelProto) -> model::Model {
    let path = dir.join(name);
    save(&path, m);
    model::load(&path, None).expect("loads")
}

#[test]
fn burn_equals_onnx_runtime_on_built_graphs() {
    let dir = tempfile::tempdir().unwrap();
    for (name, original, c, size) in [
        ("tiny.onnx", tiny_model(), 2, 9),
        ("pytorch.onnx", pytorch_model(), 2, 16),
        ("mixed.onnx", mixed_model(), 3, 11),
        (
            "dynamo.onnx",
            shuffle_model(Exporter::Dynamo),
            3,
            SHUFFLE_SIZE as usize,
        ),
        (
            "torchscript.onnx",
            shuffle_model(Exporter::TorchScript),
            3,
            SHUFFLE_SIZE as usize,
        ),
    ] {
        let m = loaded(dir.path(), name, &original);
        let x = inputs(size as u64, (2, c, size, size), -2.0, 2.0);
        let worst = check_every_cut(dir.path(), &m, size as i64, &x);
        eprintln!("{name}: worst relative difference {worst:e}");
    }
}

#[test]
fn burn_equals_onnx_runtime_at_every_squeezenet_cut() {
    // The model zoo's fp16 opset-7 file (the default pipeline's) and its fp32 opset-17 export.
    for name in [
        "squeezenet1.1_fp16_opset7.onnx",
        "squeezenet1.1_fp32_opset17.onnx",
    ] {
        let Some(path) = model_file(name) else {
            continue;
        };
        let m = model::load(&path, None).unwrap();
        let dir = tempfile::tempdir().unwrap();
        // Raw 0-255 pixels, as SqueezeNet's preprocessing feeds it.
        let x = inputs(7, (2, 3, 32, 32), 0.0, 255.0);
        let worst = check_every_cut(dir.path(), &m, 32, &x);
        eprintln!("{name} at 32x32: worst difference {worst:e} of the largest feature");
    }
}

#[test]
fn burn_equals_onnx_runtime_at_every_lite0_cut() {
    let Some(path) = model_file("efficientnet-lite0_fp32_opset17.onnx") else {
        return;
    };
    let m = model::load(&path, None).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let x = inputs(11, (2, 3, 32, 32), -1.0, 1.0);
    let worst = check_every_cut(dir.path(), &m, 32, &x);
    eprintln!("EfficientNet-Lite0 at 32x32: worst difference {worst:e} of the largest feature");
}

/// A graph with what the other two lack: batch normalisation, average pooling with padding
/// (count_include_pad 0), ceil-mode max pooling with pads, LeakyRelu, Sub and Div by
/// constants, Tanh and a global max pool's broadcast product.
fn mixed_model() -> ModelProto {
    let mut g = GraphProto::new();
    g.name = "mixed".into();
    g.initializer = vec![
        weights("w1", &[4, 3, 3, 3], 1),
        weights("b1", &[4], 2),
        tensor("gamma", &[4], &[1.0, 0.5, 2.0, -1.0]),
        tensor("beta", &[4], &[0.1, 0.0, -0.2, 0.3]),
        tensor("mean", &[4], &[0.05, -0.1, 0.2, 0.0]),
        tensor("var", &[4], &[1.0, 0.25, 2.0, 0.5]),
        tensor("shift", &[4, 1, 1], &[0.1, -0.1, 0.2, 0.0]),
        tensor("two", &[], &[2.0]),
    ];
    g.node = vec![
        node(
            "Conv",
            &["x", "w1", "b1"],
            "c1",
            vec![ints("kernel_shape", &[3, 3]), ints("pads", &[1, 0, 1, 2])],
        ),
        node(
            "BatchNormalization",
            &["c1", "gamma", "beta", "mean", "var"],
            "bn",
            vec![],
        ),
        node("LeakyRelu", &["bn"], "lr", vec![]),
        node(
            "MaxPool",
            &["lr"],
            "mp",
            vec![
                ints("kernel_shape", &[3, 3]),
                ints("strides", &[2, 2]),
                ints("pads", &[1, 1, 1, 1]),
                int("ceil_mode", 1),
            ],
        ),
        node(
            "AveragePool",
            &["mp"],
            "ap",
            vec![ints("kernel_shape", &[3, 3]), ints("pads", &[1, 1, 1, 1])],
        ),
        node("Sub", &["ap", "shift"], "sub", vec![]),
        node("Div", &["sub", "two"], "div", vec![]),
        node("Tanh", &["div"], "th", vec![]),
        node("GlobalMaxPool", &["th"], "gmp", vec![]),
        node("Mul", &["th", "gmp"], "out", vec![]),
    ];
    model_of(g, "x", 3, "out", 4)
}

/// With `PRIVYNET_ZOO_DIR` set (by `scripts/model-zoo.py --burn`): every named cut point of each
/// `<model>-<exporter>.onnx` there, at `PRIVYNET_ZOO_SIZE` (default 224), burn against ONNX
/// Runtime, with one `zoo:` line per model. Without it the test has nothing to check.
#[test]
fn burn_equals_onnx_runtime_on_the_model_zoo() {
    let Some(zoo) = std::env::var_os("PRIVYNET_ZOO_DIR") else {
        eprintln!("PRIVYNET_ZOO_DIR is not set: no exported models to check");
        return;
    };
    let size: usize = std::env::var("PRIVYNET_ZOO_SIZE").map_or(224, |s| s.parse().unwrap());
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(&zoo)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.ends_with("-dynamo.onnx") || name.ends_with("-torchscript.onnx")
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no <model>-<exporter>.onnx in {zoo:?}");
    for path in files {
        let m = model::load(&path, None).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let x = inputs(5, (1, 3, size, size), -2.0, 2.0);
        let worst = check_cuts(dir.path(), &m, size as i64, &x, |p| p.layer.is_some());
        let name = path.file_name().unwrap().to_string_lossy();
        eprintln!(
            "zoo: {name} burn = ONNX Runtime at every named cut (worst {worst:.1e} of the largest feature)"
        );
    }
}

#[test]
fn a_channel_shuffles_5d_tensor_read_by_another_op_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = shuffle_model(Exporter::Dynamo);
    let g = m.graph.as_mut().unwrap();
    let at = g
        .node
        .iter()
        .position(|n| n.output[0] == "transpose")
        .unwrap();
    g.node.insert(at, node("Relu", &["view"], "odd", vec![]));
    g.node[at + 1].input[0] = "odd".into();
    let m = loaded(dir.path(), "odd.onnx", &m);
    let local = surgery::local_network(&m, "view_1", &[0, 1]).unwrap();
    let path = dir.path().join("local.onnx");
    save(&path, &local);
    let err = LocalNet::load(&path, surgery::OUTPUT, &Device::flex())
        .expect_err("a 5-D tensor is not built")
        .to_string();
    assert!(err.contains("`odd`") && err.contains("5-D"), "{err}");
}

#[test]
fn the_selection_can_be_swapped_for_the_attackers_own() {
    let dir = tempfile::tempdir().unwrap();
    let m = loaded(dir.path(), "tiny.onnx", &tiny_model());
    let path = dir.path().join("local.onnx");
    let all = surgery::local_network(&m, "cat", &[0, 1, 2, 3, 4, 5]).unwrap();
    save(&path, &all);
    let net = LocalNet::load(&path, surgery::OUTPUT, &Device::flex()).unwrap();
    let x = inputs(3, (1, 2, 8, 8), -1.0, 1.0);
    let (_, full) = burn_forward(&net, &x);
    let (dims, picked) = burn_forward(&net.with_output_channels(&[4, 1]).unwrap(), &x);
    assert_eq!(dims, [1, 2, 4, 4]);
    let plane = 16;
    assert_eq!(picked[..plane], full[4 * plane..5 * plane]);
    assert_eq!(picked[plane..], full[plane..2 * plane]);
}

#[test]
fn an_operator_it_does_not_build_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let mut bad = tiny_model();
    let g = bad.graph.as_mut().unwrap();
    g.node[1] = node("LRN", &["c1"], "r1", vec![int("size", 3)]);
    let path = dir.path().join("lrn.onnx");
    save(&path, &bad);
    let err = LocalNet::load(&path, "cat", &Device::flex())
        .expect_err("LRN is not built")
        .to_string();
    assert!(
        err.contains("`r1`") && err.contains("LRN") && err.contains("Conv, Relu"),
        "{err}"
    );
}

#[test]
fn preprocessing_equals_the_extract_stage() {
    for spec in [
        Preprocess {
            resize: ResizeMode::None,
            channel_order: ChannelOrder::Bgr,
            scale: 1.0,
            mean: [0.0; 3],
            std: [1.0; 3],
        },
        Preprocess {
            resize: ResizeMode::None,
            channel_order: ChannelOrder::Rgb,
            scale: 1.0 / 255.0,
            mean: [0.485, 0.456, 0.406],
            std: [0.229, 0.224, 0.225],
        },
    ] {
        let h = 4usize;
        let pixels: Vec<u8> = (0..h * h * 3).map(|i| (i * 37 % 256) as u8).collect();
        let mut want = vec![0f32; 3 * h * h];
        privynet_extract::preprocess::preprocess_into(
            &pixels, h as u32, h as u32, &spec, h as u32, &mut want,
        )
        .unwrap();
        // The attacker's image: CHW RGB in [0, 1].
        let chw: Vec<f32> = (0..3)
            .flat_map(|c| {
                let px = &pixels;
                (0..h * h).map(move |p| f32::from(px[p * 3 + c]) / 255.0)
            })
            .collect();
        let device = Device::flex();
        let x = Tensor::<4>::from_data(TensorData::new(chw, [1, 3, h, h]), &device);
        let got = Preprocessing::new(&spec)
            .apply(x)
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        let scale = want.iter().fold(1.0f32, |m, v| m.max(v.abs()));
        let diff = max_abs_diff(want.iter(), got.iter());
        assert!(diff <= 1e-5 * scale, "{spec:?}: differs by {diff}");
    }
}
