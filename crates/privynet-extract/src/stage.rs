//! The extract stage from its flags and the manifest: runs the local network over the images
//! ([`crate::extract`]) or derives a narrower channel count from a wider extraction at the same
//! cut ([`crate::derive`]). The binary fetches the inputs and stages the output (object
//! storage) and hands this module local paths.

use std::path::{Path, PathBuf};

use privynet_core::manifest::{FeatureDtype, Manifest, Preprocess};
use privynet_core::{Provenance, Topology};

use crate::ExtractError;
use crate::extract::{ExtractConfig, extract};

/// The binary's flags, each overriding its manifest key when given; every path is a local
/// file (a fetched copy of an object).
#[derive(Debug, Clone, Default)]
pub struct Flags {
    pub images: Option<PathBuf>,
    pub model: Option<PathBuf>,
    pub topology: Option<PathBuf>,
    /// The features file to write (a staging path when the output is an object).
    pub output: PathBuf,
    pub splits: Option<Vec<String>>,
    pub batch_size: Option<usize>,
    pub dtype: Option<FeatureDtype>,
    pub threads: Option<usize>,
    pub input_size: Option<u32>,
    pub shard: Option<(u64, u64)>,
    /// Derive from wider features instead of running the network.
    pub derive: Option<Derivation>,
}

/// The inputs of a derivation (`--derive-from`).
#[derive(Debug, Clone)]
pub struct Derivation {
    /// The wider features, read from here.
    pub wide: PathBuf,
    /// Their place as given (a path or an object URL), for provenance and messages.
    pub wide_place: PathBuf,
    /// selection.arrow the wider features were made with.
    pub wide_selection: PathBuf,
    /// selection.arrow of the narrower topology.
    pub selection: PathBuf,
}

/// Extracts (or derives) the features into `flags.output`.
pub fn run(
    flags: &Flags,
    manifest: Option<&Manifest>,
    manifest_label: &str,
) -> Result<(), ExtractError> {
    let topology = flags
        .topology
        .as_ref()
        .map(|p| Topology::read(p).map_err(step("reading", p)))
        .transpose()?;
    let prov = Provenance::new("extract", manifest_label);
    if let Some(derivation) = &flags.derive {
        // The binary's clap declaration makes `--derive-from` require `--topology`.
        let topology = topology.ok_or_else(|| {
            ExtractError::Usage("--derive-from needs --topology topology.arrow".into())
        })?;
        return derive_from(derivation, &topology, &flags.output, prov);
    }
    let cfg = config(flags, manifest, topology)?;
    let prov = prov.with_params(&cfg);
    let report = extract(&cfg, prov).map_err(step("extracting features from", &cfg.images))?;
    tracing::info!(
        rows = report.rows,
        shape = format!("{:?}", report.shape),
        seconds = format!("{:.1}", report.seconds),
        images_per_s = format!("{:.0}", report.rows as f64 / report.seconds.max(1e-9)),
        "wrote the features"
    );
    Ok(())
}

/// Derives the narrower features of the derivation's selection from the wider ones at the same
/// cut.
fn derive_from(
    d: &Derivation,
    topology: &Topology,
    output: &Path,
    prov: Provenance,
) -> Result<(), ExtractError> {
    let read = |p: &PathBuf| privynet_core::topology::read_selection(p).map_err(step("reading", p));
    let wide_sel = read(&d.wide_selection)?;
    let narrow_sel = read(&d.selection)?;
    let prov = prov.with_params(&serde_json::json!({
        "derive_from": d.wide_place.display().to_string(),
        "channels": narrow_sel.len(),
    }));
    let rows = crate::derive::derive(&d.wide, &wide_sel, &narrow_sel, topology, output, prov)
        .map_err(step("deriving features from", &d.wide_place))?;
    tracing::info!(rows, "derived {} channels", narrow_sel.len());
    Ok(())
}

/// The extraction's settings from the flags, the manifest and the topology (in that order).
pub fn config(
    flags: &Flags,
    manifest: Option<&Manifest>,
    topology: Option<Topology>,
) -> Result<ExtractConfig, ExtractError> {
    let usage = |m: &str| ExtractError::Usage(m.to_string());
    let mut params = manifest.map(|m| m.extract.clone()).unwrap_or_default();
    params.batch_size = flags.batch_size.unwrap_or(params.batch_size);
    params.threads = flags.threads.or(params.threads);
    if let Some(s) = &flags.splits {
        params.splits.clone_from(s);
    }
    // The flags go through the manifest's own checks.
    params.validate().map_err(|m| {
        ExtractError::Usage(format!(
            "invalid extraction settings (manifest and flags): {m}"
        ))
    })?;
    let images = privynet_core::manifest::images_of(flags.images.as_deref(), manifest)
        .ok_or_else(|| usage("no images: pass --images or --manifest"))?;
    let model = flags
        .model
        .clone()
        .ok_or_else(|| usage("no local network: pass --model local.onnx"))?;
    let input_size = flags
        .input_size
        .or(manifest.map(|m| m.model.input_size))
        .or(topology.as_ref().map(|t| t.input_size as u32))
        .ok_or_else(|| usage("no input size: pass --input-size, --topology or --manifest"))?;
    privynet_core::manifest::check_input_size(input_size).map_err(ExtractError::Usage)?;
    let preprocess: Preprocess = manifest
        .map(|m| m.model.preprocess.clone())
        .unwrap_or_default();
    if manifest.is_none() {
        tracing::warn!("no manifest: preprocessing is RGB, raw 0-255, no mean or std");
    }
    let dtype = flags.dtype.unwrap_or(params.dtype);
    if dtype == FeatureDtype::Float16 {
        return Err(usage(
            "float16 feature storage is refused: polars reads Float16 Parquet columns only with a cast, and features must open in polars as they are; use float32",
        ));
    }
    Ok(ExtractConfig {
        images,
        model,
        output: flags.output.clone(),
        topology,
        preprocess,
        input_size,
        splits: params.splits,
        batch_size: params.batch_size,
        dtype,
        threads: params.threads,
        shard: flags.shard,
    })
}

/// Wraps an error with the step it broke and the file it was on.
fn step<'a, E>(what: &'static str, path: &'a Path) -> impl Fn(E) -> ExtractError + 'a
where
    E: std::error::Error + Send + Sync + 'static,
{
    move |source| ExtractError::Step {
        what,
        path: path.to_path_buf(),
        source: Box::new(source),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags() -> Flags {
        Flags {
            images: Some("images.parquet".into()),
            model: Some("local.onnx".into()),
            output: "features.parquet".into(),
            input_size: Some(32),
            ..Flags::default()
        }
    }

    fn refusal(flags: &Flags) -> String {
        config(flags, None, None).unwrap_err().to_string()
    }

    #[test]
    fn flags_alone_make_a_config() {
        let cfg = config(&flags(), None, None).unwrap();
        assert_eq!(cfg.input_size, 32);
        assert_eq!(cfg.dtype, FeatureDtype::Float32);
        assert_eq!(cfg.output, Path::new("features.parquet"));
    }

    #[test]
    fn missing_or_bad_settings_name_their_flag() {
        let no_model = Flags {
            model: None,
            ..flags()
        };
        assert_eq!(
            refusal(&no_model),
            "no local network: pass --model local.onnx"
        );
        let no_size = Flags {
            input_size: None,
            ..flags()
        };
        assert_eq!(
            refusal(&no_size),
            "no input size: pass --input-size, --topology or --manifest"
        );
        let zero_batch = Flags {
            batch_size: Some(0),
            ..flags()
        };
        assert!(
            refusal(&zero_batch).starts_with("invalid extraction settings (manifest and flags): "),
        );
        let half = Flags {
            dtype: Some(FeatureDtype::Float16),
            ..flags()
        };
        assert!(refusal(&half).starts_with("float16 feature storage is refused"));
    }
}
