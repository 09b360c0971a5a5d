//! The defend stage: a defended topology's features made from its undefended base's, on the
//! user's machine, before they are written to the cloud zone. The encoding is fitted on the
//! base's `train` rows (each channel's std for the noise; the range of the noisy rows for the
//! quantisation) or reused from an already defended file; then every row of every split gets
//! noise drawn from the secret, the defended topology's label and the image id, and is written
//! as integer codes (quantised) or as values in the base's float type. The base is read once
//! per pass, batch by batch: up to three passes, never the whole file in memory.

use std::path::{Path, PathBuf};
use std::time::Instant;

use arrow::array::{FixedSizeListArray, Int32Array, Int64Array, RecordBatch, StringArray};

use privynet_core::defence::{
    ChannelStats, Defence, Encoding, METADATA_KEY, SECRET_LEN, image_rng, read_secret,
};
use privynet_core::io::{
    ArtifactWriter, dataset_parts, open_parquet_splits, read_schema, stored_bytes_per_row,
    write_artifact,
};
use privynet_core::manifest::FeatureDtype;
use privynet_core::{ArtifactKind, Provenance, Topology, column};

use crate::ExtractError;
use crate::extract::{features_batch, features_schema};
use crate::rows::{Stored, append_floats, codes_batch, codes_schema, stored};

/// The split the encoding is fitted on.
const FIT_SPLIT: &str = "train";

/// Rows per batch read from the base.
const BATCH_ROWS: usize = 1024;

/// An input file: the copy read here, and its place as given (a path or an object URL), which
/// messages name.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub local: PathBuf,
    pub given: PathBuf,
}

impl Fetched {
    /// A local file, read where it is given.
    pub fn local(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        Fetched {
            local: path.clone(),
            given: path,
        }
    }
}

/// A defend run; every path is local (the binary fetches inputs and stages outputs).
#[derive(Debug, Clone)]
pub struct DefendRequest {
    /// The undefended base's features.parquet (a file or a folder of parts).
    pub features: Fetched,
    /// The base's topology.arrow.
    pub topology: Fetched,
    /// The noise secret (`secret.key`, local zone, [`SECRET_LEN`] bytes).
    pub secret: PathBuf,
    pub defence: Defence,
    /// A defended features file whose encoding is reused instead of fitting one.
    pub encoding_from: Option<Fetched>,
    /// The defended features file to write.
    pub output: PathBuf,
    /// Where the defended topology.arrow goes, if anywhere.
    pub topology_output: Option<PathBuf>,
}

/// What a defend run did.
#[derive(Debug, Clone)]
pub struct DefendReport {
    pub rows: usize,
    /// The defended topology (the base's with the defence's noise and bits).
    pub topology: Topology,
    pub encoding: Encoding,
    /// Whether the encoding was reused from `--encoding-from` rather than fitted.
    pub reused: bool,
    /// Stored bytes per row of the written features (what one image costs to send).
    pub bytes_per_image: f64,
    pub seconds: f64,
}

/// Writes the defended features (and topology, if asked): see the module doc. Everything is
/// checked (the base, the secret, a reused encoding) before any output is created.
pub fn defend(req: &DefendRequest, manifest_label: &str) -> Result<DefendReport, ExtractError> {
    let start = Instant::now();
    let base = Base::open(&req.features, &req.topology)?;
    let topology = base.topology.with_defence(req.defence);
    let label = topology.label();
    let secret = read_secret(&req.secret)?;
    let reused = req
        .encoding_from
        .as_ref()
        .map(|f| reused_encoding(f, req.defence, base.shape[0]))
        .transpose()?;
    let is_reused = reused.is_some();
    let encoding = match reused {
        Some(e) => e,
        None => fit(&base, req.defence, &secret, &label)?,
    };
    let prov = features_provenance(req, &base, &topology, &encoding, manifest_label)?;
    let noise = Noise {
        encoding: &encoding,
        secret: &secret,
        label: &label,
        plane: base.plane(),
    };
    let rows = write_features(&base, &noise, &req.output, &prov)?;
    if let Some(path) = &req.topology_output {
        write_topology(path, &topology, req, manifest_label)?;
    }
    let report = DefendReport {
        rows,
        bytes_per_image: stored_bytes_per_row(&req.output)?,
        topology,
        encoding,
        reused: is_reused,
        seconds: start.elapsed().as_secs_f64(),
    };
    tracing::info!(
        rows,
        topology = label,
        defence = report.encoding.defence.describe(),
        encoding = if is_reused {
            "reused"
        } else {
            "fitted on train"
        },
        bytes_per_image = format!("{:.0}", report.bytes_per_image),
        seconds = format!("{:.1}", report.seconds),
        "wrote the defended features"
    );
    Ok(report)
}

/// The encoding of the defended features file `from`, checked to be for `defence` and for
/// `channels` channels: the final training's features must be made with the encoding that was
/// characterized, never a refit one.
pub fn reused_encoding(
    from: &Fetched,
    defence: Defence,
    channels: usize,
) -> Result<Encoding, ExtractError> {
    let bad = |message: String| ExtractError::Input {
        path: from.given.clone(),
        message,
    };
    let parts = dataset_parts(&from.local)?;
    let schema = read_schema(&parts[0])?;
    let encoding = Encoding::from_metadata(schema.metadata().get(METADATA_KEY))
        .map_err(|m| bad(format!("--encoding-from: {m}")))?
        .ok_or_else(|| {
            bad(format!(
                "--encoding-from names a file with no `{METADATA_KEY}` metadata: it is not defended, so it has no encoding to reuse"
            ))
        })?;
    if encoding.defence != defence {
        return Err(bad(format!(
            "--encoding-from names features defended with noise {} and {} bits, but --noise {} --bits {} asks for another defence; reuse the encoding of features made with the same defence",
            encoding.defence.noise, encoding.defence.bits, defence.noise, defence.bits
        )));
    }
    let fitted = if defence.quantised() {
        [&encoding.sigma, &encoding.scale, &encoding.offset]
            .iter()
            .all(|v| v.len() == channels)
    } else {
        encoding.sigma.len() == channels
    };
    if !fitted {
        return Err(bad(format!(
            "--encoding-from names features whose encoding is for {} channels, but the features to defend have {channels}",
            encoding.sigma.len()
        )));
    }
    Ok(encoding)
}

/// The undefended features being defended: their parts, topology, shape and float type.
#[derive(Debug)]
struct Base {
    parts: Vec<PathBuf>,
    /// The features' place as given, for messages.
    given: PathBuf,
    topology: Topology,
    /// C, H, W.
    shape: [usize; 3],
    dtype: FeatureDtype,
    /// The `privynet.preprocess` metadata, carried over.
    preprocess: Option<String>,
}

impl Base {
    /// Opens and checks the base: an undefended topology, float features of its shape, made
    /// for it (by the features' own topology metadata).
    fn open(features: &Fetched, topology: &Fetched) -> Result<Base, ExtractError> {
        let t = Topology::read(&topology.local)?;
        if !t.defence().is_none() {
            return Err(ExtractError::Input {
                path: topology.given.clone(),
                message: format!(
                    "is the defended topology {}; defend takes the undefended base's topology.arrow",
                    t.label()
                ),
            });
        }
        let bad = |message: String| ExtractError::Input {
            path: features.given.clone(),
            message,
        };
        let parts = dataset_parts(&features.local)?;
        let schema = read_schema(&parts[0])?;
        let meta = schema.metadata();
        let dtype = match (stored(&schema), meta.contains_key(METADATA_KEY)) {
            (Some(Stored::Float(dtype)), false) => dtype,
            (Some(Stored::Codes), _) | (_, true) => {
                return Err(bad(
                    "holds defended features; defend takes the undefended base's features.parquet"
                        .into(),
                ));
            }
            (None, _) => return Err(bad("holds no float32 or float16 features".into())),
        };
        let shape = [t.channels, t.height, t.width].map(|d| d as usize);
        if let Some(Ok(Some(made_for))) = meta
            .get("privynet.topology")
            .map(|j| serde_json::from_str::<Option<Topology>>(j))
            && let Some(m) = made_for.mismatch(&t)
        {
            return Err(bad(format!(
                "were made for topology {}, not {} (--topology): {m}",
                made_for.label(),
                t.label()
            )));
        }
        Ok(Base {
            parts,
            given: features.given.clone(),
            topology: t,
            shape,
            dtype,
            preprocess: meta.get("privynet.preprocess").cloned(),
        })
    }

    fn plane(&self) -> usize {
        self.shape[1] * self.shape[2]
    }

    fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// The rows of a batch of `part` in `split` (all when `None`), values as f32.
    fn rows(
        &self,
        b: &RecordBatch,
        part: &Path,
        split: Option<&str>,
    ) -> Result<Rows, ExtractError> {
        let bad = |message: String| ExtractError::Input {
            path: part.to_path_buf(),
            message,
        };
        let list = column::<FixedSizeListArray>(b, "features", part)?;
        let len = self.len();
        if list.value_length() as usize != len {
            return Err(bad(format!(
                "rows hold {} values, but the topology {} has {len} ({:?}, C x H x W)",
                list.value_length(),
                self.topology.label(),
                self.shape
            )));
        }
        let ids = column::<Int64Array>(b, "id", part)?;
        let labels = column::<Int32Array>(b, "label", part)?;
        let splits = column::<StringArray>(b, "split", part)?;
        let keep: Vec<usize> = (0..b.num_rows())
            .filter(|&r| split.is_none_or(|s| splits.value(r) == s))
            .collect();
        let mut values = Vec::with_capacity(keep.len() * len);
        if !append_floats(list, keep.iter().copied(), len, &mut values) {
            return Err(bad("holds no float32 or float16 features".into()));
        }
        Ok(Rows {
            ids: keep.iter().map(|&r| ids.value(r)).collect(),
            labels: keep.iter().map(|&r| labels.value(r)).collect(),
            splits: keep.iter().map(|&r| splits.value(r).to_string()).collect(),
            values,
        })
    }

    /// Calls `f` with each batch of the rows in `split` (all when `None`), in the file's order
    /// (split by split, as written). Returns the number of rows seen.
    fn each_batch(
        &self,
        split: Option<&str>,
        message: &'static str,
        mut f: impl FnMut(Rows) -> Result<(), ExtractError>,
    ) -> Result<usize, ExtractError> {
        let wanted = split.map(|s| vec![s.to_string()]);
        let bar = privynet_core::logging::progress(0, "images");
        bar.set_message(message);
        let mut seen = 0;
        for part in &self.parts {
            let (_, reader, total) = open_parquet_splits(
                part,
                ArtifactKind::Features,
                None,
                BATCH_ROWS,
                wanted.as_deref(),
            )?;
            bar.inc_length(total);
            for b in reader {
                let b = b.map_err(|e| ExtractError::Input {
                    path: part.clone(),
                    message: e.to_string(),
                })?;
                bar.inc(b.num_rows() as u64);
                let rows = self.rows(&b, part, split)?;
                if !rows.ids.is_empty() {
                    seen += rows.ids.len();
                    f(rows)?;
                }
            }
        }
        bar.finish_and_clear();
        Ok(seen)
    }
}

/// One batch of the base's rows; `values` holds rows x len values.
struct Rows {
    ids: Vec<i64>,
    labels: Vec<i32>,
    splits: Vec<String>,
    values: Vec<f32>,
}

/// The noise of one defended topology: the encoding's sigma, drawn per image from the secret.
struct Noise<'a> {
    encoding: &'a Encoding,
    secret: &'a [u8; SECRET_LEN],
    label: &'a str,
    plane: usize,
}

impl Noise<'_> {
    /// Adds each row's noise in place, drawn from `image_rng(secret, label, id)`.
    fn add(&self, rows: &mut Rows) {
        if self.encoding.defence.noise == 0.0 {
            return;
        }
        let len = rows.values.len() / rows.ids.len().max(1);
        for (row, &id) in rows.values.chunks_mut(len).zip(&rows.ids) {
            let mut rng = image_rng(self.secret, self.label, id);
            self.encoding.add_noise(row, self.plane, &mut rng);
        }
    }
}

/// Fits the encoding on the train rows: sigma from each channel's std, then (quantised) scale
/// and offset from the range of the noisy rows, the noise drawn as the write pass draws it.
fn fit(
    base: &Base,
    defence: Defence,
    secret: &[u8; SECRET_LEN],
    label: &str,
) -> Result<Encoding, ExtractError> {
    let (channels, plane, len) = (base.shape[0], base.plane(), base.len());
    let no_train = || ExtractError::Input {
        path: base.given.clone(),
        message: format!("has no `{FIT_SPLIT}` rows to fit the defence on"),
    };
    let mut stats = ChannelStats::new(channels, plane);
    if defence.noise > 0.0 {
        let seen = base.each_batch(Some(FIT_SPLIT), "defend: channel std", |r| {
            r.values.chunks(len).for_each(|row| stats.add(row));
            Ok(())
        })?;
        if seen == 0 {
            return Err(no_train());
        }
    }
    let mut encoding = Encoding::with_noise(defence, &stats);
    if defence.quantised() {
        let mut noisy = ChannelStats::new(channels, plane);
        let noise = Noise {
            encoding: &encoding,
            secret,
            label,
            plane,
        };
        let seen = base.each_batch(Some(FIT_SPLIT), "defend: code range", |mut r| {
            noise.add(&mut r);
            r.values.chunks(len).for_each(|row| noisy.add(row));
            Ok(())
        })?;
        if seen == 0 {
            return Err(no_train());
        }
        encoding.fit_quantisation(&noisy);
    }
    Ok(encoding)
}

/// The defended features' provenance: the base's shape and preprocessing, the defended
/// topology and the encoding; the defence as parameters. Nothing of the secret.
fn features_provenance(
    req: &DefendRequest,
    base: &Base,
    topology: &Topology,
    encoding: &Encoding,
    manifest_label: &str,
) -> Result<Provenance, ExtractError> {
    let mut p = Provenance::new("defend", manifest_label).with_params(&params(req));
    p.add_input(&req.features.local)?;
    p.add_input(&req.topology.local)?;
    if let Some(f) = &req.encoding_from {
        p.add_input(&f.local)?;
    }
    if let Some(pre) = &base.preprocess {
        p.set("preprocess", pre.clone());
    }
    let [c, h, w] = base.shape;
    p.set("feature_shape", format!("{c},{h},{w}"));
    p.set(
        "topology",
        serde_json::to_string(topology).expect("a topology should serialise"),
    );
    let key = METADATA_KEY
        .strip_prefix("privynet.")
        .expect("the defence key is a privynet key");
    p.set(key, encoding.to_metadata());
    Ok(p)
}

/// The run's parameters as provenance records them: the defence and where a reused encoding
/// came from (never the secret, nor its place).
fn params(req: &DefendRequest) -> serde_json::Value {
    serde_json::json!({
        "noise": req.defence.noise,
        "bits": req.defence.bits,
        "encoding_from": req.encoding_from.as_ref().map(|f| f.given.display().to_string()),
    })
}

/// Writes every row of every split, noisy, as codes (quantised) or in the base's float type.
fn write_features(
    base: &Base,
    noise: &Noise,
    output: &Path,
    prov: &Provenance,
) -> Result<usize, ExtractError> {
    let (len, plane) = (base.len(), base.plane());
    let quantised = noise.encoding.defence.quantised();
    let schema = if quantised {
        codes_schema(len)
    } else {
        features_schema(len, base.dtype)
    };
    let mut w = ArtifactWriter::create(output, ArtifactKind::Features, schema, prov)?;
    base.each_batch(None, "defend", |mut r| {
        noise.add(&mut r);
        let out = if quantised {
            let mut codes = Vec::with_capacity(r.values.len());
            for row in r.values.chunks(len) {
                noise.encoding.quantise(row, plane, &mut codes);
            }
            codes_batch(w.schema(), r.ids, r.labels, r.splits, codes, len)
        } else {
            features_batch(
                w.schema(),
                r.ids,
                r.labels,
                r.splits,
                r.values,
                len,
                base.dtype,
            )
        };
        Ok(w.write(&out)?)
    })?;
    Ok(w.finish()?)
}

/// Writes the defended topology.arrow.
fn write_topology(
    path: &Path,
    topology: &Topology,
    req: &DefendRequest,
    manifest_label: &str,
) -> Result<(), ExtractError> {
    let mut p = Provenance::new("defend", manifest_label).with_params(&params(req));
    p.add_input(&req.topology.local)?;
    let b = ArtifactKind::Topology.batch(topology.columns())?;
    write_artifact(
        path,
        ArtifactKind::Topology,
        b.schema().as_ref().clone(),
        &p,
        &[b],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests;
