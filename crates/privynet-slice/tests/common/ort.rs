//! Every cut's local network against ONNX Runtime on the full graph it was cut from.

use std::collections::BTreeMap;
use std::path::Path;

use ndarray::{Array4, ArrayD, Axis};
use onnx_protobuf::{Message, ModelProto};
use privynet_slice::{analyze, model, select, surgery};

use super::max_abs_diff;

fn save(path: &Path, m: &ModelProto) {
    std::fs::write(path, m.write_to_bytes().unwrap()).unwrap();
}

/// Pseudo-random images in [-2, 2): a batch of 2 of `c` channels, `size` square.
pub fn image(seed: u64, c: usize, size: usize) -> Array4<f32> {
    let mut s = seed;
    Array4::from_shape_fn((2, c, size, size), |_| {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((s >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
    })
}

/// Checks that every cut's local network (shapes frozen at the analysis's input size) gives
/// the original graph's tensor there, in ONNX Runtime, for images of `c_in` channels; the
/// graph's output is `logits`. Returns the largest difference.
pub fn check_local_networks(
    dir: &Path,
    original: &ModelProto,
    m: &model::Model,
    a: &analyze::Analysis,
    c_in: usize,
) -> f32 {
    // The original graph with every cut point as an output too.
    let full = dir.join("full.onnx");
    let mut reference = original.clone();
    for p in &a.points {
        let mut vi = onnx_protobuf::ValueInfoProto::new();
        vi.name = p.name.clone();
        reference.graph.as_mut().unwrap().output.push(vi);
    }
    save(&full, &reference);
    let size = a.input_size;
    let x = image(size as u64, c_in, size as usize);
    let want = privynet_extract::runtime::Runner::open(&full, "logits", Some(1))
        .unwrap()
        .run_all(x.view())
        .unwrap();
    let mut worst = 0.0f32;
    for (k, p) in a.points.iter().enumerate() {
        worst = worst.max(check_local_network(dir, m, a, p, k, &x, &want));
    }
    worst
}

/// Checks the local network of cut `p` (the `k`-th), on some of its channels, against `want`,
/// the original graph's tensors for input `x`; returns the largest difference.
fn check_local_network(
    dir: &Path,
    m: &model::Model,
    a: &analyze::Analysis,
    p: &analyze::CutPoint,
    k: usize,
    x: &Array4<f32>,
    want: &BTreeMap<String, ArrayD<f32>>,
) -> f32 {
    let c = p.channels as usize;
    let sel = select::take(&select::random_order(c, k as u64), 1 + k % c, &p.name).unwrap();
    let mut local = surgery::local_network(m, &p.name, &sel).unwrap();
    surgery::freeze_shapes(&mut local, &a.shape_values);
    let lg = local.graph.as_ref().unwrap();
    assert!(
        lg.node
            .iter()
            .all(|n| n.op_type != "Constant" && n.op_type != "Shape"),
        "cut {}: constants and shape computations are folded or frozen",
        p.name
    );
    let lp = dir.join("local.onnx");
    save(&lp, &local);
    let y = privynet_extract::runtime::Runner::open(&lp, "features", Some(1))
        .unwrap()
        .run(x.view())
        .unwrap();
    assert_eq!(
        y.shape(),
        &[2, sel.len(), p.height as usize, p.width as usize],
        "{}",
        p.name
    );
    let t = &want[&p.name];
    let mut worst = 0.0f32;
    for (pos, &ch) in sel.iter().enumerate() {
        let w = t.index_axis(Axis(1), ch as usize);
        let got = y.index_axis(Axis(1), pos);
        let diff = max_abs_diff(w.iter(), got.iter());
        assert!(
            diff <= 1e-5,
            "cut {} channel {ch} at input {}: max abs diff {diff}",
            p.name,
            a.input_size
        );
        worst = worst.max(diff);
    }
    worst
}
