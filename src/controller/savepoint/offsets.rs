//! Taking an offsets Savepoint: the consumer pipeline's groups' committed
//! offsets on every cluster its inputs are read from, kept in the status.
//! The app need not be stopped: a group's committed offsets are a
//! consistent point to restart it from. Offsets named in the spec are
//! registered as they are.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::{Client, ResourceExt};

use super::lifecycle::{done, ended, failed_attempt, outcome};
use super::reason::Reason;
use crate::api::pipeline::{EngineType, Pipeline};
use crate::api::savepoint::{Savepoint, SavepointPhase};
use crate::conditions::{ConditionStatus, READY};
use crate::controller::common::offsets::ReadView;
use crate::controller::common::pipelines::groups;
use crate::controller::status::{Outcome, Requeue, Wanted};
use crate::error::Error;
use crate::kafka::KafkaAdmin;

/// How often a savepoint waiting for its pipeline looks again.
const WAITING_RECHECK: Duration = Duration::from_secs(10);

/// Takes one offsets Savepoint, or reports where it stands.
pub async fn take(
    client: &Client,
    admin: &dyn KafkaAdmin,
    savepoint: &Savepoint,
    pipeline: Option<&Pipeline>,
) -> Result<Outcome, Error> {
    let mut status = savepoint.status.clone().unwrap_or_default();
    if status.phase == Some(SavepointPhase::Completed) {
        let message = status.location.clone().unwrap_or_default();
        return done(
            &status,
            ConditionStatus::True,
            Reason::SavepointCompleted,
            message,
        );
    }
    if let Some(ended) = ended(&status) {
        return ended;
    }
    if !savepoint.spec.offsets.is_empty() {
        let now = Time(Timestamp::now());
        let location = format!(
            "registered offsets on {} partition(s)",
            savepoint.spec.offsets.len()
        );
        status.phase = Some(SavepointPhase::Completed);
        status.offsets = savepoint.spec.offsets.clone();
        status.location = Some(location.clone());
        status.trigger_time = Some(now.clone());
        status.completion_time = Some(now);
        status.error = None;
        return done(
            &status,
            ConditionStatus::True,
            Reason::SavepointCompleted,
            location,
        );
    }
    let name = &savepoint.spec.pipeline_ref;
    let Some(pipeline) = pipeline.filter(|p| p.spec.engine.type_ == EngineType::Consumer) else {
        status.phase = Some(SavepointPhase::Pending);
        let ready = Wanted::new(
            READY,
            ConditionStatus::False,
            Reason::PipelineNotRunning,
            format!("Pipeline `{name}` is not there, or is not a consumer pipeline"),
        );
        return outcome(&status, ready, Requeue::After(WAITING_RECHECK));
    };
    let taken = async {
        let view = ReadView::of(client, pipeline).await?;
        view.snapshot(admin, pipeline).await
    }
    .await;
    match taken {
        Ok(offsets) => {
            let now = Time(Timestamp::now());
            let names: Vec<String> = groups(&pipeline.name_any(), &pipeline.spec)
                .into_iter()
                .map(|(_, group)| group)
                .collect();
            let location = format!(
                "committed offsets of group(s) {} on {} partition(s)",
                names.join(", "),
                offsets.len()
            );
            status.phase = Some(SavepointPhase::Completed);
            status.offsets = offsets;
            status.location = Some(location.clone());
            status.trigger_time = Some(now.clone());
            status.completion_time = Some(now);
            status.error = None;
            done(
                &status,
                ConditionStatus::True,
                Reason::SavepointCompleted,
                location,
            )
        }
        Err(error) => failed_attempt(savepoint, status, format!("{}: {error}", error.reason())),
    }
}
