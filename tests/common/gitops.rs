//! A Git repository of kappa objects applied as Argo CD and Flux apply it:
//! server-side, under a field manager of the tool's own, forcing conflicts.
//! After the operator's work, the repository and the cluster must agree.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use kube::core::DynamicObject;
use serde_json::Value;

use super::{kappa_api, Testbed};

/// The field manager the tool applies with (Argo CD's own).
pub const MANAGER: &str = "argocd-controller";

/// Files of objects, as a commit holds them, and the generation each object
/// had right after the tool last applied it.
pub struct Repository<'t> {
    testbed: &'t Testbed,
    ns: String,
    folder: PathBuf,
    applied: BTreeMap<(String, String), (PathBuf, i64)>,
}

impl<'t> Repository<'t> {
    /// An empty repository synced into namespace `ns`.
    pub fn new(testbed: &'t Testbed, ns: &str) -> Repository<'t> {
        let folder = testbed.state.join(format!("git-{ns}"));
        std::fs::create_dir_all(&folder).expect("repository folder");
        Repository {
            testbed,
            ns: ns.to_string(),
            folder,
            applied: BTreeMap::new(),
        }
    }

    /// Writes `documents` as file `name` (a new file or a change to one) and
    /// syncs it; returns the objects as the API server stored them.
    pub async fn commit(
        &mut self,
        client: &kube::Client,
        name: &str,
        documents: &[Value],
    ) -> Vec<DynamicObject> {
        let path = self.folder.join(format!("{name}.yaml"));
        let text: Vec<String> = documents
            .iter()
            .map(|d| serde_json::to_string_pretty(d).expect("JSON"))
            .collect();
        std::fs::write(&path, text.join("\n---\n")).expect("file written");
        self.testbed.kubectl(&[
            "-n",
            &self.ns,
            "apply",
            "--server-side",
            &format!("--field-manager={MANAGER}"),
            "--force-conflicts",
            "-f",
            &path.to_string_lossy(),
        ]);
        let mut stored = Vec::new();
        for document in documents {
            let (kind, name) = identity(document);
            let object = kappa_api(client, &self.ns, &kind)
                .get(&name)
                .await
                .unwrap_or_else(|e| panic!("{kind}/{name} after its sync: {e}"));
            let generation = object.metadata.generation.expect("a generation");
            self.applied
                .insert((kind, name), (path.clone(), generation));
            stored.push(object);
        }
        stored
    }

    /// Once the operator has acted on every object, a server-side diff of
    /// every file shows nothing, no generation moved since the tool's last
    /// sync, and every other field manager owns only `status` and
    /// `metadata.finalizers`.
    pub async fn assert_no_drift(&self, client: &kube::Client) {
        for ((kind, name), (_, generation)) in &self.applied {
            let api = kappa_api(client, &self.ns, kind);
            let started = Instant::now();
            let object = loop {
                let object = api.get(name).await.expect("object of the repository");
                let observed = object.data["status"]["observedGeneration"].as_i64();
                if observed == object.metadata.generation {
                    break object;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(60),
                    "{kind}/{name}: generation {:?} not acted on (observed {observed:?})",
                    object.metadata.generation
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            };
            assert_eq!(
                object.metadata.generation,
                Some(*generation),
                "{kind}/{name}: the generation moved after the tool's sync"
            );
            owned_by_git_except_status_and_finalizers(kind, name, &object);
        }
        let files: std::collections::BTreeSet<&PathBuf> =
            self.applied.values().map(|(path, _)| path).collect();
        for path in files {
            let diff = self.testbed.kubectl_output(&[
                "-n",
                &self.ns,
                "diff",
                "--server-side",
                &format!("--field-manager={MANAGER}"),
                "--force-conflicts",
                "-f",
                &path.to_string_lossy(),
            ]);
            assert!(
                diff.status.success() && diff.stdout.is_empty(),
                "{}: a server-side diff after the operator's work: {}{}",
                path.display(),
                String::from_utf8_lossy(&diff.stdout),
                String::from_utf8_lossy(&diff.stderr)
            );
        }
    }
}

/// The kind and name of a document.
fn identity(document: &Value) -> (String, String) {
    let field = |pointer: &str| {
        document
            .pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("{pointer} of {document}"))
            .to_string()
    };
    (field("/kind"), field("/metadata/name"))
}

/// Every field manager but the tool's owns nothing beyond `status` and
/// `metadata.finalizers` of `object`.
fn owned_by_git_except_status_and_finalizers(kind: &str, name: &str, object: &DynamicObject) {
    for entry in object.metadata.managed_fields.iter().flatten() {
        let manager = entry.manager.as_deref().unwrap_or_default();
        if manager == MANAGER {
            continue;
        }
        let fields = serde_json::to_value(&entry.fields_v1).expect("fields");
        for (field, inner) in fields.as_object().into_iter().flatten() {
            let allowed = match field.as_str() {
                "f:status" => true,
                "f:metadata" => inner
                    .as_object()
                    .is_some_and(|m| m.keys().all(|k| k == "f:finalizers")),
                _ => false,
            };
            assert!(
                allowed,
                "{kind}/{name}: manager {manager} owns {field}: {inner}"
            );
        }
    }
}
