//! EfficientNet-Lite0 as PyTorch exports it (opset 17: constant subgraphs for every padding,
//! ReLU6 as `Clip` with `Constant` bounds, depthwise convolutions, residual `Add`s, a `Shape`
//! of the input for the flatten): it folds, lists every cut point with block names, and every
//! cut point's local network at input 32, run in ONNX Runtime, gives the full model's tensor
//! there for the selected channels. The model comes from data/models or the shared mirror; the
//! tests fail when neither has it, unless the user opted out of `mirror-models`.

mod common;

use common::{max_abs_diff, model_file};
use ndarray::Array4;
use onnx_protobuf::Message;
use privynet_slice::{analyze, model, select, surgery};

const LITE0: &str = "efficientnet-lite0_fp32_opset17.onnx";

fn lite0() -> Option<std::path::PathBuf> {
    model_file(LITE0)
}

/// Images of ImageNet-normalised magnitude, in [-2, 2).
fn image(seed: u64, size: usize) -> Array4<f32> {
    let mut s = seed;
    Array4::from_shape_fn((2, 3, size, size), |_| {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((s >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
    })
}

#[test]
fn lite0_folds_and_lists_its_blocks() {
    let Some(path) = lite0() else { return };
    let m = model::load(&path, None).unwrap();
    assert_eq!(m.input, "input");
    let g = m.proto.graph.as_ref().unwrap();
    let count = |op: &str| g.node.iter().filter(|n| n.op_type == op).count();
    // 222 Constant and the 17 padding chains of 7 nodes each are folded; the head's
    // Shape -> Gather -> Unsqueeze -> Concat -> Reshape reads the input and stays.
    assert_eq!(m.folded, 222 + 17 * 7, "folded nodes");
    for op in ["Constant", "ConstantOfShape", "Slice", "Transpose", "Cast"] {
        assert_eq!(count(op), 0, "{op} nodes left");
    }
    assert_eq!(
        (count("Shape"), count("Concat"), count("Reshape")),
        (1, 1, 1)
    );
    assert_eq!((count("Conv"), count("Pad"), count("Clip")), (49, 17, 33));

    let a = analyze::analyze(&m, 32).unwrap();
    assert_eq!(a.stopped_at, None, "the whole graph is analysed");
    // 17 Pad, 49 Conv, 33 Clip, 9 Add, the global pool.
    assert_eq!(a.points.len(), 17 + 49 + 33 + 9 + 1);
    let shape = |n: &str| {
        let p = a.find(n).unwrap();
        (p.channels, p.height, p.width)
    };
    assert_eq!(shape("conv_stem"), (32, 16, 16));
    assert_eq!(shape("swish"), (32, 16, 16));
    assert_eq!(shape("blocks.0"), (16, 16, 16));
    assert_eq!(shape("blocks.2"), (24, 8, 8));
    assert_eq!(shape("blocks.3"), (40, 4, 4));
    assert_eq!(shape("blocks.15"), (320, 1, 1));
    assert_eq!(shape("avg_pooling"), (1280, 1, 1));
    assert_eq!(
        a.find("blocks.3").unwrap().name,
        "/_blocks.3/_project_conv/Conv_output_0"
    );
    assert_eq!(a.find("blocks.2").unwrap().name, "/_blocks.2/Add_output_0");
    let blocks = a
        .points
        .iter()
        .filter(|p| p.layer.as_deref().is_some_and(|l| l.starts_with("blocks.")))
        .count();
    assert_eq!(blocks, 16, "one name per block");
    let stem = a.find("conv_stem").unwrap();
    assert_eq!(stem.macs, 32 * 16 * 16 * 3 * 9);
    assert_eq!(
        stem.params,
        32 * 3 * 9 + 32,
        "pads and clip bounds are not weights"
    );
    assert_eq!(stem.weight_bytes, 4 * stem.params);
    let dw = a.find("/_blocks.0/_depthwise_conv/Conv_output_0").unwrap();
    assert_eq!(dw.macs - stem.macs, 32 * 16 * 16 * 9, "depthwise");
    // The float initializers less the classifier (1280 x 1000 + 1000).
    let last = a.points.last().unwrap();
    assert_eq!(last.params, 4_631_000 - 1_281_000);
    assert_eq!(last.weight_bytes, 4 * last.params);
    assert_eq!(last.macs, 7_834_848);
}

#[test]
fn every_lite0_cut_matches_the_full_model() {
    let Some(path) = lite0() else { return };
    let dir = tempfile::tempdir().unwrap();
    let m = model::load(&path, None).unwrap();
    let size = 32usize;
    let a = analyze::analyze(&m, size as i64).unwrap();
    // The independent reference: the file as exported, unfolded, with every cut as an output.
    let mut full =
        onnx_protobuf::ModelProto::parse_from_bytes(&std::fs::read(&path).unwrap()).unwrap();
    for p in &a.points {
        let mut vi = onnx_protobuf::ValueInfoProto::new();
        vi.name = p.name.clone();
        full.graph.as_mut().unwrap().output.push(vi);
    }
    let full_path = dir.path().join("full.onnx");
    std::fs::write(&full_path, full.write_to_bytes().unwrap()).unwrap();
    let x = image(7, size);
    let reference = privynet_extract::runtime::Runner::open(&full_path, "logits", Some(2))
        .unwrap()
        .run_all(x.view())
        .unwrap();
    let mut worst = (0.0f32, String::new());
    for (k, p) in a.points.iter().enumerate() {
        let c = p.channels as usize;
        let d = 1 + (k * 7) % c;
        let sel = select::take(&select::random_order(c, k as u64), d, &p.name).unwrap();
        let local = surgery::local_network(&m, &p.name, &sel).unwrap();
        let lg = local.graph.as_ref().unwrap();
        assert!(
            lg.node
                .iter()
                .all(|n| !["Constant", "ConstantOfShape", "Shape"].contains(&n.op_type.as_str())),
            "cut {}: folded constants are initializers",
            p.name
        );
        let lp = dir.path().join("local.onnx");
        std::fs::write(&lp, surgery::to_bytes(&local).unwrap()).unwrap();
        let y = privynet_extract::runtime::Runner::open(&lp, "features", Some(2))
            .unwrap()
            .run(x.view())
            .unwrap();
        assert_eq!(
            y.shape(),
            &[2, d, p.height as usize, p.width as usize],
            "cut {}: predicted shape",
            p.name
        );
        let want = &reference[&p.name];
        for (pos, &ch) in sel.iter().enumerate() {
            let w = want.index_axis(ndarray::Axis(1), ch as usize);
            let got = y.index_axis(ndarray::Axis(1), pos);
            let diff = max_abs_diff(w.iter(), got.iter());
            assert!(
                diff <= 1e-4,
                "cut {} ({}) channel {ch}: max abs diff {diff} (limit 1e-4)",
                p.label(),
                p.name
            );
            if diff > worst.0 {
                worst = (diff, p.name.clone());
            }
        }
    }
    eprintln!(
        "Lite0 at input {size}: {} cut points match the full model; max abs diff {:e} (at {})",
        a.points.len(),
        worst.0,
        worst.1
    );
}
