//! The deploy stage as a library: reads the decision, the characterization row and the
//! training summary of the chosen topology, checks that they all describe it, writes
//! local.onnx, cloud.onnx, card.json and card.md into the output folder (each atomically).
//! A defended topology ships its undefended base's local network; the card carries the
//! defence's encoding, which the user's side applies to that network's output.

use std::path::{Path, PathBuf};

use arrow::array::{Array, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray};
use privynet_core::card::{self, Accuracy, Card, CloudHalf, LocalHalf, Privacy, TrainedOn};
use privynet_core::defence::Encoding;
use privynet_core::io::{open_parquet, read_arrow, write_bytes_atomic};
use privynet_core::manifest::{FeatureDtype, Preprocess};
use privynet_core::{ArtifactKind, Topology, column};

use crate::NnError;
use crate::train::export;

/// A deploy run, its settings resolved against the manifest.
#[derive(Debug, Clone)]
pub struct DeployRun {
    pub decision: PathBuf,
    pub characterization: PathBuf,
    /// The chosen topology's local network (`local.onnx` from the slicer; a defended
    /// topology's is its base's, see [`local_network`]).
    pub local_network: PathBuf,
    /// The chosen topology's defence with what was fitted for it (see [`defence_of`]);
    /// `None` when its features leave as the local network gives them.
    pub defence: Option<Encoding>,
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

/// What the card says about the training, from its summary.
#[derive(Debug, Clone, PartialEq)]
struct Trained {
    accuracy: Accuracy,
    train_images: i64,
    val_images: i64,
    epochs: i64,
    /// The stored bytes per image of the features trained on, when the summary has them.
    bytes_per_image: Option<f64>,
}

/// The training summary's accuracy and sizes, checked to be the chosen topology's.
fn trained(path: &Path, topology: &str) -> Result<Trained, NnError> {
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
    let bytes = column::<Float64Array>(&b, "bytes_per_image", path)?;
    Ok(Trained {
        accuracy,
        train_images: i64_at(&b, "train_samples", 0, path)?,
        val_images: i64_at(&b, "val_samples", 0, path)?,
        epochs: i64::from(column::<Int32Array>(&b, "epochs", path)?.value(0)),
        bytes_per_image: (!bytes.is_null(0)).then(|| bytes.value(0)),
    })
}

/// Where the chosen topology's local network is under the run folder: a defended topology's
/// is its undefended base's (`<run-dir>/<base>/local.onnx`), the defence being applied to
/// that network's output on the user's side.
pub fn local_network(run_dir: &Path, topology: &Topology) -> PathBuf {
    run_dir
        .join(topology.undefended().label())
        .join(card::LOCAL_ONNX)
}

/// The chosen topology from its `topology.arrow`, checked to be the decision's `choice`.
pub fn chosen_topology(path: &Path, choice: &str) -> Result<Topology, NnError> {
    let topology = Topology::read(path)?;
    if topology.label() != choice {
        return Err(bad(
            path,
            format!(
                "is the topology `{}`, but the decision chose `{choice}`",
                topology.label()
            ),
        ));
    }
    Ok(topology)
}

/// The defence of a defended `topology`, with what was fitted for it: the encoding in its
/// features' `privynet.defence` metadata (read from the schema only). `None` for an undefended
/// topology. Features without an encoding, or with another defence's, are an error.
pub fn defence_of(topology: &Topology, features: &Path) -> Result<Option<Encoding>, NnError> {
    if topology.defence().is_none() {
        return Ok(None);
    }
    let found = crate::data::features_encoding(features)?;
    check_defence(topology, features, found).map(Some)
}

/// The encoding found in `features`, checked to be the defence `topology` names.
fn check_defence(
    topology: &Topology,
    features: &Path,
    found: Option<Encoding>,
) -> Result<Encoding, NnError> {
    let want = topology.defence();
    match found {
        Some(e) if e.defence == want => Ok(e),
        Some(e) => Err(bad(
            features,
            format!(
                "carries the defence `{}`, but the chosen topology `{}` has `{}`",
                e.defence.describe(),
                topology.label(),
                want.describe()
            ),
        )),
        None => Err(bad(
            features,
            format!(
                "has no `{}` metadata, but the chosen topology `{}` is defended ({})",
                privynet_core::defence::METADATA_KEY,
                topology.label(),
                want.describe()
            ),
        )),
    }
}

/// Runs the deploy stage (see the module doc) and returns the card it wrote.
pub fn run(run: &DeployRun) -> Result<Card, NnError> {
    let (topology, limits) = chosen(&run.decision)?;
    let (row, r) = characterized(&run.characterization, &topology)?;
    let path = run.characterization.as_path();
    let mut trained = trained(&run.train_summary, &topology)?;
    if run.final_patience.is_some() {
        trained.accuracy.characterized_test = Some(f64_at(&row, "test_accuracy", r, path)?);
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
    let feature_len = i64_at(&row, "feature_len", r, path)?;
    let card = Card {
        cut: str_at(&row, "cut", r, path)?,
        channels: i64_at(&row, "channels", r, path)?,
        accuracy: trained.accuracy,
        privacy: privacy(&row, r, path)?,
        limits,
        macs: i64_at(&row, "macs", r, path)?,
        weight_bytes: i64_at(&row, "weight_bytes", r, path)?,
        bytes_per_image: bytes_per_image(trained.bytes_per_image, run.features_dtype, feature_len),
        local: LocalHalf {
            file: card::LOCAL_ONNX.into(),
            blake3: privynet_core::hash::hash_path(&local_path)?,
            input_size: run.input_size,
            preprocess: run.preprocess.clone(),
            features_dtype: run.features_dtype,
            features_shape: shape,
            defence: run.defence.clone(),
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
            train_images: trained.train_images,
            val_images: trained.val_images,
            epochs: trained.epochs,
            final_training: run.final_patience.is_some(),
            patience: run.final_patience.map(|p| p as i64),
        },
        topology,
    };
    write_card(&card, &run.output)?;
    Ok(card)
}

/// The bytes one image's features take: as the training measured them stored (defence and
/// compression included) when its summary has them, else the raw size of the values.
fn bytes_per_image(measured: Option<f64>, dtype: FeatureDtype, feature_len: i64) -> i64 {
    let elem = match dtype {
        FeatureDtype::Float32 => 4,
        FeatureDtype::Float16 => 2,
    };
    measured.map_or(elem * feature_len, |b| b.round() as i64)
}

/// card.json, then card.md: a folder with card.json holds both ONNX files.
fn write_card(card: &Card, dir: &Path) -> Result<(), NnError> {
    let json_path = dir.join(card::CARD_JSON);
    let json = serde_json::to_string_pretty(card).map_err(|e| NnError::save(&json_path, e))?;
    write_bytes_atomic(&dir.join("card.md"), card.markdown().as_bytes())?;
    write_bytes_atomic(&json_path, json.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use privynet_core::Provenance;
    use privynet_core::defence::Defence;
    use privynet_core::io::write_artifact;

    use super::*;
    use crate::train::output::{InputSummary, SplitSizes, summary_batch};
    use crate::train::report::{EpochMetrics, TrainReport};

    fn topology(noise: f64, bits: i64) -> Topology {
        Topology {
            cut: "fire3/concat".into(),
            layer: Some("fire3".into()),
            input_size: 64,
            cut_channels: 128,
            channels: 8,
            method: "random".into(),
            height: 15,
            width: 15,
            feature_len: 8 * 15 * 15,
            macs: 1000,
            params: 100,
            weight_bytes: 400,
            noise,
            bits,
        }
    }

    fn encoding(noise: f64, bits: u8) -> Encoding {
        Encoding {
            defence: Defence::new(noise, bits).unwrap(),
            sigma: vec![0.5; 8],
            scale: vec![0.1; 8],
            offset: vec![-1.0; 8],
        }
    }

    #[test]
    fn a_defended_choice_ships_its_bases_local_network() {
        let run_dir = Path::new("/runs/r");
        let base = local_network(run_dir, &topology(0.0, 32));
        assert_eq!(base, run_dir.join("fire3-d8").join("local.onnx"));
        assert_eq!(local_network(run_dir, &topology(0.25, 8)), base);
        // An undefended choice needs no features file to say so.
        let none = defence_of(&topology(0.0, 32), Path::new("/nowhere/features.parquet"));
        assert_eq!(none.unwrap(), None);
    }

    #[test]
    fn the_topology_file_must_be_the_choices() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("topology.arrow");
        let t = topology(0.25, 8);
        let batch = ArtifactKind::Topology.batch(t.columns()).unwrap();
        let schema = batch.schema().as_ref().clone();
        let prov = Provenance::new("defend", "-");
        write_artifact(&path, ArtifactKind::Topology, schema, &prov, &[batch]).unwrap();
        assert_eq!(chosen_topology(&path, "fire3-d8-n0.25-q8").unwrap(), t);
        let e = chosen_topology(&path, "fire3-d8").unwrap_err().to_string();
        assert!(
            e.contains("is the topology `fire3-d8-n0.25-q8`, but the decision chose `fire3-d8`"),
            "{e}"
        );
    }

    #[test]
    fn the_features_encoding_must_be_the_topologys_defence() {
        let t = topology(0.25, 8);
        let f = Path::new("features.parquet");
        let e = encoding(0.25, 8);
        assert_eq!(check_defence(&t, f, Some(e.clone())).unwrap(), e);
        let other = check_defence(&t, f, Some(encoding(0.5, 8))).unwrap_err();
        assert!(
            other
                .to_string()
                .starts_with("features.parquet: carries the defence"),
            "{other}"
        );
        let missing = check_defence(&t, f, None).unwrap_err().to_string();
        assert!(
            missing.contains("has no `privynet.defence` metadata"),
            "{missing}"
        );
        assert!(
            missing.contains("`fire3-d8-n0.25-q8` is defended"),
            "{missing}"
        );
    }

    fn write_summary(path: &Path, bytes_per_image: Option<f64>) {
        let m = EpochMetrics {
            epoch: 1,
            lr: 0.1,
            train_loss: 1.0,
            train_accuracy: 0.5,
            val_loss: 1.0,
            val_accuracy: 0.6,
            test_loss: 1.0,
            test_accuracy: 0.55,
            seconds: 1.0,
        };
        let report = TrainReport {
            epochs: vec![m],
            samples_per_second: 10.0,
            seconds: 1.0,
            kept: 0,
            early_stopped: false,
        };
        let input = InputSummary {
            label: "fire3-d8-q8".into(),
            bytes_per_image,
        };
        let sizes = SplitSizes {
            train: 10,
            val: 5,
            test: 20,
        };
        let batch = summary_batch(&input, &report, sizes).unwrap();
        let schema = batch.schema().as_ref().clone();
        let prov = Provenance::new("train", "-");
        write_artifact(path, ArtifactKind::TrainSummary, schema, &prov, &[batch]).unwrap();
    }

    #[test]
    fn the_card_prefers_the_measured_bytes_per_image() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("train_summary.arrow");
        write_summary(&path, Some(1800.6));
        let t = trained(&path, "fire3-d8-q8").unwrap();
        assert_eq!(t.bytes_per_image, Some(1800.6));
        assert_eq!((t.train_images, t.val_images, t.epochs), (10, 5, 1));
        assert_eq!(t.accuracy.test_images, 20);
        assert_eq!(
            bytes_per_image(t.bytes_per_image, FeatureDtype::Float32, 1800),
            1801
        );
        write_summary(&path, None);
        let t = trained(&path, "fire3-d8-q8").unwrap();
        assert_eq!(t.bytes_per_image, None);
        // Without a measurement: the values' raw size, as before.
        assert_eq!(bytes_per_image(None, FeatureDtype::Float32, 1800), 7200);
        assert_eq!(bytes_per_image(None, FeatureDtype::Float16, 1800), 3600);
        let e = trained(&path, "fire3-d8").unwrap_err().to_string();
        assert!(e.contains("is the training of `fire3-d8-q8`"), "{e}");
    }
}
