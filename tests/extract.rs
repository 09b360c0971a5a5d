//! End-to-end tests of `privynet-extract` on a slice of real CIFAR-10 with the real SqueezeNet.

use std::path::{Path, PathBuf};

use arrow::array::{FixedSizeListArray, Float32Array, Int64Array, UInt8Array};
use privynet_core::ArtifactKind;
use privynet_e2e::*;

/// Ingests the smoke slice and slices fire3 with `d` channels into `dir`.
fn prepare(dir: &Path, cut: &str, d: &str) -> (PathBuf, PathBuf) {
    let m = smoke_manifest(dir, "");
    ok(&run(
        "privynet-ingest",
        &["--manifest", m.to_str().unwrap()],
    ));
    let out = dir.join(format!("{cut}-{d}"));
    slice(m.to_str().unwrap(), cut, d, &out);
    (m, out)
}

#[test]
fn one_images_features_match_ort_on_a_hand_built_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let (m, topo) = prepare(dir.path(), "conv1", "8");
    let features = topo.join("features.parquet");
    ok(&run(
        "privynet-extract",
        &[
            "--manifest",
            m.to_str().unwrap(),
            "--model",
            topo.join("local.onnx").to_str().unwrap(),
            "--topology",
            topo.join("topology.arrow").to_str().unwrap(),
            "--output",
            features.to_str().unwrap(),
        ],
    ));
    // The first image of the file, by hand: HWC RGB u8 -> NCHW BGR float, raw 0-255.
    let images = read_all(&dir.path().join("out/images.parquet"), ArtifactKind::Images);
    let b = &images[0];
    let id = col::<Int64Array>(b, "id").value(0);
    let px = col::<FixedSizeListArray>(b, "pixels").value(0);
    let px = px
        .as_any()
        .downcast_ref::<UInt8Array>()
        .unwrap()
        .values()
        .to_vec();
    let mut x = vec![0f32; 3 * 32 * 32];
    for p in 0..32 * 32 {
        for c in 0..3 {
            x[c * 1024 + p] = f32::from(px[p * 3 + (2 - c)]);
        }
    }
    let feats = read_all(&features, ArtifactKind::Features);
    let (fb, row) = feats
        .iter()
        .find_map(|fb| {
            let ids = col::<Int64Array>(fb, "id");
            (0..fb.num_rows())
                .find(|&i| ids.value(i) == id)
                .map(|i| (fb, i))
        })
        .expect("the first image is in the features");
    let got = col::<FixedSizeListArray>(fb, "features").value(row);
    let got = got
        .as_any()
        .downcast_ref::<Float32Array>()
        .unwrap()
        .values()
        .to_vec();
    assert_eq!(got.len(), 8 * 15 * 15);
    let want = hand_features(&topo.join("local.onnx"), &x);
    let diff = got
        .iter()
        .zip(&want)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(diff < 1e-4, "max diff {diff}");
}

/// conv1's selected channels for one hand-built NCHW tensor, computed by hand from the model's
/// weights: independent of both the tool's preprocessing and ONNX Runtime.
fn hand_features(local: &Path, x: &[f32]) -> Vec<f32> {
    // conv1 of SqueezeNet 1.1: 64 filters 3x3, stride 2, no padding, then ReLU; the local
    // network keeps the selected channels in order.
    let sel =
        privynet_core::topology::read_selection(&local.with_file_name("selection.arrow")).unwrap();
    let (w, b) = conv1_weights();
    let mut out = Vec::new();
    for &ch in &sel {
        let ch = ch as usize;
        for oy in 0..15 {
            for ox in 0..15 {
                let mut s = b[ch];
                for c in 0..3 {
                    for ky in 0..3 {
                        for kx in 0..3 {
                            s += w[((ch * 3 + c) * 3 + ky) * 3 + kx]
                                * x[c * 1024 + (oy * 2 + ky) * 32 + ox * 2 + kx];
                        }
                    }
                }
                out.push(s.max(0.0));
            }
        }
    }
    out
}

/// conv1's weights and bias from the fp32 SqueezeNet file, read without the slice crate: the
/// fp32 file stores them as raw little-endian floats, found by their names in the protobuf.
fn conv1_weights() -> (Vec<f32>, Vec<f32>) {
    let bytes = std::fs::read(data("models/squeezenet1.1_fp32_opset7.onnx")).unwrap();
    let find = |name: &str, n: usize| -> Vec<f32> {
        // A TensorProto stores its name (field 8) before raw_data (field 9, length-delimited).
        let key = name.as_bytes();
        let pos = bytes
            .windows(key.len() + 2)
            .position(|w| w[0] == 0x42 && w[1] as usize == key.len() && &w[2..] == key)
            .expect("tensor name");
        let mut i = pos + 2 + key.len();
        assert_eq!(bytes[i], 0x4a, "raw_data follows the name");
        i += 1;
        let (mut len, mut shift) = (0usize, 0);
        loop {
            let b = bytes[i];
            i += 1;
            len |= ((b & 0x7f) as usize) << shift;
            shift += 7;
            if b & 0x80 == 0 {
                break;
            }
        }
        assert_eq!(len, n * 4);
        bytes[i..i + len]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    };
    (find("conv1_w_0", 64 * 27), find("conv1_b_0", 64))
}

#[test]
fn bad_inputs_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let (m, topo) = prepare(dir.path(), "conv1", "8");
    let ms = m.to_str().unwrap();
    let out = dir.path().join("f.parquet");
    let os = out.to_str().unwrap();
    // A model whose output is not named `features`: the original SqueezeNet.
    let o = run(
        "privynet-extract",
        &[
            "--manifest",
            ms,
            "--model",
            data("models/squeezenet1.1_fp32_opset17.onnx")
                .to_str()
                .unwrap(),
            "--output",
            os,
        ],
    );
    fails_with(&o, &["no output named `features`"]);
    // Images whose size the manifest does not say how to resize.
    let o = run(
        "privynet-extract",
        &[
            "--manifest",
            ms,
            "--set",
            "model.input_size=64",
            "--model",
            topo.join("local.onnx").to_str().unwrap(),
            "--output",
            os,
        ],
    );
    fails_with(&o, &["32x32", "input_size is 64", "resize"]);
    // A missing ONNX Runtime library says how to install it.
    let o = std::process::Command::new(bin("privynet-extract"))
        .args([
            "--manifest",
            ms,
            "--model",
            topo.join("local.onnx").to_str().unwrap(),
            "--output",
            os,
        ])
        .env("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so")
        .current_dir(root())
        .output()
        .unwrap();
    fails_with(&o, &["ONNX Runtime library not found", "make ort"]);
    assert!(!out.exists());
    // With resize declared, a 64x64 input runs and gives conv1 at 31x31.
    ok(&run(
        "privynet-extract",
        &[
            "--manifest",
            ms,
            "--set",
            "model.input_size=64",
            "--set",
            "model.preprocess.resize=bilinear",
            "--model",
            topo.join("local.onnx").to_str().unwrap(),
            "--output",
            os,
        ],
    ));
    let f = read_all(&out, ArtifactKind::Features);
    assert_eq!(
        col::<FixedSizeListArray>(&f[0], "features").value_length(),
        8 * 31 * 31
    );
}

#[test]
fn wrong_topology_is_named_and_shards_read_as_one() {
    let dir = tempfile::tempdir().unwrap();
    let (m, topo8) = prepare(dir.path(), "fire3", "8");
    let ms = m.to_str().unwrap();
    let parts = dir.path().join("parts");
    for k in 0..3 {
        let p = parts.join(format!("part-{k}-of-3.parquet"));
        ok(&run(
            "privynet-extract",
            &[
                "--manifest",
                ms,
                "--model",
                topo8.join("local.onnx").to_str().unwrap(),
                "--topology",
                topo8.join("topology.arrow").to_str().unwrap(),
                "--shard",
                &format!("{k}/3"),
                "--output",
                p.to_str().unwrap(),
            ],
        ));
    }
    let whole = dir.path().join("whole.parquet");
    ok(&run(
        "privynet-extract",
        &[
            "--manifest",
            ms,
            "--model",
            topo8.join("local.onnx").to_str().unwrap(),
            "--topology",
            topo8.join("topology.arrow").to_str().unwrap(),
            "--output",
            whole.to_str().unwrap(),
        ],
    ));
    let ids = |p: &Path| {
        let mut v: Vec<i64> = privynet_core::io::dataset_parts(p)
            .unwrap()
            .iter()
            .flat_map(|part| read_all(part, ArtifactKind::Features))
            .flat_map(|b| col::<Int64Array>(&b, "id").values().to_vec())
            .collect();
        v.sort();
        v
    };
    assert_eq!(ids(&parts), ids(&whole));
    assert_eq!(
        ids(&whole).len(),
        500,
        "train, val, attacker and test rows of the smoke manifest"
    );
    // Read against another topology: the mismatch is named.
    let topo32 = dir.path().join("fire3-32");
    slice(ms, "fire3", "32", &topo32);
    let expected = privynet_core::Topology::read(&topo32.join("topology.arrow")).unwrap();
    let e = privynet_core::topology::check_features(&parts, &expected)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("`channels` is 8 in the file, expected 32"),
        "{e}"
    );
    privynet_core::topology::check_features(
        &whole,
        &privynet_core::Topology::read(&topo8.join("topology.arrow")).unwrap(),
    )
    .unwrap();
}

#[test]
fn killed_extract_leaves_no_final_file() {
    let dir = tempfile::tempdir().unwrap();
    let m = smoke_manifest(dir.path(), "");
    let ms = m.to_str().unwrap();
    ok(&run(
        "privynet-ingest",
        &[
            "--manifest",
            ms,
            "--set",
            "dataset.splits={train: 5000, attacker: 0, test: 1000}",
            // The smoke manifest's final training takes 400 images, fewer than this train split.
            "--set",
            "final.train_images=all",
        ],
    ));
    let topo = dir.path().join("conv1-64");
    slice(ms, "conv1", "all", &topo);
    let out = topo.join("features.parquet");
    let child = std::process::Command::new(bin("privynet-extract"))
        .args([
            "--manifest",
            ms,
            "--model",
            topo.join("local.onnx").to_str().unwrap(),
            "--batch-size",
            "16",
            "--output",
            out.to_str().unwrap(),
        ])
        .current_dir(root())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    kill_while_writing(child, &out);
    assert!(!out.exists(), "a killed extract left {}", out.display());
}

#[test]
fn derived_narrower_features_equal_a_direct_extraction() {
    let dir = tempfile::tempdir().unwrap();
    let (m, wide) = prepare(dir.path(), "fire3", "all");
    let ms = m.to_str().unwrap();
    let narrow = dir.path().join("fire3-8");
    slice(ms, "fire3", "8", &narrow);
    let extract = |t: &Path, out: &Path| {
        ok(&run(
            "privynet-extract",
            &[
                "--manifest",
                ms,
                "--model",
                t.join("local.onnx").to_str().unwrap(),
                "--topology",
                t.join("topology.arrow").to_str().unwrap(),
                "--output",
                out.to_str().unwrap(),
            ],
        ));
    };
    extract(&wide, &wide.join("features.parquet"));
    let direct = dir.path().join("direct.parquet");
    extract(&narrow, &direct);
    let derived = dir.path().join("derived.parquet");
    ok(&run(
        "privynet-extract",
        &[
            "--manifest",
            ms,
            "--derive-from",
            wide.join("features.parquet").to_str().unwrap(),
            "--wide-selection",
            wide.join("selection.arrow").to_str().unwrap(),
            "--selection",
            narrow.join("selection.arrow").to_str().unwrap(),
            "--topology",
            narrow.join("topology.arrow").to_str().unwrap(),
            "--output",
            derived.to_str().unwrap(),
        ],
    ));
    let values = |p: &Path| -> (Vec<i64>, Vec<f32>) {
        let mut ids = Vec::new();
        let mut v = Vec::new();
        for b in read_all(p, ArtifactKind::Features) {
            ids.extend_from_slice(col::<Int64Array>(&b, "id").values());
            let l = col::<FixedSizeListArray>(&b, "features");
            v.extend_from_slice(
                l.values()
                    .as_any()
                    .downcast_ref::<Float32Array>()
                    .unwrap()
                    .values(),
            );
        }
        (ids, v)
    };
    let (a, b) = (values(&direct), values(&derived));
    assert_eq!(a.0, b.0);
    assert_eq!(a.1.len(), 500 * 8 * 7 * 7);
    assert!(
        a.1 == b.1,
        "derived features differ from a direct extraction"
    );
    // A selection that is not a prefix of the wide one is refused.
    let other = dir.path().join("fire3-8-seed9");
    ok(&run(
        "privynet-slice",
        &[
            "--manifest",
            ms,
            "--seed",
            "9",
            "--cut",
            "fire3",
            "--channels",
            "8",
            "--output",
            other.to_str().unwrap(),
        ],
    ));
    let o = run(
        "privynet-extract",
        &[
            "--manifest",
            ms,
            "--derive-from",
            wide.join("features.parquet").to_str().unwrap(),
            "--wide-selection",
            wide.join("selection.arrow").to_str().unwrap(),
            "--selection",
            other.join("selection.arrow").to_str().unwrap(),
            "--topology",
            other.join("topology.arrow").to_str().unwrap(),
            "--output",
            dir.path().join("x.parquet").to_str().unwrap(),
        ],
    );
    fails_with(&o, &["not a prefix"]);
}
