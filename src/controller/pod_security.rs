//! Every pod the operator starts (builtin Kafka brokers, Flink JobManagers
//! and TaskManagers, consumer apps, replay workers) runs under the restricted
//! Pod Security Standard unless its template says otherwise: what a template
//! leaves unset is filled in, what it sets is kept, field by field.

use k8s_openapi::api::core::v1::{
    Capabilities, Container, PodSecurityContext, PodSpec, SeccompProfile, SecurityContext,
};

/// Fills in what `pod` leaves unset:
/// - the pod runs as non-root under the runtime's default seccomp profile;
/// - every container (init containers too) cannot gain privileges and drops
///   all capabilities;
/// - no service account token is mounted unless the template names a
///   service account: only an app given an account of its own talks to the
///   API (the discovery document reaches every pod as a mounted file).
pub fn restrict(pod: &mut PodSpec) {
    let context = pod
        .security_context
        .get_or_insert_with(PodSecurityContext::default);
    context.run_as_non_root.get_or_insert(true);
    context
        .seccomp_profile
        .get_or_insert_with(|| SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..SeccompProfile::default()
        });
    let containers = pod
        .containers
        .iter_mut()
        .chain(pod.init_containers.iter_mut().flatten());
    containers.for_each(restrict_container);
    let named_account = pod.service_account_name.is_some() || pod.service_account.is_some();
    if !named_account {
        pod.automount_service_account_token.get_or_insert(false);
    }
}

fn restrict_container(container: &mut Container) {
    let context = container
        .security_context
        .get_or_insert_with(SecurityContext::default);
    context.allow_privilege_escalation.get_or_insert(false);
    context
        .capabilities
        .get_or_insert_with(Capabilities::default)
        .drop
        .get_or_insert_with(|| vec!["ALL".into()]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(spec: serde_json::Value) -> PodSpec {
        serde_json::from_value(spec).expect("a pod spec")
    }

    #[test]
    fn an_empty_template_becomes_restricted() {
        let mut spec =
            pod(json!({"containers": [{"name": "app"}], "initContainers": [{"name": "init"}]}));
        restrict(&mut spec);
        assert_eq!(
            serde_json::to_value(&spec).expect("JSON"),
            json!({
                "automountServiceAccountToken": false,
                "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
                "containers": [{"name": "app", "securityContext": {
                    "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}],
                "initContainers": [{"name": "init", "securityContext": {
                    "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}]
            })
        );
    }

    #[test]
    fn what_a_template_sets_is_kept_field_by_field() {
        let mut spec = pod(json!({
            "serviceAccountName": "reader",
            "securityContext": {"runAsNonRoot": false, "runAsUser": 0,
                                "seccompProfile": {"type": "Localhost", "localhostProfile": "app.json"}},
            "containers": [{"name": "app", "securityContext": {
                "allowPrivilegeEscalation": true,
                "capabilities": {"add": ["NET_ADMIN"], "drop": ["MKNOD"]}}},
                {"name": "side", "securityContext": {"capabilities": {"add": ["NET_BIND_SERVICE"]}}}]
        }));
        restrict(&mut spec);
        let spec = serde_json::to_value(&spec).expect("JSON");
        assert_eq!(spec["automountServiceAccountToken"], json!(null));
        assert_eq!(
            spec["securityContext"],
            json!({"runAsNonRoot": false, "runAsUser": 0,
                   "seccompProfile": {"type": "Localhost", "localhostProfile": "app.json"}})
        );
        assert_eq!(
            spec["containers"][0]["securityContext"],
            json!({"allowPrivilegeEscalation": true,
                   "capabilities": {"add": ["NET_ADMIN"], "drop": ["MKNOD"]}})
        );
        assert_eq!(
            spec["containers"][1]["securityContext"],
            json!({"allowPrivilegeEscalation": false,
                   "capabilities": {"add": ["NET_BIND_SERVICE"], "drop": ["ALL"]}})
        );
    }

    #[test]
    fn a_token_the_template_asks_for_is_kept() {
        let mut spec = pod(json!({"automountServiceAccountToken": true, "containers": []}));
        restrict(&mut spec);
        assert_eq!(spec.automount_service_account_token, Some(true));
    }
}
