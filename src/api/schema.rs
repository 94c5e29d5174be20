//! Schema pieces the derive cannot express.

use schemars::{json_schema, Schema, SchemaGenerator};

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
