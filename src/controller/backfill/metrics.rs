//! A Backfill's progress and phase as metrics, and their removal once the
//! Backfill is gone.

use std::collections::BTreeSet;

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use super::reason::Reason;
use crate::api::backfill::{Backfill, BackfillPhase, BackfillStatus};
use crate::metrics::{Metrics, Present};

/// The Backfill's progress and phase as metrics.
pub(crate) fn record_metrics(metrics: &Metrics, backfill: &Backfill, status: &BackfillStatus) {
    let namespace = backfill.namespace().unwrap_or_default();
    let name = backfill.name_any();
    if let Some(progress) = &status.progress {
        for (kind, value) in [
            ("range", Some(progress.records_total)),
            ("replayed", Some(progress.records_replayed)),
            ("lag", progress.lag),
        ] {
            if let Some(value) = value {
                metrics
                    .backfill_records
                    .with_label_values(&[&namespace, &name, kind])
                    .set(value);
            }
        }
        metrics
            .backfill_rate
            .with_label_values(&[&namespace, &name])
            .set(progress.rate.unwrap_or(0.0));
        let eta = progress
            .eta
            .as_deref()
            .and_then(|eta| crate::duration::parse_duration(eta).ok());
        if let Some(eta) = eta {
            metrics
                .backfill_expected_end
                .with_label_values(&[&namespace, &name])
                .set(Timestamp::now().as_second() + eta.as_secs() as i64);
        }
        if let Some(bytes) = progress.bytes_replayed {
            metrics
                .backfill_bytes
                .with_label_values(&[&namespace, &name])
                .set(bytes);
        }
    }
    let current = status.phase.unwrap_or(BackfillPhase::Pending);
    for phase in ALL_PHASES {
        metrics
            .backfill_phase
            .with_label_values(&[&namespace, &name, Reason::Phase(phase).as_str()])
            .set(i64::from(phase == current));
    }
}

/// Removes the metric series of Backfills `present` says are gone: a
/// deleted Backfill's progress must not stay on dashboards.
pub fn forget_metrics(metrics: &Metrics, present: &Present) {
    let recorded: BTreeSet<(String, String)> =
        crate::metrics::label_values(&metrics.backfill_phase, ["namespace", "backfill"])
            .into_iter()
            .map(|[namespace, name]| (namespace, name))
            .collect();
    for (namespace, name) in recorded.iter().filter(|(ns, name)| present.gone(ns, name)) {
        // A series that was never set is simply not there to remove.
        for phase in ALL_PHASES {
            let _ = metrics.backfill_phase.remove_label_values(&[
                namespace,
                name,
                Reason::Phase(phase).as_str(),
            ]);
        }
        for kind in ["range", "replayed", "lag"] {
            let _ = metrics
                .backfill_records
                .remove_label_values(&[namespace, name, kind]);
        }
        let _ = metrics
            .backfill_rate
            .remove_label_values(&[namespace, name]);
        let _ = metrics
            .backfill_expected_end
            .remove_label_values(&[namespace, name]);
        let _ = metrics
            .backfill_bytes
            .remove_label_values(&[namespace, name]);
    }
}

const ALL_PHASES: [BackfillPhase; 8] = [
    BackfillPhase::Pending,
    BackfillPhase::Provisioning,
    BackfillPhase::Replaying,
    BackfillPhase::Processing,
    BackfillPhase::HandingOff,
    BackfillPhase::TearingDown,
    BackfillPhase::Completed,
    BackfillPhase::Failed,
];

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn progress_and_phase_are_metrics() {
        let backfill: Backfill = serde_json::from_value(json!({
            "apiVersion": "kappa.dev/v1alpha1", "kind": "Backfill",
            "metadata": {"name": "rerun", "namespace": "shop"},
            "spec": {"pipelineRef": "p", "from": "2026-01-01T00:00:00Z", "to": "2026-01-02T00:00:00Z"},
            "status": {"phase": "Replaying", "progress": {"recordsReplayed": 250, "recordsTotal": 1000, "rate": 50.0, "bytesReplayed": 25000}}
        }))
        .expect("backfill");
        let metrics = Metrics::new("test").expect("metrics");
        record_metrics(
            &metrics,
            &backfill,
            backfill.status.as_ref().expect("status"),
        );
        let text = metrics.render().expect("render");
        for line in [
            r#"kappa_backfill_records{backfill="rerun",kind="replayed",namespace="shop"} 250"#,
            r#"kappa_backfill_records{backfill="rerun",kind="range",namespace="shop"} 1000"#,
            r#"kappa_backfill_records_per_second{backfill="rerun",namespace="shop"} 50"#,
            r#"kappa_backfill_replayed_bytes{backfill="rerun",namespace="shop"} 25000"#,
            r#"kappa_backfill_phase{backfill="rerun",namespace="shop",phase="Replaying"} 1"#,
            r#"kappa_backfill_phase{backfill="rerun",namespace="shop",phase="Pending"} 0"#,
        ] {
            assert!(text.contains(line), "{line} not in\n{text}");
        }
        let mut other = backfill.clone();
        other.metadata.name = Some("kept".into());
        record_metrics(&metrics, &other, other.status.as_ref().expect("status"));
        forget_metrics(
            &metrics,
            &Present::new(
                None,
                BTreeSet::from([("shop".to_string(), "kept".to_string())]),
            ),
        );
        let text = metrics.render().expect("render");
        assert!(!text.contains(r#"backfill="rerun""#), "{text}");
        assert!(
            text.contains(
                r#"kappa_backfill_phase{backfill="kept",namespace="shop",phase="Replaying"} 1"#
            ),
            "{text}"
        );
    }
}
