//! Expanding a manifest into the pipeline DAG: ingest once; per topology of the sweep a slice;
//! per cut one extraction at the widest channel count and a derivation for each narrower one.
//! Each node is one stage-binary invocation with exactly the arguments it needs.

use std::collections::{BTreeMap, HashMap, HashSet};

use std::path::{Path, PathBuf};

use arrow::array::{Array, StringArray};
use privynet_core::manifest::{
    Manifest, OptimizeMode, SelectionMethod, grid_channels, sample_channels,
};
use privynet_core::{ArtifactKind, Zone, column};
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

    pub fn from_name(name: &str) -> Option<Stage> {
        Stage::ALL.into_iter().find(|stage| stage.name() == name)
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
    let batch = batches.iter().find(|b| b.num_rows() > 0)?;
    let topology = column::<StringArray>(batch, "topology", &path).ok()?;
    (!topology.is_null(0)).then(|| topology.value(0).to_string())
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

/// The evaluated points plus, for each cut whose all-channel point is not among them, that
/// point: per cut, all C channels are extracted once (in the selection's order); every
/// narrower D is derived from that, and the attack stage's attackers compute their own
/// guesses from it. An added point is sliced and extracted for those uses only (it is not
/// trained or attacked).
fn with_wide_points(sweep: &[SweepPoint]) -> Vec<SweepPoint> {
    let mut points = sweep.to_vec();
    for p in sweep {
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
    points
}

/// The all-channel point of `p`'s cut among `points` (which [`with_wide_points`] completed).
fn wide_point<'a>(points: &'a [SweepPoint], p: &SweepPoint) -> &'a SweepPoint {
    points
        .iter()
        .find(|q| q.cut == p.cut && q.channels == p.cut_channels)
        .expect("every cut has its all-channel point")
}

/// A path as a command-line argument.
fn path_arg(p: &Path) -> String {
    p.display().to_string()
}

/// A manifest value as a JSON parameter.
fn param<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).expect("manifest values should serialise")
}

/// An input a stage binary is given as `--flag PATH`, with the artifact kind it holds.
type FlagInput<'a> = (&'a str, PathBuf, Option<ArtifactKind>);

/// What `privynet-train` writes into its output folder.
const TRAIN_OUTPUTS: [&str; 4] = [
    "cloud_model.bpk",
    "cloud_config.json",
    "train_metrics.arrow",
    "train_summary.arrow",
];

/// What `privynet-attack` writes into its output folder.
const ATTACK_OUTPUTS: [&str; 4] = [
    "privacy.parquet",
    "attack_summary.arrow",
    "attack_metrics.arrow",
    "reconstructions.png",
];

/// The cloud zone's files: the only outputs that may go to an object store.
const CLOUD_FILES: [&str; 6] = [
    "features.parquet",
    "topology.arrow",
    "cloud_model.bpk",
    "cloud_config.json",
    "train_metrics.arrow",
    "train_summary.arrow",
];

/// What `privynet-optimize` writes into its output folder.
const OPTIMIZE_OUTPUTS: [&str; 6] = [
    "predictions.parquet",
    "frontier.parquet",
    "report.md",
    "plots/tradeoff.svg",
    "plots/channels.svg",
    "decision.arrow",
];

/// Builds the DAG for a manifest file (the path is passed to every stage binary).
pub fn build(manifest_path: &Path, overrides: &[String]) -> Result<Dag, RunError> {
    let m = Manifest::load(manifest_path, overrides)?;
    let grid = resolve_sweep(&m)?;
    let sweep = evaluated(&m, &grid);
    let points = with_wide_points(&sweep);
    let plan = NodeBuilder::new(&m, manifest_path, overrides);
    let mut nodes = vec![plan.ingest()];
    nodes.extend(points.iter().map(|p| plan.slice(p)));
    nodes.extend(
        points
            .iter()
            .map(|p| plan.extract(p, wide_point(&points, p))),
    );
    nodes.extend(sweep.iter().map(|p| plan.train(p)));
    nodes.extend(plan.baseline());
    nodes.extend(sweep.iter().map(|p| plan.attack(p, wide_point(&points, p))));
    nodes.push(plan.characterize(&sweep));
    nodes.push(plan.optimize());
    for n in &mut nodes {
        n.params = flatten(std::mem::take(&mut n.params));
    }
    let mut dag = Dag {
        nodes,
        out_dir: plan.out,
    };
    dag.link()?;
    dag.check_zones()?;
    Ok(dag)
}

impl Node {
    /// A node of the pipeline, its id made of its stage and topology; its dependencies are
    /// left to [`Dag::link`].
    fn planned(
        stage: Stage,
        topology: Option<&str>,
        inputs: Vec<Input>,
        outputs: Vec<PathBuf>,
        params: BTreeMap<String, Value>,
        args: Vec<String>,
    ) -> Node {
        Node {
            id: topology.map_or_else(
                || stage.name().to_string(),
                |t| format!("{}/{t}", stage.name()),
            ),
            stage,
            topology: topology.map(str::to_string),
            inputs,
            outputs,
            params,
            args,
            deps: vec![],
        }
    }
}

/// Builds each stage's nodes for one manifest: where things go, and the arguments every stage
/// binary is given.
struct NodeBuilder<'a> {
    manifest: &'a Manifest,
    /// The local zone's folder.
    out: PathBuf,
    /// The cloud zone's place (a folder, or an object-store URL carried as a path).
    cloud: PathBuf,
    images: PathBuf,
    /// `--manifest PATH` and each `--set KEY=VALUE`: the start of every node's arguments.
    base_args: Vec<String>,
}

impl<'a> NodeBuilder<'a> {
    fn new(manifest: &'a Manifest, manifest_path: &Path, overrides: &[String]) -> Self {
        let mut base_args = vec!["--manifest".to_string(), path_arg(manifest_path)];
        for o in overrides {
            base_args.push("--set".into());
            base_args.push(o.clone());
        }
        NodeBuilder {
            manifest,
            out: manifest.out_dir(),
            cloud: manifest.cloud_dir(),
            images: manifest.images_path(),
            base_args,
        }
    }

    /// The arguments of a node that reads `ins` (each passed as `--flag PATH`) and writes to
    /// `output`, and its inputs: built from one list, so the command line and the up-to-date
    /// check always name the same files.
    fn args_and_inputs(&self, ins: Vec<FlagInput>, output: &Path) -> (Vec<String>, Vec<Input>) {
        let mut args = self.base_args.clone();
        let mut inputs = Vec::new();
        for (flag, path, kind) in ins {
            args.push(format!("--{flag}"));
            args.push(path_arg(&path));
            inputs.push(Input { path, kind });
        }
        args.push("--output".into());
        args.push(path_arg(output));
        (args, inputs)
    }

    /// The ingested images, as an input.
    fn images_input(&self) -> FlagInput<'static> {
        ("images", self.images.clone(), Some(ArtifactKind::Images))
    }

    fn ingest(&self) -> Node {
        let m = self.manifest;
        Node::planned(
            Stage::Ingest,
            None,
            vec![Input {
                path: m.dataset.path.clone(),
                kind: None,
            }],
            vec![self.images.clone()],
            BTreeMap::from([
                ("dataset".into(), param(&m.dataset)),
                ("seed".into(), json!(m.seed)),
            ]),
            self.base_args.clone(),
        )
    }

    fn slice(&self, p: &SweepPoint) -> Node {
        let m = self.manifest;
        let dir = self.out.join(&p.label);
        let topology = self.cloud.join(&p.label).join("topology.arrow");
        let mut inputs = vec![Input {
            path: m.model.path.clone(),
            kind: None,
        }];
        let mut params = BTreeMap::from([
            ("model".into(), param(&m.model.path)),
            ("model.input".into(), param(&m.model.input)),
            ("model.input_size".into(), json!(m.model.input_size)),
            ("slice".into(), param(&m.slice)),
            ("seed".into(), json!(m.seed)),
            ("cut".into(), json!(p.cut)),
            ("channels".into(), json!(p.channels)),
        ]);
        // Fisher scoring runs the model on the images; a random selection never reads them.
        if m.slice.method == SelectionMethod::FisherRandom {
            inputs.push(Input {
                path: self.images.clone(),
                kind: Some(ArtifactKind::Images),
            });
            params.insert("model.preprocess".into(), param(&m.model.preprocess));
        }
        let mut args = self.base_args.clone();
        args.extend([
            "--cut".into(),
            p.cut.clone(),
            "--channels".into(),
            p.channels.to_string(),
            "--images".into(),
            path_arg(&self.images),
            "--output".into(),
            path_arg(&dir),
            "--topology-output".into(),
            path_arg(&topology),
        ]);
        let outputs = vec![
            dir.join("local.onnx"),
            topology,
            dir.join("selection.arrow"),
        ];
        Node::planned(Stage::Slice, Some(&p.label), inputs, outputs, params, args)
    }

    /// The extraction of `p`'s features: run through the local network at the widest channel
    /// count of its cut (`wide`), derived from that one's features for any narrower count.
    fn extract(&self, p: &SweepPoint, wide: &SweepPoint) -> Node {
        let dir = self.out.join(&p.label);
        let cloud = self.cloud.join(&p.label);
        let features = cloud.join("features.parquet");
        let topology = (
            "topology",
            cloud.join("topology.arrow"),
            Some(ArtifactKind::Topology),
        );
        let (args, inputs, params) = if p.channels == wide.channels {
            let m = self.manifest;
            let model = ("model", dir.join("local.onnx"), None);
            let ins = vec![self.images_input(), model, topology];
            let (args, inputs) = self.args_and_inputs(ins, &features);
            let params = BTreeMap::from([
                ("model.preprocess".into(), param(&m.model.preprocess)),
                ("model.input_size".into(), json!(m.model.input_size)),
                ("extract".into(), param(&m.extract)),
            ]);
            (args, inputs, params)
        } else {
            let wide_dir = self.out.join(&wide.label);
            let ins = vec![
                (
                    "derive-from",
                    self.cloud.join(&wide.label).join("features.parquet"),
                    Some(ArtifactKind::Features),
                ),
                (
                    "wide-selection",
                    wide_dir.join("selection.arrow"),
                    Some(ArtifactKind::Selection),
                ),
                (
                    "selection",
                    dir.join("selection.arrow"),
                    Some(ArtifactKind::Selection),
                ),
                topology,
            ];
            let (args, inputs) = self.args_and_inputs(ins, &features);
            (args, inputs, BTreeMap::new())
        };
        let outputs = vec![features];
        Node::planned(
            Stage::Extract,
            Some(&p.label),
            inputs,
            outputs,
            params,
            args,
        )
    }

    /// What a training node (a topology's or the raw baseline) depends on in the manifest.
    fn train_params(&self) -> BTreeMap<String, Value> {
        BTreeMap::from([
            ("train".into(), param(&self.manifest.train)),
            ("seed".into(), json!(self.manifest.seed)),
        ])
    }

    fn train(&self, p: &SweepPoint) -> Node {
        let dir = self.cloud.join(&p.label);
        let train_dir = dir.join("train");
        let ins = vec![
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
        ];
        let (mut args, inputs) = self.args_and_inputs(ins, &train_dir);
        // A training run killed with the pipeline continues from its last epoch on the next
        // run; a finished one leaves no state, so this changes nothing else.
        args.push("--resume".into());
        let outputs = TRAIN_OUTPUTS.iter().map(|f| train_dir.join(f)).collect();
        let params = self.train_params();
        Node::planned(Stage::Train, Some(&p.label), inputs, outputs, params, args)
    }

    /// Where the raw baseline trains, when the manifest asks for it.
    fn baseline_dir(&self) -> Option<PathBuf> {
        let wanted = self.manifest.optimize.raw_baseline;
        wanted.then(|| self.out.join("baseline-raw"))
    }

    /// The same cloud network on the images themselves, so the report can say what the split
    /// costs in accuracy. It reads the raw images: a local node (Stage::Baseline's zone).
    fn baseline(&self) -> Option<Node> {
        let dir = self.baseline_dir()?;
        let (mut args, inputs) = self.args_and_inputs(vec![self.images_input()], &dir);
        args.extend(["--baseline".into(), "raw".into(), "--resume".into()]);
        let outputs = TRAIN_OUTPUTS.iter().map(|f| dir.join(f)).collect();
        let params = self.train_params();
        Some(Node::planned(
            Stage::Baseline,
            None,
            inputs,
            outputs,
            params,
            args,
        ))
    }

    fn attack(&self, p: &SweepPoint, wide: &SweepPoint) -> Node {
        let m = self.manifest;
        let dir = self.out.join(&p.label);
        let cloud = self.cloud.join(&p.label);
        let wide_dir = self.out.join(&wide.label);
        let attack_dir = dir.join("attack");
        let ins = vec![
            self.images_input(),
            (
                "features",
                cloud.join("features.parquet"),
                Some(ArtifactKind::Features),
            ),
            (
                "topology",
                cloud.join("topology.arrow"),
                Some(ArtifactKind::Topology),
            ),
            (
                "selection",
                dir.join("selection.arrow"),
                Some(ArtifactKind::Selection),
            ),
            (
                "full-features",
                self.cloud.join(&wide.label).join("features.parquet"),
                Some(ArtifactKind::Features),
            ),
            (
                "full-selection",
                wide_dir.join("selection.arrow"),
                Some(ArtifactKind::Selection),
            ),
            // The optimisation attacker differentiates through the local network.
            ("local-network", dir.join("local.onnx"), None),
        ];
        let (args, inputs) = self.args_and_inputs(ins, &attack_dir);
        let outputs = ATTACK_OUTPUTS.iter().map(|f| attack_dir.join(f)).collect();
        let params = BTreeMap::from([
            ("attack".into(), param(&m.attack)),
            ("model.preprocess".into(), param(&m.model.preprocess)),
            ("seed".into(), json!(m.seed)),
            ("train.classes".into(), json!(m.train.classes)),
        ]);
        Node::planned(Stage::Attack, Some(&p.label), inputs, outputs, params, args)
    }

    /// Gathers every evaluated topology's summaries into the characterization table.
    fn characterize(&self, sweep: &[SweepPoint]) -> Node {
        let mut inputs = Vec::new();
        for p in sweep {
            for (root, file, kind) in [
                (&self.cloud, "topology.arrow", ArtifactKind::Topology),
                (
                    &self.cloud,
                    "train/train_summary.arrow",
                    ArtifactKind::TrainSummary,
                ),
                (
                    &self.out,
                    "attack/attack_summary.arrow",
                    ArtifactKind::AttackSummary,
                ),
            ] {
                inputs.push(Input {
                    path: root.join(&p.label).join(file),
                    kind: Some(kind),
                });
            }
        }
        let labels: Vec<String> = sweep.iter().map(|p| p.label.clone()).collect();
        let table = self.out.join("characterization.parquet");
        let mut args = self.base_args.clone();
        args.extend([
            "--run-dir".into(),
            path_arg(&self.out),
            "--cloud-dir".into(),
            path_arg(&self.cloud),
            "--topologies".into(),
            labels.join(","),
            "--output".into(),
            path_arg(&table),
        ]);
        let params = BTreeMap::from([("topologies".into(), json!(labels))]);
        Node::planned(Stage::Characterize, None, inputs, vec![table], params, args)
    }

    fn optimize(&self) -> Node {
        let m = self.manifest;
        let mut ins = vec![(
            "characterization",
            self.out.join("characterization.parquet"),
            Some(ArtifactKind::Characterization),
        )];
        if let Some(baseline_dir) = self.baseline_dir() {
            ins.push((
                "baseline",
                baseline_dir.join("train_summary.arrow"),
                Some(ArtifactKind::TrainSummary),
            ));
        }
        let dir = self.out.join("optimize");
        let (args, inputs) = self.args_and_inputs(ins, &dir);
        let outputs = OPTIMIZE_OUTPUTS.iter().map(|f| dir.join(f)).collect();
        let params = BTreeMap::from([
            ("optimize".into(), param(&m.optimize)),
            ("sweep".into(), param(&m.sweep)),
        ]);
        Node::planned(Stage::Optimize, None, inputs, outputs, params, args)
    }
}

/// Flattens nested parameter objects into dotted keys, so a change is reported by its exact
/// key (`slice.top_fraction`, not `slice`).
fn flatten(params: BTreeMap<String, Value>) -> BTreeMap<String, Value> {
    fn flatten_into(prefix: String, value: Value, out: &mut BTreeMap<String, Value>) {
        match value {
            Value::Object(map) => {
                for (key, inner) in map {
                    flatten_into(format!("{prefix}.{key}"), inner, out);
                }
            }
            other => {
                out.insert(prefix, other);
            }
        }
    }
    let mut out = BTreeMap::new();
    for (key, value) in params {
        flatten_into(key, value, &mut out);
    }
    out
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

    /// Refuses any edge that feeds a local artifact into a cloud stage, and any node that would
    /// write something other than a cloud-zone artifact to an object store.
    pub fn check_zones(&self) -> Result<(), RunError> {
        self.check_places()?;
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

    /// Only cloud-zone files, written by cloud-side nodes (never the raw baseline, which trained
    /// on the images), may have an object-store place.
    fn check_places(&self) -> Result<(), RunError> {
        for n in &self.nodes {
            for out in n.outputs.iter().filter(|o| privynet_store::is_remote(o)) {
                let name = out.file_name().and_then(|f| f.to_str()).unwrap_or("");
                if n.stage == Stage::Baseline || !CLOUD_FILES.contains(&name) {
                    return Err(RunError::Dag(format!(
                        "zone violation: node `{}` would write {} (a LOCAL-zone {} output) to an object store; local artifacts never leave this machine",
                        n.id,
                        out.display(),
                        n.stage.name()
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
    fn only_cloud_files_may_go_to_an_object_store() {
        let dag = |stage, out: &str| Dag {
            nodes: vec![node("n", stage, &[], &[out])],
            out_dir: PathBuf::from("x"),
        };
        let ok = dag(Stage::Extract, "s3://b/run/fire3-d8/features.parquet");
        ok.check_zones().unwrap();
        let e = dag(Stage::Slice, "s3://b/run/fire3-d8/selection.arrow")
            .check_zones()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("zone violation") && e.contains("selection.arrow"),
            "{e}"
        );
        let e = dag(
            Stage::Baseline,
            "s3://b/run/baseline-raw/train_summary.arrow",
        )
        .check_zones()
        .unwrap_err()
        .to_string();
        assert!(e.contains("`n`") && e.contains("baseline"), "{e}");
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
