//! The deployed pair run as a deployment would run it: images are preprocessed as the card
//! says, go through local.onnx (the local half), their features are stored as the cloud
//! receives them (the card's features type), and cloud.onnx (the cloud half) classifies them.
//! Writes predictions.parquet (`image_predictions`) and returns the accuracy on the images
//! whose class is known.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{
    FixedSizeListArray, Float32Array, Int32Array, Int64Array, RecordBatch, StringArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use ndarray::{Array2, ArrayView4, Ix2};

use privynet_core::card::Card;
use privynet_core::io::{ArtifactWriter, open_parquet_splits};
use privynet_core::manifest::FeatureDtype;
use privynet_core::{ArtifactKind, Provenance};

use crate::ExtractError;
use crate::extract::{ExtractConfig, prepare};
use crate::runtime::Runner;

/// A prediction run.
#[derive(Debug, Clone)]
pub struct PredictRun {
    /// The deploy folder: card.json, local.onnx, cloud.onnx.
    pub deploy: PathBuf,
    pub images: PathBuf,
    /// The splits to predict (all of the file's when empty).
    pub splits: Vec<String>,
    pub output: PathBuf,
    pub batch_size: usize,
    pub threads: Option<usize>,
}

/// What a prediction run did.
#[derive(Debug, Clone, PartialEq)]
pub struct PredictReport {
    pub images: usize,
    pub correct: usize,
    pub seconds: f64,
}

impl PredictReport {
    pub fn accuracy(&self) -> f64 {
        self.correct as f64 / self.images.max(1) as f64
    }
}

/// Features as the cloud receives them: rounded through float16 when the card says so, as the
/// cloud network was trained on them.
fn as_sent(mut y: ndarray::Array4<f32>, dtype: FeatureDtype) -> ndarray::Array4<f32> {
    if dtype == FeatureDtype::Float16 {
        y.mapv_inplace(|v| half::f16::from_f32(v).to_f32());
    }
    y
}

/// Softmax of each row of logits.
fn softmax(logits: &Array2<f32>) -> Array2<f32> {
    let mut p = logits.clone();
    for mut row in p.rows_mut() {
        let max = row.fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        row.mapv_inplace(|v| (v - max).exp());
        let sum = row.sum();
        row.mapv_inplace(|v| v / sum);
    }
    p
}

/// The schema of predictions.parquet for `classes` classes.
fn schema(classes: usize) -> Schema {
    let item = Arc::new(Field::new("item", DataType::Float32, false));
    Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("split", DataType::Utf8, false),
        Field::new("label", DataType::Int32, false),
        Field::new("class", DataType::Int32, false),
        Field::new("confidence", DataType::Float32, false),
        Field::new(
            "probabilities",
            DataType::FixedSizeList(item, classes as i32),
            false,
        ),
    ])
}

/// The predictions table of one batch, and how many of its predictions are right.
fn batch(
    kind_schema: SchemaRef,
    ids: Vec<i64>,
    splits: Vec<String>,
    labels: Vec<i32>,
    probs: &Array2<f32>,
) -> (RecordBatch, usize) {
    let classes: Vec<i32> = probs
        .rows()
        .into_iter()
        .map(|r| {
            let best = r.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1));
            best.map_or(0, |(i, _)| i as i32)
        })
        .collect();
    let correct = classes.iter().zip(&labels).filter(|(c, l)| c == l).count();
    let confidence: Vec<f32> = probs
        .rows()
        .into_iter()
        .zip(&classes)
        .map(|(r, &c)| r[c as usize])
        .collect();
    let list = FixedSizeListArray::try_new(
        Arc::new(Field::new("item", DataType::Float32, false)),
        probs.ncols() as i32,
        Arc::new(Float32Array::from_iter_values(probs.iter().copied())),
        None,
    )
    .expect("the probabilities hold rows * classes values");
    let columns: Vec<arrow::array::ArrayRef> = vec![
        Arc::new(Int64Array::from(ids)),
        Arc::new(StringArray::from(splits)),
        Arc::new(Int32Array::from(labels)),
        Arc::new(Int32Array::from(classes)),
        Arc::new(Float32Array::from(confidence)),
        Arc::new(list),
    ];
    let b = RecordBatch::try_new(kind_schema, columns)
        .expect("columns match the image_predictions schema");
    (b, correct)
}

/// Opens the two halves and checks that they fit together as the card says.
fn open_halves(run: &PredictRun, card: &Card) -> Result<(Runner, Runner), ExtractError> {
    let local = Runner::open(
        &run.deploy.join(&card.local.file),
        crate::FEATURES_OUTPUT,
        run.threads,
    )?;
    let cloud = Runner::open(
        &run.deploy.join(&card.cloud.file),
        &card.cloud.output,
        run.threads,
    )?;
    Ok((local, cloud))
}

/// The cloud half's logits [N, classes] for features [N, C, H, W], checked against the card.
fn classify(
    cloud: &mut Runner,
    features: ndarray::Array4<f32>,
    card: &Card,
    path: &Path,
) -> Result<Array2<f32>, ExtractError> {
    let shape = [
        features.shape()[1],
        features.shape()[2],
        features.shape()[3],
    ];
    if shape != card.local.features_shape {
        return Err(ExtractError::Model {
            path: path.to_path_buf(),
            message: format!(
                "the local network outputs features of shape {shape:?}, but the card says {:?}",
                card.local.features_shape
            ),
        });
    }
    let out = cloud.run_all(features.view())?;
    let logits = out
        .get(&card.cloud.output)
        .cloned()
        .ok_or_else(|| ExtractError::Model {
            path: path.to_path_buf(),
            message: format!("has no output `{}`", card.cloud.output),
        })?;
    logits
        .into_dimensionality::<Ix2>()
        .map_err(|e| ExtractError::Model {
            path: path.to_path_buf(),
            message: format!("output `{}` is not [N, classes]: {e}", card.cloud.output),
        })
}

/// Runs the pair over the images (see the module doc).
pub fn predict(run: &PredictRun, manifest_label: &str) -> Result<PredictReport, ExtractError> {
    let start = Instant::now();
    let card = Card::load(&run.deploy)?;
    let (mut local, mut cloud) = open_halves(run, &card)?;
    let cloud_path = run.deploy.join(&card.cloud.file);
    let splits = (!run.splits.is_empty()).then_some(run.splits.as_slice());
    let (_, reader, total) = open_parquet_splits(
        &run.images,
        ArtifactKind::Images,
        Some(&["id", "label", "split", "height", "width", "pixels"]),
        run.batch_size,
        splits,
    )?;
    let cfg = ExtractConfig {
        images: run.images.clone(),
        model: run.deploy.join(&card.local.file),
        output: run.output.clone(),
        topology: None,
        preprocess: card.local.preprocess.clone(),
        input_size: card.local.input_size,
        splits: run.splits.clone(),
        batch_size: run.batch_size,
        dtype: card.local.features_dtype,
        threads: run.threads,
        shard: None,
    };
    let mut prov = Provenance::new("predict", manifest_label);
    prov.add_input(&run.images)?;
    prov.add_input(&run.deploy.join(&card.local.file))?;
    prov.add_input(&cloud_path)?;
    let mut writer = ArtifactWriter::create(
        &run.output,
        ArtifactKind::ImagePredictions,
        schema(card.cloud.classes),
        &prov,
    )?;
    let bar = privynet_core::logging::progress(total, "images");
    bar.set_message("predict");
    let size = card.local.input_size as usize;
    let mut report = PredictReport {
        images: 0,
        correct: 0,
        seconds: 0.0,
    };
    for b in reader {
        let p = prepare(&cfg, b)?;
        bar.inc(p.read as u64);
        if p.ids.is_empty() {
            continue;
        }
        let x = ArrayView4::from_shape((p.ids.len(), 3, size, size), &p.input)
            .expect("the input buffer has the batch's shape");
        let features = as_sent(local.run(x)?, card.local.features_dtype);
        let probs = softmax(&classify(&mut cloud, features, &card, &cloud_path)?);
        let (out, correct) = batch(writer.schema(), p.ids, p.splits, p.labels, &probs);
        report.images += out.num_rows();
        report.correct += correct;
        writer.write(&out)?;
    }
    bar.finish_and_clear();
    if report.images == 0 {
        return Err(ExtractError::Input {
            path: run.images.clone(),
            message: format!("no images in the splits [{}]", run.splits.join(", ")),
        });
    }
    writer.finish()?;
    report.seconds = start.elapsed().as_secs_f64();
    Ok(report)
}
