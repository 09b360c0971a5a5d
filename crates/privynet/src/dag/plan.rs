//! Each stage's nodes for one manifest: where each node's files go and the command line its
//! binary is given. A stage's declaration (`crate::stage`) names its inputs, outputs and the
//! manifest keys it depends on; its planner here says only which files, for which topology.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use privynet_core::Zone;
use privynet_core::manifest::{Manifest, SelectionMethod};
use serde_json::{Value, json};

use super::node::{Input, Node};
use super::sweep::{SweepPoint, decision_path, settled_choice, wide_point};
use crate::stage::{Stage, Via};

/// The topologies a DAG covers.
pub struct Sweep {
    /// The topologies evaluated: trained, attacked, characterized.
    pub evaluated: Vec<SweepPoint>,
    /// Those plus, per cut, its all-channel point (sliced and extracted to serve derivations
    /// and the attackers).
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
            Stage::Train => self.train(sweep),
            Stage::Baseline => self.baseline(sweep),
            Stage::Attack => self.attack(sweep),
            Stage::Characterize => self.characterize(sweep),
            Stage::Optimize => self.optimize(sweep),
            Stage::FinalIngest => self.final_ingest(sweep),
            Stage::FinalExtract => self.final_extract(sweep),
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
        sweep.points.iter().map(plan).collect()
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
        sweep.points.iter().map(plan).collect()
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
            let dir = self.out.join(&p.label);
            let cloud = self.cloud.join(&p.label);
            let attack_dir = dir.join("attack");
            let parts = Parts {
                inputs: vec![
                    ("images", self.images.clone()),
                    ("features", cloud.join("features.parquet")),
                    ("topology", cloud.join("topology.arrow")),
                    ("selection", dir.join("selection.arrow")),
                    (
                        "full-features",
                        self.cloud.join(&wide.label).join("features.parquet"),
                    ),
                    (
                        "full-selection",
                        self.out.join(&wide.label).join("selection.arrow"),
                    ),
                    ("local-network", dir.join("local.onnx")),
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

    /// The chosen topology's features of the final images, through its own local network.
    /// Per topology, so that a decision that returns to an earlier choice finds it done.
    fn final_extract(&self, _: &Sweep) -> Vec<Node> {
        let (Some((dir, cloud)), Some(t)) = (self.final_dirs(), self.choice()) else {
            return vec![];
        };
        let cloud = cloud.join(t);
        let parts = Parts {
            inputs: vec![
                ("images", dir.join("images.parquet")),
                ("model", self.out.join(t).join("local.onnx")),
                ("topology", self.cloud.join(t).join("topology.arrow")),
            ],
            output: Some(cloud.join("features.parquet")),
            outputs: vec![("features.parquet", cloud)],
            ..Parts::default()
        };
        vec![self.node(Stage::FinalExtract, Some(t), parts)]
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
        // The training's files are the cloud's (the final training's when there is one); the
        // local network is local.
        let final_root = self.final_dirs().map(|(_, cloud)| cloud.join(topology));
        let train_root = final_root.unwrap_or(self.cloud.join(topology));
        for port in Stage::Deploy.declaration().inputs {
            if port.via == Via::Folder {
                let root = if port.name.starts_with("train/") {
                    &train_root
                } else {
                    &self.out.join(topology)
                };
                inputs.push((port.name, root.join(port.name)));
            }
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
