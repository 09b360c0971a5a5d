//! Each stage's nodes for one manifest: where each node's files go and the command line its
//! binary is given. A stage's declaration (`crate::stage`) names its inputs, outputs and the
//! manifest keys it depends on; its planner here says only which files, for which topology.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use privynet_core::Zone;
use privynet_core::defence::Defence;
use privynet_core::manifest::{Manifest, SelectionMethod};
use serde_json::{Value, json};

use super::node::{Input, Node};
use super::sweep::{SweepPoint, decision_path, settled_choice, split_label, wide_point};
use crate::stage::{Stage, Via};

/// The file name of the noise secret in the local zone's folder: 32 random bytes made once per
/// run folder, read by the defence stages only, and passed only as this path.
pub const SECRET_FILE: &str = "secret.key";

/// Where the noise secret of the run folder `out` is.
pub fn secret_path(out: &Path) -> PathBuf {
    out.join(SECRET_FILE)
}

/// The topologies a DAG covers.
pub struct Sweep {
    /// The topologies evaluated: trained, attacked, characterized.
    pub evaluated: Vec<SweepPoint>,
    /// Those plus each defended one's base and, per cut, its undefended all-channel point
    /// (sliced and extracted to serve the defences, the derivations and the attackers).
    pub points: Vec<SweepPoint>,
}

/// A node's particulars, which its stage's planner gives and [`Planner::node`] assembles.
#[derive(Default)]
pub struct Parts {
    /// Inputs, by their declared names, with their paths: a flag's is passed as `--name PATH`.
    pub inputs: Vec<(&'static str, PathBuf)>,
    /// `--output PATH`, where the binary takes one.
    pub output: Option<PathBuf>,
    /// What the node writes: declared output names, each in its folder.
    pub outputs: Vec<(&'static str, PathBuf)>,
    /// Arguments after the inputs and `--output`.
    pub args: Vec<String>,
    /// Parameters that are the node's own (its cut, ...), beside the declared manifest keys.
    pub params: BTreeMap<String, Value>,
    /// The declared manifest keys do not apply (a derivation reads only its inputs).
    pub no_manifest_params: bool,
}

/// Builds each stage's nodes for one manifest.
pub struct Planner<'a> {
    manifest: &'a Manifest,
    /// The manifest as JSON, where the declared keys are looked up.
    tree: Value,
    /// The local zone's folder.
    pub(crate) out: PathBuf,
    /// The cloud zone's place (a folder, or an object-store URL carried as a path).
    cloud: PathBuf,
    images: PathBuf,
    /// The noise secret ([`secret_path`]), local.
    secret: PathBuf,
    /// `--manifest PATH` and each `--set KEY=VALUE`: the start of every node's arguments.
    base_args: Vec<String>,
    /// The decision's measured choice ([`settled_choice`]), read once per planning.
    choice: std::sync::OnceLock<Option<String>>,
}

/// A path as a command-line argument.
fn path_arg(p: &Path) -> String {
    p.display().to_string()
}

impl<'a> Planner<'a> {
    pub fn new(manifest: &'a Manifest, manifest_path: &Path, overrides: &[String]) -> Self {
        let mut base_args = vec!["--manifest".to_string(), path_arg(manifest_path)];
        for o in overrides {
            base_args.push("--set".into());
            base_args.push(o.clone());
        }
        Planner {
            manifest,
            tree: serde_json::to_value(manifest).expect("a manifest serialises"),
            out: manifest.out_dir(),
            cloud: manifest.cloud_dir(),
            images: manifest.images_path(),
            secret: secret_path(&manifest.out_dir()),
            base_args,
            choice: std::sync::OnceLock::new(),
        }
    }

    /// The topology the decision chose once it was trained and attacked; `None` before.
    fn choice(&self) -> Option<&str> {
        self.choice
            .get_or_init(|| settled_choice(&self.out))
            .as_deref()
    }

    /// The nodes of `stage`. A new stage's planner joins this match (the compiler asks for
    /// it), beside its declaration in `crate::stage`.
    pub fn plan(&self, stage: Stage, sweep: &Sweep) -> Vec<Node> {
        match stage {
            Stage::Ingest => self.ingest(sweep),
            Stage::Slice => self.slice(sweep),
            Stage::Extract => self.extract(sweep),
            Stage::Defend => self.defend(sweep),
            Stage::Train => self.train(sweep),
            Stage::Baseline => self.baseline(sweep),
            Stage::Attack => self.attack(sweep),
            Stage::Characterize => self.characterize(sweep),
            Stage::Optimize => self.optimize(sweep),
            Stage::FinalIngest => self.final_ingest(sweep),
            Stage::FinalExtract => self.final_extract(sweep),
            Stage::FinalDefend => self.final_defend(sweep),
            Stage::FinalTrain => self.final_train(sweep),
            Stage::Deploy => self.deploy(sweep),
        }
    }

    /// The manifest's value at a dotted key (`null` where it has none).
    fn manifest_value(&self, key: &str) -> Value {
        key.split('.')
            .try_fold(&self.tree, |v, k| v.get(k))
            .cloned()
            .unwrap_or(Value::Null)
    }

    /// Assembles a node of `stage` from its declaration and `parts`: the command line and the
    /// inputs come from one list, so the command line and the up-to-date check always name
    /// the same files.
    pub fn node(&self, stage: Stage, topology: Option<&str>, parts: Parts) -> Node {
        let mut args = self.base_args.clone();
        let mut inputs = Vec::new();
        for (name, path) in parts.inputs {
            let port = stage.input(name);
            if port.via == Via::Flag {
                args.push(format!("--{name}"));
                args.push(path_arg(&path));
            }
            inputs.push(Input {
                path,
                kind: port.kind,
            });
        }
        if let Some(output) = &parts.output {
            args.push("--output".into());
            args.push(path_arg(output));
        }
        args.extend(parts.args);
        let mut params = parts.params;
        if !parts.no_manifest_params {
            for key in stage.declaration().stale_on {
                params.insert((*key).to_string(), self.manifest_value(key));
            }
        }
        let outputs = parts
            .outputs
            .into_iter()
            .map(|(name, dir)| dir.join(stage.output(name).name))
            .collect();
        Node {
            id: topology.map_or_else(
                || stage.name().to_string(),
                |t| format!("{}/{t}", stage.name()),
            ),
            stage,
            topology: topology.map(str::to_string),
            inputs,
            outputs,
            params: flatten(params),
            args,
            deps: vec![],
        }
    }

    /// Every declared output of `stage`, in `dir`.
    fn all_outputs(stage: Stage, dir: &Path) -> Vec<(&'static str, PathBuf)> {
        let outputs = stage.declaration().outputs.iter();
        outputs.map(|p| (p.name, dir.to_path_buf())).collect()
    }

    fn ingest(&self, _: &Sweep) -> Vec<Node> {
        let parts = Parts {
            inputs: vec![("dataset.path", self.manifest.dataset.path.clone())],
            outputs: vec![("images.parquet", self.images.parent().unwrap().into())],
            ..Parts::default()
        };
        vec![self.node(Stage::Ingest, None, parts)]
    }

    fn slice(&self, sweep: &Sweep) -> Vec<Node> {
        let m = self.manifest;
        let plan = |p: &SweepPoint| {
            let dir = self.out.join(&p.label);
            let cloud = self.cloud.join(&p.label);
            let mut parts = Parts {
                inputs: vec![("model.path", m.model.path.clone())],
                outputs: vec![
                    ("local.onnx", dir.clone()),
                    ("topology.arrow", cloud.clone()),
                    ("selection.arrow", dir.clone()),
                ],
                params: BTreeMap::from([
                    ("cut".into(), json!(p.cut)),
                    ("channels".into(), json!(p.channels)),
                ]),
                ..Parts::default()
            };
            parts.args = ["--cut", &p.cut, "--channels", &p.channels.to_string()]
                .map(String::from)
                .to_vec();
            // Fisher scoring runs the model on the images; a random selection never reads
            // them, so only then are they an input (the flag is harmless either way).
            if m.slice.method == SelectionMethod::FisherRandom {
                parts.inputs.push(("images", self.images.clone()));
                let preprocess = self.manifest_value("model.preprocess");
                parts.params.insert("model.preprocess".into(), preprocess);
            } else {
                parts
                    .args
                    .extend(["--images".into(), path_arg(&self.images)]);
            }
            parts.output = Some(dir);
            let topology = cloud.join("topology.arrow");
            parts
                .args
                .extend(["--topology-output".into(), path_arg(&topology)]);
            self.node(Stage::Slice, Some(&p.label), parts)
        };
        // A defended point shares its base's selection and local network.
        undefended(&sweep.points).map(plan).collect()
    }

    /// The extraction of each point's features: run through the local network at the widest
    /// channel count of its cut, derived from that one's features for any narrower count.
    fn extract(&self, sweep: &Sweep) -> Vec<Node> {
        let plan = |p: &SweepPoint| {
            let wide = wide_point(&sweep.points, p);
            let dir = self.out.join(&p.label);
            let cloud = self.cloud.join(&p.label);
            let topology = ("topology", cloud.join("topology.arrow"));
            let mut parts = if p.channels == wide.channels {
                let model = ("model", dir.join("local.onnx"));
                Parts {
                    inputs: vec![("images", self.images.clone()), model, topology],
                    ..Parts::default()
                }
            } else {
                let wide_cloud = self.cloud.join(&wide.label);
                Parts {
                    inputs: vec![
                        ("derive-from", wide_cloud.join("features.parquet")),
                        (
                            "wide-selection",
                            self.out.join(&wide.label).join("selection.arrow"),
                        ),
                        ("selection", dir.join("selection.arrow")),
                        topology,
                    ],
                    no_manifest_params: true,
                    ..Parts::default()
                }
            };
            parts.output = Some(cloud.join("features.parquet"));
            parts.outputs = vec![("features.parquet", cloud)];
            self.node(Stage::Extract, Some(&p.label), parts)
        };
        undefended(&sweep.points).map(plan).collect()
    }

    /// Each defended point's features: its base's, with the defence applied on this machine
    /// (noise keyed by the local secret, then quantisation), written to the cloud zone with
    /// the defended topology. The undefended features never leave through this node.
    fn defend(&self, sweep: &Sweep) -> Vec<Node> {
        let plan = |p: &SweepPoint| {
            let base = self.cloud.join(p.base_label());
            let cloud = self.cloud.join(&p.label);
            let mut args = defence_args(p.defence);
            let topology = cloud.join("topology.arrow");
            args.extend(["--topology-output".into(), path_arg(&topology)]);
            let parts = Parts {
                inputs: vec![
                    ("features", base.join("features.parquet")),
                    ("topology", base.join("topology.arrow")),
                    ("secret", self.secret.clone()),
                ],
                output: Some(cloud.join("features.parquet")),
                outputs: Self::all_outputs(Stage::Defend, &cloud),
                args,
                params: defence_params(p.defence),
                ..Parts::default()
            };
            self.node(Stage::Defend, Some(&p.label), parts)
        };
        sweep
            .points
            .iter()
            .filter(|p| p.is_defended())
            .map(plan)
            .collect()
    }

    fn train(&self, sweep: &Sweep) -> Vec<Node> {
        let plan = |p: &SweepPoint| {
            let dir = self.cloud.join(&p.label);
            let train_dir = dir.join("train");
            let parts = Parts {
                inputs: vec![
                    ("features", dir.join("features.parquet")),
                    ("topology", dir.join("topology.arrow")),
                ],
                outputs: Self::all_outputs(Stage::Train, &train_dir),
                output: Some(train_dir),
                // A training run killed with the pipeline continues from its last epoch on the
                // next run; a finished one leaves no state, so this changes nothing else.
                args: vec!["--resume".into()],
                ..Parts::default()
            };
            self.node(Stage::Train, Some(&p.label), parts)
        };
        sweep.evaluated.iter().map(plan).collect()
    }

    /// Where the raw baseline trains, when the manifest asks for it.
    fn baseline_dir(&self) -> Option<PathBuf> {
        let wanted = self.manifest.optimize.raw_baseline;
        wanted.then(|| self.out.join("baseline-raw"))
    }

    /// The same cloud network on the images themselves, so the report can say what the split
    /// costs in accuracy. It reads the raw images: a local node (Stage::Baseline's zone).
    fn baseline(&self, _: &Sweep) -> Vec<Node> {
        let Some(dir) = self.baseline_dir() else {
            return vec![];
        };
        let parts = Parts {
            inputs: vec![("images", self.images.clone())],
            outputs: Self::all_outputs(Stage::Baseline, &dir),
            output: Some(dir),
            args: ["--baseline", "raw", "--resume"].map(String::from).to_vec(),
            ..Parts::default()
        };
        vec![self.node(Stage::Baseline, None, parts)]
    }

    fn attack(&self, sweep: &Sweep) -> Vec<Node> {
        let plan = |p: &SweepPoint| {
            let wide = wide_point(&sweep.points, p);
            // A defended point's selection and local network are its base's; what the cloud
            // sees (features, topology) its own.
            let base = self.out.join(p.base_label());
            let cloud = self.cloud.join(&p.label);
            let attack_dir = self.out.join(&p.label).join("attack");
            let parts = Parts {
                inputs: vec![
                    ("images", self.images.clone()),
                    ("features", cloud.join("features.parquet")),
                    ("topology", cloud.join("topology.arrow")),
                    ("selection", base.join("selection.arrow")),
                    (
                        "full-features",
                        self.cloud.join(&wide.label).join("features.parquet"),
                    ),
                    (
                        "full-selection",
                        self.out.join(&wide.label).join("selection.arrow"),
                    ),
                    ("local-network", base.join("local.onnx")),
                ],
                outputs: Self::all_outputs(Stage::Attack, &attack_dir),
                output: Some(attack_dir),
                ..Parts::default()
            };
            self.node(Stage::Attack, Some(&p.label), parts)
        };
        sweep.evaluated.iter().map(plan).collect()
    }

    /// Gathers every evaluated topology's summaries into the characterization table.
    fn characterize(&self, sweep: &Sweep) -> Vec<Node> {
        let mut inputs = Vec::new();
        for p in &sweep.evaluated {
            for port in Stage::Characterize.declaration().inputs {
                // The training stage's files are the cloud's; the audit's are local.
                let cloud = port
                    .kind
                    .is_some_and(|k| k.zone().is_ok_and(|z| z == Zone::Cloud));
                let root = if cloud { &self.cloud } else { &self.out };
                inputs.push((port.name, root.join(&p.label).join(port.name)));
            }
        }
        let labels: Vec<String> = sweep.evaluated.iter().map(|p| p.label.clone()).collect();
        let table = self.out.join("characterization.parquet");
        let parts = Parts {
            inputs,
            args: vec![
                "--run-dir".into(),
                path_arg(&self.out),
                "--cloud-dir".into(),
                path_arg(&self.cloud),
                "--topologies".into(),
                labels.join(","),
            ],
            output: Some(table),
            outputs: vec![("characterization.parquet", self.out.clone())],
            params: BTreeMap::from([("topologies".into(), json!(labels))]),
            ..Parts::default()
        };
        vec![self.node(Stage::Characterize, None, parts)]
    }

    fn optimize(&self, _: &Sweep) -> Vec<Node> {
        let mut inputs = vec![(
            "characterization",
            self.out.join("characterization.parquet"),
        )];
        if let Some(baseline_dir) = self.baseline_dir() {
            inputs.push(("baseline", baseline_dir.join("train_summary.arrow")));
        }
        let dir = self.out.join("optimize");
        let parts = Parts {
            inputs,
            outputs: Self::all_outputs(Stage::Optimize, &dir),
            output: Some(dir),
            ..Parts::default()
        };
        vec![self.node(Stage::Optimize, None, parts)]
    }
}

impl Planner<'_> {
    /// The final training's folders (local, cloud) when the manifest has a `final` section.
    fn final_dirs(&self) -> Option<(PathBuf, PathBuf)> {
        let present = self.manifest.final_training.is_some();
        present.then(|| (self.out.join("final"), self.cloud.join("final")))
    }

    /// The final training's images; they do not depend on the choice, so they are made while
    /// the topologies are characterized.
    fn final_ingest(&self, _: &Sweep) -> Vec<Node> {
        let Some((dir, _)) = self.final_dirs() else {
            return vec![];
        };
        let parts = Parts {
            inputs: vec![("dataset.path", self.manifest.dataset.path.clone())],
            output: Some(dir.join("images.parquet")),
            outputs: vec![("images.parquet", dir)],
            args: vec!["--final".into()],
            ..Parts::default()
        };
        vec![self.node(Stage::FinalIngest, None, parts)]
    }

    /// The chosen topology's features of the final images, through its own local network (a
    /// defended choice's base's). Per topology, so that a decision that returns to an earlier
    /// choice finds it done.
    fn final_extract(&self, _: &Sweep) -> Vec<Node> {
        let (Some((dir, cloud)), Some(t)) = (self.final_dirs(), self.choice()) else {
            return vec![];
        };
        let (base, defence) = split_label(t);
        // A defended choice's undefended features stay on this machine: only their defended
        // form (`final-defend`) goes to the cloud zone.
        let root = if defence.is_none() {
            cloud.join(t)
        } else {
            dir.join(base)
        };
        let parts = Parts {
            inputs: vec![
                ("images", dir.join("images.parquet")),
                ("model", self.out.join(base).join("local.onnx")),
                ("topology", self.cloud.join(base).join("topology.arrow")),
            ],
            output: Some(root.join("features.parquet")),
            outputs: vec![("features.parquet", root)],
            ..Parts::default()
        };
        vec![self.node(Stage::FinalExtract, Some(t), parts)]
    }

    /// A defended choice's final features: its base's final features with the defence
    /// applied, reusing the encoding the characterized features carry (`--encoding-from`),
    /// so the deployed encoding is the one whose privacy was measured.
    fn final_defend(&self, _: &Sweep) -> Vec<Node> {
        let (Some((dir, cloud)), Some(t)) = (self.final_dirs(), self.choice()) else {
            return vec![];
        };
        let (base, defence) = split_label(t);
        if defence.is_none() {
            return vec![];
        }
        let cloud = cloud.join(t);
        let parts = Parts {
            inputs: vec![
                ("features", dir.join(base).join("features.parquet")),
                ("topology", self.cloud.join(base).join("topology.arrow")),
                ("secret", self.secret.clone()),
                ("encoding-from", self.cloud.join(t).join("features.parquet")),
            ],
            output: Some(cloud.join("features.parquet")),
            outputs: vec![("features.parquet", cloud)],
            args: defence_args(defence),
            params: defence_params(defence),
            ..Parts::default()
        };
        vec![self.node(Stage::FinalDefend, Some(t), parts)]
    }

    /// The chosen topology's cloud network on the final features (a cloud stage).
    fn final_train(&self, _: &Sweep) -> Vec<Node> {
        let (Some((_, cloud)), Some(t)) = (self.final_dirs(), self.choice()) else {
            return vec![];
        };
        let cloud = cloud.join(t);
        let train_dir = cloud.join("train");
        let parts = Parts {
            inputs: vec![
                ("features", cloud.join("features.parquet")),
                ("topology", self.cloud.join(t).join("topology.arrow")),
            ],
            outputs: Self::all_outputs(Stage::FinalTrain, &train_dir),
            output: Some(train_dir),
            args: ["--final", "--resume"].map(String::from).to_vec(),
            ..Parts::default()
        };
        vec![self.node(Stage::FinalTrain, Some(t), parts)]
    }

    /// The decision's topology as the two halves and a card, once the decision names one that
    /// was trained and attacked (not before: until then there is nothing measured to deploy).
    /// Its inputs are that topology's files (the final training's, with a `final` section);
    /// when the optimizer reruns in the same pass and chooses another, the binary deploys the
    /// new choice and the runner's next pass, planned from the new decision, records the
    /// right files.
    fn deploy(&self, _: &Sweep) -> Vec<Node> {
        let Some(topology) = self.choice() else {
            return vec![];
        };
        let mut inputs = vec![
            ("decision", decision_path(&self.out)),
            (
                "characterization",
                self.out.join("characterization.parquet"),
            ),
        ];
        // The training's files are the cloud's (the final training's when there is one), as
        // are the features it trained on, whose metadata holds a defended choice's encoding;
        // the local network is local (a defended choice's is its base's).
        let (base, defence) = split_label(topology);
        let final_root = self.final_dirs().map(|(_, cloud)| cloud.join(topology));
        let train_root = final_root.unwrap_or(self.cloud.join(topology));
        let local_root = self.out.join(base);
        for port in Stage::Deploy.declaration().inputs {
            if port.via != Via::Folder {
                continue;
            }
            let root = match port.name {
                "features.parquet" if defence.is_none() => continue,
                "features.parquet" => &train_root,
                name if name.starts_with("train/") => &train_root,
                _ => &local_root,
            };
            inputs.push((port.name, root.join(port.name)));
        }
        let dir = self.out.join("deploy");
        let mut args = vec![
            "--run-dir".into(),
            path_arg(&self.out),
            "--cloud-dir".into(),
            path_arg(&self.cloud),
        ];
        // In a pass whose optimizer changes its mind, this node was planned for the old choice
        // and the new one's final training does not exist yet: the binary then defers to the
        // next pass, planned from the new decision.
        if let Some((_, root)) = self.final_dirs() {
            args.extend([
                "--final-dir".into(),
                path_arg(&root),
                "--defer-missing".into(),
            ]);
        }
        let parts = Parts {
            inputs,
            outputs: Self::all_outputs(Stage::Deploy, &dir),
            output: Some(dir),
            args,
            ..Parts::default()
        };
        vec![self.node(Stage::Deploy, None, parts)]
    }
}

/// The undefended points: those that are sliced and extracted.
fn undefended(points: &[SweepPoint]) -> impl Iterator<Item = &SweepPoint> {
    points.iter().filter(|p| !p.is_defended())
}

/// The defence stage's flags for `defence`.
fn defence_args(defence: Defence) -> Vec<String> {
    vec![
        "--noise".into(),
        defence.noise.to_string(),
        "--bits".into(),
        defence.bits.to_string(),
    ]
}

/// A defence node's own parameters: a change of either reruns it.
fn defence_params(defence: Defence) -> BTreeMap<String, Value> {
    BTreeMap::from([
        ("noise".into(), json!(defence.noise)),
        ("bits".into(), json!(defence.bits)),
    ])
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

#[cfg(test)]
mod tests {
    use super::super::sweep::with_wide_points;
    use super::*;
    use crate::dag::Dag;

    /// A manifest over `dir` (its model and dataset files made, so that the DAG links), with
    /// `sweep` and a final training.
    fn manifest(dir: &Path, sweep: &str) -> (PathBuf, Manifest) {
        std::fs::write(dir.join("model.onnx"), b"m").unwrap();
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let text = format!(
            "name: t\nseed: 7\n\
             dataset: {{format: cifar10-binary, path: {d}/data, \
             splits: {{train: 10, val: 10, attacker: 10, test: 10}}}}\n\
             model: {{path: {d}/model.onnx, input_size: 32}}\n\
             sweep: {sweep}\n\
             storage: {{local: {d}/run, cloud: {d}/cloud}}\n\
             final: {{train_images: 40, epochs: 1}}\n",
            d = dir.display()
        );
        let path = dir.join("m.yaml");
        std::fs::write(&path, &text).unwrap();
        let m = Manifest::load(&path, &[]).unwrap();
        (path, m)
    }

    fn point(channels: i64, noise: f64, bits: u8) -> SweepPoint {
        let defence = Defence::new(noise, bits).unwrap();
        SweepPoint {
            cut: "fire3".into(),
            label: format!("fire3-d{channels}{}", defence.suffix()),
            channels,
            cut_channels: 128,
            defence,
        }
    }

    /// The DAG of the grid fire3 x [4, all] x noise [0, 0.5] x bits [32, 8], all evaluated,
    /// with the decision's measured choice `choice`.
    fn defended_dag(dir: &Path, choice: Option<&str>) -> Dag {
        let grid = "{cuts: [fire3], channels: [4, all], noise: [0, 0.5], bits: [32, 8]}";
        let (path, m) = manifest(dir, grid);
        let evaluated: Vec<SweepPoint> = [4, 128]
            .into_iter()
            .flat_map(|d| m.sweep.defences().into_iter().map(move |x| (d, x)))
            .map(|(d, x)| point(d, x.noise, x.bits))
            .collect();
        let points = with_wide_points(&evaluated);
        let sweep = Sweep { evaluated, points };
        let planner = Planner::new(&m, &path, &[]);
        planner.choice.set(choice.map(str::to_string)).unwrap();
        let nodes: Vec<Node> = Stage::all().flat_map(|s| planner.plan(s, &sweep)).collect();
        super::super::ensure_secret_if_read(&nodes, &planner.out).unwrap();
        let mut dag = Dag {
            nodes,
            out_dir: planner.out.clone(),
        };
        dag.link().unwrap();
        dag.check_zones().unwrap();
        dag
    }

    fn node<'a>(dag: &'a Dag, id: &str) -> &'a Node {
        let ids: Vec<&str> = dag.nodes.iter().map(|n| n.id.as_str()).collect();
        dag.nodes
            .iter()
            .find(|n| n.id == id)
            .unwrap_or_else(|| panic!("no node {id} in {ids:?}"))
    }

    /// The value after `flag` in a node's arguments.
    fn arg<'a>(n: &'a Node, flag: &str) -> &'a str {
        let i = n.args.iter().position(|a| a == flag).unwrap();
        &n.args[i + 1]
    }

    #[test]
    fn a_defended_sweep_slices_its_bases_and_defends_their_features() {
        let dir = tempfile::tempdir().unwrap();
        let dag = defended_dag(dir.path(), None);
        let ids: Vec<&str> = dag.nodes.iter().map(|n| n.id.as_str()).collect();
        let labels = [
            "fire3-d4",
            "fire3-d4-q8",
            "fire3-d4-n0.5",
            "fire3-d4-n0.5-q8",
            "fire3-d128",
            "fire3-d128-q8",
            "fire3-d128-n0.5",
            "fire3-d128-n0.5-q8",
        ];
        let mut expected = vec!["ingest".to_string()];
        for stage in ["slice", "extract"] {
            expected.extend(["fire3-d4", "fire3-d128"].map(|l| format!("{stage}/{l}")));
        }
        let defended = labels
            .iter()
            .filter(|l| l.contains("-n") || l.contains("-q"));
        expected.extend(defended.map(|l| format!("defend/{l}")));
        expected.extend(labels.map(|l| format!("train/{l}")));
        expected.push("baseline".into());
        expected.extend(labels.map(|l| format!("attack/{l}")));
        expected.extend(["characterize", "optimize", "final-ingest"].map(String::from));
        assert_eq!(ids, expected);
        let (run, cloud) = (dir.path().join("run"), dir.path().join("cloud"));
        let defend = node(&dag, "defend/fire3-d4-n0.5-q8");
        assert_eq!(arg(defend, "--noise"), "0.5");
        assert_eq!(arg(defend, "--bits"), "8");
        let secret = run.join("secret.key");
        assert_eq!(arg(defend, "--secret"), secret.display().to_string());
        assert_eq!(std::fs::read(&secret).unwrap().len(), 32);
        let base = cloud.join("fire3-d4");
        assert_eq!(
            arg(defend, "--features"),
            base.join("features.parquet").display().to_string()
        );
        let own = cloud.join("fire3-d4-n0.5-q8");
        assert_eq!(
            arg(defend, "--topology-output"),
            own.join("topology.arrow").display().to_string()
        );
        assert_eq!(
            defend.outputs,
            [own.join("features.parquet"), own.join("topology.arrow")]
        );
        assert_eq!(defend.params["noise"], json!(0.5));
        // The attack reads the defended features, the base's selection and local network, and
        // the cut's undefended all-channel features.
        let attack = node(&dag, "attack/fire3-d4-n0.5-q8");
        let read = |flag| PathBuf::from(arg(attack, flag));
        assert_eq!(read("--features"), own.join("features.parquet"));
        assert_eq!(read("--topology"), own.join("topology.arrow"));
        assert_eq!(read("--selection"), run.join("fire3-d4/selection.arrow"));
        assert_eq!(read("--local-network"), run.join("fire3-d4/local.onnx"));
        assert_eq!(
            read("--full-features"),
            cloud.join("fire3-d128/features.parquet")
        );
        assert_eq!(
            read("--output"),
            run.join("fire3-d4-n0.5-q8").join("attack")
        );
        // No node but the defences reads the secret.
        for n in &dag.nodes {
            let reads = n.inputs.iter().any(|i| i.path == secret);
            assert_eq!(reads, n.stage == Stage::Defend, "{}", n.id);
        }
    }

    #[test]
    fn a_defended_choice_is_extracted_locally_defended_then_trained_and_deployed() {
        let dir = tempfile::tempdir().unwrap();
        let choice = "fire3-d4-n0.5-q8";
        let dag = defended_dag(dir.path(), Some(choice));
        let (run, cloud) = (dir.path().join("run"), dir.path().join("cloud"));
        let extract = node(&dag, &format!("final-extract/{choice}"));
        let local = run.join("final/fire3-d4/features.parquet");
        assert_eq!(extract.outputs, std::slice::from_ref(&local));
        assert_eq!(
            PathBuf::from(arg(extract, "--model")),
            run.join("fire3-d4/local.onnx")
        );
        let defend = node(&dag, &format!("final-defend/{choice}"));
        let read = |flag| PathBuf::from(arg(defend, flag));
        assert_eq!(read("--features"), local);
        assert_eq!(read("--topology"), cloud.join("fire3-d4/topology.arrow"));
        assert_eq!(read("--secret"), run.join("secret.key"));
        assert_eq!(
            read("--encoding-from"),
            cloud.join(choice).join("features.parquet")
        );
        let final_features = cloud.join("final").join(choice).join("features.parquet");
        assert_eq!(defend.outputs, std::slice::from_ref(&final_features));
        let train = node(&dag, &format!("final-train/{choice}"));
        assert_eq!(PathBuf::from(arg(train, "--features")), final_features);
        let deploy = node(&dag, "deploy");
        let inputs: Vec<&Path> = deploy.inputs.iter().map(|i| i.path.as_path()).collect();
        assert!(inputs.contains(&run.join("fire3-d4/local.onnx").as_path()));
        assert!(inputs.contains(&final_features.as_path()));
        // The undefended features of the final images never reach the cloud zone.
        for n in &dag.nodes {
            for o in &n.outputs {
                assert!(!o.starts_with(cloud.join("final/fire3-d4")), "{}", n.id);
            }
        }
    }

    #[test]
    fn an_undefended_choice_is_planned_as_before() {
        let dir = tempfile::tempdir().unwrap();
        let choice = "fire3-d4";
        let dag = defended_dag(dir.path(), Some(choice));
        let (run, cloud) = (dir.path().join("run"), dir.path().join("cloud"));
        let extract = node(&dag, "final-extract/fire3-d4");
        assert_eq!(
            extract.outputs,
            [cloud.join("final/fire3-d4/features.parquet")]
        );
        assert!(dag.nodes.iter().all(|n| n.stage != Stage::FinalDefend));
        let deploy = node(&dag, "deploy");
        let inputs: Vec<&Path> = deploy.inputs.iter().map(|i| i.path.as_path()).collect();
        assert!(inputs.contains(&run.join("fire3-d4/local.onnx").as_path()));
        assert!(!inputs.iter().any(|p| p.ends_with("features.parquet")));
    }

    #[test]
    fn an_undefended_sweep_reads_no_secret() {
        let dir = tempfile::tempdir().unwrap();
        let (path, m) = manifest(dir.path(), "{cuts: [fire3], channels: [4]}");
        let evaluated = vec![point(4, 0.0, 32)];
        let points = with_wide_points(&evaluated);
        let sweep = Sweep { evaluated, points };
        let planner = Planner::new(&m, &path, &[]);
        let nodes: Vec<Node> = Stage::all().flat_map(|s| planner.plan(s, &sweep)).collect();
        super::super::ensure_secret_if_read(&nodes, &planner.out).unwrap();
        assert!(!secret_path(&planner.out).exists());
        assert!(nodes.iter().all(|n| n.stage != Stage::Defend));
    }
}
