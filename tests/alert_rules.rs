//! The rule files: every one the operator generates or ships passes
//! `promtool check rules`, and `promtool test rules` proves each alert fires
//! when it must and not otherwise (tests/rules/*.test.yaml).

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn promtool(args: &[&str], dir: &Path) {
    let output = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("promtool runs (e2e/test installs Debian's prometheus package)");
    assert!(
        output.status.success(),
        "promtool {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The rule file `kappa-operator slo-rules -f FILE` prints.
fn slo_rules(file: &Path) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_kappa-operator"))
        .args(["slo-rules", "-f"])
        .arg(file)
        .args(["--namespace", "kappa-demo"])
        .output()
        .expect("kappa-operator runs");
    assert!(
        output.status.success(),
        "slo-rules -f {}: {}",
        file.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("rules are UTF-8")
}

#[test]
fn pipeline_slo_alerts_page_and_ticket_at_the_predicted_minutes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let rules = slo_rules(&repo().join("tests/rules/pipelines.yaml"));
    std::fs::write(dir.path().join("pipelines.rules.yaml"), rules).expect("write rules");
    std::fs::copy(
        repo().join("tests/rules/pipelines.test.yaml"),
        dir.path().join("pipelines.test.yaml"),
    )
    .expect("copy the test");
    promtool(&["check", "rules", "pipelines.rules.yaml"], dir.path());
    promtool(&["test", "rules", "pipelines.test.yaml"], dir.path());
}

#[test]
fn the_examples_slo_rules_are_valid() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut groups = 0;
    for entry in std::fs::read_dir(repo().join("manifests/examples")).expect("examples") {
        let path = entry.expect("entry").path();
        let rules = slo_rules(&path);
        if !rules.contains("KappaPipelineSLOBurn") {
            continue;
        }
        groups += 1;
        let name = format!(
            "{}.rules.yaml",
            path.file_stem().unwrap_or_default().to_string_lossy()
        );
        std::fs::write(dir.path().join(&name), rules).expect("write rules");
        promtool(&["check", "rules", &name], dir.path());
    }
    assert!(
        groups >= 2,
        "the examples declare SLOs on two pipelines, found {groups}"
    );
}

#[test]
fn operator_alerts_fire_when_they_must() {
    promtool(
        &[
            "check",
            "rules",
            "charts/kappa-operator/files/operator.rules.yaml",
        ],
        &repo(),
    );
    promtool(
        &["test", "rules", "operator.test.yaml"],
        &repo().join("tests/rules"),
    );
}
