//! Tests of the choice over defences: one cut under no defence, noise, and noise with 8-bit
//! codes, each series linear in ln D with its own slopes and bytes.

use super::*;
use privynet_core::manifest::SampleRule;

const SAMPLE: [SamplePoint; 3] = [
    SamplePoint::Rule(SampleRule::Smallest),
    SamplePoint::Rule(SampleRule::Middle),
    SamplePoint::Rule(SampleRule::Largest),
];
const DS: [i64; 5] = [4, 8, 16, 32, 64];

/// One series' true values at ln D = x: accuracy, PSNR, the bound (None without noise), and
/// bytes per image at D.
struct Truth {
    defence: Defence,
    accuracy: fn(f64) -> f64,
    psnr: fn(f64) -> f64,
    bound: Option<fn(f64) -> f64>,
    bytes: fn(i64) -> f64,
}

/// Undefended; noise 0.5 (float features: as many bytes, less accuracy and leakage, a bound);
/// the same noise quantised to 8 bits (a quarter of the bytes, a touch less accurate).
fn truths() -> [Truth; 3] {
    [
        Truth {
            defence: Defence::default(),
            accuracy: |x| 0.40 + 0.05 * x,
            psnr: |x| 12.0 + 1.5 * x,
            bound: None,
            bytes: |d| 196.0 * d as f64 + 100.0,
        },
        Truth {
            defence: Defence {
                noise: 0.5,
                bits: 32,
            },
            accuracy: |x| 0.38 + 0.05 * x,
            psnr: |x| 10.0 + 1.0 * x,
            bound: Some(|x| 8.0 + 2.0 * x),
            bytes: |d| 196.0 * d as f64 + 100.0,
        },
        Truth {
            defence: Defence {
                noise: 0.5,
                bits: 8,
            },
            accuracy: |x| 0.375 + 0.05 * x,
            psnr: |x| 9.8 + 1.0 * x,
            bound: Some(|x| 8.0 + 2.0 * x),
            bytes: |d| 49.0 * d as f64 + 100.0,
        },
    ]
}

/// How far the means lie below the upper ends a row is measured at.
struct Below {
    psnr: f64,
    bound: f64,
}

/// Series `t`'s row of cut `f` at D = `d`, its true values measured: SSIM `ssim`, the means of
/// PSNR and SSIM (`below` the PSNR and the bound's upper ends, and `mean_ssim`).
fn measured(t: &Truth, d: i64, ssim: f64, mean_ssim: f64, below: Below) -> Measurement {
    let x = (d as f64).ln();
    let bound = t.bound.map(|b| b(x));
    Measurement {
        topo: Topo {
            topology: label("f", d, &t.defence),
            cut: "f".into(),
            layer: "f".into(),
            depth: 1,
            cut_channels: 64,
            channels: d,
            macs: 100,
            weight_bytes: 10,
            noise: t.defence.noise,
            bits: i64::from(t.defence.bits),
        },
        metrics: Metrics {
            accuracy: (t.accuracy)(x),
            psnr: (t.psnr)(x),
            ssim,
            bytes_per_image: Some((t.bytes)(d)),
            psnr_bound: bound,
        },
        test_accuracy: 0.5,
        privacy_mean: ((t.psnr)(x) - below.psnr, mean_ssim),
        psnr_bound_mean: bound.map(|b| b - below.bound),
        attack_converged: true,
    }
}

/// The sampled rows (D = 4, 16, 64) of every series of cut `f`, and the grid.
fn table() -> (Vec<Measurement>, Vec<SeriesGrid>) {
    let mut rows = Vec::new();
    let mut grid = Vec::new();
    for t in truths() {
        for d in [4, 16, 64] {
            let ssim = 0.2 + 0.05 * (d as f64).ln();
            rows.push(measured(
                &t,
                d,
                ssim,
                0.2,
                Below {
                    psnr: 0.5,
                    bound: 0.3,
                },
            ));
        }
        grid.push(SeriesGrid {
            cut: "f".into(),
            defence: t.defence,
            channels: DS.to_vec(),
        });
    }
    (rows, grid)
}

fn plan(limits: Limits) -> Plan {
    let (rows, grid) = table();
    optimize(&rows, &grid, &SAMPLE, &limits, 1.0, OptimizeMode::Model).unwrap()
}

fn chosen(plan: &Plan) -> &Candidate {
    &plan.candidates[plan.chosen.expect("a choice")]
}

#[test]
fn each_series_is_fitted_on_its_own() {
    let plan = plan(Limits::default());
    assert_eq!(plan.candidates.len(), 3 * DS.len());
    assert!(plan.fit.borrowed.is_empty() && plan.uncharacterized.is_empty());
    for t in truths() {
        for d in [8, 32] {
            let name = label("f", d, &t.defence);
            let c = plan
                .candidates
                .iter()
                .find(|c| c.topo.topology == name)
                .unwrap_or_else(|| panic!("{name} is in the grid"));
            assert!(!c.sampled && c.topo.defence() == t.defence, "{name}");
            let x = (d as f64).ln();
            // Linear data in ln D: each series' own line comes back exactly, so no series
            // borrowed another's points.
            assert!(
                (c.predicted.accuracy - (t.accuracy)(x)).abs() < 1e-9,
                "{name}"
            );
            assert!((c.predicted.psnr - (t.psnr)(x)).abs() < 1e-9, "{name}");
            match t.bound {
                Some(b) => assert!((c.predicted.psnr_bound.unwrap() - b(x)).abs() < 1e-9),
                None => assert_eq!(c.predicted.psnr_bound, None, "{name}: no noise, no bound"),
            }
            // Bytes in proportion to D, from the series' own sampled points.
            let bytes = c.predicted.bytes_per_image.unwrap();
            assert!((bytes / (t.bytes)(d) - 1.0).abs() < 0.06, "{name}: {bytes}");
        }
    }
    // No limits: the most accurate topology, the undefended widest.
    assert_eq!(chosen(&plan).topo.topology, "f-d64");
    assert_eq!(plan.best_undefended(), plan.chosen);
}

#[test]
fn a_bytes_limit_excludes_the_float_series_and_the_quantised_one_is_chosen() {
    // Float features take at least 884 bytes (D = 4); 8-bit codes take 49 D + 100, so D <= 8.
    let plan = plan(Limits {
        max_bytes_per_image: Some(800),
        ..Limits::default()
    });
    for c in &plan.candidates {
        let float = c.topo.bits == 32;
        assert_eq!(
            c.violates.contains(&Limit::BytesPerImage),
            float || c.topo.channels > 8,
            "{}",
            c.topo.topology
        );
    }
    let c = chosen(&plan);
    assert_eq!(c.topo.topology, "f-d8-n0.5-q8");
    assert!(c.estimate.bytes_per_image.unwrap() <= 800.0);
    assert_eq!(plan.binding, vec![Limit::BytesPerImage]);
    assert_eq!(plan.best_undefended(), None);
    // The decision's view of what was excluded: no undefended topology meets the limit.
    let report = crate::report::render(&plan, "m.yaml");
    assert!(
        report.contains("No undefended topology meets the limits (they break bytes_per_image (5))"),
        "{report}"
    );
}

#[test]
fn a_bound_limit_excludes_the_undefended_topologies() {
    // Every noisy topology's bound is at most 8 + 2 ln 64 = 16.3 dB; without noise, none.
    let plan = plan(Limits {
        max_psnr_bound: Some(20.0),
        ..Limits::default()
    });
    for c in &plan.candidates {
        let undefended = c.topo.noise == 0.0;
        assert_eq!(
            undefended,
            c.estimate.psnr_bound.is_none(),
            "{}",
            c.topo.topology
        );
        assert_eq!(
            c.violates.contains(&Limit::PsnrBound),
            undefended,
            "{}",
            c.topo.topology
        );
    }
    assert_eq!(chosen(&plan).topo.topology, "f-d64-n0.5");
    assert_eq!(plan.binding, vec![Limit::PsnrBound]);
    assert!(plan.undefended_frontier().is_empty());
    // A bound limit nothing meets: the nearest are the noisy topologies, undefended ones last.
    let plan = self::plan(Limits {
        max_psnr_bound: Some(5.0),
        ..Limits::default()
    });
    assert!(plan.chosen.is_none());
    assert!(
        plan.nearest
            .iter()
            .all(|&i| plan.candidates[i].topo.noise > 0.0)
    );
    let report = crate::report::render(&plan, "m.yaml");
    assert!(
        report.contains("PSNR bound 10.77; breaks psnr_bound"),
        "{report}"
    );
}

#[test]
fn the_report_compares_the_frontiers_and_says_why_the_defence_won() {
    // At 16 dB the undefended topologies stop at D = 8 (12 + 1.5 ln 8 = 15.1 dB); with noise
    // every D passes (10 + ln 64 = 14.2 dB), and the noisy float series is the most accurate.
    let plan = plan(Limits {
        max_psnr: Some(16.0),
        ..Limits::default()
    });
    let c = chosen(&plan);
    assert_eq!(c.topo.topology, "f-d64-n0.5");
    let u = &plan.candidates[plan.best_undefended().unwrap()];
    assert_eq!(u.topo.topology, "f-d8");
    let front: Vec<&str> = plan
        .undefended_frontier()
        .iter()
        .map(|c| c.topo.topology.as_str())
        .collect();
    assert_eq!(front, ["f-d4", "f-d8"]);
    let report = crate::report::render(&plan, "m.yaml");
    for needle in [
        "## Defences",
        "### The frontier with and without defences",
        "| worst-case PSNR at most (dB) | without defences | with defences |",
        "**f-d64-n0.5** (Gaussian noise at 0.5 of each channel's std) beat the best undefended topology **f-d8**",
        "every more accurate undefended topology breaks a limit: psnr (1)",
        "no unbiased attacker can exceed on average",
        "learned prior",
        "| `-n0.5-q8` | 3 | 0.288 |",
        "bytes/image",
        "none (no noise)",
        "plots/bytes.svg",
    ] {
        assert!(report.contains(needle), "{needle}\n{report}");
    }
    // The plots mark the defences apart, and the bytes view exists.
    let svg = crate::plot::tradeoff(&plan);
    assert!(
        svg.contains("<polygon") && svg.contains("frontier, no defence"),
        "{svg}"
    );
    let bytes = crate::plot::by_bytes(&plan);
    assert!(bytes.starts_with("<svg") && bytes.contains("f-d8-n0.5-q8"));
    assert!(crate::plot::by_channels(&plan).contains("stroke-dasharray"));
}

#[test]
fn a_grid_without_defences_has_no_defences_section() {
    let (rows, grid) = table();
    let rows: Vec<Measurement> = rows.into_iter().filter(|r| r.topo.noise == 0.0).collect();
    let plan = optimize(
        &rows,
        &grid[..1],
        &SAMPLE,
        &Limits::default(),
        1.0,
        OptimizeMode::Model,
    )
    .unwrap();
    assert!(!plan.has_defences());
    assert!(!crate::report::render(&plan, "m.yaml").contains("## Defences"));
}

#[test]
fn exhaustive_regret_covers_the_defences() {
    // Every topology measured: the exhaustive best under the bytes limit is the quantised one.
    let (_, grid) = table();
    let mut rows = Vec::new();
    for t in truths() {
        for d in DS {
            rows.push(measured(
                &t,
                d,
                0.3,
                0.3,
                Below {
                    psnr: 0.0,
                    bound: 0.0,
                },
            ));
        }
    }
    let limits = Limits {
        max_bytes_per_image: Some(800),
        ..Limits::default()
    };
    let plan = optimize(
        &rows,
        &grid,
        &SAMPLE,
        &limits,
        1.0,
        OptimizeMode::Exhaustive,
    )
    .unwrap();
    let ex = plan.exhaustive.as_ref().unwrap();
    assert_eq!(
        plan.candidates[ex.best.unwrap()].topo.topology,
        "f-d8-n0.5-q8"
    );
    assert!(ex.regret.unwrap().abs() < 1e-12);
    assert_eq!(plan.measured_feasible(), Some(true));
}

#[test]
fn the_outputs_carry_the_defence_bytes_and_bound_and_polars_reads_them() {
    let plan = plan(Limits {
        max_psnr: Some(16.0),
        max_bytes_per_image: Some(9000),
        ..Limits::default()
    });
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("plots")).unwrap();
    let prov = privynet_core::Provenance::new("optimize", "m.yaml");
    crate::output::write_all(dir.path(), &plan, &prov, "m.yaml").unwrap();
    assert!(dir.path().join("plots/bytes.svg").exists());
    let read = |f: &str| crate::preview::first_rows(&dir.path().join(f), 100).unwrap();
    let decision = read("decision.arrow");
    let text = |name: &str| {
        decision
            .column(name)
            .unwrap()
            .str()
            .unwrap()
            .get(0)
            .map(str::to_string)
    };
    let float = |name: &str| decision.column(name).unwrap().f64().unwrap().get(0);
    assert_eq!(text("topology").as_deref(), Some("f-d64-n0.5-q8"));
    assert_eq!(float("noise"), Some(0.5));
    assert_eq!(
        decision.column("bits").unwrap().i64().unwrap().get(0),
        Some(8)
    );
    assert_eq!(float("bytes_per_image"), Some(3236.0));
    assert!((float("psnr_bound").unwrap() - (8.0 + 2.0 * 64f64.ln())).abs() < 1e-9);
    assert!(float("measured_psnr_bound_mean").is_some());
    assert_eq!(text("undefended_topology").as_deref(), Some("f-d8"));
    let predictions = read("predictions.parquet");
    assert_eq!(predictions.height(), 15);
    let bound = predictions.column("psnr_bound").unwrap();
    assert_eq!(bound.null_count(), 5, "no bound without noise");
    let frontier = read("frontier.parquet");
    for name in ["noise", "bits", "bytes_per_image", "psnr_bound"] {
        assert!(frontier.column(name).is_ok(), "{name}");
    }
}
