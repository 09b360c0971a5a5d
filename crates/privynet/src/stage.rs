//! The pipeline's stages, each declared once: its binary, the zone it runs in, the files it
//! reads (by the flag that passes each) and writes, with their artifact kinds, and the
//! manifest keys whose change makes its nodes stale. The DAG (with one planner per stage in
//! `dag::plan`, which says which files for which topology), the lock file's staleness, the
//! zone checks, `privynet stages`, the Makefile's per-stage targets and the `--help` test all
//! read these declarations. This file imports nothing of the crate's.

use privynet_core::{ArtifactKind, Zone};

/// Stages, in pipeline order (the order of [`DECLARATIONS`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stage {
    Ingest,
    Slice,
    Extract,
    /// A defended topology's features: its base's, with noise and quantisation applied on the
    /// user's machine before they go to the cloud zone.
    Defend,
    Train,
    /// The cloud network trained on the raw images: the accuracy without any split.
    Baseline,
    Attack,
    Characterize,
    Optimize,
    /// The images of the final training (`final:`): the train split grown, val and test kept.
    FinalIngest,
    /// The chosen topology's features of those images.
    FinalExtract,
    /// A defended choice's final features: the base's, defended with the encoding the
    /// characterization measured.
    FinalDefend,
    /// The chosen topology's cloud network trained on them, to convergence on val.
    FinalTrain,
    /// The choice as the two ONNX halves a user runs, with its deployment card.
    Deploy,
}

/// A file a stage reads or writes, and the artifact kind it holds (`None`: not one of the
/// project's schema'd artifacts: the dataset, an ONNX or burn model, a PNG).
#[derive(Debug, Clone, Copy)]
pub struct Port {
    /// For an input passed as a flag, the flag (`features` for `--features PATH`); for one the
    /// binary finds through the manifest, that key (`model.path`); for one it finds in a
    /// folder it is given, its path there. For an output, its path in the node's output folder.
    pub name: &'static str,
    pub kind: Option<ArtifactKind>,
    pub via: Via,
}

/// How a stage binary learns where an input is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// `--name PATH` on its command line (and outputs, which the node's plan places).
    Flag,
    /// The manifest names it.
    Manifest,
    /// Under a folder its command line names (one per topology).
    Folder,
}

impl Port {
    const fn flag(name: &'static str, kind: Option<ArtifactKind>) -> Port {
        Port {
            name,
            kind,
            via: Via::Flag,
        }
    }

    const fn manifest(key: &'static str) -> Port {
        Port {
            name: key,
            kind: None,
            via: Via::Manifest,
        }
    }

    const fn in_folder(name: &'static str, kind: Option<ArtifactKind>) -> Port {
        Port {
            name,
            kind,
            via: Via::Folder,
        }
    }

    const fn file(name: &'static str, kind: Option<ArtifactKind>) -> Port {
        Port::flag(name, kind)
    }
}

/// One stage, declared.
pub struct Declaration {
    pub stage: Stage,
    /// Its name in node ids, `--stage`, `make <name>` and `executor.slurm.stages`.
    pub name: &'static str,
    pub binary: &'static str,
    /// Where it runs: a cloud stage must never read a local artifact.
    pub zone: Zone,
    /// Which ready nodes the runner starts first (lower first); see [`Stage::start_rank`].
    pub start_rank: u8,
    /// Whether its outputs are the same bits on any number of threads (tested: the burn
    /// stages), so that a node of it that starts with nothing else running or ready may take
    /// every core; see [`Stage::takes_idle_cores`].
    pub thread_invariant: bool,
    /// What it reads.
    pub inputs: &'static [Port],
    /// What it writes.
    pub outputs: &'static [Port],
    /// The manifest keys (dotted) whose change makes its nodes stale. A node adds what is its
    /// own (its cut, its channel count), and a planner may add a key that only some
    /// configurations read (the slicer reads the preprocessing only to score channels).
    pub stale_on: &'static [&'static str],
}

use ArtifactKind as K;

/// What the final training writes: the training's files and the cloud network as ONNX, which
/// goes where the cloud zone is (a bucket too) and is what deploy ships.
const FINAL_TRAIN_OUTPUTS: &[Port] = &[
    Port::file("cloud_model.bpk", None),
    Port::file("cloud_config.json", None),
    Port::file("train_metrics.arrow", Some(K::TrainMetrics)),
    Port::file("train_summary.arrow", Some(K::TrainSummary)),
    Port::file("cloud.onnx", None),
];

/// What the training stages (a topology's, the raw baseline) write: the final training's
/// files but its cloud.onnx.
const TRAIN_OUTPUTS: &[Port] = FINAL_TRAIN_OUTPUTS.split_at(4).0;

/// What the defence stages read: the base's features and topology, and the noise's secret (a
/// LOCAL-zone file, passed by its path only); the final one also the encoding to reuse.
const DEFEND_INPUTS: &[Port] = &[
    Port::flag("features", Some(K::Features)),
    Port::flag("topology", Some(K::Topology)),
    Port::flag("secret", None),
    Port::flag("encoding-from", Some(K::Features)),
];

/// Every stage, in pipeline order.
pub static DECLARATIONS: [Declaration; 14] = [
    Declaration {
        stage: Stage::Ingest,
        name: "ingest",
        binary: "privynet-ingest",
        zone: Zone::Local,
        start_rank: 0,
        thread_invariant: false,
        inputs: &[Port::manifest("dataset.path")],
        outputs: &[Port::file("images.parquet", Some(K::Images))],
        stale_on: &["dataset", "seed"],
    },
    Declaration {
        stage: Stage::Slice,
        name: "slice",
        binary: "privynet-slice",
        zone: Zone::Local,
        start_rank: 0,
        thread_invariant: false,
        inputs: &[
            Port::manifest("model.path"),
            // Read only by Fisher scoring; a random selection never reads the images.
            Port::flag("images", Some(K::Images)),
        ],
        outputs: &[
            Port::file("local.onnx", None),
            Port::file("topology.arrow", Some(K::Topology)),
            Port::file("selection.arrow", Some(K::Selection)),
        ],
        stale_on: &[
            "model.path",
            "model.input",
            "model.input_size",
            "slice",
            "seed",
        ],
    },
    Declaration {
        stage: Stage::Extract,
        name: "extract",
        binary: "privynet-extract",
        zone: Zone::Local,
        start_rank: 0,
        thread_invariant: false,
        inputs: &[
            Port::flag("images", Some(K::Images)),
            Port::flag("model", None),
            Port::flag("topology", Some(K::Topology)),
            // A narrower channel count is derived from its cut's all-channel features.
            Port::flag("derive-from", Some(K::Features)),
            Port::flag("wide-selection", Some(K::Selection)),
            Port::flag("selection", Some(K::Selection)),
        ],
        outputs: &[Port::file("features.parquet", Some(K::Features))],
        // A derivation reads none of these: only its inputs' contents make it stale.
        stale_on: &["model.preprocess", "model.input_size", "extract"],
    },
    Declaration {
        stage: Stage::Defend,
        name: "defend",
        binary: "privynet-defend",
        // It reads the undefended features and the noise's secret: the user's side.
        zone: Zone::Local,
        start_rank: 0,
        thread_invariant: false,
        inputs: DEFEND_INPUTS.split_at(3).0,
        outputs: &[
            Port::file("features.parquet", Some(K::Features)),
            Port::file("topology.arrow", Some(K::Topology)),
        ],
        // The noise and bits are each node's own parameters.
        stale_on: &["seed"],
    },
    Declaration {
        stage: Stage::Train,
        name: "train",
        binary: "privynet-train",
        zone: Zone::Cloud,
        start_rank: 3,
        thread_invariant: true,
        inputs: &[
            Port::flag("features", Some(K::Features)),
            Port::flag("topology", Some(K::Topology)),
        ],
        outputs: TRAIN_OUTPUTS,
        stale_on: &["train", "seed"],
    },
    Declaration {
        stage: Stage::Baseline,
        name: "baseline",
        binary: "privynet-train",
        // It trains on the raw images, so it can only ever run locally.
        zone: Zone::Local,
        start_rank: 2,
        thread_invariant: true,
        inputs: &[Port::flag("images", Some(K::Images))],
        outputs: TRAIN_OUTPUTS,
        stale_on: &["train", "seed"],
    },
    Declaration {
        stage: Stage::Attack,
        name: "attack",
        binary: "privynet-attack",
        // It simulates the cloud's attacker but runs on the user's side, as the user's own
        // privacy audit: it reads the raw images to score reconstructions.
        zone: Zone::Local,
        start_rank: 1,
        thread_invariant: true,
        inputs: &[
            Port::flag("images", Some(K::Images)),
            Port::flag("features", Some(K::Features)),
            Port::flag("topology", Some(K::Topology)),
            Port::flag("selection", Some(K::Selection)),
            Port::flag("full-features", Some(K::Features)),
            Port::flag("full-selection", Some(K::Selection)),
            // The optimisation attacker differentiates through the local network.
            Port::flag("local-network", None),
        ],
        outputs: &[
            Port::file("privacy.parquet", Some(K::Privacy)),
            Port::file("attack_summary.arrow", Some(K::AttackSummary)),
            Port::file("attack_metrics.arrow", Some(K::AttackMetrics)),
            Port::file("reconstructions.png", None),
        ],
        stale_on: &["attack", "model.preprocess", "seed", "train.classes"],
    },
    Declaration {
        stage: Stage::Characterize,
        name: "characterize",
        binary: "privynet-characterize",
        zone: Zone::Local,
        start_rank: 4,
        thread_invariant: false,
        // Every evaluated topology's summaries, found under `--run-dir` and `--cloud-dir`.
        inputs: &[
            Port::in_folder("topology.arrow", Some(K::Topology)),
            Port::in_folder("train/train_summary.arrow", Some(K::TrainSummary)),
            Port::in_folder("attack/attack_summary.arrow", Some(K::AttackSummary)),
        ],
        outputs: &[Port::file(
            "characterization.parquet",
            Some(K::Characterization),
        )],
        stale_on: &[],
    },
    Declaration {
        stage: Stage::Optimize,
        name: "optimize",
        binary: "privynet-optimize",
        zone: Zone::Local,
        start_rank: 4,
        thread_invariant: false,
        inputs: &[
            Port::flag("characterization", Some(K::Characterization)),
            Port::flag("baseline", Some(K::TrainSummary)),
        ],
        outputs: &[
            Port::file("predictions.parquet", Some(K::Predictions)),
            Port::file("frontier.parquet", Some(K::Frontier)),
            Port::file("report.md", None),
            Port::file("plots/tradeoff.svg", None),
            Port::file("plots/channels.svg", None),
            Port::file("plots/bytes.svg", None),
            Port::file("decision.arrow", Some(K::Decision)),
        ],
        stale_on: &["optimize", "sweep"],
    },
    Declaration {
        stage: Stage::FinalIngest,
        name: "final-ingest",
        binary: "privynet-ingest",
        zone: Zone::Local,
        start_rank: 0,
        thread_invariant: false,
        inputs: &[Port::manifest("dataset.path")],
        outputs: &[Port::file("images.parquet", Some(K::Images))],
        stale_on: &["dataset", "seed", "final.train_images"],
    },
    Declaration {
        stage: Stage::FinalExtract,
        name: "final-extract",
        binary: "privynet-extract",
        zone: Zone::Local,
        start_rank: 0,
        thread_invariant: false,
        // Planned once the decision names a measured topology: its local network.
        inputs: &[
            Port::flag("images", Some(K::Images)),
            Port::flag("model", None),
            Port::flag("topology", Some(K::Topology)),
        ],
        outputs: &[Port::file("features.parquet", Some(K::Features))],
        stale_on: &["model.preprocess", "model.input_size", "extract"],
    },
    Declaration {
        stage: Stage::FinalDefend,
        name: "final-defend",
        binary: "privynet-defend",
        zone: Zone::Local,
        start_rank: 0,
        thread_invariant: false,
        // Planned once the decision names a defended topology: its base's final features,
        // defended with the encoding its own features carry (`--encoding-from`), so that the
        // deployed encoding is the one that was characterized.
        inputs: DEFEND_INPUTS,
        outputs: &[Port::file("features.parquet", Some(K::Features))],
        stale_on: &["seed"],
    },
    Declaration {
        stage: Stage::FinalTrain,
        name: "final-train",
        binary: "privynet-train",
        zone: Zone::Cloud,
        start_rank: 3,
        thread_invariant: true,
        inputs: &[
            Port::flag("features", Some(K::Features)),
            Port::flag("topology", Some(K::Topology)),
        ],
        outputs: FINAL_TRAIN_OUTPUTS,
        stale_on: &["train", "final", "seed"],
    },
    Declaration {
        stage: Stage::Deploy,
        name: "deploy",
        binary: "privynet-deploy",
        // It ships the local network with its secret selection: the user's side.
        zone: Zone::Local,
        start_rank: 4,
        thread_invariant: false,
        // Planned once the decision names a topology that was trained and attacked; the
        // binary reads the choice from the decision and finds its files under `--run-dir`
        // and `--cloud-dir`, so an optimizer that reruns in the same pass is followed. With
        // a `final` section the training's files are the final training's (`--final-dir`).
        inputs: &[
            Port::flag("decision", Some(K::Decision)),
            Port::flag("characterization", Some(K::Characterization)),
            Port::in_folder("local.onnx", None),
            Port::in_folder("train/train_summary.arrow", Some(K::TrainSummary)),
            Port::in_folder("train/cloud_model.bpk", None),
            Port::in_folder("train/cloud_config.json", None),
            // A defended choice's encoding, which the card carries: in the metadata of the
            // features its cloud network trained on (read for defended choices only).
            Port::in_folder("features.parquet", Some(K::Features)),
        ],
        outputs: &[
            Port::file("local.onnx", None),
            Port::file("cloud.onnx", None),
            Port::file("card.json", None),
            Port::file("card.md", None),
        ],
        stale_on: &[
            "model.preprocess",
            "model.input_size",
            "extract.dtype",
            "dataset.path",
        ],
    },
];

impl Stage {
    /// Every stage, in pipeline order.
    pub fn all() -> impl Iterator<Item = Stage> {
        DECLARATIONS.iter().map(|d| d.stage)
    }

    /// This stage's declaration.
    pub fn declaration(self) -> &'static Declaration {
        DECLARATIONS
            .iter()
            .find(|d| d.stage == self)
            .expect("every stage is declared")
    }

    pub fn name(self) -> &'static str {
        self.declaration().name
    }

    /// Which ready nodes the runner starts first (lower first). The seconds-long stages that
    /// unlock others come first, so that every attack is ready early; then the longest
    /// (measured on the default pipeline: attacks minutes each, the raw baseline a few minutes,
    /// training under two), so that the run does not end on one long attack while the other
    /// slots sit idle; the final gathering stages last.
    pub fn start_rank(self) -> u8 {
        self.declaration().start_rank
    }

    /// Whether a node of this stage that starts with nothing else running or ready takes
    /// every core instead of its share: its outputs are the same bits on any thread count
    /// (the cloud network's training, the raw baseline and the attack, whose burn kernels sum
    /// in an order fixed by the shapes alone; `tests/threads.rs` checks it), and the final
    /// training, alone at the end of a run, then takes about half the time.
    pub fn takes_idle_cores(self) -> bool {
        self.declaration().thread_invariant
    }

    pub fn binary(self) -> &'static str {
        self.declaration().binary
    }

    /// The zone a stage runs in: a cloud stage must never read a local artifact.
    pub fn zone(self) -> Zone {
        self.declaration().zone
    }

    pub fn from_name(name: &str) -> Option<Stage> {
        Stage::all().find(|stage| stage.name() == name)
    }

    /// The declared input `name`, or a panic naming the stage: a planner passing
    /// an undeclared input is a defect of this crate, caught by every test that plans a DAG.
    pub(crate) fn input(self, name: &str) -> &'static Port {
        self.declaration()
            .inputs
            .iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("stage `{}` declares no input `{name}`", self.name()))
    }

    /// The declared output file `name`, with the same rule as [`Stage::input`].
    pub(crate) fn output(self, name: &str) -> &'static Port {
        self.declaration()
            .outputs
            .iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("stage `{}` declares no output `{name}`", self.name()))
    }
}

/// The file names that may go to an object store: what cloud stages write, and the
/// cloud-zone artifacts of any stage (a local stage's features or topology, made for the
/// cloud). A schema that cannot be read counts as local.
pub fn cloud_files() -> Vec<&'static str> {
    DECLARATIONS
        .iter()
        .flat_map(|d| d.outputs.iter().map(move |p| (d, p)))
        .filter(|(d, p)| {
            d.zone == Zone::Cloud
                || p.kind
                    .is_some_and(|k| k.zone().is_ok_and(|z| z == Zone::Cloud))
        })
        .map(|(_, p)| p.name)
        .collect()
}

/// The stages as `privynet stages` prints them: one block per stage.
pub fn describe() -> String {
    let port = |p: &Port| {
        let how = match p.via {
            Via::Flag => "",
            Via::Manifest => ", named by the manifest",
            Via::Folder => ", per topology",
        };
        match p.kind {
            Some(k) => format!("{} ({k}{how})", p.name),
            None if how.is_empty() => p.name.to_string(),
            None => format!("{} ({})", p.name, &how[2..]),
        }
    };
    let mut out = String::new();
    for d in &DECLARATIONS {
        let list = |ports: &[Port]| ports.iter().map(port).collect::<Vec<_>>().join(", ");
        out.push_str(&format!(
            "{}\n  binary: {}\n  zone: {}\n  reads: {}\n  writes: {}\n  stale when: {}\n",
            d.name,
            d.binary,
            d.zone,
            list(d.inputs),
            list(d.outputs),
            if d.stale_on.is_empty() {
                "its inputs change".to_string()
            } else {
                format!("its inputs or {} change", d.stale_on.join(", "))
            },
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_stage_is_declared_once_in_order_with_its_own_name() {
        let stages: Vec<Stage> = Stage::all().collect();
        let mut sorted = stages.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(
            stages, sorted,
            "declarations out of pipeline order or repeated"
        );
        assert_eq!(stages.len(), DECLARATIONS.len());
        for s in stages {
            assert_eq!(Stage::from_name(s.name()), Some(s));
        }
    }

    #[test]
    fn cloud_files_are_the_cloud_stages_outputs_and_the_cloud_artifacts() {
        let files = cloud_files();
        for f in ["features.parquet", "topology.arrow", "cloud_model.bpk"] {
            assert!(files.contains(&f), "{f} in {files:?}");
        }
        for f in [
            "selection.arrow",
            "local.onnx",
            "images.parquet",
            "privacy.parquet",
        ] {
            assert!(!files.contains(&f), "{f} in {files:?}");
        }
    }

    #[test]
    fn the_defence_stages_are_local_and_follow_their_extractions() {
        for stage in [Stage::Defend, Stage::FinalDefend] {
            assert_eq!(stage.zone(), Zone::Local);
            assert_eq!(stage.binary(), "privynet-defend");
            assert!(stage.input("secret").kind.is_none());
        }
        assert!(Stage::Extract < Stage::Defend && Stage::Defend < Stage::Train);
        assert!(Stage::FinalExtract < Stage::FinalDefend);
        assert!(Stage::FinalDefend < Stage::FinalTrain);
        assert_eq!(Stage::from_name("final-defend"), Some(Stage::FinalDefend));
        Stage::FinalDefend.input("encoding-from");
        assert!(
            !Stage::Defend
                .declaration()
                .inputs
                .iter()
                .any(|p| p.name == "encoding-from")
        );
        Stage::Defend.output("topology.arrow");
    }

    #[test]
    #[should_panic(expected = "stage `train` declares no input `images`")]
    fn an_undeclared_input_is_a_named_defect() {
        Stage::Train.input("images");
    }
}
