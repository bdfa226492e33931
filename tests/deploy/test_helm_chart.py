"""The Helm chart, checked offline (no cluster can run here): Helm 4 itself (its SDK, ``helm-python-sdk``)
renders and strictly lints the chart for several values sets; every rendered object validates strictly
against the Kubernetes schemas (``kubernetes-validate``) or, for KEDA's and the Prometheus Operator's
kinds, against their CRDs' schemas (vendored in tests/deploy/crds); and the chart's variables and
commands are those the code reads and compose runs, so chart, compose and code cannot drift apart."""

from __future__ import annotations

from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest
import typer.main
import yaml

from streamml.cli.main import app
from tests.deploy.test_compose import rendered as compose_rendered
from tests.deploy.test_compose import requires_compose, setting_names

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "streamml"
CRDS = Path(__file__).parent / "crds"
KUBERNETES = "1.33.0"
"""The oldest Kubernetes release the objects are validated against (the chart asks for >= 1.27)."""

VALUES_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "a Redis Cluster with partitions, KEDA on": {
        "redis": {
            "url": "redis://redis-cluster:6379/0",
            "cluster": True,
            "seeds": [
                "redis-cluster-0.redis-cluster-headless:6379",
                "redis-cluster-1.redis-cluster-headless:6379",
            ],
            "existingSecret": "redis",
        },
        "stream": {"partitions": 12},
        "worker": {"keda": {"enabled": True, "minReplicas": 0}},
    },
    "one stream, KEDA on, a Redis password": {
        "redis": {"existingSecret": "redis"},
        "worker": {"keda": {"enabled": True, "minReplicas": 0, "activationLagCount": 10}},
    },
    "ServiceMonitor and the gateway's HPA on": {
        "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
        "gateway": {"autoscaling": {"enabled": True}, "processes": 2},
    },
    "the MLflow server and the training Job": {
        "mlflow": {
            "trackingUri": "",
            "routes": {"svm": "models:/SVC@champion", "churn": "models:/Churn/3"},
            "server": {"enabled": True, "artifacts": {"s3EndpointUrl": "http://minio:9000"}},
            "train": {"enabled": True},
        },
        "worker": {"predictions": {"existingClaim": "streamml-predictions"}},
    },
    "no API keys (insecure)": {"gateway": {"insecure": True}, "tests": {"apiKey": {"existingSecret": ""}}},
}
CRD_FILES = {
    ("keda.sh/v1alpha1", "ScaledObject"): "keda.sh_scaledobjects.yaml",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): "keda.sh_triggerauthentications.yaml",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "monitoring.coreos.com_servicemonitors.yaml",
}
values_sets = pytest.mark.parametrize("values", list(VALUES_SETS.values()), ids=list(VALUES_SETS))


def render(values: dict[str, Any]) -> list[dict[str, Any]]:
    """Every object the chart renders for ``values`` (test hooks included)."""
    manifests = helm.Chart.load(CHART).render(values, name="demo", namespace="ml", is_install=True)
    return [
        document
        for path, text in manifests.items()
        if path.endswith(".yaml")
        for document in yaml.safe_load_all(text)
        if document
    ]


def of_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def containers(objects: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(object name, container) for every container of every workload and pod."""
    for o in objects:
        spec = o["spec"]["template"]["spec"] if o["kind"] in ("Deployment", "Job") else o.get("spec", {})
        if o["kind"] in ("Deployment", "Job", "Pod"):
            for container in spec["containers"]:
                yield o["metadata"]["name"], container


@cache
def crd_schema(api_version: str, kind: str) -> dict[str, Any]:
    """The served version's schema, made strict as kubernetes-validate's are: no field it does not name
    (except where the CRD says unknown fields are kept)."""
    crd = yaml.safe_load((CRDS / CRD_FILES[(api_version, kind)]).read_text())
    version = api_version.split("/")[1]
    [served] = [v for v in crd["spec"]["versions"] if v["name"] == version]
    schema: dict[str, Any] = served["schema"]["openAPIV3Schema"]

    def strict(node: Any) -> None:
        if isinstance(node, dict):
            if (
                "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
            ):
                node["additionalProperties"] = False
            for child in node.values():
                strict(child)
        elif isinstance(node, list):
            for child in node:
                strict(child)

    strict(schema)
    return schema


@values_sets
def test_the_chart_lints_strictly(values: dict[str, Any]) -> None:
    report = helm.lint(CHART, values, strict=True, namespace="ml", kube_version=f"v{KUBERNETES}")
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not problems, problems
    assert not report["errors"], report["errors"]


@values_sets
def test_every_rendered_object_validates_strictly_against_its_schema(values: dict[str, Any]) -> None:
    objects = render(values)
    assert objects
    for o in objects:
        key = (o["apiVersion"], o["kind"])
        if key in CRD_FILES:
            jsonschema.validate(o, crd_schema(*key))
        else:
            kubernetes_validate.validate(o, KUBERNETES, strict=True)


def test_a_typo_in_the_values_fails_lint_and_render() -> None:
    report = helm.lint(CHART, {"gateway": {"replica": 3}}, strict=True)
    assert any("replica" in str(e) for e in report["errors"] + [m["error"] for m in report["messages"]])
    with pytest.raises(helm.HelmError, match="replica"):
        render({"gateway": {"replica": 3}})


def test_a_password_in_the_redis_url_is_refused_by_the_schema() -> None:
    with pytest.raises(helm.HelmError, match="url"):
        render({"redis": {"url": "redis://:hunter2@redis:6379/0"}})


def test_keys_are_required_unless_the_gateway_is_insecure() -> None:
    with pytest.raises(helm.HelmError, match=r"apiKeys\.existingSecret is required"):
        render({"gateway": {"apiKeys": {"existingSecret": ""}}})


def test_the_scaledobject_and_the_hpa_never_target_the_same_deployment() -> None:
    objects = render({"worker": {"keda": {"enabled": True}}, "gateway": {"autoscaling": {"enabled": True}}})
    [hpa] = of_kind(objects, "HorizontalPodAutoscaler").values()
    [scaled] = of_kind(objects, "ScaledObject").values()
    assert hpa["spec"]["scaleTargetRef"]["name"] == "demo-streamml-gateway"
    assert scaled["spec"]["scaleTargetRef"]["name"] == "demo-streamml-worker"
    deployments = of_kind(objects, "Deployment")
    assert "replicas" not in deployments["demo-streamml-worker"]["spec"]  # KEDA owns it
    assert "replicas" not in deployments["demo-streamml-gateway"]["spec"]  # the HPA owns it


def test_one_stream_scales_on_the_groups_lag_and_partitions_on_the_summed_lag_metric() -> None:
    single = of_kind(render(VALUES_SETS["one stream, KEDA on, a Redis password"]), "ScaledObject")
    [trigger] = single["demo-streamml-worker"]["spec"]["triggers"]
    assert trigger["type"] == "redis-streams"
    assert trigger["metadata"] | {"lagCount": "500"} == {
        "address": "redis-master:6379",
        "databaseIndex": "0",
        "stream": "mlops_stream",
        "consumerGroup": "workers",
        "lagCount": "500",
        "activationLagCount": "10",
    }
    assert trigger["authenticationRef"] == {"name": "demo-streamml-redis"}
    partitioned = of_kind(render(VALUES_SETS["a Redis Cluster with partitions, KEDA on"]), "ScaledObject")
    [trigger] = partitioned["demo-streamml-worker"]["spec"]["triggers"]
    assert trigger["type"] == "prometheus"
    assert trigger["metadata"]["query"] == 'max(streamml_stream_lag{namespace="ml",stream="mlops_stream"})'
    assert partitioned["demo-streamml-worker"]["spec"]["minReplicaCount"] == 0


@values_sets
def test_every_streamml_variable_the_chart_sets_is_one_the_code_reads(values: dict[str, Any]) -> None:
    known = setting_names() | {"REDIS_URL", "MLFLOW_TRACKING_URI"}
    streamml = [
        (name, c)
        for name, c in containers(render(values))
        if c.get("args", [None])[0] in {"api", "worker", "train"}
    ]
    assert streamml
    for name, container in streamml:
        unknown = {e["name"] for e in container["env"]} - known
        assert not unknown, (name, unknown)


@values_sets
def test_no_secret_is_in_an_argument_or_a_plain_variable(values: dict[str, Any]) -> None:
    found = list(containers(render(values)))
    assert len(found) >= 3  # gateway, worker, the test pod at least
    for name, container in found:
        words = " ".join(map(str, container.get("command", []) + container.get("args", [])))
        assert "postgresql://" not in words, name
        assert "@" not in words, name
        for variable in container.get("env", []):
            if any(word in variable["name"] for word in ("PASSWORD", "SECRET", "KEY_ID", "BACKEND_STORE")):
                assert "value" not in variable or variable["name"].endswith("_FILE"), (name, variable)


@values_sets
def test_every_container_runs_unprivileged_with_requests_and_limits(values: dict[str, Any]) -> None:
    objects = render(values)
    found = list(containers(objects))
    assert len(found) >= 3  # gateway, worker, the test pod at least
    for name, container in found:
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"], name
        assert not context["allowPrivilegeEscalation"], name
        assert context["capabilities"]["drop"] == ["ALL"], name
        assert set(container["resources"]) == {"requests", "limits"}, name
    for o in objects:
        if o["kind"] in ("Deployment", "Job"):
            assert o["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"], o["metadata"]["name"]
        labels = o["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "streamml"
        assert labels["app.kubernetes.io/instance"] == "demo"


def test_the_workers_grace_period_outlasts_their_shutdown_grace() -> None:
    worker = of_kind(render({}), "Deployment")["demo-streamml-worker"]
    env = {e["name"]: e["value"] for e in worker["spec"]["template"]["spec"]["containers"][0]["env"]}
    grace = worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > int(env["STREAMML_WORKER_SHUTDOWN_GRACE_S"])


@requires_compose
def test_the_chart_runs_the_commands_compose_runs_with_options_the_cli_has() -> None:
    compose = compose_rendered()["services"]
    objects = render(VALUES_SETS["the MLflow server and the training Job"])
    chart = {
        "gateway": of_kind(objects, "Deployment")["demo-streamml-gateway"],
        "worker": of_kind(objects, "Deployment")["demo-streamml-worker"],
        "train": of_kind(objects, "Job")["demo-streamml-train"],
    }
    cli = typer.main.get_command(app)
    for service, workload in chart.items():
        args = workload["spec"]["template"]["spec"]["containers"][0]["args"]
        command = compose[service]["command"]
        assert args[0] == command[0], service
        options = {
            option
            for parameter in cli.commands[args[0]].params  # type: ignore[attr-defined]
            for option in parameter.opts
        }
        for word in args[1:] + command[1:]:
            assert not word.startswith("-") or word in options, (service, word)
        assert set(command[1:]) <= set(args[1:]), service  # what compose passes, the chart passes too
