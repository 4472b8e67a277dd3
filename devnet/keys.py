"""Devnet account keys, created on the first run and kept under .data (ignored by git)."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

from stellar_sdk import Keypair


def load_or_create_keys(path: Path) -> dict[str, str]:
    """The anchor's and the funding accounts' keys at `path`, created (mode 0600) if missing."""
    if path.exists():
        keys = dict(json.loads(path.read_text()))
    else:
        keys = {name: Keypair.random().secret for name in ("anchor", "stellar_funding")}
    if "pendulum_funding" not in keys:
        keys["pendulum_funding"] = f"//funding-{secrets.token_hex(8)}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(keys, indent=2))
    path.chmod(0o600)
    return keys
