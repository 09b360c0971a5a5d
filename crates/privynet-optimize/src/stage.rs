//! The optimize stage from its flags and the manifest to its files: [`resolve`] puts the flags
//! over the manifest's `sweep` (cuts, channels, defences) and `optimize` sections, [`run`] fits, chooses and writes, and
//! [`outcome`] says what was chosen.

use std::path::{Path, PathBuf};

use privynet_core::Provenance;
use privynet_core::defence::Defence;
use privynet_core::manifest::{ChannelCount, Manifest, OptimizeMode, OptimizeParams, SamplePoint};

use crate::choose::{self, Plan};
use crate::{OptimizeError, baseline, output, table};

/// The binary's flags over the manifest: an empty list or `None` leaves the manifest's value.
#[derive(Debug, Clone, Default)]
pub struct Flags {
    pub cuts: Vec<String>,
    pub channels: Vec<ChannelCount>,
    /// Noise levels of the grid (overrides `sweep.noise`).
    pub noise: Vec<f64>,
    /// Bit widths of the grid (overrides `sweep.bits`).
    pub bits: Vec<u8>,
    pub sample: Vec<SamplePoint>,
    pub mode: Option<OptimizeMode>,
    pub max_psnr: Option<f64>,
    pub max_ssim: Option<f64>,
    pub max_macs: Option<i64>,
    pub max_weight_bytes: Option<i64>,
    pub max_bytes_per_image: Option<i64>,
    pub max_psnr_bound: Option<f64>,
    pub margin_scale: Option<f64>,
}

/// The run's settings: the manifest's, with the flags over them.
#[derive(Debug, Clone)]
pub struct Settings {
    pub params: OptimizeParams,
    pub cuts: Vec<String>,
    pub channels: Vec<ChannelCount>,
    /// The defences of the grid, undefended first (as `SweepSpec::defences` orders them).
    pub defences: Vec<Defence>,
}

/// One optimizer run, its settings resolved.
#[derive(Debug, Clone)]
pub struct Request {
    pub settings: Settings,
    /// characterization.parquet (one row per evaluated topology).
    pub characterization: PathBuf,
    /// The raw-image baseline's train_summary.arrow, when there is one.
    pub baseline: Option<PathBuf>,
    /// The output folder.
    pub output: PathBuf,
    /// The manifest's name for provenance (`-` when run from flags).
    pub manifest_label: String,
}

/// A flag's value written as in the manifest (`all`, `smallest`, `exhaustive`), parsed as YAML
/// so that flags and manifest accept the same spellings (clap's value parser).
pub fn parse_value<T: serde::de::DeserializeOwned>(s: &str) -> Result<T, String> {
    serde_norway::from_str(s).map_err(|e| format!("`{s}`: {e}"))
}

/// Resolves the flags against the manifest (if any) and checks the result.
pub fn resolve(flags: &Flags, manifest: Option<&Manifest>) -> Result<Settings, OptimizeError> {
    let mut params = manifest.map(|m| m.optimize.clone()).unwrap_or_default();
    let cuts = if flags.cuts.is_empty() {
        manifest.map(|m| m.sweep.cuts.clone()).unwrap_or_default()
    } else {
        flags.cuts.clone()
    };
    let channels = if flags.channels.is_empty() {
        manifest
            .map(|m| m.sweep.channels.clone())
            .unwrap_or_default()
    } else {
        flags.channels.clone()
    };
    if cuts.is_empty() || channels.is_empty() {
        return Err(OptimizeError::Input(
            "the grid is not set: give --manifest, or --cuts and --channels".into(),
        ));
    }
    let defences = defences(flags, manifest)?;
    if !flags.sample.is_empty() {
        params.sample = flags.sample.clone();
    }
    if let Some(mode) = flags.mode {
        params.mode = mode;
    }
    if let Some(scale) = flags.margin_scale {
        params.margin_scale = scale;
    }
    let limits = &mut params.limits;
    limits.max_psnr = flags.max_psnr.or(limits.max_psnr);
    limits.max_ssim = flags.max_ssim.or(limits.max_ssim);
    limits.max_macs = flags.max_macs.or(limits.max_macs);
    limits.max_weight_bytes = flags.max_weight_bytes.or(limits.max_weight_bytes);
    limits.max_bytes_per_image = flags.max_bytes_per_image.or(limits.max_bytes_per_image);
    limits.max_psnr_bound = flags.max_psnr_bound.or(limits.max_psnr_bound);
    // The flags go through the manifest's own checks (a NaN limit would silently never bind).
    params.validate().map_err(|m| {
        OptimizeError::Input(format!(
            "invalid optimizer settings (manifest and flags): {m}"
        ))
    })?;
    Ok(Settings {
        params,
        cuts,
        channels,
        defences,
    })
}

/// The grid's defences: the manifest's sweep (`SweepSpec::defences`), or with a `--noise` or
/// `--bits` flag over it, every noise level crossed with every bit width in the same way
/// (each checked as the manifest checks them, undefended first).
fn defences(flags: &Flags, manifest: Option<&Manifest>) -> Result<Vec<Defence>, OptimizeError> {
    let sweep = manifest.map(|m| &m.sweep);
    if flags.noise.is_empty()
        && flags.bits.is_empty()
        && let Some(sweep) = sweep
    {
        return Ok(sweep.defences());
    }
    let noise = match (flags.noise.is_empty(), sweep) {
        (false, _) => flags.noise.clone(),
        (true, Some(s)) => s.noise.clone(),
        (true, None) => vec![0.0],
    };
    let bits = match (flags.bits.is_empty(), sweep) {
        (false, _) => flags.bits.clone(),
        (true, Some(s)) => s.bits.clone(),
        (true, None) => vec![32],
    };
    let mut out: Vec<Defence> = Vec::new();
    for &n in &noise {
        for &b in &bits {
            let d = Defence::new(n, b).map_err(|m| {
                OptimizeError::Input(format!(
                    "invalid defence in the grid (manifest and flags): {m}"
                ))
            })?;
            if !out.contains(&d) {
                out.push(d);
            }
        }
    }
    out.sort_by_key(|d| !d.is_none());
    Ok(out)
}

/// Reads the characterization (and the baseline), chooses, and writes decision.arrow,
/// frontier.parquet, predictions.parquet, report.md and plots/ (tradeoff, channels and bytes)
/// into `req.output`.
pub fn run(req: &Request) -> Result<Plan, OptimizeError> {
    let Settings {
        params,
        cuts,
        channels,
        defences,
    } = &req.settings;
    // Destructured so that a new optimizer setting cannot go unused unnoticed.
    let OptimizeParams {
        mode,
        sample,
        limits,
        margin_scale,
        raw_baseline: _,
    } = params;

    let rows = table::read_characterization(&req.characterization)
        .map_err(step("reading", &req.characterization))?;
    let grid = table::grid(&rows, cuts, channels, defences)?;
    let mut plan = choose::optimize(&rows, &grid, sample, limits, *margin_scale, *mode)?;

    let mut prov =
        Provenance::new("optimize", &req.manifest_label).with_params(&serde_json::json!({
            "optimize": params,
            "cuts": cuts,
            "channels": channels,
            "defences": defences,
        }));
    prov.add_input(&req.characterization)?;
    if let Some(path) = &req.baseline {
        plan.baseline = Some(baseline::read(path).map_err(step("reading the baseline", path))?);
        prov.add_input(path)?;
    }
    let out = &req.output;
    std::fs::create_dir_all(out.join("plots")).map_err(step("creating", out))?;
    output::write_all(out, &plan, &prov, &req.manifest_label)?;
    Ok(plan)
}

/// Wraps an error with the step it broke and the file it was on.
fn step<'a, E>(what: &'static str, path: &'a Path) -> impl Fn(E) -> OptimizeError + 'a
where
    E: std::error::Error + Send + Sync + 'static,
{
    move |source| OptimizeError::Step {
        what,
        path: path.display().to_string(),
        source: Box::new(source),
    }
}

/// Logs the choice (or the nearest topologies) and returns the line the binary prints:
/// `chosen <topology>` or `infeasible`.
pub fn outcome(plan: &Plan) -> String {
    match plan.chosen.map(|i| &plan.candidates[i]) {
        Some(c) => {
            let measured = c.measured.map_or_else(
                || "not measured yet".to_string(),
                |m| {
                    format!(
                        "measured val acc {:.4} (test {}), PSNR {:.2} dB",
                        m.accuracy,
                        c.measured_test_accuracy
                            .map_or_else(|| "-".into(), |t| format!("{t:.4}")),
                        m.psnr
                    )
                },
            );
            tracing::info!(
                binding = choose::limit_names(&plan.binding),
                "chose {}: predicted val acc {:.4}, PSNR {:.2} dB; {measured}",
                c.topo.topology,
                c.predicted.accuracy,
                c.predicted.psnr
            );
            format!("chosen {}", c.topo.topology)
        }
        None => {
            let nearest: Vec<&str> = plan
                .nearest
                .iter()
                .map(|&i| plan.candidates[i].topo.topology.as_str())
                .collect();
            tracing::warn!(
                binding = choose::limit_names(&plan.binding),
                "no topology meets the limits; nearest: {}",
                nearest.join(", ")
            );
            "infeasible".into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_grid_and_the_limits() {
        let flags = Flags {
            cuts: vec!["conv1".into(), "fire3".into()],
            channels: vec![parse_value("4").unwrap(), parse_value("all").unwrap()],
            max_psnr: Some(16.0),
            mode: Some(parse_value("exhaustive").unwrap()),
            ..Flags::default()
        };
        let settings = resolve(&flags, None).unwrap();
        assert_eq!(settings.cuts, ["conv1", "fire3"]);
        assert_eq!(settings.channels.len(), 2);
        assert_eq!(settings.params.limits.max_psnr, Some(16.0));
        assert_eq!(settings.params.mode, OptimizeMode::Exhaustive);
        let e = resolve(&Flags::default(), None).err().unwrap().to_string();
        assert!(e.contains("the grid is not set"), "{e}");
    }

    #[test]
    fn a_flag_value_is_read_as_in_the_manifest() {
        assert!(matches!(
            parse_value::<ChannelCount>("all"),
            Ok(ChannelCount::All(_))
        ));
        let e = parse_value::<OptimizeMode>("best").unwrap_err();
        assert!(e.starts_with("`best`: "), "{e}");
    }

    #[test]
    fn the_defence_flags_cross_into_the_grid_and_are_checked() {
        let flags = Flags {
            cuts: vec!["fire3".into()],
            channels: vec![ChannelCount::Count(8)],
            noise: vec![0.5, 0.0],
            bits: vec![8, 32],
            max_bytes_per_image: Some(400),
            max_psnr_bound: Some(12.0),
            ..Flags::default()
        };
        let settings = resolve(&flags, None).unwrap();
        // Undefended first, then noise x bits in the flags' order.
        let suffixes: Vec<String> = settings.defences.iter().map(|d| d.suffix()).collect();
        assert_eq!(suffixes, ["", "-n0.5-q8", "-n0.5", "-q8"]);
        assert_eq!(settings.params.limits.max_bytes_per_image, Some(400));
        assert_eq!(settings.params.limits.max_psnr_bound, Some(12.0));
        // Without the flags, the grid has the undefended series alone.
        let plain = Flags {
            noise: vec![],
            bits: vec![],
            ..flags.clone()
        };
        assert_eq!(
            resolve(&plain, None).unwrap().defences,
            [Defence::default()]
        );
        let bad = Flags {
            bits: vec![16],
            ..flags
        };
        let e = resolve(&bad, None).err().unwrap().to_string();
        assert!(
            e.contains("invalid defence") && e.contains("16 bits"),
            "{e}"
        );
    }

    #[test]
    fn a_nan_limit_is_refused() {
        let flags = Flags {
            cuts: vec!["conv1".into()],
            channels: vec![ChannelCount::Count(4)],
            max_psnr: Some(f64::NAN),
            ..Flags::default()
        };
        let e = resolve(&flags, None).err().unwrap().to_string();
        assert!(
            e.starts_with("invalid optimizer settings (manifest and flags): "),
            "{e}"
        );
    }
}
