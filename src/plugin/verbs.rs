//! What each `kubectl kappa` verb asks of the API server, and when it
//! counts as done: a spec change is done when the operator has acted on
//! its generation (`status.observedGeneration`) and the object shows the
//! outcome; a Savepoint when Completed; a cancelled Backfill when gone
//! (its teardown ran).

use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::ResourceExt;
use serde_json::json;

use super::display::Display;
use super::overview::Overview;
use super::{follow, Look, PluginError, Session};
use crate::api::backfill::Backfill;
use crate::api::common::CommonStatus;
use crate::api::kafka_cluster_set::KafkaClusterSet;
use crate::api::pipeline::{EngineType, JobState, Pipeline, PipelinePhase};
use crate::api::savepoint::{Savepoint, SavepointPhase, SavepointSpec, SavepointType};
use crate::conditions::{find, ConditionStatus, READY};

/// What a verb did: the object as it left it, and a line saying so.
pub struct Done<K> {
    pub object: K,
    pub summary: String,
}

/// Whether and how long to follow the work.
#[derive(Clone, Copy, Debug)]
pub struct Wait {
    pub wait: bool,
    pub timeout: Duration,
}

/// The overview of the session's namespace.
pub async fn overview(session: &Session) -> Result<Overview, PluginError> {
    let params = Default::default();
    let (sets, pipelines, savepoints, backfills) = (
        session.api::<KafkaClusterSet>(),
        session.api::<Pipeline>(),
        session.api::<Savepoint>(),
        session.api::<Backfill>(),
    );
    let (sets, pipelines, savepoints, backfills) = futures::try_join!(
        sets.list(&params),
        pipelines.list(&params),
        savepoints.list(&params),
        backfills.list(&params),
    )
    .map_err(PluginError::from)?;
    Ok(Overview::new(
        &session.namespace,
        sets.items,
        pipelines.items,
        savepoints.items,
        backfills.items,
    ))
}

/// The Ready condition's `reason: message`, when it is False.
fn not_ready(common: &CommonStatus) -> Option<String> {
    find(&common.conditions, READY)
        .filter(|c| ConditionStatus::of(c) == ConditionStatus::False)
        .map(|c| format!("{}: {}", c.reason, c.message))
}

/// Merge-patches `patch` into object `name`; returns it as patched.
async fn patch<K>(session: &Session, name: &str, patch: serde_json::Value) -> Result<K, PluginError>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    session
        .api::<K>()
        .patch(name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .map_err(PluginError::from)
}

/// Starts moving the write cluster of set `name` to `to`; with `wait`,
/// follows the move (announcement, producers' acknowledgements, the old
/// cluster's segment drained) to its end.
pub async fn move_set(
    session: &Session,
    name: &str,
    to: &str,
    wait: Wait,
    display: &mut Display,
) -> Result<Done<KafkaClusterSet>, PluginError> {
    let set: KafkaClusterSet = session.get("KafkaClusterSet", name).await?;
    if !set.spec.clusters.iter().any(|c| c.name == to) {
        let names: Vec<&str> = set.spec.clusters.iter().map(|c| c.name.as_str()).collect();
        return Err(PluginError::BadInput(format!(
            "KafkaClusterSet {name} has no cluster `{to}`: its clusters are {}",
            names.join(", ")
        )));
    }
    let from = set.spec.routing.write_cluster.clone();
    let set = if from == to {
        set
    } else {
        let patched = json!({"spec": {"routing": {"writeCluster": to}}});
        patch::<KafkaClusterSet>(session, name, patched).await?
    };
    let generation = set.metadata.generation.unwrap_or_default();
    let look = |set: &KafkaClusterSet| -> Look {
        let status = set.status.clone().unwrap_or_default();
        let acted = status.common.observed_generation >= Some(generation);
        let mut lines = vec![format!(
            "KafkaClusterSet {name}: write cluster {from} -> {to}"
        )];
        match (&status.migration, status.write_cluster.as_deref()) {
            (Some(m), _) if m.waiting_for.is_empty() => lines.push(format!(
                "  announced in epoch {}; recording where {} ends",
                m.epoch, m.from
            )),
            (Some(m), _) => lines.push(format!(
                "  announced in epoch {}; waiting for {} producer(s) to acknowledge: {}",
                m.epoch,
                m.waiting_for.len(),
                m.waiting_for.join(", ")
            )),
            (None, Some(settled)) if acted => {
                let drained = status
                    .drained_segments
                    .iter()
                    .map(|s| format!("{}/{}", s.cluster, s.stream))
                    .collect::<Vec<_>>();
                lines.push(format!(
                    "  settled on {settled} (epoch {}); drained segments read to their end first: {}",
                    status.epoch.unwrap_or_default(),
                    if drained.is_empty() { "none".into() } else { drained.join(", ") }
                ));
            }
            _ => lines.push("  waiting for the operator".into()),
        }
        let verdict = match not_ready(&status.common) {
            Some(why) if acted => Some(Err(why)),
            _ => {
                (acted && status.migration.is_none() && status.write_cluster.as_deref() == Some(to))
                    .then_some(Ok(()))
            }
        };
        (lines.join("\n"), verdict)
    };
    let summary = if from == to {
        format!("kafkaclusterset.kappa.dev/{name} writes to {to} already")
    } else {
        format!("kafkaclusterset.kappa.dev/{name}: write cluster {from} -> {to}")
    };
    finish(session, name, set, summary, wait, display, look).await
}

/// Follows `object` with `look` when asked to; returns it with `summary`.
async fn finish<K>(
    session: &Session,
    name: &str,
    object: K,
    summary: String,
    wait: Wait,
    display: &mut Display,
    look: impl Fn(&K) -> Look,
) -> Result<Done<K>, PluginError>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + 'static,
{
    if !wait.wait {
        return Ok(Done { object, summary });
    }
    display.show(&summary);
    let object = follow(&session.api::<K>(), name, wait.timeout, display, look).await?;
    Ok(Done { object, summary })
}

/// A change of a pipeline's spec and the phase that shows it done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PipelineChange {
    Suspend,
    Resume,
    Restart,
}

/// Suspends, resumes or restarts pipeline `name`; with `wait`, follows it
/// until the operator has acted on the change and the job is Suspended or
/// Running again.
pub async fn change_pipeline(
    session: &Session,
    name: &str,
    change: PipelineChange,
    wait: Wait,
    display: &mut Display,
) -> Result<Done<Pipeline>, PluginError> {
    let pipeline: Pipeline = session.get("Pipeline", name).await?;
    let (patched, wanted, verb) = match change {
        PipelineChange::Suspend => (
            (pipeline.spec.state != JobState::Suspended)
                .then(|| json!({"spec": {"state": "suspended"}})),
            PipelinePhase::Suspended,
            "suspended",
        ),
        PipelineChange::Resume => (
            (pipeline.spec.state != JobState::Running)
                .then(|| json!({"spec": {"state": "running"}})),
            PipelinePhase::Running,
            "resumed",
        ),
        PipelineChange::Restart => {
            if pipeline.spec.state == JobState::Suspended {
                return Err(PluginError::WrongState(format!(
                    "Pipeline {name} is suspended: resume it instead of restarting it"
                )));
            }
            let nonce = pipeline.spec.restart_nonce.unwrap_or_default() + 1;
            (
                Some(json!({"spec": {"restartNonce": nonce}})),
                PipelinePhase::Running,
                "restarted",
            )
        }
    };
    let summary = match &patched {
        Some(_) => format!("pipeline.kappa.dev/{name} {verb}"),
        None => format!("pipeline.kappa.dev/{name} is {verb} already"),
    };
    let pipeline = match patched {
        Some(change) => patch::<Pipeline>(session, name, change).await?,
        None => pipeline,
    };
    let generation = pipeline.metadata.generation.unwrap_or_default();
    let look = move |p: &Pipeline| phase_reached(p, generation, wanted, |_| true);
    finish(session, name, pipeline, summary, wait, display, look).await
}

/// Whether pipeline `p` shows generation `generation` acted on, phase
/// `wanted` reached and `also` true; or failed.
fn phase_reached(
    p: &Pipeline,
    generation: i64,
    wanted: PipelinePhase,
    also: impl Fn(&Pipeline) -> bool,
) -> Look {
    let status = p.status.clone().unwrap_or_default();
    let phase = status.phase;
    let shown = phase.map_or_else(|| "-".into(), |p| p.to_string());
    let ready = find(&status.common.conditions, READY)
        .map(|c| format!("{} {}: {}", c.status, c.reason, c.message))
        .unwrap_or_default();
    let screen = format!("Pipeline {}: {shown}\n  Ready={ready}", p.name_any());
    let acted = status.common.observed_generation >= Some(generation);
    let verdict = if acted && phase == Some(PipelinePhase::Failed) {
        Some(Err(
            not_ready(&status.common).unwrap_or_else(|| "the job failed".into())
        ))
    } else {
        (acted && phase == Some(wanted) && also(p)).then_some(Ok(()))
    };
    (screen, verdict)
}

/// Takes a Savepoint of pipeline `name` (named `savepoint`, else
/// `<pipeline>-<random>`); with `wait`, follows it to Completed.
pub async fn take_savepoint(
    session: &Session,
    name: &str,
    savepoint: Option<String>,
    wait: Wait,
    display: &mut Display,
) -> Result<Done<Savepoint>, PluginError> {
    let pipeline: Pipeline = session.get("Pipeline", name).await?;
    let phase = pipeline.status.as_ref().and_then(|s| s.phase);
    let type_ = match pipeline.spec.engine.type_ {
        EngineType::Flink => SavepointType::Flink,
        EngineType::Consumer => SavepointType::Offsets,
    };
    let takes = match type_ {
        SavepointType::Flink => phase == Some(PipelinePhase::Running),
        SavepointType::Offsets => matches!(
            phase,
            Some(PipelinePhase::Running | PipelinePhase::Suspended)
        ),
    };
    if !takes {
        return Err(PluginError::WrongState(format!(
            "Pipeline {name} is {}: a savepoint is taken of a Running job{}",
            phase.map_or_else(|| "Pending".into(), |p| p.to_string()),
            if type_ == SavepointType::Offsets {
                " or a Suspended consumer pipeline"
            } else {
                ""
            }
        )));
    }
    let wanted = Savepoint {
        metadata: ObjectMeta {
            name: savepoint.clone(),
            generate_name: savepoint.is_none().then(|| format!("{name}-")),
            ..ObjectMeta::default()
        },
        // The defaults a `kubectl apply` of only these fields would get.
        spec: serde_json::from_value::<SavepointSpec>(json!({"pipelineRef": name, "type": type_}))
            .map_err(|e| PluginError::Failed(format!("a Savepoint's spec: {e}")))?,
        status: None,
    };
    let created = session
        .api::<Savepoint>()
        .create(&PostParams::default(), &wanted)
        .await
        .map_err(PluginError::from)?;
    let created_name = created.name_any();
    let summary = format!("savepoint.kappa.dev/{created_name} created for Pipeline {name}");
    let look = |s: &Savepoint| -> Look {
        let status = s.status.clone().unwrap_or_default();
        let screen = format!(
            "Savepoint {}: {}{}",
            s.name_any(),
            status
                .phase
                .map_or_else(|| "-".into(), |p| format!("{p:?}")),
            status
                .location
                .as_deref()
                .map(|l| format!(" at {l}"))
                .unwrap_or_default()
        );
        let verdict = match status.phase {
            Some(SavepointPhase::Completed) => Some(Ok(())),
            Some(phase @ (SavepointPhase::Failed | SavepointPhase::Abandoned)) => {
                Some(Err(format!(
                    "Savepoint {} {phase:?}: {}",
                    s.name_any(),
                    status.error.unwrap_or_default()
                )))
            }
            _ => None,
        };
        (screen, verdict)
    };
    finish(
        session,
        &created_name,
        created,
        summary,
        wait,
        display,
        look,
    )
    .await
}

/// Moves consumer pipeline `name` back to Completed Savepoint `savepoint`
/// of its own; with `wait`, follows it until its groups are moved and it
/// runs again.
pub async fn restore(
    session: &Session,
    name: &str,
    savepoint: &str,
    wait: Wait,
    display: &mut Display,
) -> Result<Done<Pipeline>, PluginError> {
    let pipeline: Pipeline = session.get("Pipeline", name).await?;
    if pipeline.spec.engine.type_ == EngineType::Flink {
        return Err(PluginError::WrongState(format!(
            "Pipeline {name} runs on Flink, whose job starts from `restoreFrom` only when first deployed: upgrade it with `upgradeMode: savepoint` instead"
        )));
    }
    let snapshot: Savepoint = session.get("Savepoint", savepoint).await?;
    if snapshot.spec.pipeline_ref != name {
        return Err(PluginError::BadInput(format!(
            "Savepoint {savepoint} is of Pipeline {}, not of {name}",
            snapshot.spec.pipeline_ref
        )));
    }
    let phase = snapshot.status.as_ref().and_then(|s| s.phase);
    if phase != Some(SavepointPhase::Completed) {
        return Err(PluginError::WrongState(format!(
            "Savepoint {savepoint} is {}: only a Completed one restores",
            phase.map_or_else(|| "Pending".into(), |p| format!("{p:?}"))
        )));
    }
    let patched = json!({"spec": {"restoreFrom": {"savepoint": savepoint, "path": null}}});
    let pipeline = patch::<Pipeline>(session, name, patched).await?;
    let generation = pipeline.metadata.generation.unwrap_or_default();
    let wanted = match pipeline.spec.state {
        JobState::Running => PipelinePhase::Running,
        JobState::Suspended => PipelinePhase::Suspended,
    };
    let restored = savepoint.to_string();
    let look = move |p: &Pipeline| {
        phase_reached(p, generation, wanted, |p| {
            p.status.as_ref().and_then(|s| s.restored_from.as_deref()) == Some(restored.as_str())
        })
    };
    let summary = format!("pipeline.kappa.dev/{name} restores from Savepoint {savepoint}");
    finish(session, name, pipeline, summary, wait, display, look).await
}

/// Deletes Backfill `name`; with `wait`, waits until its teardown (the
/// extra clusters, Jobs and plan) is done and it is gone.
pub async fn cancel_backfill(
    session: &Session,
    name: &str,
    wait: Wait,
    display: &mut Display,
) -> Result<String, PluginError> {
    let api = session.api::<Backfill>();
    let backfill: Backfill = session.get("Backfill", name).await?;
    api.delete(name, &DeleteParams::default())
        .await
        .map_err(PluginError::from)?;
    let summary = format!("backfill.kappa.dev/{name} cancelled");
    if !wait.wait {
        return Ok(summary);
    }
    display.show(&summary);
    let started = Instant::now();
    let uid = backfill.uid();
    loop {
        match api.get_opt(name).await.map_err(PluginError::from)? {
            Some(left) if left.uid() == uid => {
                display.show(&super::backfill_view::render(&left));
            }
            _ => {
                return Ok(format!(
                    "backfill.kappa.dev/{name} cancelled; its clusters and Jobs are gone"
                ))
            }
        }
        if started.elapsed() > wait.timeout {
            return Err(PluginError::TimedOut {
                what: format!("the teardown of Backfill {name}"),
                timeout: wait.timeout,
            });
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
