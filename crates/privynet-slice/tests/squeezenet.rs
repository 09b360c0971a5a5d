//! The real SqueezeNet 1.1: every cut point's local network, run in ONNX Runtime, gives exactly
//! the full model's tensor at that cut, restricted to the selected channels; the totals match
//! the published parameter count; fp16 weights are upcast exactly.

mod common;

use common::data;
use ndarray::Array4;
use onnx_protobuf::Message;
use privynet_slice::{analyze, model, select, surgery};
use proptest::prelude::*;

fn full_with_all_cuts(dir: &std::path::Path, cuts: &[String]) -> std::path::PathBuf {
    // The independent reference: the fp32 opset-17 file, unchanged but for extra graph outputs.
    let mut m = onnx_protobuf::ModelProto::parse_from_bytes(
        &std::fs::read(data("models/squeezenet1.1_fp32_opset17.onnx")).unwrap(),
    )
    .unwrap();
    let g = m.graph.as_mut().unwrap();
    for c in cuts {
        let mut vi = onnx_protobuf::ValueInfoProto::new();
        vi.name = c.clone();
        g.output.push(vi);
    }
    let p = dir.join("full.onnx");
    std::fs::write(&p, m.write_to_bytes().unwrap()).unwrap();
    p
}

fn image(seed: u64, size: usize) -> Array4<f32> {
    let mut s = seed;
    Array4::from_shape_fn((2, 3, size, size), |_| {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((s >> 33) % 256) as f32
    })
}

#[test]
fn totals_and_friendly_names() {
    let m = model::load(&data("models/squeezenet1.1_fp16_opset7.onnx"), None).unwrap();
    assert!(m.was_fp16);
    assert_eq!(m.folded, 0, "nothing to fold: the graph is as in the file");
    assert_eq!(m.input, "data_0");
    let a = analyze::analyze(&m, 32).unwrap();
    let last = a.points.last().unwrap();
    assert_eq!(
        last.params, 1_235_496,
        "SqueezeNet 1.1 has 1,235,496 parameters"
    );
    assert_eq!(last.weight_bytes, 2 * 1_235_496, "stored as fp16");
    let shape = |n: &str| {
        let p = a.find(n).unwrap();
        (p.channels, p.height, p.width)
    };
    assert_eq!(shape("conv1"), (64, 15, 15));
    assert_eq!(shape("fire2"), (128, 7, 7));
    assert_eq!(shape("fire3"), (128, 7, 7));
    assert_eq!(shape("fire5"), (256, 3, 3));
    assert_eq!(a.find("conv1").unwrap().macs, 64 * 15 * 15 * 3 * 9);
    let e = a.find("fire33").unwrap_err().to_string();
    assert!(e.contains("`fire3`"), "{e}");
}

#[test]
fn every_cut_matches_the_full_model() {
    let dir = tempfile::tempdir().unwrap();
    let m = model::load(&data("models/squeezenet1.1_fp16_opset7.onnx"), None).unwrap();
    for size in [32usize, 64] {
        let a = analyze::analyze(&m, size as i64).unwrap();
        let cuts: Vec<String> = a.points.iter().map(|p| p.name.clone()).collect();
        let full = full_with_all_cuts(dir.path(), &cuts);
        let mut full_runner =
            privynet_extract::runtime::Runner::open(&full, "softmaxout_1", Some(2)).unwrap();
        let x = image(size as u64, size);
        let reference = full_runner.run_all(x.view()).unwrap();
        for (k, p) in a.points.iter().enumerate() {
            let d = 1 + (k * 7) % p.channels as usize;
            let sel = select::take(
                &select::random_order(p.channels as usize, k as u64),
                d,
                &p.name,
            )
            .unwrap();
            let local = surgery::local_network(&m, &p.name, &sel).unwrap();
            let path = dir.path().join("local.onnx");
            std::fs::write(&path, surgery::to_bytes(&local).unwrap()).unwrap();
            let mut r =
                privynet_extract::runtime::Runner::open(&path, "features", Some(2)).unwrap();
            let y = r.run(x.view()).unwrap();
            assert_eq!(
                y.shape(),
                &[2, d, p.height as usize, p.width as usize],
                "cut {} at input {size}: predicted shape",
                p.name
            );
            let full_t = &reference[&p.name];
            for (pos, &ch) in sel.iter().enumerate() {
                for n in 0..2 {
                    let want = full_t.index_axis(ndarray::Axis(0), n);
                    let want = want.index_axis(ndarray::Axis(0), ch as usize);
                    let got = y.index_axis(ndarray::Axis(0), n);
                    let got = got.index_axis(ndarray::Axis(0), pos);
                    let diff = (&want - &got).iter().fold(0.0f32, |m, v| m.max(v.abs()));
                    assert!(diff <= 1e-3, "cut {} channel {ch}: max diff {diff}", p.name);
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, .. ProptestConfig::default() })]
    #[test]
    fn any_selection_at_fire3_is_the_full_tensors_channels(seed in any::<u64>(), d in 1usize..=128) {
        let dir = tempfile::tempdir().unwrap();
        let m = model::load(&data("models/squeezenet1.1_fp16_opset7.onnx"), None).unwrap();
        let sel = select::take(&select::random_order(128, seed), d, "fire3").unwrap();
        let all: Vec<i64> = (0..128).collect();
        let write = |name: &str, s: &[i64]| {
            let p = dir.path().join(name);
            std::fs::write(&p, surgery::to_bytes(&surgery::local_network(&m, "fire3/concat_1", s).unwrap()).unwrap()).unwrap();
            p
        };
        let x = image(seed, 32);
        let full = privynet_extract::runtime::Runner::open(&write("all.onnx", &all), "features", Some(2)).unwrap().run(x.view()).unwrap();
        let part = privynet_extract::runtime::Runner::open(&write("d.onnx", &sel), "features", Some(2)).unwrap().run(x.view()).unwrap();
        for (pos, &ch) in sel.iter().enumerate() {
            prop_assert_eq!(full.index_axis(ndarray::Axis(1), ch as usize), part.index_axis(ndarray::Axis(1), pos));
        }
    }
}
