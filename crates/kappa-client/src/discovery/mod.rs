//! The discovery document: where clients of a KafkaClusterSet write and read.
//! It lives under the key [`DOCUMENT_KEY`] of the ConfigMap `<set>-discovery`.
//! `docs/discovery.md` describes it for client authors and
//! `docs/discovery.schema.json` (generated from these types) specifies it.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub mod acknowledgement;

use kappa_api::kafka_cluster_set::ClusterRole;

/// Version of the document format; a client refuses a version it does not know.
pub const FORMAT_VERSION: u32 = 1;
/// The ConfigMap key holding the document.
pub const DOCUMENT_KEY: &str = "discovery.json";

/// The name of a set's discovery ConfigMap.
pub fn config_map_name(set: &str) -> String {
    format!("{set}-discovery")
}

/// Where the clients of one KafkaClusterSet write and read.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(title = "kappa-operator discovery document")]
pub struct DiscoveryDocument {
    /// Format version; this schema describes version 1.
    pub version: u32,
    /// Grows by one every time anything else in the document changes. A
    /// client acts on a document only when its epoch is greater than the
    /// last one it acted on.
    pub epoch: i64,
    /// Namespace of the KafkaClusterSet.
    pub namespace: String,
    /// Name of the KafkaClusterSet.
    pub set: String,
    /// Every cluster a client may need to reach, in the set's order.
    pub clusters: Vec<DiscoveredCluster>,
    /// Per logical stream: where to write and the segments to read, in order.
    pub streams: Vec<DiscoveredStream>,
}

/// One cluster and how to connect to it. Credentials are never in the
/// document: `security.secretName` names the Secret that holds them.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DiscoveredCluster {
    /// Cluster name, unique in the set.
    pub name: String,
    /// Role declared in the set.
    pub role: ClusterRole,
    /// `active`: written or read normally; `draining`: no longer written,
    /// still read up to its segments' end offsets.
    pub state: ClusterState,
    /// Comma-separated `host:port` list.
    pub bootstrap_servers: String,
    /// How to authenticate; absent for plaintext.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security: Option<ClientSecurity>,
}

/// Lifecycle of a cluster as clients see it.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ClusterState {
    /// In normal use.
    Active,
    /// Not written any more; read until its end offsets.
    Draining,
}

/// Client security settings, with the credentials left in a Secret.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClientSecurity {
    /// Kafka's `security.protocol`: `SSL`, `SASL_PLAINTEXT` or `SASL_SSL`.
    pub protocol: String,
    /// SASL mechanism, when SASL is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sasl_mechanism: Option<String>,
    /// Secret (same namespace) with `username` and `password` for SASL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sasl_secret_name: Option<String>,
    /// Secret (same namespace) and key of the CA certificate for TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret: Option<SecretKey>,
}

impl ClientSecurity {
    /// The Secrets a client needs mounted, each once.
    pub fn secrets(&self) -> std::collections::BTreeSet<&str> {
        self.sasl_secret_name
            .iter()
            .map(String::as_str)
            .chain(self.ca_secret.iter().map(|c| c.name.as_str()))
            .collect()
    }
}

/// A key in a Secret.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretKey {
    /// Secret name.
    pub name: String,
    /// Key in the Secret's data.
    pub key: String,
}

/// Routing of one logical stream.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DiscoveredStream {
    /// Logical stream name.
    pub name: String,
    /// Where producers write.
    pub write: Segment,
    /// What consumers read, oldest first: each segment with `endOffsets` is
    /// read up to those offsets (exclusive) before the next segment is read.
    pub read: Vec<ReadSegment>,
}

/// A topic on a cluster.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Segment {
    /// Cluster name.
    pub cluster: String,
    /// Topic name on that cluster.
    pub topic: String,
}

/// A topic on a cluster to read, possibly up to recorded end offsets.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReadSegment {
    /// Cluster name.
    pub cluster: String,
    /// Topic name on that cluster.
    pub topic: String,
    /// Per partition (as a decimal string), the offset the segment starts
    /// at. Absent: the beginning of the partition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_offsets: Option<BTreeMap<String, i64>>,
    /// For a drained segment: per partition (as a decimal string), the
    /// offset at which reading stops. Absent for the live segment and for a
    /// segment being drained (its producers are still moving away): a
    /// consumer reads such a segment and does not go on to the next.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_offsets: Option<BTreeMap<String, i64>>,
}

impl DiscoveryDocument {
    /// A digest of everything but the epoch: equal digests mean no client
    /// needs to act, so the epoch stays.
    pub fn content_hash(&self) -> String {
        let mut unversioned = self.clone();
        unversioned.epoch = 0;
        let bytes = serde_json::to_vec(&unversioned).unwrap_or_default();
        hex(&Sha256::digest(bytes)[..16])
    }

    /// The document as stored in the ConfigMap.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// The value of the [`EPOCH_HEADER`] a producer of this document's set
    /// puts on a record of a segment it writes since `epoch`:
    /// `<namespace>/<set>/<epoch>`.
    pub fn epoch_header(&self, epoch: i64) -> String {
        format!("{}/{}/{epoch}", self.namespace, self.set)
    }

    /// The epoch an [`EPOCH_HEADER`] value names, when it was written by a
    /// producer of this document's set and the epoch is greater than this
    /// document's: the record is in a segment this document does not know.
    pub fn newer_epoch_in(&self, header: &[u8]) -> Option<i64> {
        let value = std::str::from_utf8(header).ok()?;
        let (set, epoch) = value.rsplit_once('/')?;
        let epoch = epoch.parse::<i64>().ok()?;
        (set == format!("{}/{}", self.namespace, self.set) && epoch > self.epoch).then_some(epoch)
    }
}

/// The record header naming the set and the epoch from which the record's
/// producer writes the segment the record is in (the document that made
/// the cluster the write cluster, or a later one). A consumer reading a
/// segment whose end it does not know yet stops at a record of a newer
/// epoch until it has that document: the segment it reads may have ended
/// before that record (the write cluster moved away and back), and only
/// the newer document says where.
pub const EPOCH_HEADER: &str = "kappa.dev/epoch";

/// Lower-case hexadecimal of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The JSON Schema of the document, as committed in `docs/discovery.schema.json`.
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(DiscoveryDocument);
    let mut text = serde_json::to_string_pretty(&schema).unwrap_or_default();
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_newer_epoch_of_the_same_set_counts() {
        let now = document(5);
        assert_eq!(now.epoch_header(3), "shop/events/3");
        assert_eq!(now.newer_epoch_in(now.epoch_header(7).as_bytes()), Some(7));
        for older_or_foreign in [
            "shop/events/5",
            "shop/events/4",
            "other/events/9",
            "shop/orders/9",
            "shop/events/x",
            "9",
            "",
        ] {
            assert_eq!(
                now.newer_epoch_in(older_or_foreign.as_bytes()),
                None,
                "{older_or_foreign}"
            );
        }
        assert_eq!(now.newer_epoch_in(&[0xff, b'/', b'9']), None);
    }

    fn document(epoch: i64) -> DiscoveryDocument {
        DiscoveryDocument {
            version: FORMAT_VERSION,
            epoch,
            namespace: "shop".into(),
            set: "events".into(),
            clusters: vec![DiscoveredCluster {
                name: "blue".into(),
                role: ClusterRole::Primary,
                state: ClusterState::Active,
                bootstrap_servers: "blue:9092".into(),
                security: None,
            }],
            streams: vec![DiscoveredStream {
                name: "orders".into(),
                write: Segment {
                    cluster: "blue".into(),
                    topic: "orders".into(),
                },
                read: vec![ReadSegment {
                    cluster: "blue".into(),
                    topic: "orders".into(),
                    start_offsets: None,
                    end_offsets: None,
                }],
            }],
        }
    }

    #[test]
    fn the_epoch_does_not_change_the_content_hash() {
        assert_eq!(document(1).content_hash(), document(7).content_hash());
        let mut moved = document(1);
        moved.clusters[0].bootstrap_servers = "blue-2:9092".into();
        assert_ne!(document(1).content_hash(), moved.content_hash());
    }

    #[test]
    fn a_document_reads_back_and_refuses_unknown_fields() {
        let text = document(3).to_json();
        let read: DiscoveryDocument = serde_json::from_str(&text).expect("reads back");
        assert_eq!(read, document(3));
        let mut value: serde_json::Value = serde_json::from_str(&text).expect("json");
        value["surprise"] = serde_json::json!(1);
        assert!(serde_json::from_value::<DiscoveryDocument>(value).is_err());
    }
}
