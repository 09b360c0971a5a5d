//! The slice stage from its flags and the manifest ([`Flags`], [`model_input`],
//! [`Request::resolve`]) to its three files: the local network (`local.onnx`), the
//! cloud-visible `topology.arrow` and the LOCAL `selection.arrow`; and the cut-point listing.
//! The binary (in privynet-extract, for its ONNX Runtime scoring) adds object storage.

use std::path::{Path, PathBuf};

use privynet_core::Provenance;
use privynet_core::manifest::{
    AllKeyword, ChannelCount, Manifest, Preprocess, SelectionMethod, SliceParams,
};

use crate::analyze::{Analysis, CutPoint};
use crate::{SliceError, analyze, model, select, surgery, tables};

/// The binary's flags, each overriding its manifest key when given.
#[derive(Debug, Clone, Default)]
pub struct Flags {
    pub model: Option<PathBuf>,
    pub input_size: Option<u32>,
    pub input: Option<String>,
    pub cut: Option<String>,
    /// D, or `all`.
    pub channels: Option<String>,
    pub method: Option<SelectionMethod>,
    pub seed: Option<u64>,
    pub images: Option<PathBuf>,
    pub output: Option<PathBuf>,
    pub topology_output: Option<PathBuf>,
}

/// The model's image input: its name when the model has several, and its square size
/// (checked), from the flags and the manifest. Both slicing and the listing need it.
pub fn model_input(
    flags: &Flags,
    manifest: Option<&Manifest>,
) -> Result<(Option<String>, u32), SliceError> {
    let size = flags
        .input_size
        .or(manifest.map(|m| m.model.input_size))
        .ok_or_else(|| {
            SliceError::Usage("no input size: pass --input-size or --manifest".into())
        })?;
    privynet_core::manifest::check_input_size(size).map_err(SliceError::Usage)?;
    let name = flags
        .input
        .clone()
        .or_else(|| manifest.and_then(|m| m.model.input.clone()));
    Ok((name, size))
}

/// One topology to slice, every value resolved from flags and the manifest.
#[derive(Debug, Clone)]
pub struct Request {
    pub model: PathBuf,
    /// The image input's name, when the model has several.
    pub input: Option<String>,
    pub input_size: u32,
    /// A layer name (`conv1`) or an ONNX tensor name.
    pub cut: String,
    pub channels: ChannelCount,
    pub method: SelectionMethod,
    pub seed: u64,
    pub params: SliceParams,
    /// The labelled images `fisher-random` scores channels on, and their preprocessing.
    pub images: Option<PathBuf>,
    pub preprocess: Preprocess,
    /// The folder of local.onnx and selection.arrow (the local zone).
    pub output: PathBuf,
    /// Where topology.arrow goes (the cloud zone); by default in `output`.
    pub topology_output: Option<PathBuf>,
    /// The manifest's name for provenance (`-` when run from flags).
    pub manifest_label: String,
}

impl Request {
    /// The topology to slice, from the flags and the manifest (flags win); `input` and
    /// `input_size` come from [`model_input`].
    pub fn resolve(
        flags: &Flags,
        manifest: Option<&Manifest>,
        (input, input_size): (Option<String>, u32),
        manifest_label: String,
    ) -> Result<Self, SliceError> {
        let usage = |m: &str| SliceError::Usage(m.to_string());
        let model = flags
            .model
            .clone()
            .or_else(|| manifest.map(|m| m.model.path.clone()))
            .ok_or_else(|| usage("no model: pass --model or --manifest"))?;
        let cut = flags
            .cut
            .clone()
            .ok_or_else(|| usage("no cut point: pass --cut"))?;
        let channels = flags
            .channels
            .as_deref()
            .ok_or_else(|| usage("no channel count: pass --channels D (or all)"))?;
        let channels = if channels == "all" {
            ChannelCount::All(AllKeyword::All)
        } else {
            ChannelCount::Count(channels.parse().map_err(|e| {
                SliceError::Usage(format!(
                    "--channels `{channels}` is not a number or `all`: {e}"
                ))
            })?)
        };
        let output = flags
            .output
            .clone()
            .ok_or_else(|| usage("no output folder: pass --output DIR"))?;
        Ok(Self {
            model,
            input,
            input_size,
            cut,
            channels,
            method: flags
                .method
                .unwrap_or_else(|| manifest.map_or(SelectionMethod::Random, |m| m.slice.method)),
            seed: privynet_core::manifest::seed_of(flags.seed, manifest),
            params: manifest.map(|m| m.slice.clone()).unwrap_or_default(),
            images: privynet_core::manifest::images_of(flags.images.as_deref(), manifest),
            preprocess: manifest
                .map(|m| m.model.preprocess.clone())
                .unwrap_or_default(),
            output,
            topology_output: flags.topology_output.clone(),
            manifest_label,
        })
    }
}

/// What the stage wrote.
#[derive(Debug, Clone)]
pub struct Written {
    pub point: CutPoint,
    pub channels: usize,
}

impl Written {
    /// Logs what was written into `output`.
    pub fn log(&self, output: &Path) {
        let point = &self.point;
        tracing::info!(
            cut = point.label(),
            d = self.channels,
            shape = format!("{}x{}x{}", self.channels, point.height, point.width),
            macs = point.macs,
            weight_bytes = point.weight_bytes,
            "wrote the local network to {}",
            output.display()
        );
    }
}

/// Scores every channel of a cut point for `fisher-random` (higher is more useful); the slice
/// library does not run networks itself, so the caller supplies this (ONNX Runtime in the
/// binary in privynet-extract).
pub type Scorer<'a> = dyn Fn(&model::Model, &CutPoint, &Path) -> Result<Vec<f64>, SliceError> + 'a;

/// The provenance parameters of a slice.
#[derive(serde::Serialize)]
struct Params<'a> {
    model: String,
    input_size: u32,
    cut: &'a str,
    channels: usize,
    method: String,
    seed: u64,
    top_fraction: f64,
    fisher_images: usize,
}

/// Slices one topology and writes its three files under `req.output`.
pub fn slice(req: &Request, score: &Scorer<'_>) -> Result<Written, SliceError> {
    let m = model::load(&req.model, req.input.as_deref())?;
    if m.was_fp16 {
        tracing::info!(
            "fp16 weights upcast to fp32 (exact); the local network computes and outputs fp32"
        );
    }
    if m.folded > 0 {
        tracing::info!("folded {} constant nodes into initializers", m.folded);
    }
    let analysis = analyze::analyze(&m, i64::from(req.input_size))?;
    let point = analysis.find(&req.cut)?.clone();
    let d = req.channels.resolve(point.channels as u32) as usize;
    // Check D before any expensive scoring.
    select::take(&(0..point.channels).collect::<Vec<_>>(), d, point.label())?;

    let mut prov = Provenance::new("slice", &req.manifest_label);
    prov.add_input(&req.model)?;
    let (order, scores) = match req.method {
        SelectionMethod::Random => (
            select::random_order(point.channels as usize, req.seed),
            None,
        ),
        SelectionMethod::FisherRandom => {
            let images = req.images.as_deref().ok_or_else(|| {
                SliceError::Selection(
                    "fisher-random needs labelled images: pass --images images.parquet".into(),
                )
            })?;
            prov.add_input(images)?;
            let scores = score(&m, &point, images)?;
            let order = select::fisher_order(&scores, req.params.top_fraction, req.seed);
            (order, Some(scores))
        }
    };
    let chosen = select::take(&order, d, point.label())?;
    let prov = prov.with_params(&Params {
        model: req.model.display().to_string(),
        input_size: req.input_size,
        cut: &point.name,
        channels: d,
        method: req.method.to_string(),
        seed: req.seed,
        top_fraction: req.params.top_fraction,
        fisher_images: req.params.fisher_images,
    });
    let mut local = surgery::local_network(&m, &point.name, &chosen)?;
    let frozen = surgery::freeze_shapes(&mut local, &analysis.shape_values);
    if frozen > 0 {
        tracing::info!(
            frozen,
            input_size = req.input_size,
            "shape computations written in as constants: the local network runs at this input size"
        );
    }
    let out = &req.output;
    privynet_core::io::write_bytes_atomic(&out.join("local.onnx"), &surgery::to_bytes(&local)?)?;
    let method = req.method.to_string();
    let topo = tables::topology(&point, i64::from(req.input_size), d as i64, &method);
    let topology_path = req
        .topology_output
        .clone()
        .unwrap_or_else(|| out.join("topology.arrow"));
    tables::write_topology(&topology_path, &topo, &prov)?;
    let selection = select::Selection {
        method: req.method,
        seed: req.seed,
        channels: chosen,
        scores,
    };
    tables::write_selection(&out.join("selection.arrow"), &selection, &prov)?;
    Ok(Written { point, channels: d })
}

/// The cut points of the model at `path` (for the listing), refused when there are none.
pub fn cut_points(
    path: &Path,
    input: Option<&str>,
    input_size: u32,
) -> Result<Analysis, SliceError> {
    let m = model::load(path, input).map_err(|source| SliceError::Step {
        what: "loading",
        path: path.to_path_buf(),
        source: Box::new(source),
    })?;
    let a = analyze::analyze(&m, i64::from(input_size))?;
    if a.points.is_empty() {
        return Err(SliceError::Model {
            path: path.to_path_buf(),
            message: "no cut points could be inferred".into(),
        });
    }
    Ok(a)
}

/// Writes the listing's table (`cut_points.arrow`) to `out`, with the provenance of the model
/// at `model_path`.
pub fn write_cut_points(
    out: &Path,
    a: &Analysis,
    model_path: &Path,
    input_size: u32,
    manifest_label: &str,
) -> Result<(), SliceError> {
    let mut prov = Provenance::new("slice", manifest_label);
    prov.add_input(model_path)?;
    prov.set("input_size", input_size.to_string());
    tables::write_cut_points(out, &a.points, &prov)
}

/// The cut-point listing: first the named cut points (layer and block boundaries, what
/// `--cut NAME` takes), then every tensor; and a note where inference stopped.
pub fn listing(a: &Analysis) -> (String, Option<String>) {
    let named: Vec<&CutPoint> = a.points.iter().filter(|p| p.layer.is_some()).collect();
    let all: Vec<&CutPoint> = a.points.iter().collect();
    let mut out = String::new();
    if !named.is_empty() {
        out.push_str("named cut points (layer and block boundaries; --cut NAME):\n");
        out.push_str(&table(a, &named));
        out.push_str("\nevery cut point (--cut TENSOR):\n");
    }
    out.push_str(&table(a, &all));
    let note = a.stopped_at.as_ref().map(|(node, op)| {
        format!(
            "note: listing stops at node `{node}`: op {op} is not supported by the shape and cost \
             inference; {}",
            a.last_before_stop()
        )
    });
    (out, note)
}

/// One table of cut points, its columns as wide as the longest name and op of the whole
/// analysis (so the two tables of a listing line up, and `GlobalAveragePool` fits).
fn table(a: &Analysis, points: &[&CutPoint]) -> String {
    let width = |len: fn(&CutPoint) -> usize, min: usize| {
        a.points.iter().map(len).max().unwrap_or(0).max(min)
    };
    let lw = width(|p| p.layer.as_deref().map_or(0, str::len), 10);
    let tw = width(|p| p.name.len(), 22);
    let ow = width(|p| p.op.len(), 9);
    let mut out = format!(
        "{:>3}  {:<lw$} {:<tw$} {:<ow$} {:>16} {:>14} {:>10} {:>12}\n",
        "#", "layer", "tensor", "op", "shape (CxHxW)", "MACs/image", "params", "weight B"
    );
    for p in points {
        out.push_str(&format!(
            "{:>3}  {:<lw$} {:<tw$} {:<ow$} {:>16} {:>14} {:>10} {:>12}\n",
            p.index,
            p.layer.as_deref().unwrap_or("-"),
            p.name,
            p.op,
            format!("{}x{}x{}", p.channels, p.height, p.width),
            p.macs,
            p.params,
            p.weight_bytes
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(index: usize, name: &str, layer: Option<&str>) -> CutPoint {
        CutPoint {
            index,
            name: name.into(),
            layer: layer.map(str::to_string),
            op: "Conv".into(),
            channels: 8,
            height: 4,
            width: 4,
            macs: 10,
            params: 2,
            weight_bytes: 8,
        }
    }

    #[test]
    fn the_listing_shows_named_cut_points_first() {
        let a = Analysis {
            input_size: 32,
            points: vec![
                point(0, "/_blocks.0/_conv/Conv_output_0", None),
                point(1, "/_blocks.0/Add_output_0", Some("blocks.0")),
            ],
            stopped_at: None,
            shape_values: Default::default(),
        };
        let (text, note) = listing(&a);
        assert!(note.is_none());
        let named = text.find("named cut points").unwrap();
        let every = text.find("every cut point").unwrap();
        let block = text.find("blocks.0 ").unwrap();
        assert!(named < block && block < every, "{text}");
        // The unnamed tensor is only in the second table, the named one in both.
        assert_eq!(text.matches("/_blocks.0/_conv/Conv_output_0").count(), 1);
        assert_eq!(text.matches("/_blocks.0/Add_output_0").count(), 2);
        let unnamed = Analysis {
            points: vec![point(0, "t", None)],
            ..a
        };
        assert!(!listing(&unnamed).0.contains("named cut points"));
    }

    fn resolve(flags: &Flags) -> Result<Request, String> {
        let input = model_input(flags, None).map_err(|e| e.to_string())?;
        Request::resolve(flags, None, input, "-".into()).map_err(|e| e.to_string())
    }

    #[test]
    fn flags_alone_resolve_a_request() {
        let flags = Flags {
            model: Some("m.onnx".into()),
            input_size: Some(32),
            cut: Some("fire3".into()),
            channels: Some("all".into()),
            output: Some("out".into()),
            ..Flags::default()
        };
        let req = resolve(&flags).unwrap();
        assert!(matches!(req.channels, ChannelCount::All(_)));
        assert_eq!(req.method, SelectionMethod::Random);
        assert!(req.images.is_none() && req.topology_output.is_none());
        let eight = Flags {
            channels: Some("8".into()),
            ..flags
        };
        assert!(matches!(
            resolve(&eight).unwrap().channels,
            ChannelCount::Count(8)
        ));
    }

    #[test]
    fn missing_or_bad_flags_are_named() {
        assert_eq!(
            resolve(&Flags::default()).unwrap_err(),
            "no input size: pass --input-size or --manifest"
        );
        let sized = Flags {
            input_size: Some(32),
            model: Some("m.onnx".into()),
            cut: Some("conv1".into()),
            ..Flags::default()
        };
        assert_eq!(
            resolve(&sized).unwrap_err(),
            "no channel count: pass --channels D (or all)"
        );
        let bad = Flags {
            channels: Some("many".into()),
            ..sized
        };
        assert_eq!(
            resolve(&bad).unwrap_err(),
            "--channels `many` is not a number or `all`: invalid digit found in string"
        );
        let zero = Flags {
            input_size: Some(0),
            ..Flags::default()
        };
        assert!(resolve(&zero).unwrap_err().contains("`model.input_size`"));
    }
}
