//! The whole pipeline on the second pretrained family, EfficientNet-Lite0 as PyTorch exports
//! it, at smoke scale: the runner plans cuts by block name, the slicer folds the exported
//! constants, and every stage through the decision runs on the folded local networks. Where the
//! data mirror lacks the model (there is no official ONNX file) it fails, unless the user opted
//! out of `mirror-models`.

use privynet_e2e::*;

#[test]
fn the_smoke_pipeline_runs_on_efficientnet_lite0() {
    let Some(model) = mirrored_model("efficientnet-lite0_fp32_opset17.onnx") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let smoke = std::fs::read_to_string(root().join("pipelines/smoke.yaml")).unwrap();
    let text = smoke
        .replace("data/models/squeezenet1.1_fp16_opset7.onnx", model.to_str().unwrap())
        .replace(
            "preprocess: {channel_order: bgr, scale: 1.0, mean: [0, 0, 0], std: [1, 1, 1]}",
            "preprocess: {channel_order: rgb, scale: 1.0, mean: [127, 127, 127], std: [128, 128, 128]}",
        )
        .replace("cuts: [conv1, fire3]", "cuts: [blocks.0, blocks.3]");
    assert_ne!(text, smoke);
    let m = dir.path().join("manifest.yaml");
    let out = dir.path().join("out");
    // A privacy limit every topology meets, so a choice must exist: the test asserts one.
    std::fs::write(
        &m,
        format!(
            "{text}\nout_dir: {}\noptimize: {{limits: {{max_psnr: 99}}}}\n",
            out.display()
        ),
    )
    .unwrap();
    let o = run("privynet", &["run", m.to_str().unwrap()]);
    ok(&o);
    let text = stdout(&o);
    assert!(text.contains("0 failed, 0 blocked"), "{text}");
    for t in ["blocks.0-d8", "blocks.0-d16", "blocks.3-d8", "blocks.3-d40"] {
        assert!(
            out.join(t).join("features.parquet").is_file(),
            "{t}: {text}"
        );
        assert!(
            out.join(t).join("attack/attack_summary.arrow").is_file(),
            "{t}"
        );
    }
    let d = &read_all(
        &out.join("optimize/decision.arrow"),
        privynet_core::ArtifactKind::Decision,
    )[0];
    let status = col::<arrow::array::StringArray>(d, "status").value(0);
    assert_eq!(status, "chosen");
}
