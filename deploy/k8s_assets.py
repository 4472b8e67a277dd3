"""`python -m deploy.k8s_assets`: put the gateway's files where Kustomize reads them.

Renders the Envoy config for the cluster (upstreams are the Services, files are mounted from
the `gateway-config` ConfigMap at /etc/envoy) and copies the descriptor set and the OpenAPI
document that `make protos` built into deploy/k8s/base/generated/ (ignored by git). An overlay
whose gateway differs has a `gateway.env` (`GATEWAY_*=value` lines, e.g. the trusted proxy
hops in front of it); its config is rendered with those settings into the overlay's own
generated/ folder, which its kustomization merges over the base's envoy.yaml.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gateway.config import ROOT, GatewaySettings
from gateway.render import render_config

K8S = ROOT / "deploy" / "k8s"
GENERATED = K8S / "base" / "generated"
MOUNT = Path("/etc/envoy")
BUILD = ROOT / "build"


def overlay_settings(env_file: Path) -> dict[str, str]:
    """An overlay's `GATEWAY_*=value` lines as GatewaySettings fields; anything else is an
    error, so a misspelt setting cannot be silently ignored."""
    fields: dict[str, str] = {}
    for number, line in enumerate(env_file.read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, sep, value = line.partition("=")
        name = key.strip().removeprefix("GATEWAY_").lower()
        if (
            not (sep and key.strip().startswith("GATEWAY_"))
            or name not in GatewaySettings.model_fields
        ):
            raise SystemExit(f"{env_file}:{number}: not a GATEWAY_* setting: {line!r}")
        fields[name] = value.strip()
    return fields


# Where the gateway's upstreams and files are in the cluster.
CLUSTER: dict[str, Any] = {
    "host": "0.0.0.0",
    "port": 8080,
    "quote_upstream": "quote-service:15051",
    "ramp_upstream": "ramp-service:15052",
    "descriptor_path": BUILD / "descriptors.pb",
    "openapi_path": MOUNT / "openapi.json",
}


def write_envoy_config(target: Path, overrides: Mapping[str, str]) -> None:
    """The gateway's Envoy config for the cluster, with an overlay's `overrides`, as `target`."""
    config = render_config(GatewaySettings(**{**CLUSTER, **overrides}))
    # Public methods were read from the local build; in the pod the file sits in the mount.
    text = json.dumps(config, indent=2).replace(
        str(BUILD / "descriptors.pb"), str(MOUNT / "descriptors.pb")
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text + "\n")


def main() -> None:
    """Write envoy.yaml, descriptors.pb and openapi.json for the base, and each overlay's
    envoy.yaml from its gateway.env."""
    GENERATED.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(BUILD / "descriptors.pb", GENERATED / "descriptors.pb")
    shutil.copyfile(BUILD / "openapi.json", GENERATED / "openapi.json")
    write_envoy_config(GENERATED / "envoy.yaml", {})
    for env_file in sorted((K8S / "overlays").glob("*/gateway.env")):
        write_envoy_config(env_file.parent / "generated" / "envoy.yaml", overlay_settings(env_file))


if __name__ == "__main__":
    main()
