//! Who runs a cluster of the set, and how to reach it. A provider is a
//! trait so that another (such as one over Strimzi's resources) drops in
//! without touching the set's reconciler.

use std::collections::{BTreeMap, BTreeSet};

use futures::future::BoxFuture;
use futures::FutureExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Secret, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
};
use kube::{Api, Client, Resource, ResourceExt};

use super::builtin;
use crate::api::kafka_cluster_set::{
    BuiltinCluster, ClusterSettings, ExternalCluster, KafkaClusterSet, Provider, SaslMechanism,
};
use crate::controller::reconcile::FIELD_MANAGER;
use crate::discovery::{ClientSecurity, DiscoveredCluster, SecretKey};
use crate::kafka::ClusterConnection;

/// Why a cluster cannot be reached yet. Each is a condition reason.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ProviderError {
    /// The provider is not part of this operator version.
    #[error("the `{0}` provider is not available in this operator version; use `external`")]
    Unavailable(&'static str),
    /// A Secret or key the cluster's settings name does not exist.
    #[error("{0}")]
    SecretMissing(String),
    /// The API server did not answer or refused a write.
    #[error("Kubernetes API call failed: {0}")]
    Api(String),
    /// The cluster's pods are not all ready yet.
    #[error("{0}")]
    Starting(String),
    /// The cluster's objects no longer exist (a retiring cluster already removed).
    #[error("{0}")]
    Gone(String),
}

impl ProviderError {
    /// One error of each kind, for tests of what users are told.
    #[cfg(test)]
    pub(crate) fn examples() -> [Self; 5] {
        let words = String::new;
        [
            Self::Unavailable("builtin"),
            Self::SecretMissing(words()),
            Self::Api(words()),
            Self::Starting(words()),
            Self::Gone(words()),
        ]
    }

    /// The condition reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Unavailable(_) => "ProviderUnavailable",
            Self::SecretMissing(_) => "SecretNotFound",
            Self::Api(_) => "KubeApiError",
            Self::Starting(_) => "ClusterStarting",
            Self::Gone(_) => "ClusterGone",
        }
    }
}

/// How clients reach a cluster: the admin connection (secrets resolved) and
/// what the discovery document says (secrets named, never copied).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// For the operator's own admin calls.
    pub connection: ClusterConnection,
    /// For clients, without credentials.
    pub security: Option<ClientSecurity>,
}

/// Runs or finds the clusters of a set.
pub trait ClusterProvider: Send + Sync {
    /// Makes sure cluster `cluster` of `set` runs with these settings (for
    /// providers that run clusters) and says how to reach it.
    fn endpoint<'a>(
        &'a self,
        set: &'a KafkaClusterSet,
        cluster: &'a str,
        spec: &'a ClusterSettings,
    ) -> BoxFuture<'a, Result<Endpoint, ProviderError>>;

    /// Says how to reach a cluster that has left the set, without creating
    /// or changing anything: a reconcile working from an older view must not
    /// bring back a cluster that was already removed.
    fn reach<'a>(
        &'a self,
        set: &'a KafkaClusterSet,
        cluster: &'a str,
        spec: &'a ClusterSettings,
    ) -> BoxFuture<'a, Result<Endpoint, ProviderError>>;

    /// Removes a cluster that has left the set and been drained (for
    /// providers that run clusters; an external cluster is left alone).
    fn retire<'a>(
        &'a self,
        set: &'a KafkaClusterSet,
        cluster: &'a str,
        spec: &'a ClusterSettings,
    ) -> BoxFuture<'a, Result<(), ProviderError>>;

    /// Removes what this set runs for clusters not in `keep` (neither
    /// members nor being retired): objects a reconcile working from an older
    /// view applied while another removed that cluster. Returns the
    /// clusters whose objects were removed.
    fn sweep<'a>(
        &'a self,
        set: &'a KafkaClusterSet,
        keep: &'a BTreeSet<String>,
    ) -> BoxFuture<'a, Result<Vec<String>, ProviderError>>;
}

/// Providers by kind, chosen per cluster.
pub struct Providers {
    client: Client,
}

impl Providers {
    /// The providers of this operator version.
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

impl Providers {
    fn run_or_reach<'a>(
        &'a self,
        set: &'a KafkaClusterSet,
        cluster: &'a str,
        spec: &'a ClusterSettings,
        create: bool,
    ) -> BoxFuture<'a, Result<Endpoint, ProviderError>> {
        let namespace = set.namespace().unwrap_or_default();
        match (spec.provider, &spec.external, &spec.builtin) {
            (Provider::External, Some(external), _) => {
                async move { external_endpoint(&self.client, &namespace, external).await }.boxed()
            }
            (Provider::Builtin, _, Some(builtin)) => {
                let hash = spec.hash();
                async move { run_builtin(&self.client, set, cluster, builtin, &hash, create).await }
                    .boxed()
            }
            // Validation refuses a cluster without its provider's settings.
            (Provider::External, None, _) => {
                futures::future::ready(Err(ProviderError::Unavailable("external"))).boxed()
            }
            (Provider::Builtin, _, None) => {
                futures::future::ready(Err(ProviderError::Unavailable("builtin"))).boxed()
            }
        }
    }
}

impl ClusterProvider for Providers {
    fn endpoint<'a>(
        &'a self,
        set: &'a KafkaClusterSet,
        cluster: &'a str,
        spec: &'a ClusterSettings,
    ) -> BoxFuture<'a, Result<Endpoint, ProviderError>> {
        self.run_or_reach(set, cluster, spec, true)
    }

    fn reach<'a>(
        &'a self,
        set: &'a KafkaClusterSet,
        cluster: &'a str,
        spec: &'a ClusterSettings,
    ) -> BoxFuture<'a, Result<Endpoint, ProviderError>> {
        self.run_or_reach(set, cluster, spec, false)
    }

    fn retire<'a>(
        &'a self,
        set: &'a KafkaClusterSet,
        cluster: &'a str,
        spec: &'a ClusterSettings,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        match (spec.provider, &spec.builtin) {
            (Provider::Builtin, Some(builtin)) => async move {
                remove_builtin(&self.client, set, cluster, builtin.storage.delete_claims).await
            }
            .boxed(),
            _ => futures::future::ready(Ok(())).boxed(),
        }
    }

    fn sweep<'a>(
        &'a self,
        set: &'a KafkaClusterSet,
        keep: &'a BTreeSet<String>,
    ) -> BoxFuture<'a, Result<Vec<String>, ProviderError>> {
        async move {
            let api = |e: kube::Error| ProviderError::Api(e.to_string());
            let namespace = set.namespace().unwrap_or_default();
            let selector =
                ListParams::default().labels(&format!("{}={}", builtin::SET_LABEL, set.name_any()));
            let config_maps: Api<ConfigMap> = Api::namespaced(self.client.clone(), &namespace);
            let sets: Api<StatefulSet> = Api::namespaced(self.client.clone(), &namespace);
            let mut owned: Vec<ObjectMeta> = Vec::new();
            owned.extend(
                config_maps
                    .list(&selector)
                    .await
                    .map_err(api)?
                    .items
                    .into_iter()
                    .map(|o| o.metadata),
            );
            owned.extend(
                sets.list(&selector)
                    .await
                    .map_err(api)?
                    .items
                    .into_iter()
                    .map(|o| o.metadata),
            );
            let stray: BTreeSet<String> = owned
                .iter()
                .filter(|meta| {
                    meta.owner_references.iter().flatten().any(|o| {
                        o.controller == Some(true) && Some(&o.uid) == set.meta().uid.as_ref()
                    })
                })
                .filter_map(|meta| meta.labels.as_ref()?.get(builtin::CLUSTER_LABEL).cloned())
                .filter(|cluster| !keep.contains(cluster))
                .collect();
            let delete_claims = set
                .spec
                .template
                .builtin
                .as_ref()
                .is_some_and(|b| b.storage.delete_claims);
            for cluster in &stray {
                remove_builtin(&self.client, set, cluster, delete_claims).await?;
            }
            Ok(stray.into_iter().collect())
        }
        .boxed()
    }
}

/// Deletes a builtin cluster's objects, and its volume claims when the
/// storage settings ask for it (by default they are kept).
async fn remove_builtin(
    client: &Client,
    set: &KafkaClusterSet,
    cluster: &str,
    delete_claims: bool,
) -> Result<(), ProviderError> {
    let names = builtin::Names::of(set, cluster);
    let ns = names.namespace.as_str();
    let params = DeleteParams::background();
    let gone = |result: Result<_, kube::Error>| match result {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(error) => Err(ProviderError::Api(error.to_string())),
    };
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), ns);
    gone(sets.delete(&names.base, &params).await.map(|_| ()))?;
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    gone(services.delete(&names.base, &params).await.map(|_| ()))?;
    gone(services.delete(&names.headless, &params).await.map(|_| ()))?;
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    gone(config_maps.delete(&names.config, &params).await.map(|_| ()))?;
    for version in ["v1", "v1beta1"] {
        let gvk = GroupVersionKind::gvk("policy", version, "PodDisruptionBudget");
        let budgets: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), ns, &ApiResource::from_gvk(&gvk));
        gone(budgets.delete(&names.base, &params).await.map(|_| ()))?;
    }
    if delete_claims {
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
        let own: Vec<String> = builtin::selector(set, cluster)
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        // The claims of a cluster created by an earlier version carry its
        // selector of then.
        let legacy = format!(
            "app.kubernetes.io/name=kafka,app.kubernetes.io/instance={}",
            names.base
        );
        for selector in [own.join(","), legacy] {
            let found = ListParams::default().labels(&selector);
            gone(claims.delete_collection(&params, &found).await.map(|_| ()))?;
        }
    }
    Ok(())
}

/// Annotation on a builtin cluster's StatefulSet: the settings it was made from.
const SPEC_HASH_ANNOTATION: &str = "kappa.dev/spec-hash";

/// A builtin cluster: its objects applied when missing or made from other
/// settings, then its readiness read from the StatefulSet.
async fn run_builtin(
    client: &Client,
    set: &KafkaClusterSet,
    cluster: &str,
    builtin: &BuiltinCluster,
    hash: &str,
    create: bool,
) -> Result<Endpoint, ProviderError> {
    let names = builtin::Names::of(set, cluster);
    let api = |e: kube::Error| ProviderError::Api(e.to_string());
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), &names.namespace);
    let existing = sets.get_opt(&names.base).await.map_err(api)?;
    let foreign = existing
        .as_ref()
        .and_then(|s| {
            s.owner_references()
                .iter()
                .find(|o| o.controller == Some(true))
        })
        .is_some_and(|owner| Some(&owner.uid) != set.meta().uid.as_ref());
    if foreign {
        // A set of the same name was deleted and its children are not gone yet.
        return Err(ProviderError::Starting(format!(
            "StatefulSet `{}` belongs to an earlier set of this name; waiting for its deletion",
            names.base
        )));
    }
    if existing.is_none() && !create {
        return Err(ProviderError::Gone(format!(
            "StatefulSet `{}` no longer exists",
            names.base
        )));
    }
    let current = existing
        .as_ref()
        .and_then(|s| s.annotations().get(SPEC_HASH_ANNOTATION).cloned());
    if create && current.as_deref() != Some(hash) {
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &names.namespace);
        let services: Api<Service> = Api::namespaced(client.clone(), &names.namespace);
        let config = builtin::config_map(set, cluster, builtin);
        config_maps
            .patch(&names.config, &params, &Patch::Apply(&config))
            .await
            .map_err(api)?;
        for service in [
            builtin::headless_service(set, cluster, builtin),
            builtin::bootstrap_service(set, cluster, builtin),
        ] {
            let name = service.name_any();
            services
                .patch(&name, &params, &Patch::Apply(&service))
                .await
                .map_err(api)?;
        }
        apply_disruption_budget(
            client,
            &names,
            &builtin::disruption_budget(set, cluster, builtin),
        )
        .await?;
        let mut stateful_set = builtin::stateful_set(set, cluster, builtin);
        stateful_set
            .annotations_mut()
            .insert(SPEC_HASH_ANNOTATION.to_string(), hash.to_string());
        sets.patch(&names.base, &params, &Patch::Apply(&stateful_set))
            .await
            .map_err(api)?;
        return Err(ProviderError::Starting(format!(
            "StatefulSet `{}` applied; waiting for its {} node(s)",
            names.base, builtin.nodes
        )));
    }
    let ready = existing
        .and_then(|s| s.status)
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0);
    if ready < builtin.nodes {
        return Err(ProviderError::Starting(format!(
            "{ready} of {} node(s) of StatefulSet `{}` ready",
            builtin.nodes, names.base
        )));
    }
    Ok(Endpoint {
        connection: ClusterConnection::plaintext(names.bootstrap()),
        security: None,
    })
}

/// Applies a PodDisruptionBudget as `policy/v1`, or as `policy/v1beta1` on
/// API servers older than 1.21 that do not serve v1.
async fn apply_disruption_budget(
    client: &Client,
    names: &builtin::Names,
    budget: &serde_json::Value,
) -> Result<(), ProviderError> {
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mut last = None;
    for version in ["v1", "v1beta1"] {
        let gvk = GroupVersionKind::gvk("policy", version, "PodDisruptionBudget");
        let api: Api<DynamicObject> = Api::namespaced_with(
            client.clone(),
            &names.namespace,
            &ApiResource::from_gvk(&gvk),
        );
        let mut object = budget.clone();
        object["apiVersion"] = format!("policy/{version}").into();
        object["kind"] = "PodDisruptionBudget".into();
        match api
            .patch(&names.base, &params, &Patch::Apply(&object))
            .await
        {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(status)) if status.code == 404 => last = Some(status.message),
            Err(error) => return Err(ProviderError::Api(error.to_string())),
        }
    }
    Err(ProviderError::Api(last.unwrap_or_default()))
}

/// An existing cluster: its bootstrap servers, with TLS and SASL settings
/// read from the named Secrets.
async fn external_endpoint(
    client: &Client,
    namespace: &str,
    external: &ExternalCluster,
) -> Result<Endpoint, ProviderError> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let mut properties = BTreeMap::new();
    let tls = external.tls.is_some();
    let protocol = match (tls, external.sasl.is_some()) {
        (false, false) => None,
        (true, false) => Some("SSL"),
        (false, true) => Some("SASL_PLAINTEXT"),
        (true, true) => Some("SASL_SSL"),
    };
    let mut security = protocol.map(|protocol| ClientSecurity {
        protocol: protocol.to_string(),
        sasl_mechanism: None,
        sasl_secret_name: None,
        ca_secret: None,
    });
    if let Some(protocol) = protocol {
        properties.insert("security.protocol".to_string(), protocol.to_string());
    }
    if let Some(tls) = &external.tls {
        let ca = secret_value(&secrets, &tls.ca_cert.name, &tls.ca_cert.key).await?;
        properties.insert("ssl.ca.pem".to_string(), ca);
        if let Some(security) = security.as_mut() {
            security.ca_secret = Some(SecretKey {
                name: tls.ca_cert.name.clone(),
                key: tls.ca_cert.key.clone(),
            });
        }
    }
    if let Some(sasl) = &external.sasl {
        let mechanism = match sasl.mechanism {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        };
        properties.insert("sasl.mechanism".to_string(), mechanism.to_string());
        properties.insert(
            "sasl.username".to_string(),
            secret_value(&secrets, &sasl.secret_name, "username").await?,
        );
        properties.insert(
            "sasl.password".to_string(),
            secret_value(&secrets, &sasl.secret_name, "password").await?,
        );
        if let Some(security) = security.as_mut() {
            security.sasl_mechanism = Some(mechanism.to_string());
            security.sasl_secret_name = Some(sasl.secret_name.clone());
        }
    }
    Ok(Endpoint {
        connection: ClusterConnection {
            bootstrap_servers: external.bootstrap_servers.join(","),
            properties,
        },
        security,
    })
}

async fn secret_value(
    secrets: &Api<Secret>,
    name: &str,
    key: &str,
) -> Result<String, ProviderError> {
    let secret = secrets
        .get_opt(name)
        .await
        .map_err(|e| ProviderError::Api(e.to_string()))?
        .ok_or_else(|| ProviderError::SecretMissing(format!("Secret `{name}` does not exist")))?;
    secret
        .data
        .as_ref()
        .and_then(|data| data.get(key))
        .and_then(|value| String::from_utf8(value.0.clone()).ok())
        .ok_or_else(|| {
            ProviderError::SecretMissing(format!("Secret `{name}` has no UTF-8 key `{key}`"))
        })
}

/// How the operator reaches a cluster as the discovery document describes
/// it, its credentials read from the Secrets the document names.
pub async fn discovered_connection(
    client: &Client,
    namespace: &str,
    cluster: &DiscoveredCluster,
) -> Result<ClusterConnection, ProviderError> {
    let mut connection = ClusterConnection::plaintext(cluster.bootstrap_servers.clone());
    let Some(security) = &cluster.security else {
        return Ok(connection);
    };
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let properties = &mut connection.properties;
    properties.insert("security.protocol".into(), security.protocol.clone());
    if let Some(ca) = &security.ca_secret {
        let pem = secret_value(&secrets, &ca.name, &ca.key).await?;
        properties.insert("ssl.ca.pem".into(), pem);
    }
    if let Some(secret) = &security.sasl_secret_name {
        if let Some(mechanism) = &security.sasl_mechanism {
            properties.insert("sasl.mechanism".into(), mechanism.clone());
        }
        for key in ["username", "password"] {
            let value = secret_value(&secrets, secret, key).await?;
            properties.insert(format!("sasl.{key}"), value);
        }
    }
    Ok(connection)
}
