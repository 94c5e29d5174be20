//! A running pipeline's periodic savepoints: a Savepoint named with its time
//! and owned by the pipeline every `savepoints.interval`, and retention by
//! count and age among them (deleting one disposes its files through its
//! finalizer).

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::api::DeleteParams;
use kube::core::DeserializeGuard;
use kube::runtime::reflector::Store;
use kube::{Api, Client, ResourceExt};

use crate::api::pipeline::{EngineType, Pipeline, SavepointPolicy, SavepointRecord};
use crate::api::savepoint::{Savepoint, SavepointPhase, SavepointSpec, SavepointType};
use crate::controller::common::snapshots::{create_owned, PERIODIC_LABEL};
use crate::duration::SpecDuration;
use crate::error::Error;

/// The periodic Savepoints of `pipeline`, oldest first.
fn periodic(
    pipeline: &Pipeline,
    savepoints: &Store<DeserializeGuard<Savepoint>>,
) -> Vec<Savepoint> {
    let name = pipeline.name_any();
    let mut found: Vec<Savepoint> = savepoints
        .state()
        .iter()
        .filter_map(|guard| guard.0.as_ref().ok())
        .filter(|s| s.namespace() == pipeline.namespace())
        .filter(|s| s.labels().get(PERIODIC_LABEL) == Some(&name))
        .filter(|s| s.metadata.deletion_timestamp.is_none())
        .cloned()
        .collect();
    found.sort_by_key(|s| s.creation_timestamp().map(|t| t.0));
    found
}

/// The newest Completed Savepoint of `pipeline`, periodic or not.
pub fn newest_completed(
    pipeline: &Pipeline,
    savepoints: &Store<DeserializeGuard<Savepoint>>,
) -> Option<SavepointRecord> {
    savepoints
        .state()
        .iter()
        .filter_map(|guard| guard.0.as_ref().ok())
        .filter(|s| s.namespace() == pipeline.namespace())
        .filter(|s| s.spec.pipeline_ref == pipeline.name_any())
        .filter_map(|s| {
            let status = s.status.as_ref()?;
            (status.phase == Some(SavepointPhase::Completed)).then(|| SavepointRecord {
                name: s.name_any(),
                location: status.location.clone(),
                time: status.completion_time.clone(),
            })
        })
        .max_by_key(|record| record.time.as_ref().map(|t| t.0))
}

/// Which periodic savepoints retention removes at `now`: all but the newest
/// `max_count`, and any older than `max_age`.
pub fn expired<'a>(
    oldest_first: &'a [Savepoint],
    policy: &SavepointPolicy,
    now: Timestamp,
) -> Vec<&'a Savepoint> {
    let keep = usize::try_from(policy.retention.max_count).unwrap_or(1);
    let surplus = oldest_first.len().saturating_sub(keep);
    let max_age = policy.retention.max_age.as_ref().and_then(SpecDuration::ok);
    oldest_first
        .iter()
        .enumerate()
        .filter(|(index, savepoint)| {
            let too_old =
                max_age
                    .zip(savepoint.creation_timestamp())
                    .is_some_and(|(age, created)| {
                        now.duration_since(created.0).as_secs_f64() > age.as_secs_f64()
                    });
            *index < surplus || too_old
        })
        .map(|(_, savepoint)| savepoint)
        .collect()
}

/// Takes a periodic savepoint when one is due and applies retention; when
/// to look again.
pub async fn schedule(
    client: &Client,
    pipeline: &Pipeline,
    savepoints: &Store<DeserializeGuard<Savepoint>>,
) -> Result<Option<Duration>, Error> {
    let Some(policy) = &pipeline.spec.savepoints else {
        return Ok(None);
    };
    let namespace = pipeline
        .namespace()
        .ok_or(Error::MissingObjectField("metadata.namespace"))?;
    let api: Api<Savepoint> = Api::namespaced(client.clone(), &namespace);
    let taken = periodic(pipeline, savepoints);
    let now = Timestamp::now();
    for savepoint in expired(&taken, policy, now) {
        tracing::info!(savepoint = %savepoint.name_any(), "retention removes a periodic savepoint");
        match api
            .delete(&savepoint.name_any(), &DeleteParams::default())
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(error) => return Err(error.into()),
        }
    }
    let Some(interval) = policy.interval.as_ref().and_then(SpecDuration::ok) else {
        return Ok(None);
    };
    let since_last = taken
        .last()
        .and_then(|s| s.creation_timestamp())
        .map(|created| now.duration_since(created.0).unsigned_abs());
    if let Some(since) = since_last.filter(|since| *since < interval) {
        return Ok(Some(interval - since));
    }
    let name = format!("{}-{}", pipeline.name_any(), now.strftime("%Y%m%d-%H%M%S"));
    let kind = match pipeline.spec.engine.type_ {
        EngineType::Flink => SavepointType::Flink,
        EngineType::Consumer => SavepointType::Offsets,
    };
    let spec = SavepointSpec {
        pipeline_ref: pipeline.name_any(),
        type_: kind,
        target_directory: policy.target_directory.clone(),
        path: None,
        offsets: Vec::new(),
        dispose_on_delete: kind == SavepointType::Flink,
        backoff_limit: 1,
    };
    if create_owned(&api, pipeline, &name, PERIODIC_LABEL, spec).await? {
        tracing::info!(savepoint = %name, "periodic savepoint requested");
    }
    Ok(Some(interval))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::pipeline::SavepointRetention;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn taken(name: &str, second: i64) -> Savepoint {
        let mut savepoint = Savepoint::new(
            name,
            SavepointSpec {
                pipeline_ref: "job".into(),
                type_: SavepointType::Flink,
                target_directory: None,
                path: None,
                offsets: Vec::new(),
                dispose_on_delete: true,
                backoff_limit: 1,
            },
        );
        savepoint.metadata.creation_timestamp =
            Some(Time(Timestamp::from_second(second).expect("time")));
        savepoint
    }

    #[test]
    fn retention_keeps_the_newest_and_drops_the_old() {
        let all = [
            taken("a", 100),
            taken("b", 200),
            taken("c", 300),
            taken("d", 400),
        ];
        let policy = |max_count, max_age: Option<&str>| SavepointPolicy {
            interval: None,
            target_directory: None,
            timeout: "10m".into(),
            retention: SavepointRetention {
                max_count,
                max_age: max_age.map(SpecDuration::from),
            },
        };
        let now = Timestamp::from_second(450).expect("time");
        let names = |gone: Vec<&Savepoint>| gone.iter().map(|s| s.name_any()).collect::<Vec<_>>();
        assert_eq!(names(expired(&all, &policy(2, None), now)), ["a", "b"]);
        assert_eq!(
            names(expired(&all, &policy(10, Some("200s")), now)),
            ["a", "b"]
        );
        assert_eq!(names(expired(&all, &policy(3, Some("1h")), now)), ["a"]);
        assert!(expired(&all, &policy(4, None), now).is_empty());
    }
}
