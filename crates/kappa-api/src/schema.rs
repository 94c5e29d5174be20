//! Schema pieces the derive cannot express, and what the CRDs leave out.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use schemars::{json_schema, Schema, SchemaGenerator};
use serde_json::Value;

/// A Pod template kept as an opaque object in the CRD: the full PodTemplateSpec
/// schema is larger than a CRD should carry, so the operator checks it when
/// it reads the object and reports `InvalidSpec` with the field path.
pub fn embedded_pod_template(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "description": "A pod template (a core/v1 PodTemplateSpec: metadata and spec).",
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true
    })
}

/// `crd` without the defaults of fields inside list entries (`streams[]`,
/// `clusters[]`, `inputs[]`, ...): the API server would write them into
/// every stored entry, and a GitOps tool comparing the lists in Git with
/// the stored ones would see them differ. The operator reads an absent
/// field as its default all the same (serde's defaults), and each such
/// field's description says what the default is. Defaults outside lists
/// stay: tools compare objects field by field and ignore fields Git does
/// not set.
pub fn without_list_defaults(mut crd: CustomResourceDefinition) -> CustomResourceDefinition {
    for version in &mut crd.spec.versions {
        let Some(schema) = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
        else {
            continue;
        };
        let Ok(mut value) = serde_json::to_value(&*schema) else {
            continue;
        };
        strip_defaults(&mut value, false);
        if let Ok(stripped) = serde_json::from_value(value) {
            *schema = stripped;
        }
    }
    crd
}

/// Removes `default` from `schema` when it is inside a list entry, and from
/// every schema below it that is; the description says the default.
fn strip_defaults(schema: &mut Value, in_list: bool) {
    let Some(map) = schema.as_object_mut() else {
        return;
    };
    if in_list {
        if let Some(default) = map.remove("default") {
            let said = format!("When unset: {default}.");
            let description = match map.get("description").and_then(Value::as_str) {
                Some(text) => format!("{text} {said}"),
                None => said,
            };
            map.insert("description".into(), Value::String(description));
        }
    }
    if let Some(properties) = map.get_mut("properties").and_then(Value::as_object_mut) {
        for property in properties.values_mut() {
            strip_defaults(property, in_list);
        }
    }
    if let Some(additional) = map.get_mut("additionalProperties") {
        strip_defaults(additional, in_list);
    }
    if let Some(items) = map.get_mut("items") {
        strip_defaults(items, true);
    }
    for key in ["allOf", "anyOf", "oneOf"] {
        if let Some(schemas) = map.get_mut(key).and_then(Value::as_array_mut) {
            for schema in schemas {
                strip_defaults(schema, in_list);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_inside_lists_move_into_descriptions() {
        let mut schema = serde_json::json!({
            "type": "object",
            "properties": {
                "replicas": {"type": "integer", "default": 1},
                "streams": {"type": "array", "default": [], "items": {
                    "type": "object",
                    "properties": {
                        "partitions": {"type": "integer", "default": 6, "description": "Partitions."},
                        "policy": {"type": "string", "default": "delete"},
                        "settings": {"type": "object", "properties": {"size": {"default": "10Gi"}}}
                    }
                }}
            }
        });
        strip_defaults(&mut schema, false);
        let stream = &schema["properties"]["streams"]["items"]["properties"];
        assert_eq!(schema["properties"]["replicas"]["default"], 1);
        assert_eq!(
            schema["properties"]["streams"]["default"],
            serde_json::json!([])
        );
        assert!(stream["partitions"].get("default").is_none());
        assert_eq!(
            stream["partitions"]["description"],
            "Partitions. When unset: 6."
        );
        assert_eq!(stream["policy"]["description"], "When unset: \"delete\".");
        assert!(stream["settings"]["properties"]["size"]
            .get("default")
            .is_none());
    }
}
