#!/usr/bin/env python3
"""Renders charts/kappa-operator with its default values into
manifests/operator.yaml, so the kustomize manifests and the chart never
disagree. Helm's own engine renders it (the helm-python-sdk package).

    e2e/chart/render.py     # rewrite manifests/operator.yaml and operator.rules.yaml (e2e/chart/check.py fails when stale)
"""
import pathlib

import helm_python as helm

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "kappa-operator"
OUTPUT = ROOT / "manifests" / "operator.yaml"
HEADER = "# Generated from charts/kappa-operator with its default values by e2e/chart/render.py; do not edit.\n"
# The operator's alerts as a plain Prometheus rule file, for a Prometheus
# without the Prometheus Operator: the chart's file, copied.
ALERTS = CHART / "files" / "operator.rules.yaml"
ALERTS_OUTPUT = ROOT / "manifests" / "operator.rules.yaml"
ALERTS_HEADER = "# Copied from charts/kappa-operator/files/operator.rules.yaml by e2e/chart/render.py; do not edit.\n"


def render(values=None, namespace="kappa-system"):
    """The chart's manifests as one YAML stream, templates in name order."""
    chart = helm.Chart.load(str(CHART))
    rendered = chart.render(values or {}, name="kappa-operator", namespace=namespace, is_install=True)
    return "---\n".join(text.strip() + "\n" for _, text in sorted(rendered.items()) if text.strip())


if __name__ == "__main__":
    OUTPUT.write_text(HEADER + render())
    ALERTS_OUTPUT.write_text(ALERTS_HEADER + ALERTS.read_text())
