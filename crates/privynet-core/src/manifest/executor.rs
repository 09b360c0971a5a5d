//! The manifest's `executor` section: where the runner runs the DAG's nodes (on this machine,
//! or as Slurm batch jobs) and what each stage asks the batch system for. None of it changes
//! what a node computes, so none of it is part of a node's cache key.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Where the nodes run.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ExecutorSpec {
    #[serde(default)]
    pub kind: ExecutorKind,
    #[serde(default)]
    pub slurm: SlurmSpec,
}

/// The executor kinds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExecutorKind {
    /// Child processes of the runner, on this machine.
    #[default]
    Local,
    /// One Slurm batch job per node, the whole DAG queued at once with `afterok` dependencies.
    Slurm,
}

impl std::str::FromStr for ExecutorKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "local" => Ok(ExecutorKind::Local),
            "slurm" => Ok(ExecutorKind::Slurm),
            other => Err(format!(
                "unknown executor `{other}`; expected local or slurm"
            )),
        }
    }
}

/// Slurm settings: the site's partition, account and time limit, resources every job asks for
/// (`default`), and per stage (`stages.train.gres: gpu:1`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SlurmSpec {
    pub partition: Option<String>,
    pub account: Option<String>,
    /// Time limit of every job, in Slurm's format (`2:00:00`).
    pub time: Option<String>,
    /// More sbatch flags for every job, as given (`--qos=short`).
    #[serde(default)]
    pub extra: Vec<String>,
    /// Resources of a stage not named in `stages`.
    #[serde(default)]
    pub default: SlurmResources,
    /// Resources by stage name (`ingest`, `slice`, `extract`, `train`, `baseline`, `attack`,
    /// `characterize`, `optimize`), over `default`.
    #[serde(default)]
    pub stages: BTreeMap<String, SlurmResources>,
}

/// What one job asks for; unset values fall back to `default`'s, then to Slurm's own.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SlurmResources {
    /// `--cpus-per-task` (default 1); the stage runs that many threads.
    pub cpus: Option<u32>,
    /// `--mem`, e.g. `8G`.
    pub mem: Option<String>,
    /// `--gres`, e.g. `gpu:1`.
    pub gres: Option<String>,
    /// `--time`, over the section's `time`.
    pub time: Option<String>,
    /// More sbatch flags for this stage's jobs.
    #[serde(default)]
    pub extra: Vec<String>,
}

impl SlurmSpec {
    /// The resources of `stage`: its own settings over `default`'s.
    pub fn resources(&self, stage: &str) -> SlurmResources {
        let own = self.stages.get(stage).cloned().unwrap_or_default();
        let base = &self.default;
        SlurmResources {
            cpus: own.cpus.or(base.cpus),
            mem: own.mem.or_else(|| base.mem.clone()),
            gres: own.gres.or_else(|| base.gres.clone()),
            time: own.time.or_else(|| base.time.clone()).or(self.time.clone()),
            extra: base.extra.iter().chain(&own.extra).cloned().collect(),
        }
    }

    /// Checks what can be checked without the batch system: stage names against `stages`
    /// (the runner passes its stage list), CPU counts above zero.
    pub fn validate(&self, stages: &[&str]) -> Result<(), String> {
        if let Some(bad) = self.stages.keys().find(|k| !stages.contains(&k.as_str())) {
            return Err(format!(
                "`executor.slurm.stages.{bad}` is not a stage; stages: {}",
                stages.join(", ")
            ));
        }
        let all = std::iter::once(("default", &self.default))
            .chain(self.stages.iter().map(|(k, v)| (k.as_str(), v)));
        for (name, r) in all {
            if r.cpus == Some(0) {
                return Err(format!("`executor.slurm` {name}: cpus must be at least 1"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_resources_fall_back_to_the_defaults() {
        let spec: SlurmSpec = serde_norway::from_str(
            "time: '1:00:00'\ndefault: {cpus: 2, mem: 4G}\nstages: {train: {gres: 'gpu:1', cpus: 8}}",
        )
        .unwrap();
        let train = spec.resources("train");
        assert_eq!(train.cpus, Some(8));
        assert_eq!(train.mem.as_deref(), Some("4G"));
        assert_eq!(train.gres.as_deref(), Some("gpu:1"));
        assert_eq!(train.time.as_deref(), Some("1:00:00"));
        assert_eq!(spec.resources("attack").cpus, Some(2));
        assert!(spec.validate(&["train", "attack"]).is_ok());
        let e = spec.validate(&["attack"]).unwrap_err();
        assert!(e.contains("stages.train") && e.contains("attack"), "{e}");
        let bad: Result<SlurmSpec, _> = serde_norway::from_str("partiton: gpu");
        assert!(bad.unwrap_err().to_string().contains("partiton"));
    }
}
