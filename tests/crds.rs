//! The YAML in `crds/` and in the chart's `crds/` is what the types generate:
//! edit the types, then run `cargo run --bin kappa-operator -- crds --out crds` and
//! `cargo run --bin kappa-operator -- crds --out charts/kappa-operator/crds`. Likewise the
//! discovery document's schema: `cargo run --bin kappa-operator -- discovery-schema > docs/discovery.schema.json`.

use std::path::PathBuf;

#[test]
fn crd_files_match_the_types() {
    assert_generated("crds");
}

#[test]
fn chart_crd_files_match_the_types() {
    assert_generated("charts/kappa-operator/crds");
}

fn assert_generated(folder: &str) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(folder);
    let mut stale = Vec::new();
    for (file, crd) in kappa_operator::api::crds() {
        let generated = kappa_operator::api::crd_yaml(&crd).expect("CRD serializes");
        let committed = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
        if committed != generated {
            stale.push(file);
        }
    }
    let files = std::fs::read_dir(&dir)
        .expect("the CRD folder exists")
        .filter_map(|entry| {
            entry
                .ok()
                .map(|e| e.file_name().to_string_lossy().into_owned())
        })
        .filter(|name| name != "kustomization.yaml")
        .filter(|name| {
            !kappa_operator::api::crds()
                .iter()
                .any(|(file, _)| file == name)
        })
        .collect::<Vec<_>>();
    assert!(
        stale.is_empty() && files.is_empty(),
        "{folder} is out of date (stale: {stale:?}, unknown: {files:?}); run `cargo run --bin kappa-operator -- crds --out {folder}`"
    );
}

#[test]
fn every_crd_has_status_short_name_category_and_columns() {
    for (file, crd) in kappa_operator::api::crds() {
        let names = &crd.spec.names;
        assert_eq!(
            names.categories.as_deref(),
            Some(&["kappa".to_string()][..]),
            "{file}"
        );
        assert_eq!(names.short_names.as_ref().map(Vec::len), Some(1), "{file}");
        let version = &crd.spec.versions[0];
        assert!(
            version
                .subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some(),
            "{file}"
        );
        assert!(
            version
                .additional_printer_columns
                .as_ref()
                .map_or(0, Vec::len)
                >= 3,
            "{file}"
        );
    }
}

#[test]
fn discovery_schema_file_matches_the_types() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/discovery.schema.json");
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == kappa_operator::discovery::json_schema(),
        "{} is stale: run `cargo run --bin kappa-operator -- discovery-schema > docs/discovery.schema.json`",
        path.display()
    );
}
