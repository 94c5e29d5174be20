//! How producers acknowledge an epoch: each live producer of a set holds a
//! `coordination.k8s.io` Lease in the set's namespace, labelled
//! [`CLUSTER_SET_LABEL`]`=<set>` and [`CLIENT_LABEL`]`=producer`, renews it
//! (`spec.renewTime`, `spec.leaseDurationSeconds`) while it runs, and writes
//! into the annotation [`ACKNOWLEDGED_EPOCH_ANNOTATION`] the highest epoch
//! whose write cluster it now uses (after flushing what it had sent to the
//! previous one). A Lease that is not renewed in time belongs to a producer
//! that is gone, and is not waited for. With the acknowledgement the
//! producer reports, in [`WRITTEN_OFFSETS_ANNOTATION`], the offset after the
//! last record delivered to it on every cluster, topic and partition, so a
//! drained segment ends after every acknowledged record even when a broker's
//! high watermark lags behind its acknowledgements.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

/// Label naming the KafkaClusterSet a client Lease belongs to.
pub const CLUSTER_SET_LABEL: &str = "kappa.dev/cluster-set";
/// Label saying what kind of client holds the Lease.
pub const CLIENT_LABEL: &str = "kappa.dev/client";
/// The [`CLIENT_LABEL`] value of producers.
pub const PRODUCER: &str = "producer";
/// Annotation with the highest epoch the producer has switched to.
pub const ACKNOWLEDGED_EPOCH_ANNOTATION: &str = "kappa.dev/acknowledged-epoch";

/// Annotation with the offset after the last record the producer had
/// delivered, as JSON: cluster → topic → partition → offset.
pub const WRITTEN_OFFSETS_ANNOTATION: &str = "kappa.dev/written-offsets";

/// What [`WRITTEN_OFFSETS_ANNOTATION`] holds.
pub type WrittenOffsets = BTreeMap<String, BTreeMap<String, BTreeMap<String, i64>>>;

/// The label selector of a set's producer Leases.
pub fn producer_selector(set: &str) -> String {
    format!("{CLUSTER_SET_LABEL}={set},{CLIENT_LABEL}={PRODUCER}")
}

/// When a Lease stops counting as live, if it ever did.
fn expiry(lease: &Lease) -> Option<Timestamp> {
    let spec = lease.spec.as_ref()?;
    let renewed = spec.renew_time.as_ref()?.0;
    let seconds = i64::from(spec.lease_duration_seconds?);
    renewed
        .checked_add(k8s_openapi::jiff::SignedDuration::from_secs(seconds))
        .ok()
}

/// The producer a Lease stands for: its holder, else its name.
fn producer(lease: &Lease) -> String {
    lease
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.clone())
        .unwrap_or_else(|| lease.name_any())
}

/// What the Leases say at `now` about `epoch`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acknowledgements {
    /// Live producers that have not acknowledged the epoch, sorted.
    pub pending: Vec<String>,
    /// How long until the first of those would expire, to look again then.
    pub recheck_in: Option<Duration>,
}

/// Which live producers still have to acknowledge `epoch`.
pub fn acknowledgements(leases: &[Lease], epoch: i64, now: Timestamp) -> Acknowledgements {
    let mut pending = Vec::new();
    let mut first_expiry: Option<Timestamp> = None;
    for lease in leases {
        let Some(expires) = expiry(lease).filter(|e| *e > now) else {
            continue;
        };
        let acknowledged = lease
            .annotations()
            .get(ACKNOWLEDGED_EPOCH_ANNOTATION)
            .and_then(|v| v.trim().parse::<i64>().ok())
            .unwrap_or(0);
        if acknowledged < epoch {
            pending.push(producer(lease));
            first_expiry = Some(first_expiry.map_or(expires, |e| e.min(expires)));
        }
    }
    pending.sort();
    let recheck_in = first_expiry.and_then(|e| {
        let wait = e.duration_since(now);
        Duration::try_from(wait).ok()
    });
    Acknowledgements {
        pending,
        recheck_in,
    }
}

/// The greatest offset every producer reported for `cluster` and `topic`,
/// per partition, live or not: each one follows a delivered record. An
/// annotation that is not such a map is skipped.
pub fn written_ends(leases: &[Lease], cluster: &str, topic: &str) -> BTreeMap<i32, i64> {
    let mut ends = BTreeMap::new();
    let reported = leases.iter().filter_map(|lease| {
        let written = lease.annotations().get(WRITTEN_OFFSETS_ANNOTATION)?;
        serde_json::from_str::<WrittenOffsets>(written).ok()
    });
    for mut written in reported {
        let Some(partitions) = written.get_mut(cluster).and_then(|t| t.remove(topic)) else {
            continue;
        };
        for (partition, offset) in partitions {
            if let Ok(partition) = partition.parse::<i32>() {
                let end = ends.entry(partition).or_insert(offset);
                *end = (*end).max(offset);
            }
        }
    }
    ends
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};

    fn lease(holder: &str, renewed: i64, acknowledged: Option<i64>) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some(format!("lease-{holder}")),
                annotations: acknowledged.map(|epoch| {
                    BTreeMap::from([(ACKNOWLEDGED_EPOCH_ANNOTATION.to_string(), epoch.to_string())])
                }),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(holder.to_string()),
                lease_duration_seconds: Some(10),
                renew_time: Some(MicroTime(Timestamp::from_second(renewed).expect("time"))),
                ..LeaseSpec::default()
            }),
        }
    }

    #[test]
    fn only_live_producers_behind_the_epoch_are_waited_for() {
        let now = Timestamp::from_second(1_000).expect("time");
        let leases = [
            lease("moved", 995, Some(4)),
            lease("behind", 998, Some(3)),
            lease("silent", 996, None),
            lease("gone", 980, Some(1)),
        ];
        let acks = acknowledgements(&leases, 4, now);
        assert_eq!(acks.pending, ["behind", "silent"]);
        assert_eq!(acks.recheck_in, Some(Duration::from_secs(6)));
        assert!(acknowledgements(&leases, 3, now).pending == ["silent"]);
    }

    #[test]
    fn the_greatest_reported_offset_of_any_producer_counts() {
        let report = |json: &str| {
            let mut lease = lease("p", 0, Some(1));
            lease
                .annotations_mut()
                .insert(WRITTEN_OFFSETS_ANNOTATION.to_string(), json.to_string());
            lease
        };
        let leases = [
            report(r#"{"green":{"orders":{"0":12,"1":129}},"blue":{"orders":{"0":400}}}"#),
            report(r#"{"green":{"orders":{"0":15,"x":3},"audit":{"0":9}}}"#),
            report("not json"),
            lease("silent", 0, None),
        ];
        assert_eq!(
            written_ends(&leases, "green", "orders"),
            BTreeMap::from([(0, 15), (1, 129)])
        );
        assert!(written_ends(&leases, "red", "orders").is_empty());
    }
}
