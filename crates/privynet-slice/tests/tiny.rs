//! Slicing a tiny CNN the test builds itself: shapes, costs, the selected channels computed by
//! ONNX Runtime against a hand computation, and bad input.

mod common;

use common::*;
use ndarray::Array4;
use onnx_protobuf::Message;
use privynet_slice::{analyze, model, surgery};

fn save(dir: &std::path::Path, m: &onnx_protobuf::ModelProto) -> std::path::PathBuf {
    let p = dir.join("tiny.onnx");
    std::fs::write(&p, m.write_to_bytes().unwrap()).unwrap();
    p
}

#[test]
fn tiny_model_shapes_costs_and_values() {
    let dir = tempfile::tempdir().unwrap();
    let path = save(dir.path(), &tiny_model());
    let m = model::load(&path, None).unwrap();
    assert_eq!(m.input, "x");
    let a = analyze::analyze(&m, 6).unwrap();
    let names: Vec<&str> = a.points.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["c1", "r1", "p1", "cat"]);
    let r1 = a.find("r1").unwrap();
    assert_eq!((r1.channels, r1.height, r1.width), (3, 6, 6));
    assert_eq!(r1.macs, 3 * 6 * 6 * 2 * 9);
    assert_eq!(r1.params, 3 * 2 * 9 + 3);
    assert_eq!(r1.weight_bytes, 4 * (3 * 2 * 9 + 3));
    let cat = a.find("cat").unwrap();
    assert_eq!((cat.channels, cat.height, cat.width), (6, 3, 3));

    let local = surgery::local_network(&m, "r1", &[2, 0]).unwrap();
    let lp = dir.path().join("local.onnx");
    std::fs::write(&lp, surgery::to_bytes(&local).unwrap()).unwrap();
    let mut runner = privynet_extract::runtime::Runner::open(&lp, "features", Some(1)).unwrap();
    let x: Vec<f32> = (0..2 * 36).map(|i| ((i * 37 % 11) as f32) - 5.0).collect();
    let y = runner
        .run(
            Array4::from_shape_vec((1, 2, 6, 6), x.clone())
                .unwrap()
                .view(),
        )
        .unwrap();
    assert_eq!(y.shape(), &[1, 2, 6, 6]);
    let want = tiny_r1(&x, 6, 6);
    for (pos, ch) in [2usize, 0].iter().enumerate() {
        for p in 0..36 {
            let got = y[[0, pos, p / 6, p % 6]];
            assert!(
                (got - want[ch * 36 + p]).abs() < 1e-5,
                "channel {ch} pixel {p}: {got} vs {}",
                want[ch * 36 + p]
            );
        }
    }
}

#[test]
fn not_onnx_unknown_cut_and_bad_d() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.onnx");
    std::fs::write(&junk, b"this is not a protobuf \xff\xff\xff").unwrap();
    let e = model::load(&junk, None).unwrap_err().to_string();
    assert!(
        e.contains("junk.onnx") && e.contains("not an ONNX model"),
        "{e}"
    );

    let path = save(dir.path(), &tiny_model());
    let m = model::load(&path, None).unwrap();
    let a = analyze::analyze(&m, 6).unwrap();
    let e = a.find("r2").unwrap_err().to_string();
    assert!(e.contains("`r2`") && e.contains("`r1`"), "{e}");
    let order = privynet_slice::select::random_order(3, 1);
    assert!(privynet_slice::select::take(&order, 0, "r1").is_err());
    assert!(privynet_slice::select::take(&order, 4, "r1").is_err());
}

#[test]
fn external_data_outside_the_model_folder_is_refused() {
    use onnx_protobuf::StringStringEntryProto;
    use onnx_protobuf::tensor_proto::DataLocation;
    let dir = tempfile::tempdir().unwrap();
    let mut m = tiny_model();
    let g = m.graph.as_mut().unwrap();
    let t = &mut g.initializer[1];
    t.raw_data.clear();
    t.data_location = DataLocation::EXTERNAL.into();
    let mut loc = StringStringEntryProto::new();
    loc.key = "location".into();
    loc.value = "../../etc/passwd".into();
    t.external_data = vec![loc];
    let path = save(dir.path(), &m);
    let e = model::load(&path, None).unwrap_err().to_string();
    assert!(
        e.contains("outside the model's folder") && e.contains("../../etc/passwd"),
        "{e}"
    );

    // Inside the folder it is read.
    let t = &mut m.graph.as_mut().unwrap().initializer[1];
    t.external_data[0].value = "b.bin".into();
    std::fs::write(
        dir.path().join("b.bin"),
        [0.5f32, -0.5, 0.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let path = save(dir.path(), &m);
    let loaded = model::load(&path, None).unwrap();
    assert_eq!(loaded.proto.graph.initializer[1].raw_data.len(), 12);
}

#[test]
fn graph_without_image_input_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = tiny_model();
    m.graph.as_mut().unwrap().input = vec![value_info("x", &[None, Some(2)])];
    let path = save(dir.path(), &m);
    let e = model::load(&path, None).unwrap_err().to_string();
    assert!(e.contains("no image input"), "{e}");
}

#[test]
fn a_graph_with_a_cycle_is_refused_by_name() {
    // Relu reads the Concat's output, which is computed from the Relu's: r1 -> p1 -> cat -> r1.
    let dir = tempfile::tempdir().unwrap();
    let mut m = tiny_model();
    m.graph.as_mut().unwrap().node[1].input = vec!["cat".into()];
    let path = save(dir.path(), &m);
    let e = model::load(&path, None)
        .and_then(|m| analyze::analyze(&m, 8).map(|_| ()))
        .unwrap_err()
        .to_string();
    assert!(e.contains("cycle") && e.contains("cat"), "{e}");
}
