//! The deploy stage as a library: reads the decision, the characterization row and the
//! training summary of the chosen topology, checks that they all describe it, writes
//! local.onnx, cloud.onnx, card.json and card.md into the output folder (each atomically).

use std::path::{Path, PathBuf};

use arrow::array::{Array, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray};
use privynet_core::card::{self, Accuracy, Card, CloudHalf, LocalHalf, Privacy, TrainedOn};
use privynet_core::io::{open_parquet, read_arrow, write_bytes_atomic};
use privynet_core::manifest::{FeatureDtype, Preprocess};
use privynet_core::{ArtifactKind, column};

use crate::NnError;
use crate::train::export;

/// A deploy run, its settings resolved against the manifest.
#[derive(Debug, Clone)]
pub struct DeployRun {
    pub decision: PathBuf,
    pub characterization: PathBuf,
    /// The chosen topology's local network (`local.onnx` from the slicer).
    pub local_network: PathBuf,
    /// The chosen topology's training: train_summary.arrow, cloud_model.bpk and
    /// cloud_config.json.
    pub train_summary: PathBuf,
    pub cloud_model: PathBuf,
    pub cloud_config: PathBuf,
    /// The training files are the final training's (`final:`), which stopped with this
    /// patience; `None`: the characterization's.
    pub final_patience: Option<usize>,
    pub input_size: u32,
    pub preprocess: Preprocess,
    pub features_dtype: FeatureDtype,
    /// The dataset's name for the card.
    pub dataset: String,
    pub output: PathBuf,
}

fn bad(path: &Path, message: String) -> NnError {
    NnError::Data {
        path: path.to_path_buf(),
        message,
    }
}

/// The first row of an Arrow IPC artifact.
fn first_row(path: &Path, kind: ArtifactKind) -> Result<RecordBatch, NnError> {
    let (_, batches) = read_arrow(path, kind)?;
    let batch = batches.into_iter().find(|b| b.num_rows() > 0);
    batch.ok_or_else(|| bad(path, "holds no row".into()))
}

fn f64_at(b: &RecordBatch, name: &str, r: usize, path: &Path) -> Result<f64, NnError> {
    Ok(column::<Float64Array>(b, name, path)?.value(r))
}

fn i64_at(b: &RecordBatch, name: &str, r: usize, path: &Path) -> Result<i64, NnError> {
    Ok(column::<Int64Array>(b, name, path)?.value(r))
}

fn str_at(b: &RecordBatch, name: &str, r: usize, path: &Path) -> Result<String, NnError> {
    Ok(column::<StringArray>(b, name, path)?.value(r).to_string())
}

/// The chosen topology and the limits it was chosen under, from decision.arrow. A decision
/// that chose nothing, or chose on predictions alone, has nothing to deploy yet.
pub fn chosen(path: &Path) -> Result<(String, serde_json::Value), NnError> {
    let b = first_row(path, ArtifactKind::Decision)?;
    let topology = column::<StringArray>(&b, "topology", path)?;
    if topology.is_null(0) {
        let status = str_at(&b, "status", 0, path)?;
        return Err(bad(
            path,
            format!("the optimizer chose no topology (status `{status}`): nothing to deploy"),
        ));
    }
    if column::<Float64Array>(&b, "measured_val_accuracy", path)?.is_null(0) {
        return Err(bad(
            path,
            "the choice has not been trained and attacked yet (predicted values only): run the pipeline to the end".into(),
        ));
    }
    let mut limits = serde_json::Map::new();
    for name in ["max_psnr", "max_ssim"] {
        let c = column::<Float64Array>(&b, name, path)?;
        limits.insert(name.into(), (!c.is_null(0)).then(|| c.value(0)).into());
    }
    for name in ["max_macs", "max_weight_bytes"] {
        let c = column::<Int64Array>(&b, name, path)?;
        limits.insert(name.into(), (!c.is_null(0)).then(|| c.value(0)).into());
    }
    Ok((topology.value(0).to_string(), limits.into()))
}

/// The characterization row of `topology`.
fn characterized(path: &Path, topology: &str) -> Result<(RecordBatch, usize), NnError> {
    let (_, reader) = open_parquet(path, ArtifactKind::Characterization, None, 1024)?;
    for batch in reader {
        let batch = batch.map_err(|e| bad(path, e.to_string()))?;
        let names = column::<StringArray>(&batch, "topology", path)?;
        if let Some(r) = (0..batch.num_rows()).find(|&r| names.value(r) == topology) {
            return Ok((batch, r));
        }
    }
    Err(bad(
        path,
        format!("has no row for the chosen topology `{topology}`"),
    ))
}

/// What the card says about the measured privacy and cost, from the characterization row.
fn privacy(b: &RecordBatch, r: usize, path: &Path) -> Result<Privacy, NnError> {
    Ok(Privacy {
        worst_attack: str_at(b, "worst_attack", r, path)?,
        psnr: f64_at(b, "psnr_worst", r, path)?,
        psnr_lo: f64_at(b, "psnr_worst_lo", r, path)?,
        psnr_hi: f64_at(b, "psnr_worst_hi", r, path)?,
        ssim: f64_at(b, "ssim_worst", r, path)?,
        ssim_lo: f64_at(b, "ssim_worst_lo", r, path)?,
        ssim_hi: f64_at(b, "ssim_worst_hi", r, path)?,
    })
}

/// The training summary's accuracy and sizes, checked to be the chosen topology's.
fn trained(path: &Path, topology: &str) -> Result<(Accuracy, i64, i64, i64), NnError> {
    let b = first_row(path, ArtifactKind::TrainSummary)?;
    let label = str_at(&b, "topology", 0, path)?;
    if label != topology {
        return Err(bad(
            path,
            format!("is the training of `{label}`, but the decision chose `{topology}`"),
        ));
    }
    let test = f64_at(&b, "final_test_accuracy", 0, path)?;
    let test_images = i64_at(&b, "test_samples", 0, path)?;
    let (test_lo, test_hi) = card::wilson(test, test_images);
    let accuracy = Accuracy {
        val: f64_at(&b, "final_val_accuracy", 0, path)?,
        test,
        test_lo,
        test_hi,
        test_images,
        characterized_test: None,
    };
    let epochs = column::<Int32Array>(&b, "epochs", path)?.value(0);
    let train = i64_at(&b, "train_samples", 0, path)?;
    let val = i64_at(&b, "val_samples", 0, path)?;
    Ok((accuracy, train, val, i64::from(epochs)))
}

/// Runs the deploy stage (see the module doc) and returns the card it wrote.
pub fn run(run: &DeployRun) -> Result<Card, NnError> {
    let (topology, limits) = chosen(&run.decision)?;
    let (row, r) = characterized(&run.characterization, &topology)?;
    let path = run.characterization.as_path();
    let (mut accuracy, train_images, val_images, epochs) = trained(&run.train_summary, &topology)?;
    if run.final_patience.is_some() {
        accuracy.characterized_test = Some(f64_at(&row, "test_accuracy", r, path)?);
    }
    std::fs::create_dir_all(&run.output).map_err(|e| NnError::save(&run.output, e))?;
    let device = burn::tensor::Device::flex();
    let (net, shape) = export::load_trained(&run.cloud_config, &run.cloud_model, &device)?;
    let cloud_path = run.output.join(card::CLOUD_ONNX);
    export::write(&net, shape, &cloud_path)?;
    let local_bytes =
        std::fs::read(&run.local_network).map_err(|e| bad(&run.local_network, e.to_string()))?;
    let local_path = run.output.join(card::LOCAL_ONNX);
    write_bytes_atomic(&local_path, &local_bytes)?;
    let elem = match run.features_dtype {
        FeatureDtype::Float32 => 4,
        FeatureDtype::Float16 => 2,
    };
    let card = Card {
        cut: str_at(&row, "cut", r, path)?,
        channels: i64_at(&row, "channels", r, path)?,
        accuracy,
        privacy: privacy(&row, r, path)?,
        limits,
        macs: i64_at(&row, "macs", r, path)?,
        weight_bytes: i64_at(&row, "weight_bytes", r, path)?,
        bytes_per_image: elem * i64_at(&row, "feature_len", r, path)?,
        local: LocalHalf {
            file: card::LOCAL_ONNX.into(),
            blake3: privynet_core::hash::hash_path(&local_path)?,
            input_size: run.input_size,
            preprocess: run.preprocess.clone(),
            features_dtype: run.features_dtype,
            features_shape: shape,
        },
        cloud: CloudHalf {
            file: card::CLOUD_ONNX.into(),
            blake3: privynet_core::hash::hash_path(&cloud_path)?,
            input: export::INPUT.into(),
            output: export::OUTPUT.into(),
            classes: net.classes(),
        },
        trained_on: TrainedOn {
            dataset: run.dataset.clone(),
            train_images,
            val_images,
            epochs,
            final_training: run.final_patience.is_some(),
            patience: run.final_patience.map(|p| p as i64),
        },
        topology,
    };
    write_card(&card, &run.output)?;
    Ok(card)
}

/// card.json, then card.md: a folder with card.json holds both ONNX files.
fn write_card(card: &Card, dir: &Path) -> Result<(), NnError> {
    let json_path = dir.join(card::CARD_JSON);
    let json = serde_json::to_string_pretty(card).map_err(|e| NnError::save(&json_path, e))?;
    write_bytes_atomic(&dir.join("card.md"), card.markdown().as_bytes())?;
    write_bytes_atomic(&json_path, json.as_bytes())?;
    Ok(())
}
