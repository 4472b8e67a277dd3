"""Which PostgreSQL the local stack uses, and migrating every schema in it."""

from __future__ import annotations

import os
from pathlib import Path

from quote_service.db import MIGRATIONS_DIR as QUOTE_MIGRATIONS
from quote_service.db import SCHEMA as QUOTE_SCHEMA
from ramp_service.db import MIGRATIONS_DIR as RAMP_MIGRATIONS
from ramp_service.db import SCHEMA as RAMP_SCHEMA
from service_kit.embedded_pg import start_embedded_postgres
from service_kit.migrations import upgrade

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("DEVSTACK_DATA_DIR", ROOT / ".data"))
# Written by a running `make run` (addresses, pids, database), removed when it stops.
STATE_FILE = DATA_DIR / "run" / "stack.json"

# Every bounded context's migrations, in the order they are applied.
SCHEMAS: tuple[tuple[Path, str], ...] = (
    (QUOTE_MIGRATIONS, QUOTE_SCHEMA),
    (RAMP_MIGRATIONS, RAMP_SCHEMA),
)


def database_url() -> str:
    """DATABASE_URL when set; otherwise the embedded server under .data/pg, started if needed."""
    url = os.environ.get("DATABASE_URL", "")
    return url or start_embedded_postgres(DATA_DIR / "pg", keep_running=True)


def migrate_all(url: str) -> None:
    """Apply every schema's migrations to head."""
    for migrations_dir, schema in SCHEMAS:
        upgrade(migrations_dir, url, schema)
