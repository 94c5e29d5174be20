//! `kappa-operator slo-rules -f FILE`: the rule file of every Pipeline SLO
//! in a YAML file of manifests, for teams that keep their rules in Git.

use serde::Deserialize;

use super::rules::{pipeline_rules, RuleFile};
use super::SloModel;
use crate::api::pipeline::Pipeline;
use crate::validation::SpecProblem;

/// Why no rule file could be made.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// A document is not YAML, or a Pipeline in it does not match the schema.
    #[error("document {document}: {source}")]
    Unreadable {
        /// 1-based position of the document in the file.
        document: usize,
        /// What the parser said.
        source: serde_yaml::Error,
    },
    /// A Pipeline's SLO breaks a rule.
    #[error("Pipeline {namespace}/{name}: {}", problems.iter().map(|p| format!("{}: {}", p.field, p.message)).collect::<Vec<_>>().join("; "))]
    Refused {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// What is wrong.
        problems: Vec<SpecProblem>,
    },
}

/// The rules of every Pipeline with an SLO in `text` (YAML documents, other
/// kinds skipped); a Pipeline without a namespace is taken to be in
/// `namespace`.
pub fn rules_of_manifests(
    text: &str,
    namespace: &str,
    runbooks: &str,
) -> Result<RuleFile, ManifestError> {
    let mut file = RuleFile::default();
    for (index, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let unreadable = |source| ManifestError::Unreadable {
            document: index + 1,
            source,
        };
        let value = serde_yaml::Value::deserialize(document).map_err(unreadable)?;
        let kind = value.get("kind").and_then(|k| k.as_str());
        if kind != Some("Pipeline") {
            continue;
        }
        let pipeline: Pipeline = serde_yaml::from_value(value).map_err(unreadable)?;
        let Some(slo) = &pipeline.spec.slo else {
            continue;
        };
        let pipeline_namespace = pipeline
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| namespace.to_string());
        let name = pipeline.metadata.name.clone().unwrap_or_default();
        let model = SloModel::from_spec(slo).map_err(|problems| ManifestError::Refused {
            namespace: pipeline_namespace.clone(),
            name: name.clone(),
            problems,
        })?;
        file.groups
            .push(pipeline_rules(&pipeline_namespace, &name, &model, runbooks));
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PIPELINE: &str = "apiVersion: kappa.dev/v1alpha1
kind: Pipeline
metadata: {name: orders}
spec:
  clusterSet: events
  inputs: [{stream: orders}]
  engine: {type: consumer, consumer: {template: {spec: {containers: [{name: app, image: app}]}}}}
";

    #[test]
    fn one_group_per_pipeline_with_an_slo() {
        let text = format!(
            "{PIPELINE}  slo: {{availability: 99.5}}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: x}}\n---\n{}",
            PIPELINE.replace("name: orders}", "name: quiet, namespace: other}")
        );
        let file = rules_of_manifests(&text, "shop", "docs/alerts.md").expect("rules");
        let names: Vec<&str> = file.groups.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(names, ["kappa-slo-shop-orders"]);
    }

    #[test]
    fn a_refused_slo_names_the_pipeline_and_field() {
        let text = format!("{PIPELINE}  slo: {{window: 1h}}\n");
        let error = rules_of_manifests(&text, "shop", "docs/alerts.md").expect_err("refused");
        let message = error.to_string();
        assert!(
            message.starts_with(
                "Pipeline shop/orders: spec.slo.window: is 1h but must be at least 6d"
            ),
            "{message}"
        );
    }
}
