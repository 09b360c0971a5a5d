//! Expanding a manifest into the pipeline DAG: ingest once; per topology of the sweep a slice;
//! per cut one extraction at the widest channel count and a derivation for each narrower one.
//! Each node is one stage-binary invocation with exactly the arguments it needs.

use std::collections::{BTreeMap, HashMap, HashSet};

use std::path::{Path, PathBuf};

use privynet_core::manifest::{Manifest, OptimizeMode, grid_channels, sample_channels};
use privynet_core::{ArtifactKind, Zone};
use privynet_slice::{analyze, model};
use serde_json::{Value, json};

use crate::RunError;

/// Stages, in pipeline order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stage {
    Ingest,
    Slice,
    Extract,
    Train,
    /// The cloud network trained on the raw images: the accuracy without any split.
    Baseline,
    Attack,
    Characterize,
    Optimize,
}

impl Stage {
    /// Every stage the runner knows, and the stages still to come (named in messages).
    pub const ALL: [Stage; 8] = [
        Stage::Ingest,
        Stage::Slice,
        Stage::Extract,
        Stage::Train,
        Stage::Baseline,
        Stage::Attack,
        Stage::Characterize,
        Stage::Optimize,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Stage::Ingest => "ingest",
            Stage::Slice => "slice",
            Stage::Extract => "extract",
            Stage::Train => "train",
            Stage::Baseline => "baseline",
            Stage::Attack => "attack",
            Stage::Characterize => "characterize",
            Stage::Optimize => "optimize",
        }
    }

    /// Which ready nodes the runner starts first (lower first). The seconds-long stages that
    /// unlock others come first, so that every attack is ready early; then the longest
    /// (measured on the default pipeline: attacks minutes each, the raw baseline a few minutes,
    /// training under two), so that the run does not end on one long attack while the other
    /// slots sit idle; the final gathering stages last.
    pub fn start_rank(self) -> u8 {
        match self {
            Stage::Ingest | Stage::Slice | Stage::Extract => 0,
            Stage::Attack => 1,
            Stage::Baseline => 2,
            Stage::Train => 3,
            Stage::Characterize | Stage::Optimize => 4,
        }
    }

    pub fn binary(self) -> &'static str {
        match self {
            Stage::Ingest => "privynet-ingest",
            Stage::Slice => "privynet-slice",
            Stage::Extract => "privynet-extract",
            Stage::Train | Stage::Baseline => "privynet-train",
            Stage::Attack => "privynet-attack",
            Stage::Characterize => "privynet-characterize",
            Stage::Optimize => "privynet-optimize",
        }
    }

    /// The zone a stage runs in: a cloud stage must never read a local artifact.
    pub fn zone(self) -> Zone {
        match self {
            // The attack stage simulates the cloud's attacker but runs on the user's side, as
            // the user's own privacy audit: it reads the raw images to score reconstructions.
            // The baseline trains on the raw images, so it can only ever run locally.
            Stage::Ingest
            | Stage::Baseline
            | Stage::Slice
            | Stage::Extract
            | Stage::Attack
            | Stage::Characterize
            | Stage::Optimize => Zone::Local,
            Stage::Train => Zone::Cloud,
        }
    }

    pub fn from_name(s: &str) -> Option<Stage> {
        Stage::ALL.into_iter().find(|st| st.name() == s)
    }
}

/// One input of a node: a file and the artifact kind it holds (for the zone check).
#[derive(Debug, Clone)]
pub struct Input {
    pub path: PathBuf,
    pub kind: Option<ArtifactKind>,
}

/// One node of the DAG.
#[derive(Debug, Clone)]
pub struct Node {
    /// `stage` or `stage/topology`, e.g. `slice/fire3-d8`.
    pub id: String,
    pub stage: Stage,
    pub topology: Option<String>,
    pub inputs: Vec<Input>,
    pub outputs: Vec<PathBuf>,
    /// The parameters this node reads, by key; compared with the lock file's record.
    pub params: BTreeMap<String, Value>,
    /// Arguments to the stage binary.
    pub args: Vec<String>,
    /// Indices of the nodes that produce this node's inputs.
    pub deps: Vec<usize>,
}

/// The expanded pipeline.
#[derive(Debug, Clone)]
pub struct Dag {
    pub nodes: Vec<Node>,
    pub out_dir: PathBuf,
}

/// A topology of the sweep, resolved against the model.
#[derive(Debug, Clone, PartialEq)]
pub struct SweepPoint {
    pub cut: String,
    pub label: String,
    pub channels: i64,
    pub cut_channels: i64,
}

fn dir_label(cut: &analyze::CutPoint, d: i64) -> String {
    format!("{}-d{d}", cut.label().replace('/', "_"))
}

/// Resolves the sweep against the model: every cut must exist and every D must fit. The
/// result is the whole grid, in manifest order of the cuts and ascending D.
pub fn resolve_sweep(m: &Manifest) -> Result<Vec<SweepPoint>, RunError> {
    let model = model::load(&m.model.path, m.model.input.as_deref())?;
    let a = analyze::analyze(&model, i64::from(m.model.input_size))?;
    let mut out = Vec::new();
    for cut in &m.sweep.cuts {
        let p = a.find(cut)?;
        for d in grid_channels(&m.sweep.channels, cut, p.channels).map_err(RunError::Dag)? {
            out.push(SweepPoint {
                cut: cut.clone(),
                label: dir_label(p, d),
                channels: d,
                cut_channels: p.channels,
            });
        }
    }
    if out.len() > m.sweep.max_topologies {
        return Err(RunError::Dag(format!(
            "the sweep resolves to {} topologies ({} cuts x their channel counts), more than \
             `sweep.max_topologies` = {}; shorten `sweep.channels` or `sweep.cuts`, or raise \
             the limit if the grid is meant",
            out.len(),
            m.sweep.cuts.len(),
            m.sweep.max_topologies
        )));
    }
    Ok(out)
}

/// Where the optimizer writes its decision.
pub fn decision_path(out: &Path) -> PathBuf {
    out.join("optimize").join("decision.arrow")
}

/// The topology a previous optimizer run chose, if its decision file is there and readable.
fn chosen_topology(out: &Path) -> Option<String> {
    let path = decision_path(out);
    if !path.is_file() {
        return None;
    }
    let (_, batches) = match privynet_core::io::read_arrow(&path, ArtifactKind::Decision) {
        Ok(x) => x,
        Err(e) => {
            tracing::warn!("ignoring {}: {e}", path.display());
            return None;
        }
    };
    let b = batches.iter().find(|b| b.num_rows() > 0)?;
    let col = b
        .column_by_name("topology")?
        .as_any()
        .downcast_ref::<arrow::array::StringArray>()?;
    use arrow::array::Array;
    (!col.is_null(0)).then(|| col.value(0).to_string())
}

/// The topologies to evaluate (train and attack): the whole grid in exhaustive mode; else the
/// sampled points of each cut plus the optimizer's last choice, once it has made one.
pub fn evaluated(m: &Manifest, grid: &[SweepPoint]) -> Vec<SweepPoint> {
    if m.optimize.mode == OptimizeMode::Exhaustive {
        return grid.to_vec();
    }
    let chosen = chosen_topology(&m.out_dir());
    let mut out = Vec::new();
    for cut in &m.sweep.cuts {
        let own: Vec<&SweepPoint> = grid.iter().filter(|p| &p.cut == cut).collect();
        let Some(first) = own.first() else { continue };
        let ds: Vec<i64> = own.iter().map(|p| p.channels).collect();
        let sampled = sample_channels(&ds, first.cut_channels, &m.optimize.sample);
        out.extend(
            own.into_iter()
                .filter(|p| sampled.contains(&p.channels) || chosen.as_deref() == Some(&p.label))
                .cloned(),
        );
    }
    out
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// The arguments of a node that reads `ins` (each passed as `--flag PATH`) and writes to
/// `output`, and its inputs: built from one list, so the command line and the up-to-date
/// check always name the same files.
fn wire(
    base: &[String],
    ins: Vec<(&str, PathBuf, Option<ArtifactKind>)>,
    output: &Path,
) -> (Vec<String>, Vec<Input>) {
    let mut args = base.to_vec();
    let mut inputs = Vec::new();
    for (flag, path, kind) in ins {
        args.push(format!("--{flag}"));
        args.push(s(&path));
        inputs.push(Input { path, kind });
    }
    args.push("--output".into());
    args.push(s(output));
    (args, inputs)
}

/// What `privynet-train` writes into its output folder.
const TRAIN_OUTPUTS: [&str; 4] = [
    "cloud_model.bpk",
    "cloud_config.json",
    "train_metrics.arrow",
    "train_summary.arrow",
];

/// Builds the DAG for a manifest file (the path is passed to every stage binary).
pub fn build(manifest_path: &Path, overrides: &[String]) -> Result<Dag, RunError> {
    let m = Manifest::load(manifest_path, overrides)?;
    let grid = resolve_sweep(&m)?;
    let sweep = evaluated(&m, &grid);
    let out = m.out_dir();
    let mpath = s(manifest_path);
    let mut base_args = vec!["--manifest".to_string(), mpath];
    for o in overrides {
        base_args.push("--set".into());
        base_args.push(o.clone());
    }
    let mut nodes: Vec<Node> = Vec::new();
    let images = m.images_path();
    let v = |x: &dyn erased::Ser| x.to_value();
    nodes.push(Node {
        id: "ingest".into(),
        stage: Stage::Ingest,
        topology: None,
        inputs: vec![Input {
            path: m.dataset.path.clone(),
            kind: None,
        }],
        outputs: vec![images.clone()],
        params: BTreeMap::from([
            ("dataset".into(), v(&m.dataset)),
            ("seed".into(), json!(m.seed)),
        ]),
        args: base_args.clone(),
        deps: vec![],
    });
    let fisher = m.slice.method == privynet_core::manifest::SelectionMethod::FisherRandom;
    // Per cut, all C channels are extracted once (in the selection's order); every narrower
    // D is derived from that, and the attack stage's attackers compute their own guesses from
    // it. When the sweep does not list all channels, that topology is sliced and extracted
    // for those uses only (it is not trained or attacked).
    let mut points = sweep.clone();
    for p in &sweep {
        if !points
            .iter()
            .any(|q| q.cut == p.cut && q.channels == p.cut_channels)
        {
            points.push(SweepPoint {
                cut: p.cut.clone(),
                label: p
                    .label
                    .rsplit_once("-d")
                    .map_or(p.label.clone(), |(l, _)| format!("{l}-d{}", p.cut_channels)),
                channels: p.cut_channels,
                cut_channels: p.cut_channels,
            });
        }
    }
    let wide_of = |p: &SweepPoint| -> SweepPoint {
        points
            .iter()
            .find(|q| q.cut == p.cut && q.channels == p.cut_channels)
            .expect("every cut has its all-channel point")
            .clone()
    };
    for p in &points {
        let dir = out.join(&p.label);
        let mut inputs = vec![Input {
            path: m.model.path.clone(),
            kind: None,
        }];
        let mut params = BTreeMap::from([
            ("model".into(), v(&m.model.path)),
            ("model.input".into(), v(&m.model.input)),
            ("model.input_size".into(), json!(m.model.input_size)),
            ("slice".into(), v(&m.slice)),
            ("seed".into(), json!(m.seed)),
            ("cut".into(), json!(p.cut)),
            ("channels".into(), json!(p.channels)),
        ]);
        let deps = vec![];
        if fisher {
            inputs.push(Input {
                path: images.clone(),
                kind: Some(ArtifactKind::Images),
            });
            params.insert("model.preprocess".into(), v(&m.model.preprocess));
        }
        let mut args = base_args.clone();
        args.extend([
            "--cut".into(),
            p.cut.clone(),
            "--channels".into(),
            p.channels.to_string(),
            "--images".into(),
            s(&images),
            "--output".into(),
            s(&dir),
        ]);
        nodes.push(Node {
            id: format!("slice/{}", p.label),
            stage: Stage::Slice,
            topology: Some(p.label.clone()),
            inputs,
            outputs: vec![
                dir.join("local.onnx"),
                dir.join("topology.arrow"),
                dir.join("selection.arrow"),
            ],
            params,
            args,
            deps,
        });
    }
    for p in &points {
        let dir = out.join(&p.label);
        let wide = wide_of(p);
        let wide_d = wide.channels;
        let wdir = out.join(&wide.label);
        let features = dir.join("features.parquet");
        let (args, inputs, params) = if p.channels == wide_d {
            let (args, inputs) = wire(
                &base_args,
                vec![
                    ("images", images.clone(), Some(ArtifactKind::Images)),
                    ("model", dir.join("local.onnx"), None),
                    (
                        "topology",
                        dir.join("topology.arrow"),
                        Some(ArtifactKind::Topology),
                    ),
                ],
                &features,
            );
            let params = BTreeMap::from([
                ("model.preprocess".into(), v(&m.model.preprocess)),
                ("model.input_size".into(), json!(m.model.input_size)),
                ("extract".into(), v(&m.extract)),
            ]);
            (args, inputs, params)
        } else {
            let (args, inputs) = wire(
                &base_args,
                vec![
                    (
                        "derive-from",
                        wdir.join("features.parquet"),
                        Some(ArtifactKind::Features),
                    ),
                    (
                        "wide-selection",
                        wdir.join("selection.arrow"),
                        Some(ArtifactKind::Selection),
                    ),
                    (
                        "selection",
                        dir.join("selection.arrow"),
                        Some(ArtifactKind::Selection),
                    ),
                    (
                        "topology",
                        dir.join("topology.arrow"),
                        Some(ArtifactKind::Topology),
                    ),
                ],
                &features,
            );
            (args, inputs, BTreeMap::new())
        };
        nodes.push(Node {
            id: format!("extract/{}", p.label),
            stage: Stage::Extract,
            topology: Some(p.label.clone()),
            inputs,
            outputs: vec![features],
            params,
            args,
            deps: vec![],
        });
    }
    for p in &sweep {
        let dir = out.join(&p.label);
        let (mut args, inputs) = wire(
            &base_args,
            vec![
                (
                    "features",
                    dir.join("features.parquet"),
                    Some(ArtifactKind::Features),
                ),
                (
                    "topology",
                    dir.join("topology.arrow"),
                    Some(ArtifactKind::Topology),
                ),
            ],
            &dir.join("train"),
        );
        // A training run killed with the pipeline continues from its last epoch on the next
        // run; a finished one leaves no state, so this changes nothing else.
        args.push("--resume".into());
        nodes.push(Node {
            id: format!("train/{}", p.label),
            stage: Stage::Train,
            topology: Some(p.label.clone()),
            inputs,
            outputs: TRAIN_OUTPUTS
                .iter()
                .map(|f| dir.join("train").join(f))
                .collect(),
            params: BTreeMap::from([
                ("train".into(), v(&m.train)),
                ("seed".into(), json!(m.seed)),
            ]),
            args,
            deps: vec![],
        });
    }
    // The same cloud network on the images themselves, so the report can say what the split
    // costs in accuracy. It reads the raw images: a local node (Stage::Baseline's zone).
    let baseline_dir = m.optimize.raw_baseline.then(|| out.join("baseline-raw"));
    if let Some(bdir) = &baseline_dir {
        let (mut args, inputs) = wire(
            &base_args,
            vec![("images", images.clone(), Some(ArtifactKind::Images))],
            bdir,
        );
        args.extend(["--baseline".into(), "raw".into(), "--resume".into()]);
        nodes.push(Node {
            id: "baseline".into(),
            stage: Stage::Baseline,
            topology: None,
            inputs,
            outputs: TRAIN_OUTPUTS.iter().map(|f| bdir.join(f)).collect(),
            params: BTreeMap::from([
                ("train".into(), v(&m.train)),
                ("seed".into(), json!(m.seed)),
            ]),
            args,
            deps: vec![],
        });
    }
    for p in &sweep {
        let dir = out.join(&p.label);
        let wdir = out.join(wide_of(p).label);
        let (args, inputs) = wire(
            &base_args,
            vec![
                ("images", images.clone(), Some(ArtifactKind::Images)),
                (
                    "features",
                    dir.join("features.parquet"),
                    Some(ArtifactKind::Features),
                ),
                (
                    "topology",
                    dir.join("topology.arrow"),
                    Some(ArtifactKind::Topology),
                ),
                (
                    "selection",
                    dir.join("selection.arrow"),
                    Some(ArtifactKind::Selection),
                ),
                (
                    "full-features",
                    wdir.join("features.parquet"),
                    Some(ArtifactKind::Features),
                ),
                (
                    "full-selection",
                    wdir.join("selection.arrow"),
                    Some(ArtifactKind::Selection),
                ),
            ],
            &dir.join("attack"),
        );
        nodes.push(Node {
            id: format!("attack/{}", p.label),
            stage: Stage::Attack,
            topology: Some(p.label.clone()),
            inputs,
            outputs: [
                "privacy.parquet",
                "attack_summary.arrow",
                "attack_metrics.arrow",
                "reconstructions.png",
            ]
            .iter()
            .map(|f| dir.join("attack").join(f))
            .collect(),
            params: BTreeMap::from([
                ("attack".into(), v(&m.attack)),
                ("seed".into(), json!(m.seed)),
                ("train.classes".into(), json!(m.train.classes)),
            ]),
            args,
            deps: vec![],
        });
    }
    let mut inputs = Vec::new();
    for p in &sweep {
        let dir = out.join(&p.label);
        inputs.push(Input {
            path: dir.join("topology.arrow"),
            kind: Some(ArtifactKind::Topology),
        });
        inputs.push(Input {
            path: dir.join("train/train_summary.arrow"),
            kind: Some(ArtifactKind::TrainSummary),
        });
        inputs.push(Input {
            path: dir.join("attack/attack_summary.arrow"),
            kind: Some(ArtifactKind::AttackSummary),
        });
    }
    let labels: Vec<String> = sweep.iter().map(|p| p.label.clone()).collect();
    let mut args = base_args.clone();
    args.extend([
        "--run-dir".into(),
        s(&out),
        "--topologies".into(),
        labels.join(","),
        "--output".into(),
        s(&out.join("characterization.parquet")),
    ]);
    nodes.push(Node {
        id: "characterize".into(),
        stage: Stage::Characterize,
        topology: None,
        inputs,
        outputs: vec![out.join("characterization.parquet")],
        params: BTreeMap::from([("topologies".into(), json!(labels))]),
        args,
        deps: vec![],
    });
    let mut optimize_ins = vec![(
        "characterization",
        out.join("characterization.parquet"),
        Some(ArtifactKind::Characterization),
    )];
    if let Some(bdir) = &baseline_dir {
        optimize_ins.push((
            "baseline",
            bdir.join("train_summary.arrow"),
            Some(ArtifactKind::TrainSummary),
        ));
    }
    let odir = out.join("optimize");
    let (args, inputs) = wire(&base_args, optimize_ins, &odir);
    nodes.push(Node {
        id: "optimize".into(),
        stage: Stage::Optimize,
        topology: None,
        inputs,
        outputs: [
            "predictions.parquet",
            "frontier.parquet",
            "report.md",
            "plots/tradeoff.svg",
            "plots/channels.svg",
            "decision.arrow",
        ]
        .iter()
        .map(|f| odir.join(f))
        .collect(),
        params: BTreeMap::from([
            ("optimize".into(), v(&m.optimize)),
            ("sweep".into(), v(&m.sweep)),
        ]),
        args,
        deps: vec![],
    });
    for n in &mut nodes {
        n.params = flatten(std::mem::take(&mut n.params));
    }
    let mut dag = Dag {
        nodes,
        out_dir: out,
    };
    dag.link()?;
    dag.check_zones()?;
    Ok(dag)
}

/// Flattens nested parameter objects into dotted keys, so a change is reported by its exact
/// key (`slice.top_fraction`, not `slice`).
fn flatten(params: BTreeMap<String, Value>) -> BTreeMap<String, Value> {
    fn go(prefix: String, v: Value, out: &mut BTreeMap<String, Value>) {
        match v {
            Value::Object(map) => {
                for (k, v) in map {
                    go(format!("{prefix}.{k}"), v, out);
                }
            }
            other => {
                out.insert(prefix, other);
            }
        }
    }
    let mut out = BTreeMap::new();
    for (k, v) in params {
        go(k, v, &mut out);
    }
    out
}

/// Lets the DAG builder turn any serialisable parameter into JSON in one call.
mod erased {
    pub trait Ser {
        fn to_value(&self) -> serde_json::Value;
    }
    impl<T: serde::Serialize> Ser for T {
        fn to_value(&self) -> serde_json::Value {
            serde_json::to_value(self).expect("manifest values should serialise")
        }
    }
}

impl Dag {
    /// Recomputes every node's dependencies from its inputs and the other nodes' outputs, and
    /// checks that the graph is acyclic and that every input is either produced by a node or
    /// an external file that exists.
    pub fn link(&mut self) -> Result<(), RunError> {
        let producer: HashMap<PathBuf, usize> = self
            .nodes
            .iter()
            .enumerate()
            .flat_map(|(i, n)| n.outputs.iter().map(move |o| (o.clone(), i)))
            .collect();
        for i in 0..self.nodes.len() {
            let mut deps = Vec::new();
            for inp in &self.nodes[i].inputs {
                match producer.get(&inp.path) {
                    Some(&j) => deps.push(j),
                    None if inp.path.exists() => {}
                    None => {
                        return Err(RunError::Dag(format!(
                            "node `{}` reads {}, which no node produces and which does not exist (a dangling input{})",
                            self.nodes[i].id,
                            inp.path.display(),
                            if self.nodes[i].stage == Stage::Ingest {
                                "; run `make data`"
                            } else {
                                ""
                            }
                        )));
                    }
                }
            }
            deps.sort_unstable();
            deps.dedup();
            self.nodes[i].deps = deps;
        }
        self.order().map(|_| ())
    }

    /// A topological order of the nodes, or an error naming a cycle.
    pub fn order(&self) -> Result<Vec<usize>, RunError> {
        let n = self.nodes.len();
        let mut state = vec![0u8; n]; // 0 new, 1 on stack, 2 done
        let mut order = Vec::with_capacity(n);
        fn visit(
            dag: &Dag,
            i: usize,
            state: &mut [u8],
            order: &mut Vec<usize>,
            path: &mut Vec<usize>,
        ) -> Result<(), RunError> {
            match state[i] {
                2 => return Ok(()),
                1 => {
                    let start = path.iter().position(|&p| p == i).unwrap_or(0);
                    let cycle: Vec<&str> = path[start..]
                        .iter()
                        .chain([&i])
                        .map(|&k| dag.nodes[k].id.as_str())
                        .collect();
                    return Err(RunError::Dag(format!(
                        "the pipeline has a cycle: {}",
                        cycle.join(" -> ")
                    )));
                }
                _ => {}
            }
            state[i] = 1;
            path.push(i);
            for &d in &dag.nodes[i].deps {
                visit(dag, d, state, order, path)?;
            }
            path.pop();
            state[i] = 2;
            order.push(i);
            Ok(())
        }
        for i in 0..n {
            visit(self, i, &mut state, &mut order, &mut Vec::new())?;
        }
        Ok(order)
    }

    /// Refuses any edge that feeds a local artifact into a cloud stage.
    pub fn check_zones(&self) -> Result<(), RunError> {
        for n in &self.nodes {
            if n.stage.zone() != Zone::Cloud {
                continue;
            }
            for inp in &n.inputs {
                if let Some(kind) = inp.kind
                    && kind.zone()? == Zone::Local
                {
                    return Err(RunError::Dag(format!(
                        "zone violation: cloud stage node `{}` would read {} ({} artifact, LOCAL zone); local artifacts never go to the cloud",
                        n.id,
                        inp.path.display(),
                        kind
                    )));
                }
            }
        }
        Ok(())
    }

    /// The indices of `targets` and everything they depend on.
    pub fn closure(&self, targets: &[usize]) -> HashSet<usize> {
        let mut seen = HashSet::new();
        let mut stack: Vec<usize> = targets.to_vec();
        while let Some(i) = stack.pop() {
            if seen.insert(i) {
                stack.extend(&self.nodes[i].deps);
            }
        }
        seen
    }

    /// Indices of the nodes of a stage, optionally of one topology.
    pub fn select(&self, stage: Stage, topology: Option<&str>) -> Vec<usize> {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.stage == stage)
            .filter(|(_, n)| topology.is_none_or(|t| n.topology.as_deref() == Some(t)))
            .map(|(i, _)| i)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(
        id: &str,
        stage: Stage,
        inputs: &[(&str, Option<ArtifactKind>)],
        outputs: &[&str],
    ) -> Node {
        Node {
            id: id.into(),
            stage,
            topology: None,
            inputs: inputs
                .iter()
                .map(|(p, k)| Input {
                    path: PathBuf::from(p),
                    kind: *k,
                })
                .collect(),
            outputs: outputs.iter().map(PathBuf::from).collect(),
            params: BTreeMap::new(),
            args: vec![],
            deps: vec![],
        }
    }

    #[test]
    fn cycle_is_named() {
        let mut dag = Dag {
            nodes: vec![
                node(
                    "a",
                    Stage::Slice,
                    &[("/nonexistent/b.out", None)],
                    &["/nonexistent/a.out"],
                ),
                node(
                    "b",
                    Stage::Slice,
                    &[("/nonexistent/a.out", None)],
                    &["/nonexistent/b.out"],
                ),
            ],
            out_dir: PathBuf::from("x"),
        };
        let e = dag.link().unwrap_err().to_string();
        assert!(
            e.contains("cycle") && e.contains("a -> b -> a") || e.contains("b -> a -> b"),
            "{e}"
        );
    }

    #[test]
    fn a_local_artifact_into_a_cloud_stage_is_refused() {
        let mut dag = Dag {
            nodes: vec![
                node(
                    "ingest",
                    Stage::Ingest,
                    &[],
                    &["/nonexistent/images.parquet"],
                ),
                node(
                    "train/x",
                    Stage::Train,
                    &[("/nonexistent/images.parquet", Some(ArtifactKind::Images))],
                    &["/nonexistent/model"],
                ),
            ],
            out_dir: PathBuf::from("x"),
        };
        dag.link().unwrap();
        let e = dag.check_zones().unwrap_err().to_string();
        assert!(
            e.contains("zone violation") && e.contains("train/x") && e.contains("images.parquet"),
            "{e}"
        );
    }

    #[test]
    fn dangling_input_is_named() {
        let mut dag = Dag {
            nodes: vec![node(
                "a",
                Stage::Slice,
                &[("/nonexistent/zzz", None)],
                &["/nonexistent/a.out"],
            )],
            out_dir: PathBuf::from("x"),
        };
        let e = dag.link().unwrap_err().to_string();
        assert!(
            e.contains("dangling") && e.contains("/nonexistent/zzz"),
            "{e}"
        );
    }
}
