//! The slice stage from resolved arguments to its three files: the local network
//! (`local.onnx`), the cloud-visible `topology.arrow` and the LOCAL `selection.arrow`; and the
//! cut-point listing.

use std::path::{Path, PathBuf};

use privynet_core::Provenance;
use privynet_core::manifest::{ChannelCount, Preprocess, SelectionMethod, SliceParams};

use crate::analyze::{Analysis, CutPoint};
use crate::{SliceError, analyze, model, select, surgery, tables};

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

/// What the stage wrote.
#[derive(Debug, Clone)]
pub struct Written {
    pub point: CutPoint,
    pub channels: usize,
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
    let local = surgery::local_network(&m, &point.name, &chosen)?;
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

/// One table of cut points, its columns as wide as the longest name of the whole analysis (so
/// the two tables of a listing line up).
fn table(a: &Analysis, points: &[&CutPoint]) -> String {
    let lw = a
        .points
        .iter()
        .filter_map(|p| p.layer.as_deref())
        .map(str::len)
        .max()
        .unwrap_or(0)
        .max(10);
    let tw = a
        .points
        .iter()
        .map(|p| p.name.len())
        .max()
        .unwrap_or(0)
        .max(22);
    let mut out = format!(
        "{:>3}  {:<lw$} {:<tw$} {:<9} {:>16} {:>14} {:>10} {:>12}\n",
        "#", "layer", "tensor", "op", "shape (CxHxW)", "MACs/image", "params", "weight B"
    );
    for p in points {
        out.push_str(&format!(
            "{:>3}  {:<lw$} {:<tw$} {:<9} {:>16} {:>14} {:>10} {:>12}\n",
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
}
