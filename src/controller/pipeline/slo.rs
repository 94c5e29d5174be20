//! A Pipeline's SLO in the cluster: its rules delivered as a ConfigMap
//! `<pipeline>-slo-rules` and/or a PrometheusRule `<pipeline>-slo` (when
//! the cluster serves that kind), both owned by the Pipeline and removed
//! with its SLO, and what `status.slo` says of them.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{ApiResource, DeleteParams, DynamicObject};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, ResourceExt};
use sha2::{Digest, Sha256};

use crate::api::pipeline::{ObjectiveStatus, Pipeline, PipelinePhase, PipelineStatus, SloStatus};
use crate::controller::common::pipelines::{owner, PIPELINE_LABEL};
use crate::controller::{apply_unless_current, cache_ready, gone};
use crate::error::Error;
use crate::slo::budget::Budget;
use crate::slo::rules::{pipeline_rules, RuleFile};
use crate::slo::sli::measured;
use crate::slo::{SloModel, SloSettings};

/// Label on every rules ConfigMap, which the operator watches.
pub const RULES_LABEL: &str = "kappa.dev/slo-rules";

/// How long the answer to "does the cluster serve PrometheusRules?" is kept:
/// a Prometheus Operator installed later is noticed within this time.
const SERVED_RECHECK: Duration = Duration::from_secs(30);

/// The PrometheusRule kind of the Prometheus Operator.
fn prometheus_rule_resource() -> ApiResource {
    ApiResource {
        group: "monitoring.coreos.com".into(),
        version: "v1".into(),
        api_version: "monitoring.coreos.com/v1".into(),
        kind: "PrometheusRule".into(),
        plural: "prometheusrules".into(),
    }
}

/// Whether the cluster serves PrometheusRules, asked of API discovery at
/// most every [`SERVED_RECHECK`].
#[derive(Default)]
pub struct PrometheusRuleKind {
    answer: Mutex<Option<(Instant, bool)>>,
}

impl PrometheusRuleKind {
    async fn served(&self, client: &Client) -> bool {
        let cached = *self
            .answer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((at, served)) = cached {
            if at.elapsed() < SERVED_RECHECK {
                return served;
            }
        }
        let resource = prometheus_rule_resource();
        let served = match client.list_api_group_resources(&resource.api_version).await {
            Ok(list) => list.resources.iter().any(|r| r.name == resource.plural),
            Err(kube::Error::Api(status)) if status.code == 404 => false,
            Err(error) => {
                tracing::warn!(%error, "cannot tell whether PrometheusRules are served");
                cached.is_some_and(|(_, served)| served)
            }
        };
        *self
            .answer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some((Instant::now(), served));
        served
    }
}

/// What delivering a Pipeline's rules needs.
pub struct SloDeps<'a> {
    /// The API server.
    pub client: &'a Client,
    /// Where rules go.
    pub settings: &'a SloSettings,
    /// The rules ConfigMaps, by the label [`RULES_LABEL`].
    pub config_maps: &'a Store<ConfigMap>,
    /// Whether PrometheusRules are served.
    pub prometheus_rules: &'a PrometheusRuleKind,
}

/// Name of a Pipeline's rules ConfigMap.
pub fn config_map_name(pipeline: &str) -> String {
    format!("{pipeline}-slo-rules")
}

/// Name of a Pipeline's PrometheusRule.
pub fn prometheus_rule_name(pipeline: &str) -> String {
    format!("{pipeline}-slo")
}

/// The key of the rule file in the ConfigMap, unique over namespaces so
/// that a loader copying every such ConfigMap into one folder keeps them apart.
pub fn rule_file_key(namespace: &str, pipeline: &str) -> String {
    format!("kappa-slo-{namespace}-{pipeline}.yaml")
}

/// The rule file of `pipeline`'s SLO.
pub fn rule_file(
    namespace: &str,
    pipeline: &str,
    model: &SloModel,
    settings: &SloSettings,
) -> RuleFile {
    RuleFile {
        groups: vec![pipeline_rules(
            namespace,
            pipeline,
            model,
            &settings.runbooks,
        )],
    }
}

/// The ConfigMap holding `pipeline`'s rule file.
pub fn desired_config_map(
    pipeline: &Pipeline,
    yaml: String,
    settings: &SloSettings,
) -> Result<ConfigMap, Error> {
    let namespace = pipeline.namespace().unwrap_or_default();
    let name = pipeline.name_any();
    Ok(ConfigMap {
        metadata: ObjectMeta {
            name: Some(config_map_name(&name)),
            namespace: Some(namespace.clone()),
            labels: Some(rule_labels(&name, settings)),
            owner_references: Some(vec![owner(pipeline)?]),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(rule_file_key(&namespace, &name), yaml)])),
        ..ConfigMap::default()
    })
}

fn rule_labels(pipeline: &str, settings: &SloSettings) -> BTreeMap<String, String> {
    let mut labels = settings.rule_labels.clone();
    labels.insert(RULES_LABEL.into(), "true".into());
    labels.insert(
        "app.kubernetes.io/managed-by".into(),
        "kappa-operator".into(),
    );
    labels.insert(PIPELINE_LABEL.into(), pipeline.into());
    labels
}

/// The PrometheusRule holding `pipeline`'s rule groups.
fn desired_prometheus_rule(
    pipeline: &Pipeline,
    file: &RuleFile,
    settings: &SloSettings,
) -> Result<DynamicObject, Error> {
    let name = pipeline.name_any();
    let mut rule = DynamicObject::new(&prometheus_rule_name(&name), &prometheus_rule_resource())
        .within(&pipeline.namespace().unwrap_or_default())
        .data(serde_json::json!({ "spec": file }));
    rule.metadata.labels = Some(rule_labels(&name, settings));
    rule.metadata.owner_references = Some(vec![owner(pipeline)?]);
    Ok(rule)
}

/// Delivers `pipeline`'s rules (or removes them when it has no SLO) and
/// returns its `status.slo`. `model` is its validated SLO, `budgets` what
/// Prometheus last said of each objective.
pub async fn deliver(
    deps: &SloDeps<'_>,
    pipeline: &Pipeline,
    model: Option<&SloModel>,
    budgets: &BTreeMap<String, Budget>,
    status: &PipelineStatus,
) -> Result<Option<SloStatus>, Error> {
    let namespace = pipeline.namespace().unwrap_or_default();
    let name = pipeline.name_any();
    let config_maps: Api<ConfigMap> = Api::namespaced(deps.client.clone(), &namespace);
    let rules: Api<DynamicObject> =
        Api::namespaced_with(deps.client.clone(), &namespace, &prometheus_rule_resource());
    let previous = status.slo.as_ref();
    if model.is_none() && previous.is_none() {
        // Nothing was ever delivered for it: no cache to wait on, nothing
        // to remove (most pipelines, at every reconcile).
        return Ok(None);
    }
    cache_ready(deps.config_maps, "SLO rule ConfigMaps").await?;
    let existing_map = deps
        .config_maps
        .get(&ObjectRef::new(&config_map_name(&name)).within(&namespace));
    let had_rule = previous
        .and_then(|s| s.rules.as_deref())
        .is_some_and(|r| r.contains("PrometheusRule/"));
    let delivery = deps.settings.delivery;
    let Some(model) = model else {
        if existing_map.is_some() {
            delete(&config_maps, &config_map_name(&name)).await?;
        }
        if had_rule {
            delete(&rules, &prometheus_rule_name(&name)).await?;
        }
        return Ok(None);
    };
    let file = rule_file(&namespace, &name, model, deps.settings);
    let yaml = serde_yaml::to_string(&file)?;
    let digest = crate::discovery::hex(&Sha256::digest(yaml.as_bytes())[..8]);
    let mut delivered = Vec::new();
    if delivery.config_map() {
        let desired = desired_config_map(pipeline, yaml.clone(), deps.settings)?;
        apply_unless_current(&config_maps, desired, existing_map.as_deref()).await?;
        delivered.push(format!("ConfigMap/{}", config_map_name(&name)));
    } else if existing_map.is_some() {
        delete(&config_maps, &config_map_name(&name)).await?;
    }
    if delivery.prometheus_rule() && deps.prometheus_rules.served(deps.client).await {
        // The digest in status says the rule is current: no read needed.
        let current = had_rule && previous.and_then(|s| s.rules_digest.as_deref()) == Some(&digest);
        if !current {
            let desired = desired_prometheus_rule(pipeline, &file, deps.settings)?;
            let existing = rules.get_opt(&prometheus_rule_name(&name)).await?;
            apply_unless_current(&rules, desired, existing.as_ref()).await?;
        }
        delivered.push(format!("PrometheusRule/{}", prometheus_rule_name(&name)));
    } else if had_rule {
        delete(&rules, &prometheus_rule_name(&name)).await?;
    }
    let running = status.phase == Some(PipelinePhase::Running);
    let sampled_since = previous
        .and_then(|s| s.sampled_since.clone())
        .or_else(|| running.then(|| Time(Timestamp::now())));
    let objectives: Vec<ObjectiveStatus> = model
        .objectives()
        .into_iter()
        .map(|objective| {
            let budget = budgets.get(objective.as_str());
            ObjectiveStatus {
                name: objective.as_str().into(),
                measured: measured(pipeline.spec.engine.type_, objective),
                sli_percent: budget.map(|b| b.sli_percent),
                budget_left_percent: budget.map(|b| b.left_percent),
            }
        })
        .collect();
    let lowest = objectives
        .iter()
        .filter_map(|o| o.budget_left_percent)
        .reduce(f64::min);
    Ok(Some(SloStatus {
        summary: model.summary(),
        objectives,
        rules: (!delivered.is_empty()).then(|| delivered.join(", ")),
        rules_digest: Some(digest),
        sampled_since,
        budget_left_percent: lowest,
    }))
}

/// Deletes `name`; one already gone is fine.
async fn delete<K>(api: &Api<K>, name: &str) -> Result<(), Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    gone(api.delete(name, &DeleteParams::default()).await).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_rules_config_map_is_owned_labelled_and_keyed_by_namespace() {
        let pipeline: Pipeline = serde_json::from_value(json!({
            "apiVersion": "kappa.dev/v1alpha1", "kind": "Pipeline",
            "metadata": {"name": "orders", "namespace": "shop", "uid": "u-1"},
            "spec": {"clusterSet": "events", "inputs": [{"stream": "orders"}],
                     "engine": {"type": "consumer", "consumer": {"template": {"spec": {"containers": []}}}},
                     "slo": {"availability": 99.5}}
        }))
        .expect("test pipeline deserializes");
        let settings = SloSettings {
            rule_labels: BTreeMap::from([("role".to_string(), "alert-rules".to_string())]),
            ..SloSettings::default()
        };
        let model = SloModel::from_spec(pipeline.spec.slo.as_ref().expect("slo")).expect("valid");
        let file = rule_file("shop", "orders", &model, &settings);
        let yaml = serde_yaml::to_string(&file).expect("yaml");
        let map = desired_config_map(&pipeline, yaml.clone(), &settings).expect("config map");
        assert_eq!(map.metadata.name.as_deref(), Some("orders-slo-rules"));
        let labels = map.metadata.labels.expect("labels");
        assert_eq!(labels[RULES_LABEL], "true");
        assert_eq!(labels["role"], "alert-rules");
        assert_eq!(map.metadata.owner_references.expect("owner")[0].uid, "u-1");
        let data = map.data.expect("data");
        assert_eq!(data["kappa-slo-shop-orders.yaml"], yaml);
        let read: RuleFile = serde_yaml::from_str(&yaml).expect("the rule file reads back");
        assert_eq!(read, file);
    }
}
