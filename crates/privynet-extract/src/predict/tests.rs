//! The prediction run end to end on a deploy folder the tests build: a local network that
//! averages each colour channel and a cloud network that takes those three means as logits, so
//! a mostly red, green or blue image is class 0, 1 or 2. Runs ONNX Runtime.

use std::path::{Path, PathBuf};

use arrow::array::{Int32Array, Int64Array, RecordBatch, StringArray};
use onnx_protobuf::tensor_proto::DataType;
use onnx_protobuf::tensor_shape_proto::Dimension;
use onnx_protobuf::{GraphProto, ModelProto, NodeProto, OperatorSetIdProto};
use privynet_core::card::Card;
use privynet_core::io::open_parquet;
use privynet_core::{ArtifactKind, Provenance};
use privynet_slice::proto::{dim_param, dim_value, typed_value_info};
use protobuf::Message;

use super::sent::{Sent, SentWriter};
use super::*;

/// A card for features of `shape` (float16) from `input_size` images, and `classes` classes.
pub(crate) fn card(shape: [usize; 3], classes: usize, input_size: u32) -> Card {
    let pre = serde_json::json!({"resize": "none", "channel_order": "rgb", "scale": 1.0,
        "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]});
    serde_json::from_value(serde_json::json!({
        "topology": "fire3-d8", "cut": "fire3", "channels": shape[0],
        "accuracy": {"val": 0.5, "test": 0.5, "test_lo": 0.4, "test_hi": 0.6,
            "test_images": 100},
        "privacy": {"worst_attack": "irn", "psnr": 12.0, "psnr_lo": 11.0, "psnr_hi": 13.0,
            "ssim": 0.2, "ssim_lo": 0.1, "ssim_hi": 0.3},
        "limits": null, "macs": 1, "weight_bytes": 1, "bytes_per_image": 2,
        "local": {"file": "local.onnx", "blake3": "", "input_size": input_size,
            "preprocess": pre, "features_dtype": "float16", "features_shape": shape},
        "cloud": {"file": "cloud.onnx", "blake3": "", "input": "features",
            "output": "logits", "classes": classes},
        "trained_on": {"dataset": "features.parquet", "train_images": 200,
            "val_images": 100, "epochs": 2}
    }))
    .expect("the test card matches the card's fields")
}

/// A model applying the parameterless `ops` in turn from `input` to `output`.
fn model(input: (&str, Vec<Dimension>), output: (&str, Vec<Dimension>), ops: &[&str]) -> Vec<u8> {
    let mut g = GraphProto::new();
    g.name = "tiny".into();
    let mut prev = input.0.to_string();
    for (i, op) in ops.iter().enumerate() {
        let out = if i + 1 == ops.len() {
            output.0.to_string()
        } else {
            format!("t{i}")
        };
        let mut n = NodeProto::new();
        n.name = format!("n{i}");
        n.op_type = op.to_string();
        n.input = vec![prev];
        n.output = vec![out.clone()];
        g.node.push(n);
        prev = out;
    }
    g.input
        .push(typed_value_info(input.0, DataType::FLOAT, input.1));
    g.output
        .push(typed_value_info(output.0, DataType::FLOAT, output.1));
    let mut m = ModelProto::new();
    m.ir_version = 8;
    let mut opset = OperatorSetIdProto::new();
    opset.version = 15;
    m.opset_import.push(opset);
    m.graph = Some(g).into();
    m.write_to_bytes().expect("a model should encode")
}

/// A deploy folder: the channel-mean local network (any input size), a cloud network taking
/// `cloud_channels` x 1 x 1 features, and the card.
fn deploy(dir: &Path, card: &Card, cloud_channels: i64) -> PathBuf {
    let d = dir.join("deploy");
    std::fs::create_dir_all(&d).unwrap();
    let n = || dim_param("N");
    let local = model(
        ("x", vec![n(), dim_value(3), dim_param("H"), dim_param("W")]),
        (
            "features",
            vec![n(), dim_value(3), dim_value(1), dim_value(1)],
        ),
        &["GlobalAveragePool"],
    );
    let c = cloud_channels;
    let cloud = model(
        (
            "features",
            vec![n(), dim_value(c), dim_value(1), dim_value(1)],
        ),
        ("logits", vec![n(), dim_value(c)]),
        &["Flatten"],
    );
    std::fs::write(d.join("local.onnx"), local).unwrap();
    std::fs::write(d.join("cloud.onnx"), cloud).unwrap();
    std::fs::write(d.join("card.json"), serde_json::to_string(card).unwrap()).unwrap();
    d
}

/// A `size` x `size` PNG of one colour.
fn png(path: &Path, size: u32, rgb: [u8; 3]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    image::RgbImage::from_pixel(size, size, image::Rgb(rgb))
        .save(path)
        .unwrap();
}

const RED: [u8; 3] = [200, 10, 30];
const GREEN: [u8; 3] = [20, 180, 40];
const BLUE: [u8; 3] = [5, 60, 220];

/// Class folders `a`, `b`, `c` holding a red, a green and a blue image (labels 0, 1, 2).
fn class_folders(root: &Path, size: u32) {
    for (class, rgb) in [("a", RED), ("b", GREEN), ("c", BLUE)] {
        png(&root.join(class).join("1.png"), size, rgb);
    }
}

fn request(deploy: &Path, input: Input, output: &Path) -> PredictRun {
    PredictRun {
        deploy: deploy.to_path_buf(),
        input,
        local_only: false,
        splits: vec![],
        output: output.to_path_buf(),
        batch_size: 2,
        threads: Some(1),
        secret: None,
    }
}

/// Every row of a predictions file, in one batch.
fn predictions(path: &Path) -> RecordBatch {
    let (schema, reader) = open_parquet(path, ArtifactKind::ImagePredictions, None, 64).unwrap();
    let batches: Vec<RecordBatch> = reader.collect::<Result<_, _>>().unwrap();
    arrow::compute::concat_batches(&schema, &batches).unwrap()
}

fn ints(b: &RecordBatch, name: &str) -> Vec<i64> {
    let c = b.column_by_name(name).unwrap().as_any();
    match c.downcast_ref::<Int64Array>() {
        Some(a) => a.values().to_vec(),
        None => {
            let a = c.downcast_ref::<Int32Array>().unwrap();
            a.values().iter().map(|&v| i64::from(v)).collect()
        }
    }
}

#[test]
fn forms_are_told_apart_by_what_the_path_is() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let file = |name: &str| {
        std::fs::write(p.join(name), b"x").unwrap();
        p.join(name)
    };
    let parquet = file("images.parquet");
    assert_eq!(detect(&parquet).unwrap(), ImagesForm::Parquet(parquet));
    let batch = file("data_batch_3.bin.gz");
    assert_eq!(detect(&batch).unwrap(), ImagesForm::Cifar(batch));
    class_folders(&p.join("classes"), 4);
    let classes = p.join("classes");
    assert_eq!(detect(&classes).unwrap(), ImagesForm::ClassFolders(classes));
    png(&p.join("flat/x.png"), 4, RED);
    let flat = p.join("flat");
    assert_eq!(detect(&flat).unwrap(), ImagesForm::FlatFolder(flat));
    // The data mirror's layout: the batch files one folder down.
    std::fs::create_dir_all(p.join("cifar/batches-bin")).unwrap();
    std::fs::write(p.join("cifar/batches-bin/test_batch.bin"), b"x").unwrap();
    let cifar = p.join("cifar");
    assert_eq!(detect(&cifar).unwrap(), ImagesForm::Cifar(cifar));

    let expected = "expected images.parquet";
    png(&p.join("both/x.png"), 4, RED);
    std::fs::create_dir_all(p.join("both/sub")).unwrap();
    std::fs::create_dir_all(p.join("empty")).unwrap();
    for (path, found) in [
        (file("notes.txt"), "neither .parquet nor a CIFAR-10 batch"),
        (p.join("missing"), "no such file"),
        (p.join("both"), "both images and subfolders"),
        (p.join("empty"), "no images, class subfolders or CIFAR-10"),
    ] {
        let e = detect(&path).unwrap_err().to_string();
        assert!(e.contains(found) && e.contains(expected), "{e}");
    }
}

#[test]
fn class_folders_are_labelled_by_sorted_index_and_flat_folders_have_no_labels() {
    let dir = tempfile::tempdir().unwrap();
    let d = deploy(dir.path(), &card([3, 1, 1], 3, 4), 3);
    class_folders(&dir.path().join("classes"), 4);
    let out = dir.path().join("p.parquet");
    let r = predict(
        &request(&d, Input::Images(dir.path().join("classes")), &out),
        "-",
    )
    .unwrap();
    assert_eq!(
        (r.counts.images, r.counts.labelled, r.counts.correct),
        (3, 3, 3)
    );
    let b = predictions(&out);
    assert_eq!(ints(&b, "label"), vec![0, 1, 2]);
    assert_eq!(ints(&b, "id"), vec![0, 1, 2]);

    for (name, rgb) in [("z.png", BLUE), ("y.png", RED)] {
        png(&dir.path().join("flat").join(name), 4, rgb);
    }
    let r = predict(
        &request(&d, Input::Images(dir.path().join("flat")), &out),
        "-",
    )
    .unwrap();
    assert_eq!((r.counts.images, r.counts.labelled), (2, 0));
    assert_eq!(r.accuracy(), None);
    let b = predictions(&out);
    assert_eq!(ints(&b, "label"), vec![-1, -1]);
    // Sorted by name: y (red) before z (blue).
    assert_eq!(ints(&b, "class"), vec![0, 2]);
    let split = b.column_by_name("split").unwrap();
    let split = split.as_any().downcast_ref::<StringArray>().unwrap();
    assert_eq!(split.value(0), UNSPLIT);
}

#[test]
fn a_class_folder_with_another_number_of_classes_than_the_network_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = deploy(dir.path(), &card([3, 1, 1], 3, 4), 3);
    png(&dir.path().join("two/a/1.png"), 4, RED);
    png(&dir.path().join("two/b/1.png"), 4, GREEN);
    let out = dir.path().join("p.parquet");
    let e = predict(
        &request(&d, Input::Images(dir.path().join("two")), &out),
        "-",
    );
    let e = e.unwrap_err().to_string();
    assert!(
        e.contains("2 class subfolders") && e.contains("3 classes"),
        "{e}"
    );
    assert!(!out.exists());
}

#[test]
fn local_only_then_cloud_only_equals_the_one_process_run() {
    let dir = tempfile::tempdir().unwrap();
    let d = deploy(dir.path(), &card([3, 1, 1], 3, 4), 3);
    let images = dir.path().join("classes");
    class_folders(&images, 4);
    png(&images.join("a/2.png"), 4, [90, 80, 70]);
    let one = dir.path().join("one.parquet");
    predict(&request(&d, Input::Images(images.clone()), &one), "-").unwrap();

    let sent = dir.path().join("sent.parquet");
    let mut local = request(&d, Input::Images(images), &sent);
    local.local_only = true;
    let r = predict(&local, "-").unwrap();
    assert_eq!(
        (r.counts.images, r.counts.labelled, r.counts.correct),
        (4, 4, 0)
    );
    // The cloud's side: no local.onnx in its folder.
    std::fs::remove_file(d.join("local.onnx")).unwrap();
    let two = dir.path().join("two.parquet");
    let r = predict(&request(&d, Input::Features(sent), &two), "-").unwrap();
    assert_eq!(r.counts.correct, 4);
    let (a, b) = (predictions(&one), predictions(&two));
    assert_eq!(a.columns(), b.columns());
}

#[test]
fn a_cloud_network_that_takes_another_shape_is_named_with_both_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let d = deploy(dir.path(), &card([3, 1, 1], 3, 4), 5);
    class_folders(&dir.path().join("classes"), 4);
    let out = dir.path().join("p.parquet");
    let e = predict(
        &request(&d, Input::Images(dir.path().join("classes")), &out),
        "-",
    );
    let e = e.unwrap_err().to_string();
    assert!(
        e.contains("local.onnx outputs features of shape 3x1x1"),
        "{e}"
    );
    assert!(e.contains("cloud.onnx takes 5x1x1"), "{e}");
    assert!(!out.exists());
}

#[test]
fn a_features_file_of_another_shape_than_cloud_onnx_is_named_with_both_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let d = deploy(dir.path(), &card([3, 1, 1], 3, 4), 3);
    let sent = dir.path().join("sent.parquet");
    let wide = card([5, 1, 1], 3, 4);
    let mut w = SentWriter::create(&sent, &wide, Provenance::new("predict", "-")).unwrap();
    w.write(Sent {
        ids: vec![0],
        labels: vec![1],
        splits: vec!["test".into()],
        features: ndarray::Array4::zeros((1, 5, 1, 1)),
    })
    .unwrap();
    w.finish().unwrap();
    let out = dir.path().join("p.parquet");
    let e = predict(&request(&d, Input::Features(sent), &out), "-");
    let e = e.unwrap_err().to_string();
    assert!(
        e.contains("sent.parquet holds features of shape 5x1x1"),
        "{e}"
    );
    assert!(e.contains("cloud.onnx takes 3x1x1"), "{e}");
    assert!(!out.exists());
}

#[test]
fn images_of_another_size_are_named_unless_the_card_resizes() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = card([3, 1, 1], 3, 4);
    let d = deploy(dir.path(), &c, 3);
    class_folders(&dir.path().join("classes"), 5);
    let out = dir.path().join("p.parquet");
    let run = request(&d, Input::Images(dir.path().join("classes")), &out);
    let e = predict(&run, "-").unwrap_err().to_string();
    assert!(
        e.contains("a/1.png") && e.contains("5x5") && e.contains("4x4"),
        "{e}"
    );
    assert!(!out.exists());
    c.local.preprocess.resize = privynet_core::manifest::ResizeMode::Bilinear;
    std::fs::write(d.join("card.json"), serde_json::to_string(&c).unwrap()).unwrap();
    assert_eq!(predict(&run, "-").unwrap().counts.correct, 3);
}

/// A CIFAR-10 batch file of one record per label (pixels of that colour).
fn cifar_batch(path: &Path, colours: &[(u8, [u8; 3])]) {
    let mut bytes = Vec::new();
    for (label, rgb) in colours {
        bytes.push(*label);
        for c in rgb {
            bytes.extend(std::iter::repeat_n(*c, 1024));
        }
    }
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn cifar_binaries_give_ingest_ids_and_splits() {
    let dir = tempfile::tempdir().unwrap();
    let d = deploy(dir.path(), &card([3, 1, 1], 3, 32), 3);
    let root = dir.path().join("cifar");
    cifar_batch(&root.join("bin/test_batch.bin"), &[(2, BLUE), (0, RED)]);
    let out = dir.path().join("p.parquet");
    let mut run = request(&d, Input::Images(root.clone()), &out);
    run.splits = vec!["test".into()];
    assert_eq!(predict(&run, "-").unwrap().counts.correct, 2);
    let b = predictions(&out);
    assert_eq!(ints(&b, "id"), vec![50_000, 50_001]);
    assert_eq!(ints(&b, "label"), vec![2, 0]);

    run.splits = vec!["train".into()];
    let e = predict(&run, "-").unwrap_err().to_string();
    assert!(
        e.contains("no data_batch_1.bin or data_batch_1.bin.gz"),
        "{e}"
    );
    run.splits = vec!["val".into()];
    let e = predict(&run, "-").unwrap_err().to_string();
    assert!(
        e.contains("--split val") && e.contains("`test` (test_batch)"),
        "{e}"
    );

    // One batch file alone: its split and ids by its name, as ingest numbers them.
    cifar_batch(&root.join("bin/data_batch_2.bin"), &[(1, GREEN)]);
    let mut run = request(&d, Input::Images(root.join("bin/data_batch_2.bin")), &out);
    run.splits = vec!["train".into()];
    predict(&run, "-").unwrap();
    assert_eq!(ints(&predictions(&out), "id"), vec![10_000]);
}

/// A card of 3 x 1 x 1 features (3 classes, 4 x 4 images) defended with `noise` (absolute
/// sigma per channel) and `bits`; codes step 7 from 3.
fn defended_card(sigma: f32, bits: u8) -> Card {
    use privynet_core::defence::{Defence, Encoding};
    let mut c = card([3, 1, 1], 3, 4);
    let defence = Defence::new(if sigma > 0.0 { 0.5 } else { 0.0 }, bits).unwrap();
    let quantised = defence.quantised();
    c.local.defence = Some(Encoding {
        defence,
        sigma: vec![sigma; 3],
        scale: if quantised { vec![7.0; 3] } else { vec![] },
        offset: if quantised { vec![3.0; 3] } else { vec![] },
    });
    c
}

/// A local-only run's features file: its float values or codes, and its metadata.
fn sent_file(path: &Path) -> (Vec<f32>, Vec<u8>, std::collections::HashMap<String, String>) {
    use arrow::array::{Array, FixedSizeListArray};
    let (schema, reader) = open_parquet(path, ArtifactKind::Features, None, 64).unwrap();
    let (mut floats, mut codes) = (vec![], vec![]);
    for b in reader {
        let b = b.unwrap();
        let f = b.column_by_name("features").unwrap();
        let f = f.as_any().downcast_ref::<FixedSizeListArray>().unwrap();
        let _ = crate::rows::append_floats(f, 0..b.num_rows(), 3, &mut floats)
            || crate::rows::append_codes(f, 0..b.num_rows(), 3, &mut codes);
    }
    (floats, codes, schema.metadata().clone().into())
}

/// Runs the local half alone on `images` with the card in `d`, into `name`.
fn local_only_run(d: &Path, images: &Path, name: &str, secret: Option<&Path>) -> PathBuf {
    let out = d.parent().unwrap().join(name);
    let mut run = request(d, Input::Images(images.to_path_buf()), &out);
    run.local_only = true;
    run.secret = secret.map(Path::to_path_buf);
    predict(&run, "-").unwrap();
    out
}

#[test]
fn a_quantising_card_changes_the_features_only_by_its_codes_and_sends_them() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("classes");
    class_folders(&images, 4);
    png(&images.join("a/2.png"), 4, [90, 80, 70]);
    let plain_deploy = deploy(&dir.path().join("plain"), &card([3, 1, 1], 3, 4), 3);
    let plain_sent = local_only_run(&plain_deploy, &images, "plain.parquet", None);
    let plain = sent_file(&plain_sent);
    let c = defended_card(0.0, 8);
    let d = deploy(dir.path(), &c, 3);
    let sent = local_only_run(&d, &images, "sent.parquet", None);
    let (floats, codes, meta) = sent_file(&sent);
    assert!(floats.is_empty(), "a quantising card sends codes");
    let e = c.local.defence.clone().unwrap();
    assert_eq!(meta["privynet.defence"], e.to_metadata());
    let mut want = vec![];
    for row in plain.0.chunks(3) {
        e.quantise(row, 1, &mut want);
    }
    assert_eq!(codes, want);
    assert_eq!(
        &codes[..3],
        &[28, 1, 4],
        "red (200, 10, 30) at step 7 from 3"
    );

    // The cloud half decodes the codes: the same predictions as one process, where the cloud
    // half gets the decoded values directly.
    let one = dir.path().join("one.parquet");
    let r = predict(&request(&d, Input::Images(images.clone()), &one), "-").unwrap();
    assert_eq!(r.counts.correct, 4);
    let two = dir.path().join("two.parquet");
    predict(&request(&d, Input::Features(sent.clone()), &two), "-").unwrap();
    assert_eq!(predictions(&one).columns(), predictions(&two).columns());

    // Features defended otherwise than the card says are refused, naming the file.
    let out = dir.path().join("refused.parquet");
    let e = predict(&request(&d, Input::Features(plain_sent), &out), "-").unwrap_err();
    assert!(
        e.to_string()
            .contains("plain.parquet: holds undefended features"),
        "{e}"
    );
    let e = predict(&request(&plain_deploy, Input::Features(sent), &out), "-").unwrap_err();
    assert!(e.to_string().contains("card.json has no defence"), "{e}");
    assert!(!out.exists());
}

#[test]
fn a_noisy_card_draws_fresh_noise_unless_given_the_secret() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("classes");
    class_folders(&images, 4);
    let d = deploy(dir.path(), &defended_card(4.0, 32), 3);
    let secret = dir.path().join("secret.key");
    std::fs::write(&secret, [3u8; privynet_core::defence::SECRET_LEN]).unwrap();
    let run =
        |name: &str, secret: Option<&Path>| sent_file(&local_only_run(&d, &images, name, secret)).0;
    let (a, b) = (run("a.parquet", None), run("b.parquet", None));
    assert_ne!(a, b, "fresh noise for every run");
    let (a, b) = (
        run("c.parquet", Some(&secret)),
        run("d.parquet", Some(&secret)),
    );
    assert_eq!(a, b, "the secret's noise again");
    let clean: Vec<f32> = [RED, GREEN, BLUE]
        .iter()
        .flat_map(|c| c.map(f32::from))
        .collect();
    assert_ne!(a, clean);
    assert!(a.iter().zip(&clean).all(|(x, y)| (x - y).abs() < 4.0 * 6.0));
    // The cloud half cannot draw the local half's noise.
    let mut cloud = request(
        &d,
        Input::Features(dir.path().join("c.parquet")),
        &dir.path().join("p.parquet"),
    );
    cloud.secret = Some(secret);
    let e = predict(&cloud, "-").unwrap_err().to_string();
    assert!(e.contains("--secret"), "{e}");
}
