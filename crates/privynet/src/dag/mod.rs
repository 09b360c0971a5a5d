//! Expanding a manifest into the pipeline DAG: ingest once; per undefended topology of the
//! sweep a slice; per cut one extraction at the widest channel count and a derivation for each
//! narrower one; per defended topology a defence of its base's features.
//! Each node is one stage-binary invocation with exactly the arguments it needs; the stages'
//! declarations (`crate::stage`) say what each reads and writes, and their planners (`plan`)
//! which files, for which topology. Dependencies come from file paths, checked here for
//! cycles, dangling inputs and zones.

mod node;
pub mod plan;
pub mod sweep;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use privynet_core::Zone;
use privynet_core::manifest::Manifest;

use crate::RunError;
pub use crate::stage::Stage;
use crate::stage::cloud_files;
pub use node::{Input, Node};
use plan::{Planner, Sweep};
use sweep::with_wide_points;
pub use sweep::{SweepPoint, decision_path, evaluated, resolve_sweep};

/// The expanded pipeline.
#[derive(Debug, Clone)]
pub struct Dag {
    pub nodes: Vec<Node>,
    pub out_dir: PathBuf,
}

/// Builds the DAG for a manifest file (the path is passed to every stage binary): each
/// declared stage's planner gives its nodes, in pipeline order.
pub fn build(manifest_path: &Path, overrides: &[String]) -> Result<Dag, RunError> {
    let m = Manifest::load(manifest_path, overrides)?;
    let grid = resolve_sweep(&m)?;
    let evaluated = evaluated(&m, &grid);
    let points = with_wide_points(&evaluated);
    let sweep = Sweep { evaluated, points };
    let planner = Planner::new(&m, manifest_path, overrides);
    let nodes: Vec<Node> = Stage::all()
        .flat_map(|stage| planner.plan(stage, &sweep))
        .collect();
    ensure_secret_if_read(&nodes, &planner.out)?;
    let mut dag = Dag {
        nodes,
        out_dir: planner.out,
    };
    dag.link()?;
    dag.check_zones()?;
    Ok(dag)
}

/// Makes the run folder's noise secret when a node reads it (a defended sweep, or a defended
/// choice's final features) and it is not there yet. Its bytes stay in that file: nodes are
/// given its path.
fn ensure_secret_if_read(nodes: &[Node], out: &Path) -> Result<(), RunError> {
    let secret = plan::secret_path(out);
    if nodes
        .iter()
        .any(|n| n.inputs.iter().any(|i| i.path == secret))
    {
        privynet_core::defence::ensure_secret(&secret).map_err(|e| {
            RunError::context(format!("making the noise secret {}", secret.display()), e)
        })?;
    }
    Ok(())
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
                if inp.path.file_name() == Some(std::ffi::OsStr::new(plan::SECRET_FILE)) {
                    return Err(RunError::Dag(format!(
                        "zone violation: cloud stage node `{}` would read the noise secret {}; it never leaves this machine",
                        n.id,
                        inp.path.display()
                    )));
                }
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
                if n.stage == Stage::Baseline || !cloud_files().contains(&name) {
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
    use std::collections::BTreeMap;

    use privynet_core::ArtifactKind;

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
    fn the_noise_secret_is_read_only_by_local_stages() {
        let dag = |stage| Dag {
            nodes: vec![node(
                "n",
                stage,
                &[("/nonexistent/run/secret.key", None)],
                &["/nonexistent/cloud/x/features.parquet"],
            )],
            out_dir: PathBuf::from("/nonexistent/run"),
        };
        dag(Stage::Defend).check_zones().unwrap();
        let e = dag(Stage::Train).check_zones().unwrap_err().to_string();
        assert!(
            e.contains("zone violation") && e.contains("noise secret"),
            "{e}"
        );
    }

    #[test]
    fn the_secret_is_made_only_when_a_node_reads_it() {
        let dir = tempfile::tempdir().unwrap();
        let secret = plan::secret_path(dir.path());
        let extract = node("extract/x", Stage::Extract, &[], &["/nonexistent/f"]);
        ensure_secret_if_read(std::slice::from_ref(&extract), dir.path()).unwrap();
        assert!(!secret.exists());
        let mut defend = node("defend/x", Stage::Defend, &[], &["/nonexistent/g"]);
        defend.inputs.push(Input {
            path: secret.clone(),
            kind: None,
        });
        ensure_secret_if_read(&[extract, defend.clone()], dir.path()).unwrap();
        let bytes = std::fs::read(&secret).unwrap();
        assert_eq!(bytes.len(), privynet_core::defence::SECRET_LEN);
        // Made once: a second planning keeps it.
        ensure_secret_if_read(&[defend], dir.path()).unwrap();
        assert_eq!(std::fs::read(&secret).unwrap(), bytes);
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
