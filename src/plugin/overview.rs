//! `kubectl kappa status`: one screen of every KafkaClusterSet, Pipeline,
//! Savepoint and Backfill of a namespace, what needs attention first.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::ResourceExt;
use serde::Serialize;

use crate::api::backfill::{Backfill, BackfillPhase};
use crate::api::common::CommonStatus;
use crate::api::kafka_cluster_set::KafkaClusterSet;
use crate::api::pipeline::{Pipeline, PipelinePhase};
use crate::api::savepoint::{Savepoint, SavepointPhase};
use crate::conditions::{find, holds, ConditionStatus, DEGRADED, READY, STALLED};

/// Everything of one namespace.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Overview {
    pub namespace: String,
    /// What needs attention, most urgent first.
    pub attention: Vec<Attention>,
    pub cluster_sets: Vec<KafkaClusterSet>,
    pub pipelines: Vec<Pipeline>,
    pub savepoints: Vec<Savepoint>,
    pub backfills: Vec<Backfill>,
}

/// An object that needs a look, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Attention {
    pub kind: &'static str,
    pub name: String,
    pub reason: String,
    pub message: String,
    /// How urgent: 0 failed or stalled, 1 not ready, 2 degraded.
    #[serde(skip)]
    rank: u8,
}

/// Why an object with `status` (and, for Savepoints and Backfills, a phase
/// that says it failed) needs attention, if it does: a failed phase or
/// Stalled True (nothing moves until the spec changes), before Ready False,
/// before Degraded True.
fn attention_of(
    kind: &'static str,
    name: String,
    status: Option<&CommonStatus>,
    failed: bool,
) -> Option<Attention> {
    let conditions = status.map(|s| s.conditions.as_slice()).unwrap_or_default();
    let ready = find(conditions, READY);
    let degraded = find(conditions, DEGRADED).filter(|c| holds(c));
    let stalled = find(conditions, STALLED).filter(|c| holds(c));
    let (rank, condition): (u8, Option<&Condition>) = if failed {
        (0, ready.or(degraded))
    } else if let Some(stalled) = stalled {
        (0, Some(stalled))
    } else if let Some(ready) = ready.filter(|c| ConditionStatus::of(c) == ConditionStatus::False) {
        (1, Some(ready))
    } else if let Some(degraded) = degraded {
        (2, Some(degraded))
    } else {
        return None;
    };
    Some(Attention {
        kind,
        name,
        reason: condition.map_or_else(|| "Failed".into(), |c| c.reason.clone()),
        message: condition.map(|c| c.message.clone()).unwrap_or_default(),
        rank,
    })
}

impl Overview {
    /// The overview of these objects of `namespace`.
    pub fn new(
        namespace: &str,
        cluster_sets: Vec<KafkaClusterSet>,
        pipelines: Vec<Pipeline>,
        savepoints: Vec<Savepoint>,
        backfills: Vec<Backfill>,
    ) -> Self {
        let mut attention: Vec<Attention> = cluster_sets
            .iter()
            .filter_map(|s| {
                attention_of(
                    "KafkaClusterSet",
                    s.name_any(),
                    s.status.as_ref().map(|s| &s.common),
                    false,
                )
            })
            .chain(pipelines.iter().filter_map(|p| {
                let status = p.status.as_ref();
                let failed = status.and_then(|s| s.phase) == Some(PipelinePhase::Failed);
                attention_of("Pipeline", p.name_any(), status.map(|s| &s.common), failed)
            }))
            .chain(savepoints.iter().filter_map(|s| {
                let status = s.status.as_ref();
                let failed = matches!(
                    status.and_then(|s| s.phase),
                    Some(SavepointPhase::Failed | SavepointPhase::Abandoned)
                );
                attention_of("Savepoint", s.name_any(), status.map(|s| &s.common), failed)
            }))
            .chain(backfills.iter().filter_map(|b| {
                let status = b.status.as_ref();
                let failed = status.and_then(|s| s.phase) == Some(BackfillPhase::Failed);
                attention_of("Backfill", b.name_any(), status.map(|s| &s.common), failed)
            }))
            .collect();
        attention.sort_by(|a, b| (a.rank, a.kind, &a.name).cmp(&(b.rank, b.kind, &b.name)));
        Self {
            namespace: namespace.to_string(),
            attention,
            cluster_sets,
            pipelines,
            savepoints,
            backfills,
        }
    }

    /// The screen: what needs attention, then a table per kind.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        if self.attention.is_empty() {
            out.push(format!("{}: nothing needs attention", self.namespace));
        } else {
            out.push(format!(
                "{}: {} need(s) attention",
                self.namespace,
                self.attention.len()
            ));
            for a in &self.attention {
                out.push(format!(
                    "  {}/{}: {}: {}",
                    a.kind, a.name, a.reason, a.message
                ));
            }
        }
        let sets = self.cluster_sets.iter().map(|s| {
            let status = s.status.clone().unwrap_or_default();
            let migration = status.migration.as_ref().map_or_else(
                || "-".to_string(),
                |m| match m.waiting_for.len() {
                    0 => format!("{} -> {}", m.from, m.to),
                    n => format!("{} -> {}, {n} producer(s) to acknowledge", m.from, m.to),
                },
            );
            vec![
                s.name_any(),
                s.spec.clusters.len().to_string(),
                status.write_cluster.unwrap_or_else(|| "-".into()),
                status.epoch.map_or_else(|| "-".into(), |e| e.to_string()),
                migration,
                ready(&status.common),
            ]
        });
        table(
            &mut out,
            "KafkaClusterSets",
            &[
                "NAME",
                "CLUSTERS",
                "WRITE CLUSTER",
                "EPOCH",
                "MOVE",
                "READY",
            ],
            sets,
        );
        let pipelines = self.pipelines.iter().map(|p| {
            let status = p.status.clone().unwrap_or_default();
            let budget = status
                .slo
                .as_ref()
                .and_then(|s| s.budget_left_percent)
                .map_or_else(|| "-".into(), |b| format!("{b}%"));
            vec![
                p.name_any(),
                format!("{:?}", p.spec.engine.type_).to_lowercase(),
                status.phase.map_or_else(|| "-".into(), |p| p.to_string()),
                status
                    .job
                    .and_then(|j| j.state)
                    .unwrap_or_else(|| "-".into()),
                status
                    .total_lag_records
                    .map_or_else(|| "-".into(), |l| l.to_string()),
                status.last_savepoint.map_or_else(|| "-".into(), |s| s.name),
                budget,
                ready(&status.common),
            ]
        });
        table(
            &mut out,
            "Pipelines",
            &[
                "NAME",
                "ENGINE",
                "PHASE",
                "JOB",
                "LAG",
                "LAST SAVEPOINT",
                "BUDGET LEFT",
                "READY",
            ],
            pipelines,
        );
        let savepoints = self.savepoints.iter().map(|s| {
            let status = s.status.clone().unwrap_or_default();
            vec![
                s.name_any(),
                s.spec.pipeline_ref.clone(),
                status
                    .phase
                    .map_or_else(|| "-".into(), |p| format!("{p:?}")),
                status
                    .completion_time
                    .map_or_else(|| "-".into(), |t| t.0.to_string()),
            ]
        });
        table(
            &mut out,
            "Savepoints",
            &["NAME", "PIPELINE", "PHASE", "COMPLETED"],
            savepoints,
        );
        let backfills = self.backfills.iter().map(|b| {
            let status = b.status.clone().unwrap_or_default();
            let progress = status.progress.unwrap_or_default();
            vec![
                b.name_any(),
                b.spec.pipeline_ref.clone(),
                status
                    .phase
                    .map_or_else(|| "-".into(), |p| format!("{p:?}")),
                progress.percent.unwrap_or_else(|| "-".into()),
                progress.eta.unwrap_or_else(|| "-".into()),
            ]
        });
        table(
            &mut out,
            "Backfills",
            &["NAME", "PIPELINE", "PHASE", "PROGRESS", "ETA"],
            backfills,
        );
        out.join("\n")
    }
}

/// The Ready condition's status and reason, e.g. `True ReplicasReady`.
fn ready(common: &CommonStatus) -> String {
    find(&common.conditions, READY)
        .map_or_else(|| "-".into(), |c| format!("{} {}", c.status, c.reason))
}

/// Appends a titled table with aligned columns, or nothing when it has no rows.
fn table(
    out: &mut Vec<String>,
    title: &str,
    header: &[&str],
    rows: impl Iterator<Item = Vec<String>>,
) {
    let rows: Vec<Vec<String>> = rows.collect();
    if rows.is_empty() {
        return;
    }
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    out.push(String::new());
    out.push(format!("{title}:"));
    out.push(line(header.to_vec()));
    for row in &rows {
        out.push(line(row.iter().map(String::as_str).collect()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn condition(type_: &str, status: &str, reason: &str) -> serde_json::Value {
        json!({"type": type_, "status": status, "reason": reason, "message": format!("{reason} happened"),
               "lastTransitionTime": "2026-12-01T00:00:00Z"})
    }

    /// A pipeline with `conditions`, in `phase` (none: the operator refused
    /// it before acting).
    fn pipeline(name: &str, phase: Option<&str>, conditions: Vec<serde_json::Value>) -> Pipeline {
        serde_json::from_value(json!({
            "apiVersion": "kappa.dev/v1alpha1", "kind": "Pipeline", "metadata": {"name": name},
            "spec": {"clusterSet": "events", "inputs": [{"stream": "orders"}],
                     "engine": {"type": "consumer", "consumer": {"template": {}}}},
            "status": {"phase": phase, "conditions": conditions, "totalLagRecords": 12}
        }))
        .expect("a pipeline")
    }

    #[test]
    fn what_needs_attention_comes_first_failed_before_not_ready_before_degraded() {
        let pipelines = vec![
            pipeline(
                "fine",
                Some("Running"),
                vec![condition(READY, "True", "ReplicasReady")],
            ),
            pipeline(
                "degraded",
                Some("Running"),
                vec![
                    condition(READY, "True", "ReplicasReady"),
                    condition(DEGRADED, "True", "LagUnknown"),
                ],
            ),
            pipeline(
                "refused",
                None,
                vec![condition(READY, "False", "InvalidSpec")],
            ),
            pipeline(
                "broken",
                Some("Failed"),
                vec![condition(READY, "False", "JobFailed")],
            ),
            pipeline(
                "starting",
                Some("Deploying"),
                vec![condition(READY, "Unknown", "Deploying")],
            ),
            pipeline(
                "unsupported",
                None,
                vec![
                    condition(READY, "Unknown", "EngineNotSupported"),
                    condition(STALLED, "True", "EngineNotSupported"),
                ],
            ),
        ];
        let overview = Overview::new("team", vec![], pipelines, vec![], vec![]);
        let names: Vec<(&str, &str)> = overview
            .attention
            .iter()
            .map(|a| (a.name.as_str(), a.reason.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                ("broken", "JobFailed"),
                ("unsupported", "EngineNotSupported"),
                ("refused", "InvalidSpec"),
                ("degraded", "LagUnknown")
            ]
        );
        let screen = overview.render();
        assert!(
            screen.starts_with(
                "team: 4 need(s) attention\n  Pipeline/broken: JobFailed: JobFailed happened"
            ),
            "{screen}"
        );
        assert!(
            screen.contains("\nPipelines:\nNAME         ENGINE    PHASE"),
            "{screen}"
        );
        assert!(
            screen.contains("\nfine         consumer  Running    -    12"),
            "{screen}"
        );
        assert!(!screen.contains("Backfills:"), "no empty tables: {screen}");
    }

    #[test]
    fn a_quiet_namespace_says_so() {
        let overview = Overview::new("quiet", vec![], vec![], vec![], vec![]);
        assert_eq!(overview.render(), "quiet: nothing needs attention");
    }
}
