//! The deployed pair run as a deployment would run it: images (images.parquet, a folder of
//! PNG or JPEG images, or CIFAR-10 binaries: `source`) are preprocessed as the card says and go
//! through local.onnx (the local half); their features are rounded to what the cloud receives
//! (the card's features type), and cloud.onnx (the cloud half) classifies them into
//! predictions.parquet (`image_predictions`). A defended card's encoding is applied to the
//! local half's output before the cloud half (`defended`): noise fresh per image (or drawn from
//! the run's secret), then quantisation. The halves can also run apart, joined by the features
//! file that crosses (`sent`; integer codes for a quantising card): `--local-only` writes it,
//! and the cloud half reads it with neither images nor local.onnx. Accuracy counts the images
//! whose class is known.

mod defended;
mod halves;
mod output;
mod sent;
pub mod source;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::time::Instant;

use ndarray::ArrayView4;

use privynet_core::Provenance;
use privynet_core::card::Card;

use crate::ExtractError;
use crate::runtime::Runner;
use defended::{Defender, check_file_defence};
use halves::{Needs, as_sent, check_batch, check_cloud_takes, load_card, open_cloud, open_local};
pub use output::Counts;
use output::Predictions;
use sent::{Sent, SentWriter};
pub use source::{ImagesForm, UNKNOWN_LABEL, UNSPLIT, detect};

/// What a run reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Images in one of [`ImagesForm`]'s forms.
    Images(PathBuf),
    /// Features a local-only run wrote: the cloud half alone runs on them.
    Features(PathBuf),
}

/// A prediction run.
#[derive(Debug, Clone)]
pub struct PredictRun {
    /// The deploy folder: card.json, local.onnx, cloud.onnx.
    pub deploy: PathBuf,
    pub input: Input,
    /// Run only the local half on the images and write the features as sent to `output`.
    pub local_only: bool,
    /// The splits to predict (all of the input's when empty).
    pub splits: Vec<String>,
    /// predictions.parquet, or the features file of a local-only run.
    pub output: PathBuf,
    pub batch_size: usize,
    pub threads: Option<usize>,
    /// The run's noise secret: a defended card's noise is drawn from it as the defend stage
    /// drew it (reproducing the run's features); fresh from the operating system without it.
    pub secret: Option<PathBuf>,
}

/// What a prediction run did (`correct` is 0 for a local-only run, which classifies nothing).
#[derive(Debug, Clone, PartialEq)]
pub struct PredictReport {
    pub counts: Counts,
    pub seconds: f64,
}

impl PredictReport {
    /// The accuracy over the images with a known label; `None` when none had one.
    pub fn accuracy(&self) -> Option<f64> {
        let c = &self.counts;
        (c.labelled > 0).then(|| c.correct as f64 / c.labelled as f64)
    }
}

/// Runs the halves the request asks for (see the module doc).
pub fn predict(run: &PredictRun, manifest_label: &str) -> Result<PredictReport, ExtractError> {
    let start = Instant::now();
    let prov = Provenance::new("predict", manifest_label);
    if matches!(run.input, Input::Features(_)) && run.secret.is_some() {
        return Err(ExtractError::Usage(
            "--secret draws the local half's noise: give --images, not --features".into(),
        ));
    }
    let counts = match (&run.input, run.local_only) {
        (Input::Images(images), false) => both(run, images, prov)?,
        (Input::Images(images), true) => local_only(run, images, prov)?,
        (Input::Features(features), false) => cloud_only(run, features, prov)?,
        (Input::Features(_), true) => {
            return Err(ExtractError::Usage(
                "--local-only runs the local half on images: give --images, not --features".into(),
            ));
        }
    };
    Ok(PredictReport {
        counts,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Both halves in this process: images to predictions.
fn both(run: &PredictRun, images: &Path, mut prov: Provenance) -> Result<Counts, ExtractError> {
    let card = load_card(
        &run.deploy,
        Needs {
            local: true,
            cloud: true,
        },
    )?;
    let (mut local, shape) = open_local(&run.deploy, &card, run.threads)?;
    let cloud = open_cloud(&run.deploy, &card, run.threads)?;
    let local_path = run.deploy.join(&card.local.file);
    check_cloud_takes(&cloud.0, &cloud.1, shape, &local_path, "outputs")?;
    let form = detect(images)?;
    prov.add_input(images)?;
    prov.add_input(&local_path)?;
    prov.add_input(&cloud.1)?;
    let defender = Defender::new(&card, &run.deploy, run.secret.as_deref())?;
    let mut sink = Predictions::create(&run.output, cloud, &card, &prov)?;
    let d = defender.as_ref();
    local_half(run, &form, &card, (&mut local, d), |sent| sink.add(sent))?;
    if sink.counts.images == 0 {
        return Err(no_rows(images, &run.splits));
    }
    sink.finish()
}

/// The local half alone: images to the features the cloud would receive.
fn local_only(
    run: &PredictRun,
    images: &Path,
    mut prov: Provenance,
) -> Result<Counts, ExtractError> {
    let card = load_card(
        &run.deploy,
        Needs {
            local: true,
            cloud: false,
        },
    )?;
    let (mut local, _) = open_local(&run.deploy, &card, run.threads)?;
    let form = detect(images)?;
    prov.add_input(images)?;
    prov.add_input(&run.deploy.join(&card.local.file))?;
    let defender = Defender::new(&card, &run.deploy, run.secret.as_deref())?;
    let mut sink = SentWriter::create(&run.output, &card, prov)?;
    let mut counts = Counts::default();
    let d = defender.as_ref();
    local_half(run, &form, &card, (&mut local, d), |sent| {
        // Nothing is classified here: only the labels are counted.
        counts.add(&sent.labels, &[]);
        sink.write(sent)
    })?;
    if counts.images == 0 {
        return Err(no_rows(images, &run.splits));
    }
    sink.finish()?;
    Ok(counts)
}

/// The cloud half alone, on a features file: what the cloud's side runs, with neither images
/// nor local.onnx.
fn cloud_only(
    run: &PredictRun,
    features: &Path,
    mut prov: Provenance,
) -> Result<Counts, ExtractError> {
    let card = load_card(
        &run.deploy,
        Needs {
            local: false,
            cloud: true,
        },
    )?;
    let cloud = open_cloud(&run.deploy, &card, run.threads)?;
    let opened = sent::open(features, &run.splits, run.batch_size)?;
    check_cloud_takes(&cloud.0, &cloud.1, opened.shape, features, "holds")?;
    check_file_defence(opened.encoding.as_ref(), &card, features)?;
    // Decoded codes are the values the cloud half was trained on: rounding them would not be.
    let codes = opened
        .encoding
        .as_ref()
        .is_some_and(|e| e.defence.quantised());
    prov.add_input(features)?;
    prov.add_input(&cloud.1)?;
    let mut sink = Predictions::create(&run.output, cloud, &card, &prov)?;
    let bar = privynet_core::logging::progress(opened.total, "features");
    bar.set_message("predict (cloud half)");
    for sent in opened.batches {
        let mut sent = sent?;
        bar.inc(sent.ids.len() as u64);
        if sent.ids.is_empty() {
            continue;
        }
        // Rounding again changes nothing for features written as sent, and makes features
        // stored wider (an extract's float32 file) reach the cloud as the card says.
        if !codes {
            sent.features = as_sent(sent.features, card.local.features_dtype);
        }
        sink.add(sent)?;
    }
    bar.finish_and_clear();
    if sink.counts.images == 0 {
        return Err(no_rows(features, &run.splits));
    }
    sink.finish()
}

/// Runs the local half (the network, and the card's defence when it has one) over the images,
/// handing each batch, as sent, to `send`.
fn local_half(
    run: &PredictRun,
    form: &ImagesForm,
    card: &Card,
    (local, defender): (&mut Runner, Option<&Defender>),
    mut send: impl FnMut(Sent) -> Result<(), ExtractError>,
) -> Result<(), ExtractError> {
    let look = source::Look {
        splits: run.splits.clone(),
        preprocess: card.local.preprocess.clone(),
        size: card.local.input_size,
        batch_size: run.batch_size,
        classes: card.cloud.classes,
    };
    let (batches, total) = source::open(form, &look)?;
    let bar = privynet_core::logging::progress(total, "images");
    bar.set_message("predict");
    let size = card.local.input_size as usize;
    let local_path = run.deploy.join(&card.local.file);
    for p in batches {
        let p = p?;
        bar.inc(p.read as u64);
        if p.ids.is_empty() {
            continue;
        }
        let x = ArrayView4::from_shape((p.ids.len(), 3, size, size), &p.input)
            .expect("the input buffer has the batch's shape");
        let mut features = as_sent(local.run(x)?, card.local.features_dtype);
        check_batch(&features, card, &local_path)?;
        if let Some(d) = defender {
            d.apply(&mut features, &p.ids);
        }
        send(Sent {
            ids: p.ids,
            labels: p.labels,
            splits: p.splits,
            features,
        })?;
    }
    bar.finish_and_clear();
    Ok(())
}

/// The error when the input holds no rows of the wanted splits.
fn no_rows(input: &Path, splits: &[String]) -> ExtractError {
    ExtractError::Input {
        path: input.to_path_buf(),
        message: format!("no images in the splits [{}]", splits.join(", ")),
    }
}
