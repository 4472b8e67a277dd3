"""The Kubernetes manifests: every overlay renders with kubectl kustomize, validates offline
against the Kubernetes schemas, and has the properties operations rely on. The image build
file is linted with hadolint."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy.k8s_assets import overlay_settings
from service_kit.config import ServiceSettings

ROOT = Path(__file__).resolve().parents[3]
OVERLAYS = ["local", "production"]
# Each overlay and its migration, which is applied and completed before it.
KUSTOMIZATIONS = [*OVERLAYS, *(f"{overlay}/migrate" for overlay in OVERLAYS)]
BIN = Path(sys.executable).parent
WORKLOADS = {"quote-service", "ramp-service", "ramp-worker", "gateway"}


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    subprocess.run([sys.executable, "-m", "deploy.k8s_assets"], cwd=ROOT, check=True, timeout=120)
    out: dict[str, list[dict[str, Any]]] = {}
    for overlay in KUSTOMIZATIONS:
        text = subprocess.run(
            [str(BIN / "kubectl"), "kustomize", str(ROOT / "deploy/k8s/overlays" / overlay)],
            check=True,
            capture_output=True,
            text=True,
            timeout=120,
        ).stdout
        out[overlay] = [doc for doc in yaml.safe_load_all(text) if doc]
    return out


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    if obj["kind"] == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return obj["spec"]["template"]["spec"]


@pytest.mark.parametrize("overlay", KUSTOMIZATIONS)
def test_overlay_validates_against_the_kubernetes_schemas(
    overlay: str, rendered: dict[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(yaml.safe_dump_all(rendered[overlay]))
    result = subprocess.run(
        [str(BIN / "kubernetes-validate"), "--strict", "--quiet", str(manifest)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_is_locked_down_and_bounded(
    overlay: str, rendered: dict[str, list[dict[str, Any]]]
) -> None:
    docs = rendered[overlay] + rendered[f"{overlay}/migrate"]
    pods = [d for d in docs if d["kind"] in ("Deployment", "Job", "CronJob")]
    assert {d["metadata"]["name"] for d in pods} == WORKLOADS | {"migrate", "cleanup"}
    for obj in pods:
        spec = pod_spec(obj)
        assert spec["securityContext"]["runAsNonRoot"] is True
        for container in spec["containers"]:
            sc = container["securityContext"]
            assert sc["runAsNonRoot"] is True and sc["runAsUser"] != 0
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["capabilities"]["drop"] == ["ALL"]
            assert {"cpu", "memory"} <= set(container["resources"]["requests"])
            assert {"cpu", "memory"} <= set(container["resources"]["limits"])
            for env in container.get("env", []):
                assert "value" not in env or not any(
                    word in env["name"] for word in ("SECRET", "SEED", "TOKEN", "DATABASE_URL")
                ), f"{env['name']} must come from a Secret"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_use_grpc_health_and_secrets_are_referenced(
    overlay: str, rendered: dict[str, list[dict[str, Any]]]
) -> None:
    deployments = by_kind(rendered[overlay], "Deployment")
    for name, service in (
        ("quote-service", "pendulumpay.quote.v1.QuoteService"),
        ("ramp-service", "pendulumpay.ramp.v1.RampService"),
    ):
        container = pod_spec(deployments[name])["containers"][0]
        assert container["readinessProbe"]["grpc"]["service"] == service
        assert "grpc" in container["livenessProbe"]
        refs = {
            e["valueFrom"]["secretKeyRef"]["name"]
            for e in container["env"]
            if "secretKeyRef" in e.get("valueFrom", {})
        }
        assert "pendulumpay-database" in refs
    # The funding secrets go to the worker only: the internet-facing API gets public addresses.
    for name, holds_secrets in (
        ("ramp-service", False),
        ("ramp-worker", True),
        ("quote-service", False),
    ):
        container = pod_spec(deployments[name])["containers"][0]
        secrets = {
            e["valueFrom"]["secretKeyRef"]["name"]
            for e in container.get("env", [])
            if "secretKeyRef" in e.get("valueFrom", {})
        }
        assert ("pendulumpay-funding" in secrets) is holds_secrets, name
    api_env = {e["name"] for e in pod_spec(deployments["ramp-service"])["containers"][0]["env"]}
    assert {"STELLAR_FUNDING_ACCOUNT", "PENDULUM_FUNDING_ACCOUNT"} <= api_env
    gateway = pod_spec(deployments["gateway"])
    assert gateway["containers"][0]["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert any(v.get("configMap") for v in gateway["volumes"])
    assert not [d for d in rendered[overlay] if d["kind"] == "Secret"], "secrets are never inlined"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_grpc_services_resolve_to_every_pod(
    overlay: str, rendered: dict[str, list[dict[str, Any]]]
) -> None:
    """gRPC keeps long-lived HTTP/2 connections, so a virtual IP would pin each caller to one
    pod: the services are headless, and the ramp service resolves the quote service's pods."""
    docs = rendered[overlay]
    services = by_kind(docs, "Service")
    assert services["quote-service"]["spec"]["clusterIP"] == "None"
    assert services["ramp-service"]["spec"]["clusterIP"] == "None"
    config = by_kind(docs, "ConfigMap")
    (settings,) = [c for name, c in config.items() if name.startswith("pendulumpay-config")]
    assert settings["data"]["QUOTE_SERVICE_TARGET"] == "dns:///quote-service:15051"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_serving_pods_stay_in_rotation_until_callers_let_go(
    overlay: str, rendered: dict[str, list[dict[str, Any]]]
) -> None:
    """In a rollout or scale-down a pod is removed from its Service while it still gets
    requests (DNS TTLs, the gateway's re-resolution, the ingress' endpoint sync): it sleeps in
    preStop before SIGTERM, and Kubernetes must not kill it before that sleep and the
    service's own drain (SHUTDOWN_GRACE_S) are over."""
    docs = rendered[overlay]
    settings = next(c for n, c in by_kind(docs, "ConfigMap").items() if n.startswith("pendulumpay"))
    default_grace = ServiceSettings.model_fields["shutdown_grace_s"].default
    for name in ("quote-service", "ramp-service", "gateway"):
        spec = pod_spec(by_kind(docs, "Deployment")[name])
        (container,) = spec["containers"]
        command = container["lifecycle"]["preStop"]["exec"]["command"]
        assert command[0] == "sleep" and 5 <= int(command[1]) <= 10, command
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        shutdown = 0.0
        if name != "gateway":  # Envoy exits on SIGTERM; the services drain first
            shutdown = float(
                env.get("SHUTDOWN_GRACE_S")
                or settings["data"].get("SHUTDOWN_GRACE_S")
                or default_grace
            )
        assert spec["terminationGracePeriodSeconds"] > int(command[1]) + shutdown, name


@pytest.mark.parametrize(("overlay", "hops"), [("local", 0), ("production", 1)])
def test_gateway_takes_the_client_address_from_the_proxies_it_trusts(
    overlay: str, hops: int, rendered: dict[str, list[dict[str, Any]]]
) -> None:
    """Production's gateway sits behind one ingress, which appends the client's address to
    X-Forwarded-For: that address keys the per-client rate limit. Nothing else in the header
    is trusted, and without a proxy in front the peer address is the client's."""
    (config,) = [
        c
        for name, c in by_kind(rendered[overlay], "ConfigMap").items()
        if name.startswith("gateway-config")
    ]
    (listener,) = json.loads(config["data"]["envoy.yaml"])["static_resources"]["listeners"]
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    assert hcm["use_remote_address"] is True
    assert hcm["xff_num_trusted_hops"] == hops


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_gateway_runs_one_envoy_worker_per_cpu_of_its_limit(
    overlay: str, rendered: dict[str, list[dict[str, Any]]]
) -> None:
    (container,) = pod_spec(by_kind(rendered[overlay], "Deployment")["gateway"])["containers"]
    args, limit = container["args"], str(container["resources"]["limits"]["cpu"])
    millis = int(limit[:-1]) if limit.endswith("m") else int(float(limit) * 1000)
    assert int(args[args.index("--concurrency") + 1]) == max(1, -(-millis // 1000))


def test_a_misspelt_overlay_gateway_setting_is_an_error(tmp_path: Path) -> None:
    env = tmp_path / "gateway.env"
    env.write_text("# comment\nGATEWAY_XFF_TRUSTED_HOPS=1\n")
    assert overlay_settings(env) == {"xff_trusted_hops": "1"}
    env.write_text("GATEWAY_XFF_TRUSTED_HOP=1\n")
    with pytest.raises(SystemExit, match="GATEWAY_XFF_TRUSTED_HOP="):
        overlay_settings(env)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_cronjob_policy_and_availability(
    overlay: str, rendered: dict[str, list[dict[str, Any]]]
) -> None:
    docs = rendered[overlay]
    cron = by_kind(docs, "CronJob")["cleanup"]["spec"]
    assert cron["concurrencyPolicy"] == "Forbid"
    assert cron["startingDeadlineSeconds"] > 0
    job = cron["jobTemplate"]["spec"]
    assert (
        job["backoffLimit"] >= 0
        and job["activeDeadlineSeconds"] > 0
        and job["ttlSecondsAfterFinished"] > 0
    )
    assert pod_spec(by_kind(docs, "CronJob")["cleanup"])["containers"][0]["args"] == ["cleanup"]
    assert set(by_kind(docs, "PodDisruptionBudget")) == WORKLOADS
    hpas = by_kind(docs, "HorizontalPodAutoscaler")
    assert {h["spec"]["scaleTargetRef"]["name"] for h in hpas.values()} == WORKLOADS


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_migration_is_applied_apart_with_the_release_image(
    overlay: str, rendered: dict[str, list[dict[str, Any]]]
) -> None:
    """`kubectl apply -k <overlay>` rolls the Deployments out. Were the migrate Job part of
    it, new pods would start on the old schema while it ran, and the finished Job (whose pod
    template is immutable) would refuse the next release's image. So the Job is a kustomization
    of its own, completed before the overlay is applied and created anew each release, with
    the overlay's namespace and image from their one shared place."""
    app, (job,) = rendered[overlay], rendered[f"{overlay}/migrate"]
    assert not by_kind(app, "Job")
    assert (job["kind"], job["metadata"]["name"]) == ("Job", "migrate")
    deployments = by_kind(app, "Deployment").values()
    assert {d["metadata"]["namespace"] for d in deployments} == {job["metadata"]["namespace"]}
    spec = pod_spec(job)
    images = {c["image"] for d in deployments for c in pod_spec(d)["containers"]}
    assert {c["image"] for c in spec["containers"]} == images, "one image per release"
    assert spec["containers"][0]["args"] == ["migrate"]
    assert spec["restartPolicy"] == "Never"
    assert job["spec"]["backoffLimit"] >= 0 and job["spec"]["activeDeadlineSeconds"] > 0
    # The first migration runs before the overlay created its service account.
    assert "serviceAccountName" not in spec and spec["automountServiceAccountToken"] is False


def test_production_pins_its_image() -> None:
    text = (ROOT / "deploy/k8s/overlays/production/release/kustomization.yaml").read_text()
    assert 'newTag: "0.1.0"' in text


def test_dockerfile_lints_clean_and_its_entry_points_exist() -> None:
    dockerfile = ROOT / "deploy/Dockerfile"
    hadolint = shutil.which("hadolint", path=str(BIN)) or str(BIN / "hadolint")
    result = subprocess.run([hadolint, str(dockerfile)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout
    text = dockerfile.read_text()
    assert "USER 10001:10001" in text and text.count("FROM ") == 2
    entry = (ROOT / "deploy/entrypoint.sh").read_text()
    for module in (
        "quote_service",
        "ramp_service",
        "ramp_service.worker",
        "gateway",
        "devstack",
        "cleanup_job",
    ):
        assert f"python -m {module}" in entry
        assert (ROOT / module.replace(".", "/") / "__main__.py").exists(), module
