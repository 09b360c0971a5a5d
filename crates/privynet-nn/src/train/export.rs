//! The trained cloud network as ONNX (`cloud.onnx`), written with the project's own protobuf
//! types rather than an exporter: per block Conv (3x3, no bias), BatchNormalization (inference,
//! the running statistics) and Relu, then GlobalAveragePool, Flatten and Gemm. These are
//! opset-15 operators every ONNX runtime has, so the cloud half can be served anywhere. Input
//! `features` [N, C, H, W] (what the local half sends), output `logits` [N, classes].

use std::path::Path;

use burn::module::Module;
use burn::nn::PaddingConfig2d;
use burn::tensor::{Device, Tensor};
use onnx_protobuf::tensor_proto::DataType;
use onnx_protobuf::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    attribute_proto::AttributeType,
};
use privynet_slice::proto::{dim_param, dim_value, typed_value_info};
use protobuf::Message;

use super::cloud::CloudNet;
use crate::NnError;

/// The name of cloud.onnx's input: the features the local network sends.
pub const INPUT: &str = "features";
/// The name of cloud.onnx's output.
pub const OUTPUT: &str = "logits";
/// The operator set the graph uses (BatchNormalization's inference form, Gemm, Flatten).
const OPSET: i64 = 15;

/// A tensor's values as f32 in row-major order, with its dims.
fn values<const D: usize>(t: Tensor<D>) -> (Vec<i64>, Vec<f32>) {
    let dims = t.dims().iter().map(|&d| d as i64).collect();
    let data = t.into_data();
    let v = data
        .try_to_vec::<f32>()
        .expect("the cloud network's tensors are float");
    (dims, v)
}

/// An initializer named `name`.
fn initializer(name: &str, (dims, v): (Vec<i64>, Vec<f32>)) -> TensorProto {
    let mut t = TensorProto::new();
    t.name = name.to_string();
    t.data_type = DataType::FLOAT as i32;
    t.dims = dims;
    t.raw_data = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    t
}

fn ints(name: &str, v: &[i64]) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.into();
    a.type_ = AttributeType::INTS.into();
    a.ints = v.to_vec();
    a
}

fn int(name: &str, v: i64) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.into();
    a.type_ = AttributeType::INT.into();
    a.i = v;
    a
}

fn float(name: &str, v: f32) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.into();
    a.type_ = AttributeType::FLOAT.into();
    a.f = v;
    a
}

fn node(
    op: &str,
    name: &str,
    inputs: &[&str],
    output: &str,
    attrs: Vec<AttributeProto>,
) -> NodeProto {
    let mut n = NodeProto::new();
    n.op_type = op.into();
    n.name = name.into();
    n.input = inputs.iter().map(|s| s.to_string()).collect();
    n.output = vec![output.to_string()];
    n.attribute = attrs;
    n
}

/// ONNX `pads` ([top, left, bottom, right]) of a burn padding; only explicit padding is
/// exported (the cloud network uses nothing else, and `Same` depends on the input size).
fn pads(p: &PaddingConfig2d) -> Result<Vec<i64>, NnError> {
    match p {
        PaddingConfig2d::Explicit(t, l, b, r) => Ok([t, l, b, r].map(|&x| x as i64).to_vec()),
        PaddingConfig2d::Valid => Ok(vec![0; 4]),
        other => Err(NnError::Input(format!(
            "cannot export a convolution with padding {other:?} to ONNX: only explicit padding is supported"
        ))),
    }
}

/// The graph of `net` for inputs of `shape` (C, H, W).
pub fn to_onnx(net: &CloudNet, shape: [usize; 3]) -> Result<ModelProto, NnError> {
    let mut g = GraphProto::new();
    g.name = "privynet_cloud".into();
    let mut x = INPUT.to_string();
    for (i, b) in net.blocks.iter().enumerate() {
        let conv = &b.conv;
        if conv.groups != 1 || conv.dilation != [1, 1] || conv.bias.is_some() {
            return Err(NnError::Input(format!(
                "block {i}: only ungrouped, undilated convolutions without bias are exported"
            )));
        }
        let p = format!("block{i}");
        let w = format!("{p}.conv.weight");
        g.initializer
            .push(initializer(&w, values(conv.weight.val())));
        let attrs = vec![
            ints("kernel_shape", &conv.kernel_size.map(|k| k as i64)),
            ints("strides", &conv.stride.map(|s| s as i64)),
            ints("pads", &pads(&conv.padding)?),
        ];
        let conv_out = format!("{p}.conv");
        g.node
            .push(node("Conv", &conv_out, &[&x, &w], &conv_out, attrs));
        let n = &b.norm;
        let names =
            ["gamma", "beta", "running_mean", "running_var"].map(|s| format!("{p}.norm.{s}"));
        for (name, t) in names.iter().zip([
            n.gamma.val(),
            n.beta.val(),
            n.running_mean.value(),
            n.running_var.value(),
        ]) {
            g.initializer.push(initializer(name, values(t)));
        }
        let norm_out = format!("{p}.norm");
        let ins: Vec<&str> = std::iter::once(conv_out.as_str())
            .chain(names.iter().map(String::as_str))
            .collect();
        let eps = vec![float("epsilon", n.epsilon as f32)];
        g.node
            .push(node("BatchNormalization", &norm_out, &ins, &norm_out, eps));
        x = format!("{p}.relu");
        g.node.push(node("Relu", &x, &[&norm_out], &x, vec![]));
    }
    g.node
        .push(node("GlobalAveragePool", "pool", &[&x], "pool", vec![]));
    g.node.push(node(
        "Flatten",
        "flatten",
        &["pool"],
        "pooled",
        vec![int("axis", 1)],
    ));
    let (wdims, w) = values(net.head.weight.val());
    let classes = wdims[1];
    g.initializer.push(initializer("head.weight", (wdims, w)));
    let bias = match &net.head.bias {
        Some(b) => values(b.val()),
        None => (vec![classes], vec![0.0; classes as usize]),
    };
    g.initializer.push(initializer("head.bias", bias));
    // burn's Linear holds its weight as [in, out]: Gemm's B without transposition.
    let gemm = node(
        "Gemm",
        "head",
        &["pooled", "head.weight", "head.bias"],
        OUTPUT,
        vec![],
    );
    g.node.push(gemm);
    let [c, h, w] = shape.map(|d| dim_value(d as i64));
    let input = typed_value_info(INPUT, DataType::FLOAT, vec![dim_param("N"), c, h, w]);
    g.input.push(input);
    let output = typed_value_info(
        OUTPUT,
        DataType::FLOAT,
        vec![dim_param("N"), dim_value(classes)],
    );
    g.output.push(output);
    let mut m = ModelProto::new();
    m.ir_version = 8;
    m.producer_name = "privynet".into();
    m.producer_version = env!("CARGO_PKG_VERSION").into();
    let mut opset = OperatorSetIdProto::new();
    opset.version = OPSET;
    m.opset_import.push(opset);
    m.graph = Some(g).into();
    Ok(m)
}

/// Writes `net` as ONNX to `path`, atomically.
pub fn write(net: &CloudNet, shape: [usize; 3], path: &Path) -> Result<(), NnError> {
    let bytes = to_onnx(net, shape)?
        .write_to_bytes()
        .map_err(|e| NnError::save(path, e))?;
    privynet_core::io::write_bytes_atomic(path, &bytes)?;
    Ok(())
}

/// Writes `dir/cloud.onnx` from the trained network in `dir` (its cloud_config.json and
/// cloud_model.bpk, as the train stage leaves them); returns the file's path.
pub fn write_from_dir(dir: &Path) -> Result<std::path::PathBuf, NnError> {
    let device = Device::flex();
    let config = dir.join("cloud_config.json");
    let (net, shape) = load_trained(&config, &dir.join("cloud_model.bpk"), &device)?;
    let path = dir.join("cloud.onnx");
    write(&net, shape, &path)?;
    Ok(path)
}

/// A trained network (`cloud_model.bpk`, built as its `cloud_config.json` says), and its
/// input shape.
pub fn load_trained(
    config_path: &Path,
    model_path: &Path,
    device: &Device,
) -> Result<(CloudNet, [usize; 3]), NnError> {
    let config_path = config_path.to_path_buf();
    let text = std::fs::read_to_string(&config_path).map_err(|e| NnError::Data {
        path: config_path.clone(),
        message: e.to_string(),
    })?;
    let bad = |message: String| NnError::Data {
        path: config_path.clone(),
        message,
    };
    let config: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
    let shape: [usize; 3] = serde_json::from_value(config["input_shape"].clone())
        .map_err(|e| bad(format!("`input_shape`: {e}")))?;
    let train: privynet_core::manifest::TrainParams =
        serde_json::from_value(config["train"].clone())
            .map_err(|e| bad(format!("`train`: {e}")))?;
    let net = CloudNet::new(shape, train.width, train.depth, train.classes, device)
        .try_load_file(model_path)
        .map_err(|e| NnError::Data {
            path: model_path.to_path_buf(),
            message: format!("not a cloud network of this layout: {e}"),
        })?;
    Ok((net, shape))
}

#[cfg(test)]
mod tests {
    use burn::module::{Param, RunningState};
    use burn::tensor::Distribution;

    use super::*;

    /// A cloud network whose batch norms are far from the identity (scales, shifts and running
    /// statistics all random), so an export that dropped or misordered any of them fails.
    fn perturbed(shape: [usize; 3], device: &Device) -> CloudNet {
        let mut net = CloudNet::new(shape, 8, 2, 10, device);
        for b in &mut net.blocks {
            let c = b.norm.gamma.dims()[0];
            let rnd = |lo, hi| Tensor::<1>::random([c], Distribution::Uniform(lo, hi), device);
            b.norm.gamma = Param::from_tensor(rnd(0.5, 1.5));
            b.norm.beta = Param::from_tensor(rnd(-0.5, 0.5));
            b.norm.running_mean = RunningState::new(rnd(-0.3, 0.3));
            b.norm.running_var = RunningState::new(rnd(0.5, 2.0));
        }
        net
    }

    #[test]
    fn onnx_runtime_on_cloud_onnx_equals_burn() {
        let device = Device::flex();
        // A 7x7 map: the second stage downsamples (stride 2, 7 -> 4), the third does not.
        let shape = [16, 7, 7];
        let net = perturbed(shape, &device);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cloud.onnx");
        write(&net, shape, &path).unwrap();
        let x = Tensor::<4>::random([5, 16, 7, 7], Distribution::Normal(0.0, 1.0), &device);
        let want = net
            .forward(x.clone())
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        let input = x.into_data().try_to_vec::<f32>().unwrap();
        let input = ndarray::Array4::from_shape_vec((5, 16, 7, 7), input).unwrap();
        let mut ort = privynet_extract::runtime::Runner::open(&path, OUTPUT, Some(1)).unwrap();
        let out = ort.run_all(input.view()).unwrap();
        let got = &out[OUTPUT];
        assert_eq!(got.shape(), [5, 10]);
        let scale = want.iter().fold(1f32, |a, &b| a.max(b.abs()));
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                (g - w).abs() <= 1e-5 * scale,
                "logit {i}: ONNX Runtime {g}, burn {w}"
            );
        }
        // The logits are not all alike (a constant network would pass the comparison).
        assert!(want.iter().any(|&v| (v - want[0]).abs() > 1e-3), "{want:?}");
    }

    #[test]
    fn the_graph_is_conv_norm_relu_per_block_then_pool_and_head() {
        let device = Device::flex();
        let net = CloudNet::new([4, 3, 3], 8, 1, 10, &device);
        let m = to_onnx(&net, [4, 3, 3]).unwrap();
        let ops: Vec<&str> = m.graph.node.iter().map(|n| n.op_type.as_str()).collect();
        let block = ["Conv", "BatchNormalization", "Relu"];
        let want: Vec<&str> = block
            .repeat(3)
            .into_iter()
            .chain(["GlobalAveragePool", "Flatten", "Gemm"])
            .collect();
        assert_eq!(ops, want);
        assert_eq!(m.graph.input[0].name, INPUT);
        assert_eq!(m.graph.output[0].name, OUTPUT);
    }
}
