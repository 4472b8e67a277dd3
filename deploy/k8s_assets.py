"""`python -m deploy.k8s_assets`: put the gateway's files where Kustomize reads them.

Renders the Envoy config for the cluster (upstreams are the Services, files are mounted from
the `gateway-config` ConfigMap at /etc/envoy) and copies the descriptor set and the OpenAPI
document that `make protos` built into deploy/k8s/base/generated/ (ignored by git).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from gateway.config import ROOT, GatewaySettings
from gateway.render import render_config

GENERATED = ROOT / "deploy" / "k8s" / "base" / "generated"
MOUNT = Path("/etc/envoy")


def main() -> None:
    """Write envoy.yaml, descriptors.pb and openapi.json for the base."""
    GENERATED.mkdir(parents=True, exist_ok=True)
    build = ROOT / "build"
    shutil.copyfile(build / "descriptors.pb", GENERATED / "descriptors.pb")
    shutil.copyfile(build / "openapi.json", GENERATED / "openapi.json")
    cluster = GatewaySettings(
        host="0.0.0.0",
        port=8080,
        quote_upstream="quote-service:15051",
        ramp_upstream="ramp-service:15052",
        descriptor_path=build / "descriptors.pb",
        openapi_path=MOUNT / "openapi.json",
    )
    config = render_config(cluster)
    # Public methods were read from the local build; in the pod the file sits in the mount.
    text = json.dumps(config, indent=2).replace(
        str(build / "descriptors.pb"), str(MOUNT / "descriptors.pb")
    )
    (GENERATED / "envoy.yaml").write_text(text + "\n")


if __name__ == "__main__":
    main()
