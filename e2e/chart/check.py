#!/usr/bin/env python3
"""Checks the Helm chart with Helm's own engine and the testbed's API server:
it lints clean, renders with default and non-default values, refuses values
that make no sense, and every rendering is accepted by a real kube-apiserver
(server-side dry run). Prints `N passed, N failed`.
"""
import contextlib
import os
import pathlib
import subprocess
import sys
import tempfile

import helm_python as helm

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from render import ALERTS, ALERTS_HEADER, ALERTS_OUTPUT, CHART, OUTPUT, HEADER, ROOT, render  # noqa: E402

NON_DEFAULT = {
    "replicas": 1,
    "leaderElection": {"enabled": False},
    "watchNamespaces": ["team-a", "team-b"],
    "logFormat": "text",
    "image": {"repository": "registry.example.com/kappa-operator", "tag": "0.1.0-rc1"},
    "slo": {
        "rules": "prometheusRule",
        "ruleLabels": {"role": "alert-rules"},
        "runbookBaseUrl": "https://wiki.example/alerts",
        "prometheusUrl": "http://prometheus.monitoring:9090",
    },
    "labels": {"team": "data-platform"},
    "podLabels": {"sidecar.example/inject": "false"},
    "podAnnotations": {"example.com/owner": "streams"},
    "imagePullSecrets": [{"name": "regcred"}],
    "podAntiAffinity": "hard",
    "networkPolicy": {"enabled": True, "metricsFrom": [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}]},
    "aggregatedRoles": False,
    "webhook": {
        "failurePolicy": "Ignore",
        "certificate": {"source": "external", "secretName": "kappa-webhook-cert"},
        "annotations": {"cert-manager.io/inject-ca-from": "kappa-system/kappa-webhook-cert"},
    },
    "monitoring": {
        "serviceMonitor": {"enabled": True, "labels": {"release": "prom"}},
        "podMonitor": {"enabled": True},
        "prometheusRule": {"enabled": True, "labels": {"release": "prom"}},
        "dashboard": {"enabled": True},
    },
}


@contextlib.contextmanager
def control_plane(prefix):
    """A testbed without a node: its kubectl environment, stopped after use."""
    env = dict(os.environ, KAPPA_TESTBED_STATE=tempfile.mkdtemp(prefix=prefix), KAPPA_TESTBED_NODE="0")
    up = subprocess.run([ROOT / "e2e/testbed/up"], env=env, capture_output=True, text=True)
    try:
        assert up.returncode == 0, up.stderr
        env["KUBECONFIG"] = next(
            line.split("=", 1)[1] for line in up.stdout.splitlines() if line.startswith("export KUBECONFIG=")
        )
        yield env
    finally:
        subprocess.run([ROOT / "e2e/testbed/down"], env=env, capture_output=True)


def kubectl(env, *args, stdin=None):
    result = subprocess.run(["kubectl", *args], env=env, input=stdin, capture_output=True, text=True)
    if result.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)}: {result.stderr}")
    return result.stdout


def test_lints_without_errors():
    report = helm.lint(str(CHART), strict=False)
    errors = [m for m in report["messages"] if m["severity"] >= 3] + report["errors"]
    assert not errors, errors


def test_kustomize_manifests_are_the_default_rendering():
    assert OUTPUT.read_text() == HEADER + render(), "manifests/operator.yaml is stale: run e2e/chart/render.py"


def test_plain_alert_rules_are_the_charts():
    assert ALERTS_OUTPUT.read_text() == ALERTS_HEADER + ALERTS.read_text(), "manifests/operator.rules.yaml is stale: run e2e/chart/render.py"


def test_monitoring_objects_are_opt_in():
    default = render()
    text = render(NON_DEFAULT)
    for kind in ("ServiceMonitor", "PodMonitor", "PrometheusRule"):
        assert f"kind: {kind}\n" not in default, f"a {kind} by default"
        assert f"kind: {kind}\n" in text, kind
    assert "honorLabels: true" in text, "the metrics' namespace label must survive the scrape"
    assert "--slo-rules=prometheusRule" in text and "--slo-rule-labels=role=alert-rules," in text
    assert "--prometheus-url=http://prometheus.monitoring:9090" in text and "--prometheus-url" not in default
    assert "runbook_url: https://wiki.example/alerts#kappaoperatordown" in text
    assert "grafana_dashboard: \"1\"" in text and "kappa-operator.json: |-" in text
    assert "grafana_dashboard" not in default


def test_non_default_values_scope_the_operator():
    text = render(NON_DEFAULT)
    assert "kind: ClusterRole" not in text, "a watched namespace needs no cluster-wide grant"
    assert "kind: Role\n" in text and "namespace: team-a" in text
    assert "--namespace=team-a\n            - --namespace=team-b" in text
    assert text.count("kind: RoleBinding\nmetadata:\n  name: kappa-operator\n  namespace: team-") == 2, "a Role and RoleBinding in each watched namespace"
    assert "--no-leader-election" in text and "--log-format=text" in text
    assert "registry.example.com/kappa-operator:0.1.0-rc1" in text
    # The replay Jobs of a Backfill run the same image.
    assert 'name: KAPPA_OPERATOR_IMAGE\n              value: "registry.example.com/kappa-operator:0.1.0-rc1"' in text
    # Reading producers' acknowledgement Leases stays; holding a leader Lease goes.
    assert '["leases"]\n    verbs: ["get", "create", "update"]' not in text, "no leader Lease without leader election"
    assert '["leases"]\n    verbs: ["get", "list", "watch"]' in text


def test_the_webhook_is_on_by_default_and_its_certificate_can_come_from_elsewhere():
    default = render()
    assert "kind: ValidatingWebhookConfiguration" in default and "failurePolicy: Fail" in default
    assert "--webhook-address=0.0.0.0:8443" in default and "--webhook-certificates=operator" in default
    # The operator patches the CA bundle of its own configuration, and no other.
    assert 'resources: ["validatingwebhookconfigurations"]\n    resourceNames: ["kappa-operator"]\n    verbs: ["get", "patch"]' in default
    assert 'resourceNames: ["kappa-operator-webhook-tls"]\n    verbs: ["get", "update"]' in default
    external = render(NON_DEFAULT)
    assert "failurePolicy: Ignore" in external
    assert "cert-manager.io/inject-ca-from: kappa-system/kappa-webhook-cert" in external
    assert "--webhook-certificates=external" in external and "--webhook-secret=kappa-webhook-cert" in external
    assert "validatingwebhookconfigurations" not in external, "an injected CA bundle needs no grant"
    assert 'resourceNames: ["kappa-webhook-cert"]\n    verbs: ["get"]' in external
    off = render({"webhook": {"enabled": False}})
    for absent in ("ValidatingWebhookConfiguration", "--webhook-", "containerPort: 8443", "secrets\"]\n    resourceNames"):
        assert absent not in off, f"{absent} with the webhook off"


def test_pods_spread_pull_and_are_labelled_as_asked():
    default = render()
    assert "preferredDuringSchedulingIgnoredDuringExecution" in default, "replicas spread by default"
    assert "apiVersion: policy/v1beta1\nkind: PodDisruptionBudget" in default and "maxUnavailable: 1" in default
    assert "kind: PodDisruptionBudget" not in render(NON_DEFAULT), "no budget for a single replica"
    assert "kind: NetworkPolicy" not in default and "imagePullSecrets" not in default
    assert 'rbac.authorization.k8s.io/aggregate-to-view: "true"' in default
    assert 'rbac.authorization.k8s.io/aggregate-to-edit: "true"' in default
    text = render(NON_DEFAULT)
    assert "requiredDuringSchedulingIgnoredDuringExecution" in text
    assert "imagePullSecrets:\n        - name: regcred" in text
    assert text.count("team: data-platform") == text.count("helm.sh/chart:"), "every object carries the extra labels"
    assert "sidecar.example/inject: \"false\"" in text and "example.com/owner: streams" in text
    assert "kind: NetworkPolicy" in text and "name: monitoring" in text
    assert "aggregate-to-view" not in text
    custom = render({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [{"key": "pool", "operator": "In", "values": ["ops"]}]}]}}}})
    assert "podAntiAffinity" not in custom and "pool" in custom, "an affinity of one's own replaces the spreading"


def test_two_replicas_without_a_lease_are_refused():
    try:
        render({"replicas": 2, "leaderElection": {"enabled": False}})
    except helm.HelmError as error:
        assert "leaderElection" in str(error)
    else:
        raise AssertionError("two replicas without leader election rendered")


BAD_VALUES = [
    ({"replicas": 0}, "/replicas"),
    ({"logFormat": "xml"}, "/logFormat"),
    ({"httpPort": "8080"}, "/httpPort"),
    ({"slo": {"rules": "all"}}, "/slo/rules"),
    ({"slo": {"prometheusUrl": "prometheus:9090"}}, "/slo/prometheusUrl"),
    ({"leaderElection": {"leaseDuration": "15"}}, "/leaderElection/leaseDuration"),
    ({"watchNamespaces": ["Team A"]}, "/watchNamespaces/0"),
    ({"watchNamespace": "team-a"}, "watchNamespace"),
    ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
    ({"imageRepository": "registry.example.com/kappa-operator"}, "imageRepository"),
    ({"monitoring": {"serviceMonitor": {"interval": "often"}}}, "/monitoring/serviceMonitor/interval"),
    ({"webhook": {"failurePolicy": "Sometimes"}}, "/webhook/failurePolicy"),
    ({"podAntiAffinity": "always"}, "/podAntiAffinity"),
    ({"podDisruptionBudget": {"maxUnavailable": 0}}, "/podDisruptionBudget/maxUnavailable"),
    ({"imagePullSecrets": ["regcred"]}, "/imagePullSecrets/0"),
    ({"webhook": {"certificate": {"source": "vault"}}}, "/webhook/certificate/source"),
    ({"webhook": {"certificate": {"validity": "a year"}}}, "/webhook/certificate/validity"),
]


def test_bad_values_are_refused_by_the_schema_naming_the_key():
    for values, key in BAD_VALUES:
        try:
            render(values)
        except helm.HelmError as error:
            assert key in str(error), f"{values}: {error}"
        else:
            raise AssertionError(f"{values} rendered")


def test_renderings_are_accepted_by_the_api_server():
    with control_plane("kappa-chart-") as env:
        kubectl(env, "apply", "-f", str(CHART / "crds"))
        kubectl(env, "apply", "-f", str(ROOT / "e2e" / "monitoring-crds.yaml"))
        for namespace in ("kappa-system", "team-a", "team-b"):
            kubectl(env, "create", "namespace", namespace)
        for values in ({}, NON_DEFAULT, {"webhook": {"enabled": False}}):
            kubectl(env, "apply", "--dry-run=server", "-f", "-", stdin=render(values))
        # Installed for one namespace, the operator's account can act there only.
        kubectl(env, "apply", "-f", "-", stdin=render(NON_DEFAULT))
        account = "--as=system:serviceaccount:kappa-system:kappa-operator"
        can = lambda *args: subprocess.run(["kubectl", "auth", "can-i", account, *args], env=env,
                                           capture_output=True, text=True).stdout.strip()
        assert can("list", "pipelines.kappa.dev", "-n", "team-a") == "yes"
        assert can("create", "statefulsets.apps", "-n", "team-b") == "yes"
        assert can("patch", "pipelines.kappa.dev/status", "-n", "team-a") == "yes"
        assert can("list", "pipelines.kappa.dev", "-n", "default") == "no"
        assert can("list", "pipelines.kappa.dev", "--all-namespaces") == "no"
        assert can("get", "secrets/kappa-webhook-cert", "-n", "kappa-system") == "yes"
        assert can("patch", "validatingwebhookconfigurations") == "no"


def test_a_crd_upgrade_adds_a_printer_column_in_place():
    """Helm leaves crds/ alone on upgrade; `kubectl apply --server-side -f
    crds/` (README) upgrades them, and stored objects stay as they are."""
    with control_plane("kappa-crd-upgrade-") as env:
        current = (CHART / "crds" / "pipelines.yaml").read_text()
        column = "    - jsonPath: .spec.engine.type\n      name: Engine\n      type: string\n"
        assert column in current
        kubectl(env, "apply", "--server-side", "-f", "-", stdin=current.replace(column, ""))
        kubectl(env, "wait", "--for=condition=Established", "crd/pipelines.kappa.dev", "--timeout=60s")
        kubectl(env, "apply", "-n", "default", "-f", str(ROOT / "manifests" / "examples" / "pipeline-consumer.yaml"))
        before = kubectl(env, "get", "pipelines", "-n", "default")
        assert "ENGINE" not in before, before
        stored = kubectl(env, "get", "pipelines", "-n", "default", "-o", "jsonpath={.items[0].metadata.uid}")
        kubectl(env, "apply", "--server-side", "-f", str(CHART / "crds"))
        after = kubectl(env, "get", "pipelines", "-n", "default")
        assert "ENGINE" in after and "consumer" in after, after
        assert kubectl(env, "get", "pipelines", "-n", "default", "-o", "jsonpath={.items[0].metadata.uid}") == stored


def main():
    tests = [(name, fn) for name, fn in globals().items() if name.startswith("test_")]
    failed = 0
    for name, fn in tests:
        try:
            fn()
            print(f"ok   {name}")
        except Exception as error:  # report every failure, then exit non-zero
            failed += 1
            print(f"FAIL {name}: {error}")
    print(f"{len(tests) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
